"""impl_gluon synthesis: plausible lengths, forcibly incremental attention decided on the device
as common.synthesis decides it, batches, clear errors, no state, tape or memory kept.
(Agreement with the teacher-forced reference, and a batch against one sentence at a time:
test_contract.)"""
from impl_gluon import runtime  # noqa: F401  (must precede the first mxnet import)

import os

import mxnet as mx
import numpy as np
import pytest
from mxnet import gluon

from common import reference as R, spec as S, synthesis as CS, text as TX
from common.synthesis import reached_end
from common.weights import init_weights
from impl_gluon.backend import NETWORKS
from impl_gluon.synthesize import force_incremental, synthesize, synthesize_batch, upsample
from impl_gluon.weights import set_weights


def model(net, seed=0, spec=None, hybridize=False):
    spec = spec or S.get_spec("tiny")
    m = NETWORKS[net](spec)
    m.initialize()
    set_weights(m, init_weights(spec, net, seed))
    if hybridize:
        m.hybridize(static_alloc=True, static_shape=False)
    return m


def positions(attention):
    return attention.argmax(axis=0)


class Forcing(gluon.HybridBlock):
    """force_incremental alone, as a block: imperative (F = mx.nd) or traced (F = mx.sym)."""

    def hybrid_forward(self, F, columns, prev, n_text):
        return force_incremental(F, columns, prev, n_text)


@pytest.mark.parametrize("hybridize", [False, True], ids=["imperative", "hybridized"])
def test_force_incremental_decides_as_common_synthesis_does(hybridize):
    """Random columns (B=64, N=12), previous positions and sentence lengths: about half the peaks
    lie within [prev - 1, prev + 3] (kept), the others are forced, some of those at a sentence's
    last position (prev + 1 clipped to n_text - 1)."""
    rng = np.random.default_rng(0)
    batch, width = 64, 12
    n_text = rng.integers(2, width + 1, batch)
    prev = rng.integers(0, n_text)
    prev[:8] = n_text[:8] - 1  # already at the end: forcing stays there
    columns = rng.random((batch, width)).astype(np.float32)
    near = rng.random(batch) < 0.5
    peak = np.where(near, np.clip(prev + rng.integers(-1, 4, batch), 0, width - 1), rng.integers(0, width, batch))
    columns[np.arange(batch), peak] += 1.0
    want_columns, want_positions = CS.force_incremental(columns, prev, n_text)
    forcing = Forcing()
    if hybridize:
        forcing.hybridize(static_alloc=True, static_shape=True)
    got_columns, got_positions = forcing(*(mx.nd.array(x) for x in (columns, prev, n_text)))
    kept = want_positions == peak
    assert 10 < kept.sum() < batch - 10 and (~kept & (want_positions == n_text - 1)).any()
    np.testing.assert_array_equal(got_columns.asnumpy(), want_columns)
    np.testing.assert_array_equal(got_positions.asnumpy(), want_positions)


@pytest.mark.parametrize("seed", range(4))
def test_length_is_plausible_and_attention_forcibly_incremental(seed):
    spec = S.get_spec("tiny")
    ids = TX.text_to_ids("the birch canoe slid on the smooth planks.", spec)
    mel, a = synthesize(model("text2mel", seed), ids, spec.max_frames)
    t, n = mel.shape[1], len(ids)
    assert mel.shape == (spec.n_mels, t) and a.shape == (n, t)
    assert np.ceil((n - 1) / 3) <= t <= spec.max_frames  # at most 3 characters per frame
    moves = np.diff(np.concatenate([[0], positions(a)]))
    assert moves.min() >= -1 and moves.max() <= 3
    assert t == spec.max_frames or reached_end(positions(a)[-1], n)
    assert not any(reached_end(p, n) for p in positions(a)[:-1])  # it stops on arriving at the end


def test_hybridized_model_synthesizes_the_same():
    """The whole step is one cached graph when hybridized, imperative operators otherwise
    (TextEnc too). Same numbers either way, for one sentence and for a batch."""
    spec = S.get_spec("tiny")
    texts = [TX.text_to_ids(s, spec) for s in ("hybrid or not.", "a batch of three sentences here.", "short.")]
    plain, hybrid = (synthesize_batch(model("text2mel", 2, hybridize=h), texts, 30) for h in (False, True))
    for (mel_p, a_p), (mel_h, a_h) in zip(plain, hybrid):
        np.testing.assert_allclose(mel_p, mel_h, atol=1e-6, rtol=0)
        np.testing.assert_array_equal(positions(a_p), positions(a_h))


def test_forced_columns_are_one_hot_at_the_next_position():
    spec = S.get_spec("tiny")
    ids = TX.text_to_ids("a quick test of forcing.", spec)
    _, a = synthesize(model("text2mel", 1), ids, 40)
    pos = np.concatenate([[0], positions(a)])
    forced = np.flatnonzero(a.max(axis=0) == 1.0)
    assert forced.size > 0  # untrained attention wanders, so some frames must be forced
    for t in forced:
        assert pos[t + 1] == min(pos[t] + 1, len(ids) - 1) and np.count_nonzero(a[:, t]) == 1


