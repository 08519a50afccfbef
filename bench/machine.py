"""What a result needs to be read later: thread settings, the machine, memory.

Imports only the standard library at module level: the worker calls `apply_threads`
before numpy or any framework is imported (thread pools are sized at import time).
"""
from __future__ import annotations

import os
import platform
import resource
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# The same policy as the command line's (common.framework.configure_threads): n threads per operator
# and one operator at a time. MXNET_CPU_WORKER_NTHREADS is left at MXNet's default (1) as dctts-train
# leaves it: set to n it ran n operators at once, each with n OpenMP threads, on n cores.
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "DCTTS_THREADS")


def thread_env(n: int) -> dict:
    """The environment variables that fix every framework's and BLAS's thread count to `n`."""
    if n < 1:
        raise ValueError(f"thread count must be >= 1, got {n}")
    return {var: str(n) for var in THREAD_VARS}


# What a fair fp32 comparison on a GPU fixes for every framework, set before any imports:
# NVIDIA_TF32_OVERRIDE=0 turns TF32 off in cuBLAS and cuDNN whatever a framework asks for (torch
# also sets its own flags: impl_torch.runtime.fp32_gpu_numerics); cuDNN's autotuner on in all three
# (MXNet's variable; torch's cudnn.benchmark and chainer's config.autotune are set by their
# runtimes), with the warm-up steps outside the clock.
GPU_ENV = {"NVIDIA_TF32_OVERRIDE": "0", "MXNET_CUDNN_AUTOTUNE_DEFAULT": "1"}


def subprocess_env(n: int, device: str = "cpu") -> dict:
    """A benchmark subprocess's environment: `thread_env(n)`, GPU_ENV off the CPU, and the
    project importable."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, **thread_env(n), **({} if device == "cpu" else GPU_ENV), "PYTHONPATH": path}


def worker_parser(prog: str):
    """The options every `--worker` process of a benchmark module takes (its own ones are added)."""
    import argparse

    p = argparse.ArgumentParser(prog=prog)
    p.add_argument("--worker", action="store_true")
    p.add_argument("--framework", required=True)
    p.add_argument("--preset", required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--result", required=True)
    return p


def run_worker_process(cmd: list, result: Path, env: dict, timeout: float, base: dict) -> dict:
    """Run a benchmark worker that writes its record as JSON to `result` and return the record; a
    timeout, a crash or a missing answer becomes `base` with status "error" and the reason."""
    import json

    result.unlink(missing_ok=True)
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**base, "status": "error", "reason": f"timed out after {timeout:.0f} s"}
    if not result.is_file():
        return {**base, "status": "error",
                "reason": f"worker exited with {proc.returncode} and no result: {proc.stderr[-2000:]}"}
    record = json.loads(result.read_text())
    result.unlink()
    return record


def apply_threads(n: int) -> None:
    """Set `thread_env(n)` in this process; refuses once numpy is imported (too late to matter)."""
    if "numpy" in sys.modules:
        raise RuntimeError("apply_threads must run before numpy is imported")
    os.environ.update(thread_env(n))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git(*args) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()


def git_commit() -> str:
    """HEAD's hash, with "+dirty" when the working tree differs from it; in a copied working
    tree without git (a GPU machine's copy) $DCTTS_GIT_COMMIT, else "unknown"."""
    try:
        return _git("rev-parse", "HEAD") + ("+dirty" if _git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("DCTTS_GIT_COMMIT", "unknown")


def file_commit(path: Path) -> str:
    """The commit that last changed `path` ("+modified" when the working tree's copy differs from
    it; "uncommitted" when no commit has it; "unknown" without git)."""
    try:
        commit = _git("log", "-1", "--format=%h", "--", str(path))
        if not commit:
            return "uncommitted"
        return commit + ("+modified" if _git("status", "--porcelain", "--", str(path)) else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def commit_line(info: dict, allow_dirty: bool) -> str:
    """A header's "git <commit>", saying when a dirty tree's results were written on purpose."""
    dirty = info["git_commit"].endswith("+dirty")
    return f"git {info['git_commit']}" + (" (written with --allow-dirty)" if dirty and allow_dirty else "")


def refuses_dirty(out: Path) -> bool:
    """Whether writing to `out` needs a clean tree: it is under the repository's results/ (what is
    committed and quoted) and tracked files differ from HEAD."""
    return out.resolve().is_relative_to(REPO / "results") and git_commit().endswith("+dirty")


def gpu_model(device: str) -> str | None:
    """The GPU a `device` such as "cuda:1" names, as nvidia-smi describes it (name, memory,
    driver; the same for every framework, whichever imports); None on the CPU."""
    if device == "cpu":
        return None
    index = device.partition(":")[2] or "0"
    try:
        out = subprocess.run(["nvidia-smi", "-i", index, "--query-gpu=name,memory.total,driver_version",
                              "--format=csv,noheader"], capture_output=True, text=True, check=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as err:
        return f"unknown (nvidia-smi: {type(err).__name__})"
    fields = [field.strip() for field in out.stdout.strip().split(",")]
    if len(fields) != 3:
        return out.stdout.strip() or "unknown (nvidia-smi printed nothing)"
    return f"{fields[0]}, {fields[1]}, driver {fields[2]}"


def machine(device: str = "cpu") -> dict:
    """The orchestrating machine: CPU, cores, OS, Python, git commit (and the GPU off the CPU)."""
    info = {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "git_commit": git_commit()}
    return info if device == "cpu" else {**info, "gpu": gpu_model(device)}


def described(info: dict) -> str:
    """`machine()`'s hardware in a header's words: the CPU and its cores, and the GPU if any."""
    return f"{info['cpu']}, {info['cores']} cores" + (f"; GPU: {info['gpu']}" if info.get("gpu") else "")


def _statm_rss_mb() -> float | None:
    """Resident set size now from Linux /proc (None elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    except (OSError, ValueError, IndexError):
        return None


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports ru_maxrss in KiB), at least the
    current one: Linux folds its per-thread RSS counters into the high-water mark only now and then,
    so ru_maxrss read just after the process grew was seen 0.1 MB below /proc's current RSS."""
    scale = 1 if sys.platform == "darwin" else 1024
    return max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2 ** 20, _statm_rss_mb() or 0.0)


def current_rss_mb() -> float:
    """Resident set size now (Linux /proc; falls back to the peak elsewhere)."""
    now = _statm_rss_mb()
    return peak_rss_mb() if now is None else now

