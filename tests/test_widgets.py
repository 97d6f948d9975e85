"""The ipywidgets capture form, driven from Python against the emulator and the embedded DB."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from heimdall_lab import db, directory, planning
from heimdall_lab.kiwi.acquire import Progress
from heimdall_lab.store import IQStore
from heimdall_lab.tutorial import directory_snapshot as snapshot
from heimdall_lab.ui import widgets
from heimdall_lab.ui.widgets import EMULATED, REAL, CaptureForm

CHOSEN = ("Hasenberg03", "OE3AKB", "DK0TE")


def _n_captures(engine) -> int:
    return len(db.list_captures(engine, limit=100_000))


def _form(engine, iq_url, *, receivers=CHOSEN, fast=True, duration=1.0) -> CaptureForm:
    form = CaptureForm(engine=engine, iq_url=str(iq_url))
    form.frequency_khz.value = 10000.0
    form.duration_s.value = duration
    form.mode.value = EMULATED
    form.seed.value = 3
    form.fast.value = fast
    form.receivers_select.value = tuple(receivers)
    return form


def test_click_captures_stores_and_shows_results(embedded_engine, tmp_path):
    iq_url = tmp_path / "iq"
    form = CaptureForm(engine=embedded_engine, iq_url=str(iq_url))
    names = [r.name for r in db.list_receivers(embedded_engine)]
    assert list(form.receivers_select.options) == names
    assert list(form.receivers_select.value) == names  # all selected at first
    form = _form(embedded_engine, iq_url)

    form.capture_button.click()
    cap = form.wait(60)

    assert cap is not None and cap is form.last_capture
    assert cap.stage == "done", cap.errors
    assert form.last_error == "" and form.error_html.value == ""
    assert not form.running and not form.capture_button.disabled
    # Stored everywhere: the capture row, one measurement per chosen receiver, the IQ.
    assert db.get_capture(embedded_engine, cap.capture_id).status == "done"
    rows = db.measurements_for_capture(embedded_engine, cap.capture_id)
    assert sorted(rows["receiver"]) == sorted(CHOSEN)
    assert IQStore(str(iq_url)).exists(cap.capture_id)
    assert cap.parameters["seed"] == 3 and cap.parameters["realtime"] is False
    # Progress: one full green bar per receiver, the whole capture at 100.
    assert set(form.receiver_bars) == set(CHOSEN)
    for name in CHOSEN:
        assert form.receiver_bars[name].value == 1.0
        assert form.receiver_bars[name].bar_style == "success"
        assert form.receiver_states[name].value.startswith("done")
    assert form.overall_progress.value == 100
    assert form.stage_label.value.startswith("done")
    # Results: the table, the ids and the PSD plot.
    for name in CHOSEN:
        assert name in form.results_html.value
    assert "snr_db" in form.results_html.value
    assert cap.capture_id in form.summary_html.value
    assert cap.iq_url and cap.iq_url in form.summary_html.value
    (out,) = form.psd_output.outputs
    assert out["data"]["image/png"]


def test_no_receiver_selected_is_shown_not_raised(embedded_engine, tmp_path):
    form = _form(embedded_engine, tmp_path / "iq", receivers=())
    before = _n_captures(embedded_engine)
    form.capture_button.click()
    assert form.wait(5) is None
    assert "select at least one receiver" in form.error_html.value
    assert "Error" in form.error_html.value
    assert not form.running and not form.capture_button.disabled
    assert _n_captures(embedded_engine) == before


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("duration_s", 0.0, "duration must be"),
        ("frequency_khz", 0.0, "frequency must be"),
        ("frequency_khz", 40000.0, "outside receiver"),
        ("seed", -1, "seed must be"),
    ],
)
def test_invalid_parameters_are_shown_in_the_form(embedded_engine, tmp_path, field, value, message):
    form = _form(embedded_engine, tmp_path / "iq")
    getattr(form, field).value = value
    before = _n_captures(embedded_engine)
    assert form.run() is None
    assert message in form.last_error
    assert message in form.error_html.value
    assert form.last_capture is None and form.stage_label.value == "not started"
    assert _n_captures(embedded_engine) == before


def test_unknown_receiver_is_shown_in_the_form(embedded_engine, tmp_path):
    form = _form(embedded_engine, tmp_path / "iq")
    # A receiver that is no longer (or never was) active in the database.
    form.receivers_select.options = [*form.receivers_select.options, "GHOST"]
    form.receivers_select.value = ("Hasenberg03", "GHOST")
    before = _n_captures(embedded_engine)
    assert form.run() is None
    assert "unknown or inactive receiver 'GHOST'" in form.last_error
    assert "unknown or inactive receiver &#x27;GHOST&#x27;" in form.error_html.value
    assert _n_captures(embedded_engine) == before


def test_stage_failure_is_shown_in_the_form(embedded_engine, tmp_path, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    monkeypatch.setenv("HEIMDALL_HOME", str(blocked / "home"))  # no local fallback either
    form = _form(embedded_engine, blocked / "iq", receivers=("Hasenberg03", "DK0TE"))
    cap = form.run()
    assert cap is not None and cap.stage == "failed"
    assert "storing IQ" in form.last_error
    assert "storing IQ" in form.error_html.value and cap.capture_id in form.error_html.value
    assert form.overall_progress.bar_style == "danger"
    assert "not stored" in form.summary_html.value
    # What was received was measured, and the measurements are shown (the IQ itself could
    # be kept nowhere, so there is no spectrum to draw).
    assert "Hasenberg03" in form.results_html.value and "DK0TE" in form.results_html.value
    assert cap.iq_url is None and sorted(cap.metrics.index) == ["DK0TE", "Hasenberg03"]


def test_unexpected_errors_are_logged_and_shown(embedded_engine, tmp_path, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(widgets, "capture", broken)
    form = _form(embedded_engine, tmp_path / "iq")
    with caplog.at_level(logging.ERROR, logger="heimdall_lab.ui.widgets"):
        assert form.run() is None
    assert "RuntimeError" in form.error_html.value and "boom" in form.error_html.value
    assert any(r.exc_info for r in caplog.records)
    assert not form.running and not form.capture_button.disabled


def test_mode_switch_enables_and_disables_the_seed(embedded_engine):
    form = CaptureForm(engine=embedded_engine)
    assert form.mode.value == EMULATED
    assert not form.seed.disabled and not form.fast.disabled
    form.mode.value = REAL
    assert form.seed.disabled and form.fast.disabled
    form.mode.value = EMULATED
    assert not form.seed.disabled and not form.fast.disabled


def test_double_click_starts_one_capture(embedded_engine, tmp_path):
    form = _form(embedded_engine, tmp_path / "iq", receivers=("Hasenberg03", "DK0TE"), fast=False)
    before = _n_captures(embedded_engine)
    form.capture_button.click()
    first = form._thread
    assert form.running and form.capture_button.disabled
    form.capture_button.click()
    assert form.start() is False
    assert form._thread is first
    cap = form.wait(60)
    assert cap is not None and cap.stage == "done", cap.errors
    assert _n_captures(embedded_engine) == before + 1
    assert not form.capture_button.disabled


def test_unreachable_database_is_shown_not_raised():
    form = CaptureForm(database_url="postgresql://nobody:secret@127.0.0.1:1/heimdall")
    assert "cannot read the receivers" in form.error_html.value
    assert "secret" not in form.error_html.value
    assert form.receivers_select.options == ()
    form.close()


def test_display_and_close(embedded_engine, capsys):
    form = CaptureForm(engine=embedded_engine)
    form._ipython_display_()  # outside IPython this prints the widget's repr
    assert "VBox" in capsys.readouterr().out
    form.close()
    assert form.widget.comm is None


def test_progress_text_never_reads_more_than_the_expected_samples():
    # A real server sent 36352 samples for 36004 expected.
    over = Progress("F4JOY", "receiving", 36352, 36004)
    assert over.describe() == "receiving, 36,004/36,004 samples (100 %)"
    half = Progress("F4JOY", "retrying", 18002, 36004, attempt=2, message="reset")
    assert half.describe() == ("retrying, 18,002/36,004 samples (50 %) (attempt 2): reset")


def test_status_table_formats_numbers():
    status = pd.DataFrame(
        {
            "status": ["ok", "failed"],
            "samples": [120000, 0],
            "sample_rate_hz": [12000.0, np.nan],
            "snr_db": [23.456, np.nan],
            "cn0_dbhz": [61.04, np.nan],
            "frequency_offset_hz": [0.01234, np.nan],
        },
        index=pd.Index(["F4JOY", "DK0TE"], name="receiver"),
    )
    out = widgets.status_html(status)
    assert out.startswith("<table")
    assert "12,000" in out and "e+04" not in out and "120,000" in out
    assert ">23.5<" in out and ">61.0<" in out and ">+0.012<" in out
    assert "nan" not in out.lower()
    assert widgets.status_html(pd.DataFrame()) == ""


def test_choose_picks_receivers_from_a_directory_and_captures_from_them(fresh_database, tmp_path):
    embedded_engine = db.get_engine(fresh_database)  # the capture adds receivers to it
    iq_url = tmp_path / "iq"
    form = CaptureForm(engine=embedded_engine, iq_url=str(iq_url), directory_source=str(snapshot()))
    form.frequency_khz.value = 77.5
    form.duration_s.value = 1.0
    form.near.value = "50.0152, 9.0112"
    form.count.value = 4
    chosen = form.choose()

    assert chosen is not None and form.last_selection is chosen
    names = [e.name for e in chosen.entries]
    assert len(names) == 4
    assert list(form.receivers_select.value) == names
    assert set(names) <= set(form.receivers_select.options)
    assert "predicted median error" in form.plan_html.value and form.last_error == ""
    # None of them is a default receiver: the emulator is made of them, where they are.
    assert not set(names) & {r.name for r in db.list_receivers(embedded_engine)}
    form.seed.value = 2
    form.fast.value = True
    cap = form.run()
    assert cap is not None and cap.stage == "done", cap and cap.errors
    rows = db.measurements_for_capture(embedded_engine, cap.capture_id)
    assert sorted(rows["receiver"]) == sorted(names)
    # The emulated transmitter sends at the form's frequency from the chosen target.
    tx = cap.parameters["scenario"]["transmitter"]
    assert tx["frequency_hz"] == 77.5e3 and (tx["latitude"], tx["longitude"]) == chosen.target
    assert cap.metrics["signal_present"].all(), cap.metrics
    assert (cap.metrics["frequency_offset_hz"].abs() < 1.0).all()
    stored = {r.name: r for r in db.list_receivers(embedded_engine, active_only=False)}
    for entry in chosen.entries:  # registered with their real positions
        assert stored[entry.name].latitude == pytest.approx(entry.latitude)
    form.close()
    embedded_engine.dispose()


@pytest.mark.parametrize(
    ("near", "message"),
    [("", "near: give 'lat, lon'"), ("95, 9", "near"), ("fifty, nine", "near: give")],
)
def test_choose_shows_bad_input_in_the_form(embedded_engine, near, message):
    form = CaptureForm(engine=embedded_engine, directory_source=str(snapshot()))
    form.near.value = "50, 9"
    assert form.choose() is not None and form.plan_html.value
    before = list(form.receivers_select.value)
    form.near.value = near
    assert form.choose() is None
    assert message in form.last_error and "cannot choose receivers" in form.last_error
    assert form.plan_html.value == ""  # no earlier choice left beside the error
    assert list(form.receivers_select.value) == before


def test_choose_from_an_unreadable_directory_is_shown(embedded_engine, tmp_path):
    bad = tmp_path / "directory.js"
    bad.write_text("var kiwisdr_com = [ {", encoding="utf-8")
    form = CaptureForm(engine=embedded_engine, directory_source=str(bad))
    form.near.value = "50, 9"
    assert form.choose() is None
    assert "cannot choose receivers" in form.error_html.value


def test_a_selection_made_elsewhere_is_offered_and_selected(embedded_engine):
    entries = list(directory.load(snapshot()))
    chosen = planning.select(entries, 77.5e3, near=(50.0152, 9.0112), count=3)
    form = CaptureForm(engine=embedded_engine, selection=chosen)
    assert list(form.receivers_select.value) == [e.name for e in chosen.entries]
    form.refresh_receivers()  # a refresh keeps the choice
    assert list(form.receivers_select.value) == [e.name for e in chosen.entries]


def test_a_second_choice_replaces_the_first(embedded_engine):
    form = CaptureForm(engine=embedded_engine, directory_source=str(snapshot()))
    form.frequency_khz.value = 77.5
    form.near.value = "50, 9"
    first = [e.name for e in form.choose().entries]
    form.near.value = "40, -4"
    second = [e.name for e in form.choose().entries]
    active = [r.name for r in db.list_receivers(embedded_engine, active_only=True)]
    gone = set(first) - set(second) - set(active)
    assert gone and not gone & set(form.receivers_select.options)
    assert list(form.receivers_select.options) == second + [n for n in active if n not in second]
