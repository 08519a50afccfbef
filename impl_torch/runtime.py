"""The PyTorch environment, imported first by every module of impl_torch: threads, devices and
the data-parallel engine (torch.distributed, as torchrun starts it). PyTorch 2.x needs no legacy
workarounds (unlike Chainer and MXNet)."""
from __future__ import annotations

import atexit
import datetime
import os
import re

import numpy as np
import torch

from common.training import distributed
import torch.distributed as dist

# The engine's own timeout for a collective (gloo: every all-reduce; nccl: its watchdog aborts the
# process): a worker whose peer hangs fails after it instead of waiting forever. A peer that dies
# closes its sockets, which gloo notices at once; torchrun then stops the job. Longer than the
# watchdog of common.training.distributed.launch (600 s by default), whose message names the rank, so that
# one speaks first; DCTTS_DIST_TIMEOUT (seconds) overrides it.
DIST_TIMEOUT_ENV = distributed.ENGINE_TIMEOUT  # what common.training.distributed.launch sets
DIST_TIMEOUT_S = 1200.0
# torchrun's variables for one worker (torch.distributed.run sets them all; so can a launcher by hand)
WORKER_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


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


# --- data parallel: torch.distributed ------------------------------------------------------
def dist_timeout(environ=os.environ) -> float:
    """Seconds a collective may wait for the other workers (DIST_TIMEOUT_ENV, else DIST_TIMEOUT_S)."""
    value = environ.get(DIST_TIMEOUT_ENV)
    try:
        seconds = float(value) if value else DIST_TIMEOUT_S
    except ValueError:
        raise ValueError(f"{DIST_TIMEOUT_ENV}={value!r} is not a number of seconds") from None
    if not seconds > 0:
        raise ValueError(f"{DIST_TIMEOUT_ENV} must be > 0 seconds, got {value!r}")
    return seconds


def worker_device(device: torch.device, environ=os.environ) -> torch.device:
    """The device of this worker: an unnumbered "cuda" becomes cuda:<LOCAL_RANK> (one GPU per
    worker on a machine); an explicit cuda:N and the CPU stay as they are."""
    if device.type == "cuda" and device.index is None:
        return resolve_device(f"cuda:{int(environ.get('LOCAL_RANK', 0))}")
    return device


def join_process_group(device: torch.device, environ=os.environ) -> tuple:
    """Join the job torchrun started this process in (its env:// variables), once per process:
    gloo for a CPU worker, nccl for a GPU one, with dist_timeout(). Returns (rank, workers)."""
    if not dist.is_initialized():
        missing = [name for name in WORKER_ENV if not environ.get(name)]
        if missing:
            raise RuntimeError(f"this process was not started as a worker of a torch.distributed job (no "
                               f"{', '.join(missing)} in its environment): launch it with torchrun "
                               f"(python -m torch.distributed.run --nproc-per-node N ...) or dctts-train --workers N")
        if device.type == "cuda":
            torch.cuda.set_device(device)  # nccl's communicator lives on the current device
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method="env://",
                                timeout=datetime.timedelta(seconds=dist_timeout(environ)))
        atexit.register(leave_process_group)
    elif device.type == "cuda" and dist.get_backend() != "nccl":
        raise RuntimeError(f"this process already joined its job with {dist.get_backend()}, which cannot "
                           f"average the gradients of a model on {device}")
    return dist.get_rank(), dist.get_world_size()


def leave_process_group() -> None:
    """Close this process's side of the job in order when it exits (nccl warns of a process group
    never destroyed); a no-op when there is none."""
    if dist.is_initialized():
        dist.destroy_process_group()


def mean_over_workers(values: np.ndarray, device: torch.device) -> np.ndarray:
    """Element-wise mean over the workers of a 1-D float32 array: one all-reduce (a sum: gloo has
    no average) on `device` (nccl wants GPU tensors), divided by the number of workers."""
    t = torch.tensor(np.asarray(values, np.float32), device=device)  # a copy: all_reduce works in place
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return t.cpu().numpy()
