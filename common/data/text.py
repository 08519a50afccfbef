"""Text front end, written once for every framework: real text -> the characters the model reads.

Like the public implementations, the model reads plain characters (spec.vocab): lowercase
letters, space, apostrophe, period, question mark. `normalize` turns text into those in
three steps:

1. strip accents (NFD, combining marks removed); '!' and '…' end a sentence like '.';

2. `expand`: the rules of RULES, applied in order, spell out what is written with digits,
   symbols or abbreviations, in the manner of keithito/tacotron's english_cleaners (numbers
   with `inflect`) and the normalized column of LJSpeech. In brief (each rule's row holds
   its exact pattern, a description and an example, all tested):

   - Roman numerals after Chapter, Part, Book, War, ... ("Chapter II" -> "chapter two") and
     after a monarch's or pope's name ("Charles II" -> "charles the second");
   - abbreviations: titles before a name ("Mr." -> "mister", "Dr." -> "doctor", also without
     the period before a capitalized name: "Mr Smith"; "St." -> "saint" before a capitalized
     word, "street" after a capitalized word or a number, else "saint"), "No. 3" -> "number
     three", "e.g.", "i.e.", "vs.", and abbreviations that may end a sentence ("Co.", "Jr.",
     "etc.", "Nov.", ...: their period is kept where it also ends the sentence);
   - times: "12:35 p.m." / "12:35pm" -> "twelve thirty-five p m", "3:00" -> "three o'clock",
     "3pm" -> "three p m", a lone "a.m." / "p.m." -> "a m" / "p m";
   - fractions with a denominator of 2, 3 or 4, proper ("1/2" -> "one half", "3/4" -> "three
     quarters") or after a whole number ("2 1/2" -> "two and a half");
   - dates: month/day[/year], the American order ("12/3" -> "december third",
     "12/3/1863" -> "december third, eighteen sixty-three") when the month is 1-12 and the
     day 1-31, and ISO dates ("1963-11-22"); any other slash is read as a space ("24/7" is
     twenty-four seven);
   - phone numbers (555-1234, 555-123-4567, 1-800-555-1234) digit by digit;
   - money: "$5" -> "five dollars", "$1" -> "one dollar", "$5.50" -> "five dollars, fifty
     cents", "$2 million" -> "two million dollars"; "£" pounds / pence, "€" euros / cents,
     "¥" yen;
   - "5%" -> "five percent"; units after a number: "6 ft." -> "six feet", "1 lb." -> "one
     pound", also in., oz., mi., yd. ("in." with its period only);
   - ordinals ("21st" -> "twenty-first"), decades ("1860s" -> "eighteen sixties"), negative
     numbers ("-5" -> "minus five"), decimals ("3.14" -> "three point one four");
   - integers: 1000-2999 are read as years ("1862" -> "eighteen sixty-two", "1900" ->
     "nineteen hundred", "1807" -> "eighteen oh seven") except 1000-1009 and 2000-2009
     ("two thousand seven"); other integers and any number written with thousands commas
     ("1,862") as cardinals without "and" ("one hundred seventy", as LJSpeech does); numbers
     with a leading zero ("007") and of more than 15 digits digit by digit; digits glued to
     letters are read apart ("C2766" -> "c twenty-seven sixty-six");
   - symbols: & and, @ at, + plus, = equals, # number, % percent, ° degrees, a slash is a space.

3. lowercase, strip accents again, map punctuation (',;:-"()...' to spaces, typographic
   quotes and dashes to their ASCII forms), collapse spaces. Closing brackets and quotes right
   before a sentence's end are dropped first (in step 1), so '(33%).' ends 'percent.', not
   'percent .'.

Number words come out of `inflect` with hyphens and commas ("forty-two"), which step 3 turns
into spaces. `normalize` is idempotent: normalized text is lowercase and digit-free, and no
rule matches it again. Characters still outside the vocabulary after normalization are an
error naming each one (UnknownCharactersError), or are dropped on request (`encode`,
`text_to_ids` with drop_unknown=True).
"""
from __future__ import annotations

import functools
import re
import unicodedata
from typing import Callable, NamedTuple, Union

