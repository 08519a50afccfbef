"""impl_gluon's data-parallel side: the losses honor Batch.weight and Batch.real_positions, and a
real KVStore "dist_sync" job (a scheduler, a server and two workers on this machine, started
the raw way, by DMLC_* variables) averages the gradients: what two workers compute equals one
process's replay of the same arithmetic bit for bit, and one process on the global batch within
float round-off, whatever the order of a restore and join_workers. tests/distributed covers the
framework-neutral side (training loop, launcher, watchdog) for all three frameworks."""
from impl_gluon import runtime  # noqa: F401  (must precede the first mxnet import)

import dataclasses
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest

from common.training import distributed
from common.contract import losses as L, spec as S
from impl_gluon.backend import Backend
from tests.gluon import kv_worker
from tests.backend_contract import random_batch

ROOT = Path(__file__).resolve().parents[2]
MODES = pytest.mark.parametrize("hybridize", [False, True], ids=["imperative", "hybridized"])


@MODES
@pytest.mark.parametrize("net", S.NETS)
def test_losses_honor_batch_weight_and_attention_positions(net, hybridize):
    """A shard's losses: l1 and bin times batch.weight, the attention loss over real_positions,
    as common.contract.losses computes them; a weight-0 stand-in row leaves only the attention loss's
    gradients (in Text2Mel's encoders; none at all in SSRN)."""
    spec = S.get_spec("tiny")
    batch = dataclasses.replace(random_batch(spec, 3, seed=1), weight=0.375, real_positions=123.5)
    backend = Backend(spec, net, hybridize=hybridize)
    out = backend.forward(batch)
    expected = (L.text2mel_losses(out["logits"], out["attention"], batch) if net == "text2mel"
                else L.ssrn_losses(out["logits"], batch))
    got, _ = backend.gradients(batch)
    for k in expected:
        np.testing.assert_allclose(got[k], expected[k], rtol=1e-5, err_msg=k)
    got, grads = backend.gradients(dataclasses.replace(batch, weight=0.0))
    assert got["l1"] == got["bin"] == 0.0
    for name, g in grads.items():
        assert (np.abs(g).max() > 0) == name.startswith(("textenc.", "audioenc.")), name


def test_weight_one_and_own_positions_change_nothing():
    """A single process's batch (weight 1, real_positions None) and the same batch stating its
    own positions: bit-identical losses and gradients."""
    spec = S.get_spec("tiny")
    batch = random_batch(spec, 3, seed=2)
    stated = dataclasses.replace(batch, weight=1.0, real_positions=float(batch.guide_mask.sum()))
    backend = Backend(spec, "text2mel")
    (la, ga), (lb, gb) = backend.gradients(batch), backend.gradients(stated)
    assert la == lb and all(np.array_equal(ga[k], gb[k]) for k in ga)


def test_outside_a_job_mean_is_the_values_and_join_fails_clearly(monkeypatch):
    backend = Backend(S.get_spec("tiny"), "ssrn")
    values = backend.mean_over_workers(np.array([1.5, -2.0]))
    assert values.dtype == np.float32 and values.tolist() == [1.5, -2.0]
    for var in runtime.DIST_ENV:
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(RuntimeError, match="not a worker of an MXNet KVStore job.*--workers"):
        backend.join_workers()
    assert backend.trainer.kvstore is None


def test_the_stock_tier_refuses_data_parallel_training(monkeypatch):
    """Only the tuned tier joins a KVStore job; stock says so before touching one (even in a worker)."""
    monkeypatch.setenv("DMLC_ROLE", "worker")
    backend = Backend(S.get_spec("tiny"), "ssrn", ops="stock")
    with pytest.raises(RuntimeError, match="data-parallel training runs the tuned tier"):
        backend.join_workers()
    assert backend.trainer.kvstore is None and runtime._kvstore is None


def test_cuda_in_a_worker_is_the_gpu_of_its_local_rank(monkeypatch):
    """No GPU needed: a Context only names a device."""
    monkeypatch.setattr(mx.context, "num_gpus", lambda: 4)
    monkeypatch.setenv(runtime.LOCAL_RANK_ENV, "2")
    monkeypatch.delenv("DMLC_ROLE", raising=False)
    assert runtime.resolve_device("cuda") == mx.gpu(0)  # not a worker: the first GPU
    monkeypatch.setenv("DMLC_ROLE", "worker")
    assert runtime.resolve_device("cuda") == mx.gpu(2)
    assert runtime.resolve_device("cuda:1") == mx.gpu(1)  # an explicit index stays


def test_port_is_dropped_in_kvstore_roles():
    """ps-lite would bind a server or worker to $PORT (the scheduler's, here: a dead job)."""
    code = "import os, impl_gluon.runtime; print(os.environ.get('PORT'))"
    for role, expected in (("worker", "None"), ("server", "None"), ("scheduler", "9"), ("", "9")):
        env = {**os.environ, "PORT": "9", "DMLC_ROLE": role}
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
        assert out.stdout.strip() == expected, (role, out.stderr)


