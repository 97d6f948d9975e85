"""The localization map and tables: likelihood region, isochrones, estimate, receivers, budget.

:func:`plot_localization` draws a :class:`~heimdall_lab.localize.Localization` on a map; the
stated uncertainty of a TDoA result is its likelihood region (``result.region``), drawn as
it is (a banana, two lobes), with the ellipse as a dashed summary, and a zoom around the
estimate when the region is too small to see on the map. :func:`budget_frame` is the error
budget as a table, :func:`pairs_frame` and :func:`receivers_frame` the pairs and receivers
of a localization that failed (``LocalizationError.pairs`` / ``.receivers``).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from heimdall_lab.errors import ValidationError
from heimdall_lab.localize.model import chi2, whitener
from heimdall_lab.localize.results import (
    _KM_PER_DEG,
    _LEGEND_PAIRS,
    Localization,
    PairDelay,
    ReceiverTiming,
)
from heimdall_lab.localize.solver import _bounds
from heimdall_lab.values import clip

log = logging.getLogger(__name__)

__all__ = [
    "budget_frame",
    "errors_included",
    "pairs_frame",
    "plot_localization",
    "receivers_frame",
]

#: Opacity of the chi-square map, so that land shows through it.
_MESH_ALPHA = 0.8
#: The region's colour, and the opacity of its fill.
_REGION_COLOUR = "red"
_REGION_ALPHA = 0.25
#: Colour of receivers the robust fit dropped.
_DROPPED_COLOUR = "darkorange"
#: A zoom is drawn when the region (or ellipse) spans less than this fraction of the map.
ZOOM_FRACTION = 1.0 / 8.0
#: Size of an inset zoom, as a fraction of the map axes.
_INSET_SIZE = 0.34
#: Grid points along the zoom's longer side (isochrones in the zoom).
_ZOOM_POINTS = 200
#: Characters kept of a reason in the legend.
_REASON_CHARS = 48

#: Short names of the error budget's parts (``error_budget["parts"]``), for a title: the
#: first pattern that matches a part gives its short form (``\1`` its number).
_PART_NAMES = (
    (r"^statistical", "statistical"),
    (r"^estimator disagreement", "estimators"),
    (r"^sub-band", "sub-bands"),
    (r"^triangle closure \(([\d.]+ us)", r"closure \1"),
    (r"^stated systematic ([\d.eE+-]+ us)", r"stated \1/pair"),
    (r"^receiver timing prior ([\d.eE+-]+ us)", r"receiver prior \1"),
    (r"^reference-emitter calibration", "calibration"),
    (r"^sky-wave layer height (\S+)", r"sky-wave layer \1"),
    (r"^scaled by the fit's reduced chi-square \(([\d.]+)\)", r"x reduced chi2 \1"),
)

_BUDGET_COLUMNS = [
    "pair",
    "used",
    "statistical_us",
    "estimators_us",
    "subbands_us",
    "systematic_us",
    "total_us",
    "receivers_us",
    "weighted_us",
]


# ============================================================================================
# Tables


def _check(result: Any) -> Localization:
    if not isinstance(result, Localization):
        raise ValidationError(f"expected a Localization, got {type(result).__name__}")
    return result


def budget_frame(result: Localization) -> pd.DataFrame:
    """The error budget of a TDoA localization as a table, one row per pair, microseconds.

    Parameters
    ----------
    result : Localization
        A TDoA result of :func:`heimdall_lab.localize.locate_dataset`.

    Returns
    -------
    pandas.DataFrame
        Columns ``pair``, ``used`` (in the final fit; False for the pairs of a receiver the
        robust fit dropped), then standard errors in us: ``statistical_us`` (spread of the
        chunk delays), ``estimators_us`` (envelope against complex), ``subbands_us`` (spread
        of the sub-band delays), ``systematic_us`` (what the data show, with the closure and
        a stated part), ``total_us`` (the pair's own error), ``receivers_us`` (the
        per-receiver errors entering the pair: the stated prior, a calibration's
        uncertainty, the sky wave's layer height) and ``weighted_us`` (what the fit weighed
        the pair with: all of it, for pairs sharing receivers, times the reduced chi-square
        when that exceeds 1). NaN where a part was not measured. ``attrs`` hold ``parts``
        (the sentences saying which errors are included), ``closure_sigma_us``,
        ``receiver_sigma_us`` and ``scale``. Empty (with these columns) for a result without
        a budget, such as an RSSI estimate.

    Raises
    ------
    ValidationError
        If ``result`` is not a Localization.
    """
    result = _check(result)
    budget = result.error_budget or {}
    rows = list(budget.get("pairs") or [])
    used = {f"{p.receiver_a}-{p.receiver_b}": k for k, p in enumerate(result.used_pairs)}
    cov = np.asarray(result.pair_covariance_s2, dtype=np.float64)
    have_cov = cov.ndim == 2 and cov.shape[0] == len(used) > 0
    inflate = float(result.settings.get("inflate", 1.0))
    scale = float(result.settings.get("scale", 1.0))

    def us(value: Any) -> float:
        try:
            v = float(value)
        except (TypeError, ValueError):
            return math.nan
        return v * 1e6

    table = []
    for row in rows:
        name = str(row.get("pair", ""))
        total = us(row.get("total_s"))
        receivers = weighted = math.nan
        if have_cov and name in used:
            var = float(cov[used[name], used[name]])
            receivers = math.sqrt(max(var * 1e12 - inflate * total**2, 0.0))
            weighted = math.sqrt(max(var * scale, 0.0)) * 1e6
        table.append(
            {
                "pair": name,
                "used": name in used,
                "statistical_us": us(row.get("statistical_s")),
                "estimators_us": us(row.get("estimators_s")),
                "subbands_us": us(row.get("subbands_s")),
                "systematic_us": us(row.get("systematic_s")),
                "total_us": total,
                "receivers_us": receivers,
                "weighted_us": weighted,
            }
        )
    frame = pd.DataFrame(table, columns=_BUDGET_COLUMNS)
    frame["used"] = frame["used"].astype(bool)
    frame.attrs = {
        "parts": list(budget.get("parts") or budget.get("includes") or []),
        "closure_sigma_us": us(budget.get("closure_sigma_s")),
        "receiver_sigma_us": us(budget.get("receiver_sigma_s")),
        "scale": scale,
    }
    return frame


def pairs_frame(pairs: Sequence[PairDelay]) -> pd.DataFrame:
    """Receiver pairs as a table: :meth:`Localization.pairs_frame` of any list of pairs.

    For the pairs of a localization that failed (``LocalizationError.pairs``), which has no
    :class:`Localization` to ask.

    Parameters
    ----------
    pairs : sequence of PairDelay
        The pairs.

    Returns
    -------
    pandas.DataFrame
        The columns of :meth:`Localization.pairs_frame` (``reason`` says why a pair was
        rejected).
    """
    return Localization(math.nan, math.nan, pairs=list(pairs or [])).pairs_frame()


def receivers_frame(receivers: Sequence[ReceiverTiming]) -> pd.DataFrame:
    """Receivers as a table: name, position, whether used, why not, and their timing.

    Parameters
    ----------
    receivers : sequence of ReceiverTiming
        ``Localization.receivers``, or ``LocalizationError.receivers``.

    Returns
    -------
    pandas.DataFrame
        Columns ``receiver``, ``latitude``, ``longitude``, ``used``, ``reason``,
        ``frames_used``, ``n_frames``, ``timestamp_rms_ns``.
    """
    columns = [
        "receiver",
        "latitude",
        "longitude",
        "used",
        "reason",
        "frames_used",
        "n_frames",
        "timestamp_rms_ns",
    ]
    return pd.DataFrame(
        [
            {
                "receiver": r.name,
                "latitude": r.latitude,
                "longitude": r.longitude,
                "used": bool(r.used),
                "reason": r.reason,
                "frames_used": r.frames_used,
                "n_frames": r.n_frames,
                "timestamp_rms_ns": r.timestamp_rms_ns,
            }
            for r in receivers or []
        ],
        columns=columns,
    )


def errors_included(result: Localization) -> str:
    """Which errors the uncertainty includes, abbreviated for a title (empty when unsaid).

    Parameters
    ----------
    result : Localization
        The result; its ``error_budget["parts"]`` are abbreviated.

    Returns
    -------
    str
        For example ``"statistical, estimators, closure 0.00 us, receiver prior 1 us"``.
    """
    budget = result.error_budget or {}
    parts = budget.get("parts") or budget.get("includes") or []
    return ", ".join(_abbreviate(str(p)) for p in parts)


def _abbreviate(part: str) -> str:
    for pattern, short in _PART_NAMES:
        m = re.match(pattern, part)
        if m:
            return m.expand(short)
    return clip(part.split(" (")[0].strip(), 30)


# ============================================================================================
# Geometry


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


def _has_ellipse(result: Localization) -> bool:
    return math.isfinite(result.semi_major_km) and math.isfinite(result.semi_minor_km)


def _region_axes(result: Localization) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The region's (latitudes, longitudes unwrapped, delta chi-square), or None."""
    region = result.region
    if region is None or region.size == 0 or "threshold" not in region.attrs:
        return None
    lat = np.asarray(region["latitude"].values, dtype=np.float64)
    lon = np.rad2deg(np.unwrap(np.deg2rad(np.asarray(region["longitude"].values, np.float64))))
    return lat, lon, np.asarray(region.values, dtype=np.float64)


