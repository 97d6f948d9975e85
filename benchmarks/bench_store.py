"""IQ store throughput: zarr (IQStore) against a plain np.save + put of the same bytes.

Writes and reads one capture of 7 receivers x 60 s at 12001 Hz complex64 (about 40 MB of
IQ) to a local folder and to an S3 server (moto, in its own process on loopback), with
IQStore and with the original plan's way (np.save to a file; np.save bytes put with s3fs),
several times each; prints min and median figures and writes reports/store-benchmark.md.

    .venv/bin/python benchmarks/bench_store.py [--repeats 5] [--seconds 60]

Throughput is IQ payload (receivers x samples x 8 bytes) over wall time of the whole call:
for IQStore.write that is validation, zarr encoding with compression, every object's upload
and the completion marker; for IQStore.open(...).iq.values it is opening the consolidated
metadata and reading every shard through dask.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import s3fs
import sigmf
import xarray as xr
import zarr

from benchmarks.harness import machine_info
from heimdall_lab.emulate.scenario import Scenario
from heimdall_lab.emulate.server import Emulator
from heimdall_lab.kiwi.acquire import acquire
from heimdall_lab.store.iq import IQStore, iq_chunking

REPO = Path(__file__).resolve().parents[1]
REGION = "eu-central-1"
GOAL = 0.90  # zarr at least 90 % of the raw throughput


def machine() -> str:
    m = machine_info()
    return (
        f"{m['cpu']}, {os.cpu_count()} cores, {m['ram']} RAM, {m['os']}, "
        f"load average {m['load_average']}"
    )


def versions() -> str:
    return (
        f"Python {platform.python_version()}, numpy {np.__version__}, xarray {xr.__version__}, "
        f"zarr {zarr.__version__}, s3fs {s3fs.__version__}, sigmf {sigmf.__version__}"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    proc.terminate()
    raise RuntimeError("moto server did not start")


def capture(seconds: float, receivers: int) -> xr.Dataset:
    scenario = Scenario.default(seed=1)
    with Emulator(scenario, realtime=False).running() as emu:
        acq = acquire(emu.receivers[:receivers], 10e6, seconds, capture_id="bench-store")
    return acq.dataset


def incompressible(ds: xr.Dataset) -> xr.Dataset:
    """The same capture with uniform random int16 IQ: the worst case for compression."""
    rng = np.random.default_rng(0)
    shape = ds.iq.shape
    pairs = rng.integers(-32768, 32768, size=(*shape, 2), dtype=np.int16).astype(np.float32)
    iq = (pairs[..., 0] + 1j * pairs[..., 1]).astype(np.complex64) / np.float32(32768)
    out = ds.copy()
    out["iq"] = (("receiver", "sample"), iq, ds.iq.attrs)
    out = out.assign_coords(n_samples=("receiver", np.full(shape[0], shape[1], np.int64)))
    out.attrs["capture_id"] = "bench-store-random"
    return out


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run_backend(store: IQStore, ds: xr.Dataset, repeats: int, raw_path: str) -> dict[str, list]:
    """Time zarr write/read and the raw np.save way for one store and one dataset.

    The four operations alternate within each repeat, so that drift of the machine (or of
    the S3 server) hits both methods alike.
    """
    fs = store.fs
    iq = ds.iq.values
    cid = ds.attrs["capture_id"]

    if store.local:

        def raw_write() -> None:
            np.save(raw_path, iq)

        def raw_read() -> np.ndarray:
            return np.load(raw_path)

    else:

        def raw_write() -> None:
            buf = io.BytesIO()
            np.save(buf, iq)
            fs.pipe_file(raw_path, buf.getvalue())

        def raw_read() -> np.ndarray:
            return np.load(io.BytesIO(fs.cat_file(raw_path)))

    result = store.write(ds)  # warm-up (imports, connections, directories)
    raw_write()
    out: dict[str, list] = {"objects": [result.objects], "stored_bytes": [result.nbytes]}
    for key in ("zarr write", "raw write", "zarr read", "raw read"):
        out[key] = []
    store.delete(cid)
    for i in range(repeats):
        # A new capture id each time, as in use (a capture is written once); replacing an
        # existing capture would add deleting its objects first, which a raw put skips.
        run_id = f"{cid}-{i}"
        out["zarr write"].append(timed(lambda: store.write(ds, capture_id=run_id)))  # noqa: B023
        out["raw write"].append(timed(raw_write))
        out["zarr read"].append(timed(lambda: store.open(run_id).iq.values))  # noqa: B023
        out["raw read"].append(timed(raw_read))
        back = store.open(run_id).iq.values
        assert np.array_equal(back.view(np.uint64), iq.view(np.uint64)), "zarr round trip"
        store.delete(run_id)
    assert np.array_equal(raw_read(), iq), "raw round trip differs"
    return out


def breakdown(ds: xr.Dataset, s3: IQStore, repeats: int) -> dict[str, str]:
    """Where zarr's write time goes: encoding alone, and the S3 server's cost per object."""
    memory = IQStore(f"memory://bench-{uuid.uuid4().hex[:8]}")
    result = memory.write(ds)
    enc = [timed(lambda: memory.write(ds)) for _ in range(repeats)]
    n = result.objects
    small = {f"bench-iq/small/{i}": b"x" * 700 for i in range(n)}
    s3.fs.pipe(small)
    puts = [timed(lambda: s3.fs.pipe(small)) for _ in range(repeats)]
    return {
        "zarr encode only (IQStore.write to memory://: validation, compression, "
        "consolidation), median": f"{statistics.median(enc) * 1e3:.0f} ms",
        f"S3 server: {n} small objects (the capture's object count) put concurrently, median": (
            f"{statistics.median(puts) * 1e3:.0f} ms"
        ),
    }


def mbps(nbytes: int, seconds: float) -> float:
    return nbytes / 1e6 / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--receivers", type=int, default=7)
    parser.add_argument("--report", type=Path, default=REPO / "reports" / "store-benchmark.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)

    print(f"machine: {machine()}")
    print(f"software: {versions()}")
    t0 = time.perf_counter()
    real = capture(args.seconds, args.receivers)
    print(f"capture from the emulator: {time.perf_counter() - t0:.1f} s, {real.iq.shape}")
    datasets = {"emulated capture": real, "random int16 IQ": incompressible(real)}
    nbytes = real.iq.nbytes
    chunk, shard = iq_chunking(real.sizes["sample"])

    proc, endpoint = start_moto()
    tmp = Path(tempfile.mkdtemp(prefix="bench-store-"))
    rows = []
    try:
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
        os.environ["AWS_REGION"] = REGION
        os.environ["HEIMDALL_S3_ENDPOINT_URL"] = endpoint
        s3 = IQStore("s3://bench-iq/heimdall")
        s3.fs.mkdir("bench-iq", region_name=REGION)
        backends = {
            "local folder": (IQStore(str(tmp / "iq")), str(tmp / "raw.npy")),
            "S3 (moto server)": (s3, "bench-iq/raw/capture.npy"),
        }
        for bname, (store, raw_path) in backends.items():
            for dname, ds in datasets.items():
                r = run_backend(store, ds, args.repeats, raw_path)
                rows.append((bname, dname, r))
                for op in ("write", "read"):
                    z, w = r[f"zarr {op}"], r[f"raw {op}"]
                    ratio = statistics.median(w) / statistics.median(z)
                    print(
                        f"{bname:17s} {dname:17s} {op:5s}  zarr "
                        f"{mbps(nbytes, min(z)):7.1f} / {mbps(nbytes, statistics.median(z)):7.1f}"
                        f" MB/s   raw {mbps(nbytes, min(w)):7.1f} / "
                        f"{mbps(nbytes, statistics.median(w)):7.1f} MB/s   zarr/raw {ratio:.2f}"
                    )
        extra = breakdown(real, s3, args.repeats)
        for label, value in extra.items():
            print(f"{label}: {value}")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)

    write_report(args, real, nbytes, chunk, shard, rows, extra)
    print(f"wrote {args.report}")


def write_report(args, ds: xr.Dataset, nbytes: int, chunk: int, shard, rows, extra) -> None:
    lines = [
        "# IQ store benchmark",
        "",
        f"Generated by `benchmarks/bench_store.py` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC "
        f"(repeats: {args.repeats}).",
        "",
        f"- Machine: {machine()} (at the end of the run; other work on the machine shows as "
        "spread between best and median)",
        f"- Software: {versions()}",
        f"- Data: {ds.sizes['receiver']} receivers x {ds.sizes['sample']} samples "
        f"({args.seconds:.0f} s at ~12001 Hz) complex64 = {nbytes / 1e6:.1f} MB of IQ. "
        "`emulated capture` comes from the emulator over loopback (noise, carrier and "
        "int16 quantisation like a real KiwiSDR); `random int16 IQ` replaces the samples "
        "with uniform random int16 values: the worst case for compression, only the float32 "
        "encoding's unused low mantissa bits shrink.",
        f"- zarr layout: chunks of (1, {chunk}) samples ({chunk * 8 / 2**20:.2f} MiB), "
        + (f"shards of (1, {shard}), " if shard else "no shards, ")
        + "blosc lz4 + byte shuffle, consolidated metadata, completion marker.",
        "- S3: moto server in its own process on 127.0.0.1 (the client's s3fs talks HTTP to "
        "it as to MinIO); local: a folder under the system temp directory (page cache, no "
        "fsync, for either method).",
        "- zarr: `IQStore.write(ds)` (validation, encoding, every object, marker) and "
        "`IQStore.open(id).iq.values` (consolidated metadata, all shards via dask). "
        "raw: `np.save` of the `iq` array to a file, or its bytes put with "
        "`s3fs.pipe_file` (one put_object); read back with `np.load` / `cat_file`.",
        "- MB/s = IQ payload / wall time of the call; min time gives the best figure.",
        "",
        "| store | data | op | zarr best MB/s | zarr median MB/s | raw best MB/s "
        "| raw median MB/s | zarr / raw (median) | stored MB (zarr) | objects |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    verdicts = []
    for bname, dname, r in rows:
        for op in ("write", "read"):
            z, w = r[f"zarr {op}"], r[f"raw {op}"]
            ratio = statistics.median(w) / statistics.median(z)
            lines.append(
                f"| {bname} | {dname} | {op} | {mbps(nbytes, min(z)):.1f} | "
                f"{mbps(nbytes, statistics.median(z)):.1f} | {mbps(nbytes, min(w)):.1f} | "
                f"{mbps(nbytes, statistics.median(w)):.1f} | {ratio:.2f} | "
                f"{r['stored_bytes'][0] / 1e6:.1f} | {r['objects'][0]} |"
            )
            if op == "write":
                verdicts.append((bname, dname, ratio))
    lines += ["", "## Where the zarr write time goes", ""]
    lines += [f"- {label}: {value}" for label, value in extra.items()]
    for bname, dname, r in rows:
        if bname.startswith("S3"):
            z, w = statistics.median(r["zarr write"]), statistics.median(r["raw write"])
            lines.append(
                f"- S3, {dname}: zarr write {z * 1e3:.0f} ms vs raw {w * 1e3:.0f} ms (median), "
                f"{r['objects'][0]} objects holding {r['stored_bytes'][0] / 1e6:.1f} MB vs one "
                f"object of {nbytes / 1e6:.1f} MB."
            )
    lines += [
        "",
        "Against this server the write is bound by its cost per request and by the encoding, "
        "not by bytes: compression shrinks realistic IQ to about a third, which a "
        "bandwidth-bound link to a remote S3 would turn into a gain, but loopback to moto "
        "moves 40 MB in a fraction of a second either way. Locally, `np.save` into the page "
        "cache is a memory copy (GB/s); no format that validates, compresses and writes "
        "several files comes near it.",
    ]
    lines += ["", "## Goal: zarr write within 10 % of the raw put", ""]
    for bname, dname, ratio in verdicts:
        met = "met" if ratio >= GOAL else "NOT met"
        lines.append(f"- {bname}, {dname}: zarr/raw = {ratio:.2f} -> {met}")
    lines.append("")
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
