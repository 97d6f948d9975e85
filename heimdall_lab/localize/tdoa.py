"""TDoA localization of a capture Dataset, of recordings, or of kiwi WAV files."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import xarray as xr

from heimdall_lab import geo
from heimdall_lab.dataset import build_dataset
from heimdall_lab.errors import LocalizationError, ValidationError
from heimdall_lab.io.kiwi_wav import parse_kiwi_wav_name, read_kiwi_wav
from heimdall_lab.io.open import Source, open_capture
from heimdall_lab.localize.align import (
    _carrier_offset,
    _dataset_tracks,
    _prepare,
    _resample,
    _Track,
)
from heimdall_lab.localize.checks import (
    _check_band,
    _check_method,
    _check_receiver_position,
)
from heimdall_lab.localize.delay import PairCorrelation, _correlation, _Signal
from heimdall_lab.localize.results import (
    DelayEstimate,
    Localization,
    PairDelay,
    ReceiverTiming,
)
from heimdall_lab.localize.rssi import locate_rssi_dataset
from heimdall_lab.localize.solver import _check_confidence, _check_velocity, _model, solve_tdoa
from heimdall_lab.receivers import Receiver
from heimdall_lab.recording import Recording
from heimdall_lab.values import NS_PER_S, positive

log = logging.getLogger(__name__)


# ============================================================================================
# Dataset, recordings and files


@dataclass(frozen=True)
class _PairCheck:
    margin: float
    min_coefficient: float
    min_psr_db: float
    max_sigma: float
    floor: float
    systematic: float


def _max_delay(a: ReceiverTiming, b: ReceiverTiming, v: float) -> float:
    """Largest physically possible ``|delay|`` of a pair: baseline over propagation speed."""
    return float(geo.distance_m(a.latitude, a.longitude, b.latitude, b.longitude)) / v


def _common_grid(
    tracks: list[_Track],
    carrier_offsets_hz: Mapping[str, float] | None,
    t0: float,
    t1: float,
    rate: float,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each track mixed to 0 Hz and resampled onto the grid ``t0 + k / rate`` up to ``t1``.

    Carrier offsets not given are estimated; each track's timing records the one removed.
    The raw samples are freed.
    """
    n_grid = math.floor((t1 - t0) * rate)
    grid = t0 + np.arange(n_grid) / rate
    resampled = []
    for tr in tracks:
        known = (carrier_offsets_hz or {}).get(tr.timing.name)
        f0 = float(known) if known is not None else _carrier_offset(tr)
        tr.timing.carrier_offset_hz = f0
        resampled.append(_resample(tr, grid, f0))
        tr.x = tr.x[:0]  # free the raw samples
    return resampled


def _measure_pairs(
    tracks: list[_Track],
    signals: list[_Signal],
    rate: float,
    method: str,
    band: tuple[float, float],
    v: float,
    extra: float,
    chunk: float,
    check: _PairCheck,
) -> tuple[list[PairDelay], list[tuple[int, int]], list[float]]:
    """Correlate and judge every pair.

    Returns the pairs, the indices of the good ones, and each pair's raw (chunk-spread)
    standard error.
    """
    pairs: list[PairDelay] = []
    index: list[tuple[int, int]] = []
    raw: list[float] = []
    for i in range(len(tracks)):
        for j in range(i + 1, len(tracks)):
            ri, rj = tracks[i].timing, tracks[j].timing
            max_delay = _max_delay(ri, rj, v)
            est = _correlation(
                signals[i],
                signals[j],
                rate,
                coherent=method == "envelope",
                band=band,
                search_s=max_delay + check.margin + extra,
                chunk_s=chunk,
            ).estimate
            raw.append(est.sigma_s if math.isfinite(est.sigma_s) else math.inf)
            sigma = math.sqrt(max(est.sigma_s, check.floor) ** 2 + check.systematic**2)
            p = PairDelay(
                ri.name,
                rj.name,
                est.delay_s,
                sigma,
                coefficient=est.coefficient,
                psr_db=est.psr_db,
                max_delay_s=max_delay,
                n_chunks=est.n_chunks,
            )
            reasons = _judge(est, max_delay, check)
            if reasons:
                p.used = False
                p.reason = "; ".join(reasons)
                log.info("%s pair %s-%s rejected: %s", method, ri.name, rj.name, p.reason)
            else:
                index.append((i, j))
            pairs.append(p)
    return pairs, index, raw


