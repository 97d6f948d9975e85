import itertools
import json
import math
import time
from dataclasses import replace

import numpy as np
import pytest
from scipy import integrate, optimize, special

from heimdall_lab import directory, geo, planning, tutorial
from heimdall_lab.directory import Entry
from heimdall_lab.errors import ValidationError
from heimdall_lab.receivers import Receiver

SNAPSHOT = tutorial.directory_snapshot()
C_KM_S = geo.SPEED_OF_LIGHT / 1e3
TARGET = (48.0, 10.0)


def entry(name: str, lat: float, lon: float, **kw) -> Entry:
    """A receiver that can take any job unless told otherwise."""
    base = {
        "title": name,
        "host": f"{name}.example.org",
        "port": 8073,
        "tls": False,
        "latitude": lat,
        "longitude": lon,
        "min_frequency_hz": 0.0,
        "max_frequency_hz": 30e6,
        "users": 1,
        "users_max": 4,
        "has_gps": True,
        "gps_good": 8,
        "fixes_min": 30,
        "tdoa_ch": 0,
    }
    base.update(kw)
    return Entry(name=name, **base)


def at(name: str, azimuth: float, distance_km: float, target=TARGET, **kw) -> Entry:
    lat, lon = geo.destination_point(target[0], target[1], azimuth, distance_km * 1e3)
    return entry(name, lat, lon, **kw)


# ============================================================================================
# geo additions


def test_initial_bearing_cardinal_and_against_finite_differences():
    assert geo.azimuth_deg(0.0, 0.0, 0.0, 10.0) == pytest.approx(90.0)
    assert geo.azimuth_deg(0.0, 0.0, 10.0, 0.0) == pytest.approx(0.0)
    assert geo.azimuth_deg(0.0, 0.0, 0.0, -10.0) == pytest.approx(270.0)
    assert geo.azimuth_deg(10.0, 0.0, 0.0, 0.0) == pytest.approx(180.0)
    # The bearing is the direction in which the distance to the far point falls fastest.
    rng = np.random.default_rng(1)
    for _ in range(20):
        lat1, lat2 = rng.uniform(-70, 70, 2)
        lon1, lon2 = rng.uniform(-180, 180, 2)
        h = 1e-4  # km
        east, north = km_per_degree(lat1, lon1)
        de, dn = h / east, h / north
        grad_e = (
            geo.distance_m(lat1, lon1 + de, lat2, lon2)
            - geo.distance_m(lat1, lon1 - de, lat2, lon2)
        ) / (2e3 * h)
        grad_n = (
            geo.distance_m(lat1 + dn, lon1, lat2, lon2)
            - geo.distance_m(lat1 - dn, lon1, lat2, lon2)
        ) / (2e3 * h)
        expected = math.degrees(math.atan2(-grad_e, -grad_n)) % 360
        got = geo.azimuth_deg(lat1, lon1, lat2, lon2)
        assert abs((got - expected + 180) % 360 - 180) < 1e-4


def test_destination_point_round_trip():
    rng = np.random.default_rng(2)
    lat0 = rng.uniform(-70, 70, 50)
    lon0 = rng.uniform(-180, 180, 50)
    az = rng.uniform(0, 360, 50)
    dist = rng.uniform(1e3, 5e6, 50)
    lat, lon = geo.destination_point(lat0, lon0, az, dist)
    np.testing.assert_allclose(geo.distance_m(lat0, lon0, lat, lon), dist, rtol=1e-9)
    back = np.asarray(geo.azimuth_deg(lat0, lon0, lat, lon))
    np.testing.assert_allclose((back - az + 180) % 360 - 180, 0, atol=1e-7)
    with pytest.raises(ValidationError):
        geo.destination_point(0.0, 0.0, 10.0, -1.0)
    with pytest.raises(ValidationError):
        geo.azimuth_deg(91.0, 0.0, 0.0, 0.0)


# ============================================================================================
# candidates

BAD = {
    "offline": {"offline": True},
    "password": {"password": True},
    "ext_api": {"ext_api": False},
    "frequency": {"min_frequency_hz": 100e3},
    "gnss": {"fixes_min": 0},
    "tdoa": {"tdoa_ch": -1},
    "time_limited": {"time_limited": True},
    "full": {"users": 4},
}


