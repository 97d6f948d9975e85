import numpy as np
import pytest

from heimdall_lab.emulate.scenario import Scenario, Site
from heimdall_lab.emulate.server import Emulator
from heimdall_lab.kiwi.acquire import acquire_async
from heimdall_lab.recording import Recording


def _rec(seq, gps_solution=None, rate=12001.1):
    n = len(seq)
    start = np.arange(n) * 512
    t_ns = np.round(1e9 * (np.asarray(seq) * 512) / rate).astype(np.int64) + 5 * 10**9
    return Recording(
        samples=np.zeros(512 * n, np.complex64),
        frame_start=start,
        seq=np.asarray(seq),
        last_gps_solution=np.asarray(
            gps_solution if gps_solution is not None else [1] * n, np.uint8
        ),
        gpssec=t_ns // 10**9,
        gpsnsec=t_ns % 10**9,
        rssi_dbm=np.full(n, -80, np.float32),
        nominal_rate=12000.0,
    )


def test_sequence_gaps_are_counted_and_located():
    rec = _rec([0, 1, 2, 5, 6, 9])
    assert rec.lost_frames == 4
    np.testing.assert_array_equal(rec.gap_positions, [3, 5])


def test_sequence_wraparound_is_not_a_gap():
    rec = _rec([2**32 - 2, 2**32 - 1, 0, 1])
    assert rec.lost_frames == 0


def test_rate_from_timestamps_uses_trusted_frames_only():
    rec = _rec(list(range(40)), rate=12001.1)
    rec.gpssec[0] -= 300  # stale first frame, as on a KiwiSDR
    assert rec.sample_rate() == pytest.approx(12001.1, abs=1e-3)
    assert rec.timestamp_residual_ns() < 1.0


def test_rate_is_right_across_lost_frames():
    seq = [s for s in range(140) if s not in (40, 41, 42, 90, 91, 120)]
    rec = _rec(seq, rate=12000.0)
    # the samples of the lost frames never arrived: close up frame_start
    rec.frame_start = np.arange(len(seq)) * 512
    assert rec.lost_frames == 6
    assert rec.sample_rate() == pytest.approx(12000.0, abs=1e-3)
    assert rec.timestamp_residual_ns() < 1.0


def test_no_fix_frames_are_marked_and_ignored():
    sol = [1] * 10 + [254] * 10 + [1] * 10
    rec = _rec(list(range(30)), gps_solution=sol)
    assert rec.has_fix.sum() == 20
    assert not rec.trusted[10:20].any()
    times = rec.frame_times(np.datetime64("1980-01-06"))
    assert np.isnat(times[10:20]).all() and not np.isnat(times[:10]).any()


def test_without_trusted_frames_rate_is_nominal_and_start_unknown():
    rec = _rec([0, 1, 2], gps_solution=[255, 255, 255])
    assert rec.sample_rate() == 12000.0
    assert np.isnat(rec.start_time())
    assert np.isnan(rec.timestamp_residual_ns())
    assert Recording().lost_frames == 0 and Recording().n_frames == 0


async def test_receiver_without_gnss_fix_through_the_emulator():
    base = Scenario.default(seed=2)
    sites = tuple(
        Site(s.name, s.latitude, s.longitude, gps_fix=s.name != "Hasenberg03") for s in base.sites
    )
    scenario = Scenario(base.transmitter, sites, seed=2)
    async with Emulator(scenario, realtime=False) as emu:
        acq = await acquire_async([emu.receiver("Hasenberg03"), emu.receiver("DK0TE")], 10e6, 1.0)
    ds = acq.dataset
    nofix = ds.sel(receiver="Hasenberg03")
    assert not nofix.frame_trusted.any()
    assert np.isnat(nofix.start_time.values)
    assert float(nofix.sample_rate) == float(nofix.nominal_rate)
    fix = ds.sel(receiver="DK0TE")
    assert fix.frame_trusted.sum() > 0 and not np.isnat(fix.start_time.values)


def test_sane_timing_has_no_problem():
    rec = _rec(list(range(40)))
    assert rec.timing_problems == [] and rec.timing_ok
    assert rec.trusted.sum() == 38  # all but the two stale frames


@pytest.mark.parametrize(
    ("seq", "phrase"),
    [
        ([0, 1, 2, 3, 3, 4, 5, 6], "repeats"),
        ([0, 1, 2, 3, 1, 2, 3, 4], "steps back"),
        ([0, 1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000], "frames lost"),
    ],
)
def test_an_impossible_sequence_is_a_timing_problem(seq, phrase):
    rec = _rec(seq)
    assert any(phrase in p for p in rec.timing_problems), rec.timing_problems
    assert not rec.timing_ok and not rec.trusted.any()
    assert np.isnat(rec.start_time()) and np.isnat(rec.frame_times()).all()


def test_a_2_to_the_32_wrap_is_not_a_problem():
    rec = _rec([2**32 - 2, 2**32 - 1, 0, 1, 2, 3])
    rec.seq = np.array([2**32 - 2, 2**32 - 1, 0, 1, 2, 3])
    assert rec.lost_frames == 0
    assert not any("sequence" in p for p in rec.timing_problems)


def test_gnss_time_must_run_forward_and_agree_with_the_announced_rate():
    frozen = _rec(list(range(20)))
    frozen.gpssec[:], frozen.gpsnsec[:] = 100, 0
    assert any("stands still" in p for p in frozen.timing_problems)
    fast = _rec(list(range(40)), rate=12000 * 1.02)
    assert any("not the announced" in p for p in fast.timing_problems)
    nonsense = _rec(list(range(20)))
    nonsense.gpssec[5] = 2**32 - 1
    assert any("out of range" in p for p in nonsense.timing_problems)


def test_a_live_stream_far_from_the_clock_is_a_timing_problem():
    from heimdall_lab import gnss

    rec = _rec(list(range(20)))
    sec, nsec = int(rec.gpssec[0]), int(rec.gpsnsec[0])
    now = gnss.tow_to_utc(sec, nsec, np.datetime64("2026-12-01T12:00:00", "ns"))
    rec.arrival_utc = now + np.timedelta64(2, "s")  # a second or two of latency: fine
    assert rec.timing_problems == []
    late = _rec(list(range(20)))
    late.arrival_utc = now + np.timedelta64(3, "D")
    assert any("computer's clock" in p for p in late.timing_problems)
