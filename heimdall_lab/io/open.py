"""One door to a capture, wherever it is: ``open_capture`` (like ``xarray.open_dataset``)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import xarray as xr

from heimdall_lab.errors import ValidationError
from heimdall_lab.ids import is_capture_id
from heimdall_lab.io.kiwi_wav import import_kiwi_wav
from heimdall_lab.io.sigmf import import_sigmf
from heimdall_lab.receivers import Receiver
from heimdall_lab.store import CAPTURES, IQStore

__all__ = ["open_capture"]

_SIGMF = (".sigmf-meta", ".sigmf-data", ".sigmf-collection")

Source = str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | xr.Dataset


def _kind(paths: list[Path]) -> str:
    suffixes = {p.suffix.lower() for p in paths}
    if suffixes <= {".wav"}:
        return "wav"
    if suffixes <= set(_SIGMF):
        return "sigmf"
    raise ValidationError(
        f"cannot open {', '.join(p.name for p in paths[:3])}: give kiwi IQ WAV files, SigMF "
        "files, a .zarr folder, a folder of these, or a stored capture id"
    )


def _folder(path: Path) -> list[Path]:
    wavs = sorted(path.glob("*.wav"))
    if wavs:
        return wavs
    metas = sorted(path.glob("*.sigmf-collection")) or sorted(path.glob("*.sigmf-meta"))
    if metas:
        return metas
    raise ValidationError(f"{path} holds no kiwi IQ WAV or SigMF files")


def open_capture(
    source: Source,
    *,
    iq_url: str | None = None,
    receivers: Mapping[str, Receiver | tuple[float, float]] | None = None,
    frequency_hz: float | None = None,
) -> xr.Dataset:
    """Open a capture as its Dataset: by store id, ``.zarr`` path, SigMF or kiwi WAV files.

    Parameters
    ----------
    source : str, path, iterable of paths or xarray.Dataset
        A capture id in the IQ store; a ``<id>.zarr`` folder; one or more ``.sigmf-meta`` /
        ``.sigmf-data`` / ``.sigmf-collection`` files; one or more kiwirecorder ``*_iq.wav``
        files; or a folder holding WAV or SigMF files. A Dataset is returned as it is.
    iq_url : str, optional
        IQ store for a capture id (default: :func:`heimdall_lab.store.default_iq_url`).
    receivers : mapping, optional
        Kiwi WAV files: receiver positions by name (else read from ``gnss_pos/<NAME>.txt``,
        see :func:`heimdall_lab.io.kiwi_wav.read_gnss_pos`).
    frequency_hz : float, optional
        Kiwi WAV files: the centre frequency when the file names do not give it.

    Returns
    -------
    xarray.Dataset
        The capture Dataset (``iq`` lazy for a stored capture).

    Raises
    ------
    ValidationError
        If the source is none of these.
    StorageError
        If a stored capture is missing or incomplete.
    FileFormatError
        If a file is not what its name says.
    """
    if isinstance(source, xr.Dataset):
        return source
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if path.is_dir() and path.suffix == ".zarr":
            if path.parent.name == CAPTURES:  # inside a store: its completion marker counts
                return IQStore(str(path.parent.parent.resolve())).open(path.stem)
            return xr.open_zarr(path)
        if path.is_dir():
            paths = _folder(path)
        elif path.is_file():
            paths = [path]
        elif isinstance(source, str) and is_capture_id(source):  # ids may hold '.', e.g. run.v2
            return IQStore(iq_url).open(source)
        else:
            raise ValidationError(f"no capture, file or folder {str(source)[:200]!r}")
    else:
        paths = [Path(p) for p in source]
        if not paths:
            raise ValidationError("no files given")
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise ValidationError(f"no such file: {missing[0]}")
    if _kind(paths) == "wav":
        return import_kiwi_wav(paths, receivers, frequency_hz)
    return import_sigmf(paths)
