"""End to end, under failure: emulator sockets, the embedded PostgreSQL, an S3 server in-process.

No mocks. Each test checks the stored state (the zarr store and the database rows), and adds a
line to the reliability table that the session writes to reports/reliability.md: the fault,
what should happen, what did, rows lost and duplicates.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from hostile import MODES, STATUS_MODES, HostileServer, PeakRss
from support import FAKE_KEY, FAKE_SECRET, TcpProxy, make_bucket, s3_env

from heimdall_lab import db, spool
from heimdall_lab.emulate.scenario import Scenario
from heimdall_lab.emulate.server import Emulator, Fault, emulated
from heimdall_lab.errors import ValidationError
from heimdall_lab.kiwi.client import StreamSettings, check_health
from heimdall_lab.pipeline import capture
from heimdall_lab.receivers import Receiver
from heimdall_lab.retry import RetryPolicy
from heimdall_lab.store import IQStore
from heimdall_lab.ui.widgets import CaptureForm

# One worker runs the whole file under pytest-xdist (--dist loadgroup): its report table.
pytestmark = pytest.mark.xdist_group("reliability")

FREQ = 10e6
REPORT = Path(__file__).resolve().parents[1] / "reports" / "reliability.md"
_TABLE: list[tuple[str, str, str, int, int]] = []


@pytest.fixture(scope="module", autouse=True)
def reliability_report(request):
    here = Path(__file__).resolve()
    tests = [i for i in request.session.items if Path(str(i.fspath)).resolve() == here]
    yield
    if len(_TABLE) != len(tests):
        return  # a partial run (-k, a failure): keep the last full report
    lines = [
        "# Reliability under faults",
        "",
        "Written by `tests/test_reliability.py` on every run of the test suite: each row is one",
        "end-to-end test against the real emulator sockets, the embedded PostgreSQL and an",
        "in-process S3 server (moto), checked against what the stores hold afterwards.",
        "Rows lost: measurement rows expected (one per receiver that delivered samples) but not",
        "in the database after the test, including after `sync`; duplicates: rows beyond one per",
        "(capture, receiver, time).",
        "",
        "| fault | expected outcome | observed outcome | rows lost | duplicates |",
        "|---|---|---|---|---|",
        *[f"| {f} | {e} | {o} | {lost} | {dup} |" for f, e, o, lost, dup in _TABLE],
        "",
    ]
    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text("\n".join(lines))


def record(fault: str, expected: str, observed: str, lost: int, duplicates: int) -> None:
    _TABLE.append((fault, expected, observed, lost, duplicates))
    assert lost == 0 and duplicates == 0, (fault, lost, duplicates)


def rows_of(engine, capture_id: str) -> tuple[int, int]:
    """(rows, duplicate rows) of a capture's measurements."""
    with engine.connect() as conn:
        total, distinct = conn.execute(
            sa.text(
                "SELECT count(*), count(DISTINCT (websdr_id, timestamp_utc)) "
                "FROM measurements WHERE capture_id = :c"
            ),
            {"c": capture_id},
        ).one()
    return int(total), int(total - distinct)


def stored_state(engine, cap, store: IQStore, expected_rows: int) -> tuple[int, int]:
    """Check the zarr store against the capture; return (rows lost, duplicates)."""
    total, dup = rows_of(engine, cap.capture_id)
    if cap.dataset is not None and cap.dataset.sizes["receiver"]:
        stored = store.open(cap.capture_id)
        assert list(stored.receiver.values) == list(cap.dataset.receiver.values)
        np.testing.assert_array_equal(stored.n_samples.values, cap.dataset.n_samples.values)
        np.testing.assert_array_equal(
            stored.iq.isel(sample=slice(0, 4096)).values,
            cap.dataset.iq.isel(sample=slice(0, 4096)).values,
        )
    return max(expected_rows - total, 0), dup


@pytest.fixture
def s3_store(moto_endpoint, monkeypatch):
    s3_env(monkeypatch, moto_endpoint)
    return IQStore(f"s3://{make_bucket(moto_endpoint)}/archive")


def test_all_seven_receivers(embedded_engine, s3_store):
    cap = _emulated_capture(
        FREQ, 2.0, engine=embedded_engine, iq_url=s3_store.url, seed=11, realtime=False
    )
    assert cap.stage == "done" and len(cap.metrics) == 7
    lost, dup = stored_state(embedded_engine, cap, s3_store, 7)
    assert s3_store.exists(cap.capture_id)
    assert db.get_capture(embedded_engine, cap.capture_id).status == "done"
    record(
        "none: 7 receivers", "done, 7 stored", f"{cap.stage}, {len(cap.metrics)} stored", lost, dup
    )


