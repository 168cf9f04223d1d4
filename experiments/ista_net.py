"""ISTA-Net on the synthetic two-person interaction task: the three checks of the spec.

    .venv/bin/python experiments/ista_net.py [--epochs 15] [--train-size 2400] [--runs A,B,C,D,E]
        [--yaw-max RAD] [--idle-gestures] [--device cpu|cuda] [--out DIR] [--publish]

1. ISTA-Net (the paper's token layout: both entities inside every token, window [Tw, 1, 2], Entity
   Rearrangement on) should reach > 90 % top-1 on the test set (entities in random order).
2. The late-fusion baseline (per-entity encoder + concatenation) should be lower on the classes that only
   the relation between the entities defines (approach vs follow: both persons walk forwards, towards each
   other or the same way; with ``--idle-gestures`` also mirror vs idle, the same gestures in or out of phase).
3. Entity order at test time: accuracy on the canonical test clips (actor first) and on the same clips with
   the entities flipped, with and without Entity Rearrangement. With the paper's layout the network is
   exactly order-invariant (``max|dlogit|`` on flip ~ 1e-5); with entities in separate tokens
   (window [Tw, 1, 1], runs C/D) the order matters, and Entity Rearrangement is what removes the drop.

Runs: A ISTA-Net paper layout + ER, B late fusion + ER, C ISTA-Net entity tokens without ER, D the same
with ER, E ISTA-Net paper layout without ER. Models are the spec's SBU config scaled down (3 blocks of
16-32 channels, see ``vision/model/ISTANet.yaml``); by default one CPU thread. Prints per-epoch validation
accuracy and tables, writes ``results.json`` (after every run) and ``ista_net_per_class.png`` to ``<out>``
(default ``results/ista_net/``; ``--publish`` also copies them into ``docs/results/ista_net/``).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import vision  # noqa: E402,F401  (registers the vision task)
import vision.ista_net  # noqa: E402,F401
import vision.late_fusion_skeleton  # noqa: E402,F401
from graphattn.config import Config, parse_cli_overrides  # noqa: E402
from graphattn.registry import get_model  # noqa: E402
from graphattn.results import Results, add_output_args  # noqa: E402
from graphattn.training import MemoryRun, Trainer, seed_everything  # noqa: E402
from vision.base import VisionData  # noqa: E402
from vision.datasets.skeleton import (INTERACTION_CLASSES, SkeletonDataset, _meta,  # noqa: E402
                                      make_interactions, relational_classes, swap_entities)
from vision.task import VisionTask  # noqa: E402

RUNS = {
    "A": ("ISTA-Net, paper layout [Tw,1,2], ER", "ISTANet", {"entity_rearrangement": True}),
    "B": ("Late fusion, ER", "LateFusionSkeleton", {"entity_rearrangement": True}),
    "C": ("ISTA-Net, entity tokens [Tw,1,1], no ER", "ISTANet", {"window": [10, 1, 1], "entity_rearrangement": False}),
    "D": ("ISTA-Net, entity tokens [Tw,1,1], ER", "ISTANet", {"window": [10, 1, 1], "entity_rearrangement": True}),
    "E": ("ISTA-Net, paper layout [Tw,1,2], no ER", "ISTANet", {"entity_rearrangement": False}),
}


class SeededOrderTask(VisionTask):
    """The vision task with the training clips shuffled by a generator seeded with the config's seed, validation
    batches that leave torch's global generator alone (it draws Entity Rearrangement; a DataLoader draws a
    worker seed from it on every pass) and torch's default (unfused) AdamW: the batches, random draws and
    update these figures were made with."""

    fused_optimizer = False   # torch's default kernel: the published figures were made with it

    def __init__(self, config, data):
        super().__init__(config, data)
        loader = torch.utils.data.DataLoader
        self.generator = torch.Generator().manual_seed(int(config["seed"]))
        self.loaders["train"] = loader(data.train, batch_size=config["train_batch_size"], shuffle=True,
                                       collate_fn=data.collate_fn, generator=self.generator)
        self.loaders["valid"] = loader(data.valid, batch_size=config["eval_batch_size"], collate_fn=data.collate_fn,
                                       generator=torch.Generator())


    def state_dict(self):
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state):
        self.generator.set_state(state["generator"])


class EpochPrinter(MemoryRun):
    """An in-memory run that prints each epoch's mean training loss and validation accuracy."""

    def __init__(self, name: str):
        super().__init__()
        self.name = name

    def log_metrics(self, step, split, metrics):
        super().log_metrics(step, split, metrics)
        loss = self.history["train"][-1]["loss"]
        print(f"  {self.name} epoch {step}: loss {loss:.3f}  valid acc {metrics['accuracy']:.3f}", flush=True)


