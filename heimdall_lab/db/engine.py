"""The database engine: where the database is, connections, UTC sessions, masked URLs."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool, QueuePool

from heimdall_lab.db.migrations import migrate
from heimdall_lab.db.server import start_embedded
from heimdall_lab.errors import DatabaseError, ValidationError, first_line
from heimdall_lab.urls import mask_url

log = logging.getLogger(__name__)


#: Environment variable holding the database URL; unset means the embedded server.
URL_ENV = "HEIMDALL_DATABASE_URL"


def _normalise_url(url: str | URL) -> URL:
    try:
        u = make_url(url)
    except (sa_exc.ArgumentError, ValueError):
        # The parser's own message may quote part of a password: it is not shown.
        raise ValidationError(
            f"database URL {mask_url(url)} is not a valid URL "
            "(postgresql://user:password@host:port/database, the port a number)"
        ) from None
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg2")
    if u.drivername != "postgresql+psycopg2":
        raise ValidationError(
            f"database URL {mask_url(u)} must be postgresql:// (psycopg2), got {u.drivername}"
        )
    return u


def database_identity(url: str | URL | None) -> str:
    """Which database a URL names, without credentials: ``user@host:port/database``.

    Two URLs with the same identity reach the same database whatever their driver name or
    password; ``None`` (no URL: the embedded server) is ``"embedded"``.

    Parameters
    ----------
    url : str, sqlalchemy.engine.URL or None
        A database URL.

    Returns
    -------
    str
        The identity, safe to store and show.

    Raises
    ------
    ValidationError
        If the URL is not a PostgreSQL URL.
    """
    if url is None:
        return "embedded"
    u = _normalise_url(url)
    return f"{u.username or ''}@{u.host or ''}:{u.port or 5432}/{u.database or ''}"


def database_url() -> str | None:
    """The database URL from ``HEIMDALL_DATABASE_URL``, or None when it is unset or empty.

    Returns
    -------
    str or None
        The URL as given (it may hold a password: log it only through :func:`mask_url`).
    """
    value = os.environ.get(URL_ENV, "").strip()
    return value or None


@dataclass
class _ServerInfo:
    copy: bool  # COPY FROM STDIN works (not PGlite)
    version_num: int


_SERVER_INFO: weakref.WeakKeyDictionary[Engine, _ServerInfo] = weakref.WeakKeyDictionary()
_SERVER_INFO_LOCK = threading.Lock()


def _probe(url: URL) -> tuple[str, int]:
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            row = conn.execute(
                sa.text("SELECT version(), current_setting('server_version_num')::int")
            ).one()
        return str(row[0]), int(row[1])
    except sa_exc.OperationalError as err:
        raise DatabaseError(
            f"cannot connect to {mask_url(url)}: {first_line(err)}", retryable=True
        ) from None
    finally:
        engine.dispose()


def _set_utc(dbapi_connection: Any, _record: Any) -> None:
    cur = dbapi_connection.cursor()
    try:
        cur.execute("SET TIME ZONE 'UTC'")
    finally:
        cur.close()
    dbapi_connection.commit()


def get_engine(
    url: str | URL | None = None,
    *,
    pool_size: int = 5,
    max_overflow: int = 5,
    pool_timeout: float = 30.0,
    single_connection: bool | None = None,
    apply_migrations: bool = True,
    home: str | os.PathLike[str] | None = None,
    echo: bool = False,
) -> Engine:
    """A pooled SQLAlchemy engine on the heimdall database, migrated.

    No receivers are added: seed the default ones explicitly with
    :func:`heimdall_lab.db.seed_receivers` (``heimdall-lab db migrate`` does).

    Parameters
    ----------
    url : str or sqlalchemy.engine.URL, optional
        Database URL; default ``HEIMDALL_DATABASE_URL``, else the embedded server
        (:func:`start_embedded` with ``home``). ``postgresql://`` means psycopg2.
    pool_size, max_overflow : int, default 5 and 5
        Connections kept open, and extra ones allowed under load (``QueuePool``); at most
        ``pool_size + max_overflow`` connections are open at once.
    pool_timeout : float, default 30
        Seconds a caller waits for a free connection before ``TimeoutError``.
    single_connection : bool, optional
        Open a connection per use and close it after (``NullPool``), for servers taking one
        connection at a time such as PGlite. Default: detected (PGlite reports an Emscripten
        build in ``version()``).
    apply_migrations : bool, default True
        Apply pending migrations (:func:`migrate`).
    home : path-like, optional
        Local state directory for the embedded server.
    echo : bool, default False
        Log every statement (SQLAlchemy's ``echo``).

    Returns
    -------
    sqlalchemy.engine.Engine
        With ``pool_pre_ping``; every session runs in UTC. Dispose of it with
        ``engine.dispose()`` when done.

    Raises
    ------
    DatabaseError
        If the server cannot be reached or started, or a migration fails.
    ValidationError
        If the URL is not a PostgreSQL URL or the pool sizes are invalid.
    """
    if pool_size < 1 or max_overflow < 0:
        raise ValidationError("pool_size must be >= 1 and max_overflow >= 0")
    if url is None:
        url = database_url()
    if url is None:
        url = start_embedded(home).url
    u = _normalise_url(url)
    version, version_num = _probe(u)
    emscripten = "emscripten" in version.lower()
    if single_connection is None:
        single_connection = emscripten
    pool: dict[str, Any]
    if single_connection:
        pool = {"poolclass": NullPool}
    else:
        pool = {
            "poolclass": QueuePool,
            "pool_size": pool_size,
            "max_overflow": max_overflow,
            "pool_timeout": pool_timeout,
        }
    engine = sa.create_engine(u, pool_pre_ping=True, echo=echo, **pool)
    sa.event.listen(engine, "connect", _set_utc)
    with _SERVER_INFO_LOCK:
        _SERVER_INFO[engine] = _ServerInfo(not emscripten, version_num)
    log.info(
        "database %s (%s, %s)",
        mask_url(u),
        version.split(" on ")[0],
        "one connection at a time" if single_connection else f"pool {pool_size}+{max_overflow}",
    )
    try:
        if apply_migrations:
            migrate(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine


def _info(engine: Engine) -> _ServerInfo:
    with _SERVER_INFO_LOCK:
        info = _SERVER_INFO.get(engine)
    if info is None:
        version, num = _probe(engine.url)
        emscripten = "emscripten" in version.lower()
        info = _ServerInfo(not emscripten, num)
        with _SERVER_INFO_LOCK:
            _SERVER_INFO[engine] = info
    return info


@contextlib.contextmanager
def connection(engine: Engine) -> Iterator[Connection]:
    """A pooled connection in a transaction: committed on success, rolled back on error.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        From :func:`get_engine`.

    Yields
    ------
    sqlalchemy.engine.Connection
        Returned to the pool when the block ends, whatever happens in it.
    """
    with engine.begin() as conn:
        yield conn


@contextlib.contextmanager
def session(engine: Engine) -> Iterator[Session]:
    """An ORM session: committed on success, rolled back on error, always closed.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        From :func:`get_engine`.

    Yields
    ------
    sqlalchemy.orm.Session
        Bound to ``engine``; use :class:`WebSDR`, :class:`Capture`, :class:`Measurement`.
    """
    with Session(engine) as s:
        try:
            yield s
            s.commit()
        except BaseException:
            s.rollback()
            raise
