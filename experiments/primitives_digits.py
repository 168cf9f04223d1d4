"""Small digit models for the token/grid primitives: GNA, MoH and CARE (scikit-learn ``load_digits``).

    python experiments/primitives_digits.py --which na     # NA-ViT (k=3, 5, stride variants) vs full attention
    python experiments/primitives_digits.py --which moh    # MHA vs MoH 75% / 50% active heads (+ no balance loss)
    python experiments/primitives_digits.py --which care   # CARE-nano and its ablations
Options: --seeds 0,1,2 --epochs N --out DIR --publish. One thread. Each writes <out>/primitives_<which>.json
(and <out>/moh_usage.png) and prints a table; <out> defaults to results/primitives_digits/, and --publish also
copies the files into docs/results/primitives_digits/. Seeds can run as separate processes:
``--seeds 1 --tag s1`` writes a partial file into <out>, ``--merge`` combines the partial files found there
(use the same --out). Accuracy is the test accuracy at the epoch of best validation accuracy.

Models (ours; the papers give no digits recipe):
* NA-ViT: patch 1 on 8x8 (64 tokens, 3x3 convolutional tokenizer), width 64, 2 pre-LN blocks, 4 heads,
  MLP x2, learned positions, mean pooling; attention = ``NeighborhoodAttention`` (k x k window; k = 8 is full attention).
* MoH-ViT: patch 2 on 8x8 (16 tokens), width 64, 4 blocks, 8 heads; attention = ``MoHAttention``
  (MHA = ``GraphAttention``); balance loss coefficient 0.01 averaged over layers (MoH-DiT default).
* CARE-nano: ``vision.care.care_nano`` on 32x32 upsampled digits (stem 4 -> 8x8 tokens, widths 32/64).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from graphattn.attention import GraphAttention  # noqa: E402
from graphattn.attention.moh import MoHAttention  # noqa: E402
from graphattn.attention.neighborhood import NeighborhoodAttention  # noqa: E402
from graphattn.config import CORE_OVERALL, load_yaml  # noqa: E402
from graphattn.results import Results, add_output_args, read_result  # noqa: E402
from graphattn.training import MemoryRun, Task, Trainer  # noqa: E402
from vision.care import care_nano, count_macs  # noqa: E402


# ------------------------------------------------------------------------------------------------- data

def load_digits_splits(size: int, seed: int = 0):
    """Stratified 70/10/20 split of the 1,797 digits, standardised with the training statistics."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    bunch = load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    idx = np.arange(len(y))
    train, test = train_test_split(idx, test_size=0.2, stratify=bunch.target, random_state=seed)
    train, valid = train_test_split(train, test_size=0.125, stratify=bunch.target[train], random_state=seed)
    mean, std = x[train].mean(), x[train].std()
    x = (x - mean) / std
    return {name: (x[i], y[i]) for name, i in (("train", train), ("valid", valid), ("test", test))}


# ------------------------------------------------------------------------------------------------- models

class Block(nn.Module):
    def __init__(self, dim: int, attn: nn.Module, mlp_ratio: int = 2):
        super().__init__()
        self.norm1, self.norm2, self.attn = nn.LayerNorm(dim), nn.LayerNorm(dim), attn
        self.mlp = nn.Sequential(nn.Linear(dim, dim * mlp_ratio), nn.GELU(), nn.Linear(dim * mlp_ratio, dim))

    def forward(self, x):
        a = self.attn(self.norm1(x))
        aux = None
        if isinstance(a, tuple):                       # MoH returns (out, routing)
            a, aux = a
        x = x + a
        return x + self.mlp(self.norm2(x)), aux


class TinyViT(nn.Module):
    """Patch embedding -> blocks -> mean pool -> linear head; ``make_attn(i)`` builds block i's attention."""

    def __init__(self, image: int, patch: int, dim: int, depth: int, make_attn, num_classes: int = 10):
        super().__init__()
        # patch 1: a 3x3 convolutional tokenizer (as NAT uses) so that a pixel token carries its neighbourhood
        self.embed = (nn.Conv2d(1, dim, 3, padding=1) if patch == 1 else nn.Conv2d(1, dim, patch, stride=patch))
        n = (image // patch) ** 2
        self.pos = nn.Parameter(torch.randn(1, n, dim) * 0.02)
        self.blocks = nn.ModuleList([Block(dim, make_attn(i)) for i in range(depth)])
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, num_classes)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2) + self.pos
        routings = []
        for block in self.blocks:
            x, aux = block(x)
            if aux is not None:
                routings.append(aux)
        return self.head(self.norm(x).mean(1)), routings


