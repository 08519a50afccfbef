"""The time-to-quality task (bench/converge.py): a smoke run at `tiny`, and its summary rules."""
import json

import numpy as np
import pytest

from bench import converge, run
from common.evaluation import quality

NEVER = ["--target-aligned", "1.01", "--target-gain", "0"]  # a target no run meets: every run goes to its budget


def test_converge_smoke_run_writes_curves_table_and_plot(tiny_corpus_dir, tmp_path):
    out = tmp_path / "conv"
    status = run.main(["--task", "converge", "--framework", "torch", "--preset", "tiny", "--data", str(tiny_corpus_dir),
                       "--max-steps", "4", "--eval-every", "2", "--sentences", "1", "--minutes", "0",
                       "--threads", "1", "--time-steps", "0", *NEVER, "--out", str(out)])
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
                       "--variant", "baseline", "batch-norm", "--time-steps", "0", *NEVER, "--out", str(out)])
    assert status == 0
    for variant, preset in (("baseline", "tiny"), ("batch-norm", "tiny+batch-norm")):
        result = json.loads((out / variant / "converge.json").read_text())
        assert result["meta"]["preset"] == preset and [p["step"] for p in result["curves"]["torch"]] == [0, 2]
    assert (out / "batch-norm" / "torch" / "run" / "text2mel-00000002.safetensors").is_file()
    table = (out / "variants-quality.md").read_text()
    assert "| baseline | – | torch | 2 |" in table and "| batch-norm | norm=batch | torch | 2 |" in table


def test_a_resumed_run_continues_the_curve_as_if_uninterrupted(tiny_corpus_dir, tmp_path):
    common = ["--task", "converge", "--framework", "torch", "--preset", "tiny", "--data", str(tiny_corpus_dir),
              "--eval-every", "2", "--sentences", "1", "--minutes", "0", "--threads", "1", "--time-steps", "0", *NEVER]
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


def point(step, seconds, aligned, mcd, mean_spectrum=6.0):
    return {"step": step, "train_seconds": seconds, "aligned_rate": aligned, "mcd_mean": mcd,
            "mcd_mean_spectrum_mean": mean_spectrum, "mcd_gain": mean_spectrum - mcd}  # as common.evaluation.quality gives it


TARGET = converge.Target(aligned=0.9, gain_db=4.5, source="a test")  # MCD-DTW <= 1.5 dB where the mean spectrum's is 6


def test_time_to_target_is_the_first_point_meeting_both_targets_when_the_next_meets_them_too():
    curves = {"a": [point(0, 0, 0, 9), point(100, 50, 0.95, 3), point(200, 100, 0.95, 1.0), point(300, 150, 1, 0.9)],
              "b": [point(0, 0, 0, 9), point(100, 20, 0.5, 1.0), point(200, 40, 0.9, 1.2), point(300, 60, 0.9, 1.4)],
              "c": [point(0, 0, 0, 9), point(100, 30, 0.95, 1.0), point(200, 60, 0.2, 5), point(300, 90, 1, 1)],
              "d": [point(0, 0, 0, 9), point(100, 30, 0.2, 5)]}
    rows = converge.summarize(curves, TARGET)
    assert (rows["a"]["target_step"], rows["a"]["target_seconds"]) == (200, 100)
    assert (rows["b"]["target_step"], rows["b"]["target_seconds"]) == (200, 40)
    # c met it at 100 and at 300 but not at 200 between: one evaluation that dips below does not count
    assert rows["c"]["target_step"] is None and rows["d"]["target_step"] is None
    assert rows["a"]["ratio_to_fastest"] == 2.5 and rows["b"]["ratio_to_fastest"] == 1.0
    assert rows["a"]["final"]["step"] == 300 and rows["a"]["untrained"]["step"] == 0


def test_the_target_is_the_gain_over_the_mean_spectrum_measured_with_it():
    assert converge.met(point(1, 0, 0.9, 1.5, mean_spectrum=6.0), TARGET)
    assert not converge.met(point(1, 0, 0.9, 1.5, mean_spectrum=5.9), TARGET)  # same MCD, a better baseline


def test_targets_come_from_the_committed_file_at_least_one_db_below_the_mean_spectrum(tmp_path):
    committed = json.loads(converge.TARGETS.read_text())
    presets = [k for k in committed if not k.startswith("_")]
    assert "speak" in presets and all(committed[k]["gain_db"] >= converge.MIN_GAIN_DB for k in presets)
    target = converge.load_target("speak+residual")  # a variant keeps its preset's target
    assert (target.aligned, target.gain_db) == (committed["speak"]["aligned"], committed["speak"]["gain_db"])
    assert "fixed in bench/targets.json at " in target.source and "targets.json at " in str(target)
    changed = converge.load_target("speak", gain_db=3.0)
    assert changed.gain_db == 3.0 and "changed on the command line" in changed.source
    given = converge.load_target("tiny", aligned=0.5, gain_db=0.2)
    assert (given.aligned, given.gain_db) == (0.5, 0.2) and "not a committed one" in given.source
    with pytest.raises(SystemExit, match="no time-to-quality target for preset tiny"):
        converge.load_target("tiny")
    loose = tmp_path / "targets.json"
    loose.write_text(json.dumps({"demo": {"aligned": 0.9, "gain_db": 0.49}}))
    with pytest.raises(SystemExit, match="0.49 dB below the mean spectrum; at least 1.0"):
        converge.load_target("demo", path=loose)


def runs(*steps):
    return [point(0, 0, 0, 9)] + [point(s, 0, 1, 1) for s in steps]


