"""Signal metrics of IQ captures: PSD, noise floor, signal power, SNR, C/N0, frequency offset.

Pure functions, arrays in and numbers out: no I/O and no logging. They work on one receiver
(a 1-D complex array and its sample rate, :func:`psd` and :func:`measure`) and on a capture
Dataset with a ``receiver`` dimension (:func:`measure_dataset`), numpy- or dask-backed.

Conventions
-----------
* Samples are complex baseband IQ scaled to full scale 1.0 (int16 32768 = 1.0).
* dBFS is ``10*log10(power)`` with power the mean of ``|x|**2``: a full-scale complex
  sinusoid (``|x| = 1``) is 0 dBFS. Densities are in dBFS/Hz.
* dBm = dBFS + ``calibration_db``, the receiver's calibration offset. Without one (``None``
  or NaN) every ``*_dbm`` figure is NaN: nothing is ever labelled dBm that is not calibrated.
* Frequencies are offsets from the tuned centre frequency, in Hz, in ``[-fs/2, fs/2)``.

Method
------
PSD
    Welch's average of Hann-windowed (periodic Hann), 50 %-overlapping segments of
    ``nperseg`` samples (a power of two), two-sided, no detrending, scaled as a density, in
    natural frequency order. It is numerically the same estimate as
    ``scipy.signal.welch(x, fs, window="hann", nperseg=nperseg, detrend=False,
    return_onesided=False, scaling="density")`` after ``fftshift``, computed with one batched
    single-precision FFT. Detrending is off on purpose: scipy's default removes each
    segment's mean, which deletes a carrier sitting at the tuned frequency (0 Hz).
Noise density N0
    For white Gaussian noise each Welch bin is ``N0`` times a weighted sum of ``K``
    unit exponentials (``K`` segments; the weights are the eigenvalues of the segments'
    correlation, ``rho = 1/6`` between neighbours for Hann at 50 % overlap), which is close
    to ``chi2(nu) / nu`` with ``nu = 2 K**2 / (K + 2 (K - 1) rho**2)``, about ``1.89 K``,
    equivalent degrees of freedom (Welch 1967). ``N0`` is the median of the bins divided by
    that distribution's median-to-mean ratio (saddlepoint approximation; within 0.01 dB of
    ``chi2.median(nu) / nu``, which is 0.2 dB below 1 at ``K = 8``), removing the median's
    bias. The median ignores the few bins a narrowband emission occupies; when a signal is
    detected the estimate is taken again over the bins outside its band. Only usable bins
    count: those in ``noise_band`` if given, and never those of the receiver's filter
    roll-off and stopband: runs of bins at either edge whose level (median-smoothed over 9
    bins) is more than 6 dB under the median of the central half, e.g. the int16
    quantisation floor outside a KiwiSDR's +-3 kHz IQ passband, or a soft 10 dB filter
    skirt; and any bin more than 30 dB under the median of the rest. Limits: the noise is
    taken as white over those bins (on a sloping floor the median level is used, and floor
    above it near the emission counts as signal), and emissions must cover well under half
    of them.
Signal power C
    The sum of ``(PSD - N0) * df`` over the signal band: the bins around the strongest PSD
    peak that stand above the noise (per-bin false-alarm probability 1e-3; gaps of up to
    two bins are bridged) widened by three bins on each side for the window's main lobe,
    or the bins of a given ``band``. So C is the emission's power with the noise in its band
    subtracted.
SNR and C/N0
    ``cn0_dbhz = 10 log10(C / N0)`` (dB-Hz) does not depend on any bandwidth.
    ``snr_db = 10 log10(C / (N0 * B))`` is the ratio of the signal power to the noise power
    in the bandwidth ``B = snr_bandwidth_hz``, reported with every result, and
    ``snr_db = cn0_dbhz - 10 log10(B)`` always. By default (``"occupied"``) ``B`` is the
    emission's own 99 % occupied bandwidth, at least one PSD bin's equivalent noise
    bandwidth (and the signal band's width where no occupied bandwidth can be measured,
    ``C <= 0``): the SNR one reads off a spectrum display, give or take the window's few
    bins for an unmodulated carrier. It then depends on the measured bandwidth, which is
    noisy for a weak emission: to compare receivers, or for weak narrowband emissions, use
    ``cn0_dbhz`` or a fixed reference bandwidth (a number, or ``"full"`` for the sample
    rate, the whole IQ band whose noise a cross-correlation of the capture sees).
    Over a 10 s capture a carrier's C/N0 has a standard error of about 0.5 dB at 16 dB-Hz,
    0.1 dB at 26 dB-Hz and 0.02 dB at 46 dB-Hz.
Occupied bandwidth
    The width between the frequencies below and above which 0.5 % of the signal band's
    noise-subtracted power lies (the ITU 99 % power bandwidth, "above the noise"). It cannot
    be narrower than the PSD resolution: an unmodulated carrier measures about two to three
    bins.
Frequency offset
    The strongest PSD bin, refined by parabolic interpolation of the log PSD, then refined
    again on the whole capture: mix the coarse estimate down to 0 Hz, sum blocks of
    ``nperseg // 32`` samples (a boxcar decimator), and take the parabolically interpolated
    peak of a 4x zero-padded FFT within +-1.5 PSD bins. The last stage has the resolution of
    the capture length (0.025 Hz grid for 10 s), so a carrier at 10 dB SNR in its occupied
    bandwidth (about 26 dB-Hz) over 10 s is located to a few hundredths of a hertz. The
    spectrum is treated as circular, so offsets up to the band edges are measured as well;
    the result is wrapped into ``[-fs/2, fs/2)`` and only an emission within the error
    (about 0.01 Hz) of ``+-fs/2`` may come out with the other sign. For a modulated
    emission this is its strongest spectral line (the carrier of an AM or keyed signal, one
    of the tones of FSK, within about a quarter of the baud rate of it);
    ``centroid_offset_hz`` gives the power-weighted centre. A known receiver frequency
    error ``ppm`` is removed as ``f_true = (fc + f_measured) * (1 + ppm * 1e-6) - fc``: a
    reference that runs fast by ``ppm`` tunes high and counts time fast, so every
    frequency it reports is low by ``1 / (1 + ppm * 1e-6)``. If the sample rate was
    measured against GNSS, as for kiwi recordings, the timing part is already corrected
    and ``ppm`` is normally 0.
Signal present
    The peak test: ``signal_present`` is true when the strongest PSD bin in the search range
    exceeds ``N0`` (the first, all-bin estimate) by the level that one white-noise bin
    exceeds with probability ``p = 1 - (1 - pfa) ** (1 / M)``, ``M`` the bins searched, so
    that noise alone raises it with probability ``pfa`` (default 1e-3) per measurement. The
    level is the quantile of the bins' exact distribution above (Lugannani-Rice saddlepoint;
    the plain ``chi2.isf(p, nu) / nu`` understates that tail by 10-30 %). In simulation the
    observed false-alarm rate matches ``pfa`` within its binomial scatter (adjacent bins'
    correlation makes it, if anything, slightly conservative).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from functools import lru_cache
from typing import Any, Literal

import numpy as np
import scipy.fft
import scipy.optimize
import scipy.signal
import scipy.special
import scipy.stats
import xarray as xr
from scipy.ndimage import median_filter

from heimdall_lab.errors import ValidationError
from heimdall_lab.values import positive

__all__ = [
    "DEFAULT_NPERSEG",
    "MIN_SEGMENTS",
    "SignalMetrics",
    "correct_ppm",
    "measure",
    "measure_dataset",
    "psd",
    "welch_dof",
]

#: PSD segment length (bins) when no ``resolution_hz`` is asked for: 11.7 Hz bins at 12 kHz.
DEFAULT_NPERSEG = 1024
#: Fewest Welch segments accepted: below this the chi-square noise statistics are too coarse.
MIN_SEGMENTS = 8
_MIN_NPERSEG = 64
_GUARD_BINS = 3
_GAP_BINS = 2
_GROW_PFA_BIN = 1e-3
_OBW_FRACTION = 0.99
_FINE_RATE_BINS = 32
_FINE_OVERSAMPLE = 4
_FINE_SPAN_BINS = 1.5
_MIN_NOISE_BINS = 32
_STOPBAND_DB = 30.0
_EDGE_DB = 6.0
_EDGE_SMOOTH_BINS = 9

SnrBandwidth = float | Literal["occupied", "full"]


def _meta(units: str, doc: str) -> dict[str, str]:
    return {"units": units, "description": doc}


@dataclass(frozen=True)
class SignalMetrics:
    """Metrics of one receiver's capture; see the module docstring for the methods.

    Every power is a float in dB; figures that cannot be measured are NaN (a ``*_dbm``
    figure without calibration; signal power, SNR and C/N0 when the band's power does not
    exceed the noise estimate). Frequencies are offsets from the tuned centre in Hz.
    ``C`` is the signal power, ``N0`` the noise density, ``B`` the SNR bandwidth.

    Attributes
    ----------
    sample_rate_hz, n_samples : float, int
        The sample rate used and the number of samples measured.
    resolution_hz, enbw_hz, dof : float
        PSD bin spacing ``fs / nperseg``, one bin's equivalent noise bandwidth (1.5 bins
        for Hann), and each bin's equivalent chi-square degrees of freedom.
    total_power_dbfs : float
        Mean ``|x|**2`` of all samples, signal and noise.
    noise_density_dbfs_hz, noise_power_dbfs : float
        ``N0`` in dBFS/Hz, and ``N0 * B`` in dBFS.
    signal_power_dbfs : float
        ``C``: the power in the signal band minus the noise in it.
    snr_db, snr_bandwidth_hz, cn0_dbhz : float
        ``C / (N0 * B)`` in dB, ``B`` in Hz (the bandwidth the SNR refers to), and
        ``C / N0`` in dB-Hz.
    band_low_hz, band_high_hz : float
        Edges of the signal band ``C`` was integrated over (outer edges of its PSD bins;
        may pass ``+-fs/2`` for an emission at the band edge, the spectrum being circular).
    occupied_bandwidth_hz, centroid_offset_hz : float
        The 99 % power bandwidth above the noise, and the power-weighted mean frequency of
        the signal band (ppm-corrected).
    measured_offset_hz, frequency_offset_hz, rf_frequency_hz : float
        The strongest emission's frequency as received, its offset from the tuned
        frequency corrected for ``ppm``, and its radio frequency (NaN without a centre
        frequency).
    signal_present : bool
        The peak test at false-alarm probability ``pfa``.
    peak_to_noise_db, detection_threshold_db, pfa : float
        The strongest PSD bin over ``N0`` (the test statistic), the threshold it is
        compared with, and the false-alarm probability.
    calibration_db : float
        dB added to dBFS for dBm (NaN: uncalibrated).
    total_power_dbm, noise_density_dbm_hz, noise_power_dbm, signal_power_dbm : float
        The calibrated figures (NaN when uncalibrated).
    """

    sample_rate_hz: float = field(metadata=_meta("Hz", "sample rate used"))
    n_samples: int = field(metadata=_meta("1", "samples measured"))
    resolution_hz: float = field(metadata=_meta("Hz", "PSD bin spacing, fs / nperseg"))
    enbw_hz: float = field(metadata=_meta("Hz", "equivalent noise bandwidth of one PSD bin"))
    dof: float = field(metadata=_meta("1", "equivalent chi-square degrees of freedom per bin"))
    total_power_dbfs: float = field(metadata=_meta("dBFS", "mean |x|^2 of all samples"))
    noise_density_dbfs_hz: float = field(metadata=_meta("dBFS/Hz", "noise density N0"))
    noise_power_dbfs: float = field(metadata=_meta("dBFS", "noise power in snr_bandwidth_hz"))
    signal_power_dbfs: float = field(
        metadata=_meta("dBFS", "power in the signal band minus the noise in it (C)")
    )
    snr_db: float = field(metadata=_meta("dB", "C / (N0 * snr_bandwidth_hz)"))
    snr_bandwidth_hz: float = field(
        metadata=_meta("Hz", "bandwidth B that snr_db and noise_power_dbfs refer to")
    )
    cn0_dbhz: float = field(metadata=_meta("dB-Hz", "carrier-to-noise density C / N0"))
    band_low_hz: float = field(metadata=_meta("Hz", "lower edge of the signal band"))
    band_high_hz: float = field(metadata=_meta("Hz", "upper edge of the signal band"))
    occupied_bandwidth_hz: float = field(
        metadata=_meta("Hz", "99 % power bandwidth above the noise")
    )
    centroid_offset_hz: float = field(
        metadata=_meta("Hz", "power-weighted mean frequency of the signal band, ppm-corrected")
    )
    measured_offset_hz: float = field(
        metadata=_meta("Hz", "strongest emission's frequency as received (no ppm correction)")
    )
    frequency_offset_hz: float = field(
        metadata=_meta("Hz", "strongest emission's offset from the tuned frequency, ppm-corrected")
    )
    rf_frequency_hz: float = field(
        metadata=_meta("Hz", "strongest emission's radio frequency (NaN without centre)")
    )
    signal_present: bool = field(metadata=_meta("1", "peak test passed at false-alarm rate pfa"))
    peak_to_noise_db: float = field(metadata=_meta("dB", "strongest PSD bin over N0 (test)"))
    detection_threshold_db: float = field(metadata=_meta("dB", "peak test threshold for pfa"))
    pfa: float = field(metadata=_meta("1", "false-alarm probability of signal_present"))
    calibration_db: float = field(metadata=_meta("dB", "dBm minus dBFS (NaN: uncalibrated)"))
    total_power_dbm: float = field(metadata=_meta("dBm", "total_power_dbfs calibrated"))
    noise_density_dbm_hz: float = field(metadata=_meta("dBm/Hz", "noise_density calibrated"))
    noise_power_dbm: float = field(metadata=_meta("dBm", "noise_power_dbfs calibrated"))
    signal_power_dbm: float = field(metadata=_meta("dBm", "signal_power_dbfs calibrated"))

    def to_dict(self) -> dict[str, float | int | bool]:
        """Return the metrics as a plain dict of Python scalars.

        Returns
        -------
        dict
            Field name to value (``float``, ``int`` for ``n_samples``, ``bool`` for
            ``signal_present``), in field order.
        """
        return {f.name: getattr(self, f.name) for f in fields(self)}


_FIELDS = tuple(f.name for f in fields(SignalMetrics))
_INT_FIELDS = frozenset({"n_samples"})
_BOOL_FIELDS = frozenset({"signal_present"})


# ----------------------------------------------------------------------------- validation


def _check_iq(iq: Any) -> np.ndarray:
    """Return ``iq`` as a contiguous complex64 1-D array, or raise ValidationError."""
    try:
        arr = np.asarray(iq)
    except Exception as exc:  # e.g. a ragged list
        raise ValidationError(
            f"iq could not be read as an array ({exc}); pass a 1-D numpy array of complex samples"
        ) from exc
    if not np.issubdtype(arr.dtype, np.complexfloating):
        raise ValidationError(
            f"iq must hold complex IQ samples (complex64 or complex128), got dtype {arr.dtype}; "
            "build it as i + 1j * q, scaled so that int16 full scale is 1.0"
        )
    if arr.ndim != 1:
        raise ValidationError(
            f"iq must be 1-D (one receiver), got shape {arr.shape}; "
            "use measure_dataset for a capture with several receivers"
        )
    if arr.size == 0:
        raise ValidationError("iq is empty; pass a capture with samples in it")
    with np.errstate(over="ignore"):  # checked just below
        x = np.ascontiguousarray(arr, dtype=np.complex64)
    if arr.dtype != np.complex64:
        bad = ~np.isfinite(arr)  # before the cast, which turns huge values into inf
        if bad.any():
            _raise_non_finite(bad)
        if not np.isfinite(x).all():
            _raise_too_large()
    elif not np.isfinite(np.sum(x.view(np.float32), dtype=np.float64)):
        # Fast path: a float64 sum of float32 values cannot overflow, so NaN or inf it is.
        _raise_non_finite(~np.isfinite(x))
    return x


def _raise_too_large() -> None:
    raise ValidationError(
        "iq values are too large for single precision; scale the samples to full scale 1.0 "
        "(int16 32768 = 1.0)"
    )


def _raise_non_finite(bad: np.ndarray) -> None:
    raise ValidationError(
        f"iq has {int(bad.sum())} non-finite samples (NaN or inf), the first at index "
        f"{int(np.argmax(bad))}; trim or repair the capture first (the NaN padding of a "
        "capture Dataset is excluded by its n_samples)"
    )


def _check_rate(sample_rate: Any) -> float:
    return positive(sample_rate, "sample_rate", hint="pass the sample rate in Hz, e.g. 12001.0")


def _check_calibration(calibration_db: Any) -> float:
    """Return the calibration offset in dB, NaN meaning uncalibrated."""
    if calibration_db is None:
        return math.nan
    if isinstance(calibration_db, bool) or not isinstance(
        calibration_db, int | float | np.integer | np.floating
    ):
        raise ValidationError(
            f"calibration_db must be a number of dB or None, got {calibration_db!r}"
        )
    v = float(calibration_db)
    if math.isinf(v):
        raise ValidationError(
            "calibration_db must be finite (None or NaN for an uncalibrated receiver)"
        )
    return v


def _segments(n: int, nperseg: int) -> int:
    return 0 if n < nperseg else (n - nperseg) // (nperseg // 2) + 1


def _choose_nperseg(n: int, fs: float, resolution_hz: float | None) -> int:
    """Segment length: a power of two giving bins no wider than ``resolution_hz``."""
    if resolution_hz is None:
        nper = DEFAULT_NPERSEG
        while nper > _MIN_NPERSEG and _segments(n, nper) < MIN_SEGMENTS:
            nper //= 2
    else:
        res = positive(
            resolution_hz, "resolution_hz", hint="pass the PSD bin width wanted in Hz, or None"
        )
        nper = max(_MIN_NPERSEG, 1 << max(0, math.ceil(math.log2(fs / res) - 1e-12)))
    if _segments(n, nper) >= MIN_SEGMENTS:
        return nper
    least = _MIN_NPERSEG // 2 * (MIN_SEGMENTS + 1)
    if n < least:
        raise ValidationError(
            f"iq has {n} samples, too few for the PSD: the metrics need at least {least} "
            f"({MIN_SEGMENTS} half-overlapping segments of {_MIN_NPERSEG}); pass a longer capture"
        )
    fits = 1 << int(math.log2(2 * n / (MIN_SEGMENTS + 1)))
    raise ValidationError(
        f"iq has {n} samples, too few for {fs / nper:.4g} Hz PSD bins: {nper}-sample segments "
        f"need {nper // 2 * (MIN_SEGMENTS + 1)} for {MIN_SEGMENTS} Welch segments; pass a "
        f"coarser resolution_hz (at least {fs / fits:.4g} Hz) or a longer capture"
    )


# ----------------------------------------------------------------------------- PSD core


@lru_cache(maxsize=32)
def _window(nperseg: int) -> np.ndarray:
    w = scipy.signal.get_window("hann", nperseg, fftbins=True)
    w.setflags(write=False)
    return w


@lru_cache(maxsize=32)
def _window32(nperseg: int) -> np.ndarray:
    w = _window(nperseg).astype(np.float32)
    w.setflags(write=False)
    return w


@lru_cache(maxsize=32)
def _enbw_bins(nperseg: int) -> float:
    w = _window(nperseg)
    return float(len(w) * np.dot(w, w) / np.sum(w) ** 2)


def welch_dof(nperseg: int, n_segments: int) -> float:
    """Equivalent chi-square degrees of freedom of one bin of the Welch PSD used here.

    Parameters
    ----------
    nperseg : int
        Segment length, even (periodic Hann window, 50 % overlap).
    n_segments : int
        Number of segments averaged, ``K``.

    Returns
    -------
    float
        ``nu = 2 K**2 / (K + 2 (K - 1) rho**2)``, where ``rho`` is the correlation of the
        windowed noise of adjacent segments (1/6 for Hann at 50 % overlap; Welch 1967): a
        white-noise bin has the mean and variance of ``N0 * chi2(nu) / nu``.

    Raises
    ------
    ValidationError
        If ``nperseg`` is not an even number >= 2 or ``n_segments < 1``.
    """
    if nperseg < 2 or nperseg % 2 or n_segments < 1:
        raise ValidationError(
            f"need an even nperseg >= 2 and n_segments >= 1, got {nperseg}, {n_segments}"
        )
    return _dof(int(nperseg), int(n_segments))


@lru_cache(maxsize=256)
def _bin_weights(nperseg: int, k: int) -> np.ndarray:
    """Weights ``a`` (sum 1) with a white-noise bin / N0 distributed as sum(a_j * Exp(1)).

    The ``K`` windowed segments' values in one bin are complex Gaussian with a tridiagonal
    Toeplitz correlation (only adjacent segments overlap at 50 %); the bin is a quadratic
    form whose weights are that matrix's eigenvalues ``1 + 2 rho cos(pi j / (K + 1))``.
    """
    w = _window(nperseg)
    step = nperseg // 2
    rho = float(np.dot(w[: nperseg - step], w[step:]) / np.dot(w, w))
    lam = 1.0 + 2.0 * rho * np.cos(np.pi * np.arange(1, k + 1) / (k + 1))
    a = lam / lam.sum()
    a.setflags(write=False)
    return a


@lru_cache(maxsize=256)
def _dof(nperseg: int, k: int) -> float:
    return 2.0 / float(np.sum(_bin_weights(nperseg, k) ** 2))


@lru_cache(maxsize=256)
def _median_ratio(nperseg: int, k: int) -> float:
    """Median over mean of a white-noise bin (saddlepoint; about chi2.median(nu) / nu)."""
    a = _bin_weights(nperseg, k)
    m2, m3 = float(np.sum(a**2)), float(np.sum(a**3))
    cornish_fisher = 1.0 - m3 / (3.0 * m2)  # median = mean - k3 / (6 k2), first order
    s_cf = (cornish_fisher - 1.0) / m2  # the saddlepoint near that level

    def above(s: float) -> float:
        return _saddle_sf(a, s)[1] - 0.5

    try:
        s = scipy.optimize.brentq(above, 3.0 * s_cf, 0.3 * s_cf, xtol=1e-14, rtol=1e-12)
    except ValueError:  # pragma: no cover - no sign change: keep the first-order value
        return cornish_fisher
    return _saddle_sf(a, s)[0]


def _saddle_sf(a: np.ndarray, s: float) -> tuple[float, float]:
    """Lugannani-Rice tail of sum(a_j E_j) at saddlepoint ``s != 0``: (level, P(> level))."""
    d = 1.0 - a * s
    cgf = -float(np.sum(np.log(d)))
    level = float(np.sum(a / d))
    curv = float(np.sum((a / d) ** 2))
    w = math.copysign(math.sqrt(max(2.0 * (s * level - cgf), 1e-300)), s)
    u = s * math.sqrt(curv)
    tail = float(scipy.special.ndtr(-w)) + math.exp(-0.5 * w * w) / math.sqrt(2 * math.pi) * (
        1.0 / u - 1.0 / w
    )
    return level, tail


@lru_cache(maxsize=256)
def _bin_threshold(nperseg: int, k: int, p_bin: float) -> float:
    """Level, relative to the mean, that one white-noise bin exceeds with probability p_bin.

    Exact distribution (weighted sum of exponentials, :func:`_bin_weights`) through the
    Lugannani-Rice saddlepoint approximation, accurate to about 1 % in the tail; the
    chi-square approximation it refines understates the tail by 10-30 % at 1e-6.
    """
    nu = _dof(nperseg, k)
    if p_bin >= 0.05:
        return float(scipy.stats.chi2.isf(p_bin, nu) / nu)
    a = _bin_weights(nperseg, k)
    s_max = 1.0 / float(a.max())
    s_lo, s_hi = 0.05 * s_max, s_max * (1.0 - 1e-12)
    while _saddle_sf(a, s_lo)[1] < p_bin and s_lo > 1e-9 * s_max:
        s_lo *= 0.1

    def excess(s: float) -> float:
        return math.log(max(_saddle_sf(a, s)[1], 1e-300)) - math.log(p_bin)

    s = scipy.optimize.brentq(excess, s_lo, s_hi, xtol=1e-12 * s_max, rtol=1e-12)
    return _saddle_sf(a, s)[0]


def _peak_threshold(nperseg: int, k: int, n_bins: int, pfa: float) -> float:
    """Threshold on max(bins)/N0 that noise alone exceeds with probability pfa (M bins)."""
    p_bin = -math.expm1(math.log1p(-pfa) / n_bins)
    return _bin_threshold(nperseg, k, p_bin)


def _welch(x: np.ndarray, fs: float, nperseg: int) -> tuple[np.ndarray, int]:
    """Welch PSD density (FS^2/Hz), float64, fftshifted; and the number of segments."""
    step = nperseg // 2
    k = _segments(len(x), nperseg)
    segs = np.lib.stride_tricks.as_strided(
        x, shape=(k, nperseg), strides=(x.strides[0] * step, x.strides[0]), writeable=False
    )
    spec = scipy.fft.fft(segs * _window32(nperseg), axis=-1, overwrite_x=True)
    flat = spec.view(np.float32)
    with np.errstate(over="ignore"):  # checked below
        np.square(flat, out=flat)
    power = flat.sum(axis=0, dtype=np.float64).reshape(nperseg, 2).sum(axis=1)
    w = _window(nperseg)
    power *= 1.0 / (fs * float(np.dot(w, w)) * k)
    if not np.isfinite(power).all():  # |x|**2 overflowed float32
        _raise_too_large()
    return np.fft.fftshift(power), k


def _freqs(nperseg: int, fs: float) -> np.ndarray:
    return (np.arange(nperseg) - nperseg // 2) * (fs / nperseg)


def _db(value: float) -> float:
    return 10.0 * math.log10(value) if value > 0 and math.isfinite(value) else math.nan


def _wrap(f: float, fs: float) -> float:
    return (f + fs / 2) % fs - fs / 2


def psd(
    iq: Any,
    sample_rate: float,
    *,
    resolution_hz: float | None = None,
    calibration_db: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Welch power spectral density of one receiver's IQ samples.

    Parameters
    ----------
    iq : array_like of complex
        1-D complex baseband samples, full scale 1.0.
    sample_rate : float
        Sample rate in Hz.
    resolution_hz : float, optional
        Widest acceptable bin spacing in Hz: the segment length is the smallest power of
        two (at least 64) with ``sample_rate / nperseg <= resolution_hz``. Default: 1024
        bins, fewer for a capture too short for 8 segments of 1024.
    calibration_db : float, optional
        dB to add to dBFS to get dBm. If given (and not NaN) the density is in dBm/Hz.

    Returns
    -------
    freqs_hz : numpy.ndarray
        Bin centres, offsets from the tuned frequency in Hz, ascending from ``-fs/2``.
    density : numpy.ndarray
        Power spectral density in dBFS/Hz, or dBm/Hz if calibrated; ``-inf`` where a bin is
        exactly zero.

    Raises
    ------
    ValidationError
        If ``iq`` is not a non-empty 1-D complex array of finite samples, the sample rate is
        not a finite positive number, ``resolution_hz`` is not positive, the capture is too
        short for 8 segments at the requested resolution, or ``calibration_db`` is infinite.

    Notes
    -----
    Same numbers as ``scipy.signal.welch(iq, fs, window="hann", nperseg=nperseg,
    detrend=False, return_onesided=False)`` after ``fftshift`` (single precision FFT).
    """
    x = _check_iq(iq)
    fs = _check_rate(sample_rate)
    cal = _check_calibration(calibration_db)
    nperseg = _choose_nperseg(len(x), fs, resolution_hz)
    power, _ = _welch(x, fs, nperseg)
    with np.errstate(divide="ignore"):
        density = 10.0 * np.log10(power)
    if not math.isnan(cal):
        density += cal
    return _freqs(nperseg, fs), density


