"""The public KiwiSDR directory: read it, check it, and turn it into receivers.

The directory (kiwisdr.com/public, and the JavaScript array that map makers derive from it)
describes each public receiver with the same ``key=value`` fields its own ``/status`` page
serves. It is untrusted input: every field is checked, and an entry that cannot be a usable
receiver is skipped with a reason, never raised.

:func:`parse` reads either published form from text, :func:`load` from a file or a URL (with
a local cache for when the directory cannot be reached), :func:`entry_from_fields` is the one
place where a receiver's string fields become a checked :class:`Entry`, and
:func:`render_js` / :func:`render_html` write the two forms back (an emulator serves its own
directory with them).

Examples
--------
>>> from heimdall_lab import directory
>>> text = '''var kiwisdr_com = [
... {"name":"Test SDR, G3SDR", "url":"http://kiwi.example.org:8073",
...  "gps":"(51.3, -2.9)", "bands":"0-30000000", "users":"1", "users_max":"4",},
... ];'''
>>> d = directory.parse(text)
>>> [(e.name, e.host, e.port, e.free_channels) for e in d]
[('G3SDR', 'kiwi.example.org', 8073, 3)]
>>> d.quirks
{'trailing_comma': 2}
"""

from __future__ import annotations

import hashlib
import html
import ipaddress
import itertools
import json
import logging
import math
import os
import re
import tempfile
import time
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
import numpy as np
import pandas as pd

from heimdall_lab import home
from heimdall_lab.errors import ValidationError
from heimdall_lab.ids import check_receiver_name
from heimdall_lab.receivers import Receiver, check_host, check_port
from heimdall_lab.urls import mask_url, redact, secrets_in
from heimdall_lab.values import clip, positive
from heimdall_lab.versions import __version__

__all__ = [
    "MAX_BANDS_HZ",
    "MAX_BYTES",
    "MAX_FIELDS",
    "MAX_FIELD_CHARS",
    "MAX_TEXT_CHARS",
    "QUIRKS",
    "REASONS",
    "Directory",
    "DirectoryError",
    "Entry",
    "SkippedEntry",
    "entry_fields",
    "entry_from_fields",
    "load",
    "parse",
    "receiver_name",
    "render_html",
    "render_js",
]

log = logging.getLogger(__name__)

#: The largest directory :func:`load` reads (file or answer), bytes.
MAX_BYTES = 16 * 1024 * 1024
#: The longest field value an entry may hold; a longer one skips the entry (``too_long``).
MAX_FIELD_CHARS = 4096
#: Free text (name, location, antenna, ...) is cut to this many characters.
MAX_TEXT_CHARS = 200
#: The most fields one entry may have (``too_long`` beyond).
MAX_FIELDS = 256
#: The highest frequency a tunable range may reach, Hz (``bands`` beyond).
MAX_BANDS_HZ = 100e6
#: Why an entry is skipped. ``syntax``: the record could not be decoded at all;
#: ``not_object``: an array element that is not an object; ``too_long``: a field over
#: :data:`MAX_FIELD_CHARS` (or too many fields); ``markup``: HTML or script in a field;
#: ``position``: no usable ``gps``; ``url``: no usable ``http(s)://host:port``; ``bands``: an
#: impossible tunable range; ``numbers``: an impossible count, level or altitude; ``name``: no
#: receiver name can be derived.
REASONS = (
    "syntax",
    "not_object",
    "too_long",
    "markup",
    "position",
    "url",
    "bands",
    "numbers",
    "name",
)
#: The quirks :class:`Directory` counts. Syntax quirks are counted per occurrence
#: (``trailing_comma``: a comma before ``]`` or ``}``; ``repeated_key``: a key given twice in
#: one object, the last value wins; ``comment``: a ``//`` or ``/* */`` comment;
#: ``bad_escape``: a JavaScript-only string escape such as ``\\'``; ``non_string``: a value
#: that is neither text nor a number, dropped; ``trailing_text``: text after the array).
#: Record quirks are counted once per entry kept before duplicates are collapsed
#: (``escaped_quote``: a value holding ``"``; ``emoji``; ``mojibake``: UTF-8 text that was
#: decoded as Windows-1252, repaired; ``zoom_suffix``: a map zoom after the position;
#: ``https``: a receiver reached over TLS). ``duplicate_url`` counts the entries dropped
#: because another entry has the same ``host:port``.
QUIRKS = (
    "html_tags",
    "comment",
    "trailing_comma",
    "repeated_key",
    "bad_escape",
    "non_string",
    "trailing_text",
    "escaped_quote",
    "emoji",
    "mojibake",
    "zoom_suffix",
    "https",
    "duplicate_url",
)

#: Longest ``tdoa_id`` used as a receiver name.
_TDOA_NAME_CHARS = 16
#: Longest name derived from the location.
_LOC_NAME_CHARS = 24


class DirectoryError(ValidationError):
    """The directory could not be read: not a directory, no answer and no cached copy."""


class SkippedEntry(DirectoryError):  # noqa: N818 - named for what it reports
    """One directory entry cannot be a usable receiver.

    Parameters
    ----------
    reason : str
        One of :data:`REASONS`.
    detail : str, optional
        What was wrong, for the message.

    Attributes
    ----------
    reason : str
        One of :data:`REASONS`.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown skip reason {reason!r}; reasons: {', '.join(REASONS)}")
        super().__init__(f"directory entry skipped ({reason})" + (f": {detail}" if detail else ""))
        self.reason = reason


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

    @property
    def url(self) -> str:
        """The directory's form of its address, ``http://host:port`` (``https://`` over TLS)."""
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

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


#: The columns of :meth:`Directory.frame`.
_COLUMNS = (*(f.name for f in fields(Entry)), "fresh_gnss", "free_channels")
_FLOAT_COLUMNS = (
    "latitude",
    "longitude",
    "min_frequency_hz",
    "max_frequency_hz",
    "snr_db",
    "altitude_m",
)


def _nat() -> np.datetime64:
    return np.datetime64("NaT", "s")


