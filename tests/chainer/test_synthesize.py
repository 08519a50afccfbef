"""impl_chainer inference: autoregressive synthesis (incremental, forcibly incremental attention)
and SSRN upsampling."""
from impl_chainer import runtime  # noqa: F401  (before chainer: its import-time check breaks here)

import tracemalloc

import numpy as np
import pytest

from common import spec as S, text
from common.batch import make_batch
from impl_chainer import synthesize as synth
from impl_chainer.backend import Backend

SENTENCE = "The birch canoe slid on the smooth planks."


def batch_of(spec, ids, mel):
    """A one-utterance Batch whose reduced mel is `mel` (F, T)."""
    full_rate = np.repeat(mel, spec.r, axis=1)  # make_batch keeps every r-th frame
    return make_batch(spec, [ids], [full_rate], [np.zeros((spec.n_mags, full_rate.shape[1]), np.float32)])


@pytest.fixture(scope="module")
def text2mel():
    return Backend(S.get_spec("tiny"), "text2mel", seed=3)


def test_output_has_a_plausible_length_and_range(text2mel):
    spec = text2mel.spec
    ids = text.text_to_ids(SENTENCE, spec)
    mel, attention = text2mel.synthesize(ids, max_frames=spec.max_frames)
    t = mel.shape[1]
    assert mel.shape == (spec.n_mels, t) and attention.shape == (ids.size, t) and 1 <= t <= spec.max_frames
    assert mel.dtype == np.float32 and mel.min() >= 0 and mel.max() <= 1
    np.testing.assert_allclose(attention.sum(0), 1, rtol=1e-5)  # every column a distribution over the text
    if t < spec.max_frames:  # it stopped early: only by reaching the end of text
        assert attention[:, -1].argmax() == ids.size - 1
    short, _ = text2mel.synthesize(ids, max_frames=3)
    assert short.shape[1] <= 3


def test_attention_is_forcibly_incremental(text2mel):
    spec = text2mel.spec
    ids = text.text_to_ids(SENTENCE, spec)
    _, attention = text2mel.synthesize(ids, max_frames=spec.max_frames)
    positions = np.concatenate([[0], attention.argmax(0)])  # reading starts at the first character
    steps = np.diff(positions)
    assert steps.min() >= -1 and steps.max() <= 3, positions


def test_without_forcing_synthesis_equals_teacher_forcing(text2mel, monkeypatch):
    """Frame-by-frame synthesis (layer histories, the zero start frame) is the teacher-forced
    network fed its own output: with forcing disabled, the two give the same frames."""
    monkeypatch.setattr(synth, "force_incremental", lambda column, prev: (column, int(column.argmax())))
    monkeypatch.setattr(synth, "reached_end", lambda position, n: False)
    ids = text.text_to_ids("a short one.", text2mel.spec)
    mel, attention = text2mel.synthesize(ids, max_frames=12)
    assert mel.shape[1] == 12
    out = text2mel.forward(batch_of(text2mel.spec, ids, mel))
    np.testing.assert_allclose(1 / (1 + np.exp(-out["logits"][0])), mel, atol=1e-5)
    np.testing.assert_allclose(out["attention"][0], attention, atol=1e-6)


def test_repeated_synthesis_is_identical_and_keeps_no_memory(text2mel):
    ids = text.text_to_ids(SENTENCE, text2mel.spec)
    first = text2mel.synthesize(ids, max_frames=8)
    tracemalloc.start()  # slows Python down: few short runs
    text2mel.synthesize(ids, max_frames=8)
    baseline = tracemalloc.get_traced_memory()[0]
    for _ in range(2):
        again = text2mel.synthesize(ids, max_frames=8)
    grown = tracemalloc.get_traced_memory()[0] - baseline
    tracemalloc.stop()
    assert grown < 50_000, f"{grown} bytes kept over 2 sentences"
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)


def test_bad_max_frames_and_wrong_network_raise(text2mel):
    ids = text.text_to_ids("hi.", text2mel.spec)
    with pytest.raises(ValueError, match="max_frames"):
        text2mel.synthesize(ids, max_frames=0)
    with pytest.raises(NotImplementedError):
        text2mel.upsample(np.zeros((16, 3), np.float32))
    with pytest.raises(NotImplementedError):
        Backend(text2mel.spec, "ssrn").synthesize(ids, 5)


def test_upsample_gives_magnitudes_in_range_and_equals_the_forward():
    spec = S.get_spec("tiny")
    ssrn = Backend(spec, "ssrn")
    mel = np.random.default_rng(0).random((spec.n_mels, 9)).astype(np.float32)
    mag = ssrn.upsample(mel)
    assert mag.shape == (spec.n_mags, spec.r * 9) and mag.min() >= 0 and mag.max() <= 1
    logits = ssrn.forward(batch_of(spec, text.text_to_ids("hi.", spec), mel))["logits"][0]
    np.testing.assert_allclose(mag, 1 / (1 + np.exp(-logits)), atol=1e-6)
    with pytest.raises(ValueError, match="expected a mel of shape"):
        ssrn.upsample(np.zeros((spec.n_mels + 1, 9), np.float32))