# --- a real job ------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_job(prefix: Path, timeout: float = 300) -> None:
    """A scheduler, a server and two kv_worker processes, each in its own session; all are
    killed if the job is not over after `timeout` seconds."""
    env = {**os.environ, "DMLC_PS_ROOT_URI": "127.0.0.1", "DMLC_PS_ROOT_PORT": str(free_port()),
           "DMLC_NODE_HOST": "127.0.0.1", "DMLC_NUM_SERVER": "1", "DMLC_NUM_WORKER": "2"}
    serve = [sys.executable, "-c", "import impl_gluon.runtime, mxnet"]
    work = [sys.executable, "-m", "tests.gluon.kv_worker", str(prefix)]
    roles = [("scheduler", serve, {}), ("server", serve, {})] + [
        ("worker", work, {runtime.LOCAL_RANK_ENV: str(i)}) for i in range(2)]
    procs = [subprocess.Popen(cmd, cwd=ROOT, env={**env, **extra, "DMLC_ROLE": role}, start_new_session=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for role, cmd, extra in roles]
    deadline = time.monotonic() + timeout
    try:
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        hung = [p for p in procs if p.poll() is None]
        for p in hung:
            os.killpg(p.pid, 9)
    logs = "\n".join(f"--- {role}: exit {p.wait()}\n{p.stdout.read()[-2000:]}" for (role, _, _), p in zip(roles, procs))
    assert not hung, f"the job was not over after {timeout} s (a worker blocked?):\n{logs}"
    assert all(p.returncode == 0 for p in procs), logs


def replay(net: str) -> tuple:
    """One process doing what the job's arithmetic is: each shard's gradients, their float32 sum
    (the server's), Adam scaling it by 1/2 (the mean) before clipping. (mean gradients, weights)."""
    backend = Backend(kv_worker.SPEC, net, seed=0)
    trainer, shards = backend.trainer, [distributed.shard(kv_worker.GLOBAL, r, 2) for r in (0, 1)]
    params = list(trainer.params.values())

    def summed(train: bool) -> dict:
        grads = []
        for batch in shards:
            trainer._backward(batch, train)
            grads.append({k: p.grad().asnumpy() for k, p in trainer.params.items()})
        return {k: grads[0][k] + grads[1][k] for k in grads[0]}

    mean = {k: g / np.float32(2) for k, g in summed(not kv_worker.SPEC.dropout).items()}  # as Trainer.gradients
    trainer.optimizer.rescale = 0.5
    for step in range(1, kv_worker.STEPS + 1):
        trainer.step = trainer.optimizer.t = step
        total = summed(True)
        for k, p in trainer.params.items():
            p.grad()[:] = total[k]
        trainer.optimizer.update_all([p.data() for p in params], [p.grad() for p in params])
    return mean, backend.get_weights()


def relative(a: dict, b: dict) -> float:
    """|a - b| / |b| over every array together."""
    diff = sum(float(np.sum((np.float64(a[k]) - b[k]) ** 2)) for k in b)
    return (diff / sum(float(np.sum(np.float64(b[k]) ** 2)) for k in b)) ** 0.5


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    prefix = tmp_path_factory.mktemp("kvstore") / "out"
    run_job(prefix)
    return {net: dict(np.load(f"{prefix}.{net}.npz")) for net in S.NETS}


@pytest.mark.slow
@pytest.mark.parametrize("net", S.NETS)
def test_two_workers_average_their_gradients_through_the_kvstore(job, net):
    out = job[net]
    part = lambda prefix: {k[len(prefix):]: v for k, v in out.items() if k.startswith(prefix)}  # noqa: E731
    assert out["mean"].tolist() == [1.5, 2.0]  # mean_over_workers([rank + 1, 2])
    mean, weights = replay(net)
    # bit for bit when this process computes with the workers' thread count; MKLDNN picks other
    # kernels for other thread counts (this process's depends on the suite that runs it)
    assert relative(part("g."), mean) < 1e-6, "gradients: not the mean of the shards'"
    assert relative(part("w."), weights) < 1e-6, "weights: not Adam on that mean"
    # and one process on the global batch, up to the order of float sums
    one = Backend(kv_worker.SPEC, net, seed=0)
    w0 = one.get_weights()
    assert relative(part("g."), one.gradients(kv_worker.GLOBAL)[1]) < 1e-5
    losses = [one.train_step(kv_worker.GLOBAL)["loss"] for _ in range(kv_worker.STEPS)]
    np.testing.assert_allclose(out["losses"], losses, rtol=1e-5)
    updates = lambda w: {k: np.float64(w[k]) - w0[k] for k in w0}  # noqa: E731
    assert relative(updates(part("w.")), updates(one.get_weights())) < 1e-5
