"""Streaming captures: memory against time, and captures killed at random points.

Run from the repository root::

    .venv/bin/python -m benchmarks streaming [--quick] [--database-url URL]
    .venv/bin/python -m benchmarks.streaming [--parts memory,kills] [--results PATH]

Every figure is measured here, on loopback only (the emulator, in the capture's own
process), against one embedded PostgreSQL (throwaway unless ``--database-url``) and local IQ
folders in a temporary directory:

1. **Memory against time.** ``heimdall-lab capture -f 10e6 -d D --emulate N --fast -q`` runs
   as a subprocess with its own ``HEIMDALL_HOME`` and IQ folder; every 0.5 s its RSS (the
   process and its children, psutil), its ``VmHWM`` and the intervals it has stored (the
   ``frame_seq`` chunk objects in its zarr folder) are sampled. Peak RSS, the curve, the
   stored bytes (apparent size of the zarr folder, as ``du -sb``, and disk blocks) against
   the IQ as complex64, and a linear fit of RSS against the seconds of IQ stored per
   receiver after warm-up, which projects the run to an hour.
2. **SIGKILL at random points.** ``heimdall-lab capture -f 10e6 -d 120 --emulate 3 --fast
   --interval 5 -q`` is killed (SIGKILL) at seeded random times within its receiving window
   (measured first by an unkilled calibration run), its heartbeat moved back past
   :data:`heimdall_lab.db.STALE_AFTER_S` in SQL (as ``tests/test_reliability.py`` does), and
   ``heimdall-lab sync --stale-after 1`` run twice (the command line wants a number over 0;
   any up to :data:`~heimdall_lab.db.STALE_AFTER_S` means that floor). Checked: the stored
   extent of each receiver against its frames with a sequence number in the raw zarr array
   and against the intervals it had written when it died; every measurement row against the
   IQ it came from
   (:func:`heimdall_lab.store.stream.stored_interval_rows`); rows lost and duplicated; that
   the second sync changes nothing (rows, capture row, every stored object).

Writes ``reports/streaming.md`` and ``reports/figures/streaming_memory.png``. No timing is
asserted anywhere: ``tests/test_benchmark.py`` runs ``--quick`` only to see it work.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script
    sys.path.insert(0, str(REPO))

from benchmarks.harness import machine_info, scratch_database
from heimdall_lab import db
from heimdall_lab.recording import NOMINAL_RATE
from heimdall_lab.store import IQStore
from heimdall_lab.store.stream import FRAME_VARS, stored_interval_rows
from heimdall_lab.versions import __version__

__all__ = [
    "Settings",
    "capture_command",
    "code_state",
    "figure",
    "fit_memory",
    "kill_run",
    "main",
    "memory_run",
    "per_interval_kb",
    "projection",
    "receiving_window",
    "report",
    "run",
]

FREQUENCY = "10e6"
#: Sampling period of the memory curves, seconds.
SAMPLE_S = 0.5
#: The issue's goal: peak RSS of 20 receivers x 600 s.
GOAL_MB = 600.0
#: Compared per (receiver, interval) between the database and the stored IQ.
COMPARED = ("snr_db", "frequency_offset_hz", "noise_power_dbfs")
#: Tolerance of those columns.
TOLERANCE = 1e-9
#: The database keeps times in microseconds: a row's time matches within this.
TIME_TOLERANCE_NS = 1_000
_MB = 1e6


class Settings(dict):
    """Sizes of one run: ``full()`` for the report, ``quick()`` for a smoke run.

    ``memory``: (receivers, seconds) per memory case; ``kill_window``: the span the kill
    times are drawn from, or None to measure it on an unkilled run (the quick run takes
    a fixed one, counted from the first stored interval, to be short and land mid-capture).
    """

    @classmethod
    def full(cls) -> Settings:
        return cls(
            memory=[[20, 600.0], [7, 600.0], [50, 120.0]],
            interval_s=10.0,
            kills=10,
            kill_receivers=3,
            kill_duration_s=120.0,
            kill_interval_s=5.0,
            kill_window=None,
            kill_after_first_interval=True,
            seed=2026,
        )

    @classmethod
    def quick(cls) -> Settings:
        return cls(
            memory=[[2, 10.0]],
            interval_s=2.0,
            kills=1,
            kill_receivers=2,
            kill_duration_s=20.0,
            kill_interval_s=2.0,
            kill_window=[0.2, 2.0],
            kill_after_first_interval=True,
            seed=2026,
        )


# ----------------------------------------------------------------------------- processes


def _cli() -> str:
    """The ``heimdall-lab`` of this interpreter's environment."""
    here = Path(sys.executable).parent / "heimdall-lab"
    return str(here) if here.exists() else "heimdall-lab"


def capture_command(
    receivers: int,
    duration_s: float,
    *,
    interval_s: float,
    database_url: str,
    iq: Path,
    fast: bool = True,
) -> list[str]:
    """The ``heimdall-lab capture`` command line of an emulated capture."""
    cmd = [
        _cli(), "capture", "-f", FREQUENCY, "-d", f"{duration_s:g}", "--emulate", str(receivers),
        "--interval", f"{interval_s:g}", "-q", "--database-url", database_url, "--iq-url", str(iq),
    ]  # fmt: skip
    return [*cmd, "--fast"] if fast else cmd


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEIMDALL_")}
    env["HEIMDALL_HOME"] = str(home)
    return env


def _tree_rss(proc: Any) -> tuple[float, int]:
    """RSS of a process and its children (MB), and how many children."""
    import psutil

    total, children = 0, 0
    try:
        total = proc.memory_info().rss
        for child in proc.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += child.memory_info().rss
                children += 1
    except psutil.Error:
        return math.nan, 0
    return total / _MB, children


