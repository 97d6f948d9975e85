"""Recording sessions: hopping sweeps, stop and resume, triggered recording, the plan, the CLI."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from heimdall_lab import db, session
from heimdall_lab.emulate import Scenario, emulated
from heimdall_lab.errors import ValidationError
from heimdall_lab.pipeline import sweep
from heimdall_lab.recording import FRAME_SAMPLES
from heimdall_lab.store import IQStore

FREQ = 10e6
ONE_FRAME_S = FRAME_SAMPLES / 12001.0


# -- the plan ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        ({"frequencies": [], "dwell_s": 1, "emulate": 2}, "at least one frequency"),
        ({"frequencies": [FREQ], "dwell_s": 0, "emulate": 2}, "duration"),
        ({"frequencies": [FREQ], "dwell_s": 5, "emulate": 2, "sweeps": 0}, "sweeps"),
        (
            {"frequencies": [FREQ, FREQ + 1e3], "dwell_s": 5, "emulate": 2, "repeat_every_s": 6},
            "shorter than one sweep",
        ),
        ({"frequencies": [FREQ], "dwell_s": 5}, "needs receivers"),
        ({"frequencies": [FREQ], "dwell_s": 5, "emulate": 2, "mode": "sometimes"}, "mode"),
        ({"frequencies": [FREQ], "dwell_s": 5, "emulate": 2, "colour": "red"}, "unknown"),
        ({"frequencies": [FREQ], "dwell_s": 5, "selection": {"count": 3}}, "near"),
        ({"frequencies": "10e6", "dwell_s": 5, "emulate": 2}, "list"),
    ],
)
def test_a_bad_plan_is_refused_in_one_line(plan, message):
    with pytest.raises(ValidationError, match=message) as exc:
        session.SessionPlan.from_mapping(plan)
    assert "\n" not in str(exc.value)


def test_a_plan_reads_from_yaml_and_round_trips(tmp_path):
    path = tmp_path / "plan.yaml"
    path.write_text(
        "name: two channels\nfrequencies: [77500, 162000]\ndwell_s: 30\nsweeps: 4\n"
        "repeat_every_s: 300\nreceivers: [DK0TE, OE3AKB]\nmode: triggered\n"
        "trigger: {pfa: 1.0e-5, pre_s: 2}\n"
    )
    plan = session.SessionPlan.from_yaml(path)
    assert plan.frequencies == (77500.0, 162000.0) and plan.total_steps() == 8
    assert plan.trigger.pfa == 1e-5 and plan.trigger.pre_s == 2 and plan.sweep_s == 60
    assert session.SessionPlan.from_mapping(plan.to_dict()) == plan
    (tmp_path / "bad.yaml").write_text("frequencies: [1\n")
    with pytest.raises(ValidationError, match="not YAML"):
        session.SessionPlan.from_yaml(tmp_path / "bad.yaml")


# -- hopping on one connection ----------------------------------------------------------------


def test_a_hopping_sweep_measures_each_dwell_as_the_scene_is(embedded_engine, tmp_path):
    """Three frequencies on one connection per receiver: each dwell is its own capture."""
    names = ["DK0TE", "OE3AKB", "Purmerend"]
    hops = [(FREQ, 2.0), (FREQ + 1500, 2.0), (FREQ - 2000, 2.0)]
    with emulated(seed=5, receivers=names) as emu:  # paced like real receivers
        # One receiver sends three more frames at the old frequency after each retune.
        emu.emulator.units["DK0TE"].retune_latency_frames = 3
        caps = sweep(
            hops,
            engine=embedded_engine,
            store=str(tmp_path / "iq"),
            interval_s=1.0,
            **emu.capture_options,
        )
        scene = Scenario.from_dict(emu.parameters["scenario"])
        connections = {n: emu.emulator.units[n].connections for n in names}
    assert [c.frequency_hz for c in caps] == [f for f, _ in hops]
    assert all(c.stage == "done" for c in caps), [c.errors for c in caps]
    assert connections == dict.fromkeys(names, 1)  # one connection each, retuned on it
    for cap in caps:
        for name, m in cap.metrics.iterrows():
            truth = scene.truth(name, cap.frequency_hz)
            assert abs(m["frequency_offset_hz"] - truth["frequency_offset_hz"]) < 0.05
            # the default scene's keyed carrier: the mean power (a window's keying is within
            # about 0.3 dB of the long-run mean)
            assert abs(m["signal_power_dbfs"] - truth["mean_power_dbfs"]) < 0.5
        rows = db.measurements_for_capture(embedded_engine, cap.capture_id, include_psd=False)
        assert set(rows["frequency_hz"]) == {cap.frequency_hz}
        # Two 1-s intervals per receiver and dwell; a third, short, only when the frames
        # kept after a retune overflow the second (see below).
        per_receiver = rows.groupby("receiver").size()
        assert set(per_receiver.index) == set(names) and per_receiver.between(2, 3).all()
    # The retune gaps, measured from the GNSS times either side, are the frames dropped as
    # sent before the retune took effect: no sample time is lost beyond them. The frames
    # still at the old frequency are the dwell before's (none dropped, no gap).
    for cap in caps[1:]:
        gaps = cap.parameters["retune"]
        assert set(gaps) == set(names)
        for g in gaps.values():
            assert abs(g["gap_s"] - g["dropped_frames"] * ONE_FRAME_S) < 1e-3, gaps
        late = gaps["DK0TE"]  # its three, and any a loaded machine left in flight
        assert late["frames_before"] >= 3 and late["dropped_frames"] == 0, gaps
        assert abs(late["gap_s"]) < 1e-3, gaps
        stored = db.get_capture(embedded_engine, cap.capture_id).parameters["retune"]
        assert stored.keys() == gaps.keys()
    # A dwell ended by a retune holds the frames of the last one (which no retune ended)
    # plus those it kept after its retune: all stored.
    stored = [IQStore(str(tmp_path / "iq")).open(c.capture_id) for c in caps]
    frames = [ds["n_samples"].to_series() // FRAME_SAMPLES for ds in stored]
    for f, after in zip(frames[:2], caps[1:], strict=True):
        kept = {n: g["frames_before"] for n, g in after.parameters["retune"].items()}
        assert f.to_dict() == {n: frames[2][n] + kept[n] for n in names}, (f.to_dict(), kept)
    # Each dwell starts (GNSS) where the one before it ended.
    starts = [ds["start_time"].values for ds in stored]
    for a, b in itertools.pairwise(starts):
        assert ((b - a) / np.timedelta64(1, "s") > 1.9).all()


# -- stop and resume --------------------------------------------------------------------------


def _cli(*args: str, env: dict[str, str]) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("heimdall-lab")
    return subprocess.Popen(
        [str(exe), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_steps(engine, session_id: str, n: int, timeout_s: float = 90.0) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        caps = db.session_captures(engine, session_id)
        if len(caps) >= n and (caps["status"].head(n) != "pending").all():
            return
        time.sleep(0.3)
    raise AssertionError(f"session {session_id} did not reach {n} steps")


def test_a_session_stopped_and_resumed_twice_records_each_step_once(
    embedded, embedded_engine, tmp_path
):
    env = {
        **os.environ,
        "HEIMDALL_HOME": str(tmp_path / "home"),
        "HEIMDALL_DATABASE_URL": embedded.url,
        "HEIMDALL_IQ_URL": str(tmp_path / "iq"),
    }
    sid = "resume-" + os.urandom(4).hex()
    start = _cli(
        "session",
        "start",
        "--id",
        sid,
        "--emulate",
        "2",
        "-f",
        "10e6",
        "-f",
        "10.001e6",
        "--dwell",
        "1.5",
        "--sweeps",
        "4",
        "--interval",
        "1",
        "-q",
        env=env,
    )
    _wait_steps(embedded_engine, sid, 2)  # the first sweep is under way or done
    stop = _cli("session", "stop", sid, env=env)
    assert stop.wait(30) == 0
    out, err = start.communicate(timeout=60)
    assert start.returncode == 0, err
    assert f"session {sid}: stopped" in out
    assert db.get_session(embedded_engine, sid)["status"] == "stopped"
    for _ in range(2):
        resumed = _cli("session", "resume", sid, "-q", env=env)
        if _ == 0:
            _wait_steps(embedded_engine, sid, 4)
            assert _cli("session", "stop", sid, env=env).wait(30) == 0
        out, err = resumed.communicate(timeout=90)
        assert resumed.returncode == 0, err
    row = db.get_session(embedded_engine, sid)
    caps = db.session_captures(embedded_engine, sid)
    if row["status"] != "done":  # the second stop came after the last sweep began
        assert row["status"] == "stopped"
        final = _cli("session", "resume", sid, "-q", env=env)
        assert final.wait(90) == 0
        caps = db.session_captures(embedded_engine, sid)
    assert db.get_session(embedded_engine, sid)["status"] == "done"
    steps = caps["step"].dropna().astype(int).tolist()
    assert sorted(steps) == list(range(8))  # every step once: no duplicates, none missing
    assert caps["capture_id"].is_unique
    cut = caps[caps["status"].isin(["cancelled", "incomplete", "failed"])]
    assert len(cut) <= 4  # at most the two sweeps under way when stopped


def test_resume_refuses_a_session_that_is_running(embedded_engine):
    sid = "busy-" + os.urandom(4).hex()
    plan = {"frequencies": [FREQ], "dwell_s": 1, "emulate": 1}
    session.start(plan, session_id=sid, engine=embedded_engine, run=False, progress=False)
    db.update_session(embedded_engine, sid, status="running", pid=1, host="elsewhere")
    db.beat_session(embedded_engine, sid)
    with pytest.raises(ValidationError, match="is running"):
        session.resume(sid, engine=embedded_engine, progress=False)


# -- triggered recording ----------------------------------------------------------------------


def test_triggered_recording_keeps_each_burst_with_its_start_within_a_frame(
    embedded_engine, tmp_path
):
    start = "2026-12-01T12:00:00"
    scene = Scenario.default(seed=0).with_bursts(
        [(2.0, 1.0, 20.0), (5.0, 0.6, 12.0)],
        site_name="DK0TE",
        frequency_hz=FREQ,
        bandwidth_hz=400,
        epoch_utc=start,
    )
    with emulated(scenario=scene, receivers=["DK0TE"], start_utc=start) as emu:
        (cap,) = sweep(
            [(FREQ, 7.0)],
            engine=embedded_engine,
            store=str(tmp_path / "iq"),
            interval_s=1.0,
            trigger={"pfa": 1e-6, "pre_s": 0.5, "post_s": 0.5},
            **emu.capture_options,
        )
    assert cap.stage == "done" and cap.iq_url is None  # the dwell is measured, not stored
    rows = db.measurements_for_capture(embedded_engine, cap.capture_id, include_psd=False)
    assert len(rows) == 7  # every interval measured
    truth = scene.burst_truth("DK0TE", FREQ, bandwidth_hz=400)
    assert len(cap.events) == len(truth) == 2
    store = IQStore(str(tmp_path / "iq"))
    for event, burst in zip(cap.events, truth, strict=True):
        arrival = np.datetime64(int(burst["arrival_start_ns"]), "ns")
        start_utc = np.datetime64(event["start_utc"].tz_convert(None).to_datetime64(), "ns")
        assert abs((start_utc - arrival) / np.timedelta64(1, "s")) < ONE_FRAME_S
        kept = store.open(event["capture_id"])  # its own capture: the burst's IQ
        seconds = int(kept["n_samples"].values[0]) / 12001.0
        assert seconds >= (burst["arrival_end_ns"] - burst["arrival_start_ns"]) / 1e9
        assert event["statistic"] > event["threshold"]


# -- the command line -------------------------------------------------------------------------


def test_session_commands_refuse_bad_input_in_one_line(tmp_path, capsys, monkeypatch):
    from heimdall_lab.cli import EXIT_USAGE, main

    monkeypatch.setenv("HEIMDALL_DATABASE_URL", "postgresql://u:p@127.0.0.1:1/none")
    (tmp_path / "plan.yaml").write_text("frequencies: [10e6]\ndwell_s: 5\n")
    assert main(["session", "start", str(tmp_path / "plan.yaml")]) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert err.startswith("heimdall-lab: ") and "needs receivers" in err and "\n" not in err
    with pytest.raises(SystemExit) as exc:
        main(["session", "start", str(tmp_path / "missing.yaml")])
    assert exc.value.code == EXIT_USAGE
    assert "no plan file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["session", "start", "--emulate", "2", "-f", "10e6", "--dwell", "1", "--pfa", "2"])
    assert "--pfa" in capsys.readouterr().err
