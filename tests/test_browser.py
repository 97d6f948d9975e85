"""JupyterLab in a real browser: every packaged notebook after Run All, the form after Capture.

``heimdall-lab lab`` serves the notebooks on a loopback port with a throwaway data home and a
database of its own; headless Chromium (Debian's package, driven by Playwright) opens each
notebook, runs it from the Run menu and checks what a person would see: every cell ran, no
error output, no JavaScript error, the pictures and tables, and what went into the database.
The form is filled in, told to choose receivers near DCF77 and to capture, and watched until
its bars are full. Screenshots go to ``reports/ui/`` (``HEIMDALL_UI_REPORT_DIR``) as the record.

Without a Chromium the tests skip, saying why; ``scripts/test.sh`` installs Debian's first.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pytest
import sqlalchemy as sa
import support

from heimdall_lab import db

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")

pytestmark = pytest.mark.xdist_group("browser")  # one JupyterLab, notebooks in order

REPO = Path(__file__).resolve().parents[1]
#: Where the screenshots go.
REPORT_DIR = Path(os.environ.get("HEIMDALL_UI_REPORT_DIR", REPO / "reports" / "ui"))
#: An explicit browser binary, else the first of these on the PATH.
CHROMIUM_ENV = "HEIMDALL_CHROMIUM"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
#: Generous bounds for a loaded two-core machine; they only stop a hung run.
START_BOUND_S = 240.0
RUN_BOUND_S = 600.0
WIDTH, HEIGHT = 1500, 1000
#: Packaged notebooks in the order they run (explore reads what capture stored), with the
#: pictures each shows after Run All and whether it shows a table.
NOTEBOOKS = {
    "capture": {"images": 4, "tables": 1},  # PSD, waterfalls, envelopes, map
    "explore": {"images": 4, "tables": 1},  # rows and buckets over time, PSD, waterfalls
    "localize": {"images": 3, "tables": 1},  # envelopes, correlations, likelihood map
    "plan": {"images": 2, "tables": 2},  # the map, the error against the count
}
#: JupyterLab user settings: every cell in the page (so all outputs can be checked and
#: photographed), the notebook's own kernel started without asking, no news pop-up.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {
        "windowingMode": "none",
        "autoStartDefaultKernel": True,
    },
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}


def chromium_path() -> str | None:
    """The Chromium binary to drive: ``HEIMDALL_CHROMIUM``, else one on the PATH."""
    given = os.environ.get(CHROMIUM_ENV)
    if given:
        return given if Path(given).is_file() else None
    return next((found for n in CHROMIUM_NAMES if (found := shutil.which(n))), None)


@dataclass
class Lab:
    """A running ``heimdall-lab lab``."""

    url: str
    token: str
    folder: Path
    database_url: str
    log: Path
    process: subprocess.Popen = field(repr=False)

    def page_url(self, path: str) -> str:
        # reset: a fresh workspace, not the tabs a previous page left open
        return f"{self.url}/lab/tree/{path}?reset&token={self.token}"

    def log_tail(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-3000:]


def _wait_until_serving(lab: Lab) -> None:
    deadline = time.monotonic() + START_BOUND_S
    while time.monotonic() < deadline:
        if lab.process.poll() is not None:
            pytest.fail(f"heimdall-lab lab exited {lab.process.returncode}:\n{lab.log_tail()}")
        try:
            with urllib.request.urlopen(f"{lab.url}/api/status?token={lab.token}", timeout=5):
                return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"JupyterLab did not answer within {START_BOUND_S:.0f} s:\n{lab.log_tail()}")


@pytest.fixture(scope="module")
def chromium() -> str:
    path = chromium_path()
    if path is None:
        pytest.skip(
            "no Chromium to drive: install Debian's (apt-get install chromium; "
            f"scripts/test.sh does as root) or set {CHROMIUM_ENV} to a Chromium binary"
        )
    return path


@pytest.fixture(scope="module")
def lab(chromium, embedded, tmp_path_factory) -> Iterator[Lab]:
    """``heimdall-lab lab`` on a free loopback port: a throwaway data home, Jupyter folders
    and settings, and a database of its own."""
    root = tmp_path_factory.mktemp("lab")
    settings = root / "lab-settings"
    for name, values in LAB_SETTINGS.items():
        path = settings / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values), encoding="utf-8")
    port, token = support.free_port(), secrets.token_hex(16)
    with support.fresh_database(embedded.url) as database_url:
        env = {
            **os.environ,
            "HEIMDALL_HOME": str(root / "home"),
            "HEIMDALL_DATABASE_URL": database_url,
            "HEIMDALL_IQ_URL": str(root / "iq"),
            "JUPYTER_TOKEN": token,
            "JUPYTER_CONFIG_DIR": str(root / "jupyter-config"),
            "JUPYTER_RUNTIME_DIR": str(root / "jupyter-runtime"),
            "JUPYTERLAB_SETTINGS_DIR": str(settings),
            "JUPYTERLAB_WORKSPACES_DIR": str(root / "lab-workspaces"),
        }
        env.pop("MPLBACKEND", None)  # kernels draw inline, as in Jupyter
        folder, log = root / "notebooks", root / "lab.log"
        with log.open("w", encoding="utf-8") as out:
            process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "heimdall_lab", "lab", "--no-browser"),
                    *("--port", str(port), "--dir", str(folder)),
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        running = Lab(f"http://127.0.0.1:{port}", token, folder, database_url, log, process)
        try:
            _wait_until_serving(running)
            yield running
        finally:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="module")
def browser(chromium) -> Iterator[sync_api.Browser]:
    with sync_api.sync_playwright() as pw:
        found = pw.chromium.launch(
            executable_path=chromium,
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
        )
        yield found
        found.close()


@dataclass
class Page:
    """A browser tab on the lab, with the JavaScript errors it has seen."""

    page: sync_api.Page
    problems: list[str]


@pytest.fixture
def tab(browser, lab) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": WIDTH, "height": HEIGHT})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on(
        "console",
        lambda msg: (
            problems.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None
        ),
    )
    yield Page(page, problems)
    context.close()


def _open(tab: Page, lab: Lab, name: str) -> None:
    page = tab.page
    page.goto(lab.page_url(f"{name}.ipynb"))
    page.wait_for_selector(
        ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell", timeout=START_BOUND_S * 1000
    )
    # The kernel is up when the status bar says so; then the notebook takes the focus.
    page.locator(".jp-StatusBar-TextItem", has_text="| Idle").wait_for(timeout=START_BOUND_S * 1000)
    page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell").first.click()


def _prompts(page: sync_api.Page) -> list[str]:
    return page.eval_on_selector_all(
        ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputArea-prompt",
        "cells => cells.map(c => c.textContent.trim())",
    )


def _run_all(tab: Page) -> list[str]:
    """Run > Run All Cells, as a person does; wait until the kernel has finished."""
    page = tab.page
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    page.wait_for_function(  # it started: a cell waits or has run
        "() => [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')]"
        ".some(p => /\\[[*0-9]/.test(p.textContent))",
        timeout=60_000,
    )
    deadline = time.monotonic() + RUN_BOUND_S
    quiet = 0
    while time.monotonic() < deadline:
        prompts = _prompts(page)
        dialog = page.locator(".jp-Dialog")
        if dialog.count():  # e.g. "Kernel Restarting": the kernel died
            pytest.fail(f"JupyterLab says: {dialog.first.inner_text()[:300]}")
        if prompts and all(p.strip("[]: ").isdigit() for p in prompts):
            return prompts
        # After an error JupyterLab stops: no cell waits, and the rest stay unnumbered.
        quiet = quiet + 1 if not any("*" in p for p in prompts) else 0
        if quiet >= 10:
            return prompts
        time.sleep(0.5)
    pytest.fail(f"the notebook was still running after {RUN_BOUND_S:.0f} s: {_prompts(page)}")


def _save(tab: Page, lab: Lab, name: str) -> nbformat.NotebookNode:
    """Save from the browser (Ctrl+S) and read what JupyterLab wrote."""
    page = tab.page
    path = lab.folder / f"{name}.ipynb"
    before = path.stat().st_mtime_ns
    page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook").click(
        position={"x": 5, "y": 5}
    )
    page.keyboard.press("Control+s")
    deadline = time.monotonic() + 60
    while path.stat().st_mtime_ns == before and time.monotonic() < deadline:
        time.sleep(0.2)
    page.locator(".jp-StatusBar-TextItem", has_text="Saving completed").wait_for(timeout=60_000)
    return nbformat.read(path, as_version=4)


def _screenshot(tab: Page, name: str) -> Path:
    """The whole notebook, every cell in view, as ``reports/ui/<name>.png``."""
    page = tab.page
    height = page.evaluate(
        "() => Math.max(...[...document.querySelectorAll("
        "'.jp-NotebookPanel:not(.lm-mod-hidden) .jp-WindowedPanel-outer')]"
        ".map(n => n.scrollHeight))"
    )
    page.set_viewport_size({"width": WIDTH, "height": max(HEIGHT, min(int(height) + 160, 12000))})
    page.eval_on_selector_all(
        ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-WindowedPanel-outer",
        "panels => panels.forEach(p => p.scrollTo(0, 0))",
    )
    page.wait_for_timeout(500)  # let the layout settle at the new size
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    path = REPORT_DIR / f"{name}.png"
    page.screenshot(path=str(path))
    page.set_viewport_size({"width": WIDTH, "height": HEIGHT})
    return path


def _outputs(nb: nbformat.NotebookNode) -> list[dict]:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


def _count(engine: sa.engine.Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar())


@pytest.mark.parametrize("name", list(NOTEBOOKS))
def test_notebook_runs_all_in_jupyterlab(lab, tab, name):
    engine = db.get_engine(lab.database_url)
    try:
        before = {t: _count(engine, t) for t in ("captures", "localizations")}
        _open(tab, lab, name)
        prompts = _run_all(tab)
        shot = _screenshot(tab, name)  # the record, before the checks
        nb = _save(tab, lab, name)
        after = {t: _count(engine, t) for t in ("captures", "localizations")}
    finally:
        engine.dispose()

    errors = [o for o in _outputs(nb) if o.get("output_type") == "error"]
    assert not errors, f"{name}: {errors[0].get('ename')}: {errors[0].get('evalue')}"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert len(prompts) == len(code) and all(c.execution_count for c in code), prompts
    assert not tab.problems, f"{name}: JavaScript errors: {tab.problems[:5]}"
    page = tab.page
    shown = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output"
    images = page.locator(f"{shown} img").count()
    saved_images = sum("image/png" in o.get("data", {}) for o in _outputs(nb))
    assert images == saved_images >= NOTEBOOKS[name]["images"], (images, saved_images)
    assert page.locator(f"{shown} table").count() >= NOTEBOOKS[name]["tables"]
    assert shot.stat().st_size > 50_000  # a picture of a page, not a blank one
    if name == "capture":
        assert after["captures"] == before["captures"] + 1
        bars = page.locator(f"{shown} .widget-hprogress")
        assert bars.count() >= 7  # one per emulated receiver
        for i in range(bars.count()):
            bar = bars.nth(i).locator(".progress-bar")
            assert bar.evaluate("b => b.style.width") == "100%"
            assert "progress-bar-success" in (bar.get_attribute("class") or "")  # closed full
    if name == "localize":
        assert after["localizations"] == before["localizations"] + 1


def test_capture_form_chooses_receivers_and_captures_in_jupyterlab(lab, tab):
    _open(tab, lab, "form")
    _run_all(tab)
    page = tab.page
    form = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output")

    def field(label: str) -> sync_api.Locator:
        box = form.locator(".widget-inline-hbox").filter(has=page.locator("label", has_text=label))
        return box.locator("input").first

    for label, value in (
        ("Frequency (kHz)", "77.5"),
        ("Duration (s)", "4"),
        ("Near", "50.0152, 9.0112"),
        ("Count", "4"),
    ):
        field(label).fill(value)
        field(label).press("Enter")
    form.get_by_role("button", name="Choose receivers").click()
    chosen = form.locator(".widget-html", has_text="predicted median error")
    chosen.wait_for(timeout=60_000)
    assert "Chose 4 of" in chosen.inner_text()
    selected = form.locator("select option:checked").all_inner_texts()
    assert len(selected) == 4 and all(name in chosen.inner_text() for name in selected)
    engine = db.get_engine(lab.database_url)
    try:
        before = _count(engine, "captures")
        form.get_by_role("button", name="Capture").click()
        form.locator(".widget-label", has_text="done: 100 %").wait_for(timeout=RUN_BOUND_S * 1000)
        # The results follow the last bar: the table, the spectra, the overall bar's colour.
        form.locator("table.dataframe").wait_for(timeout=60_000)
        form.locator("img").first.wait_for(timeout=60_000)
        form.locator(".progress-bar-success").nth(4).wait_for(timeout=60_000)
        captures = db.list_captures(engine)
        rows = db.measurements_for_capture(engine, str(captures.id.iloc[0]))
        assert _count(engine, "captures") == before + 1
    finally:
        engine.dispose()
    _screenshot(tab, "form")  # the record, before the checks
    assert sorted(rows.receiver) == sorted(selected)
    bars = form.locator(".widget-hprogress")
    assert bars.count() == 5  # overall and one per chosen receiver
    for i in range(bars.count()):
        bar = bars.nth(i).locator(".progress-bar")
        assert bar.evaluate("b => b.style.width") == "100%"
        assert "progress-bar-success" in (bar.get_attribute("class") or "")
    table = form.locator("table.dataframe")
    assert table.count() == 1 and "e+0" not in table.inner_text()
    widget = table.locator(
        "xpath=ancestor::div[contains(concat(' ', @class, ' '), ' widget-html ')][1]"
    )
    right, area, overflow = widget.evaluate(
        "w => [w.getBoundingClientRect().right,"
        " w.closest('.jp-WindowedPanel-outer').getBoundingClientRect().right,"
        " getComputedStyle(w).overflowX]"
    )
    assert right <= area and overflow in ("auto", "scroll"), (right, area, overflow)
    assert form.locator("img").count() >= 1  # the spectra
    assert not form.locator(".widget-html", has_text="Error:").count()
    assert not tab.problems, f"JavaScript errors: {tab.problems[:5]}"
