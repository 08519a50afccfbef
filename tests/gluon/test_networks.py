"""Every impl_gluon sub-network and the full Text2Mel / SSRN against common.reference, same
weights, imperative and hybridized.

Tolerances: max abs error <= 1e-5 at `tiny`; relative error (max abs error / max abs
reference) <= 1e-4 at `paper` and `community` (layer norm), on short inputs, eval mode
(outside autograd.record(), so no dropout)."""
from impl_gluon import runtime  # noqa: F401  (must precede the first mxnet import)

import mxnet as mx
import numpy as np
import pytest

from common import reference as R, spec as S, weights as W
from impl_gluon.backend import NETWORKS
from impl_gluon.text2mel import pad_bias
from impl_gluon.weights import get_weights, set_weights
from tests.backend_contract import random_batch, variant_weights

MODES = pytest.mark.parametrize("hybridize", [False, True], ids=["imperative", "hybridized"])
PRESETS = ["tiny", "paper", "community"]


def model_and_weights(spec, net, seed=0, hybridize=False, weights=W.init_weights):
    """`weights(spec, net, seed)` draws them (tests.backend_contract.variant_weights: norms and
    running statistics away from 1 and 0)."""
    model = NETWORKS[net](spec)
    model.initialize()
    w = weights(spec, net, seed)
    set_weights(model, w)
    if hybridize:
        model.hybridize(static_alloc=True, static_shape=False)
    return model, {k: v.astype(np.float64) for k, v in w.items()}


def nd(x):
    return mx.nd.array(x, dtype=np.int32 if x.dtype.kind == "i" else np.float32)


def assert_close(out, ref, preset):
    out = out.asnumpy() if isinstance(out, mx.nd.NDArray) else out
    assert out.shape == ref.shape
    err = np.abs(out - ref).max()
    if preset == "tiny":  # absolute for outputs within +-1, relative beyond (fp32 rounding scales with them)
        assert err <= 1e-5 * max(1.0, np.abs(ref).max()), f"max abs error {err:.3g}"
    else:
        assert err / np.abs(ref).max() <= 1e-4, f"relative error {err / np.abs(ref).max():.3g}"


@MODES
@pytest.mark.parametrize("preset", PRESETS)
def test_text2mel_parts_match_reference(preset, hybridize):
    spec = S.get_spec(preset)
    model, w = model_and_weights(spec, "text2mel", hybridize=hybridize)
    b = random_batch(spec)
    k_ref, v_ref = R.text_enc(spec, w, b.text)
    q_ref = R.audio_enc(spec, w, R.shift_mel(b.mel))
    r_ref, a_ref = R.attention(k_ref, v_ref, q_ref, R.pad_bias(b.text))
    k, v = model.textenc(nd(b.text))
    q = model.audioenc(nd(R.shift_mel(b.mel)))
    # each part from the reference's inputs, so errors do not compound
    r, a = model.attention(*(nd(x) for x in (k_ref, v_ref, q_ref)), pad_bias(mx.nd, nd(b.text)))
    logits = model.audiodec(nd(r_ref))
    for out, ref in ((k, k_ref), (v, v_ref), (q, q_ref), (r, r_ref), (a, a_ref), (logits, R.audio_dec(spec, w, r_ref))):
        assert_close(out, ref, preset)


@MODES
@pytest.mark.parametrize("preset", PRESETS)
def test_full_networks_match_reference(preset, hybridize):
    spec = S.get_spec(preset)
    b = random_batch(spec)
    t2m, w = model_and_weights(spec, "text2mel", hybridize=hybridize)
    ssrn, ws = model_and_weights(spec, "ssrn", hybridize=hybridize)
    logits_ref, a_ref = R.text2mel(spec, w, b.text, b.mel)
    logits, a = t2m(nd(b.text), nd(b.mel))
    mag_logits = ssrn(nd(b.mel))
    assert_close(logits, logits_ref, preset)
    assert_close(a, a_ref, preset)
    assert_close(mag_logits, R.ssrn(spec, ws, b.mel), preset)
    assert mag_logits.shape[2] == spec.r * b.mel.shape[2]


@MODES
def test_hybridized_graph_serves_other_lengths(hybridize):
    """static_shape is off: one cached graph runs batches of other sizes and lengths, still exact."""
    spec = S.get_spec("tiny")
    t2m, w = model_and_weights(spec, "text2mel", hybridize=hybridize)
    for shape in ((2, 12, 10), (3, 16, 12), (1, 20, 1)):
        b = random_batch(spec, *shape)
        logits, a = t2m(nd(b.text), nd(b.mel))
        logits_ref, a_ref = R.text2mel(spec, w, b.text, b.mel)
        assert_close(logits, logits_ref, "tiny")
        assert_close(a, a_ref, "tiny")


