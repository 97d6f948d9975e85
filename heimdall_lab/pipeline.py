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
    TqdmProgress,
    acquire,
    validate_request,
)
from heimdall_lab.kiwi.client import StreamSettings
from heimdall_lab.processing import capture_metrics, measurement_rows
from heimdall_lab.receivers import DEFAULT_RECEIVERS, Receiver, validate_capture_request
from heimdall_lab.retry import RetryPolicy
from heimdall_lab.store import IQStore
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
    "settings",
    "software_version",
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
        run = _Run(cap, rec, chosen, iq_store, engine, home, target)
        rec.start_heartbeat()
        try:
            run.acquire(settings, deadline_s, retries, reference)
            if cap.acquisition is not None and cap.dataset.sizes["receiver"]:
                run.process_and_store()
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
    ) -> None:
        self.cap, self.rec, self.chosen = cap, rec, chosen
        self.store, self.engine, self.home, self.target = store, engine, home, target
        self.rows: pd.DataFrame | None = None

    def acquire(
        self,
        settings: StreamSettings | None,
        deadline_s: float | None,
        retries: int | None,
        gps_reference: np.datetime64 | None,
    ) -> None:
        cap, rec = self.cap, self.rec
        cap.start_time = datetime.now(UTC)
        rec.set("connecting", 0.0, force=True)
        kwargs: dict[str, Any] = {
            "settings": settings,
            "deadline_s": deadline_s,
            "retries": retries,
            "on_progress": rec.receiver,
            "capture_id": cap.capture_id,
            "gps_reference": gps_reference,
        }
        try:
            cap.acquisition = acquire(self.chosen, cap.frequency_hz, cap.duration_s, **kwargs)
        except HeimdallError as exc:
            rec.fail("receiving", exc)
            return
        ds = cap.acquisition.dataset
        ds.attrs["parameters"] = cap.parameters
        if ds.sizes["receiver"] == 0 and not cap.acquisition.cancelled:
            reasons = "; ".join(o.message for o in cap.acquisition.outcomes)
            rec.fail("receiving", HeimdallError(f"no receiver delivered samples ({reasons})"))

    def process_and_store(self) -> None:
        cap, rec = self.cap, self.rec
        assert cap.acquisition is not None
        ds = cap.acquisition.dataset
        rec.set("processing", _STAGE_END["receiving"])
        try:
            cap.metrics = capture_metrics(ds)
        except HeimdallError as exc:
            rec.fail("processing", exc)
        for o in cap.acquisition.outcomes:
            reason = cap.metrics.attrs.get("unmeasured", {}).get(o.receiver.name)
            if reason:
                o.message = f"{o.message}; not measured: {reason}".lstrip("; ")
                log.warning("%s: not measured: %s", o.receiver.name, reason)
        rec.set("storing", _STAGE_END["processing"])
        self._store_iq(ds)
        if not cap.metrics.empty:
            self.rows = measurement_rows(
                cap.metrics, ds, iq_url=cap.iq_url, status=cap.acquisition.status()
            )
            self._store_measurements()

    def _store_iq(self, ds: xr.Dataset) -> None:
        cap, rec = self.cap, self.rec

        def progress(done: int, total: int) -> None:
            rec.set(percent=_STAGE_END["processing"] + 10.0 * done / max(total, 1))

        try:
            cap.iq_url = self.store.write(ds, capture_id=cap.capture_id, on_progress=progress).url
        except StorageError as exc:
            # Keep the IQ on local disk and say so; `heimdall-lab sync` uploads it later.
            try:
                cap.iq_url = spool.keep_iq(ds, cap.capture_id, self.store.url, self.home)
            except HeimdallError as local_exc:
                rec.fail("storing IQ", HeimdallError(f"{exc}; and locally: {local_exc}"))
                return
            rec.warn(
                f"storing IQ: {exc} -- kept locally at {cap.iq_url}, pending upload to "
                f"{self.store.url}; run sync (heimdall-lab sync)"
            )
        rec.set(percent=95.0, force=True)

    def _store_measurements(self) -> None:
        cap, rec = self.cap, self.rec
        assert self.rows is not None
        if self.engine is not None and not rec.db_down:
            try:
                for attempt in _DB_RETRY.retrying(
                    lambda e: isinstance(e, DatabaseError) and e.retryable
                ):
                    with attempt:
                        cap.measurements_written += db.write_measurements(
                            self.engine, cap.capture_id, self.rows
                        )
                return
            except DatabaseError as exc:
                if not exc.retryable:
                    rec.fail("storing measurements", exc)
                    return
                rec.db_down = True
        try:
            spool.keep_measurements(cap.capture_id, self.rows, self.home)
        except StorageError as exc:
            rec.fail("storing measurements", exc)
            return
        rec.warn(
            f"storing measurements: database {self.target} unreachable -- spooled locally; "
            "run heimdall-lab sync (with --database-url, for a database other than the "
            "embedded one)"
        )

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
                spooled = spool.spool_root(self.home) / cap.capture_id / "measurements.json"
                if self.rows is not None and not spooled.exists():
                    spool.keep_measurements(cap.capture_id, self.rows, self.home)
            except StorageError as exc:
                # The returned Capture still holds everything; say what was not kept.
                cap.errors.append(f"spooling for the database: {exc}")
                cap.stage = "failed"
