"""Sentence Attention Blocks on synthetic answer grounding (shapes on a canvas + templated questions).

Trains the multi-scale grounding CNN with four conditioning choices - SAB softmax gate (paper), sigmoid gate
(SE-style ablation), sentence concatenation (baseline) and no question (floor) - and reports on the test
scenes the mean IoU with the referred shape, the wrong-object IoU (with the distractor shapes), and the IoU
when the questions are shuffled across the batch (a grounded model must then lose the target). Writes
``docs/img/sab_masks.png``: one scene, a mask predicted for each shape asked about.

    .venv/bin/python experiments/sab.py [--epochs 10] [--train 2000] [--seeds 1]
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

from vision.datasets.shapes_grounding import QuestionEncoder, GroundingSet, make_scene, COLOURS, SHAPES  # noqa: E402
from vision.sab import SABGroundingNet, dice_loss, mask_iou  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def evaluate(net, ds, shuffle=False, bs=250):
    net.eval()
    ious, wrong = [], []
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for i in range(0, len(ds), bs):
            img, q, m = ds.images[i:i + bs], ds.embeddings[i:i + bs], ds.masks[i:i + bs]
            if shuffle:
                q = q[torch.randperm(len(q), generator=g)]
            pred = net(img, q)[:, 0] > 0
            ious.append(mask_iou(pred, m[:, 0] > 0))
            wrong.append(mask_iou(pred, m[:, 1] > 0))
    return float(torch.cat(ious).mean()), float(torch.cat(wrong).mean())


def train(net, train_set, valid_set, epochs, lr, seed):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * ((len(train_set) + 31) // 32)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    best, state = -1.0, None
    for _ in tqdm(range(epochs), leave=False, disable=not sys.stderr.isatty()):
        net.train()
        perm = torch.randperm(len(train_set), generator=g)
        for i in range(0, len(perm), 32):
            idx = perm[i:i + 32]
            logits = net(train_set.images[idx], train_set.embeddings[idx])
            target = train_set.masks[idx, :1]
            loss = F.binary_cross_entropy_with_logits(logits, target) + dice_loss(logits, target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        iou = evaluate(net, valid_set)[0]
        if iou >= best:
            best, state = iou, {k: v.clone() for k, v in net.state_dict().items()}
    net.load_state_dict(state)
    return net


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--gates", default="softmax,sigmoid,concat,none")
    args = ap.parse_args()
    torch.set_num_threads(1)
    enc = QuestionEncoder(64)
    train_set = GroundingSet(args.train, args.size, 0, enc)
    valid_set = GroundingSet(300, args.size, 1, enc)
    test_set = GroundingSet(args.test, args.size, 2, enc)
    frac = float(test_set.masks[:, 0].mean())
    print(f"scenes: train {len(train_set)}, valid {len(valid_set)}, test {len(test_set)}, "
          f"{args.size}x{args.size}; target covers {100 * frac:.1f}% of pixels")
    models = {}
    for gate in args.gates.split(","):
        rows = []
        for seed in range(args.seeds):
            torch.manual_seed(seed)
            net = SABGroundingNet(64, 3, (16, 32, 64, 128), gate=gate)
            train(net, train_set, valid_set, args.epochs, args.lr, seed)
            iou, wrong = evaluate(net, test_set)
            iou_s, wrong_s = evaluate(net, test_set, shuffle=True)
            rows.append((iou, wrong, iou_s, wrong_s))
            models.setdefault(gate, net)
        r = np.array(rows)
        print(f"gate {gate:8s} IoU {r[:, 0].mean():.3f}  wrong-object IoU {r[:, 1].mean():.3f}  | shuffled "
              f"questions: IoU {r[:, 2].mean():.3f}  wrong-object IoU {r[:, 3].mean():.3f}  (seeds {args.seeds})")
    if "softmax" in models:
        plot(models["softmax"], enc, args.size, ROOT / "docs" / "img" / "sab_masks.png")


def plot(net, enc, size, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rng = np.random.default_rng(7)
    image, _, _, _ = make_scene(rng, size)
    # ask about every (colour, shape) pair whose colour appears in the image
    present = [(c, s) for c in COLOURS for s in SHAPES]
    img = torch.from_numpy(image)[None]
    net.eval()
    preds = []
    with torch.no_grad():
        for c, s in present:
            q = f"where is the {c} {s}?"
            p = torch.sigmoid(net(img, enc(q)[None]))[0, 0].numpy()
            preds.append((q, p))
    preds.sort(key=lambda t: -t[1].max())
    shown = preds[:5]
    fig, axes = plt.subplots(1, 1 + len(shown), figsize=(2.4 * (1 + len(shown)), 2.8))
    axes[0].imshow(image.transpose(1, 2, 0))
    axes[0].set_title("scene")
    for ax, (q, p) in zip(axes[1:], shown):
        ax.imshow(p, vmin=0, vmax=1, cmap="gray")
        ax.set_title(q.replace("where is the ", "").rstrip("?"), fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.suptitle("SAB (softmax gate): predicted mask per question, same image")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
