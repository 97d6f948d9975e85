"""The one capture call, against the emulator, the embedded PostgreSQL and real IQ stores."""

from __future__ import annotations

import json

import numpy as np
import pytest
import sqlalchemy as sa

from heimdall_lab import db
from heimdall_lab.capture import capture
from heimdall_lab.errors import ValidationError
from heimdall_lab.receivers import Receiver
from heimdall_lab.store import IQStore

FREQ = 10e6
START = "2026-11-01T12:00:00"


def _rows(engine, capture_id):
    with engine.connect() as conn:
        return conn.execute(
            sa.text("SELECT count(*) FROM measurements WHERE capture_id = :c"), {"c": capture_id}
        ).scalar()


def test_emulated_capture_is_stored_everywhere(embedded_engine, tmp_path):
    seen = []
    cap = capture(
        FREQ,
        2.0,
        engine=embedded_engine,
        iq_url=str(tmp_path / "iq"),
        seed=4,
        realtime=False,
        on_progress=lambda c: seen.append((c.stage, c.percent)),
    )
    assert cap.stage == "done", cap.errors
    assert len(cap.metrics) == 7
    # The database row, the measurements and the IQ store agree.
    rec = db.get_capture(embedded_engine, cap.capture_id)
    assert (rec.status, rec.progress_percent) == ("done", 100.0)
    assert rec.iq_url == cap.iq_url
    assert rec.parameters["seed"] == 4 and rec.parameters["receivers"] == list(cap.metrics.index)
    assert _rows(embedded_engine, cap.capture_id) == 7 == cap.measurements_written
    stored = IQStore(str(tmp_path / "iq")).open(cap.capture_id)
    np.testing.assert_array_equal(stored.iq.values, cap.dataset.iq.values)
    assert json.loads(json.dumps(stored.attrs["parameters"])) == rec.parameters
    table = db.measurements_for_capture(embedded_engine, cap.capture_id).set_index("receiver")
    for name, m in cap.metrics.iterrows():
        assert table.loc[name, "snr_db"] == pytest.approx(m["snr_db"])
        assert table.loc[name, "frequency_offset_hz"] == pytest.approx(m["frequency_offset_hz"])
    # Stages in order, percent never going back, ending at 100.
    order = ["connecting", "receiving", "processing", "storing", "done"]
    stages = [s for s, _ in seen]
    assert [s for s in order if s in stages] == order
    assert [stages.index(s) for s in order] == sorted(stages.index(s) for s in order)
    percents = [p for _, p in seen]
    assert percents == sorted(percents) and percents[-1] == 100.0


def test_same_parameters_and_seed_give_identical_iq(embedded_engine, tmp_path):
    runs = [
        capture(
            FREQ,
            1.0,
            engine=embedded_engine,
            iq_url=str(tmp_path / "iq"),
            seed=9,
            start_utc=START,
            realtime=False,
            receivers=["HB9Q", "OE3XEC"],
        )
        for _ in range(2)
    ]
    assert runs[0].capture_id != runs[1].capture_id
    a, b = (IQStore(str(tmp_path / "iq")).open(r.capture_id) for r in runs)
    np.testing.assert_array_equal(a.iq.values, b.iq.values)
    np.testing.assert_array_equal(a.frame_gpsnsec.values, b.frame_gpsnsec.values)
    # The stored parameters repeat the capture.
    params = db.get_capture(embedded_engine, runs[0].capture_id).parameters
    assert params["start_utc"].startswith(START) and params["seed"] == 9
    other = capture(
        FREQ,
        1.0,
        engine=embedded_engine,
        iq_url=str(tmp_path / "iq"),
        seed=10,
        start_utc=START,
        realtime=False,
        receivers=["HB9Q", "OE3XEC"],
    )
    c = IQStore(str(tmp_path / "iq")).open(other.capture_id)
    assert not np.array_equal(a.iq.values, c.iq.values)


def test_partial_capture_keeps_what_came(embedded_engine, tmp_path):
    from heimdall_lab.emulate.scenario import Scenario
    from heimdall_lab.emulate.server import Emulator

    dead = Receiver("NOBODY", "127.0.0.1", 9, 50.0, 10.0, timeout_s=1.0)
    with Emulator(Scenario.default(seed=1), realtime=False).running() as emu:
        cap = capture(
            FREQ,
            1.0,
            engine=embedded_engine,
            iq_url=str(tmp_path / "iq"),
            receivers=[emu.receiver("HB9Q"), dead],
            retries=0,
        )
    assert cap.stage == "partial"
    assert list(cap.metrics.index) == ["HB9Q"]
    assert cap.status().loc["NOBODY", "reason"] == "unreachable"
    assert db.get_capture(embedded_engine, cap.capture_id).status == "partial"
    assert _rows(embedded_engine, cap.capture_id) == 1


def test_unwritable_store_keeps_iq_locally_for_sync(embedded_engine, tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    home = tmp_path / "home"
    cap = capture(
        FREQ,
        1.0,
        engine=embedded_engine,
        iq_url=str(blocked / "iq"),
        seed=2,
        realtime=False,
        receivers=["HB9Q", "HB9SL"],
        home=str(home),
    )
    assert cap.stage == "done" and not cap.errors
    assert cap.warnings and cap.warnings[0].startswith("storing IQ")
    assert str(home) in cap.iq_url  # the local copy
    rec = db.get_capture(embedded_engine, cap.capture_id)
    assert rec.iq_url == cap.iq_url and "sync" in rec.error_message
    assert _rows(embedded_engine, cap.capture_id) == 2


def test_unwritable_store_and_spool_fail_the_stage_but_keep_the_rest(embedded_engine, tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    cap = capture(
        FREQ,
        1.0,
        engine=embedded_engine,
        iq_url=str(blocked / "iq"),
        seed=2,
        realtime=False,
        receivers=["HB9Q", "HB9SL"],
        home=str(blocked / "home"),
    )
    assert cap.stage == "failed"
    assert cap.errors and cap.errors[0].startswith("storing IQ")
    assert cap.dataset is not None and cap.dataset.sizes["receiver"] == 2  # nothing lost
    rec = db.get_capture(embedded_engine, cap.capture_id)
    assert rec.status == "failed" and "storing IQ" in rec.error_message
    assert _rows(embedded_engine, cap.capture_id) == 2


def test_nothing_delivered_fails_with_reasons(embedded_engine, tmp_path):
    dead = Receiver("NOBODY", "127.0.0.1", 9, 50.0, 10.0, timeout_s=1.0)
    cap = capture(
        FREQ, 1.0, engine=embedded_engine, iq_url=str(tmp_path), receivers=[dead], retries=0
    )
    assert cap.stage == "failed" and "no receiver delivered" in cap.error
    assert db.get_capture(embedded_engine, cap.capture_id).status == "failed"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"duration_s": 0.0}, "duration"),
        ({"duration_s": float("nan")}, "duration"),
        ({"frequency_hz": 40e6}, "outside"),
        ({"receivers": ["NOT_THERE"]}, "unknown or inactive"),
        ({"duration_s": 1e6}, "over the limit"),
    ],
)
def test_invalid_requests_are_rejected_before_anything_happens(embedded_engine, kwargs, message):
    before = len(db.list_captures(embedded_engine, limit=10_000))
    args = {"frequency_hz": FREQ, "duration_s": 1.0, "seed": 1, **kwargs}
    with pytest.raises(ValidationError, match=message):
        capture(engine=embedded_engine, realtime=False, **args)
    assert len(db.list_captures(embedded_engine, limit=10_000)) == before
