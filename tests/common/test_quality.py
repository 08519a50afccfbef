"""Quality metrics: MCD-DTW, alignment of attention, evaluate() through the Backend interface."""
import re

import numpy as np
import pytest

from common.data import audio, corpus
from common.evaluation import quality
from common.data.dataset import DataError
from common.contract.spec import get_spec
from common.contract.synthesis import Synthesis

TINY = get_spec("tiny")  # "db" features, 16 mel bins
PAPER = get_spec("paper")  # "power" features


@pytest.fixture(scope="module")
def mel(tiny_corpus_dir):
    """A real full-rate mel: an espeak-ng sentence at the tiny preset."""
    return audio.features(audio.load_wav(next((tiny_corpus_dir / "wavs").glob("*-T*.wav")), TINY), TINY)[0]


def tilted(mel, size):
    """A spectral tilt: the normalized (log) spectrum raised at high bins, lowered at low ones."""
    return np.clip(mel + size * np.linspace(-1, 1, mel.shape[0])[:, None], 1e-8, 1).astype(np.float32)


def stretched(mel, factor):
    """Time-stretched by linear interpolation between frames."""
    t = np.linspace(0, mel.shape[1] - 1, round(mel.shape[1] * factor))
    return np.stack([np.interp(t, np.arange(mel.shape[1]), row) for row in mel]).astype(np.float32)


def test_mcd_of_a_mel_with_itself_is_zero(mel):
    assert quality.mcd_dtw(mel, mel, TINY) == 0.0


def test_mcd_grows_with_noise_and_with_tilt(mel):
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(mel.shape)
    by_noise = [quality.mcd_dtw(mel, np.clip(mel + s * noise, 1e-8, 1), TINY) for s in (0.01, 0.03, 0.1, 0.3)]
    by_tilt = [quality.mcd_dtw(mel, tilted(mel, s), TINY) for s in (0.01, 0.03, 0.1, 0.3)]
    assert 0 < by_noise[0] and np.all(np.diff(by_noise) > 0), by_noise
    assert 0 < by_tilt[0] and np.all(np.diff(by_tilt) > 0), by_tilt


def test_dtw_forgives_a_time_stretch_not_a_spectral_change(mel):
    assert quality.mcd_dtw(mel, np.repeat(mel, 2, axis=1), TINY) == 0.0  # every frame has its twin
    stretch = quality.mcd_dtw(mel, stretched(mel, 1.5), TINY)
    tilt = quality.mcd_dtw(mel, tilted(mel, 0.1), TINY)
    no_dtw = quality._MCD_SCALE * np.linalg.norm(  # the same stretch compared frame by frame
        quality.mel_cepstrum(mel, TINY) - quality.mel_cepstrum(stretched(mel, 1.5)[:, :mel.shape[1]], TINY), axis=0)
    assert stretch < tilt / 3 and stretch < no_dtw.mean() / 3, (stretch, tilt, no_dtw.mean())


def test_frames_added_to_the_synthesis_do_not_dilute_the_mcd(mel):
    """A wrong output followed by silence must not score better than the wrong output alone
    (the mean over the DTW path fell from 6.1 to 2.9 dB that way: a synthesis that never
    stopped looked better than one that did)."""
    wrong = tilted(mel, 0.3)
    silence = np.repeat(mel[:, -1:], 3 * mel.shape[1], axis=1)
    alone = quality.mcd_dtw(wrong, mel, TINY)
    assert quality.mcd_dtw(np.concatenate([wrong, silence], axis=1), mel, TINY) >= 0.9 * alone > 0


def test_silence_before_and_after_the_speech_costs_nothing(mel):
    """Leading and trailing silence is trimmed from both mels: a synthesis that says the
    sentence right and then stays silent for a while scores as the sentence alone."""
    silent = np.zeros((mel.shape[0], 30), np.float32)
    assert quality.mcd_dtw(np.concatenate([silent[:, :5], mel, silent], axis=1), mel, TINY) == 0.0
    assert quality.trim_silence(np.concatenate([silent, mel], axis=1), TINY).shape == quality.trim_silence(mel, TINY).shape


