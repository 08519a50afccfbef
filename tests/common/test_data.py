"""LJSpeech reading, the feature cache, split, length-bucketed batches, synthetic batches."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from common.data import audio, dataset as data
from common.data.dataset import DataError
from common.contract.spec import EOS, get_spec

TINY = get_spec("tiny")


def write_corpus(root, rows, seconds=None, sr=TINY.sr):
    """An LJSpeech-format corpus of tones: metadata lines `rows`, wav i lasts seconds[i]."""
    (root / "wavs").mkdir(parents=True)
    (root / "metadata.csv").write_text("".join(r + "\n" for r in rows), encoding="utf-8")
    for i, row in enumerate(rows):
        n = int((seconds[i] if seconds else 0.5) * sr)
        wav = 0.1 * np.sin(2 * np.pi * (200 + 50 * i) * np.arange(n) / sr)
        sf.write(str(root / "wavs" / f"{row.split('|')[0]}.wav"), wav.astype(np.float32), sr)
    return root


@pytest.fixture
def tone_corpus(tmp_path):
    seconds = [0.3, 1.2, 0.6, 0.9, 0.4, 1.5]
    rows = [f"T{i}|Raw text {i}|tone number {'i' * (i + 1)}" for i in range(len(seconds))]
    return write_corpus(tmp_path / "tones", rows, seconds)


class CountingFeatures:
    """Stands in for audio.features, counting calls; `fail_at` makes call n raise."""

    def __init__(self, fail_at=None):
        self.calls, self.fail_at, self.real = 0, fail_at, audio.features

    def __call__(self, wav, spec):
        self.calls += 1
        if self.calls == self.fail_at:
            raise KeyboardInterrupt("simulated interruption")
        return self.real(wav, spec)


# --- read_ljspeech ---------------------------------------------------------------

def test_read_ljspeech_uses_the_normalized_column_and_keeps_quotes_literal(tmp_path):
    root = write_corpus(tmp_path / "c", ['A1|Dr. "Who"|doctor "who"', "A2|Only raw text", "A3|raw|"])
    entries = data.read_ljspeech(root)
    assert [(e.id, e.text) for e in entries] == [("A1", 'doctor "who"'), ("A2", "Only raw text"), ("A3", "raw")]
    assert entries[0].wav == root / "wavs" / "A1.wav"


def test_read_ljspeech_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        data.read_ljspeech(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="metadata.csv is missing"):
        data.read_ljspeech(tmp_path / "empty")
    bad = write_corpus(tmp_path / "bad", ["B1|fine|fine"])
    (bad / "metadata.csv").write_text("B1|fine|fine\nB2 has no pipes\n")
    with pytest.raises(DataError, match="line 2"):
        data.read_ljspeech(bad)
    (bad / "metadata.csv").write_text("B1|fine|fine\nB1|again|again\n")
    with pytest.raises(DataError, match="duplicate id 'B1'"):
        data.read_ljspeech(bad)
    (bad / "metadata.csv").write_text("B1|fine|fine\nB9|no wav|no wav\n")
    with pytest.raises(DataError, match="B9.wav"):
        data.read_ljspeech(bad)


# --- load_corpus and its cache -----------------------------------------------------

def test_load_corpus_items_and_features(tone_corpus, tmp_path):
    corpus = data.load_corpus(tone_corpus, TINY, cache_dir=tmp_path / "cache", progress=False)
    assert len(corpus) == 6
    for i, item in enumerate(corpus.items):
        assert item.ids[-1] == EOS and item.text == f"tone number {'i' * (i + 1)}"
        mel, mag = corpus.features(i)
        assert mel.shape == (TINY.n_mels, item.n_frames) and mag.shape == (TINY.n_mags, item.n_frames)
        assert mel.dtype == mag.dtype == np.float32


def test_default_cache_lives_in_the_corpus_and_is_keyed_by_audio_fields(tone_corpus):
    corpus = data.load_corpus(tone_corpus, TINY, progress=False)
    assert corpus.cache == tone_corpus / ".dctts-cache" / data.audio_key(TINY)
    index = json.loads((corpus.cache / "index.json").read_text())
    assert {k: v["frames"] for k, v in index["utterances"].items()} == {u.id: u.n_frames for u in corpus.items}
    wav = (tone_corpus / "wavs" / "T0.wav").stat()
    assert index["utterances"]["T0"]["size"] == wav.st_size and index["utterances"]["T0"]["mtime_ns"] == wav.st_mtime_ns


def test_cache_is_reused_and_invalidated_only_by_audio_fields(tone_corpus, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = data.load_corpus(tone_corpus, TINY, cache_dir=cache, progress=False)
    counter = CountingFeatures()
    monkeypatch.setattr(audio, "features", counter)
    again = data.load_corpus(tone_corpus, TINY, cache_dir=cache, progress=False)
    model_change = data.load_corpus(tone_corpus, TINY.replace(d=32, dropout=0.0), cache_dir=cache, progress=False)
    assert counter.calls == 0
    assert [u.n_frames for u in again.items] == [u.n_frames for u in model_change.items] == \
        [u.n_frames for u in first.items]
    np.testing.assert_array_equal(again.features(3)[1], first.features(3)[1])
    data.load_corpus(tone_corpus, TINY.replace(top_db=40.0), cache_dir=cache, progress=False)
    assert counter.calls == 6


def test_an_interrupted_run_leaves_no_partial_files_and_resumes(tone_corpus, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setattr(audio, "features", CountingFeatures(fail_at=4))
    with pytest.raises(KeyboardInterrupt):
        data.load_corpus(tone_corpus, TINY, cache_dir=cache, progress=False)
    key_dir = cache / data.audio_key(TINY)
    assert len(list(key_dir.glob("*.npy"))) == 6 and not list(key_dir.glob("*.tmp"))
    resumed = CountingFeatures()
    monkeypatch.setattr(audio, "features", resumed)
    corpus = data.load_corpus(tone_corpus, TINY, cache_dir=cache, progress=False)
    assert resumed.calls == 3 and len(corpus) == 6
    assert all(corpus.features(i)[0].shape[1] == u.n_frames for i, u in enumerate(corpus.items))


def test_too_long_text_and_audio_are_skipped_with_one_warning(tmp_path):
    limit_s = TINY.max_frames * TINY.r * TINY.hop / TINY.sr  # ~4.1 s at tiny
    rows = ["S1|short|short", f"S2|{'a' * TINY.max_chars}|", "S3|long audio|long audio", "S4|fine|fine"]
    root = write_corpus(tmp_path / "c", rows, [0.5, 0.5, limit_s + 0.5, 0.5])
    with pytest.warns(UserWarning, match="skipped 2 of 4 utterances: 1 with text .* 1 with audio") as record:
        corpus = data.load_corpus(root, TINY, cache_dir=tmp_path / "cache", progress=False)
    assert len(record) == 1
    assert [u.id for u in corpus.items] == ["S1", "S4"]


def test_unknown_characters_are_dropped_when_loading(tmp_path):
    root = write_corpus(tmp_path / "c", ["U1|Room 101|room one oh one ~^"])
    with pytest.warns(UserWarning, match=r"dropped 2 unknown characters \('~' 1, '\^' 1\) from 1 utterances"):
        corpus = data.load_corpus(root, TINY, cache_dir=tmp_path / "cache", progress=False)
    assert len(corpus.items[0].ids) == len("room one oh one") + 1


def test_espeak_corpus_loads(tiny_corpus_dir, tmp_path):
    corpus = data.load_corpus(tiny_corpus_dir, TINY, cache_dir=tmp_path / "cache", progress=False)
    assert len(corpus) == 16
    assert all(20 < u.n_frames <= TINY.max_frames * TINY.r for u in corpus.items)


# --- split and batches -------------------------------------------------------------

def test_split_is_a_deterministic_partition():
    train, test = data.split(100, seed=3)
    assert len(test) == 5 and sorted(np.concatenate([train, test]).tolist()) == list(range(100))
    again = data.split(100, seed=3)
    assert np.array_equal(train, again[0]) and np.array_equal(test, again[1])
    assert not np.array_equal(test, data.split(100, seed=4)[1])


@pytest.mark.parametrize("n, sizes", [(2, (1, 1)), (10, (9, 1)), (1, (1, 0)), (0, (0, 0))])
def test_split_keeps_one_of_each_when_it_can(n, sizes):
    train, test = data.split(n, seed=0)
    assert (len(train), len(test)) == sizes


def test_split_rejects_bad_fractions():
    with pytest.raises(ValueError):
        data.split(10, seed=0, test_fraction=1.0)


def test_bucket_covers_each_index_once_and_groups_similar_lengths():
    rng = np.random.default_rng(0)
    lengths = rng.integers(10, 1000, 500)
    indices = np.arange(0, 500, 2)  # a subset
    groups = data.bucket(lengths, indices, 5, np.random.default_rng(1))
    assert sorted(i for g in groups for i in g) == indices.tolist()
    assert all(len(g) == 5 for g in groups)  # 250 = 50 batches of 5
    spread = np.mean([np.ptp(lengths[g]) for g in groups])
    assert spread < 0.1 * np.ptp(lengths)  # bucketed: much tighter than random batches
    again = data.bucket(lengths, indices, 5, np.random.default_rng(1))
    assert [list(g) for g in groups] == [list(g) for g in again]
    assert [list(g) for g in groups] != [list(g) for g in data.bucket(lengths, indices, 5, np.random.default_rng(2))]


def test_batches_pad_and_reduce(tone_corpus, tmp_path):
    corpus = data.load_corpus(tone_corpus, TINY, cache_dir=tmp_path / "cache", progress=False)
    r = TINY.r
    seen = []
    for batch in data.batches(corpus, range(len(corpus)), 4, np.random.default_rng(0)):
        b, f, t = batch.mel.shape
        assert batch.mag.shape == (b, TINY.n_mags, r * t) and f == TINY.n_mels
        for k in range(b):
            i = next(j for j, u in enumerate(corpus.items) if np.array_equal(u.ids, batch.text[k, :len(u.ids)])
                     and len(u.ids) == batch.text_lengths[k])
            seen.append(i)
            mel, mag = corpus.features(i)
            n = mel.shape[1]
            assert batch.frame_lengths[k] == -(-n // r)
            np.testing.assert_array_equal(batch.mel[k, :, :batch.frame_lengths[k]], mel[:, ::r])
            np.testing.assert_array_equal(batch.mag[k, :, :n], mag)
            assert not batch.mag[k, :, n:].any() and not batch.mel[k, :, batch.frame_lengths[k]:].any()
            assert not batch.guide[k, batch.text_lengths[k]:].any()
            assert not batch.guide[k, :, batch.frame_lengths[k]:].any()
    assert sorted(seen) == list(range(len(corpus)))


def test_cache_files_honour_the_umask(tone_corpus, tmp_path):
    old = os.umask(0o027)
    try:
        corpus = data.load_corpus(tone_corpus, TINY, cache_dir=tmp_path / "cache", progress=False)
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in corpus.cache.iterdir()}
    assert modes and set(modes.values()) == {0o640}, modes


def test_stale_temporary_files_in_the_cache_are_removed(tone_corpus, tmp_path, monkeypatch):
    """kill -9 during a feature write leaves a temporary file; a later run removes it once it
    is old enough not to be another run's write in progress."""
    class Killed(BaseException):
        pass

    def die(*args):
        raise Killed

    with monkeypatch.context() as m:
        m.setattr(os, "replace", die)
        m.setattr(os, "unlink", lambda p: None)
        with pytest.raises(Killed):
            data.load_corpus(tone_corpus, TINY, cache_dir=tmp_path / "cache", progress=False)
    key_dir = tmp_path / "cache" / data.audio_key(TINY)
    left = list(key_dir.glob(".tmp-*"))  # a feature file's (and the index's, written on the way out)
    data.load_corpus(tone_corpus, TINY, cache_dir=tmp_path / "cache", progress=False)
    assert left and all(p.exists() for p in left)  # young: maybe a concurrent run's
    for p in left:
        os.utime(p, (0, 0))
    with pytest.warns(UserWarning, match=f"removed {len(left)} temporary file"):
        data.load_corpus(tone_corpus, TINY, cache_dir=tmp_path / "cache", progress=False)
    assert not any(p.exists() for p in left)


