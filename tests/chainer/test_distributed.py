"""impl_chainer's data-parallel side: the losses honor Batch.weight and Batch.real_positions, and
(where Open MPI's mpiexec and mpi4py are installed: `tox -e distributed`'s environment) two
ChainerMN workers average their gradients through the communicator, whatever the order of a
checkpoint's restore and join_workers, and a failing worker ends the whole job instead of
leaving its peer blocked in an all-reduce. tests/distributed covers the framework-neutral
side (training loop, launcher, watchdog) for all three frameworks."""
from impl_chainer import runtime  # noqa: F401  (before chainer: its import-time check breaks here)

import dataclasses
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import chainer
import numpy as np
import pytest

from common.training import distributed
from common.contract import losses as L, spec as S
from impl_chainer.backend import Backend
from impl_chainer.layers import canonical_parameters
from tests.backend_contract import random_batch
from tests.chainer import mpi_worker as W

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("net", S.NETS)
def test_losses_honor_batch_weight_and_attention_positions(net):
    """A shard's losses: l1 and bin times batch.weight, the attention loss over real_positions
    (common.contract.losses computes the same); a weight-0 stand-in row leaves only the attention loss's
    gradients (none at all in SSRN)."""
    spec = S.get_spec("tiny")
    batch = dataclasses.replace(random_batch(spec, 3, seed=1), weight=0.375, real_positions=123.5)
    backend = Backend(spec, net)
    out = backend.forward(batch)
    ref = (L.text2mel_losses(out["logits"], out["attention"], batch) if net == "text2mel"
           else L.ssrn_losses(out["logits"], batch))
    got, _ = backend.gradients(batch)
    assert set(got) == set(ref)
    for key in ref:
        np.testing.assert_allclose(got[key], ref[key], rtol=1e-5, err_msg=key)
    unweighted, _ = backend.gradients(dataclasses.replace(batch, weight=1.0, real_positions=None))
    np.testing.assert_allclose(got["l1"], 0.375 * unweighted["l1"], rtol=1e-6)
    stand_in, grads = backend.gradients(dataclasses.replace(batch, weight=0.0))
    assert stand_in["l1"] == stand_in["bin"] == 0.0
    if net == "ssrn":
        assert all(not np.any(g) for g in grads.values())
    else:  # the attention loss reaches the text encoder and the audio encoder, not the decoder
        assert any(np.any(g) for g in grads.values()) and not any(np.any(g) for k, g in grads.items()
                                                                   if k.startswith("audiodec."))


def test_one_process_has_no_workers_to_average_with():
    backend = Backend(S.get_spec("tiny"), "ssrn")
    values = np.array([1.5, -2.0, 3.25], np.float32)
    np.testing.assert_array_equal(backend.mean_over_workers(values), values)
    assert backend.communicator is None and backend.trainer.communicator is None


