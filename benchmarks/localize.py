"""Benchmark of heimdall_lab.localize: the real DCF77 recordings and emulated keyed carriers.

Run from the repository root::

    .venv/bin/python -m benchmarks.localize [--runs 20] [--report PATH]

It locates

1. the three real 2017 KiwiSDR recordings of DCF77 (heimdall_lab.tutorial) with each
   correlation method: error against the transmitter's true position, each pair's delay
   against the ground-wave truth (great-circle distance difference / c), run time;
2. the same recordings replayed through the emulator and captured by the real client over
   loopback (the estimate must equal the one from the files);
3. an emulated DCF77-like keyed carrier (``Transmitter(..., modulation="ook")``) heard by the
   seven default receivers, captured through the emulator and the client over loopback
   (fast mode, 10 s), ``--runs`` seeds per condition: error against SNR (transmitter power)
   and against geometry (transmitters inside and outside the receivers' hull).

It prints the figures and writes reports/localize.md and figures under reports/localize/.
"""

from __future__ import annotations

import argparse
import logging
import math
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import scipy
import xarray as xr
from scipy import stats
from scipy.spatial import Delaunay

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.harness import cpu_model
from heimdall_lab import tutorial
from heimdall_lab.emulate.scenario import Scenario, Transmitter
from heimdall_lab.emulate.server import Emulator
from heimdall_lab.errors import LocalizationError
from heimdall_lab.io.kiwi_wav import read_kiwi_wav
from heimdall_lab.kiwi.acquire import acquire
from heimdall_lab.localize.results import Localization
from heimdall_lab.localize.tdoa import locate_dataset, locate_files
from heimdall_lab.receivers import DEFAULT_RECEIVERS, Receiver
from heimdall_lab.ui.localization_plot import plot_localization
from heimdall_lab.versions import __version__

DCF77 = (50.0152, 9.0112)
DCF77_DIR = tutorial.dcf77_dir() / "iq"
DCF77_POSITIONS = {
    "DF0KL": (53.665337, 7.282766),
    "F1JEK": (45.779290, 0.614638),
    "HB9RYZ": (47.1721, 8.42683),
}
GPS_REFERENCE = np.datetime64("2017-11-27T10:42")
FREQ = 77_500.0
SECONDS = 10.0
INSIDE = (50.0, 8.5)
POWERS = (-15.0, -25.0, -30.0, -35.0, -40.0, -45.0)
GEOMETRY = {
    "inside, near Frankfurt": INSIDE,
    "inside, Paris basin": (48.0, 4.0),
    "outside, Baltic (NE)": (55.5, 20.0),
    "outside, Adriatic (SE)": (44.0, 14.0),
    "outside, Spain (SW)": (41.0, -5.0),
}
FIGURES = "localize"


def inside_ellipse(loc: Localization, lat: float, lon: float) -> bool:
    """Whether a position lies inside the result's ellipse (Mahalanobis distance)."""
    cov = np.asarray(loc.covariance_km2, dtype=float)
    if not np.all(np.isfinite(cov)):
        return True
    east = (lon - loc.longitude) * 111.195 * math.cos(math.radians(loc.latitude))
    north = (lat - loc.latitude) * 111.195
    d = np.array([east, north])
    try:
        m2 = float(d @ np.linalg.solve(cov, d))
    except np.linalg.LinAlgError:
        return False
    return m2 <= stats.chi2.ppf(loc.confidence, 2)


# ------------------------------------------------------------------------------ real data


