"""Receivers: where they are, how to reach them, and what may be asked of them.

A :class:`Receiver` is one KiwiSDR (or an emulated one). The seven defaults are the receiver
network of the original plan; in a deployment the list lives in the database.
"""

from __future__ import annotations

import numbers
import re
from dataclasses import dataclass, replace

from heimdall_lab import geo
from heimdall_lab.errors import ValidationError
from heimdall_lab.ids import check_receiver_name
from heimdall_lab.values import clip, positive

#: The longest capture one call may ask for, in seconds.
MAX_DURATION_S = 86400.0
#: The lowest centre frequency a capture may ask for, in Hz (a KiwiSDR tunes from about
#: 10 kHz; the IQ passband is +-6 kHz around the centre).
MIN_FREQUENCY_HZ = 1000.0

_HOST = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


def check_host(host: object, what: str = "host") -> str:
    """Check a host name or IP address.

    Parameters
    ----------
    host : str
        The host.
    what : str, default "host"
        What it is, for the message.

    Returns
    -------
    str
        The host.

    Raises
    ------
    ValidationError
        If it is not a host name or a dotted IPv4 address.
    """
    if not isinstance(host, str) or not _HOST.match(host):
        raise ValidationError(
            f"{what} {clip(host)!r} is not a host name or IP address (e.g. kiwi.example.org)"
        )
    return host


def check_port(port: object, what: str = "port") -> int:
    """Check a TCP port number.

    Parameters
    ----------
    port : int
        The port.
    what : str, default "port"
        What it is, for the message.

    Returns
    -------
    int
        The port.

    Raises
    ------
    ValidationError
        If it is not a whole number in 1-65535.
    """
    if isinstance(port, bool) or not isinstance(port, numbers.Integral) or not 0 < port < 65536:
        raise ValidationError(f"{what} {clip(port)} is not a TCP port; give a whole number 1-65535")
    return int(port)


def parse_address(text: str) -> tuple[str, int]:
    """Split and check a ``HOST:PORT`` address.

    Parameters
    ----------
    text : str
        E.g. ``kiwi.example.org:8073``.

    Returns
    -------
    tuple of (str, int)
        Host and port.

    Raises
    ------
    ValidationError
        If there is no port, the port is not a whole number in 1-65535, or the host is not a
        host name or IP address; the message names which.
    """
    address = f"address {clip(text)!r}"
    host, colon, port = text.rpartition(":")
    if not colon:
        raise ValidationError(f"{address} has no port; give HOST:PORT, e.g. kiwi.example.org:8073")
    if not port.isdigit():
        raise ValidationError(f"{address}: port {clip(port)!r} is not a whole number 1-65535")
    return check_host(host, f"{address}: host"), check_port(int(port), f"{address}: port")


