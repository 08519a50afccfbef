"""Losses in PyTorch ops (equal to common.contract.losses) and the Trainer (Adam as common.contract.losses.adam_update;
data-parallel through DistributedDataParallel once the process joined a job). In the stock tier of
operators (`ops`) the targets are plain (B, F, T) memory, the losses read them as they are, and Adam and
clipping run with torch's defaults."""
from __future__ import annotations

from impl_torch import runtime  # noqa: F401  (the framework environment comes first)

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from common.contract import losses as L
from common.data.batch import Batch
from common.contract.weights import check_optimizer_state
from impl_torch.layers import canonical_parameters


INPUTS = {"text2mel": ("text", "mel", "guide"), "ssrn": ("mel", "mag")}


CHANNELS_LAST = ("mel", "mag")  # (B, F, T) arrays, given the networks' memory layout (impl_torch.layers)


def _array(batch: Batch, name: str, ops: str) -> np.ndarray:
    a = getattr(batch, name)
    if ops == "tuned" and name in CHANNELS_LAST:
        return np.ascontiguousarray(a.transpose(0, 2, 1)).transpose(0, 2, 1)
    return np.ascontiguousarray(a)


def to_device(batch: Batch, device, net: str, ops: str = "tuned") -> dict:
    """The batch's arrays that `net` uses, as tensors on `device` (ids stay int32 for F.embedding;
    mel and mag channels-last, as the logits they are compared with, so that the losses' gradients
    are too; in the stock tier `ops`, (B, F, T) memory as the stock logits); its weight as a Python
    float and, for Text2Mel, the attention positions as a 0-d float32 tensor on `device` (a true
    division: CUDA divides by a CPU scalar as a product with its reciprocal)."""
    t = {name: torch.from_numpy(_array(batch, name, ops)).to(device, non_blocking=True) for name in INPUTS[net]}
    t["weight"] = float(batch.weight)
    if "guide" in t:
        t["n_real"] = torch.tensor(batch.attention_positions(), dtype=torch.float32, device=device)
    return t


def l1(logits, target, ops: str = "tuned"):
    """Mean |sigmoid(logits) - target| over (B, F, T), computed on (B, T, F) views: contiguous
    there, so that the gradient comes back channels-last (from (B, F, T) views it would not).
    Stock: on the (B, F, T) tensors, whose memory the gradient then has."""
    if ops == "stock":
        return F.l1_loss(torch.sigmoid(logits), target)
    return F.l1_loss(torch.sigmoid(logits.transpose(1, 2)), target.transpose(1, 2))


def binary_divergence(logits, target, ops: str = "tuned"):
    """Mean binary cross-entropy of sigmoid(logits), computed stably from the logits (on (B, T, F)
    views, as l1; stock: on the (B, F, T) tensors)."""
    if ops == "stock":
        return F.binary_cross_entropy_with_logits(logits, target)
    return F.binary_cross_entropy_with_logits(logits.transpose(1, 2), target.transpose(1, 2))


def attention_loss(attention, guide, n_real):
    """sum(A * W) / the number of real (text, frame) positions (Batch.attention_positions: the
    batch's own, or a shard's share of the global batch's)."""
    return (attention * guide).sum() / n_real


def text2mel_losses(model, arrays: dict, ops: str = "tuned") -> dict:
    logits, attention = model(arrays["text"], arrays["mel"])
    return L.with_total({"l1": L.weighted(l1(logits, arrays["mel"], ops), arrays["weight"]),
                         "bin": L.weighted(binary_divergence(logits, arrays["mel"], ops), arrays["weight"]),
                         "att": attention_loss(attention, arrays["guide"], arrays["n_real"])})


def ssrn_losses(model, arrays: dict, ops: str = "tuned") -> dict:
    logits = model(arrays["mel"])
    return L.with_total({"l1": L.weighted(l1(logits, arrays["mag"], ops), arrays["weight"]),
                         "bin": L.weighted(binary_divergence(logits, arrays["mag"], ops), arrays["weight"])})


LOSSES = {"text2mel": text2mel_losses, "ssrn": ssrn_losses}
# DistributedDataParallel's settings: its defaults (25 MiB buckets, gradients copied into them);
# the alternatives were no better on the CPU (measurements: results/implementation-notes.md,
# "torch: DistributedDataParallel's settings").
# No buffer broadcast before each forward: batch norm's running statistics are the only buffers that
# change (norm=batch is refused with --workers, common/training/cli.py; the attention's positions are constants).
DDP_OPTIONS = dict(forward_sync_buffers=False)


