"""Text normalization (the expansion rules, case by case) and the vocabulary."""
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common.contract.spec import EOS, get_spec
from common.data.text import (RULES, TextError, TextTooLongError, UnknownCharactersError, encode, expand, ids_to_text,
                         normalize, text_to_ids)

PAPER = get_spec("paper")
VOCAB = set(PAPER.vocab[2:])
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("raw, norm", [
    ("  Hello,   World! ", "hello world."),
    ("Café Crème", "cafe creme"),
    ("one; two: three - four", "one two three four"),
    ('He said "no" (twice).', "he said no twice."),
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
    with pytest.raises(UnknownCharactersError, match=r"'~' at position 4, '\^' at position 6") as err:
        text_to_ids("abc ~ ^ d~", PAPER)
    assert isinstance(err.value, TextError)
    assert err.value.characters == ("~", "^")
    assert err.value.positions == ((4, "~"), (6, "^"), (9, "~"))
    assert err.value.text == "abc ~ ^ d~"
    message = str(err.value)
    assert "in normalized text 'abc ~ ^ d~'" in message and "abcdefghijklmnopqrstuvwxyz'.?" in message
    assert "drop" not in message  # the remedy depends on the caller (the CLI names --drop-unknown)


def test_unknown_characters_beyond_five_are_counted():
    with pytest.raises(UnknownCharactersError, match=r"'~' at position 4 \(and 3 more\)"):
        text_to_ids("~~~~~~~~", PAPER)


def test_drop_unknown_removes_them_and_recollapses_spaces():
    assert ids_to_text(text_to_ids("abc ~ ^ d", PAPER, drop_unknown=True), PAPER) == "abc d"


def test_encode_returns_the_ids_the_spoken_text_and_what_was_dropped():
    encoded = encode("Dr. ~Who^ at 3pm~", PAPER, drop_unknown=True)
    assert encoded.text == "doctor who at three p m"
    assert encoded.dropped == ("~", "^", "~")
    assert encoded.ids.tolist() == text_to_ids("doctor who at three p m", PAPER).tolist()
    assert ids_to_text(encoded.ids, PAPER) == encoded.text
    assert encode("plain", PAPER).dropped == ()


def test_encode_can_leave_the_length_unchecked():
    tiny = get_spec("tiny")
    assert len(encode("a" * 100, tiny, check_length=False).text) == 100
    with pytest.raises(TextTooLongError):
        encode("a" * 100, tiny)


@pytest.mark.parametrize("raw", ["", "   ", "(, - ;)"])
def test_empty_text_is_an_error(raw):
    with pytest.raises(TextError, match="empty"):
        text_to_ids(raw, PAPER)


def test_text_that_is_only_unknown_characters_is_empty_once_dropped():
    with pytest.raises(TextError, match="empty after normalization once 3 unknown characters are dropped"):
        text_to_ids("~^~", PAPER, drop_unknown=True)


def test_max_chars_counts_the_end_of_text():
    tiny = get_spec("tiny")
    assert len(text_to_ids("a" * (tiny.max_chars - 1), tiny)) == tiny.max_chars
    with pytest.raises(TextTooLongError, match=f"max_chars={tiny.max_chars}"):
        text_to_ids("a" * tiny.max_chars, tiny)


def test_non_string_input_is_an_error():
    with pytest.raises(TextError, match="str"):
        normalize(b"bytes")


# --- the expansion rules (common.data.text.RULES), case by case ------------------------------

@pytest.mark.parametrize("raw, norm", [
    # cardinals, thousands commas, leading zeros, long numbers
    ("42", "forty two"),
    ("170 pounds", "one hundred seventy pounds"),
    ("1,000 men", "one thousand men"),
    ("1,862", "one thousand eight hundred sixty two"),
    ("0", "zero"),
    ("007", "zero zero seven"),
    ("1234567890123456", "one two three four five six seven eight nine zero one two three four five six"),
    # years: 1000-2999, but 1000-1009 and 2000-2009 as cardinals
    ("in 1862", "in eighteen sixty two"),
    ("1807", "eighteen oh seven"),
    ("1900", "nineteen hundred"),
    ("1066", "ten sixty six"),
    ("2000", "two thousand"),
    ("2007", "two thousand seven"),
    ("2010", "twenty ten"),
    ("1000", "one thousand"),
    ("3000", "three thousand"),
    # ordinals, decades
    ("3rd", "third"),
    ("21st", "twenty first"),
    ("the 11th of May", "the eleventh of may"),
    ("100TH", "one hundredth"),
    ("the 1860s", "the eighteen sixties"),
    ("the '60s", "the sixties"),
    ("1990's", "nineteen nineties"),
    # decimals, negative numbers, percent, feet
    ("3.14", "three point one four"),
    ("0.5", "zero point five"),
    (".5", "point five"),
    ("1,000.25", "one thousand point two five"),
    ("-5", "minus five"),
    ("it was -3.5 degrees", "it was minus three point five degrees"),
    ("10-20", "ten twenty"),
    ("5%", "five percent"),
    ("12.5 %", "twelve point five percent"),
    ("6 ft. tall", "six feet tall"),
    ("1 ft", "one foot"),
    # units after a number ("in." only so)
    ("5 ft. 9 in. tall, about 150 lbs.", "five feet nine inches tall about one hundred fifty pounds."),
    ("1 lb. and 8 oz.", "one pound and eight ounces."),
    ("3 mi. and 100 yd. away", "three miles and one hundred yards away"),
    ("1.5 in. of rain", "one point five inches of rain"),
    ("5ft", "five feet"),
    ("1ft and 11 yds", "one foot and eleven yards"),
    ("Come in. 5 men", "come in. five men"),
    ("5 in the morning", "five in the morning"),
    ("9 1/2 in.", "nine and a half inches."),
    # phone numbers: digit by digit
    ("555-1234", "five five five one two three four"),
    ("call 555-123-4567 now", "call five five five one two three four five six seven now"),
    ("1-800-555-1234", "one eight zero zero five five five one two three four"),
    ("150-1200 pounds", "one hundred fifty twelve hundred pounds"),
    # fractions with a denominator of 2, 3 or 4
    ("1/2", "one half"),
    ("3/4 of them", "three quarters of them"),
    ("2/3", "two thirds"),
    ("2 1/2 miles", "two and a half miles"),
    ("1 3/4", "one and three quarters"),
    ("3/2", "march second"),
    ("1/2/1990", "january second nineteen ninety"),
    # no space before a sentence's end after an expansion
    ("(approx. 33%).", "approximately thirty three percent."),
    ("It was 90°.", "it was ninety degrees."),
    ('He said "yes"?', "he said yes?"),
    # money
    ("$5", "five dollars"),
    ("$1", "one dollar"),
    ("$5.50", "five dollars fifty cents"),
    ("$1.01", "one dollar one cent"),
    ("$0.50", "fifty cents"),
    ("$5.5", "five dollars fifty cents"),
    ("$1,000,000", "one million dollars"),
    ("$2.5 million", "two point five million dollars"),
    ("$1.125", "one point one two five dollars"),
    ("£3", "three pounds"),
    ("£1", "one pound"),
    ("£3.50", "three pounds fifty pence"),
    ("£1,000", "one thousand pounds"),
    ("€5", "five euros"),
    ("€1.01", "one euro one cent"),
    ("¥500", "five hundred yen"),
    ("It cost $5.", "it cost five dollars."),
    # times
    ("12:35 p.m.", "twelve thirty five p m."),
    ("12:35pm", "twelve thirty five p m"),
    ("at 12:30 P.M. sharp", "at twelve thirty p m sharp"),
    ("3:00", "three o'clock"),
    ("3:00 am", "three a m"),
    ("12:05", "twelve oh five"),
    ("14:30", "fourteen thirty"),
    ("0:00", "zero hundred"),
    ("25:99", "twenty five ninety nine"),
    ("at 3pm", "at three p m"),
    ("at 10 a.m. today", "at ten a m today"),
    ("At 4 p.m. The", "at four p m. the"),
    ("nine p.m.", "nine p m."),
    ("13 pm", "thirteen pm"),
    # dates: month/day[/year] when valid, else the numbers and a space
    ("12/3", "december third"),
    ("on 12/3, he", "on december third he"),
    ("12/3/1863", "december third eighteen sixty three"),
    ("7/4/05", "july fourth oh five"),
    ("1963-11-22", "november twenty second nineteen sixty three"),
    ("13/45", "thirteen forty five"),
    ("24/7", "twenty four seven"),
    # abbreviations
    ("Mr. Wilson", "mister wilson"),
    ("Mrs. Kennedy", "missus kennedy"),
    ("Ms. Jones", "miz jones"),
    ("Mr Smith", "mister smith"),
    ("Dr.Smith", "doctor smith"),
    ("Drs. Smith and Jones", "doctors smith and jones"),
    ("Maj. Gen. Walker", "major general walker"),
    ("Rev. Lt. Col. Capt. Sgt. Hon. Prof. Gov.", "reverend lieutenant colonel captain sergeant honorable "
                                                   "professor governor"),
    ("Ft. Worth", "fort worth"),
    ("Mt. Vernon", "mount vernon"),
    ("St. Paul's", "saint paul's"),
    ("St Louis", "saint louis"),
    ("Elm St.", "elm street."),
    ("12 Main St. in town", "twelve main street in town"),
    ("MS Word", "ms word"),
    ("Smith & Co., Ltd.", "smith and company limited."),
    ("Acme Inc. and Bros.", "acme incorporated and brothers."),
    ("John Smith Jr. and Sr.", "john smith junior and senior."),
    ("Jones, Esq.", "jones esquire."),
    ("etc.", "et cetera."),
    ("cats, dogs, etc., and birds", "cats dogs et cetera and birds"),
    ("e.g. this", "for example this"),
    ("as, e.g., that", "as for example that"),
    ("i.e. that", "that is that"),
    ("Smith vs. Jones", "smith versus jones"),
    ("approx. 5", "approximately five"),
    ("Nov. 22, 1963", "november twenty two nineteen sixty three"),
    ("Sept. 1st", "september first"),
    ("No. 3", "number three"),
    ("Nos. 3 and 4", "numbers three and four"),
    ("No. I won't", "no. i won't"),
    # Roman numerals
    ("Chapter II.", "chapter two."),
    ("Chapter IV. The end", "chapter four. the end"),
    ("World War II", "world war two"),
    ("Part C", "part c"),
    ("Charles II., a law", "charles the second a law"),
    ("George III. c. 59", "george the third c. fifty nine"),
    ("Henry VIII's wives", "henry the eighth's wives"),
    # symbols, and digits glued to letters
    ("salt & pepper", "salt and pepper"),
    ("me@home", "me at home"),
    ("2+2=4", "two plus two equals four"),
    ("#1", "number one"),
    ("100%!", "one hundred percent."),
    ("5°", "five degrees"),
    ("and/or", "and or"),
    ("C2766", "c twenty seven sixty six"),
    ("MP3 player", "mp three player"),
    # the issue's example
    ("Dr. Smith paid $5 on 12/3, didn't he?", "doctor smith paid five dollars on december third didn't he?"),
])
def test_expansion_rules(raw, norm):
    assert normalize(raw) == norm


@pytest.mark.parametrize("rule", RULES, ids=[r.name for r in RULES])
def test_every_rule_matches_and_gives_its_documented_example(rule):
    raw, norm = rule.example
    assert rule.pattern.search(raw), f"rule {rule.name!r} does not match its own example"
    assert normalize(raw) == norm
    assert rule.description


def test_rule_names_are_unique():
    names = [r.name for r in RULES]
    assert len(names) == len(set(names))


def test_expand_keeps_text_without_numbers_symbols_or_abbreviations():
    plain = "The quick brown fox, it's said, jumped over the lazy dog. Why?"
    assert expand(plain) == plain


def test_the_issue_example_is_read_in_the_vocabulary():
    norm = normalize("Dr. Smith paid $5 on 12/3, didn't he?")
    assert set(norm) <= VOCAB
    assert "doctor" in norm and "five dollars" in norm and "december third" in norm


@pytest.mark.parametrize("raw", [
    "Dr. Smith paid $5 on 12/3, didn't he?", "At 4 p.m. The", "in St.", "Chapter II.", "etc.", "1,862 & 5%",
    "12:35 p.m.", "a~b 3", "No. 3 vs. No. 4 e.g. i.e.", "It's — fine!", "Mr Smith Jr.",
    "5 ft. 9 in.", "2 1/2 lbs.", "555-1234", "(approx. 33%).", "St).", "Mt&.", "Mt/.", "6 in.)",
    # what the punctuation, accent and letter/digit steps could turn into a rule's match the second time
    "Mt!", "6Mr!", "x0mŕ!", "50p.m.", "8::a…:m…t", "Dŕ. Who",
])
def test_normalize_is_idempotent(raw):
    once = normalize(raw)
    assert normalize(once) == once


def test_normalize_is_idempotent_on_random_text():
    rng = random.Random(0)
    pieces = list("0123456789 ,.:/-$£€¥%&@+=#°'!?~…’é") + [
        "Mr.", "St.", "No.", "p.m.", "a.m.", "12:30", "$5.50", "1862", "Chapter", "II", "Charles", "etc.", "e.g.",
        "Co.", "1st", "'60s", "ft", "3pm", "12/3", "1963-11-22", "The", "Mt", "a", "m", "x", "in.", "lbs", "1/2",
        "555-1234", ")", '"', "]"]
    for _ in range(3000):
        raw = rng.choice(["", " "]).join(rng.choice(pieces) for _ in range(rng.randint(0, 10)))
        once = normalize(raw)
        assert normalize(once) == once, raw


def _ljspeech_sample():
    lines = (ROOT / "tests/common/ljspeech_raw_sample.txt").read_text(encoding="utf-8").splitlines()
    return [tuple(line.split("|")) for line in lines if line and not line.startswith("#")]


LJSPEECH = _ljspeech_sample()
# Where LJSpeech's own normalized column reads digits one by one (serial and box numbers).
LJSPEECH_READS_DIGITS = {"LJ032-0006", "LJ032-0029", "LJ032-0036"}


@pytest.mark.parametrize("uid, raw, lj_norm", LJSPEECH, ids=[u for u, _, _ in LJSPEECH])
def test_ljspeech_raw_text_normalizes_into_the_vocabulary(uid, raw, lj_norm):
    norm = encode(raw, PAPER, drop_unknown=False, check_length=False).text  # raises on unknown characters
    assert set(norm) <= VOCAB and normalize(norm) == norm
    if uid not in LJSPEECH_READS_DIGITS:  # and we read it as LJSpeech's transcribers did
        assert norm == normalize(lj_norm)


def test_ljspeech_sample_is_a_real_sample():
    assert len(LJSPEECH) >= 30
    assert all(any(c.isdigit() or c in "$£" for c in raw) or "." in raw for _, raw, _ in LJSPEECH)


def test_inflect_is_imported_only_when_a_number_is_read():
    code = ("import sys, common.data.text as t; t.normalize('Dr. Who'); a = 'inflect' in sys.modules; "
            "t.normalize('42'); print(a, 'inflect' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.split() == ["False", "True"]
