"""Acquisition over real loopback sockets against the emulator: no mocked socket anywhere."""

from __future__ import annotations

import asyncio
import socket
import time

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosedError

from heimdall_lab.emulate.scenario import Scenario
from heimdall_lab.emulate.server import Emulator, Fault
from heimdall_lab.errors import DisconnectedError, ValidationError
from heimdall_lab.io.kiwi_wav import read_kiwi_wav
from heimdall_lab.kiwi import protocol
from heimdall_lab.kiwi.acquire import Progress, acquire, acquire_async
from heimdall_lab.kiwi.client import KiwiClient, StreamSettings, check_health
from heimdall_lab.receivers import Receiver
from heimdall_lab.retry import RetryPolicy

FREQ = 10e6
FAST_RETRY = RetryPolicy(initial_s=0.01, maximum_s=0.05, jitter_s=0.01)


@pytest.fixture
def scenario() -> Scenario:
    return Scenario.default(seed=3)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_seven_receivers_ten_seconds_concurrently(scenario):
    seen: list[Progress] = []
    async with Emulator(scenario, realtime=False) as emu:
        assert len(emu.receivers) == 7
        acq = await acquire_async(emu.receivers, FREQ, 10.0, on_progress=seen.append)
    assert acq.ok == [r.name for r in emu.receivers]
    ds = acq.dataset
    assert ds.sizes["receiver"] == 7
    for name in acq.ok:
        one = ds.sel(receiver=name)
        truth = scenario.truth(name, FREQ)
        n = int(one.n_samples)
        # Within one frame of duration x rate.
        assert abs(n - 10.0 * float(one.nominal_rate)) <= 512
        # The exact rate derived from timestamps is the site's true rate.
        assert float(one.sample_rate) == pytest.approx(truth["sample_rate"], abs=1e-3)
        trusted = one.frame_trusted.values
        times = one.frame_time.values[trusted]
        assert trusted.sum() >= (n // 512) - 2
        assert np.all(np.diff(times) > np.timedelta64(0, "ns"))
        assert int(one.lost_frames) == 0
        # The carrier is where the scenario puts it (within one FFT bin of 0.1 Hz).
        iq = one.iq.values[:n]
        spectrum = np.abs(np.fft.fftshift(np.fft.fft(iq))) ** 2
        freqs = np.fft.fftshift(np.fft.fftfreq(n, 1 / float(one.sample_rate)))
        peak = freqs[np.argmax(spectrum)]
        assert peak == pytest.approx(
            truth["frequency_offset_hz"], abs=2 * float(one.sample_rate) / n
        )
    states = {(p.receiver, p.state) for p in seen}
    assert all((name, "done") in states for name in acq.ok)
    assert all(p.received <= p.expected + 512 for p in seen)


async def test_client_sends_what_a_kiwisdr_expects(scenario):
    async with Emulator(scenario, realtime=True) as emu:
        r = emu.receivers[0]
        await KiwiClient(r, 77_500, 2.5, StreamSettings(ident="tester")).run()
        commands = [c for _, c in emu.units[r.name].commands]
        stamps = [t for t, c in emu.units[r.name].commands if c == "SET keepalive"]
    assert commands[0] == "SET auth t=kiwi p="
    assert commands[1] == "SET AR OK in=12000 out=44100"
    assert commands[2:6] == [
        "SET squelch=0 max=0",
        "SET genattn=0",
        "SET gen=0 mix=-1",
        "SET ident_user=tester",
    ]
    assert commands[6] == "SET mod=iq low_cut=-6000 high_cut=6000 freq=77.500"
    assert commands[7].startswith("SET agc=0")
    assert len(stamps) >= 2
    assert np.all(np.diff(stamps) >= 0.99)  # at most once a second


async def test_faults_leave_other_receivers_unaffected(scenario):
    faults = {
        "F4JOY": Fault("refuse", times=2),  # refused twice, then recovers
        "Purmerend": Fault("bad_password"),
        "North-Shropshire-UK": Fault("too_busy"),
        "Hasenberg03": Fault("stall", after_frames=40),
        "DB3TH": Fault("disconnect", after_frames=30),
        "OE3AKB": Fault("corrupt", after_frames=5),
        "DK0TE": Fault("truncate", after_frames=7),
    }
    async with Emulator(scenario, realtime=False, faults=faults) as emu:
        acq = await acquire_async(
            emu.receivers,
            FREQ,
            3.0,
            retries=2,
            retry_policy=FAST_RETRY,
            settings=StreamSettings(read_timeout=2.0),
        )
        sent = {name: unit.frames_sent for name, unit in emu.units.items()}
    table = acq.status()
    assert table.loc["F4JOY", "status"] == "ok" and table.loc["F4JOY", "attempts"] == 3
    assert table.loc["Purmerend", "status"] == "failed"
    assert table.loc["Purmerend", "reason"] == "bad_password"
    assert table.loc["Purmerend", "attempts"] == 1  # not worth retrying
    assert table.loc["North-Shropshire-UK", "status"] == "failed"
    assert table.loc["North-Shropshire-UK", "reason"] == "too_busy"
    assert table.loc["North-Shropshire-UK", "attempts"] == 3  # retried, always busy
    # Stall and drop: the frames delivered before the fault are kept, marked incomplete.
    for name, frames, reason in (("Hasenberg03", 40, "timeout"), ("DB3TH", 30, "disconnected")):
        assert table.loc[name, "status"] == "incomplete"
        assert table.loc[name, "reason"] == reason
        assert table.loc[name, "samples"] == frames * 512 == sent[name] * 512
        assert not bool(acq.dataset.complete.sel(receiver=name))
    # One malformed frame is skipped; the stream goes on and the gap is recorded.
    for name in ("OE3AKB", "DK0TE"):
        assert table.loc[name, "status"] == "ok"
        assert table.loc[name, "skipped_frames"] == 1
        assert table.loc[name, "lost_frames"] == 1
    assert set(acq.dataset.receiver.values) == {"F4JOY", "Hasenberg03", "DB3TH", "OE3AKB", "DK0TE"}
    assert "password" in table.loc["Purmerend", "message"]


async def test_refusing_receiver_fails_after_its_retries(scenario):
    async with Emulator(scenario, realtime=False, faults={"Hasenberg03": Fault("refuse")}) as emu:
        acq = await acquire_async(
            [emu.receiver("Hasenberg03"), emu.receiver("DK0TE")],
            FREQ,
            1.0,
            retries=3,
            retry_policy=FAST_RETRY,
        )
        assert emu.units["Hasenberg03"].connections == 4
    table = acq.status()
    assert table.loc["Hasenberg03", "status"] == "failed"
    assert table.loc["Hasenberg03", "reason"] == "unreachable"
    assert table.loc["DK0TE", "status"] == "ok"


async def test_nothing_listening_is_unreachable():
    dead = Receiver("DEAD", "127.0.0.1", _free_port(), timeout_s=2)
    acq = await acquire_async([dead], FREQ, 1.0, retries=1, retry_policy=FAST_RETRY)
    assert acq.failed == ["DEAD"]
    assert acq.status().loc["DEAD", "reason"] == "unreachable"
    assert acq.dataset.sizes["receiver"] == 0


async def test_slow_sender_hits_the_deadline_and_keeps_its_samples(scenario):
    faults = {"Hasenberg03": Fault("slow", slow_factor=3.0)}
    async with Emulator(scenario, realtime=True, faults=faults) as emu:
        receivers = [emu.receiver("Hasenberg03"), emu.receiver("DK0TE")]
        acq = await acquire_async(receivers, FREQ, 1.5, deadline_s=2.5)
    table = acq.status()
    assert table.loc["DK0TE", "status"] == "ok"
    assert table.loc["Hasenberg03", "status"] == "incomplete"
    assert table.loc["Hasenberg03", "reason"] == "deadline"
    got = table.loc["Hasenberg03", "samples"]
    assert 0 < got < table.loc["Hasenberg03", "expected"]


async def test_stall_before_any_frame_is_retried_then_fails(scenario):
    faults = {"Hasenberg03": Fault("stall", after_frames=0)}
    async with Emulator(scenario, realtime=False, faults=faults) as emu:
        acq = await acquire_async(
            [emu.receiver("Hasenberg03")],
            FREQ,
            1.0,
            retries=1,
            retry_policy=FAST_RETRY,
            settings=StreamSettings(read_timeout=0.5),
        )
    assert acq.status().loc["Hasenberg03", "attempts"] == 2
    assert acq.failed == ["Hasenberg03"]


async def test_password_is_sent_and_checked(scenario):
    async with Emulator(scenario, realtime=False, password="s3cret") as emu:
        good = emu.receiver("Hasenberg03")
        from dataclasses import replace

        acq = await acquire_async(
            [replace(good, password="s3cret"), replace(emu.receiver("DK0TE"), password="nope")],
            FREQ,
            0.5,
        )
    assert acq.ok == ["Hasenberg03"]
    assert acq.status().loc["DK0TE", "reason"] == "bad_password"


@pytest.mark.parametrize(
    ("frequency", "duration", "message"),
    [
        (float("nan"), 1.0, "frequency"),
        (FREQ, 0.0, "duration"),
        (FREQ, -1.0, "duration"),
        (FREQ, float("inf"), "duration"),
        (FREQ, 2 * 86400.0, "over the limit"),
        (40e6, 1.0, "outside receiver"),
        ("10e6", 1.0, "number"),
    ],
)
def test_bad_requests_are_rejected_before_connecting(frequency, duration, message):
    # Port 9 (discard) is never contacted: validation comes first.
    r = Receiver("X", "127.0.0.1", 9)
    with pytest.raises(ValidationError, match=message):
        acquire([r], frequency, duration)


def test_client_alone_validates_too():
    with pytest.raises(ValidationError, match="outside"):
        KiwiClient(Receiver("X", "127.0.0.1", 9, max_frequency_hz=1e6), 2e6, 1.0)


def test_duplicate_or_missing_receivers_are_rejected():
    r = Receiver("X", "127.0.0.1", 9)
    with pytest.raises(ValidationError, match="unique"):
        acquire([r, r], FREQ, 1.0)
    with pytest.raises(ValidationError, match="no receivers"):
        acquire([], FREQ, 1.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": "bad name"},
        {"host": "not a host!"},
        {"port": 0},
        {"latitude": 91.0},
        {"timeout_s": 0.0},
    ],
)
def test_bad_receiver_addresses_are_rejected(kwargs):
    base = {"name": "X", "host": "127.0.0.1", "port": 8073}
    with pytest.raises(ValidationError):
        Receiver(**{**base, **kwargs})


