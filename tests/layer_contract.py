"""Framework-neutral tests of the building blocks (impl_<fw>/layers.py) against common.contract.reference,
the same checks for every framework. Each runs them through a small adapter in
tests/<fw>/test_layer_contract.py:

    from tests.layer_contract import *  # noqa: F401,F403
    ADAPTER = TorchLayers()            # the LayerAdapter methods, in the framework's terms
    MODES = ("",)                      # gluon: ("imperative", "hybridized")

Weights are canonical NumPy dicts (common.contract.spec names); inputs and outputs NumPy arrays.
"""
import numpy as np
import pytest

from common.contract import reference as R, spec as S


class LayerAdapter:
    """What the contract needs of a framework. `mode`: one of the module's MODES."""

    def block(self, spec, layer, weights, mode):
        """The block of `layer` (layers.BLOCKS) with `weights` loaded, in eval mode."""
        raise NotImplementedError

    def stack(self, spec, layer_list, weights, mode):
        """layers.build_stack(spec, layer_list) with `weights` loaded, in eval mode."""
        raise NotImplementedError

    def forward(self, module, x, train=False):
        """The module's output on x as NumPy; train: the framework's training mode (dropout on,
        batch norm on the batch's statistics, updating the running ones)."""
        raise NotImplementedError

    def gradients(self, module, x, upstream, train=False) -> tuple:
        """(d L / d x, {canonical name: d L / d parameter} of the trainable parameters) with
        L = sum(upstream * forward(x))."""
        raise NotImplementedError

    def statistics(self, module) -> dict:
        """{canonical name: array} of batch norm's running statistics (layers.canonical_statistics)."""
        raise NotImplementedError

    def names(self, module) -> tuple:
        """({name: shape} of canonical_parameters, {name: shape} of canonical_statistics)."""
        raise NotImplementedError

    def step_through(self, stack, x):
        """The causal stack run one frame at a time (Stack.initial_history, Stack.step) over every
        frame of x, the outputs concatenated in time."""
        raise NotImplementedError

    def step_block(self, block, x):
        """block.step on x with a zero history (the contract passes shapes it must refuse)."""
        raise NotImplementedError

    def initial_history(self, stack, batch_size):
        raise NotImplementedError


@pytest.fixture(scope="module")
def adapter(request):
    return request.module.ADAPTER


def pytest_generate_tests(metafunc):
    """Every test that takes `mode` runs once per mode of the framework's module (MODES)."""
    if "mode" in metafunc.fixturenames:
        metafunc.parametrize("mode", getattr(metafunc.module, "MODES", ("",)))


def random_weights(spec, layers, rng, scale=0.4) -> dict:
    """Random float32 weights (norm gammas around 1 and betas around 0, running variances in
    [0.5, 2]) so that every parameter matters."""
    out = {}
    for layer in layers:
        for name, shape in S.param_shapes(spec, layer).items():
            if name.endswith(".norm.var"):
                a = rng.uniform(0.5, 2.0, shape)
            else:
                a = rng.normal(1.0 if name.endswith(".norm.gamma") else 0.0, scale, shape)
            out[name] = a.astype(np.float32)
    return out


def f64(weights: dict) -> dict:
    return {k: v.astype(np.float64) for k, v in weights.items()}


def close(got, want, tol=1e-5):
    """Within tol of the reference's scale (float32 rounding grows with the values)."""
    want = np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    np.testing.assert_allclose(got, want, rtol=0, atol=tol * max(1.0, float(np.abs(want).max())))


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
CONFIG_IDS = [f"{c[0]}-k{c[3]}-d{c[4]}-{'causal' if c[5] else 'same'}" for c in CONFIGS]
# group norm in groups of 4 or more channels: the variance of fewer values is often so small that
# normalizing by it amplifies float32 rounding past the tolerances (real presets: 16+ channels a group)
VARIANTS = [{"norm": "none"}, {"norm": "layer"}, {"norm": "batch"}, {"norm": "group", "norm_num_groups": 2},
            {"conv": "sep"}, {"conv": "super-sep"}, {"conv": "bottleneck"}, {"conv": "bottleneck", "norm": "batch"}]
