"""Hyperparameter search (`python bench/run.py --task tune`, optuna): each trial trains Text2Mel of
one framework, the trial's values of the search space (SPACE) set on --preset, for the same step
budget; every --eval-every steps it evaluates the held-out sentences (bench.converge.Evaluations)
and reports `objective` to optuna. A MedianPruner stops a trial whose objective is worse than the
median of the earlier trials' at the same step (never at the first evaluation); a TPE sampler,
seeded by --seed, picks the next values.

The study lives in optuna's SQLite storage (--study, default <out>/study.db), so running the same
command again continues it, up to --trials finished trials in all. Each trial trains in
<out>/trials/NNNN/ (a dctts-train run directory, plus its curve.jsonl), checkpointed at every
evaluation; a finished trial keeps its last checkpoint only. A trial that did not finish (Ctrl-C or
SIGTERM: marked interrupted; a killed process: left running) is re-run first on the next start, with
the same values, in the same directory: the training loop resumes from the newest checkpoint
bit-identically and the evaluations up to it are reported again. The unfinished trial stays in the
study as FAIL (optuna cannot reopen a finished trial); its re-run carries the user attribute
`resumes` (the directory's number). One search at a time per study: a second one would take the
first one's running trial for a killed one. The search runs in the calling process; --threads are
the framework's (train_loop's configure_threads).

Outputs in --out, rewritten after every trial (Ctrl-C keeps what finished): trials.md, best.md
(the best trial as a dctts-train command line), importance.png, study.json.
"""
from __future__ import annotations

import collections
import dataclasses
import importlib.util
import json
import sys
import typing
import warnings
from dataclasses import dataclass
from pathlib import Path

from bench import converge
from bench.machine import REPO
from common.training import checkpoint
from common.contract.spec import Spec, get_spec

STUDY_NAME = "dctts-tune"
MAX_STEPS, EVAL_EVERY = 3000, 500  # this task's defaults of --max-steps and --eval-every
ALIGNED = 0.9  # the fraction of a band's sentences the objective wants aligned
ALIGN_WEIGHT = 5.0  # objective dB per unit of a band's shortfall below ALIGNED
MIN_IMPORTANCE_TRIALS = 10  # completed trials before importance.png: fewer, and PED-ANOVA's top decile is one trial


@dataclass(frozen=True)
class Param:
    """One dimension of the search: a Spec field (int or float: the Spec's type) and its values,
    `choices` or `low`..`high` (`log`: drawn on a log scale; `step`: on a grid); `when`
    (field, value): drawn only in trials where that earlier field took that value."""

    field: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()
    when: tuple | None = None

    def described(self) -> str:
        values = "|".join(map(str, self.choices)) or (f"{self.low:g}..{self.high:g}" + " (log)" * self.log
                                                       + (f" step {self.step:g}" if self.step else ""))
        return f"{self.field} {values}" + (f" (when {self.when[0]}={self.when[1]})" if self.when else "")


SPACE = (  # the search space: declared here only
    Param("lr", 3e-4, 3e-3, log=True),
    Param("batch_size", choices=(8, 16)),
    Param("d", 48, 128, step=16),
    Param("g", 0.05, 0.4),
    Param("position", choices=("none", "sinusoid")),
    Param("position_rate", 1.0, 1.8, when=("position", "sinusoid")),
    Param("position_weight", 0.5, 2.0, log=True, when=("position", "sinusoid")),
    Param("norm", choices=("layer", "group")),
    Param("block", choices=("highway", "residual")),
)


def space(params=SPACE) -> list:
    """The params whose field the Spec has; any other is left out, saying so (a field not yet in
    common/contract/spec.py, or one removed from it)."""
    fields = {f.name for f in dataclasses.fields(Spec)}
    missing = [p.field for p in params if p.field not in fields]
    if missing:
        print(f"tune: the Spec has no field {', '.join(missing)}: left out of the search space", flush=True)
    return [p for p in params if p.field in fields]


def sample(trial, params) -> dict:
    """{field: value} of a trial: optuna's suggestion for each param that applies to it."""
    hints = typing.get_type_hints(Spec)
    values = {}
    for p in params:
        if p.when and values.get(p.when[0]) != p.when[1]:
            continue
        if p.choices:
            values[p.field] = trial.suggest_categorical(p.field, p.choices)
        elif hints[p.field] is int:
            values[p.field] = trial.suggest_int(p.field, p.low, p.high, step=p.step or 1, log=p.log)
        else:
            values[p.field] = trial.suggest_float(p.field, p.low, p.high, step=p.step, log=p.log)
    return values


