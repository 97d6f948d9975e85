r"""Triggered recording: keep only the frames around the times a signal is present.

A session that records only while something transmits feeds every frame of a receiver to a
:class:`Trigger`. The trigger tests each block of frames for energy in a band at a stated
false-alarm probability, keeps a short pre-trigger ring buffer, and tells the caller which
frames to write and when an event (a run of detections plus its tails) has ended. Pure
numbers: no I/O.

Detector
--------
A block is ``block_frames`` consecutive frames, ``N = block_frames * frame_samples`` complex
samples (full scale 1.0). Its unwindowed FFT ``X_j`` is taken (a rectangular window keeps
the bins of white noise independent), and with ``P_j = |X_j|**2``

.. math:: T = \frac{\frac{1}{K} \sum_{j \in \mathrm{band}} P_j}
                   {\frac{1}{M} \sum_{j \in \mathrm{noise}} P_j}

where the ``K`` band bins are those whose centre frequency is within ``bandwidth_hz / 2`` of
``center_hz``, and the ``M`` noise bins those inside the receiver's passband
(``low_cut .. high_cut``; a real KiwiSDR's IQ is band-limited, +-3 kHz or +-1 kHz typically,
with only the int16 quantisation floor outside) and more than ``guard_hz`` away from the
band. ``T - 1`` estimates the in-band SNR (signal power over noise power in the band).

Under noise alone (complex Gaussian, white over the passband) each ``P_j`` is ``sigma**2 / 2``
times a chi-square variable with 2 degrees of freedom and the bins are independent, so both
sums are scaled chi-squares with ``2K`` and ``2M`` degrees of freedom and ``T`` follows the
F distribution ``F(2K, 2M)`` exactly, whatever the noise level: the noise estimate's own
scatter is taken into account (treating it as exact, ``chi2(2K) / 2K``, would understate
the threshold and raise the false-alarm rate, by a fifth at ``M = 392`` and 1e-2 and more
than threefold at ``M = 42``). The threshold for a false-alarm probability ``pfa`` per
block is

.. math:: \eta = F^{-1}_{2K, 2M}(1 - p_\mathrm{fa}) = \texttt{scipy.stats.f.isf(pfa, 2K, 2M)}.

Limits: noise that is not white over the passband (a filter's roll-off, a sloping floor:
give a passband that excludes them) breaks the exact law. Anything that raises the noise bins
(an interferer, the emission's own leakage through the rectangular window's sidelobes,
reduced by the guard) raises the estimate, which costs sensitivity but never raises the
false-alarm rate.

Rules and rates
---------------
An event opens when ``n`` of the last ``m`` blocks cross the threshold, the latest one
included (``n_of_m``, default 1 of 1). For independent noise blocks that rule fires at a
given block with probability

.. math:: p_\mathrm{rule} = p_\mathrm{fa} \cdot P[\mathrm{Bin}(m-1, p_\mathrm{fa})
          \ge n - 1]

(:func:`n_of_m_pfa`; ``p_fa`` for 1 of 1, ``p_fa ** m`` for m of m). At ``r`` samples per
second there are ``3600 r / N`` blocks an hour, so noise alone opens at most
``p_rule * 3600 r / N`` events an hour (:attr:`Trigger.false_alarms_per_hour`); at 12001 Hz
with one-frame blocks and ``pfa = 1e-6``, about 0.084 an hour, one every 12 hours.

Onset
-----
A block says only that the signal was present somewhere in it, and a weak signal's first
blocks may not cross at all. So when an event opens, :meth:`BandDetector.onset` places the
start of the signal within the frames around the first detected block: the pre-trigger
frames, that block and :data:`ONSET_FRAMES_AFTER` frames after it. The band is filtered out
of them (a linear-phase FIR of the band's width, shifted to ``center_hz``), its power
averaged over steps of :data:`ONSET_STEP` samples (2.7 ms at 12 kHz), and the onset is the
maximum-likelihood change point of that sequence (a step up in the mean of
exponentially distributed powers: the split ``k`` maximising
``-k log(mean before) - (K - k) log(mean after)``), no later than the end of the first
detected block, provided that step explains the powers better than no step at all
(:data:`ONSET_MIN_LLR`): a signal already on when the window starts, or a false alarm,
keeps its first detected block. Its scatter is about a step at high SNR and grows as the
step in power shrinks (tens of ms at 0 dB in the band). :attr:`TriggerEvent.onset_frame` and
:attr:`TriggerEvent.start_time_ns` give it; :attr:`TriggerEvent.start_frame` stays the
first detected block's first frame.

Events
------
While open, every block that crosses the threshold (one block suffices, whatever
``n_of_m``) extends the event; it closes ``post_s`` after the last one. The frames kept are
``pre_s`` before the first detected block (as far as the ring buffer holds them and they
were not kept for an earlier event) to ``post_s`` after the last; ``pre_s`` and ``post_s``
are rounded to whole frames. The ring buffer holds at most ``round(pre_s * r / frame_samples)
+ (m - 1) * block_frames`` frames (the n-of-m window's earlier blocks must be there when the
rule fires), plus the frames of the block being assembled: memory is bounded whatever
the stream's length.

:class:`SmeterTrigger` applies the same buffer and tail logic to a fixed RSSI threshold in dBm,
for comparison: its false-alarm rate is whatever the noise level makes it.
"""

from __future__ import annotations

import functools
import logging
import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.fft
import scipy.signal
import scipy.stats

from heimdall_lab.errors import ValidationError
from heimdall_lab.recording import FRAME_SAMPLES
from heimdall_lab.values import NS_PER_S, positive

