"""Command lines, one for every framework (chosen with --framework):

    dctts-train --framework torch --model text2mel --data DIR --out DIR [--preset tiny] ...
    dctts-train ... --workers 2        (data-parallel, on the framework's own engine: common.training.distributed)
    dctts-synthesize --framework torch --text2mel CKPT --ssrn CKPT "some text" -o out.wav
    dctts-synthesize ... "one text" "another" --text-file lines.txt -o outdir/   (one wav per text)
    dctts-synthesize ... --stream "one text" -o - | aplay -f S16_LE -r 22050 -c 1   (audio as it is produced)

(also `python -m common.training.cli train ...` / `python -m common.training.cli synthesize ...`). Bad input
gives one line on stderr and a non-zero exit status, never a traceback.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import warnings
from pathlib import Path

from tqdm import tqdm

from common.data import audio, dataset as data, text
from common.training import checkpoint, distributed, train_loop
from common.contract import weights
from common.training.contention import Contention
from common.environment import SetupError
from common.data.espeak import EspeakError
from common.streaming import output, pipeline
from common.framework import FRAMEWORKS, configure_threads, load_backend
from common.contract.spec import NETS, PRESETS, get_spec, parse_overrides
from common.contract.synthesis import check_chunk, reached_end

EXIT_ERROR, EXIT_INTERRUPTED = 1, 130
# What bad input raises (one line on stderr); any other error is a bug and keeps its traceback. The
# project's own ValueErrors (TrainError, DataError, AudioError, TextError, WeightsError,
# CheckpointError, a bad spec or argument) and RuntimeErrors, and OSError (a path, a disk).
INPUT_ERRORS = (ValueError, OSError, EspeakError, SetupError, distributed.LaunchError)
DEFAULT_CHUNK = 4  # --stream's reduced frames a chunk (186 ms of audio at the paper's STFT)
# The two networks meet at the reduced mel: these fields must agree between them.
SHARED_AUDIO_FIELDS = data.AUDIO_FIELDS + ("r",)


def check_writable(path: Path) -> None:
    """Refuse (OSError) an output file that cannot be written, before the work that would fill it."""
    if Path(path).is_dir():
        raise IsADirectoryError(f"cannot write {path}: it is a directory")
    reason = data.unwritable(path)
    if reason:
        raise OSError(f"cannot write {path}: {reason}")


def _common_options(parser: argparse.ArgumentParser, framework_required: bool = True) -> None:
    parser.add_argument("--framework", required=framework_required, choices=FRAMEWORKS)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--threads", type=int, help="CPU threads of the framework (default: its own choice)")


def train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dctts-train", description="Train Text2Mel or SSRN (separately, as in the "
                                "paper); resumes from the newest checkpoint in --out.")
    _common_options(p)
    p.add_argument("--model", required=True, choices=NETS)
    p.add_argument("--data", required=True, type=Path, help="LJSpeech-format corpus (metadata.csv, wavs/)")
    p.add_argument("--out", required=True, type=Path, help="run directory (checkpoints, losses, plots, samples)")
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="hyperparameters (default: the checkpoint's when resuming, else paper)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="change one hyperparameter of the preset (repeatable), e.g. --set norm=batch "
                        "--set conv=bottleneck (the fields: common/contract/spec.py; a resumed run must repeat them)")
    p.add_argument("--steps", type=int, default=10000, help="train until this many steps in all (default: 10000)")
    p.add_argument("--batch-size", type=int, help="default: the preset's (or the checkpoint's)")
    p.add_argument("--checkpoint-every", type=int, default=1000, help="default: 1000 steps")
    p.add_argument("--seed", type=int, help="run seed (default: the checkpoint's, else 0)")
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="continue from the newest checkpoint in --out (default); --no-resume refuses to "
                        "start where checkpoints exist")
    p.add_argument("--cache", type=Path, default=os.environ.get("DCTTS_CACHE") or None,
                   help="folder for feature caches, one per corpus (default: $DCTTS_CACHE, else <data>/.dctts-cache, "
                        "else ~/.cache/dctts-bench for a read-only corpus)")
    p.add_argument("--workers", type=int, default=1, help="data-parallel worker processes on this machine, each "
                   "training on its share of every global batch through the framework's own engine (torchrun, "
                   "mpiexec + ChainerMN, MXNet dist_sync); default 1. --threads is then per worker (default: "
                   "the cores / workers)")
    p.add_argument("--worker-timeout", type=float, default=distributed.WORKER_TIMEOUT,
                   help="seconds a worker may go without finishing a step before the job is stopped "
                        f"(default: {distributed.WORKER_TIMEOUT:.0f})")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def synthesize_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dctts-synthesize", description="Text -> wav with trained Text2Mel and SSRN "
                                "checkpoints (or weight files, or run directories: their newest checkpoint). "
                                "Numbers, money, times, dates, abbreviations and symbols are spelled out first "
                                "(common/data/text.py); the text as spoken is printed.")
    _common_options(p, framework_required=False)  # --show-text needs none: run_synthesize checks it
    p.add_argument("--text2mel", type=Path, help="required unless --show-text")
    p.add_argument("--ssrn", type=Path, help="required unless --show-text")
    p.add_argument("text", nargs="*", help="text(s) to speak")
    p.add_argument("--text-file", type=Path, help="more texts, one per non-empty line (UTF-8)")
    p.add_argument("-o", "--output", type=Path, help="wav file to write for one text; for several, a folder that "
                   "gets 1.wav, 2.wav, ... in the order given; with --stream, '-' writes raw 16-bit PCM to stdout "
                   "(required unless --show-text)")
    p.add_argument("--stream", action="store_true", help="one text: write the audio as it is produced (the wav is "
                   "valid after every piece), Text2Mel, SSRN and Griffin-Lim working a chunk at a time "
                   "(docs/streaming.md); prints the time to the first audio")
    p.add_argument("--chunk", type=int, help=f"with --stream: reduced frames Text2Mel hands over at a time "
                   f"(default: {DEFAULT_CHUNK}; 1 gives the first audio soonest)")
    p.add_argument("--batch-size", type=int, default=8, help="texts synthesized together (default: 8; each "
                   "stops at its own end, and comes out as it would alone)")
    p.add_argument("--max-frames", type=int, help="reduced frames at most (default: the spec's max_frames)")
    p.add_argument("--drop-unknown", action="store_true", help="drop characters outside the vocabulary "
                   "instead of refusing the text")
    p.add_argument("--show-text", action="store_true", help="print the normalized text and exit (no models "
                   "needed; the length limit of a model's spec is not checked)")
    return p


def run_train(args) -> int:
    """Exit status 0, or 128 + the signal number when SIGINT (130) or SIGTERM (143) stopped the run
    (a checkpoint of the step reached was saved)."""
    inside = distributed.declared_workers(args.framework)
    if args.workers < 1 or args.worker_timeout <= 0:
        raise ValueError(f"--workers must be >= 1 and --worker-timeout > 0, got {args.workers}, {args.worker_timeout}")
    if inside > 1 and args.workers not in (1, inside):
        raise ValueError(f"--workers {args.workers}, but this process is one of a job of {inside} workers")
    if args.workers > 1 and inside == 1:
        return run_job(args)
    result = train_loop.train(args.framework, args.model, args.data, args.out, spec=requested_spec(args),
                              steps=args.steps, batch_size=args.batch_size, checkpoint_every=args.checkpoint_every,
                              seed=args.seed, device=args.device, resume=args.resume, progress=not args.quiet,
                              threads=args.threads, cache=args.cache)
    if inside > 1 and result.interrupted:  # a job's workers stop together; the launcher reports the signal
        if not result.rank:
            print(f"interrupted at step {result.step}; checkpoint: {result.checkpoint}")
        return 0
    if result.rank:
        return 0  # rank 0 reports
    if result.interrupted:
        print(f"interrupted by {signal.Signals(result.interrupted).name} at step {result.step}; "
              f"checkpoint: {result.checkpoint}")
        return 128 + result.interrupted
    if not result.trained:
        print(f"{args.out} already at step {result.step} >= --steps {args.steps}: nothing to train")
    else:
        print(f"stopped at step {result.step}; checkpoint: {result.checkpoint}")
    return 0


def requested_spec(args):
    """The spec of --preset and --set (None: none given, the checkpoint's or paper)."""
    if not (args.preset or args.set):
        return None
    return get_spec(args.preset or "paper", **parse_overrides(args.set))


def run_job(args) -> int:
    """`--workers N`: check the arguments and cache the corpus's features once, then run N
    workers of this same command under the framework's engine (common.training.distributed.launch)."""
    train_loop.check_arguments(args.data, args.out, args.steps, args.batch_size, args.checkpoint_every, args.seed,
                               args.threads)
    spec = requested_spec(args)
    ckpt, spec, state = train_loop.starting_point(args.out, args.model, spec, args.batch_size, args.seed,
                                                  args.resume)
    if state.step >= args.steps:
        print(f"{args.out} already at step {state.step} >= --steps {args.steps}: nothing to train")
        return 0
    if state.batch_size % args.workers:
        raise ValueError(f"batch size {state.batch_size} does not split evenly over {args.workers} workers")
    if spec.norm == "batch":  # each worker would normalize by its shard's statistics and keep its own running ones
        raise ValueError("norm=batch trains in one process only (no synchronized batch norm): drop --workers")
    data.load_corpus(args.data, spec, args.cache and data.corpus_cache(args.data, args.cache), not args.quiet)
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.workers)
    print(f"{args.workers} {args.framework} workers, {threads} thread{'s' * (threads > 1)} each, "
          f"{state.batch_size // args.workers} of every {state.batch_size} utterances each")
    worker = ["common.training.cli", "train"] + without_workers(args.argv) + ([] if args.threads else ["--threads", str(threads)])
    log = Path(args.out) / f"{args.model}-job.log"  # the engines' output; LaunchError, one line, names it
    return distributed.launch(args.framework, args.workers, worker, args.worker_timeout, log=log)


