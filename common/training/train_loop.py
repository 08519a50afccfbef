"""The training loop, written once for every framework: it drives a common.framework.Backend.

Text2Mel and SSRN train separately, as in the paper. A run lives in one directory:

    <net>-<step>.safetensors   checkpoints (common.training.checkpoint), the newest few
    <net>-losses.jsonl         one line per step: step, losses, learning rate, seconds (of the
                               step itself, data loading excluded)
    plots/                     at each checkpoint: Text2Mel attention and predicted vs target
                               mel; SSRN predicted vs target magnitude (a fixed utterance)
    samples/                   at each Text2Mel checkpoint: the fixed utterance's text
                               synthesized and made audible (common.training.monitor)

Resuming is bit-identical to an uninterrupted run: weights, Adam and the data order are
restored, and the framework's random stream (dropout) is reseeded from (run seed, step)
before every step. Ctrl-C or SIGTERM finishes the current step and saves a checkpoint.

Started as one worker of a data-parallel job (common.training.distributed), a process joins the others
through its framework's engine, trains on its shard of the same global batches, and only rank 0
writes files and progress; a stop request on any worker stops all at the same step.
"""
from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from common.training import checkpoint, distributed
from common.data import dataset as data
from common.contract import weights as W
from common.training.checkpoint import TrainState
from common.training.contention import Contention
from common.framework import configure_threads, load_backend
from common.contract.losses import learning_rate
from common.contract.spec import Spec, get_spec
from common.training.monitor import Monitor


class TrainError(ValueError):
    """A run that cannot start or continue as asked."""


@dataclass
class Result:
    step: int
    losses: dict  # of the last step trained in this call ({} if none)
    checkpoint: Path | None  # the newest checkpoint
    interrupted: int  # the signal that stopped the run (SIGINT, SIGTERM; a checkpoint was saved), 0 if none
    trained: int  # steps trained in this call
    rank: int = 0  # this process's worker rank in a data-parallel job (0: the one that writes)


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """The framework seed for 1-based `step` of a run on worker `rank`: independent streams per
    step and worker; rank 0's are a single-process run's."""
    return int(np.random.SeedSequence([seed, step] + ([rank] if rank else [])).generate_state(1)[0])


def check_arguments(data_dir, out_dir, steps: int, batch_size, checkpoint_every: int, seed, threads=None) -> None:
    """Refuse bad arguments (TrainError naming each) before any work is done or file written."""
    problems = [message for bad, message in [
        (steps < 1, f"steps must be >= 1, got {steps}"),
        (checkpoint_every < 1, f"checkpoint_every must be >= 1, got {checkpoint_every}"),
        (batch_size is not None and batch_size < 1, f"batch_size must be >= 1, got {batch_size}"),
        (seed is not None and seed < 0, f"seed must be >= 0, got {seed}"),
        (threads is not None and threads < 1, f"threads must be >= 1, got {threads}"),
        (not Path(data_dir).is_dir(), f"corpus directory {data_dir} does not exist"),
        (Path(out_dir).exists() and not Path(out_dir).is_dir(), f"output {out_dir} is not a directory"),
    ] if bad]
    reason = data.unwritable(out_dir)
    if reason:
        problems.append(f"cannot write to output {out_dir}: {reason}")
    if problems:
        raise TrainError("; ".join(problems))