__all__ = [
    "DEFAULT_BANDWIDTH_HZ",
    "DEFAULT_GUARD_HZ",
    "DEFAULT_PASSBAND_HZ",
    "DEFAULT_PFA",
    "MIN_NOISE_BINS",
    "ONSET_FRAMES_AFTER",
    "ONSET_MIN_LLR",
    "ONSET_STEP",
    "BandDetector",
    "KeptFrame",
    "SmeterTrigger",
    "Trigger",
    "TriggerEvent",
    "TriggerOutput",
    "detect_events",
    "n_of_m_pfa",
    "smeter_events",
]

logger = logging.getLogger(__name__)

#: Default false-alarm probability per block.
DEFAULT_PFA = 1e-6
#: Default detection band width, Hz (centred on ``center_hz``, 0 Hz by default).
DEFAULT_BANDWIDTH_HZ = 400.0
#: Default receiver passband (low_cut, high_cut), Hz: the noise bins come from inside it.
DEFAULT_PASSBAND_HZ = (-5000.0, 5000.0)
#: Default gap between the band and the noise bins, Hz (keeps the emission's leakage out).
DEFAULT_GUARD_HZ = 200.0
#: Fewest noise bins accepted.
MIN_NOISE_BINS = 16
#: Frames after the first detected block that the onset estimate also looks at.
ONSET_FRAMES_AFTER = 8
#: Samples per step of the band power in which the onset is placed.
ONSET_STEP = 32
#: Smallest ``2 x`` log-likelihood ratio of a step up in the band's power against none for
#: an onset to be placed. Under noise alone, over windows of 21 frames at 12 kHz with a
#: 400 Hz band, its 99.9 % quantile is 14 (3000 windows, measured): 20 leaves a signal that
#: is on from the first frame (or a false alarm) at its first detected block.
ONSET_MIN_LLR = 20.0
_MAX_M = 64
_SECONDS_PER_HOUR = 3600.0


# ----------------------------------------------------------------------------- helpers


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool | np.bool_) or not isinstance(
        value, int | float | np.integer | np.floating
    ):
        raise ValidationError(f"{name} must be a number, got {str(value)[:80]!r}")
    out = float(value)
    if not math.isfinite(out):
        raise ValidationError(f"{name} must be finite, got {value!r}")
    return out


def _check_pfa(pfa: Any) -> float:
    p = _number(pfa, "pfa")
    if not 0.0 < p < 1.0:
        raise ValidationError(
            f"pfa must be a false-alarm probability per block in (0, 1), got {pfa!r}; "
            "e.g. 1e-6 (one false alarm in about 12 hours of 512-sample blocks at 12 kHz)"
        )
    return p


def _check_seconds(value: Any, name: str) -> float:
    return positive(value, name, allow_zero=True, hint="give a duration in seconds, 0 or more")


def _check_n_of_m(n_of_m: Any) -> tuple[int, int]:
    try:
        n, m = n_of_m
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"n_of_m must be a pair (n, m), got {n_of_m!r}") from exc
    for v in (n, m):
        if isinstance(v, bool) or not isinstance(v, int | np.integer):
            raise ValidationError(f"n_of_m must be two whole numbers, got {n_of_m!r}")
    n, m = int(n), int(m)
    if not 1 <= n <= m <= _MAX_M:
        raise ValidationError(
            f"n_of_m must have 1 <= n <= m <= {_MAX_M}, got ({n}, {m}); "
            "(1, 1) opens an event on the first block over the threshold"
        )
    return n, m


def n_of_m_pfa(pfa: float, n: int, m: int) -> float:
    """Probability that the n-of-m rule fires at a given block under noise alone.

    The rule fires at block ``t`` when block ``t`` crosses the threshold and at least
    ``n - 1`` of the ``m - 1`` blocks before it did, the blocks being independent with
    crossing probability ``pfa``.

    Parameters
    ----------
    pfa : float
        False-alarm probability of one block, in (0, 1).
    n, m : int
        The rule: ``1 <= n <= m``.

    Returns
    -------
    float
        ``pfa * P[Binomial(m - 1, pfa) >= n - 1]``.

    Raises
    ------
    ValidationError
        On a bad probability or rule.
    """
    p = _check_pfa(pfa)
    n, m = _check_n_of_m((n, m))
    return p * float(scipy.stats.binom.sf(n - 2, m - 1, p))


# ----------------------------------------------------------------------------- detector


