"""Captures streamed into the IQ store chunk by chunk: readable while written, recoverable."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from heimdall_lab.errors import StorageError, ValidationError
from heimdall_lab.receivers import Receiver
from heimdall_lab.recording import FRAME_SAMPLES, Recording
from heimdall_lab.store import MARKER, IQStore
from heimdall_lab.store.stream import (
    STREAM_MANIFEST,
    CaptureWriter,
    StreamLayout,
    finish_stream,
    stored_frames,
)

RATE = 12001.5
REFERENCE = np.datetime64("2026-12-01T12:00:00", "ns")
T0_NS = 300_000 * 10**9  # GPS seconds of week of the first frame


def chunk(first_frame: int, n: int, seed: int = 0) -> Recording:
    """``n`` frames of noise with true GNSS times, the first numbered ``first_frame``."""
    rng = np.random.default_rng([seed, first_frame])
    k = np.arange(first_frame, first_frame + n)
    t = T0_NS + np.round(k * FRAME_SAMPLES / RATE * 1e9).astype(np.int64)
    samples = rng.standard_normal(n * FRAME_SAMPLES) + 1j * rng.standard_normal(n * FRAME_SAMPLES)
    return Recording(
        samples=(0.01 * samples).astype(np.complex64),
        frame_start=np.arange(n, dtype=np.int64) * FRAME_SAMPLES,
        seq=k.astype(np.int64),
        last_gps_solution=np.full(n, 2, np.uint8),
        gpssec=t // 10**9,
        gpsnsec=t % 10**9,
        rssi_dbm=np.full(n, -80.0, np.float32),
        nominal_rate=12000.0,
    )


RECEIVERS = [
    Receiver("Alpha", "127.0.0.1", 8073, 48.0, 2.0),
    Receiver("Bravo", "127.0.0.1", 8074, 52.0, 5.0),
]


def writer_for(store: IQStore, capture_id: str = "stream1", per_chunk: int = 20) -> CaptureWriter:
    layout = StreamLayout(per_chunk, capacity_frames=5 * per_chunk)
    attrs = {"center_frequency_hz": 77.5e3, "core:sample_rate": 12000.0}
    w = CaptureWriter(store, capture_id, RECEIVERS, layout, attrs, reference=REFERENCE)
    w.create()
    return w


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> IQStore:
    if request.param == "local":
        return IQStore(str(tmp_path / "iq"))
    return IQStore(request.getfixturevalue("s3_url"))


def test_layout_for_duration_rounds_to_frames():
    layout = StreamLayout.for_duration(600, 10, rate=12000.0)
    assert layout.frames_per_chunk == 235  # 60 intervals of ~10 s at 12 kHz, the last shorter
    assert 60 * 235 >= 14_065 > 59 * 235  # 600 s at 12 kHz plus two frames
    assert layout.capacity_frames == 23_733  # room for a receiver in wide mode (20.25 kHz)
    two = StreamLayout.for_duration(2, 1, rate=12001.0)
    # 2 s at 12 kHz in two intervals: no sliver of a third for the last frame or two.
    assert 2 * two.frames_per_chunk >= math.ceil(2 * 12001 / 512) + 2 > two.frames_per_chunk
    short = StreamLayout.for_duration(4, 10, rate=12000.0)
    assert short.frames_per_chunk == math.ceil(4 * 12000 / 512) + 2  # one interval at 12 kHz
    with pytest.raises(ValidationError, match="chunk holds"):
        StreamLayout(0, 10)


def test_chunks_readable_while_written_then_complete(store):
    w = writer_for(store)
    written = {0: [chunk(0, 20), chunk(20, 20)], 1: [chunk(0, 20, seed=1)]}
    for index, parts in written.items():
        for c, rec in enumerate(parts):
            w.write_chunk(index, c, rec)
    running = store.open("stream1")
    assert running.attrs["heimdall:state"] == "in progress"
    assert running.attrs["heimdall:extent_samples"] == {"Alpha": 40 * 512, "Bravo": 20 * 512}
    assert running["n_samples"].values.tolist() == [40 * 512, 20 * 512]
    # Lazy: nothing but the frame variables was read to open it.
    assert running["iq"].chunks is not None
    alpha = np.concatenate([r.samples for r in written[0]])
    np.testing.assert_array_equal(running["iq"].sel(receiver="Alpha").values, alpha)
    assert abs(float(running["sample_rate"].values[0]) - RATE) < 1e-3
    assert not store.exists("stream1")  # listed only once complete

    w.write_chunk(1, 1, chunk(20, 7, seed=1))  # the last, partial, chunk
    marker = w.finish({"Alpha": True, "Bravo": False})
    assert marker["frames"] == {"Alpha": 40, "Bravo": 27}
    assert marker["incomplete"] == ["Bravo"]
    assert store.exists("stream1")
    done = store.open("stream1")
    assert "heimdall:state" not in done.attrs
    assert done["n_samples"].values.tolist() == [40 * 512, 27 * 512]
    assert done["complete"].values.tolist() == [True, False]
    assert done.sizes["sample"] == 40 * 512
    np.testing.assert_array_equal(done["iq"].sel(receiver="Alpha").values, alpha)
    bravo = done["iq"].sel(receiver="Bravo").values
    assert np.isnan(bravo[27 * 512 :]).all() and np.isfinite(bravo[: 27 * 512]).all()
    seq = done["frame_seq"].values
    assert seq[0].tolist() == list(range(40)) and seq[1, :27].tolist() == list(range(27))
    times = done["frame_time"].values[0]
    assert abs(int((times[5] - times[4]).astype(np.int64)) - 512 / RATE * 1e9) < 2


def test_killed_capture_keeps_its_chunks_and_is_completed_by_recovery(tmp_path):
    store = IQStore(str(tmp_path / "iq"))
    w = writer_for(store, "killed")
    for c in range(3):
        w.write_chunk(0, c, chunk(c * 20, 20))
    w.write_chunk(1, 0, chunk(0, 20, seed=1))
    # The process dies here: no finish. A chunk half-written by the dying process is not in
    # the store (objects are written aside and renamed), only a stray temporary file.
    prefix = store._prefix("killed")
    stray = f"{prefix}/iq/c/1/1.12345.tmp"
    store.fs.pipe_file(stray, b"\x00" * 100)
    marker = finish_stream(store, "killed", reference=REFERENCE)
    assert marker["frames"] == {"Alpha": 60, "Bravo": 20}
    assert sorted(marker["incomplete"]) == ["Alpha", "Bravo"]
    ds = store.open("killed")
    assert ds["n_samples"].values.tolist() == [60 * 512, 20 * 512]
    assert not ds["complete"].values.any()
    np.testing.assert_array_equal(
        ds["iq"].sel(receiver="Bravo").values[: 20 * 512], chunk(0, 20, seed=1).samples
    )
    # Completing again changes nothing (no frame written twice, none lost).
    again = finish_stream(store, "killed", reference=REFERENCE)
    assert again["frames"] == marker["frames"]


def test_extent_stops_at_a_missing_chunk(tmp_path):
    """A chunk whose frame_seq object is missing ends the extent: later frames are not counted."""
    store = IQStore(str(tmp_path / "iq"))
    w = writer_for(store, "holey")
    for c in range(3):
        w.write_chunk(0, c, chunk(c * 20, 20))
    store.fs.rm(f"{store._prefix('holey')}/frame_seq/c/0/1")
    ds = store.open("holey")
    assert ds["n_samples"].values.tolist() == [20 * 512]
    assert stored_frames(np.array([3, 4, -1, 6])) == 2
    assert stored_frames(np.array([], np.int64)) == 0


def test_bad_chunks_are_refused(tmp_path):
    store = IQStore(str(tmp_path / "iq"))
    w = writer_for(store, "bad")
    with pytest.raises(ValidationError, match="does not fit"):
        w.write_chunk(0, 0, chunk(0, 21))
    with pytest.raises(ValidationError, match="does not fit"):
        w.write_chunk(0, 5, chunk(100, 20))
    short = chunk(0, 2)
    short.samples = short.samples[:700]
    with pytest.raises(ValidationError, match="must hold"):
        w.write_chunk(0, 0, short)


def test_writing_again_replaces_the_old_copy(tmp_path):
    store = IQStore(str(tmp_path / "iq"))
    w = writer_for(store, "again")
    w.write_chunk(0, 0, chunk(0, 20))
    w.finish({"Alpha": True})
    assert store.exists("again")
    writer_for(store, "again")  # a new stream under the same id: the old one is gone
    assert not store.exists("again")
    assert store.open("again").sizes["receiver"] == 0


def test_finish_needs_a_streamed_capture(tmp_path):
    store = IQStore(str(tmp_path / "iq"))
    with pytest.raises(StorageError, match="not streamed"):
        finish_stream(store, "nothing")


def test_manifest_names_the_layout(tmp_path):
    store = IQStore(str(tmp_path / "iq"))
    writer_for(store, "manifest", per_chunk=8)
    raw = store.fs.cat_file(f"{store._prefix('manifest')}/{STREAM_MANIFEST}")
    manifest = json.loads(raw)
    assert manifest["frames_per_chunk"] == 8 and manifest["receivers"] == ["Alpha", "Bravo"]
    assert not store.fs.exists(f"{store._prefix('manifest')}/{MARKER}")
