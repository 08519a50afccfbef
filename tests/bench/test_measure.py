"""One run in-process with the NumPy stand-in: what is clocked, counted and reported."""
import os

import numpy as np
import pytest

from bench import machine, measure
from common.contract import accounting as A, spec as S

TINY = S.get_spec("tiny")


def test_training_run_counts_only_the_counted_steps(reference_backend):
    rec = measure.run("reference", "train-ssrn", TINY, batch_size=3, steps=3, warmup=2, n_batches=2,
                      backend_cls=reference_backend)
    assert rec["status"] == "ok" and rec["gate"]["ssrn"]["passed"]
    assert len(rec["warmup"]) == 2 and len(rec["steps"]) == 3
    batches = measure.inputs.timing_batches(TINY, 3, 2, seed=0)
    for i, step in enumerate(rec["warmup"] + rec["steps"]):  # the 2 prebuilt batches, cycled
        b = batches[i % 2]
        assert step["samples"] == 3 and step["frames"] == b.frame_lengths.sum() * TINY.r
        assert step["flops"] == A.flops(TINY, "ssrn", 3, b.text.shape[1], b.mel.shape[2])["train_step"]
        assert step["time_s"] > 0 and np.isfinite(step["loss"])
    assert rec["peak_rss_mb"] >= rec["rss_setup_mb"] > 0 and rec["peak"]["gflops"] > 0
    assert rec["others_busy_cores"] >= 0


def test_gate_failure_is_reported_and_not_timed(reference_backend):
    class Broken(reference_backend):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.weights["textenc.2.weight"] = -self.weights["textenc.2.weight"]

    rec = measure.run("broken", "train-text2mel", TINY, steps=1, warmup=1, backend_cls=Broken)
    assert rec["status"] == "failed" and "steps" not in rec
    assert "text2mel logits relative error" in rec["reason"] and not rec["gate"]["text2mel"]["passed"]


def test_unimportable_framework_is_unavailable(monkeypatch):
    def no_backend(framework, ops):
        raise RuntimeError(f"framework {framework!r} is not usable here (No module named 'x')")

    monkeypatch.setattr(measure, "load_backend", no_backend)
    rec = measure.run("torch", "synthesize", TINY, batch_size=3, steps=1, warmup=1)
    assert rec["status"] == "unavailable" and "not usable here" in rec["reason"] and rec["batch_size"] == 3


def test_bad_arguments_are_refused(reference_backend):
    with pytest.raises(ValueError, match="unknown task"):
        measure.run("reference", "train-everything", TINY, backend_cls=reference_backend)
    with pytest.raises(ValueError, match="warmup >= 1"):
        measure.run("reference", "train-ssrn", TINY, warmup=0, backend_cls=reference_backend)


def test_synthesis_flops_count_each_frame_once():
    """Incremental decoding: TextEnc once, then the same audio-side work for every frame."""
    text_enc = A.flops(TINY, "text2mel", 1, 20, 0)["forward"]
    per_frame = A.flops(TINY, "text2mel", 1, 20, 1)["forward"] - text_enc
    for frames in (1, 10):
        expected = text_enc + per_frame * frames + A.flops(TINY, "ssrn", 1, 0, frames)["forward"]
        assert measure.synthesis_flops(TINY, 20, frames) == expected


def test_thread_environment():
    env = machine.thread_env(3)
    assert set(env) == set(machine.THREAD_VARS) and set(env.values()) == {"3"}
    assert "MXNET_CPU_WORKER_NTHREADS" not in env  # as dctts-train: one MXNet operator at a time
    with pytest.raises(ValueError):
        machine.thread_env(0)
    with pytest.raises(RuntimeError, match="before numpy"):
        machine.apply_threads(2)  # numpy is imported in this process already


def test_a_gpu_run_fixes_tf32_and_autotuning_for_every_framework():
    cpu, gpu = machine.subprocess_env(2), machine.subprocess_env(2, "cuda:0")
    assert cpu.get("NVIDIA_TF32_OVERRIDE") == os.environ.get("NVIDIA_TF32_OVERRIDE")  # the CPU run leaves it
    assert gpu["NVIDIA_TF32_OVERRIDE"] == "0" and gpu["MXNET_CUDNN_AUTOTUNE_DEFAULT"] == "1"
    assert gpu["OMP_NUM_THREADS"] == "2" and str(machine.REPO) in gpu["PYTHONPATH"]