def test_three_of_seven_succeed_four_fail_differently(embedded_engine, s3_store):
    faults = {
        "F4JOY": Fault("bad_password"),
        "Purmerend": Fault("too_busy"),
        "North-Shropshire-UK": Fault("refuse"),
        "Hasenberg03": Fault("stall", after_frames=0),
    }
    cap = _emulated_capture(
        FREQ,
        1.5,
        engine=embedded_engine,
        iq_url=s3_store.url,
        seed=12,
        realtime=False,
        faults=faults,
        retries=1,
        settings=replace_read_timeout(0.5),
    )
    status = cap.status()
    assert cap.stage == "partial"
    reasons = status.loc[list(faults), "reason"].tolist()
    assert reasons == ["bad_password", "too_busy", "unreachable", "timeout"]
    assert sorted(cap.metrics.index) == ["DB3TH", "DK0TE", "OE3AKB"]
    lost, dup = stored_state(embedded_engine, cap, s3_store, 3)
    row = db.get_capture(embedded_engine, cap.capture_id)
    assert row.status == "partial"
    for name in faults:  # every failure reason reaches the row
        assert f"{name}: failed" in row.error_message
    record(
        "4 of 7 fail: bad password, too busy, refused, stalled before any frame",
        "partial; 3 stored; each failure with its reason",
        f"{cap.stage}; {len(cap.metrics)} stored; {', '.join(reasons)}",
        lost,
        dup,
    )


def _emulated_capture(
    frequency_hz: float,
    duration_s: float,
    *,
    seed: int = 0,
    scenario: Scenario | None = None,
    start_utc: str | None = None,
    realtime: bool = True,
    faults: dict[str, Fault] | None = None,
    receivers: list[str] | None = None,
    **kwargs,
):
    """capture() from emulated receivers, the emulator's parameters recorded with it."""
    with emulated(
        seed=seed,
        scenario=scenario,
        receivers=receivers,
        start_utc=start_utc,
        realtime=realtime,
        faults=faults,
    ) as emu:
        return capture(frequency_hz, duration_s, **emu.capture_options, **kwargs)


def replace_read_timeout(seconds: float):
    from heimdall_lab.kiwi.client import StreamSettings

    return StreamSettings(read_timeout=seconds)


def test_stall_and_slow_sender_against_the_deadline(embedded_engine, s3_store):
    faults = {
        "Hasenberg03": Fault("stall", after_frames=20),
        "OE3AKB": Fault("slow", slow_factor=3),
    }
    cap = _emulated_capture(
        FREQ,
        2.0,
        engine=embedded_engine,
        iq_url=s3_store.url,
        seed=13,
        realtime=True,
        faults=faults,
        deadline_s=3.5,
        receivers=["Hasenberg03", "OE3AKB", "DK0TE"],
        settings=replace_read_timeout(1.0),
    )
    status = cap.status()
    assert status.loc["Hasenberg03", "status"] == "incomplete"
    assert status.loc["Hasenberg03", "reason"] == "timeout"
    assert status.loc["Hasenberg03", "samples"] == 20 * 512
    assert status.loc["OE3AKB", "status"] == "incomplete"
    assert status.loc["OE3AKB", "reason"] == "deadline"
    assert 0 < status.loc["OE3AKB", "samples"] < status.loc["OE3AKB", "expected"]
    assert status.loc["DK0TE", "status"] == "ok"
    lost, dup = stored_state(embedded_engine, cap, s3_store, 3)
    stored = s3_store.open(cap.capture_id)
    assert not bool(stored.complete.sel(receiver="Hasenberg03"))
    rows = db.measurements_for_capture(embedded_engine, cap.capture_id, include_psd=False)
    meta = dict(zip(rows.receiver, rows.metadata, strict=True))
    assert meta["Hasenberg03"]["status"] == "incomplete" and meta["OE3AKB"]["reason"] == "deadline"
    record(
        "stall after 20 frames; slow sender at 1/3 real time; 3.5 s deadline",
        "both kept, marked incomplete (timeout, deadline); the third complete",
        f"{status.loc['Hasenberg03', 'reason']}, {status.loc['OE3AKB', 'reason']}; "
        f"DK0TE {status.loc['DK0TE', 'status']}",
        lost,
        dup,
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"duration_s": 0.0}, "duration"),
        ({"duration_s": -1.0}, "duration"),
        ({"duration_s": float("nan")}, "duration"),
        ({"frequency_hz": 31e6}, "outside"),
        ({"duration_s": 2e5}, "over the limit"),
        ({"receivers": "unknown"}, "unknown or inactive"),
    ],
)
def test_invalid_parameters_rejected_before_any_connection(embedded_engine, kwargs, message):
    before = len(db.list_captures(embedded_engine, limit=100_000))
    with Emulator(Scenario.default(seed=1), realtime=False).running() as emu:
        receivers = [emu.receiver("Hasenberg03")]
        if kwargs.get("receivers") == "unknown":
            kwargs = {"receivers": ["NO_SUCH_RECEIVER"]}
        args = {"frequency_hz": FREQ, "duration_s": 1.0, "receivers": receivers, **kwargs}
        with pytest.raises(ValidationError, match=message):
            capture(engine=embedded_engine, **args)
        assert emu.units["Hasenberg03"].connections == 0
    assert len(db.list_captures(embedded_engine, limit=100_000)) == before
    record(
        f"invalid parameter {kwargs}",
        "rejected before any connection, nothing stored",
        f"ValidationError ({message}); 0 connections; no capture row",
        0,
        0,
    )


