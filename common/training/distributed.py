"""Data-parallel training on each framework's own engine: the launch of a job, written once for
the three, the split of a global batch into workers' shards, and the watchdog that ends a job
whose worker died or hangs.

    torch    torchrun (torch.distributed.run) --standalone --nproc-per-node N: gloo (cuda: nccl)
    chainer  mpiexec -n N (Open MPI): ChainerMN, communicator naive (cuda: pure_nccl)
    gluon    a scheduler, a server and N workers, roles from DMLC_* variables: KVStore dist_sync

`launch` starts a job on this machine and supervises it; the same worker command runs under the
engine's own launcher by hand (README: raw and multi-node launches). In a job every worker draws
the same global batches (the single-process data order), trains on its `shard` and the backend
averages the gradients through the engine (Backend.join_workers); rank 0 alone writes checkpoints,
losses, plots and progress. The engines' output is copied to <out>/<net>-job.log; once a job has
failed it goes there only, so that the line naming the failure comes first, not their tracebacks.
"""
from __future__ import annotations

import codecs
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from common.data.batch import Batch

HOLD_S = 1.0  # the engines' stderr reaches ours this late: time for the watchdog to see a failure first
WORKER_TIMEOUT = 600.0  # seconds a worker may go without finishing a step (checkpoint pictures included)
HEARTBEAT_DIR = "DCTTS_HEARTBEAT_DIR"  # set by `launch`: where each rank reports its progress
ENGINE_TIMEOUT = "DCTTS_DIST_TIMEOUT"  # seconds an engine's own collectives may wait (torch's process group)
LOCAL_RANK = "DCTTS_LOCAL_RANK"  # set by `launch` for MXNet workers (torchrun and Open MPI set their own)
# How a process learns that it is one worker of a job, for each engine: (variable, its value's meaning).
_SIZE_VARIABLES = {"torch": ("WORLD_SIZE",), "chainer": ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE"),
                   "gluon": ("DMLC_NUM_WORKER",)}


class LaunchError(RuntimeError):
    """A job that could not start, or whose worker died or hung."""


def declared_workers(framework: str, environ=os.environ) -> int:
    """The number of workers of the job this process was started in by `framework`'s launcher
    (1 when it was started alone). MXNet's scheduler and servers are not workers."""
    if framework == "gluon" and environ.get("DMLC_ROLE") != "worker":
        return 1
    for name in _SIZE_VARIABLES.get(framework, ()):
        if environ.get(name):
            return int(environ[name])
    return 1


def shard(batch: Batch, rank: int, workers: int) -> Batch:
    """Worker `rank`'s rows of a global batch, at the global padded shape, weighted so that the
    mean over the workers of their losses and gradients equals the global batch's: l1 and
    binary divergence are means over the shard's elements, scaled by rows / (global rows /
    workers); the attention loss is divided by the global batch's real positions / workers.
    Rows split as evenly as np.array_split does; a worker left without a row (a short last
    batch) gets a stand-in copy of row 0 that counts for nothing (weight 0, guide 0)."""
    if workers == 1:
        return batch
    rows = np.array_split(np.arange(batch.size), workers)[rank]
    positions = batch.attention_positions() / workers
    if len(rows) == 0:
        part = _rows(batch, np.array([0]))
        return dataclasses.replace(part, guide=np.zeros_like(part.guide), weight=0.0, real_positions=positions)
    return dataclasses.replace(_rows(batch, rows), weight=batch.weight * len(rows) * workers / batch.size,
                               real_positions=positions)


def _rows(batch: Batch, rows: np.ndarray) -> Batch:
    arrays = {f.name: np.ascontiguousarray(getattr(batch, f.name)[rows])
              for f in dataclasses.fields(batch) if isinstance(getattr(batch, f.name), np.ndarray)}
    return dataclasses.replace(batch, **arrays)


# --- heartbeats: what the watchdog reads ----------------------------------------------
class Heartbeat:
    """<dir>/rank-<k>.json, rewritten after every step: pid, step, time and state: "training",
    "signalled" (asked to stop: by the user, or by the engine's launcher ending the job),
    "failed" (an exception left the `with` block), "done". A no-op outside a job started by
    `launch` (no DCTTS_HEARTBEAT_DIR)."""

    def __init__(self, rank: int, environ=os.environ):
        folder = environ.get(HEARTBEAT_DIR)
        self.path = Path(folder) / f"rank-{rank}.json" if folder else None
        self.step, self.state = 0, "training"
        self.beat(0)

    def beat(self, step: int) -> None:
        self.step = step
        if self.path is None:
            return
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "step": step, "state": self.state, "time": time.time()}))
        os.replace(tmp, self.path)  # the watchdog never reads half a file

    def signalled(self, *_) -> None:
        self._end("signalled")

    def _end(self, state: str) -> None:
        self.state = state
        self.beat(self.step)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self._end("done" if exc_type is None else "signalled" if exc_type is KeyboardInterrupt else "failed")