def test_cepstrum_leaves_out_the_level():
    """c0 is dropped: a constant offset of the log spectrum (loudness) changes nothing."""
    rng = np.random.default_rng(1)
    mel = 0.3 + 0.4 * rng.random((TINY.n_mels, 20))
    assert quality.mcd_dtw(mel, mel + 0.1, TINY) == pytest.approx(0, abs=1e-6)
    assert quality.mcd_dtw(mel, mel * 0.5 ** PAPER.gamma, PAPER) == pytest.approx(0, abs=1e-6)  # S halved
    assert quality.mel_cepstrum(mel, TINY, n_coeffs=5).shape == (5, 20)


def test_power_features_of_silence_are_finite():
    mel = np.zeros((PAPER.n_mels, 5), np.float32)
    assert np.isfinite(quality.mcd_dtw(mel, np.full_like(mel, 0.5), PAPER))


def diagonal(n, t, sigma=1.0):
    """Soft attention (n, t) along the line from (0, 0) to (n-1, t-1), never exactly one-hot."""
    centre = np.linspace(0, n - 1, t)
    a = np.exp(-((np.arange(n)[:, None] - centre[None]) ** 2) / (2 * sigma ** 2))
    return (a / a.sum(axis=0)).astype(np.float32)


def one_hot(positions, n):
    a = np.zeros((n, len(positions)), np.float32)
    a[positions, np.arange(len(positions))] = 1
    return a


def forced_at(t, frames=slice(0)):
    """Synthesis.forced of t frames: True at `frames` (indices or a slice)."""
    flags = np.zeros(t, bool)
    flags[frames] = True
    return flags


def none_forced(a):
    return forced_at(np.shape(a)[1])


def test_a_clean_diagonal_is_aligned():
    al = quality.alignment(diagonal(20, 60), 20, 50, forced_at(60))
    assert al["aligned"] and al["monotonic"] and al["reaches_end"]
    assert al["forced_frames"] == 0 and al["forced_fraction"] == 0
    assert al["diagonality"] > 0.9 and al["duration_ratio"] == pytest.approx(60 / 50) and al["frames"] == 60


def test_diagonality_measures_the_unforced_frames_only():
    """Forced columns sit on the diagonal by construction: counted, a network forced along 87% of
    the way scored above a trained one. Here the 8 unforced (last) columns look at character 0."""
    a, flags = diagonal(20, 60), forced_at(60, slice(0, 52))
    a[:, 52:] = 0
    a[0, 52:] = 1
    al = quality.alignment(a, 20, 60, flags)
    assert al["diagonality"] < 0.5
    assert quality.alignment(diagonal(20, 60), 20, 60, flags)["diagonality"] > 0.9  # the same flags, on the line
    everything = quality.alignment(diagonal(20, 60), 20, 60, forced_at(60, slice(None)))
    assert everything["diagonality"] is None  # nothing the network chose: nothing to measure
    figures = quality.aggregate([{**everything, "mcd": 1.0}, {**al, "mcd": 1.0}])
    assert figures["diagonality_mean"] == pytest.approx(al["diagonality"])  # the unknown one left out
    assert quality.aggregate([{**everything, "mcd": 1.0}])["diagonality_mean"] is None


def test_stuck_attention_does_not_reach_the_end():
    a = np.roll(diagonal(20, 60, sigma=0.5)[:, :1], 3, axis=0).repeat(60, axis=1)  # stuck on character 3
    al = quality.alignment(a, 20, 30, none_forced(a))
    assert not al["reaches_end"] and not al["aligned"] and al["monotonic"] and al["diagonality"] < 0.4


