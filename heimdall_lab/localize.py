r"""Locate a transmitter by time difference of arrival (TDoA) from GNSS-timestamped IQ.

Every 512-sample KiwiSDR frame carries the GNSS time of its first sample, so the captures of
several receivers can be put on one time axis, and the delay between the moments a
transmitter's modulation reaches two receivers places the transmitter on a hyperbola-like
curve (an isochrone) on the Earth. Three receivers give two independent delays and fix a
2-D position; more receivers over-determine it.

The method follows the public KiwiSDR TDoA method (hcab14/TDoA, Octave): GNSS-timed samples,
pairwise cross-correlation, ground-wave propagation along great circles, and a likelihood
map searched on a latitude/longitude grid. The steps:

Alignment on GNSS time
    Only *trusted* frames are used: a GNSS fix and not one of the first, stale, frames
    (``frame_trusted`` of the capture Dataset). The exact sample rate is a least-squares line
    through (sample index, GNSS time) pooled over gap-free segments (segments end where
    frames were lost, ``frame_seq`` jumps, or where the timestamps jump against the sample
    count). Each trusted frame is then placed on the time axis *by its own timestamp*:
    sample ``n`` of frame ``k`` is at ``T_k + (n - start_k) / rate``. Lost frames therefore
    leave a gap instead of shifting everything after them. Frames whose timestamp is more
    than ``max_timestamp_error_s`` off their segment's line, isolated frames whose timing
    jumps without lost frames to explain it, and frames overlapping earlier ones in time are
    rejected and counted (:class:`ReceiverTiming`). Times are kept as GPS time of week in
    integer ns (wrapped over week ends) relative to one reference frame, so they do not
    depend on the GPS week resolution.
Resampling
    Each receiver's carrier is found (:func:`heimdall_lab.dsp.measure`, refined by a
    weighted fit of the carrier phase) and mixed to 0 Hz using each sample's GNSS time, and
    the samples are linearly interpolated onto a common uniform grid (the median of the
    receivers' rates) over the span all usable receivers cover. Grid points in a gap (no
    samples within 1.5 sample periods) are marked invalid and carry zero weight.
Correlation
    ``method="envelope"``: the magnitude ``|iq|`` of the signal band-limited to ``|f| <=
    band[1]`` around the carrier, mean removed (what an amplitude-keyed carrier offers).
    ``method="complex"``: the complex signal after the carrier offset and phase are removed,
    mean (the steady carrier) subtracted; it sees phase and frequency modulation too
    (DCF77's pseudo-random phase keying, FSK). ``method="auto"`` (the default of
    :func:`locate_dataset`) runs both and keeps the one with more good pairs, then the
    smaller median standard error: the envelope on a plain keyed carrier, the complex signal
    on the real DCF77 recordings (see ``reports/localize.md``). Only frequencies with
    ``band[0] <= |f| <= band[1]`` enter the correlation. For each pair the capture is cut
    into chunks of ``chunk_s``; each chunk of receiver ``a`` (with 10 % cosine tapers at its
    ends) is correlated (FFT) with the same stretch of receiver ``b`` extended on both
    sides, so every lag sees the full overlap, and the same is done backwards (chunks of
    ``b`` against ``a``, shifted by the coarse delay): cutting a chunk biases its peak by an
    amount that depends on the signal at the cut, and as the same samples are cut both ways,
    half the difference of the forward and backward delays cancels that bias. Chunks within
    20 ms of a gap in either receiver are left out (a gap would otherwise correlate with the
    other receiver's signal, or with its own gap). The chunk correlations are summed
    (coherently for the envelope, in magnitude for the complex signal, which tolerates
    residual frequency offsets), the peak is searched within ``+-(baseline / v +
    lag_margin_s + search_extra_s)``, and located to a small fraction of a sample by Newton
    iterations on the exact band-limited correlation (its Fourier sum), started from
    parabolic interpolation. The delay ``tau_ab`` is the arrival time at ``a`` minus that at
    ``b``.
Quality and rejection
    Per pair: ``coefficient``, the correlation at the peak normalised so that identical
    signals give 1; ``psr_db``, the peak over the highest sidelobe of the whole-capture
    correlation within +-0.5 s outside the main lobe; and ``sigma_s``, the delay's standard
    error from the spread of the per-chunk peaks (1.4826 x median absolute deviation /
    sqrt(chunks)), at least ``sigma_floor_s``, with ``systematic_sigma_s`` added in
    quadrature. A pair is rejected when its coefficient is under ``min_coefficient``, its
    PSR under ``min_psr_db``, its sigma over ``max_sigma_s``, or its delay outside the
    physically possible ``|tau| <= baseline / v + lag_margin_s``.
Position
    A receiver at great-circle distance ``d_i`` (spherical Earth,
    :func:`heimdall_lab.geo.great_circle_m`) hears the transmitter after ``d_i / v`` with
    ``v = velocity_factor * c`` (ground wave; HF sky-wave paths are longer and are not
    modelled). ``chi2(p) = sum_pairs ((tau_ab - (d_a(p) - d_b(p)) / v) / sigma_ab)^2`` is
    evaluated on a latitude/longitude grid over the receivers' bounding box plus a margin;
    the lowest local minima of the grid are refined by ``scipy.optimize.least_squares`` in
    a local north/east frame (km), kept within the grid plus 10 % (a fit stopped at that
    edge is reported as not converged), and the best is the estimate. Other local solutions
    within the confidence level's chi-square of it are reported and flag the result
    ``ambiguous`` (three receivers can have two exact solutions where the hyperbolae cross
    twice).
Uncertainty
    The covariance of (east, north) in km is ``(J^T J)^-1`` with ``J`` the Jacobian of the
    normalised residuals at the estimate. It is multiplied by ``n_receivers / 2`` when all
    pairs are used (the pairs share receivers, so they are not independent: were the timing
    errors purely per receiver, the naive covariance would be too small by exactly that
    factor) and, when the
    fit has degrees of freedom, by the reduced chi-square if that exceeds 1. The ellipse's
    semi-axes are ``sqrt(eigenvalue * chi2.ppf(confidence, 2))``; its orientation is the
    major axis' azimuth, degrees clockwise from north. It reflects the measured timing noise
    only: systematic errors (propagation other than a ground wave at ``v``, receiver
    delays) are not in it unless ``systematic_sigma_s`` says how large they are.

Receivers without GNSS timestamps cannot take part; :func:`locate_rssi` /
:func:`locate_rssi_dataset` give a far cruder estimate from received power alone.

Entry points: :func:`locate_dataset` (a capture Dataset, the common input),
:func:`locate_recordings` (recordings plus positions), :func:`locate_files` (kiwi IQ WAV
files), and the pieces :func:`estimate_delay` and :func:`solve_tdoa`. Results are
:class:`Localization` objects (``to_dict()`` for storage); :func:`plot_localization` draws
one with matplotlib.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import xarray as xr
from scipy import fft as sfft
from scipy import ndimage, optimize, stats
from scipy.signal import windows

from heimdall_lab import dsp, geo, gnss
from heimdall_lab.dataset import build_dataset
from heimdall_lab.errors import HeimdallError, LocalizationError, ValidationError
from heimdall_lab.receivers import Receiver
from heimdall_lab.recording import Recording
from heimdall_lab.wavfile import read_kiwi_wav

__all__ = [
    "DEFAULT_BANDS",
    "METHODS",
    "DelayEstimate",
    "Localization",
    "PairDelay",
    "ReceiverTiming",
    "estimate_delay",
    "locate_dataset",
    "locate_files",
    "locate_recordings",
    "locate_rssi",
    "locate_rssi_dataset",
    "plot_localization",
    "solve_tdoa",
]

log = logging.getLogger(__name__)

Method = Literal["envelope", "complex"]
#: Correlation methods of :func:`estimate_delay` (:func:`locate_dataset` also takes "auto").
METHODS: tuple[str, ...] = ("envelope", "complex")
#: Default ``band`` (Hz from the carrier, ``(low, high)`` on ``|f|``) of each method.
DEFAULT_BANDS: dict[str, tuple[float, float]] = {
    "envelope": (0.0, 1000.0),
    "complex": (0.0, 3000.0),
}

_NS = 1_000_000_000
_WEEK_NS = gnss.WEEK_SECONDS * _NS
_KM_PER_DEG = geo.EARTH_RADIUS_M * math.pi / 180.0 / 1000.0
_NO_FIX = 253
_STALE = 2
_PSR_WINDOW_S = 0.5
_GAP_GUARD_S = 0.02
_TAPER = 0.1  # Tukey taper fraction of each chunk
_LEGEND_PAIRS = 6
_MAX_STARTS = 6


# ============================================================================================
# Results


def _clean(value: Any) -> Any:
    """JSON-able copy: numpy scalars to Python, NaN/inf to None, arrays to lists."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return _clean(value.tolist())
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        f = float(value)
        return f if math.isfinite(f) else None
    return value


@dataclass
class ReceiverTiming:
    """How one receiver's capture was timed, and whether it took part.

    Attributes
    ----------
    name : str
        Receiver name.
    latitude, longitude : float
        Position in degrees.
    used : bool
        Whether its samples entered the correlations.
    reason : str
        Why not (empty when used).
    sample_rate : float
        Rate fitted to its trusted GNSS timestamps, samples per second.
    n_frames, frames_used : int
        Frames received, and frames placed on the time axis.
    frames_untrusted : int
        Frames without a usable fix or stale (the first two).
    frames_inconsistent : int
        Trusted frames rejected because their timestamp disagrees with the sample count.
    lost_frames : int
        Frames lost in transit (jumps in ``frame_seq``).
    segments : int
        Gap-free runs of trusted frames.
    timestamp_rms_ns : float
        RMS of the used timestamps about their segments' lines, ns.
    start_s, end_s : float
        First and last usable sample, seconds from the capture's time reference.
    carrier_offset_hz : float
        Carrier offset removed before correlation, Hz (NaN when not estimated).
    power_dbfs : float
        Signal power above the noise (dsp ``signal_power_dbfs``), for information.
    """

    name: str
    latitude: float
    longitude: float
    used: bool = False
    reason: str = ""
    sample_rate: float = float("nan")
    n_frames: int = 0
    frames_used: int = 0
    frames_untrusted: int = 0
    frames_inconsistent: int = 0
    lost_frames: int = 0
    segments: int = 0
    timestamp_rms_ns: float = float("nan")
    start_s: float = float("nan")
    end_s: float = float("nan")
    carrier_offset_hz: float = float("nan")
    power_dbfs: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (NaN as None).

        Returns
        -------
        dict
            Field name to value.
        """
        return _clean({f.name: getattr(self, f.name) for f in fields(self)})


@dataclass
class DelayEstimate:
    """A time delay between two signals on one time grid (see :func:`estimate_delay`).

    Attributes
    ----------
    delay_s : float
        Arrival in the first signal minus arrival in the second, seconds (NaN if none).
    sigma_s : float
        Standard error from the spread of the per-chunk delays, seconds.
    coefficient : float
        Normalised correlation at the peak (1 for identical signals).
    psr_db : float
        Peak-to-sidelobe ratio of the whole-capture correlation, dB.
    n_chunks : int
        Chunks correlated.
    chunk_delays_s : numpy.ndarray
        Each chunk's own delay estimate, seconds.
    """

    delay_s: float
    sigma_s: float
    coefficient: float
    psr_db: float
    n_chunks: int
    chunk_delays_s: np.ndarray = field(default_factory=lambda: np.zeros(0))


@dataclass
class PairDelay:
    """The measured delay of one receiver pair and what became of it.

    Attributes
    ----------
    receiver_a, receiver_b : str
        The pair; ``delay_s`` is the arrival at ``a`` minus the arrival at ``b``.
    delay_s, sigma_s : float
        Measured delay and its standard error (with ``systematic_sigma_s``), seconds.
    coefficient, psr_db : float
        Correlation quality (see :class:`DelayEstimate`).
    max_delay_s : float
        Largest physically possible ``|delay|``: baseline / propagation speed.
    n_chunks : int
        Chunks correlated.
    used : bool
        Whether the pair entered the position fit.
    reason : str
        Why not (empty when used).
    model_delay_s : float
        Delay the estimated position predicts (NaN before solving).
    residual_s : float
        ``delay_s - model_delay_s``.
    truth_delay_s : float
        Delay a known position predicts, when one is given (:meth:`Localization.compare`).
    """

    receiver_a: str
    receiver_b: str
    delay_s: float
    sigma_s: float
    coefficient: float = float("nan")
    psr_db: float = float("nan")
    max_delay_s: float = float("nan")
    n_chunks: int = 0
    used: bool = True
    reason: str = ""
    model_delay_s: float = float("nan")
    residual_s: float = float("nan")
    truth_delay_s: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (NaN as None).

        Returns
        -------
        dict
            Field name to value.
        """
        return _clean({f.name: getattr(self, f.name) for f in fields(self)})


