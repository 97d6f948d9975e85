"""The delay between two receivers.

Chunked cross-correlation with sub-sample refinement and its spread.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import fft as sfft
from scipy.signal import windows
from threadpoolctl import ThreadpoolController

from heimdall_lab.errors import ValidationError
from heimdall_lab.localize.align import _band_mask, _prepare
from heimdall_lab.localize.checks import Method, _check_band, _check_method
from heimdall_lab.localize.results import _GAP_GUARD_S, _PSR_WINDOW_S, _TAPER, DelayEstimate
from heimdall_lab.values import positive

log = logging.getLogger(__name__)


# ============================================================================================
# Pair delay

# Chunks transformed at once: bounds the temporary arrays of long captures.
_BLOCK = 32
# Threads of the transforms: one. More only pay on an idle machine; with the cores busy
# (other jobs, or pytest -n 2) the threads wait for each other and the locate takes longer.
_WORKERS = 1


@functools.cache
def _blas() -> ThreadpoolController:
    return ThreadpoolController()


def _one_blas_thread(fn):
    """Run ``fn`` with the BLAS on one thread.

    The correlations' matrix products are small: a second BLAS thread gains nothing on them,
    and it spins between calls on the core the next transform needs (measured: the same
    wall time for half again the CPU time).
    """

    @functools.wraps(fn)
    def run(*args, **kwargs):
        with _blas().limit(limits=1, user_api="blas"):
            return fn(*args, **kwargs)

    return run


@dataclass
class _Signal:
    """A prepared signal on the common grid (envelope or complex), with its validity.

    ``cache`` keeps what every pair of this signal reuses (the zero-filled samples in single
    precision, the whole-capture spectrum of the peak-to-sidelobe ratio); it is filled
    lazily and never changes the result.
    """

    z: np.ndarray
    valid: np.ndarray
    cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def real(self) -> bool:
        return not np.iscomplexobj(self.z)

    def filled(self) -> np.ndarray:
        """The samples, zero where invalid (double precision)."""
        out = self.cache.get("filled")
        if out is None:
            out = np.where(self.valid, self.z, 0)
            self.cache["filled"] = out
        return out

    def single(self) -> np.ndarray:
        """The zero-filled samples in single precision, for the chunk transforms."""
        out = self.cache.get("single")
        if out is None:
            out = self.filled().astype(np.float32 if self.real else np.complex64)
            self.cache["single"] = out
        return out


@dataclass(frozen=True)
class _Bins:
    """The in-band bins of an ``nfft``-point transform, in increasing frequency.

    ``index`` are their positions in the full transform, ``q`` their signed frequencies in
    bins and ``omega`` in radians per sample; ``half`` their positions in a real transform,
    ``neg`` whether the bin is a negative frequency (the conjugate of ``half``).
    """

    nfft: int
    index: np.ndarray
    q: np.ndarray
    omega: np.ndarray
    half: np.ndarray
    neg: np.ndarray

    @classmethod
    def of(cls, nfft: int, fs: float, band: tuple[float, float]) -> _Bins:
        return _bins(int(nfft), float(fs), (float(band[0]), float(band[1])))

    @classmethod
    def _make(cls, nfft: int, fs: float, band: tuple[float, float]) -> _Bins:
        mask = _band_mask(nfft, fs, *band)
        index = np.flatnonzero(mask)
        q = np.where(index > (nfft - 1) // 2, index - nfft, index)
        order = np.argsort(q, kind="stable")
        omega = 2 * np.pi * sfft.fftfreq(nfft)[mask]
        return cls(nfft, index[order], q[order], omega[order], np.abs(q[order]), q[order] < 0)

    def __len__(self) -> int:
        return len(self.index)

    def real_half(self) -> np.ndarray:
        """The bins a real inverse transform takes: non-negative frequencies and Nyquist."""
        return ~self.neg | (2 * self.half == self.nfft)

    def hz(self, fs: float) -> np.ndarray:
        """``|f|`` of each bin, Hz."""
        return np.abs(self.q) * (fs / self.nfft)

    def subset(self, keep: np.ndarray) -> _Bins:
        return _Bins(
            self.nfft,
            self.index[keep],
            self.q[keep],
            self.omega[keep],
            self.half[keep],
            self.neg[keep],
        )

    def phasors(self, tau: np.ndarray) -> np.ndarray:
        """``e^{j omega tau}`` for each ``tau`` (samples): (len(tau), bins).

        Each run of consecutive bins is an outer product of two short tables of complex
        exponentials (the same numbers to rounding, at a fraction of the cost).
        """
        tau = np.asarray(tau, np.float64)[:, None]
        out = np.empty((len(tau), len(self.q)), np.complex128)
        for start, n, coarse_q, fine_q in self._tables():
            coarse = np.exp(1j * coarse_q * tau)
            fine = np.exp(1j * fine_q * tau)
            out[:, start : start + n] = (coarse[:, :, None] * fine[:, None, :]).reshape(
                len(tau), -1
            )[:, :n]
        return out

    def _tables(self) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
        """Per run of consecutive bins: where it starts, its length, and its two tables.

        The tables are angular frequencies: the run's every ``m``-th bin, and ``0..m-1``
        bins, ``m`` about the square root of the run's length.
        """
        cached = self.__dict__.get("_runs")
        if cached is None:
            step = 2 * np.pi / self.nfft
            cuts = np.concatenate([[0], np.flatnonzero(np.diff(self.q) != 1) + 1, [len(self.q)]])
            cached = []
            for start, stop in itertools.pairwise(cuts):
                n = int(stop - start)
                first = int(self.q[start])
                m = max(1, math.isqrt(n))
                p = -(-n // m)
                coarse_q = step * (first + m * np.arange(p))
                cached.append((int(start), n, coarse_q, step * np.arange(m)))
            object.__setattr__(self, "_runs", cached)
        return cached


@functools.lru_cache(maxsize=16)
def _bins(nfft: int, fs: float, band: tuple[float, float]) -> _Bins:
    return _Bins._make(nfft, fs, band)


def _transform(
    z: np.ndarray, starts: np.ndarray, length: int, bins: _Bins, taper: np.ndarray | None
) -> np.ndarray:
    """In-band spectra (chunks x bins) of ``z[s0 : s0 + length]`` (times ``taper``).

    Single precision (``z`` is); a real ``z`` takes a real transform and the negative
    frequencies as conjugates.
    """
    real = not np.iscomplexobj(z)
    out = np.empty((len(starts), len(bins)), np.complex64)
    for k0 in range(0, len(starts), _BLOCK):
        seg = _segments(z, starts[k0 : k0 + _BLOCK], length)
        if taper is not None:
            seg = seg * taper
        if real:
            f = sfft.rfft(seg, bins.nfft, axis=1, workers=_WORKERS)[:, bins.half]
            f[:, bins.neg] = np.conj(f[:, bins.neg])
        else:
            f = sfft.fft(seg, bins.nfft, axis=1, workers=_WORKERS)[:, bins.index]
        out[k0 : k0 + _BLOCK] = f
    return out


def _segments(z: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """``z[s0 : s0 + length]`` for each start, as rows (a view when evenly spaced)."""
    if len(starts) > 1 and np.all(np.diff(starts) == starts[1] - starts[0]) and starts[1] > 0:
        step = int(starts[1] - starts[0])
        return np.lib.stride_tricks.as_strided(
            z[starts[0] :],
            shape=(len(starts), length),
            strides=(step * z.strides[0], z.strides[0]),
            writeable=False,
        )
    return z[starts[:, None] + np.arange(length)]


@dataclass
class _Chunks:
    """Band-limited spectra of chunks of ``x`` against ``y`` extended by ``w`` each side.

    ``spec[k]`` holds, for the in-band bins, ``X_k conj(Y_k) e^{-j omega w} / nfft``, so
    that chunk ``k``'s correlation is ``c_k(tau) = sum spec[k] e^{j omega tau}`` (``tau``
    in samples); ``pxx``/``pyy`` are the chunks' in-band periodograms of ``x`` and of ``y``
    over the same samples (``|X|^2 / nfft``), when asked for.
    """

    spec: np.ndarray
    pxx: np.ndarray | None = None
    pyy: np.ndarray | None = None


def _chunk_spectra(
    x: _Signal,
    y: _Signal,
    starts: np.ndarray,
    length: int,
    w: int,
    bins: _Bins,
    periodograms: bool,
) -> _Chunks:
    shift = np.exp(-1j * bins.omega * w) / bins.nfft
    # Cosine tapers at the chunk's ends: a hard cut rings through the band limit and biases
    # the delay by up to a microsecond (1 s chunks, 1 kHz band); tapered, by nanoseconds.
    taper = windows.tukey(length, _TAPER).astype(np.float32)
    xs, ys = x.single(), y.single()
    fx = _transform(xs, starts, length, bins, taper)
    fy = _transform(ys, starts - w, length + 2 * w, bins, None)
    spec = fx.astype(np.complex128) * np.conj(fy) * shift
    if not periodograms:
        return _Chunks(spec)
    fy_same = _transform(ys, starts, length, bins, taper)
    pxx = (fx.real.astype(np.float64) ** 2 + fx.imag.astype(np.float64) ** 2) / bins.nfft
    pyy = (fy_same.real.astype(np.float64) ** 2 + fy_same.imag.astype(np.float64) ** 2) / bins.nfft
    return _Chunks(spec, pxx, pyy)


def _integer_curves(spec: np.ndarray, bins: _Bins, lags: np.ndarray, coherent: bool, real: bool):
    """Correlation at integer ``lags`` of each row of in-band cross-spectra.

    ``real``: the spectra are those of real signals (conjugate-symmetric), so a real inverse
    transform of the non-negative frequencies gives the correlation.
    """
    nfft = bins.nfft
    out = np.empty((spec.shape[0], len(lags)))
    at = lags % nfft
    pos = bins.real_half()
    for k0 in range(0, spec.shape[0], _BLOCK):
        rows = spec[k0 : k0 + _BLOCK]
        if real:
            half = np.zeros((len(rows), nfft // 2 + 1), np.complex64)
            half[:, bins.half[pos]] = rows[:, pos]
            vals = sfft.irfft(half, nfft, axis=1, workers=_WORKERS)[:, at] * nfft
            out[k0 : k0 + _BLOCK] = vals if coherent else np.abs(vals)
        else:
            full = np.zeros((len(rows), nfft), np.complex64)
            full[:, bins.index] = rows
            vals = sfft.ifft(full, axis=1, workers=_WORKERS)[:, at] * nfft
            out[k0 : k0 + _BLOCK] = vals.real if coherent else np.abs(vals)
    return out


def _parabolic(ym: np.ndarray, y0: np.ndarray, yp: np.ndarray) -> np.ndarray:
    den = ym - 2.0 * y0 + yp
    ok = (den < 0) & np.isfinite(den)
    with np.errstate(divide="ignore", invalid="ignore"):
        off = np.clip(0.5 * (ym - yp) / np.where(ok, den, -1.0), -0.5, 0.5)
    return np.where(ok, off, 0.0)


def _newton(
    spec: np.ndarray,
    bins: _Bins,
    tau0: np.ndarray,
    coherent: bool,
    iterations: int = 8,
    failed: np.ndarray | None = None,
    max_step: float = 0.5,
    leash: float = 1.0,
) -> np.ndarray:
    """Maximise band-limited correlations near ``tau0`` (samples), one per group.

    ``spec`` is (groups, K, bins): ``c_gk(tau) = sum spec_gk e^{j omega tau}``. Coherent:
    maximise ``Re sum_k c_gk``; else ``sum_k |c_gk|``. Steps are at most ``max_step``; a
    group whose iteration leaves ``+-leash`` samples of its start falls back to ``tau0``;
    ``failed``, if given, is set where that happened or where the start was not on a peak
    (not concave).
    """
    omega = bins.omega
    n_groups, k = spec.shape[:2]
    # c and its first two derivatives are sums of spec (j omega)^p e^{j omega tau}, p = 0..2:
    # with one row per group the spectra are weighted once, else the phasors each time.
    weighted = None
    if k == 1:
        weighted = np.empty((n_groups, 3, len(omega)), np.complex128)
        weighted[:, 0] = spec[:, 0]
        np.multiply(weighted[:, 0], omega, out=weighted[:, 1])
        np.multiply(weighted[:, 1], omega, out=weighted[:, 2])
    tau0 = np.asarray(tau0, np.float64)
    tau = tau0.copy()
    active = np.ones(n_groups, bool)
    if failed is not None:
        failed[:] = False
    for it in range(iterations):
        if not active.any():
            break
        e = bins.phasors(tau)
        if weighted is not None:
            prod = np.matmul(weighted, e[:, :, None])[:, None, :, 0]
        else:
            ew = np.empty((n_groups, 3, len(omega)), np.complex128)
            ew[:, 0] = e
            np.multiply(ew[:, 0], omega, out=ew[:, 1])
            np.multiply(ew[:, 1], omega, out=ew[:, 2])
            prod = np.matmul(spec, ew.transpose(0, 2, 1))
        c, c1, c2 = prod[..., 0], 1j * prod[..., 1], -prod[..., 2]
        if coherent:
            f1 = c1.sum(axis=1).real
            f2 = c2.sum(axis=1).real
        else:
            mag = np.maximum(np.abs(c), 1e-300)
            gg = (np.conj(c) * c1).real
            f1 = np.sum(gg / mag, axis=1)
            f2 = np.sum((np.abs(c1) ** 2 + (np.conj(c) * c2).real) / mag - gg**2 / mag**3, axis=1)
        ok = active & (f2 < 0) & np.isfinite(f1)
        active &= ok
        with np.errstate(divide="ignore", invalid="ignore"):
            step = np.where(ok, np.clip(-f1 / np.where(ok, f2, -1.0), -max_step, max_step), 0.0)
        tau += step
        away = ok & (np.abs(tau - tau0) > leash)
        tau[away] = tau0[away]
        if failed is not None:
            failed |= away | (~ok if it == 0 else False)
        active &= ~away & (np.abs(step) >= 1e-6)
    return tau


def _peaks(
    curves: np.ndarray,
    lags: np.ndarray,
    spec: np.ndarray,
    bins: _Bins,
    coherent: bool,
    around: int,
    reach: int,
    iterations: int = 8,
) -> np.ndarray:
    """Sub-sample peak (samples) of each correlation near lag ``around`` (within ``reach``).

    ``curves`` (groups x lags) at integer lags, ``spec`` (groups, K, bins) their spectra.
    """
    near = np.abs(lags - around) <= reach
    i = np.argmax(np.where(near, curves, -np.inf), axis=1)
    i = np.clip(i, 1, len(lags) - 2)
    g = np.arange(len(curves))
    tau0 = lags[i] + _parabolic(curves[g, i - 1], curves[g, i], curves[g, i + 1])
    out = np.empty(len(tau0))
    for g0 in range(0, len(tau0), _BLOCK):
        sl = slice(g0, g0 + _BLOCK)
        out[sl] = _newton(spec[sl], bins, tau0[sl], coherent, iterations)
    return out


def _values(spec: np.ndarray, bins: _Bins, taus: np.ndarray, coherent: bool) -> np.ndarray:
    """The combined correlation ``spec`` (K x bins) at each of ``taus`` (samples)."""
    c = bins.phasors(taus) @ spec.T
    return c.sum(axis=1).real if coherent else np.abs(c).sum(axis=1)


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


def _near_gap(bad: np.ndarray, guard: int) -> np.ndarray:
    """Whether each sample lies within ``guard`` samples of a ``bad`` one."""
    c = np.concatenate([[0], np.cumsum(bad, dtype=np.int64)])
    i = np.arange(len(bad))
    return c[np.minimum(i + guard + 1, len(bad))] - c[np.maximum(i - guard, 0)] > 0


@_one_blas_thread
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
    subbands: int | Sequence[tuple[float, float]] = 0,
    leading_edge: bool = False,
) -> PairCorrelation:
    """Delay of ``a`` relative to ``b`` (both on the same grid), with the correlation searched.

    Chunks of one signal are correlated with the other extended on both sides, forwards
    (chunks of ``a``) and backwards (chunks of ``b``, shifted by the coarse delay). Cutting
    a chunk biases its peak by an amount that depends on the signal at the cut; the same
    samples are cut in both directions, so half the difference of the two delays cancels
    the bias. ``fine`` also evaluates the exact correlation around the delay (for display).

    ``subbands`` (a count ``K`` of equal slices of ``band``, or the slices as ``(low_hz,
    high_hz)`` pairs) also measures the delay in each slice from the same chunk spectra
    (:func:`_subband_delays`); ``leading_edge`` also gives the earliest-arrival delay
    (:func:`_leading_edge`).
    """
    nan = float("nan")
    none = np.zeros(0)
    edges = _subband_edges(band, subbands) if _subband_count(subbands) else None

    def failed(
        estimate: DelayEstimate, lags: np.ndarray = none, curve: np.ndarray = none
    ) -> PairCorrelation:
        if edges is not None:
            estimate.subband_bands_hz = edges
            estimate.subband_delays_s = np.full(len(edges), nan)
            estimate.subband_sigmas_s = np.full(len(edges), nan)
            estimate.subband_coefficients = np.full(len(edges), nan)
        return PairCorrelation(lags / fs, curve, none, none, estimate)

    n = len(a.z)
    w_search = math.ceil(search_s * fs) + 2
    w = w_search + 2
    usable = n - 4 * w
    if usable < max(16, 4 * w_search):
        return failed(DelayEstimate(nan, nan, nan, nan, 0))
    length = round(chunk_s * fs)
    k_chunks = max(1, usable // max(length, 1))
    length = usable // k_chunks
    nfft = sfft.next_fast_len(2 * length + 2 * w)
    bins = _Bins.of(nfft, fs, band)
    if len(bins) < 4:
        return failed(DelayEstimate(nan, nan, nan, nan, 0))
    real = a.real and b.real
    lags = np.arange(-w_search, w_search + 1)
    starts = 2 * w + length * np.arange(k_chunks)
    # Chunks that reach a gap in either receiver (or the filter's ringing next to it) are
    # left out: a gap would correlate with nothing, or with the other receiver's gap.
    bad = ~(a.valid & b.valid)
    if bad.any():
        guard = 2 * w + round(_GAP_GUARD_S * fs)
        near_gap = np.concatenate([[0], np.cumsum(_near_gap(bad, guard), dtype=np.int64)])
        starts = starts[near_gap[starts + length] - near_gap[starts] == 0]
        k_chunks = len(starts)
        if k_chunks == 0:
            return failed(DelayEstimate(nan, nan, nan, nan, 0))
    fwd = _chunk_spectra(a, b, starts, length, w, bins, periodograms=True)
    curves_f = _integer_curves(fwd.spec, bins, lags, coherent, real)
    total_f = curves_f.sum(axis=0)
    if not np.any(total_f > 0):
        return failed(DelayEstimate(nan, nan, 0.0, nan, k_chunks), lags, total_f)
    m0 = int(lags[np.argmax(total_f)])
    bwd = _chunk_spectra(b, a, starts - m0, length, w, bins, periodograms=False)
    curves_b = _integer_curves(bwd.spec, bins, lags, coherent, real)
    reach = 3
    spec_f = fwd.spec.sum(axis=0, keepdims=True) if coherent else fwd.spec
    spec_b = bwd.spec.sum(axis=0, keepdims=True) if coherent else bwd.spec
    tau_f = _peaks(total_f[None], lags, spec_f[None], bins, coherent, m0, reach)[0]
    total_b = curves_b.sum(axis=0)
    tau_b = _peaks(total_b[None], lags, spec_b[None], bins, coherent, -m0, reach)[0]
    tau = 0.5 * (tau_f - tau_b)
    # Quality: the normalised correlation at the estimated delay.
    if coherent:
        denom = math.sqrt(max(fwd.pxx.sum() * fwd.pyy.sum(), 1e-300))
    else:
        denom = max(float(np.sum(np.sqrt(fwd.pxx.sum(axis=1) * fwd.pyy.sum(axis=1)))), 1e-300)
    coefficient = float(_values(spec_f, bins, np.array([tau]), coherent)[0]) / denom
    # Chunk delays only give the spread: three Newton steps are plenty.
    tf = _peaks(curves_f, lags, fwd.spec[:, None], bins, coherent, m0, w_search, 3)
    tb = _peaks(curves_b, lags, bwd.spec[:, None], bins, coherent, -m0, w_search, 3)
    chunk_delays = 0.5 * (tf - tb) / fs
    psr = _psr(a, b, fs, band, coherent, m0, w_search)
    estimate = DelayEstimate(
        tau / fs, _chunk_sigma(chunk_delays), coefficient, psr, k_chunks, chunk_delays
    )
    if leading_edge:
        le_f = _leading_edge(fwd.spec, fwd.pyy, bins, fs, coherent, real, tau_f)
        le_b = _leading_edge(bwd.spec, fwd.pxx, bins, fs, coherent, real, tau_b)
        estimate.leading_edge_s = 0.5 * (le_f - le_b) / fs
    if edges is not None:
        sub = _subband_delays(fwd, bwd, bins, fs, edges, coherent, tau_f, tau_b, w_search)
        estimate.subband_bands_hz = edges
        estimate.subband_delays_s, estimate.subband_sigmas_s, estimate.subband_coefficients = sub
    fine_lags = tau + np.arange(-32, 33) / 16 if fine else none
    fine_curve = _values(spec_f, bins, fine_lags, coherent) / denom if fine else none
    return PairCorrelation(lags / fs, total_f / denom, fine_lags / fs, fine_curve, estimate)


def _psr(
    a: _Signal,
    b: _Signal,
    fs: float,
    band: tuple[float, float],
    coherent: bool,
    peak_lag: int,
    w_search: int,
) -> float:
    """Peak over the highest sidelobe of the whole-capture correlation, dB.

    Sidelobes are searched within +-0.5 s, outside twice the main lobe's half width. Each
    signal's in-band spectrum is kept (``_Signal.cache``), so a signal in many pairs is
    transformed once.
    """
    n = len(a.z)
    window = max(w_search, int(min(_PSR_WINDOW_S * fs, n // 4)))
    nfft = sfft.next_fast_len(n + window + 1)
    real = a.real and b.real
    key = ("psr", nfft, band, real)
    spectra = []
    for s in (a, b):
        cached = s.cache.get(key)
        if cached is None:
            bins = _Bins.of(nfft, fs, band)
            if real:
                pos = bins.half[bins.real_half()]
                cached = (pos, sfft.rfft(s.single(), nfft, workers=_WORKERS)[pos])
            else:
                cached = (bins.index, sfft.fft(s.single(), nfft, workers=_WORKERS)[bins.index])
            s.cache[key] = cached
        spectra.append(cached)
    (at, fa), (_, fb) = spectra
    lags = np.arange(-window, window + 1)
    if real:
        half = np.zeros(nfft // 2 + 1, np.complex64)
        half[at] = fa * np.conj(fb)
        vals = sfft.irfft(half, nfft, workers=_WORKERS)[lags % nfft].astype(np.float64)
        c = vals if coherent else np.abs(vals)
    else:
        spec = np.zeros(nfft, np.complex64)
        spec[at] = fa * np.conj(fb)
        vals = sfft.ifft(spec, workers=_WORKERS)[lags % nfft].astype(np.complex128)
        c = vals.real if coherent else np.abs(vals)
    near = np.flatnonzero(np.abs(lags - peak_lag) <= 3)
    p = int(near[np.argmax(c[near])])
    peak = c[p]
    if peak <= 0:
        return float("nan")
    half_peak = 0.5 * peak
    below = np.flatnonzero(c[: p + 1] <= half_peak)
    lo = int(below[-1]) if len(below) else 0
    below = np.flatnonzero(c[p:] <= half_peak)
    hi = p + int(below[0]) if len(below) else len(c) - 1
    width = max(hi - p, p - lo, 2)
    side = np.abs(lags - lags[p]) > 2 * width
    if not side.any():
        return float("nan")
    top = float(np.max(c[side]))
    if top <= 0:
        return float("inf")
    return float(20.0 * math.log10(peak / top))


# ============================================================================================
# Earliest arrival

#: The leading edge is where the relative impulse response first reaches this fraction of
#: its peak.
LEADING_EDGE_FRACTION = 0.5
#: Regularisation of the reference's spectrum in the deconvolution, as a fraction of its
#: mean over the band.
_DECONVOLUTION_FLOOR = 0.1


def _crossing(
    spec: np.ndarray, bins: _Bins, coherent: bool, level: float, lo: float, hi: float
) -> float:
    """Where the combined correlation ``spec`` crosses ``level``, samples, by bisection.

    ``lo`` is below the level, ``hi`` above it.
    """
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        if _values(spec, bins, np.array([mid]), coherent)[0] < level:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-5:
            break
    return 0.5 * (lo + hi)


def _leading_edge(
    spec: np.ndarray,
    reference: np.ndarray,
    bins: _Bins,
    fs: float,
    coherent: bool,
    real: bool,
    around: float,
) -> float:
    """The earliest arrival (samples) in chunk cross-spectra ``spec`` against a reference.

    A pair's cross-correlation is the transmitted signal's autocorrelation convolved with
    the first receiver's channel and the time-reversed channel of the second: an echo at
    the first receiver adds a later copy, an echo at the second an *earlier* one, so the
    first rise of the correlation is not the first arrival. Dividing the cross-spectrum by
    the reference's own spectrum (``reference``, its chunk periodograms) instead estimates
    the first channel relative to the second, ``H_a / H_b``: when the reference's direct
    path is its strongest (a minimum-phase channel), every echo of either receiver then
    lies *after* the direct-path delay. That relative impulse response, band-limited by a
    Hann window over the band (low sidelobes: a sidelobe must not pass for an earlier
    arrival) and with the division regularised (``_DECONVOLUTION_FLOOR``), is searched for
    its peak near ``around``; the leading edge is where it first reaches
    ``LEADING_EDGE_FRACTION`` of that peak, moved on by the distance from peak to that level
    in the response a pure delay would give: the same spectral magnitudes without a phase.
    (Not the reference's periodogram: its noise, which the cross-spectrum lacks, would make
    that response sharper than the common signal can.) Chunks combine as in the correlation
    (coherently, or in magnitude). NaN when no peak or no crossing is found.

    What it can and cannot do: an echo resolved by the band (later than about ``1 / band``)
    leaves the leading edge at the direct path, whichever receiver it is at; an echo much
    closer shifts the leading edge about as much as the peak (to first order every location
    estimate of an unresolved lobe moves alike); in between, the channels' magnitude ripple
    in that reference response widens it and the leading edge can be later than the peak.
    """
    nan = float("nan")
    power = reference.mean(axis=0)
    hz = bins.hz(fs)
    window = 0.5 * (1.0 + np.cos(np.pi * hz / max(float(hz.max()), 1e-9)))
    gain = window / (power + _DECONVOLUTION_FLOOR * max(float(power.mean()), 1e-300))
    response = spec * gain
    # What a pure delay would give: the same magnitudes, no phase slope. (Not the
    # reference's own periodogram: its noise, absent from the cross-spectrum, would make a
    # sharper response than the common signal can.)
    kernel = np.abs(spec) * gain
    comb = response.sum(axis=0, keepdims=True) if coherent else response
    kern = kernel.sum(axis=0, keepdims=True) if coherent else kernel
    # The pure-delay response: its peak at 0, its crossing at -offset.
    k0 = float(_values(kern, bins, np.array([0.0]), coherent)[0])
    if not k0 > 0:
        return nan
    level = LEADING_EDGE_FRACTION * k0
    lags = -np.arange(64 + 8 * math.ceil(bins.nfft / len(bins)))
    vals = _integer_curves(kern, bins, lags, coherent, real).sum(axis=0)
    below = np.flatnonzero(vals < level)
    if len(below) == 0 or below[0] == 0:
        return nan
    j = int(below[0])
    offset = -_crossing(kern, bins, coherent, level, float(lags[j]), float(lags[j - 1]))
    # The response near ``around``: its peak, within twice the pure-delay width at the level.
    reach = max(2, math.ceil(2 * offset) + 1)
    centre = round(around)
    lags = np.arange(centre - reach - math.ceil(4 * offset) - 4, centre + reach + 1)
    curve = _integer_curves(response, bins, lags, coherent, real).sum(axis=0)
    near = np.abs(lags - centre) <= reach
    i = int(np.flatnonzero(near)[np.argmax(curve[near])])
    fine = lags[i] + np.arange(-8, 9) / 8.0
    fvals = _values(comb, bins, fine, coherent)
    peak = float(np.max(fvals))
    if not peak > 0:
        return nan
    level = LEADING_EDGE_FRACTION * peak
    # Walk left from the peak to the first whole lag under the level, then bisect.
    left = np.flatnonzero(curve[: i + 1] < level)
    if len(left) == 0:
        return nan
    m = int(left[-1])
    return _crossing(comb, bins, coherent, level, float(lags[m]), float(lags[m + 1])) + offset


# ============================================================================================
# Sub-band delays

#: A slice whose normalised correlation at its delay is lower has too little signal.
SUBBAND_MIN_COEFFICIENT = 0.05


def _subband_count(subbands: int | Sequence[tuple[float, float]] | None) -> int:
    if subbands is None or isinstance(subbands, bool):
        return 0
    if isinstance(subbands, int | np.integer):
        if subbands < 0:
            raise ValidationError(
                f"subbands must be a count >= 0 or (low, high) pairs, got {subbands}"
            )
        return int(subbands)
    return len(subbands)


def _subband_edges(
    band: tuple[float, float], subbands: int | Sequence[tuple[float, float]]
) -> np.ndarray:
    """The slices, ``(K, 2)``: ``K`` equal slices of ``band``, or the pairs given."""
    if isinstance(subbands, int | np.integer):
        e = np.linspace(band[0], band[1], int(subbands) + 1)
        return np.stack([e[:-1], e[1:]], axis=1)
    try:
        edges = np.asarray(subbands, dtype=np.float64).reshape(-1, 2)
    except (TypeError, ValueError) as exc:
        raise ValidationError(
            f"subbands must be (low_hz, high_hz) pairs, got {subbands!r}"
        ) from exc
    if not (
        np.all(np.isfinite(edges))
        and np.all(edges[:, 0] >= 0)
        and np.all(edges[:, 1] > edges[:, 0])
    ):
        raise ValidationError(f"each sub-band must satisfy 0 <= low < high (Hz), got {subbands!r}")
    return edges


def _local_peak(spec: np.ndarray, bins: _Bins, center: float, half: float, coherent: bool) -> float:
    """The peak (samples) of the combined correlation ``spec`` nearest ``center``.

    Newton steps from ``center`` when it lies on the peak (concave there, and the peak
    within a sample); else the highest of 9 points within ``+-half`` samples, narrowed by
    grids of 5 points a quarter as far apart, then Newton steps. NaN when the highest point
    of the first grid is at its edge (no peak within reach).
    """
    failed = np.zeros(1, bool)
    scale = dict(max_step=max(0.5, half / 8.0), leash=max(1.0, half / 2.0))
    tau = float(_newton(spec[None], bins, np.array([center]), coherent, 5, failed, **scale)[0])
    if not failed[0]:
        return tau
    step = half / 4.0
    taus = center + step * np.arange(-4, 5)
    vals = _values(spec, bins, taus, coherent)
    i = int(np.argmax(vals))
    if i in (0, len(taus) - 1) or not np.isfinite(vals[i]):
        return float("nan")
    while step > 0.5:
        step /= 4.0
        taus = taus[i] + step * np.arange(-2, 3)
        vals = _values(spec, bins, taus, coherent)
        i = int(np.clip(np.argmax(vals), 1, len(taus) - 2))
    tau0 = taus[i] + float(_parabolic(vals[i - 1], vals[i], vals[i + 1])) * step
    return float(_newton(spec[None], bins, np.array([tau0]), coherent, 5, **scale)[0])


def _subband_delays(
    fwd: _Chunks,
    bwd: _Chunks,
    bins: _Bins,
    fs: float,
    edges: np.ndarray,
    coherent: bool,
    tau_f: float,
    tau_b: float,
    w_search: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each slice's delay (s), standard error (s) and normalised correlation.

    The chunk spectra are those of the whole band, only the bins differ. In a slice
    ``[lo, hi]`` the correlation oscillates at about the slice's centre frequency ``fc``
    (twice that in magnitude), so its delay is the peak nearest the whole band's, forwards
    and backwards as for the whole band, searched within half a period (``1 / (2 fc)``
    coherently, ``1 / (4 fc)`` in magnitude): further away the slice cannot tell which
    period is the right one. A slice gives NaN with fewer than 4 bins, no peak in reach, or
    a normalised correlation under :data:`SUBBAND_MIN_COEFFICIENT`. The standard error is
    the spread of the chunks' own peaks in the slice (started at the slice's delay).
    """
    n_sub = len(edges)
    delays = np.full(n_sub, np.nan)
    sigmas = np.full(n_sub, np.nan)
    coefs = np.full(n_sub, np.nan)
    f_hz = bins.hz(fs)
    top = float(np.max(edges[:, 1]))
    for k, (lo, hi) in enumerate(edges):
        m = (f_hz >= lo) & ((f_hz < hi) | ((f_hz <= hi) & (hi >= top)))
        if m.sum() < 4:
            continue
        sb = bins.subset(m)
        sf = np.ascontiguousarray(fwd.spec[:, m])
        sbk = np.ascontiguousarray(bwd.spec[:, m])
        comb_f = sf.sum(axis=0, keepdims=True) if coherent else sf
        comb_b = sbk.sum(axis=0, keepdims=True) if coherent else sbk
        fc = max(0.5 * (lo + hi), 1e-9)
        half = min((0.5 if coherent else 0.25) / fc * fs, float(w_search))
        tf = _local_peak(comb_f, sb, tau_f, half, coherent)
        tb = _local_peak(comb_b, sb, tau_b, half, coherent)
        if not (math.isfinite(tf) and math.isfinite(tb)):
            continue
        pxx, pyy = fwd.pxx[:, m], fwd.pyy[:, m]
        if coherent:
            denom = math.sqrt(max(pxx.sum() * pyy.sum(), 1e-300))
        else:
            denom = max(float(np.sum(np.sqrt(pxx.sum(axis=1) * pyy.sum(axis=1)))), 1e-300)
        tau = 0.5 * (tf - tb)
        coef = float(_values(comb_f, sb, np.array([tau]), coherent)[0]) / denom
        coefs[k] = coef
        if not coef >= SUBBAND_MIN_COEFFICIENT:
            continue
        delays[k] = tau / fs
        bad_f = np.zeros(len(sf), bool)
        bad_b = np.zeros(len(sf), bool)
        scale = dict(max_step=max(0.5, half / 8.0), leash=max(1.0, half / 2.0))
        cf = _newton(sf[:, None], sb, np.full(len(sf), tf), coherent, 2, bad_f, **scale)
        cb = _newton(sbk[:, None], sb, np.full(len(sf), tb), coherent, 2, bad_b, **scale)
        chunk = np.where(bad_f | bad_b, np.nan, 0.5 * (cf - cb) / fs)
        sigmas[k] = _chunk_sigma(chunk)
    return delays, sigmas, coefs


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
    subbands: int | Sequence[tuple[float, float]] = 0,
    leading_edge: bool = False,
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
    subbands : int or sequence of (float, float), default 0
        Also measure the delay in slices of ``band``: ``K`` equal slices (4 is a good
        choice), or the slices as ``(low_hz, high_hz)`` pairs; the estimate's
        ``subband_*`` fields hold them (a slice with too little signal gives NaN). A single
        path delays every slice alike; several paths or a receiver's filter do not.
    leading_edge : bool, default False
        Also give the earliest-arrival delay, ``leading_edge_s`` (:func:`_leading_edge`).

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
        subbands=subbands,
        leading_edge=leading_edge,
    ).estimate
