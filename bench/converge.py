"""Time to quality (`python bench/run.py --task converge`): each framework trains Text2Mel from
the same initial weights on the same data order, and every `--eval-every` steps synthesizes the
held-out sentences of an espeak-ng corpus (common.evaluation.quality.evaluate: MCD-DTW against espeak-ng's
own rendering, alignment; overall and per length band); a run stops when the target is reached
(met at an evaluation and again at the next) or the budget is spent. With several `--seeds`, every
framework trains once per seed (the seed sets the initial weights and the data order alike in all
three), and `seeds.md` gives steps and minutes to target over the seeds with a permutation test.
As MLPerf Training does, the training clock excludes the evaluations (their time is reported
apart). Step 0 is the untrained network, measured like every later point; the mean-spectrum
baseline is measured on the same sentences. Minutes to target are steps to target x seconds per
step measured apart (`--time-steps`), alone and interleaved, since trainings run side by side
(`--jobs`) share the machine.

Each training runs in its own process (`python -m bench.converge --framework ...`), `--jobs` of them
at a time, each pinned to its own cores; each writes its curve as JSON lines while it runs, so an
interrupted benchmark keeps what it measured. Outputs in --out (in --out/seed<k> with several
seeds): <fw>/curve.jsonl, <fw>/run/ (checkpoints, losses, plots: an ordinary dctts-train run
directory), converge.json, table.md, curves.png; with several seeds also seeds.json, seeds.md,
seeds.png; timing/ (the step timings).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import variants
from bench.machine import REPO, apply_threads, commit_line, described, file_commit, machine, subprocess_env

TARGETS = Path(__file__).with_name("targets.json")
MIN_GAIN_DB = 1.0  # a committed target lies at least this far below the mean spectrum (one run's noise: ~1 dB)
# The corpus built when --data is not given (common.data.corpus): 3,000 sentences; for a preset that reads
# LJSpeech's lengths (max_chars >= 188: speak) the prose source at every length, else sentences of up to
# 60 characters of the older grammar (source generated), the corpus of every committed converge result.
CORPUS_N, CORPUS_MAX_CHARS = 3000, 60


@dataclass(frozen=True)
class Target:
    """Met at an evaluation: at least `aligned` of the sentences aligned and MCD-DTW at least `gain_db`
    below the mean spectrum's. `source` says where it was fixed (a table cites it)."""
    aligned: float
    gain_db: float
    source: str

    def __str__(self) -> str:
        return (f"aligned >= {self.aligned:.0%} and MCD-DTW >= {self.gain_db:g} dB below the mean spectrum's "
                f"(c1..c13, DTW, reduced mels), met at an evaluation and again at the next; {self.source}")


def load_target(preset: str, aligned: float | None = None, gain_db: float | None = None,
                path: Path = TARGETS) -> Target:
    """The committed target of `preset` (its base name: variants share it), each part replaceable
    from the command line (the source then says so). Raises SystemExit with one line when the
    preset has none, or when a committed one lies less than MIN_GAIN_DB below the mean spectrum."""
    targets = json.loads(path.read_text())
    committed = targets.get(preset.split("+")[0])
    if committed and committed["gain_db"] < MIN_GAIN_DB:
        raise SystemExit(f"{path.name}: the {preset} target is {committed['gain_db']} dB below the mean spectrum; "
                         f"at least {MIN_GAIN_DB} is required")
    if aligned is not None and gain_db is not None:
        return Target(aligned, gain_db, "target from the command line, not a committed one")
    if committed is None:
        raise SystemExit(f"no time-to-quality target for preset {preset} in {path}: add one there (and commit it "
                         "before the runs), or give --target-aligned and --target-gain")
    source = f"fixed in bench/{path.name} at {file_commit(path)}"
    if aligned is not None or gain_db is not None:
        source += ", changed on the command line"
    return Target(committed["aligned"] if aligned is None else aligned,
                  committed["gain_db"] if gain_db is None else gain_db, source)


def met(point: dict, target: Target) -> bool:
    """mcd_gain: common.evaluation.quality's dB by which the held-out MCD-DTW lies below the mean spectrum's."""
    return point["aligned_rate"] >= target.aligned and point["mcd_gain"] >= target.gain_db


def reached(points: list, target: Target) -> int | None:
    """Index of the first point that meets the target when the next one meets it too: one noisy
    evaluation that dips below the target does not count."""
    return next((i for i in range(len(points) - 1) if met(points[i], target) and met(points[i + 1], target)), None)


