"""One capture call: fetch, measure and store as it arrives; the one code path for all users.

:func:`capture` is what the notebooks, the ipywidgets form and the CLI call; :func:`sweep`
is the same path hopping through several frequencies on one connection per receiver (one
capture per dwell), which recording sessions (:mod:`heimdall_lab.session`) run. Where it
reads from and writes to is given to it: the receivers (from the database by name, or
:class:`~heimdall_lab.receivers.Receiver` objects, e.g. those of an emulator from
:func:`heimdall_lab.emulate.emulated`), an :class:`~heimdall_lab.store.IQStore` and a
database engine.

It records the capture in the database before anything connects, then streams: each
receiver's frames are cut into intervals (``interval_s``); each full interval is appended to
the IQ store (:class:`~heimdall_lab.store.stream.CaptureWriter`) and measured
(:func:`heimdall_lab.processing.interval_rows`: one measurement row per receiver per
interval) on a worker thread, so memory is bounded by receivers x interval whatever the
duration, and a running capture can be read from the store. The capture moves through the
stages ``connecting`` -> ``receiving`` -> ``storing`` (completing the store) -> ``done`` (or
``partial`` when some receivers failed, ``failed`` when a stage failed, ``cancelled`` on
Ctrl-C) with a percentage, and beats (``captures.heartbeat_at``) while it runs; a capture
whose process died is completed by :func:`heimdall_lab.spool.sync` as ``incomplete``. It
returns a :class:`Capture` holding the Dataset (read lazily from the store), the metrics
and every receiver's status. A stage that fails is recorded with its reason; what earlier
stages produced stays in the returned object and, where its own stage succeeded, in the
stores. With ``trigger`` (triggered recording) a dwell is measured but keeps IQ only around
detections, each a capture of its own.
"""

from __future__ import annotations

import itertools
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from sqlalchemy.engine import Engine

from heimdall_lab import db, gnss, spool
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
from heimdall_lab.kiwi.client import (
    RETUNE_KEEP_FRAMES,
    StreamSettings,
    recording_from_frames,
    retune_gap_s,
)
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
from heimdall_lab.values import NS_PER_S, to_utc_ns
from heimdall_lab.versions import __version__

log = logging.getLogger(__name__)

#: Share of the progress bar each stage ends at.
_STAGE_END = {"connecting": 5.0, "receiving": 80.0, "processing": 85.0, "storing": 99.0}
_DB_UPDATE_INTERVAL_S = 1.0
#: Stages a capture ends in.
_FINAL_STAGES = ("done", "partial", "failed", "cancelled")
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
        ``pending``, ``connecting``, ``receiving``, ``storing``, ``done``, ``partial``,
        ``failed`` or ``cancelled``; readable while the capture runs.
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
    events : list of dict
        Triggered recording: each detection (receiver, start and end UTC, statistic,
        threshold, false-alarm probability) and the capture that keeps its IQ.
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
    events: list[dict[str, Any]] = field(default_factory=list)

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
        update = {
            "status": cap.stage,
            "progress": round(cap.percent, 2),
            "error": note or None,
            "iq_url": cap.iq_url,
            "start_time": cap.start_time,
        }
        if "retune" in cap.parameters and cap.stage in _FINAL_STAGES:
            update["parameters"] = {"retune": cap.parameters["retune"]}
        return update

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
    session_id: str | None = None,
    session_step: int | None = None,
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
    session_id, session_step : str and int, optional
        The recording session and the step of its plan this capture records
        (:mod:`heimdall_lab.session`); a step recorded already is refused before anything
        connects.

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
    (cap,) = sweep(
        [(frequency_hz, duration_s)],
        capture_ids=[capture_id],
        first_step=session_step,
        receivers=receivers,
        store=store,
        engine=engine,
        database_url=database_url,
        iq_url=iq_url,
        settings=settings,
        deadline_s=deadline_s,
        retries=retries,
        gps_reference=gps_reference,
        on_progress=on_progress,
        progress=progress,
        home=home,
        metadata=metadata,
        interval_s=interval_s,
        session_id=session_id,
    )
    return cap


