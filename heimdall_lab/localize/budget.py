"""The error budget of the pair delays: what the uncertainty includes, measured from the data.

A pair's statistical error (the spread of its chunk delays) says how well the correlation
peak is found, not whether the peak is at the true delay. On real data the second is the
larger: the DCF77 recordings' pairs have statistical errors of 0.6-1.4 us and real errors of
5-30 us. Three measurements of the systematic part come from the data itself:

Estimator disagreement
    The same pair measured from the envelope and from the complex signal (``method="auto"``
    measures both): if they differ by more than their statistical errors allow, at least one
    is biased by about half the difference. ``sqrt(max(0, D^2 - s1^2 - s2^2)) / 2``.
Sub-band spread
    The same pair measured in slices of the correlation band: a single path delays every
    frequency alike, while a mixture of paths (a sky wave under the ground wave) or a
    receiver's filter gives each slice its own delay. The spread of the slices beyond what
    their statistical errors explain: ``sqrt(max(0, var - mean(s_k^2)))``.
Closure
    Around a triangle of receivers the three delays add up to zero
    (``tau_ab + tau_bc - tau_ac = 0``) whatever the position; what is left measures errors
    that belong to the pairs, not to one receiver. One common value for every pair:
    ``sqrt(max(0, mean(c^2 - sum of the three variances) / 3))``.

Per pair the systematic part is ``sqrt(closure^2 + max(estimators, sub-bands)^2 + stated^2)``
(the two per-pair measures see largely the same errors, so the larger is taken, not both),
``stated`` being the caller's ``systematic_sigma_s``. What no measurement of this kind can
see is an error common to all pairs of one receiver (its GNSS timing, its filter delay, a
path slower than the model): it cancels around every triangle. That part is a stated prior per
receiver (``receiver_sigma_s``), or a calibration on a known transmitter
(:mod:`heimdall_lab.localize.calibration`) measures it; with four or more receivers the
fit's chi-square also sees it and scales the region.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

__all__ = ["closure_sigma", "estimator_spread", "subband_spread"]


def estimator_spread(d1: float, s1: float, d2: float, s2: float) -> float:
    """Systematic error implied by two estimates of one delay disagreeing, seconds."""
    if not all(math.isfinite(x) for x in (d1, s1, d2, s2)):
        return 0.0
    return math.sqrt(max(0.0, (d1 - d2) ** 2 - s1**2 - s2**2)) / 2.0


def subband_spread(delays: np.ndarray, sigmas: np.ndarray) -> float:
    """Systematic error implied by the spread of a pair's sub-band delays, seconds.

    Parameters
    ----------
    delays : numpy.ndarray
        The sub-band delays (NaN for a slice without signal).
    sigmas : numpy.ndarray
        Their statistical errors.
    """
    d = np.asarray(delays, dtype=np.float64)
    s = np.broadcast_to(np.asarray(sigmas, dtype=np.float64), d.shape)
    ok = np.isfinite(d) & np.isfinite(s)
    if ok.sum() < 2:
        return 0.0
    return math.sqrt(max(0.0, float(np.var(d[ok], ddof=1)) - float(np.mean(s[ok] ** 2))))


def closure_sigma(
    pairs: Sequence[tuple[int, int]], delays: Sequence[float], sigmas: Sequence[float]
) -> tuple[float, list[float]]:
    """The common per-pair error implied by the triangles' closures, and the closures.

    Parameters
    ----------
    pairs : sequence of (int, int)
        Receiver indices of each pair (``delay = arrival at a - arrival at b``).
    delays, sigmas : sequence of float
        Each pair's delay and standard error, seconds.

    Returns
    -------
    (float, list of float)
        The per-pair sigma (0 when the closures are within their errors or there is no
        triangle) and every triangle's closure, seconds.
    """
    index = {(a, b): (k, 1.0) for k, (a, b) in enumerate(pairs)}
    index.update({(b, a): (k, -1.0) for k, (a, b) in enumerate(pairs)})
    receivers = sorted({r for p in pairs for r in p})
    closures, excess = [], []
    for a, b, c in itertools.combinations(receivers, 3):
        legs = [index.get((a, b)), index.get((b, c)), index.get((c, a))]
        if any(leg is None for leg in legs):
            continue
        value = sum(sign * delays[k] for k, sign in legs)  # type: ignore[misc]
        closures.append(float(value))
        excess.append(value**2 - sum(sigmas[k] ** 2 for k, _ in legs))  # type: ignore[misc]
    if not closures:
        return 0.0, []
    return math.sqrt(max(0.0, float(np.mean(excess)) / 3.0)), closures
