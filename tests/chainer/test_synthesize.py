"""impl_chainer inference: autoregressive synthesis (incremental, forcibly incremental attention
decided on the device, batched), the frame-by-frame array path it runs on, and SSRN upsampling.
(Agreement with the teacher-forced reference and batch = one at a time: test_contract.)"""
from impl_chainer import runtime  # noqa: F401  (before chainer: its import-time check breaks here)

import os
import tracemalloc

import chainer
import numpy as np
import pytest

from common import spec as S, synthesis as CS, text
from common.batch import make_batch
from common.synthesis import reached_end
from impl_chainer import layers as CL, synthesize as synth
from impl_chainer.backend import Backend
from impl_chainer.weights import set_weights

SENTENCE = "The birch canoe slid on the smooth planks."


def batch_of(spec, ids, mel):
    """A one-utterance Batch whose reduced mel is `mel` (F, T)."""
    full_rate = np.repeat(mel, spec.r, axis=1)  # make_batch keeps every r-th frame
    return make_batch(spec, [ids], [full_rate], [np.zeros((spec.n_mags, full_rate.shape[1]), np.float32)])


@pytest.fixture(scope="module")
def text2mel():
    return Backend(S.get_spec("tiny"), "text2mel", seed=3)


def test_output_has_a_plausible_length_and_range(text2mel):
    spec = text2mel.spec
    ids = text.text_to_ids(SENTENCE, spec)
    mel, attention = text2mel.synthesize(ids, max_frames=spec.max_frames)
    t = mel.shape[1]
    assert mel.shape == (spec.n_mels, t) and attention.shape == (ids.size, t) and 1 <= t <= spec.max_frames
    assert mel.dtype == np.float32 and mel.min() >= 0 and mel.max() <= 1
    np.testing.assert_allclose(attention.sum(0), 1, rtol=1e-5)  # every column a distribution over the text
    if t < spec.max_frames:  # it stopped early: only by reaching the end of text
        assert attention[:, -1].argmax() == ids.size - 1
    short, _ = text2mel.synthesize(ids, max_frames=3)
    assert short.shape[1] <= 3


def test_attention_is_forcibly_incremental(text2mel):
    spec = text2mel.spec
    ids = text.text_to_ids(SENTENCE, spec)
    _, attention = text2mel.synthesize(ids, max_frames=spec.max_frames)
    positions = np.concatenate([[0], attention.argmax(0)])  # reading starts at the first character
    steps = np.diff(positions)
    assert steps.min() >= -1 and steps.max() <= 3, positions


def positions(attention):
    return attention.argmax(axis=0)


@pytest.mark.parametrize("seed", range(3))
def test_length_is_plausible_and_it_stops_on_arriving_at_the_end(seed):
    spec = S.get_spec("tiny")
    ids = text.text_to_ids("the birch canoe slid on the smooth planks.", spec)
    mel, a = Backend(spec, "text2mel", seed=seed).synthesize(ids, spec.max_frames)
    t, n = mel.shape[1], len(ids)
    assert np.ceil((n - 1) / 3) <= t <= spec.max_frames  # at most 3 characters per frame
    assert t == spec.max_frames or reached_end(positions(a)[-1], n)
    assert not any(reached_end(p, n) for p in positions(a)[:-1])


def test_forced_columns_are_one_hot_at_the_next_position():
    spec = S.get_spec("tiny")
    ids = text.text_to_ids("a quick test of forcing.", spec)
    _, a = Backend(spec, "text2mel", seed=1).synthesize(ids, 40)
    pos = np.concatenate([[0], positions(a)])
    forced = np.flatnonzero(a.max(axis=0) == 1.0)
    assert forced.size > 0  # untrained attention wanders, so some frames must be forced
    for t in forced:
        assert pos[t + 1] == min(pos[t] + 1, len(ids) - 1) and np.count_nonzero(a[:, t]) == 1


