"""The delay model and the errors of the pair delays.

:class:`DelayModel` predicts each pair's delay from a transmitter position by the stated
:class:`~heimdall_lab.propagation.Propagation` over WGS84 geodesics. :func:`pair_covariance`
builds the covariance of the measured pair delays from an independent part per pair and a
part per receiver (a receiver's timing error enters every pair it is in, with opposite signs
as ``a`` and ``b``), and :func:`whitener` turns it into the matrix that makes the residuals
independent with unit variance, so that ``chi2 = |W (measured - model)|^2``.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from heimdall_lab.propagation import Propagation

__all__ = ["DelayModel", "chi2", "incidence", "pair_covariance", "whitener"]


class DelayModel:
    """Pair delays ``arrival at a - arrival at b`` predicted for a transmitter position.

    Parameters
    ----------
    rlat, rlon : numpy.ndarray
        Receiver positions, degrees, shape (n,).
    ia, ib : numpy.ndarray
        Receiver indices of each pair, shape (m,).
    propagation : Propagation
        The path model.
    frequency_hz : float, optional
        The frequency, for the ``"auto"`` mode's ground range.
    """

    def __init__(
        self,
        rlat: np.ndarray,
        rlon: np.ndarray,
        ia: np.ndarray,
        ib: np.ndarray,
        propagation: Propagation,
        frequency_hz: float | None = None,
    ) -> None:
        self.rlat = np.asarray(rlat, dtype=np.float64)
        self.rlon = np.asarray(rlon, dtype=np.float64)
        self.ia = np.asarray(ia, dtype=np.int64)
        self.ib = np.asarray(ib, dtype=np.int64)
        self.propagation = propagation
        self.frequency_hz = frequency_hz

    def receiver_delays(self, lat: Any, lon: Any) -> np.ndarray:
        """Delay from the position(s) to each receiver, shape (n, *position shape)."""
        lat = np.asarray(lat, dtype=np.float64)
        lon = np.asarray(lon, dtype=np.float64)
        return np.stack(
            [
                np.asarray(self.propagation.between(lat, lon, a, b, self.frequency_hz))
                for a, b in zip(self.rlat, self.rlon, strict=True)
            ]
        )

    def on_grid(self, glat: np.ndarray, glon: np.ndarray) -> np.ndarray:
        """Pair delays on the grid ``glat x glon``, shape (m, len(glat), len(glon)).

        The receivers' delays on a grid are kept for the next model on the same receivers,
        path and grid (a refit with other errors searches the same grid), unless the grid is
        larger than :data:`GRID_KEPT_POINTS` receiver-points.
        """
        if len(self.rlat) * np.size(glat) * np.size(glon) > GRID_KEPT_POINTS:
            return self(*np.meshgrid(glat, glon, indexing="ij"))
        d = _grid_delays(
            tuple(self.rlat.tolist()),
            tuple(self.rlon.tolist()),
            self.propagation,
            self.frequency_hz,
            tuple(np.asarray(glat, np.float64).tolist()),
            tuple(np.asarray(glon, np.float64).tolist()),
        )
        return d[self.ia] - d[self.ib]

    def __call__(self, lat: Any, lon: Any) -> np.ndarray:
        """Pair delays at the position(s), shape (m, *position shape)."""
        d = self.receiver_delays(lat, lon)
        return d[self.ia] - d[self.ib]

    def subset(self, keep: np.ndarray) -> DelayModel:
        """The model of the pairs ``keep`` (a boolean mask or indices)."""
        return DelayModel(
            self.rlat,
            self.rlon,
            self.ia[keep],
            self.ib[keep],
            self.propagation,
            self.frequency_hz,
        )


#: The largest grid (receivers x points) whose delays are kept: 8 MB each, 4 kept.
GRID_KEPT_POINTS = 1_000_000


@functools.lru_cache(maxsize=4)
def _grid_delays(
    rlat: tuple[float, ...],
    rlon: tuple[float, ...],
    propagation: Propagation,
    frequency_hz: float | None,
    glat: tuple[float, ...],
    glon: tuple[float, ...],
) -> np.ndarray:
    la, lo = np.meshgrid(np.array(glat), np.array(glon), indexing="ij")
    d = DelayModel(np.array(rlat), np.array(rlon), [], [], propagation, frequency_hz)
    out = d.receiver_delays(la, lo)
    out.flags.writeable = False
    return out


def incidence(ia: np.ndarray, ib: np.ndarray, n: int) -> np.ndarray:
    """The (m, n) matrix with +1 at (pair, a) and -1 at (pair, b)."""
    a = np.zeros((len(ia), n))
    a[np.arange(len(ia)), ia] = 1.0
    a[np.arange(len(ib)), ib] -= 1.0
    return a


def pair_covariance(
    ia: np.ndarray, ib: np.ndarray, n: int, pair_sigma: np.ndarray, receiver_cov: np.ndarray
) -> np.ndarray:
    """Covariance of the pair delays, s^2: ``diag(pair_sigma^2) + A receiver_cov A^T``."""
    a = incidence(ia, ib, n)
    return np.diag(np.square(pair_sigma)) + a @ receiver_cov @ a.T


def whitener(cov: np.ndarray) -> np.ndarray:
    """``W`` with ``W cov W^T = I`` (the inverse of the Cholesky factor)."""
    lower = np.linalg.cholesky(cov)
    return np.linalg.inv(lower)


def chi2(w: np.ndarray, measured: np.ndarray, model: np.ndarray) -> np.ndarray:
    """``|W (measured - model)|^2`` over the pair axis (the first) of ``model``."""
    r = measured.reshape((-1,) + (1,) * (model.ndim - 1)) - model
    z = np.tensordot(w, r, axes=1)
    return np.sum(z * z, axis=0)
