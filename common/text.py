"""Text front end, written once: normalization and the character vocabulary (spec.vocab).

Like the public implementations, the model reads plain characters: lowercase letters,
space, apostrophe, period, question mark. Anything else is either mapped to one of
those by `normalize` or is an error (or dropped, on request) in `text_to_ids`.
"""
from __future__ import annotations

import re
import unicodedata

import numpy as np

from common.spec import EOS, PAD, Spec

# [kyubyong] strips this punctuation; '!' ends a sentence like '.'. Typographic quotes
# and dashes count as their ASCII forms ([ours]: LJSpeech-style text uses them).
_PUNCTUATION = str.maketrans({**{c: " " for c in ',;:-"()“”–—'}, "!": ".", "‘": "'", "’": "'"})
_SPACES = re.compile(r"\s+")


class TextError(ValueError):
    """Text the model cannot read."""


class TextTooLongError(TextError):
    """Text longer than spec.max_chars (a corpus skips these instead of failing)."""


def normalize(text: str) -> str:
    """Lowercase, strip accents (NFD, combining marks removed), map punctuation, collapse whitespace."""
    if not isinstance(text, str):
        raise TextError(f"text must be a str, not {type(text).__name__}")
    decomposed = unicodedata.normalize("NFD", text.lower())
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _SPACES.sub(" ", plain.translate(_PUNCTUATION)).strip()


def text_to_ids(text: str, spec: Spec, drop_unknown: bool = False) -> np.ndarray:
    """int32 ids of the normalized text followed by end-of-text.

    Unknown characters raise a TextError naming each one with its 0-based position in the
    normalized text, unless `drop_unknown` (then they are removed, spaces re-collapsed)."""
    norm = normalize(text)
    table = {c: i for i, c in enumerate(spec.vocab) if i not in (PAD, EOS)}
    unknown = [(i, c) for i, c in enumerate(norm) if c not in table]
    if unknown and not drop_unknown:
        listed = ", ".join(f"{c!r} at position {i}" for i, c in unknown[:5])
        more = f" (and {len(unknown) - 5} more)" if len(unknown) > 5 else ""
        raise TextError(f"unknown characters {listed}{more} in normalized text {norm!r}; "
                        f"the vocabulary is {spec.vocab[2:]!r} (drop them with drop_unknown=True, or --drop-unknown on the command line)")
    if unknown:
        norm = _SPACES.sub(" ", "".join(c for c in norm if c in table)).strip()
    if not norm:
        raise TextError(f"text {text!r} is empty after normalization")
    if len(norm) + 1 > spec.max_chars:
        raise TextTooLongError(f"text has {len(norm) + 1} characters including end-of-text; "
                               f"spec {spec.name!r} allows max_chars={spec.max_chars}: {norm[:40]!r}...")
    return np.array([table[c] for c in norm] + [EOS], np.int32)


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