def test_status_progression_and_truth(embedded_engine, s3_store):
    scenario = Scenario.default(seed=14)
    seen = []
    cap = _emulated_capture(
        FREQ,
        3.0,
        engine=embedded_engine,
        iq_url=s3_store.url,
        scenario=scenario,
        realtime=False,
        on_progress=lambda c: seen.append((c.stage, c.percent)),
    )
    stages = [s for s, _ in seen]
    order = ["connecting", "receiving", "storing", "done"]
    assert [s for s in dict.fromkeys(stages)] == order
    percents = [p for _, p in seen]
    assert percents[0] == 0.0 and percents[-1] == 100.0 and percents == sorted(percents)
    # Measurements in the database against the scenario's truth.
    rows = db.measurements_for_capture(embedded_engine, cap.capture_id, include_psd=False)
    rows = rows.set_index("receiver")
    truth = {name: scenario.truth(name, FREQ) for name in rows.index}
    for name, t in truth.items():
        assert rows.loc[name, "frequency_offset_hz"] == pytest.approx(
            t["frequency_offset_hz"], abs=0.05
        )
    ref = "Hasenberg03"
    for name, t in truth.items():
        measured = rows.loc[name, "signal_power_dbfs"] - rows.loc[ref, "signal_power_dbfs"]
        expected = t["received_power_dbfs"] - truth[ref]["received_power_dbfs"]
        assert measured == pytest.approx(expected, abs=0.5), name
    lost, dup = stored_state(embedded_engine, cap, s3_store, 7)
    record(
        "none: stages and truth",
        "stages in order 0 -> 100 %; offsets and relative powers match the scenario",
        "in order; offsets within 0.05 Hz, powers within 0.5 dB",
        lost,
        dup,
    )


def test_error_messages_reach_status_row_and_form(embedded_engine, tmp_path):
    form = CaptureForm(engine=embedded_engine, iq_url=str(tmp_path / "iq"))
    form.receivers_select.value = ("Hasenberg03", "DK0TE")
    form.duration_s.value = 1.0
    form.fast.value = True
    # A fault through the same call the form makes: bad password on DK0TE.
    cap = _emulated_capture(
        FREQ,
        1.0,
        engine=embedded_engine,
        iq_url=str(tmp_path / "iq"),
        seed=1,
        realtime=False,
        receivers=["Hasenberg03", "DK0TE"],
        faults={"DK0TE": Fault("bad_password")},
    )
    message = cap.status().loc["DK0TE", "message"]
    assert "password" in message
    assert message in db.get_capture(embedded_engine, cap.capture_id).error_message
    form._show_result(cap)  # the form renders the same Capture as after a click
    assert "bad_password" in form.results_html.value
    record(
        "bad password on one receiver",
        "reason in Capture.status(), the DB row and the form",
        "in all three",
        0,
        0,
    )


def test_disconnect_refused_then_recovered_and_corrupt_frames(embedded_engine, s3_store):
    faults = {
        "Hasenberg03": Fault("disconnect", after_frames=30),
        "DK0TE": Fault("refuse", times=2),
        "OE3AKB": Fault("corrupt", after_frames=4),
        "DB3TH": Fault("truncate", after_frames=6),
    }
    cap = _emulated_capture(
        FREQ,
        2.0,
        engine=embedded_engine,
        iq_url=s3_store.url,
        seed=15,
        realtime=False,
        faults=faults,
        retries=3,
        receivers=list(faults),
    )
    status = cap.status()
    assert status.loc["Hasenberg03", "status"] == "incomplete"
    assert status.loc["Hasenberg03", "samples"] == 30 * 512
    assert status.loc["DK0TE", "status"] == "ok" and status.loc["DK0TE", "attempts"] == 3
    for name in ("OE3AKB", "DB3TH"):
        assert status.loc[name, "status"] == "ok"
        assert status.loc[name, "skipped_frames"] == 1 and status.loc[name, "lost_frames"] == 1
    lost, dup = stored_state(embedded_engine, cap, s3_store, 4)
    stored = s3_store.open(cap.capture_id)
    assert int(stored.n_samples.sel(receiver="Hasenberg03")) == 30 * 512
    record(
        "disconnect after 30 frames; refused twice; a corrupt and a truncated frame",
        "samples so far kept (incomplete); recovered on the 3rd attempt; frames skipped",
        f"Hasenberg03 incomplete with {status.loc['Hasenberg03', 'samples']} samples; "
        f"DK0TE ok after {status.loc['DK0TE', 'attempts']} attempts; 1 frame skipped each",
        lost,
        dup,
    )


