import numpy as np
import pandas as pd
import pytest
import xarray as xr

from heimdall_lab.errors import ValidationError
from heimdall_lab.ui import plots


@pytest.fixture(autouse=True)
def _close_figures():
    """Each test's figures are closed after it (pyplot keeps them otherwise)."""
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def _capture(n_rx=3, n=24_000, rate=12_000.0):
    rng = np.random.default_rng(0)
    t = np.arange(n) / rate
    iq = np.exp(2j * np.pi * 500 * t)[None, :] + 0.01 * (
        rng.standard_normal((n_rx, n)) + 1j * rng.standard_normal((n_rx, n))
    )
    return xr.Dataset(
        {"iq": (("receiver", "sample"), iq.astype(np.complex64))},
        coords={
            "receiver": [f"R{i}" for i in range(n_rx)],
            "sample_rate": ("receiver", np.full(n_rx, rate)),
            "n_samples": ("receiver", np.full(n_rx, n)),
            "latitude": ("receiver", [47.0, 48.0, 49.0][:n_rx]),
            "longitude": ("receiver", [8.0, 9.0, 10.0][:n_rx]),
        },
        attrs={"center_frequency_hz": 10e6},
    )


def test_psd_has_one_line_per_receiver_peaking_at_the_tone():
    ax = plots.plot_psd(_capture())
    lines = ax.get_lines()
    assert [ln.get_label() for ln in lines] == ["R0", "R1", "R2"]
    x, y = lines[0].get_data()
    assert abs(x[np.argmax(y)] - 500) < 50


def test_waterfall_shows_the_tone_column():
    ax = plots.plot_waterfall(_capture(), "R1")
    mesh = ax.collections[0]
    image = np.asarray(mesh.get_array()).reshape(-1, 256)
    freqs = np.fft.fftshift(np.fft.fftfreq(256, 1 / 12_000))
    assert abs(freqs[np.argmax(image.mean(axis=0))] - 500) < 100


def test_map_marks_each_receiver_and_the_transmitter():
    ds = _capture()
    ax = plots.plot_receivers_map(
        ds.latitude,
        ds.longitude,
        ds.receiver.values,
        status={"R1": "failed"},
        transmitter=(50.0, 9.0),
    )
    assert len(ax.collections) == 4
    assert [t.get_text() for t in ax.texts] == ["R0", "R1", "R2"]


def test_bad_requests_raise():
    with pytest.raises(ValidationError, match="not in the capture"):
        plots.plot_waterfall(_capture(), "NOPE")
    with pytest.raises(ValidationError, match="no receiver"):
        plots.plot_psd(_capture().isel(receiver=slice(0, 0)))
    with pytest.raises(ValidationError, match="too few"):
        plots.plot_waterfall(_capture(n=300))


# ------------------------------------------------------------------------------ helpers


def _keyed(n_rx=3, seconds=4.0, rate=12_000.0, depth=0.15, offset_hz=0.0, starts=None):
    """A DCF77-like carrier: the amplitude drops to ``depth`` for 0.1 s at each second."""
    rng = np.random.default_rng(1)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    amp = np.where((t % 1.0) < 0.1, depth, 1.0)
    carrier = amp * np.exp(2j * np.pi * offset_hz * t)
    iq = 0.1 * carrier[None, :] + 0.002 * (
        rng.standard_normal((n_rx, n)) + 1j * rng.standard_normal((n_rx, n))
    )
    ds = _capture(n_rx, n, rate)
    ds["iq"] = (("receiver", "sample"), iq.astype(np.complex64))
    if starts is not None:
        ds = ds.assign_coords(start_time=("receiver", np.array(starts, "M8[ns]")))
    return ds


def _counting(ds, chunk=1000):
    """The capture with a dask-backed iq that records the sample ranges it reads."""
    import dask.array as da

    reads = []

    def load(block, block_info=None):
        reads.append(tuple(block_info[0]["array-location"][1]))
        return block

    lazy = da.from_array(ds["iq"].values, chunks=(1, chunk)).map_blocks(load, dtype=np.complex64)
    return ds.assign(iq=(("receiver", "sample"), lazy)), reads


# ------------------------------------------------------------------------------ intervals


