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

from common.framework import OPS

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


def tiers(rows: list) -> list:
    """The tiers present in `rows`, tuned first."""
    return sorted({r["ops"] for r in rows}, key=OPS.index)


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
    by it: a framework's own matmul is a noisy, sometimes low denominator (torch.mm measured
    156-183 GFLOP/s where NumPy reached 212-215 on the same machine, which put torch at 92-99%
    "of peak")."""
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
            "(Text2Mel + SSRN + Griffin-Lim (common.audio)) seconds")


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
    if len(tiers(rows)) < 2:
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
        for ops in sorted({o for _, o, _, _ in synth}, key=OPS.index):
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
    present = tiers(ok)
    series = [(fw, ops) for fw in frameworks for ops in present]  # a bar (a line) per framework and tier

    def label(fw, ops):
        return fw if len(present) == 1 else f"{fw} {ops}"

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
                ax.bar(xs, [r["median_s"] for r in rs], width, label=label(fw, ops), hatch="//" if ops == "stock" else None,
                       yerr=[[r["median_s"] - r["q1_s"] for r in rs], [r["q3_s"] - r["median_s"] for r in rs]],
                       capsize=3)
        ax.set_xticks(range(len(sizes)), [f"{b} sentence(s)" if task == "synthesize" else f"batch {b}\n{shape}"
                                          for b, shape in sizes])
        ax.set_title(task)
        ax.set_ylabel("seconds per step (median, IQR)")
        ax.legend()
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
                            "o--" if ops == "stock" else "o-", label=label(fw, ops))
            ax.set_xlabel("batch size")
            ax.set_ylabel("sentences / s" if task == "synthesize" else "samples / s")
            ax.set_title(task)
            ax.legend()
        fig.tight_layout()
        written.append(Path(out_dir) / "throughput.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    return written


# --- re-deriving a committed table ------------------------------------------------------
def infer_shapes(meta: dict, records: list) -> int:
    """Give the training steps of records written before steps carried their shape (2026-12-07)
    the shape of the batch they ran: a run's steps cycle its prebuilt synthetic batches in order
    (warm-up and counted steps together: step i ran batch i % --batches), so those batches are
    rebuilt (bench.inputs, the run's seed) and each step's FLOPs must match its batch's. Returns
    the steps given a shape; refuses runs on a corpus (--data), whose batches are not rebuilt here."""
    from bench import inputs
    from bench.variants import variant_spec
    from common import spec as S

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
            expected = S.flops(spec, rec["task"][len("train-"):], *inputs.batch_shape(b))["train_step"]
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
