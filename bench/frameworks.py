"""The few measurements that need a framework's own API beyond common.framework.Backend:
thread setup, version, the machine's peak fp32 matmul throughput IN that framework, GPU memory.

A framework missing from the tables below falls back to generic behaviour (NumPy's matmul,
the package named like the framework), so adding a name to common.framework.FRAMEWORKS is
all it takes to benchmark a new implementation."""
from __future__ import annotations

import importlib.metadata
import os
import re
import time

import numpy as np

PACKAGES = {"torch": "torch", "chainer": "chainer", "gluon": "mxnet"}


def version(framework: str):
    try:
        return importlib.metadata.version(PACKAGES.get(framework, framework))
    except importlib.metadata.PackageNotFoundError:
        return None


def gpu_index(device: str):
    """None for "cpu", N for "cuda" (0) or "cuda:N"."""
    match = re.fullmatch(r"cpu|cuda(?::(\d+))?", device)
    if match is None:
        raise ValueError(f"unknown device {device!r}; use 'cpu', 'cuda' or 'cuda:N'")
    return None if device == "cpu" else int(match.group(1) or 0)


def _torch_mm(n, device):
    import torch

    dev = torch.device("cpu" if gpu_index(device) is None else f"cuda:{gpu_index(device)}")
    a, b = torch.rand(n, n, device=dev), torch.rand(n, n, device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    return {"torch.mm": lambda: torch.mm(a, b)}, sync


def _chainer_mm(n, device):
    if gpu_index(device) is None:
        return _numpy_mm(n, device)
    import cupy

    with cupy.cuda.Device(gpu_index(device)):
        a, b = cupy.random.rand(n, n, dtype=cupy.float32), cupy.random.rand(n, n, dtype=cupy.float32)
    return {"cupy.matmul": lambda: cupy.matmul(a, b)}, cupy.cuda.runtime.deviceSynchronize


def _mxnet_mm(n, device):
    import mxnet as mx

    ctx = mx.cpu() if gpu_index(device) is None else mx.gpu(gpu_index(device))
    a, b = mx.nd.random.uniform(shape=(n, n), ctx=ctx), mx.nd.random.uniform(shape=(n, n), ctx=ctx)
    # FullyConnected (a b^T, the same FLOPs) runs on oneDNN, which uses AVX-512 where the BLAS behind dot
    # and gemm2 runs AVX2 kernels (an AMD EPYC with AVX-512, 2026-12-07: 475 against 241-244 GFLOP/s)
    return {"mx.nd.dot": lambda: mx.nd.dot(a, b), "mx.nd.linalg.gemm2": lambda: mx.nd.linalg.gemm2(a, b),
            "mx.nd.FullyConnected": lambda: mx.nd.FullyConnected(a, b, no_bias=True, num_hidden=n)}, mx.nd.waitall


def _numpy_mm(n, device):
    if gpu_index(device) is not None:
        raise RuntimeError(f"no GPU matmul known for this framework on {device!r}")
    rng = np.random.default_rng(0)
    a, b = rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32)
    return {"numpy.matmul": lambda: np.matmul(a, b)}, lambda: None


MATMULS = {"torch": _torch_mm, "chainer": _chainer_mm, "gluon": _mxnet_mm}


def peak_matmul(framework: str, device: str = "cpu", n: int | None = None, repeats: int = 10) -> dict:
    """Best fp32 GFLOP/s of an n x n matrix product in `framework` on `device` (the fastest of
    its gemm entry points, best of `repeats` after one untimed call, synchronized around each).
    n defaults to 2048 on CPU (~0.1-0.5 s a product on a few cores), 8192 on a GPU."""
    n = n or (2048 if gpu_index(device) is None else 8192)
    products, sync = MATMULS.get(framework, _numpy_mm)(n, device)
    best = {}
    for name, product in products.items():
        product()
        sync()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            product()
            sync()
            times.append(time.perf_counter() - start)
        best[name] = 2 * n ** 3 / min(times) / 1e9
    method = max(best, key=best.get)
    return {"gflops": best[method], "method": method, "n": n, "all_gflops": best}


def gpu_memory(framework: str, device: str) -> dict:
    """Device memory at the end of a run ({} on the CPU): "process_mb", this process's memory as
    NVML counts it (CUDA context, every pool and cache included: the same measure for every
    framework; None without nvidia-ml-py or when NVML does not list the process), and the
    framework's own allocator figure, which measures something different in each ("allocator_mb",
    "allocator": torch's max_memory_allocated, tensors only; CuPy's pool, what it ever held;
    MXNet's device total - free, every process included)."""
    index = gpu_index(device)
    if index is None:
        return {}
    out = {"process_mb": nvml_process_mb(index), "allocator_mb": None, "allocator": None}
    if framework == "torch":
        import torch

        out.update(allocator_mb=torch.cuda.max_memory_allocated(index) / 2 ** 20, allocator="torch max_memory_allocated")
    elif framework == "chainer":
        import cupy

        out.update(allocator_mb=cupy.get_default_memory_pool().total_bytes() / 2 ** 20, allocator="cupy pool total")
    elif framework == "gluon":
        import mxnet as mx

        free, total = mx.context.gpu_memory_info(index)
        out.update(allocator_mb=(total - free) / 2 ** 20, allocator="mxnet device used")
    return out


def nvml_process_mb(index: int) -> float | None:
    """This process's memory on GPU `index` by NVML (pynvml, from nvidia-ml-py): the entry with
    our pid, else the only compute process listed (a container may show host pids); None when
    pynvml is missing or the process is not found."""
    try:
        import pynvml
    except ImportError:
        return None
    pynvml.nvmlInit()
    try:
        procs = pynvml.nvmlDeviceGetComputeRunningProcesses(pynvml.nvmlDeviceGetHandleByIndex(index))
    finally:
        pynvml.nvmlShutdown()
    mine = [p for p in procs if p.pid == os.getpid()] or (procs if len(procs) == 1 else [])
    return mine[0].usedGpuMemory / 2 ** 20 if mine and mine[0].usedGpuMemory is not None else None
