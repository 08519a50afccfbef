"""Checkpoints and the training loop's bookkeeping, without any framework: a NumPy stand-in
for a Backend supplies weights and Adam state."""
import json

import numpy as np
import pytest

from common.training import checkpoint as C, train_loop
from common.contract import spec as S, weights as W
from common.framework import Backend


class NumpyBackend(Backend):
    """Just enough of a Backend to be checkpointed: weights and optimizer state in memory."""

    framework = "numpy"

    def __init__(self, spec, net, device="cpu", seed=0):
        super().__init__(spec, net, device, seed)
        self.weights = W.init_weights(spec, net, seed)
        rng = np.random.default_rng(seed)
        self.state = {"step": np.array(3, np.int64)}
        for name, a in self.weights.items():
            self.state[f"m.{name}"] = rng.normal(size=a.shape).astype(np.float32)
            self.state[f"v.{name}"] = rng.random(a.shape, dtype=np.float32)

    def get_weights(self):
        return dict(self.weights)

    def set_weights(self, weights):
        self.weights = dict(weights)

    def get_optimizer_state(self):
        return dict(self.state)

    def set_optimizer_state(self, state):
        self.state = dict(state)

    def seed(self, seed):
        pass

    def train_step(self, batch):
        raise NotImplementedError

    def gradients(self, batch):
        raise NotImplementedError

    def forward(self, batch):
        raise NotImplementedError


@pytest.fixture
def tiny():
    return S.get_spec("tiny")


def state(step, seed=5):
    rng = np.random.default_rng(seed)
    rng.random(7)  # a state part-way through a stream, with 128-bit integers inside
    return C.TrainState(step=step, seed=seed, batch_size=4, data_rng=rng.bit_generator.state, epoch_batches=2)


def test_round_trip_restores_everything(tmp_path, tiny):
    backend = NumpyBackend(tiny, "text2mel", seed=1)
    path = C.save(tmp_path, backend, state(3))
    assert path.name == "text2mel-00000003.safetensors"
    ckpt = C.load(path, tiny, "text2mel")
    assert ckpt.state == state(3) and ckpt.framework == "numpy" and ckpt.spec == tiny and ckpt.net == "text2mel"
    assert ckpt.weights.keys() == backend.weights.keys()
    assert all(np.array_equal(ckpt.weights[k], v) for k, v in backend.weights.items())
    assert ckpt.optimizer.keys() == backend.state.keys()
    assert all(np.array_equal(ckpt.optimizer[k], v) for k, v in backend.state.items())
    rng = np.random.default_rng(0)
    rng.bit_generator.state = ckpt.state.data_rng  # the data order continues where it was
    assert np.array_equal(rng.random(3), np.random.default_rng(5).random(10)[7:])


def test_any_framework_resumes_another_frameworks_checkpoint(tmp_path, tiny):
    """Weights and Adam state are stored under canonical names, so loading needs no knowledge
    of the writer (here: a checkpoint of one stand-in restored into a fresh one)."""
    writer = NumpyBackend(tiny, "ssrn", seed=1)
    ckpt = C.load(C.save(tmp_path, writer, state(8)))  # spec and net read from the file
    reader = NumpyBackend(tiny, "ssrn", seed=2)
    C.restore(reader, ckpt)
    assert all(np.array_equal(reader.weights[k], v) for k, v in writer.weights.items())
    assert all(np.array_equal(reader.state[k], v) for k, v in writer.state.items())


def test_only_the_newest_are_kept(tmp_path, tiny):
    backend = NumpyBackend(tiny, "ssrn")
    assert C.latest(tmp_path, "ssrn") is None and C.latest(tmp_path / "missing", "ssrn") is None
    for step in (10, 20, 30):
        C.save(tmp_path, backend, state(step), keep=2)
    C.save(tmp_path, NumpyBackend(tiny, "text2mel"), state(5))
    assert [s for s, _ in C.listed(tmp_path, "ssrn")] == [20, 30]
    assert C.latest(tmp_path, "ssrn").name == "ssrn-00000030.safetensors"
    assert C.latest(tmp_path, "text2mel").name == "text2mel-00000005.safetensors"


def test_other_hyperparameters_are_refused_by_name(tmp_path, tiny):
    path = C.save(tmp_path, NumpyBackend(tiny, "text2mel"), state(1))
    with pytest.raises(W.WeightsError, match=r"other hyperparameters: .*lr \(model 0\.01, file 0\.002\)"):
        C.load(path, tiny.replace(lr=0.01), "text2mel")
    with pytest.raises(W.WeightsError, match="holds text2mel weights, not ssrn"):
        C.load(path, tiny, "ssrn")


