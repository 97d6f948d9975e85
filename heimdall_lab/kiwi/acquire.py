"""Concurrent acquisition: the same frequency and duration from N receivers at once.

Each receiver runs its own :class:`~heimdall_lab.kiwi.KiwiClient` with connect and read
timeouts; the whole call has an overall deadline. Failures worth retrying (refused, reset,
too busy, down, a stall before any sample) are retried with exponential backoff and jitter,
shared by every receiver at the same host; the others (bad password, an operator's refusal, a
redirect, a time or inactivity limit, protocol errors) are not. Each receiver gets one
connection per attempt, and at most so many connections are open at once
(:mod:`heimdall_lab.kiwi.guest`: the process's limit, and ``max_connections``); a host that
refused twice in a row is left alone for a cool-down. What each receiver delivered is kept,
even when it failed midway, and comes back as an xarray Dataset plus a per-receiver status
table.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

import numpy as np
import pandas as pd
import xarray as xr

from heimdall_lab.dataset import build_dataset, mean_db
from heimdall_lab.errors import (
    CoolingDownError,
    ProtocolError,
    ReceiverError,
    ReceiverTimeoutError,
    ValidationError,
)
from heimdall_lab.ids import new_capture_id
from heimdall_lab.kiwi.client import KiwiClient, StreamSettings
from heimdall_lab.kiwi.guest import (
    MANNERS,
    REFUSAL_REASONS,
    HostManners,
    HostRecord,
    check_ident,
    check_max_connections,
    default_ident,
)
from heimdall_lab.kiwi.protocol import IqFrame, shown
from heimdall_lab.receivers import Receiver, validate_capture_request
from heimdall_lab.recording import FRAME_SAMPLES, NOMINAL_RATE, Recording
from heimdall_lab.retry import RetryPolicy

log = logging.getLogger(__name__)

State = Literal["connecting", "receiving", "retrying", "done", "incomplete", "failed"]


@dataclass(frozen=True)
class Progress:
    """One progress report of one receiver.

    A server may send a little more than asked (its last frame runs past the duration):
    ``received`` is then ``expected``, so no progress shown reads more than 100 %. What was
    really received is in the outcome (:attr:`ReceiverOutcome.n_samples`).

    Attributes
    ----------
    receiver : str
        Receiver name.
    state : str
        ``connecting``, ``receiving``, ``retrying``, ``done``, ``incomplete`` or ``failed``.
    received, expected : int
        Samples received (at most ``expected``, when that is known) and expected.
    attempt : int
        Attempt number, from 1.
    message : str
        Why it is retrying or failed.
    """

    receiver: str
    state: State
    received: int = 0
    expected: int = 0
    attempt: int = 1
    message: str = ""

    def __post_init__(self) -> None:
        if self.expected > 0 and self.received > self.expected:
            object.__setattr__(self, "received", self.expected)

    @property
    def fraction(self) -> float:
        """Received over expected, 0 to 1."""
        return min(1.0, self.received / self.expected) if self.expected else 0.0

    @property
    def percent(self) -> float:
        """Received over expected, 0 to 100."""
        return 100.0 * self.fraction

    def describe(self) -> str:
        """The report as one line of text, e.g. ``receiving, 6,000/12,001 samples (50 %)``.

        Returns
        -------
        str
            State, samples (never past 100 %), attempt after the first, and message.
        """
        text = self.state
        if self.expected:
            text += f", {self.received:,}/{self.expected:,} samples ({self.percent:.0f} %)"
        if self.attempt > 1:
            text += f" (attempt {self.attempt})"
        if self.message:
            text += f": {self.message}"
        return text

    def __str__(self) -> str:
        return f"{self.receiver}: {self.describe()}"


ProgressCallback = Callable[[Progress], None]
#: Where a streaming receiver's frames go: called with each frame, its hop index and the
#: sample rate the receiver announced.
FrameSink = Callable[[IqFrame, int, float], None]


#: Waits between connection attempts to a host, shared by every receiver at it (the number of
#: attempts comes from ``retries`` or each receiver's ``retry_count``).
RECEIVER_RETRY = RetryPolicy(initial_s=0.5, maximum_s=8.0, jitter_s=0.5)


@dataclass
class ReceiverOutcome:
    """What one receiver delivered.

    Attributes
    ----------
    receiver : Receiver
        The receiver.
    status : str
        ``ok`` (complete, sane timing), ``incomplete`` (samples kept: the stream ended early,
        was cancelled, or its timing failed a check) or ``failed`` (no samples).
    recording : Recording or None
        The samples and timestamps received (``None`` when none arrived).
    reason : str
        Machine-readable failure reason: ``unreachable``, ``timeout``, ``disconnected``,
        ``protocol_error``, ``tls``; the server's ``too_busy``, ``down``, ``redirect``,
        ``bad_password``, ``refused`` (an operator's rule), ``time_limit``, ``inactivity``;
        ``cooling_down`` (its host refused recently: not connected), ``deadline``,
        ``timing``, ``cancelled``.
    message : str
        Human-readable failure message.
    attempts : int
        Connection attempts made (0 when its host was cooling down).
    expected_samples : int
        Samples asked for.
    skipped_frames : int
        Malformed frames skipped.
    elapsed_s : float
        Wall time spent on this receiver.
    retry_after_s : float
        Seconds its host is left alone from the end of this capture (a cool-down); 0 when
        it may be connected again at once.
    frames : int
        Frames received (all of them went to the sink when one was given).
    first_frame_utc : numpy.datetime64 or None
        This computer's clock when the first frame arrived.
    hops : tuple
        The client's per-hop records (:class:`~heimdall_lab.kiwi.client.HopRecord`) of a
        hopping stream.
    """

    receiver: Receiver
    status: Literal["ok", "incomplete", "failed"]
    recording: Recording | None
    reason: str = ""
    message: str = ""
    attempts: int = 1
    expected_samples: int = 0
    skipped_frames: int = 0
    elapsed_s: float = 0.0
    retry_after_s: float = 0.0
    frames: int = 0
    first_frame_utc: np.datetime64 | None = None
    hops: tuple[Any, ...] = ()

    @property
    def n_samples(self) -> int:
        """Samples received (given to the sink, when the frames went to one)."""
        if self.recording is None or (self.frames and not len(self.recording.samples)):
            return self.frames * FRAME_SAMPLES
        return len(self.recording.samples)


@dataclass
class Acquisition:
    """The result of one concurrent acquisition.

    Attributes
    ----------
    capture_id : str
        Identifier of the capture.
    frequency_hz, duration_s : float
        What was asked.
    outcomes : list of ReceiverOutcome
        One per receiver, in the order asked.
    dataset : xarray.Dataset
        IQ and timestamps of every receiver that delivered samples.
    elapsed_s : float
        Wall time of the whole call.
    started_at : datetime
        Wall-clock time the call started.
    cancelled : bool
        Whether the call was interrupted (Ctrl-C, a cancelled task); the outcomes hold what
        each receiver delivered until then.
    """

    capture_id: str
    frequency_hz: float
    duration_s: float
    outcomes: list[ReceiverOutcome]
    dataset: xr.Dataset
    elapsed_s: float = 0.0
    started_at: datetime = field(default_factory=lambda: datetime.now().astimezone())
    cancelled: bool = False

    def status(self) -> pd.DataFrame:
        """The per-receiver status table.

        Returns
        -------
        pandas.DataFrame
            One row per receiver: status, reason, samples, rate, lost frames, RSSI, ...
        """
        rows = []
        for o in self.outcomes:
            rec = o.recording
            rows.append(
                {
                    "receiver": o.receiver.name,
                    "status": o.status,
                    "reason": o.reason,
                    "samples": o.n_samples,
                    "expected": o.expected_samples,
                    "sample_rate_hz": rec.sample_rate() if rec is not None else np.nan,
                    "lost_frames": rec.lost_frames if rec is not None else 0,
                    "skipped_frames": o.skipped_frames,
                    "rssi_dbm": mean_db(rec.rssi_dbm) if rec is not None else np.nan,
                    "attempts": o.attempts,
                    "elapsed_s": round(o.elapsed_s, 3),
                    "message": o.message,
                }
            )
        return pd.DataFrame(rows).set_index("receiver")

    @property
    def ok(self) -> list[str]:
        """Names of the receivers that delivered the whole duration."""
        return [o.receiver.name for o in self.outcomes if o.status == "ok"]

    @property
    def failed(self) -> list[str]:
        """Names of the receivers that delivered nothing."""
        return [o.receiver.name for o in self.outcomes if o.status == "failed"]


def validate_request(receivers: Sequence[Receiver], frequency_hz: float, duration_s: float) -> None:
    """Check a request before any connection is made.

    Parameters
    ----------
    receivers : sequence of Receiver
        The receivers asked for.
    frequency_hz, duration_s : float
        Centre frequency (Hz) and duration (s).

    Raises
    ------
    ValidationError
        No receivers, a duplicate name, a bad frequency or duration, or a frequency outside a
        receiver's range.
    """
    validate_capture_request(frequency_hz, duration_s)
    if not receivers:
        raise ValidationError("no receivers to acquire from")
    names = [r.name for r in receivers]
    if len(set(names)) != len(names):
        raise ValidationError(f"receiver names must be unique, got {names}")
    for r in receivers:
        if not isinstance(r, Receiver):
            raise ValidationError(f"expected Receiver objects, got {r!r}")
        r.check_frequency(frequency_hz)


def _restated(error: ReceiverError, message: str) -> ReceiverError:
    """The same error (type, reason, attributes) with another message."""
    new = type(error)(message, error.receiver)
    new.__dict__.update(error.__dict__)
    return new


def _cooling(name: str, record: HostRecord, left: float) -> ReceiverError:
    why = record.last_reason or "refused"
    return CoolingDownError(
        f"{name}: its host {shown(record.key, 60)} said {why} {record.refusals} time(s) in a "
        f"row; left alone for another {left:.0f} s, not connected "
        "(heimdall_lab.kiwi.guest.forget() tries it now)",
        name,
        remaining_s=left,
    )


def _stop_if_cooling(
    manners: HostManners, record: HostRecord, name: str, error: ReceiverError | None
) -> None:
    """Raise when the host is left alone: before the first attempt, or before a retry."""
    left = manners.cooling_left(record)
    if left <= 0:
        return
    if error is None:
        raise _cooling(name, record, left)
    raise _restated(error, f"{error}; its host is now left alone for {left:.0f} s")


def _note(
    manners: HostManners,
    record: HostRecord,
    client: KiwiClient,
    error: ReceiverError,
    policy: RetryPolicy,
) -> bool:
    """Tell the host's record how an attempt ended; True when the host now cools down."""
    if error.reason in REFUSAL_REASONS:
        return manners.refused(record, error.reason, policy)
    if client.n_frames:  # served, then ended: nothing to hold against the host
        manners.served(record)
    else:  # no samples: back off, though a host that admitted the session did not refuse
        manners.failed(record, policy, admitted=client.admitted)
    return False


@contextlib.asynccontextmanager
async def _held(limit: asyncio.Semaphore | None) -> AsyncIterator[None]:
    if limit is None:
        yield
    else:
        async with limit:
            yield


async def _acquire_one(
    receiver: Receiver,
    frequency_hz: float,
    duration_s: float,
    *,
    settings: StreamSettings,
    retries: int | None,
    retry_policy: RetryPolicy,
    deadline: float,
    on_progress: ProgressCallback | None,
    live: bool = True,
    manners: HostManners = MANNERS,
    limit: asyncio.Semaphore | None = None,
    ssl_context: ssl.SSLContext | None = None,
    sink: FrameSink | None = None,
    hops: Sequence[tuple[float, float]] | None = None,
) -> ReceiverOutcome:
    loop = asyncio.get_running_loop()
    start = loop.time()
    clients: list[KiwiClient] = []
    name = receiver.name
    expected = math.ceil(duration_s * NOMINAL_RATE)
    record = manners.record(receiver)

    def report(state: State, message: str = "") -> None:
        if on_progress is not None:
            c = clients[-1] if clients else None
            received = c.received_samples if c else 0
            exp = c.expected_samples if c else expected
            on_progress(Progress(name, state, received, exp, len(clients), message))

    attempts = 1 + (receiver.retry_count if retries is None else retries)
    error: ReceiverError | None = None
    waiting = False  # for a connection slot
    try:
        async with asyncio.timeout_at(deadline):
            for attempt in range(1, attempts + 1):
                _stop_if_cooling(manners, record, name, error)
                # The host's backoff, shared with every receiver at it (and other captures).
                wait = manners.wait_left(record)
                if wait > 0:
                    await asyncio.sleep(wait)
                waiting = True
                async with _held(limit), manners.slot(receiver):
                    waiting = False
                    _stop_if_cooling(manners, record, name, error)
                    client = KiwiClient(
                        receiver,
                        frequency_hz,
                        duration_s,
                        settings,
                        on_samples=lambda *_: report("receiving"),
                        ssl_context=ssl_context,
                        on_frame=None if sink is None else _with_rate(sink, clients),
                        hops=hops,
                    )
                    clients.append(client)
                    report("connecting")
                    try:
                        await client.run()
                    except ReceiverError as exc:
                        if _note(manners, record, client, exc, retry_policy):
                            left = manners.cooling_left(record)
                            raise _restated(
                                exc, f"{exc}; its host is now left alone for {left:.0f} s"
                            ) from exc
                        # A stream that already delivered samples is kept, not restarted: a
                        # new stream would not line up in time with the others.
                        if attempt == attempts or not exc.retryable or client.n_frames:
                            raise
                        log.info("%s: attempt %d failed (%s); retrying", name, attempt, exc)
                        error = exc
                        report("retrying", str(exc))
                        continue
                    manners.served(record)
                    error = None
                    break
    except ReceiverError as exc:
        error = exc
    except TimeoutError:
        where = (
            "before a connection was free; allow more at once (max_connections, "
            "HEIMDALL_MAX_CONNECTIONS) or a longer deadline"
            if waiting and not clients
            else "the samples received are kept"
        )
        error = _with_reason(
            ReceiverTimeoutError(f"{name}: the overall deadline passed; {where}", name),
            "deadline",
        )
    except asyncio.CancelledError:
        # Interrupted: what arrived is kept, like a stream that ended early.
        asyncio.current_task().uncancel()  # type: ignore[union-attr]
        error = _with_reason(
            ReceiverError(f"{name}: cancelled; the samples received are kept", name), "cancelled"
        )
    except Exception as exc:  # one receiver's data never costs the others theirs
        log.debug("%s: unexpected error", name, exc_info=True)
        error = ProtocolError(
            f"{name}: its data raised {type(exc).__name__} ({shown(str(exc), 80)})", name
        )
    client = clients[-1] if clients else None
    served = bool(client and client.n_frames)
    # With a sink the frames are not here: the recording holds no samples, only what the
    # stream itself showed (a rate announced anew); the frames' timing is checked where
    # they went.
    recording = client.recording(live) if served else None
    timing = recording.timing_summary() if recording is not None else ""
    if timing:
        message = f"{name}: timing: {timing}; samples kept, their GNSS times not used"
        if error is None:
            error = _with_reason(ReceiverError(message, name), "timing")
        else:  # the stream also ended badly: its reason stays, the timing is said too
            error = _restated(error, f"{error}; {message}")
    if error is None:
        status = "ok"
    elif served:
        status = "incomplete"
    else:
        status = "failed"
    outcome = ReceiverOutcome(
        receiver=receiver,
        status=status,
        recording=recording,
        reason="" if error is None else error.reason,
        message="" if error is None else str(error),
        attempts=len(clients),
        expected_samples=client.expected_samples if client else expected,
        skipped_frames=client.skipped if client else 0,
        elapsed_s=loop.time() - start,
        retry_after_s=round(manners.cooling_left(record), 3),
        frames=client.n_frames if client else 0,
        first_frame_utc=client.first_frame_utc if client else None,
        hops=tuple(getattr(client, "hops_done", ())) if client else (),
    )
    report("done" if status == "ok" else status, outcome.message)
    if error is not None:
        level = logging.INFO if error.reason == "cancelled" else logging.WARNING
        log.log(level, "%s", outcome.message)
    return outcome


def _with_rate(sink: FrameSink, clients: list[KiwiClient]) -> Callable[[IqFrame, int], None]:
    """The client's frame callback: the sink, told the rate the receiver announced."""

    def on_frame(frame: IqFrame, hop: int) -> None:
        sink(frame, hop, clients[-1].nominal_rate or NOMINAL_RATE)

    return on_frame


def _with_reason(error: ReceiverError, reason: str) -> ReceiverError:
    error.reason = reason
    return error


async def acquire_async(
    receivers: Sequence[Receiver],
    frequency_hz: float,
    duration_s: float,
    *,
    settings: StreamSettings | None = None,
    retries: int | None = None,
    retry_policy: RetryPolicy | None = None,
    deadline_s: float | None = None,
    on_progress: ProgressCallback | None = None,
    capture_id: str | None = None,
    gps_reference: datetime | np.datetime64 | None = None,
    ident: str | None = None,
    max_connections: int | None = None,
    ssl_context: ssl.SSLContext | None = None,
    manners: HostManners | None = None,
    sinks: Mapping[str, FrameSink] | None = None,
    hops: Sequence[tuple[float, float]] | None = None,
) -> Acquisition:
    """Acquire IQ from several receivers concurrently.

    Each receiver gets one connection per attempt. Attempts that fail back off per host
    (every receiver at the host shares the wait); a host that refused twice in a row, across
    captures of this process, is left alone for a cool-down and reported as ``cooling_down``
    without connecting (:mod:`heimdall_lab.kiwi.guest`). Receivers waiting for a connection
    slot or a backoff wait within the deadline.

    Parameters
    ----------
    receivers : sequence of Receiver
        Where to acquire from.
    frequency_hz : float
        Centre frequency in Hz, the same for all.
    duration_s : float
        Seconds of samples from each receiver.
    settings : StreamSettings, optional
        Passband, gain, connect and read timeouts.
    retries : int, optional
        Retries of retryable failures per receiver; each receiver's ``retry_count`` when
        omitted.
    retry_policy : RetryPolicy, optional
        Waits between attempts (:data:`RECEIVER_RETRY` by default), counted per host: every
        receiver at a host waits out the same backoff. The number of attempts is
        ``1 + retries``.
    deadline_s : float, optional
        Overall limit for the whole call; by default the duration plus the longest connect
        timeout plus 10 s. Receivers still streaming then keep what they received.
    on_progress : callable, optional
        Called with a :class:`Progress` on every change (for a tqdm or ipywidgets bar).
    capture_id : str, optional
        Identifier for the capture; a new UUID when omitted.
    gps_reference : datetime, optional
        A UTC time within half a week of the capture, to resolve the GPS week of the
        timestamps; the wall clock by default (right for live receivers). Without it the
        receivers are live, and a GNSS time far from this computer's clock is a timing
        problem (:data:`heimdall_lab.recording.CLOCK_TOLERANCE_S`); with it (a replay of
        another day) that check is off.
    ident : str, optional
        Name shown in each receiver's user list; replaces ``settings.ident``. By default
        ``HEIMDALL_IDENT``, else ``heimdall_lab/<version>``.
    max_connections : int, optional
        Connections open at once for this capture, at most. The process's own limit
        (``HEIMDALL_MAX_CONNECTIONS``, default 32, for receivers not on this machine) holds
        as well, across every capture running.
    ssl_context : ssl.SSLContext, optional
        Certificates to trust for receivers reached over TLS (``Receiver.tls``); the
        system's trust store by default.
    manners : HostManners, optional
        What is remembered of hosts (backoff, cool-downs) and the process's limit;
        :data:`heimdall_lab.kiwi.guest.MANNERS` by default.
    sinks : mapping of str to callable, optional
        Per receiver name, where its frames go as they arrive (``sink(frame, hop, rate)``,
        ``rate`` the sample rate the receiver announced): the
        acquisition then keeps none of them, so memory does not grow with the duration, and
        the Dataset is empty (the sinks hold the samples).
    hops : sequence of (float, float), optional
        Frequencies (Hz) and dwell times (s) to step through on each receiver's one
        connection (:class:`~heimdall_lab.kiwi.KiwiClient`); ``frequency_hz`` and
        ``duration_s`` are then the first frequency and the sum of the dwells.

    Returns
    -------
    Acquisition
        Dataset, per-receiver outcomes and status table. Cancelled (the task cancelled, or
        SIGTERM in the main thread), it returns what each receiver had delivered, with
        :attr:`Acquisition.cancelled` set.

    Raises
    ------
    ValidationError
        Bad request (or ``HEIMDALL_IDENT``, ``HEIMDALL_MAX_CONNECTIONS``), before anything
        connects.
    """
    validate_request(receivers, frequency_hz, duration_s)
    settings = settings or StreamSettings()
    if ident is not None:
        settings = replace(settings, ident=check_ident(ident))
    elif settings.ident is not None:
        check_ident(settings.ident, "settings.ident")
    else:
        default_ident()  # a bad HEIMDALL_IDENT says so before anything connects
    manners = manners or MANNERS
    _ = manners.max_connections  # likewise a bad HEIMDALL_MAX_CONNECTIONS
    limit = None
    if max_connections is not None:
        limit = asyncio.Semaphore(check_max_connections(max_connections))
    if deadline_s is None:
        longest = max(settings.connect_timeout or r.timeout_s for r in receivers)
        deadline_s = duration_s + longest + 10.0
    elif not (math.isfinite(deadline_s) and deadline_s > 0):
        raise ValidationError(f"deadline must be a positive number of seconds, got {deadline_s}")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    started_at = datetime.now().astimezone()
    with _terminate_cancels(loop):
        outcomes, cancelled = await _acquire_all(
            receivers,
            frequency_hz,
            duration_s,
            settings=settings,
            retries=retries,
            retry_policy=retry_policy or RECEIVER_RETRY,
            deadline=t0 + deadline_s,
            on_progress=on_progress,
            live=gps_reference is None,
            manners=manners,
            limit=limit,
            ssl_context=ssl_context,
            sinks=sinks,
            hops=hops,
        )
    capture_id = capture_id or new_capture_id()
    dataset = build_dataset(
        [
            (o.receiver, o.recording, o.status == "ok")
            for o in outcomes
            if o.recording is not None and len(o.recording.samples)
        ],
        frequency_hz,
        duration_s,
        capture_id=capture_id,
        gps_reference=gps_reference,
    )
    return Acquisition(
        capture_id,
        frequency_hz,
        duration_s,
        outcomes,
        dataset,
        loop.time() - t0,
        started_at,
        cancelled,
    )


async def _acquire_all(
    receivers: Sequence[Receiver], frequency_hz: float, duration_s: float, **kwargs: Any
) -> tuple[list[ReceiverOutcome], bool]:
    """Every receiver at once; on cancellation each returns what it received."""
    sinks = kwargs.pop("sinks", None) or {}
    tasks = [
        asyncio.create_task(
            _acquire_one(r, frequency_hz, duration_s, sink=sinks.get(r.name), **kwargs)
        )
        for r in receivers
    ]
    cancelled = False
    try:
        await asyncio.gather(*tasks)
    except asyncio.CancelledError:
        # gather passed the cancellation on; each receiver returns what it received.
        cancelled = True
        await asyncio.wait(tasks)
        asyncio.current_task().uncancel()  # type: ignore[union-attr]
    return [t.result() for t in tasks], cancelled


@contextlib.contextmanager
def _terminate_cancels(loop: asyncio.AbstractEventLoop) -> Iterator[None]:
    """While acquiring, SIGTERM cancels the acquisition as Ctrl-C does (what arrived is kept).

    Only where the loop can take signals (the main thread, not Windows); the handler there
    before is put back afterwards.
    """
    task = asyncio.current_task()
    previous = signal.getsignal(signal.SIGTERM)
    try:
        loop.add_signal_handler(signal.SIGTERM, task.cancel)  # type: ignore[union-attr]
    except (NotImplementedError, RuntimeError, ValueError):
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        signal.signal(signal.SIGTERM, previous)


def acquire(
    receivers: Sequence[Receiver], frequency_hz: float, duration_s: float, **kwargs: object
) -> Acquisition:
    """Acquire IQ from several receivers concurrently; the blocking form of :func:`acquire_async`.

    Works in scripts and inside Jupyter (where an event loop already runs: the acquisition
    then runs on a loop of its own in a worker thread).

    Parameters
    ----------
    receivers : sequence of Receiver
        Where to acquire from.
    frequency_hz : float
        Centre frequency in Hz.
    duration_s : float
        Seconds of samples from each receiver.
    **kwargs
        As for :func:`acquire_async`.

    Returns
    -------
    Acquisition
        Dataset, per-receiver outcomes and status table.

    Raises
    ------
    ValidationError
        Bad request, before anything connects.
    """
    validate_request(receivers, frequency_hz, duration_s)
    coro = acquire_async(receivers, frequency_hz, duration_s, **kwargs)  # type: ignore[arg-type]
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)  # Ctrl-C cancels the acquisition, which returns what arrived
    return _run_in_thread(coro)


