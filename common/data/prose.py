"""English as it is written, any number of sentences, deterministic by seed: the default
training text of the espeak-ng corpora (common.data.corpus --source prose).

Why not common.data.grammar: its sentences ("Our creepy cenotaphs command such disagreeable
deeds.") never use the words that make up half of real prose (and, was, it, he, had, ...), so a
model trained on them had never heard the commonest sounds of English. Here:

- function words come from the sentence patterns of narrative and expository prose (the style
  of LJSpeech's books): pronouns, was/were/had, articles, prepositions, relative clauses (who,
  which, that), subordinate clauses (because, when, although, ...), "there was", "it was ...
  to", reported speech ("he said that ..."), openers ("In 1963, ...", "However, ..."), names
  with titles ("Mr. Hall"), numbers the text front end reads (years, counts, clock times,
  money, percentages, ordinals, decades, dates);
- content words are wonderwords' part-of-speech lists, drawn as often as English uses them:
  weight = (wordfreq's frequency) ** FREQUENCY_POWER, so "time", "house" and "found" are
  common and "cenotaph" rare, yet present;
- inflections (past tense, participles, -s, -ing) come from lemminflect, plurals and a/an
  from inflect;
- lengths follow LJSpeech's (common.data.grammar.target_lengths: median ~102 characters, up to
  187): each sentence is the best of a few candidates around a drawn target length.

Every sentence is checked: its spoken form (numbers and abbreviations in words,
common.data.text.expand, punctuation kept for espeak-ng's pauses) normalizes to exactly what the
model reads, and nothing falls outside the vocabulary; a sentence that fails is drawn again.
"""
from __future__ import annotations

import functools
import random
from typing import NamedTuple

from common.contract import spec
from common.data import text
from common.data.dataset import LJ_MAX_CHARS
from common.data.grammar import Sentence, ordinal_digits, plural_noun, target_lengths, with_article, words

FREQUENCY_POWER = 0.75  # word weight = frequency ** 0.75: real prose's order, a flatter tail (more words seen)
CANDIDATES = 4  # sentences drawn per target length: the closest wins
MIN_MAX_CHARS = 25  # the shortest max_chars generate() accepts
NAMES_FIRST = ("John", "Mary", "James", "Elizabeth", "William", "Margaret", "Charles", "Alice", "George", "Helen",
               "Thomas", "Anna", "Robert", "Ruth", "Henry", "Sarah", "Edward", "Clara", "Joseph", "Emily", "Frank",
               "Martha", "Arthur", "Lucy", "Walter", "Grace", "Samuel", "Jane", "Albert", "Louise")
NAMES_LAST = ("Smith", "Johnson", "Brown", "Taylor", "Miller", "Wilson", "Moore", "Clark", "Hall", "Walker", "Young",
              "Allen", "Wright", "Scott", "Green", "Baker", "Adams", "Nelson", "Hill", "Campbell", "Mitchell",
              "Roberts", "Carter", "Phillips", "Evans", "Turner", "Parker", "Collins", "Edwards", "Stewart", "Morris",
              "Murphy", "Cook", "Rogers", "Morgan", "Cooper", "Reed", "Bailey", "Bell", "Howard", "Ward", "Fisher")
TITLES = ("Mr.", "Mrs.", "Dr.", "Miss", "Captain", "Judge", "Colonel", "Governor")
PLACES = ("London", "New York", "Chicago", "Boston", "Paris", "Texas", "Dallas", "Washington", "Virginia", "England",
          "France", "America", "the city", "the country", "the capital", "the prison", "the station", "the office")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
PREPOSITIONS = ("in", "on", "at", "to", "from", "with", "into", "for", "of", "by", "near", "under", "after", "before",
                "through", "about", "over", "across", "toward", "against", "without", "between", "behind", "during")
SUBORDINATORS = ("because", "when", "although", "while", "after", "before", "since", "until", "if", "as", "though",
                 "whereas", "as soon as", "so that", "even though", "where")
