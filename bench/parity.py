"""The benchmark's parity gate, on what is timed.

Before any clock starts, in the run's own process: the forward pass against common.contract.reference
(a framework that computes something else is not timed) and, for a training task, one training
step (dropout off: the reference has none) whose losses must be the reference's. What a
framework alone cannot check is compared across frameworks by the orchestrator afterwards
(`cross_check`): each run leaves in --out/gate/ a strided sample of its step's weight updates
(training) or the mels it synthesized in the timed steps (synthesis), and the table's header says
how far apart the frameworks were."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from common.data.batch import Batch
from common.contract.compare import global_relative_error, reference_losses, reference_outputs, relative_error

GATE_TOL = 1e-4  # relative: max abs error / max abs reference
LOSS_TOL = 1e-5  # relative: a training step's losses vs the reference's (tests/parity/test_forward.py's)
# Relative over the sampled updates of one Adam step, framework vs framework. Adam's first step is nearly
# lr x sign(gradient), so an element whose gradient round-off turns over flips its update: measured
# (2026-12-07, AMD EPYC) 1.7-2.6e-6 at `paper` and 0.9-4.8e-4 at `small` over two runs; ~3x the largest.
UPDATE_TOL = 1.5e-3
MEL_TOL = 1e-4  # max abs, mels in [0, 1] (tests/parity/test_training.py's)
UPDATE_SAMPLE = 2048  # entries of each parameter's update kept (evenly strided over the flattened array)


def parity_gate(backend, weights: dict, batch: Batch, tol: float = GATE_TOL) -> dict:
    """Backend.forward vs common.contract.reference from `weights` on `batch`.
    Returns {"passed", "tol", "errors": {output: relative error}}."""
    got = backend.forward(batch)
    want = reference_outputs(backend.spec, backend.net, weights, batch)
    errors = {k: relative_error(got.get(k, np.empty(0)), v) for k, v in want.items()}
    return {"passed": all(e <= tol for e in errors.values()), "tol": tol, "errors": errors}


def train_step_gate(backend_cls, spec, net: str, weights: dict, batch: Batch, device: str, seed: int) -> tuple:
    """One training step of a fresh `backend_cls` network from `weights`, dropout off: ({"passed",
    "tol", "errors": {loss: relative error vs common.contract.reference}}, {parameter: strided sample of
    its update}). Batch norm's running statistics are left out of the updates (not Adam's)."""
    spec = spec.replace(dropout=0.0)
    backend = backend_cls(spec, net, device=device, seed=seed)
    backend.set_weights(weights)
    backend.seed(seed)
    got = backend.train_step(batch)
    want = reference_losses(spec, net, weights, batch, {} if spec.norm == "batch" else None)
    errors = {k: abs(float(got[k]) - float(v)) / max(abs(float(v)), 1e-30) for k, v in want.items()}
    after = backend.get_weights()
    updates = {k: sample(after[k].astype(np.float64) - weights[k]) for k in sorted(weights)
               if not k.endswith((".norm.mean", ".norm.var"))}
    return {"passed": all(e <= LOSS_TOL for e in errors.values()), "tol": LOSS_TOL, "errors": errors}, updates


def sample(array: np.ndarray, n: int = UPDATE_SAMPLE) -> np.ndarray:
    flat = np.asarray(array).ravel()
    return flat[np.linspace(0, flat.size - 1, min(n, flat.size)).astype(np.int64)]


def save(path: Path, arrays: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)


def cross_check(gate_dir: Path) -> list:
    """Header lines: per (task, preset, batch size) left in `gate_dir`, every framework against the
    first (in name order): training, the global relative error of the sampled updates (UPDATE_TOL);
    synthesis, whether the timed utterances have the same frame counts and the largest mel
    difference over their common frames (MEL_TOL), naming the first utterance that differs."""
    groups = {}
    for path in sorted(Path(gate_dir).glob("*.npz")):
        framework, key = path.stem.split("--", 1)
        groups.setdefault(key, {})[framework] = dict(np.load(path))
    lines = []
    for key, by_fw in groups.items():
        names = list(by_fw)
        if len(names) < 2:
            continue
        first, rest = names[0], names[1:]
        if key.startswith("synthesize"):
            lines.append(f"cross-framework gate, {key}: " + "; ".join(_synthesis(by_fw[first], by_fw[fw], first, fw)
                                                                        for fw in rest))
        else:
            errors = {fw: global_relative_error(by_fw[first], by_fw[fw]) for fw in rest}
            verdict = "pass" if all(e <= UPDATE_TOL for e in errors.values()) else "FAIL"
            lines.append(f"cross-framework gate, {key}: one training step's updates (a strided sample) vs {first}: "
                         + ", ".join(f"{fw} {e:.1e}" for fw, e in errors.items())
                         + f" (tolerance {UPDATE_TOL:g}): {verdict}")
    return lines


def _synthesis(a: dict, b: dict, name_a: str, name_b: str) -> str:
    """`a`, `b`: {"mel<i>": (F, T) of the i-th timed utterance}."""
    keys = sorted(a, key=lambda k: int(k[3:]))
    frames_a, frames_b = [a[k].shape[1] for k in keys], [b[k].shape[1] for k in keys if k in b]
    diffs = [float(np.max(np.abs(a[k][:, :t] - b[k][:, :t]))) if (t := min(a[k].shape[1], b[k].shape[1])) else 0.0
             for k in keys if k in b]
    worst = max(diffs, default=0.0)
    differ = [i for i, (x, y) in enumerate(zip(frames_a, frames_b)) if x != y]
    text = (f"{name_b} vs {name_a}: " + ("the same frame counts" if not differ and len(frames_a) == len(frames_b)
                                         else f"{len(differ)} of {len(frames_a)} utterances end elsewhere (the first, "
                                              f"#{differ[0]}: {frames_b[differ[0]]} vs {frames_a[differ[0]]} frames)")
            + f", mels within {worst:.1e} over their common frames (tolerance {MEL_TOL:g})")
    if worst > MEL_TOL:
        first = next(i for i, d in enumerate(diffs) if d > MEL_TOL)
        text += f": FAIL from utterance #{first}"
    return text