@dataclass(frozen=True)
class Directory:
    """A read directory: the usable entries, and what was skipped or repaired on the way.

    Attributes
    ----------
    entries : tuple of Entry
        The usable receivers, in directory order, one per ``host:port``, uniquely named.
    read : int
        Records seen (``len(entries)`` plus the skipped plus the duplicates collapsed).
    skipped : dict of str to int
        Entries skipped, by reason (see :data:`REASONS`).
    quirks : dict of str to int
        How often each quirk was met and handled (see :data:`QUIRKS`).
    source : str
        Where it came from (a path, or a URL with any credentials masked).
    retrieved_utc : numpy.datetime64
        When this copy was read from its source (for a file, its modification time; for a
        cached copy, when it was fetched).
    from_cache : bool
        The source could not be reached and the last cached copy was used.
    age_s : float
        Age of this copy, seconds.
    published_utc : numpy.datetime64
        The data timestamp the directory states about itself; NaT when it states none.
    """

    entries: tuple[Entry, ...]
    read: int
    skipped: dict[str, int]
    quirks: dict[str, int]
    source: str = ""
    retrieved_utc: np.datetime64 = field(default_factory=_nat)
    from_cache: bool = False
    age_s: float = 0.0
    published_utc: np.datetime64 = field(default_factory=_nat)

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries)

    def get(self, name: str) -> Entry | None:
        """The entry of this name (exact, else ignoring case), or None.

        Parameters
        ----------
        name : str
            A receiver name.

        Returns
        -------
        Entry or None
            The entry.
        """
        folded = None
        for entry in self.entries:
            if entry.name == name:
                return entry
            if folded is None and isinstance(name, str) and entry.name.lower() == name.lower():
                folded = entry
        return folded

    def frame(self) -> pd.DataFrame:
        """The entries as a table.

        One row per entry: every :class:`Entry` field, then ``fresh_gnss`` and
        ``free_channels``.

        Returns
        -------
        pandas.DataFrame
            The table (empty, with the same columns, for an empty directory).
        """
        columns: dict[str, Any] = {c: [getattr(e, c) for e in self.entries] for c in _COLUMNS}
        columns["updated_utc"] = np.array(columns["updated_utc"], dtype="datetime64[s]")
        for c in _FLOAT_COLUMNS:
            columns[c] = np.array(columns[c], dtype=np.float64)
        return pd.DataFrame(columns, columns=list(_COLUMNS))

    def receivers(self) -> list[Receiver]:
        """Every entry as a :class:`~heimdall_lab.receivers.Receiver`.

        Returns
        -------
        list of Receiver
            In directory order.
        """
        return [entry.receiver() for entry in self.entries]

    def summary(self) -> str:
        """What was read, kept, skipped and repaired, in one or two lines.

        Returns
        -------
        str
            E.g. ``read 950, kept 928, skipped 18 (markup 12, bands 5, url 1) from ...``, then
            a line of the quirks handled.
        """
        skipped = sum(self.skipped.values())
        reasons = ", ".join(f"{k} {v}" for k, v in _ranked(self.skipped))
        line = f"read {self.read}, kept {len(self.entries)}, skipped {skipped}"
        line += f" ({reasons})" if reasons else ""
        line += f" from {self.source}" if self.source else ""
        if self.from_cache:
            line += f" (cached copy, {_age_text(self.age_s)} old)"
        if self.quirks:
            line += "\nquirks handled: " + ", ".join(f"{k} {v}" for k, v in _ranked(self.quirks))
        return line


def _ranked(counts: Mapping[str, int]) -> list[tuple[str, int]]:
    return sorted(((k, v) for k, v in counts.items() if v), key=lambda kv: (-kv[1], kv[0]))


# ---------------------------------------------------------------------------------------------
# Text: repair, cleaning, markup


# Windows-1252 characters of the bytes 0x80-0xBF (UTF-8 continuation bytes), plus the C1
# controls (the same bytes read as Latin-1) and U+FFFD (a byte Windows-1252 does not define).
_CONT_CHARS = bytes(range(0x80, 0xC0)).decode("cp1252", errors="replace") + "".join(
    chr(c) for c in range(0x80, 0xA0)
)
_CONT = "[" + re.escape("".join(sorted(set(_CONT_CHARS)))) + "]"
_MOJIBAKE = re.compile(
    f"[\u00c2-\u00df]{_CONT}|[\u00e0-\u00ef]{_CONT}{{2}}|[\u00f0-\u00f4]{_CONT}{{3}}"
)
#: Bytes Windows-1252 leaves undefined: what a U+FFFD in mojibake may have been.
_LOST_BYTES = (0x81, 0x8D, 0x8F, 0x90, 0x9D)


def _mojibake_bytes(text: str) -> list[int | None]:
    out: list[int | None] = []
    for c in text:
        if c == "\ufffd":
            out.append(None)
        elif ord(c) < 256:
            out.append(ord(c))
        else:
            out.append(c.encode("cp1252")[0])
    return out


def _unmojibake_one(m: re.Match[str]) -> str:
    raw = _mojibake_bytes(m[0])
    holes = [i for i, b in enumerate(raw) if b is None]
    if len(holes) > 2:
        return m[0]
    decoded = set()
    for fill in itertools.product(_LOST_BYTES, repeat=len(holes)):
        data = list(raw)
        for i, b in zip(holes, fill, strict=True):
            data[i] = b
        try:
            decoded.add(bytes(data).decode("utf-8"))  # type: ignore[arg-type]
        except UnicodeDecodeError:
            continue
    if len(decoded) == 1:
        return decoded.pop()
    # Several characters fit a lost byte (or none does): the character is lost; drop it
    # when it was one at all, keep the text otherwise.
    return "" if decoded else m[0]


def _repair(text: str) -> str:
    """``text`` with UTF-8 that was decoded as Windows-1252 decoded again."""
    if text.isascii() or not _MOJIBAKE.search(text):
        return text
    return _MOJIBAKE.sub(_unmojibake_one, text)


_ESCAPED_QUOTE = re.compile(r'\\+"')
_DROP_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co"})


def _clean_text(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """Free text cleaned.

    Backslash-escaped quotes unescaped, control and format characters removed, whitespace
    collapsed, cut to ``limit`` characters.
    """
    if '\\"' in text:
        text = _ESCAPED_QUOTE.sub('"', text)
    if "<" in text:
        text = _TAG.sub(" ", text)
    text = " ".join(text.split())
    if not (text.isascii() and text.isprintable()):
        text = "".join(c for c in text if unicodedata.category(c) not in _DROP_CATEGORIES)
        text = " ".join(text.split())
    return text[:limit].strip()


#: Markup that could act when shown (a script, a frame, an event handler, a script URL): the
#: entry is skipped. Other tags (``<b>``, ``<br>``, ``<a href>``, ``<font>``: owners decorate
#: their antenna and location texts) are only taken out of the text.
_MARKUP = re.compile(
    r"<\s*/?\s*(?:script|iframe|frame|frameset|object|embed|applet|style|link|meta|base|form"
    r"|input|button|svg|math|template)\b|<[^<>]*\son[a-z]+\s*=|javascript\s*:|vbscript\s*:"
    r"|data\s*:\s*text/html",
    re.IGNORECASE,
)
#: An HTML tag (or a tag-like ``<...>``) in free text, or one cut off by the end of the text
#: or by the next tag.
_TAG = re.compile(r"<[A-Za-z/!?][^<>]*(?:>|$|(?=<))")


_EMOJI = re.compile("[\U0001f000-\U0010ffff\u2300-\u27bf\u2b00-\u2bff\ufe0f]")


# ---------------------------------------------------------------------------------------------
# Fields -> Entry

_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d{1,3})?")
_COORD = r"[-+]?(?:\d{1,3}(?:\.\d{0,15})?|\.\d{1,15})"
_GPS = re.compile(
    rf"\(?\s*({_COORD})\s*,\s*({_COORD})\s*(,\s*\d{{1,2}}(?:\.\d{{1,3}})?\s*z\s*)?\)?",
    re.IGNORECASE,
)
_URL = re.compile(r"(https?)://([^/?#@\s:\\]+)(?::(\d{1,5}))?/?", re.IGNORECASE)
_BAND = re.compile(r"\s*(\d{1,12}(?:\.\d{1,6})?)\s*-\s*(\d{1,12}(?:\.\d{1,6})?)\s*")
_GPS_FLAG = re.compile(r"\bGPS\b", re.IGNORECASE)
_LIMITS_FLAG = re.compile(r"\bLimits\b", re.IGNORECASE)
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_UPDATED = re.compile(
    r"(?:[A-Za-z]{3,9},?\s+)?(\d{1,2})[- ]([A-Za-z]{3})[- ](\d{4})\s+(\d{2}):(\d{2}):(\d{2})"
    r"\s*(?:GMT|UTC|Z)?"
)


def _field(fields: Mapping[str, str], key: str) -> str:
    value = fields.get(key)
    return value.strip() if isinstance(value, str) else ""


