"""BPRMF against RecBole 1.2.1's BPR on ml-100k: which difference in protocol or training costs how much recall@20.

    python bench/bprmf_recbole.py                 # every variant once (seed 0), then the spread over seeds 1, 2

RecBole's BPR under its default protocol reaches test recall@20 0.3719 in 26.6 s on this machine's 2 cores (60
epochs; issue #18, measured with RecBole itself, which is not imported here: it breaks on numpy 2). Each row below
is one run of our BPRMF through the Trainer (`run.py`'s path) with one change, the seed fixed:

- ``shipped``: `run.py --model BPRMF --dataset ml-100k` as shipped (recsys/dataset/ml-100k.yaml's budget: Adam lr
  5e-3, batches of 1,024, at most 20 epochs, validation every 2, stop after 3 evaluations without improvement of
  recall@20).
- ``shipped + <one RecBole setting>``: what each part of RecBole's schedule changes on its own.
- ``recbole preset``: `--config_files recsys/presets/recbole.yaml` (RecBole's protocol and schedule, our sampler,
  L2 term and initialisation).
- ``recbole preset + <one RecBole training detail>``: RecBole's interaction sampler (``cf_sampling:
  interaction``), no L2 term (``reg_weight: 0``), Xavier-normal initialisation, and all three ("RecBole's BPR").

Times: the whole run (training, validation every epoch, the test), wall and this process's CPU time at 1 thread
(on a shared machine the CPU time is what the wall time would be on a core of its own), with the load average.
Writes ``bprmf_recbole.json`` to ``results/bprmf_recbole/`` (``--publish``: also ``docs/results/bprmf_recbole/``).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tqdm import tqdm  # noqa: E402

from graphattn.results import Results, add_output_args  # noqa: E402

RECBOLE = {"recall@20": 0.3719, "seconds": 26.6, "epochs": 60}
PRESET = str(ROOT / "recsys" / "presets" / "recbole.yaml")
RECBOLE_SCHEDULE = {"learning_rate": 0.001, "train_batch_size": 2048, "epochs": 300, "eval_step": 1,
                    "stopping_step": 10, "valid_metric": "mrr@10"}
EXACT = {"cf_sampling": "interaction", "reg_weight": 0.0, "init": "xavier_normal"}
VARIANTS = [
    ("shipped", [], {}),
    ("shipped + valid_metric mrr@10", [], {"valid_metric": "mrr@10"}),
    ("shipped + lr 1e-3", [], {"learning_rate": 0.001}),
    ("shipped + batch 2048", [], {"train_batch_size": 2048}),
    ("shipped + 300 epochs, validate every epoch, patience 10", [], {"epochs": 300, "eval_step": 1, "stopping_step": 10}),
    ("shipped + the whole RecBole schedule", [], RECBOLE_SCHEDULE),
    ("recbole preset", [PRESET], {}),
    ("recbole preset + cf_sampling interaction", [PRESET], {"cf_sampling": "interaction"}),
    ("recbole preset + reg_weight 0", [PRESET], {"reg_weight": 0.0}),
    ("recbole preset + init xavier_normal", [PRESET], {"init": "xavier_normal"}),
    ("recbole preset + all three (RecBole's BPR)", [PRESET], EXACT),
]
SPREAD = [("recbole preset", [PRESET], {}), ("recbole preset + all three (RecBole's BPR)", [PRESET], EXACT)]


def run(files: list[str], overrides: dict, seed: int) -> dict:
    import torch

    import recsys  # noqa: F401
    from graphattn.config import Config
    from graphattn.training import Trainer
    torch.set_num_threads(1)
    config = Config("BPRMF", "ml-100k", config_files=files,
                    config_dict={"show_progress": False, "num_threads": 1, "seed": seed, **overrides})
    t0, c0 = time.perf_counter(), time.process_time()
    trainer = Trainer.from_config(config)
    test = trainer.fit()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"recall@20": float(test["recall@20"]), "ndcg@20": float(test["ndcg@20"]), "mrr@10": float(test["mrr@10"]),
            "best_epoch": trainer.best_epoch, "epochs_run": trainer.epoch, "wall_seconds": wall, "cpu_seconds": cpu,
            "load_average_1m": os.getloadavg()[0], "seed": seed, "config_files": [Path(f).name for f in files],
            "overrides": overrides}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--spread_seeds", type=int, nargs="*", default=[1, 2],
                        help="extra seeds for the recbole preset and RecBole's BPR (the seed also draws the split)")
    add_output_args(parser, "bprmf_recbole")
    args = parser.parse_args()
    jobs = [(name, files, over, args.seed) for name, files, over in VARIANTS]
    jobs += [(name, files, over, s) for s in args.spread_seeds for name, files, over in SPREAD]
    rows = []
    for name, files, over, seed in tqdm(jobs, desc="runs"):
        rows.append({"variant": name, **run(files, over, seed)})
    base = next(r for r in rows if r["variant"] == "shipped")
    preset = next(r for r in rows if r["variant"] == "recbole preset" and r["seed"] == args.seed)
    print(f"\nBPRMF on ml-100k, test recall@20 (RecBole's BPR: {RECBOLE['recall@20']}, "
          f"in {RECBOLE['seconds']} s; the check is >= {0.95 * RECBOLE['recall@20']:.4f})")
    print(f"{'variant':<58}{'seed':>5}{'recall@20':>11}{'change':>9}{'epochs':>8}{'wall s':>8}{'cpu s':>7}{'load':>6}")
    for r in rows:
        ref = base if r["variant"].startswith("shipped") else preset
        change = r["recall@20"] - ref["recall@20"] if r["seed"] == args.seed else float("nan")
        print(f"{r['variant']:<58}{r['seed']:>5}{r['recall@20']:>11.4f}{change:>+9.4f}{r['best_epoch']:>4}/{r['epochs_run']:<3}"
              f"{r['wall_seconds']:>8.1f}{r['cpu_seconds']:>7.1f}{r['load_average_1m']:>6.1f}")
    presets = [r for r in rows if r["variant"] == "recbole preset"]
    mean = sum(r["recall@20"] for r in presets) / len(presets)
    checks = {"recall@20 >= 0.95 x 0.3719 (recbole preset, every seed)":
              all(r["recall@20"] >= 0.95 * RECBOLE["recall@20"] for r in presets),
              "cpu seconds <= 26.6 (recbole preset, every seed)": all(r["cpu_seconds"] <= RECBOLE["seconds"] for r in presets),
              "wall seconds <= 26.6 (recbole preset, every seed; shared machine)":
              all(r["wall_seconds"] <= RECBOLE["seconds"] for r in presets)}
    print(f"recbole preset over seeds {[r['seed'] for r in presets]}: recall@20 mean {mean:.4f}")
    for k, v in checks.items():
        print(f"{k}: {'PASS' if v else 'FAIL'}")
    Results.from_args("bprmf_recbole", args).write_json(
        "bprmf_recbole.json", {"recbole": RECBOLE, "rows": rows, "recbole_preset_mean_recall@20": mean, "checks": checks},
        seeds=sorted({args.seed, *args.spread_seeds}))


if __name__ == "__main__":
    main()
