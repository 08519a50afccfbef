"""Building blocks of DC-TTS as Gluon HybridBlocks, one per entry of a common.spec layer list.

Every block keeps its `common.spec.Layer` and maps its parameters to their canonical names
(`Block.canonical`: `<layer.name>.weight`, `.bias`, `.dw.weight`, `.norm.gamma`, `.norm.beta`;
the canonical layouts are MXNet's own). Activations are NCW (B, C, T). Causal stacks can
also run one frame at a time (`Stack.step`) for synthesis.
"""
from __future__ import annotations

from impl_gluon import runtime  # noqa: F401  (must precede the first mxnet import)

import contextlib

import mxnet as mx
from mxnet import gluon

from common import spec as S


def full(F, like, shape: tuple, value: float):
    """A constant array on `like`'s device (a graph node when F is mx.sym)."""
    return F.full(shape, value) if F is mx.sym else F.full(shape, value, ctx=like.context)


_NORM_FOR_TRAINING = [False]  # which form ChannelNorm traces (see there); set by `norms_for_training`


@contextlib.contextmanager
def norms_for_training():
    """Blocks traced (hybridized) or run inside take ChannelNorm's training form."""
    previous, _NORM_FOR_TRAINING[0] = _NORM_FOR_TRAINING[0], True
    try:
        yield
    finally:
        _NORM_FOR_TRAINING[0] = previous


class ChannelNorm(gluon.HybridBlock):
    """Layer norm over channels at each time step (eps added to the variance); with groups=2
    the two halves of a highway layer (H1, H2) are normalized separately. Returns the list of
    `groups` normalized slices (NCW), which a highway layer consumes as they are.

    Two forms of the same function. Inference (`layer_norm`, the default): MXNet's LayerNorm on
    transposed NWC slices; its forward is cheap (LayerNorm over axis 1 of NCW measured ~2x slower
    forward + backward). Training (`differentiable`, taken inside `norms_for_training`, as
    impl_gluon.train.Objective does): MXNet 1.9.1's LayerNorm backward (LayerNormGradComputeGeneral:
    generic broadcast-reduce kernels) took 1.3-1.6 ms for (4, 144, 64) and ~14 ms for (4, 576, 128),
    10-20x its forward and 30-37% of the operator time of a `small` Text2Mel training step in
    mx.profiler, so this form makes every reduction a 1x1 convolution (a GEMM forward and
    backward). The forms differ by float rounding only. Synthesis (one frame at a time: operator
    overhead, no backward) took ~2x longer with the training form (0.20-0.26 vs 0.09-0.17 s a
    `small` sentence)."""

    def __init__(self, channels: int, groups: int, eps: float):
        super().__init__(prefix="norm_")
        self.channels, self.groups, self.eps = channels, groups, eps
        with self.name_scope():
            self.gamma = self.params.get("gamma", shape=(channels,), dtype="float32", init=mx.init.One())
            self.beta = self.params.get("beta", shape=(channels,), dtype="float32", init=mx.init.Zero())

    def hybrid_forward(self, F, h, gamma, beta):
        return (self.differentiable if _NORM_FOR_TRAINING[0] else self.layer_norm)(F, h, gamma, beta)

    def layer_norm(self, F, h, gamma, beta) -> list:
        h = F.transpose(h, axes=(0, 2, 1))
        if self.groups > 1:
            parts = F.split(h, num_outputs=self.groups, axis=2)
            gammas = F.split(gamma, num_outputs=self.groups, axis=0)
            betas = F.split(beta, num_outputs=self.groups, axis=0)
        else:
            parts, gammas, betas = [h], [gamma], [beta]
        return [F.transpose(F.LayerNorm(p, g, b, axis=-1, eps=self.eps), axes=(0, 2, 1))
                for p, g, b in zip(parts, gammas, betas)]

    def differentiable(self, F, h, gamma, beta) -> list:
        """The channel mean of each group is a grouped convolution to one channel with weights
        1/C, broadcasting back one with weights 1, and gamma, beta a depthwise 1x1 convolution.
        Forward + backward of one highway norm (one thread, medians of 5-8): LayerNorm on
        transposed slices 3.8-4.5 ms at (4, 128, 144) and 29-34 ms at (4, 256, 576); this form
        1.7-2.4 ms and 9.0 ms. LayerNorm over axis 1, F.mean reductions, broadcast_* ops (their
        backward is a slow reduction), GroupNorm, InstanceNorm and L2Normalization all measured
        slower than this; reshaping groups into the batch instead of grouped convolutions, ~5%
        slower. Folding the centering into the feeding convolution (its weights minus their
        mean output row: two rank-1 products a parameter) saved 3-10% of a conv + norm in
        isolation but adds ~12 small operators a layer, and whole training steps measured
        within noise of this form: not kept."""
        groups, channels = self.groups, self.channels
        width = channels // groups
        mean_weight, spread_weight = full(F, h, (groups, width, 1), 1.0 / width), full(F, h, (channels, 1, 1), 1.0)

        def mean(z):  # (B, channels, T) -> (B, groups, T)
            return F.Convolution(z, mean_weight, kernel=(1,), num_filter=groups, num_group=groups, no_bias=True)

        def spread(z):  # (B, groups, T) -> (B, channels, T)
            return F.Convolution(z, spread_weight, kernel=(1,), num_filter=channels, num_group=groups, no_bias=True)

        d = h - spread(mean(h))
        normalized = d * spread(F.rsqrt(mean(F.square(d)) + self.eps))
        y = F.Convolution(normalized, F.reshape(gamma, shape=(-1, 1, 1)), beta, kernel=(1,), num_filter=channels,
                          num_group=channels)
        return list(F.split(y, num_outputs=groups, axis=1)) if groups > 1 else [y]


