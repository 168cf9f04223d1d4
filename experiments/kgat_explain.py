"""KGAT's case study on the planted-kg data: train briefly, reload the run, explain top recommendations.

    python experiments/kgat_explain.py [--epochs 40] [--learning_rate 0.005] [--out DIR] [--publish]

Trains KGAT on ``planted-kg`` exactly as ``run.py --model KGAT --dataset planted-kg`` would (Config, RunDir,
``Trainer.from_config(config, run).fit()``; run folder under a temporary directory unless ``--checkpoint_dir``
is given), reloads the best checkpoint with :func:`recsys.export.load_run`, then for a few users prints the
top attention paths of their top recommendation (:mod:`recsys.explain`) and draws the first one. It also
reports what the paths and the attention say about the planted structure: relation 0 ("informative") links
each item to its latent cluster, relations 1-2 are noise, so a good explanation runs through the recommended
item's cluster (``user <- liked item <- cluster <- item``) or through similar users, and the attention into
items should favour the cluster edge over noise edges.

Writes ``<out>/kgat_explain.json`` (every printed figure) and ``<out>/kgat_explain.png`` (the first explanation);
``<out>`` defaults to ``results/kgat_explain/``, and ``--publish`` also copies both into
``docs/results/kgat_explain/``.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import recsys  # noqa: E402,F401  (registers the recsys task, models and datasets)
from graphattn.config import Config  # noqa: E402
from graphattn.results import Results, add_output_args  # noqa: E402
from graphattn.training import RunDir, Trainer  # noqa: E402
from recsys.data.synthetic import item_clusters  # noqa: E402
from recsys.explain import PathExplainer, format_paths, plot_paths  # noqa: E402
from recsys.export import embeddings, load_run  # noqa: E402


def attention_by_relation(model, data) -> dict[str, float]:
    """Mean attention an item gives to its edges of each incoming relation (KG relations and interacted-by)."""
    w = model.edge_attention.cpu().numpy()
    dst, rel = model.edge_index[1].cpu().numpy(), model.edge_type.cpu().numpy()
    into_items = dst < data.n_items
    R = data.n_relations
    names = {R + 1: "interacted-by", **{r + 1: data.relation_names[r] for r in range(R)}}
    out = {}
    for r, name in names.items():
        sel = into_items & (rel == r)
        if sel.any():
            out[name] = float(w[sel].mean())
    return out


def cluster_vs_noise(model, data) -> float:
    """Share of items whose cluster (informative) edge gets more attention than their mean noise edge."""
    w = model.edge_attention.cpu().numpy()
    dst, rel = model.edge_index[1].cpu().numpy(), model.edge_type.cpu().numpy()
    n, R = data.n_items, data.n_relations
    informative = np.zeros(n)
    noise_sum, noise_cnt = np.zeros(n), np.zeros(n)
    sel = (dst < n) & (rel == 1)
    informative[dst[sel]] = w[sel]
    sel = (dst < n) & (rel >= 2) & (rel <= R)
    np.add.at(noise_sum, dst[sel], w[sel])
    np.add.at(noise_cnt, dst[sel], 1)
    has = noise_cnt > 0
    return float((informative[has] > noise_sum[has] / noise_cnt[has]).mean())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--learning_rate", type=float, default=0.005)
    p.add_argument("--users", type=int, default=4, help="users whose top recommendation is explained")
    p.add_argument("--top", type=int, default=4, help="paths per explanation")
    p.add_argument("--checkpoint_dir", default=None, help="keep the run folder here (default: a temporary folder)")
    add_output_args(p, "kgat_explain")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    out = Results.from_args("kgat_explain", args)

    with tempfile.TemporaryDirectory() as tmp:
        config = Config("KGAT", "planted-kg", config_dict={
            "epochs": args.epochs, "eval_step": 5, "learning_rate": args.learning_rate, "device": "cpu",
            "num_threads": 1, "show_progress": False, "log_level": "WARNING",
            "checkpoint_dir": args.checkpoint_dir or tmp})
        with RunDir.create(config) as run:
            test = Trainer.from_config(config, run).fit()   # seeds from config["seed"]
            evals = run.history["evaluations"]
        best_valid = max(e["recall@20"] for e in evals)
        print(f"trained KGAT {args.epochs} epochs (lr {args.learning_rate}); best valid recall@20 "
              f"{best_valid:.4f}; test recall@20 {test['recall@20']:.4f} "
              f"ndcg@20 {test['ndcg@20']:.4f}")
        model, data, _ = load_run(run.path)

    init = type(model)(config, data)   # only for the initial (per-relation normalised) attention
    print("mean attention of an item on its incoming edges, by relation (initial -> trained):")
    before, after = attention_by_relation(init, data), attention_by_relation(model, data)
    for name in after:
        print(f"  {name:14s} {before[name]:.4f} -> {after[name]:.4f}")
    wins = {"initial": cluster_vs_noise(init, data), "trained": cluster_vs_noise(model, data)}
    print(f"items whose cluster edge outweighs their mean noise edge: {wins['initial']:.3f} -> "
          f"{wins['trained']:.3f}")

    clusters = item_clusters(data)
    explainer = PathExplainer(model, data)
    user_emb, item_emb = embeddings(model)
    scores = (user_emb.double() @ item_emb.double().T).numpy()
    train_csr = data.csr("train")
    scores[train_csr.nonzero()] = -np.inf
    top1 = scores.argmax(1)
    heldout = (data.csr("valid") + data.csr("test")).tocsr()
    hit = np.asarray(heldout[np.arange(data.n_users), top1]).ravel() > 0

    # statistics of the best path over every user's top-1 recommendation
    kinds, through_cluster, n_paths, longer = Counter(), 0, 0, Counter()
    for u in range(data.n_users):
        paths = explainer.explain(u, int(top1[u]), max_hops=3, top=1)
        if not paths:
            kinds["none within 3 hops"] += 1
            # the score is e_u* . e_i*, so neighbourhoods up to 2L hops apart still meet
            far = explainer.explain(u, int(top1[u]), max_hops=6, top=1)
            longer[len(far[0]) if far else "none"] += 1
            continue
        best = paths[0]
        kinds[" <- ".join(best.relation_labels)] += 1
        n_paths += 1
        own_cluster = data.n_items + clusters[top1[u]]
        through_cluster += own_cluster in best.nodes
    print(f"best explaining path of each user's top-1 recommendation ({data.n_users} users), by relation chain:")
    for chain, n in kinds.most_common(6):
        print(f"  {n:4d}  {chain}")
    print(f"  best path passes through the recommended item's planted cluster: {through_cluster}/{n_paths}")
    if longer:
        print(f"  without a path within 3 hops, hops of the best path within 6: {dict(sorted(longer.items(), key=str))}")

    shown = [u for u in np.flatnonzero(hit)[: args.users]]
    print(f"\nexplanations of {len(shown)} top-1 recommendations that are held-out hits:")
    explanations = []
    for k, u in enumerate(shown):
        i = int(top1[u])
        liked = clusters[train_csr[u].indices]
        print(f"\nuser {u} (training items' clusters {sorted(Counter(liked.tolist()).items())}) -> item {i} "
              f"(cluster {clusters[i]}), score {scores[u, i]:.3f}")
        paths = explainer.explain(int(u), i, max_hops=3, top=args.top)
        print(format_paths(paths))
        explanations.append({"user": int(u), "training_item_clusters": sorted(Counter(liked.tolist()).items()),
                             "item": i, "item_cluster": int(clusters[i]), "score": float(scores[u, i]),
                             "paths": [dataclasses.asdict(path) for path in paths]})
        if k == 0 and paths:
            png = plot_paths(paths, out.path("kgat_explain.png"))
            out.copy_file(png)
            print(f"wrote {png}" + (f" and {out.publish_dir / png.name}" if out.publish_dir else ""))
    out.write_json("kgat_explain.json", {
        "args": vars(args),
        "training": {"epochs": args.epochs, "learning_rate": args.learning_rate, "best_valid_recall@20": best_valid,
                     "test": dict(test)},
        "attention_by_relation": {"initial": before, "trained": after},
        "share_items_cluster_edge_wins": wins,
        "best_path_chains": dict(kinds.most_common()), "best_path_through_cluster": through_cluster,
        "users_with_path_within_3_hops": n_paths, "hops_of_best_path_within_6": {str(k): v for k, v in longer.items()},
        "explanations": explanations}, seeds=[int(config["seed"])])
    return 0


if __name__ == "__main__":
    sys.exit(main())
