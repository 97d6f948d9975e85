"""The localization map: likelihood, hyperbolae, estimate, ellipse and receivers."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from heimdall_lab.errors import ValidationError
from heimdall_lab.localize.results import _KM_PER_DEG, _LEGEND_PAIRS, Localization
from heimdall_lab.localize.solver import _bounds

log = logging.getLogger(__name__)

#: Opacity of the chi-square map, so that land shows through it.
_MESH_ALPHA = 0.8


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

    Over a base map of land, coastlines and borders that works offline
    (:func:`heimdall_lab.ui.maps.base_map`; the chi-square map is slightly transparent and
    the outlines are drawn over it); receiver labels keep clear of each other, of the
    markers and of the legend. Needs matplotlib (imported here, not by the module).

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

    from heimdall_lab.ui import maps

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
    # Light outlines: they are drawn over the (mostly dark) chi-square map.
    maps.base_map(ax, (la0, la1), (lo0, lo1), margin_deg=0.0, coast_colour="w", border_colour="0.8")
    step = max(la1 - la0, lo1 - lo0) / max(int(resolution), 10)
    glat = np.arange(la0, la1 + step / 2, step)
    glon = np.arange(lo0, lo1 + step / 2, step)
    la_g, lo_g = np.meshgrid(glat, glon, indexing="ij")
    pairs = result.used_pairs if result.kind == "tdoa" else []
    # per used pair: predicted minus measured delay on the map grid
    predicted = result._model(pairs)(la_g, lo_g) if pairs else []
    mismatch = [pred - p.delay_s for pred, p in zip(predicted, pairs, strict=True)]
    if pairs:  # chi-square recomputed at the map's resolution
        chi = sum((m / p.sigma_s) ** 2 for m, p in zip(mismatch, pairs, strict=True))
        mesh = ax.pcolormesh(
            glon, glat, np.log10(1.0 + chi), shading="auto", cmap="viridis_r", alpha=_MESH_ALPHA
        )
        ax.figure.colorbar(mesh, ax=ax, label="log10(1 + chi2)")
    elif result.chi2_grid is not None:
        sub = result.chi2_grid.sel(latitude=slice(la0, la1), longitude=slice(lo0, lo1))
        if sub.size:
            mesh = ax.pcolormesh(
                sub["longitude"].values,
                sub["latitude"].values,
                np.log10(1.0 + sub.values),
                shading="auto",
                cmap="viridis_r",
                alpha=_MESH_ALPHA,
            )
            ax.figure.colorbar(mesh, ax=ax, label="log10(1 + chi2)")
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
    ax.plot(result.longitude, result.latitude, "r+", ms=14, mew=2, zorder=6, label="estimate")
    if math.isfinite(result.semi_major_km) and math.isfinite(result.semi_minor_km):
        elat, elon = _ellipse_polygon(result)
        ax.plot(elon, elat, "r-", lw=1.2, label=f"{result.confidence:.0%} ellipse")
    if truth is not None:
        ax.plot(truth[1], truth[0], "wx", ms=10, mew=2, mec="m", zorder=6, label="truth")
        ax.plot(truth[1], truth[0], "mx", ms=10, mew=2, zorder=7)
    marks = [(result.longitude, result.latitude)]
    if truth is not None:
        marks.append((truth[1], truth[0]))
    maps.label_points(
        ax, rlon, rlat, [r.name for r in result.receivers], marker_size=50, avoid=marks
    )
    ax.set_xlabel("longitude (deg E)")
    ax.set_ylabel("latitude (deg N)")
    ax.set_title(result.summary().split(", chi2")[0], fontsize=9)
    maps.legend(ax)
    return ax
