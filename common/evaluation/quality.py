"""Objective quality of Text2Mel synthesis, for any framework (through the Backend interface
only): MCD-DTW against the reference mel of held-out sentences, the alignment of the
synthesized attention, and the baselines that make both readable (a constant mean-spectrum
output; the untrained network is `evaluate` on a backend with initial weights).
Definitions: ../shared/reference/quality_and_scaling.md.

With an espeak-ng corpus (common.data.corpus) the reference is exact: espeak-ng gives the same wav
for the same text, so a model trained on it can in principle reproduce a held-out sentence.

The evaluation compares REDUCED mels, Text2Mel's own output: every r-th frame of the
reference's features (`mel[:, ::spec.r]`, what common.data.batch.make_batch trains on). Every figure
is given over all sentences and per length band (BANDS), as long sentences align last.

    refs = heldout_references(corpus_dir, spec)
    frame = mean_frame(reference.mel for reference in training_references(corpus_dir, spec))
    result = evaluate(backend, refs, spec, mean_spectrum=frame)   # backend: load_backend(fw)(spec, "text2mel")
"""
from __future__ import annotations

import time
from typing import NamedTuple

import librosa
import numpy as np
import scipy.fft

from common.data import audio, dataset as data
from common.contract import losses
from common.data.corpus import load_heldout
from common.contract.spec import Spec
from common.contract.synthesis import reached_end

N_COEFFS = 13  # mel-cepstral coefficients c1..c13 (c0, the level, left out)
POWER_FLOOR = 1e-5  # "power" features: S / max S floored at -100 dB before the log (as the "db" recipe floors S)
MONOTONIC_SLACK = 1  # the argmax may fall this far behind the furthest position reached (force_incremental's -1)
# aligned: the network kept its own place in the text. Forcing over a few frames in a row is the
# attention jittering around a diagonal it still follows; a longer run means forcing dragged it
# along (README, "Does it speak?": the forced fraction did not track quality, these runs do).
MAX_FORCED_RUN = 4  # consecutive forced frames (4 reduced frames ~ 0.19 s at the demo's hop: a syllable)
MAX_FORCED_FRACTION = 0.5  # and the network chose its own position on at least half of the frames
# And it took about espeak-ng's time (synthesized / reference frames): attention that is monotonic and
# reaches the end also passes a model that drags every syllable out or pauses between words (1.8x too
# long counted as aligned until 2026-12-07); espeak-ng speaks at a fixed rate, so a model trained on it
# can match its durations. Symmetric in log: 0.8 = 1 / 1.25.
DURATION_RATIO_RANGE = (0.8, 1.25)
# Length bands of held-out sentences, in characters the model reads (normalized text, end-of-text not
# counted): ((1, 60), (61, 100), (101, 140), (141, 187)), the bands common.data.corpus draws held-out sets by.
# Short sentences align long before long ones, so one overall figure hides the long ones. The last band
# ends at LJSpeech's longest sentence; longer ones join it (`band`).
BANDS = data.LENGTH_BANDS
BAND_NAMES = tuple(f"{lo}-{hi}" for lo, hi in BANDS)  # evaluate's "bands" keys
DIAGONAL_G = 0.2  # [paper] the guided-attention width g, for `diagonality`
EVAL_BATCH = 8  # sentences synthesized at once (Backend.synthesize_batch: 3-5x the sentences/s of one at a time)
TRIM_DB = 50  # leading/trailing frames this far below the loudest are silence (espeak-ng's pauses: -65 dB and below)
_MCD_SCALE = 10 / np.log(10) * np.sqrt(2)


class Reference(NamedTuple):
    id: str
    ids: np.ndarray  # int32 text ids ending with end-of-text, as data.load_corpus makes them
    mel: np.ndarray  # reduced reference mel (F, ceil(T / r)) in [0, 1]


def log_mel(mel, spec: Spec) -> np.ndarray:
    """Natural log of the mel amplitudes, the feature normalization (common.data.audio) undone:
    "db": audio.to_db(mel, spec) is 20 log10 S; "power": mel = (S / max S)^gamma, so
    log(mel) / gamma, S / max S floored at POWER_FLOOR."""
    mel = np.asarray(mel, np.float64)
    if spec.features == "db":
        return audio.to_db(mel, spec) * (np.log(10) / 20)
    return np.log(np.maximum(mel, POWER_FLOOR ** spec.gamma)) / spec.gamma


