"""The one exception hierarchy of heimdall_lab.

Every error the package raises on purpose is a :class:`HeimdallError`. Each message says
what went wrong and what to do about it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class HeimdallError(Exception):
    """Base class of every error raised by heimdall_lab."""


class ValidationError(HeimdallError, ValueError):
    """Bad input, rejected before any network or disk work."""


class ReceiverError(HeimdallError):
    """A receiver could not deliver what was asked of it.

    Parameters
    ----------
    message : str
        What happened and what to do about it.
    receiver : str, optional
        Name of the receiver concerned.
    """

    #: Whether trying again later can succeed (refused, reset, too busy, timeout).
    retryable: bool = False
    #: Short machine-readable reason, kept in status tables and the database.
    reason: str = "error"

    def __init__(self, message: str, receiver: str | None = None) -> None:
        super().__init__(message)
        self.receiver = receiver


class ReceiverUnreachableError(ReceiverError):
    """The connection was refused or reset, or the host could not be reached."""

    retryable = True
    reason = "unreachable"


class ReceiverTimeoutError(ReceiverError):
    """The receiver did not answer or stopped sending within the allowed time."""

    retryable = True
    reason = "timeout"


class TooBusyError(ReceiverError):
    """All of the receiver's client slots are taken."""

    retryable = True
    reason = "too_busy"


class BadPasswordError(ReceiverError):
    """The receiver refused the password; retrying cannot help."""

    reason = "bad_password"


class ReceiverDownError(ReceiverError):
    """The receiver says it is down (for maintenance or an update)."""

    retryable = True
    reason = "down"


class RedirectError(ReceiverError):
    """The receiver is full and names another server to go to instead (``MSG redirect``).

    The redirect is never followed: the other server is not the receiver asked for (its
    position, clock and antenna differ). The target is kept as shown in messages (printable
    and short), never as a URL to connect to.

    Parameters
    ----------
    message : str
        What happened and what to do about it.
    receiver : str, optional
        Name of the receiver concerned.
    target : str, optional
        Where the receiver pointed, as shown (``protocol.shown``).
    """

    reason = "redirect"

    def __init__(self, message: str, receiver: str | None = None, target: str = "") -> None:
        super().__init__(message, receiver)
        self.target = target


class RefusedError(ReceiverError):
    """The receiver's administrator does not admit this connection (``MSG badp=N``).

    For example ``badp=5``: no multiple connections from the same IP address. Retrying within
    the same capture cannot help.

    Parameters
    ----------
    message : str
        What happened and what to do about it.
    receiver : str, optional
        Name of the receiver concerned.
    code : str, optional
        The server's code (the ``badp`` value), as shown.
    """

    reason = "refused"

    def __init__(self, message: str, receiver: str | None = None, code: str = "") -> None:
        super().__init__(message, receiver)
        self.code = code


class TimeLimitError(ReceiverError):
    """The receiver ended or refused the session: this address used up its connection time.

    A KiwiSDR may limit the minutes one IP address is connected per day (``MSG ip_limit``);
    connecting again before the limit resets is refused.
    """

    reason = "time_limit"


class InactivityError(ReceiverError):
    """The receiver ended the session for inactivity (``MSG inactivity_timeout``)."""

    reason = "inactivity"


class CoolingDownError(ReceiverError):
    """The receiver's host refused recently and is left alone for a while; nothing connected.

    Parameters
    ----------
    message : str
        What happened and what to do about it.
    receiver : str, optional
        Name of the receiver concerned.
    remaining_s : float, optional
        Seconds until the host is tried again.
    """

    reason = "cooling_down"

    def __init__(self, message: str, receiver: str | None = None, remaining_s: float = 0.0):
        super().__init__(message, receiver)
        self.remaining_s = remaining_s


class TLSError(ReceiverError):
    """The receiver's TLS certificate is not trusted (or TLS failed); retrying cannot help."""

    reason = "tls"


class ProtocolError(ReceiverError):
    """The receiver sent something that is not valid KiwiSDR protocol."""

    reason = "protocol_error"


class DisconnectedError(ReceiverError):
    """The receiver closed the stream before the requested duration was received."""

    retryable = True
    reason = "disconnected"


class FileFormatError(HeimdallError, ValueError):
    """A file is not in the format it claims to be (for example a kiwi IQ WAV)."""


class DatabaseError(HeimdallError):
    """The database could not be reached, migrated or written to as asked.

    Raised for a server that refuses the connection, an embedded PostgreSQL that cannot be
    started, a migration that fails or was edited after it was applied, and a bulk write
    the server rejects. The message names the database by its URL with the password masked.

    Parameters
    ----------
    message : str
        What happened and what to do about it.
    retryable : bool, optional
        Whether the connection failed or was lost (trying again can help), as opposed to
        the server rejecting what was sent.
    """

    def __init__(self, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class StorageError(HeimdallError):
    """The IQ store could not be reached, written or read.

    Raised when the store stays unreachable after retries, is full (disk or quota), denies
    access, or holds no complete copy of the capture asked for. The message names the store
    URL (never credentials) and says what to do.

    Parameters
    ----------
    message : str
        What happened and what to do about it.
    url : str, optional
        The store or capture URL concerned, without credentials.
    """

    def __init__(self, message: str, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url


class LocalizationError(HeimdallError):
    """A transmitter could not be located from what was given.

    Raised when fewer than three receivers have usable GNSS timestamps, when their captures
    do not overlap in time, or when too few receiver pairs correlate to fix a position. The
    message is one short line naming the cause; the details are attributes.

    Parameters
    ----------
    message : str
        What went wrong, on one line.
    pairs : sequence, optional
        The receiver pairs correlated (``PairDelay``), each rejected one with its ``reason``;
        ``heimdall_lab.ui.localization_plot.pairs_frame`` makes a table of them.
    receivers : sequence, optional
        Every receiver's timing (``ReceiverTiming``), used or not and why.
    """

    def __init__(
        self,
        message: str,
        pairs: Sequence[Any] | None = None,
        receivers: Sequence[Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.pairs = list(pairs or [])
        self.receivers = list(receivers or [])


def first_line(err: BaseException) -> str:
    """The first line of an error's message (of the driver's error, where one is wrapped).

    Parameters
    ----------
    err : BaseException
        Any exception; SQLAlchemy's wrap the driver's in ``orig``.

    Returns
    -------
    str
        One line for a message, or the type's name when the message is empty.
    """
    orig = getattr(err, "orig", None) or err
    text = str(orig).strip()
    return text.splitlines()[0] if text else type(orig).__name__
