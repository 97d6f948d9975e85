"""Geometry on the WGS84 ellipsoid: geodesic distances, azimuths and destinations.

Every distance and azimuth in heimdall_lab is a geodesic on the WGS84 ellipsoid, computed
by :class:`pyproj.Geod` (C. F. F. Karney's algorithms, accurate to nanometres). The
localizer's model, the emulator's synthesis and the planner all use these functions, so a
synthetic scene and its localization agree exactly.

A sphere would be simpler but is wrong by up to about 0.5 %: on the 300-800 km baselines of
the DCF77 recordings, great circles of the mean radius differ from the geodesics by up to
1.46 km, 3.7-4.8 us of delay, several times a good pair's timing error.

:data:`EARTH_RADIUS_M` (the mean radius) remains for what needs only a local scale: the
conversion of small offsets to degrees, and the curvature in the sky-wave path geometry
(:mod:`heimdall_lab.propagation`).

All functions take degrees, broadcast like NumPy ufuncs, and return a ``float`` when every
argument is a scalar and a :class:`numpy.ndarray` otherwise.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from pyproj import Geod

from heimdall_lab.errors import ValidationError

#: Mean Earth radius in metres (IUGG, R1 = (2a + b) / 3 of WGS84).
EARTH_RADIUS_M: float = 6_371_008.8
#: Speed of light in vacuum, m/s (exact by definition of the metre).
SPEED_OF_LIGHT: float = 299_792_458.0
#: The ellipsoid every geodesic is computed on.
ELLIPSOID = "WGS84"

_GEOD = Geod(ellps=ELLIPSOID)

__all__ = [
    "EARTH_RADIUS_M",
    "ELLIPSOID",
    "SPEED_OF_LIGHT",
    "azimuth_deg",
    "check_position",
    "destination_point",
    "distance_m",
]


def check_position(latitude: ArrayLike, longitude: ArrayLike, what: str = "position") -> None:
    """Raise unless every latitude/longitude is finite and on the Earth.

    Parameters
    ----------
    latitude : array_like
        Latitude(s) in degrees; must lie in [-90, 90].
    longitude : array_like
        Longitude(s) in degrees; must lie in [-180, 180].
    what : str, optional
        What the position belongs to, for the error message.

    Raises
    ------
    ValidationError
        If a value is not a real number, not finite, or out of range.
    """
    try:
        lat = np.asarray(latitude, dtype=np.float64)
        lon = np.asarray(longitude, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValidationError(
            f"{what}: latitude/longitude must be numbers in degrees, got {latitude!r}, "
            f"{longitude!r}"
        ) from exc
    if not (np.all(np.isfinite(lat)) and np.all(np.isfinite(lon))):
        raise ValidationError(f"{what}: latitude/longitude must be finite, got {lat}, {lon}")
    if np.any(np.abs(lat) > 90.0):
        raise ValidationError(f"{what}: latitude {lat} is outside [-90, 90] degrees")
    if np.any(np.abs(lon) > 180.0):
        raise ValidationError(f"{what}: longitude {lon} is outside [-180, 180] degrees")


def _scalar_or_array(value: np.ndarray, *args: ArrayLike) -> np.ndarray | float:
    if all(np.ndim(a) == 0 for a in args):
        return float(np.asarray(value).reshape(()))
    return value


def _inverse(
    lat1: ArrayLike, lon1: ArrayLike, lat2: ArrayLike, lon2: ArrayLike
) -> tuple[np.ndarray, np.ndarray]:
    """(forward azimuth at point 1, distance), broadcast, from the WGS84 inverse problem."""
    check_position(lat1, lon1, "first point")
    check_position(lat2, lon2, "second point")
    la1, lo1, la2, lo2 = np.broadcast_arrays(
        *(np.asarray(x, dtype=np.float64) for x in (lat1, lon1, lat2, lon2))
    )
    shape = la1.shape
    az, _, dist = _GEOD.inv(lo1.ravel(), la1.ravel(), lo2.ravel(), la2.ravel())
    return np.asarray(az, dtype=np.float64).reshape(shape), np.asarray(
        dist, dtype=np.float64
    ).reshape(shape)


def distance_m(
    lat1: ArrayLike, lon1: ArrayLike, lat2: ArrayLike, lon2: ArrayLike
) -> np.ndarray | float:
    """Geodesic distance on the WGS84 ellipsoid.

    Parameters
    ----------
    lat1, lon1 : array_like
        First point(s), degrees.
    lat2, lon2 : array_like
        Second point(s), degrees; broadcast against the first.

    Returns
    -------
    float or numpy.ndarray
        Distance in metres; a float if all inputs are scalars.

    Raises
    ------
    ValidationError
        If a coordinate is not finite or is off the Earth (|lat| > 90 or |lon| > 180).

    Examples
    --------
    >>> round(distance_m(0.0, 0.0, 0.0, 1.0), 3)  # one degree along the equator
    111319.491
    """
    _, d = _inverse(lat1, lon1, lat2, lon2)
    return _scalar_or_array(d, lat1, lon1, lat2, lon2)


def azimuth_deg(
    lat1: ArrayLike, lon1: ArrayLike, lat2: ArrayLike, lon2: ArrayLike
) -> np.ndarray | float:
    """Azimuth at the first point of the geodesic towards the second.

    Parameters
    ----------
    lat1, lon1 : array_like
        Where the azimuth is taken, degrees.
    lat2, lon2 : array_like
        Towards which point, degrees; broadcast against the first.

    Returns
    -------
    float or numpy.ndarray
        Degrees clockwise from true north, in [0, 360); 0 for coincident points.

    Raises
    ------
    ValidationError
        If a coordinate is not finite or is off the Earth.

    Examples
    --------
    >>> round(azimuth_deg(0.0, 0.0, 0.0, 10.0), 6)
    90.0
    """
    az, d = _inverse(lat1, lon1, lat2, lon2)
    az = np.where(d == 0.0, 0.0, az % 360.0)
    az = np.where(az >= 360.0, 0.0, az)  # tiny negatives round to 360.0
    return _scalar_or_array(az, lat1, lon1, lat2, lon2)


def destination_point(
    lat: ArrayLike, lon: ArrayLike, azimuth: ArrayLike, distance: ArrayLike
) -> tuple[np.ndarray | float, np.ndarray | float]:
    """The point reached along a geodesic from a start, azimuth and distance.

    Parameters
    ----------
    lat, lon : array_like
        Start, degrees.
    azimuth : array_like
        Initial azimuth, degrees clockwise from true north.
    distance : array_like
        Distance along the geodesic, metres (>= 0).

    Returns
    -------
    tuple of (float or numpy.ndarray, float or numpy.ndarray)
        Latitude in [-90, 90] and longitude in [-180, 180), degrees.

    Raises
    ------
    ValidationError
        If the start is off the Earth, or the azimuth or distance is not finite, or the
        distance is negative.

    Examples
    --------
    >>> lat, lon = destination_point(0.0, 0.0, 90.0, 111319.4908)
    >>> round(lat, 9), round(lon, 6)
    (0.0, 1.0)
    """
    check_position(lat, lon, "start")
    try:
        az = np.asarray(azimuth, dtype=np.float64)
        dist = np.asarray(distance, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValidationError(
            f"azimuth and distance must be numbers, got {azimuth!r}, {distance!r}"
        ) from exc
    if not (np.all(np.isfinite(az)) and np.all(np.isfinite(dist))) or np.any(dist < 0):
        raise ValidationError(
            f"azimuth must be finite and distance finite and >= 0, got {azimuth}, {distance}"
        )
    la, lo, az, dist = np.broadcast_arrays(
        np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64), az, dist
    )
    shape = la.shape
    lon2, lat2, _ = _GEOD.fwd(lo.ravel(), la.ravel(), az.ravel(), dist.ravel())
    lat2 = np.clip(np.asarray(lat2, dtype=np.float64).reshape(shape), -90.0, 90.0)
    lon2 = (np.asarray(lon2, dtype=np.float64).reshape(shape) + 180.0) % 360.0 - 180.0
    return (
        _scalar_or_array(lat2, lat, lon, azimuth, distance),
        _scalar_or_array(lon2, lat, lon, azimuth, distance),
    )
