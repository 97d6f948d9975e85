"""Frequency hopping on one open connection, and the client's frame sink, over real sockets.

Every test talks to the emulator on loopback: the client retunes the open sound channel with
``SET mod=iq ... freq=``, the emulator follows (or, for the hostile cases, does not), and
each dwell's samples are measured against the scenario's truth.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from heimdall_lab import dsp, gnss
from heimdall_lab.emulate.scenario import Scenario
from heimdall_lab.emulate.server import Emulator, Fault
from heimdall_lab.errors import ProtocolError, ReceiverTimeoutError, ValidationError
from heimdall_lab.kiwi.client import (
    FLAG_NEW_FREQ,
    RETUNE_DROP_LIMIT_BYTES,
    RETUNE_KEEP_FRAMES,
    RETUNE_SETTLE_FLOOR_S,
    KiwiClient,
    StreamSettings,
    retune_gap_s,
)
from heimdall_lab.kiwi.protocol import IqFrame
from heimdall_lab.recording import FRAME_SAMPLES

SEED = 3


@pytest.fixture
def scenario() -> Scenario:
    return Scenario.default(seed=SEED)


def _hops(scenario: Scenario, dwell_s: float) -> list[tuple[float, float]]:
    f_tx = scenario.transmitter.frequency_hz
    return [(f_tx, dwell_s), (f_tx + 1500.0, dwell_s), (f_tx - 2000.0, dwell_s)]


def _split(client: KiwiClient, frames: list[IqFrame]) -> list[list[IqFrame]]:
    """The kept frames of each dwell, by the dwells' sample counts."""
    out, start = [], 0
    for hop in client.hops_done:
        n = hop.samples // FRAME_SAMPLES
        out.append(frames[start : start + n])
        start += n
    assert start == len(frames)
    return out


def _frame_power_db(frame: IqFrame, offset_hz: float, rate: float) -> float:
    """Coherent power of one frame at a baseband frequency, dB full scale."""
    n = np.arange(len(frame.samples))
    return 10 * math.log10(
        abs(np.mean(frame.samples * np.exp(-2j * np.pi * offset_hz * n / rate))) ** 2 + 1e-30
    )


def _window(frames: list[IqFrame], true_rate: float) -> tuple[np.datetime64, float]:
    """True UTC time of a dwell's first sample, from its last (never stale) GNSS stamp, and
    its length in seconds."""
    last = frames[-1]
    stamp = gnss.tow_to_utc(last.gpssec, last.gpsnsec, np.datetime64("now", "ns"))
    back = round((len(frames) - 1) * FRAME_SAMPLES / true_rate * 1e9)
    return stamp - np.timedelta64(back, "ns"), len(frames) * FRAME_SAMPLES / true_rate


def _check_dwells(
    scenario: Scenario, client: KiwiClient, dwells: list[list[IqFrame]]
) -> list[tuple[float, float]]:
    """Each dwell's carrier offset and power against the truth; returns (offset, power) errors.

    The default scene's carrier is keyed: the power measured is its mean over the dwell,
    which the truth gives for the dwell's window of samples.
    """
    name = client.receiver.name
    rate = client.nominal_rate
    truths = [scenario.truth(name, f) for f, _ in client.hops]
    errors = []
    for i, frames in enumerate(dwells):
        truth = truths[i]
        start, duration = _window(frames, truth["sample_rate"])
        power = scenario.truth(name, client.hops[i][0], start_utc=start, duration_s=duration)
        expected = truth["frequency_offset_at_nominal_rate_hz"]  # measured at the nominal rate
        m = dsp.measure(np.concatenate([f.samples for f in frames]), rate)
        offset_err = m.measured_offset_hz - expected
        power_err = m.signal_power_dbfs - power["mean_power_dbfs"]
        assert abs(offset_err) < 0.05, (i, m.measured_offset_hz, expected)
        assert abs(power_err) < 0.2, (i, m.signal_power_dbfs, power["mean_power_dbfs"])
        errors.append((offset_err, power_err))
        if i == 0:
            continue
        # Samples still at the previous frequency would show the previous hop's offset.
        before = truths[i - 1]["frequency_offset_at_nominal_rate_hz"]
        assert abs(m.measured_offset_hz - before) > 1000
        # And frame by frame: not one holds the previous frequency's carrier.
        for frame in frames:
            here = _frame_power_db(frame, expected, rate)
            there = _frame_power_db(frame, before, rate)
            assert here > there + 10, (i, frame.seq, here, there)
    return errors


