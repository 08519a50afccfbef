"""impl_chainer's two tiers of operators (common.framework.OPS) really differ: the stock tier runs
none of the hand-written code (impl_chainer.conv.Conv1d, impl_chainer.fused, the written-out Adam)
and computes with Chainer's own functions and optimizer instead, synthesis steps included; the
tuned tier still runs its own. (That both compute the spec's numbers: the contract tests, run on
both tiers.)"""
from impl_chainer import runtime  # noqa: F401  (before chainer: its import-time check breaks here)

import chainer
import numpy as np
import pytest
from chainer import function_node
from chainer.optimizer_hooks import GradientHardClipping

from common.contract import losses as L, spec as S
from common.data import text
from impl_chainer import conv, fused, layers as CL, train as T
from impl_chainer.backend import Backend
from tests.backend_contract import random_batch

HAND_WRITTEN = {"Conv1d": (conv.Conv1d, "forward_cpu"), "ChannelNormFn": (fused.ChannelNormFn, "forward_cpu"),
                "HighwayGateFn": (fused.HighwayGateFn, "forward_cpu"), "adam_update": (T, "adam_update")}


def refuse(name):
    def raising(*args, **kwargs):
        raise AssertionError(f"hand-written {name} called")
    return raising


def exercise(backend, batch):
    """Everything a Backend computes: a train step, gradients, forward, synthesis or upsampling."""
    backend.train_step(batch)
    backend.gradients(batch)
    backend.forward(batch)
    if backend.net == "text2mel":
        backend.synthesize(text.text_to_ids("a test.", backend.spec), 6)
    else:
        backend.upsample(batch.mel[0])


@pytest.mark.parametrize("net", S.NETS)
@pytest.mark.parametrize("name", HAND_WRITTEN)
def test_stock_runs_none_of_the_hand_written_code_that_tuned_runs(monkeypatch, name, net):
    spec = S.get_spec("tiny")  # layer norm, highway blocks, clipping
    batch = random_batch(spec, 2, seed=1)
    stock, tuned = Backend(spec, net, ops="stock"), Backend(spec, net)
    monkeypatch.setattr(*HAND_WRITTEN[name], refuse(name))
    exercise(stock, batch)
    with pytest.raises(AssertionError, match=f"hand-written {name} called"):
        tuned.train_step(batch)


def test_stock_convolution_is_chainers_for_every_convolution():
    x = np.zeros((1, 4, 5), np.float32)
    assert conv.conv1d(x, np.zeros((4, 4, 3), np.float32), pad=(2, 0), ops="stock").creator.label == "ConvolutionND"
    assert conv.conv1d(x, np.zeros((4, 4, 3), np.float32), pad=(2, 0)).creator.label == "Conv1d"


@pytest.fixture
def applied(monkeypatch):
    """The labels of every Chainer FunctionNode applied while the test runs (a spy on FunctionNode.apply)."""
    labels = []
    plain_apply = function_node.FunctionNode.apply

    def apply(self, inputs):
        labels.append(self.label)
        return plain_apply(self, inputs)

    monkeypatch.setattr(function_node.FunctionNode, "apply", apply)
    return labels


@pytest.mark.parametrize("variant, expected", [
    ({}, {"ConvolutionND", "LayerNormalization", "Sigmoid"}),  # highway blocks, layer norm
    ({"norm": "batch", "conv": "bottleneck"}, {"ConvolutionND", "FixedBatchNormalization", "ReLU"}),
    ({"conv": "super-sep", "block": "residual"}, {"ConvolutionND", "LayerNormalization", "ReLU"}),
])
def test_stock_synthesis_steps_with_chainer_functions_and_tuned_on_plain_arrays(applied, variant, expected):
    """Stack.step and the attention's steps: chainer.functions in stock (no graph), plain array
    arithmetic in tuned (no FunctionNode at all); both return plain arrays."""
    spec = S.get_spec("tiny", **variant)
    rng = np.random.default_rng(0)
    k, v = (rng.normal(size=(2, spec.D, 7)).astype(np.float32) for _ in range(2))
    bias = np.zeros((2, 7, 1), np.float32)
    for ops in ("stock", "tuned"):
        model = Backend(spec, "text2mel", ops=ops).model
        stack = model.audioenc.layers
        del applied[:]
        with chainer.using_config("train", False):
            q, history = stack.step(rng.normal(size=(2, spec.n_mels, 1)).astype(np.float32), stack.initial_history(2))
            a = model.attention.weights_step(k, q.array, bias)
            r = model.attention.read_step(v, a, q.array)
        assert all(isinstance(h, np.ndarray) for h in history) and isinstance(a, np.ndarray)
        assert isinstance(r, np.ndarray)
        if ops == "stock":
            assert expected | {"MatMul", "Softmax", "Concat"} <= set(applied), set(applied)
            assert not {"Conv1d", "ChannelNormFn", "HighwayGateFn"} & set(applied)
        else:
            assert applied == []


