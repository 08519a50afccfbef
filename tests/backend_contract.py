"""Framework-neutral tests of a Backend (common.framework) and of the training loop and the
command lines driven through it. Each framework runs all of them with two lines in
tests/<fw>/test_contract.py:

    from tests.backend_contract import *  # noqa: F401,F403
    FRAMEWORK = "torch"

The fixtures read FRAMEWORK from the test module that imported them (request.module).
"""
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from common.training import checkpoint, cli, train_loop
from common.data import dataset as data
from common.contract import losses as L, reference as R, spec as S, weights as W
from common.data.batch import random_batch as common_random_batch
from common.contract.compare import reference_losses, reference_outputs
from common.framework import OPS, load_backend
from common.contract.spec import EOS
from common.contract.synthesis import force_incremental, reached_end
from common.streaming.chunks import ChunkedSSRN

ROOT = Path(__file__).resolve().parents[1]


def random_batch(spec, batch_size=2, n_chars=12, n_frames=10, seed=0):
    """A padded Batch of random ids and features; item i is shorter by 4i characters and 3i
    reduced frames (minus one full-rate frame), so padding is exercised."""
    return common_random_batch(spec, [n_chars - 4 * i for i in range(batch_size)],
                               [n_frames * spec.r - (3 * spec.r + 1) * i for i in range(batch_size)], seed)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


@pytest.fixture(scope="module")
def framework(request):
    return request.module.FRAMEWORK


@pytest.fixture(scope="module", params=OPS)
def backend_cls(framework, request):
    """The framework's Backend class in each tier of operators (common.framework.OPS): every test
    that builds backends runs on both."""
    return load_backend(framework, request.param)


@pytest.fixture(scope="module")
def tiny():
    return S.get_spec("tiny")


# --- the Backend ---------------------------------------------------------------------

@pytest.mark.parametrize("plain_logits", [False, True], ids=["norm_logits", "plain_logits"])
@pytest.mark.parametrize("net", S.NETS)
def test_forward_matches_reference(backend_cls, tiny, net, plain_logits):
    tiny = tiny.replace(norm_logits=not plain_logits, dropout=0.05)  # dropout: eval mode must not apply it
    b = random_batch(tiny)
    out = backend_cls(tiny, net, seed=3).forward(b)
    w = W.init_weights(tiny, net, 3)
    if net == "text2mel":
        logits, a = R.text2mel(tiny, w, b.text, b.mel)
        assert np.abs(out["attention"] - a).max() <= 1e-5
        assert b.text_lengths.min() < b.text.shape[1]
        for i, n in enumerate(b.text_lengths):  # padded text positions get no attention at all
            assert np.all(out["attention"][i, n:] == 0)
            assert np.allclose(out["attention"][i, :n].sum(axis=0), 1, atol=1e-5)
    else:
        logits = R.ssrn(tiny, w, b.mel)
    assert out["logits"].shape == logits.shape and out["logits"].dtype == np.float32
    assert np.abs(out["logits"] - logits).max() <= 1e-5


def test_weights_round_trip_through_a_file(backend_cls, tiny, tmp_path):
    a = backend_cls(tiny, "text2mel", seed=1)
    w = a.get_weights()
    assert all(np.array_equal(w[k], v) for k, v in W.init_weights(tiny, "text2mel", 1).items())
    W.save(tmp_path / "w.safetensors", w, tiny, "text2mel")
    b = backend_cls(tiny, "text2mel", seed=2)
    b.set_weights(W.load(tmp_path / "w.safetensors", tiny, "text2mel")[0])
    assert all(np.array_equal(w[k], v) for k, v in b.get_weights().items())
    batch = random_batch(tiny)
    np.testing.assert_array_equal(a.forward(batch)["logits"], b.forward(batch)["logits"])
    del w["audiodec.0.bias"]
    with pytest.raises(W.WeightsError, match=r"audiodec\.0\.bias"):
        b.set_weights(w)


@pytest.mark.parametrize("net", S.NETS)
def test_train_step_is_deterministic_for_a_seed(backend_cls, tiny, net):
    batch = random_batch(tiny)
    runs = []
    for seed in (7, 7, 8):
        backend = backend_cls(tiny, net)
        backend.seed(seed)
        runs.append((backend.train_step(batch), backend.get_weights()))
    (l1, w1), (l2, w2), (l3, _) = runs
    assert l1 == l2 and all(np.array_equal(w1[k], w2[k]) for k in w1)
    assert set(l1) == ({"loss", "l1", "bin", "att"} if net == "text2mel" else {"loss", "l1", "bin"})
    assert all(isinstance(v, float) for v in l1.values())
    assert l3["loss"] != l1["loss"]  # another seed, other dropout masks (tiny has dropout 0.05)