COORDINATORS = ("and", "but", "so", "yet", "or", "and then", "for")
OPENERS = ("However", "In fact", "At first", "For example", "Of course", "In the meantime", "At last", "Later",
           "Meanwhile", "Moreover", "Nevertheless", "As a result", "In the end", "On the other hand", "Indeed",
           "At that time", "After a while", "Soon afterward", "In the morning", "That evening", "Perhaps", "Then",
           "Still", "Finally", "According to the report", "In this case", "Even so", "For this reason")
MODALS = ("would", "could", "should", "might", "must", "can", "will", "may", "did not", "could not", "would not")
SAYING = ("said", "thought", "knew", "believed", "explained", "wrote", "stated", "felt", "remembered", "noticed",
          "testified", "admitted", "claimed", "learned", "decided")
CATENATIVES = ("want", "try", "begin", "decide", "refuse", "hope", "seem", "manage", "fail", "plan", "continue",
               "need", "agree", "promise", "learn", "expect", "attempt", "offer", "happen", "like")  # + to + verb
INTENSIFIERS = ("very", "quite", "rather", "too", "so", "almost", "not", "more", "most", "less", "extremely")
QUANTIFIERS_PLURAL = ("the", "these", "those", "some", "many", "all the", "several", "a few", "most of the",
                      "both", "their", "his", "her", "our", "other", "such", "no", "two of the", "")
DETERMINERS_SINGULAR = ("the", "a", "this", "that", "his", "her", "their", "its", "our",
                        "every", "each", "another", "one", "no", "the same", "the first", "the last", "my", "your")
PRONOUNS = {"he": "sg", "she": "sg", "it": "sg", "they": "pl", "we": "pl", "I": "i", "you": "pl"}
# closed-class words that wonderwords also lists as nouns, verbs or adjectives ("the can", "to will")
_CLOSED = {"can", "will", "may", "might", "must", "shall", "other", "first", "last", "most", "many", "much", "few",
           "back", "well", "down", "up", "out", "off", "still", "right", "being", "going", "used", "known", "like",
           "want", "need", "own", "be", "do", "have", "get", "one", "none", "something", "anything", "nothing",
           "everything", "someone", "anyone", "everyone", "half", "level", "kind", "long", "past", "near", "more",
           "less", "least", "best", "better", "worse", "worst", "such", "same", "next", "only", "even", "just"}
_BE = {("past", "sg"): "was", ("past", "pl"): "were", ("past", "i"): "was",
       ("present", "sg"): "is", ("present", "pl"): "are", ("present", "i"): "am"}
_HAVE = {"sg": "has", "pl": "have", "i": "have"}
_DO = {"sg": "does", "pl": "do", "i": "do"}


class Lexicon(NamedTuple):
    """Content words by part of speech, each with cumulative weights for random.choices."""
    noun: tuple
    verb: tuple
    adjective: tuple
    adverb: tuple


@functools.lru_cache(maxsize=1)
def lexicon() -> Lexicon:
    """wonderwords' nouns, verbs, adjectives and adverbs (common.data.grammar.words: plain, no
    profanity, read as written) without closed-class words, each as (words, cumulative weights)
    with weight = wordfreq's English frequency ** FREQUENCY_POWER (words wordfreq has never
    seen are dropped: too rare to teach anything)."""
    import itertools

    from wordfreq import word_frequency

    def weighted(seq):
        pairs = [(w, word_frequency(w, "en") ** FREQUENCY_POWER) for w in seq if w not in _CLOSED]
        pairs = [(w, f) for w, f in pairs if f > 0]
        return tuple(w for w, _ in pairs), tuple(itertools.accumulate(f for _, f in pairs))

    w = words()
    return Lexicon(*(weighted(w[k]) for k in ("noun", "verb", "adjective", "adverb")))


@functools.lru_cache(maxsize=None)
def _inflection(verb: str, tag: str) -> str:
    """lemminflect's form of `verb` for a Penn tag (VBD past, VBN participle, VBZ 3rd person,
    VBG -ing); the regular rule where it has none."""
    from lemminflect import getInflection

    forms = getInflection(verb, tag=tag)
    return forms[0] if forms else verb + {"VBD": "ed", "VBN": "ed", "VBZ": "s", "VBG": "ing"}[tag]


