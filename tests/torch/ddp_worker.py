"""One worker of tests/torch/test_distributed.py's jobs (torchrun, or two processes started by
hand with torchrun's variables):

    python -m tests.torch.ddp_worker OUT_DIR [--steps N] [--die-at K | --hang-at K]

For each tier of operators (common.framework.OPS) and network (SPEC: tiny, dropout off) the worker
restores CHECKPOINT (Text2Mel before join_workers, SSRN after: both orders must work), checks
mean_over_workers, takes the eval-mode gradients of its half of GLOBAL (common.training.distributed.shard),
then trains `--steps` steps on that half and writes OUT_DIR/rank-<r>.npz (keys "<ops>.<net>....").
--die-at / --hang-at K: rank 1 kills (SIGKILL) or stops (SIGSTOP) itself before step K of the tuned
Text2Mel, as a crash or a hang would."""
import argparse
import os
import signal
import sys
import traceback
from pathlib import Path

import numpy as np

from common.training import distributed
from common.framework import OPS
from common.data.batch import random_batch
from common.contract.spec import NETS, get_spec
from impl_torch.runtime import configure_threads

SPEC = get_spec("tiny").replace(dropout=0.0)
GLOBAL = random_batch(SPEC, (20, 16, 12, 8), (64, 51, 38, 25), seed=1)


def checkpoint(net: str, ops: str) -> tuple:
    """(weights, Adam state) after one step from seed 3 on another batch: what a resumed run restores."""
    from impl_torch.backend import Backend
    backend = Backend(SPEC, net, seed=3, ops=ops)
    backend.train_step(random_batch(SPEC, (20, 16, 12, 8), (64, 51, 38, 25), seed=7))
    return backend.get_weights(), backend.get_optimizer_state()


def restore(backend, saved: tuple) -> None:
    backend.set_weights(saved[0])
    backend.set_optimizer_state(saved[1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out", type=Path)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--die-at", type=int)
    p.add_argument("--hang-at", type=int)
    args = p.parse_args()
    configure_threads(1)
    from impl_torch.backend import Backend

    out = {}
    for ops in OPS:
        for net in NETS:
            key = f"{ops}.{net}"
            backend = Backend(SPEC, net, seed=0, ops=ops)
            saved = checkpoint(net, ops)  # made before any backend of this process joins the job
            if net == "text2mel":
                restore(backend, saved)
            rank, workers = backend.join_workers()
            if net != "text2mel":
                restore(backend, saved)
            out[f"{key}.workers"] = np.array(workers)
            out[f"{key}.mean"] = backend.mean_over_workers(np.array([rank + 1.0, 2.0], np.float32))
            shard = distributed.shard(GLOBAL, rank, workers)
            losses, grads = backend.gradients(shard)
            out.update({f"{key}.g.{k}": v for k, v in grads.items()})
            out[f"{key}.losses"] = np.array([list(losses.values())])
            for step in range(1, args.steps + 1):
                if rank == 1 and step == args.die_at:
                    os.kill(os.getpid(), signal.SIGKILL)
                if rank == 1 and step == args.hang_at:
                    os.kill(os.getpid(), signal.SIGSTOP)
                print(f"rank {rank} {key} step {step}", flush=True)
                out[f"{key}.losses"] = np.concatenate([out[f"{key}.losses"],
                                                       [list(backend.train_step(shard).values())]])
            out.update({f"{key}.w.{k}": v for k, v in backend.get_weights().items()})
            out[f"{key}.device"] = np.array(str(backend.torch_device))
    np.savez(args.out / f"rank-{rank}.npz", **out)


if __name__ == "__main__":
    try:
        main()
    except Exception:  # as common.training.cli's train_main: a failed worker leaves at once; at a normal exit gloo's
        traceback.print_exc()  # thread still waiting on the dead or stopped peer can std::terminate (SIGABRT)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
