"""A whole torch training step at `paper` (batches of 4, the two timed shapes) with the network's
convolutions on our im2col path or on oneDNN (impl_torch.conv.conv2d_views, as for grouped
convolutions): `python results/cpu-2core-2026-12-07-conv-paths/step.py im2col|onednn text2mel|ssrn`
prints the median seconds of 3 steps of each shape after 2 warm-up steps (step.txt: two rounds,
interleaved, 2026-12-07, the AMD host)."""
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.machine import apply_threads  # noqa: E402

apply_threads(2)
from bench import inputs  # noqa: E402
from common.contract import spec as S  # noqa: E402
from common.framework import configure_threads, load_backend  # noqa: E402
from impl_torch import conv, layers  # noqa: E402

mode, net = sys.argv[1], sys.argv[2]
if mode == "onednn":
    layers.conv1d = lambda x, w, b=None, pad=(0, 0), dilation=1, groups=1: conv.conv2d_views(x, w, b, pad, dilation,
                                                                                            groups)
configure_threads("torch", 2)
spec = S.get_spec("paper")
batches = inputs.timing_batches(spec, 4, 2, 0)
backend = load_backend("torch")(spec, net, seed=0)
for i in range(2):
    backend.train_step(batches[i % 2])
times = {0: [], 1: []}
for i in range(6):
    start = time.perf_counter()
    backend.train_step(batches[i % 2])
    times[i % 2].append(time.perf_counter() - start)
print(mode, net, " ".join(f"{statistics.median(v):.3f}" for v in times.values()))