def test_truncated_and_incomplete_files_are_refused_clearly(tmp_path, tiny):
    path = C.save(tmp_path, NumpyBackend(tiny, "ssrn"), state(1))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(W.WeightsError, match="truncated or corrupt"):
        C.load(path, tiny, "ssrn")
    plain = tmp_path / "weights.safetensors"
    W.save(plain, W.init_weights(tiny, "ssrn"), tiny, "ssrn")
    with pytest.raises(C.CheckpointError, match="a weight file, not a training checkpoint"):
        C.load(plain, tiny, "ssrn")
    backend = NumpyBackend(tiny, "ssrn")
    del backend.state["v.ssrn.0.bias"]
    with pytest.raises(C.CheckpointError, match=r"missing \['adam\.v\.ssrn\.0\.bias'\]"):
        C.load(C.save(tmp_path, backend, state(2)), tiny, "ssrn")


def test_step_seeds_differ_per_step_and_run():
    seeds = {train_loop.step_seed(run, step) for run in range(3) for step in range(1, 50)}
    assert len(seeds) == 3 * 49 and train_loop.step_seed(0, 1) == train_loop.step_seed(0, 1)


def test_loss_log_forgets_steps_after_the_checkpoint(tmp_path):
    path = tmp_path / "text2mel-losses.jsonl"
    with train_loop.LossLog(path, 0) as log:
        for step in range(1, 6):
            log.write(step, {"loss": 1.0 / step}, 1e-3, 0.1)
    with train_loop.LossLog(path, 3) as log:  # resumed from the step-3 checkpoint
        log.write(4, {"loss": 0.0}, 1e-3, 0.1)
    lines = [json.loads(ln) for ln in path.read_text().splitlines()]
    assert [ln["step"] for ln in lines] == [1, 2, 3, 4] and lines[-1]["loss"] == 0.0
    assert set(lines[0]) == {"step", "loss", "lr", "seconds"}


def truncate(path):
    path.write_bytes(path.read_bytes()[:-100])


def test_a_truncated_newest_checkpoint_falls_back_to_an_older_one(tmp_path, tiny):
    backend = NumpyBackend(tiny, "ssrn")
    assert C.latest_readable(tmp_path, "ssrn") is None
    for step in (10, 20):
        C.save(tmp_path, backend, state(step))
    truncate(C.path_for(tmp_path, "ssrn", 20))
    with pytest.warns(UserWarning, match=r"skipped ssrn-00000020.safetensors: .*truncated or corrupt") as record:
        assert C.latest_readable(tmp_path, "ssrn") == C.path_for(tmp_path, "ssrn", 10)
    assert len(record) == 1
    with pytest.warns(UserWarning, match="skipped ssrn-00000020"):
        ckpt, spec, resumed = train_loop.starting_point(tmp_path, "ssrn", None, None, None, True)
    assert resumed.step == 10 and ckpt.path == C.path_for(tmp_path, "ssrn", 10) and spec == tiny
    truncate(C.path_for(tmp_path, "ssrn", 10))
    with pytest.raises(W.WeightsError, match=r"ssrn-00000020.safetensors: .*truncated or corrupt"):
        C.latest_readable(tmp_path, "ssrn")  # nothing to fall back to: the newest one's error


def test_retention_keeps_the_newest_valid_two_past_a_corrupt_one(tmp_path, tiny):
    backend = NumpyBackend(tiny, "ssrn")
    for step in (10, 20, 25):  # 25: written at a signal, between the regular ones
        C.save(tmp_path, backend, state(step))
    truncate(C.path_for(tmp_path, "ssrn", 25))
    with pytest.warns(UserWarning, match=r"renamed ssrn-00000025.safetensors to ssrn-00000025.safetensors.corrupt: "
                                         r".*truncated or corrupt") as record:
        C.save(tmp_path, backend, state(30))
    assert len(record) == 1
    assert [s for s, _ in C.listed(tmp_path, "ssrn")] == [20, 30]
    assert all(C.load(p).state.step == s for s, p in C.listed(tmp_path, "ssrn"))
    assert (tmp_path / "ssrn-00000025.safetensors.corrupt").is_file()  # kept, for a look
