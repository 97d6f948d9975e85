"""Hostile receivers: each misbehaving server, captured together with a good one, is survived.

Every capture runs over real loopback sockets into the session's embedded PostgreSQL and a
local IQ folder: one emulated good receiver plus one :class:`tests.hostile.HostileServer`.
The capture returns within its deadline plus a few seconds, the good receiver's measurement
row is written, the hostile one is marked with a reason, and the process's resident memory
stays bounded. ``reports/hostile.md`` gets one row per mode.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
from hostile import MODES, STATUS_MODES, HostileServer

from heimdall_lab import db
from heimdall_lab.emulate import emulated
from heimdall_lab.kiwi.client import StreamSettings, check_health
from heimdall_lab.pipeline import capture

pytestmark = pytest.mark.xdist_group("db")

DURATION_S = 1.0
DEADLINE_S = 6.0
SETTINGS = StreamSettings(read_timeout=1.5, connect_timeout=2.0)
#: Modes whose samples are kept but whose timing is wrong: the receiver is not ok, its
#: samples stay, and its GNSS times are never written as measurement times.
TIMING_MODES = {
    "seq_backwards": "sequence",
    "seq_repeat": "sequence",
    "gnss_backwards": "GNSS time",
    "gnss_frozen": "GNSS time",
    "gnss_nonsense": "GNSS time",
    "rate_mismatch": "rate",
    "rate_change": "rate",
}
_RESULTS: dict[str, dict[str, object]] = {}
REPORT = Path(__file__).resolve().parent.parent / "reports" / "hostile.md"


class PeakRss:
    """The process's peak resident memory (MB) while the block runs, sampled every 20 ms."""

    def __enter__(self) -> PeakRss:
        self._proc = psutil.Process()
        self.peak_mb = self._proc.memory_info().rss / 2**20
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak_mb = max(self.peak_mb, self._proc.memory_info().rss / 2**20)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def good():
    with emulated(seed=1, receivers=["PH0M"], realtime=False) as emu:
        yield emu.receivers[0]


@pytest.mark.parametrize("mode", MODES)
def test_a_hostile_receiver_costs_the_good_one_nothing(mode, good, embedded_engine, tmp_path):
    with HostileServer(mode) as bad, PeakRss() as rss:
        t0 = time.monotonic()
        cap = capture(
            10e6,
            DURATION_S,
            receivers=[good, bad.receiver],
            store=str(tmp_path / "iq"),
            engine=embedded_engine,
            settings=SETTINGS,
            deadline_s=DEADLINE_S,
            retries=0,
            home=str(tmp_path / "home"),
        )
        seconds = time.monotonic() - t0
    status = cap.status()
    hostile = status.loc["hostile"]
    _RESULTS[mode] = {
        "outcome": f"{hostile['status']} ({hostile['reason']})",
        "seconds": seconds,
        "peak_mb": rss.peak_mb,
        "stage": cap.stage,
    }
    assert seconds < DEADLINE_S + 3.0
    assert rss.peak_mb < 600
    assert status.loc[good.name, "status"] == "ok", status.loc[good.name, "message"]
    assert hostile["status"] != "ok"
    assert len(hostile["message"]) < 400  # a line, whatever the server sent
    assert cap.stage == "partial", cap.errors
    rows = db.measurements_for_capture(embedded_engine, cap.capture_id, include_psd=False)
    assert good.name in set(rows["receiver"])
    record = db.get_capture(embedded_engine, cap.capture_id)
    assert record is not None and record.status == "partial"
    if mode in TIMING_MODES:
        assert hostile["reason"] == "timing"
        assert TIMING_MODES[mode] in hostile["message"]
        assert hostile["samples"] > 0  # kept, and marked
        row = rows.set_index("receiver").loc["hostile"]
        wall = pd.Timestamp(record.created_at)
        assert abs(pd.Timestamp(row["timestamp_utc"]) - wall) < pd.Timedelta(minutes=1)
        assert bool(cap.dataset.sel(receiver="hostile").timing_ok) is False
        assert np.isnat(cap.dataset.sel(receiver="hostile").start_time.values)


@pytest.mark.parametrize("mode", STATUS_MODES)
async def test_health_survives_a_bad_status_page(mode):
    with HostileServer(mode) as bad, PeakRss() as rss:
        t0 = time.monotonic()
        health = await check_health(bad.receiver, timeout=3.0)
        seconds = time.monotonic() - t0
    _RESULTS[mode] = {
        "outcome": "unreachable" if not health.reachable else "reachable",
        "seconds": seconds,
        "peak_mb": rss.peak_mb,
        "stage": health.error[:60],
    }
    assert seconds < 3.0 + 1.5
    assert rss.peak_mb < 600
    assert not health.reachable
    assert health.error


def teardown_module() -> None:
    if len(_RESULTS) < len(MODES) + len(STATUS_MODES):
        return  # a partial run (one test selected, or some skipped) leaves the report alone
    lines = [
        "# Hostile receivers",
        "",
        "Written by `tests/test_hostile.py`: each mode is a `tests/hostile.py` server captured "
        f"together with one good emulated receiver ({DURATION_S:g} s, deadline "
        f"{DEADLINE_S:g} s, read timeout {SETTINGS.read_timeout:g} s, no retries), into the "
        "embedded PostgreSQL and a local IQ folder. `seconds` is the wall time of the "
        "`capture()` call (or of `check_health` for the status pages); `peak MB` is the test "
        "process's peak resident memory sampled every 20 ms (it includes the server thread). "
        "In every capture the good receiver's measurement row was written.",
        "",
        "| mode | outcome | capture | seconds | peak MB |",
        "|---|---|---|---:|---:|",
    ]
    for mode, r in _RESULTS.items():
        lines.append(
            f"| {mode} | {r['outcome']} | {r['stage']} | {r['seconds']:.1f} | {r['peak_mb']:.0f} |"
        )
    REPORT.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("mode", ["snd_flood", "gnss_nonsense", "audio_rate_abc"])
def test_the_cli_says_partial_in_one_line(mode, good, env):
    """At the command line, a hostile receiver costs exit code 1 and one line on stderr."""
    with HostileServer(mode) as bad:
        proc = subprocess.run(
            [
                str(Path(sys.executable).with_name("heimdall-lab")),
                "capture",
                "-f",
                "10e6",
                "-d",
                str(DURATION_S),
                "-r",
                f"{good.name}={good.host}:{good.port}",
                "-r",
                f"hostile={bad.receiver.host}:{bad.port}",
                "--read-timeout",
                "1.5",
                "-q",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "hostile" in lines[0], lines
    assert ": partial" in proc.stdout
