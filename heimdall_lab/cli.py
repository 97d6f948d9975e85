"""The ``heimdall-lab`` command: one verb per thing a user does.

Exit codes: 0 success; 1 the job ran but some receivers failed; 2 bad input (usage or
validation); 3 nothing could be acquired.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from heimdall_lab import __version__
from heimdall_lab.dsp import measure_dataset
from heimdall_lab.emulator import FAULT_KINDS, Emulator, Fault
from heimdall_lab.errors import HeimdallError, ValidationError
from heimdall_lab.fetch import Acquisition, TqdmProgress, acquire
from heimdall_lab.kiwi import StreamSettings, check_health
from heimdall_lab.receivers import Receiver
from heimdall_lab.scenario import Scenario
from heimdall_lab.wavfile import read_kiwi_wav, write_kiwi_wav

log = logging.getLogger("heimdall_lab")

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, EXIT_NOTHING = 0, 1, 2, 3
#: The demo's transmitter frequency, the tuned frequency and the capture length.
DEMO_FREQUENCY_HZ = 10_000_000.0
DEMO_DURATION_S = 10.0


def _receiver_arg(text: str) -> Receiver:
    """Parse ``NAME=HOST:PORT[@LAT,LON]``."""
    try:
        name, _, rest = text.partition("=")
        address, _, position = rest.partition("@")
        host, _, port = address.rpartition(":")
        lat, lon = (float(v) for v in position.split(",")) if position else (0.0, 0.0)
        return Receiver(name, host, int(port), lat, lon)
    except (ValueError, ValidationError) as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected NAME=HOST:PORT[@LAT,LON] ({exc})"
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


def summary_table(acq: Acquisition) -> pd.DataFrame:
    """The per-receiver summary printed after an acquisition.

    Parameters
    ----------
    acq : Acquisition
        The result.

    Returns
    -------
    pandas.DataFrame
        Status, samples, seconds, exact sample rate, lost frames, RSSI, SNR in the occupied
        bandwidth, C/N0 and the strongest emission's offset from the tuned frequency.
    """
    table = acq.status()
    rate = table["sample_rate_hz"]
    out = pd.DataFrame(
        {
            "status": table["status"],
            "samples": table["samples"],
            "seconds": (table["samples"] / rate).round(2),
            "rate_hz": rate.round(3),
            "lost": table["lost_frames"],
            "rssi_dbm": table["rssi_dbm"].round(1),
        }
    )
    metrics = {}
    for name in acq.dataset.receiver.values:
        one = acq.dataset.sel(receiver=[name])
        try:
            metrics[name] = measure_dataset(one, center_frequency_hz=acq.frequency_hz).isel(
                receiver=0
            )
        except ValidationError as exc:  # too few samples to measure, say
            log.info("%s: no metrics: %s", name, exc)
    for column, var, digits in (
        ("snr_db", "snr_db", 1),
        ("cn0_dbhz", "cn0_dbhz", 1),
        ("offset_hz", "frequency_offset_hz", 2),
    ):
        out[column] = [
            round(float(metrics[n][var]), digits) if n in metrics else float("nan")
            for n in out.index
        ]
    out["attempts"] = table["attempts"]
    out["reason"] = table["reason"]
    return out


def _report(acq: Acquisition) -> int:
    print(summary_table(acq).to_string())
    print(
        f"\ncapture {acq.capture_id}: {len(acq.ok)}/{len(acq.outcomes)} receivers complete, "
        f"{acq.elapsed_s:.2f} s wall time for {acq.duration_s:g} s of IQ"
    )
    for o in acq.outcomes:
        if o.message:
            print(f"  {o.receiver.name}: {o.message}")
    if not acq.ok and all(o.recording is None for o in acq.outcomes):
        return EXIT_NOTHING
    return EXIT_OK if len(acq.ok) == len(acq.outcomes) else EXIT_PARTIAL


def _acquire_with_bars(
    receivers: Sequence[Receiver], args: argparse.Namespace, **kwargs: object
) -> Acquisition:
    bars = TqdmProgress([r.name for r in receivers], disable=args.quiet or None)
    try:
        return acquire(
            receivers,
            args.frequency,
            args.duration,
            on_progress=bars,
            settings=StreamSettings(read_timeout=args.read_timeout),
            **kwargs,
        )
    finally:
        bars.close()


def cmd_demo(args: argparse.Namespace) -> int:
    """Start seven emulated receivers, capture from all of them, print a summary."""
    scenario = Scenario.default(seed=args.seed)
    print(
        f"heimdall_lab {__version__} demo: {len(scenario.sites)} emulated KiwiSDR receivers, "
        f"{args.duration:g} s of IQ at {args.frequency / 1e6:g} MHz"
    )
    with Emulator(scenario, realtime=not args.fast).running() as emulator:
        acq = _acquire_with_bars(emulator.receivers, args)
    return _report(acq)


def cmd_capture(args: argparse.Namespace) -> int:
    """Capture from the given receivers; optionally write kiwi IQ WAV files."""
    acq = _acquire_with_bars(args.receiver, args)
    code = _report(acq)
    if args.wav_dir:
        out = Path(args.wav_dir)
        out.mkdir(parents=True, exist_ok=True)
        for o in acq.outcomes:
            if o.recording is not None:
                path = out / f"{acq.capture_id}_{args.frequency:.0f}_{o.receiver.name}_iq.wav"
                write_kiwi_wav(path, o.recording)
                print(f"wrote {path}")
    return code


def cmd_emulate(args: argparse.Namespace) -> int:
    """Serve emulated receivers until interrupted."""
    scenario = Scenario.default(seed=args.seed)
    replay = {}
    receivers = None
    if args.replay:
        replay = {Path(p).stem: read_kiwi_wav(p) for p in args.replay}
        receivers = [Receiver(name, args.host, 8073) for name in replay]
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

    async def run() -> list:
        return await asyncio.gather(*(check_health(r, args.timeout) for r in args.receiver))

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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``heimdall-lab``.

    Returns
    -------
    argparse.ArgumentParser
        The parser, with one subcommand per task.
    """
    parser = argparse.ArgumentParser(
        prog="heimdall-lab",
        description="Capture IQ from KiwiSDR receivers (or their emulator).",
    )
    parser.add_argument("--version", action="version", version=f"heimdall_lab {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def acquisition_options(p: argparse.ArgumentParser, frequency: float | None) -> None:
        p.add_argument(
            "-f",
            "--frequency",
            type=float,
            default=frequency,
            required=frequency is None,
            help="centre frequency in Hz" + (f" (default {frequency:g})" if frequency else ""),
        )
        p.add_argument(
            "-d",
            "--duration",
            type=float,
            default=DEMO_DURATION_S,
            help="seconds of IQ per receiver (default %(default)g)",
        )
        p.add_argument(
            "--read-timeout",
            type=float,
            default=5.0,
            help="seconds without a frame before a receiver counts as stalled",
        )
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser("demo", help="capture from seven emulated receivers and print a summary")
    acquisition_options(p, DEMO_FREQUENCY_HZ)
    p.add_argument("--seed", type=int, default=0, help="scenario seed (default 0)")
    p.add_argument("--fast", action="store_true", help="send frames as fast as possible")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("capture", help="capture from the given receivers")
    acquisition_options(p, None)
    p.add_argument(
        "-r",
        "--receiver",
        type=_receiver_arg,
        action="append",
        required=True,
        help="NAME=HOST:PORT[@LAT,LON], repeatable",
    )
    p.add_argument("--wav-dir", help="write one kiwi IQ WAV file per receiver here")
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
    p.set_defaults(func=cmd_health)
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
        return EXIT_USAGE if isinstance(exc, ValidationError) else EXIT_NOTHING


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
