"""The parity gate passes an honest backend and stops one with a perturbed weight; the
divergence walk names the first differing parameter in forward order."""
import numpy as np
import pytest

from bench import inputs, parity
from bench.parity import parity_gate
from common.contract.compare import first_divergence, norm_relative_error, relative_error
from common.contract import spec as S
from common.framework import FRAMEWORKS, OPS
from common.contract.weights import init_weights

PERTURBED = {"text2mel": "textenc.1.weight", "ssrn": "ssrn.0.bias"}  # early layers: every output moves


# the stand-in once, each framework in each tier of operators
BACKENDS = [("reference", "tuned")] + [(fw, ops) for fw in FRAMEWORKS for ops in OPS]


@pytest.mark.parametrize("name, ops", BACKENDS, ids="-".join)
@pytest.mark.parametrize("net", S.NETS)
def test_gate_passes_unperturbed_and_fails_perturbed(backend_class, name, ops, net):
    spec = S.get_spec("tiny")
    batch = inputs.short_batch(spec)
    weights = init_weights(spec, net, seed=0)
    backend = backend_class(name, ops)(spec, net, seed=0)
    ok = parity_gate(backend, weights, batch)
    assert ok["passed"], ok
    assert set(ok["errors"]) == ({"logits", "attention"} if net == "text2mel" else {"logits"})
    bad = {k: v.copy() for k, v in weights.items()}
    bad[PERTURBED[net]].flat[0] += 0.5  # one element: a shift of every channel would vanish in layer norm
    backend.set_weights(bad)
    failed = parity_gate(backend, weights, batch)
    assert not failed["passed"] and failed["errors"]["logits"] > 100 * failed["tol"], failed


def test_gate_fails_on_a_missing_output(reference_backend):
    spec = S.get_spec("tiny")

    class NoAttention(reference_backend):
        def forward(self, batch):
            return {"logits": super().forward(batch)["logits"]}

    gate = parity_gate(NoAttention(spec, "text2mel"), init_weights(spec, "text2mel"), inputs.short_batch(spec))
    assert not gate["passed"] and gate["errors"]["attention"] == float("inf")


def test_first_divergence_names_the_earliest_parameter_in_forward_order():
    spec = S.get_spec("tiny")
    a = init_weights(spec, "text2mel")
    b = {k: v.copy() for k, v in a.items()}
    assert first_divergence(spec, "text2mel", a, b, tol=1e-6) is None
    b["audiodec.2.weight"] *= 1.01
    b["audioenc.5.bias"] += 0.1
    block, name, err = first_divergence(spec, "text2mel", a, b, tol=1e-6)
    assert (block, name) == ("audioenc", "audioenc.5.bias") and err > 1e-3  # audioenc comes before audiodec
    del b["audioenc.5.bias"]
    assert first_divergence(spec, "text2mel", a, b, tol=1e-6)[1:] == ("audioenc.5.bias", float("inf"))


def test_error_measures():
    ref = np.array([[1.0, -4.0], [2.0, 0.0]])
    assert relative_error(ref + np.array([[0.0, 0.4], [0.0, 0.0]]), ref) == pytest.approx(0.1)
    assert relative_error(ref[:1], ref) == float("inf")
    assert norm_relative_error(np.zeros(3), np.zeros(3)) == 0.0
    assert norm_relative_error(np.array([3.0, 4.0]), np.array([3.0, 4.5])) == pytest.approx(0.5 / np.hypot(3, 4.5))


@pytest.mark.parametrize("name, ops", BACKENDS, ids="-".join)
@pytest.mark.parametrize("net", S.NETS)
def test_the_training_step_gate_compares_losses_with_the_reference(backend_class, name, ops, net):
    """What is timed is a training step: its losses must be the reference's; a wrong loss fails."""
    spec = S.get_spec("tiny").replace(dropout=0.05)  # the gate turns dropout off, as the reference has none
    batch, weights = inputs.short_batch(spec), init_weights(spec, net, seed=0)
    gate, updates = parity.train_step_gate(backend_class(name, ops), spec, net, weights, batch, "cpu", 0)
    assert gate["passed"] and "loss" in gate["errors"], gate
    assert set(updates) == set(weights) and all(0 < u.size <= parity.UPDATE_SAMPLE for u in updates.values())
    assert name == "reference" or any(np.any(u != 0) for u in updates.values())  # the stand-in does not learn

    class HalfLoss(backend_class(name, ops)):
        def train_step(self, batch):
            return {k: v * 0.5 for k, v in super().train_step(batch).items()}

    wrong, _ = parity.train_step_gate(HalfLoss, spec, net, weights, batch, "cpu", 0)
    assert not wrong["passed"] and wrong["errors"]["loss"] == pytest.approx(0.5)


def test_cross_check_compares_updates_and_synthesis_across_frameworks(tmp_path):
    rng = np.random.default_rng(0)
    update = {"a.weight": rng.standard_normal(100), "b.bias": rng.standard_normal(10)}
    parity.save(tmp_path / "torch--train-ssrn-tiny-b4.npz", update)
    parity.save(tmp_path / "chainer--train-ssrn-tiny-b4.npz", {k: v * (1 + 1e-5) for k, v in update.items()})
    parity.save(tmp_path / "gluon--train-ssrn-tiny-b4.npz", {**update, "b.bias": -update["b.bias"]})
    mels = {f"mel{i}": rng.random((4, 6 + i)) for i in range(3)}
    parity.save(tmp_path / "torch--synthesize-tiny-b8.npz", mels)
    parity.save(tmp_path / "chainer--synthesize-tiny-b8.npz", {**mels, "mel1": mels["mel1"][:, :5] + 1e-6})
    parity.save(tmp_path / "gluon--synthesize-tiny-b8.npz", {**mels, "mel2": mels["mel2"] + 0.1})
    parity.save(tmp_path / "torch--synthesize-tiny-b1.npz", mels)  # one framework alone: nothing to compare
    lines = parity.cross_check(tmp_path)
    assert len(lines) == 2
    synth, train = lines  # in file-name order: the first framework by name (chainer) is the reference
    assert train.startswith("cross-framework gate, train-ssrn-tiny-b4: one training step's updates")
    assert "torch 1.0e-05" in train and train.endswith(": FAIL")  # gluon's bias update has the wrong sign
    assert "gluon vs chainer:" in synth and "1 of 3 utterances end elsewhere (the first, #1: 7 vs 5 frames)" in synth
    assert "FAIL from utterance #2" in synth and "torch vs chainer: 1 of 3" in synth
