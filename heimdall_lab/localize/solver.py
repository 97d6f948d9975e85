"""The position from pair delays.

Grid search, least squares, uncertainty ellipse and likelihood map.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr
from scipy import ndimage, optimize, stats

from heimdall_lab import geo
from heimdall_lab.errors import HeimdallError, LocalizationError, ValidationError
from heimdall_lab.localize.checks import _check_receiver_position
from heimdall_lab.localize.results import (
    _KM_PER_DEG,
    _MAX_STARTS,
    Localization,
    PairDelay,
    ReceiverTiming,
)
from heimdall_lab.values import positive

log = logging.getLogger(__name__)


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
        [np.asarray(geo.distance_m(lat, lon, a, b)) for a, b in zip(rlat, rlon, strict=True)]
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
        else positive(grid_step_deg, "grid_step_deg")
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
    c = positive(confidence, "confidence")
    if not c < 1:
        raise ValidationError(f"confidence must be in (0, 1), got {confidence}")
    return c


def _check_velocity(velocity_factor: Any) -> float:
    v = positive(velocity_factor, "velocity_factor")
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
        baseline = float(geo.distance_m(lat[a], lon[a], lat[b], lon[b]))
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
