"""The benchmark functions with tiny sizes: sensible tables, goals judged, a report written.

No timing is asserted: the goals are judged in reports/benchmark.md, not here.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from benchmarks import harness as bm
from benchmarks import orm
from heimdall_lab import db
from heimdall_lab.db.receivers import _receiver_ids
from heimdall_lab.emulate.scenario import DEFAULT_NOMINAL_RATE
from heimdall_lab.errors import ValidationError
from heimdall_lab.receivers import DEFAULT_RECEIVERS


@pytest.fixture(scope="module")
def small_capture():
    return bm.emulated_capture(receivers=2, duration_s=1.0)


def test_emulated_scenario_adds_distinct_sites_around_europe():
    sc = bm.emulated_scenario(50)
    names = sc.site_names
    assert len(names) == len(set(names)) == 50
    assert list(names[:7]) == [r.name for r in DEFAULT_RECEIVERS]
    extra = sc.sites[7:]
    assert all(37 <= s.latitude <= 62 and -9 <= s.longitude <= 28 for s in extra)
    assert len({(s.latitude, s.longitude) for s in extra}) == 43
    assert bm.emulated_scenario(50).site_names == names  # seeded
    assert bm.emulated_scenario(3).site_names == names[:3]  # the same fleet, cut
    rx = bm.emulated_receivers(sc, 20)
    assert [r.name for r in rx] == list(names[:20])
    with pytest.raises(ValidationError):
        bm.emulated_scenario(0)


def test_emulated_capture_is_the_same_iq_every_time(small_capture):
    again = bm.emulated_capture(receivers=2, duration_s=1.0)
    assert small_capture.sizes["receiver"] == 2
    assert small_capture.attrs["capture_id"] != again.attrs["capture_id"]
    np.testing.assert_array_equal(small_capture.iq.values, again.iq.values)
    assert np.all(small_capture.n_samples.values >= DEFAULT_NOMINAL_RATE)


def test_fetch_benchmark_table():
    df = bm.fetch_benchmark(duration_s=0.5, repeats=1, receivers=3, fast_duration_s=0.5)
    assert list(df.case) == [
        "1 receiver, real time",
        "3 receivers, real time",
        "3 receivers, as fast as possible",
    ]
    assert list(df.receivers) == [1, 3, 3] and list(df.realtime) == [True, True, False]
    assert list(df.complete) == [1, 3, 3]
    expected = df.receivers * 0.5 * DEFAULT_NOMINAL_RATE
    assert np.all(np.abs(df.samples / expected - 1) < 0.1)
    assert np.all(df.wall_s[df.realtime] >= 0.45)  # paced in real time
    np.testing.assert_allclose(df.samples_per_s, df.samples / df.wall_s)
    table = bm.summaries({"fetch": df})["fetch"]
    assert table.loc["1 receiver, real time", "wall_vs_1_receiver"] == 1.0
    assert math.isnan(table.loc["3 receivers, as fast as possible", "wall_vs_1_receiver"])


def test_processing_benchmark_table(small_capture):
    df = bm.processing_benchmark(small_capture, repeats=2)
    assert len(df) == 6 and df.step.nunique() == 3
    assert set(df.receivers) == {2} and set(df.repeat) == {0, 1}
    assert np.all(df.per_receiver_ms > 0)
    np.testing.assert_allclose(df.per_receiver_ms, df.seconds / 2 * 1e3)
    table = bm.summaries({"processing": df})["processing"]
    np.testing.assert_allclose(
        table.budget_over_median, 500 / table.median_ms_per_receiver, rtol=1e-12
    )


def test_store_benchmark_table(small_capture, tmp_path):
    df = bm.store_benchmark(small_capture, repeats=1, workdir=tmp_path, s3=True)
    assert len(df) == 4
    assert set(df.backend) == {"local folder", "S3 (moto, in process)"}
    assert set(df.method) == {"zarr (IQStore.write)", "raw (np.save + put)"}
    iq_mb = small_capture.iq.nbytes / 1e6
    assert np.allclose(df.iq_mb, iq_mb)
    raw = df[df.method.str.startswith("raw")]
    assert np.all((raw.stored_mb >= iq_mb) & (raw.stored_mb < iq_mb + 0.01))  # npy header
    zarr = df[df.method.str.startswith("zarr")]
    assert np.all(zarr.stored_mb < iq_mb)  # compressed
    assert not (tmp_path / "store-iq" / "captures" / "bench-0.zarr").exists()  # cleaned up
    table = bm.summaries({"store": df})["store"]
    assert np.allclose(table.xs("raw (np.save + put)", level="method").vs_raw, 1.0)


def test_db_benchmark_table(embedded_engine):
    df = bm.db_benchmark(embedded_engine, rows=300, orm_rows=70, repeats=2)
    assert list(df.method) == ["COPY (write_measurements)", "ORM (add_all + commit)"] * 2
    assert list(df.rows) == [300, 70, 300, 70]
    np.testing.assert_allclose(df.rows_per_s, df.rows / df.seconds)
    rows = bm.make_rows(10, seed=3, psd_len=8)
    assert len(rows) == 10 and rows.psd.iloc[0].shape == (8,)
    assert set(rows.receiver) <= {r.name for r in DEFAULT_RECEIVERS}


def test_end_to_end_benchmark_table(embedded_engine, tmp_path):
    df = bm.end_to_end_benchmark(
        embedded_engine, str(tmp_path / "iq"), receiver_counts=(1, 3), duration_s=0.5, repeats=1
    )
    assert list(df.receivers) == [1, 3]
    assert list(df.stage) == ["done", "done"] and list(df.complete) == [1, 3]
    np.testing.assert_allclose(df.overhead_s, df.total_s - 0.5)
    stages = ["setup_s", "connecting_s", "receiving_s", "processing_s", "storing_s", "finishing_s"]
    assert np.all(df[stages] >= 0)
    np.testing.assert_allclose(df[stages].sum(axis=1), df.total_s, rtol=1e-9)
    assert np.all(df.receiving_s >= 0.45)
    assert not (tmp_path / "iq" / "captures").exists() or not any(
        (tmp_path / "iq" / "captures").iterdir()
    )


def test_memory_benchmark_table(embedded, tmp_path):
    df = bm.memory_benchmark(embedded.url, str(tmp_path / "iq"), cases=[(2, 0.5)])
    row = df.iloc[0]
    assert (row.receivers, row.duration_s, row.stage) == (2, 0.5, "done")
    assert row.iq_mb == pytest.approx(2 * 0.5 * DEFAULT_NOMINAL_RATE * 8 / 1e6, rel=0.1)
    assert 50 < row.rss_before_mb <= row.peak_rss_mb <= row.process_maxrss_mb
    assert row.added_mb == pytest.approx(row.peak_rss_mb - row.rss_before_mb)


def test_batch_benchmark_tables(embedded_engine, tmp_path):
    out = bm.batch_benchmark(
        embedded_engine,
        str(tmp_path / "iq"),
        captures=2,
        receivers=2,
        duration_s=0.5,
        worker_counts=(1, 2),
        memory_counts=(1, 2),
        repeats=1,
        processes=False,
    )
    thr, mem = out["throughput"], out["memory"]
    assert list(thr.workers) == [1, 2] and set(thr.captures) == {2} and set(thr.failed) == {0}
    assert np.all(thr.cpu_probe_s > 0)
    np.testing.assert_allclose(thr.captures_per_s, 2 / thr.seconds)
    assert np.all(thr.samples >= 2 * 2 * 0.5 * 12000)
    assert list(mem.captures) == [1, 2]
    np.testing.assert_allclose(mem.archive_iq_mb.iloc[1], 2 * mem.archive_iq_mb.iloc[0])
    assert np.all(mem.worker_peak_rss_mb > 0)
    assert not any((tmp_path / "iq" / "captures").iterdir())  # the archive is removed


def _results() -> dict:
    """Synthetic results: 7 receivers within the goal, linear growth, flat batch memory."""
    counts = [1, 7, 20, 50]
    e2e = pd.DataFrame(
        {
            "receivers": counts,
            "repeat": 0,
            "duration_s": 10.0,
            "total_s": [10.2 + 0.03 * n for n in counts],
            "per_receiver_overhead_ms": 0.0,
            **{
                c: 0.01
                for c in (
                    "setup_s",
                    "connecting_s",
                    "receiving_over_s",
                    "processing_s",
                    "storing_s",
                )
            },
        }
    )
    e2e["overhead_s"] = e2e.total_s - 10.0
    processing = pd.DataFrame(
        {
            "step": [
                "dsp.measure, one receiver at a time",
                "capture_metrics (x)",
                "capture_metrics + measurement_rows (y)",
            ],
            "per_receiver_ms": [2.0, 3.0, 4.0],
        }
    )
    batch_memory = pd.DataFrame(
        {
            "captures": [5, 20],
            "archive_iq_mb": [200.0, 800.0],
            "worker_peak_rss_mb": [300.0, 310.0],
        }
    )
    batch = pd.DataFrame(
        {
            "workers": [1, 2],
            "repeat": 0,
            "captures": 20,
            "seconds": [10.0, 6.0],
            "captures_per_s": [2.0, 20 / 6],
            "samples_per_s": [1e6, 1.6e6],
        }
    )
    return {
        "end_to_end": e2e,
        "processing": processing,
        "batch_memory": batch_memory,
        "batch": batch,
    }


def test_goals_judge_the_medians():
    results = _results()
    g = bm.goals(results).set_index("goal")
    assert g.loc["capture() overhead, 7 receivers (median)", "met"] is True
    assert g.loc["capture() overhead, 7 receivers (median)", "measured"] == "0.410 s"
    assert g.loc["overhead grows no worse than linearly with receivers", "met"] is True
    stage = "processing stage per receiver, 10 s at 12 kHz (capture_metrics, median)"
    assert g.loc[stage, "met"] is True and g.loc[stage, "measured"] == "3.00 ms"
    assert g.loc["batch memory bounded: worker peak RSS, 20 vs 5 captures", "met"] is True
    assert g.loc["earlier goal: COPY inserts (median)", "met"] is None  # not measured
    grow = bm.growth(results)
    assert grow["slope_ms_per_receiver"] == pytest.approx(30.0)
    assert grow["intercept_s"] == pytest.approx(0.2)

    # Quadratic growth, a slow 7-receiver capture, slow DSP and growing memory fail.
    e2e = results["end_to_end"]
    e2e["total_s"] = [10.2 + 0.001 * n * n for n in e2e.receivers]
    e2e.loc[e2e.receivers == 7, "total_s"] = 11.5
    e2e["overhead_s"] = e2e.total_s - 10.0
    results["processing"]["per_receiver_ms"] = [6.0, 7.0, 8.0]
    results["batch_memory"]["worker_peak_rss_mb"] = [300.0, 900.0]
    g = bm.goals(results).set_index("goal")
    assert g.loc["capture() overhead, 7 receivers (median)", "met"] is False
    assert g.loc["original plan: 7 simultaneous acquisitions", "met"] is True
    assert g.loc["overhead grows no worse than linearly with receivers", "met"] is False
    assert g.loc[stage, "met"] is False
    assert g.loc["original plan: per measurement (all per-receiver computation)", "met"] is True
    assert g.loc["batch memory bounded: worker peak RSS, 20 vs 5 captures", "met"] is False
    assert "Not met" in bm.conclusion(results)


def test_report_is_written_with_tables_goals_and_plots(tmp_path):
    results = _results()
    results["machine"] = bm.machine_info()
    results["settings"] = dict(bm.Settings.quick())
    path = bm.write_report(results, tmp_path / "reports")
    text = path.read_text()
    assert path == tmp_path / "reports" / "benchmark.md"
    assert "AMD" in text or results["machine"]["cpu"] in text
    assert (
        "| capture() overhead, 7 receivers (median) | <= 1 s beyond the duration | 0.410 s |"
        in text
    )
    assert "**met**" in text and "not measured" in text
    assert "min_total_s" in text and "median_total_s" in text
    pngs = sorted(p.name for p in (tmp_path / "reports" / "benchmark").glob("*.png"))
    assert pngs == ["batch.png", "end_to_end.png", "throughput.png"]
    assert "![capture() overhead](benchmark/end_to_end.png)" in text
    assert (tmp_path / "reports" / "benchmark" / "batch.png").read_bytes()[:4] == b"\x89PNG"


def test_settings_and_scratch_database():
    quick = bm.Settings.quick(repeats=2, duration_s=None)
    assert quick["repeats"] == 2 and quick["duration_s"] == 1.0
    assert bm.Settings.full()["receiver_counts"] == [1, 7, 20, 50]
    with pytest.raises(ValidationError, match="unknown benchmark setting"):
        bm.Settings.full(nonsense=1)
    with bm.scratch_database("postgresql://u@127.0.0.1:1/x") as url:
        assert url == "postgresql://u@127.0.0.1:1/x"


def test_processing_benchmark_extended_cases(small_capture):
    df = bm.processing_benchmark(small_capture, repeats=1, extended=True)
    assert df.step.nunique() == 9
    counts = df.set_index("step").receivers
    assert counts["dsp.psd alone, one receiver"] == 1
    assert counts["dsp.measure_dataset, dask-backed, synchronous"] == 2
    assert counts["same, 20 receivers in chunks of 2 (overhead amortised)"] == 20
    np.testing.assert_allclose(df.per_receiver_ms, df.seconds / df.receivers * 1e3)


def test_store_benchmark_extended_cases(small_capture, tmp_path):
    df = bm.store_benchmark(small_capture, repeats=1, workdir=tmp_path, s3=False, extended=True)
    main = df[df.backend == "local folder"]
    assert set(main.data) == {"emulated capture", "random int16 IQ"}
    assert set(main.op) == {"write", "read"} and len(main) == 8
    assert set(df.backend) == {"local folder", "memory (encode only)"}
    table = bm.summaries({"store": df})["store"]
    rnd = table.xs(("random int16 IQ", "local folder", "write"), level=("data", "backend", "op"))
    emu = table.xs(("emulated capture", "local folder", "write"), level=("data", "backend", "op"))
    zarr = "zarr (IQStore.write)"
    assert rnd.loc[zarr, "stored_mb"] > emu.loc[zarr, "stored_mb"]  # compresses worse
    assert table.xs("raw (np.save + put)", level="method").vs_raw.eq(1.0).all()
    goals = bm.goals({"store": df}).set_index("goal")
    assert goals.loc["earlier goal: zarr write vs raw put, local folder (median MB/s)", "met"] in (
        True,
        False,
    )
    noisy = bm.incompressible(small_capture)
    assert noisy.iq.shape == small_capture.iq.shape and bool(np.isfinite(noisy.iq).all())


def test_db_benchmark_extended_cases(embedded_engine):
    df = bm.db_benchmark(embedded_engine, rows=200, orm_rows=50, repeats=1, extended=True)
    assert list(df.method) == [
        "COPY (write_measurements)",
        "COPY, 64-bin PSD per row",
        "COPY as a non-superuser",
        "multi-row INSERT (fallback path)",
        "ORM (add_all + commit)",
    ]
    assert list(df.rows) == [200, 200, 200, 200, 50]
    g = bm.goals({"db": df}).set_index("goal")
    copy = df.rows_per_s.iloc[0]
    assert g.loc["earlier goal: COPY inserts (median)", "measured"] == f"{copy:,.0f} rows/s"


def test_python_m_benchmarks_has_a_quick_mode(monkeypatch, tmp_path, capsys):
    import subprocess
    import sys

    from benchmarks import __main__ as entry

    out = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--help"], capture_output=True, text=True, check=True
    )
    assert "--quick" in out.stdout
    seen = {}

    def fake_run_all(settings, database_url=None):
        seen["settings"], seen["url"] = settings, database_url
        return {**_results(), "machine": bm.machine_info(), "settings": dict(settings)} | {
            "elapsed_s": 1.0
        }

    monkeypatch.setattr(bm, "run_all", fake_run_all)
    assert entry.main(["--quick", "--output-dir", str(tmp_path), "--repeats", "2"]) == 0
    assert seen["settings"]["receiver_counts"] == [1, 7] and seen["settings"]["repeats"] == 2
    assert (tmp_path / "benchmark.md").is_file()
    assert "wrote" in capsys.readouterr().out


def test_the_benchmark_notebook_is_found_only_in_a_source_tree(monkeypatch, tmp_path):
    from pathlib import Path

    from heimdall_lab.notebooks import notebook_path

    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)
    assert notebook_path("benchmark").resolve() == root / "notebooks" / "benchmark.ipynb"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValidationError, match="source tree"):
        notebook_path("benchmark")


def test_orm_mapping_matches_schema(embedded_engine: Engine) -> None:
    engine = embedded_engine
    inspector = sa.inspect(engine)
    for model in (orm.WebSDR, orm.Capture, orm.Measurement):
        table = model.__table__
        stored = [c["name"] for c in inspector.get_columns(table.name)]
        assert sorted(stored) == sorted(c.name for c in table.columns), table.name
    capture_id = db.create_capture(engine, 10e6, 10.0)
    with engine.connect() as conn:
        ids = _receiver_ids(conn)
    t0 = pd.Timestamp("2024-06-01T00:00:00Z").to_pydatetime()
    with db.session(engine) as s:
        s.add_all(
            orm.Measurement(
                capture_id=capture_id,
                websdr_id=ids["Hasenberg03"],
                timestamp_utc=t0 + pd.Timedelta(seconds=k),
                frequency_hz=10e6,
                snr_db=float(k),
                psd=[1.0, 2.0],
                psd_resolution_hz=1.0,
                metadata_={"k": k},
            )
            for k in range(5)
        )
    got = db.measurements_for_capture(engine, capture_id)
    assert list(got["snr_db"]) == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert [m["k"] for m in got["metadata"]] == list(range(5))


def test_streaming_benchmark_quick(fresh_database, tmp_path):
    """``python -m benchmarks streaming --quick``'s work, small: a memory curve and one kill."""
    from benchmarks import streaming

    cfg = streaming.Settings.quick()
    results = streaming.run(cfg, fresh_database, tmp_path / "work")
    (mem,) = results["memory"]
    assert mem["exit_code"] == 0 and mem["status"] == "done" and mem["duplicates"] == 0
    assert len(mem["curve"]["rss_mb"]) > 0 and mem["peak_rss_mb"] > 50
    assert mem["complex64_bytes"] >= 2 * 10 * 12000 * 8 and mem["stored_bytes"] > 0
    (kill,) = results["kills"]
    assert "error" not in kill, kill
    assert kill["sync_exit"] == 0 and kill["sync2_exit"] == 0, kill["sync_tail"]
    assert kill["extent_is_frames"] and kill["whole_intervals"] and kill["every_written_interval"]
    assert kill["lost"] == 0 and kill["duplicates"] == 0 and kill["match"], kill
    assert kill["second_sync_unchanged"], kill["second_sync_changed"]
    figure = tmp_path / "figures" / "streaming_memory.png"
    streaming.figure(results["memory"], figure)
    assert figure.read_bytes()[:4] == b"\x89PNG"
    text = streaming.report(results, tmp_path / "streaming.md", "figures/streaming_memory.png")
    assert "quick (smoke) run" in text and "| 1 |" in text and "Projection" in text


