"""The writers, from fabricated records: pooled quartiles, ratios to the fastest, statuses."""
import csv
import json

import numpy as np
import pytest

from bench import report


def train_record(fw, times, batch=4, rnd=0, task="train-ssrn", peak=100.0, rss=50.0):
    step = lambda t: {"time_s": t, "samples": batch, "frames": 400, "flops": 2e9, "loss": 1.0}
    return {"framework": fw, "task": task, "preset": "tiny", "batch_size": batch, "round": rnd, "status": "ok",
            "setup_s": 0.5, "warmup": [step(9.0), step(7.0)], "steps": [step(t) for t in times],
            "peak_rss_mb": rss, "gpu_memory_mb": None, "peak": {"gflops": peak},
            "gate": {"ssrn": {"errors": {"logits": 2e-6}, "tol": 1e-4, "passed": True}}}


def synth_record(fw, times, batch=1):
    steps = [{"time_s": t, "text2mel_s": t * 0.75, "ssrn_s": t * 0.25, "vocoder_s": 1.0, "frames": 100 * batch,
              "audio_s": 2.0 * batch, "flops": 1e9 * batch, "samples": batch} for t in times]
    return {**train_record(fw, []), "task": "synthesize", "batch_size": batch, "steps": steps}


@pytest.fixture
def records():
    return [train_record("torch", [1.0, 2.0, 3.0]), train_record("torch", [4.0, 5.0], rnd=1),
            train_record("chainer", [6.0, 6.0, 6.0, 6.0, 6.0]),
            {"framework": "gluon", "task": "train-ssrn", "preset": "tiny", "batch_size": 4, "round": 0,
             "status": "failed", "reason": "parity gate vs common.contract.reference: ssrn logits relative error 3.00e-02"},
            synth_record("torch", [2.0, 2.0])]


def row(rows, fw, task="train-ssrn"):
    (r,) = [r for r in rows if r["framework"] == fw and r["task"] == task]
    return r


def test_quartiles_pool_rounds_and_ratios_are_to_the_fastest(records):
    rows = report.aggregate(records)
    torch = row(rows, "torch")
    assert torch["steps"] == 5 and torch["rounds"] == 2  # [1, 2, 3] and [4, 5] pooled
    assert (torch["median_s"], torch["q1_s"], torch["q3_s"], torch["iqr_s"]) == (3.0, 2.0, 4.0, 2.0)
    assert torch["ratio_to_fastest"] == 1.0 and row(rows, "chainer")["ratio_to_fastest"] == 2.0
    assert torch["first_call_s"] == 9.0 and torch["warmup_median_s"] == 7.0  # never mixed into the steps
    assert torch["samples_per_s"] == pytest.approx(5 * 4 / 15)  # 5 steps of 4 samples in 15 s
    assert torch["frames_per_s"] == pytest.approx(5 * 400 / 15)
    assert torch["achieved_gflops"] == pytest.approx(5 * 2 / 15)  # 2 GFLOP a step, peak 100 GFLOP/s
    assert torch["fraction_of_peak"] == pytest.approx(10 / 15 / 100)
    failed = row(rows, "gluon")
    assert failed["status"] == "failed" and failed["median_s"] is None and failed["ratio_to_fastest"] is None


def test_each_batch_shape_gets_its_own_statistics_when_time_is_not_proportional_to_flops():
    """Steps cycling a small and a large batch, where one framework's time grows faster than the
    FLOPs (torch's small SSRN: 2.1x the time for 1.37x the FLOPs): one median over both shapes,
    even rescaled by FLOPs, hid that the ratio differs by shape; each shape has its own row."""
    def mixed(fw, small_s, large_s):  # 3 small steps (N=40, T=60, 1 GFLOP) and 2 large (N=70, T=90, 1.37 GFLOP)
        rec = train_record(fw, [])
        rec["steps"] = [{"time_s": t, "samples": 4, "frames": 400, "flops": g * 1e9, "loss": 1.0, "shape": shape}
                        for t, g, shape in [(small_s, 1.0, [4, 40, 60]), (large_s, 1.37, [4, 70, 90])] * 2
                        + [(small_s, 1.0, [4, 40, 60])]]
        return rec
    rows = report.aggregate([mixed("torch", 0.31, 0.65), mixed("chainer", 0.52, 0.75)])  # machine peak 100 GFLOP/s
    by = {(r["framework"], r["shape"]): r for r in rows}
    assert sorted(by) == [("chainer", "40×60"), ("chainer", "70×90"), ("torch", "40×60"), ("torch", "70×90")]
    small, large = by["chainer", "40×60"], by["chainer", "70×90"]
    assert (small["steps"], large["steps"]) == (3, 2) and small["iqr_s"] == 0 and large["iqr_s"] == 0
    assert small["ratio_to_fastest"] == pytest.approx(0.52 / 0.31) and large["ratio_to_fastest"] == pytest.approx(0.75 / 0.65)
    assert by["torch", "70×90"]["median_s"] == 0.65 and by["torch", "70×90"]["gflop_per_step"] == pytest.approx(1.37)
    # % of peak is that of the row's median, the statistic the table shows beside it
    assert by["torch", "70×90"]["fraction_of_peak"] == pytest.approx(1.37 / 0.65 / 100.0)
    md = report.markdown({"header": []}, rows, ["torch", "chainer"])
    assert "| train-ssrn | tiny | 4 | 70×90 | tuned | 650.0 ms, IQR 0.0 (1.00×) | 750.0 ms, IQR 0.0 (1.15×) |" in md


