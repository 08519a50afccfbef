"""impl_gluon training: losses equal common.contract.losses, Adam steps equal common.contract.losses.adam_update,
dropout follows Backend.seed, and training really learns; the stock tier runs none of the tuned
tier's own code and steps MXNet's Adam through a gluon.Trainer."""
from impl_gluon import runtime  # noqa: F401  (must precede the first mxnet import)

import mxnet as mx
import numpy as np
import pytest
from mxnet import gluon

from common.data import dataset as data
from common.contract import losses as L, reference as R, spec as S
from common.framework import OPS
from impl_gluon import layers as GL, synthesize, train as GT
from impl_gluon.backend import Backend
from tests.backend_contract import random_batch, variant_weights

MODES = pytest.mark.parametrize("hybridize", [False, True], ids=["imperative", "hybridized"])
TIERS = pytest.mark.parametrize("ops", OPS)


def test_loss_functions_equal_common_losses():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 15, (2, 16, 30)).astype(np.float32)  # large logits: the stable form matters
    logits[0, 0, :4] = [80.0, -80.0, 0.0, 30.0]
    target = rng.random((2, 16, 30)).astype(np.float32)
    attention = rng.random((2, 9, 30)).astype(np.float32)
    mask = L.guide_mask([9, 5], [30, 21], 9, 30)
    guide = L.guide([9, 5], [30, 21], 9, 30, 0.2)
    x, y = mx.nd.array(logits), mx.nd.array(target)
    np.testing.assert_allclose(GT.l1(x, y).asscalar(), L.l1(logits.astype(np.float64), target), rtol=1e-6)
    np.testing.assert_allclose(GT.binary_divergence(x, y).asscalar(), L.binary_divergence(logits, target), rtol=1e-6)
    att = GT.attention_loss(mx.nd.array(attention), mx.nd.array(guide), float(mask.sum())).asscalar()
    np.testing.assert_allclose(att, L.attention_loss(attention, guide, mask.sum()), rtol=1e-6)


@pytest.mark.parametrize("net", S.NETS)
def test_a_train_step_copies_only_the_arrays_its_loss_reads(net, monkeypatch):
    """Text2Mel never reads the magnitudes: they are not made into NDArrays for it."""
    spec = S.get_spec("tiny")
    copied = []

    def spy(batch, ctx, net):
        arrays = to_device(batch, ctx, net)
        copied.extend(arrays)
        return arrays

    to_device = GT.to_device
    monkeypatch.setattr(GT, "to_device", spy)
    Backend(spec, net).train_step(random_batch(spec))
    assert sorted(copied) == sorted({"text2mel": ["text", "mel", "guide", "n_real"], "ssrn": ["mel", "mag"]}[net])


@TIERS
@MODES
@pytest.mark.parametrize("net", S.NETS)
def test_backend_losses_equal_common_losses_of_reference_outputs(net, hybridize, ops):
    spec = S.get_spec("tiny")
    b = Backend(spec, net, ops=ops, hybridize=hybridize)
    batch = random_batch(spec)
    out = b.forward(batch)
    expected = (L.text2mel_losses(out["logits"], out["attention"], batch) if net == "text2mel"
                else L.ssrn_losses(out["logits"], batch))
    got, grads = b.gradients(batch)
    assert set(got) == set(expected)
    for k in expected:
        np.testing.assert_allclose(got[k], expected[k], rtol=1e-5, err_msg=k)
    assert set(grads) == set(b.get_weights()) and all(np.abs(g).max() > 0 for g in grads.values())


