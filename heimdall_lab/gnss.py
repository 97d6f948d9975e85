"""GNSS time: GPS time of week to UTC and back, with leap seconds.

KiwiSDR receivers stamp each IQ frame with the GNSS time of its first sample as GPS seconds
of the week plus nanoseconds. GPS time runs ahead of UTC by the leap seconds inserted since
1980-01-06 (18 s since 2017-01-01). The week number is not sent, so it is resolved from a
reference clock (the wall clock by default) as the week that puts the time closest to it.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

WEEK_SECONDS = 604_800
_NS = 1_000_000_000
_WEEK_NS = WEEK_SECONDS * _NS
GPS_EPOCH = np.datetime64("1980-01-06T00:00:00", "ns")

# UTC instants from which GPS - UTC took the given number of seconds (IERS Bulletin C).
_LEAP_TABLE = [
    ("1981-07-01", 1),
    ("1982-07-01", 2),
    ("1983-07-01", 3),
    ("1985-07-01", 4),
    ("1988-01-01", 5),
    ("1990-01-01", 6),
    ("1991-01-01", 7),
    ("1992-07-01", 8),
    ("1993-07-01", 9),
    ("1994-07-01", 10),
    ("1996-01-01", 11),
    ("1997-07-01", 12),
    ("1999-01-01", 13),
    ("2006-01-01", 14),
    ("2009-01-01", 15),
    ("2012-07-01", 16),
    ("2015-07-01", 17),
    ("2017-01-01", 18),
]
_LEAP_UTC = np.array([np.datetime64(d, "ns") for d, _ in _LEAP_TABLE])
_LEAP_SECONDS = np.array([s for _, s in _LEAP_TABLE], dtype=np.int64)
# The same instants on the GPS time scale, in ns since the GPS epoch.
_LEAP_GPS_NS = (_LEAP_UTC - GPS_EPOCH).astype(np.int64) + _LEAP_SECONDS * _NS


def _as_utc_ns(t: datetime | np.datetime64 | np.ndarray | None) -> np.ndarray:
    if t is None:
        t = datetime.now(UTC)
    if isinstance(t, datetime):
        if t.tzinfo is not None:
            t = t.astimezone(UTC).replace(tzinfo=None)
        t = np.datetime64(t, "ns")
    return np.asarray(t, dtype="datetime64[ns]")


def leap_seconds(utc: datetime | np.datetime64 | np.ndarray) -> np.ndarray:
    """GPS minus UTC, in whole seconds, at the given UTC time(s).

    Parameters
    ----------
    utc : datetime, numpy.datetime64 or array of datetime64
        UTC instant(s); naive datetimes are taken as UTC.

    Returns
    -------
    numpy.ndarray
        Leap seconds (int64), 0 before 1981-07-01.
    """
    t = _as_utc_ns(utc)
    idx = np.searchsorted(_LEAP_UTC, t, side="right")
    return np.where(idx > 0, _LEAP_SECONDS[np.maximum(idx - 1, 0)], 0)


def tow_to_utc(
    gpssec: np.ndarray | int,
    gpsnsec: np.ndarray | int,
    reference: datetime | np.datetime64 | None = None,
) -> np.ndarray:
    """Convert GPS time of week to UTC.

    Parameters
    ----------
    gpssec : int or array of int
        Whole seconds of the GPS week (0 to 604799).
    gpsnsec : int or array of int
        Nanoseconds within that second.
    reference : datetime or numpy.datetime64, optional
        A UTC time within half a week of the timestamps, used to pick the GPS week; the
        wall clock when omitted (right for live receivers, not for old recordings).

    Returns
    -------
    numpy.ndarray
        UTC times as ``datetime64[ns]``, same shape as the inputs.
    """
    ref = _as_utc_ns(reference)
    ref_gps_ns = (ref - GPS_EPOCH).astype(np.int64) + leap_seconds(ref) * _NS
    tow_ns = np.asarray(gpssec, dtype=np.int64) * _NS + np.asarray(gpsnsec, dtype=np.int64)
    week = np.rint((ref_gps_ns - tow_ns) / _WEEK_NS).astype(np.int64)
    gps_ns = week * _WEEK_NS + tow_ns
    idx = np.searchsorted(_LEAP_GPS_NS, gps_ns, side="right")
    leap = np.where(idx > 0, _LEAP_SECONDS[np.maximum(idx - 1, 0)], 0)
    return GPS_EPOCH + (gps_ns - leap * _NS).astype("timedelta64[ns]")


def utc_to_tow(utc: datetime | np.datetime64 | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Convert UTC to GPS seconds of the week and nanoseconds.

    Parameters
    ----------
    utc : datetime, numpy.datetime64 or array of datetime64
        UTC instant(s); naive datetimes are taken as UTC.

    Returns
    -------
    gpssec, gpsnsec : numpy.ndarray
        Whole seconds of the GPS week and nanoseconds (int64), as a KiwiSDR sends them.
    """
    t = _as_utc_ns(utc)
    gps_ns = (t - GPS_EPOCH).astype(np.int64) + leap_seconds(t) * _NS
    tow_ns = np.mod(gps_ns, _WEEK_NS)
    return tow_ns // _NS, tow_ns % _NS
