"""The MXNet environment, imported first by every module of impl_gluon.

MXNet 1.9.1 is the last (retired) release; every workaround for its age lives here.
This module must not import mxnet itself: the thread count has to be fixed before
the first `import mxnet`, and `configure_threads` is how callers do that.
"""
from __future__ import annotations

import os
import re
import sys

import numpy as np
from threadpoolctl import threadpool_limits

# mxnet 1.9.1 still uses the `np.bool` alias that numpy 1.24 removed (numpy is pinned to
# 1.23.5 in constraints.txt; this guard keeps an accidental upgrade from breaking import).
if not hasattr(np, "bool"):
    np.bool = bool

# MKLDNN keeps compiled kernels per layer and input shape in caches that are unbounded by
# default; with variable-length batches memory grows with every new shape (measured: +1.5 MB
# per new batch shape in a `small` Text2Mel training step, +160 MB over 100 shapes, vs flat with
# this bound). Recompiling evicted kernels cost ~17 ms a step for recurring shapes there; at
# `paper`, batch 4, cycling 2 batches, step times were within noise (1.06 vs 1.04 s). New shapes
# are compiled either way. Set it yourself to override.
os.environ.setdefault("MXNET_MKLDNN_CACHE_NUM", "64")

# Copies of more than MXNET_CPU_PARALLEL_SIZE elements (default 200,000: a batch's magnitudes,
# a large weight on load) run as an OpenMP loop on MXNet's copy thread, which starts a second
# OpenMP team beside the operators' one; its threads then spin on the same cores for the rest of
# the process. Measured (`small`, 2 threads, interleaved): one 250,000-element mx.nd.array made
# every later synthesis frame 24 ms instead of 3 (below the limit: no effect); in the benchmark
# Text2Mel synthesis 0.83-1.0 s -> 0.14-0.17 s a sentence, training steps Text2Mel 220 -> 150 ms,
# SSRN 890 -> 790 ms. Copies are plain memcpy above this limit. Set it yourself to override.
PARALLEL_COPY_LIMIT = str(2 ** 31 - 1)  # read as a C int
os.environ.setdefault("MXNET_CPU_PARALLEL_SIZE", PARALLEL_COPY_LIMIT)

_THREAD_VARS = ("OMP_NUM_THREADS", "MXNET_OMP_MAX_THREADS")


def _default_threads() -> int:
    """DCTTS_THREADS, else an OMP_NUM_THREADS the user set, else every CPU."""
    for var in ("DCTTS_THREADS", "OMP_NUM_THREADS"):
        if os.environ.get(var):
            return int(os.environ[var])
    return os.cpu_count() or 1


def configure_threads(n: int | None = None) -> int:
    """Set MXNet's operator thread count to `n` (None: the default above); returns it.

    MXNet reads OMP_NUM_THREADS once, when it is first imported, and otherwise runs its
    operators on ONE thread (measured: 2.29 s vs 1.12 s for the same work on 2 cores), so
    this must run before the first `import mxnet`. Called again later with the count
    already in force it does nothing; with another count it raises RuntimeError."""
    n = _default_threads() if n is None else int(n)
    if n < 1:
        raise ValueError(f"thread count must be >= 1, got {n}")
    if "mxnet" in sys.modules:
        current = int(os.environ.get("OMP_NUM_THREADS", "0"))
        if current != n:
            raise RuntimeError(f"mxnet was already imported with {current or 'its default'} thread(s); "
                               f"configure_threads({n}) must be called before the first `import mxnet`")
        return n
    for var in _THREAD_VARS:
        os.environ[var] = str(n)
    return n


if "mxnet" not in sys.modules:  # mxnet imported earlier keeps the count it started with
    configure_threads()

def serial_main_thread() -> None:
    """One OpenMP thread for what MXNet computes on the calling (Python) thread, its operators
    keeping theirs (on the engine's threads). Reading an output still in MKLDNN's blocked layout
    (asnumpy of a hybridized network's output) reorders it on the Python thread, which starts a
    second OpenMP team there; its threads then compete with the operators' for the rest of the
    process. Measured (`paper`, 2 threads): one asnumpy of Text2Mel's logits made every later
    synthesis frame 13-18 ms instead of 4-6 (the benchmark's parity gate does exactly that
    before timing synthesis); with this, 5 ms. OpenMP's thread count is per thread, so this
    changes only the caller's (and stays: threadpoolctl restores only when used as a context
    manager). The Backend calls it."""
    import mxnet  # noqa: F401  (its OpenMP runtime must be loaded to be limited)

    threadpool_limits(limits=1, user_api="openmp")


def resolve_device(device: str = "cpu"):
    """"cpu" | "cuda" | "cuda:N" -> mx.cpu() / mx.gpu(N), with a clear error when no GPU build is installed."""
    import mxnet as mx

    match = re.fullmatch(r"cpu|cuda(?::(\d+))?", device)
    if match is None:
        raise ValueError(f"unknown device {device!r}; use 'cpu', 'cuda' or 'cuda:N'")
    if device == "cpu":
        return mx.cpu()
    index = int(match.group(1) or 0)
    n_gpus = mx.context.num_gpus()
    if index >= n_gpus:
        raise RuntimeError(f"device {device!r} asked for, but this mxnet sees {n_gpus} GPU(s) "
                           "(a GPU run needs a CUDA build such as mxnet-cu112==1.9.1)")
    return mx.gpu(index)
