"""Same weights, same batch, eval mode: every pair of frameworks gives the same Text2Mel and SSRN
outputs, the same losses and the same gradient for every parameter."""
import pytest

from bench import inputs
from bench.parity import explain, first_divergence, relative_error
from common import spec as S

# (preset, tolerance) of the relative error max |a - b| / max |b| on a short input (B=2, N=12, T=10).
# `tiny` is held to 1e-5 of the output's scale rather than 1e-5 absolute: its logits reach 2.3-3.7,
# and each framework alone is ~4e-6 relative (~1e-5 absolute) from the float64 reference, so two
# correct ones measured up to 1.1e-5 apart in absolute terms (torch/gluon, one thread each).
CASES = [("tiny", 1e-5), ("paper", 1e-4), ("community", 1e-4)]
LOSS_TOL, GRAD_TOL = 1e-5, 1e-4


def outputs(once, backend_class, preset, net, fw):
    spec = S.get_spec(preset)

    def compute():
        backend = backend_class(fw)(spec, net, seed=0)
        batch = inputs.short_batch(spec)
        losses, grads = backend.gradients(batch)
        return {"out": backend.forward(batch), "losses": losses, "grads": grads}

    return once((preset, net), fw, compute)


def why(backend_class, preset, net, pair):
    spec = S.get_spec(preset)
    return explain(spec, net, {fw: backend_class(fw)(spec, net, seed=0) for fw in pair}, inputs.short_batch(spec))


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