ADAM_CASES = {  # (spec changes, Adam steps already taken)
    "paper-like": (dict(warmup=0, grad_clip=None, lr=1e-2, beta1=0.5, beta2=0.9, eps=1e-6), 5),
    "clipped, end of warm-up": (dict(grad_clip=2e-3), 3999),  # tiny's community recipe: lr peaks at step 4000
}


@pytest.mark.parametrize("case", ADAM_CASES)
@pytest.mark.parametrize("net", S.NETS)
def test_adam_step_equals_common_losses(backend_cls, tiny, net, case):
    """From a given optimizer state, train_step moves every weight as adam_update says, with the
    gradients that `gradients` reports (dropout off so both see the same network)."""
    changes, step = ADAM_CASES[case]
    spec = tiny.replace(dropout=0.0, **changes)
    backend, batch, rng = backend_cls(spec, net), random_batch(spec), np.random.default_rng(4)
    w0 = backend.get_weights()
    state = {"step": np.array(step, np.int64)}
    for name, a in w0.items():
        state[f"m.{name}"] = rng.normal(0, 1e-3, a.shape).astype(np.float32)
        state[f"v.{name}"] = rng.uniform(0, 1e-5, a.shape).astype(np.float32)
    backend.set_optimizer_state(state)
    _, grads = backend.gradients(batch)
    if spec.grad_clip is not None:
        assert any(np.abs(g).max() > spec.grad_clip for g in grads.values())  # clipping matters here
    backend.train_step(batch)
    w1, after = backend.get_weights(), backend.get_optimizer_state()
    assert int(after["step"]) == step + 1
    for name in w0:
        p, m, v = L.adam_update(w0[name].astype(np.float64), grads[name], state[f"m.{name}"].astype(np.float64),
                                state[f"v.{name}"].astype(np.float64), step + 1, spec)
        np.testing.assert_allclose(w1[name] - w0[name], p - w0[name], rtol=1e-3, atol=2e-7, err_msg=name)
        np.testing.assert_allclose(after[f"m.{name}"], m, rtol=1e-4, atol=1e-9, err_msg=name)
        np.testing.assert_allclose(after[f"v.{name}"], v, rtol=1e-4, atol=1e-12, err_msg=name)


def test_optimizer_state_round_trip_continues_identically(backend_cls, tiny):
    batch = random_batch(tiny)
    a = backend_cls(tiny, "ssrn")
    for seed in (1, 2):
        a.seed(seed)
        a.train_step(batch)
    state = a.get_optimizer_state()
    assert int(state["step"]) == 2 and set(state) == {"step"} | {f"{k}.{n}" for n in a.get_weights() for k in "mv"}
    b = backend_cls(tiny, "ssrn", seed=5)
    b.set_weights(a.get_weights())
    b.set_optimizer_state(state)
    for backend in (a, b):
        backend.seed(3)
        backend.train_step(batch)
    wa, wb = a.get_weights(), b.get_weights()
    assert all(np.array_equal(wa[k], wb[k]) for k in wa)


def layer_order(names) -> list:
    """The layers ("textenc.3", ...) that canonical names belong to, in the order the names come."""
    return list(dict.fromkeys(".".join(n.split(".")[:2]) for n in names))


@pytest.mark.parametrize("net", S.NETS)
def test_weights_and_optimizer_state_come_in_forward_order(backend_cls, tiny, net):
    """Layer by layer as the network runs (common.contract.spec's lists), in every framework."""
    backend = backend_cls(tiny, net)
    forward = layer_order(S.net_param_shapes(tiny, net))
    assert layer_order(backend.get_weights()) == forward
    assert layer_order(k[2:] for k in backend.get_optimizer_state() if k.startswith("m.")) == forward