def make_norm(spec: S.Spec, channels: int, groups: int):
    """The normalization after a convolution, or None ([paper]: none)."""
    if spec.norm == "none":
        return None
    if spec.norm == "layer":
        return ChannelNorm(channels, groups, spec.norm_eps)
    raise NotImplementedError("norm='batch' is not implemented in impl_gluon yet "
                              "(common.spec defines no running-statistics momentum for training)")


class Block(gluon.HybridBlock):
    """A block built from one `common.spec.Layer`. Its own parameter `<layer.name>.dw.weight`
    is the attribute `dw_weight` (Gluon passes it to hybrid_forward by that name); the norm's
    live in the ChannelNorm child. `canonical` maps every canonical name to its Parameter."""

    groups = 1  # output channels = groups * cout, normalized in `groups` slices (2 for highway layers)

    def __init__(self, spec: S.Spec, layer: S.Layer):
        super().__init__(prefix=layer.name.replace(".", "_") + "_")
        self.layer, self.p_drop = layer, 0.0 if layer.plain else spec.dropout
        self.canonical, self.local = {}, {}  # canonical name / hybrid_forward argument -> Parameter
        with self.name_scope():
            self.norm = (make_norm(spec, self.groups * layer.cout, self.groups)
                         if layer.kind != S.EMBED and not layer.plain else None)
            for name, shape in S.param_shapes(spec, layer).items():
                local = name[len(layer.name) + 1:]
                if local.startswith("norm."):
                    self.canonical[name] = getattr(self.norm, local[len("norm."):])
                else:
                    arg = local.replace(".", "_")
                    self.local[arg] = self.params.get(arg, shape=shape, dtype="float32", init=mx.init.Zero())
                    setattr(self, arg, self.local[arg])
                    self.canonical[name] = self.local[arg]

    def drop(self, F, y):
        """Dropout after the layer; MXNet applies it only in training mode (autograd.record())."""
        return F.Dropout(y, p=self.p_drop) if self.p_drop else y

    def normalized(self, F, h) -> list:
        """norm(h) as `groups` channel slices."""
        if self.norm is not None:
            return self.norm(h)
        return list(F.split(h, num_outputs=2, axis=1)) if self.groups == 2 else [h]


class Embedding(Block):
    """Character ids (B, N) -> (B, e, N)."""

    def hybrid_forward(self, F, ids, weight):
        layer = self.layer
        return F.transpose(F.Embedding(ids, weight, input_dim=layer.cin, output_dim=layer.cout), axes=(0, 2, 1))


