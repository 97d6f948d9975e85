import json
import math
from dataclasses import replace

import numpy as np
import pytest

from heimdall_lab import gnss
from heimdall_lab.emulate.scenario import (
    FrameSource,
    Scenario,
    Site,
    SourceFrame,
    SynthStream,
    Transmitter,
)
from heimdall_lab.errors import ValidationError
from heimdall_lab.geo import distance_m
from heimdall_lab.kiwi.protocol import smeter_to_dbm
from heimdall_lab.receivers import DEFAULT_RECEIVERS
from heimdall_lab.recording import FRAME_SAMPLES

START = np.datetime64("2024-05-01T12:00:00", "ns")
START_S = int(START.astype(np.int64)) // 1_000_000_000  # a whole second
C = 299_792_458.0
QUIET = -190.0  # dBm/Hz: far below int16 quantisation with the default calibration


def collect(stream, n_frames):
    frames = [stream.next_frame() for _ in range(n_frames)]
    pairs = np.concatenate([f.pairs for f in frames]).astype(np.float64)
    return (pairs[:, 0] + 1j * pairs[:, 1]) / 32768.0, frames


def frame_times_ns(frames):
    t = gnss.tow_to_utc(
        np.array([f.gpssec for f in frames]), np.array([f.gpsnsec for f in frames]), START
    )
    return t.astype(np.int64)


def two_site_scenario(modulation="carrier", noise=QUIET, power_dbm=6.0, **tx):
    return Scenario(
        Transmitter(50.0, 8.5, 10e6, power_dbm=power_dbm, modulation=modulation, **tx),
        (
            Site("NEAR", 48.8, 8.2, noise_dbm_hz=noise),
            Site("FAR", 43.5, 1.4, noise_dbm_hz=noise),
        ),
        seed=11,
    )


# ---- interface ------------------------------------------------------------------------------


def test_frames_have_the_server_interface():
    sc = Scenario.default(seed=3)
    stream = sc.stream("Hasenberg03", 10e6, START)
    assert isinstance(stream, SynthStream)
    assert isinstance(stream, FrameSource)
    assert stream.nominal_rate == 12001.135
    frame = stream.next_frame()
    assert isinstance(frame, SourceFrame)
    assert frame.pairs.dtype == np.int16
    assert frame.pairs.shape == (FRAME_SAMPLES, 2) == (512, 2)
    for name in ("smeter", "last_gps_solution", "gpssec", "gpsnsec"):
        assert type(getattr(frame, name)) is int
    assert 0 <= frame.gpssec < 604_800
    assert 0 <= frame.gpsnsec < 1_000_000_000


def test_default_scenario():
    sc = Scenario.default(seed=5)
    assert sc.site_names == tuple(r.name for r in DEFAULT_RECEIVERS)
    for rx, site in zip(DEFAULT_RECEIVERS, sc.sites, strict=True):
        assert (site.latitude, site.longitude) == (rx.latitude, rx.longitude)
        assert abs(site.ppm) <= 0.5
        assert abs(site.rate_error_ppm) <= 2.0
        assert site.gps_fix
        snr = sc.truth(site.name, 10e6)["snr_db"]
        assert 15.0 < snr < 55.0
    tx = sc.transmitter
    # keyed like DCF77, so that TDoA can locate it
    assert tx is not None and tx.modulation == "ook" and tx.frequency_hz == 10e6
    assert all(s.timing_bias_ns == 0 and s.sky_amplitude == 0 for s in sc.sites)
    assert 47.0 < tx.latitude < 53.0 and 5.0 < tx.longitude < 12.0
    # seeded: reproducible, and another seed gives other clock errors
    assert Scenario.default(seed=5) == sc
    other = Scenario.default(seed=6)
    assert [s.ppm for s in other.sites] != [s.ppm for s in sc.sites]
    assert Scenario.default(seed=5, nominal_rate=12000.0).nominal_rate == 12000.0


def test_start_none_is_now_rounded_to_ms():
    before = np.datetime64("now", "ns")
    stream = Scenario.default().stream("Hasenberg03", 10e6)
    assert int(stream.start_ns) % 1_000_000 == 0
    assert before <= stream.start_utc <= before + np.timedelta64(5, "s")


