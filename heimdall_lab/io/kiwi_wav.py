"""kiwirecorder's IQ WAV format: read and write.

A kiwi IQ WAV file is RIFF/WAVE with a PCM ``fmt `` chunk (2 channels I and Q, 16-bit
little-endian, the rate rounded to an integer), then for every 512-sample frame a ``kiwi``
chunk of 10 bytes, ``struct '<BBII'`` = (last_gps_solution, 0, gpssec, gpsnsec), followed by a
``data`` chunk of the frame's interleaved int16 I/Q pairs.
"""

from __future__ import annotations

import logging
import re
import struct
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from heimdall_lab.dataset import build_dataset
from heimdall_lab.errors import FileFormatError, ValidationError
from heimdall_lab.ids import check_capture_id, check_receiver_name, new_capture_id
from heimdall_lab.kiwi.protocol import to_int16_pairs
from heimdall_lab.receivers import Receiver
from heimdall_lab.recording import FULL_SCALE, Recording

log = logging.getLogger(__name__)

#: kiwirecorder's file name: ``<YYYYmmddTHHMMSSZ>_<frequency Hz>_<receiver>_iq.wav``.
_KIWI_FILE = re.compile(r"^(?P<time>\d{8}T\d{6}Z)_(?P<freq>\d+(?:\.\d+)?)_(?P<name>.+)_iq$")
_TIME_FORMAT = "%Y%m%dT%H%M%SZ"
#: The reference TDoA tool's receiver position file, ``gnss_pos/<NAME>.txt``.
_GNSS_POS = re.compile(r"coord'\s*,\s*\[\s*([-+0-9.eE]+)\s*,\s*([-+0-9.eE]+)\s*\]")
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


# -- kiwirecorder WAV -----------------------------------------------------------------------


def import_kiwi_wav(
    paths: str | Path | Iterable[str | Path],
    receivers: Mapping[str, Receiver | tuple[float, float]] | None = None,
    frequency_hz: float | None = None,
    *,
    capture_id: str | None = None,
    gps_reference: datetime | np.datetime64 | None = None,
) -> xr.Dataset:
    """Read kiwirecorder IQ WAV files (made at the same time) as one capture Dataset.

    Parameters
    ----------
    paths : path or iterable of paths
        The files, one per receiver. kiwirecorder names them
        ``<YYYYmmddTHHMMSSZ>_<frequency Hz>_<receiver>_iq.wav``; the receiver name,
        frequency and start time are taken from that name when it fits.
    receivers : mapping, optional
        Receiver name to :class:`~heimdall_lab.receivers.Receiver` or ``(latitude,
        longitude)``: where each one is. Without it, each position is read from
        ``gnss_pos/<NAME>.txt`` beside the files or one folder up (:func:`read_gnss_pos`), else
        NaN.
    frequency_hz : float, optional
        Centre frequency; from the file names when omitted.
    capture_id : str, optional
        Id of the capture; ``kiwi_<time>_<frequency>`` from the file names when they agree,
        else a new UUID.
    gps_reference : datetime or numpy.datetime64, optional
        A UTC time within half a week of the recordings, to resolve the GPS week; the time in
        the file names by default (the wall clock when there is none).

    Returns
    -------
    xarray.Dataset
        The capture Dataset (see :func:`heimdall_lab.dataset.build_dataset`), every receiver
        marked complete.

    Raises
    ------
    FileFormatError
        If a file is not a kiwi IQ WAV.
    ValidationError
        If a receiver has no position in ``receivers``, names repeat, or the frequency is
        unknown.
    """
    items = [Path(paths)] if isinstance(paths, str | Path) else [Path(p) for p in paths]
    if not items:
        raise ValidationError("no kiwi IQ WAV files given")
    entries: list[tuple[Receiver, Recording, bool]] = []
    unplaced: list[int] = []
    times: set[np.datetime64] = set()
    freqs: set[float] = set()
    named = 0
    for path in items:
        recording = read_kiwi_wav(path)
        name, when, freq = parse_kiwi_wav_name(path)
        if when is not None:
            named += 1
            times.add(when)
            freqs.add(freq)
        found = read_gnss_pos(path, name) if receivers is None else None
        if receivers is None:
            receiver = Receiver(
                check_receiver_name(name), "kiwisdr.invalid", 8073, *(found or (0.0, 0.0))
            )
            if found is None:
                unplaced.append(len(entries))
        elif name in receivers:
            given = receivers[name]
            receiver = (
                given
                if isinstance(given, Receiver)
                else Receiver(check_receiver_name(name), "kiwisdr.invalid", 8073, *given)
            )
        else:
            raise ValidationError(
                f"{path.name}: no position for receiver {name}; pass it in receivers "
                f"(given: {', '.join(sorted(receivers)) or 'none'})"
            )
        entries.append((receiver, recording, True))
    names = [e[0].name for e in entries]
    if len(set(names)) != len(names):
        raise ValidationError(f"kiwi WAV files repeat a receiver: {names}")
    if frequency_hz is None:
        if len(freqs) != 1 or named != len(items):
            raise ValidationError("frequency_hz is needed: the file names do not give one")
        frequency_hz = freqs.pop()
    stamps = sorted(pd.Timestamp(t, tz="UTC").to_pydatetime() for t in times)
    if gps_reference is None:
        if stamps:
            gps_reference = stamps[0]
        else:
            log.warning("no time in the kiwi WAV file names: the GPS week is taken from now")
    if capture_id is None:
        if len(times) == 1 and named == len(items):
            capture_id = f"kiwi_{stamps[0].strftime(_TIME_FORMAT)}_{round(frequency_hz)}"
        else:
            capture_id = new_capture_id()
    duration = max(len(e[1].samples) / e[1].nominal_rate for e in entries)
    ds = build_dataset(
        entries,
        frequency_hz,
        duration,
        capture_id=check_capture_id(capture_id),
        gps_reference=gps_reference,
    )
    if unplaced:
        log.warning(
            "kiwi WAV import without positions for %s (no receivers given, no gnss_pos/NAME.txt): "
            "their latitude/longitude are NaN",
            ", ".join(names[i] for i in unplaced),
        )
        lat, lon = ds["latitude"].values.copy(), ds["longitude"].values.copy()
        lat[unplaced] = np.nan
        lon[unplaced] = np.nan
        ds = ds.assign_coords(latitude=("receiver", lat), longitude=("receiver", lon))
    ds.attrs["source"] = "kiwirecorder IQ WAV: " + ", ".join(p.name for p in items)
    return ds


