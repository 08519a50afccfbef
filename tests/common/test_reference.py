"""The NumPy reference: checked against direct loops, shapes and causality."""
import math

import numpy as np
import pytest

from common.contract import reference as R, spec as S, weights as W


def loop_conv1d(x, w, b, pad, dilation):
    """Convolution by the definition, one output at a time."""
    x = np.pad(x, ((0, 0), (0, 0), pad))
    bsz, _, t = x.shape
    cout, _, k = w.shape
    t_out = t - (k - 1) * dilation
    y = np.zeros((bsz, cout, t_out))
    for i in range(t_out):
        for j in range(k):
            y[:, :, i] += x[:, :, i + j * dilation] @ w[:, :, j].T
    return y + b[None, :, None]


@pytest.mark.parametrize("k, dilation, pad", [(1, 1, (0, 0)), (3, 1, (1, 1)), (3, 9, (18, 0)), (3, 3, (3, 3))])
def test_conv1d_matches_the_definition(k, dilation, pad):
    rng = np.random.default_rng(0)
    x, w, b = rng.normal(size=(2, 5, 30)), rng.normal(size=(4, 5, k)), rng.normal(size=4)
    np.testing.assert_allclose(R.conv1d(x, w, b, pad, dilation), loop_conv1d(x, w, b, pad, dilation), atol=1e-12)


def test_grouped_conv_is_per_group_convs():
    rng = np.random.default_rng(1)
    x, w, b = rng.normal(size=(2, 6, 9)), rng.normal(size=(4, 3, 3)), rng.normal(size=4)
    y = R.conv1d(x, w, b, (1, 1), 1, groups=2)
    np.testing.assert_allclose(y[:, :2], loop_conv1d(x[:, :3], w[:2], b[:2], (1, 1), 1), atol=1e-12)
    np.testing.assert_allclose(y[:, 2:], loop_conv1d(x[:, 3:], w[2:], b[2:], (1, 1), 1), atol=1e-12)


def test_deconv_doubles_length_and_places_taps():
    rng = np.random.default_rng(2)
    x, w, b = rng.normal(size=(1, 3, 4)), rng.normal(size=(3, 5, 2)), rng.normal(size=5)
    y = R.deconv1d(x, w, b)
    assert y.shape == (1, 5, 8)
    for t in range(4):
        for j in range(2):
            np.testing.assert_allclose(y[0, :, 2 * t + j], x[0, :, t] @ w[:, :, j] + b, atol=1e-12)


@pytest.mark.parametrize("norm, kind, groups", [("layer", S.HIGHWAY, 2), ("group", S.CONV, 4), ("group", S.HIGHWAY, 8),
                                               ("group", S.CONV, 2)])
def test_layer_and_group_norm_normalize_each_channel_group_of_a_frame(norm, kind, groups):
    """Layer norm: each highway half; group norm: norm_num_groups=4 groups (of each half), or
    the largest divisor of 4 that divides the channels (10 channels: 2 groups)."""
    s = S.get_spec("tiny", norm=norm)
    cout = 10 if groups == 2 and kind == S.CONV else 8
    layer = S.Layer("x", kind, cout, cout, 3)
    assert S.channel_norm_groups(s, layer) == groups
    h = np.random.default_rng(3).normal(2.0, 3.0, size=(2, layer.out, 5))
    w = {"x.norm.gamma": np.ones(layer.out), "x.norm.beta": np.zeros(layer.out)}
    y = R.norm(s, w, layer, h)
    for group in np.split(y, groups, axis=1):
        np.testing.assert_allclose(group.mean(1), 0, atol=1e-12)
        np.testing.assert_allclose(group.var(1), 1, atol=1e-2)  # v / (v + eps): small groups, small v
    if norm == "group":  # not what the layer norm does
        assert not np.allclose(np.split(R.norm(s.replace(norm="layer"), w, layer, h), groups, axis=1)[0].mean(1), 0)
    assert R.norm(s.replace(norm="none"), {}, layer, h) is h


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_shapes(preset):
    s = S.get_spec(preset)
    rng = np.random.default_rng(4)
    text, mel = rng.integers(2, 32, (2, 7)), rng.random((2, s.n_mels, 6))
    logits, a = R.text2mel(s, W.init_weights(s, "text2mel"), text, mel)
    assert logits.shape == (2, s.n_mels, 6) and a.shape == (2, 7, 6)
    np.testing.assert_allclose(a.sum(1), 1.0, atol=1e-12)
    assert R.ssrn(s, W.init_weights(s, "ssrn"), mel).shape == (2, s.n_mags, 6 * s.r)


def test_text2mel_is_causal_in_time():
    s = S.get_spec("tiny")
    w = W.init_weights(s, "text2mel")
    rng = np.random.default_rng(5)
    text, mel = rng.integers(2, 32, (1, 9)), rng.random((1, s.n_mels, 20))
    logits, a = R.text2mel(s, w, text, mel)
    for t in (0, 7, 19):
        changed = mel.copy()
        changed[:, :, t] += 5.0
        logits2, a2 = R.text2mel(s, w, text, changed)
        # the shift makes output t depend on input frames < t only
        np.testing.assert_array_equal(logits2[:, :, : t + 1], logits[:, :, : t + 1])
        np.testing.assert_array_equal(a2[:, :, : t + 1], a[:, :, : t + 1])
        if t < 19:
            assert not np.allclose(logits2[:, :, t + 1:], logits[:, :, t + 1:])


