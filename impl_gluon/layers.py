"""Building blocks of DC-TTS as Gluon HybridBlocks, one per entry of a common.spec layer list.

Every block keeps its `common.spec.Layer` and holds its parameters under their canonical
names (`<layer.name>.weight`, `.bias`, `.norm.gamma`, `.norm.beta`; the canonical layouts are
MXNet's own), so weights move between frameworks unchanged. Activations are NCW (B, C, T).
Causal stacks can also run one frame at a time (`Stack.step`) for synthesis.
"""
from __future__ import annotations

from impl_gluon import runtime  # noqa: F401  (must precede the first mxnet import)

import mxnet as mx
from mxnet import gluon

from common import spec as S


def channel_norm(F, h, gamma, beta, groups: int, eps: float) -> list:
    """Layer norm over the channels of each time step (eps added to the variance), each of
    `groups` equal channel slices on its own (a highway layer's H1 and H2). Returns the
    normalized slices (NCW). MXNet's LayerNorm over axis 1 of NCW measured ~2x slower
    (forward + backward) than transposing to NWC and normalizing the last axis."""
    h = F.transpose(h, axes=(0, 2, 1))
    if groups > 1:
        parts = F.split(h, num_outputs=groups, axis=2)
        gammas = F.split(gamma, num_outputs=groups, axis=0)
        betas = F.split(beta, num_outputs=groups, axis=0)
    else:
        parts, gammas, betas = [h], [gamma], [beta]
    return [F.transpose(F.LayerNorm(p, g, b, axis=-1, eps=eps), axes=(0, 2, 1))
            for p, g, b in zip(parts, gammas, betas)]


class Block(gluon.HybridBlock):
    """A block built from one `common.spec.Layer`; its parameter `<layer.name>.<...>.<p>` is the
    attribute `p` (weight, bias, gamma, beta), which Gluon passes to hybrid_forward by that name."""

    def __init__(self, spec: S.Spec, layer: S.Layer):
        super().__init__(prefix=layer.name.replace(".", "_") + "_")
        if S.is_separable(spec, layer):
            raise NotImplementedError(f"{layer.name}: separable convolutions (conv={spec.conv!r}) "
                                      "are not implemented in impl_gluon yet")
        if spec.norm == "batch":
            raise NotImplementedError("norm='batch' is not implemented in impl_gluon yet "
                                      "(common.spec defines no running-statistics momentum for training)")
        self.layer, self.p_drop, self.eps = layer, spec.dropout, spec.norm_eps
        self.canonical = {}
        with self.name_scope():
            for name, shape in S.param_shapes(spec, layer).items():
                local = name.rsplit(".", 1)[1]
                self.canonical[name] = self.params.get(local, shape=shape, dtype="float32", init=mx.init.Zero())
                setattr(self, local, self.canonical[name])

    def drop(self, F, y):
        """Dropout after the layer; MXNet applies it only in training mode (autograd.record())."""
        return F.Dropout(y, p=self.p_drop) if self.p_drop else y


class Embedding(Block):
    """Character ids (B, N) -> (B, e, N)."""

    def hybrid_forward(self, F, ids, weight):
        layer = self.layer
        return F.transpose(F.Embedding(ids, weight, input_dim=layer.cin, output_dim=layer.cout), axes=(0, 2, 1))


