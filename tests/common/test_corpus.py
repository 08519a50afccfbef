"""The espeak-ng corpus builder, its sentence sources (embedded, generated) and held-out split."""
import importlib.resources
import re
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from common.data import corpus, dataset as data, espeak, grammar
from common.contract.spec import get_spec
from common.data.text import normalize, text_to_ids


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
    assert rows[0].startswith("ES001-T0001|") and all(r.split("|")[2] == normalize(r.split("|")[1]) for r in rows)
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
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-1] == str(tmp_path / "cli") and printed[0].startswith("training: 2 sentences")
    assert len(data.read_ljspeech(tmp_path / "cli")) == 2


def test_asking_for_more_sentences_than_fit_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="n=1000"):
        corpus.build_corpus(tmp_path / "x", 1000, progress=False, source="embedded")
    with pytest.raises(ValueError, match="max_chars=20"):
        corpus.build_corpus(tmp_path / "x", 10, max_chars=20, progress=False, source="generated")


def test_a_sentence_sounds_the_same_whatever_was_spoken_before():
    """espeak-ng keeps pitch and noise state between sentences unless reloaded (common.data.espeak)."""
    first, sr = espeak.speak("The quick brown fox.")
    espeak.speak("Something else entirely, spoken in between.")
    again, _ = espeak.speak("The quick brown fox.")
    assert sr == 22050 and first.dtype == np.int16 and len(first) > sr // 2
    np.testing.assert_array_equal(first, again)


def test_a_missing_espeak_wheel_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)  # import then fails
    with pytest.raises(espeak.EspeakError, match="espeakng-loader"):
        espeak.speak("hello")


# --- held-out split -------------------------------------------------------------------


def rows(path):
    return [line.split("|") for line in path.read_text(encoding="utf-8").splitlines()]


def test_the_tiny_corpus_has_a_disjoint_held_out_sentence(tiny_corpus_dir):
    held = corpus.read_heldout(tiny_corpus_dir)
    train = data.read_ljspeech(tiny_corpus_dir)
    assert [e.id for e in held] == ["ES001-H0001"] and held[0].wav.is_file()
    assert not {e.text for e in held} & {e.text for e in train}


def test_the_embedded_training_set_is_the_one_chosen_before_held_out_sets():
    """build_corpus(n=16, seed=0, max_chars=40), tests/conftest.py's corpus, speaks what it always did."""
    pool = corpus.sentences(40)
    before = [pool[i] for i in np.sort(np.random.default_rng(0).choice(len(pool), 16, replace=False))]
    source, train, held = corpus.choose(16, seed=0, max_chars=40)
    assert source == "embedded" and [s.text for s in train] == before and len(held) == 1


@pytest.mark.parametrize("source", ["embedded", "generated", "prose"])
def test_held_out_split_is_disjoint_and_deterministic_by_seed(source):
    a = corpus.choose(30, seed=4, max_chars=60, heldout=10, source=source)
    b = corpus.choose(30, seed=4, max_chars=60, heldout=10, source=source)
    c = corpus.choose(30, seed=5, max_chars=60, heldout=10, source=source)
    assert a == b and a[1:] != c[1:] and a[0] == source
    train, held = {s.normalized for s in a[1]}, {s.normalized for s in a[2]}
    assert len(train) == 30 and len(held) == 10 and not train & held


def test_generated_held_out_set_does_not_depend_on_n():
    _, small_train, small_held = corpus.choose(20, seed=2, heldout=5, source="generated")
    _, big_train, big_held = corpus.choose(200, seed=2, heldout=5, source="generated")
    assert small_held == big_held and big_train[:20] == small_train


def test_auto_source_is_embedded_while_it_suffices():
    assert corpus.choose(16, max_chars=40)[0] == "embedded"
    assert corpus.choose(368, heldout=0)[0] == "embedded"
    assert corpus.choose(368, heldout=1)[0] == "prose"
    assert [corpus.default_heldout(n) for n in (1, 16, 100, 3000)] == [1, 1, 5, 50]
    assert [corpus.default_heldout(n, bands=4) for n in (1, 100, 1000, 3000)] == [4, 4, 48, 120]


def test_prose_held_out_set_fills_every_length_band_and_is_disjoint():
    source, train, held = corpus.choose(400, seed=3)
    assert source == "prose" and len(held) == corpus.default_heldout(400, 4) == 20
    for lo, hi in data.LENGTH_BANDS:
        assert sum(lo <= len(s.normalized) <= hi for s in held) == 5
    assert not {s.normalized for s in train} & {s.normalized for s in held}
    _, big_train, big_held = corpus.choose(800, seed=3, heldout=20)
    assert big_held == held and big_train[:400] == train  # the held-out set does not depend on n
    _, _, short_held = corpus.choose(50, seed=3, max_chars=61, heldout=5)
    assert len(short_held) == 5 and all(len(s.normalized) <= 60 for s in short_held)


