r"""Plan a TDoA job: which public receivers to ask, and how well they can locate.

Three steps, each usable on its own:

:func:`candidates`
    The directory entries (:class:`~heimdall_lab.directory.Entry`) that can take a job at a
    frequency, and how many of the others were left out for which reason.
:func:`predicted_error`
    The position error a set of receivers should achieve at a point (vectorised over
    points), from the geometry and a simple timing-noise model (below).
:func:`select`
    The set of receivers that minimises that predicted error at a target point or over an
    area: not simply the nearest ones, but the ones that surround the target at distances
    where their timing is still good. The result, :class:`Selection`, carries the receivers,
    the predicted error and ellipse, the largest azimuth gap (:func:`azimuth_gap_deg`), the
    rejection counts and warnings.

The error model
---------------
Receiver ``i`` at great-circle distance :math:`d_i` from the transmitter times the signal
with standard deviation

.. math:: \sigma_i = \sigma_{ref}\,\max(d_i, d_{min}) / d_{ref}

(:data:`TIMING_SIGMA_S` at :data:`REFERENCE_DISTANCE_KM`, floored at
:data:`MIN_DISTANCE_KM`): the signal's amplitude is taken to fall off as :math:`1/d`, so its
SNR as :math:`1/d^2`, and a delay's standard error, which goes as :math:`1/\sqrt{SNR}`,
grows as :math:`d`. Below :math:`d_{min}` the noise does not shrink further (GNSS
timestamps, receiver filters and propagation set a floor). The errors of different
receivers are independent. This is a planning model, not a propagation model: sky waves,
ground conductivity, antennas and local noise are not in it.

TDoA measures :math:`n - 1` arrival-time differences against a reference receiver (the
first): :math:`\Delta = A\,t` with :math:`A = [-1 \mid I]` (one row per receiver after the
first), so their covariance is :math:`C = A\,\mathrm{diag}(\sigma^2)\,A^T`. Moving the
transmitter by a small :math:`(e, n)` km in the local tangent plane at the point changes
arrival ``i`` by :math:`u_i \cdot (e, n) / c`, where :math:`u_i` is the unit vector (east,
north) pointing from receiver ``i`` towards the point, along the great circle (the opposite
of the azimuth from the point to the receiver, :func:`heimdall_lab.geo.azimuth_deg`).
With :math:`H = A\,U / c` the position covariance is
:math:`P = (H^T C^{-1} H)^{-1}` (km\ :sup:`2`, east/north). It does not depend on which
receiver is the reference; it equals :math:`J^{-1}` with

.. math:: J = \sum_i w_i g_i g_i^T - \frac{(\sum_i w_i g_i)(\sum_i w_i g_i)^T}{\sum_i w_i},
          \qquad w_i = \sigma_i^{-2},\quad g_i = u_i / c,

the information of the absolute arrival times with the unknown emission time eliminated,
which is what this module computes (it is a sum over receivers, so sets of receivers can be
compared quickly). It is also what :func:`heimdall_lab.localize.solve_tdoa` reports: with
all :math:`n(n-1)/2` pairs of equal per-pair sigma :math:`\sqrt2\sigma` treated as
independent, its covariance times its inflation factor :math:`n/2` is exactly this
:math:`P`.

From :math:`P`'s eigenvalues :math:`s_1^2 \ge s_2^2`:

- ``error_km``: the *median* radial error (CEP50) of the 2-D Gaussian, computed exactly:
  :math:`P(R \le r) = 1 - \frac{1}{2\pi}\int_0^{2\pi}
  \exp\!\big(-r^2 / (2 s_1^2 (\cos^2\psi + k^2 \sin^2\psi))\big)\,d\psi` with
  :math:`k = s_2 / s_1` (a smooth periodic integral, evaluated by the midpoint rule and
  solved for :math:`P = 1/2` once on a table of :math:`k`, then interpolated). It is
  :math:`1.1774\,s` for a circular error and :math:`0.6745\,s_1` for a flat one; the
  common approximation :math:`0.5887 (s_1 + s_2)` is within a few percent of it for
  :math:`k > 0.3` but 13 % low for :math:`k = 0`.
- ``major_km``, ``minor_km``: semi-axes of the ellipse holding ``confidence`` (95 %) of the
  probability, :math:`\sqrt{\chi^2_2(conf)}\,s_{1,2}` (2.448 s at 95 %), as the localizer
  reports them.

With fewer than three receivers, or receivers that see the point from one line only
(e.g. all on one great circle through it), :math:`J` is singular and the error is
infinite.

Defaults, and why
-----------------
``reports/localize.md`` measured two things. Real DCF77 recordings (77.5 kHz, three
receivers at 320, 420 and 780 km): pair-delay errors of 8.5, 29 and 25 us, systematic rather
than noise (sky wave mixed into the ground wave). Under the model above these pair errors
correspond to about 15 us at 500 km. The emulated keyed carrier (C/N0 about 73 dB-Hz,
receivers a few hundred km away): 2.6-2.8 us rms per pair, about 2 us per receiver; that signal
has no propagation errors. :data:`TIMING_SIGMA_S` = 10 us at 500 km lies between the two,
nearer to the real data, and for the DCF77 triple it predicts a median error of about 5 km
against the 8.7 km measured (one sample). The floor :data:`MIN_DISTANCE_KM` = 100 km gives
2 us, the emulator's per-receiver figure. The predicted error is proportional to
``timing_sigma_s``, so *which* receivers are chosen does not depend on it, only on the
ratio of :data:`MIN_DISTANCE_KM` to :data:`REFERENCE_DISTANCE_KM` and on the geometry.
``reports/network.md`` calibrates the scale on the emulated network: 1.3 us at 500 km.
"""

from __future__ import annotations

