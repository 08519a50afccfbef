"""Every impl_chainer sub-network and the full Text2Mel / SSRN against common.reference, same weights.

Tolerances: max abs error <= 1e-5 at `tiny`; relative error (max abs error / max abs
reference) <= 1e-4 at `paper` and `community` (layer norm), on short inputs, eval mode."""
from impl_chainer import runtime  # noqa: F401  (before chainer: its import-time check breaks here)

import chainer
import numpy as np
import pytest

from common import reference as R, spec as S, weights as W
from impl_chainer.backend import NETWORKS
from impl_chainer.text2mel import pad_bias
from impl_chainer.weights import get_weights, set_weights
from tests.backend_contract import random_batch


def model_and_weights(spec, net, seed=0):
    model = NETWORKS[net](spec)
    w = W.init_weights(spec, net, seed)
    set_weights(model, w)
    return model, {k: v.astype(np.float64) for k, v in w.items()}


def eval_mode():
    return chainer.using_config("train", False), chainer.using_config("enable_backprop", False)


def assert_close(out, ref, preset):
    out = chainer.as_array(out)
    assert out.shape == ref.shape and out.dtype == np.float32
    err = np.abs(out - ref).max()
    if preset == "tiny":
        assert err <= 1e-5, f"max abs error {err:.3g}"
    else:
        assert err / np.abs(ref).max() <= 1e-4, f"relative error {err / np.abs(ref).max():.3g}"


PRESETS = ["tiny", "paper", "community"]


@pytest.mark.parametrize("preset", PRESETS)
def test_text2mel_parts_match_reference(preset):
    spec = S.get_spec(preset)
    model, w = model_and_weights(spec, "text2mel")
    b = random_batch(spec)
    mel_in = R.shift_mel(b.mel).astype(np.float32)
    k_ref, v_ref = R.text_enc(spec, w, b.text)
    q_ref = R.audio_enc(spec, w, mel_in)
    r_ref, a_ref = R.attention(k_ref, v_ref, q_ref, R.pad_bias(b.text))
    train_off, no_graph = eval_mode()
    with train_off, no_graph:
        k, v = model.textenc(b.text)
        q = model.audioenc(mel_in)
        # each part from the reference's inputs, so errors do not compound
        r, a = model.attention(*(x.astype(np.float32) for x in (k_ref, v_ref, q_ref)), pad_bias(b.text))
        logits = model.audiodec(r_ref.astype(np.float32))
    for out, ref in ((k, k_ref), (v, v_ref), (q, q_ref), (r, r_ref), (a, a_ref), (logits, R.audio_dec(spec, w, r_ref))):
        assert_close(out, ref, preset)


@pytest.mark.parametrize("preset", PRESETS)
def test_full_networks_match_reference(preset):
    spec = S.get_spec(preset)
    b = random_batch(spec)
    t2m, w = model_and_weights(spec, "text2mel")
    ssrn, ws = model_and_weights(spec, "ssrn")
    logits_ref, a_ref = R.text2mel(spec, w, b.text, b.mel)
    train_off, no_graph = eval_mode()
    with train_off, no_graph:
        logits, a = t2m(b.text, b.mel)
        mag_logits = ssrn(b.mel)
    assert_close(logits, logits_ref, preset)
    assert_close(a, a_ref, preset)
    assert_close(mag_logits, R.ssrn(spec, ws, b.mel), preset)
    assert mag_logits.shape[2] == spec.r * b.mel.shape[2]


@pytest.mark.parametrize("variant", [{"conv": "sep"}, {"conv": "super-sep"}, {"alpha": 0.5}, {"r": 2}, {"norm": "none"}])
def test_variants_match_reference(variant):
    spec = S.get_spec("tiny", **variant)
    b = random_batch(spec)
    t2m, w = model_and_weights(spec, "text2mel")
    ssrn, ws = model_and_weights(spec, "ssrn")
    train_off, no_graph = eval_mode()
    with train_off, no_graph:
        logits, _ = t2m(b.text, b.mel)
        mag_logits = ssrn(b.mel)
    assert_close(logits, R.text2mel(spec, w, b.text, b.mel)[0], "tiny")
    assert_close(mag_logits, R.ssrn(spec, ws, b.mel), "tiny")


def test_text2mel_is_causal():
    """Changing mel frame t never changes outputs at frames <= t (the shift adds one frame)."""
    spec = S.get_spec("tiny")
    model, _ = model_and_weights(spec, "text2mel")
    b = random_batch(spec, n_frames=24)
    train_off, no_graph = eval_mode()
    with train_off, no_graph:
        logits, a = (x.array for x in model(b.text, b.mel))
        for t in (0, 11, 23):
            changed = b.mel.copy()
            changed[:, :, t] += 5.0
            logits2, a2 = (x.array for x in model(b.text, changed))
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
    set_weights(other, w)
    assert all(np.array_equal(a, get_weights(other)[k]) for k, a in w.items())
    bad = dict(w, extra=np.zeros(1, np.float32))
    del bad["ssrn.0.bias"]
    bad["ssrn.1.weight"] = np.zeros((1, 1, 1), np.float32)
    with pytest.raises(W.WeightsError, match=r"missing \['ssrn\.0\.bias'\] unexpected \['extra'\] misshapen \['ssrn\.1\.weight"):
        set_weights(other, bad)
    assert all(np.array_equal(a, get_weights(other)[k]) for k, a in w.items())  # a refused set changes nothing


def test_weights_include_the_running_statistics():
    """get_weights / set_weights carry batch norm's running statistics (persistent arrays) beside the
    parameters; a weights dict without them is refused by name."""
    spec = S.get_spec("tiny", norm="batch")
    model, _ = model_and_weights(spec, "ssrn")
    w = get_weights(model)
    assert {k: v.shape for k, v in w.items()} == S.net_param_shapes(spec, "ssrn")
    w["ssrn.0.norm.var"] = np.full_like(w["ssrn.0.norm.var"], 2.5)
    other = NETWORKS["ssrn"](spec)
    set_weights(other, w)
    assert other.layers[0].norm.var.tolist() == [2.5] * spec.C
    del w["ssrn.0.norm.mean"]
    with pytest.raises(W.WeightsError, match=r"missing \['ssrn\.0\.norm\.mean'\]"):
        set_weights(other, w)
