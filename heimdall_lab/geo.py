"""Geometry on a spherical Earth: great-circle distances and propagation delays.

The Earth is a sphere of the IUGG mean radius :data:`EARTH_RADIUS_M` (6 371 008.8 m).
Distances are great-circle distances along the surface; the error against the
WGS84 ellipsoid is up to about 0.5 %, which is well below what HF time-difference-of-arrival
can resolve, and it is the *definition* used by the scenario synthesiser
(:mod:`heimdall_lab.emulate.scenario`), so ground truth and synthesis agree exactly.

Radio waves are taken to travel along the great circle at the vacuum speed of light
(:data:`SPEED_OF_LIGHT`): a ground-wave / line-of-sight model. Real HF sky-wave paths are
longer (ionospheric hops), which this module does not model.

All functions take degrees, broadcast like NumPy ufuncs, and return a ``float`` when every
argument is a scalar and a :class:`numpy.ndarray` otherwise.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from heimdall_lab.errors import ValidationError

#: Mean Earth radius in metres (IUGG, R1 = (2a + b) / 3 of WGS84).
EARTH_RADIUS_M: float = 6_371_008.8
#: Speed of light in vacuum, m/s (exact by definition of the metre).
SPEED_OF_LIGHT: float = 299_792_458.0

__all__ = [
    "EARTH_RADIUS_M",
    "SPEED_OF_LIGHT",
    "check_position",
    "destination_point",
    "great_circle_m",
    "initial_bearing_deg",
    "propagation_delay_s",
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
        return float(value)
    return value


def great_circle_m(
    lat1: ArrayLike, lon1: ArrayLike, lat2: ArrayLike, lon2: ArrayLike
) -> np.ndarray | float:
    """Great-circle distance on the spherical Earth.

    Mathematically the haversine distance; evaluated as ``R * atan2(|u1 x u2|, u1 . u2)``
    (the spherical Vincenty form), which keeps full float64 precision from zero distance to
    the antipodes.

    Parameters
    ----------
    lat1, lon1 : array_like
        First point(s), degrees.
    lat2, lon2 : array_like
        Second point(s), degrees; broadcast against the first.

    Returns
    -------
    float or numpy.ndarray
        Distance in metres, in [0, pi * EARTH_RADIUS_M]; a float if all inputs are scalars.

    Raises
    ------
    ValidationError
        If a coordinate is not finite or is off the Earth (|lat| > 90 or |lon| > 180).
    """
    check_position(lat1, lon1, "first point")
    check_position(lat2, lon2, "second point")
    phi1 = np.radians(np.asarray(lat1, dtype=np.float64))
    phi2 = np.radians(np.asarray(lat2, dtype=np.float64))
    dlam = np.radians(np.asarray(lon2, dtype=np.float64) - np.asarray(lon1, dtype=np.float64))
    sin1, cos1 = np.sin(phi1), np.cos(phi1)
    sin2, cos2 = np.sin(phi2), np.cos(phi2)
    # Central angle as atan2(|u1 x u2|, u1 . u2): the same great-circle distance as the
    # haversine formula, but well conditioned everywhere, including near the antipodes.
    cross = np.hypot(cos2 * np.sin(dlam), cos1 * sin2 - sin1 * cos2 * np.cos(dlam))
    dot = sin1 * sin2 + cos1 * cos2 * np.cos(dlam)
    d = EARTH_RADIUS_M * np.arctan2(cross, dot)
    return _scalar_or_array(d, lat1, lon1, lat2, lon2)


def propagation_delay_s(
    lat1: ArrayLike, lon1: ArrayLike, lat2: ArrayLike, lon2: ArrayLike
) -> np.ndarray | float:
    """Propagation delay along the great circle at the speed of light.

    Parameters
    ----------
    lat1, lon1 : array_like
        Transmitter position(s), degrees.
    lat2, lon2 : array_like
        Receiver position(s), degrees; broadcast against the first.

    Returns
    -------
    float or numpy.ndarray
        ``great_circle_m(...) / SPEED_OF_LIGHT`` in seconds.

    Raises
    ------
    ValidationError
        If a coordinate is not finite or is off the Earth.
    """
    d = np.asarray(great_circle_m(lat1, lon1, lat2, lon2)) / SPEED_OF_LIGHT
    return _scalar_or_array(d, lat1, lon1, lat2, lon2)


def initial_bearing_deg(
    lat1: ArrayLike, lon1: ArrayLike, lat2: ArrayLike, lon2: ArrayLike
) -> np.ndarray | float:
    """Azimuth at the first point of the great circle towards the second (initial bearing).

    Parameters
    ----------
    lat1, lon1 : array_like
        Where the bearing is taken, degrees.
    lat2, lon2 : array_like
        Towards which point, degrees; broadcast against the first.

    Returns
    -------
    float or numpy.ndarray
        Degrees clockwise from true north, in [0, 360); 0 for coincident points and, at a
        pole, the direction given by the longitude difference convention of ``atan2``.

    Raises
    ------
    ValidationError
        If a coordinate is not finite or is off the Earth.

    Examples
    --------
    >>> round(initial_bearing_deg(0.0, 0.0, 0.0, 10.0), 6)
    90.0
    """
    check_position(lat1, lon1, "first point")
    check_position(lat2, lon2, "second point")
    phi1 = np.radians(np.asarray(lat1, dtype=np.float64))
    phi2 = np.radians(np.asarray(lat2, dtype=np.float64))
    dlam = np.radians(np.asarray(lon2, dtype=np.float64) - np.asarray(lon1, dtype=np.float64))
    east = np.sin(dlam) * np.cos(phi2)
    north = np.cos(phi1) * np.sin(phi2) - np.sin(phi1) * np.cos(phi2) * np.cos(dlam)
    az = np.degrees(np.arctan2(east, north)) % 360.0
    az = np.where(az >= 360.0, 0.0, az)  # -0.0 % 360 and tiny negatives round to 360.0
    return _scalar_or_array(az, lat1, lon1, lat2, lon2)


def destination_point(
    lat: ArrayLike, lon: ArrayLike, azimuth_deg: ArrayLike, distance_m: ArrayLike
) -> tuple[np.ndarray | float, np.ndarray | float]:
    """The point reached along a great circle from a start, azimuth and distance.

    Parameters
    ----------
    lat, lon : array_like
        Start, degrees.
    azimuth_deg : array_like
        Initial bearing, degrees clockwise from true north.
    distance_m : array_like
        Distance along the great circle, metres (>= 0).

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
    >>> lat, lon = destination_point(0.0, 0.0, 90.0, EARTH_RADIUS_M * np.pi / 2)
    >>> round(lat, 9), round(lon, 9)
    (0.0, 90.0)
    """
    check_position(lat, lon, "start")
    try:
        az = np.radians(np.asarray(azimuth_deg, dtype=np.float64))
        dist = np.asarray(distance_m, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValidationError(
            f"azimuth and distance must be numbers, got {azimuth_deg!r}, {distance_m!r}"
        ) from exc
    if not (np.all(np.isfinite(az)) and np.all(np.isfinite(dist))) or np.any(dist < 0):
        raise ValidationError(
            f"azimuth must be finite and distance finite and >= 0, got {azimuth_deg}, {distance_m}"
        )
    phi1 = np.radians(np.asarray(lat, dtype=np.float64))
    lam1 = np.radians(np.asarray(lon, dtype=np.float64))
    delta = dist / EARTH_RADIUS_M
    sin_phi2 = np.sin(phi1) * np.cos(delta) + np.cos(phi1) * np.sin(delta) * np.cos(az)
    phi2 = np.arcsin(np.clip(sin_phi2, -1.0, 1.0))
    lam2 = lam1 + np.arctan2(
        np.sin(az) * np.sin(delta) * np.cos(phi1), np.cos(delta) - np.sin(phi1) * sin_phi2
    )
    lat2 = np.degrees(phi2)
    lon2 = (np.degrees(lam2) + 180.0) % 360.0 - 180.0
    return (
        _scalar_or_array(lat2, lat, lon, azimuth_deg, distance_m),
        _scalar_or_array(lon2, lat, lon, azimuth_deg, distance_m),
    )