def _run_in_thread(coro: Any) -> Acquisition:
    """Run on a loop of its own in a worker thread; Ctrl-C (a Jupyter interrupt) cancels it.

    As with ``asyncio.run`` in a script, an interrupted acquisition returns what each
    receiver delivered, with :attr:`Acquisition.cancelled` set.
    """
    loop = asyncio.new_event_loop()
    task = loop.create_task(coro)
    box: dict[str, Any] = {}
    done = threading.Event()

    def worker() -> None:
        try:
            box["result"] = loop.run_until_complete(task)
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc
        finally:
            loop.close()
            done.set()

    thread = threading.Thread(target=worker, name="heimdall-acquire", daemon=True)
    thread.start()
    # Short waits on an Event (not Thread.join, which an interrupt can leave confused): an
    # interrupt is seen within 0.1 s.
    try:
        while not done.wait(0.1):
            pass
    except KeyboardInterrupt:
        loop.call_soon_threadsafe(task.cancel)
        done.wait()
    if "error" in box:
        raise box["error"]
    return box["result"]


class TqdmProgress:
    """A :class:`Progress` callback that draws one tqdm bar per receiver.

    ``tqdm.auto`` chooses the bars: ipywidgets in a Jupyter kernel (live in JupyterLab; a
    notebook run headless by papermill keeps one output per bar and the bars' last state,
    not a line per update), text on stderr in a terminal. Each bar counts samples up to the
    receiver's expected number and never past it; its text says the receiver's state. Updates
    while samples stream are drawn at most every ``interval_s``; a change of state always.

    This is what :func:`heimdall_lab.pipeline.capture` draws with ``progress=True``.

    Parameters
    ----------
    receivers : sequence of str, optional
        Receiver names to show bars for from the start (in this order); others get theirs
        when they first report.
    interval_s : float, default 0.2
        Least time between two redraws of a receiver's bar while it receives.
    **tqdm_kwargs
        Passed to each ``tqdm`` bar. ``disable`` is None by default: text bars only on a
        terminal (none when stderr is a file or a pipe); widgets always.
    """

    def __init__(
        self, receivers: Sequence[str] = (), interval_s: float = 0.2, **tqdm_kwargs: object
    ) -> None:
        self._kwargs = {"disable": None, **tqdm_kwargs}
        self._interval = interval_s
        self._bars: dict[str, Any] = {}
        self._last: dict[str, tuple[float, str, int]] = {}
        self._lock = threading.Lock()  # reports come from the acquisition's thread
        for name in receivers:
            self._bar(name)

    def _bar(self, name: str) -> Any:
        if name not in self._bars:
            from tqdm.auto import tqdm

            self._bars[name] = tqdm(
                total=None,
                desc=name,
                unit="sa",
                position=len(self._bars),
                leave=True,
                **self._kwargs,
            )
            self._last[name] = (0.0, "", 0)
        return self._bars[name]

    def __call__(self, p: Progress) -> None:
        """Update the receiver's bar.

        Parameters
        ----------
        p : Progress
            The report.
        """
        with self._lock:
            bar = self._bar(p.receiver)
            now = time.monotonic()
            last, state, attempt = self._last[p.receiver]
            if (p.state, p.attempt) == (state, attempt) and now - last < self._interval:
                return
            self._last[p.receiver] = (now, p.state, p.attempt)
            total = max(p.expected, 1)
            if bar.total != total or p.attempt != attempt:
                bar.reset(total=total)  # a new length (a notebook bar takes it only so)
            bar.n = min(p.received, total)
            postfix = p.state if p.attempt <= 1 else f"{p.state} (attempt {p.attempt})"
            bar.set_postfix_str(postfix, refresh=False)
            bar.refresh()

    def close(self) -> None:
        """Close every bar (a notebook bar turns green when complete, red when not)."""
        with self._lock:
            for bar in self._bars.values():
                bar.close()