def _number(
    fields: Mapping[str, str],
    key: str,
    low: float,
    high: float,
    default: float,
    *,
    integer: bool = False,
    first: bool = False,
) -> Any:
    """A number field within ``[low, high]``; ``default`` when missing or empty."""
    text = _field(fields, key)
    if first:
        text = text.split(",", 1)[0].strip()
    if not text:
        return default
    if len(text) > 32 or not _NUMBER.fullmatch(text):
        raise SkippedEntry("numbers", f"{key}={clip(text)!r} is not a number")
    value = float(text)
    if not (math.isfinite(value) and low <= value <= high) or (integer and value != int(value)):
        kind = "a whole number" if integer else "a number"
        raise SkippedEntry("numbers", f"{key}={clip(text)!r} is not {kind} in [{low:g}, {high:g}]")
    return int(value) if integer else value


def _position(fields: Mapping[str, str]) -> tuple[float, float, bool]:
    text = _field(fields, "gps")
    m = _GPS.fullmatch(text) if len(text) <= 100 else None
    if m is None:
        raise SkippedEntry("position", f"gps={clip(text)!r} is not (latitude, longitude)")
    lat, lon = float(m[1]), float(m[2])
    if not (math.isfinite(lat) and math.isfinite(lon) and abs(lat) <= 90 and abs(lon) <= 180):
        raise SkippedEntry("position", f"gps={clip(text)!r} is not on the Earth")
    if lat == 0 and lon == 0:
        raise SkippedEntry("position", "gps=(0, 0) means no position set")
    return lat, lon, m[3] is not None


def _is_ip_like(host: str) -> bool:
    return all(label.isdigit() for label in host.split("."))


def _address(url: str) -> tuple[str, int, bool]:
    text = url.strip()
    m = _URL.fullmatch(text) if len(text) <= 300 else None
    if m is None:
        raise SkippedEntry("url", f"url={clip(text)!r} is not http(s)://host:port")
    tls = m[1].lower() == "https"
    host = m[2].lower()
    try:
        check_host(host)
        if _is_ip_like(host):
            ipaddress.IPv4Address(host)
        port = check_port(int(m[3]) if m[3] else (443 if tls else 80))
    except (ValidationError, ValueError):
        raise SkippedEntry("url", f"url={clip(text)!r} has no valid host and port") from None
    return host, port, tls


def _bands(fields: Mapping[str, str]) -> tuple[float, float]:
    text = _field(fields, "bands")
    if not text:
        return 0.0, 30e6
    parts = text.split(",")
    matches = [_BAND.fullmatch(p) for p in parts] if len(parts) <= 16 else [None]
    if not all(matches):
        raise SkippedEntry("bands", f"bands={clip(text)!r} is not LOW-HIGH in Hz")
    lo = min(float(m[1]) for m in matches if m)
    hi = max(float(m[2]) for m in matches if m)
    if not 0 <= lo < hi <= MAX_BANDS_HZ:
        raise SkippedEntry("bands", f"bands={clip(text)!r} is not within 0-{MAX_BANDS_HZ:.0f} Hz")
    return lo, hi


def _parse_updated(text: str) -> np.datetime64:
    m = _UPDATED.fullmatch(text.strip()) if len(text) <= 64 else None
    if m is None or m[2].title() not in _MONTHS:
        return _nat()
    try:
        when = datetime(
            int(m[3]), _MONTHS.index(m[2].title()) + 1, int(m[1]), int(m[4]), int(m[5]), int(m[6])
        )
    except ValueError:
        return _nat()
    return np.datetime64(when, "s")


def _format_updated(t: np.datetime64) -> str:
    when = np.datetime64(t, "s").astype(datetime)
    return (
        f"{_DAYS[when.weekday()]}, {when.day:02d}-{_MONTHS[when.month - 1]}-{when.year:04d} "
        f"{when:%H:%M:%S} GMT"
    )


def _screen(fields: Mapping[str, str]) -> dict[str, str]:
    """The text fields, after the length and markup checks."""
    if len(fields) > MAX_FIELDS:
        raise SkippedEntry("too_long", f"{len(fields)} fields, over {MAX_FIELDS}")
    out: dict[str, str] = {}
    for key, value in fields.items():
        if not isinstance(key, str) or not isinstance(value, str):
            continue
        if len(key) > 64 or len(value) > MAX_FIELD_CHARS:
            raise SkippedEntry(
                "too_long", f"field {clip(key)!r} is over {MAX_FIELD_CHARS} characters"
            )
        out[key] = value
    if _MARKUP.search("\0".join(itertools.chain(out, out.values()))):
        key = next(k for k, v in out.items() if _MARKUP.search(k) or _MARKUP.search(v))
        raise SkippedEntry("markup", f"field {clip(key)!r} holds markup")
    return out


def _check(fields: Mapping[str, str], url: str | None = None) -> tuple[Entry, set[str]]:
    """The entry of one record, and the record quirks met."""
    raw = _screen(fields)
    quirks: set[str] = set()
    everything = "\0".join(raw.values())
    if '"' in everything:
        quirks.add("escaped_quote")
    if "<" in everything and _TAG.search(everything):
        quirks.add("html_tags")
    f = raw
    if not everything.isascii():
        if _EMOJI.search(everything):
            quirks.add("emoji")
        f = {k: _repair(v) for k, v in raw.items()}
        if f != raw:
            quirks.add("mojibake")
    latitude, longitude, zoom = _position(f)
    if zoom:
        quirks.add("zoom_suffix")
    if url is not None and not isinstance(url, str):
        raise SkippedEntry("url", f"url must be text, not {type(url).__name__}")
    host, port, tls = _address(url if url is not None else _field(f, "url"))
    if tls:
        quirks.add("https")
    lo, hi = _bands(f)
    users = _number(f, "users", 0, 1000, 0, integer=True)
    users_max = _number(f, "users_max", 0, 1000, 0, integer=True)
    gps_good = _number(f, "gps_good", 0, 100, 0, integer=True)
    fixes_min = _number(f, "fixes_min", 0, 100_000, 0, integer=True)
    fixes_hour = _number(f, "fixes_hour", 0, 1e9, 0, integer=True)
    fixes = _number(f, "fixes", 0, 1e12, 0, integer=True)
    tdoa_ch = _number(f, "tdoa_ch", -1, 1000, -1, integer=True)
    altitude = _number(f, "asl", -500, 10_000, math.nan)
    snr = _number(f, "snr", -50, 200, math.nan, first=True)
    sdr_hw = _field(f, "sdr_hw")
    name = _derive_name(f, host)
    entry = Entry(
        name=name,
        title=_clean_text(_field(f, "name")),
        host=host,
        port=port,
        tls=tls,
        latitude=latitude,
        longitude=longitude,
        min_frequency_hz=lo,
        max_frequency_hz=hi,
        users=users,
        users_max=users_max,
        has_gps=bool(_GPS_FLAG.search(sdr_hw)) or fixes_min > 0 or fixes_hour > 0 or fixes > 0,
        gps_good=gps_good,
        fixes_min=fixes_min,
        tdoa_id=_clean_text(_field(f, "tdoa_id")),
        tdoa_ch=tdoa_ch,
        time_limited=bool(_LIMITS_FLAG.search(sdr_hw)),
        antenna=_clean_text(_field(f, "antenna")),
        location_name=_clean_text(_field(f, "loc")),
        sw_version=_clean_text(_field(f, "sw_version")),
        snr_db=snr,
        altitude_m=altitude,
        offline=_field(f, "offline").lower() == "yes",
        password=_field(f, "auth").lower() == "password",
        ext_api=_field(f, "ext_api") != "0",
        directory_id=_clean_text(_field(f, "id"), 64),
        updated_utc=_parse_updated(_field(f, "updated")),
    )
    return entry, quirks


