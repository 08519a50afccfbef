"""Portable weight files: the contract between the three frameworks.

A file is safetensors (numpy API) holding float32 arrays under the canonical names
and layouts of `common.contract.spec` (conv (out, in, k), transposed conv (in, out, k),
embedding (vocab, e), norm (channels,)). Its metadata carries the format tag, the
network ("text2mel" or "ssrn"), every hyperparameter of the spec (JSON) and the
spec's fingerprint, so a file can never be loaded into a model of other
hyperparameters. Checkpoints add optimizer tensors and training state to the same file.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file, save_file

from common.contract import spec as S

FORMAT = "dctts-bench-weights/1"
TEMP_PREFIX, TEMP_SUFFIX = ".tmp-", ".tmp"  # atomic_write's temporary files: .tmp-<name>.<random>.tmp


class WeightsError(ValueError):
    """A weight file that cannot be used: unreadable, or made for another model."""


def init_weights(spec: S.Spec, net: str, seed: int = 0) -> dict:
    """Fresh float32 weights drawn in NumPy, so every framework starts from the same numbers.
    Convolutions: U(+-1/sqrt(fan_in)) for weights and biases (PyTorch's default);
    embedding N(0, 0.3) [ours]; norm gamma 1, beta 0; batch-norm running stats 0 / 1."""
    rng = np.random.default_rng(seed)
    out = {}
    for group in S.layers(spec, net).values():
        for layer in group:
            shapes = S.param_shapes(spec, layer)
            w = shapes[f"{layer.name}.weight"]
            fan_in = w[0] * w[2] if layer.kind == S.DECONV else (w[1] * w[2] if len(w) == 3 else 0)
            for name, shape in shapes.items():
                if name.endswith((".norm.gamma", ".norm.var")):
                    a = np.ones(shape)
                elif name.endswith((".norm.beta", ".norm.mean")):
                    a = np.zeros(shape)
                elif layer.kind == S.EMBED:
                    a = rng.normal(0.0, 0.3, shape)
                else:
                    fan = shape[1] * shape[2] if name.endswith((".dw.weight", ".reduce.weight")) else fan_in
                    a = rng.uniform(-1, 1, shape) / np.sqrt(fan)
                out[name] = a.astype(np.float32)
    return out


def check_fit(weights: dict, shapes: dict, what: str = "weights") -> None:
    """Refuse (WeightsError) weights that do not fit a model's {name: shape}: missing,
    unexpected or misshapen arrays, all named. Every framework calls it before loading."""
    missing = [k for k in shapes if k not in weights]
    unexpected = [k for k in weights if k not in shapes]
    wrong = [f"{k} {tuple(np.shape(weights[k]))} != {tuple(s)}" for k, s in shapes.items()
             if k in weights and tuple(np.shape(weights[k])) != tuple(s)]
    if missing or unexpected or wrong:
        raise WeightsError(f"{what} do not fit the model: missing {missing[:5]} unexpected {unexpected[:5]} "
                           f"misshapen {wrong[:5]}")


def check_optimizer_state(state: dict, shapes: dict) -> None:
    """check_fit for an Adam state {"step", "m.<name>", "v.<name>"} and the model's {name: shape}:
    every framework's Trainer.set_state calls it before restoring anything."""
    check_fit(state, {"step": (), **{f"{k}.{name}": s for name, s in shapes.items() for k in "mv"}}, "optimizer state")


def save(path, tensors: dict, spec: S.Spec, net: str, meta: dict | None = None) -> None:
    """Write atomically (atomic_write): a crash never leaves a half-written file."""
    metadata = {"format": FORMAT, "net": net, "spec": json.dumps(spec.to_dict()),
                "fingerprint": spec.fingerprint(), **(meta or {})}
    arrays = {k: np.require(v, requirements="C") for k, v in tensors.items()}  # keeps 0-d arrays 0-d
    atomic_write(path, lambda tmp: save_file(arrays, tmp, metadata=metadata))


def atomic_write(path, write) -> None:
    """Call write(temporary path) in path's folder (created if needed), then rename the file to
    `path`: an interrupted write never leaves a partial file under the final name. The file
    gets the mode open() would give (0o666 less the umask), not mkstemp's 0o600. The temporary
    file is named .tmp-<name>.<random>.tmp, so that remove_leftovers can find it after a kill."""
    directory, name = os.path.split(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{name}.", suffix=TEMP_SUFFIX, dir=directory)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def remove_leftovers(directory, pattern: str = TEMP_PREFIX + "*", older_than: float = 0.0) -> list:
    """Delete the temporary files of atomic_write matching `pattern` in `directory` that a killed
    process left behind, last written over `older_than` seconds ago (in a folder that several
    processes write, a younger one may be a write in progress). Warns; returns their paths."""
    now, removed = time.time(), []
    for p in sorted(Path(directory).glob(pattern + TEMP_SUFFIX)):
        with contextlib.suppress(FileNotFoundError):  # another process may remove it first
            if p.is_file() and now - p.stat().st_mtime > older_than:
                p.unlink()
                removed.append(p)
    if removed:
        warnings.warn(f"removed {len(removed)} temporary file(s) left in {directory} by an interrupted write",
                      stacklevel=2)
    return removed


def _umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def read_header(path) -> tuple:
    """(spec, net, metadata) of a weight file, checked (readable, whole: its size matches its
    header, our format) without reading the arrays: cheap enough to pick among several files."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise WeightsError(f"{path}: no such weight file")
    if not os.access(path, os.R_OK):  # safetensors would call this "No such file or directory"
        raise WeightsError(f"{path}: permission denied (cannot read the file)")
    try:
        with safe_open(path, "np") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, ValueError, OSError) as err:
        raise _unreadable(path, err) from err
    if metadata.get("format") != FORMAT:
        raise WeightsError(f"{path}: not a dctts-bench weight file (format {metadata.get('format')!r}, expected {FORMAT!r})")
    fields = json.loads(metadata["spec"])
    unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(S.Spec)})
    if unknown:
        raise WeightsError(f"{path}: made by a newer dctts-bench (hyperparameters {unknown} are unknown here)")
    return S.Spec(**fields), metadata["net"], metadata


def read(path) -> tuple:
    """(tensors, spec, net, metadata) of a file, with clear errors for unusable files."""
    spec, net, metadata = read_header(path)
    try:
        tensors = load_file(path)
    except (SafetensorError, ValueError, OSError) as err:
        raise _unreadable(path, err) from err
    return tensors, spec, net, metadata


def _unreadable(path, err) -> WeightsError:
    return WeightsError(f"{path}: not a readable safetensors weight file (truncated or corrupt?): {err}")


def load(path, spec: S.Spec, net: str) -> tuple:
    """(weights, metadata) of `net`, refusing a file made for another network or other
    hyperparameters (naming every differing field) or missing/misshapen arrays."""
    tensors, file_spec, file_net, metadata = read(path)
    if file_net != net:
        raise WeightsError(f"{path}: holds {file_net} weights, not {net}")
    diff = spec.diff(file_spec)
    if diff:
        fields = ", ".join(f"{k} (model {a!r}, file {b!r})" for k, (a, b) in diff.items())
        raise WeightsError(f"{path}: made with other hyperparameters: {fields}")
    expected = S.net_param_shapes(spec, net)
    weights = {k: tensors[k] for k in expected if k in tensors}
    try:
        check_fit(weights, expected)
    except WeightsError as err:
        raise WeightsError(f"{path}: {err}") from None
    extra = {k: v for k, v in tensors.items() if k not in expected}
    return weights, {**metadata, "extra": extra}