def test_synthesis_rows_take_the_median_over_rounds_of_the_mean_step():
    """Each synthesis step speaks another sentence (other lengths): one round's mean step over the
    same sentences is the statistic, its median over the rounds."""
    records = [synth_record("torch", [1.0, 3.0]), {**synth_record("torch", [2.0, 6.0]), "round": 1},
               {**synth_record("torch", [1.5, 4.5]), "round": 2}]
    synth = row(report.aggregate(records), "torch", "synthesize")
    assert synth["steps"] == 6 and synth["median_s"] == 3.0 and (synth["q1_s"], synth["q3_s"]) == (2.5, 3.5)


def test_every_framework_divides_by_one_machine_peak():
    """The best matmul of the run (any framework's, or NumPy's before/after), not each framework's own:
    a low own-matmul figure once put torch at 99% "of peak"."""
    records = [train_record("torch", [1.0], peak=150.0), train_record("chainer", [2.0], peak=200.0)]
    rows = report.aggregate(records)
    assert {r["machine_peak_gflops"] for r in rows} == {200.0}
    assert row(rows, "torch")["fraction_of_peak"] == pytest.approx(2 / 1.0 / 200)
    assert row(rows, "torch")["matmul_gflops"] == 150.0  # its own matmul stays, as a column
    rows = report.aggregate(records, probes={"before": 250.0, "after": 240.0})
    assert row(rows, "chainer")["fraction_of_peak"] == pytest.approx(2 / 2.0 / 250)


def test_synthesis_real_time_factors(records):
    synth = row(report.aggregate(records), "torch", "synthesize")
    assert synth["rtf"] == pytest.approx(4.0 / 3.0)  # 2 x 2 s of audio in 2 x 1.5 s of Text2Mel
    assert synth["rtf_with_vocoder"] == pytest.approx(4.0 / 6.0)  # + 2 x (0.5 s SSRN + 1 s Griffin-Lim)
    assert synth["samples_per_s"] == pytest.approx(0.5) and synth["ratio_to_fastest"] == 1.0  # sentences / s
    # the header says what those divide by (it once said "+vocoder adds Griffin-Lim", leaving out SSRN)
    assert "Text2Mel seconds" in report.RTF_NOTE and "(Text2Mel + SSRN + Griffin-Lim" in report.RTF_NOTE
    md = report.markdown({"header": []}, report.aggregate(records), ["torch"])
    assert "| RTF Text2Mel | RTF end-to-end |" in md


