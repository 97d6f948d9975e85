"""The ``heimdall-lab`` command: one verb per thing a user does.

Exit codes: 0 success; 1 the job ran but some receivers failed; 2 bad input (usage or
validation); 3 nothing could be done (no receiver delivered, a stage or a notebook failed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

from heimdall_lab import db, home, spool
from heimdall_lab.emulate.scenario import MODULATIONS, Scenario
from heimdall_lab.emulate.server import FAULT_KINDS, Emulated, Emulator, Fault, emulated
from heimdall_lab.errors import HeimdallError, ValidationError
from heimdall_lab.ids import new_capture_id
from heimdall_lab.io.kiwi_wav import (
    parse_kiwi_wav_name,
    read_gnss_pos,
    read_kiwi_wav,
    write_kiwi_wavs,
)
from heimdall_lab.kiwi.acquire import TqdmProgress
from heimdall_lab.kiwi.client import StreamSettings, check_health
from heimdall_lab.notebooks import copy_notebooks, parse_value, run_notebook
from heimdall_lab.pipeline import Capture, capture
from heimdall_lab.receivers import Receiver, validate_capture_request
from heimdall_lab.recording import Recording
from heimdall_lab.urls import mask_url
from heimdall_lab.values import positive
from heimdall_lab.versions import __version__

log = logging.getLogger("heimdall_lab")

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, EXIT_FAILED = 0, 1, 2, 3
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


def _receiver_arg(text: str) -> Receiver | str:
    """Parse a receiver: a name in the database, or ``NAME=HOST:PORT[@LAT,LON]``."""
    if "=" not in text:
        return text
    try:
        name, _, rest = text.partition("=")
        address, _, position = rest.partition("@")
        host, _, port = address.rpartition(":")
        lat, lon = (float(v) for v in position.split(",")) if position else (0.0, 0.0)
        return Receiver(name, host, int(port), lat, lon)
    except (ValueError, ValidationError) as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected NAME or NAME=HOST:PORT[@LAT,LON] ({exc})"
        ) from exc


def _fault_arg(text: str) -> tuple[str, Fault]:
    """Parse ``NAME:KIND[:AFTER_FRAMES[:TIMES]]``."""
    parts = text.split(":")
    try:
        name, kind = parts[0], parts[1]
        after = int(parts[2]) if len(parts) > 2 else 0
        times = int(parts[3]) if len(parts) > 3 else None
        return name, Fault(kind, after_frames=after, times=times)  # type: ignore[arg-type]
    except (IndexError, ValueError, ValidationError) as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected NAME:KIND[:AFTER_FRAMES[:TIMES]], KIND one of {FAULT_KINDS}"
        ) from exc


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
    return _exit_code(cap.stage)


def cmd_demo(args: argparse.Namespace) -> int:
    """Capture from seven emulated receivers through the capture notebook; print the metrics."""
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


def cmd_capture(args: argparse.Namespace) -> int:
    """Capture, measure and store; optionally write kiwi IQ WAV files too."""
    bars = TqdmProgress(disable=args.quiet or None)

    def show(cap: Capture) -> None:
        for p in list(cap.receiver_progress.values()):
            bars(p)

    validate_capture_request(args.frequency, args.duration)  # before any emulator starts
    emulate = args.emulate or args.seed is not None or bool(args.fault) or bool(args.modulation)
    source: contextlib.AbstractContextManager[Emulated | None] = contextlib.nullcontext()
    if emulate:
        scenario = Scenario.default(seed=args.seed or 0)
        if args.modulation:
            tx = replace(
                scenario.transmitter, frequency_hz=args.frequency, modulation=args.modulation
            )
            scenario = replace(scenario, transmitter=tx)
        source = emulated(
            scenario=scenario,
            receivers=args.receiver,
            start_utc=args.start_utc,
            realtime=not args.fast,
            faults=dict(args.fault or []),
        )
    elif args.start_utc or args.fault:
        raise ValidationError("--start-utc and --fault apply to emulated captures (--emulate)")
    try:
        with source as emu:
            options = {"receivers": args.receiver} if emu is None else emu.capture_options
            cap = capture(
                args.frequency,
                args.duration,
                iq_url=args.iq_url,
                database_url=args.database_url,
                settings=StreamSettings(read_timeout=args.read_timeout),
                on_progress=show,
                **options,
            )
    finally:
        bars.close()
    code = _print_capture(cap)
    if args.wav_dir and cap.dataset is not None and cap.acquisition is not None:
        starts = cap.dataset["start_time"].values.astype("M8[ns]")
        starts = starts[~np.isnat(starts)]
        recordings = [(o.receiver, o.recording) for o in cap.acquisition.outcomes if o.recording]
        for path in write_kiwi_wavs(
            args.wav_dir,
            recordings,
            args.frequency,
            starts.min() if len(starts) else np.datetime64("now", "ns"),
        ):
            print(f"wrote {path}")
    return code


def cmd_emulate(args: argparse.Namespace) -> int:
    """Serve emulated receivers until interrupted."""
    scenario = Scenario.default(seed=args.seed)
    replay: dict[str, Recording] = {}
    receivers = None
    if args.seconds is not None:
        positive(args.seconds, "--seconds")
    if args.replay:
        # Receiver names from kiwirecorder's file names, positions from gnss_pos/NAME.txt.
        receivers = []
        for path in args.replay:
            name = parse_kiwi_wav_name(path)[0]
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

    async def serve() -> None:
        async with emulator:
            for r in emulator.receivers:
                print(f"{r.name}={r.host}:{r.port}@{r.latitude},{r.longitude}", flush=True)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            if args.seconds:
                loop.call_later(args.seconds, stop.set)
            await stop.wait()

    asyncio.run(serve())
    return EXIT_OK


def cmd_health(args: argparse.Namespace) -> int:
    """Print each receiver's /status: users, GNSS fix, uptime."""
    receivers = _named_receivers(args.receiver, args.database_url)

    async def run() -> list:
        return await asyncio.gather(*(check_health(r, args.timeout) for r in receivers))

    rows = [
        {
            "receiver": h.receiver,
            "reachable": h.reachable,
            "users": h.users,
            "users_max": h.users_max,
            "gps_fix": h.gps_fix,
            "uptime_s": h.uptime_s,
            "error": h.error,
        }
        for h in asyncio.run(run())
    ]
    print(pd.DataFrame(rows).set_index("receiver").to_string())
    return EXIT_OK if all(r["reachable"] for r in rows) else EXIT_PARTIAL


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


