"""The ``sessions`` table: recording sessions, the captures of their plan steps, their events.

A session records a plan (a list of steps, each becoming one capture) over time. Its row says
how far it got (``status``, ``progress_percent``), who runs it (``pid``, ``host``) and whether
that process is alive (``heartbeat_at``, set by :func:`beat_session` every
:data:`~heimdall_lab.db.captures.HEARTBEAT_S` seconds). Another process asks it to stop with
:func:`request_stop`; the runner sees the request in :func:`beat_session`'s answer or
:func:`stop_requested`.

The captures of a session carry ``session_id`` and ``session_step`` (give both to
:func:`~heimdall_lab.db.create_capture`); the database keeps at most one capture per (session,
step), so resuming a session twice never records a step twice. Triggered recording writes
its detections with :func:`write_events`; writing the same event again changes nothing.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine

from heimdall_lab.db.captures import STALE_AFTER_S, _utc
from heimdall_lab.errors import DatabaseError, ValidationError, first_line
from heimdall_lab.ids import is_capture_id
from heimdall_lab.values import jsonable, positive, to_json

log = logging.getLogger(__name__)


#: Values ``sessions.status`` accepts.
SESSION_STATUSES = ("pending", "running", "stopping", "stopped", "done", "failed")
#: Statuses of a session that has not ended (a stop request still means something).
ACTIVE_SESSION_STATUSES = ("pending", "running", "stopping")
#: Statuses of a session that has ended.
ENDED_SESSION_STATUSES = ("stopped", "done", "failed")

_SESSION_COLUMNS = [
    "id",
    "name",
    "plan",
    "status",
    "progress_percent",
    "error_message",
    "pid",
    "host",
    "stop_requested",
    "created_at",
    "updated_at",
    "started_at",
    "ended_at",
    "heartbeat_at",
]
_TIME_COLUMNS = ("created_at", "updated_at", "started_at", "ended_at", "heartbeat_at")
#: Columns :func:`update_session` may change.
_UPDATABLE = (
    "name",
    "plan",
    "status",
    "progress_percent",
    "error_message",
    "pid",
    "host",
    "stop_requested",
    "started_at",
    "ended_at",
    "heartbeat_at",
)


def _check_session_id(session_id: object) -> str:
    if not is_capture_id(session_id):
        raise ValidationError(
            f"session id {str(session_id)[:80]!r} must be 1-128 letters, digits, '_', '.' or "
            "'-', starting with a letter or digit and without '..'"
        )
    return str(session_id)


def _check_status(status: object) -> str:
    if status not in SESSION_STATUSES:
        raise ValidationError(
            f"session status {status!r} is not one of {', '.join(SESSION_STATUSES)}"
        )
    return str(status)


def _db_error(what: str, err: BaseException) -> DatabaseError:
    return DatabaseError(f"{what} failed: {first_line(err)}")


def _no_session(session_id: str) -> ValidationError:
    return ValidationError(
        f"no session {session_id!r}: create it with create_session (list_sessions shows those "
        "there are)"
    )


# ----------------------------------------------------------------------------- sessions


def create_session(
    engine: Engine, *, session_id: str, name: str = "", plan: Mapping[str, Any] | list[Any]
) -> None:
    """Record a new session (status ``pending``).

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database (migrated).
    session_id : str
        1-128 letters, digits, ``_``, ``.`` or ``-``, starting with a letter or digit, without
        ``..`` (the rule of capture ids).
    name : str, default ""
        A name for people.
    plan : mapping or list
        The whole plan, JSON-serialisable; stored as given.

    Raises
    ------
    ValidationError
        For a bad id, name or plan, or an id already used.
    """
    session_id = _check_session_id(session_id)
    if not isinstance(name, str):
        raise ValidationError(f"session name must be text, got {name!r}")
    if plan is None:
        raise ValidationError("a session needs a plan (a JSON object or list)")
    plan_json = to_json(plan, "plan")
    with engine.begin() as conn:
        n = conn.execute(
            sa.text(
                "INSERT INTO sessions (id, name, plan) VALUES (:id, :name, CAST(:plan AS jsonb)) "
                "ON CONFLICT (id) DO NOTHING"
            ),
            {"id": session_id, "name": name, "plan": plan_json},
        ).rowcount
    if n == 0:
        raise ValidationError(
            f"session {session_id} exists already: resume it, or choose another id"
        )
    log.info("created session %s (%s)", session_id, name or "unnamed")


def _row_dict(row: Any) -> dict[str, Any]:
    rec = dict(zip(_SESSION_COLUMNS, row, strict=True))
    for key in _TIME_COLUMNS:
        rec[key] = None if rec[key] is None else _utc(rec[key])
    return rec


def get_session(engine: Engine, session_id: str) -> dict[str, Any] | None:
    """One session.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database.
    session_id : str
        The session.

    Returns
    -------
    dict or None
        The row: ``id``, ``name``, ``plan`` (as stored), ``status``, ``progress_percent``,
        ``error_message``, ``pid``, ``host``, ``stop_requested``, and the times
        ``created_at``, ``updated_at``, ``started_at``, ``ended_at``, ``heartbeat_at``
        (UTC Timestamps or None). None if there is no such session.
    """
    with engine.connect() as conn:
        row = conn.execute(
            sa.text(f"SELECT {', '.join(_SESSION_COLUMNS)} FROM sessions WHERE id = :id"),
            {"id": session_id},
        ).first()
    return None if row is None else _row_dict(row)


def list_sessions(
    engine: Engine, status: str | Iterable[str] | None = None, limit: int | None = 100
) -> pd.DataFrame:
    """Sessions, newest first, with the number of captures each has recorded.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database.
    status : str or iterable of str, optional
        Only sessions in these states (:data:`SESSION_STATUSES`).
    limit : int or None, default 100
        At most this many (the newest); None for all. ``frame.attrs["truncated"]`` says
        whether more matched.

    Returns
    -------
    pandas.DataFrame
        The columns of :func:`get_session` except ``plan``, and ``n_captures``.

    Raises
    ------
    ValidationError
        For an unknown status or a bad limit.
    """
    if limit is not None:
        limit = positive(limit, "limit", whole=True)
    params: dict[str, Any] = {}
    where = ""
    if status is not None:
        statuses = [status] if isinstance(status, str) else list(status)
        params["statuses"] = [_check_status(s) for s in statuses]
        where = "WHERE s.status = ANY(:statuses) "
    columns = [c for c in _SESSION_COLUMNS if c != "plan"]
    sql = (
        f"SELECT {', '.join('s.' + c for c in columns)}, "
        "(SELECT count(*) FROM captures c WHERE c.session_id = s.id) AS n_captures "
        f"FROM sessions s {where}ORDER BY s.created_at DESC, s.id"
    )
    if limit is not None:
        sql += " LIMIT :n"
        params["n"] = limit + 1
    with engine.connect() as conn:
        rows = conn.execute(sa.text(sql), params).fetchall()
    truncated = limit is not None and len(rows) > limit
    rows = rows[:limit] if limit is not None else rows
    df = pd.DataFrame(rows, columns=[*columns, "n_captures"])
    for col in _TIME_COLUMNS:
        df[col] = pd.to_datetime(df[col], utc=True)
    df["pid"] = df["pid"].astype("Int64")
    df["n_captures"] = df["n_captures"].astype(np.int64)
    df["progress_percent"] = df["progress_percent"].astype(np.float64)
    df.attrs["truncated"] = truncated
    return df


def _field_value(key: str, value: Any) -> Any:
    if value is None:
        if key in ("name", "plan", "status", "progress_percent", "stop_requested"):
            raise ValidationError(f"session {key} cannot be cleared (None)")
        return None
    if key == "status":
        return _check_status(value)
    if key == "progress_percent":
        p = float(value)
        if not (math.isfinite(p) and 0.0 <= p <= 100.0):
            raise ValidationError(f"progress_percent must be 0-100, got {value!r}")
        return p
    if key == "plan":
        return to_json(value, "plan")
    if key == "pid":
        return positive(value, "pid", whole=True)
    if key == "stop_requested":
        if not isinstance(value, bool | np.bool_):
            raise ValidationError(f"stop_requested must be True or False, got {value!r}")
        return bool(value)
    if key in ("started_at", "ended_at", "heartbeat_at"):
        return _utc(value).to_pydatetime()
    return str(value)


def update_session(engine: Engine, session_id: str, **fields: Any) -> None:
    """Change columns of a session.

    A change of ``status`` to ``running`` sets ``started_at`` (if it was not set), and to
    ``stopped``, ``done`` or ``failed`` sets ``ended_at`` (if it was not set); give either to
    set it yourself.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database.
    session_id : str
        The session.
    **fields
        Any of ``name``, ``plan``, ``status`` (:data:`SESSION_STATUSES`),
        ``progress_percent`` (0-100), ``error_message``, ``pid``, ``host``,
        ``stop_requested``, ``started_at``, ``ended_at``, ``heartbeat_at``. None clears a
        column that may be empty (``error_message``, ``pid``, ``host`` and the times).

    Raises
    ------
    ValidationError
        For an unknown field or a bad value, or if there is no such session.
    """
    unknown = sorted(set(fields) - set(_UPDATABLE))
    if unknown:
        raise ValidationError(
            f"update_session cannot change {', '.join(unknown)}; it changes {', '.join(_UPDATABLE)}"
        )
    values = {k: _field_value(k, v) for k, v in fields.items()}
    sets = [f"{k} = CAST(:{k} AS jsonb)" if k == "plan" else f"{k} = :{k}" for k in values]
    status = values.get("status")
    if status == "running" and "started_at" not in values:
        sets.append("started_at = coalesce(started_at, now())")
    if status in ENDED_SESSION_STATUSES and "ended_at" not in values:
        sets.append("ended_at = coalesce(ended_at, now())")
    if not sets:
        sets = ["id = id"]
    try:
        with engine.begin() as conn:
            n = conn.execute(
                sa.text(f"UPDATE sessions SET {', '.join(sets)} WHERE id = :session_id"),
                {**values, "session_id": session_id},
            ).rowcount
    except sa_exc.DBAPIError as err:
        raise _db_error(f"updating session {session_id}", err) from None
    if n == 0:
        raise _no_session(session_id)


def beat_session(engine: Engine, session_id: str) -> bool:
    """Record that the process running a session is alive (sets ``heartbeat_at``).

    Call it every :data:`~heimdall_lab.db.captures.HEARTBEAT_S` seconds while the session
    runs.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database.
    session_id : str
        The session.

    Returns
    -------
    bool
        Whether a stop was requested (:func:`request_stop`): the runner's cue to stop
        after the current step.

    Raises
    ------
    ValidationError
        If there is no such session.
    """
    with engine.begin() as conn:
        flag = conn.execute(
            sa.text(
                "UPDATE sessions SET heartbeat_at = now() WHERE id = :s RETURNING stop_requested"
            ),
            {"s": session_id},
        ).scalar()
    if flag is None:
        raise _no_session(session_id)
    return bool(flag)


def request_stop(engine: Engine, session_id: str) -> bool:
    """Ask a session to stop: sets ``stop_requested`` (a running session becomes ``stopping``).

    Any process may call this; the session's runner sees it in :func:`beat_session` or
    :func:`stop_requested` and stops after the capture under way.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database.
    session_id : str
        The session.

    Returns
    -------
    bool
        True if the request was recorded for a session that has not ended (``pending``,
        ``running`` or ``stopping``); False if it has ended already (nothing to stop).

    Raises
    ------
    ValidationError
        If there is no such session.
    """
    with engine.begin() as conn:
        found = conn.execute(
            sa.text(
                "UPDATE sessions SET stop_requested = true, status = CASE WHEN status = "
                "'running' THEN 'stopping' ELSE status END "
                "WHERE id = :s AND status = ANY(:active) RETURNING id"
            ),
            {"s": session_id, "active": list(ACTIVE_SESSION_STATUSES)},
        ).first()
        if found is not None:
            log.info("stop requested for session %s", session_id)
            return True
        exists = conn.execute(
            sa.text("SELECT 1 FROM sessions WHERE id = :s"), {"s": session_id}
        ).first()
    if exists is None:
        raise _no_session(session_id)
    return False


def stop_requested(engine: Engine, session_id: str) -> bool:
    """Whether a stop was requested for a session.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database.
    session_id : str
        The session.

    Returns
    -------
    bool
        The ``stop_requested`` flag.

    Raises
    ------
    ValidationError
        If there is no such session.
    """
    with engine.connect() as conn:
        flag = conn.execute(
            sa.text("SELECT stop_requested FROM sessions WHERE id = :s"), {"s": session_id}
        ).scalar()
    if flag is None:
        raise _no_session(session_id)
    return bool(flag)


def stale_sessions(engine: Engine, older_than_s: float = STALE_AFTER_S) -> pd.DataFrame:
    """Sessions in a running state whose process stopped beating (candidates to resume).

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database.
    older_than_s : float, optional
        Seconds without a heartbeat (or, for a session that never beat, since its last
        change); never less than :data:`~heimdall_lab.db.captures.STALE_AFTER_S`.

    Returns
    -------
    pandas.DataFrame
        ``id``, ``status``, ``pid``, ``host``, ``silent_s``, oldest first.

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
                "SELECT id, status, pid, host, "
                "extract(epoch FROM now() - coalesce(heartbeat_at, updated_at)) "
                "FROM sessions WHERE status IN ('running', 'stopping') "
                "AND coalesce(heartbeat_at, updated_at) < now() - make_interval(secs => :age) "
                "ORDER BY created_at"
            ),
            {"age": silence},
        ).fetchall()
    df = pd.DataFrame(rows, columns=["id", "status", "pid", "host", "silent_s"])
    df["pid"] = df["pid"].astype("Int64")
    df["silent_s"] = df["silent_s"].astype(np.float64)
    return df