@pytest.mark.parametrize("eps", [1e-8, 1e-6])
def test_spec_adam_equals_adam_update_where_eps_matters(eps):
    """MXNet's fused kernel with the rescaled step size and eps: the spec's update, also for
    gradients far below eps (where adding eps to the uncorrected sqrt(v) would differ)."""
    spec = S.get_spec("tiny", warmup=0, lr=1e-3, eps=eps, grad_clip=0.5)
    rng = np.random.default_rng(1)
    w = rng.normal(size=300)
    m, v = np.zeros(300), np.zeros(300)
    opt = GT.SpecAdam(spec)
    weight = mx.nd.array(w)
    state = opt.create_state(0, weight)
    for step in range(1, 5):
        g = rng.normal(size=300) * 10.0 ** rng.integers(-11, 2, 300)  # 1e-11 .. 10, some clipped
        opt.t = step
        opt.update_all([weight], [mx.nd.array(g)])
        w, m, v = L.adam_update(w, g, m, v, step, spec)
        np.testing.assert_allclose(weight.asnumpy(), w, rtol=0, atol=2e-6)
    # 1e-4: beta2 = 0.999 in float32 makes 1 - beta2 off by 1.3e-5 relative
    np.testing.assert_allclose(state[0].asnumpy(), m, rtol=1e-4, atol=1e-12)
    np.testing.assert_allclose(state[1].asnumpy(), v, rtol=1e-4, atol=1e-20)


@TIERS
@MODES
@pytest.mark.parametrize("overrides", [dict(warmup=0, lr=1e-3, grad_clip=None), dict(warmup=4, lr=1e-2, grad_clip=1e-3)],
                         ids=["constant-lr", "warmup-clipped"])
def test_adam_steps_equal_common_adam_update(overrides, hybridize, ops):
    """Three train_steps against adam_update fed the gradients each step used (left in the
    parameters' .grad). The clipped case clips most gradient elements."""
    spec = S.get_spec("tiny", **overrides)
    b = Backend(spec, "text2mel", ops=ops, hybridize=hybridize)
    batch = random_batch(spec)
    w = {k: v.astype(np.float64) for k, v in b.get_weights().items()}
    m, v = ({k: np.zeros_like(a) for k, a in w.items()} for _ in range(2))
    for step in range(1, 4):
        b.train_step(batch)
        for k, p in b.trainer.params.items():
            w[k], m[k], v[k] = L.adam_update(w[k], p.grad().asnumpy(), m[k], v[k], step, spec)
        got = b.get_weights()
        for k in w:
            np.testing.assert_allclose(got[k], w[k], rtol=0, atol=2e-6, err_msg=f"{k} at step {step}")
    state = b.get_optimizer_state()
    assert int(state["step"]) == 3
    for k in w:
        np.testing.assert_allclose(state[f"m.{k}"], m[k], rtol=1e-4, atol=1e-9, err_msg=k)
        np.testing.assert_allclose(state[f"v.{k}"], v[k], rtol=1e-4, atol=1e-12, err_msg=k)


@TIERS
def test_optimizer_state_round_trips_and_resumes_identically(ops):
    spec = S.get_spec("tiny", warmup=0)
    batch = random_batch(spec)
    a, b = Backend(spec, "ssrn", ops=ops), Backend(spec, "ssrn", ops=ops)
    for _ in range(2):
        a.train_step(batch)
    b.set_weights(a.get_weights())
    b.set_optimizer_state(a.get_optimizer_state())
    losses = []
    for backend in (a, b):  # one global random stream: seed right before each step
        backend.seed(5)
        losses.append(backend.train_step(batch))
    assert losses[0] == losses[1]
    assert all(np.array_equal(x, b.get_weights()[k]) for k, x in a.get_weights().items())
    with pytest.raises(ValueError, match="missing"):
        b.set_optimizer_state({"step": np.array(1)})


@TIERS
def test_dropout_is_seeded_and_only_in_training(ops):
    spec = S.get_spec("tiny", dropout=0.3)
    batch = random_batch(spec)
    a, b = Backend(spec, "text2mel", ops=ops), Backend(spec, "text2mel", ops=ops, hybridize=False)
    np.testing.assert_array_equal(a.forward(batch)["logits"], a.forward(batch)["logits"])  # eval: no dropout
    eval_loss = a.gradients(batch)[0]["loss"]
    def step(backend, seed):  # one global random stream: seed right before each step
        backend.seed(seed)
        return backend.train_step(batch)

    first = step(a, 3)
    assert first == step(b, 3)  # same seed, same masks (hybridized and imperative alike)
    assert first["loss"] != pytest.approx(eval_loss, rel=1e-4)  # dropout was on
    assert step(a, 3) != step(b, 4)


