"""The emulator's systematic effects and the receiver passband, each measured in what it sends.

Synthesis (unit) tests read :class:`SynthStream` frames directly; the passband, the GNSS
bias and the default scene are also measured through the real emulator over loopback, with
the client asking for its passband in ``SET mod=iq low_cut=.. high_cut=..``.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, replace

import numpy as np
import pytest
import scipy.signal

from heimdall_lab import dsp, gnss
from heimdall_lab.emulate.scenario import (
    Scenario,
    Site,
    SynthStream,
    Transmitter,
    passband_taps,
)
from heimdall_lab.emulate.server import Emulator
from heimdall_lab.errors import ValidationError
from heimdall_lab.geo import SPEED_OF_LIGHT, distance_m
from heimdall_lab.kiwi.acquire import acquire, acquire_async
from heimdall_lab.kiwi.client import KiwiClient, StreamSettings
from heimdall_lab.propagation import sky_path_m
from heimdall_lab.recording import FRAME_SAMPLES

START = np.datetime64("2024-05-01T12:00:00", "ns")
START_NS = int(START.astype(np.int64))
START_S = START_NS // 1_000_000_000
LF = 77_500.0
QUIET = -190.0  # dBm/Hz: far below int16 quantisation with the default calibration
#: int16 rounding alone: 1/6 count^2 per complex sample, spread over the nominal rate.
RATE = 12001.135
QUANTISATION_FLOOR_DBFS_HZ = 10 * math.log10(1 / 6 / 32768**2 / RATE)


def collect(stream, n_frames):
    frames = [stream.next_frame() for _ in range(n_frames)]
    pairs = np.concatenate([f.pairs for f in frames]).astype(np.float64)
    return (pairs[:, 0] + 1j * pairs[:, 1]) / 32768.0, frames


def stamps_ns(frames, reference=START):
    t = gnss.tow_to_utc(
        np.array([f.gpssec for f in frames]), np.array([f.gpsnsec for f in frames]), reference
    )
    return t.astype(np.int64)


def edge_crossings(env, level):
    """Sub-sample indices where env crosses level downward and upward (linear interpolation)."""
    above = env > level
    idx = np.flatnonzero(above[:-1] != above[1:])
    frac = (level - env[idx]) / (env[idx + 1] - env[idx])
    pos = idx + frac
    return pos[above[idx]], pos[~above[idx]]


def key_down_times(scenario, name, freq, n_frames=235, start=START):
    """True UTC times (s after START_S) of the key-down mid-edges, from the sample index."""
    stream = scenario.stream(name, freq, start)
    x, frames = collect(stream, n_frames)
    amp = stream.truth()["signal_amplitude_fs"]
    down, _ = edge_crossings(np.abs(x), amp * (1 + scenario.transmitter.keying_depth) / 2)
    return down / stream.true_rate + (stream.start_ns - START_NS) / 1e9, frames, stream


def welch_db(x, rate, nperseg=1024):
    f, p = scipy.signal.welch(
        x, rate, window="hann", nperseg=nperseg, detrend=False, return_onesided=False
    )
    return np.fft.fftshift(f), 10 * np.log10(np.fft.fftshift(p) + 1e-30)


def two_sites(tx, **effects):
    """A plain site and one with effects, at the same place."""
    return Scenario(
        tx,
        (
            Site("PLAIN", 48.8, 8.2, noise_dbm_hz=QUIET),
            Site("EFFECT", 48.8, 8.2, noise_dbm_hz=QUIET, **effects),
        ),
        seed=2,
    )


#: About 15000 counts at the sites of :func:`two_sites`: a key-down mid-edge is timed to
#: about 20 ns from one edge (int16 rounding), to a few ns over the ten of 10 s.
LF_OOK = Transmitter(50.0, 8.5, LF, power_dbm=6.0, modulation="ook")


# ---- defaults: nothing changes ---------------------------------------------------------------

#: SHA-256 (first 16 hex digits) of 40 frames (pairs, S-meter, fix, stamps) as synthesised
#: before the systematic effects and the passband existed.
GOLDEN = {
    "carrier": {"NEAR": "e730bcdc196ded4e", "FAR": "2570c8260590b6f2"},
    "ook": {"NEAR": "12537feeb3b78d38", "FAR": "8558c8787deeb91f"},
    "fsk": {"NEAR": "937ed8a340db983f", "FAR": "7467710a7267433d"},
    "burst": {"NEAR": "4ca053a67be8aa1b", "FAR": "eb90e1fbf9c74f12"},
}
GOLDEN_START = np.datetime64("2024-05-01T12:00:00.000250", "ns")


def golden_scenario(modulation, **site_fields):
    kw = {}
    if modulation == "burst":
        kw = {
            "bursts": [(0.3, 0.4, 6.0), (1.2, 0.2, 0.0)],
            "burst_epoch_ns": int(GOLDEN_START.astype(np.int64)),
        }
    return Scenario(
        Transmitter(50.0, 8.5, 10e6, modulation=modulation, **kw),
        (
            Site(
                "NEAR",
                48.8,
                8.2,
                ppm=0.2,
                rate_error_ppm=-1.3,
                timestamp_jitter_ns=30.0,
                **site_fields,
            ),
            Site("FAR", 43.5, 1.4, gps_fix=False, noise_dbm_hz=-150.0, **site_fields),
        ),
        seed=11,
    )


def digest(stream, n_frames=40):
    h = hashlib.sha256()
    for _ in range(n_frames):
        fr = stream.next_frame()
        h.update(fr.pairs.tobytes())
        h.update(
            np.array([fr.smeter, fr.last_gps_solution, fr.gpssec, fr.gpsnsec], np.int64).tobytes()
        )
    return h.hexdigest()[:16]


@pytest.mark.parametrize("modulation", sorted(GOLDEN))
def test_defaults_give_the_frames_of_the_synthesis_without_effects(modulation):
    explicit = {
        "velocity_factor": 1.0,
        "sky_amplitude": 0.0,
        "sky_layer_height_km": 70.0,
        "sky_phase_deg": 0.0,
        "sky_drift_hz": 0.0,
        "filter_delay_ns": 0.0,
        "timing_bias_ns": 0.0,
        "noise_slope_db": 0.0,
    }
    plain = golden_scenario(modulation)
    spelled = golden_scenario(modulation, **explicit)
    # A description written before the fields existed reads back to the same scenario.
    old = plain.to_dict()
    for site in old["sites"]:
        for name in explicit:
            del site[name]
    assert Scenario.from_dict(old) == plain == spelled
    for name in ("NEAR", "FAR"):
        for sc, band in ((plain, None), (spelled, (-6000, 6000)), (plain, (-6200.0, 7000.0))):
            stream = sc.stream(name, 10e6 - 700.0, GOLDEN_START, passband=band)
            assert digest(stream) == GOLDEN[modulation][name], (name, band)
    # An effect that is on changes the frames (the digest can tell).
    biased = replace(plain, sites=(replace(plain.sites[0], timing_bias_ns=1.0),))
    assert digest(biased.stream("NEAR", 10e6 - 700.0, GOLDEN_START)) != GOLDEN[modulation]["NEAR"]


# ---- truth ----------------------------------------------------------------------------------


def test_truth_states_every_delay_the_synthesis_uses():
    site = Site(
        "S",
        47.3,
        12.0,
        velocity_factor=0.9995,
        sky_amplitude=0.2,
        sky_layer_height_km=75.0,
        sky_phase_deg=30.0,
        sky_drift_hz=0.02,
        filter_delay_ns=1500.0,
        timing_bias_ns=-250.0,
        noise_slope_db=4.0,
    )
    sc = Scenario(LF_OOK, (site,))
    t = sc.truth("S", LF)
    d = distance_m(50.0, 8.5, 47.3, 12.0)
    assert t["distance_m"] == d
    assert t["ground_delay_s"] == t["delay_s"] == pytest.approx(d / (0.9995 * SPEED_OF_LIGHT))
    assert t["velocity_factor"] == 0.9995
    assert t["sky_delay_s"] == pytest.approx(sky_path_m(d, 75e3) / SPEED_OF_LIGHT, rel=1e-12)
    assert t["sky_excess_s"] == pytest.approx(t["sky_delay_s"] - t["delay_s"], abs=1e-15)
    assert 10e-6 < t["sky_excess_s"] < 200e-6
    assert (t["sky_amplitude"], t["sky_layer_height_km"]) == (0.2, 75.0)
    assert (t["sky_phase_deg"], t["sky_drift_hz"]) == (30.0, 0.02)
    assert t["filter_delay_s"] == pytest.approx(1.5e-6)
    assert t["timing_bias_s"] == pytest.approx(-250e-9)
    expected = d / (0.9995 * SPEED_OF_LIGHT) + 1.5e-6 - 250e-9
    assert t["apparent_delay_s"] == pytest.approx(expected, abs=1e-15)
    assert t["noise_slope_db"] == 4.0
    assert t["passband_hz"] is None and t["passband_gain_db"] == 0.0
    # The sky wave drifts against the ground wave: the long-run mean adds the powers.
    keyed = 1 - 0.15 * (1 - 0.15**2) - 0.85**2 * 0.001 / 4
    assert t["mean_power_dbm"] - t["received_power_dbm"] == pytest.approx(
        10 * math.log10(keyed * (1 + 0.2**2)), abs=1e-9
    )
    with pytest.raises(ValidationError, match="both"):
        sc.truth("S", LF, start_utc=START)


# ---- ground wave, filter delay, GNSS bias: the keying edges and the stamps -------------------


def test_ground_wave_velocity_factor_delays_the_edges_as_stated():
    sc = two_sites(LF_OOK, velocity_factor=0.999)
    plain, _, _ = key_down_times(sc, "PLAIN", LF)
    slow, _, _ = key_down_times(sc, "EFFECT", LF)
    d = sc.truth("PLAIN", LF)["distance_m"]
    extra = d / SPEED_OF_LIGHT * (1 / 0.999 - 1)  # about 0.8 us at 250 km
    assert sc.truth("EFFECT", LF)["delay_s"] - sc.truth("PLAIN", LF)["delay_s"] == pytest.approx(
        extra, rel=1e-9
    )
    shift = slow - plain
    print(f"\nvelocity factor 0.999: edges later by {np.mean(shift) * 1e9:.1f} ns, {extra=:.3e} s")
    assert np.all(np.abs(shift - extra) < 60e-9) and abs(np.mean(shift) - extra) < 15e-9
    # and absolutely: each key-down mid-edge at its whole emission second + the ground delay
    delay = sc.truth("EFFECT", LF)["delay_s"]
    np.testing.assert_allclose(slow, np.round(slow - delay) + delay, atol=60e-9)


def test_filter_delay_delays_the_edges_not_the_stamps_nor_the_noise():
    delay_ns = 2500.0
    sc = two_sites(LF_OOK, filter_delay_ns=delay_ns)
    plain, plain_frames, _ = key_down_times(sc, "PLAIN", LF)
    delayed, delayed_frames, stream = key_down_times(sc, "EFFECT", LF)
    shift = (delayed - plain) * 1e9
    print(f"\nfilter delay {delay_ns} ns: edges later by {shift.round(1)} ns")
    assert len(shift) >= 9
    assert np.all(np.abs(shift - delay_ns) < 60.0)
    assert abs(np.mean(shift) - delay_ns) < 15.0
    # the stamps are those of the plain site: the filter delays the signal, not the clock
    for a, b in zip(plain_frames, delayed_frames, strict=True):
        assert (a.gpssec, a.gpsnsec) == (b.gpssec, b.gpsnsec)
    assert stream.truth()["apparent_delay_s"] == pytest.approx(
        stream.truth()["delay_s"] + delay_ns * 1e-9, abs=1e-15
    )
    # without a transmitter there is only noise, and the filter delay leaves it as it was
    noise = Scenario(
        None, (Site("S", 48.8, 8.2), Site("T", 48.8, 8.2, filter_delay_ns=delay_ns)), seed=2
    )
    plain_noise = collect(noise.stream("S", LF, START), 5)[0]
    other = Scenario(None, (Site("S", 48.8, 8.2, filter_delay_ns=delay_ns),), seed=2)
    assert np.array_equal(collect(other.stream("S", LF, START), 5)[0], plain_noise)


@pytest.mark.parametrize("bias_ns", [30_000.0, -20_000.0, 417.0])
def test_timing_bias_moves_the_stamps_by_exactly_the_bias(bias_ns):
    sc = two_sites(LF_OOK, timing_bias_ns=bias_ns)
    same = Scenario(LF_OOK, (replace(sc.sites[1], name="PLAIN"),), seed=2)  # same noise
    x_plain, plain = collect(sc.stream("PLAIN", LF, START), 60)
    x_biased, biased = collect(same.stream("PLAIN", LF, START), 60)
    shift = stamps_ns(biased) - stamps_ns(plain)
    assert set(shift.tolist()) == {int(bias_ns)}  # every frame, the stale first one too
    # the samples themselves are the plain site's: only the clock is off
    assert np.array_equal(x_plain, x_biased)
    # So the signal appears bias_ns late on the stamped time axis: the apparent delay.
    stream = sc.stream("EFFECT", LF, START)
    x, frames = collect(stream, 235)
    t = stamps_ns(frames)
    # sample 0's stamped time after START, from the first fresh (not stale) stamp
    first_ns = int(t[1] - START_NS) - 512 / stream.true_rate * 1e9
    amp = stream.truth()["signal_amplitude_fs"]
    down, _ = edge_crossings(np.abs(x), amp * 1.15 / 2)
    arrival = first_ns / 1e9 + down / stream.true_rate
    apparent = stream.truth()["apparent_delay_s"]
    assert apparent == pytest.approx(stream.truth()["delay_s"] + bias_ns * 1e-9, abs=1e-15)
    np.testing.assert_allclose(arrival, np.arange(len(arrival)) + apparent, atol=60e-9)


def test_timing_bias_reaches_the_client_over_the_protocol():
    sc = two_sites(LF_OOK, timing_bias_ns=25_000.0)
    with Emulator(sc, realtime=False, start_utc=START).running() as emu:
        acq = acquire(emu.receivers, LF, 2.0, gps_reference=START)
    assert acq.ok == ["PLAIN", "EFFECT"]
    times = {}
    for name in acq.ok:
        one = acq.dataset.sel(receiver=name)
        trusted = one.frame_trusted.values
        times[name] = one.frame_time.values[trusted].astype(np.int64)
    n = min(len(times["PLAIN"]), len(times["EFFECT"]))
    assert n > 40
    assert set((times["EFFECT"][:n] - times["PLAIN"][:n]).tolist()) == {25_000}


# ---- the sky wave ---------------------------------------------------------------------------


def test_sky_wave_appears_at_its_delay_with_its_amplitude():
    # An F-layer echo 50 km from the transmitter: 2.5 ms (30 samples) after the ground wave,
    # far enough apart for the keying edges (0.2 ms wide) to be told apart.
    tx = Transmitter(50.0, 8.5, LF, power_dbm=-20.0, modulation="ook", keying_edge_s=0.0002)
    g, h = 0.3, 400.0
    ground = Scenario(tx, (Site("S", 50.45, 8.5, noise_dbm_hz=QUIET),), seed=3)
    echo = replace(ground.sites[0], sky_amplitude=g, sky_layer_height_km=h, sky_phase_deg=40.0)
    sky = replace(ground, sites=(echo,))
    truth = sky.truth("S", LF)
    rate = truth["sample_rate"]
    x, _ = collect(sky.stream("S", LF, START), 72)
    r, _ = collect(ground.stream("S", LF, START), 72)
    # Cross-correlate the keying edges (the derivative) with those of the ground wave alone.
    y, q = np.diff(x), np.diff(r)
    lags = np.arange(-10, 60)
    corr = np.abs([np.vdot(np.roll(q, lag), y) for lag in lags]) / np.vdot(q, q).real
    assert lags[np.argmax(corr)] == 0 and corr.max() == pytest.approx(1.0, abs=0.02)
    i = int(np.argmax(np.where(lags > 10, corr, 0.0)))
    y0, y1, y2 = corr[i - 1 : i + 2]
    p = 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2)
    lag = lags[i] + p
    peak = y1 - 0.25 * (y0 - y2) * p
    expected = truth["sky_excess_s"] * rate
    print(f"\nsky echo at {lag:.3f} samples (stated {expected:.3f}), amplitude {peak:.4f} ({g})")
    assert expected > 25
    assert abs(lag - expected) < 0.1
    assert peak == pytest.approx(g, rel=0.03)


def test_sky_wave_phase_and_drift_follow_the_stated_formula():
    drift, phase0 = 0.4, 40.0
    sc = two_sites(LF_OOK, sky_amplitude=0.25, sky_phase_deg=phase0, sky_drift_hz=drift)
    x, _ = collect(sc.stream("EFFECT", LF, START), 94)  # ~4 s
    r, _ = collect(sc.stream("PLAIN", LF, START), 94)
    truth = sc.truth("EFFECT", LF)
    s = x - r  # the sky wave alone (same site, same noise)
    t = START_S + np.arange(len(x)) / truth["sample_rate"]
    keyed_up = np.abs(r) > 0.99 * truth["signal_amplitude_fs"]
    keyed_up &= np.abs(s) > 0.99 * 0.25 * truth["signal_amplitude_fs"]  # both paths key-up
    ratio = s[keyed_up] / r[keyed_up]
    assert np.abs(ratio) == pytest.approx(0.25, abs=2e-3)
    # relative phase: phi_0 + 2 pi f_d t - 2 pi f_tx (tau_s - tau_g), t absolute time
    theta = (
        np.radians(phase0)
        + 2 * np.pi * ((drift * t[keyed_up]) % 1.0)
        - 2 * np.pi * ((LF * truth["sky_excess_s"]) % 1.0)
    )
    err = np.angle(ratio * np.exp(-1j * theta))
    assert np.max(np.abs(err)) < 0.01


def test_mean_power_truth_is_what_the_metrics_measure():
    # a sky wave beating with the ground wave, and keying: the window's exact mean
    sc = two_sites(
        Transmitter(50.0, 8.5, LF, power_dbm=-30.0, modulation="ook"),
        sky_amplitude=0.3,
        sky_drift_hz=0.05,
        sky_phase_deg=10.0,
    )
    sc = replace(sc, sites=tuple(replace(s, noise_dbm_hz=-150.0) for s in sc.sites))
    for name in ("PLAIN", "EFFECT"):
        stream = sc.stream(name, LF + 300.0, START)
        x, _ = collect(stream, 140)  # ~6 s
        m = dsp.measure(x, stream.true_rate)
        window = sc.truth(name, LF + 300.0, start_utc=START, duration_s=len(x) / stream.true_rate)
        long_run = sc.truth(name, LF + 300.0)
        print(
            f"\n{name}: measured {m.signal_power_dbfs:.3f} dBFS, window truth "
            f"{window['mean_power_dbfs']:.3f}, long-run {long_run['mean_power_dbfs']:.3f}, "
            f"key-up {long_run['received_power_dbfs']:.3f}"
        )
        assert m.signal_power_dbfs == pytest.approx(window["mean_power_dbfs"], abs=0.05)
        assert m.cn0_dbhz == pytest.approx(window["mean_cn0_dbhz"], abs=0.1)


# ---- the passband ---------------------------------------------------------------------------


def test_passband_filter_design():
    assert passband_taps(None, RATE) is None
    assert passband_taps((-6000, 6000), RATE) is None  # the whole band: nothing to cut
    wide = passband_taps((-6000, 6000), RATE, 6.0)  # ... unless the noise slopes
    assert wide is not None
    h = passband_taps((-1000, 2000), RATE, 8.0)
    m = np.arange(-(len(h) // 2), len(h) // 2 + 1)
    f = np.linspace(-RATE / 2, RATE / 2, 4001)
    response = np.exp(-2j * np.pi * np.outer(f, m) / RATE) @ h
    assert np.max(np.abs(response.imag)) < 1e-9  # zero phase: delays nothing
    gain = 20 * np.log10(np.abs(response) + 1e-30)
    inside = (f > -900) & (f < 1900)
    expected = 8.0 * ((f - -1000) / 3000 - 0.5)
    assert np.max(np.abs(gain[inside] - expected[inside])) < 0.01
    outside = (f < -1100) | (f > 2100)
    assert gain[outside].max() < -90
    for bad in ((3000, -3000), (1.0,), "wide", (float("nan"), 10.0)):
        with pytest.raises(ValidationError):
            passband_taps(bad, RATE)


def measure_passband(x, rate, low, high, noise_dbfs_hz, slope_db):
    """Out-of-band median level, and the in-band PSD's straight-line fit against the stated."""
    f, db = welch_db(x, rate)
    outside = (f < low - 150) | (f > high + 150)
    inside = (f > low + 150) & (f < high - 150)
    floor = float(np.median(db[outside]))
    fit = np.polyfit(f[inside], db[inside], 1)
    stated = noise_dbfs_hz + slope_db * ((f[inside] - low) / (high - low) - 0.5)
    error = np.polyval(fit, f[inside]) - stated
    measured_slope = fit[0] * (high - low)
    # 200-Hz averages, for flatness
    chunks = np.array_split(db[inside] - (stated - noise_dbfs_hz), max(1, int(inside.sum() // 17)))
    ripple = max(abs(np.mean(c) - noise_dbfs_hz) for c in chunks)
    return floor, measured_slope, float(np.max(np.abs(error))), ripple


@pytest.mark.parametrize("slope_db", [0.0, 10.0])
def test_passband_limits_the_stream_to_the_cut(slope_db):
    site = Site("S", 48.8, 8.2, noise_slope_db=slope_db)
    sc = Scenario(None, (site,), seed=4)
    stream = sc.stream("S", LF, START, passband=(-3000, 3000))
    x, _ = collect(stream, 280)  # ~12 s
    truth = stream.truth()
    floor, slope, fit_error, ripple = measure_passband(
        x, RATE, -3000, 3000, truth["noise_density_dbfs_hz"], slope_db
    )
    print(
        f"\nslope {slope_db} dB: floor outside {floor:.2f} dBFS/Hz (int16 rounding "
        f"{QUANTISATION_FLOOR_DBFS_HZ:.2f}), measured slope {slope:.2f} dB, line error "
        f"{fit_error:.3f} dB, 200-Hz ripple {ripple:.3f} dB"
    )
    assert floor == pytest.approx(QUANTISATION_FLOOR_DBFS_HZ, abs=0.3)
    assert abs(QUANTISATION_FLOOR_DBFS_HZ - -138.9) < 0.05  # "about -138 dBFS/Hz"
    assert abs(slope - slope_db) < 1.0 and fit_error < 1.0
    assert ripple < 0.5
    # the noise power the truth states is what the stream carries
    power = 10 * math.log10(np.mean(np.abs(x) ** 2))
    assert power == pytest.approx(truth["noise_power_dbfs"], abs=0.1)
    # deterministic: the same request gives the same frames
    again = collect(sc.stream("S", LF, START, passband=(-3000, 3000)), 280)[0]
    assert np.array_equal(x, again)


def test_passband_filter_runs_across_frames_and_delays_nothing():
    # A carrier in the band keeps its exact phase across frame boundaries, and the keying
    # edges of a keyed one stay where they were (the filter is zero-phase).
    sc = two_sites(LF_OOK)
    plain, _, _ = key_down_times(sc, "PLAIN", LF, n_frames=72)
    stream = sc.stream("PLAIN", LF, START, passband=(-1000, 1000))
    x, _ = collect(stream, 72)
    amp = stream.truth()["signal_amplitude_fs"]
    down, _ = edge_crossings(np.abs(x), amp * 1.15 / 2)
    assert np.max(np.abs(down / stream.true_rate - plain)) < 100e-9
    carrier = Scenario(Transmitter(50.0, 8.5, LF, power_dbm=-5.0), sc.sites, seed=2)  # -18 dBFS
    stream = carrier.stream("PLAIN", LF - 400.0, START, passband=(-1000, 1000))
    x, _ = collect(stream, 20)
    dphi = np.angle(x[1:] * np.conj(x[:-1]))
    expected = 2 * np.pi * 400.0 / stream.true_rate
    assert np.max(np.abs(dphi - expected)) < 2e-3  # boundaries included
    assert stream.truth()["passband_gain_db"] == pytest.approx(0.0, abs=1e-3)
    assert 10 * math.log10(np.mean(np.abs(x) ** 2)) == pytest.approx(
        stream.truth()["mean_power_dbfs"], abs=0.01
    )
    # a strong carrier outside the cut (at a site with the usual noise) leaves only the
    # quantisation floor there
    noisy = replace(carrier, sites=(Site("S", 48.8, 8.2),))
    out = noisy.stream("S", LF - 2500.0, START, passband=(-1000, 1000))
    truth = out.truth()
    assert truth["passband_gain_db"] < -100
    assert truth["mean_power_dbfs"] < truth["received_power_dbfs"] - 100
    x, _ = collect(out, 240)
    f, db = welch_db(x, RATE)
    near = db[np.abs(f - 2500.0) < 60]
    print(
        f"\ncarrier at {truth['received_power_dbfs']:.1f} dBFS, 1500 Hz outside the cut: gain "
        f"{truth['passband_gain_db']:.1f} dB, PSD around it {near.min():.1f}..{near.max():.1f}"
    )
    assert np.median(near) == pytest.approx(QUANTISATION_FLOOR_DBFS_HZ, abs=0.5)
    assert near.max() < QUANTISATION_FLOOR_DBFS_HZ + 2
    unfiltered = collect(noisy.stream("S", LF - 2500.0, START), 240)[0]
    assert welch_db(unfiltered, RATE)[1][np.abs(f - 2500.0) < 60].max() > -100  # it is there


async def test_passband_over_loopback_follows_the_clients_cut_and_retunes():
    # Noise only: a keyed carrier's sidebands would stand above the noise near it.
    sc = Scenario.default(seed=6, transmitter=None)
    sc = replace(sc, sites=(replace(sc.sites[0], noise_slope_db=6.0), *sc.sites[1:3]))
    settings = StreamSettings(low_cut=-1000, high_cut=1500)
    async with Emulator(sc, realtime=False, start_utc=START) as emu:
        acq = await acquire_async(emu.receivers, 10e6, 6.0, settings=settings, gps_reference=START)
        commands = [c for _, c in emu.units[sc.sites[0].name].commands if "mod=iq" in c]
    assert commands == ["SET mod=iq low_cut=-1000 high_cut=1500 freq=10000.000"]
    assert set(acq.ok) == set(sc.site_names)
    for site in sc.sites:
        one = acq.dataset.sel(receiver=site.name)
        x = one.iq.values[: int(one.n_samples)]
        truth = sc.truth(site.name, 10e6, passband=(-1000, 1500))
        f, db = welch_db(x, RATE)
        floor = float(np.median(db[(f < -1200) | (f > 1700)]))
        noise = (f > -900) & (f < 1400)
        level = float(np.median(db[noise]))
        centre = truth["noise_density_dbfs_hz"] + site.noise_slope_db * (
            (np.median(f[noise]) + 1000) / 2500 - 0.5
        )
        print(
            f"\n{site.name}: floor {floor:.2f} dBFS/Hz, in-band {level:.2f} (stated {centre:.2f})"
        )
        assert floor == pytest.approx(QUANTISATION_FLOOR_DBFS_HZ, abs=0.3)
        assert level == pytest.approx(centre, abs=0.5)
        power = 10 * math.log10(np.mean(np.abs(x) ** 2))
        assert power == pytest.approx(truth["noise_power_dbfs"], abs=0.1)

    # A retune on the open connection keeps the cut.
    hops = [(10e6, 1.5), (10e6 + 2000.0, 1.5)]
    async with Emulator(sc, realtime=False, start_utc=START) as emu:
        r = emu.receivers[1]
        client = KiwiClient(r, None, None, settings, hops=hops)
        await client.run()
        assert [f for _, f in emu.units[r.name].retunes] == [10e6 + 2000.0]
    start = 0
    for hop in client.hops_done:
        n = hop.samples // FRAME_SAMPLES
        frames = client.frames[start : start + n]
        start += n
        x = np.concatenate([fr.samples for fr in frames])
        f, db = welch_db(x, RATE, nperseg=512)
        assert np.median(db[(f < -1300) | (f > 1800)]) == pytest.approx(
            QUANTISATION_FLOOR_DBFS_HZ, abs=0.5
        )
        assert np.median(db[(f > -800) & (f < 1300)]) > QUANTISATION_FLOOR_DBFS_HZ + 20


def test_the_server_reads_the_cut_of_a_set_mod():
    from heimdall_lab.emulate.server import EmulatedReceiver, _passband
    from heimdall_lab.kiwi.protocol import cmd_mod, decode_params
    from heimdall_lab.receivers import Receiver

    unit = EmulatedReceiver(Receiver("S", "127.0.0.1", 8073, 48.8, 8.2), lambda f, band: None)

    def cut(command, current=None):
        return _passband(unit, decode_params(command[4:]), RATE, current)

    assert cut(cmd_mod(77_500.0, -3000, 3000)) == (-3000.0, 3000.0)
    assert cut(cmd_mod(77_500.0, -1000, 1500)) == (-1000.0, 1500.0)
    assert cut("SET mod=iq freq=77.500", (-1, 1)) == (-1, 1)  # none given: kept
    for bad in ("low_cut=3000 high_cut=-3000", "low_cut=x high_cut=1", "low_cut=-3000"):
        assert cut(f"SET mod=iq {bad} freq=77.500", (-1, 1)) == (-1, 1)
    assert cut("SET mod=iq low_cut=7000 high_cut=8000 freq=77.500") is None  # off the band


async def test_default_cut_over_loopback_gives_the_unfiltered_frames():
    sc = Scenario.default(seed=8)
    name = sc.sites[2].name
    async with Emulator(sc, realtime=False, start_utc=START, receivers=None) as emu:
        r = emu.receiver(name)
        client = KiwiClient(r, 10e6, 1.0, StreamSettings())  # the default +-6 kHz
        await client.run()
    assert len(client.frames) >= 20
    direct = SynthStream(sc, sc.site(name), 10e6, START_NS)
    expected = [direct.next_frame() for _ in range(client.frames[-1].seq + 1)]
    for frame in client.frames:
        want = expected[frame.seq]
        got = np.stack([frame.samples.real, frame.samples.imag], axis=1) * 32768.0
        np.testing.assert_array_equal(got, want.pairs)
        assert (frame.gpssec, frame.gpsnsec) == (want.gpssec, want.gpsnsec)


# ---- scenario helpers -----------------------------------------------------------------------


def test_with_systematics_draws_realistic_seeded_effects():
    base = Scenario.default(seed=1)
    sc = base.with_systematics(7)
    assert sc == base.with_systematics(7)  # reproducible
    assert sc != base.with_systematics(8)
    assert base.with_systematics() == base.with_systematics(1)  # the scenario's seed
    for s in sc.sites:
        assert 0.05 <= s.sky_amplitude <= 0.3 and 65 <= s.sky_layer_height_km <= 80
        assert 0 <= s.sky_phase_deg < 360 and 0.005 <= abs(s.sky_drift_hz) <= 0.05
        assert 0 <= s.filter_delay_ns <= 3000
        assert abs(s.timing_bias_ns) <= 500 and s.timestamp_jitter_ns == 50.0
        assert 0.9990 <= s.velocity_factor <= 0.9999
        assert 0 <= s.noise_slope_db <= 10
    assert len({s.timing_bias_ns for s in sc.sites}) == len(sc.sites)
    # each effect from its own draws: turning one off leaves the others as they were
    no_sky = base.with_systematics(7, sky=False)
    for a, b, plain in zip(sc.sites, no_sky.sites, base.sites, strict=True):
        assert b.sky_amplitude == plain.sky_amplitude == 0.0
        assert (b.timing_bias_ns, b.filter_delay_ns) == (a.timing_bias_ns, a.filter_delay_ns)
    only_gnss = base.with_systematics(
        7, sky=False, filter_delay=False, ground_slowdown=False, passband=False
    )
    assert [replace(s, timing_bias_ns=0.0, timestamp_jitter_ns=0.0) for s in only_gnss.sites] == [
        *base.sites
    ]
    # the same scenario gives the same frames
    a = collect(sc.stream("DK0TE", 10e6, START), 5)[0]
    b = collect(base.with_systematics(7).stream("DK0TE", 10e6, START), 5)[0]
    assert np.array_equal(a, b)
    with pytest.raises(ValidationError):
        base.with_systematics(-1)


def test_with_timing_biases_takes_seconds_by_site():
    base = Scenario.default(seed=1)
    sc = base.with_timing_biases({"DK0TE": 20e-6, "F4JOY": -12.5e-6})
    assert sc.site("DK0TE").timing_bias_ns == pytest.approx(20_000.0)
    assert sc.site("F4JOY").timing_bias_ns == pytest.approx(-12_500.0)
    assert sc.site("Purmerend") == base.site("Purmerend")
    assert sc.truth("DK0TE", 10e6)["apparent_delay_s"] == pytest.approx(
        base.truth("DK0TE", 10e6)["delay_s"] + 20e-6, abs=1e-12
    )
    with pytest.raises(ValidationError, match="unknown site"):
        base.with_timing_biases({"NOPE": 1e-6})
    with pytest.raises(ValidationError, match="timing_bias_ns"):
        base.with_timing_biases({"DK0TE": 1.0})  # a whole second: out of range


def test_effects_round_trip_through_json():
    sc = Scenario.default(seed=4).with_systematics(3)
    back = Scenario.from_dict(json.loads(json.dumps(sc.to_dict())))
    assert back == sc
    assert asdict(back.sites[0]) == asdict(sc.sites[0])
    a = collect(sc.stream("OE3AKB", 10e6, START, passband=(-3000, 3000)), 4)[0]
    b = collect(back.stream("OE3AKB", 10e6, START, passband=(-3000, 3000)), 4)[0]
    assert np.array_equal(a, b)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"velocity_factor": 0.9},
        {"velocity_factor": 1.01},
        {"sky_amplitude": -0.1},
        {"sky_layer_height_km": 0.0},
        {"sky_drift_hz": 50.0},
        {"sky_phase_deg": float("nan")},
        {"filter_delay_ns": -1.0},
        {"timing_bias_ns": 2e7},
        {"noise_slope_db": 30.0},
        {"noise_slope_db": "steep"},
    ],
)
def test_bad_effects(kwargs):
    with pytest.raises(ValidationError):
        Site("S", 50.0, 8.5, **kwargs)


