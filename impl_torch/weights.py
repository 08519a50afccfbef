"""Canonical weights <-> a PyTorch model (the layouts are PyTorch's own: plain copies), batch
norm's running statistics included."""
from __future__ import annotations

from impl_torch import runtime  # noqa: F401  (the framework environment comes first)

import numpy as np
import torch

from common.contract.weights import check_fit
from impl_torch.layers import canonical_parameters, canonical_statistics


def _arrays(model) -> dict:
    """{canonical name: tensor}: the parameters and the batch norms' running-statistics buffers."""
    return {**canonical_parameters(model), **canonical_statistics(model)}


def get_weights(model) -> dict:
    """{canonical name: float32 ndarray} (copies, on the CPU), running statistics included."""
    return {name: t.detach().cpu().numpy().copy() for name, t in _arrays(model).items()}


def set_weights(model, weights: dict) -> None:
    """Load every parameter and running statistic in place; missing, unexpected or misshapen
    arrays raise WeightsError (before anything is changed)."""
    tensors = _arrays(model)
    check_fit(weights, {k: t.shape for k, t in tensors.items()})
    with torch.no_grad():
        for name, t in tensors.items():
            t.copy_(torch.from_numpy(np.asarray(weights[name], np.float32)))
