"""common.data.prose: English as it is written (function words, clauses, names, numbers), by seed."""
import collections
import re
import time

import numpy as np
import pytest
from wordfreq import top_n_list

from common.data import dataset as data, prose
from common.contract.spec import get_spec
from common.data.text import normalize, text_to_ids


def test_sentences_are_distinct_readable_and_say_what_is_read():
    a, b, c = prose.generate(400, seed=1), prose.generate(400, seed=1), prose.generate(400, seed=2)
    assert a == b and a != c and len({s.normalized for s in a}) == 400
    paper = get_spec("paper", max_chars=400)
    for s in a:
        text_to_ids(s.text, paper)  # raises on any character outside the vocabulary
        assert s.normalized == normalize(s.text) and normalize(s.spoken) == s.normalized  # audio says what is read
        assert (s.text[0].isupper() or s.text[0].isdigit()) and s.text[-1] in ".?" and not s.text.endswith("..")
        assert not any(ch.isdigit() for ch in s.spoken)
    assert 2 <= sum(s.text.endswith("?") for s in a) <= 60  # a few questions, as prose has (LJSpeech: under 1%)
    assert 20 <= sum(any(ch.isdigit() for ch in s.text) for s in a) <= 150  # numbers for the normalizer
    assert sum("," in s.text for s in a) >= 150  # clauses


@pytest.fixture(scope="module")
def stream():
    """Seed 0's first 2,000 sentences, made once for the tests that measure them."""
    return prose.generate(2000, seed=0)


def test_word_frequencies_are_those_of_english_prose(stream):
    tokens = [w for s in stream for w in re.findall(r"[a-z']+", s.normalized)]
    counts = collections.Counter(tokens)
    top = top_n_list("en", 100)
    assert sum(counts[w] for w in top) / len(tokens) >= 0.42  # ordinary prose: about half
    for w in ("the", "of", "and", "to", "a", "in", "was", "it", "he", "had", "were", "they", "is", "who", "but"):
        assert counts[w] > 0, w  # the commonest words of English, none of which common.data.grammar says
    assert counts["the"] == max(counts.values())
    assert len(counts) >= 3000  # and a broad vocabulary beside them


def test_lengths_spread_like_ljspeech_and_respect_bounds(stream):
    lengths = np.array([len(s.normalized) for s in stream])
    share = np.histogram(np.clip(lengths, 0, 199), bins=np.arange(0, 201, 20))[0] / len(lengths)
    lj = data.LJ_CHAR_BINS / data.LJ_CHAR_BINS.sum()
    assert np.abs(share - lj).sum() < 0.4, (share.round(3), lj.round(3))  # total variation under 0.2
    assert 90 <= np.median(lengths) <= 115 and lengths.max() <= data.LJ_MAX_CHARS
    band = prose.generate(100, seed=0, max_chars=141, min_chars=101)
    assert all(101 <= len(s.normalized) <= 140 for s in band)


def test_excluded_sentences_are_skipped_and_prefixes_hold(stream):
    first = prose.generate(50, seed=7)
    assert prose.generate(20, seed=7) == first[:20] and prose.generate(50, seed=0) == stream[:50]
    without = prose.generate(50, seed=7, exclude={first[0].normalized})
    assert first[0] not in without and without[:10] == first[1:11]


def test_make_sentence_refuses_what_espeak_would_read_otherwise():
    assert prose.make_sentence("he paid $5 at 3:30 p.m.").spoken == "He paid five dollars at three thirty p m."
    assert prose.make_sentence("the café was closed.") is not None  # accents are stripped
    assert prose.make_sentence("the angle λ was small.") is None  # outside the vocabulary


def test_three_thousand_sentences_are_generated_in_seconds():
    prose.lexicon()  # the word lists and frequencies, read once per process
    start = time.perf_counter()
    assert len(prose.generate(3000, seed=11)) == 3000
    assert time.perf_counter() - start < 40  # about 7 s here; espeak-ng then takes ~20 ms a sentence
