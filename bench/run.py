"""`python bench/run.py`: time DC-TTS training steps and synthesis in every framework.

Each (framework, tier of operators, task, batch size) runs in its own subprocess (`python -m bench.worker`) with
the same thread count, seeds and prebuilt inputs, after passing the parity gate; rounds
alternate the framework order. Results are rewritten after every run, so Ctrl-C keeps the
finished rows. The defaults (small preset, batch 4, 2 warm-up + 5 counted steps, a short
synthesis) finish in a few minutes on a 2-core CPU; `--preset paper` is the headline.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if __name__ == "__main__":  # on a fresh machine: make the project's environment, re-run in it
    from common import environment
    environment.ensure([__file__, *sys.argv[1:]])

from tqdm import tqdm

from bench import converge, machine, report, scaling, stream, tune, variants
from bench.measure import TASKS
from common.contract import weights
from common.training.cli import model_file
from common.framework import FRAMEWORKS, OPS
from common.contract.spec import PRESETS


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--framework", nargs="+", choices=[*FRAMEWORKS, "all"], help="default: all (tune: torch)")
    p.add_argument("--task", nargs="+", default=["all"], choices=[*TASKS, "all", "converge", "scaling", "tune", "stream"],
                   help="all = the timing tasks; converge = time to quality (bench/converge.py; runs alone); "
                        "stream = streaming synthesis, time to first audio (bench/stream.py; runs alone); "
                        "tune = hyperparameter search on one framework (bench/tune.py; runs alone); "
                        "scaling = data-parallel training with --workers (bench/scaling.py; with train-text2mel "
                        "and/or train-ssrn to choose the networks, default both)")
    p.add_argument("--ops", nargs="+", choices=OPS, help="tiers of operators to time (default: both): tuned = our "
                   "fastest code, stock = only each framework's own layers, functions and Adam (report.TIERS_NOTE); "
                   "converge, scaling and tune train the tuned tier")
    p.add_argument("--preset", choices=sorted(PRESETS), help="default: small (timing), demo (converge, tune)")
    p.add_argument("--batch-size", nargs="+", type=int, default=[4],
                   help="training batch sizes; several give a throughput-vs-batch-size plot")
    p.add_argument("--synth-batch", nargs="+", type=int, default=[1, 8],
                   help="sentences synthesized together per synthesis step (default: 1 and 8)")
    p.add_argument("--steps", type=int, default=5, help="counted steps per run")
    p.add_argument("--warmup", type=int, default=2, help="uncounted steps per run, the first call included (>= 1)")
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="threads of every framework (default: all cores)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--data", default=None, help="preprocessed corpus (common.data.dataset.load_corpus); default: synthetic "
                                                "LJSpeech-shaped batches")
    p.add_argument("--out", default=None, help="output folder (default: out/bench-<date>)")
    p.add_argument("--repeat", type=int, default=1, help="rounds, alternating the framework order")
    p.add_argument("--max-frames", type=int, default=64, help="synthesis length limit, reduced frames")
    p.add_argument("--text2mel", type=Path, help="trained Text2Mel (checkpoint, weight file or run directory) for "
                   "the synthesis task, with --ssrn; its spec sets the preset; with --data, the corpus's held-out "
                   "sentences are spoken")
    p.add_argument("--ssrn", type=Path, help="trained SSRN for the synthesis task (with --text2mel)")
    p.add_argument("--batches", type=int, default=2, help="distinct prebuilt batches per run, cycled")
    p.add_argument("--variant", nargs="+", default=[variants.BASELINE], choices=[*variants.VARIANTS, "all"],
                   help="changes of the preset to time as well (bench/variants.py; all = every one); several "
                        "write variants.md beside the table (default: the preset alone)")
    p.add_argument("--workers", nargs="+", type=int, default=[1, 2],
                   help="scaling: worker counts, sharing --threads (default: 1 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=1800, help="seconds before a run is abandoned as an error")
    p.add_argument("--allow-dirty", action="store_true", help="write into results/ from a working tree with "
                   "uncommitted changes (refused without it; the header then says so)")
    g = p.add_argument_group("converge (time to quality)")
    g.add_argument("--max-steps", type=int, help="step budget per framework (default 20000; tune: per trial, "
                   f"default {tune.MAX_STEPS})")
    g.add_argument("--minutes", type=float, default=20, help="training-time budget per framework (0: none)")
    g.add_argument("--eval-every", type=int, help=f"steps between held-out evaluations (default 250; tune: "
                   f"{tune.EVAL_EVERY})")
    g.add_argument("--sentences", type=int, default=50, help="held-out sentences per evaluation, evenly spaced over heldout.csv (its length bands keep their shares)")
    g.add_argument("--seeds", nargs="+", type=int, help="train every framework once per seed (default: --seed); "
                   "seeds.md gives steps and minutes to target over them")
    g.add_argument("--target-aligned", type=float, help="target: fraction of held-out sentences aligned (default: "
                   "the preset's in bench/targets.json)")
    g.add_argument("--target-gain", type=float, help="target: dB by which held-out MCD-DTW lies below the mean "
                   "spectrum's (default: the preset's in bench/targets.json)")
    g.add_argument("--jobs", type=int, default=1, help="trainings at once, each --threads threads pinned to its own "
                   "cores (default 1: one after the other)")
    g.add_argument("--time-steps", type=int, default=200, help="steps timed per framework alone for minutes to "
                   "target, --repeat rounds interleaved (0: skip)")
    g.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in --out: each framework from its curve and last checkpoint "
                        "(bit-identical training; the table covers every framework with a curve there)")
    g = p.add_argument_group("tune (hyperparameter search; also --max-steps, --eval-every, --sentences)")
    g.add_argument("--trials", type=int, default=30, help="finished trials the study should hold (default 30)")
    g.add_argument("--study", type=Path, help="optuna's SQLite file of the study (default: <out>/study.db); "
                   "an existing one is continued")
    args = p.parse_args(argv)
    args.converge, args.tune, args.stream = "converge" in args.task, "tune" in args.task, "stream" in args.task
    for alone in ("converge", "tune", "stream"):
        if alone in args.task and len(args.task) > 1:
            p.error(f"--task {alone} runs alone")
    args.framework = args.framework or (["torch"] if args.tune else ["all"])
    if args.tune and (len(args.framework) > 1 or "all" in args.framework or args.trials < 0):
        p.error("--task tune trains one framework, --trials >= 0 times")
    if args.max_steps is None:
        args.max_steps = tune.MAX_STEPS if args.tune else 20000
    args.seeds = args.seeds or [args.seed]
    if args.jobs < 1 or args.time_steps < 0:
        p.error("--jobs must be >= 1 and --time-steps >= 0")
    if args.eval_every is None:
        args.eval_every = tune.EVAL_EVERY if args.tune else 250
    args.scaling = "scaling" in args.task
    trains = args.converge or args.tune or args.scaling  # the tasks that train the tuned tier only
    if (trains or args.stream) and args.ops not in (None, ["tuned"]):
        p.error("--ops goes with the timing tasks: converge, scaling and tune train the tuned tier, stream runs it")
    args.ops = list(dict.fromkeys(args.ops or (["tuned"] if trains or args.stream else OPS)))
    if args.scaling and not set(args.task) <= {"scaling", "train-text2mel", "train-ssrn"}:
        p.error("--task scaling goes with train-text2mel and/or train-ssrn only")
    if min(args.workers) < 1:
        p.error("--workers must be >= 1")
    if (args.text2mel is None) != (args.ssrn is None):
        p.error("--text2mel and --ssrn go together")
    if args.text2mel is not None:
        trained = trained_preset(args.text2mel, args.ssrn)
        if args.preset not in (None, trained):
            p.error(f"--preset {args.preset} differs from the trained models' preset {trained}")
        args.preset = trained
        args.text2mel, args.ssrn = args.text2mel.resolve(), args.ssrn.resolve()
    args.preset = args.preset or ("demo" if args.converge or args.tune or args.stream else "small")
    args.framework = list(FRAMEWORKS) if "all" in args.framework else list(dict.fromkeys(args.framework))
    args.task = list(TASKS) if "all" in args.task else list(dict.fromkeys(args.task))
    args.variant = list(variants.VARIANTS) if "all" in args.variant else list(dict.fromkeys(args.variant))
    if args.variant != [variants.BASELINE] and (args.scaling or args.tune or args.stream or args.text2mel is not None):
        p.error("--variant goes with the timing tasks on untrained weights and with converge")
    if min(args.batch_size + args.synth_batch) < 1 or args.steps < 1 or args.warmup < 1 or args.repeat < 1 or args.threads < 1:
        p.error("batch sizes, --steps, --warmup, --repeat and --threads must be >= 1")
    if args.device != "cpu" and args.warmup < args.batches:
        p.error(f"on a GPU --warmup ({args.warmup}) must be >= --batches ({args.batches}): autotuning meets every "
                "batch shape in the warm-up, not in the timed steps")
    kind = ("converge" if args.converge else "tune" if args.tune else "scaling" if args.scaling else
            "stream" if args.stream else "bench")
    args.out = Path(args.out or f"out/{kind}-{datetime.datetime.now():%Y%m%d-%H%M%S}").resolve()
    args.data = str(Path(args.data).resolve()) if args.data else None
    if not args.allow_dirty and machine.refuses_dirty(args.out):
        p.error(f"--out {args.out} is in results/ and the working tree has uncommitted changes: commit them first "
                "(a committed table names the commit it came from), or give --allow-dirty (its header then says so)")
    return args


def trained_preset(text2mel: Path, ssrn: Path) -> str:
    """The preset name the trained models were made with (they must agree), read from their headers."""
    names = {net: weights.read_header(model_file(path, net))[0].name for net, path in (("text2mel", text2mel),
                                                                                           ("ssrn", ssrn))}
    if len(set(names.values())) > 1:
        raise SystemExit(f"the trained models' presets differ: {names}")
    return names["text2mel"]


def plan(frameworks: list, tasks: list, batch_sizes: list, repeat: int, synth_batches=(1,),
         variant_names=(variants.BASELINE,), tiers=("tuned",)) -> list:
    """(round, variant, task, batch size, tier, framework) in run order: the tiers of one shape side by
    side; odd rounds reverse the framework order and the tier order."""
    runs = []
    for rnd in range(repeat):
        order, tier_order = (frameworks, tiers) if rnd % 2 == 0 else (frameworks[::-1], tiers[::-1])
        for variant in variant_names:
            for task in tasks:
                for batch in (synth_batches if task == "synthesize" else batch_sizes):
                    runs += [(rnd, variant, task, batch, ops, fw) for ops in tier_order for fw in order]
    return runs


def numpy_peak(args) -> float | None:
    """NumPy's best fp32 matmul GFLOP/s (bench.frameworks.peak_matmul), in a subprocess with the
    runs' threads: one of the probes of the machine peak (report.machine_peak). None on a GPU."""
    if args.device != "cpu":
        return None
    code = "import json; from bench.frameworks import peak_matmul; print(json.dumps(peak_matmul('numpy')))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=machine.REPO, env=machine.subprocess_env(args.threads, args.device), capture_output=True,
                          text=True, timeout=args.timeout)
    return json.loads(proc.stdout)["gflops"] if proc.returncode == 0 else None


