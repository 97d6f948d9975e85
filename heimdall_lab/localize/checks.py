"""Checks of the parameters a localization takes."""

from __future__ import annotations

import logging
import math
from typing import Any, Literal

from heimdall_lab import geo
from heimdall_lab.errors import ValidationError

log = logging.getLogger(__name__)

Method = Literal["envelope", "complex"]
#: Correlation methods of :func:`estimate_delay` (:func:`locate_dataset` also takes "auto").
METHODS: tuple[str, ...] = ("envelope", "complex")
#: Default ``band`` (Hz from the carrier, ``(low, high)`` on ``|f|``) of each method.
DEFAULT_BANDS: dict[str, tuple[float, float]] = {
    "envelope": (0.0, 1000.0),
    "complex": (0.0, 3000.0),
}


# ============================================================================================
# Input validation


def _check_method(method: Any, auto: bool = False) -> str:
    allowed = (*METHODS, "auto") if auto else METHODS
    if method not in allowed:
        raise ValidationError(f"unknown method {method!r}; choose one of {', '.join(allowed)}")
    return str(method)


def _check_band(band: Any, method: str, fs: float) -> tuple[float, float]:
    if band is None:
        lo, hi = DEFAULT_BANDS[method]
    else:
        try:
            lo, hi = (float(b) for b in band)
        except (TypeError, ValueError) as exc:
            raise ValidationError(f"band must be (low_hz, high_hz), got {band!r}") from exc
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo < hi):
            raise ValidationError(f"band must satisfy 0 <= low < high (Hz), got {band!r}")
    hi = min(hi, fs / 2.0)
    if lo >= hi:
        raise ValidationError(f"band {band!r} lies outside the +-{fs / 2:.0f} Hz sampled band")
    return lo, hi


def _check_receiver_position(name: str, lat: Any, lon: Any) -> tuple[float, float]:
    try:
        la, lo = float(lat), float(lon)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"receiver {name}: position {lat!r}, {lon!r} is not numeric") from exc
    geo.check_position(la, lo, f"receiver {name}")
    if la == 0.0 and lo == 0.0:
        raise ValidationError(
            f"receiver {name}: position 0, 0 is the Receiver default, not a real position; "
            "set the receiver's latitude and longitude"
        )
    return la, lo
