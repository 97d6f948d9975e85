"""An ipywidgets form for :func:`heimdall_lab.pipeline.capture`.

``CaptureForm()`` in a notebook cell shows receiver, frequency, duration and mode controls
and a Capture button. The capture runs in a background thread so the notebook stays
responsive; the form shows the stage with an overall percentage and one bar per receiver
while it runs, then the per-receiver status and metrics, a PSD plot, the capture id and
where the IQ went. Errors appear in the form, never as tracebacks.

It can also choose the receivers: given a target position and a count, **Choose** runs
:func:`heimdall_lab.planning.select` over a directory (a file or URL, or the database's
receivers) for the form's frequency and duration, and selects the chosen set.

The form is thin: it collects parameters, calls :func:`~heimdall_lab.pipeline.capture` (and
:func:`~heimdall_lab.planning.select`) and shows what comes back. Everything else happens in
:mod:`heimdall_lab.pipeline`.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import html
import io
import logging
import threading
import time
from typing import Any

import ipywidgets as widgets
from sqlalchemy.engine import Engine

from heimdall_lab import db, directory, planning
from heimdall_lab.emulate.scenario import Scenario
from heimdall_lab.emulate.server import Emulated, emulated
from heimdall_lab.errors import HeimdallError, ValidationError
from heimdall_lab.kiwi.acquire import Progress
from heimdall_lab.pipeline import Capture, capture
from heimdall_lab.receivers import Receiver, validate_capture_request
from heimdall_lab.ui import plots

log = logging.getLogger(__name__)

#: Mode values of :attr:`CaptureForm.mode`.
EMULATED = "emulated"
REAL = "real"

#: Bar style per receiver state.
_BAR_STYLE = {
    "connecting": "info",
    "receiving": "info",
    "retrying": "warning",
    "done": "success",
    "incomplete": "warning",
    "failed": "danger",
}
#: Bar style per final capture stage.
_STAGE_STYLE = {"done": "success", "partial": "warning", "failed": "danger"}
#: Receiver status (from the status table) to the progress state it corresponds to.
_STATUS_STATE = {"ok": "done", "incomplete": "incomplete", "failed": "failed"}
#: Seconds between widget refreshes while samples stream (stage changes show at once).
_REFRESH_S = 0.2
#: Field bounds, wide on purpose: the frontend clamps silently, so the real limits
#: (each receiver's range, the longest capture) are checked by ``capture()`` with a message.
_MAX_FREQUENCY_KHZ = 1e6
_MAX_DURATION_FIELD_S = 1e6
#: Most receivers **Choose** picks at once (the field's bound).
_MAX_CHOOSE = 30
_STYLE = {"description_width": "initial"}
#: The directory source that means the database's receivers.
DATABASE = "database"


def _cell_format(column: str) -> Any:
    """How a status-table column's numbers are written (None: pandas' own)."""
    if column == "frequency_offset_hz":
        return lambda v: f"{v:+.3f}"
    if column.endswith("_hz") or column in ("samples", "expected", "lost_frames"):
        return lambda v: f"{v:,.0f}"
    if column.endswith(("_db", "_dbm", "_dbhz", "_dbfs", "_dbfs_hz")):
        return lambda v: f"{v:.1f}"
    return None


def status_html(status: Any) -> str:
    """A capture's status table as HTML with number formats a person reads at a glance.

    Parameters
    ----------
    status : pandas.DataFrame
        :meth:`heimdall_lab.pipeline.Capture.status`.

    Returns
    -------
    str
        The table: rates and counts whole with thousands separators, levels to 0.1 dB,
        offsets to 1 mHz, missing values blank. (The form's results area scrolls sideways
        when the table is wider than the notebook.)
    """
    if status.empty:
        return ""
    formats = {c: f for c in status.columns if (f := _cell_format(str(c))) is not None}
    return status.to_html(formatters=formats, float_format=lambda v: f"{v:.4g}", na_rep="")


def _parse_near(text: str) -> tuple[float, float]:
    """``"lat, lon"`` from the form's text field."""
    parts = [t for t in text.replace(";", ",").replace(",", " ").split() if t]
    if len(parts) != 2:
        raise ValidationError(f"near: give 'lat, lon' in degrees, got {text[:40]!r}")
    try:
        return planning.check_target([float(t) for t in parts], "near")
    except ValueError as exc:
        raise ValidationError(f"near: give 'lat, lon' in degrees, got {text[:40]!r}") from exc


