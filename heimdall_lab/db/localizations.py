"""The ``localizations`` table: transmitter positions with their uncertainty."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import pandas as pd
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine

from heimdall_lab import geo
from heimdall_lab.errors import ValidationError, first_line
from heimdall_lab.ids import check_capture_id
from heimdall_lab.values import finite_or_none, to_json

log = logging.getLogger(__name__)


class LocalizationLike(Protocol):
    """What :func:`write_localization` reads of a result.

    :class:`heimdall_lab.localize.Localization` has all of it. The database layer sits
    below ``localize`` (see the layers in ``pyproject.toml``) and does not import it, so
    any object with these attributes will do.
    """

    latitude: float
    longitude: float
    kind: str
    semi_major_km: float
    semi_minor_km: float
    orientation_deg: float
    capture_id: str

    @property
    def used_receivers(self) -> list[str]:
        """Names of the receivers that took part."""
        ...

    @property
    def used_pairs(self) -> Sequence[Any]:
        """The receiver pairs that entered the fit (none for RSSI)."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """The whole result as JSON-able values."""
        ...


def write_localization(
    engine: Engine,
    result: LocalizationLike,
    *,
    source: str | None = None,
    capture_id: str | None = None,
) -> int:
    """Record a transmitter position estimate.

    The row's columns come from the result: ``method`` from ``result.kind`` (``"tdoa"`` or
    ``"rssi"``), the position, the uncertainty ellipse (NaN stored as NULL),
    ``n_receivers`` (receivers used), ``n_pairs`` (pairs used; NULL for RSSI, which has
    none) and ``result`` (``result.to_dict()``, the whole result as JSON).

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database.
    result : heimdall_lab.localize.Localization
        The estimate, or any object with the attributes of :class:`LocalizationLike`.
    source : str, optional
        What was located. Default: ``"capture <capture_id>"`` when ``capture_id`` is given,
        else the result's own ``capture_id`` (``"recordings:<names>"`` for files).
    capture_id : str, optional
        The capture located, when it is in this database (the row then refers to it). The
        result's own ``capture_id`` is not used for this: a result located from files or
        from a store not recorded here carries one that the table cannot refer to.

    Returns
    -------
    int
        The new row's id.

    Raises
    ------
    ValidationError
        Bad values (an unknown method, a position off the Earth, no receiver used, an
        unknown capture), or no ``source`` given and none to be had from the result.
    """
    if source is None:
        own = str(getattr(result, "capture_id", "") or "")
        source = f"capture {capture_id}" if capture_id is not None else own
    if not source:
        raise ValidationError("write_localization needs a source: the result has no capture id")
    kind = result.kind
    return _insert(
        engine,
        capture_id=capture_id,
        source=source,
        method=kind,
        latitude=result.latitude,
        longitude=result.longitude,
        semi_major_km=result.semi_major_km,
        semi_minor_km=result.semi_minor_km,
        orientation_deg=result.orientation_deg,
        n_receivers=len(result.used_receivers),
        n_pairs=len(result.used_pairs) if kind == "tdoa" else None,
        result=result.to_dict(),
    )


def _insert(
    engine: Engine,
    *,
    capture_id: str | None,
    source: str,
    method: str,
    latitude: float,
    longitude: float,
    semi_major_km: float | None,
    semi_minor_km: float | None,
    orientation_deg: float | None,
    n_receivers: int,
    n_pairs: int | None,
    result: Mapping[str, Any],
) -> int:
    """One ``localizations`` row, its values checked; the new row's id."""
    if method not in ("tdoa", "rssi"):
        raise ValidationError(f"method must be 'tdoa' or 'rssi', got {method!r}")
    geo.check_position(latitude, longitude, "localization")
    if capture_id is not None:
        check_capture_id(capture_id)
    values = {
        "capture_id": capture_id,
        "source": str(source),
        "method": method,
        "latitude": float(latitude),
        "longitude": float(longitude),
        "semi_major_km": finite_or_none(semi_major_km),
        "semi_minor_km": finite_or_none(semi_minor_km),
        "orientation_deg": finite_or_none(orientation_deg),
        "n_receivers": int(n_receivers),
        "n_pairs": None if n_pairs is None else int(n_pairs),
        "result": to_json(result, "result"),
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
