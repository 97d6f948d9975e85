"""Batch work on Dask: reprocess stored captures, and run grids of notebooks.

Both functions run on a :mod:`dask.distributed` cluster: a ``LocalCluster`` started for the
call by default (worker processes on this machine), or an existing scheduler given by its
address (``tcp://host:8786``) or a ``distributed.Client``, so that the same call scales past
one machine.

Reprocessing (:func:`reprocess`)
    The caller reads only each capture's metadata (receivers, length) and submits one task
    per group of receivers (at most 32 MiB of IQ per task, one receiver at least). Each task
    reads its receivers' zarr chunks (shards) itself, through :meth:`IQStore.open` (dask
    arrays over the shards, computed in the task), so IQ never travels between workers, and
    computes exactly what :func:`heimdall_lab.pipeline.capture` computes
    (:func:`~heimdall_lab.processing.capture_metrics` then
    :func:`~heimdall_lab.processing.measurement_rows`: the metrics and the PSD stored with
    each measurement). Only the small measurement rows come back to the caller, who writes
    them with :func:`heimdall_lab.db.write_measurements` (binary COPY) as each capture
    completes. At most ``max_in_flight`` captures are submitted at a time, so neither the
    caller nor the workers ever hold the archive: a worker holds the IQ of the task it runs
    on each thread, the caller the rows of the captures in flight.

    Nothing is ever duplicated: ``measurements`` has the primary key ``(capture_id,
    websdr_id, timestamp_utc)`` and ``write_measurements`` leaves rows already stored as they
    are. ``mode="skip"`` (the default) therefore *fills in*: captures whose every receiver has
    a row are skipped without being read, and for the others only the missing rows are
    added, so an interrupted run resumes where it stopped. ``mode="replace"`` recomputes every
    capture and replaces its rows (for new DSP code): the old rows of the receivers measured
    are deleted, then the new ones written. Delete and write are two transactions: if the
    write fails the capture is reported ``failed`` without rows, and running again restores
    them. Replaced rows keep the acquisition metadata the store does not hold (status,
    reason, skipped frames) and gain ``reprocessed_at``. A capture in the store that the
    database does not know (e.g. imported with :func:`heimdall_lab.store.import_kiwi_wav`)
    is recorded in ``captures`` first when its id is a database id (32 hex digits); its
    receivers must be in ``websdrs``.

Notebook grids (:func:`run_grid`)
    One papermill run of a notebook per point of a parameter grid, one dask task each. Every
    run writes ``<output_dir>/<notebook>-<run id>.ipynb``, the run id a hash of its
    parameters; a run is written there only when it has finished (it runs in
    ``<output_dir>/.partial/`` until then). Running the same grid again skips the runs whose
    notebook is there and completed, and runs again those that failed or never finished.

The workers need heimdall_lab installed, read access to the IQ store (an ``s3://`` store or
a shared folder on several machines), and, for notebooks, the database and store the
notebooks use (their environment is the worker's). The caller needs the database.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import dask
import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from heimdall_lab import db
from heimdall_lab.errors import DatabaseError, HeimdallError, ValidationError
from heimdall_lab.ids import check_capture_id
from heimdall_lab.measurement import ACQUISITION_METADATA
from heimdall_lab.notebooks import notebook_parameters, notebook_path, run_notebook
from heimdall_lab.store import IQStore
from heimdall_lab.store.stream import stored_interval_rows
from heimdall_lab.urls import mask_url, mask_values
from heimdall_lab.values import jsonable, positive, to_json

if TYPE_CHECKING:  # pragma: no cover
    from distributed import Client, Future

log = logging.getLogger(__name__)

__all__ = [
    "REPROCESS_COLUMNS",
    "RUN_COLUMNS",
    "dask_client",
    "grid_run_id",
    "notebook_completed",
    "reprocess",
    "run_grid",
]

#: Columns of the table :func:`reprocess` returns.
REPROCESS_COLUMNS = (
    "capture_id",
    "status",
    "receivers",
    "samples",
    "rows_written",
    "rows_deleted",
    "elapsed_s",
    "error",
)
#: Columns of the table :func:`run_grid` returns (besides one column per grid parameter).
RUN_COLUMNS = ("run_id", "parameters", "output", "status", "elapsed_s", "error")

#: The capture variables a receiver's measurement needs (coordinates come along).
#: Most IQ bytes one task measures: receivers are grouped up to this, one receiver at least.
_TASK_BYTES = 32 << 20
#: Acquisition metadata kept from the rows a reprocess replaces.
_KEPT_METADATA = ACQUISITION_METADATA
_PARTIAL = ".partial"

Mode = Literal["skip", "replace"]


# ----------------------------------------------------------------------------- cluster


@contextlib.contextmanager
def dask_client(
    scheduler: str | Client | None = None,
    n_workers: int | None = None,
    threads_per_worker: int = 1,
    *,
    processes: bool = True,
    silence_logs: int = logging.WARNING,
) -> Iterator[Client]:
    """A ``distributed.Client`` on a given scheduler, or on a ``LocalCluster`` made for it.

    Parameters
    ----------
    scheduler : str or distributed.Client, optional
        A scheduler address (``tcp://host:8786``) to connect to, or a client to use as it
        is (not closed here). Default: start a ``LocalCluster`` and close it on exit.
    n_workers : int, optional
        Workers of the ``LocalCluster``; one per CPU by default. Ignored with a scheduler.
    threads_per_worker : int, default 1
        Threads per worker of the ``LocalCluster``.
    processes : bool, default True
        ``LocalCluster`` workers as processes (True: no shared GIL) or threads.
    silence_logs : int, default logging.WARNING
        The least level of ``distributed``'s log records shown, in this process while the
        client is open and in the ``LocalCluster``'s scheduler and workers (their processes
        too); ``logging.INFO`` shows the cluster starting, its workers and their tasks.

    Yields
    ------
    distributed.Client
        A client that is not made dask's default scheduler (other dask work in the caller
        keeps its own scheduler).

    Raises
    ------
    ValidationError
        If ``n_workers`` or ``threads_per_worker`` is not a whole number >= 1.
    """
    from distributed import Client, LocalCluster

    n_workers = None if n_workers is None else positive(n_workers, "n_workers", whole=True)
    threads = positive(threads_per_worker, "threads_per_worker", whole=True)
    if isinstance(scheduler, Client):
        with _log_level("distributed", silence_logs):
            yield scheduler
        return
    if scheduler is not None:
        with _log_level("distributed", silence_logs):
            client = Client(str(scheduler), set_as_default=False)
            try:
                log.info("dask: using the scheduler at %s", scheduler)
                yield client
            finally:
                client.close()
        return
    workers = n_workers or max(os.cpu_count() or 1, 1)
    with (
        _log_level("distributed", silence_logs),
        LocalCluster(
            n_workers=workers,
            threads_per_worker=threads,
            processes=processes,
            dashboard_address="127.0.0.1:0",  # the HTTP server on loopback, any free port
            silence_logs=silence_logs,  # its scheduler's and workers' (and their processes')
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        log.info(
            "dask: LocalCluster of %d %s x %d thread(s) at %s",
            workers,
            "processes" if processes else "threads",
            threads,
            cluster.scheduler_address,
        )
        yield client


@contextlib.contextmanager
def _log_level(name: str, level: int) -> Iterator[None]:
    """A logger's level, for a while (``distributed`` sets its own as it is imported)."""
    logger = logging.getLogger(name)
    before = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)


