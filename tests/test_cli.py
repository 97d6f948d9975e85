"""The heimdall-lab command, in-process and as a real subprocess, on real servers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from heimdall_lab import db
from heimdall_lab.cli import build_parser, main
from heimdall_lab.emulate.scenario import Scenario
from heimdall_lab.emulate.server import Emulator, Fault
from heimdall_lab.io.kiwi_wav import read_kiwi_wav

DEFAULTS = ("F4JOY", "Purmerend", "North-Shropshire-UK", "Hasenberg03", "DB3TH", "OE3AKB", "DK0TE")


def _spec(r) -> str:
    return f"{r.name}={r.host}:{r.port}@{r.latitude},{r.longitude}"


#: What a notebook kernel printed on the caller's stderr at every run.
KERNEL_NOISE = ("Kernel is running over TCP without encryption", "KeyboardInterrupt caught")


def test_demo_runs_the_capture_notebook_and_prints_metrics(env, embedded_engine, capfd):
    assert main(["demo", "--fast", "--duration", "1"]) == 0
    out, err = capfd.readouterr()  # the kernel's stderr too (it is another process)
    assert not [noise for noise in KERNEL_NOISE if noise in err], err
    for name in DEFAULTS:
        assert name in out
    report = Path(out.split("report: ")[1].split()[0])
    assert report.is_file() and report.parent.parent == Path("reports")
    capture_id = report.stem.split("-", 1)[1]
    assert db.get_capture(embedded_engine, capture_id).status == "done"
    executed = nbformat.read(report, as_version=4)
    assert executed.cells[2].metadata.get("tags") == ["injected-parameters"]


def test_capture_from_addresses_writes_wav_and_reports_partial_failure(env, capsys):
    faults = {"DK0TE": Fault("bad_password")}
    with Emulator(Scenario.default(seed=5), realtime=False, faults=faults).running() as emu:
        args = ["capture", "-f", "10e6", "-d", "1", "-q", "--wav-dir", str(env / "wav")]
        for name in ("Hasenberg03", "DK0TE"):
            args += ["-r", _spec(emu.receiver(name))]
        code = main(args)
    out = capsys.readouterr().out
    assert code == 1
    assert "bad_password" in out and "partial" in out
    files = sorted((env / "wav").glob("*_Hasenberg03_iq.wav"))
    assert len(files) == 1
    assert len(read_kiwi_wav(files[0]).samples) >= 12001
    assert not list((env / "wav").glob("*_DK0TE_iq.wav"))


def test_capture_emulated_by_name(env, embedded_engine, capsys):
    code = main(
        ["capture", "-f", "10e6", "-d", "1", "-q", "--seed", "2", "--fast", "-r", "Hasenberg03"]
    )
    out = capsys.readouterr().out
    assert code == 0
    capture_id = out.split("capture ")[1].split(":")[0]
    rows = db.measurements_for_capture(embedded_engine, capture_id, include_psd=False)
    assert list(rows.receiver) == ["Hasenberg03"]


def test_capture_emulated_with_a_fault(env, embedded_engine, capsys):
    args = ["capture", "-f", "10e6", "-d", "1", "-q", "--fast", "-r", "Hasenberg03", "-r", "DK0TE"]
    code = main([*args, "--fault", "DK0TE:bad_password"])
    out = capsys.readouterr().out
    assert code == 1
    assert "bad_password" in out and "partial" in out
    capture_id = out.split("capture ")[1].split(":")[0]
    parameters = db.get_capture(embedded_engine, capture_id).parameters
    assert parameters["emulate"] is True and parameters["faults"]["DK0TE"]["kind"] == "bad_password"


def test_capture_with_nothing_reachable_exits_3(env, capsys):
    code = main(["capture", "-f", "10e6", "-d", "1", "-q", "-r", "NOWHERE=127.0.0.1:9"])
    assert code == 3
    assert "no receiver delivered" in capsys.readouterr().out


def test_db_and_receivers_commands(env, capsys):
    assert main(["db", "migrate", "--no-seed"]) == 0
    assert "default receiver" not in capsys.readouterr().out
    assert main(["db", "migrate"]) == 0
    assert "default receiver(s)" in capsys.readouterr().out
    assert main(["receivers", "list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in DEFAULTS)  # migrate seeds the defaults
    assert main(["db", "status"]) == 0
    out = capsys.readouterr().out
    assert "websdrs:" in out and "measurements:" in out and "timescaledb: no" in out
    assert main(["receivers", "add", "TESTRX", "127.0.0.1:8075", "--lat", "50", "--lon", "9"]) == 0
    assert main(["receivers", "list"]) == 0
    assert "TESTRX" in capsys.readouterr().out
    assert main(["receivers", "deactivate", "TESTRX"]) == 0
    capsys.readouterr()
    assert main(["receivers", "list"]) == 0
    assert "TESTRX" not in capsys.readouterr().out
    assert main(["receivers", "list", "--all"]) == 0
    assert "TESTRX" in capsys.readouterr().out
    assert main(["receivers", "deactivate", "NOT_THERE"]) == 2


def test_run_executes_a_notebook_with_parameters(env, capfd):
    assert main(["run", "explore", "-p", "bucket", "10s", "-q", "--output-dir", "out"]) == 0
    out, err = capfd.readouterr()
    assert not [noise for noise in KERNEL_NOISE if noise in err], err
    path = Path(out.strip().splitlines()[-1])
    assert path.is_file() and path.parts[0] == "out" and path.name.startswith("explore-")
    executed = nbformat.read(path, as_version=4)
    injected = next(
        c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])
    )
    assert 'bucket = "10s"' in injected.source
    assert main(["run", "explore", "-p", "nonsense", "1", "-q"]) == 2
    assert main(["run", "no-such-notebook", "-q"]) == 2


def test_bad_duration_is_a_usage_error(env, capsys):
    assert main(["capture", "-f", "10e6", "-d", "0", "--seed", "1", "-q"]) == 2
    assert "duration" in capsys.readouterr().err


def test_a_bad_emulated_start_is_a_usage_error(env, capsys):
    argv = ["capture", "-f", "10e6", "-d", "1", "--seed", "1", "--start-utc", "garbage", "-q"]
    assert main(argv) == 2
    assert "start_utc 'garbage' is not a time" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["capture", "-f", "10e6", "-r", "X=no-port"],
        ["emulate", "--fault", "Hasenberg03:explode"],
        ["frobnicate"],
        ["db", "drop"],
    ],
)
def test_malformed_arguments_exit_2(argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2


@pytest.mark.parametrize(
    "command",
    [
        ["demo"],
        ["capture"],
        ["emulate"],
        ["health"],
        ["db"],
        ["receivers"],
        ["receivers", "add"],
        ["batch"],
        ["batch", "grid"],
        ["batch", "reprocess"],
        ["sync"],
        ["run"],
    ],
)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([*command, "--help"])
    assert exc.value.code == 0
    assert "usage" in capsys.readouterr().out


def test_emulate_subprocess_serves_capture_and_health(env, capsys):
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
            "OE3AKB:too_busy",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        lines = [proc.stdout.readline().strip() for _ in range(7)]
        specs = dict(line.split("=", 1) for line in lines)
        assert set(specs) == set(DEFAULTS)
        assert main(["health", "-r", f"Hasenberg03={specs['Hasenberg03']}"]) == 0
        code = main(
            [
                "capture",
                "-f",
                "7e6",
                "-d",
                "0.5",
                "-q",
                "-r",
                f"Hasenberg03={specs['Hasenberg03']}",
                "-r",
                f"OE3AKB={specs['OE3AKB']}",
            ]
        )
        assert code == 1
        out = capsys.readouterr().out
        assert "too_busy" in out and "partial" in out
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
    # kiwirecorder's name gives the receiver, gnss_pos/DF0KL.txt its position
    assert "DF0KL=127.0.0.1:" in (out := capsys.readouterr().out)
    assert "@53.665337,7.282766" in out


def test_sync_with_nothing_pending(env, capsys):
    assert main(["sync", "--stale-after", "86400"]) == 0
    assert "nothing pending" in capsys.readouterr().out


def test_batch_reprocess_and_grid(env, embedded_engine, capsys):
    assert (
        main(
            ["capture", "-f", "10e6", "-d", "1", "-q", "--seed", "5", "--fast", "-r", "Hasenberg03"]
        )
        == 0
    )
    capture_id = capsys.readouterr().out.split("capture ")[1].split(":")[0]
    assert (
        main(["batch", "reprocess", capture_id, "--workers", "1", "--mode", "replace", "--threads"])
        == 0
    )
    out = capsys.readouterr().out
    assert capture_id in out and "done" in out
    assert out.strip().splitlines()[-1].startswith("reprocessed 1 capture: 1 done in ")
    code = main(
        [
            "batch",
            "grid",
            "capture",
            "-p",
            "duration_s",
            "1.0",
            "-p",
            "seed",
            "[1, 2]",
            "-p",
            "realtime",
            "False",
            "-p",
            "receivers",
            "[['Hasenberg03']]",
            "--workers",
            "1",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    *table, summary = out.strip().splitlines()
    assert "\n".join(table).count("completed") == 2
    assert summary.startswith("ran 2 notebook runs: 2 completed in ")


def _in_a_terminal(argv: list[str], timeout: float = 300) -> str:
    """Run the command with a terminal (120 columns) as stdin, stdout and stderr; its text."""
    import fcntl
    import pty
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "heimdall_lab.cli", *argv],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        close_fds=True,
    )
    os.close(follower)
    chunks = []
    try:
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the command closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert proc.wait(timeout=timeout) == 0, b"".join(chunks).decode(errors="replace")
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.kill()
    return b"".join(chunks).decode(errors="replace")


def test_batch_reprocess_shows_a_bar_and_a_summary_and_no_dask_info(env, capsys):
    """Worker processes and all: a bar on a terminal, one summary line, no INFO from dask."""
    assert main(["capture", "-f", "10e6", "-d", "1", "-q", "--seed", "6", "--fast"]) == 0
    capture_id = capsys.readouterr().out.split("capture ")[1].split(":")[0]
    argv = ["batch", "reprocess", capture_id, "--workers", "1", "--mode", "replace"]
    text = _in_a_terminal(argv)
    assert "reprocess: 100%" in text and "1/1" in text, text
    assert re.search(r"^reprocessed 1 capture: 1 done in \d+\.\d s\r?$", text, re.M), text
    assert "INFO" not in text, text
    piped = subprocess.run(
        [sys.executable, "-m", "heimdall_lab.cli", *argv],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert piped.returncode == 0, piped.stderr
    assert "INFO" not in piped.stderr and "reprocess:" not in piped.stderr, piped.stderr
    assert piped.stdout.strip().splitlines()[-1].startswith("reprocessed 1 capture: 1 done")


@pytest.mark.parametrize(
    "argv",
    [
        ["receivers", "add", "X", "1.2.3.4", "--lat", "9", "--lon", "0"],
        ["receivers", "add", "X", "1.2.3.4:8073", "--lat", "99", "--lon", "0"],
        ["emulate", "--seconds", "-1"],
    ],
)
def test_more_bad_input_is_a_one_line_usage_error(env, capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("heimdall-lab: ") and "Traceback" not in err


def test_a_replay_of_another_day_needs_its_day(env, dcf77_files, capsys, caplog):
    """Replayed 2017 GNSS times are not today's: flagged without --start-utc, read with it."""
    from heimdall_lab.receivers import Receiver

    rec = read_kiwi_wav(dcf77_files[0])
    receiver = Receiver("DF0KL", "127.0.0.1", 8073, 53.665337, 7.282766)
    with Emulator(receivers=[receiver], replay={"DF0KL": rec}, realtime=False).running() as emu:
        r = emu.receivers[0]
        base = ["capture", "-f", "77500", "-d", "2", "-q", "-r", f"DF0KL={r.host}:{r.port}"]
        assert main(base) == 1  # its GNSS time is years from this computer's clock
        assert "timing" in capsys.readouterr().out
        assert "computer's clock" in caplog.text and "--start-utc" in caplog.text
        assert main([*base, "--start-utc", "2017-11-27T10:41:56Z"]) == 0
    assert ": done" in capsys.readouterr().out