def sweep(
    hops: Sequence[tuple[float, float]],
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
    capture_ids: Sequence[str | None] | None = None,
    home: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    interval_s: float = DEFAULT_INTERVAL_S,
    session_id: str | None = None,
    first_step: int | None = None,
    trigger: Mapping[str, Any] | None = None,
) -> list[Capture]:
    """Hop through frequencies on one connection per receiver: one capture per dwell.

    Each receiver is connected once and retuned on the same connection
    (:class:`~heimdall_lab.kiwi.KiwiClient` ``hops``); each dwell is a capture of its own
    (its frequency, its IQ store, its measurement rows), exactly as :func:`capture` makes
    one, with the sweep in its parameters. The GNSS time of each dwell's first frame is
    each receiver's ``start_time`` in its store, and the gap at each retune is measured
    from the GNSS times and kept in the capture's parameters (``retune``).

    Parameters
    ----------
    hops : sequence of (float, float)
        Frequency (Hz) and dwell (s) of each step, in order.
    capture_ids : sequence of str, optional
        An id per hop; new ones by default.
    first_step : int, optional
        The session step of the first hop (the others follow).
    trigger : mapping, optional
        Triggered recording: the :class:`~heimdall_lab.trigger.Trigger` options (``pfa``,
        ``bandwidth_hz``, ``center_hz``, ``pre_s``, ``post_s``, ``passband``). Each dwell's
        capture then measures every interval but stores no IQ; each detection of each
        receiver becomes a capture of its own (one receiver, its pre-trigger and tail, in
        the IQ store), listed in :attr:`Capture.events` of its dwell and, for a session,
        in ``session_events``.
    receivers, store, engine, database_url, iq_url, settings, deadline_s, retries, \
gps_reference, on_progress, progress, home, metadata, interval_s, session_id
        As for :func:`capture` (``deadline_s`` covers the whole sweep).

    Returns
    -------
    list of Capture
        One per hop, in order.

    Raises
    ------
    ValidationError
        A bad hop list or parameter, before anything connects.
    KeyboardInterrupt
        As for :func:`capture`.
    """
    if not isinstance(hops, Sequence) or isinstance(hops, str) or not hops:
        raise ValidationError("hops must be a non-empty list of (frequency_hz, dwell_s)")
    # The one path of capture() (one hop) and of a sweep (several).
    hops = [(float(f), float(d)) for f, d in hops]
    capture_ids = list(capture_ids) if capture_ids is not None else [None] * len(hops)
    for f, d in hops:
        validate_capture_request(f, d)
    if len(capture_ids) != len(hops):
        raise ValidationError(f"{len(capture_ids)} capture ids for {len(hops)} hops")
    _check_interval(interval_s)
    extra = _check_metadata(metadata)
    ids = [check_capture_id(c or new_capture_id()) for c in capture_ids]
    if len(set(ids)) != len(ids):
        raise ValidationError(f"capture ids repeat: {ids}")
    if first_step is not None and (session_id is None or first_step < 0):
        raise ValidationError("a session step needs its session_id, and is 0 or more")
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
        for f, d in hops:
            validate_request(chosen, f, d)
        bars = TqdmProgress([r.name for r in chosen]) if progress else None
        runs = []
        for i, ((f, d), capture_id) in enumerate(zip(hops, ids, strict=True)):
            parameters: dict[str, Any] = {
                "frequency_hz": float(f),
                "duration_s": float(d),
                "receivers": [r.name for r in chosen],
                **extra,
                "deadline_s": deadline_s,
                "retries": retries,
                "interval_s": float(interval_s),
                "settings": asdict(settings or StreamSettings()),
                "software_version": __version__,
            }
            if len(hops) > 1:
                parameters["sweep"] = {"hops": [list(h) for h in hops], "index": i}
            cap = Capture(
                capture_id,
                float(f),
                float(d),
                parameters,
                database_url=(
                    mask_url(engine.url) if engine is not None else f"{target} (unreachable)"
                ),
            )
            create: dict[str, Any] = {
                "frequency_hz": float(f),
                "duration_s": float(d),
                "parameters": parameters,
            }
            step = None if first_step is None else first_step + i
            rec = _Recorder(cap, engine, on_progress)
            if engine is not None and not any(r.rec.db_down for r in runs):
                try:
                    if i == 0:
                        _register(engine, chosen)
                    db.create_capture(
                        engine,
                        capture_id=capture_id,
                        status="pending",
                        session_id=session_id,
                        session_step=step,
                        **create,
                    )
                except DatabaseError as exc:
                    if not exc.retryable:
                        raise
                    rec.db_down = True
            elif engine is None or runs:
                rec.db_down = engine is None or any(r.rec.db_down for r in runs)
            if session_id is not None:
                create.update(session_id=session_id, session_step=step)
            runs.append(_Run(cap, rec, chosen, iq_store, engine, home, target, interval_s))
            runs[-1].create = create
            if trigger is not None:
                parameters["trigger"] = dict(trigger)
                runs[-1].store_iq = False
        for run in runs:
            run.rec.start_heartbeat()
        try:
            events = _Events(runs, trigger, session_id) if trigger is not None else None
            try:
                _acquire_hops(runs, hops, settings, deadline_s, retries, reference, bars, events)
            finally:
                if events is not None:
                    events.close()
                    if events.failed is not None:
                        for run in runs:
                            run.rec.fail("triggered recording", events.failed)
            for run in runs:
                acquisition = run.cap.acquisition
                if acquisition is not None and any(o.frames for o in acquisition.outcomes):
                    run.finish_store()
            if len(runs) > 1:
                _retunes(runs)
            for run in runs:
                run.finish(run.create)
        except KeyboardInterrupt:
            for run in runs:  # interrupted after receiving: say so, then go
                run.rec.set("cancelled", force=True)
            raise
        finally:
            for run in runs:
                run.rec.stop_heartbeat()
            if bars is not None:
                bars.close()
        if any(run.cap.stage == "cancelled" for run in runs):
            names = ", ".join(run.cap.capture_id for run in runs)
            raise KeyboardInterrupt(
                f"capture {names} cancelled; what was received is kept as incomplete"
            )
        return [run.cap for run in runs]
    finally:
        if own_engine and engine is not None:
            engine.dispose()