def _threshold(result: Localization) -> float:
    return float(result.region.attrs["threshold"]) if result.region is not None else math.nan


def _region_is_open(result: Localization) -> bool:
    axes = _region_axes(result)
    if axes is None:
        return False
    v, thr = axes[2], _threshold(result)
    edge = np.concatenate([v[0], v[-1], v[:, 0], v[:, -1]])
    return bool(np.any(edge <= thr))


def _window(
    result: Localization, truth: tuple[float, float] | None
) -> tuple[tuple[float, float, float, float], bool]:
    """The zoom's (lat0, lat1, lon0, lon1) around the estimate, and whether it shows the truth.

    It holds the region (where its delta chi-square is within the threshold), the ellipse
    and the estimate, with a margin; the truth too when it is near.
    """
    lats, lons = [result.latitude], [result.longitude]
    axes = _region_axes(result)
    if axes is not None:
        lat, lon, v = axes
        inside = v <= _threshold(result)
        if inside.any():
            rows, cols = np.nonzero(inside)
            lats += [float(lat[rows.min()]), float(lat[rows.max()])]
            lons += [float(lon[cols.min()]), float(lon[cols.max()])]
    if _has_ellipse(result):
        elat, elon = _ellipse_polygon(result, 73)
        lats += [float(elat.min()), float(elat.max())]
        lons += [float(elon.min()), float(elon.max())]
    cos = max(math.cos(math.radians(result.latitude)), 1e-3)
    half_n = (max(lats) - min(lats)) / 2 * _KM_PER_DEG
    half_e = (max(lons) - min(lons)) / 2 * _KM_PER_DEG * cos
    size = max(half_n, half_e, 0.25)  # km
    show_truth = False
    if truth is not None:
        dn = (truth[0] - result.latitude) * _KM_PER_DEG
        de = ((truth[1] - result.longitude + 180) % 360 - 180) * _KM_PER_DEG * cos
        if math.hypot(dn, de) <= 4 * size:
            show_truth = True
            lats.append(float(truth[0]))
            lons.append(result.longitude + de / (_KM_PER_DEG * cos))
    la0, la1 = min(lats), max(lats)
    lo0, lo1 = min(lons), max(lons)
    # A margin of 15 % each side, at least 0.5 km across, and between 0.8 and 1.5 times as
    # wide as high, so that the zoom fills its panel.
    span_n, span_e = (la1 - la0) * _KM_PER_DEG, (lo1 - lo0) * _KM_PER_DEG * cos
    height, width = 1.3 * max(span_n, 0.5), 1.3 * max(span_e, 0.5)
    width = max(width, 0.8 * height)
    height = max(height, width / 1.5)
    pad_n = (height - span_n) / 2 / _KM_PER_DEG
    pad_e = (width - span_e) / 2 / (_KM_PER_DEG * cos)
    return (la0 - pad_n, la1 + pad_n, lo0 - pad_e, lo1 + pad_e), show_truth


