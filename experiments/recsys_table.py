"""Results table: BPRMF, CKE and KGAT on a dataset with the shipped configs, mean and spread over seeds.

    python experiments/recsys_table.py [--dataset ml-100k] [--models BPRMF CKE KGAT] [--seeds 0 1 2]
        [--set key=value ...] [--out docs/recsys_ml-100k.json]

Each (model, seed) trains through the project's trainer exactly as ``run.py`` would (the merged config of
overall < model < dataset YAML, plus ``--set`` overrides) and is evaluated on the test split at its best
validation epoch. Prints a markdown table (mean ± std over seeds) and writes the per-run numbers as JSON.
"""
from __future__ import annotations

import argparse
import ast
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from graphattn.io import atomic_write_text  # noqa: E402

import recsys  # noqa: E402,F401
from graphattn.config import Config  # noqa: E402
from graphattn.train import RunDir, seed_everything  # noqa: E402
from recsys.trainer import fit  # noqa: E402

COLUMNS = ["recall@20", "ndcg@20", "ndcg_kgat@20", "hit@20", "recall@10", "ndcg@10"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--models", nargs="+", default=["BPRMF", "CKE", "KGAT"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            overrides[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            overrides[key] = value
    rows: dict[str, list[dict]] = {m: [] for m in args.models}
    with tempfile.TemporaryDirectory() as work:
        for model in args.models:
            for seed in args.seeds:
                cfg = Config(model, args.dataset, config_dict={"seed": seed, "show_progress": False,
                                                              "checkpoint_dir": work, "log_level": "WARNING",
                                                              **overrides})
                seed_everything(seed)
                run = RunDir.create(cfg)
                t0 = time.perf_counter()
                try:
                    test, _, _ = fit(cfg, run)
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
    for model, runs in rows.items():
        cells = []
        for c in COLUMNS:
            v = np.array([r[c] for r in runs])
            cells.append(f"{v.mean():.4f} ± {v.std():.4f}")
        ep = np.mean([r["epochs"] for r in runs])
        sec = np.mean([r["seconds"] for r in runs])
        print(f"| {model} | " + " | ".join(cells) + f" | {ep:.0f} | {sec:.0f} |")
    out = Path(args.out or ROOT / "docs" / f"recsys_{args.dataset}.json")
    atomic_write_text(out, json.dumps({"dataset": args.dataset, "overrides": overrides, "runs": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