def _acquire_hops(
    runs: list[_Run],
    hops: list[tuple[float, float]],
    settings: StreamSettings | None,
    deadline_s: float | None,
    retries: int | None,
    gps_reference: np.datetime64 | None,
    bars: TqdmProgress | None,
    events: _Events | None = None,
) -> None:
    """One acquisition for every hop: each receiver's frames go to its hop's capture."""
    for i, run in enumerate(runs):
        run.open(gps_reference, after_s=sum(d for _, d in hops[:i]))
    chosen = runs[0].chosen
    router = _Router(runs, hops, bars, events)
    kwargs: dict[str, Any] = {
        "settings": settings,
        "deadline_s": deadline_s,
        "retries": retries,
        "on_progress": router.progress,
        "capture_id": runs[0].cap.capture_id,
        "gps_reference": gps_reference,
        "sinks": {r.name: router.sink(r.name) for r in chosen},
    }
    if len(hops) > 1:
        kwargs["hops"] = hops
    total = sum(d for _, d in hops)
    acquisition: Acquisition | None = None
    error: HeimdallError | None = None
    try:
        try:
            acquisition = acquire(chosen, hops[0][0], total, **kwargs)
        finally:
            for i, run in enumerate(runs):
                ended = _hop_outcomes(acquisition, i, router) if acquisition else ()
                run.stream.close(ended)
    except HeimdallError as exc:
        error = exc
    for i, run in enumerate(runs):
        if len(runs) > 1 and router.arrived[i]:  # a dwell starts with its first frame
            first = min(router.arrived[i].values()).astype("datetime64[us]").item()
            run.cap.start_time = first.replace(tzinfo=UTC)
        share = None
        if acquisition is not None:
            share = replace(
                acquisition,
                capture_id=run.cap.capture_id,
                frequency_hz=run.cap.frequency_hz,
                duration_s=run.cap.duration_s,
                outcomes=_hop_outcomes(acquisition, i, router),
            )
        run.received(share, error)


