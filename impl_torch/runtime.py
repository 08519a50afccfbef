"""The PyTorch environment, imported first by every module of impl_torch: threads and
devices. PyTorch 2.x needs no legacy workarounds (unlike Chainer and MXNet)."""
from __future__ import annotations

import re

import torch


def configure_threads(n: int) -> None:
    """Use `n` CPU threads for intra-op parallelism (BLAS, convolutions)."""
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    torch.set_num_threads(n)


def resolve_device(name: str) -> torch.device:
    """"cpu", "cuda" or "cuda:N" -> torch.device, with a clear error when it is not usable here."""
    if not re.fullmatch(r"cpu|cuda(:\d+)?", name):
        raise ValueError(f"unknown device {name!r}; use 'cpu', 'cuda' or 'cuda:N'")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {name!r} requested but this PyTorch sees no CUDA GPU")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise RuntimeError(f"device {name!r} requested but only {torch.cuda.device_count()} GPU(s) are visible")
        fp32_gpu_numerics()
    return device


def fp32_gpu_numerics() -> None:
    """fp32 means fp32 on a GPU too: PyTorch would otherwise run convolutions (and, by its
    default, nothing else) in TF32 on Ampere and newer, which neither the reference nor the
    other frameworks do. cuDNN's autotuner on, as in the other frameworks (bench/machine.GPU_ENV)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
