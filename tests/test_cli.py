"""The heimdall-lab command, run in-process and as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from heimdall_lab.cli import build_parser, main
from heimdall_lab.emulator import Emulator, Fault
from heimdall_lab.scenario import Scenario
from heimdall_lab.wavfile import read_kiwi_wav


def _spec(r) -> str:
    return f"{r.name}={r.host}:{r.port}@{r.latitude},{r.longitude}"


def test_demo_captures_from_seven_receivers(capsys):
    assert main(["demo", "--fast", "--duration", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "7/7 receivers complete" in out
    for name in ("F5LEN", "PH0M", "G0MJW", "HB9Q", "DK0GHZ", "OE3XEC", "HB9SL"):
        assert name in out


def test_bad_duration_is_a_usage_error(capsys):
    assert main(["demo", "--duration", "0", "--quiet"]) == 2
    assert "duration" in capsys.readouterr().err


def test_capture_writes_wav_files_and_reports_partial_failure(tmp_path, capsys):
    scenario = Scenario.default(seed=5)
    faults = {"HB9SL": Fault("bad_password")}
    with Emulator(scenario, realtime=False, faults=faults).running() as emu:
        args = ["capture", "-f", "10e6", "-d", "1", "-q", "--wav-dir", str(tmp_path)]
        for name in ("HB9Q", "HB9SL"):
            args += ["-r", _spec(emu.receiver(name))]
        code = main(args)
    out = capsys.readouterr().out
    assert code == 1
    assert "bad_password" in out
    files = sorted(tmp_path.glob("*_HB9Q_iq.wav"))
    assert len(files) == 1
    assert len(read_kiwi_wav(files[0]).samples) >= 12001
    assert not list(tmp_path.glob("*_HB9SL_iq.wav"))


def test_capture_with_nothing_reachable_exits_3(capsys):
    code = main(["capture", "-f", "10e6", "-d", "1", "-q", "-r", "X=127.0.0.1:9"])
    assert code == 3


@pytest.mark.parametrize(
    "argv",
    [
        ["capture", "-f", "10e6", "-r", "no-address"],
        ["emulate", "--fault", "HB9Q:explode"],
        ["frobnicate"],
    ],
)
def test_malformed_arguments_exit_2(argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2


@pytest.mark.parametrize("command", ["demo", "capture", "emulate", "health"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([command, "--help"])
    assert exc.value.code == 0
    assert "usage" in capsys.readouterr().out


def test_emulate_subprocess_serves_capture_and_health(tmp_path, capsys):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "heimdall_lab.cli",
            "emulate",
            "--fast",
            "--base-port",
            "0",
            "--seconds",
            "60",
            "--fault",
            "OE3XEC:too_busy",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        lines = [proc.stdout.readline().strip() for _ in range(7)]
        specs = dict(line.split("=", 1) for line in lines)
        assert set(specs) == {"F5LEN", "PH0M", "G0MJW", "HB9Q", "DK0GHZ", "OE3XEC", "HB9SL"}
        assert main(["health", "-r", f"HB9Q={specs['HB9Q']}"]) == 0
        code = main(
            [
                "capture",
                "-f",
                "7e6",
                "-d",
                "0.5",
                "-q",
                "-r",
                f"HB9Q={specs['HB9Q']}",
                "-r",
                f"OE3XEC={specs['OE3XEC']}",
            ]
        )
        assert code == 1
        out = capsys.readouterr().out
        assert "too_busy" in out and "1/2 receivers complete" in out
    finally:
        proc.terminate()
        t0 = time.monotonic()
        assert proc.wait(timeout=20) == 0, "emulate did not stop cleanly on SIGTERM"
        assert time.monotonic() - t0 < 20


def test_emulate_replays_wav_files(dcf77_files, capsys):
    code = main(
        [
            "emulate",
            "--fast",
            "--base-port",
            "0",
            "--seconds",
            "0.5",
            "--replay",
            str(dcf77_files[0]),
        ]
    )
    assert code == 0
    assert "127.0.0.1:" in capsys.readouterr().out