import numpy as np

from common.contract.spec import EOS, PAD, Spec

# [kyubyong] strips this punctuation; '!' ends a sentence like '.'. Typographic quotes,
# dashes, brackets and the ellipsis count as their ASCII forms ([ours]: LJSpeech-style text
# uses them).
_PUNCTUATION = str.maketrans({**{c: " " for c in ',;:-"()[]{}«»“”–—'}, "‘": "'", "’": "'"})
_SENTENCE_ENDS = str.maketrans({"!": ".", "…": "."})
_CLOSED_END = re.compile(r"[)\]}\"»”]+(?=[.?])")  # '(33%).': the bracket would leave 'percent .'
_SPACES = re.compile(r"\s+")


class TextError(ValueError):
    """Text the model cannot read."""


class TextTooLongError(TextError):
    """Text longer than spec.max_chars (a corpus skips these instead of failing)."""


class UnknownCharactersError(TextError):
    """Characters outside the vocabulary after normalization.

    .characters: the distinct unknown characters, in order of appearance; .positions: every
    (0-based position in the normalized text, character); .text: the normalized text."""

    def __init__(self, positions: list, text: str, vocab: str):
        self.positions = tuple(positions)
        self.characters = tuple(dict.fromkeys(c for _, c in positions))
        self.text = text
        listed = ", ".join(f"{c!r} at position {i}" for i, c in positions[:5])
        more = f" (and {len(positions) - 5} more)" if len(positions) > 5 else ""
        super().__init__(f"unknown characters {listed}{more} in normalized text {text!r}; "
                         f"the vocabulary is {vocab[2:]!r}")


# --- number words ---------------------------------------------------------------

_DIGIT_WORDS = "zero one two three four five six seven eight nine".split()
_FRACTIONS = {2: ("half", "halves"), 3: ("third", "thirds"), 4: ("quarter", "quarters")}
_MONTHS = ("january february march april may june july august september october november "
           "december").split()
_MAX_CARDINAL_DIGITS = 15  # [ours] longer numbers (account numbers, ...) are read digit by digit


@functools.lru_cache(maxsize=1)
def inflect_engine():
    """The one inflect engine (numbers in words here; plurals and articles of common.data.grammar),
    imported on first use: it takes ~2 s, and most text has no numbers."""
    import inflect
    return inflect.engine()


def _digits(s: str) -> str:
    """'2766' -> 'two seven six six'"""
    return " ".join(_DIGIT_WORDS[int(c)] for c in s)


def _cardinal(n: int) -> str:
    """42 -> 'forty-two'; no 'and' after hundreds ('one hundred seventy'), as LJSpeech reads."""
    if n < 0:
        return "minus " + _cardinal(-n)
    if len(str(n)) > _MAX_CARDINAL_DIGITS:
        return _digits(str(n))
    return inflect_engine().number_to_words(n, andword="")


def _ordinal_words(n: int) -> str:
    """21 -> 'twenty-first'"""
    return inflect_engine().ordinal(_cardinal(n))


def _year(n: int) -> str:
    """1862 -> 'eighteen sixty-two', 1900 -> 'nineteen hundred', 1807 -> 'eighteen oh seven';
    1000-1009, 2000-2009 and numbers outside 1000-2999 as cardinals ('two thousand seven')."""
    if not 1000 <= n <= 2999 or n % 1000 < 10:
        return _cardinal(n)
    high, low = divmod(n, 100)
    if low == 0:
        return f"{_cardinal(high)} hundred"
    return f"{_cardinal(high)} {'oh ' if low < 10 else ''}{_cardinal(low)}"


def _integer(s: str) -> str:
    """Digits as written: thousands commas -> cardinal; leading zero -> digit by digit;
    1000-2999 -> year; else cardinal."""
    if "," in s:
        return _cardinal(int(s.replace(",", "")))
    if len(s) > 1 and s[0] == "0":
        return _digits(s)
    return _year(int(s))


def _decimal(whole: str, fraction: str | None) -> str:
    """('3', '14') -> 'three point one four' (the whole part a cardinal, never a year)."""
    words = _cardinal(int(whole.replace(",", ""))) if whole else ""
    return f"{words} point {_digits(fraction)}".strip() if fraction else words


