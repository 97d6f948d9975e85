"""Put several receivers' IQ on one GNSS time axis.

Trusted frames, exact rates, carrier removal, a common grid.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import xarray as xr
from scipy import fft as sfft

from heimdall_lab import dsp, gnss
from heimdall_lab.errors import HeimdallError, ValidationError
from heimdall_lab.localize.checks import _check_receiver_position
from heimdall_lab.localize.results import ReceiverTiming
from heimdall_lab.recording import NOMINAL_RATE
from heimdall_lab.values import NS_PER_S

log = logging.getLogger(__name__)


# ============================================================================================
# Alignment on GNSS time


@dataclass
class _Track:
    """One receiver's usable samples with their GNSS times (s from the common reference).

    ``frames``, when known, is how ``t`` was built: each frame's time and sample count, so
    that ``t = repeat(frame_t, frame_len) + (index within the frame) / rate``.
    """

    timing: ReceiverTiming
    t: np.ndarray
    x: np.ndarray
    rate: float
    frames: tuple[np.ndarray, np.ndarray] | None = None


def _phasor(track: _Track, f0: float) -> np.ndarray:
    """``exp(-2j pi f0 t)`` at every sample time of a track.

    Built from the frames when known: a table per frame and one per position within a
    frame (the same numbers to rounding, without a complex exponential per sample).
    """
    if track.frames is None:
        return np.exp(-2j * np.pi * f0 * track.t)
    frame_t, frame_len = track.frames
    within = np.arange(int(frame_len.max())) / track.rate
    per_frame = np.exp(-2j * np.pi * f0 * frame_t)
    per_sample = np.exp(-2j * np.pi * f0 * within)
    offs = np.cumsum(frame_len) - frame_len
    pos = np.arange(len(track.t)) - np.repeat(offs, frame_len)
    return np.repeat(per_frame, frame_len) * per_sample[pos]


def _wrap_ns(ns: np.ndarray) -> np.ndarray:
    """Wrap int64 ns differences into [-half week, half week)."""
    return (ns + gnss.WEEK_NS // 2) % gnss.WEEK_NS - gnss.WEEK_NS // 2


def _track_from_arrays(
    timing: ReceiverTiming,
    iq: np.ndarray,
    frame_start: np.ndarray,
    frame_seq: np.ndarray,
    rel_ns: np.ndarray,
    trusted: np.ndarray,
    nominal: float,
    max_timestamp_error_s: float,
    min_duration_s: float,
) -> _Track | None:
    """Place one receiver's trusted frames on the time axis (see the module docstring)."""
    n = len(iq)
    k_all = np.flatnonzero((frame_start >= 0) & (frame_start < n))
    timing.n_frames = len(k_all)
    if len(k_all) == 0:
        timing.reason = "no frames"
        return None
    starts = frame_start[k_all]
    if np.any(np.diff(starts) <= 0):
        timing.reason = "frame_start is not increasing"
        return None
    lengths = np.diff(np.append(starts, n))
    seq = frame_seq[k_all] if frame_seq is not None else k_all.astype(np.int64)
    steps = np.diff(seq) & 0xFFFFFFFF
    timing.lost_frames = int(np.sum(np.where(steps > 1, steps - 1, 0)))
    ok = trusted[k_all].astype(bool)
    timing.frames_untrusted = int(np.sum(~ok))
    u = np.flatnonzero(ok)
    if len(u) < 2:
        timing.reason = f"{len(u)} frame(s) with a usable GNSS fix (need at least 2)"
        return None
    s = starts[u].astype(np.float64)
    t = rel_ns[k_all][u].astype(np.float64) / NS_PER_S
    # A robust first guess of the rate (for telling timing jumps from jitter): the median
    # over neighbouring trusted frames with nothing lost between them.
    step_ok = ((np.diff(seq[u]) & 0xFFFFFFFF) == np.diff(k_all[u])) & (np.diff(t) > 0)
    if step_ok.any():
        nominal = float(np.median(np.diff(s)[step_ok] / np.diff(t)[step_ok]))
    keep = np.ones(len(u), bool)
    b = float("nan")
    for _ in range(3):  # fit, drop frames far off their segment's line, fit again
        seg, explained = gnss.frame_segments(
            starts[u][keep], t[keep], k_all[u][keep], seq[u][keep], nominal
        )
        fit = gnss.fit_rate(s[keep], t[keep], seg)
        b, res = fit.seconds_per_sample, fit.residual_s
        if not math.isfinite(b) or b <= 0:
            break
        bad = np.abs(res) > max_timestamp_error_s
        # A lone frame cut off by unexplained timing jumps on both sides is a bad timestamp.
        sizes = np.bincount(seg)
        lone = sizes[seg] == 1
        nxt = np.append(explained[1:], True)
        bad |= lone & ~explained & ~nxt & (len(seg) > 2)
        if not bad.any():
            break
        idx = np.flatnonzero(keep)
        keep[idx[bad]] = False
    if not math.isfinite(b) or b <= 0:
        timing.reason = "no two consecutive trusted frames to derive the sample rate from"
        return None
    rate = 1.0 / b
    seg, _ = gnss.frame_segments(starts[u][keep], t[keep], k_all[u][keep], seq[u][keep], nominal)
    res = gnss.fit_rate(s[keep], t[keep], seg).residual_s
    sizes = np.bincount(seg)
    in_fit = sizes[seg] >= 2
    timing.timestamp_rms_ns = (
        float(np.sqrt(np.mean(res[in_fit] ** 2)) * NS_PER_S) if in_fit.any() else float("nan")
    )
    timing.segments = len(sizes)
    # Frames overlapping earlier ones in time (a bad timestamp) are dropped.
    used = np.flatnonzero(keep)
    t_used = t[used]
    ends = t_used + lengths[u][used] / rate
    good = np.ones(len(used), bool)
    last_end = -np.inf
    for i in range(len(used)):
        if t_used[i] < last_end - 0.5 / rate:
            good[i] = False
            continue
        last_end = ends[i]
    used = used[good]
    timing.frames_inconsistent = int(len(u) - len(used))
    timing.frames_used = len(used)
    timing.sample_rate = rate
    if timing.frames_inconsistent:
        log.warning(
            "%s: %d trusted frame(s) rejected: timestamp inconsistent with the sample count",
            timing.name,
            timing.frames_inconsistent,
        )
    fr = u[used]
    f_starts = starts[fr]
    f_len = lengths[fr]
    total = int(f_len.sum())
    offs = np.repeat(np.cumsum(np.concatenate([[0], f_len[:-1]])), f_len)
    within = np.arange(total) - offs
    idx = np.repeat(f_starts, f_len) + within
    times = np.repeat(t[used], f_len) + within / rate
    x = np.asarray(iq[idx], dtype=np.complex128)
    finite = np.isfinite(x)
    frames: tuple[np.ndarray, np.ndarray] | None = (t[used], f_len)
    if not finite.all():
        times, x = times[finite], x[finite]
        frames = None
    if len(times) < 2 or times[-1] - times[0] < min_duration_s:
        timing.reason = (
            f"only {0 if len(times) < 2 else times[-1] - times[0]:.2f} s of GNSS-timed samples "
            f"(need {min_duration_s:g} s)"
        )
        return None
    timing.start_s, timing.end_s = float(times[0]), float(times[-1])
    timing.used = True
    return _Track(timing, times, x, rate, frames)


