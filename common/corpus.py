"""An LJSpeech-format corpus spoken by espeak-ng (common.espeak: the library from a pinned
wheel, nothing from the system): real (if robotic) speech for tests, smoke runs and training
without downloading LJSpeech, with a held-out set for common.quality.

    python -m common.corpus --out DIR --n N [--seed S] [--max-chars M] [--heldout K]
                            [--source auto|embedded|generated]

Sentences come from a source:
  embedded   common/sentences.txt, 368 sentences written for this project;
  generated  common.grammar: any number, deterministic by seed;
  auto       (default) embedded while n + K of its sentences fit max_chars, else generated.

The corpus holds n training utterances (metadata.csv) and K held-out ones (heldout.csv;
default: 5% of n, at least 1, at most 50), both `id|text|normalized text` with wavs/<id>.wav,
disjoint by normalized text. Ids: <source>-T0001 (training), <source>-H0001 (held-out), the
source ES001 (embedded) or ES002 (generated). The held-out sentences of the generated source
are the first K of the seed's stream, so they do not depend on n, and a smaller corpus's
training sentences are the first of a larger one's (same seed, K and max_chars).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from common import data, espeak, grammar, text
from common.spec import Spec

SENTENCES = Path(__file__).with_name("sentences.txt")
SOURCES = ("auto", "embedded", "generated")
ID_PREFIX = {"embedded": "ES001", "generated": "ES002"}
METADATA, HELDOUT = "metadata.csv", "heldout.csv"
HELDOUT_FRACTION, HELDOUT_MAX = 0.05, 50


def sentences(max_chars: int | None = None) -> list:
    """The embedded sentences, optionally only those whose normalized text plus
    end-of-text fits in `max_chars`."""
    lines = [s.strip() for s in SENTENCES.read_text(encoding="utf-8").splitlines() if s.strip()]
    return [s for s in lines if max_chars is None or len(text.normalize(s)) + 1 <= max_chars]


def default_heldout(n: int) -> int:
    """K when not given: 5% of n, at least 1, at most 50."""
    return min(HELDOUT_MAX, max(1, round(n * HELDOUT_FRACTION)))


def choose(n: int, seed: int = 0, max_chars: int | None = None, heldout: int | None = None,
           source: str = "auto") -> tuple:
    """(source used, training [grammar.Sentence], held-out [grammar.Sentence]): what
    build_corpus speaks, without speaking it. Embedded: the n training sentences are those
    chosen before held-out sets existed (a seeded choice from the pool), the held-out ones a
    seeded choice from the rest."""
    k = default_heldout(n) if heldout is None else heldout
    if source not in SOURCES:
        raise ValueError(f"source={source!r}: choose one of {SOURCES}")
    if n < 1 or k < 0:
        raise ValueError(f"n={n}, heldout={k}: need n >= 1 and heldout >= 0")
    pool = sentences(max_chars) if source != "generated" else []
    if source == "auto":
        source = "embedded" if n + k <= len(pool) else "generated"
    if source == "generated":
        stream = grammar.generate(k + n, seed, max_chars)
        return source, stream[k:], stream[:k]
    if n + k > len(pool):
        raise ValueError(f"n={n} + heldout={k}: the embedded source has {len(pool)} sentences that fit "
                         f"max_chars={max_chars} (use the generated source for more)")
    train = np.sort(np.random.default_rng(seed).choice(len(pool), n, replace=False))
    rest = np.setdiff1d(np.arange(len(pool)), train)
    held = np.sort(np.random.default_rng([seed, 1]).choice(rest, k, replace=False))
    as_sentence = lambda s: grammar.Sentence(s, s, text.normalize(s))  # noqa: E731
    return source, [as_sentence(pool[i]) for i in train], [as_sentence(pool[i]) for i in held]


def build_corpus(out_dir, n: int, seed: int = 0, max_chars: int | None = None, progress: bool = True,
                 heldout: int | None = None, source: str = "auto") -> Path:
    """Speak n training and `heldout` held-out sentences (`choose`) into out_dir/wavs/, then write
    heldout.csv and metadata.csv (last, so a partial build is never mistaken for a corpus).
    espeak-ng reads Sentence.spoken (numbers in words); the wavs are 16-bit PCM at its rate
    (22,050 Hz), one sentence the same whatever the others are."""
    source, train, held = choose(n, seed, max_chars, heldout, source)
    out = Path(out_dir)
    (out / "wavs").mkdir(parents=True, exist_ok=True)
    width = max(4, len(str(max(len(train), len(held)))))
    todo = [(f"{ID_PREFIX[source]}-H{i + 1:0{width}d}", s) for i, s in enumerate(held)]
    todo += [(f"{ID_PREFIX[source]}-T{i + 1:0{width}d}", s) for i, s in enumerate(train)]
    for uid, s in tqdm(todo, desc=f"espeak-ng ({source})", unit="utt", disable=not progress):
        samples, sr = espeak.speak(s.spoken)
        sf.write(out / "wavs" / f"{uid}.wav", samples, sr, subtype="PCM_16")
    rows = [f"{uid}|{s.text}|{s.normalized}\n" for uid, s in todo]
    (out / HELDOUT).write_text("".join(rows[:len(held)]), encoding="utf-8")
    (out / METADATA).write_text("".join(rows[len(held):]), encoding="utf-8")
    return out


def _heldout_file(corpus_dir) -> Path:
    path = Path(corpus_dir) / HELDOUT
    if not path.is_file():
        raise data.DataError(f"{path} is missing (build the corpus with python -m common.corpus)")
    return path


def read_heldout(corpus_dir) -> list:
    """[data.Entry] of heldout.csv ([] when it lists none: --heldout 0), parsed and checked by
    data.read_ljspeech."""
    if not _heldout_file(corpus_dir).read_text(encoding="utf-8").strip():
        return []
    return data.read_ljspeech(corpus_dir, HELDOUT)


def load_heldout(corpus_dir, spec: Spec, progress: bool = False) -> data.Corpus:
    """The held-out set as a data.Corpus: data.load_corpus's policy (unusable utterances
    skipped, in one warning) and its feature cache, shared with the training set's."""
    _heldout_file(corpus_dir)
    return data.load_corpus(corpus_dir, spec, progress=progress, metadata=HELDOUT)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m common.corpus", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output directory (LJSpeech layout)")
    parser.add_argument("--n", type=int, required=True, help="number of training sentences")
    parser.add_argument("--seed", type=int, default=0, help="which sentences (default 0)")
    parser.add_argument("--max-chars", type=int, default=None, help="only sentences this short (incl. end-of-text)")
    parser.add_argument("--heldout", type=int, default=None, metavar="K",
                        help=f"held-out sentences in heldout.csv (default 5%% of n, 1 to {HELDOUT_MAX})")
    parser.add_argument("--source", choices=SOURCES, default="auto",
                        help="embedded (common/sentences.txt), generated (common.grammar), or auto (default: "
                             "embedded while enough of its sentences fit, else generated)")
    args = parser.parse_args(argv)
    try:
        print(build_corpus(args.out, args.n, args.seed, args.max_chars, heldout=args.heldout, source=args.source))
    except (RuntimeError, ValueError) as err:
        parser.error(str(err))


if __name__ == "__main__":
    main()