async def test_health_check_reads_the_status_page(scenario):
    async with Emulator(scenario, realtime=True) as emu:
        r = emu.receiver("Hasenberg03")
        idle = await check_health(r)
        stream = asyncio.create_task(KiwiClient(r, FREQ, 1.0).run())
        await asyncio.sleep(0.5)
        busy = await check_health(r)
        await stream
    assert idle.reachable and idle.gps_fix and idle.users == 0 and idle.users_max == 4
    assert idle.has_free_slot and idle.uptime_s is not None
    assert busy.users == 1
    down = await check_health(Receiver("DEAD", "127.0.0.1", _free_port()), timeout=1.0)
    assert not down.reachable and down.error


async def test_too_many_users_get_too_busy(scenario):
    async with Emulator(scenario, realtime=True) as emu:
        r = emu.receiver("Hasenberg03")
        streams = [asyncio.create_task(KiwiClient(r, FREQ, 1.5).run()) for _ in range(4)]
        await asyncio.sleep(0.4)
        acq = await acquire_async([r], FREQ, 0.5, retries=0)
        await asyncio.gather(*streams)
    assert acq.status().loc["Hasenberg03", "reason"] == "too_busy"


async def test_replayed_recording_comes_back_sample_for_sample(dcf77_files):
    rec = read_kiwi_wav(dcf77_files[0])
    receiver = Receiver("DF0KL", "127.0.0.1", 8073, 53.665337, 7.282766)
    async with Emulator(receivers=[receiver], replay={"DF0KL": rec}, realtime=False) as emu:
        acq = await acquire_async(
            emu.receivers, 77_500, 25.0, gps_reference=np.datetime64("2017-11-27T10:42")
        )
    got = acq.outcomes[0].recording
    assert acq.ok == ["DF0KL"]
    n = len(got.samples)
    np.testing.assert_array_equal(got.samples, rec.samples[:n])
    k = got.n_frames
    np.testing.assert_array_equal(got.gpssec, rec.gpssec[:k])
    np.testing.assert_array_equal(got.gpsnsec, rec.gpsnsec[:k])
    np.testing.assert_array_equal(got.last_gps_solution, rec.last_gps_solution[:k])
    ds = acq.dataset
    assert str(ds.start_time.values[0]).startswith("2017-11-27T10:41:56")
    assert float(ds.sample_rate[0]) == pytest.approx(rec.sample_rate(), abs=0.01)


