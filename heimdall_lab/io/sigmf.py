"""SigMF in and out: a capture Dataset as SigMF recordings (one per receiver) and back."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from heimdall_lab.dataset import build_dataset
from heimdall_lab.errors import FileFormatError, ValidationError
from heimdall_lab.ids import check_capture_id, check_receiver_name, new_capture_id
from heimdall_lab.receivers import Receiver
from heimdall_lab.recording import NOMINAL_RATE, Recording
from heimdall_lab.values import iso_utc, jsonable, parse_iso_utc
from heimdall_lab.versions import __version__

#: Namespace of heimdall's own SigMF fields.
SIGMF_NAMESPACE = "heimdall"
_EXTENSION = {"name": SIGMF_NAMESPACE, "version": "1.0.0", "optional": True}

log = logging.getLogger(__name__)


# -- SigMF ----------------------------------------------------------------------------------


def _point(lat: float, lon: float) -> dict[str, Any] | None:
    if not (math.isfinite(lat) and math.isfinite(lon)):
        return None
    return {"type": "Point", "coordinates": [float(lon), float(lat)]}


def export_sigmf(ds: xr.Dataset, directory: str | Path) -> list[Path]:
    """Write a capture as SigMF: one recording per receiver and a collection.

    Each receiver becomes ``<capture_id>_<receiver>.sigmf-data`` (``cf32_le``, its
    ``n_samples`` samples) and ``.sigmf-meta`` with ``core:sample_rate`` (the exact, GNSS-fitted
    rate), ``core:geolocation`` (GeoJSON point), a capture segment with ``core:frequency`` and
    ``core:datetime`` (the time of sample 0, ns), another at each sequence gap, and one
    annotation per frame with its GNSS timestamp in the ``heimdall`` extension namespace
    (``heimdall:gps_tow_s``, ``heimdall:gps_tow_ns``, ``heimdall:last_gps_solution``,
    ``heimdall:seq``, ``heimdall:trusted``, ``heimdall:datetime``, ``heimdall:rssi_dbm``).
    ``<capture_id>.sigmf-collection`` ties them together with each recording's metadata hash.
    Every recording's metadata is checked with sigmf's validator before it is written (the
    collection schema bundled with sigmf still describes the old tuple form of ``core:streams``
    and rejects the objects sigmf itself writes, so the collection is not schema-checked).

    Parameters
    ----------
    ds : xarray.Dataset
        Capture Dataset (in memory or lazy).
    directory : str or pathlib.Path
        Folder to write into (created if missing); files of the same names are replaced.

    Returns
    -------
    list of pathlib.Path
        The collection file, then each receiver's meta and data files.

    Raises
    ------
    ValidationError
        If the capture id or a receiver name is unsafe as a file name.
    """
    import sigmf  # imported on use: it takes over a second to import
    from sigmf import SigMFCollection, SigMFFile

    capture_id = check_capture_id(str(ds.attrs.get("capture_id", "capture")))
    names = [check_receiver_name(str(n)) for n in ds["receiver"].values.tolist()]
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    frequency = float(ds.attrs.get("core:frequency", ds.attrs.get("center_frequency_hz", 0.0)))
    dataset_attrs = jsonable(dict(ds.attrs))
    written: list[Path] = []
    metas: list[str] = []
    width = ds.sizes["sample"]
    for i, name in enumerate(names):
        one = ds.isel(receiver=i)
        n = int(one["n_samples"]) if "n_samples" in one.coords else width
        base = f"{capture_id}_{name}"
        data_path = directory / f"{base}.sigmf-data"
        np.asarray(one["iq"].values[:n], dtype="<c8").tofile(data_path)
        lat = float(one["latitude"]) if "latitude" in one.coords else math.nan
        lon = float(one["longitude"]) if "longitude" in one.coords else math.nan
        rate = float(one["sample_rate"]) if "sample_rate" in one.coords else math.nan
        if not (math.isfinite(rate) and rate > 0):
            rate = float(ds.attrs.get("core:sample_rate", NOMINAL_RATE))
        start = one["start_time"].values if "start_time" in one.coords else np.datetime64("NaT")
        glob: dict[str, Any] = {
            sigmf.DATATYPE_KEY: "cf32_le",
            sigmf.SAMPLE_RATE_KEY: rate,
            sigmf.NUM_CHANNELS_KEY: 1,
            sigmf.DESCRIPTION_KEY: f"heimdall_lab capture {capture_id}, receiver {name}",
            sigmf.RECORDER_KEY: str(ds.attrs.get("core:recorder", f"heimdall_lab {__version__}")),
            sigmf.HW_KEY: str(ds.attrs.get("core:hw", "KiwiSDR")),
            sigmf.COLLECTION_KEY: capture_id,
            sigmf.EXTENSIONS_KEY: [dict(_EXTENSION)],
            "heimdall:capture_id": capture_id,
            "heimdall:receiver": name,
            "heimdall:n_samples": n,
            "heimdall:dataset_attrs": dataset_attrs,
        }
        point = _point(lat, lon)
        if point is not None:
            glob[sigmf.GEOLOCATION_KEY] = point
        for coord in ("nominal_rate", "calibration_db", "rssi_dbm", "lost_frames", "complete"):
            if coord in one.coords:
                value = jsonable(one[coord].values)
                if value is not None:
                    glob[f"heimdall:{coord}"] = value
        if not np.isnat(start):
            glob["heimdall:start_time"] = iso_utc(start)
        annotations, gaps = _frame_annotations(one, n)
        meta = SigMFFile(
            metadata={"global": glob, "captures": [], "annotations": annotations},
            data_file=data_path,
        )
        first: dict[str, Any] = {sigmf.FREQUENCY_KEY: frequency}
        if not np.isnat(start):
            first[sigmf.DATETIME_KEY] = iso_utc(start)
        if point is not None:
            first[sigmf.GEOLOCATION_KEY] = point
        meta.add_capture(0, metadata=first)
        for sample_start, when in gaps:
            seg: dict[str, Any] = {sigmf.FREQUENCY_KEY: frequency}
            if when is not None:
                seg[sigmf.DATETIME_KEY] = when
            meta.add_capture(sample_start, metadata=seg)
        meta.validate()
        meta.tofile(directory / base, overwrite=True)
        metas.append(f"{base}.sigmf-meta")
        written += [directory / f"{base}.sigmf-meta", data_path]
    collection = SigMFCollection(metafiles=metas, base_path=directory)
    collection.set_collection_field(
        sigmf.DESCRIPTION_KEY,
        f"heimdall_lab capture {capture_id}: {len(metas)} receivers at {frequency:.0f} Hz",
    )
    collection.set_collection_field(sigmf.EXTENSIONS_KEY, [dict(_EXTENSION)])
    collection.set_collection_field("heimdall:capture_id", capture_id)
    collection.tofile(directory / capture_id, overwrite=True)
    coll_path = directory / f"{capture_id}.sigmf-collection"
    log.info(
        "exported capture %s to SigMF in %s (%d recordings)", capture_id, directory, len(metas)
    )
    return [coll_path, *written]


def _frame_annotations(
    one: xr.Dataset, n: int
) -> tuple[list[dict[str, Any]], list[tuple[int, str | None]]]:
    """Per-frame annotations (GNSS timestamps) and the capture segments at sequence gaps."""
    import sigmf  # imported on use: it takes over a second to import

    if "frame_start" not in one:
        return [], []
    fstart = one["frame_start"].values.astype(np.int64)
    valid = np.flatnonzero(fstart >= 0)
    fstart = fstart[valid]

    def col(name: str) -> np.ndarray | None:
        return one[name].values[valid] if name in one else None

    seq, sec, nsec = col("frame_seq"), col("frame_gpssec"), col("frame_gpsnsec")
    sol, trusted, rssi, times = (
        col("frame_gps_solution"),
        col("frame_trusted"),
        col("frame_rssi_dbm"),
        col("frame_time"),
    )
    ends = np.append(fstart[1:], n)
    annotations: list[dict[str, Any]] = []
    gaps: list[tuple[int, str | None]] = []
    for k, s in enumerate(fstart.tolist()):
        a: dict[str, Any] = {
            sigmf.SAMPLE_START_KEY: int(s),
            sigmf.SAMPLE_COUNT_KEY: int(max(ends[k] - s, 0)),
        }
        if sec is not None and nsec is not None:
            a["heimdall:gps_tow_s"] = int(sec[k])
            a["heimdall:gps_tow_ns"] = int(nsec[k])
        if sol is not None:
            a["heimdall:last_gps_solution"] = int(sol[k])
        if seq is not None:
            a["heimdall:seq"] = int(seq[k])
        if trusted is not None:
            a["heimdall:trusted"] = bool(trusted[k])
        when = None
        if times is not None and not np.isnat(times[k]):
            when = iso_utc(times[k])
            a["heimdall:datetime"] = when
        if rssi is not None and math.isfinite(float(rssi[k])):
            a["heimdall:rssi_dbm"] = float(rssi[k])
        annotations.append(a)
        if k and seq is not None and (int(seq[k]) - int(seq[k - 1])) & 0xFFFFFFFF != 1:
            gaps.append((int(s), when))
    return annotations, gaps


def _sigmf_meta_paths(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    items = [paths] if isinstance(paths, str | Path) else list(paths)
    metas: list[Path] = []
    for item in map(Path, items):
        if item.is_dir():
            collections = sorted(item.glob("*.sigmf-collection"))
            if len(collections) == 1:
                metas += _collection_metas(collections[0])
            else:
                metas += sorted(item.glob("*.sigmf-meta"))
        elif item.name.endswith(".sigmf-collection"):
            metas += _collection_metas(item)
        elif item.name.endswith((".sigmf-meta", ".sigmf-data")):
            metas.append(item.with_name(item.name.rsplit(".", 1)[0] + ".sigmf-meta"))
        else:
            raise FileFormatError(f"{item}: not a SigMF collection, meta or data file")
    out: list[Path] = []
    for m in metas:
        if m not in out:
            out.append(m)
    if not out:
        raise FileFormatError(f"no SigMF recordings in {', '.join(map(str, items))}")
    return out


def _collection_metas(path: Path) -> list[Path]:
    import sigmf  # imported on use: it takes over a second to import
    from sigmf import SigMFCollection

    collection = sigmf.fromfile(path)
    if not isinstance(collection, SigMFCollection):
        raise FileFormatError(f"{path}: not a SigMF collection")
    return [path.parent / f"{name}.sigmf-meta" for name in collection.get_stream_names()]


def import_sigmf(paths: str | Path | Iterable[str | Path]) -> xr.Dataset:
    """Read SigMF recordings (for example an :func:`export_sigmf` collection) as a capture.

    Parameters
    ----------
    paths : path or iterable of paths
        A ``.sigmf-collection`` file, ``.sigmf-meta``/``.sigmf-data`` files, or a folder (its
        one collection, else all its recordings). Data checksums are verified.

    Returns
    -------
    xarray.Dataset
        The capture Dataset. Recordings written by :func:`export_sigmf` come back identical
        (samples, exact rates, times, positions, per-frame timestamps, attributes); others
        get what SigMF holds: samples, ``core:sample_rate``, ``core:frequency``,
        ``core:datetime`` and ``core:geolocation``.

    Raises
    ------
    FileFormatError
        If a file is not SigMF, not complex, or fails its checksum.
    ValidationError
        If the recordings are at different frequencies or a receiver name repeats.
    """
    import sigmf  # imported on use: it takes over a second to import
    from sigmf import SigMFFile

    entries: list[tuple[Receiver, Recording, bool]] = []
    extras: list[dict[str, Any]] = []
    frequencies: set[float] = set()
    dataset_attrs: dict[str, Any] | None = None
    capture_id: str | None = None
    for meta_path in _sigmf_meta_paths(paths):
        try:
            rec_file = sigmf.fromfile(meta_path)
        except (sigmf.error.SigMFError, OSError, ValueError) as exc:
            raise FileFormatError(f"{meta_path}: {exc}") from exc
        if not isinstance(rec_file, SigMFFile):
            raise FileFormatError(f"{meta_path}: not a SigMF recording")
        g = rec_file.get_global_info()
        captures = rec_file.get_captures()
        first = captures[0] if captures else {}
        if not str(g.get(sigmf.DATATYPE_KEY, "")).startswith("c"):
            raise FileFormatError(f"{meta_path}: {g.get(sigmf.DATATYPE_KEY)} is not complex IQ")
        samples = np.asarray(rec_file.read_samples(), dtype=np.complex64).reshape(-1)
        stem = meta_path.name[: -len(".sigmf-meta")]
        name = check_receiver_name(str(g.get("heimdall:receiver", stem)))
        rate = float(g[sigmf.SAMPLE_RATE_KEY])
        frames = [a for a in rec_file.get_annotations() if "heimdall:gps_tow_s" in a]
        recording = Recording(
            samples=samples,
            frame_start=np.array([a[sigmf.SAMPLE_START_KEY] for a in frames], np.int64),
            seq=np.array([a.get("heimdall:seq", k) for k, a in enumerate(frames)], np.int64),
            last_gps_solution=np.array(
                [a.get("heimdall:last_gps_solution", 255) for a in frames], np.uint8
            ),
            gpssec=np.array([a["heimdall:gps_tow_s"] for a in frames], np.int64),
            gpsnsec=np.array([a.get("heimdall:gps_tow_ns", 0) for a in frames], np.int64),
            rssi_dbm=np.array([a.get("heimdall:rssi_dbm", np.nan) for a in frames], np.float32),
            nominal_rate=float(g.get("heimdall:nominal_rate", rate)),
        )
        geo = g.get(sigmf.GEOLOCATION_KEY) or first.get(sigmf.GEOLOCATION_KEY)
        lon, lat = (float(geo["coordinates"][0]), float(geo["coordinates"][1])) if geo else (0, 0)
        entries.append(
            (
                Receiver(name, "sigmf.invalid", latitude=lat, longitude=lon),
                recording,
                bool(g.get("heimdall:complete", True)),
            )
        )
        start = g.get("heimdall:start_time") or first.get(sigmf.DATETIME_KEY)
        extras.append(
            {
                "latitude": lat if geo else math.nan,
                "longitude": lon if geo else math.nan,
                "sample_rate": rate,
                "start_time": parse_iso_utc(start) if start else np.datetime64("NaT", "ns"),
                "calibration_db": g.get("heimdall:calibration_db"),
                "rssi_dbm": g.get("heimdall:rssi_dbm"),
                "frame_time": [
                    parse_iso_utc(a["heimdall:datetime"])
                    if "heimdall:datetime" in a
                    else np.datetime64("NaT", "ns")
                    for a in frames
                ]
                if any("heimdall:datetime" in a for a in frames)
                else None,
            }
        )
        if sigmf.FREQUENCY_KEY in first:
            frequencies.add(float(first[sigmf.FREQUENCY_KEY]))
        if dataset_attrs is None and isinstance(g.get("heimdall:dataset_attrs"), dict):
            dataset_attrs = g["heimdall:dataset_attrs"]
        capture_id = capture_id or g.get("heimdall:capture_id") or g.get(sigmf.COLLECTION_KEY)
    if len(frequencies) > 1:
        raise ValidationError(
            f"SigMF recordings at different frequencies {sorted(frequencies)} Hz "
            "cannot form one capture"
        )
    names = [e[0].name for e in entries]
    if len(set(names)) != len(names):
        raise ValidationError(f"SigMF recordings repeat a receiver name: {names}")
    frequency = frequencies.pop() if frequencies else math.nan
    duration = max(
        len(e[1].samples) / ex["sample_rate"] for e, ex in zip(entries, extras, strict=True)
    )
    starts = [ex["start_time"] for ex in extras if not np.isnat(ex["start_time"])]
    ds = build_dataset(
        entries,
        frequency,
        duration,
        capture_id=check_capture_id(str(capture_id)) if capture_id else new_capture_id(),
        gps_reference=min(starts) if starts else None,
    )
    ds = _apply_extras(ds, extras)
    if dataset_attrs is not None:
        ds.attrs = dict(dataset_attrs)
    return ds


def _apply_extras(ds: xr.Dataset, extras: list[dict[str, Any]]) -> xr.Dataset:
    def column(key: str, dtype: Any, default: Any) -> np.ndarray:
        return np.array([default if ex[key] is None else ex[key] for ex in extras], dtype=dtype)

    ds = ds.assign_coords(
        latitude=("receiver", column("latitude", np.float64, math.nan)),
        longitude=("receiver", column("longitude", np.float64, math.nan)),
        sample_rate=("receiver", column("sample_rate", np.float64, math.nan)),
        start_time=("receiver", column("start_time", "M8[ns]", np.datetime64("NaT"))),
        calibration_db=("receiver", column("calibration_db", np.float64, math.nan)),
    )
    if all(ex["rssi_dbm"] is not None for ex in extras):
        ds = ds.assign_coords(rssi_dbm=("receiver", column("rssi_dbm", np.float64, math.nan)))
    if any(ex["frame_time"] is not None for ex in extras):
        values = ds["frame_time"].values.copy()
        for r, ex in enumerate(extras):
            if ex["frame_time"] is not None:
                values[r, : len(ex["frame_time"])] = np.array(ex["frame_time"], "M8[ns]")
        ds["frame_time"] = (("receiver", "frame"), values, ds["frame_time"].attrs)
    return ds