def test_an_optimizer_state_that_does_not_fit_is_refused_before_anything_changes(backend_cls, tiny):
    """The same error (common.contract.weights.WeightsError) and strictness in every framework: missing,
    unexpected and misshapen entries, each named; the state in place stays as it was."""
    backend = backend_cls(tiny, "ssrn")
    backend.train_step(random_batch(tiny))
    good, name = backend.get_optimizer_state(), "ssrn.0.bias"
    bad = [({k: v for k, v in good.items() if k != f"m.{name}"}, f"missing ['m.{name}']"),
           ({**good, "m.ssrn.99.weight": np.zeros(3, np.float32)}, "unexpected ['m.ssrn.99.weight']"),
           ({**good, f"v.{name}": np.zeros(3, np.float32)}, f"misshapen ['v.{name} (3,)")]
    for state, message in bad:
        with pytest.raises(W.WeightsError, match=re.escape(message)):
            backend.set_optimizer_state(state)
    after = backend.get_optimizer_state()
    assert all(np.array_equal(after[k], good[k]) for k in good)


def check_gradients(backend, spec, net):
    """The directional derivative along a random direction of the trainable weights, float64
    central differences (a small step: ReLU and |.| kinks spoil larger ones)."""
    batch = random_batch(spec, n_frames=6)
    _, grads = backend.gradients(batch)
    w = {k: v.astype(np.float64) for k, v in backend.get_weights().items()}
    rng = np.random.default_rng(5)
    direction = {k: rng.normal(size=w[k].shape) if k in grads else 0.0 for k in sorted(w)}  # the same in every framework
    h = 1e-6
    plus = reference_losses(spec, net, {k: w[k] + h * direction[k] for k in w}, batch)["loss"]
    minus = reference_losses(spec, net, {k: w[k] - h * direction[k] for k in w}, batch)["loss"]
    analytic = sum(float(np.sum(grads[k] * direction[k])) for k in grads)
    assert np.isclose(analytic, (plus - minus) / (2 * h), rtol=1e-3)


@pytest.mark.parametrize("net", S.NETS)
def test_gradients_match_finite_differences_of_the_reference(backend_cls, tiny, net):
    spec = tiny.replace(dropout=0.0)
    check_gradients(backend_cls(spec, net), spec, net)


def test_synthesis_is_forcibly_incremental_and_consistent(backend_cls, tiny):
    """Each sentence of a batch: the mel equals the teacher-forced reference run on it with the
    decided attention columns, and every column is common.contract.synthesis.force_incremental's
    decision on the reference's attention at that frame (so the framework's on-device forcing
    follows the NumPy rule), flagged in .forced exactly where the rule forced; it stops on
    reaching its own end of text."""
    backend = backend_cls(tiny, "text2mel", seed=2)
    texts = [random_batch(tiny, batch_size=1, n_chars=n, seed=n).text[0] for n in (20, 9, 14)]
    w = W.init_weights(tiny, "text2mel", 2)
    outs = backend.synthesize_batch(texts, 30)
    for ids, out in zip(texts, outs):
        mel, a = out
        n, t = len(ids), mel.shape[1]
        assert mel.shape == (tiny.n_mels, t) and a.shape == (n, t) and 1 <= t <= 30
        assert mel.min() >= 0 and mel.max() <= 1
        assert_synthesis_is_the_reference(tiny, w, ids, out)
        ends = reached_end(a.argmax(0), n)
        assert not ends[:-1].any() and (t == 30 or ends[-1])
    flags = np.concatenate([out.forced for out in outs])
    assert 0 < flags.sum() < flags.size  # both kinds of frame checked


def assert_synthesis_is_the_reference(spec, w, ids, out):
    """One sentence's synthesis (a Synthesis: mel (F, T), attention (N, T), .forced (T,)) is the
    teacher-forced reference run on the mel it produced: the mel is AudioDec's from the decided
    columns, and each column is common.contract.synthesis.force_incremental's decision on the reference's
    attention at that frame (whose logits, with spec.position, read that frame's PQ(t)), .forced
    the rule's flag there."""
    mel, a = out
    assert out.forced.dtype == bool and out.forced.shape == (mel.shape[1],)
    k, v = R.text_enc(spec, w, ids[None])
    q = R.audio_enc(spec, w, R.shift_mel(mel[None]))
    logits = R.audio_dec(spec, w, np.concatenate([v @ a[None], q], axis=1))
    np.testing.assert_allclose(mel, sigmoid(logits[0]), atol=1e-5)
    free = R.attention(spec, k, v, q, R.pad_bias(ids[None]))[1][0]
    prev = np.zeros(1, np.int64)
    for frame in range(mel.shape[1]):
        column, prev, forced = force_incremental(free[None, :, frame], prev, np.array([len(ids)]))
        np.testing.assert_allclose(a[:, frame], column[0], atol=1e-5)
        assert out.forced[frame] == forced[0], f"frame {frame}: forced {out.forced[frame]}, the rule {forced[0]}"


