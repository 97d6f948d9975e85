"""From a capture Dataset to metrics and measurement rows.

The processing step shared by a live capture (:func:`heimdall_lab.pipeline.capture`) and the
reprocessing of stored captures (:func:`heimdall_lab.batch.reprocess`): both call
:func:`capture_metrics` then :func:`measurement_rows`, so the rows they write agree. The row
columns come from :mod:`heimdall_lab.measurement`. This module knows nothing of receivers'
network protocol, the IQ store or the database.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from heimdall_lab import dsp
from heimdall_lab.errors import ValidationError
from heimdall_lab.measurement import (
    ACQUISITION_METADATA,
    MEASUREMENT_COLUMNS,
    MEASUREMENT_TYPES,
    METRIC_ALIASES,
)

log = logging.getLogger(__name__)

#: PSD resolution stored with each measurement (240 bins at 12 kHz).
PSD_RESOLUTION_HZ = 50.0

_TYPES = dict(MEASUREMENT_TYPES)
_CASTS: dict[str, Any] = {"float8": float, "int8": int, "int4": int, "bool": bool}


def capture_metrics(ds: xr.Dataset) -> pd.DataFrame:
    """Signal metrics of every receiver in a capture Dataset.

    A receiver whose samples cannot be measured (too few of them, say) does not cost the
    others their metrics: it is left out, and ``attrs["unmeasured"]`` of the result says why.

    Parameters
    ----------
    ds : xarray.Dataset
        A capture Dataset.

    Returns
    -------
    pandas.DataFrame
        One row per measured receiver, the :class:`heimdall_lab.dsp.SignalMetrics` fields as
        columns; empty when the Dataset holds no receiver. ``attrs["unmeasured"]`` maps each
        receiver left out to the reason.

    Raises
    ------
    ValidationError
        If no receiver could be measured (the message gives each one's reason).
    """
    if ds.sizes.get("receiver", 0) == 0:
        return pd.DataFrame()
    try:
        out = _metrics(ds)
        out.attrs["unmeasured"] = {}
        return out
    except ValidationError:
        pass
    parts, unmeasured = [], {}
    for name in ds["receiver"].values:
        try:
            parts.append(_metrics(ds.sel(receiver=[name])))
        except ValidationError as exc:
            unmeasured[str(name)] = str(exc)
    if not parts:
        raise ValidationError(
            "no receiver could be measured: "
            + "; ".join(f"{k}: {v}" for k, v in unmeasured.items())
        )
    out = pd.concat(parts)
    out.attrs["unmeasured"] = unmeasured
    return out


def _metrics(ds: xr.Dataset) -> pd.DataFrame:
    out = dsp.measure_dataset(ds, center_frequency_hz=ds.attrs.get("center_frequency_hz"))
    return out.to_dataframe().drop(
        columns=[c for c in out.coords if c != "receiver"], errors="ignore"
    )


def _psd(iq: np.ndarray, sample_rate: float) -> np.ndarray | None:
    """The stored PSD, or None for a receiver with too few samples for one."""
    try:
        _, density = dsp.psd(iq, sample_rate, resolution_hz=PSD_RESOLUTION_HZ)
    except ValidationError:
        return None
    return density.astype(np.float32)


def _cast(column: str, value: Any) -> Any:
    cast = _CASTS.get(_TYPES[column])
    return value if cast is None else cast(value)


def measurement_rows(
    metrics: pd.DataFrame, ds: xr.Dataset, *, iq_url: str | None, status: pd.DataFrame
) -> pd.DataFrame:
    """Turn per-receiver metrics into rows for the ``measurements`` table.

    Every column of :data:`heimdall_lab.measurement.MEASUREMENT_COLUMNS` named like a metric
    (or by :data:`~heimdall_lab.measurement.METRIC_ALIASES`) is taken from the metrics; the
    others (time, frequency, RSSI, PSD, IQ location, metadata) from the Dataset.

    Parameters
    ----------
    metrics : pandas.DataFrame
        :func:`capture_metrics` output, indexed by receiver.
    ds : xarray.Dataset
        The capture Dataset (for times, RSSI and the PSD).
    iq_url : str or None
        Where the capture's IQ is stored.
    status : pandas.DataFrame
        The acquisition's status table, indexed by receiver, with the columns of
        :data:`heimdall_lab.measurement.ACQUISITION_METADATA` (kept in ``metadata``).

    Returns
    -------
    pandas.DataFrame
        One row per receiver: ``receiver`` then the measurement columns, as
        :func:`heimdall_lab.db.write_measurements` takes them.

    Raises
    ------
    ValidationError
        If a measurement column can be taken from neither the metrics nor the Dataset.
    """
    from_metrics = {METRIC_ALIASES.get(c, c): c for c in metrics.columns}
    rows = []
    fallback = pd.Timestamp(ds.attrs.get("core:datetime") or datetime.now(UTC))
    for name, m in metrics.iterrows():
        one = ds.sel(receiver=name)
        start = one.start_time.values
        n = int(one.n_samples)
        density = _psd(one.iq.values[:n], float(one.sample_rate))
        st = status.loc[name]
        metadata: dict[str, Any] = {k: st[k] for k in ACQUISITION_METADATA}
        metadata.update(
            lost_frames=int(st["lost_frames"]),
            skipped_frames=int(st["skipped_frames"]),
            snr_bandwidth_hz=float(m["snr_bandwidth_hz"]),
            noise_density_dbfs_hz=float(m["noise_density_dbfs_hz"]),
            pfa=float(m["pfa"]),
        )
        row: dict[str, Any] = {
            "receiver": name,
            "timestamp_utc": fallback if np.isnat(start) else pd.Timestamp(start),
            "frequency_hz": float(ds.attrs["center_frequency_hz"]),
            "rssi_dbm": float(one.rssi_dbm),
            "psd": density,
            "psd_resolution_hz": np.nan
            if density is None
            else float(one.sample_rate) / len(density),
            "iq_path": None if iq_url is None else f"{iq_url}#receiver={name}",
            "metadata": metadata,
        }
        for column in MEASUREMENT_COLUMNS:
            if column not in row and column in from_metrics:
                row[column] = _cast(column, m[from_metrics[column]])
        missing = [c for c in MEASUREMENT_COLUMNS if c not in row]
        if missing:
            raise ValidationError(f"measurement column(s) {missing} have no source")
        rows.append(row)
    return pd.DataFrame(rows, columns=["receiver", *MEASUREMENT_COLUMNS])


def stored_measurement_rows(ds: xr.Dataset, iq_url: str) -> pd.DataFrame:
    """Measurement rows of a stored capture, computed as a live capture computes them.

    The acquisition's status table is rebuilt from what the store keeps (``complete`` and
    ``lost_frames`` per receiver); what it does not keep (skipped frames) counts as 0.

    Parameters
    ----------
    ds : xarray.Dataset
        A stored capture, or some of its receivers.
    iq_url : str
        Where it is stored.

    Returns
    -------
    pandas.DataFrame
        As :func:`measurement_rows`.
    """
    names = [str(r) for r in ds["receiver"].values]
    n = len(names)
    complete = ds["complete"].values.astype(bool) if "complete" in ds.coords else np.ones(n, bool)
    lost = (
        ds["lost_frames"].values.astype(np.int64)
        if "lost_frames" in ds.coords
        else np.zeros(n, np.int64)
    )
    status = pd.DataFrame(
        {
            "status": np.where(complete, "ok", "incomplete"),
            "reason": np.where(complete, "", "incomplete"),
            "lost_frames": lost,
            "skipped_frames": np.zeros(n, np.int64),
        },
        index=pd.Index(names, name="receiver"),
    )
    return measurement_rows(capture_metrics(ds), ds, iq_url=iq_url, status=status)


def interval_rows(
    ds: xr.Dataset,
    *,
    interval: int,
    interval_start_utc: np.datetime64,
    iq_url: str | None,
    status: tuple[str, str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The metrics and measurement row of one receiver's interval of a streamed capture.

    The live capture (:mod:`heimdall_lab.pipeline`) and its recovery from the store
    (:func:`heimdall_lab.store.stream.stored_interval_rows`) both come here, with the same
    samples and frames, so a row always matches the IQ it was computed from.

    Parameters
    ----------
    ds : xarray.Dataset
        The interval as a one-receiver capture Dataset
        (:func:`heimdall_lab.dataset.build_dataset`; ``complete`` says whether the interval
        holds all its frames).
    interval : int
        The interval's number, from 0.
    interval_start_utc : numpy.datetime64
        Its nominal start (capture start plus the intervals before it): the row's time when
        its GNSS time is unusable.
    iq_url : str or None
        Where the capture's IQ is stored.
    status : tuple of (str, str), optional
        The receiver's status and reason to record (its last interval, once the stream
        has ended); by default ``ok``, or ``incomplete`` for an interval not full.

    Returns
    -------
    tuple of pandas.DataFrame
        The :func:`capture_metrics` row, and the row as :func:`measurement_rows` gives it
        (``metadata`` with ``interval`` and ``frames``); both empty when the interval is too
        short to measure.
    """
    name = str(ds["receiver"].values[0])
    ds.attrs["core:datetime"] = f"{np.datetime_as_string(interval_start_utc, 'us')}Z"
    try:
        metrics = capture_metrics(ds)
    except ValidationError as exc:
        log.info("%s: interval %d not measured: %s", name, interval, exc)
        return pd.DataFrame(), pd.DataFrame(columns=["receiver", *MEASUREMENT_COLUMNS])
    complete = bool(ds["complete"].values[0])
    state, reason = status or (("ok", "") if complete else ("incomplete", "partial interval"))
    table = pd.DataFrame(
        {
            "status": [state],
            "reason": [reason],
            "lost_frames": [int(ds["lost_frames"].values[0])],
            "skipped_frames": [0],
        },
        index=pd.Index([name], name="receiver"),
    )
    rows = measurement_rows(metrics, ds, iq_url=iq_url, status=table)
    frames = int((ds["frame_seq"].values[0] >= 0).sum())
    for meta in rows["metadata"]:
        meta.update(interval=int(interval), frames=frames)
    return metrics, rows


__all__ = [
    "PSD_RESOLUTION_HZ",
    "capture_metrics",
    "interval_rows",
    "measurement_rows",
    "stored_measurement_rows",
]
