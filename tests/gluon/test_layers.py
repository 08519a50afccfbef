"""impl_gluon's building blocks where Gluon / MXNet itself is the subject: ChannelNorm's two forms
(and the stock tier's one), StackStep, batch norm's MXNet update, the running statistics as parameters
without gradient, MXNet's own Deconvolution failing where both tiers avoid it.
Every check against common.contract.reference that all frameworks share runs through the contract
(tests/layer_contract.py, test_layer_contract.py: imperative and hybridized)."""
from impl_gluon import runtime  # noqa: F401  (must precede the first mxnet import)

import contextlib

import mxnet as mx
import numpy as np
from mxnet import autograd
import pytest

from common.contract import reference as R, spec as S
from impl_gluon import layers as GL, synthesize as GS
from impl_gluon.ssrn import SSRN
from impl_gluon.weights import set_weights
from tests.layer_contract import random_weights

MODES = pytest.mark.parametrize("hybridize", [False, True], ids=["imperative", "hybridized"])


def ready(block, weights, hybridize=False):
    block.initialize()
    set_weights(block, weights)
    if hybridize:
        block.hybridize(static_alloc=True, static_shape=False)
    return block


def block_and_weights(spec, layer, seed=0, hybridize=False):
    w = random_weights(spec, [layer], np.random.default_rng(seed))
    return ready(GL.BLOCKS[layer.kind](spec, layer), w, hybridize), w


@MODES
@pytest.mark.parametrize("training_form", [False, True], ids=["layer_norm", "differentiable"])
@pytest.mark.parametrize("norm_kind, kind", [("layer", S.CONV), ("layer", S.HIGHWAY), ("group", S.CONV),
                                              ("group", S.HIGHWAY)])
def test_channel_norm_alone(norm_kind, kind, training_form, hybridize):
    """Both forms of ChannelNorm (inference: LayerNorm; training: convolutions), of a layer norm
    and a group norm, equal the reference, and their gradients (input, gamma, beta) agree; they
    return one slice, or a highway layer's two halves."""
    spec = S.get_spec("tiny", norm=norm_kind)
    slices = GL.BLOCKS[kind].norm_slices
    layer = S.Layer("x", kind, 32 // slices, 32 // slices, 3)  # 32 channels: groups of 4 or more
    norm = GL.make_norm(spec, layer)
    norm.initialize()
    rng = np.random.default_rng(5)
    h = rng.normal(2.0, 3.0, size=(2, 32, 11)).astype(np.float32)
    w = {"x.norm.gamma": rng.normal(1, 0.5, 32), "x.norm.beta": rng.normal(0, 0.5, 32)}
    norm.gamma.set_data(mx.nd.array(w["x.norm.gamma"]))
    norm.beta.set_data(mx.nd.array(w["x.norm.beta"]))
    if hybridize:
        norm.hybridize()
    head = rng.normal(size=(2, 32, 11)).astype(np.float32)

    def run(training: bool):
        x = mx.nd.array(h)
        x.attach_grad()
        with autograd.record():
            with GL.norms_for_training() if training else contextlib.nullcontext():
                parts = norm(x)
            y = mx.nd.concat(*parts, dim=1)
        y.backward(mx.nd.array(head))
        return len(parts), y.asnumpy(), [x.grad.asnumpy(), norm.gamma.grad().asnumpy(), norm.beta.grad().asnumpy()]

    n, y, grads = run(training_form)
    assert n == slices
    np.testing.assert_allclose(y, R.norm(spec, w, layer, h.astype(np.float64)), atol=1e-5, rtol=0)
    if training_form:
        norm = GL.make_norm(spec, layer)  # a fresh block: its graph is traced in the other form
        norm.initialize()
        norm.gamma.set_data(mx.nd.array(w["x.norm.gamma"]))
        norm.beta.set_data(mx.nd.array(w["x.norm.beta"]))
        if hybridize:
            norm.hybridize()
        for got, want in zip(grads, run(False)[2]):
            np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(want).max(), rtol=0)