def _hop_outcomes(acquisition: Acquisition, index: int, router: _Router) -> list[ReceiverOutcome]:
    """Each receiver's outcome for one hop: the stream's own when there is one hop."""
    if len(router.runs) == 1:
        return acquisition.outcomes
    out = []
    for o in acquisition.outcomes:
        o = replace(o, first_frame_utc=router.arrived[index].get(o.receiver.name))
        done = {h.index: h for h in o.hops}
        h = done.get(index)
        if h is None:
            why = o.message or "the stream ended before this hop"
            out.append(replace(o, status="failed", recording=None, frames=0, message=why, hops=()))
            continue
        frames = h.samples // FRAME_SAMPLES
        if h.complete:
            out.append(
                replace(
                    o,
                    status="ok",
                    reason="",
                    message="",
                    frames=frames,
                    expected_samples=h.expected_samples,
                    hops=(h,),
                )
            )
        else:
            out.append(
                replace(
                    o,
                    status="incomplete",
                    frames=frames,
                    expected_samples=h.expected_samples,
                    hops=(h,),
                )
            )
    return out


def _retunes(runs: list[_Run]) -> None:
    """Each hop's retune gap per receiver, from the GNSS times of the frames either side.

    The gap is the time from the end of the last frame of the dwell before (its GNSS time
    plus one frame at its fitted rate) to the GNSS time of this dwell's first frame: 0 when
    no sample time was lost. With it, the frames dropped after the retune and the frames
    the dwell before kept after it (still at its frequency: ``frames_before``, the retune's
    latency in frames). It goes in the capture's parameters (``retune``).
    """
    for before, run in itertools.pairwise(runs):
        if run.cap.acquisition is None or before.cap.acquisition is None:
            continue
        ended = {o.receiver.name: o.hops[0] for o in before.cap.acquisition.outcomes if o.hops}
        ds = before.cap.dataset
        rates = {}
        if ds is not None and "sample_rate" in ds.coords:
            names, values = ds["receiver"].values.tolist(), ds["sample_rate"].values.tolist()
            rates = dict(zip(names, values, strict=True))
        table = {}
        for o in run.cap.acquisition.outcomes:
            h, prev = (o.hops[0] if o.hops else None), ended.get(o.receiver.name)
            if h is None or prev is None or h.first_time is None or prev.last_time is None:
                continue
            rate = float(rates.get(o.receiver.name, before.nominal_rate))
            table[o.receiver.name] = {
                "gap_s": retune_gap_s(prev.last_time, h.first_time, rate),
                "dropped_frames": int(h.dropped_frames),
                "frames_before": int(prev.kept_after_retune),
            }
        run.cap.parameters["retune"] = table


class _Router:
    """Hands each receiver's frames to its current hop's capture; progress per hop."""

    def __init__(
        self,
        runs: list[_Run],
        hops: list[tuple[float, float]],
        bars: TqdmProgress | None,
        events: _Events | None = None,
    ) -> None:
        self.runs, self.bars, self.events = runs, bars, events
        self.current: dict[str, int] = {}
        # This computer's clock at each receiver's first frame of each hop (its clock check).
        self.arrived: list[dict[str, np.datetime64]] = [{} for _ in hops]
        ends = np.cumsum([math.ceil(d * NOMINAL_RATE) for _, d in hops])
        self.bounds = list(zip([0, *ends[:-1].tolist()], ends.tolist(), strict=True))

    def sink(self, name: str) -> Callable[[IqFrame, int, float], None]:
        """The frame sink of one receiver."""
        sinks = [run.stream.sink(name) for run in self.runs]

        def on_frame(frame: IqFrame, hop: int, rate: float) -> None:
            last = self.current.setdefault(name, hop)
            if hop != last:
                self.runs[last].stream.end_receiver(name)  # its dwell is over
                self.current[name] = hop
            if name not in self.arrived[hop]:
                self.arrived[hop][name] = np.datetime64(time.time_ns(), "ns")
            sinks[hop](frame, hop, rate)
            if self.events is not None:
                self.events.put(name, hop, frame, rate)

        return on_frame

    def progress(self, p: Progress) -> None:
        """Show the stream's report on the bars, and each hop's part of it on its capture."""
        if self.bars is not None:
            self.bars(p)
        if len(self.runs) == 1:
            self.runs[0].rec.receiver(p)
            return
        received = p.received
        for run, (start, end) in zip(self.runs, self.bounds, strict=True):
            if received < start and p.state == "receiving":
                continue
            share = max(0, min(received, end) - start)
            state = p.state if received < end or p.state != "receiving" else "done"
            run.rec.receiver(replace(p, state=state, received=share, expected=end - start))


