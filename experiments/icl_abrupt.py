"""Abrupt in-context learning and induction-head formation (Reddy, ICLR 2024, arXiv 2312.03002).

Trains ``InductionNet`` (two single-head attention layers without 1/sqrt(d) or LayerNorm, 3-layer ReLU MLP
read-out, plain SGD, fresh bursty sequences every step) through the Trainer for several seeds, evaluating
every ``--eval-every`` steps: accuracy on the IC (novel classes), IC2 (flipped labels) and IW (non-bursty)
sets, the share of predictions that are a context label, and the two progress measures read with
``graphattn.interpret.capture_attention``: the layer-1 previous-token score (label token -> item before it)
and the layer-2 induction score (query -> label after the matching item). After training, causal checks
through ``graphattn.interpret``: ablate each layer's head, and activation-patch layer 1's output at the label
tokens from a clean run into a run whose context items were replaced (so the query's class is absent).

CPU scaling (stated in docs/results/icl.md): the spec's width-128 tokens, lr 0.01 and 150k-200k steps do not
fit; defaults use positions for Nmax = 8 (P = 17, tokens 17 + 63 = 80 wide), lr 0.1 (the default of the
author's ``update``; the training scripts pass 0.01) and a few thousand steps.

    .venv/bin/python experiments/icl_abrupt.py [--seeds 0 1 2] [--steps 6000] [--publish]
"""
from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sequence  # noqa: E402,F401  (registers task icl)
from graphattn.config import Config  # noqa: E402
from graphattn.interpret import ablate_heads, activation_patching  # noqa: E402
from graphattn.results import Results, add_output_args  # noqa: E402
from graphattn.training import Trainer  # noqa: E402
from sequence.icl.bursty_data import BurstyConfig, sample_bursty  # noqa: E402

SETS = ("ic", "ic2", "iw")
MEASURES = ("accuracy", "loss", "context_label", "prev_token", "induction")


