"""The ``captures`` table: one row per capture, its parameters, stage and IQ location."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine

from heimdall_lab.db.filters import frequency_clause, receiver_names
from heimdall_lab.errors import ValidationError, first_line
from heimdall_lab.ids import check_capture_id, new_capture_id
from heimdall_lab.values import positive, to_json
from heimdall_lab.versions import __version__

log = logging.getLogger(__name__)


#: Values ``captures.status`` accepts.
CAPTURE_STATUSES = (
    "pending",
    "connecting",
    "receiving",
    "processing",
    "storing",
    "done",
    "partial",
    "incomplete",
    "failed",
    "cancelled",
)
#: Stages of a capture still running (its process should be beating).
RUNNING_STATUSES = ("pending", "connecting", "receiving", "processing", "storing")
#: Seconds between a live capture's heartbeats (:func:`beat`).
HEARTBEAT_S = 2.0
#: Seconds without a heartbeat after which a running capture is taken for dead.
STALE_AFTER_S = 15.0


# ----------------------------------------------------------------------------- captures


class DuplicateStepError(ValidationError):
    """A session's plan step already has its capture: a step is never recorded twice.

    Parameters
    ----------
    session_id : str
        The session.
    step : int
        The plan step index.
    capture_id : str or None
        The capture that already fulfils the step (None if it could not be read).
    """

    def __init__(self, session_id: str, step: int, capture_id: str | None) -> None:
        held = f" by capture {capture_id}" if capture_id else ""
        super().__init__(
            f"step {step} of session {session_id} is recorded already{held}: a session records "
            "each plan step once; resume the session (it skips recorded steps) instead of "
            "recording the step again"
        )
        self.session_id = session_id
        self.step = step
        self.capture_id = capture_id


@dataclass(frozen=True)
class CaptureRecord:
    """A row of ``captures``.

    Attributes
    ----------
    id : str
        32 hex digits.
    start_time : pandas.Timestamp or None
        When acquisition started (UTC).
    frequency_hz, duration_s : float
        What was asked.
    parameters : dict
        Free-form request parameters (JSON).
    status : str
        One of :data:`CAPTURE_STATUSES`.
    progress_percent : float
        0 to 100.
    error_message, iq_url, software_version : str or None
        Why it failed; where its IQ is; which heimdall_lab wrote it.
    created_at, updated_at : pandas.Timestamp
        Row times (UTC).
    heartbeat_at : pandas.Timestamp or None
        The last heartbeat of the process running the capture (:func:`beat`).
    session_id : str or None
        The recording session the capture belongs to, if any.
    session_step : int or None
        The index of the session plan's step it fulfils.
    """

    id: str
    start_time: pd.Timestamp | None
    frequency_hz: float
    duration_s: float
    parameters: dict[str, Any]
    status: str
    progress_percent: float
    error_message: str | None
    iq_url: str | None
    software_version: str | None
    created_at: pd.Timestamp
    updated_at: pd.Timestamp
    heartbeat_at: pd.Timestamp | None = None
    session_id: str | None = None
    session_step: int | None = None


_CAPTURE_COLUMNS = [f.name for f in dataclasses.fields(CaptureRecord)]


def _utc(value: datetime | np.datetime64 | str | pd.Timestamp) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    if ts is pd.NaT:
        raise ValidationError("a time must not be NaT")
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _check_status(status: str) -> str:
    if status not in CAPTURE_STATUSES:
        raise ValidationError(f"status {status!r} is not one of {', '.join(CAPTURE_STATUSES)}")
    return status


def create_capture(
    engine: Engine,
    frequency_hz: float,
    duration_s: float,
    *,
    capture_id: str | None = None,
    start_time: datetime | pd.Timestamp | str | None = None,
    parameters: Mapping[str, Any] | None = None,
    status: str = "pending",
    iq_url: str | None = None,
    software_version: str | None = __version__,
    session_id: str | None = None,
    session_step: int | None = None,
) -> str:
    """Record a capture.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database.
    frequency_hz, duration_s : float
        Centre frequency in Hz and length in seconds: any finite positive numbers. The
        limit on what one acquisition may ask for (:data:`heimdall_lab.receivers.
        MAX_DURATION_S`) is checked where IQ is acquired, not here, so longer imported
        recordings can be recorded.
    capture_id : str, optional
        See :func:`heimdall_lab.ids.check_capture_id`; a new
        :func:`heimdall_lab.ids.new_capture_id` by default.
    start_time : datetime-like, optional
        When acquisition started (naive means UTC).
    parameters : mapping, optional
        Free-form JSON-serialisable request parameters.
    status : str, default "pending"
        One of :data:`CAPTURE_STATUSES`.
    iq_url : str, optional
        Where the IQ is kept.
    software_version : str, optional
        Default: this heimdall_lab's version.
    session_id : str, optional
        The recording session the capture belongs to (see :mod:`heimdall_lab.db.sessions`).
    session_step : int, optional
        With ``session_id``: the index (>= 0) of the plan step the capture fulfils. The
        database holds at most one capture per (session, step).

    Returns
    -------
    str
        The capture id.

    Raises
    ------
    DuplicateStepError
        If the session's step has a capture already (a :class:`ValidationError`).
    ValidationError
        For a bad frequency, duration, id, status, parameters or step, an id already used,
        or a session that does not exist.
    """
    frequency_hz = positive(frequency_hz, "frequency")
    duration_s = positive(duration_s, "duration")
    capture_id = check_capture_id(capture_id or new_capture_id())
    params = to_json(parameters or {}, "parameters")
    if session_step is not None:
        if session_id is None:
            raise ValidationError("session_step needs a session_id: the step of which session?")
        session_step = positive(session_step, "session_step", whole=True, allow_zero=True)
    stmt = sa.text(
        "INSERT INTO captures (id, start_time, frequency_hz, duration_s, parameters, status, "
        "iq_url, software_version, session_id, session_step) "
        "VALUES (:id, :start, :f, :d, CAST(:p AS jsonb), :s, :iq, :v, :sid, :step) "
        "ON CONFLICT (id) DO NOTHING"
    )
    values = {
        "id": capture_id,
        "start": None if start_time is None else _utc(start_time).to_pydatetime(),
        "f": float(frequency_hz),
        "d": float(duration_s),
        "p": params,
        "s": _check_status(status),
        "iq": iq_url,
        "v": software_version,
        "sid": session_id,
        "step": session_step,
    }
    try:
        with engine.begin() as conn:
            if conn.execute(stmt, values).rowcount == 0:
                raise ValidationError(f"capture {capture_id} exists already")
    except sa_exc.IntegrityError as err:
        constraint = getattr(getattr(err.orig, "diag", None), "constraint_name", None)
        # the constraint the server names (psycopg2's diagnostics; else its message)
        broken = constraint or first_line(err)
        if "captures_session_step_key" in broken:
            raise DuplicateStepError(
                str(session_id),
                int(session_step or 0),
                _step_capture(engine, session_id, session_step),
            ) from None
        if "captures_session_id_fkey" in broken:
            raise ValidationError(
                f"no session {session_id!r}: create it with create_session first"
            ) from None
        raise
    log.info("created capture %s (%.0f Hz, %.1f s)", capture_id, frequency_hz, duration_s)
    return capture_id


def _step_capture(engine: Engine, session_id: str | None, step: int | None) -> str | None:
    """The capture holding a session's step, or None."""
    with engine.connect() as conn:
        return conn.execute(
            sa.text("SELECT id FROM captures WHERE session_id = :s AND session_step = :n"),
            {"s": session_id, "n": step},
        ).scalar()