def _dataset_tracks(
    ds: xr.Dataset, max_timestamp_error_s: float, min_duration_s: float
) -> tuple[list[ReceiverTiming], list[_Track], np.datetime64 | None]:
    """Every receiver's timing report and the usable tracks of a capture Dataset."""
    if not isinstance(ds, xr.Dataset):
        raise ValidationError(f"expected an xarray.Dataset (a capture), got {type(ds).__name__}")
    needed = ["iq", "frame_start", "frame_gpssec", "frame_gpsnsec"]
    missing = [v for v in needed if v not in ds.variables]
    if "frame_trusted" not in ds.variables and "frame_gps_solution" not in ds.variables:
        missing.append("frame_trusted (or frame_gps_solution)")
    for c in ("latitude", "longitude"):
        if c not in ds.variables:
            missing.append(c)
    if missing:
        raise ValidationError(
            "the capture Dataset lacks " + ", ".join(missing) + "; build it with "
            "heimdall_lab.kiwi.acquire.acquire or heimdall_lab.dataset.build_dataset"
        )
    if tuple(ds["iq"].dims) != ("receiver", "sample"):
        raise ValidationError(f"ds.iq must have dims ('receiver', 'sample'), got {ds['iq'].dims}")
    n_rx = ds.sizes["receiver"]
    names = (
        [str(v) for v in ds["receiver"].values]
        if "receiver" in ds.variables
        else [f"rx{i}" for i in range(n_rx)]
    )
    lat = np.asarray(ds["latitude"].values, dtype=np.float64)
    lon = np.asarray(ds["longitude"].values, dtype=np.float64)
    positions = [_check_receiver_position(n, a, b) for n, a, b in zip(names, lat, lon, strict=True)]
    iq_all = ds["iq"].values
    f_start = np.asarray(ds["frame_start"].values, dtype=np.int64)
    f_seq = np.asarray(ds["frame_seq"].values, np.int64) if "frame_seq" in ds.variables else None
    f_sec = np.asarray(ds["frame_gpssec"].values, dtype=np.int64)
    f_nsec = np.asarray(ds["frame_gpsnsec"].values, dtype=np.int64)
    if "frame_trusted" in ds.variables:
        trusted = np.asarray(ds["frame_trusted"].values, dtype=bool)
    else:
        trusted = gnss.trusted_frames(np.asarray(ds["frame_gps_solution"].values))
    trusted = trusted & (f_sec >= 0) & (f_nsec >= 0)
    n_samples = (
        np.asarray(ds["n_samples"].values, dtype=np.int64)
        if "n_samples" in ds.variables
        else np.full(n_rx, ds.sizes["sample"], np.int64)
    )
    nominal = (
        np.asarray(ds["sample_rate"].values, dtype=np.float64)
        if "sample_rate" in ds.variables
        else np.full(n_rx, NOMINAL_RATE)
    )
    tow = f_sec * NS_PER_S + f_nsec
    ref_ns: int | None = None
    epoch: np.datetime64 | None = None
    for i in range(n_rx):
        k = np.flatnonzero(trusted[i])
        if len(k):
            ref_ns = int(tow[i, k[0]])
            if "frame_time" in ds.variables:
                ft = np.asarray(ds["frame_time"].values[i, k[0]], dtype="M8[ns]")
                epoch = None if np.isnat(ft) else ft
            break
    timings: list[ReceiverTiming] = []
    tracks: list[_Track] = []
    for i, name in enumerate(names):
        timing = ReceiverTiming(name, *positions[i])
        timings.append(timing)
        if ref_ns is None:
            timing.reason = "no frame with a usable GNSS fix"
            continue
        rel = _wrap_ns(tow[i] - ref_ns)
        rate_guess = nominal[i] if math.isfinite(nominal[i]) and nominal[i] > 0 else NOMINAL_RATE
        track = _track_from_arrays(
            timing,
            iq_all[i, : int(n_samples[i])],
            f_start[i],
            f_seq[i] if f_seq is not None else None,
            rel,
            trusted[i],
            rate_guess,
            max_timestamp_error_s,
            min_duration_s,
        )
        if track is None:
            log.info("%s left out: %s", name, timing.reason)
        else:
            tracks.append(track)
    return timings, tracks, epoch


