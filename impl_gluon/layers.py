"""Building blocks of DC-TTS as Gluon HybridBlocks, one per entry of a common.contract.spec layer list.

Every block keeps its `common.contract.spec.Layer` and maps its parameters to their canonical names
(`Block.canonical`: `<layer.name>.weight`, `.bias`, `.dw.weight`, `.reduce.weight`, `.norm.gamma`,
`.norm.beta`; `Block.statistics`: batch norm's running `.norm.mean`, `.norm.var`, not trained; the
canonical layouts are MXNet's own). Activations are NCW (B, C, T). Causal stacks can also run one
frame at a time (`Stack.step`) for synthesis.

Every block takes the tier of operators `ops` (common.framework.OPS). The tuned choices are marked
where they are made; stock uses instead MXNet's LayerNorm in training too (ChannelNorm) and F.sigmoid
as the highway gate; both keep the deconvolution as a 1x1 convolution (Deconv: MXNet's own fails).
"""
from __future__ import annotations

from impl_gluon import runtime  # noqa: F401  (must precede the first mxnet import)

import contextlib

import mxnet as mx
from mxnet import gluon

from common.contract import spec as S


def full(F, like, shape: tuple, value: float):
    """A constant array on `like`'s device (a graph node when F is mx.sym)."""
    return F.full(shape, value) if F is mx.sym else F.full(shape, value, ctx=like.context)


_NORM_FOR_TRAINING = [False]  # which form ChannelNorm traces (see there); set by `norms_for_training`


@contextlib.contextmanager
def norms_for_training():
    """Blocks traced (hybridized) or run inside take ChannelNorm's training form (tuned tier)."""
    previous, _NORM_FOR_TRAINING[0] = _NORM_FOR_TRAINING[0], True
    try:
        yield
    finally:
        _NORM_FOR_TRAINING[0] = previous


class ChannelNorm(gluon.HybridBlock):
    """Layer norm over channels at each time step (eps added to the variance); with groups=2
    the two halves of a highway layer (H1, H2) are normalized separately, with more the channel
    groups of a group norm. Returns the list of `slices` (a divisor of groups: 2 for a highway
    layer, else 1) normalized channel slices (NCW), which a highway layer consumes as they are.

    Two forms of the same function: inference (`layer_norm`, the default: MXNet's LayerNorm on
    transposed NWC slices, a cheap forward) and training (`differentiable`, inside
    `norms_for_training`: MXNet 1.9.1's LayerNorm backward is 10-20x its forward, so every
    reduction is a 1x1 convolution). They differ by float rounding only. Measurements:
    results/implementation-notes.md, "gluon: the channel norm's two forms".
    Stock (ops="stock") always takes the LayerNorm form, in training too, as a user would."""

    def __init__(self, channels: int, groups: int, eps: float, slices: int = 1, ops: str = "tuned"):
        super().__init__(prefix="norm_")
        self.channels, self.groups, self.eps, self.slices, self.ops = channels, groups, eps, slices, ops
        with self.name_scope():
            self.gamma = self.params.get("gamma", shape=(channels,), dtype="float32", init=mx.init.One())
            self.beta = self.params.get("beta", shape=(channels,), dtype="float32", init=mx.init.Zero())

    def hybrid_forward(self, F, h, gamma, beta):
        training_form = _NORM_FOR_TRAINING[0] and self.ops == "tuned"
        return (self.differentiable if training_form else self.layer_norm)(F, h, gamma, beta)

    def layer_norm(self, F, h, gamma, beta) -> list:
        h = F.transpose(h, axes=(0, 2, 1))
        if self.groups > 1:
            parts = F.split(h, num_outputs=self.groups, axis=2)
            gammas = F.split(gamma, num_outputs=self.groups, axis=0)
            betas = F.split(beta, num_outputs=self.groups, axis=0)
        else:
            parts, gammas, betas = [h], [gamma], [beta]
        outs = [F.transpose(F.LayerNorm(p, g, b, axis=-1, eps=self.eps), axes=(0, 2, 1))
                for p, g, b in zip(parts, gammas, betas)]
        per_slice = self.groups // self.slices  # > 1 in a group norm only
        return outs if per_slice == 1 else [F.concat(*outs[i:i + per_slice], dim=1)
                                            for i in range(0, self.groups, per_slice)]

    def differentiable(self, F, h, gamma, beta) -> list:
        """The channel mean of each group is a grouped convolution to one channel with weights
        1/C, broadcasting back one with weights 1, and gamma, beta a depthwise 1x1 convolution
        (the alternatives measured: results/implementation-notes.md, "gluon: the training form of
        the channel norm")."""
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
        return list(F.split(y, num_outputs=self.slices, axis=1)) if self.slices > 1 else [y]