@dataclass(frozen=True)
class _Job:
    """One receiver's interval, handed from the acquisition to the writer."""

    name: str
    chunk: int
    frames: list[IqFrame]
    arrived: np.datetime64
    rate: float
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
        self.rates: dict[str, float] = {}  # the rate each receiver announced
        self.chunk_no = dict.fromkeys(self.buffers, 0)
        self.jobs: queue.Queue[_Job | None] = queue.Queue(maxsize=2 * len(run.chosen) + 2)
        self.metrics = _Intervals()
        self.failed: BaseException | None = None
        self.receiver_failed: dict[str, BaseException] = {}
        self.spooled = False
        self.split = False
        self._thread = threading.Thread(target=self._work, name="heimdall-stream", daemon=True)
        self._thread.start()

    def sink(self, name: str) -> Callable[[IqFrame, int, float], None]:
        """The frame sink of one receiver."""

        def on_frame(frame: IqFrame, hop: int, rate: float) -> None:
            buffer = self.buffers[name]
            if not buffer:
                self.arrived[name] = time.time_ns()
                self.rates[name] = rate
            buffer.append(frame)
            if len(buffer) >= self.layout.frames_per_chunk:
                self._submit(name)

        return on_frame

    def _submit(self, name: str, outcome: ReceiverOutcome | None = None) -> None:
        frames, self.buffers[name] = self.buffers[name], []
        if frames:
            arrived = np.datetime64(self.arrived[name], "ns")
            rate = self.rates.get(name, NOMINAL_RATE)
            self.jobs.put(_Job(name, self.chunk_no[name], frames, arrived, rate, outcome))
            self.chunk_no[name] += 1

    def end_receiver(self, name: str) -> None:
        """A receiver's part is over (its dwell ended): write its last, partial, interval."""
        self._submit(name)

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
            if self.failed is not None or job.name in self.receiver_failed:
                continue  # failed for good: what arrives is counted, not written
            try:
                self._write(job)
            except StorageError as exc:  # the store and the spool both: every receiver
                log.error("capture %s: writing failed: %s", self.run.cap.capture_id, exc)
                self.failed = exc
            except Exception as exc:  # this receiver's data: the others go on
                log.error("capture %s: %s not written: %s", self.run.cap.capture_id, job.name, exc)
                self.receiver_failed[job.name] = exc

    def _store(self, index: int, chunk: int, rec: Recording, rate: float) -> None:
        """Append a chunk; when the store fails, go on in the spool (else measure only)."""
        assert self.writer is not None
        run, cap = self.run, self.run.cap
        try:
            self.writer.set_rate(index, rate)
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
        self.writer.set_rate(index, rate)
        self.writer.write_chunk(index, chunk, rec)

    def _write(self, job: _Job) -> None:
        run = self.run
        cap = run.cap
        index, chunk = self.index[job.name], job.chunk
        rec = recording_from_frames(job.frames, job.rate)
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
            self._store(index, chunk, rec, job.rate)
        start = interval_start(self.attrs, chunk, self.layout.frames_per_chunk)
        whole = job.outcome is None or job.outcome.status == "ok"
        one = interval_dataset(
            run.chosen[index], rec, self.attrs, chunk, run.reference, complete=whole
        )
        metrics, rows = interval_rows(
            one, interval=chunk, interval_start_utc=start, iq_url=cap.iq_url, status=status
        )
        if not rows.empty:
            run.store_measurements(rows)
            self.metrics.add(job.name, chunk, metrics)


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
        self.store_iq = True
        self.create: dict[str, Any] = {}
        self.nominal_rate = NOMINAL_RATE
        self.start_utc = np.datetime64("NaT", "ns")
        self.reference: np.datetime64 | None = None

    def open(self, gps_reference: np.datetime64 | None, after_s: float = 0.0) -> None:
        """Record the start, and create the capture's store (or spool) to stream into.

        ``after_s``: seconds from now the capture is due to begin (a later dwell of a
        sweep): its start, the time of any interval whose GNSS time is unusable.
        """
        cap, rec = self.cap, self.rec
        cap.start_time = datetime.now(UTC) + timedelta(seconds=after_s)
        self.start_utc = np.datetime64(cap.start_time.replace(tzinfo=None), "ns")
        # GPS weeks resolve against the replayed day, else against the capture's own start
        # (so a capture completed by sync days later reads the same times).
        self.reference = gps_reference if gps_reference is not None else self.start_utc
        rec.set("connecting", 0.0, force=True)
        # A dwell that ends in a retune keeps the frames still at its frequency.
        extra = RETUNE_KEEP_FRAMES if "sweep" in cap.parameters else 0
        layout = StreamLayout.for_duration(cap.duration_s, self.interval_s, extra_frames=extra)
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
        if not self.store_iq:  # measured only (a triggered dwell: its events keep the IQ)
            self.stream = _Stream(self, None, layout, writer.attrs)
            rec.set(force=True)
            return
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

    def received(self, acquisition: Acquisition | None, error: HeimdallError | None) -> None:
        """Take this capture's share of the acquisition (its hop), once its writes are done."""
        cap, rec = self.cap, self.rec
        cap.acquisition = acquisition
        if error is not None:
            rec.fail("receiving", error)
            return
        assert acquisition is not None
        if self.stream.failed is not None:
            rec.fail("storing IQ", self.stream.failed)
        for name, exc in self.stream.receiver_failed.items():
            rec.fail(f"storing {name}", exc)
        served = [o for o in acquisition.outcomes if o.frames]
        if not served and not acquisition.cancelled:
            reasons = "; ".join(o.message for o in acquisition.outcomes)
            rec.fail("receiving", HeimdallError(f"no receiver delivered samples ({reasons})"))

    def finish_store(self) -> None:
        """Complete the stored capture, then open it (lazily) as the capture's Dataset."""
        cap, rec = self.cap, self.rec
        assert cap.acquisition is not None
        rec.set("storing", _STAGE_END["processing"])
        outcomes = cap.acquisition.outcomes
        writer = self.stream.writer
        complete = {o.receiver.name: o.status == "ok" for o in outcomes}
        cap.intervals = self.stream.metrics.frame()
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
        # Read once: every receiver's per-frame variables (small), not once per receiver.
        table = stored[list(FRAME_VARS)].load()
        rates = stored["nominal_rate"].values
        for o in self.cap.acquisition.outcomes:
            if o.receiver.name not in names:
                continue
            i = names.index(o.receiver.name)
            n = int(marker["frames"].get(o.receiver.name, 0))
            frames = {k: table[k].values[i, :n] for k in FRAME_VARS}
            _, timing = receiver_summary(
                frames,
                float(rates[i]),
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


class _Events:
    """Triggered recording: each receiver's detector, and a capture per detection.

    Frames reach it from the acquisition (:meth:`put`) and are handled on a thread of its
    own: the detector (:class:`~heimdall_lab.trigger.Trigger`, one per receiver and dwell)
    says which frames to keep; the first kept frame of an event opens a capture of that
    receiver (its store created, its row linked to the session), its frames stream into it
    as any capture's do, and the event's end completes it and records the event.
    """

    def __init__(
        self, runs: list[_Run], options: Mapping[str, Any], session_id: str | None
    ) -> None:
        self.runs, self.options, self.session_id = runs, dict(options), session_id
        self.jobs: queue.Queue[tuple[str, int, IqFrame, float] | None] = queue.Queue(maxsize=256)
        self.triggers: dict[tuple[str, int], Any] = {}
        self.count: dict[tuple[str, int], int] = {}
        self.recent: dict[tuple[str, int], dict[int, IqFrame]] = {}
        self.open: dict[tuple[str, int, int], _Run] = {}
        self.rates: dict[tuple[str, int], float] = {}
        self.anchor: dict[tuple[str, int], tuple[int, int]] = {}  # (frame, GNSS time of week)
        self.first_arrival: dict[tuple[str, int], np.datetime64] = {}
        self.failed: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="heimdall-events", daemon=True)
        self._thread.start()

    def put(self, name: str, hop: int, frame: IqFrame, rate: float) -> None:
        """A receiver's frame of a dwell, in order, and the rate it announced."""
        self.jobs.put((name, hop, frame, rate))

    def close(self) -> None:
        """End every open event (the stream has ended) and wait for its capture."""
        self.jobs.put(None)
        self._thread.join()

    def _work(self) -> None:
        while True:
            job = self.jobs.get()
            try:
                if job is None:
                    for key, trig in self.triggers.items():
                        self._handle(key, trig.flush())
                    return
                if self.failed is None:
                    self._frame(*job)
            except BaseException as exc:  # said by the dwell's capture, never lost silently
                log.error("triggered recording failed: %s", exc)
                self.failed = exc
                if job is None:
                    return

    def _frame(self, name: str, hop: int, frame: IqFrame, rate: float) -> None:
        from heimdall_lab.trigger import Trigger

        key = (name, hop)
        if key not in self.triggers:
            allowed = ("pfa", "bandwidth_hz", "center_hz", "pre_s", "post_s", "passband")
            options = {k: v for k, v in self.options.items() if k in allowed}
            if "passband" in options:
                options["passband"] = tuple(options["passband"])
            self.triggers[key] = Trigger(rate, **options)
            self.rates[key] = rate
            self.first_arrival[key] = np.datetime64(time.time_ns(), "ns")
            self.count[key], self.recent[key] = 0, {}
        index = self.count[key]
        self.count[key] += 1
        recent = self.recent[key]
        recent[index] = frame
        keep = self.triggers[key].buffer_capacity + 8
        recent.pop(index - keep, None)
        # Event times count frames from the first frame whose GNSS time is trusted (a
        # stream's first frames carry a stale one; a retuned stream's do not).
        stale = gnss.STALE_FRAMES if hop == 0 else 0
        if (
            key not in self.anchor
            and index >= stale
            and bool(gnss.has_fix(int(frame.last_gps_solution)))
        ):
            self.anchor[key] = (index, int(frame.gpssec) * NS_PER_S + int(frame.gpsnsec))
        self._handle(key, self.triggers[key].feed(frame.samples, index))

    def _handle(self, key: tuple[str, int], out: Any) -> None:
        name, hop = key
        for kept in out.frames:
            run = self.open.get((name, hop, kept.event))
            if run is None:
                run = self._open_event(name, hop, kept.event)
            iq = self.recent[key].get(kept.index)
            if iq is not None:
                run.stream.sink(name)(iq, hop, self.rates[key])
        for event in out.events:
            self._close_event(name, hop, event)

    def _open_event(self, name: str, hop: int, event: int) -> _Run:
        dwell = self.runs[hop]
        cap0 = dwell.cap
        receiver = next(r for r in dwell.chosen if r.name == name)
        longest = cap0.duration_s + float(self.options.get("pre_s", 1.0))
        longest += float(self.options.get("post_s", 1.0)) + 1.0
        parameters = {
            **{k: v for k, v in cap0.parameters.items() if k not in ("sweep", "retune")},
            "receivers": [name],
            "duration_s": longest,
            "event": {"of_capture": cap0.capture_id, "receiver": name, "number": event},
        }
        cap = Capture(new_capture_id(), cap0.frequency_hz, longest, parameters)
        rec = _Recorder(cap, dwell.engine, None)
        rec.db_down = dwell.rec.db_down
        create = {"frequency_hz": cap.frequency_hz, "duration_s": longest, "parameters": parameters}
        if dwell.engine is not None and not rec.db_down:
            try:
                db.create_capture(
                    dwell.engine,
                    capture_id=cap.capture_id,
                    status="pending",
                    session_id=self.session_id,
                    **create,
                )
            except DatabaseError as exc:
                if not exc.retryable:
                    raise
                rec.db_down = True
        run = _Run(
            cap,
            rec,
            [receiver],
            dwell.store,
            dwell.engine,
            dwell.home,
            dwell.target,
            dwell.interval_s,
        )
        run.create = create
        run.open(dwell.reference if dwell.reference is not dwell.start_utc else None)
        run.rec.set("receiving", force=True)
        self.open[(name, hop, event)] = run
        log.info(
            "%s: detection %d at %.0f Hz: recording %s",
            name,
            event,
            cap.frequency_hz,
            cap.capture_id,
        )
        return run

    def _frame_utc(self, name: str, hop: int, index: float) -> pd.Timestamp:
        """UTC time of a (fractional) frame of a dwell, counted from its first trusted GNSS time.

        Without any (no fix), from this computer's clock at the dwell's first frame.
        """
        run = self.runs[hop]
        step_ns = FRAME_SAMPLES / self.rates[(name, hop)] * NS_PER_S
        anchor = self.anchor.get((name, hop))
        if anchor is not None:
            t = anchor[1] + round((index - anchor[0]) * step_ns)
            return _tow_utc(t % (gnss.WEEK_SECONDS * NS_PER_S), run.reference)
        first = self.first_arrival.get((name, hop), run.start_utc)
        return pd.Timestamp(first + np.timedelta64(round(index * step_ns), "ns")).tz_localize("UTC")

    def _close_event(self, name: str, hop: int, event: Any) -> None:
        run = self.open.pop((name, hop, event.event), None)
        if run is None:
            return
        run.stream.close([])
        frames = sum(run.stream.chunk_no.values())  # chunks; frames come from the store
        outcome = ReceiverOutcome(run.chosen[0], "ok", None, frames=max(frames, 1))
        acquisition = Acquisition(
            run.cap.capture_id,
            run.cap.frequency_hz,
            run.cap.duration_s,
            [outcome],
            xr.Dataset(),
        )
        run.received(acquisition, None)
        run.finish_store()
        run.finish(run.create)
        start = self._frame_utc(name, hop, event.onset_frame)  # where the signal began
        end = self._frame_utc(name, hop, event.end_frame + 1)
        record = {
            "capture_id": run.cap.capture_id,
            "receiver": name,
            "frequency_hz": run.cap.frequency_hz,
            "start_utc": start,
            "end_utc": end,
            "statistic": float(event.peak_statistic),
            "threshold": float(event.threshold),
            "pfa": float(event.pfa),
            "metadata": {
                "dwell_capture": self.runs[hop].cap.capture_id,
                "start_frame": int(event.start_frame),
                "onset_frame": float(event.onset_frame),
                "end_frame": int(event.end_frame),
                "peak_snr_db": float(event.peak_snr_db),
            },
        }
        self.runs[hop].cap.events.append(record)
        if self.session_id is not None and run.engine is not None and not run.rec.db_down:
            try:
                db.write_events(run.engine, [{**record, "session_id": self.session_id}])
            except DatabaseError as exc:
                log.warning("%s: event not recorded: %s", name, exc)