@pytest.mark.parametrize("reason", sorted(BAD))
def test_each_rejection_reason(reason):
    good = entry("rx", 50.0, 8.0)
    bad = replace(good, **BAD[reason])
    kept, rejected = planning.candidates([good], 77.5e3, duration_s=3600)
    assert kept == [good] and sum(rejected.values()) == 0
    kept, rejected = planning.candidates([bad], 77.5e3, duration_s=3600)
    assert kept == []
    assert rejected == {**dict.fromkeys(planning.REASONS, 0), reason: 1}


def test_stale_gnss_in_every_form_is_rejected():
    for kw in ({"has_gps": False}, {"gps_good": 0}, {"fixes_min": 0}):
        kept, rejected = planning.candidates([entry("rx", 50.0, 8.0, **kw)], 77.5e3)
        assert kept == [] and rejected["gnss"] == 1


def test_mixed_directory_counts_and_keeps_order():
    es = [entry(f"ok{i}", 50.0 + i, 8.0) for i in range(3)]
    es += [entry(f"bad_{r}", 40.0, 8.0 + 2 * i, **kw) for i, (r, kw) in enumerate(BAD.items())]
    es.insert(1, es.pop())
    kept, rejected = planning.candidates(es, 77.5e3, duration_s=3600)
    assert [e.name for e in kept] == ["ok0", "ok1", "ok2"]
    assert list(rejected) == list(planning.REASONS)
    assert rejected == {r: (0 if r == "same_place" else 1) for r in planning.REASONS}


def test_time_limited_only_for_long_jobs():
    rx = entry("rx", 50.0, 8.0, time_limited=True)
    assert planning.candidates([rx], 77.5e3)[0] == [rx]  # duration unknown
    assert planning.candidates([rx], 77.5e3, duration_s=60)[0] == [rx]
    assert planning.candidates([rx], 77.5e3, duration_s=600)[0] == [rx]
    assert planning.candidates([rx], 77.5e3, duration_s=601)[0] == []
    assert planning.candidates([rx], 77.5e3, duration_s=601, time_limited_max_s=900)[0] == [rx]


def test_tdoa_permission_only_for_localization():
    rx = entry("rx", 50.0, 8.0, tdoa_ch=-1)
    assert planning.candidates([rx], 77.5e3)[0] == []
    assert planning.candidates([rx], 77.5e3, localization=False)[0] == [rx]


def test_frequency_edges():
    rx = entry("rx", 50.0, 8.0, min_frequency_hz=10e3, max_frequency_hz=30e6)
    assert planning.candidates([rx], 10e3)[0] == [rx]
    assert planning.candidates([rx], 30e6)[0] == [rx]
    assert planning.candidates([rx], 9.9e3)[1]["frequency"] == 1
    assert planning.candidates([rx], 30.1e6)[1]["frequency"] == 1


def test_same_place_keeps_most_free_then_most_satellites_then_name():
    lat, lon = 50.0, 8.0
    near = geo.destination_point(lat, lon, 45.0, 600.0)  # 0.6 km away
    es = [
        entry("a", lat, lon, users=2, gps_good=12),  # 2 free
        entry("c", *near, users=1, gps_good=5),  # 3 free, 5 satellites
        entry("b", lat, lon, users=1, gps_good=9),  # 3 free, 9 satellites: kept
        entry("far", *geo.destination_point(lat, lon, 45.0, 5000.0)),
    ]
    kept, rejected = planning.candidates(es, 77.5e3)
    assert [e.name for e in kept] == ["b", "far"]
    assert rejected["same_place"] == 2
    # Equal channels and satellites: the name first in sort order, whatever the input order.
    twins = [entry("z", lat, lon), entry("m", lat, lon), entry("q", lat, lon)]
    for perm in itertools.permutations(twins):
        assert [e.name for e in planning.candidates(perm, 77.5e3)[0]] == ["m"]
    # A smaller radius keeps both receivers 0.6 km apart.
    kept, _ = planning.candidates(es, 77.5e3, same_place_km=0.1)
    assert [e.name for e in kept] == ["c", "b", "far"]


def test_candidates_validation():
    with pytest.raises(ValidationError, match="Entry"):
        planning.candidates([Receiver("rx", "h.example.org", 8073, 50.0, 8.0)], 77.5e3)
    with pytest.raises(ValidationError, match="frequency_hz"):
        planning.candidates([], -1.0)
    with pytest.raises(ValidationError, match="duration_s"):
        planning.candidates([], 77.5e3, duration_s=0)


# ============================================================================================
# The error model


