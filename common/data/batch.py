"""The batch every framework consumes: plain NumPy arrays, built once in common/."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.contract import losses
from common.contract.spec import EOS, Spec


@dataclass
class Batch:
    """text (B, N) int32 ids, 0-padded, each ending with end-of-text;
    mel (B, F, T) float32 reduced mel (every r-th frame); mag (B, F', r*T) float32;
    text_lengths, frame_lengths (B,) int32 (frames counted after reduction);
    guide, guide_mask (B, N, T) float32: guided-attention weights and real-position mask.

    A worker's shard of a data-parallel step (common.training.distributed.shard) is some rows of a global
    batch, at its padded shape; two numbers make the mean of the workers' losses (and so of
    their gradients) equal the global batch's losses:
    weight: multiplies the l1 and binary-divergence terms: the shard's rows / (global rows /
        workers) (1 for an even split; 0 for a stand-in row of a worker that got none);
    real_positions: the attention loss's denominator; None: this batch's own real positions
        (guide_mask.sum()); a shard's: the global batch's / workers."""

    text: np.ndarray
    text_lengths: np.ndarray
    mel: np.ndarray
    frame_lengths: np.ndarray
    mag: np.ndarray
    guide: np.ndarray
    guide_mask: np.ndarray
    weight: float = 1.0
    real_positions: float | None = None

    @property
    def size(self) -> int:
        return self.text.shape[0]

    def attention_positions(self) -> float:
        """The attention loss's denominator (see real_positions)."""
        return float(self.guide_mask.sum()) if self.real_positions is None else float(self.real_positions)


def make_batch(spec: Spec, texts, mels, mags) -> Batch:
    """Pad and reduce one batch. texts: id arrays; mels (F, T_i) and mags (F', T_i) at
    full frame rate. Frames are zero-padded to a common multiple of r, then the mel keeps
    every r-th frame [paper]."""
    r = spec.r
    t_full = max(m.shape[1] for m in mels)
    t_full += -t_full % r
    n_max = max(len(t) for t in texts)
    text = np.zeros((len(texts), n_max), np.int32)
    for i, t in enumerate(texts):
        text[i, : len(t)] = t
    mel = np.zeros((len(mels), spec.n_mels, t_full), np.float32)
    mag = np.zeros((len(mags), spec.n_mags, t_full), np.float32)
    for i, (m, z) in enumerate(zip(mels, mags)):
        mel[i, :, : m.shape[1]] = m
        mag[i, :, : z.shape[1]] = z
    text_lengths = np.array([len(t) for t in texts], np.int32)
    frame_lengths = np.array([-(-m.shape[1] // r) for m in mels], np.int32)
    t = t_full // r
    return Batch(text, text_lengths, np.ascontiguousarray(mel[:, :, ::r]), frame_lengths, mag,
                 losses.guide(text_lengths, frame_lengths, n_max, t, spec.g),
                 losses.guide_mask(text_lengths, frame_lengths, n_max, t))


def random_batch(spec: Spec, text_lengths, frame_lengths, seed: int = 0) -> Batch:
    """Random ids (each text ending with end-of-text) and uniform features in [0, 1) of the given
    lengths (characters with end-of-text; full-rate frames): the small batches of the tests and
    of the benchmark's parity gate, cheap enough for common.contract.reference at any preset."""
    rng = np.random.default_rng(seed)
    texts = [np.append(rng.integers(EOS + 1, spec.n_vocab, n - 1), EOS).astype(np.int32) for n in text_lengths]
    mels = [rng.random((spec.n_mels, t), dtype=np.float32) for t in frame_lengths]
    mags = [rng.random((spec.n_mags, t), dtype=np.float32) for t in frame_lengths]
    return make_batch(spec, texts, mels, mags)
