"""Circuit component reuse across tasks (Merullo, Eickhoff, Pavlick, ICLR 2024, arXiv 2310.08744), small scale.

Trains ``CircuitGPT`` (a GPT-2-style decoder from GraphAttention, scaled down; see its docstring) through the
Trainer on IOI-like, Colored-Objects-like (CO) and greater-than prompts, then, with
:func:`graphattn.interpret.path_patching` on ``--n`` prompts per task (clean vs the spec's corruption,
final position only, every other head frozen):

1. stage "logits": senders -> ``ln_f`` (the residual stream read by the unembedding): mover heads;
2. stage "movers": senders -> the queries of the stage-1 heads: inhibition heads;
3. stage "inhibition": senders -> the q / k / v of the stage-2 heads: duplicate / induction heads;
   a stage whose receivers sit in layer 0 has no sender below it and is left empty.
   Each stage keeps the top-k heads by |score| (score = (patched - clean) / (corrupt - clean) of the
   logit difference; Merullo et al. store -100 x this);
4. overlap |shared| / |union| of the per-task circuits (union over stages) for IOI-CO next to IOI-control and
   CO-control, for several k, with the expected overlap of random head sets of the same sizes;
5. intervention: the IOI inhibition heads' attention at CO's final position is replaced by 1/2 on each of
   the two incorrect colors of the scene (:func:`graphattn.interpret.replace_heads`); CO accuracy,
   mover-head attention to the right / wrong colors and mover direct logit attribution before and after,
   beside the same override on random heads of the same layers.

    .venv/bin/python experiments/circuit_reuse.py [--steps 4000] [--seed 0] [--checkpoint PATH] [--publish]

``--checkpoint PATH`` loads the model trained by an earlier run of this script (saved there when absent).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sequence  # noqa: E402,F401  (registers task circuits)
from graphattn.config import Config  # noqa: E402
from graphattn.interpret import attention_layers, capture_attention, head_outputs, path_patching, replace_heads  # noqa: E402
from graphattn.results import Results, add_output_args  # noqa: E402
from graphattn.training import Trainer  # noqa: E402
from sequence.circuits.data import TASKS, sample_task  # noqa: E402
from sequence.circuits.model import logit_diff  # noqa: E402

STAGES = ("logits", "movers", "inhibition")
SHORT = {"ioi": "IOI", "colored_objects": "CO", "greater_than": "control (greater-than)"}


def model_config(args) -> dict:
    return {"circ_layers": args.layers, "circ_heads": args.heads, "circ_dim": args.dim, "seed": args.seed,
            "learning_rate": args.lr, "steps_per_epoch": args.per_epoch,
            "epochs": max(1, args.steps // args.per_epoch), "num_threads": 1, "device": "cpu",
            "log_level": "WARNING", "circ_valid_size": 300, "circ_test_size": args.test_size,
            "circ_weight_greater_than": 0.5}


def train_or_load(args):
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Config("CircuitGPT", "circuit-mix", config_dict={**model_config(args), "checkpoint_dir": tmp})
        trainer = Trainer.from_config(cfg)
        if args.checkpoint is not None and args.checkpoint.exists():
            trainer.model.load_state_dict(torch.load(args.checkpoint, weights_only=True))
            print(f"loaded {args.checkpoint}")
        else:
            trainer.train()                       # the last weights (online training, fresh prompts each step)
            if args.checkpoint is not None:
                args.checkpoint.parent.mkdir(parents=True, exist_ok=True)
                torch.save(trainer.model.state_dict(), args.checkpoint)
        model = trainer.model.eval()
        test = trainer.task.evaluate(model, "test")
    return model, test


def head_label(name: str, h: int) -> str:
    return f"{name.split('.')[1]}.{h}"                          # blocks.<l>.attn -> "l.h"


def run_stages(model, batch, k: int, max_k: int) -> dict:
    """Path-patching scores of every stage and the top-``max_k`` heads by |score| per stage."""
    metric = lambda logits: logit_diff(logits[:, -1], batch)  # noqa: E731
    stages, receivers = {}, "ln_f"
    for stage in STAGES:
        heads_in = [] if isinstance(receivers, str) else receivers
        senders = None
        if heads_in:
            # every head below the highest receiver head, receivers excluded (the repo's "layers <= lowest
            # receiver layer" would leave a 2-layer model's stage empty as soon as one receiver is in layer 0)
            top_layer = max(int(r[0].split(".")[1]) for r in heads_in)
            own = {(r[0], r[1]) for r in heads_in}
            senders = [(n, h) for n, layer in attention_layers(model).items() if int(n.split(".")[1]) < top_layer
                       for h in range(layer.heads) if (n, h) not in own]
            if not senders:
                stages[stage] = {"scores": {}, "top": []}
                continue
        scores = path_patching(model, batch["tokens"], batch["corrupt"], receivers, metric, senders=senders)
        ranked = sorted(scores, key=lambda s: -abs(scores[s]))
        stages[stage] = {"scores": {head_label(*s): round(v, 4) for s, v in scores.items()},
                         "top": [head_label(*s) for s in ranked[:max_k]]}
        comps = ("q",) if stage == "logits" else ("q", "k", "v")
        receivers = [(s[0], s[1], c) for s in ranked[:k] for c in comps]
    return stages


def circuit(stages: dict, k: int) -> set[str]:
    return {h for st in stages.values() for h in st["top"][:k]}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / max(1, len(a | b))


def random_jaccard(n_heads: int, size_a: int, size_b: int, rng: np.random.Generator, draws: int = 2000) -> float:
    vals = [jaccard(set(rng.choice(n_heads, size_a, replace=False)), set(rng.choice(n_heads, size_b, replace=False)))
            for _ in range(draws)]
    return float(np.mean(vals))


def parse(label: str, layers: dict) -> tuple[str, int]:
    layer, h = label.split(".")
    return f"blocks.{layer}.attn", int(h)


@torch.no_grad()
def co_readouts(model, batch, override: list[tuple[str, int]], movers: list[tuple[str, int]]) -> dict:
    """CO accuracy, mover attention at the final token to the right / wrong colors, mover direct logit
    attribution, with ``override`` heads forced to 1/2 on each wrong color of the scene at the final token."""
    layers = attention_layers(model)
    pos = batch["color_positions"]                                               # (B, 3)
    slot = batch["answer_slot"]
    b = torch.arange(pos.shape[0])
    right = pos[b, slot]
    wrong_mask = torch.ones_like(pos, dtype=torch.bool)
    wrong_mask[b, slot] = False
    wrong = pos[wrong_mask].view(-1, 2)

    def forced(weights, info):
        new = weights.clone()
        new[:, :, -1, :] = 0.0
        new[b[:, None], :, -1, wrong] = 0.5
        return new

    from contextlib import ExitStack
    with ExitStack() as stack:
        by_layer: dict[str, list[int]] = {}
        for name, h in override:
            by_layer.setdefault(name, []).append(h)
        for name, heads in by_layer.items():
            stack.enter_context(replace_heads(layers[name], heads, forced))
        store = stack.enter_context(capture_attention(model))
        z = stack.enter_context(head_outputs(model, position=-1))
        final = {}
        handle = model.ln_f.register_forward_hook(lambda m, i, o: final.update(x=i[0][:, -1]))
        logits = model(batch["tokens"])[:, -1]
        handle.remove()
    acc = float((logits.argmax(-1) == batch["answer"]).float().mean())
    sigma = (final["x"].var(-1, unbiased=False) + model.ln_f.eps).sqrt()       # (B,)
    direction = (model.unembed.weight[batch["answer"]] - model.unembed.weight[batch["wrong"]]) * model.ln_f.weight
    out = {"accuracy": acc, "movers": {}}
    for name, h in movers:
        w = store[name][0][:, h, -1]                                             # (B, N)
        attn = model.get_submodule(name)
        dh = attn.message.value_dim
        write = z[name][:, h] @ attn.update.proj.weight[:, h * dh:(h + 1) * dh].T  # (B, D)
        dla = ((write - write.mean(-1, keepdim=True)) * direction).sum(-1) / sigma
        out["movers"][head_label(name, h)] = {
            "attn_right": float(w[b, right].mean()), "attn_wrong": float(w[b[:, None], wrong].sum(-1).mean() / 2),
            "logit_attribution": float(dla.mean())}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--per-epoch", type=int, default=250)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n", type=int, default=200, help="prompts per task for path patching")
    parser.add_argument("--test-size", type=int, default=1000)
    parser.add_argument("--k", type=int, default=2, help="heads per stage that define the next stage's receivers")
    parser.add_argument("--checkpoint", type=Path, default=None)
    add_output_args(parser, "circuit_reuse")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    out = Results.from_args("circuit_reuse", args)

    model, test = train_or_load(args)
    acc = {t: test[f"{t}_accuracy"] for t in TASKS}
    print("test accuracy: " + ", ".join(f"{SHORT[t]} {100 * a:.1f} %" for t, a in acc.items()))
    n_heads = args.layers * args.heads
    max_k = min(4, n_heads)

    g = torch.Generator().manual_seed(args.seed + 1)
    batches = {t: sample_task(t, args.n, g) for t in TASKS}
    stages = {}
    for t in TASKS:
        stages[t] = run_stages(model, batches[t], args.k, max_k)
        for s in STAGES:
            print(f"{SHORT[t]:>24} {s:>10}: top heads {stages[t][s]['top']}")

    rng = np.random.default_rng(args.seed)
    overlap_rows = []
    for k in range(1, max_k + 1):
        c = {t: circuit(stages[t], k) for t in TASKS}
        row = {"k": k}
        for a, b_ in (("ioi", "colored_objects"), ("ioi", "greater_than"), ("colored_objects", "greater_than")):
            key = f"{a}-{b_}"
            row[key] = {"shared": len(c[a] & c[b_]), "union": len(c[a] | c[b_]), "jaccard": jaccard(c[a], c[b_]),
                        "random_jaccard": random_jaccard(n_heads, len(c[a]), len(c[b_]), rng)}
        overlap_rows.append(row)
    print(f"\n{'k':>2} | {'IOI-CO':>14} | {'IOI-control':>14} | {'CO-control':>14} | random (IOI-CO sizes)")
    for row in overlap_rows:
        cells = [f"{row[p]['shared']}/{row[p]['union']} = {row[p]['jaccard']:.2f}"
                 for p in ("ioi-colored_objects", "ioi-greater_than", "colored_objects-greater_than")]
        print(f"{row['k']:>2} | " + " | ".join(f"{c:>14}" for c in cells)
              + f" | {row['ioi-colored_objects']['random_jaccard']:.2f}")

    # ---- intervention: IOI inhibition heads (stage "movers" of IOI) forced onto CO's wrong colors
    layers = attention_layers(model)
    inhibition = [parse(h, layers) for h in stages["ioi"]["movers"]["top"][:args.k]]
    movers = [parse(h, layers) for h in stages["colored_objects"]["logits"]["top"][:args.k]]
    co_test = sample_task("colored_objects", args.test_size, torch.Generator().manual_seed(args.seed + 2))
    before = co_readouts(model, co_test, [], movers)
    after = co_readouts(model, co_test, inhibition, movers)
    pool = [(n, h) for n in {x[0] for x in inhibition} for h in range(args.heads)]
    random_acc = []
    for _ in range(5):
        pick = [pool[i] for i in rng.choice(len(pool), min(len(inhibition), len(pool)), replace=False)]
        random_acc.append(co_readouts(model, co_test, pick, movers)["accuracy"])
    # IOI attention of the inhibition heads at the final token (role check: S2 vs IO)
    ioi = batches["ioi"]
    with torch.no_grad(), capture_attention(model) as store:
        model(ioi["tokens"])
    b = torch.arange(args.n)
    roles = {head_label(n, h): {r: float(store[n][0][b, h, -1, ioi["positions"][:, i]].mean())
                                for i, r in enumerate(("IO", "S1", "S2"))} for n, h in inhibition}
    print(f"\nIOI inhibition heads {[head_label(*x) for x in inhibition]}: IOI attention at the end {roles}")
    print(f"CO accuracy before {100 * before['accuracy']:.1f} % -> after {100 * after['accuracy']:.1f} % "
          f"(same override on random heads of those layers: {100 * np.mean(random_acc):.1f} +/- "
          f"{100 * np.std(random_acc):.1f} %)")
    for m in before["movers"]:
        x, y = before["movers"][m], after["movers"][m]
        print(f"  mover {m}: attention right {x['attn_right']:.3f} -> {y['attn_right']:.3f}, wrong "
              f"{x['attn_wrong']:.3f} -> {y['attn_wrong']:.3f}, logit attribution {x['logit_attribution']:.2f} -> "
              f"{y['logit_attribution']:.2f}")

    payload = {"config": vars(args) | {"checkpoint": str(args.checkpoint), "out": None},
               "test_accuracy": acc, "test_metrics": test, "stages": stages, "overlap": overlap_rows,
               "intervention": {"inhibition_heads": [head_label(*x) for x in inhibition],
                                "mover_heads": [head_label(*x) for x in movers], "before": before, "after": after,
                                "random_heads_accuracy": random_acc, "ioi_attention_of_inhibition_heads": roles},
               "checks": {"ioi_accuracy_gt_95": acc["ioi"] > 0.95, "co_accuracy_gt_60": acc["colored_objects"] > 0.60,
                          "overlap_ioi_co_gt_controls": all(
                              r["ioi-colored_objects"]["jaccard"] > max(r["ioi-greater_than"]["jaccard"],
                                                                        r["colored_objects-greater_than"]["jaccard"])
                              for r in overlap_rows),
                          "intervention_raises_co_accuracy": after["accuracy"] > before["accuracy"]}}
    out.write_json("circuit_reuse.json", payload, seeds=[args.seed])
    print("checks:", payload["checks"])
    plot(out, stages, args, before, after, random_acc)


def plot(out, stages, args, before, after, random_acc) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(TASKS), len(STAGES), figsize=(3.2 * len(STAGES), 2.4 * len(TASKS)), squeeze=False)
    for i, t in enumerate(TASKS):
        for j, s in enumerate(STAGES):
            grid = np.full((args.layers, args.heads), np.nan)
            for label, v in stages[t][s]["scores"].items():
                layer, h = map(int, label.split("."))
                grid[layer, h] = v
            ax = axes[i][j]
            lim = max(1e-3, np.nanmax(np.abs(grid))) if not np.all(np.isnan(grid)) else 1.0
            im = ax.imshow(grid, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
            ax.set_title(f"{SHORT[t].split(' ')[0]}: senders -> {s}", fontsize=8)
            ax.set_xlabel("head", fontsize=7)
            ax.set_ylabel("layer", fontsize=7)
            fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle("path-patching score (patched - clean) / (corrupt - clean), final token, others frozen", fontsize=9)
    fig.tight_layout()
    out.save_figure(fig, "path_patching.png")
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(4.5, 3))
    vals = [before["accuracy"], after["accuracy"], float(np.mean(random_acc))]
    ax.bar(["baseline", "IOI inhibition\nheads forced", "random heads\nforced"], [100 * v for v in vals],
           yerr=[0, 0, 100 * float(np.std(random_acc))], color=["grey", "tab:blue", "tab:orange"])
    ax.set_ylabel("CO accuracy (%)")
    ax.axhline(100 / 3, ls="--", c="k", lw=0.8)
    fig.tight_layout()
    out.save_figure(fig, "intervention.png")
    plt.close(fig)


if __name__ == "__main__":
    main()
