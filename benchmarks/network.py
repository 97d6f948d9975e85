"""Benchmark of the receiver network: the public directory, selection, bulk checks, and the
whole loop offline.

Run from the repository root::

    .venv/bin/python -m benchmarks.network [--runs 20] [--report reports/network.md]

It measures, on loopback only (emulated receivers stand in for every real one):

1. reading the real directory snapshot of 2025-12-31 (950 receivers): counts, quirks, time;
2. importing it into a throwaway embedded PostgreSQL, then importing it again;
3. ``select`` on the snapshot for DCF77 (77.5 kHz, 50.0152 N 9.0112 E): the chosen set, its
   predicted error and azimuth gap, against the nearest six;
4. ``/status`` checks of 100 and 300 emulated receivers at real positions, 64 at a time;
5. the offline loop, ``--runs`` seeds: 100 emulated receivers at the real positions nearest
   to 50 N 9 E serve their own directory; a DCF77-like keyed carrier at a seeded random
   position in 47.5-52.5 N, 5-13 E; import the directory from the emulator's URL into the
   database, select six around the operator's rough guess (the position rounded to 0.5
   degree), capture 10 s over loopback, locate, and compare the achieved error with the
   predicted one. The error model's one free parameter (the timing noise at the reference
   distance) is calibrated on 5 other seeds first, from the pair delays' errors.
"""

from __future__ import annotations

import argparse
import logging
import math
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.harness import cpu_model, scratch_database
from heimdall_lab import db, directory, geo, planning, tutorial
from heimdall_lab.emulate.network import DirectoryServer, network_receivers
from heimdall_lab.emulate.scenario import Scenario, Transmitter
from heimdall_lab.emulate.server import Emulator
from heimdall_lab.errors import LocalizationError
from heimdall_lab.kiwi.survey import survey
from heimdall_lab.localize.tdoa import locate_dataset
from heimdall_lab.pipeline import capture
from heimdall_lab.values import to_utc_ns
from heimdall_lab.versions import __version__

SNAPSHOT = tutorial.directory_snapshot()
DCF77 = (50.0152, 9.0112)
FREQ = 77_500.0
SECONDS = 10.0
COUNT = 6
NETWORK = 100
CENTRE = (50.0, 9.0)
AREA = (47.5, 52.5, 5.0, 13.0)
START = "2026-06-01T10:00:00"


def fmt(x: float, spec: str = ".2f") -> str:
    return "-" if not math.isfinite(x) else format(x, spec)


def row(*cells: object) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def timed(fn, repeats: int = 1):
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return out, min(times), statistics.median(times)


# ------------------------------------------------------------------------------ parts


def read_part() -> dict:
    snap, t_min, t_med = timed(lambda: directory.load(SNAPSHOT), repeats=5)
    html = directory.render_html(directory.entry_fields(e) for e in snap)
    from_html, h_min, _ = timed(lambda: directory.parse(html, "html"), repeats=3)
    cols = [c for c in snap.frame().columns if c != "updated_utc"]
    return {
        "snap": snap,
        "t_min": t_min,
        "t_med": t_med,
        "html_same": from_html.frame()[cols].equals(snap.frame()[cols]),
        "html_t": h_min,
    }


def import_part(snap: directory.Directory, url: str) -> dict:
    engine = db.get_engine(url)
    try:
        db.seed_receivers(engine)
        first, t1, _ = timed(lambda: db.import_directory(engine, snap))
        second, t2, _ = timed(lambda: db.import_directory(engine, snap))
        rows = len(db.receivers_frame(engine, active_only=False))
    finally:
        engine.dispose()
    return {"first": first, "t1": t1, "second": second, "t2": t2, "rows": rows}


