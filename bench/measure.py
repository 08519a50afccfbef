"""One benchmark run (one framework, one task, one batch size) inside the current process.

Order matters for honest numbers: backends are built and checked against common.contract.reference
(the parity gate: the forward pass, and one training step for a training task) first; inputs are prebuilt; then warm-up steps (the first is the first call,
which includes any hybridize/compile work) and counted steps are clocked separately, with
Backend.sync() before every clock read; peak memory is read before the peak-matmul probe
(which would otherwise inflate it)."""
from __future__ import annotations

import time
from pathlib import Path

import threadpoolctl

from bench import frameworks, inputs, machine
from bench import parity
from common.data import audio
from common.contract import accounting as A, spec as S
from common.training.contention import cpu_snapshot, others_busy
from common.training.cli import read_model
from common.framework import configure_threads, load_backend
from common.contract.weights import init_weights

TASKS = ("train-text2mel", "train-ssrn", "synthesize")
TASK_NETS = {"train-text2mel": ("text2mel",), "train-ssrn": ("ssrn",), "synthesize": ("text2mel", "ssrn")}


def clocked(backend, fn, *args):
    """(fn(*args), seconds), the device synchronized before both clock reads."""
    backend.sync()
    start = time.perf_counter()
    out = fn(*args)
    backend.sync()
    return out, time.perf_counter() - start


def synthesis_flops(spec: S.Spec, n_chars: int, n_frames: int) -> int:
    """FLOPs of synthesizing `n_frames` reduced frames from `n_chars` characters. Every
    implementation decodes incrementally (each causal layer keeps its last inputs, so each new
    frame is computed once): TextEnc once, AudioEnc + attention + AudioDec once per frame, SSRN
    once over the result -- the FLOPs of one teacher-forced forward plus SSRN's."""
    return A.flops(spec, "text2mel", 1, n_chars, n_frames)["forward"] + A.flops(spec, "ssrn", 1, 0, n_frames)["forward"]


def _train_steps(backend, spec, batches, warmup, steps, seed):
    flops_of = {id(b): A.flops(spec, backend.net, *inputs.batch_shape(b))["train_step"]
                for b in batches}
    out = []
    for i in range(warmup + steps):
        batch = batches[i % len(batches)]
        backend.seed(seed + i)
        losses, seconds = clocked(backend, backend.train_step, batch)
        out.append({"time_s": seconds, "samples": batch.size, "frames": int(batch.frame_lengths.sum()) * spec.r,
                    "flops": flops_of[id(batch)], "loss": float(losses["loss"]),
                    "shape": inputs.batch_shape(batch)})
    return out


def _synthesis_steps(text2mel, ssrn, spec, texts, batch_size, max_frames, mels: list):
    """One step per `batch_size` texts: Text2Mel synthesizes them together (each stopping at its
    own end), SSRN upsamples each mel, Griffin-Lim (timed apart, not in the step) makes each wav.
    Each step's Text2Mel mels are appended to `mels` (for the cross-framework gate)."""
    out = []
    for start in range(0, len(texts), batch_size):
        chunk = texts[start:start + batch_size]
        results, t2m_s = clocked(text2mel, text2mel.synthesize_batch, chunk, max_frames)
        mags, ssrn_s = clocked(ssrn, lambda: [ssrn.upsample(mel) for mel, _ in results])
        begin = time.perf_counter()
        for mag in mags:
            audio.mag_to_wav(mag, spec)
        vocoder_s = time.perf_counter() - begin
        reduced = [mel.shape[1] for mel, _ in results]
        mels.append([mel for mel, _ in results])
        out.append({"time_s": t2m_s + ssrn_s, "text2mel_s": t2m_s, "ssrn_s": ssrn_s, "vocoder_s": vocoder_s,
                    "samples": len(chunk), "frames": sum(reduced) * spec.r, "reduced_frames": reduced,
                    "audio_s": sum(reduced) * spec.r * spec.hop / spec.sr, "chars": sum(len(ids) for ids in chunk),
                    "flops": sum(synthesis_flops(spec, len(ids), t) for ids, t in zip(chunk, reduced))})
    return out


def trained_weights(paths: dict, nets) -> tuple:
    """({net: weights}, spec) from checkpoints, weight files or run directories (their newest
    checkpoint), which must agree on the spec."""
    loaded = {net: read_model(Path(paths[net]), net) for net in nets}  # the worker passes strings
    specs = {spec for _, spec in loaded.values()}
    if len(specs) > 1:
        raise ValueError("the trained models were made with different specs: " + ", ".join(
            f"{net} {spec.name}" for net, (_, spec) in loaded.items()))
    return {net: w for net, (w, _) in loaded.items()}, specs.pop()