@MODES
@pytest.mark.parametrize("variant", [{}, {"conv": "bottleneck", "block": "residual", "norm": "batch"}],
                         ids=["default", "all three"])
@pytest.mark.parametrize("list_fn", [S.audio_enc_layers, S.audio_dec_layers])
def test_stack_step_runs_the_stacks_steps_as_one_block(list_fn, variant, hybridize):
    """StackStep: Stack.step as one block (one cached graph when hybridized), its histories
    without the Nones of k = 1 layers; the same frames as Stack.step (which the contract checks
    against the whole sequence)."""
    spec = S.get_spec("tiny", dropout=0.0, **variant)
    layer_list = list_fn(spec)
    rng = np.random.default_rng(6)
    stack = ready(GL.build_stack(spec, layer_list), random_weights(spec, layer_list, rng, scale=0.25))
    x = mx.nd.array(rng.normal(size=(2, layer_list[0].cin, 25)))
    history, want = stack.initial_history(2), []
    for t in range(25):
        y, history = stack.step(x[:, :, t:t + 1], history)
        want.append(y.asnumpy())
    want = np.concatenate(want, 2)
    step = GL.StackStep(stack)
    if hybridize:
        step.hybridize(static_alloc=True, static_shape=True)
    history, frames = [h for h in stack.initial_history(2) if h is not None], []
    assert len(history) == sum(step.slots) < len(layer_list)  # audio_enc, audio_dec: some k = 1 layers
    for t in range(25):
        y, *history = step(x[:, :, t:t + 1], *history)
        frames.append(y.asnumpy())
    np.testing.assert_allclose(np.concatenate(frames, 2), want, atol=1e-5 * max(1.0, np.abs(want).max()), rtol=0)


def test_running_statistics_are_parameters_without_gradient():
    """The contract checks the names and shapes; in Gluon the statistics are Parameters too,
    kept out of autograd and the optimizer by grad_req."""
    spec = S.get_spec("tiny", conv="bottleneck", block="residual", norm="batch")
    stack = GL.build_stack(spec, S.audio_dec_layers(spec))
    params, stats = GL.canonical_parameters(stack), GL.canonical_statistics(stack)
    assert stats and all(p.grad_req == "null" for p in stats.values())
    assert all(p.grad_req == "write" for p in params.values())


@MODES
@pytest.mark.parametrize("groups", [1, 2])
def test_batch_norm_alone_in_both_modes(groups, hybridize):
    """Training mode (autograd.record(train_mode=True)): the batch's statistics, and MXNet updates
    the running ones with momentum 1 - spec.norm_momentum and the BIASED variance, the spec's
    unbiased one inside layers.unbiased_running_variance (as every training step runs);
    inference: the running ones, untouched. A highway layer (groups=2) splits the one normalized
    array."""
    spec = S.get_spec("tiny", norm="batch")
    layer = S.Layer("x", S.HIGHWAY if groups == 2 else S.CONV, 8, 8, 3)
    block, w = block_and_weights(spec, layer, hybridize=hybridize)
    norm = block.norm
    h = np.random.default_rng(7).normal(2.0, 3.0, size=(3, layer.out, 5)).astype(np.float32)
    parts = norm(mx.nd.array(h))
    assert len(parts) == 1
    np.testing.assert_allclose(parts[0].asnumpy(), R.norm(spec, w, layer, h.astype(np.float64)), atol=1e-5)
    assert len(block.normalized(mx.nd, mx.nd.array(h))) == groups
    x = mx.nd.array(h)
    x.attach_grad()
    with autograd.record(train_mode=True):
        y = norm(x)[0]
    y.backward()
    stats = {}
    np.testing.assert_allclose(y.asnumpy(), R.norm(spec, w, layer, h.astype(np.float64), stats), atol=1e-5)
    m, n = spec.norm_momentum, h.shape[0] * h.shape[2]
    np.testing.assert_allclose(norm.mean.data().asnumpy(), stats["x.norm.mean"], rtol=1e-6, atol=1e-7)
    biased = (1 - m) * w["x.norm.var"] + m * h.astype(np.float64).var((0, 2))
    np.testing.assert_allclose(norm.var.data().asnumpy(), biased, rtol=1e-5)
    assert not np.allclose(biased, stats["x.norm.var"], rtol=1e-4)  # the unbiased one differs by m v / (n - 1)
    for name in ("mean", "var"):
        getattr(norm, name).set_data(mx.nd.array(w[f"x.norm.{name}"]))
    with GL.unbiased_running_variance([(norm, n)]):  # outside the recording: it scales in place
        with autograd.record(train_mode=True):
            y = norm(x)[0]
        y.backward()
    np.testing.assert_allclose(norm.var.data().asnumpy(), stats["x.norm.var"], rtol=1e-5)
    np.testing.assert_allclose(norm.mean.data().asnumpy(), stats["x.norm.mean"], rtol=1e-6, atol=1e-7)


