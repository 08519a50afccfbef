"""impl_chainer synthesis, what is chainer's own: the frame-by-frame path computes on plain arrays
(inference only), and keeps no Python memory. (Everything every framework must do:
tests/network_contract.py, run by test_network_contract.py.)"""
from impl_chainer import runtime  # noqa: F401  (before chainer: its import-time check breaks here)

import tracemalloc

import chainer
import numpy as np
import pytest

from common.contract import spec as S
from common.data import text
from impl_chainer import layers as CL
from impl_chainer.backend import Backend

SENTENCE = "The birch canoe slid on the smooth planks."


@pytest.fixture(scope="module")
def text2mel():
    return Backend(S.get_spec("tiny"), "text2mel", seed=3)


def test_step_refuses_training_mode_with_dropout():
    spec = S.get_spec("tiny")  # dropout 0.05
    stack = CL.build_stack(spec, S.audio_enc_layers(spec))
    with chainer.using_config("train", True), pytest.raises(ValueError, match="inference"):
        stack.step(np.zeros((1, spec.n_mels, 1), np.float32), stack.initial_history(1))


def test_repeated_synthesis_is_identical_and_keeps_no_memory(text2mel):
    ids = text.text_to_ids(SENTENCE, text2mel.spec)
    first = text2mel.synthesize(ids, max_frames=8)
    tracemalloc.start()  # slows Python down: few short runs
    text2mel.synthesize(ids, max_frames=8)
    baseline = tracemalloc.get_traced_memory()[0]
    for _ in range(2):
        again = text2mel.synthesize(ids, max_frames=8)
    grown = tracemalloc.get_traced_memory()[0] - baseline
    tracemalloc.stop()
    assert grown < 50_000, f"{grown} bytes kept over 2 sentences"
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
