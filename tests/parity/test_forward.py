"""Same weights, same batch, eval mode: every pair of frameworks gives the same Text2Mel and SSRN
outputs, the same losses and the same gradient for every parameter."""
import dataclasses
import functools

import numpy as np
import pytest

from common.contract import reference as R, spec as S
from common.data.batch import random_batch
from common.contract.compare import explain, first_divergence, reference_losses, relative_error
from common.framework import FRAMEWORKS
from common.contract.weights import init_weights

# (preset, tolerance) of the relative error max |a - b| / max |b| on a short input (B=2, N=12, T=10).
# `tiny` is held to 1e-5 of the output's scale rather than 1e-5 absolute: its logits reach 2.3-3.7,
# and each framework alone is ~4e-6 relative (~1e-5 absolute) from the float64 reference, so two
# correct ones measured up to 1.1e-5 apart in absolute terms (torch/gluon, one thread each).
CASES = [("tiny", 1e-5), ("paper", 1e-4), ("community", 1e-4)]
LOSS_TOL, GRAD_TOL = 1e-5, 1e-4


KINK_MARGIN = 1e-5  # relative to the layer's largest value; above the fp32 error measured at community size


def kink_margin(spec, net, batch) -> float:
    """How far, in the float64 reference, every ReLU input stays from 0 (relative to the largest
    input of its layer): where the loss is not
    differentiable. Inside fp32 round-off of such a point (or of an L1 kink, where an output equals
    its target), correct implementations take different sides and their gradients part (measured
    once: one SSRN output 3.8e-7 from its target changed every community SSRN gradient by 0.3%).
    Returns 0 when a logit is so large that an fp32 sigmoid could round to a 0/1 target."""
    w = {k: v.astype(np.float64) for k, v in init_weights(spec, net, seed=0).items()}
    margins = []

    def walk(layers, x):
        for layer in layers:
            x = R.layer_forward(spec, w, dataclasses.replace(layer, act=None), x)
            if layer.act == "relu":
                margins.append(np.abs(x).min() / np.abs(x).max())  # fp32 error scales with the values
                x = np.maximum(x, 0)
        return x

    if net == "text2mel":
        kv = walk(S.text_enc_layers(spec), batch.text)
        q = walk(S.audio_enc_layers(spec), R.shift_mel(batch.mel))
        r = R.attention(spec, kv[:, :spec.D], kv[:, spec.D:], q, R.pad_bias(batch.text))[0]
        logits = walk(S.audio_dec_layers(spec), r)
    else:
        logits = walk(S.ssrn_layers(spec), batch.mel)
    return min(margins) if np.abs(logits).max() < 15 else 0.0


@functools.lru_cache(maxsize=None)
def gradient_batch(preset: str, net: str):
    """The first short batch (by seed) with no loss kink within KINK_MARGIN. Its targets are 0/1,
    which an fp32 sigmoid never reaches at logits below 15 (no L1 kink), and it is short (B=2, N=12, T=4
    and 3 reduced frames), so few ReLU inputs can come near 0 (at community SSRN, ~25k of them)."""
    spec = S.get_spec(preset)
    for seed in range(50):
        batch = random_batch(spec, (12, 9), (4 * spec.r, 3 * spec.r), seed)
        batch = dataclasses.replace(batch, mel=np.round(batch.mel), mag=np.round(batch.mag))
        if kink_margin(spec, net, batch) >= KINK_MARGIN:
            return batch
    raise AssertionError(f"no kink-free batch among 50 seeds at {preset} {net}")


def outputs(once, backend_class, preset, net, fw):
    spec = S.get_spec(preset)

    def compute():
        backend = backend_class(fw)(spec, net, seed=0)
        batch = gradient_batch(preset, net)
        losses, grads = backend.gradients(batch)
        return {"out": backend.forward(batch), "losses": losses, "grads": grads}

    return once((preset, net), fw, compute)


def why(backend_class, preset, net, pair):
    spec = S.get_spec(preset)
    return explain(spec, net, {fw: backend_class(fw)(spec, net, seed=0) for fw in pair}, gradient_batch(preset, net))


