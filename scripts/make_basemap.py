"""Write the offline base-map layer ``heimdall_lab/ui/data/naturalearth_110m.npz``.

The source is the Natural Earth 1:110m admin-0 countries layer (public domain) as shipped in
the ``geopandas`` 0.14.4 wheel (``geopandas/datasets/naturalearth_lowres``), read straight
from the wheel with ``pyshp``. Neither is a dependency of heimdall_lab: run this once, in a
scratch environment, and commit the ``.npz`` it writes::

    python3 -m venv /tmp/basemap-venv
    /tmp/basemap-venv/bin/pip install pyshp==3.1.6 numpy
    pip download --no-deps geopandas==0.14.4 -d /tmp/basemap
    /tmp/basemap-venv/bin/python scripts/make_basemap.py \
        /tmp/basemap/geopandas-0.14.4-py3-none-any.whl heimdall_lab/ui/data/naturalearth_110m.npz

The file holds, as plain arrays (loadable with ``allow_pickle=False``):

``land_lon``, ``land_lat`` (float32)
    The vertices of every country's polygon rings, closed (first vertex repeated last),
    one ring after another; outer rings clockwise, holes counter-clockwise, as in the
    shapefile.
``land_offsets`` (int32, rings + 1)
    Where each ring starts in the vertex arrays; the last entry is the vertex count.
``land_country`` (int16, rings)
    The country of each ring: an index into ``country_name`` and ``country_iso``.
``country_name``, ``country_iso`` (str)
    One entry per country.
``line_lon``, ``line_lat``, ``line_offsets`` (float32, float32, int32)
    The outlines as polylines, laid out like the rings.
``line_kind`` (uint8, polylines)
    0 for a coastline (an edge that belongs to one country only), 1 for a land border (an
    edge two countries share; drawn once). The artificial edges along the antimeridian and
    along Antarctica's southern edge are left out.
``source`` (str)
    Where the data came from.

This script is not part of the package and the package never imports it.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import itertools
import sys
import zipfile
from pathlib import Path

import numpy as np

_MEMBER = "geopandas/datasets/naturalearth_lowres/naturalearth_lowres"
COAST, BORDER = 0, 1


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


def main(argv: list[str] | None = None) -> int:
    """Read the wheel, write the layer, print a summary.

    Parameters
    ----------
    argv : list of str, optional
        The command line (wheel path, output path); ``sys.argv[1:]`` by default.

    Returns
    -------
    int
        The exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("wheel", type=Path, help="geopandas-0.14.4-py3-none-any.whl")
    parser.add_argument("out", type=Path, help="the .npz to write")
    args = parser.parse_args(argv)

    digest = hashlib.sha256(args.wheel.read_bytes()).hexdigest()
    countries = read_countries(args.wheel)
    rings = [ring for _, _, rs in countries for ring in rs]
    ring_country = [i for i, (_, _, rs) in enumerate(countries) for _ in rs]
    land_lon, land_lat, land_offsets = _pack(rings)
    lines = outlines(countries)
    line_lon, line_lat, line_offsets = _pack([v for _, v in lines])
    source = (
        "Natural Earth 1:110m Cultural Vectors, Admin 0 - Countries (public domain), "
        f"from {_MEMBER}.shp in {args.wheel.name} (sha256 {digest})"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out,
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
        source=np.asarray(source),
    )
    kinds = np.asarray([k for k, _ in lines])
    print(
        f"{args.out}: {len(countries)} countries, {len(rings)} rings, {len(land_lon)} vertices; "
        f"{(kinds == COAST).sum()} coastlines and {(kinds == BORDER).sum()} borders, "
        f"{len(line_lon)} vertices; {args.out.stat().st_size} bytes"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
