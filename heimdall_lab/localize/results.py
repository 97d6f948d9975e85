"""What a localization returns.

Per-receiver timing, per-pair delays, the position and its uncertainty.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from heimdall_lab import geo
from heimdall_lab.localize.model import DelayModel, chi2, whitener
from heimdall_lab.propagation import Propagation
from heimdall_lab.values import jsonable

log = logging.getLogger(__name__)


_KM_PER_DEG = geo.EARTH_RADIUS_M * math.pi / 180.0 / 1000.0
_PSR_WINDOW_S = 0.5
_GAP_GUARD_S = 0.02
_TAPER = 0.1  # Tukey taper fraction of each chunk
_LEGEND_PAIRS = 6
_MAX_STARTS = 6
_PAIR_COLUMNS = [
    "pair",
    "receiver_a",
    "receiver_b",
    "delay_us",
    "sigma_us",
    "coefficient",
    "used",
    "residual_us",
    "reason",
]


# ============================================================================================
# Results


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
        return jsonable({f.name: getattr(self, f.name) for f in fields(self)})


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
    subband_delays_s : numpy.ndarray
        The delay measured in each slice of the correlation band (``subbands``), seconds:
        NaN for a slice with too little signal. Empty unless asked for.
    subband_bands_hz : numpy.ndarray
        The slices, ``(K, 2)`` rows of ``(low_hz, high_hz)`` on ``|f|``.
    subband_sigmas_s : numpy.ndarray
        Each slice's standard error from the spread of its chunk delays, seconds.
    subband_coefficients : numpy.ndarray
        Each slice's normalised correlation at its delay.
    leading_edge_s : float
        The earliest-arrival delay (``leading_edge``), seconds; NaN unless asked for or
        when none is found.
    """

    delay_s: float
    sigma_s: float
    coefficient: float
    psr_db: float
    n_chunks: int
    chunk_delays_s: np.ndarray = field(default_factory=lambda: np.zeros(0))
    subband_delays_s: np.ndarray = field(default_factory=lambda: np.zeros(0))
    subband_bands_hz: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    subband_sigmas_s: np.ndarray = field(default_factory=lambda: np.zeros(0))
    subband_coefficients: np.ndarray = field(default_factory=lambda: np.zeros(0))
    leading_edge_s: float = float("nan")


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
    sigma_stat_s, sigma_sys_s : float
        The two parts of ``sigma_s``: statistical (the chunk spread) and systematic (from
        the data and what was stated; :mod:`heimdall_lab.localize.budget`).
    estimator_spread_s, subband_spread_s : float
        The systematic error implied by the estimators' disagreement and by the spread of
        the sub-band delays (NaN where not measured).
    other_delay_s : float
        The other estimator's delay (``method="auto"``), when it gave a good one.
    calibration_s : float
        What a reference-emitter calibration removed (``bias(a) - bias(b)``): the
        correlation measured ``delay_s + calibration_s``.
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
    sigma_stat_s: float = float("nan")
    sigma_sys_s: float = float("nan")
    estimator_spread_s: float = float("nan")
    subband_spread_s: float = float("nan")
    other_delay_s: float = float("nan")
    calibration_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (NaN as None).

        Returns
        -------
        dict
            Field name to value.
        """
        return jsonable({f.name: getattr(self, f.name) for f in fields(self)})


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
    propagation : dict
        The path model (:class:`heimdall_lab.propagation.Propagation` fields).
    region : xarray.DataArray or None
        The likelihood region: ``(chi2 - chi2 at the estimate) / scale`` on a local grid
        around the estimate, dims ``(latitude, longitude)``; the region is where it is at
        most ``attrs["threshold"]`` (chi-square with 2 dof at ``confidence``). Unlike the
        ellipse it keeps the shape of the likelihood (a banana, two lobes).
    pair_covariance_s2 : numpy.ndarray
        Covariance of the used pairs' delays (s^2, in the order of :attr:`used_pairs`), the
        independent and the per-receiver parts: what the fit weighed them with.
    error_budget : dict
        Which errors the uncertainty includes and how large each is (:meth:`summary` lists
        them): ``includes`` (a list of sentences) and the per-pair and per-receiver parts.
    dropped : list of dict
        Receivers the robust fit left out, with the chi-square before and after and why.
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
    propagation: dict[str, Any] = field(default_factory=lambda: Propagation().to_dict())
    region: xr.DataArray | None = None
    pair_covariance_s2: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    error_budget: dict[str, Any] = field(default_factory=dict)
    dropped: list[dict[str, Any]] = field(default_factory=list)
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

    def pairs_frame(self) -> pd.DataFrame:
        """The receiver pairs as a table, one row per pair correlated, used or not.

        Returns
        -------
        pandas.DataFrame
            Columns ``pair`` (``"A-B"``), ``receiver_a``, ``receiver_b``, ``delay_us``
            (arrival at A minus arrival at B), ``sigma_us``, ``coefficient``, ``used``,
            ``residual_us`` (measured minus predicted delay at the estimate; NaN before
            solving) and ``reason`` (why a pair was not used; empty when used), in the order
            of :attr:`pairs`.
        """
        return pd.DataFrame(
            {
                "pair": [f"{p.receiver_a}-{p.receiver_b}" for p in self.pairs],
                "receiver_a": [p.receiver_a for p in self.pairs],
                "receiver_b": [p.receiver_b for p in self.pairs],
                "delay_us": np.array([p.delay_s for p in self.pairs], np.float64) * 1e6,
                "sigma_us": np.array([p.sigma_s for p in self.pairs], np.float64) * 1e6,
                "coefficient": np.array([p.coefficient for p in self.pairs], np.float64),
                "used": np.array([bool(p.used) for p in self.pairs], bool),
                "residual_us": np.array([p.residual_s for p in self.pairs], np.float64) * 1e6,
                "reason": [str(p.reason) for p in self.pairs],
            },
            columns=_PAIR_COLUMNS,
        )

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
        return float(geo.distance_m(self.latitude, self.longitude, latitude, longitude)) / 1e3

    def compare(self, latitude: float, longitude: float) -> list[PairDelay]:
        """Fill each pair's ``truth_delay_s`` from a known transmitter position.

        Parameters
        ----------
        latitude, longitude : float
            The known (true) position, degrees.

        Returns
        -------
        list of PairDelay
            The pairs, with ``truth_delay_s`` set (by the result's propagation model).

        Raises
        ------
        ValidationError
            If the position is not on the Earth.
        """
        geo.check_position(latitude, longitude, "known position")
        if self.pairs:
            model = self._model(self.pairs)
            for p, t in zip(self.pairs, model(latitude, longitude), strict=True):
                p.truth_delay_s = float(t)
        return self.pairs

    def _model(self, pairs: list[PairDelay]) -> DelayModel:
        index = {r.name: k for k, r in enumerate(self.receivers)}
        return DelayModel(
            np.array([r.latitude for r in self.receivers]),
            np.array([r.longitude for r in self.receivers]),
            np.array([index[p.receiver_a] for p in pairs]),
            np.array([index[p.receiver_b] for p in pairs]),
            Propagation.of(self.propagation),
            self.settings.get("frequency_hz"),
        )

    def delta_chi2(self, latitude: Any, longitude: Any) -> np.ndarray | float:
        """``(chi2 - chi2 at the estimate) / scale`` at position(s): the region's measure.

        Parameters
        ----------
        latitude, longitude : float or array_like
            Position(s), degrees.

        Returns
        -------
        float or numpy.ndarray
            Exact (no grid); the region is where it is at most the threshold
            (``region.attrs["threshold"]``).
        """
        geo.check_position(latitude, longitude, "position")
        used = self.used_pairs
        if self.kind != "tdoa" or len(used) != len(self.pair_covariance_s2) or not used:
            raise ValueError("this localization has no likelihood region")
        model = self._model(used)
        delays = np.array([p.delay_s for p in used])
        value = chi2(whitener(self.pair_covariance_s2), delays, model(latitude, longitude))
        value = (value - self.chi2) / float(self.settings.get("scale", 1.0))
        return float(value) if np.ndim(value) == 0 else value

    def contains(self, latitude: float, longitude: float) -> bool:
        """Whether a position lies inside the likelihood region at :attr:`confidence`.

        Parameters
        ----------
        latitude, longitude : float
            The position, degrees.

        Returns
        -------
        bool
            ``delta_chi2(latitude, longitude) <= chi2.ppf(confidence, 2)``, evaluated
            exactly; for an RSSI result, whether it lies inside the ellipse.
        """
        from scipy import stats

        threshold = float(stats.chi2.ppf(self.confidence, 2))
        if self.kind == "tdoa" and len(self.pair_covariance_s2):
            return bool(self.delta_chi2(latitude, longitude) <= threshold)
        lat0 = math.radians(self.latitude)
        north = (latitude - self.latitude) * _KM_PER_DEG
        east = ((longitude - self.longitude + 180) % 360 - 180) * _KM_PER_DEG * math.cos(lat0)
        x = np.array([east, north])
        try:
            m = float(x @ np.linalg.solve(self.covariance_km2, x))
        except np.linalg.LinAlgError:
            return False
        return bool(m <= threshold)

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
            if f.name in ("likelihood", "chi2_grid", "region", "receivers", "pairs"):
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
        return jsonable(out)

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
            + "".join(f"; dropped {x['receiver']}" for x in self.dropped)
            + (
                f"; errors included: {', '.join(self.error_budget['parts'])}"
                if self.error_budget.get("parts")
                else ""
            )
        )