@pytest.mark.parametrize("seed", range(4))
def test_on_device_forcing_is_the_common_rule(seed):
    """synth.force_incremental (array ops, no host decision) = common.synthesis.force_incremental
    on random peaked columns: kept, forced forward, forced back, clipped at each sentence's end."""
    rng = np.random.default_rng(seed)
    batch, width = 64, 20
    n_text = rng.integers(2, width + 1, batch)
    prev = np.minimum(rng.integers(0, width, batch), n_text - 1)
    columns = rng.random((batch, width)).astype(np.float32)
    peak = np.clip(prev + rng.integers(-4, 7, batch), 0, n_text - 1)  # in and out of [prev - 1, prev + 3]
    columns[np.arange(batch), peak] += 5
    columns /= columns.sum(axis=1, keepdims=True)
    expected_columns, expected_positions = CS.force_incremental(columns, prev, n_text)
    got_columns, got_positions = synth.force_incremental(columns, prev, n_text)
    forced = expected_positions != peak
    assert forced.any() and (~forced).any() and (expected_positions == n_text - 1).any()
    assert got_columns.dtype == np.float32
    np.testing.assert_array_equal(got_columns, expected_columns)
    np.testing.assert_array_equal(got_positions, expected_positions)


@pytest.mark.parametrize("variant", [{}, {"conv": "sep"}, {"conv": "super-sep"}, {"conv": "bottleneck"},
                                     {"block": "residual"}, {"norm": "batch"}, {"conv": "super-sep", "norm": "batch"}],
                         ids=lambda v: "+".join(v.values()) or "default")
@pytest.mark.parametrize("list_fn", [S.audio_enc_layers, S.audio_dec_layers])
def test_array_steps_equal_the_stacks_forward(list_fn, variant):
    """Stack.step (plain arrays, the flattened taps in one matmul) = the chainer.functions
    forward, for plain, separable and bottleneck convolutions (the bottleneck's history kept
    reduced), highway and residual blocks, layer and batch norm (its running statistics)."""
    spec = S.get_spec("tiny", dropout=0.0, **variant)
    layer_list = list_fn(spec)
    stack = CL.build_stack(spec, layer_list)
    rng = np.random.default_rng(2)  # weights small enough that unnormalized values (batch norm's fixed
    # statistics, residual sums) do not grow by orders of magnitude through the stack
    set_weights(stack, {name: (rng.uniform(0.5, 2.0, shape) if name.endswith(".norm.var") else
                               rng.normal(1.0 if name.endswith("gamma") else 0.0, 0.25, shape)).astype(np.float32)
                        for layer in layer_list for name, shape in S.param_shapes(spec, layer).items()})
    assert any(block.dw is not None for block in stack) == (spec.conv in ("sep", "super-sep"))
    assert any(block.reduce is not None for block in stack) == (spec.conv == "bottleneck")
    x = rng.normal(size=(3, layer_list[0].cin, 30)).astype(np.float32)
    eval_mode, no_graph = synth.inference()
    with eval_mode, no_graph:
        whole = stack(x).array
        history, frames = stack.initial_history(3), []
        for t in range(30):
            y, history = stack.step(x[:, :, t:t + 1], history)
            frames.append(y.array)
        with pytest.raises(ValueError, match="one frame"):
            stack.step(x[:, :, :2], stack.initial_history(3))
    np.testing.assert_allclose(np.concatenate(frames, 2), whole, atol=1e-5 * max(1.0, np.abs(whole).max()), rtol=0)


def test_step_refuses_training_mode_with_dropout():
    spec = S.get_spec("tiny")  # dropout 0.05
    stack = CL.build_stack(spec, S.audio_enc_layers(spec))
    with chainer.using_config("train", True), pytest.raises(ValueError, match="inference"):
        stack.step(np.zeros((1, spec.n_mels, 1), np.float32), stack.initial_history(1))