def _read_beats(folder: Path) -> dict:
    """{rank: (record, seconds since its last beat)} of every rank that has reported."""
    beats, now = {}, time.time()
    for path in folder.glob("rank-*.json"):
        try:
            beats[int(path.stem[5:])] = (json.loads(path.read_text()), now - path.stat().st_mtime)
        except (OSError, ValueError):
            continue  # replaced while read: next poll
    return beats


def _alive(pid: int) -> bool:
    """Whether a process runs (a zombie, dead but not yet reaped by its launcher, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# --- launch ------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def engine_commands(framework: str, workers: int, worker: list, port: int | None = None) -> list:
    """[(role, command, extra environment)] of a job of `workers` processes running `python
    -m <worker...>` on this machine under `framework`'s engine (the README shows the same by
    hand, and across machines)."""
    python = [sys.executable, "-m"]
    if framework == "torch":
        return [("launcher", python + ["torch.distributed.run", "--standalone", f"--nproc-per-node={workers}",
                                       "--module"] + worker, {})]
    if framework == "chainer":
        root = ["--allow-run-as-root"] if os.geteuid() == 0 else []  # Open MPI refuses root otherwise
        return [("launcher", ["mpiexec", *root, "--oversubscribe", "--bind-to", "none", "-n", str(workers)]
                 + python + worker, {})]
    if framework == "gluon":
        port = port or free_port()
        roles = {"DMLC_PS_ROOT_URI": "127.0.0.1", "DMLC_PS_ROOT_PORT": str(port), "DMLC_NODE_HOST": "127.0.0.1",
                 "DMLC_NUM_SERVER": "1", "DMLC_NUM_WORKER": str(workers)}
        # importing mxnet in a scheduler or server process runs that role until the job ends
        serve = python[:-1] + ["-c", "import impl_gluon.runtime, mxnet"]
        return ([("scheduler", serve, {**roles, "DMLC_ROLE": "scheduler"}),
                 ("server", serve, {**roles, "DMLC_ROLE": "server"})]
                + [(f"worker {i}", python + worker, {**roles, "DMLC_ROLE": "worker", LOCAL_RANK: str(i)})
                   for i in range(workers)])
    raise ValueError(f"unknown framework {framework!r}")


def launch(framework: str, workers: int, worker: list, timeout: float = WORKER_TIMEOUT, env: dict | None = None,
           poll: float = 0.2, log: Path | None = None) -> int:
    """Run `python -m <worker...>` as a job of `workers` processes of `framework`'s engine and
    supervise it: returns 0 when every worker ended well. A worker that dies (killed, or an
    error) or that reports no finished step for `timeout` seconds ends the whole job: the
    processes are stopped and LaunchError names the rank (and `log`). SIGINT/SIGTERM is passed on
    to the workers, which agree on a step, save and stop (common.training.train_loop); returns 128 + signal.
    `log`: a file (appended to) that receives the engines' output too (_EngineOutput)."""
    if workers < 2:
        raise ValueError(f"a job needs >= 2 workers, got {workers}")
    with tempfile.TemporaryDirectory(prefix="dctts-job-") as folder, _EngineOutput(log) as output:
        # the engine's own timeout later than the watchdog's, whose message names the rank
        base = {**os.environ, ENGINE_TIMEOUT: str(round(2 * timeout)), **(env or {}), HEARTBEAT_DIR: folder}
        procs = [(role, output.follow(subprocess.Popen(cmd, env={**base, **extra}, start_new_session=True,
                                                       **output.streams)))
                 for role, cmd, extra in engine_commands(framework, workers, worker)]
        job = _Job(procs, Path(folder), workers, timeout, output)
        try:
            with _forward_signals(job):
                return job.supervise(poll)
        finally:
            job.stop()


class _EngineOutput:
    """With a `path`: the engines' stdout and stderr are copied to the file, and on to ours, stderr
    HOLD_S late, until `silence()` (the job failed). The engines' reactions to a failure (torchrun's
    SignalException traceback, mpiexec's report) then stay in the file, below the line that names
    the failure, which comes first. Without a path the engines write to ours directly."""

    def __init__(self, path: Path | None):
        self.path, self.silenced, self.threads, self.lock = path, False, [], threading.Lock()
        self.streams = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE} if path else {}
        self.where = f" (the engines' output: {path})" if path else ""

    def __enter__(self):
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(self.path, "ab")
            self.file.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} a job starts ---\n".encode())
        return self

    def follow(self, proc: subprocess.Popen) -> subprocess.Popen:
        for pipe, ours, hold in ((proc.stdout, sys.stdout, 0.0), (proc.stderr, sys.stderr, HOLD_S)):
            if pipe is not None:
                self.threads.append(threading.Thread(target=self._copy, args=(pipe, ours, hold), daemon=True))
                self.threads[-1].start()
        return proc

    def _copy(self, pipe, ours, hold: float) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        for chunk in iter(lambda: os.read(pipe.fileno(), 1 << 16), b""):
            with self.lock:
                self.file.write(chunk)
                self.file.flush()
            time.sleep(hold)
            if not self.silenced:
                ours.write(decoder.decode(chunk))
                ours.flush()

    def silence(self) -> None:
        self.silenced = True

    def __exit__(self, *exc):
        for thread in self.threads:
            thread.join(timeout=10)  # the processes are stopped: their pipes end
        if self.path:
            self.file.close()


