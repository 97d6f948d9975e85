"""Every notebook runs under nbmake (small parameters) and under papermill (other parameters)."""

from __future__ import annotations

import json
import re
import signal
import uuid
from dataclasses import dataclass

import nbformat
import numpy as np
import pandas as pd
import pytest
from nbmake.nb_run import NotebookRun
from papermill.iorw import load_notebook_node
from papermill.parameterize import parameterize_notebook

from heimdall_lab import db
from heimdall_lab.errors import ValidationError
from heimdall_lab.notebooks import NOTEBOOK_DIR, notebook_parameters, run_notebook
from heimdall_lab.store import IQStore

NOTEBOOKS = sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb"))
#: Small parameters per notebook, so the whole set runs in seconds.
SMALL = {
    "benchmark": {"quick": True},
    "capture": {"duration_s": 1.0, "realtime": False, "seed": 1},
    "explore": {"bucket": "1s"},
    "form": {},
    "localize": {"method": "envelope"},
    "plan": {"count": 4},
    "session": {"bucket": "1s"},
}
#: Notebooks that show something recorded before: the fixture giving their parameters.
RECORDED = {"session": "recorded_session"}


def test_every_notebook_has_a_parameters_cell_and_small_parameters():
    assert NOTEBOOKS, "no notebooks found"
    for name in NOTEBOOKS:
        nb = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{name}: needs exactly one cell tagged 'parameters'"
        assert name in SMALL, f"{name}: give it small parameters in SMALL"
        assert set(SMALL[name]) <= set(notebook_parameters(name))


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_under_nbmake(env, name, request):
    nb = load_notebook_node(str(NOTEBOOK_DIR / f"{name}.ipynb"))
    path = env / f"{name}.ipynb"
    params = dict(SMALL[name])
    if name in RECORDED:
        params.update(request.getfixturevalue(RECORDED[name]).parameters)
    nbformat.write(parameterize_notebook(nb, params), path)
    result = NotebookRun(path, 600).execute()
    assert result.error is None, result.error and result.error.summary


