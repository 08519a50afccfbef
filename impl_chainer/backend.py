"""The Chainer Backend: what common/ (training loop, checkpoints, CLI, benchmarks) drives, in either
tier of operators (common.framework.OPS): tuned (impl_chainer.conv, impl_chainer.fused, the
written-out Adam) or stock (chainer.functions and chainer.optimizers.Adam only)."""
from __future__ import annotations

from impl_chainer import runtime

import numpy as np

from common import framework
from common.data.batch import Batch
from common.contract.spec import Spec
from common.contract.weights import init_weights
from impl_chainer import synthesize as synth, weights
from impl_chainer.ssrn import SSRN
from impl_chainer.text2mel import Text2Mel
from impl_chainer.train import Trainer, to_device

NETWORKS = {"text2mel": Text2Mel, "ssrn": SSRN}


class Backend(framework.Backend):
    framework = "chainer"

    def __init__(self, spec: Spec, net: str, device: str = "cpu", seed: int = 0, ops: str = "tuned"):
        if net not in NETWORKS:
            raise ValueError(f"unknown network {net!r}; choose one of {tuple(NETWORKS)}")
        super().__init__(spec, net, device, seed, ops)
        self.chainer_device = runtime.resolve_device(device)
        self.model = NETWORKS[net](spec, ops)
        self.model.to_device(self.chainer_device)
        weights.set_weights(self.model, init_weights(spec, net, seed))
        self.trainer = Trainer(self.model, spec, net, self.chainer_device, ops)
        self.communicator = None  # ChainerMN's, once join_workers ran

    def get_weights(self) -> dict:
        return weights.get_weights(self.model)

    def set_weights(self, w: dict) -> None:
        weights.set_weights(self.model, w)

    def seed(self, seed: int) -> None:
        """Dropout masks come from the device's global stream: numpy.random on the CPU,
        cupy.random on a GPU (layers.Block.drop keeps cuDNN's own dropout stream out)."""
        self.chainer_device.xp.random.seed(seed)

    def train_step(self, batch: Batch) -> dict:
        with runtime.unchecked():
            return self.trainer.train_step(batch)

    def gradients(self, batch: Batch) -> tuple:
        with runtime.unchecked():
            return self.trainer.gradients(batch)

    def forward(self, batch: Batch) -> dict:
        a = to_device(batch, self.chainer_device, self.net)
        eval_mode, no_graph = synth.inference()
        with eval_mode, no_graph, runtime.unchecked():
            if self.net == "ssrn":
                return {"logits": runtime.to_numpy(self.model(a["mel"]))}
            logits, attention = self.model(a["text"], a["mel"])
            return {"logits": runtime.to_numpy(logits), "attention": runtime.to_numpy(attention)}

    def decode(self, texts: list, max_frames: int, block: int):
        if self.net != "text2mel":
            return super().decode(texts, max_frames, block)
        return runtime.unchecked_steps(synth.decode(self.model, texts, max_frames, block))

    def upsample(self, mel: np.ndarray) -> np.ndarray:
        if self.net != "ssrn":
            return super().upsample(mel)
        with runtime.unchecked():
            return synth.upsample(self.model, mel)

    def join_workers(self) -> tuple:
        """Join the MPI job this process was started in (mpiexec) through ChainerMN
        (runtime.join_job: communicator "naive" on the CPU, "pure_nccl" on GPUs). A worker made
        with device "cuda" computes on cuda:<its local rank> (runtime.resolve_device read it from
        the launcher's environment; moved here if ChainerMN's intra_rank says otherwise). The
        weights are broadcast from rank 0 (ChainerMN's bcast_data, as its multi-node optimizer
        does before the first update): the workers start equal, and a checkpoint restored on
        every rank before or after this call keeps them equal. From here train_step and
        gradients average the gradients over the workers (Trainer.communicator), in either tier."""
        if self.communicator is None:
            gpu = self.chainer_device.xp is not np
            comm = runtime.join_job(gpu)
            if gpu:
                if self.device == "cuda" and self.chainer_device.device.id != comm.intra_rank:
                    self._move_to(runtime.resolve_device(f"cuda:{comm.intra_rank}"))
                self.chainer_device.use()  # NCCL binds its communicator to the current device
            comm.bcast_data(self.model)
            self.communicator = comm
            self.trainer.join(comm)
        return self.communicator.rank, self.communicator.size

    def mean_over_workers(self, values: np.ndarray) -> np.ndarray:
        if self.communicator is None:
            return super().mean_over_workers(values)
        return runtime.mean_values(self.communicator, values)

    def _move_to(self, device) -> None:
        self.chainer_device = device
        self.model.to_device(device)
        self.trainer.move_to(device)

    def sync(self) -> None:
        if self.chainer_device.xp is not np:  # CuPy queues work; NumPy is done on return
            self.chainer_device.device.synchronize()
