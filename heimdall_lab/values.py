"""Plain values: the rules for JSON conversion, finite numbers and UTC timestamps.

Every module that writes JSON (database columns, zarr and SigMF attributes, reports), checks a
number, or turns a time into nanoseconds or text uses these, so a value means the same thing
wherever it goes.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import PurePath
from typing import Any

import numpy as np
import pandas as pd

from heimdall_lab.errors import ValidationError

__all__ = [
    "NS_PER_S",
    "clip",
    "finite_or_none",
    "iso_utc",
    "jsonable",
    "parse_iso_utc",
    "positive",
    "to_json",
    "to_utc_ns",
]

#: Nanoseconds per second.
NS_PER_S = 1_000_000_000


def clip(value: object, limit: int = 40) -> str:
    """A value as text for a message, cut to ``limit`` characters with ``...`` when longer.

    A message names what is wrong without echoing a pasted file or a runaway argument.

    Parameters
    ----------
    value : object
        Anything ``str()`` renders.
    limit : int, default 40
        Characters kept.

    Returns
    -------
    str
        The text, or its first ``limit`` characters followed by ``...``.

    Examples
    --------
    >>> clip("Hasenberg03")
    'Hasenberg03'
    >>> clip("A" * 100_000, 8)
    'AAAAAAAA...'
    """
    text = str(value)
    return text if len(text) <= limit else f"{text[:limit]}..."


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
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "mMO":  # times and objects one by one, numbers all at once
            return [jsonable(v) for v in value]
        return jsonable(value.tolist())
    if value is None or value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, np.datetime64 | datetime | pd.Timestamp):
        return None if pd.isna(value) else iso_utc(to_utc_ns(value, "time"))
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, np.timedelta64 | pd.Timedelta):
        return None if pd.isna(value) else pd.Timedelta(value).total_seconds()
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def to_json(value: Any, what: str = "value", *, sort_keys: bool = False) -> str:
    """JSON text of a value, after :func:`jsonable` (so numpy input and NaN are fine).

    Parameters
    ----------
    value : Any
        Nested dicts, lists, numpy arrays and scalars, numbers, strings, times.
    what : str, default "value"
        What it is, for the message.
    sort_keys : bool, default False
        Sort the keys of every dict (for a stable text, e.g. to hash).

    Returns
    -------
    str
        Compact JSON without NaN or infinities.

    Raises
    ------
    ValidationError
        If something in it has no JSON form (an arbitrary object).

    Examples
    --------
    >>> to_json({"n": np.int64(3), "x": [np.float32(0.5), float("inf")]})
    '{"n": 3, "x": [0.5, null]}'
    """
    try:
        return json.dumps(jsonable(value), allow_nan=False, sort_keys=sort_keys)
    except (TypeError, ValueError) as err:
        raise ValidationError(f"{what} must be JSON-serialisable: {err}") from None


def positive(
    value: Any, name: str, *, allow_zero: bool = False, whole: bool = False, hint: str = ""
) -> Any:
    """A finite number greater than zero (or at least zero), else a ValidationError.

    Parameters
    ----------
    value : Any
        The number: a Python or numpy int or float (not a bool, not text).
    name : str
        Its name, for the message.
    allow_zero : bool, default False
        Accept zero.
    whole : bool, default False
        Require a whole number (an int), returned as an int.
    hint : str, optional
        What to do, appended to the message.

    Returns
    -------
    float or int
        The value (an int when ``whole``).

    Raises
    ------
    ValidationError
        If it is not a number (or not whole), not finite, or too small.
    """
    tail = f"; {hint}" if hint else ""
    kinds = (int, np.integer) if whole else (numbers.Real,)
    if isinstance(value, bool | np.bool_) or not isinstance(value, kinds):
        kind = "whole number" if whole else "number"
        raise ValidationError(f"{name} must be a {kind}, got {str(value)[:80]!r}{tail}")
    number = float(value)
    if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValidationError(f"{name} must be a finite number {bound}, got {value!r}{tail}")
    return int(value) if whole else number


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
    try:
        return np.datetime64(ts.as_unit("ns").value, "ns")
    except (OverflowError, ValueError) as exc:  # pandas' out-of-bounds errors are ValueErrors
        raise ValidationError(
            f"{label} {str(value)[:80]!r} is outside the years 1678-2261 that can be kept to "
            "the nanosecond"
        ) from exc


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
