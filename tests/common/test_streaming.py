"""Streaming synthesis, framework-free: SSRN's reach and chunked SSRN against the NumPy reference,
the streaming vocoder against librosa and the offline path, the timeline, the writers. (Each
framework's stream of mel chunks and its chunked SSRN: tests/backend_contract.py.)"""
import io

import librosa
import numpy as np
import pytest
import soundfile as sf

from common.contract import reference as R, spec as S, weights as W
from common.data import audio, espeak
from common.evaluation import quality
from common.streaming import output
from common.streaming.chunks import ChunkedSSRN, context
from common.streaming.pipeline import Piece, timeline
from common.streaming.vocoder import ShortTimeFourier, StreamingGriffinLim

SSRN_VARIANTS = {"tiny": {}, "batch-norm": dict(norm="batch"), "group-norm": dict(norm="group", norm_num_groups=2),
                 "residual+bottleneck": dict(block="residual", conv="bottleneck"), "r=8": dict(r=8)}


def reference_upsample(spec, seed=1):
    w = W.init_weights(spec, "ssrn", seed)
    return lambda mel: R.sigmoid(R.ssrn(spec, w, np.asarray(mel, np.float64)[None])[0])


def test_ssrn_reach_is_eight_reduced_frames_each_side_at_the_paper():
    """By hand: 2 x HC(3, {1, 3}) reach 4 frames at each resolution; back through the last stage (1 + 1
    at 4x), the two upsampling stages and the first: 8 reduced frames of history and look-ahead."""
    assert context(S.get_spec("paper")) == (8, 8)


@pytest.mark.parametrize("name", SSRN_VARIANTS)
def test_ssrn_reach_is_exact(name):
    """Changing the mel `reach` frames away from a frame changes its magnitudes; one frame further
    does not (on both sides): the reach is neither too short nor too long."""
    spec = S.get_spec("tiny", **SSRN_VARIANTS[name])
    upsample, (history, lookahead) = reference_upsample(spec), context(spec)
    mel = np.random.default_rng(0).random((spec.n_mels, 40))
    t, base = 20, upsample(mel)[:, 20 * spec.r:21 * spec.r]

    def moved(at):
        changed = mel.copy()
        changed[:, at] += 0.5
        return np.abs(upsample(changed)[:, t * spec.r:(t + 1) * spec.r] - base).max()

    assert moved(t - history) > 0 and moved(t + lookahead) > 0
    assert moved(t - history - 1) == 0 and moved(t + lookahead + 1) == 0


@pytest.mark.parametrize("name", SSRN_VARIANTS)
@pytest.mark.parametrize("chunk", [1, 4, 16, 60])
def test_chunked_ssrn_is_the_offline_reference(name, chunk):
    spec = S.get_spec("tiny", **SSRN_VARIANTS[name])
    upsample = reference_upsample(spec)
    mel = np.random.default_rng(2).random((spec.n_mels, 45))
    stream = ChunkedSSRN(upsample, spec)
    pieces = [stream.push(mel[:, i:i + chunk]) for i in range(0, mel.shape[1], chunk)]
    assert sum(p.shape[1] for p in pieces) == max(0, mel.shape[1] - context(spec)[1]) * spec.r  # look-ahead held back
    pieces.append(stream.finish())
    offline = upsample(mel)
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), offline, rtol=0, atol=1e-5 * np.abs(offline).max())
    assert stream.mel.shape[1] <= context(spec)[0] + chunk + context(spec)[1]  # keeps only what the next window needs


def test_chunked_ssrn_refuses_frames_of_another_shape():
    spec = S.get_spec("tiny")
    with pytest.raises(ValueError, match=r"shape \(16, n\)"):
        ChunkedSSRN(reference_upsample(spec), spec).push(np.zeros((15, 3)))


@pytest.mark.parametrize("preset", ["demo", "community", "tiny"])
def test_short_time_fourier_is_librosas(preset):
    spec = S.get_spec(preset)
    kw = dict(n_fft=spec.n_fft, hop_length=spec.hop, win_length=spec.win, window="hann", center=False)
    rng = np.random.default_rng(0)
    x = rng.random((spec.n_mags, 9)) * np.exp(2j * np.pi * rng.random((spec.n_mags, 9)))
    fourier = ShortTimeFourier(spec)  # time-major: frames first
    y = fourier.istft(x.T)
    np.testing.assert_allclose(y, librosa.istft(x, **kw), rtol=0, atol=1e-6 * np.abs(y).max())
    np.testing.assert_allclose(fourier.stft(y).T, librosa.stft(y, **kw), rtol=0, atol=1e-9)


@pytest.fixture(scope="module")
def speech():
    """The demo recipe's magnitudes (F', T) of a real spoken sentence (espeak-ng) and its offline wav."""
    spec = S.get_spec("demo")
    samples, sr = espeak.speak("A quiet river runs past the old mill.")
    wav = librosa.resample(np.asarray(samples, np.float32) / 32768, orig_sr=sr, target_sr=spec.sr)
    mag = audio.features(wav, spec)[1]
    return spec, mag, audio.mag_to_wav(mag, spec)


