"""The README's two commands on a fresh machine (the benchmark shortened to one synthesis run per
framework: .ci/run's first step runs it whole, and the environment is what is tested here): a copy
of the checkout (what git would ship:
tracked and untracked-not-ignored files, no .venv, no .tox), a PATH of only the base Python's
folder and /usr/bin:/bin, an empty pip cache (so chainer's sdist really builds) and no
virtual environment, hence Python's bundled old pip. Slow (it builds the whole environment):
run by `tox -e fresh`, which .ci/run calls.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SETUP = "[dctts-bench setup]"


def base_python() -> str:
    """The interpreter this test's venv was made from: a Python outside any venv."""
    return getattr(sys, "_base_executable", None) or sys.executable


def checkout_copy(dest: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fresh")
    repo = checkout_copy(tmp / "repo")
    python = base_python()
    env = {"PATH": f"{Path(python).parent}:/usr/bin:/bin", "HOME": os.environ.get("HOME", str(tmp)),
           "PIP_CACHE_DIR": str(tmp / "pip-cache"), "LANG": "C.UTF-8"}
    old_pip = subprocess.run([python, "-m", "venv", "--help"], env=env, capture_output=True)
    assert old_pip.returncode == 0, "the base Python cannot make virtual environments"
    return repo, python, env


def run(cmd: list, repo: Path, env: dict, timeout: int) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def test_benchmark_command_sets_up_and_runs_all_three(fresh):
    repo, python, env = fresh
    proc = run([python, "bench/run.py", "--framework", "all", "--task", "synthesize", "--ops", "tuned",
                "--synth-batch", "1", "--steps", "1", "--warmup", "1"], repo, env, timeout=3600)
    assert f"{SETUP} making the project's environment" in proc.stderr and f"{SETUP} upgrading pip" in proc.stderr
    results = json.loads(next((repo / "out").glob("bench-*/results.json")).read_text())
    ran = {(r["framework"], r["task"]): r["status"] for r in results["runs"]}
    assert {fw for fw, _ in ran} == {"torch", "chainer", "gluon"}
    assert set(ran.values()) == {"ok"}, ran
    pip = run([str(repo / ".venv/bin/python"), "-m", "pip", "--version"], repo, env, timeout=60).stdout
    assert int(pip.split()[1].split(".")[0]) >= 25, pip


def test_chainer_imports_in_the_environment_without_the_project(fresh):
    repo, _, env = fresh
    run([str(repo / ".venv/bin/python"), "-c", "import chainer"], repo, env, timeout=300)


def test_test_command_reuses_the_environment_and_runs_tox(fresh):
    repo, python, env = fresh
    proc = run([python, "tests/run.py", "-e", "torch", "--", "-q", "-k", "test_text"], repo, env,
               timeout=3600)
    assert SETUP not in proc.stderr  # made once by the first command
    assert " passed" in proc.stdout and "torch: OK" in proc.stdout
