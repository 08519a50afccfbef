"""Framework-neutral pieces of autoregressive synthesis: the forcing rule (NumPy, the spec
each framework's on-device version is tested against), input checks, and the batch layout.

Synthesis runs several sentences at once: each framework encodes every sentence's text on its
own (TextEnc's convolutions would otherwise see the padding of the longer ones), pads K and V
to the longest (`pad_ids` gives the ids whose padding the attention masks), then decides every
frame's attention on the device. The host looks at "has every sentence ended?" only every
STOP_CHECK_EVERY frames, and `split_batch` cuts each sentence at its own end afterwards, so a
sentence comes out the same alone or in a batch. Each sentence comes out as a `Synthesis`: the
pair (mel, attention), which also carries which frames the forcing decided (`.forced`).

Each framework's `decode` is one generator for both uses: it hands the host a block of frames
every `block` frames (a `Block`), and the consumer decides when to stop it: `collect` (a batch,
every STOP_CHECK_EVERY frames, until every sentence has ended) or `stream_mels` (one sentence, a
streaming chunk at a time, until it has ended).
"""
from __future__ import annotations

from typing import Generator, Iterator, NamedTuple

import numpy as np

from common.contract import spec as S

STOP_CHECK_EVERY = 8  # frames a batch's decode hands the host at a time, which then looks for the ends


class Synthesis(tuple):
    """One synthesized sentence: the pair (mel (F, T) in [0, 1], attention (N, T)), so that
    `mel, attention = out` reads it, plus `.forced` (T,) bool: True where forcibly incremental
    attention replaced the network's column (force_incremental), as decided during synthesis.
    (An exact one-hot column does not tell: a sharp trained softmax underflows to one too.)"""

    def __new__(cls, mel, attention, forced):
        out = super().__new__(cls, (mel, attention))
        out.forced = forced
        return out

    def __getnewargs__(self):  # copy and pickle: rebuild with the flags
        return (*self, self.forced)

    @property
    def mel(self):
        return self[0]

    @property
    def attention(self):
        return self[1]


def force_incremental(columns: np.ndarray, prev: np.ndarray, n_text: np.ndarray) -> tuple:
    """Forcibly incremental attention [paper, section 4.2], for a batch.

    `columns` (B, N) is the attention over text positions at the new frame, `prev` (B,) the
    positions chosen at the previous frame (0 before the first frame: reading starts at the
    first character), `n_text` (B,) each sentence's length. Where argmax n_t is not in
    [prev - 1, prev + 3], the column becomes one-hot at prev + 1 (clipped to n_text - 1).
    Returns (columns to use (B, N), positions n_t (B,), forced (B,) bool: the column was replaced)."""
    n = columns.argmax(axis=1)
    keep = (n >= prev - 1) & (n <= prev + 3)
    forced = np.minimum(prev + 1, n_text - 1)
    one_hot = (np.arange(columns.shape[1])[None, :] == forced[:, None]).astype(columns.dtype)
    return np.where(keep[:, None], columns, one_hot), np.where(keep, n, forced), ~keep


def reached_end(position, n_text):
    """Synthesis stops once attention reaches the end-of-text symbol (the last position).
    Works elementwise on arrays (and on each framework's tensors)."""
    return position >= n_text - 1


def check_ids(ids, spec, max_frames: int) -> np.ndarray:
    """One utterance's ids (N,) as int32 (and a frame limit >= 1), or a clear ValueError."""
    ids = np.asarray(ids)
    if ids.ndim != 1 or ids.size == 0:
        raise ValueError(f"expected a non-empty 1-D array of text ids, got shape {ids.shape}")
    if ids.size > spec.max_chars:
        raise ValueError(f"text of {ids.size} symbols is longer than the model's limit of {spec.max_chars}")
    if ids.min() < 0 or ids.max() >= spec.n_vocab:
        raise ValueError(f"text ids must lie in [0, {spec.n_vocab}), got [{ids.min()}, {ids.max()}]")
    if np.any(ids == S.PAD):
        raise ValueError(f"text ids may not contain the padding id {S.PAD} (attention ignores it)")
    if max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    return ids.astype(np.int32)


