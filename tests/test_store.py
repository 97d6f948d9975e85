"""The IQ store against real backends: a local folder, a tmpfs, and an S3 server (moto) on
loopback. Captures come from the emulator over real sockets and from the real kiwi
recordings; nothing under test is mocked."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, ClassVar

import boto3
import dask.array as da
import fsspec
import numpy as np
import pytest
import sigmf
import sigmf.validate
import xarray as xr
from botocore.exceptions import ClientError
from fsspec.implementations.memory import MemoryFileSystem
from moto.server import ThreadedMotoServer
from s3fs.errors import translate_boto_error
from support import FAKE_KEY, FAKE_SECRET, REGION
from support import free_port as _free_port
from support import make_bucket as _make_bucket
from support import s3_env as _s3_env

from heimdall_lab import tutorial
from heimdall_lab.emulate.scenario import Scenario
from heimdall_lab.emulate.server import Emulator, Fault
from heimdall_lab.errors import FileFormatError, StorageError, ValidationError
from heimdall_lab.io.kiwi_wav import import_kiwi_wav, read_kiwi_wav
from heimdall_lab.io.sigmf import export_sigmf, import_sigmf
from heimdall_lab.kiwi.acquire import acquire
from heimdall_lab.receivers import Receiver
from heimdall_lab.retry import RetryPolicy
from heimdall_lab.store import (
    MARKER,
    IQStore,
    default_iq_url,
    iq_chunking,
    s3_storage_options,
)
from heimdall_lab.store.iq import MIN_CHUNK_BYTES

FREQ = 10e6
FAST = RetryPolicy(attempts=3, initial_s=0.05, maximum_s=0.1, jitter_s=0.0)
# One botocore attempt per call and a short connect timeout: our own retries are counted.
QUICK_S3 = {"config_kwargs": {"retries": {"max_attempts": 1, "mode": "standard"}}}
DCF77_POSITIONS = tutorial.DCF77_POSITIONS


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.complex64).view(np.uint64)


def _without_store_attrs(ds: xr.Dataset) -> xr.Dataset:
    ds = ds.copy()
    ds.attrs = {k: v for k, v in ds.attrs.items() if k != "heimdall:skipped_receivers"}
    return ds


@pytest.fixture(scope="module")
def capture() -> xr.Dataset:
    """24 s from 7 emulated receivers; DB3TH drops out early (NaN padding), OE3AKB loses a
    frame (a sequence gap)."""
    faults = {
        "DB3TH": Fault("disconnect", after_frames=30),
        "OE3AKB": Fault("corrupt", after_frames=5),
    }
    with Emulator(Scenario.default(seed=3), realtime=False, faults=faults).running() as emu:
        acq = acquire(emu.receivers, FREQ, 24.0, retries=0, capture_id="emu-0001")
    ds = acq.dataset
    assert ds.sizes["receiver"] == 7
    short = ds.sel(receiver="DB3TH")
    assert int(short.n_samples) < ds.sizes["sample"]
    assert np.isnan(short.iq.values[int(short.n_samples) :]).all()
    assert int(ds.sel(receiver="OE3AKB").lost_frames) == 1
    return ds


def _objects(endpoint: str, bucket: str, prefix: str) -> dict[str, bytes]:
    client = boto3.client("s3", endpoint_url=endpoint, region_name=REGION)
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return {k: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


# -- round trips -----------------------------------------------------------------------------


def _check_round_trip(store: IQStore, ds: xr.Dataset) -> xr.Dataset:
    result = store.write(ds)
    cid = ds.attrs["capture_id"]
    assert result.capture_id == cid
    assert result.receivers == tuple(ds.receiver.values.tolist())
    assert result.skipped == {}
    assert result.url == store.url_for(cid)
    assert store.list() == [cid]
    assert store.exists(cid)
    opened = store.open(cid)
    assert isinstance(opened.iq.data, da.Array)  # lazy: nothing read yet
    loaded = opened.load()
    # Bit-exact complex64, NaN padding included.
    assert loaded.iq.dtype == np.complex64
    assert np.array_equal(_bits(loaded.iq.values), _bits(ds.iq.values))
    # Every coordinate, per-frame variable and attribute.
    xr.testing.assert_identical(_without_store_attrs(loaded), ds)
    assert loaded.attrs["heimdall:skipped_receivers"] == {}
    return opened


def test_local_round_trip(capture, tmp_path):
    store = IQStore(str(tmp_path / "iq"))
    opened = _check_round_trip(store, capture)
    # Chunking: one receiver per chunk, >= 1 MiB along sample, shards of whole receivers.
    enc = opened.iq.encoding
    assert enc["chunks"][0] == 1 and enc["chunks"][1] * 8 >= MIN_CHUNK_BYTES
    assert enc["shards"] == (1, 2 * enc["chunks"][1])
    lazy = store.open("emu-0001").iq.data
    assert lazy.chunks == ((1,) * 7, (capture.sizes["sample"],))  # one task per shard
    folder = tmp_path / "iq" / "captures" / "emu-0001.zarr"
    files = [p for p in folder.rglob("*") if p.is_file()]
    shards = [p for p in files if p.parent.parent.name == "c" and p.parts[-4] == "iq"]
    assert len(shards) == 7  # one object per receiver, not one per chunk
    assert (folder / MARKER).is_file() and (folder / "zarr.json").is_file()
    meta = json.loads((folder / "zarr.json").read_text())
    assert "consolidated_metadata" in meta
    assert meta["attributes"]["core:frequency"] == FREQ
    assert len(files) == store.write(capture).objects


def test_s3_round_trip_keeps_no_credentials(capture, s3_url, moto_endpoint, caplog, tmp_path):
    caplog.set_level(logging.DEBUG, logger="heimdall_lab")
    store = IQStore(s3_url)
    opened = _check_round_trip(store, capture)
    # A receiver and a time range straight from S3.
    one = store.open("emu-0001", receivers="Hasenberg03").load()
    assert np.array_equal(
        _bits(one.iq.values[0]), _bits(capture.iq.sel(receiver="Hasenberg03").values)
    )
    bucket = s3_url.split("/")[2]
    objects = _objects(moto_endpoint, bucket, "heimdall/captures/emu-0001.zarr/")
    assert f"heimdall/captures/emu-0001.zarr/{MARKER}" in objects
    assert len([k for k in objects if "/iq/c/" in k]) == 7
    for key, body in objects.items():
        assert FAKE_SECRET.encode() not in body and FAKE_KEY.encode() not in body, key
    assert FAKE_SECRET not in caplog.text and FAKE_KEY not in caplog.text
    assert "secret" not in repr(store).lower()
    assert "key" not in json.dumps(opened.attrs).lower()
    # An opened (lazy) capture copies from S3 to a local store unchanged.
    local = IQStore(str(tmp_path / "copy"))
    local.write(store.open("emu-0001"))
    copied = local.open("emu-0001").load()
    assert np.array_equal(_bits(copied.iq.values), _bits(capture.iq.values))
    xr.testing.assert_identical(_without_store_attrs(copied), capture)


def test_rewrite_replaces_cleanly_and_delete(capture, tmp_path):
    store = IQStore(str(tmp_path))
    store.write(capture)
    fewer = capture.isel(receiver=[0, 1, 2])
    store.write(fewer)
    back = store.open("emu-0001").load()
    assert back.receiver.values.tolist() == capture.receiver.values[:3].tolist()
    shard_dir = tmp_path / "captures" / "emu-0001.zarr" / "iq" / "c"
    assert sorted(p.name for p in shard_dir.iterdir()) == ["0", "1", "2"]  # no stale shards
    assert store.delete("emu-0001") is True
    assert store.list() == [] and not store.exists("emu-0001")
    assert store.delete("emu-0001") is False


def test_half_written_capture_is_not_reported(capture, tmp_path):
    store = IQStore(str(tmp_path))
    store.write(capture)
    (tmp_path / "captures" / "emu-0001.zarr" / MARKER).unlink()  # as if the write died there
    assert store.list() == []
    assert not store.exists("emu-0001")
    with pytest.raises(StorageError, match="incomplete"):
        store.open("emu-0001")
    with pytest.raises(StorageError, match="not in the store"):
        store.open("never-written")
    store.write(capture)
    assert store.list() == ["emu-0001"]


# -- invalid input ---------------------------------------------------------------------------


def test_invalid_receivers_are_skipped_with_reasons(capture, tmp_path, caplog):
    ds = capture.copy(deep=True)
    iq = ds.iq.values
    n = ds.n_samples.values.copy()
    iq[0, : n[0]] = np.nan  # F4JOY: all NaN within its n_samples
    iq[1, 1000] = complex(np.inf, 0)  # Purmerend: one infinite sample
    n[2] = ds.sizes["sample"] + 5  # North-Shropshire-UK: n_samples longer than the array
    ds = ds.assign_coords(n_samples=("receiver", n))
    store = IQStore(str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="heimdall_lab.store"):
        result = store.write(ds)
    assert set(result.skipped) == {"F4JOY", "Purmerend", "North-Shropshire-UK"}
    assert "NaN" in result.skipped["F4JOY"] and "all" in result.skipped["F4JOY"]
    assert result.skipped["Purmerend"].startswith("1 of")
    assert "outside" in result.skipped["North-Shropshire-UK"]
    assert result.receivers == ("Hasenberg03", "DB3TH", "OE3AKB", "DK0TE")
    for name in result.skipped:
        assert name in caplog.text
    back = store.open("emu-0001").load()
    assert back.receiver.values.tolist() == list(result.receivers)
    assert back.attrs["heimdall:skipped_receivers"] == result.skipped
    assert np.array_equal(_bits(back.iq.values), _bits(ds.iq.values[3:]))


def test_nothing_valid_is_refused(capture, tmp_path):
    store = IQStore(str(tmp_path))
    wrong = capture.assign(iq=capture.iq.astype(np.complex128))
    with pytest.raises(ValidationError, match="complex64"):
        store.write(wrong)
    with pytest.raises(ValidationError, match="dims"):
        store.write(capture.transpose("sample", "receiver", "frame"))
    assert store.list() == []


@pytest.mark.parametrize("bad", ["../x", "a/b", "..", "", "x/../../y", "/abs", "a\\b", ".hidden"])
def test_hostile_ids_and_names_rejected(capture, tmp_path, bad):
    store = IQStore(str(tmp_path / "iq"))
    with pytest.raises(ValidationError):
        store.write(capture, capture_id=bad)
    for call in (store.exists, store.open, store.delete, store.url_for):
        with pytest.raises(ValidationError):
            call(bad)
    renamed = capture.assign_coords(
        receiver=["F4JOY", "Purmerend", bad, "Hasenberg03", "D", "O", "H"]
    )
    with pytest.raises(ValidationError):
        store.write(renamed)
    with pytest.raises(ValidationError):
        export_sigmf(renamed, tmp_path / "sigmf")
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


# -- lazy reads and selection ----------------------------------------------------------------


def _expected(ds: xr.Dataset, name: str, t0: np.datetime64, t1: np.datetime64) -> np.ndarray:
    one = ds.sel(receiver=name)
    n = int(one.n_samples)
    offset_ns = np.arange(n) * (1e9 / float(one.sample_rate))
    start = one.start_time.values
    lo = (t0 - start) / np.timedelta64(1, "ns")
    hi = (t1 - start) / np.timedelta64(1, "ns")
    return np.flatnonzero((offset_ns >= lo) & (offset_ns < hi))


def test_lazy_open_by_receiver_and_time(capture, tmp_path):
    store = IQStore(str(tmp_path))
    store.write(capture)
    first = capture.start_time.values.min()
    for lo_s, hi_s in ((0.5, 2.0), (5.0, 8.0)):  # DB3TH stops after ~1.3 s
        t0 = first + np.timedelta64(int(lo_s * 1e9) + 123_457, "ns")
        t1 = first + np.timedelta64(int(hi_s * 1e9) + 654_321, "ns")
        names = ["DK0TE", "DB3TH", "F4JOY"]
        sel = store.open("emu-0001", receivers=names, start=t0, end=str(t1) + "Z")
        assert isinstance(sel.iq.data, da.Array)
        sel = sel.load()
        assert sel.receiver.values.tolist() == names
        for name in names:
            want = _expected(capture, name, t0, t1)
            got = sel.sel(receiver=name)
            n = int(got.n_samples)
            assert n == len(want)
            row = capture.iq.sel(receiver=name).values
            assert np.array_equal(_bits(got.iq.values[:n]), _bits(row[want]))
            assert np.isnan(got.iq.values[n:]).all()
            if n:
                assert int(got.sample_offset) == want[0]
                exact = capture.sel(receiver=name).start_time.values + np.timedelta64(
                    round(want[0] * 1e9 / float(got.sample_rate)), "ns"
                )
                assert got.start_time.values == exact
                # Frames starting in the range, re-based to the new sample 0.
                orig = capture.sel(receiver=name)
                fs = orig.frame_start.values
                keep = (fs >= want[0]) & (fs <= want[-1])
                k = int(keep.sum())
                assert np.array_equal(got.frame_start.values[:k], fs[keep] - want[0])
                assert np.array_equal(got.frame_time.values[:k], orig.frame_time.values[keep])
        assert int(sel.sel(receiver="DK0TE").n_samples) > 0
    assert int(sel.sel(receiver="DB3TH").n_samples) == 0  # the window is after it stopped
    with pytest.raises(ValidationError, match="not after"):
        store.open("emu-0001", start=t1, end=t0)
    with pytest.raises(ValidationError, match="NOPE"):
        store.open("emu-0001", receivers=["NOPE"])


# -- failures of the store -------------------------------------------------------------------


def test_s3_server_down_mid_write_then_back(capture, monkeypatch, caplog):
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        _s3_env(monkeypatch, endpoint)
        bucket = _make_bucket(endpoint)
        store = IQStore(f"s3://{bucket}/iq", QUICK_S3, retry=FAST)
        stopped = []

        def stop_after_iq(done: int, total: int) -> None:
            if not stopped and done > 1_000_000:
                stopped.append(done)
                server.stop()  # the server really goes away, mid-write

        with (
            caplog.at_level(logging.WARNING, logger="heimdall_lab.store"),
            pytest.raises(StorageError) as err,
        ):
            store.write(capture, on_progress=stop_after_iq)
        assert stopped  # the IQ shards were up when the server went away
        message = str(err.value)
        assert f"s3://{bucket}/iq" in message and "did not answer after 3 attempt" in message
        retried = [r for r in caplog.records if "retrying" in r.getMessage()]
        assert len(retried) == FAST.attempts - 1
        assert FAKE_SECRET not in caplog.text
        with pytest.raises(StorageError):
            store.list()  # still down: an error, never a silent empty list

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        left = _objects(endpoint, bucket, "iq/captures/emu-0001.zarr/")
        assert any("/iq/c/" in k for k in left)  # half written: the IQ is there, ...
        assert "iq/captures/emu-0001.zarr/zarr.json" not in left  # ... the root metadata
        assert f"iq/captures/emu-0001.zarr/{MARKER}" not in left  # and the marker are not
        assert store.list() == [] and not store.exists("emu-0001")  # ... and not reported
        result = store.write(capture)
        assert store.list() == ["emu-0001"]
        assert result.retries == 0
        back = store.open("emu-0001").load()
        assert np.array_equal(_bits(back.iq.values), _bits(capture.iq.values))
    finally:
        server.stop()


@pytest.fixture
def tiny_tmpfs(tmp_path) -> Any:
    mount = tmp_path / "tiny"
    mount.mkdir()

    def mount_it(options: str) -> Path:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)],
            capture_output=True,
            check=False,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        return mount

    yield mount_it
    subprocess.run(["umount", str(mount)], capture_output=True, check=False)


def test_full_disk_is_a_storage_error(capture, tiny_tmpfs):
    mount = tiny_tmpfs("size=256k")
    store = IQStore(str(mount / "iq"))
    with pytest.raises(StorageError, match="full") as err:
        store.write(capture)
    assert str(mount / "iq") in str(err.value)
    assert err.value.url == str(mount / "iq")
    assert isinstance(err.value.__cause__, OSError) and err.value.__cause__.errno == errno.ENOSPC
    assert store.list() == [] and not store.exists("emu-0001")
    assert not (mount / "iq" / "captures" / "emu-0001.zarr").exists()  # space given back


def test_read_only_disk_is_a_storage_error(capture, tiny_tmpfs):
    mount = tiny_tmpfs("size=64k,ro")
    store = IQStore(str(mount / "iq"))
    with pytest.raises(StorageError, match="permission denied") as err:
        store.write(capture)
    assert str(mount / "iq") in str(err.value)


class FailingMemoryFS(MemoryFileSystem):
    """An in-memory filesystem whose writes fail the way a full or locked store does."""

    protocol = "heimdallfail"
    store: ClassVar[dict[str, Any]] = {}
    pseudo_dirs: ClassVar[list[str]] = [""]

    def __init__(self, *args: Any, fail: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fail = fail

    def pipe_file(self, path: str, value: bytes, *args: Any, **kwargs: Any) -> None:
        if self.fail == "enospc":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        if self.fail == "edquot":
            raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), path)
        if self.fail == "denied":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
        if self.fail == "minio-full":
            code = {"Code": "XMinioStorageFull", "Message": "Storage backend is full"}
            raise translate_boto_error(ClientError({"Error": code}, "PutObject"))
        if self.fail == "s3-denied":
            code = {"Code": "AccessDenied", "Message": "Access Denied"}
            raise translate_boto_error(ClientError({"Error": code}, "PutObject"))
        super().pipe_file(path, value, *args, **kwargs)


fsspec.register_implementation("heimdallfail", FailingMemoryFS, clobber=True)


@pytest.mark.parametrize(
    ("fail", "expected"),
    [
        ("enospc", "full"),
        ("edquot", "full"),
        ("minio-full", "full"),
        ("denied", "permission denied"),
        ("s3-denied", "permission denied"),
    ],
)
def test_error_mapping(capture, caplog, fail, expected):
    url = f"heimdallfail://bucket-{fail}/iq"
    store = IQStore(url, {"fail": fail}, retry=FAST)
    with (
        caplog.at_level(logging.WARNING, logger="heimdall_lab.store"),
        pytest.raises(StorageError, match=expected) as err,
    ):
        store.write(capture.isel(receiver=[0]))
    assert url in str(err.value) and err.value.url.startswith(url)
    assert not [r for r in caplog.records if "retrying" in r.getMessage()]  # not retried
    assert store.list() == []


def test_missing_bucket_is_a_storage_error(capture, moto_endpoint, monkeypatch):
    _s3_env(monkeypatch, moto_endpoint)
    store = IQStore("s3://no-such-bucket-heimdall/iq", retry=FAST)
    with pytest.raises(StorageError, match="no-such-bucket-heimdall"):
        store.write(capture.isel(receiver=[0]))


# -- SigMF and kiwi WAV ----------------------------------------------------------------------


def test_sigmf_export_validates_and_reimports_identical(capture, tmp_path, caplog):
    paths = export_sigmf(capture, tmp_path / "sigmf")
    coll_path = paths[0]
    assert coll_path.name == "emu-0001.sigmf-collection"
    metas = [p for p in paths if p.suffix == ".sigmf-meta"]
    assert len(metas) == 7
    with caplog.at_level(logging.INFO):
        sigmf.validate.main(tuple(str(p) for p in metas))  # sys.exit(1) on any failure
    assert "Validated all 7 files OK" in caplog.text
    collection = sigmf.fromfile(coll_path)
    assert isinstance(collection, sigmf.SigMFCollection)
    collection.verify_stream_hashes()
    assert collection.get_stream_names() == [p.name[: -len(".sigmf-meta")] for p in metas]
    for name in capture.receiver.values.tolist():
        one = capture.sel(receiver=name)
        rec = sigmf.fromfile(tmp_path / "sigmf" / f"emu-0001_{name}.sigmf-meta")
        rec.validate()
        g = rec.get_global_info()
        assert g["core:sample_rate"] == float(one.sample_rate)  # exact, not nominal
        assert g["core:geolocation"] == {
            "type": "Point",
            "coordinates": [float(one.longitude), float(one.latitude)],
        }
        cap = rec.get_captures()[0]
        assert cap["core:frequency"] == FREQ
        assert np.datetime64(cap["core:datetime"][:-1], "ns") == one.start_time.values
        frames = int((one.frame_start.values >= 0).sum())
        annotations = rec.get_annotations()
        assert len(annotations) == frames
        assert annotations[5]["heimdall:gps_tow_ns"] == int(one.frame_gpsnsec.values[5])
        n = int(one.n_samples)
        assert np.array_equal(_bits(rec.read_samples()), _bits(one.iq.values[:n]))
    # The lost frame of OE3AKB is a new capture segment.
    oe = sigmf.fromfile(tmp_path / "sigmf" / "emu-0001_OE3AKB.sigmf-meta")
    assert len(oe.get_captures()) == 2
    back = import_sigmf(coll_path)
    xr.testing.assert_identical(back, capture)
    assert np.array_equal(_bits(back.iq.values), _bits(capture.iq.values))
    # A damaged data file fails its checksum.
    data = tmp_path / "sigmf" / "emu-0001_Hasenberg03.sigmf-data"
    raw = bytearray(data.read_bytes())
    raw[100] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(FileFormatError, match="Hasenberg03"):
        import_sigmf(tmp_path / "sigmf")


def test_kiwi_wavs_import_with_positions_and_round_trip(dcf77_files, tmp_path):
    receivers = {
        "DF0KL": Receiver("DF0KL", "df0kl.kiwisdr.example", 8073, *DCF77_POSITIONS["DF0KL"]),
        "F1JEK": DCF77_POSITIONS["F1JEK"],
        "HB9RYZ": DCF77_POSITIONS["HB9RYZ"],
    }
    ds = import_kiwi_wav(dcf77_files, receivers)
    assert ds.receiver.values.tolist() == ["DF0KL", "F1JEK", "HB9RYZ"]
    assert ds.attrs["capture_id"] == "kiwi_20171127T104156Z_77500"
    assert ds.attrs["core:frequency"] == 77500.0
    for path, name in zip(dcf77_files, ds.receiver.values.tolist(), strict=True):
        one = ds.sel(receiver=name)
        lat, lon = DCF77_POSITIONS[name]
        assert float(one.latitude) == lat and float(one.longitude) == lon
        samples = read_kiwi_wav(path).samples
        assert int(one.n_samples) == len(samples)
        assert np.array_equal(one.iq.values[: len(samples)], samples)
        assert float(one.sample_rate) == pytest.approx(12001.1, abs=0.5)
        start = one.start_time.values
        assert np.datetime64("2017-11-27T10:41:50") < start < np.datetime64("2017-11-27T10:42:00")
    store = IQStore(str(tmp_path / "iq"))
    result = store.write(ds)
    assert store.list() == ["kiwi_20171127T104156Z_77500"]
    back = store.open(result.capture_id)
    assert back.iq.encoding["shards"] is not None  # 29 s = 2 chunks: sharded
    back = back.load()
    assert np.array_equal(_bits(back.iq.values), _bits(ds.iq.values))
    xr.testing.assert_identical(_without_store_attrs(back), ds)
    with pytest.raises(ValidationError, match="F1JEK"):
        import_kiwi_wav(dcf77_files, {"DF0KL": (53.6, 7.2)})
    placed = import_kiwi_wav(dcf77_files[:1])  # positions from the gnss_pos/NAME.txt beside iq/
    assert (float(placed.latitude[0]), float(placed.longitude[0])) == DCF77_POSITIONS["DF0KL"]
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(dcf77_files[0], alone)
    unknown = import_kiwi_wav(sorted(alone.glob("*.wav")))
    assert np.isnan(unknown.latitude.values).all()


# -- configuration ---------------------------------------------------------------------------


def test_urls_and_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("HEIMDALL_IQ_URL", raising=False)
    monkeypatch.setenv("HEIMDALL_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert default_iq_url() == str(tmp_path / "home" / "iq")
    assert IQStore().url == str(tmp_path / "home" / "iq")
    assert IQStore().list() == []  # nothing there yet: empty, not an error
    monkeypatch.setenv("HEIMDALL_IQ_URL", "s3://bucket/prefix/")
    assert default_iq_url() == "s3://bucket/prefix/"
    env = {
        "HEIMDALL_S3_ENDPOINT_URL": "http://127.0.0.1:9000",
        "AWS_DEFAULT_REGION": "eu-west-3",
        "AWS_ACCESS_KEY_ID": FAKE_KEY,
        "AWS_SECRET_ACCESS_KEY": FAKE_SECRET,
    }
    options = s3_storage_options(env)
    assert options["client_kwargs"] == {
        "endpoint_url": "http://127.0.0.1:9000",
        "region_name": "eu-west-3",
    }
    config = options["config_kwargs"]
    assert config["s3"] == {"addressing_style": "path"}
    assert config["request_checksum_calculation"] == "when_required"
    assert config["response_checksum_validation"] == "when_required"
    assert FAKE_SECRET not in json.dumps(options) and FAKE_KEY not in json.dumps(options)
    with pytest.raises(ValidationError):
        s3_storage_options({"HEIMDALL_S3_ADDRESSING_STYLE": "sideways"})
    store = IQStore("file://" + str(tmp_path / "x"))
    assert store.local and store.url == str(tmp_path / "x")
    assert store.url_for("abc") == f"{tmp_path / 'x'}/captures/abc.zarr"


def test_iq_chunking():
    least = MIN_CHUNK_BYTES // 8
    assert iq_chunking(24_064) == (24_064, None)  # shorter than a chunk: the whole row
    for n in (least + 1, 2 * least, 720_060, 43_204_000):
        chunk, shard = iq_chunking(n)
        assert chunk >= least and chunk % 512 == 0
        n_chunks = -(-n // chunk)
        assert n_chunks * chunk - n <= max(0.01 * n, 511)  # little padding
        if n_chunks > 1:
            assert shard is not None and shard % chunk == 0 and shard // chunk <= 64
    assert iq_chunking(720_060) == (144_384, 5 * 144_384)  # 60 s at 12001 Hz: one shard
