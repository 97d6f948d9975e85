"""Shared fixtures: where the real recordings are, and emulators on loopback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
