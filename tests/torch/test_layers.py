"""impl_torch building blocks, each against common.reference (float64) from the same weights."""
import numpy as np
import pytest
import torch

from common import reference as R, spec as S
from impl_torch import layers as TL
from impl_torch.weights import set_weights


def random_weights(spec, layer, rng):
    """Random float32 weights for one layer (norm gammas away from 1 so they matter; batch norm's
    running variances positive, away from 1)."""
    return {name: (rng.uniform(0.5, 2.0, shape) if name.endswith(".norm.var") else
                   rng.normal(1.0 if name.endswith("gamma") else 0.0, 0.4, shape)).astype(np.float32)
            for name, shape in S.param_shapes(spec, layer).items()}


def block_and_weights(spec, layer, seed=0):
    block = TL.BLOCKS[layer.kind](spec, layer).eval()
    w = random_weights(spec, layer, np.random.default_rng(seed))
    set_weights(block, w)
    return block, w


def run_block(block, x):
    with torch.no_grad():
        return block(torch.from_numpy(x)).numpy()


CONFIGS = [  # (kind, cin, cout, k, dilation, causal, act)
    (S.CONV, 8, 12, 1, 1, False, "relu"),
    (S.CONV, 8, 12, 3, 1, True, None),
    (S.HIGHWAY, 8, 8, 3, 1, False, None),
    (S.HIGHWAY, 8, 8, 3, 9, False, None),
    (S.HIGHWAY, 8, 8, 3, 27, True, None),
    (S.HIGHWAY, 8, 8, 1, 1, False, None),
    (S.RESIDUAL, 8, 8, 3, 1, False, None),
    (S.RESIDUAL, 8, 8, 3, 27, True, None),
]
VARIANTS = [{"norm": "none"}, {"norm": "layer"}, {"norm": "batch"}, {"conv": "sep"}, {"conv": "super-sep"},
            {"conv": "bottleneck"}, {"conv": "bottleneck", "norm": "batch"}]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "+".join(f"{k}={x}" for k, x in v.items()))
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c[0]}-k{c[3]}-d{c[4]}-{'causal' if c[5] else 'same'}")
def test_conv_blocks_match_reference(config, variant):
    spec = S.get_spec("tiny", dropout=0.0, **variant)
    layer = S.Layer("x", *config)
    block, w = block_and_weights(spec, layer)
    x = np.random.default_rng(1).normal(size=(2, layer.cin, 40)).astype(np.float32)
    y = run_block(block, x)
    ref = R.layer_forward(spec, {k: v.astype(np.float64) for k, v in w.items()}, layer, x.astype(np.float64))
    assert y.shape == ref.shape == (2, layer.cout, 40)  # "same" / causal padding keeps the length
    np.testing.assert_allclose(y, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("dilation", [1, 3, 27])
def test_causal_layers_never_look_ahead(dilation):
    spec = S.get_spec("tiny", dropout=0.0)
    block, _ = block_and_weights(spec, S.Layer("x", S.HIGHWAY, 8, 8, 3, dilation, True))
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


@pytest.mark.parametrize("norm", ["none", "layer", "batch"])
@pytest.mark.parametrize("t", [1, 7])
@pytest.mark.parametrize("stride", [2, 3])
def test_deconv_multiplies_length_exactly_and_matches_reference(norm, t, stride):
    spec = S.get_spec("tiny", dropout=0.0, norm=norm)
    layer = S.Layer("x", S.DECONV, 6, 5, stride, stride=stride)
    block, w = block_and_weights(spec, layer)
    x = np.random.default_rng(4).normal(size=(2, 6, t)).astype(np.float32)
    y = run_block(block, x)
    assert y.shape == (2, 5, stride * t)
    np.testing.assert_allclose(y, R.layer_forward(spec, w, layer, x.astype(np.float64)), atol=1e-5, rtol=0)


@pytest.mark.parametrize("groups", [1, 2])
def test_channel_norm_alone(groups):
    spec = S.get_spec("tiny")
    norm = TL.ChannelNorm(8, groups, spec.norm_eps)
    rng = np.random.default_rng(5)
    h = rng.normal(2.0, 3.0, size=(2, 8, 11)).astype(np.float32)
    w = {"x.norm.gamma": rng.normal(1, 0.5, 8), "x.norm.beta": rng.normal(0, 0.5, 8)}
    with torch.no_grad():
        norm.gamma.copy_(torch.from_numpy(w["x.norm.gamma"]))
        norm.beta.copy_(torch.from_numpy(w["x.norm.beta"]))
        y = norm(torch.from_numpy(h)).numpy()
    np.testing.assert_allclose(y, R.norm(spec, w, "x", h.astype(np.float64), groups), atol=1e-5, rtol=0)


def test_embedding_matches_reference():
    spec = S.get_spec("tiny")
    layer = S.text_enc_layers(spec)[0]
    block, w = block_and_weights(spec, layer)
    ids = np.array([[2, 5, 31, 1], [7, 1, 0, 0]], np.int32)
    y = run_block(block, ids)
    assert y.shape == (2, spec.E, 4) and y.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(y, R.layer_forward(spec, w, layer, ids).astype(np.float32))


STACK_VARIANTS = {"default": {}, "super-sep": dict(conv="super-sep"), "bottleneck": dict(conv="bottleneck"),
                  "residual": dict(block="residual"), "batch-norm": dict(norm="batch"),
                  "all three": dict(conv="bottleneck", block="residual", norm="batch", norm_logits=False)}


@pytest.mark.parametrize("variant", STACK_VARIANTS)
@pytest.mark.parametrize("list_fn", [S.audio_enc_layers, S.audio_dec_layers])
def test_causal_stack_runs_frame_by_frame_like_the_whole_sequence(list_fn, variant):
    """Stack.step (one frame, histories reduced to the bottleneck's width in that variant, batch
    norm on its running statistics) equals the whole-sequence forward in eval mode. In float64:
    random weights without a layer norm grow the activations to ~1e3, where float32's rounding
    differences between the two paths grow as much."""
    spec = S.get_spec("tiny", dropout=0.0, **STACK_VARIANTS[variant])
    layer_list = list_fn(spec)
    stack = TL.build_stack(spec, layer_list).eval()
    rng = np.random.default_rng(6)
    set_weights(stack, {k: v for layer in layer_list for k, v in random_weights(spec, layer, rng).items()})
    stack = stack.double()
    x = torch.from_numpy(rng.normal(size=(2, layer_list[0].cin, 25)))
    with torch.no_grad():
        whole = stack(x)
        history, frames = stack.initial_history(2), []
        for t in range(25):
            y, history = stack.step(x[:, :, t:t + 1], history)
            frames.append(y)
    np.testing.assert_allclose(torch.cat(frames, 2).numpy(), whole.numpy(), atol=1e-8, rtol=1e-9)
    if spec.conv == "bottleneck":
        widths = {b.layer.name: h.shape[1] for b, h in zip(stack, history)}
        assert any(widths[l.name] == S.bottleneck_width(spec, l) < l.cin for l in layer_list)


def test_step_takes_exactly_one_frame():
    spec = S.get_spec("tiny", dropout=0.0)
    layer = S.Layer("x", S.HIGHWAY, 8, 8, 3, 3, True)
    block, _ = block_and_weights(spec, layer)
    history = torch.zeros(1, 8, layer.pad[0])
    for shape in ((1, 8, 2), (1, 8)):
        with pytest.raises(ValueError, match="one frame"):
            block.step(torch.zeros(shape), history)


def test_non_causal_stack_refuses_to_step():
    spec = S.get_spec("tiny")
    with pytest.raises(ValueError, match="only causal"):
        TL.build_stack(spec, S.ssrn_layers(spec)).initial_history(1)


@pytest.mark.parametrize("preset, variant", [("tiny", {}), ("paper", {}), ("tiny", {"conv": "super-sep"}),
                                             ("tiny", {"conv": "bottleneck", "block": "residual", "norm": "batch"})])
@pytest.mark.parametrize("net", S.NETS)
def test_canonical_names_and_shapes_are_the_specs(preset, variant, net):
    """canonical_parameters: the trainable ones; canonical_statistics: batch norm's running
    statistics (buffers); together the spec's names and shapes."""
    spec = S.get_spec(preset, **variant)
    stack = TL.build_stack(spec, [l for g in S.layers(spec, net).values() for l in g])
    params, stats = TL.canonical_parameters(stack), TL.canonical_statistics(stack)
    assert all(p.requires_grad for p in params.values()) and not any(t.requires_grad for t in stats.values())
    assert set(stats) == {k for k in S.net_param_shapes(spec, net) if k.endswith((".norm.mean", ".norm.var"))}
    assert bool(stats) == (spec.norm == "batch")
    assert {k: tuple(p.shape) for k, p in {**params, **stats}.items()} == S.net_param_shapes(spec, net)


def test_initial_history_follows_the_stacks_parameters():
    spec = S.get_spec("tiny")
    stack = TL.build_stack(spec, S.audio_enc_layers(spec)).to(torch.float64)
    history = stack.initial_history(3)
    assert all(h.dtype == torch.float64 and h.device == next(stack.parameters()).device for h in history)
    assert [tuple(h.shape) for h in history] == [(3, l.cin, l.pad[0]) for l in S.audio_enc_layers(spec)]


def batch_norm_and_weights(channels=6, seed=7):
    spec = S.get_spec("tiny", norm="batch", norm_momentum=0.3)
    norm = TL.BatchNorm(channels, spec.norm_eps, spec.norm_momentum)
    rng = np.random.default_rng(seed)
    w = {"x.norm.gamma": rng.normal(1, 0.5, channels), "x.norm.beta": rng.normal(0, 0.5, channels),
         "x.norm.mean": rng.normal(0, 0.5, channels), "x.norm.var": rng.uniform(0.5, 2.0, channels)}
    with torch.no_grad():
        for key in ("gamma", "beta", "mean", "var"):
            getattr(norm, key).copy_(torch.from_numpy(w[f"x.norm.{key}"]))
    return spec, norm, w


def test_batch_norm_alone_in_training_and_eval_mode():
    """Training mode: the batch's statistics over (B, T), running ones updated as
    common.reference.norm's train_stats (momentum, unbiased variance); eval mode and step: the
    running ones, nothing updated; the statistics are buffers, not parameters."""
    spec, norm, w = batch_norm_and_weights()
    h = np.random.default_rng(8).normal(2.0, 3.0, size=(3, 6, 5)).astype(np.float32)
    assert [n for n, _ in norm.named_parameters()] == ["gamma", "beta"]
    assert [n for n, _ in norm.named_buffers()] == ["mean", "var"]
    with torch.no_grad():
        y_eval = norm.eval()(torch.from_numpy(h)).numpy()
        y_step = norm.step(torch.from_numpy(h[:, :, 2])).numpy()
    np.testing.assert_allclose(y_eval, R.norm(spec, w, "x", h.astype(np.float64), 1), atol=1e-5, rtol=0)
    np.testing.assert_allclose(y_step, y_eval[:, :, 2], atol=1e-6, rtol=0)
    assert np.array_equal(norm.mean.numpy(), w["x.norm.mean"].astype(np.float32))  # eval changes nothing
    stats = {}
    ref = R.norm(spec, w, "x", h.astype(np.float64), 1, stats)
    with torch.no_grad():
        y_train = norm.train()(torch.from_numpy(h)).numpy()
    np.testing.assert_allclose(y_train, ref, atol=1e-5, rtol=0)
    np.testing.assert_allclose(norm.mean.numpy(), stats["x.norm.mean"], atol=1e-6, rtol=1e-6)
    np.testing.assert_allclose(norm.var.numpy(), stats["x.norm.var"], atol=1e-6, rtol=1e-6)


def test_make_norm_builds_each_kind():
    for norm, kind in (("none", type(None)), ("layer", TL.ChannelNorm), ("batch", TL.BatchNorm)):
        assert isinstance(TL.make_norm(S.get_spec("tiny", norm=norm), 8, 2), kind)
    assert TL.HighwayConv.norm_groups == 2 and TL.Conv.norm_groups == TL.ResidualConv.norm_groups == 1
