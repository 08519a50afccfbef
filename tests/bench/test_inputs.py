"""Benchmark inputs: identical for every framework (same seeds), from synthetic shapes or a corpus."""
import numpy as np
import pytest

from bench import inputs
from common.contract import spec as S
from common.data import text
from common.contract.spec import EOS

TINY = S.get_spec("tiny")


def same(a, b):
    return all(np.array_equal(getattr(a, f), getattr(b, f)) for f in ("text", "mel", "mag", "guide"))


def test_synthetic_batches_are_seeded_and_distinct():
    first, again = inputs.timing_batches(TINY, 3, 2, seed=5), inputs.timing_batches(TINY, 3, 2, seed=5)
    assert [b.size for b in first] == [3, 3]
    assert all(same(a, b) for a, b in zip(first, again)) and not same(first[0], first[1])


def test_corpus_batches_and_texts(tiny_corpus_dir):
    batches = inputs.timing_batches(TINY, 2, 3, seed=0, data_dir=tiny_corpus_dir)
    assert [b.size for b in batches] == [2, 2, 2] and same(batches[0], inputs.timing_batches(
        TINY, 2, 3, seed=0, data_dir=tiny_corpus_dir)[0])
    with pytest.raises(ValueError, match="fewer than the 100 asked for"):
        inputs.timing_batches(TINY, 2, 100, seed=0, data_dir=tiny_corpus_dir)
    texts = inputs.synthesis_texts(TINY, 3, data_dir=tiny_corpus_dir)
    assert len(texts) == 3 and all(t[-1] == S.EOS for t in texts)


def test_synthesis_texts_are_short_sentences():
    texts = inputs.synthesis_texts(TINY, 8)
    assert len(texts) == 8 and all(inputs.SYNTHESIS_CHARS[0] <= len(t) <= inputs.SYNTHESIS_CHARS[1] for t in texts)
    assert len(text.ids_to_text(texts[0], TINY)) == len(texts[0]) - 1  # real characters, then end-of-text


def test_short_batch_has_the_asked_lengths():
    b = inputs.short_batch(TINY, seed=1, text_lengths=(12, 9), frame_lengths=(10, 7))
    assert b.text.shape == (2, 12) and b.mel.shape == (2, TINY.n_mels, 10) and b.mag.shape == (2, TINY.n_mags, 40)
    assert list(b.text_lengths) == [12, 9] and list(b.frame_lengths) == [10, 7] and list(b.text[:, -1]) == [S.EOS, 0]


def test_synthetic_lengths_match_ljspeech_statistics():
    paper = S.get_spec("paper")
    text_lengths, frames = inputs.synthetic_lengths(paper, 20000, np.random.default_rng(0))
    chars = text_lengths - 1
    assert chars.min() >= 12 and chars.max() <= 187
    assert chars.mean() == pytest.approx(99.9, rel=0.03)
    assert np.median(chars) == pytest.approx(102, rel=0.03)
    assert np.percentile(chars, 90) == pytest.approx(142, rel=0.03)
    assert np.percentile(chars, 99) == pytest.approx(165, rel=0.05)
    seconds = (frames - 1) * paper.hop / paper.sr
    assert seconds.mean() == pytest.approx(6.57, rel=0.03)
    assert frames.mean() == pytest.approx(566, rel=0.03)
    assert frames.max() <= paper.max_frames * paper.r
    assert np.corrcoef(chars, frames)[0, 1] > 0.9  # duration follows text length
    community = S.get_spec("community")
    assert inputs.synthetic_lengths(community, 20000, np.random.default_rng(0))[1].mean() == \
        pytest.approx(525, rel=0.03)


def test_synthetic_lengths_are_clipped_to_the_spec():
    text_lengths, frames = inputs.synthetic_lengths(TINY, 1000, np.random.default_rng(0))
    assert text_lengths.max() == TINY.max_chars and frames.max() == TINY.max_frames * TINY.r


def test_synthetic_batch_is_a_valid_seeded_batch():
    batch = inputs.synthetic_batch(TINY, 3, seed=5)
    assert batch.text.dtype == np.int32 and batch.mel.dtype == batch.mag.dtype == np.float32
    assert batch.mel.shape[:2] == (3, TINY.n_mels) and batch.mag.shape == (3, TINY.n_mags, TINY.r * batch.mel.shape[2])
    for k, n in enumerate(batch.text_lengths):
        assert batch.text[k, n - 1] == EOS and np.all(batch.text[k, :n - 1] > EOS)
        assert np.all(batch.text[k, :n - 1] < TINY.n_vocab) and not batch.text[k, n:].any()
    assert batch.mel.min() >= 0 and batch.mel.max() <= 1
    again = inputs.synthetic_batch(TINY, 3, seed=5)
    np.testing.assert_array_equal(batch.mag, again.mag)
    assert not np.array_equal(batch.text_lengths, inputs.synthetic_batch(TINY, 3, seed=6).text_lengths) or \
        not np.array_equal(batch.mel, inputs.synthetic_batch(TINY, 3, seed=6).mel)
