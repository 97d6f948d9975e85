"""Batch work on Dask: reprocessing stored captures, and papermill grids, on a LocalCluster."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from distributed import LocalCluster

from heimdall_lab import db
from heimdall_lab.batch import (
    REPROCESS_COLUMNS,
    grid_run_id,
    notebook_completed,
    reprocess,
    run_grid,
)
from heimdall_lab.emulate import emulated
from heimdall_lab.errors import ValidationError
from heimdall_lab.measurement import MEASURED_COLUMNS
from heimdall_lab.pipeline import capture
from heimdall_lab.store import IQStore

FREQ = 10e6
RECEIVERS = ["Hasenberg03", "DB3TH", "OE3AKB"]
#: Columns written from the metrics and the PSD: the capture path and reprocess must agree.
COMPARED = list(MEASURED_COLUMNS)


@pytest.fixture(scope="module")
def scheduler():
    """One LocalCluster for the module, reached by its address (the ``scheduler=`` path)."""
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0"
    ) as cluster:
        yield cluster.scheduler_address


def _rows(engine, capture_id: str) -> pd.DataFrame:
    return db.measurements_for_capture(engine, capture_id).set_index("receiver").sort_index()


def _count(engine, capture_id: str) -> int:
    with engine.connect() as conn:
        return conn.execute(
            sa.text("SELECT count(*) FROM measurements WHERE capture_id = :c"), {"c": capture_id}
        ).scalar()


def _delete(engine, capture_id: str) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM measurements WHERE capture_id = :c"), {"c": capture_id})


def _assert_same_measurements(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.index) == list(b.index)
    pd.testing.assert_frame_equal(a[COMPARED], b[COMPARED], check_exact=True)
    for name in a.index:
        np.testing.assert_array_equal(a.loc[name, "psd"], b.loc[name, "psd"])
        meta_a = {k: v for k, v in a.loc[name, "metadata"].items() if k != "reprocessed_at"}
        meta_b = {k: v for k, v in b.loc[name, "metadata"].items() if k != "reprocessed_at"}
        assert meta_a == meta_b


def test_reprocess_writes_what_the_capture_path_wrote(embedded_engine, tmp_path, scheduler):
    iq_url = str(tmp_path / "iq")
    caps = []
    for seed in (11, 12):
        with emulated(seed=seed, realtime=False, receivers=RECEIVERS) as emu:
            caps.append(
                capture(FREQ, 1.0, engine=embedded_engine, iq_url=iq_url, **emu.capture_options)
            )
    ids = [c.capture_id for c in caps]
    assert all(c.stage == "done" for c in caps)
    original = {cid: _rows(embedded_engine, cid) for cid in ids}
    assert all(len(rows) == len(RECEIVERS) for rows in original.values())

    # The capture path's rows deleted, then recomputed from the zarr IQ on a LocalCluster.
    for cid in ids:
        _delete(embedded_engine, cid)
    table = reprocess(ids, iq_url=iq_url, engine=embedded_engine, n_workers=1, processes=False)
    assert list(table.columns) == list(REPROCESS_COLUMNS)
    assert list(table.capture_id) == ids
    assert list(table.status) == ["done", "done"], table.error.tolist()
    assert list(table.rows_written) == [3, 3] and list(table.rows_deleted) == [0, 0]
    assert list(table.samples) == [int(original[c].samples_count.sum()) for c in ids]
    for cid in ids:
        again = _rows(embedded_engine, cid)
        _assert_same_measurements(original[cid], again)
        assert again.iq_path.tolist() == original[cid].iq_path.tolist()
        assert all("reprocessed_at" in m for m in again.metadata)

    # Again, skipping: every receiver has its row, nothing is read or written.
    skipped = reprocess(iq_url=iq_url, engine=embedded_engine, scheduler=scheduler)
    assert sorted(skipped.capture_id) == sorted(ids)
    assert set(skipped.status) == {"skipped"} and skipped.rows_written.sum() == 0

    # Replacing: the same rows, once each.
    replaced = reprocess(
        ids, iq_url=iq_url, engine=embedded_engine, scheduler=scheduler, mode="replace"
    )
    assert list(replaced.status) == ["done", "done"]
    assert list(replaced.rows_deleted) == [3, 3] and list(replaced.rows_written) == [3, 3]
    for cid in ids:
        assert _count(embedded_engine, cid) == 3
        _assert_same_measurements(original[cid], _rows(embedded_engine, cid))

    # One missing row of one capture: only that one is added (no duplicates).
    with embedded_engine.begin() as conn:
        conn.execute(
            sa.text(
                "DELETE FROM measurements m USING websdrs w WHERE m.websdr_id = w.id "
                "AND m.capture_id = :c AND w.name = 'DB3TH'"
            ),
            {"c": ids[0]},
        )
    filled = reprocess(ids, iq_url=iq_url, engine=embedded_engine, scheduler=scheduler)
    assert list(filled.status) == ["done", "skipped"]
    assert list(filled.rows_written) == [1, 0]
    assert _count(embedded_engine, ids[0]) == 3
    _assert_same_measurements(original[ids[0]], _rows(embedded_engine, ids[0]))


def test_reprocess_records_a_stored_capture_the_database_lacks(
    embedded_engine, tmp_path, scheduler
):
    iq_url = str(tmp_path / "iq")
    store = IQStore(iq_url)
    with emulated(seed=13, realtime=False, receivers=RECEIVERS[:2]) as emu:
        cap = capture(FREQ, 1.0, engine=embedded_engine, iq_url=iq_url, **emu.capture_options)
    copy_id = uuid.uuid4().hex  # the same IQ under a second capture id, in the store only
    store.write(store.open(cap.capture_id).load(), capture_id=copy_id)
    assert db.get_capture(embedded_engine, copy_id) is None
    missing = uuid.uuid4().hex
    table = reprocess(
        [copy_id, missing, copy_id], iq_url=iq_url, engine=embedded_engine, scheduler=scheduler
    )
    assert list(table.capture_id) == [copy_id, missing]
    assert list(table.status) == ["done", "failed"]
    assert "not in the store" in table.error.iloc[1]
    record = db.get_capture(embedded_engine, copy_id)
    assert record.status == "done" and record.frequency_hz == FREQ
    assert record.parameters["seed"] == 13
    _assert_same_measurements(
        _rows(embedded_engine, cap.capture_id), _rows(embedded_engine, copy_id)
    )
    assert all(p.endswith(f"{copy_id}.zarr#receiver={n}") for n, p in
               _rows(embedded_engine, copy_id).iq_path.items())  # fmt: skip


def test_reprocess_rejects_bad_arguments(embedded_engine, tmp_path):
    with pytest.raises(ValidationError, match="mode"):
        reprocess([], iq_url=str(tmp_path), engine=embedded_engine, mode="overwrite")
    with pytest.raises(ValidationError, match="n_workers"):
        reprocess([], iq_url=str(tmp_path), engine=embedded_engine, n_workers=0)
    with pytest.raises(ValidationError, match="capture id"):
        reprocess(["../x"], iq_url=str(tmp_path), engine=embedded_engine)
    empty = reprocess(iq_url=str(tmp_path / "nothing"), engine=embedded_engine)
    assert empty.empty and list(empty.columns) == list(REPROCESS_COLUMNS)


def test_grid_run_ids_and_validation(tmp_path):
    assert grid_run_id({"a": 1, "b": [2]}) == grid_run_id({"b": [2], "a": 1})
    assert grid_run_id({"a": 1}) != grid_run_id({"a": 2})
    with pytest.raises(ValidationError, match="no parameter"):
        run_grid("capture", {"nonsense": [1]}, tmp_path)
    with pytest.raises(ValidationError, match="non-empty list"):
        run_grid("capture", {"seed": []}, tmp_path)
    with pytest.raises(ValidationError, match="non-empty list"):
        run_grid("capture", {"seed": "12"}, tmp_path)
    assert not notebook_completed(tmp_path / "missing.ipynb")
    (tmp_path / "broken.ipynb").write_text("{not json")
    assert not notebook_completed(tmp_path / "broken.ipynb")


@pytest.fixture
def env(embedded, tmp_path, monkeypatch):
    monkeypatch.setenv("HEIMDALL_DATABASE_URL", embedded.url)
    monkeypatch.setenv("HEIMDALL_IQ_URL", str(tmp_path / "iq"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_grid_of_capture_notebooks_resumes(env, embedded_engine):
    grid = {"duration_s": [1.0, -1.0], "seed": [21], "realtime": [False]}
    out_dir = env / "reports" / "grid"
    first = run_grid("capture", grid, out_dir, n_workers=2, processes=False)
    assert list(first.columns) == [
        "run_id", "parameters", "duration_s", "seed", "realtime", "output", "status",
        "elapsed_s", "error",
    ]  # fmt: skip
    assert list(first.duration_s) == [1.0, -1.0]
    assert list(first.status) == ["completed", "failed"], first.error.tolist()
    assert "duration" in first.error.iloc[1]
    good, bad = (Path(p) for p in first.output)
    assert (
        good.parent == out_dir and good.name == f"capture-{grid_run_id(first.parameters[0])}.ipynb"
    )
    assert notebook_completed(good, first.parameters[0])
    assert not notebook_completed(good, {**first.parameters[0], "seed": 22})
    assert bad.is_file() and not notebook_completed(bad)  # kept, with its traceback
    assert not (out_dir / ".partial").exists()
    text = json.dumps([c.get("outputs", []) for c in json.loads(good.read_text())["cells"]])
    stored_id = re.search(r"capture ([0-9a-f]{32}): done", text).group(1)
    assert db.get_capture(embedded_engine, stored_id).status == "done"
    mtime = good.stat().st_mtime_ns

    # Again: the completed run is skipped (its notebook untouched), the failed one re-runs.
    second = run_grid("capture", grid, out_dir, n_workers=1, processes=False)
    assert list(second.status) == ["skipped", "failed"]
    assert good.stat().st_mtime_ns == mtime
    assert list(second.run_id) == list(first.run_id)