@dataclass
class Localization:
    """A located transmitter: estimate, uncertainty, and everything it came from.

    Attributes
    ----------
    latitude, longitude : float
        The estimate, degrees.
    kind : str
        ``"tdoa"``, or ``"rssi"`` for the far cruder received-power estimate.
    method : str
        ``"envelope"`` / ``"complex"`` (TDoA) or ``"pathloss"`` / ``"centroid"`` (RSSI).
    semi_major_km, semi_minor_km : float
        Semi-axes of the uncertainty ellipse at ``confidence``, km.
    orientation_deg : float
        Azimuth of the major axis, degrees clockwise from north, in [0, 180).
    confidence : float
        Probability content of the ellipse (2-D Gaussian).
    covariance_km2 : numpy.ndarray
        2 x 2 covariance of (east, north) in km^2.
    receivers : list of ReceiverTiming
        Every receiver of the input, used or not and why.
    pairs : list of PairDelay
        Every pair correlated, used or not and why, with residuals at the estimate.
    chi2 : float
        Sum of squared normalised residuals at the estimate.
    dof : int
        Measurements minus fitted parameters.
    converged : bool
        Whether the least-squares refinement converged.
    ambiguous : bool
        Whether another local solution fits about as well (see ``alternatives``).
    alternatives : list of dict
        Other local solutions (``latitude``, ``longitude``, ``chi2``, ``distance_km``).
    likelihood : xarray.DataArray or None
        ``exp(-(chi2 - min chi2) / 2)`` on the search grid, dims ``(latitude, longitude)``.
    chi2_grid : xarray.DataArray or None
        ``chi2`` on the same grid (better for plotting when the likelihood is very peaked).
    velocity_factor : float
        Propagation speed as a fraction of the speed of light.
    span_s : float
        Length of the common time span correlated, seconds.
    start_time : str
        UTC time of the common span's start (ISO 8601), empty when unknown.
    run_time_s : float
        Wall-clock time of the computation, seconds.
    settings : dict
        The options used.
    notes : list of str
        Caveats (for example that an RSSI estimate is crude).
    capture_id : str
        Identifier of the capture, when known.
    """

    latitude: float
    longitude: float
    kind: str = "tdoa"
    method: str = ""
    semi_major_km: float = float("nan")
    semi_minor_km: float = float("nan")
    orientation_deg: float = float("nan")
    confidence: float = 0.95
    covariance_km2: np.ndarray = field(default_factory=lambda: np.full((2, 2), np.nan))
    receivers: list[ReceiverTiming] = field(default_factory=list)
    pairs: list[PairDelay] = field(default_factory=list)
    chi2: float = float("nan")
    dof: int = 0
    converged: bool = False
    ambiguous: bool = False
    alternatives: list[dict[str, float]] = field(default_factory=list)
    likelihood: xr.DataArray | None = None
    chi2_grid: xr.DataArray | None = None
    velocity_factor: float = 1.0
    span_s: float = float("nan")
    start_time: str = ""
    run_time_s: float = float("nan")
    settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    capture_id: str = ""

    @property
    def used_receivers(self) -> list[str]:
        """Names of the receivers that took part."""
        return [r.name for r in self.receivers if r.used]

    @property
    def used_pairs(self) -> list[PairDelay]:
        """The pairs that entered the position fit."""
        return [p for p in self.pairs if p.used]

    def error_km(self, latitude: float, longitude: float) -> float:
        """Great-circle distance from the estimate to a known position.

        Parameters
        ----------
        latitude, longitude : float
            The known (true) position, degrees.

        Returns
        -------
        float
            Distance in km.

        Raises
        ------
        ValidationError
            If the position is not on the Earth.
        """
        return float(geo.great_circle_m(self.latitude, self.longitude, latitude, longitude)) / 1e3

    def compare(self, latitude: float, longitude: float) -> list[PairDelay]:
        """Fill each pair's ``truth_delay_s`` from a known transmitter position.

        Parameters
        ----------
        latitude, longitude : float
            The known (true) position, degrees.

        Returns
        -------
        list of PairDelay
            The pairs, with ``truth_delay_s`` set (ground wave at ``velocity_factor``).

        Raises
        ------
        ValidationError
            If the position is not on the Earth.
        """
        geo.check_position(latitude, longitude, "known position")
        pos = {r.name: (r.latitude, r.longitude) for r in self.receivers}
        v = geo.SPEED_OF_LIGHT * self.velocity_factor
        for p in self.pairs:
            da = geo.great_circle_m(latitude, longitude, *pos[p.receiver_a])
            db = geo.great_circle_m(latitude, longitude, *pos[p.receiver_b])
            p.truth_delay_s = float(da - db) / v
        return self.pairs

    def to_dict(self, include_grid: bool = False) -> dict[str, Any]:
        """A JSON-able description, for a database row or a file.

        Parameters
        ----------
        include_grid : bool, default False
            Also include the chi-square grid (``grid``: latitudes, longitudes, chi2 values
            as nested lists), which can be large.

        Returns
        -------
        dict
            Every scalar field, ``covariance_km2`` as nested lists, ``receivers`` and
            ``pairs`` as lists of dicts; NaN and infinities become ``None`` so that the
            result is strict JSON.
        """
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name in ("likelihood", "chi2_grid", "receivers", "pairs"):
                continue
            out[f.name] = getattr(self, f.name)
        out["receivers"] = [r.to_dict() for r in self.receivers]
        out["pairs"] = [p.to_dict() for p in self.pairs]
        out["format"] = "heimdall_lab.localization"
        out["version"] = 1
        if include_grid and self.chi2_grid is not None:
            out["grid"] = {
                "latitude": self.chi2_grid["latitude"].values,
                "longitude": self.chi2_grid["longitude"].values,
                "chi2": self.chi2_grid.values,
            }
        return _clean(out)

    def summary(self) -> str:
        """One line: position, ellipse and fit.

        Returns
        -------
        str
            Human-readable summary.
        """
        return (
            f"{self.kind}/{self.method}: {self.latitude:.4f} N {self.longitude:.4f} E, "
            f"{self.confidence:.0%} ellipse {self.semi_major_km:.2f} x {self.semi_minor_km:.2f} km "
            f"at {self.orientation_deg:.0f} deg, chi2 {self.chi2:.2f} ({self.dof} dof), "
            f"{len(self.used_receivers)} receivers, {len(self.used_pairs)} pairs"
            + (", AMBIGUOUS" if self.ambiguous else "")
        )


# ============================================================================================
# Input validation


def _positive(value: Any, name: str, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValidationError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ValidationError(f"{name} must be a finite number {'>=' if allow_zero else '>'} 0")
    return v


def _check_method(method: Any, auto: bool = False) -> str:
    allowed = (*METHODS, "auto") if auto else METHODS
    if method not in allowed:
        raise ValidationError(f"unknown method {method!r}; choose one of {', '.join(allowed)}")
    return str(method)


def _check_band(band: Any, method: str, fs: float) -> tuple[float, float]:
    if band is None:
        lo, hi = DEFAULT_BANDS[method]
    else:
        try:
            lo, hi = (float(b) for b in band)
        except (TypeError, ValueError) as exc:
            raise ValidationError(f"band must be (low_hz, high_hz), got {band!r}") from exc
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo < hi):
            raise ValidationError(f"band must satisfy 0 <= low < high (Hz), got {band!r}")
    hi = min(hi, fs / 2.0)
    if lo >= hi:
        raise ValidationError(f"band {band!r} lies outside the +-{fs / 2:.0f} Hz sampled band")
    return lo, hi


def _check_receiver_position(name: str, lat: Any, lon: Any) -> tuple[float, float]:
    try:
        la, lo = float(lat), float(lon)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"receiver {name}: position {lat!r}, {lon!r} is not numeric") from exc
    geo.check_position(la, lo, f"receiver {name}")
    if la == 0.0 and lo == 0.0:
        raise ValidationError(
            f"receiver {name}: position 0, 0 is the Receiver default, not a real position; "
            "set the receiver's latitude and longitude"
        )
    return la, lo


# ============================================================================================
# Alignment on GNSS time


@dataclass
class _Track:
    """One receiver's usable samples with their GNSS times (s from the common reference)."""

    timing: ReceiverTiming
    t: np.ndarray
    x: np.ndarray
    rate: float


