"""The one small interface through which common/ (training loop, checkpoints, CLI,
benchmarks, parity tests) drives a framework. Each impl_<fw>/backend.py subclasses
`Backend`; nothing in common/ imports a framework.
"""
from __future__ import annotations

import abc
import ctypes
import importlib

import numpy as np

from common.data.batch import Batch
from common.contract.synthesis import batch_synthesis, check_chunk, check_ids, stream_mels
from common.environment import SetupError
from common.contract.spec import Spec

FRAMEWORKS = ("torch", "chainer", "gluon")
# The tiers of operators a Backend can run (its `ops`): "tuned", the fastest code we have (hand-written
# kernels and fused nodes where they measured faster), and "stock", only the framework's own layers,
# functions and optimizer, as a user writing DC-TTS in it would. Both compute the spec's numbers.
OPS = ("tuned", "stock")


def ordered_tiers(names) -> list:
    """The distinct tiers among `names`, in OPS's order (tuned first): how tables list them."""
    return sorted(set(names), key=OPS.index)


class Backend(abc.ABC):
    """One network (Text2Mel or SSRN) of one framework, with its Adam state.

    Construction builds the network by walking `common.contract.spec.layers(spec, net)` and loads
    `common.contract.weights.init_weights(spec, net, seed)`, so every framework starts from the
    same numbers. `device` is "cpu" or "cuda" (or "cuda:N"); `ops` one of OPS (the same numbers,
    the same contract and parity tests; only the speed differs). The optimizer state and the
    training steps go to `trainer`, the framework's impl_<fw>.train.Trainer, where it has one."""

    framework: str = ""
    trainer = None  # impl_<fw>.train.Trainer: get_state, set_state, train_step, gradients

    def __init__(self, spec: Spec, net: str, device: str = "cpu", seed: int = 0, ops: str = "tuned"):
        if ops not in OPS:
            raise ValueError(f"unknown ops {ops!r}; choose one of {OPS}")
        self.spec, self.net, self.device, self.seed_value, self.ops = spec, net, device, seed, ops

    # --- weights and optimizer state (canonical names, float32 NumPy) ---------------
    @abc.abstractmethod
    def get_weights(self) -> dict: ...

    @abc.abstractmethod
    def set_weights(self, weights: dict) -> None: ...

    def get_optimizer_state(self) -> dict:
        """{"step": int64 array (), "m.<name>": ..., "v.<name>": ...} as float32 NumPy."""
        return self.trainer.get_state()

    def set_optimizer_state(self, state: dict) -> None:
        """Restore get_optimizer_state's form, of any framework; common.contract.weights.WeightsError (and
        nothing changed) where it does not fit (common.contract.weights.check_optimizer_state)."""
        self.trainer.set_state(state)

    @abc.abstractmethod
    def seed(self, seed: int) -> None:
        """Reseed the framework's random stream (dropout). The training loop calls it
        before every step with a seed derived from (run seed, step), which makes resumed
        runs bit-identical without saving framework RNG state."""

    # --- compute ---------------------------------------------------------------
    def train_step(self, batch: Batch) -> dict:
        """Forward (train mode), backward, Adam update (common.contract.losses.adam_update's
        formula, lr = common.contract.losses.learning_rate(spec, step)). Returns the losses
        {"loss", "l1", "bin"(, "att")} as Python floats."""
        return self.trainer.train_step(batch)

    def gradients(self, batch: Batch) -> tuple:
        """(losses, {name: gradient}) in eval mode (no dropout), no update."""
        return self.trainer.gradients(batch)

    @abc.abstractmethod
    def forward(self, batch: Batch) -> dict:
        """Eval-mode teacher-forced outputs as NumPy: Text2Mel {"logits" (B,F,T),
        "attention" (B,N,T)}; SSRN {"logits" (B,F',rT)} from batch.mel."""

    def synthesize_batch(self, texts: list, max_frames: int) -> list:
        """Text2Mel only: autoregressive synthesis of several utterances at once (each ids (N_b,),
        ending with end-of-text) with forcibly incremental attention (common.contract.synthesis), each
        stopping at its own end of text or after `max_frames` frames. Returns one
        common.contract.synthesis.Synthesis per utterance, the same as synthesizing it alone: the pair
        (mel (F, T_b) in [0, 1], attention (N_b, T_b)) with .forced (T_b,) bool, the frames
        whose column the forcing replaced: common.contract.synthesis.batch_synthesis over `decode`."""
        return batch_synthesis(self.decode, texts, self.spec, max_frames)

    def synthesize(self, text: np.ndarray, max_frames: int) -> tuple:
        """One utterance: synthesize_batch([text], max_frames)[0]."""
        return self.synthesize_batch([text], max_frames)[0]

    def decode(self, texts: list, max_frames: int, block: int):
        """Text2Mel only: the frame-by-frame synthesis under synthesize_batch, as a generator of
        common.contract.synthesis.Block handed to the host every `block` frames, for up to
        `max_frames` frames; whoever reads it stops it (common.contract.synthesis.collect, stream_mels)."""
        raise NotImplementedError(f"{self.net} does not synthesize from text")

    def synthesize_stream(self, text: np.ndarray, max_frames: int, chunk: int):
        """One utterance's mel (F, n) `chunk` frames at a time, each as soon as Text2Mel has decoded
        it (the last one shorter): together synthesize(text, max_frames)'s mel. The text and the
        chunk size are checked at the call, not at the first frame."""
        ids, chunk = check_ids(text, self.spec, max_frames), check_chunk(chunk)
        return stream_mels(self.decode([ids], max_frames, chunk), len(ids))

    def upsample(self, mel: np.ndarray) -> np.ndarray:
        """SSRN only: reduced mel (F, T) -> magnitudes (F', r*T) in [0, 1], eval mode."""
        raise NotImplementedError(f"{self.net} does not upsample mels")

    def sync(self) -> None:
        """Block until queued device work is done (for clocks)."""

    # --- data-parallel training (common.training.distributed) ----------------------------------
    def join_workers(self) -> tuple:
        """Join the data-parallel job this process was started in (by common.training.distributed.launch
        or the engine's own launcher: torchrun, mpiexec, MXNet's scheduler/server/worker roles)
        through the framework's own engine (torch.distributed + DistributedDataParallel,
        ChainerMN, KVStore dist_sync). From then on train_step and gradients use the MEAN of
        every worker's gradients (each worker's losses are its shard's share: Batch.weight),
        clipped (spec.grad_clip) after averaging. Returns (rank, workers)."""
        raise NotImplementedError(f"{self.framework} has no data-parallel training")

    def mean_over_workers(self, values: np.ndarray) -> np.ndarray:
        """The element-wise mean over the workers of a 1-D float32 array, through the same
        engine: the losses logged once, the stop flag every worker must agree on, the
        benchmark's timing of an all-reduce. Before join_workers (one process): values."""
        return np.asarray(values, np.float32)


