"""The variants study: the design space the original project set out to compare (separable,
bottleneck and residual blocks, batch and group norm; positional attention), each variant a change of
the preset (common.contract.spec).

`python bench/run.py --variant all` times each like the preset itself, in every framework: its
runs carry the spec name "<preset>+<variant>" (the table's preset column), and variants.md sets
beside each one its parameters and FLOPs (common.contract.spec) and its train-step times relative to the
preset's in the same framework and run. `--task converge --variant all` trains Text2Mel of each
for the same budget and evaluates it on the held-out sentences (variants-quality.md)."""
from __future__ import annotations

from common.contract import accounting as A, spec as S

BASELINE = "baseline"
VARIANTS = {  # name -> changes of the preset
    BASELINE: {},
    "sep": {"conv": "sep"},
    "super-sep": {"conv": "super-sep"},
    "bottleneck": {"conv": "bottleneck"},
    "residual": {"block": "residual"},
    "batch-norm": {"norm": "batch"},
    "group-norm": {"norm": "group"},
    "positional": {"position": "sinusoid"},
}


def changes(variant: str) -> str:
    """The variant's changes as FIELD=VALUE ("–" for the baseline)."""
    return ", ".join(f"{k}={v}" for k, v in VARIANTS[variant].items()) or "–"


def variant_name(preset: str, variant: str) -> str:
    """The spec name of a variant's runs: "<preset>+<variant>" (the baseline keeps the preset's)."""
    return preset if variant == BASELINE else f"{preset}+{variant}"


def variant_spec(preset: str, variant: str) -> S.Spec:
    """The preset with the variant's changes, under variant_name."""
    return S.get_spec(preset, **VARIANTS[variant]).replace(name=variant_name(preset, variant))


def table(rows: list, preset: str, variants: list, frameworks: list) -> str:
    """Markdown: per variant and timed batch shape, parameters and train-step GFLOP of each
    network, then per framework the median train-step time of Text2Mel and SSRN and its ratio to
    the baseline's in the same framework, tier and shape (the baseline must be among the variants for
    ratios); a row per tier of operators that ran."""
    from common.framework import ordered_tiers  # numpy: not at import, which a converge worker does before its threads are set

    times = {(r["preset"], r["task"], r["shape"], r["ops"], r["framework"]): r for r in rows if r["status"] == "ok"}
    gflop = {(r["preset"], r["task"], r["shape"]): r["gflop_per_step"] for r in rows if r["status"] == "ok"}
    status = {(r["preset"], r["task"], r["framework"]): r["status"] for r in rows}
    tasks = [t for t in ("train-text2mel", "train-ssrn") if any(r["task"] == t for r in rows)]
    shapes = list(dict.fromkeys(r["shape"] for r in rows if r["status"] == "ok" and r["task"] in tasks)) or [None]
    base = variant_name(preset, BASELINE)
    lines = [f"# Variants of preset {preset}", "",
             "Train-step medians (ms) of each batch shape (characters × reduced frames) and, in brackets, the ratio "
             "to the baseline in the same framework and shape; parameters and GFLOP per train step from common.contract.spec.",
             "", "| variant | changes | shape | tier | " + " | ".join(f"{t[6:]} params | {t[6:]} GFLOP/step" for t in tasks)
             + " | " + " | ".join(f"{fw} {t[6:]}" for fw in frameworks for t in tasks) + " |",
             "|---|---|---|---|" + "---:|" * (2 * len(tasks) + len(frameworks) * len(tasks))]
    for variant in variants:
        spec = variant_spec(preset, variant)
        for shape in shapes:
            for ops in ordered_tiers(r["ops"] for r in rows):
                cells = []
                for t in tasks:
                    cells += [f"{A.count_params(spec, t[6:]):,}", _fmt(gflop.get((spec.name, t, shape)))]
                for fw in frameworks:
                    for t in tasks:
                        row, ref = times.get((spec.name, t, shape, ops, fw)), times.get((base, t, shape, ops, fw))
                        if row is None:
                            cells.append(status.get((spec.name, t, fw), "not run"))
                            continue
                        ratio = f" ({row['median_s'] / ref['median_s']:.2f}×)" if ref else ""
                        cells.append(f"{row['median_s'] * 1e3:.0f}{ratio}")
                lines.append(f"| {variant} | {changes(variant)} | {shape or '–'} | {ops} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.2f}"


def quality_table(summaries: dict, preset: str, variant_names: list) -> str:
    """Markdown: per variant (a converge run each, {variant: converge summary}) and framework,
    the held-out metrics at the last evaluation of the budget, and the training time."""
    lines = [f"# Held-out quality of the variants of preset {preset} (Text2Mel, the same budget each)", "",
             "| variant | changes | framework | steps | training min | MCD-DTW (dB) | aligned | forced | "
             "untrained MCD | mean-spectrum MCD |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for variant in variant_names:
        for fw, row in summaries[variant].items():
            f, u = row["final"], row["untrained"]
            lines.append(f"| {variant} | {changes(variant)} | {fw} | {f['step']} | {f['train_seconds'] / 60:.1f} | "
                         f"{f['mcd_mean']:.2f} | {f['aligned_rate']:.0%} | {f['forced_fraction_mean']:.0%} | "
                         f"{u['mcd_mean']:.2f} | {f['mcd_mean_spectrum_mean']:.2f} |")
    return "\n".join(lines) + "\n"