class _Tally:
    """A tqdm bar over a batch's items, counting each status as the items end."""

    def __init__(self, total: int, desc: str, unit: str, show: bool) -> None:
        from tqdm.auto import tqdm

        # Text bars on a terminal only (none in a log file or a pipe); widgets in Jupyter.
        self.bar = tqdm(total=total, desc=desc, unit=unit, disable=None if show else True)
        self.counts: dict[str, int] = {}

    def add(self, status: str) -> None:
        self.counts[status] = self.counts.get(status, 0) + 1
        self.bar.set_postfix_str(
            ", ".join(f"{n} {s}" for s, n in sorted(self.counts.items())), refresh=False
        )
        self.bar.update()

    def __enter__(self) -> _Tally:
        return self

    def __exit__(self, *_: object) -> None:
        self.bar.close()


def _threads(client: Client) -> int:
    return max(sum(client.nthreads().values()), 1)


# ----------------------------------------------------------------------------- reprocess


def _measure_part(
    store_url: str,
    storage_options: dict[str, Any] | None,
    capture_id: str,
    receivers: list[str],
    iq_url: str,
) -> pd.DataFrame:
    """On a worker: read some receivers' IQ chunks of a stored capture and measure them.

    The task reads its own zarr chunks (shards), so the IQ never travels between workers.
    """
    part = IQStore(store_url, storage_options).open(capture_id, receivers=receivers)
    with dask.config.set(scheduler="synchronous"):  # inside the task: no nested scheduling
        part = part.load()  # the IQ and the small per-frame variables of these receivers
    return stored_interval_rows(part, iq_url)