def test_plan_notebook_maps_the_chosen_set_for_an_area(env):
    params = {"frequency_hz": 10e6, "near": None, "area": [47.0, 53.0, 5.0, 13.0], "count": 5}
    out = run_notebook("plan", params, output_dir=env / "reports")
    nb = nbformat.read(out, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert "predicted median error" in text and "read 950, kept 940" in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 2  # the map with its contours, and the error against the count
    tables = "".join(o.get("data", {}).get("text/plain", "") for o in outputs)
    assert tables.count("\n") >= 5 and "azimuth_deg" in tables


def test_capture_notebook_under_papermill_stores_the_capture(env, embedded_engine):
    capture_id = uuid.uuid4().hex
    params = {
        "duration_s": 1.5,
        "frequency_hz": 10e6,
        "receivers": ["Hasenberg03", "DK0TE", "OE3AKB"],
        "seed": 7,
        "realtime": False,
        "start_utc": "2026-10-01T08:00:00",
        "capture_id": capture_id,
    }
    out = run_notebook("capture", params, output_dir=env / "reports")
    assert out.name == f"capture-{capture_id}.ipynb" and out.is_file()
    executed = nbformat.read(out, as_version=4)
    text = json.dumps([c.get("outputs", []) for c in executed.cells])
    assert f"capture {capture_id}: done" in text
    assert "image/png" in text  # the PSD, the waterfall and the map were drawn
    _assert_bars_complete(executed, params["receivers"])
    record = db.get_capture(embedded_engine, capture_id)
    assert record.status == "done"
    assert record.parameters["seed"] == 7 and record.parameters["receivers"] == params["receivers"]
    rows = db.measurements_for_capture(embedded_engine, capture_id, include_psd=False)
    assert sorted(rows.receiver) == sorted(params["receivers"])
    ds = IQStore(str(env / "iq")).open(capture_id)
    assert sorted(ds.receiver.values) == sorted(params["receivers"])
    assert np.all(ds.n_samples.values >= 1.5 * 12000)


def _assert_bars_complete(executed, receivers) -> None:
    """One progress bar per receiver, whose last state is complete; a few output lines."""
    cell = next(c for c in executed.cells if "progress=True" in c.source)
    lines = [
        line
        for output in cell.outputs
        for value in (output.get("text", ""), *output.get("data", {}).values())
        if isinstance(value, str)
        for line in value.splitlines()
    ]
    assert len(lines) < 3 * len(receivers) + 10, lines  # not one line per update
    views = [
        o for o in cell.outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
    ]
    assert len(views) == len(receivers)
    state = executed.metadata.widgets["application/vnd.jupyter.widget-state+json"]["state"]
    bars = [m["state"] for m in state.values() if m["model_name"] == "FloatProgressModel"]
    assert len(bars) == len(receivers)
    assert all(b["value"] == b["max"] > 1 and b["bar_style"] == "success" for b in bars), bars
    texts = [m["state"]["value"] for m in state.values() if m["model_name"] == "HTMLModel"]
    for name in receivers:
        assert f"{name}:\u2007100%" in texts, texts
    percents = [int(n) for t in texts for n in re.findall(r"(\d+)%", t)]
    assert percents and max(percents) == 100


def test_explore_notebook_under_papermill_shows_a_chosen_capture(env):
    first = uuid.uuid4().hex
    run_notebook(
        "capture",
        {"duration_s": 1.0, "realtime": False, "seed": 3, "capture_id": first},
        output_dir=env / "reports",
    )
    out = run_notebook(
        "explore",
        {
            "capture_id": first,
            "bucket": "5s",
            "receivers": ["Hasenberg03", "DB3TH"],
            "interval_s": [0.25, 0.75],
        },
        output_dir=env / "reports",
    )
    executed = nbformat.read(out, as_version=4)
    text = json.dumps([c.get("outputs", []) for c in executed.cells])
    assert f"showing {first}" in text
    # metrics per row and per bucket over time; the interval's PSDs and waterfalls
    assert text.count("image/png") == 4


def test_localize_notebook_under_papermill_locates_a_stored_capture(env, embedded_engine):
    from heimdall_lab.emulate import emulated
    from heimdall_lab.emulate.scenario import Scenario, Transmitter
    from heimdall_lab.pipeline import capture

    truth = (49.0, 9.5)  # inside the seven default receivers' hull
    reference = (48.5, 7.0)  # a second transmitter at a known place, for the calibration
    captures = {}
    for name, where in (("unknown", truth), ("reference", reference)):
        tx = Transmitter(*where, 10e6, modulation="ook")
        with emulated(scenario=Scenario.default(seed=21, transmitter=tx), realtime=False) as emu:
            captures[name] = capture(10e6, 6.0, engine=embedded_engine, **emu.capture_options)
        assert captures[name].stage == "done"
    cap = captures["unknown"]
    out = run_notebook(
        "localize",
        {
            "capture_id": cap.capture_id,
            "truth": list(truth),
            "method": "auto",
            "propagation": "ground",
            "reference_capture_id": captures["reference"].capture_id,
            "reference_latitude": reference[0],
            "reference_longitude": reference[1],
        },
        output_dir=env / "reports",
    )
    executed = nbformat.read(out, as_version=4)
    text = json.dumps([c.get("outputs", []) for c in executed.cells])
    assert text.count("image/png") >= 3  # envelopes, correlations, the map
    assert "calibrated on a reference at 48.5000 N 7.0000 E" in text
    assert "region includes: statistical" in text and "calibration" in text
    assert "weighted_us" in text  # the error budget table
    assert "no receiver dropped by the robust fit" in text
    assert "from the known position, inside the 95% region" in text
    stored = db.list_localizations(embedded_engine, cap.capture_id)
    assert len(stored) == 1
    row = stored.iloc[0]
    assert row.method == "tdoa" and row.n_receivers == 7
    from heimdall_lab.geo import distance_m

    assert distance_m(row.latitude, row.longitude, *truth) < 10_000


def test_every_packaged_notebook_takes_its_urls_from_the_environment_when_none():
    # The runner hands a URL with credentials to the kernel in the variable the parameter's
    # comment names (see tests/test_secrets.py for a run); every notebook must name it.
    for name in NOTEBOOKS:
        declared = notebook_parameters(name)
        for parameter, variable in [
            ("database_url", "HEIMDALL_DATABASE_URL"),
            ("iq_url", "HEIMDALL_IQ_URL"),
        ]:
            if parameter in declared:
                assert declared[parameter]["default"] == "None", (name, parameter)
                assert variable in declared[parameter]["help"], (name, parameter)


def test_credentials_a_notebook_cannot_take_from_the_environment_are_refused(tmp_path):
    secret = "s3://AKID:TOPSECRET@bucket/x.wav"
    with pytest.raises(ValidationError, match=r"\['files'\] hold a password or key") as err:
        run_notebook("localize", {"files": [secret]}, output_dir=tmp_path)
    assert "TOPSECRET" not in str(err.value)
    assert not any(tmp_path.rglob("*"))  # refused before anything is written


def test_a_run_prints_no_kernel_noise(env, capfd, monkeypatch):
    """The kernel's sockets are encrypted, and its shutdown sends it no SIGINT: neither the
    unencrypted-TCP warning nor "KeyboardInterrupt caught in kernel" reaches stderr."""
    from jupyter_client import AsyncKernelManager

    signals = []
    signal_kernel = AsyncKernelManager._async_signal_kernel

    async def recorded(self, signum):
        signals.append(signum)
        await signal_kernel(self, signum)

    monkeypatch.setattr(AsyncKernelManager, "_async_signal_kernel", recorded)
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(
            "from ipykernel.kernelapp import IPKernelApp\n"
            "print('encrypted:', IPKernelApp.instance().curve_secretkey is not None, x)"
        ),
    ]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, env / "tiny.ipynb")
    out = run_notebook(env / "tiny.ipynb", {"x": 2}, output_dir=env / "reports")
    executed = nbformat.read(out, as_version=4)
    assert "encrypted: True 2" in executed.cells[-1].outputs[0]["text"]
    assert signal.SIGINT not in signals
    err = capfd.readouterr().err
    assert "without encryption" not in err and "KeyboardInterrupt" not in err


