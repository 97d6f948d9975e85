"""kiwirecorder's IQ WAV format: read and write.

A kiwi IQ WAV file is RIFF/WAVE with a PCM ``fmt `` chunk (2 channels I and Q, 16-bit
little-endian, the rate rounded to an integer), then for every 512-sample frame a ``kiwi``
chunk of 10 bytes, ``struct '<BBII'`` = (last_gps_solution, 0, gpssec, gpsnsec), followed by a
``data`` chunk of the frame's interleaved int16 I/Q pairs.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from heimdall_lab.errors import FileFormatError
from heimdall_lab.protocol import FULL_SCALE, to_int16_pairs
from heimdall_lab.recording import Recording

_CHUNK = struct.Struct("<4sI")
_FMT = struct.Struct("<HHIIHH")
_KIWI = struct.Struct("<BBII")


def parse_kiwi_wav(data: bytes) -> Recording:
    """Parse the bytes of a kiwi IQ WAV file.

    Parameters
    ----------
    data : bytes
        The whole file.

    Returns
    -------
    Recording
        Samples and per-frame GNSS timestamps (no sequence numbers are stored in the
        format: frames are numbered 0, 1, ...; RSSI is NaN).

    Raises
    ------
    FileFormatError
        If the bytes are not a 2-channel 16-bit PCM WAV with kiwi timestamp chunks.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise FileFormatError("not a RIFF/WAVE file")
    pos, rate = 12, None
    gps: list[tuple[int, int, int, int]] = []
    blocks: list[np.ndarray] = []
    pending_kiwi: tuple[int, int, int, int] | None = None
    while pos + _CHUNK.size <= len(data):
        cid, size = _CHUNK.unpack_from(data, pos)
        body = data[pos + _CHUNK.size : pos + _CHUNK.size + size]
        if len(body) < size:
            raise FileFormatError(f"chunk {cid!r} at byte {pos} is truncated")
        if cid == b"fmt ":
            if size < _FMT.size:
                raise FileFormatError("fmt chunk is too short")
            tag, channels, rate, _, _, bits = _FMT.unpack_from(body)
            if tag != 1 or channels != 2 or bits != 16:
                raise FileFormatError(
                    f"expected 2-channel 16-bit PCM, got format {tag}, {channels} ch, {bits} bit"
                )
        elif cid == b"kiwi":
            if size != _KIWI.size:
                raise FileFormatError(f"kiwi chunk of {size} bytes, expected {_KIWI.size}")
            pending_kiwi = _KIWI.unpack(body)
        elif cid == b"data":
            if rate is None:
                raise FileFormatError("data chunk before the fmt chunk")
            if pending_kiwi is None:
                raise FileFormatError("data chunk without a kiwi timestamp chunk before it")
            if size % 4:
                raise FileFormatError("data chunk does not hold whole I/Q pairs")
            pairs = np.frombuffer(body, dtype="<i2").astype(np.float32)
            blocks.append((pairs[0::2] + 1j * pairs[1::2]).astype(np.complex64))
            gps.append(pending_kiwi)
            pending_kiwi = None
        pos += _CHUNK.size + size + (size & 1)
    if rate is None:
        raise FileFormatError("no fmt chunk")
    if not blocks:
        raise FileFormatError("no kiwi-timestamped data chunks: not a kiwi IQ WAV file")
    lengths = np.array([len(b) for b in blocks], dtype=np.int64)
    table = np.array(gps, dtype=np.int64)
    return Recording(
        samples=np.concatenate(blocks) / np.float32(FULL_SCALE),
        frame_start=np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64),
        seq=np.arange(len(blocks), dtype=np.int64),
        last_gps_solution=table[:, 0].astype(np.uint8),
        gpssec=table[:, 2],
        gpsnsec=table[:, 3],
        rssi_dbm=np.full(len(blocks), np.nan, np.float32),
        nominal_rate=float(rate),
    )


def read_kiwi_wav(path: str | Path) -> Recording:
    """Read a kiwi IQ WAV file as written by kiwirecorder.

    Parameters
    ----------
    path : str or pathlib.Path
        The file.

    Returns
    -------
    Recording
        Samples and per-frame GNSS timestamps.

    Raises
    ------
    FileFormatError
        If the file is not a kiwi IQ WAV.
    FileNotFoundError
        If there is no such file.
    """
    try:
        return parse_kiwi_wav(Path(path).read_bytes())
    except FileFormatError as exc:
        raise FileFormatError(f"{path}: {exc}") from exc


def kiwi_wav_bytes(recording: Recording) -> bytes:
    """Encode a recording in the kiwi IQ WAV format.

    Parameters
    ----------
    recording : Recording
        Samples and per-frame timestamps.

    Returns
    -------
    bytes
        The file's bytes.
    """
    pairs = to_int16_pairs(recording.samples)
    bounds = [*recording.frame_start.tolist(), len(pairs)]
    parts = []
    for k in range(recording.n_frames):
        frame = pairs[bounds[k] : bounds[k + 1]].astype("<i2").tobytes()
        stamp = _KIWI.pack(
            int(recording.last_gps_solution[k]),
            0,
            int(recording.gpssec[k]),
            int(recording.gpsnsec[k]),
        )
        parts += [_CHUNK.pack(b"kiwi", len(stamp)), stamp, _CHUNK.pack(b"data", len(frame)), frame]
    rate = round(recording.nominal_rate)
    fmt = _CHUNK.pack(b"fmt ", _FMT.size) + _FMT.pack(1, 2, rate, rate * 4, 4, 16)
    body = b"WAVE" + fmt + b"".join(parts)
    return _CHUNK.pack(b"RIFF", len(body)) + body


def write_kiwi_wav(path: str | Path, recording: Recording) -> Path:
    """Write a recording as a kiwi IQ WAV file.

    Parameters
    ----------
    path : str or pathlib.Path
        Where to write.
    recording : Recording
        Samples and per-frame timestamps.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    path = Path(path)
    path.write_bytes(kiwi_wav_bytes(recording))
    return path
