"""Pair delay estimators: the real-data pin, sub-band delays, the earliest-arrival estimate."""

from __future__ import annotations

import math

import numpy as np
import pytest

from heimdall_lab import tutorial
from heimdall_lab.dataset import build_dataset
from heimdall_lab.errors import ValidationError
from heimdall_lab.io.kiwi_wav import parse_kiwi_wav_name, read_kiwi_wav
from heimdall_lab.localize.align import _carrier_offset, _dataset_tracks, _prepare, _resample
from heimdall_lab.localize.checks import DEFAULT_BANDS
from heimdall_lab.localize.delay import _correlation, _Signal, estimate_delay
from heimdall_lab.receivers import Receiver

# ------------------------------------------------------------------------------ real data pin

#: The pairs of the DCF77 recordings, each with the search half-width the localization
#: used for it when the pin was taken (baseline / c + 0.2 ms margin + 5 ms extra). The
#: delays depend on it at the 10 ns level (it sets the chunk layout), so it is fixed here.
DCF77_SEARCH_S = {
    ("DF0KL", "F1JEK"): 0.008533092810295208,
    ("DF0KL", "HB9RYZ"): 0.007624422065911246,
    ("F1JEK", "HB9RYZ"): 0.007265789060700723,
}
#: The delays (s) before the correlation was made faster: every change since keeps them to
#: 1 ns.
DCF77_PINNED_DELAYS_S = {
    "envelope": {
        ("DF0KL", "F1JEK"): -0.001154182605128194,
        ("DF0KL", "HB9RYZ"): 0.0003410244437883105,
        ("F1JEK", "HB9RYZ"): 0.001485516252452074,
    },
    "complex": {
        ("DF0KL", "F1JEK"): -0.0012084686708962844,
        ("DF0KL", "HB9RYZ"): 0.0003172799610193181,
        ("F1JEK", "HB9RYZ"): 0.0015210932738768,
    },
}


@pytest.fixture(scope="module")
def dcf77_signals() -> dict:
    """The DCF77 recordings aligned, resampled and prepared as the localization does."""
    files = tutorial.dcf77_files()
    entries = []
    for f in files:
        name = parse_kiwi_wav_name(f)[0]
        rx = Receiver(name, "localhost", 8073, *tutorial.DCF77_POSITIONS[name])
        entries.append((rx, read_kiwi_wav(f), True))
    ds = build_dataset(entries, 77_500.0, 31.0, capture_id="dcf77-pin")
    _, tracks, _ = _dataset_tracks(ds, 1e-5, 2.0)
    rate = float(np.median([tr.rate for tr in tracks]))
    t0 = max(tr.t[0] for tr in tracks)
    t1 = min(tr.t[-1] for tr in tracks)
    grid = t0 + np.arange(math.floor((t1 - t0) * rate)) / rate
    resampled = {tr.timing.name: _resample(tr, grid, _carrier_offset(tr)) for tr in tracks}
    out: dict = {"rate": rate}
    for method in ("envelope", "complex"):
        band = DEFAULT_BANDS[method]
        out[method] = {
            name: _Signal(_prepare(y, valid, method, rate, band), valid)
            for name, (y, valid) in resampled.items()
        }
    return out


@pytest.mark.parametrize("method", ["envelope", "complex"])
def test_real_dcf77_delays_are_pinned_to_a_nanosecond(dcf77_signals, method):
    rate = dcf77_signals["rate"]
    signals = dcf77_signals[method]
    for (a, b), search_s in DCF77_SEARCH_S.items():
        est = _correlation(
            signals[a],
            signals[b],
            rate,
            coherent=method == "envelope",
            band=DEFAULT_BANDS[method],
            search_s=search_s,
            chunk_s=1.0,
        ).estimate
        pinned = DCF77_PINNED_DELAYS_S[method][(a, b)]
        assert abs(est.delay_s - pinned) < 1e-9, (method, a, b, est.delay_s, pinned)


# ------------------------------------------------------------------------------ synthetic pairs

FS = 12_000.0


def broadband(seconds: float, seed: int, high_hz: float = 3000.0) -> np.ndarray:
    """Complex noise band-limited to ``|f| <= high_hz``: signal in every slice of the band."""
    n = int(seconds * FS)
    rng = np.random.default_rng(seed)
    spec = np.fft.fft(rng.standard_normal(n) + 1j * rng.standard_normal(n))
    spec[np.abs(np.fft.fftfreq(n, 1 / FS)) > high_hz] = 0.0
    return np.fft.ifft(spec)


def delayed(s: np.ndarray, samples: float) -> np.ndarray:
    """``s`` delayed by a (fractional) number of samples: a pure delay, circularly."""
    f = np.fft.fftfreq(len(s))
    return np.fft.ifft(np.fft.fft(s) * np.exp(-2j * np.pi * f * samples))