def test_psd_of_an_interval_reads_only_the_interval_and_equals_the_slice_psd():
    from heimdall_lab import dsp

    ds = _keyed(1, seconds=4.0)
    lazy, reads = _counting(ds)
    ax = plots.plot_psd(lazy, start_s=1.05, end_s=1.1)  # inside the key-down
    assert reads and all(lo >= 12_000 and hi <= 14_000 for lo, hi in reads)
    y = ax.get_lines()[0].get_ydata()
    _, expected = dsp.psd(ds["iq"].values[0, 12_600:13_200], 12_000.0)
    np.testing.assert_allclose(y, expected)
    _, whole = dsp.psd(ds["iq"].values[0], 12_000.0)
    assert len(y) != len(whole) or not np.allclose(y, whole)
    assert "1.05" in ax.get_title() and "1.1 s" in ax.get_title()


def test_intervals_count_from_the_earliest_receiver_start():
    t0 = np.datetime64("2024-03-01T12:00:00", "ns")
    ds = _keyed(2, seconds=2.0, starts=[t0 + np.timedelta64(500, "ms"), t0])
    sel = plots._select(ds, None, 1.0, 1.5)
    late, early = sel.pieces
    assert sel.start_utc == t0
    assert len(late.iq) == len(early.iq) == 6_000
    assert late.t0_s == pytest.approx(1.0) and early.t0_s == pytest.approx(1.0)
    np.testing.assert_array_equal(late.iq, ds["iq"].values[0, 6_000:12_000])
    np.testing.assert_array_equal(early.iq, ds["iq"].values[1, 12_000:18_000])


# ------------------------------------------------------------------------------ waterfalls


def test_waterfalls_have_one_panel_per_receiver_and_one_colour_scale():
    from matplotlib.figure import Figure

    ds = _capture(3)
    ds["iq"][1] *= 10  # one receiver 20 dB stronger: its own scale would differ
    fig = plots.plot_waterfalls(ds, fig=Figure(layout="constrained"))
    panels = [ax for ax in fig.axes if ax.collections and ax.get_label() != "<colorbar>"]
    colourbars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert [ax.get_title() for ax in panels] == ["R0", "R1", "R2"]
    assert len(colourbars) == 1
    assert len({ax.collections[0].get_clim() for ax in panels}) == 1
    assert all("(s)" in ax.get_ylabel() for ax in panels[:1])
    fig = plots.plot_waterfalls(ds, ["R2", "R0"], start_s=0.5, end_s=1.5)
    panels = [ax for ax in fig.axes if ax.collections and ax.get_label() != "<colorbar>"]
    assert [ax.get_title() for ax in panels] == ["R2", "R0"]
    times = panels[0].collections[0].get_coordinates()[:, 0, 1]
    assert times.min() >= 0.5 and times.max() <= 1.5


def test_waterfall_and_waterfalls_draw_the_same_image():
    ds = _capture(2)
    one = plots.plot_waterfall(ds, "R1").collections[0].get_array()
    fig = plots.plot_waterfalls(ds)
    both = [ax.collections[0].get_array() for ax in fig.axes if ax.collections]
    np.testing.assert_array_equal(np.asarray(one), np.asarray(both[1]))


# ------------------------------------------------------------------------------ envelope


def test_envelope_dips_at_the_key_times():
    ds = _keyed(2, seconds=4.0, offset_hz=1500.0)  # off the centre, outside the band: found
    ax = plots.plot_envelope(ds, smooth_s=0.005)
    lines = ax.get_lines()
    data = [ln for ln in lines if ln.get_label() in ("R0", "R1")]
    assert [ln.get_label() for ln in data] == ["R0", "R1"]
    for ln, base in zip(data, (1.5, 0.0), strict=True):
        x, y = (np.asarray(v, float) for v in ln.get_data())
        y = y - base
        keyed = (x % 1.0 > 0.02) & (x % 1.0 < 0.08)
        up = (x % 1.0 > 0.2) & (x % 1.0 < 0.9)
        assert keyed.sum() > 10 and up.sum() > 100
        assert np.all(y[keyed] < 0.3)
        assert np.all(np.abs(y[up] - 1.0) < 0.2)
    assert ax.get_xlabel() == "time from the capture start (s)"