async def test_replay_shorter_than_asked_is_incomplete(dcf77_files):
    rec = read_kiwi_wav(dcf77_files[1])
    receiver = Receiver("F1JEK", "127.0.0.1", 8073)
    async with Emulator(receivers=[receiver], replay={"F1JEK": rec}, realtime=False) as emu:
        acq = await acquire_async(emu.receivers, 77_500, 60.0, retries=0)
    assert acq.status().loc["F1JEK", "status"] == "incomplete"
    assert acq.outcomes[0].n_samples == len(rec.samples)


def test_blocking_acquire_works_inside_a_running_loop(scenario):
    with Emulator(scenario, realtime=False).running() as emu:

        async def notebook_cell():
            # Jupyter runs cells inside an event loop; acquire() must still work there.
            return acquire(emu.receivers[:2], FREQ, 0.5)

        acq = asyncio.run(notebook_cell())
    assert len(acq.ok) == 2


def test_emulator_rejects_unknown_fault_targets(scenario):
    with pytest.raises(ValidationError, match="unknown receivers"):
        Emulator(scenario, faults={"NOPE": Fault("stall")})
    with pytest.raises(ValidationError, match="unknown fault"):
        Fault("explode")  # type: ignore[arg-type]


async def test_metrics_of_an_emulated_capture_match_the_scenario_truth(scenario):
    from heimdall_lab.dsp import measure_dataset

    async with Emulator(scenario, realtime=False) as emu:
        acq = await acquire_async(emu.receivers, FREQ, 5.0)
    metrics = measure_dataset(acq.dataset, center_frequency_hz=FREQ)
    for name in acq.ok:
        truth = scenario.truth(name, FREQ)
        m = metrics.sel(receiver=name)
        assert bool(m.signal_present)
        assert float(m.frequency_offset_hz) == pytest.approx(truth["frequency_offset_hz"], abs=0.05)
        # C/N0 is the SNR in 1 Hz; the scenario states it: for the default scene's keyed
        # carrier, of its mean power (over the long run; a 5 s window's keying is within
        # about 0.3 dB of it).
        assert float(m.cn0_dbhz) == pytest.approx(truth["mean_cn0_dbhz"], abs=0.5)
        assert float(m.noise_density_dbfs_hz) == pytest.approx(
            truth["noise_density_dbfs_hz"], abs=0.3
        )