def _plural_number(words: str) -> str:
    """'eighteen sixty' -> 'eighteen sixties'"""
    return words[:-1] + "ies" if words.endswith("y") else words + "s"


# --- helpers of the rules ----------------------------------------------------------

_NUMBER = r"(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)"  # 1,862,000 or 1862000
_AMPM = r"(?i:([ap])\.?\s?m\b(\.)?)"  # am, a.m., A.M., a. m., pm, ...
_ROMAN = r"((?=[IVX])X{0,3}(?:IX|IV|V?I{0,3}))"  # I-XXXIX: after "Part", a lone C, D, L or M is a letter
_CLOSERS = "\"')]}»”’"


def _stop(m: re.Match) -> str:
    """'.' when the period a match consumed (an abbreviation's) also ends the sentence: at the
    end of the text or before a capital; else ''."""
    if not m.group(0).endswith("."):
        return ""
    rest = m.string[m.end():].lstrip(_CLOSERS)
    if not rest.strip():
        return "."
    return "." if rest[0].isspace() and rest.lstrip()[0].isupper() else ""


def _roman(s: str) -> int | None:
    """'XIV' -> 14; None if not a well-formed numeral."""
    if not re.fullmatch(r"M{0,3}(CM|CD|D?C{0,3})(XC|XL|L?X{0,3})(IX|IV|V?I{0,3})", s) or not s:
        return None
    values = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100, "D": 500, "M": 1000}
    total = 0
    for a, b in zip(s, s[1:] + " "):
        total += -values[a] if values.get(b, 0) > values[a] else values[a]
    return total


def _numbered(m: re.Match) -> str:
    n = _roman(m.group(2))
    return m.group(0) if n is None else f"{m.group(1)} {_cardinal(n)}{_stop(m)}"


def _regnal(m: re.Match) -> str:
    n = _roman(m.group(2))
    return m.group(0) if n is None else f"{m.group(1)} the {_ordinal_words(n)}{_stop(m)}"


# Abbreviations before a name: their period never ends a sentence. [keithito]'s list (with
# SUFFIXES) + ms, mt, prof, gov.
TITLES = {
    "mr": "mister", "mrs": "missus", "ms": "miz", "dr": "doctor", "drs": "doctors", "st": "saint",
    "rev": "reverend", "gen": "general", "maj": "major", "col": "colonel", "capt": "captain",
    "lt": "lieutenant", "sgt": "sergeant", "hon": "honorable", "prof": "professor", "gov": "governor",
    "ft": "fort", "mt": "mount",
}
# Abbreviations that may end a sentence: their period is kept where it also ends one.
SUFFIXES = {
    "co": "company", "inc": "incorporated", "ltd": "limited", "bros": "brothers", "jr": "junior",
    "sr": "senior", "esq": "esquire", "etc": "et cetera",
    "jan": "january", "feb": "february", "mar": "march", "apr": "april", "jun": "june", "jul": "july",
    "aug": "august", "sep": "september", "sept": "september", "oct": "october", "nov": "november",
    "dec": "december",
}
# Abbreviations read in the middle of a sentence.
INFIXES = {"e.g": "for example", "i.e": "that is", "vs": "versus", "approx": "approximately"}
# Read where the Roman numeral after them is a number ("Chapter II" -> "chapter two").
NUMBERED = ("chapter", "book", "part", "volume", "section", "article", "act", "scene", "appendix",
            "plate", "psalm", "war")
# Read where the Roman numeral after them is an ordinal ("Charles II" -> "charles the second").
REGNAL = ("Charles", "George", "Henry", "Edward", "William", "James", "Richard", "John", "Louis", "Philip",
          "Elizabeth", "Mary", "Anne", "Victoria", "Frederick", "Napoleon", "Alexander", "Nicholas", "Peter",
          "Catherine", "Francis", "Ferdinand", "Pius", "Gregory", "Leo", "Innocent", "Benedict", "Clement",
          "Paul", "Urban", "Boniface")
