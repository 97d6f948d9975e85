"""Bundled real data to learn and test with, like ``xarray.tutorial``.

The DCF77 set: three real kiwirecorder IQ recordings made at the same moment
(2017-11-27 10:41:56 UTC) by three public KiwiSDR receivers tuned to the DCF77 time-signal
transmitter (77.5 kHz, Mainflingen, Germany). Its README (``dcf77_dir() / "README.md"``) gives
the source and the format.

The directory snapshot: the public list of KiwiSDR receivers as published on 2025-12-31
(950 receivers), the real map of the network, in the JavaScript form that
:func:`heimdall_lab.directory.load` reads; its README gives the source, the attribution and
the format's quirks. The seven default receivers were chosen from it.

Examples
--------
>>> from heimdall_lab import tutorial
>>> sorted(tutorial.DCF77_POSITIONS)
['DF0KL', 'F1JEK', 'HB9RYZ']
>>> len(tutorial.dcf77_files())
3
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import xarray as xr

__all__ = [
    "DCF77_FREQUENCY_HZ",
    "DCF77_POSITIONS",
    "DCF77_TRANSMITTER",
    "dcf77_dir",
    "dcf77_files",
    "directory_snapshot",
    "open_dcf77",
]

#: DCF77's carrier, Hz.
DCF77_FREQUENCY_HZ = 77_500.0
#: The transmitter's position (latitude, longitude), degrees WGS84: Mainflingen.
DCF77_TRANSMITTER = (50.0152, 9.0112)
#: The three receivers' positions (latitude, longitude), degrees, as their GNSS reported.
DCF77_POSITIONS: dict[str, tuple[float, float]] = {
    "DF0KL": (53.665337, 7.282766),
    "F1JEK": (45.779290, 0.614638),
    "HB9RYZ": (47.1721, 8.42683),
}


def dcf77_dir() -> Path:
    """The folder of the DCF77 set (``iq/``, ``gnss_pos/``, ``README.md``).

    Returns
    -------
    pathlib.Path
        Inside the installed package.
    """
    return Path(str(files("heimdall_lab.tutorial") / "kiwi-dcf77-2017"))


def dcf77_files() -> list[Path]:
    """The three kiwi IQ WAV files of the DCF77 set, sorted by name.

    Returns
    -------
    list of pathlib.Path
        ``<time>_77500_<receiver>_iq.wav`` files.
    """
    return sorted((dcf77_dir() / "iq").glob("*_iq.wav"))


def directory_snapshot() -> Path:
    """The public KiwiSDR directory as published on 2025-12-31 (950 receivers).

    Returns
    -------
    pathlib.Path
        ``kiwisdr_com-2025-12-31.js`` inside the installed package; its ``README.md`` beside
        it gives the source and the format.
    """
    return Path(str(files("heimdall_lab.tutorial") / "kiwisdr-directory")) / (
        "kiwisdr_com-2025-12-31.js"
    )


def open_dcf77() -> xr.Dataset:
    """The DCF77 set as one capture Dataset, with the receivers' positions.

    Returns
    -------
    xarray.Dataset
        What :func:`heimdall_lab.open_capture` gives for the three files.
    """
    from heimdall_lab.io.kiwi_wav import import_kiwi_wav

    return import_kiwi_wav(dcf77_files(), DCF77_POSITIONS)