def test_a_batch_synthesizes_what_one_sentence_at_a_time_does(backend_cls, tiny):
    backend = backend_cls(tiny, "text2mel", seed=3)
    texts = [random_batch(tiny, batch_size=1, n_chars=n, seed=n).text[0] for n in (7, 25, 16, 22)]
    batched = backend.synthesize_batch(texts, 40)
    assert len({mel.shape[1] for mel, _ in batched}) > 1  # the sentences end at different frames
    for ids, out in zip(texts, batched):
        (mel, a), alone = out, backend.synthesize(ids, 40)
        alone_mel, alone_a = alone
        assert mel.shape == alone_mel.shape and a.shape == alone_a.shape == (len(ids), mel.shape[1])
        np.testing.assert_allclose(mel, alone_mel, atol=1e-5)
        np.testing.assert_allclose(a, alone_a, atol=1e-5)
        np.testing.assert_array_equal(out.forced, alone.forced)


@pytest.mark.parametrize("ids", [[], [5, 6] * 40 + [EOS], [5, 99, EOS]], ids=["empty", "too long", "unknown id"])
def test_synthesis_refuses_bad_ids(backend_cls, tiny, ids):
    with pytest.raises(ValueError):
        backend_cls(tiny, "text2mel").synthesize(np.array(ids, np.int32), 10)


def test_batched_synthesis_refuses_an_empty_batch_and_names_a_bad_sentence(backend_cls, tiny):
    backend = backend_cls(tiny, "text2mel")
    with pytest.raises(ValueError, match="no texts"):
        backend.synthesize_batch([], 10)
    with pytest.raises(ValueError, match="must lie in"):
        backend.synthesize_batch([np.array([5, EOS], np.int32), np.array([5, 99, EOS], np.int32)], 10)


def test_each_network_refuses_the_others_job(backend_cls, tiny):
    ids = np.array([5, 6, EOS], np.int32)
    with pytest.raises(NotImplementedError, match="text2mel does not upsample"):
        backend_cls(tiny, "text2mel").upsample(np.zeros((tiny.n_mels, 3), np.float32))
    ssrn = backend_cls(tiny, "ssrn")
    for call in (lambda: ssrn.synthesize(ids, 5), lambda: ssrn.synthesize_batch([ids, ids], 5)):
        with pytest.raises(NotImplementedError, match="ssrn does not synthesize"):
            call()


def test_upsample_matches_reference(backend_cls, tiny):
    mel = np.random.default_rng(6).random((tiny.n_mels, 7), dtype=np.float32)
    mag = backend_cls(tiny, "ssrn", seed=4).upsample(mel)
    assert mag.shape == (tiny.n_mags, 7 * tiny.r)
    np.testing.assert_allclose(mag, sigmoid(R.ssrn(tiny, W.init_weights(tiny, "ssrn", 4), mel[None])[0]), atol=1e-5)


# --- streaming (common.streaming): Text2Mel a chunk at a time, SSRN on chunks, both exact -------------
@pytest.mark.parametrize("chunk", [1, 3, 8, 1000])
def test_a_stream_of_mel_chunks_is_the_offline_synthesis(backend_cls, tiny, chunk):
    """synthesize_stream hands over `chunk` frames at a time (the last cut at the end of text) and
    stops with the sentence: together, bit for bit the offline synthesis of the same sentence."""
    backend = backend_cls(tiny, "text2mel", seed=3)
    ids = np.array([5, 9, 11, 7, 6, 4, 8, EOS], np.int32)
    offline, _ = backend.synthesize(ids, 40)
    pieces = list(backend.synthesize_stream(ids, 40, chunk))
    assert all(p.shape[1] == chunk for p in pieces[:-1]) and 1 <= pieces[-1].shape[1] <= chunk
    np.testing.assert_array_equal(np.concatenate(pieces, axis=1), offline)


def test_a_stream_refuses_bad_input_at_the_call(backend_cls, tiny):
    backend = backend_cls(tiny, "text2mel")
    ids = np.array([5, 9, EOS], np.int32)
    for chunk in (0, -2, 1.5, "4", True):
        with pytest.raises(ValueError, match="chunk size"):
            backend.synthesize_stream(ids, 10, chunk)
    with pytest.raises(ValueError, match="text ids"):
        backend.synthesize_stream(np.array([5, 999, EOS], np.int32), 10, 4)
    with pytest.raises(NotImplementedError, match="ssrn does not synthesize"):
        backend_cls(tiny, "ssrn").synthesize_stream(ids, 10, 4)