def test_jumping_back_is_not_monotonic_but_one_step_back_is():
    a = diagonal(20, 60)
    back = np.concatenate([a[:, :30], a[:, 20:]], axis=1)  # falls back ~6 characters, then reads on to the end
    al = quality.alignment(back, 20, 60, none_forced(back))
    assert not al["monotonic"] and not al["aligned"]
    wobble = one_hot([0, 1, 2, 1, 2, 3, 4, 3, 4, 5], 6)  # force_incremental lets the argmax step back by one
    assert quality.alignment(wobble, 6, 10, none_forced(wobble))["monotonic"]


def test_the_frames_synthesis_reports_forced_count_as_forced_not_one_hot_columns():
    """Forced frames are those synthesis flags (Synthesis.forced), whatever the columns look like:
    a trained model's sharp attention underflows to exact one-hots by itself (logit gaps above
    ~104 in fp32) without being forced, and a forced column counts even where it is one-hot."""
    logits = np.full((20, 1), -110.0, np.float32)
    logits[7] = 0
    natural = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()  # the softmax of a sharp column
    assert np.count_nonzero(natural) == 1 and natural.max() == 1  # exactly one-hot in fp32, forced or not
    a = diagonal(20, 60)
    positions = a.argmax(axis=0)
    a[:, 10:18] = one_hot(positions[10:18], 20)  # a crisp diagonal: 8 natural one-hots in a row
    al = quality.alignment(a, 20, 60, forced_at(60))
    assert al["forced_frames"] == 0 and al["longest_forced_run"] == 0 and al["aligned"]
    al = quality.alignment(a, 20, 60, forced_at(60, [11, 12, 13, 40]))
    assert al["forced_frames"] == 4 and al["forced_fraction"] == pytest.approx(4 / 60) and al["aligned"]
    assert al["longest_forced_run"] == 3
    al = quality.alignment(a, 20, 60, forced_at(60, slice(10, 18)))
    assert al["forced_frames"] == 8 and al["longest_forced_run"] == 8 and not al["aligned"]


def test_jitter_is_aligned_but_being_dragged_along_is_not():
    """Forced frames scattered along a diagonal the network follows (here every third frame, a
    third of all) are aligned; a run of more than MAX_FORCED_RUN forced frames is not, nor is a
    synthesis forced on more than MAX_FORCED_FRACTION of its frames."""
    a = diagonal(20, 60)
    positions = a.argmax(axis=0)
    jitter = a.copy()
    jitter[:, ::3] = one_hot(positions[::3], 20)
    al = quality.alignment(jitter, 20, 60, forced_at(60, slice(None, None, 3)))
    assert al["forced_fraction"] == pytest.approx(1 / 3) and al["longest_forced_run"] == 1 and al["aligned"]
    run = quality.MAX_FORCED_RUN
    dragged = a.copy()
    dragged[:, 30:31 + run] = one_hot(positions[30:31 + run], 20)
    al = quality.alignment(dragged, 20, 60, forced_at(60, slice(30, 31 + run)))
    assert al["longest_forced_run"] == run + 1 and al["monotonic"] and al["reaches_end"] and not al["aligned"]
    dragged[:, 30:30 + run] = a[:, 30:30 + run]  # the same run one frame shorter
    assert quality.alignment(dragged, 20, 60, forced_at(60, slice(30 + run, 31 + run)))["aligned"]
    mostly = one_hot(positions, 20)
    mostly[:, ::4] = a[:, ::4]  # the network's own choice on one frame in four, forced runs of 3
    al = quality.alignment(mostly, 20, 60, np.arange(60) % 4 != 0)
    assert al["longest_forced_run"] == 3 and al["forced_fraction"] == pytest.approx(0.75) and not al["aligned"]


