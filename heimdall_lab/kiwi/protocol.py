"""The KiwiSDR sound-channel protocol: message framing, pure and without I/O.

A KiwiSDR serves one WebSocket per channel at ``ws://host:port/<timestamp>/SND``. The client
sends text commands (``SET name=value ...``); the server sends binary messages that start with
a three-letter tag:

``MSG``
    ``MSG name=value name=value ...`` (values percent-encoded): status and parameters such
    as ``badp``, ``too_busy``, ``audio_init``, ``audio_rate``, ``sample_rate``.
``SND``
    One frame of samples. In IQ mode: ``"SND"`` | flags u8 | seq u32 little-endian |
    smeter u16 big-endian | last_gps_solution u8 | unused u8 | gpssec u32 LE | gpsnsec u32 LE |
    512 int16 I/Q pairs, big-endian unless flag 0x80 says little-endian.

This module is shared by the client (:mod:`heimdall_lab.kiwi.client`) and the emulator
(:mod:`heimdall_lab.emulate.server`), so both sides speak exactly the same bytes.
"""

from __future__ import annotations

import logging
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, unquote

import numpy as np

from heimdall_lab.errors import ProtocolError
from heimdall_lab.gnss import has_fix
from heimdall_lab.recording import FRAME_SAMPLES, FULL_SCALE, NOMINAL_RATE

FLAG_IQ = 0x08
FLAG_LITTLE_ENDIAN = 0x80


_SND_HEAD = struct.Struct("<BI")  # flags, seq
_SMETER = struct.Struct(">H")
_GPS = struct.Struct("<BBII")  # last_gps_solution, unused, gpssec, gpsnsec
IQ_HEADER_BYTES = 3 + _SND_HEAD.size + _SMETER.size + _GPS.size
IQ_FRAME_BYTES = IQ_HEADER_BYTES + FRAME_SAMPLES * 4

_BE_PAIRS = np.dtype(">i2")
_LE_PAIRS = np.dtype("<i2")


@dataclass(frozen=True, slots=True)
class IqFrame:
    """One decoded IQ frame.

    Attributes
    ----------
    seq : int
        Frame sequence number; a jump of more than one means frames were lost.
    flags : int
        The frame's flag byte.
    smeter : int
        Raw S-meter value; see :attr:`rssi_dbm`.
    last_gps_solution : int
        Seconds since the last GNSS fix; :data:`NO_FIX` (253) and above mean no usable fix.
    gpssec, gpsnsec : int
        GNSS time of the first sample: GPS seconds of the week and nanoseconds.
    samples : numpy.ndarray
        Complex64 samples scaled so that int16 full scale is 1.0.
    """

    seq: int
    flags: int
    smeter: int
    last_gps_solution: int
    gpssec: int
    gpsnsec: int
    samples: np.ndarray

    @property
    def rssi_dbm(self) -> float:
        """Received signal strength in dBm, as the KiwiSDR S-meter reports it."""
        return smeter_to_dbm(self.smeter)

    @property
    def has_fix(self) -> bool:
        """Whether the frame's GNSS timestamp comes from a usable fix (:func:`gnss.has_fix`)."""
        return bool(has_fix(self.last_gps_solution))


#: The largest raw S-meter value taken as a reading: +30 dBm at the antenna input, far above
#: any real signal (a KiwiSDR's input saturates near -10 dBm).
SMETER_MAX = 1570


def smeter_to_dbm(smeter: int) -> float:
    """Convert a raw S-meter value to dBm (``0.1 * smeter - 127``).

    Parameters
    ----------
    smeter : int
        Raw 16-bit S-meter value.

    Returns
    -------
    float
        RSSI in dBm; NaN for a value no receiver reports (above :data:`SMETER_MAX`, +30 dBm).
    """
    return 0.1 * smeter - 127.0 if 0 <= smeter <= SMETER_MAX else float("nan")


def dbm_to_smeter(dbm: float) -> int:
    """Convert dBm to the raw S-meter value, clipped to 16 bits.

    Parameters
    ----------
    dbm : float
        RSSI in dBm.

    Returns
    -------
    int
        Raw S-meter value (0 for -inf or NaN: no signal).
    """
    if not np.isfinite(dbm):
        return 0xFFFF if dbm == np.inf else 0
    return int(np.clip(round((dbm + 127.0) * 10.0), 0, 0xFFFF))


