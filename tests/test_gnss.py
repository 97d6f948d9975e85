from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from heimdall_lab import gnss


def test_known_instant_2017():
    # 2017-11-27 (a Monday) 10:41:56 UTC = GPS week day 1, 10:41:56 + 18 leap seconds.
    sec, nsec = gnss.utc_to_tow(np.datetime64("2017-11-27T10:41:56.25"))
    assert int(sec) == 86400 + 10 * 3600 + 41 * 60 + 56 + 18
    assert int(nsec) == 250_000_000


@pytest.mark.parametrize(
    ("date", "leap"),
    [
        ("1980-06-01", 0),
        ("1999-06-01", 13),
        ("2016-12-31T23:59:59", 17),
        ("2017-01-01", 18),
        ("2026-11-29", 18),
    ],
)
def test_leap_seconds(date, leap):
    assert int(gnss.leap_seconds(np.datetime64(date))) == leap


def test_week_is_resolved_from_the_reference():
    t = np.datetime64("2017-11-27T10:41:56.123456789")
    sec, nsec = gnss.utc_to_tow(t)
    for ref in ["2017-11-25", "2017-11-30T20:00", datetime(2017, 11, 27, tzinfo=UTC)]:
        ref = ref if isinstance(ref, datetime) else np.datetime64(ref)
        assert gnss.tow_to_utc(sec, nsec, ref) == t
    # A week later the same time of week is a week later.
    assert gnss.tow_to_utc(sec, nsec, np.datetime64("2017-12-04")) == t + np.timedelta64(7, "D")


def test_default_reference_is_the_wall_clock():
    now = np.datetime64(datetime.now(UTC).replace(tzinfo=None), "ns")
    sec, nsec = gnss.utc_to_tow(now)
    assert abs(gnss.tow_to_utc(sec, nsec) - now) < np.timedelta64(1, "s")


@given(st.integers(min_value=0, max_value=2**62 // 1000))
def test_round_trip_ns(offset_us):
    t = np.datetime64("2000-01-01", "ns") + np.timedelta64(
        offset_us % (40 * 365 * 86400 * 10**6), "us"
    )
    sec, nsec = gnss.utc_to_tow(t)
    assert 0 <= sec < gnss.WEEK_SECONDS and 0 <= nsec < 10**9
    assert gnss.tow_to_utc(sec, nsec, t + np.timedelta64(3, "D")) == t


def test_vectorised_across_week_end():
    t = np.datetime64("2026-11-28T23:59:30") + np.arange(0, 20, 5).astype("timedelta64[s]")
    sec, nsec = gnss.utc_to_tow(t)
    assert sec[0] > sec[-1]  # the GPS week rolled over at 23:59:42 UTC (midnight GPS time)
    np.testing.assert_array_equal(gnss.tow_to_utc(sec, nsec, t[0]), t)
