"""Run the parameterised notebooks headless with papermill, reproducibly.

Each notebook shipped in this package has a cell tagged ``parameters``; :func:`run_notebook`
injects values for it and writes the executed copy to
``reports/<date>/<name>-<id>.ipynb``. The notebooks run unchanged in JupyterLab
(``heimdall-lab lab`` copies them into ``<data home>/notebooks`` with
:func:`copy_notebooks`). Whatever folder a kernel starts in, it sees the same database and IQ
store as the command line (see :mod:`heimdall_lab.home`).
"""

from __future__ import annotations

import ast
import logging
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from heimdall_lab.errors import HeimdallError, ValidationError
from heimdall_lab.urls import mask_url

log = logging.getLogger(__name__)

#: Where the packaged notebooks are (inside the installed package).
NOTEBOOK_DIR = Path(__file__).resolve().parent
#: Folder, relative to the working directory, searched after the packaged notebooks: a source
#: checkout's own notebooks (e.g. ``benchmark``) run from its root.
LOCAL_NOTEBOOK_DIR = Path("notebooks")
#: Notebooks that exist only in a source checkout (they import its ``benchmarks/``).
SOURCE_TREE_NOTEBOOKS = ("benchmark",)


class NotebookError(HeimdallError):
    """A notebook failed while it ran; the partly executed copy says where."""


def notebook_path(name: str | Path) -> Path:
    """Find a notebook by path, or by name (``capture`` or ``capture.ipynb``).

    A name is looked up among the packaged notebooks, then in ``./notebooks/`` (a source
    checkout's extra notebooks, such as ``benchmark``, run from its root).

    Parameters
    ----------
    name : str or pathlib.Path
        A path, or a notebook's name.

    Returns
    -------
    pathlib.Path
        The notebook.

    Raises
    ------
    ValidationError
        If there is no such notebook.
    """
    path = Path(name)
    if path.suffix != ".ipynb":
        path = path.with_suffix(".ipynb")
    for candidate in (path, NOTEBOOK_DIR / path.name, LOCAL_NOTEBOOK_DIR / path.name):
        if candidate.is_file():
            return candidate
    if path.stem in SOURCE_TREE_NOTEBOOKS:
        raise ValidationError(
            f"{path.name} is in the source tree only: run this from the root of a "
            f"heimdall_lab checkout (where notebooks/{path.name} and benchmarks/ are)"
        )
    known = sorted(
        {p.stem for folder in (NOTEBOOK_DIR, LOCAL_NOTEBOOK_DIR) for p in folder.glob("*.ipynb")}
    )
    raise ValidationError(f"no notebook {name!r}; give a path to an .ipynb file or one of {known}")


def packaged_notebooks() -> list[Path]:
    """The notebooks shipped in the package, sorted by name.

    Returns
    -------
    list of pathlib.Path
        ``capture.ipynb``, ``explore.ipynb``, ... inside the installed package.
    """
    return sorted(NOTEBOOK_DIR.glob("*.ipynb"))


def copy_notebooks(folder: str | Path, *, dry_run: bool = False) -> list[Path]:
    """Copy the packaged notebooks into ``folder``, keeping any copy already there.

    A notebook already in ``folder`` is never overwritten, so a user's edits survive
    upgrades; delete a copy to get the packaged version back.

    Parameters
    ----------
    folder : str or pathlib.Path
        Destination, created if missing (``<data home>/notebooks`` for ``heimdall-lab lab``).
    dry_run : bool, default False
        Only say what would be copied; touch nothing.

    Returns
    -------
    list of pathlib.Path
        The copies made (or, with ``dry_run``, that would be made).

    Raises
    ------
    ValidationError
        If ``folder`` cannot be created or written.
    """
    folder = Path(folder).expanduser()
    todo = [(src, folder / src.name) for src in packaged_notebooks()]
    todo = [(src, dst) for src, dst in todo if not dst.exists()]
    if dry_run:
        return [dst for _, dst in todo]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for src, dst in todo:
            shutil.copyfile(src, dst)
            log.info("copied %s to %s", src.name, dst)
    except OSError as exc:
        raise ValidationError(
            f"cannot copy the notebooks into {folder}: {exc}; set HEIMDALL_HOME to a "
            "writable folder"
        ) from exc
    return [dst for _, dst in todo]


def parse_value(text: str) -> Any:
    """Read a ``-p NAME VALUE`` value: a Python literal if it is one, else the string.

    Parameters
    ----------
    text : str
        The value as typed.

    Returns
    -------
    object
        ``10e6`` -> 10000000.0, ``None`` -> None, ``True`` -> True, ``[1, 2]`` -> list,
        ``HB9Q`` -> ``"HB9Q"``.
    """
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def notebook_parameters(path: str | Path) -> dict[str, Any]:
    """The parameters a notebook declares, with their defaults.

    Parameters
    ----------
    path : str or pathlib.Path
        The notebook.

    Returns
    -------
    dict
        Parameter name to papermill's description of it.
    """
    import papermill

    return dict(papermill.inspect_notebook(str(notebook_path(path))))


def run_notebook(
    name: str | Path,
    parameters: dict[str, Any] | None = None,
    *,
    output_dir: str | Path = "reports",
    run_id: str | None = None,
    cwd: str | Path | None = None,
    progress: bool = False,
) -> Path:
    """Execute a notebook with papermill into ``<output_dir>/<date>/<name>-<id>.ipynb``.

    Parameters
    ----------
    name : str or pathlib.Path
        The notebook (see :func:`notebook_path`).
    parameters : dict, optional
        Values for its ``parameters`` cell; unknown names are refused.
    output_dir : str or pathlib.Path, optional
        Reports folder.
    run_id : str, optional
        The id in the output name; the ``capture_id`` parameter if given, else a new one.
    cwd : str or pathlib.Path, optional
        Working directory of the kernel; the current one by default. It does not change
        which database or IQ store the notebook uses (see :mod:`heimdall_lab.home`).
    progress : bool, optional
        Show papermill's progress bar.

    Returns
    -------
    pathlib.Path
        The executed notebook.

    Raises
    ------
    ValidationError
        Unknown notebook or parameter.
    NotebookError
        A cell raised; the executed copy (with the traceback) is still written.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    path = notebook_path(name)
    parameters = dict(parameters or {})
    declared = notebook_parameters(path)
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise ValidationError(
            f"{path.name} has no parameter(s) {unknown}; it takes {sorted(declared)}"
        )
    secret = [k for k, v in parameters.items() if isinstance(v, str) and mask_url(v) != v]
    if secret:
        # papermill writes every parameter into the executed notebook, in plain text
        raise ValidationError(
            f"parameter(s) {secret} hold a password or key, which the report notebook would "
            "keep; set HEIMDALL_DATABASE_URL or the S3 variables in the environment instead"
        )
    run_id = run_id or str(parameters.get("capture_id") or uuid.uuid4().hex[:12])
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    out = Path(output_dir) / day / f"{path.stem}-{run_id}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    log.info("running %s into %s with %s", path, out, parameters)
    try:
        papermill.execute_notebook(
            str(path),
            str(out),
            parameters=parameters,
            cwd=str(cwd or Path.cwd()),
            kernel_name="python3",
            progress_bar=progress,
            log_output=False,
        )
    except PapermillExecutionError as exc:
        raise NotebookError(
            f"{path.name} failed in cell {exc.exec_count}: {exc.ename}: {exc.evalue}; see {out}"
        ) from exc
    return out
