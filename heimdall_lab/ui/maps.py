"""Drawing maps offline: a Natural Earth base map, labels that keep apart, a legend.

The base map is Natural Earth data (public domain) shipped in ``heimdall_lab/ui/data`` (see
the README there for where it came from and how it was made): the 1:110m countries of the
whole world, and for maps within Europe a more detailed layer (1:10m simplified to about
half a kilometre). It is drawn with plain matplotlib in an equirectangular projection whose
aspect is corrected for the map's middle latitude. Nothing is downloaded and no GIS package
is needed.

Longitudes run from -180 to 180; a map that crosses the antimeridian is not supported.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.legend import Legend
    from matplotlib.text import Annotation

#: The world layer, a file of ``heimdall_lab/ui/data``: 1:110m countries.
LAYER = "naturalearth_110m.npz"
#: The detailed layer used for regional maps that lie within its window (Europe).
DETAIL_LAYER = "naturalearth_10m_europe.npz"
#: The widest map (in degrees of longitude or latitude) drawn with the detailed layer: wider
#: maps look cleaner with the world layer (and draw faster).
DETAIL_MAX_SPAN_DEG = 30.0
#: The kinds of outline in :attr:`Layer.line_kind`.
COAST, BORDER = 0, 1

WATER = "#e8f1f8"
LAND = "#f5f2ea"
COAST_COLOUR = "#5f7386"
BORDER_COLOUR = "#9a9a9a"
#: z-orders: land under the grid (0.5 with ``axisbelow``) and under data (1); outlines
#: over filled data such as a likelihood map (1) but under lines and markers (2 and up).
_Z_LAND, _Z_OUTLINE = 0.1, 1.5


# ============================================================================================
# The layer


@dataclass(frozen=True, eq=False)
class Layer:
    """A base-map layer: country polygons and their outlines, as flat vertex arrays.

    Rings and polylines are stored one after another in the vertex arrays; ring ``i`` is
    ``land_lon[land_offsets[i]:land_offsets[i + 1]]`` (and the same for ``land_lat``), and
    likewise for the outlines.

    Attributes
    ----------
    land_lon, land_lat : numpy.ndarray of float32
        Vertices of the polygon rings (closed: the first vertex is repeated last).
    land_offsets : numpy.ndarray of int32
        Start of each ring, then the vertex count.
    land_country : numpy.ndarray of int16
        Per ring, its country: an index into ``country_name``.
    country_name, country_iso : numpy.ndarray of str
        Per country, its name and ISO 3166 alpha-3 code (``-99`` where it has none). Empty
        for a layer without countries (its ``land_country`` is -1).
    line_lon, line_lat : numpy.ndarray of float32
        Vertices of the outlines.
    line_offsets : numpy.ndarray of int32
        Start of each outline, then the vertex count.
    line_kind : numpy.ndarray of uint8
        Per outline: ``COAST`` (0) or ``BORDER`` (1).
    window : numpy.ndarray
        ``(lon_min, lon_max, lat_min, lat_max)``: the area the layer covers.
    source : str
        Where the data came from.
    """

    land_lon: np.ndarray
    land_lat: np.ndarray
    land_offsets: np.ndarray
    land_country: np.ndarray
    country_name: np.ndarray
    country_iso: np.ndarray
    line_lon: np.ndarray
    line_lat: np.ndarray
    line_offsets: np.ndarray
    line_kind: np.ndarray
    window: np.ndarray
    source: str

    @functools.cached_property
    def land_bounds(self) -> np.ndarray:
        """Per ring: (lon_min, lon_max, lat_min, lat_max)."""
        return _bounds(self.land_lon, self.land_lat, self.land_offsets)

    @functools.cached_property
    def line_bounds(self) -> np.ndarray:
        """Per outline: (lon_min, lon_max, lat_min, lat_max)."""
        return _bounds(self.line_lon, self.line_lat, self.line_offsets)

    @property
    def n_rings(self) -> int:
        """The number of polygon rings."""
        return len(self.land_offsets) - 1

    @property
    def n_countries(self) -> int:
        """The number of countries."""
        return len(self.country_name)


def _bounds(lon: np.ndarray, lat: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    start = offsets[:-1]
    return np.column_stack(
        [
            np.minimum.reduceat(lon, start),
            np.maximum.reduceat(lon, start),
            np.minimum.reduceat(lat, start),
            np.maximum.reduceat(lat, start),
        ]
    ).astype(float)


@functools.cache
def load_layer(name: str = LAYER) -> Layer:
    """Load a base-map layer shipped with the package (cached).

    Parameters
    ----------
    name : str, default ``LAYER``
        The file name in ``heimdall_lab/ui/data``.

    Returns
    -------
    Layer
        The layer.
    """
    path = resources.files("heimdall_lab.ui").joinpath("data", name)
    with path.open("rb") as f, np.load(f, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["source"] = str(arrays["source"])
    return Layer(**arrays)


def layer_for(extent: Sequence[float]) -> Layer:
    """The layer to draw a map with: the detailed one for a regional map it covers, else the world.

    Parameters
    ----------
    extent : (lon_min, lon_max, lat_min, lat_max)
        The map's area, degrees.

    Returns
    -------
    Layer
        :data:`DETAIL_LAYER` when its window holds the extent and the extent spans at most
        :data:`DETAIL_MAX_SPAN_DEG`, else :data:`LAYER`.
    """
    lo0, lo1, la0, la1 = (float(v) for v in extent)
    detail = load_layer(DETAIL_LAYER)
    w0, w1, w2, w3 = (float(v) for v in detail.window)
    regional = max(lo1 - lo0, la1 - la0) <= DETAIL_MAX_SPAN_DEG
    if regional and w0 <= lo0 and lo1 <= w1 and w2 <= la0 and la1 <= w3:
        return detail
    return load_layer(LAYER)


# ============================================================================================
# Clipping to the map's extent


def _clip_lines(
    lon: np.ndarray, lat: np.ndarray, offsets: np.ndarray, extent: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Clip polylines to a box (Liang-Barsky on every segment at once).

    Returns the pieces inside the box as one pair of arrays with NaN between pieces.
    """
    x0, x1, y0, y1 = extent
    if len(lon) < 2:
        return np.empty(0), np.empty(0)
    ax, ay = lon[:-1].astype(float), lat[:-1].astype(float)
    dx, dy = np.diff(lon.astype(float)), np.diff(lat.astype(float))
    # A segment joins vertex k to k + 1; drop those that join one polyline to the next.
    joins = np.ones(len(lon) - 1, dtype=bool)
    joins[offsets[1:-1] - 1] = False
    p = np.stack([-dx, dx, -dy, dy])
    q = np.stack([ax - x0, x1 - ax, ay - y0, y1 - ay])
    with np.errstate(divide="ignore", invalid="ignore"):
        r = q / p
    t0 = np.max(np.where(p < 0, r, 0.0), axis=0)
    t1 = np.min(np.where(p > 0, r, 1.0), axis=0)
    parallel_outside = ((p == 0) & (q < 0)).any(axis=0)
    keep = joins & ~parallel_outside & (t0 < t1)
    if not keep.any():
        return np.empty(0), np.empty(0)
    # A kept segment continues the previous piece when both are whole at their junction.
    cont = np.zeros_like(keep)
    cont[1:] = keep[:-1] & joins[:-1] & (t1[:-1] >= 1.0) & (t0[1:] <= 0.0)
    cont &= keep
    idx = np.flatnonzero(keep)
    start_x, start_y = ax[idx] + t0[idx] * dx[idx], ay[idx] + t0[idx] * dy[idx]
    end_x, end_y = ax[idx] + t1[idx] * dx[idx], ay[idx] + t1[idx] * dy[idx]
    new = ~cont[idx]
    # Per kept segment: [NaN, start] when it starts a piece, then its end.
    xs = np.stack([np.full(len(idx), np.nan), start_x, end_x], axis=1)
    ys = np.stack([np.full(len(idx), np.nan), start_y, end_y], axis=1)
    mask = np.stack([new, new, np.ones_like(new)], axis=1)
    return xs[mask][1:], ys[mask][1:]  # no NaN before the first piece


