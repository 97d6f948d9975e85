"""One receiver's IQ stream with its per-frame GNSS timestamps.

A :class:`Recording` is what the client receives from one KiwiSDR and what a kiwi IQ WAV file
holds: the samples, and for every 512-sample frame its sequence number, GNSS time stamp, fix
age and RSSI. It derives the exact sample rate and the time of the first sample from the
timestamps, which is what time-difference-of-arrival work needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property

import numpy as np

from heimdall_lab import gnss
from heimdall_lab.values import NS_PER_S

__all__ = [
    "CLOCK_TOLERANCE_S",
    "FRAME_SAMPLES",
    "FULL_SCALE",
    "MAX_SEQ_STEP",
    "NOMINAL_RATE",
    "RATE_TOLERANCE",
    "Recording",
]

#: Samples in one IQ frame.
FRAME_SAMPLES = 512
#: Int16 full scale: a sample of this magnitude is 1.0.
FULL_SCALE = 32768.0
#: The nominal KiwiSDR IQ sample rate, samples per second (the exact one is fitted to the
#: GNSS timestamps, see :func:`heimdall_lab.gnss.fit_rate`).
NOMINAL_RATE = 12000.0
#: Largest forward step of the frame sequence number taken as lost frames (about 12 hours
#: of frames); a larger step, after the 2**32 wrap is allowed for, is the sequence stepping
#: back.
MAX_SEQ_STEP = 2**20
#: Largest relative difference between the rate fitted to the GNSS times and the rate the
#: server announced (0.5 %; a KiwiSDR's real rate is within 0.01 % of what it announces).
RATE_TOLERANCE = 0.005
#: Largest distance between a live stream's GNSS time and this computer's clock, in seconds
#: (a KiwiSDR's stream lags real time by about a second; a clock without NTP may drift more).
CLOCK_TOLERANCE_S = 60.0
#: Timing problems listed in a message before "and N more".
_SHOWN_PROBLEMS = 3


@dataclass
class Recording:
    """Samples and per-frame metadata of one receiver.

    Attributes
    ----------
    samples : numpy.ndarray
        Complex64 samples, int16 full scale = 1.0, in arrival order (lost frames are not
        filled in; see :attr:`seq` and :attr:`frame_start`).
    frame_start : numpy.ndarray
        Index in :attr:`samples` of each frame's first sample.
    seq : numpy.ndarray
        Sequence number of each frame.
    last_gps_solution : numpy.ndarray
        Seconds since the last GNSS fix per frame; 253-255 mean none.
    gpssec, gpsnsec : numpy.ndarray
        GNSS time of each frame's first sample (GPS seconds of week, nanoseconds).
    rssi_dbm : numpy.ndarray
        S-meter RSSI per frame in dBm (NaN where unknown, as in WAV files).
    nominal_rate : float
        The sample rate the server announced (or the WAV header's).
    stream_problems : tuple of str
        Timing problems only the receiving side saw (the announced rate changing
        mid-stream); :attr:`timing_problems` adds those the data shows.
    arrival_utc : numpy.datetime64 or None
        For a live stream, this computer's UTC clock when the first frame arrived: its GNSS
        time must be within :data:`CLOCK_TOLERANCE_S` of it. None for a recording (a file, a
        replay), whose GNSS time is of another day.
    """

    samples: np.ndarray = field(default_factory=lambda: np.zeros(0, np.complex64))
    frame_start: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    seq: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    last_gps_solution: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint8))
    gpssec: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    gpsnsec: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    rssi_dbm: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    nominal_rate: float = NOMINAL_RATE
    stream_problems: tuple[str, ...] = ()
    arrival_utc: np.datetime64 | None = None

    @property
    def n_frames(self) -> int:
        """Number of frames received."""
        return len(self.frame_start)

    @property
    def has_fix(self) -> np.ndarray:
        """Per frame: whether its timestamp comes from a usable GNSS fix."""
        return gnss.has_fix(self.last_gps_solution)

    @property
    def trusted(self) -> np.ndarray:
        """Per frame: a usable fix, not one of the first, stale, frames, and sane timing.

        No frame is trusted when :attr:`timing_problems` lists any: the GNSS times of such a
        stream are kept in the data but never used as times.
        """
        ok = gnss.trusted_frames(self.last_gps_solution)
        return ok if self.timing_ok else np.zeros_like(ok)

    @property
    def timing_ok(self) -> bool:
        """Whether the stream's timing passed every check of :attr:`timing_problems`."""
        return not self.timing_problems

    @cached_property
    def timing_problems(self) -> list[str]:
        """What is wrong with the stream's timing, one phrase each; empty when it is sane.

        The checks: the sequence number steps back (beyond a plausible 2**32 wrap, see
        :data:`MAX_SEQ_STEP`) or repeats; more frames are lost than received; a GNSS time
        with a fix is out of range, goes backwards or stands still; a live stream's GNSS
        time is more than :data:`CLOCK_TOLERANCE_S` from this computer's clock
        (:attr:`arrival_utc`); the rate fitted to the GNSS times differs from the announced
        one by more than :data:`RATE_TOLERANCE`; plus :attr:`stream_problems`.
        """
        problems = list(self.stream_problems)
        steps = np.diff(self.seq) & 0xFFFFFFFF
        for label, bad in (("repeats", steps == 0), ("steps back", steps > MAX_SEQ_STEP)):
            if bad.any():
                problems.append(
                    f"the frame sequence {label} {int(bad.sum())} time(s), first after "
                    f"frame {int(np.flatnonzero(bad)[0])}"
                )
        fixed = gnss.trusted_frames(self.last_gps_solution)
        in_range = (self.gpssec < gnss.WEEK_SECONDS) & (self.gpsnsec < NS_PER_S)
        if (fixed & ~in_range).any():
            problems.append(
                f"GNSS time out of range in {int((fixed & ~in_range).sum())} frame(s) "
                f"(seconds of week {int(self.gpssec[fixed & ~in_range][0])})"
            )
            return problems
        t = self._gnss_ns(fixed)
        dt = np.diff(t)
        if (dt <= 0).any():
            back, still = int((dt < 0).sum()), int((dt == 0).sum())
            problems.append(f"GNSS time goes backwards {back} and stands still {still} time(s)")
            return problems
        lost = self.lost_frames
        if lost > max(self.n_frames, 8):
            problems.append(f"{lost} frames lost, more than the {self.n_frames} received")
        offset = self._clock_offset_s()
        if abs(offset) > CLOCK_TOLERANCE_S:
            problems.append(
                f"GNSS time is {offset:+.0f} s from this computer's clock (more than "
                f"{CLOCK_TOLERANCE_S:g} s; if every receiver says so, check the clock, or for "
                "a replay of another day give its time: gps_reference, --start-utc)"
            )
        if not problems:
            index = self._sent_index()[fixed].astype(np.float64)
            rate = gnss.fit_rate(index - (index[0] if len(index) else 0.0), (t - t[:1]) / 1e9)
            if np.isfinite(rate.rate) and abs(rate.rate / self.nominal_rate - 1) > RATE_TOLERANCE:
                problems.append(
                    f"the rate fitted to GNSS time, {rate.rate:.1f} Hz, is not the announced "
                    f"{self.nominal_rate:g} Hz (more than {RATE_TOLERANCE:.1%} apart)"
                )
        return problems

    def _clock_offset_s(self) -> float:
        """The first fixed, not stale, frame's GNSS time less :attr:`arrival_utc`, in s.

        0 without an arrival time or such a frame. The frame's own arrival is a few frames
        after the first's (at most seconds): well within :data:`CLOCK_TOLERANCE_S`.
        """
        fixed = np.flatnonzero(gnss.trusted_frames(self.last_gps_solution))
        if self.arrival_utc is None or len(fixed) == 0:
            return 0.0
        i = fixed[0]
        gnss_utc = gnss.tow_to_utc(self.gpssec[i], self.gpsnsec[i], self.arrival_utc)
        arrival = np.datetime64(self.arrival_utc, "ns")
        return float((gnss_utc - arrival) / np.timedelta64(1, "s"))

    def timing_summary(self) -> str:
        """The timing problems as one short phrase (empty when the timing is sane)."""
        shown = self.timing_problems[:_SHOWN_PROBLEMS]
        more = len(self.timing_problems) - len(shown)
        return "; ".join(shown) + (f"; and {more} more" if more > 0 else "")

    @property
    def lost_frames(self) -> int:
        """Frames lost in transit, from forward jumps in the sequence numbers."""
        if self.n_frames < 2:
            return 0
        steps = np.diff(self.seq) & 0xFFFFFFFF
        return int(np.sum(np.where((steps > 1) & (steps <= MAX_SEQ_STEP), steps - 1, 0)))

    @property
    def gap_positions(self) -> np.ndarray:
        """Indices of frames that follow a gap in the sequence."""
        if self.n_frames < 2:
            return np.zeros(0, np.int64)
        steps = np.diff(self.seq) & 0xFFFFFFFF
        return np.flatnonzero(steps != 1) + 1

    def _sent_index(self) -> np.ndarray:
        """Each frame's first-sample index in the stream as sent, lost frames counted.

        Lost frames leave no samples here but took time at the receiver; counting them (from
        the sequence numbers, at this stream's frame length) keeps the index in step with the
        GNSS time across gaps.
        """
        if self.n_frames < 2:
            return self.frame_start.astype(np.int64)
        steps = np.diff(self.seq) & 0xFFFFFFFF
        steps = np.where(steps <= MAX_SEQ_STEP, steps, 1)
        lost = np.concatenate([[0], np.cumsum(steps - 1)])
        frame_len = int(np.median(np.diff(self.frame_start)))
        return self.frame_start + np.maximum(lost, 0) * frame_len

    def _gnss_ns(self, frames: np.ndarray) -> np.ndarray:
        """The GNSS time of the chosen frames in ns, unwrapped across week rollovers."""
        t = self.gpssec[frames] * NS_PER_S + self.gpsnsec[frames]
        return t + gnss.WEEK_NS * np.cumsum(np.concatenate([[0], np.diff(t) < -gnss.WEEK_NS // 2]))

    def _timeline(self) -> tuple[np.ndarray, np.ndarray]:
        """Trusted frames' sample index (as sent) and GNSS time (s since the first of them)."""
        ok = self.trusted
        t = self._gnss_ns(ok)
        idx = self._sent_index()[ok].astype(np.float64)
        return idx - (idx[0] if len(idx) else 0.0), (t - (t[0] if len(t) else 0)) / NS_PER_S

    def _rate_fit(self) -> gnss.RateFit:
        return gnss.fit_rate(*self._timeline())

    def sample_rate(self) -> float:
        """Exact sample rate derived from the GNSS timestamps (:func:`heimdall_lab.gnss.fit_rate`).

        Returns
        -------
        float
            Samples per second; the nominal rate when fewer than two frames are trusted.
        """
        rate = self._rate_fit().rate
        return rate if np.isfinite(rate) else self.nominal_rate

    def timestamp_residual_ns(self) -> float:
        """RMS of the trusted timestamps about the fitted line, in ns (a clock health figure).

        Returns
        -------
        float
            RMS residual in ns; NaN with fewer than three trusted frames.
        """
        return self._rate_fit().rms_s(min_points=3) * NS_PER_S

    def start_time(self, reference: datetime | np.datetime64 | None = None) -> np.datetime64:
        """GNSS (UTC) time of the first sample, from the first trusted frame.

        Parameters
        ----------
        reference : datetime or numpy.datetime64, optional
            A UTC time within half a week, to resolve the GPS week (wall clock by default).

        Returns
        -------
        numpy.datetime64
            UTC time of sample 0; NaT when no frame is trusted.
        """
        ok = np.flatnonzero(self.trusted)
        if len(ok) == 0:
            return np.datetime64("NaT", "ns")
        i = ok[0]
        t = gnss.tow_to_utc(self.gpssec[i], self.gpsnsec[i], reference)
        back_ns = round(self._sent_index()[i] / self.sample_rate() * NS_PER_S)
        return t - np.timedelta64(back_ns, "ns")

    def frame_times(self, reference: datetime | np.datetime64 | None = None) -> np.ndarray:
        """UTC time of each frame's first sample (NaT where the frame has no usable fix).

        Parameters
        ----------
        reference : datetime or numpy.datetime64, optional
            A UTC time within half a week, to resolve the GPS week (wall clock by default).

        Returns
        -------
        numpy.ndarray
            ``datetime64[ns]`` per frame; all NaT when :attr:`timing_ok` is False.
        """
        out = np.full(self.n_frames, np.datetime64("NaT", "ns"))
        if self.timing_ok:
            fix = self.has_fix & (self.gpssec < gnss.WEEK_SECONDS) & (self.gpsnsec < NS_PER_S)
            out[fix] = gnss.tow_to_utc(self.gpssec[fix], self.gpsnsec[fix], reference)
        return out
