"""The training objective and optimizer, defined once in NumPy (float64).

Every framework implements exactly these formulas; its tests compare with them.
Text2Mel loss = L1(sigmoid(logits), mel) + binary divergence + guided attention (1:1:1, [paper]).
SSRN loss     = L1 + binary divergence.
L1 and binary divergence are means over every element of the padded batch (as the
public implementations do; padded targets are zero). The guided-attention loss is a
mean over the real (unpadded) text x frame positions only.
"""
from __future__ import annotations

import numpy as np


def l1(logits, target):
    return np.mean(np.abs(1.0 / (1.0 + np.exp(-logits)) - target))


def binary_divergence(logits, target):
    """mean(-Y* log Y - (1-Y*) log(1-Y)), Y = sigmoid(logits), computed stably:
    max(x, 0) - x Y* + log(1 + exp(-|x|))."""
    x = np.asarray(logits, np.float64)
    return np.mean(np.maximum(x, 0) - x * target + np.log1p(np.exp(-np.abs(x))))


def guide(text_lengths, frame_lengths, n_max: int, t_max: int, g: float):
    """Guided-attention weights, (B, n_max, t_max) float32, zero outside the real lengths:
    W[n, t] = 1 - exp(-((n/N - t/T)^2) / (2 g^2)) [paper]."""
    n = np.arange(n_max)[None, :, None] / np.asarray(text_lengths)[:, None, None]
    t = np.arange(t_max)[None, None, :] / np.asarray(frame_lengths)[:, None, None]
    w = 1.0 - np.exp(-((n - t) ** 2) / (2 * g * g))
    return (w * guide_mask(text_lengths, frame_lengths, n_max, t_max)).astype(np.float32)


def guide_mask(text_lengths, frame_lengths, n_max: int, t_max: int):
    """(B, n_max, t_max) float32: 1 at real (text position, frame) pairs."""
    n_ok = np.arange(n_max)[None, :, None] < np.asarray(text_lengths)[:, None, None]
    t_ok = np.arange(t_max)[None, None, :] < np.asarray(frame_lengths)[:, None, None]
    return (n_ok & t_ok).astype(np.float32)


def attention_loss(attention, guide_w, positions: float):
    """sum(A * W) / positions (the number of real positions: Batch.attention_positions)."""
    return float(np.sum(np.asarray(attention, np.float64) * guide_w) / positions)


def weighted(term, weight: float):
    """A mean loss term as its shard's share of the global batch's (Batch.weight); untouched at
    weight 1 (a single-process run stays bit-identical and pays nothing). Any framework's arrays."""
    return term if weight == 1.0 else term * weight


def with_total(terms: dict) -> dict:
    """The terms and, under "loss", their sum in order (1:1:1, [paper]). Every framework's
    losses end here, on its own arrays (NumPy, tensors, Variables, NDArrays or Symbols)."""
    total = None
    for term in terms.values():
        total = term if total is None else total + term
    return {**terms, "loss": total}


def text2mel_losses(logits, attention, batch) -> dict:
    """l1, bin (each times batch.weight), att and their sum, as every framework computes them."""
    lo, mel = np.asarray(logits, np.float64), batch.mel
    return with_total({"l1": weighted(l1(lo, mel), batch.weight),
                       "bin": weighted(binary_divergence(lo, mel), batch.weight),
                       "att": attention_loss(attention, batch.guide, batch.attention_positions())})


def ssrn_losses(logits, batch) -> dict:
    lo = np.asarray(logits, np.float64)
    return with_total({"l1": weighted(l1(lo, batch.mag), batch.weight),
                       "bin": weighted(binary_divergence(lo, batch.mag), batch.weight)})


def learning_rate(spec, step: int) -> float:
    """Learning rate of 1-based `step`: constant [paper], or [kyubyong]'s Noam schedule
    lr * warmup^0.5 * min(step * warmup^-1.5, step^-0.5) when spec.warmup > 0."""
    if spec.warmup <= 0:
        return spec.lr
    return spec.lr * spec.warmup ** 0.5 * min(step * spec.warmup ** -1.5, step ** -0.5)


def adam_update(param, grad, m, v, step: int, spec):
    """One Adam step as the spec defines it (Kingma & Ba, PyTorch's placement of eps):
        g  = clip(grad, -grad_clip, grad_clip)          (when spec.grad_clip is set)
        m  = b1 m + (1 - b1) g ;  v = b2 v + (1 - b2) g^2
        p -= lr(step) * (m / (1 - b1^step)) / (sqrt(v / (1 - b2^step)) + eps)
    Chainer's and MXNet's built-ins add eps to the uncorrected sqrt(v) instead, so those
    implementations write this update out. Returns new (param, m, v)."""
    g = np.asarray(grad, np.float64)
    if spec.grad_clip is not None:
        g = np.clip(g, -spec.grad_clip, spec.grad_clip)
    m = spec.beta1 * m + (1 - spec.beta1) * g
    v = spec.beta2 * v + (1 - spec.beta2) * g * g
    m_hat = m / (1 - spec.beta1 ** step)
    v_hat = v / (1 - spec.beta2 ** step)
    return param - learning_rate(spec, step) * m_hat / (np.sqrt(v_hat) + spec.eps), m, v
