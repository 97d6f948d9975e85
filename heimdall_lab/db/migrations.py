"""Schema migrations.

The numbered SQL files shipped in ``heimdall_lab/db/sql``, applied in order.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import pandas as pd
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine

from heimdall_lab.errors import DatabaseError, first_line

log = logging.getLogger(__name__)


#: Environment variable overriding the directory of the migration files.
SQL_DIR_ENV = "HEIMDALL_SQL_DIR"


_MIGRATIONS_TABLE = "heimdall_migrations"
_MIGRATION_FILE = re.compile(r"^(\d{3})_([A-Za-z0-9_]+)\.sql$")


_ADVISORY_KEY = 0x4845494D  # "HEIM"


# ----------------------------------------------------------------------------- migrations


@dataclass(frozen=True)
class _Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def _sql_dir() -> Path:
    env = os.environ.get(SQL_DIR_ENV)
    return Path(env) if env else Path(str(files("heimdall_lab.db") / "sql"))


def _migrations(sql_dir: Path | None = None) -> list[_Migration]:
    directory = sql_dir or _sql_dir()
    if not directory.is_dir():
        raise DatabaseError(
            f"no migrations directory {directory}: reinstall heimdall-lab (the SQL files ship "
            f"in the package) or set {SQL_DIR_ENV} to a folder of NNN_name.sql files"
        )
    found = []
    for path in sorted(directory.glob("*.sql")):
        m = _MIGRATION_FILE.match(path.name)
        if m is None:
            raise DatabaseError(f"{path.name} in {directory} is not named NNN_name.sql")
        found.append(_Migration(int(m.group(1)), m.group(2), path.read_text(encoding="utf-8")))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise DatabaseError(f"two migrations in {directory} share a number: {versions}")
    return found


def _ensure_migrations_table(conn: Connection) -> None:
    conn.exec_driver_sql(
        f"CREATE TABLE IF NOT EXISTS {_MIGRATIONS_TABLE} ("
        " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )


def applied_migrations(engine: Engine) -> pd.DataFrame:
    """The migrations recorded as applied.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database.

    Returns
    -------
    pandas.DataFrame
        Columns ``version``, ``name``, ``checksum``, ``applied_at``, by version; empty if
        none was applied.
    """
    with engine.connect() as conn:
        exists = conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": _MIGRATIONS_TABLE}).scalar()
        if exists is None:
            return pd.DataFrame(columns=["version", "name", "checksum", "applied_at"])
        result = conn.execute(
            sa.text(
                f"SELECT version, name, checksum, applied_at FROM {_MIGRATIONS_TABLE} "
                "ORDER BY version"
            )
        )
        return pd.DataFrame(result.fetchall(), columns=list(result.keys()))


def migrate(engine: Engine, *, sql_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """Apply the pending migrations of ``sql/`` in order, each in its own transaction.

    Concurrent callers serialise on an advisory lock; a migration already recorded is
    skipped, so running this again changes nothing.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database.
    sql_dir : path-like, optional
        Directory of ``NNN_name.sql`` files; default ``sql/`` of the source tree (or
        ``$HEIMDALL_SQL_DIR``).

    Returns
    -------
    list of str
        Names (``NNN_name``) of the migrations applied now, empty when up to date.

    Raises
    ------
    DatabaseError
        If a migration fails (nothing of it is kept), a file is misnamed, or an applied
        migration's file has changed since (its checksum differs).
    """
    migrations = _migrations(Path(sql_dir) if sql_dir else None)
    applied_now = []
    for mig in migrations:
        label = f"{mig.version:03d}_{mig.name}"
        try:
            with engine.begin() as conn:
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ADVISORY_KEY})
                _ensure_migrations_table(conn)
                row = conn.execute(
                    sa.text(f"SELECT checksum FROM {_MIGRATIONS_TABLE} WHERE version = :v"),
                    {"v": mig.version},
                ).first()
                if row is not None:
                    if row[0] != mig.checksum:
                        raise DatabaseError(
                            f"migration {label} changed after it was applied (checksum "
                            f"{row[0][:12]} in the database, {mig.checksum[:12]} on disk): "
                            "add a new migration instead of editing an applied one"
                        )
                    continue
                log.info("applying migration %s", label)
                dbapi = conn.connection.driver_connection
                cursor = dbapi.cursor()  # type: ignore[union-attr]
                try:
                    cursor.execute(mig.sql)
                finally:
                    cursor.close()
                for notice in dbapi.notices:  # type: ignore[union-attr]
                    log.info("%s: %s", label, notice.strip())
                del dbapi.notices[:]  # type: ignore[union-attr]
                conn.execute(
                    sa.text(
                        f"INSERT INTO {_MIGRATIONS_TABLE} (version, name, checksum) "
                        "VALUES (:v, :n, :c)"
                    ),
                    {"v": mig.version, "n": mig.name, "c": mig.checksum},
                )
                applied_now.append(label)
        except sa_exc.DBAPIError as err:
            raise DatabaseError(f"migration {label} failed: {first_line(err)}") from None
        except DatabaseError:
            raise
        except Exception as err:
            if type(err).__module__.startswith("psycopg2"):
                raise DatabaseError(f"migration {label} failed: {first_line(err)}") from None
            raise
    if applied_now:
        log.info("applied migrations %s", ", ".join(applied_now))
    return applied_now


def is_timescale(engine: Engine) -> bool:
    """Whether ``measurements`` is a TimescaleDB hypertable on this database.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database (migrated).

    Returns
    -------
    bool
        True on TimescaleDB with the hypertable, False on plain PostgreSQL.
    """
    with engine.connect() as conn:
        has_ext = conn.execute(
            sa.text("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')")
        ).scalar()
        if not has_ext:
            return False
        return bool(
            conn.execute(
                sa.text(
                    "SELECT EXISTS (SELECT 1 FROM timescaledb_information.hypertables "
                    "WHERE hypertable_name = 'measurements' "
                    "AND hypertable_schema = current_schema())"
                )
            ).scalar()
        )


def enable_timescale(engine: Engine) -> bool:
    """Turn ``measurements`` into a hypertable on a server that gained TimescaleDB later.

    Migration 003 does this when the extension is there at migration time; this does the
    same afterwards (existing rows are moved into chunks).

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database (migrated).

    Returns
    -------
    bool
        True if ``measurements`` is now a hypertable.

    Raises
    ------
    DatabaseError
        If the extension cannot be created (not installed, or not preloaded).
    """
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS timescaledb")
            return bool(conn.execute(sa.text("SELECT heimdall_enable_timescale()")).scalar())
    except sa_exc.DBAPIError as err:
        raise DatabaseError(f"cannot enable TimescaleDB: {first_line(err)}") from None
