"""Streaming synthesis (`python bench/run.py --task stream`): how soon a listener hears the first
audio, in every framework. Per framework, in a fresh process with the same threads, after the parity
gate: a short (~40 characters) and a long (~150) sentence spoken as a stream (common.streaming:
Text2Mel a chunk of 1, 4 or 16 reduced frames at a time, SSRN on chunks, streaming Griffin-Lim) and
offline (the whole mel, SSRN, Griffin-Lim) end to end, each once uncounted first (a hybridized graph
meets each SSRN window length of a chunk size there). Per stream: the time to the first audio, the
real-time factor, the longest wait between pieces, the seconds a player started at the first audio
would have waited (stall), and each stage's share. Rounds alternate the framework order; medians.
Apart from the frameworks: the streaming vocoder against offline Griffin-Lim on the same sentences
spoken by espeak-ng (spectral convergence and MCD-DTW).

Outputs in --out: stream.json (every run), stream.md (the tables), stream.png (audio delivered
against wall time). One run is `python -m bench.stream --worker ...`.
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

from bench import machine

CHUNKS = (1, 4, 16)
SENTENCE_CHARS = {"short": 40, "long": 150}
FIRST_AUDIO_TARGET = 0.10  # issue 26: the first audio within 10% of the long sentence's offline latency


def sentences(spec) -> dict:
    """{"short": text, "long": text}: the embedded sentences (common/data/sentences.txt) nearest to
    SENTENCE_CHARS characters once normalized, that fit the spec."""
    from common.data import corpus, text

    pool = corpus.sentences(spec.max_chars)
    return {name: min(pool, key=lambda s: (abs(len(text.normalize(s)) - n), s)) for name, n in SENTENCE_CHARS.items()}


def parse_worker_args(argv):
    p = machine.worker_parser("python -m bench.stream --worker")
    p.add_argument("--text2mel", default=None)
    p.add_argument("--ssrn", default=None)
    return p.parse_args(argv)


def worker_main(argv) -> None:
    """One framework's streams and offline runs; the record goes to --result."""
    args = parse_worker_args(argv)
    machine.apply_threads(args.threads)
    from bench import inputs, parity  # numpy and the framework load only now
    from bench.measure import trained_weights
    from common.contract import spec as S
    from common.contract.weights import init_weights
    from common.data import audio, text
    from common.framework import configure_threads, load_backend
    from common.streaming import pipeline

    configure_threads(args.framework, args.threads)
    if args.text2mel:
        initial, spec = trained_weights({"text2mel": args.text2mel, "ssrn": args.ssrn}, S.NETS)
    else:
        spec = S.get_spec(args.preset)
        initial = {net: init_weights(spec, net, args.seed) for net in S.NETS}
    backend_cls = load_backend(args.framework)
    t2m, ssrn = (backend_cls(spec, net, device=args.device, seed=args.seed) for net in S.NETS)
    t2m.set_weights(initial["text2mel"])
    ssrn.set_weights(initial["ssrn"])
    gate_batch = inputs.short_batch(spec, args.seed)
    gate = {net: parity.parity_gate(b, initial[net], gate_batch) for net, b in (("text2mel", t2m), ("ssrn", ssrn))}
    record = {"framework": args.framework, "preset": spec.name, "threads": args.threads, "gate": gate,
              "status": "ok" if all(g["passed"] for g in gate.values()) else "failed", "sentences": {}}
    if record["status"] == "ok":
        for name, sentence in sentences(spec).items():
            ids = text.text_to_ids(sentence, spec)

            def offline():
                start = time.perf_counter()
                mel, _ = t2m.synthesize(ids, spec.max_frames)
                t2m.sync()
                mid = time.perf_counter()
                mag = ssrn.upsample(mel)
                ssrn.sync()
                late = time.perf_counter()
                wav = audio.mag_to_wav(mag, spec)
                end = time.perf_counter()
                return {"latency_s": end - start, "text2mel_s": mid - start, "ssrn_s": late - mid,
                        "vocoder_s": end - late, "audio_s": len(wav) / spec.sr, "frames": mel.shape[1]}

            def stream(chunk):
                pieces = list(pipeline.speak(t2m, ssrn, ids, chunk, spec.max_frames))
                line = pipeline.timeline(pieces, spec.sr)
                stages = {k: sum(getattr(p, k) for p in pieces) for k in ("text2mel_s", "ssrn_s", "vocoder_s")}
                audio_so_far = 0.0
                curve = []
                for p in pieces:
                    audio_so_far += p.samples.size / spec.sr
                    curve.append([p.at, audio_so_far])
                return {**line._asdict(), "real_time_factor": line.real_time_factor, **stages, "curve": curve}

            offline()  # warm-up: first calls (hybridization, a graph per new length, allocations) are not counted
            for chunk in CHUNKS:  # each chunk size meets its own SSRN window lengths
                stream(chunk)
            record["sentences"][name] = {"text": sentence, "chars": len(ids), "offline": offline(),
                                         "stream": {str(c): stream(c) for c in CHUNKS}}
    Path(args.result).write_text(json.dumps(record))


