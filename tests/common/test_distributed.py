"""common.training.distributed without an engine: shards add up to the global batch (checked on the NumPy
reference losses), the environment each launcher sets is read right, the CLI passes a job's
command line on, and the watchdog ends a job whose worker died or hangs, naming the rank."""
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from common.training import cli, distributed as D
from common.contract import losses as L, reference
from common.data.batch import random_batch
from common.contract.spec import get_spec
from common.contract.weights import init_weights

SPEC = get_spec("tiny")


def reference_losses(batch, w):
    logits, attention = reference.text2mel(SPEC, w, batch.text, batch.mel)
    return L.text2mel_losses(logits, attention, batch)


@pytest.mark.parametrize("rows,workers", [(4, 2), (5, 2), (3, 4), (6, 3)])
def test_the_mean_of_the_shards_losses_is_the_global_batchs(rows, workers):
    """Even and uneven splits, and workers left without a row (their stand-in counts for nothing)."""
    lengths = (20, 14, 18, 9, 11, 16)[:rows]
    batch = random_batch(SPEC, lengths, [(n - 3) * SPEC.r for n in lengths], seed=3)
    w = init_weights(SPEC, "text2mel", seed=0)
    whole = reference_losses(batch, w)
    shards = [D.shard(batch, rank, workers) for rank in range(workers)]
    assert sum(s.size for s in shards if s.weight) == rows
    assert all(s.mel.shape[1:] == batch.mel.shape[1:] for s in shards)  # the global padded shape
    parts = [reference_losses(s, w) for s in shards]
    for key in whole:
        mean = np.mean([p[key] for p in parts])
        assert mean == pytest.approx(whole[key], rel=1e-12), key
    ssrn_w = init_weights(SPEC, "ssrn", seed=0)
    whole = L.ssrn_losses(reference.ssrn(SPEC, ssrn_w, batch.mel), batch)
    parts = [L.ssrn_losses(reference.ssrn(SPEC, ssrn_w, s.mel), s) for s in shards]
    assert np.mean([p["loss"] for p in parts]) == pytest.approx(whole["loss"], rel=1e-12)


def test_one_worker_trains_on_the_batch_itself():
    batch = random_batch(SPEC, (12, 9), (10 * SPEC.r, 7 * SPEC.r))
    assert D.shard(batch, 0, 1) is batch and batch.weight == 1.0
    assert batch.attention_positions() == batch.guide_mask.sum()


@pytest.mark.parametrize("framework,environ,workers", [
    ("torch", {"WORLD_SIZE": "4", "RANK": "1"}, 4),
    ("chainer", {"OMPI_COMM_WORLD_SIZE": "2"}, 2),
    ("chainer", {"PMI_SIZE": "3"}, 3),
    ("gluon", {"DMLC_ROLE": "worker", "DMLC_NUM_WORKER": "2"}, 2),
    ("gluon", {"DMLC_ROLE": "server", "DMLC_NUM_WORKER": "2"}, 1),  # a server is not a worker
    ("torch", {"OMPI_COMM_WORLD_SIZE": "2"}, 1),  # another engine's job
    ("torch", {}, 1),
])
def test_a_worker_knows_its_job_from_its_launchers_environment(framework, environ, workers):
    assert D.declared_workers(framework, environ) == workers


def test_the_job_command_line_drops_only_the_launch_options():
    argv = ["--framework", "torch", "--workers", "2", "--out", "o", "--worker-timeout=30", "--steps", "5"]
    assert cli.without_workers(argv) == ["--framework", "torch", "--out", "o", "--steps", "5"]


@pytest.mark.parametrize("framework", ["torch", "chainer", "gluon"])
def test_each_engine_starts_the_same_worker_command(framework):
    roles = D.engine_commands(framework, 2, ["common.training.cli", "train", "--steps", "3"], port=9000)
    workers = [cmd for role, cmd, _ in roles if role not in ("scheduler", "server")]
    assert all(cmd[-4:] == ["common.training.cli", "train", "--steps", "3"] for cmd in workers)
    if framework == "gluon":
        assert [env["DMLC_ROLE"] for _, _, env in roles] == ["scheduler", "server", "worker", "worker"]
        assert {env["DMLC_PS_ROOT_PORT"] for _, _, env in roles} == {"9000"}


