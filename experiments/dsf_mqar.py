"""Mini-MQAR for the Dynamical Systems Framework: recall accuracy vs state expansion n.

Trains the registered ``DSFMixer`` (task ``mqar``) through the one Trainer for every mixer of the DSF family —
linear attention (elu+1, row-normalised), normalized attention (q.k / exp(w^T x)) and S6 at
n = d_qk = d_state in ``--ns``; softmax attention (d_qk = 64; its state is the whole KV cache) and the qLSTM,
plain and with the reversed-sigmoid (S6-style) forget gate (n = 1 by definition) once — over ``--seeds``,
and reports the test accuracy at the query positions (best validation epoch), a table and a PNG.

    .venv/bin/python experiments/dsf_mqar.py [--seeds 0 1 2] [--ns 8 16 32 64] [--s6-ns 8 16] [--publish]
    .venv/bin/python experiments/dsf_mqar.py --checks-only [--publish]     # the DSF checks (a)-(e), float64
    .venv/bin/python experiments/dsf_mqar.py --summarise runs.json --name NAME [--publish]   # re-summarise runs

CPU scale (the spec's own CPU scale is 20k train / 1k test, 10-20 epochs): the defaults below are smaller
still so that the sweep fits a shared 2-core machine; every size is a flag and is recorded in the JSON.
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

import sequence  # noqa: E402,F401  (registers task mqar and DSFMixer)
from graphattn.config import Config  # noqa: E402
from graphattn.results import Results, add_output_args, read_result  # noqa: E402
from graphattn.training import Trainer, seed_everything  # noqa: E402
from sequence.dsf.mqar import load_mqar  # noqa: E402
from sequence.dsf.task import RecallTask  # noqa: E402

SCRIPT = "dsf_mqar"
SWEPT = ("linear", "normalized", "s6")              # accuracy vs n
FIXED = {"softmax": 64, "qlstm": 1, "qlstm_s6": 1}  # one n each (d_qk of softmax; the qLSTM has n = 1)
LABELS = {"linear": "linear attention", "normalized": "normalized attention", "s6": "S6",
          "softmax": "softmax attention", "qlstm": "qLSTM", "qlstm_s6": "qLSTM, reversed sigmoid"}


def numerical_checks() -> list[dict]:
    """The spec's DSF checks (a)-(e) in float64 (the same computations as tests/sequence/dsf/test_system.py)."""
    import math

    import torch.nn.functional as F

    from graphattn.attention import elu_feature_map
    from sequence.dsf.system import (linear_attention, normalized_state_attention, qlstm, random_features,
                                     selective_ssm, softmax_phi, taylor_features)
    f64, t, d, n = torch.float64, 32, 8, 16
    g = torch.Generator().manual_seed(0)
    u = torch.randn(t, d, generator=g, dtype=f64)
    wq, wk, wv = (torch.randn(d, n if i < 2 else d, generator=g, dtype=f64) / math.sqrt(d) for i in range(3))
    fq, fk, v = elu_feature_map(u @ wq), elu_feature_map(u @ wk), u @ wv
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    raw = (fq @ fk.T).masked_fill(~causal, 0)                             # textbook parallel form
    out = []
    att = linear_attention(fq, fk, d)
    out.append({"check": "(a) linear attention (elu+1, d=8, n=16, T=32): parallel form vs DSF recurrence",
                "max_abs_diff": float((raw @ v - att.recurrent(v)).abs().max()), "threshold": 1e-10})
    ssm = selective_ssm(torch.ones(t, d, dtype=f64), torch.zeros(d, n, dtype=f64), fk, fq)
    out.append({"check": "(b) Phi of S6 with a=0, Delta=1, B=phi(k), C=phi(q), D=0 vs unnormalised linear attention",
                "max_abs_diff": float((ssm.materialise_phi() - att.materialise_phi()).abs().max()), "threshold": 0.0})
    normed = (raw / raw.sum(-1, keepdim=True)) @ v
    out.append({"check": "(c) normalised state, Lam_i = eta_{i-1}/eta_i, vs normalised linear attention",
                "max_abs_diff": float((normalized_state_attention(fq, fk, d).recurrent(v) - normed).abs().max()),
                "threshold": 1e-10})
    q, k = torch.randn(2, t, 4, generator=g, dtype=f64) * 0.7
    target, scale = softmax_phi(q, k), 4 ** -0.25

    def err(fn):
        phi = linear_attention(fn(q * scale), fn(k * scale), 1, normalize=True).kernel()[..., 0]
        return float((phi - target).abs().sum(-1).mean())
    rf = {m: float(np.mean([err(lambda x, om=torch.randn(4, m, generator=g, dtype=f64): random_features(x, om))
                            for _ in range(5)])) for m in (4, 16, 64, 256, 1024)}
    ty = {sum(4 ** i for i in range(p + 1)): err(lambda x, p=p: taylor_features(x, p)) for p in range(4)}
    out.append({"check": "(d) softmax Phi vs linear attention with n features: mean row L1 error "
                         "(positive random features, mean of 5 draws; Taylor of degree 0-3)",
                "random_features": rf, "taylor": ty,
                "falls_with_n": all(a > b for a, b in zip(list(rf.values()), list(rf.values())[1:]))
                and all(a > b for a, b in zip(list(ty.values()), list(ty.values())[1:]))})
    zf = torch.randn(t, d, generator=g, dtype=f64) * 2
    a = torch.rand(d, generator=g, dtype=f64) * 3
    gates = torch.rand(2, t, d, generator=g, dtype=f64)
    lstm = qlstm(zf, gates[0], gates[1], torch.eye(d, dtype=f64), exponent=a)
    s6 = selective_ssm(F.softplus(zf), a[:, None], torch.ones(t, 1, dtype=f64), torch.ones(t, 1, dtype=f64))
    out.append({"check": "(e) qLSTM forget gate sigmoid(-W_f u)^a vs S6 transition exp(-softplus(W_f u) a)",
                "max_abs_diff": max(float((lstm.lam[..., 0] - torch.sigmoid(-zf) ** a).abs().max()),
                                    float((lstm.lam - s6.lam).abs().max())), "threshold": 1e-12})
    for c in out:
        if "threshold" in c:
            c["passed"] = c["max_abs_diff"] <= c["threshold"]
        else:
            c["passed"] = c["falls_with_n"]
    return out