def _receiver_groups(n_receivers: int, n_samples: int, task_bytes: int) -> list[slice]:
    """Consecutive receivers per task, each task's IQ within ``task_bytes`` (at least one)."""
    per_task = max(1, task_bytes // max(n_samples * 8, 1))
    return [slice(i, min(i + per_task, n_receivers)) for i in range(0, n_receivers, per_task)]


def _concat(parts: list[pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(parts, ignore_index=True)


@dataclass
class _Job:
    capture_id: str
    started: float
    receivers: list[str]
    attrs: dict[str, Any]
    iq_url: str
    known: bool
    previous: dict[str, dict[str, Any]] = field(default_factory=dict)


def _result(capture_id: str, status: str, started: float, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "capture_id": capture_id,
        "status": status,
        "receivers": 0,
        "samples": 0,
        "rows_written": 0,
        "rows_deleted": 0,
        "elapsed_s": time.perf_counter() - started,
        "error": "",
    }
    row.update(values)
    return row


def _previous_rows(engine: Engine, capture_id: str) -> dict[str, dict[str, Any]]:
    rows = db.query_measurements(engine, capture_id=capture_id, include_psd=False)
    return {
        str(r.receiver): (r.metadata if isinstance(r.metadata, dict) else {})
        for r in rows.itertuples()
    }


def _prepare(
    store: IQStore,
    storage_options: dict[str, Any] | None,
    engine: Engine,
    capture_id: str,
    mode: Mode,
) -> tuple[_Job, Any] | dict[str, Any]:
    """Look at a capture (metadata only) and build its tasks; or say why it is skipped or failed.

    One task per group of receivers (:data:`_TASK_BYTES` of IQ at most, one receiver at
    least), each reading its own receivers' chunks on the worker that runs it.
    """
    started = time.perf_counter()
    try:
        ds = store.open(capture_id)
        known = db.get_capture(engine, capture_id) is not None
        previous = _previous_rows(engine, capture_id) if known else {}
    except HeimdallError as exc:
        return _result(capture_id, "failed", started, error=str(exc))
    receivers = [str(r) for r in ds["receiver"].values]
    if mode == "skip" and known and set(receivers) <= set(previous):
        return _result(capture_id, "skipped", started, receivers=len(receivers))
    iq_url = mask_url(store.url_for(capture_id))
    groups = _receiver_groups(len(receivers), ds.sizes["sample"], _TASK_BYTES)
    parts = [
        dask.delayed(_measure_part, pure=False)(
            store.url, storage_options, capture_id, receivers[group], iq_url
        )
        for group in groups
    ]
    graph = dask.delayed(_concat, pure=False)(parts)
    job = _Job(capture_id, started, receivers, dict(ds.attrs), iq_url, known, previous)
    return job, graph


def _delete_rows(engine: Engine, capture_id: str, receivers: Sequence[str]) -> int:
    stmt = sa.text(
        "DELETE FROM measurements m USING websdrs w WHERE m.websdr_id = w.id "
        "AND m.capture_id = :c AND w.name = ANY(:names)"
    )
    try:
        with engine.begin() as conn:
            return int(conn.execute(stmt, {"c": capture_id, "names": list(receivers)}).rowcount)
    except sa.exc.DBAPIError as err:
        raise DatabaseError(
            f"deleting the measurements of {capture_id} failed: {str(err).splitlines()[0]}"
        ) from None


def _record_capture(engine: Engine, job: _Job) -> None:
    attrs = job.attrs
    frequency = attrs.get("center_frequency_hz")
    duration = attrs.get("requested_duration_s")
    if frequency is None or duration is None:
        raise ValidationError(
            f"capture {job.capture_id} is not in the database and its store attributes lack "
            "center_frequency_hz / requested_duration_s to record it"
        )
    parameters = attrs.get("parameters")
    db.create_capture(
        engine,
        float(frequency),
        float(duration),
        capture_id=job.capture_id,
        parameters=parameters if isinstance(parameters, Mapping) else {},
        status="done",
        iq_url=job.iq_url,
        start_time=attrs.get("core:datetime"),
    )


def _write(engine: Engine, job: _Job, rows: pd.DataFrame, mode: Mode) -> dict[str, Any]:
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    metadata = []
    for name, meta in zip(rows["receiver"], rows["metadata"], strict=True):
        meta = dict(meta)
        old = job.previous.get(str(name), {})
        meta.update({k: old[k] for k in _KEPT_METADATA if k in old})
        meta["reprocessed_at"] = stamp
        metadata.append(meta)
    rows = rows.assign(metadata=metadata)
    if not job.known:
        _record_capture(engine, job)
    deleted = _delete_rows(engine, job.capture_id, job.receivers) if mode == "replace" else 0
    written = db.write_measurements(engine, job.capture_id, rows)
    return {
        "receivers": len(rows),
        "samples": int(rows["samples_count"].sum()),
        "rows_written": written,
        "rows_deleted": deleted,
    }


def _finish(future: Future, job: _Job, engine: Engine, mode: Mode) -> dict[str, Any]:
    try:
        rows = future.result()
        values = _write(engine, job, rows, mode)
    except HeimdallError as exc:
        log.error("reprocess %s: %s", job.capture_id, exc)
        return _result(job.capture_id, "failed", job.started, error=str(exc))
    except Exception as exc:  # a worker error: reported per capture, the batch goes on
        log.exception("reprocess %s failed", job.capture_id)
        message = f"{type(exc).__name__}: {exc}"
        return _result(job.capture_id, "failed", job.started, error=message)
    finally:
        future.release()
    log.info(
        "reprocessed %s: %d receivers, %d rows written, %d replaced",
        job.capture_id,
        values["receivers"],
        values["rows_written"],
        values["rows_deleted"],
    )
    return _result(job.capture_id, "done", job.started, **values)


@contextlib.contextmanager
def _engine(engine: Engine | None, database_url: str | None) -> Iterator[Engine]:
    if engine is not None:
        yield engine
        return
    own = db.get_engine(database_url)
    try:
        yield own
    finally:
        own.dispose()


def reprocess(
    capture_ids: Sequence[str] | str | None = None,
    iq_url: str | None = None,
    database_url: str | None = None,
    scheduler: str | Client | None = None,
    n_workers: int | None = None,
    threads_per_worker: int = 1,
    *,
    engine: Engine | None = None,
    mode: Mode = "skip",
    max_in_flight: int | None = None,
    storage_options: dict[str, Any] | None = None,
    processes: bool = True,
    progress: bool = False,
    silence_logs: int = logging.WARNING,
) -> pd.DataFrame:
    """Recompute the measurements of stored captures from their IQ, on Dask, into the database.

    Parameters
    ----------
    capture_ids : str or sequence of str, optional
        Captures to reprocess; every complete capture in the store by default.
    iq_url : str, optional
        The IQ store (:func:`heimdall_lab.store.default_iq_url` by default).
    database_url : str, optional
        The database (``HEIMDALL_DATABASE_URL`` or the embedded server by default).
    scheduler : str or distributed.Client, optional
        A dask scheduler address or client; a ``LocalCluster`` by default (see
        :func:`dask_client`).
    n_workers : int, optional
        ``LocalCluster`` workers (one per CPU by default).
    threads_per_worker : int, default 1
        ``LocalCluster`` threads per worker.
    engine : sqlalchemy.engine.Engine, optional
        An engine to use instead of ``database_url`` (not disposed of here).
    mode : {"skip", "replace"}, default "skip"
        ``skip``: leave captures that have a row for every receiver, add missing rows of the
        others. ``replace``: recompute every capture and replace its rows (module docstring).
    max_in_flight : int, optional
        Captures submitted at once (default twice the cluster's threads, at least 2): bounds
        the memory of the caller and of the cluster.
    storage_options : dict, optional
        fsspec options of the IQ store (see :class:`heimdall_lab.store.IQStore`).
    processes : bool, default True
        ``LocalCluster`` workers as processes or threads.
    progress : bool, default False
        Draw a progress bar over the captures as each one ends, with the count of each
        status (tqdm: on a terminal's stderr, or a widget in Jupyter).
    silence_logs : int, default logging.WARNING
        The least level of dask's own log records shown (see :func:`dask_client`).

    Returns
    -------
    pandas.DataFrame
        One row per capture, in the order given (columns :data:`REPROCESS_COLUMNS`):
        ``status`` (``done``, ``skipped`` or ``failed``), receivers and samples measured,
        rows written and deleted, seconds from its submission to its rows being written, and
        the error of a failed capture. One capture failing does not stop the others.

    Raises
    ------
    ValidationError
        Bad mode, worker counts or capture ids.
    StorageError
        If the store cannot be listed.
    DatabaseError
        If the database cannot be reached.
    """
    if mode not in ("skip", "replace"):
        raise ValidationError(f"mode must be 'skip' or 'replace', got {mode!r}")
    for name, value in [
        ("max_in_flight", max_in_flight),
        ("n_workers", n_workers),
        ("threads_per_worker", threads_per_worker),
    ]:
        if value is not None:
            positive(value, name, whole=True)
    store = IQStore(iq_url, storage_options)
    if capture_ids is None:
        ids = store.list()
    else:
        given = [capture_ids] if isinstance(capture_ids, str) else list(capture_ids)
        ids = list(dict.fromkeys(check_capture_id(c) for c in given))
    results: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    if ids:
        with (
            _engine(engine, database_url) as eng,
            _Tally(len(ids), "reprocess", "capture", progress) as tally,
        ):
            _run_reprocess(
                store,
                storage_options,
                eng,
                lambda: dask_client(
                    scheduler,
                    n_workers,
                    threads_per_worker,
                    processes=processes,
                    silence_logs=silence_logs,
                ),
                ids,
                mode,
                max_in_flight,
                results,
                tally,
            )
    table = pd.DataFrame([results[c] for c in ids], columns=list(REPROCESS_COLUMNS))
    counts = table["status"].value_counts().to_dict() if len(table) else {}
    log.info(
        "reprocessed %d capture(s) from %s in %.2f s: %s",
        len(ids),
        mask_url(store.url),
        time.perf_counter() - t0,
        counts,
    )
    return table


def _run_reprocess(
    store: IQStore,
    storage_options: dict[str, Any] | None,
    engine: Engine,
    connect: Callable[[], contextlib.AbstractContextManager[Client]],
    ids: list[str],
    mode: Mode,
    max_in_flight: int | None,
    results: dict[str, dict[str, Any]],
    tally: _Tally,
) -> None:
    """Submit the captures with at most ``max_in_flight`` at once; write each as it ends.

    The cluster is started (or connected to) only when a capture needs computing.
    """
    from distributed import as_completed

    with contextlib.ExitStack() as stack:
        client: Client | None = None
        pending: Any = None
        window = 0
        jobs: dict[str, _Job] = {}

        def drain(until: int) -> None:
            while pending is not None and pending.count() > until:
                future = next(pending)
                job = jobs.pop(future.key)
                results[job.capture_id] = _finish(future, job, engine, mode)
                tally.add(results[job.capture_id]["status"])

        for capture_id in ids:
            prepared = _prepare(store, storage_options, engine, capture_id, mode)
            if isinstance(prepared, dict):
                results[capture_id] = prepared
                tally.add(prepared["status"])
                continue
            job, graph = prepared
            if client is None:
                client = stack.enter_context(connect())
                pending = as_completed(loop=client.loop)
                window = max_in_flight or max(2, 2 * _threads(client))
            future = client.compute(graph)
            jobs[future.key] = job
            pending.add(future)
            drain(window - 1)
        drain(0)


# ----------------------------------------------------------------------------- notebook grids


def grid_run_id(parameters: Mapping[str, Any]) -> str:
    """The id of one run of a grid: a hash of its parameters.

    Parameters
    ----------
    parameters : mapping
        The run's parameter values (JSON-serialisable).

    Returns
    -------
    str
        12 hex digits, the same for the same parameters in any order.
    """
    text = to_json(dict(parameters), "parameters", sort_keys=True)
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:12]


def notebook_completed(path: str | Path, parameters: Mapping[str, Any] | None = None) -> bool:
    """Whether an executed notebook ran to its end without an error.

    Parameters
    ----------
    path : str or pathlib.Path
        A notebook written by papermill.
    parameters : mapping, optional
        If given, the run must also have had exactly these parameters (credentials masked,
        as the report records them: :func:`heimdall_lab.urls.mask_values`).

    Returns
    -------
    bool
        True when the file exists, papermill recorded no exception, and every code cell
        is ``completed``; False otherwise (also for an unreadable file).
    """
    path = Path(path)
    if not path.is_file():
        return False
    try:
        nb = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    meta = nb.get("metadata", {}).get("papermill", {})
    if not meta or meta.get("exception") or not meta.get("end_time"):
        return False
    if parameters is not None:
        wanted = jsonable(dict(parameters))
        if meta.get("parameters", {}) != wanted:
            return False
    cells = [c for c in nb.get("cells", []) if c.get("cell_type") == "code"]
    return all(
        c.get("metadata", {}).get("papermill", {}).get("status") == "completed" for c in cells
    )


def _grid_runs(grid: Mapping[str, Sequence[Any]], declared: Mapping[str, Any]) -> list[dict]:
    if not isinstance(grid, Mapping) or not grid:
        raise ValidationError("grid must be a non-empty dict of parameter name to list of values")
    unknown = sorted(set(grid) - set(declared))
    if unknown:
        raise ValidationError(
            f"the notebook has no parameter(s) {unknown}; it takes {sorted(declared)}"
        )
    values = []
    for name, options in grid.items():
        if isinstance(options, str | bytes) or not isinstance(options, Sequence) or not options:
            raise ValidationError(f"grid[{name!r}] must be a non-empty list of values")
        values.append(list(options))
    return [dict(zip(grid, point, strict=True)) for point in itertools.product(*values)]


def _run_notebook_task(
    notebook: str, parameters: dict[str, Any], output: str, cwd: str
) -> dict[str, Any]:
    """On a worker: one papermill run, moved to ``output`` when it has finished."""
    out = Path(output)
    run_id = out.stem.rsplit("-", 1)[-1]
    staging = out.parent / _PARTIAL / out.stem
    shutil.rmtree(staging, ignore_errors=True)
    t0 = time.perf_counter()
    status, error = "completed", ""
    try:
        run_notebook(notebook, parameters, output_dir=staging, run_id=run_id, cwd=cwd)
    except Exception as exc:  # every failure is this run's result, not the grid's
        status, error = "failed", f"{type(exc).__name__}: {exc}"
    produced = sorted(staging.rglob("*.ipynb"))
    if produced:
        os.replace(produced[0], out)
    elif status == "failed":
        out.unlink(missing_ok=True)
    shutil.rmtree(staging, ignore_errors=True)
    return {"status": status, "error": error, "elapsed_s": time.perf_counter() - t0}


def run_grid(
    notebook: str | Path,
    grid: Mapping[str, Sequence[Any]],
    output_dir: str | Path = "reports/grid",
    scheduler: str | Client | None = None,
    *,
    n_workers: int | None = None,
    cwd: str | Path | None = None,
    processes: bool = False,
    progress: bool = False,
    silence_logs: int = logging.WARNING,
) -> pd.DataFrame:
    """Run a notebook once per point of a parameter grid, one dask task per run, resumably.

    Parameters
    ----------
    notebook : str or pathlib.Path
        A notebook of ``notebooks/`` by name, or a path (see
        :func:`heimdall_lab.notebooks.notebook_path`).
    grid : dict of str to list
        Parameter name to the values to try; every combination is one run (a one-element
        list fixes a parameter).
    output_dir : str or pathlib.Path, default "reports/grid"
        Where each run's notebook goes, as ``<notebook>-<run id>.ipynb``.
    scheduler : str or distributed.Client, optional
        A dask scheduler address or client; a ``LocalCluster`` by default.
    n_workers : int, optional
        ``LocalCluster`` workers (one per CPU by default): runs at once.
    cwd : str or pathlib.Path, optional
        Working directory of the notebooks' kernels; the current one by default.
    processes : bool, default False
        ``LocalCluster`` workers as processes, or threads of this process (the default: each
        run's kernel is its own process already, so worker processes only add start-up time).
    progress : bool, default False
        Draw a progress bar over the runs as each one ends, with the count of each status
        (tqdm: on a terminal's stderr, or a widget in Jupyter).
    silence_logs : int, default logging.WARNING
        The least level of dask's own log records shown (see :func:`dask_client`).

    Returns
    -------
    pandas.DataFrame
        One row per run in grid order: ``run_id``, ``parameters`` (dict), one column per grid
        parameter, ``output`` (the notebook's path), ``status`` (``completed`` now,
        ``skipped``: completed by an earlier call, or ``failed``), ``elapsed_s`` and
        ``error``.

    Raises
    ------
    ValidationError
        Unknown notebook or parameter, or a malformed grid.
    """
    path = notebook_path(notebook)
    runs = _grid_runs(grid, notebook_parameters(path))
    out_dir = Path(output_dir).absolute()
    out_dir.mkdir(parents=True, exist_ok=True)
    workdir = str(Path(cwd or Path.cwd()).absolute())
    rows: list[dict[str, Any]] = []
    todo: list[int] = []
    for i, params in enumerate(runs):
        shown = mask_values(params)  # what the table and the report may show
        run_id = grid_run_id(shown)
        output = out_dir / f"{path.stem}-{run_id}.ipynb"
        row = {"run_id": run_id, "parameters": shown, **shown, "output": str(output)}
        if notebook_completed(output, shown):
            row.update(status="skipped", elapsed_s=0.0, error="")
        else:
            todo.append(i)
        rows.append(row)
    log.info("grid of %s: %d runs, %d to do in %s", path.name, len(runs), len(todo), out_dir)
    with _Tally(len(runs), path.stem, "run", progress) as tally:
        for row in rows:
            if row.get("status") == "skipped":
                tally.add("skipped")
        if todo:
            _run_todo(
                path,
                runs,
                rows,
                todo,
                workdir,
                tally,
                scheduler,
                n_workers,
                processes,
                silence_logs,
            )
    with contextlib.suppress(OSError):  # leave it if a run of another call is staged there
        (out_dir / _PARTIAL).rmdir()
    columns = ["run_id", "parameters", *grid, "output", "status", "elapsed_s", "error"]
    return pd.DataFrame(rows, columns=columns)


def _run_todo(
    path: Path,
    runs: list[dict],
    rows: list[dict[str, Any]],
    todo: list[int],
    workdir: str,
    tally: _Tally,
    scheduler: str | Client | None,
    n_workers: int | None,
    processes: bool,
    silence_logs: int,
) -> None:
    """Submit the runs to do; record each as it ends, in whatever order."""
    from distributed import as_completed

    with dask_client(
        scheduler, n_workers, 1, processes=processes, silence_logs=silence_logs
    ) as client:
        futures = {
            client.submit(
                _run_notebook_task,
                str(path),
                runs[i],
                rows[i]["output"],
                workdir,
                key=f"notebook-{path.stem}-{rows[i]['run_id']}-{time.time_ns()}",
                pure=False,
                retries=0,
            ): i
            for i in todo
        }
        for future in as_completed(futures, loop=client.loop):
            i = futures[future]
            try:
                rows[i].update(future.result())
            except Exception as exc:  # the worker died under the run
                rows[i].update(status="failed", elapsed_s=np.nan, error=f"{exc!r}")
            log.info("grid run %s: %s", rows[i]["run_id"], rows[i]["status"])
            tally.add(rows[i]["status"])
