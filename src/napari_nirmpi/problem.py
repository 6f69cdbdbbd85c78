"""The reconstruction problem handed to every solver: S c ≈ u on a Grid."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import ProblemMismatch
from .grid import Grid


@dataclass
class Problem:
    """Preprocessed rows of the system matrix and the matching measurement.

    S: (M, N) complex64, rows ordered channel outermost, frequency fastest; N = grid.size voxels
       in C order of `grid.shape` (x fastest, as MDF).
    u: (M,) complex64 — one (averaged) frame; or (F, M) for a frame series (`frames`).
    Rows are already background-corrected and, if `params["normalize_rows"]`, divided by ‖s_m‖.
    noise_std: (M,) per-row noise standard deviation of `u` (same scaling), from background
       frames, or None when unknown.
    params: every parameter that produced the problem (JSON-serialisable), incl. source paths.
    """

    S: np.ndarray
    u: np.ndarray
    grid: Grid
    frequencies: np.ndarray
    channels: np.ndarray
    freq_index: np.ndarray
    snr: np.ndarray | None = None
    noise_std: np.ndarray | None = None
    params: dict = field(default_factory=dict)
    row_weights: np.ndarray | None = None  # (M,) factors applied to S and u (1/‖s_m‖ or 1)

    def __post_init__(self):
        self.S = np.ascontiguousarray(self.S)
        self.u = np.asarray(self.u)
        M, N = self.S.shape
        if N != self.grid.size:
            raise ProblemMismatch(f"system matrix has {N} columns but grid {self.grid.shape} has {self.grid.size} voxels")
        if self.u.shape[-1] != M:
            raise ProblemMismatch(f"measurement has {self.u.shape[-1]} rows, system matrix {M}")
        for name in ("frequencies", "channels", "freq_index"):
            a = np.asarray(getattr(self, name))
            if a.shape != (M,):
                raise ProblemMismatch(f"Problem.{name} must have shape ({M},), got {a.shape}")
            setattr(self, name, a)

    @property
    def num_rows(self) -> int:
        return self.S.shape[0]

    def with_u(self, u: np.ndarray) -> "Problem":
        """Same system matrix, another right-hand side (e.g. one frame of a series)."""
        return Problem(self.S, u, self.grid, self.frequencies, self.channels, self.freq_index,
                       self.snr, self.noise_std, dict(self.params), self.row_weights)

    def subset(self, rows: np.ndarray) -> "Problem":
        rows = np.asarray(rows)
        def pick(a):
            return None if a is None else np.asarray(a)[rows]

        return Problem(self.S[rows], self.u[..., rows], self.grid, self.frequencies[rows],
                       self.channels[rows], self.freq_index[rows], pick(self.snr),
                       pick(self.noise_std), dict(self.params), pick(self.row_weights))