def _judge(est: DelayEstimate, max_delay: float, check: _PairCheck) -> list[str]:
    """Why a pair's delay is not to be used (empty when it is good)."""
    if not math.isfinite(est.delay_s):
        return ["no correlation peak"]
    reasons = []
    if abs(est.delay_s) > max_delay + check.margin:
        reasons.append(
            f"delay {est.delay_s * 1e6:.1f} us outside the physically possible "
            f"+-{max_delay * 1e6:.1f} us (+{check.margin * 1e6:.0f} us margin)"
        )
    if not est.coefficient >= check.min_coefficient:
        reasons.append(f"coefficient {est.coefficient:.3f} < {check.min_coefficient:g}")
    if math.isfinite(est.psr_db) and est.psr_db < check.min_psr_db:
        reasons.append(f"peak-to-sidelobe {est.psr_db:.1f} dB < {check.min_psr_db:g} dB")
    if not math.isfinite(est.sigma_s) or est.sigma_s > check.max_sigma:
        reasons.append(
            f"chunk delays scatter (sigma {est.sigma_s * 1e6:.1f} us > "
            f"{check.max_sigma * 1e6:.0f} us)"
        )
    return reasons


def locate_dataset(
    ds: xr.Dataset,
    *,
    method: Literal["auto", "envelope", "complex"] = "auto",
    band: tuple[float, float] | None = None,
    velocity_factor: float = 1.0,
    chunk_s: float = 1.0,
    lag_margin_s: float = 2e-4,
    search_extra_s: float = 5e-3,
    min_coefficient: float = 0.05,
    min_psr_db: float = 1.0,
    max_sigma_s: float = 1e-4,
    sigma_floor_s: float = 1e-8,
    systematic_sigma_s: float = 0.0,
    max_timestamp_error_s: float = 1e-5,
    min_duration_s: float = 2.0,
    receivers: Sequence[str] | None = None,
    carrier_offsets_hz: Mapping[str, float] | None = None,
    bounds: Sequence[float] | None = None,
    margin_deg: float | None = None,
    grid_step_deg: float | None = None,
    confidence: float = 0.95,
    fallback: Literal["none", "rssi"] = "none",
) -> Localization:
    """Locate the transmitter heard in a capture Dataset by TDoA.

    The method is described in the module docstring: GNSS alignment of every receiver,
    resampling onto a common grid, pairwise correlation with sub-sample peaks, quality
    checks, and a grid-plus-least-squares fit on a spherical Earth.

    Parameters
    ----------
    ds : xarray.Dataset
        A capture (:func:`heimdall_lab.kiwi.acquire.acquire`, :func:`locate_recordings` builds one
        from recordings): ``iq`` (receiver x sample), the per-frame ``frame_start``,
        ``frame_seq``, ``frame_gpssec``, ``frame_gpsnsec``, ``frame_trusted`` (or
        ``frame_gps_solution``), and per receiver ``latitude``, ``longitude``,
        ``n_samples``, ``sample_rate``.
    method : {"auto", "envelope", "complex"}, default "auto"
        What to correlate: the envelope (amplitude keying) or the complex signal after the
        carrier offset and phase are removed (sees phase and frequency modulation too).
        ``"auto"`` correlates both and keeps the one with more good pairs, then the smaller
        median standard error (the envelope wins on a plain keyed carrier, the complex
        signal on the real DCF77 recordings, whose phase keying is far sharper than its
        amplitude edges; see ``reports/localize.md``). ``Localization.method`` says which.
    band : (float, float), optional
        ``(low_hz, high_hz)`` around the carrier kept for the correlation (for the envelope:
        the band-limit before the magnitude, and the envelope's own bandwidth);
        :data:`DEFAULT_BANDS` by default.
    velocity_factor : float, default 1.0
        Propagation speed as a fraction of the speed of light (ground wave: about 1).
    chunk_s : float, default 1.0
        Chunk length of the correlations (the spread of the chunks gives each sigma).
    lag_margin_s : float, default 2e-4
        A delay may exceed ``baseline / v`` by this much before the pair is rejected.
    search_extra_s : float, default 5e-3
        The peak is searched this much beyond the physical range, so that a peak outside
        it is seen and the pair rejected rather than a false peak at the edge accepted.
    min_coefficient : float, default 0.05
        Pairs whose normalised correlation is lower are rejected.
    min_psr_db : float, default 1.0
        Pairs whose peak-to-sidelobe ratio is lower are rejected.
    max_sigma_s : float, default 1e-4
        Pairs whose chunk estimates scatter more (standard error) are rejected.
    sigma_floor_s : float, default 1e-8
        Smallest standard error given to a pair.
    systematic_sigma_s : float, default 0.0
        Added in quadrature to every pair's sigma, for errors the chunk spread cannot see
        (propagation, receiver delays). It widens the ellipse, nothing else.
    max_timestamp_error_s : float, default 1e-5
        Frames whose timestamp is further off their segment's line are rejected.
    min_duration_s : float, default 2.0
        Receivers with less GNSS-timed signal, and common spans shorter than this, are
        rejected.
    receivers : sequence of str, optional
        Use only these receivers (default all).
    carrier_offsets_hz : mapping of str to float, optional
        Known carrier offsets per receiver (Hz); estimated where not given.
    bounds, margin_deg, grid_step_deg, confidence
        As for :func:`solve_tdoa`.
    fallback : {"none", "rssi"}, default "none"
        What to do when TDoA is impossible: raise, or return the far cruder
        :func:`locate_rssi_dataset` estimate (with a note saying so).

    Returns
    -------
    Localization
        Estimate, ellipse, per-receiver timing, per-pair delays with qualities and
        residuals, and the chi-square / likelihood grids.

    Raises
    ------
    ValidationError
        If ``ds`` is not a capture Dataset, a receiver position is missing or invalid, or
        an option is bad.
    LocalizationError
        If fewer than three receivers have usable GNSS timestamps, their captures do not
        overlap for ``min_duration_s``, or fewer than two good pairs over three receivers
        remain (unless ``fallback="rssi"``).
    """
    t_start = time.perf_counter()
    method = _check_method(method, auto=True)
    vf = _check_velocity(velocity_factor)
    conf = _check_confidence(confidence)
    chunk = positive(chunk_s, "chunk_s")
    margin = positive(lag_margin_s, "lag_margin_s", allow_zero=True)
    extra = positive(search_extra_s, "search_extra_s", allow_zero=True)
    min_coef = positive(min_coefficient, "min_coefficient", allow_zero=True)
    if not isinstance(min_psr_db, int | float) or not math.isfinite(min_psr_db):
        raise ValidationError("min_psr_db must be a finite number")
    max_sigma = positive(max_sigma_s, "max_sigma_s")
    floor = positive(sigma_floor_s, "sigma_floor_s")
    systematic = positive(systematic_sigma_s, "systematic_sigma_s", allow_zero=True)
    ts_err = positive(max_timestamp_error_s, "max_timestamp_error_s")
    min_dur = positive(min_duration_s, "min_duration_s")
    if fallback not in ("none", "rssi"):
        raise ValidationError(f"fallback must be 'none' or 'rssi', got {fallback!r}")
    if receivers is not None:
        if isinstance(receivers, str):
            receivers = [receivers]
        have = [str(v) for v in ds["receiver"].values] if "receiver" in ds.variables else []
        unknown = sorted(set(receivers) - set(have))
        if unknown:
            raise ValidationError(f"unknown receiver(s) {', '.join(unknown)}; have {have}")
        ds = ds.sel(receiver=list(receivers))
    settings = {
        "method": method,
        "velocity_factor": vf,
        "chunk_s": chunk,
        "lag_margin_s": margin,
        "search_extra_s": extra,
        "min_coefficient": min_coef,
        "min_psr_db": float(min_psr_db),
        "max_sigma_s": max_sigma,
        "sigma_floor_s": floor,
        "systematic_sigma_s": systematic,
        "max_timestamp_error_s": ts_err,
        "min_duration_s": min_dur,
        "confidence": conf,
    }
    capture_id = str(ds.attrs.get("capture_id", "")) if isinstance(ds, xr.Dataset) else ""

    def give_up(message: str) -> Localization:
        if fallback == "rssi":
            log.warning("TDoA impossible (%s); falling back to the crude RSSI estimate", message)
            out = locate_rssi_dataset(ds, confidence=conf)
            out.notes.insert(0, f"TDoA impossible: {message}; this is the RSSI fallback")
            return out
        raise LocalizationError(message)

    timings, tracks, epoch = _dataset_tracks(ds, ts_err, min_dur)
    if len(tracks) < 3:
        why = "; ".join(f"{t.name}: {t.reason}" for t in timings if not t.used) or "none"
        return give_up(
            f"{len(tracks)} receiver(s) with usable GNSS timestamps, TDoA needs at least 3 "
            f"(left out: {why}); locate_rssi_dataset gives a far cruder estimate without them"
        )
    rate = float(np.median([tr.rate for tr in tracks]))
    for m in ("envelope", "complex") if method == "auto" else (method,):
        _check_band(band, m, rate)
    t0 = max(tr.t[0] for tr in tracks)
    t1 = min(tr.t[-1] for tr in tracks)
    if t1 - t0 < min_dur:
        spans = ", ".join(f"{tr.timing.name} {tr.t[0]:.2f}..{tr.t[-1]:.2f} s" for tr in tracks)
        return give_up(
            f"the receivers' captures overlap for {max(t1 - t0, 0):.2f} s, need {min_dur:g} s "
            f"({spans})"
        )
    resampled = _common_grid(tracks, carrier_offsets_hz, t0, t1, rate)
    v = geo.SPEED_OF_LIGHT * vf
    check = _PairCheck(margin, min_coef, float(min_psr_db), max_sigma, floor, systematic)
    candidates = []
    for m in ("envelope", "complex") if method == "auto" else (method,):
        band_m = _check_band(band, m, rate)
        signals = [_Signal(_prepare(y, valid, m, rate, band_m), valid) for y, valid in resampled]
        pairs, index, raw = _measure_pairs(tracks, signals, rate, m, band_m, v, extra, chunk, check)
        used_sigma = [r for r, p in zip(raw, pairs, strict=True) if p.used]
        median = float(np.median(used_sigma)) if used_sigma else math.inf
        candidates.append((-len(index), median, m, band_m, pairs, index))
    notes: list[str] = []
    if method == "auto":
        for c in candidates:
            notes.append(
                f"auto: {c[2]} gave {-c[0]} good pair(s), median sigma {c[1] * 1e6:.2f} us"
            )
    _, _, method_used, band_used, pairs, index = min(candidates, key=lambda c: (c[0], c[1]))
    settings["method_used"] = method_used
    settings["band_hz"] = list(band_used)
    used_rx = {k for pr in index for k in pr}
    if len(index) < 2 or len(used_rx) < 3:
        bad = "; ".join(f"{p.receiver_a}-{p.receiver_b}: {p.reason}" for p in pairs if not p.used)
        return give_up(
            f"{len(index)} good pair(s) over {len(used_rx)} receiver(s), need two pairs over "
            f"three receivers (rejected: {bad or 'none'})"
        )
    good = [p for p in pairs if p.used]
    names = [tr.timing.name for tr in tracks]
    sol = solve_tdoa(
        [tr.timing.latitude for tr in tracks],
        [tr.timing.longitude for tr in tracks],
        index,
        [p.delay_s for p in good],
        [p.sigma_s for p in good],
        names=names,
        velocity_factor=vf,
        bounds=bounds,
        margin_deg=margin_deg,
        grid_step_deg=grid_step_deg,
        confidence=conf,
    )
    for p, q in zip(good, sol.pairs, strict=True):
        p.model_delay_s, p.residual_s = q.model_delay_s, q.residual_s
    rlat = np.array([tr.timing.latitude for tr in tracks])
    rlon = np.array([tr.timing.longitude for tr in tracks])
    by_name = {n: k for k, n in enumerate(names)}
    for p in pairs:
        if not p.used:
            ia, ib = by_name[p.receiver_a], by_name[p.receiver_b]
            model = _model(
                sol.latitude, sol.longitude, rlat, rlon, np.array([ia]), np.array([ib]), v
            )
            p.model_delay_s = float(model[0])
            p.residual_s = p.delay_s - p.model_delay_s
    for t in timings:
        if t.used and t.name not in {names[k] for k in used_rx}:
            t.used = False
            t.reason = "all its pairs were rejected"
    start_time = ""
    if epoch is not None:
        start_time = str(
            np.datetime_as_string(epoch + np.timedelta64(round(t0 * NS_PER_S), "ns"), "us")
        )
        start_time += "Z"
    settings.update(sol.settings)
    notes.extend(sol.notes)
    if len(used_rx) == 3:
        notes.append(
            "three receivers: two independent delays fix the position exactly, so the "
            "ellipse comes from the timing uncertainty alone"
        )
    if sol.ambiguous:
        notes.append("another position fits about as well (see alternatives)")
    return replace(
        sol,
        method=method_used,
        confidence=conf,
        receivers=timings,
        pairs=pairs,
        velocity_factor=vf,
        span_s=float(t1 - t0),
        start_time=start_time,
        run_time_s=time.perf_counter() - t_start,
        settings=settings,
        notes=notes,
        capture_id=capture_id,
    )


