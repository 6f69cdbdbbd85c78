"""One grammar for choosing frames and receive channels, and one rule for averaging frames.

The API (`preprocess.build_problem`), the CLI (`--frames`, `--channels`), the widgets and frame
series all parse selections here, so that a text accepted in one place means the same everywhere:

    all | (empty) | *      every index
    5                      one index (negative counts from the end, as in Python)
    A:B  A:B:S  :B  A:     a Python slice (B is exclusive; a stop past the end is clipped)
    0,2,5  0 2 5           a list (commas and/or spaces)
    0:4,9,20:30:2          any mix of the above, kept in the order given

Sequences, ranges, slices, numpy arrays and single ints are accepted as well. A selection that
names an index twice or selects nothing is refused with a message that says why.

Averaging rule (`average_blocks`): K consecutive selected frames make one output frame; a
trailing incomplete block (fewer than K frames) is DROPPED and counted. A block averaged from
fewer frames has a higher noise level (sqrt(K/r) times the others) and a different time span,
and the Problem's per-row noise estimate assumes all blocks average K frames; keeping it would
put one frame of different quality at the end of every series without a word.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from .errors import ProblemMismatch

_ALL = ("", "all", "*")
_GRAMMAR = "'all', an index, 'A:B', 'A:B:S' or a list such as '0,2,5' (mixes allowed: '0:4,9')"


class SelectionError(ProblemMismatch):
    """A frame or channel selection that cannot be parsed or does not fit the data (a
    ProblemMismatch, as the selection checks in `build_problem` always raised)."""


def _is_all(sel) -> bool:
    return sel is None or (isinstance(sel, str) and sel.strip().lower() in _ALL)


def _parse_int(tok: str, what: str, text: str) -> int:
    try:
        return int(tok)
    except ValueError:
        raise SelectionError(f"{what} {text!r}: {tok!r} is not an integer; expected {_GRAMMAR}") from None


def _parse_text(text: str, n: int | None, what: str) -> list[int]:
    """Indices of `text` among n; n=None checks the syntax only (returns [])."""
    out: list[int] = []
    tokens = [t for t in re.split(r"[,\s]+", text.strip()) if t]
    if not tokens:
        raise SelectionError(f"{what} {text!r}: empty; expected {_GRAMMAR}")
    for tok in tokens:
        if ":" in tok:
            parts = tok.split(":")
            if len(parts) > 3:
                raise SelectionError(f"{what} {text!r}: {tok!r} has more than two ':'; expected {_GRAMMAR}")
            vals = [_parse_int(p, what, text) if p.strip() else None for p in parts]
            if len(vals) == 3 and vals[2] == 0:
                raise SelectionError(f"{what} {text!r}: step 0 in {tok!r}")
            if n is not None:
                out.extend(range(n)[slice(*vals)])
        else:
            v = _parse_int(tok, what, text)
            if n is not None:
                out.append(v)
    return out


def _select(sel, n: int, what: str, unit: str) -> np.ndarray:
    n = int(n)
    if _is_all(sel):
        return np.arange(n)
    if isinstance(sel, str):
        idx = _parse_text(sel, n, what)
    elif isinstance(sel, slice):
        if sel.step == 0:
            raise SelectionError(f"{what} {sel}: step 0")
        idx = list(range(n)[sel])
    elif isinstance(sel, (bool, np.bool_)):
        raise SelectionError(f"{what} {sel!r}: expected {_GRAMMAR}")
    elif isinstance(sel, (int, np.integer)):
        idx = [int(sel)]
    else:
        try:
            arr = np.asarray(list(sel) if isinstance(sel, range) else sel)
        except (TypeError, ValueError):
            raise SelectionError(f"{what} {sel!r}: expected {_GRAMMAR}") from None
        if arr.dtype == bool or (arr.size and arr.dtype.kind not in "iu"):
            if arr.size and arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
                arr = arr.astype(np.int64)
            else:
                raise SelectionError(f"{what} {_short(sel)}: expected integer indices")
        idx = arr.astype(np.int64).ravel().tolist()
    idx = np.asarray(idx, dtype=np.int64)
    bad = idx[(idx < -n) | (idx >= n)]
    if bad.size:
        raise SelectionError(f"{what} {_short(sel)}: {bad[:5].tolist()} out of range; there are {n} {unit} "
                             f"(0..{n - 1}, or -{n}..-1 from the end)")
    idx = np.where(idx < 0, idx + n, idx)
    if idx.size == 0:
        raise SelectionError(f"{what} {_short(sel)}: selects none of the {n} {unit}")
    uniq, counts = np.unique(idx, return_counts=True)
    if (counts > 1).any():
        raise SelectionError(f"{what} {_short(sel)}: names {uniq[counts > 1][:5].tolist()} more than once")
    return idx


def _short(sel) -> str:
    s = repr(sel)
    return s if len(s) <= 60 else s[:57] + "…"


def parse_frames(text_or_seq, num_frames: int) -> np.ndarray:
    """Indices (int64, in the order given, no repeats) into `num_frames` frames; see the module
    docstring for the grammar. Raises SelectionError (a NirmpiError) with the reason."""
    return _select(text_or_seq, num_frames, "frames", "frames")


def check_selection(text, what: str = "frames") -> str | None:
    """Syntax check of a selection typed before the data is known (a widget field): None for
    "all", else the text itself, which `build_problem` / `reconstruct_series` parse against the
    real count. Raises SelectionError on text the grammar does not accept."""
    if _is_all(text):
        return None
    if not isinstance(text, str):
        raise SelectionError(f"{what} {text!r}: expected text such as {_GRAMMAR}")
    _parse_text(text, None, what)
    return text.strip()


def parse_channels(text_or_seq, num_channels: int | None) -> list[int] | None:
    """Receive channels (list of ints, in the order given) among `num_channels`.

    With `num_channels=None` (the file is not read yet, e.g. on the command line) only the
    syntax is checked: "all" gives None (= every channel), negative indices are refused, and the
    range is checked later by `build_problem`, which calls this again with the real count."""
    if num_channels is None:
        if _is_all(text_or_seq):
            return None
        big = 4096  # syntax only; the real bound is checked once the file is read
        if isinstance(text_or_seq, str) and re.search(r"(^|[,\s:])-", text_or_seq.strip()):
            raise SelectionError(f"channels {text_or_seq!r}: negative channel numbers need the file's "
                                 "channel count; write them as 0, 1, …")
        if isinstance(text_or_seq, str) and ":" in text_or_seq:
            parts = [p for t in re.split(r"[,\s]+", text_or_seq.strip()) if ":" in t for p in [t.split(":")]]
            if any(len(p) > 1 and not p[1].strip() for p in parts):
                raise SelectionError(f"channels {text_or_seq!r}: an open range 'A:' needs the file's channel "
                                     "count; write 'all' or 'A:B'")
        return _select(text_or_seq, big, "channels", "receive channels").tolist()
    return _select(text_or_seq, num_channels, "channels", "receive channels").tolist()


def average_blocks(selected: Sequence[int] | np.ndarray, average: int | None) -> tuple[np.ndarray, int]:
    """(blocks (B, K) int64, dropped) of the selected indices: K consecutive selected frames per
    block; `average` None or 0 means K = 1. A trailing incomplete block is dropped (see the
    module docstring for why) and the number of frames left out is returned."""
    sel = np.asarray(selected, dtype=np.int64).ravel()
    if isinstance(average, (bool, np.bool_)):
        raise SelectionError(f"average {average!r}: expected a positive whole number of frames")
    k = 1 if average is None or (not isinstance(average, str) and average == 0) else average
    if not isinstance(k, (int, np.integer)):
        try:
            kf = float(k)
        except (TypeError, ValueError):
            raise SelectionError(f"average {average!r}: expected a positive whole number of frames") from None
        if not (np.isfinite(kf) and kf == int(kf)):
            raise SelectionError(f"average {average!r}: expected a positive whole number of frames")
        k = int(kf)
    k = int(k)
    if k < 1:
        raise SelectionError(f"average must be a positive number of frames, got {average}")
    nb = sel.size // k
    if nb == 0:
        raise SelectionError(f"average={k} needs at least {k} frames, {sel.size} selected")
    return sel[: nb * k].reshape(nb, k), int(sel.size - nb * k)
