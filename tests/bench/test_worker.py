"""The subprocess worker and the orchestrator, end to end on the tiny preset with a real framework."""
import json
import os
import re
import subprocess
import sys

import pytest

from bench import machine, report, run


def test_worker_subprocess_returns_a_timed_record(tmp_path, real_framework):
    result = tmp_path / "r.json"
    subprocess.run([sys.executable, "-m", "bench.worker", "--framework", real_framework, "--task", "train-text2mel",
                    "--preset", "tiny", "--batch-size", "2", "--steps", "2", "--warmup", "1", "--threads", "1",
                    "--result", str(result)], cwd=machine.REPO, check=True, timeout=300,
                   env={**os.environ, **machine.thread_env(1), "PYTHONPATH": str(machine.REPO)})
    rec = json.loads(result.read_text())
    assert rec["status"] == "ok", rec.get("reason")
    assert rec["framework"] == real_framework and rec["threads"] == 1 and rec["version"]
    assert len(rec["warmup"]) == 1 and len(rec["steps"]) == 2 and all(s["time_s"] > 0 for s in rec["steps"])
    assert rec["gate"]["text2mel"]["passed"] and rec["peak"]["gflops"] > 0 and rec["blas"]
    assert rec["gate"]["train_step"]["passed"] and set(rec["gate"]["train_step"]["errors"]) >= {"loss"}


