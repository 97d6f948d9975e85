"""The measurement row schema.

Columns in COPY order with their SQL types (defined in :mod:`heimdall_lab.measurement`), and
a DataFrame's rows prepared as column arrays for writing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from heimdall_lab.errors import ValidationError
from heimdall_lab.measurement import MEASUREMENT_COLUMNS, MEASUREMENT_TYPES, METRIC_ALIASES
from heimdall_lab.values import to_json

# The columns and their SQL types are defined once, in heimdall_lab.measurement (which the
# processing layer shares without importing the database layer).
_MEASUREMENT_TYPES = MEASUREMENT_TYPES
_ALIASES = METRIC_ALIASES


# ----------------------------------------------------------------------------- measurements: input


@dataclass
class _Columns:
    """A DataFrame's measurements as arrays: NaN / mask / None mean NULL."""

    n: int
    websdr_id: np.ndarray
    timestamp_us: np.ndarray
    floats: dict[str, np.ndarray]
    samples_count: tuple[np.ndarray, np.ndarray]
    signal_present: tuple[np.ndarray, np.ndarray]
    psd: list[np.ndarray | None]
    iq_path: list[str | None]
    metadata: list[str | None]


def _float_column(values: Any, name: str) -> np.ndarray:
    try:
        return np.array(
            pd.to_numeric(pd.Series(values), errors="raise").to_numpy(
                dtype=np.float64, na_value=np.nan
            ),
            copy=True,
        )
    except (TypeError, ValueError) as err:
        raise ValidationError(f"column {name!r} must be numeric: {err}") from None


def _prepare(rows: pd.DataFrame, ids: Mapping[str, int], default_frequency: float) -> _Columns:
    if not isinstance(rows, pd.DataFrame):
        raise ValidationError("rows must be a pandas DataFrame")
    df = rows
    if any(n in ("receiver", "websdr_id", "timestamp_utc") for n in df.index.names if n):
        df = df.reset_index()
    df = df.rename(columns=_ALIASES)
    allowed = {*MEASUREMENT_COLUMNS, "receiver", "websdr_id"}
    unknown = [c for c in df.columns if c not in allowed]
    if unknown:
        raise ValidationError(
            f"unknown measurement column(s) {unknown}; allowed: receiver (or websdr_id), "
            f"{', '.join(MEASUREMENT_COLUMNS)}. Drop them or put them into 'metadata'"
        )
    n = len(df)
    if "receiver" in df.columns:
        names = df["receiver"].astype(str).to_numpy()
        uniq, inverse = np.unique(names, return_inverse=True)
        missing = [u for u in uniq if u not in ids]
        if missing:
            raise ValidationError(
                f"receiver(s) {missing} are not in the database: add them with add_receiver"
            )
        websdr_id = np.array([ids[u] for u in uniq], dtype=np.int32)[inverse]
    elif "websdr_id" in df.columns:
        websdr_id = df["websdr_id"].to_numpy(dtype=np.int64).astype(np.int32)
        bad = sorted(set(np.unique(websdr_id).tolist()) - set(ids.values()))
        if bad:
            raise ValidationError(f"websdr_id(s) {bad} are not in the database")
    else:
        raise ValidationError("rows need a 'receiver' (name) or 'websdr_id' column")
    if "timestamp_utc" not in df.columns:
        raise ValidationError("rows need a 'timestamp_utc' column")
    try:
        ts = pd.to_datetime(df["timestamp_utc"], utc=True)
    except (TypeError, ValueError) as err:
        raise ValidationError(f"timestamp_utc: {err}") from None
    if ts.isna().any():
        raise ValidationError("timestamp_utc must not be missing (NaT)")
    timestamp_us = (
        ts.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().astype("datetime64[us]")
    ).astype(np.int64)

    floats: dict[str, np.ndarray] = {}
    for col, kind in _MEASUREMENT_TYPES:
        if kind != "float8":
            continue
        if col in df.columns:
            floats[col] = _float_column(df[col], col)
        else:
            floats[col] = np.full(n, np.nan)
    freq = floats["frequency_hz"]
    freq[np.isnan(freq)] = default_frequency

    if "samples_count" in df.columns:
        sc = pd.Series(df["samples_count"]).astype("Int64")
        samples = (sc.fillna(0).to_numpy(dtype=np.int64), sc.isna().to_numpy())
    else:
        samples = (np.zeros(n, np.int64), np.ones(n, bool))
    if "signal_present" in df.columns:
        sp = pd.Series(df["signal_present"]).astype("boolean")
        present = (sp.fillna(False).to_numpy(dtype=bool), sp.isna().to_numpy())
    else:
        present = (np.zeros(n, bool), np.ones(n, bool))

    psd: list[np.ndarray | None] = [None] * n
    if "psd" in df.columns:
        psd = [
            None if p is None or (np.isscalar(p) and pd.isna(p)) else _psd_array(p)
            for p in df["psd"].tolist()
        ]
    iq_path: list[str | None] = [None] * n
    if "iq_path" in df.columns:
        iq_path = [None if p is None or p is pd.NA or p != p else str(p) for p in df["iq_path"]]
    metadata: list[str | None] = [None] * n
    if "metadata" in df.columns:
        metadata = _metadata_json(df["metadata"].tolist())
    return _Columns(n, websdr_id, timestamp_us, floats, samples, present, psd, iq_path, metadata)


def _psd_array(p: Any) -> np.ndarray:
    arr = np.asarray(p, dtype=np.float32)
    if arr.ndim != 1:
        raise ValidationError(f"each psd must be a 1-D array, got shape {arr.shape}")
    return arr


def _metadata_json(values: list[Any]) -> list[str | None]:
    cache: dict[int, str] = {}
    out: list[str | None] = []
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out.append(None)
        elif isinstance(v, str):
            try:
                json.loads(v)
            except ValueError as err:
                raise ValidationError(f"metadata string is not JSON: {err}") from None
            out.append(v)
        else:
            key = id(v)
            if key not in cache:
                cache[key] = to_json(v, "metadata")
            out.append(cache[key])
    return out