def km_per_degree(lat, lon):
    """Local (east, north) km per degree on the ellipsoid, from geodesics 2e-6 degrees long."""
    e = geo.distance_m(lat, lon - 1e-6, lat, lon + 1e-6) / 2e-6 / 1e3
    n = geo.distance_m(lat - 1e-6, lon, lat + 1e-6, lon) / 2e-6 / 1e3
    return e, n


def independent_covariance(positions, target, sigma_ref, ref_km, min_km):
    """P = (H^T C^-1 H)^-1 with pair differences against the first receiver, unit vectors
    from finite differences of great-circle distances (no bearings)."""
    lat0, lon0 = target
    h = 1e-3  # km
    east, north = km_per_degree(lat0, lon0)
    de, dn = h / east, h / north
    rows, sig = [], []
    for lat, lon in positions:

        def d(la, lo, lat=lat, lon=lon):
            return geo.distance_m(la, lo, lat, lon) / 1e3

        rows.append(
            [
                (d(lat0, lon0 + de) - d(lat0, lon0 - de)) / (2 * h),
                (d(lat0 + dn, lon0) - d(lat0 - dn, lon0)) / (2 * h),
            ]
        )
        sig.append(sigma_ref * max(d(lat0, lon0), min_km) / ref_km)
    n = len(positions)
    u = np.array(rows)
    a = np.hstack([-np.ones((n - 1, 1)), np.eye(n - 1)])
    c = a @ np.diag(np.square(sig)) @ a.T
    hm = a @ u / C_KM_S
    return np.linalg.inv(hm.T @ np.linalg.solve(c, hm))


def median_radial_quad(cov):
    """Median of |x| for x ~ N(0, cov), by quadrature over x with the y-integral in closed
    form."""
    s = np.sqrt(np.linalg.eigvalsh(cov))
    s2, s1 = s

    def cdf(r):
        def f(x):
            return (
                math.exp(-0.5 * (x / s1) ** 2)
                / (s1 * math.sqrt(2 * math.pi))
                * special.erf(math.sqrt(max(r * r - x * x, 0.0)) / (s2 * math.sqrt(2)))
            )

        return integrate.quad(f, -r, r, epsabs=1e-13, epsrel=1e-12, limit=200)[0]

    return optimize.brentq(lambda r: cdf(r) - 0.5, 1e-6 * s1, 5 * s1, xtol=1e-14)


def test_symmetric_layout_matches_hand_derivation():
    # Four receivers 400 km N, E, S, W: u = (0, -1), (-1, 0), (0, 1), (1, 0) and equal
    # sigma. Sum(w g) = 0, so J = w/c^2 diag(2, 2) and P = (c sigma)^2 / 2 I.
    ring = [at(str(az), az, 400.0) for az in (0, 90, 180, 270)]
    p = planning.predicted_error(ring, *TARGET)
    sigma = planning.TIMING_SIGMA_S * 400.0 / planning.REFERENCE_DISTANCE_KM
    var = (C_KM_S * sigma) ** 2 / 2
    np.testing.assert_allclose(p.covariance_km2, var * np.eye(2), rtol=1e-9, atol=1e-12 * var)
    np.testing.assert_allclose(p.sigma_s, sigma, rtol=1e-12)
    # Circular Gaussian: the median radius is s sqrt(2 ln 2); the 95 % radius s sqrt(-2 ln 0.05).
    assert p.error_km == pytest.approx(math.sqrt(var * 2 * math.log(2)), rel=1e-9)
    assert p.major_km == pytest.approx(math.sqrt(var * -2 * math.log(0.05)), rel=1e-9)
    assert p.minor_km == pytest.approx(p.major_km, rel=1e-9)
    # 400 km at 10 us / 500 km: 8 us, c sigma = 2.398 km, s = 1.696 km, median 1.997 km.
    assert p.error_km == pytest.approx(1.9966, abs=1e-3)