class MoHRouted(nn.Module):
    """MoH attention that always returns its routing (for the balance loss and usage statistics)."""

    def __init__(self, dim, heads, shared, top_k):
        super().__init__()
        self.moh = MoHAttention(dim, heads, shared, top_k)

    def forward(self, x):
        return self.moh(x, return_routing=True)


# ------------------------------------------------------------------------------------------------- training

class DigitsTask(Task):
    """Cross entropy (plus ``balance_coeff`` x the MoH balance loss averaged over layers) on the in-memory
    digits, batches in the order of a generator seeded with ``seed``; judged by validation accuracy."""

    fused_optimizer = False   # torch's default kernel: the published figures were made with it

    metric = "acc"

    def __init__(self, config, data, balance_coeff: float, seed: int):
        super().__init__(config, data)
        self.balance_coeff = balance_coeff
        self.generator = torch.Generator().manual_seed(seed)

    def batches(self, phase):
        x, y = self.data["train"]
        size = int(self.config["train_batch_size"])
        perm = torch.randperm(len(y), generator=self.generator)
        return [(x[perm[i:i + size]], y[perm[i:i + size]]) for i in range(0, len(y), size)]

    def loss(self, model, batch, phase):
        x, y = batch
        out = model(x)
        logits, routings = out if isinstance(out, tuple) else (out, [])
        loss = F.cross_entropy(logits, y)
        if routings and self.balance_coeff > 0:
            loss = loss + self.balance_coeff * torch.stack([r.balance_loss for r in routings]).mean()
        return loss, {}


    def evaluate(self, model, split):
        return evaluate(model, self.data[split])

    def state_dict(self):
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state):
        self.generator.set_state(state["generator"])


def train_eval(model, data, epochs: int, lr: float = 2e-3, batch: int = 64, balance_coeff: float = 0.0,
               seed: int = 0) -> dict:
    """AdamW (weight decay 0.05) with the one-cycle schedule (10 % warm-up), validation accuracy every epoch;
    returns the test metrics (``test_<name>``) of the first epoch of best validation accuracy."""
    torch.manual_seed(seed)
    config = {**load_yaml(CORE_OVERALL), "epochs": epochs, "optimizer": "adamw", "learning_rate": lr,
              "weight_decay": 0.05, "scheduler": "onecycle", "train_batch_size": batch, "stopping_step": epochs,
              "device": "cpu", "show_progress": sys.stderr.isatty()}
    trainer = Trainer(config, DigitsTask(config, data, balance_coeff, seed), model, run=MemoryRun())
    trainer.schedules["train"].pct_start = 0.1
    t0 = time.perf_counter()
    test = trainer.fit()
    return {"valid": trainer.stopper.best, "epoch": trainer.best_epoch, **{f"test_{k}": v for k, v in test.items()},
            "train_seconds": time.perf_counter() - t0}


@torch.no_grad()
def evaluate(model, split) -> dict:
    model.eval()
    x, y = split
    out = model(x)
    logits, routings = out if isinstance(out, tuple) else (out, [])
    res = {"acc": float((logits.argmax(-1) == y).float().mean())}
    if routings:
        res["active_fraction"] = float(torch.stack([r.active_fraction for r in routings]).mean())
        # per layer: fraction of tokens whose top-K holds each routed head
        usage = []
        for r in routings:
            hr = r.probs.shape[-1]
            usage.append(F.one_hot(r.topk.reshape(-1, r.topk.shape[-1]), hr).sum(1).float().mean(0).tolist())
        res["usage"] = usage
        res["balance_loss"] = float(torch.stack([r.balance_loss for r in routings]).mean())
    return res


# ------------------------------------------------------------------------------------------------- studies

