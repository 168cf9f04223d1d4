"""Attention AT / iAT on the planted-cue sentiment task (Kitada & Iyatomi, https://arxiv.org/abs/2009.12064).

Trains a registered text classifier (BiLSTMAttn by default) through the Trainer with Vanilla, Attention RP,
Attention AT and Attention iAT (the perturbation on the pre-softmax scores, through the score hook), for
each training eps and seed, and measures on the test split: accuracy; the prediction flip rate and the
accuracy under a test-time worst-case score perturbation of norm ``--eps-test`` (one normalised gradient
step against the model's own prediction); the flip rate under a random permutation of the attention
weights over the real tokens; the Pearson correlation of attention with |gradient x embedding| saliency
(per sentence, averaged); and the attention mass on the cue (ground-truth) tokens.

    .venv/bin/python experiments/attention_at.py [--model BiLSTMAttn] [--eps 0.5 1 2 5] [--seeds 3] [--publish]

Sizes are reduced from the spec (20k train, 5-8 epochs) so that the grid fits a shared 2-core CPU: see
``--train-size`` and ``--epochs``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sequence  # noqa: E402,F401  (registers task text_classification)
from graphattn.config import Config  # noqa: E402
from graphattn.results import Results, add_output_args, read_result  # noqa: E402
from graphattn.training import MemoryRun, Trainer, seed_everything  # noqa: E402
from sequence.text.metrics import (cue_mass, pearson_rows, permutation_flips, readout_attention,  # noqa: E402
                                   saliency, worst_case_flips)
from sequence.text.planted_cue import generate_planted_cue  # noqa: E402
from sequence.text.task import TextClassificationTask  # noqa: E402

SCRIPT = "attention_at"
MODES = ("vanilla", "rp", "at", "iat")
LABELS = {"vanilla": "Vanilla", "rp": "Attention RP", "at": "Attention AT", "iat": "Attention iAT"}
METRICS = ("accuracy", "wc_flip", "wc_accuracy", "perm_flip", "pearson", "cue_mass")   # wc_*: at --eps-test[0]


def measure(model, data, eps_tests: list[float], seed: int, batch_size: int = 500) -> dict[str, float]:
    """The test-split metrics of the module docstring (``wc_flip`` / ``wc_accuracy`` at ``eps_tests[0]``,
    ``wc_flip@e`` at every ``e``)."""
    model.eval()
    split, gen = data.test, torch.Generator().manual_seed(10_000 + seed)
    sums = dict.fromkeys(METRICS + tuple(f"wc_flip@{e:g}" for e in eps_tests), 0.0)
    pearsons = []
    for index in torch.arange(len(split)).split(batch_size):
        batch = split.batch(index)
        with torch.no_grad():
            logits, attention = readout_attention(model, batch)
        label = batch["label"].bool()
        sums["accuracy"] += float(((logits > 0) == label).sum())
        for i, eps in enumerate(eps_tests):
            flipped, adv = worst_case_flips(model, batch, eps)
            sums[f"wc_flip@{eps:g}"] += float(flipped.sum())
            if i == 0:
                sums["wc_flip"] += float(flipped.sum())
                sums["wc_accuracy"] += float(((adv > 0) == label).sum())
        sums["perm_flip"] += float(permutation_flips(model, batch, gen)[0].sum())
        sums["cue_mass"] += float(cue_mass(attention, batch["cue"]).sum())
        pearsons.append(pearson_rows(attention, saliency(model, batch), batch["mask"]))
    out = {k: v / len(split) for k, v in sums.items()}
    out["pearson"] = float(torch.nanmean(torch.cat(pearsons)))
    return out


def train(model_name: str, data, mode: str, eps: float, seed: int, args) -> dict[str, float]:
    config = Config(model_name, "planted-cue", config_dict={
        "at_mode": mode, "at_epsilon": eps, "at_lambda": args.lam, "seed": seed, "epochs": args.epochs,
        "train_batch_size": args.batch_size, "learning_rate": args.lr, "stopping_step": args.epochs,
        "show_progress": False, "device": "cpu", "log_level": "WARNING"})
    seed_everything(seed, True)
    trainer = Trainer(config, TextClassificationTask(config, data), run=MemoryRun())
    trainer.fit()
    return {**measure(trainer.model, data, args.eps_test, seed), "best_epoch": trainer.best_epoch}


def summarise(rows: list[dict], eps_tests: list[float]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["mode"], r["eps"]), []).append(r)
    out = []
    for (mode, eps), rs in groups.items():
        entry = {"mode": mode, "eps": eps, "n": len(rs)}
        for m in METRICS + tuple(f"wc_flip@{e:g}" for e in eps_tests):
            values = np.array([r[m] for r in rs])
            entry[m], entry[f"{m}_std"] = float(values.mean()), float(values.std())
        out.append(entry)
    return out


def checks(summary: list[dict], eps_list: list[float]) -> list[dict]:
    """The spec's expectations, per training eps: AT / iAT keep accuracy (within 1 point of Vanilla) and beat
    both Vanilla and RP on worst-case flip rate (at most half of Vanilla's), permutation flip rate, correlation
    and cue mass."""
    by = {(s["mode"], s["eps"]): s for s in summary}
    van = by[("vanilla", 0.0)]
    out = []
    for eps in eps_list:
        rp = by[("rp", eps)]
        for mode in ("at", "iat"):
            s = by[(mode, eps)]
            out += [
                {"check": f"{mode} eps={eps}: accuracy >= vanilla - 0.01", "pass": s["accuracy"] >= van["accuracy"] - 0.01},
                {"check": f"{mode} eps={eps}: worst-case flip <= 0.5 x vanilla and < rp",
                 "pass": s["wc_flip"] <= 0.5 * van["wc_flip"] and s["wc_flip"] < rp["wc_flip"]},
                {"check": f"{mode} eps={eps}: permutation flip < vanilla and rp",
                 "pass": s["perm_flip"] < min(van["perm_flip"], rp["perm_flip"])},
                {"check": f"{mode} eps={eps}: pearson > vanilla and rp",
                 "pass": s["pearson"] > max(van["pearson"], rp["pearson"])},
                {"check": f"{mode} eps={eps}: cue mass > vanilla and rp",
                 "pass": s["cue_mass"] > max(van["cue_mass"], rp["cue_mass"])},
            ]
    return out


def table(summary: list[dict]) -> str:
    head = (f"{'mode':14s} {'eps':>4s}  {'accuracy':>13s}  {'wc flip':>13s}  {'wc acc':>13s}  {'perm flip':>13s}  "
            f"{'pearson':>13s}  {'cue mass':>13s}")
    lines = [head, "-" * len(head)]
    for s in summary:
        cells = "  ".join(f"{s[m]:.3f} +- {s[m + '_std']:.3f}" for m in METRICS)
        lines.append(f"{LABELS[s['mode']]:14s} {s['eps']:4.1f}  {cells}")
    return "\n".join(lines)


def plot(summary: list[dict], eps_list: list[float], title: str):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = {"accuracy": "test accuracy", "wc_flip": "flip rate, worst-case scores", "perm_flip":
             "flip rate, permuted attention", "pearson": "Pearson(attention, saliency)", "cue_mass":
             "attention mass on cue tokens"}
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.4))
    by = {(s["mode"], s["eps"]): s for s in summary}
    for ax, (m, name) in zip(axes, names.items()):
        van = by[("vanilla", 0.0)]
        ax.axhline(van[m], color="k", ls="--", label="Vanilla")
        ax.axhspan(van[m] - van[m + "_std"], van[m] + van[m + "_std"], color="k", alpha=0.08)
        for mode, color in (("rp", "tab:gray"), ("at", "tab:blue"), ("iat", "tab:red")):
            ys = np.array([by[(mode, e)][m] for e in eps_list])
            sd = np.array([by[(mode, e)][m + "_std"] for e in eps_list])
            ax.errorbar(eps_list, ys, yerr=sd, marker="o", color=color, capsize=3, label=LABELS[mode])
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(eps_list, [f"{e:g}" for e in eps_list])
        ax.set_xlabel("training eps")
        ax.set_title(name, fontsize=10)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def figure_title(model: str, n_seeds: int, eps_test: float) -> str:
    return f"{model} on planted-cue: Vanilla / RP / AT / iAT ({n_seeds} seeds, eps_test {eps_test:g})"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="BiLSTMAttn", help="registered text_classification model")
    ap.add_argument("--eps", type=float, nargs="+", default=[0.5, 1.0, 2.0, 5.0], help="training eps grid")
    ap.add_argument("--eps-test", type=float, nargs="+", default=[1.0, 5.0],
                    help="norms of the test-time worst-case score perturbation (the first is the one checked)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--train-size", type=int, default=4000, help="spec: 20000 (reduced for a 2-core CPU)")
    ap.add_argument("--eval-size", type=int, default=1000, help="valid and test sentences each (spec: 2000)")
    ap.add_argument("--epochs", type=int, default=4, help="spec: 5-8")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--lam", type=float, default=1.0, help="weight of the perturbed loss")
    ap.add_argument("--replot", type=Path, default=None, metavar="JSON",
                    help="only redraw the figure of a result JSON this script wrote (no training)")
    add_output_args(ap, SCRIPT)
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Results.from_args(SCRIPT, args)
    if args.replot is not None:
        saved = read_result(args.replot)
        fig = plot(saved["summary"], saved["settings"]["eps"], figure_title(saved["model"], len(saved["seeds"]),
                                                                         saved["settings"]["eps_test"][0]))
        out.save_figure(fig, f"{SCRIPT}_{saved['model']}.png")
        return

    data_config = Config(args.model, "planted-cue", config_dict={
        "train_size": args.train_size, "valid_size": args.eval_size, "test_size": args.eval_size})
    data = generate_planted_cue(data_config)
    print(data)
    runs = [("vanilla", 0.0)] + [(m, e) for e in args.eps for m in ("rp", "at", "iat")]
    seeds = list(range(args.seeds))
    rows, t0 = [], time.perf_counter()
    for seed in seeds:
        for mode, eps in tqdm(runs, desc=f"seed {seed}", file=sys.stderr):
            rows.append({"model": args.model, "mode": mode, "eps": eps, "seed": seed,
                         **train(args.model, data, mode, eps, seed, args)})
    minutes = (time.perf_counter() - t0) / 60
    summary = summarise(rows, args.eps_test)
    print(f"\n{args.model} on planted-cue ({args.train_size} train, {args.eval_size} test, {args.epochs} epochs, "
          f"seeds {seeds}; worst-case eps_test = {args.eps_test[0]}; mean +- std over seeds)")
    print(table(summary))
    extra = [f"wc_flip@{e:g}" for e in args.eps_test[1:]]
    for s in summary if extra else []:
        print(f"{LABELS[s['mode']]:14s} {s['eps']:4.1f}  " + "  ".join(f"{m} {s[m]:.3f} +- {s[m + '_std']:.3f}"
                                                                     for m in extra))
    results = checks(summary, args.eps)
    for c in results:
        print(f"[{'PASS' if c['pass'] else 'FAIL'}] {c['check']}")
    print(f"{sum(c['pass'] for c in results)}/{len(results)} checks pass; {minutes:.1f} min")
    name = f"{SCRIPT}_{args.model}"
    out.write_json(f"{name}.json", {"model": args.model, "settings": {k: v for k, v in vars(args).items()
                                                                      if k not in ("out", "publish")},
                                    "data": str(data), "minutes": round(minutes, 1), "rows": rows,
                                    "summary": summary, "checks": results}, seeds=seeds)
    fig = plot(summary, args.eps, figure_title(args.model, len(seeds), args.eps_test[0]))
    out.save_figure(fig, f"{name}.png")


if __name__ == "__main__":
    main()