def pair_correlations(
    ds: xr.Dataset, result: Localization
) -> dict[tuple[str, str], PairCorrelation]:
    """The cross-correlation of every receiver pair of a TDoA localization, as it was searched.

    The capture is aligned, resampled and prepared again exactly as :func:`locate_dataset`
    did (with the carrier offsets, method, band and settings recorded in ``result``), and
    each pair correlated by the same code, so the curves are those its delays came from.

    Parameters
    ----------
    ds : xarray.Dataset
        The capture the localization was computed from.
    result : Localization
        A TDoA result of :func:`locate_dataset` (or of a function calling it) on ``ds``.

    Returns
    -------
    dict of (str, str) to PairCorrelation
        For each pair of ``result.pairs`` (same order, ``(receiver_a, receiver_b)``): the
        lags, the normalised correlation, the exact correlation around the delay, and the
        estimate, whose ``delay_s`` is the pair's ``delay_s``.

    Raises
    ------
    ValidationError
        If ``result`` is not a TDoA localization, lacks its settings, or does not come from
        ``ds`` (receivers missing, or a delay that comes out different).
    """
    if not isinstance(result, Localization) or result.kind != "tdoa":
        raise ValidationError("pair_correlations needs a TDoA Localization")
    cfg = result.settings
    needed = (
        "method_used",
        "band_hz",
        "chunk_s",
        "lag_margin_s",
        "search_extra_s",
        "max_timestamp_error_s",
        "min_duration_s",
    )
    missing = [k for k in needed if k not in cfg]
    if missing:
        raise ValidationError(f"the localization's settings lack {', '.join(missing)}")
    names = [r.name for r in result.receivers]
    have = [str(v) for v in ds["receiver"].values] if "receiver" in ds.variables else []
    absent = [n for n in names if n not in have]
    if absent:
        raise ValidationError(
            f"receiver(s) {', '.join(absent)} of the localization are not in the capture "
            f"(it has {have})"
        )
    _, tracks, _ = _dataset_tracks(
        ds.sel(receiver=names), float(cfg["max_timestamp_error_s"]), float(cfg["min_duration_s"])
    )
    index = {tr.timing.name: k for k, tr in enumerate(tracks)}
    lost = sorted({n for p in result.pairs for n in (p.receiver_a, p.receiver_b)} - set(index))
    if lost or not tracks:
        raise ValidationError(
            f"receiver(s) {', '.join(lost)} have no usable GNSS-timed samples in this capture: "
            "it is not the one the localization was computed from"
        )
    rate = float(np.median([tr.rate for tr in tracks]))
    t0 = max(tr.t[0] for tr in tracks)
    t1 = min(tr.t[-1] for tr in tracks)
    offsets = {r.name: r.carrier_offset_hz for r in result.receivers}
    resampled = _common_grid(tracks, offsets, t0, t1, rate)
    method = str(cfg["method_used"])
    band = _check_band(cfg["band_hz"], method, rate)
    signals = [_Signal(_prepare(y, valid, method, rate, band), valid) for y, valid in resampled]
    v = geo.SPEED_OF_LIGHT * result.velocity_factor
    extra = float(cfg["lag_margin_s"]) + float(cfg["search_extra_s"])
    out: dict[tuple[str, str], PairCorrelation] = {}
    for p in result.pairs:
        i, j = index[p.receiver_a], index[p.receiver_b]
        corr = _correlation(
            signals[i],
            signals[j],
            rate,
            coherent=method == "envelope",
            band=band,
            search_s=_max_delay(tracks[i].timing, tracks[j].timing, v) + extra,
            chunk_s=float(cfg["chunk_s"]),
            fine=True,
        )
        got = corr.estimate.delay_s
        if not (got == p.delay_s or (math.isnan(got) and math.isnan(p.delay_s))):
            raise ValidationError(
                f"pair {p.receiver_a}-{p.receiver_b}: the capture gives a delay of "
                f"{got * 1e6:.3f} us, the localization {p.delay_s * 1e6:.3f} us: it is not the "
                "capture the localization was computed from"
            )
        out[(p.receiver_a, p.receiver_b)] = corr
    return out


