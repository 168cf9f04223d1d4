"""INFNet vs Shared-Bottom vs MMoE on the spec's synthetic three-task data, plus the "no task tokens" ablation.

    .venv/bin/python experiments/infnet_synthetic.py [--samples 60000] [--epochs 20] [--seeds 0 1 2] [--jobs 1]
        [--out DIR] [--publish]

Checks (INFNet spec): INFNet beats Shared-Bottom and MMoE on mean test AUC, and removing the task tokens
hurts task 3 (``mixed``, the negatively transferring task) the most. Prints per-task test AUC, train mean AUC
(to tell underfitting from overfitting), each task's best validation epoch, parameter counts, the oracle AUC
of the true logits, two reference scores (the target item's smoothed training label rate, i.e. what item
popularity alone gives, and the indicator [target in like sequence]) and PASS/FAIL per check; writes all of it
to ``<out>/infnet_synthetic.json`` and the bar chart to ``<out>/infnet_synthetic.png`` (default
``results/infnet_synthetic/``; ``--publish`` also copies both into ``docs/results/infnet_synthetic/``).

Every model uses its own defaults (INFNet.yaml, SharedBottom.yaml, MMoE.yaml, overall.yaml) and the same
data, epochs and early stopping (``--stopping-step``, default 5 evaluations as in the paper's protocol).
``--variants INFNet-printed`` adds INFNet with the printed v1 equations (sigmoid gate on the block-input
proxies, no residuals); ``--infnet JSON`` overrides keys of every INFNet variant, ``--all JSON`` of every
model; ``--define LABEL=MODEL:JSON`` adds a variant (name it in ``--variants``); ``--curves`` prints each run's
validation AUC per epoch; ``--jobs N`` runs the (seed, variant) trainings in N processes of one thread each.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import recsys.multitask  # noqa: E402,F401  (registers the task and models)
from graphattn.config import Config  # noqa: E402
from graphattn.registry import get_model  # noqa: E402
from graphattn.results import Results, add_output_args  # noqa: E402
from graphattn.training import Trainer, seed_everything  # noqa: E402
from recsys.multitask.data import synthetic_three_task  # noqa: E402
from recsys.multitask.metrics import auc  # noqa: E402
from recsys.multitask.task import MultiTaskTask, evaluate_split  # noqa: E402

VARIANTS = {
    "INFNet": ("INFNet", {}),
    "INFNet-noTaskTok": ("INFNet", {"use_task_tokens": False}),
    "INFNet-printed": ("INFNet", {"gate_form": "sigmoid", "gate_proxies": "input", "residual": False}),
    "SharedBottom": ("SharedBottom", {}),
    "MMoE": ("MMoE", {}),
}


def in_like(split) -> np.ndarray:
    """1.0 where the target item (field ``item_id``) occurs in the ``like`` sequence."""
    return (split.seq[1] == split.cat[:, 1:2]).any(1).double().numpy()


def item_rate_auc(data, smoothing: float = 5.0) -> list[float]:
    """Test AUC per task of the target item's smoothed training label rate (what item popularity alone gives)."""
    items, test_items = data.train.cat[:, 1].numpy(), data.test.cat[:, 1].numpy()
    size = int(max(items.max(), test_items.max())) + 1
    count = np.bincount(items, minlength=size)
    out = []
    for i in range(len(data.tasks)):
        y = data.train.labels[:, i].numpy()
        rate = (np.bincount(items, weights=y, minlength=size) + smoothing * y.mean()) / (count + smoothing)
        out.append(auc(data.test.labels[:, i].numpy(), rate[test_items]))
    return out