def select_part(snap: directory.Directory) -> dict:
    chosen, t_min, t_med = timed(
        lambda: planning.select(snap, FREQ, near=DCF77, count=COUNT), repeats=3
    )
    # The nearest six of the same candidates, for comparison.
    cands = chosen.candidates
    near = sorted(cands, key=lambda e: geo.distance_m(*DCF77, e.latitude, e.longitude))
    nearest = near[:COUNT]
    nearest_err = planning.predicted_error(
        [(e.latitude, e.longitude) for e in nearest], *DCF77
    ).error_km
    counts = {}
    for n in (3, 4, 8, 10):
        counts[n] = planning.select(snap, FREQ, near=DCF77, count=n).predicted_error_km
    return {
        "chosen": chosen,
        "t_min": t_min,
        "t_med": t_med,
        "nearest": nearest,
        "nearest_err": float(np.asarray(nearest_err).ravel()[0]),
        "nearest_gap": planning.azimuth_gap_deg(
            DCF77, [(e.latitude, e.longitude) for e in nearest]
        ),
        "counts": counts,
    }


def check_part(snap: directory.Directory, sizes: tuple[int, ...] = (100, 300)) -> list[dict]:
    out = []
    for n in sizes:
        receivers = network_receivers(snap, count=n, near=CENTRE)
        scenario = Scenario.default(seed=1, receivers=receivers)
        emulator = Emulator(scenario, receivers=receivers, realtime=False)
        with emulator.running() as emu:
            table = survey(emu.receivers, concurrency=64, timeout_s=5.0, progress=False)
        out.append(
            {
                "n": n,
                "elapsed": table.attrs["elapsed_s"],
                "reachable": int(table["reachable"].sum()),
                "fresh": int(table["fresh_gnss"].fillna(False).sum()),
                "latency_med": float(table["latency_s"].median()),
            }
        )
        print(f"  checked {n} receivers in {table.attrs['elapsed_s']:.2f} s", flush=True)
    return out


def _transmitter(seed: int) -> tuple[float, float]:
    rng = np.random.default_rng([seed, 0x7E57])
    lat0, lat1, lon0, lon1 = AREA
    return float(rng.uniform(lat0, lat1)), float(rng.uniform(lon0, lon1))


def loop_run(seed: int, receivers: list, url: str, store: Path) -> dict:
    """One pass of the offline loop; see the module docstring."""
    tx = _transmitter(seed)
    guess = (round(tx[0] * 2) / 2, round(tx[1] * 2) / 2)
    scenario = Scenario.default(
        seed=seed,
        receivers=receivers,
        transmitter=Transmitter(*tx, FREQ, power_dbm=-15.0, modulation="ook"),
    )
    start = to_utc_ns(START, "start")
    emulator = Emulator(
        scenario, receivers=receivers, realtime=False, base_port=21000, start_utc=start
    )
    run: dict = {"seed": seed, "tx": tx, "guess": guess}
    engine = db.get_engine(url)
    try:
        with emulator.running() as emu, DirectoryServer(emu) as served:
            t = time.perf_counter()
            listed = directory.load(served.url("js"), cache=False)
            imported = db.import_directory(engine, listed)
            entries = db.directory_entries(engine)
            chosen = planning.select(entries, FREQ, near=guess, count=COUNT, duration_s=SECONDS)
            run["t_plan"] = time.perf_counter() - t
            run["imported"] = imported
            run["chosen"] = [e.name for e in chosen.entries]
            run["predicted_km"] = chosen.predicted_error_km
            run["gap"] = chosen.azimuth_gap_deg
            # The chosen receivers' distances to the true position, for the calibration.
            sites = {(r.host, r.port): r.name for r in emu.receivers}
            names = {e.name: sites[(e.host, e.port)] for e in chosen.entries}
            t = time.perf_counter()
            cap = capture(
                FREQ,
                SECONDS,
                receivers=chosen.receivers(),
                engine=engine,
                store=str(store),
                gps_reference=start,
            )
            run["t_capture"] = time.perf_counter() - t
    finally:
        engine.dispose()
    run["positions"] = {e.name: (e.latitude, e.longitude) for e in chosen.entries}
    t = time.perf_counter()
    try:
        loc = locate_dataset(cap.dataset)
    except LocalizationError as exc:
        run.update(located=False, reason=str(exc)[:100], t_locate=time.perf_counter() - t)
        return run
    run["t_locate"] = time.perf_counter() - t
    truth = {n: scenario.truth(names[n], FREQ)["delay_s"] for n in names}
    run.update(
        located=True,
        error_km=loc.error_km(*tx),
        pairs=[
            (p.receiver_a, p.receiver_b, p.delay_s - (truth[p.receiver_a] - truth[p.receiver_b]))
            for p in loc.used_pairs
        ],
    )
    return run


