"""Canonical weights <-> a PyTorch model (the layouts are PyTorch's own: plain copies)."""
from __future__ import annotations

from impl_torch import runtime  # noqa: F401  (the framework environment comes first)

import numpy as np
import torch

from common.weights import check_fit
from impl_torch.layers import canonical_parameters


def get_weights(model) -> dict:
    """{canonical name: float32 ndarray} (copies, on the CPU)."""
    return {name: p.detach().cpu().numpy().copy() for name, p in canonical_parameters(model).items()}


def set_weights(model, weights: dict) -> None:
    """Load every parameter; missing, unexpected or misshapen arrays raise WeightsError."""
    params = canonical_parameters(model)
    check_fit(weights, {k: p.shape for k, p in params.items()})
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(torch.from_numpy(np.asarray(weights[name], np.float32)))