def real_data(repeats: int, figdir: Path) -> dict:
    files = sorted(DCF77_DIR.glob("*.wav"))
    if len(files) != 3:
        raise SystemExit(f"the DCF77 recordings are missing from {DCF77_DIR}")
    variants = [
        ("auto (default)", {}),
        ("envelope", {"method": "envelope"}),
        ("complex", {"method": "complex"}),
        (
            "complex, 500-6000 Hz (the reference's 500 Hz high-pass)",
            {"method": "complex", "band": (500.0, 6000.0)},
        ),
        ("auto, systematic_sigma_s=20 us", {"systematic_sigma_s": 20e-6}),
    ]
    rows = []
    results = {}
    for label, opts in variants:
        times = []
        loc = None
        for _ in range(repeats):
            t = time.perf_counter()
            loc = locate_files(files, DCF77_POSITIONS, **opts)
            times.append(time.perf_counter() - t)
        assert loc is not None
        loc.compare(*DCF77)
        results[label] = loc
        rows.append((label, loc, min(times), statistics.median(times)))
        print(f"DCF77 {label}: error {loc.error_km(*DCF77):.2f} km, {loc.summary()}")
    best = results["auto (default)"]
    # Figure: whole area and zoom.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(15, 6.5))
    plot_localization(best, axes[0], truth=DCF77, extent=(43.5, 56.5, -3.0, 14.0))
    plot_localization(best, axes[1], truth=DCF77, extent=(49.75, 50.3, 8.45, 9.55))
    fig.tight_layout()
    fig.savefig(figdir / "dcf77.png", dpi=90)
    plt.close(fig)
    return {"rows": rows, "best": best, "files": files}


def replay(files: list[Path], reference: Localization) -> dict:
    recordings = {p.stem.split("_")[2]: read_kiwi_wav(p) for p in files}
    receivers = [Receiver(n, "127.0.0.1", 8073, *DCF77_POSITIONS[n]) for n in recordings]
    t = time.perf_counter()
    with Emulator(receivers=receivers, replay=recordings, realtime=False).running() as emu:
        acq = acquire(emu.receivers, FREQ, 40.0, retries=0, gps_reference=GPS_REFERENCE)
    t_acq = time.perf_counter() - t
    loc = locate_dataset(acq.dataset)
    diff_m = loc.error_km(reference.latitude, reference.longitude) * 1e3
    max_delay_diff = max(
        abs(a.delay_s - b.delay_s) for a, b in zip(loc.pairs, reference.pairs, strict=True)
    )
    print(f"replay: {diff_m:.3f} m from the files' estimate, acquisition {t_acq:.2f} s")
    return {
        "diff_m": diff_m,
        "max_delay_diff_s": max_delay_diff,
        "t_acq": t_acq,
        "samples": {
            n: int(v)
            for n, v in zip(acq.dataset.receiver.values, acq.dataset.n_samples.values, strict=True)
        },
        "loc": loc,
    }


# ------------------------------------------------------------------------------ emulated


@dataclass
class Run:
    seed: int
    error_km: float = math.nan
    located: bool = False
    reason: str = ""
    in_ellipse: bool = False
    semi_major_km: float = math.nan
    pairs_used: int = 0
    pair_errors_us: list[float] = field(default_factory=list)
    method: str = ""
    t_capture: float = math.nan
    t_locate: float = math.nan
    cn0: list[float] = field(default_factory=list)


def emulated_run(seed: int, tx: tuple[float, float], power: float) -> tuple[Run, object]:
    scenario = Scenario.default(
        seed=seed,
        transmitter=Transmitter(*tx, FREQ, power_dbm=power, modulation="ook"),
    )
    run = Run(seed)
    run.cn0 = [scenario.truth(s, FREQ)["snr_db_in_1hz"] for s in scenario.site_names]
    t = time.perf_counter()
    with Emulator(scenario, realtime=False).running() as emu:
        acq = acquire(emu.receivers, FREQ, SECONDS)
    run.t_capture = time.perf_counter() - t
    t = time.perf_counter()
    loc = None
    try:
        loc = locate_dataset(acq.dataset)
    except LocalizationError as exc:
        run.reason = str(exc)[:120]
    run.t_locate = time.perf_counter() - t
    if loc is not None:
        run.located = True
        run.error_km = loc.error_km(*tx)
        run.in_ellipse = inside_ellipse(loc, *tx)
        run.semi_major_km = loc.semi_major_km
        run.pairs_used = len(loc.used_pairs)
        run.method = loc.method
        truth = {s: scenario.truth(s, FREQ)["delay_s"] for s in scenario.site_names}
        run.pair_errors_us = [
            (p.delay_s - (truth[p.receiver_a] - truth[p.receiver_b])) * 1e6 for p in loc.used_pairs
        ]
    return run, loc