def split_tag(message: bytes | str) -> tuple[str, bytes]:
    """Split a server message into its three-letter tag and its body.

    Parameters
    ----------
    message : bytes or str
        One WebSocket message from the server.

    Returns
    -------
    tag : str
        ``"MSG"``, ``"SND"``, ``"W/F"``, ...
    body : bytes
        The rest of the message.

    Raises
    ------
    ProtocolError
        If the message is shorter than a tag or the tag is not ASCII.
    """
    if isinstance(message, str):
        message = message.encode("utf-8", "replace")
    if len(message) < 3:
        raise ProtocolError(f"message of {len(message)} bytes has no tag")
    try:
        tag = message[:3].decode("ascii")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"message tag {message[:3]!r} is not ASCII") from exc
    return tag, message[3:]


def websocket_logger(name: str) -> logging.Logger:
    """A logger for the WebSocket library on a KiwiSDR connection (client or emulator side).

    The library's DEBUG lines dump every frame, the ``SET auth`` password included, so this
    logger drops every record below INFO, whatever level the application asks for.

    Parameters
    ----------
    name : str
        Logger name (the connecting module's, plus ``.websocket``).

    Returns
    -------
    logging.Logger
        The logger, filtering out DEBUG records (its level follows the application's).
    """
    logger = logging.getLogger(name)
    if _below_info not in logger.filters:
        logger.addFilter(_below_info)
    return logger


def _below_info(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.INFO


#: Characters of a server's value shown in a message; the rest is cut.
SHOWN_CHARS = 40


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """A server's value as it may appear in a message or a log line: printable and short.

    Parameters
    ----------
    value : object
        Anything a server sent.
    limit : int, optional
        Characters kept; longer values end in ``...`` and their length.

    Returns
    -------
    str
        The value's ``repr``, with non-printable characters escaped, cut to ``limit``.
    """
    text = repr(value if isinstance(value, str | bytes) else str(value))
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} chars)"


def parse_number(
    params: Mapping[str, str], name: str, low: float, high: float, *, integer: bool = False
) -> float:
    """Read one number a server announced, within the range it can have.

    This is the one way a value from a server becomes a number: whatever arrives, the
    result is a finite number in ``[low, high]`` or a :class:`ProtocolError`.

    Parameters
    ----------
    params : mapping of str to str
        Decoded ``MSG`` parameters.
    name : str
        The parameter to read.
    low, high : float
        The plausible range, inclusive.
    integer : bool, optional
        Whether the value must be a whole number.

    Returns
    -------
    float
        The value.

    Raises
    ------
    ProtocolError
        If the value is missing, not a number, not finite, out of range or (with
        ``integer``) not whole.
    """
    raw = params.get(name)
    try:
        value = float(raw) if raw is not None and len(raw) <= 32 else math.nan
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and low <= value <= high) or (integer and value != int(value)):
        kind = "a whole number" if integer else "a number"
        raise ProtocolError(f"{name}={shown(raw)} is not {kind} in [{low:g}, {high:g}]")
    return value


#: The IQ sample rates a KiwiSDR runs at, nominally: 12 kHz, and 20.25 kHz on the
#: wide-band (3-channel) firmware.
KIWI_RATES = (NOMINAL_RATE, 20250.0)
#: How far an announced rate may be from :data:`KIWI_RATES` (a real one is within 0.01 %).
KIWI_RATE_TOLERANCE = 0.01


def parse_sample_rate(params: Mapping[str, str]) -> float:
    """Read the ``sample_rate`` a server announced: one a KiwiSDR runs at, within 1 %.

    A server announcing another rate would make the client keep many times the samples the
    request needs.

    Parameters
    ----------
    params : mapping of str to str
        Decoded ``MSG`` parameters holding ``sample_rate``.

    Returns
    -------
    float
        Samples per second.

    Raises
    ------
    ProtocolError
        If it is not a number, or not within :data:`KIWI_RATE_TOLERANCE` of
        :data:`KIWI_RATES`.
    """
    rate = parse_number(params, "sample_rate", 1000, 100_000)
    if not any(abs(rate / r - 1) <= KIWI_RATE_TOLERANCE for r in KIWI_RATES):
        shown_rates = " or ".join(f"{r:g}" for r in KIWI_RATES)
        raise ProtocolError(
            f"sample_rate={rate:g} is not a KiwiSDR IQ rate ({shown_rates} Hz, within "
            f"{KIWI_RATE_TOLERANCE:.0%})"
        )
    return rate