def test_text_encoder_is_not_causal():
    s = S.get_spec("tiny")
    w = W.init_weights(s, "text2mel")
    text = np.array([[5, 6, 7, 8, 9, 1]])
    k, _ = R.text_enc(s, w, text)
    k2, _ = R.text_enc(s, w, np.array([[5, 6, 7, 8, 20, 1]]))
    assert not np.allclose(k[:, :, 0], k2[:, :, 0])  # a later character changes the first position


@pytest.mark.parametrize("variant", [{"conv": "sep"}, {"conv": "super-sep"}, {"norm": "batch"}, {"alpha": 0.5}, {"r": 2},
                                     {"conv": "bottleneck"}, {"block": "residual"}])
def test_variants_run(variant):
    s = S.get_spec("tiny", **variant)
    mel = np.random.default_rng(6).random((1, s.n_mels, 5))
    assert R.ssrn(s, W.init_weights(s, "ssrn"), mel).shape == (1, s.n_mags, 5 * s.r)


def test_bottleneck_is_a_reduction_then_the_convolution():
    s = S.get_spec("tiny", conv="bottleneck", norm="none")
    layer = S.layers(s, "text2mel")["audioenc"][3]  # HC(d, 3, dil=1), causal
    w = {k: v.astype(np.float64) for k, v in W.init_weights(s, "text2mel").items() if k.startswith(layer.name + ".")}
    x = np.random.default_rng(1).standard_normal((2, layer.cin, 7))
    z = np.einsum("oc,bct->bot", w[f"{layer.name}.reduce.weight"][:, :, 0], x)
    h = R.conv1d(z, w[f"{layer.name}.weight"], w[f"{layer.name}.bias"], layer.pad, layer.dilation)
    gate = R.sigmoid(h[:, :layer.cout])
    np.testing.assert_allclose(R.layer_forward(s, w, layer, x), gate * h[:, layer.cout:] + (1 - gate) * x, rtol=1e-12)


def test_residual_block_adds_the_rectified_branch_and_batch_norm_uses_running_statistics():
    s = S.get_spec("tiny", block="residual", norm="batch")
    layer = S.layers(s, "ssrn")["ssrn"][1]
    rng = np.random.default_rng(2)
    w = {k: v.astype(np.float64) for k, v in W.init_weights(s, "ssrn").items() if k.startswith(layer.name + ".")}
    w[f"{layer.name}.norm.mean"], w[f"{layer.name}.norm.var"] = rng.standard_normal(layer.cout), rng.random(layer.cout) + 0.5
    x = rng.standard_normal((2, layer.cin, 6))
    h = R.conv1d(x, w[f"{layer.name}.weight"], w[f"{layer.name}.bias"], layer.pad, layer.dilation)
    h = (h - w[f"{layer.name}.norm.mean"][:, None]) / np.sqrt(w[f"{layer.name}.norm.var"][:, None] + s.norm_eps)
    np.testing.assert_allclose(R.layer_forward(s, w, layer, x), x + np.maximum(h, 0), rtol=1e-12)


def test_positional_attention_adds_the_encodings_to_the_logits_only():
    """(K + w PK)^T (Q + w PQ) / sqrt(d) + bias, computed one logit at a time from the definition
    of the encodings; R' = [V A, Q] reads the plain Q."""
    s = S.get_spec("tiny", position="sinusoid", position_rate=1.7, position_weight=0.6)
    rng = np.random.default_rng(3)
    d, n, t = s.D, 7, 5
    k, v, q = rng.standard_normal((2, d, n)), rng.standard_normal((2, d, n)), rng.standard_normal((2, d, t))
    bias = R.pad_bias(np.array([[5] * n, [5] * 4 + [S.PAD] * 3]))

    def encoding(p):
        return np.array([(math.sin if i % 2 == 0 else math.cos)(p / 10000 ** (2 * (i // 2) / d)) for i in range(d)])

    logits = np.array([[[(k[b, :, i] + 0.6 * encoding(1.7 * i)) @ (q[b, :, j] + 0.6 * encoding(j)) / math.sqrt(d)
                         + bias[b, i, 0] for j in range(t)] for i in range(n)] for b in range(2)])
    want = np.exp(logits - logits.max(1, keepdims=True))
    want /= want.sum(1, keepdims=True)
    r, a = R.attention(s, k, v, q, bias)
    np.testing.assert_allclose(a, want, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(r, np.concatenate([np.einsum("bdn,bnt->bdt", v, want), q], axis=1), rtol=1e-12)
    assert not np.allclose(R.attention(s.replace(position="none"), k, v, q, bias)[1], a)
