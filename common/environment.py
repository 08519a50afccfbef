"""The project's Python environment, made on first use, so that the README's two commands
(`python bench/run.py ...`, `python tests/run.py ...`) work on a machine that has nothing but
Python 3.10/3.11 and the package registries.

`ensure()` runs before anything outside the standard library is imported. When the current
interpreter is not an environment holding this project, it creates `.venv` in the checkout
(or $DCTTS_VENV) once: a venv, a current pip (Python's bundled pip ignores
PIP_BUILD_CONSTRAINT, which chainer's sdist needs), then the project with every framework,
the test extras and tox, all pinned by constraints.txt; espeak-ng comes as a pinned wheel
(common.data.espeak), so nothing is installed from the system. A stamp (a hash of the files that
decide the environment) makes later runs reuse it and a changed pin update it. The command
then re-runs itself in that environment.

Stdlib only: this module runs before the project's dependencies exist.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHONS = ((3, 10), (3, 11))  # chainer 7.8.1 and mxnet 1.9.1 run on no newer Python
SPEC = ".[torch,chainer,gluon,test,tune]"
TOOLS = ("tox", "virtualenv")  # pinned in constraints.txt like the rest
DECIDING_FILES = ("pyproject.toml", "constraints.txt", "build-constraints.txt", "common/environment.py")
STAMP = ".dctts-bench-env"
# chainer 7.8.1 imports numpy.distutils at import time, and numpy 1.23's distutils needs
# `distutils.msvccompiler`, which the distutils that setuptools >= 74 substitutes for the
# standard library's lacks (torch 2.13 requires setuptools >= 77). Python <= 3.11 still has
# its own distutils, which has it: setuptools uses that one when SETUPTOOLS_USE_DISTUTILS is
# "stdlib". This .pth file sets that default in the environment at interpreter start-up; its
# name sorts before setuptools' distutils-precedence.pth, which reads the variable.
SITE_FILE = "dctts-bench-distutils.pth"
SITE_LINE = "import os; os.environ.setdefault('SETUPTOOLS_USE_DISTUTILS', 'stdlib')\n"
_REEXEC = "DCTTS_BENCH_REEXEC"  # set when re-running in the managed environment: never loop


class SetupError(RuntimeError):
    """The environment cannot be made here (no usable Python, a failed install)."""


def venv_dir() -> Path:
    return Path(os.environ.get("DCTTS_VENV") or ROOT / ".venv").resolve()


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def fingerprint() -> str:
    """Hash of the files that decide what the environment holds."""
    h = hashlib.sha256()
    for name in DECIDING_FILES:
        h.update(name.encode() + b"\0" + (ROOT / name).read_bytes() + b"\0")
    return h.hexdigest()[:16]


def project_installed() -> bool:
    """True when this interpreter has the project installed (the managed .venv with a current
    stamp, a tox environment, or a venv a user set up by hand): then commands run in place.
    Only the interpreter's site-packages count: the checkout's own dctts_bench.egg-info (left
    by an editable install) is on sys.path too and proves nothing."""
    site = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
    if not any(importlib.metadata.distributions(name="dctts-bench", path=sorted(site))):
        return False
    return Path(sys.prefix).resolve() != venv_dir() or _read_stamp(venv_dir()) == fingerprint()


def _read_stamp(venv: Path) -> str | None:
    try:
        return (venv / STAMP).read_text().strip()
    except OSError:
        return None


def _say(message: str) -> None:
    print(f"[dctts-bench setup] {message}", file=sys.stderr, flush=True)


def _run(cmd: list, what: str, env: dict | None = None) -> None:
    start = time.monotonic()
    _say(f"{what} ...")
    proc = subprocess.run([str(c) for c in cmd], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-40:])
        raise SetupError(f"{what} failed (exit {proc.returncode}):\n{tail}\ncommand: {' '.join(map(str, cmd))}")
    _say(f"{what}: done in {time.monotonic() - start:.0f} s")


def base_python() -> str:
    """A Python the project runs on: this one if its version fits, else python3.11/3.10 on PATH."""
    if sys.version_info[:2] in PYTHONS:
        return sys.executable
    for major, minor in reversed(PYTHONS):
        found = shutil.which(f"python{major}.{minor}")
        if found:
            return found
    wanted = " or ".join(f"{a}.{b}" for a, b in PYTHONS)
    raise SetupError(f"this project needs Python {wanted} (chainer 7.8.1 and mxnet 1.9.1 support nothing "
                            f"newer); this is {sys.version.split()[0]} and no python3.11/python3.10 is on PATH")


def unmet_pins(constraints: Path = ROOT / "constraints.txt") -> list:
    """(name, installed, pinned) for every installed distribution whose version differs from its
    `name==version` line in constraints.txt: an environment installed without PIP_CONSTRAINT
    (a tox section whose setenv replaced the shared one) shows up here, not as a late import
    error. Local version labels (torch's +cpu) are ignored."""
    unmet = []
    for line in constraints.read_text().splitlines():
        name, sep, pinned = line.split("#")[0].strip().partition("==")
        if not sep:
            continue
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        if installed.split("+")[0] != pinned:
            unmet.append((name, installed, pinned))
    return unmet


def write_site_file(python: str | Path) -> Path:
    """Put SITE_FILE into the site-packages of `python`'s environment (see SITE_FILE)."""
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    path = Path(purelib) / SITE_FILE
    path.write_text(SITE_LINE)
    return path


def build(venv: Path) -> None:
    """Create or update the environment in `venv` (idempotent; the stamp is written last)."""
    python = venv_python(venv)
    started = time.monotonic()
    _say(f"making the project's environment in {venv} (once; a few minutes: torch, chainer, mxnet, ...)")
    if not python.exists():
        _run([base_python(), "-m", "venv", venv], "creating the virtual environment")
    env = {**os.environ, "PIP_CONSTRAINT": str(ROOT / "constraints.txt"),
           "PIP_BUILD_CONSTRAINT": str(ROOT / "build-constraints.txt"), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    _run([python, "-m", "pip", "install", "-q", "--upgrade", "pip"], "upgrading pip (to the pinned version)", env)
    _run([python, "-m", "pip", "install", "-q", "-e", SPEC, *TOOLS],
         "installing the project, torch, chainer, mxnet, espeak-ng and tox (pinned by constraints.txt)", env)
    write_site_file(python)
    (venv / STAMP).write_text(fingerprint() + "\n")
    _say(f"environment ready in {time.monotonic() - started:.0f} s; later runs reuse it")


@contextlib.contextmanager
def _locked(venv: Path):
    """One build at a time (two commands started together would otherwise race)."""
    venv.mkdir(parents=True, exist_ok=True)
    with open(venv / ".dctts-bench-env.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ready_venv() -> Path:
    """The managed environment's python, built or updated first when its stamp is not current."""
    venv = venv_dir()
    if venv.exists() and not venv.is_dir():  # some tools write a .venv file naming an environment elsewhere
        raise SetupError(f"{venv} exists and is not a directory; the project's environment goes there: move it "
                         "away, or set DCTTS_VENV to a directory to put the environment elsewhere")
    with _locked(venv):
        if _read_stamp(venv) != fingerprint():
            build(venv)
    return venv_python(venv)


def ensure(argv: list) -> None:
    """Return when this interpreter can run the project; otherwise make (or update) the managed
    environment and re-run `argv` (a script and its arguments) in it. Never returns then."""
    if project_installed():
        return
    if os.environ.get(_REEXEC) == str(venv_dir()):
        sys.exit(f"[dctts-bench setup] error: {venv_dir()} was made but does not hold the project; delete it "
                 "and run the command again")
    try:
        python = str(ready_venv())
    except SetupError as err:
        sys.exit(f"[dctts-bench setup] error: {err}")
    os.environ[_REEXEC] = str(venv_dir())
    os.execv(python, [python, *argv])


def main(argv=None) -> None:
    """`python -m common.environment`: make (or update) the managed environment and print its
    python; `--site-file` only adds SITE_FILE to the running interpreter's environment (for tox
    environments and venvs set up by hand)."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args == ["--site-file"]:
        print(write_site_file(sys.executable))
        return
    if args:
        sys.exit("usage: python -m common.environment [--site-file]")
    try:
        print(ready_venv())
    except SetupError as err:
        sys.exit(f"[dctts-bench setup] error: {err}")


if __name__ == "__main__":
    main()
