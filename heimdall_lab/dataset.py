"""The capture Dataset: receivers' recordings as one xarray Dataset.

dims ``(receiver, sample)`` for the IQ and ``(receiver, frame)`` for the per-frame GNSS
timestamps; per-receiver coordinates for position, exact sample rate, start time, RSSI and
completeness; attributes with SigMF names where SigMF has one, so that export to SigMF is a
mapping, not a rewrite.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from heimdall_lab.errors import ValidationError
from heimdall_lab.receivers import Receiver
from heimdall_lab.recording import Recording
from heimdall_lab.values import NS_PER_S, iso_utc, to_utc_ns
from heimdall_lab.versions import __version__

log = logging.getLogger(__name__)

_NAN_IQ = np.complex64(complex(np.nan, np.nan))


def mean_db(values: np.ndarray) -> float:
    """Mean of dB values taken in the power domain, ignoring NaN.

    Parameters
    ----------
    values : numpy.ndarray
        Values in dB (or dBm).

    Returns
    -------
    float
        ``10 log10(mean(10^(v/10)))``; NaN when no value is finite.
    """
    finite = values[np.isfinite(values)].astype(np.float64)
    if len(finite) == 0:
        return float("nan")
    top = finite.max()  # factored out: no overflow, however large the values
    return float(top + 10 * np.log10(np.mean(10 ** ((finite - top) / 10))))


def _pad(rows: list[np.ndarray], fill: object, dtype: object) -> np.ndarray:
    width = max((len(r) for r in rows), default=0)
    out = np.full((len(rows), width), fill, dtype=dtype)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def build_dataset(
    entries: Sequence[tuple[Receiver, Recording, bool]],
    frequency_hz: float,
    duration_s: float,
    *,
    capture_id: str,
    gps_reference: datetime | np.datetime64 | None = None,
) -> xr.Dataset:
    """Assemble the capture Dataset from the receivers that delivered samples.

    Parameters
    ----------
    entries : sequence of (Receiver, Recording, bool)
        Each receiver with what it delivered and whether that is the whole duration.
    frequency_hz, duration_s : float
        What was asked.
    capture_id : str
        Identifier of the capture.
    gps_reference : datetime, optional
        To resolve the GPS week of the timestamps (wall clock by default).

    Returns
    -------
    xarray.Dataset
        dims ``(receiver, sample)`` and ``(receiver, frame)``: ``iq`` (complex64, full
        scale 1.0, NaN-padded), per-frame GNSS time, raw GPS time of week, sequence number,
        fix age, trusted flag and RSSI; per receiver its position, exact and nominal sample
        rate, time of the first sample, mean RSSI, sample count, completeness and whether its
        timing passed :attr:`Recording.timing_problems` (when not, its ``start_time``,
        ``frame_time`` and ``frame_trusted`` say nothing: its GNSS times are not used). Attributes
        use SigMF names where SigMF has them.
    """
    receivers = [e[0] for e in entries]
    recs = [e[1] for e in entries]
    names = [r.name for r in receivers]
    iq = _pad([r.samples for r in recs], np.complex64(complex(np.nan, np.nan)), np.complex64)
    starts = [r.start_time(gps_reference) for r in recs]
    ds = xr.Dataset(
        {
            "iq": (("receiver", "sample"), iq),
            "frame_time": (
                ("receiver", "frame"),
                _pad([r.frame_times(gps_reference) for r in recs], np.datetime64("NaT"), "M8[ns]"),
            ),
            "frame_start": (
                ("receiver", "frame"),
                _pad([r.frame_start for r in recs], -1, np.int64),
            ),
            "frame_seq": (("receiver", "frame"), _pad([r.seq for r in recs], -1, np.int64)),
            "frame_gpssec": (("receiver", "frame"), _pad([r.gpssec for r in recs], -1, np.int64)),
            "frame_gpsnsec": (("receiver", "frame"), _pad([r.gpsnsec for r in recs], -1, np.int64)),
            "frame_gps_solution": (
                ("receiver", "frame"),
                _pad([r.last_gps_solution.astype(np.int16) for r in recs], -1, np.int16),
            ),
            "frame_trusted": (("receiver", "frame"), _pad([r.trusted for r in recs], False, bool)),
            "frame_rssi_dbm": (
                ("receiver", "frame"),
                _pad([r.rssi_dbm for r in recs], np.nan, np.float32),
            ),
        },
        coords={
            "receiver": names,
            "latitude": ("receiver", [r.latitude for r in receivers]),
            "longitude": ("receiver", [r.longitude for r in receivers]),
            "calibration_db": ("receiver", [r.calibration_db for r in receivers]),
            "sample_rate": ("receiver", [r.sample_rate() for r in recs]),
            "nominal_rate": ("receiver", [r.nominal_rate for r in recs]),
            "start_time": ("receiver", np.array(starts, dtype="M8[ns]")),
            "rssi_dbm": ("receiver", [mean_db(r.rssi_dbm) for r in recs]),
            "n_samples": ("receiver", np.array([len(r.samples) for r in recs], np.int64)),
            "lost_frames": ("receiver", np.array([r.lost_frames for r in recs], np.int64)),
            "complete": ("receiver", [bool(e[2]) for e in entries]),
            "timing_ok": ("receiver", [r.timing_ok for r in recs]),
        },
    )
    first = min((s for s in starts if not np.isnat(s)), default=None)
    nominal = float(np.median([r.nominal_rate for r in recs])) if recs else float("nan")
    ds.attrs = {
        "capture_id": capture_id,
        "center_frequency_hz": float(frequency_hz),
        "requested_duration_s": float(duration_s),
        "software_version": __version__,
        "iq_scale": "complex64, full scale 1.0 = int16 32768",
        "core:datatype": "cf32_le",
        "core:sample_rate": nominal,
        "core:frequency": float(frequency_hz),
        "core:datetime": "" if first is None else f"{np.datetime_as_string(first, 'us')}Z",
        "core:recorder": f"heimdall_lab {__version__}",
        "core:hw": "KiwiSDR",
    }
    ds["iq"].attrs = {"long_name": "complex baseband samples", "units": "full scale"}
    ds["frame_time"].attrs = {"long_name": "GNSS (UTC) time of each frame's first sample"}
    return ds


# -- time selection -------------------------------------------------------------------------

_FRAME_VARS = (
    "frame_time",
    "frame_start",
    "frame_seq",
    "frame_gpssec",
    "frame_gpsnsec",
    "frame_gps_solution",
    "frame_trusted",
    "frame_rssi_dbm",
)


def sample_range(
    start_time: np.datetime64, sample_rate: float, n_samples: int, start: object, end: object
) -> tuple[int, int]:
    """Indices ``[i0, i1)`` of one receiver's samples whose time is in ``[start, end)``.

    Sample ``k`` is at ``start_time + k / sample_rate``.

    Parameters
    ----------
    start_time : numpy.datetime64
        UTC time of sample 0.
    sample_rate : float
        Exact sample rate in Hz.
    n_samples : int
        Samples the receiver delivered.
    start, end : time or None
        Range bounds (open ends when ``None``).

    Returns
    -------
    tuple of int
        ``(i0, i1)`` with ``0 <= i0 <= i1 <= n_samples``.
    """
    t0 = np.datetime64(start_time, "ns").astype(np.int64)

    def index(bound: object, label: str) -> int:
        delta = int(to_utc_ns(bound, label).astype(np.int64)) - int(t0)
        return math.ceil(delta * sample_rate / NS_PER_S)

    i0 = 0 if start is None else index(start, "start")
    i1 = n_samples if end is None else index(end, "end")
    i0 = min(max(i0, 0), n_samples)
    i1 = min(max(i1, i0), n_samples)
    return i0, i1


def select_time(ds: xr.Dataset, start: object = None, end: object = None) -> xr.Dataset:
    """The samples of each receiver between two UTC times, re-based to sample 0.

    Each receiver keeps its samples in ``[start, end)`` (from its own ``start_time`` and exact
    ``sample_rate``), shifted so that its first kept sample is sample 0 and NaN-padded to the
    longest; ``start_time`` becomes the time of that sample, ``n_samples`` the count kept,
    and ``sample_offset`` (new) its index in the stored recording. Frames that start inside
    the range are kept with ``frame_start`` shifted likewise. ``iq`` stays lazy when it is
    dask-backed; the small per-frame variables are loaded.

    Parameters
    ----------
    ds : xarray.Dataset
        Capture Dataset.
    start, end : datetime, numpy.datetime64, pandas.Timestamp or str, optional
        UTC bounds (naive times are taken as UTC); open ends when omitted.

    Returns
    -------
    xarray.Dataset
        The selection. Receivers without a GNSS start time are dropped (and logged).

    Raises
    ------
    ValidationError
        If ``end`` is not after ``start`` or no receiver has a start time.
    """
    if start is not None and end is not None and to_utc_ns(end, "end") <= to_utc_ns(start, "start"):
        raise ValidationError(f"time range end {end} is not after start {start}")
    starts = ds["start_time"].values.astype("M8[ns]")
    usable = [i for i, t in enumerate(starts) if not np.isnat(t)]
    for i in sorted(set(range(ds.sizes["receiver"])) - set(usable)):
        log.warning(
            "receiver %s has no GNSS start time: left out of the time selection",
            ds["receiver"].values[i],
        )
    if not usable:
        raise ValidationError("no receiver has a GNSS start time: cannot select by time")
    ds = ds.isel(receiver=usable)
    starts = starts[usable]
    rates = ds["sample_rate"].values.astype(np.float64)
    counts = (
        ds["n_samples"].values.astype(np.int64)
        if "n_samples" in ds.coords
        else np.full(len(usable), ds.sizes["sample"], np.int64)
    )
    ranges = [
        sample_range(starts[r], rates[r], int(counts[r]), start, end) for r in range(len(usable))
    ]
    width = max(i1 - i0 for i0, i1 in ranges)
    iq = ds["iq"].data
    rows = []
    for r, (i0, i1) in enumerate(ranges):
        row = iq[r, i0:i1]
        pad = width - (i1 - i0)
        if pad:
            if isinstance(row, np.ndarray):
                row = np.concatenate([row, np.full(pad, _NAN_IQ)])
            else:
                row = da.concatenate([row, da.full(pad, _NAN_IQ, dtype=np.complex64)])
        rows.append(row)
    if isinstance(iq, np.ndarray):
        new_iq: Any = np.stack(rows) if rows else np.zeros((0, width), np.complex64)
    else:
        new_iq = da.stack(rows)
    frames = ds[[v for v in _FRAME_VARS if v in ds]].load() if "frame_start" in ds else None
    out = ds.drop_vars(["iq", *(list(frames.data_vars) if frames is not None else [])])
    out = out.drop_dims("sample", errors="ignore")
    if "frame" in out.dims:
        out = out.drop_dims("frame")
    out["iq"] = (("receiver", "sample"), new_iq, ds["iq"].attrs)
    if frames is not None:
        fstart = frames["frame_start"].values
        keep = [
            np.flatnonzero((fstart[r] >= i0) & (fstart[r] < i1))
            for r, (i0, i1) in enumerate(ranges)
        ]
        n_frames = max((len(k) for k in keep), default=0)
        for name in frames.data_vars:
            var = frames[name]
            values = var.values
            fill = _frame_fill(values.dtype)
            new = np.full((len(ranges), n_frames), fill, dtype=values.dtype)
            for r, k in enumerate(keep):
                sel = values[r, k]
                if name == "frame_start":
                    sel = sel - ranges[r][0]
                new[r, : len(k)] = sel
            out[name] = (("receiver", "frame"), new, var.attrs)
    i0s = np.array([i0 for i0, _ in ranges], np.int64)
    shift = np.array([round(i0 * NS_PER_S / rates[r]) for r, i0 in enumerate(i0s)], "m8[ns]")
    out = out.assign_coords(
        start_time=("receiver", starts + shift),
        n_samples=("receiver", np.array([i1 - i0 for i0, i1 in ranges], np.int64)),
        sample_offset=("receiver", i0s),
    )
    out.attrs = dict(ds.attrs)
    if start is not None:
        out.attrs["selection_start"] = iso_utc(to_utc_ns(start, "start"))
    if end is not None:
        out.attrs["selection_end"] = iso_utc(to_utc_ns(end, "end"))
    return out


def _frame_fill(dtype: np.dtype) -> Any:
    if dtype.kind == "M":
        return np.datetime64("NaT")
    if dtype.kind == "f":
        return np.nan
    if dtype.kind == "b":
        return False
    return -1
