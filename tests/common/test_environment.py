"""common.environment: the managed environment the README's commands make on first use (the
whole path, from a copy of the checkout, is tests/fresh)."""
import os
import subprocess
import sys

import pytest

from common import environment


def test_fingerprint_follows_the_files_that_decide_the_environment(tmp_path, monkeypatch):
    for name in environment.DECIDING_FILES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    monkeypatch.setattr(environment, "ROOT", tmp_path)
    before = environment.fingerprint()
    (tmp_path / "constraints.txt").write_text("numpy==1.23.5\n")
    assert environment.fingerprint() != before


def test_site_file_selects_the_standard_distutils_before_setuptools_reads_it(tmp_path):
    assert environment.SITE_FILE < "distutils-precedence.pth"  # .pth files run in name order
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = environment.venv_python(venv)
    environment.write_site_file(python)
    env = {k: v for k, v in os.environ.items() if k != "SETUPTOOLS_USE_DISTUTILS"}
    out = subprocess.run([str(python), "-c", "import os; print(os.environ['SETUPTOOLS_USE_DISTUTILS'])"],
                         env=env, check=True, capture_output=True, text=True).stdout
    assert out.strip() == "stdlib"


def test_an_installed_project_runs_in_place():
    assert environment.project_installed()  # the test environment holds the project
    environment.ensure(["unused"])  # returns instead of re-running anything


def test_a_managed_environment_with_an_old_stamp_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setattr(environment, "venv_dir", lambda: tmp_path)
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    (tmp_path / environment.STAMP).write_text("stale\n")
    assert not environment.project_installed()
    (tmp_path / environment.STAMP).write_text(environment.fingerprint() + "\n")
    assert environment.project_installed()


def test_a_made_environment_without_the_project_stops_instead_of_looping(tmp_path, monkeypatch):
    monkeypatch.setattr(environment, "project_installed", lambda: False)
    monkeypatch.setattr(environment, "venv_dir", lambda: tmp_path)
    monkeypatch.setenv(environment._REEXEC, str(tmp_path))
    with pytest.raises(SystemExit, match="does not hold the project"):
        environment.ensure(["bench/run.py"])


def test_an_unsupported_python_without_a_supported_one_on_path_is_named(monkeypatch):
    monkeypatch.setattr(sys, "version_info", (3, 13, 0))
    monkeypatch.setattr(environment.shutil, "which", lambda name: None)
    with pytest.raises(environment.SetupError, match="needs Python 3.10 or 3.11"):
        environment.base_python()


def test_a_failed_step_reports_its_output(tmp_path):
    with pytest.raises(environment.SetupError, match="(?s)failing step failed .exit 3.*boom"):
        environment._run([sys.executable, "-c", "print('boom'); raise SystemExit(3)"], "failing step")


def test_this_environment_holds_the_pinned_versions():
    assert environment.unmet_pins() == []


def test_a_version_other_than_the_pin_is_reported(tmp_path):
    (tmp_path / "constraints.txt").write_text("# a comment\nnumpy==0.0.1  # why\nsetuptools<81\nnot-installed==1\n")
    import numpy
    assert environment.unmet_pins(tmp_path / "constraints.txt") == [("numpy", numpy.__version__, "0.0.1")]


@pytest.mark.parametrize("entry", ["ensure", "main"])
def test_an_environment_path_that_is_a_file_is_one_line_and_kept(tmp_path, monkeypatch, entry):
    venv = tmp_path / ".venv"
    venv.write_text("/somewhere/else/env\n")  # what some tools write
    monkeypatch.setattr(environment, "project_installed", lambda: False)
    monkeypatch.setenv("DCTTS_VENV", str(venv))
    with pytest.raises(SystemExit, match=f"error: {venv} exists and is not a directory") as stop:
        environment.ensure(["bench/run.py"]) if entry == "ensure" else environment.main([])
    assert "\n" not in str(stop.value) and "DCTTS_VENV" in str(stop.value)
    assert venv.read_text() == "/somewhere/else/env\n"


def test_bench_run_with_a_venv_file_says_so_in_one_line(tmp_path):
    venv = tmp_path / "venv-file"
    venv.write_text("x\n")
    root = environment.ROOT
    # -S: no site-packages, so the project is not installed and the command would make its environment
    proc = subprocess.run([sys.executable, "-S", str(root / "bench/run.py"), "--help"], capture_output=True,
                          text=True, env={**os.environ, "DCTTS_VENV": str(venv)})
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "is not a directory" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and venv.read_text() == "x\n"
