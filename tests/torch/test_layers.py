"""impl_torch's building blocks where torch itself is the subject; every check against
common.reference runs through the shared contract (tests/layer_contract.py, test_layer_contract.py)."""
import torch

from common import spec as S
from impl_torch import layers as TL


def test_initial_history_follows_the_stacks_parameters():
    spec = S.get_spec("tiny")
    stack = TL.build_stack(spec, S.audio_enc_layers(spec)).to(torch.float64)
    history = stack.initial_history(3)
    assert all(h.dtype == torch.float64 and h.device == next(stack.parameters()).device for h in history)
    assert [tuple(h.shape) for h in history] == [(3, l.cin, l.pad[0]) for l in S.audio_enc_layers(spec)]


def test_make_norm_builds_each_kind():
    highway = S.Layer("x", S.HIGHWAY, 8, 8, 3)
    for norm, kind, groups in (("none", type(None), None), ("layer", TL.ChannelNorm, 2), ("batch", TL.BatchNorm, None),
                               ("group", TL.ChannelNorm, 8)):
        made = TL.make_norm(S.get_spec("tiny", norm=norm), highway)
        assert isinstance(made, kind) and getattr(made, "groups", None) == groups


def test_batch_norms_running_statistics_are_buffers_not_parameters():
    norm = TL.BatchNorm(4, 1e-5, 0.1)
    assert [n for n, _ in norm.named_parameters()] == ["gamma", "beta"]
    assert [n for n, _ in norm.named_buffers()] == ["mean", "var"]
