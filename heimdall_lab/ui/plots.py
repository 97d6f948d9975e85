"""Plots a researcher looks at: spectra, waterfalls, envelopes, correlations, metrics, maps.

Thin matplotlib helpers over :mod:`heimdall_lab.dsp`, :mod:`heimdall_lab.localize` and the
capture Dataset. Each takes an optional ``ax`` (or ``fig`` for several panels) and returns
it, so notebooks can lay them out as they like; they draw through the axes' own figure, so
a ``matplotlib.figure.Figure`` made without pyplot works too.

Intervals (``start_s``, ``end_s``) are seconds from the capture start: the earliest
receiver's first sample when the Dataset carries each receiver's UTC ``start_time`` (each
receiver placed by its own), else every receiver's sample 0. Only the samples of the
interval are read, so a capture opened lazily from the IQ store
(:meth:`heimdall_lab.store.IQStore.open`) loads just those.

A recording session's statistics (:func:`heimdall_lab.db.measurement_stats`) show as
heatmaps over time and frequency per receiver (:func:`plot_session_heatmap`), on a full grid
of buckets where a bucket without measurements stays blank (:func:`session_grid`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.signal
import xarray as xr

from heimdall_lab import dsp
from heimdall_lab.errors import ValidationError
from heimdall_lab.localize.align import envelope
from heimdall_lab.localize.checks import DEFAULT_BANDS
from heimdall_lab.localize.results import Localization

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def _axes(ax: Axes | None, figsize: tuple[float, float] = (9, 4)) -> Axes:
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def _figure(fig: Figure | None, figsize: tuple[float, float]) -> Figure:
    if fig is not None:
        return fig
    import matplotlib.pyplot as plt

    return plt.figure(figsize=figsize, layout="constrained")


def _grid(fig: Figure, n: int, ncols: int, **kwargs: Any) -> list[Axes]:
    """``n`` axes in a grid of ``ncols`` columns (spare cells removed)."""
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False, **kwargs)).ravel()
    for ax in axes[n:]:
        fig.delaxes(ax)
    return list(axes[:n])


@dataclass(frozen=True)
class _Piece:
    """One receiver's samples of an interval."""

    name: str
    iq: np.ndarray
    rate: float
    t0_s: float  # time of iq[0], seconds from the capture start


@dataclass(frozen=True)
class _Selection:
    pieces: list[_Piece]
    start_utc: np.datetime64 | None  # UTC of the capture start, when the Dataset has times
    start_s: float | None
    end_s: float | None
    #: Receivers left out because they hold too few samples in the interval (only when the
    #: receivers were not named): a short receiver does not stop a plot of the others.
    skipped: tuple[str, ...] = ()

    def describe(self) -> str:
        """The interval for a title, and any receivers left out.

        Seconds from the capture start, and UTC when known.
        """
        return self._interval() + (
            f"; too few samples: {', '.join(self.skipped)}" if self.skipped else ""
        )

    def _interval(self) -> str:
        if self.start_s is None and self.end_s is None:
            if self.start_utc is None:
                return "the whole capture"
            return f"the whole capture from {_utc_text(self.start_utc)}"
        start = self.start_s or 0.0
        text = f"{start:g}\u2013" + (f"{self.end_s:g} s" if self.end_s is not None else "end")
        text += " from the capture start"
        if self.start_utc is not None:
            a = self.start_utc + np.timedelta64(round(start * 1e9), "ns")
            text += f" ({_utc_text(a)}"
            if self.end_s is not None:
                b = self.start_utc + np.timedelta64(round(self.end_s * 1e9), "ns")
                text = text[: -len(" UTC")] + "\u2013" + _utc_text(b).split(" ", 1)[1]
            text += ")"
        return text

    @property
    def whole(self) -> bool:
        """All of every receiver asked for (nothing to say in a title)."""
        return self.start_s is None and self.end_s is None and not self.skipped


def _seconds(value: Any, what: str) -> float | None:
    if value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError) as exc:
        raise ValidationError(
            f"{what} must be seconds from the capture start, got {value!r}"
        ) from exc
    if not math.isfinite(out):
        raise ValidationError(f"{what} must be finite, got {value!r}")
    return out


def _select(
    ds: xr.Dataset,
    receivers: str | Sequence[str] | None = None,
    start_s: float | None = None,
    end_s: float | None = None,
    *,
    min_samples: int = 1,
    what: str = "this plot",
) -> _Selection:
    """Receivers' samples in ``[start_s, end_s)`` (seconds from the capture start).

    Only the interval is read (``isel`` before ``.values``), so dask-backed Datasets load
    nothing else. A receiver with fewer than ``min_samples`` there raises when it was named,
    and is left out (``skipped``) when all receivers were asked for, unless none is left.
    """
    if not isinstance(ds, xr.Dataset) or "iq" not in ds.variables:
        raise ValidationError(f"expected a capture Dataset with iq, got {type(ds).__name__}")
    names = [str(n) for n in ds["receiver"].values] if "receiver" in ds.variables else []
    if not names:
        raise ValidationError("nothing to plot: the capture holds no receiver")
    if receivers is None:
        wanted = names
    else:
        wanted = [receivers] if isinstance(receivers, str) else [str(r) for r in receivers]
        if not wanted:
            raise ValidationError("no receiver asked for")
        for name in wanted:
            if name not in names:
                raise ValidationError(f"receiver {name!r} is not in the capture (it has {names})")
    start = _seconds(start_s, "start_s")
    end = _seconds(end_s, "end_s")
    if start is not None and end is not None and end <= start:
        raise ValidationError(f"empty interval: end_s {end:g} s is not after start_s {start:g} s")
    offsets = np.zeros(len(names))
    start_utc = None
    if "start_time" in ds.variables:
        times = np.asarray(ds["start_time"].values, dtype="M8[ns]")
        if len(times) and not np.isnat(times).any():
            start_utc = times.min()
            offsets = (times - start_utc).astype(np.int64) / 1e9
    counts = (
        np.asarray(ds["n_samples"].values, dtype=np.int64)
        if "n_samples" in ds.variables
        else np.full(len(names), ds.sizes["sample"], np.int64)
    )
    if "sample_rate" not in ds.variables:
        raise ValidationError("the capture Dataset has no sample_rate")
    rates = np.asarray(ds["sample_rate"].values, dtype=np.float64)
    pieces, skipped, short = [], [], ""
    for name in wanted:
        k = names.index(name)
        n, rate, off = int(counts[k]), float(rates[k]), float(offsets[k])
        i0 = 0 if start is None else math.ceil((start - off) * rate)
        i1 = n if end is None else math.ceil((end - off) * rate)
        i0 = min(max(i0, 0), n)
        i1 = min(max(i1, i0), n)
        if i1 - i0 < min_samples:
            span = f"{start or 0:g} s to " + (f"{end:g} s" if end is not None else "the end")
            where = "" if start is None and end is None else f" from {span}"
            short = f"{name}: {i1 - i0} samples{where} are too few for {what} (need {min_samples})"
            if receivers is not None:
                raise ValidationError(short)
            skipped.append(name)
            continue
        iq = np.asarray(ds["iq"].isel(receiver=k, sample=slice(i0, i1)).values)
        pieces.append(_Piece(name, iq, rate, off + i0 / rate))
    if not pieces:
        raise ValidationError(short if len(wanted) == 1 else f"every receiver is short; {short}")
    return _Selection(pieces, start_utc, start, end, tuple(skipped))


def _utc_text(t: np.datetime64) -> str:
    return str(np.datetime_as_string(t, "ms")).replace("T", " ") + " UTC"


