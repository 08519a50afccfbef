"""Inference: autoregressive Text2Mel synthesis with forcibly incremental attention, and SSRN
upsampling. Nothing runs under autograd.record() (no tape); nothing is kept between calls."""
from __future__ import annotations

from impl_gluon import runtime  # noqa: F401  (must precede the first mxnet import)

import mxnet as mx
import numpy as np

from common.synthesis import check_ids, check_mel, force_incremental, reached_end
from impl_gluon.text2mel import pad_bias


def context_of(model):
    """The mxnet Context a model's parameters live on."""
    return next(iter(model.collect_params().values())).list_ctx()[0]


def synthesize(text2mel, ids, max_frames: int) -> tuple:
    """ids (N,) ending with end-of-text -> (mel (F, T) in [0, 1], attention (N, T)).

    TextEnc runs once; then one frame per step through AudioEnc, attention and AudioDec,
    incrementally (each causal layer keeps its last (k-1)*dilation inputs, so a step costs
    one frame, not the whole prefix; each stack's step is one cached graph when the model is
    hybridized). The new attention column is decided by
    common.synthesis.force_incremental before V is read with it. Stops when attention
    reaches the end of text or after `max_frames` frames."""
    ids = check_ids(ids, text2mel.spec, max_frames)
    ctx, nd, att = context_of(text2mel), mx.nd, text2mel.attention
    text = nd.array(ids[None], ctx=ctx, dtype=np.int32)
    k, v = text2mel.textenc(text)
    bias = pad_bias(nd, text)
    enc_past, dec_past = ([h for h in stack.initial_history(1, ctx) if h is not None]
                          for stack in (text2mel.audioenc.layers, text2mel.audiodec.layers))
    frame = nd.zeros((1, text2mel.spec.n_mels, 1), ctx=ctx)  # the teacher-forcing shift's zero frame
    frames, columns, position = [], [], 0
    for _ in range(max_frames):
        q, *enc_past = text2mel.audioenc_step(frame, *enc_past)
        column, position = force_incremental(att.weights(nd, k, q, bias)[0, :, 0].asnumpy(), position)
        a = nd.array(column[None, :, None], ctx=ctx)
        logits, *dec_past = text2mel.audiodec_step(att.read(nd, v, a, q), *dec_past)
        frame = nd.sigmoid(logits)
        frames.append(frame)
        columns.append(column)
        if reached_end(position, ids.size):
            break
    return nd.concat(*frames, dim=2)[0].asnumpy(), np.stack(columns, axis=1)


def upsample(ssrn, mel: np.ndarray) -> np.ndarray:
    """Reduced mel (F, T) -> magnitudes (F', r*T) in [0, 1]."""
    mel = check_mel(mel, ssrn.spec)
    return mx.nd.sigmoid(ssrn(mx.nd.array(mel[None], ctx=context_of(ssrn))))[0].asnumpy()
