"""One worker of tests/gluon/test_distributed.py's KVStore job (started with DMLC_ROLE=worker
beside a scheduler and a server):

    python -m tests.gluon.kv_worker OUT_PREFIX

For each network (both in this one process: they share its kvstore), it builds the Backend from
other weights than the test's reference and restores the reference's (worker 0 before
join_workers, worker 1 after), joins, and on its half of GLOBAL (common.training.distributed.shard: rows 2 rank, 2 rank + 1, weight 1,
half the global attention positions) takes the eval-mode gradients, then STEPS train_steps.
Rank 0 writes OUT_PREFIX.<net>.npz: "g.<name>", "w.<name>", "mean" (mean_over_workers of
[rank + 1, 2]) and "losses" (each step's loss, meaned over the workers). Rank 1 leaves right
after its last step, with its last gradient exchange possibly still queued (what
runtime.kvstore's exit handler is for)."""
from impl_gluon import runtime  # noqa: F401  (before mxnet)

import os
import sys

import numpy as np

from common.training import distributed
from common.contract import spec as S, weights as W
from common.data.batch import random_batch
from impl_gluon.backend import Backend

SPEC = S.get_spec("tiny").replace(dropout=0.0)
GLOBAL = random_batch(SPEC, (20, 16, 12, 8), (64, 51, 38, 25), seed=1)
STEPS = 2


def main(prefix: str) -> None:
    before = os.environ.get(runtime.LOCAL_RANK_ENV) == "0"
    for net in S.NETS:
        backend = Backend(SPEC, net, seed=5)
        if before:
            backend.set_weights(W.init_weights(SPEC, net, 0))
        rank, workers = backend.join_workers()
        assert workers == 2 and backend.join_workers() == (rank, workers)
        if not before:
            backend.set_weights(W.init_weights(SPEC, net, 0))
        mean = backend.mean_over_workers(np.array([rank + 1.0, 2.0], np.float32))
        batch = distributed.shard(GLOBAL, rank, workers)
        _, grads = backend.gradients(batch)
        losses = [backend.mean_over_workers(np.array([backend.train_step(batch)["loss"]], np.float32))[0]
                  for _ in range(STEPS)]
        if rank == 0:
            np.savez(f"{prefix}.{net}.npz", mean=mean, losses=np.array(losses),
                     **{f"g.{k}": v for k, v in grads.items()}, **{f"w.{k}": v for k, v in backend.get_weights().items()})


if __name__ == "__main__":
    main(sys.argv[1])
