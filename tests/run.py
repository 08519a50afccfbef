"""`python tests/run.py [tox arguments]`: the tests, from a fresh machine too.

Without arguments it runs `tox -e torch,chainer,gluon`; any arguments go to tox as they are
(`python tests/run.py -e parity`, `python tests/run.py -e torch -- -k text`). tox comes from
the project's managed environment (common.environment: made on first use, then reused), so
nothing needs to be installed by hand; where the project is already installed (a venv made
by hand), that environment's tox is used.
"""
import importlib.util
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import environment  # noqa: E402  (stdlib only: runs before anything is installed)

DEFAULT = ["-e", "torch,chainer,gluon"]


def main() -> None:
    environment.ensure([__file__, *sys.argv[1:]])
    if importlib.util.find_spec("tox") is None:
        sys.exit(f"tox is not installed in {sys.prefix}; `pip install -c constraints.txt tox` there, or run "
                 f"this with a Python outside any venv to use the project's own environment")
    os.chdir(ROOT)
    os.execv(sys.executable, [sys.executable, "-m", "tox", *(sys.argv[1:] or DEFAULT)])


if __name__ == "__main__":
    main()
