"""common.training.contention: a CPU shared with other programs is said once, by training and synthesis."""
import os
import subprocess
import sys
import time
import warnings

import pytest

from common.training import contention
from common.training.contention import Contention
from tests.common.test_cli import models  # noqa: F401  (a fixture)


def fake_snapshots(*snapshots):
    """A snapshot function giving `snapshots` in turn: (wall s, machine busy CPU s, own CPU s)."""
    it = iter(snapshots)
    return lambda: next(it)


def test_a_starved_process_beside_busy_ones_is_warned_once():
    # 10 s windows: we got 1 s of CPU while the machine was busy 16 s (15 s others': 1.5 cores), then again
    c = Contention("training", window_s=10, snapshot=fake_snapshots((0, 0, 0), (5, 8, 0.5), (10, 16, 1), (20, 32, 2)))
    c.tick()  # 5 s: not a window yet
    with pytest.warns(UserWarning, match=r"^the CPU is shared: training got 10% of a core over the last 10 s while "
                                         r"other processes kept 1\.5 cores busy") as record:
        c.tick()
        c.tick()  # the same again: said once
    assert len(record) == 1


@pytest.mark.parametrize("end", [(10, 20, 9), (10, 1, 1)], ids=["it got its core", "the machine was idle (I/O?)"])
def test_no_warning_without_both_a_low_share_and_busy_others(end):
    c = Contention("training", window_s=10, snapshot=fake_snapshots((0, 0, 0), end))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c.tick()


def test_without_proc_stat_it_stays_silent():
    c = Contention("synthesis", window_s=0, snapshot=lambda: None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c.tick()


def test_a_real_busy_neighbour_is_warned_exactly_once():
    """A stand-in busy process spins while this one mostly waits, as a process that gets no core does."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)
        c = Contention("training", window_s=0.5, share=0.5, others=0.5)
        with pytest.warns(UserWarning, match=r"the CPU is shared: training got \d+% of a core .* other processes "
                                             r"kept \d+\.\d cores busy") as record:
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline:
                time.sleep(0.05)
                c.tick()
        assert len(record) == 1
    finally:
        spinner.kill()
        spinner.wait()


def test_others_busy_counts_other_processes_only():
    start = contention.cpu_snapshot()
    sum(i * i for i in range(3_000_000))  # our own work: not "others"
    busy = contention.others_busy(start, contention.cpu_snapshot())
    assert busy is not None and 0 <= busy <= (os.cpu_count() or 1)
    assert contention.others_busy((0.0, 5.0, 1.0), (2.0, 8.0, 2.0)) == 1.0  # 3 busy CPU s, 1 ours, in 2 s


@pytest.fixture
def always_shared(monkeypatch):
    """Every window, however short, counts as starved beside busy processes."""
    monkeypatch.setattr(contention, "WINDOW_S", 0.0)
    monkeypatch.setattr(contention, "SHARE", float("inf"))
    monkeypatch.setattr(contention, "OTHERS", 0.0)


def test_training_says_it_once(tiny_corpus_dir, tmp_path, always_shared):
    pytest.importorskip("torch")
    from common.contract import spec as S
    from common.training import train_loop
    with pytest.warns(UserWarning, match="the CPU is shared: training got") as record:
        train_loop.train("torch", "ssrn", tiny_corpus_dir, tmp_path, S.get_spec("tiny"), steps=3, batch_size=4,
                         checkpoint_every=100, threads=1, progress=False)
    assert len([w for w in record if "CPU is shared" in str(w.message)]) == 1


def test_synthesis_says_it_once_in_one_line(models, tmp_path, capsys, always_shared):  # noqa: F811
    pytest.importorskip("torch")
    from common.training import cli
    with pytest.raises(SystemExit) as done:
        cli.synthesize_main(["--framework", "torch", "--text2mel", str(models["text2mel"]), "--ssrn",
                             str(models["ssrn"]), "one", "two", "three", "-o", str(tmp_path / "wavs"), "--batch-size",
                             "1", "--max-frames", "2", "--threads", "1"])
    err = capsys.readouterr().err
    assert done.value.code == 0, err
    lines = [ln for ln in err.splitlines() if "CPU is shared" in ln]
    assert len(lines) == 1 and lines[0].startswith("dctts-synthesize: warning: the CPU is shared: synthesis got")
