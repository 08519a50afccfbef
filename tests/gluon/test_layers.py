"""impl_gluon building blocks, each against common.reference (float64) from the same weights,
imperative and hybridized."""
from impl_gluon import runtime  # noqa: F401  (must precede the first mxnet import)

import contextlib

import mxnet as mx
import numpy as np
from mxnet import autograd
import pytest

from common import reference as R, spec as S
from impl_gluon import layers as GL
from impl_gluon.weights import set_weights

MODES = pytest.mark.parametrize("hybridize", [False, True], ids=["imperative", "hybridized"])


def random_weights(spec, layer, rng):
    """Random float32 weights for one layer (norm gammas away from 1 so they matter; batch norm's
    running variances positive)."""
    w = {name: rng.normal(1.0 if name.endswith("gamma") else 0.0, 0.4, shape).astype(np.float32)
         for name, shape in S.param_shapes(spec, layer).items()}
    return {name: rng.uniform(0.5, 2.0, a.shape).astype(np.float32) if name.endswith(".norm.var") else a
            for name, a in w.items()}


def ready(block, weights, hybridize=False):
    block.initialize()
    set_weights(block, weights)
    if hybridize:
        block.hybridize(static_alloc=True, static_shape=False)
    return block


def block_and_weights(spec, layer, seed=0, hybridize=False):
    w = random_weights(spec, layer, np.random.default_rng(seed))
    return ready(GL.BLOCKS[layer.kind](spec, layer), w, hybridize), w


def run_block(block, x):
    """Eval mode: outside autograd.record() MXNet's dropout is off."""
    return block(mx.nd.array(x, dtype=x.dtype)).asnumpy()


CONFIGS = [  # (kind, cin, cout, k, dilation, causal, act)
    (S.CONV, 8, 12, 1, 1, False, "relu"),
    (S.CONV, 8, 12, 3, 1, True, None),
    (S.HIGHWAY, 8, 8, 3, 1, False, None),
    (S.HIGHWAY, 8, 8, 3, 9, False, None),
    (S.HIGHWAY, 8, 8, 3, 27, True, None),
    (S.HIGHWAY, 8, 8, 1, 1, False, None),
    (S.RESIDUAL, 8, 8, 3, 3, False, None),
    (S.RESIDUAL, 8, 8, 3, 9, True, None),
]
VARIANTS = [{"norm": "none"}, {"norm": "layer"}, {"norm": "batch"}, {"conv": "sep"}, {"conv": "super-sep"},
            {"conv": "bottleneck"}, {"conv": "bottleneck", "norm": "batch"}]


def variant_id(variant: dict) -> str:
    return "+".join(f"{k}={v}" for k, v in variant.items())


@MODES
@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c[0]}-k{c[3]}-d{c[4]}-{'causal' if c[5] else 'same'}")
def test_conv_blocks_match_reference(config, variant, hybridize):
    """Eval mode: batch norm on its (random) running statistics."""
    spec = S.get_spec("tiny", dropout=0.0, **variant)
    layer = S.Layer("x", *config)
    block, w = block_and_weights(spec, layer, hybridize=hybridize)
    x = np.random.default_rng(1).normal(size=(2, layer.cin, 40)).astype(np.float32)
    y = run_block(block, x)
    ref = R.layer_forward(spec, {k: v.astype(np.float64) for k, v in w.items()}, layer, x.astype(np.float64))
    assert y.shape == ref.shape == (2, layer.cout, 40)  # "same" / causal padding keeps the length
    np.testing.assert_allclose(y, ref, atol=1e-5, rtol=0)


@MODES
@pytest.mark.parametrize("dilation", [1, 3, 27])
def test_causal_layers_never_look_ahead(dilation, hybridize):
    spec = S.get_spec("tiny", dropout=0.0)
    block, _ = block_and_weights(spec, S.Layer("x", S.HIGHWAY, 8, 8, 3, dilation, True), hybridize=hybridize)
    x = np.random.default_rng(2).normal(size=(1, 8, 60)).astype(np.float32)
    y = run_block(block, x)
    for t in (0, 30, 59):
        changed = x.copy()
        changed[:, :, t] += 3.0
        y2 = run_block(block, changed)
        np.testing.assert_array_equal(y2[:, :, :t], y[:, :, :t])
        assert not np.allclose(y2[:, :, t], y[:, :, t])  # frame t itself does matter