def test_stock_adam_is_chainers_optimizer_with_its_own_state_under_canonical_names(monkeypatch):
    """chainer.optimizers.Adam on the model, GradientHardClipping on every gradient; the optimizer
    state of a checkpoint goes into the optimizer's own t and update rules (t, m, v), copied, and
    comes back out of them after the next step."""
    spec = S.get_spec("tiny", dropout=0.0, grad_clip=1e-3)
    batch = random_batch(spec, 2, seed=2)
    backend = Backend(spec, "ssrn", ops="stock")
    optimizer = backend.trainer.optimizer
    assert type(optimizer) is chainer.optimizers.Adam and optimizer.target is backend.model
    params = CL.canonical_parameters(backend.model)
    assert not any(a.any() for k, a in backend.get_optimizer_state().items() if k != "step")
    rng = np.random.default_rng(3)
    state = {"step": np.array(6, np.int64)}
    for name, p in params.items():
        state[f"m.{name}"] = rng.normal(0, 1e-3, p.shape).astype(np.float32)
        state[f"v.{name}"] = rng.uniform(0, 1e-6, p.shape).astype(np.float32)
    given = {k: a.copy() for k, a in state.items()}
    backend.set_optimizer_state(state)
    assert optimizer.t == 6 and all(p.update_rule.t == 6 for p in params.values())
    for name, p in params.items():
        assert np.array_equal(p.update_rule.state["m"], state[f"m.{name}"])
        assert np.array_equal(p.update_rule.state["v"], state[f"v.{name}"])
    clipped = []
    plain_clip = GradientHardClipping.__call__
    monkeypatch.setattr(GradientHardClipping, "__call__", lambda hook, rule, p: (clipped.append(p),
                                                                                 plain_clip(hook, rule, p)))
    _, grads = backend.gradients(batch)
    before = backend.get_weights()
    backend.train_step(batch)
    assert len(clipped) == len(params)
    assert all(np.array_equal(state[k], given[k]) for k in state)  # the caller's arrays untouched
    assert optimizer.t == 7 and optimizer.alpha == L.learning_rate(spec, 7)
    out = backend.get_optimizer_state()
    assert int(out["step"]) == 7
    after = backend.get_weights()
    for name, p in params.items():
        assert np.array_equal(out[f"m.{name}"], p.update_rule.state["m"])
        assert np.array_equal(out[f"v.{name}"], p.update_rule.state["v"])
        w, m, v = L.adam_update(before[name].astype(np.float64), grads[name], given[f"m.{name}"],
                                given[f"v.{name}"], 7, spec)
        np.testing.assert_allclose(after[name], w, rtol=0, atol=1e-3 * L.learning_rate(spec, 7) + 1e-7, err_msg=name)
        np.testing.assert_allclose(out[f"m.{name}"], m, rtol=1e-5, atol=1e-9, err_msg=name)


def test_stock_trains_on_the_workers_mean_gradient():
    """In a data-parallel job (Trainer.communicator, here a one-process stand-in that sets every
    gradient to a given mean) the stock tier clips and applies Chainer's Adam to that mean, as tuned
    does: the same weights after the step."""
    from tests.chainer.test_distributed import MeanOf

    spec = S.get_spec("tiny", dropout=0.0, grad_clip=1e-3)
    batch = random_batch(spec, 2, seed=4)
    rng = np.random.default_rng(5)
    mean = {name: rng.normal(0, 1e-2, w.shape).astype(np.float32)
            for name, w in Backend(spec, "ssrn").get_weights().items()}
    initial, weights = Backend(spec, "ssrn").get_weights(), []
    for ops in ("tuned", "stock"):
        backend = Backend(spec, "ssrn", ops=ops)
        backend.trainer.join(MeanOf(mean))
        backend.train_step(batch)
        weights.append(backend.get_weights())
    lr = L.learning_rate(spec, 1)
    for name, w in weights[0].items():
        np.testing.assert_allclose(weights[1][name], w, rtol=0, atol=1e-3 * lr + 1e-7, err_msg=name)
        assert not np.array_equal(weights[1][name], initial[name])


@pytest.mark.parametrize("first, then", [("tuned", "stock"), ("stock", "tuned")])
def test_checkpoints_move_between_the_tiers(first, then):
    """Weights and Adam state of one tier, restored into the other, continue as the first goes on
    (up to float32 rounding: the two Adams order their arithmetic differently)."""
    spec = S.get_spec("tiny", dropout=0.0)
    batch = random_batch(spec, 2, seed=6)
    a = Backend(spec, "ssrn", ops=first)
    for _ in range(2):
        a.train_step(batch)
    b = Backend(spec, "ssrn", ops=then)
    b.set_weights(a.get_weights())
    b.set_optimizer_state(a.get_optimizer_state())
    for backend in (a, b):
        backend.train_step(batch)
    sa, sb = a.get_optimizer_state(), b.get_optimizer_state()
    assert int(sa["step"]) == int(sb["step"]) == 3
    lr = L.learning_rate(spec, 3)
    for name, w in a.get_weights().items():
        np.testing.assert_allclose(b.get_weights()[name], w, rtol=0, atol=1e-3 * lr + 1e-6, err_msg=name)
        np.testing.assert_allclose(sb[f"m.{name}"], sa[f"m.{name}"], rtol=1e-4, atol=1e-7, err_msg=name)
