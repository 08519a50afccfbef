"""pytest-benchmark timings of train_step (Text2Mel, SSRN) and synthesis per framework, at the
tiny and small presets: `pytest bench/test_bench.py --benchmark-json out.json` (tox -e bench).
Not part of the default test run; `python bench/run.py` is the full benchmark (subprocess per
framework, parity gate, peak FLOPs). Frameworks that do not import are skipped."""
import os

import pytest

from bench import inputs
from bench.measure import synthesis_flops
from common.contract import accounting as A, spec as S
from bench.inputs import synthetic_batch
from common.framework import FRAMEWORKS, configure_threads, load_backend

THREADS = int(os.environ.get("DCTTS_THREADS") or os.cpu_count())
for _fw in FRAMEWORKS:  # the same thread count everywhere, before any framework computes (MXNet: imports)
    configure_threads(_fw, THREADS)

PRESETS = ("tiny", "small")
BATCH_SIZE = 4
SYNTH_FRAMES = 32  # reduced frames: a short utterance


def make(framework, preset, net):
    try:
        cls = load_backend(framework)
    except RuntimeError as err:
        pytest.skip(f"{framework} is unavailable: {err}")
    return cls(S.get_spec(preset), net, seed=0)


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("net", S.NETS)
def test_train_step(benchmark, framework, preset, net):
    backend = make(framework, preset, net)
    spec = backend.spec
    batch = synthetic_batch(spec, BATCH_SIZE, seed=0)
    backend.seed(0)

    def step():
        backend.train_step(batch)
        backend.sync()

    benchmark.group = f"train-{net} {preset} batch {BATCH_SIZE}"
    benchmark.extra_info.update(threads=THREADS, gflop=A.flops(spec, net, batch.size, batch.text.shape[1],
                                                               batch.mel.shape[2])["train_step"] / 1e9)
    benchmark.pedantic(step, rounds=5, warmup_rounds=1)


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("preset", PRESETS)
def test_synthesize(benchmark, framework, preset):
    text2mel, ssrn = make(framework, preset, "text2mel"), make(framework, preset, "ssrn")
    ids = inputs.synthesis_texts(text2mel.spec, 1)[0]
    frames = []

    def utterance():
        mel, _ = text2mel.synthesize(ids, SYNTH_FRAMES)
        ssrn.upsample(mel)
        ssrn.sync()
        frames.append(mel.shape[1])

    benchmark.group = f"synthesize {preset} (Text2Mel + SSRN, at most {SYNTH_FRAMES} frames)"
    benchmark.pedantic(utterance, rounds=3, warmup_rounds=1)
    benchmark.extra_info.update(threads=THREADS, frames=frames[-1],
                                gflop=synthesis_flops(text2mel.spec, len(ids), frames[-1]) / 1e9)