def train_model(name: str, overrides: dict, data: VisionData, epochs: int, seed: int, show: bool, device: torch.device):
    """AdamW with the config's rate, weight decay and linear warm-up then cosine decay per step; the model after
    the last epoch (validation accuracy is printed, nothing is selected)."""
    cfg = Config(name, "skeleton-interaction", config_dict={
        "optimizer": "adamw", "scheduler": "cosine", **overrides, "epochs": epochs, "seed": seed, "eval_step": 1,
        "stopping_step": epochs, "metrics": ["accuracy"], "valid_metric": "accuracy", "show_progress": show,
        "device": str(device)})
    seed_everything(seed, True)
    model = get_model(name)(cfg, data)
    trainer = Trainer(cfg, SeededOrderTask(cfg, data), model, run=EpochPrinter(name))
    trainer.train()
    return trainer.model, cfg


@torch.no_grad()
def predict(model, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    model.eval()
    device = next(model.parameters()).device
    return torch.cat([model(x[i:i + batch].to(device)).cpu() for i in range(0, len(x), batch)])


def per_class(pred: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    return {c: float((pred[y == k] == k).float().mean()) for k, c in enumerate(INTERACTION_CLASSES)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--train-size", type=int, default=2400)
    parser.add_argument("--valid-size", type=int, default=400)
    parser.add_argument("--test-size", type=int, default=1600)
    parser.add_argument("--runs", default="A,B,C,D", help="comma-separated subset of " + ",".join(RUNS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--yaw-max", type=float, default=None, help="override interaction_yaw_max (rad)")
    parser.add_argument("--idle-gestures", action="store_true",
                        help="harder variant: idle = mirror gestures out of phase (interaction_idle_gestures)")
    parser.add_argument("--model-set", action="append", default=[], metavar="KEY=VALUE",
                        help="model config override for every run, e.g. --model-set learning_rate=0.002")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu (default, one thread) or cuda")
    parser.add_argument("--progress", action="store_true")
    add_output_args(parser, "ista_net")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Results.from_args("ista_net", args)

    dcfg = Config("ISTANet", "skeleton-interaction")
    gen = dict(num_frames=dcfg["interaction_frames"], yaw_max=dcfg["interaction_yaw_max"], tilt_max=dcfg["interaction_tilt_max"],
               translation=dcfg["interaction_translation"], noise=dcfg["interaction_noise"])
    if args.yaw_max is not None:
        gen["yaw_max"] = args.yaw_max
    gen["idle_gestures"] = bool(args.idle_gestures or dcfg["interaction_idle_gestures"])
    relational = relational_classes(gen["idle_gestures"])
    t0 = time.time()
    x_tr, y_tr, _ = make_interactions(args.train_size, seed=3 * args.seed, swap_prob=0.0, **gen)
    x_va, y_va, _ = make_interactions(args.valid_size, seed=3 * args.seed + 1, swap_prob=0.5, **gen)
    x_te, y_te, _ = make_interactions(args.test_size, seed=3 * args.seed + 2, swap_prob=0.0, **gen)
    canon = torch.from_numpy(x_te)
    flipped = swap_entities(canon)
    mixed_mask = torch.from_numpy(np.random.default_rng(args.seed + 7).random(len(y_te)) < 0.5)
    mixed = torch.where(mixed_mask[:, None, None, None, None], flipped, canon)
    y_te = torch.from_numpy(y_te)
    train, valid = SkeletonDataset(x_tr, y_tr), SkeletonDataset(x_va, y_va)
    data = VisionData(train, valid, SkeletonDataset(mixed, y_te), num_classes=len(INTERACTION_CLASSES),
                      meta=_meta(train.x, INTERACTION_CLASSES))
    print(f"data: train {len(train)} (actor first), valid {len(valid)} and test {len(y_te)} (random order), "
          f"T={data.meta['num_frames']} J={data.meta['num_joints']} E={data.meta['num_entities']}, "
          f"generated in {time.time() - t0:.1f}s", flush=True)

    extra = parse_cli_overrides([f"--{kv}" for kv in args.model_set])
    print(f"device {args.device}, {torch.get_num_threads()} CPU thread(s)", flush=True)
    results = {}
    for key in args.runs.split(","):
        label, name, overrides = RUNS[key]
        t0 = time.time()
        print(f"[{key}] {label}", flush=True)
        model, cfg = train_model(name, {**overrides, **extra}, data, args.epochs, args.seed, args.progress, torch.device(args.device))
        pred_mixed, logits_canon, logits_flip = predict(model, mixed).argmax(-1), predict(model, canon), predict(model, flipped)
        res = {
            "label": label, "model": name, "window": cfg.get("window"), "entity_rearrangement": cfg["entity_rearrangement"],
            "params": sum(p.numel() for p in model.parameters()), "train_seconds": round(time.time() - t0, 1),
            "test_acc": float((pred_mixed == y_te).float().mean()),
            "canonical_acc": float((logits_canon.argmax(-1) == y_te).float().mean()),
            "flipped_acc": float((logits_flip.argmax(-1) == y_te).float().mean()),
            "max_logit_change_on_flip": float((logits_canon - logits_flip).abs().max()),
            "per_class": per_class(pred_mixed, y_te),
        }
        res["relational_acc"] = float(np.mean([res["per_class"][c] for c in relational]))
        res["other_acc"] = float(np.mean([v for c, v in res["per_class"].items() if c not in relational]))
        results[key] = res
        print(f"[{key}] test {res['test_acc']:.3f}  canonical {res['canonical_acc']:.3f}  flipped {res['flipped_acc']:.3f}  "
              f"max|dlogit| on flip {res['max_logit_change_on_flip']:.2e}  ({res['params']} params, {res['train_seconds']}s)", flush=True)
        out.write_json("results.json", {"args": vars(args), "generator": gen, "relational_classes": list(relational),
                                        "results": results}, seeds=[args.seed])

    print("\nTop-1 on the test set (entity order random), per class:")
    keys = list(results)
    print(f"{'class':<12}" + "".join(f"{k:>8}" for k in keys))
    for c in INTERACTION_CLASSES:
        tag = " *" if c in relational else ""
        print(f"{c + tag:<12}" + "".join(f"{results[k]['per_class'][c]:>8.3f}" for k in keys))
    for row, field in (("relational*", "relational_acc"), ("other", "other_acc"), ("all", "test_acc"),
                       ("canonical", "canonical_acc"), ("flipped", "flipped_acc")):
        print(f"{row:<12}" + "".join(f"{results[k][field]:>8.3f}" for k in keys))
    print("(* = defined only by the relation between the entities; generator: "
          + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in gen.items()) + ")")
    for k in keys:
        print(f"  {k}: {results[k]['label']}")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / max(1, len(keys))
    for i, k in enumerate(keys):
        ax.bar(np.arange(len(INTERACTION_CLASSES)) + i * width, [results[k]["per_class"][c] for c in INTERACTION_CLASSES],
               width, label=f"{k}: {results[k]['label']}")
    ax.set_xticks(np.arange(len(INTERACTION_CLASSES)) + 0.4 - width / 2)
    ax.set_xticklabels([c + (" *" if c in relational else "") for c in INTERACTION_CLASSES])
    ax.set_ylabel("top-1 accuracy")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title("Synthetic interactions (* = relational-only classes)")
    fig.tight_layout()
    out.save_figure(fig, "ista_net_per_class.png", dpi=100)
    return 0


if __name__ == "__main__":
    sys.exit(main())
