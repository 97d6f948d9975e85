"""Work kept on local disk while the IQ store or the database is down, and its later replay.

When the IQ store cannot be written after its retries, :func:`heimdall_lab.pipeline.capture`
keeps the capture's IQ in a local zarr store under ``<home>/spool/<capture_id>/`` and records
where it was meant to go; when the database cannot be reached, it keeps the capture row and
its measurement rows there as JSON. :func:`sync` (``heimdall-lab sync``) uploads and replays
everything pending, idempotently: re-running it after a partial failure neither loses nor
duplicates anything (measurement rows are keyed by capture, receiver and time).

The spool never holds a secret: the IQ store it records is the masked URL, and :func:`sync`
uploads with the credentials of the environment (``HEIMDALL_IQ_URL`` when it names the same
store, else S3's own variables, ``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from sqlalchemy.engine import Engine

from heimdall_lab import db
from heimdall_lab.errors import DatabaseError, HeimdallError, StorageError
from heimdall_lab.home import confined_path, home_path
from heimdall_lab.ids import check_capture_id
from heimdall_lab.receivers import Receiver
from heimdall_lab.store import IQStore, default_iq_url
from heimdall_lab.store.iq import store_url_of
from heimdall_lab.store.stream import (
    CaptureWriter,
    finish_stream,
    read_manifest,
    stored_interval_rows,
)
from heimdall_lab.urls import MASK, mask_url
from heimdall_lab.values import jsonable

log = logging.getLogger(__name__)

_CAPTURE = "capture.json"
_MEASUREMENTS = "measurements.jsonl"
_IQ = "iq.json"


def spool_root(home: str | Path | None = None) -> Path:
    """The spool folder: ``<home>/spool`` (see :func:`heimdall_lab.home.data_home`).

    Parameters
    ----------
    home : str or pathlib.Path, optional
        Local state directory.

    Returns
    -------
    pathlib.Path
        The folder (not necessarily existing yet).
    """
    return home_path("spool", home)


def _dir(capture_id: str, home: str | Path | None) -> Path:
    path = confined_path(spool_root(home), check_capture_id(capture_id), what="capture id")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot keep work locally in {path}: {exc}", str(path)) from exc
    return path


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_text(json.dumps(jsonable(value), indent=1, allow_nan=False))
        tmp.replace(path)  # atomic: a reader sees the old file or the new one, never half
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc}", str(path)) from exc


def keep_iq(
    ds: xr.Dataset, capture_id: str, target_url: str, home: str | Path | None = None
) -> str:
    """Store a capture's IQ locally, to be uploaded to ``target_url`` by :func:`sync`.

    Parameters
    ----------
    ds : xarray.Dataset
        The capture Dataset.
    capture_id : str
        The capture.
    target_url : str
        The IQ store it was meant for; kept masked (see :func:`heimdall_lab.urls.mask_url`).
    home : str or pathlib.Path, optional
        Local state directory.

    Returns
    -------
    str
        URL of the local copy.

    Raises
    ------
    StorageError
        If even the local disk cannot take it.
    """
    folder = _dir(capture_id, home)
    result = IQStore(str(folder / "iq")).write(ds, capture_id=capture_id)
    target = mask_url(target_url)
    _write_json(folder / _IQ, {"target": target, "local": result.url})
    log.warning("capture %s: IQ kept locally at %s, pending upload", capture_id, result.url)
    if MASK in target:
        log.warning(
            "capture %s: the IQ store URL %s held credentials, which the spool does not keep: "
            "sync uploads with the environment's (HEIMDALL_IQ_URL when it names this store, "
            "else AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)",
            capture_id,
            target,
        )
    return result.url


def stream_locally(
    writer: CaptureWriter, home: str | Path | None, target_url: str
) -> CaptureWriter:
    """Go on writing a streamed capture into the spool, for :func:`sync` to upload.

    Parameters
    ----------
    writer : CaptureWriter
        The writer whose store failed (its layout and receivers are kept).
    home : str or pathlib.Path, optional
        Local state directory.
    target_url : str
        The IQ store it was meant for (kept masked).

    Returns
    -------
    CaptureWriter
        A writer on ``<spool>/<capture_id>/iq``, created. Chunks written to the store
        before stay there; sync moves the rest next to them and completes the capture.

    Raises
    ------
    StorageError
        If even the local disk cannot take it.
    """
    folder = _dir(writer.capture_id, home)
    local = CaptureWriter(
        IQStore(str(folder / "iq")),
        writer.capture_id,
        writer.receivers,
        writer.layout,
        writer.attrs,
        reference=writer.reference,
    )
    local.create()
    split = writer.chunks_written > 0
    _write_json(
        folder / _IQ,
        {"target": mask_url(target_url), "local": local.url, "layout": "stream", "split": split},
    )
    log.warning(
        "capture %s: IQ now kept locally at %s, pending upload", writer.capture_id, local.url
    )
    return local


def keep_stream_end(
    capture_id: str,
    complete: dict[str, bool],
    reference: str | None,
    home: str | Path | None = None,
) -> None:
    """Record how a streamed capture split between the store and the spool ended.

    :func:`sync` completes it in the store with these flags once the rest is uploaded.

    Parameters
    ----------
    capture_id : str
        The capture.
    complete : dict of str to bool
        Per receiver: whether it delivered the whole duration.
    reference : str or None
        The GPS week reference of its frame times (ISO time).
    home : str or pathlib.Path, optional
        Local state directory.
    """
    path = _dir(capture_id, home) / _IQ
    kept = json.loads(path.read_text())
    kept.update(complete=complete, reference=reference)
    _write_json(path, kept)


def keep_capture(
    capture_id: str,
    create: dict[str, Any],
    update: dict[str, Any],
    receivers: list[Receiver],
    home: str | Path | None = None,
    database: str = "embedded",
) -> Path:
    """Keep a capture's database row (to create, then to update) for :func:`sync`.

    Parameters
    ----------
    capture_id : str
        The capture.
    create : dict
        Keyword arguments of :func:`heimdall_lab.db.create_capture`.
    update : dict
        Keyword arguments of :func:`heimdall_lab.db.update_capture` (final state).
    receivers : list of Receiver
        The capture's receivers, added to the database if it lacks them.
    home : str or pathlib.Path, optional
        Local state directory.
    database : str, optional
        The database the rows belong in (:func:`heimdall_lab.db.database_identity`, no
        credentials); :func:`sync` writes them there only.

    Returns
    -------
    pathlib.Path
        The file written.
    """
    path = _dir(capture_id, home) / _CAPTURE
    people = [{k: v for k, v in asdict(r).items() if k != "password"} for r in receivers]
    record = {"create": create, "update": update, "receivers": people, "database": database}
    _write_json(path, record)
    return path


def keep_measurements(capture_id: str, rows: pd.DataFrame, home: str | Path | None = None) -> Path:
    """Keep measurement rows for :func:`sync`, added to any kept before for the capture.

    Parameters
    ----------
    capture_id : str
        The capture.
    rows : pandas.DataFrame
        Rows as :func:`heimdall_lab.db.write_measurements` takes them.
    home : str or pathlib.Path, optional
        Local state directory.

    Returns
    -------
    pathlib.Path
        The file written.
    """
    path = _dir(capture_id, home) / _MEASUREMENTS
    added = path.exists()
    records = jsonable(rows.to_dict(orient="records"))
    text = "".join(json.dumps(r, allow_nan=False) + "\n" for r in records)
    try:
        # Appended, one row a line: a streamed capture spools interval by interval, and
        # each interval costs the same however many came before.
        with path.open("a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise StorageError(f"cannot keep work locally in {path.parent}: {exc}", str(path)) from exc
    log.log(
        logging.INFO if added else logging.WARNING,
        "capture %s: %d measurement rows spooled locally",
        capture_id,
        len(records),
    )
    return path


def _read_measurements(path: Path) -> pd.DataFrame:
    """The rows kept, the last of any written twice; a line cut short by a crash is left."""
    records = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            records.append(json.loads(line))
        except ValueError:
            log.warning("%s: line %d is not a whole row (cut short?); left out", path, n)
    rows = pd.DataFrame(records)
    if {"receiver", "timestamp_utc"} <= set(rows.columns):
        rows = rows.drop_duplicates(["receiver", "timestamp_utc"], keep="last")
    if "timestamp_utc" in rows:
        rows["timestamp_utc"] = pd.to_datetime(rows["timestamp_utc"], utc=True, format="ISO8601")
    if "psd" in rows:
        rows["psd"] = [None if p is None else np.asarray(p, np.float32) for p in rows["psd"]]
    return rows


def pending(home: str | Path | None = None) -> list[str]:
    """Captures with work waiting in the spool.

    Parameters
    ----------
    home : str or pathlib.Path, optional
        Local state directory.

    Returns
    -------
    list of str
        Capture ids, oldest first.
    """
    root = spool_root(home)
    if not root.is_dir():
        return []
    folders = [p for p in root.iterdir() if p.is_dir() and any(p.glob("*.json"))]
    return [p.name for p in sorted(folders, key=lambda p: p.stat().st_mtime)]


def _target_store(target: str) -> str:
    """The store URL to upload to, with credentials from the environment.

    ``HEIMDALL_IQ_URL`` when ``target`` is its masked form, else ``target`` (whose masked
    credentials, if any, mean S3's own environment variables).
    """
    configured = default_iq_url()
    return configured if mask_url(configured) == target else target


def _sync_one(folder: Path, engine: Engine | None) -> dict[str, Any]:
    capture_id = folder.name
    result: dict[str, Any] = {"capture_id": capture_id, "iq_url": None, "rows": 0, "error": ""}
    saved = json.loads((folder / _CAPTURE).read_text()) if (folder / _CAPTURE).exists() else None
    meant = (saved or {}).get("database", "embedded")
    if engine is not None and meant != "embedded" and meant != db.database_identity(engine.url):
        raise DatabaseError(
            f"its rows belong in the database {meant}, not {db.database_identity(engine.url)}: "
            "run heimdall-lab sync --database-url with that database's URL"
        )
    if saved is not None and engine is not None:
        known = {r.name for r in db.list_receivers(engine, active_only=False)}
        for r in saved["receivers"]:
            if r["name"] not in known:
                db.add_receiver(engine, Receiver(**r))
        if db.get_capture(engine, capture_id) is None:
            db.create_capture(engine, capture_id=capture_id, **saved["create"])
    if (folder / _IQ).exists():
        target = json.loads((folder / _IQ).read_text())
        local = IQStore(str(folder / "iq"))
        remote = IQStore(_target_store(target["target"]))
        if target.get("split"):
            written_url = _merge_stream(local, remote, capture_id, target)
        else:
            ds = local.open(capture_id).load()
            written_url = remote.write(ds, capture_id=capture_id).url
        result["iq_url"] = written_url
        if saved is not None:
            saved["update"]["iq_url"] = written_url
            _write_json(folder / _CAPTURE, saved)
        if engine is not None and db.get_capture(engine, capture_id) is not None:
            db.set_iq_url(engine, capture_id, written_url)
        (folder / _IQ).unlink()
        shutil.rmtree(folder / "iq", ignore_errors=True)
    if engine is None:
        return result
    if (folder / _MEASUREMENTS).exists():
        rows = _read_measurements(folder / _MEASUREMENTS)
        if result["iq_url"] and "iq_path" in rows:
            rows["iq_path"] = [f"{result['iq_url']}#receiver={n}" for n in rows["receiver"]]
        result["rows"] = db.write_measurements(engine, capture_id, rows)
        (folder / _MEASUREMENTS).unlink()
    if saved is not None:
        db.update_capture(engine, capture_id, **saved["update"])
        (folder / _CAPTURE).unlink()
    return result


def _merge_stream(local: IQStore, remote: IQStore, capture_id: str, target: dict[str, Any]) -> str:
    """Move the chunks a streamed capture kept locally next to those in the store; complete it.

    Chunk objects never overlap (each was written to one store only), so copying every
    local chunk object, then completing the capture in the store, loses and repeats nothing.
    """
    prefix = local._prefix(capture_id)
    dest = remote._prefix(capture_id)
    have_meta = read_manifest(remote, capture_id) is not None
    for path in local.fs.find(prefix):
        key = path[len(prefix) + 1 :]
        is_meta = key.endswith("zarr.json") or key.startswith("heimdall-")
        if is_meta and (have_meta or key.startswith("heimdall-complete")):
            continue
        remote._call("write to", remote.fs.pipe_file, f"{dest}/{key}", local.fs.cat_file(path))
    marker = finish_stream(
        remote,
        capture_id,
        target.get("complete") or {},
        reference=target.get("reference"),
    )
    log.info("capture %s: IQ kept locally moved to %s (%s)", capture_id, remote.url, marker)
    return remote.url_for(capture_id)


def _recover(engine: Engine, stale: db.StaleCapture) -> dict[str, Any]:
    """End a capture whose process died: from its complete IQ if it was stored, else failed."""
    note = f"interrupted at {stale.status}: no heartbeat for {stale.silent_s:.0f} s"
    old = db.get_capture(engine, stale.id)
    previous = (old.error_message or "") if old is not None else ""
    result: dict[str, Any] = {"capture_id": stale.id, "iq_url": None, "rows": 0, "error": ""}
    store_url = store_url_of(stale.iq_url, stale.id) if stale.iq_url else None
    if store_url is not None:
        store = IQStore(_target_store(store_url))
        if read_manifest(store, stale.id) is not None:
            return _recover_stream(engine, stale, store, note, previous)
        if store.exists(stale.id):
            ds = store.open(stale.id).load()
            rows = stored_interval_rows(ds, stale.iq_url)
            result.update(iq_url=stale.iq_url, rows=db.write_measurements(engine, stale.id, rows))
            complete = bool(ds["complete"].all()) if "complete" in ds.coords else True
            db.update_capture(
                engine,
                stale.id,
                status="done" if complete and not previous else "partial",
                progress=100.0,
                error="\n".join(
                    filter(None, [previous, f"{note}; its IQ was complete: measured by sync"])
                ),
            )
            log.warning("capture %s: %s; measured from its stored IQ", stale.id, note)
            return result
    db.update_capture(
        engine, stale.id, status="failed", error="\n".join(filter(None, [previous, note]))
    )
    log.warning("capture %s: %s; marked failed", stale.id, note)
    result["error"] = f"{note}: marked failed"
    return result


def _recover_stream(
    engine: Engine, stale: db.StaleCapture, store: IQStore, note: str, previous: str
) -> dict[str, Any]:
    """End a streamed capture whose process died: keep what it stored, measure every interval.

    The capture is completed in the store from its stored frames (each receiver incomplete,
    unless a finished capture said otherwise), and the measurement rows of every stored
    interval are written: those the capture wrote already are written again unchanged (the
    same IQ gives the same row, keyed by capture, receiver and time), none is lost.
    """
    finished = store._marker(stale.id)  # the capture completed its store, then died
    marker = finished or finish_stream(store, stale.id)
    if not marker.get("receivers"):
        db.update_capture(
            engine,
            stale.id,
            status="failed",
            error="\n".join(filter(None, [previous, f"{note}; no interval was stored"])),
        )
        log.warning("capture %s: %s; no interval stored, marked failed", stale.id, note)
        return {"capture_id": stale.id, "iq_url": None, "rows": 0, "error": f"{note}: failed"}
    ds = store.open(stale.id)
    rows = stored_interval_rows(ds, stale.iq_url)
    written = db.write_measurements(engine, stale.id, rows) if not rows.empty else 0
    frames = marker.get("frames", {})
    extent = ", ".join(f"{name} {n:,} frames" for name, n in frames.items())
    whole = finished is not None and not finished.get("incomplete")
    db.update_capture(
        engine,
        stale.id,
        status="done" if whole and not previous else "incomplete",
        progress=100.0,
        error="\n".join(filter(None, [previous, f"{note}; stored: {extent}"])),
    )
    log.warning("capture %s: %s; kept what it stored (%s)", stale.id, note, extent)
    return {"capture_id": stale.id, "iq_url": stale.iq_url, "rows": written, "error": ""}


def sync(
    *,
    database_url: str | None = None,
    engine: Engine | None = None,
    home: str | Path | None = None,
    stale_after_s: float | None = 3600.0,
) -> pd.DataFrame:
    """Upload IQ kept locally and replay spooled database rows; mark interrupted captures.

    Parameters
    ----------
    database_url : str, optional
        Database URL (``HEIMDALL_DATABASE_URL`` or the embedded server by default).
    engine : sqlalchemy.engine.Engine, optional
        An engine to use instead of ``database_url``.
    home : str or pathlib.Path, optional
        Local state directory.
    stale_after_s : float or None, default 3600
        Captures left in a running stage whose process has not beaten for this long (at
        least :data:`heimdall_lab.db.STALE_AFTER_S`) are taken for dead: one whose IQ was
        stored completely gets its measurements recomputed from it and ends ``done`` or
        ``partial``; any other is marked ``failed``. ``None`` leaves them.

    Returns
    -------
    pandas.DataFrame
        One row per pending capture: ``capture_id``, ``iq_url`` (where the IQ went),
        ``rows`` (measurement rows written), ``error`` (why it is still pending, if it is).

    Raises
    ------
    DatabaseError
        If the database still cannot be reached (nothing is lost: the spool stays).
    """
    own = engine is None
    if engine is None:
        engine = db.get_engine(database_url)
    results = []
    try:
        for capture_id in pending(home):
            folder = spool_root(home) / capture_id
            try:
                results.append(_sync_one(folder, engine))
            except HeimdallError as exc:
                log.warning("capture %s: still pending: %s", capture_id, exc)
                results.append(
                    {"capture_id": capture_id, "iq_url": None, "rows": 0, "error": str(exc)}
                )
                continue
            if not any(folder.iterdir()):
                folder.rmdir()
        if stale_after_s is not None:
            results += [_recover(engine, c) for c in db.stale_captures(engine, stale_after_s)]
    finally:
        if own:
            engine.dispose()
    return pd.DataFrame(results, columns=["capture_id", "iq_url", "rows", "error"])
