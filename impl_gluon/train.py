"""Losses in MXNet ops (equal to common.losses) and the Trainer (gluon.Trainer driving Adam
exactly as common.losses.adam_update)."""
from __future__ import annotations

from impl_gluon import runtime  # noqa: F401  (must precede the first mxnet import)

import math

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from common import losses as L
from common.batch import Batch
from common.weights import WeightsError
from impl_gluon.layers import canonical_parameters

_L1 = gluon.loss.L1Loss()
_BCE = gluon.loss.SigmoidBinaryCrossEntropyLoss(from_sigmoid=False)  # stable: relu(x) - x y + log(1 + e^-|x|)


def to_arrays(batch: Batch, ctx, names: tuple) -> dict:
    """The batch's arrays `names` as NDArrays on `ctx` (ids stay int32: F.Embedding takes them),
    plus the number of real attention positions as a Python float."""
    out = {name: mx.nd.array(getattr(batch, name), ctx=ctx, dtype=getattr(batch, name).dtype) for name in names}
    out["n_real"] = float(np.sum(batch.guide_mask))
    return out


def l1(logits, target):
    """Mean |sigmoid(logits) - target| (per-sample means of equal size, so their mean is the global mean)."""
    return _L1(mx.nd.sigmoid(logits), target).mean()


def binary_divergence(logits, target):
    """Mean binary cross-entropy of sigmoid(logits), computed stably from the logits."""
    return _BCE(logits, target).mean()


def attention_loss(attention, guide, n_real: float):
    """sum(A * W) / number of real (text, frame) positions."""
    return mx.nd.sum(attention * guide) / n_real


def text2mel_losses(model, a: dict) -> dict:
    logits, attention = model(a["text"], a["mel"])
    out = {"l1": l1(logits, a["mel"]), "bin": binary_divergence(logits, a["mel"]),
           "att": attention_loss(attention, a["guide"], a["n_real"])}
    out["loss"] = out["l1"] + out["bin"] + out["att"]
    return out


def ssrn_losses(model, a: dict) -> dict:
    logits = model(a["mel"])
    out = {"l1": l1(logits, a["mag"]), "bin": binary_divergence(logits, a["mag"])}
    out["loss"] = out["l1"] + out["bin"]
    return out


LOSSES = {"text2mel": text2mel_losses, "ssrn": ssrn_losses}
# The batch arrays each loss reads: only these become NDArrays (Text2Mel never reads the
# magnitudes, 22 MB a step at paper B=4).
INPUTS = {"text2mel": ("text", "mel", "guide"), "ssrn": ("mel", "mag")}


class SpecAdam(mx.optimizer.Optimizer):
    """common.losses.adam_update on MXNet's fused `adam_update` kernel.

    MXNet's own Adam folds the bias corrections into the step size but adds eps to the
    uncorrected sqrt(v). Since lr m_hat / (sqrt(v_hat) + eps)
    = lr sqrt(c2) / c1 * m / (sqrt(v) + eps sqrt(c2)) with c1 = 1 - b1^t, c2 = 1 - b2^t, the
    kernel computes the spec's update when given that step size and that eps. No weight decay;
    gradients clipped by value when spec.grad_clip is set; `t` (1-based) is set by the Trainer.
    The moments live in `moments` {index: (m, v)} so they can be read and restored."""

    def __init__(self, spec):
        super().__init__(learning_rate=spec.lr, wd=0.0, rescale_grad=1.0,
                         clip_gradient=spec.grad_clip)
        self.spec, self.t, self.moments = spec, 0, {}

    def create_state(self, index, weight):
        return self.moments.setdefault(index, (mx.nd.zeros(weight.shape, weight.context, dtype=weight.dtype),
                                               mx.nd.zeros(weight.shape, weight.context, dtype=weight.dtype)))

    def update(self, index, weight, grad, state):
        s, (m, v) = self.spec, state
        c1, c2 = 1.0 - s.beta1 ** self.t, 1.0 - s.beta2 ** self.t
        mx.nd.adam_update(weight, grad, m, v, out=weight, lr=L.learning_rate(s, self.t) * math.sqrt(c2) / c1,
                          beta1=s.beta1, beta2=s.beta2, epsilon=s.eps * math.sqrt(c2), wd=0.0,
                          rescale_grad=self.rescale_grad,
                          clip_gradient=-1.0 if s.grad_clip is None else s.grad_clip)


