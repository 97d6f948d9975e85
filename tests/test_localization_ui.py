"""The localization's map, tables and failure report: region, zoom, dropped receivers, budget.

The results are solved from exact delays of synthetic networks (fast, and their region is
known); the failure path runs the localize notebook through the ``heimdall-lab run`` command on
an emulated capture of a plain carrier, which has no timing structure to correlate.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import matplotlib
import numpy as np
import pytest
from scipy import ndimage

from heimdall_lab import geo
from heimdall_lab.errors import ValidationError
from heimdall_lab.localize import Localization, PairDelay, ReceiverTiming
from heimdall_lab.localize.rssi import locate_rssi
from heimdall_lab.localize.solver import solve_tdoa
from heimdall_lab.ui.localization_plot import (
    budget_frame,
    errors_included,
    pairs_frame,
    plot_localization,
    receivers_frame,
)

matplotlib.use("Agg")
import matplotlib.pyplot as plt

#: Five receivers across Europe (positions of default receivers) and a transmitter inside.
EUROPE = {
    "F4JOY": (45.27, 2.92),
    "Purmerend": (52.50, 4.99),
    "North-Shropshire-UK": (52.89, -2.64),
    "OE3AKB": (48.32, 15.58),
    "DK0TE": (47.67, 9.45),
}
TX = (50.0, 8.5)
#: Three receivers and a transmitter outside them whose hyperbolae cross twice: two lobes.
TRIANGLE = {"A": (48.0, 2.0), "B": (52.0, 5.0), "C": (47.5, 9.0)}
TWO_LOBES_TX = (56.0, 5.0)
#: An error budget as locate_dataset states it.
PARTS = [
    "statistical (spread of the chunk delays)",
    "estimator disagreement (envelope vs complex)",
    "triangle closure (0.00 us per pair)",
    "receiver timing prior 1 us per receiver (stated)",
]


def _solve(
    sites: dict[str, tuple[float, float]],
    tx: tuple[float, float],
    sigma: float,
    *,
    bias: dict[str, float] | None = None,
    receiver_sigma_s: float = 0.0,
) -> Localization:
    """Solve the exact delays (plus a timing bias per receiver) of every pair."""
    names = list(sites)
    arrival = {
        n: float(geo.distance_m(*tx, *sites[n])) / geo.SPEED_OF_LIGHT + (bias or {}).get(n, 0.0)
        for n in names
    }
    pairs = list(itertools.combinations(range(len(names)), 2))
    delays = [arrival[names[a]] - arrival[names[b]] for a, b in pairs]
    return solve_tdoa(
        [sites[n][0] for n in names],
        [sites[n][1] for n in names],
        pairs,
        delays,
        sigma,
        names=names,
        receiver_sigma_s=receiver_sigma_s,
    )


def _with_budget(result: Localization, parts: list[str] = PARTS) -> Localization:
    rows = [
        {
            "pair": f"{p.receiver_a}-{p.receiver_b}",
            "statistical_s": p.sigma_s / 2,
            "estimators_s": p.sigma_s * math.sqrt(3) / 2,
            "subbands_s": math.nan,
            "systematic_s": p.sigma_s * math.sqrt(3) / 2,
            "total_s": p.sigma_s,
        }
        for p in result.pairs
    ]
    budget = {"parts": parts, "closure_sigma_s": 0.0, "receiver_sigma_s": 1e-6, "pairs": rows}
    return replace(result, error_budget=budget)


def _zoom(ax) -> list:
    return [a for a in [*ax.figure.axes, *ax.child_axes] if a.get_label() == "zoom"]


def _pieces(collection) -> int:
    """The separate polygons (or lines) of a contour set."""
    from matplotlib.path import Path

    return sum(int(np.sum(p.codes == Path.MOVETO)) for p in collection.get_paths() if len(p))


def _region_contours(ax) -> list:
    """The region's outline(s): contour sets in the region's colour."""
    from matplotlib.contour import ContourSet

    out = []
    for c in ax.collections:
        if isinstance(c, ContourSet) and not c.filled:
            colour = matplotlib.colors.to_rgba(c.get_edgecolor()[0])
            if colour == matplotlib.colors.to_rgba("red"):
                out.append(c)
    return out


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def europe() -> Localization:
    return _with_budget(_solve(EUROPE, TX, 2e-7, receiver_sigma_s=1e-7))


# ------------------------------------------------------------------------------ the map


def test_region_is_drawn_as_the_uncertainty_with_the_ellipse_as_a_dashed_summary(europe):
    ax = plot_localization(europe, truth=TX, zoom=False)
    labels = ax.get_legend_handles_labels()[1]
    assert "95% likelihood region" in labels and "95% ellipse (summary)" in labels
    ellipse = next(line for line in ax.get_lines() if line.get_label() == "95% ellipse (summary)")
    assert ellipse.get_linestyle() == "--"
    outlines = _region_contours(ax)
    assert outlines and _pieces(outlines[0]) == 1
    # The outline is the region's threshold contour: its vertices have delta chi2 = threshold.
    verts = outlines[0].get_paths()[0].vertices
    delta = europe.delta_chi2(verts[:, 1], verts[:, 0])
    assert np.median(np.abs(delta - europe.region.attrs["threshold"])) < 0.5
    title = ax.get_title()
    assert "region includes: statistical, estimators, closure 0.00 us, receiver prior 1 us" in title


def test_a_region_too_small_for_the_map_gets_a_zoom_panel_that_shows_it(europe):
    ax = plot_localization(europe, truth=TX)
    (zax,) = _zoom(ax)
    assert zax in ax.figure.axes and len(ax.figure.axes) == 3  # map, colour bar, zoom
    lo0, lo1 = zax.get_xlim()
    la0, la1 = zax.get_ylim()
    region = europe.region
    inside = region.where(region <= region.attrs["threshold"]).dropna("latitude", how="all")
    inside = inside.dropna("longitude", how="all")
    assert la0 < float(inside.latitude.min()) and float(inside.latitude.max()) < la1
    assert lo0 < float(inside.longitude.min()) and float(inside.longitude.max()) < lo1
    assert (la1 - la0) * 111 < 2  # km: the region is about 200 m across
    assert _region_contours(zax)  # drawn in the zoom too
    assert "km across" in zax.get_title()
    # On the map, the zoom's area is marked.
    # (matplotlib >= 3.10 draws it as an InsetIndicator holding the rectangle)
    boxes = [getattr(a, "rectangle", a) for a in ax.get_children()]
    boxes = [b for b in boxes if isinstance(b, matplotlib.patches.Rectangle)]
    assert any(b.get_width() == pytest.approx(lo1 - lo0) for b in boxes)


def test_on_given_axes_the_zoom_is_an_inset_clear_of_the_estimate_and_the_legend(europe):
    fig, ax = plt.subplots(figsize=(8, 7))
    assert plot_localization(europe, ax, truth=TX) is ax
    (zax,) = _zoom(ax)
    assert zax in ax.child_axes
    fig.canvas.draw()
    box = zax.get_window_extent()
    x, y = ax.transData.transform((europe.longitude, europe.latitude))
    assert not (box.x0 <= x <= box.x1 and box.y0 <= y <= box.y1)
    legend = ax.get_legend().get_window_extent()
    assert not box.overlaps(legend)


def test_no_zoom_when_asked_or_when_the_region_fills_the_map(europe):
    assert not _zoom(plot_localization(europe, zoom=False))
    inside = europe.region.where(europe.region <= europe.region.attrs["threshold"])
    lat = inside.dropna("latitude", how="all").latitude
    lon = inside.dropna("longitude", how="all").longitude
    extent = (  # twice the region's own size
        float(2 * lat.min() - lat.max()),
        float(2 * lat.max() - lat.min()),
        float(2 * lon.min() - lon.max()),
        float(2 * lon.max() - lon.min()),
    )
    ax = plot_localization(europe, extent=extent, resolution=60)
    assert not _zoom(ax) and _region_contours(ax)


def test_a_region_of_two_lobes_is_drawn_in_two_pieces():
    result = _solve(TRIANGLE, TWO_LOBES_TX, 2e-5)
    region = result.region
    _, lobes = ndimage.label(region.values <= region.attrs["threshold"])
    assert lobes == 2 and result.ambiguous
    ax = plot_localization(result, truth=TWO_LOBES_TX, resolution=120)
    assert sum(_pieces(c) for c in _region_contours(ax)) >= 2
    la0, la1 = ax.get_ylim()
    assert la0 <= TWO_LOBES_TX[0] <= la1  # the map is widened to show the truth
    assert "other solution" in ax.get_legend_handles_labels()[1]


def test_a_dropped_receiver_is_marked_apart_and_the_legend_says_why():
    result = _solve(EUROPE, TX, 1e-6, bias={"OE3AKB": 40e-6})
    assert [d["receiver"] for d in result.dropped] == ["OE3AKB"]
    ax = plot_localization(result, zoom=False)
    labels = ax.get_legend_handles_labels()[1]
    dropped = [lab for lab in labels if lab.startswith("dropped OE3AKB: its pairs disagree")]
    assert len(dropped) == 1 and "chi2/dof" in dropped[0]
    marks = [c for c in ax.collections if c.get_label() == dropped[0]]
    x, y = marks[0].get_offsets()[0]
    assert (y, x) == pytest.approx(EUROPE["OE3AKB"])
    used = next(c for c in ax.collections if c.get_label() == "receivers")
    assert len(used.get_offsets()) == 4


def test_receivers_that_took_no_part_say_why():
    result = _solve(EUROPE, TX, 1e-6)
    receivers = [*result.receivers, ReceiverTiming("Nofix", 46.0, 6.0, reason="no GNSS fix")]
    ax = plot_localization(replace(result, receivers=receivers), zoom=False, resolution=80)
    labels = ax.get_legend_handles_labels()[1]
    assert "not used: Nofix (no GNSS fix)" in labels
    assert "Nofix" in [t.get_text() for t in ax.texts]


def test_results_without_a_region_keep_their_ellipse_as_the_uncertainty():
    result = _solve(EUROPE, TX, 1e-6)
    bare = replace(result, region=None, pair_covariance_s2=np.zeros((0, 0)))
    ax = plot_localization(bare, zoom=False, resolution=80)
    labels = ax.get_legend_handles_labels()[1]
    assert "95% ellipse" in labels and "95% likelihood region" not in labels
    assert not _region_contours(ax)
    # The chi-square map falls back to the independent errors.
    assert ax.figure.axes[-1].get_ylabel() == "log10(1 + chi2)"


def test_rssi_results_draw_as_before():
    names = list(EUROPE)
    power = [-40.0 - 20 * math.log10(geo.distance_m(*TX, *EUROPE[n]) / 1e3) for n in names]
    result = locate_rssi(
        [EUROPE[n][0] for n in names], [EUROPE[n][1] for n in names], power, names=names
    )
    ax = plot_localization(result, truth=TX)
    labels = ax.get_legend_handles_labels()[1]
    assert result.kind == "rssi" and "estimate" in labels and "95% ellipse" in labels
    assert "\n" not in ax.get_title()  # no error budget to state
    with pytest.raises(ValidationError):
        plot_localization("nope")
    with pytest.raises(ValidationError, match="extent"):
        plot_localization(result, extent=(1, 2))


# ------------------------------------------------------------------------------ tables


def test_budget_frame_gives_each_part_and_what_the_fit_weighed_in_microseconds():
    result = _with_budget(_solve(EUROPE, TX, 2e-6, receiver_sigma_s=1e-6))
    frame = budget_frame(result)
    assert list(frame.columns) == [
        "pair",
        "used",
        "statistical_us",
        "estimators_us",
        "subbands_us",
        "systematic_us",
        "total_us",
        "receivers_us",
        "weighted_us",
    ]
    assert len(frame) == 10 and frame["used"].all()
    assert frame["total_us"].to_numpy() == pytest.approx(2.0)
    assert frame["statistical_us"].to_numpy() == pytest.approx(1.0)
    assert frame["subbands_us"].isna().all()
    # Two receivers of 1 us each enter every pair.
    assert frame["receivers_us"].to_numpy() == pytest.approx(math.sqrt(2))
    inflate, scale = result.settings["inflate"], result.settings["scale"]
    assert frame["weighted_us"].to_numpy() == pytest.approx(math.sqrt((inflate * 4 + 2) * scale))
    assert frame.attrs["parts"] == PARTS and frame.attrs["receiver_sigma_us"] == 1.0


def test_budget_frame_of_a_dropped_receiver_and_of_a_result_without_a_budget():
    result = _with_budget(_solve(EUROPE, TX, 1e-6, bias={"OE3AKB": 40e-6}))
    frame = budget_frame(result)
    gone = frame[frame["pair"].str.contains("OE3AKB")]
    assert len(gone) == 4 and not gone["used"].any() and gone["weighted_us"].isna().all()
    assert frame.loc[frame["used"], "weighted_us"].notna().all()
    empty = budget_frame(Localization(50.0, 8.0, kind="rssi"))
    assert empty.empty and "total_us" in empty.columns
    with pytest.raises(ValidationError):
        budget_frame(None)


def test_errors_included_abbreviates_each_part_of_the_budget():
    parts = [
        *PARTS,
        "sub-band spread",
        "stated systematic 2 us per pair",
        "reference-emitter calibration (its uncertainty)",
        "sky-wave layer height +-20% (receivers beyond the ground range)",
        "scaled by the fit's reduced chi-square (1.52)",
        "something new (with details)",
    ]
    result = replace(Localization(50.0, 8.0), error_budget={"parts": parts})
    assert errors_included(result) == (
        "statistical, estimators, closure 0.00 us, receiver prior 1 us, sub-bands, "
        "stated 2 us/pair, calibration, sky-wave layer +-20%, x reduced chi2 1.52, "
        "something new"
    )
    assert errors_included(Localization(50.0, 8.0)) == ""


def test_pairs_and_receivers_frames_of_a_failed_localization():
    pairs = [
        PairDelay("A", "B", 1e-4, 2e-6, coefficient=0.02, used=False, reason="coefficient 0.02"),
        PairDelay("A", "C", math.nan, math.inf, used=False, reason="no correlation peak"),
    ]
    frame = pairs_frame(pairs)
    assert list(frame["pair"]) == ["A-B", "A-C"]
    assert frame["delay_us"].iloc[0] == pytest.approx(100.0)
    assert list(frame["reason"]) == ["coefficient 0.02", "no correlation peak"]
    assert pairs_frame([]).empty and "reason" in pairs_frame([]).columns
    rx = [ReceiverTiming("A", 50.0, 8.0, used=False, reason="no GNSS fix", n_frames=10)]
    table = receivers_frame(rx)
    assert table.loc[0, "reason"] == "no GNSS fix" and not table.loc[0, "used"]
    assert receivers_frame([]).empty


# ------------------------------------------------------------------------------ cannot locate


@pytest.fixture
def carrier_capture(env, embedded_engine) -> str:
    """An emulated capture of a plain carrier (no timing structure), stored: its id."""
    from heimdall_lab.emulate import emulated
    from heimdall_lab.emulate.scenario import Scenario, Transmitter
    from heimdall_lab.pipeline import capture

    scenario = Scenario.default(seed=3, transmitter=Transmitter(*TX, 10e6, modulation="carrier"))
    with emulated(scenario=scenario, realtime=False) as emu:
        cap = capture(10e6, 4.0, engine=embedded_engine, **emu.capture_options)
    assert cap.stage == "done"
    return cap.capture_id


def test_run_localize_on_a_capture_it_cannot_locate_says_why_in_one_line(
    carrier_capture, env, capfd
):
    from heimdall_lab.cli import main

    args = ["run", "localize", "-p", "capture_id", carrier_capture, "-q"]
    assert main([*args, "--output-dir", "out"]) == 3
    out, err = capfd.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and len(lines[0]) < 300, err
    line = lines[0]
    assert line.startswith("heimdall-lab: cannot locate: ") and "good pair(s)" in line
    assert line.endswith("; --pairs shows each pair")
    report = line.split("; report ")[1].split(";")[0]
    assert (env / report).is_file() and report.startswith("out/")
    assert "pairs (delay" not in out  # the table only when asked

    assert main([*args, "--pairs", "--output-dir", "out"]) == 3
    out, err = capfd.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and len(lines[0]) < 300, err
    assert "cannot locate: " in lines[0] and "--pairs" not in lines[0]
    assert "pairs (delay = arrival at A minus arrival at B):" in out
    table = out.split("pairs (delay = arrival at A minus arrival at B):\n")[1].splitlines()
    assert table[0].split() == ["pair", "delay_us", "sigma_us", "coefficient", "reason"]
    names = ["F4JOY", "Purmerend", "North-Shropshire-UK", "Hasenberg03", "DB3TH", "OE3AKB"]
    for a, b in itertools.combinations(names, 2):
        assert any(row.startswith(f"{a}-{b} ") for row in table), (a, b)
    assert "coefficient" in table[1]  # each pair says why it was rejected

    # -p show_pairs True is the same; another notebook has no pair table to show.
    assert main([*args, "-p", "show_pairs", "True", "--output-dir", "out"]) == 3
    assert "pairs (delay" in capfd.readouterr().out
    assert main(["run", "capture", "--pairs", "-q"]) == 2
    assert "--pairs is for a notebook with a show_pairs parameter" in capfd.readouterr().err


def test_run_localize_keeps_other_failures_as_they_were(env, capfd):
    from heimdall_lab.cli import main

    code = main(["run", "localize", "-p", "capture_id", "no-such-capture", "-q", "--pairs"])
    assert code == 3
    err = capfd.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "localize.ipynb failed in cell" in err and "cannot locate" not in err


def test_a_localization_error_always_has_its_pairs_and_receivers():
    from heimdall_lab.errors import LocalizationError

    bare = LocalizationError("the reference has 1 good pair(s); need two")
    assert bare.pairs == [] and bare.receivers == [] and str(bare).count("\n") == 0
    pair = PairDelay("A", "B", 1e-4, 2e-6, used=False, reason="coefficient 0.02 < 0.05")
    full = LocalizationError("0 good pair(s)", pairs=[pair], receivers=[])
    assert pairs_frame(full.pairs)["reason"].tolist() == ["coefficient 0.02 < 0.05"]
