"""Shared fixtures: real recordings, the embedded PostgreSQL, an S3 server, a TCP fault proxy."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import support
from netguard import sitecustomize as netguard
from sqlalchemy.engine import Engine

from heimdall_lab import db, tutorial

# Plots render off screen in tests.
os.environ.setdefault("MPLBACKEND", "Agg")

# The loopback guard, here and in every Python process the tests start (through
# PYTHONPATH, as sitecustomize): nothing reaches a host outside 127.0.0.0/8 and ::1.
NETGUARD_DIR = Path(netguard.__file__).parent
NETGUARD_LOG = Path(tempfile.mkdtemp(prefix="heimdall-netguard-")) / "attempts.log"
os.environ[netguard.LOG_ENV] = str(NETGUARD_LOG)
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(NETGUARD_DIR), os.environ.get("PYTHONPATH", "")) if p
)
netguard.install()


def offlimits_attempts() -> list[str]:
    """The attempts to leave loopback since the last call (and forget them)."""
    if not NETGUARD_LOG.exists():
        return []
    lines = NETGUARD_LOG.read_text(encoding="utf-8").splitlines()
    NETGUARD_LOG.write_text("", encoding="utf-8")
    return lines


@pytest.fixture(autouse=True)
def _loopback_only():
    """Fail any test during which this process or one it started tried to leave loopback."""
    offlimits_attempts()
    yield
    attempts = offlimits_attempts()
    if attempts:
        pytest.fail("tried to reach outside loopback:\n" + "\n".join(attempts[:5]))


@pytest.fixture(autouse=True)
def _local_state(tmp_path_factory, monkeypatch):
    """Keep each test's data home (database, IQ store, spool) out of the working tree and out
    of the real per-user folder, even in tests that unset HEIMDALL_HOME."""
    if "HEIMDALL_HOME" not in os.environ:
        monkeypatch.setenv("HEIMDALL_HOME", str(tmp_path_factory.mktemp("home")))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("xdg-data")))


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def dcf77_files() -> list[Path]:
    """The real DCF77 recordings bundled with the package."""
    return tutorial.dcf77_files()


@pytest.fixture(scope="session")
def embedded() -> Iterator[db.EmbeddedServer]:
    """One embedded PostgreSQL for the whole test session."""
    home = support.make_home()
    server = db.start_embedded(home, keep_running=True)
    try:
        yield server
    finally:
        db.stop_embedded(home)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def env(embedded, embedded_engine, tmp_path, monkeypatch):
    """The session's embedded server (migrated, default receivers seeded) and a fresh IQ
    folder through the environment, as a user or a notebook kernel sees them; the working
    directory is tmp_path."""
    monkeypatch.setenv("HEIMDALL_DATABASE_URL", embedded.url)
    monkeypatch.setenv("HEIMDALL_IQ_URL", str(tmp_path / "iq"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MPLBACKEND", raising=False)  # kernels draw inline, as in Jupyter
    return tmp_path


@pytest.fixture(scope="session")
def embedded_engine(embedded: db.EmbeddedServer) -> Iterator[Engine]:
    """An engine on the session's server, migrated, with the default receivers seeded (as
    ``heimdall-lab db migrate`` leaves a database)."""
    engine = db.get_engine(embedded.url)
    db.seed_receivers(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    with support.moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3_url(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    support.s3_env(monkeypatch, moto_endpoint)
    return f"s3://{support.make_bucket(moto_endpoint)}/heimdall"


@pytest.fixture
def fresh_database(embedded: db.EmbeddedServer) -> Iterator[str]:
    """A database of its own on the session's server, migrated, with the default receivers
    (as ``heimdall-lab db migrate`` leaves one); dropped afterwards. Its URL."""
    with support.fresh_database(embedded.url) as url:
        yield url


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``--dist loadgroup`` each worker must see its ``xdist_group`` tests' group in
    their ids, or the scheduler spreads a group (one JupyterLab, notebooks in order) over
    workers and its tests fail far from the cause."""
    if not getattr(config.option, "loadgroup", False):  # set on workers only
        return
    lost = [i.nodeid for i in items if i.get_closest_marker("xdist_group") and "@" not in i.nodeid]
    if lost:
        raise pytest.UsageError(
            f"--dist loadgroup cannot group {lost[0]} (and {len(lost) - 1} more): this pytest "
            "and pytest-xdist do not work together; install the versions pyproject.toml allows"
        )
