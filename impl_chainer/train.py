"""Losses in Chainer ops (equal to common.losses) and the Trainer (Adam as common.losses.adam_update)."""
from __future__ import annotations

from impl_chainer import runtime

from concurrent.futures import ThreadPoolExecutor

import chainer
import chainer.functions as F
import numpy as np

from common import losses as L
from common.batch import Batch
from impl_chainer.layers import canonical_parameters


INPUTS = {"text2mel": ("text", "mel", "guide"), "ssrn": ("mel", "mag")}


def to_device(batch: Batch, device, net: str) -> dict:
    """The batch's arrays that `net` uses, on `device` (ids stay int32: F.embed_id takes them),
    and as Python floats the guided-attention denominator (batch.attention_positions(): the
    batch's real (text, frame) positions, or a worker shard's share of the global batch's) and
    the weight of the l1 and binary-divergence terms (batch.weight)."""
    arrays = {name: device.send(np.ascontiguousarray(getattr(batch, name))) for name in INPUTS[net]}
    arrays["n_real"] = batch.attention_positions()
    arrays["weight"] = float(batch.weight)
    return arrays


def l1(logits, target):
    return F.mean(F.absolute(F.sigmoid(logits) - target))


def binary_divergence(logits, target):
    """Mean binary cross-entropy of sigmoid(logits), computed stably from the logits:
    softplus(x) - x Y* (Chainer's softplus is max(x, 0) + log1p(exp(-|x|)))."""
    return F.mean(F.softplus(logits) - logits * target)


def attention_loss(attention, guide, n_real: float):
    """sum(A * W) / number of real (text, frame) positions."""
    return F.sum(attention * guide) / n_real


def text2mel_losses(model, arrays: dict) -> dict:
    logits, attention = model(arrays["text"], arrays["mel"])
    return L.with_total({"l1": L.weighted(l1(logits, arrays["mel"]), arrays["weight"]),
                         "bin": L.weighted(binary_divergence(logits, arrays["mel"]), arrays["weight"]),
                         "att": attention_loss(attention, arrays["guide"], arrays["n_real"])})


def ssrn_losses(model, arrays: dict) -> dict:
    logits = model(arrays["mel"])
    return L.with_total({"l1": L.weighted(l1(logits, arrays["mag"]), arrays["weight"]),
                         "bin": L.weighted(binary_divergence(logits, arrays["mag"]), arrays["weight"])})


LOSSES = {"text2mel": text2mel_losses, "ssrn": ssrn_losses}


def adam_update(p, g, m, v, step: int, spec) -> None:
    """common.losses.adam_update in place, in xp ops (NumPy or CuPy): chainer.optimizers.Adam
    adds eps to the uncorrected sqrt(v) with a bias-corrected step size, another formula.
    Temporaries are reused (out=) since Adam over 24M parameters is memory-bound."""
    xp = chainer.backend.get_array_module(p)
    if spec.grad_clip is not None:
        g = xp.clip(g, -spec.grad_clip, spec.grad_clip)
    m *= spec.beta1
    m += (1 - spec.beta1) * g
    v *= spec.beta2
    tmp = xp.multiply(g, g)
    tmp *= 1 - spec.beta2
    v += tmp
    xp.sqrt(v, out=tmp)  # sqrt(v_hat) = sqrt(v) / sqrt(1 - b2^t)
    tmp *= 1 / np.sqrt(1 - spec.beta2 ** step)
    tmp += spec.eps
    xp.divide(m, tmp, out=tmp)
    tmp *= L.learning_rate(spec, step) / (1 - spec.beta1 ** step)  # m_hat = m / (1 - b1^t)
    p -= tmp


