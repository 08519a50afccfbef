"""impl_chainer building blocks, each against common.reference (float64) from the same weights."""
from impl_chainer import runtime  # before chainer: its import-time check breaks here

import chainer
import numpy as np
import pytest

from common import reference as R, spec as S
from impl_chainer import layers as CL
from impl_chainer.weights import set_weights


def random_weights(spec, layer, rng):
    """Random float32 weights for one layer (norm gammas away from 1 so they matter; batch norm's
    running variances in [0.5, 2])."""
    return {name: (rng.uniform(0.5, 2.0, shape) if name.endswith(".norm.var") else
                   rng.normal(1.0 if name.endswith("gamma") else 0.0, 0.4, shape)).astype(np.float32)
            for name, shape in S.param_shapes(spec, layer).items()}


def block_and_weights(spec, layer, seed=0):
    block = CL.BLOCKS[layer.kind](spec, layer)
    w = random_weights(spec, layer, np.random.default_rng(seed))
    set_weights(block, w)
    return block, w


def run_block(block, x):
    with chainer.using_config("train", False), chainer.using_config("enable_backprop", False):
        return block(x).array


CONFIGS = [  # (kind, cin, cout, k, dilation, causal, act)
    (S.CONV, 8, 12, 1, 1, False, "relu"),
    (S.CONV, 8, 12, 3, 1, True, None),
    (S.HIGHWAY, 8, 8, 3, 1, False, None),
    (S.HIGHWAY, 8, 8, 3, 9, False, None),
    (S.HIGHWAY, 8, 8, 3, 27, True, None),
    (S.HIGHWAY, 8, 8, 1, 1, False, None),
    (S.RESIDUAL, 8, 8, 3, 3, True, None),
    (S.RESIDUAL, 8, 8, 3, 1, False, None),
]
VARIANTS = [{"norm": "none"}, {"norm": "layer"}, {"norm": "batch"}, {"conv": "sep"}, {"conv": "super-sep"},
            {"conv": "bottleneck"}, {"conv": "bottleneck", "norm": "batch"}]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "+".join(v.values()))
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


@pytest.mark.parametrize("variant, kind, train", [
    ({}, S.HIGHWAY, False),  # layer norm of each half, gate
    ({"norm": "batch"}, S.HIGHWAY, True),  # F.batch_normalization on the batch's statistics
    ({"norm": "batch"}, S.HIGHWAY, False),  # F.fixed_batch_normalization on the running ones
    ({"conv": "bottleneck", "norm": "batch"}, S.RESIDUAL, True),
])
def test_block_gradients_match_finite_differences(variant, kind, train):
    """Backward of a normalized causal block, in float64: the analytic derivative along random
    directions of (input, parameters) equals the central difference, in training mode too
    (batch norm then differentiates through the batch's statistics). (chainer.gradient_check
    needs pkg_resources, which is gone.)"""
    spec = S.get_spec("tiny", dropout=0.0, **variant)
    block, _ = block_and_weights(spec, S.Layer("x", kind, 4, 4, 3, 3, True))
    params = [p for _, p in sorted(block.namedparams())]
    rng = np.random.default_rng(7)
    for p in params:
        p.array = p.array.astype(np.float64)
    for key, a in CL.canonical_statistics(block).items():  # the running statistics, as float64 too
        setattr(block.norm, key.rsplit(".", 1)[1], a.astype(np.float64))
    x, gy = chainer.Variable(rng.normal(size=(2, 4, 9))), rng.normal(size=(2, 4, 9))
    with chainer.using_config("train", train):
        y = block(x)
        y.grad = gy
        y.backward()
        arrays, grads = [x.array] + [p.array for p in params], [x.grad] + [p.grad for p in params]
        for _ in range(3):
            dirs = [rng.normal(size=a.shape) for a in arrays]
            analytic = sum(np.sum(g * d) for g, d in zip(grads, dirs))
            values = []
            for sign in (1, -1):
                for a, d in zip(arrays, dirs):
                    a += sign * 1e-6 * d
                values.append(np.sum(gy * block(x.array).array))
                for a, d in zip(arrays, dirs):
                    a -= sign * 1e-6 * d
            np.testing.assert_allclose((values[0] - values[1]) / 2e-6, analytic, rtol=1e-6)


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
@pytest.mark.parametrize("scale", [3.0, 3e-3])  # 3e-3: the variance is near eps, so eps's placement matters
def test_channel_norm_alone(groups, scale):
    spec = S.get_spec("tiny")
    norm = CL.ChannelNorm(8, groups, spec.norm_eps)
    rng = np.random.default_rng(5)
    h = rng.normal(2.0, scale, size=(2, 8, 11)).astype(np.float32)
    w = {"x.norm.gamma": rng.normal(1, 0.5, 8), "x.norm.beta": rng.normal(0, 0.5, 8)}
    norm.gamma.array[...] = w["x.norm.gamma"]
    norm.beta.array[...] = w["x.norm.beta"]
    y = run_block(norm, h)
    tol = 1e-5 if scale > 1 else 1e-3  # float32 loses digits subtracting a mean of 2 from values 2 +- 3e-3
    np.testing.assert_allclose(y, R.norm(spec, w, "x", h.astype(np.float64), groups), atol=tol, rtol=0)
    assert y.std() > 0.3  # normalized, not flattened by too large an eps


