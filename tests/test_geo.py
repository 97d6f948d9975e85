import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from heimdall_lab.errors import ValidationError
from heimdall_lab.geo import (
    EARTH_RADIUS_M,
    SPEED_OF_LIGHT,
    azimuth_deg,
    destination_point,
    distance_m,
)
from heimdall_lab.propagation import Propagation, default_ground_range_km, sky_path_m

lats = st.floats(-90, 90, allow_nan=False)
lons = st.floats(-180, 180, allow_nan=False)

#: WGS84: a = 6 378 137 m, quarter meridian 10 001 965.729 m (published).
EQUATOR_DEGREE_M = 6_378_137.0 * math.pi / 180.0
QUARTER_MERIDIAN_M = 10_001_965.729
HALF_MERIDIAN_M = 2 * QUARTER_MERIDIAN_M


def test_constants():
    assert EARTH_RADIUS_M == 6_371_008.8
    assert SPEED_OF_LIGHT == 299_792_458.0


def test_wgs84_reference_lengths():
    assert distance_m(0.0, 0.0, 0.0, 1.0) == pytest.approx(EQUATOR_DEGREE_M, abs=1e-6)
    assert distance_m(0.0, 0.0, 90.0, 0.0) == pytest.approx(QUARTER_MERIDIAN_M, abs=1e-3)
    assert distance_m(47.3, 8.5, 47.3, 8.5) == 0.0
    assert distance_m(10.0, 180.0, 10.0, -180.0) == pytest.approx(0.0, abs=1e-6)
    assert distance_m(90.0, 0.0, -90.0, 0.0) == pytest.approx(HALF_MERIDIAN_M, abs=1e-3)


def _sphere_m(lat1, lon1, lat2, lon2):
    p1, p2, dl = math.radians(lat1), math.radians(lat2), math.radians(lon2 - lon1)
    c = math.sin(p1) * math.sin(p2) + math.cos(p1) * math.cos(p2) * math.cos(dl)
    return EARTH_RADIUS_M * math.acos(min(1.0, c))


def test_the_ellipsoid_differs_from_the_sphere_on_the_dcf77_baselines():
    """Why geodesics: on the 2017 recordings' paths the sphere is off by about a kilometre."""
    dcf77 = (50.0152, 9.0112)
    sites = [(53.67, 7.28), (45.78, 0.61), (47.17, 8.43)]
    diffs = [abs(distance_m(*dcf77, *s) - _sphere_m(*dcf77, *s)) for s in sites]
    assert max(diffs) > 500.0  # metres: 1.7 us of delay
    for s in sites:  # both agree to 0.5 %
        assert distance_m(*dcf77, *s) == pytest.approx(_sphere_m(*dcf77, *s), rel=5e-3)


def test_scalar_returns_float_and_arrays_broadcast():
    assert isinstance(distance_m(1.0, 2.0, 3.0, 4.0), float)
    lat2 = np.array([[0.0], [10.0], [20.0]])
    lon2 = np.array([0.0, 5.0, 10.0, 15.0])
    d = distance_m(0.0, 0.0, lat2, lon2)
    assert isinstance(d, np.ndarray)
    assert d.shape == (3, 4)
    for i in range(3):
        for j in range(4):
            assert d[i, j] == distance_m(0.0, 0.0, float(lat2[i, 0]), float(lon2[j]))


def test_azimuth_and_destination_round_trip():
    assert azimuth_deg(0.0, 0.0, 0.0, 10.0) == pytest.approx(90.0, abs=1e-9)
    assert azimuth_deg(0.0, 0.0, 10.0, 0.0) == pytest.approx(0.0, abs=1e-9)
    assert azimuth_deg(5.0, 5.0, 5.0, 5.0) == 0.0
    rng = np.random.default_rng(3)
    lat0, lon0 = rng.uniform(-60, 60, 50), rng.uniform(-180, 180, 50)
    az, dist = rng.uniform(0, 360, 50), rng.uniform(0, 3e6, 50)
    lat1, lon1 = destination_point(lat0, lon0, az, dist)
    np.testing.assert_allclose(distance_m(lat0, lon0, lat1, lon1), dist, atol=1e-6)
    moved = dist > 1.0
    back = np.asarray(azimuth_deg(lat0, lon0, lat1, lon1))[moved]
    np.testing.assert_allclose(np.cos(np.radians(back - az[moved])), 1.0, atol=1e-9)
    with pytest.raises(ValidationError):
        destination_point(0.0, 0.0, 10.0, -1.0)


def test_ground_wave_delay_is_distance_over_the_wave_speed():
    d = distance_m(50.0, 8.5, np.array([47.3, 52.5]), np.array([8.5, -2.4]))
    np.testing.assert_allclose(
        Propagation().between(50.0, 8.5, [47.3, 52.5], [8.5, -2.4]), d / SPEED_OF_LIGHT, rtol=1e-15
    )
    slow = Propagation(velocity_factor=0.999)
    assert slow.delay_s(1e6) == pytest.approx(1e6 / (0.999 * SPEED_OF_LIGHT), rel=1e-15)
    assert isinstance(slow.delay_s(1e6), float)


