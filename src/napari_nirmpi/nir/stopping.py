"""Iterate selection and stopping rules for `train` (no ground truth): which checkpoint to
return, and whether to end the run before its iteration budget.

Selection and stopping are two jobs: every rule *selects* the returned checkpoint from the
held-out misfits; `ValidationPatience` and `OneStandardError` may also *stop* the run `patience`
iterations after the lowest misfit. The default patience equals the default budget, so a default
run trains to the end and only selects.

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
neither misfit. The default (`OneStandardError`) therefore returns the earliest iterate the
held-out rows cannot tell from the lowest, before most of that drift — see docs/benchmarks.md,
"Stopping without ground truth", for the measurements behind the choice.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np

__all__ = ["StoppingRule", "ValidationPatience", "OneStandardError", "TrackBest", "rule_spec", "rule_from_spec"]


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
        return (f"max iterations [rule {self.name}: iterate selection returned the lowest held-out misfit, "
                f"{self.best:.4g} at iteration {self.best_iteration}; the patience of {self.patience} iterations "
                f"without improvement did not end the run early]")

    def __repr__(self) -> str:
        return (f"ValidationPatience(patience={self.patience}, min_delta={self.min_delta}, "
                f"min_iterations={self.min_iterations})")

    def spec(self) -> dict:
        """The rule's settings as JSON data (`rule_from_spec` rebuilds it)."""
        return {"rule": self.name, "patience": self.patience, "min_delta": self.min_delta,
                "min_iterations": self.min_iterations}

    def __eq__(self, other):  # same class and settings: configs holding rules compare by settings
        return type(other) is type(self) and other.spec() == self.spec()

    __hash__ = None


class OneStandardError(ValidationPatience):
    """Stops like ValidationPatience, but returns the EARLIEST checkpoint whose held-out misfit is
    within `k` standard errors of the lowest one: cross-validation's one-standard-error rule.

    Why: with noisy data the held-out misfit flattens long before it reaches its minimum, and the
    late iterates it still (insignificantly) prefers have drifted (over-fitted sub-voxel detail,
    the spiral thinning). Whether a later checkpoint is really better is a paired test over the
    held-out rows: the standard error of the mean of per-row misfit differences. On clean data the
    misfit keeps falling by many standard errors, so the rule keeps late iterates; on noisy data
    it returns the first iterate that the held-out rows cannot tell from the best.

    `update` takes the per-row held-out misfits (`residuals`, one value per held-out frequency
    row, summing to val_loss) and returns the chosen checkpoint's iteration instead of a flag.
    """

    name = "OneStandardError"
    wants_residuals = True

    def __init__(self, patience: int = 500, k: float = 1.0, min_delta: float = 0.0, min_iterations: int = 0):
        self.k = float(k)
        super().__init__(patience, min_delta, min_iterations)

    def reset(self) -> None:
        super().reset()
        self.iterations: list[int] = []
        self.rows: list[np.ndarray] = []
        self.chosen = 0

    def select(self) -> int:
        R = np.stack(self.rows)                         # (checks, held-out rows)
        means = R.mean(axis=1)
        b = int(np.argmin(means))
        n = R.shape[1]
        se = (R - R[b]).std(axis=1, ddof=1) / math.sqrt(n) if n > 1 else np.zeros(len(means))
        ok = np.flatnonzero(means - means[b] <= self.k * se)
        return self.iterations[int(ok[0])]

    def update(self, iteration: int, val_loss: float, train_loss: float,
               residuals=None) -> tuple[int, str | None]:
        if residuals is None:
            raise ValueError(f"{self.name} needs the per-row held-out misfits (residuals=)")
        _, stop = super().update(iteration, val_loss, train_loss)
        self.iterations.append(int(iteration))
        self.rows.append(np.asarray(residuals, dtype=np.float64).ravel())
        self.chosen = self.select()
        if stop is not None:
            stop = (f"early stopping: validation misfit did not improve for {self.patience} iterations "
                    f"(lowest at iteration {self.best_iteration}) [rule {self.name}: returned iteration "
                    f"{self.chosen}, the earliest whose held-out misfit is within {self.k:g} standard "
                    f"error(s) of the lowest over {self.rows[-1].size} held-out rows]")
        return self.chosen, stop

    def final_reason(self, iteration: int) -> str:
        return (f"max iterations [rule {self.name}: iterate selection returned iteration {self.chosen}, the "
                f"earliest whose held-out misfit is within {self.k:g} standard error(s) of the lowest (iteration "
                f"{self.best_iteration})]")

    def __repr__(self) -> str:
        return (f"OneStandardError(patience={self.patience}, k={self.k}, min_delta={self.min_delta}, "
                f"min_iterations={self.min_iterations})")

    def spec(self) -> dict:
        return {**super().spec(), "k": self.k}


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

    def spec(self) -> dict:
        return {"rule": self.name}

    def __eq__(self, other):
        return type(other) is type(self)

    __hash__ = None


RULES = {"ValidationPatience": ValidationPatience, "OneStandardError": OneStandardError, "TrackBest": TrackBest}


def rule_spec(rule) -> dict | None:
    """JSON data for a rule: a built-in rule's settings; for a custom object
    {"rule": "custom", "repr": ...} (a record only: it cannot be rebuilt)."""
    if rule is None:
        return None
    if type(rule) in RULES.values():
        return rule.spec()
    return {"rule": "custom", "repr": repr(rule)[:500]}


def rule_from_spec(spec: dict):
    """The built-in rule `rule_spec` described."""
    from ..errors import NirmpiError

    name = spec.get("rule") if isinstance(spec, dict) else None
    if name == "custom":
        raise NirmpiError(f"stopping rule {spec.get('repr', '?')}: a custom rule object was recorded, and it "
                          "cannot be rebuilt from its description; pass the object as TrainConfig(stopping=...)")
    if name not in RULES:
        raise NirmpiError(f"stopping rule {spec!r}: expected {{'rule': one of {sorted(RULES)}, ...settings}}")
    kw = {k: v for k, v in spec.items() if k != "rule"}
    try:
        return RULES[name](**kw)
    except TypeError as e:
        raise NirmpiError(f"stopping rule {spec!r}: {e}") from None