def test_round_trip_through_json():
    sc = Scenario.default(seed=9)
    sc = replace(
        sc,
        transmitter=replace(sc.transmitter, modulation="fsk", fsk_shift_hz=450.0),
        sites=(*sc.sites[:-1], replace(sc.sites[-1], gps_fix=False, timestamp_jitter_ns=30.0)),
    )
    back = Scenario.from_dict(json.loads(json.dumps(sc.to_dict())))
    assert back == sc
    a, _ = collect(sc.stream("DK0TE", 10e6, START), 3)
    b, _ = collect(back.stream("DK0TE", 10e6, START), 3)
    assert np.array_equal(a, b)
    noise_only = Scenario(None, sc.sites)
    assert Scenario.from_dict(json.loads(json.dumps(noise_only.to_dict()))) == noise_only


# ---- determinism ----------------------------------------------------------------------------


def test_same_request_gives_identical_frames():
    def run(seed, site="Hasenberg03", start=START):
        stream = Scenario.default(seed=seed).stream(site, 10e6, start)
        frames = [stream.next_frame() for _ in range(20)]
        return frames

    a, b = run(1), run(1)
    for fa, fb in zip(a, b, strict=True):
        assert np.array_equal(fa.pairs, fb.pairs)
        assert (fa.smeter, fa.last_gps_solution, fa.gpssec, fa.gpsnsec) == (
            fb.smeter,
            fb.last_gps_solution,
            fb.gpssec,
            fb.gpsnsec,
        )
    c = run(2)
    assert not np.array_equal(a[5].pairs, c[5].pairs)


def test_sites_have_independent_noise():
    sc = Scenario(None, (Site("A", 48.0, 8.0), Site("B", 48.0, 8.0)), seed=4)
    a, _ = collect(sc.stream("A", 10e6, START), 40)
    b, _ = collect(sc.stream("B", 10e6, START), 40)
    corr = abs(np.vdot(a, b)) / math.sqrt(np.vdot(a, a).real * np.vdot(b, b).real)
    assert corr < 0.03  # ~20k samples: independent noise gives ~0.007
    # and the noise is white: no correlation between neighbouring samples
    lag1 = abs(np.vdot(a[:-1], a[1:])) / np.vdot(a, a).real
    assert lag1 < 0.03


# ---- frequency ------------------------------------------------------------------------------


def peak_frequency(x, rate):
    spec = np.abs(np.fft.fftshift(np.fft.fft(x * np.hanning(len(x))))) ** 2
    freqs = np.fft.fftshift(np.fft.fftfreq(len(x), 1.0 / rate))
    return freqs[np.argmax(spec)], rate / len(x)


@pytest.mark.parametrize("name", ["F4JOY", "North-Shropshire-UK", "DK0TE"])
def test_carrier_appears_at_truth_offset(name):
    sc = Scenario.default(seed=2)
    tuned = 10e6 + 1234.5
    x, _ = collect(sc.stream(name, tuned, START), 94)  # ~4 s
    f, bin_hz = peak_frequency(x, sc.nominal_rate)  # analysed as a client would: nominal rate
    truth = sc.truth(name, tuned)
    assert abs(f - truth["frequency_offset_at_nominal_rate_hz"]) <= bin_hz
    assert abs(f - truth["frequency_offset_hz"]) <= bin_hz
    site = sc.site(name)
    assert truth["frequency_offset_hz"] == pytest.approx(10e6 - tuned * (1 + site.ppm * 1e-6))


@pytest.mark.parametrize("ppm", [+1.0, -1.0])
def test_ppm_sign_convention(ppm):
    # LO high by 1 ppm at 10 MHz (ppm > 0) -> the carrier appears 10 Hz *below* centre
    sc = Scenario(
        Transmitter(50.0, 8.5, 10e6), (Site("S", 48.8, 8.2, ppm=ppm, noise_dbm_hz=QUIET),)
    )
    x, _ = collect(sc.stream("S", 10e6, START), 94)
    f, bin_hz = peak_frequency(x, sc.nominal_rate)
    assert abs(f - (-10.0 * ppm)) <= bin_hz


