"""The training loop and dctts-train around it: what a run says, where it stops, what it leaves.
Driven through impl_torch (the fastest backend) on the tiny preset and the espeak-ng corpus."""
import pytest

pytest.importorskip("torch")

from common import checkpoint as C, spec as S, train_loop  # noqa: E402
from tests.common.test_weights import orphan_of  # noqa: E402

TINY = S.get_spec("tiny")


def train(data, out, steps, **kw):
    kw = {"spec": TINY, "batch_size": 4, "checkpoint_every": 100, "seed": 0, **kw}
    return train_loop.train("torch", "ssrn", data, out, steps=steps, progress=False, **kw)


def test_a_run_removes_its_killed_writes(tiny_corpus_dir, tmp_path, monkeypatch):
    run = tmp_path / "run"
    train(tiny_corpus_dir, run, 1)
    left = orphan_of(run / "ssrn-00000002.safetensors", TINY, monkeypatch)  # kill -9 while saving step 2
    other = orphan_of(run / "text2mel-00000002.safetensors", TINY, monkeypatch)  # another run's, maybe live
    with pytest.warns(UserWarning, match="removed 1 temporary file"):
        assert train(tiny_corpus_dir, run, 2, spec=None, seed=None, batch_size=None).step == 2
    assert not left.exists() and other.exists()