def test_embedding_matches_reference():
    spec = S.get_spec("tiny")
    layer = S.text_enc_layers(spec)[0]
    block, w = block_and_weights(spec, layer)
    ids = np.array([[2, 5, 31, 1], [7, 1, 0, 0]], np.int32)
    y = run_block(block, ids)
    assert y.shape == (2, spec.E, 4)
    np.testing.assert_array_equal(y, R.layer_forward(spec, w, layer, ids).astype(np.float32))


@pytest.mark.parametrize("variant", [{}, {"conv": "bottleneck", "block": "residual", "norm": "batch"}],
                         ids=["default", "variants"])
@pytest.mark.parametrize("list_fn", [S.audio_enc_layers, S.audio_dec_layers])
def test_causal_stack_runs_frame_by_frame_like_the_whole_sequence(list_fn, variant):
    spec = S.get_spec("tiny", dropout=0.0, **variant)
    layer_list = list_fn(spec)
    stack = CL.build_stack(spec, layer_list)
    rng = np.random.default_rng(6)
    set_weights(stack, {k: v for layer in layer_list for k, v in random_weights(spec, layer, rng).items()})
    x = rng.normal(size=(2, layer_list[0].cin, 25)).astype(np.float32)
    with chainer.using_config("train", False), chainer.using_config("enable_backprop", False):
        whole = stack(x).array
        history, frames = stack.initial_history(2), []
        for t in range(25):
            y, history = stack.step(x[:, :, t:t + 1], history)
            frames.append(y.array)
    # residual blocks without a layer norm let the values grow (to ~500 here): float32's relative precision
    np.testing.assert_allclose(np.concatenate(frames, 2), whole, atol=1e-5 * max(1.0, np.abs(whole).max()), rtol=0)


def test_non_causal_stack_refuses_to_step():
    spec = S.get_spec("tiny")
    with pytest.raises(ValueError, match="only causal"):
        CL.build_stack(spec, S.ssrn_layers(spec)).initial_history(1)


@pytest.mark.parametrize("preset, variant", [
    ("tiny", {}), ("paper", {}), ("tiny", {"conv": "super-sep"}), ("tiny", {"conv": "bottleneck"}),
    ("tiny", {"block": "residual"}), ("tiny", {"norm": "batch"}), ("paper", {"conv": "bottleneck", "norm": "batch"})])