CURRENCIES = {  # symbol: (one, many, hundredth: one, many)
    "$": ("dollar", "dollars", "cent", "cents"),
    "£": ("pound", "pounds", "penny", "pence"),
    "€": ("euro", "euros", "cent", "cents"),
    "¥": ("yen", "yen", None, None),
}
UNITS = {"ft": ("foot", "feet"), "in": ("inch", "inches"), "lb": ("pound", "pounds"), "lbs": ("pound", "pounds"),
         "oz": ("ounce", "ounces"), "mi": ("mile", "miles"), "yd": ("yard", "yards"), "yds": ("yard", "yards")}
SYMBOLS = {"&": "and", "@": "at", "+": "plus", "=": "equals", "#": "number", "%": "percent", "°": "degrees",
           "/": ""}


def _alternatives(words) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


def _title(m: re.Match) -> str:
    key = (m.group(1) or m.group(2)).lower()
    if key == "st" and m.group(1):  # with its period
        before, after = m.string[:m.start()], m.string[m.end():]
        if not re.match(r"\s*[A-Z]", after) and re.search(r"(\b[A-Z][\w']*|\d)\s*$", before):
            return "street" + _stop(m)
    return TITLES[key] + " "


def _time(m: re.Match) -> str:
    hour, minute = int(m.group(1)), int(m.group(2))
    if hour > 23 or minute > 59:
        return m.group(0)
    words = _cardinal(hour)
    if minute:
        words += f" {'oh ' if minute < 10 else ''}{_cardinal(minute)}"
    if m.group(3):
        return f"{words} {m.group(3).lower()} m{_stop(m)}"
    if minute:
        return words
    return words + (" o'clock" if 1 <= hour <= 12 else " hundred")


def _hour(m: re.Match) -> str:
    hour = int(m.group(1))
    if not 1 <= hour <= 12:
        return m.group(0)
    return f"{_cardinal(hour)} {m.group(2).lower()} m{_stop(m)}"


def _date(month: int, day: int, year: str | None) -> str | None:
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return None
    words = f"{_MONTHS[month - 1]} {_ordinal_words(day)}"
    if year is None:
        return words
    if len(year) == 2:
        return f"{words}, {'oh ' + _DIGIT_WORDS[int(year)] if int(year) < 10 else _cardinal(int(year))}"
    return f"{words}, {_year(int(year))}"


def _us_date(m: re.Match) -> str:
    return _date(int(m.group(1)), int(m.group(2)), m.group(3)) or m.group(0)


def _iso_date(m: re.Match) -> str:
    return _date(int(m.group(2)), int(m.group(3)), m.group(1)) or m.group(0)


def _money(m: re.Match) -> str:
    one, many, cent, cents = CURRENCIES[m.group(1)]
    whole, fraction, scale = m.group(2), m.group(3), m.group(4)
    if scale:  # $2.5 million
        return f"{_decimal(whole, fraction)} {scale.lower()} {many}"
    n = int(whole.replace(",", ""))
    if fraction and (len(fraction) > 2 or cent is None):  # $1.125: no cents to speak of
        return f"{_decimal(whole, fraction)} {many}"
    hundredths = int(fraction.ljust(2, "0")) if fraction else 0
    main = f"{_cardinal(n)} {one if n == 1 else many}"
    sub = f"{_cardinal(hundredths)} {cent if hundredths == 1 else cents}" if hundredths else ""
    return f"{main}, {sub}" if n and sub else (sub or main)


def _unit(m: re.Match) -> str:
    """The unit only (the number before it is read by the number rules): singular after a lone 1."""
    one, many = UNITS[(m.group(1) or m.group(2)).lower()]
    singular = re.search(r"(?<![\d.,/])1$", m.string[:m.start()])
    return f" {one if singular else many}{_stop(m)}"


def _fraction(m: re.Match) -> str:
    whole, numerator, denominator = m.group(1), int(m.group(2)), int(m.group(3))
    if not 1 <= numerator < denominator:
        return m.group(0)  # 3/2 stays a date
    one, many = _FRACTIONS[denominator]
    if whole is None:
        return f"{_cardinal(numerator)} {one if numerator == 1 else many}"
    part = f"a {one}" if numerator == 1 else f"{_cardinal(numerator)} {many}"
    return f"{_cardinal(int(whole.replace(',', '')))} and {part}"


