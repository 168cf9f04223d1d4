"""DependencyViT on scikit-learn digits (32 px, patch 4 -> 64 tokens, the spec's setting): accuracy and the
cost of leaf pruning.

For every seed in ``--seeds``, trains through the project's Trainer (best epoch picked on the validation split):
  1. DependencyViT (no pruning),
  2. DependencyViT-Lite: the same, pruning 16 % of the original tokens in each of the blocks of every
     schedule in ``--prune`` (right after their attention, as in the timm port). Defaults for depth 6:
     ``1,2,3,4`` (four steps, 64 -> 54 -> 44 -> 34 -> 24 tokens) and ``1,4`` (the port's spacing, every third
     block from the second, 0-based 1, 4, 7, 10 at depth 12, cut to depth 6: 64 -> 54 -> 44),
then evaluates (1) also with pruning switched on at inference only, and times inference of the pruned and
unpruned forward passes (eval mode, ``--batch`` images, median of repeats, seed 0's models) on the CPU
(1 thread) and, when present, the GPU.

Checks (printed as PASS/FAIL, on the mean over seeds): full model > 95 % test accuracy; the Lite model within
1 point of it; the pruned forward pass at least 10 % faster.

    python bench/dependency_vit.py --epochs 40 --seeds 0 1 --set augment_shift=2 [--reuse] [--out DIR] [--publish]

Writes ``result.json`` (and the training runs under ``<out>/runs``) to ``results/dependency_vit/`` (``--out``;
``--publish`` copies the JSON to ``docs/results/dependency_vit/``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import vision  # noqa: E402,F401
from vision import dependency_vit  # noqa: E402,F401  (registers DependencyViT)
from graphattn.config import Config, parse_cli_overrides  # noqa: E402
from graphattn.results import Results, add_output_args  # noqa: E402
from graphattn.training import RunDir, Trainer, load_checkpoint, resolve_device  # noqa: E402
from vision.task import VisionTask, evaluate_loader, load_data  # noqa: E402



def _finished_run(config, runs: Path) -> Path | None:
    """A run folder under ``runs`` trained with exactly ``config`` (same keys and values) that has a test
    result and ``best.pt``, or None."""
    import yaml

    want = yaml.safe_load(yaml.safe_dump(config.to_dict()))
    for folder in sorted(runs.glob("DependencyViT-digits-*")):
        try:
            same = yaml.safe_load((folder / "config.yaml").read_text()) == want
            done = same and "test" in json.loads((folder / "metrics.json").read_text()) and (folder / "best.pt").is_file()
        except (OSError, ValueError):
            continue
        if done:
            return folder
    return None


def train_one(overrides: dict, runs: Path, reuse: bool = False):
    config = Config("DependencyViT", "digits", config_dict={"image_size": 32, "checkpoint_dir": str(runs), "show_progress": False, **overrides})
    path = _finished_run(config, runs) if reuse else None
    if path is not None:
        test = json.loads((path / "metrics.json").read_text())["test"]
        print(f"reusing the finished run {path}", flush=True)
    else:
        with RunDir.create(config) as run:
            test = Trainer.from_config(config, run).fit()
            path = run.path
    data = load_data(config)
    model = VisionTask(config, data).build_model()
    best = load_checkpoint(path / "best.pt")
    model.load_state_dict(best["model"])
    # best.pt holds {"model", "epoch", "metric", "value"}; runs of the old vision trainer kept {valid_metric: value}
    valid = float(best["value"] if "value" in best else best["accuracy"])
    return config, data, model, {**test, "valid_accuracy": valid}


@torch.no_grad()
def time_forward(models: dict, x, repeats: int) -> dict[str, float]:
    """Median forward time of each ``(model, prune_layers)``; the models take turns in every repeat so that
    a change of machine load hits all of them alike."""
    for model, layers in models.values():
        model.eval().prune_layers = list(layers)
        model(x)
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(repeats):
        for name, (model, layers) in models.items():
            model.prune_layers = list(layers)
            if x.is_cuda:
                torch.cuda.synchronize()
            t = time.perf_counter()
            model(x)
            if x.is_cuda:
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(v) for name, v in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    add_output_args(parser, "dependency_vit")
    parser.add_argument("--prune", nargs="+", default=["1,2,3,4", "1,4"], help="one or more schedules: blocks in which to prune (default with depth 6: attention sees 64, 64, 54, 44, 34, 24 tokens; 24 are pooled); the first is timed")
    parser.add_argument("--reuse", action="store_true", help="reuse finished runs under --runs trained with the same config instead of retraining")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="extra config overrides, e.g. embed_dim=48 depth=4")
    parser.add_argument("--runs", default=None, help="checkpoint_dir of the training runs (default <out>/runs)")
    args = parser.parse_args()
    results = Results.from_args("dependency_vit", args)
    runs = Path(args.runs) if args.runs else results.dir / "runs"
    torch.set_num_threads(1)
    schedules = [[int(v) for v in sched.split(",")] for sched in args.prune]
    PRUNE = schedules[0]
    overrides = parse_cli_overrides([f"--{kv}" for kv in args.set])

    per_seed, models, lites = {}, {}, {}
    for seed in args.seeds:
        common = {"epochs": args.epochs, "seed": seed, "stopping_step": max(10, args.epochs), **overrides}
        cfg, data, full, full_test = train_one(common, runs, args.reuse)
        device = resolve_device(cfg["device"])
        loader = torch.utils.data.DataLoader(data.test, batch_size=512)
        per_seed[seed] = {"full": full_test["accuracy"], "valid_full": full_test["valid_accuracy"]}
        for sched in schedules:
            tag = "" if sched == PRUNE else "@" + "-".join(map(str, sched))
            _, _, lite_s, lite_test = train_one({**common, "prune_layers": sched}, runs, args.reuse)
            full.to(device)
            full.prune_layers = list(sched)  # same weights, pruning switched on at inference only
            pruned_at_inference = evaluate_loader(full, loader, device, ["accuracy"])["accuracy"]
            full.prune_layers = []
            per_seed[seed].update({f"lite{tag}": lite_test["accuracy"], f"full_pruned_at_inference{tag}": pruned_at_inference, f"valid_lite{tag}": lite_test["valid_accuracy"]})
            lites.setdefault(tuple(sched), lite_s)
        print(f"seed {seed}: " + "  ".join(f"{k} {v:.4f}" for k, v in per_seed[seed].items()), flush=True)
        models.setdefault("first", (data, full))

    data, full = models["first"]
    x = torch.cat([data.test[i][0][None] for i in range(min(args.batch, len(data.test)))])
    x = x.repeat((args.batch + len(x) - 1) // len(x), 1, 1, 1)[: args.batch]
    timings = {}
    for dev in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        contenders = {"full": (full.to(dev), [])}
        for sched in schedules:
            contenders["pruned" + ("" if sched == PRUNE else "@" + "-".join(map(str, sched)))] = (lites[tuple(sched)].to(dev), sched)
        t = time_forward(contenders, x.to(dev), args.repeats)
        timings.update({f"{dev}/{k}": v for k, v in t.items()})
    mean = {k: statistics.mean(r[k] for r in per_seed.values()) for k in next(iter(per_seed.values()))}
    result = {
        "per_seed": per_seed,
        "mean": mean,
        "tokens_per_block_lite": {"-".join(map(str, k)): m.kept_tokens() for k, m in lites.items()},
        "prune_layers": schedules,
        "overrides": overrides,
        "forward_seconds": timings,
        "batch": args.batch,
        "epochs": args.epochs,
    }
    print(json.dumps(result, indent=2))
    results.write_json("result.json", result, seeds=args.seeds)
    checks = [
        ("full DependencyViT test accuracy > 0.95 (mean over seeds)", mean["full"] > 0.95),
        *((f"Lite pruning in blocks {sched} (trained with pruning) within 1 point of full (mean over seeds)",
           mean["lite" + ("" if sched == PRUNE else "@" + "-".join(map(str, sched)))] >= mean["full"] - 0.01) for sched in schedules),
    ]
    for dev in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        for sched in schedules:
            name = "pruned" + ("" if sched == PRUNE else "@" + "-".join(map(str, sched)))
            speedup = timings[f"{dev}/full"] / timings[f"{dev}/{name}"]
            print(f"{dev}: pruned in blocks {sched}: forward {speedup:.2f}x faster ({timings[f'{dev}/full'] * 1e3:.1f} ms -> {timings[f'{dev}/{name}'] * 1e3:.1f} ms, batch {args.batch})")
            checks.append((f"{dev}: pruned in blocks {sched}: forward at least 10% faster", speedup > 1.1))
    for name, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