@functools.lru_cache(maxsize=None)
def _weights(seq: tuple) -> tuple:
    """Cumulative weights of function words and phrases: wordfreq's frequency of each (of a
    phrase: wordfreq's estimate for the words together; "" counts as "the")."""
    import itertools

    from wordfreq import word_frequency

    return tuple(itertools.accumulate(word_frequency(w or "the", "en") for w in seq))


class _Writer:
    """One random stream of clauses; every method returns written text (digits, capitals of
    names and titles) without the sentence's first capital or final punctuation."""

    def __init__(self, rng: random.Random):
        self.rng, self.lex = rng, lexicon()

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def pick(self, seq):
        return seq[self.rng.randrange(len(seq))]

    def common(self, seq):
        """One of `seq` (function words, phrases) as often as English uses it (_weights)."""
        return self.rng.choices(seq, cum_weights=_weights(seq))[0]

    def word(self, pos: str) -> str:
        seq, cumulative = getattr(self.lex, pos)
        return self.rng.choices(seq, cum_weights=cumulative)[0]

    # --- numbers the text front end reads ------------------------------------------------
    def number_phrase(self) -> str:
        r = self.rng.random()
        if r < 0.25:
            return f"in {self.rng.randint(1700, 1999)}"
        if r < 0.35:
            return f"in the {10 * self.rng.randint(170, 199)}s"
        if r < 0.5:
            return f"at {self.rng.randint(1, 12)}:{5 * self.rng.randrange(12):02d} {self.pick(('a.m.', 'p.m.'))}"
        if r < 0.62:
            return f"on {self.pick(MONTHS)} {self.rng.randint(1, 28)}, {self.rng.randint(1800, 1999)}"
        if r < 0.74:
            cents = f".{self.rng.randint(1, 99):02d}" if self.chance(0.2) else ""
            return f"for ${self.rng.choice((self.rng.randint(1, 99), self.rng.randint(100, 5000)))}{cents}"
        if r < 0.84:
            return f"for the {ordinal_digits(self.rng.randint(1, 40))} time"
        if r < 0.92:
            return f"by {self.rng.randint(2, 90)}%"
        return f"about {self.rng.randint(2, 20)} {self.pick(('miles', 'feet', 'days', 'years', 'minutes', 'hours'))} later"

    # --- noun phrases -----------------------------------------------------------------------
    def name(self) -> str:
        r = self.rng.random()
        if r < 0.4:
            return f"{self.pick(TITLES)} {self.pick(NAMES_LAST)}"
        if r < 0.7:
            return self.pick(NAMES_FIRST)
        return f"{self.pick(NAMES_FIRST)} {self.pick(NAMES_LAST)}"

    def noun_phrase(self, plural: bool, depth: int = 0) -> str:
        adjectives = [self.word("adjective") for _ in range(0 if self.chance(0.6) else 1 if self.chance(0.85) else 2)]
        if adjectives and self.chance(0.1):
            adjectives[0] = f"{self.pick(INTENSIFIERS[:4])} {adjectives[0]}"
        noun = self.word("noun")
        phrase = " ".join(adjectives + [plural_noun(noun) if plural else noun])
        if plural:
            det = str(self.rng.randint(2, 500)) if self.chance(0.08) else self.common(QUANTIFIERS_PLURAL)
            phrase = f"{det} {phrase}".strip()
        else:
            det = self.common(DETERMINERS_SINGULAR)
            phrase = with_article(phrase) if det == "a" else f"{det} {phrase}"
        if depth == 0 and self.chance(0.2):
            phrase += f" of {self.noun_phrase(self.chance(0.3), depth + 1)}"
        elif depth == 0 and self.chance(0.12):
            phrase += " " + self.relative(plural)
        return phrase

    def subject(self) -> tuple:
        """(written subject, agreement: 'sg', 'pl' or 'i')."""
        r = self.rng.random()
        if r < 0.4:
            pronoun = self.pick(tuple(PRONOUNS))
            return pronoun, PRONOUNS[pronoun]
        if r < 0.52:
            return self.name(), "sg"
        plural = self.chance(0.35)
        return self.noun_phrase(plural), "pl" if plural else "sg"

    def object(self) -> str:
        r = self.rng.random()
        if r < 0.12:
            return self.pick(("him", "her", "it", "them", "us", "me", "himself", "it again", "this", "that"))
        if r < 0.18:
            return self.name()
        return self.noun_phrase(self.chance(0.35))

    def relative(self, plural: bool) -> str:
        """'who had seen the car', 'which he found', 'that was ...'."""
        who = self.pick(("who", "which", "that"))
        if self.chance(0.5):
            return f"{who} {self.predicate('pl' if plural else 'sg', self.pick(('past', 'past', 'perfect')))}"
        subject, agreement = self.subject()
        return f"{who} {subject} {self.verb_form(agreement, 'past')}"

    # --- verbs ----------------------------------------------------------------------------
    def verb_form(self, agreement: str, tense: str, verb: str | None = None) -> str:
        verb = verb or self.word("verb")
        if tense == "past":
            return _inflection(verb, "VBD")
        if tense == "present":
            return _inflection(verb, "VBZ") if agreement == "sg" else verb
        if tense == "perfect":
            return f"had {_inflection(verb, 'VBN')}"
        if tense == "present perfect":
            return f"{_HAVE[agreement]} {_inflection(verb, 'VBN')}"
        return f"{self.common(MODALS)} {verb}"  # modal

    def predicate(self, agreement: str, tense: str) -> str:
        """What the subject did or was, in `tense`; about a third with a phrase after it."""
        be = _BE[("present" if tense.startswith("present") else "past", agreement)]
        r = self.rng.random()
        if r < 0.14:  # copula + adjective
            adjective = self.word("adjective")
            if self.chance(0.3):
                adjective = f"{self.common(INTENSIFIERS)} {adjective}"
            if self.chance(0.2):
                adjective += f" and {self.word('adjective')}"
            out = f"{be} {adjective}"
        elif r < 0.22:  # passive
            out = f"{be} {_inflection(self.word('verb'), 'VBN')}" + (f" by {self.object()}" if self.chance(0.5) else "")
        elif r < 0.30:  # progressive
            out = f"{be} {_inflection(self.word('verb'), 'VBG')} {self.object()}"
        elif r < 0.36:  # copula + noun phrase
            out = f"{be} {self.noun_phrase(agreement == 'pl')}"
        elif r < 0.46:  # catenative: "tried to open the door"
            out = f"{self.verb_form(agreement, tense, self.pick(CATENATIVES))} to {self.word('verb')} {self.object()}"
        else:
            out = f"{self.verb_form(agreement, tense)} {self.object()}"
        if self.chance(0.12):
            out = f"{self.word('adverb')} {out}" if not out.startswith(be) else out.replace(be, f"{be} {self.word('adverb')}", 1)
        if self.chance(0.3):
            out += f" {self.common(PREPOSITIONS)} {self.noun_phrase(self.chance(0.3)) if self.chance(0.8) else self.pick(PLACES)}"
        if self.chance(0.1):
            out += " " + self.number_phrase()
        return out

    def tense(self) -> str:
        r = self.rng.random()
        return "past" if r < 0.6 else "present" if r < 0.75 else "perfect" if r < 0.85 else "modal" if r < 0.95 \
            else "present perfect"

    def clause(self) -> str:
        r = self.rng.random()
        if r < 0.08:
            agreement = "pl" if self.chance(0.4) else "sg"
            be = _BE[("past" if self.chance(0.7) else "present", agreement)]
            where = f" {self.pick(PREPOSITIONS[:3])} {self.noun_phrase(False)}" if self.chance(0.6) else ""
            return f"there {be} {self.noun_phrase(agreement == 'pl')}{where}"
        if r < 0.13:
            return (f"it {self.pick(('was', 'is', 'had been', 'would be'))} {self.word('adjective')} to "
                    f"{self.word('verb')} {self.object()}")
        if r < 0.2:
            subject, agreement = self.subject()
            return f"{subject} {self.common(SAYING)} that {self.clause_plain()}"
        if r < 0.25:
            subject, agreement = self.subject()
            tense = self.tense() if self.chance(0.5) else "past"
            return f"{subject} {self.predicate(agreement, tense)} and {self.predicate(agreement, tense)}"
        return self.clause_plain()

    def clause_plain(self) -> str:
        subject, agreement = self.subject()
        return f"{subject} {self.predicate(agreement, self.tense())}"

    def question(self) -> str:
        subject, agreement = self.subject()
        r = self.rng.random()
        if r < 0.5:
            aux = self.pick(("did", "why did", "how did", "when did", "where did", _DO[agreement],
                             "why " + _DO[agreement], "could", "would", "should", "can"))
            return f"{aux} {subject} {self.word('verb')} {self.object()}"
        if r < 0.8:
            be = _BE[("past" if self.chance(0.6) else "present", agreement)]
            return f"{self.pick(('', 'why ', 'how '))}{be} {subject} {self.word('adjective')}".strip()
        return f"what {'did' if self.chance(0.6) else _DO[agreement]} {subject} {self.word('verb')}"

    def sentence(self, clauses: int) -> str:
        """`clauses` clauses, joined as prose joins them; an opener or a number now and then."""
        if self.chance(0.05):
            return self.question() + "?"
        parts = [self.clause()]
        for _ in range(clauses - 1):
            r = self.rng.random()
            if r < 0.45:
                parts.append(f", {self.common(COORDINATORS)} {self.clause()}")
            elif r < 0.85:
                parts.append(f"{',' if self.chance(0.5) else ''} {self.common(SUBORDINATORS)} {self.clause()}")
            else:
                parts.append(f"; {self.clause()}")
        out = "".join(parts)
        if self.chance(0.25):
            out = f"{self.pick(OPENERS)}, {out}"
        elif self.chance(0.1):
            out = f"{self.common(SUBORDINATORS)} {self.clause()}, {out}"
        if self.chance(0.08):
            out += " " + self.number_phrase()
        return out if out.endswith(".") else out + "."  # "... at 3:50 p.m."


