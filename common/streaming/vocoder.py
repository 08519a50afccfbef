"""Griffin-Lim on magnitudes that arrive a chunk at a time: samples while the sentence goes on.

The real-time iterative spectrogram inversion family (Zhu, Beauregard and Wyse 2007, RTISI-LA):
every push runs the fast Griffin-Lim iterations of common.data.audio's offline path (momentum 0.99,
spec.gl_iters) on a window of frames only: `history` frames already
committed (their phases fixed: the new frames' phases must agree with them where they overlap),
the new frames, and the last `lookahead` frames, which are estimated but not committed until more
frames have arrived to their right. A sample is handed out once every frame that overlaps it is
committed, so nothing handed out changes later; the end of the stream commits everything.

Where it differs from offline Griffin-Lim (measured by bench/stream.py against it): a frame's
phase is settled from its neighbours within the window only, and a committed frame never moves
again. And the level: offline wavs are peak-normalized to 0.9 after the whole utterance; a stream
cannot wait for its peak, so each chunk is scaled by 0.9 / the highest peak so far (nothing clips;
the level can only step down, where a louder passage follows the first one; the corpus's speech is
trimmed of leading silence, so the first chunk already holds speech).
"""
from __future__ import annotations

import math

import librosa
import numpy as np
import scipy.signal

from common.contract.spec import Spec
from common.data import audio


class ShortTimeFourier:
    """librosa.stft and librosa.istft with center=False (a test holds them equal), transposed:
    frames along the first axis, so that every FFT runs over contiguous memory; for the short
    windows a stream iterates on. The frames are cut by librosa.util.frame, the window and its
    overlap-added square come from librosa.filters (made once per length), the FFTs are NumPy's.
    On a 10-frame window an iteration (istft, stft) costs 3.6-3.9x as much through librosa's own
    calls (0.41-0.83 vs 0.11-0.23 ms, three interleaved runs; most of it their checks and layout);
    in bins-major layout (FFTs over strided columns) the whole stream took 1.2x as long."""

    def __init__(self, spec: Spec):
        self.n_fft, self.hop = spec.n_fft, spec.hop
        self.window = librosa.util.pad_center(librosa.filters.get_window("hann", spec.win, fftbins=True),
                                              size=spec.n_fft)
        self.win = spec.win
        self.envelopes = {}

    def stft(self, y: np.ndarray) -> np.ndarray:
        """(1 + (len(y) - n_fft) // hop, n_fft / 2 + 1) complex: frame f from sample f * hop."""
        return np.fft.rfft(librosa.util.frame(y, frame_length=self.n_fft, hop_length=self.hop, axis=0) * self.window,
                           axis=-1)

    def istft(self, spectrum: np.ndarray) -> np.ndarray:
        """n_fft + hop * (n - 1) samples from n frames (n, n_fft / 2 + 1): windowed overlap-add over
        the window's overlap-added square (where it is not ~0)."""
        frames = np.fft.irfft(spectrum, n=self.n_fft, axis=-1) * self.window
        n = frames.shape[0]
        out = np.zeros(self.n_fft + self.hop * (n - 1))
        for f in range(n):
            out[f * self.hop:f * self.hop + self.n_fft] += frames[f]
        envelope = self.envelopes.get(n)
        if envelope is None:
            envelope = librosa.filters.window_sumsquare(window="hann", n_frames=n, hop_length=self.hop,
                                                        win_length=self.win, n_fft=self.n_fft, dtype=np.float64)
            envelope = self.envelopes[n] = np.where(envelope > librosa.util.tiny(envelope), envelope, 1.0)
        return out / envelope


MOMENTUM = 0.99  # librosa.griffinlim's default, which the offline path uses


