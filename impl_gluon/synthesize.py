"""Inference: autoregressive Text2Mel synthesis of a batch of sentences with forcibly
incremental attention decided on the device (handed over a block of frames at a time: whole
sentences or a stream), and SSRN upsampling. Nothing runs under
autograd.record() (no tape); nothing is kept between calls."""
from __future__ import annotations

from impl_gluon import runtime  # noqa: F401  (must precede the first mxnet import)

import functools
import weakref

import mxnet as mx
import numpy as np
from mxnet import gluon

from common.contract import spec as S
from common.contract.synthesis import Block, batch_synthesis, check_mel, check_texts, pad_ids
from impl_gluon.layers import Stack, StackStep
from impl_gluon.text2mel import Attention, pad_bias


def context_of(model):
    """The mxnet Context a model's parameters live on."""
    return next(iter(model.collect_params().values())).list_ctx()[0]


def force_incremental(F, columns, prev, n_text):
    """common.contract.synthesis.force_incremental on the device: columns (B, N), prev and n_text (B,)
    (float32, as MXNet's argmax gives positions) -> (columns, positions, forced (B,): 1 where
    the column was replaced, else 0; float32 too). F is mx.nd, or mx.sym inside
    the SynthesisStep's graph (hence arange_like, not one_hot: N is not known there)."""
    n = F.argmax(columns, axis=1)
    keep = (n >= prev - 1) * (n <= prev + 3)
    forced = F.minimum(prev + 1, n_text - 1)
    one_hot = F.broadcast_equal(F.reshape(F.contrib.arange_like(columns, axis=1), shape=(1, -1)),
                                F.expand_dims(forced, axis=1))
    return F.where(keep, columns, one_hot), F.where(keep, n, forced), 1 - keep


class SynthesisStep(gluon.HybridBlock):
    """One frame of synthesis for a batch as one block: AudioEnc's step, the attention weights,
    force_incremental, the read, AudioDec's step and the sigmoid, so that hybridized a frame is
    one cached-graph call and no device-to-host copy (per-call overhead, not arithmetic, is what a
    frame costs at these sizes).
    Inputs (frame (B, F, 1), position (B,), K, V (B, d, N), bias (B, N, 1), n_text (B,),
    query_position, *AudioEnc's histories, *AudioDec's histories); outputs (frame, column (B, N),
    position, forced (1 where the column was forced, else 0), *histories updated). With
    spec.position, K carries the keys' positions and query_position (1, d, 1) is this frame's,
    added to its query; else it is None.
    Positions, lengths and flags are float32 (MXNet's argmax and comparisons give floats; exact
    for these integers)."""

    def __init__(self, audioenc: Stack, attention: Attention, audiodec: Stack):
        """Over a Text2Mel's own blocks (the same parameters): built by synthesis_step."""
        super().__init__(prefix="synthesis_step_")
        self.audioenc_step, self.attention, self.audiodec_step = StackStep(audioenc), attention, StackStep(audiodec)
        self.n_enc = sum(self.audioenc_step.slots)

    def hybrid_forward(self, F, frame, position, k, v, bias, n_text, query_position, *pasts):
        q, *enc_past = self.audioenc_step(frame, *pasts[:self.n_enc])
        query = q if query_position is None else F.broadcast_add(q, query_position)
        column, position, forced = force_incremental(
            F, F.reshape(self.attention.weights(F, k, query, bias), shape=(0, -1)), position, n_text)
        logits, *dec_past = self.audiodec_step(self.attention.read(F, v, F.expand_dims(column, axis=2), q),
                                               *pasts[self.n_enc:])
        return (F.sigmoid(logits), column, position, forced, *enc_past, *dec_past)


_STEPS = weakref.WeakKeyDictionary()  # Text2Mel -> (its SynthesisStep, the Text2Mel.hybridized it follows)


def synthesis_step(text2mel) -> SynthesisStep:
    """The SynthesisStep of `text2mel`, built at its first synthesis and again after the model is
    hybridized otherwise, hybridized as the model is. Its graph sees the same shapes all through
    one call (one frame, fixed histories, the batch's K and V), so it also keeps static shapes when
    memory is static (faster a step: results/implementation-notes.md, "gluon: the synthesis step as
    one static graph"); a new batch size or N_max re-plans it."""
    flags = dict(text2mel.hybridized)
    step, built = _STEPS.get(text2mel, (None, None))
    if step is None or built != flags:
        step = SynthesisStep(text2mel.audioenc.layers, text2mel.attention, text2mel.audiodec.layers)
        kwargs = {k: v for k, v in flags.items() if k != "active"}
        step.hybridize(flags["active"], **dict(kwargs, static_shape=bool(kwargs.get("static_alloc"))))
        _STEPS[text2mel] = step, flags
    return step


