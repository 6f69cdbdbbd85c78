"""From a system matrix and a measurement to a `Problem`: row selection, background, frames, scaling.

Defaults are the paper's: band 20–380 kHz, SNR > 1.5, all receive channels, mean background
subtracted, all foreground frames averaged, rows normalised by their ℓ2 norm.
"""

from __future__ import annotations

import logging
import os
import warnings

import numpy as np

from .errors import MDFWarning, NirmpiError, ProblemMismatch
from .grid import Grid
from .problem import Problem

log = logging.getLogger(__name__)

DEFAULTS = dict(min_freq=20e3, max_freq=380e3, snr_threshold=1.5, channels=None,
                normalize_rows=True, background="auto", frames=None, average=None)


# -- row selection --------------------------------------------------------------------------
def select_rows(frequencies: np.ndarray, snr: np.ndarray | None, *, min_freq=20e3, max_freq=380e3,
                snr_threshold=1.5, channels=None, available=None):
    """(channel, frequency-index) pairs to keep, channel outermost and frequency fastest.

    `snr` is (C, K); `available` an optional boolean (K,) mask of stored frequencies.
    """
    frequencies = np.asarray(frequencies, dtype=float)
    K = frequencies.size
    if snr is not None:
        snr = np.asarray(snr, dtype=float)
        if snr.ndim != 2 or snr.shape[1] != K:
            raise ProblemMismatch(f"SNR has shape {snr.shape}, expected (channels, {K})")
        C = snr.shape[0]
    else:
        C = None
    if min_freq is not None and max_freq is not None and min_freq > max_freq:
        raise ProblemMismatch(f"min frequency {min_freq} Hz exceeds max frequency {max_freq} Hz")
    band = np.ones(K, bool)
    if min_freq is not None:
        band &= frequencies >= min_freq
    if max_freq is not None:
        band &= frequencies <= max_freq
    if available is not None:
        band &= np.asarray(available, bool)
    if channels is None:
        if C is None:
            raise ProblemMismatch("channels must be given when no SNR is known")
        channels = list(range(C))
    channels = [int(c) for c in channels]
    if C is not None and any(c < 0 or c >= C for c in channels):
        raise ProblemMismatch(f"receive channels {channels} out of range: the system matrix has {C}")
    if len(set(channels)) != len(channels) or not channels:
        raise ProblemMismatch(f"receive channels {channels} must be distinct and non-empty")
    ch_rows, f_rows = [], []
    for c in channels:
        keep = band.copy()
        if snr is not None and snr_threshold is not None:
            keep &= np.nan_to_num(snr[c], nan=-np.inf) > snr_threshold
        idx = np.flatnonzero(keep)
        ch_rows.append(np.full(idx.size, c))
        f_rows.append(idx)
    ch, fi = np.concatenate(ch_rows).astype(np.int64), np.concatenate(f_rows).astype(np.int64)
    if ch.size == 0:
        raise ProblemMismatch(
            f"no frequency rows left: band {min_freq}–{max_freq} Hz, SNR > {snr_threshold}, "
            f"channels {channels}; lower the SNR threshold or widen the band")
    return ch, fi


