r"""Synthetic receiver streams: what each KiwiSDR of a scenario would hear, frame by frame.

A :class:`Scenario` is one transmitter (or none) and a set of receiving :class:`Site`\ s. For a
site tuned to a frequency it produces a :class:`SynthStream`, a :class:`FrameSource` that the
KiwiSDR emulator (:mod:`heimdall_lab.emulate.server`) sends frame by frame. Everything is
deterministic under the scenario's seed, and :meth:`Scenario.truth` gives the exact ground
truth the synthesis uses, for testing signal metrics and TDoA localisation.

Time
----
The absolute time axis is UTC as ``numpy.datetime64[ns]`` counts it (POSIX seconds since
1970-01-01, no leap seconds). A stream starts at ``start_utc`` (an integer number of ns);
its sample ``n`` is at

.. math:: t_n = t_\mathrm{start} + n / r, \qquad r = r_\mathrm{nom} (1 + \epsilon_r 10^{-6})

where ``r_nom`` is the scenario's :attr:`Scenario.nominal_rate` (the rate the emulator
announces) and ``epsilon_r`` the site's :attr:`Site.rate_error_ppm`. Frame ``k`` holds samples
``512 k ... 512 k + 511`` and its GNSS timestamp (``gpssec``/``gpsnsec`` of the GPS week, via
:func:`heimdall_lab.gnss.utc_to_tow`, so leap seconds are applied) is the true time of its
first sample plus the site's GNSS bias :attr:`Site.timing_bias_ns`, rounded to the ns, plus
optional uniform jitter within +-:attr:`Site.timestamp_jitter_ns` drawn from the seed. **Bias
sign**: a site with a positive bias stamps each frame later than its first sample was taken,
so everything it hears appears ``timing_bias_ns`` late: the delay a localizer measures at
this site is too large by ``timing_bias_ns``. Like a real KiwiSDR, the first
:data:`STALE_FRAMES` frame(s) of a stream carry a stale timestamp, :data:`STALE_OFFSET_S`
seconds early. ``last_gps_solution`` counts ``0 .. GPS_FIX_INTERVAL_S - 1`` seconds since
the last fix, or is :data:`NO_FIX_SOLUTION` (254) on every frame of a site without a fix
(whose timestamps are then still the true times; clients must not trust them).

Signal
------
A site at WGS84 geodesic distance ``d`` from the transmitter
(:func:`heimdall_lab.geo.distance_m`) hears its ground wave with delay
``tau_g = Propagation(velocity_factor=v).ground_delay_s(d)`` (:mod:`heimdall_lab.propagation`;
``d / c`` at the default :attr:`Site.velocity_factor` ``v = 1``), and the signal goes through
the receiver's filters, which delay it by :attr:`Site.filter_delay_ns` ``D`` more, so
``tau = tau_g + D``. Tuned to ``frequency_hz``, its baseband signal is

.. math:: s(t) = A\, a(t-\tau)\, \exp\!\big(j 2\pi [f_\mathrm{tx} (t-\tau) + \mu(t-\tau)]
          - j 2\pi f_\mathrm{LO}\, t\big) + s_\mathrm{sky}(t) + w(t),
          \qquad f_\mathrm{LO} = f_\mathrm{tuned} (1 + \mathrm{ppm}\cdot 10^{-6})

with ``t`` absolute time in seconds. So the **ppm sign convention** is: a positive
:attr:`Site.ppm` means the local oscillator runs *high*, and the carrier appears at the
baseband offset ``f_tx - f_LO``, i.e. *lower* by ``f_tuned * ppm * 1e-6``. The transmitter's
phase ``2 pi f_tx t`` is a function of absolute time, so all sites are mutually coherent
(apart from their own LO errors), and the modulation ``a`` (amplitude) / ``mu`` (phase, in
cycles) is a function of absolute emission time ``t - tau``: keying edges reach each site
delayed by its ``tau``, which is exactly what TDoA measures. Note that a real KiwiSDR derives
its LO and its sample clock from one oscillator; here :attr:`Site.ppm` and
:attr:`Site.rate_error_ppm` are independent.

The filter delay moves the whole received signal (carrier phase and modulation, as if the
path were ``c D`` longer), not the noise and not the timestamps.

A site with :attr:`Site.sky_amplitude` ``g > 0`` also hears a one-hop sky wave: the same
emission over the delay ``tau_s = Propagation(mode="sky",
layer_height_km=h).sky_delay_s(d) + D`` (:attr:`Site.sky_layer_height_km` ``h``), i.e. with
the modulation and carrier of the earlier emission time ``t - tau_s``, times
``g exp(j (phi_0 + 2 pi f_d t))`` (:attr:`Site.sky_phase_deg` ``phi_0``,
:attr:`Site.sky_drift_hz` ``f_d``, ``t`` absolute time):

.. math:: s_\mathrm{sky}(t) = g A\, a(t-\tau_s)\, \exp\!\big(j 2\pi [f_\mathrm{tx}
          (t-\tau_s) + \mu(t-\tau_s) + f_d t + \phi_0 / 360] - j 2\pi f_\mathrm{LO}\,
          t\big)

Its carrier is therefore at ``phi_0 + 2 pi f_d t - 2 pi f_tx (tau_s - tau_g)`` relative to
the ground wave's.

Phases are computed without precision loss over any stream length: the phase at each
frame's first sample and the emission time are evaluated in exact rational arithmetic
(integers), and only the offsets within one frame (under 43 ms) in float64.

Modulations (:attr:`Transmitter.modulation`):

``"carrier"``
    ``a = 1``, ``mu = 0``.
``"ook"``
    Amplitude keying like DCF77: at the start of every UTC second the amplitude drops from 1
    to :attr:`Transmitter.keying_depth` for 0.1 s (bit 0) or 0.2 s (bit 1); the bit of each
    second is a hash of the seed and the second (:meth:`Scenario.ook_key_durations`). Edges
    are raised-cosine ramps :attr:`Transmitter.keying_edge_s` wide (0 = hard), centred on the
    nominal edge times, so the edge time is encoded with sub-sample resolution.
``"fsk"``
    Binary continuous-phase FSK at :attr:`Transmitter.fsk_baud` symbols/s; symbol ``k``
    occupies emission times ``[k, k + 1) / baud`` (seconds since 1970) and has instantaneous
    frequency ``f_tx + d_k * fsk_shift_hz / 2`` with ``d_k = +-1``. The symbols are a random
    message of :data:`FSK_MESSAGE_BITS` bits from the seed, repeated
    (:meth:`Scenario.fsk_symbols`); the phase is continuous over all of time.
``"burst"``
    Intermittent bursts of the carrier at known times (:attr:`Transmitter.bursts`): burst
    ``i`` is on from emission time ``E + start_i`` to ``E + start_i + duration_i``, ``E`` being
    :attr:`Transmitter.burst_epoch_ns`, at amplitude ``10 ** (level_db_i / 20)`` relative to
    ``A``; silent in between. Edges are the OOK's raised-cosine ramps
    (:attr:`Transmitter.keying_edge_s` wide, centred on the nominal edge), so a site at delay
    ``tau`` sees the burst's mid-edge at ``E + start_i + tau`` exactly
    (:meth:`Scenario.burst_truth`). :meth:`Scenario.with_bursts` builds a schedule from
    wanted in-band SNRs at a site.

If ``|f_tx - f_LO| > PASSBAND_FRACTION * nominal_rate`` (0.45) the transmitter is outside the
passband and nothing of it is heard (``A = 0``).

Passband
--------
A stream asked for with a passband ``(low_cut, high_cut)`` (Hz relative to the tuned
frequency: what a client sends in ``SET mod=iq low_cut=.. high_cut=..``, and what the
emulator passes on) band-limits signal and noise to it before quantisation, with a
zero-phase FIR (:func:`passband_taps`: :data:`PASSBAND_TAPS` taps, about
:data:`PASSBAND_STOPBAND_DB` dB stopband, a transition about 150 Hz wide centred on each cut)
run by overlap-save over consecutive frames, its state carried from frame to frame (the
stream synthesises one frame ahead). Outside the passband only the int16 quantisation floor
remains: rounding alone gives ``1/6`` count squared per complex sample, ``10 log10(1/6 /
32768^2 / r)``, -138.9 dBFS/Hz at 12001 Hz (when the band holds enough noise, a few counts,
to make the rounding error white, as the default noise does). The noise density slopes
across the passband by :attr:`Site.noise_slope_db`, linearly in dB from ``-slope / 2`` at
``low_cut`` to ``+slope / 2`` at ``high_cut`` around :attr:`Site.noise_dbm_hz`; the signal's
passband is flat. Without a passband, or with one as wide as the band (edges beyond
+-:data:`OPEN_CUT_FRACTION` of the rate, such as a client's default +-6 kHz) and no slope,
nothing is filtered and the frames are those of the unfiltered synthesis, bit for bit.

Systematic errors
-----------------
Each is a :class:`Site` field, off by default, and stated per site by :meth:`Scenario.truth`:
the ground wave's :attr:`~Site.velocity_factor`, a one-hop sky wave
(:attr:`~Site.sky_amplitude` and its layer height, phase and drift), the receiver's
:attr:`~Site.filter_delay_ns`, a GNSS :attr:`~Site.timing_bias_ns` (with the existing
:attr:`~Site.timestamp_jitter_ns`) and a :attr:`~Site.noise_slope_db` across the passband.
:meth:`Scenario.with_systematics` draws realistic (LF daytime) values for every site from a
seed; :meth:`Scenario.with_timing_biases` sets biases by site. A perfect estimator of the
ground wave's arrival reads ``apparent_delay_s = ground delay + filter delay + timing bias``
from the stamped samples.

Power and noise
---------------
Path loss is free-space-like, referenced to 1 km:

.. math:: P_\mathrm{rx}\,[\mathrm{dBm}] = P_\mathrm{tx} - 20 \log_{10}(\max(d, 1\,\mathrm{km}) /
          1\,\mathrm{km})

where ``P_tx`` is :attr:`Transmitter.power_dbm` (the power received 1 km away). For OOK this
is the key-up (un-keyed) power; the signal metrics measure the mean power, which
:meth:`Scenario.truth` gives as ``mean_power_dbm`` (over the long run, or exactly over a
window of samples). Sample values are in full-scale units (int16 full scale
32768 = 1.0); a site's :attr:`Site.calibration_db` converts: ``dBm = dBFS + calibration_db``.
So ``A = 10 ** ((P_rx - calibration_db) / 20)``.

The noise ``w`` is complex white Gaussian with density :attr:`Site.noise_dbm_hz` (dBm/Hz),
i.e. ``N0 = noise_dbm_hz - calibration_db`` dBFS/Hz and a variance per complex sample of
``10 ** (N0 / 10) * r`` (half in I, half in Q). Each stream has its own noise generator seeded
from the scenario seed, the site name, the tuned frequency and the start time, so sites are
independent and the same request gives bit-identical frames.

Samples are quantised to int16 with saturation (:func:`heimdall_lab.kiwi.protocol.to_int16_pairs`).
The defaults (-140 dBm/Hz noise, -30 dB calibration) put the noise at about 11 counts rms,
well above quantisation, and leave 60 dB of headroom above it. The S-meter of each frame is
the total power of its quantised samples (signal + noise) in dBm.

In-band SNR
    The SNR of an emission "in a band of ``B`` Hz" at a site is ``C / (N0 B)``: its received
    power ``C`` (all of it, the emission being narrower than the band) over the site's noise
    density ``N0`` (:attr:`Site.noise_dbm_hz`) times ``B``. The int16 quantisation noise is
    left out (about 31 dB under the default noise). :meth:`Scenario.power_for_snr` inverts it.
"""

