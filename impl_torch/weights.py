"""Canonical weights <-> a PyTorch model (the layouts are PyTorch's own: plain copies)."""
from __future__ import annotations

from impl_torch import runtime  # noqa: F401  (the framework environment comes first)

import numpy as np
import torch

from common.weights import WeightsError
from impl_torch.layers import canonical_parameters


def get_weights(model) -> dict:
    """{canonical name: float32 ndarray} (copies, on the CPU)."""
    return {name: p.detach().cpu().numpy().copy() for name, p in canonical_parameters(model).items()}


def set_weights(model, weights: dict) -> None:
    """Load every parameter; missing, unexpected or misshapen arrays raise WeightsError."""
    params = canonical_parameters(model)
    missing = [k for k in params if k not in weights]
    unexpected = [k for k in weights if k not in params]
    wrong = [f"{k} {tuple(np.shape(weights[k]))} != {tuple(p.shape)}" for k, p in params.items()
             if k in weights and tuple(np.shape(weights[k])) != tuple(p.shape)]
    if missing or unexpected or wrong:
        raise WeightsError(f"weights do not fit the model: missing {missing[:5]} unexpected {unexpected[:5]} "
                           f"misshapen {wrong[:5]}")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(torch.from_numpy(np.asarray(weights[name], np.float32)))
