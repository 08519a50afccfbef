"""The spec: presets, hand-counted parameters, layer lists, FLOPs, positional encodings."""
import math

import numpy as np
import pytest

from common.contract import accounting as A, spec as S


def hand_conv(cin, cout, k=1):
    return cin * cout * k + cout


def test_paper_parameter_count_matches_a_count_by_hand():
    e, d, c, f, fp, vocab = 128, 256, 512, 80, 513, 32
    text_enc = (vocab * e + hand_conv(e, 2 * d) + hand_conv(2 * d, 2 * d)
                + 10 * hand_conv(2 * d, 4 * d, 3) + 2 * hand_conv(2 * d, 4 * d, 1))
    audio_enc = hand_conv(f, d) + 2 * hand_conv(d, d) + 10 * hand_conv(d, 2 * d, 3)
    audio_dec = hand_conv(2 * d, d) + 6 * hand_conv(d, 2 * d, 3) + 3 * hand_conv(d, d) + hand_conv(d, f)
    deconv = c * c * 2 + c
    ssrn = (hand_conv(f, c) + 6 * hand_conv(c, 2 * c, 3) + 2 * deconv + hand_conv(c, 2 * c)
            + 2 * hand_conv(2 * c, 4 * c, 3) + hand_conv(2 * c, fp) + 3 * hand_conv(fp, fp))
    spec = S.get_spec("paper")
    assert A.count_params(spec, "text2mel", by_block=True) == {
        "textenc": text_enc, "audioenc": audio_enc, "audiodec": audio_dec}
    assert A.count_params(spec, "ssrn") == ssrn
    # the figures the issue states
    assert (text_enc, audio_enc, audio_dec) == (17_122_304, 4_089_600, 2_711_632)
    assert text_enc + audio_enc + audio_dec == 23_923_536
    assert ssrn == 24_963_591


def test_community_counts_layer_norm_on_top():
    spec = S.get_spec("community")
    assert A.count_params(spec, "text2mel") == 23_970_288  # two public implementations report this
    no_norm = spec.replace(norm="none")
    assert A.count_params(no_norm, "ssrn") == 27_852_295  # F' = 1025


def test_presets_hold_the_sources_values():
    p, c = S.get_spec("paper"), S.get_spec("community")
    assert (p.e, p.d, p.c, p.n_mels, p.n_mags, p.hop, p.win, p.sr, p.r) == (128, 256, 512, 80, 513, 256, 1024, 22050, 4)
    assert (p.gamma, p.eta, p.g, p.lr, p.beta1, p.beta2, p.eps, p.batch_size) == (0.6, 1.3, 0.2, 2e-4, 0.5, 0.9, 1e-6, 16)
    assert (p.norm, p.dropout, p.preemphasis, p.features, p.position) == ("none", 0.0, 0.0, "power", "none")
    assert (c.n_mags, c.hop, c.win, c.preemphasis, c.ref_db, c.max_db) == (1025, 276, 1102, 0.97, 20, 100)
    assert (c.norm, c.dropout, c.gl_power, c.gl_iters, c.lr, c.warmup, c.grad_clip, c.batch_size) == (
        "layer", 0.05, 1.5, 50, 1e-3, 4000, 1.0, 32)
    assert S.get_spec("small").norm == "layer" and S.get_spec("small").d < p.d
    assert len(S.VOCAB) == 32 and S.VOCAB[S.PAD] == "P" and S.VOCAB[S.EOS] == "E"


@pytest.mark.parametrize("bad, word", [({"conv": "x"}, "conv"), ({"norm": "instance"}, "norm"), ({"r": 3}, "power of two"),
                                       ({"alpha": 0}, "alpha"), ({"dropout": 1.0}, "dropout"),
                                       ({"block": "dense"}, "block"), ({"norm_momentum": 0.0}, "norm_momentum"),
                                       ({"bottleneck_ratio": 0}, "bottleneck_ratio"),
                                       ({"norm_num_groups": 0}, "norm_num_groups"),
                                       ({"position": "learned"}, "position='learned'"),
                                       ({"position_rate": 0.0}, "position_rate"),
                                       ({"position_weight": -0.5}, "position_weight")])
def test_invalid_specs_are_refused_with_the_field(bad, word):
    with pytest.raises(ValueError, match=word):
        S.get_spec("tiny", **bad)
    with pytest.raises(ValueError, match="unknown preset"):
        S.get_spec("huge")