def encode(text2mel, texts: list, ctx) -> tuple:
    """K, V (B, d, spec.max_chars) of each sentence encoded alone, zero-padded; the padded ids'
    bias. Padded to the model's limit, not the longest sentence: the synthesis step's static graph
    is then planned once per batch size, not once per sentence length (a re-plan costs far more
    than attending over the masked padding: results/implementation-notes.md, "gluon: the
    synthesis step as one static graph")."""
    keys, values = [], []
    width = text2mel.spec.max_chars
    for ids in texts:
        k, v = text2mel.textenc(mx.nd.array(ids[None], ctx=ctx, dtype=np.int32))
        if len(ids) < width:
            zeros = mx.nd.zeros((1, k.shape[1], width - len(ids)), ctx=ctx)
            k, v = mx.nd.concat(k, zeros, dim=2), mx.nd.concat(v, zeros, dim=2)
        keys.append(k)
        values.append(v)
    bias = pad_bias(mx.nd, mx.nd.array(pad_ids(texts, width), ctx=ctx, dtype=np.int32))
    return mx.nd.concat(*keys, dim=0), mx.nd.concat(*values, dim=0), bias


def position_tables(spec, width: int, max_frames: int, ctx) -> tuple:
    """spec.position's w PK (1, d, width), added to the keys once, and w PQ (1, d, max_frames),
    whose column t is added to frame t's query (common.contract.spec.attention_positions); (None, None)
    without positions [paper]."""
    if spec.position == "none":
        return None, None
    return tuple(mx.nd.array(p[None], ctx=ctx, dtype=np.float32)
                 for p in S.attention_positions(spec, width, max_frames))


def decode(text2mel, texts: list, max_frames: int, block: int):
    """Several id arrays (N_b,), each ending with end-of-text -> a generator of
    common.contract.synthesis.Block (mel (B, F, n), attention (B, N_max, n), positions, forced
    (B, n)), one every `block` frames, for up to `max_frames` frames; the consumer stops it
    (common.contract.synthesis.collect, stream_mels).

    TextEnc runs once per sentence; then one frame per step for the whole batch through
    AudioEnc, attention and AudioDec, incrementally (each causal layer keeps its last
    (k-1)*dilation inputs, so a step costs one frame, not the whole prefix; the whole step,
    forcing included, is synthesis_step(text2mel), one cached graph when the model is
    hybridized; with spec.position, the keys' positions are added once and frame t's to its
    query). The new attention columns are forced on the device before V is read with
    them; a block's frames go to the host together (one copy per block; the positions and
    forced flags, float32 on the device, as int64 and bool)."""
    texts = check_texts(texts, text2mel.spec, max_frames)
    ctx, nd, step = context_of(text2mel), mx.nd, synthesis_step(text2mel)
    k, v, bias = encode(text2mel, texts, ctx)
    key_positions, query_positions = position_tables(text2mel.spec, k.shape[2], max_frames, ctx)
    keys = k if key_positions is None else k + key_positions
    batch = len(texts)
    n_text = nd.array([len(ids) for ids in texts], ctx=ctx)
    pasts = [h for stack in (text2mel.audioenc.layers, text2mel.audiodec.layers)
             for h in stack.initial_history(batch) if h is not None]
    frame = nd.zeros((batch, text2mel.spec.n_mels, 1), ctx=ctx)  # the teacher-forcing shift's zero frame
    position = nd.zeros((batch,), ctx=ctx)
    for first in range(0, max_frames, block):
        frames, columns, positions, forcings = [], [], [], []
        for t in range(first, min(first + block, max_frames)):
            query_position = None if query_positions is None else query_positions[:, :, t:t + 1]
            frame, column, position, forced, *pasts = step(frame, position, keys, v, bias, n_text,
                                                           query_position, *pasts)
            frames.append(frame)
            columns.append(column)
            positions.append(position)
            forcings.append(forced)
        yield Block(nd.concat(*frames, dim=2).asnumpy(), nd.stack(*columns, axis=2).asnumpy(),
                    nd.stack(*positions, axis=1).asnumpy().astype(np.int64),
                    nd.stack(*forcings, axis=1).asnumpy().astype(bool))


def synthesize_batch(text2mel, texts: list, max_frames: int) -> list:
    """Several id arrays (N_b,), each ending with end-of-text -> one common.contract.synthesis.Synthesis
    per sentence: (mel (F, T_b) in [0, 1], attention (N_b, T_b)), .forced (T_b,) bool
    (common.contract.synthesis.batch_synthesis over `decode`)."""
    return batch_synthesis(functools.partial(decode, text2mel), texts, text2mel.spec, max_frames)


def synthesize(text2mel, ids, max_frames: int) -> tuple:
    """One sentence: ids (N,) -> Synthesis (mel (F, T) in [0, 1], attention (N, T)), .forced (T,)."""
    return synthesize_batch(text2mel, [ids], max_frames)[0]


def upsample(ssrn, mel: np.ndarray) -> np.ndarray:
    """Reduced mel (F, T) -> magnitudes (F', r*T) in [0, 1]."""
    mel = check_mel(mel, ssrn.spec)
    return mx.nd.sigmoid(ssrn(mx.nd.array(mel[None], ctx=context_of(ssrn))))[0].asnumpy()
