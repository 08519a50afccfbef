"""Building blocks of DC-TTS as Chainer links, one per entry of a common.contract.spec layer list.

Every block keeps its `common.contract.spec.Layer`, so its parameters are named canonically:
`<layer.name>.<attribute path>` with paths weight, bias, dw.weight, reduce.weight, norm.gamma,
norm.beta (and the batch norm's running statistics norm.mean, norm.var: persistent values, not
parameters), in the canonical layouts (which are Chainer's own). Activations are (B, C, T).
Causal stacks can also run one frame at a time (`Stack.step`) for synthesis.

`step` (synthesis) computes on plain arrays, not chainer.functions (no graph is needed; a
function call costs tens of microseconds of Python). Convolutions are impl_chainer.conv.conv1d on
NumPy (one im2col node), F.convolution_nd elsewhere. Measurements behind both:
results/implementation-notes.md, "chainer: synthesis on arrays, and convolutions".

Every block and norm takes the tier of operators `ops` (common.framework.OPS): the stock tier
uses only Chainer's own functions, in forward and step alike (F.convolution_nd, F.layer_normalization,
F.sigmoid and arithmetic; step under no_backprop_mode), none of impl_chainer.conv or impl_chainer.fused.
"""
from __future__ import annotations

from impl_chainer import runtime  # noqa: F401  (Chainer workarounds first)

import chainer
import chainer.functions as F
import numpy as np

from common.contract import spec as S
from impl_chainer.conv import conv1d
from impl_chainer.fused import channel_norm, highway_gate


def _param(*shape):
    """A float32 parameter; its values always come from common.contract.weights through set_weights."""
    return chainer.Parameter(np.zeros(shape, np.float32))