class Conv(Block):
    """C(o, k, dilation): y = drop(act(norm(conv(x)))). MXNet pads symmetrically, so a causal
    layer pads (k-1)*dilation on both sides and slices the right surplus off (measured as fast
    as padding the input explicitly); non-causal ones pad "same"."""

    groups = 1  # norm groups: 2 for highway layers

    def conv(self, F, x, pad: tuple, weight, bias, gamma=None, beta=None) -> list:
        """The normalized convolution of x with (left, right) time padding, as `groups` slices."""
        layer, width = self.layer, max(pad)
        h = F.Convolution(x, weight, bias, kernel=(layer.k,), dilate=(layer.dilation,), pad=(width,),
                          num_filter=self.groups * layer.cout)
        if pad[0] != pad[1]:
            h = F.slice_axis(h, axis=2, begin=width - pad[0], end=(pad[1] - width) or None)
        if gamma is not None:
            return channel_norm(F, h, gamma, beta, self.groups, self.eps)
        return F.split(h, num_outputs=2, axis=1) if self.groups == 2 else [h]

    def output(self, F, h: list, x):
        """From the normalized convolution (and the layer input x) to the layer output."""
        return F.relu(h[0]) if self.layer.act == "relu" else h[0]

    def hybrid_forward(self, F, x, **params):
        return self.drop(F, self.output(F, self.conv(F, x, self.layer.pad, **params), x))

    def step(self, x, history):
        """Causal layers, frame by frame (imperative): `history` holds the last (k-1)*dilation
        inputs (zeros at the start: exactly the causal padding). Returns (y, new history)."""
        if history is None:  # k = 1: no past needed
            window = x
        else:
            window = mx.nd.concat(history, x, dim=2)
        params = {name.rsplit(".", 1)[1]: p.data(x.context) for name, p in self.canonical.items()}
        y = self.drop(mx.nd, self.output(mx.nd, self.conv(mx.nd, window, (0, 0), **params), x))
        return y, None if history is None else mx.nd.slice_axis(window, axis=2, begin=x.shape[2], end=None)


class HighwayConv(Conv):
    """HC: H1, H2 = split(norm(conv(x))) (halves normalized separately);
    y = drop(sigmoid(H1) * H2 + (1 - sigmoid(H1)) * x), computed as x + sigmoid(H1) * (H2 - x)."""

    groups = 2

    def output(self, F, h: list, x):
        h1, h2 = h
        return x + F.sigmoid(h1) * (h2 - x)


class Deconv(Block):
    """D(o, k): transposed convolution, stride = kernel = k, no padding (length x k, exactly);
    y = drop(norm(.))."""

    def hybrid_forward(self, F, x, weight, bias, gamma=None, beta=None):
        k = self.layer.k
        h = F.Deconvolution(x, weight, bias, kernel=(k,), stride=(k,), num_filter=self.layer.cout, no_bias=False)
        if gamma is not None:
            (h,) = channel_norm(F, h, gamma, beta, 1, self.eps)
        return self.drop(F, h)


BLOCKS = {S.EMBED: Embedding, S.CONV: Conv, S.HIGHWAY: HighwayConv, S.DECONV: Deconv}


class Stack(gluon.nn.HybridSequential):
    """The blocks of one layer list in order; causal stacks can also run frame by frame."""

    def initial_history(self, batch_size: int, ctx) -> list:
        """Zero input histories for `step`, one per layer ((B, cin, (k-1)*dilation); None for k = 1,
        as MXNet handles zero-size arrays poorly)."""
        if not all(block.layer.causal for block in self):
            raise ValueError("only causal stacks run frame by frame")
        return [mx.nd.zeros((batch_size, b.layer.cin, b.layer.pad[0]), ctx=ctx) if b.layer.pad[0] else None
                for b in self]

    def step(self, x, history: list) -> tuple:
        """New frames x (B, C, n) -> (outputs (B, C', n), updated histories)."""
        updated = []
        for block, past in zip(self, history):
            x, past = block.step(x, past)
            updated.append(past)
        return x, updated


def build_stack(spec: S.Spec, layer_list) -> Stack:
    """Walk a layer list of common.spec (parameters zero: load weights next)."""
    stack = Stack(prefix=layer_list[0].name.split(".")[0] + "_")
    for layer in layer_list:
        stack.add(BLOCKS[layer.kind](spec, layer))
    return stack


def canonical_parameters(stacks) -> dict:
    """{canonical name: gluon Parameter} of the blocks of `stacks` (Stack objects), in forward order."""
    return {name: p for stack in stacks for block in stack for name, p in block.canonical.items()}
