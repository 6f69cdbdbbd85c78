"""Physics simulator for MPI: sample data, test data and benchmark data.

Model (equilibrium, field-free point, Lissajous drive):
- Particles: mean moment m·L(ξ|B|)·B/|B| (Langevin, ξ = m / k_B T); optional Debye relaxation
  1 / (1 + i 2π f τ) per frequency.
- Scanner: B(r, t) = G r + B_D(t), G diagonal (T/m; the in-plane part of diag(-1, -1, 2) in 2D),
  B_D,c(t) = A_c sin(2π f_c t), f_c = base_frequency / divider_c; one receive channel per drive
  axis (homogeneous coil sensitivity `coil_sensitivity`, T/A); sampling at base_frequency, so
  V = lcm(dividers) samples per period.
- Signal: u_c = -p · N · d/dt m̄_c, computed as rfft(m̄_c)/V times i 2π f, times the receive
  transfer function (first-order high-pass x first-order low-pass), N = particles in the volume.
- System matrix: one column per voxel, the response of a delta sample that fills the voxel
  (mean over sub_voxel^ndim points), for unit concentration (`Particles.number_density`).
- Phantom measurement: the continuous phantom rendered on a grid `meas_fine` times finer than
  the native one (6 in 2D, 4 in 3D; SM sub-voxel sampling 4 / 2 points per axis, so no sampling
  point is shared: no inverse crime), never from the reconstruction system matrix.
- Background (every frame): drive feed-through at the drive frequencies (+ cross-talk) and low
  harmonics, a slow part at low frequencies and a weak broadband part; its feed-through
  amplitude jitters from frame to frame (so the drive frequencies have a low SNR, as in real
  scanners); the measurement's background differs slightly from the calibration's (drift).
- Noise: complex Gaussian per frame, channel and frequency from white time-domain noise shaped
  by the transfer function; its level is set so that the SM's in-band (20-380 kHz) median SNR
  hits the preset: low 1000 (>= 500), medium 80 (default), high 5; or a number.
- SNR as MPI software reports it: mean_o |SM - mean(bg)| / std(bg frames), shape (C, K).

Frequency-domain arrays are `numpy.fft.rfft(time, axis=-1) / V` (docs/architecture.md).

Speed: point responses come from a numba kernel (parallel over voxels, no (points, time, axis)
temporaries); the noiseless system matrix and phantom measurements are cached in-process
(functools.lru_cache keyed on particles, scanner, grid and phantom spec), so building many cases
(phantoms x noise levels x seeds) costs about 0.2-0.4 s each after the first; a fresh 29² 2D case
takes about 2.5 s of one core (points are processed in chunks of 256 to stay in cache).

Scanner preset "openmpi" (`Scanner.openmpi()`, `simulate_case(scanner="openmpi")`): OpenMPIData's
Bruker scanner, 37³ over (z, y, x) = (18.5, 37, 37) mm, 12 mT at 2.5 MHz / (102, 96, 136),
(-1, -1, 2) T/m, 3 receive channels, V = 1632, K = 817 (docs/3d.md: the published z divider is 99;
why 136 here). A 37³ case takes about 3 minutes of 2 cores and peaks at about 5.6 GB (the
calibration is held in complex64; the moment kernel is compiled with numba).

Default 3D: dividers (143, 132, 156) at 2.5 MHz (about 17.5, 18.9, 16.0 kHz; 12 x 13 x 11 cycles in
V = 1716 samples = 0.686 ms) instead of the scanner's (102, 96, 99), whose period of 53856
samples would make a 13³ simulation take minutes; gradient diag(-1, -1, 2) T/m, 12 mT drive
on every axis, 3 receive channels; default grid 13³ over (z, y, x) = (13, 26, 26) mm.
"""

from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from .errors import NirmpiError
from .grid import Grid
from .phantoms import PHANTOMS, Phantom, make_phantom

__all__ = [
    "Particles", "Scanner", "SimulatedCase", "simulate_case", "simulate", "NOISE_PRESETS",
    "langevin", "system_matrix", "measure_phantom", "PHANTOMS", "SCANNERS", "scanner_preset",
]

MU0 = 4e-7 * math.pi
KB = 1.380649e-23
NOISE_PRESETS = {"low": 1000.0, "medium": 80.0, "high": 5.0}   # in-band median SNR of the SM
BAND = (20e3, 380e3)


# --------------------------------------------------------------------------------------------
def langevin(x: np.ndarray) -> np.ndarray:
    """L(x) = coth(x) - 1/x, with its series near 0."""
    x = np.asarray(x, dtype=np.float64)
    return x * _langevin_over_x(x)


def _langevin_over_x(x: np.ndarray) -> np.ndarray:
    """L(x)/x (-> 1/3 at 0), even in x; the series avoids 0/0 and cancellation below |x| = 1e-2."""
    ax = np.abs(x)
    small = ax < 1e-2
    xs = np.where(small, 1.0, ax)
    big = (1.0 / np.tanh(xs) - 1.0 / xs) / xs
    x2 = ax * ax
    series = 1.0 / 3.0 - x2 / 45.0 + 2.0 * x2 * x2 / 945.0
    return np.where(small, series, big)


