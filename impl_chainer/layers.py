"""Building blocks of DC-TTS as Chainer links, one per entry of a common.spec layer list.

Every block keeps its `common.spec.Layer`, so its parameters are named canonically:
`<layer.name>.<attribute path>` with paths weight, bias, dw.weight, norm.gamma, norm.beta,
in the canonical layouts (which are Chainer's own). Activations are (B, C, T). Causal
stacks can also run one frame at a time (`Stack.step`) for synthesis.

`step` (synthesis, inference only) computes on plain arrays with the device's array module,
not with chainer.functions: no graph is needed there, and every Chainer function call costs
tens of microseconds of Python (FunctionNode.apply, Variable wrapping) against one or two
for a NumPy operation on a frame. Measured (`small` Text2Mel synthesis, 64 frames, 1 thread):
with chainer.functions, 335 function calls a frame took 90% of the time (cProfile) and a frame
cost 6.3x PyTorch's; on arrays, 0.5-0.6x (medians of 6-8 interleaved processes). The array code
computes what the functions do, up to float32 rounding (mean, variance, 1/sqrt(var + eps);
sigmoid as tanh(x/2)/2 + 1/2).

Convolutions are impl_chainer.conv.conv1d: on NumPy, one FunctionNode with the padding
(causal or "same") written into its im2col patches and one BLAS product per pass (see
conv.py); elsewhere (CuPy, grouped convolutions) F.convolution_nd. Measured before it, for
F.convolution_nd: against F.convolution_2d on a height-1 axis (a (4, 512, 150) input,
dilation 9, k=3, 1024 outputs, forward + backward, medians of 15 interleaved runs) 39-42 ms
vs 43-44 ms for both causal and "same" padding; causal left padding as an explicit F.pad
rather than padding both sides and cutting the right end off (73-80 ms, twice the work);
for k=1 layers, F.matmul / F.linear no faster than F.convolution_nd (22 ms each).
"""
from __future__ import annotations

from impl_chainer import runtime  # noqa: F401  (Chainer workarounds first)

import chainer
import chainer.functions as F
import numpy as np

from common import spec as S
from impl_chainer.conv import conv1d
from impl_chainer.fused import channel_norm, highway_gate


def _param(*shape):
    """A float32 parameter; its values always come from common.weights through set_weights."""
    return chainer.Parameter(np.zeros(shape, np.float32))