@MODES
@pytest.mark.parametrize("variant", [{"conv": "sep"}, {"conv": "super-sep"}, {"alpha": 0.5}, {"r": 2}, {"norm": "none"},
                                     {"conv": "bottleneck"}, {"block": "residual"}, {"norm": "batch"},
                                     {"norm": "batch", "r": 8}])
def test_variants_match_reference(variant, hybridize):
    spec = S.get_spec("tiny", **variant)
    b = random_batch(spec)
    t2m, w = model_and_weights(spec, "text2mel", hybridize=hybridize, weights=variant_weights)
    ssrn, ws = model_and_weights(spec, "ssrn", hybridize=hybridize, weights=variant_weights)
    logits, _ = t2m(nd(b.text), nd(b.mel))
    assert_close(logits, R.text2mel(spec, w, b.text, b.mel)[0], "tiny")
    assert_close(ssrn(nd(b.mel)), R.ssrn(spec, ws, b.mel), "tiny")


@MODES
def test_text2mel_is_causal(hybridize):
    """Changing mel frame t never changes outputs at frames <= t (the shift adds one frame)."""
    spec = S.get_spec("tiny")
    model, _ = model_and_weights(spec, "text2mel", hybridize=hybridize)
    b = random_batch(spec, n_frames=24)
    logits, a = (x.asnumpy() for x in model(nd(b.text), nd(b.mel)))
    for t in (0, 11, 23):
        changed = b.mel.copy()
        changed[:, :, t] += 5.0
        logits2, a2 = (x.asnumpy() for x in model(nd(b.text), nd(changed)))
        np.testing.assert_array_equal(logits2[:, :, : t + 1], logits[:, :, : t + 1])
        np.testing.assert_array_equal(a2[:, :, : t + 1], a[:, :, : t + 1])
        if t < 23:
            assert not np.allclose(logits2[:, :, t + 1], logits[:, :, t + 1])


def test_weights_round_trip_and_strictness():
    spec = S.get_spec("tiny")
    model, _ = model_and_weights(spec, "ssrn")
    w = get_weights(model)
    assert {k: v.shape for k, v in w.items()} == S.net_param_shapes(spec, "ssrn")
    assert all(v.dtype == np.float32 for v in w.values())
    other = NETWORKS["ssrn"](spec)
    other.initialize()
    set_weights(other, w)
    assert all(np.array_equal(a, get_weights(other)[k]) for k, a in w.items())
    bad = dict(w, extra=np.zeros(1, np.float32))
    del bad["ssrn.0.bias"]
    bad["ssrn.1.weight"] = np.zeros((1, 1, 1), np.float32)
    with pytest.raises(W.WeightsError, match=r"missing \['ssrn\.0\.bias'\] unexpected \['extra'\] misshapen \['ssrn\.1\.weight"):
        set_weights(other, bad)


@MODES
@pytest.mark.parametrize("norm", ["layer", "batch"])
def test_set_weights_after_a_forward(norm, hybridize):
    """An inference forward leaves MKLDNN-layout conv weights in place; loading new weights into
    them must still work (a plain copy failed with `to.IsDefaultData()`) and take effect (batch
    norm's running statistics too)."""
    spec = S.get_spec("tiny", norm=norm)
    b = random_batch(spec)
    t2m, _ = model_and_weights(spec, "text2mel", hybridize=hybridize)
    ssrn, _ = model_and_weights(spec, "ssrn", hybridize=hybridize)
    t2m(nd(b.text), nd(b.mel))[0].wait_to_read()
    ssrn(nd(b.mel)).wait_to_read()
    w = variant_weights(spec, "text2mel", seed=1)
    ws = variant_weights(spec, "ssrn", seed=1)
    set_weights(t2m, w)
    set_weights(ssrn, ws)
    assert all(np.array_equal(a, get_weights(ssrn)[k]) for k, a in ws.items())
    w64 = {k: v.astype(np.float64) for k, v in w.items()}
    assert_close(t2m(nd(b.text), nd(b.mel))[0], R.text2mel(spec, w64, b.text, b.mel)[0], "tiny")
    assert_close(ssrn(nd(b.mel)), R.ssrn(spec, {k: v.astype(np.float64) for k, v in ws.items()}, b.mel), "tiny")