class StreamingGriffinLim:
    """push(normalized magnitudes (F', n)) -> the float32 samples that are final now; finish() ->
    the rest. Together hop * (T - 1) samples for T frames, as the offline path gives."""

    def __init__(self, spec: Spec, iters: int | None = None, history: int | None = None,
                 lookahead: int | None = None, seed: int = 0):
        """`history` and `lookahead` default to the frames a frame overlaps on each side
        (ceil(n_fft / hop) - 1: 3 at the paper's STFT)."""
        self.span = math.ceil(spec.n_fft / spec.hop)  # frames one frame's window reaches over, itself included
        overlap = self.span - 1
        self.spec, self.iters = spec, spec.gl_iters if iters is None else iters
        self.history = overlap if history is None else history
        self.lookahead = overlap if lookahead is None else lookahead
        if self.iters < 0 or self.history < 0 or self.lookahead < 0:
            raise ValueError(f"iters, history and lookahead must be >= 0, got {self.iters}, {self.history}, "
                             f"{self.lookahead}")
        self.fourier = ShortTimeFourier(spec)
        self.keep = max(self.history, self.span)  # committed frames an emission can need
        self.rng = np.random.RandomState(seed)  # new frames start from random phases, as offline
        self.magnitude = np.zeros((0, spec.n_mags))  # linear magnitudes of the frames kept, time-major
        self.phase = np.zeros((0, spec.n_mags), complex)  # their unit phasors
        self.first = 0  # the absolute index of the first frame kept
        self.committed = 0  # frames whose phase is final
        self.emitted = 0  # samples handed out (sample 0 = the centre of frame 0)
        self.emphasis = np.zeros(1)  # the de-emphasis filter's state
        self.loudest = 0.0  # the highest raw peak so far

    @property
    def frames(self) -> int:
        return self.first + self.magnitude.shape[0]

    def push(self, mag) -> np.ndarray:
        """Add frames (F', n) of normalized magnitudes (SSRN's); the samples that are final now."""
        s = audio.linear_magnitudes(mag, self.spec)
        self.magnitude = np.concatenate([self.magnitude, s.T])
        self.phase = np.concatenate([self.phase, np.exp(2j * np.pi * self.rng.random_sample(s.shape)).T])
        self._solve(self.frames - self.lookahead)
        return self._emit(self.committed * self.spec.hop - self.spec.n_fft // 2)

    def finish(self) -> np.ndarray:
        """Commit every frame; the samples not handed out yet."""
        self._solve(self.frames)
        return self._emit(max(0, self.spec.hop * (self.frames - 1)))

    def _solve(self, commit: int) -> None:
        """Iterate on the window (committed history, free frames), then commit frames up to `commit`."""
        if commit <= self.committed:
            return
        start = max(self.first, self.committed - self.history) - self.first
        fixed = self.committed - self.first - start
        s, phase = self.magnitude[start:], self.phase[start:]
        previous = 0
        for _ in range(self.iters):
            rebuilt = self.fourier.stft(self.fourier.istft(s * phase))
            update = rebuilt[fixed:] - (MOMENTUM / (1 + MOMENTUM)) * previous
            phase[fixed:] = update / (np.abs(update) + 1e-16)
            previous = rebuilt[fixed:]
        self.committed = commit

    def _emit(self, end: int) -> np.ndarray:
        """De-emphasized, levelled samples [emitted, end) from the committed frames that overlap them."""
        if end <= self.emitted:
            return np.zeros(0, np.float32)
        half, hop = self.spec.n_fft // 2, self.spec.hop
        lo = max(self.first, (self.emitted + half) // hop - self.span)
        hi = self.committed  # frames from `hi` on start at or after `end`
        wav = self.fourier.istft(self.magnitude[lo - self.first:hi - self.first]
                                 * self.phase[lo - self.first:hi - self.first])
        offset = lo * hop - half  # the sample wav[0] stands for
        wav = wav[self.emitted - offset:end - offset]
        self.emitted = end
        drop = max(self.first, min(self.committed - self.keep, (end + half) // hop - self.keep)) - self.first
        if drop > 0:
            self.magnitude, self.phase, self.first = self.magnitude[drop:], self.phase[drop:], self.first + drop
        if self.spec.preemphasis > 0:
            wav, self.emphasis = scipy.signal.lfilter([1.0], [1.0, -self.spec.preemphasis], wav, zi=self.emphasis)
        self.loudest = max(self.loudest, float(np.abs(wav).max(initial=0.0)))
        return (audio.PEAK * wav / max(self.loudest, np.finfo(np.float64).tiny)).astype(np.float32)