import functools
import itertools
import math
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from heimdall_lab import geo
from heimdall_lab.directory import Entry
from heimdall_lab.errors import ValidationError
from heimdall_lab.receivers import Receiver
from heimdall_lab.values import clip, jsonable, positive

__all__ = [
    "MAX_DISTANCE_KM",
    "MIN_DISTANCE_KM",
    "REASONS",
    "REFERENCE_DISTANCE_KM",
    "SAME_PLACE_KM",
    "TIME_LIMITED_MAX_S",
    "TIMING_SIGMA_S",
    "ErrorPrediction",
    "Selection",
    "azimuth_gap_deg",
    "candidates",
    "check_area",
    "check_target",
    "predicted_error",
    "select",
    "surrounds",
]

#: Timing standard deviation of one receiver at :data:`REFERENCE_DISTANCE_KM`, seconds
#: (see the module docstring for why 10 us).
TIMING_SIGMA_S: float = 10e-6
#: Distance at which a receiver's timing noise is :data:`TIMING_SIGMA_S`, km.
REFERENCE_DISTANCE_KM: float = 500.0
#: Below this distance a receiver's timing noise no longer shrinks, km (2 us by default).
MIN_DISTANCE_KM: float = 100.0
#: Receivers further than this from the target (or the area's centre) are not considered, km.
MAX_DISTANCE_KM: float = 2500.0
#: A time-limited receiver is assumed to allow at least this long a session, seconds.
TIME_LIMITED_MAX_S: float = 600.0
#: Two receivers closer than this are at the same place (only one is kept), km.
SAME_PLACE_KM: float = 1.0

#: Why an entry is not a candidate, in the order they are checked (one reason per entry).
REASONS: tuple[str, ...] = (
    "offline",
    "password",
    "ext_api",
    "frequency",
    "gnss",
    "tdoa",
    "time_limited",
    "full",
    "same_place",
)
#: What :func:`select` adds to :data:`REASONS`.
TOO_FAR = "too_far"

_KM_PER_M = 1e-3
#: Smallest ratio of the eigenvalues of the information matrix before it counts as singular.
_SINGULAR = 1e-12


# ============================================================================================
# Candidates


def _check_entries(entries: Iterable[Entry]) -> list[Entry]:
    if isinstance(entries, Entry):
        raise ValidationError("entries must be a sequence of directory Entry objects, not one")
    try:
        items = list(entries)
    except TypeError as exc:
        raise ValidationError(
            f"entries must be a sequence of directory Entry objects, got {clip(entries)!r}"
        ) from exc
    for e in items:
        if not isinstance(e, Entry):
            raise ValidationError(
                f"entries must be directory Entry objects (heimdall_lab.directory), got "
                f"{type(e).__name__} {clip(e)!r}"
            )
    return items


def _reason(
    e: Entry, frequency_hz: float, duration_s: float | None, localization: bool, tmax: float
) -> str:
    """The first reason (in :data:`REASONS` order) ``e`` cannot take the job, or ``""``."""
    if e.offline:
        return "offline"
    if e.password:
        return "password"
    if not e.ext_api:
        return "ext_api"
    if not e.covers(frequency_hz):
        return "frequency"
    if not e.fresh_gnss:
        return "gnss"
    if localization and not e.allows_tdoa:
        return "tdoa"
    if e.time_limited and duration_s is not None and duration_s > tmax:
        return "time_limited"
    if e.free_channels < 1:
        return "full"
    return ""


def _distinct_places(entries: list[Entry], same_place_km: float) -> list[Entry]:
    """One entry per place: the most free channels, then satellites, then the first name."""
    if len(entries) < 2:
        return list(entries)
    lat = np.array([e.latitude for e in entries])
    lon = np.array([e.longitude for e in entries])
    dist = np.asarray(geo.distance_m(lat[:, None], lon[:, None], lat, lon)) * _KM_PER_M
    order = sorted(
        range(len(entries)),
        key=lambda i: (-entries[i].free_channels, -entries[i].gps_good, entries[i].name),
    )
    kept = np.zeros(len(entries), dtype=bool)
    for i in order:
        if not np.any(kept & (dist[i] <= same_place_km)):
            kept[i] = True
    return [e for e, k in zip(entries, kept, strict=True) if k]


def candidates(
    entries: Iterable[Entry],
    frequency_hz: float,
    *,
    duration_s: float | None = None,
    localization: bool = True,
    time_limited_max_s: float = TIME_LIMITED_MAX_S,
    same_place_km: float = SAME_PLACE_KM,
) -> tuple[list[Entry], dict[str, int]]:
    """The directory entries that can take a job, and why the others cannot.

    An entry is a candidate when it is not offline, needs no password, does not refuse
    external applications (``ext_api``), covers ``frequency_hz``, has fresh GNSS
    timestamps (:attr:`~heimdall_lab.directory.Entry.fresh_gnss`; required also without
    ``localization``, as GNSS time is what makes the captures of several receivers
    comparable), allows TDoA (when ``localization``), is not time-limited when the job is
    long, has a free channel, and is not a second receiver at the same place. Each rejected
    entry is counted once, under the first reason of :data:`REASONS` that applies.

    The directory says only *that* a receiver limits connection time (``Limits``), not how
    long a session may last. A time-limited receiver is assumed to allow at least
    ``time_limited_max_s``: it is rejected only for jobs longer than that.

    Of receivers within ``same_place_km`` of each other (several KiwiSDRs on one antenna,
    or one listed twice), one is kept: the one with more free channels, then more
    satellites in its fix, then the name first in sort order. They would add no geometry,
    only correlated errors.

    Parameters
    ----------
    entries : iterable of Entry
        The directory (e.g. from :func:`heimdall_lab.directory.parse`).
    frequency_hz : float
        Frequency of the job, Hz.
    duration_s : float, optional
        Length of the job, seconds; ``None`` (unknown) never rejects a time-limited receiver.
    localization : bool, default True
        The job is a TDoA localization: the owner must allow TDoA (``tdoa_ch`` not -1).
    time_limited_max_s : float, default 600
        The session length a time-limited receiver is assumed to allow, seconds.
    same_place_km : float, default 1.0
        Receivers closer than this (inclusive) are at the same place.

    Returns
    -------
    list of Entry
        The candidates, in the order given.
    dict of str to int
        For each reason of :data:`REASONS` (all present, in that order), how many entries
        were left out for it.

    Raises
    ------
    ValidationError
        If an entry is not an :class:`~heimdall_lab.directory.Entry`, or a number is out of
        range.
    """
    items = _check_entries(entries)
    f = positive(frequency_hz, "frequency_hz")
    dur = None if duration_s is None else positive(duration_s, "duration_s")
    tmax = positive(time_limited_max_s, "time_limited_max_s", allow_zero=True)
    same = positive(same_place_km, "same_place_km", allow_zero=True)
    rejected = dict.fromkeys(REASONS, 0)
    passed = []
    for e in items:
        reason = _reason(e, f, dur, bool(localization), tmax)
        if reason:
            rejected[reason] += 1
        else:
            passed.append(e)
    kept = _distinct_places(passed, same)
    rejected["same_place"] = len(passed) - len(kept)
    return kept, rejected


