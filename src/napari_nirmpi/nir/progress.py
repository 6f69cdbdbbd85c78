"""Progress display for `fit(progress=True)`: a live bar on a terminal, a line every ~15 s in a log."""

from __future__ import annotations

import sys
import time

__all__ = ["Progress"]


class Progress:
    """Reports TrainStates on `stream` (stderr): a tqdm bar when it is a terminal, otherwise one
    plain line every `interval` seconds and one at the end (a log file gets no carriage returns)."""

    def __init__(self, total: int, label: str = "NIR", stream=None, interval: float = 15.0):
        self.total, self.label, self.interval = int(total), label, float(interval)
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty()) if callable(isatty) else False
        self.bar = None
        self.last_line = time.monotonic()
        if self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, desc=label, unit="it", dynamic_ncols=True, leave=True,
                            mininterval=0.5, file=self.stream)

    def update(self, state) -> None:
        if self.bar is not None:
            self.bar.n = state.iteration
            if state.iteration % 50 == 0 or state.stop_reason:
                post = {"loss": f"{state.loss:.3g}"}
                if state.val_loss is not None:
                    post["val"] = f"{state.val_loss:.3g}"
                self.bar.set_postfix(post, refresh=False)
                self.bar.refresh()
            return
        now = time.monotonic()
        if state.stop_reason is not None or now - self.last_line >= self.interval:
            self.last_line = now
            self.stream.write(self.line(state) + "\n")
            self.stream.flush()

    def line(self, state) -> str:
        pct = 100.0 * state.iteration / max(1, self.total)
        parts = [f"{self.label}: iteration {state.iteration}/{self.total} ({pct:.0f} %)",
                 f"loss {state.loss:.3g}"]
        if state.val_loss is not None:
            parts.append(f"held-out {state.val_loss:.3g} (selected: iteration {state.best_iteration})")
        parts.append(f"{state.elapsed:.0f} s")
        if state.stop_reason is not None:  # the whole reason: its brackets carry the warnings
            parts.append(state.stop_reason)
        return ", ".join(parts)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