def test_a_gpu_run_names_its_gpu(tmp_path, monkeypatch):
    """The GPU comes from nvidia-smi, asked for the device's index; without nvidia-smi the header
    says so instead of failing; the CPU has no GPU entry."""
    fake = tmp_path / "nvidia-smi"
    fake.write_text(f'#!/bin/sh\necho "$@" > {tmp_path / "args"}\necho "NVIDIA H200, 143771 MiB, 580.159.03"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    info = machine.machine("cuda:1")
    assert info["gpu"] == "NVIDIA H200, 143771 MiB, driver 580.159.03"
    assert (tmp_path / "args").read_text().split()[:2] == ["-i", "1"]
    assert machine.described(info) == f"{info['cpu']}, {info['cores']} cores; GPU: {info['gpu']}"
    assert "gpu" not in machine.machine("cpu") and "GPU" not in machine.described(machine.machine("cpu"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert machine.gpu_model("cuda") == "unknown (nvidia-smi: FileNotFoundError)"


def test_a_copied_tree_without_git_names_the_commit_it_is_given(tmp_path, monkeypatch):
    monkeypatch.setattr(machine, "REPO", tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    monkeypatch.delenv("DCTTS_GIT_COMMIT", raising=False)
    assert machine.git_commit() == "unknown"
    monkeypatch.setenv("DCTTS_GIT_COMMIT", "abc123")
    assert machine.git_commit() == "abc123"


def fake_nvml(monkeypatch, processes):
    """A stand-in for pynvml (nvidia-ml-py) listing `processes` as (pid, bytes) on every GPU."""
    import sys
    import types

    calls = []
    nvml = types.SimpleNamespace(
        nvmlInit=lambda: calls.append("init"), nvmlShutdown=lambda: calls.append("shutdown"),
        nvmlDeviceGetHandleByIndex=lambda i: ("handle", i),
        nvmlDeviceGetComputeRunningProcesses=lambda h: [types.SimpleNamespace(pid=p, usedGpuMemory=b)
                                                        for p, b in processes])
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    return calls


def test_gpu_memory_is_the_process_figure_of_nvml_for_every_framework(monkeypatch):
    from bench import frameworks

    calls = fake_nvml(monkeypatch, [(os.getpid() + 1, 5 * 2 ** 20), (os.getpid(), 3 * 2 ** 20)])
    assert frameworks.gpu_memory("newfw", "cuda:1") == {"process_mb": 3.0, "allocator_mb": None, "allocator": None}
    assert calls == ["init", "shutdown"] and frameworks.gpu_memory("torch", "cpu") == {}
    fake_nvml(monkeypatch, [(12345, 7 * 2 ** 20)])  # a container's NVML lists the host's pid: the only process
    assert frameworks.nvml_process_mb(0) == 7.0
    fake_nvml(monkeypatch, [(12345, 7 * 2 ** 20), (12346, 2 ** 20)])  # several, none ours: unknown
    assert frameworks.nvml_process_mb(0) is None
    monkeypatch.setitem(__import__("sys").modules, "pynvml", None)  # nvidia-ml-py not installed
    assert frameworks.nvml_process_mb(0) is None


def test_gpu_synthesis_speaks_every_timed_sentence_before_the_clock(reference_backend, monkeypatch):
    """cuDNN autotunes each new input length the first time it meets it: on a GPU every timed
    sentence is synthesized once, untimed, before the timed pass."""
    from bench import frameworks
    from common.contract.synthesis import Synthesis

    seen = []

    class Fake(reference_backend):
        def synthesize_batch(self, texts, max_frames):
            seen.append([len(t) for t in texts])
            return [Synthesis(np.zeros((self.spec.n_mels, 3), np.float32), np.zeros((len(t), 3), np.float32),
                              np.zeros(3, bool)) for t in texts]

        def upsample(self, mel):
            return np.zeros((self.spec.n_mags, mel.shape[1] * self.spec.r), np.float32)

        def sync(self):
            seen.append("sync")

    monkeypatch.setattr(frameworks, "peak_matmul", lambda fw, device: {"gflops": 1.0})
    monkeypatch.setattr(frameworks, "gpu_memory", lambda fw, device: {"process_mb": 9.0, "allocator_mb": 4.0,
                                                                      "allocator": "fake"})
    rec = measure.run("fake", "synthesize", TINY, batch_size=2, steps=2, warmup=1, device="cuda", backend_cls=Fake)
    assert rec["status"] == "ok" and (rec["gpu_memory_mb"], rec["gpu_allocator_mb"]) == (9.0, 4.0)
    batches = [s for s in seen if s != "sync"]
    assert len(batches) == 2 * 3 and batches[:3] == batches[3:]  # the 3 steps' sentences, once before, once timed
    cpu = []
    Fake.synthesize_batch = lambda self, texts, m, _orig=Fake.synthesize_batch: cpu.append(1) or _orig(self, texts, m)
    measure.run("fake", "synthesize", TINY, batch_size=2, steps=2, warmup=1, device="cpu", backend_cls=Fake)
    assert len(cpu) == 3  # on the CPU nothing autotunes: no extra pass


def test_the_gluon_peak_probes_onednn_as_well():
    """The machine peak is the best product any library reaches: on a CPU whose BLAS runs AVX2 kernels,
    oneDNN's (FullyConnected) reached twice dot's, and convolutions on it passed "100% of peak"."""
    pytest.importorskip("mxnet")
    from bench import frameworks

    probe = frameworks.peak_matmul("gluon", n=256, repeats=2)
    assert set(probe["all_gflops"]) == {"mx.nd.dot", "mx.nd.linalg.gemm2", "mx.nd.FullyConnected"}
    assert probe["gflops"] == max(probe["all_gflops"].values()) > 0