def _symbol(m: re.Match) -> str:
    """Spaced apart, but no space between a word and the sentence's end ('90°.' -> '90 degrees.')."""
    word = SYMBOLS[m.group(0)]
    end = "" if word and m.string.startswith((".", "?"), m.end()) else " "
    return f" {word}{end}"


def _decade(m: re.Match) -> str:
    return _plural_number(_integer(m.group(1)))


# --- the rules ---------------------------------------------------------------------


class Rule(NamedTuple):
    name: str
    pattern: re.Pattern
    replace: Union[str, Callable[[re.Match], str]]
    description: str
    example: tuple  # (text, normalize(text)): documentation, checked by the tests


def _rule(name, pattern, replace, description, example) -> Rule:
    return Rule(name, re.compile(pattern), replace, description, example)


# Applied in this order by `expand`, to the text as written (capitals still there). Every
# replacement is made of letters, spaces and ",-.'" only, so no later rule sees a digit or a
# symbol that an earlier one produced. Digits glued to letters are parted before the
# abbreviations are read, so that "6Mr." reads the same as "six Mr.".
RULES = [
    _rule("roman-numbered", rf"\b((?i:{'|'.join(NUMBERED)}))\s+{_ROMAN}\b(\.)?", _numbered,
          "a Roman numeral (I-XXXIX) after Chapter, Part, War, ... is a number",
          ("Chapter XII. The end", "chapter twelve. the end")),
    _rule("roman-regnal", rf"\b({'|'.join(REGNAL)})\s+{_ROMAN}\b(\.)?", _regnal,
          "a Roman numeral after a monarch's or pope's name is an ordinal with 'the'",
          ("the reign of Charles II., a law", "the reign of charles the second a law")),
    _rule("time", rf"(?<![\d:.])(\d{{1,2}}):(\d{{2}})(?![\d:])(?:\s*{_AMPM})?", _time,
          "h:mm [am|pm]: 'oh' before minutes 01-09, o'clock for :00 (hours 1-12; 'hundred' for 0 and 13-23)",
          ("at 12:05 p.m. and 3:00", "at twelve oh five p m and three o'clock")),
    _rule("hour-ampm", rf"(?<![\d:.,])(\d{{1,2}})\s?{_AMPM}", _hour, "an hour 1-12 followed by am/pm",
          ("at 3pm", "at three p m")),
    _rule("ampm", r"(?<![^\W\d_])(?i:([ap])\.m(\.))", lambda m: f"{m.group(1).lower()} m{_stop(m)}",
          "a.m. / p.m. written anywhere else (the space-less form only)", ("nine p.m.", "nine p m.")),
    _rule("iso-date", r"(?<![\d-])(\d{4})-(\d{1,2})-(\d{1,2})(?![\d-])", _iso_date, "yyyy-mm-dd",
          ("1963-11-22", "november twenty second nineteen sixty three")),
    _rule("phone", r"(?<![\d-])(?:(?:1-)?[2-9]\d\d-\d{3}|[2-9]\d\d)-\d{4}(?![\d-])",
          lambda m: _digits(m.group(0).replace("-", "")),
          "digit groups joined by hyphens that look like a phone number (ddd-dddd, ddd-ddd-dddd, 1-ddd-ddd-dddd; "
          "the first group of three not starting with 0 or 1): digit by digit",
          ("call 555-1234", "call five five five one two three four")),
    _rule("units", rf"(?<=\d)\s?(?:(?i:({_alternatives(k for k in UNITS if k != 'in')}))\b\.?|(?i:(in))\.)", _unit,
          "ft lb lbs oz mi yd yds (with or without a period) and in. (with it) after a number: the unit's name, "
          "singular after a lone 1", ("5 ft. 9 in. tall, 1 lb.", "five feet nine inches tall one pound.")),
    _rule("fraction", rf"(?<![\d/.,])(?:({_NUMBER})\s)?(\d)/([234])(?![\d/])", _fraction,
          "a proper fraction with a denominator of 2, 3 or 4, alone or after a whole number",
          ("2 1/2 or 3/4", "two and a half or three quarters")),
    _rule("date", r"(?<![\d/.,])(\d{1,2})/(\d{1,2})(?:/(\d{4}|\d{2}))?(?![\d/])", _us_date,
          "month/day[/year], the American order, where the month is 1-12 and the day 1-31",
          ("on 12/3/63", "on december third sixty three")),
    _rule("money", rf"([$£€¥])\s?({_NUMBER})(?:\.(\d+))?(?:\s?((?i:thousand|million|billion|trillion))\b)?",
          _money, "an amount after $ £ € ¥; one or two decimals are cents / pence",
          ("$5.50 and £1", "five dollars fifty cents and one pound")),
    _rule("percent", rf"(?<![\d.,])({_NUMBER})(?:\.(\d+))?\s?%",
          lambda m: f"{_decimal(m.group(1), m.group(2))} percent",
          "a number followed by %", ("5% or 2.5 %", "five percent or two point five percent")),
    _rule("ordinal", rf"(?<![\d.,])({_NUMBER})(?i:st|nd|rd|th)\b",
          lambda m: _ordinal_words(int(m.group(1).replace(",", ""))), "1st, 2nd, 3rd, 21st, 100th",
          ("the 21st of May", "the twenty first of may")),
    _rule("decade", r"(?<![\w'’])['’]?(\d{0,3}0)['’]?s\b", _decade, "decades: 1860s, '60s, 1860's",
          ("the 1860s", "the eighteen sixties")),
    _rule("letters-digits", r"(?<=[^\W\d_])(?=\d)|(?<=\d)(?=[^\W\d_])", " ",
          "digits glued to letters are read apart", ("C2766", "c twenty seven sixty six")),
    _rule("titles", rf"\b((?i:{_alternatives(TITLES)}))\.|\b(Mrs|Mr|Ms|Dr|St)(?=\s+[A-Z])",
          _title,
          "abbreviations before a name (Mr. Mrs. Ms. Dr. Drs. Rev. Gen. Maj. Col. Capt. Lt. Sgt. Hon. Prof. "
          "Gov. Ft. Mt. St.); Mr Mrs Ms Dr St (so written) also without the period before a capital; St. after a "
          "capitalized word or a number (not before a capital) is 'street'",
          ("Dr. Smith met Mrs Jones at St. Paul's on Elm St.",
           "doctor smith met missus jones at saint paul's on elm street.")),
    _rule("number-sign", r"\b(?i:no(s)?)\.\s*(?=\d)", lambda m: "numbers " if m.group(1) else "number ",
          "No. / Nos. before a number", ("No. 3", "number three")),
    _rule("infixes", rf"\b(?i:({_alternatives(INFIXES)}))\.", lambda m: f" {INFIXES[m.group(1).lower()]} ",
          "e.g. i.e. vs. approx.", ("cats vs. dogs, e.g. Rex", "cats versus dogs for example rex")),
    _rule("suffixes", rf"\b(?i:({_alternatives(SUFFIXES)}))\.", lambda m: SUFFIXES[m.group(1).lower()] + _stop(m),
          "abbreviations that may end a sentence (Co. Inc. Ltd. Bros. Jr. Sr. Esq. etc. and months): "
          "their period is kept at the end of the text or before a capital",
          ("Jones Jr. of Smith & Co., etc. On Nov. 22", "jones junior of smith and company et cetera. on november "
                                                        "twenty two")),
    _rule("negative", r"(?<![\w.\-−])[-−](?=\.?\d)", "minus ", "a minus sign before a number",
          ("-5 degrees", "minus five degrees")),
    _rule("decimal", rf"(?<![\d.,])({_NUMBER})\.(\d+)|(?<![\w.])\.(\d+)",
          lambda m: _decimal(m.group(1) or "", m.group(2) or m.group(3)),
          "decimals: the whole part a cardinal, then 'point' and the digits one by one",
          ("3.14 and .5", "three point one four and point five")),
    _rule("integer", rf"(?<!\d){_NUMBER}", lambda m: _integer(m.group(0)),
          "integers: 1000-2999 as years (but 1000-1009, 2000-2009 and numbers with thousands commas as "
          "cardinals); a leading zero or more than 15 digits: digit by digit",
          ("1862, 2007, 1,862 and 007", "eighteen sixty two two thousand seven one thousand eight hundred "
                                        "sixty two and zero zero seven")),
    _rule("symbols", f"[{re.escape(''.join(SYMBOLS))}]", _symbol,
          "& and, @ at, + plus, = equals, # number, % percent, ° degrees, / a space",
          ("1+1=2 & #1 @ home, and/or", "one plus one equals two and number one at home and or")),
]


