"""One data home: the database, the IQ store and the spool resolve alike from any folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import platformdirs
import pytest
from support import make_home

from heimdall_lab import db, home, spool
from heimdall_lab.cli import main
from heimdall_lab.errors import ValidationError
from heimdall_lab.notebooks import NOTEBOOK_DIR, copy_notebooks, notebook_path, run_notebook
from heimdall_lab.store import IQStore, default_iq_url

_PRINT_PATHS = (
    "import json; from heimdall_lab import db, home, spool; from heimdall_lab.store import "
    "default_iq_url; print(json.dumps({'home': str(home.data_home()), "
    "'pg': str(db.embedded_home() / 'pg'), 'iq': default_iq_url(), "
    "'spool': str(spool.spool_root())}))"
)


@pytest.fixture
def no_env(monkeypatch):
    for name in ("HEIMDALL_DATABASE_URL", "HEIMDALL_IQ_URL"):
        monkeypatch.delenv(name, raising=False)


def test_explicit_home_wins_then_the_environment(tmp_path, monkeypatch, no_env):
    monkeypatch.setenv("HEIMDALL_HOME", str(tmp_path / "env"))
    assert home.data_home(tmp_path / "given") == tmp_path / "given"
    assert home.data_home() == tmp_path / "env"
    assert db.embedded_home() == tmp_path / "env"
    assert db.embedded_home(tmp_path / "given") == tmp_path / "given"


def test_heimdall_home_moves_database_iq_store_and_spool(tmp_path, monkeypatch, no_env):
    monkeypatch.chdir(tmp_path)
    for name in ("one", "two"):
        monkeypatch.setenv("HEIMDALL_HOME", str(tmp_path / name))
        assert home.home_path("pg") == db.embedded_home() / "pg" == tmp_path / name / "pg"
        assert default_iq_url() == IQStore().url == str(tmp_path / name / "iq")
        assert spool.spool_root() == tmp_path / name / "spool"
        assert home.home_path("notebooks") == tmp_path / name / "notebooks"
    monkeypatch.setenv("HEIMDALL_IQ_URL", str(tmp_path / "elsewhere"))
    assert default_iq_url() == str(tmp_path / "elsewhere")  # still overridable
    assert not (tmp_path / ".heimdall").exists()


def test_without_heimdall_home_the_per_user_folder_is_used_from_any_folder(
    tmp_path, monkeypatch, no_env
):
    monkeypatch.delenv("HEIMDALL_HOME")
    # conftest points XDG_DATA_HOME at a temporary folder: the real per-user folder stays
    # untouched
    expected = Path(platformdirs.user_data_dir("heimdall-lab", appauthor=False))
    assert str(expected).startswith(os.environ["XDG_DATA_HOME"])
    seen = set()
    for folder in (tmp_path / "a", tmp_path / "b" / "notebooks"):
        folder.mkdir(parents=True)
        monkeypatch.chdir(folder)
        seen.add((home.data_home(), db.embedded_home(), default_iq_url(), spool.spool_root()))
    assert seen == {(expected, expected, str(expected / "iq"), expected / "spool")}


def test_a_process_in_another_folder_resolves_the_same_paths(tmp_path, monkeypatch, no_env):
    monkeypatch.setenv("HEIMDALL_HOME", str(tmp_path / "home"))
    results = []
    for folder in (tmp_path, tmp_path / "notebooks"):
        folder.mkdir(exist_ok=True)
        out = subprocess.run(
            [sys.executable, "-c", _PRINT_PATHS],
            cwd=folder,
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
        results.append(json.loads(out))
    here = {
        "home": str(home.data_home()),
        "pg": str(home.home_path("pg")),
        "iq": default_iq_url(),
        "spool": str(spool.spool_root()),
    }
    assert results == [here, here]
    assert here["home"] == str(tmp_path / "home")


@pytest.mark.slow
def test_a_notebook_kernel_started_in_a_notebooks_folder_sees_the_cli_captures(
    tmp_path, monkeypatch, no_env
):
    data = make_home()  # its own embedded server, started by the CLI below
    monkeypatch.setenv("HEIMDALL_HOME", str(data))
    cli_dir, notebooks = tmp_path / "terminal", tmp_path / "project" / "notebooks"
    cli_dir.mkdir()
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "heimdall_lab.cli",
                "capture",
                "-f",
                "10e6",
                "-d",
                "1",
                "--seed",
                "0",
                "--fast",
                "-q",
            ],
            cwd=cli_dir,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        capture_id = done.stdout.split("\ncapture ")[1].split(":")[0]
        assert f"IQ: {data / 'iq'}" in done.stdout

        assert [p.name for p in copy_notebooks(notebooks)] == [
            p.name for p in sorted(NOTEBOOK_DIR.glob("*.ipynb"))
        ]
        monkeypatch.chdir(tmp_path)
        out = run_notebook(
            notebooks / "explore.ipynb",
            {"bucket": "1s"},
            output_dir=tmp_path / "reports",
            cwd=notebooks,
        )
        executed = nbformat.read(out, as_version=4)
        text = json.dumps([c.get("outputs", []) for c in executed.cells])
        assert capture_id in text
        assert f"captures in {data / 'iq'}; showing {capture_id}" in text
        assert not (notebooks / ".heimdall").exists() and not (cli_dir / ".heimdall").exists()
    finally:
        db.stop_embedded(data)
        shutil.rmtree(data, ignore_errors=True)


def test_copy_notebooks_never_overwrites_a_users_copy(tmp_path):
    folder = tmp_path / "notebooks"
    names = sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb"))
    assert [p.name for p in copy_notebooks(folder, dry_run=True)] == names
    assert not folder.exists()
    assert [p.name for p in copy_notebooks(folder)] == names
    edited = folder / "capture.ipynb"
    edited.write_text("my edits")
    (folder / "explore.ipynb").unlink()
    assert [p.name for p in copy_notebooks(folder)] == ["explore.ipynb"]
    assert edited.read_text() == "my edits"
    assert copy_notebooks(folder) == []


def test_lab_dry_run_prints_and_starts_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HEIMDALL_HOME", str(tmp_path / "home"))
    called = []
    monkeypatch.setattr(subprocess, "call", lambda *a, **k: called.append((a, k)) or 0)
    assert main(["lab", "--dry-run", "--no-browser", "--port", "8899"]) == 0
    out = capsys.readouterr().out
    folder = tmp_path / "home" / "notebooks"
    assert f"notebooks: {folder}" in out and f"data home: {tmp_path / 'home'}" in out
    assert "would copy capture.ipynb" in out
    assert "-m jupyterlab" in out and "--port=8899" in out and "--no-browser" in out
    assert not folder.exists() and not called


def test_lab_copies_the_notebooks_and_starts_jupyterlab_there(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HEIMDALL_HOME", str(tmp_path / "home"))
    called = []
    monkeypatch.setattr(subprocess, "call", lambda *a, **k: called.append((a, k)) or 0)
    assert main(["lab", "--no-browser"]) == 0
    folder = tmp_path / "home" / "notebooks"
    assert (folder / "explore.ipynb").is_file()
    [(args, kwargs)] = called
    cmd = args[0]
    assert cmd[:3] == [sys.executable, "-m", "jupyterlab"] and "--no-browser" in cmd
    assert f"--ServerApp.root_dir={folder}" in cmd and kwargs["cwd"] == folder
    (folder / "explore.ipynb").write_text("edited")
    assert main(["lab", "--dry-run"]) == 0
    assert "would copy" not in capsys.readouterr().out.split("copied")[-1]
    assert (folder / "explore.ipynb").read_text() == "edited"


def test_lab_bad_port_is_a_usage_error(capsys):
    assert main(["lab", "--port", "70000", "--dry-run"]) == 2
    assert "--port 70000" in capsys.readouterr().err


def test_a_source_checkouts_own_notebooks_run_from_its_root(tmp_path, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    if not Path("notebooks/benchmark.ipynb").is_file():
        pytest.skip("no notebooks/benchmark.ipynb in this checkout")
    assert notebook_path("benchmark") == Path("notebooks/benchmark.ipynb")
    assert notebook_path("capture") == NOTEBOOK_DIR / "capture.ipynb"  # packaged ones first
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValidationError, match="source tree only"):
        notebook_path("benchmark")
    with pytest.raises(ValidationError, match=r"no notebook 'nope'.*capture"):
        notebook_path("nope")
