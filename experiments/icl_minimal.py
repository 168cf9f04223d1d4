"""Minimal induction-head model and the data-dependence table (Reddy, ICLR 2024, arXiv 2312.03002).

Part ``dynamics``: trains ``InductionMinimal`` (three scalar edge logits beta_1, alpha, xi; built from
``GraphAttention``) through the Trainer on the same ``icl-bursty`` settings as ``experiments/icl_abrupt.py``
(K = 512, L = 32, N = 8, eps = 0.1, B = 1, p_C = 1, Nmax = 8) for L = 32 > N and L = 8 = N, logging IC
accuracy / loss, the two attention progress measures (read with ``capture_attention``) and the scalars;
integrates gradient descent on the closed-form phenomenological loss; and plots the minimal model's curves
next to the network's (read from ``docs/results/icl_abrupt/icl_abrupt.json``, the published network run).

Part ``table``: the data-dependence table. Training sequences are bursty with known classes (p_B = 1,
p_C = 0, so an in-weights solution competes with the in-context one; B = 0 is non-bursty); one factor at a
time around the base (B = 1, K = 512, eps = 0.1, alpha = 0): B in {0, 1, 2, 4}, K in {128, 512, 2048},
eps in {0, 0.1, 0.5}, and alpha = 1 (Zipf). Reports IC (novel classes) and IW (non-bursty) accuracy after
training, for the minimal model with its in-weights read-out (``icl_minimal_inweights``) and for the network
(``InductionNet``) on the cells named by ``--net-cells``.

    .venv/bin/python experiments/icl_minimal.py --part dynamics table [--publish]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sequence  # noqa: E402,F401  (registers task icl)
from graphattn.config import Config  # noqa: E402
from graphattn.results import ROOT, Results, add_output_args, published_dir  # noqa: E402
from graphattn.training import Trainer  # noqa: E402
from sequence.icl.minimal import phenomenological_loss  # noqa: E402

NETWORK_JSON = published_dir("icl_abrupt") / "icl_abrupt.json"   # the published network run (read only)
BASE = {"B": 1, "K": 512, "eps": 0.1, "alpha": 0.0}
CELLS = {   # one factor at a time around BASE
    "B=0": {"B": 0}, "B=1 (base)": {}, "B=2": {"B": 2}, "B=4": {"B": 4},
    "K=128": {"K": 128}, "K=2048": {"K": 2048},
    "eps=0": {"eps": 0.0}, "eps=0.5": {"eps": 0.5},
    "alpha=1": {"alpha": 1.0},
}
DIRECTIONS = {"B": ["B=0", "B=1 (base)", "B=2", "B=4"], "K": ["K=128", "B=1 (base)", "K=2048"],
              "eps": ["eps=0", "B=1 (base)", "eps=0.5"]}


def make_config(model: str, seed: int, steps: int, eval_every: int, tmp: str, lr: float, **over) -> Config:
    values = {"epochs": max(1, steps // eval_every), "steps_per_epoch": eval_every, "seed": seed,
              "data_seed": 1000 + seed, "learning_rate": lr, "icl_max_pairs": 8, "num_threads": 1, "device": "cpu",
              "checkpoint_dir": tmp, "log_level": "WARNING", "stopping_step": 10 ** 6, **over}
    return Config(model, "icl-bursty", config_dict=values)


def train(model: str, seed: int, steps: int, eval_every: int, lr: float, **over) -> dict:
    """One run through the Trainer: the validation curves (every ``eval_every`` steps) and the final test metrics."""
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer.from_config(make_config(model, seed, steps, eval_every, tmp, lr, **over))
        start = {"epoch": 0, **trainer.evaluate("valid")}                  # before the first step
        trainer.train()
        hist = [start] + [r for r in trainer.history["evaluations"] if r["split"] == "valid"]
        keys = [k for k in hist[0] if k not in ("epoch", "split", "eval_seconds")]
        curves = {"step": [r["epoch"] * eval_every for r in hist], **{k: [r[k] for r in hist] for k in keys}}
        final = trainer.evaluate("test")
    return {"curves": curves, "final": final}


# ---------------------------------------------------------------------------------------------- dynamics

def dynamics_job(job):
    labels, seed, steps, every, lr = job
    print(f"--- minimal model, L = {labels}, seed {seed}: {steps} steps", flush=True)
    run = train("InductionMinimal", seed, steps, every, lr, icl_labels=labels, icl_p_novel=1.0,
                icl_valid_size=1000, icl_test_size=10000)
    c = run["curves"]
    run["jump_step"] = next((s for s, a in zip(c["step"], c["ic_accuracy"]) if a > 0.5), None)
    print(f"L = {labels} seed {seed}: final IC {run['final']['ic_accuracy']:.3f}, IC > 0.5 first at {run['jump_step']}", flush=True)
    return run


def phenomenological_flow(labels: int, steps: int, lr: float, xi0: float, N: int = 8) -> dict:
    """Gradient descent on the closed-form loss from (0, 0, xi0)."""
    p = torch.tensor([0.0, 0.0, xi0], dtype=torch.float64, requires_grad=True)
    out = {"step": [], "loss": [], "beta1": [], "alpha": [], "xi": []}
    for t in range(steps + 1):
        loss = phenomenological_loss(p[0], p[1], p[2], N, labels)
        (g,) = torch.autograd.grad(loss, p)
        if t % 10 == 0:
            for k, v in zip(("step", "loss", "beta1", "alpha", "xi"), (t, float(loss), *p.detach().tolist())):
                out[k].append(v)
        with torch.no_grad():
            p -= lr * g
    return out


def run_dynamics(args, pool) -> dict:
    jobs = [(L, s, args.steps if L == 32 else args.steps_L8, args.eval_every, args.lr) for L in (32, 8) for s in args.seeds]
    runs = pool(dynamics_job, jobs)
    out = {"minimal_L32": {}, "minimal_L8": {}}
    for (L, s, *_), r in zip(jobs, runs):
        out[f"minimal_L{L}"][str(s)] = r
    out["phenomenological"] = {f"L{L} xi0={xi0:g}": phenomenological_flow(L, args.flow_steps, args.lr, xi0)
                               for L, xi0 in ((32, 0.0), (8, 0.0), (8, 1e-3))}
    # gradients at the origin of the closed form (the flat start)
    zero = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    grads = {}
    for L in (32, 8):
        (g,) = torch.autograd.grad(phenomenological_loss(zero[0], zero[1], zero[2], 8, L), zero)
        grads[f"L{L}"] = dict(zip(("beta1", "alpha", "xi"), g.tolist()))
    out["origin_gradients"] = grads

    print("\nminimal model (same data as the network, lr", args.lr, ")")
    print("L   seed  step   IC acc  ctx-label  prev-token  induction  beta1   alpha   xi")
    for L in (32, 8):
        for s, r in out[f"minimal_L{L}"].items():
            c = r["curves"]
            idx = sorted({0, 1, 2, 4, 8, 16, len(c["step"]) // 2, len(c["step"]) - 1} & set(range(len(c["step"]))))
            for i in idx:
                print(f"{L:<3} {s:<5} {c['step'][i]:<6} {c['ic_accuracy'][i]:.3f}   {c['ic_context_label'][i]:.3f}      "
                      f"{c['ic_prev_token'][i]:.3f}       {c['ic_induction'][i]:.3f}      {c['beta1'][i]:+.3f}  "
                      f"{c['alpha'][i]:+.3f}  {c['xi'][i]:+.3f}")
    print("\nL   seed  final IC  IC2    IW     IC > 0.5 first at")
    for L in (32, 8):
        for s, r in out[f"minimal_L{L}"].items():
            f = r["final"]
            print(f"{L:<3} {s:<5} {f['ic_accuracy']:.3f}     {f['ic2_accuracy']:.3f}  {f['iw_accuracy']:.3f}  {r['jump_step']}")
    print("\nclosed-form loss, gradient at the origin:", json.dumps(grads))
    for name, fl in out["phenomenological"].items():
        j = next((s for s, l in zip(fl["step"], fl["loss"]) if l < 0.5 * fl["loss"][0]), None)
        print(f"closed-form flow {name}: loss halves at step {j}; final beta1 {fl['beta1'][-1]:.2f} "
              f"alpha {fl['alpha'][-1]:.2f} xi {fl['xi'][-1]:.2f}")
    return out


def dynamics_checks(out) -> dict:
    checks = {}
    for s, r in out["minimal_L32"].items():
        c = r["curves"]
        js = r["jump_step"]
        checks[f"L=32 seed {s}: IC accuracy jumps above 0.5"] = js is not None
        if js is not None:
            i = c["step"].index(js)
            checks[f"L=32 seed {s}: starts at chance (IC < 2/L before training)"] = c["ic_accuracy"][0] < 2 / 32
            k = next((j for j, a in enumerate(c["ic_accuracy"]) if a > 0.25), None)
            checks[f"L=32 seed {s}: slow phase then jump: IC stays < 0.25 for >= 4 evaluations after reaching 1/N - 0.02, "
                   f"then 0.25 -> 0.5 within 2 evaluations"] = (
                k is not None and sum(1 for a in c["ic_accuracy"][:k] if a > 1 / 8 - 0.02) >= 4 and i - k <= 2)
            checks[f"L=32 seed {s}: context-label share > 0.5 before the jump"] = any(
                x > 0.5 for x in c["ic_context_label"][:i])
            checks[f"L=32 seed {s}: xi leads (xi > 2 |alpha| > 0 = beta_1 rounded, at the first evaluation after the start)"] = (
                c["xi"][1] > 2 * abs(c["alpha"][1]) and abs(c["beta1"][1]) < 1e-3)
    for s, r in out["minimal_L8"].items():
        c = r["curves"]
        checks[f"L=8=N seed {s}: flat start (IC loss within 1% of ln 8 at the first evaluation after the start)"] = (
            abs(c["ic_loss"][1] - 2.0794) < 0.02)
        js, j32 = r["jump_step"], out["minimal_L32"].get(s, {}).get("jump_step")
        checks[f"L=8=N seed {s}: learns later than L = 32 (or never)"] = js is None or (j32 is not None and js > 2 * j32)
    g = out["origin_gradients"]
    checks["closed form: origin gradient is zero for L = N"] = all(abs(v) < 1e-12 for v in g["L8"].values())
    checks["closed form: d/dxi = 1/L - 1/N != 0 for L > N"] = abs(g["L32"]["xi"] - (1 / 32 - 1 / 8)) < 1e-9
    return checks


# ---------------------------------------------------------------------------------------------- table

def cell_over(cell: str) -> dict:
    v = {**BASE, **CELLS[cell]}
    return {"icl_burstiness": v["B"], "icl_classes": v["K"], "icl_eps": v["eps"], "icl_alpha": v["alpha"],
            "icl_p_bursty": 1.0 if v["B"] > 0 else 0.0, "icl_p_novel": 0.0}


def table_job(job):
    model, cell, seed, steps, lr = job
    print(f"--- {model} {cell} seed {seed}: {steps} steps", flush=True)
    extra = {"icl_minimal_inweights": True} if model == "InductionMinimal" else {}
    run = train(model, seed, steps, max(steps // 4, 1), lr, icl_valid_size=500, icl_test_size=2000,
                **cell_over(cell), **extra)
    f = run["final"]
    print(f"{model} {cell} seed {seed}: IC {f['ic_accuracy']:.3f} IW {f['iw_accuracy']:.3f}", flush=True)
    return {"ic": f["ic_accuracy"], "ic2": f["ic2_accuracy"], "iw": f["iw_accuracy"], "curves": run["curves"]}


def run_table(args, pool) -> dict:
    jobs = []
    if "InductionNet" in args.table_models:
        jobs += [("InductionNet", c, s, args.net_steps, args.lr) for c in args.net_cells for s in args.net_seeds]
    if "InductionMinimal" in args.table_models:
        jobs += [("InductionMinimal", c, s, args.table_steps, args.lr) for c in CELLS for s in args.seeds]
    results = pool(table_job, jobs)
    table: dict = {"InductionMinimal": {}, "InductionNet": {}}
    for (model, cell, seed, *_), r in zip(jobs, results):
        table[model].setdefault(cell, {})[str(seed)] = r
    summary, checks = {}, {}
    for model, cells in table.items():
        summary[model] = {}
        for cell, seeds in cells.items():
            n = len(seeds)
            summary[model][cell] = {k: sum(r[k] for r in seeds.values()) / n for k in ("ic", "ic2", "iw")}
            summary[model][cell]["seeds"] = n
        for factor, order in DIRECTIONS.items():
            have = [c for c in order if c in summary[model]]
            if len(have) < 2:
                continue
            lo, hi = summary[model][have[0]], summary[model][have[-1]]
            checks[f"{model}: raising {factor} ({have[0]} -> {have[-1]}) raises IC accuracy (by > 0.05)"] = hi["ic"] - lo["ic"] > 0.05
            checks[f"{model}: raising {factor} ({have[0]} -> {have[-1]}) lowers IW accuracy (by > 0.05)"] = lo["iw"] - hi["iw"] > 0.05
        if "alpha=1" in summary[model]:
            a = summary[model]["alpha=1"]
            checks[f"{model}: Zipf alpha = 1 gives IC and IW both above 2/L"] = a["ic"] > 2 / 32 and a["iw"] > 2 / 32
    print("\ndata dependence: IC (novel classes, bursty) / IW (non-bursty, known classes) accuracy after training")
    print("training: p_B = 1 (0 for B = 0), p_C = 0; base B = 1, K = 512, eps = 0.1, alpha = 0; L = 32, N = 8")
    print(f"{'cell':<12} {'minimal IC':>10} {'minimal IW':>10} {'net IC':>8} {'net IW':>8}")
    for cell in CELLS:
        m = summary["InductionMinimal"].get(cell)
        n = summary["InductionNet"].get(cell)
        fmt = lambda d, k: f"{d[k]:.3f}" if d else "-"  # noqa: E731
        print(f"{cell:<12} {fmt(m, 'ic'):>10} {fmt(m, 'iw'):>10} {fmt(n, 'ic'):>8} {fmt(n, 'iw'):>8}")
    return {"runs": table, "summary": summary, "checks": checks}


# ---------------------------------------------------------------------------------------------- main

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", nargs="+", default=["dynamics", "table"], choices=["dynamics", "table"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the minimal model")
    parser.add_argument("--steps", type=int, default=1500, help="SGD steps of the minimal model's dynamics runs, L = 32")
    parser.add_argument("--steps-L8", type=int, default=3000, help="SGD steps of the minimal model's dynamics runs, L = N = 8")
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--lr", type=float, default=0.1, help="SGD learning rate (both models; the network's runs: 0.1)")
    parser.add_argument("--flow-steps", type=int, default=6000, help="steps of gradient descent on the closed-form loss")
    parser.add_argument("--table-steps", type=int, default=2000, help="steps of the minimal model per table cell")
    parser.add_argument("--net-steps", type=int, default=4000, help="steps of the network per table cell")
    parser.add_argument("--net-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--net-cells", nargs="*", default=["B=0", "B=1 (base)", "B=4", "K=128", "K=2048", "eps=0", "eps=0.5"])
    parser.add_argument("--table-models", nargs="+", default=["InductionMinimal", "InductionNet"],
                        choices=["InductionMinimal", "InductionNet"], help="models of the data-dependence table")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel processes (one thread each)")
    parser.add_argument("--tag", default="")
    add_output_args(parser, "icl_minimal")
    args = parser.parse_args()
    for cell in args.net_cells:
        if cell not in CELLS:
            parser.error(f"unknown --net-cells entry {cell!r}; expected one of {list(CELLS)}")
    torch.set_num_threads(1)
    out = Results.from_args("icl_minimal", args)

    def pool(fn, jobs):
        if args.jobs > 1:
            with multiprocessing.get_context("fork").Pool(min(args.jobs, len(jobs))) as p:
                return p.map(fn, jobs, chunksize=1)
        return [fn(j) for j in jobs]

    payload: dict = {"settings": vars(args) | {"out": None}, "checks": {}}
    if "dynamics" in args.part:
        dyn = run_dynamics(args, pool)
        payload["dynamics"] = dyn
        payload["checks"].update(dynamics_checks(dyn))
        payload["network_source"] = str(NETWORK_JSON.relative_to(ROOT))
        plot_dynamics(out, dyn, f"icl_minimal{args.tag}.png")
    if "table" in args.part:
        tab = run_table(args, pool)
        payload["table"] = tab
        payload["checks"].update(tab["checks"])
        plot_table(out, tab["summary"], f"icl_minimal_table{args.tag}.png")
    print("\nchecks:")
    for k, v in payload["checks"].items():
        print(f"  [{'pass' if v else 'FAIL'}] {k}")
    seeds = sorted(set(args.seeds) | (set(args.net_seeds) if "InductionNet" in args.table_models else set()))
    out.write_json(f"icl_minimal{args.tag}.json", payload, seeds=seeds)


def plot_dynamics(out, dyn, name: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    net = json.loads(NETWORK_JSON.read_text())["runs"] if NETWORK_JSON.exists() else {}
    fig, axes = plt.subplots(2, 3, figsize=(17, 8.5))
    ax = axes[0, 0]
    for s, r in dyn["minimal_L32"].items():
        ax.plot(r["curves"]["step"], r["curves"]["ic_accuracy"], "C0-", alpha=0.8, label="minimal model" if s == "0" else None)
    for s, r in net.items():
        ax.plot(r["curves"]["step"], r["curves"]["ic_accuracy"], "C3-", alpha=0.8, label="network (icl_abrupt)" if s == "0" else None)
    ax.axhline(1 / 8, color="gray", ls=":", lw=0.8)
    ax.axhline(1 / 32, color="gray", ls=":", lw=0.8)
    ax.set_xscale("symlog", linthresh=100)
    ax.set(xlabel="SGD step", ylabel="IC accuracy", title="IC accuracy, L = 32, N = 8, B = 1, p_C = 1")
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    for s, r in dyn["minimal_L32"].items():
        ax.plot(r["curves"]["step"], r["curves"]["ic_loss"], "C0-", alpha=0.8, label="minimal model" if s == "0" else None)
    for s, r in net.items():
        ax.plot(r["curves"]["step"], r["curves"]["ic_loss"], "C3-", alpha=0.8, label="network" if s == "0" else None)
    ax.set_xscale("symlog", linthresh=100)
    ax.set(xlabel="SGD step", ylabel="IC loss", title="IC loss (both models, same data)")
    ax.legend(fontsize=8)
    ax = axes[0, 2]
    for key, col in (("beta1", "C3"), ("alpha", "C4"), ("xi", "C2")):
        for s, r in dyn["minimal_L32"].items():
            ax.plot(r["curves"]["step"], r["curves"][key], f"{col}-", alpha=0.8, label=key if s == "0" else None)
    ax.set(xlabel="SGD step", ylabel="value", title="learned scalars, L = 32 (all seeds)")
    ax.legend(fontsize=8)
    ax = axes[1, 0]
    for L, col in ((32, "C0"), (8, "C1")):
        for s, r in dyn[f"minimal_L{L}"].items():
            ax.plot(r["curves"]["step"], r["curves"]["ic_loss"], f"{col}-", alpha=0.8,
                    label=f"L = {L}" if s == "0" else None)
    ax.set(xlabel="SGD step", ylabel="IC loss", title="minimal model: L = N = 8 vs L = 32 > N")
    ax.legend(fontsize=8)
    ax = axes[1, 1]
    for s, r in dyn["minimal_L8"].items():
        for key, col in (("beta1", "C3"), ("alpha", "C4"), ("xi", "C2")):
            ax.plot(r["curves"]["step"], r["curves"][key], f"{col}-", alpha=0.8, label=key if s == "0" else None)
    ax.set(xlabel="SGD step", ylabel="value", title="learned scalars, L = N = 8")
    ax.legend(fontsize=8)
    ax = axes[1, 2]
    for (flow, fl), col in zip(dyn["phenomenological"].items(), ("C0", "C1", "C5")):
        ax.plot(fl["step"], [v / fl["loss"][0] for v in fl["loss"]], f"{col}-", label=f"N = 8, {flow}")
    ax.set(xlabel="gradient step", ylabel="loss / initial loss", title="closed-form 3-logit loss, gradient descent")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.save_figure(fig, name)


def plot_table(out, summary, name: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = [m for m in ("InductionMinimal", "InductionNet") if summary[m]]
    fig, axes = plt.subplots(1, len(models), figsize=(7.5 * len(models), 4.2), sharey=True, squeeze=False)
    axes = axes[0]
    for ax, model in zip(axes, models):
        cells = [c for c in CELLS if c in summary[model]]
        x = range(len(cells))
        ax.bar([i - 0.2 for i in x], [summary[model][c]["ic"] for c in cells], 0.4, label="IC accuracy")
        ax.bar([i + 0.2 for i in x], [summary[model][c]["iw"] for c in cells], 0.4, label="IW accuracy")
        ax.set_xticks(list(x), cells, rotation=30, fontsize=8)
        ax.set_title(model)
        ax.axhline(1 / 32, color="gray", ls=":", lw=0.8)
    axes[0].set_ylabel("accuracy after training")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    out.save_figure(fig, name)


if __name__ == "__main__":
    main()