def test_outside_passband_is_not_heard():
    sc = Scenario(Transmitter(50.0, 8.5, 10e6, power_dbm=30.0), (Site("S", 48.8, 8.2),))
    tuned = 10e6 + 0.46 * sc.nominal_rate
    truth = sc.truth("S", tuned)
    assert not truth["in_passband"]
    assert truth["received_power_dbm"] == -math.inf
    x, _ = collect(sc.stream("S", tuned, START), 20)
    noise_dbfs = 10 * math.log10(np.mean(np.abs(x) ** 2))
    assert noise_dbfs == pytest.approx(-140.0 + 30.0 + 10 * math.log10(sc.nominal_rate), abs=0.3)
    assert sc.truth("S", 10e6 + 0.44 * sc.nominal_rate)["in_passband"]


# ---- power ----------------------------------------------------------------------------------


def test_signal_power_noise_density_and_smeter():
    site = Site(
        "S", 47.3, 8.5, ppm=0.3, rate_error_ppm=1.5, noise_dbm_hz=-138.0, calibration_db=-25.0
    )
    tx = Transmitter(50.0, 8.5, 10e6, power_dbm=-20.0)
    sc = Scenario(tx, (site,), seed=8)
    stream = sc.stream("S", 10e6 - 700.0, START)
    x, frames = collect(stream, 120)
    truth = stream.truth()
    rate = 12001.135 * (1 + 1.5e-6)
    assert truth["sample_rate"] == pytest.approx(rate, rel=1e-15)

    # the documented law, evaluated independently: free space referenced to 1 km
    d_km = distance_m(50.0, 8.5, 47.3, 8.5) / 1e3
    expected_dbm = -20.0 - 20 * math.log10(d_km)
    assert truth["received_power_dbm"] == pytest.approx(expected_dbm, abs=1e-9)
    assert truth["received_power_dbfs"] == pytest.approx(expected_dbm + 25.0, abs=1e-9)
    assert truth["noise_density_dbfs_hz"] == pytest.approx(-138.0 + 25.0)
    assert truth["snr_db_in_1hz"] == pytest.approx(expected_dbm + 138.0)

    n = np.arange(len(x))
    phasor = np.exp(-2j * np.pi * truth["frequency_offset_hz"] * n / rate)
    coherent = np.mean(x * phasor)
    signal_dbfs = 10 * math.log10(abs(coherent) ** 2)
    assert signal_dbfs == pytest.approx(truth["received_power_dbfs"], abs=0.5)
    residual = x - coherent / phasor
    n0_dbfs_hz = 10 * math.log10(np.mean(np.abs(residual) ** 2) / rate)
    assert n0_dbfs_hz == pytest.approx(truth["noise_density_dbfs_hz"], abs=0.5)

    rssi = np.array([smeter_to_dbm(f.smeter) for f in frames])
    per_frame = np.array([np.mean(np.abs(x[i : i + 512]) ** 2) for i in range(0, len(x), 512)])
    np.testing.assert_allclose(rssi, 10 * np.log10(per_frame) - 25.0, atol=0.051)
    total_dbm = 10 * math.log10(
        10 ** (expected_dbm / 10) + 10 ** ((-138.0 + 10 * math.log10(rate)) / 10)
    )
    assert 10 * math.log10(np.mean(10 ** (rssi / 10))) == pytest.approx(total_dbm, abs=0.3)
    assert truth["rssi_dbm"] == pytest.approx(total_dbm, abs=1e-9)


def test_noise_only_density():
    sc = Scenario(None, (Site("S", 0.0, 0.0, noise_dbm_hz=-130.0, calibration_db=-40.0),))
    x, frames = collect(sc.stream("S", 5e6, START), 60)
    measured = 10 * math.log10(np.mean(np.abs(x) ** 2) / sc.nominal_rate)
    assert measured == pytest.approx(-130.0 + 40.0, abs=0.2)
    truth = sc.truth("S", 5e6)
    assert truth["received_power_dbm"] == -math.inf
    assert math.isnan(truth["distance_m"])
    rssi = np.mean([smeter_to_dbm(f.smeter) for f in frames])
    assert rssi == pytest.approx(-130.0 + 10 * math.log10(sc.nominal_rate), abs=0.3)


def test_default_noise_is_above_quantisation_and_strong_signals_saturate():
    sc = Scenario.default()
    x, _ = collect(sc.stream("F4JOY", 10e6 + 6000.0, START), 20)  # outside: noise only
    rms_counts = math.sqrt(np.mean(np.abs(x) ** 2)) * 32768
    assert 3.0 < rms_counts < 100.0
    loud = Scenario(Transmitter(50.0, 8.5, 10e6, power_dbm=40.0), (Site("S", 50.1, 8.5),))
    frame = loud.stream("S", 10e6 + 100.0, START).next_frame()
    assert loud.truth("S", 10e6 + 100.0)["signal_amplitude_fs"] > 10
    p = frame.pairs.astype(np.int64)
    assert p.max() == 32767 and p.min() == -32768  # saturated, not wrapped
    assert np.mean(np.abs(p) > 30000) > 0.5


