"""How long measurements are kept and when they are compressed.

On TimescaleDB, :func:`set_policy` installs the server's own policies on ``measurements``
(``add_retention_policy``: whole chunks older than the retention are dropped;
``add_compression_policy``: chunks older than the age given are compressed) and keeps the
refresh policy of the continuous aggregate ``measurement_stats``; TimescaleDB's background
scheduler runs them. Migration 003 starts with compression after 30 days and no retention.
The per-minute statistics in ``measurement_stats`` that were materialized before chunks were
dropped stay.

Plain PostgreSQL has no policies: old measurements go only when :func:`prune` deletes them.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine

from heimdall_lab.db.captures import _utc
from heimdall_lab.db.measurements import stats_aggregate
from heimdall_lab.db.migrations import is_timescale
from heimdall_lab.errors import DatabaseError, ValidationError, first_line

log = logging.getLogger(__name__)

#: What turns a policy off in :func:`set_policy` (and ``heimdall-lab db policy``).
OFF = "off"

_UNITS = {
    "s": 1,
    "sec": 1,
    "secs": 1,
    "second": 1,
    "seconds": 1,
    "m": 60,
    "min": 60,
    "mins": 60,
    "minute": 60,
    "minutes": 60,
    "h": 3600,
    "hr": 3600,
    "hrs": 3600,
    "hour": 3600,
    "hours": 3600,
    "d": 86400,
    "day": 86400,
    "days": 86400,
    "w": 7 * 86400,
    "week": 7 * 86400,
    "weeks": 7 * 86400,
}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]+)\s*$")

_PLAIN_NOTE = (
    "plain PostgreSQL (no TimescaleDB): no retention or compression policy is available; "
    "old measurements are removed only by prune(engine, older_than) "
    "(heimdall-lab db policy --prune AGE)"
)


def parse_duration(value: object, name: str = "duration") -> timedelta:
    """A positive duration: a ``timedelta``, or text such as ``90d``, ``12h``, ``30min``, ``2w``.

    Parameters
    ----------
    value : timedelta, pandas.Timedelta or str
        The duration. Text is a number and a unit: s, min (or m), h, d, w (or their
        English names).
    name : str, default "duration"
        Its name, for the message.

    Returns
    -------
    datetime.timedelta
        The duration.

    Raises
    ------
    ValidationError
        If it is not a positive duration.
    """
    if isinstance(value, timedelta):  # pandas.Timedelta too
        td = pd.Timedelta(value).to_pytimedelta()
    elif isinstance(value, str):
        m = _DURATION.match(value)
        unit = _UNITS.get(m.group(2).lower()) if m else None
        if m is None or unit is None:
            raise ValidationError(
                f"{name} {value[:40]!r} is not a duration; give a number and a unit, e.g. "
                "90d, 12h, 30min, 2w"
            )
        td = timedelta(seconds=float(m.group(1)) * unit)
    else:
        raise ValidationError(
            f"{name} must be a duration such as 90d or a timedelta, got {value!r}"
        )
    if td <= timedelta(0):
        raise ValidationError(f"{name} must be longer than zero, got {value!r}")
    return td


def _interval_job(conn: sa.Connection, proc: str, key: str, table: str) -> timedelta | None:
    value = conn.execute(
        sa.text(
            f"SELECT CAST(config ->> '{key}' AS interval) FROM timescaledb_information.jobs "
            "WHERE proc_name = :proc AND hypertable_name = :table "
            "AND hypertable_schema = current_schema() ORDER BY job_id LIMIT 1"
        ),
        {"proc": proc, "table": table},
    ).scalar()
    return value


def get_policy(engine: Engine) -> dict[str, Any]:
    """What keeps and compresses measurements on this database.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database (migrated).

    Returns
    -------
    dict
        ``server`` ("timescaledb" or "postgresql"); ``retain`` and ``compress_after``
        (timedelta, or None when no such policy is in force); ``stats`` ("continuous
        aggregate" or "view"); ``stats_refresh`` (the aggregate's refresh policy:
        ``schedule_interval``, ``start_offset``, ``end_offset``; None if none);
        ``scheduler`` (True if TimescaleDB's background scheduler is seen running, so the
        policies act; None on plain PostgreSQL); ``note`` (what that means, in words).
    """
    if not is_timescale(engine):
        return {
            "server": "postgresql",
            "retain": None,
            "compress_after": None,
            "stats": "view",
            "stats_refresh": None,
            "scheduler": None,
            "note": _PLAIN_NOTE,
        }
    aggregate = stats_aggregate(engine)
    with engine.connect() as conn:
        retain = _interval_job(conn, "policy_retention", "drop_after", "measurements")
        compress = _interval_job(conn, "policy_compression", "compress_after", "measurements")
        refresh_row = conn.execute(
            sa.text(
                "SELECT schedule_interval, CAST(config ->> 'start_offset' AS interval), "
                "CAST(config ->> 'end_offset' AS interval) FROM timescaledb_information.jobs "
                "WHERE proc_name = 'policy_refresh_continuous_aggregate' "
                "AND hypertable_name = 'measurement_stats' "
                "AND hypertable_schema = current_schema() ORDER BY job_id LIMIT 1"
            )
        ).first()
        scheduler = bool(
            conn.execute(
                sa.text(
                    "SELECT EXISTS (SELECT 1 FROM pg_stat_activity "
                    "WHERE backend_type ILIKE 'TimescaleDB Background Worker%')"
                )
            ).scalar()
        )
    refresh = (
        None
        if refresh_row is None
        else {
            "schedule_interval": refresh_row[0],
            "start_offset": refresh_row[1],
            "end_offset": refresh_row[2],
        }
    )
    notes = []
    if retain is None:
        notes.append("measurements are kept for ever")
    else:
        notes.append(f"chunks of measurements older than {retain} are dropped")
    if compress is None:
        notes.append("no compression")
    else:
        notes.append(f"chunks older than {compress} are compressed")
    if not aggregate:
        notes.append("measurement_stats is a plain view (no continuous aggregate here)")
    if not scheduler:
        notes.append(
            "no TimescaleDB background scheduler is seen on this server (PGlite has none), so "
            "the policies are recorded but act only where the scheduler runs; "
            "measurement_stats is refreshed when read"
        )
    return {
        "server": "timescaledb",
        "retain": retain,
        "compress_after": compress,
        "stats": "continuous aggregate" if aggregate else "view",
        "stats_refresh": refresh,
        "scheduler": scheduler,
        "note": "; ".join(notes),
    }


def _wanted(value: object, name: str) -> timedelta | str | None:
    if value is None:
        return None
    if value is False or (isinstance(value, str) and value.strip().lower() in (OFF, "none")):
        return OFF
    return parse_duration(value, name)


def set_policy(
    engine: Engine,
    *,
    retain: timedelta | str | bool | None = None,
    compress_after: timedelta | str | bool | None = None,
) -> dict[str, Any]:
    """Set how long measurements are kept and when they are compressed (TimescaleDB).

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database (migrated).
    retain : timedelta, str or False, optional
        Drop chunks of measurements older than this (``"90d"``); ``"off"`` or False removes
        the retention policy; None leaves it as it is.
    compress_after : timedelta, str or False, optional
        Compress chunks older than this (``"7d"``); ``"off"`` or False removes the
        compression policy; None leaves it as it is.

    Returns
    -------
    dict
        What is in force now (:func:`get_policy`).

    Raises
    ------
    ValidationError
        For a duration that is not one.
    DatabaseError
        On plain PostgreSQL when a policy is asked for (only :func:`prune` is available
        there), or if the server refuses a policy.
    """
    want_retain = _wanted(retain, "retain")
    want_compress = _wanted(compress_after, "compress_after")
    if not is_timescale(engine):
        if want_retain is not None or want_compress is not None:
            raise DatabaseError(f"cannot set a policy on this server: {_PLAIN_NOTE}")
        return get_policy(engine)
    aggregate = stats_aggregate(engine)
    step = ""
    try:
        with engine.begin() as conn:
            if want_retain is not None:
                step = "the retention policy"
                conn.execute(
                    sa.text("SELECT remove_retention_policy('measurements', if_exists => true)")
                )
                if want_retain != OFF:
                    conn.execute(
                        sa.text("SELECT add_retention_policy('measurements', drop_after => :d)"),
                        {"d": want_retain},
                    )
            if want_compress is not None:
                step = "the compression policy"
                conn.execute(
                    sa.text("SELECT remove_compression_policy('measurements', if_exists => true)")
                )
                if want_compress != OFF:
                    conn.execute(
                        sa.text(
                            "SELECT add_compression_policy('measurements', compress_after => :d)"
                        ),
                        {"d": want_compress},
                    )
            if aggregate:
                step = "the refresh policy of measurement_stats"
                conn.execute(
                    sa.text(
                        "SELECT add_continuous_aggregate_policy('measurement_stats', "
                        "start_offset => NULL, end_offset => interval '1 minute', "
                        "schedule_interval => interval '5 minutes', if_not_exists => true)"
                    )
                )
    except sa_exc.DBAPIError as err:
        raise DatabaseError(
            f"setting {step} failed; it is unavailable on this server: {first_line(err)}"
        ) from None
    policy = get_policy(engine)
    log.info(
        "policy: retain %s, compress after %s",
        policy["retain"] or "for ever",
        policy["compress_after"] or "never",
    )
    return policy


def prune(engine: Engine, older_than: timedelta | str | datetime | pd.Timestamp) -> int:
    """Delete measurements older than an age (or a time): retention by hand, on any server.

    Only ``measurements`` rows go; captures, sessions and events stay.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database (migrated).
    older_than : timedelta, str, datetime or pandas.Timestamp
        An age (``"90d"``, a timedelta: rows with ``timestamp_utc`` before the server's
        ``now()`` minus it), or a time (rows before it; naive means UTC).

    Returns
    -------
    int
        Rows deleted.

    Raises
    ------
    ValidationError
        For an age that is not a positive duration.
    DatabaseError
        If the server refuses the delete.
    """
    if isinstance(older_than, datetime) and not isinstance(older_than, pd.Timedelta):
        cutoff_sql = "CAST(:cutoff AS timestamptz)"
        params: dict[str, Any] = {"cutoff": _utc(older_than).to_pydatetime()}
    else:
        cutoff_sql = "now() - CAST(:age AS interval)"
        params = {"age": parse_duration(older_than, "older_than")}
    try:
        with engine.begin() as conn:
            n = conn.execute(
                sa.text(f"DELETE FROM measurements WHERE timestamp_utc < {cutoff_sql}"), params
            ).rowcount
    except sa_exc.DBAPIError as err:
        raise DatabaseError(f"pruning measurements failed: {first_line(err)}") from None
    log.info("pruned %d measurement rows older than %s", n, older_than)
    return int(n)
