"""The training loop and dctts-train around it: what a run says, where it stops, what it leaves.
Driven through impl_torch (the fastest backend) on the tiny preset and the espeak-ng corpus."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")

from common.training import checkpoint as C, cli, train_loop
from common.data import dataset as data
from common.contract import spec as S  # noqa: E402
from common.framework import load_backend  # noqa: E402
from tests.common.test_checkpoint import NumpyBackend, state, truncate  # noqa: E402
from tests.common.test_weights import orphan_of  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TINY = S.get_spec("tiny")


def train(data, out, steps, framework="torch", **kw):
    kw = {"spec": TINY, "batch_size": 4, "checkpoint_every": 100, "seed": 0, "threads": 1, **kw}
    return train_loop.train(framework, "ssrn", data, out, steps=steps, progress=False, **kw)


def test_a_run_removes_its_killed_writes(tiny_corpus_dir, tmp_path, monkeypatch):
    run = tmp_path / "run"
    train(tiny_corpus_dir, run, 1)
    left = orphan_of(run / "ssrn-00000002.safetensors", TINY, monkeypatch)  # kill -9 while saving step 2
    other = orphan_of(run / "text2mel-00000002.safetensors", TINY, monkeypatch)  # another run's, maybe live
    with pytest.warns(UserWarning, match="removed 1 temporary file"):
        assert train(tiny_corpus_dir, run, 2, spec=None, seed=None, batch_size=None).step == 2
    assert not left.exists() and other.exists()


def cli_train(capsys, data, out, *extra):
    """dctts-train in this process: (exit status, stdout, stderr)."""
    with pytest.raises(SystemExit) as done:
        cli.train_main(["--framework", "torch", "--model", "ssrn", "--preset", "tiny", "--data", str(data), "--out",
                        str(out), "--batch-size", "4", "--checkpoint-every", "100", "--threads", "1", "--quiet", *extra])
    captured = capsys.readouterr()
    return done.value.code, captured.out, captured.err


def test_resuming_says_from_where_and_which_framework_wrote_it(tiny_corpus_dir, tmp_path, capsys):
    run = tmp_path / "run"
    train(tiny_corpus_dir, run, 1)
    capsys.readouterr()
    train(tiny_corpus_dir, run, 2, spec=None, seed=None, batch_size=None)
    assert f"resuming from {run / 'ssrn-00000001.safetensors'} (step 1, written by torch)\n" in capsys.readouterr().out
    C.save(tmp_path / "other", NumpyBackend(TINY, "ssrn"), state(3))  # portable: any framework continues it
    assert train(tiny_corpus_dir, tmp_path / "other", 4, spec=None, seed=None, batch_size=None).step == 4
    assert "(step 3, written by numpy; continuing in torch)" in capsys.readouterr().out


def test_a_run_already_at_steps_says_so_and_changes_nothing(tiny_corpus_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert cli_train(capsys, tiny_corpus_dir, run, "--steps", "2")[0] == 0
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    code, out, _ = cli_train(capsys, tiny_corpus_dir, run, "--steps", "2")
    assert code == 0 and out == f"{run} already at step 2 >= --steps 2: nothing to train\n"
    assert cli_train(capsys, tiny_corpus_dir, run, "--steps", "1")[1] == \
        f"{run} already at step 2 >= --steps 1: nothing to train\n"
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before


def test_a_batch_larger_than_the_training_split_is_said(tiny_corpus_dir, tmp_path):
    with pytest.warns(UserWarning, match="batch size 40 > the 15 training utterances") as record:
        train(tiny_corpus_dir, tmp_path / "run", 1, batch_size=40)
    assert len([w for w in record if "batch size" in str(w.message)]) == 1


def interrupted_at(step: int, signum=signal.SIGTERM):
    """The torch Backend, sent `signum` (Ctrl-C, a scheduler's preemption) during its `step`th step."""
    class Interrupted(load_backend("torch")):
        steps = 0

        def train_step(self, batch):
            self.steps += 1
            if self.steps == step:
                os.kill(os.getpid(), signum)
            return super().train_step(batch)

    return Interrupted


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_saves_and_exits_without_the_pictures(tiny_corpus_dir, tmp_path, signum):
    result = train_loop.train(interrupted_at(2, signum), "ssrn", tiny_corpus_dir, tmp_path, steps=50, spec=TINY,
                              checkpoint_every=100, progress=False)
    assert result.interrupted == signum and result.step == 2 and C.load(result.checkpoint).state.step == 2
    assert not (tmp_path / "plots").exists()


def test_a_corrupt_checkpoint_written_at_a_signal_does_not_cost_the_older_valid_one(tiny_corpus_dir, tmp_path):
    assert train(tiny_corpus_dir, tmp_path, 50, interrupted_at(5), checkpoint_every=2).step == 5  # between 4 and 6
    assert [s for s, _ in C.listed(tmp_path, "ssrn")] == [4, 5]
    truncate(C.path_for(tmp_path, "ssrn", 5))
    with pytest.warns(UserWarning, match="skipped ssrn-00000005.safetensors"):
        assert train(tiny_corpus_dir, tmp_path, 6, checkpoint_every=2).step == 6  # resumes from 4, saves at 6
    assert [(s, C.load(p).state.step) for s, p in C.listed(tmp_path, "ssrn")] == [(4, 4), (6, 6)]


def test_sigterm_stops_dctts_train_with_a_checkpoint_and_it_resumes(tiny_corpus_dir, tmp_path, capsys):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "common.training.cli", "train", "--framework", "torch", "--model", "ssrn", "--preset",
           "tiny", "--data", str(tiny_corpus_dir), "--out", str(run), "--batch-size", "4", "--steps", "100000",
           "--checkpoint-every", "100000", "--quiet", "--threads", "1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log, deadline = run / "ssrn-losses.jsonl", time.monotonic() + 60
    while not (log.is_file() and len(log.read_text().splitlines()) >= 2):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    steps = len(log.read_text().splitlines())
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert out == f"interrupted by SIGTERM at step {steps}; checkpoint: {C.path_for(run, 'ssrn', steps)}\n"
    assert C.load(C.latest(run, "ssrn")).state.step == steps
    code, out, _ = cli_train(capsys, tiny_corpus_dir, run, "--steps", str(steps + 2))
    assert code == 0 and f"(step {steps}, written by torch)" in out and f"stopped at step {steps + 2}" in out


def test_dctts_train_cache_option(tiny_corpus_dir, tmp_path, capsys):
    code, _, _ = cli_train(capsys, tiny_corpus_dir, tmp_path / "run", "--steps", "1", "--cache", str(tmp_path / "c"))
    (index,) = (tmp_path / "c").glob("*/*/index.json")
    assert code == 0 and index.parent.parent == data.corpus_cache(tiny_corpus_dir, tmp_path / "c")