def test_too_long_or_too_short_a_synthesis_is_not_aligned():
    """A clean diagonal still needs about the reference's duration: DURATION_RATIO_RANGE, ends included."""
    low, high = quality.DURATION_RATIO_RANGE
    for frames, aligned in ((150, False), (126, False), (125, True), (85, True), (80, True), (79, False)):
        al = quality.alignment(diagonal(20, frames), 20, 100, forced_at(frames))
        assert al["monotonic"] and al["reaches_end"] and al["forced_frames"] == 0, frames
        assert al["aligned"] == aligned == (low <= frames / 100 <= high), frames


def test_longest_run():
    assert quality.longest_run([]) == 0 and quality.longest_run([False, False]) == 0
    assert quality.longest_run([True, False, True, True, True, False, True, True]) == 3
    assert quality.longest_run(np.ones(5, bool)) == 5

def test_alignment_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="n_text"):
        quality.alignment(diagonal(5, 10), 6, 10, forced_at(10))
    with pytest.raises(ValueError, match="forced"):
        quality.alignment(diagonal(5, 10), 5, 10, forced_at(9))


class Perfect:
    """A Backend stand-in that 'synthesizes' the reference mel with diagonal attention."""

    def __init__(self, refs):
        self.mels = {r.ids.tobytes(): r.mel for r in refs}
        self.batches = []

    def synthesize_batch(self, texts, max_frames):
        self.batches.append(len(texts))
        mels = [self.mels[np.asarray(ids).tobytes()] for ids in texts]
        return [Synthesis(mel, diagonal(len(ids), mel.shape[1]), forced_at(mel.shape[1]))
                for ids, mel in zip(texts, mels)]


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    return corpus.build_corpus(tmp_path_factory.mktemp("quality"), 6, seed=3, max_chars=40, heldout=4, progress=False)