def update_capture(
    engine: Engine,
    capture_id: str,
    *,
    status: str | None = None,
    progress: float | None = None,
    error: str | None = None,
    iq_url: str | None = None,
    start_time: datetime | pd.Timestamp | str | None = None,
    parameters: Mapping[str, Any] | None = None,
) -> None:
    """Change a capture's status, progress, error message, IQ location, start time or parameters.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database.
    capture_id : str
        The capture.
    status : str, optional
        One of :data:`CAPTURE_STATUSES`.
    progress : float, optional
        Percent done, 0 to 100.
    error : str, optional
        Error message (stored verbatim).
    iq_url : str, optional
        Where the IQ is kept.
    start_time : datetime-like, optional
        When acquisition started.
    parameters : mapping, optional
        Parameters to add to the capture's (JSON values; a key given replaces its value).

    Raises
    ------
    ValidationError
        If there is no such capture, the status is unknown or the progress out of range.
    """
    values: dict[str, Any] = {}
    if status is not None:
        values["status"] = _check_status(status)
    if progress is not None:
        p = float(progress)
        if not 0.0 <= p <= 100.0:
            raise ValidationError(f"progress must be 0-100 percent, got {progress!r}")
        values["progress_percent"] = p
    if error is not None:
        values["error_message"] = str(error)
    if iq_url is not None:
        values["iq_url"] = str(iq_url)
    if start_time is not None:
        values["start_time"] = _utc(start_time).to_pydatetime()
    sets = ", ".join(f"{c} = :{c}" for c in values) or "id = id"
    if parameters is not None:
        values["parameters"] = to_json(dict(parameters), "parameters")
        sets += ", parameters = parameters || CAST(:parameters AS jsonb)"
    with engine.begin() as conn:
        n = conn.execute(
            sa.text(f"UPDATE captures SET {sets} WHERE id = :capture_id"),
            {**values, "capture_id": capture_id},
        ).rowcount
    if n == 0:
        raise ValidationError(f"no capture {capture_id!r}")


