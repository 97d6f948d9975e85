"""Captures appended to the IQ store while they are received, one chunk per receiver at a time.

A streamed capture has the layout of any stored capture (``iq`` with dims ``(receiver,
sample)``, the per-frame GNSS variables with dims ``(receiver, frame)``, the per-receiver
coordinates; see :func:`heimdall_lab.dataset.build_dataset`), sized for the whole duration
when it starts and filled chunk by chunk:

- :meth:`CaptureWriter.create` writes the metadata (every array's ``zarr.json``, the
  consolidated root, the receivers' names and positions) and a manifest
  (:data:`STREAM_MANIFEST`). Nothing else is held for the capture: memory is the chunk being
  written, whatever the duration.
- :meth:`CaptureWriter.write_chunk` writes one receiver's chunk of
  :attr:`StreamLayout.frames_per_chunk` frames (512 samples each): the IQ object first, the
  per-frame variables next, and ``frame_seq`` last. A chunk whose ``frame_seq`` object is
  in the store is therefore whole (objects are written atomically: a local file by rename, an
  S3 object by one PUT), and the stored extent of a receiver is its count of frames with a
  sequence number (:func:`stored_frames`).
- :meth:`CaptureWriter.finish` derives each receiver's sample rate, start time, mean RSSI,
  lost frames and timing check from its stored frames (read back, so nothing per frame is
  held while receiving), rewrites the frame times from the whole stream's timing, and writes
  the completion marker. A capture whose process died is finished the same way by
  :func:`finish_stream` (``heimdall-lab sync``), every receiver marked incomplete.

While the capture runs, :meth:`heimdall_lab.store.IQStore.open` opens it lazily as it stands
(``attrs["heimdall:state"] == "in progress"``), trimmed to its extent so far.
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
import zarr
from zarr.codecs import BloscCodec

from heimdall_lab import gnss
from heimdall_lab.dataset import _NAN_IQ, build_dataset, mean_db
from heimdall_lab.errors import StorageError, ValidationError
from heimdall_lab.ids import check_capture_id, check_receiver_name
from heimdall_lab.processing import interval_rows, stored_measurement_rows
from heimdall_lab.receivers import Receiver
from heimdall_lab.recording import FRAME_SAMPLES, NOMINAL_RATE, Recording
from heimdall_lab.urls import mask_url
from heimdall_lab.versions import __version__

if TYPE_CHECKING:
    from heimdall_lab.store.iq import IQStore

log = logging.getLogger(__name__)

#: Name of the manifest a streamed capture has from its start (its layout and receivers).
STREAM_MANIFEST = "heimdall-stream.json"
#: Largest chunk, in frames (about 87 s at 12 kS/s; 1.5 MiB of IQ per receiver in memory).
MAX_FRAMES_PER_CHUNK = 2048
#: The fastest IQ rate a KiwiSDR announces (its wide mode), Hz: a stream has room for it.
WIDEST_RATE = 20250.0

#: Per-frame variables: dtype and the fill of frames not (yet) received. ``frame_seq`` is last:
#: it is written last, and a frame with a sequence number is stored.
FRAME_VARS: dict[str, tuple[str, Any]] = {
    "frame_time": ("M8[ns]", np.datetime64("NaT", "ns")),
    "frame_start": ("int64", -1),
    "frame_gpssec": ("int64", -1),
    "frame_gpsnsec": ("int64", -1),
    "frame_gps_solution": ("int16", -1),
    "frame_trusted": ("bool", False),
    "frame_rssi_dbm": ("float32", np.nan),
    "frame_seq": ("int64", -1),
}
#: Per-receiver coordinates derived from the stored frames (:func:`receiver_summary`).
SUMMARY_COORDS = (
    "sample_rate",
    "start_time",
    "rssi_dbm",
    "n_samples",
    "lost_frames",
    "complete",
    "timing_ok",
)
_IQ_CODEC = BloscCodec(cname="lz4", clevel=5, shuffle="shuffle", typesize=4)
_TIME_UNITS = "nanoseconds since 1970-01-01"


@dataclass(frozen=True)
class StreamLayout:
    """How a streamed capture is cut: frames per chunk and frames in all.

    Attributes
    ----------
    frames_per_chunk : int
        Frames of one receiver per chunk (and per measurement interval).
    capacity_frames : int
        Frames each receiver may deliver at most (the arrays' length).
    """

    frames_per_chunk: int
    capacity_frames: int

    def __post_init__(self) -> None:
        if not 1 <= self.frames_per_chunk <= MAX_FRAMES_PER_CHUNK:
            raise ValidationError(
                f"a chunk holds 1 to {MAX_FRAMES_PER_CHUNK} frames, got {self.frames_per_chunk}"
            )
        if self.capacity_frames < 1:
            raise ValidationError(
                f"capacity must be at least one frame, got {self.capacity_frames}"
            )

    @classmethod
    def for_duration(
        cls,
        duration_s: float,
        interval_s: float,
        rate: float = NOMINAL_RATE,
        extra_frames: int = 0,
    ) -> StreamLayout:
        """The layout of ``duration_s`` seconds in intervals of about ``interval_s``.

        Parameters
        ----------
        duration_s : float
            Seconds of IQ asked from each receiver.
        interval_s : float
            Seconds per chunk (and measurement interval): the duration is cut into
            ``round(duration_s / interval_s)`` intervals of whole frames (at least one), the
            last a little shorter.
        rate : float, optional
            Nominal sample rate.
        extra_frames : int, optional
            Frames a receiver may deliver beyond the duration (a dwell that ends in a retune
            keeps the frames still at its frequency).

        Returns
        -------
        StreamLayout
            Room for the duration at up to :data:`WIDEST_RATE`, plus two frames (a
            server's last frame may run past it) and ``extra_frames``.
        """
        frames = math.ceil(duration_s * rate / FRAME_SAMPLES) + 2
        # Whole intervals of nearly equal length, the last taking the slack: no sliver of
        # an interval at the end to measure on its own.
        n = max(1, round(duration_s / interval_s))
        per_chunk = math.ceil(frames / n)
        # Room for a receiver in the KiwiSDR's wide mode too (its intervals are shorter).
        widest = math.ceil(duration_s * max(rate, WIDEST_RATE) / FRAME_SAMPLES) + 2 + extra_frames
        return cls(min(per_chunk, MAX_FRAMES_PER_CHUNK), widest)

    @property
    def samples_per_chunk(self) -> int:
        """Samples of one receiver per chunk."""
        return self.frames_per_chunk * FRAME_SAMPLES

    @property
    def chunks(self) -> int:
        """Chunks per receiver at most."""
        return math.ceil(self.capacity_frames / self.frames_per_chunk)


def _template(
    receivers: Sequence[Receiver], layout: StreamLayout, attrs: Mapping[str, Any]
) -> tuple[xr.Dataset, dict[str, dict[str, Any]]]:
    """The whole capture as lazy fill values (nothing allocated), and its zarr encoding."""
    n = len(receivers)
    frames = layout.chunks * layout.frames_per_chunk
    samples = frames * FRAME_SAMPLES
    fpc, spc = layout.frames_per_chunk, layout.samples_per_chunk
    data: dict[str, Any] = {
        "iq": (
            ("receiver", "sample"),
            da.full((n, samples), _NAN_IQ, chunks=(1, spc), dtype=np.complex64),
            {"long_name": "complex baseband samples", "units": "full scale"},
        )
    }
    encoding: dict[str, dict[str, Any]] = {
        "iq": {"chunks": (1, spc), "compressors": (_IQ_CODEC,), "fill_value": _NAN_IQ}
    }
    for name, (dtype, fill) in FRAME_VARS.items():
        data[name] = (
            ("receiver", "frame"),
            da.full((n, frames), fill, chunks=(1, fpc), dtype=dtype),
        )
        encoding[name] = {"chunks": (1, fpc)}
        if dtype == "M8[ns]":
            encoding[name].update(
                units=_TIME_UNITS, dtype="int64", fill_value=np.iinfo(np.int64).min
            )
        else:
            encoding[name]["fill_value"] = fill
    nan = np.full(n, np.nan)
    coords: dict[str, Any] = {
        "receiver": np.array([r.name for r in receivers], dtype=object),
        "latitude": ("receiver", [r.latitude for r in receivers]),
        "longitude": ("receiver", [r.longitude for r in receivers]),
        "calibration_db": ("receiver", [r.calibration_db for r in receivers]),
        "nominal_rate": (
            "receiver",
            np.full(n, float(attrs.get("core:sample_rate", NOMINAL_RATE))),
        ),
        "sample_rate": ("receiver", nan),
        "start_time": ("receiver", np.full(n, np.datetime64("NaT", "ns"))),
        "rssi_dbm": ("receiver", nan.copy()),
        "n_samples": ("receiver", np.zeros(n, np.int64)),
        "lost_frames": ("receiver", np.zeros(n, np.int64)),
        "complete": ("receiver", np.zeros(n, bool)),
        "timing_ok": ("receiver", np.zeros(n, bool)),
    }
    ds = xr.Dataset(data, coords=coords, attrs=dict(attrs))
    ds["frame_time"].attrs = {"long_name": "GNSS (UTC) time of each frame's first sample"}
    encoding["start_time"] = {"units": _TIME_UNITS, "dtype": "int64"}
    return ds, encoding


def _quiet_to_zarr(ds: xr.Dataset, objects: dict[str, Any], **kwargs: Any) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        warnings.filterwarnings("ignore", category=UserWarning, module="zarr")
        ds.to_zarr(zarr.storage.MemoryStore(objects), zarr_format=3, **kwargs)


def _new_objects(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in after.items() if before.get(k) is not v}


def frame_arrays(rec: Recording, first_frame: int, reference: Any) -> dict[str, np.ndarray]:
    """The per-frame variables of some frames of a recording, as stored.

    Parameters
    ----------
    rec : Recording
        The frames (all of 512 samples).
    first_frame : int
        Index of its first frame in the receiver's stream (``frame_start`` is counted from
        the stream's first sample).
    reference : datetime, numpy.datetime64 or None
        To resolve the GPS week.

    Returns
    -------
    dict of str to numpy.ndarray
        One array per :data:`FRAME_VARS` name.
    """
    return {
        "frame_time": rec.frame_times(reference).astype("M8[ns]"),
        "frame_start": rec.frame_start.astype(np.int64) + first_frame * FRAME_SAMPLES,
        "frame_gpssec": rec.gpssec.astype(np.int64),
        "frame_gpsnsec": rec.gpsnsec.astype(np.int64),
        "frame_gps_solution": rec.last_gps_solution.astype(np.int16),
        "frame_trusted": rec.trusted.astype(bool),
        "frame_rssi_dbm": rec.rssi_dbm.astype(np.float32),
        "frame_seq": rec.seq.astype(np.int64),
    }


def recording_of(frames: Mapping[str, np.ndarray], nominal_rate: float) -> Recording:
    """A receiver's stored frames as a :class:`Recording` without samples (timing only).

    Parameters
    ----------
    frames : mapping of str to numpy.ndarray
        The receiver's :data:`FRAME_VARS` arrays, cut to its stored frames.
    nominal_rate : float
        The announced rate.

    Returns
    -------
    Recording
        Its ``samples`` are empty; every timing property works.
    """
    return Recording(
        frame_start=np.asarray(frames["frame_start"], np.int64),
        seq=np.asarray(frames["frame_seq"], np.int64),
        last_gps_solution=np.asarray(frames["frame_gps_solution"]).astype(np.uint8),
        gpssec=np.asarray(frames["frame_gpssec"], np.int64),
        gpsnsec=np.asarray(frames["frame_gpsnsec"], np.int64),
        rssi_dbm=np.asarray(frames["frame_rssi_dbm"], np.float32),
        nominal_rate=float(nominal_rate),
    )


def stored_frames(frame_seq: np.ndarray) -> int:
    """Frames stored of one receiver: those with a sequence number, counted from the first.

    Parameters
    ----------
    frame_seq : numpy.ndarray
        The receiver's ``frame_seq`` row (-1 where nothing is stored).

    Returns
    -------
    int
        The length of the leading run of stored frames.
    """
    missing = np.flatnonzero(np.asarray(frame_seq) < 0)
    return int(missing[0]) if len(missing) else len(frame_seq)


def receiver_summary(
    frames: Mapping[str, np.ndarray],
    nominal_rate: float,
    reference: Any,
    *,
    complete: bool,
    arrival_utc: np.datetime64 | None = None,
    stream_problems: Sequence[str] = (),
) -> tuple[dict[str, Any], Recording]:
    """One receiver's coordinates from its stored frames.

    Parameters
    ----------
    frames : mapping of str to numpy.ndarray
        Its :data:`FRAME_VARS` arrays, cut to the stored frames.
    nominal_rate : float
        The announced rate.
    reference : datetime, numpy.datetime64 or None
        To resolve the GPS week.
    complete : bool
        Whether it delivered the whole duration.
    arrival_utc : numpy.datetime64, optional
        When its first frame arrived (a live stream's clock check).
    stream_problems : sequence of str, optional
        Timing problems only the receiving side saw (:attr:`Recording.stream_problems`).

    Returns
    -------
    tuple of (dict, Recording)
        The :data:`SUMMARY_COORDS` values, and the timing-only recording they came from.
    """
    rec = recording_of(frames, nominal_rate)
    rec.arrival_utc = arrival_utc
    rec.stream_problems = tuple(stream_problems)
    summary = {
        "sample_rate": rec.sample_rate(),
        "start_time": rec.start_time(reference),
        "rssi_dbm": mean_db(rec.rssi_dbm),
        "n_samples": rec.n_frames * FRAME_SAMPLES,
        "lost_frames": rec.lost_frames,
        "complete": bool(complete),
        "timing_ok": rec.timing_ok,
    }
    return summary, rec


class CaptureWriter:
    """Write one capture to an IQ store while it is received.

    Parameters
    ----------
    store : IQStore
        Where it goes.
    capture_id : str
        Its id.
    receivers : sequence of Receiver
        Its receivers, in order (their index is the row in every array).
    layout : StreamLayout
        Chunking and capacity.
    attrs : mapping
        The Dataset's attributes (SigMF names, parameters, ...).
    reference : datetime, numpy.datetime64 or None
        To resolve the GPS week of the frame times (the wall clock when None).

    Raises
    ------
    ValidationError
        An unsafe id or receiver name, or repeated names.
    """

    def __init__(
        self,
        store: IQStore,
        capture_id: str,
        receivers: Sequence[Receiver],
        layout: StreamLayout,
        attrs: Mapping[str, Any],
        reference: Any = None,
    ) -> None:
        self.store = store
        self.capture_id = check_capture_id(capture_id)
        names = [check_receiver_name(r.name) for r in receivers]
        if len(set(names)) != len(names):
            raise ValidationError(f"capture {capture_id}: receiver names repeat: {names}")
        self.receivers = list(receivers)
        self.layout = layout
        self.attrs = {**dict(attrs), "capture_id": self.capture_id}
        self.reference = reference
        self.prefix = store._prefix(self.capture_id)
        self._meta: dict[str, Any] = {}
        nominal = float(self.attrs.get("core:sample_rate", NOMINAL_RATE))
        self._rates = [nominal] * len(self.receivers)
        self.chunks_written = 0
        self.bytes_written = 0

    @property
    def url(self) -> str:
        """The capture's URL in the store (credentials masked)."""
        return mask_url(self.store.url_for(self.capture_id))

    def _put(self, objects: Mapping[str, Any], order: Sequence[str] | None = None) -> None:
        """Write objects (zarr Buffers or bytes), each atomically, in the order given."""
        keys = list(order) if order is not None else list(objects)
        for key in keys:
            value = objects[key]
            raw = value if isinstance(value, bytes) else value.to_bytes()
            path = f"{self.prefix}/{key}"
            if self.store.local:
                self.store._call("write to", _atomic_local_write, path, raw)
            else:
                self.store._call("write to", self.store.fs.pipe_file, path, raw)
            self.bytes_written += len(raw)

    def create(self) -> None:
        """Write the metadata and the manifest; replaces any earlier copy of the capture.

        Raises
        ------
        StorageError
            If the store cannot be written.
        """
        ds, encoding = _template(self.receivers, self.layout, self.attrs)
        objects: dict[str, Any] = {}
        _quiet_to_zarr(ds, objects, mode="w", consolidated=True, encoding=encoding, compute=False)
        self._meta = dict(objects)
        self.store._rm(f"{self.prefix}/{_marker_name()}")
        self.store._rm(self.prefix, recursive=True)
        manifest = json.dumps(
            {
                "format": "heimdall_lab streamed capture",
                "capture_id": self.capture_id,
                "receivers": [r.name for r in self.receivers],
                "frames_per_chunk": self.layout.frames_per_chunk,
                "capacity_frames": self.layout.capacity_frames,
                "started_at": datetime.now(UTC).isoformat(),
                "software_version": __version__,
            },
            indent=1,
        ).encode()
        root = [k for k in objects if k != "zarr.json"]
        self._put(objects, [*root, "zarr.json"])
        self._put({STREAM_MANIFEST: manifest})
        log.info("IQ store: streaming capture %s to %s", self.capture_id, self.url)

    def set_rate(self, index: int, rate: float) -> None:
        """Record the sample rate a receiver announced (its ``nominal_rate``), once known.

        Parameters
        ----------
        index : int
            The receiver's row.
        rate : float
            The rate, Hz.

        Raises
        ------
        StorageError
            If the store cannot be written.
        """
        if self._rates[index] == rate:
            return
        self._rates[index] = float(rate)
        part = xr.Dataset(coords={"nominal_rate": ("receiver", np.array(self._rates))})
        objects = dict(self._meta)
        _quiet_to_zarr(
            part, objects, mode="r+", region={"receiver": slice(None)}, consolidated=False
        )
        self._put(_new_objects(self._meta, objects))

    def write_chunk(self, index: int, chunk: int, rec: Recording) -> None:
        """Write one receiver's chunk.

        Parameters
        ----------
        index : int
            The receiver's row.
        chunk : int
            The chunk number (chunks of a receiver are written in order).
        rec : Recording
            The chunk's frames, at most :attr:`StreamLayout.frames_per_chunk`, 512 samples
            each (its ``frame_start`` counted from the chunk's first sample).

        Raises
        ------
        ValidationError
            A chunk past the capacity, too many frames, or frames not of 512 samples.
        StorageError
            If the store cannot be written.
        """
        fpc = self.layout.frames_per_chunk
        n = rec.n_frames
        if n == 0:
            return
        if n > fpc or not 0 <= chunk < self.layout.chunks:
            raise ValidationError(
                f"chunk {chunk} of {n} frames does not fit {self.layout.chunks} chunks "
                f"of {fpc} frames"
            )
        if len(rec.samples) != n * FRAME_SAMPLES:
            raise ValidationError(f"a chunk of {n} frames must hold {n * FRAME_SAMPLES} samples")
        f0 = chunk * fpc
        arrays = frame_arrays(rec, f0, self.reference)
        part = xr.Dataset(
            {
                "iq": (("receiver", "sample"), rec.samples.astype(np.complex64)[None, :]),
                **{k: (("receiver", "frame"), v[None, :]) for k, v in arrays.items()},
            }
        )
        region = {
            "receiver": slice(index, index + 1),
            "sample": slice(f0 * FRAME_SAMPLES, (f0 + n) * FRAME_SAMPLES),
            "frame": slice(f0, f0 + n),
        }
        objects = dict(self._meta)
        _quiet_to_zarr(part, objects, mode="r+", region=region, consolidated=False)
        new = _new_objects(self._meta, objects)
        # IQ first, frame_seq last: a stored sequence number means the whole chunk is there.
        order = sorted(new, key=lambda k: (not k.startswith("iq/"), k.startswith("frame_seq/")))
        self._put(new, order)
        self.chunks_written += 1

    def finish(
        self,
        complete: Mapping[str, bool],
        arrival_utc: Mapping[str, np.datetime64 | None] | None = None,
        stream_problems: Mapping[str, Sequence[str]] | None = None,
    ) -> dict[str, Any]:
        """Derive the receivers' coordinates from their stored frames and mark it complete.

        Parameters
        ----------
        complete : mapping of str to bool
            Per receiver: whether it delivered the whole duration.
        arrival_utc : mapping of str to numpy.datetime64, optional
            Per receiver: when its first frame arrived (the live clock check).
        stream_problems : mapping of str to sequence of str, optional
            Per receiver: timing problems only its stream showed.

        Returns
        -------
        dict
            The completion marker written.

        Raises
        ------
        StorageError
            If the store cannot be read or written.
        """
        return finish_stream(
            self.store,
            self.capture_id,
            complete,
            arrival_utc,
            reference=self.reference,
            stream_problems=stream_problems,
        )


def _marker_name() -> str:
    from heimdall_lab.store.iq import MARKER

    return MARKER


def _atomic_local_write(path: str, data: bytes) -> None:
    """Write a local file so that it is either whole or absent (write aside, then rename)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def read_manifest(store: IQStore, capture_id: str) -> dict[str, Any] | None:
    """A streamed capture's manifest, or None for a capture written whole (or absent).

    Parameters
    ----------
    store : IQStore
        The store.
    capture_id : str
        The capture.

    Returns
    -------
    dict or None
        The manifest.
    """
    path = f"{store._prefix(capture_id)}/{STREAM_MANIFEST}"
    try:
        raw = store._call("read", store.fs.cat_file, path, passthrough=(FileNotFoundError,))
    except FileNotFoundError:
        return None
    try:
        manifest = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return manifest if isinstance(manifest, dict) else None


def stored_summaries(
    ds: xr.Dataset,
    reference: Any = None,
    complete: Mapping[str, bool] | None = None,
    arrival_utc: Mapping[str, np.datetime64 | None] | None = None,
    stream_problems: Mapping[str, Sequence[str]] | None = None,
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, np.ndarray]]]:
    """Each receiver's coordinates and frames, from what a streamed capture has stored.

    Parameters
    ----------
    ds : xarray.Dataset
        The streamed capture as opened (untrimmed; only the per-frame variables are read).
    reference : datetime, numpy.datetime64 or None
        To resolve the GPS week.
    complete : mapping of str to bool, optional
        Which receivers delivered the whole duration (none by default).
    arrival_utc : mapping of str to numpy.datetime64, optional
        When each receiver's first frame arrived.
    stream_problems : mapping of str to sequence of str, optional
        Timing problems only each receiver's stream showed.

    Returns
    -------
    tuple of (dict, dict)
        Per receiver name: its :data:`SUMMARY_COORDS`, and its frame arrays (stored frames
        only, with ``frame_time`` and ``frame_trusted`` from the whole stream's timing).
    """
    reference = _reference(ds, reference)
    frames_all = ds[list(FRAME_VARS)].load()
    summaries: dict[str, dict[str, Any]] = {}
    frames: dict[str, dict[str, np.ndarray]] = {}
    for i, name in enumerate(str(n) for n in ds["receiver"].values):
        n = stored_frames(frames_all["frame_seq"].values[i])
        mine = {k: frames_all[k].values[i, :n] for k in FRAME_VARS}
        live = mine["frame_time"]  # as the live capture judged each interval's times
        summary, rec = receiver_summary(
            mine,
            float(ds["nominal_rate"].values[i]),
            reference,
            complete=bool((complete or {}).get(name, False)),
            arrival_utc=(arrival_utc or {}).get(name),
            stream_problems=[*(stream_problems or {}).get(name, ()), *_rejected(mine)],
        )
        # A frame whose time the live capture rejected keeps no time, whatever the whole says.
        mine["frame_time"] = np.where(
            np.isnat(live), np.datetime64("NaT", "ns"), rec.frame_times(reference)
        ).astype("M8[ns]")
        mine["frame_trusted"] = rec.trusted.astype(bool) & ~np.isnat(live)
        summaries[name], frames[name] = summary, mine
    return summaries, frames


def _reference(ds: xr.Dataset, reference: Any) -> Any:
    """The GPS-week reference given, else the one the capture stored (not the wall clock)."""
    if reference is not None:
        return reference
    stored = ds.attrs.get("heimdall:gps_reference")
    return np.datetime64(str(stored), "ns") if stored else None


#: What a recording rebuilt from the store says when the live capture rejected its times.
REJECTED_LIVE = "its GNSS times were rejected when it was received"


def _rejected(frames: Mapping[str, np.ndarray]) -> tuple[str, ...]:
    """:data:`REJECTED_LIVE` when frames with a fix were stored without a time, else nothing.

    The live capture writes each interval's frame times only when its timing passed every
    check (the computer's clock included, which a rebuilt recording cannot repeat).
    """
    fixed = gnss.has_fix(np.asarray(frames["frame_gps_solution"]).astype(np.uint8))
    times = np.asarray(frames["frame_time"])
    if fixed.any() and np.isnat(times[fixed]).all():
        return (REJECTED_LIVE,)
    return ()


def finish_stream(
    store: IQStore,
    capture_id: str,
    complete: Mapping[str, bool] | None = None,
    arrival_utc: Mapping[str, np.datetime64 | None] | None = None,
    *,
    reference: Any = None,
    stream_problems: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """Complete a streamed capture as stored: coordinates from its frames, then the marker.

    Used at the end of a capture, and by recovery for a capture whose process died: what
    was stored is kept, nothing is written twice, and each receiver is as complete as said
    (incomplete by default).

    Parameters
    ----------
    store : IQStore
        The store.
    capture_id : str
        The capture.
    complete : mapping of str to bool, optional
        Receivers that delivered the whole duration.
    arrival_utc : mapping of str to numpy.datetime64, optional
        When each receiver's first frame arrived.
    reference : datetime, numpy.datetime64 or None
        To resolve the GPS week.
    stream_problems : mapping of str to sequence of str, optional
        Timing problems only each receiver's stream showed.

    Returns
    -------
    dict
        The completion marker: receivers stored, skipped (no frames), frames per receiver.

    Raises
    ------
    StorageError
        If the capture was not streamed to this store, or the store fails.
    """
    from heimdall_lab.store.iq import MARKER

    manifest = read_manifest(store, capture_id)
    url = mask_url(store.url_for(capture_id))
    if manifest is None:
        raise StorageError(f"capture {capture_id} at {url} was not streamed there", url=url)
    ds = store._call("read", store._open_zarr, capture_id)
    reference = _reference(ds, reference)
    summaries, frames = stored_summaries(ds, reference, complete, arrival_utc, stream_problems)
    names = [str(n) for n in ds["receiver"].values]
    width = ds.sizes["frame"]
    coords = {}
    for key in SUMMARY_COORDS:
        values = [summaries[n][key] for n in names]
        coords[key] = (
            "receiver",
            np.array(values, dtype="M8[ns]" if key == "start_time" else None),
        )
    times = np.full((len(names), width), np.datetime64("NaT", "ns"))
    trusted = np.zeros((len(names), width), bool)
    for i, n in enumerate(names):
        k = len(frames[n]["frame_seq"])
        times[i, :k] = frames[n]["frame_time"]
        trusted[i, :k] = frames[n]["frame_trusted"]
    writer = CaptureWriter(store, capture_id, [], StreamLayout(1, 1), {})
    final = xr.Dataset(
        {
            "frame_time": (("receiver", "frame"), times),
            "frame_trusted": (("receiver", "frame"), trusted),
        },
        coords=coords,
    )
    meta: dict[str, Any] = {}
    template = store._call("read", _metadata_objects, store, capture_id)
    meta.update(template)
    objects = dict(meta)
    _quiet_to_zarr(
        final,
        objects,
        mode="r+",
        region={"receiver": slice(None), "frame": slice(None)},
        consolidated=False,
    )
    writer._put(_new_objects(meta, objects))
    stored = [n for n in names if summaries[n]["n_samples"] > 0]
    marker = {
        "format": "heimdall_lab IQ store",
        "format_version": 1,
        "layout": "stream",
        "complete": True,
        "capture_id": capture_id,
        "receivers": stored,
        "skipped": {n: "no samples received" for n in names if n not in stored},
        "frames": {n: len(frames[n]["frame_seq"]) for n in names},
        "incomplete": sorted(n for n in stored if not summaries[n]["complete"]),
        "written_at": datetime.now(UTC).isoformat(),
        "software_version": __version__,
    }
    writer._put({MARKER: json.dumps(marker, indent=1).encode()})
    log.info(
        "IQ store: capture %s complete at %s (%d receivers, %d incomplete)",
        capture_id,
        url,
        len(stored),
        len(marker["incomplete"]),
    )
    return marker


def _metadata_objects(store: IQStore, capture_id: str) -> dict[str, Any]:
    """Every ``zarr.json`` of a capture, as bytes keyed like the store's objects."""
    from zarr.core.buffer import default_buffer_prototype

    prefix = store._prefix(capture_id)
    paths = [p for p in store.fs.find(prefix) if p.endswith("zarr.json")]
    out = {}
    for p in paths:
        key = p[len(prefix.rstrip("/")) + 1 :] if p.startswith(prefix) else p.split(".zarr/", 1)[1]
        out[key] = default_buffer_prototype().buffer.from_bytes(store.fs.cat_file(p))
    return out


def trim_stream(ds: xr.Dataset, *, in_progress: bool, reference: Any = None) -> xr.Dataset:
    """A streamed capture cut to what is stored; in progress, with coordinates derived now.

    Parameters
    ----------
    ds : xarray.Dataset
        As opened, at full capacity.
    in_progress : bool
        Whether it is still being written (no completion marker): its per-receiver
        coordinates are then derived from the frames stored so far.
    reference : datetime, numpy.datetime64 or None
        To resolve the GPS week (in progress only).

    Returns
    -------
    xarray.Dataset
        Cut to the longest receiver; receivers with no samples left out.
    """
    if in_progress:
        summaries, _ = stored_summaries(ds, reference)
        names = [str(n) for n in ds["receiver"].values]
        ds = ds.assign_coords(
            {
                key: (
                    "receiver",
                    np.array(
                        [summaries[n][key] for n in names],
                        dtype="M8[ns]" if key == "start_time" else None,
                    ),
                )
                for key in SUMMARY_COORDS
            }
        )
        ds.attrs["heimdall:state"] = "in progress"
    counts = ds["n_samples"].values.astype(np.int64)
    keep = [i for i, c in enumerate(counts) if c > 0]
    ds = ds.isel(receiver=keep)
    longest = int(counts[keep].max()) if keep else 0
    ds = ds.isel(sample=slice(0, longest), frame=slice(0, longest // FRAME_SAMPLES))
    if in_progress:
        ds.attrs["heimdall:extent_samples"] = {
            str(n): int(c) for n, c in zip(ds["receiver"].values, counts[keep], strict=True)
        }
    return ds


def stored_recording(ds: xr.Dataset, name: str) -> Recording:
    """One receiver of a stored capture as a :class:`Recording`, its samples read now.

    Parameters
    ----------
    ds : xarray.Dataset
        A stored capture as opened.
    name : str
        The receiver.

    Returns
    -------
    Recording
        Its frames and samples (what it delivered, no padding).
    """
    one = ds.sel(receiver=name)
    n = stored_frames(one["frame_seq"].values)
    rec = recording_of({k: one[k].values[:n] for k in FRAME_VARS}, float(one["nominal_rate"]))
    rec.samples = np.asarray(one["iq"][: n * FRAME_SAMPLES].values, np.complex64)
    return rec


def interval_start(attrs: Mapping[str, Any], chunk: int, frames_per_chunk: int) -> np.datetime64:
    """The nominal start of an interval: the capture's start plus the intervals before it.

    Parameters
    ----------
    attrs : mapping
        The capture's attributes (``core:datetime``, ``core:sample_rate``).
    chunk : int
        The interval's number.
    frames_per_chunk : int
        Frames per interval.

    Returns
    -------
    numpy.datetime64
        In ns; the time of a measurement row whose GNSS time is unusable, the same for the
        live capture and its recovery.
    """
    start = np.datetime64(str(attrs["core:datetime"]).rstrip("Z"), "ns")
    rate = float(attrs.get("core:sample_rate", NOMINAL_RATE))
    offset = round(chunk * frames_per_chunk * FRAME_SAMPLES / rate * 1e9)
    return start + np.timedelta64(offset, "ns")


def stored_intervals(
    ds: xr.Dataset, frames_per_chunk: int
) -> Iterator[tuple[Receiver, int, Recording, bool]]:
    """Each receiver's stored intervals, as the live capture handed them to its measurements.

    Parameters
    ----------
    ds : xarray.Dataset
        A streamed capture as opened (complete or not).
    frames_per_chunk : int
        Frames per interval (the manifest's).

    Yields
    ------
    tuple of (Receiver, int, Recording, bool)
        The receiver (name, position and calibration as stored), the interval number, its
        frames and samples (``frame_start`` from the interval's start), and whether it is
        whole (every interval but a receiver's last, and that one when the receiver
        delivered the whole duration). One interval's IQ is read at a time.
    """
    frames = ds[list(FRAME_VARS)].load()
    for i, name in enumerate(str(n) for n in ds["receiver"].values):
        receiver = Receiver(
            name,
            "127.0.0.1",  # an address is required; the stored capture does not keep it
            latitude=float(ds["latitude"].values[i]),
            longitude=float(ds["longitude"].values[i]),
            calibration_db=float(ds["calibration_db"].values[i]),
        )
        n = stored_frames(frames["frame_seq"].values[i])
        nominal = float(ds["nominal_rate"].values[i])
        whole = bool(ds["complete"].values[i]) if "complete" in ds.coords else False
        last = math.ceil(n / frames_per_chunk) - 1
        for c in range(last + 1):
            f0, f1 = c * frames_per_chunk, min(n, (c + 1) * frames_per_chunk)
            mine = {k: frames[k].values[i, f0:f1] for k in FRAME_VARS}
            rec = recording_of(mine, nominal)
            rec.stream_problems = _rejected(mine)
            rec.frame_start = rec.frame_start - f0 * FRAME_SAMPLES
            rec.samples = np.asarray(
                ds["iq"].values[i, f0 * FRAME_SAMPLES : f1 * FRAME_SAMPLES]
                if isinstance(ds["iq"].data, np.ndarray)
                else ds["iq"].data[i, f0 * FRAME_SAMPLES : f1 * FRAME_SAMPLES].compute()
            )
            yield receiver, c, rec, c < last or whole


def stored_interval_rows(ds: xr.Dataset, iq_url: str | None) -> pd.DataFrame:
    """The measurement rows of a stored capture, as the live capture wrote them.

    A capture recorded interval by interval (its ``heimdall:frames_per_interval``
    attribute) gets one row per receiver per stored interval
    (:func:`heimdall_lab.processing.interval_rows`); any other stored capture (an import,
    a file) one row per receiver (:func:`heimdall_lab.processing.stored_measurement_rows`).

    Parameters
    ----------
    ds : xarray.Dataset
        The stored capture as opened (its per-frame variables included).
    iq_url : str or None
        Where it is stored.

    Returns
    -------
    pandas.DataFrame
        The rows, as :func:`heimdall_lab.db.write_measurements` takes them.
    """
    if "heimdall:frames_per_interval" not in ds.attrs or "frame_seq" not in ds:
        return stored_measurement_rows(ds, iq_url or "")
    fpc = int(ds.attrs["heimdall:frames_per_interval"])
    reference = ds.attrs.get("heimdall:gps_reference") or None
    parts = []
    for receiver, c, rec, whole in stored_intervals(ds, fpc):
        one = interval_dataset(receiver, rec, ds.attrs, c, reference, complete=whole)
        _, rows = interval_rows(
            one, interval=c, interval_start_utc=interval_start(ds.attrs, c, fpc), iq_url=iq_url
        )
        parts.append(rows)
    parts = [p for p in parts if not p.empty]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def interval_dataset(
    receiver: Receiver,
    rec: Recording,
    attrs: Mapping[str, Any],
    chunk: int,
    reference: Any,
    *,
    complete: bool = True,
) -> xr.Dataset:
    """One receiver's interval as a capture Dataset.

    Parameters
    ----------
    receiver : Receiver
        The receiver.
    rec : Recording
        The interval's frames and samples.
    attrs : mapping
        The capture's attributes (``center_frequency_hz``, ``requested_duration_s``,
        ``capture_id``, ``heimdall:frames_per_interval``).
    chunk : int
        The interval's number (kept in the attributes).
    reference : datetime, numpy.datetime64, str or None
        To resolve the GPS week.
    complete : bool, default True
        Whether the interval is whole (False: a receiver's last, when its stream ended
        early).

    Returns
    -------
    xarray.Dataset
        As :func:`heimdall_lab.dataset.build_dataset` makes it.
    """
    ds = build_dataset(
        [(receiver, rec, complete)],
        float(attrs["center_frequency_hz"]),
        float(attrs["requested_duration_s"]),
        capture_id=str(attrs["capture_id"]),
        gps_reference=None if reference is None else np.datetime64(str(reference), "ns"),
    )
    ds.attrs["heimdall:interval"] = int(chunk)
    return ds


__all__ = [
    "FRAME_VARS",
    "STREAM_MANIFEST",
    "CaptureWriter",
    "StreamLayout",
    "finish_stream",
    "frame_arrays",
    "interval_dataset",
    "interval_start",
    "read_manifest",
    "receiver_summary",
    "recording_of",
    "stored_frames",
    "stored_interval_rows",
    "stored_intervals",
    "stored_recording",
    "stored_summaries",
    "trim_stream",
]