VARIANT_IDS = ["+".join(f"{k}={x}" for k, x in v.items()) for v in VARIANTS]


def block_case(adapter, mode, config, variant, seed=0, **changes):
    spec = S.get_spec("tiny", **{"dropout": 0.0, **variant, **changes})
    layer = S.Layer("x", *config)
    w = random_weights(spec, [layer], np.random.default_rng(seed))
    return spec, layer, w, adapter.block(spec, layer, w, mode)


# --- one block -----------------------------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_blocks_match_the_reference(adapter, mode, config, variant):
    spec, layer, w, block = block_case(adapter, mode, config, variant)
    x = np.random.default_rng(1).normal(size=(2, layer.cin, 40)).astype(np.float32)
    y = adapter.forward(block, x)
    assert y.shape == (2, layer.cout, 40)  # "same" / causal padding keeps the length
    close(y, R.layer_forward(spec, f64(w), layer, x.astype(np.float64)))


@pytest.mark.parametrize("config", [CONFIGS[1], CONFIGS[4], CONFIGS[7]],
                         ids=[CONFIG_IDS[1], CONFIG_IDS[4], CONFIG_IDS[7]])
def test_batch_norm_blocks_train_on_the_batchs_statistics_and_update_the_running_ones(adapter, mode, config):
    spec, layer, w, block = block_case(adapter, mode, config, {"norm": "batch"}, norm_momentum=0.3)
    x = np.random.default_rng(2).normal(1.0, 2.0, size=(3, layer.cin, 17)).astype(np.float32)
    stats = {}
    want = R.layer_forward(spec, f64(w), layer, x.astype(np.float64), stats)
    close(adapter.forward(block, x, train=True), want)
    got = adapter.statistics(block)
    assert got.keys() == stats.keys() == {"x.norm.mean", "x.norm.var"}
    for name, value in stats.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
    close(adapter.forward(block, x), R.layer_forward(spec, f64({**w, **stats}), layer, x.astype(np.float64)))


GRADIENT_CASES = [(c, v, train) for c in (CONFIGS[1], CONFIGS[4], CONFIGS[7])
                  for v in ({"norm": "layer"}, {"norm": "batch"}, {"norm": "group", "norm_num_groups": 2},
                            {"conv": "bottleneck"}, {"conv": "super-sep"})
                  for train in (False, True) if train or v.get("norm") == "batch"]


@pytest.mark.parametrize("config, variant, train", GRADIENT_CASES,
                         ids=[f"{c[0]}-d{c[4]}-{'+'.join(f'{k}={x}' for k, x in v.items())}-{'train' if t else 'eval'}"
                              for c, v, t in GRADIENT_CASES])
def test_block_gradients_match_finite_differences_of_the_reference(adapter, mode, config, variant, train):
    """d sum(U * y) / d weights and / d x, each along a random direction, against float64 central
    differences of the reference (in training mode: batch norm on the batch's statistics)."""
    spec, layer, w, block = block_case(adapter, mode, config, variant)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, layer.cin, 12)).astype(np.float32)
    upstream = rng.normal(size=(2, layer.cout, 12))
    dx, grads = adapter.gradients(block, x, upstream.astype(np.float32), train)
    trainable = {k for k in w if not k.endswith((".norm.mean", ".norm.var"))}
    assert grads.keys() == trainable and dx.shape == x.shape
    direction = {k: rng.normal(size=w[k].shape) if k in trainable else 0.0 for k in w}
    x_direction = rng.normal(size=x.shape)

    def objective(sign, weights_moved: bool):
        moved = {k: w[k].astype(np.float64) + sign * 1e-6 * direction[k] * weights_moved for k in w}
        x_moved = x.astype(np.float64) + sign * 1e-6 * x_direction * (not weights_moved)
        return float(np.sum(upstream * R.layer_forward(spec, moved, layer, x_moved, {} if train else None)))

    for weights_moved, analytic in ((True, sum(float(np.sum(grads[k] * direction[k])) for k in trainable)),
                                    (False, float(np.sum(dx * x_direction)))):
        numeric = (objective(1, weights_moved) - objective(-1, weights_moved)) / 2e-6
        assert np.isclose(analytic, numeric, rtol=1e-3), ("weights" if weights_moved else "input", analytic, numeric)