def read_only(monkeypatch, root):
    """Make `root` look read-only to the writability check (chmod cannot: tests may run as root)."""
    real = data.unwritable
    monkeypatch.setattr(data, "unwritable", lambda p: "permission denied" if root in Path(p).parents
                        else real(p))


def test_a_read_only_corpus_caches_in_the_users_cache(tone_corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home-cache"))
    read_only(monkeypatch, tone_corpus)
    with pytest.warns(UserWarning, match=f"{tone_corpus} is not writable .*: feature cache in "
                                         f"{tmp_path / 'home-cache' / 'dctts-bench'}/tones-[0-9a-f]{{12}}"):
        corpus = data.load_corpus(tone_corpus, TINY, progress=False)
    assert corpus.cache.parent == data.corpus_cache(tone_corpus, tmp_path / "home-cache" / "dctts-bench")
    assert (corpus.cache / "index.json").is_file() and not (tone_corpus / ".dctts-cache").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere: chmod cannot make the corpus read-only")
def test_a_chmod_read_only_corpus_is_read_where_it_is(tone_corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home-cache"))
    tone_corpus.chmod(0o555)
    try:
        with pytest.warns(UserWarning, match="is not writable"):
            assert len(data.load_corpus(tone_corpus, TINY, progress=False)) == 6
    finally:
        tone_corpus.chmod(0o755)


def test_corpus_caches_under_a_base_are_kept_apart(tone_corpus, tmp_path):
    base = tmp_path / "caches"
    other = write_corpus(tmp_path / "elsewhere" / "tones", ["T0|other|other"])
    assert data.corpus_cache(tone_corpus, base).parent == base
    assert data.corpus_cache(tone_corpus, base) != data.corpus_cache(other, base)  # same name, other path
    assert data.corpus_cache(tone_corpus, base) == data.corpus_cache(tone_corpus / "wavs" / "..", base)
    assert data.corpus_cache(tone_corpus) == tone_corpus / ".dctts-cache"  # writable: in the corpus


def tone(seconds, freq, sr=TINY.sr):
    return (0.1 * np.sin(2 * np.pi * freq * np.arange(int(seconds * sr)) / sr)).astype(np.float32)


def test_a_replaced_wav_is_featurized_again(tone_corpus, tmp_path, monkeypatch):
    """The cache is keyed by each wav's size and mtime: a replaced file is never trained on stale features."""
    cache = tmp_path / "cache"
    before = data.load_corpus(tone_corpus, TINY, cache_dir=cache, progress=False)
    old_mel, other_mel = before.features(2)[0], before.features(3)[0]  # (read lazily: keep them now)
    wav = tone_corpus / "wavs" / "T2.wav"
    stat = wav.stat()
    sf.write(str(wav), tone(0.6, 1000), TINY.sr)  # the same length: the same size, another sound
    os.utime(wav, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    counter = CountingFeatures()
    monkeypatch.setattr(audio, "features", counter)
    after = data.load_corpus(tone_corpus, TINY, cache_dir=cache, progress=False)
    assert counter.calls == 1 and wav.stat().st_size == stat.st_size
    assert not np.array_equal(after.features(2)[0], old_mel)
    np.testing.assert_array_equal(after.features(3)[0], other_mel)
    sf.write(str(wav), tone(1.0, 1000), TINY.sr)  # another size, the same mtime
    os.utime(wav, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert data.load_corpus(tone_corpus, TINY, cache_dir=cache, progress=False).items[2].n_frames > \
        after.items[2].n_frames and counter.calls == 2


def test_unusable_utterances_are_skipped_and_counted_in_one_warning(tmp_path):
    limit_s = TINY.max_frames * TINY.r * TINY.hop / TINY.sr  # ~4.1 s at tiny
    rows = ["OK1|fine|fine", "E1|~^ ~|", f"L1|{'a' * TINY.max_chars}|", "L2|long audio|long audio",
            "Z1|silence|silence", "B1|broken|broken", "OK2|fine ~ too^|", "OK3|fine ~|"]
    root = write_corpus(tmp_path / "c", rows, [0.5, 0.5, 0.5, limit_s + 0.5, 0.5, 0.5, 0.5, 0.5])
    sf.write(str(root / "wavs" / "Z1.wav"), np.zeros(4000, np.float32), TINY.sr)
    (root / "wavs" / "B1.wav").write_bytes(b"RIFF, but not really")
    with pytest.warns(UserWarning) as record:
        corpus = data.load_corpus(root, TINY, cache_dir=tmp_path / "cache", progress=False)
    assert [u.id for u in corpus.items] == ["OK1", "OK2", "OK3"]
    (message,) = [str(w.message) for w in record]
    assert message.startswith(f"{root}: skipped 5 of 8 utterances: 1 with text empty after normalization (E1), "
                              f"1 with text over max_chars={TINY.max_chars} (L1), 1 with audio over "
                              f"max_frames*r={TINY.max_frames * TINY.r} frames (L2), 1 with silent audio (Z1), "
                              f"1 with an unreadable wav (B1: cannot read audio file")
    assert message.endswith("; dropped 3 unknown characters ('~' 2, '^' 1) from 2 utterances") and "\n" not in message


def test_a_corpus_with_nothing_usable_fails_naming_why(tmp_path):
    root = write_corpus(tmp_path / "c", ["E1|~|", "Z1|silence|silence"])
    sf.write(str(root / "wavs" / "Z1.wav"), np.zeros(4000, np.float32), TINY.sr)
    with pytest.raises(DataError, match=r"no usable utterance among 2: 1 with text empty after normalization "
                                        r"\(E1\), 1 with silent audio \(Z1\)"):
        data.load_corpus(root, TINY, cache_dir=tmp_path / "cache", progress=False)


def test_an_empty_metadata_file_says_so(tmp_path):
    root = write_corpus(tmp_path / "c", [])
    with pytest.raises(DataError, match="metadata.csv is empty"):
        data.load_corpus(root, TINY, cache_dir=tmp_path / "cache", progress=False)
