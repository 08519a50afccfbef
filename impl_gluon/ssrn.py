"""SSRN in MXNet Gluon (common.contract.spec's layer list)."""
from __future__ import annotations

from impl_gluon import runtime  # noqa: F401  (must precede the first mxnet import)

from mxnet import gluon

from common.contract import spec as S
from impl_gluon.layers import build_stack


class SSRN(gluon.HybridBlock):
    """Reduced mel (B, F, T) -> linear-magnitude logits (B, F', r*T); its blocks in the tier of
    operators `ops` (impl_gluon.layers)."""

    def __init__(self, spec: S.Spec, ops: str = "tuned"):
        super().__init__(prefix="ssrn_")
        self.spec, self.ops = spec, ops
        with self.name_scope():
            self.layers = build_stack(spec, S.ssrn_layers(spec), ops)

    def stacks(self) -> list:
        return [self.layers]

    def hybrid_forward(self, F, mel):
        return self.layers(mel)
