"""The ``heimdall-lab`` command: one verb per thing a user does.

Exit codes: 0 success; 1 the job ran but some receivers failed; 2 bad input (usage or
validation); 3 nothing could be done (no receiver delivered, a stage or a notebook failed, or
an unexpected error); 130 interrupted (Ctrl-C). Every error is one line on stderr; ``-v``
adds the traceback of an unexpected one.

Input is checked before anything starts: what one option's text says alone (a number, a
port, a folder, a URL) by its argparse ``type=``, which names the option; the rest (a
receiver, a capture request, notebook parameters) first thing in the command.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import numpy as np
import pandas as pd
import sqlalchemy as sa

from heimdall_lab import db, directory, home, session, spool, tutorial
from heimdall_lab.emulate.fleet import MAX_EMULATED, emulated_receivers
from heimdall_lab.emulate.scenario import MODULATIONS, Scenario
from heimdall_lab.emulate.server import FAULT_KINDS, Emulated, Emulator, Fault, emulated
from heimdall_lab.errors import DatabaseError, HeimdallError, ValidationError
from heimdall_lab.ids import check_capture_id, check_receiver_name, new_capture_id
from heimdall_lab.io.kiwi_wav import (
    parse_kiwi_wav_name,
    read_gnss_pos,
    read_kiwi_wav,
    write_kiwi_wavs,
)
from heimdall_lab.kiwi.client import StreamSettings
from heimdall_lab.notebooks import (
    NotebookError,
    copy_notebooks,
    notebook_parameters,
    notebook_path,
    parse_value,
    run_notebook,
)
from heimdall_lab.pipeline import DEFAULT_INTERVAL_S, INTERVAL_RANGE_S, Capture, capture
from heimdall_lab.receivers import (
    DEFAULT_RECEIVERS,
    Receiver,
    check_port,
    parse_address,
    validate_capture_request,
)
from heimdall_lab.recording import Recording
from heimdall_lab.store.stream import stored_recording
from heimdall_lab.urls import mask_url
from heimdall_lab.values import clip, positive, to_utc_ns
from heimdall_lab.versions import __version__

log = logging.getLogger("heimdall_lab")

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, EXIT_FAILED = 0, 1, 2, 3
#: Ctrl-C: 128 + SIGINT, as a shell reports a command the signal ended.
EXIT_INTERRUPTED = 130
#: The longest error line printed (a pasted file in an argument stays out of the terminal).
MAX_MESSAGE_CHARS = 500
#: The demo's tuned frequency (the default scenario's transmitter) and capture length.
DEMO_FREQUENCY_HZ = 10_000_000.0
DEMO_DURATION_S = 10.0
_SUMMARY_COLUMNS = [
    "status",
    "samples",
    "sample_rate_hz",
    "lost_frames",
    "rssi_dbm",
    "snr_db",
    "cn0_dbhz",
    "frequency_offset_hz",
    "attempts",
    "reason",
]


T = TypeVar("T")


def _one_line(message: str) -> str:
    """A message on one line, cut at :data:`MAX_MESSAGE_CHARS`."""
    return clip(" ".join(message.split()), MAX_MESSAGE_CHARS)


def _complain(message: str) -> None:
    """Print one error line to stderr."""
    print(f"heimdall-lab: {_one_line(message)}", file=sys.stderr)


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error on one line: what is wrong, and where the help is.

    A negative position or area (``--near -33.9,18.4``) is a value, not an option.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(
            r"^-\d+$|^-\d*\.\d+$|^-\d*\.?\d+(,-?\d*\.?\d+)+$"
        )

    def error(self, message: str) -> NoReturn:
        """Print ``PROG: error: MESSAGE; see PROG --help`` and exit 2 (argparse's hook)."""
        self.exit(EXIT_USAGE, f"{self.prog}: error: {_one_line(message)}; see {self.prog} --help\n")


# -- argparse type= converters: the option's text alone decides -------------------------------


def _option_type(expected: str) -> Callable[[Callable[[str], T]], Callable[[str], T]]:
    """Make a parser an argparse ``type=`` that names what is wrong.

    The parser's ValidationError message is kept; any other ValueError (text that is not
    even a number) becomes ``'TEXT' is not EXPECTED``. argparse adds ``argument --x:``.

    Parameters
    ----------
    expected : str
        What the option takes, e.g. ``"a number"``.

    Returns
    -------
    callable
        A decorator.
    """

    def decorate(parse: Callable[[str], T]) -> Callable[[str], T]:
        @functools.wraps(parse)
        def convert(text: str) -> T:
            try:
                return parse(text)
            except ValidationError as exc:
                raise argparse.ArgumentTypeError(str(exc)) from None
            except (ValueError, OverflowError):
                raise argparse.ArgumentTypeError(f"{clip(text)!r} is not {expected}") from None

        return convert

    return decorate


@_option_type("a number")
def _positive_number(text: str) -> float:
    """A finite number > 0 (seconds)."""
    return positive(float(text), "value")


@_option_type("a whole number")
def _count(text: str) -> int:
    """A whole number > 0 (workers)."""
    return positive(int(text), "value", whole=True)


@_option_type("a whole number")
def _seed(text: str) -> int:
    """A whole number >= 0 (a scenario seed)."""
    return positive(int(text), "value", whole=True, allow_zero=True)


@_option_type("a TCP port 1-65535, or 0 for ports the system picks")
def _base_port(text: str) -> int:
    """A TCP port, or 0: each emulated receiver on a port the system picks."""
    port = int(text)
    if not 0 <= port < 65536:
        raise ValueError(text)
    return port


@_option_type("a duration")
def _duration(text: str) -> str:
    """A duration such as ``90d``, ``12h``, ``30min``, or ``off``; checked, kept as text."""
    if text.strip().lower() != db.policy.OFF:
        db.parse_duration(text, "duration")
    return text


@_option_type("a database URL")
def _database_url(text: str) -> str:
    """A database URL with a numeric port, if any (the password never shows in a message)."""
    try:
        port = sa.engine.make_url(text).port
        if port is not None:
            check_port(port)
    except (sa.exc.ArgumentError, ValueError):
        raise ValidationError(
            f"{clip(mask_url(text), 80)!r} is not a database URL; give "
            "postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE, PORT a number 1-65535"
        ) from None
    return text


@_option_type("a folder")
def _writable_dir(text: str) -> Path:
    """A folder that exists or can be created, and can be written.

    The check leaves nothing behind: the command creates the folder when it writes there.
    """
    path = Path(text).expanduser()
    missing = [folder for folder in (path, *path.parents) if not folder.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as exc:
        raise ValidationError(
            f"cannot create or write the folder {clip(text, 200)!r}: {exc.strerror or exc}"
        ) from None
    finally:
        for folder in missing:  # deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()
    return path


@_option_type("NAME or NAME=HOST:PORT[@LAT,LON]")
def _receiver_arg(text: str) -> Receiver | str:
    """A receiver: a name in the database, or ``NAME=HOST:PORT[@LAT,LON]``."""
    if "=" not in text:
        return check_receiver_name(text)
    name, _, rest = text.partition("=")
    address, _, position = rest.partition("@")
    lat, lon = (float(v) for v in position.split(",")) if position else (0.0, 0.0)
    return Receiver(name, *parse_address(address), lat, lon)


@_option_type("LAT,LON in degrees, e.g. 50.0152,9.0112 (or -33.9,18.4)")
def _position_arg(text: str) -> tuple[float, float]:
    from heimdall_lab.planning import check_target

    return check_target(text.split(","), "position")


@_option_type("LAT_MIN,LAT_MAX,LON_MIN,LON_MAX in degrees, e.g. 47,55,5,15")
def _area_arg(text: str) -> tuple[float, float, float, float]:
    from heimdall_lab.planning import check_area

    return check_area(text.split(","))


@_option_type(f"NAME:KIND[:AFTER_FRAMES[:TIMES]] with KIND one of {', '.join(FAULT_KINDS)}")
def _fault_arg(text: str) -> tuple[str, Fault]:
    """A fault to inject: ``NAME:KIND[:AFTER_FRAMES[:TIMES]]``."""
    parts = text.split(":")
    if len(parts) < 2 or parts[1] not in FAULT_KINDS:
        raise ValueError(text)
    after = int(parts[2]) if len(parts) > 2 else 0
    times = int(parts[3]) if len(parts) > 3 else None
    return parts[0], Fault(parts[1], after_frames=after, times=times)  # type: ignore[arg-type]


# -- notebook parameters: checked against the notebook's parameters cell ----------------------

#: What a value must be, by the type of its default: (default's type, accepted, description).
_PARAMETER_KINDS: tuple[tuple[type, tuple[type, ...], str], ...] = (
    (bool, (bool,), "True or False"),
    (int, (int,), "a whole number"),
    (float, (int, float), "a number"),
    (str, (str,), "text (quote it: '\"...\"')"),
    (list, (list, tuple, type(None)), "a list or None"),
    (tuple, (list, tuple, type(None)), "a list or None"),
    (dict, (dict, type(None)), "a dict or None"),
)


def _parameter_value(name: str, text: str) -> Any:
    """A ``-p NAME VALUE`` value: :func:`~heimdall_lab.notebooks.parse_value`, strictly.

    Text that opens a list, tuple or dict but does not parse is refused, not passed on as a
    string.
    """
    value = parse_value(text)
    if value == text and text.lstrip().startswith(("[", "(", "{")):
        raise ValidationError(
            f"parameter {name}: {clip(text)!r} is not a Python literal; check the brackets and "
            "quotes, e.g. -p seed '[1, 2, 3]'"
        )
    return value


def _grid_values(name: str, text: str) -> list:
    """The values of one ``batch grid -p NAME VALUES``: a list, or one value."""
    value = _parameter_value(name, text)
    return list(value) if isinstance(value, list | tuple) else [value]


def _check_parameter_types(notebook: str, values: Mapping[str, Sequence[Any]]) -> None:
    """Refuse a value whose type does not fit its default in the notebook's parameters cell.

    Checked before a kernel starts. A parameter whose default is None or an expression takes
    anything; unknown names are left to :func:`~heimdall_lab.notebooks.run_notebook` and
    :func:`~heimdall_lab.batch.run_grid`, which name them.

    Parameters
    ----------
    notebook : str
        A notebook name or path.
    values : mapping of str to sequence
        Each parameter's values.

    Raises
    ------
    ValidationError
        Naming the parameter, the value and what it should be.
    """
    path = notebook_path(notebook)
    declared = notebook_parameters(path)
    for name, options in values.items():
        if name not in declared:
            continue
        default = parse_value(declared[name]["default"])
        kind = next((k for k in _PARAMETER_KINDS if type(default) is k[0]), None)
        if kind is None:  # None or an expression: the notebook decides
            continue
        _, accepted, expected = kind
        for value in options:
            if not isinstance(value, accepted) or (
                isinstance(value, bool) and bool not in accepted
            ):
                raise ValidationError(
                    f"parameter {name}: {clip(repr(value))} is not {expected} (the default in "
                    f"{path.name} is {clip(declared[name]['default'])})"
                )


def summary_table(cap: Capture) -> pd.DataFrame:
    """The per-receiver summary printed after a capture.

    Parameters
    ----------
    cap : Capture
        The result.

    Returns
    -------
    pandas.DataFrame
        Status, samples, exact sample rate, lost frames, RSSI, SNR (in the occupied
        bandwidth), C/N0, frequency offset, attempts and failure reason per receiver.
    """
    table = cap.status()
    if table.empty:
        return table
    table = table.reindex(columns=_SUMMARY_COLUMNS)
    return table.round(
        {"sample_rate_hz": 3, "rssi_dbm": 1, "snr_db": 1, "cn0_dbhz": 1, "frequency_offset_hz": 2}
    )


def _exit_code(stage: str) -> int:
    return {"done": EXIT_OK, "partial": EXIT_PARTIAL}.get(stage, EXIT_FAILED)


def _print_capture(cap: Capture) -> int:
    table = summary_table(cap)
    if not table.empty:
        print(table.to_string())
    print(f"\ncapture {cap.capture_id}: {cap.stage}")
    print(f"IQ: {cap.iq_url or 'not stored'}")
    print(f"measurements: {cap.measurements_written} rows in {cap.database_url}")
    for error in cap.errors:
        print(f"error: {error}")
    for warning in cap.warnings:  # work kept locally: say so where it cannot be missed
        _complain(warning)
    return _exit_code(cap.stage)


def cmd_demo(args: argparse.Namespace) -> int:
    """Capture from seven emulated receivers through the capture notebook; print the metrics."""
    validate_capture_request(DEMO_FREQUENCY_HZ, args.duration)  # before the kernel starts
    capture_id = new_capture_id()
    print(
        f"heimdall_lab {__version__} demo: seven emulated KiwiSDR receivers, "
        f"{args.duration:g} s of IQ at {DEMO_FREQUENCY_HZ / 1e6:g} MHz, "
        "embedded PostgreSQL, local IQ folder, the capture notebook through papermill"
    )
    report = run_notebook(
        "capture",
        {
            "frequency_hz": DEMO_FREQUENCY_HZ,
            "duration_s": args.duration,
            "seed": args.seed,
            "realtime": not args.fast,
            "capture_id": capture_id,
        },
        output_dir=args.output_dir,
    )
    engine = db.get_engine()
    try:
        record = db.get_capture(engine, capture_id)
        rows = db.measurements_for_capture(engine, capture_id, include_psd=False)
    finally:
        engine.dispose()
    if record is None:
        print(f"the notebook ran but stored no capture; see {report}", file=sys.stderr)
        return EXIT_FAILED
    columns = ["receiver", "samples_count", "rssi_dbm", "snr_db", "cn0_dbhz"]
    columns += ["frequency_offset_hz", "signal_present"]
    print(rows[columns].set_index("receiver").round(2).to_string())
    print(f"\ncapture {capture_id}: {record.status}, IQ in {record.iq_url}")
    print(f"report: {report}")
    return _exit_code(record.status)


@_option_type("a YAML plan file")
def _plan_file(text: str) -> str:
    """A readable file."""
    if not Path(text).is_file():
        raise ValidationError(f"no plan file {clip(text)!r}")
    return text


@_option_type("a session id (letters, digits, '_', '.', '-')")
def _session_id(text: str) -> str:
    """A session id."""
    return check_capture_id(text)


@_option_type("a whole number >= 1")
def _count(text: str) -> int:
    """A count."""
    return positive(int(text), "value", whole=True)


@_option_type("a number of seconds >= 0")
def _non_negative(text: str) -> float:
    """Seconds, 0 or more."""
    return positive(float(text), "value", allow_zero=True)


@_option_type("a probability between 0 and 1")
def _probability(text: str) -> float:
    """A probability."""
    value = float(text)
    if not 0 < value < 1:
        raise ValueError(text)
    return value


@_option_type(f"a whole number 1 to {MAX_EMULATED}")
def _emulated_count(text: str) -> int:
    """How many receivers to emulate."""
    n = int(text)
    if not 1 <= n <= MAX_EMULATED:
        raise ValueError(text)
    return n


@_option_type(f"a number of seconds {INTERVAL_RANGE_S[0]:g} to {INTERVAL_RANGE_S[1]:g}")
def _interval_arg(text: str) -> float:
    """Seconds per interval of a capture."""
    value = float(text)
    if not INTERVAL_RANGE_S[0] <= value <= INTERVAL_RANGE_S[1]:
        raise ValueError(text)
    return value


def cmd_capture(args: argparse.Namespace) -> int:
    """Capture, measure and store; optionally write kiwi IQ WAV files too."""
    validate_capture_request(args.frequency, args.duration)  # before any emulator starts
    emulate = bool(args.emulate) or args.seed is not None or bool(args.fault)
    emulate = emulate or bool(args.modulation)
    source: contextlib.AbstractContextManager[Emulated | None] = contextlib.nullcontext()
    if emulate:
        if args.emulate and args.receiver:
            raise ValidationError("give --emulate N or --receiver names, not both")
        extra = emulated_receivers(args.emulate or len(DEFAULT_RECEIVERS))
        scenario = Scenario.default(seed=args.seed or 0, receivers=extra)
        if args.modulation:
            tx = replace(
                scenario.transmitter, frequency_hz=args.frequency, modulation=args.modulation
            )
            scenario = replace(scenario, transmitter=tx)
        source = emulated(
            scenario=scenario,
            receivers=args.receiver or extra,
            start_utc=args.start_utc,
            realtime=not args.fast,
            faults=dict(args.fault or []),
        )
    elif args.fault:
        raise ValidationError("--fault applies to emulated captures (--emulate)")
    with source as emu:
        options: dict[str, object] = (
            {"receivers": args.receiver} if emu is None else emu.capture_options
        )
        if emu is None and args.start_utc:  # receivers replaying another day
            options["gps_reference"] = args.start_utc
        cap = capture(
            args.frequency,
            args.duration,
            iq_url=args.iq_url,
            database_url=args.database_url,
            settings=StreamSettings(read_timeout=args.read_timeout),
            progress=not args.quiet,
            interval_s=args.interval,
            **options,
        )
    code = _print_capture(cap)
    if args.wav_dir and cap.dataset is not None and cap.acquisition is not None:
        starts = cap.dataset["start_time"].values.astype("M8[ns]")
        starts = starts[~np.isnat(starts)]
        stored = set(cap.dataset["receiver"].values.tolist())
        recordings = (  # one receiver's samples in memory at a time, read from the store
            (o.receiver, stored_recording(cap.dataset, o.receiver.name))
            for o in cap.acquisition.outcomes
            if o.receiver.name in stored
        )
        for path in write_kiwi_wavs(
            args.wav_dir,
            recordings,
            args.frequency,
            starts.min() if len(starts) else np.datetime64("now", "ns"),
        ):
            print(f"wrote {path}")
    return code


def _plan_from_args(args: argparse.Namespace) -> session.SessionPlan:
    """The plan of ``session start``: a YAML file, with flags over its fields."""
    fields: dict[str, Any] = {}
    if args.plan:
        fields = session.SessionPlan.from_yaml(args.plan).to_dict()
    given = {
        "frequencies": args.frequency,
        "dwell_s": args.dwell,
        "sweeps": args.sweeps,
        "repeat_every_s": args.every,
        "receivers": args.receiver,
        "interval_s": args.interval,
        "mode": args.mode,
        "name": args.name,
        "emulate": args.emulate,
    }
    fields.update({k: v for k, v in given.items() if v is not None})
    if args.duration is not None:  # a duration bounds the session; sweeps only if given
        fields["duration_s"] = args.duration
        fields.pop("end_utc", None)
        if args.sweeps is None:
            fields["sweeps"] = None
    if args.pfa is not None:
        fields.setdefault("trigger", {})["pfa"] = args.pfa
    if not fields.get("frequencies"):
        raise ValidationError("give a plan file or --frequency (repeatable) and --dwell")
    return session.SessionPlan.from_mapping(fields)


def cmd_session(args: argparse.Namespace) -> int:
    """Start, resume, stop or show recording sessions."""
    if args.action == "start":
        plan = _plan_from_args(args)  # checked before the database starts
        run = session.start(
            plan,
            session_id=args.id,
            database_url=args.database_url,
            iq_url=args.iq_url,
            progress=not args.quiet,
        )
        return _print_session_run(run)
    if args.action == "resume":
        run = session.resume(
            args.id, database_url=args.database_url, iq_url=args.iq_url, progress=not args.quiet
        )
        return _print_session_run(run)
    if args.action == "stop":
        asked = session.stop(args.id, database_url=args.database_url)
        print(f"session {args.id}: " + ("stop asked" if asked else "not running"))
        return EXIT_OK
    if args.id is None:  # status of them all
        engine = db.get_engine(args.database_url)
        try:
            table = db.list_sessions(engine, limit=50)
        finally:
            engine.dispose()
        if table.empty:
            print("no sessions")
            return EXIT_OK
        cols = [c for c in ("id", "name", "status", "progress_percent", "n_captures") if c in table]
        print(table[cols].to_string(index=False))
        return EXIT_OK
    row, captures = session.status(args.id, database_url=args.database_url)
    total = row["steps_total"] if row["steps_total"] is not None else "?"
    state = row["status"]
    beat = row["heartbeat_at"]
    if state in ("running", "stopping") and beat is not None:
        silent = (pd.Timestamp.now(tz="UTC") - beat).total_seconds()
        if silent > db.STALE_AFTER_S:
            state += f" (no heartbeat for {silent:.0f} s: its process has ended; resume it)"
    cut = 0
    if not captures.empty:
        cut = int(captures["status"].isin(["cancelled", "incomplete", "failed"]).sum())
    print(
        f"session {row['id']} ({row['name'] or 'no name'}): {state}, "
        f"{row['steps_done']}/{total} steps recorded"
        + (f" ({cut} cut short or failed: gaps, not recorded again)" if cut else "")
        + f", {row['progress_percent']:.0f} %"
    )
    if row["error_message"]:
        print(f"error: {row['error_message']}")
    if not captures.empty:
        cols = ["step", "capture_id", "status", "frequency_hz", "start_time"]
        print(captures[cols].to_string(index=False))
    return EXIT_OK


def _print_session_run(run: session.SessionRun) -> int:
    for cap in run.captures:
        note = f" ({len(cap.events)} detections)" if cap.events else ""
        print(f"capture {cap.capture_id}: {cap.frequency_hz:.0f} Hz, {cap.stage}{note}")
    if run.skipped_sweeps:
        print(f"sweeps skipped (their time passed while stopped): {run.skipped_sweeps}")
    print(f"session {run.session_id}: {run.status}")
    if run.error:
        _complain(run.error)
    return {"done": EXIT_OK, "stopped": EXIT_OK}.get(run.status, EXIT_FAILED)


def cmd_emulate(args: argparse.Namespace) -> int:
    """Serve emulated receivers (and their directory) until interrupted."""
    from heimdall_lab.emulate.network import DirectoryServer, network_receivers

    scenario = Scenario.default(seed=args.seed)
    replay: dict[str, Recording] = {}
    recorded: list[np.datetime64] = []  # when each replayed recording was made
    receivers = None
    if args.seconds is not None:
        positive(args.seconds, "--seconds")
    if args.network and args.replay:
        raise ValidationError("--network and --replay are two different emulations; give one")
    if args.network:
        snapshot = directory.load(tutorial.directory_snapshot())
        receivers = network_receivers(snapshot, args.network, near=args.near, host=args.host)
        scenario = Scenario.default(seed=args.seed, receivers=receivers)
    if args.modulation or args.transmitter or args.frequency:
        tx = scenario.transmitter
        scenario = replace(
            scenario,
            transmitter=replace(
                tx,
                latitude=args.transmitter[0] if args.transmitter else tx.latitude,
                longitude=args.transmitter[1] if args.transmitter else tx.longitude,
                frequency_hz=args.frequency or tx.frequency_hz,
                modulation=args.modulation or tx.modulation,
            ),
        )
    if args.replay:
        # Receiver names from kiwirecorder's file names, positions from gnss_pos/NAME.txt.
        receivers = []
        for path in args.replay:
            name, start, _ = parse_kiwi_wav_name(path)
            if start is not None:
                recorded.append(to_utc_ns(start, "the file name's time"))
            if not Path(path).is_file():
                raise ValidationError(f"--replay: no such file {path}")
            replay[name] = read_kiwi_wav(path)
            position = read_gnss_pos(path, name) or (0.0, 0.0)
            receivers.append(Receiver(name, args.host, 8073, *position))
    emulator = Emulator(
        scenario,
        receivers=receivers,
        replay=replay,
        faults=dict(args.fault or []),
        realtime=not args.fast,
        host=args.host,
        base_port=args.base_port,
    )
    last_port = args.base_port + len(emulator.units) - 1
    if args.base_port and last_port > 65535:
        raise ValidationError(
            f"--base-port {args.base_port}: {len(emulator.units)} receivers would need ports up "
            f"to {last_port}; give at most {65536 - len(emulator.units)}, or 0"
        )

    async def serve() -> None:
        async with emulator:
            for r in emulator.receivers:
                print(f"{r.name}={r.host}:{r.port}@{r.latitude},{r.longitude}", flush=True)
            listing = DirectoryServer(emulator, host=args.host).start()
            print(
                f"# directory: {listing.url('js')} (HTML: {listing.url('html')}); "
                "heimdall-lab receivers import URL",
                flush=True,
            )
            if recorded:
                when = f"{np.datetime_as_string(min(recorded), 's')}Z"
                print(
                    f"# the recordings are of {when}: capture with --start-utc {when}", flush=True
                )
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            # SIGTERM is the way to stop a server (exit 0); Ctrl-C interrupts (exit 130).
            loop.add_signal_handler(signal.SIGTERM, stop.set)
            if args.seconds:
                loop.call_later(args.seconds, stop.set)
            try:
                await stop.wait()
            finally:
                listing.stop()

    asyncio.run(serve())
    return EXIT_OK


def cmd_health(args: argparse.Namespace) -> int:
    """Print each receiver's /status: users, GNSS, free channels."""
    from heimdall_lab.kiwi.survey import survey

    receivers = _named_receivers(args.receiver, args.database_url)
    table = survey(receivers, timeout_s=args.timeout, progress=False)
    print(table.drop(columns=["latency_s"]).to_string(index=False))
    return EXIT_OK if table["reachable"].all() else EXIT_PARTIAL


def _named_receivers(given: Sequence[Receiver | str], database_url: str | None) -> list[Receiver]:
    if all(isinstance(r, Receiver) for r in given):
        return list(given)  # type: ignore[arg-type]
    engine = db.get_engine(database_url)
    try:
        known = {r.name: r for r in db.list_receivers(engine, active_only=False)}
    finally:
        engine.dispose()
    out = []
    for r in given:
        if isinstance(r, str) and r not in known:
            raise ValidationError(f"unknown receiver {r!r}; known: {sorted(known)}")
        out.append(known[r] if isinstance(r, str) else r)
    return out


def _print_policy(policy: Mapping[str, Any]) -> None:
    """What keeps and compresses measurements, one line each."""
    print(f"server: {policy['server']}")
    print(f"retain: {policy['retain'] or 'for ever'}")
    print(f"compress after: {policy['compress_after'] or 'never'}")
    print(f"measurement_stats: {policy['stats']}")
    print(f"note: {policy['note']}")


def cmd_db(args: argparse.Namespace) -> int:
    """Apply migrations, show the database's state, or set its retention policy."""
    engine = db.get_engine(args.database_url, apply_migrations=args.action != "status")
    try:
        if args.action == "policy":
            if args.prune:
                print(f"pruned {db.prune(engine, args.prune)} measurement rows")
            _print_policy(
                db.set_policy(engine, retain=args.retain, compress_after=args.compress_after)
            )
            return EXIT_OK
        if args.action == "migrate":
            applied = db.migrate(engine)
            print(f"applied {len(applied)} new migration(s) to {mask_url(engine.url)}")
            if not args.no_seed:
                added = db.seed_receivers(engine)
                print(f"added {added} default receiver(s)")
        migrations = db.applied_migrations(engine)
        print(f"database: {mask_url(engine.url)}")
        print(f"timescaledb: {'yes' if db.is_timescale(engine) else 'no (plain PostgreSQL)'}")
        if migrations.empty:
            raise DatabaseError(
                f"{mask_url(engine.url)} has no heimdall tables: no migration was applied; "
                "run heimdall-lab db migrate (with the same --database-url) first"
            )
        print(f"migrations applied: {', '.join(migrations['name'].astype(str))}")
        with engine.connect() as conn:
            for table in ("websdrs", "captures", "measurements"):
                n = conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar()
                print(f"{table}: {n} rows")
    finally:
        engine.dispose()
    return EXIT_OK


def _print_table(frame: pd.DataFrame, fmt: str, empty: str) -> None:
    """A table as text, JSON records or CSV on stdout."""
    if fmt == "json":
        print(frame.to_json(orient="records", date_format="iso", indent=1))
    elif fmt == "csv":
        print(frame.to_csv(index=False), end="")
    else:
        print(frame.to_string(index=False) if len(frame) else empty)


def cmd_receivers(args: argparse.Namespace) -> int:
    """List, add, deactivate, import, select or check receivers."""
    action = args.action
    # Checked before the database starts.
    receiver = (
        Receiver(args.name, *parse_address(args.address), args.lat, args.lon)
        if action == "add"
        else None
    )
    if action == "deactivate":
        check_receiver_name(args.name)
    for name in getattr(args, "names", None) or ():
        check_receiver_name(name)
    found = None
    if action == "import" or (action == "select" and args.directory):
        source = args.source if action == "import" else args.directory
        found = directory.load(source, timeout_s=args.timeout)
        print(found.summary(), file=sys.stderr if action == "select" else sys.stdout)
    if action == "select" and args.directory and not args.activate:
        return _print_selection(args, list(found or ()))  # no database needed
    engine = db.get_engine(args.database_url)
    try:
        if receiver is not None:
            db.add_receiver(engine, receiver)
            print(f"added {receiver.name} at {receiver.address}")
        elif action == "deactivate":
            db.deactivate_receiver(engine, args.name)
            print(f"deactivated {args.name}")
        elif action == "activate":
            for name in args.names:
                db.update_receiver(engine, name, is_active=True)
            print(f"activated {', '.join(args.names)}")
        elif action == "import":
            result = db.import_directory(engine, found, deactivate_missing=args.deactivate_missing)
            print(result.summary())
        elif action == "select":
            entries = list(found) if found is not None else db.directory_entries(engine)
            return _print_selection(args, entries, engine)
        elif action == "check":
            return _check_receivers(args, engine)
        else:
            frame = db.receivers_frame(engine, active_only=not args.all, names=args.names or None)
            if args.format == "table":
                frame = frame[_LIST_COLUMNS]
            _print_table(
                frame, args.format, "no receivers (heimdall-lab db migrate adds the default ones)"
            )
    finally:
        engine.dispose()
    return EXIT_OK


#: What ``receivers list`` shows as a table (JSON and CSV give every column).
_LIST_COLUMNS = [
    "name",
    "host",
    "port",
    "latitude",
    "longitude",
    "location_name",
    "is_active",
    "users",
    "users_max",
    "gps_good",
    "fixes_min",
    "last_seen_at",
]


def _print_selection(
    args: argparse.Namespace, entries: list, engine: sa.engine.Engine | None = None
) -> int:
    from heimdall_lab import planning

    chosen = planning.select(
        entries,
        args.frequency,
        near=args.near,
        area=args.area,
        count=args.count,
        duration_s=args.duration,
        localization=not args.no_localization,
        max_distance_km=args.max_distance,
    )
    for warning in chosen.warnings:
        print(f"heimdall-lab: {warning}", file=sys.stderr)
    if args.format == "json":
        print(json.dumps(chosen.to_dict(), indent=1))
    else:
        shown = chosen.frame().round({"distance_km": 1, "azimuth_deg": 0, "timing_sigma_us": 2})
        print(shown.to_string(index=False))
        print(
            f"predicted error {chosen.predicted_error_km:.1f} km "
            f"(largest azimuth gap {chosen.azimuth_gap_deg:.0f} deg); "
            f"{len(chosen.candidates)} candidates, passed over: "
            + ", ".join(f"{k} {v}" for k, v in sorted(chosen.rejected.items()) if v)
        )
    if args.activate and engine is not None:
        names = db.activate_selection(engine, chosen.entries)
        print(f"active receivers now: {', '.join(names)}", file=sys.stderr)
    return EXIT_OK


def _check_receivers(args: argparse.Namespace, engine: sa.engine.Engine) -> int:
    from heimdall_lab.kiwi.survey import survey

    if args.names:
        receivers = _named_receivers(args.names, args.database_url)
    else:
        receivers = db.list_receivers(engine, active_only=not args.all)
    table = survey(
        receivers,
        concurrency=args.concurrency,
        timeout_s=args.timeout,
        progress=not args.quiet,
    )
    db.record_health(engine, table.to_dict("records"))
    reachable = int(table["reachable"].sum())
    fresh = int(table["fresh_gnss"].fillna(False).sum())
    free = int((table["free_channels"].fillna(0) > 0).sum())
    if not args.quiet:
        print(table.to_string(index=False))
    print(
        f"checked {len(table)} receivers in {table.attrs['elapsed_s']:.1f} s: "
        f"{reachable} reachable, {fresh} with fresh GNSS, {free} with a free channel"
    )
    return EXIT_OK if reachable == len(table) else EXIT_PARTIAL


def cmd_sync(args: argparse.Namespace) -> int:
    """Upload IQ kept locally and replay spooled measurements; mark interrupted captures."""
    table = spool.sync(database_url=args.database_url, stale_after_s=args.stale_after)
    if table.empty:
        print("nothing pending")
        return EXIT_OK
    print(table.to_string(index=False))
    left = spool.pending()
    print(f"{len(left)} capture(s) still pending" if left else "everything synced")
    return EXIT_PARTIAL if left else EXIT_OK


def cmd_batch(args: argparse.Namespace) -> int:
    """Reprocess stored captures, or run a notebook over a parameter grid, on Dask.

    A progress bar over the captures or runs (on a terminal's stderr) as each ends, the table,
    and one summary line. Dask's own logs show from WARNING, ``-v`` adds its INFO.
    """
    from tqdm.contrib.logging import logging_redirect_tqdm

    from heimdall_lab import batch

    options = {
        "scheduler": args.scheduler,
        "n_workers": args.workers,
        "progress": True,
        "silence_logs": _log_level(args.verbose),
    }
    t0 = time.perf_counter()
    with logging_redirect_tqdm():  # log lines above the bar, not through it
        if args.action == "reprocess":
            table = batch.reprocess(
                args.capture or None,
                iq_url=args.iq_url,
                database_url=args.database_url,
                mode=args.mode,
                processes=not args.threads,
                **options,
            )
        else:
            grid = {name: _grid_values(name, text) for name, text in args.parameter or []}
            _check_parameter_types(args.notebook, grid)
            table = batch.run_grid(args.notebook, grid, args.output_dir, **options)
    elapsed = time.perf_counter() - t0
    if len(table):
        print(table.drop(columns=["parameters"], errors="ignore").to_string(index=False))
    print(_batch_summary(args.action, table, elapsed))
    return EXIT_PARTIAL if (table["status"] == "failed").any() else EXIT_OK


def _batch_summary(action: str, table: pd.DataFrame, elapsed_s: float) -> str:
    """One line: ``reprocessed 24 captures: 23 done, 1 failed in 41.2 s``."""
    n = len(table)
    noun = "capture" if action == "reprocess" else "notebook run"
    line = f"{'reprocessed' if action == 'reprocess' else 'ran'} {n} {noun}{'' if n == 1 else 's'}"
    counts = table["status"].value_counts().to_dict() if n else {}
    order = ["done", "completed", "skipped", "failed"]
    statuses = [s for s in order if s in counts] + sorted(set(counts) - set(order))
    if statuses:
        line += ": " + ", ".join(f"{counts[s]} {s}" for s in statuses)
    return f"{line} in {elapsed_s:.1f} s"


#: The parameter ``run --pairs`` sets: the localize notebook's pair table on failure.
SHOW_PAIRS = "show_pairs"
#: Characters kept of a localization's failure message in the one line ``run`` prints.
MAX_CAUSE_CHARS = 150


def cmd_run(args: argparse.Namespace) -> int:
    """Run a notebook headless through papermill; print where it went.

    A notebook that raised exits 3 with one line naming the cell and the error. A
    localization that cannot be made (``LocalizationError``) says so in one line with its
    cause; with ``--pairs`` (``-p show_pairs True``) the notebook's table of every pair and
    why it was rejected is printed first, on stdout.
    """
    params = {name: _parameter_value(name, text) for name, text in args.parameter or []}
    if args.pairs:
        if SHOW_PAIRS not in notebook_parameters(notebook_path(args.notebook)):
            raise ValidationError(
                f"--pairs is for a notebook with a {SHOW_PAIRS} parameter (localize); "
                f"{notebook_path(args.notebook).name} has none"
            )
        params[SHOW_PAIRS] = True
    _check_parameter_types(args.notebook, {name: [value] for name, value in params.items()})
    try:
        out = run_notebook(
            args.notebook, params, output_dir=args.output_dir, progress=not args.quiet
        )
    except NotebookError as exc:
        failure = _localization_failure(exc)
        if failure is None:
            raise  # any other failure: the cell, the error and the report, as it is
        cause, report, printed = failure
        shown = bool(params.get(SHOW_PAIRS))
        if shown and printed:
            print(printed.rstrip("\n"))
        hint = "" if shown else "; --pairs shows each pair"
        _complain(f"cannot locate: {clip(cause, MAX_CAUSE_CHARS)}; report {report}{hint}")
        return EXIT_FAILED
    print(out)
    return EXIT_OK


def _localization_failure(exc: NotebookError) -> tuple[str, Path, str] | None:
    """What a notebook failure says, when it is a ``LocalizationError``.

    Returns its message, the report and what the failing cell printed; None for any other
    failure, or when the report cannot be read.
    """
    import nbformat

    report = Path(str(exc).rpartition("; see ")[2])
    if not report.is_file():
        return None
    try:
        nb = nbformat.read(report, as_version=4)
    except (OSError, ValueError) as err:
        log.debug("cannot read the report %s: %s", report, err)
        return None
    for cell in nb.cells:
        outputs = cell.get("outputs", []) if cell.cell_type == "code" else []
        error = next((o for o in outputs if o.get("output_type") == "error"), None)
        if error is None:
            continue
        if error.get("ename") != "LocalizationError":
            return None
        printed = "".join(
            o.get("text", "")
            for o in outputs
            if o.get("output_type") == "stream" and o.get("name") == "stdout"
        )
        cause = " ".join(str(error.get("evalue", "")).split()) or "LocalizationError"
        return cause, report, printed
    return None


def lab_command(folder: Path, *, port: int | None = None, browser: bool = True) -> list[str]:
    """The command that starts JupyterLab on ``folder`` with this Python.

    Parameters
    ----------
    folder : pathlib.Path
        The notebooks folder JupyterLab serves (and starts kernels in).
    port : int, optional
        Port to listen on; JupyterLab picks one when omitted.
    browser : bool, default True
        Open a browser tab.

    Returns
    -------
    list of str
        The argument vector.
    """
    cmd = [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={folder}"]
    if port is not None:
        cmd.append(f"--port={port}")
    if not browser:
        cmd.append("--no-browser")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # containers and CI run as root; JupyterLab refuses it
    return cmd


def cmd_lab(args: argparse.Namespace) -> int:
    """Copy the packaged notebooks into the data home and open JupyterLab on them."""
    if args.port is not None:
        check_port(args.port, "--port")
    folder = Path(args.dir).expanduser().absolute() if args.dir else home.home_path("notebooks")
    cmd = lab_command(folder, port=args.port, browser=not args.no_browser)
    copies = copy_notebooks(folder, dry_run=args.dry_run)
    verb = "would copy" if args.dry_run else "copied"
    for path in copies:
        print(f"{verb} {path.name} to {folder}")
    print(f"data home: {home.data_home()}")
    print(f"notebooks: {folder}")
    print(f"command: {shlex.join(cmd)}")
    if args.dry_run:
        return EXIT_OK
    try:
        # An absolute data home for the kernels, which start in the notebooks folder.
        env = {**os.environ, home.HOME_ENV: str(home.data_home())}
        return subprocess.call(cmd, cwd=folder, env=env)
    except KeyboardInterrupt:
        return EXIT_OK
    except OSError as exc:
        print(f"heimdall-lab: cannot start JupyterLab: {exc}", file=sys.stderr)
        return EXIT_FAILED


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``heimdall-lab``.

    Returns
    -------
    argparse.ArgumentParser
        The parser, with one subcommand per task.
    """
    parser = _Parser(
        prog="heimdall-lab",
        description="Capture IQ from KiwiSDR receivers (or their emulator), measure, store.",
        epilog="Local state (embedded database, IQ store, spool, notebooks) lives in the data "
        "home: HEIMDALL_HOME, else the per-user data folder; the same from any folder.",
    )
    parser.add_argument("--version", action="version", version=f"heimdall_lab {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def database_option(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--database-url",
            type=_database_url,
            help="PostgreSQL URL (default: HEIMDALL_DATABASE_URL, else the embedded server)",
        )

    p = sub.add_parser("demo", help="capture from seven emulated receivers via the notebook")
    p.add_argument("-d", "--duration", type=float, default=DEMO_DURATION_S, help="seconds")
    p.add_argument("--seed", type=_seed, default=0, help="scenario seed (default 0)")
    p.add_argument("--fast", action="store_true", help="send frames as fast as possible")
    p.add_argument(
        "--output-dir",
        type=_writable_dir,
        default="reports",
        help="where the executed notebook goes",
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("capture", help="capture, measure and store")
    p.add_argument("-f", "--frequency", type=float, required=True, help="centre frequency, Hz")
    p.add_argument("-d", "--duration", type=float, default=DEMO_DURATION_S, help="seconds")
    p.add_argument(
        "-r",
        "--receiver",
        type=_receiver_arg,
        action="append",
        help="NAME (in the database) or NAME=HOST:PORT[@LAT,LON]; repeatable; default: all "
        "active receivers",
    )
    p.add_argument(
        "--emulate",
        nargs="?",
        const=len(DEFAULT_RECEIVERS),
        type=_emulated_count,
        metavar="N",
        help=f"use the local emulator with N receivers (default {len(DEFAULT_RECEIVERS)}: "
        "the default ones; more are added around them)",
    )
    p.add_argument("--seed", type=_seed, help="emulated scenario seed (implies --emulate)")
    p.add_argument(
        "--interval",
        type=_interval_arg,
        default=DEFAULT_INTERVAL_S,
        help="seconds per interval: IQ is stored and measured once per interval as it "
        f"arrives (default {DEFAULT_INTERVAL_S:g})",
    )
    p.add_argument(
        "--start-utc",
        help="emulated: UTC time of the first sample; receivers replaying a recording of "
        "another day (emulate --replay): that day, to read their GNSS times",
    )
    p.add_argument("--fast", action="store_true", help="emulated: no real-time pacing")
    p.add_argument(
        "--modulation",
        choices=MODULATIONS,
        help="emulated: the transmitter sends this at the capture frequency (implies --emulate)",
    )
    p.add_argument(
        "--fault",
        type=_fault_arg,
        action="append",
        help="emulated: NAME:KIND[:AFTER_FRAMES[:TIMES]] (implies --emulate); repeatable",
    )
    p.add_argument(
        "--read-timeout", type=_positive_number, default=5.0, help="seconds without a frame"
    )
    p.add_argument("--iq-url", help="IQ store (default: HEIMDALL_IQ_URL, else <data home>/iq)")
    database_option(p)
    p.add_argument(
        "--wav-dir",
        type=_writable_dir,
        help="also write one kiwi IQ WAV file per receiver here (checked before the capture)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_capture)

    p = sub.add_parser("emulate", help="serve emulated KiwiSDR receivers until interrupted")
    p.add_argument("--seed", type=_seed, default=0, help="scenario seed (default 0)")
    p.add_argument("--fast", action="store_true", help="send frames as fast as possible")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    p.add_argument(
        "--base-port",
        type=_base_port,
        default=8073,
        help="first port (default 8073); 0: ports the system picks",
    )
    p.add_argument("--replay", nargs="+", metavar="WAV", help="replay kiwi IQ WAV files instead")
    p.add_argument(
        "--network",
        type=_count,
        metavar="N",
        help="N receivers at the real positions of the directory snapshot nearest to --near",
    )
    p.add_argument(
        "--near",
        type=_position_arg,
        default=(50.0, 9.0),
        metavar="LAT,LON",
        help="--network: where the receivers are chosen around (default 50,9)",
    )
    p.add_argument(
        "--transmitter", type=_position_arg, metavar="LAT,LON", help="the transmitter's position"
    )
    p.add_argument(
        "--modulation",
        choices=MODULATIONS,
        help="the transmitter's modulation (default ook: keyed like DCF77)",
    )
    p.add_argument(
        "-f",
        "--frequency",
        type=_positive_number,
        help="the transmitter's frequency, Hz (default 10e6)",
    )
    p.add_argument(
        "--fault",
        type=_fault_arg,
        action="append",
        help="NAME:KIND[:AFTER_FRAMES[:TIMES]], repeatable; KIND: " + ", ".join(FAULT_KINDS),
    )
    p.add_argument("--seconds", type=float, help="stop after this many seconds")
    p.set_defaults(func=cmd_emulate)

    p = sub.add_parser("health", help="fetch each receiver's /status page")
    p.add_argument("-r", "--receiver", type=_receiver_arg, action="append", required=True)
    p.add_argument("--timeout", type=_positive_number, default=3.0, help="seconds per receiver")
    database_option(p)
    p.set_defaults(func=cmd_health)

    p = sub.add_parser("db", help="database: migrate, status, retention policy")
    p.add_argument("action", choices=["migrate", "status", "policy"])
    p.add_argument(
        "--no-seed",
        action="store_true",
        help="migrate: do not add the default receivers that are missing",
    )
    p.add_argument(
        "--retain",
        type=_duration,
        help="policy: drop measurements older than this (90d, 12h, ...; off: keep all); "
        "TimescaleDB only",
    )
    p.add_argument(
        "--compress-after",
        type=_duration,
        help="policy: compress measurements older than this (7d, ...; off); TimescaleDB only",
    )
    p.add_argument(
        "--prune",
        type=_duration,
        metavar="AGE",
        help="policy: delete measurements older than AGE now (any server)",
    )
    database_option(p)
    p.set_defaults(func=cmd_db)

    p = sub.add_parser("session", help="recording sessions: start, status, stop, resume")
    ssub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = ssub.add_parser("start", help="record a plan (a YAML file and/or flags) and run it")
    q.add_argument("plan", nargs="?", type=_plan_file, help="the plan, a YAML file")
    q.add_argument("--id", type=_session_id, help="the session's id (new by default)")
    q.add_argument("--name", help="a name to know it by")
    q.add_argument(
        "-f", "--frequency", type=_positive_number, action="append", help="Hz; repeatable"
    )
    q.add_argument("--dwell", type=_positive_number, help="seconds at each frequency")
    q.add_argument("--sweeps", type=_count, help="sweeps through the frequencies")
    q.add_argument("--duration", type=_positive_number, help="seconds the session runs")
    q.add_argument("--every", type=_non_negative, help="seconds from one sweep's start to the next")
    q.add_argument("-r", "--receiver", action="append", help="receiver name; repeatable")
    q.add_argument("--interval", type=_interval_arg, help="seconds per measurement interval")
    q.add_argument("--mode", choices=["continuous", "triggered"])
    q.add_argument("--pfa", type=_probability, help="triggered: false alarms per block")
    q.add_argument(
        "--emulate", type=_emulated_count, metavar="N", help="record from N emulated receivers"
    )
    q.add_argument("--iq-url", help="IQ store (default: HEIMDALL_IQ_URL, else <data home>/iq)")
    q.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    database_option(q)
    for action, text in (
        ("status", "a session's steps (all sessions without an id)"),
        ("stop", "ask a running session to stop"),
        ("resume", "run a session on from its first step without a capture"),
    ):
        q = ssub.add_parser(action, help=text)
        q.add_argument(
            "id", type=_session_id, nargs="?" if action == "status" else None, help="session id"
        )
        if action == "resume":
            q.add_argument("--iq-url", help="IQ store")
            q.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
        database_option(q)
    p.set_defaults(func=cmd_session)

    p = sub.add_parser(
        "receivers", help="receivers: list, add, deactivate, import the directory, select, check"
    )
    rsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = rsub.add_parser("list", help="list receivers (active ones unless --all)")
    q.add_argument("names", nargs="*", metavar="NAME", help="only these receivers")
    q.add_argument("--all", action="store_true", help="include inactive receivers")
    q.add_argument("--format", choices=["table", "json", "csv"], default="table")
    database_option(q)
    q = rsub.add_parser(
        "import", help="upsert the public KiwiSDR directory (a file or an http(s) URL)"
    )
    q.add_argument("source", help="the directory: kiwisdr_com.js, the /public/ page, or a URL")
    q.add_argument(
        "--deactivate-missing",
        action="store_true",
        help="deactivate receivers imported before that the directory no longer lists",
    )
    q.add_argument("--timeout", type=_positive_number, default=10.0, help="seconds for a URL")
    database_option(q)
    q = rsub.add_parser(
        "select", help="choose receivers for a job: the set with the least predicted error"
    )
    q.add_argument("-f", "--frequency", type=_positive_number, required=True, help="Hz")
    where = q.add_mutually_exclusive_group(required=True)
    where.add_argument("--near", type=_position_arg, metavar="LAT,LON", help="the target")
    where.add_argument(
        "--area", type=_area_arg, metavar="LAT0,LAT1,LON0,LON1", help="the target area"
    )
    q.add_argument("--count", type=_count, default=6, help="receivers to choose (default 6)")
    q.add_argument("--duration", type=_positive_number, help="seconds the job will take")
    q.add_argument(
        "--directory",
        metavar="SOURCE",
        help="choose from this directory (file or URL) instead of the database's receivers",
    )
    q.add_argument(
        "--no-localization",
        action="store_true",
        help="the job is not a localization: receivers that refuse TDoA use qualify",
    )
    q.add_argument(
        "--max-distance",
        type=_positive_number,
        default=2500.0,
        metavar="KM",
        help="candidates within this distance of the target (default 2500 km)",
    )
    q.add_argument("--format", choices=["table", "json"], default="table")
    q.add_argument(
        "--activate",
        action="store_true",
        help="make the chosen receivers the active ones in the database (and no other)",
    )
    q.add_argument("--timeout", type=_positive_number, default=10.0, help="seconds for a URL")
    database_option(q)
    q = rsub.add_parser(
        "check", help="fetch /status of many receivers at once and record it in the database"
    )
    q.add_argument("names", nargs="*", metavar="NAME", help="these receivers (default: active)")
    q.add_argument("--all", action="store_true", help="every receiver, inactive ones too")
    q.add_argument("--concurrency", type=_count, default=64, help="requests at once (default 64)")
    q.add_argument("--timeout", type=_positive_number, default=5.0, help="seconds per receiver")
    q.add_argument("-q", "--quiet", action="store_true", help="only the summary line")
    database_option(q)
    q = rsub.add_parser("add", help="add a receiver")
    q.add_argument("name")
    q.add_argument("address", help="HOST:PORT")
    q.add_argument("--lat", type=float, required=True, help="latitude, degrees")
    q.add_argument("--lon", type=float, required=True, help="longitude, degrees")
    database_option(q)
    q = rsub.add_parser("deactivate", help="stop using a receiver (it stays in the database)")
    q.add_argument("name")
    database_option(q)
    q = rsub.add_parser("activate", help="use these receivers in captures (others unchanged)")
    q.add_argument("names", nargs="+", metavar="NAME")
    database_option(q)
    p.set_defaults(func=cmd_receivers)

    p = sub.add_parser("sync", help="upload IQ kept locally, replay spooled measurements")
    p.add_argument(
        "--stale-after",
        type=_positive_number,
        default=3600.0,
        help="mark captures stuck in a running stage this many seconds as failed",
    )
    database_option(p)
    p.set_defaults(func=cmd_sync)

    p = sub.add_parser("batch", help="batch work on Dask: reprocess captures, notebook grids")
    bsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = bsub.add_parser("reprocess", help="recompute stored captures' measurements from their IQ")
    q.add_argument("capture", nargs="*", help="capture ids (default: all in the IQ store)")
    q.add_argument(
        "--mode",
        choices=["skip", "replace"],
        default="skip",
        help="skip rows already stored (default) or replace them",
    )
    q.add_argument("--iq-url", help="IQ store (default: HEIMDALL_IQ_URL, else <data home>/iq)")
    q.add_argument(
        "--threads",
        action="store_true",
        help="LocalCluster workers as threads of this process (quicker to start; for few captures)",
    )
    database_option(q)
    grid = bsub.add_parser("grid", help="run a notebook once per point of a grid")
    for each in (q, grid):
        each.add_argument("--scheduler", help="dask scheduler address (default: a LocalCluster)")
        each.add_argument("--workers", type=_count, help="LocalCluster workers")
    q = grid
    q.add_argument("notebook", help="a name in notebooks/ or a path")
    q.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        metavar=("NAME", "VALUES"),
        help="a parameter and its values, e.g. -p seed '[1, 2, 3]'",
    )
    q.add_argument(
        "--output-dir", type=_writable_dir, default="reports/grid", help="where the runs go"
    )
    p.set_defaults(func=cmd_batch)

    p = sub.add_parser("run", help="run a notebook headless through papermill")
    p.add_argument(
        "notebook",
        help="a notebook name (capture, explore, localize, plan, form, session) or a path",
    )
    p.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        metavar=("NAME", "VALUE"),
        help="set a parameter (VALUE read as a Python literal when it is one)",
    )
    p.add_argument(
        "--output-dir",
        type=_writable_dir,
        default="reports",
        help="reports folder (default reports)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--pairs",
        action="store_true",
        help="localize: when it cannot locate, print every receiver pair and why it was "
        "rejected (the same as -p show_pairs True)",
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("lab", help="open JupyterLab on the notebooks (copied to the data home)")
    p.add_argument(
        "--dir", help="notebooks folder (default: notebooks/ in the data home); copies go here"
    )
    p.add_argument("--port", type=int, help="port for JupyterLab (default: its own choice)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser tab")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the folder, the copies and the command; copy and start nothing",
    )
    p.set_defaults(func=cmd_lab)
    return parser


def _log_level(verbose: int) -> int:
    """WARNING; INFO with ``-v``; DEBUG with ``-vv``."""
    return logging.WARNING - 10 * min(verbose, 2)


def _configure_logging(verbose: int) -> None:
    """Log to stderr at WARNING, INFO with ``-v``, DEBUG with ``-vv``.

    The level is the handler's as well as the root logger's, so a library logger that sets
    its own lower level still shows nothing the user did not ask for.
    """
    level = _log_level(verbose)
    handler = logging.StreamHandler()
    handler.setLevel(level)
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", handlers=[handler]
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``heimdall-lab`` command.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments; ``sys.argv[1:]`` when omitted.

    Returns
    -------
    int
        The exit code: :data:`EXIT_OK`, :data:`EXIT_PARTIAL`, :data:`EXIT_USAGE`,
        :data:`EXIT_FAILED` or :data:`EXIT_INTERRUPTED`. Input argparse refuses exits with
        2 (``SystemExit``) before any of that.
    """
    args = build_parser().parse_args(argv)
    _configure_logging(args.verbose)
    try:
        return args.func(args)
    except KeyboardInterrupt as exc:  # a capture says what it kept
        _complain(f"interrupted: {exc}" if str(exc) else "interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away (| head): nothing more to say
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except HeimdallError as exc:
        _complain(str(exc))
        return EXIT_USAGE if isinstance(exc, ValidationError) else EXIT_FAILED
    except Exception as exc:  # a bug or an environment nobody planned for
        if args.verbose:
            traceback.print_exc()
        hint = "" if args.verbose else "; heimdall-lab -v ... shows the traceback"
        _complain(f"unexpected {type(exc).__name__}: {exc}{hint}")
        return EXIT_FAILED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
