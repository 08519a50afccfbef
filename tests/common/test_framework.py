"""common.framework: what it does to the process a backend runs in."""
import subprocess
import sys
import textwrap
import types

import pytest

from common import framework

# A 20 MB array held while glibc's own statistics are read: hblkhd counts the bytes in mapped
# (mmap) blocks, which is where glibc puts a block that large by default.
PROBE = textwrap.dedent("""
    import ctypes, sys
    import numpy as np
    from common import framework
    if sys.argv[1] == "keep":
        assert framework.keep_freed_memory()
    class Info(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
    mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
    mallinfo2.restype = Info
    block = np.ones(5 << 20, np.float32)
    held = mallinfo2().hblkhd
    del block
    print(held >> 20, mallinfo2().fordblks >> 20)
""")


def probe(mode: str) -> tuple:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True).stdout
    return tuple(int(v) for v in out.split())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_backends_run_where_glibc_keeps_large_freed_blocks_for_reuse():
    mapped_default, _ = probe("default")
    mapped, free_after = probe("keep")
    assert mapped_default >= 20  # by default the 20 MB block is mapped, and unmapped when freed
    assert mapped < 20 and free_after >= 20  # kept: on the heap, and still there once freed


def test_load_backend_sets_the_allocator_before_importing_the_framework(monkeypatch):
    events = []
    monkeypatch.setattr(framework, "keep_freed_memory", lambda: events.append("allocator"))
    monkeypatch.setattr(framework.importlib, "import_module",
                        lambda name: events.append(name) or types.SimpleNamespace(Backend="the class"))
    assert framework.load_backend("chainer") == "the class"
    assert events == ["allocator", "impl_chainer.backend"]


def test_tiers_are_listed_tuned_first_once_each():
    assert framework.ordered_tiers(["stock", "tuned", "stock"]) == ["tuned", "stock"]
    assert framework.ordered_tiers(iter(["stock"])) == ["stock"] and framework.ordered_tiers([]) == []
