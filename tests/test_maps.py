"""Offline maps: the shipped Natural Earth layer, the base map, labels that keep apart."""

from __future__ import annotations

import itertools
import math
import os
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest

from heimdall_lab import geo, tutorial
from heimdall_lab.localize.results import Localization, PairDelay, ReceiverTiming
from heimdall_lab.receivers import DEFAULT_RECEIVERS
from heimdall_lab.ui import maps, plots
from heimdall_lab.ui.localization_plot import plot_localization

REPO = Path(__file__).resolve().parents[1]
EUROPE = ((35.0, 71.0), (-12.0, 35.0))  # (lat range, lon range)
# Two receivers 40 km apart (Hasenberg03 and DK0TE), and a point 1 km from the first.
NEAR = [(47.378, 8.365, "Hasenberg03"), (47.665, 9.448, "DK0TE"), (47.387, 8.365, "KM1")]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _inside(lon: float, lat: float, ring_lon: np.ndarray, ring_lat: np.ndarray) -> bool:
    """Even-odd point in polygon."""
    x0, y0, x1, y1 = ring_lon[:-1], ring_lat[:-1], ring_lon[1:], ring_lat[1:]
    crosses = (y0 > lat) != (y1 > lat)
    with np.errstate(divide="ignore", invalid="ignore"):
        x = x0 + (lat - y0) * (x1 - x0) / (y1 - y0)
    return bool(np.sum(crosses & (x > lon)) % 2)


def _rings_holding(layer: maps.Layer, lat: float, lon: float) -> list[int]:
    found = []
    for i in range(layer.n_rings):
        s, e = layer.land_offsets[i], layer.land_offsets[i + 1]
        if _inside(lon, lat, layer.land_lon[s:e], layer.land_lat[s:e]):
            found.append(i)
    return found


def _country_of(layer: maps.Layer, lat: float, lon: float) -> list[str]:
    return [str(layer.country_name[layer.land_country[i]]) for i in _rings_holding(layer, lat, lon)]


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def _box_hits_disc(box, centre, radius) -> bool:
    nx = min(max(centre[0], box.x0), box.x1)
    ny = min(max(centre[1], box.y0), box.y1)
    return math.hypot(nx - centre[0], ny - centre[1]) < radius


def _lines(ax, gid):
    return [ln for ln in ax.lines if ln.get_gid() == gid]


