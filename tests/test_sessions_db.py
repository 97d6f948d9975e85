"""Recording sessions, events, measurement statistics and policies against real servers.

Each test runs on the embedded PostgreSQL (a database of its own, ``fresh_database``) and on
PGlite with TimescaleDB 2.23 (a server of this module's own, started by test_db's fixtures),
where ``measurement_stats`` is a real continuous aggregate.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from test_db import NAMES, pglite, pglite_engine  # noqa: F401  (fixtures)

from heimdall_lab import cli, db
from heimdall_lab.errors import DatabaseError, ValidationError

pytestmark = pytest.mark.xdist_group("db")

ORIGIN = pd.Timestamp("2000-01-03T00:00:00Z")
F1, F2 = 7_100_000.0, 7_250_000.0
WINDOW = {"start": "2023-05-10T09:00:00Z", "end": "2023-05-10T12:00:00Z"}


@pytest.fixture(params=["embedded", "pglite"])
def backend(request: pytest.FixtureRequest) -> Iterator[tuple[str, Engine]]:
    if request.param == "embedded":
        engine = db.get_engine(request.getfixturevalue("fresh_database"))
        try:
            yield "embedded", engine
        finally:
            engine.dispose()
    else:
        yield "pglite", request.getfixturevalue("pglite_engine")


@pytest.fixture
def ts_engine(request: pytest.FixtureRequest) -> Engine:
    """The PGlite TimescaleDB server's engine."""
    return request.getfixturevalue("pglite_engine")


def _uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# ----------------------------------------------------------------------------- sessions


def test_sessions_crud_stop_and_heartbeat(backend: tuple[str, Engine]) -> None:
    _, engine = backend
    sid = _uid("s")
    plan = {"steps": [{"frequency_hz": F1, "duration_s": 10}], "note": "O'Brien ü"}
    db.create_session(engine, session_id=sid, name="night watch", plan=plan)
    with pytest.raises(ValidationError, match="exists already"):
        db.create_session(engine, session_id=sid, name="again", plan=plan)
    with pytest.raises(ValidationError, match="session id"):
        db.create_session(engine, session_id="../x", name="", plan=plan)

    got = db.get_session(engine, sid)
    assert got is not None
    assert got["plan"] == plan and got["name"] == "night watch"
    assert got["status"] == "pending" and got["stop_requested"] is False
    assert got["started_at"] is None and got["heartbeat_at"] is None
    assert db.get_session(engine, "no-such-session") is None

    db.update_session(engine, sid, status="running", pid=4242, host="lab-1", progress_percent=5)
    got = db.get_session(engine, sid)
    assert got["status"] == "running" and got["pid"] == 4242 and got["host"] == "lab-1"
    assert got["started_at"] is not None and got["ended_at"] is None
    assert got["progress_percent"] == 5.0

    assert db.beat_session(engine, sid) is False
    beat = db.get_session(engine, sid)["heartbeat_at"]
    assert beat is not None and beat >= got["started_at"]

    assert db.stop_requested(engine, sid) is False
    assert db.request_stop(engine, sid) is True
    assert db.stop_requested(engine, sid) is True
    assert db.beat_session(engine, sid) is True  # the runner's cue
    assert db.get_session(engine, sid)["status"] == "stopping"

    db.update_session(engine, sid, status="stopped", pid=None)
    got = db.get_session(engine, sid)
    assert got["status"] == "stopped" and got["pid"] is None and got["ended_at"] is not None
    assert db.request_stop(engine, sid) is False  # ended: nothing to stop

    frame = db.list_sessions(engine, status="stopped", limit=None)
    assert sid in set(frame["id"]) and "plan" not in frame.columns
    assert int(frame.loc[frame["id"] == sid, "n_captures"].iloc[0]) == 0

    with pytest.raises(ValidationError, match="cannot change"):
        db.update_session(engine, sid, colour="blue")
    with pytest.raises(ValidationError, match="not one of"):
        db.update_session(engine, sid, status="exploded")
    with pytest.raises(ValidationError, match="no session"):
        db.update_session(engine, "missing-1", status="done")
    for call in (db.beat_session, db.request_stop, db.stop_requested):
        with pytest.raises(ValidationError, match="no session"):
            call(engine, "missing-1")