class BatchNorm(gluon.HybridBlock):
    """Batch norm per channel over (batch, time), one MXNet BatchNorm: in training mode
    (autograd.record(train_mode=True)) on the batch's statistics, updating the running ones `mean`
    and `var` (MXNet's auxiliary states: parameters without gradient), elsewhere on the running
    ones. Returns [normalized h] (ChannelNorm's convention; a highway layer splits it).

    MXNet's update takes the batch's biased variance, the spec's the unbiased one: a training step
    runs inside `unbiased_running_variance`, which corrects it. cudnn_off: MXNet's own kernel and
    rule on a GPU too. On a (B, C, T, 1) view: 3-d input fails in backward after an MKLDNN
    convolution (results/implementation-notes.md, "gluon: batch norm")."""

    def __init__(self, channels: int, eps: float, momentum: float):
        super().__init__(prefix="norm_")
        self.eps, self.momentum = eps, momentum
        with self.name_scope():
            self.gamma = self.params.get("gamma", shape=(channels,), dtype="float32", init=mx.init.One())
            self.beta = self.params.get("beta", shape=(channels,), dtype="float32", init=mx.init.Zero())
            self.mean = self.params.get("mean", shape=(channels,), dtype="float32", init=mx.init.Zero(),
                                        grad_req="null", differentiable=False)
            self.var = self.params.get("var", shape=(channels,), dtype="float32", init=mx.init.One(),
                                       grad_req="null", differentiable=False)

    def hybrid_forward(self, F, h, gamma, beta, mean, var):
        y = F.BatchNorm(F.expand_dims(h, axis=3), gamma, beta, mean, var, eps=self.eps, momentum=1.0 - self.momentum,
                        fix_gamma=False, axis=1, cudnn_off=True)
        return [F.reshape(y, shape=(0, 0, -1))]


@contextlib.contextmanager
def unbiased_running_variance(norms: list):
    """Around a training forward and backward of BatchNorm blocks, [(block, n)] with n the values
    each normalizes per channel (B T at its layer): MXNet updates a running variance as
    (1 - m) var + m v with the batch's biased variance v, the spec as (1 - m) var + m v n / (n - 1)
    (max(n - 1, 1)). Scaling var by c = (n - 1) / n before and by 1 / c after gives exactly the
    spec's: two in-place products a batch norm (outside autograd.record(), which refuses them)."""
    scaled = []
    for norm, n in norms:
        c = max(n - 1, 1) / n
        for arr in norm.var.list_data():
            arr *= c
            scaled.append((arr, 1.0 / c))
    try:
        yield
    finally:
        for arr, inverse in scaled:
            arr *= inverse


def batch_norm_multiples(blocks) -> list:
    """[(BatchNorm, m)] of a sequence of blocks (a stack) in order, m the factor by which the
    deconvolutions up to and including its block multiply the input's length: the sizes
    unbiased_running_variance needs are then n = B T m."""
    out, multiple = [], 1
    for block in blocks:
        multiple *= block.layer.stride if block.layer.kind == S.DECONV else 1
        if isinstance(block.norm, BatchNorm):
            out.append((block.norm, multiple))
    return out


def make_norm(spec: S.Spec, layer: S.Layer, ops: str = "tuned"):
    """The normalization after `layer`'s convolution, or None ([paper]: none): a layer or group
    norm over S.channel_norm_groups channel groups (returned as the block's norm_slices slices: a
    highway layer's halves) in the tier `ops`, or batch norm per channel (the same in both tiers)."""
    if spec.norm == "none":
        return None
    if spec.norm in ("layer", "group"):
        return ChannelNorm(layer.out, S.channel_norm_groups(spec, layer), spec.norm_eps,
                           slices=BLOCKS[layer.kind].norm_slices, ops=ops)
    return BatchNorm(layer.out, spec.norm_eps, spec.norm_momentum)