@pytest.mark.parametrize("net", S.NETS)
def test_canonical_names_and_shapes_are_the_specs(preset, variant, net):
    """Parameters and running statistics together are the spec's names and shapes; only the
    parameters are trainable (Parameters), the statistics persistent arrays."""
    spec = S.get_spec(preset, **variant)
    stack = CL.build_stack(spec, [l for g in S.layers(spec, net).values() for l in g])
    params, stats = CL.canonical_parameters(stack), CL.canonical_statistics(stack)
    shapes = S.net_param_shapes(spec, net)
    assert {k: p.shape for k, p in params.items()} == {k: v for k, v in shapes.items()
                                                       if not k.endswith((".norm.mean", ".norm.var"))}
    assert {k: a.shape for k, a in stats.items()} == {k: v for k, v in shapes.items() if k not in params}
    assert bool(stats) == (spec.norm == "batch")
    assert all(isinstance(a, np.ndarray) for a in stats.values())
    assert {id(a) for a in stats.values()}.isdisjoint(id(p.array) for p in stack.params())


def test_dropout_only_in_train_mode():
    spec = S.get_spec("tiny", dropout=0.5)
    block, _ = block_and_weights(spec, S.Layer("x", S.CONV, 8, 8, 1))
    x = np.random.default_rng(8).normal(size=(2, 8, 50)).astype(np.float32)
    eval_out = run_block(block, x)
    with chainer.using_config("train", True):
        train_out = block(x).array
    dropped = train_out == 0
    assert 0.3 < dropped.mean() < 0.7  # about half the outputs dropped ...
    np.testing.assert_allclose(train_out[~dropped], 2 * eval_out[~dropped], rtol=1e-6)  # ... the rest scaled by 2


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_batch_norm_alone(train):
    """chainer.config.train decides: the batch's statistics and a running-statistics update in
    place (momentum, unbiased variance: common.reference.norm with train_stats), or the running
    statistics untouched; step (one frame, plain arrays) is the eval-mode forward."""
    spec = S.get_spec("tiny", norm="batch", norm_momentum=0.3)
    norm = CL.BatchNorm(8, spec.norm_eps, spec.norm_momentum)
    assert sorted(name for name, _ in norm.namedparams()) == ["/beta", "/gamma"]  # the statistics are no parameters
    rng = np.random.default_rng(9)
    h = rng.normal(2.0, 3.0, size=(3, 8, 11)).astype(np.float32)
    w = {"x.norm.gamma": rng.normal(1, 0.5, 8), "x.norm.beta": rng.normal(0, 0.5, 8),
         "x.norm.mean": rng.normal(0, 0.5, 8), "x.norm.var": rng.uniform(0.5, 2, 8)}
    for key, a in (("gamma", norm.gamma.array), ("beta", norm.beta.array), ("mean", norm.mean), ("var", norm.var)):
        a[...] = w[f"x.norm.{key}"]
    mean, var = norm.mean, norm.var
    stats = {} if train else None
    with chainer.using_config("train", train):
        y = norm(h).array
    np.testing.assert_allclose(y, R.norm(spec, w, "x", h.astype(np.float64), 1, stats), atol=1e-5, rtol=0)
    assert norm.mean is mean and norm.var is var  # updated in place, if at all
    np.testing.assert_allclose(mean, stats["x.norm.mean"] if train else w["x.norm.mean"], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(var, stats["x.norm.var"] if train else w["x.norm.var"], rtol=1e-6)
    if not train:
        np.testing.assert_allclose(norm.step(h[:, :, 4]), y[:, :, 4], atol=1e-6, rtol=0)


def test_runtime_threads_and_devices():
    from threadpoolctl import threadpool_info

    try:
        runtime.configure_threads(2)
        assert {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"} == {2}
    finally:
        runtime.configure_threads(1)  # the tests' setting (conftest.py)
    assert {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"} == {1}
    with pytest.raises(ValueError, match="thread count"):
        runtime.configure_threads(0)
    assert runtime.resolve_device("cpu").xp is np
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        runtime.resolve_device("tpu")


def test_gpu_autotuning_turns_cudnn_autotune_on(monkeypatch):
    """What resolve_device("cuda") sets (checked without a GPU: the flag is plain configuration)."""
    monkeypatch.setattr(chainer.global_config, "autotune", False)
    runtime.gpu_autotuning()
    assert chainer.config.autotune is True