from __future__ import annotations

import itertools
import math
import time
import typing
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from fractions import Fraction

import numpy as np

from heimdall_lab import geo, gnss
from heimdall_lab.errors import ValidationError
from heimdall_lab.kiwi.protocol import dbm_to_smeter, to_int16_pairs
from heimdall_lab.propagation import Propagation
from heimdall_lab.receivers import DEFAULT_RECEIVERS, Receiver
from heimdall_lab.recording import FRAME_SAMPLES, FULL_SCALE
from heimdall_lab.values import NS_PER_S

__all__ = [
    "DEFAULT_CALIBRATION_DB",
    "DEFAULT_NOISE_DBM_HZ",
    "DEFAULT_NOMINAL_RATE",
    "DEFAULT_POWER_DBM",
    "FSK_MESSAGE_BITS",
    "GPS_FIX_INTERVAL_S",
    "MODULATIONS",
    "NO_FIX_SOLUTION",
    "OOK_DURATIONS_S",
    "OPEN_CUT_FRACTION",
    "PASSBAND_FRACTION",
    "PASSBAND_STOPBAND_DB",
    "PASSBAND_TAPS",
    "REFERENCE_DISTANCE_M",
    "STALE_FRAMES",
    "STALE_OFFSET_S",
    "Burst",
    "FrameSource",
    "Scenario",
    "Site",
    "SourceFrame",
    "SynthStream",
    "Transmitter",
    "passband_taps",
]

#: Modulations a :class:`Transmitter` can have.
MODULATIONS = ("carrier", "ook", "fsk", "burst")
#: A transmitter is heard when its baseband offset is within this fraction of the nominal rate.
PASSBAND_FRACTION = 0.45
#: Distance at which :attr:`Transmitter.power_dbm` is received; closer sites get that power.
REFERENCE_DISTANCE_M = 1000.0
#: The sample rate a KiwiSDR announces in IQ mode (approximately).
DEFAULT_NOMINAL_RATE = 12001.135
#: Default receiver noise density, dBm/Hz.
DEFAULT_NOISE_DBM_HZ = -140.0
#: Default calibration: dBm at the antenna = dBFS + this.
DEFAULT_CALIBRATION_DB = -30.0
#: Default transmitter power reference (dBm received at 1 km).
DEFAULT_POWER_DBM = -15.0
#: How many frames at the start of a stream carry a stale timestamp.
STALE_FRAMES = 1
#: How far (seconds) the stale timestamps lie in the past.
STALE_OFFSET_S = 300.0
#: ``last_gps_solution`` of every frame from a site without a GNSS fix.
NO_FIX_SOLUTION = 254
#: Sites with a fix report ``last_gps_solution`` cycling 0 .. this - 1 with the UTC second.
GPS_FIX_INTERVAL_S = 6
#: Length of the repeated random FSK message, in symbols.
FSK_MESSAGE_BITS = 4096
#: OOK key-down durations for bits 0 and 1, seconds.
OOK_DURATIONS_S = (0.1, 0.2)
#: Length of the receiver's passband filter (odd: centred, zero-phase), taps.
PASSBAND_TAPS = 513
#: Stopband attenuation the passband filter is designed for, dB.
PASSBAND_STOPBAND_DB = 100.0
#: A passband edge at or beyond this fraction of the nominal rate is the band's edge (a
#: KiwiSDR's widest IQ passband, +-6 kHz at 12001 Hz, cuts nothing).
OPEN_CUT_FRACTION = 0.495

_MASK64 = (1 << 64) - 1
_FSK_TAG = 0xF5C
_OOK_TAG = 0x00C
_DEFAULT_TAG = 0xDEF
_MAX_CLOCK_PPM = 1000.0
_SYSTEMATICS_TAG = 0x5E5
#: The systematic effects of a :class:`Site`: allowed range (low, high, low end open).
_SYSTEMATICS: dict[str, tuple[float, float, bool]] = {
    "velocity_factor": (0.9, 1.0, True),
    "sky_amplitude": (0.0, 10.0, False),
    "sky_layer_height_km": (0.0, 1000.0, True),
    "sky_phase_deg": (-math.inf, math.inf, True),
    "sky_drift_hz": (-10.0, 10.0, False),
    "filter_delay_ns": (0.0, 1e6, False),
    "timing_bias_ns": (-1e7, 1e7, False),
    "noise_slope_db": (-20.0, 20.0, False),
}


# --------------------------------------------------------------------------------------------
# Validation helpers


