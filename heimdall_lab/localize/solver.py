"""The position from pair delays.

A generalised least-squares fit. The covariance of the pair delays (an independent part per
pair, a part per receiver; :mod:`heimdall_lab.localize.model`) whitens the residuals. The
lowest minima of chi-square on a latitude/longitude grid start ``scipy.optimize.least_squares``;
with four or more receivers a receiver whose pairs disagree with the rest is found and
dropped (:func:`solve_tdoa`'s ``robust``); the ellipse comes from the Jacobian and the region
is the likelihood contour itself, on a local grid around the estimate.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr
from scipy import ndimage, optimize, stats

from heimdall_lab import geo
from heimdall_lab.errors import HeimdallError, LocalizationError, ValidationError
from heimdall_lab.localize.checks import _check_receiver_position
from heimdall_lab.localize.model import DelayModel, chi2, pair_covariance, whitener
from heimdall_lab.localize.results import (
    _KM_PER_DEG,
    _MAX_STARTS,
    Localization,
    PairDelay,
    ReceiverTiming,
)
from heimdall_lab.propagation import Propagation
from heimdall_lab.values import positive

log = logging.getLogger(__name__)

#: Points per side of the local grid the likelihood region is drawn on.
REGION_POINTS = 81
#: The search grid's default step: this fraction of the search area's larger side.
GRID_DIVISIONS = 100
#: Default significance below which the robust fit looks for a receiver to drop.
ROBUST_ALPHA = 0.01


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
    m = max(2.0, 0.5 * extent) if margin_deg is None else positive(margin_deg, "margin_deg")
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
    ambiguous: bool
    alternatives: list[dict[str, float]]
    chi2_grid: xr.DataArray | None
    notes: list[str] = field(default_factory=list)


@dataclass
class _Problem:
    """The delays to fit, their model and their whitening."""

    model: DelayModel
    delays: np.ndarray
    cov: np.ndarray

    def __post_init__(self) -> None:
        self.w = whitener(self.cov)

    def residuals(self, lat: float, lon: float) -> np.ndarray:
        return self.w @ (self.delays - self.model(lat, lon))

    def chi2(self, lat: Any, lon: Any) -> np.ndarray:
        return chi2(self.w, self.delays, self.model(lat, lon))

    def subset(self, keep: np.ndarray) -> _Problem:
        return _Problem(self.model.subset(keep), self.delays[keep], self.cov[np.ix_(keep, keep)])


def _least_squares(
    prob: _Problem, lat0: float, lon0: float, box: tuple[float, float, float, float] | None
) -> tuple[float, float, float, bool]:
    """Refine from (lat0, lon0) in a local north/east frame (km), within ``box`` if given."""

    def fun(p: np.ndarray) -> np.ndarray:
        return prob.residuals(*_local_to_ll(lat0, lon0, p[0], p[1]))

    if box is None:
        lower, upper = [-np.inf, -np.inf], [np.inf, np.inf]
    else:
        east_scale = _KM_PER_DEG * max(math.cos(math.radians(lat0)), 1e-6)
        lower = [(box[0] - lat0) * _KM_PER_DEG, (box[2] - lon0) * east_scale]
        upper = [(box[1] - lat0) * _KM_PER_DEG, (box[3] - lon0) * east_scale]
    r = optimize.least_squares(
        fun,
        np.zeros(2),
        bounds=(lower, upper),
        method="trf",
        x_scale=np.array([10.0, 10.0]),
        xtol=1e-12,
        ftol=1e-12,
        gtol=1e-12,
    )
    lat, lon = _local_to_ll(lat0, lon0, float(r.x[0]), float(r.x[1]))
    edge = bool(np.any(np.isclose(r.x, lower, atol=1e-6) | np.isclose(r.x, upper, atol=1e-6)))
    return lat, lon, float(np.sum(r.fun**2)), bool(r.success) and not edge


def _covariance(prob: _Problem, lat: float, lon: float) -> np.ndarray:
    """(east, north) covariance in km^2 from the Jacobian of the whitened residuals."""
    h = 0.01  # km
    m = len(prob.delays)
    jac = np.empty((m, 2))
    for col, (dn, de) in enumerate(((h, 0.0), (0.0, h))):
        plus = prob.residuals(*_local_to_ll(lat, lon, dn, de))
        minus = prob.residuals(*_local_to_ll(lat, lon, -dn, -de))
        jac[:, col] = (plus - minus) / (2 * h)
    jac = jac[:, ::-1]  # columns: east, north
    jtj = jac.T @ jac
    try:
        return np.linalg.inv(jtj) if np.linalg.cond(jtj) < 1e12 else np.full((2, 2), np.inf)
    except np.linalg.LinAlgError:  # pragma: no cover - defensive
        return np.full((2, 2), np.inf)


def _solve(
    prob: _Problem,
    *,
    bounds: Sequence[float] | None,
    margin_deg: float | None,
    grid_step_deg: float | None,
    confidence: float,
) -> _Fit:
    rlat, rlon = prob.model.rlat, prob.model.rlon
    la0, la1, lo0, lo1 = _bounds(rlat, rlon, bounds, margin_deg)
    step = (
        max(la1 - la0, lo1 - lo0) / GRID_DIVISIONS
        if grid_step_deg is None
        else positive(grid_step_deg, "grid_step_deg")
    )
    glat = np.linspace(la0, la1, max(3, round((la1 - la0) / step) + 1))
    glon = np.linspace(lo0, lo1, max(3, round((lo1 - lo0) / step) + 1))
    if len(glat) * len(glon) > 4_000_000:
        raise ValidationError("the search grid would exceed 4 million points; raise grid_step_deg")
    chi = chi2(prob.w, prob.delays, prob.model.on_grid(glat, glon))
    chi2_grid = xr.DataArray(
        chi,
        dims=("latitude", "longitude"),
        coords={"latitude": glat, "longitude": glon},
        name="chi2",
        attrs={"long_name": "sum of squared whitened TDoA residuals", "units": "1"},
    )
    minima = (chi == ndimage.minimum_filter(chi, size=5, mode="nearest")) & np.isfinite(chi)
    cand = np.argwhere(minima)
    order = np.argsort(chi[minima])
    starts = [tuple(cand[k]) for k in order[:_MAX_STARTS]]
    # Least squares from each start, kept within the grid plus 10 % (a local minimum could
    # otherwise run off to the antipodes).
    pad_lat, pad_lon = 0.1 * (la1 - la0), 0.1 * (lo1 - lo0)
    box = (
        max(-90.0, la0 - pad_lat),
        min(90.0, la1 + pad_lat),
        max(-180.0, lo0 - pad_lon),
        min(180.0, lo1 + pad_lon),
    )
    solutions: list[tuple[float, float, float, bool]] = []
    for i, j in starts:
        try:
            solutions.append(_least_squares(prob, float(glat[i]), float(glon[j]), box))
        except (ValueError, HeimdallError) as exc:  # pragma: no cover - defensive
            log.debug("least squares from %.3f, %.3f failed: %s", glat[i], glon[j], exc)
    if not solutions:  # pragma: no cover - defensive
        raise LocalizationError("the position fit failed from every starting point")
    solutions.sort(key=lambda s: s[2])
    distinct: list[tuple[float, float, float, bool]] = []
    for s in solutions:
        if all(float(geo.distance_m(s[0], s[1], d[0], d[1])) > 1000.0 for d in distinct):
            distinct.append(s)
    threshold = float(stats.chi2.ppf(confidence, 2))
    best = distinct[0]
    close = [s for s in distinct if s[2] - best[2] < 1e-9 * max(1.0, best[2]) + 1e-9]
    if len(close) > 1:  # exact ties (e.g. two crossings of two hyperbolae): nearest the centre
        cl, co = float(np.mean(rlat)), float(np.mean(rlon))
        best = min(close, key=lambda s: float(geo.distance_m(s[0], s[1], cl, co)))
    alternatives = [
        {
            "latitude": s[0],
            "longitude": s[1],
            "chi2": s[2],
            "distance_km": float(geo.distance_m(s[0], s[1], best[0], best[1])) / 1e3,
        }
        for s in distinct
        if s is not best
    ][:3]
    ambiguous = any(a["chi2"] - best[2] < threshold for a in alternatives)
    lat, lon, chi2_best, converged = best
    notes = []
    if not converged:
        notes.append(
            "the fit did not converge inside the search area (it stopped at its edge); the "
            "transmitter may lie outside it: widen bounds"
        )
    return _Fit(
        lat,
        lon,
        chi2_best,
        _covariance(prob, lat, lon),
        converged,
        ambiguous,
        alternatives,
        chi2_grid,
        notes,
    )


def _refit(prob: _Problem, lat: float, lon: float) -> tuple[float, float, float]:
    """A quick fit from a known nearby position (no grid): (lat, lon, chi2)."""
    la, lo, c, _ = _least_squares(prob, lat, lon, None)
    return la, lo, c


def _robust(
    prob: _Problem,
    fit: _Fit,
    names: list[str],
    alpha: float,
    solve: Any,
) -> tuple[np.ndarray, _Fit, list[dict[str, Any]]]:
    """Drop, one at a time, the receiver whose pairs disagree with the rest.

    While the fit is inconsistent (chi-square's p-value under ``alpha``) and at least four
    receivers remain, every receiver is left out in turn (a quick refit from the estimate);
    the one whose removal gives the most consistent fit is dropped if the fall in
    chi-square is itself significant at ``alpha``. Returns the pairs kept (mask), the fit
    on them, and what was dropped and why.
    """
    keep = np.ones(len(prob.delays), dtype=bool)
    dropped: list[dict[str, Any]] = []
    while True:
        sub = prob.subset(keep)
        dof = int(keep.sum()) - 2
        active = sorted(set(sub.model.ia) | set(sub.model.ib))
        p_now = float(stats.chi2.sf(fit.chi2, dof)) if dof > 0 else 1.0
        if p_now >= alpha or len(active) < 4:
            return keep, fit, dropped
        trials = []
        for k in active:
            trial = keep & (prob.model.ia != k) & (prob.model.ib != k)
            left = set(prob.model.ia[trial]) | set(prob.model.ib[trial])
            if trial.sum() < 2 or len(left) < 3:
                continue
            _, _, c = _refit(prob.subset(trial), fit.lat, fit.lon)
            d = int(trial.sum()) - 2
            p = float(stats.chi2.sf(c, d)) if d > 0 else 1.0
            trials.append((p, -c, k, trial))
        if not trials:
            return keep, fit, dropped
        p_best, neg_c, k, trial = max(trials, key=lambda t: (t[0], t[1]))
        gain, dof_gain = fit.chi2 + neg_c, dof - (int(trial.sum()) - 2)
        p_gain = float(stats.chi2.sf(gain, max(dof_gain, 1)))
        if p_gain >= alpha:
            return keep, fit, dropped
        dropped.append(
            {
                "receiver": names[k],
                "chi2_before": fit.chi2,
                "dof_before": dof,
                "chi2_after": -neg_c,
                "dof_after": int(trial.sum()) - 2,
                "reason": (
                    f"its pairs disagree with the others: chi2 {fit.chi2:.1f} on {dof} dof "
                    f"(p = {p_now:.1g}) with it, {-neg_c:.1f} on {int(trial.sum()) - 2} dof "
                    f"(p = {p_best:.2g}) without it"
                ),
            }
        )
        keep = trial
        fit = solve(prob.subset(keep))


def _ellipse(cov: np.ndarray, confidence: float) -> tuple[float, float, float]:
    if not np.all(np.isfinite(cov)):
        return float("inf"), float("inf"), float("nan")
    k = float(stats.chi2.ppf(confidence, 2))
    vals, vecs = np.linalg.eigh(cov)
    vals = np.clip(vals, 0.0, None)
    major = vecs[:, 1]  # (east, north) of the largest eigenvalue
    azimuth = math.degrees(math.atan2(major[0], major[1])) % 180.0
    return math.sqrt(vals[1] * k), math.sqrt(vals[0] * k), azimuth


def _region(
    prob: _Problem, fit: _Fit, scale: float, threshold: float, major_km: float
) -> xr.DataArray:
    """``(chi2 - chi2_min) / scale`` on a local grid that holds the region.

    The grid is centred on the estimate, 4 semi-major axes (at least 2 km, at most 3000 km)
    each way, and stretched to take in any alternative solution inside the region.
    """
    half = float(np.clip(4.0 * major_km if math.isfinite(major_km) else 3000.0, 2.0, 3000.0))
    north = [-half, half]
    east = [-half, half]
    east_scale = _KM_PER_DEG * max(math.cos(math.radians(fit.lat)), 1e-6)
    for alt in fit.alternatives:
        if (alt["chi2"] - fit.chi2) / scale <= threshold:
            dn = (alt["latitude"] - fit.lat) * _KM_PER_DEG
            de = ((alt["longitude"] - fit.lon + 180.0) % 360.0 - 180.0) * east_scale
            north = [min(north[0], dn - half / 4), max(north[1], dn + half / 4)]
            east = [min(east[0], de - half / 4), max(east[1], de + half / 4)]
    lat = np.clip(
        fit.lat + np.linspace(north[0], north[1], REGION_POINTS) / _KM_PER_DEG, -90.0, 90.0
    )
    lon = fit.lon + np.linspace(east[0], east[1], REGION_POINTS) / east_scale
    lon = (lon + 180.0) % 360.0 - 180.0
    la_g, lo_g = np.meshgrid(lat, lon, indexing="ij")
    delta = (prob.chi2(la_g, lo_g) - fit.chi2) / scale
    return xr.DataArray(
        np.maximum(delta, 0.0),
        dims=("latitude", "longitude"),
        coords={"latitude": lat, "longitude": lon},
        name="delta_chi2",
        attrs={
            "long_name": "(chi2 - chi2 at the estimate) / scale",
            "units": "1",
            "threshold": threshold,
        },
    )


def _likelihood(chi2_grid: xr.DataArray) -> xr.DataArray:
    chi = chi2_grid.values
    like = np.exp(-0.5 * (chi - np.nanmin(chi)))
    out = chi2_grid.copy(data=like)
    out.name = "likelihood"
    out.attrs = {"long_name": "relative likelihood exp(-(chi2 - min chi2) / 2)", "units": "1"}
    return out


def _check_confidence(confidence: Any) -> float:
    c = positive(confidence, "confidence")
    if not c < 1:
        raise ValidationError(f"confidence must be in (0, 1), got {confidence}")
    return c


def _receiver_cov(value: Any, n: int) -> np.ndarray:
    """Per-receiver timing covariance (n, n), s^2, from a sigma, n sigmas or a matrix."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValidationError("receiver_sigma_s must be a number, n numbers or n x n") from exc
    if arr.ndim == 0 or arr.shape == (n,):
        sig = np.broadcast_to(arr, (n,))
        if not np.all(np.isfinite(sig) & (sig >= 0)):
            raise ValidationError("receiver_sigma_s must be finite and >= 0")
        return np.diag(np.square(sig))
    if arr.shape == (n, n) and np.all(np.isfinite(arr)) and np.allclose(arr, arr.T):
        return arr
    raise ValidationError(f"receiver_sigma_s must be a number, {n} numbers or {n} x {n}")


def solve_tdoa(
    latitudes: Sequence[float],
    longitudes: Sequence[float],
    pairs: Sequence[tuple[int, int]],
    delays_s: Sequence[float],
    sigmas_s: Sequence[float] | float = 1e-6,
    *,
    names: Sequence[str] | None = None,
    propagation: Propagation | str | dict | None = None,
    frequency_hz: float | None = None,
    receiver_sigma_s: float | Sequence[float] | np.ndarray = 0.0,
    bounds: Sequence[float] | None = None,
    margin_deg: float | None = None,
    grid_step_deg: float | None = None,
    confidence: float = 0.95,
    inflate: bool = True,
    robust: bool = True,
    robust_alpha: float = ROBUST_ALPHA,
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
        Independent standard error of each delay, seconds.
    names : sequence of str, optional
        Receiver names (default ``rx0``, ``rx1``, ...).
    propagation : Propagation, str or dict, optional
        The path model (:class:`heimdall_lab.propagation.Propagation`); default the ground
        wave at the speed of light.
    frequency_hz : float, optional
        The frequency, for the ``"auto"`` propagation mode's ground range.
    receiver_sigma_s : float, n floats or (n, n) array, default 0
        Timing error per receiver (standard deviation, seconds; or their covariance, s^2):
        it enters every pair the receiver is in, so the pairs' errors are correlated.
    bounds : (lat_min, lat_max, lon_min, lon_max), optional
        Search grid; default the receivers' bounding box plus ``margin_deg``.
    margin_deg : float, optional
        Margin around the receivers, degrees; default ``max(2, half the box's larger side)``.
    grid_step_deg : float, optional
        Grid spacing, degrees; default 1/100 of the box's larger side.
    confidence : float, default 0.95
        Probability content of the ellipse and the region.
    inflate : bool, default True
        Multiply the independent variances by ``n_receivers / 2`` when the pairs are all
        pairs of their receivers (they share receivers, so they are not independent).
    robust : bool, default True
        With four or more receivers, drop a receiver whose pairs disagree with the rest
        (chi-square p-value under ``robust_alpha``, and a significant fall without it); the
        result's ``dropped`` says which and why.
    robust_alpha : float, default 0.01
        Significance of the robust fit's tests.

    Returns
    -------
    Localization
        The estimate with ellipse, likelihood region, per-pair residuals, chi-square and
        likelihood grids (``receivers`` carry only names and positions here).

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
    prop = Propagation.of(propagation)
    conf = _check_confidence(confidence)
    alpha = _check_confidence(robust_alpha)
    rcov = _receiver_cov(receiver_sigma_s, len(lat))
    involved = np.unique(pr)
    if len(pr) < 2 or len(involved) < 3:
        raise LocalizationError(
            f"{len(pr)} pair(s) over {len(involved)} receiver(s): a 2-D position needs at "
            "least two pairs over three receivers"
        )
    factor = len(involved) / 2.0 if inflate and len(pr) > len(involved) - 1 else 1.0
    model = DelayModel(lat, lon, pr[:, 0], pr[:, 1], prop, frequency_hz)
    prob = _Problem(
        model, d, pair_covariance(pr[:, 0], pr[:, 1], len(lat), s * math.sqrt(factor), rcov)
    )

    def solve(p: _Problem) -> _Fit:
        return _solve(
            p, bounds=bounds, margin_deg=margin_deg, grid_step_deg=grid_step_deg, confidence=conf
        )

    fit = solve(prob)
    keep = np.ones(len(d), dtype=bool)
    dropped: list[dict[str, Any]] = []
    if robust:
        keep, fit, dropped = _robust(prob, fit, names, alpha, solve)
    final = prob.subset(keep)
    dof = int(keep.sum()) - 2
    scale = fit.chi2 / dof if dof > 0 and fit.chi2 / dof > 1.0 else 1.0
    cov = fit.cov_km2 * scale
    major, minor, azimuth = _ellipse(cov, conf)
    threshold = float(stats.chi2.ppf(conf, 2))
    region = _region(final, fit, scale, threshold, major)
    notes = list(fit.notes)
    edge = np.concatenate(
        [region.values[0], region.values[-1], region.values[:, 0], region.values[:, -1]]
    )
    if np.any(edge <= threshold):
        notes.append(
            "the likelihood region reaches the edge of the grid it was drawn on (it is open or "
            "very long): the ellipse understates it"
        )
    model_all = model(fit.lat, fit.lon)
    gone = {x["receiver"] for x in dropped}
    pair_out = []
    for k, (a, b) in enumerate(pr):
        baseline = float(geo.distance_m(lat[a], lon[a], lat[b], lon[b]))
        p = PairDelay(
            names[a],
            names[b],
            float(d[k]),
            float(s[k]),
            max_delay_s=baseline / (geo.SPEED_OF_LIGHT * prop.velocity_factor),
            model_delay_s=float(model_all[k]),
            residual_s=float(d[k] - model_all[k]),
        )
        if not keep[k]:
            p.used = False
            who = [n for n in (names[a], names[b]) if n in gone]
            p.reason = f"receiver {who[0]} dropped by the robust fit" if who else "dropped"
        pair_out.append(p)
    kept_rx = set(pr[keep].ravel().tolist())
    receivers = [
        ReceiverTiming(
            n,
            float(a),
            float(b),
            used=i in kept_rx,
            reason=(
                next((x["reason"] for x in dropped if x["receiver"] == n), "")
                if i in involved and i not in kept_rx
                else ""
            ),
        )
        for i, (n, a, b) in enumerate(zip(names, lat, lon, strict=True))
    ]
    for x in dropped:
        notes.append(f"robust fit: dropped {x['receiver']}: {x['reason']}")
    return Localization(
        latitude=fit.lat,
        longitude=fit.lon,
        kind="tdoa",
        method="delays",
        semi_major_km=major,
        semi_minor_km=minor,
        orientation_deg=azimuth,
        confidence=conf,
        covariance_km2=cov,
        receivers=receivers,
        pairs=pair_out,
        chi2=fit.chi2,
        dof=dof,
        converged=fit.converged,
        ambiguous=fit.ambiguous,
        alternatives=fit.alternatives,
        likelihood=_likelihood(fit.chi2_grid) if fit.chi2_grid is not None else None,
        chi2_grid=fit.chi2_grid,
        propagation=prop.to_dict(),
        region=region,
        pair_covariance_s2=final.cov,
        dropped=dropped,
        run_time_s=time.perf_counter() - t_start,
        settings={
            "inflate": factor,
            "scale": scale,
            "frequency_hz": frequency_hz,
            "robust": bool(robust),
        },
        notes=notes,
    )
