"""Run the parameterised notebooks headless with papermill, reproducibly.

Each notebook shipped in this package has a cell tagged ``parameters``; :func:`run_notebook`
injects values for it and writes the executed copy to
``reports/<date>/<name>-<id>.ipynb``. The notebooks run unchanged in JupyterLab
(``heimdall-lab lab`` copies them into ``<data home>/notebooks`` with
:func:`copy_notebooks`). Whatever folder a kernel starts in, it sees the same database and IQ
store as the command line (see :mod:`heimdall_lab.home`).

No secret is written into a report. A parameter holding credentials (a database URL with a
password, an ``s3://KEY:SECRET@`` store URL) is handed to the kernel in the environment
variable its notebook reads when the parameter is ``None`` (the parameters cell says which in
the parameter's comment: ``database_url = None  # None: HEIMDALL_DATABASE_URL ...``); the
kernel gets ``None``, and the report shows the URL masked.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import logging
import os
import shutil
import threading
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from heimdall_lab.db.engine import URL_ENV
from heimdall_lab.errors import HeimdallError, ValidationError
from heimdall_lab.home import confined_path
from heimdall_lab.store.iq import ENV_IQ_URL
from heimdall_lab.urls import has_secret, mask_url, redact, secrets_in

log = logging.getLogger(__name__)

#: Where the packaged notebooks are (inside the installed package).
NOTEBOOK_DIR = Path(__file__).resolve().parent
#: Folder, relative to the working directory, searched after the packaged notebooks: a source
#: checkout's own notebooks (e.g. ``benchmark``) run from its root.
LOCAL_NOTEBOOK_DIR = Path("notebooks")
#: Notebooks that exist only in a source checkout (they import its ``benchmarks/``).
SOURCE_TREE_NOTEBOOKS = ("benchmark",)
#: Environment variables through which a parameter holding credentials reaches the kernel:
#: the one its parameters-cell comment names as what ``None`` reads.
CREDENTIAL_VARIABLES = (URL_ENV, ENV_IQ_URL)

# Kernels inherit this process's environment: one run at a time may change it.
_ENVIRONMENT_LOCK = threading.Lock()


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
        ``Hasenberg03`` -> ``"Hasenberg03"``.
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
        Values for its ``parameters`` cell; unknown names are refused. A value holding
        credentials goes to the kernel through the environment variable the parameter's
        ``None`` reads (``HEIMDALL_DATABASE_URL``, ``HEIMDALL_IQ_URL``), set for the run only
        (runs doing so take turns); the report shows it masked.
    output_dir : str or pathlib.Path, optional
        Reports folder.
    run_id : str, optional
        The id in the output name; the ``capture_id`` parameter if given, else a new one. It
        must be one plain file name part (see :func:`heimdall_lab.home.confined_path`).
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
        Unknown notebook or parameter, a run id or ``capture_id`` that would put the report
        outside ``<output_dir>/<date>``, or credentials in a parameter that the notebook
        cannot read from the environment.
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
    kernel, shown, routed = _route_credentials(path, parameters, declared)
    environment = {variable: parameters[name] for name, variable in routed.items()}
    what = "run_id" if run_id else "parameter capture_id"
    run_id = str(run_id or parameters.get("capture_id") or uuid.uuid4().hex[:12])
    folder = Path(output_dir) / datetime.now(UTC).strftime("%Y-%m-%d")
    run_id = confined_path(folder, run_id, what=what).name  # a plain name: stays in folder
    out = folder / f"{path.stem}-{run_id}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    secrets = secrets_in([*environment.values(), *map(os.environ.get, CREDENTIAL_VARIABLES)])
    log.info("running %s into %s with %s", path, out, shown)
    try:
        with _kernel_environment(environment):
            papermill.execute_notebook(
                _literal_path(path),  # papermill formats paths with the parameters
                _literal_path(out),
                parameters=kernel,
                cwd=str(cwd or Path.cwd()),
                kernel_name="python3",
                kernel_manager_class=_kernel_manager_class(),
                progress_bar=progress,
                log_output=False,
            )
    except PapermillExecutionError as exc:
        raise NotebookError(
            f"{path.name} failed in cell {exc.exec_count}: {exc.ename}: "
            f"{redact(exc.evalue, secrets)}; see {out}"
        ) from None  # the kernel's own text stays in the (redacted) report
    finally:
        _redact_report(out, shown, routed, secrets)
    return out


@functools.cache
def _kernel_manager_class() -> type:
    """The kernel manager papermill starts each run's kernel with.

    jupyter_client's own, with two changes, each removing a line the kernel printed on the
    caller's stderr at every run:

    * The kernel's sockets are encrypted with CurveZMQ keys the manager provisions (the
      ``python3`` kernel spec declares ``supported_encryption: curve``): without them
      ipykernel warns "Kernel is running over TCP without encryption" as it starts. Where
      pyzmq lacks CurveZMQ the kernel runs as before, and the warning is then true.
    * Shutting a kernel down does not interrupt it first. ``shutdown_kernel`` sends SIGINT
      to the kernel's process group before its ``shutdown_request``; papermill shuts the
      kernel down as soon as the reply to its last ``kernel_info_request`` arrives, while
      the kernel is still inside that request's handler, where SIGINT raises: the kernel
      then logs "KeyboardInterrupt caught in kernel" (and the signal reaches any process the
      notebook started in the kernel's group). By then every cell has finished, so there is
      nothing to interrupt; the ``shutdown_request`` stops the kernel, and one that does not
      stop is still terminated, then killed (``shutdown_wait_time``). Interrupting a running
      kernel (``interrupt_kernel``, e.g. on a cell timeout) is unchanged.
    """
    import zmq
    from jupyter_client import AsyncKernelManager
    from traitlets import default

    class KernelManager(AsyncKernelManager):
        @default("transport_encryption")
        def _encrypted(self) -> str:
            return "auto" if zmq.has("curve") else "disabled"

        async def _async_interrupt_kernel(self) -> None:
            if self.shutting_down:
                return
            await super()._async_interrupt_kernel()

    KernelManager.__qualname__ = KernelManager.__name__ = "HeimdallKernelManager"
    return KernelManager


def _route_credentials(
    path: Path, parameters: Mapping[str, Any], declared: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """Split the parameters: for the kernel, for the report, and which go by environment.

    A parameter holding credentials goes to the kernel as ``None`` with its value in the
    environment variable named in its parameters-cell comment; the report shows it masked.
    """
    kernel: dict[str, Any] = {}
    shown: dict[str, Any] = {}
    routed: dict[str, str] = {}
    refused = []
    for name, value in parameters.items():
        kernel[name] = shown[name] = value
        if not has_secret(value):
            continue
        spec = declared[name]
        variable = next((v for v in CREDENTIAL_VARIABLES if v in (spec.get("help") or "")), None)
        if variable is None or spec.get("default") != "None" or not isinstance(value, str):
            refused.append(name)
            continue
        kernel[name], shown[name], routed[name] = None, mask_url(value), variable
    if refused:
        # papermill writes every parameter into the executed notebook, in plain text
        raise ValidationError(
            f"parameter(s) {refused} hold a password or key, which the report notebook would "
            f"keep, and {path.name} does not read them from the environment: leave them out "
            f"and set the credentials in the environment ({', '.join(CREDENTIAL_VARIABLES)}, "
            "or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for S3)"
        )
    return kernel, shown, routed


@contextlib.contextmanager
def _kernel_environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables while a kernel starts and runs; restore them after."""
    if not values:
        yield
        return
    with _ENVIRONMENT_LOCK:
        saved = {name: os.environ.get(name) for name in values}
        os.environ.update(values)
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def _literal_path(path: Path) -> str:
    return str(path).replace("{", "{{").replace("}", "}}")


def _redact_report(
    out: Path, shown: Mapping[str, Any], routed: Mapping[str, str], secrets: list[str]
) -> None:
    """Rewrite the executed notebook as it may be kept: what the run wrote, redacted.

    Cell outputs and papermill's metadata (the run's products) are redacted; the code is the
    notebook's own and stays as it is. Each parameter that went through the environment is
    shown masked, with where it went.
    """
    import nbformat

    if not out.is_file():
        return  # the kernel never started
    nb = nbformat.read(out, as_version=4)
    clean = nb.copy()  # shallow: only what is replaced below is new
    clean["metadata"] = {
        **nb.metadata,
        "papermill": _redact_texts(nb.metadata.get("papermill", {}), secrets),
    }
    clean["cells"] = [
        {**cell, "outputs": _redact_texts(cell["outputs"], secrets)} if "outputs" in cell else cell
        for cell in nb.cells
    ]
    if routed:
        clean["metadata"]["papermill"]["parameters"] = dict(shown)
        notes = "".join(
            f"\n# {name}: {shown[name]} (given to the kernel in {variable})"
            for name, variable in routed.items()
        )
        clean["cells"] = [
            {**cell, "source": cell["source"] + notes}
            if "injected-parameters" in cell.get("metadata", {}).get("tags", [])
            else cell
            for cell in clean["cells"]
        ]
    if clean != nb:
        nbformat.write(nbformat.from_dict(clean), out)


def _redact_texts(value: Any, secrets: list[str], key: str = "") -> Any:
    """A copy of a JSON value with every string redacted; images are kept as they are."""
    if isinstance(value, str):
        return value if key.startswith("image/") else redact(value, secrets)
    if isinstance(value, Mapping):
        return {k: _redact_texts(v, secrets, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_texts(v, secrets) for v in value]
    return value
