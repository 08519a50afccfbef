"""One process of a test job (or a single process when started alone):

    python -m tests.distributed.worker FRAMEWORK NET STEPS OUT.npz [--gradients] [--die-at K | --hang-at K]

trains NET for STEPS steps on the global batches BATCHES (cycled), each worker on its
common.training.distributed shard, and rank 0 writes OUT.npz: the weights ("w.<name>"), the loss of
every step (mean over the workers), the initial weights ("w0.<name>"), those after the first
step ("w1.<name>") and, with --gradients, the eval-mode gradients on
BATCHES[0] before any step ("g.<name>"). --die-at / --hang-at: rank 1 kills itself
(SIGKILL) or sleeps forever before step K, as a crash or a hang would."""
import argparse
import os
import signal
import time

import numpy as np

from common.training import distributed
from common.data.batch import random_batch
from common.framework import configure_threads, load_backend
from common.contract.spec import get_spec

# The cross-framework parity suite's training case (tests/parity/test_training.py): the tiny
# network, dropout off, the community recipe's warm-up learning rate; 4-utterance global batches.
COMMUNITY = get_spec("community")
SPEC = get_spec("tiny").replace(dropout=0.0, lr=COMMUNITY.lr, warmup=COMMUNITY.warmup)
BATCHES = [random_batch(SPEC, (20, 14, 17, 9), [t * SPEC.r for t in (16, 12, 14, 8)], seed=i)
           for i in range(4)]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("framework")
    p.add_argument("net")
    p.add_argument("steps", type=int)
    p.add_argument("out")
    p.add_argument("--gradients", action="store_true")
    p.add_argument("--die-at", type=int)
    p.add_argument("--hang-at", type=int)
    args = p.parse_args()
    configure_threads(args.framework, 1)
    backend = load_backend(args.framework)(SPEC, args.net, seed=0)
    rank, workers = backend.join_workers() if distributed.declared_workers(args.framework) > 1 else (0, 1)
    with distributed.Heartbeat(rank) as heartbeat:
        # as the training loop's workers do, a stop request (the engine's launcher ending the job
        # after a peer died) marks this rank "signalled", so that the watchdog does not blame it
        def leave(signum, frame):
            heartbeat.signalled()
            os._exit(128 + signum)

        signal.signal(signal.SIGTERM, leave)
        train(args, backend, rank, workers, heartbeat)


def train(args, backend, rank: int, workers: int, heartbeat) -> None:
    out = {f"w0.{k}": v for k, v in backend.get_weights().items()}
    if args.gradients:
        _, grads = backend.gradients(distributed.shard(BATCHES[0], rank, workers))
        out.update({f"g.{k}": v for k, v in grads.items()})
    curve = []
    for step in range(1, args.steps + 1):
        if rank == 1 and step == args.die_at:
            os.kill(os.getpid(), signal.SIGKILL)
        if rank == 1 and step == args.hang_at:
            time.sleep(3600)
        losses = backend.train_step(distributed.shard(BATCHES[(step - 1) % len(BATCHES)], rank, workers))
        curve.append(float(backend.mean_over_workers(np.array([losses["loss"]], np.float32))[0]))
        heartbeat.beat(step)
        if step == 1:
            out.update({f"w1.{k}": v for k, v in backend.get_weights().items()})
    if rank == 0:
        out.update({f"w.{k}": v for k, v in backend.get_weights().items()}, curve=np.array(curve))
        np.savez(args.out, **out)


if __name__ == "__main__":
    main()