def entry_from_fields(fields: Mapping[str, str], url: str | None = None) -> Entry:
    """Turn a receiver's string fields into a checked :class:`Entry`.

    The fields are those of a directory record or of the receiver's own ``/status`` page.

    Parameters
    ----------
    fields : mapping of str to str
        ``url``, ``gps``, ``bands``, ``users``, ``users_max``, ``gps_good``, ``fixes_min``,
        ``fixes_hour``, ``tdoa_id``, ``tdoa_ch``, ``sdr_hw``, ``snr``, ``antenna``, ``loc``,
        ``name``, ``asl``, ``sw_version``, ``status``, ``offline``, ``auth``, ``ext_api``,
        ``id``, ``updated`` (others are checked for length and markup, then ignored).
    url : str, optional
        The receiver's address, ``http(s)://host[:port]``, when ``fields`` has none (a
        ``/status`` page does not); wins over ``fields["url"]``.

    Returns
    -------
    Entry
        The entry, named by :func:`receiver_name` (not yet made unique in a directory).

    Raises
    ------
    SkippedEntry
        If the entry cannot be a usable receiver; ``reason`` says why (:data:`REASONS`).

    Notes
    -----
    - ``gps`` is ``(lat, lon)``, possibly with a map zoom (``(50.85,4.31,12z)``); a missing,
      unreadable, non-finite or off-Earth position, or exactly (0, 0), is ``position``.
    - ``url`` is ``http`` or ``https`` with a host name or IPv4 address and an optional port
      (80 / 443 by default), without user information or a path beyond ``/``, else ``url``.
    - Numbers must be plain decimals within their plausible range (``users``, ``users_max``
      0-1000, ``gps_good`` 0-100, ``fixes_min`` 0-100000, ``tdoa_ch`` -1-1000, ``asl``
      -500-10000 m, ``snr`` -50-200 dB), else ``numbers``; ``bands`` must be within
      0-100 MHz with the low end below the high end, else ``bands``. A missing or empty
      number takes a safe default (0, -1 for ``tdoa_ch``, NaN for ``asl`` and ``snr``,
      0-30 MHz for ``bands``); ``users_max`` 0 means unknown: no free channel.
    - A field holding markup that could act when shown (a ``<script>``, ``<iframe>``,
      ``<object>`` ... tag, an ``on...=`` handler, ``javascript:``) is ``markup``; other
      tags (``<b>``, ``<br>``, ``<a href>``) are taken out of the text (quirk ``html_tags``);
      a field over :data:`MAX_FIELD_CHARS` characters is
      ``too_long``. Free text is repaired (UTF-8 read as Windows-1252), cleaned of control
      and format characters, whitespace collapsed, and cut to :data:`MAX_TEXT_CHARS`.
    - ``sdr_hw`` flags: ``GPS`` gives ``has_gps`` (so do fixes), ``Limits`` gives
      ``time_limited``; ``auth=password``, ``ext_api=0`` and ``offline=yes`` set
      ``password``, ``ext_api`` and ``offline``.

    Examples
    --------
    >>> e = entry_from_fields({"gps": "(47.38, 8.36)", "loc": "Hasenberg, Switzerland"},
    ...                       url="http://kiwi.example.org:8073")
    >>> e.name, e.port, e.users_max, e.free_channels
    ('Hasenberg', 8073, 0, 0)
    >>> try:
    ...     entry_from_fields({"gps": "(0, 0)"}, url="http://kiwi.example.org")
    ... except SkippedEntry as exc:
    ...     print(exc.reason)
    position
    """
    return _check(fields, url)[0]


# ---------------------------------------------------------------------------------------------
# Names

_CALLSIGN = re.compile(r"(?:[A-Z][A-Z0-9]{0,2}|[0-9][A-Z][A-Z0-9]?)[0-9][A-Z]{1,4}")
#: A Maidenhead grid locator (JN39KF, JN58oe): a place, not a receiver's name.
_LOCATOR = re.compile(r"[A-R]{2}[0-9]{2}(?:[A-X]{2}(?:[0-9]{2})?)?", re.IGNORECASE)
#: Antenna and product names that look like callsigns.
_NOT_CALLSIGNS = frozenset({"G5RV", "ZS6BKW", "W3DZZ", "T2FD", "HF2V", "HF6V", "HF9V"})
_TOKEN = re.compile(r"[A-Za-z0-9]+")


def _callsign(token: str) -> bool:
    return (
        bool(_CALLSIGN.fullmatch(token))
        and not _LOCATOR.fullmatch(token)
        and token not in _NOT_CALLSIGNS
    )


def _valid_name(name: str) -> bool:
    try:
        check_receiver_name(name)
    except ValidationError:
        return False
    return True


def _ascii_words(text: str, limit: int) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^A-Za-z0-9]+", "-", folded).strip("-")[:limit].strip("-")


def _derive_name(fields: Mapping[str, str], host: str | None) -> str:
    tdoa_id = _clean_text(_repair(_field(fields, "tdoa_id")))
    if (
        tdoa_id
        and len(tdoa_id) <= _TDOA_NAME_CHARS
        and _valid_name(tdoa_id)
        and not _LOCATOR.fullmatch(tdoa_id)
    ):
        return tdoa_id
    title = _clean_text(_repair(_field(fields, "name")))
    for token in _TOKEN.findall(title):
        if token.isupper() and _callsign(token):
            return token
    label = host.split(".", 1)[0] if host else ""
    if label and not _is_ip_like(host or "") and _callsign(label.upper()):
        return label.upper()
    loc = _clean_text(_repair(_field(fields, "loc"))).split(",", 1)[0]
    from_loc = _ascii_words(loc, _LOC_NAME_CHARS)
    if from_loc and _valid_name(from_loc) and not _LOCATOR.fullmatch(from_loc):
        return from_loc
    if host:
        name = host if _is_ip_like(host) else label
        if _valid_name(name):
            return name
    raise SkippedEntry("name", "no receiver name can be derived")


def receiver_name(fields: Mapping[str, str]) -> str:
    """The receiver name a directory record gives (before it is made unique).

    In order: (a) ``tdoa_id`` when it is a valid receiver name of at most 16 characters and
    not a Maidenhead locator (``JN58oe`` is a place);
    (b) the first amateur-radio callsign in the free-text ``name`` (an upper-case word such
    as ``G3SDR``, ``OE3AKB``, ``DK0TE``: a prefix of 1-3 letters and digits holding a letter,
    a digit, 1-4 letters; not a Maidenhead locator such as ``JN15LG``); (c) the host's first
    label when it looks like a callsign (``db3th.proxy.kiwisdr.com`` gives ``DB3TH``); (d)
    the location up to its first comma, letters and digits kept (accents dropped), the rest
    collapsed to ``-``, at most 24 characters, unless it is a locator (``North Shropshire UK``
    gives ``North-Shropshire-UK``); (e) the host's first label (an IP address whole).

    Parameters
    ----------
    fields : mapping of str to str
        The record's fields (``tdoa_id``, ``name``, ``url``, ``loc`` are used).

    Returns
    -------
    str
        A valid receiver name (:func:`heimdall_lab.ids.check_receiver_name`).

    Raises
    ------
    SkippedEntry
        With reason ``name`` if none of the rules gives one.

    Examples
    --------
    >>> receiver_name({"name": "ENJOY BY F4JOY | PRADIERS JN15LG, FRANCE",
    ...                "url": "http://f4joy.ddns.net:8073"})
    'F4JOY'
    >>> receiver_name({"loc": "Purmerend, Netherlands", "url": "http://92.108.29.14:8073"})
    'Purmerend'
    """
    try:
        host: str | None = _address(_field(fields, "url"))[0]
    except SkippedEntry:
        host = None
    return _derive_name(fields, host)