class ChannelNorm(chainer.Link):
    """Layer norm over channels at each time step of (B, C, T) (eps added to the variance);
    with groups=2 the two halves of a highway layer (H1, H2) are normalized separately, then
    one affine over all C.

    Normalizing over the channel axis is batch norm's computation with the statistics taken
    over that axis, so F.batch_normalization(axis=2) on (B, G, C/G, T) (unit gamma/beta; the
    per-channel affine follows) is Chainer's one fused kernel for it, backward included.
    Measured (community Text2Mel train step, B=4, 1 thread, CPU-time medians of 12
    interleaved runs): 1.09 s vs 1.19 s with the same norm written as separate F ops
    (mean, subtract, square, mean, rsqrt, multiply), whose backward graph is several times
    longer. F.layer_normalization on a transposed (B*T*G, C/G) view was 2.5x slower than
    those F ops alone (14.5 vs 5.7 ms on (4, 1024, 150), forward + backward): two
    transposes, and a backward that recomputes the forward in F ops. On NumPy the whole norm,
    affine included, is now one hand-written node, impl_chainer.fused.ChannelNormFn (the same
    computation in fewer passes); this F.batch_normalization form remains for CuPy."""

    def __init__(self, channels: int, groups: int, eps: float):
        super().__init__()
        self.groups, self.eps = groups, eps
        with self.init_scope():
            self.gamma = chainer.Parameter(np.ones(channels, np.float32))
            self.beta = chainer.Parameter(np.zeros(channels, np.float32))

    def forward(self, h):
        if self.xp is np:  # the same computation in one node (impl_chainer.fused)
            return channel_norm(h, self.gamma, self.beta, self.groups, self.eps)
        b, c, t = h.shape
        xp, g = self.xp, self.groups
        unit = xp.ones((b, g, t), h.dtype), xp.zeros((b, g, t), h.dtype)
        h = F.batch_normalization(F.reshape(h, (b, g, c // g, t)), *unit, eps=self.eps, axis=2)
        return F.reshape(h, (b, c, t)) * F.reshape(self.gamma, (1, c, 1)) + F.reshape(self.beta, (1, c, 1))

    def step(self, h):
        """forward on one frame's plain array (B, C) (synthesis: no graph)."""
        b, c = h.shape
        h = h.reshape(b, self.groups, c // self.groups)
        centered = h - h.sum(axis=2, keepdims=True) * h.dtype.type(1 / h.shape[2])
        var = (centered * centered).sum(axis=2, keepdims=True) * h.dtype.type(1 / h.shape[2])
        h = centered * (1 / self.xp.sqrt(var + h.dtype.type(self.eps)))
        return h.reshape(b, c) * self.gamma.array + self.beta.array


def make_norm(spec: S.Spec, channels: int, groups: int):
    """The normalization after a convolution, or None ([paper]: none)."""
    if spec.norm == "none":
        return None
    if spec.norm == "layer":
        return ChannelNorm(channels, groups, spec.norm_eps)
    raise NotImplementedError("norm='batch' is not implemented in impl_chainer yet "
                              "(common.spec defines no running-statistics momentum for training)")


class Block(chainer.Chain):
    """A link built from one `common.spec.Layer`; its parameters are `<layer.name>.<attribute path>`."""

    def __init__(self, spec: S.Spec, layer: S.Layer):
        super().__init__()
        self.layer, self.p_drop = layer, 0.0 if layer.plain else spec.dropout

    def drop(self, y):
        """F.dropout is the identity unless chainer.config.train. Its masks come from
        numpy.random (CPU) or cupy.random (GPU), which Backend.seed reseeds; cuDNN's dropout
        would keep a stream of its own, so it is not used. (Cost: 5% of a community Text2Mel
        step on CPU, mostly numpy.random.rand's float64 draws; masks drawn from a float32
        Generator and passed as F.dropout(mask=) would halve that, at the price of a second,
        framework-foreign random stream.)"""
        if not self.p_drop:
            return y
        with chainer.using_config("use_cudnn", "never"):
            return F.dropout(y, self.p_drop)


class Embedding(Block):
    """Character ids (B, N) -> (B, e, N)."""

    def __init__(self, spec, layer):
        super().__init__(spec, layer)
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


class Conv(Block):
    """C(o, k, dilation): y = drop(act(norm(conv(x)))). Causal layers pad (k-1)*dilation
    on the left only, non-causal ones symmetrically ("same")."""

    groups = 1  # norm groups: 2 for highway layers

    def __init__(self, spec, layer):
        super().__init__(spec, layer)
        out = layer.cout * self.groups
        separable = S.is_separable(spec, layer)  # depthwise (k) + pointwise (1, maybe grouped)
        self.pointwise_groups = spec.pointwise_groups if separable and spec.conv == "super-sep" else 1
        k_main = 1 if separable else layer.k
        with self.init_scope():
            self.dw = Depthwise(layer.cin, layer.k) if separable else None
            self.weight = _param(out, layer.cin // self.pointwise_groups, k_main)
            self.bias = _param(out)
            self.norm = None if layer.plain else make_norm(spec, out, self.groups)

    def conv(self, x):
        """The (possibly separable) convolution of x with the layer's padding, normalized."""
        pad, dil = self.layer.pad, self.layer.dilation
        if self.dw is not None:
            x = conv1d(x, self.dw.weight, pad=pad, dilation=dil, groups=x.shape[1])
            h = conv1d(x, self.weight, self.bias, groups=self.pointwise_groups)
        else:
            h = conv1d(x, self.weight, self.bias, pad=pad, dilation=dil)
        return self.norm(h) if self.norm is not None else h

    def output(self, h, x):
        """From the normalized convolution h (and the layer input x) to the layer output."""
        return F.relu(h) if self.layer.act == "relu" else h

    def output_step(self, h, x):
        """output on one frame's plain arrays h (B, C') and x (B, C)."""
        return self.xp.maximum(h, h.dtype.type(0)) if self.layer.act == "relu" else h

    def conv_step(self, taps):
        """conv of one output frame from its k input taps (B, cin, k) (every dilation-th frame
        of the window), as one matmul on the flattened taps -> (B, cout), normalized."""
        b = taps.shape[0]
        if self.dw is not None:
            x = (taps * self.dw.weight.array[:, 0]).sum(axis=2)  # depthwise: (B, cin)
            g = self.pointwise_groups
            w = self.weight.array.reshape(g, -1, x.shape[1] // g)  # (g, cout/g, cin/g)
            h = (x.reshape(b, g, 1, -1) @ w.transpose(0, 2, 1)).reshape(b, -1) + self.bias.array
        else:
            h = taps.reshape(b, -1) @ self.weight.array.reshape(self.weight.shape[0], -1).T + self.bias.array
        return self.norm.step(h) if self.norm is not None else h

    def forward(self, x):
        return self.drop(self.output(self.conv(x), x))

    def step(self, x, history):
        """Causal layers, one frame x (B, C, 1) at a time, on plain arrays (inference: no
        dropout, no graph): `history` holds the last (k-1)*dilation inputs (zeros at the
        start: exactly the causal padding). The kernel reads every dilation-th frame of the
        window, so those k taps are one matmul with the flattened kernel. Returns (y, new history)."""
        if x.shape[2] != 1:
            raise ValueError(f"step takes one frame at a time, got {x.shape[2]}")
        window = self.xp.concatenate([history, x], axis=2) if history.shape[2] else x
        h = self.conv_step(window[:, :, ::self.layer.dilation])
        return self.output_step(h, x[:, :, 0])[:, :, None], window[:, :, 1:]


class HighwayConv(Conv):
    """HC: H1, H2 = split(norm(conv(x))) (halves normalized separately);
    y = drop(sigmoid(H1) * H2 + (1 - sigmoid(H1)) * x), computed as x + sigmoid(H1) * (H2 - x):
    four F ops instead of five (each is a NumPy pass forward and more backward); on NumPy one
    hand-written node, impl_chainer.fused.HighwayGateFn."""

    groups = 2

    def output(self, h, x):
        if self.xp is np:  # the same computation in one node (impl_chainer.fused)
            return highway_gate(h, x)
        h1, h2 = F.split_axis(h, 2, axis=1)
        return x + F.sigmoid(h1) * (h2 - x)

    def output_step(self, h, x):
        c, half = x.shape[1], h.dtype.type(0.5)
        return x + (self.xp.tanh(h[:, :c] * half) * half + half) * (h[:, c:] - x)  # F.sigmoid's formula


class Deconv(Block):
    """D(o, k): transposed convolution, stride 2, kernel k, no padding (length x 2); y = drop(norm(.))."""

    def __init__(self, spec, layer):
        super().__init__(spec, layer)
        with self.init_scope():
            self.weight = _param(layer.cin, layer.cout, layer.k)
            self.bias = _param(layer.cout)
            self.norm = make_norm(spec, layer.cout, 1)

    def forward(self, x):
        h = F.deconvolution_nd(x, self.weight, self.bias, stride=2, outsize=(2 * x.shape[2],))
        return self.drop(self.norm(h) if self.norm is not None else h)


BLOCKS = {S.EMBED: Embedding, S.CONV: Conv, S.HIGHWAY: HighwayConv, S.DECONV: Deconv}


class Stack(chainer.Sequential):
    """The blocks of one layer list in order; causal stacks can also run frame by frame."""

    def initial_history(self, batch_size: int) -> list:
        """Zero input histories for `step`, one per layer ((B, cin, (k-1)*dilation)), on the stack's device."""
        if not all(block.layer.causal for block in self):
            raise ValueError("only causal stacks run frame by frame")
        return [self.xp.zeros((batch_size, b.layer.cin, b.layer.pad[0]), np.float32) for b in self]

    def step(self, x, history: list) -> tuple:
        """One new frame x (B, C, 1) -> (output (B, C', 1), updated histories). Inference only
        (chainer.config.train off where the stack has dropout): the blocks compute on plain
        arrays; the output comes back as a Variable, like the stack's forward."""
        if chainer.config.train and any(block.p_drop for block in self):
            raise ValueError("step is for inference: turn chainer.config.train off (dropout)")
        x = chainer.as_array(x)
        updated = []
        for block, past in zip(self, history):
            x, past = block.step(x, past)
            updated.append(past)
        return chainer.Variable(x, requires_grad=False), updated


def build_stack(spec: S.Spec, layer_list) -> Stack:
    """Walk a layer list of common.spec (parameters zero: load weights next)."""
    return Stack(*(BLOCKS[layer.kind](spec, layer) for layer in layer_list))


def canonical_parameters(model: chainer.Link) -> dict:
    """{canonical name: Parameter} of every block in `model` (in Chainer's traversal order:
    a Chain visits its children by name, so not the forward order)."""
    return {f"{link.layer.name}{path.replace('/', '.')}": p for link in model.links() if isinstance(link, Block)
            for path, p in link.namedparams()}