def _ts_or_none(value: Any) -> pd.Timestamp | None:
    return None if value is None else _utc(value)


def get_capture(engine: Engine, capture_id: str) -> CaptureRecord | None:
    """One capture.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database.
    capture_id : str
        The capture.

    Returns
    -------
    CaptureRecord or None
        None if there is no such capture.
    """
    with engine.connect() as conn:
        row = conn.execute(
            sa.text(f"SELECT {', '.join(_CAPTURE_COLUMNS)} FROM captures WHERE id = :id"),
            {"id": capture_id},
        ).first()
    if row is None:
        return None
    rec = dict(zip(_CAPTURE_COLUMNS, row, strict=True))
    for key in ("start_time", "created_at", "updated_at", "heartbeat_at"):
        rec[key] = _ts_or_none(rec[key])
    return CaptureRecord(**rec)


def list_captures(
    engine: Engine,
    *,
    frequency_hz: float | None = None,
    start: datetime | pd.Timestamp | str | None = None,
    end: datetime | pd.Timestamp | str | None = None,
    receivers: str | Sequence[str] | None = None,
    status: str | Sequence[str] | None = None,
    limit: int | None = 100,
) -> pd.DataFrame:
    """Captures matching all the given filters, newest first (by ``created_at``).

    Every filter is applied in the database, before the limit.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database.
    frequency_hz : float, optional
        Only captures whose centre frequency is within
        :data:`~heimdall_lab.db.filters.FREQUENCY_TOLERANCE_HZ` (0.5 Hz) of this.
    start, end : datetime-like, optional
        Only captures that started at ``start <= start_time < end`` (naive means UTC). A
        capture without a start time (not yet started) matches neither bound.
    receivers : str or sequence of str, optional
        Only captures that include any of these receivers (names): that asked for one of
        them (the ``receivers`` list of their parameters) or have measurements from one.
    status : str or sequence of str, optional
        Only captures in these stages (:data:`CAPTURE_STATUSES`).
    limit : int or None, default 100
        At most this many; None for all. When more match, the newest ``limit`` are
        returned, a warning is logged and ``frame.attrs["truncated"]`` is True (it is
        False otherwise).

    Returns
    -------
    pandas.DataFrame
        One row per capture, the columns of :class:`CaptureRecord`.

    Raises
    ------
    ValidationError
        For a bad frequency, status or limit.
    """
    if limit is not None:
        limit = positive(limit, "limit", whole=True)
    clauses: list[str] = []
    params: dict[str, Any] = {}
    if frequency_hz is not None:
        clause, values = frequency_clause("c.frequency_hz", frequency_hz)
        clauses.append(clause)
        params.update(values)
    if start is not None:
        clauses.append("c.start_time >= :start")
        params["start"] = _utc(start).to_pydatetime()
    if end is not None:
        clauses.append("c.start_time < :end")
        params["end"] = _utc(end).to_pydatetime()
    if receivers is not None:
        clauses.append(
            "((jsonb_typeof(c.parameters -> 'receivers') = 'array' "
            "AND EXISTS (SELECT 1 FROM jsonb_array_elements_text(c.parameters -> 'receivers') r "
            "WHERE r = ANY(:names))) "
            "OR EXISTS (SELECT 1 FROM measurements m JOIN websdrs w ON w.id = m.websdr_id "
            "WHERE m.capture_id = c.id AND w.name = ANY(:names)))"
        )
        params["names"] = receiver_names(receivers)
    if status is not None:
        statuses = [status] if isinstance(status, str) else list(status)
        clauses.append("c.status = ANY(:statuses)")
        params["statuses"] = [_check_status(s) for s in statuses]
    where = ("WHERE " + " AND ".join(clauses) + " ") if clauses else ""
    if limit is not None:
        params["n"] = limit + 1  # one more than asked for tells whether there are more
    columns = ", ".join(f"c.{c}" for c in _CAPTURE_COLUMNS)
    sql = f"SELECT {columns} FROM captures c {where}ORDER BY c.created_at DESC, c.id" + (
        " LIMIT :n" if limit is not None else ""
    )
    with engine.connect() as conn:
        rows = conn.execute(sa.text(sql), params).fetchall()
    truncated = limit is not None and len(rows) > limit
    if truncated:
        rows = rows[:limit]
        log.warning(
            "list_captures: more than %d captures match; returning the newest %d "
            "(narrow the filters or raise limit)",
            limit,
            limit,
        )
    df = pd.DataFrame(rows, columns=_CAPTURE_COLUMNS)
    for col in ("start_time", "created_at", "updated_at", "heartbeat_at"):
        df[col] = pd.to_datetime(df[col], utc=True)
    df["session_step"] = df["session_step"].astype("Int64")
    df.attrs["truncated"] = truncated
    return df