class Trainer:
    """Adam on one network's trainable parameters (batch norm's running statistics are buffers:
    no Adam state; train mode updates them). torch.optim.Adam computes exactly
    common.contract.losses.adam_update (eps after the bias-corrected sqrt); the learning rate of each step
    is set from common.contract.losses.learning_rate, gradients are clipped by value when spec.grad_clip is set.
    The fused Adam kernel (CPU and CUDA), much faster than the default on the CPU (measurements:
    results/implementation-notes.md, "torch: fused Adam"), and one clamp a gradient; the stock tier
    (`ops`) runs Adam and clip_grad_value_ with torch's defaults.

    After `distribute` (the process joined a job) the losses are computed through a
    DistributedDataParallel wrapper of the model, whose backward leaves in every parameter's
    .grad the MEAN of the workers' gradients (all-reduced bucket by bucket while backward runs);
    clipping and Adam follow as before. `model` stays the plain module (weights, optimizer,
    inference)."""

    def __init__(self, model, spec, net: str, device, ops: str = "tuned"):
        self.model, self.spec, self.net, self.device, self.ops = model, spec, net, device, ops
        self.loss_fn = LOSSES[net]
        self.params = canonical_parameters(model)
        params = list(self.params.values())
        settings = dict(lr=spec.lr, betas=(spec.beta1, spec.beta2), eps=spec.eps)
        if ops == "stock":
            self.optimizer = torch.optim.Adam(params, **settings)
        else:
            self.optimizer = torch.optim.Adam(params, **settings, fused=True)
        self.step = 0  # Adam steps taken (the next one is step + 1, 1-based as in adam_update)
        self.ddp = None  # the model wrapped by DistributedDataParallel, once distributed

    def join(self) -> None:
        """Average the gradients over the workers of the joined job from now on (idempotent).
        DDP's constructor broadcasts rank 0's parameters (equal anyway: same spec and seed, or
        the same checkpoint restored on every rank, before or after: set_weights copies in place)."""
        if self.ddp is None:
            self.ddp = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                **DDP_OPTIONS)

    def move_to(self, device) -> None:
        """Move the model and the Adam state to `device` (before `join`)."""
        if self.ddp is not None:
            raise RuntimeError("cannot move a model already wrapped by DistributedDataParallel")
        state = self.get_state()
        self.model.to(device)  # in place: the optimizer keeps the same parameters
        self.device = device
        self.set_state(state)

    def _backward(self, batch: Batch) -> dict:
        self.optimizer.zero_grad(set_to_none=True)
        out = self.loss_fn(self.model if self.ddp is None else self.ddp,
                           to_device(batch, self.device, self.net, self.ops), self.ops)
        out["loss"].backward()
        return out

    @staticmethod
    def _floats(out: dict) -> dict:
        return dict(zip(out, torch.stack([v.detach() for v in out.values()]).tolist()))  # one device sync

    def train_step(self, batch: Batch) -> dict:
        """Train mode (dropout on, batch norm on the batch's statistics, updating the running
        ones): forward, backward, clip, Adam. Returns the losses as floats."""
        self.model.train()
        out = self._backward(batch)
        self.step += 1
        self._update()
        return self._floats(out)

    def _update(self) -> None:
        """From the gradients in .grad (the workers' mean once distributed): clip, then one Adam
        step at the learning rate of step `self.step`."""
        for group in self.optimizer.param_groups:
            group["lr"] = L.learning_rate(self.spec, self.step)
        if self.spec.grad_clip is not None:
            if self.ops == "stock":
                torch.nn.utils.clip_grad_value_(self.params.values(), self.spec.grad_clip)
            else:  # one clamp_ per gradient: the foreach form clamps min and max in two passes (3% of a step)
                torch.nn.utils.clip_grad_value_(self.params.values(), self.spec.grad_clip, foreach=False)
        self.optimizer.step()

    def gradients(self, batch: Batch) -> tuple:
        """(losses, {canonical name: unclipped gradient}) in eval mode (batch norm on its running
        statistics); nothing is updated."""
        self.model.eval()
        out = self._backward(batch)
        grads = {name: p.grad.detach().cpu().numpy().copy() for name, p in self.params.items()}
        self.optimizer.zero_grad(set_to_none=True)
        return self._floats(out), grads

    def get_state(self) -> dict:
        """{"step", "m.<name>", "v.<name>"} as NumPy (zeros before the first step)."""
        state = {"step": np.array(self.step, np.int64)}
        for name, p in self.params.items():
            s = self.optimizer.state.get(p, {})
            for key, slot in (("m", "exp_avg"), ("v", "exp_avg_sq")):
                state[f"{key}.{name}"] = (s[slot].detach().cpu().numpy().copy() if slot in s
                                          else np.zeros(tuple(p.shape), np.float32))
        return state

    def set_state(self, state: dict) -> None:
        """Restore a state of `get_state`'s form (any framework's: the names are canonical)."""
        check_optimizer_state(state, {name: tuple(p.shape) for name, p in self.params.items()})
        step = int(state["step"])
        per_param = {} if step == 0 else {
            i: {"step": torch.tensor(float(step)),  # torch.tensor copies: Adam updates its state in place
                "exp_avg": torch.tensor(state[f"m.{name}"], dtype=torch.float32),
                "exp_avg_sq": torch.tensor(state[f"v.{name}"], dtype=torch.float32)}
            for i, name in enumerate(self.params)}
        groups = self.optimizer.state_dict()["param_groups"]
        self.optimizer.load_state_dict({"state": per_param, "param_groups": groups})  # casts to the device
        self.step = step