def _assert_labels_apart(ax, texts, marker_size, extra=()):
    """No two labels overlap, no label covers a marker, every label is inside the axes."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in texts]
    for (i, a), (j, b) in itertools.combinations(enumerate(boxes), 2):
        assert not _overlap(a, b), (texts[i].get_text(), texts[j].get_text(), a, b)
    radius = math.sqrt(marker_size) / 2 * fig.dpi / 72
    centres = [ax.transData.transform(t.xy) for t in texts]
    centres += [ax.transData.transform(p) for p in extra]
    for t, box in zip(texts, boxes, strict=True):
        for c in centres:
            assert not _box_hits_disc(box, c, radius), (t.get_text(), box, c)
        assert ax.bbox.x0 <= box.x0 and box.x1 <= ax.bbox.x1
        assert ax.bbox.y0 <= box.y0 and box.y1 <= ax.bbox.y1
    legend = ax.get_legend()
    if legend is not None:
        frame = legend.get_window_extent(renderer)
        for t, box in zip(texts, boxes, strict=True):
            assert not _overlap(box, frame), (t.get_text(), "under the legend")


# ------------------------------------------------------------------------------ the layer


def test_layer_has_the_natural_earth_countries():
    layer = maps.load_layer(maps.LAYER)
    assert layer.n_countries == 177 and layer.n_rings == 288
    assert len(layer.land_country) == layer.n_rings
    assert layer.land_lon.dtype == np.float32 and layer.line_lon.dtype == np.float32
    assert "Natural Earth" in layer.source
    assert np.all(np.diff(layer.land_offsets) >= 4)  # closed rings of 3 vertices or more
    starts, ends = layer.land_offsets[:-1], layer.land_offsets[1:] - 1
    assert np.array_equal(layer.land_lon[starts], layer.land_lon[ends])
    assert np.array_equal(layer.land_lat[starts], layer.land_lat[ends])
    assert layer.land_lon.min() >= -180 and layer.land_lon.max() <= 180
    assert layer.land_lat.min() == -90 and 83 < layer.land_lat.max() < 84
    assert {"Germany", "France", "Switzerland", "Austria", "Netherlands", "United Kingdom"} <= set(
        layer.country_name
    )
    kinds = np.bincount(layer.line_kind, minlength=2)
    assert kinds[maps.COAST] > 200 and kinds[maps.BORDER] > 100
    assert tuple(layer.window) == (-180, 180, -90, 90)


def test_detailed_layer_covers_europe_only():
    layer = maps.load_layer(maps.DETAIL_LAYER)
    lo0, lo1, la0, la1 = layer.window
    assert (lo0, lo1, la0, la1) == (-25, 45, 27, 72)
    assert "Natural Earth 1:10m" in layer.source and layer.n_countries == 0
    assert (layer.land_country == -1).all()
    assert layer.n_rings > 500 and len(layer.land_lon) > 20_000  # finer than the world layer
    # Land is cut at the window; outlines end at most one (short) segment beyond it.
    assert layer.land_lon.min() >= lo0 and layer.land_lon.max() <= lo1
    assert layer.land_lat.min() >= la0 and layer.land_lat.max() <= la1
    assert layer.line_lon.min() > lo0 - 1 and layer.line_lat.max() < la1 + 1
    kinds = np.bincount(layer.line_kind, minlength=2)
    assert kinds[maps.COAST] > 300 and kinds[maps.BORDER] > 300
    on_land = [
        tutorial.DCF77_TRANSMITTER,
        *tutorial.DCF77_POSITIONS.values(),
        *[(r.latitude, r.longitude) for r in DEFAULT_RECEIVERS],
    ]
    for lat, lon in on_land:
        assert _rings_holding(layer, lat, lon), (lat, lon)
    for lat, lon in ((45.0, -5.0), (54.5, 3.0), (43.0, 5.0)):  # Biscay, North Sea, Gulf of Lion
        assert not _rings_holding(layer, lat, lon), (lat, lon)


def test_the_detailed_layer_is_for_regional_maps_in_europe():
    detail, world = maps.load_layer(maps.DETAIL_LAYER), maps.load_layer(maps.LAYER)
    assert maps.layer_for((-2, 14, 44, 56)) is detail  # the DCF77 case
    assert maps.layer_for((-13, 36, 34, 72)) is world  # all of Europe: too wide
    assert maps.layer_for((-80, -70, 35, 45)) is world  # not in Europe
    assert maps.layer_for((40, 50, 40, 50)) is world  # partly outside the window


def test_layer_puts_places_in_their_countries():
    layer = maps.load_layer(maps.LAYER)
    assert _country_of(layer, *tutorial.DCF77_TRANSMITTER) == ["Germany"]
    assert _country_of(layer, *tutorial.DCF77_POSITIONS["F1JEK"]) == ["France"]
    assert _country_of(layer, *tutorial.DCF77_POSITIONS["HB9RYZ"]) == ["Switzerland"]
    assert _country_of(layer, 48.32, 15.58) == ["Austria"]  # OE3AKB
    assert _country_of(layer, 52.89, -2.64) == ["United Kingdom"]
    assert _country_of(layer, 45.0, -30.0) == []  # the Atlantic


@pytest.mark.parametrize("name", [maps.LAYER, maps.DETAIL_LAYER])
def test_borders_lie_between_countries_and_coasts_by_the_sea(name):
    layer = maps.load_layer(name)
    kind = np.repeat(layer.line_kind, np.diff(layer.line_offsets))  # per vertex

    def kinds_near(lat: float, lon: float, d: float = 0.3) -> set[int]:
        near = (np.abs(layer.line_lat - lat) < d) & (np.abs(layer.line_lon - lon) < d)
        return set(kind[near].tolist())

    assert kinds_near(46.2, 6.0) == {maps.BORDER}  # France-Switzerland, by Geneva
    assert kinds_near(49.0, 8.1) == {maps.BORDER}  # France-Germany, on the Rhine
    assert kinds_near(48.4, -4.8, 0.5) == {maps.COAST}  # the tip of Brittany
    assert kinds_near(53.4, 7.0) == {maps.COAST, maps.BORDER}  # the Ems: border meets sea


# ------------------------------------------------------------------------------ clipping


def test_lines_are_cut_at_the_box_and_pieces_kept_whole():
    # One polyline in and out of the box [0, 10] x [0, 10], and one wholly outside.
    lon = np.array([-5, 5, 5, 15, 20, 30], dtype=np.float32)
    lat = np.array([5, 5, 8, 8, 50, 50], dtype=np.float32)
    x, y = maps._clip_lines(lon, lat, np.array([0, 4, 6]), (0.0, 10.0, 0.0, 10.0))
    assert np.allclose(x, [0, 5, 5, 10]) and np.allclose(y, [5, 5, 8, 8])

    lon = np.array([-5, 5, 15, 5, -5], dtype=np.float32)  # leaves the box, comes back
    lat = np.array([5, 5, 5, 6, 6], dtype=np.float32)
    x, y = maps._clip_lines(lon, lat, np.array([0, 5]), (0.0, 10.0, 0.0, 10.0))
    assert np.isnan(x).sum() == 1  # two pieces
    assert np.allclose(x[~np.isnan(x)], [0, 5, 10, 10, 5, 0])


def test_polygons_are_cut_to_the_box():
    square = np.array([[-5, -5], [15, -5], [15, 15], [-5, 15], [-5, -5]], dtype=float)
    ring = maps._clip_ring(square[:, 0], square[:, 1], (0.0, 10.0, 0.0, 10.0))
    x, y = ring[:, 0], ring[:, 1]
    area = 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))
    assert area == pytest.approx(100.0)
    assert len(maps._clip_ring(square[:, 0] + 100, square[:, 1], (0.0, 10.0, 0.0, 10.0))) == 0


def test_extent_has_a_margin_and_stays_on_the_globe():
    assert maps.map_extent([45, 50], [0, 10], 1.0) == (-1.0, 11.0, 44.0, 51.0)
    assert maps.map_extent([89.5], [179.5], 1.0) == (178.5, 180.0, 88.5, 90.0)
    lo0, lo1, la0, la1 = maps.map_extent([47.0], [8.0], 0.0)  # one point, no margin
    assert lo0 < 8 < lo1 and la0 < 47 < la1
    assert maps.map_extent([np.nan], [], 1.0) == (-180.0, 180.0, -90.0, 90.0)


# ------------------------------------------------------------------------------ base map


@pytest.mark.parametrize(
    ("extent", "layer", "cut_at"),
    [
        ((-12.0, 35.0, 35.0, 71.0), maps.LAYER, 35.0),  # Europe: Turkey's coasts cut at 35 E
        ((-2.0, 14.0, 44.0, 56.0), maps.DETAIL_LAYER, -2.0),  # DCF77: the Channel's, at 2 W
    ],
)
def test_base_map_draws_only_inside_its_extent(extent, layer, cut_at):
    lo0, lo1, la0, la1 = extent
    fig, ax = plt.subplots(figsize=(7, 6))
    maps.base_map(ax, (la0, la1), (lo0, lo1), margin_deg=0.0)
    assert ax.get_xlim() == (lo0, lo1) and ax.get_ylim() == (la0, la1)
    data = maps.load_layer(layer)
    assert (data.line_lon < lo0).any() and (data.line_lat > la1).any()  # cut, not all shown
    near = (
        (data.line_lon >= lo0)
        & (data.line_lon <= lo1)
        & (data.line_lat >= la0)
        & (data.line_lat <= la1)
    )
    drawn = 0
    for gid in ("basemap-coast", "basemap-border"):
        [line] = _lines(ax, gid)
        xy = line.get_xydata()
        xy = xy[np.isfinite(xy).all(axis=1)]
        assert len(xy) > 300, gid
        assert (xy[:, 0] >= lo0 - 1e-9).all() and (xy[:, 0] <= lo1 + 1e-9).all(), gid
        assert (xy[:, 1] >= la0 - 1e-9).all() and (xy[:, 1] <= la1 + 1e-9).all(), gid
        assert line.get_label().startswith("_")  # never in a legend
        drawn += len(xy)
    assert drawn >= near.sum()  # every vertex inside is drawn (cut points come on top)
    [coast] = _lines(ax, "basemap-coast")
    assert np.isclose(coast.get_xydata()[:, 0], cut_at).sum() >= 2
    [land] = [p for p in ax.patches if p.get_gid() == "basemap-land"]
    verts = land.get_path().vertices
    assert (verts[:, 0] >= lo0 - 1e-9).all() and (verts[:, 0] <= lo1 + 1e-9).all()
    assert (verts[:, 1] >= la0 - 1e-9).all() and (verts[:, 1] <= la1 + 1e-9).all()
    assert land.get_path().contains_point((10.0, 50.0))  # Germany is land
    assert not land.get_path().contains_point((3.0, 54.5))  # the North Sea is not
    assert ax.get_xlabel() == "longitude (deg)" and ax.get_ylabel() == "latitude (deg)"
    fig.canvas.draw()


def test_base_map_aspect_is_one_over_cos_latitude():
    for (lat_range, lon_range), margin in ((EUROPE, 0.0), (((44, 56), (-2, 14)), 1.0)):
        _, ax = plt.subplots()
        maps.base_map(ax, lat_range, lon_range, margin_deg=margin)
        mid = math.radians(sum(ax.get_ylim()) / 2)
        assert ax.get_aspect() == pytest.approx(1 / math.cos(mid))
    _, ax = plt.subplots()
    maps.base_map(ax, (48.0, 48.1), (8.0, 8.1), margin_deg=1.0)
    assert ax.get_aspect() == pytest.approx(1 / math.cos(math.radians(48.05)))


def test_the_package_draws_maps_without_gis_packages():
    code = (
        "import sys, matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt;"
        "from heimdall_lab.ui import maps, plots;"
        "ax = plots.plot_receivers_map([47, 48], [8, 9], ['A', 'B']); ax.figure.canvas.draw();"
        "bad = {'geopandas', 'shapely', 'cartopy', 'shapefile', 'pyogrio', 'adjustText'};"
        "print(sorted(bad & set(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


# ------------------------------------------------------------------------------ labels


@pytest.mark.parametrize("extent", [EUROPE, ((45.0, 50.0), (5.0, 12.0))])
def test_labels_of_near_points_do_not_overlap(extent):
    fig, ax = plt.subplots(figsize=(6, 6), layout="constrained")
    maps.base_map(ax, *extent)
    lat, lon, names = (np.array(v) for v in zip(*NEAR, strict=True))
    ax.scatter(lon, lat, s=60, zorder=3)
    texts = maps.label_points(ax, lon, lat, names, marker_size=60)
    assert [t.get_text() for t in texts] == list(names)
    fig.canvas.draw()
    _assert_labels_apart(ax, texts, 60)

    # Drawn again at another size (or dpi), they are placed again.
    fig.set_size_inches(4, 3)
    fig.canvas.draw()
    _assert_labels_apart(ax, texts, 60)
    fig.savefig(Path(os.devnull), format="png", dpi=150)
    _assert_labels_apart(ax, texts, 60)


def test_the_same_labels_without_placement_would_overlap():
    # The check above can fail: labels put at a fixed offset from such points do overlap.
    fig, ax = plt.subplots(figsize=(6, 6), layout="constrained")
    maps.base_map(ax, *EUROPE)
    renderer = fig.canvas.get_renderer()
    texts = [
        ax.annotate(n, (lo, la), xytext=(4, 4), textcoords="offset points") for la, lo, n in NEAR
    ]
    fig.canvas.draw()
    a, _b, c = (t.get_window_extent(renderer) for t in texts)
    assert _overlap(a, c)


def test_labels_keep_clear_of_other_markers_and_show_leaders_when_pushed_away():
    fig, ax = plt.subplots(figsize=(6, 6))
    maps.base_map(ax, *EUROPE)
    # Eight receivers within a few kilometres: not all labels fit next to their marker.
    lat = 47.378 + 0.01 * np.arange(8)
    lon = np.full(8, 8.365)
    names = [f"RX{i}" for i in range(8)]
    star = (8.9, 47.5)  # a transmitter beside them
    texts = maps.label_points(ax, lon, lat, names, marker_size=60, avoid=[star], avoid_size=200)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    centre = ax.transData.transform(star)
    radius = math.sqrt(200) / 2 * fig.dpi / 72
    for t in texts:
        assert not _box_hits_disc(t.get_window_extent(renderer), centre, radius)
    _assert_labels_apart(ax, texts, 60)
    [layout] = [a for a in ax.get_children() if a.get_label() == "_label layout"]
    assert np.isfinite(layout.leaders.get_xydata()).any()  # somebody was pushed away


def test_labels_are_placed_the_same_way_each_time():
    def offsets():
        fig, ax = plt.subplots(figsize=(6, 6))
        maps.base_map(ax, *EUROPE)
        lat, lon, names = zip(*NEAR, strict=True)
        texts = maps.label_points(ax, lon, lat, names)
        fig.canvas.draw()
        return [t.xyann for t in texts]

    assert offsets() == offsets()


def test_place_labels_prefers_the_upper_right_and_stays_in_the_frame():
    boxes = maps.place_labels(
        np.array([[50.0, 50.0], [99.0, 99.0]]),
        np.array([[20.0, 10.0], [20.0, 10.0]]),
        np.array([[50.0, 50.0], [99.0, 99.0]]),
        np.array([5.0, 5.0]),
        (0.0, 0.0, 100.0, 100.0),
        gap=6.0,
        step=8.0,
    )
    x0, y0, x1, y1 = boxes[0]
    assert x0 > 50 and y0 > 50 and x1 - x0 == pytest.approx(20)  # north-east
    x0, y0, x1, y1 = boxes[1]
    assert x1 <= 100 and y1 <= 100 and x1 < 99 and y1 < 99  # the corner: south-west


# ------------------------------------------------------------------------------ the maps


def test_receivers_map_of_the_defaults_has_a_base_map_and_clear_labels():
    lat = [r.latitude for r in DEFAULT_RECEIVERS]
    lon = [r.longitude for r in DEFAULT_RECEIVERS]
    names = [r.name for r in DEFAULT_RECEIVERS]
    status = {names[0]: "failed", names[1]: "incomplete"}
    ax = plots.plot_receivers_map(
        lat, lon, names, status=status, transmitter=tutorial.DCF77_TRANSMITTER
    )
    assert _lines(ax, "basemap-coast") and _lines(ax, "basemap-border")
    assert [p.get_gid() for p in ax.patches] == ["basemap-land"]
    assert [t.get_text() for t in ax.texts] == names
    lo0, lo1 = ax.get_xlim()
    la0, la1 = ax.get_ylim()
    assert lo0 < min(lon) and max(lon) < lo1 and la0 < min(lat) and max(lat) < la1
    assert ax.get_aspect() == pytest.approx(1 / math.cos(math.radians((la0 + la1) / 2)))
    labels = ax.get_legend_handles_labels()[1]
    assert {"receiver: ok", "receiver: failed", "receiver: incomplete", "transmitter"} <= set(
        labels
    )
    ax.figure.canvas.draw()
    tx = tutorial.DCF77_TRANSMITTER[::-1]
    _assert_labels_apart(ax, ax.texts, 60, extra=[tx])
    if os.environ.get("HEIMDALL_WRITE_EXAMPLES"):
        out = REPO / "reports" / "maps" / "receivers.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        ax.figure.savefig(out, dpi=120)


def _dcf77_localization() -> Localization:
    """A DCF77 result as the 2017 recordings give it, without running the correlations."""
    tx_lat, tx_lon = 50.0510, 8.9030
    rx = [ReceiverTiming(n, la, lo, used=True) for n, (la, lo) in tutorial.DCF77_POSITIONS.items()]
    pairs = []
    for a, b in itertools.combinations(rx, 2):
        da = geo.distance_m(tx_lat, tx_lon, a.latitude, a.longitude)
        db = geo.distance_m(tx_lat, tx_lon, b.latitude, b.longitude)
        pairs.append(PairDelay(a.name, b.name, float(da - db) / geo.SPEED_OF_LIGHT, 2e-6))
    return Localization(
        tx_lat,
        tx_lon,
        method="complex",
        semi_major_km=2.73,
        semi_minor_km=0.68,
        orientation_deg=87.0,
        receivers=rx,
        pairs=pairs,
    )


@pytest.mark.parametrize("extent", [(44, 56, -2, 14), None])
def test_localization_map_has_a_base_map_and_clear_labels(extent):
    result = _dcf77_localization()
    ax = plot_localization(result, truth=tutorial.DCF77_TRANSMITTER, extent=extent, resolution=80)
    assert _lines(ax, "basemap-coast") and _lines(ax, "basemap-border")
    assert [t.get_text() for t in ax.texts] == ["DF0KL", "F1JEK", "HB9RYZ"]
    labels = ax.get_legend_handles_labels()[1]
    assert "estimate" in labels and "truth" in labels and "DF0KL-F1JEK" in labels
    assert not any("basemap" in lab for lab in labels)
    if extent is not None:
        assert ax.get_xlim() == (-2, 14) and ax.get_ylim() == (44, 56)
    la0, la1 = ax.get_ylim()
    assert ax.get_aspect() == pytest.approx(1 / math.cos(math.radians((la0 + la1) / 2)))
    ax.figure.canvas.draw()
    marks = [(result.longitude, result.latitude), tutorial.DCF77_TRANSMITTER[::-1]]
    _assert_labels_apart(ax, ax.texts, 50, extra=marks)
    # The legend covers no receiver.
    frame = ax.get_legend().get_window_extent(ax.figure.canvas.get_renderer())
    for r in result.receivers:
        x, y = ax.transData.transform((r.longitude, r.latitude))
        assert not (frame.x0 <= x <= frame.x1 and frame.y0 <= y <= frame.y1), r.name