def cmd_db(args: argparse.Namespace) -> int:
    """Apply migrations, or show the database's state."""
    engine = db.get_engine(args.database_url, apply_migrations=args.action == "migrate")
    try:
        if args.action == "migrate":
            applied = db.migrate(engine)
            print(f"applied {len(applied)} new migration(s) to {mask_url(engine.url)}")
            if not args.no_seed:
                added = db.seed_receivers(engine)
                print(f"added {added} default receiver(s)")
        migrations = db.applied_migrations(engine)
        print(f"database: {mask_url(engine.url)}")
        print(f"timescaledb: {'yes' if db.is_timescale(engine) else 'no (plain PostgreSQL)'}")
        print(f"migrations applied: {', '.join(migrations['name'].astype(str))}")
        with engine.connect() as conn:
            for table in ("websdrs", "captures", "measurements"):
                n = conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar()
                print(f"{table}: {n} rows")
    finally:
        engine.dispose()
    return EXIT_OK


def cmd_receivers(args: argparse.Namespace) -> int:
    """List, add or deactivate receivers in the database."""
    engine = db.get_engine(args.database_url)
    try:
        if args.action == "add":
            try:
                r = _receiver_arg(f"{args.name}={args.address}@{args.lat},{args.lon}")
            except argparse.ArgumentTypeError as exc:  # parsed here, not by argparse
                raise ValidationError(str(exc)[:300]) from None
            assert isinstance(r, Receiver)
            db.add_receiver(engine, r)
            print(f"added {r.name} at {r.address}")
        elif args.action == "deactivate":
            db.deactivate_receiver(engine, args.name)
            print(f"deactivated {args.name}")
        else:
            receivers = db.list_receivers(engine, active_only=not args.all)
            table = pd.DataFrame(
                [
                    {
                        "name": r.name,
                        "address": r.address,
                        "latitude": r.latitude,
                        "longitude": r.longitude,
                        "location": r.location_name,
                    }
                    for r in receivers
                ]
            )
            print(
                table.to_string(index=False)
                if len(table)
                else "no receivers (heimdall-lab db migrate adds the default ones)"
            )
    finally:
        engine.dispose()
    return EXIT_OK


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
    """Reprocess stored captures, or run a notebook over a parameter grid, on Dask."""
    from heimdall_lab import batch

    if args.action == "reprocess":
        table = batch.reprocess(
            args.capture or None,
            iq_url=args.iq_url,
            database_url=args.database_url,
            scheduler=args.scheduler,
            n_workers=args.workers,
            mode=args.mode,
            processes=not args.threads,
        )
    else:
        grid: dict[str, list] = {}
        for name, value in args.parameter or []:
            parsed = parse_value(value)
            grid[name] = list(parsed) if isinstance(parsed, list | tuple) else [parsed]
        table = batch.run_grid(
            args.notebook, grid, args.output_dir, args.scheduler, n_workers=args.workers
        )
    print(table.drop(columns=["parameters"], errors="ignore").to_string(index=False))
    return EXIT_PARTIAL if (table["status"] == "failed").any() else EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    """Run a notebook headless through papermill; print where it went."""
    params = {name: parse_value(value) for name, value in args.parameter or []}
    out = run_notebook(args.notebook, params, output_dir=args.output_dir, progress=not args.quiet)
    print(out)
    return EXIT_OK


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
    return cmd


