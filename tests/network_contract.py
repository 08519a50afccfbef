"""Framework-neutral tests of the networks (impl_<fw>/text2mel.py, ssrn.py, weights.py) and of
synthesis (impl_<fw>/synthesize.py) against common.contract.reference and common.contract.synthesis, the same checks
for every framework. Each runs them through a small adapter in tests/<fw>/test_network_contract.py:

    from tests.network_contract import *  # noqa: F401,F403
    ADAPTER = TorchNetworks()          # the NetworkAdapter methods, in the framework's terms
    MODES = ("",)                      # gluon: ("imperative", "hybridized")

Weights are canonical NumPy dicts (common.contract.spec names); inputs and outputs NumPy arrays.
Tolerances: max abs error <= 1e-5 at `tiny` (relative beyond outputs of +-1, where fp32 rounding
scales with them); relative error (max abs error / max abs reference) <= 1e-4 at `paper` and
`community`, on short inputs, eval mode.
"""
import os

import numpy as np
import pytest

from common.contract import reference as R, spec as S, synthesis as CS, weights as W
from common.data import text as TX
from common.contract.synthesis import reached_end
from tests.backend_contract import random_batch, sigmoid, variant_weights
from tests.layer_contract import adapter, pytest_generate_tests  # noqa: F401  (the contract's fixture and modes)


class NetworkAdapter:
    """What the contract needs of a framework. `mode`: one of the module's MODES.
    `synthesis`: the framework's synthesize module (synthesize, synthesize_batch, upsample, all
    with the same signatures in every framework: tests/common/test_api.py)."""

    synthesis = None

    def model(self, spec, net, weights, mode):
        """NETWORKS[net](spec) with `weights` loaded, in eval mode."""
        raise NotImplementedError

    def text2mel(self, model, text, mel) -> tuple:
        """(logits, attention) of the teacher-forced Text2Mel, eval mode."""
        raise NotImplementedError

    def ssrn(self, model, mel):
        raise NotImplementedError

    def parts(self, model, text, mel_in, k, v, q, r) -> tuple:
        """Text2Mel's sub-networks each on given inputs: (K, V) = TextEnc(text), Q =
        AudioEnc(mel_in), (R, A) = Attention(k, v, q, the text's pad bias), AudioDec(r) ->
        (K, V, Q, R, A, logits)."""
        raise NotImplementedError

    def shift_right(self, mel):
        raise NotImplementedError

    def get_weights(self, model) -> dict:
        raise NotImplementedError

    def set_weights(self, model, weights):
        raise NotImplementedError

    def force_incremental(self, columns, prev, n_text, mode) -> tuple:
        """synthesize.force_incremental on the device -> (columns, positions, forced bool) as NumPy."""
        raise NotImplementedError

    def assert_nothing_recorded(self, model):
        """After synthesis: no gradients, graph or training mode left behind."""
        raise NotImplementedError


def assert_close(out, ref, preset):
    assert out.shape == ref.shape and out.dtype == np.float32
    err, scale = np.abs(out - ref).max(), np.abs(ref).max()
    if preset == "tiny":
        assert err <= 1e-5 * max(1.0, scale), f"max abs error {err:.3g}"
    else:
        assert err / scale <= 1e-4, f"relative error {err / scale:.3g}"


def model_and_weights(adapter, mode, spec, net, seed=0, weights=W.init_weights):
    """The model and its weights in float64 for the reference; `weights(spec, net, seed)` draws them."""
    w = weights(spec, net, seed)
    return adapter.model(spec, net, w, mode), {k: v.astype(np.float64) for k, v in w.items()}


# --- the networks against the reference -------------------------------------------------------
PRESETS = ["tiny", "paper", "community"]


