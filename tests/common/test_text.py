"""Text normalization and the vocabulary."""
import numpy as np
import pytest

from common.spec import EOS, get_spec
from common.text import TextError, TextTooLongError, ids_to_text, normalize, text_to_ids

PAPER = get_spec("paper")


@pytest.mark.parametrize("raw, norm", [
    ("  Hello,   World! ", "hello world."),
    ("Café Crème", "cafe creme"),
    ("one; two: three - four", "one two three four"),
    ('He said "no" (twice).', "he said no twice ."),
    ("Tab\tand\nnewline", "tab and newline"),
    ("It’s — fine", "it's fine"),
    ("Why?!", "why?."),
])
def test_normalize(raw, norm):
    assert normalize(raw) == norm


def test_ids_are_vocabulary_indices_followed_by_end_of_text():
    ids = text_to_ids("Ab c.", PAPER)
    assert ids.dtype == np.int32
    assert ids.tolist() == [PAPER.vocab.index(c) for c in "ab c."] + [EOS]
    assert ids_to_text(ids, PAPER) == "ab c."


def test_ids_to_text_skips_padding_and_stops_at_end_of_text():
    ids = np.array([PAPER.vocab.index("h"), PAPER.vocab.index("i"), EOS, 0, 0], np.int32)
    assert ids_to_text(ids, PAPER) == "hi"
    with pytest.raises(TextError, match="32"):
        ids_to_text([2, 32], PAPER)


def test_unknown_characters_are_named_with_their_index():
    with pytest.raises(TextError, match=r"'3' at position 4, '&' at position 6"):
        text_to_ids("abc 3 & d", PAPER)


def test_drop_unknown_removes_them_and_recollapses_spaces():
    assert ids_to_text(text_to_ids("abc 3 & d", PAPER, drop_unknown=True), PAPER) == "abc d"


@pytest.mark.parametrize("raw", ["", "   ", "(, - ;)"])
def test_empty_text_is_an_error(raw):
    with pytest.raises(TextError, match="empty"):
        text_to_ids(raw, PAPER)


def test_text_that_is_only_unknown_characters_is_empty_once_dropped():
    with pytest.raises(TextError, match="empty"):
        text_to_ids("123", PAPER, drop_unknown=True)


def test_max_chars_counts_the_end_of_text():
    tiny = get_spec("tiny")
    assert len(text_to_ids("a" * (tiny.max_chars - 1), tiny)) == tiny.max_chars
    with pytest.raises(TextTooLongError, match=f"max_chars={tiny.max_chars}"):
        text_to_ids("a" * tiny.max_chars, tiny)


def test_non_string_input_is_an_error():
    with pytest.raises(TextError, match="str"):
        normalize(b"bytes")