def test_sessions_benchmark_quick(fresh_database, tmp_path):
    """``python -m benchmarks sessions --quick``'s work: hopping, stop/resume, triggering."""
    from benchmarks import sessions

    cfg = sessions.Settings.quick()
    results = sessions.run(cfg, fresh_database, workdir=tmp_path / "work")
    dwells, retunes = results["hopping"]["dwells"], results["hopping"]["retunes"]
    assert len(dwells) == cfg["hop_sweeps"] * 3 * cfg["hop_receivers"]
    assert set(dwells.stage) == {"done"} and dwells.measured_offset_hz.notna().all()
    # Against the right truth (1 Hz: a sanity check; the goal is judged in the report).
    assert dwells.offset_error_hz.abs().max() < 1.0
    assert len(retunes) == cfg["hop_sweeps"] * 2 * cfg["hop_receivers"]
    # The receiver that sends frames at the old frequency after a retune: they end the
    # dwell before (at least those; a loaded machine can leave more in flight).
    last = dwells.receiver.iloc[cfg["hop_receivers"] - 1]
    late = retunes[retunes.receiver == last]
    assert len(late) and (late.frames_before >= cfg["hop_latency_frames"]).all(), late
    res = results["resume"]
    assert res["status"] == "done", res["runs"]
    assert not res["missing_steps"] and not res["duplicate_steps"] and res["unstepped"] == 0
    assert sorted(res["captures"].step) == list(range(res["steps_total"]))
    assert any("stop asked" in what for _, what in res["timeline"])
    trig = results["trigger"]
    bursts = trig["bursts"]
    assert len(bursts) == 4 * cfg["bursts"] * cfg["trigger_receivers"]
    offline = bursts[bursts.detector == "band, offline"]
    assert offline[offline.p_burst > 0.999].detected.all()  # same frames every run
    assert set(trig["false"].detector) >= {"band, triggered (online)", "S-meter, noise +3 dB"}
    written = sessions.figures(results, tmp_path / "figures")
    assert sorted(p.name for p in written.values()) == [
        "sessions_hopping.png",
        "sessions_trigger.png",
    ]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in written.values())
    images = {k: f"figures/{p.name}" for k, p in written.items()}
    text = sessions.report(results, tmp_path / "sessions.md", images)
    assert "quick (smoke) run" in text and "Poisson" in text and "figures/sessions_" in text


