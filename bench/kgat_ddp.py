"""Data-parallel training: time per epoch with 1, 2 (and 4 where the cores exist) processes on the same data.

    python bench/kgat_ddp.py [--model KGAT] [--dataset ml-100k] [--procs 1 2] [--batches 8] [--epochs 3]
                             [--rounds 2] [--threads 1]

One process is a plain ``Trainer`` (today's path, no process group); N > 1 processes are
``torchrun --standalone --nproc_per_node=N`` workers training with DistributedDataParallel (gloo), each on
1/N of every batch. Every configuration trains the same model from the same seed on the same data;
``--batches`` limits each phase to that many (global) batches per epoch so the run stays small. Rounds
alternate the configurations (a burst of load on a shared machine hits all alike); the first epoch of each
launch is a warm-up and is not counted. The table prints the median (min-max) wall seconds per epoch of the
training phases with the end-of-epoch hook (KGAT's attention refresh) and of the validation evaluation, the
speed-up over one process and the scaling efficiency (speed-up / N); then the same from CPU seconds per epoch
of the busiest rank, an estimate of the speed-up where every process has a core of its own (on a machine with
fewer free cores than processes the wall times measure the contention, not the method); then each phase's
wall seconds. Writes ``kgat_ddp.json`` to ``results/kgat_ddp/`` (``--out``; ``--publish`` also to
``docs/results/kgat_ddp/``).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402


def worker(args: argparse.Namespace) -> None:
    """One process (one rank): train ``--epochs`` epochs, time each; rank 0 writes the times to ``--worker_out``."""
    import torch.distributed as dist

    import recsys  # noqa: F401
    from graphattn.config import Config
    from graphattn.training import Trainer, distributed

    torch.set_num_threads(args.threads)
    distributed.init_from_env("cpu")
    config = Config(args.model, args.dataset, config_dict={
        "show_progress": False, "device": "cpu", "log_level": "WARNING", "seed": args.seed,
        "eval_batch_size": args.eval_batch_size})
    trainer = Trainer.from_config(config)
    for sampler in trainer.task.samplers.values():
        for part in (sampler.cf, sampler.kg) if hasattr(sampler, "cf") else (sampler,):   # CKE's joint sampler
            part.n_batches = args.batches
    sync = dist.barrier if distributed.is_distributed() else (lambda: None)
    rows = []
    for _ in range(args.epochs):
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        logs = trainer.train_epoch()
        cpu = time.process_time() - c0
        sync()
        t1 = time.perf_counter()
        trainer.evaluate("valid")
        sync()
        rows.append({"train": t1 - t0, "evaluate": time.perf_counter() - t1,
                     "train_cpu_per_rank": distributed.all_gather_object(cpu),
                     **{k: v for k, v in logs.items() if k.endswith("seconds") or k.endswith("loss")}})
    if distributed.is_main():
        Path(args.worker_out).write_text(json.dumps({"rows": rows, "world_size": distributed.world_size(),
                                                     "batch_sizes": {p: s.batch_size for p, s in trainer.task.samplers.items()
                                                                     if hasattr(s, "batch_size")}}))
    distributed.shutdown()


def launch(args: argparse.Namespace, procs: int, out: Path) -> dict:
    flags = ["--worker", "--worker_out", str(out), "--model", args.model, "--dataset", args.dataset,
             "--batches", str(args.batches), "--epochs", str(args.epochs), "--threads", str(args.threads),
             "--seed", str(args.seed), "--eval_batch_size", str(args.eval_batch_size)]
    script = str(Path(__file__).resolve())
    cmd = [sys.executable, script, *flags] if procs == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}", script, *flags]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONWARNINGS": "ignore"}
    log = out.with_suffix(".log")
    with open(log, "w") as fh:
        try:
            code = subprocess.run(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                  timeout=args.launch_timeout).returncode
        except subprocess.TimeoutExpired:
            code = f"timeout after {args.launch_timeout} s"
    if code != 0:
        raise SystemExit(f"{procs} process(es) failed ({code}):\n{log.read_text()[-3000:]}")
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    parser.add_argument("--model", default="KGAT")
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2] + ([4] if cores >= 4 else []),
                        help="process counts to time (default 1 2, and 4 where 4 cores exist)")
    parser.add_argument("--batches", type=int, default=8, help="global batches per phase per epoch (0: all)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per launch; the first is a warm-up")
    parser.add_argument("--rounds", type=int, default=2, help="launches of every configuration, interleaved")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--seed", type=int, default=2019)
    parser.add_argument("--eval_batch_size", type=int, default=256, help="users per evaluation chunk (dealt to the ranks)")
    parser.add_argument("--launch_timeout", type=int, default=1200, help="seconds one launch may take")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker_out", default=None, help=argparse.SUPPRESS)
    from graphattn.results import Results, add_output_args
    add_output_args(parser, "kgat_ddp")
    args = parser.parse_args()
    if args.worker:
        args.batches = args.batches or None
        return worker(args)
    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (the first epoch of each launch is a warm-up)")
    if 1 not in args.procs:
        parser.error("--procs must include 1, the baseline of the speed-up")
    if max(args.procs) > cores:
        print(f"note: {max(args.procs)} processes on {cores} core(s): the processes share cores", flush=True)

    runs: dict[int, list[dict]] = {n: [] for n in args.procs}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for n in args.procs:
                result = launch(args, n, Path(tmp) / f"{n}-{r}.json")
                runs[n].append(result)
                last = result["rows"][-1]
                print(f"round {r} {n} process(es): epoch {last['train']:.2f}s evaluate {last['evaluate']:.2f}s "
                      f"(batch sizes {result['batch_sizes']})", flush=True)

    summary = {}
    for n, launches in runs.items():
        rows = [row for result in launches for row in result["rows"][1:]]   # without each launch's warm-up epoch
        for row in rows:
            row["train_cpu_busiest_rank"] = max(row["train_cpu_per_rank"])
            row["train_cpu_all_ranks"] = sum(row["train_cpu_per_rank"])
        summary[n] = {key: {"median": statistics.median(row[key] for row in rows),
                            "min": min(row[key] for row in rows), "max": max(row[key] for row in rows)}
                      for key in ("train", "evaluate", "train_cpu_busiest_rank", "train_cpu_all_ranks",
                                  *sorted(k for k in rows[0] if k.endswith("seconds")))}
        summary[n]["epochs_timed"] = len(rows)
    base, base_cpu = summary[1]["train"]["median"], summary[1]["train_cpu_busiest_rank"]["median"]
    print(f"\n{args.model} on {args.dataset}: {args.batches or 'all'} batches per phase per epoch, {args.threads} "
          f"thread(s) per process, {cores} core(s) on this machine (load average {os.getloadavg()[0]:.2f})")
    print("         ---------- wall time (measured) ----------   ------------- CPU time -------------")
    print("procs  train s/epoch (min-max)  eval s  speed-up  eff.   busiest rank s  all ranks s  speed-up  eff.")
    for n in args.procs:
        t, s = summary[n]["train"], summary[n]
        s["speedup"], s["cpu_speedup"] = base / t["median"], base_cpu / s["train_cpu_busiest_rank"]["median"]
        s["efficiency"], s["cpu_efficiency"] = s["speedup"] / n, s["cpu_speedup"] / n
        print(f"{n:5d}  {t['median']:6.2f} ({t['min']:.2f}-{t['max']:.2f})    {s['evaluate']['median']:6.2f}"
              f"  {s['speedup']:8.2f}  {s['efficiency']:4.2f}   {s['train_cpu_busiest_rank']['median']:14.2f}"
              f"  {s['train_cpu_all_ranks']['median']:11.2f}  {s['cpu_speedup']:8.2f}  {s['cpu_efficiency']:4.2f}")
    print("CPU-time speed-up = CPU s/epoch of one process / CPU s/epoch of the busiest rank: an estimate of the wall-time"
          " speed-up where every process has a core of its own")
    phases = sorted(k for k in summary[1] if k.endswith("seconds"))
    print("\nwall s/epoch by phase (median)\nprocs  " + "  ".join(f"{k:>18s}" for k in phases))
    for n in args.procs:
        print(f"{n:5d}  " + "  ".join(f"{summary[n][k]['median']:18.2f}" for k in phases))
    Results.from_args("kgat_ddp", args).write_json("kgat_ddp.json", {
        "model": args.model, "dataset": args.dataset, "procs": args.procs, "batches_per_phase": args.batches,
        "epochs_per_launch": args.epochs, "rounds": args.rounds, "threads_per_process": args.threads,
        "summary": {str(n): s for n, s in summary.items()},
        "launches": {str(n): v for n, v in runs.items()}}, seeds=[args.seed])


if __name__ == "__main__":
    main()
