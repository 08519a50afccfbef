"""Benchmark inputs: identical for every framework (same seeds), from synthetic shapes or a corpus."""
import numpy as np
import pytest

from bench import inputs
from common import spec as S, text

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