@pytest.mark.parametrize("groups_kind", [S.CONV, S.HIGHWAY], ids=["one group", "highway halves"])
@pytest.mark.parametrize("scale", [3.0, 3e-3], ids=["large", "near eps"])
def test_layer_norm_places_eps_as_the_reference(adapter, mode, groups_kind, scale):
    """Inputs of std 3e-3 make the channel variance ~1e-5, as large as eps: its placement (inside
    the square root, added to the variance) then shows."""
    spec = S.get_spec("tiny", dropout=0.0, norm="layer")
    layer = S.Layer("x", groups_kind, 8, 8, 1, 1, False)
    w = random_weights(spec, [layer], np.random.default_rng(4))
    w["x.bias"][:] = 0
    block = adapter.block(spec, layer, w, mode)
    x = np.random.default_rng(5).normal(0.0, scale, size=(2, 8, 11)).astype(np.float32)
    close(adapter.forward(block, x), R.layer_forward(spec, f64(w), layer, x.astype(np.float64)))


@pytest.mark.parametrize("dilation", [1, 3, 27])
def test_causal_layers_never_look_ahead(adapter, mode, dilation):
    _, _, _, block = block_case(adapter, mode, (S.HIGHWAY, 8, 8, 3, dilation, True, None), {"norm": "layer"})
    x = np.random.default_rng(6).normal(size=(1, 8, 60)).astype(np.float32)
    y = adapter.forward(block, x)
    for t in (0, 30, 59):
        changed = x.copy()
        changed[:, :, t] += 3.0
        y2 = adapter.forward(block, changed)
        np.testing.assert_array_equal(y2[:, :, :t], y[:, :, :t])
        assert not np.allclose(y2[:, :, t], y[:, :, t])  # frame t itself does matter


def test_non_causal_layers_see_both_sides(adapter, mode):
    _, _, _, block = block_case(adapter, mode, (S.HIGHWAY, 8, 8, 3, 3, False, None), {"norm": "none"})
    x = np.random.default_rng(7).normal(size=(1, 8, 20)).astype(np.float32)
    changed = x.copy()
    changed[:, :, 10] += 3.0
    y, y2 = adapter.forward(block, x), adapter.forward(block, changed)
    assert not np.allclose(y[:, :, 7], y2[:, :, 7]) and not np.allclose(y[:, :, 13], y2[:, :, 13])
    np.testing.assert_array_equal(y[:, :, :7], y2[:, :, :7])


@pytest.mark.parametrize("norm", ["none", "layer", "batch"])
@pytest.mark.parametrize("t", [1, 7])
@pytest.mark.parametrize("stride", [2, 3])
def test_deconvolutions_multiply_the_length_exactly(adapter, mode, norm, t, stride):
    spec = S.get_spec("tiny", dropout=0.0, norm=norm)
    layer = S.Layer("x", S.DECONV, 6, 5, stride, stride=stride)
    w = random_weights(spec, [layer], np.random.default_rng(8))
    x = np.random.default_rng(9).normal(size=(2, 6, t)).astype(np.float32)
    y = adapter.forward(adapter.block(spec, layer, w, mode), x)
    assert y.shape == (2, 5, stride * t)
    close(y, R.layer_forward(spec, f64(w), layer, x.astype(np.float64)))


def test_embedding_matches_the_reference(adapter, mode):
    spec = S.get_spec("tiny")
    layer = S.text_enc_layers(spec)[0]
    w = random_weights(spec, [layer], np.random.default_rng(10))
    ids = np.array([[2, 5, 31, 1], [7, 1, 0, 0]], np.int32)
    y = adapter.forward(adapter.block(spec, layer, w, mode), ids)
    np.testing.assert_array_equal(y, R.layer_forward(spec, w, layer, ids).astype(np.float32))


