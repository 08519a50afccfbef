"""A small LJSpeech-format corpus spoken by espeak-ng (common.espeak: the library from a pinned
wheel, nothing from the system) from common/sentences.txt: real (if robotic) speech for tests
and smoke runs without downloading LJSpeech.

    python -m common.corpus --out DIR --n N [--seed S] [--max-chars M]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from common import espeak, text

SENTENCES = Path(__file__).with_name("sentences.txt")


def sentences(max_chars: int | None = None) -> list:
    """The embedded sentences, optionally only those whose normalized text plus
    end-of-text fits in `max_chars`."""
    lines = [s.strip() for s in SENTENCES.read_text(encoding="utf-8").splitlines() if s.strip()]
    return [s for s in lines if max_chars is None or len(text.normalize(s)) + 1 <= max_chars]


def build_corpus(out_dir, n: int, seed: int = 0, max_chars: int | None = None, progress: bool = True) -> Path:
    """Speak `n` sentences (chosen by `seed`) into out_dir/wavs/ and write out_dir/metadata.csv
    (`id|text|normalized text`, written last so a partial build is never mistaken for a corpus).
    The wavs are 16-bit PCM at espeak-ng's rate (22,050 Hz), one sentence the same whatever
    the others are."""
    pool = sentences(max_chars)
    if not 1 <= n <= len(pool):
        raise ValueError(f"n={n}: choose 1..{len(pool)} (sentences that fit max_chars={max_chars})")
    chosen = [pool[i] for i in np.sort(np.random.default_rng(seed).choice(len(pool), n, replace=False))]
    out = Path(out_dir)
    (out / "wavs").mkdir(parents=True, exist_ok=True)
    lines = []
    for i, sentence in enumerate(tqdm(chosen, desc="espeak-ng", unit="utt", disable=not progress)):
        uid = f"ES001-{i + 1:04d}"
        samples, sr = espeak.speak(sentence)
        sf.write(out / "wavs" / f"{uid}.wav", samples, sr, subtype="PCM_16")
        lines.append(f"{uid}|{sentence}|{sentence}\n")
    (out / "metadata.csv").write_text("".join(lines), encoding="utf-8")
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m common.corpus", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output directory (LJSpeech layout)")
    parser.add_argument("--n", type=int, required=True, help="number of sentences")
    parser.add_argument("--seed", type=int, default=0, help="which sentences (default 0)")
    parser.add_argument("--max-chars", type=int, default=None, help="only sentences this short (incl. end-of-text)")
    args = parser.parse_args(argv)
    try:
        print(build_corpus(args.out, args.n, args.seed, args.max_chars))
    except (RuntimeError, ValueError) as err:
        parser.error(str(err))


if __name__ == "__main__":
    main()
