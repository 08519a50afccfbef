"""impl_chainer specifics the framework-neutral layer tests (tests/chainer/test_layer_contract.py,
tests/layer_contract.py) cannot see: the runtime's threads, devices and GPU autotuning."""
from impl_chainer import runtime  # before chainer: its import-time check breaks here

import chainer
import numpy as np
import pytest


def test_runtime_threads_and_devices():
    from threadpoolctl import threadpool_info

    try:
        runtime.configure_threads(2)
        assert {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"} == {2}
    finally:
        runtime.configure_threads(1)  # the tests' setting (conftest.py)
    assert {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"} == {1}
    with pytest.raises(ValueError, match="thread count"):
        runtime.configure_threads(0)
    assert runtime.resolve_device("cpu").xp is np
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        runtime.resolve_device("tpu")


def test_gpu_autotuning_turns_cudnn_autotune_on(monkeypatch):
    """What resolve_device("cuda") sets (checked without a GPU: the flag is plain configuration)."""
    monkeypatch.setattr(chainer.global_config, "autotune", False)
    runtime.gpu_autotuning()
    assert chainer.config.autotune is True