def calibrate(runs: list[dict]) -> float:
    """Timing noise at the reference distance that explains the pair errors of these runs.

    Each used pair's error e = (measured - true delay) has, in the model, variance
    sigma_ref^2 (s_a^2 + s_b^2) with s_i = max(d_i, d_min) / d_ref; so
    sigma_ref^2 = mean(e^2 / (s_a^2 + s_b^2)).
    """
    ratios = []
    for run in runs:
        if not run.get("located"):
            continue
        tx = run["tx"]
        scale = {}
        for name, pos in run["positions"].items():
            d_km = geo.distance_m(*tx, *pos) / 1e3
            scale[name] = max(d_km, planning.MIN_DISTANCE_KM) / planning.REFERENCE_DISTANCE_KM
        for a, b, err in run["pairs"]:
            ratios.append(err**2 / (scale[a] ** 2 + scale[b] ** 2))
    return float(math.sqrt(np.mean(ratios)))


def loop_part(snap: directory.Directory, runs: int, url: str) -> dict:
    receivers = network_receivers(snap, count=NETWORK, near=CENTRE)
    store = Path(tempfile.mkdtemp(prefix="heimdall-bench-network-"))
    cal = []
    for seed in range(1000, 1005):
        cal.append(loop_run(seed, receivers, url, store))
        print(f"  calibration seed {seed}: {fmt(cal[-1].get('error_km', math.nan))} km", flush=True)
    sigma = calibrate(cal)
    test = []
    for seed in range(runs):
        r = loop_run(seed, receivers, url, store)
        r["predicted_cal_km"] = r["predicted_km"] * sigma / planning.TIMING_SIGMA_S
        test.append(r)
        state = f"{r['error_km']:.2f} km" if r["located"] else f"failed: {r['reason']}"
        print(
            f"  seed {seed}: {state}, predicted {r['predicted_cal_km']:.2f} km "
            f"({r['t_capture']:.1f} s capture)",
            flush=True,
        )
    return {"sigma": sigma, "cal": cal, "runs": test, "receivers": receivers}


# ------------------------------------------------------------------------------ report


