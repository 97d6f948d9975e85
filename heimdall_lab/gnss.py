"""GNSS time: GPS time of week to UTC and back, with leap seconds.

KiwiSDR receivers stamp each IQ frame with the GNSS time of its first sample as GPS seconds
of the week plus nanoseconds. GPS time runs ahead of UTC by the leap seconds inserted since
1980-01-06 (18 s since 2017-01-01). The week number is not sent, so it is resolved from a
reference clock (the wall clock by default) as the week that puts the time closest to it.

This module is also the one home of the rules for timing with those stamps: which frames are
trusted (:func:`trusted_frames`), where a timeline of frames breaks (:func:`frame_segments`)
and the exact sample rate, a least-squares line through (sample index, GNSS time)
(:func:`fit_rate`). The recording and the localization both use them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from heimdall_lab.values import NS_PER_S

__all__ = [
    "GPS_EPOCH",
    "NO_FIX",
    "STALE_FRAMES",
    "WEEK_NS",
    "WEEK_SECONDS",
    "RateFit",
    "fit_rate",
    "frame_segments",
    "has_fix",
    "leap_seconds",
    "tow_to_utc",
    "trusted_frames",
    "utc_to_tow",
]

#: ``last_gps_solution`` (seconds since the receiver's last GNSS fix) from this value up
#: means "no usable fix".
NO_FIX = 253
#: Seconds in a GPS week.
WEEK_SECONDS = 604_800
#: Nanoseconds in a GPS week.
WEEK_NS = WEEK_SECONDS * NS_PER_S
#: A KiwiSDR's first frames of a stream carry stale timestamps; they are never trusted.
STALE_FRAMES = 2
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
_LEAP_GPS_NS = (_LEAP_UTC - GPS_EPOCH).astype(np.int64) + _LEAP_SECONDS * NS_PER_S


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
    ref_gps_ns = (ref - GPS_EPOCH).astype(np.int64) + leap_seconds(ref) * NS_PER_S
    tow_ns = np.asarray(gpssec, dtype=np.int64) * NS_PER_S + np.asarray(gpsnsec, dtype=np.int64)
    week = np.rint((ref_gps_ns - tow_ns) / WEEK_NS).astype(np.int64)
    gps_ns = week * WEEK_NS + tow_ns
    idx = np.searchsorted(_LEAP_GPS_NS, gps_ns, side="right")
    leap = np.where(idx > 0, _LEAP_SECONDS[np.maximum(idx - 1, 0)], 0)
    return GPS_EPOCH + (gps_ns - leap * NS_PER_S).astype("timedelta64[ns]")


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
    gps_ns = (t - GPS_EPOCH).astype(np.int64) + leap_seconds(t) * NS_PER_S
    tow_ns = np.mod(gps_ns, WEEK_NS)
    return tow_ns // NS_PER_S, tow_ns % NS_PER_S


# ============================================================================================
# Frame trust and the sample rate


def has_fix(last_gps_solution: np.ndarray | int) -> np.ndarray:
    """Whether a frame's timestamp comes from a usable GNSS fix.

    Parameters
    ----------
    last_gps_solution : int or array of int
        Seconds since the last fix, per frame; :data:`NO_FIX`
        (253) and above, or negative (padding), mean no usable fix.

    Returns
    -------
    numpy.ndarray
        Boolean, same shape.
    """
    sol = np.asarray(last_gps_solution)
    return (sol >= 0) & (sol < NO_FIX)


def trusted_frames(last_gps_solution: np.ndarray) -> np.ndarray:
    """Which frames' timestamps are trusted: a usable fix and not one of the first, stale, ones.

    Parameters
    ----------
    last_gps_solution : numpy.ndarray
        Seconds since the last fix per frame, frames along the last axis (one stream, or
        receivers by frames).

    Returns
    -------
    numpy.ndarray
        Boolean, same shape; the first :data:`STALE_FRAMES` of each stream are False.
    """
    ok = np.array(has_fix(last_gps_solution), dtype=bool, ndmin=1)
    ok[..., :STALE_FRAMES] = False
    return ok


def frame_segments(
    starts: np.ndarray,
    t: np.ndarray,
    frame_index: np.ndarray,
    seq: np.ndarray,
    rate: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Split trusted frames into gap-free runs.

    A run breaks where frames were lost (a sequence step larger than the frame-index step), or
    where the timestamp step disagrees with the sample count at ``rate`` by more than 1 % +
    0.1 ms, or where the sample index does not increase.

    Parameters
    ----------
    starts : numpy.ndarray
        Sample index of each trusted frame's first sample.
    t : numpy.ndarray
        Its GNSS time in seconds (from any reference).
    frame_index : numpy.ndarray
        Its index among all frames received.
    seq : numpy.ndarray
        Its sequence number.
    rate : float
        The approximate sample rate, samples per second.

    Returns
    -------
    segment : numpy.ndarray
        Run number per frame, from 0.
    explained : numpy.ndarray
        Per frame, whether the break before it (if any) is explained by lost frames (True for
        the first frame).
    """
    if len(starts) == 0:
        return np.zeros(0, np.int64), np.zeros(0, bool)
    ds = np.diff(starts).astype(np.float64)
    expected = ds / rate
    lost = (np.diff(seq) & 0xFFFFFFFF) != np.diff(frame_index)
    timing_jump = np.abs(np.diff(t) - expected) > 0.01 * np.abs(expected) + 1e-4
    brk = lost | timing_jump | (ds <= 0)
    return np.concatenate([[0], np.cumsum(brk)]), np.concatenate([[True], lost])


