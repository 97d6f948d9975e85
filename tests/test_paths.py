"""No path built from a parameter leaves its folder: reports, the spool, the IQ store.

Each hostile name is refused with a ValidationError naming what it came from (the CLI maps
that to exit 2), and nothing is written anywhere, inside or outside the folder.
"""

from __future__ import annotations

import pandas as pd
import pytest

from heimdall_lab import spool, tutorial
from heimdall_lab.cli import main
from heimdall_lab.errors import ValidationError
from heimdall_lab.home import confined_path
from heimdall_lab.notebooks import run_notebook
from heimdall_lab.store import IQStore

HOSTILE = ["../../../../tmp/x", "../x", "a/b", "..", ".", "", "/etc/passwd", "a\\b", "x\0y"]


def _files(root) -> list:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_confined_path_keeps_plain_names_and_refuses_the_rest(tmp_path):
    assert confined_path(tmp_path, "capture-run.1.ipynb", what="run id") == (
        tmp_path / "capture-run.1.ipynb"
    )
    assert confined_path(tmp_path, "a..b", what="run id") == tmp_path / "a..b"  # not '..'
    for bad in HOSTILE:
        with pytest.raises(ValidationError, match=r"parameter capture_id .* cannot name a file"):
            confined_path(tmp_path, bad, what="parameter capture_id")


@pytest.mark.parametrize("bad", ["../../../../tmp/x", "a/b", ".."])
def test_a_report_named_by_capture_id_or_run_id_stays_in_reports(tmp_path, bad):
    reports = tmp_path / "a" / "b" / "c" / "reports"  # an escape would land in tmp_path
    with pytest.raises(ValidationError, match="parameter capture_id"):
        run_notebook("capture", {"capture_id": bad}, output_dir=reports)
    with pytest.raises(ValidationError, match="run_id"):
        run_notebook("capture", {}, output_dir=reports, run_id=bad)
    assert _files(tmp_path) == []


def test_cli_run_with_an_escaping_capture_id_is_a_usage_error(tmp_path, monkeypatch, capsys):
    deep = tmp_path / "a" / "b" / "c" / "d"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)  # reports/<date>/capture-../../../../tmp/x.ipynb stays in tmp_path
    code = main(["run", "capture", "-q", "-p", "capture_id", "../../../../tmp/x"])
    assert code == 2
    err = capsys.readouterr().err
    assert "parameter capture_id '../../../../tmp/x' cannot name a file" in err
    assert _files(tmp_path) == []


@pytest.mark.parametrize("bad", ["../x", "a/b", "..", "", "/abs"])
def test_the_spool_refuses_ids_that_leave_it(tmp_path, bad):
    home = tmp_path / "home"
    rows = pd.DataFrame({"receiver": ["Hasenberg03"], "snr_db": [1.0]})
    with pytest.raises(ValidationError, match="capture id"):
        spool.keep_measurements(bad, rows, home)
    with pytest.raises(ValidationError, match="capture id"):
        spool.keep_capture(bad, {}, {}, [], home)
    with pytest.raises(ValidationError, match="capture id"):
        spool.keep_iq(tutorial.open_dcf77(), bad, "s3://bucket/x", home)
    assert _files(tmp_path) == []


def test_the_spool_keeps_a_good_id_inside_it(tmp_path):
    rows = pd.DataFrame({"receiver": ["Hasenberg03"], "snr_db": [1.0]})
    path = spool.keep_measurements("run.1", rows, tmp_path)
    assert path == spool.spool_root(tmp_path) / "run.1" / "measurements.jsonl"


@pytest.mark.parametrize("bad", ["../x", "a/b", "..", "x/../../y"])
def test_iq_store_keys_go_through_the_capture_id_rule(tmp_path, bad):
    store = IQStore(str(tmp_path / "iq"))
    ds = tutorial.open_dcf77()
    with pytest.raises(ValidationError, match="capture id"):
        store.write(ds, capture_id=bad)
    for call in (store.exists, store.open, store.delete, store.url_for):
        with pytest.raises(ValidationError, match="capture id"):
            call(bad)
    assert _files(tmp_path) == []
