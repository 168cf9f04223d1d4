"""TCPA on a two-phase digits proxy: pretrain a tiny ViT on digits 0-4, freeze it, prompt-tune on 5-9.

Compares head-only, VPT-deep (shared prompts), R-TCPA (role split) and full TCPA (role split + per-token
top-k), each prompted method with the official post-softmax masking and with renormalised masking, over
several seeds; reports test accuracy, the prompt-attention diversity (mean pairwise JS distance between
patch tokens' attention rows over prompts) and the prompt-usage entropy of TCPA with and without the random
warm-up. Writes every printed figure to ``<out>/tcpa.json`` and the prompt attention to
``<out>/tcpa_prompt_attention.png`` (``<out>`` defaults to ``results/tcpa/``; ``--publish`` also copies both into
``docs/results/tcpa/``).

Two protocols. ``--protocol proxy`` (the default) is the first CPU proxy and reproduces its published figures:
pool 8, top-3, 16 VPT prompts, 20 epochs, batch 64, AdamW lr 0.01 without weight decay, one-cycle schedule,
5 epochs (25 %) of random selection, both maskings. ``--protocol spec`` follows the official TCPA scripts where
the CPU allows (``/work/shared/papers/tcpa.md``): pool 18 per role, top-10, prompt length 1, prompts at every
block, frozen backbone, linear head on CLS, AdamW lr 0.01 / weight decay 0.1 (the DTD script), batch 128, cosine
schedule, mixup, random selection for the first 10 % of the epochs, pull-loss weight 0.01, 100 epochs,
post-softmax (official) masking; VPT-deep gets one pool of 36 shared prompts (the same number of prompt tokens).
Every setting can be overridden (``--epochs``, ``--pool``, ...). ``--train-per-class N`` keeps only N training
images per class in the tuning phase (a low-shot transfer, where prompts have more to do). Besides the
attention-row diversity the script reports the feature diversity (mean pairwise cosine distance between the
last block's patch tokens, :func:`vision.tcpa.feature_diversity`), which top-k cannot raise mechanically.

    .venv/bin/python experiments/tcpa.py [--seeds 5] [--epochs 20] [--pretrain-epochs 40] [--out DIR] [--publish]
    .venv/bin/python experiments/tcpa.py --protocol spec --seeds 3 [--train-per-class 20] [--publish]
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graphattn.config import CORE_OVERALL, load_yaml  # noqa: E402
from graphattn.results import Results, add_output_args  # noqa: E402
from graphattn.training import MemoryRun, Task, Trainer  # noqa: E402

from graphattn.interpret import capture_attention  # noqa: E402
from vision.base import split_indices  # noqa: E402
from vision.tcpa import PromptedViT, feature_diversity, prompt_attention_diversity, usage_entropy  # noqa: E402
from vision.vit import SmallViT  # noqa: E402


#: the settings of each protocol (``None`` = the argument's own default)
PROTOCOLS = {
    "proxy": {"epochs": 20, "pool": 8, "topk": 3, "lr": 0.01, "weight_decay": 0.0, "batch_size": 64,
              "scheduler": "onecycle", "mixup": 0.0, "random_warmup_frac": 0.25,
              "maskings": "post_softmax,renormalized"},
    "spec": {"epochs": 100, "pool": 18, "topk": 10, "lr": 0.01, "weight_decay": 0.1, "batch_size": 128,
             "scheduler": "cosine", "mixup": 0.8, "random_warmup_frac": 0.1, "maskings": "post_softmax"},
}


def few_shot(data, per_class: int, seed: int = 0):
    """The first ``per_class`` examples of each class in a permutation seeded by ``seed``."""
    x, y = data
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    keep = torch.cat([perm[y[perm] == c][:per_class] for c in torch.unique(y)])
    return x[keep], y[keep]


def digits_phases(seed: int = 0):
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0).unsqueeze(1)
    x = (x - x.mean()) / x.std()
    y = torch.from_numpy(d.target.astype(np.int64))
    phases = {}
    for name, classes in (("pre", range(0, 5)), ("tune", range(5, 10))):
        keep = torch.isin(y, torch.tensor(list(classes)))
        xs, ys = x[keep], y[keep] - min(classes)
        tr, va, te = split_indices(len(ys), 0.1, 0.3, seed, labels=ys.numpy())
        phases[name] = {s: (xs[i], ys[i]) for s, i in (("train", tr), ("valid", va), ("test", te))}
    return phases


def accuracy(model, data, bs=512):
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(data[0][i:i + bs]).argmax(-1) for i in range(0, len(data[0]), bs)])
    return float((pred == data[1]).float().mean())


class DigitsTask(Task):
    """Cross entropy (plus ``aux`` times the prompts' pull loss when given) on the trainable parameters;
    batches of 64 in the order of a generator seeded with ``seed``; judged by the validation accuracy.
    ``data``: ``{"train": (x, y), "valid": (x, y), ...}``."""

    fused_optimizer = False   # torch's default kernel: the published figures were made with it

    metric = "accuracy"

    def __init__(self, config, data, seed, aux=None, mixup=0.0):
        super().__init__(config, data)
        self.generator = torch.Generator().manual_seed(seed)
        self.aux = aux
        self.mixup = float(mixup)

    def batches(self, phase):
        x, y = self.data["train"]
        size = int(self.config["train_batch_size"])
        perm = torch.randperm(len(y), generator=self.generator)
        return [(x[idx], y[idx]) for idx in (perm[i:i + size] for i in range(0, len(y), size))]

    def loss(self, model, batch, phase):
        x, y = batch
        if self.mixup > 0:
            # mixup (Zhang et al. 2018): x' = lam x + (1 - lam) x[perm], loss mixed with the same lam
            lam = float(torch.distributions.Beta(self.mixup, self.mixup).sample())
            perm = torch.randperm(len(y), generator=self.generator)
            x = lam * x + (1.0 - lam) * x[perm]

            def ce(logits):
                return lam * F.cross_entropy(logits, y) + (1.0 - lam) * F.cross_entropy(logits, y[perm])
        else:
            def ce(logits):
                return F.cross_entropy(logits, y)
        if self.aux is None:
            return ce(model(x)), {}
        logits, info = model.forward_info(x)
        return ce(logits) + self.aux * info["pull_loss"], {}


    def evaluate(self, model, split):
        return {"accuracy": accuracy(model, self.data[split])}

    def state_dict(self):
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state):
        self.generator.set_state(state["generator"])


def fit(model, data, epochs, lr, seed, wd=0.0, aux=None, batch_size=64, scheduler="onecycle", mixup=0.0):
    """AdamW on the trainable parameters, one-cycle schedule (or cosine) with 10 % warm-up, no early stopping;
    ``model`` ends with the weights of the last of the epochs of best validation accuracy (``best_on_tie: last``).
    ``mixup`` > 0: mixup with a Beta(mixup, mixup) mixing weight per batch."""
    config = {**load_yaml(CORE_OVERALL), "epochs": epochs, "stopping_step": epochs, "best_on_tie": "last",
              "optimizer": "adamw", "learning_rate": lr, "weight_decay": wd, "scheduler": scheduler,
              "train_batch_size": batch_size, "device": "cpu", "show_progress": sys.stderr.isatty()}
    if scheduler == "cosine":
        config["warmup_epochs"] = max(1, round(0.1 * epochs))
    trainer = Trainer(config, DigitsTask(config, data, seed, aux, mixup), model, run=MemoryRun())
    if scheduler == "onecycle":
        trainer.schedules["train"].pct_start = 0.1
    trainer.train()
    model.load_state_dict(trainer.run.load("best.pt")["model"])
    return model


def analyse(net, x):
    """Diversity of patch rows over prompts (mean over layers), the last layer's weights for the plot, the
    selections, and the feature diversity of the last block's patch tokens."""
    net.eval()
    last = {}
    hook = net.backbone.blocks[-1].register_forward_hook(lambda m, i, o: last.__setitem__("h", o))
    try:
        with torch.no_grad(), capture_attention(net) as store:
            _, info = net.forward_info(x)
    finally:
        hook.remove()
    weights = [store[k][0] for k in sorted(store)]
    div = (float(np.mean([prompt_attention_diversity(w, net.prompt_columns()) for w in weights]))
           if net.prompted else None)
    info["feature_diversity"] = feature_diversity(last["h"])
    return div, weights, info


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--protocol", choices=sorted(PROTOCOLS), default="proxy",
                    help="proxy: the first CPU proxy (default); spec: the official scripts' settings")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=None, help="tuning epochs (proxy 20, spec 100)")
    ap.add_argument("--pretrain-epochs", type=int, default=40)
    ap.add_argument("--pool", type=int, default=None, help="prompts per role pool (proxy 8, spec 18)")
    ap.add_argument("--topk", type=int, default=None, help="prompts each token selects (proxy 3, spec 10)")
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--weight-decay", type=float, default=None, help="proxy 0, spec 0.1")
    ap.add_argument("--batch-size", type=int, default=None, help="proxy 64, spec 128")
    ap.add_argument("--scheduler", choices=("onecycle", "cosine"), default=None)
    ap.add_argument("--mixup", type=float, default=None, help="mixup Beta alpha, 0 = off (proxy 0, spec 0.8)")
    ap.add_argument("--random-warmup-frac", type=float, default=None,
                    help="fraction of the tuning epochs with random top-k selection (proxy 0.25, spec 0.1)")
    ap.add_argument("--maskings", default=None, help="comma list of post_softmax, renormalized")
    ap.add_argument("--train-per-class", type=int, default=0, help="keep N tuning images per class (0 = all)")
    ap.add_argument("--no-warmup-study", action="store_true", help="skip the usage-entropy runs")
    ap.add_argument("--name", default=None, help="stem of the output files (default tcpa / tcpa_<protocol>[_<N>shot])")
    add_output_args(ap, "tcpa")
    args = ap.parse_args()
    for key, value in PROTOCOLS[args.protocol].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    maskings = [m.strip() for m in args.maskings.split(",") if m.strip()]
    bad = [m for m in maskings if m not in ("post_softmax", "renormalized")]
    if bad or not maskings:
        raise SystemExit(f"--maskings: expected post_softmax and/or renormalized, got {args.maskings!r}")
    stem = args.name or ("tcpa" if args.protocol == "proxy" and not args.train_per_class else
                         f"tcpa_{args.protocol}" + (f"_{args.train_per_class}shot" if args.train_per_class else ""))
    torch.set_num_threads(1)
    out = Results.from_args("tcpa", args)
    hp = {"wd": args.weight_decay, "batch_size": args.batch_size, "scheduler": args.scheduler, "mixup": args.mixup}

    phases = digits_phases(0)
    torch.manual_seed(0)
    vit = SmallViT(image_size=8, patch_size=2, dim=64, depth=4, heads=4, num_classes=5)
    fit(vit, phases["pre"], args.pretrain_epochs, 3e-3, 0, wd=0.05)
    pretrain_acc = accuracy(vit, phases["pre"]["test"])
    print(f"pretrained ViT on digits 0-4: test accuracy {pretrain_acc:.4f} "
          f"(train {len(phases['pre']['train'][1])}, test {len(phases['pre']['test'][1])})")
    if args.train_per_class:
        phases["tune"]["train"] = few_shot(phases["tune"]["train"], args.train_per_class)
    record = {"args": vars(args), "protocol": PROTOCOLS[args.protocol], "pretrain": {"test_accuracy": pretrain_acc, "train": len(phases["pre"]["train"][1]),
                                               "test": len(phases["pre"]["test"][1])},
              "runs": [], "warmup": []}
    tune = phases["tune"]
    # VPT has no masked prompt, so its two maskings are the same function (tests/vision/test_tcpa.py): run once
    runs = [("head", "-"), ("vpt", "-")] + [(m, k) for m in ("r_tcpa", "tcpa") for k in maskings]
    steps_per_epoch = (len(tune["train"][1]) + args.batch_size - 1) // args.batch_size
    warm_steps = round(args.random_warmup_frac * args.epochs) * steps_per_epoch
    print(f"protocol {args.protocol}: tuning on {len(tune['train'][1])} images, {args.epochs} epochs of "
          f"{steps_per_epoch} steps, pool {args.pool}, top-{args.topk}, random selection for {warm_steps} steps")
    results = {}
    x_probe = tune["test"][0][:64]
    probe_weights = {}
    for method, masking in runs:
        accs, divs, fdivs = [], [], []
        for seed in range(args.seeds):
            torch.manual_seed(100 + seed)
            net = PromptedViT(copy.deepcopy(vit), 5, method=method, pool_size=args.pool, topk=args.topk,
                              masking="post_softmax" if masking == "-" else masking,
                              random_warmup_steps=warm_steps if method == "tcpa" else 0)
            fit(net, tune, args.epochs, args.lr, seed, aux=0.01, **hp)
            accs.append(accuracy(net, tune["test"]))
            div, weights, info = analyse(net, x_probe)
            fdivs.append(info["feature_diversity"])
            if method != "head":
                divs.append(div)
                if seed == 0 and masking in ("post_softmax", "-"):
                    probe_weights[method] = (weights, net.prompt_columns(), net.pool_size, net.role_split)
        results[(method, masking)] = (accs, divs)
        div_s = f"{np.mean(divs):.3f} +- {np.std(divs):.3f}" if divs else "-"
        print(f"{method:7s} {masking:13s} acc {np.mean(accs):.4f} +- {np.std(accs):.4f} "
              f"(seeds {', '.join(f'{a:.3f}' for a in accs)})  diversity {div_s}  "
              f"feature diversity {np.mean(fdivs):.3f} +- {np.std(fdivs):.3f}")
        record["runs"].append({"method": method, "masking": masking, "accs": accs, "acc_mean": float(np.mean(accs)),
                               "acc_std": float(np.std(accs)), "diversities": divs,
                               "diversity_mean": float(np.mean(divs)) if divs else None,
                               "diversity_std": float(np.std(divs)) if divs else None,
                               "feature_diversities": fdivs, "feature_diversity_mean": float(np.mean(fdivs)),
                               "feature_diversity_std": float(np.std(fdivs))})

    # prompt usage entropy of TCPA with and without the random warm-up (seed 0, post-softmax)
    for warm in () if args.no_warmup_study else (0, warm_steps):
        torch.manual_seed(100)
        net = PromptedViT(copy.deepcopy(vit), 5, method="tcpa", pool_size=args.pool, topk=args.topk,
                          random_warmup_steps=warm)
        fit(net, tune, args.epochs, args.lr, 0, aux=0.01, **hp)
        _, _, info = analyse(net, tune["test"][0])
        ent_c = np.mean([usage_entropy(sel[0], args.pool) for sel in info["selections"]])
        ent_i = np.mean([usage_entropy(sel[1], args.pool) for sel in info["selections"]])
        acc = accuracy(net, tune["test"])
        print(f"tcpa random warm-up {warm:3d} steps: acc {acc:.4f}, usage entropy "
              f"cls-pool {ent_c:.3f}, image-pool {ent_i:.3f} (1 = uniform use of the {args.pool} prompts)")
        record["warmup"].append({"random_warmup_steps": warm, "acc": acc, "usage_entropy_cls_pool": float(ent_c),
                                 "usage_entropy_image_pool": float(ent_i)})

    out.write_json(f"{stem}.json", record, seeds=list(range(args.seeds)))
    plot(probe_weights, out, f"{stem}_prompt_attention.png")


def plot(probe, out: Results, name: str):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    methods = [m for m in ("vpt", "r_tcpa", "tcpa") if m in probe]
    fig, axes = plt.subplots(1, len(methods), figsize=(4.2 * len(methods), 3.8), squeeze=False)
    for ax, m in zip(axes[0], methods):
        weights, (a, b), P, role = probe[m]
        w = weights[-1][0].mean(0)[:, a:b].numpy()               # last layer, image 0, mean over heads: (N, P)
        im = ax.imshow(w, aspect="auto", cmap="magma")
        ax.set_title(f"{m}: last block, image 0")
        ax.set_xlabel("prompt key" + (" (cls | image)" if role else ""))
        ax.set_ylabel("query token (0 = CLS)")
        if role:
            ax.axvline(P - 0.5, color="w", lw=1)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle("Attention to prompts (post-softmax masking; head mean)")
    fig.tight_layout()
    out.save_figure(fig, name, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