def test_irregular_layout_matches_independent_computation():
    rng = np.random.default_rng(5)
    for trial in range(6):
        n = 3 + trial
        positions = [
            geo.destination_point(*TARGET, rng.uniform(0, 360), rng.uniform(50, 1500) * 1e3)
            for _ in range(n)
        ]
        kw = {"timing_sigma_s": 7e-6, "reference_distance_km": 300.0, "min_distance_km": 120.0}
        p = planning.predicted_error(positions, *TARGET, **kw)
        expected = independent_covariance(
            positions, TARGET, kw["timing_sigma_s"], kw["reference_distance_km"], 120.0
        )
        np.testing.assert_allclose(p.covariance_km2, expected, rtol=1e-5)
        assert p.error_km == pytest.approx(median_radial_quad(expected), rel=1e-5)
        vals, vecs = np.linalg.eigh(expected)
        assert p.major_km == pytest.approx(math.sqrt(vals[1] * -2 * math.log(0.05)), rel=1e-5)
        assert p.minor_km == pytest.approx(math.sqrt(vals[0] * -2 * math.log(0.05)), rel=1e-5)
        major_az = math.degrees(math.atan2(vecs[0, 1], vecs[1, 1])) % 180
        assert abs((p.azimuth_deg - major_az + 90) % 180 - 90) < 1e-3


def test_reference_receiver_does_not_matter_and_entries_equal_positions():
    rng = np.random.default_rng(6)
    es = [at(f"r{i}", rng.uniform(0, 360), rng.uniform(100, 900)) for i in range(5)]
    a = planning.predicted_error(es, *TARGET)
    b = planning.predicted_error(es[::-1], *TARGET)
    c = planning.predicted_error([(e.latitude, e.longitude) for e in es], *TARGET)
    d = planning.predicted_error([e.receiver() for e in es], *TARGET)
    for other in (b, c, d):
        assert other.error_km == pytest.approx(a.error_km, rel=1e-12)
        np.testing.assert_allclose(other.covariance_km2, a.covariance_km2, rtol=1e-10)


def test_median_radial_error_in_the_flat_limit_and_between():
    # Nearly collinear receivers (target on the line, one 0.1 km off it): s2 << s1, the
    # median radius tends to 0.6745 s1 (the median of |N(0, s1^2)|).
    line = [at("n", 0.0, 300.0), at("s", 180.0, 400.0), at("n2", 0.0, 700.0)]
    line.append(entry("e", *geo.destination_point(*TARGET, 90.0, 100.0)))
    p = planning.predicted_error(line, *TARGET)
    cov = p.covariance_km2
    vals = np.linalg.eigvalsh(cov)
    assert p.error_km == pytest.approx(median_radial_quad(cov), rel=1e-5)
    assert 0.6745 * math.sqrt(vals[1]) <= p.error_km < 1.1775 * math.sqrt(vals[1])
    # The common approximation 0.5887 (s1 + s2) is between 13 % low (flat) and 0 (round).
    approx = 0.5887 * (math.sqrt(vals[1]) + math.sqrt(vals[0]))
    assert 0.85 < approx / p.error_km < 1.01


def test_adding_a_receiver_never_increases_the_error():
    rng = np.random.default_rng(7)
    lat = np.linspace(40, 56, 9)
    lon = np.linspace(0, 20, 11)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    for _ in range(5):
        positions = [
            geo.destination_point(*TARGET, rng.uniform(0, 360), rng.uniform(80, 1200) * 1e3)
            for _ in range(8)
        ]
        previous = planning.predicted_error(positions[:3], la, lo)
        for k in range(4, 9):
            now = planning.predicted_error(positions[:k], la, lo)
            assert np.all(now.error_km <= previous.error_km * (1 + 1e-9))
            assert np.all(now.major_km <= previous.major_km * (1 + 1e-9))
            # P(k) <= P(k-1) in the matrix sense.
            diff = previous.covariance_km2 - now.covariance_km2
            finite = np.all(np.isfinite(diff), axis=(-2, -1))
            assert np.all(np.linalg.eigvalsh(diff[finite]) >= -1e-9 * np.abs(diff[finite]).max())
            previous = now


def test_fewer_than_three_receivers_is_infinite():
    two = [at("a", 0.0, 300.0), at("b", 120.0, 300.0)]
    p = planning.predicted_error(two, *TARGET)
    assert math.isinf(p.error_km) and math.isinf(p.major_km) and math.isnan(p.azimuth_deg)
    assert math.isinf(planning.predicted_error([], *TARGET).error_km)
    three = [*two, at("c", 240.0, 300.0)]
    assert math.isfinite(planning.predicted_error(three, *TARGET).error_km)


def test_receivers_at_one_azimuth_are_worse():
    ring = [at(str(az), az, 400.0) for az in (0, 90, 180, 270)]
    base = planning.predicted_error(ring, *TARGET).error_km
    moved = [ring[0], at("90", 0.0, 320.0), ring[2], ring[3]]  # east receiver moved north
    worse = planning.predicted_error(moved, *TARGET)
    # Worse although the moved receiver is nearer (320 km: less timing noise).
    assert worse.error_km > 1.15 * base
    assert worse.major_km > 1.3 * planning.predicted_error(ring, *TARGET).major_km
    # Only the west receiver still sees across: the major axis lies about east-west.
    assert abs(worse.azimuth_deg - 90.0) < 15.0