def cmd_lab(args: argparse.Namespace) -> int:
    """Copy the packaged notebooks into the data home and open JupyterLab on them."""
    if args.port is not None and not 0 < args.port < 65536:
        raise ValidationError(f"--port {args.port}: give a TCP port between 1 and 65535")
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
    parser = argparse.ArgumentParser(
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
            help="PostgreSQL URL (default: HEIMDALL_DATABASE_URL, else the embedded server)",
        )

    p = sub.add_parser("demo", help="capture from seven emulated receivers via the notebook")
    p.add_argument("-d", "--duration", type=float, default=DEMO_DURATION_S, help="seconds")
    p.add_argument("--seed", type=int, default=0, help="scenario seed (default 0)")
    p.add_argument("--fast", action="store_true", help="send frames as fast as possible")
    p.add_argument("--output-dir", default="reports", help="where the executed notebook goes")
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
    p.add_argument("--emulate", action="store_true", help="use the local emulator")
    p.add_argument("--seed", type=int, help="emulated scenario seed (implies --emulate)")
    p.add_argument("--start-utc", help="emulated: UTC time of the first sample")
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
    p.add_argument("--read-timeout", type=float, default=5.0, help="seconds without a frame")
    p.add_argument("--iq-url", help="IQ store (default: HEIMDALL_IQ_URL, else <data home>/iq)")
    database_option(p)
    p.add_argument("--wav-dir", help="also write one kiwi IQ WAV file per receiver here")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_capture)

    p = sub.add_parser("emulate", help="serve emulated KiwiSDR receivers until interrupted")
    p.add_argument("--seed", type=int, default=0, help="scenario seed (default 0)")
    p.add_argument("--fast", action="store_true", help="send frames as fast as possible")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    p.add_argument("--base-port", type=int, default=8073, help="first port (default 8073)")
    p.add_argument("--replay", nargs="+", metavar="WAV", help="replay kiwi IQ WAV files instead")
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
    p.add_argument("--timeout", type=float, default=3.0, help="seconds per receiver")
    database_option(p)
    p.set_defaults(func=cmd_health)

    p = sub.add_parser("db", help="database: migrate, status")
    p.add_argument("action", choices=["migrate", "status"])
    p.add_argument(
        "--no-seed",
        action="store_true",
        help="migrate: do not add the default receivers that are missing",
    )
    database_option(p)
    p.set_defaults(func=cmd_db)

    p = sub.add_parser("receivers", help="receivers in the database: list, add, deactivate")
    rsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = rsub.add_parser("list", help="list receivers (active ones unless --all)")
    q.add_argument("--all", action="store_true", help="include inactive receivers")
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
    p.set_defaults(func=cmd_receivers)

    p = sub.add_parser("sync", help="upload IQ kept locally, replay spooled measurements")
    p.add_argument(
        "--stale-after",
        type=float,
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
        each.add_argument("--workers", type=int, help="LocalCluster workers")
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
    q.add_argument("--output-dir", default="reports/grid", help="where the runs go")
    p.set_defaults(func=cmd_batch)

    p = sub.add_parser("run", help="run a notebook headless through papermill")
    p.add_argument("notebook", help="a notebook name (capture, explore, localize) or a path")
    p.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        metavar=("NAME", "VALUE"),
        help="set a parameter (VALUE read as a Python literal when it is one)",
    )
    p.add_argument("--output-dir", default="reports", help="reports folder (default reports)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``heimdall-lab`` command.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments; ``sys.argv[1:]`` when omitted.

    Returns
    -------
    int
        The exit code.
    """
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except HeimdallError as exc:
        print(f"heimdall-lab: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, ValidationError) else EXIT_FAILED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