def study_na(seeds, epochs):
    data = load_digits_splits(8)
    dim, heads, depth = 64, 4, 2
    configs = [("full (k=8)", 8, 1), ("NA k=5", 5, 1), ("NA k=3", 3, 1), ("GNA k=4 s=2", 4, 2),
               ("blocked k=4 s=4", 4, 4)]
    rows = []
    for name, k, s in configs:
        accs = []
        for seed in seeds:
            torch.manual_seed(seed)
            model = TinyViT(8, 1, dim, depth, lambda i: NeighborhoodAttention(dim, heads, (8, 8), k, stride=s))
            accs.append(train_eval(model, data, epochs, seed=seed)["test_acc"])
        # attention MACs per image: q.k and a.v over each query's window, all layers
        window = NeighborhoodAttention(dim, heads, (8, 8), k, stride=s)._get("mask", torch.device("cpu")).sum()
        macs = int(2 * window * dim * depth)
        rows.append(summarise({"model": name, "kernel": k, "stride": s, "accs": accs, "attention_macs": macs}))
        print(format_row("na", rows[-1]))
    return {"rows": rows}


def study_moh(seeds, epochs):
    data = load_digits_splits(8)
    dim, heads, depth = 64, 8, 4
    configs = [("MHA", None, None, 0.01), ("MoH 75% (4 shared + 2 of 4)", 4, 2, 0.01),
               ("MoH 50% (2 shared + 2 of 6)", 2, 2, 0.01), ("MoH 50%, no balance loss", 2, 2, 0.0),
               ("MoH 50% routed only (0 + 4 of 8)", 0, 4, 0.01), ("MoH 50% routed only, no balance", 0, 4, 0.0)]
    rows = []
    for name, shared, top_k, coeff in configs:
        results = []
        for seed in seeds:
            torch.manual_seed(seed)
            if shared is None:
                make = lambda i: GraphAttention(dim, dim, heads)                      # noqa: E731
            else:
                make = lambda i, s=shared, k=top_k: MoHRouted(dim, heads, s, k)       # noqa: E731
            model = TinyViT(8, 2, dim, depth, make)
            results.append(train_eval(model, data, epochs, balance_coeff=coeff, seed=seed))
        row = {"model": name, "shared": shared, "top_k": top_k, "balance_coeff": coeff,
               "accs": [r["test_acc"] for r in results]}
        if shared is not None:
            row["active_fractions"] = [r["test_active_fraction"] for r in results]
            row["usages"] = [r["test_usage"] for r in results]                          # (seeds, layers, Hr)
            row["balance_losses"] = [r["test_balance_loss"] for r in results]
        rows.append(summarise(row))
        print(format_row("moh", rows[-1]))
    return {"rows": rows}


def summarise(row: dict) -> dict:
    """Means over seeds of the per-seed lists in ``row``."""
    row["acc_mean"], row["acc_std"] = float(np.mean(row["accs"])), float(np.std(row["accs"]))
    if row.get("usages"):
        row["usage"] = np.mean(row["usages"], axis=0).tolist()
        row["active_fraction"] = float(np.mean(row["active_fractions"]))
        row["balance_loss"] = float(np.mean(row["balance_losses"]))
    return row


def format_row(which: str, row: dict) -> str:
    text = f"{row['model']:34s} acc {row['acc_mean']:.4f} +- {row['acc_std']:.4f} (n={len(row['accs'])})"
    if which == "na":
        text += f"  attention MACs/image {row['attention_macs']:,}"
    elif which == "moh" and row.get("usage") is not None:
        text += f"  active {row['active_fraction']:.3f}  L_b {row['balance_loss']:.3f}"
    elif which == "care":
        text += f"  params {row['params']:,}  MACs {row['macs'] / 1e6:.2f}M"
    return text


