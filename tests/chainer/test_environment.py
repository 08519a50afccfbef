"""`import chainer` works in the project's environment on its own (no project module first)."""
import os
import subprocess
import sys


def test_chainer_imports_in_a_fresh_interpreter_without_the_project():
    env = {k: v for k, v in os.environ.items() if k not in ("SETUPTOOLS_USE_DISTUTILS", "PYTHONPATH")}
    proc = subprocess.run([sys.executable, "-c", "import chainer, sys; print(chainer.__version__, "
                           "any(m.startswith(('common', 'impl_')) for m in sys.modules))"],
                          env=env, cwd="/", capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["7.8.1", "False"]
