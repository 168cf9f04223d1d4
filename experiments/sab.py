"""Sentence Attention Blocks on synthetic answer grounding (shapes on a canvas + templated questions).

Trains the multi-scale grounding CNN with four conditioning choices - SAB softmax gate (paper), sigmoid gate
(SE-style ablation), sentence concatenation (baseline) and no question (floor) - and reports on the test
scenes the mean IoU with the referred shape, the wrong-object IoU (with the distractor shapes), and the IoU
when the questions are shuffled across the batch (a grounded model must then lose the target). Writes every
printed figure to ``<out>/sab.json`` and ``<out>/sab_masks.png``: one scene, a mask predicted for each shape asked
about (``<out>`` defaults to ``results/sab/``; ``--publish`` also copies both into ``docs/results/sab/``).

    .venv/bin/python experiments/sab.py [--epochs 10] [--train 2000] [--seeds 1] [--out DIR] [--publish]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graphattn.config import CORE_OVERALL, load_yaml  # noqa: E402
from graphattn.results import Results, add_output_args  # noqa: E402
from graphattn.training import MemoryRun, Task, Trainer  # noqa: E402

from vision.datasets.shapes_grounding import QuestionEncoder, GroundingSet, make_scene, COLOURS, SHAPES  # noqa: E402
from vision.sab import SABGroundingNet, dice_loss, mask_iou  # noqa: E402


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


class GroundingTask(Task):
    """Binary cross entropy plus Dice loss on the referred shape's mask; batches of 32 in the order of a
    generator seeded with ``seed``; judged by the validation IoU. ``data``: ``{"train": set, "valid": set}``."""

    fused_optimizer = False   # torch's default kernel: the published figures were made with it

    metric = "iou"

    def __init__(self, config, data, seed):
        super().__init__(config, data)
        self.generator = torch.Generator().manual_seed(seed)

    def batches(self, phase):
        ds, size = self.data["train"], int(self.config["train_batch_size"])
        perm = torch.randperm(len(ds), generator=self.generator)
        return [(ds.images[idx], ds.embeddings[idx], ds.masks[idx, :1])
                for idx in (perm[i:i + size] for i in range(0, len(perm), size))]

    def loss(self, model, batch, phase):
        images, questions, target = batch
        logits = model(images, questions)
        return F.binary_cross_entropy_with_logits(logits, target) + dice_loss(logits, target), {}


    def evaluate(self, model, split):
        iou, wrong = evaluate(model, self.data[split])
        return {"iou": iou, "wrong_iou": wrong}

    def state_dict(self):
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state):
        self.generator.set_state(state["generator"])


def train(net, train_set, valid_set, epochs, lr, seed):
    """AdamW (weight decay 1e-4), one-cycle schedule with 15 % warm-up; ``net`` ends with the weights of the
    (first) epoch of best validation IoU."""
    config = {**load_yaml(CORE_OVERALL), "epochs": epochs, "stopping_step": epochs, "optimizer": "adamw",
              "learning_rate": lr, "weight_decay": 1e-4, "scheduler": "onecycle", "train_batch_size": 32,
              "device": "cpu", "show_progress": sys.stderr.isatty()}
    trainer = Trainer(config, GroundingTask(config, {"train": train_set, "valid": valid_set}, seed), net, run=MemoryRun())
    trainer.schedules["train"].pct_start = 0.15
    trainer.train()
    net.load_state_dict(trainer.run.load("best.pt")["model"])
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
    add_output_args(ap, "sab")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Results.from_args("sab", args)
    enc = QuestionEncoder(64)
    train_set = GroundingSet(args.train, args.size, 0, enc)
    valid_set = GroundingSet(300, args.size, 1, enc)
    test_set = GroundingSet(args.test, args.size, 2, enc)
    frac = float(test_set.masks[:, 0].mean())
    print(f"scenes: train {len(train_set)}, valid {len(valid_set)}, test {len(test_set)}, "
          f"{args.size}x{args.size}; target covers {100 * frac:.1f}% of pixels")
    models = {}
    record = {"args": vars(args), "scenes": {"train": len(train_set), "valid": len(valid_set), "test": len(test_set)},
              "target_pixel_fraction": frac, "gates": {}}
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
        columns = ("iou", "wrong_iou", "shuffled_iou", "shuffled_wrong_iou")
        record["gates"][gate] = {"per_seed": [dict(zip(columns, row)) for row in rows],
                                 "mean": {c: float(r[:, j].mean()) for j, c in enumerate(columns)}}
    out.write_json("sab.json", record, seeds=list(range(args.seeds)))
    if "softmax" in models:
        plot(models["softmax"], enc, args.size, out, "sab_masks.png")


def plot(net, enc, size, out: Results, name: str):
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
    out.save_figure(fig, name, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