def test_non_causal_layer_sees_both_sides():
    spec = S.get_spec("tiny", dropout=0.0)
    block, _ = block_and_weights(spec, S.Layer("x", S.HIGHWAY, 8, 8, 3, 3, False))
    x = np.random.default_rng(3).normal(size=(1, 8, 20)).astype(np.float32)
    changed = x.copy()
    changed[:, :, 10] += 3.0
    y, y2 = run_block(block, x), run_block(block, changed)
    assert not np.allclose(y[:, :, 7], y2[:, :, 7]) and not np.allclose(y[:, :, 13], y2[:, :, 13])
    np.testing.assert_array_equal(y[:, :, :7], y2[:, :, :7])


@MODES
@pytest.mark.parametrize("norm", ["none", "layer", "batch"])
@pytest.mark.parametrize("t", [1, 7])
def test_deconv_doubles_length_exactly_and_matches_reference(norm, t, hybridize):
    spec = S.get_spec("tiny", dropout=0.0, norm=norm)
    layer = S.Layer("x", S.DECONV, 6, 5, 2, stride=2)
    block, w = block_and_weights(spec, layer, hybridize=hybridize)
    x = np.random.default_rng(4).normal(size=(2, 6, t)).astype(np.float32)
    y = run_block(block, x)
    assert y.shape == (2, 5, 2 * t)
    np.testing.assert_allclose(y, R.layer_forward(spec, w, layer, x.astype(np.float64)), atol=1e-5, rtol=0)


@MODES
@pytest.mark.parametrize("training_form", [False, True], ids=["layer_norm", "differentiable"])
@pytest.mark.parametrize("groups", [1, 2])
def test_channel_norm_alone(groups, training_form, hybridize):
    """Both forms of ChannelNorm (inference: LayerNorm; training: convolutions) equal the
    reference, and their gradients (input, gamma, beta) agree."""
    spec = S.get_spec("tiny")
    norm = GL.ChannelNorm(8, groups, spec.norm_eps)
    norm.initialize()
    rng = np.random.default_rng(5)
    h = rng.normal(2.0, 3.0, size=(2, 8, 11)).astype(np.float32)
    w = {"x.norm.gamma": rng.normal(1, 0.5, 8), "x.norm.beta": rng.normal(0, 0.5, 8)}
    norm.gamma.set_data(mx.nd.array(w["x.norm.gamma"]))
    norm.beta.set_data(mx.nd.array(w["x.norm.beta"]))
    if hybridize:
        norm.hybridize()
    head = rng.normal(size=(2, 8, 11)).astype(np.float32)

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
    assert n == groups
    np.testing.assert_allclose(y, R.norm(spec, w, "x", h.astype(np.float64), groups), atol=1e-5, rtol=0)
    if training_form:
        norm = GL.ChannelNorm(8, groups, spec.norm_eps)  # a fresh block: its graph is traced in the other form
        norm.initialize()
        norm.gamma.set_data(mx.nd.array(w["x.norm.gamma"]))
        norm.beta.set_data(mx.nd.array(w["x.norm.beta"]))
        if hybridize:
            norm.hybridize()
        for got, want in zip(grads, run(False)[2]):
            np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(want).max(), rtol=0)


def test_embedding_matches_reference():
    spec = S.get_spec("tiny")
    layer = S.text_enc_layers(spec)[0]
    block, w = block_and_weights(spec, layer)
    ids = np.array([[2, 5, 31, 1], [7, 1, 0, 0]], np.int32)
    y = run_block(block, ids)
    assert y.shape == (2, spec.E, 4)
    np.testing.assert_array_equal(y, R.layer_forward(spec, w, layer, ids).astype(np.float32))


@MODES
@pytest.mark.parametrize("variant", [{"conv": "none"}, {"conv": "sep"}, {"conv": "super-sep"}, {"conv": "bottleneck"},
                                     {"block": "residual", "norm": "batch"},
                                     {"conv": "bottleneck", "block": "residual", "norm": "batch"}], ids=variant_id)