def _valid_iq(ds: xr.Dataset, name: str) -> tuple[np.ndarray, float]:
    piece = _select(ds, name).pieces[0]
    return piece.iq, piece.rate


def plot_psd(
    ds: xr.Dataset,
    *,
    ax: Axes | None = None,
    resolution_hz: float | None = None,
    start_s: float | None = None,
    end_s: float | None = None,
) -> Axes:
    """Plot each receiver's power spectral density, relative to the tuned frequency.

    Parameters
    ----------
    ds : xarray.Dataset
        A capture Dataset.
    ax : matplotlib.axes.Axes, optional
        Where to draw; a new figure when omitted.
    resolution_hz : float, optional
        Welch resolution (see :func:`heimdall_lab.dsp.psd`).
    start_s, end_s : float, optional
        Only the samples in ``[start_s, end_s)``, seconds from the capture start (module
        docstring); only those are read. The whole capture by default.

    Returns
    -------
    matplotlib.axes.Axes
        The axes, one line per receiver; the interval is in the title.

    Raises
    ------
    ValidationError
        If the Dataset holds no receiver, the interval is empty, or a receiver has too few
        samples in it for the PSD.
    """
    sel = _select(ds, None, start_s, end_s, min_samples=64, what="a PSD")
    ax = _axes(ax)
    for piece in sel.pieces:
        freqs, density = dsp.psd(piece.iq, piece.rate, resolution_hz=resolution_hz)
        ax.plot(freqs, density, lw=0.8, label=piece.name)
    centre = ds.attrs.get("center_frequency_hz")
    ax.set_xlabel("offset from " + (f"{centre / 1e3:.3f} kHz" if centre else "centre") + " (Hz)")
    ax.set_ylabel("PSD (dBFS/Hz)")
    title = "Power spectral density per receiver"
    if not sel.whole:
        title += f",\n{sel.describe()}"
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", ncols=2)
    return ax


