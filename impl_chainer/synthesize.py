"""Inference: autoregressive Text2Mel synthesis with forcibly incremental attention, and SSRN
upsampling. Eval mode with backprop disabled (no graph is kept); nothing is kept between calls."""
from __future__ import annotations

from impl_chainer import runtime

import chainer
import chainer.functions as F
import numpy as np

from common.synthesis import check_ids, check_mel, force_incremental, reached_end
from impl_chainer.text2mel import pad_bias


def inference():
    """Eval mode (dropout off) and no graph."""
    return chainer.using_config("train", False), chainer.using_config("enable_backprop", False)


def synthesize(text2mel, ids, max_frames: int) -> tuple:
    """ids (N,) ending with end-of-text -> (mel (F, T) in [0, 1], attention (N, T)).

    TextEnc runs once; then one frame per step through AudioEnc, attention and AudioDec,
    incrementally (each causal layer keeps its last (k-1)*dilation inputs, so a step costs
    one frame, not the whole prefix). The new attention column is decided by
    common.synthesis.force_incremental before V is read with it. Stops when attention
    reaches the end of text or after `max_frames` frames."""
    ids = check_ids(ids, text2mel.spec, max_frames)
    device, xp = text2mel.device, text2mel.xp
    enc, att, dec = text2mel.audioenc.layers, text2mel.attention, text2mel.audiodec.layers
    eval_mode, no_graph = inference()
    with eval_mode, no_graph:
        text = device.send(ids[None])
        k, v = text2mel.textenc(text)
        bias = pad_bias(text)
        enc_past, dec_past = enc.initial_history(1), dec.initial_history(1)
        frame = xp.zeros((1, text2mel.spec.n_mels, 1), np.float32)  # the teacher-forcing shift's zero frame
        frames, columns, position = [], [], 0
        for _ in range(max_frames):
            q, enc_past = enc.step(frame, enc_past)
            column, position = force_incremental(runtime.to_numpy(att.weights(k, q, bias))[0, :, 0], position)
            logits, dec_past = dec.step(att.read(v, device.send(column[None, :, None]), q), dec_past)
            frame = F.sigmoid(logits).array
            frames.append(frame)
            columns.append(column)
            if reached_end(position, ids.size):
                break
        mel = runtime.to_numpy(xp.concatenate(frames, axis=2))[0]
    return mel, np.stack(columns, axis=1)


def upsample(ssrn, mel: np.ndarray) -> np.ndarray:
    """Reduced mel (F, T) -> magnitudes (F', r*T) in [0, 1]."""
    mel = check_mel(mel, ssrn.spec)
    eval_mode, no_graph = inference()
    with eval_mode, no_graph:
        return runtime.to_numpy(F.sigmoid(ssrn(ssrn.device.send(mel[None]))).array)[0]
