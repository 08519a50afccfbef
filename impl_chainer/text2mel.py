"""Text2Mel in Chainer: TextEnc, AudioEnc, Attention, AudioDec (common.contract.spec's layer lists), in a
tier of operators `ops` (layers.py; the stock tier's attention steps use the forward's chainer.functions)."""
from __future__ import annotations

from impl_chainer import runtime  # noqa: F401  (Chainer workarounds first)

import math

import chainer
import chainer.functions as F
import numpy as np

from common.contract import spec as S
from impl_chainer.layers import build_stack


class TextEnc(chainer.Chain):
    """Character ids (B, N) -> K, V, each (B, d, N) (K = the first half of the channels)."""

    def __init__(self, spec: S.Spec, ops: str = "tuned"):
        super().__init__()
        with self.init_scope():
            self.layers = build_stack(spec, S.text_enc_layers(spec), ops)

    def forward(self, text):
        return F.split_axis(self.layers(text), 2, axis=1)


class AudioEnc(chainer.Chain):
    """Causal: already-shifted mels (B, F, T) -> Q (B, d, T)."""

    def __init__(self, spec: S.Spec, ops: str = "tuned"):
        super().__init__()
        with self.init_scope():
            self.layers = build_stack(spec, S.audio_enc_layers(spec), ops)

    def forward(self, mel_in):
        return self.layers(mel_in)


def pad_bias(text):
    """(B, N, 1): spec.PAD_LOGIT at padded text positions, 0 elsewhere."""
    xp = chainer.backend.get_array_module(text)
    return ((text == S.PAD).astype(xp.float32) * S.PAD_LOGIT)[:, :, None]


def shift_right(mel):
    """Teacher forcing: (B, F, T) -> one zero frame in front, the last frame dropped."""
    return F.pad(mel[:, :, :-1], ((0, 0), (0, 0), (1, 0)), "constant")


class Attention(chainer.Chain):
    """A = softmax over the text axis of K^T Q / sqrt(d) + text_bias (spec.PAD_LOGIT at padding),
    (B, N, T); R' = [V A, Q]. With spec.position the logits read K + w PK and Q + w PQ
    (common.contract.spec.attention_positions), R' the plain V and Q.
    Split in two so synthesis can replace columns of A before reading."""

    def __init__(self, spec: S.Spec, ops: str = "tuned"):
        super().__init__()
        self.scale, self.ops = 1.0 / math.sqrt(spec.D), ops
        self.positional = spec.position != "none"
        if self.positional:  # teacher forcing's tables, up to the data's lengths (common.data.dataset): persistent
            # values that move with the model, not parameters (no weights)
            tables = S.attention_positions(spec, spec.max_chars, spec.max_frames)
            for name, table in zip(("key_positions", "query_positions"), tables):
                self.add_persistent(name, table[None].astype(np.float32))

    def weights(self, k, q, text_bias):
        """A from the keys and queries as the logits read them (with their positions, if any)."""
        logits = F.matmul(k, q, transa=True) * self.scale
        return F.softmax(logits + F.broadcast_to(text_bias, logits.shape), axis=1)

    def read(self, v, a, q):
        return F.concat([F.matmul(v, a), q], axis=1)

    def weights_step(self, k, q, text_bias):
        """weights for one frame on plain arrays (synthesis: no graph, see layers.py):
        K (B, d, N), Q (B, d, 1), text_bias (B, N, 1) -> A (B, N). Stock: `weights` itself."""
        if self.ops == "stock":
            with chainer.no_backprop_mode():
                return self.weights(k, q, text_bias).array[:, :, 0]
        xp = self.xp
        logits = (xp.matmul(k.transpose(0, 2, 1), q) * k.dtype.type(self.scale) + text_bias)[:, :, 0]
        a = logits - logits.max(axis=1, keepdims=True)  # F.softmax's computation
        xp.exp(a, out=a)
        a /= a.sum(axis=1, keepdims=True)
        return a

    def read_step(self, v, a, q):
        """read for one frame on plain arrays: V (B, d, N), A (B, N), Q (B, d, 1) -> R' (B, 2d, 1).
        Stock: `read` itself."""
        if self.ops == "stock":
            with chainer.no_backprop_mode():
                return self.read(v, a[:, :, None], q).array
        return self.xp.concatenate([self.xp.matmul(v, a[:, :, None]), q], axis=1)

    def forward(self, k, v, q, text_bias):
        if self.positional:  # text positions and frames from 0
            a = self.weights(k + self.key_positions[:, :, :k.shape[2]], q + self.query_positions[:, :, :q.shape[2]],
                             text_bias)
        else:
            a = self.weights(k, q, text_bias)
        return self.read(v, a, q), a


class AudioDec(chainer.Chain):
    """Causal: R' (B, 2d, T) -> mel logits (B, F, T)."""

    def __init__(self, spec: S.Spec, ops: str = "tuned"):
        super().__init__()
        with self.init_scope():
            self.layers = build_stack(spec, S.audio_dec_layers(spec), ops)

    def forward(self, r):
        return self.layers(r)


class Text2Mel(chainer.Chain):
    """Teacher-forced: (text (B, N), target mel (B, F, T)) -> (logits (B, F, T), attention (B, N, T)).
    AudioEnc sees the target shifted right by one zero frame, so output t depends on frames < t.
    Every part in the tier of operators `ops`."""

    def __init__(self, spec: S.Spec, ops: str = "tuned"):
        super().__init__()
        self.spec, self.ops = spec, ops
        with self.init_scope():
            self.textenc, self.audioenc = TextEnc(spec, ops), AudioEnc(spec, ops)
            self.attention, self.audiodec = Attention(spec, ops), AudioDec(spec, ops)

    def stacks(self) -> list:
        return [self.textenc.layers, self.audioenc.layers, self.audiodec.layers]

    def forward(self, text, mel):
        k, v = self.textenc(text)
        q = self.audioenc(shift_right(mel))
        r, a = self.attention(k, v, q, pad_bias(text))
        return self.audiodec(r), a
