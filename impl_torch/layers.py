"""Building blocks of DC-TTS in PyTorch, one module per entry of a common.contract.spec layer list.

Every block keeps its `common.contract.spec.Layer`, so its parameters are named canonically:
`<layer.name>.<local name>` with local names weight, bias, dw.weight, reduce.weight, norm.gamma,
norm.beta (and batch norm's running statistics norm.mean, norm.var: buffers, not parameters), in
the canonical layouts (which are PyTorch's own). Activations are (B, C, T) with channels-last
memory ((B, T, C) in memory): impl_torch.conv's convolutions read and write it without copies
and the channel norm normalizes its last axis without transposes.
The stock tier (each block's `ops`, common.framework.OPS) keeps activations in (B, C, T) memory
and uses torch's own F.conv1d, F.conv_transpose1d and F.dropout, the norm's transposes copying.
Causal stacks can also run one frame at a time (`Stack.step`) for synthesis.
"""
from __future__ import annotations

from impl_torch import runtime  # noqa: F401  (the framework environment comes first)

import torch
import torch.nn.functional as F
from torch import nn

from common.contract import spec as S
from impl_torch.conv import conv1d, conv_transpose1d


class ChannelNorm(nn.Module):
    """Layer norm over channels at each time step (eps added to the variance); with
    groups=2 the two halves of a highway layer (H1, H2) are normalized separately.
    F.layer_norm over the last axis of the channels-last memory: no transposes. Stock: the same on
    the (B, T, C) transpose of (B, C, T) memory (F.layer_norm copies it), copied back to (B, C, T)."""

    def __init__(self, channels: int, groups: int, eps: float, ops: str = "tuned"):
        super().__init__()
        self.groups, self.eps, self.ops = groups, eps, ops
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, h):
        y = self.step(h.transpose(1, 2)).transpose(1, 2)
        return y.contiguous() if self.ops == "stock" else y

    def step(self, h):
        """The norm over the last axis: (..., C), e.g. one frame (B, C)."""
        *lead, c = h.shape
        hg = F.layer_norm(h.reshape(*lead, self.groups, c // self.groups), (c // self.groups,), eps=self.eps)
        return torch.addcmul(self.beta, hg.reshape(*lead, c), self.gamma)


class BatchNorm(nn.Module):
    """Batch norm per channel over (batch, time), one F.batch_norm: in training mode on the batch's
    statistics, updating the running ones in place (momentum, unbiased variance: torch's own rule,
    common.contract.reference.norm's), in eval mode on the running ones. Those are buffers (`mean`, `var`):
    moved with the module, neither parameters nor Adam state."""

    def __init__(self, channels: int, eps: float, momentum: float, ops: str = "tuned"):
        super().__init__()
        self.eps, self.momentum, self.ops = eps, momentum, ops
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("var", torch.ones(channels))

    def statistics(self) -> dict:
        """{"mean", "var"}: the running statistics (the buffers themselves, updated in place)."""
        return {"mean": self.mean, "var": self.var}

    def forward(self, h):
        """(B, C, T), as (B, C, 1, T): F.batch_norm keeps a 4-D input channels-last. Stock: on
        (B, C, T) itself."""
        if self.ops == "stock":
            return F.batch_norm(h, self.mean, self.var, self.gamma, self.beta, self.training, self.momentum, self.eps)
        return F.batch_norm(h.unsqueeze(2), self.mean, self.var, self.gamma, self.beta, self.training,
                            self.momentum, self.eps).squeeze(2)

    def step(self, h):
        """Eval-mode forward on one frame (B, C) (synthesis)."""
        return F.batch_norm(h, self.mean, self.var, self.gamma, self.beta, False, 0.0, self.eps)


def make_norm(spec: S.Spec, layer: S.Layer, ops: str = "tuned"):
    """The normalization after `layer`'s convolution, or None ([paper]: none): a layer or group
    norm over S.channel_norm_groups channel groups (a highway layer's halves separately), or
    batch norm per channel; in the tier `ops`."""
    if spec.norm == "none":
        return None
    if spec.norm in ("layer", "group"):
        return ChannelNorm(layer.out, S.channel_norm_groups(spec, layer), spec.norm_eps, ops)
    return BatchNorm(layer.out, spec.norm_eps, spec.norm_momentum, ops)


class Block(nn.Module):
    """A module built from one `common.contract.spec.Layer`; its parameters are `<layer.name>.<local name>`.
    `ops`: the tier of operators (common.framework.OPS)."""

    def __init__(self, spec: S.Spec, layer: S.Layer, ops: str = "tuned"):
        super().__init__()
        self.layer, self.p_drop, self.ops = layer, 0.0 if layer.plain else spec.dropout, ops

    def drop(self, y):
        """Dropout in training mode: each value kept with probability 1 - p_drop and scaled by
        1 / (1 - p_drop). On the CPU the mask compares uniform numbers with p_drop, as PyTorch's
        own GPU kernel does: F.dropout's Bernoulli draws cost twice as much there (measurements:
        results/implementation-notes.md, "torch: dropout"); elsewhere F.dropout is that fused kernel.
        Stock: F.dropout everywhere."""
        if not (self.p_drop and self.training):
            return y
        if self.ops == "stock" or y.device.type != "cpu":
            return F.dropout(y, self.p_drop, True)
        return y * (torch.rand_like(y) >= self.p_drop).to(y.dtype).mul_(1 / (1 - self.p_drop))


class Embedding(Block):
    """Character ids (B, N) -> (B, e, N)."""

    def __init__(self, spec, layer, ops="tuned"):
        super().__init__(spec, layer, ops)
        self.weight = nn.Parameter(torch.empty(layer.cin, layer.cout))

    def forward(self, ids):
        if self.ops == "stock":
            return F.embedding(ids, self.weight).transpose(1, 2).contiguous()  # (B, C, T) memory
        return F.embedding(ids, self.weight).transpose(1, 2)  # channels-last as it is


class Depthwise(nn.Module):
    """The depthwise half of a separable convolution (weight (cin, 1, k), no bias)."""

    def __init__(self, channels: int, k: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(channels, 1, k))


class Reduction(nn.Module):
    """The bottleneck variant's 1x1 reduction before a k-wide convolution (weight (width, channels, 1), no bias)."""

    def __init__(self, width: int, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(width, channels, 1))


class Conv(Block):
    """C(o, k, dilation): y = drop(act(norm(conv(x)))). Causal layers pad (k-1)*dilation
    on the left only (explicit F.pad), non-causal ones symmetrically ("same")."""

    def __init__(self, spec, layer, ops="tuned"):
        super().__init__(spec, layer, ops)
        separable = S.is_separable(spec, layer)  # depthwise (k) + pointwise (1, maybe grouped)
        width = S.bottleneck_width(spec, layer)  # bottleneck: 1x1 down to width, then the k-wide conv
        self.history_channels = width or layer.cin  # what a causal step keeps of past inputs
        self.pointwise_groups = S.pointwise_groups(spec, layer)
        self.dw = Depthwise(layer.cin, layer.k) if separable else None
        self.reduce = Reduction(width, layer.cin) if width else None
        self.weight = nn.Parameter(torch.empty(layer.out, (width or layer.cin) // self.pointwise_groups,
                                               1 if separable else layer.k))
        self.bias = nn.Parameter(torch.empty(layer.out))
        self.norm = None if layer.plain else make_norm(spec, layer, ops)

    def conv(self, x, pad: tuple, dilation: int):
        """The (separable, bottleneck or plain) convolution of x zero-padded by pad = (left, right)
        frames, normalized ("same" padding stays inside conv1d; the bottleneck reduces before padding)."""
        if self.reduce is not None:
            x = conv1d(x, self.reduce.weight, ops=self.ops)
        if self.dw is not None:
            x = conv1d(x, self.dw.weight, None, pad, dilation, groups=x.shape[1], ops=self.ops)
            h = conv1d(x, self.weight, self.bias, groups=self.pointwise_groups, ops=self.ops)
        else:
            h = conv1d(x, self.weight, self.bias, pad, dilation, ops=self.ops)
        return self.norm(h) if self.norm is not None else h

    def output(self, h, x):
        """From the normalized convolution h (and the layer input x) to the layer output."""
        return torch.relu(h) if self.layer.act == "relu" else h

    def forward(self, x):
        return self.drop(self.output(self.conv(x, self.layer.pad, self.layer.dilation), x))

    def conv_step(self, taps):
        """conv of one output frame from its k input taps (B, history_channels, k) (every
        dilation-th frame of the window, already reduced in the bottleneck variant) -> (B, out),
        normalized: one matrix product with the flattened kernel, as conv1d on the taps and the
        (B, C, T) layer norm's transposes cost more than a frame's arithmetic (measurements:
        results/implementation-notes.md, "torch: one synthesis frame's convolution"). Stock: F.conv1d
        on the taps (B, C, k) -> (B, out, 1) (each half of a separable one) and the norm's forward."""
        if self.ops == "stock":
            if self.dw is not None:
                taps = F.conv1d(taps, self.dw.weight, groups=taps.shape[1])  # depthwise: (B, cin, 1)
            h = F.conv1d(taps, self.weight, self.bias, groups=self.pointwise_groups)
            return (self.norm(h) if self.norm is not None else h)[:, :, 0]
        b = taps.shape[0]
        if self.dw is not None:
            x = (taps * self.dw.weight[:, 0]).sum(dim=2)  # depthwise: (B, cin)
            h = F.conv1d(x[:, :, None], self.weight, self.bias, groups=self.pointwise_groups)[:, :, 0]
        else:
            h = torch.addmm(self.bias, taps.reshape(b, -1), self.weight.view(self.weight.shape[0], -1).t())
        return self.norm.step(h) if self.norm is not None else h

    def step(self, x, history):
        """Causal layers, one frame x (B, C, 1) at a time: `history` holds the last
        (k-1)*dilation inputs (zeros at the start: exactly the causal padding), reduced to the
        bottleneck's width in that variant (each frame once, not once per tap; stock: by F.conv1d).
        Returns (y, new history)."""
        if x.dim() != 3 or x.shape[2] != 1:
            raise ValueError(f"step takes one frame (B, C, 1) at a time, got shape {tuple(x.shape)}")
        if self.reduce is None:
            z = x
        elif self.ops == "stock":
            z = F.conv1d(x, self.reduce.weight)
        else:
            z = torch.matmul(self.reduce.weight[:, :, 0], x)  # (B, width, 1)
        window = torch.cat([history, z], dim=2)
        h = self.conv_step(window[:, :, ::self.layer.dilation])
        return self.drop(self.output(h[:, :, None], x)), window[:, :, 1:]


class HighwayConv(Conv):
    """HC: H1, H2 = split(norm(conv(x))) (a layer norm normalizes the halves separately);
    y = drop(sigmoid(H1) * H2 + (1 - sigmoid(H1)) * x)."""

    def output(self, h, x):
        """On (B, T, C) views, so that the halves' gradients are joined channels-last (stock: on
        the (B, C, T) tensors themselves)."""
        if self.ops == "stock":
            h1, h2 = h.chunk(2, dim=1)
            return torch.lerp(x, h2, torch.sigmoid(h1))
        h1, h2 = h.transpose(1, 2).chunk(2, dim=2)
        return torch.lerp(x.transpose(1, 2), h2, torch.sigmoid(h1)).transpose(1, 2)  # x + sigmoid(H1) * (H2 - x)


class ResidualConv(Conv):
    """The residual variant of HC (spec.block == "residual"): y = drop(x + relu(norm(conv(x))))."""

    def output(self, h, x):
        return x + torch.relu(h)


class Deconv(Block):
    """D(o, k): transposed convolution, stride = kernel = k, no padding (length x stride); y = drop(norm(.))."""

    def __init__(self, spec, layer, ops="tuned"):
        super().__init__(spec, layer, ops)
        self.weight = nn.Parameter(torch.empty(layer.cin, layer.out, layer.k))
        self.bias = nn.Parameter(torch.empty(layer.out))
        self.norm = None if layer.plain else make_norm(spec, layer, ops)

    def forward(self, x):
        h = conv_transpose1d(x, self.weight, self.bias, self.layer.stride, self.ops)
        return self.drop(self.norm(h) if self.norm is not None else h)


BLOCKS = {S.EMBED: Embedding, S.CONV: Conv, S.HIGHWAY: HighwayConv, S.RESIDUAL: ResidualConv,
          S.DECONV: Deconv}


class Stack(nn.Sequential):
    """The blocks of one layer list in order; causal stacks can also run frame by frame."""

    def initial_history(self, batch_size: int) -> list:
        """Zero input histories for `step`, one per layer ((B, cin or the bottleneck's width,
        (k-1)*dilation)), on the device of the stack's parameters."""
        if not all(block.layer.causal for block in self):
            raise ValueError("only causal stacks run frame by frame")
        p = next(self.parameters())
        return [torch.zeros(batch_size, b.history_channels, b.layer.pad[0], device=p.device, dtype=p.dtype)
                for b in self]

    def step(self, x, history: list) -> tuple:
        """One new frame x (B, C, 1) -> (output (B, C', 1), updated histories)."""
        updated = []
        for block, past in zip(self, history):
            x, past = block.step(x, past)
            updated.append(past)
        return x, updated


def build_stack(spec: S.Spec, layer_list, ops: str = "tuned") -> Stack:
    """Walk a layer list of common.contract.spec (parameters uninitialized: load weights next), every block
    in the tier `ops`."""
    return Stack(*(BLOCKS[layer.kind](spec, layer, ops) for layer in layer_list))


def canonical_parameters(model: nn.Module) -> dict:
    """{canonical name: parameter} of every block in `model`, in forward order: the trainable
    parameters (what the optimizer and DDP see)."""
    return {f"{m.layer.name}.{local}": p for m in model.modules() if isinstance(m, Block)
            for local, p in m.named_parameters()}


def canonical_statistics(model: nn.Module) -> dict:
    """{canonical name: buffer} of every batch norm's running statistics in `model` (the buffers
    themselves: copying into them sets the statistics); {} without batch norm."""
    return {f"{m.layer.name}.{path}.{key}": buf for m in model.modules() if isinstance(m, Block)
            for path, norm in m.named_modules() if isinstance(norm, BatchNorm)
            for key, buf in norm.statistics().items()}
