"""Benchmark of heimdall_lab.dsp: metrics of 7 receivers x 10 s of 12 kHz IQ on one core.

Run from the repository root::

    .venv/bin/python benchmarks/bench_dsp.py [--repeats N] [--report PATH]

It prints the figures and writes them to reports/dsp-benchmark.md. The goal is under 5 ms
per receiver (100x inside the old budget of 500 ms per measurement). Thread pools are
limited to one thread before numpy is imported, and the process is pinned to one CPU where
the OS allows it, so the figures are single-core ones.
"""

from __future__ import annotations

import os

for _var in (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
):
    os.environ[_var] = "1"

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import scipy
import xarray as xr

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.harness import cpu_model
from heimdall_lab import dsp

N_RECEIVERS = 7
SECONDS = 10.0
NOMINAL_RATE = 12_000.0
OLD_BUDGET_S = 0.5
GOAL_S = 0.005


def pin_one_cpu() -> str:
    """Pin this process to one CPU; say which (or why not)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[-1]})
        return f"pinned to CPU {cpus[-1]}"
    except (AttributeError, OSError) as exc:  # not Linux, or not allowed
        return f"not pinned ({exc.__class__.__name__})"


def make_capture(seed: int = 1) -> xr.Dataset:
    """Seven synthetic receivers of 10 s: carriers, a keyed carrier, FSK, and noise alone."""
    rng = np.random.default_rng(seed)
    rates = NOMINAL_RATE + rng.uniform(0.0, 1.5, N_RECEIVERS)  # GNSS-derived, all different
    n = int(SECONDS * NOMINAL_RATE)
    iq = np.empty((N_RECEIVERS, n), np.complex64)
    for i, fs in enumerate(rates):
        t = np.arange(n) / fs
        noise = np.sqrt(1e-5 / 2) * (rng.standard_normal(n) + 1j * rng.standard_normal(n))
        kind = i % 4
        if kind == 0:  # carrier
            sig = 0.01 * np.exp(2j * np.pi * rng.uniform(-5000, 5000) * t)
        elif kind == 1:  # DCF77-like keyed carrier
            sec = np.floor(t).astype(int)
            drop = (t - sec) < np.where(rng.integers(0, 2, sec[-1] + 1)[sec] == 1, 0.2, 0.1)
            sig = 0.01 * np.where(drop, 0.15, 1.0) * np.exp(2j * np.pi * 12.5 * t)
        elif kind == 2:  # 50 Bd FSK, 170 Hz shift
            bits = rng.integers(0, 2, int(SECONDS * 50) + 1)
            inst = -800.0 + (bits[np.floor(t * 50).astype(int)] - 0.5) * 170.0
            sig = 0.01 * np.exp(2j * np.pi * np.cumsum(inst) / fs)
        else:  # noise alone
            sig = 0.0
        iq[i] = (sig + noise).astype(np.complex64)
    return xr.Dataset(
        {"iq": (("receiver", "sample"), iq)},
        coords={
            "receiver": [f"rx{i}" for i in range(N_RECEIVERS)],
            "sample_rate": ("receiver", rates),
            "n_samples": ("receiver", np.full(N_RECEIVERS, n, np.int64)),
            "calibration_db": ("receiver", np.full(N_RECEIVERS, -10.0)),
        },
        attrs={"center_frequency_hz": 77_500.0},
    )


def timed(fn: Callable[[], object], repeats: int) -> list[float]:
    fn()  # warm caches (windows, chi-square thresholds) and imports
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30, help="timed repeats (default 30)")
    parser.add_argument("--report", type=Path, default=REPO / "reports" / "dsp-benchmark.md")
    args = parser.parse_args()

    pinning = pin_one_cpu()
    ds = make_capture()
    n = ds.sizes["sample"]
    rows = [ds.iq.values[i] for i in range(N_RECEIVERS)]
    rates = [float(r) for r in ds.sample_rate.values]

    def per_receiver() -> None:
        for x, fs in zip(rows, rates, strict=True):
            dsp.measure(x, fs, center_frequency_hz=77_500.0, calibration_db=-10.0)

    results: list[tuple[str, list[float], int]] = [
        ("measure(), 7 receivers one by one", timed(per_receiver, args.repeats), N_RECEIVERS),
        (
            "measure_dataset(), numpy-backed",
            timed(lambda: dsp.measure_dataset(ds), args.repeats),
            7,
        ),
        ("psd() alone, one receiver", timed(lambda: dsp.psd(rows[0], rates[0]), args.repeats), 1),
        (
            "  of which: Welch PSD core (one batched FFT)",
            timed(lambda: dsp._welch(rows[0], rates[0], dsp.DEFAULT_NPERSEG), args.repeats),
            1,
        ),
        (
            "  in measure(): whole-capture frequency refinement",
            timed(
                lambda: dsp._refine_frequency(rows[0], rates[0], 100.0, dsp.DEFAULT_NPERSEG),
                args.repeats,
            ),
            1,
        ),
    ]
    try:
        import dask

        lazy = ds.chunk({"receiver": 1})
        big = xr.concat([ds] * 10, dim="receiver").chunk({"receiver": N_RECEIVERS})
        with dask.config.set(scheduler="synchronous"):
            results.append(
                (
                    "measure_dataset(), dask-backed, synchronous",
                    timed(lambda: dsp.measure_dataset(lazy).compute(), args.repeats),
                    N_RECEIVERS,
                )
            )
            results.append(
                (
                    "same, 70 receivers in chunks of 7 (overhead amortised)",
                    timed(lambda: dsp.measure_dataset(big).compute(), max(3, args.repeats // 5)),
                    10 * N_RECEIVERS,
                )
            )
    except ImportError:
        pass

    metrics = dsp.measure_dataset(ds)
    lines = [
        "# heimdall_lab.dsp benchmark",
        "",
        f"Generated by `benchmarks/bench_dsp.py` on {datetime.now(UTC):%Y-%m-%d %H:%M UTC}.",
        "",
        "## Workload",
        "",
        f"- {N_RECEIVERS} synthetic receivers x {SECONDS:g} s of complex64 IQ at about "
        f"{NOMINAL_RATE:g} Hz ({n} samples each, every receiver with its own GNSS-like rate): "
        "carriers, a DCF77-like keyed carrier, 50 Bd FSK, and noise alone.",
        "- Each measurement: Welch PSD (1024 bins, 233 half-overlapping Hann segments), "
        "median noise floor with chi-square bias correction, peak test, signal band, "
        "occupied bandwidth, sub-bin frequency refinement on the whole capture, calibrated "
        "figures.",
        f"- Timings: best (min) and median of {args.repeats} repeats after one warm-up run "
        "(6 for the 70-receiver run), wall clock (`time.perf_counter`), divided by the "
        "receivers measured. The dask rows use the synchronous scheduler (one core); dask "
        "adds a fixed cost per call (graph building and computing one array per metric, "
        "about 40 ms), which a larger batch amortises.",
        "",
        "## Machine",
        "",
        f"- CPU: {cpu_model()}; {os.cpu_count()} logical cores on the machine; {pinning}; "
        "OMP/OpenBLAS/MKL threads = 1.",
        f"- Python {platform.python_version()}, numpy {np.__version__}, scipy "
        f"{scipy.__version__}, xarray {xr.__version__}.",
        "",
        "## Results",
        "",
        "| what | per receiver, min | per receiver, median | samples/s (median) | "
        "inside 500 ms budget |",
        "|---|---|---|---|---|",
    ]
    print(f"CPU: {cpu_model()} ({os.cpu_count()} cores), {pinning}")
    verdict = []
    for label, times, count in results:
        per = [t / count for t in times]
        best, med = min(per), statistics.median(per)
        rate = n / med  # samples of one receiver per second of one core
        lines.append(
            f"| {label} | {best * 1e3:.2f} ms | {med * 1e3:.2f} ms | {rate / 1e6:.1f} M | "
            f"{OLD_BUDGET_S / med:.0f}x |"
        )
        print(
            f"{label:54s} min {best * 1e3:6.2f} ms  median {med * 1e3:6.2f} ms  "
            f"{rate / 1e6:6.1f} Msamples/s  {OLD_BUDGET_S / med:4.0f}x inside 500 ms"
        )
        if label.startswith("measure(),"):
            verdict.append(med)
    goal_met = verdict and verdict[0] < GOAL_S
    lines += [
        "",
        f"Goal (under {GOAL_S * 1e3:g} ms per receiver with `measure()`, median): "
        f"**{'met' if goal_met else 'NOT met'}**.",
        "",
        "## Figures measured (sanity check of the workload)",
        "",
        "| receiver | signal present | SNR dB (in B) | B Hz | C/N0 dB-Hz | offset Hz |",
        "|---|---|---|---|---|---|",
    ]
    for i in range(N_RECEIVERS):
        r = metrics.isel(receiver=i)
        lines.append(
            f"| {r.receiver.item()} | {bool(r.signal_present)} | {float(r.snr_db):.1f} | "
            f"{float(r.snr_bandwidth_hz):.1f} | {float(r.cn0_dbhz):.1f} | "
            f"{float(r.frequency_offset_hz):.3f} |"
        )
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
