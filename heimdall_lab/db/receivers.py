"""The ``websdrs`` table: receivers, their positions and what the user set."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from heimdall_lab.errors import ValidationError
from heimdall_lab.receivers import DEFAULT_RECEIVERS, Receiver
from heimdall_lab.values import finite_or_none

if TYPE_CHECKING:
    from heimdall_lab.directory import Directory, Entry

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- receivers


def _receiver_values(r: Receiver) -> dict[str, Any]:
    return {
        "name": r.name,
        "url": r.url,
        "host": r.host,
        "port": int(r.port),
        "tls": bool(r.tls),
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
    "max_frequency_hz, calibration_db, timeout_seconds, retry_count, tls FROM websdrs"
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
        tls=bool(row[11]),
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
    rows = [
        {**_receiver_values(r), "source": "default"}
        for r in (DEFAULT_RECEIVERS if receivers is None else receivers)
    ]
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
        Its web address; default ``http://host:port/`` (``https://`` for a TLS receiver).
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
    "tls": "tls",
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
        if not ({"host", "port", "tls"} & set(changes)):
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


# ----------------------------------------------------------------------------- the directory

#: The columns an import of the public directory owns and updates; everything else in a
#: ``websdrs`` row (name, calibration, active flag, timeouts, notes) is the user's.
DIRECTORY_COLUMNS = (
    "url",
    "host",
    "port",
    "tls",
    "title",
    "location_name",
    "latitude",
    "longitude",
    "min_frequency_hz",
    "max_frequency_hz",
    "users",
    "users_max",
    "has_gps",
    "gps_good",
    "fixes_min",
    "tdoa_ch",
    "time_limited",
    "antenna",
    "sw_version",
    "snr_db",
    "directory_id",
    "directory_updated_at",
)


@dataclass(frozen=True)
class DirectoryImport:
    """What one import of the directory did.

    Attributes
    ----------
    read : int
        Entries the directory held.
    imported : int
        Receivers added.
    updated : int
        Receivers whose directory-owned values changed.
    unchanged : int
        Receivers found as they were.
    skipped : dict of str to int
        Entries left out, by reason (from the parser).
    deactivated : int
        Receivers no longer in the directory, marked inactive (``deactivate_missing``).
    """

    read: int
    imported: int
    updated: int
    unchanged: int
    skipped: dict[str, int]
    deactivated: int = 0

    def summary(self) -> str:
        """``read N, imported M, updated U, skipped K (reason n, ...)``."""
        skipped = sum(self.skipped.values())
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items()) if v)
        text = (
            f"read {self.read}, imported {self.imported}, updated {self.updated}, "
            f"skipped {skipped}" + (f" ({reasons})" if reasons else "")
        )
        if self.deactivated:
            text += f", deactivated {self.deactivated} no longer listed"
        return text


def _utc_datetime(value: np.datetime64) -> datetime | None:
    if np.isnat(value):
        return None
    return datetime.fromtimestamp(int(value.astype("datetime64[s]").astype(np.int64)), tz=UTC)


def _directory_values(e: Entry) -> dict[str, Any]:
    r = e.receiver()
    return {
        "url": r.url,
        "host": e.host,
        "port": int(e.port),
        "tls": bool(e.tls),
        "title": e.title,
        "location_name": e.location_name,
        "latitude": float(e.latitude),
        "longitude": float(e.longitude),
        "min_frequency_hz": float(e.min_frequency_hz),
        "max_frequency_hz": float(e.max_frequency_hz),
        "users": int(e.users),
        "users_max": int(e.users_max),
        "has_gps": bool(e.has_gps),
        "gps_good": int(e.gps_good),
        "fixes_min": int(e.fixes_min),
        "tdoa_ch": int(e.tdoa_ch),
        "time_limited": bool(e.time_limited),
        "antenna": e.antenna,
        "sw_version": e.sw_version,
        "snr_db": finite_or_none(e.snr_db),
        "directory_id": e.directory_id or None,
        "directory_updated_at": _utc_datetime(e.updated_utc),
    }


#: The advisory lock that keeps imports one at a time.
_IMPORT_LOCK = 0x4E1D_D1C7


class _Index:
    """How a receiver is found again: the rows by address and by directory id.

    Addresses are host (without case) and port; ``taken`` holds the names in use, lower-cased.
    """

    def __init__(self, conn: Connection) -> None:
        self.by_address: dict[tuple[str, int], int] = {}
        self.by_id: dict[str, int] = {}
        self.names: dict[int, str] = {}
        self.taken: set[str] = set()
        rows = conn.execute(
            sa.text("SELECT id, name, host, port, directory_id FROM websdrs ORDER BY id")
        )
        for rid, name, host, port, did in rows:
            self.add(int(rid), name, host, int(port), did)

    def add(self, rid: int, name: str, host: str, port: int, did: str | None) -> None:
        self.by_address.setdefault((host.lower(), int(port)), rid)
        if did:
            self.by_id.setdefault(did, rid)
        self.names[rid] = name
        self.taken.add(name.lower())

    def address(self, host: str, port: int) -> int | None:
        return self.by_address.get((host.lower(), int(port)))


def import_directory(
    engine: Engine,
    directory: Directory | Sequence[Entry],
    *,
    deactivate_missing: bool = False,
) -> DirectoryImport:
    """Upsert the receivers of a directory into ``websdrs``, in one transaction.

    A receiver is the same receiver when its directory id, or else its address (host without
    case, and port), matches a row. Then the directory's columns (:data:`DIRECTORY_COLUMNS`)
    are updated, only where they changed, and what the user set (name, calibration, active
    flag, timeouts, notes) is kept. New receivers are added **inactive** (a capture of the
    active receivers never reaches hundreds of strangers' receivers by surprise: choose them
    with :func:`heimdall_lab.planning.select` and :func:`activate_only`), named by the
    directory (``-2``, ``-3``, ... when the name is taken). Receivers that came from the
    directory and are no longer in it are marked ``listed = false`` (selection passes them
    over). Importing the same directory twice changes nothing. Imports run one at a time.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database (migrated).
    directory : heimdall_lab.directory.Directory or sequence of Entry
        What :func:`heimdall_lab.directory.load` read (a whole directory: receivers it no
        longer lists are marked so), or some of its entries (only they are upserted).
    deactivate_missing : bool, default False
        Also mark inactive the receivers that came from the directory before and are not in
        it now (they stay in the database with their captures). Receivers the user added, and
        the defaults, are never deactivated by an import.

    Returns
    -------
    DirectoryImport
        The counts.

    Raises
    ------
    ValidationError
        With ``deactivate_missing``, when the directory holds no usable receiver (an error
        page or a broken file would otherwise deactivate everything).
    """
    from heimdall_lab.directory import unique_name

    columns = list(DIRECTORY_COLUMNS)
    changed = " OR ".join(f"{c} IS DISTINCT FROM :{c}" for c in columns)
    update = sa.text(
        f"UPDATE websdrs SET {', '.join(f'{c} = :{c}' for c in columns)}, listed = true "
        f"WHERE id = :id AND (({changed}) OR listed IS NOT TRUE)"
    )
    insert_cols = ["name", "source", "is_active", "listed", *columns]
    insert = sa.text(
        f"INSERT INTO websdrs ({', '.join(insert_cols)}) "
        f"VALUES ({', '.join(':' + c for c in insert_cols)}) RETURNING id"
    )
    whole = hasattr(directory, "entries")  # a whole directory, not some of its entries
    entries = list(getattr(directory, "entries", directory))
    if deactivate_missing and not whole:
        raise ValidationError("deactivate_missing needs a whole directory, not some entries")
    if deactivate_missing and not entries:
        raise ValidationError(
            "the directory holds no usable receiver: nothing was imported and, with "
            "deactivate_missing, nothing was deactivated"
        )
    imported = updated = unchanged = deactivated = 0
    with engine.begin() as conn:
        # One import at a time: two would both insert the same new names.
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _IMPORT_LOCK})
        index = _Index(conn)
        seen: set[int] = set()
        for entry in entries:
            values = _directory_values(entry)
            # The directory's id first: two receivers that swapped hosts keep their rows.
            rid = index.by_id.get(entry.directory_id) if entry.directory_id else None
            if rid is None:
                rid = index.address(entry.host, entry.port)
            if rid in seen:  # the same receiver twice in the input
                continue
            if rid is None:
                name = unique_name(entry.name, index.taken)
                rid = int(
                    conn.execute(
                        insert,
                        {
                            **values,
                            "name": name,
                            "source": "directory",
                            "is_active": False,  # chosen later: select --activate
                            "listed": True,
                        },
                    ).scalar_one()
                )
                index.add(rid, name, entry.host, entry.port, entry.directory_id)
                imported += 1
            elif conn.execute(update, {**values, "id": rid}).rowcount:
                updated += 1
            else:
                unchanged += 1
            seen.add(rid)
        if whole and entries:  # what came from the directory before and is not in it now
            gone = [
                int(i)
                for i in conn.execute(
                    sa.text("SELECT id FROM websdrs WHERE source = 'directory' AND listed")
                ).scalars()
                if int(i) not in seen
            ]
            if gone:
                conn.execute(
                    sa.text("UPDATE websdrs SET listed = false WHERE id = ANY(:ids)"),
                    {"ids": gone},
                )
                if deactivate_missing:
                    deactivated = conn.execute(
                        sa.text(
                            "UPDATE websdrs SET is_active = false "
                            "WHERE id = ANY(:ids) AND is_active"
                        ),
                        {"ids": gone},
                    ).rowcount
    result = DirectoryImport(
        read=getattr(directory, "read", len(entries)),
        imported=imported,
        updated=updated,
        unchanged=unchanged,
        skipped=dict(getattr(directory, "skipped", {})),
        deactivated=deactivated,
    )
    log.info("directory %s: %s", getattr(directory, "source", "entries"), result.summary())
    return result


def activate_selection(engine: Engine, entries: Sequence[Entry]) -> list[str]:
    """Make a selection the active receivers, and no other.

    The chosen entries are upserted as the directory describes them, then made active.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database.
    entries : sequence of Entry
        The chosen receivers (:attr:`heimdall_lab.planning.Selection.entries`).

    Returns
    -------
    list of str
        Their names as the database has them.
    """
    import_directory(engine, entries)
    return activate_only(engine, entries)


def activate_only(engine: Engine, entries: Iterable[Entry | Receiver]) -> list[str]:
    """Make these receivers (found by address) the active ones, and no other.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database.
    entries : iterable of Entry or Receiver
        The receivers to keep active, matched by host (case-insensitive) and port.

    Returns
    -------
    list of str
        The names of the active receivers now, as the database has them.

    Raises
    ------
    ValidationError
        If none is given, or one of them is not in the database (import it first).
    """
    wanted = [(e.host, int(e.port)) for e in entries]
    if not wanted:
        raise ValidationError("no receivers given: every receiver would be inactive")
    with engine.begin() as conn:
        index = _Index(conn)
        ids = [index.address(h, p) for h, p in wanted]
        missing = [f"{h}:{p}" for (h, p), rid in zip(wanted, ids, strict=True) if rid is None]
        if missing:
            raise ValidationError(
                f"not in the database: {', '.join(missing)}; import them first "
                "(heimdall-lab receivers import SOURCE)"
            )
        conn.execute(
            sa.text(
                "UPDATE websdrs SET is_active = (id = ANY(:ids)) "
                "WHERE is_active <> (id = ANY(:ids))"
            ),
            {"ids": ids},
        )
    return [index.names[rid] for rid in ids]


def _plain(value: Any) -> Any:
    """A table cell as the database driver takes it: None for missing, Python numbers."""
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


#: What :func:`record_health` writes from each check.
HEALTH_COLUMNS = ("users", "users_max", "has_gps", "gps_good", "fixes_min")


def record_health(engine: Engine, checks: Iterable[Mapping[str, Any]]) -> int:
    """Write the result of ``/status`` checks into ``websdrs``.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database.
    checks : iterable of mapping
        One per receiver: ``name``, ``reachable`` (bool), ``error`` (str or None) and, when
        known, :data:`HEALTH_COLUMNS` (None leaves the stored value).

    Returns
    -------
    int
        Rows updated. A reachable receiver's ``last_seen_at`` becomes now; every checked
        receiver's ``last_checked_at`` becomes now and ``last_check_error`` its error.
    """
    sets = ", ".join(f"{c} = COALESCE(:{c}, {c})" for c in HEALTH_COLUMNS)
    stmt = sa.text(
        f"UPDATE websdrs SET {sets}, last_checked_at = now(), last_check_error = :error, "
        "last_seen_at = CASE WHEN :reachable THEN now() ELSE last_seen_at END "
        "WHERE name = :name"
    )
    n = 0
    with engine.begin() as conn:
        for check in checks:
            values = {c: _plain(check.get(c)) for c in HEALTH_COLUMNS}
            error = check.get("error")
            n += conn.execute(
                stmt,
                {
                    **values,
                    "name": check["name"],
                    "reachable": bool(check["reachable"]),
                    "error": error if isinstance(error, str) and error else None,
                },
            ).rowcount
    return n


#: The columns of :func:`receivers_frame`, in order: the user's, the directory's
#: (:data:`DIRECTORY_COLUMNS`), then what imports and checks record.
RECEIVER_COLUMNS = (
    "name",
    "is_active",
    "source",
    "calibration_db",
    "notes",
    *DIRECTORY_COLUMNS,
    "listed",
    "last_seen_at",
    "last_checked_at",
    "last_check_error",
    "updated_at",
)


def receivers_frame(
    engine: Engine, *, active_only: bool = True, names: Sequence[str] | None = None
) -> pd.DataFrame:
    """The receivers with everything the database knows of them, one row each.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database.
    active_only : bool, default True
        Leave out deactivated receivers.
    names : sequence of str, optional
        Only these receivers (unknown names are left out).

    Returns
    -------
    pandas.DataFrame
        :data:`RECEIVER_COLUMNS`, in the order the receivers were added.
    """
    where = []
    params: dict[str, Any] = {}
    if active_only:
        where.append("is_active")
    if names is not None:
        where.append("name = ANY(:names)")
        params["names"] = list(names)
    sql = f"SELECT {', '.join(RECEIVER_COLUMNS)} FROM websdrs"
    if where:
        sql += " WHERE " + " AND ".join(where)
    with engine.connect() as conn:
        rows = conn.execute(sa.text(sql + " ORDER BY id"), params).fetchall()
    frame = pd.DataFrame([tuple(r) for r in rows], columns=list(RECEIVER_COLUMNS))
    for col in ("users", "users_max", "gps_good", "fixes_min", "tdoa_ch", "port"):
        frame[col] = frame[col].astype("Int64")
    return frame


def directory_entries(engine: Engine, *, active_only: bool = False) -> list[Entry]:
    """The receivers in the database as directory entries, for selection and planning.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The database.
    active_only : bool, default False
        Leave out deactivated receivers.

    Returns
    -------
    list of heimdall_lab.directory.Entry
        What the last import or check recorded, for active and inactive receivers alike
        (selection chooses among all of them; activation is its result). Left out: receivers
        the directory no longer lists, and rows that are not valid receivers (with a
        warning). A receiver whose last check failed counts as offline; one never imported
        nor checked has no known GNSS and no free channel, so selection passes it over.
    """
    from heimdall_lab.directory import Entry

    frame = receivers_frame(engine, active_only=active_only)
    frame = frame[frame["listed"].ne(False).fillna(True).astype(bool)]
    entries = []
    for row in frame.to_dict("records"):

        def known(key: str, default: Any, row: dict[str, Any] = row) -> Any:
            value = row[key]
            return default if value is None or value is pd.NA or value != value else value

        updated = row["directory_updated_at"]
        try:
            entries.append(
                Entry(
                    name=row["name"],
                    title=known("title", ""),
                    host=row["host"],
                    port=int(row["port"]),
                    tls=bool(row["tls"]),
                    latitude=float(row["latitude"]),
                    longitude=float(row["longitude"]),
                    min_frequency_hz=float(row["min_frequency_hz"]),
                    max_frequency_hz=float(row["max_frequency_hz"]),
                    users=int(known("users", 0)),
                    users_max=int(known("users_max", 0)),
                    has_gps=bool(known("has_gps", False)),
                    gps_good=int(known("gps_good", 0)),
                    fixes_min=int(known("fixes_min", 0)),
                    tdoa_ch=int(known("tdoa_ch", -1)),
                    time_limited=bool(known("time_limited", False)),
                    antenna=known("antenna", ""),
                    location_name=known("location_name", ""),
                    sw_version=known("sw_version", ""),
                    snr_db=float(known("snr_db", float("nan"))),
                    directory_id=known("directory_id", ""),
                    offline=bool(known("last_check_error", "")),
                    updated_utc=(
                        np.datetime64("NaT", "s")
                        if updated is None or updated is pd.NaT
                        else np.datetime64(pd.Timestamp(updated).tz_convert(None), "s")
                    ),
                )
            )
        except (ValidationError, TypeError, ValueError) as exc:
            log.warning("websdrs: skipping a row that is not a valid receiver: %s", exc)
    return entries