def _clip_ring(x: np.ndarray, y: np.ndarray, extent: tuple[float, ...]) -> np.ndarray:
    """Clip a closed polygon ring to a box (Sutherland-Hodgman); (n, 2) vertices, open."""
    pts = np.column_stack([x[:-1], y[:-1]]).astype(float)
    for axis, bound, keep_above in (
        (0, extent[0], 1),
        (0, extent[1], 0),
        (1, extent[2], 1),
        (1, extent[3], 0),
    ):
        if len(pts) == 0:
            break
        v = pts[:, axis]
        inside = v >= bound if keep_above else v <= bound
        nxt = np.roll(pts, -1, axis=0)
        inside_next = np.roll(inside, -1)
        crosses = inside != inside_next
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(crosses, (bound - v) / (nxt[:, axis] - v), 0.0)
        cut = pts + t[:, None] * (nxt - pts)
        cut[:, axis] = bound
        # Per edge: the crossing point (if it crosses), then the next vertex (if inside).
        out = np.stack([cut, nxt], axis=1)
        mask = np.stack([crosses, inside_next], axis=1)
        pts = out[mask]
    return pts


def map_extent(
    lat_range: Any, lon_range: Any, margin_deg: float = 1.0
) -> tuple[float, float, float, float]:
    """The area a map of some points shows: their bounding box plus a margin.

    Parameters
    ----------
    lat_range, lon_range : array-like of float
        Latitudes and longitudes to show, in degrees: a (min, max) pair or any set of
        points. Non-finite values are ignored.
    margin_deg : float, default 1.0
        Added on every side, in degrees.

    Returns
    -------
    (float, float, float, float)
        ``(lon_min, lon_max, lat_min, lat_max)``, within [-180, 180] x [-90, 90]; the whole
        world when no value is finite.
    """
    lat = np.asarray(lat_range, dtype=float).ravel()
    lon = np.asarray(lon_range, dtype=float).ravel()
    lat, lon = lat[np.isfinite(lat)], lon[np.isfinite(lon)]
    if len(lat) == 0 or len(lon) == 0:
        return (-180.0, 180.0, -90.0, 90.0)
    m = max(float(margin_deg), 0.0)
    la0, la1 = float(lat.min()) - m, float(lat.max()) + m
    lo0, lo1 = float(lon.min()) - m, float(lon.max()) + m
    if la1 - la0 < 0.1:  # one point and no margin: show something around it
        la0, la1 = la0 - 0.05, la1 + 0.05
    if lo1 - lo0 < 0.1:
        lo0, lo1 = lo0 - 0.05, lo1 + 0.05
    return (max(lo0, -180.0), min(lo1, 180.0), max(la0, -90.0), min(la1, 90.0))


