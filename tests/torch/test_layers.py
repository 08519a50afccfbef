"""impl_torch's building blocks where torch itself is the subject; every check against
common.contract.reference runs through the shared contract (tests/layer_contract.py, test_layer_contract.py)."""
import pytest
import torch
import torch.nn.functional as F

from common.contract import spec as S
from common.framework import OPS
from common.contract.weights import init_weights
from impl_torch import conv as TC, layers as TL
from impl_torch.ssrn import SSRN
from impl_torch.text2mel import Text2Mel
from impl_torch.train import LOSSES, binary_divergence, l1, to_device
from impl_torch.weights import set_weights
from tests.backend_contract import random_batch


def test_initial_history_follows_the_stacks_parameters():
    spec = S.get_spec("tiny")
    stack = TL.build_stack(spec, S.audio_enc_layers(spec)).to(torch.float64)
    history = stack.initial_history(3)
    assert all(h.dtype == torch.float64 and h.device == next(stack.parameters()).device for h in history)
    assert [tuple(h.shape) for h in history] == [(3, l.cin, l.pad[0]) for l in S.audio_enc_layers(spec)]


def test_make_norm_builds_each_kind():
    highway = S.Layer("x", S.HIGHWAY, 8, 8, 3)
    for norm, kind, groups in (("none", type(None), None), ("layer", TL.ChannelNorm, 2), ("batch", TL.BatchNorm, None),
                               ("group", TL.ChannelNorm, 8)):
        made = TL.make_norm(S.get_spec("tiny", norm=norm), highway)
        assert isinstance(made, kind) and getattr(made, "groups", None) == groups


def test_batch_norms_running_statistics_are_buffers_not_parameters():
    norm = TL.BatchNorm(4, 1e-5, 0.1)
    assert [n for n, _ in norm.named_parameters()] == ["gamma", "beta"]
    assert [n for n, _ in norm.named_buffers()] == ["mean", "var"]


# (B, C, O, T, k, dilation, pad): causal, "same", taps reaching past both ends, k=1, a 2-wide kernel
CONV_CASES = [(2, 5, 7, 9, 3, 2, (4, 0)), (2, 5, 7, 9, 3, 2, (2, 2)), (2, 5, 7, 1, 3, 27, (54, 0)),
              (2, 5, 7, 3, 3, 27, (27, 27)), (2, 5, 7, 6, 1, 1, (0, 0)), (1, 3, 4, 5, 2, 1, (1, 0))]


@pytest.mark.parametrize("case", CONV_CASES, ids=str)
@pytest.mark.parametrize("bias", [True, False])
def test_im2col_convolution_equals_torchs_own_with_its_gradients(case, bias):
    b, c, o, t, k, dilation, pad = case
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(b, c, t, generator=g, dtype=torch.float64), torch.randn(o, c, k, generator=g, dtype=torch.float64)
    bb = torch.randn(o, generator=g, dtype=torch.float64) if bias else None
    upstream = torch.randn(b, o, t + sum(pad) - (k - 1) * dilation, generator=g, dtype=torch.float64)

    def run(conv, x):
        inputs = [x.clone().requires_grad_(), w.clone().requires_grad_()] + ([bb.clone().requires_grad_()] if bias else [])
        y = conv(*inputs)
        y.backward(upstream)
        return [y.detach()] + [a.grad for a in inputs]

    ours = run(lambda x, w, *b_: TC.Conv1d.apply(x, w, b_[0] if b_ else None, pad, dilation), x)
    theirs = run(lambda x, w, *b_: F.conv1d(F.pad(x, pad), w, b_[0] if b_ else None, dilation=dilation), x)
    for a, e in zip(ours, theirs):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)
    # the same from a channels-last input, through the dispatching helper and through the
    # F.conv2d form that GPUs (and grouped convolutions) run
    cl = x.transpose(1, 2).contiguous().transpose(1, 2)
    for conv in (TC.conv1d, lambda *a: TC.conv2d_views(*a, groups=1)):
        for a, e in zip(run(lambda x, w, *b_: conv(x, w, b_[0] if b_ else None, pad, dilation), cl), theirs):
            torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)


def test_im2col_convolution_passes_gradcheck():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 6, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: TC.Conv1d.apply(x, w, b, (3, 1), 2), (x, w, b))


def _channels_last(t) -> bool:
    return t.transpose(1, 2).is_contiguous()


# the memory layout of (B, C, T) activations in each tier: tuned (B, T, C) memory, stock (B, C, T)
LAYOUT = {"tuned": _channels_last, "stock": torch.Tensor.is_contiguous}


@pytest.mark.parametrize("ops", OPS)
@pytest.mark.parametrize("net", ["text2mel", "ssrn"])
@pytest.mark.parametrize("change", [{}, {"norm": "batch"}, {"norm": "group"}, {"block": "residual"},
                                    {"conv": "sep"}, {"conv": "bottleneck"}], ids=str)
def test_activations_and_their_gradients_keep_the_tiers_memory_layout(net, change, ops):
    """Tuned: every block's output, and the gradient arriving at it, has channels-last memory: a block
    that returned (B, C, T) memory would cost a copy in the next convolution, forward and backward.
    Stock: all plain (B, C, T) memory (the targets too: to_device), no channels-last anywhere."""
    spec = S.get_spec("tiny", **change)
    model = Text2Mel(spec, ops) if net == "text2mel" else SSRN(spec, ops)
    set_weights(model, init_weights(spec, net, 0))
    seen, layout = [], LAYOUT[ops]

    def check(block, _inputs, out):
        seen.append((block.layer.name, "output", layout(out)))
        out.register_hook(lambda grad: seen.append((block.layer.name, "gradient", layout(grad))))

    for block in model.modules():
        if isinstance(block, TL.Block):
            block.register_forward_hook(check)
    model.train()
    arrays = to_device(random_batch(spec), "cpu", net, ops)
    assert layout(arrays["mel"]) and layout(arrays.get("mag", arrays["mel"]))
    LOSSES[net](model, arrays, ops)["loss"].backward()
    assert len(seen) == 2 * sum(len(layers) for layers in S.layers(spec, net).values())
    assert [s for s in seen if not s[2]] == []


@pytest.mark.parametrize("ops", OPS)
@pytest.mark.parametrize("loss", [l1, binary_divergence])
def test_each_loss_gives_the_logits_a_gradient_in_their_tiers_layout(loss, ops):
    """(A leaf's .grad would be copied into the leaf's own layout: the logits here are not one.)"""
    logits = torch.randn(2, 5, 6, requires_grad=True) * 1
    target = torch.rand(2, 5, 6)
    if ops == "tuned":
        logits, target = logits.transpose(1, 2), target.transpose(1, 2)
    grad, = torch.autograd.grad(loss(logits, target, ops), logits)
    assert LAYOUT[ops](grad)