class Block(gluon.HybridBlock):
    """A block built from one `common.contract.spec.Layer`. Its own parameters (`<layer.name>.dw.weight`,
    `.reduce.weight`, ...) are attributes named with underscores (`dw_weight`, `reduce_weight`:
    Gluon passes them to hybrid_forward by those names); the norm's live in its child.
    `canonical` maps the canonical names of the trainable ones to their Parameters, `statistics`
    those of batch norm's running statistics. `ops`: the tier of operators (its norm's too)."""

    norm_slices = 1  # the channel slices `normalized` returns: 2 for highway layers (H1, H2)

    def __init__(self, spec: S.Spec, layer: S.Layer, ops: str = "tuned"):
        super().__init__(prefix=layer.name.replace(".", "_") + "_")
        self.layer, self.p_drop, self.ops = layer, 0.0 if layer.plain else spec.dropout, ops
        self.canonical, self.statistics, self.local = {}, {}, {}  # canonical name / argument -> Parameter
        with self.name_scope():
            self.norm = (make_norm(spec, layer, ops)
                         if layer.kind != S.EMBED and not layer.plain else None)
            for name, shape in S.param_shapes(spec, layer).items():
                local = name[len(layer.name) + 1:]
                if local.startswith("norm."):
                    p = getattr(self.norm, local[len("norm."):])
                    (self.statistics if p.grad_req == "null" else self.canonical)[name] = p
                else:
                    arg = local.replace(".", "_")
                    self.local[arg] = self.params.get(arg, shape=shape, dtype="float32", init=mx.init.Zero())
                    setattr(self, arg, self.local[arg])
                    self.canonical[name] = self.local[arg]

    def drop(self, F, y):
        """Dropout after the layer; MXNet applies it only in training mode (autograd.record())."""
        return F.Dropout(y, p=self.p_drop) if self.p_drop else y

    def normalized(self, F, h) -> list:
        """norm(h) as `norm_slices` channel slices."""
        parts = self.norm(h) if self.norm is not None else [h]
        return list(F.split(parts[0], num_outputs=2, axis=1)) if len(parts) < self.norm_slices else parts


class Embedding(Block):
    """Character ids (B, N) -> (B, e, N)."""

    def hybrid_forward(self, F, ids, weight):
        layer = self.layer
        return F.transpose(F.Embedding(ids, weight, input_dim=layer.cin, output_dim=layer.cout), axes=(0, 2, 1))