def test_run_writes_every_output(tmp_path, real_framework):
    out = tmp_path / "bench"
    proc = subprocess.run([sys.executable, str(machine.REPO / "bench" / "run.py"), "--framework", real_framework,
                           "--task", "train-ssrn", "--preset", "tiny", "--batch-size", "1", "2", "--steps", "1",
                           "--warmup", "1", "--threads", "1", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {p.name for p in out.iterdir()} == {"results.json", "results.csv", "table.md", "step_time.png",
                                              "throughput.png", "gate"}
    assert {p.name for p in (out / "gate").iterdir()} == {f"{real_framework}-{ops}--train-ssrn-tiny-b{b}.npz"
                                                         for b in (1, 2) for ops in ("tuned", "stock")}
    raw = json.loads((out / "results.json").read_text())
    assert [(r["batch_size"], r["ops"], r["status"]) for r in raw["runs"]] == [
        (1, "tuned", "ok"), (1, "stock", "ok"), (2, "tuned", "ok"), (2, "stock", "ok")]
    assert raw["meta"]["thread_env"]["OMP_NUM_THREADS"] == "1" and raw["meta"]["machine"]["cores"]
    table = (out / "table.md").read_text()
    assert "| train-ssrn | tiny | 2 |" in table and table in proc.stdout
    (out / "gate" / "otherfw--train-ssrn-tiny-b1.npz").write_bytes(b"an earlier run's")  # the same --out again:
    again = subprocess.run(proc.args, capture_output=True, text=True, timeout=600)  # only this run's arrays
    assert again.returncode == 0 and "otherfw" not in (out / "table.md").read_text()
    assert not (out / "gate" / "otherfw--train-ssrn-tiny-b1.npz").exists()


def test_plan_alternates_the_framework_order_and_runs_synthesis_once_per_round():
    runs = run.plan(["torch", "chainer"], ["train-ssrn", "synthesize"], [2, 4], repeat=2, synth_batches=[1])
    b, t = "baseline", "tuned"
    assert runs[:6] == [(0, b, "train-ssrn", 2, t, "torch"), (0, b, "train-ssrn", 2, t, "chainer"),
                        (0, b, "train-ssrn", 4, t, "torch"), (0, b, "train-ssrn", 4, t, "chainer"),
                        (0, b, "synthesize", 1, t, "torch"), (0, b, "synthesize", 1, t, "chainer")]
    assert runs[6:8] == [(1, b, "train-ssrn", 2, t, "chainer"), (1, b, "train-ssrn", 2, t, "torch")] and len(runs) == 12
    with_variants = run.plan(["torch"], ["train-ssrn"], [2], repeat=1, variant_names=["baseline", "residual"])
    assert with_variants == [(0, b, "train-ssrn", 2, t, "torch"), (0, "residual", "train-ssrn", 2, t, "torch")]


def test_plan_puts_the_tiers_of_one_shape_side_by_side_and_alternates_them():
    runs = run.plan(["torch", "gluon"], ["train-ssrn"], [4], repeat=2, tiers=("tuned", "stock"))
    assert [(r[0], r[4], r[5]) for r in runs] == [
        (0, "tuned", "torch"), (0, "tuned", "gluon"), (0, "stock", "torch"), (0, "stock", "gluon"),
        (1, "stock", "gluon"), (1, "stock", "torch"), (1, "tuned", "gluon"), (1, "tuned", "torch")]


def test_ops_defaults_to_both_tiers_for_timing_and_is_refused_where_only_tuned_trains(capsys):
    assert run.parse_args(["--out", "x"]).ops == ["tuned", "stock"]
    assert run.parse_args(["--ops", "stock", "--out", "x"]).ops == ["stock"]
    assert run.parse_args(["--task", "converge", "--out", "x"]).ops == ["tuned"]
    with pytest.raises(SystemExit):
        run.parse_args(["--task", "converge", "--ops", "stock", "--out", "x"])
    assert "--ops goes with the timing tasks" in capsys.readouterr().err


def test_run_times_the_variants_and_writes_their_table(tmp_path, real_framework):
    out = tmp_path / "bench"
    proc = subprocess.run([sys.executable, str(machine.REPO / "bench" / "run.py"), "--framework", real_framework,
                           "--task", "train-ssrn", "--preset", "tiny", "--batch-size", "2", "--steps", "1",
                           "--warmup", "1", "--threads", "1", "--variant", "baseline", "bottleneck", "batch-norm",
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    raw = json.loads((out / "results.json").read_text())
    assert [(r["preset"], r["ops"], r["status"]) for r in raw["runs"]] == [
        (preset, ops, "ok") for preset in ("tiny", "tiny+bottleneck", "tiny+batch-norm") for ops in ("tuned", "stock")
    ], [r.get("reason") for r in raw["runs"]]
    study = (out / "variants.md").read_text()
    # one row per variant, timed batch shape (characters × reduced frames: the one counted step's) and tier
    for ops in ("tuned", "stock"):
        assert re.search(rf"\| bottleneck \| conv=bottleneck \| \d+×\d+ \| {ops} \| 64,863 \|", study)
        assert re.search(rf"\| baseline \| – \| \d+×\d+ \| {ops} \| 80,095 \|", study)
    assert study in proc.stdout and "(1.00×)" in study


def test_on_a_gpu_the_warm_up_meets_every_batch_shape(capsys):
    """cuDNN autotunes each new shape: with fewer warm-up steps than batches, a timed step would tune."""
    with pytest.raises(SystemExit):
        run.parse_args(["--device", "cuda", "--warmup", "1", "--batches", "2"])
    assert "--warmup (1) must be >= --batches (2)" in capsys.readouterr().err
    assert run.parse_args(["--device", "cuda", "--warmup", "2", "--batches", "2"]).warmup == 2
    assert run.parse_args(["--warmup", "1", "--batches", "2"]).warmup == 1  # the CPU has nothing to tune


def test_defaults_are_the_quick_run():
    args = run.parse_args(["--framework", "all"])
    assert args.preset == "small" and args.batch_size == [4] and args.task == list(run.TASKS)
    assert args.framework == list(run.FRAMEWORKS) and args.warmup >= 1 and args.out.name.startswith("bench-")


def test_results_are_not_written_into_results_from_a_dirty_tree(monkeypatch, capsys):
    """A committed table names the commit it came from: a tree with uncommitted changes has none."""
    monkeypatch.setattr(machine, "git_commit", lambda: "abc123+dirty")
    results = machine.REPO / "results" / "never-written"
    for task in (["--task", "train-ssrn"], ["--task", "converge"], ["--task", "scaling", "train-ssrn"]):
        with pytest.raises(SystemExit):
            run.parse_args(task + ["--out", str(results)])
        assert "uncommitted changes" in capsys.readouterr().err and not results.exists()
    assert not run.parse_args(["--out", str(machine.REPO / "out" / "x")]).allow_dirty  # outside results/: as before
    args = run.parse_args(["--out", str(results), "--allow-dirty"])
    assert machine.commit_line({"git_commit": "abc123+dirty"}, args.allow_dirty) == \
        "git abc123+dirty (written with --allow-dirty)"
    monkeypatch.setattr(machine, "git_commit", lambda: "abc123")
    assert run.parse_args(["--out", str(results)]).out == results
    assert machine.commit_line({"git_commit": "abc123"}, True) == "git abc123"


def test_a_busy_machine_is_flagged_in_the_header():
    assert report.busy_warning([{"others_busy_cores": 0.1}, {"status": "unavailable"}]) == []


def test_a_busy_machine_is_said_once_while_the_benchmark_runs(tmp_path, monkeypatch, capsys):
    busy = iter([0.1, 1.5, 1.8, 0.1])  # the 2nd and 3rd runs had company
    monkeypatch.setattr(run, "numpy_peak", lambda args: 1.0)
    monkeypatch.setattr(run, "write_outputs", lambda *args, **kw: "table")
    monkeypatch.setattr(run, "run_worker", lambda *args: {"status": "ok", "others_busy_cores": next(busy)})
    assert run.main(["--framework", "torch", "--task", "train-ssrn", "--repeat", "4", "--ops", "tuned",
                     "--out", str(tmp_path)]) == 0
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "WARNING" in ln]
    assert len(lines) == 1 and "torch train-ssrn batch 4: WARNING: other processes kept up to 1.5 cores busy" in lines[0]


def test_the_header_says_how_many_frames_synthesis_timed():
    def synth(fw, frames, batch=1):
        steps = [{"frames": 4 * sum(frames[i:i + batch]), "reduced_frames": frames[i:i + batch]}
                 for i in range(0, len(frames), batch)]
        return {"framework": fw, "task": "synthesize", "status": "ok", "batch_size": batch, "steps": steps}
    same = report.synthesis_frames_line([synth("torch", [52, 38]), synth("gluon", [52, 38]),
                                      synth("torch", [52, 38, 7, 9], 2), synth("gluon", [52, 38, 7, 9], 2)], r=4,
                                     untrained=True)
    assert same == ["synthesis, batch 1: timed 90 reduced frames in 2 utterances (52, 38), the same in every framework and tier",
                    "synthesis, batch 2: timed 106 reduced frames in 4 utterances (52, 38, 7, 9), the same in every "
                    "framework and tier"]
    (differ,) = report.synthesis_frames_line([synth("torch", [52, 38]), synth("gluon", [64, 38])], r=4, untrained=True)
    assert differ.startswith("WARNING: synthesis, batch 1") and "gluon tuned 64, 38" in differ
    assert "(up to 12 of 102 reduced frames)" in differ and differ.endswith(report.UNTRAINED_TIES)
    (trained,) = report.synthesis_frames_line([synth("torch", [52, 38]), synth("gluon", [64, 38])], r=4, untrained=False)
    assert "ulp" not in trained  # the tie explains untrained weights only
    assert report.synthesis_frames_line([{"framework": "torch", "task": "train-ssrn", "status": "ok"}], r=4,
                                     untrained=True) == []
    (line,) = report.busy_warning([{"others_busy_cores": 0.1}, {"others_busy_cores": 1.5}])
    assert "other processes kept up to 1.5 cores busy" in line



def test_synthesis_runs_batches_with_trained_weights(tmp_path, real_framework):
    """Each step synthesizes `batch_size` sentences; weight files replace init_weights (the gate
    checks the framework against the reference on those weights) and bring their spec."""
    from bench import measure
    from common.contract import spec as S, weights as W
    tiny = S.get_spec("tiny")
    paths = {net: tmp_path / f"{net}.safetensors" for net in S.NETS}
    for net, path in paths.items():
        W.save(path, W.init_weights(tiny, net, seed=7), tiny, net)
    rec = measure.run(real_framework, "synthesize", S.get_spec("paper"), batch_size=3, steps=1, warmup=1,
                      threads=1, max_frames=12, weights={net: str(path) for net, path in paths.items()})  # as bench.worker
    assert rec["status"] == "ok", rec.get("reason")
    assert rec["preset"] == "tiny" and rec["weights"]["ssrn"] == str(paths["ssrn"]) and rec["gate"]["text2mel"]["passed"]
    (step,) = rec["steps"]
    assert step["samples"] == 3 and len(step["reduced_frames"]) == 3 and max(step["reduced_frames"]) <= 12
    assert step["frames"] == sum(step["reduced_frames"]) * tiny.r
    W.save(paths["ssrn"], W.init_weights(S.get_spec("small"), "ssrn"), S.get_spec("small"), "ssrn")
    with pytest.raises(ValueError, match="different specs"):
        measure.run(real_framework, "synthesize", tiny, weights=paths)


def test_trained_models_set_the_preset_and_must_come_in_pairs(tmp_path):
    from common.contract import spec as S, weights as W
    tiny = S.get_spec("tiny")
    for net in S.NETS:
        W.save(tmp_path / f"{net}.safetensors", W.init_weights(tiny, net), tiny, net)
    args = run.parse_args(["--text2mel", str(tmp_path / "text2mel.safetensors"), "--ssrn",
                           str(tmp_path / "ssrn.safetensors")])
    assert args.preset == "tiny" and args.synth_batch == [1, 8]
    with pytest.raises(SystemExit):
        run.parse_args(["--text2mel", str(tmp_path / "text2mel.safetensors")])
    with pytest.raises(SystemExit):
        run.parse_args(["--text2mel", str(tmp_path / "text2mel.safetensors"), "--ssrn",
                        str(tmp_path / "ssrn.safetensors"), "--preset", "paper"])


def test_the_gpu_script_runs_its_tables_on_any_device(tmp_path, real_framework):
    """bench/gpu.sh with its presets and batches replaced, on the CPU: every timing task ran in both tiers, with the
    script's batch sizes, 10 counted steps and its round count, each preset in its own folder; then the stream."""
    env = {**os.environ, "PYTHON": sys.executable, "FRAMEWORKS": real_framework, "PRESETS": "tiny",
           "BATCHES": "1 2", "REPEAT": "1"}
    proc = subprocess.run(["bash", str(machine.REPO / "bench" / "gpu.sh"), str(tmp_path), "cpu"], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    raw = json.loads((tmp_path / "tiny" / "results.json").read_text())
    assert raw["meta"]["options"]["device"] == "cpu" and raw["meta"]["options"]["repeat"] == 1
    assert sorted((r["task"], r["batch_size"], r["status"], len(r["steps"])) for r in raw["runs"] if r["ops"] == "tuned") == [
        ("synthesize", 1, "ok", 10), ("synthesize", 8, "ok", 10), ("train-ssrn", 1, "ok", 10),
        ("train-ssrn", 2, "ok", 10), ("train-text2mel", 1, "ok", 10), ("train-text2mel", 2, "ok", 10)]
    assert sorted(r["ops"] for r in raw["runs"]) == ["stock"] * 6 + ["tuned"] * 6  # both tiers, by default
    streams = json.loads((tmp_path / "stream" / "stream.json").read_text())["records"]
    assert [(r["framework"], r["status"]) for r in streams] == [(real_framework, "ok")]