def test_fingerprint_and_diff_name_the_differing_fields():
    a = S.get_spec("tiny")
    assert a.fingerprint() == S.get_spec("tiny").replace(name="renamed").fingerprint()
    b = a.replace(d=32, dropout=0.0)
    assert a.fingerprint() != b.fingerprint()
    assert a.diff(b) == {"d": (16, 32), "dropout": (0.05, 0.0)}


def test_layer_lists_follow_the_paper():
    s = S.get_spec("paper")
    nets = S.layers(s, "text2mel")
    text_enc, audio_enc, audio_dec = nets["textenc"], nets["audioenc"], nets["audiodec"]
    assert [l.kind for l in text_enc[:3]] == [S.EMBED, S.CONV, S.CONV]
    assert [l.dilation for l in text_enc[3:11]] == [1, 3, 9, 27] * 2
    assert text_enc[-1].cout == 2 * s.d  # split into K (first d channels) and V
    assert not any(l.causal for l in text_enc) and all(l.causal for l in audio_enc + audio_dec)
    assert audio_enc[0].cin == s.n_mels and audio_dec[0].cin == 2 * s.d and audio_dec[-1].cout == s.n_mels
    assert [l.act for l in audio_dec[-4:]] == ["relu"] * 3 + [None]
    ssrn = S.layers(s, "ssrn")["ssrn"]
    assert sum(l.kind == S.DECONV for l in ssrn) == 2 and ssrn[-1].cout == s.n_mags
    assert S.Layer("x", S.CONV, 4, 4, 3, 9, causal=True).pad == (18, 0)
    assert S.Layer("x", S.CONV, 4, 4, 3, 9, causal=False).pad == (9, 9)
    with pytest.raises(ValueError, match="unknown network"):
        S.layers(s, "vocoder")


def test_variants_change_shapes_as_described():
    s = S.get_spec("paper")
    hc = S.layers(s, "text2mel")["textenc"][3]
    sep = S.param_shapes(s.replace(conv="sep"), hc)
    assert sep[f"{hc.name}.dw.weight"] == (512, 1, 3) and sep[f"{hc.name}.weight"] == (1024, 512, 1)
    assert S.param_shapes(s.replace(conv="super-sep"), hc)[f"{hc.name}.weight"] == (1024, 128, 1)
    assert A.count_params(s.replace(conv="sep"), "text2mel") < A.count_params(s, "text2mel")
    half = s.replace(alpha=0.5)
    assert (half.E, half.D, half.C) == (64, 128, 256)
    bn = S.param_shapes(s.replace(norm="batch"), hc)
    assert {f"{hc.name}.norm.{k}" for k in ("gamma", "beta", "mean", "var")} <= set(bn)
    assert A.count_params(s.replace(norm="batch"), "ssrn") == A.count_params(s.replace(norm="layer"), "ssrn")
    assert sum(l.kind == S.DECONV for l in S.layers(s.replace(r=8), "ssrn")["ssrn"]) == 3


def test_flops_count_convolutions_and_attention():
    s = S.get_spec("paper")
    one = A.flops(s, "text2mel", batch=1, n_chars=100, n_frames=140)
    two = A.flops(s, "text2mel", batch=2, n_chars=100, n_frames=140)
    assert two["forward"] == 2 * one["forward"] and one["train_step"] == 3 * one["forward"]
    # SSRN: every weight is used once per frame at its resolution: 2 * params (minus biases) * frames
    ssrn = A.flops(s, "ssrn", batch=1, n_frames=10)["forward"]
    first = S.layers(s, "ssrn")["ssrn"][0]
    assert A.layer_flops(s, first, 1, 10) == 2 * 10 * 80 * 512
    assert 2 * 10 * 9e6 < ssrn < 2 * 40 * 25e6
    attention = 2 * 2 * s.d * 100 * 140
    convs = one["forward"] - attention
    assert convs == sum(A.layer_flops(s, l, 1, 100 if b == "textenc" else 140)
                        for b, g in S.layers(s, "text2mel").items() for l in g)


def test_summary_table_lists_every_preset_and_network():
    table = A.summary_table()
    assert "| paper | text2mel | 23,923,536 | 16 |" in table
    assert table.count("\n") == 1 + 2 * len(S.PRESETS)


def test_plain_logits_layers_have_no_norm_and_the_rest_keep_it():
    """norm_logits=False: AudioDec's and SSRN's last conv (the logits) lose their norm, nothing else."""
    normed, plain = S.get_spec("tiny"), S.get_spec("tiny", norm_logits=False)
    for net in S.NETS:
        a, b = S.net_param_shapes(normed, net), S.net_param_shapes(plain, net)
        last = S.layers(plain, net)[{"text2mel": "audiodec", "ssrn": "ssrn"}[net]][-1]
        assert last.plain and not S.layers(normed, net)[{"text2mel": "audiodec", "ssrn": "ssrn"}[net]][-1].plain
        assert set(a) - set(b) == {f"{last.name}.norm.gamma", f"{last.name}.norm.beta"} and set(b) < set(a)
        assert sum(layer.plain for group in S.layers(plain, net).values() for layer in group) == 1


