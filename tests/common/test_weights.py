"""Portable weight files: round trip and clear refusals."""
import os

import numpy as np
import pytest

from common.contract import spec as S, weights as W


@pytest.fixture
def tiny():
    return S.get_spec("tiny")


def test_init_is_deterministic_and_complete(tiny):
    a, b = W.init_weights(tiny, "text2mel", seed=3), W.init_weights(tiny, "text2mel", seed=3)
    assert a.keys() == S.net_param_shapes(tiny, "text2mel").keys()
    assert all(np.array_equal(a[k], b[k]) and a[k].dtype == np.float32 for k in a)
    assert not np.array_equal(a["textenc.1.weight"], W.init_weights(tiny, "text2mel", seed=4)["textenc.1.weight"])
    assert np.all(a["textenc.3.norm.gamma"] == 1) and np.all(a["textenc.3.norm.beta"] == 0)


def test_round_trip(tmp_path, tiny):
    w = W.init_weights(tiny, "ssrn")
    path = tmp_path / "ssrn.safetensors"
    W.save(path, w, tiny, "ssrn", meta={"step": "7"})
    loaded, meta = W.load(path, tiny, "ssrn")
    assert meta["step"] == "7" and meta["fingerprint"] == tiny.fingerprint()
    assert all(np.array_equal(w[k], loaded[k]) for k in w)
    assert [p.name for p in tmp_path.iterdir()] == ["ssrn.safetensors"]  # no temporary file left behind
    _, spec, net, _ = W.read(path)
    assert spec == tiny and net == "ssrn"


def test_other_hyperparameters_are_refused_by_name(tmp_path, tiny):
    path = tmp_path / "w.safetensors"
    W.save(path, W.init_weights(tiny, "text2mel"), tiny, "text2mel")
    with pytest.raises(W.WeightsError, match=r"d \(model 32, file 16\).*dropout"):
        W.load(path, tiny.replace(d=32, dropout=0.1), "text2mel")
    with pytest.raises(W.WeightsError, match="holds text2mel weights, not ssrn"):
        W.load(path, tiny, "ssrn")


def test_truncated_and_foreign_files_give_clear_errors(tmp_path, tiny):
    path = tmp_path / "w.safetensors"
    W.save(path, W.init_weights(tiny, "text2mel"), tiny, "text2mel")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(W.WeightsError, match="truncated or corrupt"):
        W.load(path, tiny, "text2mel")
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(W.WeightsError, match="not a readable safetensors"):
        W.load(tmp_path / "x.txt", tiny, "text2mel")
    with pytest.raises(W.WeightsError, match="no such weight file"):
        W.load(tmp_path / "missing.safetensors", tiny, "text2mel")


def test_missing_and_misshapen_arrays_are_named(tmp_path, tiny):
    w = W.init_weights(tiny, "ssrn")
    del w["ssrn.0.bias"]
    w["ssrn.1.weight"] = np.zeros((1, 1, 1), np.float32)
    W.save(tmp_path / "w.safetensors", w, tiny, "ssrn")
    with pytest.raises(W.WeightsError, match=r"ssrn\.0\.bias.*ssrn\.1\.weight"):
        W.load(tmp_path / "w.safetensors", tiny, "ssrn")


def test_a_failed_write_keeps_the_old_file(tmp_path, tiny):
    path = tmp_path / "w.safetensors"
    W.save(path, W.init_weights(tiny, "ssrn"), tiny, "ssrn")
    before = path.read_bytes()
    with pytest.raises(Exception):
        W.save(path, {"bad": object()}, tiny, "ssrn")
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["w.safetensors"]


@pytest.fixture
def umask():
    """Runs the test under umask 027 (an unusual one, so 0600 or 0644 would show)."""
    old = os.umask(0o027)
    yield 0o027
    os.umask(old)


def test_saved_files_honour_the_umask(tmp_path, tiny, umask):
    path = tmp_path / "w.safetensors"
    W.save(path, W.init_weights(tiny, "ssrn"), tiny, "ssrn")
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_unreadable_files_are_reported_as_such(tmp_path, tiny, monkeypatch):
    path = tmp_path / "w.safetensors"
    W.save(path, W.init_weights(tiny, "ssrn"), tiny, "ssrn")
    access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: access(p, mode) and p != str(path))  # chmod 000 (not as root)
    with pytest.raises(W.WeightsError, match="permission denied") as err:
        W.read(path)
    assert "truncated" not in str(err.value)


class Killed(BaseException):
    """Stands for kill -9 in the middle of a write."""


def orphan_of(path, tiny, monkeypatch):
    """Write `path` and 'die' before the rename: the temporary file stays, as after kill -9."""
    def die(*args):
        raise Killed

    with monkeypatch.context() as m:
        m.setattr(W.os, "replace", die)
        m.setattr(W.os, "unlink", lambda p: None)
        with pytest.raises(Killed):
            W.save(path, W.init_weights(tiny, "ssrn"), tiny, "ssrn")
    (left,) = path.parent.glob(f".tmp-{path.name}.*")
    return left


def test_leftovers_of_killed_writes_are_removed(tmp_path, tiny, monkeypatch):
    left = orphan_of(tmp_path / "ssrn-00000003.safetensors", tiny, monkeypatch)
    young = orphan_of(tmp_path / "other" / "x.safetensors", tiny, monkeypatch)
    mine = tmp_path / ".tmp-keep-this.txt"  # not one of ours
    mine.write_text("x")
    assert left.name.startswith(".tmp-ssrn-00000003.safetensors.") and len(os.listdir(tmp_path)) == 3
    with pytest.warns(UserWarning, match="removed 1 temporary file"):
        assert W.remove_leftovers(tmp_path, ".tmp-ssrn-*") == [left]
    assert not left.exists() and mine.exists()
    assert W.remove_leftovers(young.parent, older_than=3600) == [] and young.exists()  # maybe a write in progress
    os.utime(young, (0, 0))
    with pytest.warns(UserWarning):
        assert W.remove_leftovers(young.parent, older_than=3600) == [young]


def test_a_file_from_a_newer_version_is_refused_by_its_unknown_hyperparameters(tmp_path, tiny, monkeypatch):
    path = tmp_path / "w.safetensors"
    newer = dict(tiny.to_dict(), attention_heads=4)
    monkeypatch.setattr(S.Spec, "to_dict", lambda self: newer)
    W.save(path, W.init_weights(tiny, "ssrn"), tiny, "ssrn")
    monkeypatch.undo()
    with pytest.raises(W.WeightsError, match=r"newer dctts-bench.*attention_heads"):
        W.load(path, tiny, "ssrn")
