"""Cross-framework parity fixtures: each framework's results computed once and compared in pairs.
A framework that does not import FAILS its pairs (with the reason): `tox -e parity` installs all
three, so a missing one is a broken environment, not a pair to leave out."""
import itertools
from pathlib import Path

import pytest

from common.framework import configure_threads
from common.framework import FRAMEWORKS, OPS, load_backend

PAIRS = list(itertools.combinations(FRAMEWORKS, 2))

# One thread per framework, set before any framework computes (MXNet: before its import).
# Parity does not depend on it, and on a shared 2-core machine it keeps the suite fast:
# measured, a tiny Text2Mel train step in torch took 46 ms with 1 thread, 336 ms with 2 under load.
for _fw in FRAMEWORKS:
    try:
        configure_threads(_fw, 1)
    except RuntimeError:  # already imported with other threads: slower, not wrong
        pass


def backend_loader(load=load_backend):
    """loader(fw): its Backend class (loaded once), or a test failure naming why it does not import."""
    found = {}

    def get(fw):
        if fw not in found:
            try:
                found[fw] = load(fw)
            except RuntimeError as err:
                found[fw] = err
        if isinstance(found[fw], Exception):
            pytest.fail(f"{fw} is unavailable: {found[fw]}", pytrace=False)
        return found[fw]

    return get


@pytest.fixture(scope="session", params=OPS)
def backend_class(request):
    """The loader of one tier of operators (common.framework.OPS): every pair is compared in each
    tier, both frameworks running it."""
    ops = request.param
    return backend_loader(lambda fw: load_backend(fw, ops))


@pytest.fixture(scope="session")
def once(backend_class):
    """once(group, fw, compute): compute() memoized per (group, fw), one memo per tier. Only the
    latest group is kept (paper-size gradients are ~100 MB per framework), so tests are ordered
    tier by tier, group by group."""
    store = {}

    def get(group, fw, compute):
        for key in [k for k in store if k[0] != group]:
            del store[key]
        if (group, fw) not in store:
            store[group, fw] = compute()
        return store[group, fw]

    return get


def pytest_generate_tests(metafunc):
    """Every test that takes `pair` runs once per pair of frameworks ("torch-chainer", ...)."""
    if "pair" in metafunc.fixturenames:
        metafunc.parametrize("pair", PAIRS, ids="-".join)


def pytest_collection_modifyitems(items):
    """Run this folder's tests tier by tier and group by group ((tier, preset, net, adam) first, otherwise
    in collection order), so `once` computes each group's results once and holds one group at a time."""
    here = Path(__file__).parent
    slots = [i for i, item in enumerate(items) if here in item.path.parents and hasattr(item, "callspec")]

    def group(item):
        params = item.callspec.params
        return tuple(str(params.get(k, "")) for k in ("backend_class", "preset", "net", "adam"))

    for i, item in zip(slots, sorted((items[i] for i in slots), key=group)):
        items[i] = item