def _tow_utc(t_ns: int, reference: np.datetime64 | None) -> pd.Timestamp:
    """A GNSS time of week (ns) as UTC, in the week of the reference."""
    utc = gnss.tow_to_utc(t_ns // NS_PER_S, t_ns % NS_PER_S, reference)
    return pd.Timestamp(utc).tz_localize("UTC")


class _Intervals:
    """Every interval's metrics, kept compact (a row of floats each) until the capture ends.

    A one-row DataFrame per interval would cost kilobytes each: an hour of 50 receivers in
    10-s intervals is 18,000 of them.
    """

    def __init__(self) -> None:
        self.columns: list[str] = []
        self.dtypes: dict[str, Any] = {}
        self.keys: list[tuple[str, int]] = []
        self.values: list[np.ndarray] = []

    def add(self, name: str, interval: int, metrics: pd.DataFrame) -> None:
        """Keep one receiver's metrics of one interval (a one-row :func:`capture_metrics`)."""
        if metrics.empty:
            return
        if not self.columns:
            self.columns = [str(c) for c in metrics.columns]
            self.dtypes = {str(c): metrics[c].dtype for c in metrics.columns}
        row = metrics.iloc[0].reindex(self.columns)
        self.keys.append((name, interval))
        self.values.append(np.asarray(row.to_numpy(dtype=np.float64, na_value=np.nan)))

    def frame(self) -> pd.DataFrame:
        """All of them, indexed by receiver, with an ``interval`` column."""
        if not self.keys:
            return pd.DataFrame()
        table = pd.DataFrame(np.vstack(self.values), columns=self.columns)
        for column, dtype in self.dtypes.items():
            if np.dtype(dtype).kind == "b":
                table[column] = table[column].astype(bool)
        table.index = pd.Index([k[0] for k in self.keys], name="receiver")
        table["interval"] = [k[1] for k in self.keys]
        return table


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