def bands_of(point: dict) -> dict:
    """An evaluation's figures per length band; its overall figures as one band "all" where it has
    no bands (an evaluation from before they existed)."""
    return point.get("bands", {"all": point})


def objective(point: dict) -> float:
    """What the search minimizes, from one evaluation (common.evaluation.quality.evaluate's figures): the worst
    length band's MCD-DTW minus the mean spectrum's (dB; negative = better than the mean spectrum)
    plus ALIGN_WEIGHT x the worst band's shortfall below ALIGNED (90%) aligned.

    Why the worst band: the project's target is every band at least 90% aligned and its MCD-DTW at
    least 1 dB below the mean spectrum's; over all sentences, the many short ones that align first
    hide the long ones that do not. Why 5: a band 20 points short of 90% costs 1 dB, the whole gain
    the target asks for, so alignment comes before MCD-DTW. A point that meets the target scores
    <= -1.0. Bands without sentences are left out."""
    bands = [b for b in bands_of(point).values() if b["n"]]
    gain = max(b["mcd_mean"] - b["mcd_mean_spectrum_mean"] for b in bands)
    shortfall = max(max(0.0, ALIGNED - b["aligned_rate"]) for b in bands)
    return gain + ALIGN_WEIGHT * shortfall


# --- the study ---------------------------------------------------------------------------------
def settings(args) -> dict:
    """What every trial of a study shares: a study continued with other settings is refused."""
    return {"framework": args.framework[0], "preset": args.preset, "data": args.data,
            "max_steps": args.max_steps, "eval_every": args.eval_every, "sentences": args.sentences,
            "seed": args.seed}


def open_study(args):
    """The study in args.study, created or continued (its settings must be the same)."""
    import optuna

    study = optuna.create_study(storage=f"sqlite:///{args.study}", study_name=STUDY_NAME, direction="minimize",
                                pruner=optuna.pruners.MedianPruner(n_warmup_steps=args.eval_every + 1),
                                load_if_exists=True)
    # seeded by the trials so far too: a sampler seeded alike in every session re-draws a continued study's first values
    study.sampler = optuna.samplers.TPESampler(seed=args.seed + len(study.trials))
    wanted, known = settings(args), study.user_attrs.get("settings")
    if known is None:
        study.set_user_attr("settings", wanted)
    elif known != wanted:
        differ = ", ".join(f"{k} {known.get(k)} (given: {v})" for k, v in wanted.items() if known.get(k) != v)
        raise SystemExit(f"{args.study} holds a study of other settings: {differ}; give the same, or another --study")
    return study


def run_number(trial) -> int:
    """The number of the trial whose directory (<out>/trials/NNNN) a trial trains in: its own, or
    that of the interrupted trial it re-runs."""
    return trial.user_attrs.get("resumes", trial.number)


def latest_per_run(trials) -> dict:
    """{run number: the newest trial training in that directory}."""
    return {run_number(t): t for t in sorted(trials, key=lambda t: t.number)}


def requeue(study) -> None:
    """Queue a re-run (same values, same directory) of every trial that did not finish and has no
    re-run yet: interrupted, or left running by a killed search (marked FAIL first)."""
    from optuna.trial import TrialState

    trials = study.get_trials()
    for t in trials:
        if t.state == TrialState.RUNNING:
            study.tell(t.number, state=TrialState.FAIL)
    for t in latest_per_run(trials).values():
        if t.state == TrialState.RUNNING or t.user_attrs.get("interrupted"):
            study.enqueue_trial(t.params, user_attrs={"resumes": run_number(t)})


def finished(study) -> int:
    """Trials that count towards --trials: finished (complete, pruned or failed) and not re-run."""
    return sum(t.state.is_finished() for t in latest_per_run(study.get_trials()).values())


# --- one trial ---------------------------------------------------------------------------------
def resumed_curve(run_dir: Path) -> list:
    """The evaluations of a trial's directory that its newest checkpoint covers (training resumes
    there; later ones are measured again), the curve cut back to them; [] for a fresh start."""
    newest = checkpoint.latest_readable(run_dir, "text2mel")
    step = next((s for s, path in checkpoint.listed(run_dir, "text2mel") if path == newest), -1)
    curve = run_dir / "curve.jsonl"
    points = [p for p in converge.read_curve(curve) if p["step"] <= step]
    curve.write_text("".join(json.dumps(p) + "\n" for p in points))
    return points


def report(trial, point: dict) -> None:
    """Tell optuna an evaluation's objective (pruning compares them at equal steps) and keep its
    figures as the trial's last (trials.md)."""
    trial.report(objective(point), point["step"])
    trial.set_user_attr("point", point)