def entropy_floor(target) -> float:
    """The smallest possible binary divergence: the mean entropy of the targets."""
    y = np.clip(np.asarray(target, np.float64), 1e-7, 1 - 1e-7)
    return float(np.mean(-y * np.log(y) - (1 - y) * np.log(1 - y)))


@pytest.mark.parametrize("net, factor", [("text2mel", 2.0), ("ssrn", 1.4)])
def test_training_learns_the_tiny_corpus(net, factor, tiny_corpus_dir):
    """100 steps (lr 5e-3, no dropout) on one fixed batch of the espeak-ng corpus: the loss above
    its floor (the binary divergence cannot fall below the targets' entropy) falls by `factor`
    (measured: text2mel 2.4x, ssrn 1.58x, the same to 6 digits in impl_torch: tiny SSRN soon
    settles near its best constant output) and text2mel's guided-attention loss at least 4x
    (measured 17x)."""
    spec = S.get_spec("tiny", warmup=0, lr=5e-3, dropout=0.0)
    corpus = data.load_corpus(tiny_corpus_dir, spec, progress=False)
    batch = next(data.batches(corpus, range(len(corpus)), spec.batch_size, np.random.default_rng(0)))
    floor = entropy_floor(batch.mel if net == "text2mel" else batch.mag)
    b = Backend(spec, net)
    before = b.gradients(batch)[0]
    for _ in range(100):
        b.train_step(batch)
    after = b.gradients(batch)[0]
    assert after["loss"] - floor < (before["loss"] - floor) / factor, (before, after, floor)
    if net == "text2mel":
        assert after["att"] < before["att"] / 4, (before, after)


@TIERS
@MODES
@pytest.mark.parametrize("net", S.NETS)
def test_batch_norm_running_statistics_are_kept_apart_from_training(net, hybridize, ops):
    """The running statistics are no trainable parameters (no gradient, no Adam state); two
    training steps update them as common.contract.reference does in training mode (momentum, UNBIASED
    variance: the Trainer's correction of MXNet's biased update, with n = B T at each layer, T
    doubling after each SSRN deconvolution), imperative and hybridized alike, in both tiers;
    gradients, forward and synthesis leave them alone."""
    spec = S.get_spec("tiny", norm="batch", dropout=0.0)
    b = Backend(spec, net, ops=ops, hybridize=hybridize)
    w = variant_weights(spec, net)
    b.set_weights(w)
    running = {k for k in w if k.endswith((".norm.mean", ".norm.var"))}
    assert running and not running & set(b.trainer.params)
    assert not any(name[2:] in running for name in b.get_optimizer_state() if name != "step")
    batch = random_batch(spec)
    _, grads = b.gradients(batch)
    assert not running & set(grads)
    b.forward(batch)
    if net == "text2mel":
        b.synthesize_batch([batch.text[0][:batch.text_lengths[0]]], 5)
    assert all(np.array_equal(b.get_weights()[k], w[k]) for k in running)
    for _ in range(2):
        before, expected = b.get_weights(), {}
        b.train_step(batch)
        if net == "text2mel":
            R.text2mel(spec, before, batch.text, batch.mel, expected)
        else:
            R.ssrn(spec, before, batch.mel, expected)
        after = b.get_weights()
        for k in running:
            np.testing.assert_allclose(after[k], expected[k], rtol=1e-5, atol=1e-7, err_msg=k)


# --- the stock tier -------------------------------------------------------------------------------
def tripwire(what, original=None):
    """A stand-in that fails when called (with `original`: when called for a sigmoid, else passes on)."""
    def run(*args, **kwargs):
        if original is not None and kwargs.get("act_type") != "sigmoid":
            return original(*args, **kwargs)  # gluon's BCE loss takes Activation's softrelu: stock too
        raise AssertionError(f"the stock tier ran the tuned tier's {what}")
    return run


