"""Chainer's environment, imported first by every module of impl_chainer.

Chainer 7.8.1 is the last release; the workarounds for its age live here, each with the
reason, so no other module has to know about them.
"""
from __future__ import annotations

import re
import warnings

from threadpoolctl import threadpool_limits


def _import_chainer():
    """chainer/__init__.py runs `chainer._environment_check`, which imports numpy.distutils and
    pkg_resources: the project's environment provides both (constraints.txt pins setuptools
    < 81; common.environment.SITE_FILE selects Python's own distutils). An environment without
    them fails here with the way to fix it rather than deep inside numpy. The deprecation
    warnings of those two old APIs, raised on every import, are silenced here."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning, module="numpy.distutils|chainer")
            warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
            import chainer
    except ModuleNotFoundError as err:
        if err.name not in ("distutils.msvccompiler", "pkg_resources"):
            raise
        raise ImportError(f"chainer 7.8.1 cannot be imported here ({err}): this environment lacks what "
                          "common/environment.py sets up; run `python -m common.environment --site-file` in it "
                          "and install with `pip install -c constraints.txt -e .[chainer]`") from err
    return chainer


chainer = _import_chainer()

# impl_chainer.conv multiplies through SciPy's BLAS (its own OpenBLAS, beside NumPy's): loaded
# here, before any configure_threads call, so that the thread limit below covers it too.
from scipy.linalg import blas as _scipy_blas  # noqa: E402,F401

_thread_limits = None


def configure_threads(n: int) -> None:
    """Chainer computes on NumPy (CPU), so its thread count is the BLAS thread count: NumPy's
    and SciPy's OpenBLAS (impl_chainer.conv), both limited here."""
    global _thread_limits
    if n < 1:
        raise ValueError(f"thread count must be >= 1, got {n}")
    if _thread_limits is not None:
        _thread_limits.restore_original_limits()
    _thread_limits = threadpool_limits(limits=n, user_api="blas")


def resolve_device(name: str = "cpu"):
    """"cpu" -> Chainer's @numpy device; "cuda" / "cuda:N" -> @cupy:N, which needs CuPy (Chainer
    7.8.1 declares cupy >= 7.7, < 8). Code then stays device-agnostic through device.xp and
    device.send."""
    match = re.fullmatch(r"cpu|cuda(?::(\d+))?", name)
    if match is None:
        raise ValueError(f"unknown device {name!r}; use 'cpu', 'cuda' or 'cuda:N'")
    if name == "cpu":
        return chainer.get_device("@numpy")
    try:
        device = chainer.get_device(f"@cupy:{match.group(1) or 0}")
    except RuntimeError as err:  # Chainer's "CUDA environment is not correctly set up"
        raise RuntimeError(f"device {name!r} requested but Chainer cannot use CUDA here (it needs CuPy 7.x): "
                           f"{' '.join(str(err).split())}") from err
    gpu_autotuning()
    return device


def gpu_autotuning() -> None:
    """cuDNN's autotuner on (chainer.config.autotune: each convolution shape timed once, the
    fastest algorithm kept), as in the other frameworks (bench/machine.GPU_ENV, torch's
    cudnn.benchmark). TF32 is off through NVIDIA_TF32_OVERRIDE=0 (CuPy 7 has no switch of its own)."""
    chainer.global_config.autotune = True


def unchecked():
    """Chainer's per-call argument type checks off (chainer.config.type_check is on by default).
    They re-validate every function's inputs in Python on each call: measured (Text2Mel train
    step, B=4, 1 thread, CPU-time medians of 10 interleaved runs) 9% of a `tiny` step, 2% of a
    `small` one, 0-1.5% at `paper`. The Backend (which training, the CLI and the benchmarks
    drive) computes inside this; the unit tests also call the links directly, checks on."""
    return chainer.using_config("type_check", False)


def to_numpy(array):
    """A NumPy array (or Variable's array) from any device, for results leaving the framework."""
    return chainer.backend.CpuDevice().send(chainer.as_array(array))