# ============================================================================================
# Error model


@functools.cache
def _median_table() -> tuple[np.ndarray, np.ndarray]:
    """``m(k)``: median radial error of a 2-D Gaussian with std devs 1 and ``k`` (k in [0, 1]).

    ``P(R <= r) = 1 - mean over psi of exp(-r^2 / (2 (cos^2 psi + k^2 sin^2 psi)))``; the
    integrand is smooth and periodic, so the midpoint rule on a quarter period converges
    fast. Solved for 1/2 by bisection for all k at once.
    """
    k = np.linspace(0.0, 1.0, 513)  # linear interpolation: within 2e-6 of the exact median
    psi = (np.arange(64) + 0.5) * (0.5 * math.pi / 64)
    q = np.cos(psi) ** 2 + (k[:, None] * np.sin(psi)) ** 2
    lo = np.full(k.shape, 0.5)
    hi = np.full(k.shape, 1.5)
    for _ in range(42):
        r = 0.5 * (lo + hi)
        below = 1.0 - np.mean(np.exp(-(r[:, None] ** 2) / (2.0 * q)), axis=1) < 0.5
        lo = np.where(below, r, lo)
        hi = np.where(below, hi, r)
    return k, 0.5 * (lo + hi)


def _median_radial(var_max: np.ndarray, var_min: np.ndarray) -> np.ndarray:
    """Median radial error from the covariance's eigenvalues (infinite when either is)."""
    k_tab, m_tab = _median_table()
    with np.errstate(invalid="ignore", divide="ignore"):
        s1 = np.sqrt(var_max)
        ratio = np.sqrt(np.clip(np.where(np.isfinite(var_max), var_min / var_max, 0.0), 0, 1))
    out = s1 * np.interp(ratio, k_tab, m_tab)
    return np.where(np.isfinite(var_max), out, np.inf)


