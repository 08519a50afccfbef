"""Comparing outputs: a framework with common.reference (the benchmark's parity gate) and
frameworks with each other (tests/parity), with the first diverging parameter named."""
from __future__ import annotations

import numpy as np

from common import reference, spec as S
from common.batch import Batch

GATE_TOL = 1e-4  # relative: max abs error / max abs reference


def max_abs_error(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def relative_error(a, ref) -> float:
    """max |a - ref| / max |ref|: scale-free, for outputs of any magnitude."""
    ref = np.asarray(ref, np.float64)
    if np.shape(a) != ref.shape:
        return float("inf")
    return max_abs_error(a, ref) / max(float(np.max(np.abs(ref))), np.finfo(np.float64).tiny)


def norm_relative_error(a, b) -> float:
    """|a - b| / max(|a|, |b|) in the Frobenius norm (0 when both are 0): for gradients and weights,
    where a few near-zero elements would make an elementwise ratio meaningless."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("inf")
    scale = max(np.linalg.norm(a), np.linalg.norm(b))
    return float(np.linalg.norm(a - b) / scale) if scale > 0 else 0.0


def reference_outputs(spec: S.Spec, net: str, weights: dict, batch: Batch) -> dict:
    """common.reference's eval-mode outputs, keyed like Backend.forward's."""
    if net == "text2mel":
        logits, attention = reference.text2mel(spec, weights, batch.text, batch.mel)
        return {"logits": logits, "attention": attention}
    if net == "ssrn":
        return {"logits": reference.ssrn(spec, weights, batch.mel)}
    raise ValueError(f"unknown network {net!r}; choose one of {S.NETS}")


def parity_gate(backend, weights: dict, batch: Batch, tol: float = GATE_TOL) -> dict:
    """Backend.forward vs common.reference from `weights` on `batch`.
    Returns {"passed", "tol", "errors": {output: relative error}}."""
    got = backend.forward(batch)
    want = reference_outputs(backend.spec, backend.net, weights, batch)
    errors = {k: relative_error(got.get(k, np.empty(0)), v) for k, v in want.items()}
    return {"passed": all(e <= tol for e in errors.values()), "tol": tol, "errors": errors}


def block_of(spec: S.Spec, net: str) -> dict:
    """{canonical parameter name: its sub-network (textenc, audioenc, audiodec, ssrn)}."""
    return {name: block for block, group in S.layers(spec, net).items() for layer in group
            for name in S.param_shapes(spec, layer)}


def first_divergence(spec: S.Spec, net: str, a: dict, b: dict, tol: float, error=norm_relative_error):
    """Walk the canonical names in forward order; return (sub-network, name, error) of the first
    whose arrays in `a` and `b` differ by more than `tol` (missing in either: error inf), or None."""
    for name, block in block_of(spec, net).items():
        if name not in a and name not in b:
            continue  # e.g. batch-norm statistics, which have no gradient
        err = error(a[name], b[name]) if name in a and name in b else float("inf")
        if not err <= tol:
            return block, name, err
    return None
