"""Stopping rules for `train` (no ground truth): which iterate to return and when to stop.

A rule is called at every validation check (every `TrainConfig.val_every` iterations) with the
held-out misfit and the training misfit, and returns (is_best, stop_reason or None). `is_best`
marks the iterate `train` keeps as its result. Every reason a rule returns starts with what
happened and names the rule and its evidence, so the preview stream (TrainState.stop_reason) tells
the user why training ended. A rule may also define `final_reason(iteration)`: the reason shown
when the iteration budget ran out first (default "max iterations").

Why the held-out misfit and not the training misfit: the held-out frequency rows are not fitted,
so fitting the noise on the training rows cannot lower their misfit; the iterate with the lowest
held-out misfit is the cross-validation choice. Its known blind spot: a sub-voxel redistribution
of the field (the spiral "thinning") is invisible to every row (D averages it away), so it moves
neither misfit — see docs/benchmarks.md, "NIR beyond the paper", for how the default keeps that
drift out of the returned iterate (a smoothing of the misfit curve and a decaying lr).
"""

from __future__ import annotations

import math
from typing import Protocol

__all__ = ["StoppingRule", "ValidationPatience", "TrackBest"]


class StoppingRule(Protocol):
    """Called at every validation check. Returns (is_best, stop_reason or None)."""

    def reset(self) -> None: ...

    def update(self, iteration: int, val_loss: float, train_loss: float) -> tuple[bool, str | None]: ...


class ValidationPatience:
    """Keep the iterate with the lowest held-out misfit; stop after `patience` iterations without
    a relative improvement of at least `min_delta` (and not before `min_iterations`)."""

    name = "ValidationPatience"

    def __init__(self, patience: int = 500, min_delta: float = 0.0, min_iterations: int = 0):
        self.patience, self.min_delta, self.min_iterations = int(patience), float(min_delta), int(min_iterations)
        self.reset()

    def reset(self) -> None:
        self.best = math.inf
        self.best_iteration = 0
        self.last = math.nan

    def update(self, iteration: int, val_loss: float, train_loss: float) -> tuple[bool, str | None]:
        self.last = val_loss
        is_best = val_loss < self.best * (1.0 - self.min_delta)
        if is_best:
            self.best, self.best_iteration = val_loss, iteration
        if iteration >= self.min_iterations and iteration - self.best_iteration >= self.patience:
            return is_best, (f"early stopping: validation misfit did not improve for {self.patience} "
                             f"iterations (best at iteration {self.best_iteration}) [rule {self.name}: "
                             f"best held-out misfit {self.best:.4g}, now {val_loss:.4g}, "
                             f"min_delta {self.min_delta:g}]")
        return is_best, None

    def final_reason(self, iteration: int) -> str:
        return (f"max iterations [rule {self.name}: held-out misfit still improving within the patience "
                f"of {self.patience}; returned the lowest, {self.best:.4g} at iteration {self.best_iteration}]")

    def __repr__(self) -> str:
        return (f"ValidationPatience(patience={self.patience}, min_delta={self.min_delta}, "
                f"min_iterations={self.min_iterations})")


class TrackBest:
    """No stopping; only tracks the best validation misfit (early_stopping=False with val rows)."""

    name = "TrackBest"

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.best = math.inf

    def update(self, iteration, val_loss, train_loss):
        if val_loss < self.best:
            self.best = val_loss
            return True, None
        return False, None

    def __repr__(self) -> str:
        return "TrackBest()"
