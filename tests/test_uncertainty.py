"""The honest uncertainty: error budget, likelihood region, robust fit and calibration.

Delays are synthesised from the same WGS84 model the solver uses, with noise and biases of
known size, so each claim can be checked against the truth.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from heimdall_lab import geo
from heimdall_lab.errors import LocalizationError, ValidationError
from heimdall_lab.localize.budget import closure_sigma, estimator_spread, subband_spread
from heimdall_lab.localize.calibration import Calibration, calibrate
from heimdall_lab.localize.solver import solve_tdoa
from heimdall_lab.localize.tdoa import locate_recordings
from heimdall_lab.propagation import Propagation
from heimdall_lab.receivers import DEFAULT_RECEIVERS

TX = (50.0, 8.5)
#: The start of every emulated stream here. The calibration gain varies from start to start
#: (1.7-19x over six hours of starts, 8 s each); the benchmark gives its median over seeds.
START = np.datetime64("2026-06-01T12:00:00", "ns")
#: A search area around the network (a coarser grid keeps the many fits quick).
BOX = (40.0, 58.0, -6.0, 20.0)
#: Seven receivers around central Europe (the default receivers' positions).
SEVEN = [(r.name, r.latitude, r.longitude) for r in DEFAULT_RECEIVERS[:7]]
SITES = {name: (lat, lon) for name, lat, lon in SEVEN}


def arrivals(tx, sites, bias=None):
    bias = bias or {}
    return np.array(
        [float(geo.distance_m(*tx, la, lo)) / geo.SPEED_OF_LIGHT + bias.get(n, 0.0)
         for n, la, lo in sites]
    )  # fmt: skip


def all_pairs(n):
    return [(i, j) for i in range(n) for j in range(i + 1, n)]


def solve(sites, tx, *, sigma=1e-6, bias=None, rng=None, **kw):
    """Pair delays of every pair from per-receiver arrivals (noise per receiver), solved."""
    t = arrivals(tx, sites, bias)
    if rng is not None:
        t = t + rng.normal(0.0, sigma / math.sqrt(2), len(t))
    pairs = all_pairs(len(sites))
    delays = [t[i] - t[j] for i, j in pairs]
    return solve_tdoa(
        [s[1] for s in sites],
        [s[2] for s in sites],
        pairs,
        delays,
        sigma,
        names=[s[0] for s in sites],
        **kw,
    )


# ------------------------------------------------------------------------------ budget


def test_closure_of_consistent_delays_is_zero_and_of_pair_errors_is_not():
    t = np.array([0.0, 100e-6, 250e-6, 400e-6])
    pairs = all_pairs(4)
    consistent = [t[i] - t[j] for i, j in pairs]
    sig, closures = closure_sigma(pairs, consistent, [1e-6] * len(pairs))
    assert sig == 0.0 and len(closures) == 4 and max(map(abs, closures)) < 1e-18
    # per-receiver biases cancel around every triangle: closure cannot see them
    biased = [t[i] + 30e-6 * (i == 2) - t[j] - 30e-6 * (j == 2) for i, j in pairs]
    assert closure_sigma(pairs, biased, [1e-6] * len(pairs))[0] == 0.0
    # errors that belong to pairs do not cancel
    rng = np.random.default_rng(0)
    noisy = [d + rng.normal(0, 10e-6) for d in consistent]
    sig, _ = closure_sigma(pairs, noisy, [1e-6] * len(pairs))
    assert 3e-6 < sig < 30e-6


def test_estimator_and_subband_spreads():
    assert estimator_spread(10e-6, 1e-6, 10e-6, 1e-6) == 0.0
    assert estimator_spread(0.0, 1e-6, 40e-6, 1e-6) == pytest.approx(
        math.sqrt(40e-6**2 - 2e-12) / 2
    )
    assert estimator_spread(0.0, 1e-6, math.nan, 1e-6) == 0.0
    assert subband_spread(np.array([5e-6, 5e-6, 5e-6, 5e-6]), 1e-7) == 0.0
    spread = subband_spread(np.array([0.0, 20e-6, -20e-6, np.nan]), np.full(4, 1e-6))
    assert spread == pytest.approx(math.sqrt(np.var([0.0, 20e-6, -20e-6], ddof=1) - 1e-12))
    assert subband_spread(np.array([1e-6]), np.array([1e-7])) == 0.0
    # a spread the statistical errors explain is no systematic error
    assert subband_spread(np.array([0.0, 2e-6, -2e-6]), np.full(3, 5e-6)) == 0.0


# ------------------------------------------------------------------------------ region


def test_the_region_is_the_likelihood_contour_and_contains_is_exact():
    # Outside the receivers' hull the likelihood is a long curved banana, not an ellipse.
    sites = SEVEN[:3]
    far = (55.5, 20.0)
    loc = solve(sites, far, sigma=50e-6)
    region = loc.region
    thr = region.attrs["threshold"]
    assert thr == pytest.approx(stats.chi2.ppf(0.95, 2))
    assert loc.contains(loc.latitude, loc.longitude)
    inside = region.values <= thr
    assert inside.any() and not inside.all()
    # the exact measure agrees with the grid, point by point
    la, lo = np.meshgrid(region["latitude"].values, region["longitude"].values, indexing="ij")
    np.testing.assert_allclose(loc.delta_chi2(la, lo), region.values, atol=1e-6)
    # points inside the region but far outside the ellipse: the region is not elliptical
    lat0 = math.radians(loc.latitude)
    north = (la - loc.latitude) * geo.EARTH_RADIUS_M * math.pi / 180 / 1e3
    east = (lo - loc.longitude) * geo.EARTH_RADIUS_M * math.pi / 180 / 1e3 * math.cos(lat0)
    x = np.stack([east, north], axis=-1)
    maha = np.einsum("...i,ij,...j->...", x, np.linalg.inv(loc.covariance_km2), x)
    assert np.any(inside & (maha > 1.5 * thr))
    assert not loc.contains(loc.latitude + 5.0, loc.longitude)


def test_the_region_covers_the_truth_at_its_stated_rate():
    """Timing errors per receiver of the stated size: the 95 % region holds the truth in
    about 95 % of the draws (150 draws: binomial, 2.5 sigma is 90.5-99.5 %), whether the errors
    are given per receiver or as pair sigmas inflated for the shared receivers."""
    rng = np.random.default_rng(1)
    sites = SEVEN[:4]
    pairs = all_pairs(len(sites))
    lat, lon, names = [s[1] for s in sites], [s[2] for s in sites], [s[0] for s in sites]
    sigma_rx = 2e-6
    per_receiver, inflated = [], []
    for _ in range(150):
        t = arrivals(TX, sites) + rng.normal(0.0, sigma_rx, len(sites))
        d = [t[i] - t[j] for i, j in pairs]
        kw = {"names": names, "robust": False, "bounds": BOX, "grid_step_deg": 0.25}
        a = solve_tdoa(lat, lon, pairs, d, 1e-9, receiver_sigma_s=sigma_rx, inflate=False, **kw)
        b = solve_tdoa(lat, lon, pairs, d, sigma_rx * math.sqrt(2), **kw)
        per_receiver.append(a.contains(*TX))
        inflated.append(b.contains(*TX))
    for hits in (per_receiver, inflated):
        assert 0.88 <= float(np.mean(hits)) <= 0.99, np.mean(hits)
    # stated too small, the region is too small: it misses the truth far more often
    t = [arrivals(TX, sites) + rng.normal(0.0, sigma_rx, len(sites)) for _ in range(60)]
    tight = [
        solve_tdoa(lat, lon, pairs, [x[i] - x[j] for i, j in pairs], 0.2e-6, names=names,
                   robust=False, bounds=BOX, grid_step_deg=0.25).contains(*TX)
        for x in t
    ]  # fmt: skip
    assert float(np.mean(tight)) < 0.8


# ------------------------------------------------------------------------------ robust


def test_the_robust_fit_names_a_biased_receiver_and_recovers_the_clean_result():
    rng = np.random.default_rng(2)
    bad = SEVEN[3][0]
    biased = solve(SEVEN, TX, sigma=2e-6, bias={bad: 50e-6}, rng=rng)
    assert [x["receiver"] for x in biased.dropped] == [bad]
    assert "disagree" in biased.dropped[0]["reason"]
    assert bad not in biased.used_receivers and len(biased.used_receivers) == 6
    assert all(not p.used for p in biased.pairs if bad in (p.receiver_a, p.receiver_b))
    assert any(bad in n for n in biased.notes)
    clean6 = solve([s for s in SEVEN if s[0] != bad], TX, sigma=2e-6, rng=rng)
    naive = solve(SEVEN, TX, sigma=2e-6, bias={bad: 50e-6}, rng=rng, robust=False)
    assert biased.error_km(*TX) <= 1.5 * max(clean6.error_km(*TX), 0.5)
    assert naive.error_km(*TX) > biased.error_km(*TX)
    # a consistent network loses nobody
    assert solve(SEVEN, TX, sigma=2e-6, rng=rng).dropped == []


def test_the_robust_fit_needs_four_receivers():
    loc = solve(SEVEN[:3], TX, sigma=1e-6, bias={SEVEN[0][0]: 50e-6})
    assert loc.dropped == [] and len(loc.used_receivers) == 3


# ------------------------------------------------------------------------------ calibration


def test_calibration_recovers_the_bias_differences():
    rng = np.random.default_rng(3)
    bias = {n: b for (n, _, _), b in zip(SEVEN[:5], [12e-6, -5e-6, 28e-6, 0.0, 17e-6], strict=True)}
    ref_pos = (48.9, 2.3)  # a known transmitter elsewhere
    reference = solve(SEVEN[:5], ref_pos, sigma=0.5e-6, bias=bias, rng=rng, robust=False)
    cal = calibrate(reference, *ref_pos)
    assert cal.receivers == [s[0] for s in SEVEN[:5]]
    assert abs(sum(cal.bias_s.values())) < 1e-9  # zero mean: only differences are defined
    for a in cal.receivers:
        for b in cal.receivers:
            want = bias[a] - bias[b]
            assert cal.pair_bias(a, b) == pytest.approx(want, abs=3e-6)
    assert cal.dof == 10 - 4 and math.isfinite(cal.chi2)
    again = Calibration.from_dict(cal.to_dict())
    assert again.bias_s == pytest.approx(cal.bias_s) and again.receivers == cal.receivers
    assert "calibrated on a reference" in cal.summary()
    with pytest.raises(ValidationError):
        Calibration.from_dict({"receivers": ["a"]})
    with pytest.raises(ValidationError):
        calibrate("not a capture", *ref_pos)


# ------------------------------------------------------------------------------ failure


def test_a_failure_to_locate_is_one_short_line_with_the_details_attached(synthetic_noise):
    with pytest.raises(LocalizationError) as info:
        locate_recordings(*synthetic_noise, method="envelope")
    msg = str(info.value)
    assert "\n" not in msg and len(msg) < 200, msg
    assert "good pair" in msg
    pairs = info.value.pairs
    assert len(pairs) == 3 and all(not p.used and p.reason for p in pairs)


@pytest.fixture
def synthetic_noise():
    """Three receivers that hear only noise (the recordings of test_localize)."""
    from test_localize import SITES, synthetic_recording

    names = list(SITES)[:3]
    recs = {n: synthetic_recording(0.0, seed=20 + k, signal=False) for k, n in enumerate(names)}
    return recs, {n: SITES[n] for n in names}


# ------------------------------------------------------------------------------ emulated


def emulated_dataset(tx, frequency_hz, biases, seed=5, seconds=8.0):
    """A keyed carrier heard by the seven default receivers with timing biases, over
    loopback through the emulator and the client, from a fixed start so that it is the
    same on every run (the noise and the keying depend on the start)."""
    from heimdall_lab.emulate.scenario import Scenario, Transmitter
    from heimdall_lab.emulate.server import Emulator
    from heimdall_lab.kiwi.acquire import acquire

    scenario = Scenario.default(
        seed=seed, transmitter=Transmitter(*tx, frequency_hz, modulation="ook")
    ).with_timing_biases(biases)
    with Emulator(scenario, realtime=False, start_utc=START).running() as emu:
        return acquire(emu.receivers, frequency_hz, seconds, gps_reference=emu.start_utc).dataset


def test_calibration_on_a_reference_emitter_removes_receiver_biases():
    """Biases of 10-30 us: a reference transmitter on another frequency at a known place
    measures them, and the unknown one is then located as if they were not there."""
    from heimdall_lab.localize import calibrate, locate_dataset

    names = [r.name for r in DEFAULT_RECEIVERS[:7]]
    rng = np.random.default_rng(7)
    biases = dict(zip(names, rng.uniform(10e-6, 30e-6, len(names)), strict=True))
    reference = (48.85, 2.35)
    ref = emulated_dataset(reference, 60_000.0, biases)
    target = emulated_dataset(TX, 77_500.0, biases)
    clean = {"sky_ratio": 0.0}  # the scene has no sky wave, and says so
    cal = calibrate(ref, *reference, propagation=clean)
    k0 = cal.receivers.index(names[0])
    for a in names[1:]:
        k = cal.receivers.index(a)
        c = cal.covariance_s2
        stated = math.sqrt(c[k, k] + c[k0, k0] - 2 * c[k, k0])
        error = cal.pair_bias(a, names[0]) - (biases[a] - biases[names[0]])
        print(f"{a}: bias error {error * 1e6:+.2f} us, stated {stated * 1e6:.2f} us")
        assert abs(error) < max(4 * stated, 1e-6) and abs(error) < 8e-6
    plain = locate_dataset(target, robust=False, propagation=clean)
    fixed = locate_dataset(target, calibration=cal, propagation=clean)
    # one seed: at least halved (the benchmark reports the median over many seeds)
    assert fixed.error_km(*TX) < plain.error_km(*TX) / 2
    # the delays used are the measured ones less the biases, and the region is built on them
    assert all(p.calibration_s != 0.0 for p in fixed.used_pairs)
    assert fixed.delta_chi2(fixed.latitude, fixed.longitude) == pytest.approx(0.0, abs=1e-6)
    assert any("calibrated on a reference" in n for n in fixed.notes)
    assert any("calibration" in part for part in fixed.error_budget["parts"])
    # By default a sky wave may pull each reference path, and the biases' uncertainty says so.
    stated = calibrate(ref, *reference)
    pull = Propagation().sky_pull_sigma_s(
        geo.distance_m(*reference, *np.array([SITES[n] for n in stated.receivers]).T), 60e3
    )
    assert stated.bias_s == pytest.approx(cal.bias_s, abs=1e-12)
    np.testing.assert_allclose(
        stated.covariance_s2, cal.covariance_s2 + np.diag(pull**2), rtol=1e-9, atol=1e-20
    )
    assert min(pull) > 5e-6


def test_a_receiver_biased_by_50_us_is_named_and_dropped():
    from heimdall_lab.localize import locate_dataset

    bad = DEFAULT_RECEIVERS[2].name
    ds = emulated_dataset(TX, 77_500.0, {bad: 50e-6}, seed=6)
    # The scene has no sky wave, and saying so is what lets 50 us stand out: by default a
    # sky wave mixed in at 0.2 could pull receivers this close by tens of microseconds.
    clean_paths = {"sky_ratio": 0.0}
    loc = locate_dataset(ds, propagation=clean_paths)
    assert [x["receiver"] for x in loc.dropped] == [bad]
    timing = {r.name: r for r in loc.receivers}[bad]
    assert not timing.used and "robust fit" in timing.reason
    others = [r.name for r in DEFAULT_RECEIVERS[:7] if r.name != bad]
    clean = locate_dataset(ds, receivers=others, propagation=clean_paths)
    assert loc.error_km(*TX) <= 1.5 * max(clean.error_km(*TX), 0.3)
    # by default each receiver carries that pull, and the result says so
    stated = locate_dataset(ds)
    assert any("sky wave mixed into the ground wave" in p for p in stated.error_budget["parts"])
    assert stated.semi_major_km > loc.semi_major_km


def test_the_earliest_arrival_is_a_stated_choice():
    from heimdall_lab import tutorial
    from heimdall_lab.localize import locate_files

    files, positions = tutorial.dcf77_files(), tutorial.DCF77_POSITIONS
    peak = locate_files(files, positions)
    edge = locate_files(files, positions, estimator="leading_edge")
    assert peak.settings["estimator"] == "peak" and edge.settings["estimator"] == "leading_edge"
    assert all(math.isfinite(p.delay_s) for p in edge.pairs)
    assert (
        max(abs(a.delay_s - b.delay_s) for a, b in zip(peak.pairs, edge.pairs, strict=True)) > 1e-6
    )
    with pytest.raises(ValidationError, match="estimator"):
        locate_files(files, positions, estimator="median")


@pytest.mark.parametrize("kept", [True, False], ids=["kept", "too-large-to-keep"])
@pytest.mark.parametrize("mode", ["ground", "auto", "sky"])
def test_the_search_grid_holds_the_model_at_every_point(mode, kept, monkeypatch):
    """The receivers' delays on a grid are kept for a refit: what is kept must be the model
    itself, for every pair subset and path model, and the chi-square grid built from it; a
    grid too large to keep gives the same."""
    from heimdall_lab.localize import model
    from heimdall_lab.localize.model import DelayModel

    if not kept:
        monkeypatch.setattr(model, "GRID_KEPT_POINTS", 0)

    lat = np.array([s[1] for s in SEVEN])
    lon = np.array([s[2] for s in SEVEN])
    pairs = np.array(all_pairs(len(SEVEN)))
    prop = Propagation.of(mode)
    glat, glon = np.linspace(44.0, 56.0, 13), np.linspace(-2.0, 16.0, 19)
    la, lo = np.meshgrid(glat, glon, indexing="ij")
    full = DelayModel(lat, lon, pairs[:, 0], pairs[:, 1], prop, 77.5e3)
    np.testing.assert_array_equal(full.on_grid(glat, glon), full(la, lo))
    sub = full.subset(pairs[:, 0] != 2)
    np.testing.assert_array_equal(sub.on_grid(glat, glon), sub(la, lo))
    # Another path model on the same grid is not confused with the first.
    other = DelayModel(lat, lon, pairs[:, 0], pairs[:, 1], Propagation(velocity_factor=0.99))
    assert not np.allclose(other.on_grid(glat, glon), full.on_grid(glat, glon), atol=1e-9)
    loc = solve(SEVEN, TX, bounds=BOX, propagation=prop, robust=False)
    grid = loc.chi2_grid
    i, j = 3, 5
    at = loc._model(loc.pairs)
    resid = np.array([p.delay_s for p in loc.pairs]) - at(
        float(grid.latitude[i]), float(grid.longitude[j])
    )
    w = np.linalg.inv(np.linalg.cholesky(loc.pair_covariance_s2))
    assert float(grid.values[i, j]) == pytest.approx(float(np.sum((w @ resid) ** 2)), rel=1e-9)
