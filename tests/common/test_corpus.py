"""The espeak-ng corpus builder and its embedded sentences."""
import sys

import numpy as np
import pytest
import soundfile as sf

from common import corpus, data, espeak
from common.spec import get_spec
from common.text import normalize, text_to_ids


def test_sentences_are_many_varied_and_readable_without_dropping():
    lines = corpus.sentences()
    assert len(lines) >= 300 and len(set(lines)) == len(lines)
    lengths = np.array([len(normalize(s)) for s in lines])
    assert lengths.min() >= 12 and 150 <= lengths.max() <= 175
    assert (lengths < 40).sum() >= 40  # material for the tiny preset
    paper = get_spec("paper")
    for s in lines:
        text_to_ids(s, paper)  # raises on any character outside the vocabulary


def test_max_chars_filters_sentences():
    short = corpus.sentences(max_chars=30)
    assert short and all(len(normalize(s)) + 1 <= 30 for s in short)


def test_tiny_corpus_has_ljspeech_layout(tiny_corpus_dir):
    rows = (tiny_corpus_dir / "metadata.csv").read_text().splitlines()
    assert len(rows) == 16 and all(len(r.split("|")) == 3 for r in rows)
    entries = data.read_ljspeech(tiny_corpus_dir)
    assert all(len(normalize(e.text)) + 1 <= 40 for e in entries)
    info = sf.info(str(entries[0].wav))
    assert (info.samplerate, info.channels, info.subtype) == (22050, 1, "PCM_16") and info.frames > 0


def test_build_is_deterministic_by_seed(tmp_path):
    a = corpus.build_corpus(tmp_path / "a", 3, seed=1, progress=False)
    b = corpus.build_corpus(tmp_path / "b", 3, seed=1, progress=False)
    c = corpus.build_corpus(tmp_path / "c", 3, seed=2, progress=False)
    assert (a / "metadata.csv").read_text() == (b / "metadata.csv").read_text() != (c / "metadata.csv").read_text()
    for wav in (a / "wavs").iterdir():
        assert wav.read_bytes() == (b / "wavs" / wav.name).read_bytes()


def test_cli_builds_a_corpus(tmp_path, capsys):
    corpus.main(["--out", str(tmp_path / "cli"), "--n", "2", "--max-chars", "30"])
    assert capsys.readouterr().out.strip() == str(tmp_path / "cli")
    assert len(data.read_ljspeech(tmp_path / "cli")) == 2


def test_asking_for_more_sentences_than_fit_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="n=1000"):
        corpus.build_corpus(tmp_path / "x", 1000, progress=False)


def test_a_sentence_sounds_the_same_whatever_was_spoken_before():
    """espeak-ng keeps pitch and noise state between sentences unless reloaded (common.espeak)."""
    first, sr = espeak.speak("The quick brown fox.")
    espeak.speak("Something else entirely, spoken in between.")
    again, _ = espeak.speak("The quick brown fox.")
    assert sr == 22050 and first.dtype == np.int16 and len(first) > sr // 2
    np.testing.assert_array_equal(first, again)


def test_a_missing_espeak_wheel_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)  # import then fails
    with pytest.raises(espeak.EspeakError, match="espeakng-loader"):
        espeak.speak("hello")