# glibc's mallopt parameters (malloc.h) and the values keep_freed_memory sets
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 << 20  # the largest glibc accepts: blocks above it are still mapped and unmapped
TRIM_THRESHOLD = 1 << 30  # free memory kept at the top of the heap before any is returned


def keep_freed_memory() -> bool:
    """Let glibc keep freed memory for the next allocation instead of returning it to the OS, in
    this process, whatever the framework: a training step allocates and frees hundreds of MB of
    temporaries through malloc (NumPy's and PyTorch's CPU allocators; MXNet pools its own), and by
    default glibc maps and unmaps the large ones and trims the heap, so every step faults the
    same pages in again (measurements: results/implementation-notes.md, "all: glibc's allocator").
    Returns whether it applied (False without glibc)."""
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def load_backend(framework: str, ops: str = "tuned") -> type:
    """The Backend class of `framework`, imported lazily (each framework is an optional extra),
    in a process whose allocator keeps freed memory (keep_freed_memory); for ops="stock" a
    subclass whose instances run that tier unless told otherwise (so that whatever builds
    backends from a class -- the training loop, the benchmark -- runs the tier it was given)."""
    if framework not in FRAMEWORKS:
        raise ValueError(f"unknown framework {framework!r}; choose one of {FRAMEWORKS}")
    if ops not in OPS:
        raise ValueError(f"unknown ops {ops!r}; choose one of {OPS}")
    keep_freed_memory()
    try:
        module = importlib.import_module(f"impl_{framework}.backend")
    except ImportError as err:
        raise SetupError(f"framework {framework!r} is not usable here ({err}); install it with "
                           f"`pip install -c constraints.txt -e .[{framework}]`") from err
    return module.Backend if ops == "tuned" else with_ops(module.Backend, ops)


def with_ops(cls: type, ops: str) -> type:
    """A subclass of the Backend class `cls` whose default tier is `ops`."""
    def __init__(self, *args, ops: str = ops, **kwargs):
        cls.__init__(self, *args, ops=ops, **kwargs)

    return type(f"{cls.__name__}[{ops}]", (cls,), {"__init__": __init__, "__module__": cls.__module__})


def configure_threads(framework: str, n: int) -> bool:
    """impl_<framework>.runtime.configure_threads(n), before the framework does any work (MXNet
    needs it before its first import). Returns False where the package has none (an unknown or
    missing framework: loading its backend then gives the clear error)."""
    try:
        runtime = importlib.import_module(f"impl_{framework}.runtime")
    except ImportError:
        return False
    configure = getattr(runtime, "configure_threads", None)
    if configure is not None:
        configure(n)
    return configure is not None
