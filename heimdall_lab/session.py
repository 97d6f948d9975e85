"""Recording sessions: a plan of repeated, frequency-hopping captures run over time.

A session is a :class:`SessionPlan` — receivers (by name, or a selection rule), the
frequencies to visit with a dwell each, how often a sweep through them starts, and how many
sweeps (or until when) — kept in the ``sessions`` table. Its steps are numbered sweep by
sweep, frequency by frequency (step ``j * len(frequencies) + i``); each step is one capture
linked to the session (``captures.session_id``, ``session_step``). A sweep connects once to
each receiver and retunes on that connection (:func:`heimdall_lab.pipeline.sweep`), and every
capture streams to the IQ store interval by interval.

The database keeps at most one capture per step, so a session stopped (``heimdall-lab session
stop``, :func:`stop`), killed or interrupted resumes (:func:`resume`) with the first step it
has no capture of: no step is recorded twice, and what a step's interrupted capture kept
stays with it (a gap is its status: ``cancelled``, ``incomplete``, ``failed``). A receiver
whose time limit ended its stream is left alone until its host allows it again (the guest's
cool-down, :mod:`heimdall_lab.kiwi.guest`); its steps in between say so.

In ``triggered`` mode each step measures every interval (measurement rows, no IQ) and keeps IQ
only around detections: each event of each receiver is a capture of its own, with its
pre-trigger and tail, and a row in ``session_events`` (see :mod:`heimdall_lab.trigger`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import socket
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from sqlalchemy.engine import Engine

from heimdall_lab import db, directory, planning
from heimdall_lab.emulate.fleet import emulated_receivers
from heimdall_lab.emulate.scenario import Scenario
from heimdall_lab.emulate.server import emulated
from heimdall_lab.errors import DatabaseError, HeimdallError, ValidationError
from heimdall_lab.ids import check_capture_id, new_capture_id
from heimdall_lab.kiwi.client import StreamSettings
from heimdall_lab.pipeline import DEFAULT_INTERVAL_S, Capture, sweep
from heimdall_lab.receivers import Receiver, validate_capture_request
from heimdall_lab.store import IQStore
from heimdall_lab.trigger import DEFAULT_PFA
from heimdall_lab.values import positive, to_utc_ns

log = logging.getLogger(__name__)

#: Modes of a session.
MODES = ("continuous", "triggered")
#: Seconds between a running session's heartbeats (and its checks for a stop request).
BEAT_S = 2.0


@dataclass(frozen=True)
class TriggerPlan:
    """How a triggered session detects (see :class:`heimdall_lab.trigger.Trigger`).

    Attributes
    ----------
    pfa : float
        False-alarm probability per 512-sample block.
    bandwidth_hz, center_hz : float
        The detection band, relative to the tuned frequency.
    pre_s, post_s : float
        Seconds kept before a detection and after the last one.
    passband : (float, float)
        The receiver's passband in Hz (where the noise is estimated).
    """

    pfa: float = DEFAULT_PFA
    bandwidth_hz: float = 400.0
    center_hz: float = 0.0
    pre_s: float = 1.0
    post_s: float = 1.0
    passband: tuple[float, float] = (-5000.0, 5000.0)


@dataclass(frozen=True)
class SessionPlan:
    """What a session records.

    Attributes
    ----------
    frequencies : tuple of float
        Frequencies in Hz, visited in this order in each sweep.
    dwell_s : float
        Seconds at each frequency per sweep.
    sweeps : int or None
        Sweeps to record; with ``end_utc`` the session ends at whichever comes first.
    end_utc : str or None
        UTC time after which no sweep starts (ISO text).
    repeat_every_s : float
        Seconds from one sweep's start to the next's; 0 starts each when the last ends.
    receivers : tuple of str
        Receiver names (in the database); or empty with ``selection``.
    selection : dict or None
        A selection rule for :func:`heimdall_lab.planning.select`: ``near`` ([lat, lon]),
        ``count``, ``source`` (a directory file or URL, or ``database``).
    interval_s : float
        Seconds per measurement interval (and IQ chunk).
    mode : str
        ``continuous`` (store all IQ) or ``triggered`` (measure all, store IQ around
        detections).
    trigger : TriggerPlan
        The detector of a triggered session.
    name : str
        A name to know it by.
    emulate : int or None
        Record from this many emulated receivers on loopback instead (demos, tests,
        sizing); the transmitter sends at the first frequency.
    modulation : str
        The emulated transmitter's modulation.
    seed : int
        The emulated scene's seed.
    retries : int or None
        Retries per receiver and sweep.
    """

    frequencies: tuple[float, ...]
    dwell_s: float
    sweeps: int | None = 1
    end_utc: str | None = None
    repeat_every_s: float = 0.0
    receivers: tuple[str, ...] = ()
    selection: dict[str, Any] | None = None
    interval_s: float = DEFAULT_INTERVAL_S
    mode: str = "continuous"
    trigger: TriggerPlan = field(default_factory=TriggerPlan)
    name: str = ""
    emulate: int | None = None
    modulation: str = "carrier"
    seed: int = 0
    retries: int | None = None

    def __post_init__(self) -> None:
        if not self.frequencies:
            raise ValidationError("a session plan needs at least one frequency")
        for f in self.frequencies:
            validate_capture_request(f, self.dwell_s)
        positive(self.interval_s, "interval_s")
        if self.sweeps is None and self.end_utc is None:
            raise ValidationError("say how long the session runs: sweeps, or end_utc")
        if self.sweeps is not None and (
            isinstance(self.sweeps, bool) or not isinstance(self.sweeps, int) or self.sweeps < 1
        ):
            raise ValidationError(f"sweeps must be a whole number >= 1, got {self.sweeps!r}")
        if self.end_utc is not None:
            to_utc_ns(self.end_utc, "end_utc")
        sweep_s = self.dwell_s * len(self.frequencies)
        if not (self.repeat_every_s == 0 or self.repeat_every_s >= sweep_s):
            raise ValidationError(
                f"repeat_every_s ({self.repeat_every_s:g} s) is shorter than one sweep "
                f"({sweep_s:g} s: {len(self.frequencies)} x {self.dwell_s:g} s); make it 0 "
                "(back to back) or longer"
            )
        if self.mode not in MODES:
            raise ValidationError(f"mode must be one of {MODES}, got {self.mode!r}")
        if not self.receivers and not self.selection and not self.emulate:
            raise ValidationError("a session plan needs receivers, a selection or emulate: N")
        if self.selection is not None and not self.selection.get("near"):
            raise ValidationError("a selection needs near: [lat, lon]")

    @classmethod
    def from_mapping(cls, plan: Mapping[str, Any]) -> SessionPlan:
        """A plan from a mapping (a YAML file's contents, or the stored plan).

        Parameters
        ----------
        plan : mapping
            The fields of :class:`SessionPlan`; ``frequency`` (one) for ``frequencies``,
            ``duration_s`` for ``end_utc`` counted from now.

        Returns
        -------
        SessionPlan
            The plan.

        Raises
        ------
        ValidationError
            An unknown or bad field, in one line.
        """
        if not isinstance(plan, Mapping):
            raise ValidationError(f"a session plan is a mapping, got {type(plan).__name__}")
        data = dict(plan)
        if "frequency" in data:
            data["frequencies"] = [data.pop("frequency")]
        if "duration_s" in data:
            seconds = positive(float(data.pop("duration_s")), "duration_s")
            end = np.datetime64(datetime.now(UTC).replace(tzinfo=None), "ns")
            data["end_utc"] = str(end + np.timedelta64(round(seconds * 1e9), "ns")) + "Z"
            data.setdefault("sweeps", None)
        known = {f.name for f in cls.__dataclass_fields__.values()}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValidationError(
                f"unknown session plan field(s) {', '.join(unknown)}; known: "
                f"{', '.join(sorted(known | {'frequency', 'duration_s'}))}"
            )
        try:
            freqs = data.get("frequencies")
            if not isinstance(freqs, Sequence) or isinstance(freqs, str):
                raise ValidationError("frequencies must be a list of Hz")
            data["frequencies"] = tuple(float(f) for f in freqs)
            data["dwell_s"] = float(data.get("dwell_s", 0))
            data["receivers"] = tuple(str(r) for r in data.get("receivers") or ())
            if "trigger" in data:
                trig = dict(data["trigger"] or {})
                if "passband" in trig:
                    trig["passband"] = tuple(float(x) for x in trig["passband"])
                data["trigger"] = TriggerPlan(**trig)
            for key in ("repeat_every_s", "interval_s"):
                if key in data:
                    data[key] = float(data[key])
            if data.get("end_utc") is not None:
                data["end_utc"] = str(data["end_utc"])
            return cls(**data)
        except (TypeError, ValueError) as exc:
            raise ValidationError(f"bad session plan: {exc}") from None

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> SessionPlan:
        """Read a plan from a YAML file.

        Parameters
        ----------
        path : str or path-like
            The file.

        Returns
        -------
        SessionPlan
            The plan.

        Raises
        ------
        ValidationError
            The file is missing, not YAML, or not a good plan.
        """
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ValidationError(f"cannot read the plan {path}: {exc.strerror}") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            first = str(exc).splitlines()[0] if str(exc) else "not YAML"
            raise ValidationError(f"the plan {path} is not YAML: {first}") from None
        return cls.from_mapping(data or {})

    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON values (as stored in ``sessions.plan``)."""
        out = asdict(self)
        out["frequencies"] = list(self.frequencies)
        out["receivers"] = list(self.receivers)
        out["trigger"]["passband"] = list(self.trigger.passband)
        return out

    @property
    def hops(self) -> list[tuple[float, float]]:
        """One sweep: (frequency, dwell) pairs."""
        return [(f, self.dwell_s) for f in self.frequencies]

    @property
    def sweep_s(self) -> float:
        """Seconds one sweep records."""
        return self.dwell_s * len(self.frequencies)

    def total_steps(self) -> int | None:
        """Steps of the whole plan (None when only an end time bounds it)."""
        return None if self.sweeps is None else self.sweeps * len(self.frequencies)


@dataclass
class SessionRun:
    """What one run of a session did.

    Attributes
    ----------
    session_id : str
        The session.
    status : str
        Its status when the run ended: ``done``, ``stopped`` or ``failed``.
    captures : list of Capture
        The captures this run recorded.
    skipped_sweeps : list of int
        Sweeps whose time passed while the session was not running (end-time plans).
    error : str
        Why it failed.
    """

    session_id: str
    status: str
    captures: list[Capture] = field(default_factory=list)
    skipped_sweeps: list[int] = field(default_factory=list)
    error: str = ""


def start(
    plan: SessionPlan | Mapping[str, Any] | str | os.PathLike[str],
    *,
    session_id: str | None = None,
    engine: Engine | None = None,
    database_url: str | None = None,
    iq_url: str | None = None,
    home: str | None = None,
    progress: bool = True,
    run: bool = True,
) -> SessionRun:
    """Record a new session, and run it.

    Parameters
    ----------
    plan : SessionPlan, mapping or path
        The plan, or a YAML file of it.
    session_id : str, optional
        Its id; a new one by default.
    engine : sqlalchemy.engine.Engine, optional
        The database; by default one on ``database_url`` (or the embedded server).
    database_url : str, optional
        As for :func:`heimdall_lab.pipeline.capture`.
    iq_url : str, optional
        The IQ store.
    home : str, optional
        The data home (spool).
    progress : bool, default True
        Show a bar of the sweeps on stderr (a widget in Jupyter).
    run : bool, default True
        Run it now (False: only record it, for :func:`resume` to run).

    Returns
    -------
    SessionRun
        What the run did.

    Raises
    ------
    ValidationError
        A bad plan, before anything is recorded.
    KeyboardInterrupt
        On Ctrl-C: the sweep under way keeps what it received; the session is ``stopped``
        and resumes with its next step.
    """
    if not isinstance(plan, SessionPlan):
        plan = (
            SessionPlan.from_mapping(plan)
            if isinstance(plan, Mapping)
            else SessionPlan.from_yaml(plan)
        )
    session_id = check_capture_id(session_id or new_capture_id())
    with _engine(engine, database_url) as eng:
        db.create_session(eng, session_id=session_id, name=plan.name, plan=plan.to_dict())
        log.info("session %s recorded (%s)", session_id, plan.name or "no name")
        if not run:
            return SessionRun(session_id, "pending")
        return _run(session_id, plan, eng, iq_url=iq_url, home=home, progress=progress)


def resume(
    session_id: str,
    *,
    engine: Engine | None = None,
    database_url: str | None = None,
    iq_url: str | None = None,
    home: str | None = None,
    progress: bool = True,
) -> SessionRun:
    """Run a session on from its first step without a capture.

    Parameters
    ----------
    session_id : str
        The session.
    engine, database_url, iq_url, home, progress
        As for :func:`start`.

    Returns
    -------
    SessionRun
        What the run did.

    Raises
    ------
    ValidationError
        No such session, or it is running (beating) elsewhere.
    """
    with _engine(engine, database_url) as eng:
        row = _session(eng, session_id)
        alive = row["heartbeat_at"] is not None and (
            pd.Timestamp.now(tz="UTC") - row["heartbeat_at"]
        ) < pd.Timedelta(seconds=db.STALE_AFTER_S)
        if row["status"] in ("running", "stopping") and alive:
            raise ValidationError(
                f"session {session_id} is running (process {row['pid']} on {row['host']}); "
                "stop it first (heimdall-lab session stop)"
            )
        plan = SessionPlan.from_mapping(row["plan"])
        return _run(session_id, plan, eng, iq_url=iq_url, home=home, progress=progress)


def stop(session_id: str, *, engine: Engine | None = None, database_url: str | None = None) -> bool:
    """Ask a running session to stop; it ends the sweep under way (keeping what it received).

    The request is recorded in the database, where the session sees it within
    :data:`BEAT_S` seconds; a session running on this machine is also sent SIGTERM, which
    ends its sweep at once (what each receiver delivered is kept as incomplete; captures of
    the sweep that had not begun are marked cancelled).

    Parameters
    ----------
    session_id : str
        The session.
    engine, database_url
        As for :func:`start`.

    Returns
    -------
    bool
        Whether it was running (False: it had ended; nothing to do).
    """
    with _engine(engine, database_url) as eng:
        row = _session(eng, session_id)
        asked = db.request_stop(eng, session_id)
        if asked and row["host"] == socket.gethostname() and row["pid"]:
            pid = int(row["pid"])
            if pid != os.getpid():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGTERM)
        return asked