def test_collinear_receivers():
    # All on the meridian through the target: the east-west position is not determined.
    line = [at("n1", 0.0, 200.0), at("n2", 0.0, 500.0), at("s1", 180.0, 300.0)]
    p = planning.predicted_error(line, *TARGET)
    assert math.isinf(p.error_km) and math.isinf(p.major_km)
    assert math.isfinite(p.minor_km)
    assert p.azimuth_deg == pytest.approx(90.0, abs=1e-6)
    # All on one side, on a great circle through the target: nothing is determined.
    same_side = [at("n1", 0.0, 200.0), at("n2", 0.0, 500.0), at("n3", 0.0, 900.0)]
    assert math.isinf(planning.predicted_error(same_side, *TARGET).minor_km)
    # Receivers 1 km off the line: a huge error across it, a small one along it.
    ring = [at(str(az), az, 400.0) for az in (0, 90, 180, 270)]
    base = planning.predicted_error(ring, *TARGET)
    near_line = [at("n1", 0.2, 300.0), at("n2", 359.9, 600.0), at("s1", 180.1, 300.0)]
    q = planning.predicted_error(near_line, *TARGET)
    assert q.error_km > 100 * base.error_km
    assert q.major_km > 300 * q.minor_km
    assert abs(q.azimuth_deg - 90.0) < 1.0


def test_vectorised_over_points():
    es = [at("a", 10.0, 300.0), at("b", 130.0, 500.0), at("c", 250.0, 200.0), at("d", 60, 900)]
    lat = np.array([[45.0, 47.0, 49.0], [50.0, 52.0, 54.0]])
    lon = np.array([4.0, 9.0, 14.0])
    grid = planning.predicted_error(es, lat, lon)
    assert grid.error_km.shape == (2, 3)
    assert grid.covariance_km2.shape == (2, 3, 2, 2)
    assert grid.sigma_s.shape == (2, 3, 4)
    for i in range(2):
        for j in range(3):
            one = planning.predicted_error(es, lat[i, j], lon[j])
            assert isinstance(one.error_km, float)
            assert grid.error_km[i, j] == pytest.approx(one.error_km, rel=1e-12)
            assert grid.major_km[i, j] == pytest.approx(one.major_km, rel=1e-12)


def test_error_scales_with_timing_sigma_and_grows_with_distance():
    ring = [at(str(az), az, 400.0) for az in (0, 120, 240)]
    a = planning.predicted_error(ring, *TARGET)
    b = planning.predicted_error(ring, *TARGET, timing_sigma_s=2 * planning.TIMING_SIGMA_S)
    assert b.error_km == pytest.approx(2 * a.error_km, rel=1e-12)
    far = [at(str(az), az, 800.0) for az in (0, 120, 240)]
    assert planning.predicted_error(far, *TARGET).error_km == pytest.approx(2 * a.error_km)
    # Below the floor distance the noise stops shrinking.
    close = [at(str(az), az, 50.0) for az in (0, 120, 240)]
    closer = [at(str(az), az, 20.0) for az in (0, 120, 240)]
    pc = planning.predicted_error(close, *TARGET)
    np.testing.assert_allclose(pc.sigma_s, planning.TIMING_SIGMA_S * 100 / 500, rtol=1e-12)
    assert planning.predicted_error(closer, *TARGET).error_km == pytest.approx(pc.error_km)


def test_predicted_error_validation():
    ring = [at(str(az), az, 400.0) for az in (0, 120, 240)]
    with pytest.raises(ValidationError):
        planning.predicted_error(ring, 95.0, 0.0)
    with pytest.raises(ValidationError):
        planning.predicted_error([(95.0, 0.0), (0, 0), (1, 1)], 45.0, 0.0)
    with pytest.raises(ValidationError, match="timing_sigma_s"):
        planning.predicted_error(ring, *TARGET, timing_sigma_s=0.0)
    with pytest.raises(ValidationError, match="confidence"):
        planning.predicted_error(ring, *TARGET, confidence=1.0)
    with pytest.raises(ValidationError):
        planning.predicted_error("abc", *TARGET)


# ============================================================================================
# Azimuth gap


