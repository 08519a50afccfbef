"""Chainer's environment, imported first by every module of impl_chainer.

Chainer 7.8.1 is the last release; the workarounds for its age live here, each with the
reason, so no other module has to know about them.
"""
from __future__ import annotations

import re
import sys
import types

from threadpoolctl import threadpool_limits


def _skip_environment_check() -> None:
    """chainer/__init__.py imports `chainer._environment_check`, which at import time imports
    `numpy.distutils.system_info` and `pkg_resources` (only to warn about macOS Accelerate and
    optional-dependency versions). numpy 1.23's distutils imports `distutils.msvccompiler`,
    which the distutils of setuptools >= 74 lacks, and setuptools 84 (torch 2.13 needs >= 77)
    no longer ships pkg_resources: `import chainer` dies with ModuleNotFoundError. Chainer
    honours no variable to skip the check, so a no-op module takes its place in sys.modules
    before chainer is imported; the import system finds it there and never runs the real one.
    (chainer.testing, hence chainer.gradient_check, imports pkg_resources too: not used.)"""
    if "chainer" not in sys.modules:
        stub = types.ModuleType("chainer._environment_check")
        stub.check = lambda: None
        sys.modules.setdefault("chainer._environment_check", stub)


_skip_environment_check()

import chainer  # noqa: E402  (must follow the workaround above)

_thread_limits = None


def configure_threads(n: int) -> None:
    """Chainer computes on NumPy (CPU), so its thread count is NumPy's BLAS thread count."""
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
        return chainer.get_device(f"@cupy:{match.group(1) or 0}")
    except RuntimeError as err:  # Chainer's "CUDA environment is not correctly set up"
        raise RuntimeError(f"device {name!r} requested but Chainer cannot use CUDA here (it needs CuPy 7.x): "
                           f"{' '.join(str(err).split())}") from err


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