def test_second_capture_for_a_step_is_refused(backend: tuple[str, Engine]) -> None:
    _, engine = backend
    sid = _uid("s")
    db.create_session(engine, session_id=sid, name="steps", plan={"steps": [1, 2]})
    first = db.create_capture(engine, F1, 5.0, session_id=sid, session_step=0)
    db.create_capture(engine, F2, 5.0, session_id=sid, session_step=1)
    with pytest.raises(db.DuplicateStepError, match=f"step 0 of session {sid}") as info:
        db.create_capture(engine, F1, 5.0, session_id=sid, session_step=0)
    assert info.value.capture_id == first and info.value.step == 0
    assert isinstance(info.value, ValidationError)
    with pytest.raises(ValidationError, match="no session"):
        db.create_capture(engine, F1, 5.0, session_id="missing-2", session_step=0)
    with pytest.raises(ValidationError, match="needs a session_id"):
        db.create_capture(engine, F1, 5.0, session_step=0)

    caps = db.session_captures(engine, sid)
    assert list(caps["step"]) == [0, 1]
    assert caps["capture_id"].iloc[0] == first
    assert list(caps["frequency_hz"]) == [F1, F2]
    rec = db.get_capture(engine, first)
    assert rec.session_id == sid and rec.session_step == 0

    # a capture whose process died is recorded as incomplete
    db.update_capture(engine, first, status="incomplete")
    assert db.get_capture(engine, first).status == "incomplete"
    assert "incomplete" in db.CAPTURE_STATUSES
    assert list(db.session_captures(engine, sid)["status"]) == ["incomplete", "pending"]
    frame = db.list_sessions(engine, limit=None)
    assert int(frame.loc[frame["id"] == sid, "n_captures"].iloc[0]) == 2


def test_events_are_written_once(backend: tuple[str, Engine]) -> None:
    _, engine = backend
    sid = _uid("s")
    db.create_session(engine, session_id=sid, name="triggered", plan={"trigger": "cfar"})
    cap = db.create_capture(engine, F1, 30.0, session_id=sid, session_step=0)
    t = pd.Timestamp("2023-06-01T12:00:00.123456Z")
    events = pd.DataFrame(
        {
            "capture_id": [cap, cap, cap],
            "receiver": [NAMES[0], NAMES[1], NAMES[0]],
            "start_utc": [t, t, t + pd.Timedelta("5s")],
            "end_utc": [t + pd.Timedelta("1s"), t + pd.Timedelta("2s"), t + pd.Timedelta("6s")],
            "statistic": [12.5, 9.25, np.nan],
            "threshold": [8.0, 8.0, 8.0],
            "pfa": [1e-3, 1e-3, 1e-3],
            "metadata": [{"band": "40m"}, None, {"note": "O'Brien"}],
        }
    )
    assert db.write_events(engine, events) == 3
    assert db.write_events(engine, events) == 0  # the same events again: nothing new
    assert db.write_events(engine, events.iloc[[1, 1]]) == 0
    got = db.session_events(engine, sid)
    assert len(got) == 3
    assert list(got["receiver"]) == [*sorted([NAMES[0], NAMES[1]]), NAMES[0]]
    assert (got["session_id"] == sid).all()  # taken from the capture
    assert (got["frequency_hz"] == F1).all()  # the capture's frequency
    assert got["start_utc"].iloc[2] == t + pd.Timedelta("5s")
    assert np.isnan(got["statistic"].iloc[2])
    assert {"band": "40m"} in list(got["metadata"]) and {} in list(got["metadata"])

    with pytest.raises(ValidationError, match="no capture"):
        db.write_events(engine, [{**events.iloc[0].to_dict(), "capture_id": "nope-1"}])
    with pytest.raises(ValidationError, match="not in the database"):
        db.write_events(engine, [{**events.iloc[0].to_dict(), "receiver": "NOSUCH"}])
    with pytest.raises(ValidationError, match="unknown field"):
        db.write_events(engine, [{**events.iloc[0].to_dict(), "colour": 1}])
    backwards = {**events.iloc[0].to_dict(), "start_utc": t + pd.Timedelta("9s")}
    with pytest.raises(DatabaseError, match="session_events_span"):
        db.write_events(engine, [backwards])
    assert len(db.session_events(engine, sid)) == 3


# ----------------------------------------------------------------------------- statistics