@dataclass(frozen=True)
class Particles:
    """Single-core magnetite-like tracer in the equilibrium (Langevin) model.

    saturation_magnetisation in T/µ0 (0.6 -> 477 kA/m); number_density: particles per m³ at
    concentration 1 (the delta sample; phantoms are in the same unit).
    """

    core_diameter: float = 25e-9
    saturation_magnetisation: float = 0.6
    temperature: float = 300.0
    relaxation_time: float = 0.0
    number_density: float = 1e21

    def __post_init__(self):
        for name in ("core_diameter", "saturation_magnetisation", "temperature", "number_density"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v > 0):
                raise NirmpiError(f"Particles.{name} must be positive and finite, got {v}")
        if not (np.isfinite(self.relaxation_time) and self.relaxation_time >= 0):
            raise NirmpiError(f"Particles.relaxation_time must be >= 0, got {self.relaxation_time}")

    @property
    def moment(self) -> float:
        """Magnetic moment of one core, A m²."""
        return self.saturation_magnetisation / MU0 * math.pi * self.core_diameter ** 3 / 6

    @property
    def xi(self) -> float:
        """m / (k_B T) in 1/T (≈ 940 /T at 25 nm, 300 K)."""
        return self.moment / (KB * self.temperature)

    def mean_moment(self, B: np.ndarray) -> np.ndarray:
        """Mean moment (A m²) in the field B (..., D) tesla: m L(ξ|B|) B/|B|."""
        B = np.asarray(B, dtype=np.float64)
        absb = np.sqrt(np.sum(B * B, axis=-1, keepdims=True))
        return self.moment * self.xi * _langevin_over_x(self.xi * absb) * B

    def relaxation(self, f: np.ndarray) -> np.ndarray:
        """Debye factor 1 / (1 + i 2π f τ)."""
        return 1.0 / (1.0 + 2j * np.pi * np.asarray(f) * self.relaxation_time)


_DEFAULTS = {
    2: dict(gradient=(-1.0, -1.0), drive_amplitude=(12e-3, 12e-3), dividers=(102, 96)),
    3: dict(gradient=(-1.0, -1.0, 2.0), drive_amplitude=(12e-3, 12e-3, 12e-3), dividers=(143, 132, 156)),
}


@dataclass(frozen=True)
class Scanner:
    """FFP scanner with a Lissajous drive. Per-axis tuples are in (x, y[, z]) order.

    gradient: diagonal of the selection-field gradient (T/m); drive_amplitude (T); dividers of
    base_frequency (Hz) per drive axis; receive chain: first-order high-pass `highpass` (Hz) x
    first-order low-pass `lowpass` (Hz); coil_sensitivity (T/A); slice_thickness (m): depth of a
    2D voxel (sets the particle count of a 2D delta sample).
    """

    ndim: int = 2
    gradient: tuple | None = None
    drive_amplitude: tuple | None = None
    dividers: tuple | None = None
    base_frequency: float = 2.5e6
    drive_phase: tuple | None = None
    highpass: float = 10e3
    lowpass: float = 600e3
    coil_sensitivity: float = 1e-3
    slice_thickness: float = 1e-3

    def __post_init__(self):
        if self.ndim not in (2, 3):
            raise NirmpiError(f"Scanner.ndim must be 2 or 3, got {self.ndim}")
        for name, default in _DEFAULTS[self.ndim].items():
            v = getattr(self, name)
            v = default if v is None else tuple(float(x) if name != "dividers" else int(x) for x in np.ravel(v))
            if len(v) != self.ndim:
                raise NirmpiError(f"Scanner.{name} needs {self.ndim} values (x, y[, z]), got {v}")
            object.__setattr__(self, name, v)
        phase = (0.0,) * self.ndim if self.drive_phase is None else tuple(float(p) for p in self.drive_phase)
        if len(phase) != self.ndim:
            raise NirmpiError(f"Scanner.drive_phase needs {self.ndim} values, got {phase}")
        object.__setattr__(self, "drive_phase", phase)
        if any(d < 1 for d in self.dividers) or any(g == 0 for g in self.gradient):
            raise NirmpiError("Scanner: dividers must be >= 1 and gradients non-zero")

    @property
    def num_sampling_points(self) -> int:
        return int(math.lcm(*self.dividers))

    @property
    def num_frequencies(self) -> int:
        return self.num_sampling_points // 2 + 1

    @property
    def bandwidth(self) -> float:
        return self.base_frequency / 2

    @property
    def cycle(self) -> float:
        return self.num_sampling_points / self.base_frequency

    @property
    def drive_frequencies(self) -> tuple:
        return tuple(self.base_frequency / d for d in self.dividers)

    def frequencies(self) -> np.ndarray:
        return np.arange(self.num_frequencies) * self.bandwidth / (self.num_frequencies - 1)

    def times(self) -> np.ndarray:
        return np.arange(self.num_sampling_points) / self.base_frequency

    def drive_field(self) -> np.ndarray:
        """B_D(t): (V, D) tesla."""
        t = self.times()[:, None]
        A, f, ph = (np.asarray(v)[None, :] for v in (self.drive_amplitude, self.drive_frequencies, self.drive_phase))
        return A * np.sin(2 * np.pi * f * t + ph)

    def transfer_function(self) -> np.ndarray:
        """Receive transfer function (C, K) complex: high-pass x low-pass, the same per channel."""
        f = self.frequencies()
        h = (1j * f / self.highpass) / (1 + 1j * f / self.highpass) / (1 + 1j * f / self.lowpass)
        return np.tile(h, (self.ndim, 1))

    def gradient_matrix(self) -> np.ndarray:
        """(3, 3) T/m in (x, y, z); a 2D scanner gets the z gradient that keeps the trace 0."""
        g = list(self.gradient) + ([-sum(self.gradient)] if self.ndim == 2 else [])
        return np.diag(g)

    def drive_fov(self) -> tuple:
        """2A/|G| per axis (x, y[, z]), metres."""
        return tuple(2 * a / abs(g) for a, g in zip(self.drive_amplitude, self.gradient))

    @classmethod
    def openmpi(cls, **overrides) -> "Scanner":
        """OpenMPIData's Bruker preclinical scanner, 3D Lissajous sequence (docs/3d.md cites each
        figure): 12 mT drive on x, y, z at 2.5 MHz / (102, 96, 99), gradient (-1, -1, 2) T/m,
        three receive channels, 817 frequencies per channel (V = 1632 at 2.5 MHz).

        One substitution: the z divider is 136 instead of 99. With 99 the trajectory repeats only
        after lcm(102, 96, 99) = 53856 samples (21.54 ms, as published), 33x the cost of a
        1632-sample period, and the published 817-bin spectra keep just the 1632-sample lattice.
        136 divides 1632, so every harmonic lies on that lattice and K = 817 exactly; z is
        driven at 18.4 kHz instead of 25.3 kHz. Pass dividers=(102, 96, 99) for the published
        sequence (33x slower: small grids only)."""
        kw = dict(ndim=3, gradient=(-1.0, -1.0, 2.0), drive_amplitude=(12e-3, 12e-3, 12e-3),
                  dividers=(102, 96, 136), base_frequency=2.5e6)
        kw.update(overrides)
        return cls(**kw)


