"""Acquisition benchmark: 7 receivers at once against 1, in real time, over loopback.

A thin front end to :func:`benchmarks.harness.fetch_benchmark` (the same code the
benchmark notebook runs for reports/benchmark.md): the emulator in real-time mode (frames
paced as a KiwiSDR paces them), ``fetch.acquire`` from one receiver and from seven with the
same duration, the repeats interleaved; the goal is seven within 15 % of one. Also the
as-fast-as-possible throughput (samples/s) over loopback. Prints the figures and writes
reports/fetch-benchmark.md.

    .venv/bin/python benchmarks/bench_fetch.py [--duration 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

from benchmarks.harness import FETCH_RATIO_GOAL, FREQUENCY_HZ, cpu_model, fetch_benchmark
from heimdall_lab.versions import __version__

REPORT = Path(__file__).resolve().parents[1] / "reports" / "fetch-benchmark.md"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--receivers", type=int, default=7)
    ap.add_argument("--report", type=Path, default=REPORT)
    args = ap.parse_args()
    df = fetch_benchmark(args.duration, args.repeats, args.receivers)
    walls = df.groupby("case", sort=False)["wall_s"]
    best, med = walls.min(), walls.median()
    one, many, fast = list(med.index)
    for case in med.index:
        print(f"{case}: min {best[case]:.3f} s, median {med[case]:.3f} s")
    ratio_min = best[many] / best[one]
    ratio_med = med[many] / med[one]
    met = ratio_med <= FETCH_RATIO_GOAL
    rates = df.loc[df["case"] == fast, "samples_per_s"]
    print(
        f"{args.receivers} vs 1: {ratio_min:.3f} (min), {ratio_med:.3f} (median); goal <= "
        f"{FETCH_RATIO_GOAL}: {'met' if met else 'NOT met'}; as fast as possible: "
        f"{rates.max():,.0f} samples/s best, {rates.median():,.0f} median"
    )
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(
        "# Acquisition benchmark\n\n"
        f"Measured by `benchmarks/bench_fetch.py` (`benchmarks.harness.fetch_benchmark`, "
        f"heimdall_lab {__version__}) on {cpu_model()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; emulator (its own thread and event loop) and client in "
        f"one process over loopback; {args.repeats} repeats of {args.duration:g} s captures at "
        f"{FREQUENCY_HZ / 1e6:g} MHz, the cases interleaved. The machine may be shared: min "
        "and median are given.\n\n"
        "| run | min wall (s) | median wall (s) |\n|---|---|---|\n"
        f"| {one} | {best[one]:.3f} | {med[one]:.3f} |\n"
        f"| {many} | {best[many]:.3f} | {med[many]:.3f} |\n\n"
        f"{args.receivers} receivers against 1: {ratio_min:.3f} (min), {ratio_med:.3f} (median). "
        f"Goal: within 15 % (ratio <= {FETCH_RATIO_GOAL}): **{'met' if met else 'not met'}**.\n\n"
        f"As fast as possible (no pacing), {args.receivers} receivers: "
        f"best {rates.max():,.0f}, median {rates.median():,.0f} samples/s over loopback.\n"
    )
    print(f"wrote {args.report}")


if __name__ == "__main__":
    main()
