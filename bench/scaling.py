"""Data-parallel scaling (`python bench/run.py --task scaling --workers 1 2`): each framework trains
on the same global batches with N workers of its own engine (common.training.distributed.launch), the
machine's threads shared among them (N workers x threads/N each), plus one worker on one thread
as the per-worker baseline. Per configuration: the median step time, throughput (utterances/s),
speed-up and efficiency, and apart from the steps, the time of one all-reduce (the mean over the
workers) of as many fp32 values as the network has parameters, through the same engine: what
each step exchanges at least. Rounds alternate the framework order; medians over every counted
step of every round.

Outputs in --out: scaling.json (every step of every run), scaling.md (the table and the cost
model of `cost_model`). A run is `python -m bench.scaling --worker ...` in each process.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench import machine

# The 8-GPU cost model's assumptions: the GPU's fp32 throughput reached by a training step
# (TF32 off, as our GPU benchmark runs), and the bandwidth an all-reduce gets on each link
# (NCCL's "bus bandwidth" for ~100 MB messages; ps-lite over TCP for MXNet's dist_sync).
GPU_FP32_ACHIEVED = 0.5 * 67e12  # H200 SXM: 67 TFLOP/s fp32 peak, half of it reached [assumed]
LINKS = {"NVLink 4 (one 8-GPU H200 node)": 350e9, "PCIe 5 x16 (one node, no NVLink)": 40e9,
         "100 Gb/s Ethernet/IB (8 nodes x 1 GPU)": 11e9, "ps-lite over TCP, 25 Gb/s (MXNet dist_sync)": 2.5e9}


def parse_worker_args(argv):
    p = machine.worker_parser("python -m bench.scaling --worker")  # its --threads: per worker
    p.add_argument("--net", required=True)
    p.add_argument("--batch-size", type=int, required=True, help="the global batch")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batches", type=int, default=2)
    return p.parse_args(argv)


def worker_main(argv) -> None:
    """One process of a scaling run; rank 0 writes the record."""
    args = parse_worker_args(argv)
    machine.apply_threads(args.threads)
    import numpy as np  # only now: thread counts are fixed before any import that reads them

    from bench.inputs import timing_batches
    from bench.measure import clocked
    from common.training import distributed
    from common.framework import configure_threads, load_backend
    from common.contract.spec import get_spec
    from common.training.train_loop import step_seed

    configure_threads(args.framework, args.threads)
    spec = get_spec(args.preset)
    batches = timing_batches(spec, args.batch_size, args.batches, args.seed)
    backend = load_backend(args.framework)(spec, args.net, device=args.device, seed=args.seed)
    declared = distributed.declared_workers(args.framework)
    rank, workers = backend.join_workers() if declared > 1 else (0, 1)
    steps = []
    with distributed.Heartbeat(rank) as heartbeat:
        for i in range(args.warmup + args.steps):
            backend.seed(step_seed(args.seed, i + 1, rank))
            _, seconds = clocked(backend, backend.train_step, distributed.shard(batches[i % len(batches)], rank,
                                                                                workers))
            steps.append(seconds)
            heartbeat.beat(i + 1)
    params = sum(w.size for w in backend.get_weights().values())
    exchange = []
    if workers > 1:
        values = np.ones(params, np.float32)
        for _ in range(args.warmup + args.steps):
            start = time.perf_counter()
            backend.mean_over_workers(values)
            exchange.append(time.perf_counter() - start)
    if rank == 0:
        record = {"framework": args.framework, "net": args.net, "preset": args.preset, "batch_size": args.batch_size,
                  "workers": workers, "threads": args.threads, "params": int(params),
                  "step_s": steps[args.warmup:], "first_step_s": steps[0], "allreduce_s": exchange[args.warmup:]}
        Path(args.result).write_text(json.dumps(record))


def configurations(workers: list, threads: int) -> list:
    """(workers, threads each): N workers sharing the machine's threads, and one worker on one
    thread (the per-worker baseline of the efficiency)."""
    configs = [(n, max(1, threads // n)) for n in workers]
    return list(dict.fromkeys(([(1, 1)] if threads > 1 else []) + configs))


def run_one(args, framework: str, net: str, batch: int, workers: int, threads: int) -> dict:
    """One configuration in fresh processes; a failure becomes a record with its reason."""
    from common.training import distributed

    result = args.out / f".scaling-{framework}-{net}-{workers}x{threads}.json"
    result.unlink(missing_ok=True)
    worker = ["bench.scaling", "--worker", "--framework", framework, "--net", net, "--preset", args.preset,
              "--batch-size", str(batch), "--steps", str(args.steps), "--warmup", str(args.warmup),
              "--threads", str(threads), "--device", args.device, "--seed", str(args.seed),
              "--batches", str(args.batches), "--result", str(result)]
    env = machine.subprocess_env(threads, args.device)
    base = {"framework": framework, "net": net, "batch_size": batch, "workers": workers, "threads": threads}
    try:
        if workers == 1:
            subprocess.run([sys.executable, "-m", *worker], cwd=machine.REPO, env=env, check=True,
                           capture_output=True, text=True, timeout=args.timeout)
        else:
            distributed.launch(framework, workers, worker, timeout=args.timeout, env=env)
    except (subprocess.SubprocessError, distributed.LaunchError) as err:
        reason = getattr(err, "stderr", None) or str(err)
        return {**base, "status": "error", "reason": reason[-2000:]}
    if not result.is_file():
        return {**base, "status": "error", "reason": "no result written"}
    record = json.loads(result.read_text())
    result.unlink()
    return {**record, "status": "ok"}


def run(args) -> list:
    """Every configuration of every framework, network and batch size, `args.repeat` rounds."""
    from tqdm import tqdm

    nets = [n for n in ("text2mel", "ssrn") if f"train-{n}" in args.task] or ["text2mel", "ssrn"]
    plan = [(rnd, fw, net, batch, w, t) for rnd in range(args.repeat)
            for fw in (args.framework if rnd % 2 == 0 else args.framework[::-1])
            for net in nets for batch in args.batch_size for w, t in configurations(args.workers, args.threads)]
    records = []
    args.out.mkdir(parents=True, exist_ok=True)
    for rnd, fw, net, batch, w, t in tqdm(plan, desc="scaling", unit="run"):
        records.append({**run_one(args, fw, net, batch, w, t), "round": rnd})
        write(args, records)
    return records


def rows(records: list) -> list:
    """One row per (framework, net, batch, workers, threads): medians over every counted step."""
    groups = {}
    for r in records:
        if r["status"] == "ok":
            key = (r["framework"], r["net"], r["batch_size"], r["workers"], r["threads"])
            groups.setdefault(key, {"step_s": [], "allreduce_s": [], "params": r["params"]})
            groups[key]["step_s"] += r["step_s"]
            groups[key]["allreduce_s"] += r["allreduce_s"]
    out = []
    for (fw, net, batch, workers, threads), g in groups.items():
        step = statistics.median(g["step_s"])
        out.append({"framework": fw, "net": net, "batch_size": batch, "workers": workers, "threads": threads,
                    "step_s": step, "throughput": batch / step, "params": g["params"],
                    "allreduce_s": statistics.median(g["allreduce_s"]) if g["allreduce_s"] else 0.0})
    for row in out:  # speed-ups against the same framework, net and batch
        peers = {(r["workers"], r["threads"]): r for r in out
                 if (r["framework"], r["net"], r["batch_size"]) == (row["framework"], row["net"], row["batch_size"])}
        single = peers.get((1, 1))
        same_cores = peers.get((1, row["workers"] * row["threads"]))
        row["efficiency"] = row["throughput"] / (row["workers"] * single["throughput"]) if single else None
        row["vs_one_worker_same_threads"] = row["throughput"] / same_cores["throughput"] if same_cores else None
        row["allreduce_share"] = row["allreduce_s"] / row["step_s"]
    return out


def cost_model(spec_name: str = "paper", per_gpu_batch: int = 32, gpus: int = 8, chars: int = 100,
               seconds: float = 6.57) -> str:
    """Where data-parallel scaling breaks on `gpus` GPUs: a step's compute (the spec's FLOPs at
    LJSpeech's mean utterance, GPU_FP32_ACHIEVED) against a ring all-reduce of every gradient,
    2 (N-1)/N x 4 bytes x parameters per GPU, at each link's bandwidth (LINKS). Without overlap
    the efficiency is compute / (compute + all-reduce); torch's DDP overlaps the all-reduce with
    the backward pass (bucketed), ChainerMN's mean runs after it, MXNet pushes each gradient as
    the asynchronous engine produces it."""
    from common.contract.accounting import count_params, flops
    from common.contract.spec import get_spec

    spec = get_spec(spec_name)
    frames = min(spec.max_frames, round(seconds * spec.sr / spec.hop / spec.r))
    lines = [f"| network | parameters | all-reduced per GPU per step | compute per step (batch {per_gpu_batch}/GPU) | "
             + " | ".join(LINKS) + " |", "|---|---:|---:|---:|" + "---:|" * len(LINKS)]
    for net in ("text2mel", "ssrn"):
        params = count_params(spec, net)
        moved = 2 * (gpus - 1) / gpus * 4 * params
        compute = flops(spec, net, per_gpu_batch, min(chars, spec.max_chars), frames)["train_step"] / GPU_FP32_ACHIEVED
        cells = []
        for bandwidth in LINKS.values():
            comm = moved / bandwidth
            cells.append(f"{comm * 1e3:.1f} ms: {100 * compute / (compute + comm):.0f}%")
        lines.append(f"| {net} | {params / 1e6:.1f} M | {moved / 1e6:.0f} MB | {compute * 1e3:.0f} ms | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(args, records: list) -> str:
    table, info = rows(records), args.machine
    lines = [f"# Data-parallel scaling ({args.preset}, {args.device})", "",
             f"machine: {machine.described(info)}; global batch "
             f"{', '.join(map(str, args.batch_size))} split evenly over the workers; {args.warmup} warm-up + "
             f"{args.steps} counted steps a run, {args.repeat} round(s), framework order alternating; medians.",
             "efficiency = throughput / (workers x the throughput of 1 worker on 1 thread); vs 1x{t} = throughput "
             "against one worker using all the threads (the same cores); all-reduce = one mean over the workers of "
             "as many fp32 values as parameters, timed alone through the same engine (what a step exchanges).", "",
             "| framework | network | batch | workers x threads | step ms | utterances/s | efficiency | vs 1 worker, "
             "same threads | all-reduce ms (MB) | all-reduce / step |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(table, key=lambda r: (r["net"], r["framework"], r["batch_size"], r["workers"], r["threads"])):
        fmt = (lambda v, f="{:.2f}": "" if v is None else f.format(v))
        lines.append(f"| {r['framework']} | {r['net']} | {r['batch_size']} | {r['workers']} x {r['threads']} | "
                     f"{r['step_s'] * 1e3:.0f} | {r['throughput']:.2f} | {fmt(r['efficiency'])} | "
                     f"{fmt(r['vs_one_worker_same_threads'])} | "
                     + (f"{r['allreduce_s'] * 1e3:.0f} ({4 * r['params'] / 1e6:.1f}) | {100 * r['allreduce_share']:.0f}% |"
                        if r["workers"] > 1 else "- | - |"))
    failed = [r for r in records if r["status"] != "ok"]
    lines += [f"- FAILED {r['framework']} {r['net']} {r['workers']}x{r['threads']}: {r['reason'][-300:]}" for r in failed]
    lines += ["", "## Cost model: 8 GPUs (paper preset, batch 32 per GPU)", "", cost_model(), "",
              f"Compute from common.contract.accounting.flops at {GPU_FP32_ACHIEVED / 1e12:.1f} TFLOP/s fp32 achieved (assumed: half "
              "an H200's 67); the cells give the all-reduce time and the efficiency if it does not overlap the "
              "compute. bench/scaling.py: LINKS, GPU_FP32_ACHIEVED."]
    return "\n".join(lines) + "\n"


def write(args, records: list) -> None:
    options = {k: str(v) for k, v in vars(args).items() if k != "machine"}
    (args.out / "scaling.json").write_text(json.dumps({"options": options, "machine": args.machine, "records": records},
                                                      indent=1))
    (args.out / "scaling.md").write_text(markdown(args, records))


if __name__ == "__main__":
    if "--worker" in sys.argv[1:]:
        worker_main(sys.argv[1:])
    else:
        sys.exit("run it through bench/run.py --task scaling (this module's --worker mode is one process of a run)")