def test_dropout_acts_only_in_training_mode(adapter, mode):
    spec, layer, w, block = block_case(adapter, mode, CONFIGS[2], {"norm": "layer"}, dropout=0.5)
    x = np.random.default_rng(11).normal(size=(2, 8, 30)).astype(np.float32)
    kept = adapter.forward(block, x)
    close(kept, R.layer_forward(spec, f64(w), layer, x.astype(np.float64)))
    dropped = adapter.forward(block, x, train=True)
    assert 0.3 < np.mean(dropped == 0) < 0.7  # about half of the outputs dropped
    survivors = dropped != 0
    close(dropped[survivors], kept[survivors] / (1 - spec.dropout))  # the rest scaled by 1 / (1 - p)


# --- stacks ---------------------------------------------------------------------------------
STACK_VARIANTS = {"default": {}, "super-sep": dict(conv="super-sep"), "bottleneck": dict(conv="bottleneck"),
                  "residual": dict(block="residual"), "batch-norm": dict(norm="batch"),
                  "group-norm": dict(norm="group", norm_num_groups=2),
                  "all three": dict(conv="bottleneck", block="residual", norm="batch", norm_logits=False)}


@pytest.mark.parametrize("variant", STACK_VARIANTS)
@pytest.mark.parametrize("list_fn", [S.audio_enc_layers, S.audio_dec_layers])
def test_causal_stacks_run_frame_by_frame_like_the_whole_sequence(adapter, mode, list_fn, variant):
    """Stack.step (one frame; in the bottleneck variant a history of reduced frames; batch norm on
    its running statistics) equals the whole-sequence forward in eval mode. Weights of std 0.25:
    without a layer norm larger ones grow the activations past float32's 1e-5 agreement."""
    spec = S.get_spec("tiny", dropout=0.0, **STACK_VARIANTS[variant])
    layer_list = list_fn(spec)
    rng = np.random.default_rng(12)
    stack = adapter.stack(spec, layer_list, random_weights(spec, layer_list, rng, scale=0.25), mode)
    x = rng.normal(size=(2, layer_list[0].cin, 25)).astype(np.float32)
    close(adapter.step_through(stack, x), adapter.forward(stack, x))


def test_a_step_takes_exactly_one_frame(adapter, mode):
    _, _, _, block = block_case(adapter, mode, (S.HIGHWAY, 8, 8, 3, 3, True, None), {"norm": "layer"})
    for shape in ((1, 8, 2), (1, 8)):
        with pytest.raises(ValueError, match="one frame"):
            adapter.step_block(block, np.zeros(shape, np.float32))


def test_a_non_causal_stack_refuses_to_step(adapter, mode):
    spec = S.get_spec("tiny")
    layers = S.ssrn_layers(spec)
    stack = adapter.stack(spec, layers, random_weights(spec, layers, np.random.default_rng(13)), mode)
    with pytest.raises(ValueError, match="only causal"):
        adapter.initial_history(stack, 1)


@pytest.mark.parametrize("preset, variant", [("tiny", {}), ("paper", {}), ("tiny", {"conv": "super-sep"}),
                                             ("tiny", {"conv": "bottleneck", "block": "residual", "norm": "batch"})],
                         ids=["tiny", "paper", "super-sep", "all three"])
@pytest.mark.parametrize("net", S.NETS)
def test_canonical_names_and_shapes_are_the_specs(adapter, mode, preset, variant, net):
    """canonical_parameters: the trainable ones; canonical_statistics: batch norm's running ones;
    together the spec's names and shapes."""
    spec = S.get_spec(preset, **variant)
    layers = [layer for group in S.layers(spec, net).values() for layer in group]
    params, stats = adapter.names(adapter.stack(spec, layers, random_weights(spec, layers, np.random.default_rng(0)),
                                                mode))
    assert set(stats) == {k for k in S.net_param_shapes(spec, net) if k.endswith((".norm.mean", ".norm.var"))}
    assert bool(stats) == (spec.norm == "batch")
    assert {**params, **stats} == {k: tuple(v) for k, v in S.net_param_shapes(spec, net).items()}
