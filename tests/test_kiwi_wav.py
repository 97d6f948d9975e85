import contextlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heimdall_lab.errors import FileFormatError
from heimdall_lab.io.kiwi_wav import kiwi_wav_bytes, parse_kiwi_wav, read_kiwi_wav, write_kiwi_wav
from heimdall_lab.recording import Recording


def test_real_recordings_parse_with_consistent_timestamps(dcf77_files):
    for path in dcf77_files:
        rec = read_kiwi_wav(path)
        assert rec.nominal_rate == 12001
        assert rec.n_frames > 650 and len(rec.samples) == 512 * rec.n_frames
        # The GNSS timestamps give about 12001.1 Hz, each receiver slightly different.
        assert 12000.9 < rec.sample_rate() < 12001.4
        assert rec.timestamp_residual_ns() < 1000
        # The first frame's timestamp is stale; the trusted ones are monotonic.
        trusted = rec.trusted
        assert not trusted[:2].any() and trusted[2:].all()
        t = rec.gpssec[trusted] * 10**9 + rec.gpsnsec[trusted]
        assert np.all(np.diff(t) > 0)
        start = rec.start_time(np.datetime64("2017-11-27"))
        assert abs(start - np.datetime64("2017-11-27T10:41:56")) < np.timedelta64(1, "s")
        assert np.nanmax(np.abs(rec.samples)) < 2


def test_real_recording_round_trips_byte_for_byte(dcf77_files, tmp_path):
    raw = dcf77_files[0].read_bytes()
    rec = parse_kiwi_wav(raw)
    assert kiwi_wav_bytes(rec) == raw
    out = write_kiwi_wav(tmp_path / "copy.wav", rec)
    again = read_kiwi_wav(out)
    np.testing.assert_array_equal(again.samples, rec.samples)
    np.testing.assert_array_equal(again.gpsnsec, rec.gpsnsec)


def _synthetic(n_frames=5):
    rng = np.random.default_rng(1)
    pairs = rng.integers(-3000, 3000, size=(512 * n_frames, 2))
    return Recording(
        samples=((pairs[:, 0] + 1j * pairs[:, 1]) / 32768).astype(np.complex64),
        frame_start=np.arange(n_frames) * 512,
        seq=np.arange(n_frames),
        last_gps_solution=np.array([254] + [1] * (n_frames - 1), np.uint8),
        gpssec=np.full(n_frames, 1000),
        gpsnsec=np.arange(n_frames) * 42_660_000,
        rssi_dbm=np.full(n_frames, np.nan, np.float32),
        nominal_rate=12001.0,
    )


def test_write_then_read():
    rec = _synthetic()
    back = parse_kiwi_wav(kiwi_wav_bytes(rec))
    np.testing.assert_array_equal(back.samples, rec.samples)
    np.testing.assert_array_equal(back.last_gps_solution, rec.last_gps_solution)
    assert not back.has_fix[0]


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda b: b"RIFX" + b[4:], "RIFF"),
        (lambda b: b[:40], "no fmt|truncated|no kiwi"),
        (lambda b: b[:-10], "truncated"),
        (lambda b: b.replace(b"kiwi", b"junk"), "without a kiwi"),
        (lambda b: b[:22] + b"\x01\x00" + b[24:], "2-channel"),
    ],
)
def test_malformed_files_raise_file_format_error(mangle, message):
    with pytest.raises(FileFormatError, match=message):
        parse_kiwi_wav(mangle(kiwi_wav_bytes(_synthetic())))


def test_read_names_the_file(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"nothing")
    with pytest.raises(FileFormatError, match=r"bad\.wav"):
        read_kiwi_wav(bad)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_reader_raises_only_file_format_error(tail):
    head = kiwi_wav_bytes(_synthetic(1))[:44]
    for data in (tail, head + tail, b"RIFF\x00\x00\x00\x00WAVE" + tail):
        with contextlib.suppress(FileFormatError):
            parse_kiwi_wav(data)