def _stats_rows(seed: int, t0: str, minutes: float, every_s: float, freq: float) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    start = pd.Timestamp(t0)
    per = int(minutes * 60 / every_s)
    frames = []
    for k, name in enumerate(NAMES[:2]):
        times = start + pd.to_timedelta(np.arange(per) * every_s + 0.37 * k, unit="s")
        n = len(times)
        present = rng.random(n) < 0.6
        signal = np.where(rng.random(n) < 0.1, None, present).astype(object)
        snr = rng.normal(15, 4, n)
        snr[::5] = np.nan
        frames.append(
            pd.DataFrame(
                {
                    "receiver": name,
                    "timestamp_utc": times,
                    "frequency_hz": freq,
                    "snr_db": snr,
                    "cn0_dbhz": rng.normal(50, 3, n),
                    "noise_power_dbfs": rng.normal(-70, 2, n),
                    "signal_power_dbfs": rng.normal(-45, 2, n),
                    "signal_present": signal,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def pandas_stats(df: pd.DataFrame, seconds: float) -> pd.DataFrame:
    """measurement_stats computed by pandas: buckets aligned on 2000-01-03."""
    width = pd.Timedelta(seconds=seconds)
    ts = pd.to_datetime(df["timestamp_utc"], utc=True)
    work = df.assign(
        bucket=ORIGIN + ((ts - ORIGIN) // width) * width,
        occ=df["signal_present"].map(lambda v: np.nan if v is None else float(v)),
    )
    g = work.groupby(["bucket", "receiver", "frequency_hz"], sort=True)
    out = pd.DataFrame(
        {
            "n": g.size(),
            "snr_db_mean": g["snr_db"].mean(),
            "snr_db_min": g["snr_db"].min(),
            "snr_db_max": g["snr_db"].max(),
            "cn0_dbhz_mean": g["cn0_dbhz"].mean(),
            "noise_power_dbfs_mean": g["noise_power_dbfs"].mean(),
            "signal_power_dbfs_mean": g["signal_power_dbfs"].mean(),
            "occupancy": g["occ"].mean(),
        }
    ).reset_index()
    return out[db.STATS_COLUMNS]


def assert_stats_equal(got: pd.DataFrame, want: pd.DataFrame, what: str) -> None:
    assert list(got.columns) == db.STATS_COLUMNS, what
    assert len(got) == len(want) > 0, what
    assert (got["bucket"].to_numpy() == want["bucket"].to_numpy()).all(), what
    assert list(got["receiver"]) == list(want["receiver"]), what
    assert (got["n"].to_numpy() == want["n"].to_numpy()).all(), what
    for col in db.STATS_COLUMNS[2:]:
        np.testing.assert_allclose(
            got[col].to_numpy(np.float64),
            want[col].to_numpy(np.float64),
            rtol=1e-9,
            atol=1e-9,
            err_msg=f"{what}: {col}",
        )


def test_measurement_stats_same_on_both_servers(
    fresh_database: str, ts_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="heimdall_lab.db.measurements")
    embedded = db.get_engine(fresh_database)
    engines = {"embedded": embedded, "pglite": ts_engine}
    sid = _uid("s")
    t0 = "2023-05-10T10:00:13.123456Z"
    # two receivers, two frequencies, three captures (two in the session, two at F2 in the
    # same minutes), and a 7-minute gap without rows
    parts = {
        "a": (_stats_rows(1, t0, 12, 6.7, F1), 0),
        "b": (_stats_rows(2, t0, 12, 9.1, F2), None),
        "c": (_stats_rows(3, "2023-05-10T10:19:02.5Z", 8, 7.3, F2), 1),
    }
    early = _stats_rows(4, "2023-05-10T10:00:41Z", 1, 11.0, F1)  # written after a first read
    try:
        caps = {}
        for engine in engines.values():
            db.create_session(engine, session_id=sid, name="stats", plan={"steps": [0, 1]})
            for key, (rows, step) in parts.items():
                freq = float(rows["frequency_hz"].iloc[0])
                kwargs = {} if step is None else {"session_id": sid, "session_step": step}
                cap = db.create_capture(engine, freq, 600.0, capture_id=f"{sid}-{key}", **kwargs)
                assert db.write_measurements(engine, cap, rows) == len(rows)
                caps[key] = cap
        assert not db.stats_aggregate(embedded)
        assert db.stats_aggregate(ts_engine)

        every = pd.concat([p[0] for p in parts.values()], ignore_index=True)
        in_session = pd.concat([parts["a"][0], parts["c"][0]], ignore_index=True)
        lo, hi = pd.Timestamp("2023-05-10T10:03:00Z"), pd.Timestamp("2023-05-10T10:24:00Z")
        odd_lo, odd_hi = lo + pd.Timedelta("17.5s"), hi - pd.Timedelta("3.25s")
        ts = every["timestamp_utc"]
        cases = [
            ("1 minute", {}, every, 60),
            ("60 s", {"bucket": 60}, every, 60),
            ("5 minutes", {"bucket": "5min"}, every, 300),
            ("1 hour", {"bucket": "1h"}, every, 3600),
            ("7 s (not whole minutes)", {"bucket": 7}, every, 7),
            (
                "aligned range",
                {"start": lo, "end": hi, "bucket": "2min"},
                every[(ts >= lo) & (ts < hi)],
                120,
            ),
            (
                "unaligned range",
                {"start": odd_lo, "end": odd_hi},
                every[(ts >= odd_lo) & (ts < odd_hi)],
                60,
            ),
            ("frequency", {"frequency_hz": F1 + 0.3}, every[every["frequency_hz"] == F1], 60),
            ("receiver", {"receivers": [NAMES[1]]}, every[every["receiver"] == NAMES[1]], 60),
            ("session", {"session_id": sid, "bucket": "3min"}, in_session, 180),
            ("capture", {"capture_id": caps["b"]}, parts["b"][0], 60),
        ]
        for what, kwargs, subset, seconds in cases:
            args = {**WINDOW, **kwargs}
            got = {name: db.measurement_stats(e, **args) for name, e in engines.items()}
            pd.testing.assert_frame_equal(
                got["embedded"],
                got["pglite"],
                check_exact=False,
                rtol=1e-9,
                atol=1e-9,
                obj=what,
            )
            assert_stats_equal(got["embedded"], pandas_stats(subset, seconds), what)

        assert "measurement_stats from the continuous aggregate" in caplog.text  # PGlite
        minutes = db.measurement_stats(embedded, **WINDOW)
        gap = (minutes["bucket"] >= "2023-05-10T10:13Z") & (minutes["bucket"] < "2023-05-10T10:19Z")
        assert not gap.any() and len(minutes["bucket"].unique()) == 12 + 9
        assert set(minutes["frequency_hz"]) == {F1, F2}

        # rows written late into buckets the aggregate has materialized count as well
        for engine in engines.values():
            assert db.write_measurements(engine, caps["a"], early) == len(early)
        stale = db.measurement_stats(ts_engine, **WINDOW, refresh=False)
        fresh = {name: db.measurement_stats(e, **WINDOW) for name, e in engines.items()}
        pd.testing.assert_frame_equal(
            fresh["embedded"], fresh["pglite"], check_exact=False, rtol=1e-9, atol=1e-9
        )
        both = pd.concat([every, early], ignore_index=True)
        assert_stats_equal(fresh["pglite"], pandas_stats(both, 60), "late rows")
        assert stale["n"].sum() == len(every)  # unrefreshed: the materialized buckets
        assert fresh["pglite"]["n"].sum() == len(every) + len(early)
    finally:
        embedded.dispose()


def test_stats_view_columns_match_and_bad_bucket(backend: tuple[str, Engine]) -> None:
    name, engine = backend
    with engine.connect() as conn:
        cols = list(
            conn.execute(
                sa.text(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_name = 'measurement_stats' ORDER BY ordinal_position"
                )
            ).scalars()
        )
    assert cols[:5] == ["bucket", "capture_id", "websdr_id", "frequency_hz", "n"]
    assert {"snr_db_sum", "snr_db_n", "occupancy_sum", "occupancy_n", "occupancy"} <= set(cols)
    assert db.stats_aggregate(engine) is (name == "pglite")
    for bad in (0, -60, "soon", float("nan")):
        with pytest.raises(ValidationError, match="bucket"):
            db.measurement_stats(engine, bucket=bad)


def test_enable_timescale_makes_the_aggregate(ts_engine: Engine) -> None:
    engine = ts_engine
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP MATERIALIZED VIEW measurement_stats")
    assert not db.stats_aggregate(engine)
    assert db.enable_timescale(engine)
    assert db.stats_aggregate(engine)
    assert db.enable_timescale(engine)  # again: nothing changes
    assert db.get_policy(engine)["stats_refresh"] is not None


# ----------------------------------------------------------------------------- policies


def test_policy_on_timescale(ts_engine: Engine) -> None:
    engine = ts_engine
    policy = db.get_policy(engine)
    assert policy["server"] == "timescaledb" and policy["stats"] == "continuous aggregate"
    assert policy["compress_after"] == timedelta(days=30)  # migration 003's
    assert policy["retain"] is None
    try:
        policy = db.set_policy(engine, retain="90d", compress_after=timedelta(days=7))
        assert policy["retain"] == timedelta(days=90)
        assert policy["compress_after"] == timedelta(days=7)
        assert policy["stats_refresh"]["end_offset"] == timedelta(minutes=1)
        assert policy["scheduler"] is False  # PGlite runs no background jobs
        assert "recorded but act only where the scheduler runs" in policy["note"]
        with engine.connect() as conn:
            jobs = conn.execute(
                sa.text(
                    "SELECT proc_name FROM timescaledb_information.jobs "
                    "WHERE hypertable_name = 'measurements'"
                )
            ).scalars()
            assert sorted(jobs) == ["policy_compression", "policy_retention"]
        assert db.set_policy(engine, retain="12h")["retain"] == timedelta(hours=12)
        assert db.get_policy(engine)["compress_after"] == timedelta(days=7)  # left alone
        policy = db.set_policy(engine, retain="off")
        assert policy["retain"] is None and "kept for ever" in policy["note"]
        with pytest.raises(ValidationError, match="not a duration"):
            db.set_policy(engine, retain="90 parsecs")
        with pytest.raises(ValidationError, match="longer than zero"):
            db.set_policy(engine, compress_after=timedelta(0))
    finally:
        db.set_policy(engine, retain="off", compress_after="30d")
    assert db.get_policy(engine)["compress_after"] == timedelta(days=30)


def test_policy_on_plain_postgres_and_prune(backend: tuple[str, Engine]) -> None:
    name, engine = backend
    if name == "embedded":
        policy = db.get_policy(engine)
        assert policy["server"] == "postgresql" and policy["retain"] is None
        assert "prune" in policy["note"]
        with pytest.raises(DatabaseError, match=r"no retention or compression policy.*prune"):
            db.set_policy(engine, retain="90d")
        assert db.set_policy(engine) == policy  # nothing asked: what is in force

    cap = db.create_capture(engine, F1, 10.0)
    old = _stats_rows(5, "2019-01-01T00:00:00Z", 2, 10.0, F1)
    new = _stats_rows(6, "2019-06-01T00:00:00Z", 2, 10.0, F1)
    db.write_measurements(engine, cap, pd.concat([old, new], ignore_index=True))
    assert db.prune(engine, pd.Timestamp("2019-03-01")) == len(old)
    left = db.measurements_for_capture(engine, cap, include_psd=False)
    assert len(left) == len(new) and (left["timestamp_utc"] >= "2019-06-01T00:00Z").all()
    assert db.prune(engine, pd.Timestamp("2019-03-01")) == 0
    with pytest.raises(ValidationError, match="not a duration"):
        db.prune(engine, "ninety days")
    if name == "embedded":  # the shared PGlite keeps other tests' old rows: here only
        recent = _stats_rows(7, str(pd.Timestamp.now("UTC") - pd.Timedelta("1h")), 1, 10.0, F1)
        db.write_measurements(engine, cap, recent)
        assert db.prune(engine, "30d") == len(new)
        assert len(db.measurements_for_capture(engine, cap, include_psd=False)) == len(recent)


def test_cli_db_policy(fresh_database: str, capsys) -> None:
    assert cli.main(["db", "policy", "--database-url", fresh_database]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "plain PostgreSQL" in out and "prune" in out
    code = cli.main(["db", "policy", "--retain", "90d", "--database-url", fresh_database])
    err = capsys.readouterr().err
    assert code == cli.EXIT_FAILED and "prune" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as info:
        cli.main(["db", "policy", "--retain", "ninety", "--database-url", fresh_database])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "not a duration" in err and len(err.strip().splitlines()) == 1