def _span_km(la0: float, la1: float, lo0: float, lo1: float) -> float:
    cos = max(math.cos(math.radians(0.5 * (la0 + la1))), 1e-3)
    return max((la1 - la0) * _KM_PER_DEG, (lo1 - lo0) * _KM_PER_DEG * cos)


def _map_extent(
    result: Localization, extent: Sequence[float] | None, truth: tuple[float, float] | None
) -> tuple[float, float, float, float]:
    """The map's (lat0, lat1, lon0, lon1).

    As given, else the search grid (or the receivers plus a margin) widened to show the
    estimate, its region and the truth.
    """
    rlat = np.array([r.latitude for r in result.receivers])
    rlon = np.array([r.longitude for r in result.receivers])
    if extent is not None:
        try:
            la0, la1, lo0, lo1 = (float(e) for e in extent)
        except (TypeError, ValueError) as exc:
            raise ValidationError(
                f"extent must be (lat_min, lat_max, lon_min, lon_max), got {extent!r}"
            ) from exc
        return la0, la1, lo0, lo1
    if result.chi2_grid is not None:
        la0, la1 = (float(v) for v in result.chi2_grid["latitude"].values[[0, -1]])
        lo0, lo1 = (float(v) for v in result.chi2_grid["longitude"].values[[0, -1]])
    else:
        la0, la1, lo0, lo1 = _bounds(
            np.append(rlat, result.latitude), np.append(rlon, result.longitude), None, None
        )
    if not math.isfinite(result.latitude) or not math.isfinite(result.longitude):
        return la0, la1, lo0, lo1
    (wa0, wa1, wo0, wo1), _ = _window(result, None)
    lats, lons = [la0, la1, result.latitude], [lo0, lo1, result.longitude]
    if _span_km(wa0, wa1, wo0, wo1) < 0.5 * _span_km(la0, la1, lo0, lo1):
        lats += [wa0, wa1]
        lons += [wo0, wo1]
    if truth is not None:
        lats += [truth[0]]
        lons += [truth[1]]
    pad = 0.02 * max(la1 - la0, lo1 - lo0)
    return (
        max(min(lats) - (pad if min(lats) < la0 else 0.0), -90.0),
        min(max(lats) + (pad if max(lats) > la1 else 0.0), 90.0),
        max(min(lons) - (pad if min(lons) < lo0 else 0.0), -180.0),
        min(max(lons) + (pad if max(lons) > lo1 else 0.0), 180.0),
    )