def unique_name(name: str, taken: set[str], port: int | None = None) -> str:
    """``name``, or a variant of it that is not taken (compared without case).

    Parameters
    ----------
    name : str
        A valid receiver name.
    taken : set of str
        Names in use, lower-cased.
    port : int, optional
        Tried first as the suffix (``-8074``), then ``-2``, ``-3``, ...

    Returns
    -------
    str
        A valid receiver name of at most 64 characters not in ``taken``.
    """
    if name.lower() not in taken:
        return name
    first = [f"-{port}"] if port is not None else []
    for suffix in itertools.chain(first, (f"-{n}" for n in itertools.count(2))):
        candidate = name[: 64 - len(suffix)].rstrip("-._") + suffix
        if candidate.lower() not in taken and _valid_name(candidate):
            return candidate
    raise AssertionError("unreachable")  # pragma: no cover


# ---------------------------------------------------------------------------------------------
# Reading the two forms


def _as_text(data: str | bytes, what: str) -> str:
    if isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
        if b"\0" in raw[:65536]:
            raise DirectoryError(f"{what} is not text (it holds NUL bytes)")
        text = raw.decode("utf-8", errors="replace")
        if text.count("\ufffd") > max(len(text) // 100, 8):
            raise DirectoryError(f"{what} is not UTF-8 text")
    elif isinstance(data, str):
        text = data
    else:
        raise DirectoryError(f"{what} must be text or bytes, not {type(data).__name__}")
    if "\0" in text:
        raise DirectoryError(f"{what} is not text (it holds NUL characters)")
    return text.removeprefix("\ufeff")


_STRING_BODY = re.compile(r'[^"\\\n]*(?:\\.[^"\\\n]*)*', re.DOTALL)
_COMMENT = r"//[^\n]*|(?>/\*.*?(?:\*/|\Z))"
_JS_TOKENS = re.compile(
    r'"[^"\\\n]*+(?:\\.[^"\\\n]*+)*+"?'  # a string (to its line's end if unclosed)
    rf"|{_COMMENT}"  # a comment
    rf"|,(?=(?:\s|{_COMMENT})*+[\]}}])",  # a trailing comma
    re.DOTALL,
)
_STRUCTURE = re.compile(r'["{}\[\]]')
_BLANK = re.compile(r"\s*")
_VAR = re.compile(r"(?:var|let|const)\s+[A-Za-z_$][\w$]*\s*=")
_ESCAPE = re.compile(r"\\(x[0-9A-Fa-f]{2}|.)", re.DOTALL)
_PUBLISHED = re.compile(r"data timestamp:\s*([^\n]{1,64})")


def _string_end(text: str, at: int) -> tuple[int, bool]:
    """Where the string whose quote is at ``at`` ends, and whether it is closed.

    An unclosed string ends at its line's end.
    """
    end = _STRING_BODY.match(text, at + 1).end()  # type: ignore[union-attr]
    if end < len(text) and text[end] == '"':
        return end + 1, True
    return end, False


def _comment_end(text: str, at: int) -> int:
    """The end of the ``//`` or ``/* */`` comment at ``at`` (``at`` when there is none)."""
    if text.startswith("//", at):
        end = text.find("\n", at)
        return len(text) if end < 0 else end
    if text.startswith("/*", at):
        end = text.find("*/", at + 2)
        return len(text) if end < 0 else end + 2
    return at


def _skip_blank(text: str, at: int) -> int:
    """The first position from ``at`` that is neither whitespace nor a comment."""
    while True:
        at = _BLANK.match(text, at).end()  # type: ignore[union-attr]
        end = _comment_end(text, at)
        if end == at:
            return at
        at = end


def _array_start(text: str) -> int | None:
    """Where the array starts, after comments and ``var name =``; None if it does not."""
    at = _skip_blank(text, 0)
    var = _VAR.match(text, at)
    if var:
        at = _skip_blank(text, var.end())
    return at if text.startswith("[", at) else None


class _Reading:
    """What reading one text found: records, syntax skips and quirks."""

    def __init__(self) -> None:
        self.records: list[dict[str, str]] = []
        self.read = 0
        self.skipped: Counter[str] = Counter()
        self.quirks: Counter[str] = Counter()
        self.published = _nat()

    def pairs(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(pairs)
        if len(out) != len(pairs):
            self.quirks["repeated_key"] += len(pairs) - len(out)
        return out

    def add(self, item: object) -> None:
        self.read += 1
        if not isinstance(item, dict):
            self.skipped["not_object"] += 1
            return
        record: dict[str, str] = {}
        for key, value in item.items():
            if isinstance(value, str):
                record[key] = value
            elif isinstance(value, int | float) and not isinstance(value, bool):
                record[key] = str(value)
            else:
                self.quirks["non_string"] += 1
        self.records.append(record)


def _fix_escape(m: re.Match[str]) -> str:
    r"""One string escape as JSON has it.

    ``\xHH`` becomes ``\u00HH``; ``\'`` (and any other JavaScript-only escape) the character.
    """
    s = m[1]
    if s in _JSON_ESCAPES:
        return m[0]
    return f"\\u00{s[1:]}" if len(s) == 3 else s


_JSON_ESCAPES = frozenset('"\\/bfnrtu')


def _clean_js(text: str, reading: _Reading) -> str:
    """The text as JSON: comments and trailing commas out, JavaScript-only escapes made JSON.

    Strings are otherwise left alone. Every token pattern matches wherever it starts (an
    unclosed string ends at its line's end, an unclosed comment at the text's end), so the
    pass is linear in the text, whatever it holds.
    """

    def token(m: re.Match[str]) -> str:
        s = m[0]
        c = s[0]
        if c == '"':
            if "\\" in s:
                fixed = _ESCAPE.sub(_fix_escape, s)
                if fixed != s:
                    reading.quirks["bad_escape"] += 1
                return fixed
            return s
        if c == ",":
            reading.quirks["trailing_comma"] += 1
            return ""
        reading.quirks["comment"] += 1
        return " "

    return _JS_TOKENS.sub(token, text)


def _read_js(text: str, what: str) -> _Reading:
    reading = _Reading()
    published = _PUBLISHED.search(text[:2000])
    if published:
        reading.published = _parse_updated(published[1])
    clean = _clean_js(text, reading)
    at = _array_start(clean)
    if at is None:  # pragma: no cover - parse() checked the head
        raise DirectoryError("the directory's array is missing")
    decoder = json.JSONDecoder(object_pairs_hook=reading.pairs, strict=False)
    try:
        value, end = decoder.raw_decode(clean, at)
    except (ValueError, RecursionError):
        reading.quirks.pop("repeated_key", None)
        _read_objects(clean, at, decoder, reading)
        if not reading.records and reading.read == reading.skipped["syntax"]:
            raise DirectoryError(f"{what}: its array cannot be decoded, no object in it") from None
        return reading
    if clean[end:].strip() not in ("", ";"):
        reading.quirks["trailing_text"] += 1
    for item in value:
        reading.add(item)
    return reading


def _read_objects(clean: str, at: int, decoder: json.JSONDecoder, reading: _Reading) -> None:
    """Decode the array object by object, so that a broken object costs only itself."""
    depth = 0
    start = -1
    i = at + 1
    while True:
        m = _STRUCTURE.search(clean, i)
        if m is None:
            break
        j = m.start()
        tok = clean[j]
        i = j + 1
        if tok == '"':
            i, _closed = _string_end(clean, j)
        elif tok in "{[":
            if depth == 0 and tok == "{":
                start = j
            depth += 1
        elif depth == 0:
            break  # the end of the array
        else:
            depth -= 1
            if depth == 0 and start >= 0:
                _decode_object(clean[start:i], decoder, reading)
                start = -1
    if start >= 0:  # an object cut short: the text ends inside it
        reading.read += 1
        reading.skipped["syntax"] += 1


def _decode_object(text: str, decoder: json.JSONDecoder, reading: _Reading) -> None:
    try:
        item = decoder.decode(text)
    except (ValueError, RecursionError):
        reading.read += 1
        reading.skipped["syntax"] += 1
        return
    reading.add(item)


_COMMENT_REF = re.compile(r"&(amp|lt|gt|#[0-9]{1,7}|#[xX][0-9A-Fa-f]{1,6});")
_NAMED_REFS = {"amp": "&", "lt": "<", "gt": ">"}


def _comment_ref(m: re.Match[str]) -> str:
    ref = m[1]
    if ref in _NAMED_REFS:
        return _NAMED_REFS[ref]
    code = int(ref[2:], 16) if ref[1] in "xX" else int(ref[1:])
    return chr(code) if code < 0x110000 else "\ufffd"


def _comment_unescape(text: str) -> str:
    """A comment's value, its ``&amp;``, ``&lt;``, ``&gt;`` and numeric references decoded.

    Other references are kept as written (a browser decodes nothing in a comment).
    """
    return _COMMENT_REF.sub(_comment_ref, text) if "&" in text else text


class _PageReader(HTMLParser):
    """The ``cl-entry`` divs of the kiwisdr.com/public page: comments and links."""

    def __init__(self, reading: _Reading) -> None:
        super().__init__(convert_charrefs=True)
        self.reading = reading
        self.entries = 0
        self._fields: dict[str, str] | None = None
        self._hrefs: list[str] = []
        self._depth = 0
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "div":
            classes = (dict(attrs).get("class") or "").split()
            if "cl-entry" in classes:
                self._finish()
                self._fields, self._hrefs, self._depth = {}, [], 1
                self.entries += 1
            elif self._fields is not None:
                self._depth += 1
        elif tag == "a" and self._fields is not None:
            href = dict(attrs).get("href")
            if href:
                self._hrefs.append(href)

    def handle_endtag(self, tag: str) -> None:
        if tag == "div" and self._fields is not None:
            self._depth -= 1
            if self._depth <= 0:
                self._finish()

    def handle_comment(self, data: str) -> None:
        if self._fields is None:
            return
        key, sep, value = data.partition("=")
        key = key.strip()
        if not sep or not _KEY.fullmatch(key):
            return
        if key in self._fields:
            self.reading.quirks["repeated_key"] += 1
        self._fields[key] = _comment_unescape(value.strip())

    def handle_data(self, data: str) -> None:
        if self._fields is None and len(self._text) < 4 and data.strip():
            self._text.append(data.strip())

    def _finish(self) -> None:
        if self._fields is None:
            return
        record = self._fields
        if self._hrefs and "url" not in record:
            record["url"] = self._hrefs[0].strip()
        self.reading.add(record)
        self._fields = None

    def close(self) -> None:
        super().close()
        self._finish()
        for text in self._text:
            when = _parse_updated(text)
            if not np.isnat(when):
                self.reading.published = when
                break


_ODD_DECLARATION = re.compile(r"<!(?!--|doctype)", re.IGNORECASE)


def _tame_html(text: str) -> str:
    """The page without what makes the standard parser slow (quadratic) on hostile input.

    An unclosed comment and everything after it, and anything after the last ``>``, are cut
    (no tag can be completed there); ``<!`` declarations other than comments and the
    doctype (marked sections, which a directory page never has) are made text.
    """
    end = len(text)
    at = text.find("<!--")
    while at >= 0:
        close = text.find("-->", at + 4)
        if close < 0:
            end = at
            break
        at = text.find("<!--", close + 3)
    text = text[:end]
    text = text[: text.rfind(">") + 1]
    return _ODD_DECLARATION.sub("&lt;!", text)


def _read_html(text: str, what: str) -> _Reading:
    reading = _Reading()
    reader = _PageReader(reading)
    try:
        reader.feed(_tame_html(text))
        reader.close()
    except (AssertionError, ValueError) as exc:  # the stdlib parser gives up on some input
        raise DirectoryError(f"{what} is not a readable HTML page: {clip(exc, 80)}") from None
    if reader.entries == 0:
        raise DirectoryError(
            f"{what} is an HTML page without receivers (no <div class='cl-entry'>); is it the "
            "kiwisdr.com/public page?"
        )
    return reading


def parse(text: str | bytes, source: str = "") -> Directory:
    """Read the directory in either published form.

    The form is detected: the JavaScript array map makers publish (``//`` comments, ``var
    kiwisdr_com =``, objects with trailing commas and the odd repeated key) or the
    kiwisdr.com/public HTML page (a ``<div class='cl-entry ...'>`` per receiver, holding
    ``<!-- key=value -->`` comments and an ``<a href='http://host:port'>`` link). Each
    record goes through :func:`entry_from_fields`; a record that cannot be a usable receiver
    is counted in ``skipped`` and left out. When the array as a whole cannot be decoded (a
    truncated file, one broken object) it is decoded object by object, so one broken object
    costs only itself. Entries with the same ``host:port`` are collapsed to the most recently
    ``updated``; names are made unique in directory order (the first keeps the name, later
    ones get ``-<port>``, else ``-2``, ``-3``, ...).

    Parameters
    ----------
    text : str or bytes
        The directory (bytes are read as UTF-8).
    source : str, optional
        Where it came from, for messages and :attr:`Directory.source`.

    Returns
    -------
    Directory
        The entries and the counts; ``retrieved_utc`` is now.

    Raises
    ------
    DirectoryError
        If the text is neither form (or not text at all).
    """
    what = f"directory {clip(source, 120)}" if source else "the directory"
    text = _as_text(text, what)
    head = text[:4096].lstrip()
    if _array_start(text) is not None:
        reading = _read_js(text, what)
    elif head.startswith("<") or "cl-entry" in text:
        reading = _read_html(text, what)
    else:
        raise DirectoryError(
            f"{what} is neither the directory's JavaScript array nor its HTML page (it starts "
            f"{clip(head[:40], 40)!r})"
        )
    return _build(reading, source)


def _build(reading: _Reading, source: str) -> Directory:
    entries: list[Entry] = []
    by_address: dict[tuple[str, int], int] = {}
    skipped = reading.skipped
    quirks = reading.quirks
    for record in reading.records:
        try:
            entry, found = _check(record)
        except SkippedEntry as exc:
            skipped[exc.reason] += 1
            continue
        quirks.update(found)
        key = (entry.host, entry.port)
        if key in by_address:
            quirks["duplicate_url"] += 1
            at = by_address[key]
            kept = entries[at].updated_utc
            if not np.isnat(entry.updated_utc) and (np.isnat(kept) or entry.updated_utc > kept):
                entries[at] = entry
            continue
        by_address[key] = len(entries)
        entries.append(entry)
    taken: set[str] = set()
    named = []
    for entry in entries:
        name = unique_name(entry.name, taken, entry.port)
        taken.add(name.lower())
        named.append(entry if name == entry.name else replace(entry, name=name))
    return Directory(
        entries=tuple(named),
        read=reading.read,
        skipped={k: v for k, v in _ranked(skipped)},
        quirks={k: v for k, v in _ranked(quirks)},
        source=source,
        retrieved_utc=_utc_now(),
        published_utc=reading.published,
    )


def _utc_now() -> np.datetime64:
    return np.datetime64(time.time_ns(), "ns").astype("datetime64[ms]")


def _utc_at(unix_s: float) -> np.datetime64:
    return np.datetime64(round(unix_s * 1000), "ms")


# ---------------------------------------------------------------------------------------------
# Writing the two forms


def _num(x: float) -> str:
    x = float(x)
    return str(int(x)) if x.is_integer() and abs(x) < 1e15 else repr(x)


def entry_fields(entry: Entry) -> dict[str, str]:
    """An entry back as directory fields: the inverse of :func:`entry_from_fields`.

    Parameters
    ----------
    entry : Entry
        The entry.

    Returns
    -------
    dict of str to str
        ``updated``, ``id``, ``status``, ``offline``, ``name``, ``sdr_hw``, ``bands``,
        ``users``, ``users_max``, ``gps``, ``gps_good``, ``fixes_min``, ``tdoa_id``,
        ``tdoa_ch``, ``asl``, ``loc``, ``sw_version``, ``antenna``, ``snr``, ``auth``,
        ``ext_api``, ``url`` (``updated``, ``id``, ``asl``, ``snr`` and ``auth`` only when
        known). ``entry_from_fields(entry_fields(e))`` equals ``e`` up to the name, which is
        derived again.
    """
    out: dict[str, str] = {}
    if not np.isnat(entry.updated_utc):
        out["updated"] = _format_updated(entry.updated_utc)
    if entry.directory_id:
        out["id"] = entry.directory_id
    flags = ["KiwiSDR"]
    if entry.has_gps:
        flags.append("\U0001f4e1 GPS")
    if entry.time_limited:
        flags.append("\u23f3 Limits")
    out |= {
        "status": "active",
        "offline": "yes" if entry.offline else "no",
        "name": entry.title,
        "sdr_hw": " ".join(flags),
        "bands": f"{_num(entry.min_frequency_hz)}-{_num(entry.max_frequency_hz)}",
        "users": str(entry.users),
        "users_max": str(entry.users_max),
        "gps": f"({_num(entry.latitude)}, {_num(entry.longitude)})",
        "gps_good": str(entry.gps_good),
        "fixes_min": str(entry.fixes_min),
        "tdoa_id": entry.tdoa_id,
        "tdoa_ch": str(entry.tdoa_ch),
    }
    if math.isfinite(entry.altitude_m):
        out["asl"] = _num(entry.altitude_m)
    out |= {"loc": entry.location_name, "sw_version": entry.sw_version, "antenna": entry.antenna}
    if math.isfinite(entry.snr_db):
        out["snr"] = f"{_num(entry.snr_db)},{_num(entry.snr_db)}"
    if entry.password:
        out["auth"] = "password"
    out["ext_api"] = "1" if entry.ext_api else "0"
    out["url"] = entry.url
    return out


_JS_UNSAFE = re.compile("[<>&\u2028\u2029\ud800-\udfff]")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def _js_string(value: str) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return _JS_UNSAFE.sub(lambda m: f"\\u{ord(m[0]):04x}", text)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:200]


def render_js(records: Iterable[Mapping[str, str]], generated: str = "") -> str:
    r"""The directory as the JavaScript array map makers publish (``kiwisdr_com.js``).

    Parameters
    ----------
    records : iterable of mapping of str to str
        One mapping of fields per receiver (as :func:`entry_fields` gives, or raw records).
        Non-text values are written as text.
    generated : str, optional
        A generation timestamp for the header comment.

    Returns
    -------
    str
        ``//`` header comments, ``var kiwisdr_com =``, one object per record (the trailing
        comma after the last object included, as the original has), ``;``. Every string is
        escaped (``<``, ``>``, ``&`` and line separators as ``\uXXXX``), so the file is
        also safe inside a ``<script>`` element.
    """
    lines = ["// KiwiSDR.com receiver list for dyatlov map maker (written by heimdall_lab)"]
    if generated:
        lines.append(f"// File generation timestamp: {_one_line(generated)}")
    lines += ["", "var kiwisdr_com =", "["]
    for record in records:
        lines.append("\t{")
        items = [f"\t\t{_js_string(str(k))}:{_js_string(str(v))}" for k, v in record.items()]
        lines.append(",\n".join(items))
        lines.append("\t},")
    lines += ["]", ";", ""]
    return "\n".join(lines)


_HTML_UNSAFE = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")


def _html_text(value: object, quote: bool = False) -> str:
    """Text for a page, escaped.

    ``&``, ``<``, ``>`` (and quotes) as references, control characters and lone surrogates
    as numeric references (read back by :func:`_comment_unescape`).
    """
    text = html.escape(str(value), quote=quote)
    return _HTML_UNSAFE.sub(lambda m: f"&#{ord(m[0])};", text)


def render_html(records: Iterable[Mapping[str, str]], generated: str = "") -> str:
    """The directory as the kiwisdr.com/public HTML page.

    Parameters
    ----------
    records : iterable of mapping of str to str
        One mapping of fields per receiver (as :func:`entry_fields` gives, or raw records).
    generated : str, optional
        The data timestamp written at the top of the page.

    Returns
    -------
    str
        One ``<div class='cl-entry'>`` per record: its fields as ``<!-- key=value -->``
        comments (``&``, ``<``, ``>`` and control characters escaped, keys that are not
        words left out), its ``url`` also as the links, its ``name`` as the shown title.
        A page without records is not read back as a directory (an error page has no
        receivers either): serve :func:`render_js` for an empty directory.
    """
    out = [
        "<!DOCTYPE html>",
        "<html><head><meta charset='utf-8'><title>KiwiSDR: public receivers</title></head>",
        "<body>",
        f"{_html_text(_one_line(generated))}<br>" if generated else "<br>",
    ]
    for seq, record in enumerate(records):
        url = _html_text(record.get("url", ""), quote=True)
        title = _html_text(_one_line(record.get("name", "")))
        out.append(f"<div class='cl-entry seq_{seq}'>")
        out.append(f"<a href='{url}' target='_blank'><div class='cl-avatar'></div></a>")
        out.append("<div class='cl-info'>")
        for key, value in record.items():
            if _KEY.fullmatch(str(key)):
                out.append(f"<!-- {key}={_html_text(value)} -->")
        out.append("</div>")
        out.append(f"<div class='cl-name'><a href='{url}' target='_blank'>{title}</a></div>")
        out.append("</div>")
    out += ["</body>", "</html>", ""]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# Loading: files, URLs, the cache


class _FetchError(Exception):
    """The directory could not be fetched (the message says why)."""


def _age_text(age_s: float) -> str:
    if age_s < 90:
        return f"{age_s:.0f} s"
    if age_s < 90 * 60:
        return f"{age_s / 60:.0f} min"
    if age_s < 48 * 3600:
        return f"{age_s / 3600:.1f} h"
    return f"{age_s / 86400:.1f} days"


def load(
    source: str | os.PathLike[str],
    *,
    timeout_s: float = 10.0,
    cache: bool = True,
    max_bytes: int = MAX_BYTES,
) -> Directory:
    """Read the directory from a file or an ``http(s)://`` URL.

    A fetched URL is kept under ``home.home_path("cache")`` (``directory/<hash>.body``, with
    a small ``.json`` of the fetch time and the URL with credentials masked). When the fetch
    fails (no answer, a timeout, an HTTP error, an answer that is not a directory) the last
    cached copy is used: ``from_cache=True``, ``age_s`` set, and a warning logged with its age.

    Parameters
    ----------
    source : str or path-like
        A file, or an ``http://`` / ``https://`` URL (e.g. ``http://kiwisdr.com/.public/``).
    timeout_s : float, default 10.0
        Seconds for the whole fetch, however slowly the answer arrives (checked between
        pieces; one silent wait may take as long again).
    cache : bool, default True
        Keep the fetched copy, and fall back on it.
    max_bytes : int, default 16 MiB
        The largest file or answer read.

    Returns
    -------
    Directory
        With ``source`` (a URL masked), ``retrieved_utc`` (a file's modification time, a
        cached copy's fetch time), ``from_cache`` and ``age_s``.

    Raises
    ------
    DirectoryError
        If a file does not exist, cannot be read, is over ``max_bytes`` or is not a
        directory; if a URL gives no directory and there is no cached copy (the message
        names the URL, masked, and the reason); for a URL scheme other than http(s).
    """
    timeout_s = positive(timeout_s, "timeout_s")
    max_bytes = positive(max_bytes, "max_bytes", whole=True)
    text = os.fspath(source)
    if not isinstance(text, str):
        raise DirectoryError(f"directory source must be a path or URL, not {clip(text)!r}")
    scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", text)
    if scheme:
        if scheme[1].lower() not in ("http", "https"):
            raise DirectoryError(
                f"directory URL {_shown_url(text)!r}: only http:// and https:// are read"
            )
        return _load_url(text, timeout_s, cache, max_bytes)
    return _load_file(Path(text), max_bytes)


def _load_file(path: Path, max_bytes: int) -> Directory:
    try:
        st = path.stat()
        if not path.is_file():
            raise DirectoryError(f"directory file {path} is not a file")
        if st.st_size > max_bytes:
            raise DirectoryError(
                f"directory file {path} is {st.st_size} bytes, over the limit of {max_bytes}"
            )
        with path.open("rb") as f:
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise DirectoryError(f"directory file {path} does not exist") from None
    except OSError as exc:
        raise DirectoryError(f"directory file {path} cannot be read: {exc.strerror}") from None
    if len(data) > max_bytes:
        raise DirectoryError(f"directory file {path} is over the limit of {max_bytes} bytes")
    directory = parse(data, source=str(path))
    return replace(
        directory,
        retrieved_utc=_utc_at(st.st_mtime),
        age_s=max(time.time() - st.st_mtime, 0.0),
    )


def _cache_paths(url: str) -> tuple[Path, Path]:
    folder = home.home_path("cache") / "directory"
    digest = hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return folder / f"{digest}.body", folder / f"{digest}.json"


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_cache(url: str, data: bytes) -> None:
    body, meta = _cache_paths(url)
    fetched = time.time()
    info = {
        "url": _shown_url(url),
        "fetched_unix": fetched,
        "fetched_utc": datetime.fromtimestamp(fetched, UTC).isoformat(),
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    try:
        _write_atomic(body, data)
        _write_atomic(meta, json.dumps(info).encode())
    except OSError as exc:
        log.warning("cannot keep a copy of %s in %s: %s", _shown_url(url), body.parent, exc)


def _read_cache(url: str, max_bytes: int) -> tuple[Directory, float] | None:
    body, meta = _cache_paths(url)
    try:
        st = body.stat()
        if st.st_size > max_bytes:
            return None
        data = body.read_bytes()
    except OSError:
        return None
    fetched = st.st_mtime
    try:
        info = json.loads(meta.read_text(encoding="utf-8"))
        value = float(info["fetched_unix"])
        if math.isfinite(value) and 0 < value <= time.time() + 60:
            fetched = value
    except (OSError, ValueError, TypeError, KeyError):
        pass
    try:
        directory = parse(data, source=_shown_url(url))
    except DirectoryError as exc:
        log.warning("the cached copy of %s is not usable: %s", _shown_url(url), exc)
        return None
    return directory, fetched


def _shown_url(url: str) -> str:
    """The URL as it may be shown: credentials masked, unprintable characters escaped."""
    masked = mask_url(url)
    if not masked.isprintable():
        masked = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in masked)
    return clip(masked, 300)


def _load_url(url: str, timeout_s: float, cache: bool, max_bytes: int) -> Directory:
    masked = _shown_url(url)
    try:
        data = _fetch(url, timeout_s, max_bytes)
        directory = parse(data, source=masked)
    except (_FetchError, DirectoryError) as exc:
        # Secrets known by value, masked even outside a URL (not the shortest: every "p"
        # of a one-letter password would go).
        secrets = [s for s in secrets_in(url) if len(s) >= 4]
        reason = _one_line(redact(exc, secrets))
        cached = _read_cache(url, max_bytes) if cache else None
        if cached is None:
            tail = "" if not cache else "; there is no cached copy to fall back on"
            raise DirectoryError(
                f"cannot read the KiwiSDR directory at {masked}: {reason}{tail}"
            ) from None
        directory, fetched = cached
        age_s = max(time.time() - fetched, 0.0)
        log.warning("using the copy of %s from %s ago: %s", masked, _age_text(age_s), reason)
        return replace(directory, from_cache=True, age_s=age_s, retrieved_utc=_utc_at(fetched))
    if cache and len(directory):  # an empty answer never replaces a good copy
        _write_cache(url, data)
    return directory


def _fetch(url: str, timeout_s: float, max_bytes: int) -> bytes:
    """The answer's bytes, following redirects within http(s), never https to http."""
    deadline = time.monotonic() + timeout_s
    headers = {
        "Accept-Encoding": "identity",
        "Accept": "text/html, application/javascript, text/plain, */*",
        "User-Agent": f"heimdall-lab/{__version__}",
    }
    current = url
    try:
        with httpx.Client(timeout=timeout_s, headers=headers, follow_redirects=False) as client:
            for _hop in range(6):
                remaining = max(deadline - time.monotonic(), 0.001)
                with client.stream("GET", current, timeout=remaining) as response:
                    if response.is_redirect:
                        current = _redirect(current, response.headers.get("location", ""))
                        continue
                    return _body(response, deadline, timeout_s, max_bytes)
            raise _FetchError("more than 5 redirects")
    except httpx.TimeoutException as exc:
        raise _FetchError(f"no answer within {timeout_s:g} s ({type(exc).__name__})") from None
    except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError, OSError, ValueError) as exc:
        # ValueError: what httpx lets through for some URLs (a UnicodeError for a host the
        # IDNA codec refuses).
        raise _FetchError(f"{type(exc).__name__}: {clip(exc, 160)}") from None


def _redirect(current: str, location: str) -> str:
    if not location:
        raise _FetchError("a redirect without a Location")
    target = urljoin(current, location.strip())
    scheme = target.split(":", 1)[0].lower()
    if scheme not in ("http", "https"):
        raise _FetchError(f"a redirect to a {clip(scheme, 20)!r} URL")
    if current.lower().startswith("https:") and scheme == "http":
        raise _FetchError("a redirect from https to plain http")
    return target


def _body(response: httpx.Response, deadline: float, timeout_s: float, max_bytes: int) -> bytes:
    if response.status_code != 200:
        raise _FetchError(f"HTTP {response.status_code} {clip(response.reason_phrase, 60)}")
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise _FetchError(f"the answer is {clip(encoding, 20)}-encoded although identity was asked")
    length = response.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise _FetchError(f"the answer is {length} bytes, over the limit of {max_bytes} bytes")
    body = bytearray()
    for chunk in response.iter_raw():
        body += chunk
        if len(body) > max_bytes:
            raise _FetchError(f"the answer is over the limit of {max_bytes} bytes")
        if time.monotonic() > deadline:
            raise _FetchError(f"no complete answer within {timeout_s:g} s")
    return bytes(body)
