"""Canonical weights <-> a Gluon model (the canonical layouts are MXNet's own: plain copies)."""
from __future__ import annotations

from impl_gluon import runtime  # noqa: F401  (must precede the first mxnet import)

import mxnet as mx
import numpy as np

from common.contract.weights import check_fit
from impl_gluon.layers import canonical_parameters, canonical_statistics


def _arrays(model) -> dict:
    """{canonical name: Parameter}: the trainable parameters and batch norm's running statistics."""
    return {**canonical_parameters(model), **canonical_statistics(model)}


def get_weights(model) -> dict:
    """{canonical name: float32 ndarray} (copies, on the CPU), running statistics included."""
    return {name: p.data().asnumpy() for name, p in _arrays(model).items()}


def set_weights(model, weights: dict) -> None:
    """Load every parameter and running statistic; missing, unexpected or misshapen arrays raise
    WeightsError.

    After an inference forward MKLDNN keeps convolution weights in its own blocked layout, in
    place, and `Parameter.set_data` (a plain copy: `arr[:] = data`) then fails for the 3-d conv
    weights (`Check failed: to.IsDefaultData()`, at the next sync). Writing through an operator
    (`identity(..., out=)`) is layout-aware: MXNet converts or replaces the destination's layout."""
    params = _arrays(model)
    check_fit(weights, {k: p.shape for k, p in params.items()})
    for name, p in params.items():
        value = mx.nd.array(np.asarray(weights[name], np.float32), dtype="float32")
        for arr in p.list_data():
            mx.nd.identity(value.as_in_context(arr.context), out=arr)