def mel_cepstrum(mel, spec: Spec, n_coeffs: int = N_COEFFS) -> np.ndarray:
    """(n_coeffs, T) mel cepstrum c1..cD of log_mel over the F mel bands, in the cepstrum's own
    scale (the inverse-transform convention MCD is defined with): c_n = (1/F) sum_k
    log S_k cos(pi n (k + 1/2) / F), i.e. the unnormalized DCT-II / (2F); c0 (the mean log
    level) dropped. An orthonormal DCT would scale every c_n by sqrt(2F) (12.6 at F = 80), and
    MCD with it. A constant offset of the log spectrum moves c0 only, so the cepstrum ignores
    the level (the per-utterance normalization of "power" features, loudness)."""
    if not 1 <= n_coeffs < spec.n_mels:
        raise ValueError(f"n_coeffs must lie in [1, n_mels={spec.n_mels}), got {n_coeffs}")
    log = log_mel(mel, spec)
    return scipy.fft.dct(log, type=2, axis=0)[1:n_coeffs + 1] / (2 * log.shape[0])


def trim_silence(mel, spec: Spec, top_db: float = TRIM_DB) -> np.ndarray:
    """`mel` without its leading and trailing frames whose loudest band lies more than top_db
    below the loudest band of the whole mel (at least one frame is kept)."""
    level = log_mel(mel, spec).max(axis=0) * (20 / np.log(10))
    loud = np.flatnonzero(level >= level.max() - top_db)
    return np.asarray(mel)[:, loud[0]:loud[-1] + 1]


def mcd_dtw(mel, reference, spec: Spec, n_coeffs: int = N_COEFFS) -> float:
    """Mel-cepstral distortion in dB after dynamic time warping, of `mel` against `reference`:
    both without leading and trailing silence (trim_silence), their cepstra (mel_cepstrum)
    aligned by librosa.sequence.dtw (euclidean cost, steps (1,1), (1,0), (0,1), all of weight
    1, whole sequences); MCD = (10 / ln 10) * sqrt(2 * sum_d (c_d - c'_d)^2) per aligned frame
    pair, summed over the path and divided by the REFERENCE's frame count. Both choices keep
    the length of `mel` from moving the figure by itself: averaged over the path untrimmed, a
    wrong sentence followed by 80 frames of silence scored 2.9 dB against its reference
    instead of 6.1 (the silence pairs cheaply with the reference's last frame and dilutes the
    mean), so a synthesis that never stopped looked better than one that did; summed but
    untrimmed, the silence after a synthesis's last word cost as much as a wrong word. Any
    frame rate, as long as both mels have the same (the evaluation: reduced)."""
    mel, reference = trim_silence(mel, spec), trim_silence(reference, spec)
    a, b = mel_cepstrum(mel, spec, n_coeffs), mel_cepstrum(reference, spec, n_coeffs)
    if a.shape[1] == 0 or b.shape[1] == 0:
        raise ValueError(f"mcd_dtw needs frames in both mels, got {a.shape[1]} and {b.shape[1]}")
    _, path = librosa.sequence.dtw(X=a, Y=b, metric="euclidean")
    return float(_MCD_SCALE * np.linalg.norm(a[:, path[:, 0]] - b[:, path[:, 1]], axis=0).sum() / b.shape[1])


def spectral_convergence(wav, reference, spec: Spec) -> float:
    """|| |STFT(wav)| - |STFT(reference)| ||_F / || |STFT(reference)| ||_F over their common frames,
    each wav scaled to unit RMS first (the figure compares spectra, not levels): 0 for the same
    spectrum; Griffin-Lim's usual measure of how far one inversion lies from another."""
    def magnitudes(y):
        y = np.asarray(y, np.float64)
        y = y / max(np.sqrt(np.mean(y ** 2)), np.finfo(np.float64).tiny)
        return np.abs(librosa.stft(y, n_fft=spec.n_fft, hop_length=spec.hop, win_length=spec.win, window="hann"))

    a, b = magnitudes(wav), magnitudes(reference)
    n = min(a.shape[1], b.shape[1])
    return float(np.linalg.norm(a[:, :n] - b[:, :n]) / max(np.linalg.norm(b[:, :n]), np.finfo(np.float64).tiny))