# ---- timestamps -----------------------------------------------------------------------------


def test_timestamps_step_by_true_frame_duration():
    site = Site("S", 47.3, 8.5, rate_error_ppm=2.0)
    sc = Scenario(Transmitter(50.0, 8.5, 10e6), (site,))
    stream = sc.stream("S", 10e6, START)
    _, frames = collect(stream, 60)
    t = frame_times_ns(frames) - int(START.astype(np.int64))  # ns after START, exact ints
    rate = 12001.135 * (1 + 2e-6)
    step_ns = 512 / rate * 1e9
    assert np.all(np.abs(np.diff(t[1:]) - step_ns) <= 1.0)
    # each frame is the true time of its first sample
    k = np.arange(1, 60)
    assert np.all(np.abs(t[1:] - k * step_ns) <= 0.5 + 1e-6)
    # KiwiSDR quirk: the first frame's stamp is stale (far in the past)
    assert t[0] < -100e9
    fix = [f.last_gps_solution for f in frames]
    assert all(0 <= v <= 5 for v in fix) and len(set(fix)) > 1


def test_timestamp_jitter_and_no_fix():
    sites = (
        Site("J", 47.3, 8.5, timestamp_jitter_ns=50.0),
        Site("N", 47.3, 8.5, gps_fix=False),
    )
    sc = Scenario(Transmitter(50.0, 8.5, 10e6), sites)
    _, frames = collect(sc.stream("J", 10e6, START), 60)
    t = frame_times_ns(frames) - int(START.astype(np.int64))
    dev = t[1:] - np.arange(1, 60) * 512 / sc.nominal_rate * 1e9
    assert np.all(np.abs(dev) <= 51.0)
    assert np.std(dev) > 10.0
    _, frames = collect(sc.stream("N", 10e6, START), 10)
    assert {f.last_gps_solution for f in frames} == {254}


def test_gps_week_rollover_and_leap_seconds():
    # the first sample exactly at the start of GPS week 2309 (2024-04-14 00:00:00 GPS = -18 s UTC)
    start = np.datetime64("2024-04-13T23:59:42", "ns")
    sc = Scenario(None, (Site("S", 0.0, 0.0),), nominal_rate=12800.0)  # 512 samples = 40 ms
    stream = sc.stream("S", 1e6, start)
    frames = [stream.next_frame() for _ in range(3)]
    assert (frames[1].gpssec, frames[1].gpsnsec) == (0, 40_000_000)
    assert (frames[2].gpssec, frames[2].gpsnsec) == (0, 80_000_000)


# ---- delay, coherence: TDoA-grade truth ------------------------------------------------------


def test_truth_delay_is_great_circle_over_c():
    sc = two_site_scenario()
    for site in sc.sites:
        truth = sc.truth(site.name, 10e6)
        d = distance_m(50.0, 8.5, site.latitude, site.longitude)
        assert truth["distance_m"] == d
        assert truth["delay_s"] == pytest.approx(d / C, rel=1e-15)


def edge_crossings(env, level):
    """Sub-sample indices where env crosses level downward and upward (linear interpolation)."""
    above = env > level
    idx = np.flatnonzero(above[:-1] != above[1:])
    frac = (level - env[idx]) / (env[idx + 1] - env[idx])
    pos = idx + frac
    return pos[above[idx]], pos[~above[idx]]