def _wants_zoom(result: Localization, extent: tuple[float, float, float, float]) -> bool:
    if not math.isfinite(result.latitude) or not (
        _region_axes(result) is not None or _has_ellipse(result)
    ):
        return False
    if _region_is_open(result):
        return False
    window, _ = _window(result, None)
    return _span_km(*window) < ZOOM_FRACTION * _span_km(*extent)


# ============================================================================================
# Drawing


def _fitted_delays(pairs: list[PairDelay]) -> np.ndarray:
    """The delays the fit used (after a calibration): model plus residual, else as measured."""
    out = []
    for p in pairs:
        fitted = p.model_delay_s + p.residual_s
        out.append(fitted if math.isfinite(fitted) else p.delay_s)
    return np.array(out, dtype=np.float64)


def _delta_on(result: Localization, pairs: list[PairDelay], la_g: Any, lo_g: Any) -> Any:
    """``(chi2 - chi2 at the estimate) / scale`` on a grid, with the fit's covariance.

    None when the result does not carry the covariance of its pairs.
    """
    cov = np.asarray(result.pair_covariance_s2, dtype=np.float64)
    if cov.ndim != 2 or cov.shape[0] != len(pairs) or not pairs or not math.isfinite(result.chi2):
        return None
    try:
        w = whitener(cov)
    except np.linalg.LinAlgError:
        return None
    value = chi2(w, _fitted_delays(pairs), result._model(pairs)(la_g, lo_g))
    scale = float(result.settings.get("scale", 1.0))
    return np.maximum((value - result.chi2) / scale, 0.0)