def test_envelope_time_axis_is_utc_when_the_capture_has_times():
    t0 = np.datetime64("2024-03-01T12:00:00", "ns")
    ds = _keyed(1, seconds=3.0, starts=[t0])
    ax = plots.plot_envelope(ds, start_s=1.0, end_s=2.0, db=True)
    assert "UTC" in ax.get_xlabel()
    x = ax.get_lines()[0].get_xdata()
    assert np.datetime64(x[0], "ns") >= t0 + np.timedelta64(1, "s")


# ------------------------------------------------------------------------------ correlations


def _network():
    """Three GNSS-timed receivers of a keyed carrier, the transmitter at TX."""
    from heimdall_lab import geo, gnss
    from heimdall_lab.dataset import build_dataset
    from heimdall_lab.receivers import Receiver
    from heimdall_lab.recording import Recording

    sites = {"A": (43.5, 1.4), "B": (52.5, 4.8), "C": (48.2, 16.3)}
    tx = (50.0, 8.5)
    rate = 12_000.0
    entries = []
    for k, (name, (lat, lon)) in enumerate(sites.items()):
        rng = np.random.default_rng(k)
        delay = float(geo.distance_m(*tx, lat, lon)) / geo.SPEED_OF_LIGHT
        n = int(4.0 * rate) // 512 * 512
        t = 0.1 + np.arange(n) / rate
        te = t - delay
        r = te % 1.0
        bits = np.random.default_rng(7).integers(0, 2, 16)[np.floor(te).astype(int) % 16]
        amp = 1.0 - 0.85 * ((r > 0.0) & (r < np.where(bits, 0.2, 0.1)))
        x = 0.1 * amp + 0.001 * (rng.standard_normal(n) + 1j * rng.standard_normal(n))
        starts = np.arange(0, n, 512)
        utc = np.datetime64("2024-03-01T12:00:00", "ns") + np.round(t[starts] * 1e9).astype(
            "m8[ns]"
        )
        sec, nsec = gnss.utc_to_tow(utc)
        rec = Recording(
            samples=x.astype(np.complex64),
            frame_start=starts.astype(np.int64),
            seq=np.arange(len(starts), dtype=np.int64),
            last_gps_solution=np.full(len(starts), 1, np.uint8),
            gpssec=sec.astype(np.int64),
            gpsnsec=nsec.astype(np.int64),
            rssi_dbm=np.full(len(starts), np.nan, np.float32),
            nominal_rate=rate,
        )
        entries.append((Receiver(name, "localhost", 8073, lat, lon), rec, True))
    return build_dataset(entries, 77_500.0, 4.0, capture_id="plots-network")


@pytest.fixture(scope="module")
def located():
    from heimdall_lab.localize import locate_dataset

    ds = _network()
    return ds, locate_dataset(ds, method="envelope")


def test_correlation_marks_the_delay_the_solver_chose(located):
    from matplotlib.figure import Figure

    ds, result = located
    fig = plots.plot_correlations(ds, result, fig=Figure(layout="constrained"))
    mains = [ax for ax in fig.axes if ax.get_ylabel() == "normalised correlation"]
    assert len(mains) == len(result.pairs) == 3
    for ax, pair in zip(mains, result.pairs, strict=True):
        assert ax.get_title() == f"{pair.receiver_a} \u2013 {pair.receiver_b}"
        (marker,) = [ln for ln in ax.get_lines() if ln.get_label() == "chosen delay"]
        assert marker.get_xdata()[0] / 1e3 == pytest.approx(pair.delay_s, abs=1e-12)
        curve = next(ln for ln in ax.get_lines() if ln.get_label() == "correlation")
        x, y = curve.get_data()
        # The marked delay is the curve's peak, to within a sample.
        assert abs(x[np.argmax(y)] / 1e3 - pair.delay_s) <= 1 / 12_000
        assert f"{pair.delay_s * 1e6:.2f}" in ax.texts[0].get_text()