def test_sky_wave_path_geometry():
    h = 70e3
    assert sky_path_m(0.0, h) == pytest.approx(2 * h, rel=1e-12)
    # flat-Earth limit for short paths: 2 sqrt((d/2)^2 + h^2), the curvature adds a little
    d = 100e3
    flat = 2 * math.hypot(d / 2, h)
    assert flat < sky_path_m(d, h) < flat * 1.005
    prop = Propagation(mode="sky", layer_height_km=70)
    excess = np.asarray(prop.sky_excess_s(np.array([100e3, 300e3, 800e3, 2000e3])))
    assert np.all(np.diff(excess) < 0) and np.all(excess > 0)  # later, less so far away
    # 320 km at 70 km: about 100 us later than the ground wave
    assert 80e-6 < prop.sky_excess_s(320e3) < 110e-6
    assert prop.delay_s(320e3) == pytest.approx(sky_path_m(320e3, h) / SPEED_OF_LIGHT)


def test_auto_mode_switches_at_the_ground_range():
    prop = Propagation(mode="auto", ground_range_km=500)
    d = np.array([100e3, 499e3, 501e3, 3000e3])
    assert list(prop.uses_sky(d)) == [False, False, True, True]
    assert default_ground_range_km(77.5e3) > default_ground_range_km(1e6)
    assert default_ground_range_km(1e6) > default_ground_range_km(10e6)
    assert Propagation(mode="auto").uses_sky(60e3, 10e6)
    assert not Propagation(mode="auto").uses_sky(60e3, 77.5e3)
    assert "WGS84" in prop.describe() and "500 km" in prop.describe()


def test_the_pull_of_a_mixed_sky_wave_is_stated_for_ground_wave_receivers_in_range():
    prop = Propagation(mode="auto", ground_range_km=1000, sky_ratio=0.2)
    d = np.array([75e3, 400e3, 999e3, 1200e3])
    sigma = prop.sky_pull_sigma_s(d)
    expected = 0.2 * np.asarray(prop.sky_excess_s(d[:3])) / math.sqrt(2)
    assert np.allclose(sigma[:3], expected, rtol=1e-12) and sigma[3] == 0.0  # sky wave beyond
    # at 400 km and 70 km: the excess is about 80 us, the stated pull about 11 us
    assert 75e-6 < prop.sky_excess_s(400e3) < 90e-6 and 10e-6 < sigma[1] < 13e-6
    assert sigma[0] > sigma[1] > sigma[2]  # nearer, the sky wave's detour is the longer
    assert Propagation(sky_ratio=0).sky_pull_sigma_s(400e3) == 0.0  # paths stated clean
    assert Propagation(ground_range_km=300).sky_pull_sigma_s(400e3) == 0.0
    assert isinstance(prop.sky_pull_sigma_s(400e3), float)
    # from positions: over the WGS84 geodesic
    rx = destination_point(50.0, 8.0, 90.0, 400e3)
    assert prop.sky_pull_between(50.0, 8.0, *rx) == pytest.approx(sigma[1], rel=1e-9)


@pytest.mark.parametrize(
    "value",
    [
        "radio",
        {"mode": "ground", "speed": 1},
        {"velocity_factor": 1.2},
        {"layer_height_km": 0},
        {"layer_height_km": float("nan")},
        {"sky_ratio": -0.1},
        {"sky_ratio": 1.0},
        {"sky_ratio": "some"},
        3,
    ],
)
def test_bad_propagation_raises(value):
    with pytest.raises(ValidationError):
        Propagation.of(value)


def test_propagation_of_accepts_names_dicts_and_itself():
    p = Propagation.of({"mode": "sky", "layer_height_km": 90, "sky_ratio": 0.1})
    assert Propagation.of(p) is p and p.layer_height_km == 90 and p.sky_ratio == 0.1
    assert Propagation.of("auto").mode == "auto" and Propagation.of(None) == Propagation()
    assert Propagation.of(p.to_dict()) == p


@pytest.mark.parametrize(
    "args",
    [
        (float("nan"), 0.0, 0.0, 0.0),
        (0.0, float("inf"), 0.0, 0.0),
        (91.0, 0.0, 0.0, 0.0),
        (0.0, 0.0, -90.5, 0.0),
        (0.0, 181.0, 0.0, 0.0),
        (0.0, 0.0, 0.0, np.array([0.0, -200.0])),
        ("north", 0.0, 0.0, 0.0),
    ],
)
def test_bad_coordinates_raise(args):
    with pytest.raises(ValidationError):
        distance_m(*args)
    with pytest.raises(ValidationError):
        azimuth_deg(*args)


@given(lats, lons, lats, lons)
def test_symmetric_and_bounded(a, b, c, d):
    d1 = distance_m(a, b, c, d)
    d2 = distance_m(c, d, a, b)
    assert d1 == pytest.approx(d2, abs=1e-6)
    assert 0.0 <= d1 <= HALF_MERIDIAN_M * (1 + 1e-9)


@given(lats, lons, lats, lons, lats, lons)
def test_triangle_inequality(a, b, c, d, e, f):
    ab = distance_m(a, b, c, d)
    bc = distance_m(c, d, e, f)
    ac = distance_m(a, b, e, f)
    assert ac <= ab + bc + 1e-3


@given(lats, lons, st.floats(-180, 180, allow_nan=False))
def test_longitude_shift_invariance(lat, lon, shift):
    # rotating both points about the polar axis keeps the distance
    lon2 = ((lon + 37.0 + 180.0) % 360.0) - 180.0
    lon_s = ((lon + shift + 180.0) % 360.0) - 180.0
    lon2_s = ((lon2 + shift + 180.0) % 360.0) - 180.0
    assert distance_m(lat, lon, -lat / 2, lon2) == pytest.approx(
        distance_m(lat, lon_s, -lat / 2, lon2_s), abs=1e-3
    )
