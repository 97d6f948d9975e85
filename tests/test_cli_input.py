"""Bad command-line input: exit 2 and one stderr line naming what is wrong; Ctrl-C: exit 130.

Most cases run ``main`` in-process and never reach a database or a notebook kernel: a
database URL nothing listens on stands in for the database, so a check that comes too late
shows as exit 3 (not 2), quickly, without starting an embedded server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
import support

from heimdall_lab import cli
from heimdall_lab.cli import main

RX = "X=127.0.0.1:9"
LONG_NAME = "A" * 100_000


@pytest.fixture
def no_database(monkeypatch, tmp_path):
    """No database (a loopback port nothing listens on) and a scratch working directory."""
    url = f"postgresql://heimdall@127.0.0.1:{support.free_port()}/heimdall"
    monkeypatch.setenv("HEIMDALL_DATABASE_URL", url)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def one_line(capsys) -> str:
    """stderr, which must be exactly one line and no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    return err.strip()


def argparse_error(argv: list[str], capsys) -> str:
    """Run ``main`` on input argparse refuses: exit 2 and the one line."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == cli.EXIT_USAGE
    return one_line(capsys)


# -- refused while the arguments are parsed: "argument --x: ..." ------------------------------


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["health", "-r", RX, "--timeout", "nan"], "--timeout"),
        (["health", "-r", RX, "--timeout", "inf"], "--timeout"),
        (["health", "-r", RX, "--timeout", "-1"], "--timeout"),
        (["health", "-r", RX, "--timeout", "0"], "--timeout"),
        (["health", "-r", RX, "--timeout", "soon"], "--timeout"),
        (["capture", "-f", "10e6", "--read-timeout", "nan"], "--read-timeout"),
        (["capture", "-f", "10e6", "--emulate", "0"], "--emulate"),
        (["capture", "-f", "10e6", "--emulate", "many"], "--emulate"),
        (["capture", "-f", "10e6", "--interval", "0.1"], "--interval"),
        (["emulate", "--base-port", "70000"], "--base-port"),
        (["emulate", "--base-port", "-1"], "--base-port"),
        (["emulate", "--base-port", "8o73"], "--base-port"),
        (["emulate", "--seed", "-1"], "--seed"),
        (["capture", "-f", "10e6", "--seed", "1.5"], "--seed"),
        (["demo", "--seed", "-2"], "--seed"),
        (["sync", "--stale-after", "nan"], "--stale-after"),
        (["sync", "--stale-after", "-60"], "--stale-after"),
        (["batch", "reprocess", "--workers", "0"], "--workers"),
        (["batch", "grid", "capture", "--workers", "-2"], "--workers"),
        (["batch", "grid", "capture", "--workers", "1.5"], "--workers"),
        (["db", "status", "--database-url", "postgresql://u@localhost:abc/db"], "--database-url"),
        (["receivers", "list", "--database-url", "postgresql://u@h:99999999/db"], "--database-url"),
        (["capture", "-f", "10e6", "-r", "X=127.0.0.1:abc"], "port"),
        (["capture", "-f", "10e6", "-r", "X=127.0.0.1:99999"], "port"),
        (["capture", "-f", "10e6", "-r", "X=:8073"], "host"),
        (["capture", "-f", "10e6", "-r", "X=127.0.0.1:8073@nan,0"], "latitude"),
        (["health", "-r", "X=127.0.0.1:8073@1,2,3"], "--receiver"),
        (["capture", "-f", "10e6", "--wav-dir", "/proc/x"], "--wav-dir"),
        (["run", "capture", "--output-dir", "/proc/x"], "--output-dir"),
        (["demo", "--output-dir", "/proc/x"], "--output-dir"),
        (["batch", "grid", "capture", "--output-dir", "/proc/x"], "--output-dir"),
    ],
)
def test_a_bad_option_is_refused_by_name(no_database, capsys, argv, named):
    line = argparse_error(argv, capsys)
    assert f"argument {named}" in line or named in line.split("error: ", 1)[1]
    assert line.startswith("heimdall-lab")


def test_a_folder_under_a_file_is_not_writable(no_database, capsys):
    (no_database / "file").write_text("")
    target = no_database / "file" / "wav"
    line = argparse_error(["capture", "-f", "10e6", "--wav-dir", str(target)], capsys)
    assert "argument --wav-dir" in line and "file/wav" in line


def test_checking_a_folder_leaves_nothing_behind(no_database, capsys):
    with pytest.raises(SystemExit):  # the folder is fine; the frequency is missing
        main(["capture", "--wav-dir", "new/deeper"])
    assert not (no_database / "new").exists()
    capsys.readouterr()


def test_a_database_url_in_a_message_keeps_its_password_hidden(no_database, capsys):
    line = argparse_error(
        ["db", "status", "--database-url", "postgresql://u:s3cret@h:x/db"], capsys
    )
    assert "s3cret" not in line and "u:***@h:x" in line


def test_a_huge_argument_is_not_echoed_whole(no_database, capsys):
    line = argparse_error([LONG_NAME], capsys)
    assert len(line) < 1000


# -- refused by the command before it does anything: "heimdall-lab: ..." ----------------------


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["receivers", "add", "X", "host:abc", "--lat", "1", "--lon", "1"], "port"),
        (["receivers", "add", "X", "host:99999", "--lat", "1", "--lon", "1"], "port"),
        (["receivers", "add", "X", "host:0", "--lat", "1", "--lon", "1"], "port"),
        (["receivers", "add", "X", ":80", "--lat", "1", "--lon", "1"], "host"),
        (["receivers", "add", "X", "", "--lat", "1", "--lon", "1"], "address"),
        (["receivers", "add", "X", "bad_host!:80", "--lat", "1", "--lon", "1"], "host"),
        (["receivers", "add", "X", "host:80", "--lat", "nan", "--lon", "1"], "latitude"),
        (["receivers", "add", "X", "host:80", "--lat", "1", "--lon", "inf"], "longitude"),
        (["receivers", "add", "X", "host:80", "--lat", "-91", "--lon", "1"], "latitude"),
        (["receivers", "add", "X", "host:80", "--lat", "1", "--lon", "180.5"], "longitude"),
        (["receivers", "add", "bad name", "host:80", "--lat", "1", "--lon", "1"], "name"),
        (["demo", "--duration", "nan"], "duration"),
        (["demo", "--duration", "200000"], "duration"),
        (["capture", "-f", "10e6", "--emulate", "3", "-r", "DK0TE"], "not both"),
        (["capture", "-f", "nan", "--seed", "1"], "frequency"),
        (["capture", "-f", "10e6", "-d", "-1", "--seed", "1"], "duration"),
        (["capture", "-f", "10e6", "--seed", "1", "--start-utc", "garbage"], "start_utc"),
        (["emulate", "--base-port", "65530"], "--base-port"),
        (["emulate", "--seconds", "nan"], "--seconds"),
        (["run", "capture", "-p", "duration_s", "abc", "-q"], "duration_s"),
        (["run", "capture", "-p", "seed", "1.5", "-q"], "seed"),
        (["run", "capture", "-p", "realtime", "1", "-q"], "realtime"),
        (["run", "capture", "-p", "receivers", "['Hasenberg03'", "-q"], "receivers"),
        (["run", "capture", "-p", "nonsense", "1", "-q"], "nonsense"),
        (["batch", "grid", "capture", "-p", "seed", "[1, 2"], "seed"),
        (["batch", "grid", "capture", "-p", "duration_s", "[1.0, 'long']"], "duration_s"),
        (["batch", "grid", "capture", "-p", "nonsense", "[1, 2]"], "nonsense"),
    ],
)
def test_a_bad_value_is_refused_before_anything_starts(no_database, capsys, argv, named):
    assert main(argv) == cli.EXIT_USAGE
    line = one_line(capsys)
    assert line.startswith("heimdall-lab: ") and named in line


def test_a_huge_receiver_name_is_cut_short(no_database, capsys):
    argv = ["receivers", "add", LONG_NAME, "host:8073", "--lat", "1", "--lon", "1"]
    assert main(argv) == cli.EXIT_USAGE
    line = one_line(capsys)
    assert "name" in line and "AAAA..." in line and "100000" in line
    assert len(line) < 300
    assert main(["receivers", "deactivate", LONG_NAME]) == cli.EXIT_USAGE
    assert len(one_line(capsys)) < 300


def test_a_database_never_migrated_is_named_with_what_to_do(embedded, capsys):
    url = sa.engine.make_url(embedded.url)
    fresh = f"never_migrated_{os.getpid()}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {fresh}"))
            conn.execute(sa.text(f"CREATE DATABASE {fresh}"))
        target = url.set(database=fresh).render_as_string(hide_password=False)
        assert main(["db", "status", "--database-url", target]) == cli.EXIT_FAILED
        line = one_line(capsys)
        assert "db migrate" in line and "Traceback" not in line
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {fresh} WITH (FORCE)"))
        admin.dispose()


# -- interrupted, or a crash ------------------------------------------------------------------


def test_ctrl_c_is_exit_130_and_one_line(no_database, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("heimdall_lab.kiwi.survey.check_health", interrupted)
    assert main(["health", "-r", RX]) == cli.EXIT_INTERRUPTED == 130
    assert one_line(capsys) == "heimdall-lab: interrupted"


def test_a_capture_cut_short_by_ctrl_c_says_what_it_kept(no_database, monkeypatch, capsys):
    def interrupted_capture(frequency_hz, duration_s, **kwargs):
        # as pipeline.capture does on Ctrl-C, once what arrived is stored
        raise KeyboardInterrupt("capture cut-short cancelled; what was received is kept")

    monkeypatch.setattr(cli, "capture", interrupted_capture)
    assert main(["capture", "-f", "10e6", "-d", "5", "-q", "-r", RX]) == cli.EXIT_INTERRUPTED
    assert one_line(capsys) == (
        "heimdall-lab: interrupted: capture cut-short cancelled; what was received is kept"
    )


def test_a_crash_is_one_line_and_exit_3_with_the_traceback_under_v(
    no_database, monkeypatch, capsys
):
    async def broken(*args, **kwargs):
        raise RuntimeError("something nobody planned for")

    monkeypatch.setattr("heimdall_lab.kiwi.survey.check_health", broken)
    assert main(["health", "-r", RX]) == cli.EXIT_FAILED
    line = one_line(capsys)
    assert "RuntimeError" in line and "something nobody planned for" in line and "-v" in line
    assert main(["-v", "health", "-r", RX]) == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("heimdall-lab: ")


def test_ctrl_c_on_the_console_script_exits_130_with_one_line(tmp_path):
    script = Path(sys.executable).with_name("heimdall-lab")
    proc = subprocess.Popen(
        [str(script), "emulate", "--fast", "--base-port", "0", "--seconds", "30"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "HEIMDALL_HOME": str(tmp_path)},
        # Python turns SIGINT into KeyboardInterrupt only where it is not ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert "=127.0.0.1:" in proc.stdout.readline()  # serving
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read()
    assert code == 130, err
    assert err.splitlines() == ["heimdall-lab: interrupted"]


@pytest.mark.parametrize("delay_s", [0.3, 1.2])
def test_ctrl_c_while_the_command_is_still_loading_is_one_line(delay_s, tmp_path):
    """Ctrl-C before the libraries have loaded: exit 130 and one line, no traceback."""
    import time

    env = {**os.environ, "HEIMDALL_HOME": str(tmp_path)}
    script = Path(sys.executable).with_name("heimdall-lab")
    proc = subprocess.Popen(
        [str(script), "capture", "--seed", "0", "-f", "10e6", "-d", "5", "-q"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A test worker may have SIGINT ignored, which a child inherits: Python then never
        # turns it into KeyboardInterrupt (the capture ran to its end, exit 0).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    time.sleep(delay_s)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[0].startswith("heimdall-lab: interrupted")
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_the_entry_point_and_the_command_line_agree_on_the_interrupt_code():
    import heimdall_lab.__main__ as entry

    assert entry.EXIT_INTERRUPTED == cli.EXIT_INTERRUPTED == 130