def condition(name: str, tx: tuple[float, float], power: float, seeds: list[int]) -> dict:
    runs = []
    example = None
    for seed in seeds:
        run, loc = emulated_run(seed, tx, power)
        runs.append(run)
        if example is None and loc is not None:
            example = loc
        state = f"{run.error_km:8.2f} km" if run.located else f"failed: {run.reason[:60]}"
        timing = f"({run.t_capture:.1f} s capture, {run.t_locate:.1f} s locate)"
        print(f"  {name} {power:+.0f} dBm seed {seed}: {state} {timing}", flush=True)
    return {"name": name, "tx": tx, "power": power, "runs": runs, "example": example}


def stats_of(cond: dict) -> dict:
    runs = cond["runs"]
    ok = [r for r in runs if r.located]
    err = np.array([r.error_km for r in ok])
    pair_err = np.concatenate([r.pair_errors_us for r in ok]) if ok else np.zeros(0)
    cn0 = np.array([c for r in runs for c in r.cn0])
    return {
        "runs": len(runs),
        "located": len(ok),
        "median": float(np.median(err)) if len(err) else math.nan,
        "mean": float(np.mean(err)) if len(err) else math.nan,
        "p90": float(np.percentile(err, 90)) if len(err) else math.nan,
        "max": float(np.max(err)) if len(err) else math.nan,
        "in_ellipse": (sum(r.in_ellipse for r in ok) / len(ok)) if ok else math.nan,
        "ellipse": float(np.median([r.semi_major_km for r in ok])) if ok else math.nan,
        "pairs": float(np.median([r.pairs_used for r in ok])) if ok else math.nan,
        "pair_rms_us": float(np.sqrt(np.mean(pair_err**2))) if len(pair_err) else math.nan,
        "cn0": (float(cn0.min()), float(np.median(cn0)), float(cn0.max())),
        "t_capture": float(np.median([r.t_capture for r in runs])),
        "t_locate": float(np.median([r.t_locate for r in runs])),
        "methods": sorted({r.method for r in ok}),
        "envelope_runs": sum(r.method == "envelope" for r in ok),
        "reasons": sorted({r.reason.split(" (")[0] for r in runs if not r.located}),
    }


def hull() -> Delaunay:
    return Delaunay(np.array([(r.longitude, r.latitude) for r in DEFAULT_RECEIVERS]))


# ------------------------------------------------------------------------------ report


def fmt(x: float, spec: str = ".2f") -> str:
    return "-" if not math.isfinite(x) else format(x, spec)


def row(*cells: object) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def figures(snr: list[dict], geometry: list[dict], figdir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for c in snr:
        errs = [r.error_km for r in c["runs"] if r.located]
        ax.scatter(np.full(len(errs), c["power"]), errs, s=12, alpha=0.5, color="C0")
        if errs:
            ax.plot(c["power"], np.median(errs), "o", color="C3", ms=8)
    ax.set_yscale("log")
    ax.set_xlabel("transmitter power, dBm at 1 km (C/N0 in the table)")
    ax.set_ylabel("position error, km")
    ax.set_title("Emulated keyed carrier inside the hull: error against SNR (red: median)")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(figdir / "snr.png", dpi=90)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 6))
    pts = np.array([(r.longitude, r.latitude) for r in DEFAULT_RECEIVERS])
    h = hull()
    for simplex in h.convex_hull:
        ax.plot(pts[simplex, 0], pts[simplex, 1], "k-", lw=0.8)
    ax.plot(pts[:, 0], pts[:, 1], "k^")
    for r in DEFAULT_RECEIVERS:
        ax.annotate(r.name, (r.longitude, r.latitude), xytext=(3, 3), textcoords="offset points")
    for c in geometry:
        s = stats_of(c)
        est = [(r.error_km, r) for r in c["runs"] if r.located]
        ax.plot(c["tx"][1], c["tx"][0], "r*", ms=12)
        ax.annotate(
            f"median {fmt(s['median'])} km",
            (c["tx"][1], c["tx"][0]),
            xytext=(5, -12),
            textcoords="offset points",
            color="r",
        )
        if est and c["example"] is not None:
            e = c["example"]
            ax.plot(e.longitude, e.latitude, "b+", ms=8)
    ax.set_xlabel("longitude (deg E)")
    ax.set_ylabel("latitude (deg N)")
    ax.set_title("Geometry: transmitters (stars) against the receivers' hull")
    ax.set_aspect(1 / math.cos(math.radians(48)))
    fig.tight_layout()
    fig.savefig(figdir / "geometry.png", dpi=90)
    plt.close(fig)

    example = snr[0]["example"]
    if example is not None:
        ax = plot_localization(example, truth=INSIDE, extent=(40, 58, -6, 20))
        ax.figure.savefig(figdir / "emulated.png", dpi=80)
        plt.close(ax.figure)


