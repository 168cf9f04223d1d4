"""Does a dependency tree that groups patches by object emerge from reversed attention? (DependencyViT spec)

On the synthetic part-discovery images (``vision/datasets/parts.py``; label = multiset of object types, no
masks used in training) trains DependencyViT and the plain ViT of identical size, then, per test image:

- reads each block's dependency matrix (heads summed), takes every token's parent (reversed attention:
  the receiver it sends most to; plain ViT: the token it attends to most), chains the pointers of blocks
  ``0..d-1`` and groups patches that share an ancestor (``vision.graphs.parent_tree``);
- scores the grouping against the ground-truth object of each 4x4 patch (background = one group) with the
  adjusted Rand index (ARI), for every depth d; also k-means (k = true number of groups) on the plain
  ViT's final token features as a second baseline;
- per block, the "hub share": the share of an image's tokens whose parent is the image's most chosen parent
  (near 1 = the tree collapses onto one hub token), and where object patches point: the share whose parent
  is the patch itself (a root), a patch of the same object, of another object, or background;
- with leaf pruning switched on at inference, measures how often the pruned tokens are background;
- control (``--local_epochs`` > 0): a "bag of local features" classifier that cannot group anything, a
  patch embedding plus one 2x2 convolution over the patch grid (receptive field 8 px, smaller than an
  object), average pooled into a linear head. If it solves the task, the label can be read from local
  part junctions counted over the image, and classification gives no reason to separate objects.

Writes ``<out>/ari_by_depth_seed<S>.png``, ``<out>/trees_seed<S>.png`` (parent arrows and groups drawn over
images) and ``<out>/result_seed<S>.json`` (``<out>`` defaults to ``results/dependency_vit/``; ``--publish`` also
copies them into ``docs/results/dependency_vit/``; training runs go to ``--runs``, default ``<out>/runs``);
prints the table and PASS/FAIL of: DependencyViT's ARI at its best depth exceeds the
plain ViT's best by > 0.1 (FG-ARI: object patches of images with >= 2 objects;
ARI over all patches is printed too).

Training images are rendered anew on every read (``resample_train``, the parts default; ``--num_train`` is
then images per epoch), so neither model can overfit a fixed set. CPU-sized run (about 14 minutes on one
shared CPU thread; embed_dim 48 and depth 4 instead of the model defaults 64 and 6 to fit that budget):

    python experiments/dependency_vit.py --epochs 16 --num_train 8000 --seed 0 --local_epochs 10 \
        --set embed_dim=48 depth=4 [--out DIR] [--publish]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import vision  # noqa: E402,F401
from vision import dependency_vit  # noqa: E402,F401
from vision.datasets import parts as _parts  # noqa: E402,F401
from graphattn.config import Config, parse_cli_overrides  # noqa: E402
from graphattn.results import Results, add_output_args  # noqa: E402
from graphattn.training import MemoryRun, RunDir, Trainer, resolve_device  # noqa: E402
from vision.base import VisionModel  # noqa: E402
from vision.task import VisionTask  # noqa: E402
from vision.graphs.parent_tree import ancestors, build_tree, dependency_mask, groups_at_depth, patch_majority_labels  # noqa: E402


def train_one(overrides: dict, runs: Path):
    config = Config("DependencyViT", "parts", config_dict={"checkpoint_dir": str(runs), "show_progress": False, **overrides})
    with RunDir.create(config) as run:
        trainer = Trainer.from_config(config, run)
        test = trainer.fit()                       # trainer.model holds the weights of best.pt
    model = trainer.model.cpu()
    return config, trainer.task.data, model, test


@torch.no_grad()
def trees(model, images: torch.Tensor, device, batch: int = 250) -> list[torch.Tensor]:
    """Parent pointers (L, P) in original patch indices for every image."""
    model.eval().to(device)
    axis = "sender" if model.reversed else "receiver"
    out = []
    for start in range(0, len(images), batch):
        feats = model.forward_features(images[start : start + batch].to(device), return_attention=True)
        a_m = [dependency_mask(a).cpu() for a in feats["attention"]]        # per layer (B, N_l, N_l)
        pos = [p.cpu() for p in feats["positions"]]
        for b in range(a_m[0].shape[0]):
            out.append(build_tree([a[b] for a in a_m], [p[b] for p in pos], model.num_patches, axis))
    return out


@torch.no_grad()
def final_tokens(model, images, device):
    model.eval().to(device)
    toks = model.patch_embed(images.to(device)).flatten(2).transpose(1, 2) + model.pos_embed
    m = toks.new_ones(toks.shape[:2])
    for block in model.blocks:
        toks, m, _ = block(toks, m, need_attention=False)
    return model.norm(toks).cpu()


class LocalBag(VisionModel):
    """Bag of local features: 4x4 patch embedding, GELU, a 2x2 convolution on the patch grid (receptive field
    8 px), GELU, average pooling over positions, linear head. No token sees beyond its 8 px window."""

    def __init__(self, config, data, width: int = 64):
        super().__init__(config, data)
        patch = int(config["patch_size"])
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, width, patch, stride=patch), torch.nn.GELU(),
                                        torch.nn.Conv2d(width, width, 2), torch.nn.GELU(), torch.nn.Conv2d(width, width, 1), torch.nn.GELU())
        self.head = torch.nn.Linear(width, data.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mean(dim=(2, 3)))


def train_local_bag(cfg, data, device, epochs: int) -> float:
    """Train :class:`LocalBag` (AdamW 2e-3, weight decay 0.05, cosine decay per step) on the training split of
    the vision task (batches and workers of ``cfg``), return its test accuracy after the last epoch."""
    config = {**cfg.to_dict(), "epochs": epochs, "eval_step": epochs, "optimizer": "adamw", "learning_rate": 2e-3, "weight_decay": 0.05,
              "scheduler": "cosine", "warmup_epochs": 0, "grad_clip": 0.0, "label_smoothing": 0.0, "metrics": ["accuracy"],
              "valid_metric": "accuracy", "show_progress": False, "device": str(device)}
    torch.manual_seed(int(cfg["seed"]))
    model = LocalBag(config, data)
    return float(Trainer(config, VisionTask(config, data), model, run=MemoryRun()).fit()["accuracy"])


def main() -> int:
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--num_train", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="extra config overrides, e.g. embed_dim=48 depth=4")
    parser.add_argument("--runs", default=None, help="checkpoint_dir of the training runs (default <out>/runs)")
    parser.add_argument("--local_epochs", type=int, default=0, help="epochs of the bag-of-local-features control (0 = skip)")
    add_output_args(parser, "dependency_vit")
    args = parser.parse_args()
    out = Results.from_args("dependency_vit", args)
    runs = Path(args.runs) if args.runs else out.dir / "runs"
    torch.set_num_threads(1)
    common = {"epochs": args.epochs, "seed": args.seed, "num_train": args.num_train, "stopping_step": max(10, args.epochs), **parse_cli_overrides([f"--{kv}" for kv in args.set])}

    cfg, data, dep, dep_test = train_one(common, runs)
    _, _, plain, plain_test = train_one({**common, "reversed_attention": False}, runs)
    device = resolve_device(cfg["device"])
    test = data.test
    images = torch.stack([test[i][0] for i in range(len(test))])
    patch = int(cfg["patch_size"])
    gt = [patch_majority_labels(test.objects[i], patch) for i in range(len(test))]
    depth = len(dep.blocks)

    def scores(pred_groups):
        """(ARI over all patches, FG-ARI over object patches only), averaged over images."""
        full = [adjusted_rand_score(g.numpy(), p.numpy()) for g, p in zip(gt, pred_groups)]
        fg = [adjusted_rand_score(g[g > 0].numpy(), p[g > 0].numpy()) for g, p in zip(gt, pred_groups) if len(torch.unique(g[g > 0])) > 1]
        return float(np.mean(full)), float(np.mean(fg))

    ari, fg_ari = {}, {}
    all_trees = {}
    for name, model in (("DependencyViT", dep), ("plain ViT", plain)):
        tr = trees(model, images, device)
        all_trees[name] = tr
        rows = [scores([groups_at_depth(t, d) for t in tr]) for d in range(1, depth + 1)]
        ari[name], fg_ari[name] = [r[0] for r in rows], [r[1] for r in rows]
    # collapse diagnostic: per block, share of the image's tokens whose parent is its most chosen parent
    hub_share = {name: [float(np.mean([torch.bincount(t[l][t[l] >= 0]).max().item() / int((t[l] >= 0).sum()) for t in tr])) for l in range(depth)]
                 for name, tr in all_trees.items()}
    # where do object patches point? (self = root, same object, another object, background), per block
    targets = {}
    for name, tr in all_trees.items():
        rows_t = []
        for l in range(depth):
            counts = np.zeros(4)
            for t, g in zip(tr, gt):
                src = torch.nonzero((g > 0) & (t[l] >= 0)).squeeze(1)
                par = t[l][src]
                kind = torch.where(par == src, 0, torch.where(g[par] == g[src], 1, torch.where(g[par] > 0, 2, 3)))
                counts += np.bincount(kind.numpy(), minlength=4)
            rows_t.append((counts / max(1.0, counts.sum())).tolist())
        targets[name] = rows_t
    feats = final_tokens(plain, images, device)
    km = []
    for g, f in zip(gt, feats):
        k = int(len(torch.unique(g)))
        km.append(torch.from_numpy(KMeans(n_clusters=k, n_init=4, random_state=0).fit_predict(f.numpy())) if k > 1 else torch.zeros(len(g), dtype=torch.long))
    ari_kmeans, fg_ari_kmeans = scores(km)

    # leaf pruning at inference: are the pruned tokens background?
    dep.to(device).eval()
    prune_at = list(range(1, depth - 1))
    dep.prune_layers = prune_at
    bg_pruned, bg_all = [], []
    with torch.no_grad():
        feats_p = dep.forward_features(images.to(device), return_attention=False)
    kept = feats_p["final_positions"].cpu()
    for i, g in enumerate(gt):
        removed = torch.ones(len(g), dtype=torch.bool)
        removed[kept[i]] = False
        bg_pruned.append(float((g[removed] == 0).float().mean()))
        bg_all.append(float((g == 0).float().mean()))
    dep.prune_layers = []

    local_acc = train_local_bag(cfg, data, device, args.local_epochs) if args.local_epochs > 0 else None
    print(f"test accuracy: DependencyViT {dep_test['accuracy']:.4f}  plain ViT {plain_test['accuracy']:.4f}  ({data.num_classes} classes)")
    if local_acc is not None:
        print(f"test accuracy of the bag of local features (8 px windows, average pooled, no grouping possible): {local_acc:.4f}")
    print("patch groups vs objects by depth d (parent pointers of blocks 0..d-1 chained); ARI over all patches")
    print("(background = one group) and FG-ARI over object patches of images with >= 2 objects:")
    print("depth              " + "  ".join(f"{d:>6d}" for d in range(1, depth + 1)))
    for name in ari:
        print(f"{name + ' ARI':<18s} " + "  ".join(f"{v:6.3f}" for v in ari[name]))
        print(f"{name + ' FG-ARI':<18s} " + "  ".join(f"{v:6.3f}" for v in fg_ari[name]))
    for name, row in hub_share.items():
        print(f"{name + ' hub share':<18s} " + "  ".join(f"{v:6.3f}" for v in row) + "   (share of tokens whose parent is the most chosen one)")
    print("parent of object patches per block: self (root) / same object / other object / background")
    for name, rows_t in targets.items():
        print(f"{name:<18s} " + "  ".join("/".join(f"{v:.2f}" for v in r) for r in rows_t))
    print(f"k-means on plain-ViT final features (oracle k): ARI {ari_kmeans:.3f}  FG-ARI {fg_ari_kmeans:.3f}")
    print(f"leaf pruning (in blocks {prune_at[0]}-{prune_at[-1]}, 16% each): background share of pruned tokens {np.mean(bg_pruned):.3f} vs {np.mean(bg_all):.3f} of all tokens")
    best_dep, best_plain = max(fg_ari["DependencyViT"]), max(fg_ari["plain ViT"])
    result = {"accuracy": {"DependencyViT": dep_test["accuracy"], "plain ViT": plain_test["accuracy"]}, "ari_by_depth": ari,
              "fg_ari_by_depth": fg_ari, "ari_kmeans_plain_features": ari_kmeans, "fg_ari_kmeans_plain_features": fg_ari_kmeans, "background_share_pruned": float(np.mean(bg_pruned)),
              "background_share_all": float(np.mean(bg_all)), "hub_share_by_block": hub_share, "local_bag_accuracy": local_acc,
              "object_parent_self_same_other_background_by_block": targets, "epochs": args.epochs, "seed": args.seed,
              "num_train": args.num_train, "overrides": common, "num_classes": data.num_classes, "prune_layers": prune_at}
    ok = best_dep > best_plain + 0.1
    result["checks"] = {"fg_ari_dependency_beats_plain_by_0.1": bool(ok),
                        "pruned_tokens_background_more_often": bool(np.mean(bg_pruned) > np.mean(bg_all))}
    suffix = f"_seed{args.seed}"
    out.write_json(f"result{suffix}.json", result, seeds=[args.seed])
    plot(out, suffix, fg_ari, fg_ari_kmeans, images, test, all_trees, gt, patch, int(np.argmax(fg_ari["DependencyViT"])) + 1, int(cfg["image_size"]))
    print(f"{'PASS' if ok else 'FAIL'}  DependencyViT best-depth FG-ARI {best_dep:.3f} > plain ViT best {best_plain:.3f} + 0.1")
    print(f"{'PASS' if np.mean(bg_pruned) > np.mean(bg_all) else 'FAIL'}  pruned tokens are background more often than tokens overall")
    return 0


def plot(out: Results, suffix, ari, ari_kmeans, images, test, all_trees, gt, patch, depth, size):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, row in ari.items():
        ax.plot(range(1, len(row) + 1), row, marker="o", label=name)
    ax.axhline(ari_kmeans, ls="--", c="grey", label="k-means, plain ViT features")
    ax.set_xlabel("depth d (blocks chained)")
    ax.set_ylabel("FG-ARI vs object masks")
    ax.legend(fontsize="small")
    fig.tight_layout()
    out.save_figure(fig, f"ari_by_depth{suffix}.png", dpi=110)
    plt.close(fig)

    grid = size // patch
    centres = [((p % grid) * patch + patch / 2 - 0.5, (p // grid) * patch + patch / 2 - 0.5) for p in range(grid * grid)]
    picks = [i for i in range(len(gt)) if len(torch.unique(gt[i])) >= 3][:4] or list(range(4))
    names = list(all_trees)
    fig, axes = plt.subplots(len(picks), 1 + 2 * len(names), figsize=(3 * (1 + 2 * len(names)), 3 * len(picks)), squeeze=False)
    for r, i in enumerate(picks):
        rgb = np.clip(test.images[i].permute(1, 2, 0).numpy(), 0, 1)
        axes[r, 0].imshow(test.objects[i], cmap="tab10", vmin=0, vmax=9)
        axes[r, 0].set_title("objects (ground truth)" if r == 0 else "")
        for c, name in enumerate(names):
            parents = all_trees[name][i]
            ax = axes[r, 1 + 2 * c]
            ax.imshow(rgb)
            colours = plt.cm.viridis(np.linspace(0, 1, depth))
            for l in range(depth):
                alive = torch.unique(ancestors(parents, l)).tolist()  # nodes of the tree at level l
                for p in alive:
                    q = int(parents[l, p])
                    if q >= 0 and q != p:
                        (x0, y0), (x1, y1) = centres[p], centres[q]
                        ax.annotate("", xy=(x1, y1), xytext=(x0, y0), arrowprops={"arrowstyle": "->", "color": colours[l], "lw": 0.8, "alpha": 0.8})
            ax.set_title(f"{name}: tree, blocks 1-{depth} (colour = block)" if r == 0 else "", fontsize=8)
            groups = groups_at_depth(parents, depth).reshape(grid, grid).numpy()
            axes[r, 2 + 2 * c].imshow(rgb)
            axes[r, 2 + 2 * c].imshow(np.kron(groups, np.ones((patch, patch))), cmap="tab20", alpha=0.55)
            axes[r, 2 + 2 * c].set_title(f"{name}: subtrees at depth {depth}" if r == 0 else "", fontsize=8)
    for ax in axes.ravel():
        ax.set_axis_off()
    fig.tight_layout()
    out.save_figure(fig, f"trees{suffix}.png", dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