class _ClosesOnKeepalive:
    """A connection that closes after the handshake: the keepalive fails, 4 frames are buffered."""

    def __init__(self) -> None:
        pairs = np.zeros(1024, dtype=np.int16)
        self.incoming = [
            protocol.encode_msg({"audio_init": 0, "audio_rate": 12000}),
            protocol.encode_msg({"sample_rate": 12000.0}),
        ] + [
            protocol.encode_iq_frame(
                k, pairs, smeter=500, last_gps_solution=0, gpssec=100 + k, gpsnsec=0
            )
            for k in range(4)
        ]

    async def send(self, message: str) -> None:
        if message == protocol.cmd_keepalive():
            raise ConnectionClosedError(None, None)

    async def recv(self) -> bytes:
        if not self.incoming:  # what a closed websocket does once its buffer is read
            raise ConnectionClosedError(None, None)
        return self.incoming.pop(0)

    async def close(self) -> None:
        return None


async def test_a_send_on_a_closed_stream_is_a_typed_disconnect(monkeypatch):
    client = KiwiClient(Receiver("RX", "127.0.0.1", 1), FREQ, 1.0, StreamSettings())
    ws = _ClosesOnKeepalive()

    async def connect() -> _ClosesOnKeepalive:
        return ws

    monkeypatch.setattr(client, "_connect", connect)
    with pytest.raises(DisconnectedError, match="the samples received are kept"):
        await client.run()
    assert client.received_samples == 4 * 512  # frames already received are kept


def test_an_interrupt_inside_a_running_loop_cancels_and_keeps_what_arrived():
    """As in Jupyter: acquire() runs in a worker thread; Ctrl-C cancels it within a second."""
    import _thread
    import threading

    from heimdall_lab.emulate import emulated

    async def in_a_notebook(receivers):
        return acquire(receivers, FREQ, 30.0, retries=0)  # blocks this loop, like a cell

    with emulated(seed=5, receivers=["Hasenberg03", "Purmerend"], realtime=True) as emu:
        timer = threading.Timer(1.5, _thread.interrupt_main)
        loop = asyncio.new_event_loop()  # no asyncio.run: its own Ctrl-C handler would differ
        t0 = time.monotonic()
        timer.start()
        try:
            acq = loop.run_until_complete(in_a_notebook(emu.receivers))
        finally:
            timer.cancel()
            loop.close()
        seconds = time.monotonic() - t0
    assert acq.cancelled
    assert seconds < 1.5 + 1.5
    table = acq.status()
    assert set(table["status"]) == {"incomplete"} and set(table["reason"]) == {"cancelled"}
    assert (table["samples"] > 0).all() and (table["samples"] < 30 * 12000).all()
