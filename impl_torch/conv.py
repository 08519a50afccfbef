"""The 1-D convolutions of impl_torch, on channels-last activations: x (B, C, T) whose memory is
(B, T, C), so that the channel norm and the matrix products read it without transposes.

On the CPU, `Conv1d` (one autograd Function) lays the im2col patches out once as (B*T', C*k)
from that memory, the padding written into them, so that forward, weight gradient and input
gradient are each one matrix product over the whole batch (MKL's GEMM) with the canonical
(O, C, k) weight as it is; oneDNN's convolutions ran slower on these shapes, in either memory
layout (measurements: results/implementation-notes.md, "torch: channels-last activations and the
im2col convolution").
Everything else -- groups (the separable variants), GPUs -- goes to F.conv2d on (B, C, 1, T)
views, which keep channels-last memory (F.conv1d would copy to (B, C, T) memory).

`Conv1d` does only what DC-TTS needs: stride 1, no higher-order gradients. The transposed
convolution (SSRN's upsampling, stride = kernel) stays F.conv_transpose2d on the same views.
The stock tier (ops="stock") runs F.conv1d and F.conv_transpose1d themselves on (B, C, T) memory.
"""
from __future__ import annotations

from impl_torch import runtime  # noqa: F401  (the framework environment comes first)

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from common.contract import spec as S


def im2col(xt, k: int, dilation: int, left: int, t_out: int):
    """Patches (B, t_out, C, k) of xt (B, T, C) zero-padded by `left` frames: [b, t, c, j] holds
    xt[b, t + j*dilation - left, c] (0 outside [0, T))."""
    b, t, c = xt.shape
    if k == 1 and left == 0 and t_out == t:
        return xt.contiguous()[..., None]
    cols = xt.new_empty(b, t_out, c, k)
    for j, (lo, hi, offset) in enumerate(S.conv_taps(t, t_out, k, dilation, left)):
        cols[:, :lo, :, j] = 0
        cols[:, hi:, :, j] = 0
        cols[:, lo:hi, :, j] = xt[:, lo + offset:hi + offset]
    return cols


def col2im(cols, t: int, dilation: int, left: int):
    """The adjoint of im2col: (B, t_out, C, k) -> (B, T, C), each patch entry added back to the
    input frame it was read from. A tap reading every input frame (the middle tap of "same"
    padding, the last of causal) is copied rather than added."""
    b, t_out, c, k = cols.shape
    taps = S.conv_taps(t, t_out, k, dilation, left)
    full = [j for j, (lo, hi, offset) in enumerate(taps) if lo == 0 and hi == t and offset == 0]
    gx = cols[..., full[0]].contiguous() if full else cols.new_zeros(b, t, c)
    for j, (lo, hi, offset) in enumerate(taps):
        if not full or j != full[0]:
            gx[:, lo + offset:hi + offset] += cols[:, lo:hi, :, j]
    return gx


class Conv1d(torch.autograd.Function):
    """y = conv1d(x zero-padded by (left, right), W, dilation) + b: x (B, C, T), W (O, C, k),
    b (O,) or None -> y (B, O, T + left + right - (k-1)*dilation), channels-last.

    Forward: cols = im2col(x) (B*T', C*k), y = cols @ W^T (+ b in the same call). Backward:
    grad_W = gy^T @ cols, grad_x = col2im(gy @ W), grad_b = column sums of gy. The patches are
    kept from forward to backward (k times the input's memory per layer) rather than rebuilt."""

    @staticmethod
    def forward(ctx, x, w, b, pad: tuple, dilation: int):
        xt = x.transpose(1, 2)  # (B, T, C): a view of channels-last memory
        batch, t, c = xt.shape
        o, _, k = w.shape
        left, right = pad
        t_out = t + left + right - (k - 1) * dilation
        cols = im2col(xt, k, dilation, left, t_out).view(batch * t_out, c * k)
        w2 = w.reshape(o, c * k)
        y = torch.mm(cols, w2.t()) if b is None else torch.addmm(b, cols, w2.t())
        ctx.save_for_backward(cols, w2)
        ctx.geometry = (batch, t, c, k, dilation, left, b is not None)
        return y.view(batch, t_out, o).transpose(1, 2)

    @staticmethod
    @once_differentiable
    def backward(ctx, gy):
        cols, w2 = ctx.saved_tensors
        batch, t, c, k, dilation, left, has_bias = ctx.geometry
        g2 = gy.transpose(1, 2).reshape(-1, w2.shape[0])  # (B*T', O): a view when gy is channels-last
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = col2im(torch.mm(g2, w2).view(batch, -1, c, k), t, dilation, left).transpose(1, 2)
        if ctx.needs_input_grad[1]:
            gw = torch.mm(g2.t(), cols).view(w2.shape[0], c, k)
        if has_bias and ctx.needs_input_grad[2]:
            gb = g2.sum(dim=0)
        return gx, gw, gb, None, None


def conv1d(x, w, b=None, pad: tuple = (0, 0), dilation: int = 1, groups: int = 1, ops: str = "tuned"):
    """F.conv1d (stride 1) of x (B, C, T) zero-padded by pad = (left, right) frames. Tuned: the
    result channels-last, `Conv1d` for groups 1 on the CPU, else F.conv2d on (B, C, 1, T) views.
    Stock: F.conv1d itself on (B, C, T) memory, unequal padding (causal) written by F.pad first."""
    if ops == "stock":
        left, right = pad
        if left != right:
            x, left = F.pad(x, (left, right)), 0
        return F.conv1d(x, w, b, padding=left, dilation=dilation, groups=groups)
    if groups == 1 and x.device.type == "cpu":
        return Conv1d.apply(x, w, b, tuple(pad), dilation)
    return conv2d_views(x, w, b, pad, dilation, groups)


def conv2d_views(x, w, b, pad: tuple, dilation: int, groups: int):
    """conv1d as F.conv2d on (B, C, 1, T) views (cuDNN on a GPU, oneDNN on the CPU), unequal
    padding (causal) written by F.pad first."""
    x = x.unsqueeze(2)
    left, right = pad
    if left != right:
        x, left = F.pad(x, (left, right)), 0
    return F.conv2d(x, w.unsqueeze(2), b, padding=(0, left), dilation=(1, dilation), groups=groups).squeeze(2)


def conv_transpose1d(x, w, b, stride: int, ops: str = "tuned"):
    """F.conv_transpose1d of x (B, C, T) with W (C, O, k), no padding. Tuned: the result
    channels-last (as F.conv_transpose2d on (B, C, 1, T) views); stock: F.conv_transpose1d itself."""
    if ops == "stock":
        return F.conv_transpose1d(x, w, b, stride=stride)
    return F.conv_transpose2d(x.unsqueeze(2), w.unsqueeze(2), b, stride=(1, stride)).squeeze(2)
