"""Inference: autoregressive Text2Mel synthesis of a batch of sentences with forcibly
incremental attention decided on the device (handed over a block of frames at a time: whole
sentences or a stream), and SSRN upsampling. Eval mode with backprop
disabled (no graph is kept); nothing is kept between calls."""
from __future__ import annotations

from impl_chainer import runtime

import functools

import chainer
import chainer.functions as F
import numpy as np

from common.contract import spec as S
from common.contract.synthesis import Block, batch_synthesis, check_mel, check_texts, pad_ids
from impl_chainer.text2mel import pad_bias


def inference():
    """Eval mode (dropout off) and no graph."""
    return chainer.using_config("train", False), chainer.using_config("enable_backprop", False)


def force_incremental(columns, prev, n_text):
    """common.contract.synthesis.force_incremental on the device (NumPy or CuPy arrays): columns (B, N),
    prev and n_text (B,) -> (columns, positions, forced (B,) bool)."""
    xp = chainer.backend.get_array_module(columns)
    n = columns.argmax(axis=1)
    keep = (n >= prev - 1) & (n <= prev + 3)
    forced = xp.minimum(prev + 1, n_text - 1)
    one_hot = (xp.arange(columns.shape[1])[None, :] == forced[:, None]).astype(columns.dtype)
    return xp.where(keep[:, None], columns, one_hot), xp.where(keep, n, forced), ~keep


def encode(text2mel, texts: list, device) -> tuple:
    """K, V (B, d, N_max) of each sentence encoded alone, zero-padded; the padded ids' bias."""
    keys, values = [], []
    width = max(len(ids) for ids in texts)
    for ids in texts:
        k, v = text2mel.textenc(device.send(ids[None]))
        keys.append(F.pad(k, ((0, 0), (0, 0), (0, width - len(ids))), "constant"))
        values.append(F.pad(v, ((0, 0), (0, 0), (0, width - len(ids))), "constant"))
    return F.concat(keys, axis=0).array, F.concat(values, axis=0).array, pad_bias(device.send(pad_ids(texts)))


def position_tables(spec, width: int, max_frames: int, device) -> tuple:
    """spec.position's w PK (1, d, width), added to the keys once, and w PQ (1, d, max_frames),
    whose column t is added to frame t's query (common.contract.spec.attention_positions); (None, None)
    without positions [paper]."""
    if spec.position == "none":
        return None, None
    return tuple(device.send(p[None].astype(np.float32)) for p in S.attention_positions(spec, width, max_frames))


def decode(text2mel, texts: list, max_frames: int, block: int):
    """Several id arrays (N_b,), each ending with end-of-text -> a generator of
    common.contract.synthesis.Block (mel (B, F, n), attention (B, N_max, n), positions, forced
    (B, n)), one every `block` frames, for up to `max_frames` frames; the consumer stops it
    (common.contract.synthesis.collect, stream_mels).

    TextEnc runs once per sentence; then one frame per step for the whole batch through
    AudioEnc, attention and AudioDec, incrementally (each causal layer keeps its last
    (k-1)*dilation inputs, so a step costs one frame, not the whole prefix; with spec.position,
    the keys' positions are added once and frame t's to its query), on plain arrays
    (layers.py: Chainer's per-function overhead would dominate a frame; the stock tier computes
    the same steps with chainer.functions, no graph). The new attention
    columns are forced on the device before V is read with them; a block's frames go to the host
    together (one copy per block). Eval mode without a graph (inference()) holds while a block is
    computed, not between blocks (the consumer's code runs there)."""
    texts = check_texts(texts, text2mel.spec, max_frames)
    device, xp = text2mel.device, text2mel.xp
    enc, att, dec = text2mel.audioenc.layers, text2mel.attention, text2mel.audiodec.layers
    eval_mode, no_graph = inference()
    with eval_mode, no_graph:
        k, v, bias = encode(text2mel, texts, device)
        key_positions, query_positions = position_tables(text2mel.spec, k.shape[2], max_frames, device)
        keys = k if key_positions is None else k + key_positions
        batch = len(texts)
        n_text = xp.asarray([len(ids) for ids in texts], np.int64)
        enc_past, dec_past = enc.initial_history(batch), dec.initial_history(batch)
        frame = xp.zeros((batch, text2mel.spec.n_mels, 1), np.float32)  # the teacher-forcing shift's zero frame
        position = xp.zeros(batch, np.int64)
        half = np.float32(0.5)
    for first in range(0, max_frames, block):
        eval_mode, no_graph = inference()
        with eval_mode, no_graph:
            frames, columns, positions, forcings = [], [], [], []
            for t in range(first, min(first + block, max_frames)):
                q, enc_past = enc.step(frame, enc_past)
                query = q.array if query_positions is None else q.array + query_positions[:, :, t:t + 1]
                column, position, forced = force_incremental(att.weights_step(keys, query, bias), position, n_text)
                logits, dec_past = dec.step(att.read_step(v, column, q.array), dec_past)
                if text2mel.ops == "stock":
                    frame = F.sigmoid(logits).array
                else:
                    frame = xp.tanh(logits.array * half) * half + half  # F.sigmoid's formula
                frames.append(frame)
                columns.append(column)
                positions.append(position)
                forcings.append(forced)
            out = Block(runtime.to_numpy(xp.concatenate(frames, axis=2)), runtime.to_numpy(xp.stack(columns, axis=2)),
                        runtime.to_numpy(xp.stack(positions, axis=1)), runtime.to_numpy(xp.stack(forcings, axis=1)))
        yield out


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
    eval_mode, no_graph = inference()
    with eval_mode, no_graph:
        return runtime.to_numpy(F.sigmoid(ssrn(ssrn.device.send(mel[None]))).array)[0]