@pytest.mark.parametrize("chunk", [1, 4, 16, 50])
def test_ssrn_on_chunks_gives_the_offline_magnitudes(backend_cls, tiny, chunk):
    """common.streaming.chunks.ChunkedSSRN over this framework's upsample: the magnitudes of 37
    frames pushed `chunk` at a time (50: one chunk longer than the mel) equal the offline pass
    (<= 1e-5 relative to the largest magnitude)."""
    ssrn = backend_cls(tiny, "ssrn", seed=4)
    mel = np.random.default_rng(8).random((tiny.n_mels, 37), dtype=np.float32)
    stream = ChunkedSSRN(ssrn.upsample, tiny)
    pieces = [stream.push(mel[:, i:i + chunk]) for i in range(0, mel.shape[1], chunk)] + [stream.finish()]
    offline = ssrn.upsample(mel)
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), offline, rtol=0, atol=1e-5 * np.abs(offline).max())


# --- the variants (common.contract.spec: conv=bottleneck, block=residual, norm=batch, position=sinusoid) ---
VARIANTS = {"bottleneck": dict(conv="bottleneck"), "residual": dict(block="residual"), "batch-norm": dict(norm="batch"),
            "group-norm": dict(norm="group", norm_num_groups=2),  # groups of 8 channels at tiny
            "super-sep+batch-norm": dict(conv="super-sep", norm="batch"),
            "all three": dict(conv="bottleneck", block="residual", norm="batch", norm_logits=False),
            "positional": dict(position="sinusoid"),
            "positional-rate3-weight0.5": dict(position="sinusoid", position_rate=3.0, position_weight=0.5)}


def variant_weights(spec, net, seed=3) -> dict:
    """Fresh weights with norm parameters and running statistics away from 1 and 0, so they count."""
    rng, draw = np.random.default_rng(seed), {"gamma": (0.5, 1.5), "beta": (-0.2, 0.2), "mean": (-0.3, 0.3),
                                              "var": (0.5, 2.0)}
    w = W.init_weights(spec, net, seed)
    for name, a in w.items():
        kind = name.rsplit(".", 1)[1]
        if ".norm." in name:
            w[name] = rng.uniform(*draw[kind], a.shape).astype(np.float32)
    return w


def variant_backend(backend_cls, spec, net):
    backend = backend_cls(spec, net)
    w = variant_weights(spec, net)
    backend.set_weights(w)
    return backend, w


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("net", S.NETS)
def test_variant_forward_matches_reference(backend_cls, tiny, net, variant):
    """Eval mode (dropout off, batch norm on its running statistics) equals the reference; the
    weights, running statistics included, come back as they went in."""
    spec = tiny.replace(dropout=0.05, **VARIANTS[variant])
    backend, w = variant_backend(backend_cls, spec, net)
    got = backend.get_weights()
    assert got.keys() == w.keys() and all(np.array_equal(got[k], w[k]) for k in w)
    b = random_batch(spec)
    out, want = backend.forward(b), reference_outputs(spec, net, w, b)
    assert out.keys() == want.keys()
    if net == "text2mel":
        assert np.abs(out["attention"] - want["attention"]).max() <= 1e-5
    assert np.abs(out["logits"] - want["logits"]).max() <= 1e-5 * max(1.0, np.abs(want["logits"]).max())


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_synthesis_runs_the_network_frame_by_frame(backend_cls, tiny, variant):
    """Frame-by-frame synthesis of a batch (the causal stacks' step; with positions, frame t's PQ(t)
    on every sentence's query) computes, for each sentence, the teacher-forced reference on the mel
    and attention it produced."""
    spec = tiny.replace(**VARIANTS[variant])
    backend, w = variant_backend(backend_cls, spec, "text2mel")
    texts = [random_batch(spec, batch_size=1, n_chars=n, seed=1).text[0] for n in (14, 9)]
    for ids, out in zip(texts, backend.synthesize_batch(texts, 20)):
        assert_synthesis_is_the_reference(spec, w, ids, out)


