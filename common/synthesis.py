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