def kiwi_wav_name(start_utc: datetime | np.datetime64, frequency_hz: float, receiver: str) -> str:
    """Kiwirecorder's file name for a recording: ``<YYYYmmddTHHMMSSZ>_<Hz>_<receiver>_iq.wav``.

    Parameters
    ----------
    start_utc : datetime or numpy.datetime64
        UTC time of the first sample (whole seconds are kept).
    frequency_hz : float
        Centre frequency; written as whole Hz.
    receiver : str
        Receiver name (see :func:`heimdall_lab.ids.check_receiver_name`).

    Returns
    -------
    str
        The file name, which :func:`parse_kiwi_wav_name` reads back.
    """
    when = pd.Timestamp(start_utc)
    when = when.tz_localize("UTC") if when.tzinfo is None else when.tz_convert("UTC")
    name = check_receiver_name(receiver)
    return f"{when.strftime(_TIME_FORMAT)}_{round(frequency_hz)}_{name}_iq.wav"


def parse_kiwi_wav_name(path: str | Path) -> tuple[str, np.datetime64 | None, float]:
    """Receiver name, start time and frequency from a kiwirecorder file name.

    Parameters
    ----------
    path : str or pathlib.Path
        A file; other names give the file stem as the receiver, no time and NaN.

    Returns
    -------
    tuple
        ``(receiver, start_utc or None, frequency_hz or NaN)``.
    """
    stem = Path(path).stem
    m = _KIWI_FILE.match(stem)
    if not m:
        return stem, None, float("nan")
    when = datetime.strptime(m["time"], _TIME_FORMAT)
    return m["name"], np.datetime64(when, "ns"), float(m["freq"])


def write_gnss_pos(directory: str | Path, receiver: Receiver) -> Path:
    """Write a receiver's position as ``<directory>/gnss_pos/<NAME>.txt``, the TDoA tool's form.

    Parameters
    ----------
    directory : str or pathlib.Path
        Where the WAV files are.
    receiver : Receiver
        Name, host, port and position.

    Returns
    -------
    pathlib.Path
        The file written.
    """
    path = Path(directory) / "gnss_pos" / f"{check_receiver_name(receiver.name)}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"d.{receiver.name} = struct('coord', [{receiver.latitude!r},{receiver.longitude!r}], "
        f"'host', '{receiver.host}', 'port', {int(receiver.port)});\n"
    )
    return path


def read_gnss_pos(wav: str | Path, receiver: str) -> tuple[float, float] | None:
    """A receiver's position from ``gnss_pos/<NAME>.txt`` beside a WAV file or one folder up.

    Parameters
    ----------
    wav : str or pathlib.Path
        The WAV file.
    receiver : str
        Its receiver's name.

    Returns
    -------
    tuple of float or None
        ``(latitude, longitude)``, or None when there is no such file or it holds no position.
    """
    folder = Path(wav).parent
    for candidate in (folder / "gnss_pos", folder.parent / "gnss_pos"):
        path = candidate / f"{receiver}.txt"
        if path.is_file() and path.stat().st_size < 4096:
            m = _GNSS_POS.search(path.read_text(errors="replace"))
            if m:
                return float(m[1]), float(m[2])
    return None


def write_kiwi_wavs(
    directory: str | Path,
    recordings: Iterable[tuple[Receiver, Recording]],
    frequency_hz: float,
    start_utc: datetime | np.datetime64,
) -> list[Path]:
    """Write one capture's recordings as kiwirecorder files the readers take back whole.

    Every file gets the same start time in its name (kiwirecorder's form, so the files read
    back as one capture) and each receiver's position goes to ``gnss_pos/<NAME>.txt``, where
    :func:`import_kiwi_wav` and :func:`heimdall_lab.open_capture` look for it.

    Parameters
    ----------
    directory : str or pathlib.Path
        Where the files go (created if needed).
    recordings : iterable of (Receiver, Recording)
        Each receiver with what it recorded.
    frequency_hz : float
        Centre frequency.
    start_utc : datetime or numpy.datetime64
        The capture's start, for the file names.

    Returns
    -------
    list of pathlib.Path
        The WAV files written.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for receiver, recording in recordings:
        path = write_kiwi_wav(
            out / kiwi_wav_name(start_utc, frequency_hz, receiver.name), recording
        )
        write_gnss_pos(out, receiver)
        written.append(path)
    return written