def _hwm_mb(pid: int) -> float:
    """``VmHWM`` of a live process (its peak RSS so far), MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / _MB
    except (OSError, ValueError, IndexError):
        pass
    return math.nan


def _zarr_folder(iq: Path) -> Path | None:
    found = sorted((iq / "captures").glob("*.zarr")) if (iq / "captures").is_dir() else []
    return found[0] if found else None


def _chunks_stored(zarr: Path | None) -> dict[int, int]:
    """Per receiver row: ``frame_seq`` chunk objects present (each a whole interval)."""
    if zarr is None or not (zarr / "frame_seq" / "c").is_dir():
        return {}
    out = {}
    for row in (zarr / "frame_seq" / "c").iterdir():
        with contextlib.suppress(ValueError):
            out[int(row.name)] = sum(1 for p in row.iterdir() if p.name.isdigit())
    return out


def _folder_bytes(path: Path) -> tuple[int, int, int]:
    """Apparent bytes (``du -sb``), allocated bytes (``du -s``) and files under a folder."""
    apparent = blocks = files = 0
    for root, _, names in os.walk(path):
        for name in names:
            st = os.stat(os.path.join(root, name))
            apparent += st.st_size
            blocks += st.st_blocks * 512
            files += 1
    return apparent, blocks, files


def _capture_id(engine: sa.Engine, iq: Path, since: datetime) -> str | None:
    """The capture a process started: its zarr folder's name, else its row in the database."""
    folder = _zarr_folder(iq)
    if folder is not None:
        return folder.name[: -len(".zarr")]
    with engine.connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT id FROM captures WHERE created_at >= :t ORDER BY created_at DESC LIMIT 1"
            ),
            {"t": since},
        ).first()
    return None if row is None else str(row[0])


def _rows(engine: sa.Engine, capture_id: str) -> tuple[int, int]:
    """(rows, duplicates) of a capture's measurements."""
    with engine.connect() as conn:
        total, distinct = conn.execute(
            sa.text(
                "SELECT count(*), count(DISTINCT (websdr_id, timestamp_utc)) "
                "FROM measurements WHERE capture_id = :c"
            ),
            {"c": capture_id},
        ).one()
    return int(total), int(total - distinct)


# ----------------------------------------------------------------------------- memory


def memory_run(
    receivers: int,
    duration_s: float,
    database_url: str,
    workdir: Path,
    *,
    interval_s: float = 10.0,
    sample_s: float = SAMPLE_S,
) -> dict[str, Any]:
    """One emulated capture in a subprocess, its memory sampled every ``sample_s``.

    Returns
    -------
    dict
        ``receivers``, ``duration_s``, ``interval_s``, ``command``, ``exit_code``, ``wall_s``,
        ``capture_id``, ``status``, ``curve`` (``t_s``, ``rss_mb``, ``hwm_mb``,
        ``children``, ``intervals``: the samples), ``peak_rss_mb`` (the largest of the
        sampled RSS and the last ``VmHWM`` read), ``sampled_peak_mb``, ``stored_bytes``,
        ``stored_disk_bytes``, ``stored_files``, ``complex64_bytes`` (stored samples x 8),
        ``samples``, ``rows``, ``duplicates``.
    """
    import psutil

    case = workdir / f"memory-{receivers}x{duration_s:g}"
    home, iq = case / "home", case / "iq"
    home.mkdir(parents=True, exist_ok=True)
    cmd = capture_command(
        receivers, duration_s, interval_s=interval_s, database_url=database_url, iq=iq
    )
    curve: list[tuple[float, float, float, int, int]] = []
    log = case / "capture.log"
    t0 = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=_env(home))
        ps = psutil.Process(proc.pid)
        zarr = None
        while proc.poll() is None:
            rss, children = _tree_rss(ps)
            zarr = zarr or _zarr_folder(iq)
            done = sum(_chunks_stored(zarr).values())
            if math.isfinite(rss):
                curve.append((time.monotonic() - t0, rss, _hwm_mb(proc.pid), children, done))
            time.sleep(sample_s)
        wall = time.monotonic() - t0
    frame = pd.DataFrame(curve, columns=["t_s", "rss_mb", "hwm_mb", "children", "intervals"])
    engine = db.get_engine(database_url)
    try:
        capture_id = _capture_id(engine, iq, datetime.now(UTC) - pd.Timedelta(seconds=wall + 60))
        record = db.get_capture(engine, capture_id) if capture_id else None
        rows, dup = _rows(engine, capture_id) if capture_id else (0, 0)
    finally:
        engine.dispose()
    zarr = _zarr_folder(iq)
    apparent, disk, files = _folder_bytes(zarr) if zarr else (0, 0, 0)
    samples = 0
    if capture_id and zarr:
        ds = IQStore(str(iq)).open(capture_id)
        samples = int(np.asarray(ds["n_samples"].values, np.int64).sum())
    sampled = float(frame.rss_mb.max()) if len(frame) else math.nan
    hwm = float(frame.hwm_mb.dropna().iloc[-1]) if frame.hwm_mb.notna().any() else math.nan
    return {
        "receivers": receivers,
        "duration_s": duration_s,
        "interval_s": interval_s,
        "command": " ".join(c if "postgresql" not in c else "<url>" for c in cmd),
        "exit_code": proc.returncode,
        "wall_s": wall,
        "capture_id": capture_id,
        "status": record.status if record else None,
        "curve": frame.to_dict("list"),
        "peak_rss_mb": float(np.nanmax([sampled, hwm])),
        "sampled_peak_mb": sampled,
        "hwm_last_mb": hwm,
        "stored_bytes": apparent,
        "stored_disk_bytes": disk,
        "stored_files": files,
        "complex64_bytes": samples * 8,
        "samples": samples,
        "rows": rows,
        "duplicates": dup,
        "log_tail": log.read_text(errors="replace").splitlines()[-3:],
    }


def finishing_s(result: dict[str, Any]) -> float:
    """Seconds from the sample that first saw the last interval stored to the process's exit
    (completing the store, the summary, the printout)."""
    c = pd.DataFrame(result["curve"])
    if c.empty:
        return math.nan
    first_full = c.loc[c["intervals"] == c["intervals"].max(), "t_s"].min()
    return float(result["wall_s"] - first_full)


