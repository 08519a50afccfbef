"""An LJSpeech-format corpus spoken by espeak-ng (common.data.espeak: the library from a pinned
wheel, nothing from the system): real (if robotic) speech for tests, smoke runs and training
without downloading LJSpeech, with a held-out set for common.evaluation.quality.

    python -m common.data.corpus --out DIR --n N [--seed S] [--max-chars M] [--heldout K]
                            [--source auto|embedded|generated]

Sentences come from a source:
  embedded   common/data/sentences.txt, 368 sentences written for this project;
  prose      common.data.prose: English as it is written (function words, clauses, names, numbers;
             word frequencies of real English), any number, deterministic by seed;
  generated  common.data.grammar: the older toy grammar (plural nouns, base-form verbs), kept as an option;
  auto       (default) embedded while n + K of its sentences fit max_chars, else prose.

The corpus holds n training utterances (metadata.csv) and K held-out ones (heldout.csv), both
`id|text|normalized text` with wavs/<id>.wav, disjoint by normalized text. Ids: <source>-T0001
(training), <source>-H0001 (held-out), the source ES001 (embedded), ES002 (generated) or ES003
(prose). The prose source's held-out set is drawn band by band (data.LENGTH_BANDS that fit
max_chars; default K: 5% of n spread over the bands, at least 1 and at most 30 a band), so that
common.evaluation.quality can report every band; the other sources' default K is 5% of n, 1 to 50. The
held-out sentences of the generated sources do not depend on n, and a smaller corpus's training
sentences are the first of a larger one's (same seed, K and max_chars).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from common.data import dataset as data, espeak, grammar, prose, text
from common.contract.spec import Spec

SENTENCES = Path(__file__).with_name("sentences.txt")
SOURCES = ("auto", "embedded", "prose", "generated")
ID_PREFIX = {"embedded": "ES001", "generated": "ES002", "prose": "ES003"}
METADATA, HELDOUT = "metadata.csv", "heldout.csv"
HELDOUT_FRACTION, HELDOUT_MAX = 0.05, 50
HELDOUT_PER_BAND = 30  # prose: at most this many held-out sentences per length band (>= 25 to report one)


def sentences(max_chars: int | None = None) -> list:
    """The embedded sentences, optionally only those whose normalized text plus
    end-of-text fits in `max_chars`."""
    lines = [s.strip() for s in SENTENCES.read_text(encoding="utf-8").splitlines() if s.strip()]
    return [s for s in lines if max_chars is None or len(text.normalize(s)) + 1 <= max_chars]


def default_heldout(n: int, bands: int | None = None) -> int:
    """K when not given: 5% of n, at least 1, at most 50; spread over `bands` length bands (the
    prose source): at least 1 and at most HELDOUT_PER_BAND a band."""
    if bands is None:
        return min(HELDOUT_MAX, max(1, round(n * HELDOUT_FRACTION)))
    return bands * min(HELDOUT_PER_BAND, max(1, round(n * HELDOUT_FRACTION / bands)))


def length_bands(max_chars: int | None) -> list:
    """data.LENGTH_BANDS cut to what fits max_chars (normalized characters + end-of-text)."""
    top = data.LJ_MAX_CHARS if max_chars is None else min(data.LJ_MAX_CHARS, max_chars - 1)
    return [(lo, min(hi, top)) for lo, hi in data.LENGTH_BANDS if lo <= top]


def _prose(n: int, k: int, seed: int, max_chars: int | None) -> tuple:
    """(training, held-out) of the prose source: k held-out sentences spread evenly over the
    length bands (each band its own seeded stream, so the set does not depend on n), then the
    seed's training stream without them."""
    bands = length_bands(max_chars)
    per_band = [k // len(bands) + (i < k % len(bands)) for i in range(len(bands))]
    held = [s for (lo, hi), m in zip(bands, per_band)
            for s in prose.generate(m, f"{seed}-heldout-{lo}", max_chars=hi + 1, min_chars=max(lo, data.LJ_MIN_CHARS))]
    return prose.generate(n, seed, max_chars, exclude={s.normalized for s in held}), held


def choose(n: int, seed: int = 0, max_chars: int | None = None, heldout: int | None = None,
           source: str = "auto") -> tuple:
    """(source used, training [grammar.Sentence], held-out [grammar.Sentence]): what
    build_corpus speaks, without speaking it. Embedded: the n training sentences are those
    chosen before held-out sets existed (a seeded choice from the pool), the held-out ones a
    seeded choice from the rest."""
    if source not in SOURCES:
        raise ValueError(f"source={source!r}: choose one of {SOURCES}")
    pool = sentences(max_chars) if source in ("auto", "embedded") else []
    if source == "auto":
        source = "embedded" if n + (default_heldout(n) if heldout is None else heldout) <= len(pool) else "prose"
    k = heldout if heldout is not None else default_heldout(n, len(length_bands(max_chars)) if source == "prose" else None)
    if n < 1 or k < 0:
        raise ValueError(f"n={n}, heldout={k}: need n >= 1 and heldout >= 0")
    if source == "prose":
        return (source, *_prose(n, k, seed, max_chars))
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


def _words(sentences) -> list:
    return [w for s in sentences for w in s.normalized.replace(".", " ").replace("?", " ").split()]


def describe(train, held) -> str:
    """What makes a corpus like English prose, measured (../shared-free: wordfreq's list): the
    share of training word tokens among the 100 most frequent English words (ordinary prose:
    about half), the held-out word tokens never seen in training, and the sentence lengths in
    20-character bins against LJSpeech's (data.LJ_CHAR_BINS)."""
    from wordfreq import top_n_list

    top, tokens, held_tokens = set(top_n_list("en", 100)), _words(train), _words(held)
    seen = set(tokens)
    lines = [f"training: {len(train)} sentences, {len(tokens)} words, {len(seen)} distinct; "
             f"{sum(w in top for w in tokens) / max(1, len(tokens)):.0%} of the words are among English's 100 most frequent"]
    if held:
        unseen = sum(w not in seen for w in held_tokens) / max(1, len(held_tokens))
        bands = [sum(lo <= len(s.normalized) <= hi for s in held) for lo, hi in data.LENGTH_BANDS]
        lines.append(f"held-out: {len(held)} sentences ({', '.join(f'{lo}-{hi}: {k}' for (lo, hi), k in zip(data.LENGTH_BANDS, bands))}"
                     f" characters), {unseen:.0%} of their words never occur in training")
    lengths = np.array([len(s.normalized) for s in train])
    share = np.histogram(np.clip(lengths, 0, 199), bins=np.arange(0, 201, 20))[0] / max(1, len(lengths))
    lj = data.LJ_CHAR_BINS / data.LJ_CHAR_BINS.sum()
    lines.append("length (characters)  " + " ".join(f"{20 * i:>4d}+" for i in range(len(lj))))
    lines.append("this corpus          " + " ".join(f"{x:5.0%}" for x in share))
    lines.append("LJSpeech             " + " ".join(f"{x:5.0%}" for x in lj))
    if len(lengths):
        lines.append(f"median {np.median(lengths):.0f} characters (LJSpeech 102), longest {lengths.max()} (187)")
    return "\n".join(lines)


def build_corpus(out_dir, n: int, seed: int = 0, max_chars: int | None = None, progress: bool = True,
                 heldout: int | None = None, source: str = "auto") -> Path:
    """Speak n training and `heldout` held-out sentences (`choose`) into out_dir (write_corpus)."""
    return write_corpus(out_dir, *choose(n, seed, max_chars, heldout, source), progress=progress)


def write_corpus(out_dir, source: str, train: list, held: list, progress: bool = True) -> Path:
    """Speak the sentences into out_dir/wavs/, then write heldout.csv and metadata.csv (last, so
    a partial build is never mistaken for a corpus). espeak-ng reads Sentence.spoken (numbers in
    words); the wavs are 16-bit PCM at its rate (22,050 Hz), one sentence the same whatever the
    others are."""
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
        raise data.DataError(f"{path} is missing (build the corpus with python -m common.data.corpus)")
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
    parser = argparse.ArgumentParser(prog="python -m common.data.corpus", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output directory (LJSpeech layout)")
    parser.add_argument("--n", type=int, required=True, help="number of training sentences")
    parser.add_argument("--seed", type=int, default=0, help="which sentences (default 0)")
    parser.add_argument("--max-chars", type=int, default=None, help="only sentences this short (incl. end-of-text)")
    parser.add_argument("--heldout", type=int, default=None, metavar="K",
                        help=f"held-out sentences in heldout.csv (default 5%% of n, 1 to {HELDOUT_MAX})")
    parser.add_argument("--source", choices=SOURCES, default="auto",
                        help="embedded (common/data/sentences.txt), prose (common.data.prose: English as written), generated "
                             "(common.data.grammar: the older toy grammar), or auto (default: embedded while enough of "
                             "its sentences fit, else prose)")
    args = parser.parse_args(argv)
    try:
        chosen = choose(args.n, args.seed, args.max_chars, args.heldout, args.source)
        out = write_corpus(args.out, *chosen)
        print(describe(*chosen[1:]))
        print(out)
    except (RuntimeError, ValueError) as err:
        parser.error(str(err))


if __name__ == "__main__":
    main()
