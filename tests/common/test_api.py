"""The three implementations mirror each other name for name: the public API of
impl_<fw>/{layers,text2mel,ssrn,train,synthesize} (module functions and classes, the methods each
class defines, their parameter names) is the same in torch, chainer and gluon, except where the
framework forces a difference, listed below with the reason. Compared after the differences
every Gluon block has by construction: `hybrid_forward(self, F, ...)` is `forward(self, ...)` and
its trailing parameter arguments (Gluon passes a block's parameters in) are dropped, as are a
leading `F` (the ndarray/symbol namespace), a trailing `F=...` and `**params`; `ctx` is `device`."""
import importlib
import inspect
import os

import pytest

from common.framework import FRAMEWORKS

MODULES = ("layers", "text2mel", "ssrn", "train", "synthesize")

STEP_ON_ARRAYS = "chainer's synthesis steps compute on plain arrays (a chainer.functions call costs tens of us)"
GLUON_TRACES = "gluon traces its synthesis step through hybrid_forward (StackStep / SynthesisStep): no separate step"
GLUON_PARAMS = "gluon keeps a block's parameters on the block itself (Gluon passes them to hybrid_forward)"
STACKS_IN_ORDER = ("chainer, gluon: the stacks in forward order, which their containers lose (children sorted by "
                   "name, parameters keyed by prefix); torch's modules keep the order they were made in")
# name -> why only some frameworks have it
FRAMEWORK_ONLY = {
    "layers.BatchNorm.step": GLUON_TRACES, "layers.ChannelNorm.step": GLUON_TRACES,
    "layers.BatchNorm.statistics": GLUON_PARAMS, "layers.Depthwise": GLUON_PARAMS, "layers.Reduction": GLUON_PARAMS,
    "layers.Block.normalized": "gluon's norms return the channel slices a highway layer consumes (no split op)",
    "layers.ChannelNorm.differentiable": "gluon: MXNet 1.9's LayerNorm backward is 10-20x its forward; a "
                                         "training form of the same norm (impl_gluon/layers.py)",
    "layers.ChannelNorm.layer_norm": "gluon: the inference form beside `differentiable`",
    "layers.norms_for_training": "gluon: chooses which ChannelNorm form a trace takes",
    "layers.full": "gluon: a constant that is a graph node when traced",
    "layers.sigmoid": "gluon: MXNet has two sigmoids, Activation's (MKLDNN, tuned) and F.sigmoid (stock); the gate "
                      "and the L1 loss take the tier's",
    "layers.unbiased_running_variance": "gluon: MXNet's BatchNorm updates the running variance with the biased "
                                        "batch variance; torch's and chainer's are the spec's unbiased one",
    "layers.batch_norm_multiples": "gluon: the sizes unbiased_running_variance needs",
    "layers.StackStep": GLUON_TRACES, "layers.StackStep.forward": GLUON_TRACES,
    "synthesize.SynthesisStep": GLUON_TRACES, "synthesize.SynthesisStep.forward": GLUON_TRACES,
    "synthesize.synthesis_step": GLUON_TRACES, "text2mel.Text2Mel.hybridize": "gluon: remembers how it ran for "
                                                                              "synthesize.synthesis_step",
    "layers.Conv.output_step": STEP_ON_ARRAYS, "layers.HighwayConv.output_step": STEP_ON_ARRAYS,
    "layers.ResidualConv.output_step": STEP_ON_ARRAYS, "text2mel.Attention.read_step": STEP_ON_ARRAYS,
    "text2mel.Attention.weights_step": STEP_ON_ARRAYS,
    "synthesize.inference": "chainer: inference is a chainer.config setting (train off, no backprop)",
    "synthesize.context_of": "gluon: a model's context is read from its parameters",
    "text2mel.Text2Mel.stacks": STACKS_IN_ORDER, "ssrn.SSRN.stacks": STACKS_IN_ORDER,
    "train.Objective": "gluon: the losses as one HybridBlock (one cached graph per step)",
    "train.Objective.forward": "gluon: the losses as one HybridBlock (one cached graph per step)",
    "train.SpecAdam": "gluon: MXNet's Adam adds eps before the bias correction; common.contract.losses.adam_update as an "
                      "mx.optimizer.Optimizer (a fused multi-tensor update)",
    "train.SpecAdam.create_state": "gluon: see train.SpecAdam", "train.SpecAdam.kernel_args": "gluon: see train.SpecAdam",
    "train.SpecAdam.update_all": "gluon: see train.SpecAdam",
    "train.adam_update": "chainer: Chainer's Adam adds eps before the bias correction; common.contract.losses.adam_update "
                         "written out (torch's fused Adam computes it as is)",
    "train.Trainer.move_to": "gluon: a Backend's context is fixed when it is built (ChainerMN and torch move a "
                             "worker's model to its GPU after joining a job)",
}
TORCH_LAYOUT = "torch: tuned keeps activations channels-last, stock in (B, C, T) memory; the tiers' layouts"
# name -> why its parameters differ between frameworks
SIGNATURES_DIFFER = {
    "train.Trainer.join": "each engine's handle: torch none (DistributedDataParallel wraps the model), chainer "
                          "the ChainerMN communicator, gluon the KVStore and the parameters' keys",
    "layers.Conv.step": "gluon: the context of the zero history when run imperatively (unused when traced)",
    "train.text2mel_losses": "gluon: the hybridized Objective passes the batch's arrays positionally",
    "train.ssrn_losses": "gluon: the hybridized Objective passes the batch's arrays positionally",
    "layers.ChannelNorm": "gluon: `slices`, the channel slices it returns (layers.Block.normalized: no split op)",
    # the tier of operators (common.framework.OPS) reaches only what differs between the tiers
    "layers.BatchNorm": "gluon: MXNet's BatchNorm in both tiers (torch: its memory layout; chainer: its step)",
    "text2mel.Attention": "gluon: MXNet's operators in both tiers (torch: memory layout; chainer: its steps)",
    "text2mel.shift_right": TORCH_LAYOUT, "train.to_device": TORCH_LAYOUT, "train.binary_divergence": TORCH_LAYOUT,
    "train.l1": TORCH_LAYOUT + "; gluon: its sigmoid (Activation's kernel tuned, F.sigmoid stock)",
}
# the names Gluon gives a block's parameters in hybrid_forward (common.contract.spec's local names, "." -> "_";
# the attention's positional tables, constants)
GLUON_PARAMETER_ARGUMENTS = {"weight", "bias", "dw_weight", "reduce_weight", "gamma", "beta", "mean", "var",
                             "key_positions", "query_positions"}