def test_ook_edges_arrive_delayed_by_propagation():
    sc = two_site_scenario("ook")
    rate = sc.nominal_rate
    env = {}
    times = {}
    for name in ("NEAR", "FAR"):
        x, frames = collect(sc.stream(name, 10e6, START), 72)  # ~3.1 s
        env[name] = np.abs(x)
        t = frame_times_ns(frames)
        times[name] = (t[1] - 512 / rate * 1e9) / 1e9 - START_S  # time of sample 0, from stamps
    near, far = sc.truth("NEAR", 10e6), sc.truth("FAR", 10e6)
    assert far["delay_s"] - near["delay_s"] > 2e-3  # several samples apart

    # 1) cross-correlation of the envelopes, as a TDoA solver would do it
    a, b = env["NEAR"] - env["NEAR"].mean(), env["FAR"] - env["FAR"].mean()
    lags = np.arange(-80, 81)
    m = 100
    corr = np.array([np.dot(b[m:-m], a[m - lag : len(a) - m - lag]) for lag in lags])
    i = int(np.argmax(corr))
    y0, y1, y2 = corr[i - 1 : i + 2]
    lag = lags[i] + 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2)
    expected_lag = (far["delay_s"] - near["delay_s"]) * rate
    assert abs(lag - expected_lag) < 0.5

    # 2) absolute arrival: the key-down edge crosses mid-level at whole UTC second + delay
    seconds = sc.ook_key_durations(START_S, 4)
    for name, truth in (("NEAR", near), ("FAR", far)):
        e = env[name]
        up_level = truth["signal_amplitude_fs"]
        down, up = edge_crossings(e, up_level * (1 + 0.15) / 2)
        t_down = times[name] + down / rate
        t_up = times[name] + up / rate
        expected_down = np.arange(0, 4) + truth["delay_s"]
        expected_down = expected_down[expected_down < times[name] + len(e) / rate]
        np.testing.assert_allclose(t_down, expected_down, atol=0.05 / rate)
        # and the keying lasts 0.1 s or 0.2 s as the truth says
        expected_up = expected_down + seconds[: len(expected_down)]
        expected_up = expected_up[expected_up < times[name] + len(e) / rate]
        np.testing.assert_allclose(t_up, expected_up, atol=0.05 / rate)
    assert set(sc.ook_key_durations(START_S, 40)) == {0.1, 0.2}


def test_sites_are_phase_coherent_at_any_epoch():
    # With an exact LO and whole-second start, the phase at a site's first sample is
    # -2 pi f_tx tau (mod 2 pi): a long way from 1970 this needs exact phase arithmetic.
    tuned = 10e6 - 250.0  # integer offset: offset * whole seconds is a whole number of cycles
    for start in (START, np.datetime64("2037-12-31T23:59:59", "ns")):
        sc = two_site_scenario()
        for name in ("NEAR", "FAR"):
            frame = sc.stream(name, tuned, start).next_frame()
            z = complex(frame.pairs[0, 0], frame.pairs[0, 1])
            tau = sc.truth(name, tuned)["delay_s"]
            expected = -2 * np.pi * ((10e6 * tau) % 1.0)
            err = np.angle(z * np.exp(-1j * expected))
            assert abs(err) < 2e-3  # quantisation of an amplitude of ~1000+ counts


def test_frames_join_without_phase_jumps():
    # a large sample-clock error makes any mix-up of nominal and true rate visible
    site = Site("S", 43.5, 1.4, rate_error_ppm=500.0, noise_dbm_hz=QUIET)
    sc = Scenario(Transmitter(50.0, 8.5, 10e6, power_dbm=6.0), (site,))
    tuned = 10e6 - 2000.0
    x, _ = collect(sc.stream("S", tuned, START), 30)
    dphi = np.angle(x[1:] * np.conj(x[:-1]))
    true_rate = sc.nominal_rate * (1 + 500e-6)
    assert sc.truth("S", tuned)["sample_rate"] == pytest.approx(true_rate, rel=1e-15)
    expected = 2 * np.pi * 2000.0 / true_rate
    assert np.max(np.abs(dphi - expected)) < 2e-3


def test_seed_changes_noise():
    def noise(seed):
        sc = Scenario(None, (Site("S", 48.0, 8.0),), seed=seed)
        return collect(sc.stream("S", 10e6, START), 2)[0]

    assert np.array_equal(noise(1), noise(1))
    assert not np.array_equal(noise(1), noise(2))


# ---- FSK ------------------------------------------------------------------------------------


