"""Benchmarks: each framework timed in its own subprocess on identical, prebuilt batches."""