def run(framework: str, task: str, spec: S.Spec, batch_size: int = 4, steps: int = 5, warmup: int = 2,
        device: str = "cpu", seed: int = 0, threads: int | None = None, data_dir=None, max_frames: int = 64,
        n_batches: int = 2, backend_cls=None, weights: dict | None = None, gate_dir=None, ops: str = "tuned") -> dict:
    """One run's record: status "ok" with raw per-step data, "unavailable" (the backend does not
    import), or "failed" (the parity gate). `backend_cls` replaces load_backend(framework)
    (tests use a NumPy stand-in). Synthesis steps synthesize `batch_size` utterances together.
    `weights` {net: path}: trained models instead of init_weights(spec, net, seed); their spec
    replaces `spec`. `gate_dir`: where the cross-framework gate's arrays go (bench.parity.cross_check).
    `ops`: the tier of operators (common.framework.OPS)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")
    if warmup < 1 or steps < 1:
        raise ValueError(f"need warmup >= 1 (the first call is never counted) and steps >= 1, got {warmup}, {steps}")
    if weights is None:
        initial = {net: init_weights(spec, net, seed) for net in TASK_NETS[task]}
    else:
        initial, spec = trained_weights(weights, TASK_NETS[task])
    record = {"framework": framework, "ops": ops, "task": task, "preset": spec.name, "batch_size": batch_size,
              "device": device, "threads": threads, "seed": seed, "steps_asked": steps, "warmup_asked": warmup}
    start = time.perf_counter()
    if backend_cls is None:
        try:
            if threads:
                configure_threads(framework, threads)
            backend_cls = load_backend(framework, ops)
        except (RuntimeError, ImportError) as err:
            return {**record, "status": "unavailable", "reason": str(err)}
    record["import_s"] = time.perf_counter() - start
    record["version"] = frameworks.version(framework)

    start = time.perf_counter()
    backends = {net: backend_cls(spec, net, device=device, seed=seed) for net in TASK_NETS[task]}
    if weights is not None:  # else each backend starts from init_weights(spec, net, seed) already
        for net, backend in backends.items():
            backend.set_weights(initial[net])
    record["setup_s"] = time.perf_counter() - start
    record["weights"] = "init_weights" if weights is None else {net: str(path) for net, path in weights.items()}

    gate_batch = inputs.short_batch(spec, seed)
    record["gate"] = {net: parity.parity_gate(b, initial[net], gate_batch) for net, b in backends.items()}
    gate_file = gate_dir and Path(gate_dir) / f"{framework}-{ops}--{task}-{spec.name}-b{batch_size}.npz"
    if task != "synthesize":
        net = TASK_NETS[task][0]
        record["gate"]["train_step"], updates = parity.train_step_gate(backend_cls, spec, net, initial[net],
                                                                       gate_batch, device, seed)
        if gate_file:
            parity.save(gate_file, updates)
    failures = [f"{net} {out} relative error {err:.2e} > {g['tol']:.0e}" for net, g in record["gate"].items()
                for out, err in g["errors"].items() if not err <= g["tol"]]
    if failures:
        return {**record, "status": "failed", "reason": "parity gate vs common.contract.reference: " + "; ".join(failures)}

    record["rss_setup_mb"] = machine.current_rss_mb()
    cpu_start = cpu_snapshot()
    if task == "synthesize":
        texts = inputs.synthesis_texts(spec, (warmup + steps) * batch_size, data_dir)
        record["max_frames"] = max_frames
        if device != "cpu":  # every length once before the clock: cuDNN autotunes each new shape it meets
            _synthesis_steps(backends["text2mel"], backends["ssrn"], spec, texts, batch_size, max_frames, [])
        mels = []
        timed = _synthesis_steps(backends["text2mel"], backends["ssrn"], spec, texts, batch_size, max_frames, mels)
        if gate_file:
            counted = [mel for step in mels[warmup:] for mel in step]
            parity.save(gate_file, {f"mel{i}": mel for i, mel in enumerate(counted)})
    else:
        batches = inputs.timing_batches(spec, batch_size, n_batches, seed, data_dir)
        timed = _train_steps(backends[TASK_NETS[task][0]], spec, batches, warmup, steps, seed)
    record["warmup"], record["steps"] = timed[:warmup], timed[warmup:]
    record["others_busy_cores"] = others_busy(cpu_start, cpu_snapshot())
    record["peak_rss_mb"] = machine.peak_rss_mb()
    memory = frameworks.gpu_memory(framework, device)
    record["gpu_memory_mb"], record["gpu_allocator_mb"] = memory.get("process_mb"), memory.get("allocator_mb")
    record["gpu_allocator"] = memory.get("allocator")
    record["peak"] = frameworks.peak_matmul(framework, device)
    record["blas"] = threadpoolctl.threadpool_info()
    record["status"] = "ok"
    return record
