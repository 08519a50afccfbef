"""Audio front and back end, written once (librosa + soundfile): wav -> (mel, mag)
features in [0, 1] by the preset's recipe, and magnitudes -> wav by Griffin-Lim.

Recipes (spec.features):
  "power" [paper]: |STFT| and its mel projection, each normalized by its own maximum
                   and compressed: (S / max S) ** gamma. Inverse: Griffin-Lim on
                   mag ** (eta / gamma), the paper's sharpening.
  "db" [kyubyong]: decibels 20 log10(max(1e-5, S)) normalized to
                   clip((db - ref_db + max_db) / max_db, 1e-8, 1). Inverse: de-normalize,
                   amplitude ** gl_power, Griffin-Lim.
Pre-emphasis (and de-emphasis after Griffin-Lim) applies whenever spec.preemphasis > 0.
"""
from __future__ import annotations

from pathlib import Path

import librosa
import numpy as np
import scipy.signal
import soundfile as sf

from common.contract.spec import Spec


PEAK = 0.9  # [ours] the level synthesized wavs are normalized to (mag_to_wav; a stream, as it goes)


class AudioError(ValueError):
    """Audio that cannot be used (unreadable, empty, not mono, wrong shape)."""


def load_wav(path, spec: Spec) -> np.ndarray:
    """Mono float32 samples at spec.sr with leading/trailing silence trimmed (top_db)."""
    try:
        wav, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        raise AudioError(f"cannot read audio file {path}: {err}") from err
    if wav.shape[1] != 1:
        raise AudioError(f"{path} has {wav.shape[1]} channels; only mono audio is supported")
    if wav.shape[0] == 0:
        raise AudioError(f"{path} holds no samples")
    if not np.all(np.isfinite(wav)):
        raise AudioError(f"{path} holds non-finite samples")
    wav = wav[:, 0]
    if sr != spec.sr:
        wav = librosa.resample(wav, orig_sr=sr, target_sr=spec.sr)
    return librosa.effects.trim(wav, top_db=spec.top_db, frame_length=spec.win, hop_length=spec.hop)[0]


def features(wav, spec: Spec) -> tuple:
    """(mel (n_mels, T), mag (n_fft/2 + 1, T)) float32 in [0, 1]; T = 1 + len(wav) // hop."""
    y = np.asarray(wav, np.float64)
    if y.ndim != 1 or y.size == 0:
        raise AudioError(f"features need a non-empty 1-D wav, got shape {y.shape}")
    if spec.preemphasis > 0:
        y = scipy.signal.lfilter([1.0, -spec.preemphasis], [1.0], y)
    mag = np.abs(librosa.stft(y, n_fft=spec.n_fft, hop_length=spec.hop, win_length=spec.win, window="hann"))
    mel = librosa.filters.mel(sr=spec.sr, n_fft=spec.n_fft, n_mels=spec.n_mels) @ mag
    return _normalize(mel, spec), _normalize(mag, spec)


def _normalize(s: np.ndarray, spec: Spec) -> np.ndarray:
    if spec.features == "power":
        out = (s / max(s.max(), np.finfo(np.float64).tiny)) ** spec.gamma
    else:
        db = 20 * np.log10(np.maximum(1e-5, s))
        out = np.clip((db - spec.ref_db + spec.max_db) / spec.max_db, 1e-8, 1)
    return out.astype(np.float32)


def to_db(x, spec: Spec):
    """The "db" recipe's features back in decibels (20 log10 S): its normalization undone."""
    return x * spec.max_db - spec.max_db + spec.ref_db


def mag_to_wav(mag, spec: Spec) -> np.ndarray:
    """float32 wav from normalized magnitudes (F', T) by Griffin-Lim (spec.gl_iters, fixed seed).

    Peak-normalized to 0.9 [ours]: "power" features keep no absolute level, and the "db"
    recipe's gl_power sharpening can push peaks past 1 (clipping when saved)."""
    s = linear_magnitudes(mag, spec)
    if s.shape[1] == 0:
        raise AudioError(f"mag must have shape ({spec.n_mags}, T > 0) for spec {spec.name!r}, got {s.shape}")
    wav = librosa.griffinlim(s, n_iter=spec.gl_iters, hop_length=spec.hop, win_length=spec.win,
                             n_fft=spec.n_fft, window="hann", random_state=0)
    if spec.preemphasis > 0:
        wav = scipy.signal.lfilter([1.0], [1.0, -spec.preemphasis], wav)
    wav = PEAK * wav / max(np.abs(wav).max(), np.finfo(np.float64).tiny)
    return wav.astype(np.float32)


def linear_magnitudes(mag, spec: Spec) -> np.ndarray:
    """The STFT magnitudes Griffin-Lim inverts (float64 (F', T)) from normalized ones, by the
    recipe (module docstring): the sharpened power features, or the decibels de-normalized and
    raised to gl_power. Frame by frame, so a stream can convert its chunks alone."""
    x = np.asarray(mag, np.float64)
    if x.ndim != 2 or x.shape[0] != spec.n_mags:
        raise AudioError(f"mag must have shape ({spec.n_mags}, T) for spec {spec.name!r}, got {x.shape}")
    x = np.clip(x, 0, 1)
    if spec.features == "power":
        return x ** (spec.eta / spec.gamma)
    return (10.0 ** (to_db(x, spec) / 20)) ** spec.gl_power


def save_wav(path, wav, spec: Spec) -> Path:
    """16-bit PCM wav at spec.sr, samples clipped to [-1, 1]."""
    path = Path(path)
    sf.write(str(path), np.clip(np.asarray(wav, np.float32), -1, 1), spec.sr, subtype="PCM_16")
    return path


def mel_to_mag(mel: np.ndarray, spec: Spec) -> np.ndarray:
    """Rough magnitudes (F', r*T) from reduced mel features (F, T), to hear Text2Mel alone:
    frames repeated r times, bands spread over FFT bins by librosa's NNLS inverse of the mel
    filterbank, scaled so that a flat mel gives a flat spectrum. SSRN does this properly."""
    def inverse(m):
        return librosa.feature.inverse.mel_to_stft(m, sr=spec.sr, n_fft=spec.n_fft, power=1.0)

    flat = inverse(np.ones((spec.n_mels, 1)))
    return np.clip(inverse(np.repeat(np.asarray(mel, np.float64), spec.r, axis=1)) / np.maximum(flat, 1e-8), 0, 1)