def test_correlation_curves_come_from_the_solver(located):
    from heimdall_lab.localize.tdoa import pair_correlations

    ds, result = located
    curves = pair_correlations(ds, result)
    for p in result.pairs:
        c = curves[(p.receiver_a, p.receiver_b)]
        assert c.estimate.delay_s == p.delay_s
        assert c.estimate.coefficient == pytest.approx(p.coefficient)
        assert np.max(c.fine_correlation) == pytest.approx(c.estimate.coefficient, rel=1e-3)
    other = _network()
    other["iq"] = other["iq"].roll(sample=7)
    with pytest.raises(ValidationError, match="not the capture"):
        pair_correlations(other, result)


def test_correlation_plot_rejects_bad_input(located):
    ds, result = located
    with pytest.raises(ValidationError, match="not in the localization"):
        plots.plot_correlations(ds, result, pairs=["A-Z"])
    with pytest.raises(ValidationError, match="Localization"):
        plots.plot_correlations(ds, "nope")
    fig = plots.plot_correlations(ds, result, pairs=["C-A"])
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == ["A \u2013 C"]


# ------------------------------------------------------------------------------ metrics


def _rows(times_s, receivers=("R0", "R1")):
    t0 = pd.Timestamp("2024-03-01T12:00:00Z")
    return pd.DataFrame(
        [
            {
                "receiver": r,
                "timestamp_utc": t0 + pd.Timedelta(seconds=float(s)),
                "snr_db": 10.0 + k + 0.1 * s,
                "cn0_dbhz": 40.0 + k,
                "noise_power_dbfs": -60.0,
            }
            for k, r in enumerate(receivers)
            for s in times_s
        ]
    )


def test_metrics_lines_break_exactly_at_the_gaps():
    times = [0, 1, 2, 3, 6, 7, 8, 20, 21]  # gaps after 3 s and after 8 s
    fig = plots.plot_metrics_over_time(_rows(times))
    assert [ax.get_ylabel() for ax in fig.axes] == [
        "SNR (dB)",
        "C/N0 (dB-Hz)",
        "noise power (dBFS)",
    ]
    t0 = np.datetime64("2024-03-01T12:00:00")
    for ax in fig.axes:
        lines = ax.get_lines()
        assert [ln.get_label() for ln in lines] == ["R0", "R1"]
        for ln in lines:
            y = np.asarray(ln.get_ydata(), float)
            x = np.asarray(ln.get_xdata())
            assert np.flatnonzero(np.isnan(y)).tolist() == [4, 8]
            seconds = (x.astype("M8[ns]") - t0) / np.timedelta64(1, "s")
            assert 3 < seconds[4] < 6 and 8 < seconds[8] < 20
            assert np.allclose(np.delete(seconds, [4, 8]), times)


def test_metrics_take_an_explicit_gap_and_bucketed_frames():
    fig = plots.plot_metrics_over_time(_rows([0, 1, 2, 3, 6, 7]), ["snr_db"], gap=5.0)
    assert not np.isnan(np.asarray(fig.axes[0].get_lines()[0].get_ydata(), float)).any()
    t0 = pd.Timestamp("2024-03-01T12:00:00Z")
    buckets = pd.DataFrame(
        {
            "bucket": [t0 + pd.Timedelta(minutes=m) for m in (0, 1, 2, 5, 6)],
            "receiver": "R0",
            "count": 10,
            "snr_mean": [10.0, 11, 12, 13, 14],
            "offset_mean": [0.1, 0.2, 0.3, 0.4, 0.5],
        }
    )
    fig = plots.plot_metrics_over_time(buckets)
    assert [ax.get_ylabel() for ax in fig.axes] == [
        "SNR, bucket mean (dB)",
        "frequency offset, bucket mean (Hz)",
    ]
    y = np.asarray(fig.axes[0].get_lines()[0].get_ydata(), float)
    assert np.flatnonzero(np.isnan(y)).tolist() == [3]
    assert fig.axes[-1].get_xlabel() == "bucket start (UTC)"


def test_metrics_reject_bad_input():
    rows = _rows([0, 1, 2])
    with pytest.raises(ValidationError, match="no rows"):
        plots.plot_metrics_over_time(rows.iloc[:0])
    with pytest.raises(ValidationError, match="not in the frame"):
        plots.plot_metrics_over_time(rows, ["nope"])
    with pytest.raises(ValidationError, match="not numeric"):
        plots.plot_metrics_over_time(rows, ["receiver"])
    with pytest.raises(ValidationError, match="positive"):
        plots.plot_metrics_over_time(rows, gap=-1)
    with pytest.raises(ValidationError, match="group by"):
        plots.plot_metrics_over_time(rows, by="site")


