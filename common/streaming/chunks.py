"""SSRN on a mel that arrives a chunk at a time, giving exactly the offline magnitudes.

SSRN is a stack of non-causal convolutions ("same" padding), stride-2 deconvolutions and
per-frame normalizations: the magnitudes of one reduced frame depend on a bounded window of the
mel around it, `context(spec)` = (history, look-ahead) reduced frames. So once the look-ahead of
a frame has arrived, running SSRN (Backend.upsample, any framework) on the window from `history`
frames before the first new frame to `look-ahead` frames after the last one, and keeping only the
new frames' magnitudes, gives the offline result: the window's own zero padding reaches no kept
frame. Each chunk costs an SSRN pass over chunk + history + look-ahead frames."""
from __future__ import annotations

import numpy as np

from common.contract import spec as S


def context(spec: S.Spec) -> tuple:
    """(history, look-ahead): the reduced frames before and after a reduced frame that its SSRN
    magnitudes depend on, read off the spec's layer list. Walks back from the r output frames of
    one reduced frame t: a convolution padded (left, right) widens the interval by its padding, a
    deconvolution of stride s maps output frames u to input frame u // s."""
    t = spec.max_frames + 1  # any frame will do: the reach does not depend on it
    lo, hi = t * spec.r, t * spec.r + spec.r - 1
    for layer in reversed(S.ssrn_layers(spec)):
        if layer.kind == S.DECONV:
            lo, hi = lo // layer.stride, hi // layer.stride
        else:
            left, right = layer.pad
            lo, hi = lo - left, hi + right
    return t - lo, hi - t


class ChunkedSSRN:
    """Feed reduced mel frames in pieces (push), get each frame's magnitudes (F', r per frame) as
    soon as its look-ahead has arrived, and the rest at the end (finish). Together they equal
    `upsample(whole mel)`. Keeps only the history the next window needs."""

    def __init__(self, upsample, spec: S.Spec):
        """`upsample`: reduced mel (F, T) -> magnitudes (F', r*T) (Backend.upsample)."""
        self.upsample, self.spec = upsample, spec
        self.history, self.lookahead = context(spec)
        self.mel = np.zeros((spec.n_mels, 0), np.float32)
        self.first = 0  # the absolute index of self.mel's first frame
        self.done = 0  # frames whose magnitudes were handed out

    def push(self, mel) -> np.ndarray:
        """Add frames (F, n); the magnitudes (F', r*k) of the k frames that are final now."""
        mel = np.asarray(mel, np.float32)
        if mel.ndim != 2 or mel.shape[0] != self.spec.n_mels:
            raise ValueError(f"expected mel frames of shape ({self.spec.n_mels}, n), got {mel.shape}")
        self.mel = np.concatenate([self.mel, mel], axis=1)
        return self._run(self.first + self.mel.shape[1] - self.lookahead)

    def finish(self) -> np.ndarray:
        """The magnitudes of every frame not handed out yet (the end of the mel has no look-ahead)."""
        return self._run(self.first + self.mel.shape[1])

    def _run(self, end: int) -> np.ndarray:
        if end <= self.done:
            return np.zeros((self.spec.n_mags, 0), np.float32)
        start = max(self.first, self.done - self.history)  # absolute frames of the window
        stop = min(self.first + self.mel.shape[1], end + self.lookahead)
        mag = self.upsample(self.mel[:, start - self.first:stop - self.first])
        r = self.spec.r
        out = mag[:, (self.done - start) * r:(end - start) * r]
        self.done = end
        keep = max(self.first, end - self.history)  # the next window starts here at the earliest
        self.mel, self.first = self.mel[:, keep - self.first:], keep
        return out
