"""The data home: the one folder of local state, the same from every working directory.

Everything heimdall_lab keeps on local disk lives under one folder, so the command line, a
script and a notebook kernel started in any folder (JupyterLab starts kernels in the
notebook's folder) see the same database and the same captures:

``<home>/pg``
    The embedded PostgreSQL's cluster (with ``pg.secret``, ``pg.clients``, ``pg.lock`` next
    to it in ``<home>``).
``<home>/iq``
    The default IQ store (``HEIMDALL_IQ_URL`` overrides it).
``<home>/spool``
    Work kept locally while the IQ store or the database is down.
``<home>/notebooks``
    The user's copies of the packaged notebooks (``heimdall-lab lab``).

The folder is, in order: an explicit argument, ``$HEIMDALL_HOME``, else one per-user folder
(``platformdirs.user_data_dir("heimdall-lab")``, e.g. ``~/.local/share/heimdall-lab`` on
Linux). It never depends on the working directory.

A file or folder named from a parameter (a capture id, a run id) is placed with
:func:`confined_path`, the one rule that keeps such a name inside its folder.

Examples
--------
>>> from heimdall_lab.home import data_home
>>> str(data_home("/srv/heimdall"))
'/srv/heimdall'
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

from heimdall_lab.errors import ValidationError

__all__ = [
    "APP_NAME",
    "HOME_ENV",
    "PARTS",
    "confined_path",
    "data_home",
    "home_path",
]

#: Environment variable naming the data home.
HOME_ENV = "HEIMDALL_HOME"
#: Application name for the per-user data folder.
APP_NAME = "heimdall-lab"
#: The folders under the data home (see the module's description).
PARTS = ("pg", "iq", "spool", "notebooks", "cache")


def data_home(home: str | os.PathLike[str] | None = None) -> Path:
    """The folder of local state: ``home``, else ``$HEIMDALL_HOME``, else the per-user folder.

    Parameters
    ----------
    home : path-like, optional
        Explicit folder; wins over the environment.

    Returns
    -------
    pathlib.Path
        Absolute path (not necessarily existing yet). The per-user folder is
        ``platformdirs.user_data_dir("heimdall-lab")``; a relative ``home`` or
        ``$HEIMDALL_HOME`` is taken relative to the working directory, so set an absolute one
        when notebooks and the command line should share it.
    """
    if home is None or not str(home).strip():
        home = os.environ.get(HOME_ENV, "").strip() or platformdirs.user_data_dir(
            APP_NAME, appauthor=False
        )
    return Path(home).expanduser().absolute()


def home_path(part: str, home: str | os.PathLike[str] | None = None) -> Path:
    """One part of the data home, ``<home>/<part>``.

    Parameters
    ----------
    part : {"pg", "iq", "spool", "notebooks"}
        The embedded PostgreSQL's cluster, the default IQ store folder (``HEIMDALL_IQ_URL`` is
        not read here), the spool, or the user's copies of the notebooks.
    home : path-like, optional
        See :func:`data_home`.

    Returns
    -------
    pathlib.Path
        The folder (not necessarily existing yet).

    Raises
    ------
    ValueError
        For any other part.
    """
    if part not in PARTS:
        raise ValueError(f"no part {part!r} in the data home; parts: {', '.join(PARTS)}")
    return data_home(home) / part


def confined_path(folder: str | os.PathLike[str], name: object, *, what: str) -> Path:
    r"""``folder / name`` for a name that comes from a parameter, kept inside ``folder``.

    Parameters
    ----------
    folder : path-like
        The folder the path must stay in (``reports/<date>``, ``<home>/spool``, ...).
    name : object
        One file or folder name (``capture-<id>.ipynb``, a capture id): not empty, not
        ``.`` or ``..``, without ``/``, ``\`` or NUL.
    what : str
        What the name came from, for the message (``"parameter capture_id"``).

    Returns
    -------
    pathlib.Path
        ``folder / name``, directly inside ``folder``.

    Raises
    ------
    ValidationError
        If the name is not one plain name (``../../tmp/x``, ``a/b``, an absolute path).

    Examples
    --------
    >>> str(confined_path("/srv/reports", "capture-run1.ipynb", what="run id"))
    '/srv/reports/capture-run1.ipynb'
    """
    text = str(name)
    # One name that is neither '.' nor '..' and holds no separator cannot leave the folder.
    if not text or text in (".", "..") or any(c in text for c in ("/", "\\", "\0", os.sep)):
        raise ValidationError(
            f"{what} {text[:80]!r} cannot name a file in {folder}: it must be one plain name "
            "(letters, digits, '_', '.', '-') that stays in that folder, without '/', '\\' "
            "or '..'"
        )
    return Path(folder) / text
