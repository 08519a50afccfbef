"""What a network costs, from the spec: parameters and FLOPs per layer, network and preset
(the benchmark's achieved GFLOP/s, the variants study, `python -m common.contract.accounting`'s table)."""
from __future__ import annotations

import math

from common.contract.spec import (DECONV, EMBED, NETS, Layer, Spec, bottleneck_width, get_spec, is_separable, layers,
                                  param_shapes, pointwise_groups)


def count_params(s: Spec, net: str, by_block: bool = False):
    """Trainable parameters (batch-norm running statistics excluded)."""
    counts = {}
    for block, group in layers(s, net).items():
        counts[block] = sum(math.prod(shape) for layer in group for name, shape in param_shapes(s, layer).items()
                            if not name.endswith((".norm.mean", ".norm.var")))
    return counts if by_block else sum(counts.values())

def layer_flops(s: Spec, layer: Layer, batch: int, t_in: int) -> int:
    """Multiply-add FLOPs (2 per MAC) of one layer's forward on `t_in` input frames."""
    if layer.kind == EMBED:
        return 0
    out, width = layer.out, bottleneck_width(s, layer)
    if layer.kind == DECONV:
        return 2 * batch * t_in * layer.cin * out * layer.k
    if is_separable(s, layer):
        return 2 * batch * t_in * (layer.cin * layer.k + out * layer.cin // pointwise_groups(s, layer))
    if width:
        return 2 * batch * t_in * width * (layer.cin + out * layer.k)
    return 2 * batch * t_in * layer.cin * out * layer.k


def flops(s: Spec, net: str, batch: int, n_chars: int = 0, n_frames: int = 0) -> dict:
    """Forward and training-step FLOPs of convolutions and attention products.

    Text2Mel: `n_chars` text positions, `n_frames` reduced mel frames. SSRN: `n_frames`
    input (reduced) frames. Elementwise work (gates, norms, softmax) is not counted: it is
    a few percent. Backward is counted as twice the forward (gradients w.r.t. inputs and
    weights), so one training step is 3x the forward."""
    fwd = 0
    for block, group in layers(s, net).items():
        t = n_chars if block == "textenc" else n_frames
        for layer in group:
            fwd += layer_flops(s, layer, batch, t)
            if layer.kind == DECONV:
                t *= layer.stride
    if net == "text2mel":
        fwd += 2 * (2 * batch * s.D * n_chars * n_frames)  # K^T Q and V A
    return {"forward": fwd, "train_step": 3 * fwd}


def summary_table(presets=("paper", "community", "small", "demo", "speak", "tiny"), n_chars: int = 100, seconds: float = 6.57) -> str:
    """Markdown table of parameters and FLOPs per preset, at LJSpeech's mean utterance
    (100 characters, 6.57 s) and each preset's batch size."""
    rows = ["| preset | network | parameters | batch | frames (reduced) | GFLOP forward | GFLOP train step |",
            "|---|---|---:|---:|---:|---:|---:|"]
    for p in presets:
        s = get_spec(p)
        frames = min(s.max_frames, round(seconds * s.sr / s.hop / s.r))
        for net in NETS:
            f = flops(s, net, s.batch_size, min(n_chars, s.max_chars), frames)
            rows.append(f"| {p} | {net} | {count_params(s, net):,} | {s.batch_size} | {frames} | "
                        f"{f['forward'] / 1e9:.1f} | {f['train_step'] / 1e9:.1f} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(summary_table())
