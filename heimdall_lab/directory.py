"""The public KiwiSDR directory: read it, check it, and turn it into receivers.

The directory (kiwisdr.com/public, and the JavaScript array that map makers derive from it)
describes each public receiver with the same ``key=value`` fields its own ``/status`` page
serves. It is untrusted input: every field is checked, and an entry that cannot be a usable
receiver is skipped with a reason, never raised.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from heimdall_lab.receivers import Receiver


@dataclass(frozen=True)
class Entry:
    """One receiver as the directory describes it (all fields checked).

    Attributes
    ----------
    name : str
        A unique valid receiver name derived from the entry (see :func:`receiver_name`).
    title : str
        The directory's own free-text ``name`` (cleaned, at most 200 characters).
    host : str
        Host name or IP address.
    port : int
        TCP port (80 or 443 when the URL gives none).
    tls : bool
        The URL is ``https://`` (WebSocket over TLS).
    latitude, longitude : float
        Antenna position, degrees.
    min_frequency_hz, max_frequency_hz : float
        Tunable range (``bands``).
    users, users_max : int
        Channels in use / available.
    has_gps : bool
        The receiver has a GNSS receiver (the ``GPS`` flag of ``sdr_hw``, or fixes).
    gps_good : int
        Satellites in the current fix.
    fixes_min : int
        GNSS fixes in the last minute; ``> 0`` means fresh GNSS timestamps.
    tdoa_id : str
        Short TDoA name, often empty.
    tdoa_ch : int
        Channels allowed for TDoA; -1 means none.
    time_limited : bool
        The receiver limits connection time (the ``Limits`` flag of ``sdr_hw``).
    antenna, location_name, sw_version : str
        Free text, cleaned.
    snr_db : float
        Reported SNR (the first of ``snr``), dB; NaN when absent.
    altitude_m : float
        ``asl``, metres; NaN when absent.
    offline : bool
        ``offline=yes``.
    password : bool
        ``auth=password`` (a password is needed).
    ext_api : bool
        False when the owner set ``ext_api=0`` (external applications not welcome).
    directory_id : str
        The directory's ``id``; empty when absent.
    updated_utc : numpy.datetime64
        When the directory last heard from it (``updated``); NaT when absent or unreadable.
    """

    name: str
    title: str
    host: str
    port: int
    tls: bool
    latitude: float
    longitude: float
    min_frequency_hz: float = 0.0
    max_frequency_hz: float = 30e6
    users: int = 0
    users_max: int = 0
    has_gps: bool = False
    gps_good: int = 0
    fixes_min: int = 0
    tdoa_id: str = ""
    tdoa_ch: int = -1
    time_limited: bool = False
    antenna: str = ""
    location_name: str = ""
    sw_version: str = ""
    snr_db: float = float("nan")
    altitude_m: float = float("nan")
    offline: bool = False
    password: bool = False
    ext_api: bool = True
    directory_id: str = ""
    updated_utc: np.datetime64 = field(default_factory=lambda: np.datetime64("NaT", "s"))

    @property
    def fresh_gnss(self) -> bool:
        """A GNSS receiver with satellites and fixes in the last minute."""
        return self.has_gps and self.gps_good > 0 and self.fixes_min > 0

    @property
    def free_channels(self) -> int:
        """Channels not in use."""
        return max(self.users_max - self.users, 0)

    @property
    def allows_tdoa(self) -> bool:
        """The owner allows TDoA use (``tdoa_ch`` not -1)."""
        return self.tdoa_ch != -1

    def covers(self, frequency_hz: float) -> bool:
        """Whether ``frequency_hz`` is in the tunable range."""
        return self.min_frequency_hz <= frequency_hz <= self.max_frequency_hz

    def receiver(self) -> Receiver:
        """The entry as a :class:`~heimdall_lab.receivers.Receiver`."""
        return Receiver(
            name=self.name,
            host=self.host,
            port=self.port,
            latitude=self.latitude,
            longitude=self.longitude,
            location_name=self.location_name,
            min_frequency_hz=self.min_frequency_hz,
            max_frequency_hz=self.max_frequency_hz,
            tls=self.tls,
        )