def run_one(args, framework: str) -> dict:
    result = args.out / f".stream-{framework}.json"
    cmd = [sys.executable, "-m", "bench.stream", "--worker", "--framework", framework, "--preset", args.preset,
           "--threads", str(args.threads), "--device", args.device, "--seed", str(args.seed), "--result", str(result)]
    if args.text2mel is not None:
        cmd += ["--text2mel", str(args.text2mel), "--ssrn", str(args.ssrn)]
    return machine.run_worker_process(cmd, result, machine.subprocess_env(args.threads, args.device), args.timeout,
                                      {"framework": framework})


def vocoder_quality(spec) -> list:
    """The streaming vocoder against offline Griffin-Lim on the benchmark's sentences spoken by
    espeak-ng (their magnitudes by the spec's recipe): per sentence and chunk size (reduced frames,
    r magnitude frames each), spectral convergence and MCD-DTW of the streamed wav against the offline
    one, and the seconds each took."""
    import librosa
    import numpy as np

    from common.data import audio, espeak
    from common.evaluation import quality
    from common.streaming.vocoder import StreamingGriffinLim

    rows = []
    for name, sentence in sentences(spec).items():
        samples, sr = espeak.speak(sentence)
        wav = librosa.resample(np.asarray(samples, np.float32) / 32768, orig_sr=sr, target_sr=spec.sr)
        mag = audio.features(wav, spec)[1]
        start = time.perf_counter()
        offline = audio.mag_to_wav(mag, spec)
        offline_s = time.perf_counter() - start
        for chunk in CHUNKS:
            step = chunk * spec.r
            start = time.perf_counter()
            vocoder = StreamingGriffinLim(spec)
            streamed = np.concatenate([vocoder.push(mag[:, i:i + step]) for i in range(0, mag.shape[1], step)]
                                      + [vocoder.finish()])
            rows.append({"sentence": name, "chunk": chunk, "audio_s": len(offline) / spec.sr,
                         "spectral_convergence": quality.spectral_convergence(streamed, offline, spec),
                         "mcd_dtw": quality.mcd_dtw(audio.features(streamed, spec)[0], audio.features(offline, spec)[0],
                                                    spec),
                         "stream_s": time.perf_counter() - start, "offline_s": offline_s})
    return rows


def run(args) -> list:
    """Every framework, `args.repeat` rounds in alternating order; the outputs rewritten after each run."""
    from tqdm import tqdm

    from common.contract.spec import get_spec

    args.out.mkdir(parents=True, exist_ok=True)
    spec = get_spec(args.preset)
    quality = vocoder_quality(spec)
    plan = [(rnd, fw) for rnd in range(args.repeat) for fw in (args.framework if rnd % 2 == 0 else args.framework[::-1])]
    records = []
    for rnd, fw in tqdm(plan, desc="stream", unit="run"):
        records.append({**run_one(args, fw), "round": rnd})
        write(args, records, quality)
    plot(args.out / "stream.png", records, args.framework)
    return records


def medians(records: list) -> dict:
    """{(framework, sentence): {"offline": {key: median}, "stream": {chunk: {key: median}}, "chars", "frames"}}
    over the rounds of the ok records."""
    out = {}
    for r in records:
        if r["status"] != "ok":
            continue
        for name, s in r["sentences"].items():
            entry = out.setdefault((r["framework"], name), {"chars": s["chars"], "runs": []})
            entry["runs"].append(s)
    for entry in out.values():
        runs = entry.pop("runs")
        entry["frames"] = sorted({run["offline"]["frames"] for run in runs})
        entry["offline"] = {k: statistics.median(run["offline"][k] for run in runs) for k in runs[0]["offline"]}
        entry["stream"] = {c: {k: statistics.median(run["stream"][c][k] for run in runs)
                               for k in runs[0]["stream"][c] if k != "curve"} for c in runs[0]["stream"]}
    return out


