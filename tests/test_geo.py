import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from heimdall_lab.errors import ValidationError
from heimdall_lab.geo import (
    EARTH_RADIUS_M,
    SPEED_OF_LIGHT,
    great_circle_m,
    propagation_delay_s,
)

lats = st.floats(-90, 90, allow_nan=False)
lons = st.floats(-180, 180, allow_nan=False)


def test_constants():
    assert EARTH_RADIUS_M == 6_371_008.8
    assert SPEED_OF_LIGHT == 299_792_458.0


def test_paris_london():
    # Published great-circle distance Paris (Notre-Dame area) - London (Charing Cross): ~343.5 km
    d = great_circle_m(48.8566, 2.3522, 51.5074, -0.1278)
    assert d == pytest.approx(343.5e3, rel=0.005)


def test_quarter_meridian_equator_degree_and_zero():
    assert great_circle_m(0.0, 0.0, 90.0, 0.0) == pytest.approx(
        math.pi / 2 * 6_371_008.8, rel=1e-12
    )
    assert great_circle_m(0.0, 10.0, 0.0, 11.0) == pytest.approx(
        6_371_008.8 * math.pi / 180, rel=1e-12
    )
    assert great_circle_m(47.3, 8.5, 47.3, 8.5) == 0.0
    # the same point written with longitude +180 and -180
    assert great_circle_m(10.0, 180.0, 10.0, -180.0) == pytest.approx(0.0, abs=1e-6)


def test_antipodes():
    assert great_circle_m(10.0, 20.0, -10.0, -160.0) == pytest.approx(
        math.pi * 6_371_008.8, rel=1e-12
    )
    assert great_circle_m(90.0, 0.0, -90.0, 0.0) == pytest.approx(math.pi * 6_371_008.8, rel=1e-12)


def test_scalar_returns_float_and_arrays_broadcast():
    assert isinstance(great_circle_m(1.0, 2.0, 3.0, 4.0), float)
    lat2 = np.array([[0.0], [10.0], [20.0]])
    lon2 = np.array([0.0, 5.0, 10.0, 15.0])
    d = great_circle_m(0.0, 0.0, lat2, lon2)
    assert isinstance(d, np.ndarray)
    assert d.shape == (3, 4)
    for i in range(3):
        for j in range(4):
            assert d[i, j] == great_circle_m(0.0, 0.0, float(lat2[i, 0]), float(lon2[j]))


def test_delay_is_distance_over_c():
    # 299.792458 km along the equator takes exactly 1 ms at c
    dlon = math.degrees(299_792.458 / 6_371_008.8)
    assert propagation_delay_s(0.0, 0.0, 0.0, dlon) == pytest.approx(1e-3, rel=1e-12)
    assert isinstance(propagation_delay_s(0.0, 0.0, 0.0, dlon), float)
    delays = propagation_delay_s(50.0, 8.5, np.array([47.3, 52.5]), np.array([8.5, -2.4]))
    assert delays.shape == (2,)
    np.testing.assert_allclose(
        delays,
        great_circle_m(50.0, 8.5, np.array([47.3, 52.5]), np.array([8.5, -2.4])) / 299_792_458.0,
    )


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
        great_circle_m(*args)
    with pytest.raises(ValidationError):
        propagation_delay_s(*args)


@given(lats, lons, lats, lons)
def test_symmetric_and_bounded(a, b, c, d):
    d1 = great_circle_m(a, b, c, d)
    d2 = great_circle_m(c, d, a, b)
    assert d1 == pytest.approx(d2, abs=1e-6)
    assert 0.0 <= d1 <= math.pi * EARTH_RADIUS_M * (1 + 1e-12)


@given(lats, lons, lats, lons, lats, lons)
def test_triangle_inequality(a, b, c, d, e, f):
    ab = great_circle_m(a, b, c, d)
    bc = great_circle_m(c, d, e, f)
    ac = great_circle_m(a, b, e, f)
    assert ac <= ab + bc + 1e-3


@given(lats, lons, st.floats(-180, 180, allow_nan=False))
def test_longitude_shift_invariance(lat, lon, shift):
    # rotating both points about the polar axis keeps the distance
    lon2 = ((lon + 37.0 + 180.0) % 360.0) - 180.0
    lon_s = ((lon + shift + 180.0) % 360.0) - 180.0
    lon2_s = ((lon2 + shift + 180.0) % 360.0) - 180.0
    assert great_circle_m(lat, lon, -lat / 2, lon2) == pytest.approx(
        great_circle_m(lat, lon_s, -lat / 2, lon2_s), abs=1e-3
    )
