"""A capture streams: readable while it runs, and a store that fails midway loses nothing."""

from __future__ import annotations

import threading
import time

import numpy as np
from support import free_port, make_bucket, s3_env

from heimdall_lab import db, spool
from heimdall_lab.emulate import emulated
from heimdall_lab.errors import StorageError
from heimdall_lab.pipeline import capture
from heimdall_lab.retry import RetryPolicy
from heimdall_lab.store import IQStore

FREQ = 10e6


def test_a_running_capture_is_readable_with_its_extent_so_far(embedded_engine, tmp_path):
    store = IQStore(str(tmp_path / "iq"))
    box: dict[str, object] = {}
    seen: list[dict[str, int]] = []
    with emulated(seed=8, receivers=["DK0TE", "OE3AKB"]) as emu:  # paced: 6 s take 6 s
        thread = threading.Thread(
            target=lambda: box.update(
                cap=capture(
                    FREQ,
                    6.0,
                    engine=embedded_engine,
                    store=store,
                    interval_s=1.0,
                    capture_id="reading-while-running",
                    **emu.capture_options,
                )
            )
        )
        thread.start()
        while thread.is_alive():
            time.sleep(0.5)
            try:
                ds = store.open("reading-while-running")
            except StorageError:
                continue  # not created yet
            if ds.attrs.get("heimdall:state") == "in progress" and ds.sizes["receiver"]:
                seen.append(dict(ds.attrs["heimdall:extent_samples"]))
                # Lazily read: what is stored reads back, the rest is not there yet.
                first = ds["iq"].isel(receiver=0, sample=slice(0, 512)).values
                assert np.isfinite(first).all()
        thread.join()
    cap = box["cap"]
    assert cap.stage == "done", cap.errors
    growing = [min(s.values()) for s in seen]
    assert len(growing) >= 2 and growing == sorted(growing) and growing[0] < 6 * 12000
    final = store.open("reading-while-running")
    assert "heimdall:state" not in final.attrs
    assert (final["n_samples"].values >= 6 * 12000).all()
    assert max(growing) <= final["n_samples"].values.min()


def test_a_store_lost_midway_keeps_the_rest_locally_and_sync_joins_them(
    embedded_engine, monkeypatch, tmp_path
):
    from moto.server import ThreadedMotoServer

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    s3_env(monkeypatch, endpoint)
    short = RetryPolicy(attempts=2, initial_s=0.05, maximum_s=0.1, jitter_s=0.0)
    quick = {"config_kwargs": {"retries": {"max_attempts": 1, "mode": "standard"}}}
    store = IQStore(f"s3://{make_bucket(endpoint)}/archive", quick, retry=short)
    home = tmp_path / "home"
    box: dict[str, object] = {}
    try:
        with emulated(seed=9, receivers=["Purmerend", "DK0TE"]) as emu:
            thread = threading.Thread(
                target=lambda: box.update(
                    cap=capture(
                        FREQ,
                        5.0,
                        engine=embedded_engine,
                        store=store,
                        interval_s=1.0,
                        home=str(home),
                        **emu.capture_options,
                    )
                )
            )
            thread.start()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and "cap" not in box:
                keys = [k for k in store.fs.find(store._root) if "/frame_seq/c/" in k]
                if len(keys) >= 2:  # an interval of each receiver is in S3: now it goes
                    break
                time.sleep(0.1)
            server.stop()
            thread.join()
        cap = box["cap"]
        assert cap.stage == "done" and cap.warnings, cap.errors
        assert "the rest kept locally" in cap.warnings[0]
        assert spool.pending(home) == [cap.capture_id]
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        # Asked only once the store answers again: with it down, the question has no answer.
        assert not store.exists(cap.capture_id)
        report = spool.sync(engine=embedded_engine, home=home, stale_after_s=None)
        assert report.error.tolist() == [""], report
        assert store.exists(cap.capture_id) and spool.pending(home) == []
        ds = store.open(cap.capture_id)
        # Every frame received is stored once, in order: the S3 part and the local part.
        for name in ["Purmerend", "DK0TE"]:
            seq = ds["frame_seq"].sel(receiver=name).values
            n = int(ds["n_samples"].sel(receiver=name)) // 512
            assert n >= 5 * 12000 // 512 and (np.diff(seq[:n]) == 1).all()
            assert np.isfinite(ds["iq"].sel(receiver=name).values[: n * 512]).all()
        rows = db.measurements_for_capture(embedded_engine, cap.capture_id, include_psd=False)
        assert len(rows) == 10  # five intervals per receiver, each once
        assert rows.set_index(["receiver", "timestamp_utc"]).index.is_unique
    finally:
        server.stop()