class Conv(Block):
    """C(o, k, dilation): y = drop(act(norm(conv(x)))). MXNet pads symmetrically, so a causal
    layer pads (k-1)*dilation on both sides and slices the right surplus off (measured as fast
    as padding the input explicitly); non-causal ones pad "same". Separable variants: a
    depthwise conv (k) then a pointwise conv (1, grouped in super-sep)."""

    def __init__(self, spec, layer):
        super().__init__(spec, layer)
        self.pointwise_groups = spec.pointwise_groups if S.is_separable(spec, layer) and spec.conv == "super-sep" else 1

    def conv(self, F, x, pad: tuple, weight, bias, dw_weight=None, dilation: int | None = None) -> list:
        """The normalized convolution of x with (left, right) time padding, as `groups` slices
        (`dilation` overrides the layer's: 1 for taps already gathered)."""
        layer, width, out = self.layer, max(pad), self.groups * self.layer.cout
        dil = layer.dilation if dilation is None else dilation
        if dw_weight is not None:
            x = F.Convolution(x, dw_weight, kernel=(layer.k,), dilate=(dil,), pad=(width,),
                              num_filter=layer.cin, num_group=layer.cin, no_bias=True)
            h = F.Convolution(self.trim(F, x, pad), weight, bias, kernel=(1,), num_filter=out,
                              num_group=self.pointwise_groups)
        else:
            h = self.trim(F, F.Convolution(x, weight, bias, kernel=(layer.k,), dilate=(dil,),
                                           pad=(width,), num_filter=out), pad)
        return self.normalized(F, h)

    @staticmethod
    def trim(F, h, pad: tuple):
        """Cut the surplus of symmetric padding by max(pad) down to (left, right)."""
        width = max(pad)
        if pad[0] == pad[1]:
            return h
        return F.slice_axis(h, axis=2, begin=width - pad[0], end=(pad[1] - width) or None)

    def output(self, F, h: list, x):
        """From the normalized convolution (and the layer input x) to the layer output."""
        return F.relu(h[0]) if self.layer.act == "relu" else h[0]

    def hybrid_forward(self, F, x, **params):
        return self.drop(F, self.output(F, self.conv(F, x, self.layer.pad, **params), x))

    def step(self, F, x, history, ctx):
        """Causal layers, one frame x (B, C, 1) at a time: `history` holds the last (k-1)*dilation
        inputs, time-major (L, B, C) (zeros at the start: exactly the causal padding; None for
        k = 1). The k taps (every dilation-th frame of history + x) go through the convolution
        without dilation. Time-major because shifting the history is a Concat every frame, and
        MXNet's Concat along the last axis of (8, 512, 54) took 1.16 ms against 0.04 ms along
        the first (a third of a `paper` synthesis frame at batch 8). Returns (y, new history).
        F is mx.nd, or mx.sym while a StackStep is being traced (ctx unused then)."""
        params = {arg: p.var() if F is mx.sym else p.data(ctx) for arg, p in self.local.items()}
        if history is None:
            return self.drop(F, self.output(F, self.conv(F, x, (0, 0), **params), x)), None
        window = F.concat(history, F.transpose(x, axes=(2, 0, 1)), dim=0)  # (L + 1, B, C)
        taps = F.slice(window, begin=(0, None, None), end=(None, None, None), step=(self.layer.dilation, None, None))
        h = self.conv(F, F.transpose(taps, axes=(1, 2, 0)), (0, 0), dilation=1, **params)
        return self.drop(F, self.output(F, h, x)), F.slice_axis(window, axis=0, begin=1, end=None)


class HighwayConv(Conv):
    """HC: H1, H2 = split(norm(conv(x))) (halves normalized separately);
    y = drop(sigmoid(H1) * H2 + (1 - sigmoid(H1)) * x), computed as x + sigmoid(H1) * (H2 - x).
    The sigmoid is Activation's (MKLDNN's vectorized kernel): forward + backward on (4, 64, 144)
    measured 0.24 ms over an identity's, F.sigmoid's 0.53 ms (one thread)."""

    groups = 2

    def output(self, F, h: list, x):
        h1, h2 = h
        return x + F.Activation(h1, act_type="sigmoid") * (h2 - x)


