"""Inference: autoregressive Text2Mel with forcibly incremental attention, and SSRN upsampling.
Nothing is recorded (no autograd tape), so memory does not grow over many sentences."""
from __future__ import annotations

from impl_gluon import runtime  # noqa: F401  (must precede the first mxnet import)

import mxnet as mx
import numpy as np

from common import synthesis
from impl_gluon.text2mel import Text2Mel


def _context(model):
    return next(iter(model.collect_params().values())).list_ctx()[0]


def synthesize(text2mel: Text2Mel, ids: np.ndarray, max_frames: int) -> tuple:
    """ids (N,) ending with end-of-text -> (mel (F, T) in [0, 1], attention (N, T)).

    Frame t is decoded from frames < t, one frame at a time: the causal AudioEnc and AudioDec
    keep their layers' input histories (Stack.step), the new attention column is forced to move
    forward by at most 3 positions and back by at most 1 (common.synthesis), and AudioDec reads
    the column actually used."""
    spec, ctx, nd = text2mel.spec, _context(text2mel), mx.nd
    ids = np.asarray(ids)
    if ids.ndim != 1 or not 1 <= len(ids) <= spec.max_chars or ids.min() < 0 or ids.max() >= spec.n_vocab:
        raise ValueError(f"synthesize needs 1 to {spec.max_chars} ids in [0, {spec.n_vocab}), shape (N,); got shape "
                         f"{ids.shape}" + (f", range [{ids.min()}, {ids.max()}]" if ids.size else ""))
    if max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    k, v = text2mel.textenc(nd.array(ids[None], ctx=ctx, dtype=np.int32))
    enc, dec = text2mel.audioenc.layers, text2mel.audiodec.layers
    enc_past, dec_past = enc.initial_history(1, ctx), dec.initial_history(1, ctx)
    frame = nd.zeros((1, spec.n_mels, 1), ctx=ctx)  # the all-zero start frame
    mel = np.zeros((spec.n_mels, max_frames), np.float32)
    used = np.zeros((len(ids), max_frames), np.float32)
    position = 0
    for t in range(max_frames):
        q, enc_past = enc.step(frame, enc_past)
        column = text2mel.attention.weights(nd, k, q)[0, :, 0].asnumpy()
        used[:, t], position = synthesis.force_incremental(column, position)
        r = text2mel.attention.read(nd, v, nd.array(used[None, :, t: t + 1], ctx=ctx), q)
        logits, dec_past = dec.step(r, dec_past)
        frame = nd.sigmoid(logits)
        mel[:, t] = frame[0, :, 0].asnumpy()
        if synthesis.reached_end(position, len(ids)):
            break
    return mel[:, : t + 1], used[:, : t + 1]


def upsample(ssrn, mel: np.ndarray) -> np.ndarray:
    """Reduced mel (F, T) -> magnitudes (F', r T) in [0, 1]."""
    x = mx.nd.array(np.asarray(mel, np.float32)[None], ctx=_context(ssrn))
    return mx.nd.sigmoid(ssrn(x))[0].asnumpy()