def _terms(
    rlat: np.ndarray,
    rlon: np.ndarray,
    tlat: np.ndarray,
    tlon: np.ndarray,
    sigma_s: float,
    reference_km: float,
    min_km: float,
    velocity_factor: float = 1.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per point and receiver: the six information terms, distances (km) and sigmas (s).

    ``rlat``, ``rlon``: shape (n,); ``tlat``, ``tlon``: shape (p,). Returns the terms
    ``(w, w gx, w gy, w gx^2, w gx gy, w gy^2)`` as one array (6, p, n), with ``g`` the
    gradient (s/km, east, north) of the arrival time with respect to the point.
    """
    a, b = tlat[:, None], tlon[:, None]
    d_km = np.asarray(geo.distance_m(a, b, rlat[None, :], rlon[None, :])) * _KM_PER_M
    az = np.radians(np.asarray(geo.azimuth_deg(a, b, rlat[None, :], rlon[None, :])))
    v_km_s = geo.SPEED_OF_LIGHT * velocity_factor * _KM_PER_M
    gx = -np.sin(az) / v_km_s  # from the receiver towards the point: away from the receiver
    gy = -np.cos(az) / v_km_s
    sigma = sigma_s * np.maximum(d_km, min_km) / reference_km
    w = 1.0 / sigma**2
    terms = np.stack([w, w * gx, w * gy, w * gx * gx, w * gx * gy, w * gy * gy])
    return terms, d_km, sigma


def _information(sums: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The information matrix ``[[a, b], [b, c]]`` (1/km^2) from summed terms (6, ...)."""
    s0, sx, sy, sxx, sxy, syy = sums
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (sxx - sx * sx / s0, sxy - sx * sy / s0, syy - sy * sy / s0)
    # What is left of a complete cancellation (a direction nothing constrains) is rounding.
    tiny = 1e-12 * (np.abs(sxx) + np.abs(syy))
    return tuple(np.where(np.abs(x) <= tiny, 0.0, x) for x in out)


def _eigen(
    a: np.ndarray, b: np.ndarray, c: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Covariance eigenvalues (largest, smallest; km^2) and major-axis azimuth (deg)."""
    half = 0.5 * (a + c)
    root = np.hypot(0.5 * (a - c), b)
    mu1 = half + root
    mu2 = half - root
    singular = ~(mu1 > 0) | ~(mu2 > mu1 * _SINGULAR)
    with np.errstate(invalid="ignore", divide="ignore"):
        var_max = np.where(singular, np.inf, 1.0 / np.where(singular, 1.0, mu2))
        var_min = np.where(mu1 > 0, 1.0 / np.where(mu1 > 0, mu1, 1.0), np.inf)
    # J's largest-information axis is at 0.5 atan2(2b, a - c) from east; the covariance's
    # major axis is perpendicular to it, i.e. at -that from north.
    azimuth = (-0.5 * np.degrees(np.arctan2(2.0 * b, a - c))) % 180.0
    azimuth = np.where(np.isfinite(a + b + c) & ~(mu1 <= 0), azimuth, np.nan)
    return var_max, var_min, azimuth


def _sum_subsets(terms: np.ndarray, subsets: np.ndarray) -> np.ndarray:
    """Terms (6, p, n) summed over each subset (k, m) of receiver indices -> (6, p, k)."""
    return terms[:, :, subsets].sum(axis=-1)


def _errors_of_subsets(terms: np.ndarray, subsets: np.ndarray) -> np.ndarray:
    """Median radial error (km) of each subset at each point: (k, p)."""
    var_max, var_min, _ = _eigen(*_information(_sum_subsets(terms, subsets)))
    return _median_radial(var_max, var_min).T


@dataclass(frozen=True)
class ErrorPrediction:
    """The predicted position error of a set of receivers at one or more points.

    Each attribute is a float for a single point and an array of the points' broadcast
    shape otherwise.

    Attributes
    ----------
    error_km : float or numpy.ndarray
        Median radial error (CEP50), km; infinite when the position is not determined.
    major_km, minor_km : float or numpy.ndarray
        Semi-axes of the ``confidence`` ellipse, km.
    azimuth_deg : float or numpy.ndarray
        Azimuth of the major axis, degrees from north in [0, 180); NaN when undetermined.
    covariance_km2 : numpy.ndarray
        Position covariance (east, north), km^2, shape ``points + (2, 2)``; infinite
        entries when the position is not determined.
    sigma_s : numpy.ndarray
        Timing standard deviation of each receiver at each point, seconds, shape
        ``points + (n,)``.
    confidence : float
        Probability content of the ellipse.
    """

    error_km: Any
    major_km: Any
    minor_km: Any
    azimuth_deg: Any
    covariance_km2: np.ndarray
    sigma_s: np.ndarray
    confidence: float


def _positions(receivers_or_positions: Any) -> tuple[np.ndarray, np.ndarray]:
    """Latitudes and longitudes of receivers, entries or ``(lat, lon)`` pairs."""
    if isinstance(receivers_or_positions, str):
        raise ValidationError("receivers must be Receiver/Entry objects or (lat, lon) pairs")
    try:
        items = list(receivers_or_positions)
        pairs = [
            (r.latitude, r.longitude) if hasattr(r, "latitude") and hasattr(r, "longitude") else r
            for r in items
        ]
        arr = np.asarray(pairs, dtype=np.float64).reshape(len(items), 2)
    except (TypeError, ValueError) as exc:
        raise ValidationError(
            "receivers must be Receiver/Entry objects or (lat, lon) pairs, got "
            f"{clip(receivers_or_positions)!r}"
        ) from exc
    lat, lon = arr[:, 0], arr[:, 1]
    geo.check_position(lat, lon, "receiver positions")
    return lat, lon


def _check_model(
    timing_sigma_s: Any, reference_distance_km: Any, min_distance_km: Any
) -> tuple[float, float, float]:
    return (
        positive(timing_sigma_s, "timing_sigma_s"),
        positive(reference_distance_km, "reference_distance_km"),
        positive(min_distance_km, "min_distance_km"),
    )


def _ellipse_scale(confidence: Any) -> tuple[float, float]:
    conf = positive(confidence, "confidence")
    if not conf < 1:
        raise ValidationError(f"confidence must be in (0, 1), got {confidence}")
    return conf, -2.0 * math.log1p(-conf)  # chi-square quantile, 2 degrees of freedom


def predicted_error(
    receivers_or_positions: Sequence[Any] | ArrayLike,
    lat: ArrayLike,
    lon: ArrayLike,
    *,
    timing_sigma_s: float = TIMING_SIGMA_S,
    reference_distance_km: float = REFERENCE_DISTANCE_KM,
    min_distance_km: float = MIN_DISTANCE_KM,
    velocity_factor: float = 1.0,
    confidence: float = 0.95,
) -> ErrorPrediction:
    """The TDoA position error a set of receivers should achieve at the given point(s).

    The model (timing noise growing with distance, pair differences against the first
    receiver, covariance from the geometry in the local tangent plane) is described in the
    module docstring.

    Parameters
    ----------
    receivers_or_positions : sequence
        Receivers: :class:`~heimdall_lab.receivers.Receiver` or
        :class:`~heimdall_lab.directory.Entry` objects (anything with ``latitude`` and
        ``longitude``), or ``(lat, lon)`` pairs in degrees.
    lat, lon : array_like
        Transmitter position(s), degrees; broadcast against each other.
    timing_sigma_s : float, default :data:`TIMING_SIGMA_S`
        Timing standard deviation of a receiver at ``reference_distance_km``, seconds.
    reference_distance_km : float, default :data:`REFERENCE_DISTANCE_KM`
        Distance at which the timing noise is ``timing_sigma_s``, km.
    min_distance_km : float, default :data:`MIN_DISTANCE_KM`
        Distance below which the timing noise does not shrink, km.
    velocity_factor : float, default 1.0
        Propagation speed as a fraction of the speed of light, in (0, 1].
    confidence : float, default 0.95
        Probability content of the ellipse.

    Returns
    -------
    ErrorPrediction
        Median radial error, ellipse and covariance at each point; infinite with fewer than
        three receivers or when the geometry cannot fix the position.

    Raises
    ------
    ValidationError
        On positions off the Earth or parameters out of range.

    Examples
    --------
    >>> ring = [(51.0, 0.0), (49.0, 0.0), (50.0, 1.5), (50.0, -1.5)]
    >>> p = predicted_error(ring, 50.0, 0.0)
    >>> round(p.error_km, 2), round(p.major_km, 2)
    (0.55, 1.15)
    """
    sigma, ref_km, min_km = _check_model(timing_sigma_s, reference_distance_km, min_distance_km)
    vf = positive(velocity_factor, "velocity_factor")
    if vf > 1.0:
        raise ValidationError(f"velocity_factor must be in (0, 1], got {velocity_factor}")
    conf, scale = _ellipse_scale(confidence)
    rlat, rlon = _positions(receivers_or_positions)
    geo.check_position(lat, lon, "target")
    tlat, tlon = np.broadcast_arrays(
        np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)
    )
    shape = tlat.shape
    n = len(rlat)
    terms, _, sig = _terms(
        rlat, rlon, tlat.reshape(-1), tlon.reshape(-1), sigma, ref_km, min_km, vf
    )
    a, b, c = _information(terms.sum(axis=-1))
    var_max, var_min, azimuth = _eigen(a, b, c)
    if n < 3:
        var_max = np.full_like(var_max, np.inf)
        var_min = np.full_like(var_min, np.inf)
        azimuth = np.full_like(azimuth, np.nan)
    error = _median_radial(var_max, var_min)
    det = a * c - b * b
    with np.errstate(invalid="ignore", divide="ignore"):
        cov = np.stack([np.stack([c, -b], -1), np.stack([-b, a], -1)], -2) / det[:, None, None]
    cov = np.where(np.isfinite(var_max)[:, None, None], cov, np.inf)

    def out(x: np.ndarray) -> Any:
        return float(x[0]) if shape == () else x.reshape(shape)

    return ErrorPrediction(
        error_km=out(error),
        major_km=out(np.sqrt(scale * var_max)),
        minor_km=out(np.sqrt(scale * var_min)),
        azimuth_deg=out(azimuth),
        covariance_km2=cov.reshape((*shape, 2, 2)),
        sigma_s=sig.reshape((*shape, n)),
        confidence=conf,
    )


# ============================================================================================
# Geometry of a set


def azimuth_gap_deg(target: Sequence[float], positions: Sequence[Any] | ArrayLike) -> float:
    """The largest gap between the azimuths of the receivers seen from the target.

    Parameters
    ----------
    target : (float, float)
        ``(lat, lon)``, degrees.
    positions : sequence
        Receivers, entries or ``(lat, lon)`` pairs (as for :func:`predicted_error`).

    Returns
    -------
    float
        Degrees in (0, 360]; 360 with fewer than two receivers. Below 180 the receivers
        surround the target (it lies inside their hull on the sphere). Receivers within
        1 m of the target have no direction and are left out.

    Raises
    ------
    ValidationError
        On positions off the Earth.
    """
    tlat, tlon = check_target(target, "target")
    if len(positions) == 0:
        return 360.0
    rlat, rlon = _positions(positions)
    far = np.asarray(geo.distance_m(tlat, tlon, rlat, rlon)) > 1.0
    az = np.sort(np.asarray(geo.azimuth_deg(tlat, tlon, rlat[far], rlon[far])))
    if len(az) < 2:
        return 360.0
    gaps = np.diff(np.concatenate([az, [az[0] + 360.0]]))
    return float(gaps.max())


def surrounds(target: Sequence[float], positions: Sequence[Any] | ArrayLike) -> bool:
    """Whether the receivers surround the target (largest azimuth gap below 180 degrees).

    Parameters
    ----------
    target : (float, float)
        ``(lat, lon)``, degrees.
    positions : sequence
        Receivers, entries or ``(lat, lon)`` pairs.

    Returns
    -------
    bool
        True when :func:`azimuth_gap_deg` is below 180.
    """
    return azimuth_gap_deg(target, positions) < 180.0


def check_target(value: Any, what: str = "target") -> tuple[float, float]:
    """Check a target position.

    Parameters
    ----------
    value : pair of float
        ``(lat, lon)`` in degrees.
    what : str, default "target"
        What it is, for the message.

    Returns
    -------
    tuple of float
        ``(lat, lon)``.

    Raises
    ------
    ValidationError
        If it is not two numbers on the Earth.
    """
    try:
        lat, lon = (float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{what} must be (lat, lon) in degrees, got {clip(value)!r}") from exc
    geo.check_position(lat, lon, what)
    return lat, lon


def check_area(value: Any) -> tuple[float, float, float, float]:
    """Check a target area.

    Parameters
    ----------
    value : sequence of float
        ``(lat_min, lat_max, lon_min, lon_max)`` in degrees.

    Returns
    -------
    tuple of float
        The four values.

    Raises
    ------
    ValidationError
        If they are not four numbers on the Earth with min <= max.
    """
    try:
        la0, la1, lo0, lo1 = (float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise ValidationError(
            f"area must be (lat_min, lat_max, lon_min, lon_max) in degrees, got {clip(value)!r}"
        ) from exc
    geo.check_position([la0, la1], [lo0, lo1], "area")
    if not (la0 <= la1 and lo0 <= lo1):
        raise ValidationError(
            f"area must be (lat_min, lat_max, lon_min, lon_max) with min <= max, got {value!r}"
        )
    return la0, la1, lo0, lo1


# ============================================================================================
# Selection


@dataclass(frozen=True)
class Selection:
    """The receivers chosen for a job, with the error they should achieve.

    Attributes
    ----------
    entries : tuple of Entry
        The chosen receivers, nearest to the target first.
    predicted_error_km : float
        Median radial error (CEP50) at the target; for an area, the mean over its grid.
    predicted_error_max_km : float
        The largest over the area's grid (the error at the target for a point).
    ellipse_km : (float, float)
        Semi-axes (major, minor) of the 95 % error ellipse at the target (the area's
        centre), km.
    ellipse_azimuth_deg : float
        Azimuth of the ellipse's major axis, degrees from north in [0, 180).
    azimuth_gap_deg : float
        The largest gap between the chosen receivers' azimuths seen from the target; below
        180 they surround it.
    candidates : tuple of Entry
        Every candidate considered (within the maximum distance), nearest first.
    rejected : dict of str to int
        Entries left out per reason (:data:`REASONS` and ``"too_far"``).
    target : (float, float)
        The target ``(lat, lon)``, or the area's centre.
    area : (float, float, float, float) or None
        ``(lat_min, lat_max, lon_min, lon_max)`` when an area was given.
    frequency_hz : float
        Frequency of the job.
    timing_sigma_s, reference_distance_km, min_distance_km : float
        The timing-noise model used (see :func:`predicted_error`).
    warnings : tuple of str
        What the caller should know: fewer receivers than asked, a target not surrounded.
    """

    entries: tuple[Entry, ...]
    predicted_error_km: float
    predicted_error_max_km: float
    ellipse_km: tuple[float, float]
    ellipse_azimuth_deg: float
    azimuth_gap_deg: float
    candidates: tuple[Entry, ...]
    rejected: dict[str, int]
    target: tuple[float, float]
    area: tuple[float, float, float, float] | None
    frequency_hz: float
    timing_sigma_s: float
    reference_distance_km: float
    min_distance_km: float
    warnings: tuple[str, ...]

    def receivers(self) -> list[Receiver]:
        """The chosen receivers as :class:`~heimdall_lab.receivers.Receiver` objects.

        Returns
        -------
        list of Receiver
            In the order of :attr:`entries`.
        """
        return [e.receiver() for e in self.entries]

    def _rows(self) -> list[dict[str, Any]]:
        lat, lon = self.target
        pred = self.predict(lat, lon)
        rows = []
        for i, e in enumerate(self.entries):
            rows.append(
                {
                    "name": e.name,
                    "host": e.host,
                    "port": e.port,
                    "tls": e.tls,
                    "latitude": e.latitude,
                    "longitude": e.longitude,
                    "distance_km": float(geo.distance_m(lat, lon, e.latitude, e.longitude))
                    * _KM_PER_M,
                    "azimuth_deg": float(geo.azimuth_deg(lat, lon, e.latitude, e.longitude)),
                    "free_channels": e.free_channels,
                    "gps_good": e.gps_good,
                    "fixes_min": e.fixes_min,
                    "tdoa_ch": e.tdoa_ch,
                    "timing_sigma_us": float(pred.sigma_s[i]) * 1e6,
                }
            )
        return rows

    def to_dict(self) -> dict[str, Any]:
        """The selection as plain JSON types (non-finite numbers become None).

        Returns
        -------
        dict
            ``receivers`` (name, host, port, tls, latitude, longitude, distance_km,
            azimuth_deg from the target, free_channels, gps_good, fixes_min, tdoa_ch,
            timing_sigma_us), ``predicted_error_km``, ``predicted_error_max_km``,
            ``ellipse_km``, ``ellipse_azimuth_deg``, ``azimuth_gap_deg``, ``target``,
            ``area``, ``frequency_hz``, ``rejected``, ``n_candidates``, ``timing_sigma_s``,
            ``reference_distance_km``, ``min_distance_km``, ``warnings``.
        """
        return jsonable(
            {
                "receivers": self._rows(),
                "predicted_error_km": self.predicted_error_km,
                "predicted_error_max_km": self.predicted_error_max_km,
                "ellipse_km": list(self.ellipse_km),
                "ellipse_azimuth_deg": self.ellipse_azimuth_deg,
                "azimuth_gap_deg": self.azimuth_gap_deg,
                "target": list(self.target),
                "area": None if self.area is None else list(self.area),
                "frequency_hz": self.frequency_hz,
                "rejected": dict(self.rejected),
                "n_candidates": len(self.candidates),
                "timing_sigma_s": self.timing_sigma_s,
                "reference_distance_km": self.reference_distance_km,
                "min_distance_km": self.min_distance_km,
                "warnings": list(self.warnings),
            }
        )

    def frame(self) -> pd.DataFrame:
        """The chosen receivers as a table, one row each (the columns of :meth:`to_dict`).

        Returns
        -------
        pandas.DataFrame
            One row per receiver in the order of :attr:`entries`, ``name`` the first column.
        """
        columns = ["name", "host", "port", "tls", "latitude", "longitude", "distance_km"]
        columns += ["azimuth_deg", "free_channels", "gps_good", "fixes_min", "tdoa_ch"]
        return pd.DataFrame(self._rows(), columns=[*columns, "timing_sigma_us"])

    def predict(self, lat: ArrayLike, lon: ArrayLike) -> ErrorPrediction:
        """The predicted error of the chosen receivers at other points.

        Parameters
        ----------
        lat, lon : array_like
            Points, degrees.

        Returns
        -------
        ErrorPrediction
            As :func:`predicted_error` with this selection's timing model.
        """
        return predicted_error(
            self.entries,
            lat,
            lon,
            timing_sigma_s=self.timing_sigma_s,
            reference_distance_km=self.reference_distance_km,
            min_distance_km=self.min_distance_km,
        )

    def error_grid(
        self, lat_range: Sequence[float], lon_range: Sequence[float], n: int = 60
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The predicted error on a latitude/longitude grid, for a contour map.

        Parameters
        ----------
        lat_range, lon_range : (float, float)
            ``(min, max)`` degrees.
        n : int, default 60
            Points along each axis (2 to 1000).

        Returns
        -------
        lats : numpy.ndarray
            Shape (n,).
        lons : numpy.ndarray
            Shape (n,).
        error_km : numpy.ndarray
            Median radial error, shape (n, n), indexed ``[lat, lon]``.

        Raises
        ------
        ValidationError
            On ranges off the Earth or a bad ``n``.
        """
        la0, la1, lo0, lo1 = check_area(
            [*_pair(lat_range, "lat_range"), *_pair(lon_range, "lon_range")]
        )
        n = positive(n, "n", whole=True)
        if not 2 <= n <= 1000:
            raise ValidationError(f"n must be 2 to 1000, got {n}")
        lats = np.linspace(la0, la1, n)
        lons = np.linspace(lo0, lo1, n)
        la, lo = np.meshgrid(lats, lons, indexing="ij")
        return lats, lons, np.asarray(self.predict(la, lo).error_km)


def _pair(value: Any, what: str) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{what} must be (min, max) in degrees, got {clip(value)!r}") from exc
    return a, b


def _pool(dist_km: np.ndarray, azimuth: np.ndarray, nearest: int, per_sector: int) -> np.ndarray:
    """Indices (sorted) of the nearest ``nearest`` and the nearest ``per_sector`` per sector.

    Sectors are 30 degrees of azimuth; ``dist_km`` is sorted ascending already.
    """
    keep = np.zeros(len(dist_km), dtype=bool)
    keep[:nearest] = True
    sector = (azimuth // 30.0).astype(int) % 12
    for s in range(12):
        keep[np.flatnonzero(sector == s)[:per_sector]] = True
    return np.flatnonzero(keep)


def _search(terms: np.ndarray, count: int, n_triple: int) -> tuple[list[int], float]:
    """The set of ``count`` receivers (indices into terms' last axis) of least mean error.

    Exhaustive best triple among the first ``n_triple``, greedy additions, then 1-exchange
    local search over all, each step taking the best (first on ties).
    """
    n = terms.shape[-1]

    def objective(subsets: np.ndarray) -> np.ndarray:
        step = max(1, 100_000 // terms.shape[1])  # bounded memory over many points
        return np.concatenate(
            [
                _errors_of_subsets(terms, subsets[k : k + step]).mean(axis=1)
                for k in range(0, len(subsets), step)
            ]
        )

    triples = np.array(list(itertools.combinations(range(min(n_triple, n)), 3)), dtype=np.intp)
    values = objective(triples)
    best = int(np.argmin(values))
    chosen = [int(i) for i in triples[best]]
    current = float(values[best])
    while len(chosen) < count:
        others = np.array([i for i in range(n) if i not in chosen], dtype=np.intp)
        subsets = np.column_stack([np.tile(chosen, (len(others), 1)), others])
        values = objective(subsets)
        best = int(np.argmin(values))
        chosen.append(int(others[best]))
        current = float(values[best])
    for _ in range(1000):
        others = np.array([i for i in range(n) if i not in chosen], dtype=np.intp)
        if len(others) == 0:
            break
        subsets = np.repeat(np.array(chosen, dtype=np.intp)[None, :], len(chosen) * len(others), 0)
        slot = np.repeat(np.arange(len(chosen)), len(others))
        subsets[np.arange(len(subsets)), slot] = np.tile(others, len(chosen))
        values = objective(subsets)
        best = int(np.argmin(values))
        if not values[best] < current * (1.0 - 1e-9):
            break
        chosen = [int(i) for i in subsets[best]]
        current = float(values[best])
    return chosen, current


def select(
    entries: Iterable[Entry],
    frequency_hz: float,
    *,
    near: Sequence[float] | None = None,
    area: Sequence[float] | None = None,
    count: int = 6,
    duration_s: float | None = None,
    localization: bool = True,
    timing_sigma_s: float = TIMING_SIGMA_S,
    reference_distance_km: float = REFERENCE_DISTANCE_KM,
    min_distance_km: float = MIN_DISTANCE_KM,
    max_distance_km: float = MAX_DISTANCE_KM,
    time_limited_max_s: float = TIME_LIMITED_MAX_S,
    same_place_km: float = SAME_PLACE_KM,
    grid_points: int = 7,
    pool: int = 40,
    triple_pool: int = 25,
) -> Selection:
    """Choose the receivers that should locate a transmitter best.

    Among the :func:`candidates` within ``max_distance_km`` of the target (or the area's
    centre), the set of ``count`` receivers that minimises the :func:`predicted_error` at
    the target (for an area: its mean over a ``grid_points`` x ``grid_points`` grid
    spanning the area) is searched: the best triple by exhaustive search among the nearest
    ``triple_pool`` candidates and the nearest in each 30-degree sector of azimuth, then
    greedy additions, then exchanges of one chosen receiver for another among the nearest
    ``pool`` (and the nearest three per sector) until no exchange lowers the error. This
    favours receivers that surround the target over a cluster of near ones on one side.
    The search is deterministic (candidates ordered by distance, then name; the first of
    equal sets wins); it finds a very good set, not provably the best.

    Parameters
    ----------
    entries : iterable of Entry
        The directory.
    frequency_hz : float
        Frequency of the job, Hz.
    near : (float, float), optional
        The expected transmitter position ``(lat, lon)``.
    area : (float, float, float, float), optional
        ``(lat_min, lat_max, lon_min, lon_max)`` where the transmitter is expected (give
        ``near`` or ``area``, not both).
    count : int, default 6
        Receivers wanted (at least 3).
    duration_s, localization, time_limited_max_s, same_place_km
        As for :func:`candidates`.
    timing_sigma_s, reference_distance_km, min_distance_km
        The timing-noise model, as for :func:`predicted_error`.
    max_distance_km : float, default :data:`MAX_DISTANCE_KM`
        Candidates further from the target (area centre) are not considered.
    grid_points : int, default 7
        Grid points per side over an area.
    pool, triple_pool : int, default 40 and 25
        How many of the nearest candidates the exchange search and the exhaustive triple
        search consider.

    Returns
    -------
    Selection
        The chosen receivers with the predicted error, ellipse, azimuth gap, the candidates
        and rejection counts, and warnings (fewer candidates than ``count``; a target the
        chosen receivers do not surround).

    Raises
    ------
    ValidationError
        If neither or both of ``near`` and ``area`` are given, a position or number is out
        of range, or fewer than three candidates remain (the message gives the rejection
        counts).
    """
    if (near is None) == (area is None):
        raise ValidationError(
            "give the target as near=(lat, lon) or area=(lat_min, lat_max, lon_min, lon_max), "
            "exactly one of them"
        )
    f = positive(frequency_hz, "frequency_hz")
    if isinstance(count, bool) or not isinstance(count, numbers.Integral) or count < 3:
        raise ValidationError(
            f"count must be a whole number >= 3 (TDoA needs three receivers), got {clip(count)!r}"
        )
    count = int(count)
    sigma, ref_km, min_km = _check_model(timing_sigma_s, reference_distance_km, min_distance_km)
    max_km = positive(max_distance_km, "max_distance_km")
    side = positive(grid_points, "grid_points", whole=True)
    n_pool = positive(pool, "pool", whole=True)
    n_triple = positive(triple_pool, "triple_pool", whole=True)
    if n_triple < 3:
        raise ValidationError(f"triple_pool must be >= 3, got {triple_pool}")
    if near is not None:
        target = check_target(near, "near")
        box = None
        plat, plon = np.array([target[0]]), np.array([target[1]])
        where = f"{target[0]:.4f}, {target[1]:.4f}"
    else:
        box = check_area(area)
        target = (0.5 * (box[0] + box[1]), 0.5 * (box[2] + box[3]))
        la, lo = np.meshgrid(
            np.linspace(box[0], box[1], side), np.linspace(box[2], box[3], side), indexing="ij"
        )
        plat, plon = la.reshape(-1), lo.reshape(-1)
        where = f"the centre of the area {box}"
    cands, rejected = candidates(
        entries,
        f,
        duration_s=duration_s,
        localization=localization,
        time_limited_max_s=time_limited_max_s,
        same_place_km=same_place_km,
    )
    if cands:
        clat = np.array([e.latitude for e in cands])
        clon = np.array([e.longitude for e in cands])
        dist = np.asarray(geo.distance_m(target[0], target[1], clat, clon)) * _KM_PER_M
    else:
        dist = np.zeros(0)
    near_enough = dist <= max_km
    rejected[TOO_FAR] = int(np.count_nonzero(~near_enough))
    order = sorted(np.flatnonzero(near_enough), key=lambda i: (dist[i], cands[i].name))
    considered = [cands[i] for i in order]
    dist = dist[order]
    if len(considered) < 3:
        why = ", ".join(f"{k} {v}" for k, v in rejected.items() if v) or "none"
        raise ValidationError(
            f"only {len(considered)} receiver(s) can take a {f:g} Hz job within {max_km:g} km "
            f"of {where}; TDoA needs three (left out: {why}); widen max_distance_km "
            "(--max-distance) or relax the job (duration_s, localization)"
        )
    warnings: list[str] = []
    if len(considered) <= count:
        if len(considered) < count:
            warnings.append(
                f"only {len(considered)} candidate receiver(s) within {max_km:g} km; "
                f"{count} were asked for"
            )
        chosen_idx = list(range(len(considered)))
    else:
        clat = np.array([e.latitude for e in considered])
        clon = np.array([e.longitude for e in considered])
        az = np.asarray(geo.azimuth_deg(target[0], target[1], clat, clon))
        idx = _pool(dist, az, max(n_pool, count), 3)
        sub = idx[_pool(dist[idx], az[idx], n_triple, 1)]
        # The triple pool first, in distance order, then the rest of the exchange pool.
        ordered = np.concatenate([sub, np.setdiff1d(idx, sub)])
        terms, _, _ = _terms(clat[ordered], clon[ordered], plat, plon, sigma, ref_km, min_km)
        local, _ = _search(terms, count, len(sub))
        chosen_idx = sorted(int(ordered[i]) for i in local)
    chosen = [considered[i] for i in chosen_idx]
    pred_grid = predicted_error(
        chosen,
        plat,
        plon,
        timing_sigma_s=sigma,
        reference_distance_km=ref_km,
        min_distance_km=min_km,
    )
    errors = np.asarray(pred_grid.error_km)
    at_target = predicted_error(
        chosen,
        target[0],
        target[1],
        timing_sigma_s=sigma,
        reference_distance_km=ref_km,
        min_distance_km=min_km,
    )
    gap = azimuth_gap_deg(target, chosen)
    if gap >= 180.0:
        all_gap = azimuth_gap_deg(target, considered)
        network = (
            "no candidate lies on the other side"
            if all_gap >= 180.0
            else f"the candidates leave a gap of {all_gap:.0f} deg, but those that would "
            "close it are too far to help"
        )
        warnings.append(
            f"the chosen receivers do not surround the target (largest azimuth gap "
            f"{gap:.0f} deg): {network}; the error grows away from the receivers"
        )
    return Selection(
        entries=tuple(chosen),
        predicted_error_km=float(errors.mean()),
        predicted_error_max_km=float(errors.max()),
        ellipse_km=(float(at_target.major_km), float(at_target.minor_km)),
        ellipse_azimuth_deg=float(at_target.azimuth_deg),
        azimuth_gap_deg=gap,
        candidates=tuple(considered),
        rejected=rejected,
        target=target,
        area=box,
        frequency_hz=f,
        timing_sigma_s=sigma,
        reference_distance_km=ref_km,
        min_distance_km=min_km,
        warnings=tuple(warnings),
    )
