"""The capture Dataset: receivers' recordings as one xarray Dataset.

dims ``(receiver, sample)`` for the IQ and ``(receiver, frame)`` for the per-frame GNSS
timestamps; per-receiver coordinates for position, exact sample rate, start time, RSSI and
completeness; attributes with SigMF names where SigMF has one, so that export to SigMF is a
mapping, not a rewrite.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np
import xarray as xr

from heimdall_lab import __version__
from heimdall_lab.receivers import Receiver
from heimdall_lab.recording import Recording


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
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return float("nan")
    return float(10 * np.log10(np.mean(10 ** (finite.astype(np.float64) / 10))))


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
        rate, time of the first sample, mean RSSI, sample count and completeness. Attributes
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