# Scanner presets by name: (scanner factory, default grid shape, default FOV (z, y, x) metres)
# OpenMPIData calibration 6 (3D Lissajous): 37 x 37 x 37 positions over 37 x 37 x 18.5 mm (x, y, z).
SCANNERS = {
    "default": (lambda ndim=2: Scanner(ndim=ndim), None, None),
    "openmpi": (lambda ndim=3: Scanner.openmpi(), (37, 37, 37), (18.5e-3, 37e-3, 37e-3)),
}


def scanner_preset(name: str):
    """(Scanner, default grid shape | None, default FOV | None) of a preset name (SCANNERS)."""
    key = str(name).lower()
    if key not in SCANNERS:
        raise NirmpiError(f"unknown scanner {name!r}: expected one of {', '.join(SCANNERS)}")
    make, shape, fov = SCANNERS[key]
    return make(), shape, fov


# --------------------------------------------------------------------------------------------
# Point responses (the expensive part): mean moment per particle on the time grid
def _moment_time(points_xyz: np.ndarray, particles: Particles, scanner: Scanner) -> np.ndarray:
    """(P, D) positions (m, x-first) -> mean moment per particle (P, D, V) float64."""
    BD = scanner.drive_field()                               # (V, D)
    G = np.asarray(scanner.gradient)                         # (D,)
    B = points_xyz[:, None, :] * G + BD[None]                # (P, V, D)
    m = particles.mean_moment(B)
    return np.ascontiguousarray(m.transpose(0, 2, 1))


_KERNEL = None


def _moment_kernel():
    """Numba kernel: weighted sums of mean moments, no (P, V, D) temporaries (a 37³ system
    matrix is 405 k points x 1632 samples x 3 axes). Compiled on first use."""
    global _KERNEL
    if _KERNEL is None:
        import numba

        @numba.njit(parallel=True, fastmath=False, cache=False)
        def kernel(pts, w, G, BD, amp):
            # pts (O, S, D) metres x-first, w (O, S) weights, G (D,), BD (V, D) -> out (O, D, V)
            O, S, D = pts.shape
            V = BD.shape[0]
            out = np.zeros((O, D, V))
            for o in numba.prange(O):
                b = np.empty(D)
                for s_ in range(S):
                    ws = w[o, s_]
                    if ws == 0.0:
                        continue
                    for t in range(V):
                        a2 = 0.0
                        for d in range(D):
                            b[d] = pts[o, s_, d] * G[d] + BD[t, d]
                            a2 += b[d] * b[d]
                        a = amp[1] * math.sqrt(a2)        # xi |B|
                        if a < 1e-2:                       # L(a)/a by its series (no 0/0)
                            a2x = a * a
                            lx = 1.0 / 3.0 - a2x / 45.0 + 2.0 * a2x * a2x / 945.0
                        else:
                            lx = (1.0 / math.tanh(a) - 1.0 / a) / a
                        f = ws * amp[0] * lx
                        for d in range(D):
                            out[o, d, t] += f * b[d]
            return out

        _KERNEL = kernel
    return _KERNEL


