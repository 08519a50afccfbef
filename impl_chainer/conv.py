"""The 1-D convolution of the CPU training path: one FunctionNode, one BLAS product per pass.

`Conv1d` lays the im2col patches out once as (C*k, B*T), the padding written into them (no
F.pad), so that forward, weight gradient and input gradient are each one product over the
whole batch (F.convolution_nd copies its patches again in every pass), and calls BLAS through
scipy.linalg.blas.gemm on the transposed (Fortran-order) problem, as SciPy's bundled OpenBLAS
has the faster kernels (measurements: results/implementation-notes.md, "chainer: im2col
convolution").

Only what DC-TTS uses is here: stride 1, groups 1 (the separable variants' depthwise and
grouped convolutions, and CuPy arrays, go to F.convolution_nd), float32 / float64, and no
higher-order gradients (the backward returns plain arrays).

The stock tier (ops="stock") uses none of it: F.pad where the padding is one-sided, then
F.convolution_nd, as a user would write it.
"""
from __future__ import annotations

from impl_chainer import runtime  # noqa: F401  (Chainer workarounds first)

import chainer
import chainer.functions as F
import numpy as np
from chainer import function_node
from scipy.linalg import blas

from common.contract import spec as S


def matmul(a, b, trans_a: bool = False, trans_b: bool = False):
    """op(a) @ op(b) for C-contiguous 2-D a and b (op = transpose where asked) by one BLAS
    gemm call: C-order R = A B is Fortran-order R^T = B^T A^T, and a C-contiguous array's
    .T is Fortran-contiguous, so nothing is copied."""
    gemm = blas.get_blas_funcs("gemm", (a, b))
    return gemm(1.0, b.T, a.T, trans_a=trans_b, trans_b=trans_a).T


def im2col(x, k: int, dilation: int, left: int, t_out: int):
    """Patches (C*k, B*t_out) of x (B, C, T) zero-padded by `left` frames: row c*k + j,
    column b*t_out + t holds x[b, c, t + j*dilation - left] (0 outside [0, T))."""
    b, c, t = x.shape
    cols = np.empty((c, k, b, t_out), x.dtype)
    for j, (lo, hi, offset) in enumerate(S.conv_taps(t, t_out, k, dilation, left)):
        cols[:, j, :, :lo] = 0
        cols[:, j, :, hi:] = 0
        cols[:, j, :, lo:hi] = x[:, :, lo + offset:hi + offset].transpose(1, 0, 2)
    return cols.reshape(c * k, b * t_out)


def col2im(cols, shape, k: int, dilation: int, left: int):
    """The adjoint of im2col: (C*k, B*t_out) -> (B, C, T), each patch entry added back to
    the input frame it was read from. A tap reading every input frame (j*dilation == left:
    the middle tap of "same" padding, the last of causal) is assigned rather than added."""
    b, c, t = shape
    t_out = cols.shape[1] // b
    cols = cols.reshape(c, k, b, t_out).transpose(2, 0, 1, 3)  # (B, C, k, t_out) view
    taps = S.conv_taps(t, t_out, k, dilation, left)
    full = [j for j, (lo, hi, offset) in enumerate(taps) if lo == 0 and hi - lo == t and offset == 0]
    gx = np.empty(shape, cols.dtype) if full else np.zeros(shape, cols.dtype)
    if full:
        gx[...] = cols[:, :, full[0]]
    for j, (lo, hi, offset) in enumerate(taps):
        if not full or j != full[0]:
            gx[:, :, lo + offset:hi + offset] += cols[:, :, j, lo:hi]
    return gx


class Conv1d(function_node.FunctionNode):
    """y = conv1d(x zero-padded by (left, right), W, dilation) + b on NumPy arrays:
    x (B, C, T), W (O, C, k), b (O,) -> y (B, O, T + left + right - (k-1)*dilation).

    Forward: cols = im2col(x) (C*k, B*T'), y = W (O, C*k) @ cols, written into (B, O, T')
    with the bias in one pass. Backward: gy as (O, B*T') (one copy), grad_W = gy @ cols^T,
    grad_x = col2im(W^T @ gy), grad_b = row sums of gy. The patches are kept from forward to
    backward (k times the input's memory per layer) rather than rebuilt, and freed there."""

    def __init__(self, pad: tuple, dilation: int):
        self.left, self.right = pad
        self.dilation = dilation

    def forward_cpu(self, inputs):
        x, w = inputs[:2]
        self.retain_inputs((1,))
        self.x_shape = x.shape
        b, _, t = x.shape
        o, c, k = w.shape
        t_out = t + self.left + self.right - (k - 1) * self.dilation
        self.cols = im2col(x, k, self.dilation, self.left, t_out)
        y2 = matmul(w.reshape(o, c * k), self.cols)  # (O, B*T')
        y = np.empty((b, o, t_out), x.dtype)
        y2 = y2.reshape(o, b, t_out).transpose(1, 0, 2)
        if len(inputs) == 3:
            np.add(y2, inputs[2][:, None], out=y)
        else:
            y[...] = y2
        return y,

    def backward(self, indexes, grad_outputs):
        if self.cols is None:
            raise RuntimeError("Conv1d frees its patches in backward: one backward per forward")
        w, = self.get_retained_inputs()
        w = w.array
        gy = grad_outputs[0].array
        b, o, t_out = gy.shape
        gy2 = np.empty((o, b, t_out), gy.dtype)
        gy2[...] = gy.transpose(1, 0, 2)
        gy2 = gy2.reshape(o, b * t_out)
        w2 = w.reshape(o, -1)
        out = []
        if 0 in indexes:
            gcols = matmul(w2, gy2, trans_a=True)
            out.append(chainer.Variable(col2im(gcols, self.x_shape, w.shape[2], self.dilation, self.left)))
        if 1 in indexes:
            out.append(chainer.Variable(matmul(gy2, self.cols, trans_b=True).reshape(w.shape)))
        if 2 in indexes:
            out.append(chainer.Variable(gy2.sum(axis=1)))
        self.cols = None
        return out


def conv1d(x, w, b=None, pad: tuple = (0, 0), dilation: int = 1, groups: int = 1, ops: str = "tuned"):
    """F.convolution_nd (1-D, stride 1) of x zero-padded by pad = (left, right) frames: tuned,
    `Conv1d` for groups 1 on NumPy float arrays; else, and always in the stock tier, Chainer's
    own F.pad (one-sided padding) + F.convolution_nd."""
    array = chainer.as_array(x)
    if (ops == "tuned" and groups == 1 and isinstance(array, np.ndarray)
            and array.dtype in (np.float32, np.float64)):
        return Conv1d(tuple(pad), dilation).apply((x, w) if b is None else (x, w, b))[0]
    left, right = pad
    if left != right:
        x, left = F.pad(x, ((0, 0), (0, 0), (left, right)), "constant"), 0
    return F.convolution_nd(x, w, b, pad=left, dilate=dilation, groups=groups)
