"""The ``localizations`` table: transmitter positions with their uncertainty."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine

from heimdall_lab import geo
from heimdall_lab.errors import ValidationError, first_line
from heimdall_lab.ids import check_capture_id
from heimdall_lab.values import finite_or_none, to_json

log = logging.getLogger(__name__)


def write_localization(
    engine: Engine,
    *,
    source: str,
    method: str,
    latitude: float,
    longitude: float,
    n_receivers: int,
    capture_id: str | None = None,
    semi_major_km: float | None = None,
    semi_minor_km: float | None = None,
    orientation_deg: float | None = None,
    n_pairs: int | None = None,
    result: Mapping[str, Any] | None = None,
) -> int:
    """Record a transmitter position estimate.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database.
    source : str
        What was located (``capture <id>`` or the files).
    method : {"tdoa", "rssi"}
        How.
    latitude, longitude : float
        The estimate, degrees.
    n_receivers : int
        Receivers used.
    capture_id : str, optional
        The capture located, if it is in the database.
    semi_major_km, semi_minor_km, orientation_deg : float, optional
        The 1-sigma uncertainty ellipse.
    n_pairs : int, optional
        Receiver pairs used (TDoA).
    result : mapping, optional
        The whole result, as JSON.

    Returns
    -------
    int
        The new row's id.

    Raises
    ------
    ValidationError
        Bad values (an unknown method, a position off the Earth, an unknown capture).
    """
    if method not in ("tdoa", "rssi"):
        raise ValidationError(f"method must be 'tdoa' or 'rssi', got {method!r}")
    geo.check_position(latitude, longitude, "localization")
    if capture_id is not None:
        check_capture_id(capture_id)
    values = {
        "capture_id": capture_id,
        "source": source,
        "method": method,
        "latitude": float(latitude),
        "longitude": float(longitude),
        "semi_major_km": finite_or_none(semi_major_km),
        "semi_minor_km": finite_or_none(semi_minor_km),
        "orientation_deg": finite_or_none(orientation_deg),
        "n_receivers": int(n_receivers),
        "n_pairs": n_pairs,
        "result": to_json(result or {}, "result"),
    }
    columns = ", ".join(values)
    placeholders = ", ".join("CAST(:result AS jsonb)" if k == "result" else f":{k}" for k in values)
    try:
        with engine.begin() as conn:
            return int(
                conn.execute(
                    sa.text(
                        f"INSERT INTO localizations ({columns}) VALUES ({placeholders}) "
                        "RETURNING id"
                    ),
                    values,
                ).scalar_one()
            )
    except sa_exc.IntegrityError as err:
        raise ValidationError(f"localization not stored: {first_line(err)}") from None


def list_localizations(engine: Engine, capture_id: str | None = None) -> pd.DataFrame:
    """Stored position estimates, newest first.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database.
    capture_id : str, optional
        Only those of this capture.

    Returns
    -------
    pandas.DataFrame
        One row per estimate, the ``localizations`` columns.
    """
    where = "WHERE capture_id = :c " if capture_id else ""
    with engine.connect() as conn:
        result = conn.execute(
            sa.text(f"SELECT * FROM localizations {where}ORDER BY created_at DESC, id DESC"),
            {"c": capture_id},
        )
        return pd.DataFrame(result.fetchall(), columns=list(result.keys()))
