"""The time-to-quality task (bench/converge.py): a smoke run at `tiny`, and its summary rules."""
import json

import numpy as np

from bench import converge, run
from common import quality


def test_converge_smoke_run_writes_curves_table_and_plot(tiny_corpus_dir, tmp_path):
    out = tmp_path / "conv"
    status = run.main(["--task", "converge", "--framework", "torch", "--preset", "tiny", "--data", str(tiny_corpus_dir),
                       "--max-steps", "4", "--eval-every", "2", "--sentences", "1", "--minutes", "0",
                       "--threads", "1", "--out", str(out)])
    assert status == 0
    result = json.loads((out / "converge.json").read_text())
    points = result["curves"]["torch"]
    assert [p["step"] for p in points] == [0, 2, 4]  # the untrained network first, then every 2 steps
    assert points[0]["loss"] is None and all(p["loss"] > 0 for p in points[1:])
    assert all(p["mcd_mean"] > 0 and 0 <= p["aligned_rate"] <= 1 for p in points)
    assert points[0]["train_seconds"] < 0.5 and points[1]["train_seconds"] <= points[2]["train_seconds"]
    for p in points:  # each point: the overall figures, and per band those of its sentences alone
        assert list(p["bands"]) == list(quality.BAND_NAMES) and "rows" not in p
        assert sum(b["n"] for b in p["bands"].values()) == p["n"] == 1
        assert [b["mcd_mean"] for b in p["bands"].values() if b["n"]] == [p["mcd_mean"]]
    table = (out / "table.md").read_text()
    assert (out / "curves.png").stat().st_size > 0 and "| torch |" in table
    assert sum(line.startswith("| torch (step 4) |") for line in table.splitlines()) == len(quality.BANDS)
    assert (out / "torch" / "run" / "text2mel-00000004.safetensors").is_file()


def test_converge_over_variants_trains_each_and_tables_their_quality(tiny_corpus_dir, tmp_path):
    out = tmp_path / "variants"
    status = run.main(["--task", "converge", "--framework", "torch", "--preset", "tiny", "--data", str(tiny_corpus_dir),
                       "--max-steps", "2", "--eval-every", "2", "--sentences", "1", "--minutes", "0", "--threads", "1",
                       "--variant", "baseline", "batch-norm", "--out", str(out)])
    assert status == 0
    for variant, preset in (("baseline", "tiny"), ("batch-norm", "tiny+batch-norm")):
        result = json.loads((out / variant / "converge.json").read_text())
        assert result["meta"]["preset"] == preset and [p["step"] for p in result["curves"]["torch"]] == [0, 2]
    assert (out / "batch-norm" / "torch" / "run" / "text2mel-00000002.safetensors").is_file()
    table = (out / "variants-quality.md").read_text()
    assert "| baseline | – | torch | 2 |" in table and "| batch-norm | norm=batch | torch | 2 |" in table


def test_a_resumed_run_continues_the_curve_as_if_uninterrupted(tiny_corpus_dir, tmp_path):
    common = ["--task", "converge", "--framework", "torch", "--preset", "tiny", "--data", str(tiny_corpus_dir),
              "--eval-every", "2", "--sentences", "1", "--minutes", "0", "--threads", "1"]
    whole, part = tmp_path / "whole", tmp_path / "part"
    assert run.main(common + ["--max-steps", "4", "--out", str(whole)]) == 0
    assert run.main(common + ["--max-steps", "2", "--out", str(part)]) == 0
    assert run.main(common + ["--max-steps", "4", "--out", str(part), "--resume"]) == 0
    a, b = (json.loads((d / "converge.json").read_text())["curves"]["torch"] for d in (whole, part))
    assert [p["step"] for p in b] == [0, 2, 4]  # step 0 and 2 kept, not measured again
    for key in ("loss", "mcd_mean", "aligned_rate"):
        assert [p[key] for p in a] == [p[key] for p in b], key
    assert b[1]["train_seconds"] < b[2]["train_seconds"] and b[1]["eval_seconds"] < b[2]["eval_seconds"]
    assert "RESUMED" in (part / "table.md").read_text()


def point(step, seconds, aligned, mcd):
    return {"step": step, "train_seconds": seconds, "aligned_rate": aligned, "mcd_mean": mcd}


def test_time_to_target_is_the_first_point_meeting_both_targets():
    curves = {"a": [point(0, 0, 0, 9), point(100, 50, 0.95, 3), point(200, 100, 0.95, 1.0), point(300, 150, 1, 0.9)],
              "b": [point(0, 0, 0, 9), point(100, 20, 0.5, 1.0), point(200, 40, 0.9, 1.2)],
              "c": [point(0, 0, 0, 9), point(100, 30, 0.2, 5)]}
    rows = converge.summarize(curves, target_aligned=0.9, target_mcd=1.5)
    assert (rows["a"]["target_step"], rows["a"]["target_seconds"]) == (200, 100)
    assert (rows["b"]["target_step"], rows["b"]["target_seconds"]) == (200, 40)
    assert rows["c"]["target_step"] is None and rows["c"]["ratio_to_fastest"] is None
    assert rows["a"]["ratio_to_fastest"] == 2.5 and rows["b"]["ratio_to_fastest"] == 1.0
    assert rows["a"]["final"]["step"] == 300 and rows["a"]["untrained"]["step"] == 0


def test_agreement_is_the_spread_of_mcd_at_the_steps_every_framework_evaluated():
    curves = {"a": [point(0, 0, 0, 9), point(100, 1, 0, 5.0), point(200, 2, 0, 4.0), point(300, 3, 0, 3.0)],
              "b": [point(0, 0, 0, 9), point(100, 1, 0, 5.5), point(200, 2, 0, 4.0)],
              "c": [point(0, 0, 0, 9), point(100, 1, 0, 5.0), point(200, 2, 0, 4.2), point(250, 3, 0, 1.0)]}
    agree = converge.agreement(curves)
    assert agree["steps"] == [100, 200]  # step 0 (the same untrained weights) and steps not all made left out
    assert np.allclose(agree["spread"], [0.1, 0.05]) and (agree["max"], agree["max_step"]) == (agree["spread"][0], 100)
    assert "largest 10.0% at step 100" in converge.markdown({"preset": "x", "header": []}, {}, agree)
    assert converge.agreement({"a": curves["a"]}) is None and converge.agreement({"a": curves["a"][:1], "b": []}) is None


def test_evaluations_spread_their_sentences_over_the_held_out_file():
    """heldout.csv lists the prose source's length bands one after the other: a subset must keep each band."""
    items = list(range(120))  # four bands of 30
    picked = converge.spread(items, 40)
    assert len(picked) == 40 and picked[0] == 0 and picked == sorted(picked)
    assert [sum(30 * b <= i < 30 * (b + 1) for i in picked) for b in range(4)] == [10, 10, 10, 10]
    assert converge.spread(items[:5], 40) == items[:5]


def test_the_default_corpus_follows_the_preset(tmp_path, monkeypatch):
    """speak reads LJSpeech's lengths: prose at every length; demo: the 60-character grammar corpus
    of the committed converge results."""
    from common import corpus

    built = {}
    monkeypatch.setattr(corpus, "build_corpus", lambda path, n, max_chars, source: built.update(
        {path.name: (n, max_chars, source)}))
    converge.default_corpus(tmp_path, "speak")
    converge.default_corpus(tmp_path, "demo")
    assert built == {"converge-corpus-3000-prose": (3000, None, "prose"),
                     "converge-corpus-3000-60": (3000, 60, "generated")}
