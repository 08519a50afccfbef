"""One PyTorch thread for the torch tests: their inputs are tiny (per-op overhead dominates,
where extra threads only spin) and the test machine's cores are shared."""
from impl_torch.runtime import configure_threads

configure_threads(1)