def stream_vocoder(spec, mag, chunk, **options):
    vocoder = StreamingGriffinLim(spec, **options)
    pieces = [vocoder.push(mag[:, i:i + chunk]) for i in range(0, mag.shape[1], chunk)] + [vocoder.finish()]
    return pieces, np.concatenate(pieces)


@pytest.mark.parametrize("chunk", [1, 4, 16])
def test_streaming_griffin_lim_sounds_like_the_offline_one(speech, chunk):
    """Chunks of 1, 4 and 16 frames: the offline length, samples as they come (each chunk after the first
    few completes some), peak 0.9 and within 1 dB MCD-DTW of the offline wav (measured: 0.2-0.3)."""
    spec, mag, offline = speech
    pieces, wav = stream_vocoder(spec, mag, chunk)
    assert len(wav) == len(offline) == spec.hop * (mag.shape[1] - 1)
    assert all(len(p) > 0 for p in pieces[8 // chunk + 1:-1])
    assert np.abs(wav).max() == pytest.approx(0.9, abs=1e-6)
    assert quality.mcd_dtw(audio.features(wav, spec)[0], audio.features(offline, spec)[0], spec) < 1.0


def test_one_chunk_without_look_ahead_is_librosas_griffin_lim(speech):
    """The whole utterance as one window, no look-ahead: the same random start, momentum and
    iterations as librosa.griffinlim; only the edges differ (librosa pads reflectively)."""
    spec, mag, offline = speech
    _, wav = stream_vocoder(spec, mag, mag.shape[1], lookahead=0)
    inner = slice(spec.n_fft, -spec.n_fft)
    assert np.corrcoef(wav[inner], offline[inner])[0, 1] > 0.999


def test_a_stream_levels_as_it_goes_and_never_clips():
    """Each piece is scaled by 0.9 / the loudest raw sample so far: a louder passage after a quiet
    one steps the level down, and nothing exceeds 0.9."""
    spec = S.get_spec("tiny")
    vocoder = StreamingGriffinLim(spec, iters=2)
    quiet, loud = np.full((spec.n_mags, 12), 0.3), np.full((spec.n_mags, 12), 0.9)
    first = vocoder.push(quiet)
    second = np.concatenate([vocoder.push(loud), vocoder.finish()])
    assert np.abs(first).max() == pytest.approx(0.9, abs=1e-6) and np.abs(second).max() == pytest.approx(0.9, abs=1e-6)
    assert vocoder.loudest > 0 and len(first) + len(second) == spec.hop * 23


def test_streaming_griffin_lim_refuses_bad_options_and_shapes():
    spec = S.get_spec("tiny")
    with pytest.raises(ValueError, match="must be >= 0"):
        StreamingGriffinLim(spec, lookahead=-1)
    with pytest.raises(audio.AudioError, match="mag must have shape"):
        StreamingGriffinLim(spec).push(np.zeros((5, 3)))


def test_the_timeline_of_a_stream():
    """Pieces of 0.5 s of audio at 1.0, 1.2 and 2.0 s: first audio at 1.0, the third is due at 2.0 (on time);
    at 2.5 instead, a player would wait 0.5 s."""
    sr = 100

    def piece(at):
        return Piece(np.zeros(50, np.float32), at, 0.0, 0.0, 0.0)

    on_time = timeline([piece(1.0), piece(1.2), piece(2.0)], sr)
    assert on_time.first_audio_s == 1.0 and on_time.audio_s == 1.5 and on_time.stall_s == 0
    assert on_time.max_gap_s == pytest.approx(0.8) and on_time.real_time_factor == pytest.approx(2.0 / 1.5)
    assert timeline([piece(1.0), piece(1.2), piece(2.5)], sr).stall_s == pytest.approx(0.5)
    assert timeline([piece(1.0), piece(1.7), piece(2.5)], sr).stall_s == pytest.approx(0.5)  # late by 0.2, then 0.3 more


def test_a_wav_stream_is_a_valid_wav_after_every_piece(tmp_path):
    path = tmp_path / "s.wav"
    stream = output.WavStream(path, 8000)
    for n in (100, 250):
        stream.write(np.full(n, 0.25, np.float32))
        assert sf.info(str(path)).frames == {100: 100, 250: 350}[n]
    stream.close()
    wav, sr = sf.read(str(path))
    assert sr == 8000 and len(wav) == 350 and wav.max() == pytest.approx(0.25, abs=1e-4)


def test_a_pcm_stream_is_signed_16_bit_little_endian():
    sink = io.BytesIO()
    stream = output.PcmStream(sink)
    stream.write(np.array([0.0, 0.5, -1.0, 2.0], np.float32))
    assert np.frombuffer(sink.getvalue(), "<i2").tolist() == [0, 16384, -32767, 32767]