def train(framework, net: str, data_dir, out_dir, spec: Spec | None = None, steps: int = 10000,
          batch_size: int | None = None, checkpoint_every: int = 1000, seed: int | None = None,
          device: str = "cpu", resume: bool = True, progress: bool = True, keep: int = checkpoint.KEEP,
          threads: int | None = None, cache=None, after_step=None) -> Result:
    """Train `net` ("text2mel" or "ssrn") of `framework` (a name, or a Backend class) until
    `steps` steps in all. Starts cold when out_dir holds no checkpoint of `net`, else
    resumes from the newest readable one (refused when `resume` is False); a run already
    at `steps` returns at once (trained 0), writing nothing. spec, batch_size and seed
    default to the checkpoint's (cold start: the paper preset, spec.batch_size, 0); given
    values that differ from the checkpoint's are refused, naming them. `threads`: the
    framework's CPU threads (default: its own choice). `cache`: a folder for feature caches
    (data.corpus_cache; default: in the corpus where it can be written). `after_step(step,
    backend, losses)`, called after every step (the time-to-quality benchmark evaluates there),
    ends the run early by returning True: a checkpoint is saved, the pictures made."""
    check_arguments(data_dir, out_dir, steps, batch_size, checkpoint_every, seed, threads)
    out_dir = Path(out_dir)
    ckpt, spec, state = starting_point(out_dir, net, spec, batch_size, seed, resume)
    if state.step >= steps:
        return Result(state.step, {}, ckpt.path, 0, 0)
    name = framework.framework if isinstance(framework, type) else framework
    declared = distributed.declared_workers(name)  # > 1: a worker of a job, whose launcher showed the corpus's progress
    # the corpus before the framework: bad data is refused even where the framework is missing
    corpus = data.load_corpus(data_dir, spec, cache and data.corpus_cache(data_dir, cache), progress and declared == 1)
    train_idx, test_idx = data.split(len(corpus), state.seed)
    if threads:
        configure_threads(name, threads)
    backend, rank, workers = make_backend(framework, name, declared, spec, net, device, state.seed,
                                           state.batch_size)
    if workers > 1 and after_step is not None:
        raise TrainError("after_step (early stopping) works in single-process runs only")
    lead = rank == 0  # writes the files and shows progress
    if ckpt and lead:
        print(f"resuming from {ckpt.path} (step {state.step}, written by {ckpt.framework}"
              + ("" if ckpt.framework == name else f"; continuing in {name}") + ")"
              + (f" with {workers} workers" if workers > 1 else ""))
    if state.batch_size > len(train_idx) and lead:
        warnings.warn(f"batch size {state.batch_size} > the {len(train_idx)} training utterances: every batch "
                      f"holds {len(train_idx)}", stacklevel=2)
    rng = np.random.default_rng(state.seed)  # the data order
    if ckpt:
        checkpoint.restore(backend, ckpt)
        rng.bit_generator.state = ckpt.state.data_rng
    state.data_rng = rng.bit_generator.state
    # Mid-epoch resume: the epoch's order is drawn again, its used batches skipped.
    epoch = data.batches(corpus, train_idx, state.batch_size, rng, skip=state.epoch_batches)

    out_dir.mkdir(parents=True, exist_ok=True)
    if lead:
        W.remove_leftovers(out_dir, f"{W.TEMP_PREFIX}{net}-*")  # only this network's: the other may train now
        monitor = Monitor(backend, corpus, int(test_idx[0] if len(test_idx) else train_idx[0]), out_dir)
    first, losses, stopping = state.step, {}, False
    # a data-parallel job's workers are each other's other processes; a GPU run waits for its device
    shared = Contention("training") if lead and workers == 1 and device == "cpu" else None
    saved, saved_at = (ckpt.path if ckpt else None), state.step
    with distributed.Heartbeat(rank) as heartbeat, stop_on_signals(heartbeat.signalled) as stop, LossLog(out_dir / f"{net}-losses.jsonl", state.step, lead) as log, \
            tqdm(total=steps, initial=state.step, desc=f"{backend.framework} {net}", unit="step",
                 disable=not (progress and lead), dynamic_ncols=True) as bar:
        while state.step < steps and not (stopping or (workers == 1 and stop.is_set())):
            batch = next(epoch, None)
            if batch is None:  # a new epoch: remember where its order came from
                state.data_rng, state.epoch_batches = rng.bit_generator.state, 0
                epoch = data.batches(corpus, train_idx, state.batch_size, rng)
                continue
            start = time.perf_counter()
            backend.seed(step_seed(state.seed, state.step + 1, rank))
            losses = backend.train_step(distributed.shard(batch, rank, workers))
            losses, stopping = agree(backend, workers, losses, stop.is_set())
            state.step += 1
            state.epoch_batches += 1
            log.write(state.step, losses, learning_rate(spec, state.step), time.perf_counter() - start)
            heartbeat.beat(state.step)
            if shared:
                shared.tick()
            bar.update(1)
            bar.set_postfix({k: f"{v:.4f}" for k, v in losses.items()})
            done = bool(after_step and after_step(state.step, backend, losses))
            if state.step % checkpoint_every == 0 or state.step == steps or done:
                if lead:
                    saved = checkpoint.save(out_dir, backend, state, keep)
                    monitor.write(state.step)
                saved_at = state.step
            if done:
                break
        if state.step > saved_at and lead:  # stopped by a signal between checkpoints: save, and exit before the pictures
            saved = checkpoint.save(out_dir, backend, state, keep)
        if workers > 1:  # no worker leaves (an engine may then end the job) before rank 0 has saved
            backend.mean_over_workers(np.zeros(1, np.float32))
    if not lead:
        saved = checkpoint.path_for(out_dir, net, state.step)  # rank 0 wrote it
    return Result(state.step, losses, saved, stop.signum, state.step - first, rank)


