"""Plots a researcher looks at: PSD per receiver, a waterfall, the receivers on a map.

Thin matplotlib helpers over :mod:`heimdall_lab.dsp` and the capture Dataset; each takes an
optional ``ax`` and returns it, so notebooks can lay them out as they like.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.signal
import xarray as xr

from heimdall_lab import dsp
from heimdall_lab.errors import ValidationError

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def _axes(ax: Axes | None, figsize: tuple[float, float] = (9, 4)) -> Axes:
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def _valid_iq(ds: xr.Dataset, name: str) -> tuple[np.ndarray, float]:
    one = ds.sel(receiver=name)
    n = int(one.n_samples)
    return np.asarray(one.iq.values[:n]), float(one.sample_rate)


def plot_psd(ds: xr.Dataset, *, ax: Axes | None = None, resolution_hz: float | None = None) -> Axes:
    """Plot each receiver's power spectral density, relative to the tuned frequency.

    Parameters
    ----------
    ds : xarray.Dataset
        A capture Dataset.
    ax : matplotlib.axes.Axes, optional
        Where to draw; a new figure when omitted.
    resolution_hz : float, optional
        Welch resolution (see :func:`heimdall_lab.dsp.psd`).

    Returns
    -------
    matplotlib.axes.Axes
        The axes, one line per receiver.

    Raises
    ------
    ValidationError
        If the Dataset holds no receiver.
    """
    if ds.sizes.get("receiver", 0) == 0:
        raise ValidationError("nothing to plot: the capture holds no receiver")
    ax = _axes(ax)
    for name in ds.receiver.values:
        iq, rate = _valid_iq(ds, str(name))
        freqs, density = dsp.psd(iq, rate, resolution_hz=resolution_hz)
        ax.plot(freqs, density, lw=0.8, label=str(name))
    centre = ds.attrs.get("center_frequency_hz")
    ax.set_xlabel("offset from " + (f"{centre / 1e3:.3f} kHz" if centre else "centre") + " (Hz)")
    ax.set_ylabel("PSD (dBFS/Hz)")
    ax.set_title("Power spectral density per receiver")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", ncols=2)
    return ax


def plot_waterfall(
    ds: xr.Dataset,
    receiver: str | None = None,
    *,
    ax: Axes | None = None,
    nperseg: int = 256,
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

    Returns
    -------
    matplotlib.axes.Axes
        The axes with the image.

    Raises
    ------
    ValidationError
        If the receiver is not in the capture or has too few samples.
    """
    names = [str(n) for n in ds.receiver.values]
    name = receiver or (names[0] if names else "")
    if name not in names:
        raise ValidationError(f"receiver {name!r} is not in the capture (it has {names})")
    iq, rate = _valid_iq(ds, name)
    if len(iq) < 2 * nperseg:
        raise ValidationError(f"{name}: {len(iq)} samples are too few for a waterfall")
    f, t, sxx = scipy.signal.spectrogram(
        iq,
        rate,
        window="blackmanharris",  # low sidelobes: a strong carrier stays one column wide
        nperseg=nperseg,
        return_onesided=False,
        detrend=False,
        scaling="density",
    )
    f = np.fft.fftshift(f)
    sxx = np.fft.fftshift(sxx, axes=0)
    ax = _axes(ax, (9, 5))
    level = 10 * np.log10(sxx.T + 1e-30)
    floor = float(np.median(level))
    mesh = ax.pcolormesh(
        f, t, level, shading="auto", cmap="viridis", vmin=floor - 10, vmax=level.max()
    )
    ax.invert_yaxis()
    ax.set_xlabel("offset (Hz)")
    ax.set_ylabel("time (s)")
    ax.set_title(f"Waterfall: {name}")
    ax.figure.colorbar(mesh, ax=ax, label="dBFS/Hz")
    return ax


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
            label=f"candidate ({len(others)})",
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
