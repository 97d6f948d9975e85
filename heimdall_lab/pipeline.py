"""One capture call: fetch, metrics, IQ store, measurements; the one code path for all users.

:func:`capture` is what the notebooks, the ipywidgets form and the CLI call. Where it reads
from and writes to is given to it: the receivers (from the database by name, or
:class:`~heimdall_lab.receivers.Receiver` objects, e.g. those of an emulator from
:func:`heimdall_lab.emulate.emulated`), an :class:`~heimdall_lab.store.IQStore` and a
database engine. The metrics and measurement rows come from :mod:`heimdall_lab.processing`.
It records the
capture in the database before anything connects, moves it through the stages
``connecting`` -> ``receiving`` -> ``processing`` -> ``storing`` -> ``done`` (or
``partial`` when some receivers failed, ``failed`` when a stage failed, ``cancelled`` on
Ctrl-C) with a percentage, and beats (``captures.heartbeat_at``) while it runs,
and returns a :class:`Capture` holding the Dataset, the metrics table and every receiver's
status. A stage that fails is recorded with its reason; what earlier stages produced stays
in the returned object and, where its own stage succeeded, in the stores.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from sqlalchemy.engine import Engine

from heimdall_lab import db, spool
from heimdall_lab.errors import DatabaseError, HeimdallError, StorageError, ValidationError
from heimdall_lab.ids import check_capture_id, new_capture_id
from heimdall_lab.kiwi.acquire import (
    Acquisition,
    Progress,
    ReceiverOutcome,
    TqdmProgress,
    acquire,
    validate_request,
)
from heimdall_lab.kiwi.client import StreamSettings, recording_from_frames
from heimdall_lab.kiwi.protocol import IqFrame
from heimdall_lab.processing import interval_rows
from heimdall_lab.receivers import DEFAULT_RECEIVERS, Receiver, validate_capture_request
from heimdall_lab.recording import FRAME_SAMPLES, NOMINAL_RATE, Recording
from heimdall_lab.retry import RetryPolicy
from heimdall_lab.store import IQStore
from heimdall_lab.store.stream import (
    FRAME_VARS,
    CaptureWriter,
    StreamLayout,
    interval_dataset,
    interval_start,
    receiver_summary,
)
from heimdall_lab.urls import mask_url
from heimdall_lab.values import to_utc_ns
from heimdall_lab.versions import __version__

log = logging.getLogger(__name__)

#: Share of the progress bar each stage ends at.
_STAGE_END = {"connecting": 5.0, "receiving": 80.0, "processing": 85.0, "storing": 99.0}
_DB_UPDATE_INTERVAL_S = 1.0
#: Retries of a measurement write while the database is briefly unreachable.
_DB_RETRY = RetryPolicy(attempts=4, initial_s=0.2, maximum_s=2.0, jitter_s=0.0)


@dataclass
class Capture:
    """A capture: what was asked, where it went, and what came back.

    Attributes
    ----------
    capture_id : str
        32 hex digits; the key in the database and the IQ store.
    frequency_hz, duration_s : float
        What was asked.
    parameters : dict
        Every parameter needed to repeat the capture (stored with it).
    stage : str
        ``pending``, ``connecting``, ``receiving``, ``processing``, ``storing``, ``done``,
        ``partial``, ``failed`` or ``cancelled``; readable while the capture runs.
    percent : float
        Progress, 0 to 100.
    errors : list of str
        Why stages failed (``"storing: ..."``).
    warnings : list of str
        Work kept on local disk because a store or the database was down (upload and replay
        it with :func:`heimdall_lab.spool.sync`).
    receiver_progress : dict of str to Progress
        The latest progress report of each receiver.
    acquisition : Acquisition or None
        The raw acquisition result.
    metrics : pandas.DataFrame
        One row per receiver that delivered samples (:class:`heimdall_lab.dsp.SignalMetrics`
        fields).
    iq_url : str or None
        Where the IQ store holds the capture (``None`` until stored).
    database_url : str
        The database, password masked.
    measurements_written : int
        Rows written to ``measurements`` by this call.
    start_time : datetime or None
        When acquisition started (UTC).
    intervals : pandas.DataFrame
        The metrics of every receiver's every interval (indexed by receiver, column
        ``interval``), as written to ``measurements`` one row each while the capture ran.
    """

    capture_id: str
    frequency_hz: float
    duration_s: float
    parameters: dict[str, Any]
    stage: str = "pending"
    percent: float = 0.0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    receiver_progress: dict[str, Progress] = field(default_factory=dict)
    acquisition: Acquisition | None = None
    metrics: pd.DataFrame = field(default_factory=pd.DataFrame)
    iq_url: str | None = None
    database_url: str = ""
    measurements_written: int = 0
    start_time: datetime | None = None
    intervals: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def dataset(self) -> xr.Dataset | None:
        """The capture Dataset (IQ and timestamps), or ``None`` before acquisition."""
        return None if self.acquisition is None else self.acquisition.dataset

    @property
    def ok(self) -> bool:
        """Whether the capture finished with every stage done (some receivers may have failed)."""
        return self.stage in ("done", "partial")

    @property
    def error(self) -> str:
        """Every stage failure, one per line (empty when none)."""
        return "\n".join(self.errors)

    def status(self) -> pd.DataFrame:
        """Per-receiver status with the main metrics.

        Returns
        -------
        pandas.DataFrame
            Indexed by receiver: status, reason, samples, rate, RSSI, SNR, C/N0, offset.
        """
        if self.acquisition is None:
            return pd.DataFrame()
        table = self.acquisition.status()
        if not self.metrics.empty:
            cols = ["snr_db", "snr_bandwidth_hz", "cn0_dbhz", "frequency_offset_hz"]
            table = table.join(self.metrics[cols])
        return table


ProgressCallback = Callable[[Capture], None]


def _resolve_receivers(
    engine: Engine | None, receivers: Sequence[Receiver | str] | None
) -> list[Receiver]:
    """Receivers by name from the database, or as given.

    Receiver objects the database does not know yet (an emulator's, a new station) are
    registered later, before measurements are written (:func:`_register`).
    """
    if engine is None:
        if receivers is not None and all(isinstance(r, Receiver) for r in receivers):
            return list(receivers)  # type: ignore[arg-type]
        raise DatabaseError(
            "the database is unreachable and the receivers were given by name: "
            "pass Receiver objects, or capture again when the database is back",
            retryable=True,
        )
    if receivers is not None and all(isinstance(r, Receiver) for r in receivers):
        return list(receivers)  # type: ignore[arg-type]
    known = {r.name: r for r in db.list_receivers(engine, active_only=True)}
    if receivers is None:
        if not known:
            raise ValidationError(
                "no active receivers in the database; add some (heimdall-lab receivers add, "
                "or heimdall-lab db migrate to seed the defaults) or pass Receiver objects"
            )
        return list(known.values())
    chosen = []
    for r in receivers:
        if isinstance(r, Receiver):
            chosen.append(r)
        elif r in known:
            chosen.append(known[r])
        else:
            raise ValidationError(
                f"unknown or inactive receiver {r!r}; active ones: {sorted(known)}"
            )
    return chosen


def _register(engine: Engine, receivers: Sequence[Receiver]) -> None:
    """Add the receivers the database does not know yet, so measurements can refer to them.

    A receiver already there (by name) is left as it is: an emulator's loopback address does
    not replace the real one. A new name that is a default receiver's is added as that
    default (the emulator only stood in for it); any other new receiver is added inactive,
    so a later capture from the database's receivers never dials a loopback port that an
    emulator has long closed.
    """
    registered = {r.name for r in db.list_receivers(engine, active_only=False)}
    defaults = {r.name: r for r in DEFAULT_RECEIVERS}
    for r in receivers:
        if r.name in registered:
            continue
        if r.name in defaults:
            log.info("registering default receiver %s (%s)", r.name, defaults[r.name].address)
            db.seed_receivers(engine, [defaults[r.name]])
        else:
            log.info("registering receiver %s (%s), inactive", r.name, r.address)
            db.add_receiver(engine, r, is_active=False)
        registered.add(r.name)


class _Recorder:
    """Moves a capture through its stages, mirroring them to the database (best effort).

    Once the database fails to answer, it is left alone for the rest of the capture: the
    capture row is spooled at the end instead (see :mod:`heimdall_lab.spool`).
    """

    def __init__(
        self,
        cap: Capture,
        engine: Engine | None,
        on_progress: ProgressCallback | None,
        bars: TqdmProgress | None = None,
    ) -> None:
        self.cap = cap
        self.engine = engine
        self.on_progress = on_progress
        self.bars = bars
        self.db_down = engine is None
        self._last_db = 0.0
        self._lock = threading.Lock()
        self._stop_beating = threading.Event()
        self._heart: threading.Thread | None = None

    def start_heartbeat(self) -> None:
        """Beat (``captures.heartbeat_at``) every :data:`db.HEARTBEAT_S` s until stopped."""

        def beat() -> None:
            while True:
                if not self.db_down and self.engine is not None:
                    try:
                        db.beat(self.engine, self.cap.capture_id)
                    except DatabaseError as exc:
                        log.debug("capture %s: heartbeat missed: %s", self.cap.capture_id, exc)
                if self._stop_beating.wait(db.HEARTBEAT_S):
                    return

        self._heart = threading.Thread(target=beat, name="heimdall-heartbeat", daemon=True)
        self._heart.start()

    def stop_heartbeat(self) -> None:
        """Stop beating (the capture has reached a final stage, or its process is leaving)."""
        self._stop_beating.set()
        if self._heart is not None:
            self._heart.join()

    def _db(self, force: bool) -> None:
        if self.db_down or self.engine is None:
            return
        now = time.monotonic()
        if not force and now - self._last_db < _DB_UPDATE_INTERVAL_S:
            return
        self._last_db = now
        try:
            db.update_capture(self.engine, self.cap.capture_id, **self.row_update())
        except DatabaseError as exc:
            log.warning("capture %s: status not recorded: %s", self.cap.capture_id, exc)
            self.db_down = self.db_down or exc.retryable

    def row_update(self) -> dict[str, Any]:
        """The capture's state as :func:`heimdall_lab.db.update_capture` arguments."""
        cap = self.cap
        failed = []
        if cap.acquisition is not None:
            failed = [
                f"{o.receiver.name}: {o.status}: {o.message}"
                for o in cap.acquisition.outcomes
                if o.status != "ok"
            ]
        note = "\n".join([*cap.errors, *cap.warnings, *failed])
        return {
            "status": cap.stage,
            "progress": round(cap.percent, 2),
            "error": note or None,
            "iq_url": cap.iq_url,
            "start_time": cap.start_time,
        }

    def set(
        self, stage: str | None = None, percent: float | None = None, force: bool = False
    ) -> None:
        with self._lock:
            if stage is not None and stage != self.cap.stage:
                self.cap.stage = stage
                force = True
            if percent is not None:
                self.cap.percent = max(self.cap.percent, min(100.0, percent))
            self._db(force)
        if self.on_progress is not None:
            self.on_progress(self.cap)

    def fail(self, stage: str, exc: BaseException) -> None:
        message = f"{stage}: {exc}"
        log.error("capture %s: %s", self.cap.capture_id, message)
        self.cap.errors.append(message)
        self._db(True)

    def warn(self, message: str) -> None:
        log.warning("capture %s: %s", self.cap.capture_id, message)
        self.cap.warnings.append(message)

    def receiver(self, p: Progress) -> None:
        cap = self.cap
        cap.receiver_progress[p.receiver] = p
        if self.bars is not None:
            self.bars(p)
        if cap.stage == "connecting" and p.state == "receiving":
            self.set("receiving")
        fractions = [q.fraction for q in cap.receiver_progress.values()]
        share = sum(fractions) / max(len(fractions), 1)
        self.set(percent=_STAGE_END["connecting"] + share * (_STAGE_END["receiving"] - 5.0))


def _connect(database_url: str | None) -> Engine | None:
    """An engine, or ``None`` when the database cannot be reached (the capture goes on)."""
    try:
        return db.get_engine(database_url)
    except DatabaseError as exc:
        if not exc.retryable:
            raise
        log.warning("database unreachable, spooling this capture locally: %s", exc)
        return None


#: Parameters capture() records itself; ``metadata`` may not redefine them.
_OWN_PARAMETERS = (
    "frequency_hz",
    "duration_s",
    "receivers",
    "deadline_s",
    "retries",
    "interval_s",
    "settings",
    "software_version",
)

#: Seconds per interval of a capture by default (:func:`capture`'s ``interval_s``).
DEFAULT_INTERVAL_S = 10.0
#: Shortest and longest interval.
INTERVAL_RANGE_S = (1.0, 60.0)


def _check_interval(interval_s: float) -> None:
    low, high = INTERVAL_RANGE_S
    try:
        ok = low <= float(interval_s) <= high
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValidationError(
            f"interval_s must be {low:g} to {high:g} s (the IQ is written and measured once "
            f"per interval), got {interval_s!r}"
        )


def _open_store(store: IQStore | str | None, iq_url: str | None) -> IQStore:
    if store is not None and iq_url is not None:
        raise ValidationError("give the IQ store as store= or iq_url=, not both")
    if isinstance(store, IQStore):
        return store
    if store is not None and not isinstance(store, str):
        raise ValidationError(f"store must be an IQStore or a URL, got {type(store).__name__}")
    return IQStore(store if store is not None else iq_url)


def _check_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise ValidationError(f"metadata must be a mapping, got {type(metadata).__name__}")
    clash = sorted(set(metadata) & set(_OWN_PARAMETERS))
    if clash:
        raise ValidationError(f"metadata may not redefine the capture's own parameters {clash}")
    return {str(k): v for k, v in metadata.items()}


def capture(
    frequency_hz: float = 10e6,
    duration_s: float = 10.0,
    *,
    receivers: Sequence[Receiver | str] | None = None,
    store: IQStore | str | None = None,
    engine: Engine | None = None,
    database_url: str | None = None,
    iq_url: str | None = None,
    settings: StreamSettings | None = None,
    deadline_s: float | None = None,
    retries: int | None = None,
    gps_reference: datetime | np.datetime64 | str | None = None,
    on_progress: ProgressCallback | None = None,
    progress: bool = False,
    capture_id: str | None = None,
    home: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    interval_s: float = DEFAULT_INTERVAL_S,
) -> Capture:
    """Capture IQ from several receivers, measure it, and store IQ and measurements.

    Parameters
    ----------
    frequency_hz : float
        Centre frequency in Hz.
    duration_s : float
        Seconds of IQ from each receiver, at most
        :data:`heimdall_lab.receivers.MAX_DURATION_S`.
    receivers : sequence of Receiver or str, optional
        Receivers, or names of receivers in the database; all active ones by default.
        Receiver objects the database does not know (by name) are added to it before the
        measurements are written.
    store : IQStore or str, optional
        The IQ store, or its URL (local folder or ``s3://``);
        :func:`heimdall_lab.store.default_iq_url` by default.
    engine : sqlalchemy.engine.Engine, optional
        The database (not disposed of here); by default one is opened on ``database_url``.
    database_url : str, optional
        Database URL when no engine is given; ``HEIMDALL_DATABASE_URL`` or the embedded
        server by default.
    iq_url : str, optional
        The IQ store's URL; the same as a URL given as ``store``.
    settings : StreamSettings, optional
        Passband, gain and timeouts of the receiver streams.
    deadline_s : float, optional
        Overall acquisition deadline (see :func:`heimdall_lab.kiwi.acquire.acquire_async`).
    retries : int, optional
        Retries per receiver (each receiver's ``retry_count`` by default).
    gps_reference : datetime, numpy.datetime64 or str, optional
        A UTC time within half a week of the capture, to resolve the GPS week of the
        timestamps; the wall clock by default (right for live receivers; an emulator
        replaying another time gives its own, see :func:`heimdall_lab.emulate.emulated`).
    on_progress : callable, optional
        Called with the :class:`Capture` whenever its stage or progress changes (each
        receiver's latest report is in :attr:`Capture.receiver_progress`).
    progress : bool, default False
        Draw one progress bar per receiver while the samples stream
        (:class:`~heimdall_lab.kiwi.acquire.TqdmProgress`: ipywidgets in Jupyter, text on a
        terminal's stderr), each complete when its receiver delivered everything.
    capture_id : str, optional
        Identifier to use (see :func:`heimdall_lab.ids.check_capture_id`); a new UUID by
        default.
    home : str, optional
        Data home for the spool (:func:`heimdall_lab.home.data_home`: ``$HEIMDALL_HOME``,
        else the per-user data folder).
    metadata : mapping, optional
        More parameters to record with the capture (JSON values), merged into
        :attr:`Capture.parameters`: for example an emulator's scenario, seed and start
        (``emulated(...).parameters``), so the capture can be repeated.
    interval_s : float, default 10
        Seconds per interval (rounded to whole 512-sample frames). Each receiver's IQ is
        appended to the store one interval at a time as it arrives, and each interval gets
        its measurement row then; a capture no longer than one interval is one interval.
        Memory is bounded by receivers x interval, whatever the duration.

    Returns
    -------
    Capture
        The Dataset, metrics, per-receiver status, ids and URLs. Check :attr:`Capture.stage`
        (``done``, ``partial`` or ``failed``), :attr:`Capture.errors` and
        :attr:`Capture.warnings` (work kept locally for ``heimdall-lab sync``).

    Raises
    ------
    ValidationError
        Bad parameters or unknown receivers, before anything connects.
    DatabaseError
        The database is unreachable and the receivers cannot be known without it.
    KeyboardInterrupt
        On Ctrl-C (or a Jupyter interrupt): the acquisition stops at once, what each
        receiver delivered is measured and stored as incomplete, the row says
        ``cancelled``, and then the interrupt goes on.

    Examples
    --------
    >>> from heimdall_lab.emulate import emulated
    >>> with emulated(seed=0) as emu:  # doctest: +SKIP
    ...     cap = capture(10e6, 10, receivers=emu.receivers, metadata=emu.parameters)
    """
    validate_capture_request(frequency_hz, duration_s)
    _check_interval(interval_s)
    extra = _check_metadata(metadata)
    capture_id = check_capture_id(capture_id or new_capture_id())
    iq_store = _open_store(store, iq_url)
    reference = None if gps_reference is None else to_utc_ns(gps_reference, "gps_reference")
    own_engine = engine is None
    # Which database the rows belong in, kept with anything spooled (no credentials):
    # "embedded" when no URL names one, whatever port the embedded server has today.
    target = db.database_identity(engine.url if engine else database_url or db.database_url())
    if engine is None:
        engine = _connect(database_url)
    try:
        chosen = _resolve_receivers(engine, receivers)
        validate_request(chosen, frequency_hz, duration_s)
        parameters: dict[str, Any] = {
            "frequency_hz": float(frequency_hz),
            "duration_s": float(duration_s),
            "receivers": [r.name for r in chosen],
            **extra,
            "deadline_s": deadline_s,
            "retries": retries,
            "interval_s": float(interval_s),
            "settings": asdict(settings or StreamSettings()),
            "software_version": __version__,
        }
        cap = Capture(
            capture_id,
            float(frequency_hz),
            float(duration_s),
            parameters,
            database_url=(
                mask_url(engine.url) if engine is not None else f"{target} (unreachable)"
            ),
        )
        create = {
            "frequency_hz": float(frequency_hz),
            "duration_s": float(duration_s),
            "parameters": parameters,
        }
        bars = TqdmProgress([r.name for r in chosen]) if progress else None
        rec = _Recorder(cap, engine, on_progress, bars)
        if engine is not None:
            try:
                _register(engine, chosen)
                db.create_capture(engine, capture_id=capture_id, status="pending", **create)
            except DatabaseError as exc:
                if not exc.retryable:
                    raise
                rec.db_down = True
        run = _Run(cap, rec, chosen, iq_store, engine, home, target, interval_s)
        rec.start_heartbeat()
        try:
            run.acquire(settings, deadline_s, retries, reference)
            if cap.acquisition is not None and any(o.frames for o in cap.acquisition.outcomes):
                run.finish_store()
            run.finish(create)
        except KeyboardInterrupt:
            rec.set("cancelled", force=True)  # interrupted after receiving: say so, then go
            raise
        finally:
            rec.stop_heartbeat()
            if bars is not None:
                bars.close()
        if cap.stage == "cancelled":
            raise KeyboardInterrupt(
                f"capture {capture_id} cancelled; what was received is kept as incomplete"
            )
        return cap
    finally:
        if own_engine and engine is not None:
            engine.dispose()


@dataclass(frozen=True)
class _Job:
    """One receiver's interval, handed from the acquisition to the writer."""

    name: str
    chunk: int
    frames: list[IqFrame]
    arrived: np.datetime64
    outcome: ReceiverOutcome | None = None


class _Stream:
    """Each receiver's frames, cut into intervals and written as they fill.

    The acquisition hands every frame to :meth:`sink`; a full interval goes to a worker
    thread, which appends it to the IQ store (:class:`~heimdall_lab.store.stream.
    CaptureWriter`) and then writes its measurement rows. The queue between them is bounded,
    so memory is bounded by receivers x interval, whatever the duration.
    """

    def __init__(
        self,
        run: _Run,
        writer: CaptureWriter | None,
        layout: StreamLayout,
        attrs: dict[str, Any],
    ) -> None:
        self.run, self.writer, self.layout, self.attrs = run, writer, layout, attrs
        self.index = {r.name: i for i, r in enumerate(run.chosen)}
        self.buffers: dict[str, list[IqFrame]] = {r.name: [] for r in run.chosen}
        self.arrived: dict[str, int] = {}  # this computer's clock at each buffer's first frame
        self.chunk_no = dict.fromkeys(self.buffers, 0)
        self.jobs: queue.Queue[_Job | None] = queue.Queue(maxsize=2 * len(run.chosen) + 2)
        self.metrics: list[pd.DataFrame] = []
        self.failed: BaseException | None = None
        self.spooled = False
        self.split = False
        self._thread = threading.Thread(target=self._work, name="heimdall-stream", daemon=True)
        self._thread.start()

    def sink(self, name: str) -> Callable[[IqFrame, int], None]:
        """The frame sink of one receiver."""

        def on_frame(frame: IqFrame, hop: int) -> None:
            buffer = self.buffers[name]
            if not buffer:
                self.arrived[name] = time.time_ns()
            buffer.append(frame)
            if len(buffer) >= self.layout.frames_per_chunk:
                self._submit(name)

        return on_frame

    def _submit(self, name: str, outcome: ReceiverOutcome | None = None) -> None:
        frames, self.buffers[name] = self.buffers[name], []
        if frames:
            arrived = np.datetime64(self.arrived[name], "ns")
            self.jobs.put(_Job(name, self.chunk_no[name], frames, arrived, outcome))
            self.chunk_no[name] += 1

    def close(self, outcomes: Sequence[ReceiverOutcome] = ()) -> None:
        """Write what is left in each receiver's buffer and wait for every write.

        Parameters
        ----------
        outcomes : sequence of ReceiverOutcome
            How each receiver's stream ended: its last interval is recorded with its status
            and reason, and with the timing problems its stream showed.
        """
        ended = {o.receiver.name: o for o in outcomes}
        for name in self.buffers:
            self._submit(name, ended.get(name))
        self.jobs.put(None)
        self._thread.join()

    def _work(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            if self.failed is not None:
                continue  # the store failed for good: what arrives is counted, not written
            try:
                self._write(job)
            except BaseException as exc:  # reported by the capture, never lost silently
                log.error("capture %s: writing failed: %s", self.run.cap.capture_id, exc)
                self.failed = exc

    def _store(self, index: int, chunk: int, rec: Recording) -> None:
        """Append a chunk; when the store fails, go on in the spool (else measure only)."""
        assert self.writer is not None
        run, cap = self.run, self.run.cap
        try:
            self.writer.write_chunk(index, chunk, rec)
            return
        except StorageError as exc:
            if self.spooled:
                raise
            # Keep this and every later interval on local disk; sync completes the capture.
            self.split = self.writer.chunks_written > 0
            try:
                self.writer = spool.stream_locally(self.writer, run.home, self.writer.store.url)
            except HeimdallError as local_exc:
                self.writer = None
                run.rec.fail("storing IQ", HeimdallError(f"{exc}; and locally: {local_exc}"))
                return
            self.spooled = True
            cap.iq_url = self.writer.url
            run.rec.warn(
                f"storing IQ: {exc} -- the rest kept locally at {cap.iq_url}, pending upload; "
                "run sync (heimdall-lab sync)"
            )
        self.writer.write_chunk(index, chunk, rec)

    def _write(self, job: _Job) -> None:
        run = self.run
        cap = run.cap
        index, chunk = self.index[job.name], job.chunk
        rec = recording_from_frames(job.frames, run.nominal_rate)
        # The interval's timing is checked as the whole stream's is: against this
        # computer's clock when live, and with what the stream showed once it has ended.
        rec.arrival_utc = job.arrived if run.reference is run.start_utc else None
        status = None
        if job.outcome is not None:
            if job.outcome.recording is not None:
                rec.stream_problems = job.outcome.recording.stream_problems
            if job.outcome.status != "ok":
                status = (job.outcome.status, job.outcome.reason)
        if self.writer is not None:
            self._store(index, chunk, rec)
        start = interval_start(self.attrs, chunk, self.layout.frames_per_chunk)
        one = interval_dataset(run.chosen[index], rec, self.attrs, chunk, run.reference)
        metrics, rows = interval_rows(
            one, interval=chunk, interval_start_utc=start, iq_url=cap.iq_url, status=status
        )
        if not rows.empty:
            run.store_measurements(rows)
            self.metrics.append(metrics.assign(interval=chunk))


class _Run:
    """The stages of one capture after its parameters are settled."""

    def __init__(
        self,
        cap: Capture,
        rec: _Recorder,
        chosen: list[Receiver],
        store: IQStore,
        engine: Engine | None,
        home: str | None,
        target: str,
        interval_s: float,
    ) -> None:
        self.cap, self.rec, self.chosen = cap, rec, chosen
        self.store, self.engine, self.home, self.target = store, engine, home, target
        self.interval_s = interval_s
        self.nominal_rate = NOMINAL_RATE
        self.start_utc = np.datetime64("NaT", "ns")
        self.reference: np.datetime64 | None = None

    def acquire(
        self,
        settings: StreamSettings | None,
        deadline_s: float | None,
        retries: int | None,
        gps_reference: np.datetime64 | None,
    ) -> None:
        cap, rec = self.cap, self.rec
        cap.start_time = datetime.now(UTC)
        self.start_utc = np.datetime64(cap.start_time.replace(tzinfo=None), "ns")
        # GPS weeks resolve against the replayed day, else against the capture's own start
        # (so a capture completed by sync days later reads the same times).
        self.reference = gps_reference if gps_reference is not None else self.start_utc
        rec.set("connecting", 0.0, force=True)
        layout = StreamLayout.for_duration(cap.duration_s, self.interval_s)
        attrs = {
            "center_frequency_hz": cap.frequency_hz,
            "requested_duration_s": cap.duration_s,
            "software_version": __version__,
            "iq_scale": "complex64, full scale 1.0 = int16 32768",
            "core:datatype": "cf32_le",
            "core:sample_rate": self.nominal_rate,
            "core:frequency": cap.frequency_hz,
            "core:datetime": f"{np.datetime_as_string(self.start_utc, 'us')}Z",
            "core:recorder": f"heimdall_lab {__version__}",
            "core:hw": "KiwiSDR",
            "parameters": cap.parameters,
            "heimdall:interval_s": layout.frames_per_chunk * FRAME_SAMPLES / self.nominal_rate,
            "heimdall:frames_per_interval": layout.frames_per_chunk,
            "heimdall:gps_reference": f"{np.datetime_as_string(self.reference, 'ns')}",
        }
        writer = CaptureWriter(
            self.store, cap.capture_id, self.chosen, layout, attrs, reference=self.reference
        )
        kept: CaptureWriter | None = writer
        try:
            writer.create()
        except StorageError as exc:
            try:
                kept = spool.stream_locally(writer, self.home, self.store.url)
                rec.warn(
                    f"storing IQ: {exc} -- kept locally at {kept.url}, pending upload to "
                    f"{self.store.url}; run sync (heimdall-lab sync)"
                )
            except HeimdallError as local_exc:
                # Nowhere to keep the IQ: the capture still measures it (and says so).
                kept = None
                rec.fail("storing IQ", HeimdallError(f"{exc}; and locally: {local_exc}"))
        cap.iq_url = kept.url if kept is not None else None
        rec.set(force=True)  # the row says where the IQ goes from the start
        self.stream = _Stream(self, kept, layout, writer.attrs)
        kwargs: dict[str, Any] = {
            "settings": settings,
            "deadline_s": deadline_s,
            "retries": retries,
            "on_progress": rec.receiver,
            "capture_id": cap.capture_id,
            "gps_reference": gps_reference,
            "sinks": {r.name: self.stream.sink(r.name) for r in self.chosen},
        }
        try:
            try:
                cap.acquisition = acquire(self.chosen, cap.frequency_hz, cap.duration_s, **kwargs)
            finally:
                self.stream.close(cap.acquisition.outcomes if cap.acquisition else ())
        except HeimdallError as exc:
            rec.fail("receiving", exc)
            return
        if self.stream.failed is not None:
            rec.fail("storing IQ", self.stream.failed)
        served = [o for o in cap.acquisition.outcomes if o.frames]
        if not served and not cap.acquisition.cancelled:
            reasons = "; ".join(o.message for o in cap.acquisition.outcomes)
            rec.fail("receiving", HeimdallError(f"no receiver delivered samples ({reasons})"))

    def finish_store(self) -> None:
        """Complete the stored capture, then open it (lazily) as the capture's Dataset."""
        cap, rec = self.cap, self.rec
        assert cap.acquisition is not None
        rec.set("storing", _STAGE_END["processing"])
        outcomes = cap.acquisition.outcomes
        writer = self.stream.writer
        complete = {o.receiver.name: o.status == "ok" for o in outcomes}
        parts = [m for m in self.stream.metrics if not m.empty]
        cap.intervals = pd.concat(parts) if parts else pd.DataFrame()
        cap.metrics = _summary_metrics(cap.intervals)
        if writer is None:
            return  # the IQ could be kept nowhere (the capture says so); the metrics stand
        if self.stream.split:
            # Part in the store, the rest in the spool: sync joins and completes them.
            spool.keep_stream_end(
                cap.capture_id, complete, str(self.reference) if self.reference else None, self.home
            )
            return
        try:
            marker = writer.finish(
                complete,
                {o.receiver.name: o.first_frame_utc for o in outcomes}
                if self.reference is self.start_utc
                else None,
                {o.receiver.name: o.recording.stream_problems for o in outcomes if o.recording},
            )
            stored = writer.store.open(cap.capture_id)
        except HeimdallError as exc:
            rec.fail("storing IQ", exc)
            return
        stored.attrs["parameters"] = cap.parameters
        cap.acquisition.dataset = stored
        self._timing(stored, marker)
        rec.set(percent=95.0, force=True)

    def _timing(self, stored: xr.Dataset, marker: dict[str, Any]) -> None:
        """Each outcome's timing, from its stored frames; a failed check makes it incomplete."""
        assert self.cap.acquisition is not None
        names = [str(n) for n in stored["receiver"].values]
        for o in self.cap.acquisition.outcomes:
            if o.receiver.name not in names:
                continue
            one = stored.sel(receiver=o.receiver.name)
            n = int(marker["frames"].get(o.receiver.name, 0))
            frames = {k: one[k].values[:n] for k in FRAME_VARS}
            _, timing = receiver_summary(
                frames,
                float(one["nominal_rate"]),
                self.reference,
                complete=o.status == "ok",
                arrival_utc=o.first_frame_utc if self.reference is self.start_utc else None,
                stream_problems=o.recording.stream_problems if o.recording else (),
            )
            o.recording = timing
            problem = timing.timing_summary()
            if problem and o.reason != "timing":
                message = (
                    f"{o.receiver.name}: timing: {problem}; samples kept, their GNSS times not used"
                )
                o.message = f"{o.message}; {message}" if o.message else message
                if o.status == "ok":
                    o.status, o.reason = "incomplete", "timing"
                log.warning("%s", o.message)

    def store_measurements(self, rows: pd.DataFrame) -> None:
        """Write measurement rows (retrying a briefly unreachable database), else spool them."""
        cap, rec = self.cap, self.rec
        if self.engine is not None and not rec.db_down:
            try:
                for attempt in _DB_RETRY.retrying(
                    lambda e: isinstance(e, DatabaseError) and e.retryable
                ):
                    with attempt:
                        cap.measurements_written += db.write_measurements(
                            self.engine, cap.capture_id, rows
                        )
                return
            except DatabaseError as exc:
                if not exc.retryable:
                    rec.fail("storing measurements", exc)
                    return
                rec.db_down = True
        try:
            spool.keep_measurements(cap.capture_id, rows, self.home)
        except StorageError as exc:
            rec.fail("storing measurements", exc)
            return
        note = (
            f"storing measurements: database {self.target} unreachable -- spooled locally; "
            "run heimdall-lab sync (with --database-url, for a database other than the "
            "embedded one)"
        )
        if note not in cap.warnings:
            rec.warn(note)

    def finish(self, create: dict[str, Any]) -> None:
        cap, rec = self.cap, self.rec
        if cap.acquisition is not None and cap.acquisition.cancelled:
            final = "cancelled"
        elif cap.errors:
            final = "failed"
        elif cap.acquisition is not None and len(cap.acquisition.ok) < len(
            cap.acquisition.outcomes
        ):
            final = "partial"
        else:
            final = "done"
        rec.set(final, 100.0 if final in ("done", "partial") else None, force=True)
        if rec.db_down:
            try:
                spool.keep_capture(
                    cap.capture_id,
                    create,
                    rec.row_update(),
                    self.chosen,
                    self.home,
                    database=self.target,
                )
            except StorageError as exc:
                # The returned Capture still holds everything; say what was not kept.
                cap.errors.append(f"spooling for the database: {exc}")
                cap.stage = "failed"


def _summary_metrics(intervals: pd.DataFrame) -> pd.DataFrame:
    """One row per receiver: its interval's metrics, or the median over its intervals."""
    if intervals.empty:
        return pd.DataFrame()
    if not intervals.index.duplicated().any():  # one interval each: its metrics as they are
        table = intervals.drop(columns="interval")
        table.attrs = {"unmeasured": {}, "intervals": dict.fromkeys(table.index, 1)}
        return table
    numeric = [c for c in intervals.select_dtypes(["number", "bool"]).columns if c != "interval"]
    grouped = intervals.groupby(level=0, sort=False)
    table = grouped[numeric].median()
    for column in intervals.columns.difference([*numeric, "interval"]):
        table[column] = grouped[column].first()
    table = table[[c for c in intervals.columns if c != "interval"]]
    table.index.name = intervals.index.name
    table.attrs["unmeasured"] = {}
    table.attrs["intervals"] = grouped.size().to_dict()
    return table
