"""The import contracts of pyproject.toml ([tool.importlinter]) hold, and cover every module."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "heimdall_lab"


def _contracts() -> list[dict]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["importlinter"]["contracts"]


def test_import_contracts_are_kept():
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_top_level_module_has_a_layer():
    (layers,) = [c for c in _contracts() if c["id"] == "layers"]
    placed = {
        name.strip().strip("()") for layer in layers["layers"] for name in re.split(r"[|:]", layer)
    }
    modules = {p.stem for p in PACKAGE.glob("*.py") if p.name != "__init__.py"}
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    missing = sorted((modules | packages) - placed)
    assert not missing, f"add these to the layers contract in pyproject.toml: {missing}"