def test_without_forcing_synthesis_equals_teacher_forcing(text2mel, monkeypatch):
    """Frame-by-frame synthesis (layer histories, the zero start frame) is the teacher-forced
    network fed its own output: with forcing disabled, the two give the same frames."""
    never = lambda position, n: np.zeros(np.shape(position), bool)  # noqa: E731
    monkeypatch.setattr(synth, "force_incremental", lambda columns, prev, n_text: (columns, columns.argmax(axis=1)))
    monkeypatch.setattr(synth, "reached_end", never)
    monkeypatch.setattr(CS, "reached_end", never)  # split_batch's cut
    ids = text.text_to_ids("a short one.", text2mel.spec)
    mel, attention = text2mel.synthesize(ids, max_frames=12)
    assert mel.shape[1] == 12
    out = text2mel.forward(batch_of(text2mel.spec, ids, mel))
    np.testing.assert_allclose(1 / (1 + np.exp(-out["logits"][0])), mel, atol=1e-5)
    np.testing.assert_allclose(out["attention"][0], attention, atol=1e-6)


def test_repeated_synthesis_is_identical_and_keeps_no_memory(text2mel):
    ids = text.text_to_ids(SENTENCE, text2mel.spec)
    first = text2mel.synthesize(ids, max_frames=8)
    tracemalloc.start()  # slows Python down: few short runs
    text2mel.synthesize(ids, max_frames=8)
    baseline = tracemalloc.get_traced_memory()[0]
    for _ in range(2):
        again = text2mel.synthesize(ids, max_frames=8)
    grown = tracemalloc.get_traced_memory()[0] - baseline
    tracemalloc.stop()
    assert grown < 50_000, f"{grown} bytes kept over 2 sentences"
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)


def resident_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="resident memory is read from Linux /proc")
def test_memory_does_not_grow_over_many_sentences(text2mel):
    """Resident memory stays put over 24 more syntheses of 8 sentences already seen once
    (4 of them as batches of 2)."""
    spec = text2mel.spec
    rng = np.random.default_rng(0)
    sentences = [np.append(rng.integers(2, spec.n_vocab, n), S.EOS).astype(np.int32) for n in rng.integers(5, 50, 8)]
    for ids in sentences:
        text2mel.synthesize(ids, spec.max_frames)
    text2mel.synthesize_batch(sentences[:2], spec.max_frames)
    before = resident_mib()
    for ids in sentences * 3:
        text2mel.synthesize(ids, spec.max_frames)
    for _ in range(4):
        text2mel.synthesize_batch(sentences[:2], spec.max_frames)
    assert resident_mib() - before < 5


def test_bad_max_frames_and_wrong_network_raise(text2mel):
    ids = text.text_to_ids("hi.", text2mel.spec)
    with pytest.raises(ValueError, match="max_frames"):
        text2mel.synthesize(ids, max_frames=0)
    with pytest.raises(NotImplementedError):
        text2mel.upsample(np.zeros((16, 3), np.float32))
    with pytest.raises(NotImplementedError):
        Backend(text2mel.spec, "ssrn").synthesize(ids, 5)
    with pytest.raises(NotImplementedError):
        Backend(text2mel.spec, "ssrn").synthesize_batch([ids, ids], 5)


def test_upsample_gives_magnitudes_in_range_and_equals_the_forward():
    spec = S.get_spec("tiny")
    ssrn = Backend(spec, "ssrn")
    mel = np.random.default_rng(0).random((spec.n_mels, 9)).astype(np.float32)
    mag = ssrn.upsample(mel)
    assert mag.shape == (spec.n_mags, spec.r * 9) and mag.min() >= 0 and mag.max() <= 1
    logits = ssrn.forward(batch_of(spec, text.text_to_ids("hi.", spec), mel))["logits"][0]
    np.testing.assert_allclose(mag, 1 / (1 + np.exp(-logits)), atol=1e-6)
    with pytest.raises(ValueError, match="expected a mel of shape"):
        ssrn.upsample(np.zeros((spec.n_mels + 1, 9), np.float32))