def make_backend(framework, name: str, declared: int, spec: Spec, net: str, device: str, seed: int,
                 batch_size: int) -> tuple:
    """(Backend, rank, workers): the framework's Backend, joined to the data-parallel job this
    process was started in, if any (`declared` workers: common.training.distributed.declared_workers;
    on joining, each Backend moves a worker made with "cuda" to the GPU of its local rank)."""
    if declared > 1 and batch_size % declared:
        raise TrainError(f"batch size {batch_size} does not split evenly over {declared} workers")
    backend_cls = framework if isinstance(framework, type) else load_backend(framework)
    backend = backend_cls(spec, net, device=device, seed=seed)
    if declared == 1:
        return backend, 0, 1
    rank, workers = backend.join_workers()
    return backend, rank, workers


def agree(backend, workers: int, losses: dict, stop: bool) -> tuple:
    """(losses, stop) the same on every worker: the mean of the workers' losses (each is its
    shard's share of the global batch's), and whether any worker was asked to stop."""
    if workers == 1:
        return losses, stop
    mean = backend.mean_over_workers(np.array(list(losses.values()) + [float(stop)], np.float32))
    return dict(zip(losses, mean[:-1].astype(float).tolist())), bool(mean[-1] > 0)


def starting_point(out_dir: Path, net: str, spec, batch_size, seed, resume: bool) -> tuple:
    """(newest checkpoint or None, spec, TrainState) of a run about to (re)start."""
    found = checkpoint.latest_readable(out_dir, net)
    if found is None:
        spec = spec or get_spec("paper")
        return None, spec, TrainState(0, seed or 0, spec.batch_size if batch_size is None else batch_size, {}, 0)
    if not resume:
        raise TrainError(f"{out_dir} already holds {net} checkpoints ({found.name}); resume, "
                         f"or choose another output directory")
    ckpt = checkpoint.load(found, spec, net)  # refuses other hyperparameters, naming them
    for name, given in (("seed", seed), ("batch_size", batch_size)):
        if given is not None and given != getattr(ckpt.state, name):
            raise TrainError(f"{found}: the run used {name}={getattr(ckpt.state, name)}, not {given}; "
                             f"resume with the same value (the data order depends on it)")
    return ckpt, ckpt.spec, ckpt.state


@contextlib.contextmanager
def stop_on_signals(on_signal=None, signums=(signal.SIGINT, signal.SIGTERM)):
    """A flag set by the first SIGINT (Ctrl-C) or SIGTERM (how schedulers preempt a job), its
    `signum` saying which: the loop then finishes its step, saves and returns. A second one
    interrupts at once (KeyboardInterrupt). `on_signal(signum)` is told of the first. Outside
    the main thread signals cannot be caught: no flag."""
    stop = threading.Event()
    stop.signum = 0
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.signum = signum
        stop.set()
        if on_signal:
            on_signal(signum)

    previous = {s: signal.signal(s, handler) for s in signums}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class LossLog:
    """<net>-losses.jsonl; on (re)start, lines after the checkpoint's step are dropped, so the
    log always describes the run that the checkpoints continue. `writes` False: a worker other
    than rank 0, which writes nothing."""

    def __init__(self, path: Path, keep_until: int, writes: bool = True):
        self.path, self.file, self.writes = path, None, writes
        if writes and path.is_file():
            lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
            kept = "".join(ln + "\n" for ln in lines if json.loads(ln)["step"] <= keep_until)
            W.atomic_write(path, lambda tmp: Path(tmp).write_text(kept))

    def __enter__(self):
        if self.writes:
            self.file = open(self.path, "a", buffering=1)  # line-buffered: every step reaches the file
        return self

    def __exit__(self, *exc):
        if self.file:
            self.file.close()

    def write(self, step: int, losses: dict, lr: float, seconds: float) -> None:
        if self.file:
            self.file.write(json.dumps({"step": step, **losses, "lr": lr, "seconds": round(seconds, 6)}) + "\n")