def test_azimuth_gap_and_surrounds():
    ring = [at(str(az), az, 400.0) for az in (0, 90, 180, 270)]
    assert planning.azimuth_gap_deg(TARGET, ring) == pytest.approx(90.0, abs=1e-6)
    assert planning.surrounds(TARGET, ring)
    side = [at(str(az), az, 400.0) for az in (0, 45, 90)]
    assert planning.azimuth_gap_deg(TARGET, side) == pytest.approx(270.0, abs=1e-6)
    assert not planning.surrounds(TARGET, side)
    wrap = [at(str(az), az, 400.0) for az in (350, 10, 165)]
    assert planning.azimuth_gap_deg(TARGET, wrap) == pytest.approx(185.0, abs=1e-6)
    assert not planning.surrounds(TARGET, wrap)
    wrap = [at(str(az), az, 400.0) for az in (350, 10, 175)]
    assert planning.azimuth_gap_deg(TARGET, wrap) == pytest.approx(175.0, abs=1e-6)
    assert planning.surrounds(TARGET, wrap)
    assert planning.azimuth_gap_deg(TARGET, ring[:1]) == 360.0
    assert planning.azimuth_gap_deg(TARGET, []) == 360.0
    # A receiver at the target has no direction.
    assert planning.azimuth_gap_deg(TARGET, [*side, TARGET]) == pytest.approx(270.0, abs=1e-6)


# ============================================================================================
# select


def lopsided_network() -> list[Entry]:
    """A dense cluster 150-300 km north-east of the target, sparse receivers elsewhere."""
    rng = np.random.default_rng(11)
    cluster = [at(f"cluster{i:02d}", rng.uniform(20, 70), rng.uniform(150, 300)) for i in range(12)]
    sparse = [
        at("south", 170.0, 650.0),
        at("southwest", 220.0, 800.0),
        at("west", 275.0, 700.0),
        at("northwest", 320.0, 900.0),
        at("east", 110.0, 1000.0),
    ]
    return cluster + sparse


def test_select_surrounds_rather_than_nearest_cluster():
    network = lopsided_network()
    sel = planning.select(network, 77.5e3, near=TARGET, count=6)
    kept, _ = planning.candidates(network, 77.5e3)
    nearest = sorted(kept, key=lambda e: geo.distance_m(*TARGET, e.latitude, e.longitude))[:6]
    baseline = planning.predicted_error(nearest, *TARGET).error_km
    assert planning.azimuth_gap_deg(TARGET, nearest) > 180.0
    assert sel.azimuth_gap_deg < 180.0
    assert sel.azimuth_gap_deg == pytest.approx(planning.azimuth_gap_deg(TARGET, sel.entries))
    assert sel.predicted_error_km < 0.5 * baseline
    assert sel.predicted_error_km == pytest.approx(
        planning.predicted_error(sel.entries, *TARGET).error_km, rel=1e-12
    )
    assert len(sel.entries) == 6
    assert len({e.name for e in sel.entries}) == 6
    assert {e.name for e in sel.entries} & {"south", "west", "southwest", "northwest"}
    assert sel.warnings == ()
    # Nearest first.
    d = [geo.distance_m(*TARGET, e.latitude, e.longitude) for e in sel.entries]
    assert d == sorted(d)
    print(
        f"\nnearest 6: {baseline:.3f} km; selected {[e.name for e in sel.entries]}: "
        f"{sel.predicted_error_km:.3f} km, gap {sel.azimuth_gap_deg:.0f} deg"
    )


def test_select_is_deterministic_whatever_the_input_order():
    network = lopsided_network()
    first = planning.select(network, 77.5e3, near=TARGET, count=5)
    rng = np.random.default_rng(3)
    for _ in range(3):
        shuffled = [network[i] for i in rng.permutation(len(network))]
        again = planning.select(shuffled, 77.5e3, near=TARGET, count=5)
        assert [e.name for e in again.entries] == [e.name for e in first.entries]
        assert again.predicted_error_km == first.predicted_error_km


@pytest.mark.parametrize("count", [3, 4, 5])
def test_select_finds_the_best_set_of_a_small_network(count):
    rng = np.random.default_rng(20 + count)
    network = [at(f"r{i}", rng.uniform(0, 360), rng.uniform(60, 1500)) for i in range(10)]
    sel = planning.select(network, 77.5e3, near=TARGET, count=count)
    best = min(
        planning.predicted_error(subset, *TARGET).error_km
        for subset in itertools.combinations(network, count)
    )
    assert sel.predicted_error_km == pytest.approx(best, rel=1e-9)


