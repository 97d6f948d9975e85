"""Reference-emitter calibration: each receiver's timing bias from a transmitter at a known place.

A receiver's timing error common to all its pairs (its GNSS timing, its filter's group
delay, a path slower than the model) cancels around every triangle of receivers, so the
delays themselves cannot reveal it. A transmitter at a known position, heard by the same
receivers in the same session (on the same or another frequency), can: each pair's measured
delay minus the delay its known position predicts is ``b_a - b_b``, the difference of the two
receivers' biases. :func:`calibrate` estimates the biases by weighted least squares (only
their differences are defined; they are reported with zero weighted mean), with their
covariance, and ``locate_dataset(..., calibration=cal)`` removes them from an unknown
transmitter's delays and adds their uncertainty to its error budget. This is the standard
practice of TDoA networks.

What the reference's own paths do is carried across too: a sky wave mixed into a reference
path pulls that receiver's measured bias, so the stated pull of the reference's propagation
model (:meth:`heimdall_lab.propagation.Propagation.sky_pull_sigma_s`, seen from the
reference's position) is part of each bias's uncertainty.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from heimdall_lab import geo
from heimdall_lab.errors import LocalizationError, ValidationError
from heimdall_lab.localize.model import incidence
from heimdall_lab.localize.results import Localization, PairDelay
from heimdall_lab.propagation import Propagation
from heimdall_lab.values import jsonable

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["Calibration", "calibrate"]


@dataclass
class Calibration:
    """Per-receiver timing biases measured on a reference transmitter.

    Attributes
    ----------
    receivers : list of str
        The receivers calibrated.
    bias_s : dict of str to float
        Each receiver's bias, seconds: how much later than the model its signals arrive
        (zero weighted mean; only differences matter).
    covariance_s2 : numpy.ndarray
        Covariance of the biases, s^2, in the order of ``receivers``: the fit's, and the
        stated sky-wave pull on each reference path.
    reference : dict
        The reference: ``latitude``, ``longitude``, ``capture_id``, ``frequency_hz``,
        ``start_time``.
    chi2 : float
        Sum of squared normalised residuals of the pair delays after the biases.
    dof : int
        Pairs minus the biases' degrees of freedom (receivers - 1).
    pairs : list of dict
        The reference's pairs: measured and predicted delay and residual after the biases.
    """

    receivers: list[str]
    bias_s: dict[str, float]
    covariance_s2: np.ndarray
    reference: dict[str, Any] = field(default_factory=dict)
    chi2: float = float("nan")
    dof: int = 0
    pairs: list[dict[str, Any]] = field(default_factory=list)

    def sigma_s(self, name: str) -> float:
        """Standard error of one receiver's bias, seconds."""
        k = self.receivers.index(name)
        return math.sqrt(max(float(self.covariance_s2[k, k]), 0.0))

    def pair_bias(self, a: str, b: str) -> float:
        """``bias(a) - bias(b)``: what the calibration removes from the pair's delay."""
        return self.bias_s[a] - self.bias_s[b]

    def covariance_for(self, names: Sequence[str]) -> np.ndarray:
        """The biases' covariance over ``names`` (zero rows for receivers not calibrated)."""
        n = len(names)
        out = np.zeros((n, n))
        where = {r: k for k, r in enumerate(self.receivers)}
        idx = [(i, where[nm]) for i, nm in enumerate(names) if nm in where]
        for i, ki in idx:
            for j, kj in idx:
                out[i, j] = self.covariance_s2[ki, kj]
        return out

    def summary(self) -> str:
        """One line: the reference and each receiver's bias with its error."""
        ref = self.reference
        biases = ", ".join(
            f"{n} {self.bias_s[n] * 1e6:+.1f} +- {self.sigma_s(n) * 1e6:.1f} us"
            for n in self.receivers
        )
        return (
            f"calibrated on a reference at {ref.get('latitude', math.nan):.4f} N "
            f"{ref.get('longitude', math.nan):.4f} E: {biases} (chi2 {self.chi2:.2f}, "
            f"{self.dof} dof)"
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (:meth:`from_dict` reads it back)."""
        return jsonable(
            {
                "format": "heimdall_lab.calibration",
                "receivers": self.receivers,
                "bias_s": self.bias_s,
                "covariance_s2": self.covariance_s2,
                "reference": self.reference,
                "chi2": self.chi2,
                "dof": self.dof,
                "pairs": self.pairs,
            }
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
        """The calibration :meth:`to_dict` wrote."""
        try:
            receivers = [str(r) for r in d["receivers"]]
            cov = np.asarray(d["covariance_s2"], dtype=np.float64)
            bias = {str(k): float(v) for k, v in d["bias_s"].items()}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValidationError(f"not a calibration: {exc}") from exc
        if cov.shape != (len(receivers), len(receivers)) or set(bias) != set(receivers):
            raise ValidationError("not a calibration: receivers, biases and covariance disagree")
        return cls(
            receivers,
            bias,
            cov,
            dict(d.get("reference") or {}),
            float(d.get("chi2") if d.get("chi2") is not None else math.nan),
            int(d.get("dof") or 0),
            list(d.get("pairs") or []),
        )


def _biases(
    names: list[str], pairs: list[PairDelay], errors: np.ndarray
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Weighted least squares of ``errors = b_a - b_b``: (receivers, b, cov, residuals)."""
    receivers = sorted({n for p in pairs for n in (p.receiver_a, p.receiver_b)}, key=names.index)
    where = {n: k for k, n in enumerate(receivers)}
    a = incidence(
        np.array([where[p.receiver_a] for p in pairs]),
        np.array([where[p.receiver_b] for p in pairs]),
        len(receivers),
    )
    w = np.diag(1.0 / np.square([p.sigma_s for p in pairs]))
    normal = a.T @ w @ a
    cov = np.linalg.pinv(normal, rcond=1e-12, hermitian=True)
    b = cov @ a.T @ w @ errors
    # All pairs of n receivers share the receivers' noise: weighed as independent, their
    # errors look n / 2 times smaller than they are (the same inflation as the fit's).
    if len(pairs) > len(receivers) - 1:
        cov = cov * (len(receivers) / 2.0)
    return receivers, b, cov, errors - a @ b


def calibrate(
    reference: xr.Dataset | Localization,
    latitude: float,
    longitude: float,
    **options: Any,
) -> Calibration:
    """Each receiver's timing bias from a transmitter at a known position.

    Parameters
    ----------
    reference : xarray.Dataset or Localization
        A capture of the reference transmitter by the receivers to calibrate (located with
        ``options``, without the robust fit), or its TDoA localization.
    latitude, longitude : float
        The reference transmitter's known position, degrees.
    **options
        Passed to :func:`heimdall_lab.localize.locate_dataset` (the same ``method``,
        ``band`` and ``propagation`` as for the unknown transmitter are best).

    Returns
    -------
    Calibration
        The biases, their covariance, and the residuals of the reference's pairs.

    Raises
    ------
    ValidationError
        If the position is not on the Earth or the reference is neither a capture nor a TDoA
        localization.
    LocalizationError
        If the reference's capture gives fewer than two good pairs over three receivers.
    """
    from heimdall_lab.localize.tdoa import locate_dataset

    geo.check_position(latitude, longitude, "reference position")
    if isinstance(reference, xr.Dataset):
        options = {**options, "robust": False, "calibration": None}
        loc = locate_dataset(reference, **options)
    elif isinstance(reference, Localization) and reference.kind == "tdoa":
        loc = reference
    else:
        raise ValidationError("reference must be a capture Dataset or a TDoA Localization")
    used = loc.used_pairs
    if len(used) < 2:
        raise LocalizationError(f"the reference has {len(used)} good pair(s); need two")
    model = loc._model(used)(latitude, longitude)
    measured = np.array([p.delay_s for p in used])
    names = [r.name for r in loc.receivers]
    receivers, b, cov, resid = _biases(names, used, measured - model)
    where = {r.name: r for r in loc.receivers}
    pull = Propagation.of(loc.propagation).sky_pull_between(
        latitude,
        longitude,
        np.array([where[n].latitude for n in receivers]),
        np.array([where[n].longitude for n in receivers]),
        loc.settings.get("frequency_hz"),
    )
    cov = cov + np.diag(np.square(pull))
    sig = np.array([p.sigma_s for p in used])
    chi2 = float(np.sum((resid / sig) ** 2))
    return Calibration(
        receivers=receivers,
        bias_s={n: float(x) for n, x in zip(receivers, b, strict=True)},
        covariance_s2=cov,
        reference={
            "latitude": float(latitude),
            "longitude": float(longitude),
            "capture_id": loc.capture_id,
            "frequency_hz": loc.settings.get("frequency_hz"),
            "start_time": loc.start_time,
        },
        chi2=chi2,
        dof=len(used) - (len(receivers) - 1),
        pairs=[
            {
                "pair": f"{p.receiver_a}-{p.receiver_b}",
                "measured_s": p.delay_s,
                "model_s": float(m),
                "residual_s": float(r),
            }
            for p, m, r in zip(used, model, resid, strict=True)
        ],
    )
