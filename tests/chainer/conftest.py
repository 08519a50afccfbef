"""One BLAS thread for the chainer tests (Chainer computes on NumPy): their inputs are tiny, so
per-op overhead dominates where extra threads only spin, and the test machine's cores are
shared. Importing impl_chainer.runtime here also puts its import workaround ahead of every
test module's `import chainer`."""
from impl_chainer.runtime import configure_threads

configure_threads(1)