@pytest.mark.parametrize("list_fn", [S.audio_enc_layers, S.audio_dec_layers])
def test_causal_stack_runs_frame_by_frame_like_the_whole_sequence(list_fn, variant, hybridize):
    """Batch norm on its running statistics; the bottleneck's histories hold reduced frames."""
    spec = S.get_spec("tiny", dropout=0.0, **variant)
    layer_list = list_fn(spec)
    rng = np.random.default_rng(6)
    w = {k: v for layer in layer_list for k, v in random_weights(spec, layer, rng).items()}
    stack = ready(GL.build_stack(spec, layer_list), w, hybridize)
    x = mx.nd.array(rng.normal(size=(2, layer_list[0].cin, 25)))
    whole = stack(x).asnumpy()
    tol = 1e-5 * max(1.0, np.abs(whole).max())  # residual stacks (no gate) grow the activations
    history, frames = stack.initial_history(2), []
    for t in range(25):
        y, history = stack.step(x[:, :, t:t + 1], history)
        frames.append(y.asnumpy())
    np.testing.assert_allclose(np.concatenate(frames, 2), whole, atol=tol, rtol=0)
    # the same steps as one block (one cached graph when hybridized), histories without the Nones
    step = GL.StackStep(stack)
    if hybridize:
        step.hybridize(static_alloc=True, static_shape=True)
    history, frames = [h for h in stack.initial_history(2) if h is not None], []
    for t in range(25):
        y, *history = step(x[:, :, t:t + 1], *history)
        frames.append(y.asnumpy())
    np.testing.assert_allclose(np.concatenate(frames, 2), whole, atol=tol, rtol=0)


def test_non_causal_stack_refuses_to_step():
    spec = S.get_spec("tiny")
    with pytest.raises(ValueError, match="only causal"):
        GL.build_stack(spec, S.ssrn_layers(spec)).initial_history(1)


def test_a_step_takes_exactly_one_frame():
    spec = S.get_spec("tiny")
    stack = GL.build_stack(spec, S.audio_enc_layers(spec))
    stack.initialize()
    x = mx.nd.zeros((2, spec.n_mels, 3))
    with pytest.raises(ValueError, match="one frame"):
        stack.step(x, stack.initial_history(2))


@pytest.mark.parametrize("preset, variant", [("tiny", {}), ("paper", {}), ("tiny", {"conv": "super-sep"}),
                                             ("tiny", {"conv": "bottleneck", "block": "residual", "norm": "batch"})])
@pytest.mark.parametrize("net", S.NETS)
def test_canonical_names_and_shapes_are_the_specs(preset, variant, net):
    """The trainable parameters and the running statistics (without gradient) together."""
    spec = S.get_spec(preset, **variant)
    stack = GL.build_stack(spec, [l for g in S.layers(spec, net).values() for l in g])
    params, stats = GL.canonical_parameters(stack), GL.canonical_statistics(stack)
    assert {k: p.shape for k, p in {**params, **stats}.items()} == S.net_param_shapes(spec, net)
    assert all(k.endswith((".norm.mean", ".norm.var")) for k in stats) and len(stats) == (spec.norm == "batch") * sum(
        k.endswith(".norm.var") for k in S.net_param_shapes(spec, net)) * 2
    assert all(p.grad_req == "null" for p in stats.values()) and all(p.grad_req == "write" for p in params.values())


@MODES
@pytest.mark.parametrize("groups", [1, 2])
def test_batch_norm_alone_in_both_modes(groups, hybridize):
    """Training mode (autograd.record(train_mode=True)): the batch's statistics, and MXNet updates
    the running ones with momentum 1 - spec.norm_momentum and the BIASED variance (the Trainer
    corrects it: test_train); inference: the running ones, untouched. A highway layer (groups=2)
    splits the one normalized array."""
    spec = S.get_spec("tiny", norm="batch")
    layer = S.Layer("x", S.HIGHWAY if groups == 2 else S.CONV, 8, 8, 3)
    block, w = block_and_weights(spec, layer, hybridize=hybridize)
    norm = block.norm
    h = np.random.default_rng(7).normal(2.0, 3.0, size=(3, layer.out, 5)).astype(np.float32)
    parts = norm(mx.nd.array(h))
    assert len(parts) == 1
    np.testing.assert_allclose(parts[0].asnumpy(), R.norm(spec, w, "x", h.astype(np.float64), groups), atol=1e-5)
    assert len(block.normalized(mx.nd, mx.nd.array(h))) == groups
    x = mx.nd.array(h)
    x.attach_grad()
    with autograd.record(train_mode=True):
        y = norm(x)[0]
    y.backward()
    stats = {}
    np.testing.assert_allclose(y.asnumpy(), R.norm(spec, w, "x", h.astype(np.float64), groups, stats), atol=1e-5)
    m, n = spec.norm_momentum, h.shape[0] * h.shape[2]
    np.testing.assert_allclose(norm.mean.data().asnumpy(), stats["x.norm.mean"], rtol=1e-6, atol=1e-7)
    biased = (1 - m) * w["x.norm.var"] + m * h.astype(np.float64).var((0, 2))
    np.testing.assert_allclose(norm.var.data().asnumpy(), biased, rtol=1e-5)
    assert not np.allclose(biased, stats["x.norm.var"], rtol=1e-4)  # the unbiased one differs by m v / (n - 1)
