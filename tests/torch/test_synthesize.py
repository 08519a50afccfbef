"""impl_torch synthesis: plausible lengths, forcibly incremental attention, clear errors, no
state or gradients kept. (Agreement with the teacher-forced reference: test_contract.)"""
import os

import numpy as np
import pytest
import torch

from common import spec as S, text as TX
from common.synthesis import reached_end
from common.weights import init_weights
from impl_torch.backend import NETWORKS
from impl_torch.synthesize import synthesize, upsample
from impl_torch.weights import set_weights


def model(net, seed=0, spec=None):
    spec = spec or S.get_spec("tiny")
    m = NETWORKS[net](spec)
    set_weights(m, init_weights(spec, net, seed))
    return m


def positions(attention):
    return attention.argmax(axis=0)


@pytest.mark.parametrize("seed", range(4))
def test_length_is_plausible_and_attention_forcibly_incremental(seed):
    spec = S.get_spec("tiny")
    ids = TX.text_to_ids("the birch canoe slid on the smooth planks.", spec)
    mel, a = synthesize(model("text2mel", seed), ids, spec.max_frames)
    t, n = mel.shape[1], len(ids)
    assert mel.shape == (spec.n_mels, t) and a.shape == (n, t)
    assert np.ceil((n - 1) / 3) <= t <= spec.max_frames  # at most 3 characters per frame
    moves = np.diff(np.concatenate([[0], positions(a)]))
    assert moves.min() >= -1 and moves.max() <= 3
    assert t == spec.max_frames or reached_end(positions(a)[-1], n)
    assert not any(reached_end(p, n) for p in positions(a)[:-1])  # it stops on arriving at the end


def test_forced_columns_are_one_hot_at_the_next_position():
    spec = S.get_spec("tiny")
    ids = TX.text_to_ids("a quick test of forcing.", spec)
    _, a = synthesize(model("text2mel", 1), ids, 40)
    pos = np.concatenate([[0], positions(a)])
    forced = np.flatnonzero(a.max(axis=0) == 1.0)
    assert forced.size > 0  # untrained attention wanders, so some frames must be forced
    for t in forced:
        assert pos[t + 1] == min(pos[t] + 1, len(ids) - 1) and np.count_nonzero(a[:, t]) == 1


def test_max_frames_is_respected_and_checked():
    ids = TX.text_to_ids("a long sentence that cannot be read in three frames.", S.get_spec("tiny"))
    mel, a = synthesize(model("text2mel"), ids, 3)
    assert mel.shape[1] == a.shape[1] == 3
    with pytest.raises(ValueError, match="max_frames"):
        synthesize(model("text2mel"), ids, 0)


def test_nothing_is_kept_between_calls():
    """Same text twice, same output; no gradients recorded; the model's mode is eval."""
    spec = S.get_spec("tiny")
    t2m = model("text2mel")
    ids = TX.text_to_ids("same words again.", spec)
    first = synthesize(t2m, ids, 30)
    synthesize(t2m, TX.text_to_ids("something else in between.", spec), 30)
    second = synthesize(t2m, ids, 30)
    assert all(np.array_equal(x, y) for x, y in zip(first, second))
    assert all(p.grad is None for p in t2m.parameters()) and not t2m.training
    assert torch.is_grad_enabled()


def resident_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="resident memory is read from Linux /proc")
def test_memory_does_not_grow_over_many_sentences():
    """Resident memory stays put over 24 more syntheses of 8 sentences already seen once."""
    spec = S.get_spec("tiny")
    t2m = model("text2mel")
    rng = np.random.default_rng(0)
    sentences = [np.append(rng.integers(2, spec.n_vocab, n), S.EOS).astype(np.int32) for n in rng.integers(5, 50, 8)]
    for ids in sentences:
        synthesize(t2m, ids, spec.max_frames)
    before = resident_mib()
    for ids in sentences * 3:
        synthesize(t2m, ids, spec.max_frames)
    assert resident_mib() - before < 5


def test_upsample_shape_range_and_errors():
    spec = S.get_spec("tiny")
    mag = upsample(model("ssrn"), np.random.default_rng(0).random((spec.n_mels, 5)))
    assert mag.shape == (spec.n_mags, 5 * spec.r) and mag.dtype == np.float32
    assert mag.min() >= 0 and mag.max() <= 1
    with pytest.raises(ValueError, match=r"expected a mel of shape \(16, T>0\)"):
        upsample(model("ssrn"), np.zeros((spec.n_mels + 1, 5)))