def expand(text: str) -> str:
    """Apply RULES in order (numbers, money, times, dates, abbreviations, symbols -> words)."""
    for rule in RULES:
        text = rule.pattern.sub(rule.replace, text)
    return text


def _plain(text: str) -> str:
    """Accents stripped (NFD, combining marks removed); '!' and '…' end a sentence like '.';
    closing brackets and quotes before a sentence's end dropped."""
    decomposed = unicodedata.normalize("NFD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c)).translate(_SENTENCE_ENDS)
    return _CLOSED_END.sub("", plain)


def normalize(text: str) -> str:
    """Strip accents, `expand`, lowercase, map punctuation, collapse whitespace.

    Accents and sentence ends are dealt with before the expansion too, so that what it sees
    is what it would see in the normalized text again ('Mt!' -> 'mt.' would be 'mount' then):
    normalize(normalize(text)) == normalize(text)."""
    if not isinstance(text, str):
        raise TextError(f"text must be a str, not {type(text).__name__}")
    plain = _plain(expand(_plain(text)).lower())
    return _SPACES.sub(" ", plain.translate(_PUNCTUATION)).strip()


class Encoded(NamedTuple):
    ids: np.ndarray  # int32 vocabulary indices, then end-of-text
    text: str  # the normalized text the ids spell (unknown characters dropped)
    dropped: tuple  # the characters dropped (drop_unknown), in order, repeats included


def encode(text: str, spec: Spec, drop_unknown: bool = False, check_length: bool = True) -> Encoded:
    """Normalize `text` and map it to ids (followed by end-of-text).

    Characters outside the vocabulary raise UnknownCharactersError naming each one with its
    0-based position in the normalized text, unless `drop_unknown` (then they are removed,
    spaces re-collapsed, and listed in .dropped). Empty text is a TextError; text longer than
    spec.max_chars (end-of-text included) a TextTooLongError, unless not `check_length`."""
    norm = normalize(text)
    table = {c: i for i, c in enumerate(spec.vocab) if i not in (PAD, EOS)}
    unknown = [(i, c) for i, c in enumerate(norm) if c not in table]
    if unknown and not drop_unknown:
        raise UnknownCharactersError(unknown, norm, spec.vocab)
    if unknown:
        norm = _SPACES.sub(" ", "".join(c for c in norm if c in table)).strip()
    if not norm:
        dropped = f" once {len(unknown)} unknown characters are dropped" if unknown else ""
        raise TextError(f"text {text!r} is empty after normalization{dropped}")
    if check_length and len(norm) + 1 > spec.max_chars:
        raise TextTooLongError(f"text has {len(norm) + 1} characters including end-of-text; "
                               f"spec {spec.name!r} allows max_chars={spec.max_chars}: {norm[:40]!r}...")
    return Encoded(np.array([table[c] for c in norm] + [EOS], np.int32), norm, tuple(c for _, c in unknown))


def text_to_ids(text: str, spec: Spec, drop_unknown: bool = False) -> np.ndarray:
    """int32 ids of the normalized text followed by end-of-text (`encode`'s ids)."""
    return encode(text, spec, drop_unknown).ids


def ids_to_text(ids, spec: Spec) -> str:
    """The characters of `ids`, up to end-of-text; padding is skipped."""
    out = []
    for i in np.asarray(ids).ravel():
        if not 0 <= i < spec.n_vocab:
            raise TextError(f"id {int(i)} is outside the vocabulary (0..{spec.n_vocab - 1})")
        if i == EOS:
            break
        if i != PAD:
            out.append(spec.vocab[i])
    return "".join(out)