def without_workers(argv: list) -> list:
    """A dctts-train command line without its --workers and --worker-timeout options."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("--workers", "--worker-timeout"):
            skip = True
        elif not arg.startswith(("--workers=", "--worker-timeout=")):
            out.append(arg)
    return out


def model_file(path: Path, net: str) -> Path:
    """A weight/checkpoint file, or a run directory's newest readable checkpoint of `net`."""
    if path.is_dir():
        newest = checkpoint.latest_readable(path, net)
        if newest is None:
            raise weights.WeightsError(f"{path}: no {net} checkpoint in this directory")
        return newest
    return path


def read_model(path: Path, net: str) -> tuple:
    """(weights, spec) of a model file, checked before any framework is loaded."""
    path = model_file(path, net)
    spec, _, _ = weights.read_header(path)
    return weights.load(path, spec, net)[0], spec


def build_model(backend_cls, model: tuple, net: str, device: str):
    """A Backend holding a model's weights (the spec comes from the file)."""
    w, spec = model
    backend = backend_cls(spec, net, device=device)
    backend.set_weights(w)
    return backend


def read_texts(args) -> list:
    """The positional texts, then the --text-file's non-empty lines; at least one."""
    texts = list(args.text)
    if args.text_file is not None:
        try:
            lines = args.text_file.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as err:
            raise ValueError(f"{args.text_file}: not UTF-8 text ({err.reason} at byte {err.start})") from err
        texts += [line for line in lines if line.strip()]
    if not texts:
        synthesize_parser().error("no text given (a text argument or --text-file with a non-empty line)")
    return texts


