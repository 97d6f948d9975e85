"""open_capture and locate: one door to a capture wherever it is, on the real DCF77 set."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import heimdall_lab as hl
from heimdall_lab.errors import HeimdallError, ValidationError
from heimdall_lab.io import export_sigmf
from heimdall_lab.store import IQStore


@pytest.fixture(scope="module")
def dcf77():
    return hl.tutorial.open_dcf77()


def test_every_form_opens_the_same_capture(dcf77, tmp_path):
    store = IQStore(str(tmp_path / "iq"))
    store.write(dcf77, capture_id="run.v2")  # ids may hold dots
    by_id = hl.open_capture("run.v2", iq_url=store.url)
    by_path = hl.open_capture(tmp_path / "iq" / "captures" / "run.v2.zarr")
    export_sigmf(dcf77, tmp_path / "sigmf")
    by_sigmf = hl.open_capture(tmp_path / "sigmf")
    by_folder = hl.open_capture(hl.tutorial.dcf77_dir() / "iq")  # positions from gnss_pos/
    for ds in (by_id, by_path, by_sigmf, by_folder):
        assert sorted(ds.receiver.values.tolist()) == sorted(hl.tutorial.DCF77_POSITIONS)
        np.testing.assert_array_equal(ds.n_samples.values, dcf77.n_samples.values)
        for name, (lat, lon) in hl.tutorial.DCF77_POSITIONS.items():
            assert float(ds.latitude.sel(receiver=name)) == lat
            assert float(ds.longitude.sel(receiver=name)) == lon
    np.testing.assert_array_equal(
        by_id.iq.isel(receiver=0, sample=slice(0, 4096)).values,
        dcf77.iq.isel(receiver=0, sample=slice(0, 4096)).values,
    )


def test_locate_a_stored_capture_by_id(dcf77, tmp_path):
    store = IQStore(str(tmp_path / "iq"))
    store.write(dcf77, capture_id="dcf77-2017")
    by_id = hl.locate("dcf77-2017", iq_url=store.url)
    by_files = hl.locate(hl.tutorial.dcf77_files())
    assert (by_id.latitude, by_id.longitude) == pytest.approx(
        (by_files.latitude, by_files.longitude), abs=1e-6
    )


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing", "no capture, file or folder"),
        (lambda d: d, "holds no kiwi IQ WAV or SigMF files"),
        (lambda d: [], "no files given"),
        (lambda d: [d / "a.txt"], "no such file"),
    ],
)
def test_odd_sources_are_clear_errors(tmp_path, make, message):
    with pytest.raises(ValidationError, match=message):
        hl.open_capture(make(tmp_path))


def test_a_file_that_is_not_a_wav_is_a_typed_error(tmp_path):
    shutil.copy(hl.tutorial.dcf77_dir() / "README.md", tmp_path / "x_iq.wav")
    with pytest.raises(HeimdallError):
        hl.open_capture(tmp_path / "x_iq.wav")
