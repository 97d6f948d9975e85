"""One test per rule, each against the rule's one home."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy.engine import make_url

import heimdall_lab
from heimdall_lab import geo, gnss
from heimdall_lab.errors import ValidationError
from heimdall_lab.gnss import NO_FIX
from heimdall_lab.ids import check_capture_id, check_receiver_name, new_capture_id
from heimdall_lab.io.kiwi_wav import (
    kiwi_wav_name,
    parse_kiwi_wav_name,
    read_gnss_pos,
    write_gnss_pos,
)
from heimdall_lab.receivers import Receiver
from heimdall_lab.recording import FRAME_SAMPLES, NOMINAL_RATE
from heimdall_lab.retry import RetryPolicy
from heimdall_lab.urls import mask_url
from heimdall_lab.values import finite_or_none, jsonable, positive, to_json

PACKAGE = Path(heimdall_lab.__file__).parent


def test_capture_ids() -> None:
    assert re.fullmatch(r"[0-9a-f]{32}", check_capture_id(new_capture_id()))
    assert check_capture_id("my-run.1") == "my-run.1"
    for bad in ("", "../x", "a..b", "-x", "a/b", "x" * 129, 5):
        with pytest.raises(ValidationError):
            check_capture_id(bad)


def test_receiver_names() -> None:
    assert check_receiver_name("Hasenberg03") == "Hasenberg03"
    for bad in ("", "a b", "../etc", "x" * 65, "_x"):
        with pytest.raises(ValidationError):
            check_receiver_name(bad)


def test_kiwi_wav_names_round_trip(tmp_path: Path) -> None:
    start = np.datetime64("2017-11-27T10:41:56.700", "ns")
    name = kiwi_wav_name(start, 77500.0, "DF0KL")
    assert name == "20171127T104156Z_77500_DF0KL_iq.wav"
    rx, when, freq = parse_kiwi_wav_name(tmp_path / name)
    assert (rx, when, freq) == ("DF0KL", np.datetime64("2017-11-27T10:41:56", "ns"), 77500.0)
    assert parse_kiwi_wav_name("other.wav")[1:2] == (None,)
    write_gnss_pos(tmp_path, Receiver("DF0KL", "kiwi.example", 8073, 50.5, 8.25))
    assert read_gnss_pos(tmp_path / name, "DF0KL") == (50.5, 8.25)


def test_json_conversion_handles_numpy_times_and_nesting() -> None:
    value = {
        "snr": np.float32("nan"),
        "n": np.int64(3),
        "ok": np.bool_(True),
        "psd": np.array([[1.5, np.inf]], np.float32),
        "t": np.datetime64("2020-01-02T03:04:05", "ns"),
        "ts": np.array(["2020-01-02", "NaT"], "M8[ns]"),
        "nested": [({"x": np.float64(2.0)},)],
    }
    out = jsonable(value)
    assert out == {
        "snr": None,
        "n": 3,
        "ok": True,
        "psd": [[1.5, None]],
        "t": "2020-01-02T03:04:05.000000000Z",
        "ts": ["2020-01-02T00:00:00.000000000Z", None],
        "nested": [[{"x": 2.0}]],
    }
    assert json.loads(to_json(value)) == out
    assert finite_or_none(np.float32("inf")) is None and finite_or_none(np.int16(4)) == 4.0
    with pytest.raises(ValidationError):
        to_json({"x": object()})


def test_number_checks() -> None:
    assert positive(np.float32(2.5), "x") == 2.5
    assert positive(0, "x", allow_zero=True) == 0.0
    assert positive(np.int64(3), "n", whole=True) == 3
    for bad, kw in [
        (0, {}),
        (-1, {}),
        (float("nan"), {}),
        (True, {}),
        ("1", {}),
        (1.5, {"whole": True}),
    ]:
        with pytest.raises(ValidationError):
            positive(bad, "x", **kw)


def test_positions() -> None:
    geo.check_position(50.0, 8.0)
    for lat, lon in [(91, 0), (0, 181), (float("nan"), 0)]:
        with pytest.raises(ValidationError):
            geo.check_position(lat, lon)
        with pytest.raises(ValidationError):  # the receivers use the same rule
            Receiver("X", "kiwi.example", 8073, lat, lon)


def test_gnss_frame_trust_and_rate_fit() -> None:
    sol = np.array([[0, 0, 0, NO_FIX, 5, 255], [1, 1, 1, 1, 1, 1]], np.uint8)
    expected = [[False, False, True, False, True, False], [False, False, True, True, True, True]]
    assert gnss.trusted_frames(sol).tolist() == expected
    assert gnss.trusted_frames(sol[1]).tolist() == expected[1]
    rate = 12001.135
    idx = np.arange(40) * FRAME_SAMPLES
    t = idx / rate + np.where(np.arange(40) < 20, 0.0, 0.25)  # a jump: two segments
    seg = np.repeat([0, 1], 20)
    fit = gnss.fit_rate(idx, t, seg)
    assert fit.rate == pytest.approx(rate, rel=1e-12)
    assert np.abs(fit.residual_s).max() < 1e-12
    assert not np.isfinite(gnss.fit_rate(idx[:1], t[:1]).rate)


def test_protocol_constants_defined_once() -> None:
    assert NOMINAL_RATE == 12000.0 and FRAME_SAMPLES == 512 and NO_FIX == 253
    literal = re.compile(
        r"(?<![\d.])(12000(\.0)?|12_000(\.0)?|1_000_000_000|604_?800)(?![\d.])|=\s*512\b|=\s*253\b"
    )
    homes = {"recording.py", "values.py", "gnss.py"}
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if literal.search(code) and rel not in homes and ">>>" not in line:
                offenders.append(f"{rel}:{n}: {line.strip()}")
    assert not offenders, offenders


def test_retry_policy() -> None:
    policy = RetryPolicy(attempts=4, initial_s=0.001, maximum_s=0.002, jitter_s=0.0)
    assert policy.delays() == [0.001, 0.002, 0.002]
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("down")
        return "up"

    for attempt in policy.retrying(lambda e: isinstance(e, ConnectionError)):
        with attempt:
            result = flaky()
    assert result == "up" and len(calls) == 3
    calls.clear()
    with pytest.raises(ConnectionError):
        for attempt in policy.with_attempts(2).retrying(lambda e: True):
            with attempt:
                flaky()
    assert len(calls) == 2
    with pytest.raises(ValueError):  # not worth retrying: raised at once
        for attempt in policy.retrying(lambda e: isinstance(e, ConnectionError)):
            with attempt:
                calls.append(1)
                raise ValueError("bad")
    with pytest.raises(ValidationError):
        RetryPolicy(attempts=0)


def test_url_masking() -> None:
    assert mask_url("postgresql://heimdall:pw@db:5432/h?sslmode=require&password=pw2") == (
        "postgresql://heimdall:***@db:5432/h?sslmode=require&password=***"
    )
    assert mask_url("s3://KEY:SECRET@bucket/iq") == "s3://***@bucket/iq"
    assert mask_url("https://x.example/a?token=abc#f") == "https://x.example/a?token=***#f"
    assert mask_url("/data/iq") == "/data/iq"
    # passwords with '/', '@' or a mistyped scheme still never show
    assert mask_url("postgresql://heimdall:ab/cd@host/db") == "postgresql://heimdall:***@host/db"
    assert mask_url("postgresql://u:p@ss@host/db") == "postgresql://u:***@host/db"
    assert mask_url("postgresql//heimdall:s3cret@h/db") == "postgresql//heimdall:***@h/db"
    assert mask_url("s3://KEY:SE/CRET@bucket/iq") == "s3://***@bucket/iq"
    assert mask_url(make_url("postgresql://a:b/c@h/d")) == "postgresql://a:***@h/d"
    assert mask_url("postgresql://heimdall@host/db") == "postgresql://heimdall@host/db"


def test_cli_wav_dir_reads_back_and_locates(env, capsys) -> None:
    from heimdall_lab.cli import main
    from heimdall_lab.emulate.scenario import Scenario

    out = env / "wav"
    args = ["capture", "-f", "77500", "-d", "4", "--seed", "0", "--fast", "-q"]
    code = main([*args, "--modulation", "ook", "--wav-dir", str(out)])
    assert code == 0, capsys.readouterr().out
    ds = heimdall_lab.open_capture(out)
    scenario = Scenario.default(seed=0)
    sites = {s.name: s for s in scenario.sites}
    assert sorted(ds.receiver.values.tolist()) == sorted(sites)
    for name in ds.receiver.values.tolist():
        one = ds.sel(receiver=name)
        assert float(one.latitude) == sites[name].latitude
        assert float(one.longitude) == sites[name].longitude
        assert int(one.n_samples) >= 4 * 12000
    assert float(ds.attrs["center_frequency_hz"]) == 77500.0
    # The same folder located: the keyed emulated transmitter, from the files alone.
    result = heimdall_lab.locate(out)
    tx = scenario.transmitter
    assert geo.distance_m(tx.latitude, tx.longitude, result.latitude, result.longitude) < 5e3


def test_receivers_follow_the_name_and_number_rules() -> None:
    with pytest.raises(ValidationError, match=r"without '\.\.'"):
        Receiver("x..y", "127.0.0.1")
    with pytest.raises(ValidationError, match="retry_count must be a whole number"):
        Receiver("RX", "127.0.0.1", retry_count=1.5)
    with pytest.raises(ValidationError, match="timeout_s must be a number"):
        Receiver("RX", "127.0.0.1", timeout_s=True)