def test_select_over_an_area():
    network = lopsided_network()
    box = (46.0, 50.0, 7.0, 13.0)
    sel = planning.select(network, 77.5e3, area=box, count=6)
    assert sel.area == box
    assert sel.target == pytest.approx((48.0, 10.0))
    lat, lon = np.meshgrid(np.linspace(46, 50, 7), np.linspace(7, 13, 7), indexing="ij")
    grid = planning.predicted_error(sel.entries, lat, lon).error_km
    assert sel.predicted_error_km == pytest.approx(grid.mean(), rel=1e-12)
    assert sel.predicted_error_max_km == pytest.approx(grid.max(), rel=1e-12)
    assert sel.predicted_error_max_km > sel.predicted_error_km
    # Better over the area, on average, than the set chosen for its centre alone.
    centre = planning.select(network, 77.5e3, near=sel.target, count=6)
    centre_mean = planning.predicted_error(centre.entries, lat, lon).error_km.mean()
    assert sel.predicted_error_km <= centre_mean * (1 + 1e-12)
    lats, lons, err = sel.error_grid((44.0, 52.0), (5.0, 15.0), n=25)
    assert lats.shape == (25,) and lons.shape == (25,) and err.shape == (25, 25)
    assert err[12, 12] == pytest.approx(
        planning.predicted_error(sel.entries, lats[12], lons[12]).error_km
    )


def test_select_drops_far_receivers_and_reports_rejections():
    network = [*lopsided_network(), at("too_far", 200.0, 3000.0), at("off", 0, 300, offline=True)]
    sel = planning.select(network, 77.5e3, near=TARGET, count=6, max_distance_km=2500.0)
    assert sel.rejected["too_far"] == 1
    assert sel.rejected["offline"] == 1
    assert "too_far" not in {e.name for e in sel.candidates}
    assert len(sel.candidates) == len(lopsided_network())


def test_select_with_few_candidates():
    three = [at("a", 0.0, 300.0), at("b", 120.0, 300.0), at("c", 240.0, 300.0)]
    sel = planning.select([*three, at("d", 0, 400, users=4)], 77.5e3, near=TARGET, count=6)
    assert len(sel.entries) == 3
    assert any("only 3" in w for w in sel.warnings)
    with pytest.raises(ValidationError, match=r"only 2 receiver.*full 1"):
        planning.select([*three[:2], at("d", 0, 400, users=4)], 77.5e3, near=TARGET)
    with pytest.raises(ValidationError, match="too_far 1"):
        planning.select([*three[:2], at("e", 0, 900)], 77.5e3, near=TARGET, max_distance_km=500.0)


def test_select_warns_when_the_network_cannot_surround():
    side = [at(f"r{az}", az, 300.0 + az) for az in (10, 30, 50, 70, 90)]
    sel = planning.select(side, 77.5e3, near=TARGET, count=4)
    assert sel.azimuth_gap_deg > 180.0
    assert any("do not surround" in w and "no candidate" in w for w in sel.warnings)


def test_select_validation():
    network = lopsided_network()
    with pytest.raises(ValidationError, match="exactly one"):
        planning.select(network, 77.5e3)
    with pytest.raises(ValidationError, match="exactly one"):
        planning.select(network, 77.5e3, near=TARGET, area=(46, 50, 7, 13))
    with pytest.raises(ValidationError, match="near"):
        planning.select(network, 77.5e3, near=(91.0, 0.0))
    with pytest.raises(ValidationError, match="near"):
        planning.select(network, 77.5e3, near="Frankfurt")
    with pytest.raises(ValidationError, match="area"):
        planning.select(network, 77.5e3, area=(50, 46, 7, 13))
    with pytest.raises(ValidationError, match="area"):
        planning.select(network, 77.5e3, area=(46, 50, 7, 190))
    with pytest.raises(ValidationError, match="count"):
        planning.select(network, 77.5e3, near=TARGET, count=2)
    with pytest.raises(ValidationError, match="frequency_hz"):
        planning.select(network, 0.0, near=TARGET)
    sel = planning.select(network, 77.5e3, near=TARGET)
    with pytest.raises(ValidationError):
        sel.error_grid((44.0, 52.0), (5.0, 15.0), n=1)
    with pytest.raises(ValidationError):
        sel.error_grid((52.0, 44.0), (5.0, 15.0))