def test_s3_down_during_capture_kept_locally_then_synced(embedded_engine, monkeypatch, tmp_path):
    from moto.server import ThreadedMotoServer
    from support import free_port

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    s3_env(monkeypatch, endpoint)
    short = RetryPolicy(attempts=2, initial_s=0.05, maximum_s=0.1, jitter_s=0.0)
    quick = {"config_kwargs": {"retries": {"max_attempts": 1, "mode": "standard"}}}
    store = IQStore(f"s3://{make_bucket(endpoint)}/archive", quick, retry=short)
    server.stop()  # S3 goes away before the IQ is written
    home = tmp_path / "home"
    try:
        cap = _emulated_capture(
            FREQ,
            1.0,
            engine=embedded_engine,
            store=store,
            seed=16,
            realtime=False,
            receivers=["Hasenberg03", "DK0TE"],
            home=str(home),
        )
        assert cap.stage == "done" and cap.warnings
        assert spool.pending(home) == [cap.capture_id]
        # Its Dataset reads the spool's copy, which sync moves away: keep what it holds.
        cap.acquisition.dataset = cap.dataset.load()
        row = db.get_capture(embedded_engine, cap.capture_id)
        assert str(home) in row.iq_url  # marked: its IQ is local, pending upload
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        report = spool.sync(engine=embedded_engine, home=home, stale_after_s=None)
        assert report.error.tolist() == [""]
        assert store.exists(cap.capture_id) and spool.pending(home) == []
        row = db.get_capture(embedded_engine, cap.capture_id)
        assert row.iq_url == store.url_for(cap.capture_id)
        rows = db.measurements_for_capture(embedded_engine, cap.capture_id, include_psd=False)
        assert all(p.startswith(row.iq_url) for p in rows.iq_path)
        lost, dup = stored_state(embedded_engine, cap, store, 2)
    finally:
        server.stop()
    record(
        "S3 down during the capture",
        "retried; IQ kept locally and marked; sync uploads it",
        "kept in the spool, row points at it; uploaded by sync, row and rows updated",
        lost,
        dup,
    )


def test_database_connection_lost_mid_insert(embedded, embedded_engine, tmp_path):
    port = int(embedded.url.rsplit(":", 1)[1].split("/")[0])
    proxy = TcpProxy(port, cut_on=b"COPY").start()
    url = embedded.url.replace(f":{port}/", f":{proxy.port}/")
    try:
        cap = _emulated_capture(
            FREQ,
            1.0,
            database_url=url,
            iq_url=str(tmp_path / "iq"),
            seed=17,
            realtime=False,
            receivers=["Hasenberg03", "DK0TE", "OE3AKB"],
        )
    finally:
        proxy.stop()
    assert proxy.cuts == 1  # the connection really was cut in the middle of the COPY
    assert cap.stage == "done" and not cap.warnings
    total, dup = rows_of(embedded_engine, cap.capture_id)
    assert total == 3
    record(
        "database connection cut during the COPY",
        "rolled back, retried: one copy of each row",
        f"{total} rows after the retry",
        3 - total,
        dup,
    )


def test_database_down_for_the_whole_capture(embedded, embedded_engine, tmp_path):
    port = int(embedded.url.rsplit(":", 1)[1].split("/")[0])
    proxy = TcpProxy(port)  # not started: connections are refused
    url = embedded.url.replace(f":{port}/", f":{proxy.port}/")
    home = tmp_path / "home"
    cap = _emulated_capture(
        FREQ,
        1.0,
        database_url=url,
        iq_url=str(tmp_path / "iq"),
        seed=18,
        realtime=False,
        receivers=["Hasenberg03", "DK0TE"],
        home=str(home),
    )
    assert cap.stage == "done" and cap.database_url.endswith("(unreachable)")
    assert any("spooled" in w for w in cap.warnings)
    assert db.get_capture(embedded_engine, cap.capture_id) is None
    assert spool.pending(home) == [cap.capture_id]
    proxy.start()  # the database is back
    try:
        for _ in range(2):  # replaying twice must not duplicate anything
            spool.sync(database_url=url, home=home, stale_after_s=None)
    finally:
        proxy.stop()
    row = db.get_capture(embedded_engine, cap.capture_id)
    assert row.status == "done" and row.parameters["seed"] == 18
    total, dup = rows_of(embedded_engine, cap.capture_id)
    assert spool.pending(home) == []
    record(
        "database down for the whole capture",
        "measurements spooled, replayed later, no duplicates",
        f"spooled; after two syncs {total} rows and the capture row",
        2 - total,
        dup,
    )


