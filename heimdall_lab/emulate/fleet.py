"""Fleets of emulated receivers of any size, for sizing long captures and sessions.

The seven default receivers come first; past them, receivers are placed on a ring of
rings around the default transmitter's region (central Europe), deterministically, with
names ``EMU-08``, ``EMU-09``, ... They are served by the emulator on loopback like any
other (see :func:`heimdall_lab.emulate.emulated`).
"""

from __future__ import annotations

import math

from heimdall_lab.errors import ValidationError
from heimdall_lab.receivers import DEFAULT_RECEIVERS, Receiver

#: Most receivers one emulator serves here (each is a socket and a task).
MAX_EMULATED = 200
_CENTRE = (50.0, 8.5)


def emulated_receivers(n: int) -> list[Receiver]:
    """``n`` receivers to emulate: the defaults first, then more around them.

    Parameters
    ----------
    n : int
        How many, 1 to :data:`MAX_EMULATED`.

    Returns
    -------
    list of Receiver
        Loopback addresses (the emulator gives each its own port).

    Raises
    ------
    ValidationError
        If ``n`` is out of range.
    """
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_EMULATED:
        raise ValidationError(f"emulated receivers: 1 to {MAX_EMULATED}, got {n!r}")
    out = list(DEFAULT_RECEIVERS[:n])
    for k in range(len(out), n):
        ring, slot = divmod(k - len(DEFAULT_RECEIVERS), 12)
        radius_deg = 3.0 + 2.0 * ring
        angle = 2 * math.pi * (slot + 0.5 * (ring % 2)) / 12
        lat = _CENTRE[0] + radius_deg * math.sin(angle) * 0.7
        lon = _CENTRE[1] + radius_deg * math.cos(angle)
        out.append(
            Receiver(
                name=f"EMU-{k + 1:02d}",
                host="127.0.0.1",
                latitude=round(lat, 4),
                longitude=round(lon, 4),
                location_name="emulated",
            )
        )
    return out


__all__ = ["MAX_EMULATED", "emulated_receivers"]
