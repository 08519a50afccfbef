"""Canonical weights <-> a Gluon model (the canonical layouts are MXNet's own: plain copies)."""
from __future__ import annotations

from impl_gluon import runtime  # noqa: F401  (must precede the first mxnet import)

import mxnet as mx
import numpy as np

from common.weights import check_fit
from impl_gluon.layers import canonical_parameters


def get_weights(model) -> dict:
    """{canonical name: float32 ndarray} (copies, on the CPU)."""
    return {name: p.data().asnumpy() for name, p in canonical_parameters(model).items()}


def set_weights(model, weights: dict) -> None:
    """Load every parameter; missing, unexpected or misshapen arrays raise WeightsError."""
    params = canonical_parameters(model)
    check_fit(weights, {k: p.shape for k, p in params.items()})
    for name, p in params.items():
        p.set_data(mx.nd.array(np.asarray(weights[name], np.float32), dtype="float32"))
