"""The hyperparameter search (bench/tune.py): its objective, its space, and 2-3 trials at `tiny`,
resumed and interrupted."""
import json
import os
import shutil
import signal

import optuna  # the `tune` extra, installed with torch's tests (tox -e torch)
import pytest

from bench import run, tune
from common.training import train_loop
from common.contract.spec import get_spec


def band(n, mcd, base, aligned):
    return {"n": n, "mcd_mean": mcd, "mcd_mean_spectrum_mean": base, "aligned_rate": aligned}


def test_the_objective_is_the_worst_bands_gain_plus_its_alignment_shortfall():
    met = {"bands": {"1-60": band(20, 4.0, 6.0, 1.0), "61-100": band(20, 4.9, 6.0, 0.9), "101-140": {"n": 0}}}
    assert tune.objective(met) == pytest.approx(-1.1)  # the worse band's 4.9 - 6.0; the empty one left out
    assert tune.objective(met) <= -1.0
    # one band that does not align outweighs the others' MCD gain: 5 x (0.9 - 0.3) = 3 dB
    unaligned = {"bands": {**met["bands"], "141-187": band(3, 5.0, 6.0, 0.3)}}
    assert tune.objective(unaligned) == pytest.approx(-1.0 + 3.0)
    # without bands (a point from before they existed): the overall figures
    assert tune.objective(band(50, 5.0, 6.0, 0.8)) == pytest.approx(-1.0 + 0.5)


def test_the_space_yields_valid_specs_and_leaves_out_fields_the_spec_lacks(capsys):
    params = tune.space(tune.SPACE + (tune.Param("no_such_field", 0.0, 1.0),))
    assert "no_such_field" in capsys.readouterr().out and "no_such_field" not in [p.field for p in params]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = []
    for _ in range(40):
        values = tune.sample(study.ask(), params)
        spec = get_spec("demo", **values)
        assert all(getattr(spec, k) == v for k, v in values.items())
        assert 3e-4 <= spec.lr <= 3e-3 and spec.d in range(48, 129, 16) and spec.batch_size in (4, 8, 16)
        drawn.append(values)
    if "position" in [p.field for p in params]:  # position_rate only where position is sinusoid
        assert all(("position_rate" in v) == (v["position"] == "sinusoid") for v in drawn)
        assert {v["position"] for v in drawn} == {"none", "sinusoid"}


def test_importance_is_drawn_only_from_enough_completed_trials(tmp_path):
    study = optuna.create_study()
    dist = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)}
    for i in range(tune.MIN_IMPORTANCE_TRIALS):
        assert "not drawn" in tune.write_importance(study, tmp_path / "importance.png")
        study.add_trial(optuna.trial.create_trial(params={"lr": 1e-4 * (i + 1)}, distributions=dist, value=float(i)))
    assert "PED-ANOVA" in tune.write_importance(study, tmp_path / "importance.png")
    assert (tmp_path / "importance.png").stat().st_size > 0


def tune_args(corpus, out, trials):
    return ["--task", "tune", "--preset", "tiny", "--data", str(corpus), "--max-steps", "4", "--eval-every", "2",
            "--sentences", "2", "--threads", "1", "--trials", str(trials), "--out", str(out)]


def load(out):
    return optuna.load_study(study_name=tune.STUDY_NAME, storage=f"sqlite:///{out / 'study.db'}")


@pytest.fixture(scope="module")
def smoke(tiny_corpus_dir, tmp_path_factory):
    """A 2-trial search at `tiny`: its --out."""
    out = tmp_path_factory.mktemp("tune")
    assert run.main(tune_args(tiny_corpus_dir, out, 2)) == 0
    return out


def test_a_search_writes_its_trials_best_and_study(smoke):
    trials = load(smoke).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert all(sorted(t.intermediate_values) == [2, 4] for t in trials)  # every --eval-every steps, the last
    assert all(t.value == pytest.approx(tune.objective(t.user_attrs["point"])) for t in trials)
    assert (smoke / "trials" / "0001" / "text2mel-00000004.safetensors").is_file()
    table = (smoke / "trials.md").read_text()
    assert "| 0 | COMPLETE | 0000 | lr=" in table and "| 1 | COMPLETE | 0001 |" in table and "not drawn" in table
    best = (smoke / "best.md").read_text()
    assert "dctts-train --framework torch --model text2mel --preset tiny" in best and "--set lr=" in best
    assert [t["state"] for t in json.loads((smoke / "study.json").read_text())["trials"]] == ["COMPLETE"] * 2


def test_a_continued_search_adds_the_trials_missing(tiny_corpus_dir, smoke, tmp_path):
    out = shutil.copytree(smoke, tmp_path / "more")  # the smoke study stays as it was for the other tests
    assert run.main(tune_args(tiny_corpus_dir, out, 3)) == 0
    trials = load(out).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    assert trials[2].params not in (trials[0].params, trials[1].params)  # new values, not the first session's again
    assert "| 2 | COMPLETE | 0002 |" in (out / "trials.md").read_text()
    with pytest.raises(SystemExit, match=r"other settings: max_steps 4 \(given: 6\)"):
        run.main(tune_args(tiny_corpus_dir, out, 4) + ["--max-steps", "6"])


def test_a_trial_left_running_by_a_killed_search_is_failed_and_rerun_in_its_directory(tiny_corpus_dir, smoke,
                                                                                     tmp_path):
    out = shutil.copytree(smoke, tmp_path / "killed")
    killed = load(out).ask()  # as a search killed in trial 2 left it: running, its values drawn
    values = tune.sample(killed, tune.space())
    assert run.main(tune_args(tiny_corpus_dir, out, 3)) == 0
    trials = load(out).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE"]
    assert trials[3].params == values and trials[3].user_attrs["resumes"] == 2
    assert (out / "trials" / "0002" / "text2mel-00000004.safetensors").is_file()
    assert not (out / "trials" / "0003").exists()
    assert "| 2 | FAIL (re-run as 3) | 0002 |" in (out / "trials.md").read_text()


def test_an_interrupted_trial_is_rerun_from_its_checkpoint(tiny_corpus_dir, smoke, tmp_path, monkeypatch):
    write = train_loop.LossLog.write

    def interrupt_at_step_3(self, step, *rest):  # Ctrl-C after step 3 of the first trial
        write(self, step, *rest)
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(train_loop.LossLog, "write", interrupt_at_step_3)
    assert run.main(tune_args(tiny_corpus_dir, tmp_path, 2)) == 130
    (first,) = load(tmp_path).get_trials()
    assert first.state.name == "FAIL" and first.user_attrs["interrupted"] and sorted(first.intermediate_values) == [2]
    assert (tmp_path / "trials" / "0000" / "text2mel-00000003.safetensors").is_file()
    assert "| 0 | FAIL (interrupted) | 0000 |" in (tmp_path / "trials.md").read_text()
    monkeypatch.undo()
    assert run.main(tune_args(tiny_corpus_dir, tmp_path, 1)) == 0
    trials = load(tmp_path).get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]
    rerun, whole = trials[1], load(smoke).get_trials()[0]  # the same first values (TPE seed 0), uninterrupted
    assert rerun.user_attrs["resumes"] == 0 and rerun.params == first.params == whole.params
    assert rerun.intermediate_values == whole.intermediate_values  # resumed bit-identically
    assert not (tmp_path / "trials" / "0001").exists()
    assert "| 0 | FAIL (re-run as 1) | 0000 |" in (tmp_path / "trials.md").read_text()