def snr_from_frames(fg: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """SNR per row as MPI software reports it: mean |fg − mean bg| over positions / std(bg)."""
    mean_bg = bg.mean(axis=-1, keepdims=True)
    signal = np.abs(fg - mean_bg).mean(axis=-1)
    noise = bg.std(axis=-1, ddof=1) if bg.shape[-1] > 1 else np.full(signal.shape, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(noise > 0, signal / noise, np.inf)


def _frame_blocks(n: int, frames, average) -> list[np.ndarray]:
    """Split positions 0..n-1 (after `frames` selection, the grammar of `napari_nirmpi.frames`)
    into averaging blocks: None averages every selected frame into one; K makes blocks of K
    and drops a trailing incomplete block (`frames.average_blocks` says why)."""
    from .frames import average_blocks, parse_frames

    idx = parse_frames(frames, n)
    if average is None:
        return [idx]
    blocks, dropped = average_blocks(idx, average)
    if dropped:
        log.warning("average=%d: the last %d selected frame(s) do not fill a block and are left out",
                    blocks.shape[1], dropped)
    return list(blocks)


def _dropped(n: int, frames, average) -> int:
    """Frames left out by the averaging rule (for the Problem's params)."""
    if average is None:
        return 0
    from .frames import average_blocks, parse_frames

    return average_blocks(parse_frames(frames, n), average)[1]


def _scale_rows(S, normalize_rows):
    energy = np.sqrt(np.sum(np.abs(S.astype(np.complex128)) ** 2, axis=1))
    if not normalize_rows:
        return np.ones_like(energy)
    with np.errstate(divide="ignore"):
        return np.where(energy > 0, 1.0 / energy, 0.0)


def _finish(S, u_blocks, bg_rows, weights, grid, frequencies, channels, freq_index, snr_rows, params,
            n_avg):
    """Weight rows, estimate per-row noise and build the Problem."""
    S = (S * weights[:, None]).astype(np.complex64)
    u = (u_blocks * weights[None, :]).astype(np.complex64)
    noise = None
    if bg_rows is not None and bg_rows.shape[-1] > 1:
        # noise of an average of n_avg frames minus the mean of B background frames
        B = bg_rows.shape[-1]
        sd = np.sqrt(bg_rows.real.var(axis=-1, ddof=1) + bg_rows.imag.var(axis=-1, ddof=1))
        noise = (sd * np.sqrt(1.0 / n_avg + 1.0 / B) * weights).astype(np.float32)
    if u.shape[0] == 1:
        u = u[0]
    return Problem(S, u, grid, frequencies, channels, freq_index, snr_rows, noise, params,
                   row_weights=weights.astype(np.float32))


# -- in-memory path (simulator) ---------------------------------------------------------------
def build_problem_from_arrays(sm, sm_background, meas, meas_background, *, snr, frequencies, grid: Grid,
                              min_freq=20e3, max_freq=380e3, snr_threshold=1.5, channels=None,
                              normalize_rows=True, frames=None, average=None, background=True,
                              params=None) -> Problem:
    """Same as `build_problem` on arrays: sm (C, K, O), sm_background (C, K, B) | None,
    meas (F, C, K), meas_background (Fb, C, K) | None, snr (C, K), frequencies (K,)."""
    sm = np.asarray(sm)
    meas = np.asarray(meas)
    C, K, O = sm.shape
    if O != grid.size:
        raise ProblemMismatch(f"system matrix has {O} positions, grid {grid.shape} has {grid.size}")
    if meas.ndim != 3 or meas.shape[1:] != (C, K):
        raise ProblemMismatch(f"measurement spectra {meas.shape} do not match the system matrix (C={C}, K={K})")
    if channels is not None:
        from .frames import parse_channels

        channels = parse_channels(channels, C)
    ch, fi = select_rows(frequencies, snr, min_freq=min_freq, max_freq=max_freq,
                         snr_threshold=snr_threshold, channels=channels)
    S = sm[ch, fi, :]
    if background and sm_background is not None and sm_background.shape[-1] > 0:
        S = S - sm_background[ch, fi, :].mean(axis=-1, keepdims=True)
    rows = meas[:, ch, fi]  # (F, M)
    bg_rows = None
    if background and meas_background is not None and len(meas_background) > 0:
        bg_rows = np.asarray(meas_background)[:, ch, fi].T  # (M, Fb)
        rows = rows - bg_rows.mean(axis=-1)[None, :]
    blocks = _frame_blocks(rows.shape[0], frames, average)
    u = np.stack([rows[b].mean(axis=0) for b in blocks])
    weights = _scale_rows(S, normalize_rows)
    p = dict(DEFAULTS, min_freq=min_freq, max_freq=max_freq, snr_threshold=snr_threshold,
             channels=sorted(set(int(c) for c in ch)), normalize_rows=normalize_rows,
             background=bool(background), average=average,
             frames=None if frames is None else str(frames), num_rows=int(ch.size))
    dropped = _dropped(rows.shape[0], frames, average)
    if dropped:
        p["frames_dropped"] = dropped
    p.update(params or {})
    snr_rows = None if snr is None else np.asarray(snr)[ch, fi].astype(np.float32)
    return _finish(S, u, bg_rows, weights, grid, np.asarray(frequencies)[fi], ch, fi, snr_rows, p,
                   n_avg=len(blocks[0]))


# -- file path --------------------------------------------------------------------------------
def _open(f, role):
    from . import mdf

    if isinstance(f, mdf.MDFFile):
        return f
    if not isinstance(f, (str, os.PathLike)):
        raise NirmpiError(f"{role}: expected a path or MDFFile, got {type(f).__name__}")
    return mdf.open(f)


def check_compatible(sm, meas) -> None:
    """Raise ProblemMismatch if the two files were not recorded with the same sequence."""
    a, b = sm.acquisition, meas.acquisition
    name = f"{os.path.basename(str(sm.path))} vs {os.path.basename(str(meas.path))}"

    def differ(what, x, y, rtol=1e-6):
        raise ProblemMismatch(f"{name}: {what} differ (system matrix {x}, measurement {y})")

    if a is None or b is None:
        raise ProblemMismatch(f"{name}: both files need /acquisition (drive field and receiver)")
    if a.num_sampling_points != b.num_sampling_points:
        differ("numbers of sampling points", a.num_sampling_points, b.num_sampling_points)
    if not np.isclose(a.bandwidth, b.bandwidth, rtol=1e-6):
        differ("receiver bandwidths (Hz)", a.bandwidth, b.bandwidth)
    if a.num_rx_channels != b.num_rx_channels:
        differ("numbers of receive channels", a.num_rx_channels, b.num_rx_channels)
    if not np.isclose(a.base_frequency, b.base_frequency, rtol=1e-6) or \
            tuple(np.ravel(a.dividers)) != tuple(np.ravel(b.dividers)):
        differ("drive fields (base frequency / dividers)",
               (a.base_frequency, tuple(np.ravel(a.dividers))), (b.base_frequency, tuple(np.ravel(b.dividers))))
    sa, sb = np.ravel(a.drive_strength), np.ravel(b.drive_strength)
    if sa.shape != sb.shape or not np.allclose(sa, sb, rtol=0.05):
        differ("drive-field amplitudes (T)", sa.tolist(), sb.tolist())
    if a.drive_phase is not None and b.drive_phase is not None:
        # compare on the circle: a phase of -pi and one of pi are the same drive field
        pa, pb = np.asarray(a.drive_phase, float), np.asarray(b.drive_phase, float)
        if pa.shape != pb.shape or np.any(np.abs(np.angle(np.exp(1j * (pa - pb)))) > 0.05):
            differ("drive-field phases (rad)", pa.tolist(), pb.tolist())
    if a.gradient is not None and b.gradient is not None:
        ga, gb = np.asarray(a.gradient, float), np.asarray(b.gradient, float)
        scale = max(np.abs(ga).max(), np.abs(gb).max())
        if scale == 0 or not np.allclose(ga, gb, rtol=0.05, atol=0.01 * scale):
            differ("selection-field gradients (T/m, diagonal)", np.diag(ga).tolist(), np.diag(gb).tolist())


_TINY = 1e-30  # below this no recorded signal survives float32 arithmetic (denormals start at 1.2e-38)


def _check_signal(values: np.ndarray, path, what: str) -> None:
    """Refuse an all-zero or denormal selection: it would give an all-zero image, no word."""
    peak = float(np.max(np.abs(values))) if values.size else 0.0
    if not peak > _TINY:
        raise ProblemMismatch(f"{_shown(path)}: {what} hold no signal (largest magnitude {peak:.3g}, "
                              f"zero or denormal): the reconstruction would be an all-zero image")


def _shown(path) -> str:
    s = str(path)
    return s if s.isprintable() else repr(s)[1:-1]


def _file_warnings(*files) -> list[str]:
    """Warnings of the files read (MDFFile.warnings), each once, emitted as MDFWarning."""
    out = []
    for f in files:
        for w in getattr(f, "warnings", ()):
            text = f"{_shown(f.path)}: {w}"
            if text not in out:
                out.append(text)
                warnings.warn(text, MDFWarning, stacklevel=3)
    return out


def _sm_snr(sm, ch_all):
    if sm.snr is not None:
        snr = np.asarray(sm.snr)
        return snr[0] if snr.ndim == 3 else snr
    if sm.is_background_frame is None or not np.any(sm.is_background_frame):
        return None
    K = sm.frequencies.size
    stored = np.asarray(sm.available_freq_index)  # frequency-selected files hold only these
    fg = sm.read_system_matrix(channels=ch_all, freq_index=stored, subtract_background=False)
    bg = sm.read_background(channels=ch_all, freq_index=stored)
    snr = np.full((len(ch_all), K), np.nan)  # NaN never passes a threshold
    snr[:, stored] = snr_from_frames(fg, bg).reshape(len(ch_all), stored.size)
    return snr


def build_problem(sm, meas, *, min_freq=20e3, max_freq=380e3, snr_threshold=1.5, channels=None,
                  background="auto", frames=None, average=None, normalize_rows=True,
                  period=0) -> Problem:
    """Read only the selected rows of the system matrix and build the Problem for `meas`.

    background: "auto" subtracts the mean of the measurement's own background frames when it
    has some; "none" skips it; a path uses that file's frames as an empty-scanner measurement.
    The system matrix's own background frames are always removed when the file has them.
    frames: foreground-frame selection (indices or slice); average: None averages all selected
    frames into one right-hand side, K averages blocks of K frames (u becomes (F, M)).
    """
    smf = _open(sm, "system matrix")
    mf = _open(meas, "measurement")
    if smf.kind != "calibration" or smf.grid is None:
        raise ProblemMismatch(f"{smf.path}: not a system matrix (no /calibration grid)")
    if mf.kind == "reconstruction":
        raise ProblemMismatch(f"{_shown(mf.path)}: is a reconstruction, not a measurement")
    if mf.kind == "calibration":
        raise ProblemMismatch(f"{_shown(os.path.basename(str(mf.path)))} is a system matrix (calibration), "
                              f"not a measurement ({_shown(mf.path)} has a /calibration group); pass "
                              f"the measurement file instead")
    check_compatible(smf, mf)
    from .frames import parse_channels

    file_warnings = _file_warnings(smf, mf)
    C = smf.acquisition.num_rx_channels
    snr = _sm_snr(smf, list(range(C)))
    available = None
    sel = getattr(smf, "frequency_selection", None)
    if sel is not None:
        available = np.zeros(smf.frequencies.size, bool)
        available[np.asarray(sel)] = True
    msel = getattr(mf, "frequency_selection", None)
    if msel is not None:
        m_avail = np.zeros(smf.frequencies.size, bool)
        m_avail[np.asarray(msel)] = True
        available = m_avail if available is None else available & m_avail
    if snr is None and snr_threshold:
        raise ProblemMismatch(f"{smf.path}: no /calibration/snr and no background frames to estimate it; "
                              "use snr_threshold=0")
    ch, fi = select_rows(smf.frequencies, snr, min_freq=min_freq, max_freq=max_freq,
                         snr_threshold=snr_threshold, channels=parse_channels(channels, C),
                         available=available)
    # rows are channel-outer: read each channel's own frequency list (the reader's requests are
    # channel × frequency products, and only the selected rows leave the disk)
    S = np.concatenate([smf.read_system_matrix(channels=[c], freq_index=fi[ch == c], subtract_background=True,
                                               period=period) for c in dict.fromkeys(ch.tolist())])
    _check_signal(S, smf.path, "the selected system-matrix rows")
    u, bg_rows, blocks = _measurement_rows(mf, ch, fi, background, frames, average, period)
    _check_signal(u, mf.path, "the selected measurement frames (after background subtraction)")
    weights = _scale_rows(S, normalize_rows)
    params = dict(min_freq=min_freq, max_freq=max_freq, snr_threshold=snr_threshold,
                  channels=[int(c) for c in dict.fromkeys(ch.tolist())], normalize_rows=normalize_rows,
                  background=str(background), frames=None if frames is None else str(frames),
                  average=average, period=period, num_rows=int(ch.size),
                  sm_path=os.path.abspath(str(smf.path)), meas_path=os.path.abspath(str(mf.path)))
    if average is not None:
        n_fg = int(mf.num_frames - (np.count_nonzero(mf.is_background_frame) if mf.is_background_frame is not None
                                    else 0))
        dropped = _dropped(n_fg, frames, average)
        if dropped:
            params["frames_dropped"] = dropped
    if file_warnings:
        params["warnings"] = file_warnings
    snr_rows = None if snr is None else snr[ch, fi].astype(np.float32)
    return _finish(S, u, bg_rows, weights, smf.grid, smf.frequencies[fi], ch, fi, snr_rows, params,
                   n_avg=len(blocks[0]))


def _measurement_rows(mf, ch, fi, background, frames, average, period):
    """Averaged, background-corrected measurement rows (F, M) plus background rows (M, B)."""
    is_bg = np.asarray(mf.is_background_frame, bool) if mf.is_background_frame is not None \
        else np.zeros(mf.num_frames, bool)
    fg_idx = np.flatnonzero(~is_bg)
    if fg_idx.size == 0:
        raise ProblemMismatch(f"{mf.path}: the measurement has no foreground frames")
    blocks = _frame_blocks(fg_idx.size, frames, average)
    needed = np.unique(np.concatenate(blocks))
    rows = _read_rows(mf, fg_idx[needed], ch, fi, period)  # (F', M)
    pos = {int(k): i for i, k in enumerate(needed)}
    u = np.stack([rows[[pos[int(k)] for k in b]].mean(axis=0) for b in blocks])
    bg_rows = None
    if isinstance(background, (str, os.PathLike)) and str(background) not in ("auto", "none"):
        bf = _open(background, "background")
        check_compatible(bf, mf) if bf.acquisition is not None else None
        b_is_bg = np.asarray(bf.is_background_frame, bool) if bf.is_background_frame is not None else None
        b_idx = np.flatnonzero(b_is_bg) if b_is_bg is not None and b_is_bg.any() else np.arange(bf.num_frames)
        bg_rows = _read_rows(bf, b_idx, ch, fi, period).T
    elif background == "auto" and is_bg.any():
        bg_rows = _read_rows(mf, np.flatnonzero(is_bg), ch, fi, period).T
    elif background not in ("auto", "none", None, False):
        raise ProblemMismatch(f"background must be 'auto', 'none' or a file path, got {background!r}")
    if bg_rows is not None:
        u = u - bg_rows.mean(axis=-1)[None, :]
    return u, bg_rows, blocks


def _read_rows(mf, frame_idx, ch, fi, period):
    """(F, M) spectra rows of the given frames for row pairs (ch, fi)."""
    chans = np.unique(ch)
    freqs = np.unique(fi)
    spec = mf.read_spectra(frames=np.asarray(frame_idx), channels=chans, freq_index=freqs, period=period)
    ci = np.searchsorted(chans, ch)
    fj = np.searchsorted(freqs, fi)
    return spec[:, ci, fj]


def measurement_frames(meas, problem: Problem, *, frames=None, average=None, background=None):
    """Per-frame right-hand sides for `problem`'s rows and scaling (a frame series).

    Returns (u (F, M) complex64, foreground frame indices per block (list of arrays), frame times (F,) s).
    """
    mf = _open(meas, "measurement")
    p = problem.params
    background = p.get("background", "auto") if background is None else background
    u, _, blocks = _measurement_rows(mf, problem.channels, problem.freq_index, background, frames,
                                     1 if average is None else average, p.get("period", 0))
    if problem.row_weights is None:
        raise NirmpiError("the problem carries no row weights; build it with build_problem")
    weights = problem.row_weights
    is_bg = np.asarray(mf.is_background_frame, bool) if mf.is_background_frame is not None \
        else np.zeros(mf.num_frames, bool)
    fg_idx = np.flatnonzero(~is_bg)
    times_all = np.asarray(mf.frame_times, float)
    times = np.array([times_all[fg_idx[b]].mean() for b in blocks])
    return (u * weights[None, :]).astype(np.complex64), [fg_idx[b] for b in blocks], times

