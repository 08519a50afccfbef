"""The Gluon Backend that common/ (training loop, checkpoints, CLI, benchmarks) drives."""
from __future__ import annotations

from impl_gluon import runtime  # must precede the first mxnet import

import mxnet as mx
import numpy as np

from common import framework
from common.contract import weights as W
from common.data.batch import Batch
from common.contract.spec import Spec
from impl_gluon import synthesize as syn
from impl_gluon.ssrn import SSRN
from impl_gluon.text2mel import Text2Mel
from impl_gluon.train import Trainer, to_device
from impl_gluon.weights import get_weights, set_weights

NETWORKS = {"text2mel": Text2Mel, "ssrn": SSRN}


class Backend(framework.Backend):
    """`hybridize` (default on) compiles Text2Mel / SSRN into one cached graph each, and the
    training step (network + losses, impl_gluon.train.Objective) into another; static_alloc
    reuses their memory between calls, static_shape stays off as lengths vary. Stock
    (ops="stock") hybridizes the network alone, the usual Gluon practice (its losses are
    imperative: impl_gluon.train.Trainer)."""

    framework = "gluon"

    def __init__(self, spec: Spec, net: str, device: str = "cpu", seed: int = 0, ops: str = "tuned",
                 hybridize: bool = True):
        if net not in NETWORKS:
            raise ValueError(f"unknown network {net!r}; choose one of {tuple(NETWORKS)}")
        super().__init__(spec, net, device, seed, ops)
        self.ctx = runtime.resolve_device(device)
        runtime.serial_main_thread()
        self.model = NETWORKS[net](spec, ops)
        self.model.initialize(ctx=self.ctx)
        set_weights(self.model, W.init_weights(spec, net, seed))
        self.trainer = Trainer(self.model, spec, net, self.ctx, ops)
        if hybridize and ops == "stock":  # the network alone
            self.model.hybridize(static_alloc=True, static_shape=False)
        elif hybridize:  # the training graph (network + losses) and, as its child, the network alone
            self.trainer.objective.hybridize(static_alloc=True, static_shape=False)
        self.seed(seed)

    # --- weights and optimizer state ---------------------------------------------
    def get_weights(self) -> dict:
        return get_weights(self.model)

    def set_weights(self, weights: dict) -> None:
        set_weights(self.model, weights)

    def seed(self, seed: int) -> None:
        """Dropout masks come from MXNet's own generators (every device), seeded here."""
        mx.random.seed(seed)

    # --- compute -------------------------------------------------------------------
    def forward(self, batch: Batch) -> dict:
        a = to_device(batch, self.ctx, self.net)
        if self.net == "text2mel":
            logits, attention = self.model(a["text"], a["mel"])
            return {"logits": logits.asnumpy(), "attention": attention.asnumpy()}
        return {"logits": self.model(a["mel"]).asnumpy()}

    def decode(self, texts: list, max_frames: int, block: int):
        if self.net != "text2mel":
            return super().decode(texts, max_frames, block)
        return syn.decode(self.model, texts, max_frames, block)

    def upsample(self, mel: np.ndarray) -> np.ndarray:
        if self.net != "ssrn":
            return super().upsample(mel)
        return syn.upsample(self.model, mel)

    def sync(self) -> None:
        """MXNet's engine is asynchronous: wait for every queued operation."""
        mx.nd.waitall()

    # --- data-parallel training: KVStore "dist_sync" (impl_gluon.runtime) ----------------
    def join_workers(self) -> tuple:
        """Joins the process's "dist_sync" KVStore job (created once per process, shared by its
        Backends) and exchanges this network's gradients through it from now on (Trainer.join).
        Rank: the scheduler's (kv.rank). Calling it again changes nothing. The tuned tier only:
        stock's gluon.Trainer would need a kvstore of its own for the job (RuntimeError)."""
        if self.ops != "tuned":
            raise RuntimeError("data-parallel training runs the tuned tier (ops='tuned'); "
                               f"this gluon Backend runs ops={self.ops!r}")
        if self.trainer.kvstore is None:
            kv = runtime.kvstore()
            self.trainer.join(kv, runtime.keys_for(len(self.trainer.params)))
        kv = self.trainer.kvstore
        return kv.rank, kv.num_workers

    def mean_over_workers(self, values: np.ndarray) -> np.ndarray:
        """Through the joined KVStore (runtime.length_key: one key per length), pushed and
        pulled: the servers' sum / workers."""
        values = np.asarray(values, np.float32)
        if self.trainer.kvstore is None:
            return super().mean_over_workers(values)
        kv, workers = self.trainer.kvstore, self.trainer.workers
        if values.ndim != 1:
            raise ValueError(f"mean_over_workers takes a 1-D array, got shape {values.shape}")
        if values.size == 0:
            return values
        key = runtime.length_key(values.size)
        buffer = mx.nd.array(values, dtype="float32")  # on the CPU, whatever the device
        kv.pushpull(key, buffer, out=buffer)
        return buffer.asnumpy() / np.float32(workers)