def alignment(attention, n_text: int, real_frames: int, forced) -> dict:
    """How one synthesized sentence's attention (N, T) behaved; positions = argmax per frame.

    forced_frames: frames whose column forcibly incremental attention replaced
      (common.contract.synthesis.force_incremental), as synthesis reports them: `forced` (T,) bool,
      Synthesis.forced. Not inferred from the attention: a sharp trained attention's softmax
      column underflows to an exact one-hot by itself (logit gaps above ~104 in fp32), which a
      forced column also is.
    forced_fraction: forced_frames / T; longest_forced_run: most consecutive forced frames.
    monotonic: no position falls more than MONOTONIC_SLACK (1) behind the furthest reached so
      far (force_incremental allows a step back by 1; repeated ones would read backwards).
    reaches_end: the last position is the end-of-text symbol (common.contract.synthesis.reached_end):
      synthesis stopped by itself, not at max_frames.
    diagonality: over the U unforced frames only, 1 - (1/U) sum_{n, unforced t} A[n,t] W[n,t], W the
      guided-attention weights 1 - exp(-(n/N - t/T)^2 / (2 g^2)) (common.contract.losses.guide, g = DIAGONAL_G
      = 0.2): 1 with all mass on the line n/N = t/T, about 0.25 for attention stuck on the first
      character; None when every frame was forced. Forced columns sit on the diagonal by
      construction: counted, they gave the untrained network, 87% forced, 0.91.
    duration_ratio: T / real_frames (the reference's reduced length).
    aligned: monotonic and reaches_end and longest_forced_run <= MAX_FORCED_RUN (4) and
      forced_fraction <= MAX_FORCED_FRACTION (0.5) and duration_ratio within DURATION_RATIO_RANGE
      (0.8-1.25; since 2026-12-07)."""
    a = np.asarray(attention)[:n_text]
    forced_columns = np.asarray(forced, bool)
    if a.ndim != 2 or a.shape[0] != n_text or a.shape[1] == 0 or n_text < 1 or real_frames < 1 \
            or forced_columns.shape != a.shape[1:]:
        raise ValueError(f"need attention (n_text={n_text}, T > 0), forced (T,) and real_frames >= 1, got "
                         f"{np.shape(attention)}, {np.shape(forced)} and {real_frames}")
    t = a.shape[1]
    positions = a.argmax(axis=0)
    forced = int(forced_columns.sum())
    behind = np.maximum.accumulate(positions) - positions
    w = losses.guide([n_text], [t], n_text, t, DIAGONAL_G)[0]
    out = {"frames": t, "forced_frames": forced, "forced_fraction": forced / t,
           "longest_forced_run": longest_run(forced_columns),
           "monotonic": bool(behind.max() <= MONOTONIC_SLACK),
           "reaches_end": bool(reached_end(int(positions[-1]), n_text)),
           "diagonality": diagonality(a, w, ~forced_columns),
           "duration_ratio": t / real_frames}
    low, high = DURATION_RATIO_RANGE
    out["aligned"] = (out["monotonic"] and out["reaches_end"] and out["longest_forced_run"] <= MAX_FORCED_RUN
                      and out["forced_fraction"] <= MAX_FORCED_FRACTION and low <= out["duration_ratio"] <= high)
    return out


def diagonality(a, w, frames):
    """1 - the mean guided-attention penalty of attention `a` (N, T) under weights `w` over the
    columns `frames` (T,) bool; None for no column."""
    u = int(frames.sum())
    return float(1 - np.sum(a[:, frames].astype(np.float64) * w[:, frames]) / u) if u else None


def band(n_chars: int) -> str:
    """The name ("61-100") of the BANDS band of a sentence of n_chars characters (end-of-text not
    counted: len(ids) - 1); beyond the last band's end, the last band."""
    return BAND_NAMES[next((i for i, (_, hi) in enumerate(BANDS) if n_chars <= hi), len(BANDS) - 1)]


def longest_run(flags) -> int:
    """The most consecutive True values in a 1-D boolean array (0 when none)."""
    edges = np.diff(np.concatenate([[0], np.asarray(flags, np.int8), [0]]))
    return int((np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)).max(initial=0))


def references(c: data.Corpus, n: int | None = None) -> list:
    """[Reference] of the first n utterances of a loaded corpus (all when n is None): their ids
    and the reduced cached mel."""
    return [Reference(u.id, u.ids, c.features(i)[0][:, ::c.spec.r]) for i, u in enumerate(c.items[:n])]


def heldout_references(corpus_dir, spec: Spec) -> list:
    """[Reference] of a corpus's held-out set (heldout.csv, common.data.corpus.load_heldout)."""
    return references(load_heldout(corpus_dir, spec))