# ---- the default scene can be located -------------------------------------------------------


def test_default_scene_is_located_from_an_emulated_capture():
    from heimdall_lab.localize import locate_dataset

    sc = Scenario.default(seed=0)
    assert sc.transmitter.modulation == "ook"
    start = np.datetime64("2026-03-01T09:00:00", "ns")
    with Emulator(sc, realtime=False, start_utc=start).running() as emu:
        acq = acquire(emu.receivers, 10e6, 10.0, gps_reference=start)
    assert len(acq.ok) == 7
    loc = locate_dataset(acq.dataset)
    error = loc.error_km(sc.transmitter.latitude, sc.transmitter.longitude)
    print(f"\ndefault scene: {loc.summary()}, {error:.2f} km from the transmitter")
    assert error < 3.0
    # and the metrics measure what the truth states, for the keyed carrier
    metrics = dsp.measure_dataset(acq.dataset, center_frequency_hz=10e6)
    for name in acq.ok:
        one = acq.dataset.sel(receiver=name)
        truth = sc.truth(
            name, 10e6, start_utc=start, duration_s=int(one.n_samples) / float(one.sample_rate)
        )
        m = metrics.sel(receiver=name)
        assert float(m.signal_power_dbfs) == pytest.approx(truth["mean_power_dbfs"], abs=0.05)
        assert float(m.frequency_offset_hz) == pytest.approx(truth["frequency_offset_hz"], abs=0.05)