# ============================================================================================
# Carrier and resampling


def _carrier_offset(track: _Track) -> float:
    """Carrier offset (Hz) of a track: dsp's estimate refined by a weighted phase-slope fit."""
    x, t = track.x, track.t
    try:
        m = dsp.measure(x, track.rate)
        f0 = float(m.measured_offset_hz)
        track.timing.power_dbfs = float(m.signal_power_dbfs)
    except HeimdallError:
        spec = np.abs(np.fft.fft(x))
        f0 = float(np.fft.fftfreq(len(x), 1.0 / track.rate)[int(np.argmax(spec))])
    # Refine: phase of 0.1 s block sums of the mixed-down signal, weighted linear fit.
    for _ in range(2):
        y = x * _phasor(track, f0)
        edges = np.arange(t[0], t[-1] - 0.1, 0.1)
        if len(edges) < 4:
            break
        blk = np.searchsorted(t, edges)
        sums = np.add.reduceat(y, blk)
        mid = edges + 0.05
        w = np.abs(sums)
        if not np.any(w > 0):
            break
        ph = np.unwrap(np.angle(sums))
        coef = np.polyfit(mid - mid.mean(), ph, 1, w=w / w.max())
        df = coef[0] / (2 * np.pi)
        if not math.isfinite(df) or abs(df) > 2.0:
            break
        f0 += df
        if abs(df) < 1e-6:
            break
    return f0


def _resample(track: _Track, grid: np.ndarray, f0: float) -> tuple[np.ndarray, np.ndarray]:
    """Mix a track to 0 Hz and interpolate it linearly onto ``grid``; invalid in gaps."""
    t, x = track.t, track.x
    y = x * _phasor(track, f0)
    idx = np.searchsorted(t, grid, side="right")
    inside = (idx > 0) & (idx < len(t))
    i1 = np.clip(idx, 1, len(t) - 1)
    i0 = i1 - 1
    dt = t[i1] - t[i0]
    valid = inside & (dt <= 1.5 / track.rate)
    w = np.where(valid, (grid - t[i0]) / np.where(dt > 0, dt, 1.0), 0.0)
    out = y[i0] * (1.0 - w) + y[i1] * w
    out[~valid] = 0.0
    return out, valid


def _band_mask(n: int, fs: float, lo: float, hi: float) -> np.ndarray:
    f = np.abs(sfft.fftfreq(n, 1.0 / fs))
    return (f >= lo) & (f <= hi)


def envelope(y: np.ndarray, fs: float, band_hz: float) -> np.ndarray:
    """The magnitude of a signal band-limited to ``|f| <= band_hz``.

    The envelope the localization correlates (``method="envelope"``), and the one
    :func:`heimdall_lab.ui.plots.plot_envelope` draws.

    Parameters
    ----------
    y : numpy.ndarray
        Complex samples, the carrier mixed to 0 Hz.
    fs : float
        Sample rate, Hz.
    band_hz : float
        One-sided bandwidth kept, Hz.

    Returns
    -------
    numpy.ndarray
        ``|y|`` after the band limit, as long as ``y``.
    """
    n = sfft.next_fast_len(len(y))
    spec = sfft.fft(y, n)
    spec[~_band_mask(n, fs, 0.0, band_hz)] = 0.0
    return np.abs(sfft.ifft(spec, overwrite_x=True)[: len(y)])


def _prepare(y: np.ndarray, valid: np.ndarray, method: str, fs: float, band: tuple) -> np.ndarray:
    """The signal to correlate: envelope of the band-limited signal, or the complex signal."""
    z = envelope(y, fs, band[1]) if method == "envelope" else y.astype(np.complex128, copy=True)
    if valid.any():
        z = z - z[valid].mean()
    z[~valid] = 0.0
    return z
