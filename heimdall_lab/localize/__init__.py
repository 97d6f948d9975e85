r"""Locate a transmitter by time difference of arrival (TDoA) from GNSS-timestamped IQ.

Every 512-sample KiwiSDR frame carries the GNSS time of its first sample, so the captures of
several receivers can be put on one time axis, and the delay between the moments a
transmitter's modulation reaches two receivers places the transmitter on a hyperbola-like
curve (an isochrone) on the Earth. Three receivers give two independent delays and fix a
2-D position; more receivers over-determine it.

The method follows the public KiwiSDR TDoA method (hcab14/TDoA, Octave): GNSS-timed samples,
pairwise cross-correlation, ground-wave propagation along great circles, and a likelihood
map searched on a latitude/longitude grid, over WGS84 geodesics. The steps:

Alignment on GNSS time
    Only *trusted* frames are used: a GNSS fix and not one of the first, stale, frames
    (``frame_trusted`` of the capture Dataset). The exact sample rate is a least-squares line
    through (sample index, GNSS time) pooled over gap-free segments (segments end where
    frames were lost, ``frame_seq`` jumps, or where the timestamps jump against the sample
    count). Each trusted frame is then placed on the time axis *by its own timestamp*:
    sample ``n`` of frame ``k`` is at ``T_k + (n - start_k) / rate``. Lost frames therefore
    leave a gap instead of shifting everything after them. Frames whose timestamp is more
    than ``max_timestamp_error_s`` off their segment's line, isolated frames whose timing
    jumps without lost frames to explain it, and frames overlapping earlier ones in time are
    rejected and counted (:class:`ReceiverTiming`). Times are kept as GPS time of week in
    integer ns (wrapped over week ends) relative to one reference frame, so they do not
    depend on the GPS week resolution.
Resampling
    Each receiver's carrier is found (:func:`heimdall_lab.dsp.measure`, refined by a
    weighted fit of the carrier phase) and mixed to 0 Hz using each sample's GNSS time, and
    the samples are linearly interpolated onto a common uniform grid (the median of the
    receivers' rates) over the span all usable receivers cover. Grid points in a gap (no
    samples within 1.5 sample periods) are marked invalid and carry zero weight.
Correlation
    ``method="envelope"``: the magnitude ``|iq|`` of the signal band-limited to ``|f| <=
    band[1]`` around the carrier, mean removed (what an amplitude-keyed carrier offers).
    ``method="complex"``: the complex signal after the carrier offset and phase are removed,
    mean (the steady carrier) subtracted; it sees phase and frequency modulation too
    (DCF77's pseudo-random phase keying, FSK). ``method="auto"`` (the default of
    :func:`locate_dataset`) runs both and keeps the one with more good pairs, then the
    smaller median standard error: the envelope on a plain keyed carrier, the complex signal
    on the real DCF77 recordings (see ``reports/localize.md``). Only frequencies with
    ``band[0] <= |f| <= band[1]`` enter the correlation. For each pair the capture is cut
    into chunks of ``chunk_s``; each chunk of receiver ``a`` (with 10 % cosine tapers at its
    ends) is correlated (FFT) with the same stretch of receiver ``b`` extended on both
    sides, so every lag sees the full overlap, and the same is done backwards (chunks of
    ``b`` against ``a``, shifted by the coarse delay): cutting a chunk biases its peak by an
    amount that depends on the signal at the cut, and as the same samples are cut both ways,
    half the difference of the forward and backward delays cancels that bias. Chunks within
    20 ms of a gap in either receiver are left out (a gap would otherwise correlate with the
    other receiver's signal, or with its own gap). The chunk correlations are summed
    (coherently for the envelope, in magnitude for the complex signal, which tolerates
    residual frequency offsets), the peak is searched within ``+-(baseline / v +
    lag_margin_s + search_extra_s)``, and located to a small fraction of a sample by Newton
    iterations on the exact band-limited correlation (its Fourier sum), started from
    parabolic interpolation. The delay ``tau_ab`` is the arrival time at ``a`` minus that at
    ``b``.
Quality and rejection
    Per pair: ``coefficient``, the correlation at the peak normalised so that identical
    signals give 1; ``psr_db``, the peak over the highest sidelobe of the whole-capture
    correlation within +-0.5 s outside the main lobe; and ``sigma_s``, the delay's standard
    error from the spread of the per-chunk peaks (1.4826 x median absolute deviation /
    sqrt(chunks)), at least ``sigma_floor_s``, with ``systematic_sigma_s`` added in
    quadrature. A pair is rejected when its coefficient is under ``min_coefficient``, its
    PSR under ``min_psr_db``, its sigma over ``max_sigma_s``, or its delay outside the
    physically possible ``|tau| <= baseline / v + lag_margin_s``.
Position
    A receiver at WGS84 geodesic distance ``d_i`` (:func:`heimdall_lab.geo.distance_m`)
    hears the transmitter after the delay of the stated path model
    (:class:`heimdall_lab.propagation.Propagation`, argument ``propagation``): the ground
    wave at ``velocity_factor * c`` by default; a one-hop sky wave by a mirror at a layer
    height (``"sky"``); or each receiver by the ground wave within the ground range at the
    capture's frequency and by the sky wave beyond it (``"auto"``; the layer height's
    uncertainty, 20 %, enters those receivers' errors). With ``"ground"``, receivers beyond
    the ground range are named in the notes. The fit is generalised least squares:
    ``chi2(p) = |W (tau - model(p))|^2`` with ``W`` whitening the covariance of the pair
    delays (:mod:`heimdall_lab.localize.model`), evaluated on a latitude/longitude grid over
    the receivers' bounding box plus a margin; the lowest local minima are refined by
    ``scipy.optimize.least_squares`` in a local north/east frame (km), kept within the grid
    plus 10 % (a fit stopped at that edge is reported as not converged). Other local
    solutions within the confidence level's chi-square of the best flag the result
    ``ambiguous``.
Error budget
    Each pair's error has a statistical part (the chunk spread) and a systematic part
    measured from the data (:mod:`heimdall_lab.localize.budget`): the disagreement of the
    envelope and complex estimates, the spread of the delays over sub-bands of the
    correlation band, and the closure of the delays around triangles of receivers, plus
    ``systematic_sigma_s`` if stated. What the delays cannot reveal, a timing error common
    to all pairs of one receiver, is a stated prior per receiver (``receiver_sigma_s``,
    1 us by default) that enters every pair of the receiver (so the pairs' errors are
    correlated), or is measured on a transmitter at a known position and removed
    (reference-emitter calibration, :func:`calibrate`). When all pairs of ``n`` receivers
    are used, the independent parts are inflated by ``n / 2`` (the pairs share receivers).
    ``Localization.error_budget["parts"]`` says which errors a result includes.
Robust fit
    With four or more receivers, while the fit is inconsistent (chi-square p-value under
    0.01) a receiver whose pairs disagree with the rest is found by leaving each out in
    turn and dropped if the fall in chi-square is significant; ``Localization.dropped``
    says which and why.
Uncertainty
    The covariance of (east, north) in km is ``(J^T J)^-1`` with ``J`` the Jacobian of the
    whitened residuals at the estimate, multiplied by the reduced chi-square when the fit
    has degrees of freedom and that exceeds 1. The ellipse's semi-axes are
    ``sqrt(eigenvalue * chi2.ppf(confidence, 2))``; its orientation is the major axis'
    azimuth, degrees clockwise from north. The ellipse is a summary: the stated region is
    the likelihood contour itself, ``(chi2 - chi2_min) / scale <= chi2.ppf(confidence, 2)``
    (``Localization.region`` on a local grid, ``Localization.contains`` exactly), which
    keeps a banana or two lobes where the geometry makes them.

Receivers without GNSS timestamps cannot take part; :func:`locate_rssi` /
:func:`locate_rssi_dataset` give a far cruder estimate from received power alone.

Entry points: :func:`locate_dataset` (a capture Dataset, the common input),
:func:`calibrate` (per-receiver biases from a known transmitter),
:func:`locate_recordings` (recordings plus positions), :func:`locate_files` (kiwi IQ WAV
files), and the pieces :func:`estimate_delay` and :func:`solve_tdoa`. Results are
:class:`Localization` objects (``to_dict()`` for storage);
:func:`heimdall_lab.ui.localization_plot.plot_localization` draws one with matplotlib.
"""

from __future__ import annotations

from heimdall_lab.localize.calibration import Calibration, calibrate
from heimdall_lab.localize.checks import DEFAULT_BANDS, METHODS
from heimdall_lab.localize.delay import estimate_delay
from heimdall_lab.localize.results import DelayEstimate, Localization, PairDelay, ReceiverTiming
from heimdall_lab.localize.rssi import locate_rssi, locate_rssi_dataset
from heimdall_lab.localize.solver import solve_tdoa
from heimdall_lab.localize.tdoa import locate_dataset, locate_files, locate_recordings

__all__ = [
    "DEFAULT_BANDS",
    "METHODS",
    "Calibration",
    "DelayEstimate",
    "Localization",
    "PairDelay",
    "ReceiverTiming",
    "calibrate",
    "estimate_delay",
    "locate_dataset",
    "locate_files",
    "locate_recordings",
    "locate_rssi",
    "locate_rssi_dataset",
    "solve_tdoa",
]
