"""Small misbehaving KiwiSDR servers, on loopback, for the tests that show each is survived.

A :class:`HostileServer` speaks enough of the KiwiSDR sound-channel protocol to get a client
through the handshake, then misbehaves in one of :data:`MODES`: floods, malformed or oversized
messages, unparsable numbers, nonsense or inconsistent timing. It runs on its own event loop
in a thread, so blocking code (``capture()``, the CLI) can be pointed at it. Its ``/status``
page misbehaves in the :data:`STATUS_MODES` (a trickle, an endless body).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import psutil
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from heimdall_lab import gnss
from heimdall_lab.kiwi import protocol
from heimdall_lab.receivers import Receiver
from heimdall_lab.recording import FRAME_SAMPLES

RATE = 12000.0
_TONE = (np.exp(2j * np.pi * 500.0 * np.arange(FRAME_SAMPLES) / RATE) * 0.3).astype(np.complex64)
_PAIRS = protocol.to_int16_pairs(_TONE)
#: GPS time of week (ns) of the first frame of the current session: now, as a live KiwiSDR's.
_BASE = {"tow_ns": 0}


def _start_clock() -> None:
    sec, nsec = gnss.utc_to_tow(np.datetime64(time.time_ns(), "ns"))
    _BASE["tow_ns"] = int(sec) * 1_000_000_000 + int(nsec)


def frame(seq: int, t_ns: int, *, lgs: int = 0) -> bytes:
    """One IQ frame with a tone, stamped ``t_ns`` nanoseconds into the GPS week."""
    return protocol.encode_iq_frame(
        seq,
        _PAIRS,
        smeter=800,
        last_gps_solution=lgs,
        gpssec=t_ns // 1_000_000_000,
        gpsnsec=t_ns % 1_000_000_000,
    )


def _t(k: int, rate: float = RATE) -> int:
    """GPS time of frame ``k`` (ns into the week) at ``rate`` samples per second."""
    return (_BASE["tow_ns"] + round(k * FRAME_SAMPLES / rate * 1e9)) % gnss.WEEK_NS


Mode = Callable[[ServerConnection], Awaitable[None]]


async def _forever(ws: ServerConnection, message: Callable[[int], bytes | str]) -> None:
    k = 0
    while True:
        await ws.send(message(k))
        k += 1
        if k % 64 == 0:
            await asyncio.sleep(0)


async def _frames(ws: ServerConnection, n: int, seq: Callable[[int], int], t: Callable[[int], int]):
    for k in range(n):
        await ws.send(frame(seq(k), t(k)))
        if k % 8 == 0:
            await asyncio.sleep(0)
    await asyncio.sleep(30)


async def _tag_flood(ws):
    await _forever(ws, lambda k: b"XYZ" + bytes(1000))


async def _snd_flood(ws):
    await _forever(ws, lambda k: b"SND\x08" + k.to_bytes(4, "little") + bytes(40))


async def _msg_flood(ws):
    await _forever(ws, lambda k: protocol.encode_msg({f"name{k}": "x" * 900}))


async def _text_flood(ws):
    await _forever(ws, lambda k: "MSG " + "y" * 2000)


async def _tiny_flood(ws):
    await _forever(ws, lambda k: b"S")


async def _silent(ws):
    await asyncio.sleep(60)


async def _msg_trickle(ws):
    while True:
        await ws.send(protocol.encode_msg({"stats": 1}))
        await asyncio.sleep(0.3)


async def _slow_frames(ws):
    for k in range(10_000):
        await ws.send(frame(k, _t(k)))
        await asyncio.sleep(0.5)


async def _oversize(ws):
    await ws.send(frame(0, _t(0)))
    await ws.send(b"SND" + bytes(3 << 20))
    await asyncio.sleep(30)


async def _seq_backwards(ws):
    await _frames(ws, 60, lambda k: k if k < 10 else k - 8, _t)


async def _seq_repeat(ws):
    await _frames(ws, 60, lambda k: min(k, 10), _t)


async def _gnss_backwards(ws):
    await _frames(ws, 60, lambda k: k, lambda k: _t(60 - k))


async def _gnss_frozen(ws):
    await _frames(ws, 60, lambda k: k, lambda k: _t(0))


async def _gnss_nonsense(ws):
    await _frames(ws, 60, lambda k: k, lambda k: 0xFFFFFFFF * 1_000_000_000 + 999_999_999)


async def _rate_mismatch(ws):
    await _frames(ws, 60, lambda k: k, lambda k: _t(k, RATE * 1.05))


async def _gnss_days_off(ws):
    await _frames(ws, 60, lambda k: k, lambda k: (_t(k) - 3 * 86_400 * 10**9) % gnss.WEEK_NS)


async def _seq_leaps(ws):
    await _frames(ws, 60, lambda k: 1000 * k, lambda k: _t(1000 * k))


async def _rate_change(ws):
    for k in range(60):
        if k == 5:
            await ws.send(protocol.encode_msg({"sample_rate": "12048"}))
        await ws.send(frame(k, _t(k)))
    await asyncio.sleep(30)


#: How each mode answers after a normal handshake.
_AFTER_HANDSHAKE: dict[str, Mode] = {
    "tag_flood": _tag_flood,
    "snd_flood": _snd_flood,
    "msg_flood": _msg_flood,
    "text_flood": _text_flood,
    "tiny_flood": _tiny_flood,
    "silent": _silent,
    "msg_trickle": _msg_trickle,
    "slow_frames": _slow_frames,
    "oversize": _oversize,
    "seq_backwards": _seq_backwards,
    "seq_repeat": _seq_repeat,
    "gnss_backwards": _gnss_backwards,
    "gnss_frozen": _gnss_frozen,
    "gnss_nonsense": _gnss_nonsense,
    "rate_mismatch": _rate_mismatch,
    "rate_change": _rate_change,
    "gnss_days_off": _gnss_days_off,
    "seq_leaps": _seq_leaps,
}
#: Modes that break the handshake itself: the MSG values the server announces.
_BAD_HANDSHAKE: dict[str, dict[str, str]] = {
    "audio_rate_abc": {"audio_rate": "abc"},
    "audio_rate_inf": {"audio_rate": "inf"},
    "audio_rate_huge": {"audio_rate": "9" * 400},
    "sample_rate_nan": {"sample_rate": "nan"},
    "sample_rate_absurd": {"sample_rate": "99999"},
    "too_busy_huge": {"too_busy": "A" * 100_000},
    # Refusals carrying what no one should print or follow as is.
    "redirect_huge": {"redirect": "http://elsewhere.invalid/\x1b[2J\r\n" + "A" * 100_000},
    "badp_garbage": {"badp": "\x07" + "9" * 5_000},
    "ip_limit_garbage": {"ip_limit": "9" * 5_000 + ",10.9.8.7"},
    "inactivity_garbage": {"inactivity_timeout": "-1e309\x00" * 500},
}
MODES = (*_AFTER_HANDSHAKE, *_BAD_HANDSHAKE)
STATUS_MODES = ("status_trickle", "status_endless", "status_huge_line")


class HostileServer:
    """A KiwiSDR impostor on ``127.0.0.1`` that misbehaves as ``mode`` says.

    Use as a context manager; :attr:`receiver` is the :class:`Receiver` to point a client at.
    """

    def __init__(self, mode: str, name: str = "hostile") -> None:
        if mode not in MODES and mode not in STATUS_MODES:
            raise ValueError(f"unknown mode {mode!r}")
        self.mode = mode
        self.name = name
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: Any = None

    @property
    def receiver(self) -> Receiver:
        """Where the impostor listens, as a receiver (one attempt, short timeout)."""
        return Receiver(self.name, "127.0.0.1", self.port, 50.0, 8.0, timeout_s=2.0, retry_count=0)

    def __enter__(self) -> HostileServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _start(self) -> None:
        if self.mode in STATUS_MODES:
            self._server = await asyncio.start_server(self._bad_status, "127.0.0.1", 0)
        else:
            self._server = await serve(
                self._session,
                "127.0.0.1",
                0,
                max_size=2**20,
                compression=None,
                ping_interval=None,
            )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        self._server.close()
        here = asyncio.current_task()
        others = [t for t in asyncio.all_tasks() if t is not here]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    async def _bad_status(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        """A ``/status`` page that trickles, never ends, or is one enormous line."""
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            await reader.readuntil(b"\r\n\r\n")
            head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
            if self.mode == "status_trickle":
                writer.write(head + b"Content-Length: 1000\r\n\r\n")
                for _ in range(500):
                    await asyncio.sleep(1.0)
                    writer.write(b"u")
                    await writer.drain()
            elif self.mode == "status_huge_line":
                body = b"users=" + b"9" * 5_000_000 + b"\n"
                writer.write(head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
                await writer.drain()
            else:
                writer.write(head + b"Transfer-Encoding: chunked\r\n\r\n")
                chunk = b"users=1\n" * 8192
                piece = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
                while True:
                    writer.write(piece)
                    await writer.drain()
        writer.close()

    async def _session(self, ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed, TimeoutError):
            await ws.send(protocol.encode_msg({"version_maj": 1, "version_min": 550}))
            await asyncio.wait_for(ws.recv(), 5)  # SET auth
            await ws.send(protocol.encode_msg({"badp": 0}))
            announce = {"audio_init": 0, "audio_rate": 12000}
            announce.update(_BAD_HANDSHAKE.get(self.mode, {}))
            await ws.send(protocol.encode_msg(announce))
            await ws.send(
                protocol.encode_msg(
                    {"sample_rate": _BAD_HANDSHAKE.get(self.mode, {}).get("sample_rate", RATE)}
                )
            )
            _start_clock()
            if self.mode in _BAD_HANDSHAKE:
                await asyncio.sleep(30)
                return
            while True:  # until the channel is tuned
                text = await asyncio.wait_for(ws.recv(), 5)
                if isinstance(text, str) and text.startswith("SET mod="):
                    break
            drain = asyncio.create_task(_drain(ws))
            try:
                await _AFTER_HANDSHAKE[self.mode](ws)
            finally:
                drain.cancel()


async def _drain(ws: ServerConnection) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for _ in ws:
            pass


class PeakRss:
    """Peak resident memory (MB) of a process while the block runs, sampled every 20 ms.

    ``growth_mb`` is the peak less the memory at the start: in a test process that has run
    many tests, what the block itself cost.
    """

    def __init__(self, pid: int | None = None) -> None:
        self._proc = psutil.Process(pid)

    def __enter__(self) -> PeakRss:
        self.start_mb = self.peak_mb = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    @property
    def growth_mb(self) -> float:
        return self.peak_mb - self.start_mb

    def _rss(self) -> float:
        try:
            return self._proc.memory_info().rss / 2**20
        except psutil.Error:  # the process has ended
            return 0.0

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak_mb = max(self.peak_mb, self._rss())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
