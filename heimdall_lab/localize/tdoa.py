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
from heimdall_lab.localize.budget import closure_sigma, estimator_spread, subband_spread
from heimdall_lab.localize.calibration import Calibration
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
from heimdall_lab.localize.solver import _check_confidence, solve_tdoa
from heimdall_lab.propagation import Propagation
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
    leading_edge: bool = False,
) -> tuple[list[PairDelay], list[tuple[int, int]], list[float], list[DelayEstimate]]:
    """Correlate and judge every pair.

    Returns the pairs, the indices of the good ones, each pair's raw (chunk-spread)
    standard error, and the estimates.
    """
    pairs: list[PairDelay] = []
    index: list[tuple[int, int]] = []
    raw: list[float] = []
    ests: list[DelayEstimate] = []
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
                subbands=SUBBANDS,
                leading_edge=leading_edge,
            ).estimate
            if leading_edge:
                peak = est.delay_s
                est = replace(est, delay_s=est.leading_edge_s, leading_edge_s=peak)
            ests.append(est)
            raw.append(est.sigma_s if math.isfinite(est.sigma_s) else math.inf)
            sigma = max(est.sigma_s, check.floor)
            p = PairDelay(
                ri.name,
                rj.name,
                est.delay_s,
                sigma,
                sigma_stat_s=sigma,
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
    return pairs, index, raw, ests


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


#: Stated timing error per receiver that no measurement on the delays can see (GNSS timing,
#: filter delay, a path slower than the model), seconds: the default ``receiver_sigma_s``.
DEFAULT_RECEIVER_SIGMA_S = 1e-6
#: Slices of the correlation band each pair is also measured in (their spread is a
#: systematic error indicator, :mod:`heimdall_lab.localize.budget`).
SUBBANDS = 4
#: Relative uncertainty of the sky wave's layer height, where the sky wave is modelled.
LAYER_HEIGHT_UNCERTAINTY = 0.2


def locate_dataset(
    ds: xr.Dataset,
    *,
    method: Literal["auto", "envelope", "complex"] = "auto",
    band: tuple[float, float] | None = None,
    estimator: Literal["peak", "leading_edge"] = "peak",
    propagation: Propagation | str | dict | None = None,
    chunk_s: float = 1.0,
    lag_margin_s: float = 2e-4,
    search_extra_s: float = 5e-3,
    min_coefficient: float = 0.05,
    min_psr_db: float = 1.0,
    max_sigma_s: float = 1e-4,
    sigma_floor_s: float = 1e-8,
    systematic_sigma_s: float = 0.0,
    receiver_sigma_s: float = DEFAULT_RECEIVER_SIGMA_S,
    calibration: Calibration | None = None,
    robust: bool = True,
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
    checks, the error budget, and a generalised least-squares fit over WGS84 geodesics.

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
        median standard error; their disagreement enters the error budget.
        ``Localization.method`` says which was used.
    band : (float, float), optional
        ``(low_hz, high_hz)`` around the carrier kept for the correlation (for the envelope:
        the band-limit before the magnitude, and the envelope's own bandwidth);
        :data:`DEFAULT_BANDS` by default.
    estimator : {"peak", "leading_edge"}, default "peak"
        The delay of a pair: the correlation peak, or the earliest arrival (where the
        pair's deconvolved response first reaches half its peak,
        :func:`heimdall_lab.localize.delay._correlation`), which a later echo such as a sky
        wave does not pull late. See ``reports/localize.md`` for the evidence on real data.
    propagation : Propagation, str or dict, optional
        The path model (:class:`heimdall_lab.propagation.Propagation`): ``"ground"`` (the
        default, at the speed of light), ``"sky"``, ``"auto"`` (sky wave beyond the ground
        range at the capture's frequency), or a Propagation with a velocity factor or layer
        height.
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
        Smallest statistical error given to a pair.
    systematic_sigma_s : float, default 0.0
        A further systematic error per pair that you know of, added in quadrature to what
        the data show (:mod:`heimdall_lab.localize.budget`).
    receiver_sigma_s : float, default 1e-6
        Stated timing error of each receiver that the delays cannot reveal (GNSS timing,
        filter delay); it enters every pair of the receiver.
    calibration : Calibration, optional
        Per-receiver biases from a reference transmitter (:func:`calibrate`): removed from
        the delays, their uncertainty added to the budget.
    robust : bool, default True
        With four or more receivers, drop a receiver whose pairs disagree with the rest
        (:func:`solve_tdoa`); ``Localization.dropped`` says which and why.
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
        Estimate, ellipse and likelihood region, per-receiver timing, per-pair delays with
        qualities, error parts and residuals, the error budget, and the chi-square /
        likelihood grids.

    Raises
    ------
    ValidationError
        If ``ds`` is not a capture Dataset, a receiver position is missing or invalid, or
        an option is bad.
    LocalizationError
        If fewer than three receivers have usable GNSS timestamps, their captures do not
        overlap for ``min_duration_s``, or fewer than two good pairs over three receivers
        remain (unless ``fallback="rssi"``). Its message is one line; its ``pairs`` and
        ``receivers`` attributes hold the details.
    """
    t_start = time.perf_counter()
    method = _check_method(method, auto=True)
    if estimator not in ("peak", "leading_edge"):
        raise ValidationError(f"estimator must be 'peak' or 'leading_edge', got {estimator!r}")
    prop = Propagation.of(propagation)
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
    rx_sigma = positive(receiver_sigma_s, "receiver_sigma_s", allow_zero=True)
    ts_err = positive(max_timestamp_error_s, "max_timestamp_error_s")
    min_dur = positive(min_duration_s, "min_duration_s")
    if fallback not in ("none", "rssi"):
        raise ValidationError(f"fallback must be 'none' or 'rssi', got {fallback!r}")
    if calibration is not None and not isinstance(calibration, Calibration):
        raise ValidationError("calibration must be a Calibration (heimdall_lab.localize.calibrate)")
    if receivers is not None:
        if isinstance(receivers, str):
            receivers = [receivers]
        have = [str(v) for v in ds["receiver"].values] if "receiver" in ds.variables else []
        unknown = sorted(set(receivers) - set(have))
        if unknown:
            raise ValidationError(f"unknown receiver(s) {', '.join(unknown)}; have {have}")
        ds = ds.sel(receiver=list(receivers))
    frequency = _frequency(ds)
    settings: dict[str, Any] = {
        "method": method,
        "estimator": estimator,
        "propagation": prop.to_dict(),
        "chunk_s": chunk,
        "lag_margin_s": margin,
        "search_extra_s": extra,
        "min_coefficient": min_coef,
        "min_psr_db": float(min_psr_db),
        "max_sigma_s": max_sigma,
        "sigma_floor_s": floor,
        "systematic_sigma_s": systematic,
        "receiver_sigma_s": rx_sigma,
        "robust": bool(robust),
        "max_timestamp_error_s": ts_err,
        "min_duration_s": min_dur,
        "confidence": conf,
    }
    capture_id = str(ds.attrs.get("capture_id", "")) if isinstance(ds, xr.Dataset) else ""

    def give_up(
        message: str, pairs: list[PairDelay] | None = None, timings: list | None = None
    ) -> Localization:
        if fallback == "rssi":
            log.warning("TDoA impossible (%s); falling back to the crude RSSI estimate", message)
            out = locate_rssi_dataset(ds, confidence=conf)
            out.notes.insert(0, f"TDoA impossible: {message}; this is the RSSI fallback")
            return out
        raise LocalizationError(message, pairs=pairs, receivers=timings)

    timings, tracks, epoch = _dataset_tracks(ds, ts_err, min_dur)
    if len(tracks) < 3:
        left = [t for t in timings if not t.used]
        why = f" ({left[0].name}: {left[0].reason}" if left else ""
        why += (f"; and {len(left) - 1} more)" if len(left) > 1 else ")") if left else ""
        return give_up(
            f"{len(tracks)} receiver(s) with usable GNSS timestamps, TDoA needs 3{why}; "
            "locate_rssi_dataset gives a far cruder estimate without them",
            timings=timings,
        )
    rate = float(np.median([tr.rate for tr in tracks]))
    for m in ("envelope", "complex") if method == "auto" else (method,):
        _check_band(band, m, rate)
    t0 = max(tr.t[0] for tr in tracks)
    t1 = min(tr.t[-1] for tr in tracks)
    if t1 - t0 < min_dur:
        return give_up(
            f"the receivers' captures overlap for {max(t1 - t0, 0):.2f} s, need {min_dur:g} s",
            timings=timings,
        )
    resampled = _common_grid(tracks, carrier_offsets_hz, t0, t1, rate)
    v = geo.SPEED_OF_LIGHT * prop.velocity_factor
    check = _PairCheck(margin, min_coef, float(min_psr_db), max_sigma, floor, systematic)
    candidates = []
    for m in ("envelope", "complex") if method == "auto" else (method,):
        band_m = _check_band(band, m, rate)
        signals = [_Signal(_prepare(y, valid, m, rate, band_m), valid) for y, valid in resampled]
        measured = _measure_pairs(
            tracks, signals, rate, m, band_m, v, extra, chunk, check, estimator == "leading_edge"
        )
        pairs_m, index_m, raw, ests = measured
        used_sigma = [r for r, p in zip(raw, pairs_m, strict=True) if p.used]
        median = float(np.median(used_sigma)) if used_sigma else math.inf
        candidates.append((-len(index_m), median, m, band_m, pairs_m, index_m, ests))
    notes: list[str] = []
    if method == "auto":
        for c in candidates:
            notes.append(
                f"auto: {c[2]} gave {-c[0]} good pair(s), median sigma {c[1] * 1e6:.2f} us"
            )
    chosen = min(candidates, key=lambda c: (c[0], c[1]))
    _, _, method_used, band_used, pairs, index, ests = chosen
    settings["method_used"] = method_used
    settings["band_hz"] = list(band_used)
    settings["frequency_hz"] = frequency
    used_rx = {k for pr in index for k in pr}
    if len(index) < 2 or len(used_rx) < 3:
        return give_up(_too_few(pairs, len(index), len(used_rx)), pairs, timings)
    names = [tr.timing.name for tr in tracks]
    others = [c for c in candidates if c is not chosen]
    budget = _budget(pairs, index, ests, others[0][4] if others else None, systematic)
    good = [p for p in pairs if p.used]
    notes.extend(_down_weighted(good))
    delays = np.array([p.delay_s for p in good])
    rcov = np.eye(len(names)) * rx_sigma**2
    parts = list(budget["parts"])
    if rx_sigma > 0:
        parts.append(f"receiver timing prior {rx_sigma * 1e6:g} us per receiver (stated)")
    if calibration is not None:
        delays, rcov = _calibrate(good, delays, names, rcov, calibration, notes)
        parts.append("reference-emitter calibration (its uncertainty)")

    def fit(receiver_cov: np.ndarray) -> Localization:
        return solve_tdoa(
            [tr.timing.latitude for tr in tracks],
            [tr.timing.longitude for tr in tracks],
            index,
            delays,
            [p.sigma_s for p in good],
            names=names,
            propagation=prop,
            frequency_hz=frequency,
            receiver_sigma_s=receiver_cov,
            bounds=bounds,
            margin_deg=margin_deg,
            grid_step_deg=grid_step_deg,
            confidence=conf,
            robust=robust,
        )

    sol = fit(rcov)
    # what the sky wave does to each receiver is known once the position is
    sky_cov, sky_parts = _sky_receivers(sol, prop, frequency, names, notes)
    if sky_parts:
        parts.extend(sky_parts)
        sol = fit(rcov + sky_cov)
    for p, q, d in zip(good, sol.pairs, delays, strict=True):
        p.model_delay_s, p.residual_s = q.model_delay_s, d - q.model_delay_s
        p.used, p.reason = q.used, q.reason
    model = sol._model(pairs)
    for p, m in zip(pairs, model(sol.latitude, sol.longitude), strict=True):
        if math.isnan(p.model_delay_s):
            p.model_delay_s = float(m)
            p.residual_s = p.delay_s - p.model_delay_s
    kept = {r.name for r in sol.receivers if r.used}
    for t in timings:
        if t.used and t.name not in kept:
            t.used = False
            dropped = next((x for x in sol.dropped if x["receiver"] == t.name), None)
            t.reason = (
                f"dropped by the robust fit: {dropped['reason']}"
                if dropped
                else "all its pairs were rejected"
            )
    start_time = ""
    if epoch is not None:
        start_time = str(
            np.datetime_as_string(epoch + np.timedelta64(round(t0 * NS_PER_S), "ns"), "us")
        )
        start_time += "Z"
    settings.update(sol.settings)
    notes.extend(sol.notes)
    scale = float(sol.settings.get("scale", 1.0))
    if scale > 1.0:
        parts.append(f"scaled by the fit's reduced chi-square ({scale:.2f})")
    budget["parts"] = parts
    budget["receiver_sigma_s"] = rx_sigma
    if len(kept) == 3:
        notes.append(
            "three receivers: two independent delays fix the position exactly, so nothing "
            "checks the per-receiver errors but the stated prior and a calibration"
        )
    if sol.ambiguous:
        notes.append("another position fits about as well (see alternatives)")
    return replace(
        sol,
        method=method_used,
        confidence=conf,
        receivers=timings,
        pairs=pairs,
        span_s=float(t1 - t0),
        start_time=start_time,
        run_time_s=time.perf_counter() - t_start,
        settings=settings,
        notes=notes,
        error_budget=budget,
        capture_id=capture_id,
    )


def _frequency(ds: xr.Dataset) -> float | None:
    """The capture's tuned frequency, Hz, when it says."""
    for key in ("center_frequency_hz", "frequency_hz", "core:frequency"):
        value = ds.attrs.get(key) if isinstance(ds, xr.Dataset) else None
        try:
            f = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        if math.isfinite(f) and f > 0:
            return f
    return None


#: The kinds of rejection (:func:`_judge`'s reasons), counted in a failure's one line.
_REJECTIONS = {
    "no correlation peak": "no correlation peak",
    "delay": "a delay beyond the baseline",
    "coefficient": "a weak correlation",
    "peak-to-sidelobe": "an ambiguous peak",
    "chunk delays scatter": "scattered chunk delays",
}


def _too_few(pairs: list[PairDelay], n_good: int, n_rx: int) -> str:
    """One line: too few good pairs, and the commonest reason the others were rejected."""
    reasons: dict[str, int] = {}
    for p in pairs:
        if not p.used:
            first = p.reason.split(";")[0]
            key = next((v for k, v in _REJECTIONS.items() if first.startswith(k)), first)
            reasons[key] = reasons.get(key, 0) + 1
    common = max(reasons.items(), key=lambda kv: kv[1]) if reasons else None
    why = f"; {common[1]} of {len(pairs)} rejected for {common[0]}" if common else ""
    return f"{n_good} good pair(s) over {n_rx} receiver(s), need 2 over 3{why}"


def _budget(
    pairs: list[PairDelay],
    index: list[tuple[int, int]],
    ests: list[DelayEstimate],
    other: list[PairDelay] | None,
    stated: float,
) -> dict[str, Any]:
    """Fill each good pair's systematic error from the data; the budget's description."""
    good = [(p, e) for p, e in zip(pairs, ests, strict=True) if p.used]
    for k, (p, est) in enumerate(zip(pairs, ests, strict=True)):
        if not p.used:
            continue
        q = other[k] if other is not None else None
        if q is not None and q.used:
            p.other_delay_s = q.delay_s
            p.estimator_spread_s = estimator_spread(
                p.delay_s, p.sigma_stat_s, q.delay_s, q.sigma_stat_s
            )
        if len(est.subband_delays_s):
            p.subband_spread_s = subband_spread(est.subband_delays_s, est.subband_sigmas_s)
    base = [
        math.hypot(
            p.sigma_stat_s,
            max(np.nan_to_num(p.estimator_spread_s), np.nan_to_num(p.subband_spread_s)),
        )
        for p, _ in good
    ]
    closure, closures = closure_sigma(index, [p.delay_s for p, _ in good], base)
    for p, _ in good:
        per_pair = max(np.nan_to_num(p.estimator_spread_s), np.nan_to_num(p.subband_spread_s))
        p.sigma_sys_s = math.sqrt(closure**2 + per_pair**2 + stated**2)
        p.sigma_s = math.hypot(p.sigma_stat_s, p.sigma_sys_s)
    parts = ["statistical (spread of the chunk delays)"]
    if other is not None:
        parts.append("estimator disagreement (envelope vs complex)")
    if any(len(e.subband_delays_s) for _, e in good):
        parts.append("sub-band spread")
    if closures:
        parts.append(f"triangle closure ({closure * 1e6:.2f} us per pair)")
    if stated > 0:
        parts.append(f"stated systematic {stated * 1e6:g} us per pair")
    return {
        "parts": parts,
        "closure_sigma_s": closure,
        "closures_s": closures,
        "pairs": [
            {
                "pair": f"{p.receiver_a}-{p.receiver_b}",
                "statistical_s": p.sigma_stat_s,
                "estimators_s": p.estimator_spread_s,
                "subbands_s": p.subband_spread_s,
                "systematic_s": p.sigma_sys_s,
                "total_s": p.sigma_s,
            }
            for p, _ in good
        ],
    }


def _down_weighted(good: list[PairDelay]) -> list[str]:
    """Notes naming the pairs whose systematic error dominates, and what it points to."""
    out = []
    for p in good:
        if not p.sigma_sys_s > 2.0 * p.sigma_stat_s:
            continue
        sb = float(np.nan_to_num(p.subband_spread_s))
        est = float(np.nan_to_num(p.estimator_spread_s))
        why = (
            "its delay differs between slices of the band (paths mixed, such as a sky wave "
            "under the ground wave, or a receiver filter)"
            if sb >= est
            else "the envelope and the complex signal give different delays"
        )
        out.append(
            f"{p.receiver_a}-{p.receiver_b} down-weighted to {p.sigma_s * 1e6:.1f} us "
            f"(statistical {p.sigma_stat_s * 1e6:.1f} us): {why}"
        )
    return out


def _calibrate(
    good: list[PairDelay],
    delays: np.ndarray,
    names: list[str],
    rcov: np.ndarray,
    cal: Calibration,
    notes: list[str],
) -> tuple[np.ndarray, np.ndarray]:
    """The delays with the calibration's biases removed, and the receiver covariance."""
    out = delays.copy()
    missing = sorted({n for n in names if n not in cal.bias_s})
    for k, p in enumerate(good):
        if p.receiver_a in cal.bias_s and p.receiver_b in cal.bias_s:
            p.calibration_s = cal.pair_bias(p.receiver_a, p.receiver_b)
            out[k] = p.delay_s = delays[k] - p.calibration_s
    notes.append(cal.summary())
    if missing:
        notes.append(f"not calibrated: {', '.join(missing)} (their pairs keep their bias)")
    return out, rcov + cal.covariance_for(names)


def _sky_receivers(
    sol: Localization,
    prop: Propagation,
    frequency: float | None,
    names: list[str],
    notes: list[str],
) -> tuple[np.ndarray, list[str]]:
    """What the sky wave does to each receiver, seen from the fitted position.

    Returns the per-receiver timing covariance it adds and the error-budget parts it names
    (none when it adds nothing): the layer height's uncertainty for receivers the model hears
    by the sky wave, and the pull of a sky wave mixed into the ground wave
    (:meth:`Propagation.sky_pull_sigma_s`) for those it hears by the ground wave.
    """
    sig = np.zeros(len(names))
    parts: list[str] = []
    # every receiver the fit was given: one the first fit left out gets its chance again
    rx = [r for r in sol.receivers if r.name in names]
    dist = np.array(
        [float(geo.distance_m(sol.latitude, sol.longitude, r.latitude, r.longitude)) for r in rx]
    )
    reach = prop.ground_range_m(frequency)
    far = dist > reach if prop.mode == "ground" else prop.uses_sky(dist, frequency)
    listed = ", ".join(
        f"{r.name} ({d / 1e3:.0f} km)" for r, d, f in zip(rx, dist, far, strict=True) if f
    )
    if far.any() and prop.mode == "ground":
        notes.append(
            f"beyond the ground wave's range ({reach / 1e3:g} km at this frequency) the sky "
            f"wave dominates: {listed}; this ground-wave model does not describe them "
            "(propagation='auto' models them)"
        )
    elif far.any():
        hi = replace(prop, layer_height_km=prop.layer_height_km * (1 + LAYER_HEIGHT_UNCERTAINTY))
        for r, d, f in zip(rx, dist, far, strict=True):
            if f:
                sig[names.index(r.name)] = abs(hi.sky_delay_s(d) - prop.sky_delay_s(d))
        notes.append(
            f"modelled by the one-hop sky wave at {prop.layer_height_km:g} km "
            f"(+-{LAYER_HEIGHT_UNCERTAINTY:.0%}): {listed}"
        )
        parts.append(
            f"sky-wave layer height +-{LAYER_HEIGHT_UNCERTAINTY:.0%} (receivers beyond the "
            "ground range)"
        )
    pull = np.asarray(prop.sky_pull_sigma_s(dist, frequency), dtype=np.float64)
    if (pull > 0).any():
        for r, p in zip(rx, pull, strict=True):
            k = names.index(r.name)
            sig[k] = math.hypot(sig[k], p)
        mixed = ", ".join(f"{r.name} {p * 1e6:.1f}" for r, p in zip(rx, pull, strict=True) if p)
        notes.append(
            f"a one-hop sky wave at about {prop.sky_ratio:g} of the ground wave may be mixed in "
            f"within {reach / 1e3:g} km; its pull, whose sign drifts with its phase, is taken "
            f"as a timing error per receiver (us): {mixed} (propagation sky_ratio=0 if the "
            "paths are known to be clean)"
        )
        parts.append(f"sky wave mixed into the ground wave (RMS ratio {prop.sky_ratio:g}, stated)")
    return np.diag(sig**2), parts


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
    v = geo.SPEED_OF_LIGHT * Propagation.of(result.propagation).velocity_factor
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
        measured = p.delay_s + p.calibration_s
        if not (got == measured or (math.isnan(got) and math.isnan(measured))):
            raise ValidationError(
                f"pair {p.receiver_a}-{p.receiver_b}: the capture gives a delay of "
                f"{got * 1e6:.3f} us, the localization {measured * 1e6:.3f} us: it is not the "
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
