"""InteractComp in miniature: asking instead of guessing, on a generated target / distractor world.

For each seed: a new world and item set (``kb_seed`` = seed), the learned policy (``InteractCompPolicy``)
trained by imitation through the Trainer, then every policy played on the 210 test items in the harness:
answer-only, search-only, over-confident (normal and forced to ask), information-gain asker (normal and
forced), the asker with the context handed over (full-with-context), and the learned policy (normal and
forced). Reports accuracy, interaction rate, rounds, ECE and the share of answers naming the popular
distractor, beside the paper's headline (best model 13.73 % normal, ~71.5 % with the context, GPT-5 > 24 %
forced). A turn-flip check asks whether the learned policy's forced answers depend on the replies it got.

    .venv/bin/python experiments/interactcomp.py [--seeds 3] [--epochs 10] [--publish]
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sequence  # noqa: E402,F401  (registers the interactcomp task)
from graphattn.config import Config  # noqa: E402
from graphattn.results import Results, add_output_args  # noqa: E402
from graphattn.training import Trainer  # noqa: E402
from sequence.interactcomp.env import (IDK, NO, YES, Observation, Responder, SearchEngine, Turn,  # noqa: E402
                                       run_episodes, summarise)
from sequence.interactcomp.policies import AnswerOnly, InfoGainAsker, OverConfident, SearchOnly  # noqa: E402

PAPER = {  # project page table, mode "full" unless named (acc %, CE)
    "best model, normal (GPT-5)": {"accuracy": 13.73, "ece": 68.67},
    "best model, full context": {"accuracy": 71.50, "ece": None},
    "GPT-5, forced ask": {"accuracy": 24.0, "ece": None},
}
METRICS = ("accuracy", "interaction_rate", "rounds", "ece", "abs_calibration_error", "confidence", "distractor_rate")


def turn_flip(model, episodes) -> dict[str, float]:
    """Turn patching on the learned policy's forced episodes: re-ask for the final answer after flipping one
    yes/no reply (each in turn), or after dropping one "i don't know" reply (a reply it should not need).

    Reports the share of tasks whose answer changes when the *first* yes/no reply is flipped, when *any* one
    of them is, and when the first "i don't know" reply is dropped."""
    first, any_, drop, n_fact, n_idk = 0, 0, 0, 0, 0
    for e in episodes:
        if not e.answered:
            continue
        base = Observation(e.item.id, e.item.domain, e.item.question, list(e.history), 10, ("answer",))
        answer = model.act_batch([base])[0].entity
        facts = [i for i, t in enumerate(e.history) if t.action == "ask" and t.reply in (YES, NO)]
        if facts:
            variants = []
            for i in facts:
                t = e.history[i]
                flipped = e.history[:i] + [Turn("ask", t.term, NO if t.reply == YES else YES)] + e.history[i + 1:]
                variants.append(replace(base, history=flipped))
            changed = [a.entity != answer for a in model.act_batch(variants)]
            first += changed[0]
            any_ += any(changed)
            n_fact += 1
        idk = [i for i, t in enumerate(e.history) if t.action == "ask" and t.reply == IDK]
        if idk:
            dropped = e.history[:idk[0]] + e.history[idk[0] + 1:]
            drop += model.act_batch([replace(base, history=dropped)])[0].entity != answer
            n_idk += 1
    return {"flip_first_fact_changes_answer": 100 * first / max(n_fact, 1),
            "flip_any_fact_changes_answer": 100 * any_ / max(n_fact, 1), "tasks_with_facts": n_fact,
            "drop_idk_changes_answer": 100 * drop / max(n_idk, 1), "tasks_with_idk": n_idk}


def run_seed(seed: int, args) -> tuple[dict, dict]:
    config = Config("InteractCompPolicy", "interactcomp", config_dict={
        "seed": seed, "kb_seed": seed, "epochs": args.epochs, "stopping_step": args.epochs,
        "train_items": args.train_items, "device": "cpu", "num_threads": 1, "log_level": "WARNING",
        "show_progress": sys.stderr.isatty()})
    trainer = Trainer.from_config(config)
    learned_test = trainer.fit()
    model, data = trainer.model.eval(), trainer.task.data
    kb, items = data.kb, data.items["test"]
    engine, responder = SearchEngine(kb, int(config["top_k"])), Responder(kb.num_attributes, kb.num_values)
    plays = [("answer-only", AnswerOnly(kb), "normal"), ("search-only", SearchOnly(kb), "normal"),
             ("over-confident", OverConfident(kb), "normal"), ("over-confident", OverConfident(kb), "forced_ask"),
             ("info-gain asker", InfoGainAsker(kb), "normal"), ("info-gain asker", InfoGainAsker(kb), "forced_ask"),
             ("full-with-context", InfoGainAsker(kb), "with_context"),
             ("learned (GraphAttention)", model, "normal"), ("learned (GraphAttention)", model, "forced_ask")]
    rows, flip = {}, {}
    for name, policy, mode in plays:
        episodes = run_episodes(items, policy, engine, responder, mode, int(config["max_rounds"]),
                                int(config["enforce_ask_min"]))
        rows[f"{name} | {mode}"] = summarise(episodes)
        if policy is model and mode == "forced_ask":
            flip = turn_flip(model, episodes)
    rows["_learned_trainer_test"] = learned_test
    return rows, flip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--train-items", type=int, default=3000)
    add_output_args(ap, "interactcomp")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Results.from_args("interactcomp", args)

    per_seed, flips = [], []
    for seed in range(args.seeds):
        rows, flip = run_seed(seed, args)
        per_seed.append(rows)
        flips.append(flip)
        print(f"seed {seed}: learned normal {rows['learned (GraphAttention) | normal']['accuracy']:.1f} %, "
              f"forced {rows['learned (GraphAttention) | forced_ask']['accuracy']:.1f} %", flush=True)

    names = [k for k in per_seed[0] if not k.startswith("_")]
    table = {}
    header = f"{'policy':26s} {'mode':13s} {'acc %':>13s} {'IR %':>6s} {'rounds':>6s} {'ECE':>12s} {'conf':>5s} {'distr %':>7s}"
    print(header)
    for key in names:
        vals = {m: [r[key][m] for r in per_seed] for m in METRICS}
        table[key] = {m: {"mean": float(np.mean(v)), "std": float(np.std(v)), "per_seed": v} for m, v in vals.items()}
        name, mode = key.split(" | ")
        t = table[key]
        print(f"{name:26s} {mode:13s} {t['accuracy']['mean']:6.1f} +- {t['accuracy']['std']:4.1f} "
              f"{t['interaction_rate']['mean']:6.1f} {t['rounds']['mean']:6.2f} {t['ece']['mean']:5.1f} +- "
              f"{t['ece']['std']:4.1f} {t['confidence']['mean']:5.1f} {t['distractor_rate']['mean']:7.1f}")
    for name, ref in PAPER.items():
        ece = "-" if ref["ece"] is None else f"{ref['ece']:.2f}"
        print(f"paper: {name:40s} acc {ref['accuracy']:6.2f} %   CE {ece}")
    flip = {k: float(np.mean([f[k] for f in flips])) for k in flips[0]}
    print(f"turn patching (learned, forced): flipping the first yes/no reply changes the answer in "
          f"{flip['flip_first_fact_changes_answer']:.1f} % of tasks, flipping any one of them in "
          f"{flip['flip_any_fact_changes_answer']:.1f} %; dropping an 'i don't know' reply in "
          f"{flip['drop_idk_changes_answer']:.1f} %")

    lf, ln = table["learned (GraphAttention) | forced_ask"], table["learned (GraphAttention) | normal"]
    checks = {
        "answer-only and search-only near 0 %": max(table["answer-only | normal"]["accuracy"]["mean"],
                                                    table["search-only | normal"]["accuracy"]["mean"]) < 5,
        "ask-based policies high (info-gain asker >= 80 %)": table["info-gain asker | normal"]["accuracy"]["mean"] >= 80,
        "full-with-context near ceiling (>= 95 %)": table["full-with-context | with_context"]["accuracy"]["mean"] >= 95,
        "forcing asks raises the over-confident policy's accuracy":
            table["over-confident | forced_ask"]["accuracy"]["mean"] > table["over-confident | normal"]["accuracy"]["mean"] + 20,
        "forcing asks raises the learned policy's accuracy in every seed":
            all(f > n + 20 for f, n in zip(lf["accuracy"]["per_seed"], ln["accuracy"]["per_seed"])),
        "over-confident policies have large ECE (> 50)": min(table["over-confident | normal"]["ece"]["mean"],
                                                             ln["ece"]["mean"]) > 50,
    }
    for k, v in checks.items():
        print(f"check {'PASS' if v else 'FAIL'}: {k}")
    out.write_json("interactcomp.json", {"table": table, "paper": PAPER, "turn_flip": flip,
                                         "learned_trainer_test": [r["_learned_trainer_test"] for r in per_seed],
                                         "checks": checks, "args": vars(args) | {"out": str(args.out)}},
                   seeds=list(range(args.seeds)))
    plot(table, out)


def plot(table, out) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    keys = list(table)
    labels = [k.replace(" | ", "\n") for k in keys]
    x = np.arange(len(keys))
    fig, ax = plt.subplots(figsize=(13, 4.2))
    acc = [table[k]["accuracy"]["mean"] for k in keys]
    ece = [table[k]["ece"]["mean"] for k in keys]
    ax.bar(x - 0.2, acc, 0.4, yerr=[table[k]["accuracy"]["std"] for k in keys], label="accuracy %")
    ax.bar(x + 0.2, ece, 0.4, yerr=[table[k]["ece"]["std"] for k in keys], label="ECE (x100)")
    ax.axhline(13.73, color="k", ls="--", lw=0.8, label="paper best, normal (13.73 %)")
    ax.axhline(71.5, color="k", ls=":", lw=0.8, label="paper best, with context (71.5 %)")
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylabel("percent")
    ax.set_title("InteractComp miniature: 210 test items, mean over seeds")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    out.save_figure(fig, "interactcomp.png")
    plt.close(fig)


if __name__ == "__main__":
    main()