def training_references(corpus_dir, spec: Spec, n: int | None = None) -> list:
    """[Reference] of the first n training utterances (metadata.csv, data.load_corpus): the same
    measurements on training data show over-fitting."""
    return references(data.load_corpus(corpus_dir, spec, progress=False), n)


def mean_frame(mels) -> np.ndarray:
    """(F,) the mean frame of an iterable of mels (F, T_i): the mean-spectrum baseline repeats
    it for each reference's length. The training corpus's: with c = data.load_corpus(dir, spec),
    mean_frame(c.features(i)[0] for i in range(len(c)))."""
    total, count = 0.0, 0
    for m in mels:
        total, count = total + np.asarray(m, np.float64).sum(axis=1), count + m.shape[1]
    if count == 0:
        raise ValueError("mean_frame needs at least one frame")
    return (total / count).astype(np.float32)


def evaluate(backend, refs, spec: Spec, max_frames: int | None = None, n_coeffs: int = N_COEFFS,
             mean_spectrum: np.ndarray | None = None, batch_size: int = EVAL_BATCH) -> dict:
    """Synthesize each Reference's text with `backend` (a Text2Mel Backend of any framework, up to
    max_frames reduced frames, default spec.max_frames; `batch_size` sentences at a time, each as
    if alone: Backend.synthesize_batch) and measure it against the reference:
    mcd_dtw and alignment per sentence ("rows", each with its length band; the forced frames are
    those the synthesis reports, Synthesis.forced), their aggregates (`aggregate`) over all
    sentences and per BANDS band ("bands": {"1-60": {...}, ...}). With
    `mean_spectrum` (a frame, see mean_frame) the mean-spectrum baseline too: that frame repeated
    for the reference's length, its MCD per row. "seconds": the evaluation's own wall time."""
    refs = list(refs)
    if not refs:
        raise ValueError("evaluate needs at least one reference sentence")
    start, rows = time.perf_counter(), []
    synthesized = [out for i in range(0, len(refs), batch_size)
                   for out in backend.synthesize_batch([r.ids for r in refs[i:i + batch_size]], max_frames or spec.max_frames)]
    for ref, out in zip(refs, synthesized):
        (mel, attention), real = out, ref.mel.shape[1]
        row = {"id": ref.id, "n_text": len(ref.ids), "band": band(len(ref.ids) - 1), "real_frames": real,
               "mcd": mcd_dtw(mel, ref.mel, spec, n_coeffs), **alignment(attention, len(ref.ids), real, out.forced)}
        if mean_spectrum is not None:
            constant = np.repeat(np.asarray(mean_spectrum, np.float32)[:, None], real, axis=1)
            row["mcd_mean_spectrum"] = mcd_dtw(constant, ref.mel, spec, n_coeffs)
        rows.append(row)
    out = {**aggregate(rows), "n_coeffs": n_coeffs,
           "bands": {name: aggregate([r for r in rows if r["band"] == name]) for name in BAND_NAMES}}
    out.update(seconds=time.perf_counter() - start, rows=rows)
    return out


def aggregate(rows) -> dict:
    """The figures of a set of evaluate's rows, the same for all sentences and for each band: means
    and medians of MCD-DTW and the alignment; with the mean-spectrum baseline's MCD in the rows,
    its mean and median, mcd_ratio_to_mean_spectrum = mcd_mean / the baseline's mean and mcd_gain =
    the baseline's mean - mcd_mean (dB the model is better). {"n": 0} for no rows."""
    if not rows:
        return {"n": 0}

    def column(key):
        return np.array([r[key] for r in rows], np.float64)

    out = {"n": len(rows),
           "mcd_mean": float(column("mcd").mean()), "mcd_median": float(np.median(column("mcd"))),
           "aligned_rate": float(column("aligned").mean()), "reaches_end_rate": float(column("reaches_end").mean()),
           "monotonic_rate": float(column("monotonic").mean()),
           "forced_fraction_mean": float(column("forced_fraction").mean()),
           "longest_forced_run_median": float(np.median(column("longest_forced_run"))),
           "duration_ratio_mean": float(column("duration_ratio").mean()),
           "diagonality_mean": _mean_of_known([r["diagonality"] for r in rows])}
    if "mcd_mean_spectrum" in rows[0]:
        base = column("mcd_mean_spectrum")
        out.update(mcd_mean_spectrum_mean=float(base.mean()), mcd_mean_spectrum_median=float(np.median(base)),
                   mcd_ratio_to_mean_spectrum=out["mcd_mean"] / float(base.mean()),
                   mcd_gain=float(base.mean()) - out["mcd_mean"])
    return out


