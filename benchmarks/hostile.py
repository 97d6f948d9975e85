"""What each hostile receiver costs: time and peak memory of a capture, in a fresh process.

Run from the repository root::

    .venv/bin/python -m benchmarks.hostile [--duration 1] [--report PATH]

For every mode of ``tests/hostile.py`` (floods, malformed and oversized messages, unparsable
numbers, nonsense timing) it starts a new Python process that acquires ``--duration``
seconds from one good emulated receiver plus one hostile server over loopback (deadline 6 s,
read timeout 1.5 s, no retries) and measures the metrics. Each process reports its wall time,
both receivers' outcomes and its own peak resident memory (``ru_maxrss``): a fresh process,
so the figure is the whole capture's, not what earlier work left behind. It prints the table
and writes ``reports/hostile.md``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.harness import machine_info

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "reports" / "hostile.md"

_ONE_MODE = """
import json, resource, sys, time
sys.path.insert(0, {tests!r})
from hostile import HostileServer
from heimdall_lab.emulate import emulated
from heimdall_lab.kiwi.acquire import acquire
from heimdall_lab.kiwi.client import StreamSettings
from heimdall_lab.processing import capture_metrics

settings = StreamSettings(read_timeout=1.5, connect_timeout=2.0)
emu_cm = emulated(seed=1, receivers=["Purmerend"], realtime=False)
with emu_cm as emu, HostileServer({mode!r}) as bad:
    t0 = time.monotonic()
    acq = acquire([emu.receivers[0], bad.receiver], 10e6, {duration!r}, deadline_s=6.0,
                  retries=0, settings=settings)
    metrics = capture_metrics(acq.dataset)
    seconds = time.monotonic() - t0
table = acq.status()
print(json.dumps({{
    "seconds": seconds,
    "good": table.loc["Purmerend", "status"],
    "hostile": f"{{table.loc['hostile', 'status']}} ({{table.loc['hostile', 'reason']}})",
    "measured": sorted(metrics.index),
    "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}}))
"""


def measure(mode: str, duration: float) -> dict:
    """One mode in a fresh process: its JSON line, or the failure."""
    code = _ONE_MODE.format(tests=str(ROOT / "tests"), mode=mode, duration=duration)
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"mode": mode, "error": tail, "process_s": time.monotonic() - t0}
    return {"mode": mode, **json.loads(proc.stdout.strip().splitlines()[-1])}


def report(rows: list[dict], duration: float) -> str:
    """The Markdown report."""
    info = machine_info()
    lines = [
        "# Hostile receivers: time and memory",
        "",
        f"Written by `python -m benchmarks.hostile` on {info.get('cpu', '?')}, "
        f"{info.get('cores', '?')} cores. Each row: a fresh Python process acquires "
        f"{duration:g} s from one good emulated receiver (Purmerend) plus one `tests/hostile.py` "
        "server over loopback (deadline 6 s, read timeout 1.5 s, no retries), then computes "
        "the metrics. `seconds`: wall time of the acquisition and metrics; `peak MB`: the "
        "process's peak resident memory (`ru_maxrss`, the interpreter and libraries "
        "included).",
        "",
        "| mode | hostile outcome | good receiver | measured | seconds | peak MB |",
        "|---|---|---|---|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['mode']} | error: {r['error']} | | | | |")
            continue
        lines.append(
            f"| {r['mode']} | {r['hostile']} | {r['good']} | {', '.join(r['measured'])} | "
            f"{r['seconds']:.1f} | {r['peak_mb']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    """Measure every mode, print the table and write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=1.0, help="seconds to acquire")
    parser.add_argument("--report", type=Path, default=REPORT, help="where the report goes")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from hostile import MODES

    rows = []
    for mode in MODES:
        rows.append(measure(mode, args.duration))
        print(json.dumps(rows[-1]), flush=True)
    text = report(rows, args.duration)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(text)
    print(text)
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
