"""Part discovery on a task that needs relating parts (issue #20, DependencyViT spec).

The ``parts`` images with ``parts_task: relation`` (``vision/datasets/parts.py``): one disc and one square in
random colours, a gap apart; the label (4 classes) is where the disc lies relative to the square. No single
patch, and no bag of patches without positions, tells the class; a model must relate the disc's patches to
the square's. For every seed this script trains, through the project's Trainer (best epoch on validation):

1. DependencyViT (reversed attention), 2. the plain ViT of identical size (``reversed_attention: false``),
3. DependencyViT-Lite: the same as 1 but pruning, in the blocks of ``--prune_layers``, 16 % of the original
   tokens each time (the spec's rate), during training and test;

then reads every test image's parent tree (``vision.graphs.parent_tree``: parent = the receiver a token
sends most to (reversed) or the key it reads most from (plain), blocks ``0..d-1`` chained, patches grouped by
ancestor) and scores the groups against the PART of each 4x4 patch with the adjusted Rand index over the
part patches (FG-ARI: disc vs square; background excluded). The depth d is chosen per model and seed on the
validation images, then scored on the test images. FLOPs of one forward pass (``torch.utils.flop_counter``)
of the full and the Lite model give the saving.

``--check`` instead runs the learnability check (about a minute per model): a pooled-token bag (patch
embedding + per-token MLP, average pooled, no positions: it cannot relate parts and should stay at chance,
0.25), the bag of local 8 px windows of ``experiments/dependency_vit.py``, and a short DependencyViT run.

Checks printed as PASS/FAIL (means over seeds): DependencyViT's FG-ARI exceeds the plain ViT's by > 0.1;
Lite loses < 1 point of test accuracy against the full model; Lite needs fewer FLOPs.

CPU-sized command (the one published; 24 px images -> 36 tokens, width 32, depth 4, 4 heads):

    python experiments/dependency_vit_parts.py --seeds 0 1 2 --jobs 3 --epochs 12 --num_train 4000 --publish
    python experiments/dependency_vit_parts.py --seeds 0 1 2 --jobs 3 --epochs 20 --num_train 4000 --tag _20ep --publish
    python experiments/dependency_vit_parts.py --check --epochs 4 --num_train 2000 --publish

Writes ``parts_relation<tag>.json`` (per seed and mean +- std), ``fg_ari_by_depth<tag>.png`` and
``groups_seed<first seed><tag>.png`` (``--tag``, default empty, keeps the files of runs with other settings) to
``results/dependency_vit_parts/`` (``--out``; ``--publish`` copies them into ``docs/results/dependency_vit_parts/``),
``check<tag>.json`` with ``--check``.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import vision  # noqa: E402,F401
from vision import dependency_vit as _dep  # noqa: E402,F401  (registers DependencyViT)
from vision.datasets import parts as _parts  # noqa: E402,F401
from graphattn.config import Config, parse_cli_overrides  # noqa: E402
from graphattn.results import Results, add_output_args  # noqa: E402
from graphattn.training import MemoryRun, Trainer  # noqa: E402
from vision.base import VisionModel  # noqa: E402
from vision.graphs.parent_tree import groups_at_depth, patch_majority_labels  # noqa: E402
from vision.task import VisionTask  # noqa: E402

# the tree read-out and the local control of the first part-discovery experiment
_spec = importlib.util.spec_from_file_location("_dependency_vit_experiment", ROOT / "experiments" / "dependency_vit.py")
_first = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_first)

SCALED = {"parts_task": "relation", "image_size": 24, "embed_dim": 32, "depth": 4, "num_heads": 4, "num_valid": 300, "num_test": 500}


def fg_ari(truth: torch.Tensor, groups: torch.Tensor) -> float:
    """Adjusted Rand index of ``groups`` against ``truth`` over the patches where ``truth > 0`` (the parts);
    nan when fewer than two parts are present. Shapes: (P,), (P,) -> float."""
    from sklearn.metrics import adjusted_rand_score

    fg = truth > 0
    if len(torch.unique(truth[fg])) < 2:
        return float("nan")
    return float(adjusted_rand_score(truth[fg].numpy(), groups[fg].numpy()))


class PooledTokens(VisionModel):
    """Bag of patches: 4x4 patch embedding, per-token MLP, average pooling, linear head; no position
    information, so no relation between patches can be read."""

    def __init__(self, config, data, width: int = 64):
        super().__init__(config, data)
        p = int(config["patch_size"])
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, width, p, stride=p), torch.nn.GELU(), torch.nn.Conv2d(width, width, 1), torch.nn.GELU())
        self.head = torch.nn.Linear(width, data.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mean(dim=(2, 3)))


def train_control(cls, cfg, data, epochs: int) -> float:
    """Train a control model (AdamW 2e-3, cosine) through the Trainer; test accuracy after the best epoch."""
    config = {**cfg.to_dict(), "epochs": epochs, "eval_step": 1, "optimizer": "adamw", "learning_rate": 2e-3, "weight_decay": 0.05,
              "scheduler": "cosine", "warmup_epochs": 0, "grad_clip": 0.0, "label_smoothing": 0.0, "metrics": ["accuracy"],
              "valid_metric": "accuracy", "show_progress": False, "device": "cpu"}
    torch.manual_seed(int(cfg["seed"]))
    return float(Trainer(config, VisionTask(config, data), cls(config, data), run=MemoryRun()).fit()["accuracy"])


def flops(model, images: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(images)
    return int(counter.get_total_flops())


def scores_by_depth(model, split, patch: int) -> tuple[list[float], list[float]]:
    """Mean FG-ARI (parts) and ARI over all patches (background one group) per depth d = 1..L on ``split``."""
    from sklearn.metrics import adjusted_rand_score

    images = torch.stack([split[i][0] for i in range(len(split))])
    tr = _first.trees(model, images, torch.device("cpu"))
    truth = [patch_majority_labels(split.parts[i], patch) for i in range(len(split))]
    fg_rows, all_rows = [], []
    for d in range(1, len(model.blocks) + 1):
        groups = [groups_at_depth(t, d) for t in tr]
        fg_rows.append(float(np.nanmean([fg_ari(g, p) for g, p in zip(truth, groups)])))
        all_rows.append(float(np.mean([adjusted_rand_score(g.numpy(), p.numpy()) for g, p in zip(truth, groups)])))
    return fg_rows, all_rows


def run_seed(seed: int, common: dict, runs: str, prune_layers: list[int], figure_seed: int) -> dict:
    torch.set_num_threads(1)
    overrides = {**common, "seed": seed}
    cfg, data, dep, dep_test = _first.train_one(overrides, Path(runs))
    _, _, plain, plain_test = _first.train_one({**overrides, "reversed_attention": False}, Path(runs))
    _, _, lite, lite_test = _first.train_one({**overrides, "prune_layers": prune_layers}, Path(runs))
    patch = int(cfg["patch_size"])
    row: dict = {"seed": seed, "accuracy": {"DependencyViT": dep_test["accuracy"], "plain ViT": plain_test["accuracy"],
                                            "DependencyViT-Lite": lite_test["accuracy"]}}
    for name, model in (("DependencyViT", dep), ("plain ViT", plain)):
        valid_fg, _ = scores_by_depth(model, data.valid, patch)
        test_fg, test_all = scores_by_depth(model, data.test, patch)
        d = int(np.argmax(valid_fg)) + 1
        row[name] = {"valid_fg_ari_by_depth": valid_fg, "test_fg_ari_by_depth": test_fg, "test_ari_all_by_depth": test_all,
                     "depth_chosen_on_valid": d, "test_fg_ari": test_fg[d - 1]}
    images = torch.stack([data.test[i][0] for i in range(64)])
    row["flops_per_image"] = {"DependencyViT": flops(dep, images) / 64, "DependencyViT-Lite": flops(lite, images) / 64}
    row["tokens_per_block_lite"] = lite.kept_tokens()
    if seed == figure_seed:
        row["examples"] = example_groups(dep, plain, data.test, patch, row)
    return row


def example_groups(dep, plain, test, patch: int, row: dict, n: int = 4) -> dict:
    """Groups at the chosen depth for the first ``n`` test images (for the figure)."""
    images = torch.stack([test[i][0] for i in range(n)])
    out = {"parts": [patch_majority_labels(test.parts[i], patch).tolist() for i in range(n)]}
    for name, model in (("DependencyViT", dep), ("plain ViT", plain)):
        d = row[name]["depth_chosen_on_valid"]
        out[name] = [groups_at_depth(t, d).tolist() for t in _first.trees(model, images, torch.device("cpu"))]
    return out


def mean_std(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0, "values": values}


def check(args, common: dict, out: Results) -> int:
    torch.set_num_threads(1)
    config = Config("DependencyViT", "parts", config_dict={**common, "seed": args.seeds[0], "show_progress": False})
    data = _parts.load_parts_data(config)
    pooled = train_control(PooledTokens, config, data, args.epochs)
    local = train_control(_first.LocalBag, config, data, args.epochs)
    _, _, _, dep_test = _first.train_one({**common, "seed": args.seeds[0]}, out.dir / "runs")
    result = {"pooled_tokens_accuracy": pooled, "local_8px_accuracy": local, "dependency_vit_accuracy": dep_test["accuracy"],
              "chance": 1 / data.num_classes, "epochs": args.epochs, "num_train": args.num_train, "overrides": common}
    out.write_json(f"check{args.tag}.json", result, seeds=[args.seeds[0]])
    print(f"test accuracy after {args.epochs} epochs of {args.num_train} fresh images (chance {1 / data.num_classes:.2f}):")
    print(f"  pooled tokens, no positions: {pooled:.4f}\n  local 8 px windows, pooled: {local:.4f}\n  DependencyViT:               {dep_test['accuracy']:.4f}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--num_train", type=int, default=4000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=1, help="seeds trained in parallel processes (1 torch thread each)")
    parser.add_argument("--prune_layers", type=int, nargs="+", default=[1, 2], help="0-based blocks of the Lite model that prune 16%% each")
    parser.add_argument("--check", action="store_true", help="only the learnability check (controls + one short DependencyViT run)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="extra config overrides")
    parser.add_argument("--tag", default="", help="suffix of the output file names, e.g. _20ep (keeps other runs' files)")
    add_output_args(parser, "dependency_vit_parts")
    args = parser.parse_args()
    out = Results.from_args("dependency_vit_parts", args)
    torch.set_num_threads(1)
    common = {**SCALED, "epochs": args.epochs, "num_train": args.num_train, "stopping_step": max(10, args.epochs), "show_progress": False,
              **parse_cli_overrides([f"--{kv}" for kv in args.set])}
    if args.check:
        return check(args, common, out)
    runs = str(out.dir / f"runs{args.tag}")
    k = len(args.seeds)
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        rows = list(pool.map(run_seed, args.seeds, [common] * k, [runs] * k, [args.prune_layers] * k, [args.seeds[0]] * k))
    summary = {
        "test_accuracy": {m: mean_std([r["accuracy"][m] for r in rows]) for m in ("DependencyViT", "plain ViT", "DependencyViT-Lite")},
        "test_fg_ari_parts": {m: mean_std([r[m]["test_fg_ari"] for r in rows]) for m in ("DependencyViT", "plain ViT")},
        "lite_accuracy_drop_points": mean_std([100 * (r["accuracy"]["DependencyViT"] - r["accuracy"]["DependencyViT-Lite"]) for r in rows]),
        "lite_flops_ratio": mean_std([r["flops_per_image"]["DependencyViT-Lite"] / r["flops_per_image"]["DependencyViT"] for r in rows]),
    }
    fa = summary["test_fg_ari_parts"]
    checks = {"fg_ari_dependency_beats_plain_by_0.1": fa["DependencyViT"]["mean"] > fa["plain ViT"]["mean"] + 0.1,
              "lite_loses_under_1_point": summary["lite_accuracy_drop_points"]["mean"] < 1.0,
              "lite_saves_flops": summary["lite_flops_ratio"]["mean"] < 1.0}
    payload = {"summary": summary, "checks": checks, "per_seed": rows, "overrides": common, "prune_layers": args.prune_layers,
               "prune_ratio": 0.16, "epochs": args.epochs, "num_train": args.num_train}
    out.write_json(f"parts_relation{args.tag}.json", payload, seeds=args.seeds)
    print(f"parts_task=relation, {len(rows)} seeds {args.seeds}, {args.epochs} epochs x {args.num_train} fresh images, overrides {common}")
    print("| model | test accuracy | FG-ARI vs part masks (depth chosen on valid) | depths chosen |")
    print("|---|---|---|---|")
    for m in ("DependencyViT", "plain ViT", "DependencyViT-Lite"):
        acc = summary["test_accuracy"][m]
        ari = f"{fa[m]['mean']:.3f} +- {fa[m]['std']:.3f}" if m in fa else "-"
        depths = ", ".join(str(r[m]["depth_chosen_on_valid"]) for r in rows) if m in fa else "-"
        print(f"| {m} | {acc['mean']:.4f} +- {acc['std']:.4f} | {ari} | {depths} |")
    for m in ("DependencyViT", "plain ViT"):
        print(f"{m} per seed: acc " + " / ".join(f"{r['accuracy'][m]:.4f}" for r in rows) + "; FG-ARI by depth (test) "
              + " | ".join(" ".join(f"{v:.3f}" for v in r[m]["test_fg_ari_by_depth"]) for r in rows))
    drop, ratio = summary["lite_accuracy_drop_points"], summary["lite_flops_ratio"]
    print(f"Lite (prune 16% in blocks {args.prune_layers}, tokens {rows[0]['tokens_per_block_lite']}): accuracy drop {drop['mean']:.2f} +- {drop['std']:.2f} points; "
          f"FLOPs {ratio['mean']:.3f}x of the full model ({(1 - ratio['mean']) * 100:.1f}% saved)")
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    plot(out, rows, int(Config("DependencyViT", "parts", config_dict=common)["patch_size"]), int(common["image_size"]), args.tag)
    return 0


def plot(out: Results, rows: list[dict], patch: int, size: int, tag: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name in ("DependencyViT", "plain ViT"):
        curves = np.array([r[name]["test_fg_ari_by_depth"] for r in rows])
        d = np.arange(1, curves.shape[1] + 1)
        ax.errorbar(d, curves.mean(0), yerr=curves.std(0), marker="o", capsize=3, label=name)
    ax.axhline(0, c="grey", lw=0.5)
    ax.set_xlabel("depth d (blocks chained)")
    ax.set_ylabel("FG-ARI vs part masks (test)")
    ax.set_title(f"relation task, {len(rows)} seeds (mean +- std)", fontsize=9)
    ax.legend(fontsize="small")
    fig.tight_layout()
    out.save_figure(fig, f"fg_ari_by_depth{tag}.png", dpi=110)
    plt.close(fig)

    ex = next((r["examples"] for r in rows if "examples" in r), None)
    if ex is None:
        return
    grid = size // patch
    n = len(ex["parts"])
    fig, axes = plt.subplots(n, 3, figsize=(7.5, 2.5 * n), squeeze=False)
    for i in range(n):
        for c, key in enumerate(("parts", "DependencyViT", "plain ViT")):
            axes[i, c].imshow(np.array(ex[key][i]).reshape(grid, grid), cmap="tab10" if key == "parts" else "tab20", interpolation="nearest")
            if i == 0:
                axes[i, c].set_title("part of each patch" if key == "parts" else f"{key}: subtrees", fontsize=9)
            axes[i, c].set_axis_off()
    fig.tight_layout()
    out.save_figure(fig, f"groups_seed{rows[0]['seed']}{tag}.png", dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