# ============================================================================================
# Drawing


def base_map(
    ax: Axes,
    lat_range: Any,
    lon_range: Any,
    *,
    margin_deg: float = 1.0,
    layer: Layer | None = None,
    grid: bool = True,
    land_colour: Any = LAND,
    water_colour: Any = WATER,
    coast_colour: Any = COAST_COLOUR,
    border_colour: Any = BORDER_COLOUR,
) -> Axes:
    """Draw land, coastlines and borders under a map, and set its extent and aspect.

    Land is lightly filled, the sea is the axes' background, coastlines and land borders
    are thin lines; everything is clipped to the extent. The projection is equirectangular
    with the aspect ``1 / cos(middle latitude)``, so that distances look right near the
    middle of the map. Axis limits are fixed: what is drawn afterwards does not move them.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        Where to draw.
    lat_range, lon_range : array-like of float
        Latitudes and longitudes the map must show, in degrees: a (min, max) pair, or the
        points themselves.
    margin_deg : float, default 1.0
        Added around them, in degrees.
    layer : Layer, optional
        The data; by default the detailed layer for a regional map within Europe, the world
        layer otherwise (:func:`layer_for`).
    grid : bool, default True
        Draw a light graticule (at the tick positions).
    land_colour, water_colour, coast_colour, border_colour : matplotlib colour, optional
        The fill of land and sea, and the colour of coastlines and of land borders (for
        instance light outlines over a dark likelihood map).

    Returns
    -------
    matplotlib.axes.Axes
        The axes. The land is a ``PathPatch`` with gid ``"basemap-land"``, coastlines and
        borders are ``Line2D`` with gids ``"basemap-coast"`` and ``"basemap-border"``.
    """
    from matplotlib.lines import Line2D
    from matplotlib.patches import PathPatch
    from matplotlib.path import Path

    extent = map_extent(lat_range, lon_range, margin_deg)
    layer = layer or layer_for(extent)
    lo0, lo1, la0, la1 = extent

    b = layer.land_bounds
    hit = np.flatnonzero((b[:, 0] <= lo1) & (b[:, 1] >= lo0) & (b[:, 2] <= la1) & (b[:, 3] >= la0))
    rings = []
    for i in hit:
        s, e = layer.land_offsets[i], layer.land_offsets[i + 1]
        x, y = layer.land_lon[s:e], layer.land_lat[s:e]
        if b[i, 0] >= lo0 and b[i, 1] <= lo1 and b[i, 2] >= la0 and b[i, 3] <= la1:
            ring = np.column_stack([x[:-1], y[:-1]]).astype(float)  # wholly inside
        else:
            ring = _clip_ring(x, y, extent)
        if len(ring) >= 3:
            rings.append(ring)
    if rings:
        verts = np.vstack([np.vstack([r, r[:1]]) for r in rings])
        codes = np.concatenate(
            [[Path.MOVETO, *[Path.LINETO] * (len(r) - 1), Path.CLOSEPOLY] for r in rings]
        ).astype(Path.code_type)
        land = PathPatch(
            Path(verts, codes),
            facecolor=land_colour,
            edgecolor="none",
            zorder=_Z_LAND,
            gid="basemap-land",
            label="_basemap land",
        )
        ax.add_artist(land)  # not add_patch: its data-limit update is slow and not wanted

    lb = layer.line_bounds
    near = (lb[:, 0] <= lo1) & (lb[:, 1] >= lo0) & (lb[:, 2] <= la1) & (lb[:, 3] >= la0)
    for kind, colour, width, gid in (
        (COAST, coast_colour, 0.7, "basemap-coast"),
        (BORDER, border_colour, 0.6, "basemap-border"),
    ):
        sel = np.flatnonzero(near & (layer.line_kind == kind))
        if len(sel) == 0:
            continue
        pieces_x, pieces_y, offs = [], [], [0]
        for i in sel:
            s, e = layer.line_offsets[i], layer.line_offsets[i + 1]
            pieces_x.append(layer.line_lon[s:e])
            pieces_y.append(layer.line_lat[s:e])
            offs.append(offs[-1] + e - s)
        x, y = _clip_lines(
            np.concatenate(pieces_x), np.concatenate(pieces_y), np.asarray(offs), extent
        )
        if len(x):
            line = Line2D(
                x, y, color=colour, linewidth=width, zorder=_Z_OUTLINE, gid=gid, label=f"_{gid}"
            )
            ax.add_artist(line)

    ax.set_facecolor(water_colour)
    ax.set_xlim(lo0, lo1)
    ax.set_ylim(la0, la1)
    ax.set_aspect(1.0 / max(math.cos(math.radians(0.5 * (la0 + la1))), 0.05))
    ax.set_xlabel("longitude (deg)")
    ax.set_ylabel("latitude (deg)")
    if grid:
        ax.set_axisbelow(True)
        ax.grid(True, color="#b8c4cf", linewidth=0.5, alpha=0.6)
    return ax