def train_trial(trial, args, params: list) -> float:
    """One trial: train and evaluate; the last evaluation's objective, or TrialPruned."""
    import optuna

    values = sample(trial, params)
    run_dir = args.out / "trials" / f"{run_number(trial):04d}"
    run_dir.mkdir(parents=True, exist_ok=True)
    print(f"tune: trial {trial.number} in {run_dir}: " + ", ".join(f"{k}={v}" for k, v in values.items()), flush=True)
    evaluations = converge.Evaluations(args.framework[0], args.data, get_spec(args.preset, **values), args.sentences,
                                       run_dir / "curve.jsonl")
    points = resumed_curve(run_dir)
    for point in points:
        report(trial, point)
    if points:
        evaluations.resume_from(points[-1])

    def stop(point) -> bool:
        report(trial, point)
        return trial.should_prune()

    result = evaluations.train(run_dir, args.max_steps, args.eval_every, args.seed, args.threads, resume=True,
                               stop=stop, checkpoint_every=args.eval_every)
    if result.interrupted:
        raise KeyboardInterrupt
    for _, older in checkpoint.listed(run_dir, "text2mel")[:-1]:  # a finished trial keeps its last one only
        older.unlink()
    if result.step < args.max_steps:
        raise optuna.TrialPruned(f"at step {result.step}")
    return objective(trial.user_attrs["point"])


def run_trial(trial, args, params: list) -> float:
    """train_trial, marking the trial interrupted when Ctrl-C or SIGTERM stops it (the next start
    re-runs it: requeue)."""
    try:
        return train_trial(trial, args, params)
    except KeyboardInterrupt:
        trial.set_user_attr("interrupted", True)
        raise


# --- the outputs -------------------------------------------------------------------------------
def gain_cell(band: dict) -> str:
    """A band's "aligned / gain" (gain: dB below the mean spectrum's MCD-DTW); "—" when empty."""
    if not band.get("n"):
        return "—"
    return f"{band['aligned_rate']:.0%} / {band['mcd_mean_spectrum_mean'] - band['mcd_mean']:+.2f}"


def params_text(params: dict, fmt: str = ".3g") -> str:
    return ", ".join(f"{k}={format(v, fmt) if isinstance(v, float) else v}" for k, v in params.items())


def best_trial(trials):
    """The completed trial of the lowest objective (None before one completes)."""
    from optuna.trial import TrialState

    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    return min(complete, key=lambda t: t.value) if complete else None


def last_bands(trial) -> dict:
    """The per-band figures of a trial's last evaluation ({} before its first)."""
    return bands_of(trial.user_attrs["point"]) if "point" in trial.user_attrs else {}


def note(trial, latest) -> str:
    """What trials.md adds to a trial's state: its re-run (`latest`, the newest trial in its
    directory), or that it was interrupted (re-run on the next start)."""
    if latest.number != trial.number:
        return f" (re-run as {latest.number})"
    return " (interrupted)" if trial.user_attrs.get("interrupted") else ""


