"""The framework-neutral rules of synthesis."""
import copy
import pickle

import numpy as np
import pytest

from common.contract import spec as S
from common.contract.synthesis import (Synthesis, check_ids, check_mel, check_texts, force_incremental, pad_ids, reached_end,
                              split_batch)


def peaked_at(n, size=10):
    column = np.full(size, 0.01)
    column[n] = 0.9
    return column


def force_one(peak, prev, n_text=10):
    columns, positions, forced = force_incremental(peaked_at(peak)[None], np.array([prev]), np.array([n_text]))
    assert forced.dtype == bool and forced.shape == (1,)
    return columns[0], int(positions[0]), bool(forced[0])


@pytest.mark.parametrize("prev, peak", [(4, 3), (4, 4), (4, 7), (0, 0), (0, 3)])
def test_moves_from_one_back_to_three_forward_are_kept(prev, peak):
    column, n, forced = force_one(peak, prev)
    assert n == peak and column.argmax() == peak and column.max() == 0.9 and not forced


@pytest.mark.parametrize("prev, peak, n_text", [(4, 2, 10), (4, 8, 10), (0, 9, 10), (9, 0, 10), (6, 0, 7)])
def test_other_moves_are_forced_one_hot_at_the_next_position(prev, peak, n_text):
    column, n, forced = force_one(peak, prev, n_text)
    assert n == min(prev + 1, n_text - 1) and forced
    assert column[n] == 1.0 and np.count_nonzero(column) == 1


def test_each_sentence_of_a_batch_is_forced_on_its_own():
    columns = np.stack([peaked_at(5), peaked_at(9), peaked_at(2)])
    out, positions, forced = force_incremental(columns, np.array([4, 2, 3]), np.array([10, 10, 4]))
    assert positions.tolist() == [5, 3, 2] and forced.tolist() == [False, True, False]
    np.testing.assert_array_equal(out[[0, 2]], columns[[0, 2]])
    assert out[1, 3] == 1.0 and np.count_nonzero(out[1]) == 1


def test_a_batch_is_padded_and_split_at_each_sentence_end():
    texts = [np.array([5, 6, 1], np.int32), np.array([7, 1], np.int32)]
    np.testing.assert_array_equal(pad_ids(texts), [[5, 6, 1], [7, 1, S.PAD]])
    mel, attention = np.zeros((2, 4, 5)), np.zeros((2, 3, 5))
    positions = np.array([[0, 1, 2, 2, 1], [0, 0, 0, 0, 0]])  # the first ends at frame 2, the second never
    forced = np.array([[0, 1, 0, 1, 1], [1, 0, 0, 1, 0]], np.float32)  # as Gluon gives them
    first, second = split_batch(mel, attention, positions, forced, [3, 2])
    (mel0, att0), (mel1, att1) = first, second
    assert mel0.shape == (4, 3) and att0.shape == (3, 3) and mel1.shape == (4, 5) and att1.shape == (2, 5)
    assert first.forced.dtype == bool and first.forced.tolist() == [False, True, False]
    assert second.forced.tolist() == [True, False, False, True, False]


def test_a_synthesis_is_the_pair_mel_attention_with_its_forced_flags():
    mel, attention, forced = np.zeros((4, 3)), np.ones((2, 3)), np.array([False, True, False])
    out = Synthesis(mel, attention, forced)
    assert isinstance(out, tuple) and len(out) == 2 and out[0] is mel and out[1] is attention
    assert out.mel is mel and out.attention is attention and out.forced is forced
    for again in (copy.deepcopy(out), pickle.loads(pickle.dumps(out))):
        assert isinstance(again, Synthesis) and len(again) == 2
        assert all(np.array_equal(x, y) for x, y in zip((*again, again.forced), (mel, attention, forced)))


def test_the_end_is_the_last_position():
    assert reached_end(9, 10) and not reached_end(8, 10)


@pytest.mark.parametrize("ids, frames, error", [([], 5, "non-empty"), ([[4, 1]], 5, "1-D"),
                                                ([4] * 61, 5, "longer than the model's limit of 60"),
                                                ([4, 40, 1], 5, r"ids must lie in \[0, 32\)"),
                                                ([4, 0, 1], 5, "padding id 0"),
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


def test_a_batch_needs_a_text():
    with pytest.raises(ValueError, match="no texts"):
        check_texts([], S.get_spec("tiny"), 5)