# --- one training run with held-out evaluations -------------------------------------------
def spread(items: list, n: int) -> list:
    """n of `items` evenly spaced from the first (all when n >= len(items)), in their order."""
    if n >= len(items):
        return list(items)
    return [items[i * len(items) // n] for i in range(n)]


class Evaluations:
    """Held-out evaluations of one Text2Mel training run: common.evaluation.quality.evaluate on `sentences`
    of the corpus's heldout.csv (evenly spaced over the file, which lists the prose source's
    length bands one after the other, so every band keeps its share), with the mean-spectrum
    baseline, each point appended
    to `curve` (JSON lines) as it is made; used by each converge worker and by each trial of the
    tune task (bench/tune.py). Its clock keeps training time apart from evaluation time."""

    def __init__(self, framework: str, data_dir, spec, sentences: int, curve: Path):
        from common.data import dataset as data
        from common.evaluation import quality

        self.framework, self.data_dir, self.spec, self.curve = framework, data_dir, spec, curve
        self.refs = spread(quality.heldout_references(data_dir, spec), sentences)
        corpus = data.load_corpus(data_dir, spec, progress=False)
        self.mean = quality.mean_frame(ref.mel for ref in quality.references(corpus))
        # train / eval seconds: this process's since "start", plus those of the run it resumes
        self.clock = {"start": time.perf_counter(), "eval": 0.0, "loss": [], "trained_before": 0.0,
                      "evaluated_before": 0.0}

    def resume_from(self, point: dict) -> None:
        """Count the seconds of the run being resumed, up to its last point."""
        self.clock["trained_before"], self.clock["evaluated_before"] = point["train_seconds"], point["eval_seconds"]

    def evaluate(self, step: int, backend) -> dict:
        import numpy as np

        from common.evaluation import quality

        clock = self.clock
        t = time.perf_counter()
        result = quality.evaluate(backend, self.refs, self.spec, mean_spectrum=self.mean)
        clock["eval"] += time.perf_counter() - t
        losses = clock["loss"]
        point = {"step": step,
                 "train_seconds": clock["trained_before"] + time.perf_counter() - clock["start"] - clock["eval"],
                 "eval_seconds": clock["evaluated_before"] + clock["eval"],
                 "loss": float(np.mean(losses)) if losses else None,
                 **{k: v for k, v in result.items() if k not in ("rows", "seconds")}}
        clock["loss"] = []
        with open(self.curve, "a") as f:
            f.write(json.dumps(point) + "\n")
        print(f"{self.framework} step {step}: MCD {point['mcd_mean']:.2f} dB (mean spectrum "
              f"{point['mcd_mean_spectrum_mean']:.2f}), aligned {point['aligned_rate']:.0%}, forced "
              f"{point['forced_fraction_mean']:.0%}, train {point['train_seconds']:.0f} s", flush=True)
        return point

    def train(self, run_dir: Path, steps: int, eval_every: int, seed: int, threads: int, resume: bool, stop,
              checkpoint_every: int | None = None):
        """common.training.train_loop.train in run_dir up to `steps`, evaluating every `eval_every` steps and
        at the last; `stop(point)` true ends the run at that point (a checkpoint is saved there).
        Checkpoints every `checkpoint_every` steps (default: at the end only). train_loop's Result."""
        from common.training import train_loop

        clock = self.clock

        def after_step(step, backend, losses) -> bool:
            clock["loss"].append(losses["loss"])
            if step % eval_every and step < steps:
                return False
            return bool(stop(self.evaluate(step, backend)))

        clock["start"], clock["eval"] = time.perf_counter(), 0.0  # an untrained point before costs no training time
        return train_loop.train(self.framework, "text2mel", self.data_dir, run_dir, self.spec, steps=steps,
                                checkpoint_every=checkpoint_every or steps, seed=seed, resume=resume,
                                progress=False, threads=threads, after_step=after_step)


# --- one framework (its own process) ------------------------------------------------
def worker(args) -> None:
    """Train one framework with evaluations; append each evaluation to <out>/curve.jsonl (its
    figures overall and per band, quality.evaluate's result without the per-sentence rows)."""
    apply_threads(args.threads)
    from bench.variants import variant_spec
    from common.framework import load_backend

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    spec = variant_spec(args.preset, args.variant)
    if args.time_steps:
        return time_steps(args, spec, out)
    curve = out / "curve.jsonl"
    target = Target(args.target_aligned, args.target_gain, "")
    evaluations = Evaluations(args.framework, args.data, spec, args.sentences, curve)
    done = read_curve(curve) if args.resume else []
    resumed = bool(done)
    if reached(done, target) is not None:
        print(f"{args.framework}: reached the target by step {done[-1]['step']} already", flush=True)
        return
    if done:  # the training loop resumes from the run's last checkpoint, bit-identically
        evaluations.resume_from(done[-1])
    else:
        curve.unlink(missing_ok=True)
        untrained = load_backend(args.framework)(spec, "text2mel", seed=args.seed)
        evaluations.clock["start"] = time.perf_counter()  # step 0's train_seconds: ~0
        done.append(evaluations.evaluate(0, untrained))

    def stop(point) -> bool:
        out_of_time = args.minutes and point["train_seconds"] >= args.minutes * 60
        done.append(point)
        return reached(done[-2:], target) is not None or bool(out_of_time)

    evaluations.train(out / "run", args.steps, args.eval_every, args.seed, args.threads, resumed, stop)


def time_steps(args, spec, out: Path) -> None:
    """Seconds per training step of this framework alone: `--time-steps` steps of the run's data
    order from its initial weights, the first tenth (at least one: the first call) uncounted;
    written to <out>/steps.json."""
    from common.training import train_loop

    stamps = []

    def after_step(step, backend, losses) -> bool:
        stamps.append(time.perf_counter())
        return False

    with tempfile.TemporaryDirectory() as run_dir:
        train_loop.train(args.framework, "text2mel", args.data, Path(run_dir), spec, steps=args.time_steps,
                         checkpoint_every=args.time_steps, seed=args.seed, progress=False, threads=args.threads,
                         after_step=after_step)
    skip = max(1, args.time_steps // 10)
    counted = len(stamps) - skip
    seconds = (stamps[-1] - stamps[skip - 1]) / counted
    (out / "steps.json").write_text(json.dumps({"framework": args.framework, "steps": counted, "uncounted": skip,
                                                "seconds_per_step": seconds}))
    print(f"{args.framework}: {seconds:.3f} s/step over {counted} steps", flush=True)


# --- the orchestration ------------------------------------------------------------------
def default_corpus(out_root: Path, preset: str) -> Path:
    """The corpus to converge on for `preset` (CORPUS_N): built once (common.data.corpus) under out/, then reused."""
    from common.data import corpus
    from common.data.dataset import LJ_MAX_CHARS
    from common.contract.spec import get_spec

    if get_spec(preset).max_chars > LJ_MAX_CHARS:
        path, source, max_chars = out_root / f"converge-corpus-{CORPUS_N}-prose", "prose", None
    else:
        path, source, max_chars = out_root / f"converge-corpus-{CORPUS_N}-{CORPUS_MAX_CHARS}", "generated", CORPUS_MAX_CHARS
    if not (path / "heldout.csv").is_file():
        corpus.build_corpus(path, CORPUS_N, max_chars=max_chars, source=source)
    return path


def summarize(curves: dict, target: Target) -> dict:
    """Per framework: the point where the target was reached (steps, training seconds as run),
    the last point's metrics, and the ratio of its time to the fastest framework's."""
    rows = {}
    for fw, points in curves.items():
        if not points:
            continue
        i = reached(points, target)
        hit = None if i is None else points[i]
        rows[fw] = {"target_step": hit and hit["step"], "target_seconds": hit and hit["train_seconds"],
                    "at_target": hit, "final": points[-1], "untrained": points[0]}
    times = [r["target_seconds"] for r in rows.values() if r["target_seconds"] is not None]
    for r in rows.values():
        r["ratio_to_fastest"] = r["target_seconds"] / min(times) if r["target_seconds"] is not None else None
    return rows


def agreement(curves: dict) -> dict | None:
    """How far apart the frameworks' held-out MCD-DTW lie at the steps all of them evaluated
    (after step 0): per step the spread (max - min) / min; its median and largest over those
    steps. None with fewer than two frameworks or no common trained step."""
    if len([p for p in curves.values() if p]) < 2:
        return None
    by_step = [{p["step"]: p["mcd_mean"] for p in points} for points in curves.values()]
    steps = sorted(set.intersection(*(set(s) for s in by_step)) - {0})
    if not steps:
        return None
    spread = [(max(s[k] for s in by_step) - min(s[k] for s in by_step)) / min(s[k] for s in by_step) for k in steps]
    worst = max(range(len(steps)), key=spread.__getitem__)
    return {"steps": steps, "spread": spread, "median": statistics.median(spread),
            "max": spread[worst], "max_step": steps[worst]}


def markdown(meta: dict, rows: dict, agree: dict | None = None) -> str:
    def num(v, fmt):
        return "—" if v is None else format(v, fmt)

    lines = [f"# Time to quality: Text2Mel, preset {meta['preset']}", ""] + [f"- {h}" for h in meta["header"]] + [
        "", "| framework | steps to target | training time to target (as run) | ratio | final step | s/step (as run) | final MCD-DTW (dB) | "
        "aligned | forced | duration ratio | untrained MCD | mean-spectrum MCD |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for fw, r in rows.items():
        f, u = r["final"], r["untrained"]
        minutes = r["target_seconds"] and f"{r['target_seconds'] / 60:.1f} min"
        lines.append(f"| {fw} | {num(r['target_step'], 'd')} | {minutes or '—'} "
                     f"| {num(r['ratio_to_fastest'], '.2f')}× | {f['step']} | {f['train_seconds'] / max(f['step'], 1):.2f} "
                     f"| {f['mcd_mean']:.2f} | {f['aligned_rate']:.0%} "
                     f"| {f['forced_fraction_mean']:.0%} | {f['duration_ratio_mean']:.2f} | {u['mcd_mean']:.2f} "
                     f"| {f['mcd_mean_spectrum_mean']:.2f} |")
    # curves written before 2026-12-07 have no bands
    finals = {f"{fw} (step {r['final']['step']})": r["final"] for fw, r in rows.items() if "bands" in r["final"]}
    if finals:
        from common.evaluation.quality import bands_table  # here: the worker must set its threads before numpy loads

        lines += ["", "Per length band (characters read) at each framework's last evaluation (the one after the "
                  "target's when it was reached: a run stops there):", "", bands_table(finals).rstrip("\n")]
    if agree:
        lines += ["", f"Held-out MCD-DTW at equal steps ({len(agree['steps'])} evaluations that every framework made): "
                  f"spread (max - min) / min median {agree['median']:.1%}, largest {agree['max']:.1%} at step "
                  f"{agree['max_step']}."]
    return "\n".join(lines) + "\n"


def plot(path: Path, curves: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    panels = [("step", "loss", "training loss (mean since the last evaluation)"),
              ("step", "mcd_mean", "held-out MCD-DTW (dB)"),
              ("train_seconds", "mcd_mean", "held-out MCD-DTW (dB) vs training time (s)"),
              ("step", "aligned_rate", "held-out sentences aligned")]
    for ax, (x, y, title) in zip(axes.ravel(), panels):
        for fw, points in curves.items():
            pts = [p for p in points if p.get(y) is not None]
            ax.plot([p[x] for p in pts], [p[y] for p in pts], marker="o", markersize=3, label=fw)
        if y == "mcd_mean" and any(curves.values()):
            base = next(iter(p for pts in curves.values() for p in pts))["mcd_mean_spectrum_mean"]
            ax.axhline(base, color="gray", linestyle=":", label="mean spectrum")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("training seconds" if x == "train_seconds" else "step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args) -> int:
    """`bench/run.py --task converge`: every (seed, framework) training, --jobs at a time, the step
    timing, then per seed the table and the plot and over the seeds seeds.md; with several
    --variant, that for each variant in <out>/<variant>, then variants-quality.md."""
    if len(args.variant) > 1:
        status, finals = 0, {}
        for variant in args.variant:
            one = argparse.Namespace(**{**vars(args), "variant": [variant], "out": args.out / variant})
            status = run(one) or status
            finals[variant] = json.loads((one.out / "converge.json").read_text())["summary"]
        table = variants.quality_table(finals, args.preset, args.variant)
        (args.out / "variants-quality.md").write_text(table)
        print(table)
        return status
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    data_dir = Path(args.data) if args.data else default_corpus(REPO / "out", args.preset)
    preset, variant = args.preset, args.variant[0]
    target = load_target(preset, args.target_aligned, args.target_gain)
    info = machine(args.device)
    header = [f"machine: {described(info)}; {commit_line(info, args.allow_dirty)}",
              f"data: {data_dir} (held-out sentences: {args.sentences} of heldout.csv, evenly spaced)",
              f"seeds {', '.join(map(str, args.seeds))}: each sets the initial weights and the data order, alike in "
              f"every framework; {args.threads} thread(s) per training",
              f"evaluation every {args.eval_every} steps (step 0 = untrained); training time excludes evaluations",
              f"target: {target}",
              "budget " + (f"{args.minutes} min or " if args.minutes else "") + f"{args.max_steps} steps per training"]
    if variant != variants.BASELINE:
        header.append(f"variant {variant}: the preset with {variants.changes(variant)}")
    if args.jobs > 1:
        header.append(f"SIDE BY SIDE: up to {args.jobs} trainings at once on {os.cpu_count()} cores, each pinned to "
                      "its own cores when there are enough: steps to target do not depend on it, training seconds "
                      "as run do (minutes to target come from the step timing, measured alone)")
    if args.resume:
        header.append("RESUMED: each training continued from its curve and last checkpoint (bit-identical to an "
                      "uninterrupted run; the machine's load may differ between the parts)")
    dirs = {seed: out if len(args.seeds) == 1 else out / f"seed{seed}" for seed in args.seeds}
    env = subprocess_env(args.threads, args.device)
    jobs = [(f"{fw} seed {seed}", worker_command(args, fw, seed, data_dir, target, dirs[seed] / fw))
            for seed in args.seeds for fw in args.framework]
    status = launch(jobs, args.jobs, args.threads, env)
    timing = None
    if args.time_steps and status != 130:
        timing = step_timing(args, data_dir, target, env, out / "timing")
    from common.framework import FRAMEWORKS  # here: the worker must set its threads before numpy loads

    curves = {}
    for seed, seed_dir in dirs.items():
        names = [fw for fw in FRAMEWORKS if fw in args.framework or (args.resume and (seed_dir / fw / "curve.jsonl").is_file())]
        curves[seed] = {fw: read_curve(seed_dir / fw / "curve.jsonl") for fw in names}
        rows, agree = summarize(curves[seed], target), agreement(curves[seed])
        meta = {"preset": variants.variant_name(preset, variant), "header": header + [f"this table: seed {seed}"],
                "machine": info, "options": {k: str(v) for k, v in vars(args).items()}}
        (seed_dir / "converge.json").write_text(json.dumps({"meta": meta, "summary": rows, "agreement": agree,
                                                            "curves": curves[seed]}, indent=1))
        (seed_dir / "table.md").write_text(markdown(meta, rows, agree))
        plot(seed_dir / "curves.png", curves[seed])
    rows = over_seeds(curves, target, timing)
    p = differ_beyond_seeds(rows)
    meta = {"preset": variants.variant_name(preset, variant), "header": header, "machine": info,
            "options": {k: str(v) for k, v in vars(args).items()}, "target": vars(target), "timing": timing}
    (out / "seeds.json").write_text(json.dumps({"meta": meta, "rows": rows, "p_value": p}, indent=1))
    table = seeds_markdown(meta, rows, p, timing, args)
    (out / "seeds.md").write_text(table)
    seeds_plot(out / "seeds.png", curves, target)
    print(table)
    print(f"written to {out}")
    return status


def worker_command(args, framework: str, seed: int, data_dir: Path, target: Target, out: Path) -> list:
    return [sys.executable, "-m", "bench.converge", "--framework", framework, "--preset", args.preset, "--data",
            str(data_dir), "--out", str(out), "--steps", str(args.max_steps), "--eval-every", str(args.eval_every),
            "--sentences", str(args.sentences), "--threads", str(args.threads), "--seed", str(seed),
            "--target-aligned", str(target.aligned), "--target-gain", str(target.gain_db), "--minutes",
            str(args.minutes or 0), "--variant", args.variant[0]] + (["--resume"] if args.resume else [])


def launch(jobs: list, at_once: int, threads: int, env: dict) -> int:
    """Run the (name, command) jobs, at most `at_once` at a time, each pinned to its own `threads`
    cores when the machine has enough. 0; 1 when one failed; 130 on Ctrl-C (after the running
    ones stopped: each saves a checkpoint, and --resume continues them)."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    pinned = at_once > 1 and len(cores) >= at_once * threads
    pending, running, status = list(jobs), {}, 0
    try:
        while pending or running:
            for slot in range(at_once):
                if slot not in running and pending:
                    name, cmd = pending.pop(0)
                    own = set(cores[slot * threads:(slot + 1) * threads]) if pinned else None
                    print(f"converge: {name} ..." + (f" (cores {sorted(own)})" if own else ""), flush=True)
                    running[slot] = (name, subprocess.Popen(cmd, cwd=REPO, env=env, preexec_fn=own and (
                        lambda own=own: os.sched_setaffinity(0, own))))
            for slot, (name, proc) in list(running.items()):
                if proc.poll() is not None:
                    del running[slot]
                    if proc.returncode:
                        print(f"converge: {name} exited with {proc.returncode}", file=sys.stderr)
                        status = 1
            time.sleep(0.2)
    except KeyboardInterrupt:
        print("interrupted: writing what was measured", file=sys.stderr)
        for _, proc in running.values():
            proc.wait()
        return 130
    return status


def step_timing(args, data_dir: Path, target: Target, env: dict, out: Path) -> dict:
    """Per framework: seconds per training step measured alone, `--repeat` rounds of
    `--time-steps` steps, the frameworks interleaved (odd rounds in reverse order); the median
    over the rounds. A round already measured in `out` (an interrupted run) is kept."""
    rounds = {fw: [] for fw in args.framework}
    for rnd in range(args.repeat):
        for fw in args.framework if rnd % 2 == 0 else args.framework[::-1]:
            where = out / f"{fw}-round{rnd}"
            if not (where / "steps.json").is_file():
                cmd = worker_command(args, fw, args.seeds[0], data_dir, target, where)
                subprocess.run(cmd + ["--time-steps", str(args.time_steps)], cwd=REPO, env=env, check=True)
            rounds[fw].append(json.loads((where / "steps.json").read_text())["seconds_per_step"])
    return {fw: {"median": statistics.median(v), "rounds": v} for fw, v in rounds.items()}


def over_seeds(curves: dict, target: Target, timing: dict | None) -> dict:
    """Per framework, over the seeds (`curves`: seed -> framework -> points): each run's steps to
    target (None: not reached) and its minutes (steps x the framework's s/step alone); the mean,
    without the fastest and the slowest run when five or more reached it (MLPerf's rule), and
    the min-max of those that reached it."""
    rows = {}
    frameworks = list(dict.fromkeys(fw for by_fw in curves.values() for fw in by_fw))
    for fw in frameworks:
        sps = timing[fw]["median"] if timing and fw in timing else None
        runs = []
        for seed, by_fw in curves.items():
            points = by_fw.get(fw)
            if not points:
                continue
            i = reached(points, target)
            runs.append({"seed": seed, "steps": None if i is None else points[i]["step"],
                         "minutes": None if i is None or sps is None else points[i]["step"] * sps / 60,
                         "at_target": None if i is None else points[i], "last_step": points[-1]["step"]})
        hits = sorted((r for r in runs if r["steps"] is not None), key=lambda r: r["steps"])
        counted = hits[1:-1] if len(hits) >= 5 else hits
        row = {"runs": runs, "reached": len(hits), "trimmed": len(hits) >= 5, "seconds_per_step": sps}
        for key in ("steps", "minutes"):
            values = [r[key] for r in hits if r[key] is not None]
            row[key] = values and {"mean": statistics.mean(r[key] for r in counted), "min": min(values),
                                   "max": max(values)} or None
        rows[fw] = row
    return rows


def differ_beyond_seeds(rows: dict) -> float | None:
    """p-value of a permutation test of "the frameworks' steps to target are draws of one seed
    spread" (Kruskal-Wallis' H as the statistic, exact over all relabelings when there are
    fewer than 10,000, else 9,999 random ones). A run that did not reach the target ranks after
    every run that did. None with fewer than two frameworks or a framework without runs."""
    import numpy as np
    from scipy import stats

    groups = [[r["steps"] if r["steps"] is not None else float("inf") for r in row["runs"]] for row in rows.values()]
    if len(groups) < 2 or not all(groups):
        return None
    ranks = stats.rankdata([v for g in groups for v in g])
    if len(set(ranks)) == 1:
        return 1.0
    split = np.split(ranks, np.cumsum([len(g) for g in groups])[:-1])
    result = stats.permutation_test(split, lambda *g: stats.kruskal(*g).statistic, permutation_type="independent",
                                    alternative="greater", n_resamples=9999, random_state=0)
    return float(result.pvalue)


def seeds_markdown(meta: dict, rows: dict, p: float | None, timing: dict | None, args) -> str:
    def span(stat, fmt):
        return "—" if not stat else f"{stat['mean']:{fmt}} [{stat['min']:{fmt}}–{stat['max']:{fmt}}]"

    lines = [f"# Time to quality over seeds: Text2Mel, preset {meta['preset']}", ""] + [
        f"- {h}" for h in meta["header"]]
    if timing:
        lines.append(f"- s/step: each framework alone, {args.time_steps} steps of seed {args.seeds[0]}'s data order "
                     f"(the first tenth uncounted), {args.repeat} round(s) interleaved, the median")
    lines += ["", "| framework | seeds that reached the target | steps to target: mean [min–max] | minutes to target: "
              "mean [min–max] | s/step alone | MCD-DTW gain at target (mean) | aligned at target (mean) |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for fw, row in rows.items():
        hits = [r["at_target"] for r in row["runs"] if r["at_target"]]
        gain_mean = hits and f"{statistics.mean(h['mcd_gain'] for h in hits):+.2f} dB"
        aligned_mean = hits and f"{statistics.mean(h['aligned_rate'] for h in hits):.0%}"
        sps = row["seconds_per_step"]
        lines.append(f"| {fw} | {row['reached']} of {len(row['runs'])} | {span(row['steps'], ',.0f')} | "
                     f"{span(row['minutes'], '.1f')} | {'—' if sps is None else format(sps, '.3f')} | "
                     f"{gain_mean or '—'} | {aligned_mean or '—'} |")
    lines += ["", "Steps to target per seed (—: not reached within the budget; the run's last step in brackets):", ""]
    for fw, row in rows.items():
        lines.append(f"- {fw}: " + ", ".join(f"seed {r['seed']}: " + (f"{r['steps']:,}" if r["steps"] is not None
                                                                     else f"— ({r['last_step']:,})") for r in row["runs"]))
    if any(row["trimmed"] for row in rows.values()):
        lines.append("- means without the fastest and the slowest run (five or more reached the target)")
    if p is not None:
        verdict = "differ beyond" if p < 0.05 else "do not differ beyond"
        lines += ["", f"Steps to target: the frameworks {verdict} the spread of the seeds (permutation test, "
                  f"Kruskal-Wallis H over the runs' ranks, p = {p:.3f}; 0.05 the threshold). Minutes to target "
                  "are steps x each framework's s/step: with equal steps they rank as the s/step column does."]
    return "\n".join(lines) + "\n"


def seeds_plot(path: Path, curves: dict, target: Target) -> None:
    """Held-out gain over the mean spectrum and aligned fraction against steps: per framework each
    seed's curve (thin) and the band between the seeds' lowest and highest at the steps all of
    them evaluated; the target dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frameworks = list(dict.fromkeys(fw for by_fw in curves.values() for fw in by_fw))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, (key, title, level) in zip(axes, [("mcd_gain", "held-out MCD-DTW gain over the mean spectrum (dB)",
                                               target.gain_db),
                                              ("aligned_rate", "held-out sentences aligned", target.aligned)]):
        for k, fw in enumerate(frameworks):
            color = f"C{k}"
            runs = [by_fw[fw] for by_fw in curves.values() if by_fw.get(fw)]
            for points in runs:
                ax.plot([p["step"] for p in points], [p[key] for p in points], color=color, alpha=0.35, linewidth=0.8)
            steps = sorted(set.intersection(*({p["step"] for p in points} for points in runs))) if runs else []
            values = [[next(p for p in points if p["step"] == s)[key] for points in runs] for s in steps]
            ax.fill_between(steps, [min(v) for v in values], [max(v) for v in values], color=color, alpha=0.2,
                            label=f"{fw} ({len(runs)} seeds)")
        ax.axhline(level, color="gray", linestyle="--", label="target")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def read_curve(path: Path) -> list:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def parse_worker_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.converge", description="one training of the converge task")
    p.add_argument("--framework", required=True)
    p.add_argument("--preset", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--eval-every", type=int, required=True)
    p.add_argument("--sentences", type=int, required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--target-aligned", type=float, required=True)
    p.add_argument("--target-gain", type=float, required=True)
    p.add_argument("--minutes", type=float, default=0)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--variant", default="baseline", help="a bench.variants name: the preset's changes")
    p.add_argument("--time-steps", type=int, default=0, help="time this many steps alone instead (steps.json)")
    return p.parse_args(argv)


if __name__ == "__main__":
    worker(parse_worker_args())
