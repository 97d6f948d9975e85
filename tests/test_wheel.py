"""The built wheel, installed into a fresh environment, works from a folder outside the source.

The wheel is built from a copy of the sources (nothing is written into the checkout) and
installed, non-editable, into a new virtual environment whose only extra is a ``.pth`` line
naming this environment's site-packages (so the dependencies need not be installed again).
That line adds the folder to ``sys.path`` without running the ``.pth`` files in it, so this
environment's editable install of heimdall_lab stays inert and the wheel's copy is imported.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from conftest import NETGUARD_DIR
from support import make_home

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, (
        f"{' '.join(map(str, cmd))} exited {done.returncode}\n"
        f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
    )
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the sources."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(
        REPO / "heimdall_lab",
        src / "heimdall_lab",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    dist = tmp_path_factory.mktemp("dist")
    cmd = [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation"]
    _run([*cmd, "--no-index", "-q", "-w", str(dist)], src, dict(os.environ))
    [whl] = dist.glob("heimdall_lab-*.whl")
    return whl


@pytest.fixture(scope="module")
def fresh(tmp_path_factory, wheel) -> Path:
    """A new virtual environment with the wheel installed (the bin folder)."""
    venv = tmp_path_factory.mktemp("fresh") / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], venv.parent, dict(os.environ))
    python = venv / "bin" / "python"
    purelib = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (purelib / "_test_environment.pth").write_text("".join(f"{p}\n" for p in sorted(ours)))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    cmd = [python, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed"]
    _run([*cmd, "-q", str(wheel)], venv.parent, env)
    return venv / "bin"


def test_wheel_holds_the_sql_notebooks_and_recordings(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert sum(n.startswith("heimdall_lab/db/sql/") and n.endswith(".sql") for n in names) >= 5
    for notebook in ("capture", "explore", "localize", "plan", "form", "session"):
        assert f"heimdall_lab/notebooks/{notebook}.ipynb" in names
    assert sum(n.endswith("_iq.wav") for n in names) == 3
    assert sum("/gnss_pos/" in n and n.endswith(".txt") for n in names) == 3
    assert "heimdall_lab/ui/data/naturalearth_110m.npz" in names  # the base maps
    assert "heimdall_lab/ui/data/naturalearth_10m_europe.npz" in names
    assert "heimdall_lab/ui/data/README.md" in names
    assert "heimdall_lab/tutorial/kiwisdr-directory/kiwisdr_com-2025-12-31.js" in names
    assert "heimdall_lab/tutorial/kiwisdr-directory/README.md" in names
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)


def test_installed_wheel_works_from_any_folder(fresh, tmp_path):
    outside = tmp_path / "somewhere"
    outside.mkdir()
    data = make_home()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "HEIMDALL_DATABASE_URL", "HEIMDALL_IQ_URL")
    }
    env |= {"HEIMDALL_HOME": str(data), "MPLBACKEND": "Agg", "PATH": f"{fresh}:{env['PATH']}"}
    env["PYTHONPATH"] = str(NETGUARD_DIR)  # the loopback guard only, not the source tree
    python, cli = str(fresh / "python"), str(fresh / "heimdall-lab")
    try:
        where = _run(
            [
                python,
                "-c",
                "import heimdall_lab, jupyter_client.kernelspec as k; print(heimdall_lab.__file__);"
                " print(k.KernelSpecManager().get_kernel_spec('python3').argv[0])",
            ],
            outside,
            env,
        ).split()
        assert Path(where[0]).is_relative_to(fresh.parent), where  # not the checkout
        assert Path(where[1]).parent == fresh, where  # notebooks' kernels run the wheel too

        out = _run([cli, "demo", "--fast"], outside, env)
        assert "capture " in out and ": done" in out
        _run([cli, "db", "migrate"], outside, env)
        params = ["-p", "duration_s", "2", "-p", "realtime", "False", "-p", "seed", "1"]
        _run([cli, "run", "capture", *params, "-q"], outside, env)
        located = _run(
            [
                python,
                "-c",
                "import heimdall_lab as hl; r = hl.locate(hl.tutorial.dcf77_files()); "
                "print(r.latitude, r.longitude)",
            ],
            outside,
            env,
        )
        lat, lon = (float(v) for v in located.split())
        assert abs(lat - 50.0) < 3 and abs(lon - 9.0) < 4  # DCF77, Mainflingen
        _run([cli, "run", "localize", "-q"], outside, env)

        assert (data / "pg" / "PG_VERSION").is_file()
        assert len(list((data / "iq" / "captures").glob("*.zarr"))) == 2
        assert not (outside / ".heimdall").exists()
        assert len(list((outside / "reports").glob("*/*.ipynb"))) == 3
    finally:
        subprocess.run(
            [python, "-c", "from heimdall_lab import db; db.stop_embedded()"],
            cwd=outside,
            env=env,
            capture_output=True,
            timeout=120,
        )
        shutil.rmtree(data, ignore_errors=True)
