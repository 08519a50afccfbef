"""English sentences without a download, any number of them, deterministic by seed: a small
grammar over the part-of-speech word lists of the pinned `wonderwords` package, so that
common.data.corpus can have espeak-ng speak thousands of distinct training utterances anywhere.

A sentence is one clause or several joined by conjunctions (", but ", ", while ", ...); the
last clause may be a question. A statement clause is

    subject: [determiner | a number 2-999] [adjectives] plural noun
    [adverb | modal] verb (base form) object: [determiner] [adjectives] noun (singular or plural)
    [preposition + noun phrase] [a year | an ordinal | a clock time | an adverb]

Plural subjects keep verbs in their base form, so nothing needs conjugating; plurals and a/an
come from `inflect`. A question opens with an auxiliary ("did", "why do", "what can", ...).
Numbers are written with digits ("in 1862", "at 7:30", "the 3rd"): common.data.text.normalize
spells them out, and what espeak-ng reads (Sentence.spoken) has them in words already, so
audio and normalized text say the same words.

Lengths follow LJSpeech's (data.LJ_CHAR_BINS, cut at max_chars): each sentence draws a target
length in normalized characters, takes round(target / 55) clauses and, for each, the one of a
few random clauses closest to its share of the length; targets under 40 get bare clauses
("Our harvesters curl the pulse.", 20 characters or more).
"""
from __future__ import annotations

import functools
import importlib.resources
import random
import re
from typing import NamedTuple

from common.data import text
from common.data.dataset import LJ_CHAR_BINS, LJ_MAX_CHARS, LJ_MIN_CHARS

DETERMINERS_PLURAL = ("the", "these", "those", "some", "many", "all the", "several", "a few", "most", "both",
                      "our", "their", "your", "my", "his", "her", "such", "no", "other", "")  # "": bare plural
DETERMINERS_SINGULAR = ("the", "a", "this", "that", "every", "each", "another", "our", "their", "one", "no", "my")
PREPOSITIONS = ("in", "on", "near", "under", "behind", "beside", "with", "without", "across", "along", "around",
                "after", "before", "over", "through", "toward", "against", "among", "beyond", "inside", "for",
                "from", "about", "between", "past", "below", "above")
ADVERBS = ("often", "never", "always", "rarely", "seldom", "sometimes", "usually", "quickly", "slowly", "quietly",
           "carefully", "suddenly", "gladly", "finally", "gently", "boldly", "simply", "already", "still", "almost")
CLOSING_ADVERBS = ("today", "again", "together", "at night", "in the morning", "by now", "at once", "once more",
                   "last winter", "every day", "for a while", "all along", "after all", "of course", "indeed")
MODALS = ("can", "will", "should", "might", "must", "could", "would", "may", "cannot", "did not", "do not",
          "will not", "never", "would rather", "used to")
CONJUNCTIONS = ("and", "but", "while", "because", "so", "although", "until", "when", "since", "as", "yet", "or",
                "whereas", "unless", "before", "after", "and then", "even though")
QUESTION_CONJUNCTIONS = ("but", "and", "so", "yet")
QUESTION_OPENERS = ("do", "did", "can", "will", "should", "could", "would", "must", "why do", "why did",
                    "how can", "when will", "where do", "how often do", "why can't", "don't")
WH_OBJECT = ("what do", "what did", "what can", "which of them did", "what will", "what should")
ADVERB_SUFFIXES = ("ful", "ous", "ive", "ant", "ent", "less", "ish", "al")  # adjective + "ly" is an adverb

CLAUSE_CHARS = 55  # a sentence of L characters has round(L / 55) clauses (a clause: 20-120, median 60)
SHORT_CLAUSE = 40  # clauses aiming at fewer characters have no adjectives, adverb, modal or tail
MIN_MAX_CHARS = 30  # the shortest max_chars generate() accepts
_CANDIDATES = 3  # clauses drawn at each step: the one closest to its length share wins
_WORD = re.compile(r"[a-z]{2,}")
_NUMBER = re.compile(r"\d+(?::\d\d|st|nd|rd|th)?")


class Sentence(NamedTuple):
    text: str  # as written: capital, digits, commas, final '.' or '?'
    spoken: str  # what espeak-ng reads: `text` with its numbers in words
    normalized: str  # common.data.text.normalize(text): what the model reads


