"""Why torch and chainer trail gluon on the AMD host (2026-12-07): the fp32 products and convolutions
each library reaches there. Run alone: `OMP_NUM_THREADS=2 .venv/bin/python results/cpu-2core-2026-12-07-conv-paths/probe.py`
(output: probe.txt beside it). Products: a 2048x2048 @ 2048x2048, best of 10 after one call.
Convolutions: forward + backward of one layer, B=4, T=160, inputs channels-last as in the network,
median of 8 after 2: impl_torch.conv.conv1d (im2col + one MKL GEMM a pass) against F.conv1d (oneDNN)."""
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench.frameworks import peak_matmul  # noqa: E402
from impl_torch import conv  # noqa: E402

torch.set_num_threads(2)
print("products, GFLOP/s (bench.frameworks.peak_matmul: 2048², best of 10 after one call):")
for framework in ("numpy", "torch", "gluon"):  # OpenBLAS; MKL; MXNet's OpenBLAS dot and gemm2, oneDNN's FullyConnected
    for method, gflops in peak_matmul(framework, n=2048)["all_gflops"].items():
        print(f"  {method} {gflops:.0f}")


def step(fn, x, w, n=8):
    times = []
    for _ in range(n + 2):
        x.grad = w.grad = None
        start = time.perf_counter()
        fn(x, w).sum().backward()
        times.append(time.perf_counter() - start)
    return statistics.median(times[2:])


print("convolutions, forward + backward, GFLOP/s:")
for cin, cout, k, d in [(512, 1024, 3, 3), (256, 512, 3, 9), (512, 512, 1, 1)]:
    x = torch.rand(4, 160, cin).transpose(1, 2).requires_grad_()
    w = (torch.rand(cout, cin, k) * 0.01).requires_grad_()
    pad = ((k - 1) * d // 2, (k - 1) * d - (k - 1) * d // 2)
    ours = step(lambda x, w: conv.conv1d(x, w, None, pad, d), x, w)
    stock = step(lambda x, w: F.conv1d(F.pad(x, pad), w, dilation=d), x.detach().contiguous().requires_grad_(), w)
    flop = 3 * 2 * 4 * cout * cin * k * 160 / 1e9
    print(f"  {cin}->{cout}, k={k}, dilation {d}: im2col {flop / ours:.0f}, F.conv1d {flop / stock:.0f} "
          f"(im2col takes {ours / stock:.2f}x the time)")