def test_max_frames_is_respected_and_checked():
    ids = TX.text_to_ids("a long sentence that cannot be read in three frames.", S.get_spec("tiny"))
    mel, a = synthesize(model("text2mel"), ids, 3)
    assert mel.shape[1] == a.shape[1] == 3
    with pytest.raises(ValueError, match="max_frames"):
        synthesize(model("text2mel"), ids, 0)


@pytest.mark.parametrize("hybridize", [False, True], ids=["imperative", "hybridized"])
def test_the_host_reads_the_end_flags_only_every_few_frames(hybridize, monkeypatch):
    """No device-to-host copy a frame: 16 frames (too few to read 54 characters, at most 3 a
    frame) cost 16 / STOP_CHECK_EVERY looks at the end flags, plus the three results' copies."""
    spec = S.get_spec("tiny")
    t2m = model("text2mel", hybridize=hybridize)
    texts = [TX.text_to_ids("a sentence that is too long to be read in sixteen frames", spec)] * 2
    synthesize_batch(t2m, texts, 16)  # builds the cached graphs
    copies = []
    asnumpy = mx.nd.NDArray.asnumpy
    monkeypatch.setattr(mx.nd.NDArray, "asnumpy", lambda self: copies.append(self.shape) or asnumpy(self))
    (mel, _), _ = synthesize_batch(t2m, texts, 16)
    assert mel.shape[1] == 16 and len(copies) == 16 // CS.STOP_CHECK_EVERY + 3


def test_nothing_is_kept_between_calls():
    """Same texts twice, same output, with other batch sizes and lengths in between (the cached
    step graph is re-planned for them); nothing recorded (gradients stay zero)."""
    spec = S.get_spec("tiny")
    t2m = model("text2mel", hybridize=True)
    texts = [TX.text_to_ids(s, spec) for s in ("same words again.", "and a second, longer sentence.")]
    first = synthesize_batch(t2m, texts, 30)
    synthesize(t2m, TX.text_to_ids("something else in between.", spec), 30)
    synthesize_batch(t2m, texts[::-1] + [TX.text_to_ids("three now.", spec)], 30)
    second = synthesize_batch(t2m, texts, 30)
    assert all(np.array_equal(x, y) for one, two in zip(first, second) for x, y in zip(one, two))
    assert not mx.autograd.is_recording()
    assert all(not p.grad().asnumpy().any() for p in t2m.collect_params().values())


def resident_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads Linux's /proc")
def test_memory_does_not_grow_over_many_sentences():
    """Resident memory stays put over 40 more syntheses of 8 sentences already seen once.
    (Each new text length costs MXNet some memory once: its MKLDNN kernels and graph
    buffers are cached per shape; texts are at most spec.max_chars long, so this is bounded.)"""
    spec = S.get_spec("tiny")
    t2m = model("text2mel", hybridize=True)
    rng = np.random.default_rng(0)
    sentences = [np.append(rng.integers(2, spec.n_vocab, n), S.EOS).astype(np.int32) for n in rng.integers(5, 50, 8)]
    for ids in sentences:
        synthesize(t2m, ids, spec.max_frames)
    mx.nd.waitall()
    before = resident_mib()
    for ids in sentences * 5:
        synthesize(t2m, ids, spec.max_frames)
    mx.nd.waitall()
    assert resident_mib() - before < 5


def test_upsample_shape_range_and_errors():
    spec = S.get_spec("tiny")
    mag = upsample(model("ssrn"), np.random.default_rng(0).random((spec.n_mels, 5)))
    assert mag.shape == (spec.n_mags, 5 * spec.r) and mag.dtype == np.float32
    assert mag.min() >= 0 and mag.max() <= 1
    with pytest.raises(ValueError, match=r"expected a mel of shape \(16, T>0\)"):
        upsample(model("ssrn"), np.zeros((spec.n_mels + 1, 5)))


@pytest.mark.parametrize("hybridize", [False, True], ids=["imperative", "hybridized"])
def test_upsample_serves_lengths_whose_kernels_want_other_weight_layouts(hybridize):
    """Inference kernels pick weight layouts by input length; MKLDNN's Deconvolution kept the first
    one in place and failed on tiny's 64 frames after 40. Every length must still match the reference."""
    spec = S.get_spec("tiny")
    ssrn = model("ssrn", spec=spec, hybridize=hybridize)
    w = {k: v.astype(np.float64) for k, v in init_weights(spec, "ssrn", 0).items()}
    rng = np.random.default_rng(0)
    for frames in (1, 40, 64, 7):
        mel = rng.random((spec.n_mels, frames), dtype=np.float32)
        ref = 1 / (1 + np.exp(-R.ssrn(spec, w, mel[None])[0]))
        np.testing.assert_allclose(upsample(ssrn, mel), ref, rtol=0, atol=1e-5)