@dataclass(frozen=True, eq=False)
class BandDetector:
    """The block test: in-band energy over the noise in the rest of the passband, F test.

    See the module docstring for the statistic and its null distribution.

    Parameters
    ----------
    sample_rate : float
        Samples per second of the IQ (> 0).
    pfa : float, default 1e-6
        False-alarm probability per block, in (0, 1).
    center_hz : float, default 0.0
        Centre of the detection band, Hz from the tuned frequency.
    bandwidth_hz : float, default 400.0
        Width of the detection band, Hz.
    passband : (float, float), default (-5000.0, 5000.0)
        ``(low_cut, high_cut)`` in Hz: the receiver's usable (flat) passband, within
        ``+-sample_rate / 2``, holding the band; the noise bins come from inside it.
    guard_hz : float, default 200.0
        Bins within this distance of the band are in neither the band nor the noise.
    block_samples : int, default 512
        Samples per block (one KiwiSDR frame; a multiple for longer blocks).

    Attributes
    ----------
    resolution_hz : float
        FFT bin spacing, ``sample_rate / block_samples``.
    band_bins, noise_bins : numpy.ndarray
        Boolean masks over the FFT bins (numpy's FFT order).
    k, m : int
        Numbers of band and noise bins.
    noise_bandwidth_hz : float
        ``k * resolution_hz``: the band's width as the detector sees it (the SNR of
        :meth:`detection_probability` refers to it).
    threshold : float
        ``scipy.stats.f.isf(pfa, 2 k, 2 m)``.

    Raises
    ------
    ValidationError
        On a bad number, a passband not inside ``+-sample_rate / 2``, a band not inside the
        passband or narrower than one bin, or fewer than :data:`MIN_NOISE_BINS` noise bins.
    """

    sample_rate: float
    pfa: float = DEFAULT_PFA
    center_hz: float = 0.0
    bandwidth_hz: float = DEFAULT_BANDWIDTH_HZ
    passband: tuple[float, float] = DEFAULT_PASSBAND_HZ
    guard_hz: float = DEFAULT_GUARD_HZ
    block_samples: int = FRAME_SAMPLES
    resolution_hz: float = field(init=False)
    band_bins: np.ndarray = field(init=False, repr=False)
    noise_bins: np.ndarray = field(init=False, repr=False)
    k: int = field(init=False)
    m: int = field(init=False)
    noise_bandwidth_hz: float = field(init=False)
    threshold: float = field(init=False)

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        fs = positive(self.sample_rate, "sample_rate", hint="samples per second of the IQ")
        put("sample_rate", fs)
        put("pfa", _check_pfa(self.pfa))
        centre = _number(self.center_hz, "center_hz")
        put("center_hz", centre)
        bw = positive(self.bandwidth_hz, "bandwidth_hz", hint="the detection band's width in Hz")
        put("bandwidth_hz", bw)
        guard = positive(self.guard_hz, "guard_hz", allow_zero=True, hint="Hz, 0 or more")
        put("guard_hz", guard)
        n = positive(self.block_samples, "block_samples", whole=True)
        put("block_samples", n)
        try:
            low, high = (_number(v, "passband edge") for v in self.passband)
        except (TypeError, ValueError) as exc:
            raise ValidationError(
                f"passband must be a pair (low_cut, high_cut) in Hz, got {self.passband!r}"
            ) from exc
        if not -fs / 2 <= low < high <= fs / 2:
            raise ValidationError(
                f"passband ({low:g}, {high:g}) Hz must be an ordered pair within "
                f"+-{fs / 2:g} Hz (half the sample rate); e.g. (-3000, 3000) for a KiwiSDR's "
                "+-3 kHz IQ filter"
            )
        put("passband", (low, high))
        lo_band, hi_band = centre - bw / 2, centre + bw / 2
        if lo_band < low or hi_band > high:
            raise ValidationError(
                f"the detection band {lo_band:g} .. {hi_band:g} Hz (center_hz {centre:g}, "
                f"bandwidth_hz {bw:g}) lies outside the passband {low:g} .. {high:g} Hz; "
                "move or narrow the band, or give the receiver's real passband"
            )
        df = fs / n
        freqs = np.fft.fftfreq(n, 1.0 / fs)
        dist = np.abs(freqs - centre)
        band = dist <= bw / 2
        noise = (freqs >= low) & (freqs <= high) & (dist > bw / 2 + guard)
        k, m = int(band.sum()), int(noise.sum())
        if k == 0:
            raise ValidationError(
                f"the detection band ({bw:g} Hz) holds no FFT bin of {df:.4g} Hz; widen "
                "bandwidth_hz or use longer blocks (block_frames)"
            )
        if m < MIN_NOISE_BINS:
            raise ValidationError(
                f"only {m} FFT bins of {df:.4g} Hz to estimate the noise from (need "
                f"{MIN_NOISE_BINS}): widen the passband, narrow the band or guard_hz, or use "
                "longer blocks"
            )
        band.setflags(write=False)
        noise.setflags(write=False)
        put("resolution_hz", df)
        put("band_bins", band)
        put("noise_bins", noise)
        put("k", k)
        put("m", m)
        put("noise_bandwidth_hz", k * df)
        put("threshold", float(scipy.stats.f.isf(self.pfa, 2 * k, 2 * m)))

    @property
    def block_s(self) -> float:
        """Duration of one block, seconds."""
        return self.block_samples / self.sample_rate

    def statistic(self, blocks: np.ndarray) -> np.ndarray:
        """The test statistic ``T`` of each block.

        Parameters
        ----------
        blocks : numpy.ndarray
            Complex samples, shape ``(..., block_samples)``.

        Returns
        -------
        numpy.ndarray
            ``T`` per block, shape ``blocks.shape[:-1]`` (float64); ``inf`` for a block with
            band but no noise energy, 0 for an all-zero block.

        Raises
        ------
        ValidationError
            If the last dimension is not ``block_samples`` long or the samples are not
            complex.
        """
        x = np.asarray(blocks)
        if not np.issubdtype(x.dtype, np.complexfloating):
            raise ValidationError(
                f"blocks must be complex IQ samples, got dtype {x.dtype}; build them as "
                "(i + 1j * q) / 32768 from int16 pairs"
            )
        if x.ndim == 0 or x.shape[-1] != self.block_samples:
            raise ValidationError(
                f"blocks must have {self.block_samples} samples along their last axis, got "
                f"shape {x.shape}"
            )
        spec = scipy.fft.fft(x, axis=-1)
        power = spec.real**2 + spec.imag**2
        band = power[..., self.band_bins].mean(axis=-1, dtype=np.float64)
        noise = power[..., self.noise_bins].mean(axis=-1, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = band / noise
        return np.where(noise > 0, t, np.where(band > 0, np.inf, 0.0))

    def onset(self, samples: np.ndarray, *, latest: int | None = None) -> int | None:
        """Where the power in the band most likely steps up: the signal's onset.

        The band is filtered out of ``samples`` (a linear-phase FIR low-pass of half the
        band's width after shifting ``center_hz`` to 0; zero-phase, as the output is aligned
        with the input), its power averaged over steps of :data:`ONSET_STEP` samples, and
        the maximum-likelihood change point of those means is returned: the split ``k``
        maximising ``-k log(mean before) - (K - k) log(mean after)`` with the mean after
        above the mean before, when twice its log-likelihood ratio against no step at all
        (``K log(mean)``) is at least :data:`ONSET_MIN_LLR`.

        Parameters
        ----------
        samples : numpy.ndarray
            Contiguous complex samples, 1-D.
        latest : int, optional
            The onset is before this sample (e.g. the end of the first block that crossed
            the threshold).

        Returns
        -------
        int or None
            Sample index of the onset (a multiple of the step, from the start of
            ``samples``); None when there are too few samples (fewer than four steps beyond
            the filter's length) or no clear step up in power.
        """
        x = np.asarray(samples)
        taps = self._onset_taps
        half = (len(taps) - 1) // 2
        if x.ndim != 1 or len(x) < len(taps) + 4 * ONSET_STEP:
            return None
        n = np.arange(len(x))
        if self.center_hz:
            x = x * np.exp(-2j * np.pi * self.center_hz / self.sample_rate * n)
        y = scipy.signal.oaconvolve(x, taps, mode="valid")  # y[i] is centred on x[i + half]
        steps = len(y) // ONSET_STEP
        power = (y.real**2 + y.imag**2)[: steps * ONSET_STEP].reshape(steps, ONSET_STEP)
        total = np.concatenate([[0.0], np.cumsum(power.mean(axis=1, dtype=np.float64))])
        k = np.arange(1, steps)
        if latest is not None:
            k = k[k * ONSET_STEP + half < latest]
        if not len(k):
            return None
        before = total[k] / k
        after = (total[-1] - total[k]) / (steps - k)
        with np.errstate(divide="ignore", invalid="ignore"):
            ll = -k * np.log(before) - (steps - k) * np.log(after)
        ll = np.where((after > before) & np.isfinite(ll), ll, -np.inf)
        if not np.isfinite(ll).any() or not total[-1] > 0:
            return None
        best = int(np.argmax(ll))
        none = -steps * math.log(total[-1] / steps)  # the same powers without a step
        if 2.0 * (ll[best] - none) < ONSET_MIN_LLR:
            return None
        return int(k[best]) * ONSET_STEP + half

    @functools.cached_property
    def _onset_taps(self) -> np.ndarray:
        """The band's low-pass FIR (odd length, about four times the band's inverse width)."""
        numtaps = 2 * math.ceil(2 * self.sample_rate / self.bandwidth_hz) + 1
        return scipy.signal.firwin(numtaps, self.bandwidth_hz / 2, fs=self.sample_rate)

    def detection_probability(self, snr_db: float | np.ndarray) -> float | np.ndarray:
        """Probability that a block crosses the threshold, for a signal in the band.

        The signal is steady over the block with all its power in the band bins; its SNR is
        its power over the noise power in :attr:`noise_bandwidth_hz`. Then ``T`` follows the
        noncentral F distribution with noncentrality ``2 k * SNR``.

        Parameters
        ----------
        snr_db : float or numpy.ndarray
            In-band SNR, dB.

        Returns
        -------
        float or numpy.ndarray
            The probability of detection per block.
        """
        snr = 10.0 ** (np.asarray(snr_db, dtype=np.float64) / 10.0)
        out = scipy.stats.ncf.sf(self.threshold, 2 * self.k, 2 * self.m, 2 * self.k * snr)
        return float(out) if np.ndim(out) == 0 else out


# ----------------------------------------------------------------------------- records


@dataclass(frozen=True, eq=False, slots=True)
class KeptFrame:
    """A frame the caller should write now.

    Attributes
    ----------
    index : int
        The frame index the caller fed it with.
    samples : numpy.ndarray or None
        Its samples, as fed.
    gnss_time_ns : int or None
        Its GNSS time, as fed (ns, any epoch the caller uses; None when unknown).
    event : int
        Number of the event it belongs to (0, 1, ... in the order events open).
    """

    index: int
    samples: np.ndarray | None
    gnss_time_ns: int | None
    event: int


@dataclass(frozen=True)
class TriggerEvent:
    """One closed event: a run of detections and the frames kept around it.

    Attributes
    ----------
    event : int
        Its number (0, 1, ...).
    start_frame, end_frame : int
        First frame of the first block that crossed the threshold, and last frame of the
        last one (inclusive).
    onset_frame : float
        Where the signal began, in frames (fractional): for the band detector the change
        point of the band's power (:meth:`BandDetector.onset`, see the module notes), which
        may lie before ``start_frame`` when the first blocks of a weak signal did not
        cross; ``start_frame`` itself for the S-meter trigger, or when it cannot be placed.
    first_kept_frame, last_kept_frame : int
        The frames kept: up to ``pre_s`` before ``start_frame`` and ``post_s`` after
        ``end_frame`` (fewer at the start or end of the stream, or after an earlier event).
    start_time_ns, end_time_ns : int or None
        GNSS time of the onset (``onset_frame``: its frame's time plus the fraction of a
        frame), and of the end of ``end_frame`` (its first sample's time plus one frame);
        None when the frame's time is unknown.
    peak_statistic : float
        Largest statistic of the event's blocks: ``T`` for :class:`Trigger`, RSSI in dBm for
        :class:`SmeterTrigger`.
    threshold : float
        The threshold it was compared with (same units).
    pfa : float
        The false-alarm probability per block of the rule that opened it
        (:func:`n_of_m_pfa`); NaN for the S-meter trigger, whose rate is not controlled.
    detector : str
        ``"band"`` or ``"smeter"``.
    """

    event: int
    start_frame: int
    end_frame: int
    onset_frame: float
    first_kept_frame: int
    last_kept_frame: int
    start_time_ns: int | None
    end_time_ns: int | None
    peak_statistic: float
    threshold: float
    pfa: float
    detector: str

    @property
    def peak_snr_db(self) -> float:
        """In-band SNR estimate at the peak, ``10 log10(T - 1)`` (band detector; else NaN)."""
        if self.detector != "band" or not self.peak_statistic > 1.0:
            return math.nan
        return 10.0 * math.log10(self.peak_statistic - 1.0)


@dataclass(frozen=True)
class TriggerOutput:
    """What one :meth:`Trigger.feed` (or :meth:`~Trigger.flush`) asks the caller to do.

    Attributes
    ----------
    frames : tuple of KeptFrame
        Frames to write now, in index order (pre-trigger frames when an event opens, then
        the event's frames as they arrive).
    events : tuple of TriggerEvent
        Events that closed with this call; every frame of them has been handed out.
    """

    frames: tuple[KeptFrame, ...] = ()
    events: tuple[TriggerEvent, ...] = ()


@dataclass
class _Open:
    number: int
    start_frame: int
    start_time: int | None
    first_kept: int
    last_kept: int
    last_detection: int
    last_detection_time: int | None
    peak: float
    onset: float
    # Frames around the first detection, until the onset is placed (then None).
    onset_frames: list[_Frame] | None = None


@dataclass(frozen=True, slots=True)
class _Frame:
    index: int
    samples: np.ndarray | None
    time: int | None


# ----------------------------------------------------------------------------- the gate


class _Gate:
    """Pre-trigger ring buffer, n-of-m opening, post-trigger tail: decisions per block."""

    detector_name = ""

    def __init__(
        self,
        *,
        sample_rate: float,
        frame_samples: int,
        block_frames: int,
        pre_s: float,
        post_s: float,
        n_of_m: tuple[int, int],
        threshold: float,
        rule_pfa: float,
    ) -> None:
        self.sample_rate = sample_rate
        self.frame_samples = frame_samples
        self.block_frames = block_frames
        self.pre_s = _check_seconds(pre_s, "pre_s")
        self.post_s = _check_seconds(post_s, "post_s")
        self.n_of_m = _check_n_of_m(n_of_m)
        frame_s = frame_samples / sample_rate
        #: Pre-trigger frames kept before the first detected block.
        self.pre_frames = round(self.pre_s / frame_s)
        #: Frames kept after the last detected block.
        self.post_frames = round(self.post_s / frame_s)
        #: Most frames the ring buffer holds.
        self.buffer_capacity = self.pre_frames + (self.n_of_m[1] - 1) * block_frames
        self._threshold = threshold
        self._rule_pfa = rule_pfa
        self._frame_ns = frame_s * NS_PER_S
        self._ring: deque[_Frame] = deque()
        self._pending: list[_Frame] = []
        self._window: deque[tuple[bool, _Frame, float]] = deque(maxlen=self.n_of_m[1])
        self._open: _Open | None = None
        self._last_index: int | None = None
        self._events = 0
        #: Blocks tested, and how many crossed the threshold.
        self.blocks_tested = 0
        self.blocks_crossed = 0

    # ---- public ------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """Whether an event is open (frames are being kept)."""
        return self._open is not None

    @property
    def buffered_frames(self) -> int:
        """Frames in the pre-trigger ring buffer now (at most :attr:`buffer_capacity`)."""
        return len(self._ring)

    def flush(self) -> TriggerOutput:
        """End of stream: close an open event and drop the buffered frames.

        The frames of an incomplete last block are kept if an event is open and they are
        within its tail; they are not tested.

        Returns
        -------
        TriggerOutput
            The last frames to write and the closed event, if one was open.
        """
        frames: list[KeptFrame] = []
        events: list[TriggerEvent] = []
        ev = self._open
        if ev is not None:
            for f in self._pending:
                if f.index <= ev.last_detection + self.post_frames:
                    frames.append(self._keep(f))
            events.append(self._close())
        self._pending.clear()
        self._ring.clear()
        self._window.clear()
        return TriggerOutput(tuple(frames), tuple(events))

    # ---- internals ---------------------------------------------------------------------

    def _check_index(self, frame_index: Any, gnss_time_ns: Any) -> tuple[int, int | None]:
        if isinstance(frame_index, bool) or not isinstance(frame_index, int | np.integer):
            raise ValidationError(f"frame_index must be a whole number, got {frame_index!r}")
        index = int(frame_index)
        if self._last_index is not None and index <= self._last_index:
            raise ValidationError(
                f"frame_index must increase from frame to frame: {index} follows {self._last_index}"
            )
        if gnss_time_ns is not None and (
            isinstance(gnss_time_ns, bool) or not isinstance(gnss_time_ns, int | np.integer)
        ):
            raise ValidationError(
                f"gnss_time_ns must be integer ns or None, got {str(gnss_time_ns)[:40]!r}"
            )
        return index, None if gnss_time_ns is None else int(gnss_time_ns)

    def _add(self, frame: _Frame) -> list[_Frame] | None:
        """Append a frame to the block being assembled; the whole block when complete."""
        self._last_index = frame.index
        self._pending.append(frame)
        if len(self._pending) < self.block_frames:
            return None
        block, self._pending = self._pending, []
        return block

    def _keep(self, f: _Frame) -> KeptFrame:
        assert self._open is not None
        self._open.last_kept = f.index
        return KeptFrame(f.index, f.samples, f.time, self._open.number)

    def _close(self) -> TriggerEvent:
        ev = self._open
        assert ev is not None
        self._open = None
        end_time = (
            None
            if ev.last_detection_time is None
            else ev.last_detection_time + round(self._frame_ns)
        )
        self._place_onset(ev)
        event = TriggerEvent(
            event=ev.number,
            start_frame=ev.start_frame,
            end_frame=ev.last_detection,
            onset_frame=ev.onset,
            first_kept_frame=ev.first_kept,
            last_kept_frame=ev.last_kept,
            start_time_ns=ev.start_time,
            end_time_ns=end_time,
            peak_statistic=ev.peak,
            threshold=self._threshold,
            pfa=self._rule_pfa,
            detector=self.detector_name,
        )
        logger.debug(
            "trigger event %d closed: frames %d-%d", ev.number, ev.start_frame, ev.last_detection
        )
        return event

    def _on_block(self, block: list[_Frame], crossed: bool, stat: float) -> TriggerOutput:
        self.blocks_tested += 1
        self.blocks_crossed += int(crossed)
        kept: list[KeptFrame] = []
        closed: list[TriggerEvent] = []
        ev = self._open
        if ev is not None:
            if ev.onset_frames is not None:
                ev.onset_frames.extend(block)
                if block[-1].index >= ev.start_frame + self.block_frames - 1 + ONSET_FRAMES_AFTER:
                    self._place_onset(ev)
            if crossed:
                ev.last_detection = block[-1].index
                ev.last_detection_time = block[-1].time
                ev.peak = max(ev.peak, stat)
                kept.extend(self._keep(f) for f in block)
                return TriggerOutput(tuple(kept))
            limit = ev.last_detection + self.post_frames
            rest = []
            for f in block:
                if f.index <= limit:
                    kept.append(self._keep(f))
                else:
                    rest.append(f)
            if block[-1].index >= limit:
                closed.append(self._close())
                self._to_ring(rest)
            return TriggerOutput(tuple(kept), tuple(closed))

        self._window.append((crossed, block[0], stat))
        n, _ = self.n_of_m
        hits = [(f, s) for c, f, s in self._window if c]
        if crossed and len(hits) >= n:
            first = hits[0][0]
            earliest = first.index - self.pre_frames
            released = [f for f in self._ring if f.index >= earliest]
            self._ring.clear()
            self._window.clear()
            self._open = _Open(
                number=self._events,
                start_frame=first.index,
                start_time=first.time,
                first_kept=released[0].index if released else block[0].index,
                last_kept=block[-1].index,
                last_detection=block[-1].index,
                last_detection_time=block[-1].time,
                peak=max(s for _, s in hits),
                onset=float(first.index),
                onset_frames=[*released, *block],
            )
            self._events += 1
            logger.debug("trigger event %d opened at frame %d", self._open.number, first.index)
            kept.extend(self._keep(f) for f in released)
            kept.extend(self._keep(f) for f in block)
            return TriggerOutput(tuple(kept))
        self._to_ring(block)
        return TriggerOutput()

    def _place_onset(self, ev: _Open) -> None:
        """Place the event's onset from the frames gathered around its first detection."""
        frames, ev.onset_frames = ev.onset_frames, None
        if frames is None:
            return
        onset = self._onset(frames, ev.start_frame)
        if onset is None:
            return
        ev.onset = onset
        # From the onset's own frame's time, else from the nearest frame with one.
        timed = [f for f in frames if f.time is not None]
        ref = min(timed, key=lambda f: abs(f.index - onset), default=None)
        ev.start_time = (
            None if ref is None else ref.time + round((onset - ref.index) * self._frame_ns)
        )

    def _onset(self, frames: list[_Frame], first: int) -> float | None:
        """The onset in frames (fractional); None to keep the first detected frame.

        ``frames`` are the ones around the first detection, at frame ``first``. The S-meter
        gate cannot say.
        """
        return None

    def _to_ring(self, frames: Iterable[_Frame]) -> None:
        ring = self._ring
        ring.extend(frames)
        while len(ring) > self.buffer_capacity:
            ring.popleft()


# ----------------------------------------------------------------------------- triggers


def _check_samples(samples: Any, length: int) -> np.ndarray:
    x = np.asarray(samples)
    if not np.issubdtype(x.dtype, np.complexfloating):
        raise ValidationError(
            f"samples must be complex IQ (complex64 or complex128), got dtype {x.dtype}; build "
            "them as (i + 1j * q) / 32768 from int16 pairs"
        )
    if x.shape != (length,):
        raise ValidationError(f"samples must be one frame of {length} samples, got shape {x.shape}")
    return x


class Trigger(_Gate):
    """Triggered recording with the band detector, fed frame by frame.

    Parameters
    ----------
    sample_rate : float
        Samples per second of the IQ (a KiwiSDR's announced rate, about 12001 Hz).
    pfa : float, default 1e-6
        False-alarm probability per block, in (0, 1).
    center_hz, bandwidth_hz, passband, guard_hz
        The detection band and the receiver passband, as for :class:`BandDetector`.
    block_frames : int, default 1
        Frames per block; each block is tested once, when its last frame arrives.
    frame_samples : int, default 512
        Samples per frame.
    pre_s, post_s : float, default 1.0
        Seconds kept before the first and after the last detected block (>= 0; rounded to
        whole frames).
    n_of_m : (int, int), default (1, 1)
        Open an event when ``n`` of the last ``m`` blocks cross the threshold.

    Attributes
    ----------
    detector : BandDetector
        The block test (its ``threshold`` and ``pfa``).
    rule_pfa : float
        False-alarm probability per block of the opening rule (:func:`n_of_m_pfa`).
    blocks_per_hour, false_alarms_per_hour : float
        Blocks tested per hour at ``sample_rate``, and the events noise alone opens per
        hour, at most (``rule_pfa * blocks_per_hour``).
    pre_frames, post_frames, buffer_capacity : int
        The pre- and post-trigger lengths in frames; the ring buffer's largest size.

    Raises
    ------
    ValidationError
        On any bad parameter (see :class:`BandDetector`), negative ``pre_s`` / ``post_s``
        or a bad ``n_of_m``.

    Examples
    --------
    >>> trig = Trigger(12001.135, pfa=1e-6, passband=(-3000, 3000))
    >>> for index, (samples, t_ns) in enumerate(frames):  # doctest: +SKIP
    ...     out = trig.feed(samples, index, t_ns)
    ...     write(out.frames)
    ...     record(out.events)
    >>> record(trig.flush().events)  # doctest: +SKIP
    """

    detector_name = "band"

    def __init__(
        self,
        sample_rate: float,
        *,
        pfa: float = DEFAULT_PFA,
        center_hz: float = 0.0,
        bandwidth_hz: float = DEFAULT_BANDWIDTH_HZ,
        passband: tuple[float, float] = DEFAULT_PASSBAND_HZ,
        guard_hz: float = DEFAULT_GUARD_HZ,
        block_frames: int = 1,
        frame_samples: int = FRAME_SAMPLES,
        pre_s: float = 1.0,
        post_s: float = 1.0,
        n_of_m: tuple[int, int] = (1, 1),
    ) -> None:
        frame_samples = positive(frame_samples, "frame_samples", whole=True)
        block_frames = positive(block_frames, "block_frames", whole=True)
        self.detector = BandDetector(
            sample_rate,
            pfa=pfa,
            center_hz=center_hz,
            bandwidth_hz=bandwidth_hz,
            passband=passband,
            guard_hz=guard_hz,
            block_samples=block_frames * frame_samples,
        )
        n, m = _check_n_of_m(n_of_m)
        self.rule_pfa = n_of_m_pfa(self.detector.pfa, n, m)
        super().__init__(
            sample_rate=self.detector.sample_rate,
            frame_samples=frame_samples,
            block_frames=block_frames,
            pre_s=pre_s,
            post_s=post_s,
            n_of_m=(n, m),
            threshold=self.detector.threshold,
            rule_pfa=self.rule_pfa,
        )
        self.blocks_per_hour = _SECONDS_PER_HOUR / self.detector.block_s
        self.false_alarms_per_hour = self.rule_pfa * self.blocks_per_hour
        logger.info(
            "trigger: band %g Hz +- %g Hz, threshold T > %.4g (F(%d, %d)), pfa %.3g per block "
            "of %d samples, %d of %d blocks -> %.3g per block, at most %.3g false alarms per "
            "hour",
            self.detector.center_hz,
            self.detector.bandwidth_hz / 2,
            self.detector.threshold,
            2 * self.detector.k,
            2 * self.detector.m,
            self.detector.pfa,
            self.detector.block_samples,
            n,
            m,
            self.rule_pfa,
            self.false_alarms_per_hour,
        )

    def feed(
        self, samples: np.ndarray, frame_index: int, gnss_time_ns: int | None = None
    ) -> TriggerOutput:
        """Take the next frame; say which frames to write now and which events closed.

        Parameters
        ----------
        samples : numpy.ndarray
            The frame's complex samples (``frame_samples`` of them, full scale 1.0). Kept by
            reference until handed back or dropped: do not modify it afterwards.
        frame_index : int
            The frame's index in the stream; strictly increasing (gaps count as time).
        gnss_time_ns : int, optional
            GNSS time of its first sample, ns; carried into the events and kept frames.

        Returns
        -------
        TriggerOutput
            Frames to write now and events that closed.

        Raises
        ------
        ValidationError
            If the samples are not one complex frame or the index does not increase.
        """
        x = _check_samples(samples, self.frame_samples)
        index, t = self._check_index(frame_index, gnss_time_ns)
        block = self._add(_Frame(index, x, t))
        if block is None:
            return TriggerOutput()
        data = block[0].samples if len(block) == 1 else np.concatenate([f.samples for f in block])
        stat = float(self.detector.statistic(data))
        return self._on_block(block, stat > self.detector.threshold, stat)

    def _onset(self, frames: list[_Frame], first: int) -> float | None:
        # The run of consecutive, finite frames that holds the first detected block (a lost
        # frame, or one filled with NaN, breaks it).
        run: list[_Frame] = []
        for f in frames:
            usable = f.samples is not None and bool(np.isfinite(f.samples).all())
            if run and (f.index != run[-1].index + 1 or not usable):
                if run[-1].index >= first:
                    break
                run = []
            if usable:
                run.append(f)
        if not run or run[0].index > first or run[-1].index < first:
            return None
        x = np.concatenate([f.samples for f in run])
        latest = (first - run[0].index + self.block_frames) * self.frame_samples
        k = self.detector.onset(x, latest=latest)
        return None if k is None else run[0].index + k / self.frame_samples


class SmeterTrigger(_Gate):
    """Triggered recording on a fixed S-meter (RSSI) threshold, for comparison.

    The same ring buffer, n-of-m rule and tail as :class:`Trigger`, with the frame's RSSI
    over ``threshold_dbm`` as the test (one frame per block). Its false-alarm rate depends on
    the receiver's noise level and calibration, and is not stated (``pfa`` is NaN).

    Parameters
    ----------
    threshold_dbm : float
        A frame whose RSSI exceeds this (dBm) is a detection.
    sample_rate : float
        Samples per second (for ``pre_s`` / ``post_s`` in frames).
    frame_samples : int, default 512
        Samples per frame.
    pre_s, post_s : float, default 1.0
        As for :class:`Trigger`.
    n_of_m : (int, int), default (1, 1)
        As for :class:`Trigger`.

    Raises
    ------
    ValidationError
        On a non-finite threshold or any bad parameter.
    """

    detector_name = "smeter"

    def __init__(
        self,
        threshold_dbm: float,
        sample_rate: float,
        *,
        frame_samples: int = FRAME_SAMPLES,
        pre_s: float = 1.0,
        post_s: float = 1.0,
        n_of_m: tuple[int, int] = (1, 1),
    ) -> None:
        self.threshold_dbm = _number(threshold_dbm, "threshold_dbm")
        super().__init__(
            sample_rate=positive(sample_rate, "sample_rate"),
            frame_samples=positive(frame_samples, "frame_samples", whole=True),
            block_frames=1,
            pre_s=pre_s,
            post_s=post_s,
            n_of_m=n_of_m,
            threshold=self.threshold_dbm,
            rule_pfa=math.nan,
        )

    def feed(
        self,
        samples: np.ndarray | None,
        frame_index: int,
        gnss_time_ns: int | None,
        rssi_dbm: float,
    ) -> TriggerOutput:
        """Take the next frame and its RSSI; as :meth:`Trigger.feed`.

        Parameters
        ----------
        samples : numpy.ndarray or None
            The frame's samples, handed back in :class:`KeptFrame` (not inspected).
        frame_index : int
            Strictly increasing frame index.
        gnss_time_ns : int or None
            GNSS time of the frame's first sample, ns.
        rssi_dbm : float
            The frame's S-meter reading, dBm (NaN: no detection).

        Returns
        -------
        TriggerOutput
            Frames to write now and events that closed.

        Raises
        ------
        ValidationError
            If the index does not increase or the RSSI is not a number.
        """
        index, t = self._check_index(frame_index, gnss_time_ns)
        if isinstance(rssi_dbm, bool) or not isinstance(
            rssi_dbm, int | float | np.integer | np.floating
        ):
            raise ValidationError(f"rssi_dbm must be a number, got {rssi_dbm!r}")
        rssi = float(rssi_dbm)
        block = self._add(_Frame(index, samples, t))
        assert block is not None  # one frame per block
        crossed = bool(rssi > self.threshold_dbm)  # NaN compares False
        return self._on_block(block, crossed, rssi if math.isfinite(rssi) else -math.inf)


# ----------------------------------------------------------------------------- whole arrays


def _frame_times(frame_times_ns: Sequence[int] | np.ndarray | None, n: int) -> list[int | None]:
    if frame_times_ns is None:
        return [None] * n
    times = np.asarray(frame_times_ns)
    if times.shape != (n,) or not np.issubdtype(times.dtype, np.integer):
        raise ValidationError(
            f"frame_times_ns must hold one integer ns time per frame ({n}), got "
            f"shape {times.shape} and dtype {times.dtype}"
        )
    return [int(t) for t in times]


def detect_events(
    iq: np.ndarray,
    sample_rate: float,
    *,
    frame_times_ns: Sequence[int] | np.ndarray | None = None,
    first_frame: int = 0,
    **options: Any,
) -> list[TriggerEvent]:
    """Run a :class:`Trigger` over a whole recording and return its events.

    Parameters
    ----------
    iq : numpy.ndarray
        Complex samples, either ``(n_frames, frame_samples)`` or 1-D (cut into frames; a
        last partial frame is left out).
    sample_rate : float
        Samples per second.
    frame_times_ns : sequence of int, optional
        GNSS time of each frame's first sample, ns.
    first_frame : int, default 0
        Index of the first frame.
    **options
        :class:`Trigger` keyword arguments (``pfa``, ``passband``, ``pre_s``, ...).

    Returns
    -------
    list of TriggerEvent
        The events, in order (one still open at the end is closed).

    Raises
    ------
    ValidationError
        On bad samples, times or options.
    """
    trig = Trigger(sample_rate, **options)
    x = np.asarray(iq)
    if x.ndim == 1:
        n = len(x) // trig.frame_samples
        x = x[: n * trig.frame_samples].reshape(n, trig.frame_samples)
    if x.ndim != 2:
        raise ValidationError(f"iq must be 1-D or (n_frames, frame_samples), got shape {x.shape}")
    times = _frame_times(frame_times_ns, len(x))
    events: list[TriggerEvent] = []
    for i, (frame, t) in enumerate(zip(x, times, strict=True)):
        events.extend(trig.feed(frame, first_frame + i, t).events)
    events.extend(trig.flush().events)
    return events


def smeter_events(
    rssi_dbm: Sequence[float] | np.ndarray,
    threshold_dbm: float,
    sample_rate: float,
    *,
    frame_times_ns: Sequence[int] | np.ndarray | None = None,
    first_frame: int = 0,
    **options: Any,
) -> list[TriggerEvent]:
    """The events of an S-meter threshold trigger over a run of frames' RSSI.

    Parameters
    ----------
    rssi_dbm : sequence of float
        RSSI of each frame, dBm.
    threshold_dbm : float
        Detection threshold, dBm.
    sample_rate : float
        Samples per second.
    frame_times_ns : sequence of int, optional
        GNSS time of each frame's first sample, ns.
    first_frame : int, default 0
        Index of the first frame.
    **options
        :class:`SmeterTrigger` keyword arguments (``pre_s``, ``post_s``, ``n_of_m``,
        ``frame_samples``).

    Returns
    -------
    list of TriggerEvent
        The events, in order.

    Raises
    ------
    ValidationError
        On bad values or options.
    """
    trig = SmeterTrigger(threshold_dbm, sample_rate, **options)
    rssi = np.asarray(rssi_dbm, dtype=np.float64)
    if rssi.ndim != 1:
        raise ValidationError(f"rssi_dbm must be 1-D, one value per frame, got shape {rssi.shape}")
    times = _frame_times(frame_times_ns, len(rssi))
    events: list[TriggerEvent] = []
    for i, (value, t) in enumerate(zip(rssi, times, strict=True)):
        events.extend(trig.feed(None, first_frame + i, t, float(value)).events)
    events.extend(trig.flush().events)
    return events
