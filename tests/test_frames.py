"""The one frame/channel grammar (napari_nirmpi.frames) and the one averaging rule."""

import numpy as np
import pytest

from napari_nirmpi.errors import NirmpiError, ProblemMismatch
from napari_nirmpi.frames import SelectionError, average_blocks, parse_channels, parse_frames


@pytest.mark.parametrize("sel, want", [
    (None, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
    ("all", list(range(10))), ("", list(range(10))), (" ALL ", list(range(10))), ("*", list(range(10))),
    ("3", [3]), ("-1", [9]), (-2, [8]), (np.int64(4), [4]),
    ("2:5", [2, 3, 4]), ("0:10:3", [0, 3, 6, 9]), (":3", [0, 1, 2]), ("7:", [7, 8, 9]),
    ("0:100", list(range(10))),                       # a stop past the end is clipped, as in Python
    ("0,2,5", [0, 2, 5]), ("0 2 5", [0, 2, 5]), ("0, 2,  5", [0, 2, 5]),
    ("0:3,7,8:10", [0, 1, 2, 7, 8, 9]), ("5,1", [5, 1]),        # mixes; order kept
    (slice(1, 4), [1, 2, 3]), (range(2, 4), [2, 3]), ([1, -1], [1, 9]), (np.array([0, 4]), [0, 4]),
    (np.array([1.0, 2.0]), [1, 2]),
])
def test_parse_frames_accepts(sel, want):
    got = parse_frames(sel, 10)
    assert got.dtype == np.int64 and got.tolist() == want


@pytest.mark.parametrize("sel, msg", [
    ("a:b", "'a' is not an integer"), ("1:2:3:4", "more than two"), ("0:4:0", "step 0"),
    ("10", "out of range"), ("-11", "out of range"), ([3, 12], r"\[12\] out of range"),
    ("5:5", "selects none"), ("20:", "selects none"), ("1,1", "more than once"), ("0:3,2", "more than once"),
    ([True, False], "integer"), ([0.5], "integer"), ("1.5", "not an integer"), (",", "empty"),
])
def test_parse_frames_refuses_with_reason(sel, msg):
    with pytest.raises(SelectionError, match=msg):
        parse_frames(sel, 10)


def test_selection_error_is_a_problem_mismatch():
    # build_problem always raised ProblemMismatch on bad selections; callers that catch it keep working
    assert issubclass(SelectionError, ProblemMismatch) and issubclass(SelectionError, NirmpiError)


def test_parse_channels_with_and_without_count():
    assert parse_channels("all", None) is None and parse_channels(None, None) is None
    assert parse_channels("0,2", None) == [0, 2] and parse_channels("0 1", None) == [0, 1]
    assert parse_channels("0:2", None) == [0, 1]
    assert parse_channels("all", 3) == [0, 1, 2] and parse_channels(None, 3) == [0, 1, 2]
    assert parse_channels("-1", 3) == [2] and parse_channels([1, 0], 3) == [1, 0]
    for bad, msg in (("x", "not an integer"), ("-1", "negative"), ("1:", "open range"), ("0,0", "more than once")):
        with pytest.raises(SelectionError, match=msg):
            parse_channels(bad, None)
    with pytest.raises(SelectionError, match="out of range"):
        parse_channels("0,3", 3)


def test_average_blocks_drops_trailing_partial_block():
    blocks, dropped = average_blocks(np.arange(7), 2)
    assert blocks.tolist() == [[0, 1], [2, 3], [4, 5]] and dropped == 1
    blocks, dropped = average_blocks([4, 6, 8], None)
    assert blocks.tolist() == [[4], [6], [8]] and dropped == 0
    with pytest.raises(SelectionError, match="needs at least 5"):
        average_blocks(np.arange(3), 5)
    for bad in (0.5, -1, "x", True):
        with pytest.raises(SelectionError, match="average"):
            average_blocks(np.arange(3), bad)


def test_preprocess_and_batch_agree_on_averaging():
    """7 foreground frames, average 2: build_problem kept a 4th block of one frame, the batch
    plan dropped it (3 frames); one rule now (3, the incomplete block dropped and counted)."""
    from napari_nirmpi.preprocess import build_problem_from_arrays
    from napari_nirmpi.series import plan_frames

    rng = np.random.default_rng(0)
    C, K, O, F = 1, 12, 9, 7
    from napari_nirmpi.grid import Grid

    sm = rng.normal(size=(C, K, O)) + 1j * rng.normal(size=(C, K, O))
    meas = rng.normal(size=(F, C, K)) + 1j * rng.normal(size=(F, C, K))
    p = build_problem_from_arrays(sm, None, meas, None, snr=np.full((C, K), 10.0), frequencies=np.arange(K) * 1e4 + 3e4,
                                  grid=Grid((3, 3), (3e-3, 3e-3)), min_freq=0, max_freq=1e9, snr_threshold=0,
                                  average=2)
    plan = plan_frames(np.zeros(F, bool), None, None, 2)
    assert p.u.shape[0] == len(plan["fg_blocks"]) == 3
    assert plan["dropped"] == 1 and p.params["frames_dropped"] == 1
    # the blocks are the same frames: u[2] is the mean of frames 4 and 5
    w = p.row_weights
    np.testing.assert_allclose(p.u[2] / w, meas[4:6, 0].mean(axis=0)[np.asarray(p.freq_index)], rtol=1e-5)
    # and the "0,2,5" grammar the widget accepted is accepted by the batch plan too
    assert plan_frames(np.zeros(F, bool), None, "0,2,5")["fg_blocks"] == [[0], [2], [5]]


def test_check_selection_is_syntax_only():
    from napari_nirmpi.frames import check_selection

    assert check_selection("all") is None and check_selection(" ") is None
    assert check_selection(" 0:4, 9 ") == "0:4, 9" and check_selection("-3:") == "-3:"
    for bad in ("a", "1:2:3:4", "0:5:0", ","):
        with pytest.raises(SelectionError):
            check_selection(bad)