def markdown(args, records: list, quality: list) -> str:
    table, info = medians(records), args.machine
    rounds = max((r["round"] for r in records), default=-1) + 1
    lines = [f"# Streaming synthesis ({args.preset}, {args.device})", "",
             f"machine: {machine.described(info)}; {args.threads} threads a framework; "
             f"{'trained models' if args.text2mel else 'untrained weights (init_weights, seed ' + str(args.seed) + ')'}"
             f"; {rounds} round(s), framework order alternating; medians. Commit: "
             f"{machine.commit_line(info, getattr(args, 'allow_dirty', False))}.", "",
             "first audio = seconds from the call to the first samples; / offline = that over the offline end-to-end "
             "latency of the same sentence (the long one's is the target's yardstick); RTF = the stream's seconds "
             "per second of audio; longest wait = between two pieces after the first; stall = seconds a player "
             "started at the first audio would have waited in all (0: it never ran dry); shares = the stream's time "
             "in Text2Mel / SSRN / Griffin-Lim.", "",
             "| framework | sentence (chars, frames) | chunk | first audio ms | / offline | RTF | longest wait ms | "
             "stall ms | Text2Mel / SSRN / GL |", "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    verdicts = []
    for fw in args.framework:
        long_offline = table.get((fw, "long"), {}).get("offline", {}).get("latency_s")
        met, dry = [], []
        for name in SENTENCE_CHARS:
            entry = table.get((fw, name))
            if entry is None:
                continue
            o = entry["offline"]
            label = f"{name} ({entry['chars']}, {'/'.join(map(str, entry['frames']))})"
            lines.append(f"| {fw} | {label} | offline | {o['latency_s'] * 1e3:.0f} (whole) | 1 | "
                         f"{o['latency_s'] / o['audio_s']:.2f} | - | - | "
                         f"{shares(o['text2mel_s'], o['ssrn_s'], o['vocoder_s'])} |")
            for chunk, s in entry["stream"].items():
                lines.append(f"| {fw} | {label} | {chunk} | {s['first_audio_s'] * 1e3:.0f} | "
                             f"{100 * s['first_audio_s'] / o['latency_s']:.1f}% | {s['real_time_factor']:.2f} | "
                             f"{s['max_gap_s'] * 1e3:.0f} | {s['stall_s'] * 1e3:.0f} | "
                             f"{shares(s['text2mel_s'], s['ssrn_s'], s['vocoder_s'])} |")
                if name == "long" and s["first_audio_s"] <= FIRST_AUDIO_TARGET * long_offline:
                    met.append(chunk)
                if s["stall_s"] > 0:
                    dry.append(f"{name} at {chunk}")
        if long_offline is not None:
            verdicts.append(f"- {fw}: first audio within {FIRST_AUDIO_TARGET:.0%} of the long sentence's offline "
                            f"latency at chunk {', '.join(met) if met else 'none'}; "
                            + (f"ran dry: {', '.join(dry)}" if dry else "never ran dry"))
    lines += ["", "Targets (issue 26: first audio <= 10% of the long sentence's offline latency; never run dry):",
              *verdicts]
    failed = [r for r in records if r["status"] != "ok"]
    lines += [f"- FAILED {r['framework']} round {r['round']}: {r.get('reason', r.get('gate'))}"[:400] for r in failed]
    lines += ["", "## The streaming vocoder against offline Griffin-Lim", "",
              "The benchmark's sentences spoken by espeak-ng, their magnitudes by the preset's recipe, inverted offline "
              "(common.data.audio.mag_to_wav) and streamed a chunk at a time (common.streaming.vocoder); spectral "
              "convergence of the streamed wav's spectrum against the offline one's (both at unit RMS) and MCD-DTW "
              "of their mels (quality.mcd_dtw); seconds on one thread of this process.", "",
              "| sentence | chunk | audio s | spectral convergence | MCD-DTW dB | streamed s | offline s |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {q['sentence']} | {q['chunk']} | {q['audio_s']:.2f} | {q['spectral_convergence']:.3f} | "
              f"{q['mcd_dtw']:.2f} | {q['stream_s']:.2f} | {q['offline_s']:.2f} |" for q in quality]
    return "\n".join(lines) + "\n"


def shares(*seconds) -> str:
    total = sum(seconds) or 1.0
    return " / ".join(f"{100 * s / total:.0f}%" for s in seconds)


def plot(path: Path, records: list, frameworks: list) -> None:
    """Audio delivered against wall time, the long sentence, one panel per chunk size: a line per
    framework (its median round by total time) and, dotted, real-time playback from its first audio
    (a stream stays at or above it when it never runs dry)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in records if r["status"] == "ok" and "long" in r["sentences"]]
    if not ok:
        return
    fig, axes = plt.subplots(1, len(CHUNKS), figsize=(4.2 * len(CHUNKS), 3.6), sharey=True)
    for ax, chunk in zip(axes, CHUNKS):
        for i, fw in enumerate(frameworks):
            runs = sorted((r["sentences"]["long"]["stream"][str(chunk)] for r in ok if r["framework"] == fw),
                          key=lambda s: s["total_s"])
            if not runs:
                continue
            curve = runs[len(runs) // 2]["curve"]
            at, delivered = [0.0] + [c[0] for c in curve], [0.0] + [c[1] for c in curve]
            line, = ax.step(at, delivered, where="post", label=fw, color=f"C{i}")
            ax.plot([curve[0][0], curve[0][0] + delivered[-1]], [0, delivered[-1]], ":", color=line.get_color())
        ax.set_title(f"chunks of {chunk} reduced frame{'s' * (chunk > 1)}")
        ax.set_xlabel("wall time, s")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("audio delivered, s")
    axes[0].legend(loc="upper left")
    fig.suptitle("Streaming the long sentence (dotted: playback from the first audio)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(args, records: list, quality: list) -> None:
    options = {k: str(v) for k, v in vars(args).items() if k != "machine"}
    (args.out / "stream.json").write_text(json.dumps({"options": options,
                                                      "machine": args.machine, "records": records,
                                                      "vocoder_quality": quality}, indent=1))
    (args.out / "stream.md").write_text(markdown(args, records, quality))


if __name__ == "__main__":
    if "--worker" in sys.argv[1:]:
        worker_main(sys.argv[1:])
    else:
        sys.exit("run it through bench/run.py --task stream (this module's --worker mode is one process of a run)")
