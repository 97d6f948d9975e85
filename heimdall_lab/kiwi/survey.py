"""Many receivers' ``/status`` pages at once: a bounded pool, a progress bar, one table.

:func:`survey` asks every receiver for its ``/status`` page concurrently, at most
``concurrency`` at a time, and reads each page with the directory's own field rules
(:func:`heimdall_lab.directory.entry_from_fields`), so the health of a receiver and its
directory entry say the same things in the same types.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Sequence
from typing import Any

import pandas as pd

from heimdall_lab import directory
from heimdall_lab.kiwi import guest
from heimdall_lab.kiwi.client import check_health
from heimdall_lab.receivers import Receiver

#: Checks running at once by default: several hundred receivers take well under a minute.
DEFAULT_CONCURRENCY = 64
#: Seconds for one receiver's whole ``/status`` request by default.
DEFAULT_TIMEOUT_S = 5.0

#: The columns of :func:`survey`'s table.
SURVEY_COLUMNS = (
    "name",
    "reachable",
    "users",
    "users_max",
    "has_gps",
    "gps_good",
    "fixes_min",
    "fresh_gnss",
    "free_channels",
    "latency_s",
    "error",
)


def _row(receiver: Receiver, health: Any) -> dict[str, Any]:
    row: dict[str, Any] = {c: None for c in SURVEY_COLUMNS}
    row.update(name=receiver.name, reachable=health.reachable, error=health.error or None)
    if not health.reachable:
        return row
    row["latency_s"] = health.latency_s
    try:
        entry = directory.entry_from_fields(health.fields, url=receiver.url)
    except (directory.SkippedEntry, directory.DirectoryError) as exc:
        # The page was read but does not describe a usable receiver: say why, keep counts.
        row.update(users=health.users, users_max=health.users_max)
        row["error"] = f"status page: {getattr(exc, 'reason', exc)}"
        return row
    row.update(
        users=entry.users,
        users_max=entry.users_max,
        has_gps=entry.has_gps,
        gps_good=entry.gps_good,
        fixes_min=entry.fixes_min,
        fresh_gnss=entry.fresh_gnss,
        free_channels=entry.free_channels,
    )
    return row


async def survey_async(
    receivers: Sequence[Receiver],
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    progress: bool = True,
) -> pd.DataFrame:
    """Check many receivers' ``/status`` concurrently; see :func:`survey`."""
    limit = asyncio.Semaphore(max(int(concurrency), 1))

    async def one(r: Receiver) -> dict[str, Any]:
        # Within the process-wide limit of connections to other people's receivers too.
        async with limit, guest.MANNERS.slot(r):
            return _row(r, await check_health(r, timeout_s))

    tasks = [asyncio.ensure_future(one(r)) for r in receivers]
    bar = None
    if progress and tasks:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(tasks), desc="status", unit="rx", leave=False)
    try:
        for done in asyncio.as_completed(tasks):
            row = await done
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(f"{row['name'][:16]}", refresh=False)
    finally:
        if bar is not None:
            bar.close()
        for t in tasks:
            t.cancel()
    frame = pd.DataFrame([t.result() for t in tasks], columns=list(SURVEY_COLUMNS))
    for col in ("users", "users_max", "gps_good", "fixes_min", "free_channels"):
        frame[col] = frame[col].astype("Int64")
    for col in ("has_gps", "fresh_gnss"):
        frame[col] = frame[col].astype("boolean")
    frame["reachable"] = frame["reachable"].astype(bool)
    frame["latency_s"] = frame["latency_s"].astype(float)
    return frame


def survey(
    receivers: Sequence[Receiver],
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    progress: bool = True,
) -> pd.DataFrame:
    """Check many receivers' ``/status`` pages concurrently, with a bounded pool.

    Parameters
    ----------
    receivers : sequence of Receiver
        The receivers.
    concurrency : int, default :data:`DEFAULT_CONCURRENCY`
        Requests at once (and never more than the process-wide limit of connections to
        public receivers, :mod:`heimdall_lab.kiwi.guest`).
    timeout_s : float, default :data:`DEFAULT_TIMEOUT_S`
        Seconds for each receiver's whole request.
    progress : bool, default True
        Show a progress bar.

    Returns
    -------
    pandas.DataFrame
        One row per receiver, in the order given (:data:`SURVEY_COLUMNS`); ``error`` says why
        a receiver was not reached or its page not understood. Never raises for what a
        receiver does.
    """
    start = time.monotonic()
    coro = survey_async(receivers, concurrency=concurrency, timeout_s=timeout_s, progress=progress)
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # a script: no loop yet
        frame = asyncio.run(coro)
    else:  # a notebook's loop is running in this thread: use a loop of its own elsewhere
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            frame = pool.submit(asyncio.run, coro).result()
    frame.attrs["elapsed_s"] = time.monotonic() - start
    return frame
