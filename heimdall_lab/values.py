"""Plain values: the rules for JSON conversion, finite numbers and UTC timestamps.

Every module that writes JSON (database columns, zarr and SigMF attributes, reports), checks a
number, or turns a time into nanoseconds or text uses these, so a value means the same thing
wherever it goes.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from heimdall_lab.errors import ValidationError

__all__ = [
    "NS_PER_S",
    "finite_or_none",
    "iso_utc",
    "jsonable",
    "parse_iso_utc",
    "positive",
    "to_utc_ns",
]

#: Nanoseconds per second.
NS_PER_S = 1_000_000_000


def finite_or_none(value: Any) -> float | None:
    """A number as a Python float, or None when it is missing, NaN or infinite.

    Parameters
    ----------
    value : Any
        A number (Python or numpy), None or anything ``float()`` takes.

    Returns
    -------
    float or None
        The value, or None.
    """
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def jsonable(value: Any) -> Any:
    """A value as plain JSON types: numpy scalars and arrays unwrapped, NaN/inf as None.

    Parameters
    ----------
    value : Any
        Nested dicts, lists, tuples, numpy arrays and scalars, numbers, strings.

    Returns
    -------
    Any
        The same structure, ready for :func:`json.dumps` with ``allow_nan=False``.

    Examples
    --------
    >>> jsonable({"snr": np.float32("nan"), "rates": np.array([12000.0, 12001.5])})
    {'snr': None, 'rates': [12000.0, 12001.5]}
    """
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.datetime64):
        return iso_utc(value)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def positive(value: Any, name: str, *, allow_zero: bool = False) -> float:
    """A finite number greater than zero (or at least zero), else a ValidationError.

    Parameters
    ----------
    value : Any
        The number.
    name : str
        Its name, for the message.
    allow_zero : bool, default False
        Accept zero.

    Returns
    -------
    float
        The value.

    Raises
    ------
    ValidationError
        If it is not a number, not finite, or too small.
    """
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValidationError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValidationError(f"{name} must be a finite number {bound}, got {value!r}")
    return number


def to_utc_ns(value: object, label: str) -> np.datetime64:
    """A time (text, datetime, Timestamp, datetime64) as UTC ``datetime64[ns]`` without zone.

    Parameters
    ----------
    value : object
        The time; an aware time is converted to UTC, a naive one is taken as UTC.
    label : str
        What it is, for the message.

    Returns
    -------
    numpy.datetime64
        In ns.

    Raises
    ------
    ValidationError
        If it is not a time.
    """
    try:
        ts = pd.Timestamp(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValidationError(f"{label} {str(value)[:80]!r} is not a time") from exc
    if ts is pd.NaT:
        raise ValidationError(f"{label} must be a time, not NaT")
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return np.datetime64(ts.value, "ns")


def iso_utc(t: np.datetime64) -> str:
    """ISO 8601 text of a UTC time to the nanosecond, with a ``Z``.

    Parameters
    ----------
    t : numpy.datetime64
        The time.

    Returns
    -------
    str
        E.g. ``2017-11-27T10:41:56.000000000Z``.
    """
    return f"{np.datetime_as_string(np.datetime64(t, 'ns'), unit='ns')}Z"


def parse_iso_utc(text: str) -> np.datetime64:
    """The inverse of :func:`iso_utc`.

    Parameters
    ----------
    text : str
        ISO 8601 UTC text, with or without the ``Z``.

    Returns
    -------
    numpy.datetime64
        In ns.
    """
    return np.datetime64(text.strip().rstrip("Zz"), "ns")