def output_paths(output: Path, count: int) -> list:
    """One wav path per text: `output` itself for one text, else <output>/1.wav, 2.wav, ..."""
    if count == 1:
        return [output]
    if output.exists() and not output.is_dir():
        raise NotADirectoryError(f"cannot write {count} wavs into {output}: it is a file (give a folder for "
                                 "several texts)")
    return [output / f"{i}.wav" for i in range(1, count + 1)]


def encode_texts(raw: list, spec, args) -> list:
    """Each text normalized and encoded (printed as spoken); a bad one is named by its number."""
    encoded = []
    for number, raw_text in enumerate(raw, 1):
        label = "text" if len(raw) == 1 else f"text {number}"
        named = "" if len(raw) == 1 else f"{label}: "
        try:
            one = text.encode(raw_text, spec, drop_unknown=args.drop_unknown, check_length=not args.show_text)
        except text.UnknownCharactersError as err:
            raise ValueError(f"{named}{err}; use --drop-unknown to drop them") from err
        except ValueError as err:
            raise ValueError(f"{named}{err}") from err
        if one.dropped:
            n = len(one.dropped)
            print(f"dropped {n} unknown character{'s' * (n != 1)}: "
                  + ", ".join(repr(c) for c in dict.fromkeys(one.dropped)))
        print(f'{label}: "{one.text}"')
        encoded.append(one.ids)
    return encoded


