"""Canonical weights <-> a Chainer model (the layouts are Chainer's own: plain copies)."""
from __future__ import annotations

from impl_chainer import runtime  # noqa: F401  (Chainer workarounds first)

import chainer
import numpy as np

from common.contract.weights import check_fit
from impl_chainer.layers import canonical_parameters, canonical_statistics


def _arrays(model: chainer.Link) -> dict:
    """{canonical name: array}: the parameters' arrays and the batch norms' running statistics."""
    return {**{name: p.array for name, p in canonical_parameters(model).items()}, **canonical_statistics(model)}


def get_weights(model: chainer.Link) -> dict:
    """{canonical name: float32 ndarray} (copies, on the CPU), running statistics included."""
    cpu = chainer.get_device("@numpy")
    return {name: np.array(cpu.send(a), np.float32) for name, a in _arrays(model).items()}


def set_weights(model: chainer.Link, weights: dict) -> None:
    """Load every parameter and running statistic in place; missing, unexpected or misshapen
    arrays raise WeightsError (before anything is changed)."""
    arrays = _arrays(model)
    check_fit(weights, {k: a.shape for k, a in arrays.items()})
    for name, a in arrays.items():
        a[...] = chainer.backend.get_device_from_array(a).send(np.asarray(weights[name], np.float32))
