"""How a radio signal travels from a transmitter to a receiver: the delay models.

Two paths are modelled, both over the WGS84 geodesic distance ``d``
(:func:`heimdall_lab.geo.distance_m`):

Ground wave
    Along the surface at ``velocity_factor * c``: delay ``d / (velocity_factor * c)``. Over
    land the ground wave is a little slower than light (its secondary phase); a
    ``velocity_factor`` of 0.9995 adds about 1.7 us at 1000 km.
Sky wave (one hop)
    Up to a mirror at the virtual layer height ``h`` above the midpoint of the path and
    down again, on a sphere of the mean radius ``R``: with the half central angle
    ``a = d / (2 R)``, the path is ``2 sqrt(R^2 + (R + h)^2 - 2 R (R + h) cos a)`` at
    ``c``. Virtual heights: about 70 km for the daytime D layer at LF, 90-110 km for the E
    layer, 200-400 km for F2 at HF.

:class:`Propagation` picks one per receiver: ``mode="ground"`` or ``"sky"`` for every
receiver, or ``"auto"`` for the ground wave within ``ground_range_km`` of the transmitter
and the sky wave beyond it. Within the ground range a one-hop sky wave still arrives, later
by :meth:`Propagation.sky_excess_s` and usually weaker. Mixed in at ``g`` of the ground
wave's amplitude and at a carrier phase ``psi`` against it, it moves the keying edges, and
with them a correlation peak, by about ``g cos(psi) excess / (1 + g cos(psi))``: early or late,
as the phase drifts. :meth:`Propagation.sky_pull_sigma_s` states that pull's spread for a
typical ratio ``sky_ratio`` and an unknown phase (by day at LF over 300-800 km the ratio is
0.05-0.3, whose RMS is about 0.2, the default); the localizer adds it to each such
receiver's timing error (:mod:`heimdall_lab.localize`), and the emulator can add the sky
wave (:mod:`heimdall_lab.emulate.scenario`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from heimdall_lab import geo
from heimdall_lab.errors import ValidationError

__all__ = [
    "MODES",
    "Propagation",
    "default_ground_range_km",
    "sky_path_m",
]

#: The propagation modes: every receiver by ground wave, every receiver by one-hop sky wave,
#: or each by the ground wave within the ground range and by the sky wave beyond it.
MODES = ("ground", "sky", "auto")


def default_ground_range_km(frequency_hz: float | None) -> float:
    """How far the ground wave dominates a one-hop sky wave by day, over land, roughly.

    The ground wave's attenuation over land grows steeply with frequency, while the sky wave
    is absorbed in the D layer by day below a few MHz. The rule of thumb: about 1000 km at LF
    (below 300 kHz), 300 km at MF (300 kHz to 3 MHz), 50 km at HF. ``None`` (frequency not
    known) gives the LF figure.
    """
    if frequency_hz is None or not math.isfinite(frequency_hz) or frequency_hz < 300e3:
        return 1000.0
    if frequency_hz < 3e6:
        return 300.0
    return 50.0


def sky_path_m(distance_m: ArrayLike, layer_height_m: float) -> np.ndarray | float:
    """Length of a one-hop sky-wave path by a mirror at ``layer_height_m``, metres.

    Parameters
    ----------
    distance_m : array_like
        Ground distance, metres (>= 0).
    layer_height_m : float
        Virtual height of the reflecting layer, metres (> 0).

    Returns
    -------
    float or numpy.ndarray
        ``2 sqrt(R^2 + (R + h)^2 - 2 R (R + h) cos(d / 2R))``; ``2 h`` at zero distance.

    Examples
    --------
    >>> round(sky_path_m(0.0, 70e3))
    140000
    """
    d = np.asarray(distance_m, dtype=np.float64)
    r = geo.EARTH_RADIUS_M
    rh = r + float(layer_height_m)
    a = d / (2.0 * r)
    # 2 sqrt((rh - r)^2 + 4 r rh sin^2(a / 2)): the same chord, well conditioned near d = 0.
    path = 2.0 * np.sqrt((rh - r) ** 2 + 4.0 * r * rh * np.sin(a / 2.0) ** 2)
    return float(path) if np.ndim(distance_m) == 0 else path


def _number(value: Any, what: str, lo: float, hi: float, *, open_lo: bool = True) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{what} must be a number, got {value!r}") from exc
    if not math.isfinite(v) or v > hi or v < lo or (open_lo and v == lo):
        bracket = "(" if open_lo else "["
        raise ValidationError(f"{what} must be in {bracket}{lo:g}, {hi:g}], got {value!r}")
    return v


@dataclass(frozen=True)
class Propagation:
    """A stated propagation model: which path each receiver is taken to hear.

    Parameters
    ----------
    mode : {"ground", "sky", "auto"}, default "ground"
        Ground wave for every receiver, one-hop sky wave for every receiver, or each by the
        ground wave within ``ground_range_km`` and the sky wave beyond.
    velocity_factor : float, default 1.0
        Ground-wave speed as a fraction of the speed of light, in (0.9, 1].
    layer_height_km : float, default 70.0
        Virtual height of the reflecting layer for the sky wave, km, in (0, 1000]. 70 km is
        the daytime D layer that reflects LF.
    ground_range_km : float, optional
        Where the ``"auto"`` mode switches from ground to sky wave, and how far the
        localizer checks for a sky wave mixed into the ground wave; by default
        :func:`default_ground_range_km` of the frequency.
    sky_ratio : float, default 0.2
        The typical (RMS) amplitude of a one-hop sky wave mixed into the ground wave, as a
        fraction of the ground wave's, within the ground range, in [0, 0.99]. 0 states that
        there is none (a path known to be clean).
    """

    mode: str = "ground"
    velocity_factor: float = 1.0
    layer_height_km: float = 70.0
    ground_range_km: float | None = None
    sky_ratio: float = 0.2

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValidationError(f"propagation mode must be one of {MODES}, got {self.mode!r}")
        object.__setattr__(
            self, "velocity_factor", _number(self.velocity_factor, "velocity_factor", 0.9, 1.0)
        )
        object.__setattr__(
            self, "layer_height_km", _number(self.layer_height_km, "layer_height_km", 0, 1000)
        )
        object.__setattr__(
            self, "sky_ratio", _number(self.sky_ratio, "sky_ratio", 0.0, 0.99, open_lo=False)
        )
        if self.ground_range_km is not None:
            object.__setattr__(
                self,
                "ground_range_km",
                _number(self.ground_range_km, "ground_range_km", 0, 20000, open_lo=False),
            )

    @classmethod
    def of(cls, value: Propagation | str | dict | None) -> Propagation:
        """A Propagation from itself, a mode name, a dict of its fields, or None (default)."""
        if value is None:
            return cls()
        if isinstance(value, Propagation):
            return value
        if isinstance(value, str):
            return cls(mode=value)
        if isinstance(value, dict):
            unknown = sorted(set(value) - {f.name for f in fields(cls)})
            if unknown:
                raise ValidationError(f"unknown propagation field(s) {', '.join(unknown)}")
            return cls(**value)
        raise ValidationError(
            f"propagation must be a mode name {MODES}, a dict or a Propagation, got {value!r}"
        )

    def ground_range_m(self, frequency_hz: float | None) -> float:
        """The ground range in metres, at ``frequency_hz`` when it is not set."""
        km = self.ground_range_km
        return 1e3 * (default_ground_range_km(frequency_hz) if km is None else km)

    def uses_sky(self, distance_m: ArrayLike, frequency_hz: float | None = None) -> np.ndarray:
        """Whether each distance is taken to be heard by the sky wave."""
        d = np.asarray(distance_m, dtype=np.float64)
        if self.mode == "ground":
            return np.zeros(d.shape, dtype=bool)
        if self.mode == "sky":
            return np.ones(d.shape, dtype=bool)
        return d > self.ground_range_m(frequency_hz)

    def ground_delay_s(self, distance_m: ArrayLike) -> np.ndarray | float:
        """Ground-wave delay over ``distance_m``, seconds."""
        d = np.asarray(distance_m, dtype=np.float64) / (geo.SPEED_OF_LIGHT * self.velocity_factor)
        return float(d) if np.ndim(distance_m) == 0 else d

    def sky_delay_s(self, distance_m: ArrayLike) -> np.ndarray | float:
        """One-hop sky-wave delay over ``distance_m``, seconds."""
        d = np.asarray(sky_path_m(distance_m, self.layer_height_km * 1e3)) / geo.SPEED_OF_LIGHT
        return float(d) if np.ndim(distance_m) == 0 else d

    def sky_excess_s(self, distance_m: ArrayLike) -> np.ndarray | float:
        """How much later the one-hop sky wave arrives than the ground wave, seconds."""
        d = np.asarray(self.sky_delay_s(distance_m)) - np.asarray(self.ground_delay_s(distance_m))
        return float(d) if np.ndim(distance_m) == 0 else d

    def sky_pull_sigma_s(
        self, distance_m: ArrayLike, frequency_hz: float | None = None
    ) -> np.ndarray | float:
        """Spread of the pull a mixed-in sky wave gives a ground-wave receiver, seconds.

        ``sky_ratio * sky_excess_s / sqrt(2)``: the RMS of the first-order pull
        ``g cos(psi) excess`` for a ratio ``g`` of RMS ``sky_ratio`` and a phase ``psi`` that
        is unknown (uniform). Zero for a receiver this model hears by the sky wave, or beyond
        the ground range.
        """
        d = np.asarray(distance_m, dtype=np.float64)
        mixed = ~self.uses_sky(d, frequency_hz) & (d <= self.ground_range_m(frequency_hz))
        out = np.where(mixed, self.sky_ratio * np.asarray(self.sky_excess_s(d)) / math.sqrt(2), 0)
        return float(out) if np.ndim(distance_m) == 0 else out

    def delay_s(self, distance_m: ArrayLike, frequency_hz: float | None = None) -> Any:
        """Delay over ``distance_m`` by the path this model takes, seconds."""
        d = np.asarray(distance_m, dtype=np.float64)
        out = np.where(self.uses_sky(d, frequency_hz), self.sky_delay_s(d), self.ground_delay_s(d))
        return float(out) if np.ndim(distance_m) == 0 else out

    def between(
        self,
        tx_lat: ArrayLike,
        tx_lon: ArrayLike,
        rx_lat: ArrayLike,
        rx_lon: ArrayLike,
        frequency_hz: float | None = None,
    ) -> Any:
        """Delay from transmitter(s) to receiver(s) over the WGS84 geodesic, seconds."""
        return self.delay_s(geo.distance_m(tx_lat, tx_lon, rx_lat, rx_lon), frequency_hz)

    def sky_pull_between(
        self,
        tx_lat: ArrayLike,
        tx_lon: ArrayLike,
        rx_lat: ArrayLike,
        rx_lon: ArrayLike,
        frequency_hz: float | None = None,
    ) -> Any:
        """:meth:`sky_pull_sigma_s` from transmitter(s) to receiver(s), seconds."""
        return self.sky_pull_sigma_s(geo.distance_m(tx_lat, tx_lon, rx_lat, rx_lon), frequency_hz)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict (:meth:`of` reads it back)."""
        return asdict(self)

    def describe(self, frequency_hz: float | None = None) -> str:
        """One line stating the model, e.g. for a result's notes."""
        ground = f"ground wave at {self.velocity_factor:g} c"
        sky = f"one-hop sky wave by a mirror at {self.layer_height_km:g} km"
        if self.mode == "ground":
            return f"{ground} along WGS84 geodesics"
        if self.mode == "sky":
            return f"{sky} over WGS84 geodesic distances"
        return (
            f"{ground} within {self.ground_range_m(frequency_hz) / 1e3:g} km, {sky} beyond, "
            "along WGS84 geodesics"
        )