def status(
    session_id: str, *, engine: Engine | None = None, database_url: str | None = None
) -> tuple[dict[str, Any], pd.DataFrame]:
    """A session's row and its captures, step by step.

    Parameters
    ----------
    session_id : str
        The session.
    engine, database_url
        As for :func:`start`.

    Returns
    -------
    tuple of (dict, pandas.DataFrame)
        The ``sessions`` row (with ``steps_done`` and ``steps_total``), and
        :func:`heimdall_lab.db.session_captures`.
    """
    with _engine(engine, database_url) as eng:
        row = _session(eng, session_id)
        captures = db.session_captures(eng, session_id)
        plan = SessionPlan.from_mapping(row["plan"])
        row["steps_done"] = int(captures["step"].notna().sum()) if len(captures) else 0
        row["steps_total"] = plan.total_steps()
        return row, captures


# -- running ---------------------------------------------------------------------------------


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


def _session(engine: Engine, session_id: str) -> dict[str, Any]:
    row = db.get_session(engine, check_capture_id(session_id))
    if row is None:
        raise ValidationError(f"no session {session_id!r} (heimdall-lab session status lists them)")
    return row


class _Beat:
    """Beats for the session while it runs, and notices a stop request.

    A stop request is seen in the database (within :data:`BEAT_S`), or as SIGTERM to this
    process between sweeps (during a sweep SIGTERM cancels the acquisition, which keeps
    what it received).
    """

    def __init__(self, engine: Engine, session_id: str) -> None:
        self.engine, self.session_id = engine, session_id
        self.stop_asked = threading.Event()
        self.in_sweep = False
        self._previous: Any = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="heimdall-session", daemon=True)

    def __enter__(self) -> _Beat:
        self._thread.start()
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._terminated)
        return self

    def _terminated(self, *_: object) -> None:
        """SIGTERM: stop; a sweep being set up is cut short (as the acquisition's own is)."""
        self.stop_asked.set()
        if self.in_sweep:
            raise KeyboardInterrupt("stop asked (SIGTERM)")

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
        self._done.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._done.is_set():
            try:
                if db.beat_session(self.engine, self.session_id):
                    self.stop_asked.set()
            except DatabaseError as exc:
                log.debug("session %s: heartbeat missed: %s", self.session_id, exc)
            self._done.wait(BEAT_S)