def _positions_lookup(
    positions: Mapping[str, Sequence[float]] | Sequence[Sequence[float]], keys: list[list[str]]
) -> list[tuple[float, float]]:
    """Position of each item, from a mapping (first matching key) or an aligned sequence."""
    out: list[tuple[float, float]] = []
    if isinstance(positions, Mapping):
        for cands in keys:
            hit = next((positions[k] for k in cands if k in positions), None)
            if hit is None:
                raise ValidationError(
                    f"no position for {cands[0]}: positions must have a (lat, lon) for each "
                    f"receiver, by name (have {', '.join(map(str, positions))})"
                )
            out.append(_pair_of_floats(hit, cands[0]))
        return out
    if isinstance(positions, str | bytes) or not isinstance(positions, Sequence):
        raise ValidationError("positions must be a mapping name -> (lat, lon) or a sequence")
    if len(positions) != len(keys):
        raise ValidationError(f"{len(positions)} positions for {len(keys)} recordings")
    return [_pair_of_floats(p, k[0]) for p, k in zip(positions, keys, strict=True)]


def _pair_of_floats(value: Any, what: str) -> tuple[float, float]:
    try:
        lat, lon = value
        return float(lat), float(lon)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"position of {what} must be (lat, lon), got {value!r}") from exc


def locate_recordings(
    recordings: Mapping[str, Recording],
    positions: Mapping[str, Sequence[float]] | Sequence[Sequence[float]],
    *,
    gps_reference: datetime | np.datetime64 | None = None,
    frequency_hz: float = float("nan"),
    **options: Any,
) -> Localization:
    """Locate from receivers' recordings and their positions.

    The recordings become a capture Dataset (:func:`heimdall_lab.dataset.build_dataset`),
    which :func:`locate_dataset` locates, so the result is the same as for a live capture
    of the same frames.

    Parameters
    ----------
    recordings : mapping of str to Recording
        Recordings by receiver name.
    positions : mapping of str to (float, float), or sequence of (float, float)
        Receiver positions (lat, lon) by name, or in the order of ``recordings``.
    gps_reference : datetime or numpy.datetime64, optional
        A UTC time within half a week of the recordings, to resolve the GPS week of the
        reported start time (the delays do not depend on it).
    frequency_hz : float, optional
        Tuned frequency, for the record.
    **options
        Passed to :func:`locate_dataset`.

    Returns
    -------
    Localization
        As :func:`locate_dataset`.

    Raises
    ------
    ValidationError
        If ``recordings`` is not a mapping of Recording objects, or a position is missing
        or invalid.
    LocalizationError
        As :func:`locate_dataset`.
    """
    if not isinstance(recordings, Mapping) or not recordings:
        raise ValidationError("recordings must be a non-empty mapping name -> Recording")
    for name, rec in recordings.items():
        if not isinstance(rec, Recording):
            raise ValidationError(f"recordings[{name!r}] is not a Recording")
    names = [str(n) for n in recordings]
    pos = _positions_lookup(positions, [[n] for n in names])
    entries = []
    for name, (lat, lon) in zip(names, pos, strict=True):
        lat, lon = _check_receiver_position(name, lat, lon)
        rx = Receiver(name, "localhost", 8073, lat, lon)
        entries.append((rx, recordings[name], True))
    rec_list = list(recordings.values())
    duration = max(len(r.samples) / max(r.nominal_rate, 1.0) for r in rec_list)
    ds = build_dataset(
        entries,
        frequency_hz,
        duration,
        capture_id="recordings:" + ",".join(names),
        gps_reference=gps_reference,
    )
    return locate_dataset(ds, **options)