def check_texts(texts, spec, max_frames: int) -> list:
    """Several utterances' ids, each checked by check_ids; at least one."""
    texts = list(texts)
    if not texts:
        raise ValueError("nothing to synthesize: no texts given")
    return [check_ids(ids, spec, max_frames) for ids in texts]


def pad_ids(texts: list, width: int | None = None) -> np.ndarray:
    """(B, width) int32 (default: the longest sentence's length): each sentence's ids, then PAD."""
    out = np.full((len(texts), width or max(len(t) for t in texts)), S.PAD, np.int32)
    for row, ids in zip(out, texts):
        row[:len(ids)] = ids
    return out


def split_batch(mel: np.ndarray, attention: np.ndarray, positions: np.ndarray, forced: np.ndarray,
                n_text) -> list:
    """Batched outputs -> one Synthesis (mel (F, T_b), attention (N_b, T_b), .forced (T_b,) bool)
    per sentence.

    mel (B, F, T), attention (B, N_max, T), positions and forced (B, T) as decided by
    force_incremental. A sentence ends at the first frame whose position reaches its end of
    text (that frame included), or runs all T frames."""
    out = []
    for b, n in enumerate(n_text):
        ended = np.flatnonzero(reached_end(positions[b], n))
        t = int(ended[0]) + 1 if ended.size else mel.shape[2]
        out.append(Synthesis(mel[b, :, :t], attention[b, :n, :t], np.asarray(forced[b, :t], bool)))
    return out


class Block(NamedTuple):
    """What a framework's decode hands the host every `block` frames (the last block of a run of
    max_frames may be shorter): mel (B, F, n) in [0, 1], attention (B, N_max, n), positions (B, n)
    int64 and forced (B, n) bool, as force_incremental decided them."""
    mel: np.ndarray
    attention: np.ndarray
    positions: np.ndarray
    forced: np.ndarray


def collect(blocks: Generator[Block, None, None], n_text) -> list:
    """A batch's synthesis from its decode's blocks: read blocks until every sentence has reached
    its end of text (or the blocks run out), stop the decoding, split_batch the result."""
    parts, ended = [], np.zeros(len(n_text), bool)
    for block in blocks:
        parts.append(block)
        ended |= reached_end(block.positions, np.asarray(n_text)[:, None]).any(axis=1)
        if ended.all():
            break
    blocks.close()
    return split_batch(*(np.concatenate(arrays, axis=-1) for arrays in zip(*parts)), n_text)


def batch_synthesis(decode, texts, spec, max_frames: int) -> list:
    """Every framework's batch synthesis, given its `decode(texts, max_frames, block)`: the texts
    checked (check_texts), then decode's blocks of STOP_CHECK_EVERY frames read until every
    sentence has reached its end of text or after `max_frames` frames, each sentence cut at its own
    end (collect): one Synthesis per sentence."""
    texts = check_texts(texts, spec, max_frames)
    return collect(decode(texts, max_frames, STOP_CHECK_EVERY), [len(ids) for ids in texts])


def stream_mels(blocks: Generator[Block, None, None], n_text: int) -> Iterator[np.ndarray]:
    """One sentence's mel (F, n) a block at a time, as its decode hands them over, the last one cut
    at the end of text (that frame included; where a block ends exactly there, no empty one
    follows); the decoding stops there. Their concatenation is the offline Synthesis's mel."""
    try:
        for block in blocks:
            ended = np.flatnonzero(reached_end(block.positions[0], n_text))
            yield block.mel[0, :, :int(ended[0]) + 1] if ended.size else block.mel[0]
            if ended.size:
                return
    finally:
        blocks.close()


def check_chunk(chunk) -> int:
    """A streaming chunk size (frames per block handed over) as an int >= 1, or a clear ValueError."""
    if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise ValueError(f"the chunk size must be a whole number of frames >= 1, got {chunk!r}")
    return int(chunk)


def check_mel(mel, spec) -> np.ndarray:
    """A reduced mel (F, T > 0) as float32 for SSRN, or a clear ValueError."""
    mel = np.asarray(mel, np.float32)
    if mel.ndim != 2 or mel.shape[0] != spec.n_mels or mel.shape[1] == 0:
        raise ValueError(f"expected a mel of shape ({spec.n_mels}, T>0), got {mel.shape}")
    return mel
