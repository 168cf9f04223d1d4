"""Results table: BPRMF, CKE and KGAT on a dataset with the shipped configs, mean and spread over seeds.

    python experiments/recsys_table.py [--dataset ml-100k] [--models BPRMF CKE KGAT] [--seeds 0 1 2]
        [--set [MODEL:]key=value ...] [--pretrain BPRMF] [--out DIR] [--publish]

Each (model, seed) trains through the project's trainer exactly as ``run.py`` would (the merged config of
overall < model < dataset YAML, plus ``--set`` overrides) and is evaluated on the test split at its best
validation epoch. With ``--pretrain BPRMF``, every KGAT run starts from the BPRMF run of the same seed (list
BPRMF first). Prints a markdown table (mean ± std over seeds) and writes it with the per-run numbers to
``<out>/recsys_<dataset>.json`` (default ``results/recsys_table/``; ``--publish`` also copies it into
``docs/results/recsys_table/``).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import recsys  # noqa: E402,F401
from graphattn.config import Config, parse_cli_overrides  # noqa: E402
from graphattn.results import Results, add_output_args  # noqa: E402
from graphattn.training import RunDir, Trainer  # noqa: E402

COLUMNS = ["recall@20", "ndcg@20", "ndcg_kgat@20", "hit@20", "recall@10", "ndcg@10"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--models", nargs="+", default=["BPRMF", "CKE", "KGAT"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", nargs="*", default=[], metavar="[MODEL:]KEY=VALUE",
                        help="config override for every model, or for MODEL only")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pretrain", default=None, metavar="MODEL",
                        help="initialise KGAT from this model's run of the same seed (KGAT's pretrain key)")
    add_output_args(parser, "recsys_table")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    overrides: dict[str | None, dict] = {}          # model (None: every model) -> key -> value
    for item in args.set:
        key, _, value = item.partition("=")
        model, _, key = key.rpartition(":")
        overrides.setdefault(model or None, {}).update(parse_cli_overrides([f"--{key}={value}"]))  # as run.py reads it
    rows: dict[str, list[dict]] = {m: [] for m in args.models}
    run_paths: dict[tuple[str, int], Path] = {}
    if args.pretrain and ("KGAT" not in args.models or args.pretrain not in args.models
                          or args.models.index(args.pretrain) > args.models.index("KGAT")):
        parser.error(f"--pretrain {args.pretrain}: list {args.pretrain} before KGAT in --models")
    with tempfile.TemporaryDirectory() as work:
        for model in args.models:
            for seed in args.seeds:
                extra = {"pretrain": str(run_paths[args.pretrain, seed])} if args.pretrain and model == "KGAT" else {}
                cfg = Config(model, args.dataset, config_dict={"seed": seed, "show_progress": False,
                                                              "checkpoint_dir": work, "log_level": "WARNING",
                                                              **overrides.get(None, {}),
                                                              **overrides.get(model, {}), **extra})
                run = RunDir.create(cfg)
                run_paths[model, seed] = run.path
                t0 = time.perf_counter()
                try:
                    test = Trainer.from_config(cfg, run).fit()     # seeds from cfg["seed"]
                    epochs = len(run.history["train"])
                finally:
                    run.close()
                test = {k: float(v) for k, v in test.items()}
                test.update(seconds=time.perf_counter() - t0, epochs=epochs, seed=seed)
                rows[model].append(test)
                print(f"{model:<6} seed {seed}: " + " ".join(f"{c}={test[c]:.4f}" for c in COLUMNS)
                      + f"  ({epochs} epochs, {test['seconds']:.0f} s)", flush=True)
    print("\n| model | " + " | ".join(COLUMNS) + " | epochs | seconds |")
    print("| --- |" + " ---: |" * (len(COLUMNS) + 2))
    table = {}
    for model, runs in rows.items():
        cells, stats = [], {}
        for c in COLUMNS:
            v = np.array([r[c] for r in runs])
            cells.append(f"{v.mean():.4f} ± {v.std():.4f}")
            stats[c] = {"mean": float(v.mean()), "std": float(v.std())}
        ep = np.mean([r["epochs"] for r in runs])
        sec = np.mean([r["seconds"] for r in runs])
        print(f"| {model} | " + " | ".join(cells) + f" | {ep:.0f} | {sec:.0f} |")
        table[model] = {**stats, "epochs": float(ep), "seconds": float(sec)}
    overrides = {model or "*": values for model, values in overrides.items()}
    Results.from_args("recsys_table", args).write_json(
        f"recsys_{args.dataset}.json", {"dataset": args.dataset, "overrides": overrides, "pretrain": args.pretrain,
                                        "runs": rows, "table": table}, seeds=args.seeds)


if __name__ == "__main__":
    main()
