"""The one capture call, against the emulator, the embedded PostgreSQL and real IQ stores."""

from __future__ import annotations

import dataclasses
import io
import json
import re
import uuid

import numpy as np
import pytest
import sqlalchemy as sa

from heimdall_lab import db
from heimdall_lab.emulate import Fault, emulated
from heimdall_lab.errors import ValidationError
from heimdall_lab.kiwi.acquire import Progress, TqdmProgress, acquire
from heimdall_lab.pipeline import capture
from heimdall_lab.receivers import DEFAULT_RECEIVERS, MAX_DURATION_S, Receiver
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
    with emulated(seed=4, realtime=False) as emu:
        cap = capture(
            FREQ,
            2.0,
            engine=embedded_engine,
            iq_url=str(tmp_path / "iq"),
            receivers=emu.receivers,
            metadata=emu.parameters,
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
    order = ["connecting", "receiving", "storing", "done"]
    stages = [s for s, _ in seen]
    assert [s for s in order if s in stages] == order
    assert [stages.index(s) for s in order] == sorted(stages.index(s) for s in order)
    percents = [p for _, p in seen]
    assert percents == sorted(percents) and percents[-1] == 100.0


def test_same_parameters_and_seed_give_identical_iq(embedded_engine, tmp_path):
    runs = []
    for _ in range(2):
        with emulated(
            seed=9, start_utc=START, realtime=False, receivers=["Hasenberg03", "OE3AKB"]
        ) as emu:
            runs.append(
                capture(
                    FREQ,
                    1.0,
                    engine=embedded_engine,
                    iq_url=str(tmp_path / "iq"),
                    **emu.capture_options,
                )
            )
    assert runs[0].capture_id != runs[1].capture_id
    a, b = (IQStore(str(tmp_path / "iq")).open(r.capture_id) for r in runs)
    np.testing.assert_array_equal(a.iq.values, b.iq.values)
    np.testing.assert_array_equal(a.frame_gpsnsec.values, b.frame_gpsnsec.values)
    # The stored parameters repeat the capture.
    params = db.get_capture(embedded_engine, runs[0].capture_id).parameters
    assert params["start_utc"].startswith(START) and params["seed"] == 9
    with emulated(
        seed=10, start_utc=START, realtime=False, receivers=["Hasenberg03", "OE3AKB"]
    ) as emu:
        other = capture(
            FREQ, 1.0, engine=embedded_engine, iq_url=str(tmp_path / "iq"), **emu.capture_options
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
            receivers=[emu.receiver("Hasenberg03"), dead],
            retries=0,
        )
    assert cap.stage == "partial"
    assert list(cap.metrics.index) == ["Hasenberg03"]
    assert cap.status().loc["NOBODY", "reason"] == "unreachable"
    assert db.get_capture(embedded_engine, cap.capture_id).status == "partial"
    assert _rows(embedded_engine, cap.capture_id) == 1


def test_unwritable_store_keeps_iq_locally_for_sync(embedded_engine, tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    home = tmp_path / "home"
    with emulated(seed=2, realtime=False, receivers=["Hasenberg03", "DK0TE"]) as emu:
        cap = capture(
            FREQ,
            1.0,
            engine=embedded_engine,
            iq_url=str(blocked / "iq"),
            receivers=emu.receivers,
            metadata=emu.parameters,
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
    with emulated(seed=2, realtime=False, receivers=["Hasenberg03", "DK0TE"]) as emu:
        cap = capture(
            FREQ,
            1.0,
            engine=embedded_engine,
            iq_url=str(blocked / "iq"),
            receivers=emu.receivers,
            metadata=emu.parameters,
            home=str(blocked / "home"),
        )
    assert cap.stage == "failed"
    assert cap.errors and cap.errors[0].startswith("storing IQ")
    # The IQ could be kept nowhere; it was still measured, and the measurements are kept.
    assert cap.iq_url is None and sorted(cap.metrics.index) == ["DK0TE", "Hasenberg03"]
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
    args = {"frequency_hz": FREQ, "duration_s": 1.0, **kwargs}
    db.seed_receivers(embedded_engine)
    with pytest.raises(ValidationError, match=message):
        capture(engine=embedded_engine, **args)
    assert len(db.list_captures(embedded_engine, limit=10_000)) == before


def test_acquisition_limit_is_capture_s_not_the_database_s(embedded_engine):
    """Two days is too long to acquire in one call, but a two-day recording can be recorded."""
    before = len(db.list_captures(embedded_engine, limit=10_000))
    dead = Receiver("NOBODY", "127.0.0.1", 9, 50.0, 10.0, timeout_s=1.0)
    with pytest.raises(ValidationError, match="over the limit"):
        capture(FREQ, 2 * 86400.0, engine=embedded_engine, receivers=[dead])
    assert len(db.list_captures(embedded_engine, limit=10_000)) == before
    assert MAX_DURATION_S < 2 * 86400.0
    capture_id = db.create_capture(embedded_engine, FREQ, 2 * 86400.0, status="done")
    assert db.get_capture(embedded_engine, capture_id).duration_s == 2 * 86400.0
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValidationError, match="duration"):
            db.create_capture(embedded_engine, FREQ, bad)


def test_named_capture_from_emulated_receivers_is_stored(embedded, tmp_path):
    """A readable capture id; receivers the database has never seen are registered first."""
    engine = db.get_engine(embedded.url)  # a fresh engine: nothing is seeded implicitly
    try:
        with emulated(seed=5, realtime=False, receivers=["F4JOY", "Purmerend"]) as emu:
            fresh = [
                dataclasses.replace(r, name=f"EMU{i}-{uuid.uuid4().hex[:6]}")
                for i, r in enumerate(emu.receivers)
            ]
            cap = capture(
                FREQ,
                1.0,
                engine=engine,
                store=str(tmp_path / "iq"),
                receivers=fresh,
                metadata=emu.parameters,
                gps_reference=emu.start_utc,
                capture_id=f"my-run-{uuid.uuid4().hex[:8]}",
            )
        assert cap.stage == "done", cap.errors
        rec = db.get_capture(engine, cap.capture_id)
        assert rec is not None and rec.status == "done" and rec.iq_url == cap.iq_url
        assert rec.parameters["seed"] == 5 and rec.parameters["emulate"] is True
        names = {r.name for r in db.list_receivers(engine, active_only=False)}
        assert {r.name for r in fresh} <= names
        # registered, but not among the receivers a later capture would dial by default
        assert not {r.name for r in fresh} & {r.name for r in db.list_receivers(engine)}
        assert _rows(engine, cap.capture_id) == 2
        stored = IQStore(str(tmp_path / "iq")).open(cap.capture_id)
        assert sorted(stored["receiver"].values.tolist()) == sorted(r.name for r in fresh)
    finally:
        engine.dispose()


def test_my_run_1_capture_id(embedded_engine, tmp_path):
    existing = db.get_capture(embedded_engine, "my-run-1")
    if existing is not None:
        pytest.skip("my-run-1 already recorded in this database")
    with emulated(seed=6, realtime=False, receivers=["Hasenberg03"]) as emu:
        cap = capture(
            FREQ,
            1.0,
            engine=embedded_engine,
            store=str(tmp_path / "iq"),
            capture_id="my-run-1",
            **emu.capture_options,
        )
    assert cap.capture_id == "my-run-1" and cap.stage == "done", cap.errors
    assert db.get_capture(embedded_engine, "my-run-1").status == "done"
    assert IQStore(str(tmp_path / "iq")).open("my-run-1").sizes["receiver"] == 1
    assert _rows(embedded_engine, "my-run-1") == 1


def test_injected_engine_and_store_are_used(embedded, tmp_path):
    engine = db.get_engine(embedded.url)
    store = IQStore(str(tmp_path / "elsewhere"))
    with emulated(seed=7, realtime=False, receivers=["Hasenberg03", "DB3TH"]) as emu:
        cap = capture(FREQ, 1.0, engine=engine, store=store, **emu.capture_options)
    try:
        assert cap.stage == "done", cap.errors
        assert cap.iq_url == store.url_for(cap.capture_id)
        assert store.exists(cap.capture_id) and cap.capture_id in store.list()
        assert store.open(cap.capture_id).sizes["receiver"] == 2
        assert db.get_capture(engine, cap.capture_id).iq_url == cap.iq_url
        assert _rows(engine, cap.capture_id) == 2
    finally:
        engine.dispose()
    with pytest.raises(ValidationError, match="not both"):
        capture(FREQ, 1.0, store=store, iq_url=str(tmp_path), receivers=emu.receivers)


def test_emulated_provides_receivers_and_is_reproducible():
    with emulated(
        seed=3, start_utc=START, realtime=False, receivers=["Hasenberg03", "North-Shropshire-UK"]
    ) as a:
        assert [r.name for r in a.receivers] == ["Hasenberg03", "North-Shropshire-UK"]
        assert all(r.host == "127.0.0.1" and r.port > 0 for r in a.receivers)
        assert len({r.port for r in a.receivers}) == 2
        params = dict(a.parameters)
        got_a = acquire(a.receivers, FREQ, 0.5, gps_reference=a.start_utc)
    with emulated(
        seed=3, start_utc=START, realtime=False, receivers=["Hasenberg03", "North-Shropshire-UK"]
    ) as b:
        assert b.parameters == params
        got_b = acquire(b.receivers, FREQ, 0.5, gps_reference=b.start_utc)
    assert params["seed"] == 3 and params["start_utc"].startswith(START)
    assert params["emulate"] is True and params["realtime"] is False
    assert params["scenario"]["seed"] == 3 and params["faults"] is None
    assert json.loads(json.dumps(params)) == params
    np.testing.assert_array_equal(got_a.dataset.iq.values, got_b.dataset.iq.values)
    np.testing.assert_array_equal(got_a.dataset.start_time.values, got_b.dataset.start_time.values)
    with emulated(seed=4, start_utc=START, realtime=False, receivers=["Hasenberg03"]) as c:
        got_c = acquire(c.receivers, FREQ, 0.5, gps_reference=c.start_utc)
    assert not np.array_equal(got_a.dataset.iq.values[:1], got_c.dataset.iq.values)
    with emulated(
        realtime=False, receivers=["Hasenberg03"], faults={"Hasenberg03": Fault("refuse")}
    ) as d:
        assert d.parameters["faults"] == {
            "Hasenberg03": {"kind": "refuse", "after_frames": 0, "times": None, "slow_factor": 2.0}
        }
    with pytest.raises(ValidationError, match="not sites"), emulated(receivers=["NOT_A_SITE"]):
        pass


def test_metadata_may_not_redefine_the_capture_s_parameters(embedded_engine):
    dead = Receiver("NOBODY", "127.0.0.1", 9, 50.0, 10.0, timeout_s=1.0)
    with pytest.raises(ValidationError, match="redefine"):
        capture(FREQ, 1.0, engine=embedded_engine, receivers=[dead], metadata={"frequency_hz": 1})


def test_an_emulated_capture_never_leaves_loopback_addresses_behind(embedded_engine, tmp_path):
    """Default names an emulator stood in for are registered with their real addresses."""
    name = f"fresh_{uuid.uuid4().hex[:8]}"
    admin = embedded_engine.execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    engine = db.get_engine(embedded_engine.url.set(database=name))  # migrated, no receivers
    try:
        with emulated(seed=8, realtime=False, receivers=["Hasenberg03", "DB3TH"]) as emu:
            cap = capture(FREQ, 1.0, engine=engine, store=str(tmp_path), **emu.capture_options)
        assert cap.stage == "done", cap.errors
        known = {r.name: r for r in db.list_receivers(engine)}
        defaults = {r.name: r for r in DEFAULT_RECEIVERS}
        for rx in ("Hasenberg03", "DB3TH"):
            assert known[rx].address == defaults[rx].address
            assert not known[rx].host.startswith("127.")
        assert db.seed_receivers(engine) == len(DEFAULT_RECEIVERS) - 2  # the others still come
    finally:
        engine.dispose()


def test_progress_never_reads_past_100_percent():
    # A real server's last frame ran past the duration: 36352 samples of 36004 asked.
    p = Progress("Hasenberg03", "done", 36352, 36004)
    assert p.received == 36004 and p.fraction == 1.0 and p.percent == 100.0
    assert p.describe() == "done, 36,004/36,004 samples (100 %)"
    assert str(p) == "Hasenberg03: done, 36,004/36,004 samples (100 %)"
    assert Progress("X", "retrying", 10, 0, attempt=2, message="refused").describe() == (
        "retrying (attempt 2): refused"
    )
    out = io.StringIO()
    bars = TqdmProgress(["Hasenberg03"], file=out, disable=False, ncols=100)
    bars(Progress("Hasenberg03", "receiving", 18000, 36004))
    bars(Progress("Hasenberg03", "done", 36352, 36004))
    bars.close()
    text = out.getvalue()
    assert "36004/36004" in text and "100%" in text and "done" in text
    assert "36352" not in text
    assert max(int(n) for n in re.findall(r"(\d+)%", text)) == 100


def test_capture_draws_one_bar_per_receiver(embedded_engine, tmp_path, monkeypatch):
    drawn = []

    def bars(names):  # the bars capture() draws, into a buffer
        drawn.append(TqdmProgress(names, file=io.StringIO(), disable=False))
        return drawn[-1]

    monkeypatch.setattr("heimdall_lab.pipeline.TqdmProgress", bars)
    names = ["Hasenberg03", "DB3TH"]
    with emulated(seed=2, realtime=False, receivers=names) as emu:
        cap = capture(
            FREQ,
            1.0,
            engine=embedded_engine,
            store=str(tmp_path),
            progress=True,
            **emu.capture_options,
        )
    assert cap.stage == "done", cap.errors
    (bars,) = drawn
    assert list(bars._bars) == names
    for name in names:
        bar = bars._bars[name]
        assert bar.n == bar.total == cap.receiver_progress[name].expected
        assert bar.postfix == "done"