def fit_memory(result: dict[str, Any], warmup_fraction: float = 0.2) -> dict[str, float]:
    """Linear fit of RSS against the seconds of IQ stored per receiver, after warm-up.

    The x axis is the capture's own progress (stored intervals / receivers x interval), not
    wall time, so that a run paced as fast as possible projects to a real capture's length.
    Samples are used from ``warmup_fraction`` of the duration to the last interval stored
    (the finishing work after the last interval is in the peak, not in the slope).

    Returns
    -------
    dict
        ``slope_mb_per_min`` (per minute of IQ), ``intercept_mb``, ``fit_points``,
        ``flat_mb`` (median RSS over the fitted span), ``wall_slope_mb_per_min`` (the same
        fit against wall time, for reference).
    """
    c = pd.DataFrame(result["curve"])
    n, interval = result["receivers"], result["interval_s"]
    c["iq_s"] = c["intervals"] / n * interval
    last = c["intervals"].max()
    span = c[(c.iq_s >= warmup_fraction * result["duration_s"]) & (c["intervals"] < last)]
    if len(span) < 3:
        return {
            "slope_mb_per_min": math.nan,
            "intercept_mb": math.nan,
            "fit_points": len(span),
            "flat_mb": math.nan,
            "wall_slope_mb_per_min": math.nan,
        }
    slope, intercept = np.polyfit(span.iq_s, span.rss_mb, 1)
    wall_slope, _ = np.polyfit(span.t_s, span.rss_mb, 1)
    return {
        "slope_mb_per_min": float(slope * 60),
        "intercept_mb": float(intercept),
        "fit_points": len(span),
        "flat_mb": float(span.rss_mb.median()),
        "wall_slope_mb_per_min": float(wall_slope * 60),
    }


#: Bytes per stored frame of the per-frame variables (what completing a capture reads back).
FRAME_BYTES = sum(np.dtype(dtype).itemsize for dtype, _ in FRAME_VARS.values())


def frame_mb(receivers: int, seconds: float) -> float:
    """MB of per-frame variables of ``receivers`` x ``seconds`` (12 kS/s, 512 per frame)."""
    return receivers * math.ceil(seconds * NOMINAL_RATE / 512) * FRAME_BYTES / _MB


def per_interval_kb(result: dict[str, Any]) -> float:
    """The fitted RSS growth per receiver-interval stored, KB."""
    per_min = result["receivers"] * 60.0 / result["interval_s"]
    return fit_memory(result)["slope_mb_per_min"] / per_min * _MB / 1e3


#: Runs whose fit spans at least this many seconds of IQ give the growth per interval (a
#: shorter span is mostly warm-up).
LONG_FIT_S = 300.0


def _level_at_last_interval(result: dict[str, Any]) -> float:
    """RSS measured at the first sample that saw every interval stored, MB."""
    c = pd.DataFrame(result["curve"])
    return float(c.loc[c["intervals"] == c["intervals"].max(), "rss_mb"].iloc[0])


def projection(
    result: dict[str, Any], runs: Sequence[dict[str, Any]], seconds: float = 3600.0
) -> dict[str, Any]:
    """Peak RSS of ``result``'s receivers for ``seconds`` of IQ.

    Receiving: the RSS measured when ``result``'s last interval was stored, plus the growth
    per receiver-interval (:func:`per_interval_kb`, the median over the runs whose fit spans
    :data:`LONG_FIT_S` or more of IQ) for the intervals still to come. Finishing (the store
    completed from its stored frames): the peak above each long run's line, fitted linearly
    against :func:`frame_mb` of the run, taken at ``seconds``. Also ``result``'s own linear
    fit extended to ``seconds``, for reference (mostly warm-up when its span is short).
    """
    fit = fit_memory(result)
    long = [r for r in runs if 0.8 * r["duration_s"] >= LONG_FIT_S] or list(runs)

    def above(r: dict[str, Any]) -> float:
        f = fit_memory(r)
        return r["peak_rss_mb"] - (f["intercept_mb"] + f["slope_mb_per_min"] / 60 * r["duration_s"])

    xs = np.array([frame_mb(r["receivers"], r["duration_s"]) for r in long])
    ys = np.array([above(r) for r in long])
    target = frame_mb(result["receivers"], seconds)
    if len(long) >= 2 and np.ptp(xs) > 0:
        b, a = np.polyfit(xs, ys, 1)
    else:
        b, a = 0.0, float(np.mean(ys))
    extra = float(max(a + b * target, 0.0))
    kb = float(np.median([per_interval_kb(r) for r in long]))
    level = _level_at_last_interval(result)
    to_come = result["receivers"] * (seconds - result["duration_s"]) / result["interval_s"]
    line = level + kb * 1e3 * to_come / _MB
    own = fit["intercept_mb"] + fit["slope_mb_per_min"] / 60 * seconds
    return {
        **fit,
        "long_runs": [f"{r['receivers']} x {r['duration_s']:g} s" for r in long],
        "kb_per_interval": kb,
        "level_at_last_interval_mb": level,
        "projected_line_mb": float(line),
        "above_line_intercept_mb": float(a),
        "above_line_per_frame_mb": float(b),
        "frame_mb_at_target": target,
        "projected_finish_mb": extra,
        "projected_peak_mb": float(line + extra),
        "own_fit_line_mb": float(own),
        "own_fit_peak_mb": float(own + extra),
    }


# ----------------------------------------------------------------------------- kills


def receiving_window(database_url: str, workdir: Path, cfg: dict[str, Any]) -> dict[str, float]:
    """An unkilled run of the kill case: when its first interval and its end come."""
    case = workdir / "kill-calibration"
    home, iq = case / "home", case / "iq"
    home.mkdir(parents=True, exist_ok=True)
    cmd = capture_command(
        cfg["kill_receivers"],
        cfg["kill_duration_s"],
        interval_s=cfg["kill_interval_s"],
        database_url=database_url,
        iq=iq,
    )
    t0 = time.monotonic()
    first = math.nan
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(home)
    )
    while proc.poll() is None:
        if math.isnan(first) and sum(_chunks_stored(_zarr_folder(iq)).values()):
            first = time.monotonic() - t0
        time.sleep(0.05)
    return {"first_interval_s": first, "end_s": time.monotonic() - t0, "exit": proc.returncode}


def _silence(engine: sa.Engine, capture_id: str, seconds: float) -> None:
    """Move a capture's last heartbeat back, as if ``seconds`` had passed without one."""
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE captures SET heartbeat_at = heartbeat_at - make_interval(secs => :s) "
                "WHERE id = :c"
            ),
            {"s": seconds, "c": capture_id},
        )


