"""Comparing outputs and weights: a framework with common.contract.reference (the benchmark's parity gate,
the tests) and frameworks with each other (tests/parity), with the first diverging parameter named."""
from __future__ import annotations

import numpy as np

from common.contract import losses, reference, spec as S
from common.data.batch import Batch


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
    """common.contract.reference's eval-mode outputs, keyed like Backend.forward's."""
    if net == "text2mel":
        logits, attention = reference.text2mel(spec, weights, batch.text, batch.mel)
        return {"logits": logits, "attention": attention}
    if net == "ssrn":
        return {"logits": reference.ssrn(spec, weights, batch.mel)}
    raise ValueError(f"unknown network {net!r}; choose one of {S.NETS}")


def reference_losses(spec: S.Spec, net: str, weights: dict, batch: Batch, train_stats=None) -> dict:
    """common.contract.losses of common.contract.reference's outputs (batch norm in training mode when `train_stats`
    is a dict, see common.contract.reference), keyed like Backend.train_step's."""
    if net == "text2mel":
        return losses.text2mel_losses(*reference.text2mel(spec, weights, batch.text, batch.mel, train_stats), batch)
    return losses.ssrn_losses(reference.ssrn(spec, weights, batch.mel, train_stats), batch)


def block_of(spec: S.Spec, net: str) -> dict:
    """{canonical parameter name: its sub-network (textenc, audioenc, audiodec, ssrn)}."""
    return {name: block for block, group in S.layers(spec, net).items() for layer in group
            for name in S.param_shapes(spec, layer)}


def first_divergence(spec: S.Spec, net: str, a: dict, b: dict, tol: float, error=norm_relative_error,
                     backward: bool = False):
    """Walk the canonical names in forward order (or backward: where a gradient difference enters);
    return (sub-network, name, error) of the first whose arrays in `a` and `b` differ by more than
    `tol` (missing in either: error inf), or None."""
    order = list(block_of(spec, net).items())
    for name, block in reversed(order) if backward else order:
        if name not in a and name not in b:
            continue  # e.g. batch-norm statistics, which have no gradient
        err = error(a[name], b[name]) if name in a and name in b else float("inf")
        if not err <= tol:
            return block, name, err
    return None


def global_relative_error(a: dict, b: dict) -> float:
    """|a - b| / |a| over all arrays of a network at once (the Frobenius norm of the concatenation)."""
    diff = sum(float(np.sum((np.asarray(a[k], np.float64) - b[k]) ** 2)) for k in a)
    return float(np.sqrt(diff / max(sum(float(np.sum(np.asarray(a[k], np.float64) ** 2)) for k in a), 1e-300)))


def explain(spec: S.Spec, net: str, backends: dict, batch: Batch, tol: float = 1e-4) -> str:
    """Where frameworks part, for a failure message: the first parameter (forward order) whose
    weights as read back differ, each framework's output error vs common.contract.reference from its own
    weights, and the first parameter whose gradient differs, in forward and in backward order."""
    (na, a), (nb, b) = backends.items()
    wa, wb = a.get_weights(), b.get_weights()
    lines = [f"weights read back: first difference {first_divergence(spec, net, wa, wb, 0.0)}"]
    for name, backend, w in ((na, a, wa), (nb, b, wb)):
        got, want = backend.forward(batch), reference_outputs(spec, net, w, batch)
        lines.append(f"{name} vs common.contract.reference: " + ", ".join(
            f"{k} {relative_error(got.get(k, np.empty(0)), v):.1e}" for k, v in want.items()))
    ga, gb = a.gradients(batch)[1], b.gradients(batch)[1]
    lines.append(f"gradients: first difference > {tol:g} in forward order {first_divergence(spec, net, ga, gb, tol)}, "
                 f"in backward order {first_divergence(spec, net, ga, gb, tol, backward=True)}")
    return "\n".join(lines)