class Conv(Block):
    """C(o, k, dilation): y = drop(act(norm(conv(x)))). MXNet pads symmetrically, so a causal
    layer pads (k-1)*dilation on both sides and slices the right surplus off (no slower than
    padding the input explicitly: results/implementation-notes.md, "gluon: causal padding");
    non-causal ones pad "same". Separable variants: a depthwise conv (k) then a pointwise conv
    (1, grouped in super-sep). Bottleneck: a 1x1 convolution without bias down to
    `history_channels`, then the k-wide one."""

    def __init__(self, spec, layer, ops: str = "tuned"):
        super().__init__(spec, layer, ops)
        self.pointwise_groups = S.pointwise_groups(spec, layer)
        self.history_channels = S.bottleneck_width(spec, layer) or layer.cin  # what a causal step keeps of past inputs

    def conv(self, F, x, pad: tuple, dilation: int, **params) -> list:
        """The normalized convolution of x with (left, right) time padding, as `norm_slices`
        slices. `params`: the block's (weight, bias, and dw_weight or reduce_weight); without
        reduce_weight x is taken as already reduced (conv_step)."""
        layer, width, out = self.layer, max(pad), self.layer.out
        weight, bias = params["weight"], params["bias"]
        if params.get("reduce_weight") is not None:
            x = F.Convolution(x, params["reduce_weight"], kernel=(1,), num_filter=self.history_channels, no_bias=True)
        if params.get("dw_weight") is not None:
            x = F.Convolution(x, params["dw_weight"], kernel=(layer.k,), dilate=(dilation,), pad=(width,),
                              num_filter=layer.cin, num_group=layer.cin, no_bias=True)
            h = F.Convolution(self.trim(F, x, pad), weight, bias, kernel=(1,), num_filter=out,
                              num_group=self.pointwise_groups)
        else:
            h = self.trim(F, F.Convolution(x, weight, bias, kernel=(layer.k,), dilate=(dilation,),
                                           pad=(width,), num_filter=out), pad)
        return self.normalized(F, h)

    @staticmethod
    def trim(F, h, pad: tuple):
        """Cut the surplus of symmetric padding by max(pad) down to (left, right)."""
        width = max(pad)
        if pad[0] == pad[1]:
            return h
        return F.slice_axis(h, axis=2, begin=width - pad[0], end=(pad[1] - width) or None)

    def conv_step(self, F, taps, **params) -> list:
        """conv of one output frame from its k input taps (B, history_channels, k) (every
        dilation-th frame of the window, already reduced in the bottleneck variant): the
        convolution without padding or dilation."""
        return self.conv(F, taps, (0, 0), 1, **{arg: p for arg, p in params.items() if arg != "reduce_weight"})

    def output(self, F, h: list, x):
        """From the normalized convolution (and the layer input x) to the layer output."""
        return F.relu(h[0]) if self.layer.act == "relu" else h[0]

    def hybrid_forward(self, F, x, **params):
        return self.drop(F, self.output(F, self.conv(F, x, self.layer.pad, self.layer.dilation, **params), x))

    def step(self, F, x, history, ctx):
        """Causal layers, one frame x (B, C, 1) at a time (ValueError otherwise, when F is
        mx.nd): `history` holds the last (k-1)*dilation inputs, time-major (L, B, history_channels)
        (reduced to the bottleneck's width in that variant: each frame once, not once a tap;
        zeros at the start: exactly the causal padding; None for k = 1). Time-major because
        shifting the history is a Concat every frame, and MXNet's Concat is far faster along the
        first axis than along the last (measurements: results/implementation-notes.md, "gluon:
        time-major step histories"). Returns (y, new history). F is mx.nd, or mx.sym while a
        StackStep is being traced (ctx unused then)."""
        if F is mx.nd and (x.ndim != 3 or x.shape[2] != 1):
            raise ValueError(f"step takes one frame (B, C, 1) at a time, got shape {x.shape}")
        params = {arg: p.var() if F is mx.sym else p.data(ctx) for arg, p in self.local.items()}
        if history is None:
            return self.drop(F, self.output(F, self.conv(F, x, (0, 0), 1, **params), x)), None
        z = x
        if "reduce_weight" in params:
            z = F.Convolution(x, params["reduce_weight"], kernel=(1,), num_filter=self.history_channels, no_bias=True)
        window = F.concat(history, F.transpose(z, axes=(2, 0, 1)), dim=0)  # (L + 1, B, history_channels)
        taps = F.slice(window, begin=(0, None, None), end=(None, None, None), step=(self.layer.dilation, None, None))
        h = self.conv_step(F, F.transpose(taps, axes=(1, 2, 0)), **params)
        return self.drop(F, self.output(F, h, x)), F.slice_axis(window, axis=0, begin=1, end=None)


def sigmoid(F, x, ops: str):
    """The sigmoid of the tier `ops`: tuned, Activation's (MKLDNN's vectorized kernel), faster than
    F.sigmoid (measurements: results/implementation-notes.md, "gluon: Activation's sigmoid"); stock,
    F.sigmoid, the plain function. (The highway gate and the L1 loss; not the synthesis step's output.)"""
    return F.sigmoid(x) if ops == "stock" else F.Activation(x, act_type="sigmoid")


class HighwayConv(Conv):
    """HC: H1, H2 = split(norm(conv(x))) (a layer norm normalizes the halves separately);
    y = drop(sigmoid(H1) * H2 + (1 - sigmoid(H1)) * x), computed as x + sigmoid(H1) * (H2 - x),
    the sigmoid of the tier."""

    norm_slices = 2

    def output(self, F, h: list, x):
        h1, h2 = h
        return x + sigmoid(F, h1, self.ops) * (h2 - x)


class ResidualConv(Conv):
    """The residual variant of HC (spec.block == "residual"): y = drop(x + relu(norm(conv(x))))."""

    def output(self, F, h: list, x):
        return x + F.relu(h[0])


