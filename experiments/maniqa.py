"""MANIQA on the synthetic IQA task (4 distortions x 5 levels on crops of bundled photos, SSIM scores):
SRCC / PLCC on held-out references for the full model and the ablations of the spec (mean pooling instead of
the patch-weighted score, no TAB, no SSTB; optionally the TAB reshape quirk and the from-scratch ViT backbone),
plus a hand-crafted-feature baseline on the same split. Writes every printed figure to ``<out>/maniqa.json`` and
the patch weights of the full model to ``<out>/maniqa_patch_weights.png`` (``<out>`` defaults to
``results/maniqa/``; ``--publish`` also copies both into ``docs/results/maniqa/``).

    .venv/bin/python experiments/maniqa.py [--epochs 15] [--seeds 2] [--variants full,mean pooling,...]
        [--out DIR] [--publish]

Training: MSE on the score, AdamW (lr 2e-3, weight decay 1e-4), one-cycle schedule, batch 32, random
flips + 90-degree rotations (the 8 symmetries of the square keep every distortion's score: blur and noise are
isotropic, contrast is global and 64-px crops keep JPEG's 8x8 block grid aligned). The model after the last
epoch is evaluated (no checkpoint picking on the 5-reference validation split).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graphattn.config import CORE_OVERALL, load_yaml  # noqa: E402
from graphattn.results import Results, add_output_args  # noqa: E402
from graphattn.training import MemoryRun, Task, Trainer  # noqa: E402

from vision.datasets.quality import load_iqa_synthetic  # noqa: E402
from vision.maniqa import MANIQANet  # noqa: E402
from vision.metrics import compute_metrics  # noqa: E402

VARIANTS = {"full": {}, "mean pooling": {"weighted": False}, "no TAB": {"use_tab": False},
            "no SSTB": {"use_sstb": False}, "TAB reshape quirk": {"reshape_quirk": True},
            "ViT backbone (scratch)": {"backbone": "vit", "feature_layers": (1, 2, 3)}}
METRICS = ["srcc", "plcc", "rmse"]


def predict(net, x):
    net.eval()
    with torch.no_grad():
        return torch.cat([net(x[i:i + 128]) for i in range(0, len(x), 128)])


def dihedral(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A random flip and 90-degree rotation per batch element (the square's 8 symmetries)."""
    flip = torch.rand(len(x), generator=g) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    k = torch.randint(4, (len(x),), generator=g)
    return torch.stack([torch.rot90(xi, int(ki), (1, 2)) for xi, ki in zip(x, k)])


class IQATask(Task):
    """MSE on the score; each epoch's order and augmentation (:func:`dihedral`) from a generator seeded with
    ``seed``; judged by SRCC. Splits are the ``TensorDataset``s of ``data``."""

    fused_optimizer = False   # torch's default kernel: the published figures were made with it

    metric = "srcc"

    def __init__(self, config, data, seed):
        super().__init__(config, data)
        self.generator = torch.Generator().manual_seed(seed)

    def batches(self, phase):
        x, y = self.data.train.tensors
        size, g = int(self.config["train_batch_size"]), self.generator
        perm = torch.randperm(len(y), generator=g)
        return [(dihedral(x[idx], g), y[idx]) for idx in (perm[i:i + size] for i in range(0, len(y), size))]

    def loss(self, model, batch, phase):
        x, y = batch
        return F.mse_loss(model(x), y), {}


    def evaluate(self, model, split):
        x, y = getattr(self.data, split).tensors
        return compute_metrics(predict(model, x), y, METRICS, "regression")

    def state_dict(self):
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state):
        self.generator.set_state(state["generator"])


def train(net, data, epochs, lr, seed, batch=32):
    """AdamW (weight decay 1e-4), one-cycle schedule with 10 % warm-up; the model after the last epoch."""
    config = {**load_yaml(CORE_OVERALL), "epochs": epochs, "eval_step": epochs, "optimizer": "adamw",
              "learning_rate": lr, "weight_decay": 1e-4, "scheduler": "onecycle", "train_batch_size": batch,
              "device": "cpu", "show_progress": sys.stderr.isatty()}
    trainer = Trainer(config, IQATask(config, data, seed), net, run=MemoryRun())
    trainer.schedules["train"].pct_start = 0.1
    trainer.train()          # one validation pass, after the last epoch: nothing is selected
    return trainer.model


def handcrafted_features(pixels: np.ndarray) -> np.ndarray:
    """9 classic no-reference statistics of an (H, W, 3) crop in [0, 1]: log Laplacian variance, log mean
    gradient magnitude, mean / 10th / 90th percentile of the 7x7 local standard deviation, global standard
    deviation, 8x8 blockiness (mean |horizontal difference| on block borders over all), log mean and log
    median |Laplacian|."""
    from scipy.ndimage import laplace, sobel, uniform_filter
    g = pixels.mean(-1)
    lap = laplace(g)
    grad = np.hypot(sobel(g, 0), sobel(g, 1))
    m = uniform_filter(g, 7)
    local = np.sqrt(np.maximum(uniform_filter(g * g, 7) - m * m, 0))
    dh = np.abs(np.diff(g, axis=1))
    return np.array([np.log(lap.var() + 1e-8), np.log(grad.mean() + 1e-8), local.mean(), np.percentile(local, 10),
                     np.percentile(local, 90), g.std(), dh[:, 7::8].mean() / (dh.mean() + 1e-6),
                     np.log(np.abs(lap).mean() + 1e-8), np.log(np.median(np.abs(lap)) + 1e-8)])