def _receivers(plan: SessionPlan, engine: Engine) -> list[Receiver]:
    """The plan's receivers: by name from the database, or chosen by its selection rule."""
    if plan.emulate:
        return emulated_receivers(plan.emulate)
    if plan.receivers:
        known = {r.name: r for r in db.list_receivers(engine, active_only=True)}
        missing = [n for n in plan.receivers if n not in known]
        if missing:
            raise ValidationError(f"unknown or inactive receiver(s) {missing} in the plan")
        return [known[n] for n in plan.receivers]
    rule = dict(plan.selection or {})
    source = rule.pop("source", "database")
    entries = db.directory_entries(engine) if source == "database" else list(directory.load(source))
    chosen = planning.select(
        entries,
        plan.frequencies[0],
        near=rule.pop("near"),
        count=int(rule.pop("count", 6)),
        duration_s=plan.dwell_s,
        **rule,
    )
    return [e.receiver() for e in chosen.entries]


@contextlib.contextmanager
def _sources(plan: SessionPlan, receivers: list[Receiver]) -> Iterator[dict[str, Any]]:
    """Where one sweep records from: the receivers, or an emulator standing in for them.

    An emulator is started per sweep, so that each sweep's streams start at its own time
    (an emulator's streams all start at its start), as live receivers' do.
    """
    if not plan.emulate:
        yield {"receivers": receivers}
        return
    scenario = Scenario.default(seed=plan.seed, receivers=receivers)
    if scenario.transmitter is not None:
        tx = replace(
            scenario.transmitter, frequency_hz=plan.frequencies[0], modulation=plan.modulation
        )
        scenario = replace(scenario, transmitter=tx)
    with emulated(scenario=scenario, receivers=receivers) as emu:
        yield emu.capture_options