def session_captures(engine: Engine, session_id: str) -> pd.DataFrame:
    """A session's captures, by plan step.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database.
    session_id : str
        The session.

    Returns
    -------
    pandas.DataFrame
        ``step`` (plan step index; <NA> for a capture linked without a step),
        ``capture_id``, ``status``, ``frequency_hz``, ``start_time`` (UTC), ``duration_s``,
        ``progress_percent``, ``iq_url``, ``error_message``, ``heartbeat_at``. Empty for a
        session without captures (or no such session).
    """
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT session_step, id, status, frequency_hz, start_time, duration_s, "
                "progress_percent, iq_url, error_message, heartbeat_at FROM captures "
                "WHERE session_id = :s ORDER BY session_step NULLS LAST, created_at, id"
            ),
            {"s": session_id},
        ).fetchall()
    df = pd.DataFrame(
        rows,
        columns=[
            "step",
            "capture_id",
            "status",
            "frequency_hz",
            "start_time",
            "duration_s",
            "progress_percent",
            "iq_url",
            "error_message",
            "heartbeat_at",
        ],
    )
    df["step"] = df["step"].astype("Int64")
    for col in ("frequency_hz", "duration_s", "progress_percent"):
        df[col] = df[col].astype(np.float64)
    for col in ("start_time", "heartbeat_at"):
        df[col] = pd.to_datetime(df[col], utc=True)
    return df