# ------------------------------------------------------------------------------ bad input


def test_bad_intervals_and_receivers_raise():
    ds = _capture()
    with pytest.raises(ValidationError, match="empty interval"):
        plots.plot_psd(ds, start_s=1.0, end_s=1.0)
    with pytest.raises(ValidationError, match="too few"):
        plots.plot_psd(ds, start_s=1.999, end_s=5.0)
    with pytest.raises(ValidationError, match="too few"):
        plots.plot_waterfalls(ds, start_s=5.0)
    with pytest.raises(ValidationError, match="not in the capture"):
        plots.plot_waterfalls(ds, ["R0", "NOPE"])
    with pytest.raises(ValidationError, match="not in the capture"):
        plots.plot_envelope(ds, "NOPE")
    with pytest.raises(ValidationError, match="smooth_s"):
        plots.plot_envelope(ds, smooth_s=0)
    with pytest.raises(ValidationError, match="too few"):
        plots.plot_envelope(ds, start_s=0.0, end_s=0.01)
    with pytest.raises(ValidationError, match="seconds"):
        plots.plot_psd(ds, start_s="soon")
    with pytest.raises(ValidationError, match="no receiver"):
        plots.plot_waterfalls(ds.isel(receiver=slice(0, 0)))


def test_a_short_receiver_is_left_out_of_plots_of_all_receivers_and_named():
    ds = _two_receivers_one_short()
    ax = plots.plot_envelope(ds)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["long"]
    assert "too few samples: short" in ax.get_title()
    fig = plots.plot_waterfalls(ds)
    assert [a.get_title() for a in fig.axes if a.get_title()] == ["long"]
    assert "too few samples: short" in fig._suptitle.get_text()
    with pytest.raises(ValidationError, match="short: 400 samples are too few"):
        plots.plot_envelope(ds, ["short"])  # named: refused
    with pytest.raises(ValidationError, match="too few"):
        plots.plot_envelope(ds.sel(receiver=["short"]))  # none left


def test_waterfall_colours_ignore_silent_and_non_finite_receivers():
    ds = _two_receivers_one_short(short=4096)
    iq = ds.iq.values.copy()
    iq[1, :] = 0  # a silent receiver
    iq[1, :100] = np.nan
    ds = ds.assign(iq=(ds.iq.dims, iq))
    for order in (["long", "short"], ["short", "long"]):
        fig = plots.plot_waterfalls(ds.sel(receiver=order))
        lo, hi = fig.axes[0].collections[0].get_clim()
        assert np.isfinite([lo, hi]).all() and -160 < lo < hi, (order, lo, hi)
    with pytest.raises(ValidationError, match="nothing to draw"):
        plots.plot_waterfalls(ds.sel(receiver=["short"]))


def test_correlation_pairs_are_found_by_names_that_hold_hyphens():
    known = [("kiwi-a", "kiwi-b"), ("kiwi-a", "kiwi-c")]
    assert plots._pair_key("kiwi-a-kiwi-b", known) == ("kiwi-a", "kiwi-b")
    assert plots._pair_key("kiwi-c-kiwi-a", known) == ("kiwi-a", "kiwi-c")
    assert plots._pair_key(("kiwi-b", "kiwi-a"), known) == ("kiwi-a", "kiwi-b")
    with pytest.raises(ValidationError, match="not in the localization"):
        plots._pair_key("kiwi-b-kiwi-c", known)


def _two_receivers_one_short(short=400):
    """A keyed carrier heard by ``long`` (4 s) and ``short`` (``short`` samples)."""
    ds = _keyed(n_rx=2, seconds=4.0)
    ds = ds.assign_coords(receiver=["long", "short"], n_samples=("receiver", [48_000, short]))
    return ds


# -- session heatmaps ------------------------------------------------------------------------

T0 = pd.Timestamp("2026-11-02T10:00:00Z")
MINUTE = pd.Timedelta("1min")


