"""HeadHunter and SoftPAG on a tiny class-conditional DiT trained on 8x8 digits (issue #16).

1. The DiT (``run.py --model DiT --dataset digits-diffusion``: 6 layers x 6 heads, width 96, T = 200, 10 %
   label dropout) is trained through the Trainer, or loaded from ``--dit`` (a run folder or checkpoint).
2. Two digits classifiers are trained once and cached: a CNN (the search objective) and an MLP (held out).
3. Per-head sweep: every one of the 36 heads perturbed alone (PAG, u = 1), change of the objectives
   (CNN confidence on the conditioned class; ink = stroke-thickness proxy) against no guidance, on M fixed
   class-seed pairs. This is HeadHunter's first round.
4. HeadHunter (greedy, k per round, ``--rounds`` rounds) for the quality objective and for the style
   objective (ink), against the best whole-layer PAG (chosen on the same search pairs) and no guidance,
   evaluated on held-out seeds: mean +- std over ``--eval-seeds`` seed groups.
5. SoftPAG sweep u in {0, .25, .5, .75, 1} on the HeadHunter quality set at fixed w: objective and
   pixel-intensity variance on the held-out seeds; is the trend monotone?

    .venv/bin/python experiments/headhunter.py [--dit saved/DiT-...] [--publish]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import vision.diffusion  # noqa: E402,F401  (registers the diffusion task, its dataset and DiT)
from graphattn.config import Config  # noqa: E402
from graphattn.results import Results, add_output_args  # noqa: E402
from graphattn.training import RunDir, Trainer, find_checkpoint, load_checkpoint  # noqa: E402
from vision.diffusion import judge as J  # noqa: E402
from vision.diffusion.guidance import GuidedEps  # noqa: E402
from vision.diffusion.images import grid_figure  # noqa: E402
from vision.diffusion.pag import SoftPAG, all_heads, head_hunter  # noqa: E402
from vision.diffusion.schedule import ddim_sample  # noqa: E402

SCRIPT = "headhunter"


def get_dit(args, out: Results):
    """The trained DiT: from --dit, from the cache in the output folder, or trained now through the Trainer."""
    over = {"epochs": args.dit_epochs, "show_progress": True, "device": "cpu", "num_threads": 1, "seed": args.dit_seed,
            "checkpoint_dir": str(out.dir / "dit_runs"), "log_level": "INFO"}
    config = Config("DiT", "digits-diffusion", config_dict=over)
    task = vision.diffusion.DiffusionTask(config)
    model = task.build_model()
    source = args.dit
    cached = out.dir / "dit.pt"
    meta_path = out.dir / "dit.json"
    if source is None and cached.exists() and json.loads(meta_path.read_text()).get("epochs") == args.dit_epochs:
        source = str(cached)
    if source is not None:
        path = find_checkpoint(source, "best.pt")
        state = load_checkpoint(path)
        model.load_state_dict(state.get("model", state))
        if source == str(cached):
            info = json.loads(meta_path.read_text())
        else:   # keep a copy beside the results (experiments/spice_e.py starts from it)
            info = {"source": str(path)}
            run_config = path.parent / "config.yaml"
            if run_config.exists():
                import yaml
                info["epochs"] = yaml.safe_load(run_config.read_text()).get("epochs")
            out.dir.mkdir(parents=True, exist_ok=True)
            from graphattn.io import atomic_open
            with atomic_open(cached) as f:
                torch.save(model.state_dict(), f)
            meta_path.write_text(json.dumps(info))
    else:
        start = time.time()
        with RunDir.create(config) as run:
            trainer = Trainer(config, task, model, run=run)
            test = trainer.fit()
            info = {"epochs": args.dit_epochs, "seed": args.dit_seed, "run": str(run.path), "test_mse": test["mse"],
                    "best_epoch": trainer.best_epoch, "train_seconds": round(time.time() - start, 1)}
        model = trainer.model
        from graphattn.io import atomic_open
        with atomic_open(cached) as f:
            torch.save(model.state_dict(), f)
        meta_path.write_text(json.dumps(info))
    if "test_mse" not in info:
        info["test_mse"] = task.evaluate(model.eval(), "test")["mse"]
    return model.eval(), task.data, info


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dit", default=None, help="trained DiT run folder (best.pt) or checkpoint; default: train it")
    p.add_argument("--dit-epochs", type=int, default=80)
    p.add_argument("--dit-seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=10, help="DDIM steps (eta = 0)")
    p.add_argument("--w", type=float, default=2.0, help="perturbation guidance scale")
    p.add_argument("--pairs", type=int, default=30, help="M class-seed pairs of the search")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--k", type=int, default=2)
    p.add_argument("--style-rounds", type=int, default=2)
    p.add_argument("--eval-seeds", type=int, default=5, help="held-out seed groups")
    p.add_argument("--eval-per-class", type=int, default=5)
    p.add_argument("--cfg", type=float, default=3.0, help="classifier-free guidance scale of the reference row")
    add_output_args(p, SCRIPT)
    args = p.parse_args()
    torch.set_num_threads(1)
    out = Results.from_args(SCRIPT, args)
    t_start = time.time()

    model, data, dit_info = get_dit(args, out)
    xtr, ytr = data["train"]
    xte, yte = data["test"]
    cnn = J.load_or_train_judge(out.dir / "judge_cnn.pt", "cnn", xtr, ytr, seed=0)
    mlp = J.load_or_train_judge(out.dir / "judge_mlp.pt", "mlp", xtr, ytr, seed=1)
    judges = {"cnn_test_accuracy": float(J.accuracy(cnn, xte, yte).mean()),
              "mlp_test_accuracy": float(J.accuracy(mlp, xte, yte).mean()),
              "real_test_ink": float(J.ink(xte).mean()), "real_test_pixel_variance": float(J.pixel_variance(xte).mean())}
    print(f"DiT: {dit_info}\njudges on real test digits: {judges}")

    shape = (1, model.image_size, model.image_size)

    def generate(heads, y, seed, w=args.w, u=1.0, cfg=1.0, impl="fast"):
        pert = SoftPAG(model, heads, u=u, impl=impl) if heads and w > 0 else None
        fn = GuidedEps(model, y, cfg_scale=cfg, pag_scale=w if pert else 0.0, perturbation=pert)
        return ddim_sample(fn, model.schedule, (len(y), *shape), args.steps, eta=0.0,
                           generator=torch.Generator().manual_seed(seed))

    # ---------------------------------------------------------------- search set: M class-seed pairs
    y_search = torch.arange(args.pairs) % 10
    cache: dict[frozenset, torch.Tensor] = {}
    bar = tqdm(desc="search generations", unit="set")

    def images(heads):
        key = frozenset(heads)
        if key not in cache:
            cache[key] = generate(sorted(key), y_search, seed=0)
            bar.update()
        return cache[key]

    quality = lambda heads: float(J.confidence(cnn, images(heads), y_search).mean())  # noqa: E731
    style = lambda heads: float(J.ink(images(heads)).mean())  # noqa: E731

    heads = all_heads(model)
    n_layers, n_heads = len(model.attention_layers()), model.attention_layers()[0].heads
    base_q, base_s = quality([]), style([])
    per_head = [{"layer": l, "head": h, "quality": quality([(l, h)]), "ink": style([(l, h)])} for l, h in heads]
    for r in per_head:
        r["d_quality"], r["d_ink"] = r["quality"] - base_q, r["ink"] - base_s
    layer_sets = {l: [(l, h) for h in range(n_heads)] for l in range(n_layers)}
    per_layer = [{"layer": l, "quality": quality(s), "ink": style(s)} for l, s in layer_sets.items()]
    best_layer_q = max(per_layer, key=lambda r: r["quality"])["layer"]
    best_layer_s = max(per_layer, key=lambda r: r["ink"])["layer"]

    hunt_q = head_hunter(quality, heads, rounds=args.rounds, k=args.k)
    hunt_s = head_hunter(style, heads, rounds=args.style_rounds, k=args.k)
    bar.close()
    dq = np.array([r["d_quality"] for r in per_head]).reshape(n_layers, n_heads)
    di = np.array([r["d_ink"] for r in per_head]).reshape(n_layers, n_heads)
    print(f"search: base quality {base_q:.4f}, ink {base_s:.4f}; per-head d_quality range "
          f"[{dq.min():+.4f}, {dq.max():+.4f}], within-layer std (mean over layers) {dq.std(1).mean():.4f}")
    print(f"HeadHunter quality: {hunt_q.selected} scores {hunt_q.set_scores}; style: {hunt_s.selected} {hunt_s.set_scores}")
    print(f"best whole layer (quality): {best_layer_q}; (ink): {best_layer_s}")

    # ---------------------------------------------------------------- held-out seeds
    y_eval = torch.arange(10).repeat_interleave(args.eval_per_class)
    seeds = [1000 + i for i in range(args.eval_seeds)]
    methods = {
        "no guidance": dict(heads=[]),
        f"CFG s={args.cfg:g} (reference)": dict(heads=[], cfg=args.cfg),
        "PAG all layers": dict(heads=heads),
        f"PAG best layer {best_layer_q} (quality)": dict(heads=layer_sets[best_layer_q]),
        "HeadHunter (quality)": dict(heads=hunt_q.selected),
        f"PAG best layer {best_layer_s} (ink)": dict(heads=layer_sets[best_layer_s]),
        "HeadHunter (ink)": dict(heads=hunt_s.selected),
    }
    us = [0.0, 0.25, 0.5, 0.75, 1.0]
    for u in us:
        methods[f"SoftPAG u={u:g} on HeadHunter (quality) set"] = dict(heads=hunt_q.selected, u=u)

    def metrics(x, y):
        return {"confidence": float(J.confidence(cnn, x, y).mean()), "accuracy": float(J.accuracy(cnn, x, y).mean()),
                "heldout_mlp_accuracy": float(J.accuracy(mlp, x, y).mean()), "ink": float(J.ink(x).mean()),
                "pixel_variance": float(J.pixel_variance(x).mean())}

    rows, grids = [], {}
    for name, kw in tqdm(methods.items(), desc="held-out evaluation"):
        per_seed = []
        for s in seeds:
            x = generate(y=y_eval, seed=s, **kw)
            per_seed.append(metrics(x, y_eval))
            if s == seeds[0]:
                grids[name] = x
        row = {"method": name, "heads": [list(h) for h in kw["heads"]], "u": kw.get("u", 1.0), "cfg": kw.get("cfg", 1.0),
               "w": 0.0 if not kw["heads"] else args.w}
        for m in per_seed[0]:
            vals = np.array([d[m] for d in per_seed])
            row[m] = {"mean": float(vals.mean()), "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0,
                      "per_seed": vals.tolist()}
        rows.append(row)

    def fmt(r, m):
        return f"{r[m]['mean']:.3f}+-{r[m]['std']:.3f}"

    cols = ["confidence", "accuracy", "heldout_mlp_accuracy", "ink", "pixel_variance"]
    print(f"\nheld-out: {len(seeds)} seed groups x {len(y_eval)} images, {args.steps} DDIM steps, w = {args.w}")
    print(f"{'method':48s} " + " ".join(f"{c:>16s}" for c in cols))
    for r in rows:
        print(f"{r['method']:48s} " + " ".join(f"{fmt(r, c):>16s}" for c in cols))

    by = {r["method"]: r for r in rows}
    sweep = [by[f"SoftPAG u={u:g} on HeadHunter (quality) set"] for u in us]

    def monotone(key):
        v = [r[key]["mean"] for r in sweep]
        d = np.diff(v)
        return {"values": v, "non_decreasing": bool((d >= 0).all()), "non_increasing": bool((d <= 0).all()),
                "spearman_vs_u": float(np.corrcoef(np.argsort(np.argsort(v)), np.arange(len(v)))[0, 1])}

    hh, none = by["HeadHunter (quality)"], by["no guidance"]
    layer_q = by[f"PAG best layer {best_layer_q} (quality)"]
    hh_s, layer_s = by["HeadHunter (ink)"], by[f"PAG best layer {best_layer_s} (ink)"]
    checks = {
        "per-head heterogeneity: within-layer spread of d_quality exceeds 0": float(dq.std(1).mean()),
        "HeadHunter(quality) confidence > no guidance (held-out)": hh["confidence"]["mean"] > none["confidence"]["mean"],
        "HeadHunter(quality) confidence > best whole-layer PAG (held-out)": hh["confidence"]["mean"] > layer_q["confidence"]["mean"],
        "HeadHunter(quality) held-out MLP accuracy >= no guidance": hh["heldout_mlp_accuracy"]["mean"] >= none["heldout_mlp_accuracy"]["mean"],
        "HeadHunter(ink) ink > no guidance (held-out)": hh_s["ink"]["mean"] > none["ink"]["mean"],
        "HeadHunter(ink) ink > best whole-layer PAG for ink (held-out)": hh_s["ink"]["mean"] > layer_s["ink"]["mean"],
        "SoftPAG u sweep: confidence monotone in u": None,
        "SoftPAG u sweep: pixel variance monotone in u": None,
    }
    mono = {k: monotone(k) for k in ("confidence", "pixel_variance", "ink", "heldout_mlp_accuracy")}
    checks["SoftPAG u sweep: confidence monotone in u"] = mono["confidence"]["non_decreasing"] or mono["confidence"]["non_increasing"]
    checks["SoftPAG u sweep: pixel variance monotone in u"] = mono["pixel_variance"]["non_decreasing"] or mono["pixel_variance"]["non_increasing"]
    print("\nu sweep (u = 0, .25, .5, .75, 1):")
    for k, v in mono.items():
        print(f"  {k:22s} " + " ".join(f"{x:.4f}" for x in v["values"]) +
              f"  monotone: {v['non_decreasing'] or v['non_increasing']}  spearman {v['spearman_vs_u']:+.2f}")
    print("\nchecks:")
    for k, v in checks.items():
        print(f"  {k}: {v}")

    # ---------------------------------------------------------------- figures
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for ax, mat, title in ((axes[0], dq, "change of CNN confidence"), (axes[1], di, "change of ink (thickness)")):
        lim = np.abs(mat).max()
        im = ax.imshow(mat, cmap="coolwarm", vmin=-lim, vmax=lim)
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_title(f"PAG on one head: {title}", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    out.save_figure(fig, "per_head.png")
    plt.close(fig)
    panel_names = ["no guidance", f"PAG best layer {best_layer_q} (quality)", "HeadHunter (quality)", "HeadHunter (ink)"]
    fig = grid_figure({n: grids[n] for n in panel_names}, nrow=10)
    out.save_figure(fig, "samples.png")
    plt.close(fig)
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    for ax, m in zip(axes, ("confidence", "pixel_variance", "ink")):
        mean = np.array([r[m]["mean"] for r in sweep])
        std = np.array([r[m]["std"] for r in sweep])
        ax.errorbar(us, mean, yerr=std, marker="o", capsize=3)
        ax.set_xlabel("SoftPAG strength u")
        ax.set_title(m, fontsize=9)
    fig.tight_layout()
    out.save_figure(fig, "u_sweep.png")
    plt.close(fig)

    payload = {
        "config": vars(args) | {"out": str(args.out) if args.out else None},
        "dit": dit_info, "judges": judges,
        "search": {"pairs": args.pairs, "base_quality": base_q, "base_ink": base_s, "per_head": per_head,
                   "per_layer": per_layer, "best_layer_quality": best_layer_q, "best_layer_ink": best_layer_s,
                   "headhunter_quality": {"selected": hunt_q.selected, "set_scores": hunt_q.set_scores,
                                          "evaluations": hunt_q.evaluations},
                   "headhunter_ink": {"selected": hunt_s.selected, "set_scores": hunt_s.set_scores,
                                      "evaluations": hunt_s.evaluations},
                   "within_layer_std_d_quality": dq.std(1).tolist(), "within_layer_std_d_ink": di.std(1).tolist()},
        "heldout": rows, "u_sweep": mono, "checks": checks, "seconds": round(time.time() - t_start, 1),
    }
    out.write_json("headhunter.json", payload, seeds=[args.dit_seed, 0, *seeds])
    print(f"total {time.time() - t_start:.0f} s")


if __name__ == "__main__":
    main()