class Trainer:
    """Adam on one network through gluon.Trainer (step(1): the losses are already means, so no
    rescaling by the batch size)."""

    def __init__(self, model, spec, net: str, ctx):
        self.model, self.spec, self.ctx = model, spec, ctx
        self.loss_fn, self.inputs = LOSSES[net], INPUTS[net]
        self.params = canonical_parameters(model)
        self.optimizer = SpecAdam(spec)
        self.trainer = gluon.Trainer(list(self.params.values()), self.optimizer, kvstore=None)
        self.step = 0  # Adam steps taken (the next one is step + 1, 1-based as in adam_update)

    def _backward(self, batch: Batch, train: bool) -> dict:
        arrays = to_arrays(batch, self.ctx, self.inputs)
        with autograd.record(train_mode=train):
            out = self.loss_fn(self.model, arrays)
        out["loss"].backward()
        return out

    @staticmethod
    def _floats(out: dict) -> dict:
        return dict(zip(out, mx.nd.concat(*out.values(), dim=0).asnumpy().astype(float).tolist()))  # one sync

    def train_step(self, batch: Batch) -> dict:
        """Train mode (dropout on): forward, backward, clip, Adam. Returns the losses as floats."""
        self.step += 1
        self.optimizer.t = self.step
        out = self._backward(batch, train=True)
        self.trainer.step(1)
        return self._floats(out)

    def gradients(self, batch: Batch) -> tuple:
        """(losses, {canonical name: unclipped gradient}) without dropout; nothing is updated.

        Without dropout, training mode computes the same function, and it is used then so that
        these are exactly train_step's gradients: MKLDNN picks other 1x1-convolution kernels
        for inference (outputs ~1e-7 apart, gradients up to ~2e-5 of their scale)."""
        out = self._backward(batch, train=not self.spec.dropout)
        return self._floats(out), {name: p.grad(self.ctx).asnumpy() for name, p in self.params.items()}

    def get_state(self) -> dict:
        """{"step", "m.<name>", "v.<name>"} as NumPy (zeros before the first step)."""
        state = {"step": np.array(self.step, np.int64)}
        for i, (name, p) in enumerate(self.params.items()):
            m, v = self.optimizer.moments.get(i, (None, None))
            state[f"m.{name}"] = np.zeros(p.shape, np.float32) if m is None else m.asnumpy()
            state[f"v.{name}"] = np.zeros(p.shape, np.float32) if v is None else v.asnumpy()
        return state

    def set_state(self, state: dict) -> None:
        """Restore a state of `get_state`'s form (any framework's: the names are canonical)."""
        wanted = ["step"] + [f"{key}.{name}" for name in self.params for key in "mv"]
        missing = [k for k in wanted if k not in state]
        unexpected = sorted(set(state) - set(wanted))
        wrong = [k for k in wanted[1:] if k in state and np.shape(state[k]) != self.params[k[2:]].shape]
        if missing or unexpected or wrong:
            raise WeightsError(f"optimizer state does not fit the model: missing {missing[:5]} "
                             f"unexpected {unexpected[:5]} misshapen {wrong[:5]}")
        for i, (name, p) in enumerate(self.params.items()):
            m, v = self.optimizer.create_state(i, p.data(self.ctx))
            m[:] = np.asarray(state[f"m.{name}"], np.float32)  # in place: gluon's updater holds these arrays
            v[:] = np.asarray(state[f"v.{name}"], np.float32)
        self.step = int(state["step"])