def test_fsk_two_tones_and_symbols():
    sc = two_site_scenario("fsk", fsk_shift_hz=170.0, fsk_baud=50.0)
    tuned = 10e6 - 1000.0
    rate = sc.nominal_rate
    x, _ = collect(sc.stream("FAR", tuned, START), 94)  # ~4 s
    truth = sc.truth("FAR", tuned)
    centre = truth["frequency_offset_hz"]
    assert centre == pytest.approx(1000.0)

    spec = np.abs(np.fft.fftshift(np.fft.fft(x))) ** 2
    freqs = np.fft.fftshift(np.fft.fftfreq(len(x), 1 / rate))
    near_tone = [np.abs(freqs - (centre + s)) < 25 for s in (-85.0, 85.0)]
    tone_power = [spec[m].sum() for m in near_tone]
    assert sum(tone_power) > 0.6 * spec.sum()
    assert min(tone_power) > 0.3 * max(tone_power)
    for m, s in zip(near_tone, (-85.0, 85.0), strict=True):  # each tone's centroid is on it
        assert np.sum(freqs[m] * spec[m]) / spec[m].sum() == pytest.approx(centre + s, abs=5.0)
    assert spec[np.abs(freqs - centre) < 20].sum() < 0.1 * spec.sum()

    # instantaneous frequency is one of the two tones, following the true symbols
    inst = np.angle(x[1:] * np.conj(x[:-1])) * rate / (2 * np.pi)  # between samples n-1, n
    n = np.arange(1, len(x))
    pos = (n - 0.5) / rate - truth["delay_s"]  # emission time after START, mid-interval
    symbol = START_S * 50 + np.floor(pos * 50).astype(np.int64)
    clean = np.abs(pos * 50 - np.round(pos * 50)) > 1.0 / rate * 50
    first = int(symbol.min())
    d = sc.fsk_symbols(first, int(symbol.max()) - first + 1)[symbol - first]
    np.testing.assert_allclose(inst[clean], centre + 85.0 * d[clean], atol=5.0)
    assert set(np.unique(d)) == {-1, 1}


# ---- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"latitude": float("nan")},
        {"latitude": 90.5},
        {"longitude": -181.0},
        {"longitude": float("inf")},
        {"frequency_hz": 0.0},
        {"frequency_hz": -1e6},
        {"power_dbm": float("nan")},
        {"modulation": "am"},
        {"keying_depth": 1.5},
        {"keying_depth": -0.1},
        {"fsk_shift_hz": -170.0},
        {"fsk_baud": -50.0},
        {"fsk_baud": 0.0},
        {"keying_edge_s": -1e-3},
        {"frequency_hz": "10 MHz"},
    ],
)
def test_bad_transmitter(kwargs):
    base = {"latitude": 50.0, "longitude": 8.5, "frequency_hz": 10e6}
    with pytest.raises(ValidationError):
        Transmitter(**{**base, **kwargs})


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": ""},
        {"latitude": -91.0},
        {"longitude": float("nan")},
        {"ppm": float("inf")},
        {"rate_error_ppm": 2e6},
        {"noise_dbm_hz": float("nan")},
        {"calibration_db": None},
        {"timestamp_jitter_ns": -1.0},
    ],
)
def test_bad_site(kwargs):
    base = {"name": "S", "latitude": 50.0, "longitude": 8.5}
    with pytest.raises(ValidationError):
        Site(**{**base, **kwargs})


def test_bad_scenario_and_requests():
    site = Site("S", 50.0, 8.5)
    with pytest.raises(ValidationError, match="duplicate"):
        Scenario(None, (site, site))
    with pytest.raises(ValidationError):
        Scenario(None, (site,), seed=-1)
    with pytest.raises(ValidationError):
        Scenario(None, (site,), nominal_rate=0.0)
    with pytest.raises(ValidationError):
        Scenario("tx", (site,))
    with pytest.raises(ValidationError):
        Scenario.default(color="blue")
    sc = Scenario.default()
    with pytest.raises(ValidationError, match="unknown site 'NOPE'"):
        sc.site("NOPE")
    with pytest.raises(ValidationError):
        sc.stream("NOPE", 10e6, START)
    with pytest.raises(ValidationError):
        sc.truth("NOPE", 10e6)
    for bad in (0.0, -5.0, float("nan")):
        with pytest.raises(ValidationError):
            sc.stream("Hasenberg03", bad, START)
        with pytest.raises(ValidationError):
            sc.truth("Hasenberg03", bad)
    with pytest.raises(ValidationError):
        sc.stream("Hasenberg03", 10e6, np.datetime64("NaT"))
    with pytest.raises(ValidationError):
        Scenario.from_dict({"format": "something else"})
    d = sc.to_dict()
    d["sites"][0]["colour"] = "red"
    with pytest.raises(ValidationError, match="colour"):
        Scenario.from_dict(d)
