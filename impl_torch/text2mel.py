"""Text2Mel in PyTorch: TextEnc, AudioEnc, Attention, AudioDec (common.contract.spec's layer lists), in a tier
of operators `ops` (impl_torch.layers): tuned keeps the activations channels-last end to end, stock
(B, C, T) memory with plain splits, padding and products."""
from __future__ import annotations

from impl_torch import runtime  # noqa: F401  (the framework environment comes first)

import math

import torch
import torch.nn.functional as F
from torch import nn

from common.contract import spec as S
from impl_torch.layers import build_stack


class TextEnc(nn.Module):
    """Character ids (B, N) -> K, V, each (B, d, N) (K = the first half of the channels)."""

    def __init__(self, spec: S.Spec, ops: str = "tuned"):
        super().__init__()
        self.ops = ops
        self.layers = build_stack(spec, S.text_enc_layers(spec), ops)

    def forward(self, text):
        """Split on (B, N, C) views, so that the halves' gradients are joined channels-last (stock:
        on the channel axis)."""
        if self.ops == "stock":
            return self.layers(text).chunk(2, dim=1)
        k, v = self.layers(text).transpose(1, 2).chunk(2, dim=2)
        return k.transpose(1, 2), v.transpose(1, 2)


class AudioEnc(nn.Module):
    """Causal: already-shifted mels (B, F, T) -> Q (B, d, T)."""

    def __init__(self, spec: S.Spec, ops: str = "tuned"):
        super().__init__()
        self.layers = build_stack(spec, S.audio_enc_layers(spec), ops)

    def forward(self, mel_in):
        return self.layers(mel_in)


def pad_bias(text):
    """(B, N, 1): spec.PAD_LOGIT at padded text positions, 0 elsewhere."""
    return ((text == S.PAD).to(torch.float32) * S.PAD_LOGIT)[:, :, None]


def shift_right(mel, ops: str = "tuned"):
    """Teacher forcing: (B, F, T) -> one zero frame in front, the last frame dropped (channels-last;
    stock: (B, F, T) memory)."""
    if ops == "stock":
        return F.pad(mel[:, :, :-1], (1, 0))
    return F.pad(mel[:, :, :-1].transpose(1, 2), (0, 0, 1, 0)).transpose(1, 2)


class Attention(nn.Module):
    """A = softmax over the text axis of K^T Q / sqrt(d) + text_bias (spec.PAD_LOGIT at padding),
    (B, N, T); R' = [V A, Q]. With spec.position the logits read K + w PK and Q + w PQ
    (common.contract.spec.attention_positions), R' the plain V and Q.
    Split in two so synthesis can replace columns of A before reading."""

    def __init__(self, spec: S.Spec, ops: str = "tuned"):
        super().__init__()
        self.scale, self.ops = 1.0 / math.sqrt(spec.D), ops
        self.positional = spec.position != "none"
        if self.positional:  # teacher forcing's tables, up to the data's lengths (common.data.dataset): constants
            # on the model's device, not parameters (no weights; not in state_dict)
            tables = S.attention_positions(spec, spec.max_chars, spec.max_frames)
            for name, table in zip(("key_positions", "query_positions"), tables):
                self.register_buffer(name, torch.tensor(table[None], dtype=torch.float32), persistent=False)

    def weights(self, k, q, text_bias):
        """A from the keys and queries as the logits read them (with their positions, if any)."""
        return torch.softmax(torch.bmm(k.transpose(1, 2), q) * self.scale + text_bias, dim=1)

    def read(self, v, a, q):
        """[V A, Q] (B, 2d, T), channels-last: computed as [A^T V^T, Q^T] (B, T, 2d) (stock: as it
        reads, in (B, 2d, T) memory)."""
        if self.ops == "stock":
            return torch.cat([torch.bmm(v, a), q], dim=1)
        return torch.cat([torch.bmm(a.transpose(1, 2), v.transpose(1, 2)), q.transpose(1, 2)], dim=2).transpose(1, 2)

    def forward(self, k, v, q, text_bias):
        if self.positional:  # text positions and frames from 0
            a = self.weights(k + self.key_positions[:, :, :k.shape[2]], q + self.query_positions[:, :, :q.shape[2]],
                             text_bias)
        else:
            a = self.weights(k, q, text_bias)
        return self.read(v, a, q), a


class AudioDec(nn.Module):
    """Causal: R' (B, 2d, T) -> mel logits (B, F, T)."""

    def __init__(self, spec: S.Spec, ops: str = "tuned"):
        super().__init__()
        self.layers = build_stack(spec, S.audio_dec_layers(spec), ops)

    def forward(self, r):
        return self.layers(r)


class Text2Mel(nn.Module):
    """Teacher-forced: (text (B, N), target mel (B, F, T)) -> (logits (B, F, T), attention (B, N, T)).
    AudioEnc sees the target shifted right by one zero frame, so output t depends on frames < t."""

    def __init__(self, spec: S.Spec, ops: str = "tuned"):
        super().__init__()
        self.spec, self.ops = spec, ops
        self.textenc, self.audioenc = TextEnc(spec, ops), AudioEnc(spec, ops)
        self.attention, self.audiodec = Attention(spec, ops), AudioDec(spec, ops)

    def forward(self, text, mel):
        k, v = self.textenc(text)
        q = self.audioenc(shift_right(mel, self.ops))
        r, a = self.attention(k, v, q, pad_bias(text))
        return self.audiodec(r), a
