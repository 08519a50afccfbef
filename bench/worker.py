"""`python -m bench.worker ...`: one benchmark run in a fresh process, its record written as JSON.

Thread counts are fixed (environment, then impl_<fw>.runtime.configure_threads) before numpy
or any framework is imported. Any exception becomes a record with status "error", so the
orchestrator always gets an answer."""
from __future__ import annotations

import argparse
import json
import sys
import traceback

from bench.machine import apply_threads


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.worker", description=__doc__)
    p.add_argument("--framework", required=True)
    p.add_argument("--task", required=True)
    p.add_argument("--preset", required=True)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=None, help="preprocessed corpus directory (default: synthetic batches)")
    p.add_argument("--max-frames", type=int, default=64, help="synthesis length limit in reduced frames")
    p.add_argument("--batches", type=int, default=2, help="distinct prebuilt batches, cycled")
    p.add_argument("--text2mel", default=None, help="trained Text2Mel for synthesis (with --ssrn)")
    p.add_argument("--ssrn", default=None, help="trained SSRN for synthesis (with --text2mel)")
    p.add_argument("--ops", default="tuned", help="the tier of operators (common.framework.OPS)")
    p.add_argument("--variant", default="baseline", help="a bench.variants name: the preset's changes")
    p.add_argument("--gate-dir", default=None, help="where the cross-framework gate's arrays go")
    p.add_argument("--result", required=True, help="where to write the JSON record")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    apply_threads(args.threads)
    from bench import measure  # numpy and the framework load only now
    from bench.variants import variant_name, variant_spec

    trained = {"text2mel": args.text2mel, "ssrn": args.ssrn} if args.text2mel else None
    try:
        spec = variant_spec(args.preset, args.variant)
        record = measure.run(args.framework, args.task, spec, args.batch_size, args.steps, args.warmup, args.device,
                             args.seed, args.threads, args.data, args.max_frames, args.batches, weights=trained,
                             gate_dir=args.gate_dir, ops=args.ops)
    except Exception as err:  # reported, never lost: the run is marked "error" with its traceback
        record = {"framework": args.framework, "ops": args.ops, "task": args.task, "preset": variant_name(args.preset, args.variant),
                  "batch_size": args.batch_size, "status": "error", "reason": f"{type(err).__name__}: {err}",
                  "traceback": traceback.format_exc()}
    with open(args.result, "w") as f:
        json.dump(record, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