@pytest.mark.parametrize("variant", ["bottleneck", "residual", "batch-norm", "group-norm", "positional"])
@pytest.mark.parametrize("net", S.NETS)
def test_variant_gradients_match_finite_differences_of_the_reference(backend_cls, tiny, net, variant):
    spec = tiny.replace(dropout=0.0, **VARIANTS[variant])
    check_gradients(variant_backend(backend_cls, spec, net)[0], spec, net)


@pytest.mark.parametrize("net", S.NETS)
def test_batch_norm_trains_on_batch_statistics_and_updates_the_running_ones(backend_cls, tiny, net):
    """A training step's losses are the reference's in training mode (the batch's statistics), its
    running statistics the reference's update (momentum, unbiased variance); Adam leaves them alone."""
    spec = tiny.replace(norm="batch", dropout=0.0)
    backend, w = variant_backend(backend_cls, spec, net)
    batch, stats = random_batch(spec), {}
    losses = backend.train_step(batch)
    expected = reference_losses(spec, net, w, batch, stats)
    assert np.isclose(losses["loss"], expected["loss"], rtol=1e-5)
    assert not np.isclose(expected["loss"], reference_losses(spec, net, w, batch)["loss"], rtol=1e-3)  # it matters
    assert stats.keys() == {k for k in w if k.endswith((".norm.mean", ".norm.var"))}
    after = backend.get_weights()
    for name, value in stats.items():
        np.testing.assert_allclose(after[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
    assert not any(k.endswith((".norm.mean", ".norm.var")) for k in backend.get_optimizer_state())


# --- learning ----------------------------------------------------------------------------
OVERFIT_STEPS, OVERFIT_FRACTION = 200, 0.65


def test_overfits_one_batch_below_the_mean_spectrum(backend_cls, tiny_corpus_dir):
    """A fixed batch of 4 espeak-ng utterances repeated (tiny, no dropout, constant lr 5e-3):
    within OVERFIT_STEPS steps the eval-mode L1 over real frames falls below OVERFIT_FRACTION
    of the mean-spectrum predictor's (the batch's own mean frame). Measured (2026-12-01): torch
    0.49, chainer and gluon alike (within 0.08 at every 25 steps). A network that cannot use
    its inputs stays near 1."""
    spec = S.get_spec("tiny", dropout=0.0, lr=5e-3)
    corpus = data.load_corpus(tiny_corpus_dir, spec, progress=False)
    batch = next(data.batches(corpus, range(4), 4, np.random.default_rng(0)))
    real = np.broadcast_to(np.arange(batch.mel.shape[2]) < batch.frame_lengths[:, None, None], batch.mel.shape)
    mean_frame = (batch.mel * real).sum(axis=(0, 2)) / real[:, 0].sum()
    baseline = np.abs(mean_frame[None, :, None] - batch.mel)[real].mean()
    backend = backend_cls(spec, "text2mel")

    def l1_fraction():
        return np.abs(sigmoid(backend.forward(batch)["logits"]) - batch.mel)[real].mean() / baseline

    before = l1_fraction()
    for step in range(1, OVERFIT_STEPS + 1):
        backend.seed(step)
        backend.train_step(batch)
    assert before > 1 and l1_fraction() < OVERFIT_FRACTION, (before, l1_fraction())


# --- the training loop -----------------------------------------------------------------

def run(framework, net, data, out, steps, **kw):
    kw = {"spec": S.get_spec("tiny"), "batch_size": 4, "checkpoint_every": 3, "seed": 0, **kw}
    return train_loop.train(framework, net, data, out, steps=steps, progress=False, **kw)


def log_lines(path):
    return [re.sub(r', "seconds": [0-9.e-]+', "", ln) for ln in path.read_text().splitlines()]


@pytest.mark.parametrize("net", S.NETS)
def test_resume_is_bit_identical(backend_cls, tiny_corpus_dir, tmp_path, net):
    """6 steps in one go == 3 steps, stop, resume to 6 (crossing an epoch: 15 training
    utterances in batches of 4), compared on weights, Adam state and the loss log."""
    whole = run(backend_cls, net, tiny_corpus_dir, tmp_path / "whole", 6)
    run(backend_cls, net, tiny_corpus_dir, tmp_path / "split", 3)
    split = run(backend_cls, net, tiny_corpus_dir, tmp_path / "split", 6, seed=None, batch_size=None, spec=None)
    assert whole.step == split.step == 6 and not split.interrupted
    a, b = checkpoint.load(whole.checkpoint), checkpoint.load(split.checkpoint)
    assert all(np.array_equal(a.weights[k], b.weights[k]) for k in a.weights)
    assert all(np.array_equal(a.optimizer[k], b.optimizer[k]) for k in a.optimizer)
    assert a.state == b.state
    assert log_lines(tmp_path / "whole" / f"{net}-losses.jsonl") == log_lines(tmp_path / "split" / f"{net}-losses.jsonl")
    assert [p.name for _, p in checkpoint.listed(tmp_path / "split", net)] == [f"{net}-00000003.safetensors",
                                                                               f"{net}-00000006.safetensors"]


def test_resume_refuses_other_hyperparameters_and_corrupt_files(framework, tiny_corpus_dir, tmp_path):
    run(framework, "ssrn", tiny_corpus_dir, tmp_path, 1)
    with pytest.raises(W.WeightsError, match=r"other hyperparameters: c \(model 32, file 16\)"):
        run(framework, "ssrn", tiny_corpus_dir, tmp_path, 2, spec=S.get_spec("tiny", c=32))
    with pytest.raises(train_loop.TrainError, match="batch_size=4, not 2"):
        run(framework, "ssrn", tiny_corpus_dir, tmp_path, 2, batch_size=2)
    with pytest.raises(train_loop.TrainError, match="already holds ssrn checkpoints"):
        run(framework, "ssrn", tiny_corpus_dir, tmp_path, 2, resume=False)
    path = checkpoint.latest(tmp_path, "ssrn")
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(W.WeightsError, match="truncated or corrupt"):
        run(framework, "ssrn", tiny_corpus_dir, tmp_path, 2)


def test_ctrl_c_saves_a_checkpoint(backend_cls, framework, tiny_corpus_dir, tmp_path):
    class Interrupted(backend_cls):
        steps = 0

        def train_step(self, batch):
            self.steps += 1
            if self.steps == 2:
                os.kill(os.getpid(), signal.SIGINT)  # as if Ctrl-C were pressed during step 2
            return super().train_step(batch)

    result = run(Interrupted, "ssrn", tiny_corpus_dir, tmp_path, 50, checkpoint_every=100)
    assert result.interrupted and result.step == 2
    assert checkpoint.load(result.checkpoint).state.step == 2


# --- the command lines -----------------------------------------------------------------

@pytest.fixture(scope="module")
def trained_run(framework, tiny_corpus_dir, tmp_path_factory):
    """A run directory with 2 steps of Text2Mel and of SSRN, trained through dctts-train."""
    out = tmp_path_factory.mktemp(f"run_{framework}")
    for net in S.NETS:
        with pytest.raises(SystemExit) as done:
            cli.train_main(["--framework", framework, "--model", net, "--data", str(tiny_corpus_dir), "--out",
                            str(out), "--preset", "tiny", "--steps", "2", "--checkpoint-every", "2", "--quiet"])
        assert done.value.code == 0
    return out


def test_dctts_train_writes_checkpoints_plots_and_audio(trained_run):
    names = {p.relative_to(trained_run).as_posix() for p in trained_run.rglob("*") if p.is_file()}
    for expected in ["text2mel-00000002.safetensors", "ssrn-00000002.safetensors", "text2mel-losses.jsonl",
                     "plots/text2mel-00000002-attention.png", "plots/text2mel-00000002-mel.png",
                     "plots/ssrn-00000002-mag.png", "samples/text2mel-00000002.wav"]:
        assert expected in names
    assert len((trained_run / "ssrn-losses.jsonl").read_text().splitlines()) == 2
    wav, sr = sf.read(trained_run / "samples" / "text2mel-00000002.wav")
    assert sr == S.get_spec("tiny").sr and len(wav) > 0 and np.abs(wav).max() > 0


def test_dctts_synthesize_writes_a_wav_of_plausible_length(framework, trained_run, tmp_path, capsys):
    """Real text (an abbreviation, money, a date), printed as the model reads it."""
    out = tmp_path / "smith.wav"
    with pytest.raises(SystemExit) as done:
        cli.synthesize_main(["--framework", framework, "--text2mel", str(trained_run), "--ssrn", str(trained_run),
                             "Dr. Smith paid $5 on 12/3.", "-o", str(out), "--max-frames", "20"])
    assert done.value.code == 0
    printed = capsys.readouterr().out
    spoken = "doctor smith paid five dollars on december third."
    assert f'text: "{spoken}"' in printed
    frames = int(re.search(r"(\d+) frames", printed).group(1))
    tiny, n_ids = S.get_spec("tiny"), len(spoken) + 1
    assert np.ceil((n_ids - 1) / 3) <= frames <= 20  # reading advances at most 3 characters a frame
    wav, sr = sf.read(out)
    assert sr == tiny.sr and len(wav) == (frames * tiny.r - 1) * tiny.hop


def test_dctts_synthesize_speaks_several_texts_in_batches(framework, trained_run, tmp_path, capsys):
    """Two texts and a file's line, in batches of 2: one wav each, numbered in order; the first
    is the wav the text gives alone."""
    lines = tmp_path / "lines.txt"
    lines.write_text("a third one from a file.\n")
    argv = ["--framework", framework, "--text2mel", str(trained_run), "--ssrn", str(trained_run), "--max-frames", "20"]
    with pytest.raises(SystemExit) as done:
        cli.synthesize_main([*argv, "First words.", "Then 2 more.", "--text-file", str(lines), "--batch-size", "2",
                             "-o", str(tmp_path / "many")])
    assert done.value.code == 0
    printed = capsys.readouterr().out
    assert 'text 2: "then two more."' in printed and 'text 3: "a third one from a file."' in printed
    assert sorted(p.name for p in (tmp_path / "many").iterdir()) == ["1.wav", "2.wav", "3.wav"]
    with pytest.raises(SystemExit):
        cli.synthesize_main([*argv, "First words.", "-o", str(tmp_path / "alone.wav")])
    batched, alone = sf.read(tmp_path / "many" / "1.wav")[0], sf.read(tmp_path / "alone.wav")[0]
    assert batched.shape == alone.shape
    np.testing.assert_allclose(batched, alone, atol=1e-3)


def test_dctts_synthesize_streams_a_wav_and_raw_pcm(framework, trained_run, tmp_path, capsysbinary):
    """--stream: the wav has the offline wav's length (the same frames: the stream of chunks is the
    offline synthesis) and holds sound; `-o -` puts the same samples on stdout as 16-bit PCM and every
    message on stderr."""
    argv = ["--framework", framework, "--text2mel", str(trained_run), "--ssrn", str(trained_run), "--max-frames", "20",
            "Then 2 more."]
    with pytest.raises(SystemExit) as done:
        cli.synthesize_main([*argv, "-o", str(tmp_path / "offline.wav")])
    assert done.value.code == 0
    with pytest.raises(SystemExit) as done:
        cli.synthesize_main([*argv, "--stream", "--chunk", "2", "-o", str(tmp_path / "new" / "stream.wav")])
    assert done.value.code == 0
    printed = capsysbinary.readouterr().out
    assert b"first audio after" in printed and b"real-time factor" in printed
    streamed, sr = sf.read(tmp_path / "new" / "stream.wav")  # its folder made as for an offline wav
    assert sr == S.get_spec("tiny").sr and streamed.shape == sf.read(tmp_path / "offline.wav")[0].shape
    assert np.abs(streamed).max() == pytest.approx(0.9, abs=1e-3)
    with pytest.raises(SystemExit) as done:
        cli.synthesize_main([*argv, "--stream", "--chunk", "2", "-o", "-"])
    assert done.value.code == 0
    out, err = capsysbinary.readouterr()
    assert b"first audio after" in err and b'text: "then two more."' in err
    np.testing.assert_allclose(np.frombuffer(out, "<i2") / 32767, streamed, atol=2 / 32767)


def test_bad_device_is_a_one_line_error(framework, trained_run, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "common.training.cli", "synthesize", "--framework", framework, "--device",
                           "tpu", "--text2mel", str(trained_run), "--ssrn", str(trained_run), "hello", "-o",
                           str(tmp_path / "x.wav")], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("dctts-synthesize: error:") and "tpu" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0


def test_quality_command_measures_held_out_sentences(framework, trained_run, tiny_corpus_dir, tmp_path, capsys):
    from common.evaluation import quality
    quality.main(["--framework", framework, "--text2mel", str(trained_run), "--data", str(tiny_corpus_dir),
                  "--sentences", "1", "--out", str(tmp_path / "q")])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("trained   held-out (1 sentences): MCD-DTW") and lines[1].startswith("untrained")
    assert lines[2].startswith("mean spectrum: MCD-DTW")
    result = json.loads((tmp_path / "q" / "quality.json").read_text())
    assert result["trained"]["n"] == 1 and result["trained"]["mcd_mean"] > 0
    assert len(list((tmp_path / "q").glob("*-attention.png"))) == 1