def test_markdown_csv_and_json(tmp_path, records):
    rows = report.aggregate(records)
    md = report.markdown({"header": ["threads: 2 per framework"]}, rows, ["torch", "chainer", "gluon", "newfw"])
    assert "- threads: 2 per framework" in md
    line = next(l for l in md.splitlines() if l.startswith("| train-ssrn | tiny | 4 |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[3:] == ["–", "tuned", "3000.0 ms, IQR 2000.0 (1.00×)", "6000.0 ms, IQR 0.0 (2.00×)", "failed", "not run"]
    assert "failed: parity gate vs common.contract.reference: ssrn logits relative error 3.00e-02" in md

    report.write_csv(tmp_path / "r.csv", rows)
    with open(tmp_path / "r.csv") as f:
        back = list(csv.DictReader(f))
    assert [r["framework"] for r in back] == [r["framework"] for r in rows]
    assert float(back[1]["ratio_to_fastest"]) == 2.0 and back[2]["status"] == "failed"

    report.write_json(tmp_path / "r.json", {"machine": {"cores": 2}}, records)
    raw = json.loads((tmp_path / "r.json").read_text())
    assert raw["meta"]["machine"]["cores"] == 2
    assert [s["time_s"] for s in raw["runs"][0]["steps"]] == [1.0, 2.0, 3.0]  # every raw step time kept


def test_plots(tmp_path, records):
    one = report.plot(tmp_path, report.aggregate(records), ["torch", "chainer", "gluon"])
    assert [p.name for p in one] == ["step_time.png"]
    several = records + [train_record("torch", [1.5, 2.5], batch=8), train_record("chainer", [3.0], batch=8)]
    two = report.plot(tmp_path, report.aggregate(several), ["torch", "chainer", "gluon"])
    assert [p.name for p in two] == ["step_time.png", "throughput.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in two)


def test_summarize_matches_numpy_percentiles():
    times = np.random.default_rng(0).random(11)
    s = report.summarize(times)
    assert s["q1_s"] < s["median_s"] < s["q3_s"]
    assert s["iqr_s"] == pytest.approx(np.subtract(*np.percentile(times, [75, 25])))


def test_batched_synthesis_throughput_is_compared_with_one_sentence_at_a_time(records):
    assert report.synthesis_throughput(report.aggregate(records), ["torch"]) == []  # one batch size only
    rows = report.aggregate(records + [synth_record("torch", [4.0, 4.0], batch=8), synth_record("gluon", [8.0], 8)])
    lines = report.synthesis_throughput(rows, ["torch", "gluon"])
    assert lines[-2:] == ["| tiny | 1 | tuned | 0.67 (1.00×) / 0.50 (1.00×) | – |",
                          "| tiny | 8 | tuned | 2.67 (4.00×) / 2.00 (4.00×) | 1.33 / 1.00 |"]


def stock(record):
    return {**record, "ops": "stock"}


def test_frameworks_are_compared_within_a_tier_and_tuning_gains_are_stock_over_tuned(tmp_path, records):
    """Both tiers in one run: a stock row's ratio is to the fastest STOCK framework (here chainer's
    stock beats torch's), never to a tuned one, and the tuning table divides each framework's stock
    median by its tuned one in the same shape."""
    both = records + [stock(train_record("torch", [9.0, 9.0, 9.0])), stock(train_record("chainer", [7.5, 7.5]))]
    rows = report.aggregate(both)
    by = {(r["framework"], r["ops"]): r for r in rows if r["task"] == "train-ssrn"}
    assert by["torch", "tuned"]["ratio_to_fastest"] == 1.0 and by["chainer", "tuned"]["ratio_to_fastest"] == 2.0
    assert by["chainer", "stock"]["ratio_to_fastest"] == 1.0 and by["torch", "stock"]["ratio_to_fastest"] == 1.2
    md = report.markdown({"header": []}, rows, ["torch", "chainer", "gluon"])
    assert "| train-ssrn | tiny | 4 | – | stock | 9000.0 ms, IQR 0.0 (1.20×) | 7500.0 ms, IQR 0.0 (1.00×) | not run |" in md
    gains = md[md.index("## What tuning buys"):].splitlines()
    assert "| train-ssrn | tiny | 4 | – | 3.00× | 1.25× | – |" in gains  # torch 9 / 3, chainer 7.5 / 6
    assert "## What tuning buys" not in report.markdown({"header": []}, report.aggregate(records), ["torch"])
    assert [p.name for p in report.plot(tmp_path, rows, ["torch", "chainer"])] == ["step_time.png"]


def test_records_from_before_the_tiers_are_tuned(records):
    assert {r["ops"] for r in report.aggregate(records)} == {"tuned"}
    assert report.tier({"framework": "torch"}) == "tuned" and report.tier(stock({})) == "stock"


def test_an_older_table_is_re_derived_per_shape_from_its_raw_steps(tmp_path, reference_backend):
    """Records written before steps carried their shape: the shapes come back from the run's
    prebuilt batches (checked against each step's FLOPs), and the table is per shape."""
    from bench import measure
    from common.contract import spec as S

    rec = measure.run("reference", "train-ssrn", S.get_spec("tiny"), batch_size=2, steps=3, warmup=1,
                      backend_cls=reference_backend)
    shapes = [s.pop("shape") for s in rec["warmup"] + rec["steps"]]
    meta = {"options": {"data": None, "batches": 2, "seed": 0}, "header": ["the run's own line"]}
    report.write_json(tmp_path / "results.json", meta, [{**rec, "round": 0}])
    stripped = json.loads((tmp_path / "results.json").read_text())["runs"]
    assert report.infer_shapes(meta, stripped) == 4
    assert [s["shape"] for s in stripped[0]["warmup"] + stripped[0]["steps"]] == shapes  # the batches they ran
    table = report.rederive(tmp_path).read_text()
    rows = [line for line in table.splitlines() if line.startswith("| train-ssrn | tiny | 2 |")]
    assert len(rows) == len({tuple(s) for s in shapes[1:]})  # a row per shape of the counted steps
    assert "the run's own line" in table and "step shapes inferred" in table
    raw = json.loads((tmp_path / "results.json").read_text())
    raw["runs"][0]["steps"][1]["flops"] += 1  # not the batch the step would have run: refused
    (tmp_path / "results.json").write_text(json.dumps(raw))
    with pytest.raises(SystemExit, match="step 2"):
        report.rederive(tmp_path)


def test_a_variants_study_is_re_derived_with_its_table_per_shape(tmp_path, reference_backend):
    from bench import measure
    from bench.variants import variant_spec

    records = [{**measure.run("reference", "train-ssrn", variant_spec("tiny", v), batch_size=2, steps=2, warmup=1,
                              backend_cls=reference_backend), "round": 0} for v in ("baseline", "residual")]
    for rec in records:
        for step in rec["warmup"] + rec["steps"]:
            del step["shape"]
    meta = {"options": {"data": None, "batches": 2, "seed": 0, "preset": "tiny", "variant": ["baseline", "residual"]}}
    report.write_json(tmp_path / "results.json", meta, records)
    report.rederive(tmp_path)
    study = (tmp_path / "variants-per-shape.md").read_text()
    assert "| baseline | – | " in study and "| residual | block=residual | " in study and "(1.00×)" in study
