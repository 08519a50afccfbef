"""The framework-neutral network and synthesis tests (tests/network_contract.py), run on impl_gluon,
imperative and hybridized (each network one cached graph; synthesis's step one graph a frame), in both
tiers of operators (MODES: "imperative" and "hybridized" are the tuned tier's)."""
from impl_gluon import runtime  # noqa: F401  (must precede the first mxnet import)

import mxnet as mx
import numpy as np
from mxnet import gluon

from impl_gluon import synthesize
from impl_gluon.backend import NETWORKS
from impl_gluon.text2mel import pad_bias, shift_right
from impl_gluon.weights import get_weights, set_weights
from tests.gluon.test_layer_contract import tier
from tests.network_contract import *  # noqa: F401,F403
from tests.network_contract import NetworkAdapter


def nd(x):
    return mx.nd.array(x, dtype=np.int32 if x.dtype.kind == "i" else np.float32)


def arrays(*nds):
    return tuple(x.asnumpy() for x in nds)


class Forcing(gluon.HybridBlock):
    """force_incremental alone, as a block: imperative (F = mx.nd) or traced (F = mx.sym)."""

    def hybrid_forward(self, F, columns, prev, n_text):
        return synthesize.force_incremental(F, columns, prev, n_text)


class GluonNetworks(NetworkAdapter):
    """Eval mode is MXNet's default outside autograd.record() (no dropout, batch norm's running
    statistics)."""

    synthesis = synthesize

    def model(self, spec, net, weights, mode):
        ops, hybridized = tier(mode)
        model = NETWORKS[net](spec, ops)
        model.initialize()
        set_weights(model, weights)
        if hybridized:
            model.hybridize(static_alloc=True, static_shape=False)
        return model

    def text2mel(self, model, text, mel):
        return arrays(*model(nd(text), nd(mel)))

    def ssrn(self, model, mel):
        return model(nd(mel)).asnumpy()

    def parts(self, model, text, mel_in, k, v, q, r):
        text = nd(text)
        return arrays(*model.textenc(text), model.audioenc(nd(mel_in)),
                      *model.attention(nd(k), nd(v), nd(q), pad_bias(mx.nd, text)), model.audiodec(nd(r)))

    def shift_right(self, mel):
        return shift_right(mx.nd, nd(mel)).asnumpy()

    def get_weights(self, model):
        return get_weights(model)

    def set_weights(self, model, weights):
        set_weights(model, weights)

    def force_incremental(self, columns, prev, n_text, mode):
        forcing = Forcing()
        if tier(mode)[1]:
            forcing.hybridize(static_alloc=True, static_shape=True)
        got_columns, got_positions, got_forced = arrays(*forcing(*(mx.nd.array(x) for x in (columns, prev, n_text))))
        assert np.isin(got_forced, (0, 1)).all()
        return got_columns, got_positions.astype(np.int64), got_forced.astype(bool)

    def assert_nothing_recorded(self, model):
        assert not mx.autograd.is_recording()
        assert all(not p.grad().asnumpy().any() for p in model.collect_params().values() if p.grad_req != "null")


ADAPTER = GluonNetworks()
MODES = ("imperative", "hybridized", "stock-imperative", "stock-hybridized")