def _next_steps(
    plan: SessionPlan, captures: pd.DataFrame, started: pd.Timestamp
) -> tuple[int, list[int]]:
    """The first sweep to record, and the sweeps skipped because their time has passed."""
    n = len(plan.frequencies)
    done = set() if captures.empty else {int(s) for s in captures["step"].dropna()}
    first = 0
    while any(first * n + i in done for i in range(n)):
        first += 1
    skipped: list[int] = []
    if plan.repeat_every_s and plan.end_utc is not None:
        # An end-time plan keeps its schedule: sweeps whose start passed are gaps.
        now = pd.Timestamp.now(tz="UTC")
        due = math.floor((now - started).total_seconds() / plan.repeat_every_s)
        while first < due:
            skipped.append(first)
            first += 1
    return first, skipped


def _run(
    session_id: str,
    plan: SessionPlan,
    engine: Engine,
    *,
    iq_url: str | None,
    home: str | None,
    progress: bool,
) -> SessionRun:
    result = SessionRun(session_id, "running")
    store = IQStore(iq_url) if iq_url else None
    db.update_session(
        engine,
        session_id,
        status="running",
        pid=os.getpid(),
        host=socket.gethostname(),
        stop_requested=False,
        error_message=None,
    )
    row = _session(engine, session_id)
    started = row["started_at"] or pd.Timestamp.now(tz="UTC")
    total = plan.total_steps()
    bar = _bar(progress, plan, session_id)
    try:
        receivers = _receivers(plan, engine)
        with _Beat(engine, session_id) as beat:
            while True:
                captures = db.session_captures(engine, session_id)
                first, skipped = _next_steps(plan, captures, started)
                result.skipped_sweeps += skipped
                done = len(captures)
                if bar is not None:
                    bar.n = done if total is None else min(done, total)
                    bar.refresh()
                if _finished(plan, first):
                    result.status = "done"
                    break
                if beat.stop_asked.is_set() or db.stop_requested(engine, session_id):
                    result.status = "stopped"
                    break
                _wait_for_sweep(plan, started, first, beat)
                if beat.stop_asked.is_set():
                    result.status = "stopped"
                    break
                with _sources(plan, receivers) as source:
                    # SIGTERM cuts the sweep short while it is set up (an emulator starting
                    # or stopping is not cut); once it receives, the acquisition's own
                    # handler does, and what comes after (completing the stores) is not cut.
                    beat.in_sweep = True

                    def started(cap: Capture) -> None:
                        if cap.stage not in ("pending", "connecting"):
                            beat.in_sweep = False

                    try:
                        caps = _record_sweep(
                            plan, session_id, first, source, store, engine, home, started
                        )
                    finally:
                        beat.in_sweep = False
                result.captures += caps
                if total:
                    db.update_session(
                        engine,
                        session_id,
                        progress_percent=min(100.0, 100.0 * (first + 1) * len(caps) / total),
                    )
    except KeyboardInterrupt:
        # A stop asked for (session stop: SIGTERM cancels the sweep under way) ends the
        # run; Ctrl-C goes on to the caller. Either way the session resumes later.
        result.status = "stopped"
        _cancel_unstarted(engine, session_id)
        if not _stop_was_asked(engine, session_id):
            _end(engine, session_id, result)
            raise
        log.info("session %s: stopped as asked; resume continues with its next step", session_id)
    except HeimdallError as exc:
        result.status, result.error = "failed", str(exc)
        log.error("session %s failed: %s", session_id, exc)
    finally:
        if bar is not None:
            bar.close()
    _end(engine, session_id, result)
    return result


