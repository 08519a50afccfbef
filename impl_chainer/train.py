"""Losses in Chainer ops (equal to common.contract.losses) and the Trainer (Adam as common.contract.losses.adam_update):
written out in the tuned tier, chainer.optimizers.Adam in the stock tier."""
from __future__ import annotations

from impl_chainer import runtime

import math
from concurrent.futures import ThreadPoolExecutor

import chainer
import chainer.functions as F
import numpy as np
from chainer.optimizer_hooks import GradientHardClipping

from common.contract import losses as L
from common.data.batch import Batch
from common.contract.weights import check_optimizer_state
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
    """common.contract.losses.adam_update in place, in xp ops (NumPy or CuPy): chainer.optimizers.Adam
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
    the learning rate of each step is common.contract.losses.learning_rate, gradients are clipped by
    value when spec.grad_clip is set. After `join` (a ChainerMN communicator, from
    Backend.join_workers) the gradients are averaged over the workers right after backward,
    before clipping and Adam: the communicator's gradient mean is called directly (what
    chainermn.create_multi_node_optimizer's wrapper calls before its update) since this Adam is
    written out, not a chainer.Optimizer that the wrapper could take.

    Stock (ops="stock"): chainer.optimizers.Adam set up on the model, its alpha and eps set for
    every step (_stock_update), clipping by chainer.optimizer_hooks.GradientHardClipping, and the
    state (the optimizer's t, each update rule's t, m and v) read and written through Chainer's
    own optimizer serialization under the canonical names. The workers' gradient mean is the same
    direct call, before the optimizer's update."""

    def __init__(self, model, spec, net: str, device, ops: str = "tuned"):
        self.model, self.spec, self.net, self.device, self.ops = model, spec, net, device, ops
        self.loss_fn = LOSSES[net]
        self.params = canonical_parameters(model)
        self.communicator = None  # a ChainerMN communicator once the process joined a job
        if ops == "stock":
            self.optimizer = chainer.optimizers.Adam(beta1=spec.beta1, beta2=spec.beta2).setup(model)
            if spec.grad_clip is not None:
                self.optimizer.add_hook(GradientHardClipping(-spec.grad_clip, spec.grad_clip))
            paths = {id(p): path for path, p in model.namedparams()}
            self.paths = {name: paths[id(p)].strip("/") for name, p in self.params.items()}  # serializer keys
            return
        self.m = {name: p.xp.zeros_like(p.array) for name, p in self.params.items()}
        self.v = {name: p.xp.zeros_like(p.array) for name, p in self.params.items()}
        self.step = 0  # Adam steps taken (the next one is step + 1, 1-based as in adam_update)
        self._pool, self._pool_threads = None, 0  # the threads of _update, made at the first step on the CPU

    def join(self, communicator) -> None:
        """Average the gradients over the workers of `communicator` (ChainerMN's) from now on."""
        self.communicator = communicator

    def move_to(self, device) -> None:
        """Move the Adam state to `device` (the model is moved by its owner; stock: Chainer's update
        rules move their state to their parameter's device at the next update)."""
        self.device = device
        if self.ops == "stock":
            return
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
        if self.ops == "stock":
            self._stock_update()
            return out
        self.step += 1
        self._update()
        return out

    def _stock_update(self) -> None:
        """chainer.optimizers.Adam's step t (AdamRule.update_core: alpha_t = alpha sqrt(1 - b2^t) /
        (1 - b1^t), p -= alpha_t m / (sqrt(v) + eps)) with alpha = lr and eps = spec.eps
        sqrt(1 - b2^t) is adam_update's lr / (1 - b1^t) m / (sqrt(v) / sqrt(1 - b2^t) + spec.eps);
        both are set before each update. The clipping hook runs first ("pre")."""
        t = self.optimizer.t + 1
        self.optimizer.alpha = L.learning_rate(self.spec, t)
        self.optimizer.eps = self.spec.eps * math.sqrt(1 - self.spec.beta2 ** t)
        self.optimizer.update()

    def _update(self) -> None:
        """adam_update on every parameter; on the CPU spread over runtime.thread_count() threads,
        largest parameters first (NumPy's ufuncs release the GIL and run one thread each;
        results/implementation-notes.md, "chainer: Adam on threads")."""
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
        if self.ops == "stock":  # what chainer.serializers.save_npz writes of the optimizer
            saved = chainer.serializers.DictionarySerializer()
            saved.save(self.optimizer)
            state = {"step": np.array(self.optimizer.t, np.int64)}
            for name, path in self.paths.items():
                for key in "mv":  # an update rule makes its m and v at its first update
                    a = saved.target.get(f"{path}/{key}")
                    state[f"{key}.{name}"] = (np.zeros(self.params[name].shape, np.float32) if a is None
                                              else np.array(a, np.float32))
            return state
        state = {"step": np.array(self.step, np.int64)}
        for name in self.params:
            state[f"m.{name}"] = np.array(runtime.to_numpy(self.m[name]))
            state[f"v.{name}"] = np.array(runtime.to_numpy(self.v[name]))
        return state

    def set_state(self, state: dict) -> None:
        """Restore a state of `get_state`'s form (any framework's: the names are canonical)."""
        check_optimizer_state(state, {name: p.shape for name, p in self.params.items()})
        if self.ops == "stock":  # loaded as chainer.serializers.load_npz loads an optimizer
            step = np.array(int(state["step"]), np.int64)
            saved = {"t": step, "epoch": np.array(self.optimizer.epoch, np.int64)}
            for name, path in self.paths.items():
                saved[f"{path}/t"] = step  # the update rule's own step count: its alpha_t reads it
                for key in "mv":  # copies: a rule without state yet keeps the arrays it is given
                    saved[f"{path}/{key}"] = np.array(state[f"{key}.{name}"], np.float32)
            chainer.serializers.NpzDeserializer(saved).load(self.optimizer)
            return
        for name in self.params:
            self.m[name][...] = self.device.send(np.asarray(state[f"m.{name}"], np.float32))
            self.v[name][...] = self.device.send(np.asarray(state[f"v.{name}"], np.float32))
        self.step = int(state["step"])