@pytest.mark.parametrize("preset", PRESETS)
def test_text2mel_parts_match_reference(adapter, mode, preset):
    spec = S.get_spec(preset)
    model, w = model_and_weights(adapter, mode, spec, "text2mel")
    b = random_batch(spec)
    mel_in = R.shift_mel(b.mel)
    k_ref, v_ref = R.text_enc(spec, w, b.text)
    q_ref = R.audio_enc(spec, w, mel_in)
    r_ref, a_ref = R.attention(spec, k_ref, v_ref, q_ref, R.pad_bias(b.text))
    # each part from the reference's inputs, so errors do not compound
    got = adapter.parts(model, b.text, mel_in, *(x.astype(np.float32) for x in (k_ref, v_ref, q_ref, r_ref)))
    for out, ref in zip(got, (k_ref, v_ref, q_ref, r_ref, a_ref, R.audio_dec(spec, w, r_ref))):
        assert_close(out, ref, preset)


@pytest.mark.parametrize("preset", PRESETS)
def test_full_networks_match_reference(adapter, mode, preset):
    spec = S.get_spec(preset)
    b = random_batch(spec)
    t2m, w = model_and_weights(adapter, mode, spec, "text2mel")
    ssrn, ws = model_and_weights(adapter, mode, spec, "ssrn")
    logits, a = adapter.text2mel(t2m, b.text, b.mel)
    logits_ref, a_ref = R.text2mel(spec, w, b.text, b.mel)
    assert_close(logits, logits_ref, preset)
    assert_close(a, a_ref, preset)
    mag_logits = adapter.ssrn(ssrn, b.mel)
    assert_close(mag_logits, R.ssrn(spec, ws, b.mel), preset)
    assert mag_logits.shape[2] == spec.r * b.mel.shape[2]


# group norm at tiny (16 channels) in groups of 4 or 8 channels (tests/layer_contract.py: why not fewer)
VARIANTS = [{"conv": "sep"}, {"conv": "super-sep"}, {"alpha": 0.5}, {"r": 2}, {"norm": "none"},
            {"conv": "bottleneck"}, {"block": "residual"}, {"norm": "batch"}, {"norm": "batch", "r": 8},
            {"norm": "group", "norm_num_groups": 2}, {"norm": "group", "block": "residual", "norm_num_groups": 4},
            {"position": "sinusoid"}, {"position": "sinusoid", "position_rate": 3.0, "position_weight": 0.5}]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: ",".join(f"{k}={x}" for k, x in v.items()))
def test_variants_match_reference(adapter, mode, variant):
    """Norm parameters and running statistics away from 1 and 0 (variant_weights), so they count."""
    spec = S.get_spec("tiny", **variant)
    b = random_batch(spec)
    t2m, w = model_and_weights(adapter, mode, spec, "text2mel", weights=variant_weights)
    ssrn, ws = model_and_weights(adapter, mode, spec, "ssrn", weights=variant_weights)
    assert_close(adapter.text2mel(t2m, b.text, b.mel)[0], R.text2mel(spec, w, b.text, b.mel)[0], "tiny")
    assert_close(adapter.ssrn(ssrn, b.mel), R.ssrn(spec, ws, b.mel), "tiny")


def test_one_model_serves_other_batch_sizes_and_lengths(adapter, mode):
    """(Hybridized gluon: one cached graph, static_shape off, re-planned for each shape.)"""
    spec = S.get_spec("tiny")
    t2m, w = model_and_weights(adapter, mode, spec, "text2mel")
    for shape in ((2, 12, 10), (3, 16, 12), (1, 20, 1)):
        b = random_batch(spec, *shape)
        logits, a = adapter.text2mel(t2m, b.text, b.mel)
        logits_ref, a_ref = R.text2mel(spec, w, b.text, b.mel)
        assert_close(logits, logits_ref, "tiny")
        assert_close(a, a_ref, "tiny")


def test_shift_right_is_the_references_teacher_forcing_shift(adapter):
    mel = np.random.default_rng(0).random((2, 3, 5), dtype=np.float32)
    np.testing.assert_array_equal(adapter.shift_right(mel), R.shift_mel(mel))


