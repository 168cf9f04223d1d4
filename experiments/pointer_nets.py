"""Pointer Networks checks (docs/results/sequence.md): TSP-5 mean tour length against the optimum, and the
convex-hull model's generalisation to more points than it was trained on.

Both models train through the Trainer (``PointerNet`` on the registered ``tsp`` and ``convex-hull``
datasets, seed ``--seed``, the best validation epoch kept), at CPU-sized budgets (the paper: 1M pairs,
hidden 256-512; here 100k / 50k pairs, hidden 128, a few epochs, 1 torch thread).

- ``tsp``: train on TSP-5 (exact Held-Karp labels), test on ``--test_size`` new instances with greedy and
  beam-search decoding under the tour mask, beside the optimum and the nearest-neighbour heuristic; check:
  beam mean tour length within 1 % of the optimum's.
- ``hull``: train on hulls with n in [5, 10], test at n = 5, 10, 20, 50 (polygon mask, greedy and beam).

Prints the tables with the paper's and the replication's figures beside ours and writes
``results/pointer_nets/pointer_nets.json``.

    .venv/bin/python experiments/pointer_nets.py [--part all|tsp|hull] [--seed 2019] [--publish]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graphattn.config import Config  # noqa: E402
from graphattn.results import Results, add_output_args  # noqa: E402
from graphattn.training import Trainer  # noqa: E402
from sequence.data.convex_hull import load_convex_hull  # noqa: E402
from sequence.data.tsp import tour_length  # noqa: E402
from sequence.task import SequenceTask  # noqa: E402

# Table 2 of the paper and the replication's README (gchaperon/pointer-networks), mean tour length
TSP5 = {"optimal (paper)": 2.12, "Ptr-Net (paper)": 2.12, "Ptr-Net (replication)": 2.12}
# Table 1, Ptr-Net trained on n = 5-50 (accuracy, area); the replication reports accuracy only
HULL_PAPER = {5: (0.920, 0.996), 10: (0.870, 0.998), 50: (0.696, 0.999)}
HULL_REPLICATION = {5: 0.938, 10: 0.879, 50: 0.631}


def train(dataset: str, seed: int, settings: dict) -> Trainer:
    config = Config("PointerNet", dataset, config_dict={
        "seed": seed, "device": "cpu", "num_threads": 1, "show_progress": sys.stderr.isatty(),
        "log_level": "WARNING", **settings})
    trainer = Trainer.from_config(config)
    start = time.time()
    trainer.fit()
    print(f"trained PointerNet on {dataset} in {time.time() - start:.0f} s, best epoch {trainer.best_epoch} "
          f"of {trainer.epoch}")
    return trainer


def nearest_neighbour_length(points) -> float:
    """Mean length of the greedy nearest-neighbour tours from city 1 (an O(n^2) heuristic baseline)."""
    lengths = []
    for p in points:
        tour, left = [0], set(range(1, len(p)))
        while left:
            tour.append(min(left, key=lambda j: float(np.linalg.norm(p[j] - p[tour[-1]]))))
            left.remove(tour[-1])
        lengths.append(tour_length(p, tour))
    return float(np.mean(lengths))


def evaluate(task: SequenceTask, model, beam: int) -> dict[str, float]:
    task.beam_size = beam
    return task.evaluate(model, "test")


def tsp_part(args) -> dict:
    trainer = train("tsp", args.seed, {
        "tsp_n": 5, "hidden_size": args.hidden, "epochs": args.tsp_epochs, "train_size": args.tsp_train_size,
        "test_size": args.test_size, "valid_size": 1000})
    rows = {f"beam {k}" if k > 1 else "greedy": evaluate(trainer.task, trainer.model, k) for k in (1, args.beam)}
    optimal = rows["greedy"]["target_length"]
    nearest = nearest_neighbour_length(trainer.task.data.test.point_list())
    beam = rows[f"beam {args.beam}"]
    passed = beam["tour_length"] <= 1.01 * optimal and beam["infeasible"] == 0
    print(f"\nTSP, n = 5, {args.test_size} test instances (tour mask; infeasible outputs counted apart)")
    print(f"{'':<24} {'mean tour length':>17} {'gap':>8} {'exact':>7} {'infeasible':>11}")
    print(f"{'optimal (Held-Karp)':<24} {optimal:>17.4f}")
    print(f"{'nearest neighbour':<24} {nearest:>17.4f} {100 * (nearest / optimal - 1):>7.2f}%")
    for name, r in rows.items():
        print(f"{'ours, ' + name:<24} {r['tour_length']:>17.4f} {100 * r['gap']:>7.2f}% "
              f"{100 * r['accuracy']:>6.1f}% {100 * r['infeasible']:>10.1f}%")
    for name, v in TSP5.items():
        print(f"{name:<24} {v:>17.2f}")
    print(f"check: beam mean tour length within 1 % of optimal: {'PASS' if passed else 'FAIL'} "
          f"({beam['tour_length']:.4f} vs {1.01 * optimal:.4f})")
    return {"settings": {"tsp_n": 5, "hidden_size": args.hidden, "epochs": args.tsp_epochs,
                         "train_size": args.tsp_train_size, "test_size": args.test_size,
                         "best_epoch": trainer.best_epoch, "epochs_run": trainer.epoch},
            "optimal": optimal, "nearest_neighbour": nearest, "rows": rows, "paper": TSP5, "check_within_1pct": passed}


def hull_part(args) -> dict:
    trainer = train("convex-hull", args.seed, {
        "n_min": 5, "n_max": 10, "test_n": 10, "hidden_size": args.hidden, "epochs": args.hull_epochs,
        "train_size": args.hull_train_size, "test_size": args.test_size, "valid_size": 1000})
    rows = []
    for n in args.hull_test_n:
        config = Config("PointerNet", "convex-hull", config_dict={"test_n": n, "test_size": args.test_size,
                                                                 "train_size": 1, "valid_size": 1})
        task = SequenceTask(config, load_convex_hull(config))
        for beam in (1, args.beam):
            r = evaluate(task, trainer.model, beam)
            rows.append({"n": n, "decoding": "greedy" if beam == 1 else f"beam {beam}", **r})
    print(f"\nConvex hull, trained on n in [5, 10] ({args.hull_train_size} instances), {args.test_size} test "
          "instances per n (polygon mask)")
    print(f"{'n':>3} {'decoding':<9} {'accuracy':>9} {'area':>8} {'failed':>7}   {'paper (5-50)':>14} "
          f"{'replication':>11}")
    for r in rows:
        paper = HULL_PAPER.get(r["n"])
        ref = f"{100 * paper[0]:.1f}% / {100 * paper[1]:.1f}%" if paper else "-"
        rep = f"{100 * HULL_REPLICATION[r['n']]:.1f}%" if r["n"] in HULL_REPLICATION else "-"
        print(f"{r['n']:>3} {r['decoding']:<9} {100 * r['accuracy']:>8.2f}% {100 * r['area_coverage']:>7.2f}% "
              f"{100 * r['fail_rate']:>6.2f}%   {ref:>14} {rep:>11}")
    return {"settings": {"n_train": [5, 10], "hidden_size": args.hidden, "epochs": args.hull_epochs,
                         "train_size": args.hull_train_size, "test_size": args.test_size,
                         "best_epoch": trainer.best_epoch, "epochs_run": trainer.epoch},
            "rows": rows, "paper_trained_5_50": HULL_PAPER, "replication_trained_5_50": HULL_REPLICATION}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=["all", "tsp", "hull"], default="all")
    ap.add_argument("--seed", type=int, default=2019)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--test_size", type=int, default=1000)
    ap.add_argument("--tsp_train_size", type=int, default=100_000)
    ap.add_argument("--tsp_epochs", type=int, default=6)
    ap.add_argument("--hull_train_size", type=int, default=50_000)
    ap.add_argument("--hull_epochs", type=int, default=4)
    ap.add_argument("--hull_test_n", type=int, nargs="+", default=[5, 10, 20, 50])
    add_output_args(ap, "pointer_nets")
    args = ap.parse_args()
    torch.set_num_threads(1)

    payload = {}
    if args.part in ("all", "tsp"):
        payload["tsp5"] = tsp_part(args)
    if args.part in ("all", "hull"):
        payload["hull_generalisation"] = hull_part(args)
    out = Results.from_args("pointer_nets", args)
    out.write_json(f"pointer_nets{'' if args.part == 'all' else '_' + args.part}.json", payload, seeds=[args.seed])


if __name__ == "__main__":
    main()