def locate_files(
    paths: Sequence[str | Path],
    positions: Mapping[str, Sequence[float]] | Sequence[Sequence[float]],
    *,
    gps_reference: datetime | np.datetime64 | None = None,
    **options: Any,
) -> Localization:
    """Locate from kiwirecorder IQ WAV files (with GNSS timestamps) and receiver positions.

    Parameters
    ----------
    paths : sequence of str or Path
        The files (``YYYYMMDDTHHMMSSZ_<freq>_<NAME>_iq.wav`` names give receiver names, time
        and frequency; other names use the file stem as the receiver name).
    positions : mapping of str to (float, float), or sequence of (float, float)
        (lat, lon) by receiver name (or by file stem or path), or in the order of ``paths``.
    gps_reference : datetime or numpy.datetime64, optional
        Resolves the GPS week of the start time; from the file names when they carry a time.
    **options
        Passed to :func:`locate_dataset`.

    Returns
    -------
    Localization
        As :func:`locate_dataset`.

    Raises
    ------
    ValidationError
        On no files, duplicate receiver names, or a missing or invalid position.
    FileFormatError
        If a file is not a kiwi IQ WAV.
    LocalizationError
        As :func:`locate_dataset`.
    """
    if isinstance(paths, str | Path) or not paths:
        raise ValidationError("paths must be a non-empty sequence of kiwi IQ WAV files")
    files = [Path(p) for p in paths]
    parsed = [parse_kiwi_wav_name(p) for p in files]
    names = [p[0] for p in parsed]
    if len(set(names)) != len(names):
        raise ValidationError(f"receiver names from the file names are not unique: {names}")
    keys = [[n, f.stem, f.name, str(f)] for n, f in zip(names, files, strict=True)]
    pos = _positions_lookup(positions, keys)
    if gps_reference is None:
        gps_reference = next((p[1] for p in parsed if p[1] is not None), None)
    freqs = [p[2] for p in parsed if math.isfinite(p[2])]
    recordings = {n: read_kiwi_wav(f) for n, f in zip(names, files, strict=True)}
    return locate_recordings(
        recordings,
        dict(zip(names, pos, strict=True)),
        gps_reference=gps_reference,
        frequency_hz=freqs[0] if freqs else float("nan"),
        **options,
    )