def _sync(database_url: str, home: Path) -> tuple[int, float, str]:
    t = time.monotonic()
    out = subprocess.run(
        [_cli(), "sync", "--stale-after", "1", "--database-url", database_url],
        capture_output=True,
        text=True,
        env=_env(home),
        timeout=600,
    )
    tail = (out.stderr.strip().splitlines() or [""])[-1][:160]
    return out.returncode, time.monotonic() - t, tail


def _raw_frames(zarr: Path) -> tuple[list[str], np.ndarray]:
    """Receiver names and, per receiver, frames with a sequence number (the raw zarr array)."""
    import zarr as zarr_

    group = zarr_.open_group(str(zarr), mode="r")
    names = [str(n) for n in group["receiver"][:]]
    seq = np.asarray(group["frame_seq"][:])
    return names, (seq >= 0).sum(axis=1)


def _snapshot(engine: sa.Engine, capture_id: str, zarr: Path | None) -> dict[str, str]:
    """Hashes of a capture's rows, its capture row and every stored object."""
    rows = db.measurements_for_capture(engine, capture_id, include_psd=True)
    rows = rows.sort_values(["receiver", "timestamp_utc"]).reset_index(drop=True)
    text = "\n".join(
        repr(tuple(np.asarray(v).tolist() if isinstance(v, np.ndarray) else v for v in r))
        for r in rows.itertuples(index=False)
    )
    rec = db.get_capture(engine, capture_id)
    row = repr((rec.status, rec.progress_percent, rec.error_message, rec.iq_url, rec.updated_at))
    files = hashlib.sha256()
    if zarr is not None:
        for path in sorted(p for p in zarr.rglob("*") if p.is_file()):
            files.update(str(path.relative_to(zarr)).encode())
            files.update(hashlib.sha256(path.read_bytes()).digest())
    return {
        "rows": hashlib.sha256(text.encode()).hexdigest(),
        "capture": hashlib.sha256(row.encode()).hexdigest(),
        "store": files.hexdigest(),
    }


def _compare(db_rows: pd.DataFrame, recomputed: pd.DataFrame) -> dict[str, Any]:
    """Each database row against the row recomputed from the stored IQ, by (receiver,
    interval)."""

    def keyed(df: pd.DataFrame) -> pd.DataFrame:
        if df.empty:
            return pd.DataFrame(columns=["receiver", "interval", *COMPARED, "t_ns"])
        out = df[["receiver", *COMPARED]].copy()
        out["interval"] = [int(m["interval"]) for m in df["metadata"]]
        t = pd.to_datetime(df["timestamp_utc"], utc=True).dt.as_unit("ns")
        out["t_ns"] = t.astype("int64").to_numpy()
        return out.set_index(["receiver", "interval"]).sort_index()

    a, b = keyed(db_rows), keyed(recomputed)
    common = a.index.intersection(b.index)
    diff = {
        c: float(np.max(np.abs(a.loc[common, c].astype(float) - b.loc[common, c].astype(float))))
        if len(common)
        else 0.0
        for c in COMPARED
    }
    dt = (
        int(np.max(np.abs(a.loc[common, "t_ns"].to_numpy() - b.loc[common, "t_ns"].to_numpy())))
        if len(common)
        else 0
    )
    return {
        "only_in_db": len(a.index.difference(b.index)),
        "only_in_iq": len(b.index.difference(a.index)),
        "max_abs_diff": diff,
        "max_time_diff_ns": dt,
        "match": (
            len(a) == len(b) == len(common)
            and all(v <= TOLERANCE for v in diff.values())
            and dt <= TIME_TOLERANCE_NS
        ),
    }


#: Stages of a capture still receiving: every interval it stored then was a whole one.
RECEIVING = ("pending", "connecting", "receiving")


def extent_checks(k: dict[str, Any]) -> dict[str, bool]:
    """Whole intervals, and every interval written before the kill kept, from a kill's record.

    ``whole_intervals``: each receiver's stored frames are whole intervals, except that the
    last may be short once receiving had ended (a stream's last interval is what is left of
    the duration; the capture then stores it, as ``close()`` does). ``every_written_interval``:
    each receiver's intervals after sync are those whose ``frame_seq`` object was in the store
    when the process died.
    """
    fpc, frames = k.get("frames_per_interval") or 0, k.get("frames") or []
    ended = k.get("status_at_kill") not in RECEIVING
    whole = all(f % fpc == 0 for f in frames) if fpc else True
    return {
        "whole_intervals": bool(whole or ended),
        "partial_last_interval": not whole,
        "every_written_interval": (
            [math.ceil(f / fpc) for f in frames] if fpc else [0] * len(frames)
        )
        == list(k.get("chunks_at_kill") or []),
    }


