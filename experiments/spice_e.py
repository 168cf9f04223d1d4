"""Spice-E miniature: a guidance shape steers a pretrained digits DiT through cross-entity attention (issue #16).

The pretrained model is the class-conditional DiT of ``experiments/headhunter.py`` called with the null label
(the unconditional model). Every block is converted to cross-entity attention (W_q1 = W_q2 = W_q, Z = 0);
(a) the converted model's output is compared bit for bit with the pretrained one; (b) it is fine-tuned
through the Trainer with guidance g = 2x2-block abstraction of each training digit (label dropped with
p = 0.5, the paper's text dropout), then sampled with the null label and the guidance of each held-out test
digit. Structure fidelity = IoU(abstraction(sample), g); class accuracy = the CNN judge's accuracy w.r.t. the
digit the guidance came from. Baselines: the unconditional model, SDEdit (noise the guidance image to step
t0, denoise with the unconditional model), and (c) the ablations: a per-token (diagonal) Z instead of the
token mixer, and the guidance term added to the keys or to the values instead of the queries.

    .venv/bin/python experiments/spice_e.py [--dit saved/DiT-...] [--epochs 10] [--publish]
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

import vision.diffusion  # noqa: E402,F401
from graphattn.config import Config  # noqa: E402
from graphattn.results import RESULTS_DIR, Results, add_output_args  # noqa: E402
from graphattn.training import MemoryRun, Trainer, find_checkpoint, load_checkpoint  # noqa: E402
from vision.diffusion import judge as J  # noqa: E402
from vision.diffusion.dit import DiT  # noqa: E402
from vision.diffusion.images import grid_figure  # noqa: E402
from vision.diffusion.schedule import ddim_sample  # noqa: E402
from vision.diffusion.spice_e import SpiceE, SpiceTask, abstraction, iou  # noqa: E402

SCRIPT = "spice_e"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dit", default=str(RESULTS_DIR / "headhunter" / "dit.pt"),
                   help="the pretrained DiT (run folder with best.pt, or a checkpoint / state_dict file)")
    p.add_argument("--epochs", type=int, default=6, help="fine-tuning epochs")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--steps", type=int, default=10, help="DDIM steps (eta = 0)")
    p.add_argument("--sdedit", type=float, nargs="+", default=[0.5, 0.7], help="SDEdit start, fraction of T")
    p.add_argument("--eval-seeds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    add_output_args(p, SCRIPT)
    args = p.parse_args()
    torch.set_num_threads(1)
    out = Results.from_args(SCRIPT, args)
    t_start = time.time()

    config = Config("DiT", "digits-diffusion", config_dict={
        "epochs": args.epochs, "learning_rate": args.lr, "class_dropout": 0.5, "warmup_epochs": 1, "eval_step": args.epochs,
        "show_progress": True, "device": "cpu", "seed": args.seed, "log_level": "INFO"})
    task = SpiceTask(config)
    dit = DiT(config, task.data).eval()
    state = load_checkpoint(find_checkpoint(args.dit, "best.pt"))
    dit.load_state_dict(state.get("model", state))
    for prm in dit.parameters():
        prm.requires_grad_(False)
    xtr, ytr = task.data["train"]
    xte, yte = task.data["test"]
    cnn = J.load_or_train_judge(out.dir / "judge_cnn.pt", "cnn", xtr, ytr, seed=0)
    judge_acc = float(J.accuracy(cnn, xte, yte).mean())
    g_te = abstraction(xte)
    null = torch.full_like(yte, dit.null_class)

    # (a) conversion is exact
    gen = torch.Generator().manual_seed(0)
    xb, tb = torch.randn(64, 1, 8, 8, generator=gen), torch.randint(0, dit.schedule.timesteps, (64,), generator=gen)
    with torch.no_grad():
        converted = SpiceE(dit).eval()
        diff = float((converted(xb, tb, null[:64], g_te[:64]) - dit(xb, tb, null[:64])).abs().max())
    print(f"(a) conversion: max |SpiceE - pretrained| = {diff}")

    # (b) fine-tune through the Trainer: Spice-E and the two ablations (c)
    variants = {"Spice-E (full Z)": ("full", "query"), "Spice-E (diagonal Z)": ("diagonal", "query"),
                "guidance on keys (full Z)": ("full", "key"), "guidance on values (full Z)": ("full", "value")}
    models, ft = {}, {}
    for name, (mixing, inject) in variants.items():
        torch.manual_seed(args.seed)
        spice = SpiceE(dit, mixing, inject)
        for prm in spice.parameters():
            prm.requires_grad_(True)
        t0 = time.time()
        trainer = Trainer(config, SpiceTask(config, task.data), spice, run=MemoryRun())
        test = trainer.fit()
        models[name] = trainer.model.eval()
        ft[name] = {"test_mse": test["mse"], "seconds": round(time.time() - t0, 1)}
        print(f"fine-tuned {name}: test mse {test['mse']:.4f} in {ft[name]['seconds']} s")
    base_mse = task.evaluate(dit, "test")["mse"]

    T = dit.schedule.timesteps
    sdedit = {f"SDEdit t0={s:g}T": s for s in args.sdedit}
    shape = xte.shape

    def sample(method: str, seed: int):
        g = torch.Generator().manual_seed(seed)
        if method == "unconditional":
            return ddim_sample(lambda x, t: dit(x, t, null), dit.schedule, shape, args.steps, generator=g)
        if method.startswith("SDEdit"):
            t0 = int(round(sdedit[method] * T)) - 1
            noise = torch.randn(shape, generator=g)
            x_t0 = dit.schedule.q_sample(g_te, torch.full((len(yte),), t0), noise)
            steps = max(1, int(round(args.steps * (t0 + 1) / T)))
            return ddim_sample(lambda x, t: dit(x, t, null), dit.schedule, shape, steps, x_T=x_t0, start=t0)
        m = models[method]
        return ddim_sample(lambda x, t: m(x, t, null, g_te), m.schedule, shape, args.steps, generator=g)

    methods = ["unconditional"] + list(sdedit) + list(variants)
    seeds = [100 + i for i in range(args.eval_seeds)]
    rows, grids = [], {"guidance": g_te[:40]}
    for method in tqdm(methods, desc="sampling"):
        vals = {"iou": [], "accuracy": [], "ink": []}
        for s in seeds:
            x = sample(method, s)
            vals["iou"].append(float(iou(abstraction(x), g_te).mean()))
            vals["accuracy"].append(float(J.accuracy(cnn, x, yte).mean()))
            vals["ink"].append(float(J.ink(x).mean()))
            if s == seeds[0]:
                grids[method] = x[:40]
        row = {"method": method}
        for k, v in vals.items():
            a = np.array(v)
            row[k] = {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0, "per_seed": v}
        rows.append(row)
    real = {"iou": float(iou(abstraction(xte), g_te).mean()), "accuracy": judge_acc}

    print(f"\ntest guidance: {len(yte)} held-out digits, {len(seeds)} seeds, {args.steps} DDIM steps; "
          f"real test digits: IoU {real['iou']:.3f}, CNN accuracy {real['accuracy']:.3f}")
    print(f"{'method':28s} {'IoU':>14s} {'class accuracy':>16s} {'ink':>14s}")
    for r in rows:
        print(f"{r['method']:28s} " + " ".join(f"{r[k]['mean']:.3f}+-{r[k]['std']:.3f}".rjust(w)
                                                for k, w in (("iou", 14), ("accuracy", 16), ("ink", 14))))
    by = {r["method"]: r for r in rows}
    spice, uncond = by["Spice-E (full Z)"], by["unconditional"]
    best_sd = max((by[m] for m in methods if m.startswith("SDEdit")), key=lambda r: r["iou"]["mean"])
    checks = {
        "(a) converted output bit-identical to pretrained": diff == 0.0,
        "(b) Spice-E IoU > unconditional": spice["iou"]["mean"] > uncond["iou"]["mean"],
        "(b) Spice-E class accuracy > unconditional": spice["accuracy"]["mean"] > uncond["accuracy"]["mean"],
        f"(b) Spice-E IoU > best SDEdit ({best_sd['method']})": spice["iou"]["mean"] > best_sd["iou"]["mean"],
        f"(b) Spice-E class accuracy > SDEdit ({best_sd['method']})": spice["accuracy"]["mean"] > best_sd["accuracy"]["mean"],
        "(c) full token-mixing Z IoU >= diagonal Z": spice["iou"]["mean"] >= by["Spice-E (diagonal Z)"]["iou"]["mean"],
        "(c) guidance on queries IoU >= on keys": spice["iou"]["mean"] >= by["guidance on keys (full Z)"]["iou"]["mean"],
        "(c) guidance on queries class accuracy >= on keys": spice["accuracy"]["mean"] >= by["guidance on keys (full Z)"]["accuracy"]["mean"],
        "(c) guidance on queries IoU >= on values": spice["iou"]["mean"] >= by["guidance on values (full Z)"]["iou"]["mean"],
        "(c) guidance on queries class accuracy >= on values": spice["accuracy"]["mean"] >= by["guidance on values (full Z)"]["accuracy"]["mean"],
    }
    print("\nchecks:")
    for k, v in checks.items():
        print(f"  {k}: {v}")

    import matplotlib.pyplot as plt
    fig = grid_figure(grids, nrow=8)
    out.save_figure(fig, "samples.png")
    plt.close(fig)
    out.write_json("spice_e.json", {"config": vars(args), "conversion_max_abs_diff": diff, "pretrained_test_mse": base_mse,
                                    "finetune": ft, "judge_test_accuracy": judge_acc, "real_test": real, "rows": rows,
                                    "checks": checks, "seconds": round(time.time() - t_start, 1)},
                   seeds=[args.seed, *seeds])
    print(f"total {time.time() - t_start:.0f} s")


if __name__ == "__main__":
    main()
