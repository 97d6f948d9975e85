"""Write the plot gallery of ``reports/figures`` from the real 2017 DCF77 recordings.

Every figure comes from the three KiwiSDR IQ recordings bundled with the package
(:func:`heimdall_lab.tutorial.dcf77_files`, read by
:func:`heimdall_lab.io.kiwi_wav.import_kiwi_wav` into a capture Dataset); no network and no
database are needed::

    .venv/bin/python scripts/make_figures.py [output folder, default reports/figures]

The metrics-over-time figure is made from measurements of 1 s chunks of the recordings
(:func:`heimdall_lab.dsp.measure`, the columns of
:func:`heimdall_lab.db.query_measurements`), with one receiver's chunk left out so that the
figure shows how a gap is drawn.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from heimdall_lab import dsp, tutorial
from heimdall_lab.io.kiwi_wav import import_kiwi_wav
from heimdall_lab.localize import locate_dataset
from heimdall_lab.ui import plots
from heimdall_lab.ui.localization_plot import plot_localization

#: The chunk left out of the metrics (receiver, index of the 1 s chunk).
DROPPED = ("F1JEK", 12)


def measurements(ds, chunk_s: float = 1.0) -> pd.DataFrame:
    """Measurement rows of every receiver's 1 s chunks, as ``query_measurements`` gives them."""
    rows = []
    for k, name in enumerate(str(n) for n in ds["receiver"].values):
        rate = float(ds["sample_rate"].values[k])
        n = int(ds["n_samples"].values[k])
        start = np.datetime64(ds["start_time"].values[k], "ns")
        step = round(chunk_s * rate)
        for i in range(n // step):
            if (name, i) == DROPPED:
                continue
            iq = ds["iq"].isel(receiver=k, sample=slice(i * step, (i + 1) * step)).values
            m = dsp.measure(iq, rate, center_frequency_hz=tutorial.DCF77_FREQUENCY_HZ)
            rows.append(
                {
                    "capture_id": ds.attrs["capture_id"],
                    "receiver": name,
                    "timestamp_utc": pd.Timestamp(
                        start + np.timedelta64(round(i * step / rate * 1e9), "ns"), tz="UTC"
                    ),
                    "snr_db": m.snr_db,
                    "cn0_dbhz": m.cn0_dbhz,
                    "noise_power_dbfs": m.noise_power_dbfs,
                    "signal_power_dbfs": m.signal_power_dbfs,
                    "frequency_offset_hz": m.frequency_offset_hz,
                }
            )
    return pd.DataFrame(rows).sort_values(["timestamp_utc", "receiver"], ignore_index=True)


def save(fig: Figure, path: Path) -> None:
    """Write one figure."""
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main(out: Path) -> None:
    """Write every figure into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    ds = import_kiwi_wav(tutorial.dcf77_files(), tutorial.DCF77_POSITIONS)
    result = locate_dataset(ds)

    fig = Figure(figsize=(12, 5.5), layout="constrained")
    save(plots.plot_waterfalls(ds, start_s=0.0, end_s=10.0, fig=fig), out / "waterfalls.png")

    fig = Figure(figsize=(11, 5.2), layout="constrained")
    plots.plot_envelope(ds, start_s=1.0, end_s=9.0, ax=fig.subplots())
    save(fig, out / "envelope.png")

    fig = Figure(figsize=(14, 6.2), layout="constrained")
    save(plots.plot_correlations(ds, result, fig=fig), out / "correlations.png")

    fig = Figure(figsize=(10, 9), layout="constrained")
    plots.plot_metrics_over_time(
        measurements(ds), ("snr_db", "cn0_dbhz", "noise_power_dbfs", "frequency_offset_hz"), fig=fig
    )
    save(fig, out / "metrics_over_time.png")

    fig = Figure(figsize=(9, 4.5), layout="constrained")
    plots.plot_psd(ds, start_s=10.0, end_s=12.0, ax=fig.subplots())
    save(fig, out / "psd_interval.png")

    fig = Figure(figsize=(9, 4.5), layout="constrained")
    plots.plot_psd(ds, ax=fig.subplots())
    save(fig, out / "psd.png")

    fig = Figure(figsize=(7, 7), layout="constrained")
    plot_localization(result, fig.subplots(), truth=tutorial.DCF77_TRANSMITTER)
    save(fig, out / "localization.png")

    fig = Figure(figsize=(6.5, 6.5), layout="constrained")
    plots.plot_receivers_map(
        ds["latitude"].values,
        ds["longitude"].values,
        ds["receiver"].values,
        transmitter=tutorial.DCF77_TRANSMITTER,
        ax=fig.subplots(),
    )
    save(fig, out / "receivers_map.png")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("reports/figures"))
