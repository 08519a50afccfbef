"""impl_chainer.conv and impl_chainer.fused (the hand-written CPU FunctionNodes) against the
chainer.functions compositions they replace: outputs and every input's gradient."""
from impl_chainer import runtime  # noqa: F401  (before chainer)

import chainer
import chainer.functions as F
import numpy as np
import pytest

from impl_chainer import conv, fused


def outputs_and_grads(fn, arrays, seed=0):
    """fn's output and the gradients of sum(output * random) with respect to every array."""
    vs = [chainer.Variable(a.copy()) for a in arrays]
    y = fn(*vs)
    y.grad = np.random.default_rng(seed).normal(size=y.shape).astype(y.dtype)
    y.backward()
    return [y.array] + [v.grad for v in vs]


def assert_same(got, want, rtol):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=0, atol=rtol * np.abs(w).max())


def convolution_nd(x, w, b=None, pad=(0, 0), dilation=1, groups=1):
    """What layers.py computed before impl_chainer.conv: explicit F.pad, then F.convolution_nd."""
    left, right = pad
    if left != right:
        x, left = F.pad(x, ((0, 0), (0, 0), (left, right)), "constant"), 0
    return F.convolution_nd(x, w, b, pad=left, dilate=dilation, groups=groups)


CONVS = [  # (cin, cout, k, dilation, (left, right), groups)
    (5, 7, 1, 1, (0, 0), 1),
    (5, 7, 3, 1, (1, 1), 1),  # "same"
    (6, 4, 3, 3, (3, 3), 1),
    (6, 4, 3, 9, (18, 0), 1),  # causal
    (4, 8, 3, 27, (54, 0), 1),  # causal, the padding longer than the input
    (4, 8, 2, 1, (0, 1), 1),  # "same" with an even kernel: more on the right
    (6, 6, 3, 3, (3, 3), 6),  # depthwise (F.convolution_nd's path)
    (8, 4, 1, 1, (0, 0), 2),  # grouped pointwise (F.convolution_nd's path)
]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cfg", CONVS, ids=lambda c: f"k{c[2]}-d{c[3]}-pad{c[4][0]}.{c[4][1]}-g{c[5]}")
def test_conv1d_matches_convolution_nd(cfg, dtype, bias):
    cin, cout, k, dilation, pad, groups = cfg
    rng = np.random.default_rng(1)
    arrays = [rng.normal(size=(3, cin, 20)).astype(dtype), rng.normal(size=(cout, cin // groups, k)).astype(dtype)]
    arrays += [rng.normal(size=cout).astype(dtype)] if bias else []
    got = outputs_and_grads(lambda x, w, *b: conv.conv1d(x, w, *b, pad=pad, dilation=dilation, groups=groups), arrays)
    want = outputs_and_grads(lambda x, w, *b: convolution_nd(x, w, *b, pad=pad, dilation=dilation, groups=groups), arrays)
    assert got[0].shape == (3, cout, 20 + sum(pad) - (k - 1) * dilation)
    assert_same(got, want, 1e-5 if dtype == np.float32 else 1e-12)


def test_conv1d_uses_its_own_node_on_numpy_only_where_it_can():
    x = np.zeros((1, 4, 5), np.float32)
    assert conv.conv1d(x, np.zeros((4, 4, 1), np.float32)).creator.label == "Conv1d"
    assert conv.conv1d(x, np.zeros((4, 2, 1), np.float32), groups=2).creator.label == "ConvolutionND"


def test_conv1d_gradient_w_r_t_the_input_alone():
    """Only the input needs a gradient (the weights held fixed): backward computes just that."""
    rng = np.random.default_rng(2)
    x = chainer.Variable(rng.normal(size=(2, 3, 9)).astype(np.float32))
    w = rng.normal(size=(4, 3, 3)).astype(np.float32)
    y = conv.conv1d(x, w, pad=(2, 0))
    F.sum(y).backward()
    want = chainer.Variable(x.array.copy())
    F.sum(convolution_nd(want, w, pad=(2, 0))).backward()
    np.testing.assert_allclose(x.grad, want.grad, rtol=1e-5, atol=1e-5)


def channel_norm_by_functions(h, gamma, beta, groups, eps):
    """What layers.ChannelNorm computed before impl_chainer.fused."""
    b, c, t = h.shape
    unit = np.ones((b, groups, t), h.dtype), np.zeros((b, groups, t), h.dtype)
    y = F.batch_normalization(F.reshape(h, (b, groups, c // groups, t)), *unit, eps=eps, axis=2)
    return F.reshape(y, (b, c, t)) * F.reshape(gamma, (1, c, 1)) + F.reshape(beta, (1, c, 1))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("groups", [1, 2])
def test_channel_norm_matches_batch_normalization(groups, dtype):
    rng = np.random.default_rng(3)
    arrays = [rng.normal(2.0, 3.0, (3, 8, 11)).astype(dtype), rng.normal(1, 0.5, 8).astype(dtype),
              rng.normal(0, 0.5, 8).astype(dtype)]
    got = outputs_and_grads(lambda h, g, b: fused.channel_norm(h, g, b, groups, 1e-5), arrays)
    want = outputs_and_grads(lambda h, g, b: channel_norm_by_functions(h, g, b, groups, 1e-5), arrays)
    assert_same(got, want, 1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_highway_gate_matches_functions(dtype):
    rng = np.random.default_rng(4)
    arrays = [rng.normal(0, 3, (3, 12, 10)).astype(dtype), rng.normal(size=(3, 6, 10)).astype(dtype)]

    def by_functions(h, x):
        h1, h2 = F.split_axis(h, 2, axis=1)
        return x + F.sigmoid(h1) * (h2 - x)

    assert_same(outputs_and_grads(fused.highway_gate, arrays), outputs_and_grads(by_functions, arrays),
                1e-6 if dtype == np.float32 else 1e-14)
