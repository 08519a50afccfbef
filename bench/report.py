"""Results on disk: results.json (every raw record), results.csv and table.md (one row per
framework x tier of operators x task x batch size x timed shape, pooled over rounds), PNG plots. All derived numbers
are computed here from the raw per-step data, in one place.

Statistics never mix shapes: a training run cycles batches of different lengths, and step time is
not proportional to FLOPs across them (torch's `small` SSRN: 2.1x the time for 1.37x the FLOPs),
so each batch shape gets its own median, IQR, ratio to the fastest and fraction of peak (at the
median). A synthesis run speaks the same sentences in every framework: its statistic is the mean
step over them in each round (their summed time / steps), median and IQR over the rounds."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from bench import inputs, machine
from bench.parity import GATE_TOL, LOSS_TOL, cross_check
from common.contract.spec import get_spec
from common.framework import ordered_tiers

CSV_FIELDS = ("framework", "ops", "task", "preset", "batch_size", "shape", "status", "rounds", "steps", "median_s", "q1_s", "q3_s",
              "iqr_s", "ratio_to_fastest", "first_call_s", "warmup_median_s", "setup_s", "samples_per_s",
              "text2mel_sentences_per_s", "frames_per_s", "rtf", "rtf_with_vocoder", "peak_rss_mb", "gpu_memory_mb", "gpu_allocator_mb",
              "gflop_per_step",
              "achieved_gflops", "matmul_gflops", "machine_peak_gflops", "fraction_of_peak", "gate_max_rel_error",
              "reason")


def summarize(times) -> dict:
    """Median and interquartile range (numpy's linear-interpolation quartiles)."""
    q1, median, q3 = np.percentile(np.asarray(times, np.float64), [25, 50, 75])
    return {"median_s": float(median), "q1_s": float(q1), "q3_s": float(q3), "iqr_s": float(q3 - q1)}


def tier(record: dict) -> str:
    """The tier of operators a record ran (common.framework.OPS); records from before the tiers
    (2026-12-07) ran today's "tuned" code."""
    return record.get("ops", "tuned")


def _step_shape(step: dict) -> tuple | None:
    """A training step's (B, N, T) (bench.inputs.batch_shape); None for synthesis steps."""
    return tuple(step["shape"]) if step.get("shape") else None


def shape_label(shape) -> str | None:
    """A training batch's shape, (B, N, T) = (sentences, characters, reduced frames) of its padded
    arrays, as "N×T" (the batch size has its own column); None for synthesis."""
    return None if shape is None else f"{shape[1]}×{shape[2]}"


def _median(values):
    values = [v for v in values if v is not None]
    return float(np.median(values)) if values else None


def matmul_probes(records: list, probes: dict | None = None) -> dict:
    """Every fp32 matrix product measured in the run, name -> GFLOP/s: each framework's best
    (its workers') and `probes` ({"before": ..., "after": ...}: NumPy around the runs)."""
    found = {}
    for r in records:
        if r.get("status") == "ok" and r.get("peak"):
            found[r["framework"]] = max(found.get(r["framework"], 0.0), r["peak"]["gflops"])
    found.update({f"numpy {k}": v for k, v in (probes or {}).items() if v})
    return found


def machine_peak(records: list, probes: dict | None = None) -> float | None:
    """The run's ONE peak: the best of matmul_probes. Every framework's fraction of peak divides
    by it, not by its own matmul, a noisy and sometimes low denominator (docs/benchmark.md, "Why
    the first published % of peak was wrong")."""
    found = matmul_probes(records, probes)
    return max(found.values()) if found else None


def aggregate(records: list, probes: dict | None = None) -> list:
    """One row per (framework, tier, task, preset, batch size, shape), its counted steps pooled over
    rounds, rows in first-seen order, with ratio_to_fastest = median / the fastest ok median of its
    (tier, task, preset, batch size, shape) -- frameworks are compared within a tier -- and
    fraction_of_peak = achieved GFLOP/s (at the median) / machine_peak(records, probes)."""
    groups = {}
    for rec in records:
        key = (rec["framework"], tier(rec), rec["task"], rec["preset"], rec["batch_size"])
        shapes = [_step_shape(s) for s in rec.get("steps", [])] or [None]
        for shape in dict.fromkeys(shapes):
            groups.setdefault(key + (shape_label(shape),), []).append((rec, shape))
    rows = [_row(key, recs) for key, recs in groups.items()]
    peak = machine_peak(records, probes)
    for row in rows:
        if row["status"] == "ok" and peak:
            row["machine_peak_gflops"] = peak
            row["fraction_of_peak"] = row["achieved_gflops"] / peak
        same = ("ops", "task", "preset", "batch_size", "shape")
        peers = [r["median_s"] for r in rows if r["status"] == "ok" and all(r[k] == row[k] for k in same)]
        row["ratio_to_fastest"] = row["median_s"] / min(peers) if row["status"] == "ok" else None
    return rows


def _row(key, recs) -> dict:
    """`recs`: (record, shape) of every round; the row covers the record's steps of that shape."""
    framework, ops, task, preset, batch_size, label = key
    row = dict.fromkeys(CSV_FIELDS)
    row.update(framework=framework, ops=ops, task=task, preset=preset, batch_size=batch_size, shape=label)
    ok = [(r, shape) for r, shape in recs if r["status"] == "ok"]
    if not ok:
        last = recs[-1][0]
        return {**row, "status": last["status"], "rounds": 0, "reason": last.get("reason", "")}
    per_round = [[s for s in r["steps"] if _step_shape(s) == shape] for r, shape in ok]
    steps = [s for mine in per_round for s in mine]
    seconds = sum(s["time_s"] for s in steps)
    if task == "synthesize":  # the same sentences in every round and framework: the mean step of each round
        times = [sum(s["time_s"] for s in mine) / len(mine) for mine in per_round]
    else:
        times = [s["time_s"] for s in steps]
    row.update(status="ok", rounds=len(ok), steps=len(steps), **summarize(times))
    ok = [r for r, _ in ok]
    row["first_call_s"] = _median([r["warmup"][0]["time_s"] for r in ok])
    row["warmup_median_s"] = _median([s["time_s"] for r in ok for s in r["warmup"][1:]])
    row["setup_s"] = _median([r["setup_s"] for r in ok])
    if task == "synthesize":
        audio_s = sum(s["audio_s"] for s in steps)
        row["rtf"] = audio_s / sum(s["text2mel_s"] for s in steps)
        row["rtf_with_vocoder"] = audio_s / sum(s["text2mel_s"] + s["ssrn_s"] + s["vocoder_s"] for s in steps)
        row["text2mel_sentences_per_s"] = sum(s.get("samples", 1) for s in steps) / sum(s["text2mel_s"] for s in steps)
    row["samples_per_s"] = sum(s.get("samples", 1) for s in steps) / seconds  # synthesis: sentences / s
    row["frames_per_s"] = sum(s["frames"] for s in steps) / seconds
    row["peak_rss_mb"] = max(r["peak_rss_mb"] for r in ok)
    for key in ("gpu_memory_mb", "gpu_allocator_mb"):  # NVML's per-process figure; the framework's own
        row[key] = max((r[key] for r in ok if r.get(key) is not None), default=None)
    row["gflop_per_step"] = sum(s["flops"] for s in steps) / len(steps) / 1e9  # one shape: every step's
    row["achieved_gflops"] = row["gflop_per_step"] / row["median_s"]
    row["matmul_gflops"] = _median([r["peak"]["gflops"] for r in ok])  # the framework's own, for reference
    row["gate_max_rel_error"] = max(e for r in ok for g in r["gate"].values() for e in g["errors"].values())
    return row


def write_json(path, meta: dict, records: list) -> None:
    Path(path).write_text(json.dumps({"meta": meta, "runs": records}, indent=1))


def write_csv(path, rows: list) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def _fmt(value, spec="{:.3g}"):
    return "–" if value is None else spec.format(value)


def _last_line(text) -> str:
    """The last non-empty line (where a traceback's message is), shortened, pipes escaped."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return (lines[-1][:200] if lines else "").replace("|", "\\|")


def _shape(task: str, label: str | None) -> str:
    return label or ("sentences" if task == "synthesize" else "–")


def _ms(row) -> str:
    if row["status"] != "ok":
        return row["status"]
    return f"{row['median_s'] * 1e3:.1f} ms, IQR {row['iqr_s'] * 1e3:.1f} ({row['ratio_to_fastest']:.2f}×)"


# What the two real-time factors of the synthesis rows divide (aggregate computes them so).
RTF_NOTE = ("RTF Text2Mel = audio seconds / Text2Mel seconds; RTF end-to-end = audio seconds / "
            "(Text2Mel + SSRN + Griffin-Lim (common.data.audio)) seconds")


def markdown(meta: dict, rows: list, frameworks: list) -> str:
    """The header (settings and fairness), the step-time table (one column per framework) and a
    details table."""
    lines = [f"# DC-TTS benchmark, preset(s) {', '.join(sorted({r['preset'] for r in rows}))}", ""]
    lines += [f"- {line}" for line in meta.get("header", [])]
    lines += ["", "## Median wall time per step (interquartile range; ratio to the fastest in the row)", "",
              "Training: the steps of one batch shape (characters × reduced frames), never rescaled across shapes; "
              "synthesis: the mean step over the same sentences in each round, median over the rounds. "
              "Tier: " + TIERS_NOTE, "",
              "| task | preset | batch | shape | tier | " + " | ".join(frameworks) + " |",
              "|---|---|---:|---|---|" + "---:|" * len(frameworks)]
    cells = {(r["task"], r["preset"], r["batch_size"], r["shape"], r["ops"], r["framework"]): r for r in rows}
    for key in dict.fromkeys((r["task"], r["preset"], r["batch_size"], r["shape"], r["ops"]) for r in rows):
        task, preset, batch, shape, ops = key
        row_cells = [_ms(cells[key + (fw,)]) if key + (fw,) in cells else "not run" for fw in frameworks]
        lines.append(f"| {task} | {preset} | {batch} | {_shape(task, shape)} | {ops} | " + " | ".join(row_cells) + " |")
    lines += tuning_gain(rows, frameworks)
    lines += synthesis_throughput(rows, frameworks)
    lines += ["", "## Details", "",
              "| framework | tier | task | batch | shape | steps | median s | IQR s | first call s | warm-up s | samples/s "
              "| frames/s | RTF Text2Mel | RTF end-to-end | peak RSS MiB | GPU MiB (NVML) | GPU MiB (allocator) | GFLOP/step "
              "| GFLOP/s at the median "
              "| own matmul GFLOP/s | % of machine peak at the median | gate err |",
              "|---|---|---|---:|---|" + "---:|" * 17]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['framework']} | {r['ops']} | {r['task']} | {r['batch_size']} | {_shape(r['task'], r['shape'])} | {r['status']}: "
                         f"{_last_line(r['reason'])} |" + " |" * 16)
            continue
        frac = None if r["fraction_of_peak"] is None else 100 * r["fraction_of_peak"]
        lines.append(" | ".join([
            f"| {r['framework']}", r["ops"], r["task"], str(r["batch_size"]), _shape(r["task"], r["shape"]), str(r["steps"]),
            _fmt(r["median_s"]),
            _fmt(r["iqr_s"]), _fmt(r["first_call_s"]), _fmt(r["warmup_median_s"]), _fmt(r["samples_per_s"]),
            _fmt(r["frames_per_s"], "{:.0f}"), _fmt(r["rtf"]), _fmt(r["rtf_with_vocoder"]),
            _fmt(r["peak_rss_mb"], "{:.0f}"), _fmt(r["gpu_memory_mb"], "{:.0f}"), _fmt(r["gpu_allocator_mb"], "{:.0f}"),
            _fmt(r["gflop_per_step"]),
            _fmt(r["achieved_gflops"]), _fmt(r["matmul_gflops"]), _fmt(frac, "{:.1f}"),
            _fmt(r["gate_max_rel_error"], "{:.1e}")]) + " |")
    return "\n".join(lines) + "\n"


# What the tier column means (common.framework.OPS; the code of each: results/implementation-notes.md, "the tiers")
TIERS_NOTE = ("tuned = our fastest code (hand-written convolutions and fused nodes where they measured faster); "
              "stock = only the framework's own layers, functions and Adam, as a user would write DC-TTS; both pass "
              "the same parity tests and gate, and frameworks are compared within a tier.")


def tuning_gain(rows: list, frameworks: list) -> list:
    """Markdown lines: per framework, task, batch size and shape, stock's median / tuned's -- what
    tuning buys ([] unless both tiers ran)."""
    if len(ordered_tiers(r["ops"] for r in rows)) < 2:
        return []
    ok = {(r["task"], r["preset"], r["batch_size"], r["shape"], r["ops"], r["framework"]): r for r in rows
          if r["status"] == "ok"}
    lines = ["", "## What tuning buys: stock median / tuned median (same framework, task and shape)", "",
             "| task | preset | batch | shape | " + " | ".join(frameworks) + " |",
             "|---|---|---:|---|" + "---:|" * len(frameworks)]
    for key in dict.fromkeys((r["task"], r["preset"], r["batch_size"], r["shape"]) for r in rows):
        cells = []
        for fw in frameworks:
            stock, tuned = ok.get(key + ("stock", fw)), ok.get(key + ("tuned", fw))
            cells.append(f"{stock['median_s'] / tuned['median_s']:.2f}×" if stock and tuned else "–")
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {_shape(key[0], key[3])} | " + " | ".join(cells) + " |")
    return lines


def synthesis_throughput(rows: list, frameworks: list) -> list:
    """Markdown lines: sentences/s of each framework at each synthesis batch size, of Text2Mel
    alone (the autoregressive part, which the batch shares) and of the step (+ SSRN, run on each
    sentence), with the speedup over its own batch of 1 ([] unless synthesis ran at more than
    one batch size)."""
    synth = {(r["framework"], r["ops"], r["preset"], r["batch_size"]): r for r in rows
             if r["task"] == "synthesize" and r["status"] == "ok"}
    sizes = sorted({b for *_, b in synth})
    if len(sizes) < 2:
        return []
    lines = ["", "## Synthesis throughput: sentences per second, Text2Mel alone / Text2Mel + SSRN (speedup over one "
                 "sentence at a time)", "",
             "| preset | batch | tier | " + " | ".join(frameworks) + " |", "|---|---:|---|" + "---:|" * len(frameworks)]
    for preset in sorted({p for _, _, p, _ in synth}):
        for ops in ordered_tiers(o for _, o, _, _ in synth):
            for batch in sizes:
                cells = []
                for fw in frameworks:
                    row, alone = synth.get((fw, ops, preset, batch)), synth.get((fw, ops, preset, 1))
                    cells.append("–" if row is None else " / ".join(
                        f"{row[key]:.2f}" + (f" ({row[key] / alone[key]:.2f}×)" if alone else "")
                        for key in ("text2mel_sentences_per_s", "samples_per_s")))
                lines.append(f"| {preset} | {batch} | {ops} | " + " | ".join(cells) + " |")
    return lines


def throughput(rows: list) -> float:
    """Samples (sentences) per second over the rows of one framework, task and batch size: all the
    steps of their shapes, the same work in every framework (each row's samples/s is its samples
    over its seconds, and every step of a batch size has as many samples)."""
    return sum(r["steps"] for r in rows) / sum(r["steps"] / r["samples_per_s"] for r in rows)


def plot(out_dir, rows: list, frameworks: list) -> list:
    """step_time.png (median with IQR bars, per task and batch size) and, when several batch sizes
    were run, throughput.png (samples/s vs batch size: training samples, synthesized sentences).
    Returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        return []
    written = []
    tasks = list(dict.fromkeys(r["task"] for r in ok))
    present = ordered_tiers(r["ops"] for r in ok)
    series = [(fw, ops) for fw in frameworks for ops in present]  # a bar (a line) per framework and tier

    def label(fw, ops):
        return fw if len(present) == 1 else f"{fw} {ops}"

    def color(fw):  # one colour a framework; its stock bars hatched and lighter, its stock lines dashed
        return f"C{frameworks.index(fw)}"

    fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks) * (1 + 0.5 * (len(present) - 1)), 3.8),
                             squeeze=False)
    width = 0.8 / len(series)
    for ax, task in zip(axes[0], tasks):
        sizes = list(dict.fromkeys(sorted(((r["batch_size"], r["shape"] or "") for r in ok if r["task"] == task),
                                          key=lambda k: (k[0], k[1]))))
        for j, (fw, ops) in enumerate(series):
            mine = {(r["batch_size"], r["shape"] or ""): r for r in ok
                    if r["task"] == task and r["framework"] == fw and r["ops"] == ops}
            xs = [i + (j - (len(series) - 1) / 2) * width for i, b in enumerate(sizes) if b in mine]
            rs = [mine[b] for b in sizes if b in mine]
            if rs:
                ax.bar(xs, [r["median_s"] for r in rs], width, label=label(fw, ops), color=color(fw),
                       hatch="//" if ops == "stock" else None, alpha=0.6 if ops == "stock" else 1.0,
                       yerr=[[r["median_s"] - r["q1_s"] for r in rs], [r["q3_s"] - r["median_s"] for r in rs]],
                       capsize=3)
        ax.set_xticks(range(len(sizes)), [f"{b} sentence(s)" if task == "synthesize" else f"batch {b}\n{shape}"
                                          for b, shape in sizes])
        ax.set_title(task)
        ax.set_ylabel("seconds per step (median, IQR)")
        ax.legend(fontsize="small")
    fig.tight_layout()
    written.append(Path(out_dir) / "step_time.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    varied = [task for task in tasks if len({r["batch_size"] for r in ok if r["task"] == task}) > 1]
    if varied:
        fig, axes = plt.subplots(1, len(varied), figsize=(4.5 * len(varied), 3.8), squeeze=False)
        for ax, task in zip(axes[0], varied):
            for fw, ops in series:
                mine = [r for r in ok if r["task"] == task and r["framework"] == fw and r["ops"] == ops]
                sizes = sorted({r["batch_size"] for r in mine})
                if sizes:
                    ax.plot(sizes, [throughput([r for r in mine if r["batch_size"] == b]) for b in sizes],
                            "o--" if ops == "stock" else "o-", color=color(fw), label=label(fw, ops))
            ax.set_xlabel("batch size")
            ax.set_ylabel("sentences / s" if task == "synthesize" else "samples / s")
            ax.set_title(task)
            ax.legend()
        fig.tight_layout()
        written.append(Path(out_dir) / "throughput.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    return written


# --- the header: the settings and fairness statements a table carries --------------------------
GPU_NOTE = ("TF32 off in every framework (NVIDIA_TF32_OVERRIDE=0; torch's allow_tf32 flags off too), cuDNN "
            "autotuning on in all three (torch cudnn.benchmark, chainer config.autotune, "
            "MXNET_CUDNN_AUTOTUNE_DEFAULT=1), its search kept out of the clock: training in the uncounted warm-up "
            "steps (the batches cycle, so every timed shape is met there), synthesis by speaking every timed sentence "
            "once before the timed pass; GPU memory = the process's device memory by NVML at the end of the run "
            "(context, pools and caches included: one measure for every framework), each framework's allocator "
            "figure beside it (torch max_memory_allocated, CuPy's pool, MXNet's device used)")


def peak_line(records: list, probes: dict) -> str:
    """How the one machine peak was found, with every probe and their spread."""
    found = matmul_probes(records, probes)
    if not found:
        return "machine peak: not measured (no run finished)"
    best, low = max(found.values()), min(found.values())
    return ("machine peak = the best fp32 square matmul measured in this run (n in results.json; best of 10 after "
            "one untimed call): " + ", ".join(f"{k} {v:.0f}" for k, v in found.items()) +
            f" GFLOP/s; peak {best:.0f}, spread {100 * (best - low) / best:.0f}%; every framework's % of peak "
            "divides by it")


def header(args, records: list, probes: dict, info: dict) -> list:
    """The settings a reader needs to trust (or reproduce) the table; `info`: machine.machine()'s."""
    versions = {r["framework"]: r.get("version") for r in records if r.get("version")}
    gate = inputs.short_batch(get_spec(args.preset))
    source = (f"preprocessed corpus {args.data}" if args.data else "synthetic LJSpeech-shaped batches "
              f"(bench.inputs.synthetic_batch, seeds {args.seed}..{args.seed + args.batches - 1})")
    return [
        f"machine: {machine.described(info)}; {info['platform']}; {machine.commit_line(info, args.allow_dirty)}",
        "frameworks: " + (", ".join(f"{fw} {v}" for fw, v in versions.items()) or "none ran"),
        f"device {args.device}, fp32; Backend.sync() before every clock read" + (
            "" if args.device == "cpu" else "; " + GPU_NOTE),
        f"threads: {args.threads} per framework subprocess ({', '.join(machine.THREAD_VARS)} set before import, "
        f"then impl_<fw>.runtime.configure_threads({args.threads}))",
        f"inputs: {source}, {args.batches} distinct batch(es) cycled, prebuilt and identical for every framework; "
        "data loading is not timed",
        f"steps per run: {args.warmup} warm-up (the first is the first call, with any hybridize/compile work; both "
        f"reported separately) + {args.steps} counted; {args.repeat} round(s), framework order alternating",
        synthesis_line(args),
        f"parity gate before timing: Backend.forward vs common.contract.reference on a short batch (B={gate.size}, "
        f"N={gate.text.shape[1]}, T={gate.mel.shape[2]}), relative error <= {GATE_TOL:g}, and for training one "
        f"step on it (dropout off) whose losses are the reference's within {LOSS_TOL:g}; a framework that fails "
        "is reported, not timed; its updates and the timed synthesis mels are compared across frameworks below",
        "FLOPs: common.contract.accounting.flops (train step = 3x forward; synthesis decodes incrementally, each frame once)",
        peak_line(records, probes),
        "frames = reduced mel frames x r (full-rate frames); peak RSS = the worker process's ru_maxrss",
        f"preset {args.preset}" + (" (the quick default; `--preset paper` is the headline)" if args.preset == "small"
                                   else ""),
        f"tiers of operators: {', '.join(args.ops)} (" + TIERS_NOTE.rstrip(".") + ")",
    ] + synthesis_frames_line(records, get_spec(args.preset).r, args.text2mel is None) + cross_check(args.out / "gate") \
        + busy_warning(records)


def synthesis_line(args) -> str:
    """What the synthesis rows speak, with which weights, in batches of which sizes."""
    if args.text2mel is not None:
        source = f"trained weights ({args.text2mel}, {args.ssrn})"
    else:
        source = "untrained weights (common.contract.weights.init_weights)"
    if args.data:
        texts = "the corpus's held-out sentences (heldout.csv; else its first texts)"
    else:
        texts = "common/data/sentences.txt sentences of {}-{} characters".format(*inputs.SYNTHESIS_CHARS)
    return (f"synthesis: {source}, {texts}, at most {args.max_frames} reduced frames; step = Text2Mel on a batch "
            f"of {' or '.join(map(str, args.synth_batch))} sentence(s) (each stops at its own end) + SSRN on each; "
            f"sentences/s = sentences / step time; " + RTF_NOTE)


def synthesis_frames_line(records: list, r: int, untrained: bool) -> list:
    """What the synthesis rows timed, per batch size: the reduced frames of each counted
    utterance, and whether every framework synthesized the same (the same work); where they
    differ, by how many frames, and why when the weights are untrained."""
    frames = {}
    for rec in records:
        if rec["task"] == "synthesize" and rec["status"] == "ok":
            runner = rec["framework"] + " " + tier(rec)
            frames.setdefault(rec["batch_size"], {}).setdefault(runner, []).extend(
                f for s in rec["steps"] for f in s.get("reduced_frames", [s["frames"] // r]))
    lines = []
    for batch, by_framework in frames.items():
        first = next(iter(by_framework.values()))
        if all(f == first for f in by_framework.values()):
            lines.append(f"synthesis, batch {batch}: timed {sum(first)} reduced frames in {len(first)} utterances "
                         f"({_listed(first)}), the same in every framework and tier")
            continue
        most = max(sum(f) for f in by_framework.values())
        lines.append(f"WARNING: synthesis, batch {batch}: the frameworks synthesized different frame counts, so their "
                     f"synthesis rows time different work (up to {most - min(sum(f) for f in by_framework.values())} "
                     f"of {most} reduced frames): " + "; ".join(f"{fw} {_listed(f)}" for fw, f in by_framework.items())
                     + (f". {UNTRAINED_TIES}" if untrained else ""))
    return lines


# Why untrained networks end sentences at different frames (measured 2026-12-07 at `paper`, batch 8: chainer's
# 64 and 58 frames where torch and gluon made 61 and 51; the mels agreed within 2.4e-7 until then).
UNTRAINED_TIES = ("Untrained attention is uniform over the text to ~1 ulp (1/N, N characters), so which position "
                  "is its argmax, and with it the forcing and the end of the sentence, follows round-off: "
                  "the frames differ from the first such tie on, not before; trained weights do not tie")


def _listed(numbers: list, at_most: int = 10) -> str:
    shown = ", ".join(map(str, numbers[:at_most]))
    return shown + (f", ... ({len(numbers)} in all)" if len(numbers) > at_most else "")


BUSY_CORES = 0.25  # other processes' mean CPU use during a run above which the header warns


def busy_warning(records: list) -> list:
    """A warning line when other processes used the CPU while we timed (threads then wait for
    cores; OpenMP runtimes, which spin, suffer most)."""
    busy = [r["others_busy_cores"] for r in records if r.get("others_busy_cores") is not None]
    if not busy or max(busy) <= BUSY_CORES:
        return []
    return [f"WARNING: other processes kept up to {max(busy):.1f} cores busy during the timed steps: timings are "
            "unreliable, re-run on a quiet machine"]


# --- re-deriving a committed table ------------------------------------------------------
def infer_shapes(meta: dict, records: list) -> int:
    """Give the training steps of records written before steps carried their shape (2026-12-07)
    the shape of the batch they ran: a run's steps cycle its prebuilt synthetic batches in order
    (warm-up and counted steps together: step i ran batch i % --batches), so those batches are
    rebuilt (bench.inputs, the run's seed) and each step's FLOPs must match its batch's. Returns
    the steps given a shape; refuses runs on a corpus (--data), whose batches are not rebuilt here."""
    from bench import inputs
    from bench.variants import variant_spec
    from common.contract import accounting as A

    opts, named = meta["options"], 0
    for rec in records:
        if rec["status"] != "ok" or rec["task"] == "synthesize" or all("shape" in s for s in rec["steps"]):
            continue
        if opts.get("data") not in (None, "None"):
            raise SystemExit(f"{rec['framework']} {rec['task']}: batches from a corpus ({opts['data']}) are not rebuilt here")
        preset, _, variant = rec["preset"].partition("+")
        spec = variant_spec(preset, variant or "baseline")
        batches = inputs.timing_batches(spec, rec["batch_size"], int(opts["batches"]), int(opts["seed"]))
        for i, step in enumerate(rec["warmup"] + rec["steps"]):
            b = batches[i % len(batches)]
            expected = A.flops(spec, rec["task"][len("train-"):], *inputs.batch_shape(b))["train_step"]
            if step["flops"] != expected:
                raise SystemExit(f"{rec['framework']} {rec['task']} step {i}: {step['flops']} FLOPs, its batch has {expected}")
            step["shape"] = inputs.batch_shape(b)
            named += 1
    return named


def rederive(folder: Path) -> Path:
    """table-per-shape.md beside a results folder's table.md (and variants-per-shape.md for a
    variants study): its results.json's raw steps under today's statistics (per shape; step shapes
    inferred where the records lack them)."""
    raw = json.loads((folder / "results.json").read_text())
    meta, records = raw["meta"], raw["runs"]
    named = infer_shapes(meta, records)
    rows = aggregate(records, meta.get("numpy_peak_gflops"))
    frameworks = list(dict.fromkeys(r["framework"] for r in records))
    note = (f"re-derived per shape from results.json by `python -m bench.report {folder}` "
            f"({named} step shapes inferred from the run's prebuilt batches); the header below is the run's")
    out = folder / "table-per-shape.md"
    out.write_text(markdown({**meta, "header": [note] + meta.get("header", [])}, rows, frameworks))
    names = meta["options"].get("variant") or []
    if len(names) > 1:  # a variants study: its table too, per shape
        from bench import variants

        (folder / "variants-per-shape.md").write_text(variants.table(rows, meta["options"]["preset"], names, frameworks))
    return out


if __name__ == "__main__":
    import sys

    for name in sys.argv[1:] or sys.exit("usage: python -m bench.report RESULTS_FOLDER [...]"):
        print(rederive(Path(name)))