class Trainer:
    """Adam on one network, written out (adam_update above) with m and v per canonical name of
    a trainable parameter (batch norm's running statistics are not parameters: no state);
    the learning rate of each step is common.losses.learning_rate, gradients are clipped by
    value when spec.grad_clip is set. With a ChainerMN communicator (`communicator`, set by
    Backend.join_workers) the gradients are averaged over the workers right after backward,
    before clipping and Adam: the communicator's gradient mean is called directly (what
    chainermn.create_multi_node_optimizer's wrapper calls before its update) since this Adam is
    written out, not a chainer.Optimizer that the wrapper could take."""

    def __init__(self, model, spec, net: str, device):
        self.model, self.spec, self.net, self.device = model, spec, net, device
        self.loss_fn = LOSSES[net]
        self.params = canonical_parameters(model)
        self.m = {name: p.xp.zeros_like(p.array) for name, p in self.params.items()}
        self.v = {name: p.xp.zeros_like(p.array) for name, p in self.params.items()}
        self.step = 0  # Adam steps taken (the next one is step + 1, 1-based as in adam_update)
        self.communicator = None  # a ChainerMN communicator once the process joined a job
        self._pool, self._pool_threads = None, 0  # the threads of _update, made at the first step on the CPU

    def move_to(self, device) -> None:
        """Move the Adam state to `device` (the model is moved by its owner)."""
        self.device = device
        self.m = {name: device.send(a) for name, a in self.m.items()}
        self.v = {name: device.send(a) for name, a in self.v.items()}

    def _backward(self, batch: Batch) -> dict:
        self.model.cleargrads()
        out = self.loss_fn(self.model, to_device(batch, self.device, self.net))
        out["loss"].backward()
        if self.communicator is not None:
            runtime.mean_grads(self.communicator, self.model)
        return {k: float(val.array) for k, val in out.items()}

    def train_step(self, batch: Batch) -> dict:
        """Train mode (dropout on, batch norm on the batch's statistics, updating the running
        ones): forward, backward, clip, Adam. Returns the losses as floats."""
        with chainer.using_config("train", True):
            out = self._backward(batch)
        self.step += 1
        self._update()
        return out

    def _update(self) -> None:
        """adam_update on every parameter; on the CPU spread over runtime.thread_count() threads,
        largest parameters first (NumPy's ufuncs release the GIL and run one thread each: Adam
        over 24M parameters took 80 ms on one thread, 45 on two; results/implementation-notes.md,
        "chainer: Adam on threads")."""
        jobs = sorted(self.params, key=lambda name: -self.params[name].size)

        def update(name):
            p = self.params[name]
            adam_update(p.array, p.grad, self.m[name], self.v[name], self.step, self.spec)

        threads = runtime.thread_count()
        if threads == 1 or not isinstance(self.params[jobs[0]].array, np.ndarray):
            for name in jobs:
                update(name)
            return
        if self._pool_threads != threads:  # the first step, or configure_threads changed the count
            if self._pool is not None:
                self._pool.shutdown()
            self._pool, self._pool_threads = ThreadPoolExecutor(threads, thread_name_prefix="adam"), threads
        list(self._pool.map(update, jobs))

    def gradients(self, batch: Batch) -> tuple:
        """(losses, {canonical name: unclipped gradient (the workers' mean in a job)}) in eval
        mode (batch norm on its running statistics); nothing is updated."""
        with chainer.using_config("train", False):
            out = self._backward(batch)
        grads = {name: np.array(runtime.to_numpy(p.grad)) for name, p in self.params.items()}
        self.model.cleargrads()
        return out, grads

    def get_state(self) -> dict:
        """{"step", "m.<name>", "v.<name>"} as NumPy (zeros before the first step)."""
        state = {"step": np.array(self.step, np.int64)}
        for name in self.params:
            state[f"m.{name}"] = np.array(runtime.to_numpy(self.m[name]))
            state[f"v.{name}"] = np.array(runtime.to_numpy(self.v[name]))
        return state

    def set_state(self, state: dict) -> None:
        """Restore a state of `get_state`'s form (any framework's: the names are canonical)."""
        wanted = ["step"] + [f"{key}.{name}" for name in self.params for key in "mv"]
        missing = [k for k in wanted if k not in state]
        wrong = [k for k in wanted[1:] if k in state and np.shape(state[k]) != self.params[k[2:]].shape]
        if missing or wrong:
            raise ValueError(f"optimizer state does not fit the model: missing {missing[:5]} misshapen {wrong[:5]}")
        for name in self.params:
            self.m[name][...] = self.device.send(np.asarray(state[f"m.{name}"], np.float32))
            self.v[name][...] = self.device.send(np.asarray(state[f"v.{name}"], np.float32))
        self.step = int(state["step"])
