"""Manners on other people's receivers.

Who this client says it is, how many connections it holds at once, and what this process
remembers of each host that said no. The public KiwiSDRs belong to other people, who share
a few channels with everyone. So:

- The client names itself (``SET ident_user``): :func:`default_ident`, ``heimdall_lab/<version>``
  unless ``HEIMDALL_IDENT`` says otherwise.
- A process holds at most :data:`DEFAULT_MAX_CONNECTIONS` connections at once, whatever the
  number of captures running (``HEIMDALL_MAX_CONNECTIONS``); see :class:`ConnectionSlots`.
- Failed attempts back off per host, jittered and bounded, and every receiver at the host
  shares the wait; a host that refused twice in a row (``too_busy``, ``redirect``, ``refused``,
  ``down``; a ``time_limit`` at once) is left alone for a cool-down, across captures: a capture
  then reports it as ``cooling_down`` without connecting. See :class:`HostManners`.

Receivers on this machine (loopback addresses: the emulator) are your own: by default they are
neither remembered nor counted against the process's limit, each port is a receiver of its own,
and every capture starts afresh with them. ``HostManners(loopback=True)`` treats them as
anyone's, for tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import math
import os
import random
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace

from heimdall_lab.errors import ValidationError
from heimdall_lab.receivers import Receiver
from heimdall_lab.retry import RetryPolicy
from heimdall_lab.versions import __version__

#: The name this client gives itself in a receiver's user list, unless told otherwise.
DEFAULT_IDENT = f"heimdall_lab/{__version__}"
#: Environment variable that overrides :data:`DEFAULT_IDENT`.
IDENT_ENV = "HEIMDALL_IDENT"
#: Longest identity sent (a KiwiSDR shows it in its user list).
IDENT_MAX_CHARS = 64

#: Connections a process holds at once to other people's receivers, unless told otherwise.
DEFAULT_MAX_CONNECTIONS = 32
#: Environment variable that overrides :data:`DEFAULT_MAX_CONNECTIONS`.
MAX_CONNECTIONS_ENV = "HEIMDALL_MAX_CONNECTIONS"

#: Seconds a host that refused is left alone.
COOL_DOWN_S = 600.0
#: Refusals in a row that start the cool-down.
REFUSALS_BEFORE_COOL_DOWN = 2
#: Reasons that count as the host refusing (each failure that is not one of these, and has
#: no samples, only backs off).
REFUSAL_REASONS = frozenset({"too_busy", "redirect", "refused", "down", "time_limit"})
#: Refusals that start the cool-down at once: the address's connection time is used up, and
#: asking again before it resets is refused again.
IMMEDIATE_COOL_DOWN = frozenset({"time_limit"})


def check_ident(ident: object, what: str = "ident") -> str:
    """Check the identity sent to receivers.

    Parameters
    ----------
    ident : str
        The name shown in a receiver's user list.
    what : str, default "ident"
        What it is, for the message.

    Returns
    -------
    str
        The identity, stripped.

    Raises
    ------
    ValidationError
        If it is empty, longer than :data:`IDENT_MAX_CHARS` or has non-printable characters.
    """
    text = ident.strip() if isinstance(ident, str) else ""
    if not text or len(text) > IDENT_MAX_CHARS or not text.isprintable():
        raise ValidationError(
            f"{what} {str(ident)[:IDENT_MAX_CHARS]!r} is not a name a receiver can show; give "
            f"1-{IDENT_MAX_CHARS} printable characters, e.g. 'heimdall_lab/alice'"
        )
    return text


def default_ident() -> str:
    """The identity sent to receivers when none is given.

    Returns
    -------
    str
        ``HEIMDALL_IDENT`` when set, else :data:`DEFAULT_IDENT` (``heimdall_lab/<version>``).

    Raises
    ------
    ValidationError
        If ``HEIMDALL_IDENT`` is set to something a receiver cannot show.
    """
    value = os.environ.get(IDENT_ENV)
    if value is None or not value.strip():
        return DEFAULT_IDENT
    return check_ident(value, IDENT_ENV)


def check_max_connections(value: object, what: str = "max_connections") -> int:
    """Check a limit of connections at once.

    Parameters
    ----------
    value : int
        The limit.
    what : str, default "max_connections"
        What it is, for the message.

    Returns
    -------
    int
        The limit.

    Raises
    ------
    ValidationError
        If it is not a whole number from 1.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError(f"{what} must be a whole number >= 1, got {str(value)[:20]!r}")
    return value


