"""impl_chainer training: losses equal common.contract.losses, one Adam step equals common.contract.losses.adam_update,
and training really learns."""
from impl_chainer import runtime  # noqa: F401  (before chainer: its import-time check breaks here)

import numpy as np
import pytest

from common.data import dataset as data
from common.contract import losses as L, spec as S
from impl_chainer import layers as CL, train as T
from impl_chainer.backend import Backend
from tests.backend_contract import random_batch


def test_loss_functions_equal_common_losses_and_are_stable():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (2, 5, 7)).astype(np.float32)
    logits[0, 0, :2] = [80.0, -80.0]  # exp overflows float32 in a naive formula
    target = rng.random((2, 5, 7)).astype(np.float32)
    target[0, 0, :2] = [0.0, 1.0]
    np.testing.assert_allclose(T.l1(logits, target).array, L.l1(logits.astype(np.float64), target), rtol=1e-6)
    bin_div = T.binary_divergence(logits, target).array
    assert np.isfinite(bin_div)
    np.testing.assert_allclose(bin_div, L.binary_divergence(logits, target), rtol=1e-6)
    a, guide = rng.random((2, 4, 7)).astype(np.float32), rng.random((2, 4, 7)).astype(np.float32)
    np.testing.assert_allclose(T.attention_loss(a, guide, 11.0).array, L.attention_loss(a, guide, 11.0), rtol=1e-6)


@pytest.mark.parametrize("net", S.NETS)
def test_backend_losses_on_a_batch_equal_common_losses(net):
    spec = S.get_spec("tiny")
    batch = random_batch(spec, 3, seed=1)
    backend = Backend(spec, net)
    out = backend.forward(batch)
    ref = (L.text2mel_losses(out["logits"], out["attention"], batch) if net == "text2mel"
           else L.ssrn_losses(out["logits"], batch))
    got, grads = backend.gradients(batch)
    assert set(got) == set(ref) and set(grads) == set(backend.get_weights())
    for key in ref:
        np.testing.assert_allclose(got[key], ref[key], rtol=1e-5, err_msg=key)
    assert all(np.any(g != 0) for g in grads.values())


@pytest.mark.parametrize("variant", [
    {"warmup": 0, "grad_clip": None},  # the paper's: constant lr, no clipping
    {"grad_clip": 1e-3},  # community's warm-up schedule; clipping bites on most gradients
    {"eps": 1e-3, "grad_clip": None},  # eps comparable to sqrt(v): its placement matters
])
def test_one_adam_step_equals_common_adam_update(variant):
    spec = S.get_spec("tiny", dropout=0.0, **variant)  # no dropout: train mode computes eval mode's gradients
    batch = random_batch(spec, 2, seed=2)
    backend = Backend(spec, "ssrn")
    _, grads = backend.gradients(batch)
    rng = np.random.default_rng(3)
    state = {"step": np.array(6, np.int64)}  # mid-training, so the bias corrections are not trivial
    for name, w in backend.get_weights().items():
        state[f"m.{name}"] = rng.normal(0, 1e-3, w.shape).astype(np.float32)
        state[f"v.{name}"] = rng.uniform(0, 1e-6, w.shape).astype(np.float32)
    backend.set_optimizer_state(state)
    before = backend.get_weights()
    backend.train_step(batch)
    after, new_state = backend.get_weights(), backend.get_optimizer_state()
    assert int(new_state["step"]) == 7
    lr = L.learning_rate(spec, 7)
    for name, w in before.items():
        p, m, v = L.adam_update(w.astype(np.float64), grads[name], state[f"m.{name}"], state[f"v.{name}"], 7, spec)
        np.testing.assert_allclose(after[name], p, rtol=0, atol=1e-3 * lr + 1e-7, err_msg=name)
        np.testing.assert_allclose(new_state[f"m.{name}"], m, rtol=1e-5, atol=1e-9, err_msg=name)  # m ~ 1e-3
        np.testing.assert_allclose(new_state[f"v.{name}"], v, rtol=1e-5, atol=1e-12, err_msg=name)  # v ~ 1e-6
        assert not np.array_equal(after[name], w)


