"""Async KiwiSDR client: one IQ stream from one receiver, and its health check.

The client speaks the receiver's own protocol (see :mod:`heimdall_lab.kiwi.protocol`) over a real
WebSocket. It is the same code for a public KiwiSDR and for the local emulator. A refusal
becomes a typed :class:`~heimdall_lab.errors.ReceiverError`, never a hang: every wait has a
timeout. Frames received before a failure stay in :attr:`KiwiClient.frames`, or went to the
caller's frame sink (``on_frame``) as they arrived.

One connection can also hop: dwell on a list of frequencies in turn, retuning the open
channel between dwells (``hops``); :func:`retune_gap_s` tells from the frames' GNSS times how
long each retune left unrecorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import math
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx
import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from heimdall_lab.errors import (
    BadPasswordError,
    DisconnectedError,
    InactivityError,
    ProtocolError,
    ReceiverDownError,
    ReceiverError,
    ReceiverTimeoutError,
    ReceiverUnreachableError,
    RedirectError,
    RefusedError,
    TimeLimitError,
    TLSError,
    TooBusyError,
    ValidationError,
)
from heimdall_lab.gnss import WEEK_SECONDS
from heimdall_lab.kiwi import protocol
from heimdall_lab.kiwi.guest import check_ident, default_ident
from heimdall_lab.kiwi.protocol import IqFrame
from heimdall_lab.receivers import Receiver, validate_capture_request
from heimdall_lab.recording import FRAME_SAMPLES, NOMINAL_RATE, Recording
from heimdall_lab.values import NS_PER_S
from heimdall_lab.versions import __version__

log = logging.getLogger(__name__)
_WS_LOG = protocol.websocket_logger(f"{__name__}.websocket")


def recording_from_frames(frames: list[IqFrame], nominal_rate: float) -> Recording:
    """Assemble a recording from decoded frames.

    Parameters
    ----------
    frames : list of IqFrame
        Frames in arrival order.
    nominal_rate : float
        The sample rate the server announced.

    Returns
    -------
    Recording
        The assembled recording.
    """
    lengths = np.array([len(f.samples) for f in frames], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if frames else lengths
    samples = np.concatenate([f.samples for f in frames]) if frames else np.zeros(0, np.complex64)
    return Recording(
        samples=samples,
        frame_start=starts.astype(np.int64),
        seq=np.array([f.seq for f in frames], dtype=np.int64),
        last_gps_solution=np.array([f.last_gps_solution for f in frames], dtype=np.uint8),
        gpssec=np.array([f.gpssec for f in frames], dtype=np.int64),
        gpsnsec=np.array([f.gpsnsec for f in frames], dtype=np.int64),
        rssi_dbm=np.array([f.rssi_dbm for f in frames], dtype=np.float32),
        nominal_rate=float(nominal_rate),
    )


@dataclass(frozen=True)
class StreamSettings:
    """How to ask a receiver for IQ.

    Attributes
    ----------
    ident : str or None
        Name shown in the receiver's user list; :func:`heimdall_lab.kiwi.guest.default_ident`
        (``HEIMDALL_IDENT``, else ``heimdall_lab/<version>``) when None.
    low_cut, high_cut : int
        Passband edges in Hz relative to the centre (the KiwiSDR's IQ passband is at most
        about +-6 kHz).
    agc : bool
        Automatic gain; off by default so that levels are comparable between frames.
    manual_gain : int
        Gain in dB when AGC is off.
    connect_timeout : float or None
        Seconds to open the WebSocket; the receiver's own ``timeout_s`` when None.
    read_timeout : float
        Seconds without a frame (or handshake message) before giving up.
    """

    ident: str | None = None
    low_cut: int = -6000
    high_cut: int = 6000
    agc: bool = False
    manual_gain: int = 50
    connect_timeout: float | None = None
    read_timeout: float = 5.0


#: ``MSG`` parameters a client keeps (the last value of each); any other name is dropped, so
#: a server cannot grow the client's memory by announcing new names.
KEPT_MESSAGES = frozenset(
    {
        "version_maj",
        "version_min",
        "badp",
        "too_busy",
        "down",
        "redirect",
        "ip_limit",
        "inactivity_timeout",
        "audio_init",
        "audio_rate",
        "sample_rate",
        "center_freq",
        "bandwidth",
        "max_camp",
    }
)
#: Malformed frames logged one by one (at INFO: the count is in the receiver's status row);
#: the rest are counted and summed up once.
LOGGED_SKIPS = 3
#: Bytes a server may send beyond twice what the requested IQ needs.
BYTE_SLACK = 2**20
#: Bytes each message counts for at least, so that a flood of tiny messages ends as soon.
MESSAGE_COST = 256

#: The ``SND`` flag a KiwiSDR sets on the first frame it sends after its frequency (or mode)
#: changed: after the initial tuning, then after each retune (``SND_FLAG_NEW_FREQ`` in its
#: ``rx_sound.cpp``; its web client reads it to measure the retune delay).
FLAG_NEW_FREQ = 0x04
#: For a server whose frames do not carry :data:`FLAG_NEW_FREQ`: the frames read within
#: ``max(RETUNE_RTT_MARGIN * rtt, RETUNE_SETTLE_FLOOR_S)`` seconds of sending a retune are
#: taken to be at the previous frequency (``rtt`` measured in the handshake).
RETUNE_RTT_MARGIN = 3.0
RETUNE_SETTLE_FLOOR_S = 0.1
#: Bytes of frames at the previous frequency that a server may send after each retune: they
#: count outside the byte budget up to this. A paced receiver has a few frames in flight; an
#: unpaced server (the emulator with ``realtime=False``) fills the socket buffers, megabytes.
RETUNE_DROP_LIMIT_BYTES = 16 * 2**20
#: Frames a flagging server may still send at the previous frequency after a retune that are
#: kept, as the end of the previous dwell (the ones in flight for a round trip of up to about
#: 0.6 s at 12 kHz); further ones are dropped, and the gap they leave is measured.
RETUNE_KEEP_FRAMES = 16
#: ``MSG`` parameters that answer ``SET auth``: the first of them ends the round-trip timing.
_AUTH_ANSWERS = frozenset({"badp", "too_busy", "redirect", "down", "audio_init", "sample_rate"})


@dataclass(frozen=True)
class HopRecord:
    """What one dwell of a hopping stream received (:attr:`KiwiClient.hops_done`).

    Attributes
    ----------
    index : int
        The hop's position in the hop list (0 for a stream without hops).
    frequency_hz : float
        The frequency it dwelt on.
    retune_sent : float or None
        Event-loop time (``loop.time()``) at which the retune to it was sent; None for the
        first hop, and for a hop at the same frequency as the one before (nothing to send).
    first_seq : int or None
        Sequence number of its first kept frame (None: none kept).
    dropped_frames : int
        Frames received after the retune but still at the previous frequency, dropped.
    samples : int
        Samples kept: whole frames, up to one frame more than ``expected_samples``, plus
        the frames at its frequency that a flagging server sent after the retune to the next
        hop (up to :data:`RETUNE_KEEP_FRAMES`).
    expected_samples : int
        ``ceil(dwell_s * rate)`` at the announced rate.
    first_time, last_time : (int, int) or None
        GNSS time (``gpssec``, ``gpsnsec``) of its first and last kept frame.
    kept_after_retune : int
        Of its frames, those that arrived after the retune to the next hop was sent, still
        at its frequency (kept: part of ``samples``).
    """

    index: int
    frequency_hz: float
    retune_sent: float | None
    first_seq: int | None
    dropped_frames: int
    samples: int
    expected_samples: int
    first_time: tuple[int, int] | None = None
    last_time: tuple[int, int] | None = None
    kept_after_retune: int = 0

    @property
    def complete(self) -> bool:
        """Whether the dwell received all its samples."""
        return self.samples >= self.expected_samples


def retune_gap_s(
    last_time: tuple[int, int],
    next_time: tuple[int, int],
    rate: float,
    frame_samples: int = FRAME_SAMPLES,
) -> float:
    """Seconds a retune left unrecorded, from the GNSS times of the frames around it.

    ``gap = t(first frame of dwell i+1) - (t(last frame of dwell i) + frame_samples / rate)``:
    0 when the new dwell starts exactly where the old one's next frame would have; one frame
    (``512 / rate``) per frame lost to the retune. Times are GPS seconds of the week and
    nanoseconds, as frames carry them; a week rollover between the two is allowed for.

    Parameters
    ----------
    last_time : (int, int)
        ``(gpssec, gpsnsec)`` of the last frame of the earlier dwell.
    next_time : (int, int)
        ``(gpssec, gpsnsec)`` of the first frame of the next dwell.
    rate : float
        Sample rate in Hz (the announced one, or better the GNSS-derived one).
    frame_samples : int, optional
        Samples in the last frame of the earlier dwell (512 on a KiwiSDR).

    Returns
    -------
    float
        The gap in seconds (slightly negative within timestamp jitter for no gap at all).

    Raises
    ------
    ValidationError
        If ``rate`` is not a finite positive number.
    """
    if not (math.isfinite(rate) and rate > 0):
        raise ValidationError(f"rate must be a finite number > 0, got {rate!r}")
    whole = (int(next_time[0]) - int(last_time[0])) % WEEK_SECONDS
    if whole >= WEEK_SECONDS // 2:
        whole -= WEEK_SECONDS
    frac = (int(next_time[1]) - int(last_time[1])) / NS_PER_S
    return whole + frac - frame_samples / rate


@dataclass
class _Dwell:
    """The dwell being received (becomes a :class:`HopRecord`)."""

    index: int
    frequency_hz: float
    retune_sent: float | None = None
    first_seq: int | None = None
    dropped_frames: int = 0
    dropped_bytes: int = 0
    samples: int = 0
    first_time: tuple[int, int] | None = None
    last_time: tuple[int, int] | None = None
    kept_after_retune: int = 0

    def record(self, expected_samples: int) -> HopRecord:
        return HopRecord(
            self.index,
            self.frequency_hz,
            self.retune_sent,
            self.first_seq,
            self.dropped_frames,
            self.samples,
            expected_samples,
            self.first_time,
            self.last_time,
            self.kept_after_retune,
        )


def hop_plan(
    receiver: Receiver,
    frequency_hz: float | None,
    duration_s: float | None,
    hops: Sequence[tuple[float, float]] | None,
) -> tuple[tuple[float, float], ...]:
    """Check a stream's frequency and duration, or its hop list, before anything connects.

    Parameters
    ----------
    receiver : Receiver
        The receiver (its frequency range).
    frequency_hz, duration_s : float or None
        Without hops: the frequency and duration. With hops: None (taken from the hops),
        or the first hop's frequency and the sum of the dwells.
    hops : sequence of (float, float) or None
        ``(frequency_hz, dwell_s)`` pairs, in order.

    Returns
    -------
    tuple of (float, float)
        The dwells: ``((frequency_hz, duration_s),)`` without hops.

    Raises
    ------
    ValidationError
        No hop; a hop that is not a pair; a frequency the receiver cannot tune to; a dwell
        that is not a finite number > 0; dwells longer in all than a capture may be; or a
        ``frequency_hz`` / ``duration_s`` that disagrees with the hops.
    """
    if hops is None:
        validate_capture_request(frequency_hz, duration_s)  # type: ignore[arg-type]
        receiver.check_frequency(frequency_hz)  # type: ignore[arg-type]
        return ((float(frequency_hz), float(duration_s)),)  # type: ignore[arg-type]
    try:
        given = list(hops)
    except TypeError:
        raise ValidationError(
            f"hops must be a list of (frequency_hz, dwell_s) pairs, not {type(hops).__name__}"
        ) from None
    if not given:
        raise ValidationError("hops is empty; give at least one (frequency_hz, dwell_s) pair")
    plan = []
    for i, hop in enumerate(given):
        try:
            freq, dwell = hop
            freq, dwell = float(freq), float(dwell)
        except (TypeError, ValueError):
            raise ValidationError(
                f"hop {i}: {protocol.shown(hop)} is not a (frequency_hz, dwell_s) pair"
            ) from None
        if not (math.isfinite(dwell) and dwell > 0):
            raise ValidationError(f"hop {i}: dwell {dwell!r} s must be a finite number > 0")
        try:
            validate_capture_request(freq, dwell)
            receiver.check_frequency(freq)
        except ValidationError as exc:
            raise ValidationError(f"hop {i}: {exc}") from None
        plan.append((freq, dwell))
    total = math.fsum(d for _, d in plan)
    validate_capture_request(plan[0][0], total)
    if frequency_hz is not None and frequency_hz != plan[0][0]:
        raise ValidationError(
            f"frequency_hz={frequency_hz!r} differs from the first hop's {plan[0][0]:g} Hz; "
            "with hops pass None or the first hop's frequency"
        )
    if duration_s is not None and not math.isclose(duration_s, total, rel_tol=1e-9):
        raise ValidationError(
            f"duration_s={duration_s!r} differs from the dwells' sum {total:g} s; with hops "
            "pass None or that sum"
        )
    return tuple(plan)


class KiwiClient:
    """Receive ``duration_s`` seconds of IQ at ``frequency_hz`` from one receiver.

    Whatever the server sends, the client ends: every wait has a timeout that also holds
    against a server sending fast (the loop yields after each message), the memory it keeps
    is bounded (frames up to the request and :data:`RETUNE_KEEP_FRAMES` per retune, the last
    value of :data:`KEPT_MESSAGES`, counters), and a server that sends more than twice the
    requested IQ (with those frames) plus :data:`BYTE_SLACK` bytes is cut off with a
    :class:`~heimdall_lab.errors.ProtocolError` (each message counts for at least
    :data:`MESSAGE_COST` bytes). Frames dropped after a retune count apart, up to
    :data:`RETUNE_DROP_LIMIT_BYTES` per retune.

    **Streaming sink.** With ``on_frame``, each kept frame goes to ``on_frame(frame, hop)``
    as it arrives and is not kept in :attr:`frames`: memory stays bounded however long the
    stream. :meth:`recording` then holds no samples (only the stream's problems);
    :attr:`n_frames` counts the frames kept in either mode. An exception raised by the sink
    ends the stream and propagates.

    **Hopping.** With ``hops`` (``(frequency_hz, dwell_s)`` pairs), the channel is tuned to
    the first hop at setup; when dwell ``i`` has delivered ``ceil(dwell_s * rate)`` samples
    (whole 512-sample frames, at the announced rate), the client sends ``SET mod=iq ...
    freq=`` for hop ``i + 1`` on the same connection and goes on. A hop at the same frequency
    as the one before needs no retune and follows at once. The frames read after a retune
    may have left the receiver before it took effect; a frame does not carry its frequency,
    so this rule decides where the new dwell starts:

    - A KiwiSDR marks the first frame it sends after a change of frequency with
      :data:`FLAG_NEW_FREQ` (its first frame of a stream carries it too). When the first
      frame of the stream carries the flag, the first flagged frame after a retune starts
      the new dwell. The frames before it are still at the previous frequency and follow
      the previous dwell's without a break: up to :data:`RETUNE_KEEP_FRAMES` of them are
      held and, once the flagged frame confirms them (its flag byte suffices, however
      broken the rest), kept as that dwell's end (no gap at all); the rest, and held
      frames never confirmed, are dropped. A flagged frame that follows no
      retune means the server's flag tells nothing: the rule below is used from then on.
    - Otherwise the round trip ``rtt`` measured in the handshake (from sending ``SET auth``
      to the first message answering it, :attr:`rtt_s`) sets :attr:`settle_s` =
      ``max(RETUNE_RTT_MARGIN * rtt, RETUNE_SETTLE_FLOOR_S)``: frames read within
      ``settle_s`` of sending the retune are dropped. (Frames queued unread on this side
      for longer than that would be counted: keep the client's event loop free.)

    Dropped frames are counted (:attr:`HopRecord.dropped_frames`) but are no progress: a
    server that never sends the new frequency ends in a
    :class:`~heimdall_lab.errors.ReceiverTimeoutError` after ``read_timeout``, with the
    dwells received so far in :attr:`hops_done` (and in :attr:`frames` or the sink).
    Without hops the stream is one dwell, hop 0.

    Parameters
    ----------
    receiver : Receiver
        Where to connect.
    frequency_hz : float or None
        Centre frequency in Hz. With ``hops``: None or the first hop's frequency.
    duration_s : float or None
        Seconds of samples to receive. With ``hops``: None or the sum of the dwells.
    settings : StreamSettings, optional
        Passband, gain and timeouts.
    on_samples : callable, optional
        Called as ``on_samples(received, expected)`` after each kept frame (all dwells).
    ssl_context : ssl.SSLContext, optional
        For a receiver reached over TLS (``Receiver.tls``): the certificates to trust; the
        system's trust store by default.
    on_frame : callable, optional
        The frame sink: called as ``on_frame(frame, hop_index)`` for each kept frame, which
        is then not kept in :attr:`frames`.
    hops : sequence of (float, float), optional
        ``(frequency_hz, dwell_s)`` pairs to dwell on in turn; at least one, each frequency
        one the receiver can tune to, each dwell > 0.

    Raises
    ------
    ValidationError
        A bad frequency, duration, hop list or identity, before anything connects.

    Attributes
    ----------
    frames : list of IqFrame
        Frames received so far (kept when the stream fails); always empty with ``on_frame``.
    hops : tuple of (float, float)
        The dwells, ``((frequency_hz, duration_s),)`` without hops.
    hops_done : list of HopRecord
        One record per dwell received, in order; after a failure the last one may be
        incomplete (:attr:`HopRecord.complete`).
    rtt_s : float or None
        Round trip measured in the handshake, seconds.
    nominal_rate : float or None
        Sample rate the server announced first.
    skipped : int
        Malformed frames skipped.
    messages : dict of str to str
        The last value of each :data:`KEPT_MESSAGES` parameter the server sent.
    bytes_received : int
        Bytes of every message received (each counted as at least :data:`MESSAGE_COST`).
    dropped_bytes : int
        Bytes of the frames dropped after retunes (part of ``bytes_received``).
    first_frame_utc : numpy.datetime64 or None
        This computer's UTC clock when the first frame arrived.
    ident : str
        The name sent to the receiver (``SET ident_user``).
    admitted : bool
        Whether the receiver admitted the session (``badp=0``, or the channel set up).
    """

    def __init__(
        self,
        receiver: Receiver,
        frequency_hz: float,
        duration_s: float,
        settings: StreamSettings | None = None,
        on_samples: Callable[[int, int], None] | None = None,
        *,
        ssl_context: ssl.SSLContext | None = None,
        on_frame: Callable[[IqFrame, int], None] | None = None,
        hops: Sequence[tuple[float, float]] | None = None,
    ) -> None:
        self.hops = hop_plan(receiver, frequency_hz, duration_s, hops)
        self.receiver = receiver
        self.frequency_hz = self.hops[0][0]
        self.duration_s = math.fsum(d for _, d in self.hops) if hops is not None else duration_s
        self.settings = settings or StreamSettings()
        self.ident = (
            check_ident(self.settings.ident) if self.settings.ident is not None else default_ident()
        )
        self.ssl_context = ssl_context
        self.admitted = False
        self.on_samples = on_samples
        self.on_frame = on_frame
        self.frames: list[IqFrame] = []
        self.hops_done: list[HopRecord] = []
        self.rtt_s: float | None = None
        self.nominal_rate: float | None = None
        self.skipped = 0
        self.messages: dict[str, str] = {}
        self.bytes_received = 0
        self.first_frame_utc: np.datetime64 | None = None
        self._stream_problems: list[str] = []
        self._received = 0
        self._audio_rate: int | None = None
        self._peer_closed = False
        self._setup_sent = False
        self._last_keepalive = -math.inf
        self._progress_at = 0.0
        self._n_frames = 0
        self.dropped_bytes = 0
        self._dwell: _Dwell | None = _Dwell(0, self.hops[0][0])
        self._ending: _Dwell | None = None  # the dwell before a retune, until the new frequency
        self._held: list[IqFrame] = []  # frames after a retune, until the flag says whose
        self._awaiting_retune = False
        self._flags_retunes: bool | None = None  # decided by the stream's first frame
        self._auth_sent_at: float | None = None

    @property
    def uri(self) -> str:
        """The sound channel's WebSocket address (``wss://`` for a receiver over TLS)."""
        scheme = "wss" if self.receiver.tls else "ws"
        return f"{scheme}://{self.receiver.host}:{self.receiver.port}/{int(time.time())}/SND"

    def dwell_samples(self, index: int) -> int:
        """Samples dwell ``index`` is to receive: its dwell times the announced rate.

        Parameters
        ----------
        index : int
            The hop's index.

        Returns
        -------
        int
            ``ceil(dwell_s * rate)``, at the announced (or else the nominal) rate.
        """
        return math.ceil(self.hops[index][1] * (self.nominal_rate or NOMINAL_RATE))

    @property
    def expected_samples(self) -> int:
        """Samples to receive: the sum over the dwells of dwell times the announced rate."""
        return sum(self.dwell_samples(i) for i in range(len(self.hops)))

    @property
    def byte_budget(self) -> int:
        """Bytes the server may send: twice the requested IQ frames, plus :data:`BYTE_SLACK`.

        With room for the :data:`RETUNE_KEEP_FRAMES` frames each retune may add to the dwell
        before it. Frames dropped after a retune are not counted here (see
        :data:`RETUNE_DROP_LIMIT_BYTES`).
        """
        frames = sum(
            math.ceil(self.dwell_samples(i) / FRAME_SAMPLES) for i in range(len(self.hops))
        )
        frames += (len(self.hops) - 1) * RETUNE_KEEP_FRAMES
        return 2 * frames * protocol.IQ_FRAME_BYTES + BYTE_SLACK

    @property
    def received_samples(self) -> int:
        """Samples received (and kept) so far."""
        return self._received

    @property
    def n_frames(self) -> int:
        """Frames kept so far, whether in :attr:`frames` or given to the sink."""
        return self._n_frames

    @property
    def settle_s(self) -> float:
        """Seconds after a retune whose frames are dropped, for a server that flags none."""
        return max(RETUNE_RTT_MARGIN * (self.rtt_s or 0.0), RETUNE_SETTLE_FLOOR_S)

    def retune_gaps_s(self) -> list[float]:
        """Seconds each retune left unrecorded, from the dwells' GNSS times.

        Returns
        -------
        list of float
            :func:`retune_gap_s` between each dwell in :attr:`hops_done` and the next (at
            the announced rate); NaN where either kept no frame.
        """
        rate = self.nominal_rate or NOMINAL_RATE
        gaps = []
        for before, after in itertools.pairwise(self.hops_done):
            if before.last_time is None or after.first_time is None:
                gaps.append(math.nan)
            else:
                gaps.append(retune_gap_s(before.last_time, after.first_time, rate))
        return gaps

    def recording(self, live: bool = True) -> Recording:
        """What has been received so far, as a :class:`Recording`.

        Parameters
        ----------
        live : bool, default True
            Whether the receiver streams what it hears now: its GNSS time is then checked
            against this computer's clock (:attr:`Recording.arrival_utc`). False for a
            receiver replaying another day.

        Returns
        -------
        Recording
            Samples and per-frame timestamps, with any timing problem the stream showed
            (:attr:`Recording.stream_problems`): every dwell's frames in order (split them
            by :attr:`HopRecord.samples`). Empty (no frames) with a frame sink
            (``on_frame``), which received the frames instead.
        """
        rec = recording_from_frames(self.frames, self.nominal_rate or NOMINAL_RATE)
        rec.stream_problems = tuple(self._stream_problems)
        rec.arrival_utc = self.first_frame_utc if live else None
        return rec

    async def run(self) -> Recording:
        """Connect, set up the channel and receive until the duration is complete.

        Returns
        -------
        Recording
            The complete recording (no samples with a frame sink: see :meth:`recording`).

        Raises
        ------
        ReceiverUnreachableError
            The connection was refused or reset.
        ReceiverTimeoutError
            No connection, handshake step or frame within the timeouts (after a retune: no
            frame at the new frequency).
        BadPasswordError, TooBusyError, ReceiverDownError, RedirectError, RefusedError
            The receiver said no.
        TimeLimitError, InactivityError
            The receiver ended (or refused) the session for its time or inactivity limit;
            :attr:`frames` holds what arrived.
        TLSError
            The receiver's certificate is not trusted (pass ``ssl_context``).
        ProtocolError
            The peer does not speak the KiwiSDR protocol, announced an impossible value, or
            sent far more than was asked.
        DisconnectedError
            The stream ended early; :attr:`frames` holds what arrived.
        """
        name = self.receiver.name
        ws = await self._connect()
        self._progress_at = asyncio.get_running_loop().time()
        try:
            await self._send(ws, protocol.cmd_auth(self.receiver.password))
            self._auth_sent_at = asyncio.get_running_loop().time()
            while self._dwell is not None or not self._setup_sent:
                message = await self._recv(ws)
                self.bytes_received += max(len(message), MESSAGE_COST)
                await self._dispatch(ws, message)
                if self.bytes_received - self.dropped_bytes > self.byte_budget:
                    raise ProtocolError(
                        f"{name}: sent {self.bytes_received:,} bytes for "
                        f"{self._received:,} samples, far more than {self.duration_s:g} s of IQ "
                        "needs; stopped reading",
                        name,
                    )
                if self._setup_sent:
                    await self._next_dwell(ws)
                # However fast the server sends, timeouts and the other receivers get to run.
                await asyncio.sleep(0)
        except ProtocolError as exc:
            if exc.receiver is None:  # raised by the protocol module, which knows no names
                raise ProtocolError(f"{name}: {exc}", name) from exc
            raise
        finally:
            held, self._held = self._held, []
            if held and self._dwell is not None:  # never confirmed by the new frequency
                self._dwell.dropped_frames += len(held)
            self._end_previous_dwell()
            dwell = self._dwell
            if dwell is not None and (dwell.samples or dwell.dropped_frames or dwell.index):
                self.hops_done.append(dwell.record(self.dwell_samples(dwell.index)))
            self._dwell = None
            await _close(ws)
            if self.skipped > LOGGED_SKIPS:
                log.info("%s: %d malformed frames skipped in all", name, self.skipped)
        return self.recording()

    async def _next_dwell(self, ws: ClientConnection) -> None:
        """Once the current dwell is complete, record it and retune to the next hop."""
        dwell = self._dwell
        if dwell is None or dwell.samples < self.dwell_samples(dwell.index):
            return
        index = dwell.index + 1
        if index == len(self.hops):
            self.hops_done.append(dwell.record(self.dwell_samples(dwell.index)))
            self._dwell = None
            return
        freq = self.hops[index][0]
        s = self.settings
        command = protocol.cmd_mod(freq, s.low_cut, s.high_cut)
        if command == protocol.cmd_mod(dwell.frequency_hz, s.low_cut, s.high_cut):
            self.hops_done.append(dwell.record(self.dwell_samples(dwell.index)))
            self._dwell = _Dwell(index, freq)  # the same tuning: nothing to wait for
            return
        self._ending = dwell  # recorded once the new frequency starts
        self._dwell = _Dwell(index, freq, retune_sent=asyncio.get_running_loop().time())
        self._awaiting_retune = True
        await self._send(ws, command)
        log.debug("%s: retuned to %.3f kHz (hop %d)", self.receiver.name, freq / 1e3, index)

    def _end_previous_dwell(self) -> None:
        """Record the dwell before the last retune (once the new frequency started)."""
        ending, self._ending = self._ending, None
        if ending is not None:
            self.hops_done.append(ending.record(self.dwell_samples(ending.index)))

    def _at_new_frequency(self, flags: int) -> bool:
        """Whether a frame read after a retune is at the new frequency (see the class notes)."""
        if self._flags_retunes:
            return bool(flags & FLAG_NEW_FREQ)
        sent = self._dwell.retune_sent if self._dwell is not None else None
        return sent is None or asyncio.get_running_loop().time() >= sent + self.settle_s

    async def _dispatch(self, ws: ClientConnection, message: bytes | str) -> None:
        if len(message) < 3:
            self._skip(f"a message of {len(message)} bytes")
            return
        tag, body = protocol.split_tag(message)
        if tag == "MSG":
            await self._on_msg(ws, protocol.decode_params(body[1:]))
        elif tag == "SND":
            self._on_snd(body)
            await self._keepalive(ws)
        else:
            log.debug("%s: ignoring %s message", self.receiver.name, protocol.shown(tag))

    async def _connect(self) -> ClientConnection:
        name = self.receiver.name
        timeout = self.settings.connect_timeout or self.receiver.timeout_s
        # Over TLS the system's trust store unless told otherwise; ws:// takes no context.
        tls = {"ssl": self.ssl_context or system_ssl_context()} if self.receiver.tls else {}
        try:
            async with asyncio.timeout(timeout):
                return await connect(
                    self.uri,
                    open_timeout=None,
                    close_timeout=2,
                    ping_interval=None,
                    max_size=2**20,
                    max_queue=16,
                    compression=None,
                    user_agent_header=f"heimdall_lab/{__version__}",
                    logger=_WS_LOG,
                    **tls,
                )
        except TimeoutError as exc:
            raise ReceiverTimeoutError(
                f"{name}: no connection to {self.receiver.address} within {timeout:g} s; "
                "check the address or raise the timeout",
                name,
            ) from exc
        except InvalidStatus as exc:
            code = exc.response.status_code
            raise ProtocolError(
                f"{name}: {self.receiver.address} answered HTTP {code} to the sound channel; "
                "is it a KiwiSDR?",
                name,
            ) from exc
        except ssl.SSLError as exc:
            raise TLSError(
                f"{name}: TLS with {self.receiver.address} failed "
                f"({protocol.shown(str(exc), 120)}); if its certificate is its own, pass "
                "ssl_context= trusting it",
                name,
            ) from exc
        except (OSError, InvalidHandshake) as exc:
            raise ReceiverUnreachableError(
                f"{name}: cannot connect to {self.receiver.address} "
                f"({protocol.shown(str(exc), 120)}); it may be down or refusing connections",
                name,
            ) from exc

    async def _recv(self, ws: ClientConnection) -> bytes | str:
        """The next message, or a timeout when the stream has not progressed for a while.

        Progress is a handshake step or a frame: a server that sends anything else, however
        often, still times out after ``read_timeout``.
        """
        name = self.receiver.name
        try:
            async with asyncio.timeout_at(self._progress_at + self.settings.read_timeout):
                return await ws.recv()
        except TimeoutError as exc:
            dwell = self._dwell
            if self._awaiting_retune and dwell is not None:
                raise ReceiverTimeoutError(
                    f"{name}: no frame at hop {dwell.index}'s {dwell.frequency_hz:.0f} Hz for "
                    f"{self.settings.read_timeout:g} s after retuning ({dwell.dropped_frames} "
                    "frames at the previous frequency dropped); the receiver does not follow "
                    f"retunes. {len(self.hops_done) + (self._ending is not None)} dwells "
                    "received are kept",
                    name,
                ) from exc
            stage = "frame" if self._setup_sent else "handshake step"
            raise ReceiverTimeoutError(
                f"{name}: no {stage} for {self.settings.read_timeout:g} s after "
                f"{self._received} samples; the receiver stalled",
                name,
            ) from exc
        except ConnectionClosed as exc:
            raise self._closed(exc) from exc

    def _progressed(self) -> None:
        self._progress_at = asyncio.get_running_loop().time()

    def _closed(self, exc: ConnectionClosed) -> ReceiverError:
        """The typed error for a connection the peer closed, while receiving or sending."""
        name = self.receiver.name
        why = protocol.shown(str(exc), 120)
        frame = exc.rcvd if exc.rcvd is not None else exc.sent
        if frame is not None and frame.code in _PROTOCOL_CLOSE_CODES:
            return ProtocolError(
                f"{name}: the connection broke the WebSocket protocol ({why}); "
                f"{self._received} samples received are kept",
                name,
            )
        if not self._setup_sent:
            return ReceiverUnreachableError(
                f"{name}: connection closed during the handshake ({why})", name
            )
        return DisconnectedError(
            f"{name}: stream closed after {self._received} of {self.expected_samples} "
            f"samples ({why}); the samples received are kept",
            name,
        )

    async def _on_msg(self, ws: ClientConnection, params: dict[str, str]) -> None:
        self.messages.update((k, v[:200]) for k, v in params.items() if k in KEPT_MESSAGES)
        if self.rtt_s is None and self._auth_sent_at is not None and _AUTH_ANSWERS & params.keys():
            self.rtt_s = asyncio.get_running_loop().time() - self._auth_sent_at
        refusal = server_refusal(self.receiver.name, params)
        if refusal is not None:
            raise refusal
        if params.get("badp") == "0":
            self.admitted = True
        if "audio_rate" in params and self._audio_rate is None:
            self._audio_rate = int(protocol.parse_number(params, "audio_rate", 1000, 100_000))
            self._progressed()
            await self._send(ws, protocol.cmd_ar_ok(self._audio_rate, 44100))
        if "sample_rate" in params:
            self._on_sample_rate(protocol.parse_sample_rate(params))
        if self._audio_rate is not None and self.nominal_rate and not self._setup_sent:
            s = self.settings
            for command in [
                *protocol.cmd_setup(self.ident),
                protocol.cmd_mod(self.frequency_hz, s.low_cut, s.high_cut),
                protocol.cmd_agc(s.agc, s.manual_gain),
            ]:
                await self._send(ws, command)
            self._setup_sent = True
            self.admitted = True
            self._progressed()
            await self._keepalive(ws)

    def _on_sample_rate(self, rate: float) -> None:
        """Take the first announced rate; a different one later is a timing problem."""
        if self.nominal_rate is None:
            self.nominal_rate = rate
            self._progressed()
        elif abs(rate / self.nominal_rate - 1) > RATE_CHANGE and not self._stream_problems:
            self._stream_problems.append(
                f"the announced rate changed mid-stream from {self.nominal_rate:g} to "
                f"{rate:g} Hz after {self._received} samples"
            )

    def _skip(self, why: str) -> None:
        # A bad frame is skipped; its sequence number shows up as a lost frame.
        self.skipped += 1
        if self.skipped <= LOGGED_SKIPS:
            more = "; more are counted, not logged" if self.skipped == LOGGED_SKIPS else ""
            log.info("%s: skipping a malformed frame: %s%s", self.receiver.name, why, more)

    def _on_snd(self, body: bytes) -> None:
        dwell = self._dwell
        # After a retune, frames still at the previous frequency: held (a few, when the
        # server flags retunes) to end the previous dwell once the flag confirms the new
        # frequency, else dropped undecoded (the flag byte first).
        if (
            self._awaiting_retune
            and dwell is not None
            and not self._at_new_frequency(body[0] if body else 0)
        ):
            if (
                self._flags_retunes
                and self._ending is not None
                and len(self._held) < RETUNE_KEEP_FRAMES
            ):
                try:
                    self._held.append(protocol.decode_iq_frame(body))
                except ProtocolError as exc:
                    self._skip(str(exc))
                return
            self._drop(dwell, 1, len(body) + 3)
            return
        try:
            frame = protocol.decode_iq_frame(body)
        except ProtocolError as exc:
            self._skip(str(exc))
            if self._awaiting_retune and self._flags_retunes and body and body[0] & FLAG_NEW_FREQ:
                self._new_frequency()  # the retune landed, whatever this frame's body
            return
        flagged = bool(frame.flags & FLAG_NEW_FREQ)
        if self._flags_retunes is None:  # the first frame tells whether the server flags
            self._flags_retunes = flagged
        elif flagged and not self._awaiting_retune and self._flags_retunes:
            log.info(
                "%s: a new-frequency flag without a retune; timing retunes instead",
                self.receiver.name,
            )
            self._flags_retunes = False
        self._new_frequency()
        self._keep(frame, dwell)

    def _new_frequency(self) -> None:
        """The frames now are the current dwell's: the held ones end the previous dwell."""
        self._awaiting_retune = False
        held, self._held = self._held, []
        ending = self._ending
        if ending is not None:
            for frame in held:
                ending.kept_after_retune += 1
                self._keep(frame, ending)
        self._end_previous_dwell()

    def _drop(self, dwell: _Dwell, frames: int, nbytes: int) -> None:
        """Count frames dropped after a retune; too many bytes of them end the stream."""
        dwell.dropped_frames += frames
        dwell.dropped_bytes += nbytes
        self.dropped_bytes += nbytes
        if dwell.dropped_bytes > RETUNE_DROP_LIMIT_BYTES:
            raise ProtocolError(
                f"{self.receiver.name}: {dwell.dropped_bytes:,} bytes still at the "
                f"previous frequency after retuning to {dwell.frequency_hz:.0f} Hz; "
                "the receiver does not follow retunes, stopped reading",
                self.receiver.name,
            )

    def _keep(self, frame: IqFrame, dwell: _Dwell | None) -> None:
        """Keep a frame as ``dwell``'s (in :attr:`frames` or through the sink)."""
        if self._n_frames == 0:
            self.first_frame_utc = np.datetime64(time.time_ns(), "ns")
        hop = dwell.index if dwell is not None else len(self.hops) - 1
        if self.on_frame is not None:
            self.on_frame(frame, hop)
        else:
            self.frames.append(frame)
        self._n_frames += 1
        if dwell is not None:
            if dwell.first_seq is None:
                dwell.first_seq = frame.seq
                dwell.first_time = (frame.gpssec, frame.gpsnsec)
            dwell.last_time = (frame.gpssec, frame.gpsnsec)
            dwell.samples += len(frame.samples)
        self._received += len(frame.samples)
        self._progressed()
        if self.on_samples is not None:
            self.on_samples(self._received, self.expected_samples)

    async def _send(self, ws: ClientConnection, message: str) -> None:
        """Send, unless the peer has closed.

        A closed peer is only noted: the frames already received are read first, and the
        receive after the last of them raises the typed error (:meth:`_closed`).
        """
        if self._peer_closed:
            return
        try:
            await ws.send(message)
        except ConnectionClosed:
            self._peer_closed = True

    async def _keepalive(self, ws: ClientConnection) -> None:
        now = time.monotonic()
        if now - self._last_keepalive >= 1.0:
            await self._send(ws, protocol.cmd_keepalive())
            self._last_keepalive = now


#: What a KiwiSDR's ``badp`` codes other than 0 (admitted) and 1 (bad password) mean, and
#: the reason each is reported with.
BADP_CODES: dict[str, tuple[str, str]] = {
    "2": ("down", "it is still starting up (determining its local address)"),
    "3": ("refused", "it does not admit connections from this IP address"),
    "4": ("refused", "no admin password is set on it"),
    "5": ("refused", "it admits no multiple connections from the same IP address"),
    "6": ("down", "a database update is in progress"),
    "7": ("refused", "another admin connection is open"),
}


def _minutes(value: str) -> str:
    """The minutes of a limit message (``240`` of ``240,<ip>``), never the address."""
    first = value.split(",", 1)[0].strip()
    return first if first.isdigit() and len(first) <= 6 else protocol.shown(first, 12)


def server_refusal(name: str, params: dict[str, str]) -> ReceiverError | None:
    """The typed error for a ``MSG`` by which a server refuses or ends the session.

    The names are those a KiwiSDR sends (and kiwirecorder handles): ``badp=N`` (N > 0),
    ``too_busy=N``, ``redirect=URL``, ``down``, ``ip_limit=MINUTES,IP`` (the address's
    connection time is used up) and ``inactivity_timeout=MINUTES``. Values appear in the
    message only through :func:`protocol.shown`; the address of ``ip_limit`` (this client's
    own) never does.

    Parameters
    ----------
    name : str
        The receiver's name, for the message.
    params : dict of str to str
        Decoded ``MSG`` parameters.

    Returns
    -------
    ReceiverError or None
        :class:`BadPasswordError`, :class:`TooBusyError`, :class:`RedirectError`,
        :class:`ReceiverDownError`, :class:`RefusedError` (its ``code`` the ``badp``
        value), :class:`TimeLimitError` or :class:`InactivityError`; None for any other
        message.
    """
    badp = params.get("badp")
    if badp is not None and badp != "0":
        code = badp if badp.isdigit() and len(badp) <= 3 else protocol.shown(badp, 12)
        if badp == "1":
            return BadPasswordError(
                f"{name}: the receiver refused the password (badp=1); set the right one for it",
                name,
            )
        kind, why = BADP_CODES.get(badp, ("refused", "it refused the connection"))
        if kind == "down":
            return ReceiverDownError(f"{name}: {why} (badp={code}); try again later", name)
        return RefusedError(
            f"{name}: {why} (badp={code}); its operator's rule, not retried", name, code
        )
    if "too_busy" in params:
        return TooBusyError(
            f"{name}: all {protocol.shown(params['too_busy'], 12)} client slots are taken; "
            "try again later",
            name,
        )
    if "redirect" in params:
        target = protocol.shown(params["redirect"], 80)
        return RedirectError(
            f"{name}: the receiver is full and redirects to {target}; not followed (another "
            "receiver is not this one): add that one as a receiver of its own to use it",
            name,
            target,
        )
    if "down" in params:
        return ReceiverDownError(
            f"{name}: the receiver says it is down (maintenance or an update); try again later",
            name,
        )
    if "ip_limit" in params:
        return TimeLimitError(
            f"{name}: this address has used up its {_minutes(params['ip_limit'])} minutes of "
            "connection time on the receiver (its operator's limit); it is left alone until "
            "the limit resets",
            name,
        )
    for key in ("inactivity_timeout", "inactivity_timeout_msg"):
        if key in params:
            return InactivityError(
                f"{name}: the receiver ends sessions after {_minutes(params[key])} minutes "
                "without activity; split long captures into shorter ones",
                name,
            )
    return None


#: Relative change of the announced rate taken as a change (a KiwiSDR announces it once).
RATE_CHANGE = 1e-6
#: WebSocket close codes that mean the peer broke the protocol, not the network.
_PROTOCOL_CLOSE_CODES = frozenset({1002, 1003, 1007, 1009})

#: Seconds a polite close may take before the connection is dropped.
CLOSE_TIMEOUT_S = 1.0


async def _close(ws: ClientConnection) -> None:
    """Close politely, discarding frames still in flight so the closing handshake completes.

    With frames queued and unread, the connection stops reading from the socket and would
    never see the server's close frame. A server that goes on sending regardless is cut off
    after :data:`CLOSE_TIMEOUT_S`.
    """
    closing = asyncio.create_task(ws.close())
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            with contextlib.suppress(ConnectionClosed):
                while not closing.done():
                    await ws.recv()
                    await asyncio.sleep(0)
            with contextlib.suppress(ConnectionClosed):
                await closing
    except TimeoutError:
        ws.transport.abort()
        closing.cancel()
        with contextlib.suppress(ConnectionClosed, asyncio.CancelledError):
            await closing


@dataclass(frozen=True)
class Health:
    """What a receiver's ``/status`` page says.

    Attributes
    ----------
    receiver : str
        Receiver name.
    reachable : bool
        Whether the page was fetched.
    users, users_max : int or None
        Channels in use and available.
    gps_fix : bool or None
        Whether the receiver has a GNSS fix (``gps_good`` > 0).
    uptime_s : int or None
        Seconds since the receiver started.
    latency_s : float or None
        Time to fetch the page.
    error : str
        Why the page could not be fetched.
    fields : dict of str to str
        Every field of the page.
    """

    receiver: str
    reachable: bool
    users: int | None = None
    users_max: int | None = None
    gps_fix: bool | None = None
    uptime_s: int | None = None
    latency_s: float | None = None
    error: str = ""
    fields: dict[str, str] | None = None

    @property
    def has_free_slot(self) -> bool:
        """Whether a client slot is free."""
        return bool(
            self.reachable and self.users is not None and self.users < (self.users_max or 0)
        )


def _int(fields: dict[str, str], key: str) -> int | None:
    first = {key: fields.get(key, "").split(",")[0]}
    try:
        return int(protocol.parse_number(first, key, 0, 1e9))
    except ProtocolError:
        return None


#: Largest ``/status`` page read (a KiwiSDR's is under 2 KiB).
STATUS_MAX_BYTES = 64 * 1024


@functools.cache
def system_ssl_context() -> ssl.SSLContext:
    """The TLS context for receivers reached over TLS when none is given.

    The system's trust store (``ssl.create_default_context()``; ``SSL_CERT_FILE`` points it
    elsewhere).

    Returns
    -------
    ssl.SSLContext
        One context for the process, verifying certificates and host names.
    """
    return ssl.create_default_context()


async def check_health(
    receiver: Receiver, timeout: float = 3.0, *, ssl_context: ssl.SSLContext | None = None
) -> Health:
    """Fetch a receiver's ``/status`` page (``https://`` for a receiver over TLS).

    Parameters
    ----------
    receiver : Receiver
        The receiver.
    timeout : float, optional
        Seconds for the whole request, however slowly the page arrives.
    ssl_context : ssl.SSLContext, optional
        Certificates to trust over TLS; the system's trust store by default.

    Returns
    -------
    Health
        What the page says, or ``reachable=False`` with the reason (no answer within
        ``timeout``, an HTTP error, a page over :data:`STATUS_MAX_BYTES`). Never raises for
        anything the server does.
    """
    url = f"{receiver.url}status"
    verify = (ssl_context or system_ssl_context()) if receiver.tls else True
    start = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            text = await _fetch_status(url, timeout, verify)
    except TimeoutError:
        return Health(receiver.name, False, error=f"no complete /status page within {timeout:g} s")
    except httpx.HTTPError as exc:
        return Health(
            receiver.name, False, error=f"{type(exc).__name__}: {protocol.shown(str(exc), 120)}"
        )
    except ProtocolError as exc:
        return Health(receiver.name, False, error=str(exc))
    fields = protocol.status_fields(text)
    good = _int(fields, "gps_good")
    return Health(
        receiver=receiver.name,
        reachable=True,
        users=_int(fields, "users"),
        users_max=_int(fields, "users_max"),
        gps_fix=None if good is None else good > 0,
        uptime_s=_int(fields, "uptime"),
        latency_s=time.monotonic() - start,
        fields=fields,
    )


async def _fetch_status(url: str, timeout: float, verify: ssl.SSLContext | bool = True) -> str:
    """The page's text, read in pieces up to :data:`STATUS_MAX_BYTES`."""
    # No compression: the cap holds for the bytes on the wire, not a bomb's expansion.
    headers = {"Accept-Encoding": "identity", "User-Agent": f"heimdall_lab/{__version__}"}
    async with (
        httpx.AsyncClient(timeout=timeout, headers=headers, verify=verify) as http,
        http.stream("GET", url) as response,
    ):
        response.raise_for_status()
        body = bytearray()
        async for chunk in response.aiter_raw():
            body += chunk
            if len(body) > STATUS_MAX_BYTES:
                raise ProtocolError(
                    f"the /status page is larger than {STATUS_MAX_BYTES // 1024} KiB; "
                    "is it a KiwiSDR?"
                )
    return body.decode("utf-8", "replace")
