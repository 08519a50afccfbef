"""Text to samples as a stream: Text2Mel's chunks -> SSRN on chunks -> streaming Griffin-Lim, in one
thread, each stage clocked, and the figures a listener feels (time to first audio, the longest
wait, whether a player started at the first audio would ever run dry)."""
from __future__ import annotations

import time
from typing import Iterator, NamedTuple

import numpy as np

from common.streaming.chunks import ChunkedSSRN
from common.streaming.vocoder import StreamingGriffinLim


class Piece(NamedTuple):
    """Samples that became final, when (seconds since the stream started), and the seconds each stage
    spent on them since the previous piece."""
    samples: np.ndarray
    at: float
    text2mel_s: float
    ssrn_s: float
    vocoder_s: float


def speak(text2mel, ssrn, ids, chunk: int, max_frames: int | None = None, **vocoder) -> Iterator[Piece]:
    """One sentence's samples (float32 at the spec's rate) as they become final: Text2Mel decodes
    `chunk` reduced frames (Backend.synthesize_stream), SSRN upsamples the frames whose look-ahead
    has arrived (chunks.ChunkedSSRN), Griffin-Lim turns them into samples (vocoder.StreamingGriffinLim,
    `vocoder` its options). Nothing is yielded for a chunk that completes no sample. The text and
    the chunk size are checked at the call."""
    spec = ssrn.spec
    mels = text2mel.synthesize_stream(ids, max_frames or text2mel.spec.max_frames, chunk)
    return _pieces(text2mel, ssrn, mels, ChunkedSSRN(ssrn.upsample, spec), StreamingGriffinLim(spec, **vocoder))


def _pieces(text2mel, ssrn, mels, upsampler, vocoder) -> Iterator[Piece]:
    start = time.perf_counter()
    stages = np.zeros(3)
    mels = iter(mels)
    while True:
        clock = time.perf_counter()
        mel = next(mels, None)
        text2mel.sync()
        stages[0] += time.perf_counter() - clock
        clock = time.perf_counter()
        mag = upsampler.finish() if mel is None else upsampler.push(mel)
        ssrn.sync()
        stages[1] += time.perf_counter() - clock
        clock = time.perf_counter()
        samples = vocoder.push(mag)
        if mel is None:
            samples = np.concatenate([samples, vocoder.finish()])
        stages[2] += time.perf_counter() - clock
        if samples.size:
            yield Piece(samples, time.perf_counter() - start, *stages)
            stages[:] = 0
        if mel is None:
            return


class Timeline(NamedTuple):
    """How a stream felt: seconds to the first samples, the whole stream's seconds, the audio's
    seconds, the longest wait between two pieces after the first, and the seconds a player started
    at the first samples would have waited for samples in all (0: it never ran dry)."""
    first_audio_s: float
    total_s: float
    audio_s: float
    max_gap_s: float
    stall_s: float

    @property
    def real_time_factor(self) -> float:
        """The stream's seconds per second of audio (< 1: faster than it plays)."""
        return self.total_s / self.audio_s


def timeline(pieces: list, sr: int) -> Timeline:
    """The Timeline of a finished stream's pieces (at least one)."""
    at = np.array([p.at for p in pieces])
    audio = np.array([p.samples.size for p in pieces]) / sr
    due = at[0] + np.concatenate([[0.0], np.cumsum(audio)[:-1]])  # when piece k plays if nothing waited
    # a player waits for a late piece and plays the rest that much later: the waits add up to the latest lateness
    return Timeline(float(at[0]), float(at[-1]), float(audio.sum()), float(np.diff(at).max(initial=0.0)),
                    float(max(0.0, (at - due).max())))
