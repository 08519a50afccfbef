"""Framework-neutral pieces of autoregressive synthesis."""
from __future__ import annotations

import numpy as np


def force_incremental(column: np.ndarray, prev: int) -> tuple:
    """Forcibly incremental attention [paper, section 4.2].

    `column` is the attention over text positions (N,) at the new frame, `prev` the
    position chosen at the previous frame (0 before the first frame: reading starts at the
    first character). If argmax n_t is not in
    [prev - 1, prev + 3], the column becomes one-hot at prev + 1 (clipped to N - 1).
    Returns (column to use, position n_t)."""
    n = int(np.argmax(column))
    if prev - 1 <= n <= prev + 3:
        return column, n
    n = min(prev + 1, column.shape[0] - 1)
    forced = np.zeros_like(column)
    forced[n] = 1.0
    return forced, n


def reached_end(position: int, n_text: int) -> bool:
    """Synthesis stops once attention reaches the end-of-text symbol (the last position)."""
    return position >= n_text - 1


def check_ids(ids, spec, max_frames: int) -> np.ndarray:
    """One utterance's ids (N,) as int32 (and a frame limit >= 1), or a clear ValueError."""
    ids = np.asarray(ids)
    if ids.ndim != 1 or ids.size == 0:
        raise ValueError(f"expected a non-empty 1-D array of text ids, got shape {ids.shape}")
    if ids.size > spec.max_chars:
        raise ValueError(f"text of {ids.size} symbols is longer than the model's limit of {spec.max_chars}")
    if ids.min() < 0 or ids.max() >= spec.n_vocab:
        raise ValueError(f"text ids must lie in [0, {spec.n_vocab}), got [{ids.min()}, {ids.max()}]")
    if max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    return ids.astype(np.int32)


def check_mel(mel, spec) -> np.ndarray:
    """A reduced mel (F, T > 0) as float32 for SSRN, or a clear ValueError."""
    mel = np.asarray(mel, np.float32)
    if mel.ndim != 2 or mel.shape[0] != spec.n_mels or mel.shape[1] == 0:
        raise ValueError(f"expected a mel of shape ({spec.n_mels}, T>0), got {mel.shape}")
    return mel
