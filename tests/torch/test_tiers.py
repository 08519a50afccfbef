"""What each tier of operators (common.framework.OPS) runs in impl_torch: the tuned tier's own kernels
(the im2col convolution, its F.conv2d views, uniform-number dropout masks, the synthesis step's
matrix products, fused Adam, one clamp a gradient) never run in the stock tier, which calls torch's
own F.conv1d, F.conv_transpose1d, F.dropout and Adam's defaults instead. Both tiers' numbers are the
contracts' (test_contract, test_layer_contract, test_network_contract run both)."""
import collections

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from common.contract import spec as S
from common.data import text as TX
from common.framework import OPS, load_backend
from impl_torch import conv as TC, layers as TL
from impl_torch.backend import Backend
from impl_torch.ssrn import SSRN
from impl_torch.text2mel import Text2Mel
from tests.backend_contract import random_batch

# (object, attribute) -> what calls it (through that attribute, so that a spy sees each call)
TUNED_ONLY = {(TC.Conv1d, "apply"): "the im2col convolution", (TC, "conv2d_views"): "grouped convolutions",
              (F, "conv_transpose2d"): "the transposed convolution's views", (torch, "rand_like"): "dropout masks",
              (torch, "addmm"): "a synthesis step's convolution", (torch, "matmul"): "a bottleneck step's reduction"}
STOCK_ONLY = {(F, "conv_transpose1d"): "the transposed convolution", (F, "dropout"): "dropout"}
STOCK_CALLS = {**STOCK_ONLY, (F, "conv1d"): "convolutions"}
# every tuned kernel above is reached by one of these variants (grouped: sep; matmul: bottleneck)
VARIANTS = [{}, {"conv": "sep"}, {"conv": "bottleneck", "norm": "batch"}]


def spy(monkeypatch, targets: dict) -> collections.Counter:
    """Count the calls to each (object, attribute) of `targets` under its label; the calls still run."""
    calls = collections.Counter()
    for (obj, name), label in targets.items():
        def counted(*args, _original=getattr(obj, name), _label=label, **kwargs):
            calls[_label] += 1
            return _original(*args, **kwargs)
        monkeypatch.setattr(obj, name, counted)
    return calls


def counts(calls: collections.Counter, targets: dict) -> dict:
    return {label: calls[label] for label in targets.values()}


def exercise(ops: str, variant: dict) -> None:
    """Everything a Backend does in the tier `ops`: train steps (dropout on), gradients, forward,
    synthesis (Text2Mel) and upsampling (SSRN)."""
    spec = S.get_spec("tiny", **variant)
    batch = random_batch(spec)
    for net in S.NETS:
        backend = Backend(spec, net, ops=ops)
        backend.seed(0)
        backend.train_step(batch)
        backend.gradients(batch)
        backend.forward(batch)
        if net == "text2mel":
            backend.synthesize_batch([TX.text_to_ids("a short test.", spec), TX.text_to_ids("and another.", spec)], 10)
        else:
            backend.upsample(batch.mel[0])


def test_stock_runs_none_of_the_tuned_kernels_and_tuned_runs_each(monkeypatch):
    calls = spy(monkeypatch, {**TUNED_ONLY, **STOCK_CALLS})
    for variant in VARIANTS:
        exercise("stock", variant)
    assert not any(counts(calls, TUNED_ONLY).values()), counts(calls, TUNED_ONLY)
    assert all(counts(calls, STOCK_CALLS).values()), counts(calls, STOCK_CALLS)
    calls.clear()
    for variant in VARIANTS:
        exercise("tuned", variant)
    assert all(counts(calls, TUNED_ONLY).values()), counts(calls, TUNED_ONLY)
    assert not any(counts(calls, STOCK_ONLY).values()), counts(calls, STOCK_ONLY)


def test_the_tiers_optimizer_and_clipping(monkeypatch):
    """Tuned: fused Adam and clip_grad_value_(foreach=False); stock: Adam and clip_grad_value_ as
    torch defaults them (no fused or foreach choice made)."""
    spec = S.get_spec("tiny", grad_clip=0.5)
    clips = []
    original = torch.nn.utils.clip_grad_value_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_value_",
                        lambda *args, **kwargs: clips.append(kwargs) or original(*args, **kwargs))
    groups = {}
    for ops in OPS:
        backend = Backend(spec, "ssrn", ops=ops)
        backend.train_step(random_batch(spec))
        groups[ops] = backend.trainer.optimizer.param_groups[0]
        assert type(backend.trainer.optimizer) is torch.optim.Adam
    assert groups["tuned"]["fused"] is True and groups["tuned"]["foreach"] is None
    assert groups["stock"]["fused"] is None and groups["stock"]["foreach"] is None
    assert clips == [{"foreach": False}, {}]


def test_every_part_is_built_in_the_tier_asked_for():
    """Every block and norm of both networks, and the trainer of a Backend class of that tier."""
    for ops in OPS:
        for norm in ("layer", "batch"):
            spec = S.get_spec("tiny", norm=norm)
            for model in (Text2Mel(spec, ops), SSRN(spec, ops)):
                parts = [m for m in model.modules() if isinstance(m, (TL.Block, TL.ChannelNorm, TL.BatchNorm))]
                assert any(isinstance(m, TL.BatchNorm if norm == "batch" else TL.ChannelNorm) for m in parts)
                assert model.ops == ops and {m.ops for m in parts} == {ops}
        assert load_backend("torch", ops)(spec, "ssrn").trainer.ops == ops


def test_an_unknown_tier_is_refused():
    """By the Backend (common.framework.Backend), before anything is built, as in chainer and gluon."""
    with pytest.raises(ValueError, match="unknown ops 'fast'"):
        Backend(S.get_spec("tiny"), "ssrn", ops="fast")


@pytest.mark.parametrize("net", S.NETS)
def test_the_tiers_agree(net):
    """The same weights and batch: eval outputs within float32 rounding of each other (each tier is
    held to the reference by the contracts; this shows stock is not a different network)."""
    spec = S.get_spec("tiny")
    batch = random_batch(spec)
    out = {ops: Backend(spec, net, ops=ops).forward(batch) for ops in OPS}
    for key, value in out["tuned"].items():
        np.testing.assert_allclose(out["stock"][key], value, rtol=0, atol=1e-5)
