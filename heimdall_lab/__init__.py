"""heimdall_lab: locate radio transmitters with a network of public KiwiSDR receivers.

The names a notebook needs::

    import heimdall_lab as hl

    from heimdall_lab.emulate import emulated

    with emulated(seed=0) as emu:                  # or receivers from the database
        cap = hl.capture(10e6, 10, **emu.capture_options)
    ds = hl.open_capture(cap.capture_id)          # or a .zarr path, SigMF or kiwi WAV files
    result = hl.locate(hl.tutorial.dcf77_files())  # the bundled DCF77 recordings
    hl.CaptureForm()                               # the ipywidgets form
    print(hl.show_versions())
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from heimdall_lab.versions import __version__, show_versions

if TYPE_CHECKING:
    from heimdall_lab import tutorial
    from heimdall_lab.errors import HeimdallError
    from heimdall_lab.io.open import open_capture
    from heimdall_lab.localize.tdoa import locate
    from heimdall_lab.pipeline import Capture, capture
    from heimdall_lab.receivers import Receiver
    from heimdall_lab.ui.widgets import CaptureForm

__all__ = [
    "Capture",
    "CaptureForm",
    "HeimdallError",
    "Receiver",
    "__version__",
    "capture",
    "locate",
    "open_capture",
    "show_versions",
    "tutorial",
]

#: Where each name of the front door lives. They are imported on first use: ``import
#: heimdall_lab`` stays light, so the command line starts (and can be interrupted) at once.
_HOMES = {
    "Capture": "heimdall_lab.pipeline",
    "CaptureForm": "heimdall_lab.ui.widgets",
    "HeimdallError": "heimdall_lab.errors",
    "Receiver": "heimdall_lab.receivers",
    "capture": "heimdall_lab.pipeline",
    "locate": "heimdall_lab.localize.tdoa",
    "open_capture": "heimdall_lab.io.open",
}


def __getattr__(name: str) -> Any:
    if name == "tutorial":
        return importlib.import_module("heimdall_lab.tutorial")
    if name in _HOMES:
        value = getattr(importlib.import_module(_HOMES[name]), name)
        globals()[name] = value  # the next lookup is a plain attribute
        return value
    raise AttributeError(f"module 'heimdall_lab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
