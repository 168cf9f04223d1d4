"""MANIQA on the synthetic IQA task (4 distortions x 5 levels on crops of bundled photos, SSIM scores):
SRCC / PLCC on held-out references for the full model and the ablations of the spec: mean pooling instead of
the patch-weighted score, no TAB, no SSTB, and the official TAB reshape quirk. Writes
``docs/img/maniqa_patch_weights.png``.

    .venv/bin/python experiments/maniqa.py [--epochs 30] [--seeds 1] [--split reference|image]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graphattn.io import save_figure  # noqa: E402

from vision.datasets.quality import load_iqa_synthetic  # noqa: E402
from vision.maniqa import MANIQANet  # noqa: E402
from vision.trainer import compute_metrics  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"full": {}, "mean pooling": {"weighted": False}, "no TAB": {"use_tab": False},
            "no SSTB": {"use_sstb": False}, "TAB reshape quirk": {"reshape_quirk": True}}


def predict(net, x):
    net.eval()
    with torch.no_grad():
        return torch.cat([net(x[i:i + 128]) for i in range(0, len(x), 128)])


def train(net, data, epochs, lr, seed):
    x, y = data.train.tensors
    xv, yv = data.valid.tensors
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * ((len(y) + 15) // 16)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    best, state = -2.0, None
    for _ in tqdm(range(epochs), leave=False, disable=not sys.stderr.isatty()):
        net.train()
        perm = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), 16):
            idx = perm[i:i + 16]
            xb = x[idx]
            flip = torch.rand(len(idx), generator=g) < 0.5                      # horizontal flip augmentation
            xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
            loss = F.mse_loss(net(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        srcc = compute_metrics(predict(net, xv), yv, ["srcc"], "regression")["srcc"]
        if srcc >= best:
            best, state = srcc, {k: v.clone() for k, v in net.state_dict().items()}
    net.load_state_dict(state)
    return net


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--split", default="reference")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = load_iqa_synthetic({"crop_size": 64, "source_scale": 0.5, "score": "ssim", "split_by": args.split,
                               "valid_ratio": 0.1, "test_ratio": 0.2, "split_seed": 20})
    xt, yt = data.test.tensors
    refs = {s: len(set(data.meta["reference"][s])) for s in ("train", "valid", "test")}
    print(f"synthetic IQA, split by {args.split}: images train {len(data.train)}, valid {len(data.valid)}, "
          f"test {len(data.test)}; references {refs}")
    nets = {}
    for name in args.variants.split(","):
        res = []
        for seed in range(args.seeds):
            torch.manual_seed(seed)
            net = MANIQANet(**VARIANTS[name])
            train(net, data, args.epochs, args.lr, seed)
            res.append(compute_metrics(predict(net, xt), yt, ["srcc", "plcc", "rmse"], "regression"))
            nets.setdefault(name, net)
        m = {k: np.mean([r[k] for r in res]) for k in res[0]}
        s = {k: np.std([r[k] for r in res]) for k in res[0]}
        print(f"{name:18s} test SRCC {m['srcc']:.4f} +- {s['srcc']:.4f}  PLCC {m['plcc']:.4f} +- {s['plcc']:.4f}  "
              f"RMSE {m['rmse']:.4f}  (seeds {args.seeds}, epochs {args.epochs})")
    if "full" in nets:
        plot(nets["full"], data, ROOT / "docs" / "img" / "maniqa_patch_weights.png")


def plot(net, data, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    xt, yt = data.test.tensors
    kinds = data.meta["distortion"]["test"]
    levels = data.meta["level"]["test"]
    picks = []
    for kind in ("none", "blur", "noise", "jpeg", "contrast"):
        idx = [i for i, (k, lv) in enumerate(zip(kinds, levels)) if k == kind and lv in (0, 4)]
        if idx:
            picks.append(idx[0])
    net.eval()
    with torch.no_grad():
        score, weights = net.forward_weights(xt[picks])
    fig, axes = plt.subplots(2, len(picks), figsize=(2.6 * len(picks), 5.4), squeeze=False)
    for c, i in enumerate(picks):
        axes[0, c].imshow((xt[i].permute(1, 2, 0).numpy() * 0.5 + 0.5).clip(0, 1))
        axes[0, c].set_title(f"{kinds[i]} L{levels[i]}\nSSIM {float(yt[i]):.2f} pred {float(score[c]):.2f}", fontsize=8)
        im = axes[1, c].imshow(weights[c].view(8, 8).numpy(), cmap="magma")
        axes[1, c].set_title("patch weights w_t", fontsize=8)
        fig.colorbar(im, ax=axes[1, c], fraction=0.046)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