def _capitalized(s: str) -> str:
    return s[0].upper() + s[1:]


def make_sentence(written: str) -> Sentence | None:
    """The Sentence of a written one, or None when it cannot be used: what espeak-ng reads (the
    numbers and abbreviations in words, common.data.text.expand) must normalize to what the model
    reads, and that must lie in the vocabulary."""
    written = _capitalized(written)
    spoken = text.expand(written)
    normalized = text.normalize(written)
    if text.normalize(spoken) != normalized or not set(normalized) <= set(spec.VOCAB[2:]):
        return None
    return Sentence(written, spoken, normalized)


CLAUSE_CHARS = 45  # characters per clause, on average, of this writer's clauses


def generate(n: int, seed=0, max_chars: int | None = None, min_chars: int = 0, exclude=()) -> list:
    """The first `n` distinct (by normalized text) sentences of seed `seed`'s stream whose
    normalized text has at least `min_chars` characters and fits `max_chars` (with the
    end-of-text), as [common.data.grammar.Sentence]. Target lengths follow LJSpeech's within those
    bounds; normalized texts in `exclude` are skipped (a held-out set). The same on every
    machine (random.Random(seed), pinned word lists and frequencies); generate(k) is a prefix
    of generate(n) for k < n."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if max_chars is not None and max_chars < MIN_MAX_CHARS:
        raise ValueError(f"max_chars={max_chars}: prose sentences need max_chars >= {MIN_MAX_CHARS}")
    rng = random.Random(seed)
    writer, out, seen = _Writer(rng), [], set(exclude)
    limit = LJ_MAX_CHARS + 1 if max_chars is None else max_chars  # normalized text + end-of-text
    lengths = (t for t in target_lengths(rng, max_chars) if t >= min_chars)
    for _ in range(50 * n + 1000):  # a bound: about 1.2 draws per sentence in practice
        if len(out) == n:
            return out
        target = next(lengths)
        clauses = max(1, round(target / CLAUSE_CHARS))
        candidates = [s for s in (make_sentence(writer.sentence(clauses)) for _ in range(CANDIDATES)) if s]
        fitting = [s for s in candidates if min_chars <= len(s.normalized) < limit]
        if not fitting:
            continue
        best = min(fitting, key=lambda s: abs(len(s.normalized) - target))
        if best.normalized not in seen:
            seen.add(best.normalized)
            out.append(best)
    raise ValueError(f"could not find {n} distinct sentences of at most {max_chars} characters (found {len(out)})")