#: The longest key and value :func:`status_fields` keeps, characters.
STATUS_KEY_CHARS = 64
STATUS_VALUE_CHARS = 256


def status_fields(text: str) -> dict[str, str]:
    """The ``key=value`` lines of a receiver's ``/status`` page.

    Parameters
    ----------
    text : str
        The page.

    Returns
    -------
    dict of str to str
        Keys and values stripped, cut to :data:`STATUS_KEY_CHARS` and
        :data:`STATUS_VALUE_CHARS` characters; lines without ``=`` are ignored; a repeated key
        keeps its last value. The values are untrusted text:
        :func:`heimdall_lab.directory.entry_from_fields` checks them.
    """
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()[:STATUS_KEY_CHARS]] = value.strip()[:STATUS_VALUE_CHARS]
    return fields


def decode_params(body: bytes | str) -> dict[str, str]:
    """Decode ``name=value name=value ...`` (the body of a MSG, or of a SET command).

    Parameters
    ----------
    body : bytes or str
        Space-separated pairs, values percent-encoded; a name without ``=`` gets ``""``.

    Returns
    -------
    dict of str to str
        Names to decoded values, in order.
    """
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    params: dict[str, str] = {}
    for token in body.split():
        name, _, value = token.partition("=")
        params[name] = unquote(value)
    return params


def encode_msg(params: Mapping[str, object]) -> bytes:
    """Encode a server ``MSG`` message.

    Parameters
    ----------
    params : mapping of str to object
        Names and values; values are formatted with ``str`` and percent-encoded. A value of
        None sends the name alone, as in ``MSG down``.

    Returns
    -------
    bytes
        The binary message, ``b"MSG name=value ..."``.
    """
    body = " ".join(
        name if value is None else f"{name}={quote(str(value), safe='.,:-_()')}"
        for name, value in params.items()
    )
    return b"MSG " + body.encode("ascii")


def decode_iq_frame(body: bytes, frame_samples: int = FRAME_SAMPLES) -> IqFrame:
    """Decode the body of an IQ-mode ``SND`` message (the bytes after ``"SND"``).

    Parameters
    ----------
    body : bytes
        Flags, seq, S-meter, GNSS header and samples.
    frame_samples : int, optional
        Number of I/Q pairs a frame must hold (512 on a KiwiSDR).

    Returns
    -------
    IqFrame
        The decoded frame.

    Raises
    ------
    ProtocolError
        If the frame is truncated, too long or otherwise malformed.
    """
    expected = IQ_FRAME_BYTES - 3 - (FRAME_SAMPLES - frame_samples) * 4
    if len(body) != expected:
        raise ProtocolError(f"IQ frame of {len(body)} bytes, expected {expected}")
    flags, seq = _SND_HEAD.unpack_from(body, 0)
    if not flags & FLAG_IQ:
        raise ProtocolError(f"SND frame with flags {flags:#04x} is not an IQ frame")
    (smeter,) = _SMETER.unpack_from(body, _SND_HEAD.size)
    off = _SND_HEAD.size + _SMETER.size
    last_gps_solution, _, gpssec, gpsnsec = _GPS.unpack_from(body, off)
    off += _GPS.size
    dtype = _LE_PAIRS if flags & FLAG_LITTLE_ENDIAN else _BE_PAIRS
    pairs = np.frombuffer(body, dtype=dtype, offset=off).astype(np.float32)
    samples = (pairs[0::2] + 1j * pairs[1::2]).astype(np.complex64) / np.float32(FULL_SCALE)
    return IqFrame(seq, flags, smeter, last_gps_solution, gpssec, gpsnsec, samples)


