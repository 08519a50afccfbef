"""Losses in PyTorch ops (equal to common.losses) and the Trainer (Adam as common.losses.adam_update)."""
from __future__ import annotations

from impl_torch import runtime  # noqa: F401  (the framework environment comes first)

import numpy as np
import torch
import torch.nn.functional as F

from common import losses as L
from common.batch import Batch
from impl_torch.layers import canonical_parameters


def to_tensors(batch: Batch, device) -> dict:
    """The batch's arrays as tensors on `device` (ids stay int32: F.embedding takes them)."""
    return {name: torch.from_numpy(np.ascontiguousarray(getattr(batch, name))).to(device, non_blocking=True)
            for name in ("text", "mel", "mag", "guide", "guide_mask")}


def l1(logits, target):
    return F.l1_loss(torch.sigmoid(logits), target)


def binary_divergence(logits, target):
    """Mean binary cross-entropy of sigmoid(logits), computed stably from the logits."""
    return F.binary_cross_entropy_with_logits(logits, target)


def attention_loss(attention, guide, mask):
    """sum(A * W) / number of real (text, frame) positions."""
    return (attention * guide).sum() / mask.sum()


def text2mel_losses(model, t: dict) -> dict:
    logits, attention = model(t["text"], t["mel"])
    out = {"l1": l1(logits, t["mel"]), "bin": binary_divergence(logits, t["mel"]),
           "att": attention_loss(attention, t["guide"], t["guide_mask"])}
    out["loss"] = out["l1"] + out["bin"] + out["att"]
    return out


def ssrn_losses(model, t: dict) -> dict:
    logits = model(t["mel"])
    out = {"l1": l1(logits, t["mag"]), "bin": binary_divergence(logits, t["mag"])}
    out["loss"] = out["l1"] + out["bin"]
    return out


LOSSES = {"text2mel": text2mel_losses, "ssrn": ssrn_losses}


class Trainer:
    """Adam on one network. torch.optim.Adam computes exactly common.losses.adam_update
    (eps after the bias-corrected sqrt); the learning rate of each step is set from
    common.losses.learning_rate, gradients are clipped by value when spec.grad_clip is set.
    The fused Adam kernel (CPU and CUDA) measured ~7x faster than the default on the CPU."""

    def __init__(self, model, spec, net: str, device):
        self.model, self.spec, self.device = model, spec, device
        self.loss_fn = LOSSES[net]
        self.params = canonical_parameters(model)
        self.optimizer = torch.optim.Adam(list(self.params.values()), lr=spec.lr,
                                          betas=(spec.beta1, spec.beta2), eps=spec.eps, fused=True)
        self.step = 0  # Adam steps taken (the next one is step + 1, 1-based as in adam_update)

    def _backward(self, batch: Batch) -> dict:
        self.optimizer.zero_grad(set_to_none=True)
        out = self.loss_fn(self.model, to_tensors(batch, self.device))
        out["loss"].backward()
        return out

    @staticmethod
    def _floats(out: dict) -> dict:
        return dict(zip(out, torch.stack([v.detach() for v in out.values()]).tolist()))  # one device sync

    def train_step(self, batch: Batch) -> dict:
        """Train mode (dropout on): forward, backward, clip, Adam. Returns the losses as floats."""
        self.model.train()
        self.step += 1
        for group in self.optimizer.param_groups:
            group["lr"] = L.learning_rate(self.spec, self.step)
        out = self._backward(batch)
        if self.spec.grad_clip is not None:
            torch.nn.utils.clip_grad_value_(self.params.values(), self.spec.grad_clip)
        self.optimizer.step()
        return self._floats(out)

    def gradients(self, batch: Batch) -> tuple:
        """(losses, {canonical name: unclipped gradient}) in eval mode; nothing is updated."""
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
        wanted = ["step"] + [f"{key}.{name}" for name in self.params for key in "mv"]
        missing = [k for k in wanted if k not in state]
        wrong = [k for k in wanted[1:] if k in state and np.shape(state[k]) != tuple(self.params[k[2:]].shape)]
        if missing or wrong:
            raise ValueError(f"optimizer state does not fit the model: missing {missing[:5]} misshapen {wrong[:5]}")
        step = int(state["step"])
        per_param = {} if step == 0 else {
            i: {"step": torch.tensor(float(step)),  # torch.tensor copies: Adam updates its state in place
                "exp_avg": torch.tensor(state[f"m.{name}"], dtype=torch.float32),
                "exp_avg_sq": torch.tensor(state[f"v.{name}"], dtype=torch.float32)}
            for i, name in enumerate(self.params)}
        groups = self.optimizer.state_dict()["param_groups"]
        self.optimizer.load_state_dict({"state": per_param, "param_groups": groups})  # casts to the device
        self.step = step
