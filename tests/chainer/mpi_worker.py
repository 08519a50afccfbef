"""One process of the ChainerMN test jobs of tests/chainer/test_distributed.py, started by
`mpiexec -n 2 python -m tests.chainer.mpi_worker MODE OUT_DIR`:

    parity  for each network, two Backends (seed 0) restore the same checkpoint (the weights of
            seed 5 and an Adam state at step 6), one before join_workers and one after; rank r
            takes half r of GLOBAL (common.training.distributed.shard); writes OUT_DIR/rank-<r>.npz:
            mean_over_workers([r + 1, 2]), the eval-mode gradients on its half (the workers' mean), then one train_step on its
            half and both Backends' weights and Adam state
    raise | exit | kill
            trains Text2Mel on its half; before step 3 rank 1 raises, calls sys.exit(1), or
            SIGKILLs itself, while rank 0 goes on into the step's all-reduce
"""
import os
import signal
import sys

from impl_chainer import runtime

import numpy as np

from common.training import distributed
from common.data.batch import random_batch
from common.contract.spec import NETS, get_spec
from common.contract.weights import init_weights
from impl_chainer.backend import Backend

SPEC = get_spec("tiny").replace(dropout=0.0)  # no dropout: the halves' gradients do not depend on the rank's stream
GLOBAL = random_batch(SPEC, (20, 16, 12, 8), (64, 51, 38, 25), seed=1)


def checkpoint(net: str) -> tuple:
    """(weights, Adam state) that differ from a fresh Backend's: what a restored run starts from."""
    weights = init_weights(SPEC, net, 5)
    rng = np.random.default_rng(3)
    state = {"step": np.array(6, np.int64)}
    for name, w in weights.items():
        state[f"m.{name}"] = rng.normal(0, 1e-3, w.shape).astype(np.float32)
        state[f"v.{name}"] = rng.uniform(0, 1e-6, w.shape).astype(np.float32)
    return weights, state


def parity(out_dir: str) -> None:
    out = {}
    for net in NETS:
        weights, state = checkpoint(net)
        before = Backend(SPEC, net, seed=0)
        before.set_weights(weights)
        before.set_optimizer_state(state)
        rank, workers = before.join_workers()
        after = Backend(SPEC, net, seed=0)
        assert after.join_workers() == (rank, workers) == (rank, 2)
        after.set_weights(weights)
        after.set_optimizer_state(state)
        shard = distributed.shard(GLOBAL, rank, 2)
        out["mean"] = after.mean_over_workers(np.array([rank + 1.0, 2.0], np.float32))
        losses, grads = after.gradients(shard)
        out.update({f"{net}.g.{k}": v for k, v in grads.items()})
        out.update({f"{net}.loss.{k}": np.float64(v) for k, v in losses.items()})
        for name, backend in (("before", before), ("after", after)):
            backend.train_step(shard)
            out.update({f"{net}.{name}.w.{k}": v for k, v in backend.get_weights().items()})
            out.update({f"{net}.{name}.s.{k}": v for k, v in backend.get_optimizer_state().items()})
    np.savez(os.path.join(out_dir, f"rank-{rank}.npz"), **out)


def fail(how: str) -> None:
    backend = Backend(SPEC, "text2mel", seed=0)
    rank, _ = backend.join_workers()
    shard = distributed.shard(GLOBAL, rank, 2)
    for step in range(1, 1000):
        if rank == 1 and step == 3:
            print(f"rank 1: {how} before step {step}", flush=True)
            if how == "raise":
                raise RuntimeError("rank 1 fails on purpose")
            if how == "exit":
                sys.exit(1)
            os.kill(os.getpid(), signal.SIGKILL)
        backend.train_step(shard)
    print(f"rank {rank}: all steps done (a peer's failure went unnoticed)", flush=True)


if __name__ == "__main__":
    runtime.configure_threads(1)
    mode, folder = sys.argv[1:3]
    parity(folder) if mode == "parity" else fail(mode)