@pytest.mark.parametrize("preset,tol", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("net", S.NETS)
def test_outputs_agree(once, backend_class, pair, preset, tol, net):
    a, b = (outputs(once, backend_class, preset, net, fw)["out"] for fw in pair)
    assert a.keys() == b.keys()
    errors = {k: relative_error(a[k], b[k]) for k in b}
    if not all(e <= tol for e in errors.values()):
        pytest.fail(f"{'/'.join(pair)} {preset} {net}: relative errors {errors} > {tol:g}\n"
                    + why(backend_class, preset, net, pair))


@pytest.mark.parametrize("preset", [c[0] for c in CASES])
@pytest.mark.parametrize("net", S.NETS)
def test_losses_and_gradients_agree(once, backend_class, pair, preset, net):
    a, b = (outputs(once, backend_class, preset, net, fw) for fw in pair)
    loss_errors = {k: abs(a["losses"][k] - b["losses"][k]) / abs(b["losses"][k]) for k in b["losses"]}
    assert a["losses"].keys() == b["losses"].keys() and all(e <= LOSS_TOL for e in loss_errors.values()), \
        f"{'/'.join(pair)} {preset} {net}: relative loss errors {loss_errors} > {LOSS_TOL:g}"
    spec = S.get_spec(preset)
    assert a["grads"].keys() == b["grads"].keys() == S.net_param_shapes(spec, net).keys()
    first = first_divergence(spec, net, a["grads"], b["grads"], GRAD_TOL)
    if first is not None:
        last = first_divergence(spec, net, a["grads"], b["grads"], GRAD_TOL, backward=True)
        pytest.fail(f"{'/'.join(pair)} {preset} {net}: gradients part (|difference| / |gradient| > {GRAD_TOL:g}) "
                    f"first in forward order at {first}, first in backward order at {last}")


DIRECTION_STEP, DIRECTION_RTOL = 1e-7, 1e-3


@functools.lru_cache(maxsize=None)
def directions(preset: str, net: str) -> list:
    """[(name -> direction, the float64 reference's directional derivative of the loss, its
    round-off: 8 float64 epsilons of the loss over the step)]: one
    direction over every parameter, and one over each of the first, a middle and the last
    parameter in forward order. Each parameter's direction is scaled to its RMS, and the central
    difference's step (DIRECTION_STEP of it) stays far inside the batch's kink margin."""
    spec = S.get_spec(preset)
    batch = gradient_batch(preset, net)
    w = {k: v.astype(np.float64) for k, v in init_weights(spec, net, seed=0).items()}
    names = list(S.net_param_shapes(spec, net))
    rng = np.random.default_rng(11)
    out = []
    for chosen in (names, [names[0]], [names[len(names) // 2]], [names[-1]]):
        d = {k: rng.normal(size=w[k].shape) * (np.sqrt(np.mean(w[k] ** 2)) or 1.0) for k in chosen}
        plus, minus = (reference_losses(spec, net, {k: v + sign * DIRECTION_STEP * d.get(k, 0.0)
                                                    for k, v in w.items()}, batch)["loss"] for sign in (1, -1))
        out.append((d, (plus - minus) / (2 * DIRECTION_STEP), 8 * np.finfo(np.float64).eps * abs(plus) / DIRECTION_STEP))
    return out


@pytest.mark.parametrize("preset", ["community", "paper"])
@pytest.mark.parametrize("net", S.NETS)
@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_gradients_match_the_reference_at_full_size(once, backend_class, fw, preset, net):
    """Each framework's gradients, projected on random directions, equal the float64 reference's
    central differences within DIRECTION_RTOL plus their round-off (the pair tests above compare frameworks with each
    other; this compares each with the reference, at the sizes people train)."""
    grads = outputs(once, backend_class, preset, net, fw)["grads"]
    for d, numeric, round_off in directions(preset, net):
        analytic = sum(float(np.sum(grads[k].astype(np.float64) * v)) for k, v in d.items())
        assert abs(analytic - numeric) <= DIRECTION_RTOL * abs(numeric) + round_off, \
            f"{fw} {preset} {net} along {len(d)} parameter(s) from {next(iter(d))}: {analytic:.6g} vs {numeric:.6g}"


def test_a_framework_that_does_not_import_fails_its_pairs():
    """tox -e parity must not go green with a framework missing (it used to skip the pairs)."""
    from tests.parity.conftest import backend_loader

    def broken(fw):
        raise RuntimeError("No module named 'mxnet'")

    with pytest.raises(pytest.fail.Exception, match="gluon is unavailable: No module named 'mxnet'"):
        backend_loader(broken)("gluon")