@dataclass(frozen=True)
class Receiver:
    """One receiver of the network.

    Attributes
    ----------
    name : str
        Unique short name (letters, digits, ``_ . -``), also used in file and object names.
    host : str
        Host name or IP address.
    port : int
        TCP port of its web server (8073 on a KiwiSDR).
    latitude, longitude : float
        Antenna position in degrees (WGS84).
    location_name : str
        Human-readable place.
    min_frequency_hz, max_frequency_hz : float
        Tunable range (0-30 MHz on a KiwiSDR).
    calibration_db : float
        dB to add to dBFS to get dBm at the antenna; NaN when unknown.
    timeout_s : float
        Connect timeout.
    retry_count : int
        Retries of failures worth retrying.
    password : str
        User password; public receivers take none.
    tls : bool
        Reached over TLS (``https://`` / ``wss://``), as a few public receivers are.
    """

    name: str
    host: str
    port: int = 8073
    latitude: float = 0.0
    longitude: float = 0.0
    location_name: str = ""
    min_frequency_hz: float = 0.0
    max_frequency_hz: float = 30e6
    calibration_db: float = float("nan")
    timeout_s: float = 10.0
    retry_count: int = 3
    password: str = ""
    tls: bool = False

    def __post_init__(self) -> None:
        check_receiver_name(self.name)
        check_host(self.host, f"receiver {self.name}: host")
        check_port(self.port, f"receiver {self.name}: port")
        geo.check_position(self.latitude, self.longitude, f"receiver {self.name}")
        if not 0 <= self.min_frequency_hz < self.max_frequency_hz:
            raise ValidationError(f"receiver {self.name}: empty frequency range")
        positive(self.timeout_s, f"receiver {self.name}: timeout_s")
        positive(
            self.retry_count, f"receiver {self.name}: retry_count", allow_zero=True, whole=True
        )
        if not isinstance(self.tls, bool):
            raise ValidationError(f"receiver {self.name}: tls must be True or False")

    @property
    def address(self) -> str:
        """``host:port``."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """Its web address, ``http://host:port/`` (``https://`` over TLS)."""
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}/"

    def with_address(self, host: str, port: int) -> Receiver:
        """The same receiver at another address (used to point a receiver at the emulator).

        Parameters
        ----------
        host : str
            Host name or IP.
        port : int
            TCP port.

        Returns
        -------
        Receiver
            A copy with the new address.
        """
        return replace(self, host=host, port=port)

    def check_frequency(self, frequency_hz: float) -> None:
        """Raise unless the receiver can tune to ``frequency_hz``.

        Parameters
        ----------
        frequency_hz : float
            Centre frequency in Hz.

        Raises
        ------
        ValidationError
            If the frequency is outside the receiver's range.
        """
        if not self.min_frequency_hz <= frequency_hz <= self.max_frequency_hz:
            raise ValidationError(
                f"{frequency_hz:.0f} Hz is outside receiver {self.name}'s range "
                f"{self.min_frequency_hz:.0f}-{self.max_frequency_hz:.0f} Hz"
            )


#: The seven default receivers: for each place of the original plan (Toulouse, the
#: Netherlands, Bridgnorth, Zurich, the Black Forest, Vienna, St. Gallen), the nearest
#: GNSS-equipped public KiwiSDR covering 0-30 MHz in the directory of 2025-12-31
#: (``heimdall_lab.directory``; names as its import gives them). They are real receivers of
#: other people: the demo and the tests serve these names from the emulator instead.
DEFAULT_RECEIVERS: tuple[Receiver, ...] = (
    Receiver("F4JOY", "f4joy.ddns.net", 8073, 45.269722, 2.924131, "Pradiers, France"),
    Receiver("Purmerend", "92.108.29.14", 8073, 52.5021, 4.98509, "Purmerend, Netherlands"),
    Receiver("North-Shropshire-UK", "82.71.90.132", 8073, 52.89, -2.64, "North Shropshire, UK"),
    Receiver(
        "Hasenberg03",
        "hasenberg03.proxy.kiwisdr.com",
        80,
        47.378389,
        8.364613,
        "Hasenberg, Switzerland",
    ),
    Receiver("DB3TH", "db3th.proxy.kiwisdr.com", 80, 48.231823, 8.663999, "Rottweil, Germany"),
    Receiver("OE3AKB", "oe3akb.ddns.net", 8073, 48.32, 15.58, "Lower Austria, Austria"),
    Receiver(
        "DK0TE",
        "kiwisdr.inf.dhbw-ravensburg.de",
        8073,
        47.665021,
        9.448193,
        "Friedrichshafen, Germany",
    ),
)


def validate_capture_request(frequency_hz: float, duration_s: float) -> None:
    """Check a capture's frequency and duration before anything connects.

    Parameters
    ----------
    frequency_hz : float
        Centre frequency in Hz.
    duration_s : float
        Capture length in seconds.

    Raises
    ------
    ValidationError
        If either is not a finite positive number, the frequency is below
        :data:`MIN_FREQUENCY_HZ` or the duration exceeds :data:`MAX_DURATION_S`.
    """
    positive(frequency_hz, "frequency")
    positive(duration_s, "duration")
    if frequency_hz < MIN_FREQUENCY_HZ:
        raise ValidationError(
            f"frequency {frequency_hz:g} Hz is below {MIN_FREQUENCY_HZ:g} Hz; give the centre "
            "frequency in Hz (e.g. 77500 for 77.5 kHz)"
        )
    if duration_s > MAX_DURATION_S:
        raise ValidationError(
            f"duration {duration_s} s is over the limit of {MAX_DURATION_S:.0f} s; "
            "split long captures into several"
        )
