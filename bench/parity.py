"""The benchmark's parity gate: a framework's outputs against common.reference before any
clock starts (a framework that computes something else is not timed)."""
from __future__ import annotations

import numpy as np

from common.batch import Batch
from common.compare import reference_outputs, relative_error

GATE_TOL = 1e-4  # relative: max abs error / max abs reference


def parity_gate(backend, weights: dict, batch: Batch, tol: float = GATE_TOL) -> dict:
    """Backend.forward vs common.reference from `weights` on `batch`.
    Returns {"passed", "tol", "errors": {output: relative error}}."""
    got = backend.forward(batch)
    want = reference_outputs(backend.spec, backend.net, weights, batch)
    errors = {k: relative_error(got.get(k, np.empty(0)), v) for k, v in want.items()}
    return {"passed": all(e <= tol for e in errors.values()), "tol": tol, "errors": errors}
