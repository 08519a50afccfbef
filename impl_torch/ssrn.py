"""SSRN in PyTorch (common.spec's layer list)."""
from __future__ import annotations

from impl_torch import runtime  # noqa: F401  (the framework environment comes first)

from torch import nn

from common import spec as S
from impl_torch.layers import build_stack


class SSRN(nn.Module):
    """Reduced mel (B, F, T) -> linear-magnitude logits (B, F', r*T)."""

    def __init__(self, spec: S.Spec):
        super().__init__()
        self.spec = spec
        self.layers = build_stack(spec, S.ssrn_layers(spec))

    def forward(self, mel):
        return self.layers(mel)