def _capture_process(embedded, tmp_path, capture_id: str, body: str, cli: list[str] | None = None):
    """A capture in a process of its own (to be killed or interrupted), on the test's stores."""
    env = {
        **os.environ,
        "HEIMDALL_DATABASE_URL": embedded.url,
        "HEIMDALL_IQ_URL": str(tmp_path / "iq"),
        "HEIMDALL_HOME": str(tmp_path / "home"),
    }
    command = cli or [sys.executable, "-c", body]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for(engine, capture_id: str, check, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = db.get_capture(engine, capture_id)
        if row is not None and check(row):
            return row
        time.sleep(0.1)
    pytest.fail(f"capture {capture_id} never {what}")


def _silence(engine, capture_id: str, seconds: float) -> None:
    """Move a capture's last heartbeat back, as if ``seconds`` had passed without one."""
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE captures SET heartbeat_at = heartbeat_at - make_interval(secs => :s) "
                "WHERE id = :c"
            ),
            {"s": seconds, "c": capture_id},
        )


def test_killed_capture_is_never_marked_done(embedded, embedded_engine, tmp_path):
    import uuid

    capture_id = uuid.uuid4().hex
    body = (
        "from heimdall_lab.pipeline import capture\n"
        "from heimdall_lab.emulate import emulated\n"
        "with emulated(seed=19, receivers=['Hasenberg03']) as emu:\n"
        f"    capture(10e6, 30.0, capture_id={capture_id!r}, **emu.capture_options)\n"
    )
    proc = _capture_process(embedded, tmp_path, capture_id, body)
    try:
        _wait_for(
            embedded_engine,
            capture_id,
            lambda r: r.status == "receiving" and r.progress_percent > 10,
            "started receiving",
        )
        # While it lives, it beats: even --stale-after 0 leaves it alone.
        spool.sync(engine=embedded_engine, home=tmp_path / "sync", stale_after_s=0)
        live = db.get_capture(embedded_engine, capture_id)
        assert live.status == "receiving" and live.heartbeat_at is not None
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    row = db.get_capture(embedded_engine, capture_id)
    assert row.status == "receiving"  # not done, whatever happens next
    assert not IQStore(str(tmp_path / "iq")).exists(capture_id)  # not complete: no marker
    assert rows_of(embedded_engine, capture_id) == (0, 0)
    _silence(embedded_engine, capture_id, db.STALE_AFTER_S + 5)
    synced = spool.sync(engine=embedded_engine, home=tmp_path / "sync", stale_after_s=0)
    assert capture_id in set(synced["capture_id"])
    dead = db.get_capture(embedded_engine, capture_id)
    assert dead.status == "failed" and "no heartbeat" in dead.error_message
    record(
        "capture process killed (SIGKILL) while receiving",
        "never marked done; a live capture is never taken for dead; no complete IQ: failed",
        "left at 'receiving', untouched by sync while beating; no IQ, no rows; then 'failed'",
        0,
        0,
    )