def test_text2mel_is_causal(adapter, mode):
    """Changing mel frame t never changes outputs at frames <= t (the shift adds one frame)."""
    spec = S.get_spec("tiny")
    model, _ = model_and_weights(adapter, mode, spec, "text2mel")
    b = random_batch(spec, n_frames=24)
    logits, a = adapter.text2mel(model, b.text, b.mel)
    for t in (0, 11, 23):
        changed = b.mel.copy()
        changed[:, :, t] += 5.0
        logits2, a2 = adapter.text2mel(model, b.text, changed)
        np.testing.assert_array_equal(logits2[:, :, : t + 1], logits[:, :, : t + 1])
        np.testing.assert_array_equal(a2[:, :, : t + 1], a[:, :, : t + 1])
        if t < 23:
            assert not np.allclose(logits2[:, :, t + 1], logits[:, :, t + 1])


# --- weights ---------------------------------------------------------------------------------
@pytest.mark.parametrize("norm", ["layer", "batch"])
def test_weights_round_trip_and_strictness(adapter, norm):
    """get_weights / set_weights cover the parameters and batch norm's running statistics (float32,
    the spec's names and shapes); a wrong dict is refused by name and changes nothing."""
    spec = S.get_spec("tiny", norm=norm)
    w = variant_weights(spec, "ssrn", seed=1)  # norms not at their defaults
    model = adapter.model(spec, "ssrn", w, "")
    got = adapter.get_weights(model)
    assert {k: v.shape for k, v in got.items()} == S.net_param_shapes(spec, "ssrn")
    assert all(v.dtype == np.float32 and np.array_equal(v, w[k]) for k, v in got.items())
    other = adapter.model(spec, "ssrn", W.init_weights(spec, "ssrn", 2), "")
    adapter.set_weights(other, w)
    assert all(np.array_equal(a, adapter.get_weights(other)[k]) for k, a in w.items())
    if norm == "batch":
        with pytest.raises(W.WeightsError, match=r"missing \['ssrn\.0\.norm\.var'\]"):
            adapter.set_weights(other, {k: v for k, v in w.items() if k != "ssrn.0.norm.var"})
    bad = dict(w, extra=np.zeros(1, np.float32))
    del bad["ssrn.0.bias"]
    bad["ssrn.1.weight"] = np.zeros((1, 1, 1), np.float32)
    bad["ssrn.2.weight"] = bad["ssrn.2.weight"] + 1  # well formed, so a partial load would show
    with pytest.raises(W.WeightsError, match=r"missing \['ssrn\.0\.bias'\] unexpected \['extra'\] misshapen \['ssrn\.1\.weight"):
        adapter.set_weights(other, bad)
    assert all(np.array_equal(a, adapter.get_weights(other)[k]) for k, a in w.items())


@pytest.mark.parametrize("norm", ["layer", "batch"])
def test_weights_loaded_after_a_forward_take_effect(adapter, mode, norm):
    """(Gluon: an inference forward leaves MKLDNN-layout conv weights in place; a plain copy into
    them failed with `to.IsDefaultData()`.) Batch norm's running statistics too."""
    spec = S.get_spec("tiny", norm=norm)
    b = random_batch(spec)
    t2m, _ = model_and_weights(adapter, mode, spec, "text2mel")
    ssrn, _ = model_and_weights(adapter, mode, spec, "ssrn")
    adapter.text2mel(t2m, b.text, b.mel)
    adapter.ssrn(ssrn, b.mel)
    w, ws = (variant_weights(spec, net, seed=1) for net in S.NETS)
    adapter.set_weights(t2m, w)
    adapter.set_weights(ssrn, ws)
    assert all(np.array_equal(a, adapter.get_weights(ssrn)[k]) for k, a in ws.items())
    w64, ws64 = ({k: v.astype(np.float64) for k, v in x.items()} for x in (w, ws))
    assert_close(adapter.text2mel(t2m, b.text, b.mel)[0], R.text2mel(spec, w64, b.text, b.mel)[0], "tiny")
    assert_close(adapter.ssrn(ssrn, b.mel), R.ssrn(spec, ws64, b.mel), "tiny")