@functools.lru_cache(maxsize=1)
def words() -> dict:
    """{"noun", "verb", "adjective", "adverb": sorted tuple} from wonderwords' assets: plain lowercase
    words, none of its profanity list, none the normalizer would read otherwise (an abbreviation
    at the start or end of a sentence); verbs in the base form (its few past forms dropped:
    'acted' yes, 'need' no); adverbs: ADVERBS plus adjectives with a regular -ly form."""
    assets = importlib.resources.files("wonderwords") / "assets"

    def read(name: str) -> set:
        return {w.strip() for w in (assets / name).read_text(encoding="utf-8").splitlines()}

    banned = read("profanitylist.txt")

    def clean(name: str) -> tuple:
        return tuple(sorted(w for w in read(name) if _WORD.fullmatch(w) and w not in banned
                            and text.normalize(f"{w.capitalize()} {w}.") == f"{w} {w}."))

    adjectives = clean("adjectivelist.txt")
    adverbs = {a + "ly" for a in adjectives if a.endswith(ADVERB_SUFFIXES)} - banned
    return {"noun": clean("nounlist.txt"),
            "verb": tuple(v for v in clean("verblist.txt") if not v.endswith("ed") or v.endswith("eed")),
            "adjective": adjectives, "adverb": tuple(sorted(adverbs | set(ADVERBS)))}


@functools.lru_cache(maxsize=None)
def plural_noun(noun: str) -> str:
    return text.inflect_engine().plural_noun(noun)


@functools.lru_cache(maxsize=None)
def with_article(phrase: str) -> str:
    return text.inflect_engine().a(phrase)  # "an old lamp", "a useful map", "an hour"


def ordinal_digits(k: int) -> str:
    """3 -> '3rd' (digits for the normalizer)"""
    suffix = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"{k}{suffix}"


class _Grammar:
    def __init__(self, rng: random.Random):
        self.rng, self.w = rng, words()

    def pick(self, seq):
        return seq[self.rng.randrange(len(seq))]

    def noun_phrase(self, plural: bool, rich: bool = True) -> str:
        r = self.rng.random() if rich else 0.0
        adjectives = [self.pick(self.w["adjective"]) for _ in range(0 if r < 0.45 else 1 if r < 0.85 else 2)]
        noun = self.pick(self.w["noun"])
        phrase = " ".join(adjectives + [plural_noun(noun) if plural else noun])
        if plural:
            det = str(self.rng.randint(2, 999)) if self.rng.random() < 0.08 else self.pick(DETERMINERS_PLURAL)
        else:
            det = self.pick(DETERMINERS_SINGULAR)
            if det == "a":
                return with_article(phrase)
        return f"{det} {phrase}".strip()

    def tail(self) -> list:
        out = []
        if self.rng.random() < 0.35:
            out.append(f"{self.pick(PREPOSITIONS)} {self.noun_phrase(self.rng.random() < 0.5)}")
        r = self.rng.random()
        if r < 0.05:
            out.append(f"in {self.rng.randint(1500, 1999)}")
        elif r < 0.08:
            out.append(f"for the {ordinal_digits(self.rng.randint(1, 40))} time")
        elif r < 0.11:
            out.append(f"at {self.rng.randint(1, 12)}:{5 * self.rng.randrange(12):02d}")
        elif r < 0.23:
            out.append(self.pick(CLOSING_ADVERBS))
        return out

    def statement(self, rich: bool = True) -> str:
        """A clause; not `rich`: subject, verb and object only (short sentences)."""
        r = self.rng.random() if rich else 1.0
        before = self.pick(self.w["adverb"]) if r < 0.25 else self.pick(MODALS) if r < 0.55 else ""
        parts = [self.noun_phrase(True, rich), before, self.pick(self.w["verb"]),
                 self.noun_phrase(self.rng.random() < 0.5, rich)] + (self.tail() if rich else [])
        return " ".join(p for p in parts if p)

    def question(self, rich: bool = True) -> str:
        verb = self.pick(self.w["verb"])
        if self.rng.random() < 0.25:
            parts = [self.pick(WH_OBJECT), self.noun_phrase(True, rich), verb]
        else:
            parts = [self.pick(QUESTION_OPENERS), self.noun_phrase(True, rich), verb,
                     self.noun_phrase(self.rng.random() < 0.5, rich)]
        return " ".join(parts + (self.tail() if rich else []))

    def closest(self, make, target: float) -> str:
        """Of _CANDIDATES clauses, the one whose normalized length is closest to `target`
        (short ones when the target is short)."""
        candidates = [make(target >= SHORT_CLAUSE) for _ in range(_CANDIDATES)]
        return min(candidates, key=lambda c: abs(len(_spoken(c)) - target))

    def sentence(self, target: int) -> Sentence:
        """About `target` normalized characters: round(target / CLAUSE_CHARS) clauses (at least
        one), each aiming at an equal share of what is left."""
        question = self.rng.random() < 0.2
        k = max(1, round(target / CLAUSE_CHARS))
        clauses, conjunctions, length = [], [], 0
        for i in range(k):
            if i:
                conjunctions.append(self.pick(QUESTION_CONJUNCTIONS if question and i == k - 1 else CONJUNCTIONS))
                length += len(conjunctions[-1]) + 2  # ", and " normalizes to " and "
            make = self.question if question and i == k - 1 else self.statement
            clauses.append(self.closest(make, (target - length) / (k - i)))
            length += len(_spoken(clauses[-1]))
        return _assemble(clauses, conjunctions, "?" if question else ".")