def test_localize_benchmark_quick(tmp_path):
    """``python -m benchmarks.localize --quick``: every part runs, the report is whole."""
    import json

    from benchmarks import localize

    report, raw = tmp_path / "localize.md", tmp_path / "results.json"
    # main() quietens the package's loggers for its run; put them back for the next tests
    package = logging.getLogger("heimdall_lab")
    level = package.level
    try:
        assert localize.main(["--quick", "--report", str(report), "--results", str(raw)]) == 0
    finally:
        package.setLevel(level)
    text = report.read_text()
    for heading in (
        "## Summary",
        "## Method",
        "## 1. Real data",
        "## 2. The recordings replayed",
        "## 3. Coverage",
        "## 4. The delay estimator",
        "## 5. Calibration",
        "## 6. Robust fit",
        "### Receivers against the best three",
        "## 7. Run time",
        "## Machine",
    ):
        assert heading in text, heading
    assert "quick (smoke) run" in text and "nan" not in text.lower()
    summary = text.split("## Summary")[1].split("\n## ")[0]
    goal_rows = [line for line in summary.splitlines() if line.startswith("| ") and "met" in line]
    assert len(goal_rows) == 9, goal_rows  # the header and eight goals
    for name in ("dcf77", "coverage", "errors", "calibration_robust"):
        png = tmp_path / "localize" / f"{name}.png"
        assert png.read_bytes()[:4] == b"\x89PNG", name
        assert f"localize/{name}.png" in text

    results = json.loads(raw.read_text())
    cfg = localize.Settings.quick()
    assert results["settings"] == dict(cfg)
    keys = {r["key"] for r in results["real"]["rows"]}
    assert {"default", "sphere", "stat_only", "estimator_leading_edge"} <= keys
    for r in results["real"]["rows"]:
        assert r["located"] and math.isfinite(r["error_km"]), r["key"]
        assert math.isfinite(r["semi_major_km"]) and r["region_km2"] > 0, r["key"]
        assert r["t_min"] > 0, r["key"]
    for p in results["real"]["rows"][0]["pairs_detail"]:
        assert math.isfinite(p["error_us"]) and p["total_us"] > 0
    assert math.isfinite(results["replay"]["diff_m"])
    assert all(r["same"] for r in results["identity"]), results["identity"]
    runs = results["coverage"]
    n = len(cfg["powers"]) * (cfg["coverage_seeds"] + cfg["clean_seeds"]) + cfg["nosky_seeds"]
    assert len(runs) == n
    for r in localize.located(runs):
        assert math.isfinite(r["error_km"]) and math.isfinite(r["delta_chi2_truth"])
        assert len(r["pair_errors_us"]) == len(r["pair_sigma_us"]) == r["pairs"]
    rows = localize.coverage_table(runs, cfg["powers"], True)
    assert [r["power_dbm"] for r in rows] == cfg["powers"]
    assert all(0 <= r["coverage"] <= 1 and r["ci_low"] <= r["ci_high"] for r in rows)
    est = results["estimators"]
    assert len(est) == 2 * cfg["estimator_seeds"] * len(cfg["estimator_powers"])
    assert sorted({r["estimator"] for r in est}) == ["leading_edge", "peak"]
    for r in est:
        assert r["located"] and math.isfinite(r["error_km"]), r
        assert r["sky_excess_us"] and all(x > 0 for x in r["sky_excess_us"])
    assert "leading-edge error us" in text  # the real recordings compared pair by pair
    assert sorted(r["effects"] for r in results["calibration"]) == [False, True]
    for cal in results["calibration"]:
        assert math.isfinite(cal["uncalibrated"]["error_km"])
        assert math.isfinite(cal["calibrated"]["error_km"])
        assert math.isfinite(cal["bias_rms_error_us"])
    assert sorted(r["effects"] for r in results["robust"]) == [False, True]
    for rob in results["robust"]:
        for key in ("robust", "non_robust", "clean6"):
            assert math.isfinite(rob[key]["error_km"]), key
    (cnt,) = results["counts"]
    for n in cfg["counts"]:
        best = cnt["by_count"][str(n)]["best3"]
        assert best["subsets"] > 0 and math.isfinite(best["best_error_km"])
    assert all(v["median"] > 0 for v in results["runtime"].values())
