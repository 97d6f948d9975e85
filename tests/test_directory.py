"""The public KiwiSDR directory reader, against the real snapshot of 2025-12-31 and local servers.

The snapshot (``tutorial.directory_snapshot()``) is 950 real receivers in the JavaScript form;
its HTML form is built from the same raw records with ``render_html``. Hostile variants are
built from it or written out here; every server is on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import logging
import math
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import support
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heimdall_lab import directory, home, tutorial
from heimdall_lab.directory import DirectoryError, SkippedEntry
from heimdall_lab.ids import check_receiver_name
from heimdall_lab.receivers import DEFAULT_RECEIVERS

SNAPSHOT = tutorial.directory_snapshot()
TEXT = SNAPSHOT.read_text(encoding="utf-8")
BODY = TEXT.encode("utf-8")


def raw_records(text: str = TEXT) -> list[dict[str, str]]:
    """The snapshot's records as plain dicts, read independently of the module under test:
    the array cut out, its trailing commas dropped (no string in it holds ``,}`` or ``,]``)."""
    array = text[text.index("[") : text.rindex("]") + 1]
    return json.loads(re.sub(r",(\s*[}\]])", r"\1", array))


RAW = raw_records()


@pytest.fixture(scope="module")
def snapshot() -> directory.Directory:
    started = time.perf_counter()
    parsed = directory.parse(TEXT, source=str(SNAPSHOT))
    print(f"parsing the {len(RAW)}-entry snapshot took {time.perf_counter() - started:.3f} s")
    return parsed


def check_invariants(d: directory.Directory) -> None:
    """What holds for any parsed directory: counts add up, names unique, receivers valid."""
    assert d.read == len(d) + sum(d.skipped.values()) + d.quirks.get("duplicate_url", 0)
    assert set(d.skipped) <= set(directory.REASONS)
    assert set(d.quirks) <= set(directory.QUIRKS)
    names = [e.name for e in d]
    assert len({n.lower() for n in names}) == len(names)
    assert len({(e.host, e.port) for e in d}) == len(d)
    for entry in d:
        check_receiver_name(entry.name)
        receiver = entry.receiver()  # runs every check of Receiver
        assert receiver.name == entry.name
        for text in (entry.title, entry.antenna, entry.location_name, entry.sw_version):
            assert len(text) <= directory.MAX_TEXT_CHARS
            assert "<" not in text or not re.search(r"<[A-Za-z/!?]", text)


# ---------------------------------------------------------------------------------------------
# The real snapshot


def test_snapshot_counts(snapshot):
    check_invariants(snapshot)
    assert snapshot.read == len(RAW) == 950
    assert snapshot.skipped == {"bands": 5, "url": 1}
    assert len(snapshot) == 950 - 6 - 4 == 940
    assert (
        snapshot.summary()
        .splitlines()[0]
        .startswith("read 950, kept 940, skipped 6 (bands 5, url 1)")
    )
    assert snapshot.published_utc == np.datetime64("2025-12-31T09:02:20")
    assert not snapshot.from_cache


def test_snapshot_quirks_match_the_raw_text(snapshot):
    """Each quirk count against an independent count over the raw text."""
    q = snapshot.quirks
    assert q["trailing_comma"] == len(re.findall(r",\s*[}\]]", TEXT)) == 51
    assert q["comment"] == len(re.findall(r"^//", TEXT, re.M)) == 4
    # The README speaks of a repeated dx_file key; this snapshot holds none: every object
    # has exactly one. (Repeated keys are shown handled on a file below.)
    objects = re.split(r"\n\s*\{\s*\n", TEXT)[1:]
    assert [len(re.findall(r'^\s*"dx_file"\s*:', o, re.M)) for o in objects] == [1] * 950
    assert "repeated_key" not in q
    # 4 URLs twice each: 4 entries dropped.
    urls = Counter(r["url"].lower() for r in RAW)
    assert sorted(n for n in urls.values() if n > 1) == [2, 2, 2, 2]
    assert q["duplicate_url"] == 4
    assert q["https"] == sum(r["url"].startswith("https://") for r in RAW) == 1
    assert q["zoom_suffix"] == sum(r["gps"].endswith("z)") for r in RAW) == 1
    # Counted on the entries kept (before collapsing duplicates), so at most the raw count.
    assert 0 < q["escaped_quote"] <= sum(any('"' in v for v in r.values()) for r in RAW)
    assert q["escaped_quote"] == 17
    assert 800 < q["emoji"] <= 950
    assert q["mojibake"] == sum("ðŸ" in r["sdr_hw"] for r in RAW) == 52


def test_snapshot_first_entry(snapshot):
    raw = RAW[0]
    assert raw["url"] == "http://80m.loginto.me:8078"
    e = snapshot.entries[0]
    assert (e.host, e.port, e.tls) == ("80m.loginto.me", 8078, False)
    assert e.location_name == "Weston-super-Mare, United Kingdom" == raw["loc"]
    assert (e.latitude, e.longitude) == (51.317266, -2.950479)
    assert (e.min_frequency_hz, e.max_frequency_hz) == (0.0, 30e6)
    assert (e.users, e.users_max, e.free_channels) == (2, 4, 2)
    assert (e.gps_good, e.fixes_min) == (12, 29)
    assert e.has_gps and e.fresh_gnss and e.time_limited
    assert (e.tdoa_id, e.tdoa_ch, e.allows_tdoa) == ("G4SZM", 0, True)
    assert (e.snr_db, e.altitude_m) == (44.0, 108.0)
    assert e.sw_version == "KiwiSDR_v1.826"
    assert e.directory_id == "e415f6f23445"
    assert e.updated_utc == np.datetime64("2025-12-31T08:55:28")
    assert e.title.startswith("G3SDR, 0-32 MHz Kiwi 8078. Weston-super-Mare.")
    assert e.title.endswith("\U0001f581")  # the emoji kept
    assert (e.offline, e.password, e.ext_api) == (False, False, True)
    # Three receivers share tdoa_id G4SZM: the first keeps it, the others get their port.
    assert [x.name for x in snapshot.entries[:3]] == ["G4SZM", "G4SZM-8073", "G4SZM-8075"]


def test_snapshot_defaults_present(snapshot):
    assert [r.name for r in DEFAULT_RECEIVERS] == [
        "F4JOY",
        "Purmerend",
        "North-Shropshire-UK",
        "Hasenberg03",
        "DB3TH",
        "OE3AKB",
        "DK0TE",
    ]
    for r in DEFAULT_RECEIVERS:
        e = snapshot.get(r.name)
        assert e is not None, r.name
        assert (e.name, e.host, e.port) == (r.name, r.host, r.port)
        assert (e.latitude, e.longitude) == (r.latitude, r.longitude)
        assert e.has_gps and e.fresh_gnss and e.covers(10e6) and e.covers(29.9e6)


def test_snapshot_names_valid_and_unique(snapshot):
    names = [e.name for e in snapshot]
    for name in names:
        assert check_receiver_name(name) == name
    assert len(set(names)) == len({n.lower() for n in names}) == len(snapshot)
    assert snapshot.get("oe3akb") is snapshot.get("OE3AKB")  # case-insensitive fallback
    assert snapshot.get("no-such-receiver") is None
    assert len(snapshot.receivers()) == len(snapshot)


def test_snapshot_quirk_entries(snapshot):
    https = [e for e in snapshot if e.tls]
    assert [(e.host, e.port) for e in https] == [("kwsdr.db0nas.de", 443)]
    assert https[0].receiver().url == "https://kwsdr.db0nas.de:443/"
    zoom = [e for e in snapshot if e.host == "141.135.55.29"]
    assert [(e.latitude, e.longitude) for e in zoom] == [(50.8549541, 4.3053505)]
    # Escaped quotes, once and twice escaped, come out as the same plain quotes.
    darts = {e.port: e.antenna for e in snapshot if e.host == "kiwisdr.areg.org.au"}
    assert darts == {p: 'Broadband Monopole ("J-Dart")' for p in (8073, 8074, 8075)}
    assert '\\"J-Dart' in next(r["antenna"] for r in RAW if r["url"].endswith("org.au:8075"))
    # Mojibake repaired, in free text and in the flags.
    soder = next(e for e in snapshot if e.host == "90.230.255.183")
    assert "SÃ¶der" in next(r["loc"] for r in RAW if "90.230.255.183" in r["url"])
    assert soder.location_name == "Söderåsen, Skåne, Sweden"
    assert soder.name == "Soderasen"
    edinburgh = next(e for e in snapshot if e.host == "gm4dij.proxy.rx-888.com")
    assert edinburgh.has_gps and edinburgh.time_limited
    assert np.isnat(edinburgh.updated_utc)  # no "updated" in these records
    # A duplicate URL: the most recently updated copy is kept.
    ko4nad = [e for e in snapshot if e.host == "24.241.205.243"]
    assert [e.updated_utc for e in ko4nad] == [np.datetime64("2025-12-31T08:58:02")]


def test_snapshot_skips_are_the_raw_records_expected(snapshot):
    kept = {(e.host, e.port) for e in snapshot}
    assert ("kx4az_t1.proxy.kiwisdr.com", 8073) not in kept  # '_' is not in a host name
    assert ("hasenberg04.proxy.kiwisdr.com", 80) not in kept  # bands 110-142 MHz
    # Owners decorate antenna and location texts with harmless tags (<b>, <br>, <font>, a
    # link cut off at its quote): the tags go, the receivers stay.
    tagged = [r for r in RAW if re.search(r"<[A-Za-z/]", "".join(r.values()))]
    assert len(tagged) == 12 == snapshot.quirks["html_tags"]
    for r in tagged:
        e = directory.entry_from_fields(r)
        assert not re.search(r"<[A-Za-z/]", e.antenna + e.location_name + e.title)
        assert (e.host, e.port) in kept


def test_html_form_gives_the_same_table(snapshot):
    page = directory.render_html(RAW, generated="Wednesday, 31-Dec-2025 09:02:20 GMT")
    assert page.count("<div class='cl-entry") == 950
    from_html = directory.parse(page, source="kiwisdr.com/public")
    check_invariants(from_html)
    pd.testing.assert_frame_equal(from_html.frame(), snapshot.frame())
    assert (from_html.read, from_html.skipped) == (snapshot.read, snapshot.skipped)
    assert from_html.published_utc == snapshot.published_utc
    assert from_html.quirks["duplicate_url"] == 4
    assert "trailing_comma" not in from_html.quirks


def test_frame_columns(snapshot):
    frame = snapshot.frame()
    assert len(frame) == 940
    assert list(frame.columns[:3]) == ["name", "title", "host"]
    assert list(frame.columns[-2:]) == ["fresh_gnss", "free_channels"]
    assert frame["updated_utc"].dtype.kind == "M"
    assert frame["fresh_gnss"].sum() == sum(e.fresh_gnss for e in snapshot)
    assert (frame["free_channels"] == frame["users_max"].sub(frame["users"]).clip(lower=0)).all()
    empty = directory.parse("[]").frame()
    assert list(empty.columns) == list(frame.columns) and len(empty) == 0


def test_entries_back_to_fields_and_both_forms(snapshot):
    fields = [directory.entry_fields(e) for e in snapshot]
    for form in (directory.render_js, directory.render_html):
        again = directory.parse(form(fields, "now"))
        pd.testing.assert_frame_equal(again.frame(), snapshot.frame())
        assert again.skipped == {} and "duplicate_url" not in again.quirks
    js = directory.render_js(fields, "now")
    assert js.startswith("//") and "var kiwisdr_com =" in js and js.rstrip().endswith(";")


def test_parse_time_noted_and_deterministic(snapshot):
    """Parsing the 950 entries takes about 0.2 s (printed with ``-s``; not asserted)."""
    started = time.perf_counter()
    again = directory.parse(BODY)
    print(f"parsing the snapshot from bytes took {time.perf_counter() - started:.3f} s")
    pd.testing.assert_frame_equal(again.frame(), snapshot.frame())
    assert (again.skipped, again.quirks) == (snapshot.skipped, snapshot.quirks)


# ---------------------------------------------------------------------------------------------
# Rules of one entry

GOOD = {
    "name": "0-30 MHz SDR, G3SDR, Weston",
    "url": "http://kiwi.example.org:8073",
    "gps": "(51.3, -2.9)",
    "bands": "0-30000000",
    "users": "1",
    "users_max": "4",
    "gps_good": "7",
    "fixes_min": "30",
    "sdr_hw": "KiwiSDR 2 \U0001f4e1 GPS \u23f3 Limits",
    "loc": "Weston, UK",
}


def skip_reason(**changes: str | None) -> str:
    fields = {**GOOD, **changes}
    fields = {k: v for k, v in fields.items() if v is not None}
    with pytest.raises(SkippedEntry) as info:
        directory.entry_from_fields(fields)
    assert info.value.reason in directory.REASONS
    assert "\n" not in str(info.value)
    return info.value.reason


def test_good_fields():
    e = directory.entry_from_fields(GOOD)
    assert (e.name, e.host, e.port, e.tls) == ("G3SDR", "kiwi.example.org", 8073, False)
    assert e.has_gps and e.time_limited and e.fresh_gnss and e.free_channels == 3
    assert math.isnan(e.snr_db) and math.isnan(e.altitude_m) and np.isnat(e.updated_utc)


@pytest.mark.parametrize(
    ("gps", "reason"),
    [
        (None, "position"),
        ("", "position"),
        ("(91, 0)", "position"),
        ("(45, 181)", "position"),
        ("(0, 0)", "position"),
        ("(0.0, 0.000)", "position"),
        ("(nan, 3)", "position"),
        ("(inf, 3)", "position"),
        ("(1e3, 3)", "position"),
        ("(45.1)", "position"),
        ("45.1, 7.2, 9", "position"),
    ],
)
def test_position_rules(gps, reason):
    assert skip_reason(gps=gps) == reason


def test_position_forms_accepted():
    for gps, lat, lon in [("(50.85,4.31,12z)", 50.85, 4.31), ("-33.9, 151.2", -33.9, 151.2)]:
        e = directory.entry_from_fields({**GOOD, "gps": gps})
        assert (e.latitude, e.longitude) == (lat, lon)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("javascript:alert(1)", "markup"),  # any field holding javascript: is markup
        ("ftp://kiwi.example.org:21", "url"),
        ("http://user:pw@kiwi.example.org:8073", "url"),
        ("http://kiwi example.org:8073", "url"),
        ("http://" + "a" * 300 + ".org:8073", "url"),
        ("http://" + "a" * 70 + ".org:8073", "url"),  # a label over 63 characters
        ("http://kiwi.example.org:99999", "url"),
        ("http://kiwi.example.org:0", "url"),
        ("http://kiwi.example.org:8073/path", "url"),
        ("http://kiwi.example.org:8073/?q=1", "url"),
        ("http://127.0.0.999:8073", "url"),  # an octet over 255
        ("http://[::1]:8073", "url"),
        ("kiwi.example.org:8073", "url"),
        ("", "url"),
    ],
)
def test_url_rules(url, reason):
    assert skip_reason(url=url) == reason


def test_url_forms_accepted():
    cases = [
        ("https://Kiwi.Example.org", ("kiwi.example.org", 443, True)),
        ("http://kiwi.example.org/", ("kiwi.example.org", 80, False)),
        (" HTTP://10.0.0.1:8074 ", ("10.0.0.1", 8074, False)),
    ]
    for url, want in cases:
        e = directory.entry_from_fields({**GOOD, "url": url})
        assert (e.host, e.port, e.tls) == want


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("users", "1e300", "numbers"),
        ("users", "NaN", "numbers"),
        ("users", "-1", "numbers"),
        ("users", "2.5", "numbers"),
        ("users", "0x10", "numbers"),
        ("users_max", "1001", "numbers"),
        ("gps_good", "101", "numbers"),
        ("fixes_min", "100001", "numbers"),
        ("tdoa_ch", "-2", "numbers"),
        ("asl", "-501", "numbers"),
        ("asl", "Infinity", "numbers"),
        ("snr", "999,1", "numbers"),
        ("bands", "0-1000000000000", "bands"),
        ("bands", "30000000-0", "bands"),
        ("bands", "5-5", "bands"),
        ("bands", "-5-30000000", "bands"),
        ("bands", "0-30MHz", "bands"),
        ("name", "<script>alert(1)</script>", "markup"),
        ("antenna", "<b onclick='x()'>loop</b>", "markup"),
        ("loc", "<svg/onload=alert(1)>", "markup"),
        ("loc", "<iframe src=x>", "markup"),
        ("dx_file", "javascript:void(0)", "markup"),
        ("antenna", "x" * 4097, "too_long"),
        ("name", "x" * 1_000_000, "too_long"),
    ],
)
def test_number_and_text_rules(key, value, reason):
    assert skip_reason(**{key: value}) == reason


def test_defaults_for_missing_numbers():
    minimal = {"url": "http://kiwi.example.org:8073", "gps": "(51.3, -2.9)"}
    e = directory.entry_from_fields(minimal)
    assert (e.users, e.users_max, e.free_channels, e.tdoa_ch) == (0, 0, 0, -1)
    assert (e.min_frequency_hz, e.max_frequency_hz) == (0.0, 30e6)
    assert not e.has_gps and not e.fresh_gnss and not e.allows_tdoa
    assert math.isnan(e.snr_db) and math.isnan(e.altitude_m)
    assert e.name == "kiwi"  # no tdoa_id, callsign or location: the host's first label
    empty = directory.entry_from_fields({**minimal, "users": " ", "asl": "", "snr": ""})
    assert empty.users == 0 and math.isnan(empty.altitude_m)


def test_flags_and_status_page_fields():
    status = {  # a /status page's fields: no url, given separately
        "status": "active",
        "offline": "yes",
        "name": "Test SDR",
        "sdr_hw": "KiwiSDR 2 v1.826",
        "gps": "(47.38, 8.36)",
        "fixes_hour": "12",
        "auth": "password",
        "ext_api": "0",
        "updated": "Monday, 07-Sep-2026 16:20:26 GMT",
        "loc": "Hasenberg, Switzerland",
    }
    e = directory.entry_from_fields(status, url="http://kiwi.example.org:8073")
    assert e.offline and e.password and not e.ext_api and e.has_gps and not e.time_limited
    assert e.updated_utc == np.datetime64("2026-09-07T16:20:26")
    assert e.name == "Hasenberg"
    bad_time = directory.entry_from_fields({**status, "updated": "yesterday"}, url=GOOD["url"])
    assert np.isnat(bad_time.updated_utc)


def test_free_text_cleaned():
    text = "  A\x00B\x07 \u200b\u2063C\t\n\nD  \ud800" + "e" * 500
    e = directory.entry_from_fields(
        {**GOOD, "antenna": text, "loc": "Sm\u00c3\u00b6rg\u00c3\u00a5s"}
    )
    assert e.antenna.startswith("AB C D ee") and len(e.antenna) == directory.MAX_TEXT_CHARS
    assert e.location_name == "Smörgås"


def test_skipped_entry_reason_is_checked():
    assert SkippedEntry("url").reason == "url"
    assert isinstance(SkippedEntry("url"), DirectoryError)
    with pytest.raises(ValueError, match="unknown skip reason"):
        SkippedEntry("whatever")


# ---------------------------------------------------------------------------------------------
# Names


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"tdoa_id": "Hasenberg03", "name": "G3SDR"}, "Hasenberg03"),
        ({"tdoa_id": "A" * 17, "name": "x G3SDR"}, "G3SDR"),  # too long for rule (a)
        ({"tdoa_id": "DL1RF/JN68dj", "name": "DL1RF | x"}, "DL1RF"),  # not a valid name
        ({"name": "ENJOY BY F4JOY | PRADIERS DEP 15 JN15LG, FRANCE"}, "F4JOY"),
        ({"name": "SDR JN15LG 40M 30MHZ G5RV | x", "loc": "Pradiers, France"}, "Pradiers"),
        ({"name": "0-30 MHz SDR, 2E0ABC"}, "2E0ABC"),
        ({"name": "lowercase g3sdr only", "loc": "Bath, UK"}, "Bath"),
        ({"name": "0-30 MHz SDR", "url": "http://db3th.proxy.kiwisdr.com"}, "DB3TH"),
        ({"loc": "North Shropshire UK"}, "North-Shropshire-UK"),
        ({"loc": "Purmerend, Netherlands"}, "Purmerend"),
        ({"loc": "Devět Křížů, Czech Republic"}, "Devet-Krizu"),
        ({"loc": "A very long place name with many words, X"}, "A-very-long-place-name-w"),
        ({"loc": "🇮🇪", "url": "http://80m.loginto.me:8078"}, "80m"),
        ({"loc": "", "url": "http://127.0.0.14:8073"}, "127.0.0.14"),
    ],
)
def test_receiver_name_rules(fields, name):
    fields = {"url": "http://kiwi.example.org:8073", **fields}
    assert directory.receiver_name(fields) == name
    check_receiver_name(name)


def test_receiver_name_without_anything():
    with pytest.raises(SkippedEntry) as info:
        directory.receiver_name({"url": "bad", "loc": "!!!"})
    assert info.value.reason == "name"


def js(records: list[dict[str, str]]) -> str:
    return directory.render_js(records)


def record(host: str, port: int = 8073, **fields: str) -> dict[str, str]:
    return {**GOOD, "url": f"http://{host}:{port}", **fields}


def test_duplicate_names_get_port_then_number():
    records = [
        record("a.example.org", 8073, tdoa_id="Kiwi"),
        record("b.example.org", 8074, tdoa_id="Kiwi"),
        record("c.example.org", 8074, tdoa_id="kiwi"),  # same name ignoring case
        record("d.example.org", 8073, tdoa_id="Kiwi"),
        record("e.example.org", 8074, tdoa_id="Kiwi"),
    ]
    d = directory.parse(js(records))
    assert [e.name for e in d] == ["Kiwi", "Kiwi-8074", "kiwi-2", "Kiwi-8073", "Kiwi-3"]
    check_invariants(d)


def test_duplicate_urls_collapse_to_the_newest():
    old = "Wednesday, 31-Dec-2025 08:00:00 GMT"
    new = "Wednesday, 31-Dec-2025 09:00:00 GMT"
    records = [
        record("kiwi.example.org", updated=old, users="1"),
        record("other.example.org", tdoa_id="Other"),
        record("KIWI.example.org", updated=new, users="3"),  # the same, host case aside
        record("kiwi.example.org", users="2"),  # no time: older than any
    ]
    d = directory.parse(js(records))
    assert d.quirks["duplicate_url"] == 2
    assert [(e.host, e.users) for e in d] == [("kiwi.example.org", 3), ("other.example.org", 1)]
    check_invariants(d)


# ---------------------------------------------------------------------------------------------
# Hostile files


def test_hostile_records_each_skipped_for_its_reason():
    records = [record("good1.example.org")]
    expected = Counter()
    bad = [
        ({"gps": ""}, "position"),
        ({"gps": "(95, 10)"}, "position"),
        ({"url": "javascript:alert(1)"}, "markup"),
        ({"url": "ftp://x.example.org:21"}, "url"),
        ({"url": "http://u:p@x.example.org:8073"}, "url"),
        ({"url": "http://x example.org:8073"}, "url"),
        ({"url": "http://" + "h" * 300 + ":8073"}, "url"),
        ({"users": "1e300"}, "numbers"),
        ({"users_max": "NaN"}, "numbers"),
        ({"users": "-3"}, "numbers"),
        ({"bands": "0-99999999999"}, "bands"),
        ({"name": "<script>alert('x')</script>"}, "markup"),
        ({"antenna": "A" * 1_000_000}, "too_long"),
    ]
    for n, (change, reason) in enumerate(bad):
        records.append({**record(f"bad{n}.example.org"), **change})
        expected[reason] += 1
    records.append(record("good2.example.org", tdoa_id="Good2"))
    d = directory.parse(js(records))
    assert d.skipped == dict(expected)
    assert [e.host for e in d] == ["good1.example.org", "good2.example.org"]
    check_invariants(d)
    # The same records as an HTML page: the same outcome.
    page = directory.parse(directory.render_html(records))
    assert page.skipped == dict(expected) and len(page) == 2


def test_repeated_keys_last_wins():
    text = (
        '[{"dx_file":"1,a,2","url":"http://kiwi.example.org:8073","gps":"(1, 2)",'
        '"users":"1","users":"2","dx_file":"7719,9e476584,612102"},]'
    )
    d = directory.parse(text)
    assert d.quirks["repeated_key"] == 2 and d.entries[0].users == 2
    page = directory.parse(
        "<div class='cl-entry'><a href='http://kiwi.example.org:8073'>x</a>"
        "<!-- gps=(1, 2) --><!-- users=1 --><!-- users=3 --></div>"
    )
    assert page.quirks["repeated_key"] == 1 and page.entries[0].users == 3


def test_javascript_only_syntax():
    text = (
        "/* block */ var rx = // why not\n"
        '[ {\'not\': \'json\'}, {"url":"http://kiwi.example.org:8073", "gps":"(1, 2)",'
        ' "name":"it\\x27s \\\'quoted\\\'" /* inside */ , }, ];'
    )
    d = directory.parse(text)
    assert len(d) == 1 and d.entries[0].title == "it's 'quoted'"
    assert d.skipped == {"syntax": 1}
    assert d.quirks["bad_escape"] == 1 and d.quirks["comment"] == 3
    assert d.quirks["trailing_comma"] == 2


def test_deeply_nested_json():
    deep = "[" * 100_000 + "]" * 100_000
    text = js([record("a.example.org"), record("b.example.org", tdoa_id="B")])
    at = text.index('"name"')
    text = text[:at] + f'"deep":{deep},' + text[at:]  # into the first object
    text = text.replace('"loc"', '"nested":{"a":[1,{"b":null}]},"loc"', 1)
    d = directory.parse(text)
    assert d.skipped == {"syntax": 1}
    assert [e.host for e in d] == ["b.example.org"]
    shallow = js([record("a.example.org")]).replace('"loc"', '"nested":{"a":[1, [2]]},"loc"')
    kept = directory.parse(shallow)
    assert len(kept) == 1 and kept.quirks["non_string"] == 1


def test_truncated_file_keeps_complete_objects():
    starts = [m.start() for m in re.finditer(r"^\t\{$", TEXT, re.M)]
    cut = TEXT[: starts[100] + 300]  # inside the 101st object
    d = directory.parse(cut)
    complete = directory.parse(TEXT[: starts[100]] + "]")
    assert complete.read == 100 and "syntax" not in complete.skipped
    assert (d.read, d.skipped) == (101, {**complete.skipped, "syntax": 1})
    pd.testing.assert_frame_equal(d.frame(), complete.frame())
    check_invariants(d)


def test_one_broken_object_costs_only_itself():
    text = js([record("a.example.org"), record("b.example.org", tdoa_id="B")])
    broken = text.replace('"users":"1"', '"users" "1"', 1)
    d = directory.parse(broken)
    assert d.skipped == {"syntax": 1} and [e.host for e in d] == ["b.example.org"]
    elements = directory.parse('[1, "x", null, {"url":"http://k.example.org","gps":"(1,2)"}]')
    assert elements.skipped == {"not_object": 3} and len(elements) == 1


@pytest.mark.parametrize(
    "data",
    [
        bytes(range(256)) * 40,
        b"\x89PNG\r\n\x1a\n" + bytes(1000),
        "\ufeff\x00[]".encode(),
        b"\xff\xfe" + "[]".encode("utf-16-le"),
        "hello, world",
        "",
        "   \n\t",
        "{}",
        '{"url": "http://k.example.org"}',
        "<html><body>Service unavailable</body></html>",
        "var x = 5;",
        "[" + '"\\"' * 1000,
        "[{",
        "[" + '{"a" 1},' * 50 + "]",
        12,
        None,
    ],
)
def test_not_a_directory(data):
    with pytest.raises(DirectoryError) as info:
        directory.parse(data, source="test")
    message = str(info.value)
    assert "\n" not in message and len(message) < 300


@pytest.mark.parametrize("text", ["[]", "[ ]", "var kiwisdr_com =\n[\n];\n", "// c\n[\n];"])
def test_empty_array(text):
    d = directory.parse(text)
    assert (len(d), d.read, d.skipped) == (0, 0, {})
    assert d.summary().splitlines()[0] == "read 0, kept 0, skipped 0"
    assert d.receivers() == [] and list(d) == []


def test_pathological_texts_do_not_hang_the_parser():
    """Inputs that make a backtracking parser run for hours end here in under a second (the
    bound is a hang guard, 100x that, not a performance goal)."""
    cases = [
        '["' + '\\"' * 200_000,
        "[" + ",/*" * 200_000,
        "[" + ",/**/" * 100_000 + "x",
        "[" + "{" * 500_000,
        "<div class='cl-entry'>" + "<!--" * 100_000,
        "<div class='cl-entry'>" + "<![" * 100_000 + ">",
        "<div class='cl-entry'>" + "</" * 100_000,
    ]
    for text in cases:
        started = time.perf_counter()
        with contextlib.suppress(DirectoryError):
            check_invariants(directory.parse(text))
        assert time.perf_counter() - started < 60, text[:30]


# ---------------------------------------------------------------------------------------------
# Property tests

SMALL = js([record("a.example.org"), record("b.example.org", 8074, tdoa_id="B", asl="30")])
SMALL_HTML = directory.render_html(raw_records(SMALL))
FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
)


def parse_or_directory_error(data: str | bytes) -> None:
    try:
        d = directory.parse(data)
    except DirectoryError as exc:
        assert "\n" not in str(exc)
        return
    check_invariants(d)


@FUZZ
@given(st.one_of(st.text(max_size=2000), st.binary(max_size=2000)))
def test_fuzz_arbitrary_input(data):
    parse_or_directory_error(data)


_PIECES = st.sampled_from(
    ['"', ",", "{", "}", "[", "]", ":", "\\", "/*", "//", "\n", "<!--", "-->", "<", "0", "-"]
)
_EDITS = st.lists(
    st.tuples(
        st.floats(0, 1),
        st.integers(0, 60),
        st.sampled_from(["delete", "insert", "repeat", "cut"]),
        st.one_of(_PIECES, st.text(max_size=12)),
    ),
    min_size=1,
    max_size=6,
)


def mutate(text: str, edits: list[tuple[float, int, str, str]]) -> str:
    for where, length, kind, piece in edits:
        i = int(where * len(text))
        if kind == "delete":
            text = text[:i] + text[i + length :]
        elif kind == "insert":
            text = text[:i] + piece + text[i:]
        elif kind == "repeat":
            text = text[:i] + text[i : i + length] * 3 + text[i + length :]
        else:
            text = text[:i]
    return text


@FUZZ
@given(st.sampled_from([SMALL, SMALL_HTML]), _EDITS)
def test_fuzz_mutated_directory(text, edits):
    parse_or_directory_error(mutate(text, edits))


_KEYS = ["url", "gps", "bands", "users", "users_max", "name", "loc", "tdoa_id", "asl", "snr"]


@FUZZ
@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(_KEYS),
            st.one_of(
                st.text(max_size=40),
                st.sampled_from(["(1, 2)", "(45.5,-3.25,5z)", "http://k.example.org:8073"]),
                st.from_regex(r"\(-?\d{1,3}\.\d{1,4}, ?-?\d{1,3}\.\d{1,4}\)", fullmatch=True),
                st.from_regex(r"https?://[a-zA-Z0-9.-]{1,20}(:\d{1,6})?/?", fullmatch=True),
            ),
        ),
        max_size=5,
    ),
)
def test_fuzz_records_in_both_forms(records):
    d = directory.parse(directory.render_js(records))  # any record: never an error
    check_invariants(d)
    assert d.read == len(records)
    if not records:  # an HTML page without entries is not taken for a directory
        with pytest.raises(DirectoryError, match="without receivers"):
            directory.parse(directory.render_html(records))
        return
    page = directory.parse(directory.render_html(records))
    pd.testing.assert_frame_equal(page.frame(), d.frame())
    assert (page.read, page.skipped) == (d.read, d.skipped)


# ---------------------------------------------------------------------------------------------
# load: files, a local server, the cache


def test_load_file(snapshot, tmp_path):
    d = directory.load(SNAPSHOT)
    assert (d.read, len(d), d.skipped) == (snapshot.read, len(snapshot), snapshot.skipped)
    assert not d.from_cache and d.age_s >= 0 and d.source == str(SNAPSHOT)
    mtime = np.datetime64(round(SNAPSHOT.stat().st_mtime * 1000), "ms")
    assert d.retrieved_utc == mtime
    with pytest.raises(DirectoryError, match="does not exist"):
        directory.load(tmp_path / "missing.js")
    with pytest.raises(DirectoryError, match="over the limit"):
        directory.load(SNAPSHOT, max_bytes=1000)
    with pytest.raises(DirectoryError, match="not a file"):
        directory.load(tmp_path)
    garbage = tmp_path / "garbage.js"
    garbage.write_bytes(bytes(range(256)) * 10)
    with pytest.raises(DirectoryError, match="not text"):
        directory.load(str(garbage))
    with pytest.raises(DirectoryError, match="only http"):
        directory.load("ftp://127.0.0.1/kiwisdr_com.js")


Route = Callable[[http.server.BaseHTTPRequestHandler], None]


class Server:
    """A small HTTP server on 127.0.0.1, in a thread, answering each path its own way."""

    def __init__(self, routes: dict[str, Route]) -> None:
        routes_ = routes
        self.stopping = threading.Event()
        stopping = self.stopping

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                route = routes_.get(self.path)
                if route is None:
                    self.send_error(404)
                    return
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    route(self)

            def log_message(self, *args: object) -> None:
                pass

        Handler.stopping = stopping  # type: ignore[attr-defined]
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def url(self, path: str, auth: str = "") -> str:
        return f"http://{auth}127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def send(body: bytes, status: int = 200, length: bool = True, **headers: str) -> Route:
    def route(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k.replace("_", "-"), v)
        if length:
            h.send_header("Content-Length", str(len(body)))
        else:
            h.send_header("Connection", "close")
        h.end_headers()
        for i in range(0, len(body), 65536):
            h.wfile.write(body[i : i + 65536])
        h.close_connection = True

    return route


def trickle(h: http.server.BaseHTTPRequestHandler) -> None:
    h.send_response(200)
    h.send_header("Content-Length", "1000000")
    h.end_headers()
    for _ in range(400):  # a byte every 25 ms: never a silent second, never done
        if h.stopping.is_set():  # type: ignore[attr-defined]
            return
        h.wfile.write(b" ")
        h.wfile.flush()
        time.sleep(0.025)


@pytest.fixture
def server() -> Iterator[Server]:
    big = b"[" + b" " * 3_000_000 + b"]"
    s = Server(
        {
            "/kiwisdr_com.js": send(BODY, Content_Type="application/javascript"),
            "/public/": send(directory.render_html(RAW).encode(), Content_Type="text/html"),
            "/unavailable": send(b"<html>down for maintenance</html>", status=503),
            "/not-a-directory": send(b"<html><body>Maintenance</body></html>"),
            "/slow": trickle,
            "/big": send(big),
            "/big-unannounced": send(big, length=False),
            "/gzip": send(b"\x1f\x8b\x08\x00", Content_Encoding="gzip"),
            "/to-ftp": send(b"", status=302, Location="ftp://127.0.0.1/x.js"),
            "/moved": send(b"", status=301, Location="/kiwisdr_com.js"),
        }
    )
    try:
        yield s
    finally:
        s.stop()


def cache_files() -> list[Path]:
    folder = home.home_path("cache")
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_load_url_both_forms(server, snapshot):
    d = directory.load(server.url("/kiwisdr_com.js"))
    assert not d.from_cache and d.age_s == 0.0 and len(d) == len(snapshot)
    pd.testing.assert_frame_equal(d.frame(), snapshot.frame())
    page = directory.load(server.url("/public/"), cache=False)
    pd.testing.assert_frame_equal(page.frame(), snapshot.frame())
    moved = directory.load(server.url("/moved"), cache=False)
    assert len(moved) == len(snapshot)
    assert [p.suffix for p in cache_files()] == [".body", ".json"]  # only the cached fetch


def test_load_uses_the_cache_when_the_server_is_gone(server, snapshot, caplog):
    url = server.url("/kiwisdr_com.js", auth="reader:s3cret-pw@")
    fresh = directory.load(url)
    assert fresh.source == server.url("/kiwisdr_com.js", auth="reader:***@")
    body, meta = cache_files()
    assert body.read_bytes() == BODY
    info = json.loads(meta.read_text())
    assert info["url"] == fresh.source and "s3cret" not in meta.read_text()
    # Make the copy 3.2 hours old, then take the server away.
    info["fetched_unix"] = time.time() - 3.2 * 3600
    meta.write_text(json.dumps(info))
    server.stop()
    with caplog.at_level(logging.WARNING, logger="heimdall_lab.directory"):
        old = directory.load(url, timeout_s=2)
    assert old.from_cache and abs(old.age_s - 3.2 * 3600) < 60
    assert np.datetime64(int(info["fetched_unix"] * 1000), "ms") - old.retrieved_utc < 1
    pd.testing.assert_frame_equal(old.frame(), snapshot.frame())
    assert "cached copy, 3.2 h old" in old.summary()
    [warning] = [r for r in caplog.records if r.name == "heimdall_lab.directory"]
    message = warning.getMessage()
    assert "using the copy of http://reader:***@127.0.0.1" in message
    assert "from 3.2 h ago: " in message and "s3cret" not in message
    # Without the cache, the same failure is an error naming the URL, masked.
    with pytest.raises(DirectoryError) as info_:
        directory.load(url, timeout_s=2, cache=False)
    assert "127.0.0.1" in str(info_.value) and "s3cret" not in str(info_.value)


def test_load_falls_back_on_http_errors_and_non_directories(server, caplog):
    good = server.url("/kiwisdr_com.js")
    directory.load(good)
    # Point the cached copy's URL at the failing paths: the same cache key, by copying.
    for path, reason in [("/unavailable", "HTTP 503"), ("/not-a-directory", "without receivers")]:
        url = server.url(path)
        with pytest.raises(DirectoryError, match="no cached copy") as info:
            directory.load(url)
        assert reason in str(info.value)
    (body, meta) = cache_files()
    for path in ("/unavailable", "/not-a-directory"):
        target_body, target_meta = directory._cache_paths(server.url(path))
        target_body.write_bytes(body.read_bytes())
        target_meta.write_bytes(meta.read_bytes())
        with caplog.at_level(logging.WARNING, logger="heimdall_lab.directory"):
            d = directory.load(server.url(path))
        assert d.from_cache and len(d) == 940
        # The failed answer did not replace the copy.
        assert target_body.read_bytes() == BODY


def test_load_timeout_on_a_trickling_server(server):
    started = time.monotonic()
    with pytest.raises(DirectoryError, match=r"within 0\.5 s"):
        directory.load(server.url("/slow"), timeout_s=0.5, cache=False)
    assert time.monotonic() - started < 10  # a hang guard: the deadline cut it (about 1 s)


@pytest.mark.parametrize("path", ["/big", "/big-unannounced"])
def test_load_byte_cap(server, path):
    with pytest.raises(DirectoryError, match="over the limit of 1000000 bytes"):
        directory.load(server.url(path), max_bytes=1_000_000, cache=False)


def test_load_refuses_encodings_and_other_schemes(server):
    with pytest.raises(DirectoryError, match="gzip-encoded"):
        directory.load(server.url("/gzip"), cache=False)
    with pytest.raises(DirectoryError, match="redirect to a 'ftp' URL"):
        directory.load(server.url("/to-ftp"), cache=False)


def test_load_with_no_server_and_no_cache():
    port = support.free_port()
    url = f"http://user:hunter2@127.0.0.1:{port}/kiwisdr_com.js"
    for cache in (True, False):
        with pytest.raises(DirectoryError) as info:
            directory.load(url, timeout_s=2, cache=cache)
        message = str(info.value)
        assert f"http://user:***@127.0.0.1:{port}/kiwisdr_com.js" in message
        assert "hunter2" not in message and "\n" not in message
        assert "ConnectError" in message
    for odd in ("http://[zz]/", "http://127.0.0.1:1/\x00\n", "http://:8073/"):
        with pytest.raises(DirectoryError) as info:  # refused before anything connects
            directory.load(odd, timeout_s=2)
        assert "\n" not in str(info.value)
    assert cache_files() == []


@pytest.mark.parametrize("locator", ["JN58oe", "JN39KF", "IO81"])
def test_a_locator_is_a_place_not_a_name(locator):
    fields = {"url": "http://rx.example.org:8073", "gps": "(48.0, 11.0)", "tdoa_id": locator}
    assert directory.receiver_name(fields) == "rx"
    assert directory.receiver_name({**fields, "loc": locator}) == "rx"
    assert directory.receiver_name({**fields, "loc": "Munich, Germany"}) == "Munich"