def trials_markdown(trials, args, params: list, importance_note: str) -> str:
    """trials.md: the study's settings, objective and space, then a row per trial."""
    s, best, latest = settings(args), best_trial(trials), latest_per_run(trials)
    states = collections.Counter(t.state.name.lower() for t in trials)
    names = list(dict.fromkeys(n for t in trials for n in last_bands(t)))
    lines = [f"# Hyperparameter search: Text2Mel, {s['framework']}, preset {s['preset']}", "",
             f"- study {args.study} ({STUDY_NAME}): {len(trials)} trials, "
             + ", ".join(f"{n} {state}" for state, n in states.items()),
             f"- each trial: {s['max_steps']} steps (seed {s['seed']}), evaluated every {s['eval_every']} steps on "
             f"{s['sentences']} held-out sentences of {s['data']} (evenly spaced over heldout.csv); MedianPruner from the second "
             f"evaluation on, TPE sampler (seed {s['seed']} + the trials before a session's first)",
             "- objective (minimized, bench.tune.objective): the worst length band's MCD-DTW minus the mean "
             f"spectrum's + {ALIGN_WEIGHT:g} x the worst band's shortfall below {ALIGNED:.0%} "
             "aligned; <= -1.0 when every band is aligned and 1 dB below the mean spectrum (the target)",
             "- space: " + "; ".join(p.described() for p in params),
             "- best: " + (f"trial {best.number}, objective {best.value:.3f} (best.md)" if best else "none yet"),
             f"- {importance_note}", "",
             "objective: the value of a complete trial, else the last one reported. Per band (characters read): "
             "aligned / gain (dB below the mean spectrum's MCD-DTW) at the trial's last evaluation. run: its "
             "directory under trials/ (a re-run continues the unfinished trial's).", "",
             "| trial | state | run | params | last step | objective | " + " | ".join(names) + " |",
             "|---:|---|---:|---|---:|---:|" + "---:|" * len(names)]
    for t in trials:
        value = t.value if t.value is not None else t.intermediate_values.get(t.last_step)
        cells = [t.state.name + note(t, latest[run_number(t)]), f"{run_number(t):04d}",
                 params_text(t.params), "—" if t.last_step is None else str(t.last_step),
                 "—" if value is None else f"{value:.3f}", *(gain_cell(last_bands(t).get(n, {})) for n in names)]
        lines.append(f"| {t.number} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def best_markdown(trials, args) -> str:
    """The best trial's values and figures, and the dctts-train command that trains it again."""
    best = best_trial(trials)
    if best is None:
        return "# Best trial\n\nNo trial has completed yet.\n"
    s, point = settings(args), best.user_attrs["point"]
    command = (f"dctts-train --framework {s['framework']} --model text2mel --preset {s['preset']} --data {s['data']} "
               f"--out RUN --steps {s['max_steps']} --seed {s['seed']} "
               + " ".join(f"--set {k}={v}" for k, v in best.params.items()))
    return "\n".join([
        f"# Best trial: {best.number}, objective {best.value:.3f}", "",
        f"Its values on preset {s['preset']}: {params_text(best.params, '')}; its run directory (last checkpoint, "
        f"curve.jsonl): trials/{run_number(best):04d}. Per band at step {point['step']}, aligned / gain over the mean "
        "spectrum: " + ", ".join(f"{n} {gain_cell(b)}" for n, b in bands_of(point).items()) + ".", "",
        "The same training again, in a run directory of your own (a larger `--steps` trains it longer):", "",
        "```bash", command, "```", ""])


def trial_record(t) -> dict:
    """A trial in study.json."""
    return {"number": t.number, "state": t.state.name, "params": t.params, "value": t.value,
            "intermediate_values": t.intermediate_values, "user_attrs": t.user_attrs,
            "datetime_start": t.datetime_start and t.datetime_start.isoformat(),
            "datetime_complete": t.datetime_complete and t.datetime_complete.isoformat()}


def write_importance(study, path: Path) -> str:
    """importance.png: optuna's parameter importances (PED-ANOVA, which needs no scikit-learn) over
    the completed trials; the line for trials.md saying whether it was drawn."""
    import optuna
    from optuna.trial import TrialState

    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if complete < MIN_IMPORTANCE_TRIALS:
        return f"importance.png: not drawn, {complete} completed trial(s) (it needs {MIN_IMPORTANCE_TRIALS})"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        ax = optuna.visualization.matplotlib.plot_param_importances(
            study, evaluator=optuna.importance.PedAnovaImportanceEvaluator())
    ax.figure.tight_layout()
    ax.figure.savefig(path, dpi=110)
    plt.close(ax.figure)
    return f"importance.png: PED-ANOVA importances over the {complete} completed trials"


def write_outputs(study, args, params: list) -> str:
    """Rewrite trials.md, best.md, importance.png and study.json; return trials.md."""
    trials = study.get_trials()
    importance = write_importance(study, args.out / "importance.png")
    table = trials_markdown(trials, args, params, importance)
    (args.out / "trials.md").write_text(table)
    (args.out / "best.md").write_text(best_markdown(trials, args))
    (args.out / "study.json").write_text(json.dumps({"settings": study.user_attrs.get("settings"),
                                                     "trials": [trial_record(t) for t in trials]}, indent=1))
    return table


def run(args) -> int:
    """`bench/run.py --task tune`: create or continue the study, re-run what was interrupted, then
    new trials until --trials have finished; the outputs after every trial."""
    if importlib.util.find_spec("optuna") is None:
        raise SystemExit("--task tune needs optuna: pip install -e '.[tune]'")
    args.out.mkdir(parents=True, exist_ok=True)
    args.study = Path(args.study or args.out / "study.db").resolve()
    args.study.parent.mkdir(parents=True, exist_ok=True)
    args.data = args.data or str(converge.default_corpus(REPO / "out", args.preset))
    params = space()
    study = open_study(args)
    requeue(study)
    todo = max(0, args.trials - finished(study))
    print(f"tune: {finished(study)} trial(s) finished in {args.study}; {todo} to run", flush=True)
    status = 0
    try:
        study.optimize(lambda trial: run_trial(trial, args, params), n_trials=todo,
                       callbacks=[lambda s, t: write_outputs(s, args, params)])
    except KeyboardInterrupt:
        print("interrupted: the study keeps what finished; run the same command to continue", file=sys.stderr)
        status = 130
    print(write_outputs(study, args, params) + f"written to {args.out}")
    return status
