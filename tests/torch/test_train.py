"""impl_torch training: losses equal common.contract.losses, torch.optim.Adam is common.contract.losses.adam_update,
and a few steps really learn. (Backend-level Adam, gradients and determinism: test_contract.)"""
import dataclasses

import numpy as np
import pytest
import torch

from common.data import dataset as data
from common.contract import losses as L, spec as S, weights as W
from common.contract.compare import reference_losses
from common.framework import OPS
from impl_torch import layers as TL, train as T
from impl_torch.backend import Backend
from tests.backend_contract import random_batch


@pytest.mark.parametrize("ops", OPS)
def test_loss_functions_equal_common_losses(ops):
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, (2, 5, 7))
    logits[0, 0, :2] = [60.0, -60.0]  # saturated logits stay finite
    target = rng.random((2, 5, 7))
    a, guide, mask = rng.random((2, 4, 7)), rng.random((2, 4, 7)), (rng.random((2, 4, 7)) < 0.7) * 1.0
    t = {k: torch.from_numpy(v.astype(np.float32)) for k, v in
         dict(logits=logits, target=target, a=a, guide=guide * mask, mask=mask).items()}
    assert np.isclose(T.l1(t["logits"], t["target"], ops).item(), L.l1(logits, target), rtol=1e-6)
    assert np.isclose(T.binary_divergence(t["logits"], t["target"], ops).item(),
                      L.binary_divergence(logits, target), rtol=1e-6)
    assert np.isclose(T.attention_loss(t["a"], t["guide"], t["mask"].sum()).item(),
                      L.attention_loss(a, guide * mask, mask.sum()), rtol=1e-6)


@pytest.mark.parametrize("net", S.NETS)
def test_network_losses_equal_common_losses(net):
    spec = S.get_spec("tiny")
    b = random_batch(spec)
    w = W.init_weights(spec, net, 0)
    ref = reference_losses(spec, net, w, b)
    losses, _ = Backend(spec, net).gradients(b)
    assert losses.keys() == ref.keys()
    for k in ref:
        assert np.isclose(losses[k], ref[k], rtol=1e-5, atol=0), (k, losses[k], ref[k])


@pytest.mark.parametrize("net", S.NETS)
def test_a_shards_losses_are_weighted_as_common_losses_says(net):
    """Batch.weight scales l1 and bin, Batch.attention_positions() divides the attention loss
    (a worker's shard of a global batch), as common.contract.losses computes them; gradients scale alike."""
    spec = S.get_spec("tiny")
    b = random_batch(spec)
    shard = dataclasses.replace(b, weight=0.5, real_positions=0.75 * float(b.guide_mask.sum()))
    w = W.init_weights(spec, net, 0)
    ref = reference_losses(spec, net, w, shard)  # the same arrays as b, the shard's weight and positions
    (losses, grads), (_, whole) = Backend(spec, net).gradients(shard), Backend(spec, net).gradients(b)
    for k in ref:
        assert np.isclose(losses[k], ref[k], rtol=1e-5, atol=0), (k, losses[k], ref[k])
    if net == "ssrn":  # no attention term: every gradient is the whole batch's times the weight
        assert all(np.allclose(grads[k], 0.5 * whole[k], rtol=1e-5, atol=1e-9) for k in grads)


def test_weight_one_and_the_batchs_own_positions_change_nothing():
    """weight 1.0 and real_positions = guide_mask.sum() (a single-process run) give bit-identical
    losses and weights to the defaults: the single-process path pays nothing for sharding."""
    spec = S.get_spec("tiny")  # dropout on: same seeds, same masks
    b = random_batch(spec)
    explicit = dataclasses.replace(b, weight=1.0, real_positions=float(b.guide_mask.sum()))
    runs = []
    for batch in (b, explicit):
        backend = Backend(spec, "text2mel", seed=0)
        backend.seed(3)
        runs.append(([backend.train_step(batch) for _ in range(2)], backend.get_weights()))
    (l1, w1), (l2, w2) = runs
    assert l1 == l2 and all(np.array_equal(w1[k], w2[k]) for k in w1)


def test_to_device_moves_what_the_network_uses():
    b = random_batch(S.get_spec("tiny"))
    t = T.to_device(b, torch.device("cpu"), "text2mel")
    assert set(t) == {"text", "mel", "guide", "weight", "n_real"} and t["text"].dtype == torch.int32
    assert t["n_real"].item() == np.float32(b.attention_positions()) and t["weight"] == 1.0
    assert set(T.to_device(b, torch.device("cpu"), "ssrn")) == {"mel", "mag", "weight"}