async def test_hops_retune_one_connection_without_a_gap(scenario):
    hops = _hops(scenario, 1.0)
    async with Emulator(scenario, realtime=True) as emu:
        r = emu.receivers[0]
        client = KiwiClient(r, None, None, StreamSettings(read_timeout=3.0), hops=hops)
        rec = await client.run()
        unit = emu.units[r.name]
        assert unit.connections == 1
        assert [f for _, f in unit.retunes] == [f for f, _ in hops[1:]]
        mods = [c for _, c in unit.commands if c.startswith("SET mod=")]
    assert mods == [f"SET mod=iq low_cut=-6000 high_cut=6000 freq={f / 1e3:.3f}" for f, _ in hops]
    assert len(client.hops_done) == 3 and all(h.complete for h in client.hops_done)
    assert [h.index for h in client.hops_done] == [0, 1, 2]
    assert client.hops_done[0].retune_sent is None
    assert all(h.retune_sent is not None for h in client.hops_done[1:])
    assert client.rtt_s is not None and client.rtt_s < 1.0
    # The realtime emulator answers a retune by the next frame: nothing dropped, no gap.
    frame_s = FRAME_SAMPLES / client.nominal_rate
    gaps = client.retune_gaps_s()
    print(f"retune gaps {[f'{g * 1e3:.4f} ms' for g in gaps]}, one frame {frame_s * 1e3:.2f} ms")
    assert len(gaps) == 2
    for gap in gaps:
        assert -1e-3 < gap < frame_s
    assert [h.dropped_frames for h in client.hops_done] == [0, 0, 0]
    # Sequence numbers run on across the retunes (one stream), and the frames are all kept.
    seqs = rec.seq
    assert np.array_equal(seqs, np.arange(seqs[0], seqs[0] + len(seqs)))
    for before, after in zip(client.hops_done, client.hops_done[1:], strict=False):
        assert after.first_seq == (
            before.first_seq + before.samples // FRAME_SAMPLES + after.dropped_frames
        )
    errors = _check_dwells(scenario, client, _split(client, client.frames))
    print("offset / power errors per dwell:", [(f"{o:+.4f} Hz", f"{p:+.3f} dB") for o, p in errors])