def _weighted_moments(pts_xyz: np.ndarray, w: np.ndarray, particles: Particles, scanner: Scanner) -> np.ndarray:
    """(O, S, D) points (m, x-first) and (O, S) weights -> sum_s w·m̄ (O, D, V) float64."""
    amp = np.array([particles.moment * particles.xi, particles.xi])
    return _moment_kernel()(np.ascontiguousarray(pts_xyz, np.float64), np.ascontiguousarray(w, np.float64),
                            np.asarray(scanner.gradient, np.float64), scanner.drive_field(), amp)


def _chain(particles: Particles, scanner: Scanner) -> np.ndarray:
    """Factor (C, K) from the moment spectrum to the induced voltage: -p · i2πf · H · Debye."""
    f = scanner.frequencies()
    return (-scanner.coil_sensitivity * 2j * np.pi * f * particles.relaxation(f))[None] * scanner.transfer_function()


def _voxel_volume(grid: Grid, scanner: Scanner) -> float:
    v = float(np.prod(grid.voxel_size))
    return v * scanner.slice_thickness if grid.ndim == 2 else v


def _xyz(points_image: np.ndarray) -> np.ndarray:
    """Image-order points (..., ndim) -> (P, ndim) in (x, y[, z]) order."""
    p = np.asarray(points_image, dtype=np.float64)
    return p.reshape(-1, p.shape[-1])[:, ::-1]


def _check_grid_scanner(grid: Grid, scanner: Scanner):
    if grid.ndim != scanner.ndim:
        raise NirmpiError(f"grid {grid.shape} has {grid.ndim} axes but the scanner is {scanner.ndim}D")


