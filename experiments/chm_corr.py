"""CHM-Corr++ in miniature: does letting a (simulated) user choose the patches help a human-AI team?

Per seed: synthetic 7 x 7 patch-feature birds (20 classes, 50 train / 10 test images per class, backgrounds
spuriously tied to the class in training with p = 0.8 and random at test), the CHM-Corr classifier (N = 50,
K = 20, top-5 cells, T = 0.55). For every test image and every simulated user (oracle, noisy oracle, misled, no
edit): the AI-alone accuracy with the user's mask, how often the prediction changes, and the decision rule
"accept the original prediction iff it is stable under the edit". Then simulated study sessions of 20 images
written as the web page's JSONL logs (static sessions: no clicks, accept iff half the voters agree;
interactive sessions: the user's clicks, accept iff stable) and the study analysis (per-session accuracy,
Student's t-test) read back from those logs.

    .venv/bin/python experiments/chm_corr.py [--seeds 3] [--sessions 20] [--publish]
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graphattn.results import Results, add_output_args  # noqa: E402
from vision.chm_corr import (USERS, CHMCorr, SessionLog, accept_confident, accept_stable, analyse_folder,  # noqa: E402
                             make_birds, simulate_session, user_mask)

PAPER = {"static": {"sessions": 28, "decisions": 560, "mean_accuracy": 0.727, "sd_accuracy": 0.124},
         "interactive": {"sessions": 42, "decisions": 840, "mean_accuracy": 0.736, "sd_accuracy": 0.104},
         "t": -0.32, "p": 0.75}


def per_user_table(states, test, rng) -> dict:
    """AI accuracy with each user's mask, change rate, and the stability decision rule's figures."""
    y = test.labels
    static = [s.static() for s in states]
    rows = {"static CHM-Corr": {"ai_accuracy": float(np.mean([p.label == t for p, t in zip(static, y)])),
                                "decision_accuracy_confident": float(np.mean(
                                    [accept_confident(p) == (p.label == t) for p, t in zip(static, y)]))}}
    for user in USERS:
        edited = []
        for s, fg in zip(states, test.foreground):
            mask = user_mask(user, fg, rng)
            edited.append(None if mask is None else s.predict(mask))
        ai_right = np.array([p.label == t for p, t in zip(static, y)])
        new = np.array([(e if e is not None else p).label == t for e, p, t in zip(edited, static, y)])
        stable = np.array([accept_stable(p, e) for p, e in zip(static, edited)])
        rows[user] = {
            "ai_accuracy": float(new.mean()),
            "changed": float(1 - stable.mean()),
            "decision_accuracy_stable": float(np.mean(stable == ai_right)),
            "p_right_given_stable": float(ai_right[stable].mean()) if stable.any() else None,
            "p_right_given_changed": float(ai_right[~stable].mean()) if (~stable).any() else None,
        }
    return rows


def run_sessions(folder: Path, states, test, sessions: int, per_session: int, rng) -> dict:
    """Simulated study: ``sessions`` static and ``sessions`` interactive ones per user, analysed from the logs."""
    out = {}
    for user in ("oracle", "noisy", "misled"):
        sub = folder / user
        if sub.exists():
            shutil.rmtree(sub)
        for mode in ("static", "interactive"):
            for i in range(sessions):
                ids = rng.choice(len(states), per_session, replace=False)
                simulate_session(SessionLog(sub, f"{mode}-{i:03d}", fsync=False), [states[j] for j in ids],
                                 list(ids), test.foreground[ids], test.labels[ids],
                                 None if mode == "static" else user, rng)
        out[user] = analyse_folder(sub, per_session)
    return out


def fmt(x, pct=True):
    return "   -  " if x is None else (f"{100 * x:6.1f}" if pct else f"{x:6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=20, help="sessions per group and user")
    parser.add_argument("--per-session", type=int, default=20)
    add_output_args(parser, "chm_corr")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Results.from_args("chm_corr", args)
    per_seed = []
    for seed in range(args.seeds):
        train, test = make_birds(seed)
        model = CHMCorr(train.features, train.labels)
        states = [model.query(f) for f in tqdm(test.features, desc=f"seed {seed}: match", leave=False)]
        rng = np.random.default_rng(1000 + seed)
        table = per_user_table(states, test, rng)
        study = run_sessions(out.path("sessions") / f"seed{seed}", states, test, args.sessions, args.per_session,
                             rng)
        per_seed.append({"seed": seed, "table": table, "study": study})

    def mean_sd(get):
        vals = [get(r) for r in per_seed]
        vals = [v for v in vals if v is not None]
        return (float(np.mean(vals)), float(np.std(vals))) if vals else (None, None)

    lines = ["mask / user        AI acc %        changed %   decision acc %  P(right|stable)  P(right|changed)"]
    summary = {}
    for row in ["static CHM-Corr", *USERS]:
        r = {k: mean_sd(lambda s, k=k: s["table"][row].get(k)) for k in
             ("ai_accuracy", "changed", "decision_accuracy_stable", "decision_accuracy_confident",
              "p_right_given_stable", "p_right_given_changed")}
        summary[row] = r
        dec = r["decision_accuracy_confident"] if row == "static CHM-Corr" else r["decision_accuracy_stable"]
        lines.append(f"{row:17s} {fmt(r['ai_accuracy'][0])} +-{fmt(r['ai_accuracy'][1])}  {fmt(r['changed'][0])}"
                     f"      {fmt(dec[0])} +-{fmt(dec[1])}      {fmt(r['p_right_given_stable'][0])}"
                     f"           {fmt(r['p_right_given_changed'][0])}")
    lines.append("(static CHM-Corr decision rule: accept iff >= half of the K voters agree; users: accept iff stable)")
    lines.append("")
    lines.append("simulated study (per seed: static vs interactive sessions of 20 decisions, from the JSONL logs)")
    lines.append("user     seed  static acc % (sd)  interactive acc % (sd)      t       p")
    for r in per_seed:
        for user, a in r["study"].items():
            st = a["static"]
            lines.append(f"{user:8s} {r['seed']:4d}   {fmt(st['mean_accuracy'])} ({fmt(st['sd_accuracy'])})"
                         f"        {fmt(a['interactive']['mean_accuracy'])} ({fmt(a['interactive']['sd_accuracy'])})"
                         f"   {a['t']:6.2f}  {a['p']:6.3f}")
    p = PAPER
    lines.append(f"paper (released logs)  static {100 * p['static']['mean_accuracy']:.1f} (sd 12.4), "
                 f"interactive {100 * p['interactive']['mean_accuracy']:.1f} (sd 10.4), t = {p['t']}, p = {p['p']}")
    text = "\n".join(lines)
    print(text)

    s = summary
    checks = {
        "oracle > default (static) > misled (AI accuracy)":
            s["oracle"]["ai_accuracy"][0] > s["static CHM-Corr"]["ai_accuracy"][0] > s["misled"]["ai_accuracy"][0],
        "stability correlates with correctness (noisy user: P(right|stable) > P(right|changed))":
            (s["noisy"]["p_right_given_stable"][0] or 0) > (s["noisy"]["p_right_given_changed"][0] or 0),
        "no significant decision-accuracy gain for the noisy user (p > 0.05 on every seed)":
            all(r["study"]["noisy"]["p"] > 0.05 or r["study"]["noisy"]["t"] > 0 for r in per_seed),
    }
    for k, v in checks.items():
        print(f"check: {k}: {'PASS' if v else 'FAIL'}")
    out.write_json("chm_corr.json", {"table": summary, "per_seed": per_seed, "paper": PAPER, "checks": checks,
                                     "printed": text, "config": vars(args) | {"out": str(args.out)}},
                   seeds=list(range(args.seeds)))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = ["static CHM-Corr", *USERS]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    accs = [100 * s[r]["ai_accuracy"][0] for r in rows]
    errs = [100 * s[r]["ai_accuracy"][1] for r in rows]
    ax.bar(rows, accs, yerr=errs, color=["grey", "tab:green", "tab:olive", "tab:red", "tab:blue"])
    ax.set_ylabel("AI-alone accuracy %")
    ax.set_title(f"CHM-Corr on synthetic birds: mask chosen by ... ({args.seeds} seeds)")
    fig.tight_layout()
    out.save_figure(fig, "chm_corr.png")


if __name__ == "__main__":
    main()
