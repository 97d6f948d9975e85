"""The real receiver network: directory import into the database, selection, checks, and the
whole loop offline through an emulated network at real positions."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from heimdall_lab import db, directory, geo, tutorial
from heimdall_lab.cli import main
from heimdall_lab.emulate import Scenario, emulated
from heimdall_lab.emulate.network import DirectoryServer, directory_records, network_receivers
from heimdall_lab.emulate.scenario import Transmitter
from heimdall_lab.emulate.server import USERS_MAX
from heimdall_lab.errors import ValidationError
from heimdall_lab.receivers import DEFAULT_RECEIVERS, Receiver

SNAPSHOT = tutorial.directory_snapshot()
DCF77 = (50.0152, 9.0112)


@pytest.fixture(scope="module")
def snapshot() -> directory.Directory:
    return directory.load(SNAPSHOT)


def _azimuth_gap(target: tuple[float, float], positions: list[tuple[float, float]]) -> float:
    """The largest gap between azimuths seen from the target, degrees (spherical)."""
    lat0, lon0 = np.radians(target)
    az = []
    for lat, lon in positions:
        lat1, lon1 = np.radians((lat, lon))
        y = np.sin(lon1 - lon0) * np.cos(lat1)
        x = np.cos(lat0) * np.sin(lat1) - np.sin(lat0) * np.cos(lat1) * np.cos(lon1 - lon0)
        az.append(np.degrees(np.arctan2(y, x)) % 360)
    az = np.sort(az)
    return float(np.max(np.diff(np.r_[az, az[0] + 360])))


def test_a_fresh_home_lists_seven_real_default_receivers(fresh_database, snapshot, capsys):
    assert main(["receivers", "list", "--format", "json", "--database-url", fresh_database]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == [r.name for r in DEFAULT_RECEIVERS]
    by_address = {(e.host.lower(), e.port): e for e in snapshot}
    for row in rows:
        assert not row["host"].endswith(".example")
        entry = by_address[(row["host"].lower(), row["port"])]  # each is in the snapshot
        assert entry.name == row["name"]
        assert (row["latitude"], row["longitude"]) == pytest.approx(
            (entry.latitude, entry.longitude), abs=1e-5
        )
        assert entry.fresh_gnss and entry.min_frequency_hz == 0 and entry.max_frequency_hz >= 30e6


def test_import_is_idempotent_and_keeps_what_the_user_set(fresh_database, snapshot, capsys):
    args = ["receivers", "import", str(SNAPSHOT), "--database-url", fresh_database]
    assert main(args) == 0
    first = capsys.readouterr().out
    kept = len(snapshot)
    # The seven defaults are in the snapshot: they are updated, not imported twice.
    assert f"read {snapshot.read}, imported {kept - 7}, updated 7" in first
    engine = db.get_engine(fresh_database)
    try:
        db.update_receiver(engine, "DB3TH", calibration_db=-12.5)
        db.deactivate_receiver(engine, "OE3AKB")
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE websdrs SET notes = 'my note' WHERE name = 'DK0TE'"))
        before = db.receivers_frame(engine, active_only=False)
        assert len(before) == kept
        assert main(args) == 0
        again = capsys.readouterr().out
        assert f"imported 0, updated 0, skipped {sum(snapshot.skipped.values())}" in again
        after = db.receivers_frame(engine, active_only=False)
        assert "updated_at" in after and after.equals(before)  # not even updated_at changed
        row = after.set_index("name")
        assert row.loc["DB3TH", "calibration_db"] == -12.5
        assert not row.loc["OE3AKB", "is_active"]
        assert row.loc["DK0TE", "notes"] == "my note"
        assert row.loc["DB3TH", "fixes_min"] > 0 and row.loc["DB3TH", "source"] == "default"
        # Imported receivers wait to be chosen: only the defaults are active.
        active = sorted(row.index[row["is_active"]])
        assert active == sorted(r.name for r in DEFAULT_RECEIVERS if r.name != "OE3AKB")
    finally:
        engine.dispose()


def _small_directory(tmp_path: Path, records: list[dict[str, str]], name: str) -> Path:
    path = tmp_path / name
    path.write_text(directory.render_js(records), encoding="utf-8")
    return path


def test_reimport_updates_the_directory_s_columns_and_may_deactivate_the_missing(
    fresh_database, snapshot, tmp_path, capsys
):
    entries = [e for e in snapshot if e.name not in {r.name for r in DEFAULT_RECEIVERS}][:3]
    records = [directory.entry_fields(e) for e in entries]
    url = ["--database-url", fresh_database]
    assert (
        main(["receivers", "import", str(_small_directory(tmp_path, records, "a.js")), *url]) == 0
    )
    assert "imported 3, updated 0" in capsys.readouterr().out
    engine = db.get_engine(fresh_database)
    try:  # chosen by the user: active
        db.activate_only(engine, [*DEFAULT_RECEIVERS, *entries])
    finally:
        engine.dispose()
    records[0] = {**records[0], "users": "0", "users_max": "8"}
    changed = _small_directory(tmp_path, records[:2], "b.js")
    assert main(["receivers", "import", str(changed), "--deactivate-missing", *url]) == 0
    out = capsys.readouterr().out
    assert "imported 0, updated 1" in out and "deactivated 1" in out
    engine = db.get_engine(fresh_database)
    try:
        rows = db.receivers_frame(engine, active_only=False).set_index("name")
    finally:
        engine.dispose()
    assert rows.loc[entries[0].name, "users_max"] == 8
    assert not rows.loc[entries[2].name, "is_active"]  # no longer listed
    assert rows.loc[entries[1].name, "is_active"]
    assert all(rows.loc[r.name, "is_active"] for r in DEFAULT_RECEIVERS)  # never imported


def test_select_on_the_snapshot_surrounds_the_target(snapshot, capsys):
    args = ["receivers", "select", "-f", "77500", "--near", "50.0152,9.0112", "--count", "6"]
    assert main([*args, "--format", "json", "--directory", str(SNAPSHOT)]) == 0
    out = json.loads(capsys.readouterr().out)
    chosen = out["receivers"]
    assert len(chosen) == 6 and np.isfinite(out["predicted_error_km"])
    by_name = {e.name: e for e in snapshot}
    places = []
    for rx in chosen:
        e = by_name[rx["name"]]
        assert (rx["host"], rx["port"], rx["tls"]) == (e.host, e.port, e.tls)
        assert e.covers(77500) and e.fresh_gnss and e.free_channels > 0 and e.allows_tdoa
        assert not (e.offline or e.password) and e.ext_api
        places.append((e.latitude, e.longitude))
    for i, a in enumerate(places):  # six places, not one place six times
        assert all(geo.distance_m(*a, *b) > 1e3 for b in places[i + 1 :])
    assert _azimuth_gap(DCF77, places) < 180  # the target is inside the chosen set


def test_select_activate_makes_the_chosen_the_active_receivers(fresh_database, capsys):
    url = ["--database-url", fresh_database]
    assert main(["receivers", "import", str(SNAPSHOT), *url]) == 0
    capsys.readouterr()
    args = ["receivers", "select", "-f", "10e6", "--area", "47,53,5,13", "--count", "5"]
    assert main([*args, "--format", "json", "--activate", *url]) == 0
    chosen = [r["name"] for r in json.loads(capsys.readouterr().out)["receivers"]]
    engine = db.get_engine(fresh_database)
    try:
        active = [r.name for r in db.list_receivers(engine)]
    finally:
        engine.dispose()
    assert sorted(active) == sorted(chosen) and len(active) == 5


@pytest.mark.parametrize(
    "argv",
    [
        ["receivers", "select", "-f", "77500", "--near", "95,9"],
        ["receivers", "select", "-f", "77500", "--near", "fifty,nine"],
        ["receivers", "select", "-f", "77500", "--area", "55,47,5,15"],
        ["receivers", "select", "-f", "77500"],
        ["receivers", "list", "--format", "xml"],
        ["receivers", "import", "/no/such/directory.js"],
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's refusals
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err and "Traceback" not in err


def test_select_says_why_when_too_few_qualify(tmp_path, snapshot, capsys):
    # 500 kHz-2 MHz covered by nobody in a small, made-up directory: a one-line reason.
    records = [directory.entry_fields(e) for e in list(snapshot)[:5]]
    for r in records:
        r["bands"] = "10000000-30000000"
    path = _small_directory(tmp_path, records, "hf.js")
    argv = ["receivers", "select", "-f", "77500", "--near", "50,9", "--directory", str(path)]
    assert main(argv) == 2
    assert "frequency" in capsys.readouterr().err


@pytest.fixture(scope="module")
def network(snapshot):
    """40 emulated receivers at real positions around Germany, and their directory."""
    receivers = network_receivers(snapshot, count=40, near=(50.0, 9.0))
    tx = Transmitter(*DCF77, 77500.0, power_dbm=-15.0, modulation="ook")
    scenario = Scenario.default(seed=4, receivers=receivers, transmitter=tx)
    with (
        emulated(scenario=scenario, receivers=receivers, realtime=False) as emu,
        DirectoryServer(emu.emulator) as served,
    ):
        yield emu, served


def test_the_emulated_directory_serves_both_forms_alike(network):
    emu, served = network
    js = directory.load(served.url("js"), cache=False)
    html = directory.load(served.url("html"), cache=False)
    assert len(js) == len(html) == 40 and not js.skipped
    columns = [c for c in js.frame().columns if c != "updated_utc"]
    assert js.frame()[columns].equals(html.frame()[columns])
    listed = {(e.host, e.port): e for e in js}
    for r in emu.receivers:
        e = listed[(r.host, r.port)]
        assert r.host == "127.0.0.1" and e.fresh_gnss and e.users_max == USERS_MAX
        assert (e.latitude, e.longitude) == pytest.approx((r.latitude, r.longitude), abs=1e-6)
    assert len(directory_records(emu.emulator)) == 40


def test_check_records_the_health_of_many_receivers(fresh_database, network, capsys):
    _, served = network
    url = ["--database-url", fresh_database]
    assert main(["receivers", "import", served.url("html"), *url]) == 0
    engine = db.get_engine(fresh_database)
    try:
        listed = directory.load(served.url("js"), cache=False)
        db.activate_only(engine, list(listed))  # the public defaults are never contacted
        with engine.begin() as conn:  # and one receiver that no longer answers
            conn.execute(
                sa.text("UPDATE websdrs SET port = 9 WHERE name = :n"),
                {"n": listed.entries[0].name},
            )
        # a generous timeout: on a loaded machine one emulator answering 40 at once is slow
        assert main(["receivers", "check", "--quiet", "--timeout", "60", *url]) == 1
        out = capsys.readouterr().out
        assert "checked 40 receivers" in out and "39 reachable, 39 with fresh GNSS" in out
        rows = db.receivers_frame(engine).set_index("name")
    finally:
        engine.dispose()
    dead = rows.loc[listed.entries[0].name]
    assert dead["last_check_error"] and pd.isna(dead["last_seen_at"])
    alive = rows.drop(index=listed.entries[0].name)
    assert alive["last_seen_at"].notna().all() and alive["last_check_error"].isna().all()
    assert (alive["gps_good"] > 0).all() and (alive["users_max"] == USERS_MAX).all()


def test_the_offline_loop_selects_captures_and_locates(network, tmp_path, engine_for_loop):
    """Import from the emulator's directory, select six around the keyed transmitter,
    capture them over loopback, locate: the error is of the size the selection predicted."""
    from heimdall_lab import planning
    from heimdall_lab.localize import locate_dataset
    from heimdall_lab.pipeline import capture

    emu, served = network
    listed = directory.load(served.url("js"), cache=False)
    chosen = planning.select(listed, 77500.0, near=(50.3, 8.7), count=6, duration_s=10)
    cap = capture(
        77500.0,
        10.0,
        receivers=chosen.receivers(),
        engine=engine_for_loop,
        store=str(tmp_path / "iq"),
        gps_reference=emu.start_utc,
        metadata=emu.parameters,
    )
    assert cap.stage == "done", cap.errors
    result = locate_dataset(cap.dataset)
    error = result.error_km(*DCF77)
    # The default error model is for real receivers (10 us at 500 km); the emulator has none
    # of their systematic errors, so its result is better than predicted, and not by luck:
    # reports/network.md measures it over 20 seeds (about 7x better at the same geometry).
    assert error < chosen.predicted_error_km, (error, chosen.predicted_error_km)


@pytest.fixture
def engine_for_loop(fresh_database):
    engine = db.get_engine(fresh_database)
    yield engine
    engine.dispose()


def _lines(proc, n: int, timeout_s: float) -> list[str]:
    """The first ``n`` lines a process prints, or fail after ``timeout_s`` (no hang).

    A thread reads them (a select() on the pipe would miss lines already in the reader's
    buffer).
    """
    import queue
    import threading

    got: queue.Queue[str] = queue.Queue()
    threading.Thread(
        target=lambda: [got.put(line) for line in iter(proc.stdout.readline, "")],
        daemon=True,
    ).start()
    lines: list[str] = []
    for _ in range(n):
        try:
            lines.append(got.get(timeout=timeout_s))
        except queue.Empty:
            pytest.fail(f"only {len(lines)} lines in {timeout_s} s (exit {proc.poll()}): {lines}")
    return lines


def test_the_cli_loop_from_an_emulated_network(fresh_database, tmp_path, capsys):
    """emulate --network serves receivers at real positions and their directory; import,
    select --activate and a plain capture then use them, all on loopback."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "heimdall_lab", "emulate", "--network", "12", "--fast"]
    cmd += ["--base-port", "0", "--seconds", "60", "-f", "77500", "--modulation", "ook"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = _lines(proc, 13, timeout_s=60)
        assert lines[-1].startswith("# directory: http://127.0.0.1:"), lines
        url = lines[-1].split()[2]
        db_url = ["--database-url", fresh_database]
        assert main(["receivers", "import", url, *db_url]) == 0
        assert "imported 12" in capsys.readouterr().out
        select = ["receivers", "select", "-f", "77500", "--near", "50,9", "--count", "5"]
        assert main([*select, "--activate", *db_url]) == 0
        capsys.readouterr()
        code = main(["capture", "-f", "77500", "-d", "2", "-q", "--iq-url", str(tmp_path), *db_url])
        out = capsys.readouterr().out
        assert code == 0, out
        table = out.split("\n\n")[0].splitlines()[2:]
        assert len(table) == 5 and all(row.split()[1] == "ok" for row in table), out
        # The keyed transmitter is heard: its carrier near 0 Hz, well above the noise.
        assert all(abs(float(row.split()[8])) < 5 for row in table), out
        assert all(float(row.split()[6]) > 30 for row in table), out
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# --- the database's side of the directory: what an import may and may not do -------------


def _entries(snapshot, n):
    defaults = {r.name for r in DEFAULT_RECEIVERS}
    return [e for e in snapshot if e.name not in defaults and e.directory_id][:n]


def _rows(url):
    engine = db.get_engine(url)
    try:
        return db.receivers_frame(engine, active_only=False).set_index("name")
    finally:
        engine.dispose()


def test_select_activate_from_the_database_keeps_the_import_idempotent(fresh_database, capsys):
    url = ["--database-url", fresh_database]
    assert main(["receivers", "import", str(SNAPSHOT), *url]) == 0
    before = _rows(fresh_database)
    select = ["receivers", "select", "-f", "77500", "--near", "50.0152,9.0112", "--activate"]
    assert main([*select, *url]) == 0
    after = _rows(fresh_database)
    assert after["directory_id"].equals(before["directory_id"])  # ids kept
    capsys.readouterr()
    assert main(["receivers", "import", str(SNAPSHOT), *url]) == 0
    assert "imported 0, updated 0" in capsys.readouterr().out


def test_an_import_never_deactivates_the_user_s_receivers_nor_on_an_empty_answer(
    fresh_database, snapshot, tmp_path, capsys
):
    url = ["--database-url", fresh_database]
    entries = _entries(snapshot, 3)
    engine = db.get_engine(fresh_database)
    try:  # the user added one of them by hand first, under a name of their own
        mine = entries[0].receiver()
        db.add_receiver(engine, Receiver("MyKiwi", mine.host, mine.port, 50.0, 8.0))
    finally:
        engine.dispose()
    records = [directory.entry_fields(e) for e in entries]
    for r in records[1:]:
        r.pop("id")  # receivers the directory gives no id: found by address
    full = _small_directory(tmp_path, records, "full.js")
    assert main(["receivers", "import", str(full), *url]) == 0
    db_activate = db.get_engine(fresh_database)
    try:
        db.activate_only(db_activate, [*DEFAULT_RECEIVERS, *entries])
    finally:
        db_activate.dispose()
    # An answer with no usable receiver (an error page, a broken file) deactivates nothing.
    empty = tmp_path / "empty.js"
    empty.write_text("var kiwisdr_com = [];", encoding="utf-8")
    capsys.readouterr()
    assert main(["receivers", "import", str(empty), "--deactivate-missing", *url]) == 2
    assert "no usable receiver" in capsys.readouterr().err
    assert _rows(fresh_database)["is_active"].all()
    # Now every listed receiver is gone from the directory but one.
    rest = _small_directory(tmp_path, records[2:], "rest.js")
    assert main(["receivers", "import", str(rest), "--deactivate-missing", *url]) == 0
    rows = _rows(fresh_database)
    assert rows.loc["MyKiwi", "is_active"]  # the user's, though it had come from the directory
    assert not rows.loc[entries[1].name, "is_active"]  # no id, found by address, gone
    assert not rows.loc[entries[1].name, "listed"]
    assert rows.loc[entries[2].name, "is_active"] and rows.loc[entries[2].name, "listed"]
    assert all(rows.loc[r.name, "is_active"] for r in DEFAULT_RECEIVERS)


def test_receivers_that_swap_hosts_keep_their_rows(fresh_database, snapshot):
    a, b = _entries(snapshot, 2)
    engine = db.get_engine(fresh_database)
    try:
        db.import_directory(engine, [a, b])
        db.update_receiver(engine, a.name, calibration_db=-3.0)
        swapped = [
            dataclasses.replace(a, host=b.host, port=b.port),
            dataclasses.replace(b, host=a.host, port=a.port),
        ]
        db.import_directory(engine, swapped)
        rows = db.receivers_frame(engine, active_only=False).set_index("name")
    finally:
        engine.dispose()
    # Each row follows its directory id: same position and calibration, the new address.
    assert (rows.loc[a.name, "host"], rows.loc[a.name, "latitude"]) == (b.host, a.latitude)
    assert rows.loc[a.name, "calibration_db"] == -3.0
    assert rows.loc[b.name, "host"] == a.host and rows.loc[b.name, "directory_id"] == b.directory_id


def test_the_same_receiver_twice_and_long_names_do_not_grow_the_table(fresh_database, snapshot):
    e = _entries(snapshot, 1)[0]
    twin = dataclasses.replace(e, host=e.host.upper(), directory_id="")
    long = "K" + "x" * 63  # 64 characters: a collision must not make it 66
    one = dataclasses.replace(e, name=long, host="a.example.org", directory_id="")
    two = dataclasses.replace(e, name=long, host="b.example.org", directory_id="")
    engine = db.get_engine(fresh_database)
    try:
        for _ in range(3):
            db.import_directory(engine, [e, twin, one, two])
        rows = db.receivers_frame(engine, active_only=False)
        with pytest.raises(ValidationError, match="no receivers given"):
            db.activate_only(engine, [])
    finally:
        engine.dispose()
    assert len(rows) == 7 + 3
    assert all(len(n) <= 64 for n in rows["name"]) and rows["name"].str.lower().is_unique


def test_selection_from_the_database_passes_over_unlisted_and_unreachable(fresh_database, snapshot):
    from heimdall_lab import planning

    engine = db.get_engine(fresh_database)
    try:
        db.import_directory(engine, snapshot)
        first = planning.select(db.directory_entries(engine), 77500, near=DCF77, count=6)
        gone, dead = first.entries[0], first.entries[1]
        db.import_directory(
            engine,
            dataclasses.replace(
                snapshot, entries=tuple(e for e in snapshot if e.name != gone.name)
            ),
        )
        db.record_health(engine, [{"name": dead.name, "reachable": False, "error": "timeout"}])
        names = {e.name for e in db.directory_entries(engine)}
        again = planning.select(db.directory_entries(engine), 77500, near=DCF77, count=6)
    finally:
        engine.dispose()
    assert gone.name not in names  # no longer listed
    chosen = {e.name for e in again.entries}
    assert gone.name not in chosen and dead.name not in chosen
    assert again.rejected["offline"] >= 1
