"""INFNet, Shared-Bottom, MMoE and the target-attention diagnostic on ml-100k-mtl, each trained the way
``run.py`` trains it, over several seeds.

    .venv/bin/python experiments/infnet_ml100k.py [--seeds 0 1 2] [--epochs 6] [--device cpu]
        [--checkpoint_dir DIR] [--data_path DIR] [--all JSON] [--infnet JSON] [--reuse JSON] [--out DIR] [--publish]

For each (model, seed): Config(model, "ml-100k-mtl") with the command-line overrides (the same learning rate
and dropout for every model: the task defaults unless ``--all`` sets them), a RunDir under ``--checkpoint_dir``
(default ``<out>/runs``), ``Trainer.from_config(config, run).fit()``. The test split is also measured at every
evaluation, so each task can be read at its own best validation epoch ("per-task" selection) next to the
checkpoint of the best validation mean AUC ("joint"); training stops when no task's validation AUC improved
for ``stopping_step`` evaluations. Prints mean +- std over the seeds of test AUC per task and writes all runs
to ``<out>/infnet_ml100k.json`` (default ``results/infnet_ml100k/``; ``--publish`` also copies it into
``docs/results/infnet_ml100k/``).

``--reuse FILE`` takes the (model, seed) runs recorded in an earlier output of this script instead of training
them again, provided every setting that changes a run (epochs, stopping_step, device, data_path, all, infnet,
threads) is the same; the written JSON then holds the reused runs next to the new ones, and ``reused`` names them.
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

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

import recsys.multitask  # noqa: E402,F401
from graphattn.config import Config  # noqa: E402
from graphattn.results import Results, add_output_args  # noqa: E402
from graphattn.training import RunDir, Trainer  # noqa: E402
from recsys.multitask.selection import PerTaskSelection, infnet_beats_baselines  # noqa: E402


SETTINGS = ("epochs", "stopping_step", "device", "data_path", "all", "infnet", "threads")


def reusable_runs(path: str, args: argparse.Namespace) -> dict[tuple[str, int], dict]:
    """The runs of an earlier output, keyed by (model, seed); refuses one made with other settings."""
    try:
        earlier = json.loads(Path(path).read_text())
        recorded = earlier["args"]
        runs = earlier["runs"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise SystemExit(f"--reuse {path}: not a readable infnet_ml100k.json ({err})") from None
    for key in SETTINGS:
        if recorded.get(key) != getattr(args, key):
            raise SystemExit(f"--reuse {path}: its runs used {key}={recorded.get(key)!r}, this command "
                             f"{getattr(args, key)!r}; run them again instead")
    return {(r["model"], int(r["seed"])): r for r in runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["INFNet", "SharedBottom", "MMoE", "TargetAttention"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--stopping_step", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--checkpoint_dir", default=None, help="folder of the run folders (default <out>/runs)")
    parser.add_argument("--data_path", default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--all", default="{}", help="JSON config overrides for every model (e.g. learning_rate)")
    parser.add_argument("--infnet", default="{}", help='JSON config overrides for INFNet, e.g. \'{"residual": true}\'')
    parser.add_argument("--reuse", default=None, help="an earlier infnet_ml100k.json whose runs are taken as they are")
    add_output_args(parser, "infnet_ml100k")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Results.from_args("infnet_ml100k", args)
    earlier = reusable_runs(args.reuse, args) if args.reuse else {}
    checkpoint_dir = args.checkpoint_dir or str(out.dir / "runs")
    runs: list[dict] = []
    t_start = time.time()
    bar = tqdm(total=len(args.models) * len(args.seeds), desc="ml-100k-mtl runs", file=sys.stdout)
    for seed in args.seeds:
        for name in args.models:
            if (name, seed) in earlier:
                runs.append(earlier[(name, seed)])
                bar.write(f"seed {seed} {name:15s} reused from {args.reuse}")
                bar.update()
                continue
            overrides = {"epochs": args.epochs, "stopping_step": args.stopping_step, "device": args.device,
                         "show_progress": False, "checkpoint_dir": checkpoint_dir, "seed": seed,
                         **json.loads(args.all)}
            if name == "INFNet":
                overrides.update(json.loads(args.infnet))
            if args.data_path:
                overrides["data_path"] = args.data_path
            config = Config(name, "ml-100k-mtl", config_dict=overrides)
            t0 = time.time()
            with RunDir.create(config) as run:
                trainer = Trainer.from_config(config, run)      # seeds, loads the data, builds the model
                tasks = list(trainer.task.data.tasks)
                selection = PerTaskSelection(trainer, tasks, trainer.config["eval_batch_size"])
                joint = trainer.fit()                           # also writes curves.png
                per_task, epochs = selection.result()
                trace = selection.trace
                runs.append({"model": name, "seed": seed, "joint": {k: float(v) for k, v in joint.items()},
                             "per_task": per_task, "per_task_epoch": epochs, "joint_epoch": trainer.best_epoch,
                             "seconds": time.time() - t0, "run_folder": str(run.path), "trace": trace})
            bar.write(f"seed {seed} {name:15s} per-task " + "/".join(f"{per_task[f'auc_{t}']:.4f}" for t in tasks)
                      + f" mean {per_task['mean_auc']:.4f}; joint mean {joint['mean_auc']:.4f} (epoch "
                      f"{trainer.best_epoch}) {time.time() - t0:.0f}s")
            bar.update()
    bar.close()
    summary = {}
    for name in args.models:
        rs = [r for r in runs if r["model"] == name]
        summary[name] = {sel: {c: [float(np.mean([r[sel][c] for r in rs])), float(np.std([r[sel][c] for r in rs]))]
                               for c in [f"auc_{t}" for t in tasks] + ["mean_auc"]} for sel in ("per_task", "joint")}
    print(f"\nml-100k-mtl test AUC, mean +- std over seeds {args.seeds}")
    for sel in ("per_task", "joint"):
        print(f"selection: {sel}")
        print(f"{'model':15s} " + " ".join(f"{t:>15s}" for t in tasks) + f" {'mean':>15s}")
        for name, s in summary.items():
            print(f"{name:15s} " + " ".join(f"{s[sel][c][0]:.4f}+-{s[sel][c][1]:.4f}"
                                            for c in [f"auc_{t}" for t in tasks] + ["mean_auc"]))
    checks = infnet_beats_baselines(summary)
    seconds = time.time() - t_start
    print(f"total {seconds / 60:.1f} min")
    out.write_json("infnet_ml100k.json", {"args": vars(args), "tasks": tasks, "summary": summary, "checks": checks,
                                          "runs": runs, "seconds": seconds,
                                          "reused": sorted(f"{m}/{s}" for m, s in earlier
                                                           if m in args.models and s in args.seeds)},
                   seeds=args.seeds)


if __name__ == "__main__":
    main()