def handcrafted_baseline(data) -> dict[str, dict[str, float]]:
    """Gradient-boosted trees (and ridge) on :func:`handcrafted_features`, fit on the train split."""
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def feats(split):
        x, y = getattr(data, split).tensors
        pix = (x.permute(0, 2, 3, 1).numpy() * 0.5 + 0.5).astype(np.float64)
        return np.stack([handcrafted_features(p) for p in pix]), y
    (xtr, ytr), (xte, yte) = feats("train"), feats("test")
    out = {}
    for name, model in (("hand-crafted + ridge", make_pipeline(StandardScaler(), RidgeCV())),
                        ("hand-crafted + boosted trees",
                         HistGradientBoostingRegressor(max_iter=200, learning_rate=0.05, random_state=0))):
        model.fit(xtr, ytr.numpy())
        out[name] = {"train": compute_metrics(torch.from_numpy(model.predict(xtr)), ytr, METRICS, "regression"),
                     "test": compute_metrics(torch.from_numpy(model.predict(xte)), yte, METRICS, "regression")}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--first-seed", type=int, default=0, help="seeds run are first_seed .. first_seed + seeds - 1")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--split", default="reference")
    ap.add_argument("--variants", default="full,mean pooling,no TAB,no SSTB")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--no-plot", action="store_true")
    add_output_args(ap, "maniqa")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Results.from_args("maniqa", args)
    data = load_iqa_synthetic({"crop_size": 64, "source_scale": 0.5, "score": "ssim", "split_by": args.split,
                               "valid_ratio": 0.1, "test_ratio": 0.2, "split_seed": 20})
    x, y = data.train.tensors
    xt, yt = data.test.tensors
    refs = {s: len(set(data.meta["reference"][s])) for s in ("train", "valid", "test")}
    print(f"synthetic IQA, split by {args.split}: images train {len(data.train)}, valid {len(data.valid)}, "
          f"test {len(data.test)}; references {refs}")
    record = {"args": vars(args), "images": {split: len(getattr(data, split)) for split in ("train", "valid", "test")},
              "references": refs, "baselines": None, "variants": {}}
    if not args.no_baseline:
        record["baselines"] = handcrafted_baseline(data)
        for name, r in record["baselines"].items():
            print(f"{name:28s} train SRCC {r['train']['srcc']:.4f}  test SRCC {r['test']['srcc']:.4f}  "
                  f"PLCC {r['test']['plcc']:.4f}  RMSE {r['test']['rmse']:.4f}")
    nets = {}
    for name in args.variants.split(","):
        res, fit = [], []
        t0 = time.time()
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            torch.manual_seed(seed)
            net = MANIQANet(**VARIANTS[name])
            train(net, data, args.epochs, args.lr, seed)
            res.append(compute_metrics(predict(net, xt), yt, METRICS, "regression"))
            fit.append(compute_metrics(predict(net, x), y, ["srcc"], "regression")["srcc"])
            print(f"  {name} seed {seed}: train SRCC {fit[-1]:.4f}  test SRCC {res[-1]['srcc']:.4f}  "
                  f"PLCC {res[-1]['plcc']:.4f}", flush=True)
            nets.setdefault(name, net)
        m = {k: np.mean([r[k] for r in res]) for k in res[0]}
        s = {k: np.std([r[k] for r in res]) for k in res[0]}
        per_run = (time.time() - t0) / args.seeds
        print(f"{name:22s} train SRCC {np.mean(fit):.4f}  test SRCC {m['srcc']:.4f} +- {s['srcc']:.4f}  "
              f"PLCC {m['plcc']:.4f} +- {s['plcc']:.4f}  RMSE {m['rmse']:.4f}  (seeds {args.seeds}, epochs "
              f"{args.epochs}, {per_run:.0f} s/run)", flush=True)
        record["variants"][name] = {"per_seed_test": res, "per_seed_train_srcc": fit, "train_srcc": float(np.mean(fit)),
                                    "test_mean": m, "test_std": s, "seconds_per_run": per_run}
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    out.write_json("maniqa.json", record, seeds=seeds)
    if "full" in nets and not args.no_plot:
        plot(nets["full"], data, out, "maniqa_patch_weights.png")


def plot(net, data, out: Results, name: str):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    xt, yt = data.test.tensors
    kinds = data.meta["distortion"]["test"]
    levels = data.meta["level"]["test"]
    refs = data.meta["reference"]["test"]
    # one held-out reference, clean and at level 4 of each distortion, so the columns differ only in distortion
    ref = next(r for r in dict.fromkeys(refs))
    picks = [i for i, (r, k, lv) in enumerate(zip(refs, kinds, levels)) if r == ref and lv in (0, 4)]
    net.eval()
    with torch.no_grad():
        score, weights = net.forward_weights(xt[picks])
    grid = net.shape[0]
    fig, axes = plt.subplots(2, len(picks), figsize=(2.6 * len(picks), 5.4), squeeze=False)
    for c, i in enumerate(picks):
        axes[0, c].imshow((xt[i].permute(1, 2, 0).numpy() * 0.5 + 0.5).clip(0, 1))
        axes[0, c].set_title(f"{kinds[i]} L{levels[i]}\nSSIM {float(yt[i]):.2f} pred {float(score[c]):.2f}", fontsize=8)
        im = axes[1, c].imshow(weights[c].view(grid, grid).numpy(), cmap="magma")
        axes[1, c].set_title("patch weights w_t", fontsize=8)
        fig.colorbar(im, ax=axes[1, c], fraction=0.046)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    out.save_figure(fig, name, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
