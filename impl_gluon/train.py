"""Losses in MXNet ops (equal to common.contract.losses) and the Trainer (Adam exactly as
common.contract.losses.adam_update).

Tuned: network and losses one cached graph (Objective), Adam on MXNet's fused kernel called per
parameter (SpecAdam). Stock (ops="stock") instead hybridizes the network alone, computes the losses
imperatively under autograd.record and steps MXNet's own Adam through a gluon.Trainer (_stock_adam)."""
from __future__ import annotations

from impl_gluon import runtime  # noqa: F401  (must precede the first mxnet import)

import math

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from common.contract import losses as L
from common.data.batch import Batch
from common.contract.weights import check_optimizer_state
from impl_gluon.layers import (batch_norm_multiples, canonical_parameters, norms_for_training, sigmoid,
                               unbiased_running_variance)

_L1 = gluon.loss.L1Loss()
_BCE = gluon.loss.SigmoidBinaryCrossEntropyLoss(from_sigmoid=False)  # stable: relu(x) - x y + log(1 + e^-|x|)


# The batch arrays each loss reads: only these become NDArrays (Text2Mel never reads the
# magnitudes, 22 MB a step at paper B=4); the losses take them in this order (+ n_real for
# Text2Mel, + Batch.weight as a (1,) array: an input, so one cached graph serves every value).
INPUTS = {"text2mel": ("text", "mel", "guide"), "ssrn": ("mel", "mag")}


def to_device(batch: Batch, ctx, net: str) -> dict:
    """The batch's arrays that `net` uses (INPUTS) as NDArrays on `ctx` (ids stay int32:
    F.Embedding takes them), plus, for Text2Mel, the attention loss's denominator
    (batch.attention_positions(): its real positions, or a shard's share of the global batch's)
    as a (1,) array."""
    out = {name: mx.nd.array(getattr(batch, name), ctx=ctx, dtype=getattr(batch, name).dtype) for name in INPUTS[net]}
    if "guide" in out:
        out["n_real"] = mx.nd.array([batch.attention_positions()], ctx=ctx, dtype="float32")
    return out


def l1(logits, target, F=mx.nd, ops: str = "tuned"):
    """Mean |sigmoid(logits) - target| (per-sample means of equal size, so their mean is the global mean),
    the sigmoid of the tier (layers.sigmoid)."""
    return _L1(sigmoid(F, logits, ops), target).mean()


def binary_divergence(logits, target):
    """Mean binary cross-entropy of sigmoid(logits), computed stably from the logits (Gluon's
    loss block: NDArrays and Symbols alike)."""
    return _BCE(logits, target).mean()


def attention_loss(attention, guide, n_real, F=mx.nd):
    """sum(A * W) / the number of real (text, frame) positions (Batch.attention_positions: the
    batch's own, or a shard's share of the global batch's; a float or a (1,) array)."""
    return F.sum(attention * guide) / n_real


def text2mel_losses(F, model, text, mel, guide, n_real, weight, ops: str = "tuned") -> dict:
    """weight: Batch.weight as a (1,) array multiplying l1 and bin, not common.contract.losses.weighted's
    float: an input, so one cached graph serves every value (times 1 is exact)."""
    logits, attention = model(text, mel)
    return L.with_total({"l1": l1(logits, mel, F, ops) * weight, "bin": binary_divergence(logits, mel) * weight,
                         "att": attention_loss(attention, guide, n_real, F)})


def ssrn_losses(F, model, mel, mag, weight, ops: str = "tuned") -> dict:
    logits = model(mel)
    return L.with_total({"l1": l1(logits, mag, F, ops) * weight, "bin": binary_divergence(logits, mag) * weight})


LOSSES = {"text2mel": text2mel_losses, "ssrn": ssrn_losses}
KEYS = {"text2mel": ("l1", "bin", "att", "loss"), "ssrn": ("l1", "bin", "loss")}
# The time length each of the network's stacks (its `stacks()`) starts at: TextEnc the text's,
# AudioEnc, AudioDec and SSRN the (reduced) mel's.
LENGTHS = {"text2mel": lambda batch: (batch.text.shape[1], batch.mel.shape[2], batch.mel.shape[2]),
           "ssrn": lambda batch: (batch.mel.shape[2],)}


