"""Training checkpoints, framework-neutral: one safetensors file (common.contract.weights.save, so
written atomically) holding

  * the portable weights under their canonical names,
  * Adam's state as "adam.step", "adam.m.<name>", "adam.v.<name>" (canonical names too, so a
    run trained in one framework resumes in another),
  * metadata: the TrainState fields (step, run seed, batch size, the data order: the numpy
    Generator's bit_generator.state at the start of the current epoch as JSON and the
    number of batches of that epoch already used), framework and model, besides what
    common.contract.weights writes (every hyperparameter, fingerprint).

A run directory keeps the newest few that read back as <net>-<step, 8 digits>.safetensors;
one that does not (truncated, corrupt) is renamed aside to <name>.corrupt and never counted.
"""
from __future__ import annotations

import dataclasses
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.contract import weights as W
from common.contract.spec import Spec

ADAM = "adam."
KEEP = 2
_NAME = re.compile(r"^(text2mel|ssrn)-(\d{8})\.safetensors$")


class CheckpointError(W.WeightsError):
    """A file that is not a usable training checkpoint."""


@dataclass
class TrainState:
    """Where a run stands besides weights and Adam: enough to continue it bit-identically."""

    step: int
    seed: int
    batch_size: int
    data_rng: dict  # numpy bit_generator.state at the start of the current epoch
    epoch_batches: int  # batches of the current epoch already trained on


@dataclass
class Checkpoint:
    spec: Spec
    net: str
    weights: dict
    optimizer: dict  # {"step", "m.<name>", "v.<name>"}, as Backend.get/set_optimizer_state
    state: TrainState
    framework: str  # the framework that wrote it (any framework can load it)
    path: Path


def path_for(out_dir, net: str, step: int) -> Path:
    return Path(out_dir) / f"{net}-{step:08d}.safetensors"


def listed(out_dir, net: str) -> list:
    """[(step, path)] of `net`'s checkpoints in out_dir, oldest first."""
    found = []
    if Path(out_dir).is_dir():
        for p in Path(out_dir).iterdir():
            m = _NAME.match(p.name)
            if m and m.group(1) == net:
                found.append((int(m.group(2)), p))
    return sorted(found)


def latest(out_dir, net: str):
    """The newest checkpoint of `net` in out_dir, or None."""
    found = listed(out_dir, net)
    return found[-1][1] if found else None


def latest_readable(out_dir, net: str):
    """The newest checkpoint of `net` in out_dir whose file is whole (weights.read_header), or
    None if there is none. Newer unreadable ones (a crash, a full disk) are skipped with a
    warning naming them, so that they never block what an older checkpoint allows; when
    none is readable, the newest one's error is raised."""
    errors = []
    for _, path in reversed(listed(out_dir, net)):
        try:
            W.read_header(path)
        except W.WeightsError as err:
            errors.append((path, err))
            continue
        for bad, err in errors:
            warnings.warn(f"skipped {bad.name}: {err}; using {path.name}", stacklevel=2)
        return path
    if errors:
        raise errors[0][1]
    return None


def save(out_dir, backend, state: TrainState, keep: int = KEEP) -> Path:
    """Write <out_dir>/<net>-<step>.safetensors from a Backend, then keep the newest `keep` valid ones."""
    tensors = dict(backend.get_weights())
    tensors.update({ADAM + k: np.asarray(v) for k, v in backend.get_optimizer_state().items()})
    meta = {k: json.dumps(v) for k, v in dataclasses.asdict(state).items()}
    meta.update(framework=backend.framework, model=backend.net)
    path = path_for(out_dir, backend.net, state.step)
    W.save(path, tensors, backend.spec, backend.net, meta)
    _prune(out_dir, backend.net, keep)
    return path


def _prune(out_dir, net: str, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints that read back. An unreadable one is renamed
    aside (<name>.corrupt, with a warning), not counted: counting it would delete the older valid
    file that a resume falls back to (a corrupt checkpoint written at a signal, between regular ones)."""
    valid = 0
    for _, path in reversed(listed(out_dir, net)):
        try:
            W.read_header(path)
        except W.WeightsError as err:
            aside = path.replace(path.with_name(path.name + ".corrupt"))
            warnings.warn(f"renamed {path.name} to {aside.name}: {err}", stacklevel=3)
            continue
        valid += 1
        if valid > keep:
            path.unlink()


def load(path, spec: Spec | None = None, net: str | None = None) -> Checkpoint:
    """Read a checkpoint. With `spec`/`net`, refuse one made for other hyperparameters (naming
    each differing field) or another network; truncated or corrupt files raise a clear error."""
    if spec is None or net is None:
        file_spec, file_net, _ = W.read_header(path)
        spec, net = spec or file_spec, net or file_net
    weights, meta = W.load(path, spec, net)
    fields = [f.name for f in dataclasses.fields(TrainState)]
    missing = [k for k in fields + ["framework"] if k not in meta]
    if missing:
        raise CheckpointError(f"{path}: a weight file, not a training checkpoint (no {', '.join(missing)})")
    try:
        state = TrainState(**{k: json.loads(meta[k]) for k in fields})
    except ValueError as err:
        raise CheckpointError(f"{path}: unreadable training state in the metadata: {err}") from err
    optimizer = {k[len(ADAM):]: v for k, v in meta["extra"].items() if k.startswith(ADAM)}
    wanted = ["step"] + [f"{s}.{name}" for name in weights for s in "mv"]
    lacking = [ADAM + k for k in wanted if k not in optimizer]
    if lacking:
        raise CheckpointError(f"{path}: optimizer state incomplete, missing {lacking[:5]}")
    optimizer = {k: optimizer[k] for k in wanted}
    return Checkpoint(spec, net, weights, optimizer, state, meta["framework"], Path(path))


def restore(backend, ckpt: Checkpoint) -> None:
    """Load a checkpoint's weights and optimizer state into a Backend (of any framework)."""
    backend.set_weights(ckpt.weights)
    backend.set_optimizer_state(ckpt.optimizer)
