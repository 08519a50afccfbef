"""The framework-neutral layer tests (tests/layer_contract.py), run on impl_gluon, imperative and
hybridized (blocks and stacks one cached graph; a causal stack's steps one hybridized StackStep), in
both tiers of operators (MODES: "imperative" and "hybridized" are the tuned tier's)."""
from impl_gluon import runtime  # noqa: F401  (must precede the first mxnet import)

import mxnet as mx
import numpy as np
from mxnet import autograd

from impl_gluon import layers as GL
from impl_gluon.weights import set_weights
from tests.layer_contract import *  # noqa: F401,F403
from tests.layer_contract import LayerAdapter


def nd(x):
    return mx.nd.array(x, dtype=x.dtype)


def tier(mode: str) -> tuple:
    """A mode of MODES (or the contract's "") -> (ops, hybridized)."""
    ops, _, form = mode.rpartition("-")
    return ops or "tuned", form == "hybridized"


class GluonLayers(LayerAdapter):
    """Eval mode is MXNet's default outside autograd.record(); training mode is
    autograd.record(train_mode=True) with the layer norms in their training form
    (layers.norms_for_training, as train.Objective runs them; stock blocks ignore it). Hybridized, a
    block's graph is traced at its first call, so the ChannelNorm form of that call stays (both forms
    are the same function: test_layers.test_channel_norm_alone)."""

    @staticmethod
    def ready(block, weights, mode):
        block.initialize()
        set_weights(block, weights)
        if tier(mode)[1]:
            block.hybridize(static_alloc=True, static_shape=False)
        return block

    def block(self, spec, layer, weights, mode):
        return self.ready(GL.BLOCKS[layer.kind](spec, layer, tier(mode)[0]), weights, mode)

    def stack(self, spec, layer_list, weights, mode):
        stack = self.ready(GL.build_stack(spec, layer_list, tier(mode)[0]), weights, mode)
        stack.contract_mode = mode  # which steps step_through runs
        return stack

    @staticmethod
    def batch_norm_sizes(module, x) -> list:
        """[(a block's BatchNorm, B T at its layer)] for layers.unbiased_running_variance, which every
        training step runs in (train.Trainer), as MXNet's own running-variance update is biased."""
        blocks = [module] if isinstance(module, GL.Block) else module
        return [(norm, x.shape[0] * x.shape[2] * multiple) for norm, multiple in GL.batch_norm_multiples(blocks)]

    def forward(self, module, x, train=False):
        if not train:
            return module(nd(x)).asnumpy()
        # MXNet's BatchNorm updates its running statistics in the backward pass (train_mode)
        with GL.unbiased_running_variance(self.batch_norm_sizes(module, x)), \
                autograd.record(train_mode=True), GL.norms_for_training():
            y = module(nd(x))
            y.backward(train_mode=True)
        return y.asnumpy()

    def gradients(self, module, x, upstream, train=False):
        sizes = self.batch_norm_sizes(module, x) if train else []
        x = nd(x)
        x.attach_grad()
        with GL.unbiased_running_variance(sizes), autograd.record(train_mode=train), GL.norms_for_training():
            y = module(x)
            y.backward(nd(upstream), train_mode=train)
        return x.grad.asnumpy(), {name: p.grad().asnumpy().copy()
                                  for name, p in GL.canonical_parameters(module).items()}

    def statistics(self, module):
        return {name: p.data().asnumpy().copy() for name, p in GL.canonical_statistics(module).items()}

    def names(self, module):
        return ({k: tuple(p.shape) for k, p in GL.canonical_parameters(module).items()},
                {k: tuple(p.shape) for k, p in GL.canonical_statistics(module).items()})

    def step_through(self, stack, x):
        """Imperative: Stack.step; hybridized: a hybridized StackStep (one cached graph a step,
        histories without the Nones of k = 1 layers)."""
        x, frames = nd(x), []
        if not tier(stack.contract_mode)[1]:
            history = stack.initial_history(x.shape[0])
            for t in range(x.shape[2]):
                y, history = stack.step(x[:, :, t:t + 1], history)
                frames.append(y.asnumpy())
        else:
            step = GL.StackStep(stack)
            step.hybridize(static_alloc=True, static_shape=True)  # hybridizes its child, the stack, too
            history = [h for h in stack.initial_history(x.shape[0]) if h is not None]
            for t in range(x.shape[2]):
                y, *history = step(x[:, :, t:t + 1], *history)
                frames.append(y.asnumpy())
            stack.hybridize(static_alloc=True, static_shape=False)  # the whole-sequence graph as before
        return np.concatenate(frames, 2)

    def step_block(self, block, x):
        history = mx.nd.zeros((block.layer.pad[0], x.shape[0], block.history_channels))
        return block.step(mx.nd, nd(x), history, mx.cpu())

    def initial_history(self, stack, batch_size):
        return stack.initial_history(batch_size)


ADAPTER = GluonLayers()
MODES = ("imperative", "hybridized", "stock-imperative", "stock-hybridized")

