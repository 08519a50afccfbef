"""The inputs every framework gets, built before any clock starts and identical across
frameworks (same seeds): timing batches, synthesis texts, the parity gate's batch."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from common import corpus, data, text
from common.batch import Batch, random_batch
from common.spec import Spec

SYNTHESIS_CHARS = (30, 50)  # [ours] short sentences (2-3 s of speech): a quick synthesis benchmark


def timing_batches(spec: Spec, batch_size: int, n: int, seed: int, data_dir=None) -> list:
    """`n` distinct Batches: synthetic LJSpeech-shaped ones (seeds seed, seed+1, ...), or the
    first `n` of a seeded epoch of the preprocessed corpus in `data_dir`."""
    if n < 1 or batch_size < 1:
        raise ValueError(f"need at least one batch of at least one item, got n={n}, batch_size={batch_size}")
    if data_dir is None:
        return [data.synthetic_batch(spec, batch_size, seed + i) for i in range(n)]
    corpus = data.load_corpus(data_dir, spec, progress=False)
    epoch = data.batches(corpus, np.arange(len(corpus)), batch_size, np.random.default_rng(seed))
    out = [b for _, b in zip(range(n), epoch)]
    if len(out) < n:
        raise ValueError(f"{data_dir} holds {len(corpus)} usable utterances: {len(out)} batches of "
                         f"{batch_size}, fewer than the {n} asked for")
    return out


def synthesis_texts(spec: Spec, n: int, data_dir=None) -> list:
    """`n` id arrays (each ending with end-of-text), cycled from a pool: the corpus's held-out
    sentences (heldout.csv, as common.corpus builds it; else its first texts), or the
    common/sentences.txt sentences of SYNTHESIS_CHARS characters."""
    if data_dir is None:
        lo, hi = SYNTHESIS_CHARS
        pool = [ids for ids in (text.text_to_ids(s, spec) for s in corpus.sentences(min(hi, spec.max_chars)))
                if len(ids) >= min(lo, spec.max_chars)]
    else:
        held = corpus.read_heldout(data_dir) if (Path(data_dir) / corpus.HELDOUT).is_file() else []
        pool = ([text.text_to_ids(entry.text, spec) for entry in held] if held else
                [u.ids for u in data.load_corpus(data_dir, spec, progress=False).items[:n]])
        if not pool:
            raise ValueError(f"{data_dir} holds no usable utterance to synthesize")
    return [pool[i % len(pool)] for i in range(n)]


def short_batch(spec: Spec, seed: int = 0, text_lengths=(12, 9), frame_lengths=(10, 7)) -> Batch:
    """The parity gate's batch (B=2, N=12, T=10 reduced frames, unequal lengths so padding is
    exercised): cheap enough for the reference forward even at the `paper` preset."""
    return random_batch(spec, text_lengths, [t * spec.r for t in frame_lengths], seed)