def test_killed_after_the_iq_was_stored_is_measured_by_sync(embedded, embedded_engine, tmp_path):
    import uuid

    capture_id = uuid.uuid4().hex
    # The process dies the moment it would write its measurement rows: its IQ is complete.
    body = (
        "import os\n"
        "from heimdall_lab import db\n"
        "from heimdall_lab.pipeline import capture\n"
        "from heimdall_lab.emulate import emulated\n"
        "db.write_measurements = lambda *a, **k: os._exit(9)\n"
        "with emulated(seed=21, receivers=['Hasenberg03', 'Purmerend'], realtime=False) as emu:\n"
        f"    capture(10e6, 2.0, capture_id={capture_id!r}, **emu.capture_options)\n"
    )
    proc = _capture_process(embedded, tmp_path, capture_id, body)
    assert proc.wait(timeout=120) == 9
    row = db.get_capture(embedded_engine, capture_id)
    assert row.status == "receiving" and row.iq_url  # the store is named from the start
    store = IQStore(str(tmp_path / "iq"))
    assert not store.exists(capture_id)  # its interval is stored, the capture not completed
    assert rows_of(embedded_engine, capture_id) == (0, 0)
    _silence(embedded_engine, capture_id, db.STALE_AFTER_S + 5)
    for _ in range(2):  # twice: the second changes nothing
        spool.sync(engine=embedded_engine, home=tmp_path / "sync", stale_after_s=0)
    after = db.get_capture(embedded_engine, capture_id)
    total, dup = rows_of(embedded_engine, capture_id)
    assert after.status == "incomplete", after.error_message
    stored = store.open(capture_id)
    assert not stored["complete"].values.any()
    # One interval each (2 s); every receiver whose interval reached the store has its row.
    kept = int((stored["n_samples"].values > 0).sum())
    assert kept >= 1 and (total, dup) == (kept, 0)
    assert "stored: " in after.error_message and " frames" in after.error_message
    record(
        "capture process killed after an interval was stored, before its rows",
        "sync completes the store as incomplete and measures every stored interval",
        f"'receiving' until sync; then '{after.status}' with {total} rows from the stored IQ",
        kept - total,
        dup,
    )


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["Ctrl-C", "SIGTERM"])
def test_ctrl_c_cancels_and_keeps_what_arrived(stop, embedded, embedded_engine, tmp_path):
    proc = _capture_process(
        embedded,
        tmp_path,
        "",
        "",
        cli=[
            str(Path(sys.executable).with_name("heimdall-lab")),
            "capture",
            "--seed",
            "23",
            "-f",
            "10e6",
            "-d",
            "30",
            "-q",
        ],
    )
    try:
        deadline = time.monotonic() + 60
        row = None
        while time.monotonic() < deadline and row is None:
            recent = db.list_captures(embedded_engine, limit=5)
            live = recent[(recent["status"] == "receiving") & (recent["progress_percent"] > 10)]
            newest = live[live["created_at"] > pd.Timestamp.now(tz="UTC") - pd.Timedelta("2min")]
            row = newest.iloc[0] if len(newest) else None
            time.sleep(0.1)
        assert row is not None, "the capture never started receiving"
        capture_id = row["id"]
        t0 = time.monotonic()
        proc.send_signal(stop)
        _out, err = proc.communicate(timeout=30)
        seconds = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err.decode(), lines
    after = db.get_capture(embedded_engine, capture_id)
    assert after.status == "cancelled"
    assert after.start_time is not None
    stored = IQStore(str(tmp_path / "iq")).open(capture_id)
    assert stored.sizes["receiver"] == 7
    assert not stored["complete"].values.any()  # kept, as incomplete
    assert 0 < int(stored["n_samples"].min()) < 30 * 12000
    total, dup = rows_of(embedded_engine, capture_id)
    record(
        f"{'Ctrl-C' if stop == signal.SIGINT else 'SIGTERM'} during a capture "
        f"(exit after {seconds:.1f} s)",
        "exit 130 in one line; row 'cancelled'; what arrived stored as incomplete",
        f"exit {proc.returncode}, row '{after.status}', IQ of 7 receivers and {total} rows kept",
        7 - total,
        dup,
    )


def test_credentials_and_hostile_names(embedded_engine, s3_store, caplog):
    hostile = "Zürich'; DROP TABLE measurements; --"
    rx = Receiver("HOSTILE1", "127.0.0.1", 8073, 47.3, 8.5, location_name=hostile)
    db.add_receiver(embedded_engine, rx)
    with (
        caplog.at_level(logging.DEBUG),
        Emulator(
            Scenario.default(seed=20), realtime=False, receivers=[replace(rx, name="Hasenberg03")]
        ).running() as emu,
    ):
        target = replace(emu.receiver("Hasenberg03"), name="HOSTILE1")
        # The emulator serves Hasenberg03's site; the capture names the receiver HOSTILE1.
        cap = capture(FREQ, 1.0, engine=embedded_engine, iq_url=s3_store.url, receivers=[target])
    assert cap.stage == "done"
    with embedded_engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM measurements")).scalar() > 0
        name = conn.execute(
            sa.text("SELECT location_name FROM websdrs WHERE name = 'HOSTILE1'")
        ).scalar()
    assert name == hostile
    attrs = repr(s3_store.open(cap.capture_id).attrs)
    params = repr(db.get_capture(embedded_engine, cap.capture_id).parameters)
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("heimdall"))
    assert "HOSTILE1" in ours or cap.capture_id in ours  # the log was captured
    for secret in (FAKE_KEY, FAKE_SECRET):
        assert secret not in attrs and secret not in params and secret not in ours
    with pytest.raises(ValidationError):
        Receiver("../escape", "127.0.0.1", 8073)
    emu = Emulator(Scenario.default(seed=1))
    assert emu.host == "127.0.0.1"
    record(
        "hostile location name; S3 keys in the environment; '../' receiver name",
        "stored verbatim, SQL intact; no secret in zarr, DB or logs; name refused",
        "as expected",
        0,
        0,
    )


