"""Which raw frames make which output frame of a series (the frame grammar and the averaging
rule live in `napari_nirmpi.frames`, shared with `preprocess.build_problem`)."""

from __future__ import annotations

import numpy as np

from ..errors import NirmpiError
from ..frames import average_blocks, parse_frames


def plan_frames(is_background: np.ndarray, frame_times: np.ndarray | None, frames=None,
                average: int | None = None) -> dict:
    """Which frames make which output frame.

    `frames` selects among the FOREGROUND frames (the same indexing and grammar as
    preprocess.build_problem: "all", "A:B", "A:B:S", "0,2,5", mixes, or a sequence); background
    frames are never reconstructed (they still correct the signal in preprocessing).
    `average=K` groups K consecutive selected foreground frames into one output frame; a trailing
    incomplete block is dropped and counted (`frames.average_blocks`). Returns dict with
    fg_blocks (foreground positions per output frame), raw_blocks (file frame numbers),
    times (mean time per block, s; NaN when unknown), dropped.
    """
    is_background = np.asarray(is_background, dtype=bool)
    fg = np.flatnonzero(~is_background)
    if fg.size == 0:
        raise NirmpiError(f"the measurement has no foreground frames ({is_background.size} background)")
    sel = parse_frames(frames, fg.size)
    fg_blocks, dropped = average_blocks(sel, average)
    raw_blocks = fg[fg_blocks]
    if frame_times is None:
        times = np.full(len(fg_blocks), np.nan)
    else:
        times = np.asarray(frame_times, dtype=np.float64)[raw_blocks].mean(axis=1)
    return {"fg_blocks": fg_blocks.tolist(), "raw_blocks": raw_blocks.tolist(), "times": times,
            "dropped": dropped}


def count_output_frames(meas, frames=None, average=None) -> int:
    """Output frames `reconstruct_series` makes for the measurement file `meas`."""
    from .. import mdf

    f = mdf.open(meas)
    is_bg = f.is_background_frame
    if is_bg is None:
        is_bg = np.zeros(int(f.num_frames), bool)
    return len(plan_frames(is_bg, None, frames, average)["fg_blocks"])