class _Job:
    """The processes of one job and what the watchdog knows of them."""

    def __init__(self, procs: list, folder: Path, workers: int, timeout: float, output: _EngineOutput):
        self.procs, self.folder, self.workers, self.timeout, self.output = procs, folder, workers, timeout, output
        self.signum, self.poll, self.started = 0, 0.2, time.monotonic()
        self.died: dict = {}  # rank -> when it died (at the latest: the poll before it was seen dead)

    def supervise(self, poll: float) -> int:
        self.poll = poll
        while True:
            time.sleep(poll)
            beats = _read_beats(self.folder)
            failure = self._failure(beats)
            if failure:
                self.output.silence()
                raise LaunchError(f"{failure}; the job was stopped{self.output.where}. Rerun the same command to "
                                  "resume from the newest checkpoint")
            codes = [p.poll() for _, p in self.procs]
            workers_done = sum(1 for r, _ in beats.values() if r["state"] == "done") == self.workers
            if all(c is not None for c in codes) or (workers_done and self._only_services_left(codes)):
                if self.signum:
                    return 128 + self.signum
                bad = [f"{role} (exit status {c})" for (role, _), c in zip(self.procs, codes) if c]
                if bad and not workers_done:
                    self.output.silence()
                    raise LaunchError(f"{', '.join(bad)} ended the job before every worker finished{self.output.where}")
                return 0

    def _only_services_left(self, codes: list) -> bool:
        """MXNet's scheduler and server end on their own once the workers are done."""
        return all(c is not None for (role, _), c in zip(self.procs, codes) if role not in ("scheduler", "server"))

    def _failure(self, beats: dict) -> str:
        """Why the job must end now ("" while it is healthy). When one worker fails, the engine
        soon ends the others (a connection error, the launcher's SIGTERM): the culprit is the
        first to fail that was not asked to stop, a worker that vanished without a word (killed)
        counting from the previous poll."""
        now, suspects, waiting, stale = time.time(), {}, [], False
        for rank, (record, age) in sorted(beats.items()):
            state = record["state"]
            if state == "done":
                continue
            if state == "failed":
                suspects[rank] = record["time"]
            elif not _alive(record["pid"]):
                self.died.setdefault(rank, now - self.poll)
                if state != "signalled":
                    suspects[rank] = self.died[rank]
            else:
                waiting.append(rank)
                stale |= age > self.timeout
        if suspects or self.died:
            rank = min(suspects or self.died, key=(suspects or self.died).get)
            record = beats[rank][0]
            how = ("died" if record["state"] != "failed" else "failed" if self.output.path
                   else "failed (its error is above)")
            return f"worker rank {rank} (pid {record['pid']}) {how} at step {record['step']}"
        missing = sorted(set(range(self.workers)) - set(beats))
        if missing and time.monotonic() - self.started > self.timeout:
            return (f"worker rank{'s' * (len(missing) > 1)} {', '.join(map(str, missing))} had not started "
                    f"after {self.timeout:.0f} s (--worker-timeout)")
        if stale:  # in a synchronous job all wait once one hangs (each its own last beat): name every one
            return (f"no step finished for more than {self.timeout:.0f} s (--worker-timeout) on worker rank"
                    f"{'s' * (len(waiting) > 1)} " + ", ".join(f"{r} (pid {beats[r][0]['pid']}, after step "
                                                               f"{beats[r][0]['step']})" for r in waiting))
        for (role, p) in self.procs:
            code = p.poll()
            if code and not self.signum:
                reported = len(beats) == self.workers
                return (f"{role} ended with exit status {code}"
                        + ("" if reported else f" ({len(beats)} of {self.workers} workers had started)"))
        return ""

    def signal_workers(self, signum: int) -> None:
        """Pass a stop request to every worker (they agree on the step to stop at)."""
        self.signum = signum
        for record, _ in _read_beats(self.folder).values():
            try:
                os.kill(record["pid"], signum)
            except ProcessLookupError:
                pass

    def stop(self, grace: float = 3.0) -> None:
        """End whatever still runs: SIGTERM to each process group, SIGKILL after `grace` seconds."""
        live = [p for _, p in self.procs if p.poll() is None]
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for p in live:
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + grace
            while any(p.poll() is None for p in live) and time.monotonic() < deadline:
                time.sleep(0.05)
            live = [p for p in live if p.poll() is None]
            if not live:
                return


class _forward_signals:
    """While supervising: the first SIGINT/SIGTERM goes on to the workers, a second one ends the job."""

    def __init__(self, job: _Job):
        self.job, self.previous = job, {}

    def __enter__(self):
        def handler(signum, frame):
            if self.job.signum:
                raise KeyboardInterrupt
            self.job.signal_workers(signum)

        for s in (signal.SIGINT, signal.SIGTERM):
            self.previous[s] = signal.signal(s, handler)
        return self

    def __exit__(self, *exc):
        for s, h in self.previous.items():
            signal.signal(s, h)
