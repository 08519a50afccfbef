"""Chainer's environment, imported first by every module of impl_chainer.

Chainer 7.8.1 is the last release; the workarounds for its age live here, each with the
reason, so no other module has to know about them.
"""
from __future__ import annotations

import os
import re
import sys
import warnings

import numpy as np
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
_threads = os.cpu_count() or 1  # what configure_threads set last (BLAS's default: every core)


def configure_threads(n: int) -> None:
    """Chainer computes on NumPy (CPU), so its thread count is the BLAS thread count: NumPy's
    and SciPy's OpenBLAS (impl_chainer.conv), both limited here."""
    global _thread_limits, _threads
    if n < 1:
        raise ValueError(f"thread count must be >= 1, got {n}")
    if _thread_limits is not None:
        _thread_limits.restore_original_limits()
    _thread_limits = threadpool_limits(limits=n, user_api="blas")
    _threads = n


def thread_count() -> int:
    """The thread count configure_threads set (the number of cores before any call): also the
    workers of the written-out Adam (impl_chainer/train.py), whose NumPy ufuncs run one thread each."""
    return _threads


def resolve_device(name: str = "cpu"):
    """"cpu" -> Chainer's @numpy device; "cuda:N" -> @cupy:N, "cuda" -> @cupy:<the process's local
    MPI rank> (0 outside an MPI job), which needs CuPy (Chainer 7.8.1 declares cupy >= 7.7, < 8).
    Code then stays device-agnostic through device.xp and device.send."""
    match = re.fullmatch(r"cpu|cuda(?::(\d+))?", name)
    if match is None:
        raise ValueError(f"unknown device {name!r}; use 'cpu', 'cuda' or 'cuda:N'")
    if name == "cpu":
        return chainer.get_device("@numpy")
    index = match.group(1) or mpi_local_rank()  # a data-parallel worker's own GPU (see mpi_local_rank)
    try:
        device = chainer.get_device(f"@cupy:{index}")
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
    They re-validate every function's inputs in Python on each call, a cost that matters most at
    small sizes (measurements: results/implementation-notes.md, "chainer: argument type checks").
    The Backend (which training, the CLI and the benchmarks drive) computes inside this; the
    unit tests also call the links directly, checks on."""
    return chainer.using_config("type_check", False)


def unchecked_steps(steps):
    """The generator `steps` with each of its steps (up to its next yield) run inside unchecked(),
    never across a yield: the consumer's code between two items runs with its own configuration.
    Closing this generator closes `steps`."""
    try:
        while True:
            with unchecked():
                try:
                    item = next(steps)
                except StopIteration:
                    return
            yield item
    finally:
        steps.close()


def to_numpy(array):
    """A NumPy array (or Variable's array) from any device, for results leaving the framework."""
    return chainer.backend.CpuDevice().send(chainer.as_array(array))


# --- data-parallel training: ChainerMN over MPI (mpi4py) ----------------------------------------
# mpi4py initializes MPI when it is imported, so nothing here imports it (or chainermn) before
# join_job: a plain chainer environment, without mpi4py or outside mpiexec, keeps working.

_communicators = {}  # one per communicator kind and process: every Backend of the process shares it


def mpi_local_rank() -> int:
    """This process's rank among the job's processes on its machine, from the environment the MPI
    launcher sets (Open MPI's mpiexec: OMPI_COMM_WORLD_LOCAL_RANK; MPICH/Hydra: MPI_LOCALRANKID);
    0 outside an MPI job. Read without initializing MPI, so that a worker's Backend("cuda") puts
    its model on its own GPU from the start (ChainerMN's comm.intra_rank, known only after MPI
    starts, is the same number: join_job checks it)."""
    for var in ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def join_job(gpu: bool):
    """The ChainerMN communicator of the MPI job this process was started in (mpiexec -n N ...,
    any launcher that runs the processes as one MPI_COMM_WORLD), made on the first call (MPI starts
    here: `import chainermn` and create_communicator import mpi4py.MPI) and shared by every later
    one. "naive" on the CPU: one MPI_Allreduce per parameter, the only ChainerMN communicator for
    NumPy arrays; "pure_nccl" on GPUs: every gradient packed into one buffer, all-reduced by NCCL.
    Every process of the job must call this at the same point (it is collective: ChainerMN gathers
    the host names to work out intra_rank).

    Failure handling: MPI has no timeout for a collective. A rank whose Python raises uncaught
    would otherwise finalize MPI on its way out while its peers wait in an all-reduce forever;
    ChainerMN's global_except_hook (installed here; what CHAINERMN_FORCE_ABORT_ON_EXCEPTION
    would install at import) prints the traceback and calls MPI_Abort, which makes mpiexec end
    every rank of the job. A rank that dies outright (SIGKILL, OOM) is noticed by mpiexec itself,
    which then kills the others. A rank leaving by sys.exit(nonzero) is covered by
    _abort_on_failed_exit."""
    name = "pure_nccl" if gpu else "naive"
    if name not in _communicators:
        import chainermn  # noqa: F401  (its import may install the except hook itself; see above)
        from chainermn import global_except_hook

        if sys.excepthook is not global_except_hook._global_except_hook:
            global_except_hook.add_hook()
        _abort_on_failed_exit()
        _communicators[name] = chainermn.create_communicator(name)
    return _communicators[name]


def _abort_on_failed_exit() -> None:
    """sys.exit(status) with a nonzero status also ends the whole job: mpi4py (>= 4) then calls
    MPI_Abort(status) at interpreter exit instead of MPI_Finalize (mpi4py.run.set_abort_status,
    what `python -m mpi4py` does for its script), so a rank that gives up cleanly cannot leave its
    peers blocked in a collective either. Implemented by wrapping sys.exit, since SystemExit does
    not reach sys.excepthook."""
    if getattr(sys.exit, "_dctts_mpi_abort", False):
        return
    try:
        from mpi4py.run import set_abort_status
    except ImportError:  # mpi4py 3: no abort status; the except hook still covers exceptions
        return
    plain_exit = sys.exit

    def exit_aborting_job_on_failure(status=None):
        set_abort_status(SystemExit(status))
        plain_exit(status)

    exit_aborting_job_on_failure._dctts_mpi_abort = True
    sys.exit = exit_aborting_job_on_failure


def mean_grads(comm, model) -> None:
    """Replace every gradient of `model` by its mean over the job's workers, through the
    communicator (comm.multi_node_mean_grad: what chainermn.create_multi_node_optimizer calls
    between backward and update). Quirk: the naive communicator all-reduces each gradient in
    place through a buffer from numpy.ascontiguousarray, so a non-contiguous gradient would be
    averaged into a temporary copy and silently stay unaveraged: made contiguous first (all of
    ours are: a no-op check). zero_fill: a parameter without a gradient takes part as zeros, so
    every rank all-reduces the same list of arrays."""
    for _, p in model.namedparams():
        if p.grad is not None and not p.grad.flags.c_contiguous:
            p.grad = p.xp.ascontiguousarray(p.grad)
    comm.multi_node_mean_grad(model, zero_fill=True)


def mean_values(comm, values):
    """Element-wise mean over the workers of a 1-D float32 NumPy array: comm.allreduce (an
    MPI_Allreduce sum, ChainerMN's public array all-reduce, on host memory with every
    communicator), then times 1/size as the communicators' gradient mean does."""
    values = np.ascontiguousarray(values, np.float32)
    total = comm.allreduce(values)
    total *= np.float32(1.0 / comm.size)
    return total