def run_one(job: tuple[int, str, str, dict, int, int, int, str, bool]) -> tuple[int, str, dict, dict, list, dict, str]:
    """Train one (seed, variant) on the synthetic data; returns its test / train metrics, curve, the other
    figures of its line (best epochs, parameters, seconds) and the line."""
    seed, label, model_name, extra, samples, epochs, stopping_step, device, curves = job
    torch.set_num_threads(1)
    data = synthetic_three_task(n_samples=samples, seed=seed)
    cfg = Config(model_name, "mtl-synthetic", config_dict={
        "epochs": epochs, "stopping_step": stopping_step, "show_progress": False, "seed": seed, **extra})
    seed_everything(seed)
    model = get_model(model_name)(cfg, data)
    t0 = time.time()
    trainer = Trainer(cfg, MultiTaskTask(cfg, data), model, device=device)
    test = trainer.fit()
    seconds = time.time() - t0
    model = trainer.model
    train = evaluate_split(model, trainer.task.splits["train"], data.tasks, int(cfg["eval_batch_size"]))
    # one row per evaluation: epoch (from 1), mean training loss of that epoch, validation metrics
    losses = {row["epoch"]: row["loss"] for row in trainer.history["train"]}
    history = [{"epoch": h["epoch"], "loss": losses.get(h["epoch"], float("nan")),
                **{k: v for k, v in h.items() if k not in ("epoch", "split", "eval_seconds")}}
               for h in trainer.history["evaluations"]]
    best = {t: int(max(history, key=lambda h: h[f"auc_{t}"])["epoch"]) for t in data.tasks}
    info = {"best_epoch": trainer.best_epoch, "per_task_valid_best_epoch": best,
            "params": sum(p.numel() for p in model.parameters()), "seconds": seconds}
    line = (f"seed {seed} {label:17s} " + " ".join(f"{t}={test[f'auc_{t}']:.4f}" for t in data.tasks)
            + f" mean={test['mean_auc']:.4f} train_mean={train['mean_auc']:.4f} best_epoch={trainer.best_epoch} "
            f"(per-task valid best {best}) params={info['params']} {seconds:.0f}s")
    if curves:
        line += "\n  valid AUC per epoch: " + "; ".join(
            f"{h['epoch']}:" + "/".join(f"{h[f'auc_{t}']:.3f}" for t in data.tasks) for h in history)
    return seed, label, test, train, history, info, line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=60000)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--stopping-step", type=int, default=5,
                        help="evaluations without validation gain before stopping, for every model (paper: 5)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--infnet", default="{}", help='JSON config overrides for every INFNet variant, e.g. \'{"residual": true}\'')
    parser.add_argument("--all", default="{}", help="JSON config overrides for every model (e.g. a learning rate)")
    parser.add_argument("--variants", nargs="+", default=["INFNet", "INFNet-noTaskTok", "SharedBottom", "MMoE"])
    parser.add_argument("--define", nargs="*", default=[], metavar="LABEL=MODEL:JSON",
                        help='extra variants, e.g. SB-lr1e-3=SharedBottom:{"learning_rate": 0.001}; name them in --variants')
    parser.add_argument("--jobs", type=int, default=1, help="(seed, variant) runs in parallel processes, 1 thread each")
    parser.add_argument("--curves", action="store_true", help="print each run's validation AUC per epoch")
    add_output_args(parser, "infnet_synthetic")
    args = parser.parse_args()
    torch.set_num_threads(1)
    variants = dict(VARIANTS)
    for spec in args.define:
        label, _, rest = spec.partition("=")
        model_name, _, js = rest.partition(":")
        if not label or model_name not in ("INFNet", "SharedBottom", "MMoE"):
            raise ValueError(f"--define expects LABEL=MODEL:JSON with MODEL INFNet|SharedBottom|MMoE, got {spec!r}")
        variants[label] = (model_name, json.loads(js or "{}"))
    unknown = [v for v in args.variants if v not in variants]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; known: {sorted(variants)} (add more with --define)")

    common = json.loads(args.all)
    out = Results.from_args("infnet_synthetic", args)
    jobs, references = [], {}
    for seed in args.seeds:
        data = synthetic_three_task(n_samples=args.samples, seed=seed)
        summary = data.summary()
        print(summary)
        oracle = data.meta["oracle_logits"].numpy()
        labels = data.test.labels.numpy()
        ref = {"summary": summary,
               "oracle_auc": {t: auc(labels[:, i], oracle[:, i]) for i, t in enumerate(data.tasks)},
               "item_rate_auc": dict(zip(data.tasks, item_rate_auc(data))),
               "in_like_auc": {t: auc(labels[:, i], in_like(data.test)) for i, t in enumerate(data.tasks)}}
        references[seed] = ref
        print(f"seed {seed} oracle test AUC (true logits): " + ", ".join(
            f"{t} {a:.4f}" for t, a in ref["oracle_auc"].items()), flush=True)
        print(f"seed {seed} reference test AUC: target item's smoothed train label rate (popularity) "
              + ", ".join(f"{t} {a:.4f}" for t, a in ref["item_rate_auc"].items())
              + "; [target in like sequence] " + ", ".join(
                  f"{t} {a:.4f}" for t, a in ref["in_like_auc"].items()), flush=True)
        for label in args.variants:
            model_name, extra = variants[label]
            extra = {**common, **(json.loads(args.infnet) if model_name == "INFNet" else {}), **extra}
            jobs.append((seed, label, model_name, extra, args.samples, args.epochs, args.stopping_step, args.device,
                         args.curves))
    results: dict[str, list[dict[str, float]]] = {k: [] for k in args.variants}
    if args.jobs > 1:
        os.environ["OMP_NUM_THREADS"] = "1"
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed
        with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(run_one, job) for job in jobs]
            outputs = []
            for future in as_completed(futures):                  # print each run as it finishes
                outputs.append(future.result())
                print(outputs[-1][-1], flush=True)
        outputs.sort(key=lambda o: (args.seeds.index(o[0]), args.variants.index(o[1])))
    else:
        outputs = []
        for job in jobs:
            outputs.append(run_one(job))
            print(outputs[-1][-1], flush=True)
    for _, label, test, _, _, _, _ in outputs:
        results[label].append(test)
    runs = [{"seed": seed, "variant": label, "test": test, "train": train, "history": history, **info}
            for seed, label, test, train, history, info, _ in outputs]

    tasks = data.tasks
    mean = {k: {m: float(np.mean([r[m] for r in v])) for m in v[0]} for k, v in results.items()}
    print(f"\nmean over seeds {args.seeds}: test AUC")
    print(f"{'model':17s} " + " ".join(f"{t:>8s}" for t in tasks) + "     mean")
    for k, r in mean.items():
        print(f"{k:17s} " + " ".join(f"{r[f'auc_{t}']:8.4f}" for t in tasks) + f" {r['mean_auc']:8.4f}")
    payload = {"args": vars(args), "tasks": tasks, "references": references, "runs": runs, "mean": mean}
    if not {"INFNet", "INFNet-noTaskTok", "SharedBottom", "MMoE"} <= set(mean):
        out.write_json("infnet_synthetic.json", payload, seeds=args.seeds)
        return
    beats = mean["INFNet"]["mean_auc"] > max(mean["SharedBottom"]["mean_auc"], mean["MMoE"]["mean_auc"])
    drop = {t: mean["INFNet"][f"auc_{t}"] - mean["INFNet-noTaskTok"][f"auc_{t}"] for t in tasks}
    worst = max(drop, key=drop.get)
    print(f"check 1: INFNet mean AUC {mean['INFNet']['mean_auc']:.4f} vs SharedBottom "
          f"{mean['SharedBottom']['mean_auc']:.4f}, MMoE {mean['MMoE']['mean_auc']:.4f}: {'PASS' if beats else 'FAIL'}")
    print("check 2: AUC lost without task tokens: " + ", ".join(f"{t} {v:+.4f}" for t, v in drop.items())
          + f"; largest on {worst}: {'PASS' if worst == tasks[2] and drop[worst] > 0 else 'FAIL'} "
          f"(expected a positive loss, largest on {tasks[2]})")
    payload["checks"] = {"infnet_beats_baselines": bool(beats), "auc_lost_without_task_tokens": drop,
                         "largest_loss_on": worst,
                         "largest_loss_on_mixed_task": bool(worst == tasks[2] and drop[worst] > 0)}
    out.write_json("infnet_synthetic.json", payload, seeds=args.seeds)

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(7, 3.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    width = 0.8 / len(mean)
    for j, (k, r) in enumerate(mean.items()):
        ax.bar(np.arange(len(tasks) + 1) + j * width, [r[f"auc_{t}"] for t in tasks] + [r["mean_auc"]], width, label=k)
    ax.set_xticks(np.arange(len(tasks) + 1) + 0.4 - width / 2, [*tasks, "mean"])
    lo = min(min(r[f"auc_{t}"] for t in tasks) for r in mean.values())
    ax.set_ylim(max(0.5, lo - 0.02), None)
    ax.set_ylabel("test AUC")
    ax.legend(fontsize="small")
    out.save_figure(fig, "infnet_synthetic.png", dpi=100)


if __name__ == "__main__":
    main()