TUNED_ONLY = {  # what only the tuned tier runs: (owner, attribute) pairs
    "Objective": [(GT.Objective, "hybrid_forward")],  # network + losses as one cached graph
    "SpecAdam": [(GT.SpecAdam, "update_all")],  # adam_update called with the spec's step size and eps
    "differentiable norm": [(GL.ChannelNorm, "differentiable")],  # the channel norm's training form
    "Activation sigmoid": [(mx.nd, "Activation"), (mx.sym, "Activation")],  # MKLDNN's sigmoid (gate and l1)
}


@pytest.mark.parametrize("piece", TUNED_ONLY)
@pytest.mark.parametrize("net", S.NETS)
def test_stock_runs_none_of_the_tuned_code(net, piece, monkeypatch):
    """Each tuned-only piece replaced by a tripwire: a tuned train step trips it; a stock Backend,
    hybridized and imperative, trains, takes gradients, runs forward and synthesizes without."""
    spec = S.get_spec("tiny")  # layer norm, dropout: every piece in use
    batch = random_batch(spec)
    for owner, name in TUNED_ONLY[piece]:
        original = getattr(owner, name) if name == "Activation" else None
        monkeypatch.setattr(owner, name, tripwire(piece, original))
    with pytest.raises(AssertionError, match=piece):
        Backend(spec, net).train_step(batch)
    for hybridize in (True, False):
        b = Backend(spec, net, ops="stock", hybridize=hybridize)
        b.train_step(batch)
        b.gradients(batch)
        b.forward(batch)
        if net == "text2mel":
            b.synthesize_batch([batch.text[0][:batch.text_lengths[0]]], 5)
        else:
            b.upsample(batch.mel[0])


def test_stock_hybridizes_the_network_alone():
    """No Objective: the network is the cached graph (its synthesis step too), the losses imperative."""
    b = Backend(S.get_spec("tiny"), "text2mel", ops="stock")
    assert b.trainer.objective is None and b.model._active and synthesize.synthesis_step(b.model)._active
    assert isinstance(b.trainer.gluon_trainer, gluon.Trainer) and type(b.trainer.optimizer) is mx.optimizer.Adam


def test_stock_steps_mxnets_adam_through_a_gluon_trainer(monkeypatch):
    """Every step is gluon.Trainer.step(1) calling MXNet's Adam.update once a parameter, at MXNet's
    own count t = the step, with the spec's rate at t and eps sqrt(1 - b2^t); in a fresh backend
    restored from a state, the counts continue from its step; the state is the Trainer's moments."""
    spec = S.get_spec("tiny", warmup=3, grad_clip=0.5, eps=1e-6)
    batch = random_batch(spec)
    steps, updates = [], []
    trainer_step, adam_update = gluon.Trainer.step, mx.optimizer.Adam.update

    def spy_step(self, batch_size, *args, **kwargs):
        steps.append(batch_size)
        return trainer_step(self, batch_size, *args, **kwargs)

    def spy_update(self, index, weight, grad, state):
        adam_update(self, index, weight, grad, state)
        updates.append((self._index_update_count[index], self.lr, self.epsilon, self.clip_gradient))

    monkeypatch.setattr(gluon.Trainer, "step", spy_step)
    monkeypatch.setattr(mx.optimizer.Adam, "update", spy_update)
    a = Backend(spec, "ssrn", ops="stock")
    n = len(a.trainer.params)
    for _ in range(2):
        a.train_step(batch)
    b = Backend(spec, "ssrn", ops="stock")
    b.set_weights(a.get_weights())
    b.set_optimizer_state(a.get_optimizer_state())
    b.train_step(batch)
    assert steps == [1, 1, 1] and len(updates) == 3 * n
    for t in (1, 2, 3):
        want = (t, L.learning_rate(spec, t), spec.eps * np.sqrt(1 - spec.beta2 ** t), spec.grad_clip)
        assert all(u == pytest.approx(want, rel=1e-12) for u in updates[(t - 1) * n:t * n]), t
    state = b.get_optimizer_state()
    moments = b.trainer.gluon_trainer._updaters[0].states
    assert int(state["step"]) == b.trainer.optimizer.num_update == 3
    for i, name in enumerate(b.trainer.params):
        assert np.array_equal(state[f"m.{name}"], moments[i][0].asnumpy())
        assert np.array_equal(state[f"v.{name}"], moments[i][1].asnumpy())