def _number(value, fmt: str) -> str:
    """A figure as text; "—" for one that is unknown (None) or missing."""
    return "—" if value is None else format(value, fmt)


def _mean_of_known(values):
    """The mean of the values that are not None (None if none is)."""
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known else None


def bands_table(results: dict) -> str:
    """A markdown table of the per-band figures of {label: evaluate's result (or its figures without
    rows)}, one line per label and band; "—" where a band has no sentence or no baseline."""
    def num(figures, key, fmt):
        return _number(figures.get(key), fmt)

    lines = ["| model | band (characters) | sentences | MCD-DTW (dB) | mean-spectrum MCD | gain | aligned | forced "
             "| duration ratio |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for label, result in results.items():
        for name, b in result["bands"].items():
            lines.append(f"| {label} | {name} | {b['n']} | {num(b, 'mcd_mean', '.2f')} "
                         f"| {num(b, 'mcd_mean_spectrum_mean', '.2f')} | {num(b, 'mcd_gain', '+.2f')} "
                         f"| {num(b, 'aligned_rate', '.0%')} | {num(b, 'forced_fraction_mean', '.0%')} "
                         f"| {num(b, 'duration_ratio_mean', '.2f')} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    """`python -m common.evaluation.quality --framework F --text2mel RUN_OR_FILE --data CORPUS`: held-out
    quality of a trained Text2Mel against the untrained network and the mean spectrum, one
    summary line each, then the trained model's figures per length band (bands_table); --out DIR
    also writes the numbers (quality.json), the band table (bands.md) and each sentence's synthesis
    attention (PNG)."""
    import argparse
    import json
    from pathlib import Path

    from common.training import cli, plots
    from common.training.contention import Contention
    from common.framework import configure_threads, load_backend

    p = argparse.ArgumentParser(prog="python -m common.evaluation.quality", description=main.__doc__.split("\n\n")[0])
    p.add_argument("--framework", required=True)
    p.add_argument("--text2mel", required=True, type=Path, help="checkpoint, weight file or run directory")
    p.add_argument("--data", required=True, type=Path, help="an espeak-ng corpus with heldout.csv (common.data.corpus)")
    p.add_argument("--sentences", type=int, help="the first N held-out sentences (default: all)")
    p.add_argument("--training", action="store_true", help="as many training sentences instead (over-fitting)")
    p.add_argument("--threads", type=int)
    p.add_argument("--out", type=Path, help="folder for quality.json, bands.md and attention plots")
    args = p.parse_args(argv)
    if args.threads:
        configure_threads(args.framework, args.threads)
    weights, spec = cli.read_model(args.text2mel, "text2mel")
    refs = heldout_references(args.data, spec)[:args.sentences]
    corpus = data.load_corpus(args.data, spec, progress=False)
    if args.training:
        refs = references(corpus, len(refs))
    mean = mean_frame(ref.mel for ref in references(corpus))
    backend_cls = load_backend(args.framework)
    trained = cli.build_model(backend_cls, (weights, spec), "text2mel", "cpu")
    shared = Contention("the quality run")
    results = {"trained": evaluate(trained, refs, spec, mean_spectrum=mean),
               "untrained": evaluate(backend_cls(spec, "text2mel"), refs, spec)}
    shared.tick()  # over the whole evaluation: it synthesizes in one call
    which = "training" if args.training else "held-out"
    for name, r in results.items():
        print(f"{name:9s} {which} ({r['n']} sentences): MCD-DTW {r['mcd_mean']:.2f} dB, aligned {r['aligned_rate']:.0%}, "
              f"forced {r['forced_fraction_mean']:.0%}, reaches end {r['reaches_end_rate']:.0%}, duration ratio "
              f"{r['duration_ratio_mean']:.2f}, diagonality {_number(r['diagonality_mean'], '.2f')}")
    print(f"mean spectrum: MCD-DTW {results['trained']['mcd_mean_spectrum_mean']:.2f} dB")
    bands = bands_table({"trained": results["trained"]})
    print(f"\n{bands}", end="")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "quality.json").write_text(json.dumps(results, indent=1))
        (args.out / "bands.md").write_text(bands)
        for ref in refs:
            _, attention = trained.synthesize(ref.ids, spec.max_frames)
            plots.attention(args.out / f"{ref.id}-attention.png", attention, f"{ref.id}: synthesis attention")
        print(f"written to {args.out}")


if __name__ == "__main__":
    main()