@pytest.mark.parametrize("extra, message", [
    (["--batch-size", "5"], "batch size 5 does not split evenly over 2 workers"),
    (["--set", "norm=batch"], "norm=batch trains in one process only"),  # batch statistics per shard otherwise
], ids=["batch that does not split", "batch norm"])
def test_the_cli_refuses_a_job_it_cannot_run(tmp_path, tiny_corpus_dir, capsys, extra, message):
    with pytest.raises(SystemExit) as exit_:
        cli.train_main(["--framework", "torch", "--model", "ssrn", "--data", str(tiny_corpus_dir), "--out",
                        str(tmp_path / "run"), "--preset", "tiny", "--workers", "2", *extra])
    assert exit_.value.code == cli.EXIT_ERROR
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


# --- the watchdog, on stand-in workers (plain Python processes that write heartbeats) ------
WORKER = """
import os, sys, time
from common.training.distributed import Heartbeat
rank, mode = int(os.environ["FAKE_RANK"]), os.environ["FAKE_MODE"]
with Heartbeat(rank) as beat:
    for step in range(1, 6):
        time.sleep(0.2)
        if rank == 0 and step == 4 and mode == "die":  # what torchrun and mpiexec do to the peers of a dead worker
            beat.signalled()  # SIGTERM
            os.kill(os.getpid(), 9)
        if rank == 0 and step == 4 and mode == "error":
            raise RuntimeError("Connection closed by peer")
        if rank == 1 and step == 3 and mode == "die":
            os.kill(os.getpid(), 9)
        if rank == 1 and step == 3 and mode == "hang":
            time.sleep(3600)
        if rank == 1 and step == 3 and mode == "error":
            raise ValueError("a bad batch")
        if step == 3 and mode == "wait":  # rank 1 hangs a second after rank 0's last beat, rank 0 waits for it
            if rank == 1:
                time.sleep(1.0)
                beat.beat(2)
            time.sleep(3600)
        beat.beat(step)
"""


@pytest.fixture
def fake_engine(monkeypatch, tmp_path):
    """engine_commands replaced by two plain processes running WORKER."""
    script = tmp_path / "fake_worker.py"
    script.write_text(WORKER)

    def commands(framework, workers, worker, port=None):
        return [(f"worker {i}", [sys.executable, str(script)], {"FAKE_RANK": str(i), "FAKE_MODE": worker[0]})
                for i in range(workers)]

    monkeypatch.setattr(D, "engine_commands", commands)
    monkeypatch.setenv("PYTHONPATH", os.getcwd())


def test_a_healthy_job_ends_well(fake_engine):
    assert D.launch("torch", 2, ["ok"], timeout=30) == 0


@pytest.mark.parametrize("mode,says", [("die", "worker rank 1 (pid"), ("error", "worker rank 1 (pid"),
                                       ("hang", "rank 1 (pid")])  # the peer, rank 0, fails after it
def test_a_dead_or_hung_worker_ends_the_job_naming_its_rank(fake_engine, mode, says):
    start = time.monotonic()
    with pytest.raises(D.LaunchError, match="Rerun the same command to resume") as err:
        D.launch("torch", 2, [mode], timeout=3)
    assert says in str(err.value) and time.monotonic() - start < 30
    assert ("no step finished" in str(err.value)) == (mode == "hang")
    leftover = subprocess.run(["pgrep", "-f", "fake_worker.py"], capture_output=True, text=True).stdout
    assert leftover == "", "processes of the stopped job still run"


def test_a_hang_names_every_waiting_worker_not_only_the_first_past_the_timeout(fake_engine):
    """In a synchronous job the peers of a hung worker wait for it, and may have beaten earlier:
    the one that hangs must be named too, though its own last beat is not yet past the timeout."""
    with pytest.raises(D.LaunchError, match="no step finished") as err:
        D.launch("torch", 2, ["wait"], timeout=3)
    assert "ranks 0 (pid" in str(err.value) and ", 1 (pid" in str(err.value), str(err.value)