def test_over_seeds_gives_mean_and_range_and_drops_the_extremes_of_five():
    # each curve reaches the target at its second-to-last point (met there and at the last)
    curves = {seed: {"a": runs(*steps), "b": runs(100, 200)} for seed, steps in
              enumerate([(100, 200), (300, 400), (500, 600), (700, 800), (2100, 2200)])}
    curves[5] = {"a": [point(0, 0, 0, 9), point(100, 1, 0.1, 6)], "b": runs(100, 200)}  # a does not reach it
    rows = converge.over_seeds(curves, TARGET, timing={"a": {"median": 0.6}, "b": {"median": 0.3}})
    a = rows["a"]
    assert [r["steps"] for r in a["runs"]] == [100, 300, 500, 700, 2100, None] and a["reached"] == 5
    assert a["trimmed"] and a["steps"] == {"mean": 500, "min": 100, "max": 2100}  # mean of 300, 500, 700
    assert a["minutes"]["max"] == 2100 * 0.6 / 60 and a["runs"][5]["last_step"] == 100
    assert rows["b"]["steps"]["mean"] == 100 and rows["b"]["minutes"]["mean"] == 100 * 0.3 / 60
    table = converge.seeds_markdown({"preset": "x", "header": []}, rows, 0.5, None, None)
    assert "| a | 5 of 6 | 500 [100–2,100] | 5.0 [1.0–21.0] | 0.600 |" in table and "seed 5: — (100)" in table
    assert "do not differ beyond the spread of the seeds" in table and "without the fastest and the slowest" in table


def test_the_permutation_test_tells_separated_frameworks_from_the_seed_spread():
    def rows(**steps):
        return {fw: {"runs": [{"steps": s} for s in v]} for fw, v in steps.items()}

    apart = converge.differ_beyond_seeds(rows(a=[100, 200, 300, 400], b=[900, 1000, 1100, 1200],
                                              c=[1500, 1600, 1700, None]))
    mixed = converge.differ_beyond_seeds(rows(a=[100, 500, 900, 1300], b=[200, 600, 1000, 1400],
                                              c=[300, 700, 1100, None]))
    assert apart < 0.01 and mixed > 0.5
    assert converge.differ_beyond_seeds(rows(a=[100, 200], b=[100, 200])) > 0.5
    assert converge.differ_beyond_seeds(rows(a=[100], b=[100])) == 1.0
    assert converge.differ_beyond_seeds(rows(a=[100, 200])) is None


def test_launch_runs_at_most_the_jobs_asked_at_once_each_on_its_own_core(tmp_path):
    import os
    import sys

    script = ("import os, sys, time; t = time.time(); time.sleep(0.5); "
              "open(sys.argv[1], 'w').write(f'{t} {time.time()} {sorted(os.sched_getaffinity(0))}')")
    jobs = [(f"job{i}", [sys.executable, "-c", script, str(tmp_path / f"{i}.txt")]) for i in range(4)]
    assert converge.launch(jobs, at_once=2, threads=1, env=dict(os.environ)) == 0
    spans = [(tmp_path / f"{i}.txt").read_text().split(" ", 2) for i in range(4)]
    for t in [float(start) + 0.01 for start, _, _ in spans]:
        assert sum(float(s) <= t <= float(e) for s, e, _ in spans) <= 2
    if len(os.sched_getaffinity(0)) >= 2:  # two at a time, each pinned to one core of its own
        assert spans[0][2] != spans[1][2] and all(len(json.loads(c)) == 1 for _, _, c in spans)
    failing = [("bad", [sys.executable, "-c", "raise SystemExit(3)"])]
    assert converge.launch(failing, at_once=1, threads=1, env=dict(os.environ)) == 1


def test_several_seeds_side_by_side_give_the_seed_table_timing_and_band_plot(tiny_corpus_dir, tmp_path):
    out = tmp_path / "seeds"
    status = run.main(["--task", "converge", "--framework", "torch", "--preset", "tiny", "--data", str(tiny_corpus_dir),
                       "--max-steps", "4", "--eval-every", "2", "--sentences", "1", "--minutes", "0", "--threads", "1",
                       "--seeds", "0", "1", "--jobs", "2", "--time-steps", "3", "--repeat", "2",
                       "--target-aligned", "0", "--target-gain", "-100", "--out", str(out)])
    assert status == 0
    for seed in (0, 1):
        curve = json.loads((out / f"seed{seed}" / "converge.json").read_text())["curves"]["torch"]
        assert [p["step"] for p in curve] == [0, 2]  # met at 0 and at 2: reached at 0, the run stops at 2
    seeds = json.loads((out / "seeds.json").read_text())
    row = seeds["rows"]["torch"]
    assert [r["steps"] for r in row["runs"]] == [0, 0] and len(seeds["meta"]["timing"]["torch"]["rounds"]) == 2
    assert sorted(p.name for p in (out / "timing").iterdir()) == ["torch-round0", "torch-round1"]
    table = (out / "seeds.md").read_text()
    assert "SIDE BY SIDE" in table and "| torch | 2 of 2 |" in table and "not a committed one" in table
    assert (out / "seeds.png").stat().st_size > 0


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
    from common.data import corpus

    built = {}
    monkeypatch.setattr(corpus, "build_corpus", lambda path, n, max_chars, source: built.update(
        {path.name: (n, max_chars, source)}))
    converge.default_corpus(tmp_path, "speak")
    converge.default_corpus(tmp_path, "demo")
    assert built == {"converge-corpus-3000-prose": (3000, None, "prose"),
                     "converge-corpus-3000-60": (3000, 60, "generated")}
