"""One receiver's IQ stream with its per-frame GNSS timestamps.

A :class:`Recording` is what the client receives from one KiwiSDR and what a kiwi IQ WAV file
holds: the samples, and for every 512-sample frame its sequence number, GNSS time stamp, fix
age and RSSI. It derives the exact sample rate and the time of the first sample from the
timestamps, which is what time-difference-of-arrival work needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from heimdall_lab import gnss
from heimdall_lab.values import NS_PER_S

__all__ = ["FRAME_SAMPLES", "FULL_SCALE", "NOMINAL_RATE", "Recording"]

#: Samples in one IQ frame.
FRAME_SAMPLES = 512
#: Int16 full scale: a sample of this magnitude is 1.0.
FULL_SCALE = 32768.0
#: The nominal KiwiSDR IQ sample rate, samples per second (the exact one is fitted to the
#: GNSS timestamps, see :func:`heimdall_lab.gnss.fit_rate`).
NOMINAL_RATE = 12000.0


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
    """

    samples: np.ndarray = field(default_factory=lambda: np.zeros(0, np.complex64))
    frame_start: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    seq: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    last_gps_solution: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint8))
    gpssec: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    gpsnsec: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    rssi_dbm: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    nominal_rate: float = NOMINAL_RATE

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
        """Per frame: a usable fix and not one of the first, stale, frames."""
        return gnss.trusted_frames(self.last_gps_solution)

    @property
    def lost_frames(self) -> int:
        """Frames lost in transit, from jumps in the sequence numbers."""
        if self.n_frames < 2:
            return 0
        steps = np.diff(self.seq) & 0xFFFFFFFF
        return int(np.sum(np.where(steps > 1, steps - 1, 0)))

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
        lost = np.concatenate([[0], np.cumsum((np.diff(self.seq) & 0xFFFFFFFF) - 1)])
        frame_len = int(np.median(np.diff(self.frame_start)))
        return self.frame_start + np.maximum(lost, 0) * frame_len

    def _timeline(self) -> tuple[np.ndarray, np.ndarray]:
        """Trusted frames' sample index (as sent) and GNSS time (s since the first of them)."""
        ok = self.trusted
        t = self.gpssec[ok] * NS_PER_S + self.gpsnsec[ok]
        t = t + gnss.WEEK_NS * np.cumsum(np.concatenate([[0], np.diff(t) < -gnss.WEEK_NS // 2]))
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
            ``datetime64[ns]`` per frame.
        """
        t = gnss.tow_to_utc(self.gpssec, self.gpsnsec, reference)
        return np.where(self.has_fix, t, np.datetime64("NaT", "ns"))
