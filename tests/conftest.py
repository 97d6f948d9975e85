"""Shared fixtures: where the real recordings are, and emulators on loopback."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from heimdall_lab import db

# Plots render off screen in tests.
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """Real recordings: $HEIMDALL_SHARED_DATA if set, else the copy in tests/data."""
    env = os.environ.get("HEIMDALL_SHARED_DATA")
    return Path(env) if env else REPO / "tests" / "data"


DCF77_DIR = shared_data_dir() / "kiwi-dcf77-2017"
DCF77_FILES = sorted((DCF77_DIR / "iq").glob("*.wav"))


@pytest.fixture
def dcf77_files() -> list[Path]:
    if len(DCF77_FILES) != 3:
        pytest.skip(f"the real DCF77 recordings are not in {DCF77_DIR}")
    return DCF77_FILES


def make_home() -> Path:
    """A fresh state directory for an embedded PostgreSQL (readable by its OS user)."""
    home = Path(tempfile.mkdtemp(prefix="heimdall-db-test-"))
    home.chmod(0o755)
    return home


@pytest.fixture(scope="session")
def embedded() -> Iterator[db.EmbeddedServer]:
    """One embedded PostgreSQL for the whole test session."""
    home = make_home()
    server = db.start_embedded(home, keep_running=True)
    try:
        yield server
    finally:
        db.stop_embedded(home)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def embedded_engine(embedded: db.EmbeddedServer) -> Iterator[Engine]:
    engine = db.get_engine(embedded.url)
    yield engine
    engine.dispose()