def report(
    path: Path,
    real: dict,
    rep: dict,
    snr: list[dict],
    geometry: list[dict],
    runs: int,
    elapsed: float,
) -> str:
    best: Localization = real["best"]
    h = hull()
    lines = [
        "# heimdall_lab.localize benchmark",
        "",
        f"Generated by `python -m benchmarks.localize --runs {runs}` on "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC in {elapsed / 60:.1f} min.",
        "",
        "## Summary",
        "",
        f"- **Real DCF77 recordings (3 receivers, 2017): error {best.error_km(*DCF77):.2f} km** "
        f'with the default `method="auto"` (it picks `{best.method}`), located in '
        f"{real['rows'][0][3]:.2f} s (median). Per-pair delay errors against the ground-wave "
        "truth: "
        + ", ".join(
            f"{p.receiver_a}-{p.receiver_b} {(p.delay_s - p.truth_delay_s) * 1e6:+.1f} us"
            for p in best.pairs
        )
        + ". The envelope alone gives "
        f"{real['rows'][1][1].error_km(*DCF77):.1f} km (see below).",
        f"- Replayed through the emulator and captured over loopback, the recordings give the "
        f"same estimate to {rep['diff_m']:.3f} m (delays identical to "
        f"{rep['max_delay_diff_s'] * 1e12:.0f} ps).",
        f"- Emulated keyed carrier, 7 receivers, 10 s, inside the hull at the default power "
        f"(C/N0 {snr[0]['stats']['cn0'][0]:.0f}-{snr[0]['stats']['cn0'][2]:.0f} dB-Hz): "
        f"median error {fmt(snr[0]['stats']['median'])} km, 90th percentile "
        f"{fmt(snr[0]['stats']['p90'])} km over {snr[0]['stats']['runs']} seeds.",
        "",
        "## Method (see the `heimdall_lab.localize` module docstring)",
        "",
        "- Every receiver's trusted frames (GNSS fix, not the first two stale ones) are placed "
        "on one time axis by their own timestamps (sample n of frame k at T_k + (n - start_k) / "
        "rate, the rate fitted to the timestamps over gap-free segments), so lost frames leave a "
        "gap instead of a shift; frames whose timestamp disagrees with the sample count are "
        "rejected. The carrier of each receiver is mixed to 0 Hz and the samples are linearly "
        "interpolated onto a common grid.",
        "- Each pair is cross-correlated in 1 s chunks (FFT, band-limited), forwards and "
        "backwards so that the bias of cutting chunks cancels; the peak is found by Newton "
        "iterations on the exact band-limited correlation; the spread of the chunk delays "
        "gives each pair's standard error. Pairs with a weak or ambiguous peak, a scattered "
        "delay, or a delay beyond baseline / c + 200 us are rejected.",
        "- Position: chi-square of the pair delays against great-circle ground-wave delays "
        "(speed of light) on a lat/lon grid over the receivers plus a margin, the lowest "
        "minima refined by `scipy.optimize.least_squares`; ellipse from the Jacobian (95 %).",
        "",
        "## Real data: DCF77, 2017-11-27 10:41:56 UTC",
        "",
        "Receivers DF0KL (53.67 N 7.28 E), F1JEK (45.78 N 0.61 E), HB9RYZ (47.17 N 8.43 E); "
        "DCF77 at 50.0152 N 9.0112 E. About 29 s of common signal. Three receivers give two "
        "independent delays, which fix a 2-D position exactly; the third pair checks closure "
        "(1 degree of freedom), and the ellipse comes from the timing noise alone.",
        "",
        row(
            "variant",
            "method used",
            "error km",
            "95 % ellipse km",
            "chi2 (1 dof)",
            "run time min / median s",
        ),
        row(*["---"] * 6),
    ]
    for label, loc, tmin, tmed in real["rows"]:
        lines.append(
            f"| {label} | {loc.method} | {loc.error_km(*DCF77):.2f} | "
            f"{loc.semi_major_km:.2f} x {loc.semi_minor_km:.2f} | {loc.chi2:.2f} | "
            f"{tmin:.2f} / {tmed:.2f} |"
        )
    lines += [
        "",
        "Pair delays with the default (arrival at A minus arrival at B):",
        "",
        row(
            "pair",
            "measured us",
            "ground-wave truth us",
            "error us",
            "sigma us",
            "coefficient",
            "PSR dB",
            "residual at estimate us",
        ),
        row(*["---"] * 8),
    ]
    for p in best.pairs:
        lines.append(
            f"| {p.receiver_a}-{p.receiver_b} | {p.delay_s * 1e6:.1f} | "
            f"{p.truth_delay_s * 1e6:.1f} | {(p.delay_s - p.truth_delay_s) * 1e6:+.1f} | "
            f"{p.sigma_s * 1e6:.2f} | {p.coefficient:.3f} | {p.psr_db:.1f} | "
            f"{p.residual_s * 1e6:+.2f} |"
        )
    env = real["rows"][1][1]
    lines += [
        "",
        "Envelope pair delays, for comparison: "
        + ", ".join(
            f"{p.receiver_a}-{p.receiver_b} {(p.delay_s - p.truth_delay_s) * 1e6:+.1f} us"
            for p in env.pairs
        )
        + ".",
        "",
        "![DCF77](localize/dcf77.png)",
        "",
        "What this shows, honestly:",
        "",
        "- The timing errors are tens of microseconds, not a few: 20 km is about 67 us of path "
        "difference, and the default is inside that with margin, but not by much. The errors "
        "are systematic, not noise: each pair's statistical standard error (from the spread of "
        f"{best.pairs[0].n_chunks} one-second chunks) is "
        f"{min(p.sigma_s for p in best.pairs) * 1e6:.1f}-"
        f"{max(p.sigma_s for p in best.pairs) * 1e6:.1f} us, so the 95 % ellipse of the default "
        f"result ({best.semi_major_km:.1f} x {best.semi_minor_km:.1f} km) does **not** contain "
        "the truth. Likely causes: sky-wave mixed into the ground wave at 300-760 km "
        "(November daytime at 77.5 kHz), ground-wave phase delay over land, and receiver-"
        "specific filter delays; none is modelled. `systematic_sigma_s=20e-6` makes the ellipse "
        "honest for such data (row above).",
        "- The envelope of the 100/200 ms keying correlates strongly (coefficient "
        f"{min(p.coefficient for p in env.pairs):.2f}-{max(p.coefficient for p in env.pairs):.2f}) "
        "but its edges are slow and shaped differently at each receiver; its delays are off by "
        f"up to {max(abs(p.delay_s - p.truth_delay_s) for p in env.pairs) * 1e6:.0f} us and the "
        f"estimate by {env.error_km(*DCF77):.0f} km, outside the 20 km goal. The complex signal "
        "(carrier offset and phase removed) also carries DCF77's pseudo-random phase keying "
        "(about 645 chips/s), which is far sharper, and `auto` picks it because its chunk "
        "delays scatter less. The public reference (hcab14/TDoA) also correlates the complex "
        "signal after a 500 Hz high-pass.",
        "- Carrier-phase refinement (12.9 us ambiguity at 77.5 kHz) was not attempted: the "
        "errors are larger than half a cycle.",
        "",
        "## The recordings replayed through the emulator",
        "",
        f"The three files served by `Emulator(replay=...)`, captured with `acquire(..., "
        f"gps_reference=2017-11-27T10:42)` over loopback in {rep['t_acq']:.2f} s "
        f"({', '.join(f'{n} {s} samples' for n, s in rep['samples'].items())}; the streams end "
        f"with the recordings, so the receivers are marked incomplete), and located from the "
        f"resulting Dataset: estimate {rep['loc'].latitude:.5f} N {rep['loc'].longitude:.5f} E, "
        f"**{rep['diff_m']:.3f} m** from the files' estimate.",
        "",
        "## Emulated keyed carrier",
        "",
        "`Scenario.default(seed, transmitter=Transmitter(lat, lon, 77.5 kHz, power_dbm, "
        'modulation="ook"))`: DCF77-like keying (0.1 / 0.2 s drops to 15 % amplitude each '
        "second, 1 ms raised-cosine edges), the seven default receivers with seeded clock "
        "errors (LO up to 0.5 ppm, sample clock up to 2 ppm) and noise (-140 +- 3 dBm/Hz), "
        f"captured for {SECONDS:.0f} s through the emulator and the client over loopback (fast "
        f"mode), located with the defaults. {runs} seeds per condition; a run counts as "
        "failed when `locate_dataset` raises (fewer than two good pairs over three receivers). "
        "'in ellipse' is the share of located runs whose 95 % ellipse contains the truth.",
        "",
        "### Error against SNR (transmitter near Frankfurt, inside the hull)",
        "",
        row(
            "power dBm at 1 km",
            "C/N0 min / median / max dB-Hz",
            "located",
            "median km",
            "mean km",
            "90 % km",
            "max km",
            "pair delay rms us",
            "pairs used (median)",
            "median ellipse km",
            "in ellipse",
            "auto chose the envelope",
        ),
        row(*["---"] * 12),
    ]
    for c in snr:
        s = c["stats"]
        lines.append(
            row(
                f"{c['power']:+.0f}",
                f"{s['cn0'][0]:.0f} / {s['cn0'][1]:.0f} / {s['cn0'][2]:.0f}",
                f"{s['located']}/{s['runs']}",
                fmt(s["median"]),
                fmt(s["mean"]),
                fmt(s["p90"]),
                fmt(s["max"]),
                fmt(s["pair_rms_us"], ".1f"),
                fmt(s["pairs"], ".0f"),
                fmt(s["ellipse"]),
                f"{fmt(100 * s['in_ellipse'], '.0f')} %",
                f"{s['envelope_runs']}/{s['located']}",
            )
        )
    lines += [
        "",
        "![error against SNR](localize/snr.png)",
        "",
        "### Error against geometry (default power, -15 dBm at 1 km)",
        "",
        row(
            "transmitter",
            "position",
            "in the hull",
            "C/N0 min-max dB-Hz",
            "located",
            "median km",
            "mean km",
            "90 % km",
            "max km",
            "median ellipse km",
            "in ellipse",
        ),
        row(*["---"] * 11),
    ]
    for c in geometry:
        s = c["stats"]
        inside = bool(h.find_simplex(np.array([c["tx"][1], c["tx"][0]])) >= 0)
        lines.append(
            row(
                c["name"],
                f"{c['tx'][0]:.1f} N {c['tx'][1]:.1f} E",
                "yes" if inside else "no",
                f"{s['cn0'][0]:.0f}-{s['cn0'][2]:.0f}",
                f"{s['located']}/{s['runs']}",
                fmt(s["median"]),
                fmt(s["mean"]),
                fmt(s["p90"]),
                fmt(s["max"]),
                fmt(s["ellipse"]),
                f"{fmt(100 * s['in_ellipse'], '.0f')} %",
            )
        )
    reasons = sorted({r for c in snr + geometry for r in c["stats"]["reasons"]})
    s0 = snr[0]["stats"]
    n_env = sum(c["stats"]["envelope_runs"] for c in snr + geometry[1:])
    n_located = sum(c["stats"]["located"] for c in snr + geometry[1:])
    t_loc = np.median([c["stats"]["t_locate"] for c in snr + geometry])
    t_cap = np.median([c["stats"]["t_capture"] for c in snr + geometry])
    lines += [
        "",
        "![geometry](localize/geometry.png) ![example](localize/emulated.png)",
        "",
        "Reading the tables:",
        "",
        f"- Inside the hull at the default power the median error is {fmt(s0['median'])} km: "
        f"the 1 ms keying edges are timed to {fmt(s0['pair_rms_us'], '.1f')} us rms per pair "
        f"at {s0['cn0'][0]:.0f}-{s0['cn0'][2]:.0f} dB-Hz. `auto` chose the envelope in "
        f"{n_env} of {n_located} located emulated captures (last column of the SNR table; "
        "the complex signal in the others).",
        "- Error grows as C/N0 falls: the delay of a keyed envelope is set by its edges, and "
        "once their SNR is low the correlation peak wanders within its broad (100 ms) main "
        "lobe; the weakest receivers' pairs are then rejected (their chunk delays scatter) and "
        "the geometry thins out, until fewer than three receivers remain and the call fails"
        + (f" ({'; '.join(reasons)})" if reasons else "")
        + ". With only two pairs left (three receivers) nothing checks the solution, so the "
        "low-SNR estimates that survive can be far off.",
        "- Outside the hull the hyperbolae meet at shallow angles and the error grows along "
        "the direction away from the receivers (the ellipse grows with it); the worst place "
        "measured is south-west of the network (Spain), where all receivers lie in a narrow "
        "sector.",
        "- The 'in ellipse' column checks the stated uncertainty: the per-pair sigmas come from "
        "the chunk spread, and the covariance is inflated for the pairs sharing receivers and "
        "by the reduced chi-square. Close to 95 % means the ellipse is honest; clearly less "
        f"means it is optimistic (default power, inside: {fmt(100 * s0['in_ellipse'], '.0f')} "
        "%). On real data systematic errors dominate and the ellipse needs "
        "`systematic_sigma_s` (see the DCF77 section).",
        "",
        "## Run time",
        "",
        f'- Locating 7 receivers x 10 s (21 pairs, `method="auto"`, i.e. both correlations): '
        f"median {t_loc:.2f} s per capture; capturing them from the emulator: median "
        f"{t_cap:.2f} s.",
        f"- Real data (3 receivers x 29 s): median {real['rows'][0][3]:.2f} s with `auto`.",
        "",
        "## Machine",
        "",
        f"- CPU: {cpu_model()}; Python {platform.python_version()}, numpy {np.__version__}, "
        f"scipy {scipy.__version__}, xarray {xr.__version__}; heimdall_lab {__version__}.",
        "- Wall-clock times on a shared machine (other jobs were running): indicative only.",
        "",
    ]
    text = "\n".join(lines)
    path.write_text(text)
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="seeds per condition (default 20)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats of the real data")
    parser.add_argument("--report", type=Path, default=REPO / "reports" / "localize.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("heimdall_lab").setLevel(logging.ERROR)
    start = time.perf_counter()
    figdir = args.report.parent / FIGURES
    figdir.mkdir(parents=True, exist_ok=True)

    real = real_data(args.repeats, figdir)
    rep = replay(real["files"], real["best"])
    seeds = list(range(100, 100 + args.runs))
    snr = []
    for power in POWERS:
        c = condition("inside", INSIDE, power, seeds)
        c["stats"] = stats_of(c)
        snr.append(c)
    geometry = []
    for name, tx in GEOMETRY.items():
        c = snr[0] if tx == INSIDE else condition(name, tx, POWERS[0], seeds)
        c = {**c, "name": name}
        c["stats"] = stats_of(c)
        geometry.append(c)
    figures(snr, geometry, figdir)
    text = report(args.report, real, rep, snr, geometry, args.runs, time.perf_counter() - start)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
