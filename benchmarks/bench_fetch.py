"""Acquisition benchmark: 7 receivers at once against 1, in real time, over loopback.

Runs the emulator in real-time mode (frames paced as a KiwiSDR paces them) and times
``acquire_async`` for one receiver and for seven receivers with the same duration; the goal
is seven within 15 % of one. Also measures the as-fast-as-possible throughput (samples/s)
over loopback. Prints the figures and writes reports/fetch-benchmark.md.

    .venv/bin/python benchmarks/bench_fetch.py [--duration 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import time
from pathlib import Path

from heimdall_lab import __version__
from heimdall_lab.emulator import Emulator
from heimdall_lab.fetch import acquire_async
from heimdall_lab.scenario import Scenario

FREQ = 10e6
REPORT = Path(__file__).resolve().parents[1] / "reports" / "fetch-benchmark.md"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


async def timed(n: int, duration: float, realtime: bool) -> tuple[float, int]:
    async with Emulator(Scenario.default(seed=1), realtime=realtime) as emu:
        t0 = time.perf_counter()
        acq = await acquire_async(emu.receivers[:n], FREQ, duration)
        wall = time.perf_counter() - t0
    assert len(acq.ok) == n, acq.status()
    return wall, sum(o.n_samples for o in acq.outcomes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rows = {}
    for n in (1, 7):
        walls = [asyncio.run(timed(n, args.duration, True))[0] for _ in range(args.repeats)]
        rows[n] = walls
        print(
            f"real time, {n} receiver(s), {args.duration:g} s: min {min(walls):.3f} s, "
            f"median {statistics.median(walls):.3f} s"
        )
    ratio_min = min(rows[7]) / min(rows[1])
    ratio_med = statistics.median(rows[7]) / statistics.median(rows[1])
    met = ratio_med <= 1.15
    print(
        f"7 vs 1: {ratio_min:.3f} (min), {ratio_med:.3f} (median); goal <= 1.15: "
        f"{'met' if met else 'NOT met'}"
    )
    fast = [asyncio.run(timed(7, args.duration, False)) for _ in range(args.repeats)]
    rates = [samples / wall for wall, samples in fast]
    print(
        f"as fast as possible, 7 receivers: min {min(rates):,.0f} samples/s, "
        f"median {statistics.median(rates):,.0f} samples/s "
        f"({statistics.median(rates) / 12001:.0f}x real time for one receiver)"
    )
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(
        "# Acquisition benchmark\n\n"
        f"Measured by `benchmarks/bench_fetch.py` (heimdall_lab {__version__}) on {cpu_model()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}; emulator and client in "
        f"one process over loopback; {args.repeats} repeats of {args.duration:g} s captures "
        f"at {FREQ / 1e6:g} MHz.\n\n"
        "| run | min wall (s) | median wall (s) |\n|---|---|---|\n"
        f"| 1 receiver, real time | {min(rows[1]):.3f} | {statistics.median(rows[1]):.3f} |\n"
        f"| 7 receivers, real time | {min(rows[7]):.3f} | {statistics.median(rows[7]):.3f} |\n\n"
        f"7 receivers against 1: {ratio_min:.3f} (min), {ratio_med:.3f} (median). "
        f"Goal: within 15 % (ratio <= 1.15): **{'met' if met else 'not met'}**.\n\n"
        "As fast as possible (no pacing), 7 receivers: "
        f"min {min(rates):,.0f}, median {statistics.median(rates):,.0f} samples/s over loopback.\n"
    )
    print(f"wrote {REPORT}")


if __name__ == "__main__":
    main()