def train_one(base: dict, data, variant: str, n: int, seed: int) -> dict:
    config = Config("DSFMixer", "mqar", config_dict={**base, "variant": variant, "state_expansion": n,
                                                     "seed": seed})
    seed_everything(seed, True)
    t0 = time.perf_counter()
    trainer = Trainer(config, RecallTask(config, data))
    test = trainer.fit()
    return {"variant": variant, "n": n, "seed": seed, "test_accuracy": test["accuracy"],
            "test_loss": test["loss"], "best_epoch": trainer.best_epoch,
            "parameters": sum(p.numel() for p in trainer.model.parameters()),
            "seconds": round(time.perf_counter() - t0, 1)}


def summarise(rows: list[dict]) -> list[dict]:
    out = []
    for key in dict.fromkeys((r["variant"], r["n"]) for r in rows):
        accs = [r["test_accuracy"] for r in rows if (r["variant"], r["n"]) == key]
        out.append({"variant": key[0], "n": key[1], "mean": float(np.mean(accs)), "std": float(np.std(accs)),
                    "seeds": len(accs), "accuracies": accs})
    return out


def table(summary: list[dict], ns: list[int]) -> str:
    lines = ["| mixer | " + " | ".join(f"n={n}" for n in ns) + " | fixed n |",
             "|---|" + "---|" * (len(ns) + 1)]
    for variant in [*SWEPT, *FIXED]:
        cells = {s["n"]: f"{s['mean']:.3f} ± {s['std']:.3f}" + (f" ({s['seeds']} seed)" if s["seeds"] == 1 else "")
                 for s in summary if s["variant"] == variant}
        if not cells:
            continue
        if variant in FIXED:
            row = ["-"] * len(ns) + [f"{cells[FIXED[variant]]} (n={FIXED[variant]})"]
        else:
            row = [cells.get(n, "not run") for n in ns] + ["-"]
        lines.append(f"| {LABELS[variant]} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def checks(summary: list[dict], ns: list[int], vocab_size: int) -> list[dict]:
    """Pass / fail of the spec's expectations; ``passed`` is None (undecided) where both sides sit at chance
    (one value out of the V/2 value tokens)."""
    acc = {(s["variant"], s["n"]): s["mean"] for s in summary}
    chance = 2 / vocab_size
    result = []
    lin = [acc[("linear", n)] for n in ns if ("linear", n) in acc]
    if len(lin) >= 2 and ("softmax", FIXED["softmax"]) in acc:
        soft = acc[("softmax", FIXED["softmax"])]
        gaps = [soft - a for a in lin]
        result.append({"check": "linear attention approaches softmax as n grows (gap to softmax shrinks from "
                                "the smallest to the largest n)", "gaps": gaps, "passed": gaps[-1] < gaps[0]})
    pairs = [(acc[("normalized", n)], acc[("linear", n)]) for n in ns if ("normalized", n) in acc and ("linear", n) in acc]
    if pairs:
        wins = sum(a >= b for a, b in pairs)
        result.append({"check": "normalized >= linear attention (at every n)", "wins": f"{wins}/{len(pairs)}",
                       "passed": wins == len(pairs)})
    if ("qlstm", 1) in acc and ("qlstm_s6", 1) in acc:
        values = [acc[("qlstm_s6", 1)], acc[("qlstm", 1)]]
        result.append({"check": "reversed-sigmoid qLSTM >= plain qLSTM", "values": values, "chance": chance,
                       "passed": None if max(values) < 3 * chance else values[0] >= values[1]})
    return result


def report(text: str, verdicts: list[dict]) -> None:
    print(text)
    for c in verdicts:
        verdict = "UNDECIDED (at chance)" if c["passed"] is None else "PASS" if c["passed"] else "FAIL"
        print(f"[{verdict}] {c['check']}: "
              + ", ".join(f"{k}={v}" for k, v in c.items() if k not in ("check", "passed")))


def plot(summary: list[dict], ns: list[int]):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for variant, marker in zip(SWEPT, "osD"):
        pts = [(s["n"], s["mean"], s["std"]) for s in summary if s["variant"] == variant]
        if pts:
            x, m, e = zip(*pts)
            ax.errorbar(x, m, yerr=e, marker=marker, capsize=3, label=LABELS[variant])
    for variant, style in zip(FIXED, ("-", ":", "--")):
        for s in summary:
            if s["variant"] == variant:
                ax.axhline(s["mean"], ls=style, color="k" if variant == "softmax" else "gray", lw=1.2,
                           label=f"{LABELS[variant]} (n={s['n']})")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set_xlabel("state expansion n (d_qk / d_state)")
    ax.set_ylabel("MQAR test accuracy (query positions)")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8, loc="best")
    ax.set_title("Mini-MQAR: accuracy vs state expansion (mean ± std over seeds)", fontsize=10)
    fig.tight_layout()
    return fig


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--ns", type=int, nargs="+", default=[8, 16, 32, 64])
    ap.add_argument("--s6-ns", type=int, nargs="+", default=[8, 16],
                    help="n of S6 (its state, B T d n per layer, costs ~n times an attention step on a CPU)")
    ap.add_argument("--variants", nargs="+", default=[*SWEPT, *FIXED], choices=[*SWEPT, *FIXED])
    ap.add_argument("--train-size", type=int, default=2400)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--name", default=SCRIPT, help="stem of the result files (<name>.json, <name>.png)")
    ap.add_argument("--summarise", type=Path, default=None,
                    help="no training: table, checks and PNG of the runs in a result JSON (e.g. an interrupted "
                         "sweep's <name>.partial.json), written as <name>.json / <name>.png")
    ap.add_argument("--checks-only", action="store_true",
                    help="run only the numerical DSF checks (a)-(e) (seconds) and write dsf_checks.json")
    add_output_args(ap, SCRIPT)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.summarise is not None:                                        # table + checks + PNG of saved runs
        saved = read_result(args.summarise)
        rows, settings = saved["runs"], saved["settings"]
        summary = summarise(rows)
        text, verdicts = table(summary, settings["ns"]), checks(summary, settings["ns"], settings["vocab_size"])
        report(text, verdicts)
        out = Results.from_args(SCRIPT, args)
        out.write_json(f"{args.name}.json", {"settings": settings, "runs": rows, "summary": summary, "table": text,
                                             "checks": verdicts, "runs_from": {"file": str(args.summarise),
                                                                               "command": saved["command"]}},
                       seeds=saved["seeds"])
        out.save_figure(plot(summary, settings["ns"]), f"{args.name}.png")
        return
    if args.checks_only:
        verdicts = numerical_checks()
        for c in verdicts:
            print(f"[{'PASS' if c['passed'] else 'FAIL'}] " + ", ".join(f"{k}={v}" for k, v in c.items() if k != "passed"))
        Results.from_args(SCRIPT, args).write_json("dsf_checks.json", {"checks": verdicts}, seeds=[0])
        return

    base = {"train_size": args.train_size, "valid_size": 500, "test_size": 1000, "epochs": args.epochs,
            "train_batch_size": args.batch_size, "learning_rate": args.lr, "stopping_step": args.epochs,
            "show_progress": False, "device": "cpu", "log_level": "WARNING", "num_threads": 1}
    merged = Config("DSFMixer", "mqar", config_dict=base)
    data = load_mqar(merged)
    print(data)
    jobs = [(v, n) for v in args.variants if v in SWEPT and v != "s6" for n in args.ns]
    jobs += [(v, FIXED[v]) for v in args.variants if v in FIXED]
    jobs += [("s6", n) for n in args.s6_ns if "s6" in args.variants]           # the slowest last
    out = Results.from_args(SCRIPT, args)
    keys = ("vocab_size", "seq_len", "num_kv_pairs", "power_a", "mqar_seed", "d_model", "num_layers", "mlp_ratio",
            "optimizer", "weight_decay", "scheduler", "warmup_epochs", "grad_clip")
    settings = {**base, **{k: merged[k] for k in keys}, "ns": args.ns, "s6_ns": args.s6_ns}
    rows = []
    bar = tqdm([(v, n, s) for v, n in jobs for s in args.seeds], desc="dsf_mqar", file=sys.stderr)
    for variant, n, seed in bar:
        bar.set_postfix_str(f"{variant} n={n} seed={seed}")
        rows.append(train_one(base, data, variant, n, seed))
        tqdm.write(f"{variant:10s} n={n:3d} seed={seed}  test accuracy {rows[-1]['test_accuracy']:.4f}  "
                   f"({rows[-1]['seconds']:.0f} s)", file=sys.stderr)
        # the runs so far, so that an interrupted sweep keeps what it measured
        out.write_json(f"{args.name}.partial.json", {"settings": settings, "runs": rows}, seeds=args.seeds)

    summary = summarise(rows)
    text = table(summary, args.ns)
    verdicts = checks(summary, args.ns, data.vocab_size)
    report(text, verdicts)
    out.write_json(f"{args.name}.json", {"settings": settings, "runs": rows, "summary": summary, "table": text,
                                      "checks": verdicts}, seeds=args.seeds)
    out.save_figure(plot(summary, args.ns), f"{args.name}.png")
    for folder in (out.dir, out.publish_dir):                             # complete: the partial file is stale
        if folder is not None:
            (Path(folder) / f"{args.name}.partial.json").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
