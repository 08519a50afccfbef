"""The framework-neutral layer tests (tests/layer_contract.py), run on impl_torch in each tier of
operators (common.framework.OPS: the modes)."""
import numpy as np
import torch

from common.framework import OPS
from impl_torch import layers as TL
from impl_torch.weights import set_weights
from tests.layer_contract import *  # noqa: F401,F403
from tests.layer_contract import LayerAdapter

MODES = OPS


def ops(mode: str) -> str:
    """The tier of a mode: the modes are the tiers; the contract's mode-less calls ("") the default."""
    return mode or "tuned"


class TorchLayers(LayerAdapter):
    def block(self, spec, layer, weights, mode):
        block = TL.BLOCKS[layer.kind](spec, layer, ops(mode))
        set_weights(block, weights)
        return block.eval()

    def stack(self, spec, layer_list, weights, mode):
        stack = TL.build_stack(spec, layer_list, ops(mode))
        set_weights(stack, weights)
        return stack.eval()

    def forward(self, module, x, train=False):
        module.train(train)
        try:
            with torch.no_grad():
                return module(torch.from_numpy(x)).numpy()
        finally:
            module.eval()

    def gradients(self, module, x, upstream, train=False):
        module.train(train)
        module.zero_grad()
        x = torch.from_numpy(x).requires_grad_()
        try:
            (module(x) * torch.from_numpy(upstream)).sum().backward()
        finally:
            module.eval()
        return x.grad.numpy(), {name: p.grad.numpy().copy() for name, p in TL.canonical_parameters(module).items()}

    def statistics(self, module):
        return {name: b.numpy().copy() for name, b in TL.canonical_statistics(module).items()}

    def names(self, module):
        return ({k: tuple(p.shape) for k, p in TL.canonical_parameters(module).items()},
                {k: tuple(b.shape) for k, b in TL.canonical_statistics(module).items()})

    def step_through(self, stack, x):
        x = torch.from_numpy(x)
        history, frames = stack.initial_history(x.shape[0]), []
        with torch.no_grad():
            for t in range(x.shape[2]):
                y, history = stack.step(x[:, :, t:t + 1], history)
                frames.append(y)
        return torch.cat(frames, 2).numpy()

    def step_block(self, block, x):
        history = torch.zeros(x.shape[0], block.history_channels, block.layer.pad[0])
        return block.step(torch.from_numpy(x), history)

    def initial_history(self, stack, batch_size):
        return stack.initial_history(batch_size)


ADAPTER = TorchLayers()