def test_describe_measures_what_makes_a_corpus_like_prose():
    _, train, held = corpus.choose(300, seed=0, source="prose")
    _, toy_train, toy_held = corpus.choose(300, seed=0, source="generated")
    prose_share, toy_share = (float(re.search(r"(\d+)% of the words are among", corpus.describe(t, h)).group(1))
                              for t, h in ((train, held), (toy_train, toy_held)))
    assert prose_share >= 40 and toy_share < 35  # ordinary prose: about half
    report = corpus.describe(train, held)
    assert "never occur in training" in report and "LJSpeech" in report


def test_build_writes_both_sets_with_their_wavs(tmp_path):
    out = corpus.build_corpus(tmp_path / "g", 3, seed=1, max_chars=60, heldout=2, source="generated", progress=False)
    train, held = rows(out / "metadata.csv"), rows(out / "heldout.csv")
    assert [r[0] for r in train] == ["ES002-T0001", "ES002-T0002", "ES002-T0003"]
    assert [r[0] for r in held] == ["ES002-H0001", "ES002-H0002"]
    assert [e.text for e in corpus.read_heldout(out)] == [r[2] for r in held]
    assert all(sf.info(str(out / "wavs" / f"{r[0]}.wav")).frames > 0 for r in train + held)


def test_cli_source_and_heldout_options(tmp_path, capsys):
    corpus.main(["--out", str(tmp_path / "cli"), "--n", "2", "--heldout", "0", "--source", "generated",
                 "--max-chars", "50"])
    assert len(data.read_ljspeech(tmp_path / "cli")) == 2 and corpus.read_heldout(tmp_path / "cli") == []
    assert rows(tmp_path / "cli" / "metadata.csv")[0][0] == "ES002-T0001"


def test_reading_a_missing_or_broken_held_out_set_says_which_file(tmp_path, tiny_corpus_dir):
    with pytest.raises(data.DataError, match="heldout.csv is missing"):
        corpus.read_heldout(tmp_path)
    (tmp_path / "wavs").mkdir()
    (tmp_path / "heldout.csv").write_text("ES001-H0001|text|text\n", encoding="utf-8")
    with pytest.raises(data.DataError, match=re.escape(str(tmp_path / "wavs" / "ES001-H0001.wav"))):
        corpus.read_heldout(tmp_path)


# --- generated sentences ----------------------------------------------------------------


def test_generated_sentences_are_distinct_readable_and_deterministic_by_seed():
    a, b, c = grammar.generate(500, seed=1), grammar.generate(500, seed=1), grammar.generate(500, seed=2)
    assert a == b and not {s.normalized for s in a} & {s.normalized for s in c}
    assert len({s.normalized for s in a}) == 500
    paper = get_spec("paper", max_chars=400)
    for s in a:
        text_to_ids(s.text, paper)  # raises on any character outside the vocabulary
        assert s.normalized == normalize(s.text) and normalize(s.spoken) == s.normalized  # audio says what is read
        assert (s.text[0].isupper() or s.text[0].isdigit()) and s.text[-1] in ".?"
        assert not any(ch.isdigit() for ch in s.spoken)
    assert 50 <= sum(s.text.endswith("?") for s in a) <= 200  # questions
    assert 40 <= sum(any(ch.isdigit() for ch in s.text) for s in a) <= 200  # numbers for the normalizer


def test_generated_sentence_lengths_spread_like_ljspeech():
    lengths = np.array([len(s.normalized) for s in grammar.generate(2000, seed=0)])
    share = np.histogram(np.clip(lengths, 0, 199), bins=np.arange(0, 201, 20))[0] / len(lengths)
    lj = data.LJ_CHAR_BINS / data.LJ_CHAR_BINS.sum()
    assert np.abs(share - lj).sum() < 0.4, (share.round(3), lj.round(3))  # total variation under 0.2
    assert 85 <= np.median(lengths) <= 120 and lengths.min() >= 12


def test_max_chars_filters_generated_sentences():
    short = grammar.generate(300, seed=0, max_chars=40)
    assert len(short) == 300 and all(len(s.normalized) + 1 <= 40 for s in short)
    assert np.median([len(s.normalized) for s in short]) > 25  # still spread, not all at the floor


def test_generated_sentences_use_no_profanity():
    listed = (importlib.resources.files("wonderwords") / "assets" / "profanitylist.txt").read_text().splitlines()
    banned = {w.strip() for w in listed if " " not in w.strip()}  # single words: what the grammar draws
    words = {w for s in grammar.generate(1000, seed=3) for w in re.findall(r"[a-z']+", s.normalized)}
    assert words and not words & banned
    assert not banned & set().union(*grammar.words().values())


def test_three_thousand_sentences_are_generated_quickly():
    grammar.words()  # the word lists, read once per process
    start = time.perf_counter()
    assert len(grammar.generate(3000, seed=11)) == 3000
    assert time.perf_counter() - start < 15  # about 2 s here; espeak-ng then takes ~10 ms a sentence