# --- synthesis -------------------------------------------------------------------------------
def positions(attention):
    return attention.argmax(axis=0)


def synthesizer(adapter, mode, seed=0, spec=None):
    spec = spec or S.get_spec("tiny")
    return adapter.model(spec, "text2mel", W.init_weights(spec, "text2mel", seed), mode)


def test_on_device_forcing_is_the_common_rule(adapter, mode):
    """synthesize.force_incremental = common.contract.synthesis.force_incremental on random peaked columns
    (B=64, N=20): kept, forced forward, forced back, clipped at each sentence's end."""
    rng = np.random.default_rng(0)
    batch, width = 64, 20
    n_text = rng.integers(2, width + 1, batch)
    prev = rng.integers(0, n_text)
    prev[:8] = n_text[:8] - 1  # already at the end: forcing stays there
    columns = rng.random((batch, width)).astype(np.float32)
    peak = np.clip(prev + rng.integers(-4, 7, batch), 0, n_text - 1)  # in and out of [prev - 1, prev + 3]
    columns[np.arange(batch), peak] += 5
    columns /= columns.sum(axis=1, keepdims=True)
    want_columns, want_positions, want_forced = CS.force_incremental(columns, prev, n_text)
    got_columns, got_positions, got_forced = adapter.force_incremental(columns, prev, n_text, mode)
    kept = want_positions == peak
    assert 10 < kept.sum() < batch - 10 and (~kept & (want_positions == n_text - 1)).any()
    np.testing.assert_array_equal(want_forced, ~kept)
    assert got_columns.dtype == np.float32 and got_forced.dtype == bool
    np.testing.assert_array_equal(got_columns, want_columns)
    np.testing.assert_array_equal(got_positions, want_positions)
    np.testing.assert_array_equal(got_forced, want_forced)


@pytest.mark.parametrize("seed", range(4))
def test_length_is_plausible_and_attention_forcibly_incremental(adapter, mode, seed):
    spec = S.get_spec("tiny")
    ids = TX.text_to_ids("the birch canoe slid on the smooth planks.", spec)
    mel, a = adapter.synthesis.synthesize(synthesizer(adapter, mode, seed), ids, spec.max_frames)
    t, n = mel.shape[1], len(ids)
    assert mel.shape == (spec.n_mels, t) and a.shape == (n, t) and mel.dtype == np.float32
    assert mel.min() >= 0 and mel.max() <= 1
    np.testing.assert_allclose(a.sum(0), 1, rtol=1e-5)  # every column a distribution over the text
    assert np.ceil((n - 1) / 3) <= t <= spec.max_frames  # at most 3 characters per frame
    moves = np.diff(np.concatenate([[0], positions(a)]))  # reading starts at the first character
    assert moves.min() >= -1 and moves.max() <= 3
    assert t == spec.max_frames or reached_end(positions(a)[-1], n)
    assert not any(reached_end(p, n) for p in positions(a)[:-1])  # it stops on arriving at the end


def test_forced_columns_are_one_hot_at_the_next_position(adapter, mode):
    spec = S.get_spec("tiny")
    ids = TX.text_to_ids("a quick test of forcing.", spec)
    out = adapter.synthesis.synthesize(synthesizer(adapter, mode, 1), ids, 40)
    a = out.attention
    pos = np.concatenate([[0], positions(a)])
    assert out.forced.dtype == bool and out.forced.shape == (a.shape[1],)
    forced = np.flatnonzero(out.forced)
    assert 0 < forced.size < a.shape[1]  # untrained attention wanders, so some frames must be forced
    np.testing.assert_array_equal(out.forced, a.max(axis=0) == 1.0)  # untrained: never one-hot unforced
    for t in forced:
        assert pos[t + 1] == min(pos[t] + 1, len(ids) - 1) and np.count_nonzero(a[:, t]) == 1


