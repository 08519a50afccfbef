"""The framework-neutral layer tests (tests/layer_contract.py), run on impl_chainer."""
from impl_chainer import runtime  # noqa: F401  (before chainer: its import-time check breaks here)

import chainer
import chainer.functions as F
import numpy as np

from common.framework import OPS
from impl_chainer import layers as CL
from impl_chainer.weights import set_weights
from tests.layer_contract import *  # noqa: F401,F403
from tests.layer_contract import LayerAdapter


MODES = OPS  # every layer test on both tiers of operators


class ChainerLayers(LayerAdapter):
    """Chainer has no per-link mode: chainer.config.train decides (dropout, batch norm), so the
    "eval mode" the contract asks for is the default of every call below. `mode` is the tier of
    operators (common.framework.OPS; "" where a contract test names none: tuned)."""

    def block(self, spec, layer, weights, mode):
        block = CL.BLOCKS[layer.kind](spec, layer, mode or "tuned")
        set_weights(block, weights)
        return block

    def stack(self, spec, layer_list, weights, mode):
        stack = CL.build_stack(spec, layer_list, mode or "tuned")
        set_weights(stack, weights)
        return stack

    def forward(self, module, x, train=False):
        with chainer.using_config("train", train), chainer.using_config("enable_backprop", False):
            return module(x).array

    def gradients(self, module, x, upstream, train=False):
        module.cleargrads()
        x = chainer.Variable(x)
        with chainer.using_config("train", train):
            F.sum(module(x) * upstream).backward()
        return x.grad, {name: p.grad.copy() for name, p in CL.canonical_parameters(module).items()}

    def statistics(self, module):
        return {name: np.array(a) for name, a in CL.canonical_statistics(module).items()}

    def names(self, module):
        return ({k: tuple(p.shape) for k, p in CL.canonical_parameters(module).items()},
                {k: tuple(a.shape) for k, a in CL.canonical_statistics(module).items()})

    def step_through(self, stack, x):
        history, frames = stack.initial_history(x.shape[0]), []
        with chainer.using_config("train", False), chainer.using_config("enable_backprop", False):
            for t in range(x.shape[2]):
                y, history = stack.step(x[:, :, t:t + 1], history)
                frames.append(y.array)
        return np.concatenate(frames, 2)

    def step_block(self, block, x):
        history = np.zeros((x.shape[0], block.history_channels, block.layer.pad[0]), np.float32)
        with chainer.using_config("train", False):
            return block.step(x, history)

    def initial_history(self, stack, batch_size):
        return stack.initial_history(batch_size)


ADAPTER = ChainerLayers()