def kill_run(
    index: int, kill_at_s: float, database_url: str, workdir: Path, cfg: dict[str, Any]
) -> dict[str, Any]:
    """One capture killed (SIGKILL) ``kill_at_s`` after it started, then completed by sync."""
    case = workdir / f"kill-{index:02d}"
    home, iq = case / "home", case / "iq"
    home.mkdir(parents=True, exist_ok=True)
    cmd = capture_command(
        cfg["kill_receivers"],
        cfg["kill_duration_s"],
        interval_s=cfg["kill_interval_s"],
        database_url=database_url,
        iq=iq,
    )
    engine = db.get_engine(database_url)
    try:
        since = datetime.now(UTC)
        t0 = time.monotonic()
        proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(home)
        )
        start = t0
        if cfg.get("kill_after_first_interval"):  # the time counts from the first interval
            while proc.poll() is None and not sum(_chunks_stored(_zarr_folder(iq)).values()):
                time.sleep(0.01)
            start = time.monotonic()
        while time.monotonic() - start < kill_at_s and proc.poll() is None:
            time.sleep(0.01)
        exited_first = proc.poll() is not None
        if not exited_first:
            os.kill(proc.pid, signal.SIGKILL)
        killed_at = time.monotonic() - t0
        proc.wait()
        zarr = _zarr_folder(iq)
        at_kill = _chunks_stored(zarr)
        marker_at_kill = zarr is not None and (zarr / "heimdall-complete.json").exists()
        leftovers = sorted(str(p.relative_to(zarr)) for p in zarr.rglob("*.tmp")) if zarr else []
        capture_id = _capture_id(engine, iq, since)
        out: dict[str, Any] = {
            "kill": index,
            "kill_at_s": kill_at_s,
            "killed_at_s": killed_at,
            "exited_before_kill": exited_first,
            "exit_code": proc.returncode,
            "capture_id": capture_id,
            "chunks_at_kill": [at_kill.get(i, 0) for i in range(cfg["kill_receivers"])],
            "complete_at_kill": marker_at_kill,
            "tmp_files_at_kill": leftovers,
        }
        if capture_id is None:  # killed before its row was written: nothing to complete
            return {**out, "error": "killed before the capture row was written"}
        before = db.get_capture(engine, capture_id)
        out["status_at_kill"] = before.status
        out["rows_at_kill"], out["duplicates_at_kill"] = _rows(engine, capture_id)
        _silence(engine, capture_id, db.STALE_AFTER_S + 5)
        out["sync_exit"], out["sync_s"], out["sync_tail"] = _sync(database_url, home)
        after = db.get_capture(engine, capture_id)
        out["status"] = after.status
        zarr = _zarr_folder(iq)
        n = cfg["kill_receivers"]
        if zarr is None:  # killed before its store was created: nothing stored, no rows due
            fpc, names, frames, extent = 0, [], [0] * n, [0] * n
            recomputed = pd.DataFrame()
        else:
            ds = IQStore(str(iq)).open(capture_id)
            fpc = int(ds.attrs["heimdall:frames_per_interval"])
            names, raw = _raw_frames(zarr)
            frames = [int(f) for f in raw]
            got = dict(
                zip([str(r) for r in ds["receiver"].values], ds["n_samples"].values, strict=True)
            )
            extent = [int(got.get(r, 0)) for r in names]
            recomputed = stored_interval_rows(ds, after.iq_url)
        out.update(frames_per_interval=fpc, receivers=names, frames=frames, n_samples=extent)
        # (a) the extent is the frames stored x 512, whole intervals, every interval written
        out["extent_is_frames"] = all(s == f * 512 for s, f in zip(extent, frames, strict=True))
        out.update(extent_checks(out))
        # (b) every row against the IQ it came from; (c) lost and duplicated rows
        rows = db.measurements_for_capture(engine, capture_id, include_psd=False)
        out["stored_intervals"] = sum(math.ceil(f / fpc) for f in frames) if fpc else 0
        out["recomputed_rows"] = len(recomputed)
        out["rows"], out["duplicates"] = _rows(engine, capture_id)
        out["lost"] = out["stored_intervals"] - out["rows"]
        out.update(_compare(rows, recomputed))
        # (d) a second sync changes nothing
        first = _snapshot(engine, capture_id, zarr)
        out["sync2_exit"], _, _ = _sync(database_url, home)
        second = _snapshot(engine, capture_id, zarr)
        out["second_sync_unchanged"] = first == second
        out["second_sync_changed"] = [k for k in first if first[k] != second[k]]
        return out
    finally:
        engine.dispose()


# ----------------------------------------------------------------------------- run, report


def code_state() -> dict[str, Any]:
    """The commit checked out and the package files with uncommitted changes (the code run)."""

    def git(*args: str) -> str:
        try:
            out = subprocess.run(["git", *args], capture_output=True, text=True, cwd=REPO)
        except OSError:
            return ""
        return out.stdout.rstrip("\n") if out.returncode == 0 else ""

    changed = git("status", "--porcelain", "--", "heimdall_lab").splitlines()
    head = git("rev-parse", "--short", "HEAD").strip() or "?"
    return {"head": head, "changed": [c[3:] for c in changed if c.strip()]}


def run(
    cfg: dict[str, Any],
    database_url: str | None = None,
    workdir: Path | None = None,
    parts: Sequence[str] = ("memory", "kills"),
    done: dict[str, Any] | None = None,
    save: Path | None = None,
) -> dict[str, Any]:
    """Run the parts asked; parts already in ``done`` are kept (saved to ``save`` as they end)."""
    results: dict[str, Any] = dict(done or {})
    results.setdefault("settings", dict(cfg))
    results.setdefault("machine", machine_info())
    own = workdir is None
    work = Path(tempfile.mkdtemp(prefix="heimdall-bench-stream-")) if own else Path(workdir)
    work.mkdir(parents=True, exist_ok=True)

    def keep() -> None:
        if save is not None:
            save.parent.mkdir(parents=True, exist_ok=True)
            save.write_text(json.dumps(results, default=str))

    try:
        with contextlib.ExitStack() as stack:
            url = stack.enter_context(scratch_database(database_url)) if parts else ""
            if "memory" in parts:
                kept = {(r["receivers"], r["duration_s"]): r for r in results.get("memory") or []}
                results["memory"] = []
                for n, seconds in cfg["memory"]:
                    if (n, seconds) in kept:  # measured already (--results): kept as it is
                        results["memory"].append(kept[(n, seconds)])
                        continue
                    print(f"memory: {n} receivers x {seconds:g} s", flush=True)
                    state = code_state()
                    r = memory_run(int(n), float(seconds), url, work, interval_s=cfg["interval_s"])
                    r["code"] = state
                    print(
                        f"  peak {r['peak_rss_mb']:.0f} MB in {r['wall_s']:.0f} s, exit "
                        f"{r['exit_code']}, stored {r['stored_bytes'] / 1e9:.3f} GB",
                        flush=True,
                    )
                    results["memory"].append(r)
                    keep()
            if "kills" in parts:
                results.setdefault("code", {})["kills"] = code_state()
                window = (
                    receiving_window(url, work, cfg)
                    if not cfg.get("kill_window")
                    else dict(zip(("first_interval_s", "end_s"), cfg["kill_window"], strict=True))
                )
                print(f"kill window: {window}", flush=True)
                rng = random.Random(cfg["seed"])
                lo = window["first_interval_s"]
                hi = window["end_s"] - (0.5 if not cfg.get("kill_window") else 0.0)
                if cfg.get("kill_after_first_interval") and not cfg.get("kill_window"):
                    # Counted from the first stored interval: a start-up slowed by a busy
                    # machine does not move the kills before it.
                    lo, hi = 0.0, hi - lo
                if not math.isfinite(lo) or hi <= lo:
                    lo, hi = 0.5, max(window["end_s"] - 0.5, 1.0)
                times = sorted(round(rng.uniform(lo, hi), 2) for _ in range(cfg["kills"]))
                results["window"] = {**window, "from_s": lo, "to_s": hi}
                results["kills"] = []
                for i, t in enumerate(times):
                    k = kill_run(i + 1, t, url, work, cfg)
                    print(
                        f"  kill {i + 1} at {t:.2f} s: frames {k.get('frames')}, rows "
                        f"{k.get('rows')}, lost {k.get('lost')}, dup {k.get('duplicates')}, "
                        f"match {k.get('match')}, 2nd sync unchanged "
                        f"{k.get('second_sync_unchanged')}",
                        flush=True,
                    )
                    results["kills"].append(k)
                    keep()
    finally:
        if own:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    keep()
    return results