def config_for(args, seed: int, tmp: str, **over) -> Config:
    values = {"epochs": max(1, args.steps // args.eval_every), "steps_per_epoch": args.eval_every, "seed": seed,
              "data_seed": 1000 + seed, "learning_rate": args.lr, "icl_max_pairs": args.max_pairs,
              "icl_classes": args.classes, "icl_labels": args.labels, "icl_burstiness": args.burstiness, "icl_p_bursty": args.p_bursty,
              "icl_p_novel": args.p_novel, "icl_eps": args.eps, "icl_valid_size": args.eval_size,
              "icl_test_size": args.test_size, "num_threads": 1, "device": "cpu", "checkpoint_dir": tmp,
              "log_level": "WARNING", "stopping_step": 10 ** 6, **over}
    return Config("InductionNet", "icl-bursty", config_dict=values)


def jump_step(steps, acc, threshold=0.5):
    """First logged step where IC accuracy exceeds ``threshold`` (None if never)."""
    for s, a in zip(steps, acc):
        if a > threshold:
            return s
    return None


def causal_checks(model, data, seed: int) -> dict:
    """Ablation and activation patching on fresh IC sequences."""
    cfg = data.config
    g = torch.Generator().manual_seed(10_000 + seed)
    ic_cfg = BurstyConfig(**{**cfg.__dict__, "burstiness": max(cfg.burstiness, 1), "p_bursty": 1.0, "p_novel": 1.0})
    clean = sample_bursty(ic_cfg, data.means, data.label_vectors, 2000, g)
    # corrupted: every context item replaced by a fresh random item (labels, positions and query kept), so the
    # query's class no longer appears in the context
    corrupt = {k: v.clone() for k, v in clean.items()}
    P = cfg.positions
    fresh = torch.randn(2000, cfg.num_pairs, cfg.dim, generator=g) / cfg.dim ** 0.5
    corrupt["tokens"][:, 0:-1:2, P:] = fresh
    target = clean["target"]

    def acc(logits):
        return float((logits.argmax(-1) == target).float().mean())

    model.eval()
    out = {}
    with torch.no_grad():
        out["clean_accuracy"] = acc(model(clean["tokens"]))
        for name, layer in (("layer1", model.layer1), ("layer2", model.layer2)):
            with ablate_heads(layer, [0]):
                out[f"ablate_{name}_accuracy"] = acc(model(clean["tokens"]))
    T = cfg.seq_len
    labels_mask = torch.zeros(1, T, 1, dtype=torch.bool)
    labels_mask[:, 1:-1:2] = True
    items_mask = torch.zeros(1, T, 1, dtype=torch.bool)
    items_mask[:, 0:-1:2] = True
    fwd = lambda m, b: m(b["tokens"])  # noqa: E731
    at_labels = activation_patching(model, clean, corrupt, ["layer1"], acc, where=labels_mask, forward=fwd)
    at_items = activation_patching(model, clean, corrupt, ["layer1"], acc, where=items_mask, forward=fwd)
    out["corrupted_accuracy"] = at_labels["corrupted"]
    out["patch_layer1_at_labels_accuracy"] = at_labels["layer1"]
    out["patch_layer1_at_items_accuracy"] = at_items["layer1"]
    return out


def run_seed(args, seed: int) -> dict:
    """Train one seed through the Trainer; its curves, final test metrics and causal checks."""
    torch.set_num_threads(1)
    print(f"--- seed {seed}: {args.steps} SGD steps at lr {args.lr}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer.from_config(config_for(args, seed, tmp))
        trainer.train()
    hist = [r for r in trainer.history["evaluations"] if r["split"] == "valid"]
    curves = {"step": [r["epoch"] * args.eval_every for r in hist],
              "train_loss": [r["loss"] for r in trainer.history["train"]]}
    for s in SETS:
        for m in MEASURES:
            curves[f"{s}_{m}"] = [r[f"{s}_{m}"] for r in hist]
    final = trainer.evaluate("test")       # the last weights on the test-size sets
    causal = causal_checks(trainer.model, trainer.task.data, seed)
    run = {"curves": curves, "final": final, "causal": causal, "jump_step": jump_step(curves["step"], curves["ic_accuracy"])}
    print(f"seed {seed}: final IC {final['ic_accuracy']:.3f} IC2 {final['ic2_accuracy']:.3f} IW {final['iw_accuracy']:.3f}; "
          f"IC > 0.5 first at step {run['jump_step']}", flush=True)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=6000, help="SGD steps per seed (paper: 150k-200k)")
    parser.add_argument("--eval-every", type=int, default=250, help="steps between evaluations (logging)")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--max-pairs", type=int, default=8, help="Nmax: positions 2 Nmax + 1 (paper: 32)")
    parser.add_argument("--classes", type=int, default=512, help="K")
    parser.add_argument("--labels", type=int, default=32, help="L (L = N = 8 tests the minimal model's prediction)")
    parser.add_argument("--jobs", type=int, default=1, help="seeds trained in parallel processes (one thread each)")
    parser.add_argument("--tag", default="", help="suffix of the output file names (icl_abrupt<tag>.json / .png)")
    parser.add_argument("--burstiness", type=int, default=1, help="B")
    parser.add_argument("--p-bursty", type=float, default=1.0, help="p_B")
    parser.add_argument("--p-novel", type=float, default=1.0, help="p_C")
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--eval-size", type=int, default=1000, help="sequences per set at every evaluation")
    parser.add_argument("--test-size", type=int, default=10000, help="sequences per set at the end")
    add_output_args(parser, "icl_abrupt")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Results.from_args("icl_abrupt", args)

    if args.jobs > 1:   # one process per seed, each at one thread
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(min(args.jobs, len(args.seeds))) as pool:
            results = pool.starmap(run_seed, [(args, seed) for seed in args.seeds])
    else:
        results = [run_seed(args, seed) for seed in args.seeds]
    runs = dict(zip(args.seeds, results))

    checks = {}
    print(f"\nsettings: {vars(args)}")
    print("\nseed  step  IC acc  ctx-label  prev-token  induction  (every 4th evaluation)")
    for seed, r in runs.items():
        c = r["curves"]
        for i in range(0, len(c["step"]), 4):
            print(f"{seed:<5} {c['step'][i]:<5} {c['ic_accuracy'][i]:.3f}   {c['ic_context_label'][i]:.3f}      "
                  f"{c['ic_prev_token'][i]:.3f}       {c['ic_induction'][i]:.3f}")
    print("\nseed  final IC  IC2    IW     jump step  ablate L1  ablate L2  corrupted  patch L1@labels  patch L1@items")
    for seed, r in runs.items():
        f, k = r["final"], r["causal"]
        print(f"{seed:<5} {f['ic_accuracy']:.3f}     {f['ic2_accuracy']:.3f}  {f['iw_accuracy']:.3f}  {str(r['jump_step']):<10} "
              f"{k['ablate_layer1_accuracy']:.3f}      {k['ablate_layer2_accuracy']:.3f}      {k['corrupted_accuracy']:.3f}      "
              f"{k['patch_layer1_at_labels_accuracy']:.3f}            {k['patch_layer1_at_items_accuracy']:.3f}")

    chance = 1 / args.labels
    for seed, r in runs.items():
        c = r["curves"]
        checks[f"seed {seed}: IC accuracy starts near chance (< 2/L at the first evaluation)"] = c["ic_accuracy"][0] < 2 * chance
        js = r["jump_step"]
        checks[f"seed {seed}: IC accuracy jumps above 0.5"] = js is not None
        if js is not None:
            i = c["step"].index(js)
            # abrupt: the last 0.25 -> 0.5+ crossing happens within 1000 steps
            below = [s for s, a in zip(c["step"][:i], c["ic_accuracy"][:i]) if a < 0.25]
            checks[f"seed {seed}: the jump from < 0.25 to > 0.5 takes <= 1000 steps"] = bool(below) and js - below[-1] <= 1000
            k = next((j for j in range(i) if c["ic_context_label"][j] > 0.5), None)
            checks[f"seed {seed}: context-label accuracy rises (> 0.5) before the jump"] = k is not None
            ind0 = c["ic_induction"][0]
            checks[f"seed {seed}: induction score rises with the jump (x2 from start by the jump step)"] = c["ic_induction"][i] > 2 * ind0
    payload = {"settings": vars(args) | {"out": None}, "runs": {str(s): r for s, r in runs.items()}, "checks": checks}
    print("\nchecks:")
    for k, v in checks.items():
        print(f"  [{'pass' if v else 'FAIL'}] {k}")
    out.write_json(f"icl_abrupt{args.tag}.json", payload, seeds=args.seeds)
    plot(out, runs, f"icl_abrupt{args.tag}.png")


def plot(out, runs, name: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(runs), 2, figsize=(13, 3.4 * len(runs)), squeeze=False)
    for row, (seed, r) in enumerate(runs.items()):
        c = r["curves"]
        ax = axes[row, 0]
        ax.plot(c["step"], c["ic_loss"], "k-", label="IC loss")
        ax.plot(c["step"], c["train_loss"], "k:", label="train loss")
        ax.set_ylabel(f"seed {seed}: loss")
        ax.set_xlabel("step")
        ax2 = ax.twinx()
        for key, style in (("ic_accuracy", "C0-"), ("ic2_accuracy", "C1-"), ("iw_accuracy", "C2-"),
                           ("ic_context_label", "C0--")):
            ax2.plot(c["step"], c[key], style, label=key)
        ax2.set_ylim(0, 1.02)
        ax2.set_ylabel("accuracy")
        lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
        ax.legend(lines, [ln.get_label() for ln in lines], fontsize=7, loc="center right")
        ax = axes[row, 1]
        ax.plot(c["step"], c["ic_prev_token"], "C3-", label="layer-1 previous-token score")
        ax.plot(c["step"], c["ic_induction"], "C4-", label="layer-2 induction score")
        ax.plot(c["step"], c["ic_accuracy"], "C0:", label="IC accuracy")
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    out.save_figure(fig, name)


if __name__ == "__main__":
    main()