@dataclass(frozen=True)
class RecordedSession:
    """A session recorded from emulated receivers, with a detection event written for it."""

    session_id: str
    iq_url: str
    receivers: list[str]
    captures: list[str]
    event: dict

    @property
    def parameters(self) -> dict:
        return {"session_id": self.session_id, "iq_url": self.iq_url}


@pytest.fixture(scope="module")
def recorded_session(embedded_engine, tmp_path_factory) -> RecordedSession:
    """Two sweeps over two frequencies from three emulated receivers on loopback, streamed in
    real time (about 15 s), and one detection event on a capture of the second sweep."""
    from heimdall_lab import session

    folder = tmp_path_factory.mktemp("recorded-session")
    with pytest.MonkeyPatch.context() as mp:  # module scope: the per-test home is not set yet
        mp.setenv("HEIMDALL_HOME", str(folder / "home"))
        mp.setenv("XDG_DATA_HOME", str(folder / "xdg"))
        run = session.start(
            {
                "frequencies": [10e6, 10.0015e6],
                "dwell_s": 2,
                "sweeps": 2,
                "interval_s": 1,
                "emulate": 3,
                "name": "notebook test",
            },
            engine=embedded_engine,
            iq_url=str(folder / "iq"),
            home=str(folder / "home"),
            progress=False,
        )
    assert run.status == "done", run.error
    captures = db.session_captures(embedded_engine, run.session_id)
    assert list(captures.step) == [0, 1, 2, 3] and set(captures.status) == {"done"}
    rows = db.measurements_for_capture(
        embedded_engine, captures.capture_id.iloc[2], include_psd=False
    )
    receivers = sorted(rows.receiver.unique())
    assert len(receivers) == 3
    start = rows.timestamp_utc.min()
    event = {
        "capture_id": captures.capture_id.iloc[2],
        "receiver": receivers[1],
        "start_utc": start,
        "end_utc": start + pd.Timedelta("0.5s"),
        "statistic": 40.0,
        "threshold": 12.0,
        "pfa": 1e-6,
    }
    assert db.write_events(embedded_engine, [event]) == 1
    return RecordedSession(
        run.session_id, str(folder / "iq"), receivers, list(captures.capture_id), event
    )


def test_session_notebook_under_papermill_shows_the_recorded_session(
    env, embedded_engine, recorded_session
):
    rec = recorded_session
    out = run_notebook(
        "session",
        {**rec.parameters, "bucket": "1s", "interval_s": [0.25, 1.25]},
        output_dir=env / "reports",
    )
    executed = nbformat.read(out, as_version=4)
    outputs = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert f"session {rec.session_id} (notebook test): done, 4 of 4 steps done" in text
    assert "continuous, 10000.000, 10001.500 kHz, 2 s each, sweeps: 2" in text
    assert f"4 of its 4 captures in {rec.iq_url}; showing {rec.captures[0]}" in text
    tables = [o["data"]["text/plain"] for o in outputs if "text/plain" in o.get("data", {})]
    steps = next(t for t in tables if "capture_id" in t and "step" in t)
    assert all(c in steps for c in rec.captures)
    # measurements per receiver (rows) and frequency (columns) over the heatmaps' grid
    coverage = next(t for t in tables if t.startswith("frequency_hz"))
    lines = coverage.splitlines()
    assert "10000000.0" in lines[0] and "10001500.0" in lines[0]
    counted = {line.split()[0]: [int(v) for v in line.split()[1:]] for line in lines[2:]}
    assert sorted(counted) == rec.receivers
    stats = db.measurement_stats(embedded_engine, session_id=rec.session_id, bucket="1s")
    for name, (at_first, at_second) in counted.items():
        mine = stats[stats.receiver == name]
        assert at_first == mine[mine.frequency_hz == 10e6].n.sum() > 0
        assert at_second == mine[mine.frequency_hz == 10.0015e6].n.sum() > 0
    events = next(t for t in tables if "start_utc" in t)
    assert rec.event["receiver"] in events and rec.event["capture_id"] in events
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 4  # SNR and occupancy heatmaps, the interval's PSD and waterfalls


def test_session_notebook_shows_the_newest_session_by_default(env, embedded_engine):
    from heimdall_lab import session

    plan = {"frequencies": [7.1e6], "dwell_s": 1, "emulate": 1}
    pending = session.start(plan, engine=embedded_engine, run=False, progress=False)
    out = run_notebook("session", {}, output_dir=env / "reports")
    executed = nbformat.read(out, as_version=4)
    text = json.dumps([c.get("outputs", []) for c in executed.cells])
    assert f"session {pending.session_id}: pending, 0 of 1 steps done" in text
    assert "0 bucket rows, 0 receivers, 0 events" in text
    assert "0 of its 0 captures" in text and "image/png" not in text
