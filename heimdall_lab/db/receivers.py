"""The ``websdrs`` table: receivers, their positions and what the user set."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from heimdall_lab.errors import ValidationError
from heimdall_lab.receivers import DEFAULT_RECEIVERS, Receiver
from heimdall_lab.values import finite_or_none

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- receivers


def _receiver_values(r: Receiver) -> dict[str, Any]:
    return {
        "name": r.name,
        "url": f"http://{r.host}:{int(r.port)}/",
        "host": r.host,
        "port": int(r.port),
        "location_name": r.location_name,
        "latitude": float(r.latitude),
        "longitude": float(r.longitude),
        "min_frequency_hz": float(r.min_frequency_hz),
        "max_frequency_hz": float(r.max_frequency_hz),
        "calibration_db": finite_or_none(r.calibration_db),
        "timeout_seconds": float(r.timeout_s),
        "retry_count": int(r.retry_count),
    }


_RECEIVER_SELECT = (
    "SELECT name, host, port, latitude, longitude, location_name, min_frequency_hz, "
    "max_frequency_hz, calibration_db, timeout_seconds, retry_count FROM websdrs"
)


def _row_receiver(row: Sequence[Any]) -> Receiver:
    cal = row[8]
    return Receiver(
        name=row[0],
        host=row[1],
        port=int(row[2]),
        latitude=float(row[3]),
        longitude=float(row[4]),
        location_name=row[5],
        min_frequency_hz=float(row[6]),
        max_frequency_hz=float(row[7]),
        calibration_db=float("nan") if cal is None else float(cal),
        timeout_s=float(row[9]),
        retry_count=int(row[10]),
    )


def seed_receivers(engine: Engine, receivers: Iterable[Receiver] | None = None) -> int:
    """Add the default receivers that are not in ``websdrs`` yet (by name).

    Existing rows are left as they are: edits and deactivations survive re-seeding.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database (migrated).
    receivers : iterable of Receiver, optional
        What to seed; default :data:`heimdall_lab.receivers.DEFAULT_RECEIVERS`.

    Returns
    -------
    int
        Number of receivers added now.
    """
    rows = [_receiver_values(r) for r in (DEFAULT_RECEIVERS if receivers is None else receivers)]
    if not rows:
        return 0
    cols = list(rows[0])
    stmt = sa.text(
        f"INSERT INTO websdrs ({', '.join(cols)}) VALUES ({', '.join(':' + c for c in cols)}) "
        "ON CONFLICT (name) DO NOTHING"
    )
    added = 0
    with engine.begin() as conn:
        for row in rows:
            added += conn.execute(stmt, row).rowcount
    if added:
        log.info("seeded %d receivers", added)
    return added


def list_receivers(engine: Engine, active_only: bool = True) -> list[Receiver]:
    """The receivers in the database, in the order they were added.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database.
    active_only : bool, default True
        Leave out deactivated receivers.

    Returns
    -------
    list of Receiver
        Without passwords (the database keeps none); ``calibration_db`` NaN when NULL. A row
        that is not a valid receiver (written by other tools: a name with a newline, a port
        of 0, ...) is left out with a warning, so it costs the other receivers nothing.
    """
    sql = _RECEIVER_SELECT + (" WHERE is_active" if active_only else "") + " ORDER BY id"
    with engine.connect() as conn:
        rows = conn.execute(sa.text(sql)).fetchall()
    receivers = []
    for row in rows:
        try:
            receivers.append(_row_receiver(row))
        except (ValidationError, TypeError, ValueError) as exc:
            log.warning("websdrs: skipping a row that is not a valid receiver: %s", exc)
    return receivers


def add_receiver(
    engine: Engine,
    receiver: Receiver,
    *,
    protocol: str = "kiwisdr",
    url: str | None = None,
    is_active: bool = True,
) -> int:
    """Add a receiver.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database.
    receiver : Receiver
        Validated by its constructor (name, address, position, range).
    protocol : str, default "kiwisdr"
        How to talk to it.
    url : str, optional
        Its web address; default ``http://host:port/``.
    is_active : bool, default True
        Whether it takes part in captures.

    Returns
    -------
    int
        Its ``websdrs.id``.

    Raises
    ------
    ValidationError
        If a receiver of that name exists already (use :func:`update_receiver`).
    """
    values = _receiver_values(receiver)
    values.update(protocol=protocol, is_active=bool(is_active))
    if url is not None:
        values["url"] = url
    cols = list(values)
    stmt = sa.text(
        f"INSERT INTO websdrs ({', '.join(cols)}) VALUES ({', '.join(':' + c for c in cols)}) "
        "ON CONFLICT (name) DO NOTHING RETURNING id"
    )
    with engine.begin() as conn:
        new_id = conn.execute(stmt, values).scalar()
    if new_id is None:
        raise ValidationError(
            f"receiver {receiver.name!r} exists already: change it with "
            "heimdall_lab.db.update_receiver, or deactivate it (heimdall-lab receivers deactivate)"
        )
    log.info("added receiver %s (%s)", receiver.name, receiver.address)
    return int(new_id)


_RECEIVER_FIELDS = {
    "host": "host",
    "port": "port",
    "latitude": "latitude",
    "longitude": "longitude",
    "location_name": "location_name",
    "min_frequency_hz": "min_frequency_hz",
    "max_frequency_hz": "max_frequency_hz",
    "calibration_db": "calibration_db",
    "timeout_s": "timeout_s",
    "retry_count": "retry_count",
}


def update_receiver(engine: Engine, name: str, **changes: Any) -> Receiver:
    """Change some fields of a receiver.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database.
    name : str
        The receiver's name.
    **changes
        Any of the :class:`Receiver` fields ``host``, ``port``, ``latitude``,
        ``longitude``, ``location_name``, ``min_frequency_hz``, ``max_frequency_hz``,
        ``calibration_db`` (NaN or None: uncalibrated), ``timeout_s``, ``retry_count``; and
        ``protocol``, ``url``, ``is_active``. A new host or port also resets ``url`` to
        ``http://host:port/`` unless ``url`` is given.

    Returns
    -------
    Receiver
        The receiver as stored now.

    Raises
    ------
    ValidationError
        If there is no such receiver, a field is unknown, or the new values do not make a
        valid :class:`Receiver`.
    """
    extra = {k: changes.pop(k) for k in ("protocol", "url", "is_active") if k in changes}
    unknown = set(changes) - set(_RECEIVER_FIELDS)
    if unknown:
        raise ValidationError(
            f"update_receiver: unknown field(s) {sorted(unknown)}; "
            f"allowed: {sorted([*_RECEIVER_FIELDS, 'protocol', 'url', 'is_active'])}"
        )
    if changes.get("calibration_db", 0.0) is None:
        changes["calibration_db"] = float("nan")
    with engine.begin() as conn:
        row = conn.execute(
            sa.text(_RECEIVER_SELECT + " WHERE name = :name FOR UPDATE"), {"name": name}
        ).first()
        if row is None:
            raise ValidationError(f"no receiver named {name!r}")
        new = dataclasses.replace(_row_receiver(row), **changes)
        values = _receiver_values(new)
        if not ({"host", "port"} & set(changes)):
            values.pop("url")
        values.pop("name")
        if "url" in extra:
            values["url"] = str(extra["url"])
        if "protocol" in extra:
            values["protocol"] = str(extra["protocol"])
        if "is_active" in extra:
            values["is_active"] = bool(extra["is_active"])
        sets = ", ".join(f"{c} = :{c}" for c in values)
        conn.execute(
            sa.text(f"UPDATE websdrs SET {sets} WHERE name = :name"), {**values, "name": name}
        )
    log.info("updated receiver %s", name)
    return new


def deactivate_receiver(engine: Engine, name: str) -> None:
    """Mark a receiver inactive: it stays in the database, out of ``list_receivers()``.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database.
    name : str
        The receiver's name.

    Raises
    ------
    ValidationError
        If there is no such receiver.
    """
    with engine.begin() as conn:
        n = conn.execute(
            sa.text("UPDATE websdrs SET is_active = false WHERE name = :name"), {"name": name}
        ).rowcount
    if n == 0:
        raise ValidationError(f"no receiver named {name!r}")
    log.info("deactivated receiver %s", name)


def _receiver_ids(conn: Connection) -> dict[str, int]:
    return {r[0]: int(r[1]) for r in conn.execute(sa.text("SELECT name, id FROM websdrs"))}