# ----------------------------------------------------------------------------- events

_EVENT_FIELDS = (
    "session_id",
    "capture_id",
    "receiver",
    "websdr_id",
    "frequency_hz",
    "start_utc",
    "end_utc",
    "statistic",
    "threshold",
    "pfa",
    "metadata",
)


def _event_records(rows: pd.DataFrame | Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    frame = isinstance(rows, pd.DataFrame)
    records = rows.to_dict("records") if frame else [dict(r) for r in rows]  # type: ignore[union-attr]
    out = []
    for i, rec in enumerate(records):
        unknown = sorted(set(rec) - set(_EVENT_FIELDS))
        if unknown:
            raise ValidationError(
                f"event {i}: unknown field(s) {', '.join(map(str, unknown))}; events have "
                f"{', '.join(_EVENT_FIELDS)}"
            )
        clean: dict[str, Any] = {}
        for key in _EVENT_FIELDS:
            value = rec.get(key)
            if value is not None and not isinstance(value, str | dict | list):
                try:
                    if pd.isna(value):
                        value = None
                except (TypeError, ValueError):
                    pass
            clean[key] = value
        if not clean["capture_id"]:
            raise ValidationError(f"event {i} has no capture_id")
        if clean["receiver"] is None and clean["websdr_id"] is None:
            raise ValidationError(f"event {i} names no receiver (give receiver or websdr_id)")
        for key in ("start_utc", "end_utc"):
            if clean[key] is None:
                raise ValidationError(f"event {i} has no {key}")
            clean[key] = _utc(clean[key]).isoformat()
        if clean["websdr_id"] is not None:
            clean["websdr_id"] = int(clean["websdr_id"])
        for key in ("frequency_hz", "statistic", "threshold", "pfa"):
            if clean[key] is not None:
                clean[key] = float(clean[key])
        if isinstance(clean["metadata"], str):
            clean["metadata"] = jsonable(_parse_json(clean["metadata"], i))
        elif clean["metadata"] is not None:
            clean["metadata"] = jsonable(clean["metadata"])
        out.append(clean)
    return out


def _parse_json(text: str, i: int) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise ValidationError(f"event {i}: metadata is not JSON") from None


def write_events(engine: Engine, rows: pd.DataFrame | Iterable[Mapping[str, Any]]) -> int:
    """Write detection events of triggered recording; events stored already are left alone.

    An event is identified by ``(capture_id, receiver, start_utc)``: writing it again (for
    example after a resumed session re-ran its detector) adds nothing.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database.
    rows : pandas.DataFrame or iterable of mappings
        One event each: ``capture_id``; ``receiver`` (name) or ``websdr_id``;
        ``start_utc`` and ``end_utc`` (naive means UTC); optionally ``frequency_hz``
        (default: the capture's), ``statistic``, ``threshold``, ``pfa`` (0-1),
        ``metadata`` (a dict) and ``session_id`` (default: the capture's session).

    Returns
    -------
    int
        Events inserted now (0 when all were stored already).

    Raises
    ------
    ValidationError
        For a missing or unknown field, an unknown capture or receiver.
    DatabaseError
        If the server rejects an event (an end before its start, a pfa outside 0-1).
    """
    records = _event_records(rows)
    if not records:
        return 0
    captures = sorted({str(r["capture_id"]) for r in records})
    names = sorted({str(r["receiver"]) for r in records if r["websdr_id"] is None})
    sql = sa.text(
        "INSERT INTO session_events (session_id, capture_id, websdr_id, frequency_hz, "
        "start_utc, end_utc, statistic, threshold, pfa, metadata) "
        "SELECT coalesce(r.session_id, c.session_id), r.capture_id, "
        "coalesce(r.websdr_id, w.id), coalesce(r.frequency_hz, c.frequency_hz), r.start_utc, "
        "r.end_utc, r.statistic, r.threshold, r.pfa, coalesce(r.metadata, '{}'::jsonb) "
        "FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(session_id text, capture_id text, "
        "receiver text, websdr_id integer, frequency_hz double precision, "
        "start_utc timestamptz, end_utc timestamptz, statistic double precision, "
        "threshold double precision, pfa double precision, metadata jsonb) "
        "JOIN captures c ON c.id = r.capture_id "
        "LEFT JOIN websdrs w ON w.name = r.receiver "
        "ON CONFLICT ON CONSTRAINT session_events_key DO NOTHING"
    )
    try:
        with engine.begin() as conn:
            known = set(
                conn.execute(
                    sa.text("SELECT id FROM captures WHERE id = ANY(:ids)"), {"ids": captures}
                ).scalars()
            )
            missing = [c for c in captures if c not in known]
            if missing:
                raise ValidationError(
                    f"no capture {missing[0]!r} (of {len(missing)} unknown): events belong to "
                    "captures recorded with create_capture"
                )
            if names:
                found = set(
                    conn.execute(
                        sa.text("SELECT name FROM websdrs WHERE name = ANY(:n)"), {"n": names}
                    ).scalars()
                )
                unknown = [n for n in names if n not in found]
                if unknown:
                    raise ValidationError(
                        f"receiver(s) {', '.join(unknown[:5])} are not in the database"
                    )
            written = conn.execute(sql, {"rows": to_json(records, "events")}).rowcount
    except sa_exc.DBAPIError as err:
        raise _db_error("writing events", err) from None
    log.info("wrote %d of %d events", written, len(records))
    return int(written)


def session_events(engine: Engine, session_id: str) -> pd.DataFrame:
    """A session's events, by start time then receiver.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database.
    session_id : str
        The session.

    Returns
    -------
    pandas.DataFrame
        ``id``, ``session_id``, ``capture_id``, ``receiver``, ``websdr_id``,
        ``frequency_hz``, ``start_utc``, ``end_utc`` (UTC), ``statistic``, ``threshold``,
        ``pfa`` (NaN where not given), ``metadata`` (dicts).
    """
    with engine.connect() as conn:
        result = conn.execute(
            sa.text(
                "SELECT e.id, e.session_id, e.capture_id, w.name AS receiver, e.websdr_id, "
                "e.frequency_hz, e.start_utc, e.end_utc, e.statistic, e.threshold, e.pfa, "
                "e.metadata FROM session_events e JOIN websdrs w ON w.id = e.websdr_id "
                "WHERE e.session_id = :s ORDER BY e.start_utc, w.name, e.id"
            ),
            {"s": session_id},
        )
        df = pd.DataFrame(result.fetchall(), columns=list(result.keys()))
    for col in ("start_utc", "end_utc"):
        df[col] = pd.to_datetime(df[col], utc=True)
    for col in ("frequency_hz", "statistic", "threshold", "pfa"):
        df[col] = pd.to_numeric(df[col]).astype(np.float64)
    df["id"] = df["id"].astype(np.int64)
    df["websdr_id"] = df["websdr_id"].astype(np.int64)
    return df