def _spectrogram(piece: _Piece, nperseg: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Offsets (Hz), times (s from the capture start) and levels (dBFS/Hz, time x freq).

    Non-finite samples count as silence; silence is NaN in the levels (blank, and out of
    the colour scale).
    """
    iq = np.where(np.isfinite(piece.iq), piece.iq, 0)
    f, t, sxx = scipy.signal.spectrogram(
        iq,
        piece.rate,
        window="blackmanharris",  # low sidelobes: a strong carrier stays one column wide
        nperseg=nperseg,
        return_onesided=False,
        detrend=False,
        scaling="density",
    )
    f = np.fft.fftshift(f)
    sxx = np.fft.fftshift(sxx, axes=0)
    with np.errstate(divide="ignore"):
        level = 10 * np.log10(sxx.T)
    return f, t + piece.t0_s, np.where(np.isfinite(level), level, np.nan)


def _waterfall_pieces(
    ds: xr.Dataset,
    receivers: str | Sequence[str] | None,
    start_s: float | None,
    end_s: float | None,
    nperseg: int,
) -> tuple[_Selection, list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    if not isinstance(nperseg, int | np.integer) or nperseg < 8:
        raise ValidationError(f"nperseg must be an integer of at least 8, got {nperseg!r}")
    sel = _select(ds, receivers, start_s, end_s, min_samples=2 * nperseg, what="a waterfall")
    return sel, [_spectrogram(p, int(nperseg)) for p in sel.pieces]


def _floor_db(level: np.ndarray) -> float:
    """Median level of the frequency columns within 30 dB of the strongest columns.

    Columns far under the rest (a receiver's filter stopband, such as the quantisation floor
    outside a KiwiSDR's +-3 kHz IQ passband) do not drag the colour scale down.
    """
    columns = np.nanmedian(level, axis=0) if np.isfinite(level).any() else level[0]
    if not np.isfinite(columns).any():
        return float("nan")  # silence
    live = columns >= np.nanpercentile(columns, 90) - 30
    return float(np.nanmedian(level[:, live]))


def _colour_range(levels: list[np.ndarray]) -> tuple[float, float]:
    """One colour scale for waterfalls: 10 dB under the lowest floor to the highest level."""
    floors = [f for f in map(_floor_db, levels) if math.isfinite(f)]
    if not floors:
        raise ValidationError("nothing to draw: the samples are all zero or not finite")
    return min(floors) - 10, max(float(np.nanmax(v)) for v in levels if np.isfinite(v).any())


def _draw_waterfall(
    ax: Axes,
    spectrogram: tuple[np.ndarray, np.ndarray, np.ndarray],
    vmin: float,
    vmax: float,
    title: str,
) -> Any:
    f, t, level = spectrogram
    mesh = ax.pcolormesh(f, t, level, shading="auto", cmap="viridis", vmin=vmin, vmax=vmax)
    if not ax.yaxis_inverted():
        ax.invert_yaxis()
    ax.set_xlabel("offset (Hz)")
    ax.set_ylabel("time from the capture start (s)")
    ax.set_title(title)
    return mesh


def plot_waterfall(
    ds: xr.Dataset,
    receiver: str | None = None,
    *,
    ax: Axes | None = None,
    nperseg: int = 256,
    start_s: float | None = None,
    end_s: float | None = None,
) -> Axes:
    """Plot one receiver's spectrogram (time down, frequency across).

    Parameters
    ----------
    ds : xarray.Dataset
        A capture Dataset.
    receiver : str, optional
        Receiver name; the first one when omitted.
    ax : matplotlib.axes.Axes, optional
        Where to draw.
    nperseg : int, optional
        FFT length per line.
    start_s, end_s : float, optional
        Only ``[start_s, end_s)``, seconds from the capture start; the whole capture by
        default.

    Returns
    -------
    matplotlib.axes.Axes
        The axes with the image (colour from 10 dB under the noise, the median level of the
        passband, to the peak).

    Raises
    ------
    ValidationError
        If the receiver is not in the capture, the interval is empty, or there are too few
        samples (two lines) in it.
    """
    names = [str(n) for n in ds.receiver.values] if "receiver" in ds.variables else []
    name = receiver or (names[0] if names else "")
    sel, (spec,) = _waterfall_pieces(ds, name, start_s, end_s, nperseg)
    level = spec[2]
    ax = _axes(ax, (9, 5))
    title = f"Waterfall: {name}" + ("" if sel.whole else f"\n{sel.describe()}")
    mesh = _draw_waterfall(ax, spec, *_colour_range([level]), title)
    ax.figure.colorbar(mesh, ax=ax, label="dBFS/Hz")
    return ax


def plot_waterfalls(
    ds: xr.Dataset,
    receivers: Sequence[str] | None = None,
    *,
    start_s: float | None = None,
    end_s: float | None = None,
    nperseg: int = 256,
    fig: Figure | None = None,
) -> Figure:
    """Plot every receiver's waterfall side by side, on one colour scale.

    Parameters
    ----------
    ds : xarray.Dataset
        A capture Dataset.
    receivers : sequence of str, optional
        Receivers, in panel order; all by default.
    start_s, end_s : float, optional
        Only ``[start_s, end_s)``, seconds from the capture start; the whole capture by
        default.
    nperseg : int, default 256
        FFT length per line (as :func:`plot_waterfall`).
    fig : matplotlib.figure.Figure, optional
        Where to draw (its panels are added); a new figure when omitted.

    Returns
    -------
    matplotlib.figure.Figure
        One panel per receiver, up to three a row, sharing the time and frequency axes
        (time down, seconds from the capture start) and one colour scale (from 10 dB under
        the lowest receiver's noise, the median level of its passband, to the highest
        peak), with one colour bar.

    Raises
    ------
    ValidationError
        If a receiver is not in the capture, the interval is empty, or a receiver has too
        few samples in it.
    """
    sel, specs = _waterfall_pieces(ds, receivers, start_s, end_s, nperseg)
    vmin, vmax = _colour_range([s[2] for s in specs])
    n = len(specs)
    ncols = min(n, 3)
    fig = _figure(fig, (3.6 * ncols + 1.2, 4.2 * math.ceil(n / ncols) + 0.4))
    axes = _grid(fig, n, ncols, sharex=True, sharey=True)
    mesh = None
    for k, (ax, piece, spec) in enumerate(zip(axes, sel.pieces, specs, strict=True)):
        mesh = _draw_waterfall(ax, spec, vmin, vmax, piece.name)
        ax.label_outer()
        if k % ncols:
            ax.set_ylabel("")
        if k + ncols < n:  # a panel below shows the frequencies
            ax.set_xlabel("")
        else:  # the lowest panel of its column, even above an empty cell
            ax.tick_params(axis="x", labelbottom=True)
    fig.colorbar(mesh, ax=axes, label="PSD (dBFS/Hz)", shrink=0.9)
    title = f"Waterfalls, {sel.describe()}"
    fig.suptitle(title)
    return fig


def _envelope(piece: _Piece, band_hz: float, smooth_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Times (s from the capture start) and amplitude of the strongest carrier's envelope.

    The carrier (:func:`heimdall_lab.dsp.measure`'s strongest emission) is mixed to 0 Hz,
    band-limited to ``|f| <= band_hz`` as the envelope correlation of the localization does,
    and the magnitude averaged over ``smooth_s`` (the ends, where the average would run past
    the samples, are left out).
    """
    x = piece.iq.astype(np.complex128)
    finite = np.isfinite(x)
    x = np.where(finite, x, 0)
    f0 = dsp.measure(x, piece.rate).measured_offset_hz
    y = x * np.exp(-2j * np.pi * f0 * np.arange(len(x)) / piece.rate)
    amp = envelope(y, piece.rate, band_hz)
    width = max(1, round(smooth_s * piece.rate))
    if width >= len(amp):
        raise ValidationError(
            f"{piece.name}: smooth_s {smooth_s:g} s is longer than the {len(amp) / piece.rate:g} s"
            " interval"
        )
    smooth = np.convolve(amp, np.ones(width) / width, mode="valid")
    step = max(1, width // 4)
    smooth = smooth[::step]
    t = piece.t0_s + (np.arange(len(smooth)) * step + (width - 1) / 2) / piece.rate
    return t, smooth


def plot_envelope(
    ds: xr.Dataset,
    receivers: Sequence[str] | None = None,
    *,
    start_s: float | None = None,
    end_s: float | None = None,
    smooth_s: float = 0.005,
    band_hz: float | None = None,
    db: bool = False,
    ax: Axes | None = None,
) -> Axes:
    """Plot each receiver's carrier envelope over time, one trace above the other.

    Amplitude keying, such as DCF77's 100 or 200 ms drop at the start of every second,
    shows as dips. Each trace is the strongest carrier's amplitude (found by
    :func:`heimdall_lab.dsp.measure`, mixed to 0 Hz, band-limited to ``|f| <= band_hz`` with
    the localization's filter and averaged over ``smooth_s``), divided by its median (the
    key-up level of a mostly key-up carrier).

    Parameters
    ----------
    ds : xarray.Dataset
        A capture Dataset.
    receivers : sequence of str, optional
        Receivers, top to bottom; all by default.
    start_s, end_s : float, optional
        Only ``[start_s, end_s)``, seconds from the capture start; the whole capture by
        default.
    smooth_s : float, default 0.005
        Moving-average length, seconds (noise against edge sharpness).
    band_hz : float, optional
        Half-width of the band kept around the carrier, Hz; the envelope correlation's
        (:data:`heimdall_lab.localize.DEFAULT_BANDS`, 1 kHz) by default.
    db : bool, default False
        Plot ``20 log10`` of the amplitude ratio (dB re the median), traces 25 dB apart,
        instead of the linear ratio, traces 1.5 apart.
    ax : matplotlib.axes.Axes, optional
        Where to draw.

    Returns
    -------
    matplotlib.axes.Axes
        One line per receiver (labelled with its name, in the y tick at its median level).
        The time axis is UTC when the Dataset has each receiver's ``start_time`` (every
        receiver placed by its own), else seconds from the capture start.

    Raises
    ------
    ValidationError
        If a receiver is not in the capture, the interval is empty or too short (1024
        samples), or ``smooth_s`` / ``band_hz`` is not positive.
    """
    smooth = _seconds(smooth_s, "smooth_s")
    if smooth is None or smooth <= 0:
        raise ValidationError(f"smooth_s must be a positive number of seconds, got {smooth_s!r}")
    band = _seconds(DEFAULT_BANDS["envelope"][1] if band_hz is None else band_hz, "band_hz")
    if band is None or band <= 0:
        raise ValidationError(f"band_hz must be a positive number of Hz, got {band_hz!r}")
    sel = _select(ds, receivers, start_s, end_s, min_samples=1024, what="an envelope")
    n = len(sel.pieces)
    ax = _axes(ax, (11, 1.4 * n + 1.6))
    spacing = 25.0 if db else 1.5
    ticks, labels = [], []
    for k, piece in enumerate(sel.pieces):
        t, amp = _envelope(piece, band, smooth)
        ratio = amp / max(float(np.median(amp)), 1e-30)
        with np.errstate(divide="ignore"):
            y = 20 * np.log10(ratio) if db else ratio
        base = (n - 1 - k) * spacing
        x: Any = t
        if sel.start_utc is not None:
            x = sel.start_utc + np.round(t * 1e9).astype("m8[ns]")
        ax.plot(x, y + base, lw=0.7, color=f"C{k}", label=piece.name)
        level = base if db else base + 1.0
        ax.axhline(level, color="0.6", lw=0.5, ls=":")
        ticks.append(level)
        labels.append(piece.name)
    ax.set_yticks(ticks, labels)
    if db:
        ax.set_ylabel(f"amplitude re median (dB), traces {spacing:g} dB apart")
    else:
        ax.set_ylabel(f"amplitude / median, traces {spacing:g} apart")
        ax.set_ylim(-0.2, (n - 1) * spacing + 1.6)
    if sel.start_utc is not None:
        import matplotlib.dates as mdates

        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S", tz="UTC"))
        day = str(np.datetime_as_string(sel.start_utc, "D"))
        ax.set_xlabel(f"time (UTC), {day}")
    else:
        ax.set_xlabel("time from the capture start (s)")
    ax.grid(axis="x", alpha=0.3)
    title = f"Carrier envelope ({smooth * 1e3:g} ms average, {band:g} Hz band)"
    if not sel.whole:
        title += f", {sel.describe()}"
    ax.set_title(title)
    return ax


def _pair_key(item: Any, known: list[tuple[str, str]]) -> tuple[str, str]:
    for a, b in known:  # names may hold "-": match the whole "A-B", not a split of it
        if isinstance(item, str):
            if item in (f"{a}-{b}", f"{b}-{a}"):
                return a, b
        elif tuple(str(v) for v in item) in ((a, b), (b, a)):
            return a, b
    raise ValidationError(
        f"pair {item!r} is not in the localization (it has "
        + ", ".join(f"{a}-{b}" for a, b in known)
        + ")"
    )


def plot_correlations(
    ds: xr.Dataset,
    result: Localization,
    *,
    pairs: Sequence[str | tuple[str, str]] | None = None,
    fig: Figure | None = None,
) -> Figure:
    """Plot each receiver pair's cross-correlation with the delay the solver chose.

    The correlations are recomputed by :func:`heimdall_lab.localize.tdoa.pair_correlations`,
    the code that measured the delays, from the capture and the settings in ``result``.

    Parameters
    ----------
    ds : xarray.Dataset
        The capture the localization was computed from.
    result : Localization
        Its TDoA localization (:func:`heimdall_lab.localize.locate_dataset`).
    pairs : sequence of str or (str, str), optional
        Pairs to show, ``"A-B"`` or ``("A", "B")``; all of ``result.pairs`` by default.
    fig : matplotlib.figure.Figure, optional
        Where to draw; a new figure when omitted.

    Returns
    -------
    matplotlib.figure.Figure
        One panel per pair, up to three a row: the normalised correlation over the lags
        searched (ms; arrival at the first receiver minus at the second), the physically
        possible range shaded, the chosen delay marked (a triangle at the correlation there,
        labelled in microseconds with its standard error) and the delay the estimated
        position predicts dotted; under it, the exact correlation within two samples of the
        chosen delay with the whole-sample lags. Rejected pairs say why in their title.

    Raises
    ------
    ValidationError
        If ``result`` is not a TDoA localization of ``ds``, or a pair is not in it.
    """
    from heimdall_lab.localize.tdoa import pair_correlations

    if not isinstance(result, Localization):
        raise ValidationError(f"expected a Localization, got {type(result).__name__}")
    known = [(p.receiver_a, p.receiver_b) for p in result.pairs]
    if not known:
        raise ValidationError("the localization has no receiver pairs")
    wanted = known if pairs is None else [_pair_key(item, known) for item in pairs]
    if not wanted:
        raise ValidationError("no pair asked for")
    curves = pair_correlations(ds, result)
    by_key = {(p.receiver_a, p.receiver_b): p for p in result.pairs}
    n = len(wanted)
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    fig = _figure(fig, (4.8 * ncols, 5.2 * nrows + 0.3))
    grid = fig.add_gridspec(2 * nrows, ncols, height_ratios=[2.3, 1.0] * nrows)
    axes = []
    for k, key in enumerate(wanted):
        row, col = divmod(k, ncols)
        ax = fig.add_subplot(grid[2 * row, col])
        zoom = fig.add_subplot(grid[2 * row + 1, col])
        axes.append(ax)
        p, c = by_key[key], curves[key]
        est = c.estimate
        ax.axvspan(
            -p.max_delay_s * 1e3, p.max_delay_s * 1e3, color="0.92", label="physically possible"
        )
        ax.plot(c.lags_s * 1e3, c.correlation, color="C0", lw=0.9, label="correlation")
        found = math.isfinite(est.delay_s)
        if math.isfinite(p.model_delay_s):
            ax.axvline(
                p.model_delay_s * 1e3, color="k", ls=":", lw=1.0, label="predicted by the estimate"
            )
        if found:
            ax.plot(
                [est.delay_s * 1e3], [est.coefficient], "v", color="C3", ms=8, label="chosen delay"
            )
            sigma = f" \u00b1 {p.sigma_s * 1e6:.2f}" if math.isfinite(p.sigma_s) else ""
            ax.annotate(
                f"delay {est.delay_s * 1e6:.2f}{sigma} \u00b5s\n"
                f"coefficient {est.coefficient:.2f}, PSR {est.psr_db:.1f} dB",
                xy=(0.02, 0.97),
                xycoords="axes fraction",
                va="top",
                fontsize=8,
                bbox={"boxstyle": "round", "fc": "w", "ec": "0.7", "alpha": 0.9},
            )
        ax.set_xlabel(f"lag (ms): arrival at {key[0]} minus at {key[1]}", fontsize=9)
        ax.set_ylabel("normalised correlation")
        title = f"{key[0]} \u2013 {key[1]}"
        if not p.used:
            title += f"\nrejected: {p.reason}"
        ax.set_title(title, fontsize=10, color="k" if p.used else "0.4")
        top = float(np.nanmax(c.correlation)) if len(c.correlation) else 1.0
        ax.set_ylim(min(0.0, float(np.nanmin(c.correlation, initial=0.0))) * 1.1, top * 1.35)
        ax.grid(alpha=0.3)
        if found and len(c.fine_lags_s):
            us = (c.fine_lags_s - est.delay_s) * 1e6
            zoom.plot(us, c.fine_correlation, color="C0", lw=0.9, label="exact (band-limited)")
            near = np.abs(c.lags_s - est.delay_s) <= np.abs(us).max() / 1e6
            zoom.plot(
                (c.lags_s[near] - est.delay_s) * 1e6,
                c.correlation[near],
                "o",
                ms=3.5,
                color="C0",
                label="whole-sample lags",
            )
            zoom.plot([0], [est.coefficient], "v", color="C3", ms=7)
            zoom.legend(fontsize=7, loc="lower center")
        else:
            zoom.text(0.5, 0.5, "no peak", ha="center", va="center", transform=zoom.transAxes)
        zoom.set_xlabel("\u00b5s from the chosen delay", fontsize=9)
        zoom.set_ylabel("correlation", fontsize=9)
        zoom.margins(y=0.15)
        zoom.tick_params(labelsize=8)
        zoom.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower left")
    fig.suptitle(
        f"Cross-correlation per pair ({result.method}"
        + (f", {result.settings.get('chunk_s', 1.0):g} s chunks)" if result.settings else ")")
    )
    return fig


#: Axis labels of the measurement columns (``query_measurements``, ``bucketed_measurements``).
_METRIC_LABELS = {
    "snr_db": "SNR (dB)",
    "cn0_dbhz": "C/N0 (dB-Hz)",
    "noise_power_dbfs": "noise power (dBFS)",
    "noise_power_dbm": "noise power (dBm)",
    "signal_power_dbfs": "signal power (dBFS)",
    "signal_power_dbm": "signal power (dBm)",
    "frequency_offset_hz": "frequency offset (Hz)",
    "occupied_bandwidth_hz": "occupied bandwidth (Hz)",
    "rssi_dbm": "RSSI (dBm)",
    "count": "rows per bucket",
    "snr_count": "SNRs per bucket",
    "snr_mean": "SNR, bucket mean (dB)",
    "snr_min": "SNR, bucket minimum (dB)",
    "snr_max": "SNR, bucket maximum (dB)",
    "offset_mean": "frequency offset, bucket mean (Hz)",
    "offset_min": "frequency offset, bucket minimum (Hz)",
    "offset_max": "frequency offset, bucket maximum (Hz)",
}
_SIGNAL_UNITS = {f.name: f.metadata.get("units", "") for f in fields(dsp.SignalMetrics)}


def _metric_label(name: str) -> str:
    if name in _METRIC_LABELS:
        return _METRIC_LABELS[name]
    units = _SIGNAL_UNITS.get(name, "")
    return f"{name} ({units})" if units and units != "1" else name


def _with_gaps(
    x: np.ndarray, ys: list[np.ndarray], gap_ns: float | None
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Insert a NaN point between consecutive samples further apart than the gap.

    ``x`` is sorted int64 ns; without ``gap_ns``, 1.5 times the median spacing.
    """
    if len(x) < 2:
        return x, ys
    dt = np.diff(x)
    limit = 1.5 * float(np.median(dt)) if gap_ns is None else gap_ns
    after = np.flatnonzero(dt > limit)
    if not len(after):
        return x, ys
    mid = x[after] + dt[after] // 2
    return np.insert(x, after + 1, mid), [
        np.insert(y.astype(np.float64), after + 1, np.nan) for y in ys
    ]


def plot_metrics_over_time(
    frame: pd.DataFrame,
    metrics: Sequence[str] | None = None,
    *,
    time_column: str | None = None,
    by: str | None = "receiver",
    gap: float | str | pd.Timedelta | np.timedelta64 | None = None,
    fig: Figure | None = None,
) -> Figure:
    """Plot measurements over time: one panel per metric, one line per receiver.

    Works on the rows of :func:`heimdall_lab.db.query_measurements` (time column
    ``timestamp_utc``; metrics such as ``snr_db``, ``cn0_dbhz``, ``noise_power_dbfs``,
    ``signal_power_dbfs``, ``frequency_offset_hz``, ``rssi_dbm``) and on the buckets of
    :func:`heimdall_lab.db.bucketed_measurements` (time column ``bucket``; ``snr_mean``,
    ``snr_min``, ``snr_max``, ``offset_mean``, ..., ``count``), or any frame with a time
    column and numeric columns. Missing data show as gaps: the line breaks wherever two
    consecutive times of a receiver are further apart than ``gap``.

    Parameters
    ----------
    frame : pandas.DataFrame
        The rows; times tz-aware (taken as UTC when naive).
    metrics : sequence of str, optional
        Numeric columns to plot, one panel each. Default: those of ``snr_db``,
        ``cn0_dbhz``, ``noise_power_dbfs`` present (measurement rows), else ``snr_mean``,
        ``offset_mean`` (buckets).
    time_column : str, optional
        ``timestamp_utc`` when present, else ``bucket``.
    by : str or None, default "receiver"
        Column whose values get a line each (None: one line).
    gap : float (seconds), str, Timedelta or timedelta64, optional
        Longest spacing drawn as a line. Default: 1.5 times each line's median spacing (for
        buckets: 1.5 bucket widths, a missing bucket being a gap).
    fig : matplotlib.figure.Figure, optional
        Where to draw; a new figure when omitted.

    Returns
    -------
    matplotlib.figure.Figure
        The panels, stacked on a shared UTC time axis, one legend.

    Raises
    ------
    ValidationError
        If the frame is empty or not a DataFrame, a column is missing or not numeric, or
        ``gap`` is not a positive duration.
    """
    if not isinstance(frame, pd.DataFrame):
        raise ValidationError(f"expected a pandas DataFrame, got {type(frame).__name__}")
    if frame.empty:
        raise ValidationError("nothing to plot: the frame has no rows")
    cols = list(frame.columns)
    if time_column is None:
        time_column = next((c for c in ("timestamp_utc", "bucket") if c in cols), None)
        if time_column is None:
            raise ValidationError(f"no time column (timestamp_utc or bucket) in {cols}")
    elif time_column not in cols:
        raise ValidationError(f"time column {time_column!r} is not in the frame ({cols})")
    if metrics is None:
        metrics = [c for c in ("snr_db", "cn0_dbhz", "noise_power_dbfs") if c in cols] or [
            c for c in ("snr_mean", "offset_mean") if c in cols
        ]
        if not metrics:
            raise ValidationError(f"no known metric column in {cols}; name them in metrics")
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    if not metrics:
        raise ValidationError("no metric asked for")
    for m in metrics:
        if m not in cols:
            raise ValidationError(f"metric {m!r} is not in the frame ({cols})")
        if not pd.api.types.is_numeric_dtype(frame[m]) or pd.api.types.is_bool_dtype(frame[m]):
            raise ValidationError(f"metric {m!r} is not numeric")
    if by is not None and by not in cols:
        raise ValidationError(f"column {by!r} to group by is not in the frame ({cols})")
    gap_ns = None
    if gap is not None:
        try:
            delta = (
                pd.Timedelta(gap, unit="s")
                if isinstance(gap, int | float | np.integer | np.floating)
                else pd.Timedelta(gap)
            )
        except (TypeError, ValueError) as exc:
            raise ValidationError(f"gap must be a duration, got {gap!r}") from exc
        if pd.isna(delta) or delta <= pd.Timedelta(0):
            raise ValidationError(f"gap must be positive, got {gap!r}")
        gap_ns = float(delta.value)
    times = pd.to_datetime(frame[time_column], utc=True)
    data = frame.assign(_t=times.dt.tz_convert(None).to_numpy("M8[ns]").astype(np.int64))
    groups = [("", data)] if by is None else list(data.groupby(by, sort=True))
    import matplotlib.dates as mdates

    fig = _figure(fig, (10, 2.3 * len(metrics) + 1.0))
    axes = _grid(fig, len(metrics), 1, sharex=True)
    for k, (name, group) in enumerate(groups):
        group = group.sort_values("_t")
        x, ys = _with_gaps(
            group["_t"].to_numpy(np.int64),
            [group[m].to_numpy(np.float64, na_value=np.nan) for m in metrics],
            gap_ns,
        )
        when = x.astype("M8[ns]")
        # Past ten lines the colours repeat: the marker tells them apart.
        style = {"color": f"C{k % 10}", "marker": "os^vD"[(k // 10) % 5]}
        for ax, y in zip(axes, ys, strict=True):
            ax.plot(when, y, "-", ms=2.5, lw=1.0, label=str(name), **style)
    for ax, m in zip(axes, metrics, strict=True):
        ax.set_ylabel(_metric_label(m))
        ax.grid(alpha=0.3)
    t = data["_t"].to_numpy(np.int64)
    if len(t) and t.min() == t.max():  # one instant: a minute around it, not years
        mid = np.datetime64(int(t[0]), "ns")
        axes[-1].set_xlim(mid - np.timedelta64(30, "s"), mid + np.timedelta64(30, "s"))
    locator = mdates.AutoDateLocator(tz="UTC")
    axes[-1].xaxis.set_major_locator(locator)
    axes[-1].xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz="UTC"))
    axes[-1].set_xlabel(
        {"timestamp_utc": "time (UTC)", "bucket": "bucket start (UTC)"}.get(
            time_column, f"{time_column} (UTC)"
        )
    )
    if by is not None:
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(  # beside the panels, clear of the title
            handles, labels, loc="outside right upper", ncols=1 + len(labels) // 16, fontsize=8
        )
    fig.suptitle("Measurements over time" + (f" by {by}" if by else ""), x=0.02, ha="left")
    return fig


# ----------------------------------------------------------------------------- sessions

#: Colour-bar labels of the columns of :func:`heimdall_lab.db.measurement_stats`.
_STATS_LABELS = {
    "n": "measurements per bucket",
    "snr_db_mean": "mean SNR (dB)",
    "snr_db_min": "lowest SNR (dB)",
    "snr_db_max": "highest SNR (dB)",
    "cn0_dbhz_mean": "mean C/N0 (dB-Hz)",
    "noise_power_dbfs_mean": "mean noise power (dBFS)",
    "signal_power_dbfs_mean": "mean signal power (dBFS)",
    "occupancy": "occupancy (share of intervals with a signal)",
}
#: Frequencies this close (Hz) are one row of a heatmap, as the database matches them
#: (:data:`heimdall_lab.db.filters.FREQUENCY_TOLERANCE_HZ`).
_SAME_FREQUENCY_HZ = 0.5
#: Most buckets a heatmap's time axis holds; a finer bucket over a longer span is refused.
MAX_HEATMAP_BUCKETS = 50_000


def _duration_ns(value: Any, what: str) -> int:
    """A positive duration (seconds as a number, or text such as ``"5min"``) in ns."""
    try:
        delta = (
            pd.Timedelta(float(value), unit="s")
            if isinstance(value, int | float | np.integer | np.floating)
            else pd.Timedelta(value)
        )
    except (TypeError, ValueError) as exc:
        raise ValidationError(
            f"{what} must be a duration such as 60 (seconds), '1min' or '1h', got {value!r}"
        ) from exc
    if pd.isna(delta) or delta <= pd.Timedelta(0):
        raise ValidationError(f"{what} must be a positive duration, got {value!r}")
    return int(delta.value)


def _duration_text(ns: int) -> str:
    for unit, size in (("h", 3_600_000_000_000), ("min", 60_000_000_000)):
        if ns % size == 0:
            return f"{ns // size} {unit}"
    return f"{ns / 1e9:g} s"


def _utc_ns(value: Any, what: str) -> int:
    """A time (naive means UTC) as int64 ns since the epoch."""
    try:
        t = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{what} must be a time, got {value!r}") from exc
    if pd.isna(t):
        raise ValidationError(f"{what} must be a time, got {value!r}")
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    return int(t.value)


def _frequency_rows(given: Sequence[float] | None, seen: np.ndarray) -> np.ndarray:
    """Rows of a heatmap: the given frequencies and any other seen, within 0.5 Hz as one."""
    rows: list[float] = []
    for f in [*(given or []), *np.unique(seen).tolist()]:
        try:
            f = float(f)
        except (TypeError, ValueError) as exc:
            raise ValidationError(f"frequencies must be numbers in Hz, got {f!r}") from exc
        if not math.isfinite(f):
            raise ValidationError(f"frequencies must be finite, got {f!r}")
        if not any(abs(f - r) <= _SAME_FREQUENCY_HZ for r in rows):
            rows.append(f)
    return np.sort(np.asarray(rows, dtype=np.float64))


def session_grid(
    stats: pd.DataFrame,
    value: str = "snr_db_mean",
    *,
    bucket: float | str | pd.Timedelta | np.timedelta64 = "1min",
    start: Any = None,
    end: Any = None,
    receivers: Sequence[str] | None = None,
    frequencies: Sequence[float] | None = None,
) -> xr.DataArray:
    """Put bucketed statistics on a full grid of receiver x frequency x time bucket.

    Every bucket from the first to the last (or from ``start`` to ``end``) is a column,
    whether or not it has rows: a bucket without a row is NaN, so a gap stays a gap (nothing
    is interpolated, and no bucket is stretched over its missing neighbours).

    Parameters
    ----------
    stats : pandas.DataFrame
        Rows of :func:`heimdall_lab.db.measurement_stats`: ``bucket`` (UTC start),
        ``receiver``, ``frequency_hz`` and the ``value`` column.
    value : str, default "snr_db_mean"
        The numeric column to place, e.g. ``snr_db_mean`` or ``occupancy``.
    bucket : float (seconds), str, Timedelta or timedelta64, default "1min"
        The bucket width the statistics were asked for (the default of
        ``measurement_stats``); every bucket start must lie on its grid.
    start, end : datetime-like, optional
        Extend the time axis to cover ``[start, end)`` (naive means UTC), e.g. the
        session's start and end, so buckets before the first row and after the last show as
        blank. Rows outside are kept (the axis covers them too).
    receivers : sequence of str, optional
        Receivers, in this order (rows of others are left out); a receiver without rows is
        all NaN. Default: those with rows, by name.
    frequencies : sequence of float, optional
        Frequencies (Hz) to give a row even without data, e.g. the session plan's; others
        with data are added. Frequencies within 0.5 Hz are one row.

    Returns
    -------
    xarray.DataArray
        Dims ``(receiver, frequency_hz, bucket)``: ``bucket`` the UTC bucket starts
        (datetime64, naive UTC), ``frequency_hz`` ascending. Attrs ``value``, ``label``
        and ``bucket_s`` (the width in seconds). When two rows fall in one cell (two
        frequencies within 0.5 Hz), ``n`` adds up, ``*_min`` and ``*_max`` take the extreme
        and other values their mean, weighted by ``n`` when the frame has it.

    Raises
    ------
    ValidationError
        If ``stats`` is not such a frame, ``value`` is missing or not numeric, a bucket
        start is not on the grid of ``bucket``, there is nothing to place (no receiver, or
        no row and no ``start`` and ``end``), or the span holds more than
        :data:`MAX_HEATMAP_BUCKETS` buckets.
    """
    if not isinstance(stats, pd.DataFrame):
        raise ValidationError(f"expected a pandas DataFrame, got {type(stats).__name__}")
    cols = list(stats.columns)
    for col in ("bucket", "receiver", "frequency_hz", value):
        if col not in cols:
            raise ValidationError(
                f"column {col!r} is not in the frame ({cols}); expected the rows of "
                "heimdall_lab.db.measurement_stats"
            )
    if not pd.api.types.is_numeric_dtype(stats[value]) or pd.api.types.is_bool_dtype(stats[value]):
        raise ValidationError(f"value {value!r} is not numeric")
    width = _duration_ns(bucket, "bucket")
    times = (
        pd.to_datetime(stats["bucket"], utc=True)
        .dt.tz_convert(None)
        .to_numpy("M8[ns]")
        .astype(np.int64)
    )
    ref = int(times[0]) if len(times) else 0
    off_grid = (times - ref) % width != 0
    if off_grid.any():
        bad = stats["bucket"].iloc[int(np.argmax(off_grid))]
        raise ValidationError(
            f"bucket start {bad} is not a whole number of {_duration_text(width)} buckets "
            f"after {stats['bucket'].iloc[0]}: give the bucket the statistics were asked for"
        )
    lows = [int(times.min())] if len(times) else []
    highs = [int(times.max()) + width] if len(times) else []
    if start is not None:
        lows.append(_utc_ns(start, "start"))
    if end is not None:
        highs.append(_utc_ns(end, "end"))
    if not lows or not highs:
        raise ValidationError("nothing to place: no rows, and no start and end to span")
    lo = ref + (min(lows) - ref) // width * width
    hi = ref - (ref - max(highs)) // width * width  # ceiling onto the grid
    n_buckets = max(1, (hi - lo) // width)
    if n_buckets > MAX_HEATMAP_BUCKETS:
        raise ValidationError(
            f"{n_buckets} buckets of {_duration_text(width)} are too many for one heatmap "
            f"(at most {MAX_HEATMAP_BUCKETS}): choose a coarser bucket or a shorter span"
        )
    names = (
        sorted({str(r) for r in stats["receiver"]})
        if receivers is None
        else ([receivers] if isinstance(receivers, str) else [str(r) for r in receivers])
    )
    if not names:
        raise ValidationError("nothing to place: no receiver (the frame has no rows)")
    freqs = np.asarray(stats["frequency_hz"], dtype=np.float64)
    rows = _frequency_rows(frequencies, freqs[np.isfinite(freqs)])
    if not len(rows):
        raise ValidationError("nothing to place: no frequency")
    grid = np.full((len(names), len(rows), n_buckets), np.nan)
    keep = stats["receiver"].astype(str).isin(names).to_numpy() & np.isfinite(freqs)
    if keep.any():
        cells = pd.DataFrame(
            {
                "r": pd.Categorical(stats["receiver"].astype(str)[keep], categories=names).codes,
                "f": np.abs(freqs[keep, None] - rows[None, :]).argmin(axis=1),
                "t": (times[keep] - lo) // width,
                "v": stats[value].to_numpy(np.float64, na_value=np.nan)[keep],
                "w": (
                    stats["n"].to_numpy(np.float64, na_value=np.nan)[keep]
                    if "n" in cols
                    else np.ones(int(keep.sum()))
                ),
            }
        )
        groups = cells.groupby(["r", "f", "t"], sort=False)
        if value == "n":
            merged = groups["v"].sum(min_count=1)
        elif value.endswith("_min"):
            merged = groups["v"].min()
        elif value.endswith("_max"):
            merged = groups["v"].max()
        else:
            valid = cells["v"].notna() & (cells["w"] > 0)
            cells = cells.assign(
                vw=cells["v"].where(valid) * cells["w"], ww=cells["w"].where(valid)
            )
            sums = cells.groupby(["r", "f", "t"], sort=False)[["vw", "ww"]].sum(min_count=1)
            merged = sums["vw"] / sums["ww"]
        r, f, t = (np.asarray(merged.index.get_level_values(k)) for k in range(3))
        grid[r, f, t] = merged.to_numpy(np.float64)
    starts = (lo + width * np.arange(n_buckets, dtype=np.int64)).astype("M8[ns]")
    return xr.DataArray(
        grid,
        dims=("receiver", "frequency_hz", "bucket"),
        coords={"receiver": names, "frequency_hz": rows, "bucket": starts},
        name=value,
        attrs={
            "value": value,
            "label": _STATS_LABELS.get(value, value),
            "bucket_s": width / 1e9,
        },
    )


def _frequency_label(hz: float) -> str:
    return f"{hz / 1e3:.3f} kHz"


def plot_session_heatmap(
    stats: pd.DataFrame | xr.DataArray,
    value: str = "snr_db_mean",
    *,
    bucket: float | str | pd.Timedelta | np.timedelta64 = "1min",
    start: Any = None,
    end: Any = None,
    receivers: Sequence[str] | None = None,
    frequencies: Sequence[float] | None = None,
    events: pd.DataFrame | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str | None = None,
    fig: Figure | None = None,
) -> Figure:
    """Plot a statistic over time and frequency: one panel per receiver, gaps left blank.

    Time runs across (UTC, one column per bucket), frequency up (one row per frequency),
    colour is the value. A bucket without measurements is blank, not interpolated: the grid
    is :func:`session_grid`'s.

    Parameters
    ----------
    stats : pandas.DataFrame or xarray.DataArray
        Rows of :func:`heimdall_lab.db.measurement_stats` (e.g. with ``session_id=``), or a
        grid made by :func:`session_grid` (``value``, ``bucket``, ``start``, ``end``,
        ``receivers`` and ``frequencies`` are then its own, and not used).
    value : str, default "snr_db_mean"
        The column to colour by, e.g. ``snr_db_mean`` or ``occupancy``.
    bucket : float (seconds), str, Timedelta or timedelta64, default "1min"
        The bucket width the statistics were asked for.
    start, end : datetime-like, optional
        Span the time axis over ``[start, end)`` at least (e.g. the session's start and
        end), so missing buckets at either end show too.
    receivers : sequence of str, optional
        Panels, in this order; default those with rows.
    frequencies : sequence of float, optional
        Frequencies (Hz) to give a row even without data (e.g. the session plan's).
    events : pandas.DataFrame, optional
        Detection events (:func:`heimdall_lab.db.session_events`: ``receiver``,
        ``start_utc``, ``end_utc``, optionally ``frequency_hz``), each marked on its
        receiver's panel: a red line at its start and a red outline to its end, over its
        frequency's row (all rows when it has none or another).
    vmin, vmax : float, optional
        Colour scale, one for all panels; default the values' range (0 to 1 for
        ``occupancy``).
    cmap : str, optional
        Colour map; default ``viridis`` (``cividis`` for ``occupancy``).
    fig : matplotlib.figure.Figure, optional
        Where to draw; a new figure when omitted.

    Returns
    -------
    matplotlib.figure.Figure
        The panels (titled by receiver), stacked on a shared UTC time axis whose limits are
        the first bucket's start and the last bucket's end, with one colour bar.

    Raises
    ------
    ValidationError
        As for :func:`session_grid`; or if ``events`` lacks a column.
    """
    import matplotlib as mpl
    import matplotlib.dates as mdates

    if isinstance(stats, xr.DataArray):
        grid = stats
        if grid.dims != ("receiver", "frequency_hz", "bucket") or "bucket_s" not in grid.attrs:
            raise ValidationError("expected a grid made by session_grid")
    else:
        grid = session_grid(
            stats,
            value,
            bucket=bucket,
            start=start,
            end=end,
            receivers=receivers,
            frequencies=frequencies,
        )
    value = str(grid.attrs.get("value", grid.name or value))
    width = round(float(grid.attrs["bucket_s"]) * 1e9)
    names = [str(r) for r in grid["receiver"].values]
    rows = np.asarray(grid["frequency_hz"].values, dtype=np.float64)
    starts = np.asarray(grid["bucket"].values, dtype="M8[ns]")
    edges = mdates.date2num(np.append(starts, starts[-1] + np.timedelta64(width, "ns")))
    data = np.asarray(grid.values, dtype=np.float64)
    finite = data[np.isfinite(data)]
    occupancy = value == "occupancy"
    if vmin is None:
        vmin = 0.0 if occupancy or not finite.size else float(finite.min())
    if vmax is None:
        vmax = 1.0 if occupancy or not finite.size else float(finite.max())
    if vmax <= vmin:
        vmin, vmax = vmin - 0.5, vmin + 0.5  # one value: a scale around it
    colours = mpl.colormaps[cmap or ("cividis" if occupancy else "viridis")].with_extremes(
        bad=(0.0, 0.0, 0.0, 0.0)
    )
    fig = _figure(fig, (10, 1.2 + len(names) * (0.9 + 0.3 * len(rows))))
    axes = _grid(fig, len(names), 1, sharex=True, sharey=True)
    mesh = None
    for ax, image in zip(axes, data, strict=True):
        mesh = ax.pcolormesh(
            edges,
            np.arange(len(rows) + 1),
            np.ma.masked_invalid(image),
            shading="flat",
            cmap=colours,
            vmin=vmin,
            vmax=vmax,
        )
    for ax, name in zip(axes, names, strict=True):
        ax.set_yticks(np.arange(len(rows)) + 0.5, labels=[_frequency_label(f) for f in rows])
        ax.set_xlim(edges[0], edges[-1])
        ax.set_ylim(0, len(rows))
        ax.set_facecolor("white")
        ax.set_title(name, loc="left", fontsize=9)
    marked = _mark_events(axes, names, rows, events) if events is not None else 0
    locator = mdates.AutoDateLocator(tz="UTC")
    axes[-1].xaxis.set_major_locator(locator)
    axes[-1].xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz="UTC"))
    axes[-1].set_xlabel("bucket start (UTC)")
    fig.colorbar(mesh, ax=axes, label=str(grid.attrs.get("label", value)), shrink=0.9)
    blank = int(np.isnan(data).sum())
    title = (
        f"{grid.attrs.get('label', value)} per {_duration_text(width)} bucket; "
        f"blank: no measurements ({blank} of {data.size} cells)"
    )
    if marked:
        title += f"; red: {marked} detection event{'s' if marked > 1 else ''}"
    fig.suptitle(title, x=0.02, ha="left", fontsize=10)
    return fig


def _mark_events(axes: list[Axes], names: list[str], rows: np.ndarray, events: pd.DataFrame) -> int:
    """Mark each event on its receiver's panel; the number marked."""
    import matplotlib.dates as mdates

    if not isinstance(events, pd.DataFrame):
        raise ValidationError(f"events must be a DataFrame, got {type(events).__name__}")
    for col in ("receiver", "start_utc", "end_utc"):
        if col not in events.columns:
            raise ValidationError(
                f"events need a {col!r} column (see heimdall_lab.db.session_events)"
            )
    if events.empty:
        return 0
    t0 = mdates.date2num(
        pd.to_datetime(events["start_utc"], utc=True).dt.tz_convert(None).to_numpy("M8[ns]")
    )
    t1 = mdates.date2num(
        pd.to_datetime(events["end_utc"], utc=True).dt.tz_convert(None).to_numpy("M8[ns]")
    )
    freqs = (
        events["frequency_hz"].to_numpy(np.float64, na_value=np.nan)
        if "frequency_hz" in events.columns
        else np.full(len(events), np.nan)
    )
    marked = 0
    for name, a, b, f in zip(events["receiver"].astype(str), t0, t1, freqs, strict=True):
        if name not in names:
            continue
        ax = axes[names.index(name)]
        near = np.flatnonzero(np.abs(rows - f) <= _SAME_FREQUENCY_HZ) if math.isfinite(f) else []
        lo, hi = (near[0] / len(rows), (near[0] + 1) / len(rows)) if len(near) else (0.0, 1.0)
        ax.axvspan(a, max(a, b), lo, hi, facecolor="none", edgecolor="red", lw=1.2, gid="event")
        ax.axvline(a, lo, hi, color="red", lw=1.5, gid="event")
        marked += 1
    return marked


def plot_receivers_map(
    latitude: Any,
    longitude: Any,
    names: Any,
    *,
    status: Mapping[str, str] | None = None,
    transmitter: tuple[float, float] | None = None,
    ax: Axes | None = None,
) -> Axes:
    """Plot receivers (and a transmitter) on a map with coastlines and borders.

    The base map (:func:`heimdall_lab.ui.maps.base_map`) is Natural Earth data shipped with
    the package, in an equirectangular projection with the aspect corrected for the middle
    latitude; nothing is downloaded, so it works offline. Labels keep clear of each other
    and of the markers, even for receivers a few kilometres apart.

    Parameters
    ----------
    latitude, longitude : array-like
        Receiver positions in degrees.
    names : array-like of str
        Receiver names, written beside each marker.
    status : mapping of str to str, optional
        Receiver status (``ok``, ``incomplete``, ``failed``) for the marker colour.
    transmitter : (float, float), optional
        A known or estimated transmitter position (lat, lon).
    ax : matplotlib.axes.Axes, optional
        Where to draw.

    Returns
    -------
    matplotlib.axes.Axes
        The axes.
    """
    from heimdall_lab.ui import maps

    lat = np.asarray(latitude, dtype=float)
    lon = np.asarray(longitude, dtype=float)
    colours = {"ok": "tab:green", "incomplete": "tab:orange", "failed": "tab:red"}
    ax = _axes(ax, (6, 6))
    tx = [] if transmitter is None else [(float(transmitter[1]), float(transmitter[0]))]
    maps.base_map(
        ax,
        np.concatenate([lat, [t[1] for t in tx]]),
        np.concatenate([lon, [t[0] for t in tx]]),
    )
    for la, lo, name in zip(lat, lon, names, strict=True):
        state = (status or {}).get(str(name), "ok")
        ax.scatter(
            lo,
            la,
            s=60,
            color=colours.get(state, "tab:blue"),
            edgecolors="k",
            linewidths=0.5,
            zorder=3,
            label=f"receiver: {state}",
        )
    if tx:
        ax.scatter(*tx[0], marker="*", s=200, color="k", zorder=4, label="transmitter")
    maps.label_points(ax, lon, lat, names, marker_size=60, avoid=tx, avoid_size=200)
    ax.set_title("Receivers")
    maps.legend(ax)
    return ax


def plot_selection(
    selection: Any,
    *,
    margin_deg: float = 3.0,
    levels_km: Any = None,
    grid_points: int = 60,
    ax: Axes | None = None,
) -> Axes:
    """Map a receiver selection: candidates, the chosen set, and its predicted error.

    Parameters
    ----------
    selection : heimdall_lab.planning.Selection
        What :func:`heimdall_lab.planning.select` chose.
    margin_deg : float, default 3.0
        Degrees around the target (or area) and the chosen receivers.
    levels_km : sequence of float, optional
        Contour levels of the predicted median error, km; a 1-2-5 series by default.
    grid_points : int, default 60
        Points along each axis of the error grid.
    ax : matplotlib.axes.Axes, optional
        Where to draw.

    Returns
    -------
    matplotlib.axes.Axes
        The axes: the base map, every candidate (grey), the chosen receivers (labelled), the
        target or area, and labelled contours of the predicted error.
    """
    from heimdall_lab.ui import maps

    ax = _axes(ax, (7, 6))
    chosen = list(selection.entries)
    lat = np.array([e.latitude for e in chosen])
    lon = np.array([e.longitude for e in chosen])
    if selection.area is not None:
        la0, la1, lo0, lo1 = selection.area
        box_lat, box_lon = np.array([la0, la1]), np.array([lo0, lo1])
    else:
        box_lat, box_lon = np.array([selection.target[0]]), np.array([selection.target[1]])
    lat_range = (min(lat.min(), box_lat.min()), max(lat.max(), box_lat.max()))
    lon_range = (min(lon.min(), box_lon.min()), max(lon.max(), box_lon.max()))
    maps.base_map(ax, lat_range, lon_range, margin_deg=margin_deg)
    (la0, la1), (lo0, lo1) = ax.get_ylim(), ax.get_xlim()
    lats, lons, error = selection.error_grid((la0, la1), (lo0, lo1), n=grid_points)
    finite = error[np.isfinite(error)]
    if levels_km is None and finite.size:
        low, high = np.log10(max(finite.min(), 1e-3)), np.log10(finite.max())
        series = [
            m * 10.0**k
            for k in range(int(np.floor(low)), int(np.ceil(high)) + 1)
            for m in (1, 2, 5)
        ]
        levels_km = [v for v in series if finite.min() <= v <= finite.max()][:10]
    if levels_km is not None and len(levels_km):
        contours = ax.contour(
            lons,
            lats,
            error,
            levels=sorted(levels_km),
            colors="tab:purple",
            linewidths=0.8,
            zorder=2,
        )
        ax.clabel(contours, fmt=lambda v: f"{v:g} km", fontsize=7)
        ax.plot([], [], color="tab:purple", lw=0.8, label="predicted median error")
    others = [e for e in selection.candidates if e not in chosen]
    if others:
        ax.scatter(
            [e.longitude for e in others],
            [e.latitude for e in others],
            s=10,
            color="0.55",
            zorder=3,
            label=f"other candidates ({len(others)})",
        )
    ax.scatter(
        lon,
        lat,
        s=70,
        marker="^",
        color="tab:red",
        edgecolors="k",
        linewidths=0.5,
        zorder=4,
        label=f"chosen ({len(chosen)})",
    )
    avoid = []
    if selection.area is not None:
        ax.plot(
            [lo0b := box_lon[0], box_lon[1], box_lon[1], lo0b, lo0b],
            [box_lat[0], box_lat[0], box_lat[1], box_lat[1], box_lat[0]],
            color="k",
            lw=1.2,
            ls="--",
            zorder=4,
            label="target area",
        )
    else:
        avoid = [(float(box_lon[0]), float(box_lat[0]))]
        ax.scatter(*avoid[0], marker="*", s=220, color="k", zorder=5, label="target")
    maps.label_points(
        ax, lon, lat, [e.name for e in chosen], marker_size=70, avoid=avoid, avoid_size=220
    )
    f = selection.frequency_hz
    tuned = f"{f / 1e6:g} MHz" if f >= 1e6 else f"{f / 1e3:g} kHz"
    ax.set_title(
        f"{len(chosen)} receivers for {tuned}: predicted median error "
        f"{selection.predicted_error_km:.2g} km"
    )
    maps.legend(ax)
    return ax
