"""The framework-neutral network and synthesis tests (tests/network_contract.py), run on impl_chainer."""
from impl_chainer import runtime  # noqa: F401  (before chainer: its import-time check breaks here)

import chainer

from common.framework import OPS
from impl_chainer import synthesize
from impl_chainer.backend import NETWORKS
from impl_chainer.text2mel import pad_bias, shift_right
from impl_chainer.weights import get_weights, set_weights
from tests.network_contract import *  # noqa: F401,F403
from tests.network_contract import NetworkAdapter


def arrays(*variables):
    return tuple(chainer.as_array(v) for v in variables)


MODES = OPS  # every network and synthesis test on both tiers of operators


class ChainerNetworks(NetworkAdapter):
    """`mode` is the tier of operators (common.framework.OPS; "" where a contract test names none: tuned)."""

    synthesis = synthesize

    def model(self, spec, net, weights, mode):
        model = NETWORKS[net](spec, mode or "tuned")
        set_weights(model, weights)
        return model

    def text2mel(self, model, text, mel):
        eval_mode, no_graph = synthesize.inference()
        with eval_mode, no_graph:
            return arrays(*model(text, mel))

    def ssrn(self, model, mel):
        eval_mode, no_graph = synthesize.inference()
        with eval_mode, no_graph:
            return model(mel).array

    def parts(self, model, text, mel_in, k, v, q, r):
        eval_mode, no_graph = synthesize.inference()
        with eval_mode, no_graph:
            return arrays(*model.textenc(text), model.audioenc(mel_in.astype("float32")),
                          *model.attention(k, v, q, pad_bias(text)), model.audiodec(r))

    def shift_right(self, mel):
        return chainer.as_array(shift_right(mel))

    def get_weights(self, model):
        return get_weights(model)

    def set_weights(self, model, weights):
        set_weights(model, weights)

    def force_incremental(self, columns, prev, n_text, mode):
        return synthesize.force_incremental(columns, prev, n_text)

    def assert_nothing_recorded(self, model):
        assert all(p.grad is None for p in model.params())
        assert chainer.config.train and chainer.config.enable_backprop  # the defaults, restored


ADAPTER = ChainerNetworks()
