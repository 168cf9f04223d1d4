"""INFNet vs Shared-Bottom, MMoE and a DIN-style target-attention diagnostic on the spec's synthetic 3-task data.

    .venv/bin/python experiments/infnet_synthetic.py [--samples 30000] [--epochs 10] [--seeds 0 1 2]
        [--grid-lr 0.001 0.003] [--grid-dropout 0.0] [--grid-init 0.05 1.0] [--jobs 2] [--out DIR] [--publish]

Issue #20, in order:

1. Does the data carry the signals it plants? Per seed: the Bayes AUC (true logits), an oracle (logistic
   regression on the planted features: field cross, f4 effect, target-in-like, user-item affinity; see
   ``recsys/multitask/oracle.py``), a features-blind logistic regression on one-hot fields, the target item's
   popularity and the [target in like] indicator alone. Check: the oracle beats every trained model on every
   task by a clear margin (>= 0.02 AUC).
2. The target-attention diagnostic (``TargetAttention``): does a model whose candidate item queries the history
   learn the overlap task beyond item popularity (>= 0.02 AUC above it)?
3. The same tuning budget for every model: a grid ``--grid-lr`` x ``--grid-dropout`` x ``--grid-init`` (the
   embedding init std) trained on the first seed;
   each model keeps the grid point with the best validation score (the mean over tasks of each task's best
   validation AUC); ``INFNet-noTaskTok`` (the ablation) uses INFNet's point. Per-task early stopping: test
   AUC is measured at every evaluation and each task is read at its own best validation epoch ("per-task");
   the single checkpoint of the best validation mean AUC ("joint") is reported too. Training stops when no
   task's validation AUC improved for ``--stopping-step`` evaluations.
4. The spec's checks, mean +- std over the seeds: INFNet beats Shared-Bottom and MMoE on mean AUC; removing the
   task tokens hurts task 3 (``mixed``) the most.

Writes everything to ``<out>/infnet_synthetic.json`` and the bar chart ``<out>/infnet_synthetic.png``
(default ``results/infnet_synthetic/``; ``--publish`` copies both into ``docs/results/infnet_synthetic/``).
``--infnet JSON`` / ``--all JSON`` override keys of INFNet / every model; ``--define LABEL=MODEL:JSON`` adds a
variant (name it in ``--variants``); ``--curves`` prints validation AUC per epoch.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

import recsys.multitask  # noqa: E402,F401  (registers the task and models)
from graphattn.config import Config  # noqa: E402
from graphattn.registry import get_model  # noqa: E402
from graphattn.results import Results, add_output_args  # noqa: E402
from graphattn.training import Trainer, seed_everything  # noqa: E402
from recsys.multitask.data import synthetic_three_task  # noqa: E402
from recsys.multitask.metrics import auc  # noqa: E402
from recsys.multitask.oracle import blind_auc, in_like_auc, item_rate_auc, oracle_auc  # noqa: E402
from recsys.multitask.selection import PerTaskSelection, infnet_beats_baselines  # noqa: E402
from recsys.multitask.task import MultiTaskTask  # noqa: E402

MODELS = ("INFNet", "SharedBottom", "MMoE", "TargetAttention")
VARIANTS = {
    "INFNet": ("INFNet", {}),
    "INFNet-noTaskTok": ("INFNet", {"use_task_tokens": False}),
    "INFNet-printed": ("INFNet", {"gate_form": "sigmoid", "gate_proxies": "input", "residual": False}),
    "SharedBottom": ("SharedBottom", {}),
    "MMoE": ("MMoE", {}),
    "TargetAttention": ("TargetAttention", {}),
}
TUNED_LIKE = {"INFNet-noTaskTok": "INFNet", "INFNet-printed": "INFNet"}   # ablations reuse INFNet's grid point


def run_one(job: dict) -> dict:
    """Train one (seed, variant, grid point); test metrics at every evaluation, per-task and joint selection."""
    torch.set_num_threads(1)
    seed, model_name, tasks = job["seed"], job["model"], None
    data = synthetic_three_task(n_samples=job["samples"], seed=seed)
    tasks = data.tasks
    cfg = Config(model_name, "mtl-synthetic", config_dict={
        "epochs": job["epochs"], "stopping_step": job["stopping_step"], "show_progress": False, "seed": seed,
        **job["config"]})
    seed_everything(seed)
    model = get_model(model_name)(cfg, data)
    trainer = Trainer(cfg, MultiTaskTask(cfg, data), model, device="cpu")
    selection = PerTaskSelection(trainer, tasks, cfg["eval_batch_size"])
    t0 = time.time()
    joint = trainer.fit()
    seconds = time.time() - t0
    per_task, per_task_epoch = selection.result()
    trace, valid_per_task = selection.trace, selection.valid_score
    return {**{k: job[k] for k in ("seed", "variant", "model", "config")},
            "joint": {k: float(v) for k, v in joint.items()}, "per_task": per_task,
            "joint_epoch": trainer.best_epoch, "per_task_epoch": per_task_epoch,
            "valid_score": valid_per_task, "trace": trace, "seconds": seconds,
            "params": sum(p.numel() for p in model.parameters())}


def _line(r: dict, tasks: list[str]) -> str:
    pt, jt = r["per_task"], r["joint"]
    return (f"seed {r['seed']} {r['variant']:16s} {json.dumps(r['config'], sort_keys=True):38s} per-task "
            + "/".join(f"{pt[f'auc_{t}']:.3f}" for t in tasks) + f" mean {pt['mean_auc']:.4f} (epochs "
            + "/".join(str(r["per_task_epoch"][t]) for t in tasks) + ") joint "
            + "/".join(f"{jt[f'auc_{t}']:.3f}" for t in tasks) + f" mean {jt['mean_auc']:.4f} (epoch {r['joint_epoch']})"
            + f" valid {r['valid_score']:.4f} {r['seconds']:.0f}s")


def _run_all(jobs: list[dict], n_jobs: int, tasks: list[str], desc: str) -> list[dict]:
    out = []
    bar = tqdm(total=len(jobs), desc=desc, file=sys.stdout)
    if n_jobs > 1:
        os.environ["OMP_NUM_THREADS"] = "1"
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed
        with ProcessPoolExecutor(n_jobs, mp_context=mp.get_context("spawn")) as pool:
            for future in as_completed([pool.submit(run_one, j) for j in jobs]):
                out.append(future.result())
                bar.write(_line(out[-1], tasks))
                bar.update()
    else:
        for job in jobs:
            out.append(run_one(job))
            bar.write(_line(out[-1], tasks))
            bar.update()
    bar.close()
    return out


def _stats(runs: list[dict], key: str, tasks: list[str]) -> dict[str, list[float]]:
    cols = [f"auc_{t}" for t in tasks] + ["mean_auc"]
    return {c: [float(np.mean([r[key][c] for r in runs])), float(np.std([r[key][c] for r in runs]))] for c in cols}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=30000, help="impressions (spec-sized data: 60000)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--stopping-step", type=int, default=3,
                        help="evaluations in which no task's validation AUC improved before stopping")
    parser.add_argument("--grid-lr", type=float, nargs="+", default=[0.001, 0.003])
    parser.add_argument("--grid-dropout", type=float, nargs="+", default=[0.0])
    parser.add_argument("--grid-init", type=float, nargs="+", default=[0.05, 1.0],
                        help="embedding_init_std values (issue #20: the init scale decides whether attention sees item identity)")
    parser.add_argument("--infnet", default="{}", help='JSON config overrides for every INFNet variant')
    parser.add_argument("--all", default="{}", help="JSON config overrides for every model")
    parser.add_argument("--variants", nargs="+",
                        default=["INFNet", "INFNet-noTaskTok", "SharedBottom", "MMoE", "TargetAttention"])
    parser.add_argument("--define", nargs="*", default=[], metavar="LABEL=MODEL:JSON",
                        help='extra variants, e.g. INFNet-d32=INFNet:{"embedding_size": 32}; name them in --variants')
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel processes, 1 thread each")
    add_output_args(parser, "infnet_synthetic")
    args = parser.parse_args()
    torch.set_num_threads(1)
    variants = dict(VARIANTS)
    for spec in args.define:
        label, _, rest = spec.partition("=")
        model_name, _, js = rest.partition(":")
        if not label or model_name not in MODELS:
            raise ValueError(f"--define expects LABEL=MODEL:JSON with MODEL one of {MODELS}, got {spec!r}")
        variants[label] = (model_name, json.loads(js or "{}"))
    unknown = [v for v in args.variants if v not in variants]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; known: {sorted(variants)} (add more with --define)")
    common, infnet_extra = json.loads(args.all), json.loads(args.infnet)
    out = Results.from_args("infnet_synthetic", args)
    t_start = time.time()

    # 1. what the data carry
    references = {}
    for seed in args.seeds:
        data = synthetic_three_task(n_samples=args.samples, seed=seed)
        labels, logits = data.test.labels.numpy(), data.meta["oracle_logits"].numpy()
        ref = {"summary": data.summary(),
               "bayes_auc": {t: auc(labels[:, i], logits[:, i]) for i, t in enumerate(data.tasks)},
               "oracle_auc": oracle_auc(data), "blind_auc": blind_auc(data),
               "item_rate_auc": item_rate_auc(data), "in_like_auc": in_like_auc(data)}
        references[seed] = ref
        print(ref["summary"])
        for key in ("bayes_auc", "oracle_auc", "blind_auc", "item_rate_auc", "in_like_auc"):
            print(f"seed {seed} {key:14s} " + " ".join(f"{t} {a:.4f}" for t, a in ref[key].items()), flush=True)
    tasks = data.tasks

    def config_of(label: str, lr: float, dropout: float, init: float) -> dict:
        model_name, extra = variants[label]
        over = {**common, **(infnet_extra if model_name == "INFNet" else {}), **extra}
        return {"learning_rate": lr, "dropout": dropout, "embedding_init_std": init, **over}

    def point(config: dict) -> tuple[float, float, float]:
        return config["learning_rate"], config["dropout"], config["embedding_init_std"]

    def job(seed: int, label: str, config: dict) -> dict:
        return {"seed": seed, "variant": label, "model": variants[label][0], "config": config,
                "samples": args.samples, "epochs": args.epochs, "stopping_step": args.stopping_step}

    # 3. the same grid for every tuned model, on the first seed
    grid = list(itertools.product(args.grid_lr, args.grid_dropout, args.grid_init))
    tuned = [v for v in args.variants if v not in TUNED_LIKE or TUNED_LIKE[v] not in args.variants]
    first = args.seeds[0]
    grid_runs = _run_all([job(first, v, config_of(v, *p)) for v in tuned for p in grid], args.jobs, tasks,
                         f"grid {len(grid)} points x {len(tuned)} models, seed {first}")
    chosen = {}
    for v in tuned:
        best = max((r for r in grid_runs if r["variant"] == v), key=lambda r: r["valid_score"])
        chosen[v] = point(best["config"])
    for v in args.variants:
        if v not in chosen:
            chosen[v] = chosen[TUNED_LIKE[v]]
    print("chosen grid points (lr, dropout, embedding_init_std): " + ", ".join(f"{v} {c}" for v, c in chosen.items()), flush=True)

    # 4. every seed at the chosen point (the grid's first-seed runs are reused)
    runs = {v: [r for r in grid_runs if r["variant"] == v
                and point(r["config"]) == chosen[v]] for v in args.variants}
    rest = [job(s, v, config_of(v, *chosen[v])) for v in args.variants for s in args.seeds if not runs[v] or s != first]
    for r in _run_all(rest, args.jobs, tasks, "seeds at the chosen points"):
        runs[r["variant"]].append(r)
    for v in runs:
        runs[v].sort(key=lambda r: args.seeds.index(r["seed"]))

    summary = {v: {"per_task": _stats(rs, "per_task", tasks), "joint": _stats(rs, "joint", tasks)}
               for v, rs in runs.items()}
    ref_mean = {k: {t: float(np.mean([references[s][k][t] for s in args.seeds])) for t in tasks}
                for k in ("bayes_auc", "oracle_auc", "blind_auc", "item_rate_auc", "in_like_auc")}
    print(f"\nmean +- std over seeds {args.seeds} of test AUC ({args.samples} impressions, {args.epochs} epochs max)")
    for sel in ("per_task", "joint"):
        print(f"selection: {sel}")
        print(f"{'model':17s} " + " ".join(f"{t:>15s}" for t in tasks) + f" {'mean':>15s}")
        for v, s in summary.items():
            print(f"{v:17s} " + " ".join(f"{s[sel][c][0]:.4f}+-{s[sel][c][1]:.4f}" for c in
                                         [f"auc_{t}" for t in tasks] + ["mean_auc"]))
    for k, r in ref_mean.items():
        print(f"{k:17s} " + " ".join(f"{r[t]:15.4f}" for t in tasks) + f" {np.mean(list(r.values())):15.4f}")

    checks: dict = {}
    models_trained = [v for v in args.variants]
    margin = {v: {t: ref_mean["oracle_auc"][t] - summary[v]["per_task"][f"auc_{t}"][0] for t in tasks}
              for v in models_trained}
    checks["oracle_beats_every_model"] = bool(all(m >= 0.02 for mv in margin.values() for m in mv.values()))
    checks["oracle_margin"] = margin
    print(f"check data: oracle beats every trained model by >= 0.02 AUC on every task (smallest margin "
          f"{min(m for mv in margin.values() for m in mv.values()):.4f}): "
          f"{'PASS' if checks['oracle_beats_every_model'] else 'FAIL'}")
    if "TargetAttention" in summary:
        gain = summary["TargetAttention"]["per_task"]["auc_overlap"][0] - ref_mean["item_rate_auc"]["overlap"]
        checks["target_attention_overlap_above_popularity"] = gain
        print(f"check diagnostic: TargetAttention overlap AUC - item popularity AUC = {gain:+.4f}: "
              f"{'learns the overlap' if gain >= 0.02 else 'does not learn the overlap'}")
    if "INFNet" in summary:
        gain = summary["INFNet"]["per_task"]["auc_overlap"][0] - ref_mean["item_rate_auc"]["overlap"]
        checks["infnet_overlap_above_popularity"] = gain
        print(f"             INFNet overlap AUC - item popularity AUC = {gain:+.4f}")
    checks.update(infnet_beats_baselines(summary, "check 1"))
    if {"INFNet", "INFNet-noTaskTok"} <= set(summary):
        drop = {t: summary["INFNet"]["per_task"][f"auc_{t}"][0] - summary["INFNet-noTaskTok"]["per_task"][f"auc_{t}"][0]
                for t in tasks}
        worst = max(drop, key=drop.get)
        ok = worst == tasks[2] and drop[worst] > 0
        checks.update(auc_lost_without_task_tokens=drop, largest_loss_on=worst, largest_loss_on_mixed_task=bool(ok))
        print("check 2: AUC lost without task tokens: " + ", ".join(f"{t} {v:+.4f}" for t, v in drop.items())
              + f"; largest on {worst}: {'PASS' if ok else 'FAIL'} (expected a positive loss, largest on {tasks[2]})")
    seconds = time.time() - t_start
    print(f"total {seconds / 60:.1f} min")
    payload = {"args": vars(args), "tasks": tasks,
               "grid": {"learning_rate": args.grid_lr, "dropout": args.grid_dropout, "embedding_init_std": args.grid_init},
               "chosen": {v: {"learning_rate": c[0], "dropout": c[1], "embedding_init_std": c[2]} for v, c in chosen.items()},
               "references": references, "reference_mean": ref_mean, "summary": summary, "checks": checks,
               "grid_runs": grid_runs, "runs": [r for rs in runs.values() for r in rs], "seconds": seconds}
    out.write_json("infnet_synthetic.json", payload, seeds=args.seeds)

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(8, 3.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    bars = {**{v: [s["per_task"][f"auc_{t}"] for t in tasks] + [s["per_task"]["mean_auc"]] for v, s in summary.items()},
            "oracle (planted features)": [[ref_mean["oracle_auc"][t], 0.0] for t in tasks]
            + [[float(np.mean(list(ref_mean["oracle_auc"].values()))), 0.0]]}
    width = 0.8 / len(bars)
    for j, (k, r) in enumerate(bars.items()):
        ax.bar(np.arange(len(tasks) + 1) + j * width, [m for m, _ in r], width, yerr=[s for _, s in r], label=k)
    ax.set_xticks(np.arange(len(tasks) + 1) + 0.4 - width / 2, [*tasks, "mean"])
    ax.set_ylim(0.5, 1.0)
    ax.set_ylabel("test AUC (per-task selection)")
    ax.legend(fontsize="x-small", ncol=2)
    out.save_figure(fig, "infnet_synthetic.png", dpi=100)


if __name__ == "__main__":
    main()