def test_killed_papermill_batch_resumes(env, embedded, embedded_engine):
    from heimdall_lab.batch import notebook_completed, run_grid

    grid = {"duration_s": [2.0], "seed": [31, 32, 33], "realtime": [True]}
    code = (
        "from heimdall_lab.batch import run_grid\n"
        f"run_grid('capture', {grid!r}, 'grid', n_workers=1, processes=False)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            done = [p for p in (env / "grid").glob("capture-*.ipynb") if notebook_completed(p)]
            if done:
                break
            time.sleep(0.3)
        else:
            pytest.fail("no run of the grid completed")
        os.killpg(proc.pid, signal.SIGKILL)  # the batch and its kernels, midway
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    # Nothing marked done is incomplete: every 'done' capture has its IQ and its rows.
    store = IQStore(str(env / "iq"))
    with embedded_engine.connect() as conn:
        done_ids = [
            r[0]
            for r in conn.execute(
                sa.text(
                    "SELECT id FROM captures WHERE status = 'done' AND parameters->>'seed' "
                    "IN ('31', '32', '33') AND parameters->>'realtime' = 'true'"
                )
            )
        ]
    assert done_ids
    for capture_id in done_ids:
        assert store.exists(capture_id)
        assert rows_of(embedded_engine, capture_id) == (7, 0)
    # Re-running resumes: completed runs are skipped, the others run.
    again = run_grid("capture", grid, env / "grid", n_workers=1, processes=False)
    assert set(again.status) <= {"skipped", "completed"}
    assert (again.status == "skipped").sum() >= len(done)
    assert all(notebook_completed(p) for p in again.output)
    record(
        "papermill batch of 3 captures killed (SIGKILL) midway",
        "no incomplete capture marked done; re-run skips completed runs",
        f"{len(done_ids)} done before the kill, each complete; re-run: "
        f"{(again.status == 'skipped').sum()} skipped, {(again.status == 'completed').sum()} "
        "run",
        0,
        0,
    )


# -- hostile receivers: one misbehaving server captured with a good one ---------------------

HOSTILE_DURATION_S = 1.0
HOSTILE_DEADLINE_S = 6.0
HOSTILE_SETTINGS = StreamSettings(read_timeout=1.5, connect_timeout=2.0)
#: Modes whose samples are kept but whose timing is wrong: the receiver is not ok, its
#: samples stay, and its GNSS times are never written as measurement times.
TIMING_MODES = {
    "seq_backwards": "sequence",
    "seq_repeat": "sequence",
    "gnss_backwards": "GNSS time",
    "gnss_frozen": "GNSS time",
    "gnss_nonsense": "GNSS time",
    "rate_mismatch": "rate",
    "rate_change": "rate",
    "gnss_days_off": "clock",
    "seq_leaps": "lost",
}


@pytest.fixture
def good_receiver():
    """A fresh emulator per test: its streams start now, so their GNSS time agrees with the clock
    however long the module has run."""
    with emulated(seed=1, receivers=["Purmerend"], realtime=False) as emu:
        yield emu.receivers[0]


@pytest.mark.parametrize("mode", MODES)
def test_a_hostile_receiver_costs_the_good_one_nothing(
    mode, good_receiver, embedded_engine, tmp_path
):
    good = good_receiver
    with HostileServer(mode) as bad, PeakRss() as rss:
        t0 = time.monotonic()
        cap = capture(
            FREQ,
            HOSTILE_DURATION_S,
            receivers=[good, bad.receiver],
            store=str(tmp_path / "iq"),
            engine=embedded_engine,
            settings=HOSTILE_SETTINGS,
            deadline_s=HOSTILE_DEADLINE_S,
            retries=0,
            home=str(tmp_path / "home"),
        )
        seconds = time.monotonic() - t0
    status = cap.status()
    hostile = status.loc["hostile"]
    # a hang guard only: setup, storing and measuring add seconds on a loaded machine
    assert seconds < HOSTILE_DEADLINE_S + 60.0
    if mode == "slow_frames":  # it would take 12 s to send a second: the deadline ended it
        assert hostile["reason"] == "deadline", hostile["message"]
    assert rss.growth_mb < 150  # a flood kept would grow by tens of MB a second
    assert status.loc[good.name, "status"] == "ok", status.loc[good.name, "message"]
    assert hostile["status"] != "ok"
    assert len(hostile["message"]) < 400  # a line, whatever the server sent
    assert cap.stage == "partial", cap.errors
    rows = db.measurements_for_capture(embedded_engine, cap.capture_id, include_psd=False)
    assert good.name in set(rows["receiver"])
    record_ = db.get_capture(embedded_engine, cap.capture_id)
    assert record_ is not None and record_.status == "partial"
    if mode in TIMING_MODES:
        assert hostile["reason"] == "timing"
        assert TIMING_MODES[mode] in hostile["message"]
        assert hostile["samples"] > 0  # kept, and marked
        row = rows.set_index("receiver").loc["hostile"]
        wall = pd.Timestamp(record_.created_at)
        assert abs(pd.Timestamp(row["timestamp_utc"]) - wall) < pd.Timedelta(minutes=1)
        assert bool(cap.dataset.sel(receiver="hostile").timing_ok) is False
        assert np.isnat(cap.dataset.sel(receiver="hostile").start_time.values)
    total, dup = rows_of(embedded_engine, cap.capture_id)
    record(
        f"hostile receiver: {mode}",
        "good receiver ok and its row written; hostile marked; within the deadline",
        f"hostile {hostile['status']} ({hostile['reason']}); capture {cap.stage}; "
        f"{seconds:.1f} s; memory +{rss.growth_mb:.0f} MB",
        len(cap.metrics) - total,
        dup,
    )


@pytest.mark.parametrize("mode", STATUS_MODES)
async def test_health_survives_a_bad_status_page(mode):
    with HostileServer(mode) as bad, PeakRss() as rss:
        t0 = time.monotonic()
        health = await check_health(bad.receiver, timeout=3.0)
        seconds = time.monotonic() - t0
    assert seconds < 3.0 + 1.5
    assert rss.growth_mb < 150
    assert not health.reachable
    assert health.error
    record(
        f"hostile /status page: {mode}",
        "health ends within its 3 s timeout, reachable=False with the reason",
        f"{health.error}; {seconds:.1f} s; memory +{rss.growth_mb:.0f} MB",
        0,
        0,
    )


@pytest.mark.parametrize("mode", ["snd_flood", "gnss_nonsense", "audio_rate_abc"])
def test_the_cli_says_partial_in_one_line(mode, good_receiver, env, embedded_engine):
    """At the command line, a hostile receiver costs exit code 1 and one line on stderr."""
    good = good_receiver
    with HostileServer(mode) as bad:
        t0 = time.monotonic()
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("heimdall-lab")),
                "capture",
                "-f",
                "10e6",
                "-d",
                str(HOSTILE_DURATION_S),
                "-r",
                f"{good.name}={good.host}:{good.port}",
                "-r",
                f"hostile={bad.receiver.host}:{bad.port}",
                "--read-timeout",
                "1.5",
                "-q",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        with PeakRss(proc.pid) as rss:
            stdout, stderr = proc.communicate(timeout=60)
        seconds = time.monotonic() - t0
    proc.stdout, proc.stderr = stdout, stderr  # as subprocess.run gives them
    assert rss.peak_mb < 600  # the whole command's process
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "hostile" in lines[0], lines
    (capture_id,) = re.findall(r"^capture (\S+): partial$", proc.stdout, re.MULTILINE)
    total, dup = rows_of(embedded_engine, capture_id)
    record(
        f"hostile receiver at the command line: {mode}",
        "exit 1 and one line on stderr; the good receiver's row written",
        f"exit {proc.returncode}; {total} row(s); {seconds:.1f} s; process peak "
        f"{rss.peak_mb:.0f} MB; stderr: {lines[0][:90]}",
        1 - min(total, 1),
        dup,
    )


