"""Where a stream's samples go as they are produced: a wav file that is valid (header and all)
after every piece, or raw 16-bit PCM on a pipe (`-o -`: `... | aplay -f S16_LE -r 22050 -c 1`)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import soundfile as sf


class WavStream:
    """A 16-bit PCM wav at `sr`, written a piece at a time; soundfile's flush rewrites the header's
    lengths, so a reader sees every sample written so far."""

    def __init__(self, path, sr: int):
        self.path = Path(path)
        self.file = sf.SoundFile(str(self.path), "w", samplerate=sr, channels=1, subtype="PCM_16")

    def write(self, samples: np.ndarray) -> None:
        self.file.write(np.clip(np.asarray(samples, np.float32), -1, 1))
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class PcmStream:
    """Raw signed 16-bit little-endian mono samples on a binary stream (stdout's by default)."""

    def __init__(self, stream=None):
        self.stream = stream if stream is not None else sys.stdout.buffer

    def write(self, samples: np.ndarray) -> None:
        pcm = np.round(np.clip(np.asarray(samples, np.float32), -1, 1) * 32767).astype("<i2")
        self.stream.write(pcm.tobytes())
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()