@pytest.mark.parametrize("latency", [2, 5])
async def test_frames_still_at_the_old_frequency_extend_the_old_dwell_without_a_gap(
    scenario, latency
):
    # A receiver that sends a few more frames at the old frequency after a retune reaches
    # it (its pipeline holds them): flagged as not new, they are the old dwell's, kept.
    hops = _hops(scenario, 1.0)
    async with Emulator(scenario, realtime=True) as emu:
        r = emu.receivers[0]
        emu.units[r.name].retune_latency_frames = latency
        client = KiwiClient(r, None, None, StreamSettings(read_timeout=3.0), hops=hops)
        rec = await client.run()
    done = client.hops_done
    assert [h.index for h in done] == [0, 1, 2] and all(h.complete for h in done)
    assert [h.dropped_frames for h in done] == [0, 0, 0]
    frame_s = FRAME_SAMPLES / client.nominal_rate
    for gap in client.retune_gaps_s():
        assert -1e-3 < gap < 1e-3  # nothing left unrecorded
    # The dwells that ended in a retune hold their own frames plus the ones still at their
    # frequency: the receiver's, and any more a loaded machine left in flight.
    need = math.ceil(client.dwell_samples(0) / FRAME_SAMPLES)
    kept = [h.kept_after_retune for h in done]
    assert kept[0] >= latency and kept[1] >= latency and kept[2] == 0
    assert [h.samples // FRAME_SAMPLES for h in done] == [need + k for k in kept]
    seqs = rec.seq
    assert np.array_equal(seqs, np.arange(seqs[0], seqs[0] + len(seqs)))
    _check_dwells(scenario, client, _split(client, client.frames))
    print(f"latency {latency} frames ({latency * frame_s * 1e3:.1f} ms):", client.retune_gaps_s())


@pytest.mark.parametrize("kind", ["truncate", "corrupt"])
async def test_a_broken_frame_at_a_retune_never_puts_new_frequency_frames_in_the_old_dwell(
    scenario, kind
):
    # The first frame at the new frequency arrives broken. Cut short, its flag byte still
    # says the retune landed: the new dwell starts after it. With a broken header even the
    # flag is gone: the frames after it (unflagged, at the new frequency) are held, never
    # confirmed, and dropped; the old dwell keeps only its own frames either way.
    hops = _hops(scenario, 1.0)
    async with Emulator(scenario, realtime=True) as emu:
        r = emu.receivers[0]
        need = math.ceil(math.ceil(1.0 * 12001) / FRAME_SAMPLES)  # frames of the first dwell
        emu.units[r.name].fault = Fault(kind, after_frames=need)
        client = KiwiClient(r, None, None, StreamSettings(read_timeout=2.0), hops=hops)
        if kind == "truncate":
            await client.run()
        else:
            with pytest.raises(ReceiverTimeoutError, match="does not follow retunes"):
                await client.run()
    done = client.hops_done
    first = done[0]
    assert first.complete and first.kept_after_retune == 0
    assert first.samples == need * FRAME_SAMPLES and client.skipped == 1
    if kind == "truncate":
        assert [h.index for h in done] == [0, 1, 2] and all(h.complete for h in done)
        assert done[1].first_seq == need + 1 and done[1].dropped_frames == 0
        _check_dwells(scenario, client, _split(client, client.frames))
    else:
        assert len(done) == 2 and done[1].samples == 0 and done[1].dropped_frames > 0
        assert len(client.frames) == need  # nothing at the new frequency kept


async def test_many_short_dwells_fit_the_byte_budget_with_their_kept_frames(scenario, monkeypatch):
    # Dwells of one frame on a receiver whose retunes take 16 frames to land: each retune's
    # kept frames (more than the dwell itself) are within what the client lets a server
    # send (the slack lowered so that they would not fit without their own room).
    monkeypatch.setattr("heimdall_lab.kiwi.client.BYTE_SLACK", 2**16)
    f_tx = scenario.transmitter.frequency_hz
    hops = [(f_tx + (1500.0 if i % 2 else 0.0), 0.04) for i in range(10)]
    async with Emulator(scenario, realtime=True) as emu:
        r = emu.receivers[0]
        emu.units[r.name].retune_latency_frames = RETUNE_KEEP_FRAMES
        client = KiwiClient(r, None, None, StreamSettings(read_timeout=3.0), hops=hops)
        await client.run()
    done = client.hops_done
    assert [h.index for h in done] == list(range(10)) and all(h.complete for h in done)
    assert [h.kept_after_retune for h in done] == [RETUNE_KEEP_FRAMES] * 9 + [0]
    frame_s = FRAME_SAMPLES / client.nominal_rate  # (none dropped unless a loaded machine
    gaps = [h.dropped_frames * frame_s for h in done[1:]]  # left more in flight)
    assert client.retune_gaps_s() == pytest.approx(gaps, abs=1e-3)
    assert client.bytes_received - client.dropped_bytes <= client.byte_budget


async def test_frames_in_flight_at_a_retune_past_the_kept_ones_are_dropped(scenario):
    # Unpaced, the server has sent many frames at the old frequency by the time the retune
    # reaches it: the client keeps the first RETUNE_KEEP_FRAMES of them as the old dwell's
    # end and drops exactly the rest, and the gap is what those covered.
    hops = _hops(scenario, 2.0)
    seen: list[tuple[int, IqFrame]] = []
    async with Emulator(scenario, realtime=False) as emu:
        r = emu.receivers[1]
        client = KiwiClient(
            r, hops[0][0], 6.0, hops=hops, on_frame=lambda f, hop: seen.append((hop, f))
        )
        await client.run()
    assert client.frames == [] and client.n_frames == len(seen)
    assert [hop for hop, _ in seen] == sorted(hop for hop, _ in seen)
    dwells = [[f for hop, f in seen if hop == i] for i in range(3)]
    assert [len(d) * FRAME_SAMPLES for d in dwells] == [h.samples for h in client.hops_done]
    assert [bool(d[0].flags & FLAG_NEW_FREQ) for d in dwells] == [True, True, True]
    # The gap is exactly the frames dropped (at the site's true rate: seconds of them).
    true_rate = scenario.truth(r.name, hops[0][0])["sample_rate"]
    done = client.hops_done
    for before, after in itertools.pairwise(done):
        gap = retune_gap_s(before.last_time, after.first_time, true_rate)
        assert gap == pytest.approx(after.dropped_frames * FRAME_SAMPLES / true_rate, abs=1e-5)
        assert after.dropped_frames > 0  # more in flight than are kept
        need = math.ceil(client.dwell_samples(before.index) / FRAME_SAMPLES)
        assert before.samples // FRAME_SAMPLES == need + RETUNE_KEEP_FRAMES
    print("dropped per retune:", [h.dropped_frames for h in done[1:]])
    _check_dwells(scenario, client, dwells)


async def test_a_server_that_does_not_flag_retunes_is_timed_by_the_handshake_rtt(scenario):
    hops = _hops(scenario, 1.0)
    async with Emulator(scenario, realtime=True) as emu:
        r = emu.receivers[2]
        emu.units[r.name].mark_retunes = False
        client = KiwiClient(r, None, None, hops=hops)
        await client.run()
    assert client.rtt_s is not None
    assert client.settle_s == max(3 * client.rtt_s, RETUNE_SETTLE_FLOOR_S)
    frame_s = FRAME_SAMPLES / client.nominal_rate
    for gap, hop in zip(client.retune_gaps_s(), client.hops_done[1:], strict=True):
        assert hop.dropped_frames >= 1
        assert gap == pytest.approx(hop.dropped_frames * frame_s, abs=1e-4)
    _check_dwells(scenario, client, _split(client, client.frames))


@pytest.mark.parametrize("realtime", [True, False])
async def test_a_server_that_ignores_retunes_ends_within_the_timeouts(
    scenario, realtime, monkeypatch
):
    f_tx = scenario.transmitter.frequency_hz
    hops = [(f_tx, 0.5), (f_tx + 1500.0, 0.5)]
    # Paced, nothing ever comes at the new frequency: a timeout. Unpaced, the flood of old
    # frames runs into the limit of bytes dropped after a retune (lowered to keep it short).
    limit = RETUNE_DROP_LIMIT_BYTES if realtime else 2**20
    monkeypatch.setattr("heimdall_lab.kiwi.client.RETUNE_DROP_LIMIT_BYTES", limit)
    settings = StreamSettings(read_timeout=1.0 if realtime else 10.0)
    async with Emulator(scenario, realtime=realtime) as emu:
        r = emu.receivers[0]
        emu.units[r.name].follow_retunes = False
        client = KiwiClient(r, None, None, settings, hops=hops)
        with pytest.raises(ReceiverTimeoutError if realtime else ProtocolError) as info:
            await client.run()
        assert [f for _, f in emu.units[r.name].retunes] == [f_tx + 1500.0]
    assert "does not follow retunes" in str(info.value)
    assert "\n" not in str(info.value)
    first, second = client.hops_done
    assert first.complete and not second.complete
    assert second.samples == 0 and second.first_seq is None and second.dropped_frames > 0
    # Memory: only the first dwell's frames are kept; what was dropped was not.
    assert len(client.frames) * FRAME_SAMPLES == first.samples
    assert client.bytes_received - client.dropped_bytes <= client.byte_budget
    assert client.dropped_bytes <= limit + 2**16


async def test_sink_mode_keeps_no_frames_and_gets_every_one(scenario):
    got: list[tuple[int, int, int]] = []

    def sink(frame: IqFrame, hop: int) -> None:
        got.append((hop, frame.seq, len(frame.samples)))

    async with Emulator(scenario, realtime=False) as emu:
        r = emu.receivers[3]
        client = KiwiClient(r, 10e6, 20.0, on_frame=sink)
        rec = await client.run()
        sent = emu.units[r.name].frames_sent
    assert client.frames == []
    assert rec.n_frames == 0 and len(rec.samples) == 0
    assert client.n_frames == len(got) >= math.ceil(20.0 * client.nominal_rate / FRAME_SAMPLES)
    assert sum(n for _, _, n in got) == client.received_samples >= client.expected_samples
    assert {hop for hop, _, _ in got} == {0}
    seqs = np.array([s for _, s, _ in got])
    assert np.array_equal(seqs, np.arange(len(seqs)))  # every frame, in order, none missing
    assert sent >= len(got)
    assert client.first_frame_utc is not None
    (hop,) = client.hops_done
    assert hop.complete and hop.samples == client.received_samples


@pytest.mark.parametrize(
    ("hops", "needle"),
    [
        ([], "at least one"),
        ([(10e6, 0.0)], "dwell"),
        ([(10e6, -1.0)], "dwell"),
        ([(10e6, float("nan"))], "dwell"),
        ([(10e6, 1.0), (40e6, 1.0)], "hop 1"),
        ([(10e6, 1.0), (10e6,)], "hop 1"),
        ([(10e6, 1.0), "10e6"], "hop 1"),
        ([(float("inf"), 1.0)], "hop 0"),
        ([(10e6, 1e6)], "duration"),
        (12, "list"),
    ],
)
async def test_a_bad_hop_list_fails_before_any_connection(scenario, hops, needle):
    async with Emulator(scenario, realtime=False) as emu:
        r = emu.receivers[0]
        with pytest.raises(ValidationError) as info:
            KiwiClient(r, None, None, hops=hops)
        assert emu.units[r.name].connections == 0
    message = str(info.value)
    assert needle in message and "\n" not in message


def test_frequency_and_duration_must_agree_with_the_hops():
    from heimdall_lab.receivers import Receiver

    r = Receiver("RX", "127.0.0.1", 9, 47.0, 8.0)
    hops = [(10e6, 1.0), (10.001e6, 2.5)]
    client = KiwiClient(r, 10e6, 3.5, hops=hops)
    assert (client.frequency_hz, client.duration_s) == (10e6, 3.5)
    assert client.hops == ((10e6, 1.0), (10.001e6, 2.5))
    with pytest.raises(ValidationError, match="first hop"):
        KiwiClient(r, 10.001e6, None, hops=hops)
    with pytest.raises(ValidationError, match="sum"):
        KiwiClient(r, None, 3.0, hops=hops)
    with pytest.raises(ValidationError):
        KiwiClient(r, None, None)  # without hops both are needed


def test_retune_gap_from_gnss_times():
    rate = 12_000.0
    frame = FRAME_SAMPLES / rate
    last = (100, 500_000_000)
    nxt = (100, 500_000_000 + round(frame * 1e9))
    assert retune_gap_s(last, nxt, rate) == pytest.approx(0.0, abs=1e-9)
    later = (101, 500_000_000 + round(frame * 1e9))
    assert retune_gap_s(last, later, rate) == pytest.approx(1.0, abs=1e-9)
    # Across the end of the GPS week.
    assert retune_gap_s((604_799, 990_000_000), (0, 10_000_000), rate) == pytest.approx(
        0.02 - frame, abs=1e-9
    )
    with pytest.raises(ValidationError):
        retune_gap_s(last, nxt, 0.0)