class Objective(gluon.HybridBlock):
    """The tuned tier's training graph: a network and its losses as one block, (inputs) -> (total
    loss (1,), every loss (n,) in KEYS order), with the network's layer norms in their training form
    (layers.ChannelNorm; batch norm follows autograd's train_mode when run).
    Hybridized, forward and losses are one cached graph, so a training step makes one forward
    call, one backward call and one device-to-host copy of the losses instead of ~20 imperative
    loss operators, each with its own backward node."""

    def __init__(self, model, net: str):
        super().__init__(prefix=model.prefix + "objective_")
        self.net, self.model = net, model

    def hybrid_forward(self, F, *inputs):
        with norms_for_training():
            out = LOSSES[self.net](F, self.model, *inputs)
        return out["loss"], F.concat(*(out[k] for k in KEYS[self.net]), dim=0)


class SpecAdam:
    """common.contract.losses.adam_update on MXNet's fused `adam_update` kernel.

    MXNet's own Adam folds the bias corrections into the step size but adds eps to the
    uncorrected sqrt(v). Since lr m_hat / (sqrt(v_hat) + eps)
    = lr sqrt(c2) / c1 * m / (sqrt(v) + eps sqrt(c2)) with c1 = 1 - b1^t, c2 = 1 - b2^t, the
    kernel computes the spec's update when given that step size and that eps. No weight decay;
    gradients clipped by value when spec.grad_clip is set; `t` (1-based) is set by the Trainer.
    The kernel multiplies each gradient by `rescale` before clipping: 1 / the number of workers
    after a data-parallel job's gradient exchange (which sums), making it the mean (1.0: as is).
    The moments live in `moments` {index: (m, v)} so they can be read and restored.

    One call a parameter, not MXNet's multi-tensor kernels (results/implementation-notes.md,
    "gluon: Adam, one call a parameter")."""

    def __init__(self, spec):
        self.spec, self.t, self.moments, self.rescale = spec, 0, {}, 1.0

    def create_state(self, index, weight):
        """(m, v) of parameter `index`, zeros when new."""
        if index not in self.moments:
            self.moments[index] = tuple(mx.nd.zeros(weight.shape, weight.context, dtype=weight.dtype) for _ in "mv")
        return self.moments[index]

    def kernel_args(self) -> dict:
        """adam_update's arguments for step t."""
        s = self.spec
        c1, c2 = 1.0 - s.beta1 ** self.t, 1.0 - s.beta2 ** self.t
        return dict(lr=L.learning_rate(s, self.t) * math.sqrt(c2) / c1, beta1=s.beta1, beta2=s.beta2,
                    epsilon=s.eps * math.sqrt(c2), wd=0.0, rescale_grad=self.rescale,
                    clip_gradient=-1.0 if s.grad_clip is None else s.grad_clip)

    def update_all(self, weights: list, grads: list) -> None:
        """Step t for parameters 0, 1, ... (states created on first use)."""
        args = self.kernel_args()
        for i, (weight, grad) in enumerate(zip(weights, grads)):
            m, v = self.create_state(i, weight)
            mx.nd.adam_update(weight, grad, m, v, out=weight, **args)


def _stock_adam(spec) -> mx.optimizer.Adam:
    """The stock tier's optimizer: MXNet's own Adam. Its update (mxnet.optimizer.Adam.update) is
    adam_update with step size learning_rate sqrt(c2) / c1, c1 = 1 - b1^t, c2 = 1 - b2^t and t its
    count of the parameter's updates (Optimizer._index_update_count), eps added to the uncorrected
    sqrt(v): as SpecAdam shows, the spec's update when learning_rate is the spec's rate at t and
    epsilon eps sqrt(c2), which Trainer.train_step sets before every step. No weight decay;
    clip_gradient: spec.grad_clip (None: no clipping)."""
    return mx.optimizer.Adam(learning_rate=spec.lr, beta1=spec.beta1, beta2=spec.beta2, epsilon=spec.eps,
                             clip_gradient=spec.grad_clip)