def _error_html(message: str, label: str = "Error") -> str:
    lines = "<br>".join(html.escape(line) for line in message.splitlines() or [message])
    colours = (
        "color:#a4000f;background:#fdecea;border:1px solid #f5c2c0"
        if label == "Error"
        else "color:#6a4a00;background:#fff6dd;border:1px solid #f0d58a"
    )
    return (
        f'<div style="{colours};padding:6px 10px;border-radius:4px"><b>{label}:</b> {lines}</div>'
    )


def _figure_output(fig: Any) -> dict[str, Any]:
    """An Output-widget display record of a matplotlib figure as PNG."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return {
        "output_type": "display_data",
        "data": {
            "image/png": base64.b64encode(buf.getvalue()).decode("ascii"),
            "text/plain": f"<Figure size {fig.bbox.width:.0f}x{fig.bbox.height:.0f}>",
        },
        "metadata": {},
    }


class CaptureForm:
    """A notebook form that captures IQ from several receivers with one click.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine, optional
        The database to use (not disposed of by the form).
    database_url : str, optional
        Database URL when no ``engine`` is given; ``HEIMDALL_DATABASE_URL`` or the embedded
        server by default (see :func:`heimdall_lab.db.get_engine`).
    iq_url : str, optional
        IQ store URL; :func:`heimdall_lab.store.default_iq_url` by default.
    directory_source : str, optional
        Where **Choose** looks for receivers: a directory file or URL (see
        :func:`heimdall_lab.directory.load`), or ``"database"`` (the default) for the
        database's receivers as imported and checked.
    selection : heimdall_lab.planning.Selection, optional
        A selection made elsewhere (e.g. in the plan notebook): its receivers are offered
        and selected.

    Attributes
    ----------
    widget : ipywidgets.VBox
        The whole form.
    receivers_select : ipywidgets.SelectMultiple
        The database's active receivers (all selected at first), and any chosen ones.
    near : ipywidgets.Text
        Target ``lat, lon`` for **Choose**.
    count : ipywidgets.BoundedIntText
        How many receivers **Choose** picks.
    directory_text : ipywidgets.Text
        The directory **Choose** reads (``database``, a file or a URL).
    choose_button : ipywidgets.Button
        Chooses receivers for the target, frequency and duration, and selects them.
    plan_html : ipywidgets.HTML
        What the last choice gave: the receivers, the predicted error, warnings.
    last_selection : heimdall_lab.planning.Selection or None
        The latest choice.
    frequency_khz : ipywidgets.BoundedFloatText
        Centre frequency in kHz.
    duration_s : ipywidgets.BoundedFloatText
        Seconds of IQ per receiver.
    mode : ipywidgets.ToggleButtons
        ``"emulated"`` (the local emulator) or ``"real"`` (the receivers' addresses).
    seed : ipywidgets.IntText
        Scenario seed; enabled in emulated mode only.
    fast : ipywidgets.Checkbox
        Emulated mode: send frames as fast as possible instead of in real time.
    capture_button : ipywidgets.Button
        Starts a capture in a background thread; disabled while one runs.
    error_html : ipywidgets.HTML
        Validation errors and stage failures (empty when none).
    stage_label : ipywidgets.Label
        Current stage and percentage.
    overall_progress : ipywidgets.IntProgress
        Progress of the whole capture, 0 to 100.
    receiver_box : ipywidgets.VBox
        One row per selected receiver: its bar and its state.
    receiver_bars : dict of str to ipywidgets.FloatProgress
        Per-receiver progress, 0 to 1.
    receiver_states : dict of str to ipywidgets.Label
        Per-receiver state, samples and message.
    summary_html : ipywidgets.HTML
        Capture id, stage, IQ location, database and rows written.
    results_html : ipywidgets.HTML
        The per-receiver status and metrics table.
    psd_output : ipywidgets.Output
        The PSD plot.
    last_capture : Capture or None
        The result of the latest capture that ran.
    last_error : str
        The message in the error area (empty when none).
    """

    def __init__(
        self,
        engine: Engine | None = None,
        database_url: str | None = None,
        iq_url: str | None = None,
        directory_source: str | None = None,
        selection: planning.Selection | None = None,
    ) -> None:
        self._engine = engine
        self._own_engine = engine is None
        self._database_url = database_url
        self.iq_url = iq_url
        self.last_capture: Capture | None = None
        self.last_error = ""
        self.last_selection: planning.Selection | None = None
        #: Chosen receivers by name (they need not be in the database yet).
        self._chosen: dict[str, Receiver] = {}
        #: The database's active receivers, as last read.
        self._active: list[str] = []
        self._lock = threading.Lock()
        self._progress_lock = threading.Lock()
        self._running = False
        self._thread: threading.Thread | None = None
        self._shown: tuple[str, dict[str, str]] = ("", {})
        self._last_refresh = 0.0

        self.receivers_select = widgets.SelectMultiple(
            options=[], rows=7, description="Receivers", style=_STYLE
        )
        self.frequency_khz = widgets.BoundedFloatText(
            value=10000.0,
            min=0.0,
            max=_MAX_FREQUENCY_KHZ,
            step=1.0,
            description="Frequency (kHz)",
            style=_STYLE,
        )
        self.duration_s = widgets.BoundedFloatText(
            value=10.0,
            min=0.0,
            max=_MAX_DURATION_FIELD_S,
            step=1.0,
            description="Duration (s)",
            style=_STYLE,
        )
        self.mode = widgets.ToggleButtons(
            options=[("emulated scenario", EMULATED), ("real receivers", REAL)],
            value=EMULATED,
            description="Mode",
            style=_STYLE,
        )
        self.seed = widgets.IntText(value=0, description="Seed", style=_STYLE)
        self.fast = widgets.Checkbox(
            value=False, description="fast (no real-time pacing)", indent=False
        )
        self.capture_button = widgets.Button(
            description="Capture", button_style="primary", icon="play"
        )
        self.near = widgets.Text(value="", placeholder="lat, lon", description="Near", style=_STYLE)
        self.count = widgets.BoundedIntText(
            value=6, min=3, max=_MAX_CHOOSE, description="Count", style=_STYLE
        )
        self.directory_text = widgets.Text(
            value=directory_source or DATABASE,
            placeholder="database, or a directory file or URL",
            description="From",
            style=_STYLE,
        )
        self.choose_button = widgets.Button(description="Choose receivers", icon="map-marker")
        self.plan_html = widgets.HTML()
        self.error_html = widgets.HTML()
        self.stage_label = widgets.Label("")
        self.overall_progress = widgets.IntProgress(
            value=0, min=0, max=100, description="Overall", style=_STYLE
        )
        self.receiver_box = widgets.VBox()
        self.receiver_bars: dict[str, widgets.FloatProgress] = {}
        self.receiver_states: dict[str, widgets.Label] = {}
        self.summary_html = widgets.HTML()
        # Wide tables scroll sideways inside the form instead of running past the notebook.
        self.results_html = widgets.HTML(layout=widgets.Layout(width="100%", overflow="auto"))
        self.psd_output = widgets.Output()

        self.mode.observe(self._on_mode, names="value")
        self.capture_button.on_click(self._on_click)
        self.choose_button.on_click(lambda _button: self.choose())
        self._on_mode()

        controls = widgets.VBox(
            [
                self.frequency_khz,
                self.duration_s,
                self.mode,
                widgets.HBox([self.seed, self.fast]),
                self.capture_button,
            ]
        )
        chooser = widgets.HBox(
            [self.near, self.count, self.directory_text, self.choose_button],
            layout=widgets.Layout(flex_flow="row wrap"),
        )
        self.widget = widgets.VBox(
            [
                widgets.HBox([self.receivers_select, controls]),
                chooser,
                self.plan_html,
                self.error_html,
                widgets.HBox([self.overall_progress, self.stage_label]),
                self.receiver_box,
                self.summary_html,
                self.results_html,
                self.psd_output,
            ]
        )
        self.refresh_receivers()
        if selection is not None:
            self.use_selection(selection)

    # -- display ---------------------------------------------------------------------------

    def _ipython_display_(self) -> None:
        """Show the form in a notebook."""
        self.display()

    def display(self) -> None:
        """Show the form in the current notebook cell."""
        from IPython.display import display

        display(self.widget)

    # -- state -----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether a capture is running."""
        return self._running

    @property
    def engine(self) -> Engine:
        """The database engine, created on first use when none was given.

        Returns
        -------
        sqlalchemy.engine.Engine
            The engine.

        Raises
        ------
        DatabaseError
            If the database cannot be reached.
        """
        if self._engine is None:
            self._engine = db.get_engine(self._database_url)
        return self._engine

    def refresh_receivers(self) -> list[str]:
        """Reload the receiver list from the database's active receivers, all selected.

        Errors (database unreachable, no receivers) are shown in the form.

        Returns
        -------
        list of str
            The receiver names (empty when they could not be read).
        """
        try:
            names = [r.name for r in db.list_receivers(self.engine, active_only=True)]
        except HeimdallError as exc:
            self._show_error(f"cannot read the receivers: {exc}")
            names = []
        except Exception as exc:
            log.exception("capture form: reading the receivers failed")
            self._show_error(f"cannot read the receivers ({type(exc).__name__}): {exc}")
            names = []
        else:
            if not names:
                self._show_error(
                    "no active receivers in the database; add the default ones with "
                    "`heimdall-lab db migrate` (or one with `heimdall-lab receivers add`) "
                    "and refresh the form"
                )
        self._active = names
        chosen = [n for n in self._chosen if n not in names]
        self.receivers_select.options = [*chosen, *names]
        self.receivers_select.value = tuple(self._chosen or names)
        return names

    def choose(self) -> planning.Selection | None:
        """Choose receivers for the target in :attr:`near`, as the **Choose** button does.

        :func:`heimdall_lab.planning.select` picks :attr:`count` receivers from the
        directory in :attr:`directory_text` for the form's frequency and duration; they are
        offered and selected (they need not be in the database: a capture adds them).

        Returns
        -------
        heimdall_lab.planning.Selection or None
            The selection, or ``None`` when there was none (the reason is shown).
        """
        try:
            near = _parse_near(self.near.value)
            frequency_hz = float(self.frequency_khz.value) * 1e3
            duration_s = float(self.duration_s.value)
            validate_capture_request(frequency_hz, duration_s)
            source = self.directory_text.value.strip() or DATABASE
            entries = (
                db.directory_entries(self.engine)
                if source == DATABASE
                else list(directory.load(source))
            )
            chosen = planning.select(
                entries,
                frequency_hz,
                near=near,
                count=int(self.count.value),
                duration_s=duration_s,
            )
        except HeimdallError as exc:
            self.plan_html.value = ""
            self._show_error(f"cannot choose receivers: {exc}")
            return None
        except Exception as exc:
            log.exception("capture form: choosing receivers failed")
            self.plan_html.value = ""
            self._show_error(f"cannot choose receivers ({type(exc).__name__}): {exc}")
            return None
        self._show_error("")
        self.use_selection(chosen)
        return chosen

    def use_selection(self, selection: planning.Selection) -> None:
        """Offer and select the receivers of a selection.

        Parameters
        ----------
        selection : heimdall_lab.planning.Selection
            What :func:`heimdall_lab.planning.select` chose.
        """
        self.last_selection = selection
        self._chosen = {e.name: e.receiver() for e in selection.entries}
        # The new choice, then the database's receivers: an earlier choice's names go.
        others = [n for n in self._active if n not in self._chosen]
        self.receivers_select.options = [*self._chosen, *others]
        self.receivers_select.value = tuple(self._chosen)
        warnings = "".join(f"<br><i>warning:</i> {html.escape(w)}" for w in selection.warnings)
        self.plan_html.value = (
            f"Chose {len(self._chosen)} of {len(selection.candidates)} candidates: "
            f"{html.escape(', '.join(self._chosen))}; predicted median error "
            f"{selection.predicted_error_km:.2g} km, largest azimuth gap "
            f"{selection.azimuth_gap_deg:.0f}°{warnings}"
        )

    def close(self) -> None:
        """Close the widgets, and dispose of the engine if the form created it."""
        for w in self._all_widgets():
            w.close()
        if self._own_engine and self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def _all_widgets(self) -> list[widgets.Widget]:
        return [
            self.widget,
            self.receivers_select,
            self.frequency_khz,
            self.duration_s,
            self.mode,
            self.seed,
            self.fast,
            self.capture_button,
            self.near,
            self.count,
            self.directory_text,
            self.choose_button,
            self.plan_html,
            self.error_html,
            self.stage_label,
            self.overall_progress,
            self.receiver_box,
            self.summary_html,
            self.results_html,
            self.psd_output,
            *self.receiver_bars.values(),
            *self.receiver_states.values(),
        ]

    # -- running ---------------------------------------------------------------------------

    def run(self) -> Capture | None:
        """Capture with the form's parameters in this thread, as the button does.

        Progress, results and errors are shown in the form as for a click.

        Returns
        -------
        Capture or None
            The capture (check its ``stage`` and ``errors``), or ``None`` when nothing was
            captured: invalid parameters, an error before the capture started, or another
            capture still running. The reason is in :attr:`last_error`.
        """
        request = self._begin()
        if request is None:
            return None
        return self._execute(request)

    def start(self) -> bool:
        """Start a capture with the form's parameters in a background thread.

        Returns
        -------
        bool
            Whether a capture started (not when one is running or the parameters are invalid;
            the reason is shown in the form).
        """
        request = self._begin()
        if request is None:
            return False
        self._thread = threading.Thread(
            target=self._execute, args=(request,), name="heimdall-capture-form", daemon=True
        )
        self._thread.start()
        return True

    def wait(self, timeout: float | None = None) -> Capture | None:
        """Wait for the capture started by the button (or :meth:`start`) to finish.

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait; forever when omitted.

        Returns
        -------
        Capture or None
            :attr:`last_capture`.

        Raises
        ------
        TimeoutError
            If the capture is still running after ``timeout`` seconds.
        """
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                raise TimeoutError(f"the capture is still running after {timeout} s")
        return self.last_capture

    def _on_click(self, _button: widgets.Button) -> None:
        self.start()

    def _on_mode(self, _change: Any = None) -> None:
        emulated = self.mode.value == EMULATED
        self.seed.disabled = not emulated
        self.fast.disabled = not emulated

    def _begin(self) -> dict[str, Any] | None:
        """Claim the form and read its parameters; ``None`` when it cannot capture now."""
        with self._lock:
            if self._running:
                log.info("capture form: a capture is running; click ignored")
                return None
            try:
                request = self._request()
            except HeimdallError as exc:
                self._reset([])
                self._show_error(str(exc))
                self._not_started(None)
                return None
            self._running = True
        self.capture_button.disabled = True
        self._reset(request["receivers"])
        return request

    def _request(self) -> dict[str, Any]:
        """The capture() arguments from the form; raises ValidationError on bad input."""
        names = list(self.receivers_select.value)
        if not names:
            raise ValidationError("select at least one receiver")
        frequency_hz = float(self.frequency_khz.value) * 1e3
        duration_s = float(self.duration_s.value)
        validate_capture_request(frequency_hz, duration_s)
        request: dict[str, Any] = {
            "frequency_hz": frequency_hz,
            "duration_s": duration_s,
            "receivers": names,
            "iq_url": self.iq_url,
        }
        if self.mode.value == EMULATED:
            seed = int(self.seed.value)
            Scenario.default(seed=seed)  # a bad seed is refused before anything starts
            request["emulator"] = {"seed": seed, "realtime": not self.fast.value}
        return request

    def _emulator(
        self, request: dict[str, Any]
    ) -> contextlib.AbstractContextManager[Emulated | None]:
        """The emulator of an emulated request (serving the chosen receivers), else nothing.

        The chosen names are looked up among the database's active receivers first, as for
        a real capture, so both modes refuse the same unknown names.
        """
        options = request.get("emulator")
        if options is None:
            return contextlib.nullcontext()
        known = {r.name: r for r in db.list_receivers(self.engine, active_only=True)}
        known.update(self._chosen)
        unknown = [n for n in request["receivers"] if n not in known]
        if unknown:
            raise ValidationError(
                f"unknown or inactive receiver {unknown[0]!r}; active ones: {sorted(known)}"
            )
        chosen = [known[n] for n in request["receivers"]]
        scenario = Scenario.default(seed=options["seed"])
        if not all(r.name in {site.name for site in scenario.sites} for r in chosen):
            # Receivers chosen from a directory: the scenario is made of them, where they are.
            scenario = Scenario.default(seed=options["seed"], receivers=chosen)
        # The transmitter sends at the form's frequency, from the target when one was chosen.
        lat, lon = (
            self.last_selection.target
            if self.last_selection is not None and self.last_selection.area is None
            else (scenario.transmitter.latitude, scenario.transmitter.longitude)
        )
        transmitter = dataclasses.replace(
            scenario.transmitter,
            frequency_hz=request["frequency_hz"],
            latitude=lat,
            longitude=lon,
        )
        return emulated(
            scenario=dataclasses.replace(scenario, transmitter=transmitter),
            receivers=chosen,
            **options,
        )

    def _execute(self, request: dict[str, Any]) -> Capture | None:
        """Run one capture and show what came of it; never raises."""
        cap = None
        try:
            log.info(
                "capture form: %.0f Hz, %g s from %s",
                request["frequency_hz"],
                request["duration_s"],
                request["receivers"],
            )
            args = {k: v for k, v in request.items() if k != "emulator"}
            args["receivers"] = [self._chosen.get(n, n) for n in request["receivers"]]
            with self._emulator(request) as emu:
                if emu is not None:
                    args.update(emu.capture_options)
                cap = capture(engine=self.engine, on_progress=self._on_progress, **args)
            self.last_capture = cap
            self._show_result(cap)
        except HeimdallError as exc:
            self._show_error(str(exc))
            self._not_started(cap)
        except Exception as exc:
            log.exception("capture form: the capture failed unexpectedly")
            self._show_error(f"unexpected error ({type(exc).__name__}): {exc}")
            self._not_started(cap)
        finally:
            self._running = False
            self.capture_button.disabled = False
        return cap

    # -- showing ---------------------------------------------------------------------------

    def _show_error(self, message: str) -> None:
        self.last_error = message
        self.error_html.value = _error_html(message) if message else ""

    def _reset(self, names: list[str]) -> None:
        self._show_error("")
        self.summary_html.value = ""
        self.results_html.value = ""
        self.psd_output.outputs = ()
        self.stage_label.value = "starting"
        self.overall_progress.value = 0
        self.overall_progress.bar_style = "info"
        for w in (*self.receiver_bars.values(), *self.receiver_states.values()):
            w.close()
        self.receiver_bars = {
            n: widgets.FloatProgress(
                value=0.0, min=0.0, max=1.0, description=n, bar_style="info", style=_STYLE
            )
            for n in names
        }
        self.receiver_states = {n: widgets.Label("waiting") for n in names}
        self.receiver_box.children = [
            widgets.HBox([self.receiver_bars[n], self.receiver_states[n]]) for n in names
        ]
        self._shown = ("", {})
        self._last_refresh = 0.0

    def _not_started(self, cap: Capture | None) -> None:
        """Clear the progress display after an error before (or outside) the capture."""
        if cap is not None:
            return
        self.stage_label.value = "not started"
        self.overall_progress.value = 0
        self.receiver_box.children = []

    def _on_progress(self, cap: Capture) -> None:
        """capture() callback: refresh on stage or state changes, else at most every 0.2 s."""
        with self._progress_lock:
            progress = dict(cap.receiver_progress)
            shown = (cap.stage, {n: p.state for n, p in progress.items()})
            now = time.monotonic()
            if shown == self._shown and now - self._last_refresh < _REFRESH_S:
                return
            self._shown = shown
            self._last_refresh = now
            self._refresh(cap, progress)

    def _refresh(self, cap: Capture, progress: dict[str, Progress]) -> None:
        self.stage_label.value = f"{cap.stage}: {cap.percent:.0f} %"
        self.overall_progress.value = round(cap.percent)
        for name, p in progress.items():
            self._show_receiver(name, p.state, p.fraction, p.describe())

    def _show_receiver(self, name: str, state: str, fraction: float, text: str) -> None:
        bar = self.receiver_bars.get(name)
        if bar is None:
            return
        bar.value = fraction
        bar.bar_style = _BAR_STYLE.get(state, "")
        self.receiver_states[name].value = text

    def _show_result(self, cap: Capture) -> None:
        with self._progress_lock:
            self._refresh(cap, dict(cap.receiver_progress))
        self.overall_progress.bar_style = _STAGE_STYLE.get(cap.stage, "")
        status = cap.status()
        # Receivers that never reported progress: their final status from the table.
        for name in self.receiver_bars:
            if name not in cap.receiver_progress and name in status.index:
                row = status.loc[name]
                state = _STATUS_STATE.get(str(row["status"]), "failed")
                self._show_receiver(name, state, 1.0 if state == "done" else 0.0, state)
        self.summary_html.value = self._summary(cap)
        self.results_html.value = status_html(status)
        if cap.errors:
            self._show_error(f"capture {cap.capture_id} {cap.stage}:\n{cap.error}")
        elif cap.warnings:
            note = "\n".join(cap.warnings)
            self.error_html.value = _error_html(
                f"capture {cap.capture_id}:\n{note}", "Kept locally"
            )
        self._plot(cap)

    @staticmethod
    def _summary(cap: Capture) -> str:
        iq = (
            f"<code>{html.escape(cap.iq_url)}</code>"
            if cap.iq_url
            else "<i>not stored</i> (see the error above)"
        )
        rows = [
            ("Capture id", f"<code>{html.escape(cap.capture_id)}</code>"),
            ("Stage", html.escape(cap.stage)),
            ("IQ stored at", iq),
            ("Database", f"<code>{html.escape(cap.database_url)}</code>"),
            ("Measurement rows", str(cap.measurements_written)),
        ]
        cells = "".join(f"<tr><th align='left'>{k}</th><td>{v}</td></tr>" for k, v in rows)
        return f"<table>{cells}</table>"

    def _plot(self, cap: Capture) -> None:
        """Draw the PSD into :attr:`psd_output`; a failure to plot is shown, not raised."""
        ds = cap.dataset
        if ds is None or ds.sizes.get("receiver", 0) == 0:
            return
        # A Figure without pyplot: safe from a worker thread, and not picked up (and shown
        # again in a later cell) by the inline backend's figure manager.
        from matplotlib.figure import Figure

        try:
            fig = Figure(figsize=(9, 4), layout="constrained")
            plots.plot_psd(ds, ax=fig.add_subplot())
            self.psd_output.outputs = (_figure_output(fig),)
        except HeimdallError as exc:
            log.warning("capture form: no PSD plot: %s", exc)
        except Exception:
            log.exception("capture form: the PSD plot failed")