def locate(
    source: Source,
    *,
    receivers: Mapping[str, Receiver | tuple[float, float]] | None = None,
    iq_url: str | None = None,
    **options: Any,
) -> Localization:
    """Locate the transmitter heard in a capture, wherever the capture is.

    Parameters
    ----------
    source : str, path, iterable of paths or xarray.Dataset
        Anything :func:`heimdall_lab.open_capture` opens: a stored capture id, a ``.zarr``
        folder, SigMF files, kiwi IQ WAV files (positions from ``receivers`` or
        ``gnss_pos/<NAME>.txt``), or a capture Dataset.
    receivers : mapping, optional
        Kiwi WAV files: receiver positions by name.
    iq_url : str, optional
        IQ store of a capture id.
    **options
        Passed to :func:`locate_dataset` (``method``, ``band``, ``confidence``, ...).

    Returns
    -------
    Localization
        As :func:`locate_dataset`.

    Examples
    --------
    >>> from heimdall_lab import locate, tutorial
    >>> result = locate(tutorial.dcf77_files(), receivers=tutorial.DCF77_POSITIONS)
    >>> round(result.latitude), round(result.longitude)  # DCF77: 50.0152 N, 9.0112 E
    (50, 9)
    """
    return locate_dataset(open_capture(source, iq_url=iq_url, receivers=receivers), **options)
