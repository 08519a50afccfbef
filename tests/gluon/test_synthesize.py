"""impl_gluon synthesis, what is gluon's own: hybridized or not the same numbers, and the host
copies the frames from the device a block at a time, never a frame at a time. (Everything every framework must do:
tests/network_contract.py, run by test_network_contract.py.)"""
from impl_gluon import runtime  # noqa: F401  (must precede the first mxnet import)

import mxnet as mx
import numpy as np
import pytest

from common.contract import spec as S, synthesis as CS
from common.data import text as TX
from common.contract.weights import init_weights
from impl_gluon.synthesize import synthesize_batch
from tests.gluon.test_network_contract import ADAPTER
from tests.network_contract import positions


def model(net, seed=0, hybridize=False):
    spec = S.get_spec("tiny")
    return ADAPTER.model(spec, net, init_weights(spec, net, seed), "hybridized" if hybridize else "imperative")


def test_hybridized_model_synthesizes_the_same():
    """The whole step is one cached graph when hybridized, imperative operators otherwise
    (TextEnc too). Same numbers either way, for one sentence and for a batch."""
    spec = S.get_spec("tiny")
    texts = [TX.text_to_ids(s, spec) for s in ("hybrid or not.", "a batch of three sentences here.", "short.")]
    plain, hybrid = (synthesize_batch(model("text2mel", 2, hybridize=h), texts, 30) for h in (False, True))
    for p, h in zip(plain, hybrid):
        (mel_p, a_p), (mel_h, a_h) = p, h
        np.testing.assert_allclose(mel_p, mel_h, atol=1e-6, rtol=0)
        np.testing.assert_array_equal(positions(a_p), positions(a_h))
        np.testing.assert_array_equal(p.forced, h.forced)


@pytest.mark.parametrize("hybridize", [False, True], ids=["imperative", "hybridized"])
def test_the_host_copies_a_block_of_frames_at_a_time(hybridize, monkeypatch):
    """No device-to-host copy a frame: 16 frames (too few to read 54 characters, at most 3 a
    frame) are 16 / STOP_CHECK_EVERY blocks, each four copies (mel, attention, positions, forced
    flags); the host checks the ends on its copy of the positions (common.contract.synthesis.collect)."""
    spec = S.get_spec("tiny")
    t2m = model("text2mel", hybridize=hybridize)
    texts = [TX.text_to_ids("a sentence that is too long to be read in sixteen frames", spec)] * 2
    synthesize_batch(t2m, texts, 16)  # builds the cached graphs
    copies = []
    asnumpy = mx.nd.NDArray.asnumpy
    monkeypatch.setattr(mx.nd.NDArray, "asnumpy", lambda self: copies.append(self.shape) or asnumpy(self))
    (mel, _), _ = synthesize_batch(t2m, texts, 16)
    assert mel.shape[1] == 16 and len(copies) == 16 // CS.STOP_CHECK_EVERY * 4
