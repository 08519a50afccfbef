"""The inputs every framework gets, built before any clock starts and identical across
frameworks (same seeds): timing batches, synthesis texts, the parity gate's batch."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.ndimage

from common.data import corpus, dataset as data, text
from common.data.batch import Batch, make_batch, random_batch
from common.contract.spec import EOS, Spec

SYNTHESIS_CHARS = (30, 50)  # [ours] short sentences (2-3 s of speech): a quick synthesis benchmark


def timing_batches(spec: Spec, batch_size: int, n: int, seed: int, data_dir=None) -> list:
    """`n` distinct Batches: synthetic LJSpeech-shaped ones (seeds seed, seed+1, ...), or the
    first `n` of a seeded epoch of the preprocessed corpus in `data_dir`."""
    if n < 1 or batch_size < 1:
        raise ValueError(f"need at least one batch of at least one item, got n={n}, batch_size={batch_size}")
    if data_dir is None:
        return [synthetic_batch(spec, batch_size, seed + i) for i in range(n)]
    corpus = data.load_corpus(data_dir, spec, progress=False)
    epoch = data.batches(corpus, np.arange(len(corpus)), batch_size, np.random.default_rng(seed))
    out = [b for _, b in zip(range(n), epoch)]
    if len(out) < n:
        raise ValueError(f"{data_dir} holds {len(corpus)} usable utterances: {len(out)} batches of "
                         f"{batch_size}, fewer than the {n} asked for")
    return out


def batch_shape(batch: Batch) -> list:
    """[B, N, T]: sentences, characters and reduced frames of a batch's padded arrays (a timed step's
    shape: the report keeps each shape's steps apart)."""
    return [batch.size, batch.text.shape[1], batch.mel.shape[2]]


def synthesis_texts(spec: Spec, n: int, data_dir=None) -> list:
    """`n` id arrays (each ending with end-of-text), cycled from a pool: the corpus's held-out
    sentences (heldout.csv, as common.data.corpus builds it; else its first texts), or the
    common/data/sentences.txt sentences of SYNTHESIS_CHARS characters."""
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


def synthetic_lengths(spec: Spec, n: int, rng: np.random.Generator) -> tuple:
    """(text lengths including end-of-text, full-rate frame counts), int arrays of n
    LJSpeech-like utterances, clipped to spec.max_chars and spec.max_frames * spec.r."""
    bins = rng.choice(len(data.LJ_CHAR_BINS), size=n, p=data.LJ_CHAR_BINS / data.LJ_CHAR_BINS.sum())
    chars = rng.integers(np.maximum(bins * 20, data.LJ_MIN_CHARS), np.minimum(bins * 20 + 19, data.LJ_MAX_CHARS) + 1)
    seconds = chars / data.LJ_CHARS_PER_SECOND + rng.normal(0, data.LJ_SECONDS_NOISE, n)
    seconds = np.clip(seconds, data.LJ_MIN_SECONDS, data.LJ_MAX_SECONDS)
    frames = 1 + (seconds * spec.sr).astype(np.int64) // spec.hop  # STFT frames (centered)
    return np.minimum(chars + 1, spec.max_chars), np.minimum(frames, spec.max_frames * spec.r)


def synthetic_batch(spec: Spec, batch_size: int, seed: int) -> Batch:
    """A Batch of LJSpeech-shaped lengths with random ids and smooth random features in [0, 1]."""
    rng = np.random.default_rng(seed)
    text_lengths, frames = synthetic_lengths(spec, batch_size, rng)
    texts = [np.append(rng.integers(EOS + 1, spec.n_vocab, n - 1), EOS).astype(np.int32) for n in text_lengths]
    mels = [_smooth_noise(rng, (spec.n_mels, t)) for t in frames]
    mags = [_smooth_noise(rng, (spec.n_mags, t)) for t in frames]
    return make_batch(spec, texts, mels, mags)


def _smooth_noise(rng: np.random.Generator, shape: tuple) -> np.ndarray:
    x = scipy.ndimage.gaussian_filter(rng.random(shape), sigma=2.0)
    return ((x - x.min()) / max(x.max() - x.min(), 1e-12)).astype(np.float32)