def _cancel_unstarted(engine: Engine, session_id: str) -> None:
    """Captures of the sweep cut short before they connected: cancelled, not left pending."""
    try:
        captures = db.session_captures(engine, session_id)
        for capture_id in captures.loc[captures["status"] == "pending", "capture_id"]:
            db.update_capture(
                engine, capture_id, status="cancelled", error="the session stopped before it began"
            )
    except DatabaseError as exc:
        log.warning("session %s: its unstarted captures not marked: %s", session_id, exc)


def _stop_was_asked(engine: Engine, session_id: str) -> bool:
    try:
        return db.stop_requested(engine, session_id)
    except DatabaseError:
        return False


def _end(engine: Engine, session_id: str, result: SessionRun) -> None:
    fields: dict[str, Any] = {"status": result.status, "pid": None, "stop_requested": False}
    if result.status == "done":
        fields["progress_percent"] = 100.0
    if result.error:
        fields["error_message"] = result.error
    try:
        db.update_session(engine, session_id, **fields)
    except DatabaseError as exc:
        log.warning("session %s: its end not recorded: %s", session_id, exc)


def _finished(plan: SessionPlan, sweep_index: int) -> bool:
    if plan.sweeps is not None and sweep_index >= plan.sweeps:
        return True
    if plan.end_utc is not None:
        end = pd.Timestamp(to_utc_ns(plan.end_utc, "end_utc")).tz_localize("UTC")
        return pd.Timestamp.now(tz="UTC") >= end
    return False


