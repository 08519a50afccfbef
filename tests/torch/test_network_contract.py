"""The framework-neutral network and synthesis tests (tests/network_contract.py), run on impl_torch
in each tier of operators (common.framework.OPS: the modes)."""
import numpy as np
import torch

from common.framework import OPS
from impl_torch import synthesize
from impl_torch.backend import NETWORKS
from impl_torch.text2mel import pad_bias, shift_right
from impl_torch.weights import get_weights, set_weights
from tests.network_contract import *  # noqa: F401,F403
from tests.network_contract import NetworkAdapter

MODES = OPS


def numpy(*tensors):
    return tuple(t.numpy() for t in tensors)


class TorchNetworks(NetworkAdapter):
    synthesis = synthesize

    def model(self, spec, net, weights, mode):
        model = NETWORKS[net](spec, mode or "tuned")  # the contract's mode-less calls (""): the default tier
        set_weights(model, weights)
        return model.eval()

    @torch.no_grad()
    def text2mel(self, model, text, mel):
        return numpy(*model(torch.from_numpy(text), torch.from_numpy(mel)))

    @torch.no_grad()
    def ssrn(self, model, mel):
        return model(torch.from_numpy(mel)).numpy()

    @torch.no_grad()
    def parts(self, model, text, mel_in, k, v, q, r):
        text = torch.from_numpy(text)
        k, v, q, r = (torch.from_numpy(x) for x in (k, v, q, r))
        return numpy(*model.textenc(text), model.audioenc(torch.from_numpy(mel_in)),
                     *model.attention(k, v, q, pad_bias(text)), model.audiodec(r))

    def shift_right(self, mel):
        return shift_right(torch.from_numpy(mel)).numpy()

    def get_weights(self, model):
        return get_weights(model)

    def set_weights(self, model, weights):
        set_weights(model, weights)

    def force_incremental(self, columns, prev, n_text, mode):
        return numpy(*synthesize.force_incremental(*(torch.from_numpy(x) for x in (columns, prev, n_text))))

    def assert_nothing_recorded(self, model):
        assert all(p.grad is None for p in model.parameters()) and not model.training
        assert torch.is_grad_enabled()


ADAPTER = TorchNetworks()
