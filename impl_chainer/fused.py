"""Fused FunctionNodes for the elementwise parts of a training step on NumPy.

Each chainer.functions call is a NumPy pass forward and one to three backward, plus the
graph's bookkeeping; written as one FunctionNode, a computation makes only the passes it
needs, in place where it can, and its backward is written out by hand. Both nodes compute
in the input's dtype and return their gradients as plain arrays (no higher-order gradients).
layers.py uses them on NumPy only (CuPy keeps the chainer.functions forms). Both are faster
than the chainer.functions forms (measurements: results/implementation-notes.md, "chainer: fused
channel norm and highway gate"). The stock tier (ops="stock") uses neither: F.layer_normalization
and F.sigmoid with arithmetic (layers.ChannelNorm, layers.HighwayConv).
"""
from __future__ import annotations

from impl_chainer import runtime  # noqa: F401  (Chainer workarounds first)

import chainer
import numpy as np
from chainer import function_node


class ChannelNormFn(function_node.FunctionNode):
    """Layer norm over channels at each (b, t) of (B, C, T), in `groups` groups of C/groups
    channels, eps added to the variance, then one affine gamma[c] * . + beta[c].

    Forward: mean, centered, variance of the centered values (two passes: the variance can
    be near eps, see test_channel_norm_alone), normalized in place, affine. Backward, with
    g = gy * gamma and x^ the normalized input kept from forward:
    gx = (g - mean_c(g) - x^ mean_c(g x^)) / sqrt(var + eps), ggamma = sum_bt(gy x^),
    gbeta = sum_bt(gy)."""

    def __init__(self, groups: int, eps: float):
        self.groups, self.eps = groups, eps

    def forward_cpu(self, inputs):
        h, gamma, beta = inputs
        b, c, t = h.shape
        hg = h.reshape(b, self.groups, c // self.groups, t)
        xhat = hg - hg.mean(axis=2, keepdims=True)
        sq = np.square(xhat)
        var = sq.mean(axis=2, keepdims=True)
        var += h.dtype.type(self.eps)
        self.inv_std = 1 / np.sqrt(var)
        xhat *= self.inv_std
        self.xhat = xhat.reshape(b, c, t)
        y = np.multiply(self.xhat, gamma[:, None], out=sq.reshape(b, c, t))
        y += beta[:, None]
        self.retain_inputs((1,))
        return y,

    def backward(self, indexes, grad_outputs):
        gamma = self.get_retained_inputs()[0].array
        gy = grad_outputs[0].array
        xhat, (b, c, t) = self.xhat, gy.shape
        out = []
        if 0 in indexes:
            shape = (b, self.groups, c // self.groups, t)
            g = (gy * gamma[:, None]).reshape(shape)
            xg = xhat.reshape(shape)
            gxh = g * xg
            m2 = gxh.mean(axis=2, keepdims=True)
            g -= g.mean(axis=2, keepdims=True)
            np.multiply(xg, m2, out=gxh)
            g -= gxh
            g *= self.inv_std
            out.append(chainer.Variable(g.reshape(b, c, t)))
        if 1 in indexes:
            out.append(chainer.Variable(np.einsum("bct,bct->c", gy, xhat)))
        if 2 in indexes:
            out.append(chainer.Variable(gy.sum(axis=(0, 2))))
        return out


def channel_norm(h, gamma, beta, groups: int, eps: float):
    return ChannelNormFn(groups, eps).apply((h, gamma, beta))[0]


def _sigmoid(x):
    """F.sigmoid's formula, tanh(x/2)/2 + 1/2, in three passes over one new array."""
    half = x.dtype.type(0.5)
    s = np.multiply(x, half)
    np.tanh(s, out=s)
    s *= half
    s += half
    return s


class HighwayGateFn(function_node.FunctionNode):
    """y = x + sigmoid(H1) * (H2 - x) for H = [H1, H2] (B, 2C, T) and x (B, C, T).

    Forward keeps s = sigmoid(H1) and d = H2 - x. Backward: gH2 = gy s, gx = gy - gH2,
    gH1 = gy d s (1 - s), both halves written into one (B, 2C, T) array (no concat)."""

    def forward_cpu(self, inputs):
        h, x = inputs
        c = x.shape[1]
        self.s = _sigmoid(h[:, :c])
        self.d = np.subtract(h[:, c:], x)
        y = self.s * self.d
        y += x
        return y,

    def backward(self, indexes, grad_outputs):
        gy = grad_outputs[0].array
        s, d, c = self.s, self.d, self.s.shape[1]
        gh = np.empty((gy.shape[0], 2 * c, gy.shape[2]), gy.dtype)
        gh1, gh2 = gh[:, :c], gh[:, c:]
        np.multiply(gy, s, out=gh2)
        out = []
        if 0 in indexes:
            np.subtract(s.dtype.type(1), s, out=gh1)
            gh1 *= s
            gh1 *= d
            gh1 *= gy
            out.append(chainer.Variable(gh))
        if 1 in indexes:
            out.append(chainer.Variable(gy - gh2))
        return out


def highway_gate(h, x):
    return HighwayGateFn().apply((h, x))[0]