def _wait_for_sweep(plan: SessionPlan, started: pd.Timestamp, index: int, beat: _Beat) -> None:
    """Wait until the sweep's start on the plan's schedule (none for back-to-back sweeps)."""
    if not plan.repeat_every_s:
        return
    due = started + pd.Timedelta(seconds=index * plan.repeat_every_s)
    wait = (due - pd.Timestamp.now(tz="UTC")).total_seconds()
    if wait > 0:
        log.info("session: next sweep in %.0f s", wait)
        beat.stop_asked.wait(wait)


def _record_sweep(
    plan: SessionPlan,
    session_id: str,
    index: int,
    source: Mapping[str, Any],
    store: IQStore | None,
    engine: Engine,
    home: str | None,
    on_progress: Any = None,
) -> list[Capture]:
    n = len(plan.frequencies)
    metadata = dict(source.get("metadata") or {})
    metadata["session"] = {"id": session_id, "sweep": index, "mode": plan.mode}
    options = {k: v for k, v in source.items() if k != "metadata"}
    return sweep(
        plan.hops,
        on_progress=on_progress,
        engine=engine,
        store=store,
        home=home,
        metadata=metadata,
        interval_s=plan.interval_s,
        retries=plan.retries,
        session_id=session_id,
        first_step=index * n,
        settings=StreamSettings(),
        trigger=asdict(plan.trigger) if plan.mode == "triggered" else None,
        **options,
    )


def _bar(progress: bool, plan: SessionPlan, session_id: str) -> Any:
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(
        total=plan.total_steps(),
        desc=f"session {session_id[:8]}",
        unit="step",
        disable=None,
        leave=True,
    )


__all__ = [
    "MODES",
    "SessionPlan",
    "SessionRun",
    "TriggerPlan",
    "resume",
    "start",
    "status",
    "stop",
]
