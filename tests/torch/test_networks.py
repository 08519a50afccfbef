"""Every impl_torch sub-network and the full Text2Mel / SSRN against common.reference, same weights.

Tolerances: max abs error <= 1e-5 at `tiny`; relative error (max abs error / max abs
reference) <= 1e-4 at `paper` and `community` (layer norm), on short inputs, eval mode."""
import numpy as np
import pytest
import torch

from common import reference as R, spec as S, weights as W
from impl_torch.backend import NETWORKS
from impl_torch.text2mel import pad_bias, shift_right
from impl_torch.weights import get_weights, set_weights
from tests.backend_contract import random_batch


def model_and_weights(spec, net, seed=0):
    model = NETWORKS[net](spec).eval()
    w = W.init_weights(spec, net, seed)
    set_weights(model, w)
    return model, {k: v.astype(np.float64) for k, v in w.items()}


def assert_close(out, ref, preset):
    out = out.detach().numpy() if torch.is_tensor(out) else out
    assert out.shape == ref.shape
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
    text, mel_in = torch.from_numpy(b.text), torch.from_numpy(R.shift_mel(b.mel))
    k_ref, v_ref = R.text_enc(spec, w, b.text)
    q_ref = R.audio_enc(spec, w, R.shift_mel(b.mel))
    r_ref, a_ref = R.attention(k_ref, v_ref, q_ref, R.pad_bias(b.text))
    with torch.no_grad():
        k, v = model.textenc(text)
        q = model.audioenc(mel_in)
        # each part from the reference's inputs, so errors do not compound
        r, a = model.attention(*(torch.from_numpy(x.astype(np.float32)) for x in (k_ref, v_ref, q_ref)), pad_bias(text))
        logits = model.audiodec(torch.from_numpy(r_ref.astype(np.float32)))
    for out, ref in ((k, k_ref), (v, v_ref), (q, q_ref), (r, r_ref), (a, a_ref), (logits, R.audio_dec(spec, w, r_ref))):
        assert_close(out, ref, preset)


@pytest.mark.parametrize("preset", PRESETS)
def test_full_networks_match_reference(preset):
    spec = S.get_spec(preset)
    b = random_batch(spec)
    t2m, w = model_and_weights(spec, "text2mel")
    ssrn, ws = model_and_weights(spec, "ssrn")
    logits_ref, a_ref = R.text2mel(spec, w, b.text, b.mel)
    with torch.no_grad():
        logits, a = t2m(torch.from_numpy(b.text), torch.from_numpy(b.mel))
        mag_logits = ssrn(torch.from_numpy(b.mel))
    assert_close(logits, logits_ref, preset)
    assert_close(a, a_ref, preset)
    assert_close(mag_logits, R.ssrn(spec, ws, b.mel), preset)
    assert mag_logits.shape[2] == spec.r * b.mel.shape[2]


@pytest.mark.parametrize("variant", [{"conv": "sep"}, {"conv": "super-sep"}, {"alpha": 0.5}, {"r": 2}, {"norm": "none"},
                                     {"conv": "bottleneck"}, {"block": "residual"}, {"norm": "batch"}])
def test_variants_match_reference(variant):
    spec = S.get_spec("tiny", **variant)
    b = random_batch(spec)
    t2m, w = model_and_weights(spec, "text2mel")
    ssrn, ws = model_and_weights(spec, "ssrn")
    with torch.no_grad():
        logits, _ = t2m(torch.from_numpy(b.text), torch.from_numpy(b.mel))
        mag_logits = ssrn(torch.from_numpy(b.mel))
    assert_close(logits, R.text2mel(spec, w, b.text, b.mel)[0], "tiny")
    assert_close(mag_logits, R.ssrn(spec, ws, b.mel), "tiny")


def test_shift_right_is_the_references_teacher_forcing_shift():
    mel = np.random.default_rng(0).random((2, 3, 5), dtype=np.float32)
    np.testing.assert_array_equal(shift_right(torch.from_numpy(mel)).numpy(), R.shift_mel(mel))


def test_text2mel_is_causal():
    """Changing mel frame t never changes outputs at frames <= t (the shift adds one frame)."""
    spec = S.get_spec("tiny")
    model, _ = model_and_weights(spec, "text2mel")
    b = random_batch(spec, n_frames=24)
    text, mel = torch.from_numpy(b.text), torch.from_numpy(b.mel)
    with torch.no_grad():
        logits, a = model(text, mel)
        for t in (0, 11, 23):
            changed = mel.clone()
            changed[:, :, t] += 5.0
            logits2, a2 = model(text, changed)
            assert torch.equal(logits2[:, :, : t + 1], logits[:, :, : t + 1])
            assert torch.equal(a2[:, :, : t + 1], a[:, :, : t + 1])
            if t < 23:
                assert not torch.allclose(logits2[:, :, t + 1], logits[:, :, t + 1])


@pytest.mark.parametrize("norm", ["layer", "batch"])
def test_weights_round_trip_and_strictness(norm):
    """get_weights / set_weights cover the parameters and batch norm's running statistics."""
    spec = S.get_spec("tiny", norm=norm)
    model, _ = model_and_weights(spec, "ssrn")
    w = {k: v + np.float32(0.5) if ".norm." in k else v for k, v in get_weights(model).items()}  # not the defaults
    assert {k: v.shape for k, v in w.items()} == S.net_param_shapes(spec, "ssrn")
    assert all(v.dtype == np.float32 for v in w.values())
    other = NETWORKS["ssrn"](spec)
    set_weights(other, w)
    assert all(np.array_equal(a, get_weights(other)[k]) for k, a in w.items())
    if norm == "batch":
        with pytest.raises(W.WeightsError, match=r"missing \['ssrn\.0\.norm\.var'\]"):
            set_weights(other, {k: v for k, v in w.items() if k != "ssrn.0.norm.var"})
    bad = dict(w, extra=np.zeros(1, np.float32))
    del bad["ssrn.0.bias"]
    bad["ssrn.1.weight"] = np.zeros((1, 1, 1), np.float32)
    with pytest.raises(W.WeightsError, match=r"missing \['ssrn\.0\.bias'\] unexpected \['extra'\] misshapen \['ssrn\.1\.weight"):
        set_weights(other, bad)