class Deconv(Block):
    """D(o, k): transposed convolution, stride = kernel = k, no padding (length x stride, exactly);
    y = drop(norm(.)). With stride = kernel the k output taps of an input frame never overlap:
    y[:, o, t k + j] = sum_i W[i, o, j] x[:, i, t] + b[o], i.e. a 1x1 convolution to o*k channels
    (row o k + j) whose output is interleaved in time. MXNet 1.9.1's MKLDNN Deconvolution fails on a
    second input length in inference, so stock takes this form too (results/implementation-notes.md,
    "all: the tiers of operators"; tests/gluon/test_layers.py checks that MXNet's still fails)."""

    def hybrid_forward(self, F, x, weight, bias):
        stride, cin, cout = self.layer.stride, self.layer.cin, self.layer.out  # stride = k (common.contract.spec)
        w = F.reshape(F.transpose(weight, axes=(1, 2, 0)), shape=(cout * stride, cin, 1))
        h = F.Convolution(x, w, F.repeat(bias, repeats=stride), kernel=(1,), num_filter=cout * stride)
        h = F.reshape(F.transpose(F.reshape(h, shape=(0, cout, stride, -1)), axes=(0, 1, 3, 2)), shape=(0, cout, -1))
        return self.drop(F, self.normalized(F, h)[0])


BLOCKS = {S.EMBED: Embedding, S.CONV: Conv, S.HIGHWAY: HighwayConv, S.RESIDUAL: ResidualConv, S.DECONV: Deconv}


class Stack(gluon.nn.HybridSequential):
    """The blocks of one layer list in order; causal stacks can also run frame by frame."""

    def initial_history(self, batch_size: int) -> list:
        """Zero input histories for `step`, one per layer (time-major ((k-1)*dilation, B,
        history_channels); None for k = 1, as MXNet handles zero-size arrays poorly), on the
        context of the stack's parameters."""
        if not all(block.layer.causal for block in self):
            raise ValueError("only causal stacks run frame by frame")
        ctx = next(iter(self.collect_params().values())).list_ctx()[0]
        return [mx.nd.zeros((b.layer.pad[0], batch_size, b.history_channels), ctx=ctx) if b.layer.pad[0] else None
                for b in self]

    def step(self, x, history: list, F=mx.nd) -> tuple:
        """One new frame x (B, C, 1) -> (output (B, C', 1), updated histories), imperatively, or
        traced by StackStep (F = mx.sym)."""
        ctx = None if F is mx.sym else x.context
        updated = []
        for block, past in zip(self, history):
            x, past = block.step(F, x, past, ctx)
            updated.append(past)
        return x, updated


class StackStep(gluon.HybridBlock):
    """`Stack.step` as a block of its own, so that one synthesis step of a causal stack runs as one
    cached graph when hybridized (imperatively, MXNet's per-operator overhead dominates a step:
    results/implementation-notes.md, "gluon: the synthesis step as one static graph"). Inputs
    (x, *histories) and outputs (y, *updated histories) leave out the None histories of k = 1
    layers. It shares the stack's parameters (the stack is its child)."""

    def __init__(self, stack: Stack):
        super().__init__(prefix=stack.prefix + "step_")
        self.stack = stack
        self.slots = [block.layer.pad[0] > 0 for block in stack]

    def hybrid_forward(self, F, x, *pasts):
        pasts = iter(pasts)
        y, updated = self.stack.step(x, [next(pasts) if slot else None for slot in self.slots], F)
        return (y, *[h for h in updated if h is not None])


def build_stack(spec: S.Spec, layer_list, ops: str = "tuned") -> Stack:
    """Walk a layer list of common.contract.spec, every block in the tier `ops` (weights zero: load weights
    next)."""
    stack = Stack(prefix=layer_list[0].name.split(".")[0] + "_")
    for layer in layer_list:
        stack.add(BLOCKS[layer.kind](spec, layer, ops))
    return stack


def _blocks(model) -> list:
    """The Blocks of a Block, a Stack, or a network (Text2Mel, SSRN: whose `stacks()` lists its
    Stacks), in forward order."""
    if isinstance(model, Block):
        return [model]
    return [block for stack in ([model] if isinstance(model, Stack) else model.stacks()) for block in stack]


def canonical_parameters(model) -> dict:
    """{canonical name: gluon Parameter} of the trainable parameters of a Block, a Stack or a
    network, in forward order (what the optimizer updates)."""
    return {name: p for block in _blocks(model) for name, p in block.canonical.items()}


def canonical_statistics(model) -> dict:
    """{canonical name: gluon Parameter} of batch norm's running statistics (without gradient;
    setting their data sets the statistics); {} without batch norm."""
    return {name: p for block in _blocks(model) for name, p in block.statistics.items()}