def _readonly(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


@functools.lru_cache(maxsize=16)
def system_matrix(particles: Particles, scanner: Scanner, grid: Grid, sub_voxel: int = 4,
                  chunk_points: int = 8192) -> np.ndarray:
    """Noiseless, background-free system matrix (C, K, O) complex64, O in grid C order.

    Each column is the mean response of `sub_voxel`^ndim points spread over the voxel (a delta
    sample filling it) at unit concentration. Cached (read-only result). Voxels are processed in
    chunks of about `chunk_points` points whose spectra go straight to complex64, so the peak
    is the result plus one chunk (a 37³ matrix with 817 frequencies: 0.5 GB).
    """
    _check_grid_scanner(grid, scanner)
    s = int(sub_voxel)
    u = (np.arange(s) + 0.5) / s - 0.5
    offs = np.stack(np.meshgrid(*([u] * grid.ndim), indexing="ij"), -1).reshape(-1, grid.ndim)
    offs = offs * np.asarray(grid.voxel_size)                  # image order
    centres = grid.points().reshape(-1, grid.ndim)             # (O, ndim)
    O, S = centres.shape[0], offs.shape[0]
    V, D, K = scanner.num_sampling_points, scanner.ndim, scanner.num_frequencies
    n_vox = particles.number_density * _voxel_volume(grid, scanner)
    chain = (_chain(particles, scanner) * n_vox).astype(np.complex64)    # (C, K)
    sm = np.empty((D, K, O), np.complex64)
    vox = max(1, chunk_points // S)
    w = np.full((vox, S), 1.0 / S)
    for o0 in range(0, O, vox):
        o1 = min(O, o0 + vox)
        pts = (centres[o0:o1, None, :] + offs[None])[..., ::-1]  # (n, S, ndim) x-first
        mt = _weighted_moments(pts, w[:o1 - o0], particles, scanner)       # (n, D, V)
        spec = (np.fft.rfft(mt, axis=-1) / V).astype(np.complex64)       # (n, D, K)
        sm[:, :, o0:o1] = spec.transpose(1, 2, 0) * chain[..., None]
    return _readonly(sm)


def measure_phantom(phantom: Phantom, particles: Particles, scanner: Scanner, grid: Grid,
                    times: Sequence[float] = (0.0,), fine: int | None = None, supersample: int | None = None,
                    chunk_points: int = 256) -> np.ndarray:
    """Noiseless, background-free phantom measurement (F, C, K) complex64 (one row per time).

    The phantom is rendered on a grid `fine` x finer than `grid` (voxel fractions with
    `supersample` sub-samples per fine cell) and every non-empty fine cell contributes its
    point response weighted by concentration x cell volume; the reconstruction system matrix
    is not used.
    """
    return _measure_cached(phantom.to_json(), particles, scanner, grid, tuple(float(t) for t in times),
                           fine, supersample, chunk_points)


@functools.lru_cache(maxsize=64)
def _measure_cached(spec: str, particles, scanner, grid, times, fine, supersample, chunk_points):
    _check_grid_scanner(grid, scanner)
    phantom = make_phantom(json.loads(spec))
    fine = int(fine or (6 if grid.ndim == 2 else 4))
    supersample = int(supersample or (4 if grid.ndim == 2 else 2))
    if fine < 4:
        raise NirmpiError(f"measurement fine factor must be >= 4 (no inverse crime), got {fine}")
    fg = grid.refined(fine)
    if phantom.dynamic:
        W = phantom.render_frames(fg, times, supersample).reshape(len(times), -1)
    else:
        W = np.broadcast_to(phantom.render(fg, None, supersample).reshape(1, -1), (len(times), fg.size))
    support = np.flatnonzero(np.any(W != 0, axis=0))
    pts = fg.points().reshape(-1, grid.ndim)[support]
    W = np.ascontiguousarray(W[:, support], dtype=np.float64)
    V, D = scanner.num_sampling_points, scanner.ndim
    acc = np.zeros((len(times), D * V), np.float64)
    if len(times) == 1:   # static: one weighted sum, chunks of points are the kernel's parallel axis
        n = pts.shape[0]
        per = max(1, -(-n // 64))
        pad = per * 64 - n
        P = np.concatenate([_xyz(pts), np.zeros((pad, D))]).reshape(64, per, D)
        Wp = np.concatenate([W[0], np.zeros(pad)]).reshape(64, per)
        acc[0] = _weighted_moments(P, Wp, particles, scanner).sum(axis=0).reshape(D * V)
    else:
        for p0 in range(0, pts.shape[0], chunk_points):
            p1 = min(pts.shape[0], p0 + chunk_points)
            mt = _moment_time(_xyz(pts[p0:p1]), particles, scanner).reshape(p1 - p0, D * V)
            acc += W[:, p0:p1] @ mt
    spec = np.fft.rfft(acc.reshape(len(times), D, V), axis=-1) / V
    n_cell = particles.number_density * _voxel_volume(fg, scanner)
    out = spec * (_chain(particles, scanner) * n_cell)[None]
    return _readonly(out.astype(np.complex64))


# --------------------------------------------------------------------------------------------
def _background(scanner: Scanner, ref: float, rng_seed: int = 20251) -> np.ndarray:
    """Frame-constant background (C, K) complex: feed-through at the drive frequencies and low
    harmonics, a slow low-frequency part and a weak broadband part, all through the receive
    chain's transfer function. Fixed by the scanner (own seed), scaled by the signal level."""
    rng = np.random.default_rng(rng_seed)
    C, K = scanner.ndim, scanner.num_frequencies
    f = scanner.frequencies()
    H = np.abs(scanner.transfer_function())
    mag = np.zeros((C, K))
    df = f[1]
    for c in range(C):
        for d, fd in enumerate(scanner.drive_frequencies):
            k = int(round(fd / df))
            mag[c, k] += 3e3 if c == d else 3e2                        # feed-through / cross-talk
            for h, a in ((2, 30.0), (3, 10.0), (4, 3.0), (5, 1.0)):   # harmonics of the drive chain
                if h * k < K:
                    mag[c, h * k] += a * (1.0 if c == d else 0.1)
    mag += 20.0 / (1.0 + (f / 3e3) ** 2)[None]                        # slow part
    mag += 0.5                                                        # broadband part
    phase = np.exp(2j * np.pi * rng.random((C, K)))
    bg = ref * mag * H * phase
    bg[:, 0] = bg[:, 0].real
    bg[:, -1] = bg[:, -1].real
    return bg


def _feedthrough_mask(scanner: Scanner) -> np.ndarray:
    """(C, K) weights of the jittering feed-through part (drive frequencies and harmonics)."""
    C, K = scanner.ndim, scanner.num_frequencies
    df = scanner.frequencies()[1]
    m = np.zeros((C, K))
    for fd in scanner.drive_frequencies:
        k = int(round(fd / df))
        for h in range(1, 6):
            if h * k < K:
                m[:, h * k] = 1.0
    return m


def _unit_noise(rng, shape, V, dtype=np.complex128) -> np.ndarray:
    """Complex noise with E|z|² = 1 per bin from white time-domain noise (real-signal statistics).
    Drawn in blocks along the first axis (the same stream as one draw: a Generator fills C order),
    so a 37³ calibration needs no 2 GB time-domain block."""
    shape = tuple(shape)
    out = np.empty(shape + (V // 2 + 1,), dtype)
    per = max(1, (1 << 22) // max(1, int(np.prod(shape[1:], dtype=np.int64)) * V))
    for i in range(0, shape[0], per):
        n = min(per, shape[0] - i)
        out[i:i + n] = np.fft.rfft(rng.standard_normal((n,) + shape[1:] + (V,)), axis=-1) / np.sqrt(V)
    return out


def _snr(fg: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """(C, K) SNR: mean_o |fg - mean bg| / std(bg, ddof=1); fg (C, K, O), bg (C, K, B).
    A bin without noise carries no signal either (DC behind the high-pass): SNR 0 there."""
    signal = np.abs(fg - bg.mean(axis=-1, keepdims=True).astype(fg.dtype)).mean(axis=-1)
    noise = bg.std(axis=-1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(noise > 0, signal / noise, 0.0)


def _band_mask(scanner: Scanner) -> np.ndarray:
    f = scanner.frequencies()
    return (f >= BAND[0]) & (f <= BAND[1])


def _noise_target(noise) -> float:
    if isinstance(noise, str):
        if noise.lower() in NOISE_PRESETS:
            return NOISE_PRESETS[noise.lower()]
        try:
            noise = float(noise)
        except ValueError:
            raise NirmpiError(f"noise {noise!r}: expected low, medium, high or a target SNR number") from None
    noise = float(noise)
    if not (np.isfinite(noise) and noise > 0):
        raise NirmpiError(f"noise {noise}: the target median SNR must be positive")
    return noise


# --------------------------------------------------------------------------------------------
@dataclass
class SimulatedCase:
    """A simulated system matrix + phantom measurement, in memory (see simulate_case)."""

    acquisition: Any
    grid: Grid
    sm: np.ndarray                 # (C, K, O) complex64 raw calibration foreground frames
    sm_background: np.ndarray      # (C, K, B) complex64
    meas: np.ndarray               # (F, C, K) complex64 foreground frames
    meas_background: np.ndarray    # (Fb, C, K) complex64
    snr: np.ndarray                # (C, K)
    phantom: Phantom
    params: dict
    times: np.ndarray = field(default_factory=lambda: np.zeros(1))  # phantom time per meas frame
    sm_clean: np.ndarray | None = None      # (C, K, O) noiseless, background-free
    meas_clean: np.ndarray | None = None    # (F, C, K) noiseless, background-free
    noise_std: np.ndarray | None = None     # (C, K) per-frame noise std (complex, E|n|²)
    frequencies: np.ndarray | None = None   # (K,) Hz

    def ground_truth(self, shape_or_grid=None, t=None) -> np.ndarray:
        """Phantom voxel fractions on the native grid, a shape (same FOV) or a Grid; float32.
        Dynamic phantoms: t=None gives (F, *shape) for the measurement's frames."""
        if shape_or_grid is None:
            g = self.grid
        elif isinstance(shape_or_grid, Grid):
            g = shape_or_grid
        else:
            shape = (int(shape_or_grid),) * self.grid.ndim if np.isscalar(shape_or_grid) else tuple(shape_or_grid)
            g = self.grid.with_shape(shape)
        if self.phantom.dynamic and t is None:
            return self.phantom.render_frames(g, self.times)
        return self.phantom.render(g, t)

    def problem(self, **kw):
        """Problem via preprocess.build_problem_from_arrays (kw: min_freq, max_freq, snr_threshold, ...)."""
        from .preprocess import build_problem_from_arrays

        params = dict(kw.pop("params", None) or {})
        params.setdefault("source", "simulation")
        params.setdefault("simulation", self.params)
        return build_problem_from_arrays(self.sm, self.sm_background, self.meas, self.meas_background,
                                         snr=self.snr, frequencies=self.frequencies, grid=self.grid,
                                         params=params, **kw)

    def write(self, outdir, force: bool = False) -> dict:
        """Write sm.mdf, meas.mdf (time domain), phantom.npy, phantom.json; returns their paths."""
        from . import mdf

        os.makedirs(outdir, exist_ok=True)
        paths = {k: os.path.join(outdir, n) for k, n in (("sm", "sm.mdf"), ("meas", "meas.mdf"),
                                                        ("phantom", "phantom.npy"), ("phantom_json", "phantom.json"))}
        if not force:  # refuse before writing anything, so no half-written case is left
            for k in paths:
                if os.path.exists(paths[k]):
                    raise NirmpiError(f"{paths[k]} exists; pass force=True (--force) to overwrite")
        C, K, O = self.sm.shape
        B = self.sm_background.shape[-1]
        V = self.acquisition.num_sampling_points
        meta = {"experiment_name": f"nirmpi simulation: {self.phantom.name}", "is_simulation": True,
                "experiment_description": json.dumps(self.params, sort_keys=True),
                "scanner_name": "napari-nirmpi simulator", "scanner_facility": "simulation",
                "topology": "FFP", "tracer_name": "simulated Langevin particles",
                "tracer_solute": "Fe"}
        data = np.concatenate([self.sm, self.sm_background], axis=-1)[None]            # (1, C, K, O+B)
        isbg = np.r_[np.zeros(O, bool), np.ones(B, bool)]
        mdf.write_calibration(paths["sm"], data, grid=self.grid, acquisition=self.acquisition,
                              is_background_frame=isbg, snr=self.snr[None].astype(np.float64),
                              metadata=meta, extras={"simulation": json.dumps(self.params, sort_keys=True)},
                              force=force)
        spectra = np.concatenate([self.meas, self.meas_background], axis=0)            # (N, C, K)
        time = np.fft.irfft(spectra.astype(np.complex128) * V, n=V, axis=-1).astype(np.float32)[:, None]
        isbg = np.r_[np.zeros(len(self.meas), bool), np.ones(len(self.meas_background), bool)]
        frame_times = np.arange(len(spectra)) * self.acquisition.cycle
        mdf.write_measurement(paths["meas"], time, acquisition=self.acquisition, is_background_frame=isbg,
                              frame_times=frame_times, metadata=meta,
                              extras={"simulation": json.dumps(self.params, sort_keys=True),
                                      "phantom": self.phantom.to_json(),
                                      "phantom_times": np.asarray(self.times, np.float64)},
                              force=force)
        np.save(paths["phantom"], self.ground_truth())
        spec = {"phantom": self.phantom.to_dict(), "grid": self.grid.to_dict(),
                "times": [float(t) for t in self.times], "dynamic": bool(self.phantom.dynamic),
                "params": self.params}
        with open(paths["phantom_json"], "w") as fh:
            json.dump(spec, fh, indent=1, sort_keys=True)
        return paths


def _make_grid(grid, fov, ndim) -> Grid:
    if isinstance(grid, Grid):
        return grid
    shape = (int(grid),) * ndim if np.isscalar(grid) else tuple(int(g) for g in grid)
    if len(shape) != ndim:
        raise NirmpiError(f"grid {shape} has {len(shape)} axes but ndim={ndim}")
    if fov is None:
        fov = 29e-3 if ndim == 2 else (13e-3, 26e-3, 26e-3)
    fov = (float(fov),) * ndim if np.isscalar(fov) else tuple(float(f) for f in fov)
    return Grid(shape, fov)


def _acquisition(scanner: Scanner):
    from .mdf import Acquisition

    return Acquisition(base_frequency=scanner.base_frequency, dividers=tuple(scanner.dividers),
                       drive_strength=tuple(scanner.drive_amplitude),
                       num_sampling_points=scanner.num_sampling_points, bandwidth=scanner.bandwidth,
                       num_rx_channels=scanner.ndim, drive_phase=tuple(scanner.drive_phase),
                       gradient=scanner.gradient_matrix(), num_periods=1, num_averages=1,
                       transfer_function=scanner.transfer_function().astype(np.complex128))


def simulate_case(phantom="spiral", grid=29, fov=None, noise="medium", seed: int = 0,
                  particles: Particles | None = None, scanner: "Scanner | str | None" = None,
                  frames: int | None = None, background_frames: int = 10, sm_background_frames: int = 20,
                  ndim: int | None = None, sub_voxel: int | None = None, meas_fine: int | None = None,
                  background: bool = True) -> SimulatedCase:
    """Simulate a calibration (system matrix) and a measurement of `phantom`.

    phantom: a name of PHANTOMS, a spec dict or a Phantom. grid: int or shape (image order) or
    Grid (None: the scanner preset's grid, else 29); fov: metres, scalar or per axis (default
    29 mm in 2D, (13, 26, 26) mm in 3D, the preset's for a named scanner). scanner: a Scanner
    or a preset name of SCANNERS ("openmpi": 37³ over (18.5, 37, 37) mm, 3 channels, K = 817).
    noise: "low" | "medium" | "high" | target median in-band SNR (float). frames: measurement
    foreground frames (10 static, 16 dynamic); background_frames: measurement background frames;
    sm_background_frames: calibration background frames B (after the O position frames).
    sub_voxel: SM points per voxel axis (4 in 2D, 2 in 3D); meas_fine: measurement grid
    refinement (6 in 2D, 4 in 3D). background=False omits the scanner background (tests).
    """
    if isinstance(scanner, str):
        name = scanner
        scanner, preset_shape, preset_fov = scanner_preset(name)
        if name.lower() == "default":
            scanner = None       # the default scanner takes the grid's dimension below
        if grid is None and preset_shape is not None:
            grid = preset_shape
        if fov is None and not isinstance(grid, Grid):
            fov = preset_fov
    if grid is None:
        grid = 29
    if ndim is None:
        ndim = grid.ndim if isinstance(grid, Grid) else (scanner.ndim if scanner is not None else
                                                           (2 if np.isscalar(grid) else len(tuple(grid))))
    g = _make_grid(grid, fov, ndim)
    scanner = scanner or Scanner(ndim=g.ndim)
    particles = particles or Particles()
    _check_grid_scanner(g, scanner)
    ph = make_phantom(phantom)
    target = _noise_target(noise)
    sub_voxel = int(sub_voxel or (4 if g.ndim == 2 else 2))
    F = int(frames) if frames is not None else (16 if ph.dynamic else 10)
    Fb, B = int(background_frames), int(sm_background_frames)
    if F < 1 or Fb < 0 or B < 2:
        raise NirmpiError(f"need frames >= 1, background_frames >= 0, sm_background_frames >= 2; "
                          f"got {F}, {Fb}, {B}")
    times = np.linspace(0.0, 1.0, F) if (ph.dynamic and F > 1) else np.zeros(F)

    S = system_matrix(particles, scanner, g, sub_voxel)                     # (C, K, O)
    C, K, O = S.shape
    V = scanner.num_sampling_points
    band = _band_mask(scanner)
    if ph.dynamic:
        Mc = measure_phantom(ph, particles, scanner, g, tuple(times), meas_fine)   # (F, C, K)
    else:
        Mc = np.broadcast_to(measure_phantom(ph, particles, scanner, g, (0.0,), meas_fine), (F, C, K))

    ref = float(np.median(np.abs(S[:, band]).mean(axis=-1)))                 # in-band signal level
    bg0 = _background(scanner, ref) if background else np.zeros((C, K), complex)
    ft = _feedthrough_mask(scanner)
    H = np.abs(scanner.transfer_function())
    rng = np.random.default_rng(seed)
    jitter_sd = 5e-2 if background else 0.0   # feed-through instability: drive bins get SNR < 1.5

    # a scanner-size calibration (37³ x 3 x 817) is held in complex64 throughout: 0.5 GB per copy
    # instead of 1 GB; small cases keep complex128 (their numbers do not change)
    ctype = np.complex64 if S.size > (1 << 24) else np.complex128
    rtype = np.float32 if ctype == np.complex64 else np.float64

    def frames_bg(n, base, dtype=np.complex128):  # base * (1 + jitter on the feed-through part)
        jit = jitter_sd * (rng.standard_normal((n, C, 1)) + 1j * rng.standard_normal((n, C, 1))) / np.sqrt(2)
        return (base[None] * (1.0 + jit * ft[None])).astype(dtype, copy=False)

    bg_sm_fg = frames_bg(O, bg0, ctype).transpose(1, 2, 0)                 # (C, K, O)
    bg_sm_bg = frames_bg(B, bg0).transpose(1, 2, 0)                        # (C, K, B)
    z_fg = _unit_noise(rng, (O, C), V, ctype).transpose(1, 2, 0)
    z_bg = _unit_noise(rng, (B, C), V).transpose(1, 2, 0)

    # noise level: fixed-point iteration on the realised median in-band SNR of this calibration
    sigma0 = ref / target
    fg_clean = S.astype(ctype) + bg_sm_fg
    del bg_sm_fg
    for _ in range(6):
        sig = (sigma0 * H[..., None]).astype(rtype)
        snr = _snr(fg_clean + sig * z_fg, bg_sm_bg + sig * z_bg)
        med = float(np.median(snr[:, band]))
        if abs(med / target - 1) < 0.01:
            break
        sigma0 *= med / target
    sig = (sigma0 * H[..., None]).astype(rtype)
    sm_fg = (fg_clean + sig * z_fg).astype(np.complex64)
    del fg_clean, z_fg
    sm_bg = (bg_sm_bg + sig * z_bg).astype(np.complex64)
    snr = _snr(sm_fg.astype(ctype), sm_bg.astype(np.complex128)).astype(np.float64)

    # measurement: same scanner, background drifted a little since the calibration
    drift = 1.0 + 0.02 * (rng.standard_normal((C, K)) + 1j * rng.standard_normal((C, K))) / np.sqrt(2)
    bg_meas = bg0 * drift
    bg_meas[:, [0, -1]] = bg_meas[:, [0, -1]].real
    sigf = sigma0 * H[None]
    meas = Mc + frames_bg(F, bg_meas) + sigf * _unit_noise(rng, (F, C), V)
    meas_bg = frames_bg(Fb, bg_meas) + sigf * _unit_noise(rng, (Fb, C), V)
    for a in (meas, meas_bg):   # a real time signal has real DC and Nyquist bins
        a[..., 0] = a[..., 0].real
        a[..., -1] = a[..., -1].real

    params = {
        "phantom": ph.to_dict(), "grid": g.to_dict(), "noise": noise if isinstance(noise, str) else float(noise),
        "target_snr": target, "noise_sigma": sigma0, "seed": int(seed), "frames": F, "background_frames": Fb,
        "sm_background_frames": B, "sub_voxel": sub_voxel,
        "meas_fine": int(meas_fine or (6 if g.ndim == 2 else 4)), "background": bool(background),
        "particles": asdict(particles), "scanner": _jsonable(asdict(scanner)),
        "median_inband_snr": float(np.median(snr[:, band])), "times": [float(t) for t in times],
    }
    return SimulatedCase(acquisition=_acquisition(scanner), grid=g, sm=sm_fg, sm_background=sm_bg,
                         meas=meas.astype(np.complex64), meas_background=meas_bg.astype(np.complex64),
                         snr=snr, phantom=ph, params=params, times=times, sm_clean=S,
                         meas_clean=np.asarray(Mc), noise_std=(sigma0 * H).astype(np.float64),
                         frequencies=scanner.frequencies())


def _jsonable(d):
    if isinstance(d, dict):
        return {k: _jsonable(v) for k, v in d.items()}
    if isinstance(d, (tuple, list)):
        return [_jsonable(v) for v in d]
    if isinstance(d, np.generic):
        return d.item()
    return d


def simulate(outdir, phantom="spiral", grid=29, seed: int = 0, noise="medium", frames: int | None = None,
             force: bool = False, **kw) -> dict:
    """Simulate and write OUTDIR/sm.mdf, meas.mdf, phantom.npy, phantom.json; returns the paths."""
    case = simulate_case(phantom=phantom, grid=grid, seed=seed, noise=noise, frames=frames, **kw)
    return case.write(outdir, force=force)