# ============================================================================================
# Labels that keep apart


#: Directions tried for a label, in order of preference: the four diagonals (north-east
#: first), the four sides, then the directions in between.
_ANGLES = np.deg2rad(
    [45, 135, -45, -135, 0, 180, 90, -90, 22.5, 157.5, -22.5, -157.5, 67.5, 112.5, -67.5, -112.5]
)


def _candidates(
    px: float, py: float, w: float, h: float, gap: float, step: float, rings: int
) -> np.ndarray:
    """Boxes (x0, y0, x1, y1) for a w x h label around (px, py), nearest and preferred first."""
    d = gap + step * np.arange(rings)[:, None]  # distance of the box from the point
    c, s = np.cos(_ANGLES)[None, :], np.sin(_ANGLES)[None, :]
    cx = px + c * d + 0.5 * w * np.clip(c * math.sqrt(2.0), -1.0, 1.0)
    cy = py + s * d + 0.5 * h * np.clip(s * math.sqrt(2.0), -1.0, 1.0)
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)
    return boxes.reshape(-1, 4)


def _box_overlap(boxes: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Overlap area of each of ``boxes`` (n, 4) with all of ``others`` (m, 4), summed."""
    if len(others) == 0:
        return np.zeros(len(boxes))
    w = np.minimum(boxes[:, None, 2], others[None, :, 2]) - np.maximum(
        boxes[:, None, 0], others[None, :, 0]
    )
    h = np.minimum(boxes[:, None, 3], others[None, :, 3]) - np.maximum(
        boxes[:, None, 1], others[None, :, 1]
    )
    return (np.clip(w, 0, None) * np.clip(h, 0, None)).sum(axis=1)


def _disc_overlap(boxes: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """How deep each box reaches into the discs, squared and summed (0 when clear)."""
    if len(centres) == 0:
        return np.zeros(len(boxes))
    nx = np.clip(centres[None, :, 0], boxes[:, None, 0], boxes[:, None, 2])
    ny = np.clip(centres[None, :, 1], boxes[:, None, 1], boxes[:, None, 3])
    dist = np.hypot(nx - centres[None, :, 0], ny - centres[None, :, 1])
    return (np.clip(radii[None, :] - dist, 0, None) ** 2).sum(axis=1)


def place_labels(
    points: np.ndarray,
    sizes: np.ndarray,
    discs: np.ndarray,
    radii: np.ndarray,
    frame: tuple[float, float, float, float],
    *,
    gap: float,
    step: float,
    rings: int = 12,
    boxes: np.ndarray | None = None,
) -> np.ndarray:
    """Place label boxes near their points, clear of each other and of the markers.

    Greedy and deterministic: each label in turn takes the first candidate position (nearest
    ring first, then by preferred direction) that overlaps no marker, no label placed
    before it and stays in the frame; when there is none, the candidate that overlaps least.
    All in one coordinate system (display pixels when called by :func:`label_points`).

    Parameters
    ----------
    points : numpy.ndarray
        (n, 2) positions the labels belong to.
    sizes : numpy.ndarray
        (n, 2) width and height of each label.
    discs, radii : numpy.ndarray
        (m, 2) centres and (m,) radii of the markers to keep clear of.
    frame : (float, float, float, float)
        ``(x0, y0, x1, y1)`` the labels should stay in.
    gap : float
        Distance of the nearest candidates from their point.
    step : float
        Distance between rings of candidates.
    rings : int, default 12
        Number of rings of candidates.
    boxes : numpy.ndarray, optional
        (k, 4) other boxes ``(x0, y0, x1, y1)`` to keep clear of (a legend).

    Returns
    -------
    numpy.ndarray
        (n, 4) boxes ``(x0, y0, x1, y1)``.
    """
    fixed = np.empty((0, 4)) if boxes is None else np.asarray(boxes, dtype=float).reshape(-1, 4)
    placed = np.empty((0, 4))
    fx0, fy0, fx1, fy1 = frame
    for (px, py), (w, h) in zip(points, sizes, strict=True):
        cand = _candidates(float(px), float(py), float(w), float(h), gap, step, rings)
        inside_w = np.clip(np.minimum(cand[:, 2], fx1) - np.maximum(cand[:, 0], fx0), 0, None)
        inside_h = np.clip(np.minimum(cand[:, 3], fy1) - np.maximum(cand[:, 1], fy0), 0, None)
        cost = (
            _box_overlap(cand, placed)
            + _box_overlap(cand, fixed)
            + _disc_overlap(cand, discs, radii)
            + (w * h - inside_w * inside_h)
        )
        clear = np.flatnonzero(cost < 1e-6 * (1.0 + w * h))  # zero but for rounding
        best = int(clear[0]) if len(clear) else int(np.argmin(cost))
        placed = np.vstack([placed, cand[best]])
    return placed


def _layout_artist(
    anns: list[Annotation],
    xy: np.ndarray,
    avoid: np.ndarray,
    radius_pt: float,
    avoid_radius_pt: float,
    pad_pt: float,
) -> Any:
    """An invisible artist, drawn just before the labels, that places them for this draw."""
    from matplotlib.artist import Artist
    from matplotlib.lines import Line2D
    from matplotlib.transforms import IdentityTransform

    class LabelLayout(Artist):
        def __init__(self) -> None:
            super().__init__()
            self.leaders = Line2D(
                [], [], color="0.35", linewidth=0.6, transform=IdentityTransform()
            )

        def draw(self, renderer: Any) -> None:
            ax = self.axes
            if ax is None or not anns:
                return
            px_per_pt = renderer.points_to_pixels(1.0)
            points = ax.transData.transform(xy)
            frame = ax.bbox
            shown = (
                np.isfinite(points).all(axis=1)
                & (points[:, 0] >= frame.x0)
                & (points[:, 0] <= frame.x1)
                & (points[:, 1] >= frame.y0)
                & (points[:, 1] <= frame.y1)
            )
            others = ax.transData.transform(avoid) if len(avoid) else np.empty((0, 2))
            others = others[np.isfinite(others).all(axis=1)]
            discs = np.vstack([points[shown], others])
            radii = np.concatenate(
                [
                    np.full(shown.sum(), (radius_pt + pad_pt) * px_per_pt),
                    np.full(len(others), (avoid_radius_pt + pad_pt) * px_per_pt),
                ]
            )
            sizes, origin = [], []
            for ann in anns:
                ann.xyann = (0.0, 0.0)
                ext = ann.get_window_extent(renderer)  # no arrow: the text's box
                sizes.append((ext.width, ext.height))
                origin.append((ext.x0, ext.y0))
            sizes_a, origin_a = np.asarray(sizes), np.asarray(origin)
            idx = np.flatnonzero(shown)
            if len(idx) == 0:
                return
            height = float(np.median(sizes_a[idx, 1]))
            legend = ax.get_legend()
            fixed = []
            if legend is not None and legend.get_visible():
                fixed.append(legend.get_window_extent(renderer).extents)
            boxes = place_labels(
                points[idx],
                sizes_a[idx],
                discs,
                radii,
                (frame.x0, frame.y0, frame.x1, frame.y1),
                gap=(radius_pt + 2 * pad_pt) * px_per_pt,
                step=0.8 * height,
                boxes=np.asarray(fixed).reshape(-1, 4),
            )
            lx, ly = [], []
            far = (radius_pt + 2 * pad_pt) * px_per_pt + 0.5 * height
            for k, box in zip(idx, boxes, strict=True):
                shift = box[:2] - origin_a[k]  # from where the label was at offset zero
                anns[k].xyann = tuple(shift / px_per_pt)
                near = np.clip(points[k], box[:2], box[2:])  # nearest point of the box
                v = near - points[k]
                dist = float(np.hypot(*v))
                if dist > far:  # a leader from the marker's edge to the label
                    start = points[k] + v / dist * radius_pt * px_per_pt
                    lx += [start[0], near[0], np.nan]
                    ly += [start[1], near[1], np.nan]
            self.leaders.set_data(lx, ly)
            self.leaders.set_figure(ax.figure)
            self.leaders.set_clip_box(ax.bbox)
            self.leaders.draw(renderer)

    return LabelLayout()


def label_points(
    ax: Axes,
    lons: Any,
    lats: Any,
    names: Any,
    *,
    marker_size: float = 60.0,
    avoid: Sequence[tuple[float, float]] = (),
    avoid_size: float = 200.0,
    fontsize: float = 8.0,
    pad_pt: float = 1.5,
    **text_kw: Any,
) -> list[Annotation]:
    """Write a label beside each point, clear of the other labels and of the markers.

    The labels are placed each time the figure is drawn, in display coordinates, so they
    stay apart whatever the final size of the axes (colour bars, constrained layout, the
    aspect, the dpi of ``savefig``). Placement is deterministic (see :func:`place_labels`);
    a label pushed away from its point gets a thin leader line.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        Where to draw.
    lons, lats : array-like of float
        The points, in data coordinates (degrees).
    names : array-like
        One label per point (converted with ``str``).
    marker_size : float, default 60.0
        Area of the markers drawn at the points, in points squared (as ``scatter``'s
        ``s``): labels keep clear of a disc of that size round every point.
    avoid : sequence of (lon, lat), optional
        Other markers to keep clear of (a transmitter, an estimate).
    avoid_size : float, default 200.0
        Their area, in points squared.
    fontsize : float, default 8.0
        Label size.
    pad_pt : float, default 1.5
        Clearance round the markers, in points.
    **text_kw
        Passed to ``ax.annotate`` (colour, weight, ...).

    Returns
    -------
    list of matplotlib.text.Annotation
        The labels, in the order of the points.
    """
    from matplotlib import patheffects

    lon = np.asarray(lons, dtype=float).ravel()
    lat = np.asarray(lats, dtype=float).ravel()
    labels = [str(n) for n in np.asarray(names, dtype=object).ravel()]
    if not len(lon) == len(lat) == len(labels):
        raise ValueError(f"{len(lon)} longitudes, {len(lat)} latitudes, {len(labels)} names")
    text_kw.setdefault("path_effects", [patheffects.withStroke(linewidth=2.5, foreground="w")])
    text_kw.setdefault("zorder", 8)
    anns = [
        ax.annotate(
            name,
            (x, y),
            xytext=(0.0, 0.0),
            textcoords="offset points",
            ha="left",
            va="bottom",
            fontsize=fontsize,
            **text_kw,
        )
        for x, y, name in zip(lon, lat, labels, strict=True)
    ]
    avoid_xy = np.asarray(list(avoid), dtype=float).reshape(-1, 2)
    layout = _layout_artist(
        anns,
        np.column_stack([lon, lat]),
        avoid_xy,
        math.sqrt(max(marker_size, 0.0)) / 2,
        math.sqrt(max(avoid_size, 0.0)) / 2,
        pad_pt,
    )
    layout.set_zorder(min(a.get_zorder() for a in anns) - 0.01 if anns else 7.99)
    layout.set_label("_label layout")
    layout.set_in_layout(False)
    ax.add_artist(layout)
    return anns


#: Corners tried for a legend, in order of preference.
_CORNERS = ("upper right", "upper left", "lower left", "lower right")


def _map_content(ax: Axes) -> tuple[np.ndarray, list[np.ndarray]]:
    """What the map shows, in display coordinates: marked points, and the vertices of lines.

    The base map and colour meshes are left out.
    """
    from matplotlib.collections import Collection, QuadMesh
    from matplotlib.lines import Line2D
    from matplotlib.text import Annotation

    points, lines = [np.empty((0, 2))], []
    for artist in ax.get_children():
        gid = artist.get_gid() or ""
        if gid.startswith("basemap") or not artist.get_visible() or isinstance(artist, QuadMesh):
            continue
        if isinstance(artist, Line2D):
            xy = artist.get_transform().transform(artist.get_xydata())
            xy = xy[np.isfinite(xy).all(axis=1)]
            if len(xy) == 1 or artist.get_linestyle() in ("None", "", " "):
                points.append(xy)
            elif len(xy):
                lines.append(xy)
        elif isinstance(artist, Collection):
            if len(artist.get_offsets()):
                points.append(artist.get_offset_transform().transform(artist.get_offsets()))
            else:  # contours, line collections: their paths
                lines += [artist.get_transform().transform(p.vertices) for p in artist.get_paths()]
        elif isinstance(artist, Annotation):
            points.append(ax.transData.transform([artist.xy]))
    return np.vstack(points), lines


def legend(ax: Axes, **kwargs: Any) -> Legend | None:
    """A compact map legend, one entry per label, in the emptiest corner.

    Repeated labels are shown once. Unless ``loc`` is given, the legend goes to the corner
    (upper right, upper left, lower left, lower right: the first of the emptiest) that
    covers the fewest markers and labelled points, then the fewest lines (isochrones,
    ellipses); the base map and colour meshes do not count. The corner is chosen when the
    legend is made, so make it last. Labels from :func:`label_points` keep clear of it.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        The map.
    **kwargs
        Passed to ``ax.legend`` (defaults: ``fontsize=8``, ``framealpha=0.9``).

    Returns
    -------
    matplotlib.legend.Legend or None
        The legend; None when nothing is labelled.
    """
    handles, labels = ax.get_legend_handles_labels()
    seen: dict[str, Any] = {}
    for h, lab in zip(handles, labels, strict=True):
        seen.setdefault(lab, h)
    if not seen:
        return None
    kwargs.setdefault("fontsize", 8)
    kwargs.setdefault("framealpha", 0.9)
    choose = "loc" not in kwargs
    leg = ax.legend(list(seen.values()), list(seen.keys()), **kwargs)
    if choose:
        canvas = ax.figure.canvas
        if not hasattr(canvas, "get_renderer"):  # a Figure made without pyplot
            from matplotlib.backends.backend_agg import FigureCanvasAgg

            canvas = FigureCanvasAgg(ax.figure)
        renderer = canvas.get_renderer()
        ax.apply_aspect()
        points, lines = _map_content(ax)
        margin = renderer.points_to_pixels(1.5 * float(leg.get_texts()[0].get_fontsize()))
        badness = []
        for corner in _CORNERS:
            leg.set_loc(corner)
            x0, y0, x1, y1 = leg.get_window_extent(renderer).padded(margin).extents

            def inside(xy: np.ndarray, x0=x0, y0=y0, x1=x1, y1=y1) -> np.ndarray:
                return (xy[:, 0] >= x0) & (xy[:, 0] <= x1) & (xy[:, 1] >= y0) & (xy[:, 1] <= y1)

            # A covered marker or label is worse than a line passing under the legend.
            badness.append(3 * int(inside(points).sum()) + sum(inside(v).any() for v in lines))
        leg.set_loc(_CORNERS[int(np.argmin(badness))])
    return leg
