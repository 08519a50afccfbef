"""The PyTorch Backend: what common/ (training loop, checkpoints, CLI, benchmarks) drives."""
from __future__ import annotations

from impl_torch import runtime

import numpy as np
import torch

from common import framework
from common.data.batch import Batch
from common.contract.spec import Spec
from common.contract.weights import init_weights
from impl_torch import synthesize as synth, weights
from impl_torch.ssrn import SSRN
from impl_torch.text2mel import Text2Mel
from impl_torch.train import Trainer, to_device

NETWORKS = {"text2mel": Text2Mel, "ssrn": SSRN}


class Backend(framework.Backend):
    framework = "torch"

    def __init__(self, spec: Spec, net: str, device: str = "cpu", seed: int = 0, ops: str = "tuned"):
        if net not in NETWORKS:
            raise ValueError(f"unknown network {net!r}; choose one of {tuple(NETWORKS)}")
        super().__init__(spec, net, device, seed, ops)
        self.torch_device = runtime.resolve_device(device)
        self.model = NETWORKS[net](spec, ops).to(self.torch_device)
        weights.set_weights(self.model, init_weights(spec, net, seed))
        self.trainer = Trainer(self.model, spec, net, self.torch_device, ops)
        self.rank, self.workers = 0, 1  # of the data-parallel job joined (join_workers)

    def get_weights(self) -> dict:
        return weights.get_weights(self.model)

    def set_weights(self, w: dict) -> None:
        weights.set_weights(self.model, w)

    def seed(self, seed: int) -> None:
        torch.manual_seed(seed)  # dropout draws from the global generator (CPU and every GPU)

    def forward(self, batch: Batch) -> dict:
        self.model.eval()
        t = to_device(batch, self.torch_device, self.net, self.ops)
        with torch.inference_mode():
            if self.net == "ssrn":
                return {"logits": self.model(t["mel"]).cpu().numpy()}
            logits, attention = self.model(t["text"], t["mel"])
            return {"logits": logits.cpu().numpy(), "attention": attention.cpu().numpy()}

    def decode(self, texts: list, max_frames: int, block: int):
        if self.net != "text2mel":
            return super().decode(texts, max_frames, block)
        return synth.decode(self.model, texts, max_frames, block)

    def upsample(self, mel: np.ndarray) -> np.ndarray:
        if self.net != "ssrn":
            return super().upsample(mel)
        return synth.upsample(self.model, mel)

    def join_workers(self) -> tuple:
        """torch.distributed (gloo on the CPU, nccl on GPUs) + DistributedDataParallel; a worker
        made with an unnumbered "cuda" moves to cuda:<LOCAL_RANK> first."""
        device = runtime.worker_device(self.torch_device)
        rank, workers = runtime.join_process_group(device)
        if device != self.torch_device:
            self.trainer.move_to(device)
            self.torch_device, self.device = device, str(device)
        self.trainer.join()
        self.rank, self.workers = rank, workers
        return rank, workers

    def mean_over_workers(self, values: np.ndarray) -> np.ndarray:
        if self.workers == 1:
            return super().mean_over_workers(values)
        return runtime.mean_over_workers(values, self.torch_device)

    def sync(self) -> None:
        if self.torch_device.type == "cuda":
            torch.cuda.synchronize(self.torch_device)
