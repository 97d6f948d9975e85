"""``python -m benchmarks [--quick]``: every benchmark into ``reports/benchmark.md``.

``python -m benchmarks streaming [--quick]`` runs the streaming case instead
(:mod:`benchmarks.streaming`: ``reports/streaming.md``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from benchmarks import harness


def main(argv: Sequence[str] | None = None) -> int:
    """Run every benchmark and write the report; print the goals and the conclusion.

    ``streaming`` as the first argument runs :func:`benchmarks.streaming.main` on the rest.
    """
    # ``python -m benchmarks sessions [--quick]``: the sessions case (reports/sessions.md).
    if list(sys.argv[1:] if argv is None else argv)[:1] == ["sessions"]:
        from benchmarks import sessions

        return sessions.main(list(sys.argv[1:] if argv is None else argv)[1:])
    args_in = list(sys.argv[1:] if argv is None else argv)
    if args_in[:1] == ["streaming"]:
        from benchmarks import streaming

        return streaming.main(args_in[1:])
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Run every benchmark of heimdall_lab and write <output-dir>/benchmark.md "
        "with its plots under <output-dir>/benchmark/. "
        "'python -m benchmarks streaming [--quick] ...' runs the streaming case instead "
        "(reports/streaming.md).",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes: a smoke run of about a minute (figures not for judging goals)",
    )
    parser.add_argument("--repeats", type=int, help="repeats of each figure")
    parser.add_argument("--duration", type=float, dest="duration_s", help="capture seconds")
    parser.add_argument(
        "--database-url", help="use this database (default: a throwaway embedded PostgreSQL)"
    )
    parser.add_argument("--output-dir", default="reports", help="reports folder (default reports)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each section")
    args = parser.parse_args(args_in)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    make = harness.Settings.quick if args.quick else harness.Settings.full
    settings = make(repeats=args.repeats, duration_s=args.duration_s)
    results = harness.run_all(settings, database_url=args.database_url)
    report = harness.write_report(results, args.output_dir)
    print(harness.goals(results).to_string(index=False))
    print(harness.conclusion(results))
    print(f"measured in {results['elapsed_s'] / 60:.1f} min; wrote {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
