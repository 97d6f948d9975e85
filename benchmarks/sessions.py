"""Recording sessions: hopping accuracy, stop and resume, triggered recording.

Run from the repository root::

    .venv/bin/python -m benchmarks sessions [--quick] [--database-url URL]
    .venv/bin/python -m benchmarks.sessions [--parts hopping,resume,trigger] [--report PATH]

Every figure is measured here, on loopback only (emulated KiwiSDRs in this process, or in
the session's own process for the stop/resume part), against one embedded PostgreSQL
(throwaway unless ``--database-url``) and local IQ folders in a temporary directory:

1. **Hopping.** :func:`heimdall_lab.pipeline.sweep` through ``f_tx``, ``f_tx + 1500 Hz`` and
   ``f_tx - 2000 Hz`` (all within the +-6 kHz passband) on real-time emulated receivers, one
   connection per receiver and sweep, each sweep in an emulator of its own (a fresh start
   time, so fresh noise). Per dwell and receiver the capture's measured
   ``frequency_offset_hz`` and ``signal_power_dbfs`` against
   :meth:`Scenario.truth(site, tuned) <heimdall_lab.emulate.scenario.Scenario.truth>`
   (``frequency_offset_hz``, ``mean_power_dbfs`` over the dwell's samples), and each
   retune's gap and dropped frames from ``Capture.parameters["retune"]``.
2. **Stop and resume.** ``heimdall-lab session start --emulate N`` in a process of its own;
   ``heimdall-lab session stop ID`` from another once the first sweep's captures are final;
   ``session resume ID``; stopped again part-way through a dwell; resumed until done. Then
   every plan step must have exactly one capture (``db.session_captures``); captures a stop
   cut short (``cancelled`` / ``incomplete``) are counted, with the IQ they kept.
3. **Triggered recording.** A burst scene (:meth:`Scenario.with_bursts`: in-band SNRs from
   -5 to +20 dB at a reference site, seeded durations and gaps) recorded with
   ``sweep([(f, dwell)], trigger={...})`` on real-time emulated receivers; each event
   (``Capture.events``) against :meth:`Scenario.burst_truth`. Then a noise-only scene (no
   transmitter) recorded the same way: false events against the stated false-alarm rate.
   For the S-meter comparison both scenes (same seeds, same start times: bit-identical
   frames) are recorded once more continuously with :func:`~heimdall_lab.pipeline.capture`
   as fast as possible, and :func:`~heimdall_lab.trigger.detect_events` (the same band
   detector, offline) and :func:`~heimdall_lab.trigger.smeter_events` (fixed thresholds
   over the noise's median RSSI) run on the stored IQ and ``frame_rssi_dbm``.

Writes ``reports/sessions.md`` and ``reports/figures/sessions_*.png``. No timing is asserted
anywhere: ``tests/test_benchmark.py`` runs tiny sizes only to see it work.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.stats

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script
    sys.path.insert(0, str(REPO))

from benchmarks.harness import machine_info, scratch_database
from heimdall_lab import db
from heimdall_lab.emulate.scenario import Scenario
from heimdall_lab.emulate.server import emulated
from heimdall_lab.ids import new_capture_id
from heimdall_lab.pipeline import capture, sweep
from heimdall_lab.recording import FRAME_SAMPLES
from heimdall_lab.store import IQStore
from heimdall_lab.trigger import BandDetector, detect_events, smeter_events
from heimdall_lab.versions import __version__

__all__ = [
    "Settings",
    "burst_schedule",
    "figures",
    "hopping_run",
    "main",
    "match_events",
    "report",
    "resume_run",
    "run",
    "trigger_run",
]

#: The emulated transmitter's frequency (the default scenario's).
F_TX = 10e6
#: Hop offsets from the transmitter, Hz.
HOP_OFFSETS_HZ = (0.0, 1500.0, -2000.0)
#: Goals of the hopping part.
OFFSET_GOAL_HZ = 0.05
POWER_GOAL_DB = 0.5
#: Fixed start of the trigger scenes' streams (their IQ is the same every run).
TRIGGER_START = np.datetime64("2026-01-05T12:00:00", "ns")
#: The noise-only scene starts a day later (other noise).
NOISE_START = TRIGGER_START + np.timedelta64(1, "D")
#: The detector's band (Hz, centred on the tuned frequency) and S-meter margins (dB).
BAND_HZ = 400.0
SMETER_MARGINS_DB = (3.0, 6.0)
#: A burst counts as "above the detection threshold" when the probability that at least
#: one block inside it crosses is at least this.
SURE = 0.99

_CLI_TIMEOUT_S = 180.0


class Settings(dict):
    """Sizes of one run: ``full()`` for the report, ``quick()`` for a smoke run."""

    @classmethod
    def full(cls) -> Settings:
        return cls(
            hop_receivers=5,
            hop_dwell_s=5.0,
            hop_sweeps=3,
            hop_seed=3,
            hop_latency_frames=2,
            resume_receivers=3,
            resume_sweeps=4,
            resume_frequencies=2,
            resume_dwell_s=3.0,
            resume_stops=2,
            trigger_receivers=3,
            bursts=12,
            trigger_seed=7,
            pfa=1e-3,
            pre_s=0.5,
            post_s=0.5,
            noise_s=120.0,
            offline_noise_s=300.0,
            burst_first_s=3.0,
            burst_durations_s=[0.5, 2.0],
            burst_gaps_s=[3.0, 5.0],
            burst_tail_s=3.0,
        )

    @classmethod
    def quick(cls) -> Settings:
        return cls(
            hop_receivers=2,
            hop_dwell_s=1.0,
            hop_sweeps=1,
            hop_seed=3,
            hop_latency_frames=2,
            resume_receivers=2,
            resume_sweeps=3,
            resume_frequencies=2,
            resume_dwell_s=1.0,
            resume_stops=1,
            trigger_receivers=2,
            bursts=3,
            trigger_seed=7,
            pfa=1e-3,
            pre_s=0.25,
            post_s=0.25,
            noise_s=3.0,
            offline_noise_s=10.0,
            burst_first_s=1.0,
            burst_durations_s=[0.5, 0.8],
            burst_gaps_s=[1.0, 1.5],
            burst_tail_s=1.0,
        )


def _ns(t: Any) -> int:
    return int(pd.Timestamp(t).value)


# ----------------------------------------------------------------------------- 1. hopping


def hopping_run(
    engine: Any,
    store: str,
    *,
    receivers: int = 5,
    dwell_s: float = 5.0,
    sweeps: int = 3,
    seed: int = 3,
    latency_frames: int = 0,
) -> dict[str, pd.DataFrame]:
    """Sweeps through three frequencies on real-time emulated receivers, against the truth.

    The last receiver sends ``latency_frames`` more frames at the old frequency after each
    retune reaches it (``EmulatedReceiver.retune_latency_frames``), as a receiver whose
    sound pipeline holds a few frames: they must end the dwell before, with no gap.

    Returns
    -------
    dict
        ``dwells``: one row per sweep, hop and receiver (measured and true offset and
        power, their errors, the capture's stage); ``retunes``: one row per sweep, retune
        and receiver (``gap_s``, ``dropped_frames``, ``frames_before``: the frames still at
        the old frequency, kept as the dwell before's end).
    """
    scenario = Scenario.default(seed=seed)
    names = list(scenario.site_names[:receivers])
    f_tx = scenario.transmitter.frequency_hz
    hops = [(f_tx + d, dwell_s) for d in HOP_OFFSETS_HZ]
    dwells, retunes = [], []
    for s in range(sweeps):
        t0 = time.perf_counter()
        with emulated(scenario=scenario, receivers=names, realtime=True) as emu:
            emu.emulator.units[names[-1]].retune_latency_frames = latency_frames
            caps = sweep(hops, engine=engine, store=store, **emu.capture_options)
        wall = time.perf_counter() - t0
        for i, cap in enumerate(caps):
            ds = IQStore(store).open(cap.capture_id)
            for name in names:
                # The keyed carrier's exact mean power over the dwell's own samples.
                one = ds.sel(receiver=name)
                window = {
                    "start_utc": one["start_time"].values,
                    "duration_s": float(one["n_samples"]) / float(one["sample_rate"]),
                }
                truth = scenario.truth(name, cap.frequency_hz, **window)
                row = {
                    "sweep": s,
                    "hop": i,
                    "receiver": name,
                    "tuned_offset_hz": cap.frequency_hz - f_tx,
                    "stage": cap.stage,
                    "sweep_wall_s": wall,
                    "true_offset_hz": truth["frequency_offset_hz"],
                    "true_power_dbfs": truth["mean_power_dbfs"],
                    "measured_offset_hz": math.nan,
                    "measured_power_dbfs": math.nan,
                }
                if name in cap.metrics.index:
                    m = cap.metrics.loc[name]
                    row["measured_offset_hz"] = float(m["frequency_offset_hz"])
                    row["measured_power_dbfs"] = float(m["signal_power_dbfs"])
                dwells.append(row)
            for name, r in (cap.parameters.get("retune") or {}).items():
                retunes.append(
                    {
                        "sweep": s,
                        "retune": i,
                        "receiver": name,
                        "to_offset_hz": cap.frequency_hz - f_tx,
                        "gap_s": float(r["gap_s"]),
                        "dropped_frames": int(r["dropped_frames"]),
                        "frames_before": int(r["frames_before"]),
                    }
                )
        print(f"  hopping sweep {s + 1}/{sweeps}: {wall:.1f} s", flush=True)
    d = pd.DataFrame(dwells)
    d["offset_error_hz"] = d.measured_offset_hz - d.true_offset_hz
    d["power_error_db"] = d.measured_power_dbfs - d.true_power_dbfs
    return {"dwells": d, "retunes": pd.DataFrame(retunes)}


# ----------------------------------------------------------------------------- 2. resume


def _cli() -> str:
    here = Path(sys.executable).parent / "heimdall-lab"
    return str(here) if here.exists() else "heimdall-lab"


_FINAL = ("done", "partial", "failed", "cancelled", "incomplete")


def resume_run(
    database_url: str,
    workdir: Path,
    *,
    receivers: int = 3,
    sweeps: int = 4,
    frequencies: int = 2,
    dwell_s: float = 3.0,
    stops: int = 2,
) -> dict[str, Any]:
    """A session started, stopped after its first sweep, resumed, stopped part-way, resumed.

    Every command is ``heimdall-lab`` in a process of its own. The first stop is asked as
    soon as the first sweep's captures are all final; the second once the resumed run's
    first capture has been receiving for half a dwell (part-way through it).

    Returns
    -------
    dict
        ``session_id``, ``plan``, ``timeline`` (seconds since the start, what happened),
        ``runs`` (each process's exit code and last lines), ``captures`` (the final
        :func:`heimdall_lab.db.session_captures` with the samples each kept), ``status``
        (the session's final status) and the checks: ``steps_total``, ``missing_steps``,
        ``duplicate_steps``, ``cut`` (captures cancelled or incomplete), ``unstepped``.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    iq = workdir / "iq"
    env = {**os.environ, "HEIMDALL_HOME": str(workdir / "home")}
    sid = new_capture_id()
    freqs = [F_TX + HOP_OFFSETS_HZ[i % len(HOP_OFFSETS_HZ)] for i in range(frequencies)]
    total = sweeps * frequencies
    base = [_cli(), "session"]
    db_args = ["--database-url", database_url]
    start_cmd = [
        *base,
        "start",
        "--id",
        sid,
        "--emulate",
        str(receivers),
        "--dwell",
        f"{dwell_s:g}",
        "--sweeps",
        str(sweeps),
        "--name",
        "benchmark stop/resume",
        "-q",
        "--iq-url",
        str(iq),
        *db_args,
    ]
    for f in freqs:
        start_cmd += ["-f", f"{f:.1f}"]
    resume_cmd = [*base, "resume", sid, "-q", "--iq-url", str(iq), *db_args]
    stop_cmd = [*base, "stop", sid, *db_args]
    engine = db.get_engine(database_url)
    timeline: list[tuple[float, str]] = []
    runs: list[dict[str, Any]] = []
    t0 = time.perf_counter()

    def note(what: str) -> None:
        timeline.append((time.perf_counter() - t0, what))
        print(f"  {timeline[-1][0]:6.1f} s  {what}", flush=True)

    def captures() -> pd.DataFrame:
        try:
            return db.session_captures(engine, sid)
        except Exception:  # the session row may not exist yet
            return pd.DataFrame(columns=["step", "status"])

    def launch(cmd: list[str], label: str) -> subprocess.Popen:
        note(f"{label}: {' '.join(cmd[1:4])} ...")
        return subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    def finish(proc: subprocess.Popen, label: str) -> None:
        out, _ = proc.communicate(timeout=_CLI_TIMEOUT_S)
        lines = [ln for ln in out.splitlines() if ln.strip()]
        runs.append({"run": label, "exit_code": proc.returncode, "output": lines[-6:]})
        status = next((ln for ln in reversed(lines) if ln.startswith("session ")), "?")
        note(f"{label} ended, exit {proc.returncode}: {status}")

    def stopper() -> subprocess.Popen:
        # "heimdall-lab session stop ID" in a process of its own, imported ahead of time
        # (starting the command line takes seconds on a loaded machine): it runs the
        # command's own entry point when told to, so the stop lands when asked for.
        code = (
            "import sys; from heimdall_lab.cli import main; sys.stdin.readline(); "
            "sys.exit(main(sys.argv[1:]))"
        )
        return subprocess.Popen(
            [sys.executable, "-c", code, *stop_cmd[1:]],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def stop(helper: subprocess.Popen, why: str) -> None:
        state = captures()
        busy = state[~state.status.isin(_FINAL)] if len(state) else state
        where = ", ".join(f"step {int(r.step)} {r.status}" for r in busy.itertuples()) or "none"
        note(f"stop asked ({why}); unfinished captures then: {where}")
        out, _ = helper.communicate("go\n", timeout=_CLI_TIMEOUT_S)
        note(f"stop answered: {out.strip().splitlines()[-1] if out.strip() else '?'}")

    def wait_until(test: Any, proc: subprocess.Popen, limit_s: float) -> bool:
        end = time.perf_counter() + limit_s
        while time.perf_counter() < end:
            if proc.poll() is not None:
                return False
            if test(captures()):
                return True
            time.sleep(0.1)
        return False

    try:
        # 1. start; stop once the first sweep's captures are final.
        helper = stopper()
        proc = launch(start_cmd, "start")
        first = set(range(frequencies))
        if wait_until(
            lambda c: first <= {int(s) for s in c[c.status.isin(_FINAL)].step.dropna()},
            proc,
            _CLI_TIMEOUT_S,
        ):
            stop(helper, "the first sweep's captures are final")
        else:
            helper.kill()
            helper.wait()
        finish(proc, "start")
        for k in range(1, stops):
            # resume; stop half a dwell into the resumed run's first capture.
            before = set(captures().capture_id)
            helper = stopper()
            proc = launch(resume_cmd, f"resume {k}")
            seen: dict[str, float] = {}

            def half_way(c: pd.DataFrame, before: set = before, seen: dict = seen) -> bool:
                new = c[~c.capture_id.isin(before) & (c.status == "receiving")]
                for cid in new.capture_id:
                    seen.setdefault(cid, time.perf_counter())
                return any(time.perf_counter() - t >= dwell_s / 2 for t in seen.values())

            if wait_until(half_way, proc, _CLI_TIMEOUT_S):
                stop(helper, "half a dwell into the resumed run's first capture")
            else:
                helper.kill()
                helper.wait()
            finish(proc, f"resume {k}")
        # resume until done.
        proc = launch(resume_cmd, f"resume {stops}")
        finish(proc, f"resume {stops}")
        final = captures()
        row = db.get_session(engine, sid) or {}
    finally:
        engine.dispose()
    store = IQStore(str(iq))
    kept = []
    for cid in final.capture_id:
        try:
            ds = store.open(cid)
            kept.append(int(ds["n_samples"].values.sum()))
        except Exception:  # no stored IQ: 0 samples kept
            kept.append(0)
    final = final.assign(samples_kept=kept)
    steps = final.step.dropna().astype(int)
    counts = steps.value_counts()
    expected_samples = receivers * dwell_s * 12001.0
    return {
        "session_id": sid,
        "plan": {
            "receivers": receivers,
            "sweeps": sweeps,
            "frequencies": freqs,
            "dwell_s": dwell_s,
            "steps": total,
            "stops": stops,
        },
        "timeline": timeline,
        "runs": runs,
        "captures": final[
            ["step", "capture_id", "status", "frequency_hz", "start_time", "samples_kept"]
        ],
        "status": row.get("status"),
        "steps_total": total,
        "missing_steps": sorted(set(range(total)) - set(steps)),
        "duplicate_steps": sorted(int(s) for s in counts[counts > 1].index),
        "unstepped": int(final.step.isna().sum()),
        "cut": int(final.status.isin(["cancelled", "incomplete"]).sum()),
        "short": int((final.samples_kept < 0.98 * expected_samples).sum()),
    }


# ----------------------------------------------------------------------------- 3. trigger


def burst_schedule(
    count: int,
    seed: int,
    *,
    snr_db: tuple[float, float] = (-5.0, 20.0),
    first_s: float = 3.0,
    durations_s: tuple[float, float] = (0.5, 2.0),
    gaps_s: tuple[float, float] = (3.0, 5.0),
) -> list[tuple[float, float, float]]:
    """``count`` bursts: SNRs evenly from ``snr_db[0]`` to ``[1]`` in a seeded order,
    seeded durations and gaps uniform in the ranges given, the first at ``first_s``.

    Returns
    -------
    list of (start_s, duration_s, snr_db)
    """
    rng = np.random.default_rng([seed, 0xB0])
    snrs = rng.permutation(np.linspace(snr_db[0], snr_db[1], count))
    out, t = [], first_s
    for snr in snrs:
        d = round(float(rng.uniform(*durations_s)), 3)
        out.append((round(t, 3), d, round(float(snr), 2)))
        t += d + float(rng.uniform(*gaps_s))
    return out


def _similar_sites(scenario: Scenario, count: int) -> tuple[list[str], str]:
    """The ``count`` sites whose C/N0 spread least, and the middle one (the reference)."""
    cn0 = sorted((scenario.truth(n, F_TX)["snr_db_in_1hz"], n) for n in scenario.site_names)
    spans = [(cn0[i + count - 1][0] - cn0[i][0], i) for i in range(len(cn0) - count + 1)]
    _, i = min(spans)
    chosen = [n for _, n in cn0[i : i + count]]
    return chosen, chosen[len(chosen) // 2]


def match_events(
    truth: list[dict[str, Any]], events: list[tuple[int, int, int]], frame_ns: float
) -> tuple[list[dict[str, Any]], int]:
    """Match events (start, end ns, first detected block's start ns) to bursts.

    An event matches a burst (arrival start, end ns) when the two overlap, the burst widened
    by one frame either side. Returns per burst ``detected``, ``start_error_s`` (the first
    matching event's start, its onset, minus the burst's arrival) and
    ``block_start_error_s`` (the same for the start of its first detected block), and the
    number of events matching no burst.
    """
    used = set()
    out = []
    for t in truth:
        lo, hi = t["arrival_start_ns"] - frame_ns, t["arrival_end_ns"] + frame_ns
        hits = [k for k, (s, e, _) in enumerate(events) if s <= hi and e >= lo]
        used.update(hits)
        errors = [math.nan, math.nan]
        if hits:
            errors = [(events[hits[0]][i] - t["arrival_start_ns"]) / 1e9 for i in (0, 2)]
        out.append(
            {
                "detected": bool(hits),
                "start_error_s": errors[0],
                "block_start_error_s": errors[1],
                "events": len(hits),
            }
        )
    return out, len(events) - len(used)


def _frames(ds: Any, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One receiver's whole frames of a stored capture: IQ (frames x 512), RSSI, UTC ns."""
    one = ds.sel(receiver=name)
    n = int(one["n_samples"].values) // FRAME_SAMPLES
    iq = np.asarray(one["iq"].values[: n * FRAME_SAMPLES]).reshape(n, FRAME_SAMPLES)
    rssi = np.asarray(one["frame_rssi_dbm"].values[:n], dtype=np.float64)
    times = np.asarray(one["frame_time"].values[:n]).astype("datetime64[ns]").astype(np.int64)
    return iq, rssi, times


def trigger_run(
    engine: Any,
    store: str,
    *,
    receivers: int = 3,
    bursts: int = 12,
    seed: int = 7,
    pfa: float = 1e-3,
    pre_s: float = 0.5,
    post_s: float = 0.5,
    noise_s: float = 120.0,
    offline_noise_s: float = 300.0,
    first_s: float = 3.0,
    durations_s: tuple[float, float] = (0.5, 2.0),
    gaps_s: tuple[float, float] = (3.0, 5.0),
    tail_s: float = 3.0,
) -> dict[str, Any]:
    """Triggered recording of a burst scene and of noise; the band and S-meter detectors.

    Returns
    -------
    dict
        ``bursts``: one row per receiver and burst (true SNR in the detector's band,
        duration, the predicted chance of detecting it, and per detector whether it was
        detected and the start error); ``false``: per scene and detector the events
        matching no burst, the blocks tested and the expected count; ``setup``.
    """
    base = Scenario.default(seed=seed)
    names, ref = _similar_sites(base, receivers)
    rate = base.nominal_rate
    det = BandDetector(rate, pfa=pfa, bandwidth_hz=BAND_HZ)
    nbw = det.noise_bandwidth_hz
    schedule = burst_schedule(bursts, seed, first_s=first_s, durations_s=durations_s, gaps_s=gaps_s)
    scene = base.with_bursts(
        schedule, site_name=ref, frequency_hz=F_TX, bandwidth_hz=nbw, epoch_utc=TRIGGER_START
    )
    noise = replace(base, transmitter=None)
    dwell = math.ceil(schedule[-1][0] + schedule[-1][1] + tail_s)
    trig = {"pfa": pfa, "bandwidth_hz": BAND_HZ, "pre_s": pre_s, "post_s": post_s}
    frame_ns = FRAME_SAMPLES / rate * 1e9
    walls = {}

    def triggered(sc: Scenario, start: np.datetime64, seconds: float, label: str) -> Any:
        t = time.perf_counter()
        with emulated(scenario=sc, receivers=names, start_utc=start, realtime=True) as emu:
            (cap,) = sweep(
                [(F_TX, seconds)], engine=engine, store=store, trigger=trig, **emu.capture_options
            )
        walls[label] = time.perf_counter() - t
        print(f"  triggered {label}: {len(cap.events)} events in {walls[label]:.1f} s", flush=True)
        return cap

    def continuous(sc: Scenario, start: np.datetime64, seconds: float, label: str) -> Any:
        t = time.perf_counter()
        with emulated(scenario=sc, receivers=names, start_utc=start, realtime=False) as emu:
            cap = capture(F_TX, seconds, engine=engine, store=store, **emu.capture_options)
        walls[label] = time.perf_counter() - t
        return IQStore(store).open(cap.capture_id)

    live = triggered(scene, TRIGGER_START, dwell, "burst scene, real time")
    quiet = triggered(noise, NOISE_START, noise_s, "noise only, real time")
    scene_ds = continuous(scene, TRIGGER_START, dwell, "burst scene, continuous, fast")
    noise_ds = continuous(noise, NOISE_START, offline_noise_s, "noise only, continuous, fast")

    def online(cap: Any, name: str) -> list[tuple[int, int, int]]:
        out = []
        for e in (e for e in cap.events if e["receiver"] == name):
            meta = e["metadata"]
            ahead = (meta["start_frame"] - meta["onset_frame"]) * frame_ns
            out.append((_ns(e["start_utc"]), _ns(e["end_utc"]), _ns(e["start_utc"]) + round(ahead)))
        return out

    def frames_of(cap: Any, name: str) -> int:
        return sum(o.frames for o in cap.acquisition.outcomes if o.receiver.name == name)

    rows, false = [], []
    noise_rssi = {}
    for name in names:
        _, n_rssi, _ = _frames(noise_ds, name)
        noise_rssi[name] = float(np.median(n_rssi))
    for name in names:
        truth = scene.burst_truth(name, F_TX, bandwidth_hz=nbw)
        iq, rssi, times = _frames(scene_ds, name)
        found = {
            "band, triggered (online)": online(live, name),
            "band, offline": [
                (e.start_time_ns, e.end_time_ns, int(times[e.start_frame]))
                for e in detect_events(
                    iq,
                    rate,
                    frame_times_ns=times,
                    pfa=pfa,
                    bandwidth_hz=BAND_HZ,
                    pre_s=pre_s,
                    post_s=post_s,
                )
            ],
        }
        for margin in SMETER_MARGINS_DB:
            events = smeter_events(
                rssi,
                noise_rssi[name] + margin,
                rate,
                frame_times_ns=times,
                pre_s=pre_s,
                post_s=post_s,
            )
            found[f"S-meter, noise +{margin:g} dB"] = [
                (e.start_time_ns, e.end_time_ns, e.start_time_ns) for e in events
            ]
        # Blocks outside the bursts (each widened by a frame and the tail) in the scene.
        inside = sum((t["arrival_end_ns"] - t["arrival_start_ns"]) / frame_ns + 2 for t in truth)
        outside = {"band, triggered (online)": frames_of(live, name) - inside}
        for detector, events in found.items():
            matched, unmatched = match_events(truth, events, frame_ns)
            for t, m in zip(truth, matched, strict=True):
                n_blocks = max(int(t["duration_s"] * rate / FRAME_SAMPLES) - 1, 0)
                p_block = float(det.detection_probability(t["snr_db"]))
                rows.append(
                    {
                        "receiver": name,
                        "burst": t["index"],
                        "snr_db": t["snr_db"],
                        "duration_s": t["duration_s"],
                        "detector": detector,
                        "p_block": p_block,
                        "p_burst": 1.0 - (1.0 - p_block) ** n_blocks,
                        **m,
                    }
                )
            blocks = outside.get(detector, len(iq) - inside)
            false.append(
                {
                    "scene": "burst scene (between bursts)",
                    "receiver": name,
                    "detector": detector,
                    "false_events": unmatched,
                    "blocks": blocks,
                }
            )
    for name in names:
        iq, rssi, times = _frames(noise_ds, name)
        false.append(
            {
                "scene": f"noise only, triggered, {noise_s:g} s",
                "receiver": name,
                "detector": "band, triggered (online)",
                "false_events": sum(1 for e in quiet.events if e["receiver"] == name),
                "blocks": frames_of(quiet, name),
            }
        )
        events = detect_events(
            iq,
            rate,
            frame_times_ns=times,
            pfa=pfa,
            bandwidth_hz=BAND_HZ,
            pre_s=pre_s,
            post_s=post_s,
        )
        false.append(
            {
                "scene": f"noise only, continuous, {offline_noise_s:g} s",
                "receiver": name,
                "detector": "band, offline",
                "false_events": len(events),
                "blocks": len(iq),
            }
        )
        for margin in SMETER_MARGINS_DB:
            events = smeter_events(
                rssi,
                noise_rssi[name] + margin,
                rate,
                frame_times_ns=times,
                pre_s=pre_s,
                post_s=post_s,
            )
            false.append(
                {
                    "scene": f"noise only, continuous, {offline_noise_s:g} s",
                    "receiver": name,
                    "detector": f"S-meter, noise +{margin:g} dB",
                    "false_events": len(events),
                    "blocks": len(iq),
                }
            )
    rssi_spread = {
        name: float(np.std(_frames(noise_ds, name)[1])) for name in names
    }  # per-frame scatter of the noise RSSI, dB
    return {
        "bursts": pd.DataFrame(rows),
        "false": pd.DataFrame(false),
        "setup": {
            "receivers": names,
            "reference": ref,
            "schedule": schedule,
            "dwell_s": dwell,
            "noise_s": noise_s,
            "offline_noise_s": offline_noise_s,
            "pfa": pfa,
            "pre_s": pre_s,
            "post_s": post_s,
            "band_hz": BAND_HZ,
            "noise_bandwidth_hz": nbw,
            "threshold": det.threshold,
            "k": det.k,
            "m": det.m,
            "noise_rssi_dbm": noise_rssi,
            "noise_rssi_std_db": rssi_spread,
            "snr_sure_db": _snr_for(det, SURE, 0.5 * rate / FRAME_SAMPLES - 1),
            "snr_half_block_db": _snr_for(det, 0.5, 1),
            "walls_s": walls,
            "seed": seed,
            "start_utc": str(TRIGGER_START),
            "noise_start_utc": str(NOISE_START),
        },
    }


def _snr_for(det: BandDetector, p: float, blocks: float) -> float:
    """The SNR (dB) at which ``blocks`` blocks give at least one crossing with probability p."""
    n = max(int(blocks), 1)
    lo, hi = -20.0, 30.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if 1.0 - (1.0 - float(det.detection_probability(mid))) ** n >= p:
            hi = mid
        else:
            lo = mid
    return hi


# ----------------------------------------------------------------------------- figures


def figures(results: dict[str, Any], folder: Path) -> dict[str, Path]:
    """``sessions_hopping.png`` and ``sessions_trigger.png`` in ``folder``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    hop = results.get("hopping")
    if hop is not None:
        d, r = hop["dwells"], hop["retunes"]
        fig, axes = plt.subplots(1, 3, figsize=(11, 3.4), layout="constrained")
        x = d.sweep * len(HOP_OFFSETS_HZ) + d.hop
        for name, g in d.groupby("receiver"):
            xi = x[g.index]
            axes[0].plot(xi, g.offset_error_hz * 1e3, "o", ms=4, label=name)
            axes[1].plot(xi, g.power_error_db, "o", ms=4)
        for ax, goal, label in (
            (axes[0], OFFSET_GOAL_HZ * 1e3, "offset error (mHz)"),
            (axes[1], POWER_GOAL_DB, "power error (dB)"),
        ):
            ax.axhspan(-goal, goal, color="0.9", zorder=0)
            ax.axhline(0, color="k", lw=0.6)
            ax.set_xlabel("dwell (sweep x 3 + hop)")
            ax.set_ylabel(label)
        axes[0].legend(fontsize=7, loc="best")
        axes[0].set_title("offset vs truth (goal band shaded)", fontsize=9)
        axes[1].set_title("signal power vs truth", fontsize=9)
        frame_ms = FRAME_SAMPLES / 12001.135 * 1e3
        if not r.empty:
            axes[2].plot(np.arange(len(r)), r.gap_s * 1e3, "o", ms=4)
        axes[2].axhline(frame_ms, color="r", lw=0.8, label=f"one frame ({frame_ms:.1f} ms)")
        axes[2].set_xlabel("retune (all receivers)")
        axes[2].set_ylabel("gap (ms)")
        axes[2].set_title("retune gap from GNSS times", fontsize=9)
        axes[2].legend(fontsize=7)
        path = folder / "sessions_hopping.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        out["hopping"] = path
    trig = results.get("trigger")
    if trig is not None and not trig["bursts"].empty:
        b = trig["bursts"]
        fig, ax = plt.subplots(figsize=(6.5, 3.8), layout="constrained")
        markers = dict(zip(b.detector.unique(), "osD^v", strict=False))
        for k, (detector, g) in enumerate(b.groupby("detector", sort=False)):
            jitter = (k - 1.5) * 0.08
            ax.plot(
                g.snr_db,
                g.detected.astype(float) + jitter,
                markers[detector],
                ms=5,
                alpha=0.7,
                label=detector,
            )
        grid = np.linspace(b.snr_db.min() - 1, b.snr_db.max() + 1, 200)
        setup = trig["setup"]
        det = BandDetector(12001.135, pfa=setup["pfa"], bandwidth_hz=setup["band_hz"])
        n = max(int(0.5 * 12001.135 / FRAME_SAMPLES) - 1, 1)
        ax.plot(
            grid,
            1 - (1 - det.detection_probability(grid)) ** n,
            "k-",
            lw=0.8,
            label="band: P(detect 0.5 s burst)",
        )
        ax.plot(grid, det.detection_probability(grid), "k:", lw=0.8, label="band: P per block")
        ax.set_xlabel(f"burst SNR in the {setup['band_hz']:g} Hz band at the receiver (dB)")
        ax.set_ylabel("detected (1) / missed (0)")
        ax.set_title("Bursts detected, per receiver and burst", fontsize=9)
        ax.legend(fontsize=7, loc="center right")
        path = folder / "sessions_trigger.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        out["trigger"] = path
    return out


# ----------------------------------------------------------------------------- report


def _table(df: pd.DataFrame, floatfmt: str = ".3g") -> str:
    if df.empty:
        return "(none)"
    cols = list(df.columns)
    lines = ["| " + " | ".join(str(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        cells = []
        for v in row:
            if isinstance(v, float | np.floating):
                cells.append("-" if not math.isfinite(v) else format(v, floatfmt))
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _smeter_snr(margin_db: float, bandwidth_hz: float) -> float:
    """In-band SNR (dB) at which a steady signal lifts the 12 kHz total power by margin_db."""
    return 10 * math.log10(10 ** (margin_db / 10) - 1) + 10 * math.log10(12001.135 / bandwidth_hz)


def _poisson(expected: float) -> tuple[int, int]:
    lo, hi = scipy.stats.poisson.interval(0.95, expected)
    return int(lo), int(hi)


def _garwood(k: int) -> tuple[float, float]:
    lo = 0.0 if k == 0 else scipy.stats.chi2.ppf(0.025, 2 * k) / 2
    return lo, scipy.stats.chi2.ppf(0.975, 2 * k + 2) / 2


def _met(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def report(results: dict[str, Any], path: Path, images: dict[str, str]) -> str:
    """Write the markdown report; returns its text."""
    cfg = results["settings"]
    machine = results.get("machine", {})
    quick = dict(cfg) == dict(Settings.quick())
    lines = [
        "# Recording sessions: hopping, stop and resume, triggered recording",
        "",
        f"Generated by `python -m benchmarks sessions{' --quick' if quick else ''}` on "
        f"{results['finished']} UTC in {results['elapsed_s'] / 60:.1f} min; heimdall_lab "
        f"{__version__}, Python {machine.get('python', '?')}, {machine.get('cpu', '?')}, "
        f"{machine.get('cores', '?')}, load average at the start {machine.get('load_average')}"
        ". Loopback only: every receiver is the emulator (in this process for parts 1 and 3, "
        "in the session's own process for part 2), one embedded PostgreSQL (throwaway), local "
        "IQ folders in a temporary directory. The machine is shared with other work.",
        "",
        *(["**A quick (smoke) run: its figures are not for judging goals.**", ""] if quick else []),
        f"Settings: `{json.dumps(dict(cfg))}`.",
        "",
    ]
    frame_s = FRAME_SAMPLES / 12001.135
    hop = results.get("hopping")
    if hop is not None:
        d, r = hop["dwells"], hop["retunes"]
        max_off = float(d.offset_error_hz.abs().max())
        max_pow = float(d.power_error_db.abs().max())
        max_gap = float(r.gap_s.abs().max()) if len(r) else math.nan
        dropped = int(r.dropped_frames.sum()) if len(r) else 0
        lost = int((r.dropped_frames > 0).sum()) if len(r) else 0
        hop_ok = bool(len(r)) and max_gap < frame_s / 2 and not dropped
        per = (
            d.groupby(["tuned_offset_hz"])
            .agg(
                dwells=("receiver", "size"),
                max_abs_offset_error_mhz=("offset_error_hz", lambda s: s.abs().max() * 1e3),
                mean_offset_error_mhz=("offset_error_hz", lambda s: s.mean() * 1e3),
                max_abs_power_error_db=("power_error_db", lambda s: s.abs().max()),
                mean_power_error_db=("power_error_db", "mean"),
            )
            .reset_index()
        )
        names_last = Scenario.default(seed=cfg["hop_seed"]).site_names[cfg["hop_receivers"] - 1]
        stages = ", ".join(
            f"{k} {v}" for k, v in d.drop_duplicates(["sweep", "hop"]).stage.value_counts().items()
        )
        lines += [
            "## 1. Three-frequency hopping on the emulator",
            "",
            f"`pipeline.sweep` through f_tx, f_tx + 1500 Hz, f_tx - 2000 Hz (f_tx = "
            f"{F_TX / 1e6:g} MHz, all within the +-6 kHz passband), {cfg['hop_dwell_s']:g} s "
            f"each, {cfg['hop_receivers']} real-time emulated receivers "
            f"(`Scenario.default(seed={cfg['hop_seed']})`, its first sites), "
            f"{cfg['hop_sweeps']} sweeps, each in an emulator of its own started at the next "
            "whole second (fresh noise per sweep); one connection per receiver and sweep, "
            "retuned on it. Per dwell and receiver: the capture's `frequency_offset_hz` "
            "against `Scenario.truth(site, tuned)['frequency_offset_hz']` (the carrier's "
            "baseband frequency in true time: the capture measures at the rate fitted to the "
            "GNSS times) and `signal_power_dbfs` against `mean_power_dbfs` over the dwell's "
            "stored samples (`Scenario.truth(..., start_utc=, duration_s=)`: the default "
            "transmitter is a keyed carrier, whose mean power depends on the window). Retune gaps "
            "from `Capture.parameters['retune']` (the time from the end of the dwell's last "
            "frame to the next dwell's first frame, from their GNSS times). The last receiver "
            f"({names_last}) sends {cfg['hop_latency_frames']} more frames at the old "
            "frequency after each retune reaches it (`retune_latency_frames`), as a receiver "
            "whose sound pipeline holds a few: `frames_before` counts the frames a dwell kept "
            "after the retune was sent, still at its frequency (a KiwiSDR flags the first "
            "frame at the new one).",
            "",
            "| goal | measured | |",
            "|---|---|---|",
            f"| max abs offset error <= {OFFSET_GOAL_HZ:g} Hz | {max_off * 1e3:.2f} mHz "
            f"({len(d)} dwells x receivers) | {_met(max_off <= OFFSET_GOAL_HZ)} |",
            f"| max abs power error <= {POWER_GOAL_DB:g} dB | {max_pow:.3f} dB | "
            f"{_met(max_pow <= POWER_GOAL_DB)} |",
            f"| retune gap < one frame ({frame_s * 1e3:.1f} ms), no frame dropped | max "
            f"{max_gap * 1e3:.3f} ms over {len(r)} retunes; {lost} of them dropped frames "
            f"({dropped} in all) | {_met(hop_ok)} |",
            "",
            f"Captures' stages: {stages}.",
            "",
            _table(per, ".3f"),
            "",
            "Retunes, per receiver and retune:",
            "",
            _table(
                r.assign(gap_ms=r.gap_s * 1e3)[
                    [
                        "sweep",
                        "retune",
                        "receiver",
                        "to_offset_hz",
                        "gap_ms",
                        "dropped_frames",
                        "frames_before",
                    ]
                ],
                ".4f",
            )
            if len(r)
            else "(none)",
            "",
        ]
        if "hopping" in images:
            lines += [f"![hopping accuracy and retune gaps]({images['hopping']})", ""]
    res = results.get("resume")
    if res is not None:
        p = res["plan"]
        ok = not res["missing_steps"] and not res["duplicate_steps"] and res["status"] == "done"
        caps = res["captures"].copy()
        caps["start_time"] = caps.start_time.dt.strftime("%H:%M:%S.%f").str[:-3]
        times = {1: "once", 2: "twice"}.get(p["stops"], f"{p['stops']} times")
        lines += [
            f"## 2. A session stopped and resumed {times}",
            "",
            f"`heimdall-lab session start --emulate {p['receivers']} "
            + " ".join(f"-f {f:.0f}" for f in p["frequencies"])
            + f" --dwell {p['dwell_s']:g} --sweeps {p['sweeps']}` ({p['steps']} steps) in a "
            "process of its own (its emulator in that process, real time); `heimdall-lab "
            "session stop ID` from another process as soon as the first sweep's captures were "
            "final, then `session resume ID`, stopped again half a dwell into the resumed "
            "run's first capture, then resumed until done. Timeline (seconds since the "
            "start):",
            "",
            *[f"- {t:6.1f} s: {what}" for t, what in res["timeline"]],
            "",
            f"| check | result | |\n|---|---|---|\n"
            f"| session's final status | {res['status']} | {_met(res['status'] == 'done')} |\n"
            f"| steps without a capture | {res['missing_steps'] or 'none'} | "
            f"{_met(not res['missing_steps'])} |\n"
            f"| steps with more than one capture | {res['duplicate_steps'] or 'none'} | "
            f"{_met(not res['duplicate_steps'])} |\n"
            f"| captures without a step | {res['unstepped']} | |\n"
            f"| captures cut by a stop (cancelled / incomplete) | {res['cut']} | gaps, kept |\n"
            f"| captures with < 98 % of their samples | {res['short']} | |",
            "",
            f"Plan completed with no duplicate capture: {_met(ok)}. The captures, by step "
            "(`samples_kept`: IQ samples in the store, all receivers; a full step is "
            f"{p['receivers']} x {p['dwell_s']:g} s x 12001 Hz = "
            f"{p['receivers'] * p['dwell_s'] * 12001:.0f}):",
            "",
            _table(caps, ".1f"),
            "",
            "Each process's last lines:",
            "",
        ]
        for run_ in res["runs"]:
            lines.append(
                f"- `{run_['run']}` (exit {run_['exit_code']}): "
                + "; ".join(f"`{ln}`" for ln in run_["output"][-3:])
            )
        lines.append("")
    trig = results.get("trigger")
    if trig is not None:
        s = trig["setup"]
        b, f = trig["bursts"], trig["false"]
        sched = ", ".join(f"{st:g}+{du:g} s @ {snr:+g} dB" for st, du, snr in s["schedule"])
        b = b.assign(snr_bin=(np.floor(b.snr_db / 5) * 5).astype(int))
        per_snr = (
            b.pivot_table(
                index="snr_bin",
                columns="detector",
                values="detected",
                aggfunc="sum",
                sort=False,
            )
            .astype(int)
            .astype(str)
        )
        totals = b[b.detector == b.detector.iloc[0]].groupby("snr_bin").size()
        per_snr = per_snr.apply(lambda col: col + " / " + totals.astype(str))
        per_snr = per_snr.sort_index().reset_index()
        per_snr["snr_bin"] = [f"{v:+d} .. {v + 5:+d} dB" for v in per_snr.snr_bin]
        online = b[b.detector == "band, triggered (online)"]
        sure = online[online.p_burst >= SURE]
        within = online.detected & (online.start_error_s.abs() <= FRAME_SAMPLES / 12001.135)
        sure_within = within[sure.index]
        block_within = online.detected & (
            online.block_start_error_s.abs() <= FRAME_SAMPLES / 12001.135
        )
        first = online[online.p_block >= SURE]
        first_within = within[first.index]
        lines += [
            "## 3. Triggered recording against a fixed S-meter threshold",
            "",
            f"Scene: `Scenario.default(seed={s['seed']})` with bursts "
            f"(`Scenario.with_bursts`, SNR in the detector's {s['noise_bandwidth_hz']:.1f} Hz "
            f"noise bandwidth at the reference site {s['reference']}); receivers "
            f"{', '.join(s['receivers'])} (the {len(s['receivers'])} default sites of most "
            f"similar C/N0; each hears the bursts at its own SNR, from `burst_truth`). "
            f"Streams start at {s['start_utc']} (fixed, so the IQ is the same every run). "
            f"Schedule (emission start + duration @ SNR at the reference): {sched}.",
            "",
            f"Detector: `trigger={{'pfa': {s['pfa']:g}, 'bandwidth_hz': {s['band_hz']:g}, "
            f"'pre_s': {s['pre_s']:g}, 'post_s': {s['post_s']:g}}}` (passband default "
            f"+-5 kHz): k = {s['k']} band bins, m = {s['m']} noise bins, threshold T > "
            f"{s['threshold']:.3f}. A 0.5 s burst is detected with probability >= {SURE:g} "
            f"from {s['snr_sure_db']:.1f} dB; one block crosses with probability 0.5 at "
            f"{s['snr_half_block_db']:.1f} dB.",
            "",
            "What was run:",
            "",
            f"- **band, triggered (online)**: `pipeline.sweep([(10e6, {s['dwell_s']:g})], "
            "trigger=...)` on real-time emulated receivers; events from `Capture.events`.",
            "- **band, offline**: the same scene recorded continuously with `pipeline.capture` "
            "(emulator as fast as possible, same scenario and start: the same frames), "
            "`trigger.detect_events` over its stored IQ with the same options.",
            "- **S-meter, noise +3 / +6 dB**: `trigger.smeter_events` over the same capture's "
            "stored `frame_rssi_dbm`, threshold = the receiver's median frame RSSI in the "
            "noise-only capture + 3 or + 6 dB, same pre/post.",
            "",
            "A burst is detected when an event overlaps it (widened by one frame either "
            "side); an event overlapping no burst is a false trigger.",
            "",
            "Detected bursts per SNR at the receiver (all receivers):",
            "",
            _table(per_snr),
            "",
            f"Bursts above the detection threshold (P(detect) >= {SURE:g}) recorded by the "
            f"triggered session: {int(sure.detected.sum())} / {len(sure)} "
            f"({_met(bool(len(sure)) and bool(sure.detected.all()))}); their start within "
            f"one frame of the truth: {int(sure_within.sum())} / {len(sure)} "
            f"({_met(bool(len(sure)) and bool(sure_within.all()))}); of those whose first "
            f"block crosses with probability >= {SURE:g} (a later start means the first "
            f"blocks were missed): {int(first_within.sum())} / {len(first)} "
            f"({_met(bool(len(first)) and bool(first_within.all()))}). All detected bursts: "
            f"start error median {online.start_error_s.abs().median() * 1e3:.1f} ms, max "
            f"{online.start_error_s.abs().max() * 1e3:.1f} ms (one frame "
            f"{FRAME_SAMPLES / 12.001135:.1f} ms). An event's start is its onset, the change "
            "point of the band's power around its first detected block "
            "(`BandDetector.onset`); the start of that block instead would be off by median "
            f"{online.block_start_error_s.abs().median() * 1e3:.1f} ms, max "
            f"{online.block_start_error_s.abs().max() * 1e3:.1f} ms, and within one frame for "
            f"{int(block_within[sure.index].sum())} / {len(sure)} of the bursts above the "
            "threshold (`block_start_error_ms` below).",
            "",
            "Per burst and receiver (triggered session):",
            "",
            _table(
                online.assign(
                    start_error_ms=online.start_error_s * 1e3,
                    block_start_error_ms=online.block_start_error_s * 1e3,
                )[
                    [
                        "receiver",
                        "burst",
                        "snr_db",
                        "duration_s",
                        "p_block",
                        "p_burst",
                        "detected",
                        "start_error_ms",
                        "block_start_error_ms",
                    ]
                ].sort_values(["snr_db"]),
                ".3g",
            ),
            "",
        ]
        agg = (
            f.groupby(["scene", "detector"], sort=False)
            .agg(false_events=("false_events", "sum"), blocks=("blocks", "sum"))
            .reset_index()
        )
        expected, interval, garwood = [], [], []
        for row in agg.itertuples():
            if row.detector.startswith("band"):
                lam = s["pfa"] * row.blocks
                lo, hi = _poisson(lam)
                expected.append(f"{lam:.1f}")
                interval.append(f"{lo} .. {hi}")
            else:
                expected.append("not stated")
                interval.append("-")
            g_lo, g_hi = _garwood(int(row.false_events))
            garwood.append(
                f"{g_lo / row.blocks:.2e} .. {g_hi / row.blocks:.2e}" if row.blocks > 0 else "-"
            )
        agg["blocks"] = agg.blocks.round().astype(int)
        agg["expected (pfa x blocks)"] = expected
        agg["95 % Poisson range of the count"] = interval
        agg["observed rate per block, 95 % (Garwood)"] = garwood
        spread = ", ".join(f"{k} {v:.2f} dB" for k, v in s["noise_rssi_std_db"].items())
        levels = ", ".join(f"{k} {v:.1f} dBm" for k, v in s["noise_rssi_dbm"].items())
        lines += [
            "### False triggers",
            "",
            f"Noise-only scene: the same sites with no transmitter (`transmitter=None`), "
            f"streams from {s['noise_start_utc']}: triggered for {s['noise_s']:g} s (real "
            f"time), and the first {s['offline_noise_s']:g} s recorded continuously (fast) for "
            "the offline detectors. In the burst scene, the blocks outside the bursts (each "
            "widened by a frame either side) count. A block is one 512-sample frame; at "
            f"pfa {s['pfa']:g} per block the expected number of events is pfa x blocks (an "
            "event's tail can merge a second crossing into it, so slightly fewer), with the "
            "central 95 % range of a Poisson count of that mean; the last column is the "
            "exact 95 % interval of the observed rate.",
            "",
            _table(agg),
            "",
            f"Noise RSSI (median of the frames): {levels}; its scatter frame to frame "
            f"(std): {spread}. With 512-sample frames the S-meter's own scatter is a few "
            "tenths of a dB, so a margin of 3 dB is many standard deviations: hardly any "
            "false triggers; but the S-meter reads the total power of the whole sampled band "
            f"(12 kHz), so a burst crosses noise + X dB only when its SNR in the "
            f"{s['noise_bandwidth_hz']:.0f} Hz band exceeds 10 log10(10^(X/10) - 1) + "
            f"10 log10(12001 / {s['noise_bandwidth_hz']:.0f}): "
            + ", ".join(
                f"{_smeter_snr(m, s['noise_bandwidth_hz']):.1f} dB for +{m:g} dB"
                for m in SMETER_MARGINS_DB
            )
            + ". Its false-alarm rate is not stated: it depends on the noise level and on the "
            "calibration, which the band detector's F test needs neither of.",
            "",
        ]
        if "trigger" in images:
            lines += [f"![bursts detected per SNR]({images['trigger']})", ""]
        walls = ", ".join(f"{k} {v:.1f} s" for k, v in s["walls_s"].items())
        lines += [f"Wall time of each recording: {walls}.", ""]
    lines += [
        "## How it was measured",
        "",
        "- Machine: " + ", ".join(f"{k} {v}" for k, v in machine.items() if k != "packages"),
        f"- Command: `.venv/bin/python -m benchmarks sessions{' --quick' if quick else ''}`; "
        f"seeds: hopping scenario {cfg['hop_seed']}, trigger scenario and burst schedule "
        f"{cfg['trigger_seed']}; trigger streams start at fixed times (above); the hopping "
        "and session emulators start at the next whole second (their noise differs from run "
        "to run).",
        "- Nothing here is a timing assertion: the test suite runs this with tiny sizes "
        "(`tests/test_benchmark.py`) only to see that it works.",
        "",
    ]
    text = "\n".join(lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return text


# ----------------------------------------------------------------------------- runner


def run(
    cfg: Settings,
    database_url: str | None = None,
    parts: Sequence[str] = ("hopping", "resume", "trigger"),
    workdir: Path | None = None,
) -> dict[str, Any]:
    """Run the parts on one database and temporary IQ folders; the raw results."""
    started = time.perf_counter()
    results: dict[str, Any] = {"settings": dict(cfg), "machine": machine_info()}
    with tempfile.TemporaryDirectory(prefix="heimdall-bench-sessions-") as tmp:
        work = Path(workdir) if workdir else Path(tmp)
        with scratch_database(database_url) as url:
            engine = db.get_engine(url)
            try:
                if "hopping" in parts:
                    print("1. hopping", flush=True)
                    results["hopping"] = hopping_run(
                        engine,
                        str(work / "iq-hopping"),
                        receivers=cfg["hop_receivers"],
                        dwell_s=cfg["hop_dwell_s"],
                        sweeps=cfg["hop_sweeps"],
                        seed=cfg["hop_seed"],
                        latency_frames=cfg["hop_latency_frames"],
                    )
                if "resume" in parts:
                    print("2. stop and resume", flush=True)
                    results["resume"] = resume_run(
                        url,
                        work / "resume",
                        receivers=cfg["resume_receivers"],
                        sweeps=cfg["resume_sweeps"],
                        frequencies=cfg["resume_frequencies"],
                        dwell_s=cfg["resume_dwell_s"],
                        stops=cfg["resume_stops"],
                    )
                if "trigger" in parts:
                    print("3. triggered recording", flush=True)
                    results["trigger"] = trigger_run(
                        engine,
                        str(work / "iq-trigger"),
                        receivers=cfg["trigger_receivers"],
                        bursts=cfg["bursts"],
                        seed=cfg["trigger_seed"],
                        pfa=cfg["pfa"],
                        pre_s=cfg["pre_s"],
                        post_s=cfg["post_s"],
                        noise_s=cfg["noise_s"],
                        offline_noise_s=cfg["offline_noise_s"],
                        first_s=cfg["burst_first_s"],
                        durations_s=tuple(cfg["burst_durations_s"]),
                        gaps_s=tuple(cfg["burst_gaps_s"]),
                        tail_s=cfg["burst_tail_s"],
                    )
            finally:
                engine.dispose()
    results["elapsed_s"] = time.perf_counter() - started
    results["finished"] = f"{datetime.now(UTC):%Y-%m-%d %H:%M}"
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sessions benchmark and write its report and figures."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks sessions", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--database-url", help="default: a throwaway embedded PostgreSQL")
    parser.add_argument(
        "--parts", default="hopping,resume,trigger", help="comma-separated (default all three)"
    )
    parser.add_argument("--report", type=Path, default=REPO / "reports" / "sessions.md")
    parser.add_argument(
        "--figures", type=Path, default=None, help="default: <report folder>/figures"
    )
    args = parser.parse_args(argv)
    cfg = Settings.quick() if args.quick else Settings.full()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(parts) - {"hopping", "resume", "trigger"}
    if unknown:
        parser.error(f"unknown part(s) {sorted(unknown)}")
    results = run(cfg, args.database_url, parts)
    folder = args.figures or args.report.parent / "figures"
    written = figures(results, folder)
    images = {}
    for key, p in written.items():
        try:
            images[key] = str(p.resolve().relative_to(args.report.parent.resolve()))
        except ValueError:
            images[key] = str(p)
    print(report(results, args.report, images))
    res = results.get("resume")
    bad = res is not None and (res["missing_steps"] or res["duplicate_steps"])
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