class Deconv(Block):
    """D(o, k): transposed convolution, stride = kernel = k, no padding (length x k, exactly);
    y = drop(norm(.)). With stride = kernel the k output taps of an input frame never overlap:
    y[:, o, t k + j] = sum_i W[i, o, j] x[:, i, t] + b[o], i.e. a 1x1 convolution to o*k channels
    (row o k + j) whose output is interleaved in time. MXNet 1.9.1's MKLDNN Deconvolution is not
    used: in inference it re-lays its weight array out in place for the first input length and
    then fails on a length whose kernel wants another layout (`mkldnn_deconvolution ...
    weights_desc` check, e.g. tiny: 40 frames, then 64)."""

    def hybrid_forward(self, F, x, weight, bias):
        k, cin, cout = self.layer.k, self.layer.cin, self.layer.cout
        w = F.reshape(F.transpose(weight, axes=(1, 2, 0)), shape=(cout * k, cin, 1))
        h = F.Convolution(x, w, F.repeat(bias, repeats=k), kernel=(1,), num_filter=cout * k)
        h = F.reshape(F.transpose(F.reshape(h, shape=(0, cout, k, -1)), axes=(0, 1, 3, 2)), shape=(0, cout, -1))
        return self.drop(F, self.normalized(F, h)[0])


BLOCKS = {S.EMBED: Embedding, S.CONV: Conv, S.HIGHWAY: HighwayConv, S.DECONV: Deconv}


class Stack(gluon.nn.HybridSequential):
    """The blocks of one layer list in order; causal stacks can also run frame by frame."""

    def initial_history(self, batch_size: int, ctx) -> list:
        """Zero input histories for `step`, one per layer (time-major ((k-1)*dilation, B, cin);
        None for k = 1, as MXNet handles zero-size arrays poorly)."""
        if not all(block.layer.causal for block in self):
            raise ValueError("only causal stacks run frame by frame")
        return [mx.nd.zeros((b.layer.pad[0], batch_size, b.layer.cin), ctx=ctx) if b.layer.pad[0] else None
                for b in self]

    def step(self, x, history: list, F=mx.nd) -> tuple:
        """New frames x (B, C, n) -> (outputs (B, C', n), updated histories), imperatively, or
        traced by StackStep (F = mx.sym)."""
        ctx = None if F is mx.sym else x.context
        updated = []
        for block, past in zip(self, history):
            x, past = block.step(F, x, past, ctx)
            updated.append(past)
        return x, updated


class StackStep(gluon.HybridBlock):
    """`Stack.step` as a block of its own, so that one synthesis step of a causal stack runs as one
    cached graph when hybridized (imperatively it costs ~6 operator calls a layer, each ~50 us of
    MXNet overhead). Inputs (x, *histories) and outputs (y, *updated histories) leave out the
    None histories of k = 1 layers. It shares the stack's parameters (the stack is its child)."""

    def __init__(self, stack: Stack):
        super().__init__(prefix=stack.prefix + "step_")
        self.stack = stack
        self.slots = [block.layer.pad[0] > 0 for block in stack]

    def hybrid_forward(self, F, x, *pasts):
        pasts = iter(pasts)
        y, updated = self.stack.step(x, [next(pasts) if slot else None for slot in self.slots], F)
        return (y, *[h for h in updated if h is not None])


def build_stack(spec: S.Spec, layer_list) -> Stack:
    """Walk a layer list of common.spec (weights zero: load weights next)."""
    stack = Stack(prefix=layer_list[0].name.split(".")[0] + "_")
    for layer in layer_list:
        stack.add(BLOCKS[layer.kind](spec, layer))
    return stack


def canonical_parameters(model) -> dict:
    """{canonical name: gluon Parameter} of a Block, a Stack, or a network (Text2Mel, SSRN: whose
    `stacks()` lists its Stacks), in forward order."""
    if isinstance(model, Block):
        return dict(model.canonical)
    stacks = [model] if isinstance(model, Stack) else model.stacks()
    return {name: p for stack in stacks for block in stack for name, p in block.canonical.items()}
