"""The delay between two receivers.

Chunked cross-correlation with sub-sample refinement and its spread.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from scipy import fft as sfft
from scipy.signal import windows

from heimdall_lab.errors import ValidationError
from heimdall_lab.localize.align import _band_mask, _prepare
from heimdall_lab.localize.checks import Method, _check_band, _check_method
from heimdall_lab.localize.results import _GAP_GUARD_S, _PSR_WINDOW_S, _TAPER, DelayEstimate
from heimdall_lab.values import positive

log = logging.getLogger(__name__)


# ============================================================================================
# Pair delay


def _parabolic(ym: float, y0: float, yp: float) -> float:
    den = ym - 2.0 * y0 + yp
    if den >= 0 or not math.isfinite(den):
        return 0.0
    return float(np.clip(0.5 * (ym - yp) / den, -0.5, 0.5))


def _rows_dot(m: np.ndarray, v: np.ndarray) -> np.ndarray:
    # einsum, not BLAS: a complex matrix-vector product in a multithreaded BLAS is many
    # times slower here when the cores are busy.
    return np.einsum("kn,n->k", m, v)


def _newton(
    spec: np.ndarray, omega: np.ndarray, tau0: float, coherent: bool, iterations: int = 8
) -> float:
    """Maximise the band-limited correlation near ``tau0`` (samples).

    ``spec`` is (K, bins): ``c_k(tau) = sum spec_k e^{j omega tau}``. Coherent: maximise
    ``Re sum_k c_k``; else ``sum_k |c_k|``. Falls back to ``tau0`` if the iteration leaves
    +-1 sample of it.
    """
    tau = tau0
    for _ in range(iterations):
        e = np.exp(1j * omega * tau)
        oe = omega * e
        c = _rows_dot(spec, e)
        c1 = 1j * _rows_dot(spec, oe)
        c2 = -_rows_dot(spec, omega * oe)
        if coherent:
            f1 = float(np.sum(c1).real)
            f2 = float(np.sum(c2).real)
        else:
            mag = np.maximum(np.abs(c), 1e-300)
            g = (np.conj(c) * c1).real
            f1 = float(np.sum(g / mag))
            f2 = float(np.sum((np.abs(c1) ** 2 + (np.conj(c) * c2).real) / mag - g**2 / mag**3))
        if not (f2 < 0 and math.isfinite(f1)):
            break
        step = float(np.clip(-f1 / f2, -0.5, 0.5))
        tau += step
        if abs(tau - tau0) > 1.0:
            return tau0
        if abs(step) < 1e-6:
            break
    return tau


@dataclass
class _Signal:
    """A prepared signal on the common grid (envelope or complex), with its validity."""

    z: np.ndarray
    valid: np.ndarray


@dataclass
class _Chunks:
    """Band-limited spectra of chunks of ``x`` against ``y`` extended by ``w`` each side.

    ``spec[k]`` holds, for the in-band bins, ``X_k conj(Y_k) e^{-j omega w} / nfft``, so
    that chunk ``k``'s correlation is ``c_k(tau) = sum spec[k] e^{j omega tau}`` (``tau``
    in samples); ``pxx``/``pyy`` are the chunks' in-band periodograms of ``x`` and of ``y``
    over the same samples (``|X|^2 / nfft``).
    """

    spec: np.ndarray
    pxx: np.ndarray
    pyy: np.ndarray


def _chunk_spectra(
    x: np.ndarray,
    y: np.ndarray,
    starts: np.ndarray,
    length: int,
    w: int,
    nfft: int,
    mask: np.ndarray,
) -> _Chunks:
    omega = 2 * np.pi * sfft.fftfreq(nfft)[mask]
    shift = np.exp(-1j * omega * w) / nfft
    # Cosine tapers at the chunk's ends: a hard cut rings through the band limit and biases
    # the delay by up to a microsecond (1 s chunks, 1 kHz band); tapered, by nanoseconds.
    taper = windows.tukey(length, _TAPER)
    k_chunks, nb = len(starts), int(mask.sum())
    spec = np.zeros((k_chunks, nb), np.complex128)
    pxx = np.zeros((k_chunks, nb))
    pyy = np.zeros((k_chunks, nb))
    for k, s0 in enumerate(starts):
        fx = sfft.fft(x[s0 : s0 + length] * taper, nfft)[mask]
        fy = sfft.fft(y[s0 - w : s0 + length + w], nfft)[mask]
        fy_same = sfft.fft(y[s0 : s0 + length] * taper, nfft)[mask]
        spec[k] = fx * np.conj(fy) * shift
        pxx[k] = np.abs(fx) ** 2 / nfft
        pyy[k] = np.abs(fy_same) ** 2 / nfft
    return _Chunks(spec, pxx, pyy)


def _integer_curves(
    spec: np.ndarray, mask: np.ndarray, lags: np.ndarray, coherent: bool
) -> np.ndarray:
    """Correlation at integer ``lags`` of each row of in-band cross-spectra."""
    nfft = len(mask)
    full = np.zeros((spec.shape[0], nfft), np.complex128)
    full[:, mask] = spec
    r = sfft.ifft(full, axis=1) * nfft
    vals = r[:, lags % nfft]
    return vals.real if coherent else np.abs(vals)


def _peak(
    curve: np.ndarray,
    lags: np.ndarray,
    spec: np.ndarray,
    omega: np.ndarray,
    coherent: bool,
    around: int,
    reach: int,
    iterations: int = 8,
) -> float:
    """Sub-sample peak (samples) of a correlation near lag ``around`` (within ``reach``)."""
    idx = np.flatnonzero(np.abs(lags - around) <= reach)
    i = int(idx[np.argmax(curve[idx])])
    i = int(np.clip(i, 1, len(lags) - 2))
    tau0 = lags[i] + _parabolic(curve[i - 1], curve[i], curve[i + 1])
    return _newton(spec, omega, tau0, coherent, iterations)


def _value(spec: np.ndarray, omega: np.ndarray, tau: float, coherent: bool) -> float:
    e = np.exp(1j * omega * tau)
    c = _rows_dot(spec, e)
    return float(c.sum().real) if coherent else float(np.abs(c).sum())


@dataclass
class PairCorrelation:
    """A pair's correlation as the delay estimator searched it (see :func:`_correlation`).

    Attributes
    ----------
    lags_s : numpy.ndarray
        The lags searched, seconds (whole samples of the common grid); a positive lag means
        the first signal later.
    correlation : numpy.ndarray
        The chunk correlations (chunks of the first signal against the second) combined at
        those lags, coherently for the envelope and in magnitude for the complex signal,
        normalised like ``estimate.coefficient``: identical signals give 1 at their delay.
        The estimator takes the highest point within ``+-search_s`` as its coarse peak.
    fine_lags_s, fine_correlation : numpy.ndarray
        The same band-limited correlation evaluated exactly (its Fourier sum) every 1/16
        sample within +-2 samples of the delay: what the sub-sample refinement maximised.
        Empty when there is no peak.
    estimate : DelayEstimate
        What the estimator returned; ``estimate.delay_s`` is the half difference of the
        forward and backward peaks (module docstring), and ``estimate.coefficient`` the
        correlation above at that delay.
    """

    lags_s: np.ndarray
    correlation: np.ndarray
    fine_lags_s: np.ndarray
    fine_correlation: np.ndarray
    estimate: DelayEstimate


def _correlation(
    a: _Signal,
    b: _Signal,
    fs: float,
    *,
    coherent: bool,
    band: tuple[float, float],
    search_s: float,
    chunk_s: float,
    fine: bool = False,
) -> PairCorrelation:
    """Delay of ``a`` relative to ``b`` (both on the same grid), with the correlation searched.

    Chunks of one signal are correlated with the other extended on both sides, forwards
    (chunks of ``a``) and backwards (chunks of ``b``, shifted by the coarse delay). Cutting
    a chunk biases its peak by an amount that depends on the signal at the cut; the same
    samples are cut in both directions, so half the difference of the two delays cancels
    the bias. ``fine`` also evaluates the exact correlation around the delay (for display).
    """
    nan = float("nan")
    none = np.zeros(0)

    def failed(
        estimate: DelayEstimate, lags: np.ndarray = none, curve: np.ndarray = none
    ) -> PairCorrelation:
        return PairCorrelation(lags / fs, curve, none, none, estimate)

    n = len(a.z)
    w_search = math.ceil(search_s * fs) + 2
    w = w_search + 2
    za = np.where(a.valid, a.z, 0)
    zb = np.where(b.valid, b.z, 0)
    usable = n - 4 * w
    if usable < max(16, 4 * w_search):
        return failed(DelayEstimate(nan, nan, nan, nan, 0))
    length = round(chunk_s * fs)
    k_chunks = max(1, usable // max(length, 1))
    length = usable // k_chunks
    nfft = sfft.next_fast_len(2 * length + 2 * w)
    mask = _band_mask(nfft, fs, *band)
    if mask.sum() < 4:
        return failed(DelayEstimate(nan, nan, nan, nan, 0))
    omega = 2 * np.pi * sfft.fftfreq(nfft)[mask]
    lags = np.arange(-w_search, w_search + 1)
    starts = 2 * w + length * np.arange(k_chunks)
    # Chunks that reach a gap in either receiver (or the filter's ringing next to it) are
    # left out: a gap would correlate with nothing, or with the other receiver's gap.
    bad = ~(a.valid & b.valid)
    if bad.any():
        guard = 2 * w + round(_GAP_GUARD_S * fs)
        near_gap = np.convolve(bad.astype(np.float64), np.ones(2 * guard + 1), "same") > 0.5
        starts = np.array([s0 for s0 in starts if not near_gap[s0 : s0 + length].any()])
        k_chunks = len(starts)
        if k_chunks == 0:
            return failed(DelayEstimate(nan, nan, nan, nan, 0))
    fwd = _chunk_spectra(za, zb, starts, length, w, nfft, mask)
    curves_f = _integer_curves(fwd.spec, mask, lags, coherent)
    total_f = curves_f.sum(axis=0)
    if not np.any(total_f > 0):
        return failed(DelayEstimate(nan, nan, 0.0, nan, k_chunks), lags, total_f)
    m0 = int(lags[np.argmax(total_f)])
    bwd = _chunk_spectra(zb, za, starts - m0, length, w, nfft, mask)
    curves_b = _integer_curves(bwd.spec, mask, lags, coherent)
    reach = 3
    spec_f = fwd.spec.sum(axis=0, keepdims=True) if coherent else fwd.spec
    spec_b = bwd.spec.sum(axis=0, keepdims=True) if coherent else bwd.spec
    tau_f = _peak(total_f, lags, spec_f, omega, coherent, m0, reach)
    tau_b = _peak(curves_b.sum(axis=0), lags, spec_b, omega, coherent, -m0, reach)
    tau = 0.5 * (tau_f - tau_b)
    # Quality: the normalised correlation at the estimated delay.
    if coherent:
        denom = math.sqrt(max(fwd.pxx.sum() * fwd.pyy.sum(), 1e-300))
    else:
        denom = max(float(np.sum(np.sqrt(fwd.pxx.sum(axis=1) * fwd.pyy.sum(axis=1)))), 1e-300)
    coefficient = _value(spec_f, omega, tau, coherent) / denom
    chunk_delays = np.full(k_chunks, nan)
    for k in range(k_chunks):
        # Chunk delays only give the spread: three Newton steps are plenty.
        tf = _peak(curves_f[k], lags, fwd.spec[k : k + 1], omega, coherent, m0, w_search, 3)
        tb = _peak(curves_b[k], lags, bwd.spec[k : k + 1], omega, coherent, -m0, w_search, 3)
        chunk_delays[k] = 0.5 * (tf - tb) / fs
    psr = _psr(za, zb, fs, band, coherent, m0, w_search)
    estimate = DelayEstimate(
        tau / fs, _chunk_sigma(chunk_delays), coefficient, psr, k_chunks, chunk_delays
    )
    fine_lags = tau + np.arange(-32, 33) / 16 if fine else none
    fine_curve = np.array([_value(spec_f, omega, t, coherent) / denom for t in fine_lags])
    return PairCorrelation(lags / fs, total_f / denom, fine_lags / fs, fine_curve, estimate)


def _psr(
    za: np.ndarray,
    zb: np.ndarray,
    fs: float,
    band: tuple[float, float],
    coherent: bool,
    peak_lag: int,
    w_search: int,
) -> float:
    """Peak over the highest sidelobe of the whole-capture correlation, dB.

    Sidelobes are searched within +-0.5 s, outside twice the main lobe's half width.
    """
    n = len(za)
    window = max(w_search, int(min(_PSR_WINDOW_S * fs, n // 4)))
    nfft = sfft.next_fast_len(n + window + 1)
    mask = _band_mask(nfft, fs, *band)
    spec = np.zeros(nfft, np.complex128)
    spec[mask] = sfft.fft(za, nfft)[mask] * np.conj(sfft.fft(zb, nfft)[mask])
    r = sfft.ifft(spec)
    lags = np.arange(-window, window + 1)
    vals = r[lags % nfft]
    c = vals.real if coherent else np.abs(vals)
    near = np.flatnonzero(np.abs(lags - peak_lag) <= 3)
    p = int(near[np.argmax(c[near])])
    peak = c[p]
    if peak <= 0:
        return float("nan")
    half = 0.5 * peak
    lo = p
    while lo > 0 and c[lo] > half:
        lo -= 1
    hi = p
    while hi < len(c) - 1 and c[hi] > half:
        hi += 1
    width = max(hi - p, p - lo, 2)
    side = np.abs(lags - lags[p]) > 2 * width
    if not side.any():
        return float("nan")
    top = float(np.max(c[side]))
    if top <= 0:
        return float("inf")
    return float(20.0 * math.log10(peak / top))


def _chunk_sigma(d: np.ndarray) -> float:
    d = d[np.isfinite(d)]
    k = len(d)
    if k < 2:
        return float("nan")
    if k < 5:
        return float(np.std(d, ddof=1) / math.sqrt(k))
    mad = float(np.median(np.abs(d - np.median(d))))
    return 1.4826 * mad / math.sqrt(k)


def estimate_delay(
    x: np.ndarray,
    y: np.ndarray,
    sample_rate: float,
    *,
    method: Method = "envelope",
    band: tuple[float, float] | None = None,
    max_delay_s: float = 0.01,
    chunk_s: float = 1.0,
    valid_x: np.ndarray | None = None,
    valid_y: np.ndarray | None = None,
) -> DelayEstimate:
    """Delay between two complex baseband signals sampled on the same time grid.

    The same correlation :func:`locate_dataset` runs for each receiver pair (module
    docstring), without the GNSS alignment: ``x`` and ``y`` must already share one grid.

    Parameters
    ----------
    x, y : numpy.ndarray
        Complex (or real) 1-D signals of equal length, carrier near 0 Hz.
    sample_rate : float
        Grid rate, samples per second.
    method : {"envelope", "complex"}, default "envelope"
        Correlate the envelope ``|.|`` (mean removed) or the complex signal (mean removed;
        chunk correlations combined in magnitude).
    band : (float, float), optional
        ``(low_hz, high_hz)`` on ``|f|`` kept for the correlation (and, for the envelope,
        before taking the magnitude); :data:`DEFAULT_BANDS` by default.
    max_delay_s : float, default 0.01
        Search the peak within +-this.
    chunk_s : float, default 1.0
        Chunk length for the per-chunk estimates that give ``sigma_s``.
    valid_x, valid_y : numpy.ndarray of bool, optional
        Samples to use (default: the finite ones).

    Returns
    -------
    DelayEstimate
        ``delay_s`` positive when ``x`` receives later than ``y``; NaN when no peak.

    Raises
    ------
    ValidationError
        On arrays of different lengths or not 1-D, a bad rate, method or band.
    """
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim != 1 or y.ndim != 1 or len(x) != len(y):
        raise ValidationError("x and y must be 1-D arrays of the same length")
    fs = positive(sample_rate, "sample_rate")
    method = _check_method(method)
    lo_hi = _check_band(band, method, fs)
    max_delay = positive(max_delay_s, "max_delay_s")
    chunk = positive(chunk_s, "chunk_s")
    vx = np.isfinite(x) if valid_x is None else np.asarray(valid_x, bool) & np.isfinite(x)
    vy = np.isfinite(y) if valid_y is None else np.asarray(valid_y, bool) & np.isfinite(y)
    xs = _Signal(_prepare(np.where(vx, x, 0).astype(np.complex128), vx, method, fs, lo_hi), vx)
    ys = _Signal(_prepare(np.where(vy, y, 0).astype(np.complex128), vy, method, fs, lo_hi), vy)
    return _correlation(
        xs,
        ys,
        fs,
        coherent=method == "envelope",
        band=lo_hi,
        search_s=max_delay,
        chunk_s=chunk,
    ).estimate
