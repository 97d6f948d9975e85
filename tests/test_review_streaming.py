"""Streamed, hopping and triggered captures under awkward conditions.

Each test here once showed a defect of the streamed capture path: a legitimate wide-mode
KiwiSDR overflowing the stream's layout, recovery resolving GNSS weeks against the wall clock
instead of the capture's stored reference, a recovered capture's rows not matching the live
ones (so they were written twice), dwells after the first stamped with the sweep's start, and
a failure of triggered recording going unsaid.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import threading
import time

import numpy as np
import sqlalchemy as sa
from hostile import HostileServer
from test_stream import RECEIVERS, T0_NS, chunk
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

from heimdall_lab import db, gnss, pipeline, spool
from heimdall_lab.emulate import Scenario, emulated
from heimdall_lab.errors import StorageError
from heimdall_lab.kiwi import protocol
from heimdall_lab.pipeline import capture, sweep
from heimdall_lab.receivers import Receiver
from heimdall_lab.recording import FRAME_SAMPLES
from heimdall_lab.store import MARKER, IQStore
from heimdall_lab.store.stream import CaptureWriter, StreamLayout, finish_stream

FREQ = 10e6
WIDE_RATE = 20250.0  # a KiwiSDR's wide (20.25 kHz) IQ mode, one of protocol.KIWI_RATES
_WIDE_PAIRS = protocol.to_int16_pairs(
    (np.exp(2j * np.pi * 500 * np.arange(FRAME_SAMPLES) / WIDE_RATE) * 0.3).astype(np.complex64)
)


class WideKiwi:
    """A well-behaved KiwiSDR in wide mode: announces 20250 Hz and sends frames at that rate."""

    def __init__(self, name: str = "Wide") -> None:
        self.name, self.port = name, 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def receiver(self) -> Receiver:
        return Receiver(self.name, "127.0.0.1", self.port, 50.0, 8.0, timeout_s=5.0, retry_count=0)

    def __enter__(self) -> WideKiwi:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _start(self) -> None:
        self._server = await serve(
            self._session, "127.0.0.1", 0, compression=None, ping_interval=None
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _session(self, ws) -> None:
        with contextlib.suppress(ConnectionClosed, TimeoutError, asyncio.CancelledError):
            await ws.send(protocol.encode_msg({"version_maj": 1, "version_min": 550}))
            await asyncio.wait_for(ws.recv(), 5)  # SET auth
            await ws.send(protocol.encode_msg({"badp": 0}))
            await ws.send(protocol.encode_msg({"audio_init": 0, "audio_rate": 20250}))
            await ws.send(protocol.encode_msg({"sample_rate": f"{WIDE_RATE:.3f}"}))
            while True:
                text = await asyncio.wait_for(ws.recv(), 5)
                if isinstance(text, str) and text.startswith("SET mod="):
                    break
            sec, nsec = gnss.utc_to_tow(np.datetime64(time.time_ns(), "ns"))
            base = int(sec) * 10**9 + int(nsec)
            for k in range(10**6):
                t = (base + round(k * FRAME_SAMPLES / WIDE_RATE * 1e9)) % gnss.WEEK_NS
                await ws.send(
                    protocol.encode_iq_frame(
                        k,
                        _WIDE_PAIRS,
                        smeter=800,
                        last_gps_solution=0,
                        gpssec=t // 10**9,
                        gpsnsec=t % 10**9,
                    )
                )
                if k % 8 == 0:
                    await asyncio.sleep(0)


def test_a_wide_mode_receiver_costs_no_other_receiver_its_intervals(embedded_engine, tmp_path):
    store = IQStore(str(tmp_path / "iq"))
    with WideKiwi() as wide, emulated(seed=3, receivers=["DK0TE"], realtime=False) as emu:
        options = emu.capture_options
        receivers = [wide.receiver, *options.pop("receivers")]
        cap = capture(
            FREQ,
            3.0,
            receivers=receivers,
            engine=embedded_engine,
            store=store,
            interval_s=1.0,
            home=str(tmp_path / "home"),
            **options,
        )
    ds = store.open(cap.capture_id)
    # The healthy emulated receiver delivered 3 s: all of it is stored and measured.
    assert int(ds["n_samples"].sel(receiver="DK0TE")) >= 3 * 12000
    rows = db.measurements_for_capture(embedded_engine, cap.capture_id, include_psd=False)
    assert (rows["receiver"] == "DK0TE").sum() == 3
    assert cap.stage != "failed", cap.errors


def test_recovery_resolves_gnss_weeks_with_the_stored_reference(tmp_path):
    reference = np.datetime64("2023-03-01T12:00:00", "ns")  # a replay of another day
    store = IQStore(str(tmp_path / "iq"))
    attrs = {
        "center_frequency_hz": 77.5e3,
        "core:sample_rate": 12000.0,
        "heimdall:gps_reference": str(reference),  # as pipeline._Run.open stores it
    }
    w = CaptureWriter(store, "replayed", RECEIVERS, StreamLayout(20, 100), attrs, reference)
    w.create()
    w.write_chunk(0, 0, chunk(0, 20))
    truth = gnss.tow_to_utc(T0_NS // 10**9, T0_NS % 10**9, reference)
    # While running, and once the process died and sync completed it, the times are true.
    assert store.open("replayed")["start_time"].values[0] == truth
    finish_stream(store, "replayed")  # exactly as spool._recover_stream calls it
    assert store.open("replayed")["start_time"].values[0] == truth


def test_recovering_a_killed_capture_writes_no_row_twice(embedded_engine, tmp_path):
    store = IQStore(str(tmp_path / "iq"))
    with HostileServer("gnss_days_off") as bad:  # GNSS time 3 days off the clock
        cap = capture(
            FREQ,
            2.0,
            receivers=[bad.receiver],
            engine=embedded_engine,
            store=store,
            interval_s=1.0,
            home=str(tmp_path / "home"),
        )
    live = db.measurements_for_capture(embedded_engine, cap.capture_id, include_psd=False)
    assert len(live) == 2
    # The process "dies" before its end: no completion marker, the row left receiving.
    store.fs.rm(f"{store._prefix(cap.capture_id)}/{MARKER}")
    with embedded_engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE captures SET status = 'receiving', "
                "heartbeat_at = now() - interval '3 hours' WHERE id = :id"
            ),
            {"id": cap.capture_id},
        )
    spool.sync(engine=embedded_engine, home=tmp_path / "home", stale_after_s=3600)
    assert db.get_capture(embedded_engine, cap.capture_id).status == "incomplete"
    after = db.measurements_for_capture(embedded_engine, cap.capture_id, include_psd=False)
    assert len(after) == len(live), after[["receiver", "timestamp_utc"]]


def test_each_dwell_of_a_receiver_without_gnss_is_stamped_at_its_own_time(
    embedded_engine, tmp_path
):
    scene = Scenario.default(seed=1)
    scene = dataclasses.replace(
        scene,
        sites=tuple(
            dataclasses.replace(s, gps_fix=False) if s.name == "DK0TE" else s for s in scene.sites
        ),
    )
    with emulated(scenario=scene, receivers=["DK0TE", "OE3AKB"]) as emu:  # paced: real time
        caps = sweep(
            [(FREQ, 2.0), (FREQ + 1e5, 2.0), (FREQ + 2e5, 2.0)],
            engine=embedded_engine,
            store=str(tmp_path / "iq"),
            interval_s=1.0,
            home=str(tmp_path / "home"),
            **emu.capture_options,
        )
    starts = []
    for cap in caps:
        rows = db.measurements_for_capture(embedded_engine, cap.capture_id, include_psd=False)
        fixed = rows.loc[rows["receiver"] == "OE3AKB", "timestamp_utc"].min()  # GNSS time
        unfixed = rows.loc[rows["receiver"] == "DK0TE", "timestamp_utc"].min()  # fallback
        # The fallback is the computer's clock when the frames came: the emulator's streams
        # start at the next whole second, so GNSS time may lead the clock by up to 1 s, and
        # a loaded machine delays the frames by a few seconds at most.
        lag = (unfixed - fixed).total_seconds()
        assert -1.5 < lag < 5.0, (cap.frequency_hz, fixed, unfixed)
        starts.append(unfixed)
    # Each dwell is stamped at its own time: the stamps advance by about a dwell (2 s).
    steps = [(b - a).total_seconds() for a, b in itertools.pairwise(starts)]
    assert all(step > 1.0 for step in steps), steps


def test_a_failure_of_triggered_recording_is_said_by_its_dwell(
    embedded_engine, tmp_path, monkeypatch
):
    opened: list[int] = []

    def broken(self, name, hop, event):
        opened.append(event)
        raise StorageError("the event's store cannot be created")

    monkeypatch.setattr(pipeline._Events, "_open_event", broken)
    start = "2026-12-01T12:00:00"
    scene = Scenario.default(seed=0).with_bursts(
        [(1.0, 1.0, 20.0)],
        site_name="DK0TE",
        frequency_hz=FREQ,
        bandwidth_hz=400,
        epoch_utc=start,
    )
    with emulated(scenario=scene, receivers=["DK0TE"], start_utc=start, realtime=False) as emu:
        (cap,) = sweep(
            [(FREQ, 3.0)],
            engine=embedded_engine,
            store=str(tmp_path / "iq"),
            interval_s=1.0,
            trigger={"pfa": 1e-6, "pre_s": 0.5, "post_s": 0.5},
            **emu.capture_options,
        )
    assert opened and cap.events == []  # the burst was detected, but its recording failed
    assert cap.stage != "done" or cap.errors or cap.warnings
