"""File formats to and from the capture Dataset (kiwirecorder WAV, SigMF) and ``open_capture``."""

from __future__ import annotations

from heimdall_lab.io.kiwi_wav import (
    import_kiwi_wav,
    read_kiwi_wav,
    write_kiwi_wav,
    write_kiwi_wavs,
)
from heimdall_lab.io.open import open_capture
from heimdall_lab.io.sigmf import export_sigmf, import_sigmf

__all__ = [
    "export_sigmf",
    "import_kiwi_wav",
    "import_sigmf",
    "open_capture",
    "read_kiwi_wav",
    "write_kiwi_wav",
    "write_kiwi_wavs",
]