def _wrap_ns(ns: np.ndarray) -> np.ndarray:
    """Wrap int64 ns differences into [-half week, half week)."""
    return (ns + _WEEK_NS // 2) % _WEEK_NS - _WEEK_NS // 2


def _segments(
    starts: np.ndarray, t: np.ndarray, fidx: np.ndarray, seq: np.ndarray, nominal: float
) -> tuple[np.ndarray, np.ndarray]:
    """Segment id per trusted frame, and whether each break is explained by lost frames."""
    if len(starts) == 0:
        return np.zeros(0, np.int64), np.zeros(0, bool)
    ds_ = np.diff(starts).astype(np.float64)
    dt = np.diff(t)
    expected = ds_ / nominal
    dseq = np.diff(seq) & 0xFFFFFFFF
    lost = dseq != np.diff(fidx)
    timing_jump = np.abs(dt - expected) > 0.01 * np.abs(expected) + 1e-4
    brk = lost | timing_jump | (ds_ <= 0)
    return np.concatenate([[0], np.cumsum(brk)]), np.concatenate([[True], lost])


def _fit_rate(s: np.ndarray, t: np.ndarray, seg: np.ndarray) -> tuple[float, np.ndarray]:
    """Seconds per sample pooled over segments, and each frame's residual (s)."""
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
    if den <= 0:
        return float("nan"), np.zeros_like(t)
    b = num / den
    res = np.zeros_like(t)
    for g, (sm, tm) in means.items():
        m = seg == g
        res[m] = t[m] - (tm + b * (s[m] - sm))
    return b, res


def _track_from_arrays(
    timing: ReceiverTiming,
    iq: np.ndarray,
    frame_start: np.ndarray,
    frame_seq: np.ndarray,
    rel_ns: np.ndarray,
    trusted: np.ndarray,
    nominal: float,
    max_timestamp_error_s: float,
    min_duration_s: float,
) -> _Track | None:
    """Place one receiver's trusted frames on the time axis (see the module docstring)."""
    n = len(iq)
    k_all = np.flatnonzero((frame_start >= 0) & (frame_start < n))
    timing.n_frames = len(k_all)
    if len(k_all) == 0:
        timing.reason = "no frames"
        return None
    starts = frame_start[k_all]
    if np.any(np.diff(starts) <= 0):
        timing.reason = "frame_start is not increasing"
        return None
    lengths = np.diff(np.append(starts, n))
    seq = frame_seq[k_all] if frame_seq is not None else k_all.astype(np.int64)
    steps = np.diff(seq) & 0xFFFFFFFF
    timing.lost_frames = int(np.sum(np.where(steps > 1, steps - 1, 0)))
    ok = trusted[k_all].astype(bool)
    timing.frames_untrusted = int(np.sum(~ok))
    u = np.flatnonzero(ok)
    if len(u) < 2:
        timing.reason = f"{len(u)} frame(s) with a usable GNSS fix (need at least 2)"
        return None
    s = starts[u].astype(np.float64)
    t = rel_ns[k_all][u].astype(np.float64) / _NS
    # A robust first guess of the rate (for telling timing jumps from jitter): the median
    # over neighbouring trusted frames with nothing lost between them.
    step_ok = ((np.diff(seq[u]) & 0xFFFFFFFF) == np.diff(k_all[u])) & (np.diff(t) > 0)
    if step_ok.any():
        nominal = float(np.median(np.diff(s)[step_ok] / np.diff(t)[step_ok]))
    keep = np.ones(len(u), bool)
    b = float("nan")
    for _ in range(3):  # fit, drop frames far off their segment's line, fit again
        seg, explained = _segments(starts[u][keep], t[keep], k_all[u][keep], seq[u][keep], nominal)
        b, res = _fit_rate(s[keep], t[keep], seg)
        if not math.isfinite(b) or b <= 0:
            break
        bad = np.abs(res) > max_timestamp_error_s
        # A lone frame cut off by unexplained timing jumps on both sides is a bad timestamp.
        sizes = np.bincount(seg)
        lone = sizes[seg] == 1
        nxt = np.append(explained[1:], True)
        bad |= lone & ~explained & ~nxt & (len(seg) > 2)
        if not bad.any():
            break
        idx = np.flatnonzero(keep)
        keep[idx[bad]] = False
    if not math.isfinite(b) or b <= 0:
        timing.reason = "no two consecutive trusted frames to derive the sample rate from"
        return None
    rate = 1.0 / b
    seg, _ = _segments(starts[u][keep], t[keep], k_all[u][keep], seq[u][keep], nominal)
    _, res = _fit_rate(s[keep], t[keep], seg)
    sizes = np.bincount(seg)
    in_fit = sizes[seg] >= 2
    timing.timestamp_rms_ns = (
        float(np.sqrt(np.mean(res[in_fit] ** 2)) * 1e9) if in_fit.any() else float("nan")
    )
    timing.segments = len(sizes)
    # Frames overlapping earlier ones in time (a bad timestamp) are dropped.
    used = np.flatnonzero(keep)
    t_used = t[used]
    ends = t_used + lengths[u][used] / rate
    good = np.ones(len(used), bool)
    last_end = -np.inf
    for i in range(len(used)):
        if t_used[i] < last_end - 0.5 / rate:
            good[i] = False
            continue
        last_end = ends[i]
    used = used[good]
    timing.frames_inconsistent = int(len(u) - len(used))
    timing.frames_used = len(used)
    timing.sample_rate = rate
    if timing.frames_inconsistent:
        log.warning(
            "%s: %d trusted frame(s) rejected: timestamp inconsistent with the sample count",
            timing.name,
            timing.frames_inconsistent,
        )
    fr = u[used]
    f_starts = starts[fr]
    f_len = lengths[fr]
    total = int(f_len.sum())
    offs = np.repeat(np.cumsum(np.concatenate([[0], f_len[:-1]])), f_len)
    within = np.arange(total) - offs
    idx = np.repeat(f_starts, f_len) + within
    times = np.repeat(t[used], f_len) + within / rate
    x = np.asarray(iq[idx], dtype=np.complex128)
    finite = np.isfinite(x)
    if not finite.all():
        times, x = times[finite], x[finite]
    if len(times) < 2 or times[-1] - times[0] < min_duration_s:
        timing.reason = (
            f"only {0 if len(times) < 2 else times[-1] - times[0]:.2f} s of GNSS-timed samples "
            f"(need {min_duration_s:g} s)"
        )
        return None
    timing.start_s, timing.end_s = float(times[0]), float(times[-1])
    timing.used = True
    return _Track(timing, times, x, rate)


def _dataset_tracks(
    ds: xr.Dataset, max_timestamp_error_s: float, min_duration_s: float
) -> tuple[list[ReceiverTiming], list[_Track], np.datetime64 | None]:
    """Every receiver's timing report and the usable tracks of a capture Dataset."""
    if not isinstance(ds, xr.Dataset):
        raise ValidationError(f"expected an xarray.Dataset (a capture), got {type(ds).__name__}")
    needed = ["iq", "frame_start", "frame_gpssec", "frame_gpsnsec"]
    missing = [v for v in needed if v not in ds.variables]
    if "frame_trusted" not in ds.variables and "frame_gps_solution" not in ds.variables:
        missing.append("frame_trusted (or frame_gps_solution)")
    for c in ("latitude", "longitude"):
        if c not in ds.variables:
            missing.append(c)
    if missing:
        raise ValidationError(
            "the capture Dataset lacks " + ", ".join(missing) + "; build it with "
            "heimdall_lab.fetch.acquire or heimdall_lab.dataset.build_dataset"
        )
    if tuple(ds["iq"].dims) != ("receiver", "sample"):
        raise ValidationError(f"ds.iq must have dims ('receiver', 'sample'), got {ds['iq'].dims}")
    n_rx = ds.sizes["receiver"]
    names = (
        [str(v) for v in ds["receiver"].values]
        if "receiver" in ds.variables
        else [f"rx{i}" for i in range(n_rx)]
    )
    lat = np.asarray(ds["latitude"].values, dtype=np.float64)
    lon = np.asarray(ds["longitude"].values, dtype=np.float64)
    positions = [_check_receiver_position(n, a, b) for n, a, b in zip(names, lat, lon, strict=True)]
    iq_all = ds["iq"].values
    f_start = np.asarray(ds["frame_start"].values, dtype=np.int64)
    f_seq = np.asarray(ds["frame_seq"].values, np.int64) if "frame_seq" in ds.variables else None
    f_sec = np.asarray(ds["frame_gpssec"].values, dtype=np.int64)
    f_nsec = np.asarray(ds["frame_gpsnsec"].values, dtype=np.int64)
    if "frame_trusted" in ds.variables:
        trusted = np.asarray(ds["frame_trusted"].values, dtype=bool)
    else:
        sol = np.asarray(ds["frame_gps_solution"].values)
        trusted = (sol >= 0) & (sol < _NO_FIX)
        trusted[:, :_STALE] = False
    trusted = trusted & (f_sec >= 0) & (f_nsec >= 0)
    n_samples = (
        np.asarray(ds["n_samples"].values, dtype=np.int64)
        if "n_samples" in ds.variables
        else np.full(n_rx, ds.sizes["sample"], np.int64)
    )
    nominal = (
        np.asarray(ds["sample_rate"].values, dtype=np.float64)
        if "sample_rate" in ds.variables
        else np.full(n_rx, 12000.0)
    )
    tow = f_sec * _NS + f_nsec
    ref_ns: int | None = None
    epoch: np.datetime64 | None = None
    for i in range(n_rx):
        k = np.flatnonzero(trusted[i])
        if len(k):
            ref_ns = int(tow[i, k[0]])
            if "frame_time" in ds.variables:
                ft = np.asarray(ds["frame_time"].values[i, k[0]], dtype="M8[ns]")
                epoch = None if np.isnat(ft) else ft
            break
    timings: list[ReceiverTiming] = []
    tracks: list[_Track] = []
    for i, name in enumerate(names):
        timing = ReceiverTiming(name, *positions[i])
        timings.append(timing)
        if ref_ns is None:
            timing.reason = "no frame with a usable GNSS fix"
            continue
        rel = _wrap_ns(tow[i] - ref_ns)
        rate_guess = nominal[i] if math.isfinite(nominal[i]) and nominal[i] > 0 else 12000.0
        track = _track_from_arrays(
            timing,
            iq_all[i, : int(n_samples[i])],
            f_start[i],
            f_seq[i] if f_seq is not None else None,
            rel,
            trusted[i],
            rate_guess,
            max_timestamp_error_s,
            min_duration_s,
        )
        if track is None:
            log.info("%s left out: %s", name, timing.reason)
        else:
            tracks.append(track)
    return timings, tracks, epoch


# ============================================================================================
# Carrier and resampling


def _carrier_offset(track: _Track) -> float:
    """Carrier offset (Hz) of a track: dsp's estimate refined by a weighted phase-slope fit."""
    x, t = track.x, track.t
    try:
        m = dsp.measure(x, track.rate)
        f0 = float(m.measured_offset_hz)
        track.timing.power_dbfs = float(m.signal_power_dbfs)
    except HeimdallError:
        spec = np.abs(np.fft.fft(x))
        f0 = float(np.fft.fftfreq(len(x), 1.0 / track.rate)[int(np.argmax(spec))])
    # Refine: phase of 0.1 s block sums of the mixed-down signal, weighted linear fit.
    for _ in range(2):
        y = x * np.exp(-2j * np.pi * f0 * t)
        edges = np.arange(t[0], t[-1] - 0.1, 0.1)
        if len(edges) < 4:
            break
        blk = np.searchsorted(t, edges)
        sums = np.add.reduceat(y, blk)
        mid = edges + 0.05
        w = np.abs(sums)
        if not np.any(w > 0):
            break
        ph = np.unwrap(np.angle(sums))
        coef = np.polyfit(mid - mid.mean(), ph, 1, w=w / w.max())
        df = coef[0] / (2 * np.pi)
        if not math.isfinite(df) or abs(df) > 2.0:
            break
        f0 += df
        if abs(df) < 1e-6:
            break
    return f0


def _resample(track: _Track, grid: np.ndarray, f0: float) -> tuple[np.ndarray, np.ndarray]:
    """Mix a track to 0 Hz and interpolate it linearly onto ``grid``; invalid in gaps."""
    t, x = track.t, track.x
    y = x * np.exp(-2j * np.pi * f0 * t)
    idx = np.searchsorted(t, grid, side="right")
    inside = (idx > 0) & (idx < len(t))
    i1 = np.clip(idx, 1, len(t) - 1)
    i0 = i1 - 1
    dt = t[i1] - t[i0]
    valid = inside & (dt <= 1.5 / track.rate)
    w = np.where(valid, (grid - t[i0]) / np.where(dt > 0, dt, 1.0), 0.0)
    out = y[i0] * (1.0 - w) + y[i1] * w
    out[~valid] = 0.0
    return out, valid


def _band_mask(n: int, fs: float, lo: float, hi: float) -> np.ndarray:
    f = np.abs(sfft.fftfreq(n, 1.0 / fs))
    return (f >= lo) & (f <= hi)


def _prepare(y: np.ndarray, valid: np.ndarray, method: str, fs: float, band: tuple) -> np.ndarray:
    """The signal to correlate: envelope of the band-limited signal, or the complex signal."""
    if method == "envelope":
        n = sfft.next_fast_len(len(y))
        spec = sfft.fft(y, n)
        spec[~_band_mask(n, fs, 0.0, band[1])] = 0.0
        z = np.abs(sfft.ifft(spec)[: len(y)])
    else:
        z = y.astype(np.complex128, copy=True)
    if valid.any():
        z = z - z[valid].mean()
    z[~valid] = 0.0
    return z


# ============================================================================================
# Pair delay


def _parabolic(ym: float, y0: float, yp: float) -> float:
    den = ym - 2.0 * y0 + yp
    if den >= 0 or not math.isfinite(den):
        return 0.0
    return float(np.clip(0.5 * (ym - yp) / den, -0.5, 0.5))


def _rows_dot(m: np.ndarray, v: np.ndarray) -> np.ndarray:
    # einsum, not BLAS: a complex matrix-vector product in a multithreaded BLAS is many
    # times slower here when the cores are busy.
    return np.einsum("kn,n->k", m, v)


def _newton(
    spec: np.ndarray, omega: np.ndarray, tau0: float, coherent: bool, iterations: int = 8
) -> float:
    """Maximise the band-limited correlation near ``tau0`` (samples).

    ``spec`` is (K, bins): ``c_k(tau) = sum spec_k e^{j omega tau}``. Coherent: maximise
    ``Re sum_k c_k``; else ``sum_k |c_k|``. Falls back to ``tau0`` if the iteration leaves
    +-1 sample of it.
    """
    tau = tau0
    for _ in range(iterations):
        e = np.exp(1j * omega * tau)
        oe = omega * e
        c = _rows_dot(spec, e)
        c1 = 1j * _rows_dot(spec, oe)
        c2 = -_rows_dot(spec, omega * oe)
        if coherent:
            f1 = float(np.sum(c1).real)
            f2 = float(np.sum(c2).real)
        else:
            mag = np.maximum(np.abs(c), 1e-300)
            g = (np.conj(c) * c1).real
            f1 = float(np.sum(g / mag))
            f2 = float(np.sum((np.abs(c1) ** 2 + (np.conj(c) * c2).real) / mag - g**2 / mag**3))
        if not (f2 < 0 and math.isfinite(f1)):
            break
        step = float(np.clip(-f1 / f2, -0.5, 0.5))
        tau += step
        if abs(tau - tau0) > 1.0:
            return tau0
        if abs(step) < 1e-6:
            break
    return tau


@dataclass
class _Signal:
    """A prepared signal on the common grid (envelope or complex), with its validity."""

    z: np.ndarray
    valid: np.ndarray


@dataclass
class _Chunks:
    """Band-limited spectra of chunks of ``x`` against ``y`` extended by ``w`` each side.

    ``spec[k]`` holds, for the in-band bins, ``X_k conj(Y_k) e^{-j omega w} / nfft``, so
    that chunk ``k``'s correlation is ``c_k(tau) = sum spec[k] e^{j omega tau}`` (``tau``
    in samples); ``pxx``/``pyy`` are the chunks' in-band periodograms of ``x`` and of ``y``
    over the same samples (``|X|^2 / nfft``).
    """

    spec: np.ndarray
    pxx: np.ndarray
    pyy: np.ndarray


def _chunk_spectra(
    x: np.ndarray,
    y: np.ndarray,
    starts: np.ndarray,
    length: int,
    w: int,
    nfft: int,
    mask: np.ndarray,
) -> _Chunks:
    omega = 2 * np.pi * sfft.fftfreq(nfft)[mask]
    shift = np.exp(-1j * omega * w) / nfft
    # Cosine tapers at the chunk's ends: a hard cut rings through the band limit and biases
    # the delay by up to a microsecond (1 s chunks, 1 kHz band); tapered, by nanoseconds.
    taper = windows.tukey(length, _TAPER)
    k_chunks, nb = len(starts), int(mask.sum())
    spec = np.zeros((k_chunks, nb), np.complex128)
    pxx = np.zeros((k_chunks, nb))
    pyy = np.zeros((k_chunks, nb))
    for k, s0 in enumerate(starts):
        fx = sfft.fft(x[s0 : s0 + length] * taper, nfft)[mask]
        fy = sfft.fft(y[s0 - w : s0 + length + w], nfft)[mask]
        fy_same = sfft.fft(y[s0 : s0 + length] * taper, nfft)[mask]
        spec[k] = fx * np.conj(fy) * shift
        pxx[k] = np.abs(fx) ** 2 / nfft
        pyy[k] = np.abs(fy_same) ** 2 / nfft
    return _Chunks(spec, pxx, pyy)


def _integer_curves(
    spec: np.ndarray, mask: np.ndarray, lags: np.ndarray, coherent: bool
) -> np.ndarray:
    """Correlation at integer ``lags`` of each row of in-band cross-spectra."""
    nfft = len(mask)
    full = np.zeros((spec.shape[0], nfft), np.complex128)
    full[:, mask] = spec
    r = sfft.ifft(full, axis=1) * nfft
    vals = r[:, lags % nfft]
    return vals.real if coherent else np.abs(vals)


def _peak(
    curve: np.ndarray,
    lags: np.ndarray,
    spec: np.ndarray,
    omega: np.ndarray,
    coherent: bool,
    around: int,
    reach: int,
    iterations: int = 8,
) -> float:
    """Sub-sample peak (samples) of a correlation near lag ``around`` (within ``reach``)."""
    idx = np.flatnonzero(np.abs(lags - around) <= reach)
    i = int(idx[np.argmax(curve[idx])])
    i = int(np.clip(i, 1, len(lags) - 2))
    tau0 = lags[i] + _parabolic(curve[i - 1], curve[i], curve[i + 1])
    return _newton(spec, omega, tau0, coherent, iterations)


def _value(spec: np.ndarray, omega: np.ndarray, tau: float, coherent: bool) -> float:
    e = np.exp(1j * omega * tau)
    c = _rows_dot(spec, e)
    return float(c.sum().real) if coherent else float(np.abs(c).sum())


def _correlate(
    a: _Signal,
    b: _Signal,
    fs: float,
    *,
    coherent: bool,
    band: tuple[float, float],
    search_s: float,
    chunk_s: float,
) -> DelayEstimate:
    """Delay of ``a`` relative to ``b`` (both on the same grid); see the module docstring.

    Chunks of one signal are correlated with the other extended on both sides, forwards
    (chunks of ``a``) and backwards (chunks of ``b``, shifted by the coarse delay). Cutting
    a chunk biases its peak by an amount that depends on the signal at the cut; the same
    samples are cut in both directions, so half the difference of the two delays cancels
    the bias.
    """
    nan = float("nan")
    n = len(a.z)
    w_search = math.ceil(search_s * fs) + 2
    w = w_search + 2
    za = np.where(a.valid, a.z, 0)
    zb = np.where(b.valid, b.z, 0)
    usable = n - 4 * w
    if usable < max(16, 4 * w_search):
        return DelayEstimate(nan, nan, nan, nan, 0)
    length = round(chunk_s * fs)
    k_chunks = max(1, usable // max(length, 1))
    length = usable // k_chunks
    nfft = sfft.next_fast_len(2 * length + 2 * w)
    mask = _band_mask(nfft, fs, *band)
    if mask.sum() < 4:
        return DelayEstimate(nan, nan, nan, nan, 0)
    omega = 2 * np.pi * sfft.fftfreq(nfft)[mask]
    lags = np.arange(-w_search, w_search + 1)
    starts = 2 * w + length * np.arange(k_chunks)
    # Chunks that reach a gap in either receiver (or the filter's ringing next to it) are
    # left out: a gap would correlate with nothing, or with the other receiver's gap.
    bad = ~(a.valid & b.valid)
    if bad.any():
        guard = 2 * w + round(_GAP_GUARD_S * fs)
        near_gap = np.convolve(bad.astype(np.float64), np.ones(2 * guard + 1), "same") > 0.5
        starts = np.array([s0 for s0 in starts if not near_gap[s0 : s0 + length].any()])
        k_chunks = len(starts)
        if k_chunks == 0:
            return DelayEstimate(nan, nan, nan, nan, 0)
    fwd = _chunk_spectra(za, zb, starts, length, w, nfft, mask)
    curves_f = _integer_curves(fwd.spec, mask, lags, coherent)
    total_f = curves_f.sum(axis=0)
    if not np.any(total_f > 0):
        return DelayEstimate(nan, nan, 0.0, nan, k_chunks)
    m0 = int(lags[np.argmax(total_f)])
    bwd = _chunk_spectra(zb, za, starts - m0, length, w, nfft, mask)
    curves_b = _integer_curves(bwd.spec, mask, lags, coherent)
    reach = 3
    spec_f = fwd.spec.sum(axis=0, keepdims=True) if coherent else fwd.spec
    spec_b = bwd.spec.sum(axis=0, keepdims=True) if coherent else bwd.spec
    tau_f = _peak(total_f, lags, spec_f, omega, coherent, m0, reach)
    tau_b = _peak(curves_b.sum(axis=0), lags, spec_b, omega, coherent, -m0, reach)
    tau = 0.5 * (tau_f - tau_b)
    # Quality: the normalised correlation at the estimated delay.
    if coherent:
        denom = math.sqrt(max(fwd.pxx.sum() * fwd.pyy.sum(), 1e-300))
        coefficient = _value(spec_f, omega, tau, True) / denom
    else:
        denom = float(np.sum(np.sqrt(fwd.pxx.sum(axis=1) * fwd.pyy.sum(axis=1))))
        coefficient = _value(fwd.spec, omega, tau, False) / max(denom, 1e-300)
    chunk_delays = np.full(k_chunks, nan)
    for k in range(k_chunks):
        # Chunk delays only give the spread: three Newton steps are plenty.
        tf = _peak(curves_f[k], lags, fwd.spec[k : k + 1], omega, coherent, m0, w_search, 3)
        tb = _peak(curves_b[k], lags, bwd.spec[k : k + 1], omega, coherent, -m0, w_search, 3)
        chunk_delays[k] = 0.5 * (tf - tb) / fs
    psr = _psr(za, zb, fs, band, coherent, m0, w_search)
    return DelayEstimate(
        tau / fs, _chunk_sigma(chunk_delays), coefficient, psr, k_chunks, chunk_delays
    )


def _psr(
    za: np.ndarray,
    zb: np.ndarray,
    fs: float,
    band: tuple[float, float],
    coherent: bool,
    peak_lag: int,
    w_search: int,
) -> float:
    """Peak over the highest sidelobe of the whole-capture correlation, dB.

    Sidelobes are searched within +-0.5 s, outside twice the main lobe's half width.
    """
    n = len(za)
    window = max(w_search, int(min(_PSR_WINDOW_S * fs, n // 4)))
    nfft = sfft.next_fast_len(n + window + 1)
    mask = _band_mask(nfft, fs, *band)
    spec = np.zeros(nfft, np.complex128)
    spec[mask] = sfft.fft(za, nfft)[mask] * np.conj(sfft.fft(zb, nfft)[mask])
    r = sfft.ifft(spec)
    lags = np.arange(-window, window + 1)
    vals = r[lags % nfft]
    c = vals.real if coherent else np.abs(vals)
    near = np.flatnonzero(np.abs(lags - peak_lag) <= 3)
    p = int(near[np.argmax(c[near])])
    peak = c[p]
    if peak <= 0:
        return float("nan")
    half = 0.5 * peak
    lo = p
    while lo > 0 and c[lo] > half:
        lo -= 1
    hi = p
    while hi < len(c) - 1 and c[hi] > half:
        hi += 1
    width = max(hi - p, p - lo, 2)
    side = np.abs(lags - lags[p]) > 2 * width
    if not side.any():
        return float("nan")
    top = float(np.max(c[side]))
    if top <= 0:
        return float("inf")
    return float(20.0 * math.log10(peak / top))


def _chunk_sigma(d: np.ndarray) -> float:
    d = d[np.isfinite(d)]
    k = len(d)
    if k < 2:
        return float("nan")
    if k < 5:
        return float(np.std(d, ddof=1) / math.sqrt(k))
    mad = float(np.median(np.abs(d - np.median(d))))
    return 1.4826 * mad / math.sqrt(k)


def estimate_delay(
    x: np.ndarray,
    y: np.ndarray,
    sample_rate: float,
    *,
    method: Method = "envelope",
    band: tuple[float, float] | None = None,
    max_delay_s: float = 0.01,
    chunk_s: float = 1.0,
    valid_x: np.ndarray | None = None,
    valid_y: np.ndarray | None = None,
) -> DelayEstimate:
    """Delay between two complex baseband signals sampled on the same time grid.

    The same correlation :func:`locate_dataset` runs for each receiver pair (module
    docstring), without the GNSS alignment: ``x`` and ``y`` must already share one grid.

    Parameters
    ----------
    x, y : numpy.ndarray
        Complex (or real) 1-D signals of equal length, carrier near 0 Hz.
    sample_rate : float
        Grid rate, samples per second.
    method : {"envelope", "complex"}, default "envelope"
        Correlate the envelope ``|.|`` (mean removed) or the complex signal (mean removed;
        chunk correlations combined in magnitude).
    band : (float, float), optional
        ``(low_hz, high_hz)`` on ``|f|`` kept for the correlation (and, for the envelope,
        before taking the magnitude); :data:`DEFAULT_BANDS` by default.
    max_delay_s : float, default 0.01
        Search the peak within +-this.
    chunk_s : float, default 1.0
        Chunk length for the per-chunk estimates that give ``sigma_s``.
    valid_x, valid_y : numpy.ndarray of bool, optional
        Samples to use (default: the finite ones).

    Returns
    -------
    DelayEstimate
        ``delay_s`` positive when ``x`` receives later than ``y``; NaN when no peak.

    Raises
    ------
    ValidationError
        On arrays of different lengths or not 1-D, a bad rate, method or band.
    """
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim != 1 or y.ndim != 1 or len(x) != len(y):
        raise ValidationError("x and y must be 1-D arrays of the same length")
    fs = _positive(sample_rate, "sample_rate")
    method = _check_method(method)
    lo_hi = _check_band(band, method, fs)
    max_delay = _positive(max_delay_s, "max_delay_s")
    chunk = _positive(chunk_s, "chunk_s")
    vx = np.isfinite(x) if valid_x is None else np.asarray(valid_x, bool) & np.isfinite(x)
    vy = np.isfinite(y) if valid_y is None else np.asarray(valid_y, bool) & np.isfinite(y)
    xs = _Signal(_prepare(np.where(vx, x, 0).astype(np.complex128), vx, method, fs, lo_hi), vx)
    ys = _Signal(_prepare(np.where(vy, y, 0).astype(np.complex128), vy, method, fs, lo_hi), vy)
    return _correlate(
        xs,
        ys,
        fs,
        coherent=method == "envelope",
        band=lo_hi,
        search_s=max_delay,
        chunk_s=chunk,
    )


# ============================================================================================
# Position solver


def _bounds(
    lat: np.ndarray, lon: np.ndarray, bounds: Sequence[float] | None, margin_deg: float | None
) -> tuple[float, float, float, float]:
    if bounds is not None:
        try:
            la0, la1, lo0, lo1 = (float(b) for b in bounds)
        except (TypeError, ValueError) as exc:
            raise ValidationError(
                f"bounds must be (lat_min, lat_max, lon_min, lon_max), got {bounds!r}"
            ) from exc
        geo.check_position([la0, la1], [lo0, lo1], "bounds")
        if not (la0 < la1 and lo0 < lo1):
            raise ValidationError(f"bounds must be increasing (min < max), got {bounds!r}")
        return la0, la1, lo0, lo1
    extent = max(float(np.ptp(lat)), float(np.ptp(lon)))
    m = max(2.0, 0.5 * extent) if margin_deg is None else _positive(margin_deg, "margin_deg")
    return (
        max(-89.0, float(lat.min()) - m),
        min(89.0, float(lat.max()) + m),
        max(-180.0, float(lon.min()) - m),
        min(180.0, float(lon.max()) + m),
    )


def _local_to_ll(lat0: float, lon0: float, north_km: float, east_km: float) -> tuple[float, float]:
    lat = lat0 + north_km / _KM_PER_DEG
    lon = lon0 + east_km / (_KM_PER_DEG * max(math.cos(math.radians(lat0)), 1e-6))
    lat = float(np.clip(lat, -90.0, 90.0))
    lon = float((lon + 180.0) % 360.0 - 180.0)
    return lat, lon


@dataclass
class _Fit:
    lat: float
    lon: float
    chi2: float
    cov_km2: np.ndarray
    converged: bool
    model: np.ndarray
    ambiguous: bool
    alternatives: list[dict[str, float]]
    chi2_grid: xr.DataArray
    dof: int
    notes: list[str]


def _model(
    lat: Any, lon: Any, rlat: np.ndarray, rlon: np.ndarray, ia: np.ndarray, ib: np.ndarray, v: float
) -> np.ndarray:
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    d = np.stack(
        [np.asarray(geo.great_circle_m(lat, lon, a, b)) for a, b in zip(rlat, rlon, strict=True)]
    )
    return (d[ia] - d[ib]) / v


def _solve(
    rlat: np.ndarray,
    rlon: np.ndarray,
    ia: np.ndarray,
    ib: np.ndarray,
    delays: np.ndarray,
    sigmas: np.ndarray,
    *,
    velocity_factor: float,
    bounds: Sequence[float] | None,
    margin_deg: float | None,
    grid_step_deg: float | None,
    confidence: float,
    inflate: float,
) -> _Fit:
    v = geo.SPEED_OF_LIGHT * velocity_factor
    la0, la1, lo0, lo1 = _bounds(rlat, rlon, bounds, margin_deg)
    step = (
        max(la1 - la0, lo1 - lo0) / 240.0
        if grid_step_deg is None
        else _positive(grid_step_deg, "grid_step_deg")
    )
    glat = np.linspace(la0, la1, max(3, round((la1 - la0) / step) + 1))
    glon = np.linspace(lo0, lo1, max(3, round((lo1 - lo0) / step) + 1))
    if len(glat) * len(glon) > 4_000_000:
        raise ValidationError("the search grid would exceed 4 million points; raise grid_step_deg")
    la_g, lo_g = np.meshgrid(glat, glon, indexing="ij")
    model = _model(la_g, lo_g, rlat, rlon, ia, ib, v)
    chi = np.sum(((delays[:, None, None] - model) / sigmas[:, None, None]) ** 2, axis=0)
    chi2_grid = xr.DataArray(
        chi,
        dims=("latitude", "longitude"),
        coords={"latitude": glat, "longitude": glon},
        name="chi2",
        attrs={"long_name": "sum of squared normalised TDoA residuals", "units": "1"},
    )
    # Starts: the lowest local minima of the grid.
    minima = (chi == ndimage.minimum_filter(chi, size=5, mode="nearest")) & np.isfinite(chi)
    cand = np.argwhere(minima)
    order = np.argsort(chi[minima])
    starts = [tuple(cand[k]) for k in order[:_MAX_STARTS]]

    def residuals_at(lat0: float, lon0: float) -> Any:
        def fun(p: np.ndarray) -> np.ndarray:
            la, lo = _local_to_ll(lat0, lon0, p[0], p[1])
            return (delays - _model(la, lo, rlat, rlon, ia, ib, v)) / sigmas

        return fun

    solutions: list[tuple[float, float, float, bool]] = []
    # Least squares from each start, kept within the grid plus 10 % (a local minimum could
    # otherwise run off to the antipodes).
    pad_lat, pad_lon = 0.1 * (la1 - la0), 0.1 * (lo1 - lo0)
    box_lat = (max(-90.0, la0 - pad_lat), min(90.0, la1 + pad_lat))
    box_lon = (max(-180.0, lo0 - pad_lon), min(180.0, lo1 + pad_lon))
    for i, j in starts:
        lat0, lon0 = float(glat[i]), float(glon[j])
        east_scale = _KM_PER_DEG * max(math.cos(math.radians(lat0)), 1e-6)
        lower = [(box_lat[0] - lat0) * _KM_PER_DEG, (box_lon[0] - lon0) * east_scale]
        upper = [(box_lat[1] - lat0) * _KM_PER_DEG, (box_lon[1] - lon0) * east_scale]
        try:
            r = optimize.least_squares(
                residuals_at(lat0, lon0),
                np.zeros(2),
                bounds=(lower, upper),
                method="trf",
                x_scale=np.array([10.0, 10.0]),
                xtol=1e-12,
                ftol=1e-12,
                gtol=1e-12,
            )
        except (ValueError, HeimdallError) as exc:  # pragma: no cover - defensive
            log.debug("least squares from %.3f, %.3f failed: %s", lat0, lon0, exc)
            continue
        lat, lon = _local_to_ll(lat0, lon0, float(r.x[0]), float(r.x[1]))
        edge = bool(np.any(np.isclose(r.x, lower, atol=1e-6) | np.isclose(r.x, upper, atol=1e-6)))
        solutions.append((lat, lon, float(np.sum(r.fun**2)), bool(r.success) and not edge))
    if not solutions:  # pragma: no cover - defensive
        raise LocalizationError("the position fit failed from every starting point")
    # Distinct solutions (> 1 km apart), best first.
    solutions.sort(key=lambda s: s[2])
    distinct: list[tuple[float, float, float, bool]] = []
    for s in solutions:
        if all(float(geo.great_circle_m(s[0], s[1], d[0], d[1])) > 1000.0 for d in distinct):
            distinct.append(s)
    threshold = float(stats.chi2.ppf(confidence, 2))
    best = distinct[0]
    close = [s for s in distinct if s[2] - best[2] < 1e-9 * max(1.0, best[2]) + 1e-9]
    if len(close) > 1:  # exact ties (e.g. two crossings of two hyperbolae): nearest the centre
        cl, co = float(np.mean(rlat)), float(np.mean(rlon))
        best = min(close, key=lambda s: float(geo.great_circle_m(s[0], s[1], cl, co)))
    alternatives = [
        {
            "latitude": s[0],
            "longitude": s[1],
            "chi2": s[2],
            "distance_km": float(geo.great_circle_m(s[0], s[1], best[0], best[1])) / 1e3,
        }
        for s in distinct
        if s is not best
    ][:3]
    ambiguous = any(a["chi2"] - best[2] < threshold for a in alternatives)
    lat, lon, chi2_best, converged = best
    # Covariance from the Jacobian at the estimate, in a local (east, north) frame in km.
    fun = residuals_at(lat, lon)
    h = 0.01  # km
    jac = np.empty((len(delays), 2))
    for col, (dn, de) in enumerate(((h, 0.0), (0.0, h))):
        jac[:, col] = (fun(np.array([dn, de])) - fun(np.array([-dn, -de]))) / (2 * h)
    jac = jac[:, ::-1]  # columns: east, north
    jtj = jac.T @ jac
    try:
        cov = np.linalg.inv(jtj) if np.linalg.cond(jtj) < 1e12 else np.full((2, 2), np.inf)
    except np.linalg.LinAlgError:  # pragma: no cover - defensive
        cov = np.full((2, 2), np.inf)
    dof = len(delays) - 2
    scale = inflate
    if dof > 0 and chi2_best / dof > 1.0:
        scale *= chi2_best / dof
    cov = cov * scale
    notes: list[str] = []
    if not converged:
        notes.append(
            "the fit did not converge inside the search area (it stopped at its edge); the "
            "transmitter may lie outside it: widen bounds"
        )
    model_best = _model(lat, lon, rlat, rlon, ia, ib, v)
    return _Fit(
        lat,
        lon,
        chi2_best,
        cov,
        converged,
        model_best,
        ambiguous,
        alternatives,
        chi2_grid,
        dof,
        notes,
    )


def _ellipse(cov: np.ndarray, confidence: float) -> tuple[float, float, float]:
    if not np.all(np.isfinite(cov)):
        return float("inf"), float("inf"), float("nan")
    k = float(stats.chi2.ppf(confidence, 2))
    vals, vecs = np.linalg.eigh(cov)
    vals = np.clip(vals, 0.0, None)
    major = vecs[:, 1]  # (east, north) of the largest eigenvalue
    azimuth = math.degrees(math.atan2(major[0], major[1])) % 180.0
    return math.sqrt(vals[1] * k), math.sqrt(vals[0] * k), azimuth


def _likelihood(chi2_grid: xr.DataArray) -> xr.DataArray:
    chi = chi2_grid.values
    like = np.exp(-0.5 * (chi - np.nanmin(chi)))
    out = chi2_grid.copy(data=like)
    out.name = "likelihood"
    out.attrs = {"long_name": "relative likelihood exp(-(chi2 - min chi2) / 2)", "units": "1"}
    return out


def _check_confidence(confidence: Any) -> float:
    c = _positive(confidence, "confidence")
    if not c < 1:
        raise ValidationError(f"confidence must be in (0, 1), got {confidence}")
    return c


def _check_velocity(velocity_factor: Any) -> float:
    v = _positive(velocity_factor, "velocity_factor")
    if v > 1.0:
        raise ValidationError(f"velocity_factor must be in (0, 1], got {velocity_factor}")
    return v


def solve_tdoa(
    latitudes: Sequence[float],
    longitudes: Sequence[float],
    pairs: Sequence[tuple[int, int]],
    delays_s: Sequence[float],
    sigmas_s: Sequence[float] | float = 1e-6,
    *,
    names: Sequence[str] | None = None,
    velocity_factor: float = 1.0,
    bounds: Sequence[float] | None = None,
    margin_deg: float | None = None,
    grid_step_deg: float | None = None,
    confidence: float = 0.95,
    inflate: bool = True,
) -> Localization:
    """Position from measured pair delays: grid search of chi-square, then least squares.

    Parameters
    ----------
    latitudes, longitudes : sequence of float
        Receiver positions, degrees.
    pairs : sequence of (int, int)
        Receiver index pairs ``(a, b)``; at least two pairs over at least three receivers.
    delays_s : sequence of float
        For each pair, arrival at ``a`` minus arrival at ``b``, seconds.
    sigmas_s : float or sequence of float, default 1e-6
        Standard error of each delay, seconds.
    names : sequence of str, optional
        Receiver names (default ``rx0``, ``rx1``, ...).
    velocity_factor : float, default 1.0
        Propagation speed as a fraction of the speed of light, in (0, 1].
    bounds : (lat_min, lat_max, lon_min, lon_max), optional
        Search grid; default the receivers' bounding box plus ``margin_deg``.
    margin_deg : float, optional
        Margin around the receivers, degrees; default ``max(2, half the box's larger side)``.
    grid_step_deg : float, optional
        Grid spacing, degrees; default 1/240 of the box's larger side.
    confidence : float, default 0.95
        Probability content of the ellipse.
    inflate : bool, default True
        Multiply the covariance by ``n_receivers / 2`` when the pairs share receivers (all
        pairs of ``n`` receivers are not independent measurements).

    Returns
    -------
    Localization
        The estimate with ellipse, per-pair residuals, chi-square and likelihood grids
        (``receivers`` carry only names and positions here).

    Raises
    ------
    ValidationError
        On mismatched lengths, bad positions, non-finite delays, non-positive sigmas or bad
        options.
    LocalizationError
        With fewer than two pairs or three receivers.
    """
    t_start = time.perf_counter()
    lat = np.asarray(latitudes, dtype=np.float64)
    lon = np.asarray(longitudes, dtype=np.float64)
    if lat.ndim != 1 or lat.shape != lon.shape:
        raise ValidationError("latitudes and longitudes must be 1-D of equal length")
    names = [f"rx{i}" for i in range(len(lat))] if names is None else [str(n) for n in names]
    if len(names) != len(lat):
        raise ValidationError("names must give one name per receiver")
    for n, a, b in zip(names, lat, lon, strict=True):
        _check_receiver_position(n, a, b)
    try:
        pr = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    except (TypeError, ValueError) as exc:
        raise ValidationError("pairs must be a sequence of (index_a, index_b)") from exc
    d = np.asarray(delays_s, dtype=np.float64).reshape(-1)
    s = np.broadcast_to(np.asarray(sigmas_s, dtype=np.float64), d.shape).astype(np.float64)
    if len(pr) != len(d):
        raise ValidationError(f"{len(pr)} pairs but {len(d)} delays")
    if np.any((pr < 0) | (pr >= len(lat))) or np.any(pr[:, 0] == pr[:, 1]):
        raise ValidationError("pair indices must name two different receivers")
    if not np.all(np.isfinite(d)):
        raise ValidationError("delays must be finite")
    if not np.all(np.isfinite(s) & (s > 0)):
        raise ValidationError("sigmas must be finite and > 0")
    vf = _check_velocity(velocity_factor)
    conf = _check_confidence(confidence)
    involved = np.unique(pr)
    if len(pr) < 2 or len(involved) < 3:
        raise LocalizationError(
            f"{len(pr)} pair(s) over {len(involved)} receiver(s): a 2-D position needs at "
            "least two pairs over three receivers"
        )
    factor = len(involved) / 2.0 if inflate and len(pr) > len(involved) - 1 else 1.0
    fit = _solve(
        lat,
        lon,
        pr[:, 0],
        pr[:, 1],
        d,
        s,
        velocity_factor=vf,
        bounds=bounds,
        margin_deg=margin_deg,
        grid_step_deg=grid_step_deg,
        confidence=conf,
        inflate=factor,
    )
    major, minor, azimuth = _ellipse(fit.cov_km2, conf)
    v = geo.SPEED_OF_LIGHT * vf
    pair_out = []
    for k, (a, b) in enumerate(pr):
        baseline = float(geo.great_circle_m(lat[a], lon[a], lat[b], lon[b]))
        pair_out.append(
            PairDelay(
                names[a],
                names[b],
                float(d[k]),
                float(s[k]),
                max_delay_s=baseline / v,
                model_delay_s=float(fit.model[k]),
                residual_s=float(d[k] - fit.model[k]),
            )
        )
    receivers = [
        ReceiverTiming(n, float(a), float(b), used=i in involved)
        for i, (n, a, b) in enumerate(zip(names, lat, lon, strict=True))
    ]
    return Localization(
        latitude=fit.lat,
        longitude=fit.lon,
        kind="tdoa",
        method="delays",
        semi_major_km=major,
        semi_minor_km=minor,
        orientation_deg=azimuth,
        confidence=conf,
        covariance_km2=fit.cov_km2,
        receivers=receivers,
        pairs=pair_out,
        chi2=fit.chi2,
        dof=fit.dof,
        converged=fit.converged,
        ambiguous=fit.ambiguous,
        alternatives=fit.alternatives,
        likelihood=_likelihood(fit.chi2_grid),
        chi2_grid=fit.chi2_grid,
        velocity_factor=vf,
        run_time_s=time.perf_counter() - t_start,
        settings={"inflate": factor},
        notes=fit.notes,
    )


# ============================================================================================
# Dataset, recordings and files


@dataclass(frozen=True)
class _PairCheck:
    margin: float
    min_coefficient: float
    min_psr_db: float
    max_sigma: float
    floor: float
    systematic: float


def _measure_pairs(
    tracks: list[_Track],
    signals: list[_Signal],
    rate: float,
    method: str,
    band: tuple[float, float],
    v: float,
    extra: float,
    chunk: float,
    check: _PairCheck,
) -> tuple[list[PairDelay], list[tuple[int, int]], list[float]]:
    """Correlate and judge every pair.

    Returns the pairs, the indices of the good ones, and each pair's raw (chunk-spread)
    standard error.
    """
    pairs: list[PairDelay] = []
    index: list[tuple[int, int]] = []
    raw: list[float] = []
    for i in range(len(tracks)):
        for j in range(i + 1, len(tracks)):
            ri, rj = tracks[i].timing, tracks[j].timing
            baseline = float(
                geo.great_circle_m(ri.latitude, ri.longitude, rj.latitude, rj.longitude)
            )
            max_delay = baseline / v
            est = _correlate(
                signals[i],
                signals[j],
                rate,
                coherent=method == "envelope",
                band=band,
                search_s=max_delay + check.margin + extra,
                chunk_s=chunk,
            )
            raw.append(est.sigma_s if math.isfinite(est.sigma_s) else math.inf)
            sigma = math.sqrt(max(est.sigma_s, check.floor) ** 2 + check.systematic**2)
            p = PairDelay(
                ri.name,
                rj.name,
                est.delay_s,
                sigma,
                coefficient=est.coefficient,
                psr_db=est.psr_db,
                max_delay_s=max_delay,
                n_chunks=est.n_chunks,
            )
            reasons = _judge(est, max_delay, check)
            if reasons:
                p.used = False
                p.reason = "; ".join(reasons)
                log.info("%s pair %s-%s rejected: %s", method, ri.name, rj.name, p.reason)
            else:
                index.append((i, j))
            pairs.append(p)
    return pairs, index, raw


def _judge(est: DelayEstimate, max_delay: float, check: _PairCheck) -> list[str]:
    """Why a pair's delay is not to be used (empty when it is good)."""
    if not math.isfinite(est.delay_s):
        return ["no correlation peak"]
    reasons = []
    if abs(est.delay_s) > max_delay + check.margin:
        reasons.append(
            f"delay {est.delay_s * 1e6:.1f} us outside the physically possible "
            f"+-{max_delay * 1e6:.1f} us (+{check.margin * 1e6:.0f} us margin)"
        )
    if not est.coefficient >= check.min_coefficient:
        reasons.append(f"coefficient {est.coefficient:.3f} < {check.min_coefficient:g}")
    if math.isfinite(est.psr_db) and est.psr_db < check.min_psr_db:
        reasons.append(f"peak-to-sidelobe {est.psr_db:.1f} dB < {check.min_psr_db:g} dB")
    if not math.isfinite(est.sigma_s) or est.sigma_s > check.max_sigma:
        reasons.append(
            f"chunk delays scatter (sigma {est.sigma_s * 1e6:.1f} us > "
            f"{check.max_sigma * 1e6:.0f} us)"
        )
    return reasons


def locate_dataset(
    ds: xr.Dataset,
    *,
    method: Literal["auto", "envelope", "complex"] = "auto",
    band: tuple[float, float] | None = None,
    velocity_factor: float = 1.0,
    chunk_s: float = 1.0,
    lag_margin_s: float = 2e-4,
    search_extra_s: float = 5e-3,
    min_coefficient: float = 0.05,
    min_psr_db: float = 1.0,
    max_sigma_s: float = 1e-4,
    sigma_floor_s: float = 1e-8,
    systematic_sigma_s: float = 0.0,
    max_timestamp_error_s: float = 1e-5,
    min_duration_s: float = 2.0,
    receivers: Sequence[str] | None = None,
    carrier_offsets_hz: Mapping[str, float] | None = None,
    bounds: Sequence[float] | None = None,
    margin_deg: float | None = None,
    grid_step_deg: float | None = None,
    confidence: float = 0.95,
    fallback: Literal["none", "rssi"] = "none",
) -> Localization:
    """Locate the transmitter heard in a capture Dataset by TDoA.

    The method is described in the module docstring: GNSS alignment of every receiver,
    resampling onto a common grid, pairwise correlation with sub-sample peaks, quality
    checks, and a grid-plus-least-squares fit on a spherical Earth.

    Parameters
    ----------
    ds : xarray.Dataset
        A capture (:func:`heimdall_lab.fetch.acquire`, :func:`locate_recordings` builds one
        from recordings): ``iq`` (receiver x sample), the per-frame ``frame_start``,
        ``frame_seq``, ``frame_gpssec``, ``frame_gpsnsec``, ``frame_trusted`` (or
        ``frame_gps_solution``), and per receiver ``latitude``, ``longitude``,
        ``n_samples``, ``sample_rate``.
    method : {"auto", "envelope", "complex"}, default "auto"
        What to correlate: the envelope (amplitude keying) or the complex signal after the
        carrier offset and phase are removed (sees phase and frequency modulation too).
        ``"auto"`` correlates both and keeps the one with more good pairs, then the smaller
        median standard error (the envelope wins on a plain keyed carrier, the complex
        signal on the real DCF77 recordings, whose phase keying is far sharper than its
        amplitude edges; see ``reports/localize.md``). ``Localization.method`` says which.
    band : (float, float), optional
        ``(low_hz, high_hz)`` around the carrier kept for the correlation (for the envelope:
        the band-limit before the magnitude, and the envelope's own bandwidth);
        :data:`DEFAULT_BANDS` by default.
    velocity_factor : float, default 1.0
        Propagation speed as a fraction of the speed of light (ground wave: about 1).
    chunk_s : float, default 1.0
        Chunk length of the correlations (the spread of the chunks gives each sigma).
    lag_margin_s : float, default 2e-4
        A delay may exceed ``baseline / v`` by this much before the pair is rejected.
    search_extra_s : float, default 5e-3
        The peak is searched this much beyond the physical range, so that a peak outside
        it is seen and the pair rejected rather than a false peak at the edge accepted.
    min_coefficient : float, default 0.05
        Pairs whose normalised correlation is lower are rejected.
    min_psr_db : float, default 1.0
        Pairs whose peak-to-sidelobe ratio is lower are rejected.
    max_sigma_s : float, default 1e-4
        Pairs whose chunk estimates scatter more (standard error) are rejected.
    sigma_floor_s : float, default 1e-8
        Smallest standard error given to a pair.
    systematic_sigma_s : float, default 0.0
        Added in quadrature to every pair's sigma, for errors the chunk spread cannot see
        (propagation, receiver delays). It widens the ellipse, nothing else.
    max_timestamp_error_s : float, default 1e-5
        Frames whose timestamp is further off their segment's line are rejected.
    min_duration_s : float, default 2.0
        Receivers with less GNSS-timed signal, and common spans shorter than this, are
        rejected.
    receivers : sequence of str, optional
        Use only these receivers (default all).
    carrier_offsets_hz : mapping of str to float, optional
        Known carrier offsets per receiver (Hz); estimated where not given.
    bounds, margin_deg, grid_step_deg, confidence
        As for :func:`solve_tdoa`.
    fallback : {"none", "rssi"}, default "none"
        What to do when TDoA is impossible: raise, or return the far cruder
        :func:`locate_rssi_dataset` estimate (with a note saying so).

    Returns
    -------
    Localization
        Estimate, ellipse, per-receiver timing, per-pair delays with qualities and
        residuals, and the chi-square / likelihood grids.

    Raises
    ------
    ValidationError
        If ``ds`` is not a capture Dataset, a receiver position is missing or invalid, or
        an option is bad.
    LocalizationError
        If fewer than three receivers have usable GNSS timestamps, their captures do not
        overlap for ``min_duration_s``, or fewer than two good pairs over three receivers
        remain (unless ``fallback="rssi"``).
    """
    t_start = time.perf_counter()
    method = _check_method(method, auto=True)
    vf = _check_velocity(velocity_factor)
    conf = _check_confidence(confidence)
    chunk = _positive(chunk_s, "chunk_s")
    margin = _positive(lag_margin_s, "lag_margin_s", allow_zero=True)
    extra = _positive(search_extra_s, "search_extra_s", allow_zero=True)
    min_coef = _positive(min_coefficient, "min_coefficient", allow_zero=True)
    if not isinstance(min_psr_db, int | float) or not math.isfinite(min_psr_db):
        raise ValidationError("min_psr_db must be a finite number")
    max_sigma = _positive(max_sigma_s, "max_sigma_s")
    floor = _positive(sigma_floor_s, "sigma_floor_s")
    systematic = _positive(systematic_sigma_s, "systematic_sigma_s", allow_zero=True)
    ts_err = _positive(max_timestamp_error_s, "max_timestamp_error_s")
    min_dur = _positive(min_duration_s, "min_duration_s")
    if fallback not in ("none", "rssi"):
        raise ValidationError(f"fallback must be 'none' or 'rssi', got {fallback!r}")
    if receivers is not None:
        if isinstance(receivers, str):
            receivers = [receivers]
        have = [str(v) for v in ds["receiver"].values] if "receiver" in ds.variables else []
        unknown = sorted(set(receivers) - set(have))
        if unknown:
            raise ValidationError(f"unknown receiver(s) {', '.join(unknown)}; have {have}")
        ds = ds.sel(receiver=list(receivers))
    settings = {
        "method": method,
        "velocity_factor": vf,
        "chunk_s": chunk,
        "lag_margin_s": margin,
        "search_extra_s": extra,
        "min_coefficient": min_coef,
        "min_psr_db": float(min_psr_db),
        "max_sigma_s": max_sigma,
        "sigma_floor_s": floor,
        "systematic_sigma_s": systematic,
        "max_timestamp_error_s": ts_err,
        "min_duration_s": min_dur,
        "confidence": conf,
    }
    capture_id = str(ds.attrs.get("capture_id", "")) if isinstance(ds, xr.Dataset) else ""

    def give_up(message: str) -> Localization:
        if fallback == "rssi":
            log.warning("TDoA impossible (%s); falling back to the crude RSSI estimate", message)
            out = locate_rssi_dataset(ds, confidence=conf)
            out.notes.insert(0, f"TDoA impossible: {message}; this is the RSSI fallback")
            return out
        raise LocalizationError(message)

    timings, tracks, epoch = _dataset_tracks(ds, ts_err, min_dur)
    if len(tracks) < 3:
        why = "; ".join(f"{t.name}: {t.reason}" for t in timings if not t.used) or "none"
        return give_up(
            f"{len(tracks)} receiver(s) with usable GNSS timestamps, TDoA needs at least 3 "
            f"(left out: {why}); locate_rssi_dataset gives a far cruder estimate without them"
        )
    rate = float(np.median([tr.rate for tr in tracks]))
    for m in ("envelope", "complex") if method == "auto" else (method,):
        _check_band(band, m, rate)
    t0 = max(tr.t[0] for tr in tracks)
    t1 = min(tr.t[-1] for tr in tracks)
    if t1 - t0 < min_dur:
        spans = ", ".join(f"{tr.timing.name} {tr.t[0]:.2f}..{tr.t[-1]:.2f} s" for tr in tracks)
        return give_up(
            f"the receivers' captures overlap for {max(t1 - t0, 0):.2f} s, need {min_dur:g} s "
            f"({spans})"
        )
    n_grid = math.floor((t1 - t0) * rate)
    grid = t0 + np.arange(n_grid) / rate
    resampled = []
    for tr in tracks:
        known = (carrier_offsets_hz or {}).get(tr.timing.name)
        f0 = float(known) if known is not None else _carrier_offset(tr)
        tr.timing.carrier_offset_hz = f0
        resampled.append(_resample(tr, grid, f0))
        tr.x = tr.x[:0]  # free the raw samples
    v = geo.SPEED_OF_LIGHT * vf
    check = _PairCheck(margin, min_coef, float(min_psr_db), max_sigma, floor, systematic)
    candidates = []
    for m in ("envelope", "complex") if method == "auto" else (method,):
        band_m = _check_band(band, m, rate)
        signals = [_Signal(_prepare(y, valid, m, rate, band_m), valid) for y, valid in resampled]
        pairs, index, raw = _measure_pairs(tracks, signals, rate, m, band_m, v, extra, chunk, check)
        used_sigma = [r for r, p in zip(raw, pairs, strict=True) if p.used]
        median = float(np.median(used_sigma)) if used_sigma else math.inf
        candidates.append((-len(index), median, m, band_m, pairs, index))
    notes: list[str] = []
    if method == "auto":
        for c in candidates:
            notes.append(
                f"auto: {c[2]} gave {-c[0]} good pair(s), median sigma {c[1] * 1e6:.2f} us"
            )
    _, _, method_used, band_used, pairs, index = min(candidates, key=lambda c: (c[0], c[1]))
    settings["method_used"] = method_used
    settings["band_hz"] = list(band_used)
    used_rx = {k for pr in index for k in pr}
    if len(index) < 2 or len(used_rx) < 3:
        bad = "; ".join(f"{p.receiver_a}-{p.receiver_b}: {p.reason}" for p in pairs if not p.used)
        return give_up(
            f"{len(index)} good pair(s) over {len(used_rx)} receiver(s), need two pairs over "
            f"three receivers (rejected: {bad or 'none'})"
        )
    good = [p for p in pairs if p.used]
    names = [tr.timing.name for tr in tracks]
    sol = solve_tdoa(
        [tr.timing.latitude for tr in tracks],
        [tr.timing.longitude for tr in tracks],
        index,
        [p.delay_s for p in good],
        [p.sigma_s for p in good],
        names=names,
        velocity_factor=vf,
        bounds=bounds,
        margin_deg=margin_deg,
        grid_step_deg=grid_step_deg,
        confidence=conf,
    )
    for p, q in zip(good, sol.pairs, strict=True):
        p.model_delay_s, p.residual_s = q.model_delay_s, q.residual_s
    rlat = np.array([tr.timing.latitude for tr in tracks])
    rlon = np.array([tr.timing.longitude for tr in tracks])
    by_name = {n: k for k, n in enumerate(names)}
    for p in pairs:
        if not p.used:
            ia, ib = by_name[p.receiver_a], by_name[p.receiver_b]
            model = _model(
                sol.latitude, sol.longitude, rlat, rlon, np.array([ia]), np.array([ib]), v
            )
            p.model_delay_s = float(model[0])
            p.residual_s = p.delay_s - p.model_delay_s
    for t in timings:
        if t.used and t.name not in {names[k] for k in used_rx}:
            t.used = False
            t.reason = "all its pairs were rejected"
    start_time = ""
    if epoch is not None:
        start_time = str(np.datetime_as_string(epoch + np.timedelta64(round(t0 * _NS), "ns"), "us"))
        start_time += "Z"
    settings.update(sol.settings)
    notes.extend(sol.notes)
    if len(used_rx) == 3:
        notes.append(
            "three receivers: two independent delays fix the position exactly, so the "
            "ellipse comes from the timing uncertainty alone"
        )
    if sol.ambiguous:
        notes.append("another position fits about as well (see alternatives)")
    return Localization(
        latitude=sol.latitude,
        longitude=sol.longitude,
        kind="tdoa",
        method=method_used,
        semi_major_km=sol.semi_major_km,
        semi_minor_km=sol.semi_minor_km,
        orientation_deg=sol.orientation_deg,
        confidence=conf,
        covariance_km2=sol.covariance_km2,
        receivers=timings,
        pairs=pairs,
        chi2=sol.chi2,
        dof=sol.dof,
        converged=sol.converged,
        ambiguous=sol.ambiguous,
        alternatives=sol.alternatives,
        likelihood=sol.likelihood,
        chi2_grid=sol.chi2_grid,
        velocity_factor=vf,
        span_s=float(t1 - t0),
        start_time=start_time,
        run_time_s=time.perf_counter() - t_start,
        settings=settings,
        notes=notes,
        capture_id=capture_id,
    )


def _positions_lookup(
    positions: Mapping[str, Sequence[float]] | Sequence[Sequence[float]], keys: list[list[str]]
) -> list[tuple[float, float]]:
    """Position of each item, from a mapping (first matching key) or an aligned sequence."""
    out: list[tuple[float, float]] = []
    if isinstance(positions, Mapping):
        for cands in keys:
            hit = next((positions[k] for k in cands if k in positions), None)
            if hit is None:
                raise ValidationError(
                    f"no position for {cands[0]}: positions must have a (lat, lon) for each "
                    f"receiver, by name (have {', '.join(map(str, positions))})"
                )
            out.append(_pair_of_floats(hit, cands[0]))
        return out
    if isinstance(positions, str | bytes) or not isinstance(positions, Sequence):
        raise ValidationError("positions must be a mapping name -> (lat, lon) or a sequence")
    if len(positions) != len(keys):
        raise ValidationError(f"{len(positions)} positions for {len(keys)} recordings")
    return [_pair_of_floats(p, k[0]) for p, k in zip(positions, keys, strict=True)]


def _pair_of_floats(value: Any, what: str) -> tuple[float, float]:
    try:
        lat, lon = value
        return float(lat), float(lon)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"position of {what} must be (lat, lon), got {value!r}") from exc


def locate_recordings(
    recordings: Mapping[str, Recording],
    positions: Mapping[str, Sequence[float]] | Sequence[Sequence[float]],
    *,
    gps_reference: datetime | np.datetime64 | None = None,
    frequency_hz: float = float("nan"),
    **options: Any,
) -> Localization:
    """Locate from receivers' recordings and their positions.

    The recordings become a capture Dataset (:func:`heimdall_lab.dataset.build_dataset`),
    which :func:`locate_dataset` locates, so the result is the same as for a live capture
    of the same frames.

    Parameters
    ----------
    recordings : mapping of str to Recording
        Recordings by receiver name.
    positions : mapping of str to (float, float), or sequence of (float, float)
        Receiver positions (lat, lon) by name, or in the order of ``recordings``.
    gps_reference : datetime or numpy.datetime64, optional
        A UTC time within half a week of the recordings, to resolve the GPS week of the
        reported start time (the delays do not depend on it).
    frequency_hz : float, optional
        Tuned frequency, for the record.
    **options
        Passed to :func:`locate_dataset`.

    Returns
    -------
    Localization
        As :func:`locate_dataset`.

    Raises
    ------
    ValidationError
        If ``recordings`` is not a mapping of Recording objects, or a position is missing
        or invalid.
    LocalizationError
        As :func:`locate_dataset`.
    """
    if not isinstance(recordings, Mapping) or not recordings:
        raise ValidationError("recordings must be a non-empty mapping name -> Recording")
    for name, rec in recordings.items():
        if not isinstance(rec, Recording):
            raise ValidationError(f"recordings[{name!r}] is not a Recording")
    names = [str(n) for n in recordings]
    pos = _positions_lookup(positions, [[n] for n in names])
    entries = []
    for name, (lat, lon) in zip(names, pos, strict=True):
        lat, lon = _check_receiver_position(name, lat, lon)
        rx = Receiver(name, "localhost", 8073, lat, lon)
        entries.append((rx, recordings[name], True))
    rec_list = list(recordings.values())
    duration = max(len(r.samples) / max(r.nominal_rate, 1.0) for r in rec_list)
    ds = build_dataset(
        entries,
        frequency_hz,
        duration,
        capture_id="recordings:" + ",".join(names),
        gps_reference=gps_reference,
    )
    return locate_dataset(ds, **options)


_KIWI_NAME = re.compile(r"^(\d{8}T\d{6}Z)_(\d+(?:\.\d+)?)_(.+)_iq$")


def _parse_kiwi_name(path: Path) -> tuple[str, np.datetime64 | None, float]:
    """Receiver name, recording time and frequency from a kiwirecorder file name."""
    m = _KIWI_NAME.match(path.stem)
    if not m:
        return path.stem, None, float("nan")
    stamp, freq, name = m.groups()
    when = np.datetime64(
        f"{stamp[0:4]}-{stamp[4:6]}-{stamp[6:8]}T{stamp[9:11]}:{stamp[11:13]}:{stamp[13:15]}", "ns"
    )
    return name, when, float(freq)


def locate_files(
    paths: Sequence[str | Path],
    positions: Mapping[str, Sequence[float]] | Sequence[Sequence[float]],
    *,
    gps_reference: datetime | np.datetime64 | None = None,
    **options: Any,
) -> Localization:
    """Locate from kiwirecorder IQ WAV files (with GNSS timestamps) and receiver positions.

    Parameters
    ----------
    paths : sequence of str or Path
        The files (``YYYYMMDDTHHMMSSZ_<freq>_<NAME>_iq.wav`` names give receiver names, time
        and frequency; other names use the file stem as the receiver name).
    positions : mapping of str to (float, float), or sequence of (float, float)
        (lat, lon) by receiver name (or by file stem or path), or in the order of ``paths``.
    gps_reference : datetime or numpy.datetime64, optional
        Resolves the GPS week of the start time; from the file names when they carry a time.
    **options
        Passed to :func:`locate_dataset`.

    Returns
    -------
    Localization
        As :func:`locate_dataset`.

    Raises
    ------
    ValidationError
        On no files, duplicate receiver names, or a missing or invalid position.
    FileFormatError
        If a file is not a kiwi IQ WAV.
    LocalizationError
        As :func:`locate_dataset`.
    """
    if isinstance(paths, str | Path) or not paths:
        raise ValidationError("paths must be a non-empty sequence of kiwi IQ WAV files")
    files = [Path(p) for p in paths]
    parsed = [_parse_kiwi_name(p) for p in files]
    names = [p[0] for p in parsed]
    if len(set(names)) != len(names):
        raise ValidationError(f"receiver names from the file names are not unique: {names}")
    keys = [[n, f.stem, f.name, str(f)] for n, f in zip(names, files, strict=True)]
    pos = _positions_lookup(positions, keys)
    if gps_reference is None:
        gps_reference = next((p[1] for p in parsed if p[1] is not None), None)
    freqs = [p[2] for p in parsed if math.isfinite(p[2])]
    recordings = {n: read_kiwi_wav(f) for n, f in zip(names, files, strict=True)}
    return locate_recordings(
        recordings,
        dict(zip(names, pos, strict=True)),
        gps_reference=gps_reference,
        frequency_hz=freqs[0] if freqs else float("nan"),
        **options,
    )


# ============================================================================================
# RSSI fallback


def locate_rssi(
    latitudes: Sequence[float],
    longitudes: Sequence[float],
    power_dbm: Sequence[float],
    *,
    names: Sequence[str] | None = None,
    model: Literal["pathloss", "centroid"] = "pathloss",
    exponent: float = 2.0,
    shadowing_db: float = 6.0,
    bounds: Sequence[float] | None = None,
    margin_deg: float | None = None,
    confidence: float = 0.95,
) -> Localization:
    """A crude position from received power alone, for receivers without GNSS timestamps.

    Far cruder than TDoA: received power depends on antennas, calibration, terrain,
    ground conductivity and (on HF) the ionosphere as much as on distance, so errors of
    tens to hundreds of km are normal. Use it only when TDoA is impossible.

    ``"pathloss"`` fits ``P_i = P0 - 10 * exponent * log10(d_i / 1 km)`` (distance at least
    1 km) for position and ``P0`` by a grid search and least squares; the ellipse assumes
    ``shadowing_db`` of log-normal scatter per receiver (or the fit's own scatter when it
    is larger and the fit has degrees of freedom). ``"centroid"`` is the centroid of the
    receivers weighted by their power-implied inverse distance ``10 ** (P_i / (10 *
    exponent))``; its "ellipse" is the weighted spread of the receivers, not a statistical
    uncertainty.

    Parameters
    ----------
    latitudes, longitudes : sequence of float
        Receiver positions, degrees.
    power_dbm : sequence of float
        Received signal power per receiver (dBm, or dBFS for receivers with equal gain).
    names : sequence of str, optional
        Receiver names.
    model : {"pathloss", "centroid"}, default "pathloss"
        Estimator.
    exponent : float, default 2.0
        Path-loss exponent (2: free space).
    shadowing_db : float, default 6.0
        Assumed scatter of the received power about the model, dB.
    bounds, margin_deg : optional
        Search grid, as for :func:`solve_tdoa`.
    confidence : float, default 0.95
        Probability content of the ellipse.

    Returns
    -------
    Localization
        ``kind="rssi"``; ``pairs`` is empty.

    Raises
    ------
    ValidationError
        On fewer than three receivers, mismatched lengths, non-finite powers or bad options.
    """
    t_start = time.perf_counter()
    lat = np.asarray(latitudes, dtype=np.float64)
    lon = np.asarray(longitudes, dtype=np.float64)
    p = np.asarray(power_dbm, dtype=np.float64)
    if lat.ndim != 1 or lat.shape != lon.shape or lat.shape != p.shape:
        raise ValidationError("latitudes, longitudes and power_dbm must be 1-D of equal length")
    if len(lat) < 3:
        raise ValidationError(f"an RSSI estimate needs at least 3 receivers, got {len(lat)}")
    names = [f"rx{i}" for i in range(len(lat))] if names is None else [str(n) for n in names]
    for n, a, b in zip(names, lat, lon, strict=True):
        _check_receiver_position(n, a, b)
    if not np.all(np.isfinite(p)):
        raise ValidationError("power_dbm must be finite for every receiver")
    if model not in ("pathloss", "centroid"):
        raise ValidationError(f"model must be 'pathloss' or 'centroid', got {model!r}")
    n_exp = _positive(exponent, "exponent")
    shadow = _positive(shadowing_db, "shadowing_db")
    conf = _check_confidence(confidence)
    receivers = [
        ReceiverTiming(n, float(a), float(b), used=True)
        for n, a, b in zip(names, lat, lon, strict=True)
    ]
    note = (
        "RSSI estimate: far cruder than TDoA (power depends on antennas, calibration, "
        "terrain and propagation as much as on distance)"
    )
    if model == "centroid":
        w = 10.0 ** ((p - p.max()) / (10.0 * n_exp))
        w = w / w.sum()
        phi, lam = np.radians(lat), np.radians(lon)
        u = np.stack([np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)])
        c = (u * w).sum(axis=1)
        c /= np.linalg.norm(c)
        clat = math.degrees(math.asin(c[2]))
        clon = math.degrees(math.atan2(c[1], c[0]))
        east = (lon - clon) * _KM_PER_DEG * math.cos(math.radians(clat))
        north = (lat - clat) * _KM_PER_DEG
        dv = np.stack([east, north])
        cov = (dv * w) @ dv.T
        major, minor, az = _ellipse(cov, conf)
        return Localization(
            latitude=clat,
            longitude=clon,
            kind="rssi",
            method="centroid",
            semi_major_km=major,
            semi_minor_km=minor,
            orientation_deg=az,
            confidence=conf,
            covariance_km2=cov,
            receivers=receivers,
            dof=len(lat) - 2,
            converged=True,
            run_time_s=time.perf_counter() - t_start,
            settings={"model": model, "exponent": n_exp},
            notes=[note, "centroid: the ellipse is the weighted spread of the receivers"],
        )
    la0, la1, lo0, lo1 = _bounds(lat, lon, bounds, margin_deg)
    step = max(la1 - la0, lo1 - lo0) / 200.0
    glat = np.arange(la0, la1 + step / 2, step)
    glon = np.arange(lo0, lo1 + step / 2, step)
    la_g, lo_g = np.meshgrid(glat, glon, indexing="ij")

    def loss(la: Any, lo: Any) -> np.ndarray:
        d = np.stack(
            [np.asarray(geo.great_circle_m(la, lo, a, b)) for a, b in zip(lat, lon, strict=True)]
        )
        return 10.0 * n_exp * np.log10(np.maximum(d, 1000.0) / 1000.0)

    g_loss = loss(la_g, lo_g)
    p0 = np.mean(p[:, None, None] + g_loss, axis=0)
    chi = np.sum((p[:, None, None] - (p0 - g_loss)) ** 2, axis=0) / shadow**2
    i, j = np.unravel_index(int(np.argmin(chi)), chi.shape)
    lat0, lon0 = float(glat[i]), float(glon[j])

    def fun(q: np.ndarray) -> np.ndarray:
        la, lo = _local_to_ll(lat0, lon0, q[0], q[1])
        return (p - (q[2] - loss(la, lo))) / shadow

    r = optimize.least_squares(fun, np.array([0.0, 0.0, float(p0[i, j])]), method="lm")
    elat, elon = _local_to_ll(lat0, lon0, float(r.x[0]), float(r.x[1]))
    chi2 = float(np.sum(r.fun**2))
    dof = len(p) - 3
    jac = r.jac[:, [1, 0, 2]]  # east, north, P0
    try:
        cov3 = np.linalg.inv(jac.T @ jac)
        cov = cov3[:2, :2]
    except np.linalg.LinAlgError:
        cov = np.full((2, 2), np.inf)
    if dof > 0 and chi2 / dof > 1:
        cov = cov * chi2 / dof
    major, minor, az = _ellipse(cov, conf)
    chi2_grid = xr.DataArray(
        chi, dims=("latitude", "longitude"), coords={"latitude": glat, "longitude": glon}
    )
    chi2_grid.name = "chi2"
    return Localization(
        latitude=elat,
        longitude=elon,
        kind="rssi",
        method="pathloss",
        semi_major_km=major,
        semi_minor_km=minor,
        orientation_deg=az,
        confidence=conf,
        covariance_km2=cov,
        receivers=receivers,
        chi2=chi2,
        dof=dof,
        converged=bool(r.success),
        likelihood=_likelihood(chi2_grid),
        chi2_grid=chi2_grid,
        run_time_s=time.perf_counter() - t_start,
        settings={
            "model": model,
            "exponent": n_exp,
            "shadowing_db": shadow,
            "p0_dbm": float(r.x[2]),
        },
        notes=[note],
    )


def locate_rssi_dataset(
    ds: xr.Dataset,
    *,
    power: Literal["auto", "signal", "rssi"] = "auto",
    **options: Any,
) -> Localization:
    """The crude received-power estimate (:func:`locate_rssi`) for a capture Dataset.

    Parameters
    ----------
    ds : xarray.Dataset
        A capture with ``iq``, ``latitude``, ``longitude`` and, optionally, ``rssi_dbm``,
        ``calibration_db``, ``sample_rate``, ``n_samples``.
    power : {"auto", "signal", "rssi"}, default "auto"
        ``"signal"``: the noise-subtracted signal power of each receiver
        (:func:`heimdall_lab.dsp.measure`), in dBm where every receiver is calibrated, else
        dBFS (assuming equal gains); ``"rssi"``: the S-meter mean ``rssi_dbm`` (signal plus
        noise); ``"auto"``: signal power if calibrated, else RSSI if every receiver has
        one, else uncalibrated signal power.
    **options
        Passed to :func:`locate_rssi`.

    Returns
    -------
    Localization
        ``kind="rssi"``, with a note on which power was used.

    Raises
    ------
    ValidationError
        If ``ds`` lacks what is needed, a position is invalid, or fewer than three
        receivers have a measurable power.
    """
    if not isinstance(ds, xr.Dataset) or "iq" not in ds.variables:
        raise ValidationError("expected a capture Dataset with an 'iq' variable")
    for c in ("latitude", "longitude"):
        if c not in ds.variables:
            raise ValidationError(f"the capture Dataset lacks {c}")
    if power not in ("auto", "signal", "rssi"):
        raise ValidationError(f"power must be 'auto', 'signal' or 'rssi', got {power!r}")
    names = [str(v) for v in ds["receiver"].values]
    n_rx = len(names)
    lat = np.asarray(ds["latitude"].values, np.float64)
    lon = np.asarray(ds["longitude"].values, np.float64)
    cal = (
        np.asarray(ds["calibration_db"].values, np.float64)
        if "calibration_db" in ds.variables
        else np.full(n_rx, np.nan)
    )
    rssi = (
        np.asarray(ds["rssi_dbm"].values, np.float64)
        if "rssi_dbm" in ds.variables
        else np.full(n_rx, np.nan)
    )
    calibrated = bool(np.all(np.isfinite(cal)))
    choice = power
    if choice == "auto":
        choice = "signal" if calibrated or not np.all(np.isfinite(rssi)) else "rssi"
    if choice == "rssi":
        values, unit = rssi, "S-meter RSSI (dBm, signal plus noise)"
    else:
        values = np.full(n_rx, np.nan)
        rates = (
            np.asarray(ds["sample_rate"].values, np.float64)
            if "sample_rate" in ds.variables
            else np.full(n_rx, 12000.0)
        )
        counts = (
            np.asarray(ds["n_samples"].values, np.int64)
            if "n_samples" in ds.variables
            else np.full(n_rx, ds.sizes["sample"])
        )
        for i in range(n_rx):
            x = ds["iq"].values[i, : int(counts[i])]
            x = x[np.isfinite(x)]
            try:
                m = dsp.measure(x, float(rates[i]))
            except HeimdallError as exc:
                log.info("%s: no power measurement (%s)", names[i], exc)
                continue
            values[i] = m.signal_power_dbfs + (cal[i] if calibrated else 0.0)
        unit = "signal power, " + ("dBm" if calibrated else "dBFS assuming equal receiver gains")
    ok = np.isfinite(values)
    if ok.sum() < 3:
        raise ValidationError(
            f"only {int(ok.sum())} receiver(s) have a measurable power; an RSSI estimate needs 3"
        )
    out = locate_rssi(
        lat[ok],
        lon[ok],
        values[ok],
        names=[n for n, k in zip(names, ok, strict=True) if k],
        **options,
    )
    out.notes.append(f"power used: {unit}")
    out.capture_id = str(ds.attrs.get("capture_id", ""))
    return out


# ============================================================================================
# Plotting


def _ellipse_polygon(result: Localization, n: int = 181) -> tuple[np.ndarray, np.ndarray]:
    a, b = result.semi_major_km, result.semi_minor_km
    th = math.radians(result.orientation_deg)
    s = np.linspace(0, 2 * np.pi, n)
    # Major axis along azimuth th: unit vector (east, north) = (sin th, cos th).
    east = a * np.cos(s) * math.sin(th) + b * np.sin(s) * math.cos(th)
    north = a * np.cos(s) * math.cos(th) - b * np.sin(s) * math.sin(th)
    lat = result.latitude + north / _KM_PER_DEG
    lon = result.longitude + east / (_KM_PER_DEG * math.cos(math.radians(result.latitude)))
    return lat, lon


def plot_localization(
    result: Localization,
    ax: Any = None,
    *,
    truth: tuple[float, float] | None = None,
    hyperbolae: bool = True,
    extent: Sequence[float] | None = None,
    resolution: int = 400,
) -> Any:
    """Draw a localisation: chi-square map, receivers, TDoA isochrones, estimate and ellipse.

    Needs matplotlib (imported here, not by the module).

    Parameters
    ----------
    result : Localization
        What to draw.
    ax : matplotlib.axes.Axes, optional
        Where to draw; a new figure when omitted.
    truth : (float, float), optional
        A known transmitter position to mark.
    hyperbolae : bool, default True
        Draw, for each used pair, the curve where the predicted delay equals the measured one.
    extent : (lat_min, lat_max, lon_min, lon_max), optional
        Map area; default the search grid (or the receivers plus a margin).
    resolution : int, default 400
        Grid points along the longer side for the chi-square map and the isochrones (the
        map is recomputed for the area shown; RSSI results show their stored grid).

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn on.

    Raises
    ------
    ValidationError
        If ``result`` is not a Localization.
    ImportError
        If matplotlib is not installed.
    """
    import matplotlib.pyplot as plt  # optional dependency, imported here only

    if not isinstance(result, Localization):
        raise ValidationError(f"expected a Localization, got {type(result).__name__}")
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 7))
    rlat = np.array([r.latitude for r in result.receivers])
    rlon = np.array([r.longitude for r in result.receivers])
    if extent is not None:
        la0, la1, lo0, lo1 = (float(e) for e in extent)
    elif result.chi2_grid is not None:
        la0, la1 = (float(v) for v in result.chi2_grid["latitude"].values[[0, -1]])
        lo0, lo1 = (float(v) for v in result.chi2_grid["longitude"].values[[0, -1]])
    else:
        la0, la1, lo0, lo1 = _bounds(
            np.append(rlat, result.latitude), np.append(rlon, result.longitude), None, None
        )
    step = max(la1 - la0, lo1 - lo0) / max(int(resolution), 10)
    glat = np.arange(la0, la1 + step / 2, step)
    glon = np.arange(lo0, lo1 + step / 2, step)
    la_g, lo_g = np.meshgrid(glat, glon, indexing="ij")
    pos = {r.name: (r.latitude, r.longitude) for r in result.receivers}
    v = geo.SPEED_OF_LIGHT * result.velocity_factor
    pairs = result.used_pairs if result.kind == "tdoa" else []
    mismatch = []  # per used pair: predicted minus measured delay on the map grid
    for p in pairs:
        da = np.asarray(geo.great_circle_m(la_g, lo_g, *pos[p.receiver_a]))
        db = np.asarray(geo.great_circle_m(la_g, lo_g, *pos[p.receiver_b]))
        mismatch.append((da - db) / v - p.delay_s)
    if pairs:  # chi-square recomputed at the map's resolution
        chi = sum((m / p.sigma_s) ** 2 for m, p in zip(mismatch, pairs, strict=True))
        mesh = ax.pcolormesh(glon, glat, np.log10(1.0 + chi), shading="auto", cmap="viridis_r")
        plt.colorbar(mesh, ax=ax, label="log10(1 + chi2)")
    elif result.chi2_grid is not None:
        sub = result.chi2_grid.sel(latitude=slice(la0, la1), longitude=slice(lo0, lo1))
        if sub.size:
            mesh = ax.pcolormesh(
                sub["longitude"].values,
                sub["latitude"].values,
                np.log10(1.0 + sub.values),
                shading="auto",
                cmap="viridis_r",
            )
            plt.colorbar(mesh, ax=ax, label="log10(1 + chi2)")
    if hyperbolae:
        colours = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
        for k, (p, f) in enumerate(zip(pairs, mismatch, strict=True)):
            colour = colours[k % len(colours)]
            ax.contour(glon, glat, f, levels=[0.0], colors=[colour], linewidths=1.0)
            if len(pairs) <= _LEGEND_PAIRS:
                ax.plot([], [], color=colour, lw=1.0, label=f"{p.receiver_a}-{p.receiver_b}")
        if len(pairs) > _LEGEND_PAIRS:
            ax.plot([], [], color="grey", lw=1.0, label=f"isochrones of {len(pairs)} pairs")
    used = np.array([r.used for r in result.receivers], dtype=bool)
    ax.scatter(rlon[used], rlat[used], marker="^", c="k", s=50, zorder=5, label="receivers")
    if (~used).any():
        ax.scatter(rlon[~used], rlat[~used], marker="^", facecolors="none", edgecolors="grey")
    for r in result.receivers:
        ax.annotate(r.name, (r.longitude, r.latitude), xytext=(4, 4), textcoords="offset points")
    ax.plot(result.longitude, result.latitude, "r+", ms=14, mew=2, zorder=6, label="estimate")
    if math.isfinite(result.semi_major_km) and math.isfinite(result.semi_minor_km):
        elat, elon = _ellipse_polygon(result)
        ax.plot(elon, elat, "r-", lw=1.2, label=f"{result.confidence:.0%} ellipse")
    if truth is not None:
        ax.plot(truth[1], truth[0], "wx", ms=10, mew=2, mec="m", zorder=6, label="truth")
        ax.plot(truth[1], truth[0], "mx", ms=10, mew=2, zorder=7)
    ax.set_xlim(lo0, lo1)
    ax.set_ylim(la0, la1)
    ax.set_aspect(1.0 / max(math.cos(math.radians(0.5 * (la0 + la1))), 0.05))
    ax.set_xlabel("longitude (deg E)")
    ax.set_ylabel("latitude (deg N)")
    ax.set_title(result.summary().split(", chi2")[0], fontsize=9)
    ax.legend(loc="best", fontsize=8)
    return ax