def test_max_frames_is_respected_and_checked(adapter):
    ids = TX.text_to_ids("a long sentence that cannot be read in three frames.", S.get_spec("tiny"))
    t2m = synthesizer(adapter, "")
    mel, a = adapter.synthesis.synthesize(t2m, ids, 3)
    assert mel.shape[1] == a.shape[1] == 3
    for call in (lambda: adapter.synthesis.synthesize(t2m, ids, 0),
                 lambda: adapter.synthesis.synthesize_batch(t2m, [ids, ids], 0)):
        with pytest.raises(ValueError, match="max_frames"):
            call()


def test_nothing_is_kept_between_calls(adapter, mode):
    """Same texts twice, same output, with other batch sizes and lengths in between; nothing
    recorded (no gradients, graph or training mode left)."""
    spec = S.get_spec("tiny")
    t2m = synthesizer(adapter, mode)
    synth = adapter.synthesis
    texts = [TX.text_to_ids(s, spec) for s in ("same words again.", "and a second, longer sentence.")]
    first = synth.synthesize_batch(t2m, texts, 30)
    synth.synthesize(t2m, TX.text_to_ids("something else in between.", spec), 30)
    synth.synthesize_batch(t2m, texts[::-1] + [TX.text_to_ids("three now.", spec)], 30)
    second = synth.synthesize_batch(t2m, texts, 30)
    assert all(np.array_equal(x, y) for one, two in zip(first, second) for x, y in zip((*one, one.forced),
                                                                                        (*two, two.forced)))
    adapter.assert_nothing_recorded(t2m)


def resident_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="resident memory is read from Linux /proc")
def test_memory_does_not_grow_over_many_sentences(adapter, mode):
    """Resident memory stays put over 24 more syntheses of 8 sentences already seen once, and 4
    more batches of 2. (Each new text length may cost a framework memory once, kernels or graph
    buffers cached per shape; texts are at most spec.max_chars long, so that is bounded.)"""
    spec = S.get_spec("tiny")
    t2m, synth = synthesizer(adapter, mode), adapter.synthesis
    rng = np.random.default_rng(0)
    sentences = [np.append(rng.integers(2, spec.n_vocab, n), S.EOS).astype(np.int32) for n in rng.integers(5, 50, 8)]
    for ids in sentences:
        synth.synthesize(t2m, ids, spec.max_frames)
    synth.synthesize_batch(t2m, sentences[:2], spec.max_frames)
    before = resident_mib()
    for ids in sentences * 3:
        synth.synthesize(t2m, ids, spec.max_frames)
    for _ in range(4):
        synth.synthesize_batch(t2m, sentences[:2], spec.max_frames)
    assert resident_mib() - before < 5


def test_upsample_matches_the_reference_at_every_length(adapter, mode):
    """Magnitudes in [0, 1], (n_mags, r T), float32, at lengths in any order. (Gluon: inference
    kernels pick weight layouts by input length; MKLDNN's Deconvolution kept the first one in
    place and failed on tiny's 64 frames after 40.)"""
    spec = S.get_spec("tiny")
    ssrn, w = model_and_weights(adapter, mode, spec, "ssrn")
    rng = np.random.default_rng(0)
    for frames in (1, 40, 64, 7):
        mel = rng.random((spec.n_mels, frames), dtype=np.float32)
        mag = adapter.synthesis.upsample(ssrn, mel)
        assert mag.shape == (spec.n_mags, frames * spec.r) and mag.dtype == np.float32
        assert mag.min() >= 0 and mag.max() <= 1
        np.testing.assert_allclose(mag, sigmoid(R.ssrn(spec, w, mel[None])[0]), rtol=0, atol=1e-5)
    for bad in (np.zeros((spec.n_mels + 1, 5)), np.zeros((spec.n_mels, 0)), np.zeros(spec.n_mels)):
        with pytest.raises(ValueError, match=r"expected a mel of shape \(16, T>0\)"):
            adapter.synthesis.upsample(ssrn, bad)