def test_mpi_is_not_initialized_before_join_workers():
    """Importing the package and training never import mpi4py (whose import starts MPI): a plain
    chainer environment, and any process outside mpiexec, keeps working without it."""
    code = ("import sys; from impl_chainer.backend import Backend; from common.contract import spec; from common.data import batch; "
            "s = spec.get_spec('tiny'); Backend(s, 'ssrn').train_step(batch.random_batch(s, (12, 9), (40, 28))); "
            "print(sorted(m for m in sys.modules if m.startswith(('mpi4py', 'chainermn'))))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["[]"]


# --- two workers under mpiexec -------------------------------------------------------------------
needs_mpi = pytest.mark.skipif(shutil.which("mpiexec") is None or importlib.util.find_spec("mpi4py") is None,
                               reason="needs Open MPI's mpiexec and mpi4py (`pip install -e .[mpi]`)")


def mpiexec(mode: str, folder: Path, timeout: float) -> tuple:
    """(exit status, output, seconds) of a 2-worker job of mpi_worker; a job still running after
    `timeout` seconds (a hang) is killed, with every process of its session, and reported as None."""
    root = ["--allow-run-as-root"] if os.geteuid() == 0 else []
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMIX_", "CHAINERMN_"))}
    cmd = ["mpiexec", *root, "--oversubscribe", "--bind-to", "none", "-n", "2",
           sys.executable, "-m", "tests.chainer.mpi_worker", mode, str(folder)]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, code = proc.communicate()[0], None
    return code, output, time.monotonic() - start


def processes_of(folder: Path) -> list:
    """Processes still running with `folder` in their command line (a job's leftovers)."""
    found = subprocess.run(["pgrep", "-f", str(folder)], capture_output=True, text=True).stdout.split()
    return [pid for pid in found if int(pid) != os.getpid()]


class MeanOf:
    """A stand-in for a communicator, in one process: multi_node_mean_grad sets every gradient to
    the given {canonical name: mean}, so that the Trainer's own clip + Adam apply to it as after a
    real all-reduce."""

    def __init__(self, grads: dict):
        self.grads = grads

    def multi_node_mean_grad(self, model, zero_fill=False):
        for name, p in canonical_parameters(model).items():
            p.grad = p.xp.array(self.grads[name])


def restored(net: str) -> Backend:
    backend = Backend(W.SPEC, net)
    weights, state = W.checkpoint(net)
    backend.set_weights(weights)
    backend.set_optimizer_state(state)
    return backend


@needs_mpi
def test_two_mpi_workers_average_their_gradients_through_chainermn(tmp_path):
    code, output, _ = mpiexec("parity", tmp_path, timeout=300)
    assert code == 0, output[-3000:]
    ranks = [dict(np.load(tmp_path / f"rank-{r}.npz")) for r in range(2)]
    for out in ranks:
        assert out["mean"].tolist() == [1.5, 2.0]
    # the workers stay in lockstep, whether the checkpoint was restored before or after joining
    for key in ranks[0]:
        if ".w." in key or ".s." in key:
            np.testing.assert_array_equal(ranks[0][key], ranks[1][key], err_msg=key)
            np.testing.assert_array_equal(ranks[0][key], ranks[0][key.replace(".before.", ".after.")], err_msg=key)
    for net in S.NETS:
        # the same arithmetic in one process: each half's gradients, their mean (a sum, then times
        # 1/2 as the naive communicator does), then the Trainer's clip + Adam on that mean
        halves = []
        for rank in range(2):
            backend = restored(net)
            with runtime.unchecked(), chainer.using_config("train", False):  # as Backend.gradients
                backend.trainer._backward(distributed.shard(W.GLOBAL, rank, 2))
            halves.append({name: p.grad.copy() for name, p in backend.trainer.params.items()})
        mean = {name: (halves[0][name] + halves[1][name]) * np.float32(0.5) for name in halves[0]}
        for name, g in mean.items():
            np.testing.assert_allclose(ranks[0][f"{net}.g.{name}"], g, rtol=1e-6, atol=1e-6 * np.abs(g).max(),
                                       err_msg=f"{net} {name}")
        backend = restored(net)
        backend.trainer.join(MeanOf(mean))
        backend.train_step(distributed.shard(W.GLOBAL, 0, 2))
        lr = L.learning_rate(W.SPEC, 7)
        for name, w in backend.get_weights().items():
            np.testing.assert_allclose(ranks[0][f"{net}.after.w.{name}"], w, rtol=0, atol=1e-3 * lr + 1e-7,
                                       err_msg=f"{net} {name}")
        # and what one process computes on the whole batch, up to float32 sums in another order
        losses, grads = restored(net).gradients(W.GLOBAL)
        for key, value in losses.items():
            shard_mean = (ranks[0][f"{net}.loss.{key}"] + ranks[1][f"{net}.loss.{key}"]) / 2
            np.testing.assert_allclose(shard_mean, value, rtol=1e-5, err_msg=f"{net} {key}")
        for name, g in grads.items():
            np.testing.assert_allclose(ranks[0][f"{net}.g.{name}"], g, rtol=0, atol=1e-4 * np.abs(g).max(),
                                       err_msg=f"{net} {name}")


@needs_mpi
@pytest.mark.parametrize("how", ["raise", "exit", "kill"])
def test_a_failing_worker_ends_the_job_instead_of_blocking_its_peer(tmp_path, how):
    """Rank 1 fails before step 3 while rank 0 waits in that step's all-reduce (MPI has no timeout):
    an uncaught exception (ChainerMN's except hook: MPI_Abort), sys.exit(1) (mpi4py's abort status)
    and SIGKILL (mpiexec notices) each end the job within seconds, with a failing exit status."""
    code, output, seconds = mpiexec(how, tmp_path, timeout=120)
    assert code is not None, f"the job hung (killed after {seconds:.0f} s):\n{output[-3000:]}"
    assert code != 0 and "all steps done" not in output, output[-3000:]
    assert f"rank 1: {how} before step 3" in output, output[-3000:]
    if how == "raise":
        assert "RuntimeError: rank 1 fails on purpose" in output and "Uncaught exception on rank 1" in output
    assert seconds < 60, f"the job took {seconds:.0f} s to end"
    assert not processes_of(tmp_path), "processes of the job still run"
