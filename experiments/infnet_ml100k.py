"""INFNet, Shared-Bottom and MMoE on ml-100k-mtl, each trained the way ``run.py`` trains it.

    .venv/bin/python experiments/infnet_ml100k.py [--epochs 20] [--device cpu] [--checkpoint_dir DIR]
        [--data_path DIR]   (DIR/ml-100k/ml-100k.{inter,user,item}; default: recbole's bundled copy)
        [--out DIR] [--publish]

For each model: Config(model, "ml-100k-mtl") with the command-line overrides, a RunDir (config, log,
metrics.json, best.pt / last.pt, curves.png) under ``--checkpoint_dir`` (default ``<out>/runs``),
``Trainer.from_config(config, run).fit()``; then prints the test AUC / gAUC of the checkpoint chosen on
validation mean AUC, one row per model (best epochs numbered from 1), and writes them to
``<out>/infnet_ml100k.json`` (default ``results/infnet_ml100k/``; ``--publish`` also copies the JSON into
``docs/results/infnet_ml100k/``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import recsys.multitask  # noqa: E402,F401
from graphattn.config import Config  # noqa: E402
from graphattn.results import Results, add_output_args  # noqa: E402
from graphattn.training import RunDir, Trainer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["INFNet", "SharedBottom", "MMoE"])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--checkpoint_dir", default=None, help="folder of the run folders (default <out>/runs)")
    parser.add_argument("--data_path", default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--infnet", default="{}", help='JSON config overrides for INFNet, e.g. \'{"residual": true}\'')
    add_output_args(parser, "infnet_ml100k")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Results.from_args("infnet_ml100k", args)
    checkpoint_dir = args.checkpoint_dir or str(out.dir / "runs")
    rows, runs, seeds = {}, {}, []
    for name in args.models:
        overrides = {"epochs": args.epochs, "device": args.device, "show_progress": False,
                     "checkpoint_dir": checkpoint_dir}
        if name == "INFNet":
            overrides.update(json.loads(args.infnet))
        if args.data_path:
            overrides["data_path"] = args.data_path
        config = Config(name, "ml-100k-mtl", config_dict=overrides)
        t0 = time.time()
        with RunDir.create(config) as run:
            trainer = Trainer.from_config(config, run)      # seeds, loads the data, builds the model
            test = trainer.fit()                            # also writes curves.png
            rows[name] = test
            seconds = time.time() - t0
            runs[name] = {"seconds": seconds, "best_epoch": trainer.best_epoch, "run_folder": str(run.path),
                          "seed": int(config["seed"])}
            seeds.append(int(config["seed"]))
            print(f"{name}: {seconds:.0f}s, best epoch {trainer.best_epoch}, run folder {run.path}", flush=True)
    tasks = [k[4:] for k in next(iter(rows.values())) if k.startswith("auc_")]
    print("\nml-100k-mtl test AUC (gAUC), checkpoint picked on validation mean AUC")
    print(f"{'model':13s} " + " ".join(f"{t:>17s}" for t in tasks) + f" {'mean':>17s}")
    for name, r in rows.items():
        cells = [f"{r[f'auc_{t}']:.4f} ({r[f'gauc_{t}']:.4f})" for t in tasks]
        print(f"{name:13s} " + " ".join(f"{c:>17s}" for c in cells)
              + f" {r['mean_auc']:.4f} ({r['mean_gauc']:.4f})")
    out.write_json("infnet_ml100k.json", {"args": vars(args), "tasks": tasks, "test": rows, "runs": runs},
                   seeds=sorted(set(seeds)))


if __name__ == "__main__":
    main()