def run_worker(args, framework: str, task: str, batch: int, variant: str = variants.BASELINE, ops: str = "tuned") -> dict:
    """One subprocess run; a crash, timeout or missing answer becomes a status "error" record."""
    result = args.out / f".worker-{os.getpid()}.json"
    cmd = [sys.executable, "-m", "bench.worker", "--framework", framework, "--task", task, "--preset", args.preset,
           "--batch-size", str(batch), "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--threads", str(args.threads), "--device", args.device, "--seed", str(args.seed),
           "--max-frames", str(args.max_frames), "--batches", str(args.batches), "--variant", variant, "--ops", ops,
           "--gate-dir", str(args.out / "gate"), "--result", str(result)]
    if args.data:
        cmd += ["--data", args.data]
    if args.text2mel is not None:
        cmd += ["--text2mel", str(args.text2mel), "--ssrn", str(args.ssrn)]
    base = {"framework": framework, "ops": ops, "task": task, "preset": variants.variant_name(args.preset, variant),
            "batch_size": batch}
    return machine.run_worker_process(cmd, result, machine.subprocess_env(args.threads, args.device), args.timeout,
                                      base)


def write_outputs(args, records: list, probes: dict, plots: bool = False) -> str:
    """Rewrite results.json, results.csv and table.md (and the plots); return the markdown.
    `probes`: NumPy's matmul GFLOP/s before and after the runs (numpy_peak)."""
    rows = report.aggregate(records, probes)
    info = args.machine
    meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": info,
            "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "machine"},
            "thread_env": machine.thread_env(args.threads), "numpy_peak_gflops": probes,
            "header": report.header(args, records, probes, info)}
    report.write_json(args.out / "results.json", meta, records)
    report.write_csv(args.out / "results.csv", rows)
    table = report.markdown(meta, rows, args.framework)
    (args.out / "table.md").write_text(table)
    if len(args.variant) > 1:
        study = variants.table(rows, args.preset, args.variant, args.framework)
        (args.out / "variants.md").write_text(study)
        table += "\n" + study
    if plots:
        report.plot(args.out, rows, args.framework)
    return table


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.converge:
        return converge.run(args)
    if args.tune:
        return tune.run(args)
    args.machine = machine.machine(args.device)  # git and nvidia-smi once, before this run's own files change the tree
    if args.stream:
        records = stream.run(args)
        print((args.out / "stream.md").read_text() + f"written to {args.out}")
        return 0 if all(r["status"] == "ok" for r in records) else 1
    if args.scaling:
        records = scaling.run(args)
        print((args.out / "scaling.md").read_text() + f"written to {args.out}")
        return 0 if all(r["status"] == "ok" for r in records) else 1
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(args.out / "gate", ignore_errors=True)  # an earlier run's arrays in this --out are not this run's
    runs = plan(args.framework, args.task, args.batch_size, args.repeat, args.synth_batch, args.variant, args.ops)
    records, unavailable = [], {}
    status, warned = 0, False
    probes = {"before": numpy_peak(args)}
    try:
        bar = tqdm(runs, unit="run", desc="bench")
        for rnd, variant, task, batch, ops, fw in bar:
            bar.set_postfix_str(f"{fw} {ops} {task} batch {batch}" + (f" {variant}" if len(args.variant) > 1 else ""))
            record = unavailable.get(fw) or run_worker(args, fw, task, batch, variant, ops)
            if record["status"] == "unavailable":
                unavailable[fw] = record
            records.append({**record, "ops": ops, "task": task, "batch_size": batch, "round": rnd,
                            "preset": variants.variant_name(args.preset, variant)})
            write_outputs(args, records, probes)
            busy = [] if warned else report.busy_warning([record])
            if busy:  # said as it happens, once, besides the table's header
                tqdm.write(f"{fw} {task} batch {batch}: {busy[0]}", file=sys.stderr)
                warned = True
        probes["after"] = numpy_peak(args)
    except KeyboardInterrupt:
        print(f"\ninterrupted: {len(records)} of {len(runs)} runs finished and written", file=sys.stderr)
        status = 130
    print(write_outputs(args, records, probes, plots=True))
    print(f"written to {args.out}")
    return status


if __name__ == "__main__":
    sys.exit(main())