class Trainer:
    """Adam on one network: forward and backward under autograd, then SpecAdam on every
    parameter (the losses are already means: no rescaling by the batch size); the same calls as
    gluon.Trainer's step(1), without the Python around each.

    Stock (ops="stock"), as a user writes it: the losses computed imperatively on the (hybridized)
    network's outputs, and gluon.Trainer.step(1) with MXNet's own Adam (_stock_adam: `optimizer`),
    whose moments and update counts get_state and set_state read and write."""

    def __init__(self, model, spec, net: str, ctx, ops: str = "tuned"):
        self.model, self.spec, self.net, self.ctx, self.ops = model, spec, net, ctx, ops
        self.inputs = INPUTS[net]
        # tuned: the training graph, hybridized along with the model by the Backend
        self.objective = Objective(model, net) if ops == "tuned" else None
        self.params = canonical_parameters(model)
        self.optimizer = SpecAdam(spec) if ops == "tuned" else _stock_adam(spec)
        self.gluon_trainer = (gluon.Trainer(list(self.params.values()), self.optimizer, kvstore=None)
                              if ops == "stock" else None)  # parameter i: index i, one context
        self.step = 0  # Adam steps taken (the next one is step + 1, 1-based as in adam_update)
        self.kvstore, self.keys, self.workers = None, (), 1  # set by join (data-parallel training)
        self._weights = {}  # Batch.weight -> its (1,) input array
        self._batch_norms = [(norm, i, multiple)  # each batch norm, its stack's index and time multiple
                             for i, stack in enumerate(model.stacks()) for norm, multiple in batch_norm_multiples(stack)]

    def join(self, kvstore, keys) -> None:
        """From now on sum every gradient over the workers right after backward, through
        `kvstore` (a joined "dist_sync" KVStore; no optimizer on it: its server sums), parameter
        i under keys[i]; Adam then scales the sum by 1 / workers (the mean) before clipping.
        Collective: every worker calls it at the same point. Weights and Adam state are not
        touched (every worker starts from the same ones: the same seed, or the same checkpoint
        restored before or after joining)."""
        keys = list(keys)
        kvstore.init(keys, [mx.nd.zeros(p.shape, dtype=p.dtype) for p in self.params.values()])
        self.kvstore, self.keys, self.workers = kvstore, keys, kvstore.num_workers
        self.optimizer.rescale = 1.0 / self.workers

    def _weight(self, weight: float):
        """Batch.weight as a (1,) array on the device, made once per value (1.0 alone in a
        single process) rather than every step (measurements: results/implementation-notes.md,
        "gluon: the batch weight's array")."""
        if weight not in self._weights:
            self._weights[weight] = mx.nd.array([weight], ctx=self.ctx, dtype="float32")
        return self._weights[weight]

    def _batch_norm_sizes(self, batch: Batch) -> list:
        """[(BatchNorm block, n = B T at its layer)] for layers.unbiased_running_variance."""
        lengths = LENGTHS[self.net](batch)
        return [(norm, batch.mel.shape[0] * lengths[stack] * multiple) for norm, stack, multiple in self._batch_norms]

    def _backward(self, batch: Batch, train: bool):
        """Forward, losses and backward in autograd's training mode or not (and, in a data-parallel
        job, the exchange of the gradients: afterwards each holds the workers' sum); returns the
        (n,) array of losses in KEYS order."""
        arrays = to_device(batch, self.ctx, self.net)
        inputs = [arrays[name] for name in self.inputs] + ([arrays["n_real"]] if "n_real" in arrays else [])
        inputs.append(self._weight(batch.weight))
        with autograd.record(train_mode=train):
            loss, losses = self.objective(*inputs) if self.ops == "tuned" else self._stock_losses(inputs)
        loss.backward(train_mode=train)  # batch norm's backward follows it (its statistics, its update)
        if self.kvstore is not None:
            # queued like gluon.Trainer's (in place, the first parameters first): each exchange
            # starts as soon as its gradient is computed, and Adam waits only for its own
            for i, (key, p) in enumerate(zip(self.keys, self.params.values())):
                grad = p.grad(self.ctx)
                self.kvstore.pushpull(key, grad, out=grad, priority=-i)
        return losses

    def _stock_losses(self, inputs: list) -> tuple:
        """Objective's outputs the stock way: the network's forward (its own cached graph when
        hybridized), then the losses imperatively, each operator recorded by autograd."""
        out = LOSSES[self.net](mx.nd, self.model, *inputs, ops=self.ops)
        return out["loss"], mx.nd.concat(*(out[k] for k in KEYS[self.net]), dim=0)

    def _floats(self, losses) -> dict:
        return dict(zip(KEYS[self.net], losses.asnumpy().astype(float).tolist()))  # one sync

    def train_step(self, batch: Batch) -> dict:
        """Train mode (dropout on): forward, backward, clip, Adam. Returns the losses as floats."""
        with unbiased_running_variance(self._batch_norm_sizes(batch)):  # batch norm: the spec's running update
            losses = self._backward(batch, train=True)
        self.step += 1
        if self.ops == "stock":
            self._stock_update()
        else:
            self.optimizer.t = self.step
            params = self.params.values()
            self.optimizer.update_all([p.data(self.ctx) for p in params], [p.grad(self.ctx) for p in params])
        return self._floats(losses)

    def _stock_update(self) -> None:
        """gluon.Trainer.step(1) (the losses are means) with _stock_adam's rate and eps for t = step,
        MXNet's own count for every parameter (set_state keeps the two equal)."""
        s = self.spec
        self.gluon_trainer.set_learning_rate(L.learning_rate(s, self.step))
        self.optimizer.epsilon = s.eps * math.sqrt(1.0 - s.beta2 ** self.step)
        self.gluon_trainer.step(1)

    def _moments(self) -> dict:
        """{parameter index: (m, v)} as the optimizer keeps them: SpecAdam's, or in stock the
        gluon.Trainer's (its one updater's states: MXNet's Adam's (mean, var); gluon.Trainer shows
        them only pickled, through save_states' file)."""
        return self.optimizer.moments if self.ops == "tuned" else self.gluon_trainer._updaters[0].states

    def _create_moments(self, index: int, weight) -> tuple:
        """(m, v) of parameter `index`, zeros when new (as the optimizer creates them at its first step)."""
        if self.ops == "tuned":
            return self.optimizer.create_state(index, weight)
        updater = self.gluon_trainer._updaters[0]
        if index not in updater.states:
            updater.states[index] = self.optimizer.create_state_multi_precision(index, weight)
            updater.states_synced[index] = True
        return updater.states[index]

    def gradients(self, batch: Batch) -> tuple:
        """(losses, {canonical name: unclipped gradient}) of the eval-mode network (no dropout, batch
        norm on its running statistics); nothing is updated (in a data-parallel job: the mean of
        the workers' gradients).

        Without dropout and batch norm, training mode computes the same function, and it is used
        then so that these are exactly train_step's gradients: MKLDNN picks other 1x1-convolution
        kernels for inference (outputs ~1e-7 apart, gradients up to ~2e-5 of their scale)."""
        out = self._backward(batch, train=not self.spec.dropout and self.spec.norm != "batch")
        grads = {name: p.grad(self.ctx).asnumpy() for name, p in self.params.items()}
        if self.workers > 1:  # the workers' sum -> their mean
            grads = {name: g / np.float32(self.workers) for name, g in grads.items()}
        return self._floats(out), grads

    def get_state(self) -> dict:
        """{"step", "m.<name>", "v.<name>"} as NumPy (zeros before the first step)."""
        state = {"step": np.array(self.step, np.int64)}
        moments = self._moments()
        for i, (name, p) in enumerate(self.params.items()):
            m, v = moments.get(i, (None, None))
            state[f"m.{name}"] = np.zeros(p.shape, np.float32) if m is None else m.asnumpy()
            state[f"v.{name}"] = np.zeros(p.shape, np.float32) if v is None else v.asnumpy()
        return state

    def set_state(self, state: dict) -> None:
        """Restore a state of `get_state`'s form (any framework's: the names are canonical)."""
        check_optimizer_state(state, {name: p.shape for name, p in self.params.items()})
        for i, (name, p) in enumerate(self.params.items()):
            m, v = self._create_moments(i, p.data(self.ctx))
            m[:] = np.asarray(state[f"m.{name}"], np.float32)  # in place
            v[:] = np.asarray(state[f"v.{name}"], np.float32)
        self.step = int(state["step"])
        if self.ops == "stock":  # MXNet's Adam takes t from its own counts, per device and parameter
            counts = dict.fromkeys(range(len(self.params)), self.step)
            self.optimizer._all_index_update_counts = {self.ctx.device_id: counts}
            self.optimizer._index_update_count, self.optimizer.num_update = counts, self.step