def _number(value: object, what: str) -> float:
    """Return ``value`` as a finite float or raise ValidationError."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValidationError(f"{what} must be a number, got {value!r}")
    out = float(value)
    if not math.isfinite(out):
        raise ValidationError(f"{what} must be finite, got {value!r}")
    return out


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)


def _utc_ns(start_utc: np.datetime64 | datetime | str | None) -> int:
    """Integer ns since 1970 (UTC) of a start time; None -> now rounded up to a whole ms."""
    if start_utc is None:
        now = time.time_ns()
        return -(-now // 1_000_000) * 1_000_000
    if isinstance(start_utc, datetime):
        if start_utc.tzinfo is not None:
            start_utc = start_utc.astimezone(UTC).replace(tzinfo=None)
        start_utc = np.datetime64(start_utc, "ns")
    try:
        t = np.datetime64(start_utc, "ns")
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"start_utc {start_utc!r} is not a UTC time") from exc
    if np.isnat(t):
        raise ValidationError("start_utc must not be NaT")
    return int(t.astype(np.int64))


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _ook_bit(seed: int, utc_second: int) -> int:
    return _splitmix64(_splitmix64((seed << 12) ^ _OOK_TAG) ^ (utc_second & _MASK64)) & 1


def _fsk_message(seed: int) -> np.ndarray:
    """The repeated FSK message as symbols +-1 (int64)."""
    bits = np.random.default_rng([seed, _FSK_TAG]).integers(0, 2, FSK_MESSAGE_BITS)
    return (2 * bits - 1).astype(np.int64)


def _site_tag(name: str) -> int:
    return zlib.crc32(name.encode("utf-8"))


# --------------------------------------------------------------------------------------------
# Data model


@dataclass(frozen=True, eq=False, slots=True)
class SourceFrame:
    """One frame as a frame source hands it to the emulator.

    Attributes
    ----------
    pairs : numpy.ndarray
        int16 samples, shape ``(512, 2)``: I, Q.
    smeter : int
        Raw S-meter value (:func:`heimdall_lab.kiwi.protocol.dbm_to_smeter` of the RSSI in dBm).
    last_gps_solution : int
        Seconds since the last GNSS fix; 254 when the site has no fix.
    gpssec : int
        GPS seconds of the week of the frame's first sample.
    gpsnsec : int
        Nanoseconds within that second.
    """

    pairs: np.ndarray
    smeter: int
    last_gps_solution: int
    gpssec: int
    gpsnsec: int


@typing.runtime_checkable
class FrameSource(typing.Protocol):
    """Anything the emulator can stream: synthetic streams, replays of recordings.

    Attributes
    ----------
    nominal_rate : float
        The sample rate the server announces in ``MSG sample_rate``.
    """

    nominal_rate: float

    def next_frame(self) -> SourceFrame | None:
        """The next frame.

        Returns
        -------
        SourceFrame or None
            The frame, or None when the source is exhausted (replays; synthetic streams
            never end).
        """
        ...


@dataclass(frozen=True)
class Burst:
    """One burst of a ``"burst"`` transmitter.

    Attributes
    ----------
    start_s : float
        Emission time of its (mid-)leading edge, seconds after
        :attr:`Transmitter.burst_epoch_ns`.
    duration_s : float
        Seconds from the leading to the trailing mid-edge (> 0).
    level_db : float
        Power relative to :attr:`Transmitter.power_dbm`, dB (amplitude ``10 ** (level_db /
        20)``). With :meth:`Scenario.with_bursts` it is the in-band SNR at the reference site.

    Raises
    ------
    ValidationError
        On non-numeric, non-finite or non-positive duration values.
    """

    start_s: float
    duration_s: float
    level_db: float = 0.0

    def __post_init__(self) -> None:
        for name in ("start_s", "duration_s", "level_db"):
            _set(self, name, _number(getattr(self, name), f"burst {name}"))
        if self.duration_s <= 0:
            raise ValidationError(f"burst duration_s must be > 0 s, got {self.duration_s}")

    @property
    def end_s(self) -> float:
        """Emission time of the trailing mid-edge, seconds after the epoch."""
        return self.start_s + self.duration_s

    @classmethod
    def coerce(cls, value: object) -> Burst:
        """A burst from a :class:`Burst`, a mapping of its fields or a sequence of them.

        Parameters
        ----------
        value : Burst, mapping or sequence
            ``Burst(...)``, ``{"start_s": .., "duration_s": .., "level_db": ..}`` (as
            :meth:`Scenario.to_dict` writes it) or ``(start_s, duration_s[, level_db])``.

        Returns
        -------
        Burst
            The burst.

        Raises
        ------
        ValidationError
            If it is none of those or holds bad values.
        """
        if isinstance(value, Burst):
            return value
        try:
            if isinstance(value, typing.Mapping):
                return cls(**value)
            if isinstance(value, Sequence) and not isinstance(value, str):
                return cls(*value)
        except TypeError as exc:
            raise ValidationError(f"bad burst {value!r}: {exc}") from exc
        raise ValidationError(
            f"a burst must be a Burst, a mapping or (start_s, duration_s, level_db), got {value!r}"
        )


@dataclass(frozen=True)
class Transmitter:
    """The transmitter to be located.

    Attributes
    ----------
    latitude, longitude : float
        Position in degrees.
    frequency_hz : float
        Carrier (centre) frequency in Hz.
    power_dbm : float
        Power received at :data:`REFERENCE_DISTANCE_M` (1 km), dBm; see the module docstring
        for the path loss law.
    modulation : str
        ``"carrier"``, ``"ook"`` or ``"fsk"``.
    keying_depth : float
        OOK: amplitude (not power) during key-down, relative to key-up, in [0, 1].
    fsk_shift_hz : float
        FSK: distance between the two tones, Hz (>= 0).
    fsk_baud : float
        FSK: symbols per second (> 0).
    keying_edge_s : float
        OOK and burst: width of the raised-cosine amplitude edges, seconds, in [0, 0.05].
    bursts : tuple of Burst
        Burst: the schedule, in time order and not overlapping (mappings or
        ``(start_s, duration_s, level_db)`` tuples are converted). Empty for the other
        modulations.
    burst_epoch_ns : int
        Burst: the emission time the bursts' ``start_s`` count from, integer ns since
        1970-01-01 UTC (the time axis of :meth:`Scenario.stream`'s ``start_utc``); a
        ``numpy.datetime64``, ``datetime`` or ISO string is converted.

    Raises
    ------
    ValidationError
        On non-numeric, non-finite or out-of-range values, an unknown modulation, or bursts
        out of order, overlapping or given to another modulation.
    """

    latitude: float
    longitude: float
    frequency_hz: float
    power_dbm: float = DEFAULT_POWER_DBM
    modulation: str = "carrier"
    keying_depth: float = 0.15
    fsk_shift_hz: float = 170.0
    fsk_baud: float = 50.0
    keying_edge_s: float = 0.001
    bursts: tuple[Burst, ...] = ()
    burst_epoch_ns: int = 0

    def __post_init__(self) -> None:
        for name in (
            "latitude",
            "longitude",
            "frequency_hz",
            "power_dbm",
            "keying_depth",
            "fsk_shift_hz",
            "fsk_baud",
            "keying_edge_s",
        ):
            _set(self, name, _number(getattr(self, name), f"transmitter {name}"))
        geo.check_position(self.latitude, self.longitude, "transmitter")
        if self.frequency_hz <= 0:
            raise ValidationError(f"transmitter frequency must be > 0 Hz, got {self.frequency_hz}")
        if self.modulation not in MODULATIONS:
            raise ValidationError(
                f"unknown modulation {self.modulation!r}; choose one of {', '.join(MODULATIONS)}"
            )
        if not 0.0 <= self.keying_depth <= 1.0:
            raise ValidationError(f"keying_depth must be in [0, 1], got {self.keying_depth}")
        if self.fsk_shift_hz < 0:
            raise ValidationError(f"fsk_shift_hz must be >= 0, got {self.fsk_shift_hz}")
        if self.fsk_baud <= 0:
            raise ValidationError(f"fsk_baud must be > 0, got {self.fsk_baud}")
        if not 0.0 <= self.keying_edge_s <= 0.05:
            raise ValidationError(f"keying_edge_s must be in [0, 0.05] s, got {self.keying_edge_s}")
        self._check_bursts()

    def _check_bursts(self) -> None:
        if isinstance(self.bursts, str | typing.Mapping) or not isinstance(self.bursts, Sequence):
            raise ValidationError(f"bursts must be a sequence of bursts, got {self.bursts!r}")
        bursts = tuple(Burst.coerce(b) for b in self.bursts)
        _set(self, "bursts", bursts)
        if bursts and self.modulation != "burst":
            raise ValidationError(
                f"bursts are given but the modulation is {self.modulation!r}; "
                "use modulation='burst'"
            )
        for a, b in itertools.pairwise(bursts):
            if b.start_s < a.end_s:
                raise ValidationError(
                    f"bursts must be in time order and not overlap: one starting at "
                    f"{b.start_s:g} s follows one lasting until {a.end_s:g} s"
                )
        epoch = self.burst_epoch_ns
        if isinstance(epoch, bool):
            raise ValidationError(f"burst_epoch_ns must be integer ns, got {epoch!r}")
        if isinstance(epoch, int | np.integer):
            _set(self, "burst_epoch_ns", int(epoch))
        elif epoch is None:
            raise ValidationError("burst_epoch_ns must be a time (integer ns since 1970), not None")
        else:
            _set(self, "burst_epoch_ns", _utc_ns(epoch))


@dataclass(frozen=True)
class Site:
    """The physics of one emulated receiver.

    Attributes
    ----------
    name : str
        Receiver name (matches :attr:`heimdall_lab.receivers.Receiver.name`).
    latitude, longitude : float
        Antenna position in degrees.
    ppm : float
        Local-oscillator frequency error in parts per million: ``f_LO = f_tuned * (1 + ppm
        * 1e-6)``; positive ppm makes signals appear *lower* in frequency. Within +-1000.
    rate_error_ppm : float
        Sample clock error: true rate = ``nominal_rate * (1 + rate_error_ppm * 1e-6)``.
        Within +-1000.
    noise_dbm_hz : float
        Receiver noise density at the antenna, dBm/Hz.
    calibration_db : float
        dBm at the antenna = dBFS + calibration_db (full scale, 0 dBFS, is this many dBm).
    gps_fix : bool
        Whether the site has a GNSS fix; without, every frame says ``last_gps_solution=254``.
    timestamp_jitter_ns : float
        Half-width of the uniform jitter added to frame timestamps, ns (>= 0).
    velocity_factor : float
        Ground-wave speed as a fraction of ``c``, in (0.9, 1]: the delay is
        ``Propagation(velocity_factor=...).ground_delay_s(d)`` (1.0: ``d / c``).
    sky_amplitude : float
        Amplitude (linear, not dB) of a one-hop sky wave relative to the ground wave, in
        [0, 10]; 0 (default): none.
    sky_layer_height_km : float
        Virtual height of the layer that reflects the sky wave, km, in (0, 1000].
    sky_phase_deg : float
        Phase (degrees) added to the sky wave's carrier at ``t = 0`` (1970-01-01 UTC).
    sky_drift_hz : float
        Rate (Hz) at which that phase drifts, within +-10 Hz: the sky wave's carrier is
        offset by this much.
    filter_delay_ns : float
        Group delay of the receiver's filters, ns, in [0, 1e6]: the received signal (not the
        noise) is delayed by this much more before it is sampled.
    timing_bias_ns : float
        GNSS timestamp bias, ns, within +-1e7: every frame is stamped this much *later* than
        the true time of its first sample, so every sample was taken ``timing_bias_ns``
        before the time its stamp gives it, and a signal appears to arrive
        ``timing_bias_ns`` later than it does. The delay a localizer measures at this site
        is too large by ``timing_bias_ns`` (negative: too small).
    noise_slope_db : float
        Slope of the noise density across the receiver's passband, dB, within +-20: from
        ``-slope / 2`` at ``low_cut`` to ``+slope / 2`` at ``high_cut`` around
        :attr:`noise_dbm_hz` (which is the density at the passband's centre), linear in dB.

    Raises
    ------
    ValidationError
        On an empty name or non-finite / out-of-range values.
    """

    name: str
    latitude: float
    longitude: float
    ppm: float = 0.0
    rate_error_ppm: float = 0.0
    noise_dbm_hz: float = DEFAULT_NOISE_DBM_HZ
    calibration_db: float = DEFAULT_CALIBRATION_DB
    gps_fix: bool = True
    timestamp_jitter_ns: float = 0.0
    velocity_factor: float = 1.0
    sky_amplitude: float = 0.0
    sky_layer_height_km: float = 70.0
    sky_phase_deg: float = 0.0
    sky_drift_hz: float = 0.0
    filter_delay_ns: float = 0.0
    timing_bias_ns: float = 0.0
    noise_slope_db: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValidationError(f"site name must be a non-empty string, got {self.name!r}")
        for name in (
            "latitude",
            "longitude",
            "ppm",
            "rate_error_ppm",
            "noise_dbm_hz",
            "calibration_db",
            "timestamp_jitter_ns",
            *_SYSTEMATICS,
        ):
            _set(self, name, _number(getattr(self, name), f"site {self.name} {name}"))
        for name, (lo, hi, open_lo) in _SYSTEMATICS.items():
            value = getattr(self, name)
            if not (lo < value <= hi if open_lo else lo <= value <= hi):
                bracket = "(" if open_lo else "["
                raise ValidationError(
                    f"site {self.name}: {name} must be in {bracket}{lo:g}, {hi:g}], got {value}"
                )
        geo.check_position(self.latitude, self.longitude, f"site {self.name}")
        for name in ("ppm", "rate_error_ppm"):
            if abs(getattr(self, name)) > _MAX_CLOCK_PPM:
                raise ValidationError(
                    f"site {self.name}: |{name}| must be <= {_MAX_CLOCK_PPM:g}, "
                    f"got {getattr(self, name)}"
                )
        if not isinstance(self.gps_fix, bool | np.bool_):
            raise ValidationError(f"site {self.name}: gps_fix must be a bool")
        _set(self, "gps_fix", bool(self.gps_fix))
        if self.timestamp_jitter_ns < 0:
            raise ValidationError(f"site {self.name}: timestamp_jitter_ns must be >= 0")

    @classmethod
    def from_receiver(cls, receiver: Receiver, **physics: object) -> Site:
        """A site at a receiver's position.

        Parameters
        ----------
        receiver : Receiver
            Supplies the name and position.
        **physics
            Other :class:`Site` fields (``ppm``, ``noise_dbm_hz``, ...).

        Returns
        -------
        Site
            The site.
        """
        return cls(receiver.name, receiver.latitude, receiver.longitude, **physics)

    def true_rate(self, nominal_rate: float) -> float:
        """The site's true sample rate.

        Parameters
        ----------
        nominal_rate : float
            The announced rate.

        Returns
        -------
        float
            ``nominal_rate * (1 + rate_error_ppm * 1e-6)`` in samples per second.
        """
        return nominal_rate * (1.0 + self.rate_error_ppm * 1e-6)

    @property
    def ground_wave(self) -> Propagation:
        """The site's ground-wave model (its :attr:`velocity_factor`)."""
        return Propagation(velocity_factor=self.velocity_factor)

    @property
    def sky_wave(self) -> Propagation:
        """The site's one-hop sky-wave model (its :attr:`sky_layer_height_km`)."""
        return Propagation(mode="sky", layer_height_km=self.sky_layer_height_km)


_FORMAT = "heimdall_lab.emulate.scenario"
_VERSION = 1


@dataclass(frozen=True)
class Scenario:
    """A transmitter and the sites that listen to it.

    Attributes
    ----------
    transmitter : Transmitter or None
        The transmitter; None for noise only.
    sites : tuple of Site
        The receivers, with unique names.
    seed : int
        Seeds all randomness (noise, clock errors of :meth:`default`, OOK and FSK bits).
    nominal_rate : float
        Announced sample rate, samples per second.

    Raises
    ------
    ValidationError
        On wrong types, duplicate site names, a negative seed or a bad rate.
    """

    transmitter: Transmitter | None
    sites: tuple[Site, ...]
    seed: int = 0
    nominal_rate: float = DEFAULT_NOMINAL_RATE

    def __post_init__(self) -> None:
        if self.transmitter is not None and not isinstance(self.transmitter, Transmitter):
            raise ValidationError(
                f"transmitter must be a Transmitter or None, got {self.transmitter!r}"
            )
        sites = tuple(self.sites)
        for s in sites:
            if not isinstance(s, Site):
                raise ValidationError(f"sites must be Site objects, got {s!r}")
        names = [s.name for s in sites]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValidationError(f"duplicate site names: {', '.join(dupes)}")
        _set(self, "sites", sites)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int | np.integer):
            raise ValidationError(f"seed must be an int, got {self.seed!r}")
        if self.seed < 0:
            raise ValidationError(f"seed must be >= 0, got {self.seed}")
        _set(self, "seed", int(self.seed))
        rate = _number(self.nominal_rate, "nominal_rate")
        if rate <= 0:
            raise ValidationError(f"nominal_rate must be > 0, got {rate}")
        _set(self, "nominal_rate", rate)

    # ---- construction ------------------------------------------------------------------

    @classmethod
    def default(
        cls, seed: int = 0, *, receivers: Sequence[Receiver] | None = None, **overrides: object
    ) -> Scenario:
        """The seven default receivers listening to a keyed 10 MHz carrier near Frankfurt.

        Each :data:`~heimdall_lab.receivers.DEFAULT_RECEIVERS` entry (or each of
        ``receivers``) becomes a site with
        seeded clock errors (``|ppm| <= 0.5``, ``|rate_error_ppm| <= 2``) and noise density
        ``-140 +- 3`` dBm/Hz, and no systematic errors (:meth:`with_systematics` adds them).
        The transmitter is at 50.0 N 8.5 E, 10 MHz, :data:`DEFAULT_POWER_DBM`, keyed like
        DCF77 (``"ook"``: down to 15 % amplitude for 0.1 or 0.2 s at every UTC second), so
        that TDoA can locate it (a plain carrier has no timing structure); its key-up SNRs
        are about 22-45 dB in the full passband (about 62-85 dB in 1 Hz), and the signal
        metrics measure its mean power, about 0.7 dB less (``mean_power_dbfs`` and
        ``mean_cn0_dbhz`` of :meth:`truth`).

        Parameters
        ----------
        seed : int, optional
            Scenario seed.
        receivers : sequence of Receiver, optional
            The receivers to make sites of, in place of the seven defaults (for example
            receivers of the public directory, at their real positions).
        **overrides
            Replacement values for :class:`Scenario` fields (``transmitter``, ``sites``,
            ``nominal_rate``).

        Returns
        -------
        Scenario
            The scenario.

        Raises
        ------
        ValidationError
            On an unknown override or invalid values.
        """
        allowed = {"transmitter", "sites", "nominal_rate"}
        unknown = sorted(set(overrides) - allowed)
        if unknown:
            raise ValidationError(
                f"unknown Scenario.default override(s) {', '.join(unknown)}; "
                f"allowed: {', '.join(sorted(allowed))}"
            )
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise ValidationError(f"seed must be an int >= 0, got {seed!r}")
        rng = np.random.default_rng([int(seed), _DEFAULT_TAG])
        sites = []
        for rx in DEFAULT_RECEIVERS if receivers is None else receivers:
            ppm, rate_err, noise = rng.uniform([-0.5, -2.0, -3.0], [0.5, 2.0, 3.0])
            sites.append(
                Site.from_receiver(
                    rx,
                    ppm=round(float(ppm), 4),
                    rate_error_ppm=round(float(rate_err), 4),
                    noise_dbm_hz=round(DEFAULT_NOISE_DBM_HZ + float(noise), 2),
                )
            )
        base = cls(
            transmitter=Transmitter(50.0, 8.5, 10e6, modulation="ook"),
            sites=tuple(sites),
            seed=int(seed),
        )
        return replace(base, **overrides) if overrides else base

    def with_systematics(
        self,
        seed: int | None = None,
        *,
        sky: bool = True,
        filter_delay: bool = True,
        gnss: bool = True,
        ground_slowdown: bool = True,
        passband: bool = True,
    ) -> Scenario:
        """A copy in which every site has seeded, realistic systematic errors.

        Each effect is drawn per site from its own generator (the seed, the site's name and
        the effect), so turning one off, or adding a site, leaves the others' draws as they
        were. The magnitudes are those of LF by day (DCF77 at 77.5 kHz over 300-800 km
        baselines); at HF the sky wave is usually the stronger one and its delay varies.

        Parameters
        ----------
        seed : int, optional
            Seed of the draws; the scenario's :attr:`seed` when omitted.
        sky : bool, default True
            A one-hop sky wave: :attr:`~Site.sky_amplitude` 0.05-0.3, layer height 65-80 km,
            phase uniform in [0, 360) degrees, drift 0.005-0.05 Hz of either sign.
        filter_delay : bool, default True
            :attr:`~Site.filter_delay_ns` 0-3000 ns (0-3 us).
        gnss : bool, default True
            :attr:`~Site.timing_bias_ns` within +-500 ns and
            :attr:`~Site.timestamp_jitter_ns` 50 ns.
        ground_slowdown : bool, default True
            :attr:`~Site.velocity_factor` 0.9990-0.9999.
        passband : bool, default True
            :attr:`~Site.noise_slope_db` 0-10 dB across the passband.

        Returns
        -------
        Scenario
            The new scenario (this one is unchanged); effects not chosen keep their values.

        Raises
        ------
        ValidationError
            On a bad seed.
        """
        seed = self.seed if seed is None else seed
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise ValidationError(f"seed must be an int >= 0, got {seed!r}")

        def draw(site: Site, effect: int, low: object, high: object) -> np.ndarray:
            rng = np.random.default_rng([int(seed), _SYSTEMATICS_TAG, _site_tag(site.name), effect])
            return rng.uniform(low, high)

        sites = []
        for s in self.sites:
            changes: dict[str, float] = {}
            if sky:
                g, h, phase, drift, sign = draw(
                    s, 0, [0.05, 65.0, 0.0, 0.005, -1], [0.3, 80.0, 360.0, 0.05, 1]
                )
                changes.update(
                    sky_amplitude=round(float(g), 4),
                    sky_layer_height_km=round(float(h), 3),
                    sky_phase_deg=round(float(phase), 3),
                    sky_drift_hz=round(float(math.copysign(drift, sign)), 5),
                )
            if filter_delay:
                changes["filter_delay_ns"] = round(float(draw(s, 1, 0.0, 3000.0)), 1)
            if gnss:
                changes["timing_bias_ns"] = round(float(draw(s, 2, -500.0, 500.0)), 1)
                changes["timestamp_jitter_ns"] = 50.0
            if ground_slowdown:
                changes["velocity_factor"] = round(float(draw(s, 3, 0.9990, 0.9999)), 6)
            if passband:
                changes["noise_slope_db"] = round(float(draw(s, 4, 0.0, 10.0)), 3)
            sites.append(replace(s, **changes))
        return replace(self, sites=tuple(sites))

    def with_timing_biases(self, biases: typing.Mapping[str, float]) -> Scenario:
        """A copy with GNSS timestamp biases at some sites (:attr:`Site.timing_bias_ns`).

        A site with a bias ``b`` stamps its frames ``b`` later than the true time of their
        first samples, so the delay a localizer measures there is too large by ``b``.

        Parameters
        ----------
        biases : mapping of str to float
            Bias in **seconds** by site name (for example ``{"DK0TE": 20e-6}``); other sites
            keep theirs.

        Returns
        -------
        Scenario
            The new scenario (this one is unchanged).

        Raises
        ------
        ValidationError
            On an unknown site or a bias out of range (+-10 ms).
        """
        if not isinstance(biases, typing.Mapping):
            raise ValidationError(f"biases must map site names to seconds, got {biases!r}")
        for name in biases:
            self.site(name)
        sites = tuple(
            replace(s, timing_bias_ns=_number(biases[s.name], f"{s.name} bias") * NS_PER_S)
            if s.name in biases
            else s
            for s in self.sites
        )
        return replace(self, sites=sites)

    # ---- lookup ------------------------------------------------------------------------

    @property
    def site_names(self) -> tuple[str, ...]:
        """Names of the sites, in order."""
        return tuple(s.name for s in self.sites)

    def site(self, name: str) -> Site:
        """The site called ``name``.

        Parameters
        ----------
        name : str
            Site name.

        Returns
        -------
        Site
            The site.

        Raises
        ------
        ValidationError
            If the scenario has no such site.
        """
        for s in self.sites:
            if s.name == name:
                return s
        raise ValidationError(
            f"unknown site {name!r}; this scenario has: {', '.join(self.site_names) or 'none'}"
        )

    # ---- streams and truth -------------------------------------------------------------

    def stream(
        self,
        site_name: str,
        frequency_hz: float,
        start_utc: np.datetime64 | datetime | str | None = None,
        *,
        passband: tuple[float, float] | None = None,
    ) -> SynthStream:
        """What one site hears when tuned to ``frequency_hz``, from ``start_utc`` on.

        Parameters
        ----------
        site_name : str
            Which site.
        frequency_hz : float
            Tuned (centre) frequency in Hz, > 0.
        start_utc : numpy.datetime64, datetime or str, optional
            UTC time of the stream's first sample (ns resolution); the wall clock rounded up
            to the next whole millisecond when omitted.
        passband : (float, float), optional
            The receiver's passband ``(low_cut, high_cut)`` in Hz relative to the tuned
            frequency, as a client asks for it (``SET mod=iq low_cut= high_cut=``); None or
            one as wide as the band: no band limit (see :func:`passband_taps`).

        Returns
        -------
        SynthStream
            An endless frame source.

        Raises
        ------
        ValidationError
            On an unknown site, a bad frequency, start time or passband.
        """
        return SynthStream(
            self, self.site(site_name), frequency_hz, _utc_ns(start_utc), passband=passband
        )

    def truth(
        self,
        site_name: str,
        frequency_hz: float,
        *,
        passband: tuple[float, float] | None = None,
        start_utc: np.datetime64 | datetime | str | None = None,
        duration_s: float | None = None,
    ) -> dict[str, typing.Any]:
        """Ground truth of what a site hears tuned to ``frequency_hz``.

        Parameters
        ----------
        site_name : str
            Which site.
        frequency_hz : float
            Tuned frequency in Hz.
        passband : (float, float), optional
            The receiver's passband ``(low_cut, high_cut)``, Hz, as for :meth:`stream`.
        start_utc, duration_s : optional
            A window of the site's samples (true UTC time of the first, and seconds): the
            ``mean_*`` figures are then the signal's exact mean over it, as the synthesis
            makes it (keying, bursts, a sky wave beating with the ground wave), rather than
            the long-run mean.

        Returns
        -------
        dict
            ``site``, ``frequency_hz``, ``modulation``, ``distance_m`` (WGS84 geodesic),
            ``delay_s`` (the ground-wave delay, NaN without transmitter; also
            ``ground_delay_s``) at ``velocity_factor``; the sky wave: ``sky_delay_s``,
            ``sky_excess_s`` (sky minus ground delay), ``sky_amplitude``,
            ``sky_layer_height_km``, ``sky_phase_deg``, ``sky_drift_hz``; the receiver:
            ``filter_delay_s``, ``timing_bias_s``, and ``apparent_delay_s`` (ground delay +
            filter delay + timing bias: the arrival time of the ground wave's modulation a
            perfect estimator reads from the stamped samples, minus the emission time);
            ``lo_frequency_hz``; ``frequency_offset_hz`` (``f_tx - f_LO``,
            the carrier's baseband frequency in true time; NaN without transmitter);
            ``frequency_offset_at_nominal_rate_hz`` (the same as an analysis that assumes the
            nominal rate sees it: ``offset * nominal / true``); ``in_passband``;
            ``antenna_power_dbm`` (path-loss power at the antenna, key-up for OOK, at
            ``level_db`` 0 for bursts);
            ``received_power_dbm`` / ``received_power_dbfs`` (the same, ``-inf`` when not heard);
            ``signal_amplitude_fs`` (``A``); ``passband_hz`` (the ``(low_cut, high_cut)``
            given, or None), ``passband_gain_db`` (the passband filter's gain at the
            carrier, 0 without filter), ``noise_slope_db``; ``mean_power_dbm`` /
            ``mean_power_dbfs`` / ``mean_cn0_dbhz``: the mean power the signal metrics
            measure (:func:`heimdall_lab.dsp.measure`'s ``signal_power``, ``cn0_dbhz``):
            the received power times the mean keying power (OOK: ``1 - L (1 - d^2) -
            (1 - d)^2 w / 4`` for key-down time ``L`` per second, 0.15 s in the long run,
            depth ``d`` and edge width ``w``), plus a sky wave's (``g^2``; with no drift the
            two beat at a fixed phase instead), times the passband gain, or the exact mean
            over the window when one is given; ``noise_density_dbm_hz``,
            ``noise_density_dbfs_hz`` (at the passband's centre), ``noise_power_dbfs`` (per
            complex sample, over the true rate, through the passband filter);
            ``snr_db_in_1hz`` (C/N0, key-up), ``snr_db`` (in a bandwidth equal to the true
            rate); ``rssi_dbm`` (expected S-meter power: mean signal + noise);
            ``sample_rate`` (true), ``nominal_rate``, ``ppm``, ``rate_error_ppm``,
            ``velocity_factor``.

        Raises
        ------
        ValidationError
            On an unknown site, a bad frequency, passband or window.
        """
        site = self.site(site_name)
        f_tuned = _number(frequency_hz, "frequency_hz")
        if f_tuned <= 0:
            raise ValidationError(f"frequency_hz must be > 0, got {f_tuned}")
        band = _check_passband(passband)
        true_rate = site.true_rate(self.nominal_rate)
        f_lo = f_tuned * (1.0 + site.ppm * 1e-6)
        tx = self.transmitter
        nan = float("nan")
        distance = delay = sky_delay = offset = nan
        antenna = -math.inf
        heard = False
        if tx is not None:
            distance = float(
                geo.distance_m(tx.latitude, tx.longitude, site.latitude, site.longitude)
            )
            delay = float(site.ground_wave.ground_delay_s(distance))
            sky_delay = float(site.sky_wave.sky_delay_s(distance))
            offset = tx.frequency_hz - f_lo
            antenna = tx.power_dbm - 20.0 * math.log10(
                max(distance, REFERENCE_DISTANCE_M) / REFERENCE_DISTANCE_M
            )
            heard = abs(offset) <= PASSBAND_FRACTION * self.nominal_rate
        received = antenna if heard else -math.inf
        amplitude = 10.0 ** ((received - site.calibration_db) / 20.0) if heard else 0.0
        filter_delay = site.filter_delay_ns / NS_PER_S
        bias = site.timing_bias_ns / NS_PER_S

        signal_taps = passband_taps(band, self.nominal_rate)
        noise_taps = passband_taps(band, self.nominal_rate, site.noise_slope_db)
        offset_nominal = offset * self.nominal_rate / true_rate
        gain_db = _gain_db(signal_taps, offset_nominal, self.nominal_rate) if heard else 0.0
        noise_gain = 1.0 if noise_taps is None else float(np.sum(np.abs(noise_taps) ** 2))
        if (start_utc is None) != (duration_s is None):
            raise ValidationError("give both start_utc and duration_s for a window, or neither")
        if not heard:
            mean_db = -math.inf
        elif start_utc is not None:
            factor = self._mean_power_factor(site, f_tuned, _utc_ns(start_utc), duration_s)
            mean_db = received + 10.0 * math.log10(factor) if factor > 0 else -math.inf
        else:
            mean_db = received + 10.0 * math.log10(self._long_run_power_factor(site, f_tuned))
        mean_db += gain_db

        noise_dbfs_hz = site.noise_dbm_hz - site.calibration_db
        bw_db = 10.0 * math.log10(true_rate)
        noise_total_dbm = site.noise_dbm_hz + bw_db
        if noise_gain != 1.0:
            noise_total_dbm += 10.0 * math.log10(noise_gain)
        snr_1hz = received - site.noise_dbm_hz
        rssi = 10.0 * math.log10(10.0 ** (mean_db / 10.0) + 10.0 ** (noise_total_dbm / 10.0))
        return {
            "site": site.name,
            "frequency_hz": f_tuned,
            "modulation": tx.modulation if tx is not None else None,
            "distance_m": distance,
            "delay_s": delay,
            "ground_delay_s": delay,
            "velocity_factor": site.velocity_factor,
            "sky_delay_s": sky_delay,
            "sky_excess_s": sky_delay - delay,
            "sky_amplitude": site.sky_amplitude,
            "sky_layer_height_km": site.sky_layer_height_km,
            "sky_phase_deg": site.sky_phase_deg,
            "sky_drift_hz": site.sky_drift_hz,
            "filter_delay_s": filter_delay,
            "timing_bias_s": bias,
            "apparent_delay_s": delay + filter_delay + bias,
            "lo_frequency_hz": f_lo,
            "frequency_offset_hz": offset,
            "frequency_offset_at_nominal_rate_hz": offset_nominal,
            "in_passband": heard,
            "antenna_power_dbm": antenna,
            "received_power_dbm": received,
            "received_power_dbfs": received - site.calibration_db,
            "signal_amplitude_fs": amplitude,
            "passband_hz": band,
            "passband_gain_db": gain_db,
            "noise_slope_db": site.noise_slope_db,
            "mean_power_dbm": mean_db,
            "mean_power_dbfs": mean_db - site.calibration_db,
            "mean_cn0_dbhz": mean_db - site.noise_dbm_hz,
            "noise_density_dbm_hz": site.noise_dbm_hz,
            "noise_density_dbfs_hz": noise_dbfs_hz,
            "noise_power_dbfs": noise_total_dbm - site.calibration_db,
            "snr_db_in_1hz": snr_1hz,
            "snr_db": snr_1hz - bw_db,
            "rssi_dbm": rssi,
            "sample_rate": true_rate,
            "nominal_rate": self.nominal_rate,
            "ppm": site.ppm,
            "rate_error_ppm": site.rate_error_ppm,
        }

    def _long_run_power_factor(self, site: Site, frequency_hz: float) -> float:
        """Mean signal power over a long time relative to the (key-up) received power."""
        tx = self.transmitter
        assert tx is not None
        factor = 1.0
        if tx.modulation == "ook":
            d, w = tx.keying_depth, tx.keying_edge_s
            key_down = sum(OOK_DURATIONS_S) / len(OOK_DURATIONS_S)
            factor = 1.0 - key_down * (1.0 - d * d) - (1.0 - d) ** 2 * w / 4.0
        g = site.sky_amplitude
        if g == 0.0:
            return factor
        if site.sky_drift_hz != 0.0:
            return factor * (1.0 + g * g)
        distance = geo.distance_m(tx.latitude, tx.longitude, site.latitude, site.longitude)
        excess = site.sky_wave.sky_delay_s(distance) - site.ground_wave.ground_delay_s(distance)
        theta = math.radians(site.sky_phase_deg) - 2.0 * math.pi * tx.frequency_hz * excess
        return factor * (1.0 + g * g + 2.0 * g * math.cos(theta))

    def _mean_power_factor(
        self, site: Site, frequency_hz: float, start_ns: int, duration_s: object
    ) -> float:
        """Exact mean signal power over a window of samples, relative to the received power."""
        duration = _number(duration_s, "duration_s")
        if duration <= 0:
            raise ValidationError(f"duration_s must be > 0, got {duration}")
        stream = SynthStream(self, site, frequency_hz, start_ns)
        n = max(1, round(duration * stream.true_rate))
        if stream._amplitude == 0.0:
            return 0.0
        total = 0.0
        for k in range(-(-n // FRAME_SAMPLES)):
            x = stream._signal(k)[: n - k * FRAME_SAMPLES]
            total += float(np.vdot(x, x).real)
        return total / n / stream._amplitude**2

    def ook_key_durations(self, first_utc_second: int, count: int) -> np.ndarray:
        """OOK ground truth: how long the carrier is keyed down in each UTC second.

        Parameters
        ----------
        first_utc_second : int
            First second, counted since 1970-01-01 UTC (POSIX).
        count : int
            Number of seconds.

        Returns
        -------
        numpy.ndarray
            Key-down duration (0.1 or 0.2 s) for each second; the key goes down at the whole
            second of emission time.
        """
        bits = [_ook_bit(self.seed, int(first_utc_second) + i) for i in range(int(count))]
        return np.asarray(OOK_DURATIONS_S, dtype=np.float64)[np.asarray(bits, dtype=np.int64)]

    def fsk_symbols(self, first_symbol: int, count: int) -> np.ndarray:
        """FSK ground truth: the symbols ``d_k`` (+1 = upper tone, -1 = lower tone).

        Parameters
        ----------
        first_symbol : int
            Index of the first symbol; symbol ``k`` starts at emission time ``k / fsk_baud``
            seconds since 1970-01-01 UTC.
        count : int
            Number of symbols.

        Returns
        -------
        numpy.ndarray
            int64 array of +-1.
        """
        msg = _fsk_message(self.seed)
        idx = (int(first_symbol) + np.arange(int(count), dtype=np.int64)) % FSK_MESSAGE_BITS
        return msg[idx]

    # ---- bursts ------------------------------------------------------------------------

    def power_for_snr(
        self, site_name: str, frequency_hz: float, snr_db: float, bandwidth_hz: float
    ) -> float:
        """The :attr:`Transmitter.power_dbm` that gives a wanted in-band SNR at a site.

        The SNR is ``C / (N0 B)`` with ``C`` the power received at the site, ``N0`` its
        :attr:`Site.noise_dbm_hz` and ``B = bandwidth_hz`` (see "In-band SNR" in the module
        docstring), so ``power_dbm = snr_db + noise_dbm_hz + 10 log10(B) + path loss``.

        Parameters
        ----------
        site_name : str
            The site.
        frequency_hz : float
            Its tuned frequency, Hz (the transmitter must be in its passband).
        snr_db : float
            Wanted SNR in ``bandwidth_hz``, dB.
        bandwidth_hz : float
            The band the SNR refers to, Hz (> 0), e.g. a detector's band.

        Returns
        -------
        float
            Power received 1 km from the transmitter, dBm.

        Raises
        ------
        ValidationError
            Without a transmitter, when it is outside the site's passband, or on bad numbers.
        """
        snr = _number(snr_db, "snr_db")
        bw = _number(bandwidth_hz, "bandwidth_hz")
        if bw <= 0:
            raise ValidationError(f"bandwidth_hz must be > 0, got {bw}")
        if self.transmitter is None:
            raise ValidationError("the scenario has no transmitter to set the power of")
        truth = self.truth(site_name, frequency_hz)
        if not truth["in_passband"]:
            raise ValidationError(
                f"the transmitter at {self.transmitter.frequency_hz:g} Hz is outside the "
                f"passband of {site_name!r} tuned to {frequency_hz:g} Hz; tune closer to it"
            )
        loss = self.transmitter.power_dbm - truth["antenna_power_dbm"]
        return snr + truth["noise_density_dbm_hz"] + 10.0 * math.log10(bw) + loss

    def with_bursts(
        self,
        schedule: typing.Iterable[Burst | typing.Mapping[str, float] | Sequence[float]],
        *,
        site_name: str,
        frequency_hz: float,
        bandwidth_hz: float,
        epoch_utc: int | np.datetime64 | datetime | str,
        edge_s: float | None = None,
    ) -> Scenario:
        """A copy whose transmitter sends bursts at given in-band SNRs at a site.

        The transmitter keeps its position and frequency; its modulation becomes
        ``"burst"`` and its :attr:`~Transmitter.power_dbm` the power that gives 0 dB SNR in
        ``bandwidth_hz`` at ``site_name`` (:meth:`power_for_snr`), so each burst's
        ``level_db`` is its SNR there. Other sites hear the same bursts, at their own
        distance and noise (:meth:`burst_truth`).

        Parameters
        ----------
        schedule : iterable
            ``(start_s, duration_s, snr_db)`` per burst (or :class:`Burst` with ``level_db``
            the SNR): emission times after ``epoch_utc``, in order, not overlapping.
        site_name : str
            The reference site.
        frequency_hz : float
            Its tuned frequency, Hz.
        bandwidth_hz : float
            The band the SNRs refer to, Hz.
        epoch_utc : int, numpy.datetime64, datetime or str
            The emission time the bursts count from (int: ns since 1970 UTC); typically the
            streams' ``start_utc``.
        edge_s : float, optional
            Width of the raised-cosine edges, s (default: the transmitter's
            :attr:`~Transmitter.keying_edge_s`).

        Returns
        -------
        Scenario
            The new scenario (this one is unchanged).

        Raises
        ------
        ValidationError
            Without a transmitter, when it is outside the site's passband, or on a bad
            schedule.
        """
        if self.transmitter is None:
            raise ValidationError("the scenario has no transmitter to send bursts")
        if isinstance(schedule, str | typing.Mapping) or not isinstance(schedule, typing.Iterable):
            raise ValidationError(
                f"schedule must be a sequence of (start_s, duration_s, snr_db), got {schedule!r}"
            )
        bursts = tuple(Burst.coerce(b) for b in schedule)
        power = self.power_for_snr(site_name, frequency_hz, 0.0, bandwidth_hz)
        tx = replace(
            self.transmitter,
            modulation="burst",
            power_dbm=power,
            bursts=bursts,
            burst_epoch_ns=epoch_utc if isinstance(epoch_utc, int) else _utc_ns(epoch_utc),
            keying_edge_s=self.transmitter.keying_edge_s if edge_s is None else edge_s,
        )
        return replace(self, transmitter=tx)

    def burst_truth(
        self, site_name: str, frequency_hz: float, *, bandwidth_hz: float | None = None
    ) -> list[dict[str, typing.Any]]:
        """Ground truth of each burst as a site hears it: when it arrives, and how strong.

        Parameters
        ----------
        site_name : str
            The site.
        frequency_hz : float
            Its tuned frequency, Hz.
        bandwidth_hz : float, optional
            A band (Hz) to give each burst's in-band SNR in (``snr_db``; NaN without).

        Returns
        -------
        list of dict
            One per burst, in order: ``index``, ``start_s``, ``duration_s``, ``level_db``;
            ``emission_start_ns`` / ``emission_end_ns`` (the mid-edges at the transmitter,
            ns since 1970 UTC); ``arrival_start_ns`` / ``arrival_end_ns`` (the same in the
            site's samples, true UTC time: later by its ground-wave delay and its
            :attr:`~Site.filter_delay_ns`, rounded to the ns; the stamped times are later
            still by its :attr:`~Site.timing_bias_ns`); ``delay_s`` (ground wave);
            ``received_power_dbm`` (``-inf`` when not heard); ``cn0_dbhz`` (C/N0) and
            ``snr_db`` (in ``bandwidth_hz``). Empty unless the transmitter's modulation
            is ``"burst"``.

        Raises
        ------
        ValidationError
            On an unknown site or bad frequency or bandwidth.
        """
        truth = self.truth(site_name, frequency_hz)
        bw = None
        if bandwidth_hz is not None:
            bw = _number(bandwidth_hz, "bandwidth_hz")
            if bw <= 0:
                raise ValidationError(f"bandwidth_hz must be > 0, got {bw}")
        tx = self.transmitter
        if tx is None or tx.modulation != "burst":
            return []
        tau = Fraction(truth["delay_s"]) + Fraction(self.site(site_name).filter_delay_ns) / NS_PER_S
        epoch = Fraction(tx.burst_epoch_ns)
        out = []
        for i, b in enumerate(tx.bursts):
            start = epoch + Fraction(b.start_s) * NS_PER_S
            end = start + Fraction(b.duration_s) * NS_PER_S
            power = truth["received_power_dbm"] + b.level_db
            cn0 = power - truth["noise_density_dbm_hz"]
            out.append(
                {
                    "index": i,
                    "start_s": b.start_s,
                    "duration_s": b.duration_s,
                    "level_db": b.level_db,
                    "emission_start_ns": round(start),
                    "emission_end_ns": round(end),
                    "arrival_start_ns": round(start + tau * NS_PER_S),
                    "arrival_end_ns": round(end + tau * NS_PER_S),
                    "delay_s": truth["delay_s"],
                    "received_power_dbm": power,
                    "cn0_dbhz": cn0,
                    "snr_db": cn0 - 10.0 * math.log10(bw) if bw is not None else math.nan,
                }
            )
        return out

    # ---- serialisation -----------------------------------------------------------------

    def to_dict(self) -> dict[str, typing.Any]:
        """A JSON-able description, to store with captures.

        Returns
        -------
        dict
            ``format``, ``version``, ``seed``, ``nominal_rate``, ``transmitter`` (dict or
            None) and ``sites`` (list of dicts).
        """
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "seed": self.seed,
            "nominal_rate": self.nominal_rate,
            "transmitter": _plain(asdict(self.transmitter)) if self.transmitter else None,
            "sites": [asdict(s) for s in self.sites],
        }

    @classmethod
    def from_dict(cls, d: typing.Mapping[str, typing.Any]) -> Scenario:
        """Rebuild a scenario from :meth:`to_dict` output.

        Parameters
        ----------
        d : mapping
            As produced by :meth:`to_dict` (possibly via JSON).

        Returns
        -------
        Scenario
            The scenario.

        Raises
        ------
        ValidationError
            If the mapping is not a scenario description or holds invalid values.
        """
        if not isinstance(d, typing.Mapping) or d.get("format") != _FORMAT:
            raise ValidationError("not a heimdall_lab scenario description (format key missing)")
        if d.get("version") != _VERSION:
            raise ValidationError(f"unsupported scenario version {d.get('version')!r}")

        def build(kind: type, data: object) -> typing.Any:
            if not isinstance(data, typing.Mapping):
                raise ValidationError(f"{kind.__name__} description must be a mapping")
            known = {f.name for f in fields(kind)}
            unknown = sorted(set(data) - known)
            if unknown:
                raise ValidationError(f"unknown {kind.__name__} field(s): {', '.join(unknown)}")
            try:
                return kind(**data)
            except TypeError as exc:
                raise ValidationError(f"bad {kind.__name__} description: {exc}") from exc

        tx = d.get("transmitter")
        sites = d.get("sites", [])
        if not isinstance(sites, list | tuple):
            raise ValidationError("scenario 'sites' must be a list")
        return cls(
            transmitter=None if tx is None else build(Transmitter, tx),
            sites=tuple(build(Site, s) for s in sites),
            seed=d.get("seed", 0),
            nominal_rate=d.get("nominal_rate", DEFAULT_NOMINAL_RATE),
        )


# --------------------------------------------------------------------------------------------
# Synthesis


def _plain(value: typing.Any) -> typing.Any:
    """Tuples as lists, recursively: what a JSON round trip gives back, so both compare equal."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def passband_taps(
    passband: tuple[float, float] | None, nominal_rate: float, slope_db: float = 0.0
) -> np.ndarray | None:
    """The receiver's passband filter: taps of a zero-phase FIR, or None for no filter.

    The filter passes ``[low_cut, high_cut]`` (Hz, relative to the tuned frequency, at the
    nominal rate) with gain ``10 ** (g(f) / 20)``, ``g`` rising linearly from
    ``-slope_db / 2`` at ``low_cut`` to ``+slope_db / 2`` at ``high_cut`` (0 dB at the
    centre), and stops everything else. It is the ideal response times a Kaiser window
    (:data:`PASSBAND_TAPS` taps, centred on tap 0, so it has no delay), with about
    :data:`PASSBAND_STOPBAND_DB` dB of stopband attenuation and a transition about 150 Hz
    wide at 12 kHz, centred on each cut. Edges at or beyond ``+-OPEN_CUT_FRACTION *
    nominal_rate`` are the band's edges (nothing is cut there); when both are and the slope
    is 0 there is nothing to filter.

    Parameters
    ----------
    passband : (float, float) or None
        ``(low_cut, high_cut)`` in Hz; None: the whole band.
    nominal_rate : float
        The sample rate, samples per second.
    slope_db : float, optional
        The gain's slope across the passband, dB.

    Returns
    -------
    numpy.ndarray or None
        Complex taps ``h[m]``, ``m = -(PASSBAND_TAPS // 2) .. PASSBAND_TAPS // 2``; None when
        the filter would pass everything unchanged.

    Raises
    ------
    ValidationError
        On a passband that is not two finite numbers with ``low_cut < high_cut``.
    """
    band = _check_passband(passband)
    half = 0.5 * nominal_rate
    edge = OPEN_CUT_FRACTION * nominal_rate
    if band is None:
        low, high = -half, half
    else:
        low, high = band
        low = -half if low <= -edge else max(low, -half)
        high = half if high >= edge else min(high, half)
    if slope_db == 0.0 and low == -half and high == half:
        return None
    if high <= low:
        raise ValidationError(f"passband {passband} lies outside the band +-{half:g} Hz")
    a, b = low / nominal_rate, high / nominal_rate  # cycles per sample
    # Gain exp(alpha (nu - centre)): the ideal response's inverse DTFT in closed form.
    alpha = slope_db * math.log(10.0) / 20.0 / (b - a)
    centre = 0.5 * (a + b)
    m = np.arange(-(PASSBAND_TAPS // 2), PASSBAND_TAPS // 2 + 1, dtype=np.float64)
    k = alpha + 2j * np.pi * m
    ideal = np.empty(PASSBAND_TAPS, np.complex128)
    nz = k != 0
    ideal[nz] = (
        np.exp(alpha * (b - centre) + 2j * np.pi * m[nz] * b)
        - np.exp(alpha * (a - centre) + 2j * np.pi * m[nz] * a)
    ) / k[nz]
    ideal[~nz] = b - a
    beta = 0.1102 * (PASSBAND_STOPBAND_DB - 8.7)
    return ideal * np.kaiser(PASSBAND_TAPS, beta)


def _check_passband(passband: object) -> tuple[float, float] | None:
    if passband is None:
        return None
    if isinstance(passband, str) or not isinstance(passband, Sequence) or len(passband) != 2:
        raise ValidationError(f"passband must be (low_cut, high_cut) in Hz, got {passband!r}")
    low = _number(passband[0], "passband low_cut")
    high = _number(passband[1], "passband high_cut")
    if not low < high:
        raise ValidationError(f"passband low_cut {low:g} must be below high_cut {high:g}")
    return low, high


def _gain_db(taps: np.ndarray | None, frequency_hz: float, nominal_rate: float) -> float:
    """A filter's gain at one frequency, dB (0 without a filter)."""
    if taps is None:
        return 0.0
    m = np.arange(-(len(taps) // 2), len(taps) // 2 + 1)
    h = complex(np.sum(taps * np.exp(-2j * np.pi * m * frequency_hz / nominal_rate)))
    return 10.0 * math.log10(max(abs(h) ** 2, 1e-30))


class _Affine:
    """Exact ``x(k) = x0 + k * dx`` for rational x0, dx, evaluated with integers."""

    __slots__ = ("_a", "_b", "_q")

    def __init__(self, x0: Fraction, dx: Fraction) -> None:
        q = math.lcm(x0.denominator, dx.denominator)
        self._a = x0.numerator * (q // x0.denominator)
        self._b = dx.numerator * (q // dx.denominator)
        self._q = q

    def split(self, k: int) -> tuple[int, float]:
        """``floor(x(k))`` and ``x(k) - floor(x(k))`` (the latter as a float in [0, 1))."""
        whole, rest = divmod(self._a + k * self._b, self._q)
        return whole, rest / self._q


class _Path:
    """One way the transmitter reaches a site (ground or sky wave): its exact clocks.

    ``delay`` is the whole delay from emission to sampling (propagation plus the receiver's
    filter delay); ``extra_cycles`` a constant phase (cycles) and ``drift_hz`` a frequency
    offset of the carrier; ``amplitude`` scales it.
    """

    __slots__ = (
        "amplitude",
        "burst_clock",
        "carrier",
        "carrier_cycles",
        "emission",
        "symbol",
    )

    def __init__(
        self,
        stream: SynthStream,
        amplitude: float,
        delay: Fraction,
        extra_cycles: Fraction = Fraction(0),
        drift_hz: Fraction = Fraction(0),
    ) -> None:
        tx = stream._tx
        t0, step = stream._t0, stream._step
        f_tx = Fraction(tx.frequency_hz)
        f_lo = Fraction(stream._truth["lo_frequency_hz"])
        f_bb = f_tx - f_lo + drift_hz
        self.amplitude = amplitude
        # Carrier phase in cycles: f_tx (t - tau) - f_LO t (+ drift t + extra) at each
        # frame's first sample.
        self.carrier = _Affine(f_bb * t0 - f_tx * delay + extra_cycles, f_bb * step)
        self.carrier_cycles = float(f_bb) * stream._u
        # Emission time t - tau of each frame's first sample.
        self.emission = _Affine(t0 - delay, step)
        self.symbol: _Affine | None = None
        self.burst_clock: _Affine | None = None
        if tx.modulation == "fsk":
            baud = Fraction(tx.fsk_baud)
            self.symbol = _Affine((t0 - delay) * baud, step * baud)
        elif tx.modulation == "burst":
            # Emission time relative to the burst epoch, per frame.
            epoch = Fraction(tx.burst_epoch_ns, NS_PER_S)
            self.burst_clock = _Affine(t0 - delay - epoch, step)


class SynthStream:
    """An endless stream of synthetic frames of one site (implements :class:`FrameSource`).

    Create with :meth:`Scenario.stream`.

    Parameters
    ----------
    scenario : Scenario
        The scenario.
    site : Site
        The listening site (one of ``scenario.sites``).
    frequency_hz : float
        Tuned frequency, Hz.
    start_ns : int
        UTC time of the first sample, ns since 1970.
    stale_frames : int, optional
        How many first frames carry a stale timestamp (:data:`STALE_FRAMES`); 0 for a stream
        that continues another on the same receiver (a retune keeps the GNSS clock).
    passband : (float, float), optional
        The receiver's passband ``(low_cut, high_cut)``, Hz; None: none (see
        :func:`passband_taps`). The filter runs over the stream continuously: its state
        carries from frame to frame, and it looks half its length (256 samples) ahead, so
        it delays nothing.

    Attributes
    ----------
    nominal_rate : float
        Announced sample rate.
    true_rate : float
        The rate at which samples are really taken.
    frames_emitted : int
        Frames produced so far.
    passband : (float, float) or None
        The passband asked for.

    Raises
    ------
    ValidationError
        On a bad frequency or passband.
    """

    def __init__(
        self,
        scenario: Scenario,
        site: Site,
        frequency_hz: float,
        start_ns: int,
        *,
        stale_frames: int = STALE_FRAMES,
        passband: tuple[float, float] | None = None,
    ) -> None:
        f_tuned = _number(frequency_hz, "frequency_hz")
        if f_tuned <= 0:
            raise ValidationError(f"frequency_hz must be > 0, got {f_tuned}")
        self.scenario = scenario
        self.site = site
        self.frequency_hz = f_tuned
        self.start_ns = int(start_ns)
        self.nominal_rate = scenario.nominal_rate
        self.true_rate = site.true_rate(scenario.nominal_rate)
        self.frames_emitted = 0
        self.stale_frames = int(stale_frames)
        self.passband = _check_passband(passband)
        self._truth = scenario.truth(site.name, f_tuned, passband=self.passband)

        tag = _site_tag(site.name)
        entropy = [scenario.seed, tag, round(f_tuned * 1000), self.start_ns & _MASK64]
        self._noise_rng = np.random.default_rng([*entropy, 0])
        self._jitter_rng = np.random.default_rng([*entropy, 1])
        self._fix_phase = tag % GPS_FIX_INTERVAL_S
        self._noise_sigma = math.sqrt(
            10.0 ** (self._truth["noise_density_dbfs_hz"] / 10.0) * self.true_rate / 2.0
        )

        rate = Fraction(self.true_rate)
        step = FRAME_SAMPLES / rate  # seconds per frame, exact
        t0 = Fraction(self.start_ns, NS_PER_S)
        self._t0, self._step = t0, step
        self._frame_ns = _Affine(Fraction(self.start_ns) + Fraction(1, 2), step * NS_PER_S)
        # The GNSS stamps: the true times, later by the timing bias.
        bias = Fraction(site.timing_bias_ns)
        self._stamp_ns = _Affine(Fraction(self.start_ns) + bias + Fraction(1, 2), step * NS_PER_S)
        self._u = np.arange(FRAME_SAMPLES, dtype=np.float64) / self.true_rate

        self._signal_fir: np.ndarray | None = None
        self._noise_fir: np.ndarray | None = None
        self._window: list[tuple[np.ndarray, np.ndarray]] = []
        signal_taps = passband_taps(self.passband, self.nominal_rate)
        noise_taps = passband_taps(self.passband, self.nominal_rate, site.noise_slope_db)
        if noise_taps is not None:  # the signal's filter is never needed without the noise's
            self._noise_fir = _fir_spectrum(noise_taps)
            if signal_taps is not None:
                self._signal_fir = _fir_spectrum(signal_taps)

        tx = scenario.transmitter
        self._amplitude = float(self._truth["signal_amplitude_fs"])
        self._modulation = tx.modulation if tx is not None else "carrier"
        self._paths: list[_Path] = []
        if tx is None or self._amplitude == 0.0:
            self._amplitude = 0.0
            return
        self._tx = tx
        filter_delay = Fraction(site.filter_delay_ns) / NS_PER_S
        tau = Fraction(self._truth["delay_s"]) + filter_delay
        self._paths.append(_Path(self, self._amplitude, tau))
        if site.sky_amplitude > 0:
            tau_sky = Fraction(self._truth["sky_delay_s"]) + filter_delay
            self._paths.append(
                _Path(
                    self,
                    self._amplitude * site.sky_amplitude,
                    tau_sky,
                    extra_cycles=Fraction(site.sky_phase_deg) / 360,
                    drift_hz=Fraction(site.sky_drift_hz),
                )
            )
        if self._modulation == "fsk":
            self._u_symbols = self._u * tx.fsk_baud
            self._half_shift = Fraction(tx.fsk_shift_hz) / (2 * Fraction(tx.fsk_baud))
            msg = _fsk_message(scenario.seed)
            self._msg = msg
            self._prefix = np.concatenate([[0], np.cumsum(msg)]).astype(np.int64)
        elif self._modulation == "burst":
            # Each burst's edges as whole + fraction seconds, so frame-relative times stay
            # exact over any epoch.
            edges = [(Fraction(b.start_s), b.duration_s, b.level_db) for b in tx.bursts]
            self._bursts = [
                (math.floor(s), float(s - math.floor(s)), d, 10.0 ** (g / 20.0))
                for s, d, g in edges
            ]
            self._burst_starts = np.array([b.start_s for b in tx.bursts], dtype=np.float64)
            self._burst_ends = np.array([b.end_s for b in tx.bursts], dtype=np.float64)
            self._frame_s = float(step)

    # ---- public ------------------------------------------------------------------------

    @property
    def start_utc(self) -> np.datetime64:
        """UTC time of the stream's first sample."""
        return np.datetime64(self.start_ns, "ns")

    def frame_start_ns(self, k: int) -> int:
        """True UTC time of frame ``k``'s first sample, ns since 1970 (rounded, no jitter).

        Parameters
        ----------
        k : int
            Frame index (0 = first frame of the stream).

        Returns
        -------
        int
            ``start + 512 k / true_rate`` in ns, rounded to the nearest ns. The frame's GNSS
            stamp is this plus the site's :attr:`Site.timing_bias_ns` (and jitter).
        """
        return self._frame_ns.split(int(k))[0]

    def truth(self) -> dict[str, typing.Any]:
        """Ground truth of this stream (see :meth:`Scenario.truth`).

        Returns
        -------
        dict
            A copy of the truth dict.
        """
        return dict(self._truth)

    def next_frame(self) -> SourceFrame:
        """Synthesise the next frame.

        Returns
        -------
        SourceFrame
            The frame; synthetic streams never end.
        """
        k = self.frames_emitted
        self.frames_emitted = k + 1
        if self._noise_fir is None:
            noise = self._noise_rng.standard_normal(2 * FRAME_SAMPLES).view(np.complex128)
            x = noise * self._noise_sigma
            if self._amplitude:
                x += self._signal(k)
        else:
            x = self._filtered(k)
        pairs = to_int16_pairs(x)
        p = pairs.astype(np.float64)
        power_fs = float(np.einsum("ij,ij->", p, p)) / (FRAME_SAMPLES * FULL_SCALE**2)
        rssi = 10.0 * math.log10(max(power_fs, 1e-30)) + self.site.calibration_db
        t_ns = self._stamp_ns.split(k)[0]
        if self.site.timestamp_jitter_ns > 0:
            j = self.site.timestamp_jitter_ns
            t_ns += round(float(self._jitter_rng.uniform(-j, j)))
        if self.site.gps_fix:
            fix = (t_ns // NS_PER_S + self._fix_phase) % GPS_FIX_INTERVAL_S
        else:
            fix = NO_FIX_SOLUTION
        if k < self.stale_frames:
            t_ns -= round(STALE_OFFSET_S * NS_PER_S)
        gpssec, gpsnsec = gnss.utc_to_tow(np.datetime64(t_ns, "ns"))
        return SourceFrame(
            pairs=pairs,
            smeter=dbm_to_smeter(rssi),
            last_gps_solution=int(fix),
            gpssec=int(gpssec),
            gpsnsec=int(gpsnsec),
        )

    # ---- internals ---------------------------------------------------------------------

    def _synthesise(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Frame ``k``'s signal and noise, before the passband filter."""
        noise = self._noise_rng.standard_normal(2 * FRAME_SAMPLES).view(np.complex128)
        noise = noise * self._noise_sigma
        signal = self._signal(k) if self._amplitude else np.zeros(FRAME_SAMPLES, np.complex128)
        return signal, noise

    def _filtered(self, k: int) -> np.ndarray:
        """Frame ``k`` through the passband filter: overlap-save over frames k-1, k, k+1."""
        if not self._window:  # the first frame: the frame before it and the one after
            self._window = [self._synthesise(k - 1), self._synthesise(k)]
        else:
            self._window.pop(0)
        self._window.append(self._synthesise(k + 1))
        half = FRAME_SAMPLES // 2
        (s0, n0), (s1, n1), (s2, n2) = self._window
        noise = np.concatenate([n0[half:], n1, n2[:half]])
        assert self._noise_fir is not None
        spectrum = np.fft.fft(noise) * self._noise_fir
        if self._signal_fir is not None:
            signal = np.concatenate([s0[half:], s1, s2[:half]])
            spectrum += np.fft.fft(signal) * self._signal_fir
            return np.fft.ifft(spectrum)[half : half + FRAME_SAMPLES]
        return np.fft.ifft(spectrum)[half : half + FRAME_SAMPLES] + s1

    def _signal(self, k: int) -> np.ndarray:
        """The transmitter's contribution to frame ``k`` (complex, full-scale units)."""
        out = self._path_signal(self._paths[0], k)
        for path in self._paths[1:]:
            out = out + self._path_signal(path, k)
        return out

    def _path_signal(self, path: _Path, k: int) -> np.ndarray:
        """One path's contribution to frame ``k``."""
        cycles = path.carrier.split(k)[1] + path.carrier_cycles
        amplitude: float | np.ndarray = path.amplitude
        if self._modulation == "ook":
            amplitude = path.amplitude * self._ook_envelope(path, k)
        elif self._modulation == "fsk":
            cycles = cycles + self._fsk_cycles(path, k)
        elif self._modulation == "burst":
            envelope = self._burst_envelope(path, k)
            if envelope is None:
                return np.zeros(FRAME_SAMPLES, np.complex128)
            amplitude = path.amplitude * envelope
        return amplitude * np.exp(2j * np.pi * cycles)

    def _burst_envelope(self, path: _Path, k: int) -> np.ndarray | None:
        """Amplitude of the bursts in frame ``k`` (relative to ``A``); None when silent."""
        assert path.burst_clock is not None
        whole, frac = path.burst_clock.split(k)
        t0 = whole + frac  # approximate, only to pick the bursts that may touch the frame
        margin = self._tx.keying_edge_s + 1e-6
        first = int(np.searchsorted(self._burst_ends, t0 - margin, side="left"))
        last = int(np.searchsorted(self._burst_starts, t0 + self._frame_s + margin, side="right"))
        if first >= last:
            return None
        w = self._tx.keying_edge_s
        envelope = np.zeros(FRAME_SAMPLES, np.float64)
        for b_whole, b_frac, duration, gain in self._bursts[first:last]:
            x = (whole - b_whole) + (frac - b_frac) + self._u  # time since the leading edge
            envelope += gain * (_ramp(x, w) - _ramp(x - duration, w))
        return envelope

    def _ook_envelope(self, path: _Path, k: int) -> np.ndarray:
        tx = self._tx
        second, frac = path.emission.split(k)
        r = frac + self._u  # emission time relative to `second`, in [0, 1.05)
        w = tx.keying_edge_s
        lengths = [OOK_DURATIONS_S[_ook_bit(self.scenario.seed, second + q)] for q in (0, 1)]
        # Most frames hold no edge: every ramp is then exactly 0.0 or 1.0 over the frame, and
        # so is the keying (the same values the ramps would give, sample by sample).
        steps = [
            _ramp_constant(r[0] - q - e, r[-1] - q - e, w)
            for q in (0, 1)
            for e in (0.0, lengths[q])
        ]
        if None not in steps:
            constant = (steps[0] - steps[1]) + (steps[2] - steps[3])
            return np.full(FRAME_SAMPLES, 1.0 - (1.0 - tx.keying_depth) * constant)
        keyed = np.zeros_like(r)
        for q in (0, 1):  # this second's keying and the next one's leading edge
            length = lengths[q]
            x = r - q
            keyed += _ramp(x, w) - _ramp(x - length, w)
        return 1.0 - (1.0 - tx.keying_depth) * keyed

    def _fsk_cycles(self, path: _Path, k: int) -> np.ndarray:
        """Modulation phase (cycles) for frame ``k``: half_shift * (P(s) + d_s * frac)."""
        assert path.symbol is not None
        k0, frac0 = path.symbol.split(k)
        pos = frac0 + self._u_symbols
        ds = np.floor(pos).astype(np.int64)
        within = pos - ds
        n = FSK_MESSAGE_BITS
        sym = k0 + ds
        prefix = (sym // n) * self._prefix[n] + self._prefix[sym % n]
        p0 = (k0 // n) * int(self._prefix[n]) + int(self._prefix[k0 % n])
        h = self._half_shift
        base = (h.numerator * p0 % h.denominator) / h.denominator  # frac(h * P(k0)), exact
        return base + float(h) * ((prefix - p0) + self._msg[sym % n] * within)


def _fir_spectrum(taps: np.ndarray) -> np.ndarray:
    """The FFT, over two frames, of zero-phase taps centred on sample 0 (wrapped around)."""
    size = 2 * FRAME_SAMPLES
    half = len(taps) // 2
    circular = np.zeros(size, np.complex128)
    circular[: half + 1] = taps[half:]
    circular[size - half :] = taps[:half]
    return np.fft.fft(circular)


def _ramp_constant(first: float, last: float, width: float) -> float | None:
    """The value of :func:`_ramp` over ``[first, last]`` when it is constant there, else None."""
    if width <= 0:
        return 1.0 if first >= 0 else 0.0 if last < 0 else None
    if last / width + 0.5 <= 0.0:
        return 0.0
    if first / width + 0.5 >= 1.0:
        return 1.0
    return None


def _ramp(x: np.ndarray, width: float) -> np.ndarray:
    """Raised-cosine step from 0 to 1, centred on 0, ``width`` wide (a hard step if 0)."""
    if width <= 0:
        return (x >= 0).astype(np.float64)
    y = np.clip(x / width + 0.5, 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * y)
