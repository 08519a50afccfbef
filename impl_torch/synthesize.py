"""Inference: autoregressive Text2Mel synthesis with forcibly incremental attention, and SSRN
upsampling. No gradient tape (torch.inference_mode); nothing is kept between calls."""
from __future__ import annotations

from impl_torch import runtime  # noqa: F401  (the framework environment comes first)

import numpy as np
import torch

from common.synthesis import check_ids, check_mel, force_incremental, reached_end
from impl_torch.text2mel import pad_bias


def synthesize(text2mel, ids, max_frames: int) -> tuple:
    """ids (N,) ending with end-of-text -> (mel (F, T) in [0, 1], attention (N, T)).

    TextEnc runs once; then one frame per step through AudioEnc, attention and AudioDec,
    incrementally (each causal layer keeps its last (k-1)*dilation inputs, so a step costs
    one frame, not the whole prefix). The new attention column is decided by
    common.synthesis.force_incremental before V is read with it. Stops when attention
    reaches the end of text or after `max_frames` frames."""
    ids = check_ids(ids, text2mel.spec, max_frames)
    text2mel.eval()
    device = next(text2mel.parameters()).device
    enc, att, dec = text2mel.audioenc.layers, text2mel.attention, text2mel.audiodec.layers
    with torch.inference_mode():
        text = torch.from_numpy(ids)[None].to(device)
        k, v = text2mel.textenc(text)
        bias = pad_bias(text)
        enc_past, dec_past = enc.initial_history(1, device), dec.initial_history(1, device)
        frame = torch.zeros(1, text2mel.spec.n_mels, 1, device=device)  # the teacher-forcing shift's zero frame
        frames, columns, position = [], [], 0
        for _ in range(max_frames):
            q, enc_past = enc.step(frame, enc_past)
            column, position = force_incremental(att.weights(k, q, bias)[0, :, 0].cpu().numpy(), position)
            a = torch.from_numpy(column)[None, :, None].to(device)
            logits, dec_past = dec.step(att.read(v, a, q), dec_past)
            frame = torch.sigmoid(logits)
            frames.append(frame)
            columns.append(column)
            if reached_end(position, ids.size):
                break
        mel = torch.cat(frames, dim=2)[0].cpu().numpy()
    return mel, np.stack(columns, axis=1)


def upsample(ssrn, mel: np.ndarray) -> np.ndarray:
    """Reduced mel (F, T) -> magnitudes (F', r*T) in [0, 1]."""
    mel = check_mel(mel, ssrn.spec)
    ssrn.eval()
    device = next(ssrn.parameters()).device
    with torch.inference_mode():
        return torch.sigmoid(ssrn(torch.from_numpy(mel)[None].to(device)))[0].cpu().numpy()