def test_a_bad_receiver_row_costs_the_others_nothing(embedded_engine, caplog):
    """A row another tool wrote that is no valid receiver is skipped, not fatal."""
    bad = "bad\nname-" + os.urandom(4).hex()
    with embedded_engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO websdrs (name, url, host, latitude, longitude, is_active) "
                "VALUES (:n, 'http://x', 'host with spaces', 0, 0, true)"
            ),
            {"n": bad},
        )
    try:
        with caplog.at_level(logging.WARNING):
            active = db.list_receivers(embedded_engine)
        assert active and bad not in {r.name for r in active}
        assert "not a valid receiver" in caplog.text
        total = len(active)
    finally:
        with embedded_engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM websdrs WHERE name = :n"), {"n": bad})
    record(
        "a receiver row no valid receiver (newline in its name), written by another tool",
        "skipped with a warning; every other receiver listed",
        f"skipped; {total} receivers listed",
        0,
        0,
    )


def test_rows_spooled_for_one_database_never_land_in_another(
    embedded_engine, good_receiver, tmp_path
):
    """A mistyped database URL: the rows wait in the spool for that database, not another."""
    from support import free_port

    wrong = f"postgresql://postgres@127.0.0.1:{free_port()}/heimdall"
    home = tmp_path / "home"
    cap = capture(
        FREQ,
        1.0,
        receivers=[good_receiver],
        store=str(tmp_path / "iq"),
        database_url=wrong,
        home=str(home),
    )
    assert cap.stage == "done" and "(unreachable)" in cap.database_url
    assert any("spooled locally" in w for w in cap.warnings)
    result = spool.sync(engine=embedded_engine, home=home, stale_after_s=None)
    assert "belong in the database" in result.loc[0, "error"]
    assert spool.pending(home) == [cap.capture_id]  # still waiting, nothing lost
    assert db.get_capture(embedded_engine, cap.capture_id) is None
    total, dup = rows_of(embedded_engine, cap.capture_id)
    record(
        "a mistyped database URL (nothing listening): rows spooled, then sync to another one",
        "sync refuses the other database; the rows wait for theirs",
        f"refused: {result.loc[0, 'error'][:70]}...; still pending; {total} rows elsewhere",
        0 if spool.pending(home) == [cap.capture_id] else 1,
        dup + total,
    )