@functools.lru_cache(maxsize=None)
def _number_words(number: str) -> str:
    return text.normalize(number)


def _spoken(clause: str) -> str:
    """The clause with its numbers in words (as common.data.text.normalize reads them); clauses are
    otherwise lowercase words, so this is also their normalized text."""
    return _NUMBER.sub(lambda m: _number_words(m.group(0)), clause)


def _assemble(clauses: list, conjunctions: list, end: str) -> Sentence:
    def join(parts):
        s = parts[0] + "".join(f", {c} {p}" for c, p in zip(conjunctions, parts[1:])) + end
        return s[0].upper() + s[1:]

    written = join(clauses)
    return Sentence(written, join([_spoken(c) for c in clauses]), text.normalize(written))


def target_lengths(rng: random.Random, max_chars: int | None):
    """Endless LJSpeech-like lengths in normalized characters (data.LJ_CHAR_BINS: 20-character
    bins, uniform within a bin), cut to fit `max_chars` (end-of-text included) when given."""
    top = LJ_MAX_CHARS if max_chars is None else min(LJ_MAX_CHARS, max_chars - 1)
    bins = [b for b in range(len(LJ_CHAR_BINS)) if max(20 * b, LJ_MIN_CHARS) <= top]
    weights = [int(LJ_CHAR_BINS[b]) for b in bins]
    while True:
        b = rng.choices(bins, weights)[0]
        yield rng.randint(max(20 * b, LJ_MIN_CHARS), min(20 * b + 19, top))


def generate(n: int, seed: int = 0, max_chars: int | None = None) -> list:
    """The first `n` distinct (by normalized text) sentences of seed `seed`'s stream that fit
    `max_chars` (normalized text plus end-of-text), as [Sentence]. The same on every machine
    (random.Random(seed), pinned word lists); generate(k) is a prefix of generate(n) for k < n.
    max_chars must be at least MIN_MAX_CHARS (a clause has 20 characters or more)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if max_chars is not None and max_chars < MIN_MAX_CHARS:
        raise ValueError(f"max_chars={max_chars}: generated sentences need max_chars >= {MIN_MAX_CHARS}")
    rng = random.Random(seed)
    grammar, out, seen = _Grammar(rng), [], set()
    lengths = target_lengths(rng, max_chars)
    for _ in range(20 * n + 1000):  # a bound, never reached in practice: about 1.1 draws per sentence
        if len(out) == n:
            return out
        s = grammar.sentence(next(lengths))
        if s.normalized not in seen and (max_chars is None or len(s.normalized) + 1 <= max_chars):
            seen.add(s.normalized)
            out.append(s)
    raise ValueError(f"could not find {n} distinct sentences of at most {max_chars} characters (found {len(out)})")