def _stats(rows):
    """measurement_stats-shaped rows from (minute, receiver, frequency_hz, snr, occupancy)."""
    return pd.DataFrame(
        [
            {
                "bucket": T0 + k * MINUTE,
                "receiver": rx,
                "frequency_hz": f,
                "n": 6,
                "snr_db_mean": snr,
                "occupancy": occ,
            }
            for k, rx, f, snr, occ in rows
        ]
    )


def _session_stats():
    # R0 at 10 MHz in minutes 0, 1 and 3 (minute 2 missing), at 14 MHz in minute 1;
    # R1 at 10 MHz in minute 0 only.
    return _stats(
        [
            (0, "R0", 10e6, 20.0, 1.0),
            (1, "R0", 10e6, 21.0, 0.5),
            (3, "R0", 10e6, 23.0, 0.0),
            (1, "R0", 14e6, 5.0, 0.25),
            (0, "R1", 10e6, 30.0, 1.0),
        ]
    )


def test_session_grid_leaves_a_missing_bucket_nan_and_places_each_row():
    grid = plots.session_grid(_session_stats(), bucket="1min")
    assert grid.dims == ("receiver", "frequency_hz", "bucket")
    assert list(grid.receiver.values) == ["R0", "R1"]
    assert list(grid.frequency_hz.values) == [10e6, 14e6]
    expected = pd.date_range("2026-11-02T10:00", periods=4, freq="1min").to_numpy()
    np.testing.assert_array_equal(grid.bucket.values, expected)
    np.testing.assert_array_equal(grid.sel(receiver="R0", frequency_hz=10e6), [20, 21, np.nan, 23])
    np.testing.assert_array_equal(
        grid.sel(receiver="R0", frequency_hz=14e6), [np.nan, 5, np.nan, np.nan]
    )
    np.testing.assert_array_equal(
        grid.sel(receiver="R1", frequency_hz=10e6), [30, np.nan, np.nan, np.nan]
    )
    assert np.isnan(grid.sel(receiver="R1", frequency_hz=14e6)).all()
    assert grid.attrs["bucket_s"] == 60.0


def test_session_grid_spans_start_to_end_on_the_bucket_grid_and_keeps_plan_rows():
    grid = plots.session_grid(
        _session_stats(),
        "occupancy",
        bucket=60,
        start="2026-11-02T09:57:30",  # floored to 09:57
        end=T0 + pd.Timedelta("5min 10s"),  # ceiled to 10:06
        receivers=["R1", "R0", "R9"],
        frequencies=[10_000_000.3, 7e6],  # 10 MHz within 0.5 Hz is the stats' row
    )
    assert list(grid.receiver.values) == ["R1", "R0", "R9"]
    assert list(grid.frequency_hz.values) == [7e6, 10_000_000.3, 14e6]
    assert grid.bucket.values[0] == np.datetime64("2026-11-02T09:57")
    assert grid.bucket.values[-1] == np.datetime64("2026-11-02T10:05")
    assert grid.sizes["bucket"] == 9
    r0 = grid.sel(receiver="R0", frequency_hz=10_000_000.3).values
    np.testing.assert_array_equal(r0, [np.nan] * 3 + [1.0, 0.5, np.nan, 0.0] + [np.nan] * 2)
    assert np.isnan(grid.sel(receiver="R9")).all()  # asked for, no rows: blank panel
    assert np.isnan(grid.sel(frequency_hz=7e6)).all()  # planned, never measured: blank row


def test_session_grid_merges_rows_within_half_a_hertz_weighted_by_their_counts():
    stats = _stats([(0, "R0", 10e6, 10.0, 1.0), (0, "R0", 10e6 + 0.4, 20.0, 0.0)])
    stats.loc[1, "n"] = 3
    grid = plots.session_grid(stats, "snr_db_mean", bucket="1min")
    assert grid.sizes["frequency_hz"] == 1
    assert grid.values[0, 0, 0] == pytest.approx((6 * 10 + 3 * 20) / 9)
    assert plots.session_grid(stats, "n", bucket="1min").values[0, 0, 0] == 9