def run_synthesize(args) -> int:
    spec = get_spec("paper")  # --show-text: every preset has its vocabulary (the length limit is not checked)
    raw = read_texts(args)
    if not args.show_text:
        missing = [name for name, value in (("--framework", args.framework), ("--text2mel", args.text2mel),
                                            ("--ssrn", args.ssrn), ("-o/--output", args.output)) if value is None]
        if missing:
            synthesize_parser().error(f"the following arguments are required (all but --show-text): "
                                      f"{', '.join(missing)}")
        models = {net: read_model(getattr(args, net), net) for net in NETS}
        spec, ssrn_spec = models["text2mel"][1], models["ssrn"][1]
        differ = [f"{k} (text2mel {getattr(spec, k)!r}, ssrn {getattr(ssrn_spec, k)!r})"
                  for k in SHARED_AUDIO_FIELDS if getattr(spec, k) != getattr(ssrn_spec, k)]
        if differ:
            raise ValueError("the text2mel and ssrn models disagree on audio fields: " + ", ".join(differ))
        check_stream_options(args, len(raw))
        outputs = [args.output] if to_stdout(args) else output_paths(args.output, len(raw))
        if not to_stdout(args):
            check_writable(outputs[0])  # before the synthesis, not after it
    all_ids = encode_texts(raw, spec, args)
    if args.show_text:
        return 0
    if args.max_frames is not None and args.max_frames < 1:
        raise ValueError(f"--max-frames must be >= 1, got {args.max_frames}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.threads:
        configure_threads(args.framework, args.threads)
    backend_cls = load_backend(args.framework)
    t2m, ssrn = (build_model(backend_cls, models[net], net, args.device) for net in NETS)
    if args.stream:
        return run_stream(args, t2m, ssrn, all_ids[0], args.max_frames or spec.max_frames)
    shared = Contention("synthesis") if args.device == "cpu" else None
    with tqdm(total=len(all_ids), unit="text", desc="synthesizing", disable=len(all_ids) <= args.batch_size) as bar:
        for start in range(0, len(all_ids), args.batch_size):
            chunk = all_ids[start:start + args.batch_size]
            results = t2m.synthesize_batch(chunk, args.max_frames or spec.max_frames)
            for ids, out, (mel, attention) in zip(chunk, outputs[start:], results):
                wav = audio.mag_to_wav(ssrn.upsample(mel), ssrn_spec)
                out.parent.mkdir(parents=True, exist_ok=True)
                audio.save_wav(out, wav, ssrn_spec)
                ended = reached_end(int(attention[:, -1].argmax()), len(ids))
                bar.write(f"wrote {out}: {len(wav) / ssrn_spec.sr:.2f} s, {mel.shape[1]} frames"
                          + ("" if ended else "; attention did not reach the end of the text (raise --max-frames?)"),
                          file=sys.stdout)
                bar.update()
            if shared:
                shared.tick()
    return 0


def to_stdout(args) -> bool:
    return str(args.output) == "-"


def check_stream_options(args, n_texts: int) -> None:
    """--stream speaks one text; --chunk and `-o -` go with it."""
    if args.stream and n_texts > 1:
        raise ValueError(f"--stream speaks one text, got {n_texts}: stream them one command at a time, or drop "
                         "--stream to write one wav per text")
    if not args.stream and args.chunk is not None:
        raise ValueError("--chunk goes with --stream")
    if not args.stream and to_stdout(args):
        raise ValueError("-o - (raw PCM on stdout) goes with --stream")
    if args.stream:
        args.chunk = check_chunk(DEFAULT_CHUNK if args.chunk is None else args.chunk)


def run_stream(args, t2m, ssrn, ids, max_frames: int) -> int:
    """Speak one text into a wav (valid after every piece) or raw PCM on stdout, as it is produced
    (common.streaming); report the time to the first audio and how the stream kept up."""
    sr = ssrn.spec.sr
    pieces = pipeline.speak(t2m, ssrn, ids, args.chunk, max_frames)
    if not to_stdout(args):
        args.output.parent.mkdir(parents=True, exist_ok=True)
    sink = output.PcmStream(args.audio_out) if to_stdout(args) else output.WavStream(args.output, sr)
    done = []
    try:
        for piece in pieces:
            sink.write(piece.samples)
            if not done:
                print(f"first audio after {piece.at:.3f} s (chunks of {args.chunk} reduced frame{'s' * (args.chunk > 1)})",
                      flush=True)
            done.append(piece)
        sink.close()
    except BrokenPipeError:  # the player went away: stop speaking, quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), args.audio_out.fileno())  # no second error at exit
        print("dctts-synthesize: the reader of stdout closed it; stopped", file=sys.stderr)
        return 0
    t = pipeline.timeline(done, sr)
    print(f"wrote {'stdout' if to_stdout(args) else args.output}: {t.audio_s:.2f} s of audio in {t.total_s:.2f} s "
          f"(real-time factor {t.real_time_factor:.2f}); longest wait {t.max_gap_s:.3f} s, "
          + ("never ran dry" if t.stall_s == 0 else f"a player would have waited {t.stall_s:.3f} s in all"))
    return 0


def _guarded(prog: str, run, args) -> int:
    """Run; expected failures (bad input, missing files, unusable framework) become one line,
    and so does each warning (`prog: warning: ...`, not Python's file:line and source; on a line of its
    own while a progress bar runs)."""
    def show(message, *_, **__):
        tqdm.write(f"{prog}: warning: {' '.join(str(message).split())}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        try:
            return run(args)
        except KeyboardInterrupt:
            print(f"{prog}: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        except INPUT_ERRORS as err:
            print(f"{prog}: error: {' '.join(str(err).split())}", file=sys.stderr)
            return EXIT_ERROR


def train_main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = train_parser().parse_args(argv)
    args.argv = argv
    status = _guarded("dctts-train", run_train, args)
    if status == EXIT_ERROR and distributed.declared_workers(args.framework) > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)  # a failed worker leaves at once: the engines' exit-time barriers (MXNet's) wait for peers
    sys.exit(status)


def synthesize_main(argv=None) -> None:
    args = synthesize_parser().parse_args(argv)
    args.audio_out = sys.stdout.buffer if to_stdout(args) else None
    if to_stdout(args):  # stdout carries the audio: every message goes to stderr
        with contextlib.redirect_stdout(sys.stderr):
            sys.exit(_guarded("dctts-synthesize", run_synthesize, args))
    sys.exit(_guarded("dctts-synthesize", run_synthesize, args))


COMMANDS = {"train": train_main, "synthesize": synthesize_main}


def main(argv=None) -> None:
    """`python -m common.training.cli train|synthesize ...`"""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m common.training.cli {{{'|'.join(COMMANDS)}}} ... (--help after the command for its options)",
              file=sys.stderr)
        sys.exit(2)
    COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    main()