class ChannelNorm(chainer.Link):
    """Layer norm over channels at each time step of (B, C, T) (eps added to the variance);
    with groups=2 the two halves of a highway layer (H1, H2) are normalized separately, then
    one affine over all C.

    On NumPy one hand-written node (impl_chainer.fused.ChannelNormFn); elsewhere
    F.batch_normalization(axis=2) on (B, G, C/G, T), Chainer's one fused kernel for a
    normalization over an axis (measurements: results/implementation-notes.md, "chainer: the channel norm").
    Stock: F.layer_normalization, Chainer's layer norm (`_normalize`)."""

    def __init__(self, channels: int, groups: int, eps: float, ops: str = "tuned"):
        super().__init__()
        self.groups, self.eps, self.ops = groups, eps, ops
        with self.init_scope():
            self.gamma = chainer.Parameter(np.ones(channels, np.float32))
            self.beta = chainer.Parameter(np.zeros(channels, np.float32))

    def forward(self, h):
        if self.ops == "stock":  # the channels of each (b, t) as one row of F.layer_normalization
            b, c, t = h.shape
            rows = F.reshape(F.transpose(h, (0, 2, 1)), (b * t, c))
            return F.transpose(F.reshape(self._normalize(rows), (b, t, c)), (0, 2, 1))
        if self.xp is np:  # the same computation in one node (impl_chainer.fused)
            return channel_norm(h, self.gamma, self.beta, self.groups, self.eps)
        b, c, t = h.shape
        xp, g = self.xp, self.groups
        unit = xp.ones((b, g, t), h.dtype), xp.zeros((b, g, t), h.dtype)
        h = F.batch_normalization(F.reshape(h, (b, g, c // g, t)), *unit, eps=self.eps, axis=2)
        return F.reshape(h, (b, c, t)) * F.reshape(self.gamma, (1, c, 1)) + F.reshape(self.beta, (1, c, 1))

    def _normalize(self, rows):
        """Stock: rows (N, C) -> F.layer_normalization of each group of C/groups channels (it takes
        2-D input and one scale and shift per unit: unit and zero here, the groups being rows of
        their own), then the affine gamma, beta over all C."""
        n, c = rows.shape
        width = c // self.groups
        unit = self.xp.ones(width, rows.dtype), self.xp.zeros(width, rows.dtype)
        y = F.layer_normalization(F.reshape(rows, (n * self.groups, width)), *unit, eps=self.eps)
        return F.reshape(y, (n, c)) * self.gamma + self.beta

    def step(self, h):
        """forward on one frame (B, C) (synthesis: no graph): plain arrays; stock, `_normalize`."""
        if self.ops == "stock":
            return self._normalize(h)
        b, c = h.shape
        h = h.reshape(b, self.groups, c // self.groups)
        centered = h - h.sum(axis=2, keepdims=True) * h.dtype.type(1 / h.shape[2])
        var = (centered * centered).sum(axis=2, keepdims=True) * h.dtype.type(1 / h.shape[2])
        h = centered * (1 / self.xp.sqrt(var + h.dtype.type(self.eps)))
        return h.reshape(b, c) * self.gamma.array + self.beta.array


class BatchNorm(chainer.Link):
    """Batch norm per channel of (B, C, T) over (batch, time): F.batch_normalization in training
    (chainer.config.train; the batch's statistics, the running ones updated in place with
    decay = 1 - momentum and the unbiased variance, as common.contract.reference.norm), else
    F.fixed_batch_normalization on the running statistics. Those are persistent values
    (`mean`, `var`): not parameters, so neither gradients nor Adam touch them. (Both tiers: these
    are Chainer's own functions; only `step` differs.)"""

    def __init__(self, channels: int, eps: float, momentum: float, ops: str = "tuned"):
        super().__init__()
        self.eps, self.momentum, self.ops = eps, momentum, ops
        with self.init_scope():
            self.gamma = chainer.Parameter(np.ones(channels, np.float32))
            self.beta = chainer.Parameter(np.zeros(channels, np.float32))
        self.add_persistent("mean", np.zeros(channels, np.float32))
        self.add_persistent("var", np.ones(channels, np.float32))

    def statistics(self) -> dict:
        """{"mean", "var"}: the running statistics (the arrays themselves, updated in place)."""
        return {"mean": self.mean, "var": self.var}

    def forward(self, h):
        if chainer.config.train:
            return F.batch_normalization(h, self.gamma, self.beta, eps=self.eps, running_mean=self.mean,
                                         running_var=self.var, decay=1.0 - self.momentum, axis=(0, 2))
        return F.fixed_batch_normalization(h, self.gamma, self.beta, self.mean, self.var, eps=self.eps, axis=(0, 2))

    def step(self, h):
        """Eval-mode forward on one frame (B, C) (synthesis: no graph): plain arrays; stock,
        F.fixed_batch_normalization."""
        if self.ops == "stock":
            return F.fixed_batch_normalization(h, self.gamma, self.beta, self.mean, self.var, eps=self.eps)
        scale = self.gamma.array / self.xp.sqrt(self.var + h.dtype.type(self.eps))
        return (h - self.mean) * scale + self.beta.array


def make_norm(spec: S.Spec, layer: S.Layer, ops: str = "tuned"):
    """The normalization after `layer`'s convolution, or None ([paper]: none): a layer or group
    norm over S.channel_norm_groups channel groups (a highway layer's halves separately), or
    batch norm per channel; in the tier `ops`."""
    if spec.norm == "none":
        return None
    if spec.norm in ("layer", "group"):
        return ChannelNorm(layer.out, S.channel_norm_groups(spec, layer), spec.norm_eps, ops)
    return BatchNorm(layer.out, spec.norm_eps, spec.norm_momentum, ops)


class Block(chainer.Chain):
    """A link built from one `common.contract.spec.Layer`, in the tier `ops`; its parameters are
    `<layer.name>.<attribute path>`."""

    def __init__(self, spec: S.Spec, layer: S.Layer, ops: str = "tuned"):
        super().__init__()
        self.layer, self.p_drop, self.ops = layer, 0.0 if layer.plain else spec.dropout, ops

    def drop(self, y):
        """F.dropout is the identity unless chainer.config.train. Its masks come from
        numpy.random (CPU) or cupy.random (GPU), which Backend.seed reseeds; cuDNN's dropout
        would keep a stream of its own, so it is not used (its cost: results/implementation-notes.md,
        "chainer: dropout")."""
        if not self.p_drop:
            return y
        with chainer.using_config("use_cudnn", "never"):
            return F.dropout(y, self.p_drop)


class Embedding(Block):
    """Character ids (B, N) -> (B, e, N)."""

    def __init__(self, spec, layer, ops: str = "tuned"):
        super().__init__(spec, layer, ops)
        with self.init_scope():
            self.weight = _param(layer.cin, layer.cout)

    def forward(self, ids):
        return F.transpose(F.embed_id(ids, self.weight), (0, 2, 1))


class Depthwise(chainer.Link):
    """The depthwise half of a separable convolution (weight (cin, 1, k), no bias)."""

    def __init__(self, channels: int, k: int):
        super().__init__()
        with self.init_scope():
            self.weight = _param(channels, 1, k)


class Reduction(chainer.Link):
    """The bottleneck variant's 1x1 reduction before a k-wide convolution (weight (width, channels, 1), no bias)."""

    def __init__(self, width: int, channels: int):
        super().__init__()
        with self.init_scope():
            self.weight = _param(width, channels, 1)


class Conv(Block):
    """C(o, k, dilation): y = drop(act(norm(conv(x)))). Causal layers pad (k-1)*dilation
    on the left only, non-causal ones symmetrically ("same")."""

    def __init__(self, spec, layer, ops: str = "tuned"):
        super().__init__(spec, layer, ops)
        separable = S.is_separable(spec, layer)  # depthwise (k) + pointwise (1, maybe grouped)
        self.pointwise_groups = S.pointwise_groups(spec, layer)
        width = S.bottleneck_width(spec, layer)  # bottleneck: 1x1 down to width, then the k-wide conv
        self.history_channels = width or layer.cin  # what a causal step keeps of past inputs
        with self.init_scope():
            self.dw = Depthwise(layer.cin, layer.k) if separable else None
            self.reduce = Reduction(width, layer.cin) if width else None
            self.weight = _param(layer.out, (width or layer.cin) // self.pointwise_groups, 1 if separable else layer.k)
            self.bias = _param(layer.out)
            self.norm = None if layer.plain else make_norm(spec, layer, ops)

    def conv(self, x, pad: tuple, dilation: int):
        """The (separable, bottleneck or plain) convolution of x zero-padded by pad = (left,
        right) frames, normalized."""
        if self.reduce is not None:
            x = conv1d(x, self.reduce.weight, ops=self.ops)
        h = self._kernel_conv(x, pad, dilation)
        return self.norm(h) if self.norm is not None else h

    def _kernel_conv(self, x, pad: tuple, dilation: int):
        """The k-wide convolution (depthwise + pointwise when separable) of x, already reduced in
        the bottleneck variant, not normalized."""
        if self.dw is not None:
            x = conv1d(x, self.dw.weight, pad=pad, dilation=dilation, groups=x.shape[1], ops=self.ops)
            return conv1d(x, self.weight, self.bias, groups=self.pointwise_groups, ops=self.ops)
        return conv1d(x, self.weight, self.bias, pad=pad, dilation=dilation, ops=self.ops)

    def output(self, h, x):
        """From the normalized convolution h (and the layer input x) to the layer output."""
        return F.relu(h) if self.layer.act == "relu" else h

    def output_step(self, h, x):
        """output on one frame's plain arrays h (B, C') and x (B, C)."""
        return self.xp.maximum(h, h.dtype.type(0)) if self.layer.act == "relu" else h

    def conv_step(self, taps):
        """conv of one output frame from its k input taps (B, history_channels, k) (every
        dilation-th frame of the window, already reduced in the bottleneck variant), as one
        matmul on the flattened taps -> (B, out), normalized. Stock: Chainer's convolution of
        the taps (_kernel_conv without padding: the one output frame)."""
        if self.ops == "stock":
            h = self._kernel_conv(taps, (0, 0), 1)[:, :, 0]
            return self.norm.step(h) if self.norm is not None else h
        b = taps.shape[0]
        if self.dw is not None:
            x = (taps * self.dw.weight.array[:, 0]).sum(axis=2)  # depthwise: (B, cin)
            g = self.pointwise_groups
            w = self.weight.array.reshape(g, -1, x.shape[1] // g)  # (g, out/g, cin/g)
            h = (x.reshape(b, g, 1, -1) @ w.transpose(0, 2, 1)).reshape(b, -1) + self.bias.array
        else:
            h = taps.reshape(b, -1) @ self.weight.array.reshape(self.weight.shape[0], -1).T + self.bias.array
        return self.norm.step(h) if self.norm is not None else h

    def forward(self, x):
        return self.drop(self.output(self.conv(x, self.layer.pad, self.layer.dilation), x))

    def step(self, x, history):
        """Causal layers, one frame x (B, C, 1) at a time, on plain arrays (inference: no
        dropout, no graph): `history` holds the last (k-1)*dilation inputs (zeros at the
        start: exactly the causal padding), reduced to the bottleneck's width in that variant
        (each frame once, not once per tap). The kernel reads every dilation-th frame of the
        window, so those k taps are one matmul with the flattened kernel. Returns (y, new history).
        Stock: the same steps in chainer.functions (conv_step, norm.step, the forward's `output`),
        under no_backprop_mode; inputs, outputs and histories stay plain arrays."""
        if x.ndim != 3 or x.shape[2] != 1:
            raise ValueError(f"step takes one frame (B, C, 1) at a time, got shape {x.shape}")
        if self.ops == "stock":
            with chainer.no_backprop_mode():
                z = x if self.reduce is None else conv1d(x, self.reduce.weight, ops=self.ops).array
                window = self.xp.concatenate([history, z], axis=2) if history.shape[2] else z
                h = self.conv_step(window[:, :, ::self.layer.dilation])
                return chainer.as_array(self.output(h, x[:, :, 0]))[:, :, None], window[:, :, 1:]
        z = x
        if self.reduce is not None:
            z = (self.reduce.weight.array[:, :, 0] @ x)  # (width, cin) @ (B, cin, 1) -> (B, width, 1)
        window = self.xp.concatenate([history, z], axis=2) if history.shape[2] else z
        h = self.conv_step(window[:, :, ::self.layer.dilation])
        return self.output_step(h, x[:, :, 0])[:, :, None], window[:, :, 1:]


class HighwayConv(Conv):
    """HC: H1, H2 = split(norm(conv(x))) (a layer norm normalizes the halves separately);
    y = drop(sigmoid(H1) * H2 + (1 - sigmoid(H1)) * x), computed as x + sigmoid(H1) * (H2 - x):
    four F ops instead of five (each is a NumPy pass forward and more backward); on NumPy one
    hand-written node, impl_chainer.fused.HighwayGateFn, except in the stock tier (those F ops)."""

    def output(self, h, x):
        if self.ops == "tuned" and self.xp is np:  # the same computation in one node (impl_chainer.fused)
            return highway_gate(h, x)
        h1, h2 = F.split_axis(h, 2, axis=1)
        return x + F.sigmoid(h1) * (h2 - x)

    def output_step(self, h, x):
        c, half = x.shape[1], h.dtype.type(0.5)
        return x + (self.xp.tanh(h[:, :c] * half) * half + half) * (h[:, c:] - x)  # F.sigmoid's formula


class ResidualConv(Conv):
    """The residual variant of HC (spec.block == "residual"): y = drop(x + relu(norm(conv(x))))."""

    def output(self, h, x):
        return x + F.relu(h)

    def output_step(self, h, x):
        return x + self.xp.maximum(h, h.dtype.type(0))


class Deconv(Block):
    """D(o, k): transposed convolution, stride = kernel = k, no padding (length x stride); y = drop(norm(.))."""

    def __init__(self, spec, layer, ops: str = "tuned"):
        super().__init__(spec, layer, ops)
        with self.init_scope():
            self.weight = _param(layer.cin, layer.out, layer.k)
            self.bias = _param(layer.out)
            self.norm = None if layer.plain else make_norm(spec, layer, ops)

    def forward(self, x):
        stride = self.layer.stride
        h = F.deconvolution_nd(x, self.weight, self.bias, stride=stride, outsize=(stride * x.shape[2],))
        return self.drop(self.norm(h) if self.norm is not None else h)


BLOCKS = {S.EMBED: Embedding, S.CONV: Conv, S.HIGHWAY: HighwayConv, S.RESIDUAL: ResidualConv,
          S.DECONV: Deconv}


class Stack(chainer.Sequential):
    """The blocks of one layer list in order; causal stacks can also run frame by frame."""

    def initial_history(self, batch_size: int) -> list:
        """Zero input histories for `step`, one per layer ((B, cin or the bottleneck's width,
        (k-1)*dilation)), on the device of the stack's parameters."""
        if not all(block.layer.causal for block in self):
            raise ValueError("only causal stacks run frame by frame")
        return [self.xp.zeros((batch_size, b.history_channels, b.layer.pad[0]), np.float32) for b in self]

    def step(self, x, history: list) -> tuple:
        """One new frame x (B, C, 1) -> (output (B, C', 1), updated histories). Inference only
        (chainer.config.train off where the stack has dropout): the blocks take and return plain
        arrays (stock: chainer.functions inside); the output comes back as a Variable, like the stack's forward."""
        if chainer.config.train and any(block.p_drop for block in self):
            raise ValueError("step is for inference: turn chainer.config.train off (dropout)")
        x = chainer.as_array(x)
        updated = []
        for block, past in zip(self, history):
            x, past = block.step(x, past)
            updated.append(past)
        return chainer.Variable(x, requires_grad=False), updated


def build_stack(spec: S.Spec, layer_list, ops: str = "tuned") -> Stack:
    """Walk a layer list of common.contract.spec, every block in the tier `ops` (parameters zero: load weights next)."""
    return Stack(*(BLOCKS[layer.kind](spec, layer, ops) for layer in layer_list))


def _blocks(model) -> list:
    """The Blocks of a Block, a Stack or a network (Text2Mel, SSRN: whose `stacks()` lists its
    Stacks), in forward order (a Chain visits its children sorted by name)."""
    if isinstance(model, Block):
        return [model]
    return [block for stack in ([model] if isinstance(model, Stack) else model.stacks()) for block in stack]


def canonical_parameters(model: chainer.Link) -> dict:
    """{canonical name: Parameter} of every block in `model`, in forward order: the trainable
    parameters."""
    return {f"{block.layer.name}{path.replace('/', '.')}": p for block in _blocks(model)
            for path, p in block.namedparams()}


def canonical_statistics(model: chainer.Link) -> dict:
    """{canonical name: array} of every batch norm's running statistics in `model` (the
    persistent arrays themselves: writing into them sets the statistics); {} without batch norm."""
    return {f"{block.layer.name}{path.replace('/', '.')}.{key}": a for block in _blocks(model)
            for path, norm in block.namedlinks(skipself=True) if isinstance(norm, BatchNorm)
            for key, a in norm.statistics().items()}
