"""impl_gluon.runtime: the thread count is fixed before mxnet is imported, devices resolve clearly."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from impl_gluon import runtime

ROOT = Path(__file__).resolve().parents[2]


def run_fresh(code: str, **env) -> subprocess.CompletedProcess:
    """`code` in a new interpreter (mxnet not imported yet), with DCTTS_THREADS/OMP_NUM_THREADS from `env` only."""
    base = {k: v for k, v in os.environ.items() if k not in ("DCTTS_THREADS", "OMP_NUM_THREADS", "MXNET_OMP_MAX_THREADS")}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                          env={**base, **env})


def test_threads_are_set_before_mxnet_and_cannot_change_after():
    proc = run_fresh("""
        import os
        from impl_gluon import runtime
        assert os.environ["OMP_NUM_THREADS"] == "3", os.environ["OMP_NUM_THREADS"]  # from DCTTS_THREADS
        assert runtime.configure_threads(2) == 2 and os.environ["MXNET_OMP_MAX_THREADS"] == "2"
        import mxnet
        assert runtime.configure_threads(2) == 2  # the count in force: fine
        try:
            runtime.configure_threads(1)
        except RuntimeError as err:
            print(err)
    """, DCTTS_THREADS="3")
    assert proc.returncode == 0, proc.stderr
    assert "already imported with 2 thread(s)" in proc.stdout and "before the first `import mxnet`" in proc.stdout


def test_default_thread_count_is_every_cpu_or_the_users_omp_setting():
    code = "from impl_gluon import runtime; import os; print(os.environ['OMP_NUM_THREADS'])"
    assert run_fresh(code).stdout.strip() == str(os.cpu_count())
    assert run_fresh(code, OMP_NUM_THREADS="5").stdout.strip() == "5"


def test_bad_thread_count_is_refused():
    with pytest.raises(ValueError, match=">= 1"):
        runtime.configure_threads(0)


def test_devices_resolve_or_fail_clearly():
    import mxnet as mx

    assert runtime.resolve_device("cpu") == mx.cpu()
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        runtime.resolve_device("tpu")
    if mx.context.num_gpus() == 0:
        with pytest.raises(RuntimeError, match="mxnet-cu112"):
            runtime.resolve_device("cuda:0")
    else:
        assert runtime.resolve_device("cuda:0") == mx.gpu(0)
