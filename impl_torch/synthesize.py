"""Inference: autoregressive Text2Mel synthesis of a batch of sentences with forcibly
incremental attention decided on the device (handed over a block of frames at a time: whole
sentences or a stream), and SSRN upsampling. No gradient tape
(torch.inference_mode); nothing is kept between calls."""
from __future__ import annotations

from impl_torch import runtime  # noqa: F401  (the framework environment comes first)

import functools

import numpy as np
import torch
import torch.nn.functional as F

from common.contract import spec as S
from common.contract.synthesis import Block, batch_synthesis, check_mel, check_texts, pad_ids
from impl_torch.text2mel import pad_bias


def force_incremental(columns, prev, n_text):
    """common.contract.synthesis.force_incremental on the device: columns (B, N), prev and n_text (B,)
    -> (columns, positions, forced (B,) bool)."""
    n = columns.argmax(dim=1)
    keep = (n >= prev - 1) & (n <= prev + 3)
    forced = torch.minimum(prev + 1, n_text - 1)
    one_hot = F.one_hot(forced, columns.shape[1]).to(columns.dtype)
    return torch.where(keep[:, None], columns, one_hot), torch.where(keep, n, forced), ~keep


def encode(text2mel, texts: list, device) -> tuple:
    """K, V (B, d, N_max) of each sentence encoded alone, zero-padded; the padded ids' bias."""
    keys, values = [], []
    width = max(len(ids) for ids in texts)
    for ids in texts:
        k, v = text2mel.textenc(torch.from_numpy(ids)[None].to(device))
        keys.append(F.pad(k, (0, width - len(ids))))
        values.append(F.pad(v, (0, width - len(ids))))
    return torch.cat(keys), torch.cat(values), pad_bias(torch.from_numpy(pad_ids(texts)).to(device))


def position_tables(spec, width: int, max_frames: int, device) -> tuple:
    """spec.position's w PK (1, d, width), added to the keys once, and w PQ (1, d, max_frames),
    whose column t is added to frame t's query (common.contract.spec.attention_positions); (None, None)
    without positions [paper]."""
    if spec.position == "none":
        return None, None
    return tuple(torch.tensor(p[None], dtype=torch.float32, device=device)
                 for p in S.attention_positions(spec, width, max_frames))


def decode(text2mel, texts: list, max_frames: int, block: int):
    """Several id arrays (N_b,), each ending with end-of-text -> a generator of
    common.contract.synthesis.Block (mel (B, F, n), attention (B, N_max, n), positions, forced
    (B, n)), one every `block` frames, for up to `max_frames` frames; the consumer stops it
    (common.contract.synthesis.collect, stream_mels).

    TextEnc runs once per sentence; then one frame per step for the whole batch through
    AudioEnc, attention and AudioDec, incrementally (each causal layer keeps its last
    (k-1)*dilation inputs, so a step costs one frame, not the whole prefix; with spec.position,
    the keys' positions are added once and frame t's to its query). The new attention
    columns are forced on the device before V is read with them; a block's frames go to the host
    together (one copy per block). Inference mode holds while a block is computed, not between
    blocks (the consumer's code runs there)."""
    texts = check_texts(texts, text2mel.spec, max_frames)
    text2mel.eval()
    device = next(text2mel.parameters()).device
    enc, att, dec = text2mel.audioenc.layers, text2mel.attention, text2mel.audiodec.layers
    with torch.inference_mode():
        k, v, bias = encode(text2mel, texts, device)
        key_positions, query_positions = position_tables(text2mel.spec, k.shape[2], max_frames, device)
        keys = k if key_positions is None else k + key_positions
        batch = len(texts)
        n_text = torch.tensor([len(ids) for ids in texts], device=device)
        enc_past, dec_past = enc.initial_history(batch), dec.initial_history(batch)
        frame = torch.zeros(batch, text2mel.spec.n_mels, 1, device=device)  # the teacher-forcing shift's zero frame
        position = torch.zeros(batch, dtype=torch.int64, device=device)
    for first in range(0, max_frames, block):
        with torch.inference_mode():
            frames, columns, positions, forcings = [], [], [], []
            for t in range(first, min(first + block, max_frames)):
                q, enc_past = enc.step(frame, enc_past)
                query = q if query_positions is None else q + query_positions[:, :, t:t + 1]
                column, position, forced = force_incremental(att.weights(keys, query, bias)[:, :, 0], position, n_text)
                logits, dec_past = dec.step(att.read(v, column[:, :, None], q), dec_past)
                frame = torch.sigmoid(logits)
                frames.append(frame)
                columns.append(column)
                positions.append(position)
                forcings.append(forced)
            out = Block(torch.cat(frames, dim=2).cpu().numpy(), torch.stack(columns, dim=2).cpu().numpy(),
                        torch.stack(positions, dim=1).cpu().numpy(), torch.stack(forcings, dim=1).cpu().numpy())
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
    ssrn.eval()
    device = next(ssrn.parameters()).device
    with torch.inference_mode():
        return torch.sigmoid(ssrn(torch.from_numpy(mel)[None].to(device)))[0].cpu().numpy()