def test_references_are_the_reduced_mels_of_the_held_out_set(small_corpus):
    refs = quality.heldout_references(small_corpus, TINY)
    assert [r.id for r in refs] == [e.id for e in corpus.read_heldout(small_corpus)]
    full = audio.features(audio.load_wav(small_corpus / "wavs" / f"{refs[0].id}.wav", TINY), TINY)[0]
    np.testing.assert_array_equal(refs[0].mel, full[:, ::TINY.r])
    assert refs[0].mel.shape[1] == -(-full.shape[1] // TINY.r)  # make_batch's frame count
    assert refs[0].ids[-1] == 1  # end-of-text


def test_evaluate_a_perfect_synthesis_and_the_mean_spectrum(small_corpus):
    refs = quality.heldout_references(small_corpus, TINY)
    frame = quality.mean_frame(r.mel for r in quality.training_references(small_corpus, TINY))
    perfect = Perfect(refs)
    result = quality.evaluate(perfect, refs, TINY, mean_spectrum=frame, batch_size=3)
    assert perfect.batches == [3, 1]  # in order, each sentence measured against its own reference
    assert result["n"] == 4 and result["mcd_mean"] == 0 and result["aligned_rate"] == 1
    assert result["duration_ratio_mean"] == 1 and result["mcd_mean_spectrum_mean"] > 1
    assert result["mcd_ratio_to_mean_spectrum"] == 0 and len(result["rows"]) == 4
    assert result["mcd_gain"] == result["mcd_mean_spectrum_mean"]


class Crisp(Perfect):
    """Perfect, but the attention a crisp diagonal of exact one-hot columns, and the frames in
    `forced` (a slice) reported forced."""

    def __init__(self, refs, forced):
        super().__init__(refs)
        self.forced = forced

    def synthesize_batch(self, texts, max_frames):
        return [Synthesis(mel, one_hot(a.argmax(axis=0), len(ids)), forced_at(mel.shape[1], self.forced))
                for ids, (mel, a) in zip(texts, super().synthesize_batch(texts, max_frames))]


def test_evaluate_counts_the_frames_synthesis_reports_forced(small_corpus):
    refs = quality.heldout_references(small_corpus, TINY)
    run = quality.MAX_FORCED_RUN + 1
    assert min(r.mel.shape[1] for r in refs) > run
    result = quality.evaluate(Crisp(refs, slice(0)), refs, TINY)  # one-hot everywhere, forced nowhere
    assert result["aligned_rate"] == 1 and result["forced_fraction_mean"] == 0
    rows = quality.evaluate(Crisp(refs, slice(1, 1 + run)), refs, TINY)["rows"]
    assert all(r["forced_frames"] == r["longest_forced_run"] == run and not r["aligned"] for r in rows)


def test_evaluate_an_untrained_torch_text2mel(small_corpus):
    pytest.importorskip("torch")
    from common.framework import load_backend
    backend = load_backend("torch")(TINY, "text2mel")
    refs = quality.heldout_references(small_corpus, TINY)
    frame = quality.mean_frame(r.mel for r in quality.training_references(small_corpus, TINY))
    result = quality.evaluate(backend, refs, TINY, max_frames=24, mean_spectrum=frame)
    keys = {"n", "n_coeffs", "mcd_mean", "mcd_median", "aligned_rate", "reaches_end_rate", "monotonic_rate",
            "forced_fraction_mean", "longest_forced_run_median", "duration_ratio_mean", "diagonality_mean",
            "mcd_mean_spectrum_mean", "mcd_mean_spectrum_median", "mcd_ratio_to_mean_spectrum", "mcd_gain", "bands",
            "seconds", "rows"}
    assert keys <= set(result) and result["n"] == 4 and result["n_coeffs"] == quality.N_COEFFS
    assert np.isfinite(result["mcd_mean"]) and result["mcd_mean"] > 0 and result["mcd_median"] > 0
    for rate in ("aligned_rate", "reaches_end_rate", "monotonic_rate", "forced_fraction_mean"):
        assert 0 <= result[rate] <= 1, rate
    all_forced = all(r["forced_frames"] == r["frames"] for r in result["rows"])
    assert result["diagonality_mean"] is None if all_forced else 0 <= result["diagonality_mean"] <= 1
    assert result["duration_ratio_mean"] > 0 and result["seconds"] > 0
    row = result["rows"][0]
    assert 1 <= row["frames"] <= 24 and row["real_frames"] == refs[0].mel.shape[1]
    alone = quality.evaluate(backend, refs, TINY, max_frames=24, batch_size=1)  # a batch = each sentence alone
    for a, b in zip(alone["rows"], result["rows"]):
        assert a["frames"] == b["frames"] and np.isclose(a["mcd"], b["mcd"], atol=1e-3), (a, b)


def test_held_out_sentences_the_model_cannot_take_are_skipped_naming_the_real_file(small_corpus):
    lengths = sorted(len(e.text) + 1 for e in corpus.read_heldout(small_corpus))
    assert lengths[0] < lengths[-1]
    with pytest.warns(UserWarning, match=re.escape(str(small_corpus))):
        refs = quality.heldout_references(small_corpus, get_spec("tiny", max_chars=lengths[0]))
    assert 1 <= len(refs) < 4
    with pytest.raises(DataError, match=re.escape(str(small_corpus))):
        quality.heldout_references(small_corpus, get_spec("tiny", max_chars=5))


def test_cepstrum_has_the_inverse_transform_scale():
    """A log spectrum that is one cosine, log S_k = cos(pi n (k + 1/2) / F), has c_n = 1/2 (the
    convention MCD is defined with; an orthonormal DCT would give sqrt(F / 2))."""
    spec = get_spec("tiny", features="power")
    f, n = spec.n_mels, 3
    log_s = np.cos(np.pi * n * (np.arange(f) + 0.5) / f)
    mel = np.exp(spec.gamma * log_s)[:, None]  # "power" features: log_mel = log(mel) / gamma
    c = quality.mel_cepstrum(mel, spec, n_coeffs=5)[:, 0]
    np.testing.assert_allclose(c, [0, 0, 0.5, 0, 0], atol=1e-12)


class Stretching(Perfect):
    """Perfect, but a sentence of n ids gets its mel tilted by tilt(n) and time-stretched by
    stretch(n), the attention a clean diagonal over the stretched frames."""

    def __init__(self, refs, stretch, tilt=lambda n: 0):
        super().__init__(refs)
        self.stretch, self.tilt = stretch, tilt

    def synthesize_batch(self, texts, max_frames):
        mels = [stretched(tilted(mel, self.tilt(len(ids))), self.stretch(len(ids)))
                for ids, (mel, _) in zip(texts, super().synthesize_batch(texts, max_frames))]
        return [Synthesis(mel, diagonal(len(ids), mel.shape[1]), forced_at(mel.shape[1]))
                for ids, mel in zip(texts, mels)]


def sentences(mel, lengths):
    """References of `lengths` characters each (plus end-of-text), all with the reference `mel`."""
    return [quality.Reference(f"S{n}", np.r_[np.arange(n) % 30 + 2, 1].astype(np.int32), mel) for n in lengths]


def test_a_good_mcd_with_the_wrong_duration_is_not_aligned(mel):
    refs = sentences(mel, [20, 40])
    long, short = quality.evaluate(Stretching(refs, {21: 1.5, 41: 0.85}.get), refs, TINY)["rows"]
    assert long["duration_ratio"] == pytest.approx(1.5, abs=0.01) and short["duration_ratio"] == pytest.approx(0.85, abs=0.01)
    assert long["mcd"] < 1 and long["monotonic"] and long["reaches_end"] and not long["aligned"]
    assert short["mcd"] < 1 and short["aligned"]


def test_bands_count_the_characters_read_without_end_of_text(mel):
    assert [quality.band(n) for n in (1, 60, 61, 100, 101, 140, 141, 187, 200)] == [
        "1-60", "1-60", "61-100", "61-100", "101-140", "101-140", "141-187", "141-187", "141-187"]
    refs = sentences(mel, [60, 61, 187, 200])
    assert [len(r.ids) for r in refs] == [61, 62, 188, 201]
    rows = quality.evaluate(Perfect(refs), refs, TINY)["rows"]
    assert [r["band"] for r in rows] == ["1-60", "61-100", "141-187", "141-187"]


def test_each_band_has_the_figures_of_its_sentences_evaluated_alone(mel):
    """The band figures are those of evaluating the band's sentences on their own; an empty band
    gives its count only."""
    refs = sentences(mel, [20, 60, 61, 75, 100, 150, 187, 200])  # none in 101-140
    frame = mel.mean(axis=1)
    backend = Stretching(refs, stretch=lambda n: 0.7 + 0.005 * n, tilt=lambda n: 0.001 * n)
    result = quality.evaluate(backend, refs, TINY, mean_spectrum=frame)
    assert list(result["bands"]) == list(quality.BAND_NAMES) and result["bands"]["101-140"] == {"n": 0}
    assert 0 < result["aligned_rate"] < 1 and result["mcd_gain"] > 0  # the rows differ: the test can tell bands apart
    per_sentence = ("n_coeffs", "bands", "seconds", "rows")
    for name, lengths in (("1-60", [20, 60]), ("61-100", [61, 75, 100]), ("141-187", [150, 187, 200])):
        alone = quality.evaluate(backend, sentences(mel, lengths), TINY, mean_spectrum=frame)
        assert result["bands"][name] == {k: v for k, v in alone.items() if k not in per_sentence}, name
        assert result["bands"][name]["mcd_gain"] == pytest.approx(alone["mcd_mean_spectrum_mean"] - alone["mcd_mean"])
    assert result["bands"]["141-187"]["aligned_rate"] != result["bands"]["61-100"]["aligned_rate"]
    table = quality.bands_table({"trained": result})
    assert "| trained | 101-140 | 0 | — |" in table and len(table.splitlines()) == 2 + len(quality.BANDS)
