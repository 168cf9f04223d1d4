"""Deconstructing Attention (Xue, Moosavi, Aletras, 2025) at CPU scale: validation perplexity of every token-mixer
variant relative to Standard, uniform and hybrid, hybrid-skip, and the attention indicators per layer.

    python experiments/deconstructing_attention.py [--steps 400 --dim 64 --context 64 ...] [--publish]

Every run trains ``DeconLM`` through the one Trainer (task ``decon_lm``) with the paper's optimiser: AdamW
(beta1 0.9, beta2 0.9999, eps 1e-8), linear warm-up + cosine decay, weight decay 0.1, gradient clip 1.0, peak
learning rate ``--lr``. Scaled down from the paper (and from the spec's 2-5k steps of batch 32, d_model 128,
context 128-256) so that the 12 runs fit in about half an hour on one shared CPU thread: the defaults are
4 layers, d_model 64, 4 heads, SwiGLU width 256, context 64 characters, batch 32, 400 steps (10 % warm-up).

Prints the perplexity table (valid and test, relative to Standard; hybrid-skip = the trained hybrid with its
variant mixers dropped at evaluation), the indicators table (per layer, heads averaged) and the spec's checks;
writes ``deconstructing_attention.json`` and ``deconstructing_attention.png``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import sequence  # noqa: E402,F401  (registers task decon_lm, DeconLM and the corpora)
from graphattn.config import Config  # noqa: E402
from graphattn.results import Results, add_output_args  # noqa: E402
from graphattn.training import Trainer  # noqa: E402
from sequence.deconstruct.indicators import LOG_BINS, model_indicators  # noqa: E402
from sequence.deconstruct.task import evaluate_lm  # noqa: E402

SCRIPT = "deconstructing_attention"
VARIANTS = ["standard", "mlp", "approximate", "nonapprox", "rndembqk", "staticembqk"]
NAMES = {"standard": "Standard", "mlp": "MLP", "approximate": "Approximate", "nonapprox": "Non-approximate",
         "rndembqk": "RndEmbQK", "fixedseqqk": "FixedSeqQK", "staticembqk": "StaticEmbQK"}
INDICATORS = ["entropy", "concentration", "head_diversity", "sink", "locfoc_0", "locfoc_1", "locfoc_2", "locfoc_3"]
# the paper's 500M Wiki PPL (Table 1), for the side-by-side column
PAPER_WIKI = {("standard", "uniform"): 38.1, ("mlp", "uniform"): 993.5, ("mlp", "hybrid"): 45.8,
              ("approximate", "uniform"): 47.9, ("approximate", "hybrid"): 39.4,
              ("nonapprox", "uniform"): 9e4, ("nonapprox", "hybrid"): 39.4, ("rndembqk", "uniform"): 84.8,
              ("rndembqk", "hybrid"): 39.3, ("fixedseqqk", "uniform"): 79.1, ("fixedseqqk", "hybrid"): 38.5,
              ("staticembqk", "uniform"): 79.9, ("staticembqk", "hybrid"): 38.7}


def run_config(args, variant: str, config: str) -> Config:
    epochs = args.epochs
    return Config("DeconLM", args.dataset, config_dict={
        "decon_variant": variant, "decon_config": config, "decon_layers": args.layers, "decon_dim": args.dim,
        "decon_heads": args.heads, "decon_ffn": args.ffn, "lm_context": args.context,
        "lm_eval_tokens": args.eval_tokens, "train_batch_size": args.batch, "epochs": epochs,
        "steps_per_epoch": max(1, args.steps // epochs), "warmup_epochs": 1, "learning_rate": args.lr,
        "seed": args.seed, "device": "cpu", "show_progress": sys.stderr.isatty(), "eval_batch_size": 128})


def train_one(args, variant: str, config: str, probe: torch.Tensor) -> dict:
    cfg = run_config(args, variant, config)
    t0 = time.perf_counter()
    trainer = Trainer.from_config(cfg)
    test = trainer.fit()                             # the best epoch's weights are in trainer.model
    model, task = trainer.model, trainer.task
    valid = evaluate_lm(model, task.windows["valid"], 128)
    row = {"variant": variant, "config": config, "params": sum(p.numel() for p in model.parameters()),
           "mixer_params": model.mixer_parameters(), "valid_loss": valid["loss"], "valid_ppl": valid["ppl"],
           "test_ppl": test["ppl"], "train_loss_last": trainer.history["train"][-1]["loss"],
           "best_epoch": trainer.best_epoch, "seconds": time.perf_counter() - t0,
           "variant_layers": model.variant_layers}
    ind = model_indicators(model, probe)
    row["indicators"] = {name: {k: v for k, v in d.items()} for name, d in ind.items()}
    if config == "hybrid" and variant != "standard":
        with model.skip_variant_layers():
            row["skip_valid_ppl"] = evaluate_lm(model, task.windows["valid"], 128)["ppl"]
            row["skip_test_ppl"] = evaluate_lm(model, task.windows["test"], 128)["ppl"]
    return row


def layer_summary(row: dict) -> list[dict]:
    """Per layer, heads averaged: the indicators and the logit maximum."""
    out = []
    for name, d in sorted(row["indicators"].items(), key=lambda kv: int(kv[0].split(".")[1])):
        layer = int(name.split(".")[1])
        rec = {"layer": layer, "mixer": "variant" if layer in row["variant_layers"] else "standard"}
        for k in INDICATORS:
            v = d[k]
            rec[k] = float(np.mean(v)) if isinstance(v, list) else float(v)
        rec["logit_max"] = d["logit_max"]
        out.append(rec)
    return out


def checks(rows: dict, hybrid_tol: float, far: float, collapse: float) -> list[dict]:
    std = rows[("standard", "uniform")]["valid_ppl"]
    rel = {key: r["valid_ppl"] / std for key, r in rows.items()}
    uni = {v: rel[(v, "uniform")] for v in VARIANTS if v != "standard" and (v, "uniform") in rel}
    out = []

    def check(name, ok, figures):
        out.append({"check": name, "pass": bool(ok), "figures": figures})

    if "mlp" in uni and "nonapprox" in uni:
        others = [uni[v] for v in uni if v not in ("mlp", "nonapprox")]
        check(f"uniform MLP and Non-approximate far worse (>= {far}x Standard and worse than every other uniform variant)",
              min(uni["mlp"], uni["nonapprox"]) >= far and (not others or min(uni["mlp"], uni["nonapprox"]) > max(others)),
              {"mlp": uni["mlp"], "nonapprox": uni["nonapprox"], "other_max": max(others) if others else None})
    if "approximate" in uni:
        best = min(uni, key=uni.get)
        check("Approximate closest to Standard among uniform variants", best == "approximate",
              {"approximate": uni["approximate"], "closest": best, "closest_rel": uni[best]})
    mids = [v for v in ("rndembqk", "staticembqk") if v in uni]
    if mids and "approximate" in uni and "mlp" in uni and "nonapprox" in uni:
        lo, hi = uni["approximate"], min(uni["mlp"], uni["nonapprox"])
        check("uniform RndEmbQK / StaticEmbQK between Approximate and MLP / Non-approximate",
              all(lo <= uni[v] <= hi for v in mids), {v: uni[v] for v in mids} | {"approximate": lo, "worst_min": hi})
    hyb = {v: rel[(v, "hybrid")] for v in VARIANTS if v != "standard" and (v, "hybrid") in rel}
    if hyb:
        check(f"every hybrid within {hybrid_tol:.0%} of Standard", all(x <= 1 + hybrid_tol for x in hyb.values()), hyb)
    skip = {v: rows[(v, "hybrid")]["skip_valid_ppl"] / std for v in hyb}
    if skip:
        check(f"hybrid-skip collapses (>= {collapse}x Standard)", all(x >= collapse for x in skip.values()), skip)
    if ("nonapprox", "uniform") in rows and ("nonapprox", "hybrid") in rows:
        lu = max(r["logit_max"] for r in layer_summary(rows[("nonapprox", "uniform")]))
        lh = max(r["logit_max"] for r in layer_summary(rows[("nonapprox", "hybrid")]))
        check("uniform Non-approximate has larger pre-softmax logits than hybrid (paper: > 1e3 vs < 10)", lu > lh,
              {"uniform_max": lu, "hybrid_max": lh})
    return out


def plot(rows: dict, out: Results, name: str = SCRIPT) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    std = rows[("standard", "uniform")]["valid_ppl"]
    variants = [v for v in VARIANTS if v != "standard"]
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.6))
    x = np.arange(len(variants))
    for off, (label, get) in zip((-0.27, 0.0, 0.27), (
            ("uniform", lambda v: rows.get((v, "uniform"), {}).get("valid_ppl")),
            ("hybrid", lambda v: rows.get((v, "hybrid"), {}).get("valid_ppl")),
            ("hybrid-skip", lambda v: rows.get((v, "hybrid"), {}).get("skip_valid_ppl")))):
        vals = [get(v) / std if get(v) is not None else np.nan for v in variants]
        axes[0].bar(x + off, vals, width=0.27, label=label)
    axes[0].axhline(1.0, color="k", lw=0.8, ls="--")
    axes[0].set_yscale("log")
    axes[0].set_xticks(x, [NAMES[v] for v in variants], rotation=20)
    axes[0].set_ylabel("valid perplexity / Standard")
    axes[0].set_title(f"Standard valid ppl = {std:.2f}")
    axes[0].legend()
    for ax, config in zip(axes[1:], ("uniform", "hybrid")):
        for v in VARIANTS:
            if (v, config) not in rows or v == "mlp":
                continue
            layers = layer_summary(rows[(v, config)])
            ax.plot([r["layer"] + 1 for r in layers], [r["logit_max"] for r in layers], marker="o", label=NAMES[v])
        ax.set_yscale("log")
        ax.set_xlabel("layer (1-based)")
        ax.set_ylabel("max |pre-softmax logit|")
        ax.set_title(f"{config}: logit maximum per layer")
        ax.legend(fontsize=8)
    fig.tight_layout()
    out.save_figure(fig, f"{name}.png")
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="shakespeare", help="shakespeare (downloaded once) or pcfg-lm (generated)")
    ap.add_argument("--variants", nargs="+", default=VARIANTS)
    ap.add_argument("--configs", nargs="+", default=["uniform", "hybrid"])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--epochs", type=int, default=10, help="evaluations during training (warm-up = 1 epoch)")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--ffn", type=int, default=256)
    ap.add_argument("--context", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (paper 4e-4 over 120k steps)")
    ap.add_argument("--eval-tokens", type=int, default=8192)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hybrid-tol", type=float, default=0.05)
    ap.add_argument("--far", type=float, default=1.25)
    ap.add_argument("--tag", default="", help="suffix of the output files (e.g. seed1 for a seed-noise rerun of a subset)")
    ap.add_argument("--collapse", type=float, default=2.0)
    add_output_args(ap, SCRIPT)
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Results.from_args(SCRIPT, args)
    if "standard" not in args.variants:
        args.variants = ["standard"] + args.variants

    probe_cfg = run_config(args, "standard", "uniform")
    from sequence.deconstruct.task import LMTask
    probe_task = LMTask(probe_cfg)
    probe = probe_task.windows["valid"][:16, :-1]

    rows: dict = {}
    for variant in args.variants:
        for config in args.configs:
            if variant == "standard" and config == "hybrid":
                continue                              # hybrid Standard is Standard
            print(f"== {NAMES[variant]} {config}", flush=True)
            row = train_one(args, variant, config, probe)
            rows[(variant, config)] = row
            print(f"   params {row['params']:,} (mixers {row['mixer_params']}), valid ppl {row['valid_ppl']:.3f}, "
                  f"test ppl {row['test_ppl']:.3f}" + (f", hybrid-skip valid ppl {row['skip_valid_ppl']:.3f}"
                                                       if "skip_valid_ppl" in row else "")
                  + f" [{row['seconds']:.0f} s]", flush=True)

    std = rows[("standard", "uniform")]
    print("\nValidation perplexity relative to Standard "
          f"(held-out play; Standard valid ppl {std['valid_ppl']:.3f}, test ppl {std['test_ppl']:.3f})")
    print("| variant | config | params | valid ppl | rel. valid | test ppl | rel. test | hybrid-skip valid ppl (rel.) | paper Wiki PPL (rel.) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    table = []
    for (variant, config), r in rows.items():
        rel_v, rel_t = r["valid_ppl"] / std["valid_ppl"], r["test_ppl"] / std["test_ppl"]
        skip = (f"{r['skip_valid_ppl']:.2f} ({r['skip_valid_ppl'] / std['valid_ppl']:.2f}x)"
                if "skip_valid_ppl" in r else "-")
        paper = PAPER_WIKI.get((variant, config))
        paper_s = f"{paper:g} ({paper / 38.1:.2f}x)" if paper else "-"
        print(f"| {NAMES[variant]} | {config} | {r['params']:,} | {r['valid_ppl']:.3f} | {rel_v:.3f} | "
              f"{r['test_ppl']:.3f} | {rel_t:.3f} | {skip} | {paper_s} |")
        table.append({"variant": variant, "config": config, "params": r["params"], "valid_ppl": r["valid_ppl"],
                      "rel_valid": rel_v, "test_ppl": r["test_ppl"], "rel_test": rel_t,
                      "skip_valid_ppl": r.get("skip_valid_ppl"), "skip_test_ppl": r.get("skip_test_ppl"),
                      "paper_wiki_ppl": paper})

    print("\nAttention indicators per layer (heads averaged; 16 validation windows; "
          "layer 1-based, * = variant layer)")
    print("| variant | config | layer | entropy | concentration | head div. | sink | LocFoc0 | LocFoc1 | LocFoc2 | LocFoc3 | max logit |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    ind_table = []
    for (variant, config), r in rows.items():
        for rec in layer_summary(r):
            star = "*" if rec["mixer"] == "variant" and variant != "standard" else ""
            print(f"| {NAMES[variant]} | {config} | {rec['layer'] + 1}{star} | " + " | ".join(
                f"{rec[k]:.3f}" for k in INDICATORS) + f" | {rec['logit_max']:.3g} |")
            ind_table.append({"variant": variant, "config": config, **rec})

    result_checks = checks(rows, args.hybrid_tol, args.far, args.collapse)
    print("\nChecks against the spec's expected pattern")
    for c in result_checks:
        figs = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in c["figures"].items())
        print(f"- [{'PASS' if c['pass'] else 'FAIL'}] {c['check']}: {figs}")

    name = SCRIPT + (f"_{args.tag}" if args.tag else "")
    plot(rows, out, name)
    payload = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "scaled": "4 layers, d_model 64, 4 heads, SwiGLU 256, context 64 chars, batch 32, steps as given "
                         "(paper: 6-24 layers, d 512-896, context 2048, batch 256, 120k steps)",
               "ppl_table": table, "indicator_table": ind_table, "checks": result_checks,
               "logit_hist_bins": LOG_BINS.tolist(),
               "runs": [{k: v for k, v in r.items()} for r in rows.values()]}
    out.write_json(f"{name}.json", payload, seeds=[args.seed])


if __name__ == "__main__":
    main()