def figure(loop: dict, sel: dict, path: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in loop["runs"] if r["located"]]
    fig, ax = plt.subplots(figsize=(5.5, 4.5), layout="constrained")
    pred = np.array([r["predicted_cal_km"] for r in ok])
    got = np.array([r["error_km"] for r in ok])
    ax.loglog(pred, got, "o", label="one seed")
    lim = np.array([min(pred.min(), got.min()) / 1.5, max(pred.max(), got.max()) * 1.5])
    ax.plot(lim, lim, "k-", lw=0.8, label="achieved = predicted")
    ax.fill_between(lim, lim / 2, lim * 2, color="0.85", label="within 2x")
    ax.set_xlim(*lim)
    ax.set_ylim(*lim)
    ax.set_aspect("equal")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.set_xlabel("predicted median error (km)")
    ax.set_ylabel("achieved error (km)")
    ax.set_title(f"Offline loop: {len(ok)} seeds, {COUNT} of {NETWORK} receivers")
    ax.legend(loc="upper left", fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(
    path: Path,
    read: dict,
    imp: dict,
    sel: dict,
    checks: list,
    loop: dict,
    runs: int,
    elapsed: float,
) -> str:
    snap = read["snap"]
    ok = [r for r in loop["runs"] if r["located"]]
    err = np.array([r["error_km"] for r in ok])
    pred = np.array([r["predicted_cal_km"] for r in ok])
    ratio = err / pred
    chosen = sel["chosen"]
    lines = [
        "# The receiver network: directory, selection, checks, the offline loop",
        "",
        f"Generated by `python -m benchmarks.network --runs {runs}` on "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC in {elapsed / 60:.1f} min; heimdall_lab "
        f"{__version__}, Python {platform.python_version()}, {cpu_model()}. Everything ran on "
        "loopback: the real receivers of the snapshot were never contacted.",
        "",
        "## Summary",
        "",
        f"- **The snapshot** (950 receivers, 2025-12-31): "
        f"{snap.summary().splitlines()[0].split(' from ')[0]}. Read in "
        f"{read['t_min'] * 1e3:.0f} ms (best of 5); its HTML form gives the same table: "
        f"{'yes' if read['html_same'] else 'NO'}.",
        f"- **Import** into PostgreSQL: {imp['first'].summary()} in {imp['t1']:.2f} s; again: "
        f"{imp['second'].summary()} in {imp['t2']:.2f} s ({imp['rows']} rows).",
        f"- **Select** for DCF77 (77.5 kHz, 6 receivers): predicted error "
        f"{chosen.predicted_error_km:.1f} km, largest azimuth gap "
        f"{chosen.azimuth_gap_deg:.0f} deg, in {sel['t_min']:.2f} s; the nearest six would "
        f"predict {sel['nearest_err']:.1f} km with a gap of {sel['nearest_gap']:.0f} deg.",
        "- **Checks**: "
        + "; ".join(
            f"{c['n']} receivers in {c['elapsed']:.2f} s ({c['reachable']} reachable)"
            for c in checks
        )
        + " (64 at a time).",
        f"- **The offline loop**, {len(ok)}/{len(loop['runs'])} seeds located: median achieved "
        f"error {np.median(err):.2f} km against a median predicted "
        f"{np.median(pred):.2f} km; median ratio achieved/predicted "
        f"{np.median(ratio):.2f} ({int(np.sum((ratio > 0.5) & (ratio < 2)))} of {len(ok)} "
        "seeds within 2x).",
        "",
        "## The snapshot",
        "",
        row("read", "kept", "skipped", "quirks handled"),
        row("---", "---", "---", "---"),
        row(
            snap.read,
            len(snap),
            ", ".join(f"{k} {v}" for k, v in sorted(snap.skipped.items())) or "none",
            ", ".join(f"{k} {v}" for k, v in sorted(snap.quirks.items())) or "none",
        ),
        "",
        "## Selection for DCF77",
        "",
        f"`select(snapshot, 77500, near=(50.0152, 9.0112), count=6)`: "
        f"{len(chosen.candidates)} candidates (cover 77.5 kHz, fresh GNSS, a free channel, "
        "TDoA allowed, one per place); passed over: "
        + ", ".join(f"{k} {v}" for k, v in sorted(chosen.rejected.items()) if v)
        + ".",
        "",
        row("receiver", "location", "distance km", "azimuth deg", "free", "satellites"),
        row("---", "---", "---", "---", "---", "---"),
    ]
    for rx in chosen.to_dict()["receivers"]:
        e = next(x for x in chosen.entries if x.name == rx["name"])
        lines.append(
            row(
                rx["name"],
                e.location_name[:40],
                f"{rx['distance_km']:.0f}",
                f"{rx['azimuth_deg']:.0f}",
                rx["free_channels"],
                rx["gps_good"],
            )
        )
    lines += [
        "",
        "Predicted error against the number of receivers (same target): "
        + ", ".join(
            f"{n}: {v:.1f} km"
            for n, v in sorted({**sel["counts"], 6: chosen.predicted_error_km}.items())
        )
        + f". The model: timing noise {planning.TIMING_SIGMA_S * 1e6:.0f} us at "
        f"{planning.REFERENCE_DISTANCE_KM:.0f} km, growing with distance (see "
        "`heimdall_lab.planning`).",
        "",
        "## Bulk checks",
        "",
        row("receivers", "time s", "reachable", "fresh GNSS", "median latency ms"),
        row("---", "---", "---", "---", "---"),
    ]
    for c in checks:
        lines.append(
            row(
                c["n"],
                f"{c['elapsed']:.2f}",
                c["reachable"],
                c["fresh"],
                f"{c['latency_med'] * 1e3:.0f}",
            )
        )
    lines += [
        "",
        "## The offline loop",
        "",
        f"{NETWORK} emulated receivers at the real positions nearest to 50 N 9 E (fresh GNSS, "
        "one per place) serve their `/status` pages and, through `DirectoryServer`, their "
        "directory. Per seed: a keyed 77.5 kHz carrier (-15 dBm at 1 km) at a random position "
        "in 47.5-52.5 N, 5-13 E; the directory imported from the emulator's URL into the "
        "database; `select` from the database's receivers around the position rounded to "
        f"0.5 degree; a {SECONDS:.0f} s capture of the six over loopback (fast mode); "
        "`locate_dataset` with its defaults.",
        "",
        f"Calibration: the timing noise at {planning.REFERENCE_DISTANCE_KM:.0f} km that explains "
        f"the pair delay errors of 5 other seeds (1000-1004) is "
        f"**{loop['sigma'] * 1e6:.2f} us** (the default for real receivers is "
        f"{planning.TIMING_SIGMA_S * 1e6:.0f} us); the predictions below use it. The choice of "
        "receivers does not depend on it (it scales every prediction alike).",
        "",
        row(
            "seed",
            "transmitter",
            "chosen",
            "gap deg",
            "predicted km",
            "achieved km",
            "ratio",
            "capture s",
            "locate s",
        ),
        row(*["---"] * 9),
    ]
    for r in loop["runs"]:
        lines.append(
            row(
                r["seed"],
                f"{r['tx'][0]:.2f} N {r['tx'][1]:.2f} E",
                " ".join(r["chosen"]),
                f"{r['gap']:.0f}",
                f"{r['predicted_cal_km']:.2f}",
                fmt(r.get("error_km", math.nan)),
                fmt(r.get("error_km", math.nan) / r["predicted_cal_km"]),
                f"{r['t_capture']:.1f}",
                fmt(r.get("t_locate", math.nan), ".1f"),
            )
        )
    lines += [
        "",
        "![predicted against achieved](network/loop.png)",
        "",
    ]
    text = "\n".join(lines)
    path.write_text(text, encoding="utf-8")
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="seeds of the loop (default 20)")
    parser.add_argument("--report", type=Path, default=REPO / "reports" / "network.md")
    parser.add_argument("--database-url", help="default: a throwaway embedded PostgreSQL")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("heimdall_lab").setLevel(logging.ERROR)
    start = time.perf_counter()
    figdir = args.report.parent / "network"
    figdir.mkdir(parents=True, exist_ok=True)
    print("reading the snapshot", flush=True)
    read = read_part()
    print("selecting", flush=True)
    sel = select_part(read["snap"])
    print("checking", flush=True)
    checks = check_part(read["snap"])
    with scratch_database(args.database_url) as url:
        print("importing", flush=True)
        imp = import_part(read["snap"], url)
        engine = db.get_engine(url)
        engine.dispose()
    with scratch_database(args.database_url) as url:
        print("the offline loop", flush=True)
        loop = loop_part(read["snap"], args.runs, url)
    figure(loop, sel, figdir / "loop.png")
    text = report(args.report, read, imp, sel, checks, loop, args.runs, time.perf_counter() - start)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
