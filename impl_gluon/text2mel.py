"""Text2Mel in MXNet Gluon: TextEnc, AudioEnc, Attention, AudioDec (common.contract.spec's layer lists), their
stacks' blocks in the tier of operators `ops` (impl_gluon.layers)."""
from __future__ import annotations

from impl_gluon import runtime  # noqa: F401  (must precede the first mxnet import)

import math

import numpy as np
from mxnet import gluon

from common.contract import spec as S
from impl_gluon.layers import build_stack


class TextEnc(gluon.HybridBlock):
    """Character ids (B, N) -> K, V, each (B, d, N) (K = the first half of the channels)."""

    def __init__(self, spec: S.Spec, ops: str = "tuned"):
        super().__init__(prefix="textenc_")
        self.layers = build_stack(spec, S.text_enc_layers(spec), ops)

    def hybrid_forward(self, F, text):
        k, v = F.split(self.layers(text), num_outputs=2, axis=1)
        return k, v


class AudioEnc(gluon.HybridBlock):
    """Causal: already-shifted mels (B, F, T) -> Q (B, d, T)."""

    def __init__(self, spec: S.Spec, ops: str = "tuned"):
        super().__init__(prefix="audioenc_")
        self.layers = build_stack(spec, S.audio_enc_layers(spec), ops)

    def hybrid_forward(self, F, mel_in):
        return self.layers(mel_in)


def pad_bias(F, text):
    """(B, N, 1): spec.PAD_LOGIT at padded text positions, 0 elsewhere."""
    return F.expand_dims(F.cast(text == S.PAD, "float32") * S.PAD_LOGIT, axis=2)


class Attention(gluon.HybridBlock):
    """A = softmax over the text axis of K^T Q / sqrt(d) + text_bias (spec.PAD_LOGIT at padding),
    (B, N, T); R' = [V A, Q]. With spec.position the logits read K + w PK and Q + w PQ
    (common.contract.spec.attention_positions), R' the plain V and Q.
    Split in two so synthesis can replace columns of A before reading. The products are
    batch_dot(transpose_a): as fast as linalg.gemm2, and a small share of Text2Mel's FLOPs
    (measurements: results/implementation-notes.md, "gluon: the attention's products")."""

    def __init__(self, spec: S.Spec):
        super().__init__(prefix="attention_")
        self.scale = 1.0 / math.sqrt(spec.D)
        if spec.position != "none":  # teacher forcing's tables, up to the data's lengths (common.data.dataset):
            # Gluon constants (graph inputs that hold their value), not parameters (no weights)
            tables = S.attention_positions(spec, spec.max_chars, spec.max_frames)
            for name, table in zip(("key_positions", "query_positions"), tables):
                setattr(self, name, self.params.get_constant(name, table[None].astype(np.float32)))

    def weights(self, F, k, q, text_bias):
        """A from the keys and queries as the logits read them (with their positions, if any)."""
        return F.softmax(F.broadcast_add(F.batch_dot(k, q, transpose_a=True) * self.scale, text_bias), axis=1)

    def read(self, F, v, a, q):
        return F.concat(F.batch_dot(v, a), q, dim=1)

    def hybrid_forward(self, F, k, v, q, text_bias, key_positions=None, query_positions=None):
        if key_positions is None:
            a = self.weights(F, k, q, text_bias)
        else:  # text positions and frames from 0, the tables cut to K's and Q's lengths
            a = self.weights(F, F.broadcast_add(k, F.slice_like(key_positions, k, axes=(2,))),
                             F.broadcast_add(q, F.slice_like(query_positions, q, axes=(2,))), text_bias)
        return self.read(F, v, a, q), a


class AudioDec(gluon.HybridBlock):
    """Causal: R' (B, 2d, T) -> mel logits (B, F, T)."""

    def __init__(self, spec: S.Spec, ops: str = "tuned"):
        super().__init__(prefix="audiodec_")
        self.layers = build_stack(spec, S.audio_dec_layers(spec), ops)

    def hybrid_forward(self, F, r):
        return self.layers(r)


def shift_right(F, mel):
    """Teacher forcing: mel (B, F, T) shifted right by one all-zero frame. F.pad takes only
    4-D/5-D arrays, hence the 4-D view; unlike slicing first, it also works for T = 1."""
    padded = F.pad(F.expand_dims(mel, axis=2), mode="constant", pad_width=(0, 0, 0, 0, 0, 0, 1, 0))
    return F.reshape(F.slice_axis(padded, axis=3, begin=0, end=-1), shape=(0, 0, -1))


class Text2Mel(gluon.HybridBlock):
    """Teacher-forced: (text (B, N), target mel (B, F, T)) -> (logits (B, F, T), attention (B, N, T)).
    AudioEnc sees the target shifted right by one zero frame, so output t depends on frames < t."""

    def __init__(self, spec: S.Spec, ops: str = "tuned"):
        super().__init__(prefix="text2mel_")
        self.spec, self.ops = spec, ops
        with self.name_scope():
            self.textenc, self.audioenc = TextEnc(spec, ops), AudioEnc(spec, ops)
            self.attention, self.audiodec = Attention(spec), AudioDec(spec, ops)
        self.hybridized = {"active": False}  # how hybridize last ran: impl_gluon.synthesize's step follows it

    def stacks(self) -> list:
        return [self.textenc.layers, self.audioenc.layers, self.audiodec.layers]

    def hybridize(self, active=True, **kwargs):
        """As Gluon's, remembered in `hybridized` for the synthesis step impl_gluon.synthesize
        builds over this model's blocks."""
        super().hybridize(active, **kwargs)
        self.hybridized = dict(kwargs, active=active)

    def hybrid_forward(self, F, text, mel):
        k, v = self.textenc(text)
        r, a = self.attention(k, v, self.audioenc(shift_right(F, mel)), pad_bias(F, text))
        return self.audiodec(r), a
