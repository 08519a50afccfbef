"""Time to quality (`python bench/run.py --task converge`): each framework trains Text2Mel from
the same initial weights on the same data order, and every `--eval-every` steps synthesizes the
held-out sentences of an espeak-ng corpus (common.quality.evaluate: MCD-DTW against espeak-ng's
own rendering, alignment; overall and per length band); a run stops when the target is first met
or the budget is spent.
As MLPerf Training does, the training clock excludes the evaluations (their time is reported
apart). Step 0 is the untrained network, measured like every later point; the mean-spectrum
baseline is measured on the same sentences.

Each framework runs in its own process (`python -m bench.converge --framework ...`), one after
the other with the same threads; each writes its curve as JSON lines while it runs, so an
interrupted benchmark keeps what it measured. Outputs in --out: <fw>/curve.jsonl, <fw>/run/
(checkpoints, losses, plots: an ordinary dctts-train run directory), converge.json, table.md,
curves.png.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import variants
from bench.machine import REPO, apply_threads, commit_line, described, machine, subprocess_env

# Targets [ours], set before the committed run from a pilot (2026-12-02, demo preset, the default
# corpus, the three frameworks side by side: torch aligned 95% of the held-out sentences at 2,720
# steps with MCD-DTW 5.46 dB; mean spectrum 5.97, untrained 6.38): alignment on at least 90% of the
# held-out sentences and a held-out MCD-DTW at most this many dB.
TARGET_ALIGNED = 0.9
TARGET_MCD = 5.5
# The corpus built when --data is not given (common.corpus): 3,000 sentences; for a preset that reads
# LJSpeech's lengths (max_chars >= 188: speak) the prose source at every length, else sentences of up to
# 60 characters of the older grammar (source generated), the corpus of every committed converge result.
CORPUS_N, CORPUS_MAX_CHARS = 3000, 60


def met(point: dict, target_aligned: float, target_mcd: float) -> bool:
    return point["aligned_rate"] >= target_aligned and point["mcd_mean"] <= target_mcd


# --- one training run with held-out evaluations -------------------------------------------
def spread(items: list, n: int) -> list:
    """n of `items` evenly spaced from the first (all when n >= len(items)), in their order."""
    if n >= len(items):
        return list(items)
    return [items[i * len(items) // n] for i in range(n)]


class Evaluations:
    """Held-out evaluations of one Text2Mel training run: common.quality.evaluate on `sentences`
    of the corpus's heldout.csv (evenly spaced over the file, which lists the prose source's
    length bands one after the other, so every band keeps its share), with the mean-spectrum
    baseline, each point appended
    to `curve` (JSON lines) as it is made; used by each converge worker and by each trial of the
    tune task (bench/tune.py). Its clock keeps training time apart from evaluation time."""

    def __init__(self, framework: str, data_dir, spec, sentences: int, curve: Path):
        from common import data, quality

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

        from common import quality

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
        """common.train_loop.train in run_dir up to `steps`, evaluating every `eval_every` steps and
        at the last; `stop(point)` true ends the run at that point (a checkpoint is saved there).
        Checkpoints every `checkpoint_every` steps (default: at the end only). train_loop's Result."""
        from common import train_loop

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
    curve = out / "curve.jsonl"
    spec = variant_spec(args.preset, args.variant)
    evaluations = Evaluations(args.framework, args.data, spec, args.sentences, curve)
    done = read_curve(curve) if args.resume else []
    if done and met(done[-1], args.target_aligned, args.target_mcd):
        print(f"{args.framework}: met the target at step {done[-1]['step']} already", flush=True)
        return
    if done:  # the training loop resumes from the run's last checkpoint, bit-identically
        evaluations.resume_from(done[-1])
    else:
        curve.unlink(missing_ok=True)
        untrained = load_backend(args.framework)(spec, "text2mel", seed=args.seed)
        evaluations.clock["start"] = time.perf_counter()  # step 0's train_seconds: ~0
        evaluations.evaluate(0, untrained)

    def stop(point) -> bool:
        out_of_time = args.minutes and point["train_seconds"] >= args.minutes * 60
        return met(point, args.target_aligned, args.target_mcd) or out_of_time

    evaluations.train(out / "run", args.steps, args.eval_every, args.seed, args.threads, bool(done), stop)


# --- the orchestration ------------------------------------------------------------------
def default_corpus(out_root: Path, preset: str) -> Path:
    """The corpus to converge on for `preset` (CORPUS_N): built once (common.corpus) under out/, then reused."""
    from common import corpus
    from common.data import LJ_MAX_CHARS
    from common.spec import get_spec

    if get_spec(preset).max_chars > LJ_MAX_CHARS:
        path, source, max_chars = out_root / f"converge-corpus-{CORPUS_N}-prose", "prose", None
    else:
        path, source, max_chars = out_root / f"converge-corpus-{CORPUS_N}-{CORPUS_MAX_CHARS}", "generated", CORPUS_MAX_CHARS
    if not (path / "heldout.csv").is_file():
        corpus.build_corpus(path, CORPUS_N, max_chars=max_chars, source=source)
    return path


