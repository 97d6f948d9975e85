"""A local KiwiSDR emulator: the server side of the sound-channel protocol over real sockets.

Each emulated receiver listens on its own loopback port and speaks what a KiwiSDR speaks:
the WebSocket at ``/<timestamp>/SND`` (or ``/kiwi/<timestamp>/SND``) with the ``SET`` /
``MSG`` handshake and IQ ``SND`` frames with GNSS timestamps, and the HTTP ``/status`` page.
What a receiver hears comes from a frame source: a synthetic :class:`~heimdall_lab.emulate.scenario.
Scenario` (a transmitter, propagation, each receiver's clocks and noise) or the replay of a
real kiwi IQ WAV recording. Faults are injected per receiver on demand (:class:`Fault`).

Frames are paced in real time by default (512 samples every ~42.7 ms at 12001 Hz); with
``realtime=False`` they go as fast as the socket takes them, for tests and benchmarks.

A ``SET mod=iq ... freq=`` received while streaming retunes the channel as a KiwiSDR does: from
the next frame on, a synthetic receiver sends what it hears at the new frequency, on the same
time axis (the next frame's GNSS time is where the old stream's next frame would have been:
the receiver keeps its GNSS clock, so no stale timestamp), with the same sequence numbers and
pacing, and with the passband the command gives (the one before when it gives none). Like a
KiwiSDR (``SND_FLAG_NEW_FREQ`` in its ``rx_sound.cpp``), the first frame after
the initial tuning and after each change of frequency carries the flag
:data:`~heimdall_lab.kiwi.client.FLAG_NEW_FREQ`. A receiver given
``retune_latency_frames`` sends that many more frames at the old frequency first, as a
receiver whose sound pipeline holds a few. A receiver replaying a recording cannot
change frequency: it ignores the retune (logged at INFO) and sets no flag.

Like a KiwiSDR, a synthetic receiver band-limits its IQ to the passband ``low_cut ..
high_cut`` of the client's ``SET mod=iq`` (:func:`~heimdall_lab.emulate.scenario.passband_taps`;
the client's default +-6 kHz is the whole band and cuts nothing): outside it only the int16
quantisation floor remains, about -139 dBFS/Hz at 12 kHz. A replayed recording is sent as it
was recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from http import HTTPStatus
from typing import Any, Literal

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from heimdall_lab.emulate.scenario import FrameSource, Scenario, SourceFrame, SynthStream
from heimdall_lab.errors import ValidationError
from heimdall_lab.gnss import GPS_EPOCH
from heimdall_lab.kiwi import protocol
from heimdall_lab.kiwi.client import FLAG_NEW_FREQ
from heimdall_lab.receivers import DEFAULT_RECEIVERS, Receiver
from heimdall_lab.recording import NOMINAL_RATE, Recording
from heimdall_lab.values import iso_utc, to_utc_ns
from heimdall_lab.versions import __version__

log = logging.getLogger(__name__)
_WS_LOG = protocol.websocket_logger(f"{__name__}.websocket")

FaultKind = Literal[
    "refuse",
    "bad_password",
    "too_busy",
    "stall",
    "disconnect",
    "corrupt",
    "truncate",
    "slow",
    "down",
    "redirect",
    "time_limit",
    "inactivity",
    "refused_ip",
    "no_multiple",
    "updating",
]
FAULT_KINDS: tuple[str, ...] = FaultKind.__args__  # type: ignore[attr-defined]

#: Client slots per receiver, as on a KiwiSDR with four channels.
USERS_MAX = 4
#: What the ``MSG`` refusals of the emulator's faults say, as a KiwiSDR says them.
REFUSALS: dict[str, dict[str, object]] = {
    "bad_password": {"badp": 1},
    "too_busy": {"too_busy": USERS_MAX},
    "down": {"down": None},
    "refused_ip": {"badp": 3},
    "no_multiple": {"badp": 5},
    "updating": {"badp": 6},
}
#: Where a ``redirect`` fault's receiver points (a name that never resolves: nothing follows it).
REDIRECT_TO = "http://kiwi.invalid:8073/?from=heimdall_lab_emulator"
#: Minutes a ``time_limit`` fault's receiver says the address may be connected (``ip_limit``).
TIME_LIMIT_MIN = 60
#: Minutes an ``inactivity`` fault's receiver says it allows (``inactivity_timeout``).
INACTIVITY_MIN = 30
_HANDSHAKE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Fault:
    """A fault injected into one emulated receiver.

    Attributes
    ----------
    kind : str
        ``refuse`` (the TCP connection is reset at once), ``bad_password`` (``MSG badp=1``),
        ``too_busy`` (``MSG too_busy=4``), ``stall`` (stop sending after ``after_frames``
        frames, keep the socket open), ``disconnect`` (drop the socket after
        ``after_frames`` frames), ``corrupt`` (frame number ``after_frames`` has a broken
        header), ``truncate`` (frame number ``after_frames`` is cut short), ``slow`` (send
        at ``1 / slow_factor`` of real time).

        What a KiwiSDR says when it refuses or ends a session, each answered to ``SET auth``
        and followed by the close: ``down`` (``MSG down``: maintenance), ``redirect``
        (``MSG redirect=``:data:`REDIRECT_TO`: full, go there), ``refused_ip`` (``MSG badp=3``: not
        from this address), ``no_multiple`` (``MSG badp=5``: no multiple connections from
        the same address), ``updating`` (``MSG badp=6``: a database update). And, after
        ``after_frames`` frames (0: at login), ``time_limit`` (``MSG ip_limit=60,<ip>``: the
        address's connection time is used up) and ``inactivity``
        (``MSG inactivity_timeout=30``).
    after_frames : int
        When the fault strikes, for stream faults.
    times : int or None
        How many connections suffer the fault before the receiver behaves (``None``:
        every connection). ``Fault("refuse", times=2)`` refuses twice, then serves.
    slow_factor : float
        How many times slower than real time a ``slow`` receiver sends.
    """

    kind: FaultKind
    after_frames: int = 0
    times: int | None = None
    slow_factor: float = 2.0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValidationError(f"unknown fault {self.kind!r}; choose one of {FAULT_KINDS}")
        if self.after_frames < 0 or (self.times is not None and self.times < 0):
            raise ValidationError("fault after_frames and times must be >= 0")
        if not self.slow_factor >= 1:
            raise ValidationError("fault slow_factor must be >= 1")


class ReplaySource:
    """A frame source that replays a recording frame by frame, with its own timestamps.

    Parameters
    ----------
    recording : Recording
        What to replay (for example from :func:`heimdall_lab.io.kiwi_wav.read_kiwi_wav`).
    calibration_db : float, optional
        dBm = dBFS + calibration_db, for the S-meter of frames that carry no RSSI.
    """

    def __init__(self, recording: Recording, calibration_db: float = -20.0) -> None:
        self.recording = recording
        self.nominal_rate = recording.nominal_rate
        self.calibration_db = calibration_db
        self._pairs = protocol.to_int16_pairs(recording.samples)
        self._bounds = [*recording.frame_start.tolist(), len(self._pairs)]
        self._k = 0

    def next_frame(self) -> SourceFrame | None:
        """The next recorded frame, or ``None`` at the end of the recording.

        Returns
        -------
        SourceFrame or None
            The frame as the receiver sent it.
        """
        rec, k = self.recording, self._k
        if k >= rec.n_frames:
            return None
        self._k += 1
        pairs = self._pairs[self._bounds[k] : self._bounds[k + 1]]
        rssi = float(rec.rssi_dbm[k])
        if not np.isfinite(rssi):
            power = np.mean(
                rec.samples[self._bounds[k] : self._bounds[k + 1]].view(np.float32) ** 2
            )
            rssi = 10 * np.log10(2 * max(float(power), 1e-20)) + self.calibration_db
        return SourceFrame(
            pairs=pairs,
            smeter=protocol.dbm_to_smeter(rssi),
            last_gps_solution=int(rec.last_gps_solution[k]),
            gpssec=int(rec.gpssec[k]),
            gpsnsec=int(rec.gpsnsec[k]),
        )


#: Makes the frame source of a new stream: called with the tuned frequency (Hz) and the
#: passband ``(low_cut, high_cut)`` (Hz) the client asked for, or None.
SourceFactory = Callable[[float, tuple[float, float] | None], FrameSource]


@dataclass
class EmulatedReceiver:
    """One emulated receiver: who it is, what it hears, and what goes wrong with it.

    Attributes
    ----------
    receiver : Receiver
        Name and position (the address is filled in when the emulator starts).
    source : callable
        Called with the tuned frequency in Hz and the passband ``(low_cut, high_cut)`` in Hz
        (None when not given) for each new stream; returns a frame source.
    fault : Fault or None
        Fault to inject.
    password : str
        Password the receiver demands (``""``: none).
    retunes : list of (float, float)
        Every retune (``SET mod`` while streaming) received: ``time.monotonic()`` when it
        arrived and the frequency in Hz, whether or not the receiver could follow it.
    follow_retunes : bool
        Whether the receiver follows retunes (default). False makes a misbehaving receiver
        that goes on sending the old frequency, without the new-frequency flag.
    mark_retunes : bool
        Whether frames carry :data:`~heimdall_lab.kiwi.client.FLAG_NEW_FREQ` after a change
        of frequency, as a KiwiSDR's do (default). False makes a server that does not say
        when its frequency changed.
    retune_latency_frames : int
        Frames the receiver still sends at the old frequency after a retune reaches it, as
        a KiwiSDR's sound pipeline holds a few already-filtered frames (0 by default: the
        next frame is at the new frequency).
    """

    receiver: Receiver
    source: SourceFactory
    fault: Fault | None = None
    password: str = ""
    connections: int = 0
    users: int = 0
    max_users: int = 0
    commands: list[tuple[float, str]] = field(default_factory=list)
    frames_sent: int = 0
    started: float = field(default_factory=time.time)
    retunes: list[tuple[float, float]] = field(default_factory=list)
    follow_retunes: bool = True
    mark_retunes: bool = True
    retune_latency_frames: int = 0

    def _fault_now(self, kinds: tuple[str, ...]) -> Fault | None:
        f = self.fault
        if f is None or f.kind not in kinds:
            return None
        if f.times is not None and self.connections > f.times:
            return None
        return f


class Emulator:
    """A set of emulated KiwiSDR receivers, each on its own loopback port.

    Parameters
    ----------
    scenario : Scenario, optional
        What the receivers hear; :meth:`Scenario.default` when omitted. Receivers not in the
        scenario's sites cannot be emulated from it.
    receivers : sequence of Receiver, optional
        Which receivers to emulate (names and positions); the scenario's sites by default.
        A receiver that replays a recording must be listed here.
    replay : mapping of str to Recording, optional
        Receivers that replay a recording instead of synthesising.
    faults : mapping of str to Fault, optional
        Faults to inject, by receiver name.
    realtime : bool, optional
        Pace frames in real time (default) or send as fast as possible.
    host : str, optional
        Address to bind; loopback by default. Anything else must be asked for explicitly.
    base_port : int, optional
        First port; receivers take consecutive ports. 0 (default) picks free ports.
    password : str, optional
        Password every receiver demands.
    start_utc : numpy.datetime64, optional
        UTC time of the first sample of every synthesised stream; the wall clock at each
        connection when omitted. A fixed start makes a capture reproducible bit for bit
        (the scenario's noise and phases depend on it).
    ssl_context : ssl.SSLContext, optional
        Serve over TLS (``wss://``, ``https://.../status``) with this server context; the
        receivers then have ``tls=True``.

    Attributes
    ----------
    sessions, max_sessions : int
        Sound channels open now across every receiver, and the most open at once so far.
    """

    def __init__(
        self,
        scenario: Scenario | None = None,
        *,
        receivers: tuple[Receiver, ...] | list[Receiver] | None = None,
        replay: Mapping[str, Recording] | None = None,
        faults: Mapping[str, Fault] | None = None,
        realtime: bool = True,
        host: str = "127.0.0.1",
        base_port: int = 0,
        password: str = "",
        start_utc: np.datetime64 | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.scenario = scenario or Scenario.default()
        self.ssl_context = ssl_context
        self.sessions = 0
        self.max_sessions = 0
        self._watchers: set[asyncio.Future[None]] = set()
        self.start_utc = start_utc
        self.realtime = realtime
        self.host = host
        self.base_port = base_port
        replay = dict(replay or {})
        faults = dict(faults or {})
        if receivers is None:
            receivers = [
                Receiver(site.name, host, 8073, site.latitude, site.longitude)
                for site in self.scenario.sites
            ]
        names = [r.name for r in receivers]
        if len(set(names)) != len(names):
            raise ValidationError("emulated receiver names must be unique")
        unknown = (set(faults) | set(replay)) - set(names)
        if unknown:
            raise ValidationError(f"faults or replays for unknown receivers: {sorted(unknown)}")
        self.units: dict[str, EmulatedReceiver] = {}
        for r in receivers:
            if r.name in replay:
                rec = replay[r.name]
                factory: SourceFactory = lambda _f, _band, rec=rec: ReplaySource(rec)  # noqa: E731
            elif r.name in self._site_names:
                factory = lambda f, band, n=r.name: self.scenario.stream(  # noqa: E731
                    n, f, self.start_utc, passband=band
                )
            else:
                raise ValidationError(
                    f"receiver {r.name} is neither a site of the scenario nor a replay"
                )
            self.units[r.name] = EmulatedReceiver(r, factory, faults.get(r.name), password)
        self._servers: list[Server] = []

    @property
    def _site_names(self) -> set[str]:
        return {s.name for s in self.scenario.sites}

    @property
    def receivers(self) -> list[Receiver]:
        """The emulated receivers with the addresses they listen on (after :meth:`start`)."""
        return [u.receiver for u in self.units.values()]

    def receiver(self, name: str) -> Receiver:
        """One emulated receiver by name.

        Parameters
        ----------
        name : str
            Receiver name.

        Returns
        -------
        Receiver
            It, with its listening address.
        """
        return self.units[name].receiver

    async def start(self) -> list[Receiver]:
        """Start listening, one port per receiver.

        Returns
        -------
        list of Receiver
            The receivers with their addresses.
        """
        for i, unit in enumerate(self.units.values()):
            port = self.base_port + i if self.base_port else 0
            server = await serve(
                lambda conn, unit=unit: self._session(unit, conn),
                self.host,
                port,
                process_request=lambda conn, req, unit=unit: self._http(unit, conn, req),
                ping_interval=None,
                max_size=2**16,
                compression=None,
                logger=_WS_LOG,
                ssl=self.ssl_context,
            )
            bound = server.sockets[0].getsockname()[1]
            unit.receiver = replace(
                unit.receiver.with_address(self.host, bound), tls=self.ssl_context is not None
            )
            self._servers.append(server)
            log.info("emulating %s on %s", unit.receiver.name, unit.receiver.address)
        return self.receivers

    async def stop(self) -> None:
        """Close every listening socket and connection."""
        for server in self._servers:
            server.close()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @contextlib.contextmanager
    def running(self) -> Iterator[Emulator]:
        """Run the emulator in a background thread with its own event loop.

        For synchronous callers (the CLI, a notebook). Yields once every port listens.

        Yields
        ------
        Emulator
            This emulator, started.
        """
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="heimdall-emulator", daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.start(), loop).result(timeout=30)
            yield self
        finally:
            asyncio.run_coroutine_threadsafe(self.stop(), loop).result(timeout=30)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=30)
            loop.close()

    # --- HTTP side: /status and the WebSocket path -------------------------------------

    def _http(
        self, unit: EmulatedReceiver, conn: ServerConnection, req: Request
    ) -> Response | None:
        path = req.path.split("?", 1)[0]
        if path == "/status":
            return conn.respond(HTTPStatus.OK, self.status_page(unit))
        parts = [p for p in path.split("/") if p]
        if parts and parts[0] == "kiwi":
            parts = parts[1:]
        if len(parts) != 2 or parts[1] != "SND":
            return conn.respond(HTTPStatus.NOT_FOUND, "only /status and /<ts>/SND are served\n")
        unit.connections += 1
        if unit._fault_now(("refuse",)):
            log.info("%s: refusing connection %d", unit.receiver.name, unit.connections)
            conn.transport.abort()
            return Response(503, "Refused", Headers())
        return None

    def status_page(self, unit: EmulatedReceiver) -> str:
        """The receiver's ``/status`` page, in the KiwiSDR's ``name=value`` line format.

        Parameters
        ----------
        unit : EmulatedReceiver
            The receiver.

        Returns
        -------
        str
            The page.
        """
        r = unit.receiver
        site = next((s for s in self.scenario.sites if s.name == r.name), None)
        fix = site is None or site.gps_fix
        lines = {
            "status": "active",
            "offline": "no",
            "name": f"{r.name} (heimdall_lab emulator)",
            "sdr_hw": "KiwiSDR emulated",
            "bands": f"{r.min_frequency_hz:.0f}-{r.max_frequency_hz:.0f}",
            "users": unit.users,
            "users_max": USERS_MAX,
            "gps": f"({r.latitude:.6f}, {r.longitude:.6f})",
            "gps_good": 8 if fix else 0,
            "fixes": 1000 if fix else 0,
            "fixes_min": 10 if fix else 0,
            "loc": r.location_name,
            "sw_version": f"KiwiSDR_v1.heimdall_lab_{__version__}",
            "uptime": int(time.time() - unit.started),
            "tdoa_ch": USERS_MAX,
        }
        return "".join(f"{k}={v}\n" for k, v in lines.items())

    # --- WebSocket side: one sound channel ------------------------------------------------

    async def _session(self, unit: EmulatedReceiver, ws: ServerConnection) -> None:
        name = unit.receiver.name
        unit.users += 1
        unit.max_users = max(unit.max_users, unit.users)
        self._count_session(ws)
        try:
            params = await self._handshake(unit, ws)
            if params is None:
                return
            freq_hz = float(params["freq"]) * 1e3
            band = _passband(unit, params, self.scenario.nominal_rate)
            source = unit.source(freq_hz, band)
            await self._stream(unit, ws, source, _Tuning(freq_hz, band))
        except ConnectionClosed:
            log.debug("%s: client went away", name)
        except (TimeoutError, KeyError, ValueError) as exc:
            log.info("%s: handshake failed: %r", name, exc)
            await ws.close(1002, "protocol error")
        finally:
            unit.users -= 1

    def _count_session(self, ws: ServerConnection) -> None:
        """Count a sound channel open from now until its connection is closed.

        Counted to the close itself, not to the end of the session's task (which may run a
        moment longer), so that :attr:`max_sessions` is what a client could have seen.
        """
        self.sessions += 1
        self.max_sessions = max(self.max_sessions, self.sessions)
        watcher = asyncio.ensure_future(ws.wait_closed())
        self._watchers.add(watcher)

        def closed(task: asyncio.Future[None]) -> None:
            self._watchers.discard(task)
            self.sessions -= 1

        watcher.add_done_callback(closed)

    async def _recv_set(self, unit: EmulatedReceiver, ws: ServerConnection) -> dict[str, str]:
        text = await asyncio.wait_for(ws.recv(), _HANDSHAKE_TIMEOUT_S)
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        unit.commands.append((time.monotonic(), text))
        if not text.startswith("SET "):
            raise ValueError(f"expected a SET command, got {text[:40]!r}")
        return protocol.decode_params(text[4:])

    async def _handshake(
        self, unit: EmulatedReceiver, ws: ServerConnection
    ) -> dict[str, str] | None:
        await ws.send(protocol.encode_msg({"version_maj": 1, "version_min": 550}))
        auth = await self._recv_set(unit, ws)
        if "auth" not in auth:
            raise ValueError("first command must be SET auth")
        refusal = unit._fault_now((*REFUSALS, "redirect"))
        if refusal is None and auth.get("p", "") != unit.password:
            refusal = Fault("bad_password")
        if refusal is None and unit.users > USERS_MAX:
            refusal = Fault("too_busy")
        if refusal is None:
            limit = unit._fault_now(("time_limit", "inactivity"))
            if limit is not None and limit.after_frames == 0:
                refusal = limit
        if refusal is not None:
            await ws.send(protocol.encode_msg(_refusal_msg(refusal, ws)))
            await ws.close()
            return None
        await ws.send(protocol.encode_msg({"badp": 0}))
        await ws.send(protocol.encode_msg({"audio_init": 0, "audio_rate": int(NOMINAL_RATE)}))
        rate = self.scenario.nominal_rate
        await ws.send(protocol.encode_msg({"sample_rate": f"{rate:.3f}"}))
        # Collect SET commands until the channel is tuned; answer AR OK silently.
        tuned: dict[str, str] = {}
        while "mod" not in tuned:
            tuned = await self._recv_set(unit, ws)
        if tuned["mod"] != "iq":
            raise ValueError(f"emulator serves IQ mode only, not {tuned['mod']!r}")
        return tuned

    async def _stream(
        self, unit: EmulatedReceiver, ws: ServerConnection, source: FrameSource, tuning: _Tuning
    ) -> None:
        fault = unit._fault_now(
            ("stall", "disconnect", "corrupt", "truncate", "slow", "time_limit", "inactivity")
        )
        pace = 1.0 if fault is None or fault.kind != "slow" else fault.slow_factor
        reader = asyncio.create_task(self._drain_commands(unit, ws, tuning))
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        elapsed_samples = 0
        seq = 0
        try:
            while True:
                if fault is not None and seq == fault.after_frames:
                    if fault.kind == "stall":
                        await reader  # keep the socket open and silent until the client leaves
                        return
                    if fault.kind == "disconnect":
                        log.info(
                            "%s: dropping the connection after %d frames", unit.receiver.name, seq
                        )
                        ws.transport.abort()
                        return
                    if fault.kind in ("time_limit", "inactivity"):
                        await ws.send(protocol.encode_msg(_refusal_msg(fault, ws)))
                        await ws.close()
                        return
                frame = source.next_frame()
                if frame is None:
                    await ws.close(1000, "end of recording")
                    return
                elapsed_samples += len(frame.pairs)
                if self.realtime:
                    due = t0 + pace * elapsed_samples / source.nominal_rate
                    delay = due - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                # The frame goes out now: a retune received while it was due (its samples
                # being taken) applies to it, as the receiver's DDC switches at once.
                new_freq = seq == 0
                if tuning.pending_hz is not None and tuning.latency_frames > 0:
                    tuning.latency_frames -= 1  # still in the receiver's pipeline
                elif tuning.pending_hz is not None:
                    retuned = _retuned(unit, source, tuning)
                    if retuned is not source:
                        source, new_freq = retuned, True
                        frame = source.next_frame()
                data = protocol.encode_iq_frame(
                    seq,
                    frame.pairs,
                    smeter=frame.smeter,
                    last_gps_solution=frame.last_gps_solution,
                    gpssec=frame.gpssec,
                    gpsnsec=frame.gpsnsec,
                )
                if new_freq and unit.mark_retunes:
                    data = data[:3] + bytes([data[3] | FLAG_NEW_FREQ]) + data[4:]
                if fault is not None and seq == fault.after_frames:
                    if fault.kind == "corrupt":
                        # Flags without the IQ bit and a length no IQ frame has.
                        data = b"SND\x00" + data[4:] + b"\xde\xad"
                    elif fault.kind == "truncate":
                        data = data[: len(data) // 2]
                await ws.send(data)
                unit.frames_sent += 1
                seq += 1
                if not self.realtime and seq % 16 == 0:
                    await asyncio.sleep(0)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await reader

    async def _drain_commands(
        self, unit: EmulatedReceiver, ws: ServerConnection, tuning: _Tuning
    ) -> None:
        """Log each command received while streaming; take note of a retune."""
        async for message in ws:
            text = message if isinstance(message, str) else message.decode("utf-8", "replace")
            unit.commands.append((time.monotonic(), text))
            if text.startswith("SET mod="):
                params = protocol.decode_params(text[4:])
                _on_retune(unit, params, tuning, self.scenario.nominal_rate)


@dataclass
class _Tuning:
    """The frequency and passband a sound channel streams, and a retune yet to be applied."""

    frequency_hz: float
    passband: tuple[float, float] | None = None
    pending_hz: float | None = None
    latency_frames: int = 0  # frames still to go out at the old frequency


def _passband(
    unit: EmulatedReceiver,
    params: dict[str, str],
    rate: float,
    current: tuple[float, float] | None = None,
) -> tuple[float, float] | None:
    """The passband ``(low_cut, high_cut)`` of a ``SET mod``, Hz; ``current`` without one.

    A KiwiSDR band-limits its IQ to the cuts the client sends; the emulator does the same
    (:func:`heimdall_lab.emulate.scenario.passband_taps`). Cuts it cannot use (missing,
    not numbers, not ``low < high``, or nothing of them within ``+-rate / 2``) leave the
    passband as it was (logged at INFO).
    """
    if "low_cut" not in params and "high_cut" not in params:
        return current
    try:
        low, high = float(params["low_cut"]), float(params["high_cut"])
    except (KeyError, ValueError):
        low = high = math.nan
    usable = math.isfinite(low) and math.isfinite(high) and low < high
    if not (usable and low < rate / 2 and high > -rate / 2):
        log.info(
            "%s: ignoring a passband it cannot use: %s",
            unit.receiver.name,
            protocol.shown(params, 80),
        )
        return current
    return low, high


def _on_retune(
    unit: EmulatedReceiver, params: dict[str, str], tuning: _Tuning, rate: float
) -> None:
    """Note a ``SET mod`` received while streaming; the sender applies it at the next frame."""
    name = unit.receiver.name
    try:
        freq_hz = float(params.get("freq", "nan")) * 1e3
    except ValueError:
        freq_hz = math.nan
    if params.get("mod") != "iq" or not (math.isfinite(freq_hz) and freq_hz > 0):
        log.info("%s: ignoring a retune it cannot serve: %s", name, protocol.shown(params, 80))
        return
    unit.retunes.append((time.monotonic(), freq_hz))
    tuning.pending_hz = freq_hz
    tuning.latency_frames = max(0, int(unit.retune_latency_frames))
    tuning.passband = _passband(unit, params, rate, tuning.passband)


def _retuned(unit: EmulatedReceiver, source: FrameSource, tuning: _Tuning) -> FrameSource:
    """The source of the frame about to be sent after a retune: a new stream, or ``source``.

    ``source`` has just synthesised that frame; a synthetic stream is replaced by one at the
    new frequency starting at that frame's time (so the new frame is where the old stream's
    would have been, on the same GNSS clock), without stale timestamps. The same frequency
    (as a KiwiSDR, which flags only a change), a receiver told not to follow, and a replay
    keep ``source``.
    """
    freq_hz, tuning.pending_hz = tuning.pending_hz, None
    name = unit.receiver.name
    if freq_hz is None or freq_hz == tuning.frequency_hz:
        return source
    if not unit.follow_retunes:
        log.info("%s: not following the retune to %.3f kHz (told not to)", name, freq_hz / 1e3)
        return source
    if not isinstance(source, SynthStream):
        log.info(
            "%s: a replayed recording cannot change frequency; ignoring the retune to %.3f kHz",
            name,
            freq_hz / 1e3,
        )
        return source
    # The new stream replaces the frame just synthesised (not sent): it starts at its time.
    start_ns = source.frame_start_ns(source.frames_emitted - 1)
    tuning.frequency_hz = freq_hz
    log.debug("%s: retuned to %.3f kHz", name, freq_hz / 1e3)
    return SynthStream(
        source.scenario,
        source.site,
        freq_hz,
        start_ns,
        stale_frames=0,
        passband=tuning.passband,
    )


def _refusal_msg(fault: Fault, ws: ServerConnection) -> dict[str, object]:
    """The ``MSG`` a KiwiSDR sends for a fault that refuses or ends the session."""
    if fault.kind == "redirect":
        return {"redirect": REDIRECT_TO}
    if fault.kind == "time_limit":
        peer = ws.remote_address[0] if ws.remote_address else "127.0.0.1"
        return {"ip_limit": f"{TIME_LIMIT_MIN},{peer}"}
    if fault.kind == "inactivity":
        return {"inactivity_timeout": INACTIVITY_MIN}
    return REFUSALS[fault.kind]


# --- the emulator as a source of receivers, for capture() ----------------------------------


@dataclass(frozen=True)
class Emulated:
    """A running emulator, as :func:`emulated` yields it.

    Attributes
    ----------
    receivers : list of Receiver
        The emulated receivers: their real names and positions, loopback addresses. Pass
        them to :func:`heimdall_lab.pipeline.capture`.
    parameters : dict
        What makes a capture from them repeatable, as JSON values: ``emulate`` (True),
        ``scenario`` (:meth:`Scenario.to_dict`), ``seed``, ``start_utc`` (ISO, ``Z``),
        ``realtime`` and ``faults`` (by receiver, or None). Pass it as ``metadata=`` to
        :func:`~heimdall_lab.pipeline.capture` to record it with the capture.
    start_utc : numpy.datetime64
        UTC time of the first sample of every stream; pass it as ``gps_reference=`` to
        :func:`~heimdall_lab.pipeline.capture` so timestamps far from today resolve to the
        right GPS week.
    emulator : Emulator
        The emulator itself (connection counts, commands received, ...).
    """

    receivers: list[Receiver]
    parameters: dict[str, Any]
    start_utc: np.datetime64
    emulator: Emulator

    @property
    def capture_options(self) -> dict[str, Any]:
        """``receivers``, ``metadata`` and ``gps_reference`` for :func:`capture`.

        Returns
        -------
        dict
            ``capture(f, d, **emu.capture_options)`` captures from this emulator and
            records its parameters.
        """
        return {
            "receivers": self.receivers,
            "metadata": self.parameters,
            "gps_reference": self.start_utc,
        }


def _emulated_receivers(
    scenario: Scenario, receivers: Sequence[Receiver | str] | None
) -> list[Receiver]:
    """The receivers to emulate: named sites of the scenario, described as the defaults are."""
    sites = {s.name: s for s in scenario.sites}
    defaults = {r.name: r for r in DEFAULT_RECEIVERS}
    wanted: list[Receiver | str] = list(sites) if receivers is None else list(receivers)
    missing = [r if isinstance(r, str) else r.name for r in wanted]
    missing = [n for n in missing if n not in sites]
    if missing:
        raise ValidationError(
            f"receivers {missing} are not sites of the scenario; emulated sites: {sorted(sites)}"
        )
    out = []
    for r in wanted:
        if isinstance(r, Receiver):
            out.append(r)
        elif r in defaults:
            out.append(defaults[r])
        else:
            site = sites[r]
            out.append(Receiver(site.name, "127.0.0.1", 8073, site.latitude, site.longitude))
    return out


@contextlib.contextmanager
def emulated(
    seed: int = 0,
    scenario: Scenario | None = None,
    receivers: Sequence[Receiver | str] | None = None,
    start_utc: str | np.datetime64 | None = None,
    realtime: bool = True,
    faults: Mapping[str, Fault] | None = None,
) -> Iterator[Emulated]:
    """Run emulated KiwiSDR receivers on loopback for the duration of a ``with`` block.

    With the same scenario (or seed), receivers and start, the receivers send identical IQ.

    Parameters
    ----------
    seed : int, optional
        Seed of :meth:`Scenario.default`, when no scenario is given.
    scenario : Scenario, optional
        What the receivers hear; ``Scenario.default(seed)`` by default.
    receivers : sequence of Receiver or str, optional
        Which sites to emulate (names, or Receiver objects named as sites); every site of
        the scenario by default.
    start_utc : str or numpy.datetime64, optional
        UTC time of the first sample; the next whole second by default.
    realtime : bool, optional
        Pace frames in real time (default) or send them as fast as possible.
    faults : mapping of str to Fault, optional
        Faults to inject, by receiver name (for failure drills and tests).

    Yields
    ------
    Emulated
        ``.receivers`` to capture from and ``.parameters`` to record with the capture.

    Raises
    ------
    ValidationError
        Receivers that are not sites of the scenario, faults for receivers not emulated.

    Examples
    --------
    >>> from heimdall_lab.pipeline import capture
    >>> with emulated(seed=0) as emu:  # doctest: +SKIP
    ...     cap = capture(10e6, 10, receivers=emu.receivers, metadata=emu.parameters)
    """
    scenario = scenario or Scenario.default(seed=seed)
    chosen = _emulated_receivers(scenario, receivers)
    start = (
        to_utc_ns(start_utc, "start_utc")
        if start_utc is not None
        else np.datetime64(int(time.time()) + 1, "s").astype("M8[ns]")
    )
    if start < GPS_EPOCH:
        raise ValidationError(
            f"start_utc {iso_utc(start)} is before GPS time began (1980-01-06): a KiwiSDR "
            "stamps its frames with GPS time"
        )
    faults = dict(faults or {})
    emulator = Emulator(
        scenario, receivers=chosen, realtime=realtime, start_utc=start, faults=faults
    )
    parameters: dict[str, Any] = {
        "emulate": True,
        "scenario": scenario.to_dict(),
        "seed": scenario.seed,
        "start_utc": f"{np.datetime_as_string(start, 'ns')}Z",
        "realtime": realtime,
        "faults": {k: asdict(v) for k, v in faults.items()} or None,
    }
    with emulator.running() as emu:
        yield Emulated(emu.receivers, parameters, start, emu)


__all__ = [
    "FAULT_KINDS",
    "USERS_MAX",
    "Emulated",
    "EmulatedReceiver",
    "Emulator",
    "Fault",
    "ReplaySource",
    "emulated",
]