def test_selection_outputs():
    sel = planning.select(lopsided_network(), 77.5e3, near=TARGET, count=6)
    d = sel.to_dict()
    text = json.dumps(d, allow_nan=False)
    assert json.loads(text) == d
    assert [r["name"] for r in d["receivers"]] == [e.name for e in sel.entries]
    keys = {
        "name", "host", "port", "tls", "latitude", "longitude", "distance_km", "azimuth_deg",
        "free_channels", "gps_good", "fixes_min", "tdoa_ch",
    }  # fmt: skip
    for row, e in zip(d["receivers"], sel.entries, strict=True):
        assert keys <= set(row)
        assert row["host"] == e.host and row["port"] == e.port and row["free_channels"] == 3
        assert row["distance_km"] == pytest.approx(
            geo.distance_m(*TARGET, e.latitude, e.longitude) / 1e3
        )
        assert row["azimuth_deg"] == pytest.approx(
            geo.azimuth_deg(*TARGET, e.latitude, e.longitude)
        )
    assert d["predicted_error_km"] == pytest.approx(sel.predicted_error_km)
    assert d["predicted_error_max_km"] == pytest.approx(sel.predicted_error_max_km)
    assert d["target"] == list(TARGET)
    assert d["rejected"] == sel.rejected
    assert d["timing_sigma_s"] == planning.TIMING_SIGMA_S
    assert all(math.isfinite(x) for x in (d["predicted_error_km"], *d["ellipse_km"]))
    frame = sel.frame()
    assert list(frame["name"]) == [e.name for e in sel.entries]
    assert frame.loc[0, "distance_km"] == pytest.approx(d["receivers"][0]["distance_km"])
    assert {"distance_km", "azimuth_deg", "free_channels"} <= set(frame.columns)
    rx = sel.receivers()
    assert all(isinstance(r, Receiver) for r in rx)
    assert [(r.name, r.host, r.port) for r in rx] == [(e.name, e.host, e.port) for e in sel.entries]
    major, minor = sel.ellipse_km
    pred = planning.predicted_error(sel.entries, *TARGET)
    assert (major, minor) == pytest.approx((pred.major_km, pred.minor_km))


def test_select_performance_on_a_thousand_entries():
    rng = np.random.default_rng(30)
    network = [
        entry(f"rx{i:04d}", rng.uniform(35, 65), rng.uniform(-10, 30), users=int(rng.integers(5)))
        for i in range(1000)
    ]
    t0 = time.perf_counter()
    sel = planning.select(network, 77.5e3, near=(50.0152, 9.0112), count=6)
    t_near = time.perf_counter() - t0
    t0 = time.perf_counter()
    area = planning.select(network, 77.5e3, area=(46.0, 54.0, 4.0, 14.0), count=6)
    t_area = time.perf_counter() - t0
    assert sel.azimuth_gap_deg < 180.0 and area.azimuth_gap_deg < 180.0
    assert all(e.free_channels > 0 for e in sel.entries)
    print(f"\n1000 synthetic entries: select near {t_near:.3f} s, over an area {t_area:.3f} s")


# ============================================================================================
# The real directory snapshot


def test_select_on_the_real_snapshot():
    entries = directory.load(SNAPSHOT)
    t0 = time.perf_counter()
    sel = planning.select(entries, 77500, near=(50.0152, 9.0112), count=6)
    elapsed = time.perf_counter() - t0
    assert len(sel.entries) == 6
    for e in sel.entries:
        assert e.covers(77500) and e.fresh_gnss and e.free_channels > 0 and e.allows_tdoa
        assert not (e.offline or e.password or not e.ext_api)
    for a, b in itertools.combinations(sel.entries, 2):
        assert geo.distance_m(a.latitude, a.longitude, b.latitude, b.longitude) > 1e3
    assert sel.azimuth_gap_deg < 180.0
    assert math.isfinite(sel.predicted_error_km)
    frame = sel.frame()
    print(f"\n{len(entries)} entries, {len(sel.candidates)} candidates, rejected {sel.rejected}")
    print(frame[["name", "distance_km", "azimuth_deg", "free_channels"]].round(1).to_string())
    print(
        f"predicted error {sel.predicted_error_km:.3f} km, 95 % ellipse "
        f"{sel.ellipse_km[0]:.2f} x {sel.ellipse_km[1]:.2f} km, azimuth gap "
        f"{sel.azimuth_gap_deg:.0f} deg, select took {elapsed:.3f} s"
    )
