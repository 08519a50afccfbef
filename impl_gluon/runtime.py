"""The MXNet environment, imported first by every module of impl_gluon.

MXNet 1.9.1 is the last (retired) release; every workaround for its age lives here.
This module must not import mxnet itself: the thread count has to be fixed before
the first `import mxnet`, and `configure_threads` is how callers do that.
"""
from __future__ import annotations

import atexit
import os
import re
import sys

import numpy as np
from threadpoolctl import threadpool_limits

from common.training import distributed

# mxnet 1.9.1 still uses the `np.bool` alias that numpy 1.24 removed (numpy is pinned to
# 1.23.5 in constraints.txt; this guard keeps an accidental upgrade from breaking import).
if not hasattr(np, "bool"):
    np.bool = bool

# MKLDNN keeps compiled kernels per layer and input shape in caches that are unbounded by
# default; with variable-length batches memory grows with every new shape. Bounded here, at the
# price of recompiling evicted kernels when their shape recurs (measurements:
# results/implementation-notes.md, "gluon: MKLDNN's kernel cache"). Set it yourself to override.
os.environ.setdefault("MXNET_MKLDNN_CACHE_NUM", "64")

# Copies of more than MXNET_CPU_PARALLEL_SIZE elements (default 200,000: a batch's magnitudes,
# a large weight on load) run as an OpenMP loop on MXNet's copy thread, which starts a second
# OpenMP team beside the operators' one; its threads then spin on the same cores for the rest of
# the process, slowing every later synthesis frame and training step (measurements:
# results/implementation-notes.md, "gluon: MXNet's parallel copies"). Copies are plain memcpy
# above this limit. Set it yourself to override.
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
    operators on ONE thread (about half the speed on 2 cores: results/implementation-notes.md,
    "gluon: the thread count"), so this must run before the first `import mxnet`. Called again
    later with the count already in force it does nothing; with another count it raises
    RuntimeError."""
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
    process, slowing every later synthesis frame (the benchmark's parity gate reads such an
    output before timing synthesis; measurements: results/implementation-notes.md, "gluon: OpenMP
    on the Python thread"). OpenMP's thread count is per thread, so this changes only the
    caller's (and stays: threadpoolctl restores only when used as a context manager). The
    Backend calls it."""
    import mxnet  # noqa: F401  (its OpenMP runtime must be loaded to be limited)

    threadpool_limits(limits=1, user_api="openmp")


def resolve_device(device: str = "cpu"):
    """"cpu" | "cuda" | "cuda:N" -> mx.cpu() / mx.gpu(N), with a clear error when no GPU build is installed.
    "cuda" in a worker of a data-parallel job: the GPU of its local rank (DCTTS_LOCAL_RANK)."""
    import mxnet as mx

    match = re.fullmatch(r"cpu|cuda(?::(\d+))?", device)
    if match is None:
        raise ValueError(f"unknown device {device!r}; use 'cpu', 'cuda' or 'cuda:N'")
    if device == "cpu":
        return mx.cpu()
    default = int(os.environ.get(LOCAL_RANK_ENV) or 0) if is_worker() else 0
    index = int(match.group(1) or default)
    n_gpus = mx.context.num_gpus()
    if index >= n_gpus:
        raise RuntimeError(f"device {device!r} asked for, but this mxnet sees {n_gpus} GPU(s) "
                           "(a GPU run needs a CUDA build such as mxnet-cu112==1.9.1)")
    return mx.gpu(index)


# --- data-parallel training: KVStore "dist_sync" (ps-lite, compiled into the mxnet wheel) -----------
# A job is one scheduler, server(s) and workers, all started with the same environment but their
# own DMLC_ROLE (scheduler | server | worker); see DIST_ENV. `import mxnet` in a scheduler or
# server process runs that role until the job ends and exits there (mxnet/kvstore/kvstore_server.py),
# so their command is `python -c "import impl_gluon.runtime, mxnet"` (this module first: it fixes
# the thread count). What the engine does (sums, keys, one kvstore a process, no timeout, the exit
# barrier, PORT), measured with mxnet 1.9.1: results/implementation-notes.md, "gluon: KVStore
# dist_sync". PORT is dropped in servers and workers so that nodes pick free ports.
if os.environ.get("DMLC_ROLE") in ("server", "worker"):
    os.environ.pop("PORT", None)
DIST_ENV = ("DMLC_ROLE", "DMLC_PS_ROOT_URI", "DMLC_PS_ROOT_PORT", "DMLC_NUM_SERVER", "DMLC_NUM_WORKER")
LOCAL_RANK_ENV = distributed.LOCAL_RANK  # set by common.training.distributed's MXNet launcher, per worker
_kvstore = None
_next_key = 0


def is_worker() -> bool:
    """Whether this process was started as a worker of a KVStore job (DMLC_ROLE=worker)."""
    return os.environ.get("DMLC_ROLE") == "worker"


def kvstore():
    """This process's "dist_sync" KVStore, created (joining the job) on first use."""
    global _kvstore
    if _kvstore is None:
        missing = [var for var in DIST_ENV if not os.environ.get(var)]
        if missing or not is_worker():
            raise RuntimeError(
                "not a worker of an MXNet KVStore job: join_workers needs DMLC_ROLE=worker and "
                f"{', '.join(DIST_ENV[1:])} (missing: {', '.join(missing) or 'none'}; DMLC_ROLE="
                f"{os.environ.get('DMLC_ROLE')!r}); start the job with `dctts-train --workers N`")
        import mxnet as mx

        _kvstore = mx.kv.create("dist_sync")
        # Before mxnet's own exit handler (atexit runs the last registered first): that one shuts
        # the engine down with queued operations never run, a last gradient push among them;
        # the other workers would then wait for it forever (measured, 1 run in 2 without this:
        # rank 1 left right after its last step, rank 0 never got its weights, both hung).
        atexit.register(mx.nd.waitall)
    return _kvstore


def keys_for(n: int) -> range:
    """n fresh kvstore keys (every worker asks for the same counts in the same order)."""
    global _next_key
    keys = range(_next_key, _next_key + n)
    _next_key += n
    return keys


_length_keys = {}


def length_key(n: int) -> int:
    """The kvstore key for exchanging n floats (mean_over_workers), initialized on first use
    (collective: every worker reaches its first use of each length at the same call)."""
    if n not in _length_keys:
        import mxnet as mx

        key = keys_for(1)[0]
        kvstore().init(key, mx.nd.zeros((n,), dtype="float32"))
        _length_keys[n] = key
    return _length_keys[n]
