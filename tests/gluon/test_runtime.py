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


def test_large_copies_start_no_second_openmp_team():
    """A copy above MXNET_CPU_PARALLEL_SIZE runs as an OpenMP loop on MXNet's copy thread: a second
    team of threads beside the operators' one, spinning on the same cores (made synthesis ~8x
    slower, see runtime.py). With runtime's limit the process keeps its threads; with MXNet's own
    default (200,000 elements) the same copies add one (checks that this test can see it)."""
    code = """
        import os
        from impl_gluon import runtime
        import mxnet as mx, numpy as np
        x = mx.nd.ones((256, 256))
        mx.nd.dot(x, x + 1).wait_to_read()  # the operators' team exists
        before = len(os.listdir("/proc/self/task"))
        for size in (300_000, 3_000_000):
            mx.nd.array(np.ones(size, np.float32)).copy().wait_to_read()
        mx.nd.waitall()
        print(before, len(os.listdir("/proc/self/task")))
    """
    ours = run_fresh(code, OMP_NUM_THREADS="2")
    assert ours.returncode == 0, ours.stderr
    before, after = map(int, ours.stdout.split())
    assert after == before
    mxnet_default = run_fresh(code, OMP_NUM_THREADS="2", MXNET_CPU_PARALLEL_SIZE="200000")
    before, after = map(int, mxnet_default.stdout.split())
    assert after > before


def test_reading_a_blocked_layout_output_starts_no_second_openmp_team():
    """asnumpy of a hybridized network's output still in MKLDNN's blocked layout reorders it on the
    Python thread: an OpenMP team of its own there unless runtime.serial_main_thread (which the
    Backend calls) has limited that thread. Without it (the last run) the same read adds a thread."""
    code = """
        import os
        from impl_gluon import runtime
        import mxnet as mx
        from mxnet import gluon
        if "KEEP_MAIN_THREAD" not in os.environ:
            runtime.serial_main_thread()
        net = gluon.nn.HybridSequential()
        net.add(gluon.nn.Conv1D(256, 3, padding=1, in_channels=256), gluon.nn.Conv1D(80, 1, in_channels=256))
        net.initialize()
        net.hybridize(static_alloc=True)
        x = mx.nd.ones((2, 256, 10))
        net(x).wait_to_read()
        before = len(os.listdir("/proc/self/task"))
        net(x).asnumpy()
        print(before, len(os.listdir("/proc/self/task")))
    """
    ours = run_fresh(code, OMP_NUM_THREADS="2")
    assert ours.returncode == 0, ours.stderr
    before, after = map(int, ours.stdout.split())
    assert after == before
    before, after = map(int, run_fresh(code, OMP_NUM_THREADS="2", KEEP_MAIN_THREAD="1").stdout.split())
    assert after > before