def test_session_heatmap_has_a_panel_per_receiver_blank_where_buckets_are_missing():
    import matplotlib.dates as mdates

    fig = plots.plot_session_heatmap(_session_stats(), bucket="1min", receivers=["R0", "R1", "R2"])
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert [ax.get_title(loc="left") for ax in panels] == ["R0", "R1", "R2"]
    for ax in panels:
        assert ax.get_xlim() == pytest.approx(
            (
                mdates.date2num(T0.tz_convert(None)),
                mdates.date2num((T0 + 4 * MINUTE).tz_convert(None)),
            )
        )
        assert ax.get_ylim() == (0, 2)
        labels = [t.get_text() for t in ax.get_yticklabels()]
        assert labels == ["10000.000 kHz", "14000.000 kHz"]
    image = panels[0].collections[0].get_array()
    assert image.shape == (2, 4)  # frequency rows x bucket columns
    np.testing.assert_array_equal(np.ma.getmaskarray(image)[0], [False, False, True, False])
    assert image[0, 3] == 23.0
    coordinates = panels[0].collections[0].get_coordinates()  # cell edges, one per bucket
    np.testing.assert_allclose(
        coordinates[0, :, 0],
        mdates.date2num(pd.date_range(T0.tz_convert(None), periods=5, freq="1min").to_numpy()),
    )
    assert np.ma.getmaskarray(panels[2].collections[0].get_array()).all()
    assert "blank: no measurements (19 of 24 cells)" in fig.get_suptitle()


def test_occupancy_heatmap_is_on_a_zero_to_one_scale():
    fig = plots.plot_session_heatmap(_session_stats(), "occupancy", bucket="1min")
    mesh = fig.axes[0].collections[0]
    assert mesh.get_clim() == (0.0, 1.0)
    assert "occupancy" in fig.get_suptitle()


def test_session_heatmap_marks_each_event_on_its_receivers_panel_and_row():
    import matplotlib.dates as mdates

    events = pd.DataFrame(
        {
            "receiver": ["R0", "R0", "R5"],
            "frequency_hz": [14e6, np.nan, 10e6],
            "start_utc": [T0 + pd.Timedelta("70s"), T0 + pd.Timedelta("200s"), T0],
            "end_utc": [T0 + pd.Timedelta("80s"), T0 + pd.Timedelta("200s"), T0],
        }
    )
    grid = plots.session_grid(_session_stats(), bucket="1min")
    fig = plots.plot_session_heatmap(grid, events=events)
    r0, r1 = fig.axes[:2]
    marks = [a for a in (*r0.patches, *r0.lines) if a.get_gid() == "event"]
    assert len(marks) == 4  # an outline and a start line per event of R0
    assert not [a for a in (*r1.patches, *r1.lines) if a.get_gid() == "event"]
    first = next(a for a in r0.lines if a.get_gid() == "event")
    x, y = first.get_data()
    assert x[0] == pytest.approx(mdates.date2num((T0 + pd.Timedelta("70s")).tz_convert(None)))
    assert list(y) == [0.5, 1.0]  # the 14 MHz row only (axes fraction)
    assert "2 detection events" in fig.get_suptitle()


def test_session_heatmap_refuses_bad_input():
    stats = _session_stats()
    with pytest.raises(ValidationError, match="not a whole number of 1 min buckets"):
        plots.session_grid(
            stats.assign(bucket=stats.bucket + pd.to_timedelta([0, 30, 0, 0, 0], unit="s"))
        )
    with pytest.raises(ValidationError, match="'cn0_dbhz_mean' is not in the frame"):
        plots.session_grid(stats, "cn0_dbhz_mean")
    with pytest.raises(ValidationError, match="not numeric"):
        plots.session_grid(stats.assign(snr_db_mean="x"))
    with pytest.raises(ValidationError, match="too many for one heatmap"):
        plots.session_grid(stats, bucket="1s", end=T0 + pd.Timedelta("2D"))
    with pytest.raises(ValidationError, match="no start and end"):
        plots.session_grid(stats.iloc[:0])
    with pytest.raises(ValidationError, match="positive duration"):
        plots.session_grid(stats, bucket="-1min")
    with pytest.raises(ValidationError, match="'end_utc' column"):
        plots.plot_session_heatmap(stats, events=pd.DataFrame({"receiver": [], "start_utc": []}))
    empty = plots.session_grid(
        stats.iloc[:0], start=T0, end=T0 + MINUTE, receivers=["R0"], frequencies=[10e6]
    )
    assert empty.shape == (1, 1, 1) and np.isnan(empty).all()
