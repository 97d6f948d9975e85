"""``heimdall-lab`` and ``python -m heimdall_lab``: the command line, interruptible at once.

This module imports nothing heavy itself, so Ctrl-C while the command is still loading its
libraries (a few seconds on a cold start) ends it like Ctrl-C later: one line, exit 130.
SIGTERM (``kill``, ``timeout``, a service manager) stops a command the same way: a capture
keeps what arrived and its row says ``cancelled``, and the embedded database is stopped.
"""

from __future__ import annotations

import signal
import sys

#: Exit code of an interrupted command (128 + SIGINT), as :mod:`heimdall_lab.cli` gives it.
EXIT_INTERRUPTED = 130


def run() -> int:
    """Load the command line and run it.

    Returns
    -------
    int
        The exit code of :func:`heimdall_lab.cli.main`, or 130 when interrupted while loading.
    """
    signal.signal(signal.SIGTERM, _stop)
    try:
        from heimdall_lab.cli import main

        return main()
    except KeyboardInterrupt:  # while loading; cli.main handles it once running
        print("heimdall-lab: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # a polite stop ends like Ctrl-C: work kept, one line


if __name__ == "__main__":
    sys.exit(run())