@MODES
def test_stock_channel_norm_takes_layer_norm_in_training_too(hybridize, monkeypatch):
    """Stock ChannelNorm never takes the tuned training form, even inside norms_for_training (F.LayerNorm
    does the work: spied on, imperative and traced); the tuned one does there."""
    calls = []
    for F in (mx.nd, mx.sym):
        monkeypatch.setattr(F, "LayerNorm", lambda *a, _f=F.LayerNorm, **k: calls.append(1) or _f(*a, **k))
    spec = S.get_spec("tiny", norm="layer")
    layer = S.Layer("x", S.HIGHWAY, 8, 8, 3)
    for ops in ("stock", "tuned"):
        norm = GL.make_norm(spec, layer, ops)
        norm.initialize()
        if hybridize:
            norm.hybridize()
        x = mx.nd.array(np.random.default_rng(8).normal(size=(2, 16, 5)))
        x.attach_grad()
        calls.clear()
        with autograd.record(), GL.norms_for_training():
            y = mx.nd.concat(*norm(x), dim=1)
        y.backward()
        assert len(calls) == (2 if ops == "stock" else 0), ops  # a highway layer's two halves


def mxnet_deconvolution(self, F, x, weight, bias):
    """Deconv the plain way: MXNet's own transposed convolution (stride = kernel)."""
    k = self.layer.stride
    h = F.Deconvolution(x, weight, bias, kernel=(k,), stride=(k,), num_filter=self.layer.out, no_bias=False)
    return self.drop(F, self.normalized(F, h)[0])


@MODES
def test_mxnet_deconvolution_fails_on_a_second_length_on_some_hosts_so_both_tiers_avoid_it(hybridize, monkeypatch):
    """Why stock keeps Deconv's 1x1 convolution (a framework-forced exception): MXNet 1.9.1's own
    Deconvolution (MKLDNN) fails in tiny SSRN's inference at 64 frames after 40, the contract's
    upsample check (network_contract.test_upsample_matches_the_reference_at_every_length), on the
    AMD EPYC hosts (MKLDNN's AVX2 kernels); on an Intel AVX-512 host it works. Where it fails, it
    fails with that error; where it works, it computes the 1x1 convolution's magnitudes. Stock can
    use it once it works on every host."""
    spec = S.get_spec("tiny")
    mel = np.random.default_rng(9).random((spec.n_mels, 64), dtype=np.float32)

    def upsample_lengths(ops):
        mx.random.seed(0)
        ssrn = SSRN(spec, ops)
        ssrn.initialize()
        if hybridize:
            ssrn.hybridize(static_alloc=True, static_shape=False)
        return [GS.upsample(ssrn, mel[:, :t]) for t in (1, 40, 64)]

    ours = upsample_lengths("stock")  # the 1x1 convolution
    assert len(ours) == 3
    monkeypatch.setattr(GL.Deconv, "hybrid_forward", mxnet_deconvolution)
    try:
        theirs = upsample_lengths("stock")
    except mx.base.MXNetError as err:
        assert "weights_desc" in str(err)
    else:
        for a, b in zip(ours, theirs):
            np.testing.assert_allclose(a, b, atol=1e-5)
