"""SSRN in PyTorch (common.contract.spec's layer list)."""
from __future__ import annotations

from impl_torch import runtime  # noqa: F401  (the framework environment comes first)

from torch import nn

from common.contract import spec as S
from impl_torch.layers import build_stack


class SSRN(nn.Module):
    """Reduced mel (B, F, T) -> linear-magnitude logits (B, F', r*T)."""

    def __init__(self, spec: S.Spec, ops: str = "tuned"):
        super().__init__()
        self.spec, self.ops = spec, ops
        self.layers = build_stack(spec, S.ssrn_layers(spec), ops)

    def forward(self, mel):
        return self.layers(mel)