def parameters(fn, gluon_block_forward: bool = False) -> tuple:
    signature = inspect.signature(fn).parameters.values()
    names = [p.name for p in signature if p.kind is not inspect.Parameter.VAR_KEYWORD]
    if gluon_block_forward:
        while names and names[-1] in GLUON_PARAMETER_ARGUMENTS:
            names.pop()
    if names[:1] == ["self"]:
        names = names[1:]
    if names[:1] == ["F"]:
        names = names[1:]
    if names[-1:] == ["F"]:
        names = names[:-1]
    return tuple("device" if n == "ctx" else n for n in names)


def public_api(framework: str) -> dict:
    """{"module.name" or "module.Class.method": parameter names} of one implementation."""
    api = {}
    for module_name in MODULES:
        module = importlib.import_module(f"impl_{framework}.{module_name}")
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                continue
            key = f"{module_name}.{name}"
            if inspect.isclass(obj):
                api[key] = parameters(obj.__init__) if "__init__" in vars(obj) else None
                for attr, member in vars(obj).items():
                    if attr.startswith("_") or not inspect.isfunction(member):
                        continue
                    hybrid = attr == "hybrid_forward"
                    api[f"{key}.{'forward' if hybrid else attr}"] = parameters(member, gluon_block_forward=hybrid)
            elif inspect.isfunction(obj):
                api[key] = parameters(obj)
    return api


@pytest.fixture(scope="module")
def apis():
    """Each framework's public API; a framework that does not import skips the checks, except under
    DCTTS_ALL_FRAMEWORKS=1 (`tox -e parity`, which installs all three), where it fails them."""
    found = {}
    for fw in FRAMEWORKS:
        try:
            found[fw] = public_api(fw)
        except ImportError as err:
            if os.environ.get("DCTTS_ALL_FRAMEWORKS") == "1":
                pytest.fail(f"impl_{fw} does not import here: {err}", pytrace=False)
            pytest.skip(f"impl_{fw} does not import here: {err}")
    return found


def missing_names(apis: dict) -> dict:
    """{name: frameworks without it} of the public names some framework lacks, unexplained."""
    names = set().union(*apis.values())
    return {name: [fw for fw in apis if name not in apis[fw]] for name in sorted(names)
            if any(name not in apis[fw] for fw in apis) and name not in FRAMEWORK_ONLY}


def differing_signatures(apis: dict) -> dict:
    """{name: {framework: parameters}} of the shared names whose parameters differ, unexplained."""
    shared = set.intersection(*(set(api) for api in apis.values()))
    return {name: {fw: apis[fw][name] for fw in apis} for name in sorted(shared)
            if len({apis[fw][name] for fw in apis if apis[fw][name] is not None}) > 1 and name not in SIGNATURES_DIFFER}


def test_every_public_name_exists_in_every_framework(apis):
    missing = missing_names(apis)
    assert not missing, "public names missing in some frameworks (add them, or say why in FRAMEWORK_ONLY): " + \
        "; ".join(f"{name}: not in {', '.join(fws)}" for name, fws in missing.items())


def test_shared_names_take_the_same_parameters(apis):
    differ = differing_signatures(apis)
    assert not differ, "parameters differ (align them, or say why in SIGNATURES_DIFFER): " + "; ".join(
        f"{name}: " + ", ".join(f"{fw} {sig}" for fw, sig in sigs.items()) for name, sigs in differ.items())


def test_a_planted_drift_is_found(apis):
    """A method renamed in one framework and a parameter added in another, on copies of the real APIs."""
    planted = {fw: dict(api) for fw, api in apis.items()}
    planted["chainer"]["train.Trainer.set_state_strict"] = planted["chainer"].pop("train.Trainer.set_state")
    planted["gluon"]["train.Trainer.gradients"] = planted["gluon"]["train.Trainer.gradients"] + ("train",)
    assert missing_names(planted) == {"train.Trainer.set_state": ["chainer"],
                                      "train.Trainer.set_state_strict": ["torch", "gluon"]}
    assert list(differing_signatures(planted)) == ["train.Trainer.gradients"]


def test_the_exceptions_are_still_needed(apis):
    """An exception that no longer matches anything is stale and goes."""
    names = set().union(*apis.values())
    stale = [name for name in FRAMEWORK_ONLY if name not in names or all(name in api for api in apis.values())]
    stale += [name for name in SIGNATURES_DIFFER
              if len({api.get(name) for api in apis.values()}) == 1]
    assert not stale, f"exceptions that no longer apply: {stale}"
