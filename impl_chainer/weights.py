"""Canonical weights <-> a Chainer model (the layouts are Chainer's own: plain copies)."""
from __future__ import annotations

from impl_chainer import runtime  # noqa: F401  (Chainer workarounds first)

import chainer
import numpy as np

from common.weights import check_fit
from impl_chainer.layers import canonical_parameters


def get_weights(model: chainer.Link) -> dict:
    """{canonical name: float32 ndarray} (copies, on the CPU)."""
    cpu = chainer.get_device("@numpy")
    return {name: np.array(cpu.send(p.array), np.float32) for name, p in canonical_parameters(model).items()}


def set_weights(model: chainer.Link, weights: dict) -> None:
    """Load every parameter in place; missing, unexpected or misshapen arrays raise WeightsError
    (before anything is changed)."""
    params = canonical_parameters(model)
    check_fit(weights, {k: p.shape for k, p in params.items()})
    for name, p in params.items():
        p.array[...] = p.device.send(np.asarray(weights[name], np.float32))