def summarize(curves: dict, target_aligned: float, target_mcd: float) -> dict:
    """Per framework: the first point that met the target (steps, training seconds), the last
    point's metrics, and the ratio of its time to the fastest framework's."""
    rows = {}
    for fw, points in curves.items():
        if not points:
            continue
        hit = next((p for p in points if met(p, target_aligned, target_mcd)), None)
        rows[fw] = {"target_step": hit and hit["step"], "target_seconds": hit and hit["train_seconds"],
                    "final": points[-1], "untrained": points[0]}
    reached = [r["target_seconds"] for r in rows.values() if r["target_seconds"] is not None]
    for r in rows.values():
        r["ratio_to_fastest"] = r["target_seconds"] / min(reached) if r["target_seconds"] is not None else None
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
        "", "| framework | steps to target | training time to target | ratio | final step | s/step | final MCD-DTW (dB) | "
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
        from common.quality import bands_table  # here: the worker must set its threads before numpy loads

        lines += ["", "Per length band (characters read) at each framework's last evaluation (the target's when met: "
                  "a run stops there):", "", bands_table(finals).rstrip("\n")]
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


def read_curve(path: Path) -> list:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def run(args) -> int:
    """`bench/run.py --task converge`: every framework in turn, then the table and the plot; with
    several --variant, that for each variant in <out>/<variant>, then variants-quality.md."""
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
    info = machine(args.device)
    header = [f"machine: {described(info)}; {commit_line(info, args.allow_dirty)}",
              f"data: {data_dir} (held-out sentences: {args.sentences} of heldout.csv, evenly spaced)",
              f"same initial weights (seed {args.seed}) and data order in every framework; {args.threads} threads",
              f"evaluation every {args.eval_every} steps (step 0 = untrained); training time excludes evaluations",
              f"target: aligned >= {args.target_aligned:.0%} and MCD-DTW <= {args.target_mcd} dB (c1..c13, DTW, "
              "reduced mels); budget " + (f"{args.minutes} min or " if args.minutes else "") + f"{args.max_steps} steps"]
    if variant != variants.BASELINE:
        header.append(f"variant {variant}: the preset with {variants.changes(variant)}")
    if args.parallel:
        header.append(f"PARALLEL: the {len(args.framework)} frameworks trained side by side, {args.threads} thread(s) "
                      f"each, on {os.cpu_count()} cores: they shared the machine alike until one stopped; "
                      "after that the others ran faster (compare steps, not minutes, after the first stop)")
    if args.resume:
        header.append("RESUMED: each framework continued from its curve and last checkpoint (training bit-identical "
                      "to an uninterrupted run; the machine's load may differ between the parts)")
    env = subprocess_env(args.threads, args.device)
    procs, status = {}, 0
    try:
        for fw in args.framework:
            cmd = [sys.executable, "-m", "bench.converge", "--framework", fw, "--preset", preset, "--data",
                   str(data_dir), "--out", str(out / fw), "--steps", str(args.max_steps), "--eval-every",
                   str(args.eval_every), "--sentences", str(args.sentences), "--threads", str(args.threads),
                   "--seed", str(args.seed), "--target-aligned", str(args.target_aligned), "--target-mcd",
                   str(args.target_mcd), "--minutes", str(args.minutes or 0), "--variant", variant] + (
                ["--resume"] if args.resume else [])
            print(f"converge: {fw} ...", flush=True)
            procs[fw] = subprocess.Popen(cmd, cwd=REPO, env=env)
            if not args.parallel:
                procs[fw].wait()
        for fw, proc in procs.items():
            if proc.wait() != 0:
                print(f"converge: {fw} exited with {proc.returncode}", file=sys.stderr)
                status = status or 1
    except KeyboardInterrupt:
        print("interrupted: writing what was measured", file=sys.stderr)
        for proc in procs.values():
            proc.wait()
        status = 130
    from common.framework import FRAMEWORKS  # here: the worker must set its threads before numpy loads

    names = [fw for fw in FRAMEWORKS if fw in procs or (args.resume and (out / fw / "curve.jsonl").is_file())]
    curves = {fw: read_curve(out / fw / "curve.jsonl") for fw in names}
    rows, agree = summarize(curves, args.target_aligned, args.target_mcd), agreement(curves)
    meta = {"preset": variants.variant_name(preset, variant), "header": header, "machine": info,
            "options": {k: str(v) for k, v in vars(args).items()}}
    (out / "converge.json").write_text(json.dumps({"meta": meta, "summary": rows, "agreement": agree, "curves": curves},
                                                  indent=1))
    table = markdown(meta, rows, agree)
    (out / "table.md").write_text(table)
    plot(out / "curves.png", curves)
    print(table)
    print(f"written to {out}")
    return status


def parse_worker_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.converge", description="one framework of the converge task")
    p.add_argument("--framework", required=True)
    p.add_argument("--preset", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--eval-every", type=int, required=True)
    p.add_argument("--sentences", type=int, required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--target-aligned", type=float, default=TARGET_ALIGNED)
    p.add_argument("--target-mcd", type=float, default=TARGET_MCD)
    p.add_argument("--minutes", type=float, default=0)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--variant", default="baseline", help="a bench.variants name: the preset's changes")
    return p.parse_args(argv)


if __name__ == "__main__":
    worker(parse_worker_args())