def noise(like: np.ndarray, seed: int, relative: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rms = math.sqrt(float(np.mean(np.abs(like) ** 2)))
    z = rng.standard_normal(len(like)) + 1j * rng.standard_normal(len(like))
    return relative * rms * z / math.sqrt(2)


DELAY = 23.37  # samples


@pytest.fixture(scope="module")
def source() -> np.ndarray:
    return broadband(10.0, seed=1)


@pytest.mark.parametrize(("method", "tolerance"), [("complex", 0.05), ("envelope", 0.1)])
def test_subband_delays_of_a_pure_delay_all_agree_with_it(source, method, tolerance):
    x = delayed(source, DELAY) + noise(source, 2, 0.1)
    y = source + noise(source, 3, 0.1)
    est = estimate_delay(x, y, FS, method=method, max_delay_s=0.005, subbands=4)
    band = DEFAULT_BANDS[method]
    edges = np.linspace(band[0], band[1], 5)
    np.testing.assert_allclose(est.subband_bands_hz, np.stack([edges[:-1], edges[1:]], axis=1))
    assert est.subband_delays_s.shape == est.subband_sigmas_s.shape == (4,)
    assert np.all(np.isfinite(est.subband_delays_s))
    errors = est.subband_delays_s * FS - DELAY
    print(f"\n{method}: sub-band errors {np.round(errors, 4)} samples")
    assert np.all(np.abs(errors) < tolerance)
    assert np.all(est.subband_coefficients > 0.5)
    assert abs(est.delay_s * FS - DELAY) < tolerance


def test_subband_delays_spread_when_the_delay_depends_on_frequency(source):
    # A two-path channel at x: the direct path and, 200 us later, an echo at half the
    # amplitude. Its group delay falls from alpha * delta / (1 + alpha) at 0 Hz to below
    # zero near 2.5 kHz, so each slice of the band sees another delay.
    y = source + noise(source, 3, 0.1)
    pure = estimate_delay(
        delayed(source, DELAY) + noise(source, 2, 0.1),
        y,
        FS,
        method="complex",
        max_delay_s=0.005,
        subbands=4,
    )
    echo = delayed(source, DELAY) + 0.5 * delayed(source, DELAY + 2.4) + noise(source, 2, 0.1)
    est = estimate_delay(echo, y, FS, method="complex", max_delay_s=0.005, subbands=4)
    sub = est.subband_delays_s * FS - DELAY
    print(f"\nsub-band delays (samples after the direct path): {np.round(sub, 3)}")
    assert np.sum(np.isfinite(sub)) >= 3
    spread = np.nanmax(sub) - np.nanmin(sub)
    pure_spread = np.ptp(pure.subband_delays_s * FS)
    assert spread > 0.5
    assert spread > 20 * pure_spread
    # Lower slices see more of the echo (the delay falls with frequency).
    finite = sub[np.isfinite(sub)]
    assert finite[0] > finite[-1]


def test_subbands_can_be_given_and_are_checked(source):
    x = delayed(source, DELAY)
    est = estimate_delay(
        x,
        source,
        FS,
        method="complex",
        max_delay_s=0.005,
        subbands=[(0.0, 1500.0), (1500.0, 3000.0)],
    )
    np.testing.assert_allclose(est.subband_bands_hz, [[0.0, 1500.0], [1500.0, 3000.0]])
    assert np.all(np.abs(est.subband_delays_s * FS - DELAY) < 0.01)
    plain = estimate_delay(x, source, FS, method="complex", max_delay_s=0.005)
    assert len(plain.subband_delays_s) == 0 and math.isnan(plain.leading_edge_s)
    assert plain.delay_s == est.delay_s
    # A slice without signal: NaN.
    narrow = broadband(10.0, seed=4, high_hz=1000.0)
    est = estimate_delay(
        delayed(narrow, DELAY) + noise(narrow, 5, 0.1),
        narrow + noise(narrow, 6, 0.1),
        FS,
        method="complex",
        max_delay_s=0.005,
        subbands=[(0, 1000), (2000, 3000)],
    )
    assert math.isfinite(est.subband_delays_s[0]) and math.isnan(est.subband_delays_s[1])
    for bad in (-1, [(3000.0, 1000.0)], [(0.0, math.inf)], "x"):
        with pytest.raises(ValidationError):
            estimate_delay(x, source, FS, method="complex", subbands=bad)


# ------------------------------------------------------------------------------ earliest arrival


def test_leading_edge_of_a_pure_delay_is_the_delay(source):
    x = delayed(source, DELAY) + noise(source, 2, 0.1)
    y = source + noise(source, 3, 0.1)
    for method in ("complex", "envelope"):
        est = estimate_delay(x, y, FS, method=method, max_delay_s=0.005, leading_edge=True)
        assert abs(est.leading_edge_s * FS - DELAY) < 0.05, method


@pytest.mark.parametrize("echo_at", ["a", "b"])
def test_leading_edge_sees_through_a_later_echo_at_either_receiver(source, echo_at):
    # The direct path plus an echo at half the amplitude 8 samples (667 us, resolved by the
    # 3 kHz band) later, at the first receiver or at the second. An echo at the second puts
    # an *earlier* copy into the pair's cross-correlation; the earliest arrival must still be
    # the direct path. (An echo within about 1 / band of the direct path is not resolved:
    # it moves the leading edge about as much as the peak.)
    echo = 0.5 * delayed(source, 8.0)
    x = delayed(source, DELAY) + (delayed(echo, DELAY) if echo_at == "a" else 0.0)
    y = source + (echo if echo_at == "b" else 0.0)
    x = x + noise(source, 2, 0.1)
    y = y + noise(source, 3, 0.1)
    est = estimate_delay(x, y, FS, method="complex", max_delay_s=0.005, leading_edge=True)
    peak_error = est.delay_s * FS - DELAY
    edge_error = est.leading_edge_s * FS - DELAY
    print(f"\necho at {echo_at}: peak {peak_error:+.3f}, leading edge {edge_error:+.3f} samples")
    assert abs(edge_error) < abs(peak_error) / 5
    assert abs(edge_error) < 0.02