def max_connections_from_env() -> int:
    """The process's limit of connections at once.

    Returns
    -------
    int
        ``HEIMDALL_MAX_CONNECTIONS`` when set, else :data:`DEFAULT_MAX_CONNECTIONS`.

    Raises
    ------
    ValidationError
        If ``HEIMDALL_MAX_CONNECTIONS`` is not a whole number from 1.
    """
    raw = os.environ.get(MAX_CONNECTIONS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_CONNECTIONS
    try:
        value: object = int(raw)
    except ValueError:
        value = raw
    return check_max_connections(value, MAX_CONNECTIONS_ENV)


def is_loopback(host: str) -> bool:
    """Whether a host is this machine (``localhost``, 127.0.0.0/8, ``::1``).

    Parameters
    ----------
    host : str
        Host name or IP address.

    Returns
    -------
    bool
        True for a loopback address.
    """
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_key(receiver: Receiver) -> str:
    """The host a receiver is at, as :class:`HostManners` keys it.

    Every receiver at a host shares its backoff and cool-down. On loopback (the emulator
    serves every receiver from one address) the port tells receivers apart.

    Parameters
    ----------
    receiver : Receiver
        The receiver.

    Returns
    -------
    str
        The host name in lower case, or ``host:port`` on loopback.
    """
    host = receiver.host.lower()
    return f"{host}:{receiver.port}" if is_loopback(host) else host


@dataclass
class _Waiter:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]
    granted: bool = False


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class ConnectionSlots:
    """A limit of connections at once, shared by every event loop and thread of the process.

    An ``asyncio.Semaphore`` belongs to one event loop; captures run on several (``acquire()``
    runs its own loop, in a worker thread inside Jupyter), so this one hands slots over
    between loops, first come first served.

    Parameters
    ----------
    limit : int
        Connections at once.

    Attributes
    ----------
    peak : int
        The most slots held at once so far.
    """

    def __init__(self, limit: int) -> None:
        self._lock = threading.Lock()
        self._limit = check_max_connections(limit)
        self._in_use = 0
        self._waiters: deque[_Waiter] = deque()
        self.peak = 0

    @property
    def limit(self) -> int:
        """Connections at once; raising it lets waiting connections go at once."""
        return self._limit

    @limit.setter
    def limit(self, value: int) -> None:
        with self._lock:
            self._limit = check_max_connections(value)
            self._grant()

    @property
    def in_use(self) -> int:
        """Slots held now."""
        return self._in_use

    @property
    def waiting(self) -> int:
        """Connections waiting for a slot now."""
        return len(self._waiters)

    def _take(self) -> None:
        self._in_use += 1
        self.peak = max(self.peak, self._in_use)

    def _grant(self) -> None:
        """Hand free slots to the first waiters (with the lock held)."""
        while self._waiters and self._in_use < self._limit:
            waiter = self._waiters.popleft()
            try:
                waiter.loop.call_soon_threadsafe(_wake, waiter.future)
            except RuntimeError:  # its loop is closed: nobody waits there any more
                continue
            waiter.granted = True
            self._take()

    async def acquire(self) -> None:
        """Wait for a slot and take it (cancellable: a cancelled wait takes nothing)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._in_use < self._limit and not self._waiters:
                self._take()
                return
            waiter = _Waiter(loop, loop.create_future())
            self._waiters.append(waiter)
        try:
            await waiter.future
        except BaseException:
            with self._lock:
                granted = waiter.granted
                if not granted:
                    with contextlib.suppress(ValueError):
                        self._waiters.remove(waiter)
            if granted:  # handed a slot just as the wait was cancelled: give it on
                self.release()
            raise

    def release(self) -> None:
        """Give a slot back."""
        with self._lock:
            self._in_use = max(self._in_use - 1, 0)
            self._grant()

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """Hold a slot for the ``async with`` block.

        Yields
        ------
        None
            Once a slot is held.
        """
        await self.acquire()
        try:
            yield
        finally:
            self.release()


@dataclass
class HostRecord:
    """What a process remembers of one host.

    Attributes
    ----------
    key : str
        The host (:func:`host_key`).
    refusals : int
        Refusals in a row (:data:`REFUSAL_REASONS`); a session admitted resets it.
    failures : int
        Failed attempts in a row, refusals included, for the backoff.
    not_before : float
        Clock time before which no receiver at the host is connected (the backoff).
    cool_until : float
        Clock time until which the host is left alone (the cool-down).
    last_reason : str
        The reason of the last refusal.
    remembered : bool
        Whether the record is the process's (shared by receivers and captures) or one
        capture's for one receiver only (loopback, by default).
    """

    key: str
    refusals: int = 0
    failures: int = 0
    not_before: float = -math.inf
    cool_until: float = -math.inf
    last_reason: str = ""
    remembered: bool = True


class HostManners:
    """The process's memory of hosts: shared backoff, cool-downs and the connection limit.

    Parameters
    ----------
    cooldown_s : float, default :data:`COOL_DOWN_S`
        Seconds a host that refused is left alone.
    refusals : int, default :data:`REFUSALS_BEFORE_COOL_DOWN`
        Refusals in a row that start the cool-down.
    max_connections : int, optional
        Connections at once to hosts it remembers; ``HEIMDALL_MAX_CONNECTIONS`` or
        :data:`DEFAULT_MAX_CONNECTIONS` (read at each connection) when omitted.
    loopback : bool, default False
        Treat receivers on this machine as anyone's: remember them (each port a host of its
        own) and count them against the limit.
    key : callable, optional
        ``key(receiver)`` names the host a receiver is at; :func:`host_key` by default.
    clock : callable, optional
        Monotonic seconds; ``time.monotonic`` by default (tests pass a fake one).
    rng : random.Random, optional
        Source of the backoff jitter.
    """

    def __init__(
        self,
        *,
        cooldown_s: float = COOL_DOWN_S,
        refusals: int = REFUSALS_BEFORE_COOL_DOWN,
        max_connections: int | None = None,
        loopback: bool = False,
        key: Callable[[Receiver], str] = host_key,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if not (math.isfinite(cooldown_s) and cooldown_s >= 0):
            raise ValidationError(f"cooldown_s must be >= 0 seconds, got {cooldown_s!r}")
        self.cooldown_s = float(cooldown_s)
        self.refusals = check_max_connections(refusals, "refusals")
        self._max_connections = (
            None if max_connections is None else check_max_connections(max_connections)
        )
        self.loopback = loopback
        self.key = key
        self.clock = clock
        self.rng = rng or random.Random()
        self._lock = threading.Lock()
        self._hosts: dict[str, HostRecord] = {}
        self.slots = ConnectionSlots(self._max_connections or DEFAULT_MAX_CONNECTIONS)

    @property
    def max_connections(self) -> int:
        """Connections at once to the hosts it remembers (given, or from the environment)."""
        return self._max_connections or max_connections_from_env()

    def remembers(self, receiver: Receiver) -> bool:
        """Whether a receiver's host is remembered and counted against the limit.

        Parameters
        ----------
        receiver : Receiver
            The receiver.

        Returns
        -------
        bool
            False for a receiver on this machine unless ``loopback`` is set.
        """
        return self.loopback or not is_loopback(receiver.host)

    def record(self, receiver: Receiver) -> HostRecord:
        """The record of a receiver's host, to pass to the other methods.

        Parameters
        ----------
        receiver : Receiver
            The receiver.

        Returns
        -------
        HostRecord
            The process's record of its host (shared); for a receiver not remembered, a
            fresh one the caller keeps for one capture.
        """
        key = self.key(receiver)
        if not self.remembers(receiver):
            return HostRecord(key, remembered=False)
        with self._lock:
            return self._hosts.setdefault(key, HostRecord(key))

    def cooling_left(self, record: HostRecord) -> float:
        """Seconds the host is still left alone (0: it may be connected).

        Parameters
        ----------
        record : HostRecord
            From :meth:`record`.

        Returns
        -------
        float
            Seconds of cool-down left.
        """
        return max(record.cool_until - self.clock(), 0.0)

    def wait_left(self, record: HostRecord) -> float:
        """Seconds to wait before connecting to the host (its backoff).

        Parameters
        ----------
        record : HostRecord
            From :meth:`record`.

        Returns
        -------
        float
            Seconds of backoff left.
        """
        return max(record.not_before - self.clock(), 0.0)

    def failed(self, record: HostRecord, policy: RetryPolicy, *, admitted: bool = False) -> None:
        """Note an attempt that failed without samples: the host's backoff grows.

        Parameters
        ----------
        record : HostRecord
            From :meth:`record`.
        policy : RetryPolicy
            The waits (:meth:`RetryPolicy.wait_s`, jittered, at most its maximum).
        admitted : bool, default False
            Whether the host admitted the session (then stalled or closed): it did not
            refuse, so its refusals in a row end.
        """
        with self._lock:
            if admitted:
                record.refusals = 0
            record.failures += 1
            wait = policy.wait_s(record.failures, self.rng)
            record.not_before = max(record.not_before, self.clock() + wait)

    def refused(self, record: HostRecord, reason: str, policy: RetryPolicy) -> bool:
        """Note a refusal: it backs off as a failure, and may start the cool-down.

        Parameters
        ----------
        record : HostRecord
            From :meth:`record`.
        reason : str
            The refusal's reason (:data:`REFUSAL_REASONS`).
        policy : RetryPolicy
            The waits.

        Returns
        -------
        bool
            Whether the host is now left alone (for a remembered host only).
        """
        self.failed(record, policy)
        with self._lock:
            record.refusals += 1
            record.last_reason = reason
            cool = reason in IMMEDIATE_COOL_DOWN or record.refusals >= self.refusals
            if cool and record.remembered:
                record.cool_until = max(record.cool_until, self.clock() + self.cooldown_s)
                return True
        return False

    def served(self, record: HostRecord) -> None:
        """Note a session the host admitted: its refusals, backoff and cool-down end.

        Parameters
        ----------
        record : HostRecord
            From :meth:`record`.
        """
        with self._lock:
            record.refusals = record.failures = 0
            record.not_before = record.cool_until = -math.inf
            record.last_reason = ""

    @contextlib.asynccontextmanager
    async def slot(self, receiver: Receiver) -> AsyncIterator[None]:
        """Hold one of the process's connection slots (for a receiver it remembers).

        Parameters
        ----------
        receiver : Receiver
            The receiver about to be connected.

        Yields
        ------
        None
            Once connecting is allowed.
        """
        if not self.remembers(receiver):
            yield
            return
        limit = self.max_connections
        if self.slots.limit != limit:
            self.slots.limit = limit
        async with self.slots.hold():
            yield

    def forget(self, host: str | None = None) -> None:
        """Forget refusals, backoffs and cool-downs: of every host, or of one.

        Parameters
        ----------
        host : str, optional
            A host name or address (every port of it, on loopback); every host when omitted.
        """
        with self._lock:
            if host is None:
                self._hosts.clear()
                return
            host = host.lower()
            for key in [k for k in self._hosts if k == host or k.startswith(f"{host}:")]:
                del self._hosts[key]

    def hosts(self) -> dict[str, HostRecord]:
        """A copy of what is remembered, by host.

        Returns
        -------
        dict of str to HostRecord
            Copies of the records (changing them changes nothing).
        """
        with self._lock:
            return {k: replace(v) for k, v in self._hosts.items()}


#: The process's manners, used by :func:`heimdall_lab.kiwi.acquire.acquire` unless it is
#: given others.
MANNERS = HostManners()


def forget(host: str | None = None) -> None:
    """Forget the process's refusals and cool-downs, so the next capture tries at once.

    Parameters
    ----------
    host : str, optional
        A host name or address; every host when omitted.
    """
    MANNERS.forget(host)


__all__ = [
    "COOL_DOWN_S",
    "DEFAULT_IDENT",
    "DEFAULT_MAX_CONNECTIONS",
    "IDENT_ENV",
    "MANNERS",
    "MAX_CONNECTIONS_ENV",
    "REFUSAL_REASONS",
    "ConnectionSlots",
    "HostManners",
    "HostRecord",
    "check_ident",
    "default_ident",
    "forget",
    "host_key",
    "is_loopback",
    "max_connections_from_env",
]