def encode_iq_frame(
    seq: int,
    pairs: np.ndarray,
    *,
    smeter: int,
    last_gps_solution: int,
    gpssec: int,
    gpsnsec: int,
    little_endian: bool = False,
) -> bytes:
    """Encode one IQ-mode ``SND`` message, as a KiwiSDR sends it.

    Parameters
    ----------
    seq : int
        Frame sequence number (wraps at 2**32).
    pairs : numpy.ndarray
        Integer samples, shape ``(n, 2)`` (I, Q), within the int16 range.
    smeter : int
        Raw S-meter value.
    last_gps_solution : int
        Seconds since the last GNSS fix (253-255: none).
    gpssec, gpsnsec : int
        GNSS time of the first sample.
    little_endian : bool, optional
        Send samples little-endian and set flag 0x80.

    Returns
    -------
    bytes
        The whole binary message, starting with ``b"SND"``.
    """
    flags = FLAG_IQ | (FLAG_LITTLE_ENDIAN if little_endian else 0)
    head = (
        b"SND"
        + _SND_HEAD.pack(flags, seq & 0xFFFFFFFF)
        + _SMETER.pack(smeter & 0xFFFF)
        + _GPS.pack(last_gps_solution & 0xFF, 0, gpssec & 0xFFFFFFFF, gpsnsec & 0xFFFFFFFF)
    )
    data = np.ascontiguousarray(pairs, dtype=_LE_PAIRS if little_endian else _BE_PAIRS)
    return head + data.tobytes()


def to_int16_pairs(samples: np.ndarray) -> np.ndarray:
    """Quantise complex samples (full scale 1.0) to int16 I/Q pairs, saturating.

    Parameters
    ----------
    samples : numpy.ndarray
        Complex samples.

    Returns
    -------
    numpy.ndarray
        int16 array of shape ``(n, 2)``.
    """
    scaled = np.empty((len(samples), 2), dtype=np.float64)
    scaled[:, 0] = samples.real
    scaled[:, 1] = samples.imag
    scaled *= FULL_SCALE
    return np.clip(np.rint(scaled), -32768, 32767).astype(np.int16)


# Client commands, in the order a KiwiSDR expects them.


def cmd_auth(password: str = "") -> str:
    """``SET auth``: the first command on a new connection.

    Parameters
    ----------
    password : str, optional
        The receiver's user password; ``""`` for public receivers.

    Returns
    -------
    str
        The command text.
    """
    return f"SET auth t=kiwi p={quote(password, safe='')}"


def cmd_ar_ok(in_rate: int, out_rate: int) -> str:
    """``SET AR OK``: acknowledge the server's ``audio_rate``.

    Parameters
    ----------
    in_rate : int
        The audio rate the server announced.
    out_rate : int
        The output rate the client resamples to (44100 for kiwirecorder).

    Returns
    -------
    str
        The command text.
    """
    return f"SET AR OK in={in_rate} out={out_rate}"


def cmd_setup(ident: str) -> list[str]:
    """The fixed setup commands sent after ``SET AR OK``.

    Parameters
    ----------
    ident : str
        Name shown to the receiver's operator in its user list.

    Returns
    -------
    list of str
        ``squelch``, ``genattn``, ``gen`` and ``ident_user`` commands.
    """
    return [
        "SET squelch=0 max=0",
        "SET genattn=0",
        "SET gen=0 mix=-1",
        f"SET ident_user={quote(ident, safe='')}",
    ]


def cmd_mod(frequency_hz: float, low_cut: int, high_cut: int) -> str:
    """``SET mod=iq``: tune the channel.

    Parameters
    ----------
    frequency_hz : float
        Centre frequency in Hz (sent in kHz with three decimals).
    low_cut, high_cut : int
        Passband edges in Hz relative to the centre.

    Returns
    -------
    str
        The command text.
    """
    return f"SET mod=iq low_cut={low_cut} high_cut={high_cut} freq={frequency_hz / 1e3:.3f}"


def cmd_agc(enabled: bool, manual_gain: int = 50) -> str:
    """``SET agc``: automatic or manual gain.

    Parameters
    ----------
    enabled : bool
        AGC on (``True``) or a fixed manual gain (``False``, right for measurements).
    manual_gain : int, optional
        Manual gain in dB when AGC is off.

    Returns
    -------
    str
        The command text.
    """
    return f"SET agc={int(enabled)} hang=0 thresh=-100 slope=6 decay=1000 manGain={manual_gain}"


def cmd_keepalive() -> str:
    """``SET keepalive``: sent at most once a second while streaming.

    Returns
    -------
    str
        The command text.
    """
    return "SET keepalive"
