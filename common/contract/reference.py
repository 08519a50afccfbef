"""NumPy reference forward pass of Text2Mel and SSRN (float64 inside): the oracle
each framework's outputs are compared with. Written for obviousness, not speed.

Weights are a dict keyed by the canonical names of `common.contract.spec`. Inputs: text ids
(B, N) int; mels (B, F, T) float. Dropout is never applied. Batch norm runs in eval mode
(running statistics) unless a dict `train_stats` is passed: then it normalizes by the batch's
statistics, as training does, and puts the updated running statistics in that dict.
"""
from __future__ import annotations

import numpy as np

from common.contract import spec as S


def sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free


def conv1d(x, w, b, pad=(0, 0), dilation=1, groups=1):
    """x (B, Cin, T), w (Cout, Cin/groups, k) -> (B, Cout, T + pad - (k-1)*dilation)."""
    x = np.pad(x, ((0, 0), (0, 0), pad))
    cout, cin_g, k = w.shape
    t_out = x.shape[2] - (k - 1) * dilation
    xg = x.reshape(x.shape[0], groups, cin_g, -1)
    wg = w.reshape(groups, cout // groups, cin_g, k)
    y = sum(np.einsum("goc,bgct->bgot", wg[..., j], xg[..., j * dilation: j * dilation + t_out]) for j in range(k))
    return y.reshape(x.shape[0], cout, t_out) + b[None, :, None]


def deconv1d(x, w, b):
    """Transposed conv, stride = kernel = k (no overlap, as common.contract.spec requires): x (B, Cin, T),
    w (Cin, Cout, k) -> (B, Cout, k*T)."""
    y = np.einsum("bct,cok->botk", x, w)  # output frame t*k + j comes from input frame t through tap j
    return y.reshape(x.shape[0], w.shape[1], -1) + b[None, :, None]


def norm(s: S.Spec, w: dict, layer: S.Layer, h, train_stats=None):
    """Layer norm over channels per time step (a highway layer's H1 and H2 separately; group norm
    over each channel group: S.channel_norm_groups), or batch norm per channel (running
    statistics; the batch's over (B, T) when `train_stats` is a dict, which receives the updated
    running ones: momentum m, unbiased variance)."""
    name = layer.name
    if s.norm == "none":
        return h
    b, c, t = h.shape
    if s.norm in ("layer", "group"):
        groups = S.channel_norm_groups(s, layer)
        hg = h.reshape(b, groups, c // groups, t)
        hg = (hg - hg.mean(2, keepdims=True)) / np.sqrt(hg.var(2, keepdims=True) + s.norm_eps)
        h = hg.reshape(b, c, t)
    elif train_stats is None:
        h = (h - w[f"{name}.norm.mean"][:, None]) / np.sqrt(w[f"{name}.norm.var"][:, None] + s.norm_eps)
    else:
        mean, var, m, n = h.mean((0, 2)), h.var((0, 2)), s.norm_momentum, b * t
        train_stats[f"{name}.norm.mean"] = (1 - m) * w[f"{name}.norm.mean"] + m * mean
        train_stats[f"{name}.norm.var"] = (1 - m) * w[f"{name}.norm.var"] + m * var * n / max(n - 1, 1)
        h = (h - mean[:, None]) / np.sqrt(var[:, None] + s.norm_eps)
    return h * w[f"{name}.norm.gamma"][:, None] + w[f"{name}.norm.beta"][:, None]


def layer_forward(s: S.Spec, w: dict, layer: S.Layer, x, train_stats=None):
    n = layer.name
    if layer.kind == S.EMBED:
        return w[f"{n}.weight"][x].transpose(0, 2, 1)
    if layer.kind == S.DECONV:
        return norm(s, w, layer, deconv1d(x, w[f"{n}.weight"], w[f"{n}.bias"]), train_stats)
    if S.is_separable(s, layer):
        dw = w[f"{n}.dw.weight"]
        h = conv1d(x, dw, np.zeros(dw.shape[0]), layer.pad, layer.dilation, groups=dw.shape[0])
        h = conv1d(h, w[f"{n}.weight"], w[f"{n}.bias"], groups=S.pointwise_groups(s, layer))
    else:
        z, width = x, S.bottleneck_width(s, layer)  # the bottleneck variant first reduces the channels
        if width:
            z = conv1d(x, w[f"{n}.reduce.weight"], np.zeros(width))  # (1x1, no bias)
        h = conv1d(z, w[f"{n}.weight"], w[f"{n}.bias"], layer.pad, layer.dilation)
    if layer.kind == S.HIGHWAY:
        h1, h2 = np.split(norm(s, w, layer, h, train_stats), 2, axis=1)
        gate = sigmoid(h1)
        return gate * h2 + (1.0 - gate) * x
    h = h if layer.plain else norm(s, w, layer, h, train_stats)
    if layer.kind == S.RESIDUAL:
        return x + np.maximum(h, 0.0)
    return np.maximum(h, 0.0) if layer.act == "relu" else h


def run(s: S.Spec, w: dict, layer_list, x, train_stats=None):
    """Walk a layer list from `common.contract.spec`."""
    w = {k: np.asarray(v, np.float64) for k, v in w.items()}
    x = np.asarray(x) if layer_list[0].kind == S.EMBED else np.asarray(x, np.float64)
    for layer in layer_list:
        x = layer_forward(s, w, layer, x, train_stats)
    return x


def text_enc(s: S.Spec, w: dict, text, train_stats=None):
    """(B, N) ids -> K, V, each (B, d, N)."""
    kv = run(s, w, S.text_enc_layers(s), text, train_stats)
    return kv[:, : s.D], kv[:, s.D:]


def shift_mel(mel):
    """Teacher forcing: AudioEnc sees the target shifted right by one all-zero frame."""
    mel = np.asarray(mel)
    return np.concatenate([np.zeros_like(mel[:, :, :1]), mel[:, :, :-1]], axis=2)


def audio_enc(s: S.Spec, w: dict, mel_in, train_stats=None):
    """(B, F, T) already-shifted mels -> Q (B, d, T)."""
    return run(s, w, S.audio_enc_layers(s), mel_in, train_stats)


def pad_bias(text):
    """(B, N, 1): spec.PAD_LOGIT at padded text positions, 0 elsewhere."""
    return np.where(np.asarray(text) == S.PAD, S.PAD_LOGIT, 0.0)[:, :, None]


def attention(s: S.Spec, k, v, q, bias):
    """A = softmax over N of K^T Q / sqrt(d) + bias, (B, N, T); R' = [V A, Q], (B, 2d, T). With
    spec.position the logits read K + w PK and Q + w PQ instead (S.attention_positions: text
    positions and frames counted from 0), the read V and Q as they are."""
    keys, queries = k, q
    if s.position != "none":
        pk, pq = S.attention_positions(s, k.shape[2], q.shape[2])
        keys, queries = k + pk, q + pq
    logits = np.einsum("bdn,bdt->bnt", keys, queries) / np.sqrt(k.shape[1]) + bias
    a = np.exp(logits - logits.max(1, keepdims=True))
    a /= a.sum(1, keepdims=True)
    return np.concatenate([np.einsum("bdn,bnt->bdt", v, a), q], axis=1), a


def audio_dec(s: S.Spec, w: dict, r, train_stats=None):
    """R' (B, 2d, T) -> mel logits (B, F, T)."""
    return run(s, w, S.audio_dec_layers(s), r, train_stats)


def text2mel(s: S.Spec, w: dict, text, mel, train_stats=None):
    """Teacher-forced Text2Mel: returns (mel logits (B, F, T), attention (B, N, T))."""
    k, v = text_enc(s, w, text, train_stats)
    r, a = attention(s, k, v, audio_enc(s, w, shift_mel(mel), train_stats), pad_bias(text))
    return audio_dec(s, w, r, train_stats), a


def ssrn(s: S.Spec, w: dict, mel, train_stats=None):
    """Reduced mel (B, F, T) -> linear-magnitude logits (B, F', r*T)."""
    return run(s, w, S.ssrn_layers(s), mel, train_stats)
