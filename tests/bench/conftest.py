"""A NumPy stand-in Backend (common.contract.reference in float32, no training) so the benchmark's
machinery is tested even where no framework imports, and a pick of the real ones that do."""
import os

import numpy as np
import pytest

from common.contract.compare import reference_outputs
from common.contract import losses
from common.framework import FRAMEWORKS, Backend, load_backend
from common.contract.weights import init_weights


class ReferenceBackend(Backend):
    """Forward = common.contract.reference; train_step computes the losses without updating anything."""

    framework = "reference"

    def __init__(self, spec, net, device="cpu", seed=0):
        super().__init__(spec, net, device, seed)
        self.weights = init_weights(spec, net, seed)

    def get_weights(self):
        return dict(self.weights)

    def set_weights(self, weights):
        self.weights = {k: np.asarray(v, np.float32) for k, v in weights.items()}

    def forward(self, batch):
        return {k: v.astype(np.float32) for k, v in reference_outputs(self.spec, self.net, self.weights, batch).items()}

    def train_step(self, batch):
        out = self.forward(batch)
        if self.net == "ssrn":
            return losses.ssrn_losses(out["logits"], batch)
        return losses.text2mel_losses(out["logits"], out["attention"], batch)

    def seed(self, seed):
        pass

    def gradients(self, batch):
        raise NotImplementedError

    def get_optimizer_state(self):
        raise NotImplementedError

    def set_optimizer_state(self, state):
        raise NotImplementedError


def importable(framework):
    try:
        load_backend(framework)
        return True
    except RuntimeError:
        return False


@pytest.fixture
def reference_backend():
    return ReferenceBackend


@pytest.fixture
def backend_class():
    """backend_class(name, ops): the stand-in for "reference" (which has one tier), else the framework's
    Backend in that tier of operators (or skip; a failure where DCTTS_ALL_FRAMEWORKS=1, as in
    `tox -e parity`, which installs all three)."""
    def get(name, ops="tuned"):
        if name == ReferenceBackend.framework:
            return ReferenceBackend
        try:
            return load_backend(name, ops)
        except RuntimeError as err:
            if os.environ.get("DCTTS_ALL_FRAMEWORKS") == "1":
                pytest.fail(f"{name} is unavailable: {err}", pytrace=False)
            pytest.skip(f"{name} is unavailable: {err}")

    return get


@pytest.fixture(scope="session")
def real_framework():
    """The first framework of common.framework.FRAMEWORKS whose backend imports (else skip)."""
    for fw in FRAMEWORKS:
        if importable(fw):
            return fw
    pytest.skip(f"none of {FRAMEWORKS} is importable here")
