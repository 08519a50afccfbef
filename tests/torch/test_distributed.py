"""impl_torch's data parallelism (torch.distributed + DistributedDataParallel, gloo on the CPU):
two workers under torchrun against one process in each tier of operators (DDP wraps the stock
model as it does the tuned one), both orders of restore and join, and what a
worker does when its peer dies or hangs (the engine's own behaviour, without torchrun's agent
or common.training.distributed's watchdog). The framework-neutral job tests are tests/distributed."""
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from common.contract.compare import global_relative_error
from common.training import distributed
from common.framework import OPS
from common.contract.spec import NETS
from impl_torch import runtime
from impl_torch.backend import Backend
from tests.torch.ddp_worker import GLOBAL, SPEC, checkpoint, restore

ROOT = Path(__file__).resolve().parents[2]
EXACT = 1e-5  # two workers vs one process on the global batch: only the order of float sums differs


def worker_command(out: Path, *extra) -> list:
    return [sys.executable, "-m", "tests.torch.ddp_worker", str(out), *extra]


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """The outputs of both ranks of one 2-worker torchrun job (2 steps of each network in each tier)."""
    out = tmp_path_factory.mktemp("ddp")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "--module"] + worker_command(out)[2:]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return [dict(np.load(out / f"rank-{r}.npz")) for r in range(2)]


def part(out: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in out.items() if k.startswith(prefix)}


def restored(net: str, ops: str) -> Backend:
    backend = Backend(SPEC, net, seed=0, ops=ops)
    restore(backend, checkpoint(net, ops))
    return backend


def mean_of_halves_steps(net: str, ops: str, steps: int) -> dict:
    """One process doing what the two workers should: each step, the mean of the two halves'
    gradients, then train_step's clip and Adam (Trainer._update)."""
    backend = restored(net, ops)
    trainer, halves = backend.trainer, [distributed.shard(GLOBAL, r, 2) for r in range(2)]
    for _ in range(steps):
        backend.model.train()
        grads = []
        for h in halves:
            trainer._backward(h)
            grads.append([p.grad.clone() for p in trainer.params.values()])
        for p, g0, g1 in zip(trainer.params.values(), *grads):
            p.grad = (g0 + g1) / 2
        trainer._update()
    return backend.get_weights()


@pytest.mark.parametrize("ops", OPS)
@pytest.mark.parametrize("net", NETS)
def test_two_workers_average_gradients_like_one_process(job, net, ops):
    """The averaged gradients equal the global batch's within EXACT and the workers' mean of
    the halves' bit for bit; after 2 steps every rank holds the weights of one process that
    averages the halves' gradients, bit for bit. (Against one process stepping on the global
    batch the weights agree only to ~1e-5..1e-4: Adam's m / sqrt(v) magnifies the reordered
    sums of near-zero gradients; the same one process with the batch's rows permuted differs
    as much.) mean_over_workers([rank + 1, 2]) is [1.5, 2] on both ranks."""
    key = f"{ops}.{net}"
    for out in job:
        assert int(out[f"{key}.workers"]) == 2 and out[f"{key}.device"] == "cpu"
        np.testing.assert_array_equal(out[f"{key}.mean"], np.array([1.5, 2.0], np.float32))
    one = restored(net, ops)
    losses, grads = one.gradients(GLOBAL)
    (_, g0), (_, g1) = (restored(net, ops).gradients(distributed.shard(GLOBAL, r, 2)) for r in range(2))
    two = part(job[0], f"{key}.g.")
    assert global_relative_error(grads, two) <= EXACT, global_relative_error(grads, two)
    assert all(np.array_equal(two[k], (g0[k] + g1[k]) / 2) for k in two)
    mean_losses = (job[0][f"{key}.losses"][0] + job[1][f"{key}.losses"][0]) / 2
    np.testing.assert_allclose(mean_losses, list(losses.values()), rtol=EXACT)
    reference = mean_of_halves_steps(net, ops, 2)
    for out in job:
        w = part(out, f"{key}.w.")
        assert w.keys() == reference.keys() and all(np.array_equal(w[k], reference[k]) for k in w)


def test_mean_over_workers_before_joining_is_the_values():
    values = np.array([1.0, -2.5], np.float32)
    np.testing.assert_array_equal(Backend(SPEC, "ssrn").mean_over_workers(values), values)


def test_joining_outside_a_job_says_how_to_launch(monkeypatch):
    for name in runtime.WORKER_ENV:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match="torchrun"):
        Backend(SPEC, "ssrn").join_workers()
    assert not torch.distributed.is_initialized()


def test_timeout_and_device_choice(monkeypatch):
    assert runtime.dist_timeout({}) == runtime.DIST_TIMEOUT_S
    assert runtime.dist_timeout({runtime.DIST_TIMEOUT_ENV: "7.5"}) == 7.5
    for bad in ("soon", "0"):
        with pytest.raises(ValueError, match=runtime.DIST_TIMEOUT_ENV):
            runtime.dist_timeout({runtime.DIST_TIMEOUT_ENV: bad})
    assert runtime.worker_device(torch.device("cpu"), {"LOCAL_RANK": "1"}) == torch.device("cpu")
    monkeypatch.setattr(runtime, "resolve_device", torch.device)  # no GPU needed to check the choice
    assert runtime.worker_device(torch.device("cuda"), {"LOCAL_RANK": "1"}) == torch.device("cuda:1")
    assert runtime.worker_device(torch.device("cuda:0"), {"LOCAL_RANK": "1"}) == torch.device("cuda:0")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("how, timeout, message", [
    ("die", 300, r"Connection (closed|reset) by peer"),  # gloo notices the closed socket at once
    ("hang", 10, r"Timed out"),  # a peer alive but stuck: the engine's timeout (DCTTS_DIST_TIMEOUT)
])
def test_a_worker_whose_peer_dies_or_hangs_fails_instead_of_waiting(tmp_path, how, timeout, message):
    """Two workers started by hand with torchrun's variables (no agent that would stop the
    survivor): rank 1 kills or stops itself before Text2Mel's step 3; rank 0 must end with an error."""
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": "2",
           "OMP_NUM_THREADS": "1", runtime.DIST_TIMEOUT_ENV: str(timeout)}
    procs = [subprocess.Popen(worker_command(tmp_path, "--steps", "1000", f"--{how}-at", "3"), cwd=ROOT,
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for r in range(2)]
    try:
        _, err = procs[0].communicate(timeout=120)
        assert procs[0].returncode == 1 and "RuntimeError" in err, err[-3000:]
        assert any(line for line in err.splitlines() if re.search(message, line)), err[-3000:]
        if how == "die":
            assert procs[1].wait(timeout=10) == -signal.SIGKILL
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.communicate()