def merge(which: str, out: Path) -> dict:
    """Combine per-run files ``primitives_<which>_<tag>.json`` (e.g. one per seed) into one result."""
    parts = sorted(out.glob(f"primitives_{which}_*.json"))
    if not parts:
        raise FileNotFoundError(f"no {out}/primitives_{which}_*.json to merge")
    merged, seeds, seconds, epochs = {}, [], 0.0, None
    for path in parts:
        part = read_result(path)
        seeds += part["seeds"]
        seconds += part["seconds"]
        if epochs not in (None, part["epochs"]):
            raise ValueError(f"{path}: epochs {part['epochs']} differ from the other runs ({epochs})")
        epochs = part["epochs"]
        for row in part["rows"]:
            if row["model"] not in merged:
                merged[row["model"]] = {k: v for k, v in row.items() if not isinstance(v, list) or k in
                                        ("accs", "usages", "active_fractions", "balance_losses")}
            else:
                for key in ("accs", "usages", "active_fractions", "balance_losses"):
                    if key in row:
                        merged[row["model"]][key] = merged[row["model"]][key] + row[key]
    rows = [summarise(r) for r in merged.values()]
    for r in rows:
        print(format_row(which, r))
    return {"rows": rows, "seeds": seeds, "epochs": epochs, "seconds": seconds, "merged_from": [p.name for p in parts]}


def _plot_usage(rows, out: Results, name: str):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    pairs = [r for r in rows if r.get("usage") is not None]
    fig, axes = plt.subplots(1, len(pairs), figsize=(3.0 * len(pairs), 3.2), squeeze=False)
    for ax, r in zip(axes[0], pairs):
        usage = np.asarray(r["usage"])                                  # (layers, Hr)
        hr = usage.shape[1]
        width = 0.8 / usage.shape[0]
        for layer in range(usage.shape[0]):
            ax.bar(np.arange(hr) + layer * width, usage[layer], width, label=f"layer {layer}")
        ax.axhline(r["top_k"] / hr, color="k", ls="--", lw=0.8)
        ax.set_title(r["model"], fontsize=7)
        ax.set_xlabel("routed head")
        ax.set_ylim(0, 1)
    axes[0][0].set_ylabel("fraction of tokens routed")
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    out.save_figure(fig, name, dpi=120)
    plt.close(fig)


def study_care(seeds, epochs):
    data = load_digits_splits(32)
    configs = [("CARE-nano (asymmetric)", {}), ("symmetric split (R)", {"split": "symmetric"}),
               ("no memory", {"memory": False}), ("no 2nd interaction", {"interaction2": False})]
    rows = []
    for name, kw in configs:
        accs = []
        for seed in seeds:
            torch.manual_seed(seed)
            model = care_nano(**kw)
            accs.append(train_eval(model, data, epochs, seed=seed)["test_acc"])
        model = care_nano(**kw).eval()
        params = sum(p.numel() for p in model.parameters())
        macs = count_macs(model, data["test"][0][:1])
        rows.append(summarise({"model": name, **kw, "accs": accs, "params": params, "macs": macs}))
        print(format_row("care", rows[-1]))
    return {"rows": rows}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--which", choices=["na", "moh", "care"], required=True)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tag", default=None, help="write primitives_<which>_<tag>.json (a partial run to merge)")
    parser.add_argument("--merge", action="store_true", help="combine the primitives_<which>_*.json partial runs")
    add_output_args(parser, "primitives_digits")
    args = parser.parse_args()
    out = Results.from_args("primitives_digits", args)
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    epochs = args.epochs
    t0 = time.perf_counter()
    if args.merge:
        result = merge(args.which, out.dir)
    else:
        print(f"{args.which}: seeds {seeds}, {epochs} epochs, {args.threads} thread(s)")
        if args.which == "na":
            result = study_na(seeds, epochs)
        elif args.which == "moh":
            result = study_moh(seeds, epochs)
        else:
            result = study_care(seeds, epochs)
        result.update({"seeds": seeds, "epochs": epochs, "seconds": time.perf_counter() - t0})
    name = f"primitives_{args.which}_{args.tag}.json" if args.tag and not args.merge else f"primitives_{args.which}.json"
    run_seeds = result.pop("seeds")              # recorded by write_json next to the command, git and machine
    out.write_json(name, result, seeds=run_seeds)
    if args.which == "moh" and not args.tag:
        _plot_usage(result["rows"], out, "moh_usage.png")
    print(f"{result['seconds']:.0f} s of training")


if __name__ == "__main__":
    main()
