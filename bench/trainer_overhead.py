"""What the one Trainer costs on top of a bare training loop: one KGAT epoch on ml-100k, both ways, one process.

    python bench/trainer_overhead.py [--repeats 5] [--threads 1] [--model KGAT] [--dataset ml-100k]

"bare" is the loop a model file alone implies (each phase's sampler -> ``model.training_step`` -> backward
-> its optimiser -> ``on_epoch_end``); "trainer" is ``Trainer.train_epoch()`` (the same work plus batch
conversion and moving, finiteness check, schedules, progress bookkeeping). Both start from the same seed,
so both compute the same losses (checked). Repeats alternate the two; the table prints the median and
min-max of wall and CPU seconds and the ratio of medians. Writes ``trainer_overhead.json`` to
``results/trainer_overhead/`` (``--out``; ``--publish`` also to ``docs/results/trainer_overhead/``).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import recsys  # noqa: E402,F401
from graphattn.config import Config  # noqa: E402
from graphattn.results import Results, add_output_args  # noqa: E402
from graphattn.training import Trainer, move_to, seed_everything  # noqa: E402
from recsys.task import _to_tensors  # noqa: E402


def fresh(config):
    seed_everything(int(config["seed"]))
    return Trainer.from_config(config)


def bare_epoch(trainer) -> tuple[float, float, float]:
    model, task = trainer.model, trainer.task
    model.train()
    t0, c0, first = time.perf_counter(), time.process_time(), None
    for phase in task.phases:
        sampler, opt = task.samplers[phase], trainer.optimizers[phase]
        for batch in sampler:
            loss, _ = model.training_step(phase, move_to(_to_tensors(batch), trainer.device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            first = loss.item() if first is None else first
    model.on_epoch_end()
    return time.perf_counter() - t0, time.process_time() - c0, first


def trainer_epoch(trainer) -> tuple[float, float, float]:
    first = []
    loss_fn = trainer.task.loss

    def loss(model, batch, phase):
        out = loss_fn(model, batch, phase)
        if not first:
            first.append(out[0].item())
        return out

    trainer.task.loss = loss
    t0, c0 = time.perf_counter(), time.process_time()
    trainer.train_epoch()
    return time.perf_counter() - t0, time.process_time() - c0, first[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="KGAT")
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    add_output_args(parser, "trainer_overhead")
    args = parser.parse_args()
    if args.repeats < 5:
        parser.error(f"--repeats must be >= 5 (published timings are medians of at least 5), got {args.repeats}")
    torch.set_num_threads(args.threads)
    config = Config(args.model, args.dataset, config_dict={"show_progress": False, "device": "cpu", "log_level": "WARNING"})
    rows = {"bare": [], "trainer": []}
    for r in range(args.repeats):
        for kind, run in (("bare", bare_epoch), ("trainer", trainer_epoch)):
            wall, cpu, first = run(fresh(config))
            rows[kind].append({"wall": wall, "cpu": cpu, "first_loss": first})
            print(f"repeat {r} {kind:8s} wall {wall:7.2f}s cpu {cpu:7.2f}s first loss {first:.6f}", flush=True)
    firsts = {row["first_loss"] for kind in rows for row in rows[kind]}
    if len(firsts) != 1:
        raise SystemExit(f"the two loops computed different losses: {sorted(firsts)}")
    summary = {}
    print(f"\n{args.model} on {args.dataset}, one epoch, {args.threads} thread(s), {args.repeats} repeats")
    print("loop      wall median (min-max)      cpu median (min-max)")
    for kind, values in rows.items():
        wall, cpu = [v["wall"] for v in values], [v["cpu"] for v in values]
        summary[kind] = {"wall_median": statistics.median(wall), "wall_min": min(wall), "wall_max": max(wall),
                         "cpu_median": statistics.median(cpu), "cpu_min": min(cpu), "cpu_max": max(cpu)}
        print(f"{kind:8s}  {statistics.median(wall):6.2f} ({min(wall):.2f}-{max(wall):.2f})"
              f"         {statistics.median(cpu):6.2f} ({min(cpu):.2f}-{max(cpu):.2f})")
    ratio = summary["trainer"]["cpu_median"] / summary["bare"]["cpu_median"]
    print(f"trainer / bare, median cpu seconds: {ratio:.3f}")
    Results.from_args("trainer_overhead", args).write_json("trainer_overhead.json", {
        "model": args.model, "dataset": args.dataset, "threads": args.threads, "repeats": rows, "summary": summary,
        "ratio_cpu_median": ratio}, seeds=[int(config["seed"])])


if __name__ == "__main__":
    main()
