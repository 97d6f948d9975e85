"""The ``measurements`` table: bulk writes (binary COPY, INSERT fallback) and reads."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, Literal

import numpy as np
import pandas as pd
import sqlalchemy as sa
from psycopg2 import errors as pg_errors
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine

from heimdall_lab.db.captures import _utc
from heimdall_lab.db.columns import _MEASUREMENT_TYPES, _Columns, _prepare
from heimdall_lab.db.copy import _CopyStream
from heimdall_lab.db.engine import _info
from heimdall_lab.db.filters import frequency_clause, receiver_names
from heimdall_lab.db.migrations import is_timescale
from heimdall_lab.db.receivers import _receiver_ids
from heimdall_lab.errors import DatabaseError, ValidationError, first_line
from heimdall_lab.ids import check_capture_id

log = logging.getLogger(__name__)


_BUCKET_ORIGIN = "2000-01-03 00:00:00+00"  # time_bucket's default origin (a Monday)

# ----------------------------------------------------------------------------- measurements: write

_INSERT_COLUMNS = ", ".join(c for c, _ in _MEASUREMENT_TYPES)
_STAGE_TABLE = "heimdall_measurements_stage"
_COPY_CHUNK_BYTES = 4 << 20


def _batches(cols: _Columns, budget_bytes: int, max_rows: int) -> Iterator[tuple[int, int]]:
    longest = max((len(p) for p in cols.psd if p is not None), default=0)
    per_row = 300 + 8 * longest
    step = max(1, min(max_rows, budget_bytes // per_row))
    for start in range(0, cols.n, step):
        yield start, min(cols.n, start + step)


def _lock_references(cursor: Any, capture_id: str, websdr_ids: np.ndarray) -> bool:
    """Check and lock (FOR KEY SHARE) the rows the new measurements reference.

    That is what the foreign-key triggers do for every row; when the role may set
    ``session_replication_role`` (a superuser, like the embedded server's) and
    ``measurements`` is a plain table, the INSERT then runs with the per-row triggers off
    (``replica``) and this one check stands for them all. Returns whether it does.
    """
    ids = sorted(set(websdr_ids.tolist()))
    cursor.execute("SELECT id FROM captures WHERE id = %s FOR KEY SHARE", (capture_id,))
    if cursor.fetchone() is None:
        raise ValidationError(f"no capture {capture_id!r}: create it with create_capture")
    cursor.execute("SELECT id FROM websdrs WHERE id = ANY(%s) FOR KEY SHARE", (ids,))
    found = {int(r[0]) for r in cursor.fetchall()}
    if found != set(ids):
        raise ValidationError(f"websdr_id(s) {sorted(set(ids) - found)} are not in the database")
    cursor.execute(
        "SELECT current_setting('is_superuser') = 'on' AND NOT EXISTS ("
        " SELECT 1 FROM pg_trigger t WHERE t.tgrelid = 'measurements'::regclass"
        " AND NOT t.tgisinternal)"
        " AND NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')"
    )
    row = cursor.fetchone()
    if not (row and row[0]):
        return False
    cursor.execute("SET LOCAL session_replication_role = replica")
    return True


def _write_copy(conn: Connection, cols: _Columns, capture_id: str) -> int:
    """COPY straight into measurements; a batch that meets a stored key goes via staging."""
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    written = 0
    staged = False
    try:
        bypass = _lock_references(cursor, capture_id, cols.websdr_id)
        per_row = 300 + 8 * max((len(p) for p in cols.psd if p is not None), default=0)
        chunk = max(1, _COPY_CHUNK_BYTES // per_row)
        for start, stop in _batches(cols, 256 << 20, 1_000_000):
            cursor.execute("SAVEPOINT heimdall_copy")
            try:
                cursor.copy_expert(
                    f"COPY measurements ({_INSERT_COLUMNS}) FROM STDIN WITH (FORMAT binary)",
                    _CopyStream(cols, capture_id, start, stop, chunk),
                    size=1 << 20,
                )
                written += stop - start
                cursor.execute("RELEASE SAVEPOINT heimdall_copy")
                continue
            except pg_errors.UniqueViolation:
                cursor.execute("ROLLBACK TO SAVEPOINT heimdall_copy")
            if not staged:
                cursor.execute(
                    f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE_TABLE} "
                    "(LIKE measurements INCLUDING DEFAULTS) ON COMMIT DROP"
                )
                staged = True
            cursor.copy_expert(
                f"COPY {_STAGE_TABLE} ({_INSERT_COLUMNS}) FROM STDIN WITH (FORMAT binary)",
                _CopyStream(cols, capture_id, start, stop, chunk),
                size=1 << 20,
            )
            cursor.execute(
                f"INSERT INTO measurements ({_INSERT_COLUMNS}) "
                f"SELECT {_INSERT_COLUMNS} FROM {_STAGE_TABLE} ON CONFLICT DO NOTHING"
            )
            written += cursor.rowcount
            cursor.execute(f"TRUNCATE {_STAGE_TABLE}")
        if bypass:
            cursor.execute("SET LOCAL session_replication_role = origin")
    finally:
        cursor.close()
    return written


def _python_rows(cols: _Columns, capture_id: str, start: int, stop: int) -> list[tuple[Any, ...]]:
    sl = slice(start, stop)
    times = pd.to_datetime(cols.timestamp_us[sl], unit="us", utc=True).to_pydatetime()
    columns: list[list[Any]] = []
    for col, kind in _MEASUREMENT_TYPES:
        if col == "capture_id":
            columns.append([capture_id] * (stop - start))
        elif col == "websdr_id":
            columns.append(cols.websdr_id[sl].tolist())
        elif col == "timestamp_utc":
            columns.append(list(times))
        elif kind == "float8":
            v = cols.floats[col][sl]
            columns.append([None if x != x else x for x in v.tolist()])
        elif col == "samples_count":
            v, null = cols.samples_count
            columns.append(
                [None if m else x for x, m in zip(v[sl].tolist(), null[sl].tolist(), strict=True)]
            )
        elif col == "signal_present":
            v, null = cols.signal_present
            columns.append(
                [None if m else x for x, m in zip(v[sl].tolist(), null[sl].tolist(), strict=True)]
            )
        elif col == "psd":
            columns.append([None if p is None else p.tolist() for p in cols.psd[sl]])
        elif col == "iq_path":
            columns.append(cols.iq_path[sl])
        elif col == "metadata":
            columns.append(cols.metadata[sl])
    return list(zip(*columns, strict=True))


def _write_insert(conn: Connection, cols: _Columns, capture_id: str) -> int:
    placeholders = []
    for col, kind in _MEASUREMENT_TYPES:
        if kind == "float4[]":
            placeholders.append("%s::real[]")
        elif kind == "jsonb":
            placeholders.append("%s::jsonb")
        elif col == "timestamp_utc":
            placeholders.append("%s::timestamptz")
        else:
            placeholders.append("%s")
    template = f"({', '.join(placeholders)})"
    head = f"INSERT INTO measurements ({_INSERT_COLUMNS}) VALUES ".encode()
    tail = b" ON CONFLICT DO NOTHING"
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    written = 0
    try:
        for start, stop in _batches(cols, 2 << 20, 5000):
            rows = _python_rows(cols, capture_id, start, stop)
            values = b",".join(cursor.mogrify(template, row) for row in rows)
            cursor.execute(head + values + tail)
            written += cursor.rowcount
    finally:
        cursor.close()
    return written


def _connection_lost(err: BaseException) -> bool:
    """Whether a driver error means the connection failed (retry) rather than a rejection."""
    import psycopg2

    if isinstance(err, sa_exc.DBAPIError):
        if err.connection_invalidated:
            return True
        err = err.orig if err.orig is not None else err
    return isinstance(err, psycopg2.OperationalError | psycopg2.InterfaceError)


def write_measurements(
    engine: Engine,
    capture_id: str,
    rows: pd.DataFrame,
    *,
    method: Literal["auto", "copy", "insert"] = "auto",
) -> int:
    """Write one capture's measurements; rows already stored are left as they are.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database.
    capture_id : str
        The capture (created with :func:`create_capture`).
    rows : pandas.DataFrame
        One row per receiver per time: ``receiver`` (name; or ``websdr_id``),
        ``timestamp_utc`` (naive means UTC) and any of :data:`MEASUREMENT_COLUMNS`
        (``sample_rate_hz`` and ``n_samples``, as :mod:`heimdall_lab.dsp` names them, are
        taken for ``sample_rate`` and ``samples_count``). Missing columns and NaN/None are
        stored as NULL, except ``frequency_hz``, which defaults to the capture's.
        ``psd`` holds 1-D arrays (stored as ``real[]``; see the schema for the bin layout),
        ``metadata`` dicts (or JSON strings).
    method : {"auto", "copy", "insert"}, default "auto"
        ``copy``: binary ``COPY`` into a temporary table, then ``INSERT ... SELECT ... ON
        CONFLICT DO NOTHING``. ``insert``: multi-row ``INSERT ... ON CONFLICT DO NOTHING``
        statements, for servers without ``COPY FROM STDIN`` (PGlite). ``auto``: ``copy``
        unless the server is PGlite.

    Returns
    -------
    int
        Rows inserted now: rows whose ``(capture_id, websdr_id, timestamp_utc)`` was stored
        already (or repeats within ``rows``) are not counted, so writing the same rows again
        returns 0. All rows are written in one transaction, or none.

    Raises
    ------
    ValidationError
        If the capture does not exist, a receiver is unknown, a column is unknown or of the
        wrong type, or a timestamp is missing.
    DatabaseError
        If the server rejects the rows (for example a value breaking a CHECK constraint).
    """
    check_capture_id(capture_id)
    if method not in ("auto", "copy", "insert"):
        raise ValidationError(f"method must be 'auto', 'copy' or 'insert', got {method!r}")
    use_copy = method == "copy" or (method == "auto" and _info(engine).copy)
    t0 = time.perf_counter()
    try:
        with engine.begin() as conn:
            freq = conn.execute(
                sa.text("SELECT frequency_hz FROM captures WHERE id = :id"), {"id": capture_id}
            ).scalar()
            if freq is None:
                raise ValidationError(f"no capture {capture_id!r}: create it with create_capture")
            cols = _prepare(rows, _receiver_ids(conn), float(freq))
            if cols.n == 0:
                return 0
            writer = _write_copy if use_copy else _write_insert
            written = writer(conn, cols, capture_id)
    except sa_exc.DBAPIError as err:
        raise DatabaseError(
            f"writing measurements of {capture_id} failed: {first_line(err)}",
            retryable=_connection_lost(err),
        ) from None
    except Exception as err:
        if type(err).__module__.startswith("psycopg2"):
            raise DatabaseError(
                f"writing measurements of {capture_id} failed: {first_line(err)}",
                retryable=_connection_lost(err),
            ) from None
        raise
    log.info(
        "wrote %d of %d measurement rows of %s by %s in %.2f s",
        written,
        cols.n,
        capture_id,
        "COPY" if use_copy else "INSERT",
        time.perf_counter() - t0,
    )
    return written


# ----------------------------------------------------------------------------- measurements: read

_READ_COLUMNS = [c for c, _ in _MEASUREMENT_TYPES if c != "websdr_id"]


def query_measurements(
    engine: Engine,
    *,
    capture_id: str | None = None,
    receivers: str | Sequence[str] | None = None,
    start: datetime | pd.Timestamp | str | None = None,
    end: datetime | pd.Timestamp | str | None = None,
    include_psd: bool = True,
    frequency_hz: float | None = None,
) -> pd.DataFrame:
    """Measurements matching all the given filters, by time then receiver.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database.
    capture_id : str, optional
        Only this capture.
    receivers : str or sequence of str, optional
        Only these receivers (names).
    start, end : datetime-like, optional
        Only ``start <= timestamp_utc < end`` (naive means UTC).
    include_psd : bool, default True
        Fetch the ``psd`` arrays (float32 numpy arrays; None where NULL).
    frequency_hz : float, optional
        Only rows whose ``frequency_hz`` is within
        :data:`~heimdall_lab.db.filters.FREQUENCY_TOLERANCE_HZ` (0.5 Hz) of this.

    Returns
    -------
    pandas.DataFrame
        Columns ``capture_id``, ``receiver``, ``timestamp_utc`` (UTC), the measurement
        columns (NULL as NaN / None / <NA>) and ``metadata`` (dicts).

    Raises
    ------
    ValidationError
        For a bad frequency.
    """
    where, params = _filters(capture_id, receivers, start, end, frequency_hz)
    cols = [c for c in _READ_COLUMNS if include_psd or c != "psd"]
    select = ", ".join(
        "array_to_string(m.psd, ',') AS psd, cardinality(m.psd) AS psd_len"
        if c == "psd"
        else f"m.{c}"
        for c in cols
    )
    sql = (
        f"SELECT {select}, w.name AS receiver FROM measurements m "
        f"JOIN websdrs w ON w.id = m.websdr_id {where} ORDER BY m.timestamp_utc, w.name"
    )
    with engine.connect() as conn:
        result = conn.execute(sa.text(sql), params)
        df = pd.DataFrame(result.fetchall(), columns=list(result.keys()))
    psd_len = df["psd_len"].tolist() if include_psd else []
    order = ["capture_id", "receiver", *[c for c in cols if c != "capture_id"]]
    df = df[order]
    df["timestamp_utc"] = pd.to_datetime(df["timestamp_utc"], utc=True)
    for col, kind in _MEASUREMENT_TYPES:
        if col in df.columns and kind == "float8":
            df[col] = pd.to_numeric(df[col]).astype(np.float64)
    df["samples_count"] = df["samples_count"].astype("Int64")
    df["signal_present"] = df["signal_present"].astype("boolean")
    if include_psd:
        df["psd"] = _parse_psd(df["psd"].tolist(), psd_len)
    return df


def _parse_psd(texts: list[str | None], lengths: list[float | None]) -> list[np.ndarray | None]:
    """``real[]`` values fetched as comma-separated text, parsed in one numpy call."""
    out: list[np.ndarray | None] = [
        np.empty(0, np.float32) if isinstance(t, str) else None for t in texts
    ]
    full = [i for i, n in enumerate(lengths) if isinstance(texts[i], str) and n and n > 0]
    if not full:
        return out
    counts = np.array([int(lengths[i]) for i in full], np.int64)  # type: ignore[arg-type]
    values = np.fromstring(",".join(str(texts[i]) for i in full), dtype=np.float32, sep=",")
    if len(values) != int(counts.sum()):
        raise DatabaseError("could not parse the psd arrays the server returned")
    for i, part in zip(full, np.split(values, np.cumsum(counts)[:-1]), strict=True):
        out[i] = part
    return out


def _filters(
    capture_id: str | None,
    receivers: str | Sequence[str] | None,
    start: datetime | pd.Timestamp | str | None,
    end: datetime | pd.Timestamp | str | None,
    frequency_hz: float | None = None,
) -> tuple[str, dict[str, Any]]:
    clauses: list[str] = []
    params: dict[str, Any] = {}
    if capture_id is not None:
        clauses.append("m.capture_id = :capture_id")
        params["capture_id"] = capture_id
    if receivers is not None:
        clauses.append("w.name = ANY(:names)")
        params["names"] = receiver_names(receivers)
    if start is not None:
        clauses.append("m.timestamp_utc >= :start")
        params["start"] = _utc(start).to_pydatetime()
    if end is not None:
        clauses.append("m.timestamp_utc < :end")
        params["end"] = _utc(end).to_pydatetime()
    if frequency_hz is not None:
        clause, values = frequency_clause("m.frequency_hz", frequency_hz)
        clauses.append(clause)
        params.update(values)
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params


def measurements_for_capture(
    engine: Engine, capture_id: str, *, include_psd: bool = True
) -> pd.DataFrame:
    """All measurements of one capture (see :func:`query_measurements`).

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database.
    capture_id : str
        The capture.
    include_psd : bool, default True
        Fetch the PSD arrays.

    Returns
    -------
    pandas.DataFrame
        As :func:`query_measurements`.
    """
    return query_measurements(engine, capture_id=capture_id, include_psd=include_psd)


def measurements_for_receiver(
    engine: Engine,
    receiver: str,
    *,
    start: datetime | pd.Timestamp | str | None = None,
    end: datetime | pd.Timestamp | str | None = None,
    include_psd: bool = False,
) -> pd.DataFrame:
    """One receiver's measurements, optionally within ``[start, end)``.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database.
    receiver : str
        Receiver name.
    start, end : datetime-like, optional
        Time range (naive means UTC).
    include_psd : bool, default False
        Fetch the PSD arrays.

    Returns
    -------
    pandas.DataFrame
        As :func:`query_measurements`.
    """
    return query_measurements(
        engine, receivers=receiver, start=start, end=end, include_psd=include_psd
    )


def measurements_between(
    engine: Engine,
    start: datetime | pd.Timestamp | str,
    end: datetime | pd.Timestamp | str,
    *,
    receivers: str | Sequence[str] | None = None,
    capture_id: str | None = None,
    include_psd: bool = False,
) -> pd.DataFrame:
    """Measurements with ``start <= timestamp_utc < end``.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database.
    start, end : datetime-like
        Time range (naive means UTC).
    receivers : str or sequence of str, optional
        Only these receivers.
    capture_id : str, optional
        Only this capture.
    include_psd : bool, default False
        Fetch the PSD arrays.

    Returns
    -------
    pandas.DataFrame
        As :func:`query_measurements`.
    """
    return query_measurements(
        engine,
        capture_id=capture_id,
        receivers=receivers,
        start=start,
        end=end,
        include_psd=include_psd,
    )


def _bucket_seconds(bucket: float | str | pd.Timedelta | np.timedelta64) -> float:
    try:
        seconds = (
            float(bucket)
            if isinstance(bucket, int | float)
            else pd.Timedelta(bucket).total_seconds()
        )
    except (TypeError, ValueError):
        raise ValidationError(
            f"bucket must be a duration such as 60 (seconds), '5min' or '1h', got {bucket!r}"
        ) from None
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValidationError(f"bucket must be a positive duration, got {bucket!r}")
    if seconds * 1e6 != round(seconds * 1e6):
        raise ValidationError(f"bucket must be a whole number of microseconds, got {bucket!r}")
    return seconds


def _bucket_expr(engine: Engine, column: str, *, timescale: bool) -> str:
    """SQL for the start of ``column``'s bucket of ``:bucket_s`` seconds from ``:origin``.

    ``time_bucket`` on TimescaleDB, ``date_bin`` on PostgreSQL 14+, ``floor`` of the epoch
    before that: the same buckets on all.
    """
    width = "make_interval(secs => :bucket_s)"
    origin = "CAST(:origin AS timestamptz)"
    if timescale:
        return f"time_bucket({width}, {column}, {origin})"
    if _info(engine).version_num >= 140000:
        return f"date_bin({width}, {column}, {origin})"
    return (
        f"to_timestamp(floor((extract(epoch FROM {column}) - extract(epoch FROM "
        f"{origin})) / :bucket_s) * :bucket_s + extract(epoch FROM {origin}))"
    )


def bucketed_measurements(
    engine: Engine,
    bucket: float | str | pd.Timedelta | np.timedelta64,
    *,
    start: datetime | pd.Timestamp | str | None = None,
    end: datetime | pd.Timestamp | str | None = None,
    capture_id: str | None = None,
    receivers: str | Sequence[str] | None = None,
    frequency_hz: float | None = None,
) -> pd.DataFrame:
    """Per-receiver aggregates over time buckets: count, SNR and frequency offset statistics.

    Buckets are aligned on 2000-01-03T00:00Z (TimescaleDB's default origin) and computed
    in the database: ``time_bucket`` on TimescaleDB, ``date_bin`` on plain PostgreSQL 14+
    (``floor`` of the epoch before that), with the same results.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database.
    bucket : float (seconds), str, Timedelta or timedelta64
        Bucket width, e.g. ``60``, ``"5min"``; a whole number of microseconds.
    start, end : datetime-like, optional
        Only rows with ``start <= timestamp_utc < end``.
    capture_id : str, optional
        Only this capture.
    receivers : str or sequence of str, optional
        Only these receivers.
    frequency_hz : float, optional
        Only rows whose ``frequency_hz`` is within
        :data:`~heimdall_lab.db.filters.FREQUENCY_TOLERANCE_HZ` (0.5 Hz) of this.

    Returns
    -------
    pandas.DataFrame
        One row per (bucket, receiver) that has rows, sorted so: ``bucket`` (UTC start),
        ``receiver``, ``count`` (rows), ``snr_count`` (non-NULL SNRs), ``snr_mean``,
        ``snr_min``, ``snr_max`` (dB; the mean is of the dB values), ``offset_mean``,
        ``offset_min``, ``offset_max`` (``frequency_offset_hz``, Hz). NULLs are ignored as
        SQL aggregates do (NaN where a bucket has none).

    Raises
    ------
    ValidationError
        If ``bucket`` is not a positive whole number of microseconds, or the frequency is
        bad.
    """
    seconds = _bucket_seconds(bucket)
    where, params = _filters(capture_id, receivers, start, end, frequency_hz)
    params["bucket_s"] = seconds
    params["origin"] = _utc(_BUCKET_ORIGIN).to_pydatetime()
    expr = _bucket_expr(engine, "m.timestamp_utc", timescale=is_timescale(engine))
    sql = (
        f"SELECT {expr} AS bucket, w.name AS receiver, count(*) AS count, "
        "count(m.snr_db) AS snr_count, avg(m.snr_db) AS snr_mean, min(m.snr_db) AS snr_min, "
        "max(m.snr_db) AS snr_max, avg(m.frequency_offset_hz) AS offset_mean, "
        "min(m.frequency_offset_hz) AS offset_min, max(m.frequency_offset_hz) AS offset_max "
        f"FROM measurements m JOIN websdrs w ON w.id = m.websdr_id {where} "
        "GROUP BY 1, 2 ORDER BY 1, 2"
    )
    with engine.connect() as conn:
        result = conn.execute(sa.text(sql), params)
        df = pd.DataFrame(result.fetchall(), columns=list(result.keys()))
    df["bucket"] = pd.to_datetime(df["bucket"], utc=True)
    df["count"] = df["count"].astype(np.int64)
    df["snr_count"] = df["snr_count"].astype(np.int64)
    for col in ("snr_mean", "snr_min", "snr_max", "offset_mean", "offset_min", "offset_max"):
        df[col] = pd.to_numeric(df[col]).astype(np.float64)
    return df


# ----------------------------------------------------------------------------- statistics

#: Columns of :func:`measurement_stats`.
STATS_COLUMNS = [
    "bucket",
    "receiver",
    "frequency_hz",
    "n",
    "snr_db_mean",
    "snr_db_min",
    "snr_db_max",
    "cn0_dbhz_mean",
    "noise_power_dbfs_mean",
    "signal_power_dbfs_mean",
    "occupancy",
]
_MINUTE_NS = 60_000_000_000


def stats_aggregate(engine: Engine) -> bool:
    """Whether ``measurement_stats`` is a TimescaleDB continuous aggregate on this database.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database (migrated).

    Returns
    -------
    bool
        True for the continuous aggregate, False for the plain view (plain PostgreSQL).
    """
    if not is_timescale(engine):
        return False
    with engine.connect() as conn:
        return bool(
            conn.execute(
                sa.text(
                    "SELECT EXISTS (SELECT 1 FROM timescaledb_information.continuous_aggregates "
                    "WHERE view_schema = current_schema() AND view_name = 'measurement_stats')"
                )
            ).scalar()
        )


def refresh_stats(engine: Engine, end: datetime | pd.Timestamp | str | None = None) -> bool:
    """Materialize the continuous aggregate ``measurement_stats`` up to ``end``.

    Refreshes from the beginning, so no bucket below the aggregate's watermark is left
    unmaterialized; buckets already materialized and not changed since cost nothing. Rows
    written into buckets the aggregate had materialized count once this has run (real-time
    aggregation covers only buckets above the watermark).

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database (migrated).
    end : datetime-like, optional
        Up to this time (rounded up to a whole minute); default everything.

    Returns
    -------
    bool
        True if refreshed; False on plain PostgreSQL (nothing to refresh) or if the server
        refused (logged as a warning).
    """
    if not stats_aggregate(engine):
        return False
    window_end = None
    if end is not None:
        window_end = _utc(end).ceil("min").to_pydatetime()
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(
                sa.text(
                    "CALL refresh_continuous_aggregate('measurement_stats', NULL, "
                    "CAST(:end AS timestamptz))"
                ),
                {"end": window_end},
            )
    except sa_exc.DBAPIError as err:
        log.warning(
            "could not refresh measurement_stats (%s): rows written into buckets it had "
            "materialized are left out until its refresh policy runs",
            first_line(err),
        )
        return False
    return True


def measurement_stats(
    engine: Engine,
    *,
    bucket: float | str | pd.Timedelta | np.timedelta64 = "1min",
    start: datetime | pd.Timestamp | str | None = None,
    end: datetime | pd.Timestamp | str | None = None,
    frequency_hz: float | None = None,
    receivers: str | Sequence[str] | None = None,
    session_id: str | None = None,
    capture_id: str | None = None,
    refresh: bool = True,
) -> pd.DataFrame:
    """Statistics of measurements per time bucket, receiver and frequency.

    The same answers on TimescaleDB and plain PostgreSQL. On TimescaleDB they come from the
    continuous aggregate ``measurement_stats`` (per minute; coarser buckets re-aggregate it
    with count-weighted means) when the bucket is a whole number of minutes and ``start`` and
    ``end`` fall on whole minutes; otherwise, and on plain PostgreSQL, they are computed from
    the measurements (``date_bin``). Buckets are aligned on 2000-01-03T00:00Z, as
    :func:`bucketed_measurements`'s.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database (migrated).
    bucket : float (seconds), str, Timedelta or timedelta64, default "1min"
        Bucket width; a whole number of microseconds.
    start, end : datetime-like, optional
        Only rows with ``start <= timestamp_utc < end`` (naive means UTC).
    frequency_hz : float, optional
        Only rows within :data:`~heimdall_lab.db.filters.FREQUENCY_TOLERANCE_HZ` of this.
    receivers : str or sequence of str, optional
        Only these receivers (names).
    session_id : str, optional
        Only the captures of this recording session.
    capture_id : str, optional
        Only this capture.
    refresh : bool, default True
        On TimescaleDB, first bring the aggregate up to date (:func:`refresh_stats`), so
        rows written late into buckets it had materialized count. False reads it as it is.

    Returns
    -------
    pandas.DataFrame
        One row per (bucket, receiver, frequency_hz) with rows, in that order:
        ``bucket`` (UTC start), ``receiver``, ``frequency_hz``, ``n`` (rows),
        ``snr_db_mean``, ``snr_db_min``, ``snr_db_max``, ``cn0_dbhz_mean``,
        ``noise_power_dbfs_mean``, ``signal_power_dbfs_mean`` (means of the dB values;
        NULLs ignored, NaN where a bucket has none) and ``occupancy`` (the share of rows
        with ``signal_present``, of those that say).

    Raises
    ------
    ValidationError
        For a bad bucket, frequency or receiver name.
    """
    seconds = _bucket_seconds(bucket)
    lo = None if start is None else _utc(start)
    hi = None if end is None else _utc(end)
    aggregate = stats_aggregate(engine)
    aligned = all(t is None or t.value % _MINUTE_NS == 0 for t in (lo, hi))
    use_aggregate = aggregate and seconds % 60 == 0 and aligned
    alias = "s" if use_aggregate else "m"
    time_col = "s.bucket" if use_aggregate else "m.timestamp_utc"
    clauses: list[str] = []
    params: dict[str, Any] = {
        "bucket_s": seconds,
        "origin": _utc(_BUCKET_ORIGIN).to_pydatetime(),
    }
    joins = f"JOIN websdrs w ON w.id = {alias}.websdr_id"
    if lo is not None:
        clauses.append(f"{time_col} >= :start")
        params["start"] = lo.to_pydatetime()
    if hi is not None:
        clauses.append(f"{time_col} < :end")
        params["end"] = hi.to_pydatetime()
    if frequency_hz is not None:
        clause, values = frequency_clause(f"{alias}.frequency_hz", frequency_hz)
        clauses.append(clause)
        params.update(values)
    if receivers is not None:
        clauses.append("w.name = ANY(:names)")
        params["names"] = receiver_names(receivers)
    if capture_id is not None:
        clauses.append(f"{alias}.capture_id = :capture_id")
        params["capture_id"] = capture_id
    if session_id is not None:
        joins += f" JOIN captures c ON c.id = {alias}.capture_id"
        clauses.append("c.session_id = :session_id")
        params["session_id"] = session_id
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    expr = _bucket_expr(engine, time_col, timescale=aggregate)
    if use_aggregate:

        def mean(name: str) -> str:
            return (
                f"CAST(sum(s.{name}_sum) AS double precision) / "
                f"CAST(nullif(sum(s.{name}_n), 0) AS double precision)"
            )

        select = (
            f"CAST(sum(s.n) AS bigint) AS n, {mean('snr_db')} AS snr_db_mean, "
            "min(s.snr_db_min) AS snr_db_min, "
            f"max(s.snr_db_max) AS snr_db_max, {mean('cn0_dbhz')} AS cn0_dbhz_mean, "
            f"{mean('noise_power_dbfs')} AS noise_power_dbfs_mean, "
            f"{mean('signal_power_dbfs')} AS signal_power_dbfs_mean, "
            f"{mean('occupancy')} AS occupancy"
        )
        source = "measurement_stats s"
        if refresh:
            refresh_stats(engine, hi)
    else:
        select = (
            "count(*) AS n, avg(m.snr_db) AS snr_db_mean, min(m.snr_db) AS snr_db_min, "
            "max(m.snr_db) AS snr_db_max, avg(m.cn0_dbhz) AS cn0_dbhz_mean, "
            "avg(m.noise_power_dbfs) AS noise_power_dbfs_mean, "
            "avg(m.signal_power_dbfs) AS signal_power_dbfs_mean, "
            "avg(CAST(CAST(m.signal_present AS integer) AS double precision)) AS occupancy"
        )
        source = "measurements m"
    sql = (
        f"SELECT {expr} AS bucket, w.name AS receiver, {alias}.frequency_hz AS frequency_hz, "
        f"{select} FROM {source} {joins} {where} GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
    )
    log.debug("measurement_stats from %s", "the continuous aggregate" if use_aggregate else "rows")
    with engine.connect() as conn:
        rows = conn.execute(sa.text(sql), params).fetchall()
    df = pd.DataFrame(rows, columns=STATS_COLUMNS)
    df["bucket"] = pd.to_datetime(df["bucket"], utc=True)
    df["receiver"] = df["receiver"].astype(object)
    df["n"] = df["n"].astype(np.int64)
    for col in STATS_COLUMNS[4:]:
        df[col] = pd.to_numeric(df[col]).astype(np.float64)
    df["frequency_hz"] = df["frequency_hz"].astype(np.float64)
    return df