def figure(memory: Sequence[dict[str, Any]], path: Path) -> None:
    """RSS against wall time and against the seconds of IQ stored per receiver."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    for r in memory:
        c = pd.DataFrame(r["curve"])
        label = f"{r['receivers']} receivers x {r['duration_s']:g} s"
        (line,) = left.plot(c.t_s, c.rss_mb, lw=1.2, label=label)
        right.plot(c.intervals / r["receivers"] * r["interval_s"], c.rss_mb, lw=1.2,
                   color=line.get_color(), label=label)  # fmt: skip
        fit = fit_memory(r)
        if math.isfinite(fit["slope_mb_per_min"]):
            x = np.array([0.0, r["duration_s"]])
            right.plot(x, fit["intercept_mb"] + fit["slope_mb_per_min"] / 60 * x, ":",
                       color=line.get_color(), lw=1)  # fmt: skip
    for ax in (left, right):
        ax.axhline(GOAL_MB, color="k", lw=0.8, ls="--", label=f"goal {GOAL_MB:.0f} MB (20 x 600 s)")
        ax.set_ylabel("RSS of the capture process (MB)")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    left.set_xlabel("wall time since start (s)")
    right.set_xlabel("IQ stored per receiver (s); dotted: linear fit after warm-up")
    left.legend(fontsize=8, loc="lower right")
    fig.suptitle("heimdall-lab capture --emulate N --fast: RSS sampled every 0.5 s")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _gb(b: float) -> str:
    return f"{b / 1e9:.3f}"


def report(results: dict[str, Any], path: Path, figure_rel: str | None) -> str:
    """Write the Markdown report; return its text."""
    cfg = results.get("settings", {})
    info = results.get("machine", {})
    quick = cfg == dict(Settings.quick())
    lines = [
        "# Streaming captures: memory against time, and kills completed by sync",
        "",
        f"Written by `python -m benchmarks streaming{' --quick' if quick else ''}` "
        f"(`benchmarks/streaming.py`), heimdall_lab {__version__}, finished "
        f"{results.get('finished', '?')} UTC, on {info.get('cpu', '?')}, "
        f"{info.get('cores', '?')}, RAM {info.get('ram', '?')}, {info.get('os', '?')}, Python "
        f"{info.get('python', '?')}; load average at the start {info.get('load_average', '?')}. "
        "Loopback only: the emulator runs inside each capture process (`--emulate N`), so its "
        "memory and CPU are in the figures. One embedded PostgreSQL on the same machine; IQ "
        "in local folders.",
        "",
    ]
    lines += [f"- {note}" for note in results.get("notes", [])]
    states = [
        (f"{r['receivers']} x {r['duration_s']:g} s", r.get("code"))
        for r in results.get("memory") or []
    ]
    if results.get("kills"):
        states.append(("kills", (results.get("code") or {}).get("kills")))
    for part, state in states:
        if not state:
            lines.append(f"- Code run by {part}: not recorded.")
            continue
        changed = ", ".join(state.get("changed") or []) or "none"
        lines.append(
            f"- Code run by {part}: commit {state.get('head', '?')}; package files with "
            f"uncommitted changes (others' work in progress) at its start: {changed}."
        )
    if states or results.get("notes"):
        lines.append("")
    if quick:
        lines += ["**A quick (smoke) run with small sizes: its figures are not for judging.**", ""]
    memory = results.get("memory") or []
    if memory:
        lines += [
            "## Memory against time",
            "",
            "Each case: `heimdall-lab capture -f 10e6 -d D --emulate N --fast -q "
            f"--interval {cfg.get('interval_s', 10):g}` as a subprocess with its own "
            "`HEIMDALL_HOME` and IQ folder, the database given by URL. Every "
            f"{SAMPLE_S:g} s: RSS of the process and its children (psutil; it has none), its "
            "`VmHWM` from `/proc/<pid>/status`, and the intervals stored (the `frame_seq` "
            "chunk objects of its zarr folder). Peak = the larger of the sampled RSS maximum "
            "and the last `VmHWM` read (which also catches peaks between samples; the last "
            f"< {SAMPLE_S:g} s before exit is not seen). Stored = apparent size of the zarr "
            "folder (`du -sb`), and blocks on disk (`du -s`); complex64 = stored samples x 8 "
            "bytes (what the IQ takes uncompressed in memory). `after the last interval`: "
            "seconds from the first sample that saw every interval stored to the exit "
            "(completing the store, the summary table, the printout).",
            "",
            "| receivers x seconds | wall s | after the last interval s | exit | status | "
            "peak RSS MB | sampled peak MB | "
            "median RSS after warm-up MB | slope MB per min of IQ | stored GB (du -sb) | "
            "on disk GB | complex64 GB | stored/complex64 | rows | duplicates |",
            "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in memory:
            fit = fit_memory(r)
            ratio = r["stored_bytes"] / r["complex64_bytes"] if r["complex64_bytes"] else math.nan
            lines.append(
                f"| {r['receivers']} x {r['duration_s']:g} | {r['wall_s']:.0f} | "
                f"{finishing_s(r):.0f} | {r['exit_code']} | {r['status']} | "
                f"**{r['peak_rss_mb']:.0f}** | "
                f"{r['sampled_peak_mb']:.0f} | {fit['flat_mb']:.0f} | "
                f"{fit['slope_mb_per_min']:+.2f} | {_gb(r['stored_bytes'])} | "
                f"{_gb(r['stored_disk_bytes'])} | {_gb(r['complex64_bytes'])} | {ratio:.2f} | "
                f"{r['rows']} | {r['duplicates']} |"
            )
        lines.append("")
        goal = next((r for r in memory if r["receivers"] == 20), None)
        if goal is not None:
            met = goal["peak_rss_mb"] < GOAL_MB
            lines += [
                f"Goal: peak RSS under {GOAL_MB:.0f} MB for 20 receivers x 600 s: measured "
                f"{goal['peak_rss_mb']:.0f} MB for 20 x {goal['duration_s']:g} s, "
                f"**{'met' if met else 'not met'}**"
                + ("" if goal["duration_s"] == 600 else " (a shorter run than the goal's)")
                + ".",
                "",
            ]
        big = max(memory, key=lambda r: (r["receivers"], r["duration_s"]))
        p = projection(big, memory)
        short = 0.8 * big["duration_s"] < LONG_FIT_S
        lines += [
            f"**Projection for {big['receivers']} receivers x 1 h**, from the "
            f"{big['receivers']} x {big['duration_s']:g} s run"
            + (
                f" ({big['duration_s']:g} s, not 600 s or 300 s: on this 2-core machine, "
                "shared with other work at the time, 50 receivers with their in-process "
                "emulator receive at about real time even with `--fast`, and the step after "
                "the last interval grows with receivers squared; see the table)"
                if big["duration_s"] < 600
                else ""
            )
            + f" and the growth per receiver-interval of the runs of {LONG_FIT_S * 1.25:g} s "
            f"or more ({', '.join(p['long_runs'])}). RSS is fitted linearly against the "
            "seconds of IQ stored per receiver (the capture's own progress, so that the "
            "`--fast` pace does not enter) from 20 % of the duration (warm-up) to the last "
            "interval stored; the slope over receivers x intervals per minute is the growth "
            "per receiver-interval: "
            + ", ".join(
                f"{r['receivers']} x {r['duration_s']:g} s: {per_interval_kb(r):.1f} KB"
                for r in memory
            )
            + f". Receiving: {p['level_at_last_interval_mb']:.0f} MB measured when the "
            f"{big['receivers']}-receiver run stored its last interval, plus "
            f"{p['kb_per_interval']:.1f} KB (median of the long runs) x "
            f"{big['receivers']} receivers x {(3600 - big['duration_s']) / big['interval_s']:g} "
            f"intervals still to come = {p['projected_line_mb']:.0f} MB. Finishing (completing "
            "the store from its stored frames, after the last interval): the long runs peaked "
            f"above their lines by {p['above_line_intercept_mb']:.0f} MB + "
            f"{p['above_line_per_frame_mb']:.2f} x the MB of per-frame variables stored "
            f"({FRAME_BYTES} bytes per 512-sample frame), {p['frame_mb_at_target']:.0f} MB for "
            f"{big['receivers']} receivers x 1 h: {p['projected_finish_mb']:.0f} MB more. "
            f"Projected peak: **{p['projected_peak_mb']:.0f} MB** (an extrapolation well "
            "beyond the runs: a 50 x 3600 s run would measure it). The "
            f"{big['receivers']}-receiver run's own fit (slope "
            f"{p['slope_mb_per_min']:+.2f} MB per minute of IQ, intercept "
            f"{p['intercept_mb']:.0f} MB) extended to 1 h would give "
            f"{p['own_fit_peak_mb']:.0f} MB"
            + (
                f", but its span ({0.2 * big['duration_s']:g}-{big['duration_s']:g} s of IQ) "
                "is mostly the warm-up that the long runs show in their first 100 s, so it is "
                "not used"
                if short
                else ""
            )
            + ". A flat line would mean memory bounded whatever the duration; a slope "
            "proportional to the receivers, as here, means something is kept per interval.",
            "",
            "Fits of every run (MB per minute of IQ): "
            + "; ".join(
                f"{r['receivers']} x {r['duration_s']:g} s: "
                f"{fit_memory(r)['slope_mb_per_min']:+.2f}"
                f" (intercept {fit_memory(r)['intercept_mb']:.0f} MB)"
                for r in memory
            )
            + ".",
            "",
        ]
        if figure_rel:
            lines += [f"![RSS against time]({figure_rel})", ""]
    kills = results.get("kills") or []
    if kills:
        w = results.get("window", {})
        lines += [
            "## SIGKILL at random points, completed by sync",
            "",
            f"Each kill: `heimdall-lab capture -f 10e6 -d {cfg.get('kill_duration_s', 0):g} "
            f"--emulate {cfg.get('kill_receivers')} --fast --interval "
            f"{cfg.get('kill_interval_s', 0):g} -q` in a subprocess with its own home and IQ "
            f"folder, SIGKILL at a time drawn uniformly (seed {cfg.get('seed')}) "
            + (
                f"between its first stored interval and its end: 0-{w.get('to_s', math.nan):.1f} "
                "s after its first `frame_seq` object appeared, the span an unkilled run "
                f"showed ({w.get('first_interval_s', math.nan):.1f} s to the first interval, "
                f"{w.get('end_s', math.nan):.1f} s to the exit, less 0.5 s); the time in the "
                "table counts from that first interval. "
                if not cfg.get("kill_window")
                else f"{w.get('from_s', math.nan):g}-{w.get('to_s', math.nan):g} s after its "
                "first stored interval (quick run). "
            )
            + "Then its `captures.heartbeat_at` is moved back by "
            f"{db.STALE_AFTER_S + 5:g} s in SQL (as `tests/test_reliability.py` does; the "
            f"silence `sync` waits for is {db.STALE_AFTER_S:g} s) and `heimdall-lab sync "
            "--stale-after 1` runs (same home and database; the command line refuses 0, and "
            f"any value up to {db.STALE_AFTER_S:g} s means that floor), then again.",
            "",
            "Checks: **extent** = `IQStore.open(id)['n_samples']` of each receiver equals "
            "512 x its frames with `frame_seq >= 0` in the raw zarr array, is a whole number "
            "of intervals (the last may be short once receiving had ended: what is left of the "
            "duration), and equals the intervals whose `frame_seq` object was in the store "
            "when the process died (none lost by sync); **match** = every database row equals "
            "the row recomputed from the stored IQ "
            "(`heimdall_lab.store.stream.stored_interval_rows`), per (receiver, interval), in "
            f"{', '.join(COMPARED)} to {TOLERANCE:g} and in time to "
            f"{TIME_TOLERANCE_NS / 1e3:g} us (the database keeps microseconds), with no row "
            "on one side only; **lost** = stored intervals - rows in the database; "
            "**duplicates** = count(*) - count(distinct (websdr_id, timestamp_utc)); "
            "**2nd sync** = a second sync leaves the rows, the capture row and every stored "
            "object (hashed) unchanged.",
            "",
            "| kill | at s after the first interval | s after start | stage at kill | "
            "intervals written at kill | "
            "frames stored per receiver | extent ok | "
            "rows at kill | rows | stored intervals | lost | duplicates | match (max abs diff) | "
            "2nd sync unchanged | status after sync | .tmp left |",
            "|---:|---:|---:|---|---|---|---|---:|---:|---:|---:|---:|---|---|---|---:|",
        ]
        for k in kills:
            if "error" in k:
                lines.append(f"| {k['kill']} | {k['kill_at_s']:.2f} | {k['killed_at_s']:.2f} | "
                             f"error: {k.get('error', '?')} |" + " |" * 12)  # fmt: skip
                continue
            k = {**k, **extent_checks(k)}
            ok = k["extent_is_frames"] and k["whole_intervals"] and k["every_written_interval"]
            diff = max(k["max_abs_diff"].values()) if k["max_abs_diff"] else 0.0
            match = (
                f"yes ({diff:.1e}, {k['max_time_diff_ns']} ns)"
                if k["match"]
                else f"**no** (diff {diff:.1e}, time {k['max_time_diff_ns']} ns, "
                f"db only {k['only_in_db']}, IQ only {k['only_in_iq']})"
            )
            lines.append(
                f"| {k['kill']} | {k['kill_at_s']:.2f} | {k['killed_at_s']:.2f}"
                f"{' (had exited)' if k['exited_before_kill'] else ''} | {k['status_at_kill']} | "
                f"{' '.join(map(str, k['chunks_at_kill']))} | "
                f"{' '.join(map(str, k['frames']))} | {'yes' if ok else '**no**'}"
                f"{' (short last interval)' if k['partial_last_interval'] else ''} | "
                f"{k['rows_at_kill']} | {k['rows']} | {k['stored_intervals']} | {k['lost']} | "
                f"{k['duplicates']} | {match} | "
                f"{'yes' if k['second_sync_unchanged'] else '**no**: ' + ', '.join(k['second_sync_changed'])} | "  # noqa: E501
                f"{k['status']} | {len(k['tmp_files_at_kill'])} |"
            )
        good = [k for k in kills if "error" not in k]
        lost = sum(k["lost"] for k in good)
        dup = sum(k["duplicates"] for k in good)
        matched = sum(bool(k["match"]) for k in good)
        unchanged = sum(bool(k["second_sync_unchanged"]) for k in good)
        extent = sum(
            bool(k["extent_is_frames"] and c["whole_intervals"] and c["every_written_interval"])
            for k, c in ((k, extent_checks(k)) for k in good)
        )
        mid = sum(not k["exited_before_kill"] and not k["complete_at_kill"] for k in kills)
        lines += [
            "",
            f"Summary: {len(kills)} kills, {mid} mid-capture (the process alive and its "
            f"capture not yet complete); extent right in {extent}, rows matching their IQ in "
            f"{matched}, second sync changing nothing in {unchanged}; rows lost {lost}, "
            f"duplicates {dup}.",
            "",
            "In the form of the reliability table (`reports/reliability.md`, which "
            "`tests/test_reliability.py` rewrites on every full test run, so it is not "
            "appended to from here):",
            "",
            "| fault | expected outcome | observed outcome | rows lost | duplicates |",
            "|---|---|---|---|---|",
            f"| streamed capture killed (SIGKILL) at {len(kills)} random points, then sync "
            "(`benchmarks/streaming.py`) | every interval stored before the kill kept, whole; "
            "a row per stored interval, equal to its IQ's; a second sync changes nothing | "
            f"extent right {extent}/{len(kills)}, rows match {matched}/{len(kills)}, second "
            f"sync unchanged {unchanged}/{len(kills)} | {lost} | {dup} |",
            "",
        ]
    text = "\n".join(lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Run the streaming benchmark and write its report."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks streaming", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--database-url", help="default: a throwaway embedded PostgreSQL")
    parser.add_argument(
        "--parts",
        default="memory,kills",
        help="comma-separated: memory, kills (default both), or none to rewrite the report; "
        "parts not run, and memory cases already measured, are taken from --results",
    )
    parser.add_argument(
        "--results", type=Path, help="JSON of the raw results: read first, written as parts end"
    )
    parser.add_argument("--report", type=Path, default=REPO / "reports" / "streaming.md")
    parser.add_argument(
        "--figure", type=Path, default=None, help="default: <report folder>/figures/..."
    )
    parser.add_argument("--workdir", type=Path, help="keep the captures here (default: removed)")
    parser.add_argument("--note", action="append", default=[], help="a line for the report")
    args = parser.parse_args(argv)
    cfg = Settings.quick() if args.quick else Settings.full()
    done = json.loads(args.results.read_text()) if args.results and args.results.exists() else None
    parts = [p.strip() for p in args.parts.split(",") if p.strip() not in ("", "none")]
    if done and done.get("settings") != dict(cfg):
        parser.error(f"{args.results} holds results of other settings")
    results = run(cfg, args.database_url, args.workdir, parts, done, args.results)
    if args.note:
        results["notes"] = [*results.get("notes", []), *args.note]
    fig_path = args.figure or args.report.parent / "figures" / "streaming_memory.png"
    rel = None
    if results.get("memory"):
        figure(results["memory"], fig_path)
        try:
            rel = str(fig_path.resolve().relative_to(args.report.parent.resolve()))
        except ValueError:
            rel = str(fig_path)
    print(report(results, args.report, rel))
    kills = [k for k in results.get("kills") or [] if "error" not in k]
    bad = [
        k
        for k in kills
        if k["lost"] or k["duplicates"] or not k["match"] or not k["second_sync_unchanged"]
    ]
    return 1 if bad or any("error" in k for k in results.get("kills") or []) else 0


if __name__ == "__main__":
    raise SystemExit(main())