# ----------------------------------------------------------------------------- helpers


def _parabolic(left: float, centre: float, right: float) -> float:
    """Vertex offset (bins, within +-0.5) of a parabola through three log-power values."""
    denom = left - 2.0 * centre + right
    if not denom < 0:
        return 0.0
    return float(np.clip(0.5 * (left - right) / denom, -0.5, 0.5))


def _log_peak_offset(p: np.ndarray, k: int) -> float:
    n = len(p)
    with np.errstate(divide="ignore"):
        vals = np.log(np.array([p[(k - 1) % n], p[k], p[(k + 1) % n]], dtype=np.float64))
    if not np.all(np.isfinite(vals)):
        return 0.0
    return _parabolic(*vals)


def _refine_frequency(x: np.ndarray, fs: float, f0: float, nperseg: int) -> float:
    """Strongest line within +-1.5 PSD bins of ``f0`` on the whole capture (Hz, unwrapped)."""
    n = len(x)
    m = max(1, nperseg // _FINE_RATE_BINS)
    while m > 1 and n // m < 64:
        m //= 2
    nd = n // m
    # Mixer exp(-2j pi f0 t) on a (rows, q*m) grid: one table per axis, block sums per row.
    q = max(1, math.isqrt(nd))
    rows = -(-nd // q)
    width = q * m
    padded = np.zeros(rows * width, np.complex64)
    padded[: nd * m] = x[: nd * m]
    w0 = -2.0 * math.pi * f0 / fs
    col = np.exp(1j * w0 * np.arange(width)).astype(np.complex64)
    row = np.exp(1j * w0 * width * np.arange(rows))
    blocks = (padded.reshape(rows, width) * col).reshape(rows, q, m).sum(axis=-1)
    z = (blocks * row[:, None]).ravel()[:nd]
    nfft = 1 << math.ceil(math.log2(_FINE_OVERSAMPLE * nd))
    spec = scipy.fft.fft(z, nfft)
    power = spec.real**2 + spec.imag**2
    step = fs / m / nfft
    span = min(int(_FINE_SPAN_BINS * fs / nperseg / step), nfft // 2 - 1)
    idx = np.concatenate([np.arange(nfft - span, nfft), np.arange(span + 1)])
    k = int(idx[np.argmax(power[idx])])
    delta = _log_peak_offset(power, k)
    kk = k - nfft if k >= nfft // 2 else k
    return f0 + (kk + delta) * step


def _grow(above: np.ndarray, k0: int) -> tuple[int, int]:
    """Contiguous run of ``above`` around ``k0`` (circular, gaps <= _GAP_BINS bridged)."""
    nb = len(above)
    hi, gap, j = k0, 0, k0 + 1
    while j - k0 < nb:
        if above[j % nb]:
            hi, gap = j, 0
        else:
            gap += 1
            if gap > _GAP_BINS:
                break
        j += 1
    lo, gap, j = k0, 0, k0 - 1
    while hi - j < nb:
        if above[j % nb]:
            lo, gap = j, 0
        else:
            gap += 1
            if gap > _GAP_BINS:
                break
        j -= 1
    return lo, hi


def _live_bins(p: np.ndarray) -> np.ndarray:
    """Bins inside the receiver's passband.

    Runs of bins at either edge whose smoothed level is more than ``_EDGE_DB`` under the
    median of the central half are the filter's roll-off and stopband; any bin more than
    ``_STOPBAND_DB`` under the median of the rest (a deep notch) is dropped too.
    """
    n = len(p)
    ref = float(np.median(p[n // 4 : n - n // 4]))
    smooth = median_filter(p, size=_EDGE_SMOOTH_BINS, mode="nearest")
    low = smooth < ref * 10.0 ** (-_EDGE_DB / 10.0)
    lo = int(np.argmin(low)) if not low.all() else n
    hi = n - int(np.argmin(low[::-1])) if not low.all() else n
    live = np.zeros(n, bool)
    live[lo:hi] = True
    if live.sum() < _MIN_NOISE_BINS:
        live[:] = True
    floor = 10.0 ** (-_STOPBAND_DB / 10.0)
    deep = live & (p >= float(np.median(p[live])) * floor)
    return deep if deep.sum() >= _MIN_NOISE_BINS else live


def _in_band(freqs: np.ndarray, band: tuple[float, float]) -> np.ndarray:
    return (freqs >= band[0]) & (freqs <= band[1])


def _check_band(band: Any, fs: float, name: str) -> tuple[float, float] | None:
    if band is None:
        return None
    try:
        lo, hi = (float(v) for v in band)
    except (TypeError, ValueError) as exc:
        raise ValidationError(
            f"{name} must be a pair (low_hz, high_hz) of offsets from the centre, got {band!r}"
        ) from exc
    if not (math.isfinite(lo) and math.isfinite(hi)) or not lo < hi:
        raise ValidationError(f"{name} must be finite with low_hz < high_hz, got {band!r}")
    if lo < -fs / 2 or hi > fs / 2:
        raise ValidationError(
            f"{name} {band!r} reaches outside the captured +-{fs / 2:g} Hz; clip it to that range"
        )
    return lo, hi


def correct_ppm(measured_offset_hz: float, center_frequency_hz: float | None, ppm: float) -> float:
    """Remove a receiver's known frequency-reference error from a measured offset.

    Parameters
    ----------
    measured_offset_hz : float
        Offset from the tuned frequency as the receiver measured it, in Hz.
    center_frequency_hz : float or None
        Tuned (nominal) centre frequency in Hz; may be None only if ``ppm`` is 0.
    ppm : float
        The reference's fractional frequency error in parts per million, positive when it
        runs fast (every frequency the receiver reports is then low by ``1 / (1 + ppm*1e-6)``).

    Returns
    -------
    float
        ``(fc + measured) * (1 + ppm * 1e-6) - fc``, the true offset from the nominal tuned
        frequency in Hz (``measured`` itself when ``ppm`` is 0).

    Raises
    ------
    ValidationError
        If ``ppm`` is not finite, or is non-zero without a centre frequency.
    """
    eps = float(ppm)
    if not math.isfinite(eps):
        raise ValidationError(f"ppm must be finite, got {ppm!r}")
    if eps == 0.0:
        return float(measured_offset_hz)
    if center_frequency_hz is None or not math.isfinite(float(center_frequency_hz)):
        raise ValidationError(
            "a ppm correction needs the tuned centre frequency: pass center_frequency_hz"
        )
    fc = float(center_frequency_hz)
    return (fc + float(measured_offset_hz)) * (1.0 + eps * 1e-6) - fc


# ----------------------------------------------------------------------------- measure


@dataclass(frozen=True)
class _Options:
    center: float | None
    ppm: float
    band: tuple[float, float] | None
    noise_band: tuple[float, float] | None
    snr_bandwidth: float | str
    pfa: float
    resolution_hz: float | None


def _check_options(
    fs: float,
    center_frequency_hz: Any,
    ppm: Any,
    band: Any,
    noise_band: Any,
    snr_bandwidth_hz: Any,
    pfa: Any,
    resolution_hz: Any,
) -> _Options:
    if isinstance(pfa, bool) or not isinstance(pfa, int | float | np.integer | np.floating):
        raise ValidationError(f"pfa must be a probability, got {pfa!r}")
    if not 0.0 < float(pfa) < 1.0:
        raise ValidationError(f"pfa must be in (0, 1), e.g. 1e-3, got {pfa!r}")
    center = None
    if center_frequency_hz is not None:
        center = float(center_frequency_hz)
        if not math.isfinite(center) or center < 0:
            raise ValidationError(
                "center_frequency_hz must be a finite frequency >= 0 in Hz, got "
                f"{center_frequency_hz!r}"
            )
    if isinstance(ppm, bool) or not isinstance(ppm, int | float | np.integer | np.floating):
        raise ValidationError(f"ppm must be a number (parts per million), got {ppm!r}")
    correct_ppm(0.0, center, float(ppm))  # validates ppm against the centre frequency
    if not (isinstance(snr_bandwidth_hz, str) and snr_bandwidth_hz in ("occupied", "full")):
        snr_bandwidth_hz = positive(
            snr_bandwidth_hz,
            "snr_bandwidth_hz",
            hint='pass a bandwidth in Hz, "occupied" (the default) or "full" (the sample rate)',
        )
    if resolution_hz is not None:
        resolution_hz = positive(
            resolution_hz, "resolution_hz", hint="pass the PSD bin width wanted in Hz, or None"
        )
    return _Options(
        center=center,
        ppm=float(ppm),
        band=_check_band(band, fs, "band"),
        noise_band=_check_band(noise_band, fs, "noise_band"),
        snr_bandwidth=snr_bandwidth_hz,
        pfa=float(pfa),
        resolution_hz=resolution_hz,
    )


def measure(
    iq: Any,
    sample_rate: float,
    *,
    center_frequency_hz: float | None = None,
    ppm: float = 0.0,
    calibration_db: float | None = None,
    band: tuple[float, float] | None = None,
    noise_band: tuple[float, float] | None = None,
    snr_bandwidth_hz: SnrBandwidth = "occupied",
    pfa: float = 1e-3,
    resolution_hz: float | None = None,
) -> SignalMetrics:
    """Measure noise, signal power, SNR, C/N0, frequency offset and presence of a signal.

    Parameters
    ----------
    iq : array_like of complex
        1-D complex baseband samples of one receiver, full scale 1.0 (complex64 or
        complex128; a dask array is computed).
    sample_rate : float
        Sample rate in Hz (the exact, GNSS-derived one where known).
    center_frequency_hz : float, optional
        Tuned frequency in Hz; gives ``rf_frequency_hz`` and is needed for ``ppm``.
    ppm : float, default 0.0
        Known fractional frequency error of the receiver's reference, positive when fast;
        removed from ``frequency_offset_hz`` and ``centroid_offset_hz`` (see
        :func:`correct_ppm`).
    calibration_db : float, optional
        dB to add to dBFS to get dBm; None or NaN means uncalibrated (``*_dbm`` are NaN).
    band : (float, float), optional
        ``(low_hz, high_hz)`` offsets from the centre: search the strongest emission only
        there, and take the signal power over exactly this band (the PSD bins whose centres
        lie in it; ``band_low_hz``/``band_high_hz`` give those bins' outer edges). Default:
        the whole spectrum, and the signal band found around the strongest peak.
    noise_band : (float, float), optional
        ``(low_hz, high_hz)`` offsets of the bins to estimate the noise from, e.g. the
        receiver's passband. Default: every bin outside a filter stopband (bins more than
        30 dB under the median of the others, such as the quantisation floor outside a
        KiwiSDR's IQ passband). The signal band is always left out when enough bins remain.
    snr_bandwidth_hz : float or {"occupied", "full"}, default "occupied"
        Bandwidth ``B`` in Hz that ``snr_db`` and ``noise_power_dbfs`` refer to.
        ``"occupied"``: the measured 99 % occupied bandwidth, at least one bin's ENBW (the
        signal band's width if it cannot be measured). ``"full"``: the sample rate.
    pfa : float, default 1e-3
        False-alarm probability of ``signal_present`` for noise alone, in (0, 1).
    resolution_hz : float, optional
        Widest acceptable PSD bin spacing in Hz (see :func:`psd`). Default: 1024 bins.

    Returns
    -------
    SignalMetrics
        Frozen dataclass of the metrics; ``to_dict()`` gives a plain dict. Definitions:
        ``snr_db = 10 log10(C / (N0 * snr_bandwidth_hz))``, ``cn0_dbhz = 10 log10(C / N0)``,
        ``noise_power_dbfs = 10 log10(N0 * snr_bandwidth_hz)``, with C the noise-subtracted
        power in the signal band and N0 the median-based noise density (module docstring).
        Frequency figures refer to the strongest emission even when ``signal_present`` is
        false; check it first.

    Raises
    ------
    ValidationError
        If ``iq`` is empty, not 1-D, not complex or holds NaN/inf; if ``sample_rate`` or
        ``resolution_hz`` is not a finite positive number; if the capture is too short for
        8 Welch segments at the resolution; if ``pfa`` is not in (0, 1); if ``band`` or
        ``noise_band`` is not an ordered pair inside ``+-sample_rate/2`` (``band`` covering at
        least 3 bins, ``noise_band`` 32 usable ones); if ``snr_bandwidth_hz`` is not positive
        or "occupied"; if ``calibration_db`` is infinite; if ``ppm`` is not finite, or is
        non-zero without ``center_frequency_hz``.
    """
    x = _check_iq(iq)
    fs = _check_rate(sample_rate)
    cal = _check_calibration(calibration_db)
    opts = _check_options(
        fs, center_frequency_hz, ppm, band, noise_band, snr_bandwidth_hz, pfa, resolution_hz
    )
    return _measure_checked(x, fs, cal, opts)


def _measure_checked(x: np.ndarray, fs: float, cal: float, opts: _Options) -> SignalMetrics:
    nperseg = _choose_nperseg(len(x), fs, opts.resolution_hz)
    p, k = _welch(x, fs, nperseg)
    nb = nperseg
    df = fs / nperseg
    nu = _dof(nperseg, k)
    ratio = _median_ratio(nperseg, k)
    freqs = _freqs(nperseg, fs)

    # Usable bins: not in a filter stopband; for the noise, inside noise_band if given.
    live = _live_bins(p)
    noise_sel = live if opts.noise_band is None else live & _in_band(freqs, opts.noise_band)
    if noise_sel.sum() < _MIN_NOISE_BINS:
        raise ValidationError(
            f"only {int(noise_sel.sum())} usable PSD bins to estimate the noise from (need "
            f"{_MIN_NOISE_BINS}); widen noise_band or pass a finer resolution_hz"
        )
    # First pass: noise from all usable bins, and the peak test over the searched bins.
    n0_all = float(np.median(p[noise_sel])) / ratio
    search = live if opts.band is None else _in_band(freqs, opts.band)
    sel = np.flatnonzero(search)
    if opts.band is not None and len(sel) < 3:
        raise ValidationError(
            f"band {opts.band!r} covers {len(sel)} PSD bins of {df:.4g} Hz; it needs at "
            "least 3: widen it or pass a finer resolution_hz"
        )
    k0 = int(sel[np.argmax(p[sel])])
    # With no noise at all a noiseless emission is present, and silence is not.
    peak_ratio = float(p[k0]) / n0_all if n0_all > 0 else (math.inf if p[k0] > 0 else math.nan)
    threshold = _peak_threshold(nperseg, k, len(sel), opts.pfa)
    present = bool(peak_ratio > threshold)

    # Signal band: the given one, or the bins standing out around the peak, plus guards.
    if opts.band is not None:
        lo, hi = int(sel[0]), int(sel[-1])
    else:
        lo, hi = _grow(p > n0_all * _bin_threshold(nperseg, k, _GROW_PFA_BIN), k0)
        lo, hi = lo - _GUARD_BINS, hi + _GUARD_BINS
        if hi - lo + 1 > nb:
            lo, hi = k0 - nb // 2, k0 - nb // 2 + nb - 1
    idx = np.arange(lo, hi + 1) % nb

    # Second pass, if there is a signal: noise without its band (removing the top bins of
    # noise alone would bias N0 low). Then signal power, occupied bandwidth, centroid.
    n0 = n0_all
    rest = noise_sel.copy()
    rest[idx] = False
    if present and rest.sum() >= max(_MIN_NOISE_BINS, int(noise_sel.sum()) // 4):
        n0 = float(np.median(p[rest])) / ratio
    excess = p[idx] - n0
    c_lin = float(excess.sum()) * df
    band_lo_hz = (lo - nb // 2 - 0.5) * df
    band_hi_hz = (hi - nb // 2 + 0.5) * df
    obw, centroid = _occupancy(excess, c_lin, band_lo_hz, df)

    # Frequency: interpolated PSD peak, refined on the whole capture; ppm correction.
    f_coarse = (k0 - nb // 2 + _log_peak_offset(p, k0)) * df
    f_meas = _wrap(_refine_frequency(x, fs, f_coarse, nperseg), fs)
    f_off = correct_ppm(f_meas, opts.center, opts.ppm)
    if math.isfinite(centroid):
        centroid = correct_ppm(_wrap(centroid, fs), opts.center, opts.ppm)

    if opts.snr_bandwidth == "full":
        b = fs
    elif opts.snr_bandwidth == "occupied":
        b = max(obw, df * _enbw_bins(nperseg)) if math.isfinite(obw) else (hi - lo + 1) * df
    else:
        b = float(opts.snr_bandwidth)
    total = float(np.vdot(x, x).real) / len(x)
    noise_b = n0 * b
    c_db = _db(c_lin)
    return SignalMetrics(
        sample_rate_hz=fs,
        n_samples=len(x),
        resolution_hz=df,
        enbw_hz=df * _enbw_bins(nperseg),
        dof=nu,
        total_power_dbfs=_db(total),
        noise_density_dbfs_hz=_db(n0),
        noise_power_dbfs=_db(noise_b),
        signal_power_dbfs=c_db,
        snr_db=_db(c_lin / noise_b) if noise_b > 0 else math.nan,
        snr_bandwidth_hz=b,
        cn0_dbhz=_db(c_lin / n0) if n0 > 0 else math.nan,
        band_low_hz=band_lo_hz,
        band_high_hz=band_hi_hz,
        occupied_bandwidth_hz=obw,
        centroid_offset_hz=centroid,
        measured_offset_hz=f_meas,
        frequency_offset_hz=f_off,
        rf_frequency_hz=opts.center + f_off if opts.center is not None else math.nan,
        signal_present=present,
        peak_to_noise_db=_db(peak_ratio),
        detection_threshold_db=_db(threshold),
        pfa=opts.pfa,
        calibration_db=cal,
        total_power_dbm=_db(total) + cal,
        noise_density_dbm_hz=_db(n0) + cal,
        noise_power_dbm=_db(noise_b) + cal,
        signal_power_dbm=c_db + cal,
    )


def _occupancy(excess: np.ndarray, c_lin: float, low_edge: float, df: float) -> tuple[float, float]:
    """99 % power bandwidth and centroid (Hz, unwrapped) of a band's noise-free power."""
    if not c_lin > 0:
        return math.nan, math.nan
    cum = np.cumsum(excess) * df
    tail = (1.0 - _OBW_FRACTION) / 2.0

    def crossing(level: float) -> float:
        j = int(np.argmax(cum >= level))
        prev = float(cum[j - 1]) if j > 0 else 0.0
        return low_edge + (j + (level - prev) / (float(cum[j]) - prev)) * df

    obw = crossing((1.0 - tail) * c_lin) - crossing(tail * c_lin)
    centres = low_edge + (np.arange(len(excess)) + 0.5) * df
    return obw, float(np.dot(centres, excess)) * df / c_lin


# ----------------------------------------------------------------------------- datasets


def _measure_rows(
    iq: np.ndarray,
    sample_rate: np.ndarray,
    n_samples: np.ndarray,
    calibration_db: np.ndarray,
    ppm: np.ndarray,
    index: np.ndarray,
    *,
    names: Sequence[str],
    options: Mapping[str, Any],
) -> np.ndarray:
    """Metrics of each row of a (..., sample) block, as a (..., n_fields) float64 array."""
    iq = np.asarray(iq)
    out = np.empty((*iq.shape[:-1], len(_FIELDS)), np.float64)
    for pos in np.ndindex(*iq.shape[:-1]):
        cal = float(calibration_db[pos])
        try:
            m = measure(
                iq[pos][: int(n_samples[pos])],
                float(sample_rate[pos]),
                ppm=float(ppm[pos]),
                calibration_db=None if math.isnan(cal) else cal,
                **options,
            )
        except ValidationError as exc:
            raise ValidationError(f"receiver {names[int(index[pos])]!r}: {exc}") from exc
        out[pos] = [float(getattr(m, name)) for name in _FIELDS]
    return out


def _receiver_values(ds: xr.Dataset, name: str, n_rx: int) -> np.ndarray | None:
    if name not in ds.coords and name not in ds.data_vars:
        return None
    var = ds[name]
    if var.dims != ("receiver",):
        raise ValidationError(f"ds.{name} must be a per-receiver coordinate, dims {var.dims}")
    values = np.asarray(var.values)
    if values.shape != (n_rx,):
        raise ValidationError(f"ds.{name} must hold one value per receiver")
    return values


def measure_dataset(
    ds: xr.Dataset,
    *,
    center_frequency_hz: float | None = None,
    ppm: float | Sequence[float] | np.ndarray = 0.0,
    band: tuple[float, float] | None = None,
    noise_band: tuple[float, float] | None = None,
    snr_bandwidth_hz: SnrBandwidth = "occupied",
    pfa: float = 1e-3,
    resolution_hz: float | None = None,
) -> xr.Dataset:
    """Measure every receiver of a capture Dataset.

    Parameters
    ----------
    ds : xarray.Dataset
        A capture: data variable ``iq`` (complex, dims ``(receiver, sample)``, full scale
        1.0, shorter receivers padded at the end, e.g. with NaN) and per-receiver
        coordinates ``sample_rate`` (Hz) and ``n_samples`` (valid samples), optionally
        ``calibration_db`` (dB to add to dBFS for dBm; NaN: uncalibrated); attribute
        ``center_frequency_hz`` (optional). ``iq`` may be dask-backed.
    center_frequency_hz : float, optional
        Overrides ``ds.attrs["center_frequency_hz"]``.
    ppm : float or sequence of float, default 0.0
        Receiver frequency error(s) in ppm, one for all or one per receiver (see
        :func:`measure`).
    band, noise_band, snr_bandwidth_hz, pfa, resolution_hz
        As for :func:`measure`, the same for every receiver.

    Returns
    -------
    xarray.Dataset
        One variable per :class:`SignalMetrics` field along dim ``receiver`` (its
        coordinate kept), each with ``units`` and ``description`` attributes; attributes
        ``center_frequency_hz`` and ``snr_definition``. Each receiver's figures use only its
        first ``n_samples`` samples and are exactly those of :func:`measure` on them. If
        ``iq`` is dask-backed the result is lazy, one task per chunk of receivers (the
        ``sample`` dim is merged into one chunk): call ``.compute()``.

    Raises
    ------
    ValidationError
        If ``ds`` lacks ``iq``, ``sample_rate`` or ``n_samples`` or has other dims; if an
        ``n_samples`` is outside ``1..len(sample)``; if ``ppm`` has the wrong length; for a
        bad option; and, per receiver with its name in the message, for anything
        :func:`measure` rejects (for dask-backed input that check runs at compute time).
    """
    if not isinstance(ds, xr.Dataset) or "iq" not in ds.data_vars:
        raise ValidationError("ds must be an xarray.Dataset with an 'iq' data variable")
    iq = ds["iq"]
    if tuple(iq.dims) != ("receiver", "sample"):
        raise ValidationError(
            f"ds.iq must have dims ('receiver', 'sample'), got {tuple(iq.dims)}; "
            "transpose or rename them"
        )
    if not np.issubdtype(iq.dtype, np.complexfloating):
        raise ValidationError(
            f"ds.iq must be complex (complex64 or complex128), got dtype {iq.dtype}"
        )
    n_rx, length = iq.sizes["receiver"], iq.sizes["sample"]
    if n_rx == 0:
        raise ValidationError("ds has no receivers")
    receivers = np.asarray(ds["receiver"].values) if "receiver" in ds.coords else np.arange(n_rx)
    rates = _receiver_values(ds, "sample_rate", n_rx)
    n_samples = _receiver_values(ds, "n_samples", n_rx)
    if rates is None or n_samples is None:
        raise ValidationError(
            "ds needs per-receiver coordinates 'sample_rate' (Hz) and 'n_samples' (valid samples)"
        )
    if not np.issubdtype(n_samples.dtype, np.integer):
        raise ValidationError(f"ds.n_samples must be integers, got dtype {n_samples.dtype}")
    if np.any(n_samples < 1) or np.any(n_samples > length):
        raise ValidationError(
            f"ds.n_samples must be within 1..{length} (the sample dim), got {n_samples.tolist()}"
        )
    names = [str(r) for r in receivers]
    for name, rate in zip(names, rates, strict=True):
        try:
            _check_rate(rate.item() if isinstance(rate, np.generic) else rate)
        except ValidationError as exc:
            raise ValidationError(f"receiver {name!r}: {exc}") from exc
    cal = _receiver_values(ds, "calibration_db", n_rx)
    cal = np.full(n_rx, np.nan) if cal is None else cal.astype(np.float64)
    if np.isinf(cal).any():
        raise ValidationError("ds.calibration_db must be finite or NaN (uncalibrated)")
    try:
        ppm_arr = np.broadcast_to(np.asarray(ppm, dtype=np.float64), (n_rx,)).copy()
    except (TypeError, ValueError) as exc:
        raise ValidationError(
            f"ppm must be one number or one per receiver ({n_rx}), got {ppm!r}"
        ) from exc
    if center_frequency_hz is None:
        center_frequency_hz = ds.attrs.get("center_frequency_hz")
    for value in np.unique(ppm_arr):  # the shared options, checked eagerly
        opts = _check_options(
            float(np.min(rates)),
            center_frequency_hz,
            float(value),
            band,
            noise_band,
            snr_bandwidth_hz,
            pfa,
            resolution_hz,
        )
    options = {
        "center_frequency_hz": opts.center,
        "band": band,
        "noise_band": noise_band,
        "snr_bandwidth_hz": snr_bandwidth_hz,
        "pfa": pfa,
        "resolution_hz": resolution_hz,
    }
    data = xr.DataArray(iq.data, dims=("receiver", "sample"))
    if data.chunks is not None:
        data = data.chunk({"sample": -1})
    out = xr.apply_ufunc(
        _measure_rows,
        data,
        xr.DataArray(rates.astype(np.float64), dims="receiver"),
        xr.DataArray(n_samples.astype(np.int64), dims="receiver"),
        xr.DataArray(cal, dims="receiver"),
        xr.DataArray(ppm_arr, dims="receiver"),
        xr.DataArray(np.arange(n_rx), dims="receiver"),
        input_core_dims=[["sample"], [], [], [], [], []],
        output_core_dims=[["metric"]],
        dask="parallelized",
        dask_gufunc_kwargs={
            "output_sizes": {"metric": len(_FIELDS)},
            "meta": np.empty((0, 0), np.float64),
        },
        kwargs={"names": tuple(names), "options": options},
    )
    table = out.data  # (receiver, metric), numpy or dask
    variables = {}
    for i, f in enumerate(fields(SignalMetrics)):
        column = table[:, i]
        if f.name in _BOOL_FIELDS:
            column = column.astype(bool)
        elif f.name in _INT_FIELDS:
            column = column.astype(np.int64)
        variables[f.name] = xr.Variable(("receiver",), column, attrs=dict(f.metadata))
    bandwidth = {
        "occupied": "the 99 % occupied bandwidth (at least one PSD bin's ENBW)",
        "full": "the sample rate",
    }.get(str(snr_bandwidth_hz), f"{snr_bandwidth_hz} Hz")
    return xr.Dataset(
        variables,
        coords={"receiver": ("receiver", receivers)},
        attrs={
            "center_frequency_hz": math.nan if opts.center is None else opts.center,
            "snr_definition": (
                "snr_db = 10*log10(C / (N0 * snr_bandwidth_hz)), snr_bandwidth_hz = "
                f"{bandwidth}; C = power in the signal band minus the noise in it; N0 = "
                "median of the Welch PSD bins divided by their median/mean ratio under noise"
            ),
        },
    )
