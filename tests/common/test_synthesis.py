"""The framework-neutral rules of synthesis."""
import numpy as np
import pytest

from common import spec as S
from common.synthesis import check_ids, check_mel, force_incremental, reached_end


def one_hot_at(n, size=10):
    column = np.full(size, 0.01)
    column[n] = 0.9
    return column


@pytest.mark.parametrize("prev, peak", [(4, 3), (4, 4), (4, 7), (0, 0), (0, 3)])
def test_moves_from_one_back_to_three_forward_are_kept(prev, peak):
    column, n = force_incremental(one_hot_at(peak), prev)
    assert n == peak and column is not None and column.argmax() == peak and column.max() == 0.9


@pytest.mark.parametrize("prev, peak", [(4, 2), (4, 8), (0, 9), (9, 0)])
def test_other_moves_are_forced_one_hot_at_the_next_position(prev, peak):
    column, n = force_incremental(one_hot_at(peak), prev)
    assert n == min(prev + 1, 9)
    assert column[n] == 1.0 and np.count_nonzero(column) == 1


def test_the_end_is_the_last_position():
    assert reached_end(9, 10) and not reached_end(8, 10)


@pytest.mark.parametrize("ids, frames, error", [([], 5, "non-empty"), ([[4, 1]], 5, "1-D"),
                                                ([4] * 61, 5, "longer than the model's limit of 60"),
                                                ([4, 40, 1], 5, r"ids must lie in \[0, 32\)"),
                                                ([4, 1], 0, "max_frames must be >= 1")])
def test_bad_ids_are_refused_clearly(ids, frames, error):
    with pytest.raises(ValueError, match=error):
        check_ids(np.array(ids, np.int64), S.get_spec("tiny"), frames)


def test_good_input_passes_as_float32_and_int32():
    tiny = S.get_spec("tiny")
    assert check_ids([4, 5, 1], tiny, 3).dtype == np.int32
    assert check_mel(np.zeros((tiny.n_mels, 3)), tiny).dtype == np.float32
    with pytest.raises(ValueError, match=r"expected a mel of shape \(16, T>0\)"):
        check_mel(np.zeros((8, 3)), tiny)
