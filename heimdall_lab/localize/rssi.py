"""The RSSI fallback: a coarse position from received power where timing is not usable."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import xarray as xr
from scipy import optimize

from heimdall_lab import dsp, geo
from heimdall_lab.errors import HeimdallError, ValidationError
from heimdall_lab.localize.checks import _check_receiver_position
from heimdall_lab.localize.results import _KM_PER_DEG, Localization, ReceiverTiming
from heimdall_lab.localize.solver import (
    _bounds,
    _check_confidence,
    _ellipse,
    _likelihood,
    _local_to_ll,
)
from heimdall_lab.recording import NOMINAL_RATE
from heimdall_lab.values import positive

log = logging.getLogger(__name__)


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
    n_exp = positive(exponent, "exponent")
    shadow = positive(shadowing_db, "shadowing_db")
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
            [np.asarray(geo.distance_m(la, lo, a, b)) for a, b in zip(lat, lon, strict=True)]
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
            else np.full(n_rx, NOMINAL_RATE)
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
