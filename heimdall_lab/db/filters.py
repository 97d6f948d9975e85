"""Filters the read functions share: the frequency match and receiver name lists.

A frequency filter matches a stored frequency within :data:`FREQUENCY_TOLERANCE_HZ` of the
one asked for, inclusive: frequencies are floating-point numbers that reach the database
from a request, a file's metadata or a computation, and ``77500.0`` asked for must find
``77500.00000001`` stored. Half a hertz is far below any two centre frequencies worth
telling apart. :func:`heimdall_lab.db.list_captures`,
:func:`heimdall_lab.db.query_measurements` and :func:`heimdall_lab.db.bucketed_measurements`
all use :func:`frequency_clause`, so they agree on what matches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from heimdall_lab.errors import ValidationError
from heimdall_lab.values import positive

#: A stored frequency matches one asked for when they differ by at most this many Hz.
FREQUENCY_TOLERANCE_HZ = 0.5


def frequency_clause(column: str, frequency_hz: Any) -> tuple[str, dict[str, float]]:
    """The SQL condition "``column`` within :data:`FREQUENCY_TOLERANCE_HZ` of ``frequency_hz``".

    Written as a range (``column BETWEEN low AND high``) so that an index on the column
    serves it.

    Parameters
    ----------
    column : str
        The column, e.g. ``"c.frequency_hz"`` (trusted text, never user input).
    frequency_hz : float
        The frequency asked for, Hz: a finite positive number.

    Returns
    -------
    tuple of (str, dict)
        The condition and its bound parameters (``freq_low``, ``freq_high``).

    Raises
    ------
    ValidationError
        If ``frequency_hz`` is not a finite positive number.
    """
    f = positive(frequency_hz, "frequency_hz")
    return (
        f"{column} BETWEEN :freq_low AND :freq_high",
        {"freq_low": f - FREQUENCY_TOLERANCE_HZ, "freq_high": f + FREQUENCY_TOLERANCE_HZ},
    )


def receiver_names(receivers: str | Sequence[str]) -> list[str]:
    """One receiver name or several, as a list of names.

    Parameters
    ----------
    receivers : str or sequence of str
        Receiver names.

    Returns
    -------
    list of str
        The names.

    Raises
    ------
    ValidationError
        If a name is not text.
    """
    names = [receivers] if isinstance(receivers, str) else list(receivers)
    bad = [n for n in names if not isinstance(n, str)]
    if bad:
        raise ValidationError(f"receiver names must be text, got {bad[0]!r}")
    return names