def _draw_region(
    ax: Any,
    result: Localization,
    *,
    label: bool,
    grid: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> bool:
    """Fill the likelihood region and outline it; True when there was one to draw.

    ``grid`` (latitudes, longitudes, delta chi-square) replaces the result's own grid, for
    a zoom finer than it.
    """
    axes = _region_axes(result)
    if axes is None:
        return False
    lat, lon, v = grid if grid is not None else axes
    thr = _threshold(result)
    if not np.any(v <= thr):
        return False
    ax.contourf(
        lon, lat, v, levels=[-1.0, thr], colors=[_REGION_COLOUR], alpha=_REGION_ALPHA, zorder=4
    )
    ax.contour(lon, lat, v, levels=[thr], colors=[_REGION_COLOUR], linewidths=1.3, zorder=4)
    if label:
        from matplotlib.patches import Rectangle

        # An empty patch, for the legend only: the fill and the outline as drawn.
        ax.add_patch(
            Rectangle(
                (np.nan, np.nan),
                0.0,
                0.0,
                facecolor=(1.0, 0.0, 0.0, _REGION_ALPHA),
                edgecolor=_REGION_COLOUR,
                lw=1.3,
                label=f"{result.confidence:.0%} likelihood region",
            )
        )
    return True


def _draw_ellipse(ax: Any, result: Localization, *, summary: bool, label: bool) -> None:
    if not _has_ellipse(result):
        return
    elat, elon = _ellipse_polygon(result)
    text = f"{result.confidence:.0%} ellipse" + (" (summary)" if summary else "")
    ax.plot(
        elon,
        elat,
        color=_REGION_COLOUR,
        ls="--" if summary else "-",
        lw=1.0 if summary else 1.2,
        zorder=5,
        label=text if label else "_ellipse",
    )


def _short_reason(dropped: dict[str, Any]) -> str:
    try:
        before = float(dropped["chi2_before"]) / max(int(dropped["dof_before"]), 1)
        after = float(dropped["chi2_after"]) / max(int(dropped["dof_after"]), 1)
        return f"its pairs disagree (chi2/dof {before:.1f} -> {after:.2f})"
    except (KeyError, TypeError, ValueError):
        return clip(str(dropped.get("reason", "")), _REASON_CHARS)


def _draw_receivers(ax: Any, result: Localization) -> None:
    """Used receivers black; dropped ones by the robust fit orange, others hollow, with why."""
    rx = result.receivers
    rlat = np.array([r.latitude for r in rx])
    rlon = np.array([r.longitude for r in rx])
    used = np.array([r.used for r in rx], dtype=bool)
    dropped = {str(d.get("receiver")): d for d in result.dropped}
    is_dropped = np.array([r.name in dropped and not r.used for r in rx], dtype=bool)
    other = ~used & ~is_dropped
    if used.any():
        ax.scatter(rlon[used], rlat[used], marker="^", c="k", s=50, zorder=5, label="receivers")
    for k in np.flatnonzero(is_dropped):
        name = rx[k].name
        ax.scatter(
            [rlon[k]],
            [rlat[k]],
            marker="X",
            c=_DROPPED_COLOUR,
            edgecolors="k",
            linewidths=0.5,
            s=70,
            zorder=5,
            label=f"dropped {name}: {_short_reason(dropped[name])}",
        )
    if other.any():
        why = "; ".join(
            f"{rx[k].name}" + (f" ({clip(rx[k].reason, _REASON_CHARS)})" if rx[k].reason else "")
            for k in np.flatnonzero(other)
        )
        ax.scatter(
            rlon[other],
            rlat[other],
            marker="^",
            facecolors="none",
            edgecolors="grey",
            s=50,
            zorder=5,
            label=f"not used: {clip(why, 2 * _REASON_CHARS)}",
        )


def _draw_isochrones(
    ax: Any, result: Localization, pairs: list[PairDelay], glat: Any, glon: Any, *, label: bool
) -> None:
    import matplotlib.pyplot as plt

    if not pairs:
        return
    la_g, lo_g = np.meshgrid(glat, glon, indexing="ij")
    predicted = result._model(pairs)(la_g, lo_g)
    colours = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    for k, (pred, p, d) in enumerate(zip(predicted, pairs, _fitted_delays(pairs), strict=True)):
        colour = colours[k % len(colours)]
        ax.contour(glon, glat, pred - d, levels=[0.0], colors=[colour], linewidths=1.0)
        if label and len(pairs) <= _LEGEND_PAIRS:
            ax.plot([], [], color=colour, lw=1.0, label=f"{p.receiver_a}-{p.receiver_b}")
    if label and len(pairs) > _LEGEND_PAIRS:
        ax.plot([], [], color="grey", lw=1.0, label=f"isochrones of {len(pairs)} pairs")


def _mark_estimate_and_truth(
    ax: Any, result: Localization, truth: tuple[float, float] | None, *, label: bool
) -> None:
    ax.plot(
        result.longitude,
        result.latitude,
        "r+",
        ms=14,
        mew=2,
        zorder=6,
        label="estimate" if label else "_estimate",
    )
    for alt in result.alternatives:
        ax.plot(
            alt["longitude"],
            alt["latitude"],
            "o",
            mfc="none",
            mec=_REGION_COLOUR,
            ms=9,
            zorder=6,
            label="other solution" if label else "_other solution",
        )
    if truth is not None:
        ax.plot(
            truth[1],
            truth[0],
            "wx",
            ms=10,
            mew=2,
            mec="m",
            zorder=6,
            label="truth" if label else "_truth",
        )
        ax.plot(truth[1], truth[0], "mx", ms=10, mew=2, zorder=7)


def _title(result: Localization) -> str:
    head = result.summary().split(", chi2")[0]
    included = errors_included(result)
    if result.kind != "tdoa" or not included:
        return head
    what = "region" if _region_axes(result) is not None else "ellipse"
    return f"{head}\n{result.confidence:.0%} {what} includes: {included}"


def _scale_bar(ax: Any, width_km: float, latitude: float) -> None:
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    target = width_km / 4
    exponent = math.floor(math.log10(target))
    km = min((m * 10**exponent for m in (1, 2, 5, 10)), key=lambda v: abs(v - target))
    deg = km / (_KM_PER_DEG * max(math.cos(math.radians(latitude)), 1e-3))
    text = f"{km:g} km" if km >= 1 else f"{km * 1000:g} m"
    bar = AnchoredSizeBar(
        ax.transData, deg, text, "lower right", pad=0.4, frameon=True, size_vertical=0, sep=3
    )
    bar.patch.set_alpha(0.8)
    ax.add_artist(bar)


def _draw_zoom(
    zax: Any,
    result: Localization,
    truth: tuple[float, float] | None,
    pairs: list[PairDelay],
    *,
    hyperbolae: bool,
    inset: bool,
) -> None:
    from heimdall_lab.ui import maps

    (la0, la1, lo0, lo1), show_truth = _window(result, truth)
    maps.base_map(zax, (la0, la1), (lo0, lo1), margin_deg=0.0, grid=False)
    zax.set_xlim(lo0, lo1)  # base_map shows at least 0.1 degree; the zoom may be finer
    zax.set_ylim(la0, la1)
    zax.set_aspect(1.0 / max(math.cos(math.radians(0.5 * (la0 + la1))), 0.05))
    glat = np.linspace(la0, la1, _ZOOM_POINTS)
    glon = np.linspace(lo0, lo1, _ZOOM_POINTS)
    if hyperbolae and pairs:
        _draw_isochrones(zax, result, pairs, glat, glon, label=False)
    la_g, lo_g = np.meshgrid(glat, glon, indexing="ij")
    delta = _delta_on(result, pairs, la_g, lo_g) if pairs else None
    fine = (glat, glon, delta) if delta is not None else None
    region = _draw_region(zax, result, label=False, grid=fine)
    _draw_ellipse(zax, result, summary=region, label=False)
    _mark_estimate_and_truth(zax, result, truth if show_truth else None, label=False)
    width = _span_km(la0, la1, lo0, lo1)
    _scale_bar(zax, (lo1 - lo0) * _KM_PER_DEG * math.cos(math.radians(result.latitude)), la0)
    notes = [] if inset else [f"around the estimate ({width:.3g} km across)"]
    if truth is not None and not show_truth:
        notes.append(f"truth {result.error_km(*truth):.3g} km away")
    if inset:
        zax.set_xticks([])
        zax.set_yticks([])
        if notes:
            zax.text(
                0.03,
                0.97,
                "; ".join(notes),
                transform=zax.transAxes,
                ha="left",
                va="top",
                fontsize=7,
                color="m",
            )
    else:
        zax.set_title("; ".join(notes), fontsize=8)
        zax.tick_params(labelsize=7)
        zax.ticklabel_format(useOffset=False)  # degrees as they are, not "+5e1"
    zax.set_xlabel("")
    zax.set_ylabel("")
    zax.set_label("zoom")


def _inset_corner(ax: Any, result: Localization, truth: tuple[float, float] | None) -> list:
    """Bounds (axes fraction) of an inset zoom in a corner of the map.

    Of the corners clear of the legend, the one that covers the fewest receivers (and never
    the estimate or the truth, when it can).
    """
    s = _INSET_SIZE
    corners = [  # lower left, lower right, upper left, upper right
        [0.01, 0.01, s, s],
        [0.99 - s, 0.01, s, s],
        [0.01, 0.99 - s, s, s],
        [0.99 - s, 0.99 - s, s, s],
    ]
    ax.apply_aspect()
    legend = ax.get_legend()
    legend_box = legend.get_window_extent() if legend is not None else None
    to_axes = ax.transAxes.inverted()
    points = [(r.longitude, r.latitude, 1) for r in result.receivers]
    points.append((result.longitude, result.latitude, 100))
    if truth is not None:
        points.append((truth[1], truth[0], 100))
    scores = []
    for k, (x0, y0, w, h) in enumerate(corners):
        score = 0
        if legend_box is not None:
            box = ax.transAxes.transform([[x0, y0], [x0 + w, y0 + h]])
            if not (
                box[1, 0] < legend_box.x0
                or box[0, 0] > legend_box.x1
                or box[1, 1] < legend_box.y0
                or box[0, 1] > legend_box.y1
            ):
                score += 1000
        for lon, lat, weight in points:
            x, y = to_axes.transform(ax.transData.transform((lon, lat)))
            if x0 - 0.03 <= x <= x0 + w + 0.03 and y0 - 0.03 <= y <= y0 + h + 0.03:
                score += weight
        scores.append((score, k))
    return corners[min(scores)[1]]


def plot_localization(
    result: Localization,
    ax: Any = None,
    *,
    truth: tuple[float, float] | None = None,
    hyperbolae: bool = True,
    extent: Sequence[float] | None = None,
    resolution: int = 400,
    zoom: bool | None = None,
) -> Any:
    """Draw a localization: the likelihood region, chi-square map, isochrones, receivers.

    The stated uncertainty of a TDoA result is its likelihood region at ``confidence``
    (``result.region``, the contour at ``region.attrs["threshold"]``, filled lightly, in as
    many pieces as it has lobes); the ellipse is its dashed summary. Results without a region
    (RSSI, or made by hand) show their ellipse as the uncertainty. The title says which
    errors the region includes (``error_budget["parts"]``, abbreviated). The chi-square map
    under it is ``log10(1 + delta chi2)`` with the fit's covariance (the region's measure),
    recomputed at the map's resolution. Receivers the robust fit dropped are marked apart,
    with why in the legend, and so are the others that took no part.

    When the region (or ellipse) spans less than :data:`ZOOM_FRACTION` of the map, it is
    also drawn in a zoom around the estimate, with a km scale: a second panel when the
    figure is made here, an inset in a free corner of ``ax`` otherwise. The zoom axes has the
    label ``"zoom"`` (``Axes.get_label()``).

    Over a base map of land, coastlines and borders that works offline
    (:func:`heimdall_lab.ui.maps.base_map`); receiver labels keep clear of each other, of the
    markers and of the legend. Needs matplotlib (imported here, not by the module).

    Parameters
    ----------
    result : Localization
        What to draw.
    ax : matplotlib.axes.Axes, optional
        Where to draw; a new figure when omitted (with the zoom as a second panel).
    truth : (float, float), optional
        A known transmitter position to mark.
    hyperbolae : bool, default True
        Draw, for each used pair, the curve where the predicted delay equals the measured one
        (after a calibration, the calibrated delay).
    extent : (lat_min, lat_max, lon_min, lon_max), optional
        Map area; default the search grid (or the receivers plus a margin).
    resolution : int, default 400
        Grid points along the longer side for the chi-square map and the isochrones (the
        map is recomputed for the area shown; RSSI results show their stored grid).
    zoom : bool, optional
        Draw the zoom (True), never (False), or when the region is small on the map (None).

    Returns
    -------
    matplotlib.axes.Axes
        The map's axes.

    Raises
    ------
    ValidationError
        If ``result`` is not a Localization, or ``extent`` is not four numbers.
    ImportError
        If matplotlib is not installed.
    """
    import matplotlib.pyplot as plt  # optional dependency, imported here only

    from heimdall_lab.ui import maps

    result = _check(result)
    la0, la1, lo0, lo1 = _map_extent(result, extent, truth)
    want_zoom = _wants_zoom(result, (la0, la1, lo0, lo1)) if zoom is None else bool(zoom)
    want_zoom = want_zoom and math.isfinite(result.latitude)
    zax = None
    if ax is None:
        if want_zoom:
            _, (ax, zax) = plt.subplots(
                1,
                2,
                figsize=(13, 6.5),
                gridspec_kw={"width_ratios": [1.4, 1]},
                layout="constrained",
            )
        else:
            _, ax = plt.subplots(figsize=(8, 7))
    # Light outlines: they are drawn over the (mostly dark) chi-square map.
    maps.base_map(ax, (la0, la1), (lo0, lo1), margin_deg=0.0, coast_colour="w", border_colour="0.8")
    step = max(la1 - la0, lo1 - lo0) / max(int(resolution), 10)
    glat = np.arange(la0, la1 + step / 2, step)
    glon = np.arange(lo0, lo1 + step / 2, step)
    la_g, lo_g = np.meshgrid(glat, glon, indexing="ij")
    pairs = result.used_pairs if result.kind == "tdoa" else []
    delta = _delta_on(result, pairs, la_g, lo_g) if pairs else None
    if pairs and delta is None:  # no covariance: the independent errors only
        mismatch = result._model(pairs)(la_g, lo_g) - _fitted_delays(pairs).reshape(-1, 1, 1)
        chi = np.sum((mismatch / np.array([p.sigma_s for p in pairs]).reshape(-1, 1, 1)) ** 2, 0)
        mesh = ax.pcolormesh(
            glon, glat, np.log10(1.0 + chi), shading="auto", cmap="viridis_r", alpha=_MESH_ALPHA
        )
        ax.figure.colorbar(mesh, ax=ax, label="log10(1 + chi2)")
    elif delta is not None:
        mesh = ax.pcolormesh(
            glon, glat, np.log10(1.0 + delta), shading="auto", cmap="viridis_r", alpha=_MESH_ALPHA
        )
        ax.figure.colorbar(mesh, ax=ax, label="log10(1 + delta chi2)")
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
        _draw_isochrones(ax, result, pairs, glat, glon, label=True)
    region = _draw_region(ax, result, label=True)
    if region and delta is not None and _region_is_open(result):
        # The region runs off the grid it was drawn on: the map's grid shows the rest.
        ax.contourf(
            glon,
            glat,
            delta,
            levels=[-1.0, _threshold(result)],
            colors=[_REGION_COLOUR],
            alpha=_REGION_ALPHA,
            zorder=4,
        )
        ax.contour(
            glon, glat, delta, levels=[_threshold(result)], colors=[_REGION_COLOUR], zorder=4
        )
    _draw_ellipse(ax, result, summary=region, label=True)
    _draw_receivers(ax, result)
    _mark_estimate_and_truth(ax, result, truth, label=True)
    marks = [(result.longitude, result.latitude)]
    if truth is not None:
        marks.append((truth[1], truth[0]))
    rlon = [r.longitude for r in result.receivers]
    rlat = [r.latitude for r in result.receivers]
    maps.label_points(
        ax, rlon, rlat, [r.name for r in result.receivers], marker_size=50, avoid=marks
    )
    ax.set_xlabel("longitude (deg E)")
    ax.set_ylabel("latitude (deg N)")
    ax.set_title(_title(result), fontsize=9)
    maps.legend(ax)
    if want_zoom:
        inset = zax is None
        if inset:
            zax = ax.inset_axes(_inset_corner(ax, result, truth))
        _draw_zoom(zax, result, truth, pairs, hyperbolae=hyperbolae, inset=inset)
        indicator = ax.indicate_inset_zoom(zax, edgecolor="k", alpha=0.8)
        # matplotlib >= 3.10: an InsetIndicator; before: (rectangle, connectors)
        connectors = indicator[1] if isinstance(indicator, tuple) else indicator.connectors
        if not inset:  # beside the map: the box on the map says where; no lines across
            for line in connectors or ():
                line.set_visible(False)
    return ax