def test_adam_on_several_threads_updates_exactly_as_on_one():
    spec = S.get_spec("tiny", dropout=0.0)
    batch = random_batch(spec, 2, seed=2)
    results = []
    try:
        for threads in (1, 3):
            runtime.configure_threads(threads)
            backend = Backend(spec, "text2mel")
            for _ in range(3):
                backend.train_step(batch)
            results.append((backend.get_weights(), backend.get_optimizer_state()))
            assert (backend.trainer._pool is None) == (threads == 1)
    finally:
        runtime.configure_threads(1)
    (w1, s1), (w3, s3) = results
    assert all(np.array_equal(w1[k], w3[k]) for k in w1) and all(np.array_equal(s1[k], s3[k]) for k in s1)
    assert runtime.thread_count() == 1


def test_dropout_is_reseeded_by_seed():
    """seed() right before a step fixes its dropout masks (the stream is the process-wide
    numpy.random, so each backend is seeded just before its own step, as the training loop does)."""
    spec = S.get_spec("tiny", dropout=0.3)
    batch = random_batch(spec, 2, seed=4)
    a, b = Backend(spec, "ssrn"), Backend(spec, "ssrn")
    losses = []
    for backend, seed in ((a, 5), (b, 5), (a, 6), (b, 7)):
        backend.seed(seed)
        losses.append(backend.train_step(batch))
    assert losses[0] == losses[1] and losses[2]["loss"] != losses[3]["loss"]


def binary_entropy(y):
    """The least binary divergence any prediction can reach on targets y."""
    y = np.clip(np.asarray(y, np.float64), 1e-12, 1 - 1e-12)
    return np.mean(-y * np.log(y) - (1 - y) * np.log(1 - y))


@pytest.mark.slow
@pytest.mark.parametrize("net, factor", [("text2mel", 0.75), ("ssrn", 0.8)])
def test_training_learns_a_batch_of_speech(tiny_corpus_dir, net, factor):
    """100 steps on one batch of the espeak-ng corpus (tiny, lr 3e-3 without warm-up, so 100 steps
    are enough; dropout on): the loss's excess over its floor (the targets' binary entropy) falls to
    <= `factor` of its start (measured 0.63 and 0.71), and so does the guided-attention loss (<= 0.5,
    measured 0.36)."""
    spec = S.get_spec("tiny", warmup=0, lr=3e-3)
    corpus = data.load_corpus(tiny_corpus_dir, spec, progress=False)
    batch = next(data.batches(corpus, np.arange(4), 4, np.random.default_rng(0)))
    floor = binary_entropy(batch.mel if net == "text2mel" else batch.mag)
    backend = Backend(spec, net)
    history = []
    for step in range(100):
        backend.seed(step)
        history.append(backend.train_step(batch))
    first, last = history[0], history[-1]
    assert last["loss"] - floor <= factor * (first["loss"] - floor), (first, last, floor)
    if net == "text2mel":
        assert last["att"] <= 0.5 * first["att"], (first, last)


@pytest.mark.parametrize("net", S.NETS)
def test_batch_norm_statistics_are_no_optimizer_state(net):
    """The running statistics are persistent arrays, not Parameters: no gradient, no Adam m and v;
    a training step updates them (in place), eval-mode forward and gradients leave them alone,
    and the optimizer state round trip works without them."""
    spec = S.get_spec("tiny", norm="batch", dropout=0.0)
    batch = random_batch(spec, 2, seed=5)
    backend = Backend(spec, net)
    stats = CL.canonical_statistics(backend.model)
    assert stats and set(stats) == {k for k in backend.get_weights() if k.endswith((".norm.mean", ".norm.var"))}
    trainer = backend.trainer
    assert not set(stats) & (set(trainer.params) | set(trainer.m) | set(trainer.v))
    before = backend.get_weights()
    backend.forward(batch)
    _, grads = backend.gradients(batch)
    assert not set(stats) & set(grads)
    assert all(np.array_equal(backend.get_weights()[k], before[k]) for k in stats)
    backend.train_step(batch)
    after = backend.get_weights()
    assert all(not np.array_equal(after[k], before[k]) for k in stats)
    assert all(a is b for a, b in zip(stats.values(), CL.canonical_statistics(backend.model).values()))  # in place
    state = backend.get_optimizer_state()
    assert not any(k.endswith((".norm.mean", ".norm.var")) for k in state)
    other = Backend(spec, net)
    other.set_weights(after)
    other.set_optimizer_state(state)
    for b in (backend, other):
        b.train_step(batch)
    assert all(np.array_equal(backend.get_weights()[k], v) for k, v in other.get_weights().items())