@pytest.mark.parametrize("net", S.NETS)
def test_running_statistics_are_buffers_that_only_training_updates(net):
    """Batch norm's running statistics are buffers: not in the optimizer (no Adam state, no
    gradient, untouched by clipping), updated by train_step's forward only; gradients and forward
    (eval mode) leave them alone."""
    spec = S.get_spec("tiny", norm="batch", dropout=0.0)
    backend = Backend(spec, net)
    trainer, stats = backend.trainer, TL.canonical_statistics(backend.model)
    assert stats and all(isinstance(b, torch.Tensor) and not b.requires_grad for b in stats.values())
    in_optimizer = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert in_optimizer == {id(p) for p in trainer.params.values()}
    assert not in_optimizer & {id(b) for b in stats.values()}
    assert set(dict(backend.model.named_buffers()).values()) <= set(stats.values())  # no other buffers
    before = {k: b.clone() for k, b in stats.items()}
    b = random_batch(spec)
    backend.gradients(b)
    backend.forward(b)
    assert all(torch.equal(before[k], stats[k]) for k in stats)
    backend.train_step(b)
    assert all(not torch.equal(before[k], stats[k]) for k in stats)
    assert all(p not in trainer.optimizer.state for p in stats.values())
    assert not any(k.endswith((".norm.mean", ".norm.var")) for k in backend.get_optimizer_state())


@pytest.mark.parametrize("ops", OPS)
@pytest.mark.parametrize("preset", ["paper", "community"])
def test_torch_adam_is_the_specs_adam(preset, ops):
    """Three steps of torch.optim.Adam in float64 as each tier's Trainer makes it (tuned fused, stock
    torch's default: test_tiers checks the Trainer's) equal common.contract.losses.adam_update (eps placement
    included)."""
    spec = S.get_spec(preset, eps=1e-3)  # a large eps: its placement changes the result visibly
    rng = np.random.default_rng(1)
    p0, grads = rng.normal(size=10), rng.normal(0, 1e-3, (3, 10))
    p = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    opt = torch.optim.Adam([p], lr=spec.lr, betas=(spec.beta1, spec.beta2), eps=spec.eps,
                           **({"fused": True} if ops == "tuned" else {}))
    ref, m, v = p0, np.zeros(10), np.zeros(10)
    for step, g in enumerate(grads, start=1):
        opt.param_groups[0]["lr"] = L.learning_rate(spec, step)
        p.grad = torch.from_numpy(g.copy())
        opt.step()
        ref, m, v = L.adam_update(ref, g, m, v, step, spec)
    np.testing.assert_allclose(p.detach().numpy(), ref, rtol=0, atol=1e-15)
    np.testing.assert_allclose(opt.state[p]["exp_avg_sq"].numpy(), v, rtol=1e-12)


def excess_over_floor(losses: dict, floor: float) -> float:
    """The loss above the binary divergence's minimum (the targets' own entropy)."""
    return losses["loss"] - floor


@pytest.mark.parametrize("net, factor", [("text2mel", 0.6), ("ssrn", 0.8)])
def test_training_learns_a_fixed_batch(tiny_corpus_dir, net, factor):
    """100 steps on one batch of 4 espeak-ng utterances (tiny, warm-up off, lr 5e-3, dropout on):
    the loss's excess over its floor falls at least by the stated factor; Text2Mel's
    guided-attention loss at least halves."""
    spec = S.get_spec("tiny", warmup=0, lr=5e-3)
    corpus = data.load_corpus(tiny_corpus_dir, spec, progress=False)
    batch = next(data.batches(corpus, range(4), 4, np.random.default_rng(0)))
    target = (batch.mel if net == "text2mel" else batch.mag).astype(np.float64)
    p = np.clip(target, 1e-7, 1 - 1e-7)
    floor = L.binary_divergence(np.log(p / (1 - p)), target)
    backend = Backend(spec, net, seed=0)
    backend.seed(0)
    history = [backend.train_step(batch) for _ in range(100)]
    first, last = history[0], {k: np.mean([h[k] for h in history[-5:]]) for k in history[0]}
    assert excess_over_floor(last, floor) < factor * excess_over_floor(first, floor), (first, last, floor)
    if net == "text2mel":
        assert last["att"] < 0.5 * first["att"], (first, last)


def test_gpu_numerics_are_fp32_with_autotuning():
    """What resolve_device("cuda") sets (checked here without a GPU: the flags exist on CPU builds).
    Saved and restored by hand: cuBLAS's flag is a property of a module object, which newer
    pytest's monkeypatch deletes instead of restoring."""
    import torch.backends.cuda
    import torch.backends.cudnn

    from impl_torch import runtime
    flags = [(torch.backends.cuda.matmul, "allow_tf32", True), (torch.backends.cudnn, "allow_tf32", True),
             (torch.backends.cudnn, "benchmark", False)]
    saved = [getattr(obj, name) for obj, name, _ in flags]
    try:
        for obj, name, value in flags:
            setattr(obj, name, value)
        runtime.fp32_gpu_numerics()
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        assert torch.backends.cudnn.benchmark
    finally:
        for (obj, name, _), value in zip(flags, saved):
            setattr(obj, name, value)