def test_bottleneck_and_residual_variants_change_shapes_as_described():
    s = S.get_spec("paper")
    hc = S.layers(s, "text2mel")["textenc"][3]  # HC(2d = 512, k=3)
    b = S.param_shapes(s.replace(conv="bottleneck"), hc)
    assert b[f"{hc.name}.reduce.weight"] == (128, 512, 1) and b[f"{hc.name}.weight"] == (1024, 128, 3)
    assert A.layer_flops(s.replace(conv="bottleneck"), hc, 1, 10) == 2 * 10 * (512 * 128 + 128 * 1024 * 3)
    pointwise = S.layers(s, "text2mel")["textenc"][-1]  # k = 1: never factorized
    assert S.param_shapes(s.replace(conv="bottleneck"), pointwise) == S.param_shapes(s, pointwise)
    res = s.replace(block="residual")
    kinds = {l.kind for g in S.layers(res, "text2mel").values() for l in g}
    assert S.HIGHWAY not in kinds and S.RESIDUAL in kinds
    r = S.layers(res, "text2mel")["textenc"][3]
    assert S.param_shapes(res, r)[f"{r.name}.weight"] == (512, 512, 3)  # no gate: cout channels, not 2 cout
    assert S.net_param_shapes(res, "ssrn").keys() == S.net_param_shapes(s, "ssrn").keys()


def test_named_constructors_state_the_deconvolution_stride():
    s = S.get_spec("paper")
    deconvs = [l for l in S.layers(s, "ssrn")["ssrn"] if l.kind == S.DECONV]
    assert all(l.stride == l.k == 2 for l in deconvs)
    with pytest.raises(ValueError, match="stride must equal its kernel"):
        S.D(8, k=3, stride=2)
    assert S.HC(s, 8, 3, 9) == S.Layer("", S.HIGHWAY, 8, 8, 3, 9)
    assert [l.name for l in S.layers(s, "ssrn")["ssrn"][:2]] == ["ssrn.0", "ssrn.1"]


def test_overrides_from_the_command_line_take_each_fields_type():
    assert S.parse_overrides(["norm=batch", "d=32", "lr=1e-3", "norm_logits=false", "grad_clip=none"]) == {
        "norm": "batch", "d": 32, "lr": 1e-3, "norm_logits": False, "grad_clip": None}
    assert S.parse_overrides(["grad_clip=0.5"]) == {"grad_clip": 0.5}
    for bad, message in [("depth=3", "FIELD one of"), ("d", "FIELD=VALUE"), ("d=abc", "d takes a int"),
                         ("norm_logits=maybe", "takes a bool"), ("name=x", "FIELD one of")]:
        with pytest.raises(ValueError, match=message):
            S.parse_overrides([bad])


def test_position_encoding_alternates_sin_and_cos_rows_of_falling_frequency():
    """Odd d: the last row is a sin row. Column p = 3 by hand: 10000^(2/5) and 10000^(4/5)."""
    table = S.position_encoding(5, [0, 3])
    assert table.shape == (5, 2) and table.dtype == np.float64
    np.testing.assert_array_equal(table[:, 0], [0, 1, 0, 1, 0])
    f1, f2 = 3 / 10000 ** 0.4, 3 / 10000 ** 0.8
    np.testing.assert_allclose(table[:, 1], [math.sin(3), math.cos(3), math.sin(f1), math.cos(f1), math.sin(f2)],
                               rtol=1e-14)
    assert S.position_encoding(4, []).shape == (4, 0)


def test_attention_positions_put_character_n_on_frame_rate_times_n():
    """PK at text position n is PQ at frame position_rate * n (the diagonal of a speaker of that
    speed), both scaled by position_weight."""
    s = S.get_spec("tiny", position="sinusoid", position_rate=2.0, position_weight=0.5)
    pk, pq = S.attention_positions(s, 5, 12)
    assert pk.shape == (s.D, 5) and pq.shape == (s.D, 12)
    np.testing.assert_allclose(pk[:, 3], pq[:, 6], rtol=1e-14)
    np.testing.assert_allclose(pq, 0.5 * S.position_encoding(s.D, np.arange(12)), rtol=1e-14)
    assert not np.allclose(pk[:, 3], pq[:, 3])