@dataclass(frozen=True)
class RateFit:
    """A least-squares line through (sample index, GNSS time).

    Attributes
    ----------
    seconds_per_sample : float
        The slope, pooled over segments; NaN when nothing could be fitted.
    residual_s : numpy.ndarray
        Each point's time minus its segment's line, in seconds (0 for points not fitted).
    """

    seconds_per_sample: float
    residual_s: np.ndarray

    @property
    def rate(self) -> float:
        """Samples per second; NaN when the fit failed."""
        b = self.seconds_per_sample
        return 1.0 / b if np.isfinite(b) and b > 0 else float("nan")

    def rms_s(self, min_points: int = 3) -> float:
        """RMS of the residuals in seconds; NaN with fewer than ``min_points`` points."""
        r = self.residual_s
        return float(np.sqrt(np.mean(r**2))) if len(r) >= min_points else float("nan")


def fit_rate(
    sample_index: np.ndarray, time_s: np.ndarray, segment: np.ndarray | None = None
) -> RateFit:
    """The exact sample rate: a least-squares line through (sample index, GNSS time).

    With segments, each gap-free run has its own intercept and all share one slope.

    Parameters
    ----------
    sample_index : numpy.ndarray
        Sample index of each trusted frame's first sample.
    time_s : numpy.ndarray
        Its GNSS time in seconds from any reference (keep it small for precision).
    segment : numpy.ndarray, optional
        Run number per frame (see :func:`frame_segments`); one run when omitted. Runs of a
        single frame do not enter the fit.

    Returns
    -------
    RateFit
        Slope (seconds per sample) and residuals.
    """
    s = np.asarray(sample_index, dtype=np.float64)
    t = np.asarray(time_s, dtype=np.float64)
    seg = np.zeros(len(s), np.int64) if segment is None else np.asarray(segment)
    num = den = 0.0
    means: dict[int, tuple[float, float]] = {}
    for g in np.unique(seg):
        m = seg == g
        if m.sum() < 2:
            continue
        sm, tm = s[m].mean(), t[m].mean()
        means[int(g)] = (sm, tm)
        num += float(np.sum((s[m] - sm) * (t[m] - tm)))
        den += float(np.sum((s[m] - sm) ** 2))
    res = np.zeros_like(t)
    if den <= 0:
        return RateFit(float("nan"), res)
    b = num / den
    for g, (sm, tm) in means.items():
        m = seg == g
        res[m] = t[m] - (tm + b * (s[m] - sm))
    return RateFit(b, res)