def set_iq_url(engine: Engine, capture_id: str, iq_url: str) -> int:
    """Record where a capture's IQ now is, in its row and in its measurements' ``iq_path``.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database.
    capture_id : str
        The capture.
    iq_url : str
        The capture's IQ store URL.

    Returns
    -------
    int
        Measurement rows updated.

    Raises
    ------
    ValidationError
        If there is no such capture.
    """
    check_capture_id(capture_id)
    with engine.begin() as conn:
        found = conn.execute(
            sa.text("UPDATE captures SET iq_url = :u WHERE id = :c"), {"u": iq_url, "c": capture_id}
        ).rowcount
        if not found:
            raise ValidationError(f"no capture {capture_id!r}")
        return conn.execute(
            sa.text(
                "UPDATE measurements m SET iq_path = :u || '#receiver=' || w.name "
                "FROM websdrs w WHERE m.websdr_id = w.id AND m.capture_id = :c"
            ),
            {"u": iq_url, "c": capture_id},
        ).rowcount


def beat(engine: Engine, capture_id: str) -> None:
    """Record that the process running a capture is alive (sets ``heartbeat_at``).

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database.
    capture_id : str
        The capture.
    """
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE captures SET heartbeat_at = now() WHERE id = :c"), {"c": capture_id}
        )


@dataclass(frozen=True)
class StaleCapture:
    """A capture left in a running stage by a process that stopped beating.

    Attributes
    ----------
    id : str
        The capture.
    status : str
        The stage it was left at.
    iq_url : str or None
        Where its IQ was stored, if it got that far.
    silent_s : float
        Seconds since its last heartbeat (or its last change, for a row that never beat).
    """

    id: str
    status: str
    iq_url: str | None
    silent_s: float


def stale_captures(engine: Engine, older_than_s: float = STALE_AFTER_S) -> list[StaleCapture]:
    """Captures in a running stage whose process stopped beating.

    A live capture beats every :data:`HEARTBEAT_S` seconds, so a capture is taken for dead
    only after :data:`STALE_AFTER_S` seconds without a heartbeat (or ``older_than_s``, when
    that is longer), however long it has been running.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database.
    older_than_s : float, optional
        Seconds of silence; never less than :data:`STALE_AFTER_S`.

    Returns
    -------
    list of StaleCapture
        Oldest first.

    Raises
    ------
    ValidationError
        If ``older_than_s`` is negative or not a number.
    """
    if not older_than_s >= 0:
        raise ValidationError(f"older_than_s must be >= 0, got {older_than_s!r}")
    silence = max(float(older_than_s), STALE_AFTER_S)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT id, status, iq_url, "
                "extract(epoch FROM now() - coalesce(heartbeat_at, updated_at)) "
                "FROM captures WHERE status = ANY(:running) "
                "AND coalesce(heartbeat_at, updated_at) < now() - make_interval(secs => :age) "
                "ORDER BY created_at"
            ),
            {"running": list(RUNNING_STATUSES), "age": silence},
        ).fetchall()
    return [StaleCapture(r[0], r[1], r[2], float(r[3])) for r in rows]
