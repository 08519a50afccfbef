"""SSRN in Chainer (common.contract.spec's layer list)."""
from __future__ import annotations

from impl_chainer import runtime  # noqa: F401  (Chainer workarounds first)

import chainer

from common.contract import spec as S
from impl_chainer.layers import build_stack


class SSRN(chainer.Chain):
    """Reduced mel (B, F, T) -> linear-magnitude logits (B, F', r*T), in the tier of operators `ops`."""

    def __init__(self, spec: S.Spec, ops: str = "tuned"):
        super().__init__()
        self.spec, self.ops = spec, ops
        with self.init_scope():
            self.layers = build_stack(spec, S.ssrn_layers(spec), ops)

    def stacks(self) -> list:
        return [self.layers]

    def forward(self, mel):
        return self.layers(mel)
