import numpy as np
import pytest
import xarray as xr

from heimdall_lab.errors import ValidationError
from heimdall_lab.ui import plots


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
