"""Why KGAT's official attention does not favour the informative relation of planted-kg (issue #20).

Measures, on the ``planted-kg`` data of ``experiments/kgat_planted.py`` (same config: lr 5e-3, planted-kg
defaults), with KGAT trained by a loop that mirrors ``Trainer.train_epoch`` (the task's samplers, the model's
losses, its two Adam optimisers, ``on_epoch_end``) so that probes can run between steps:

1. ``schedules``: for the official schedule (``attention_mode: fixed``: CF phase, KG/TransR phase, attention
   refreshed from the TransR parameters after the KG phase), ``end_to_end`` (attention recomputed with gradient
   in every CF step, both losses) and ``end_to_end`` without TransR (``use_kge: false``), per epoch:
   the losses; the gradient norms that each phase's loss actually puts on the relation projections ``W_r``,
   relation embeddings ``e_r`` and the embedding table (mean over the phase's steps); the attention share of
   the informative relation (items whose cluster edge outweighs their average noise edge, 0.5 = no preference)
   and the mean score margin ``pi(informative) - mean pi(noise)`` before the CF phase, after it and after the KG
   phase (which phase moves the attention where); a gradient probe at the epoch's start: the CF gradient that
   *would* reach ``W_r, e_r`` if the attention were differentiable (end-to-end path, eval mode, one batch) next
   to the full-graph TransR gradient, and whether a descent step of each loss raises the margin (cosine of
   ``-grad L`` with ``grad margin`` over ``W_r, e_r``).
2. ``transr_only``: TransR alone (the KG phase, CF frozen: no CF step at all) from the initialisation, the
   attention refreshed each epoch: the share of the informative relation per epoch under the paper's score
   ``pi = (W_r e_t)^T tanh(W_r e_h + e_r)`` and under TransR's own plausibility ``-g(h, r, t)`` (softmax over the
   same neighbourhood), per-relation fit (mean positive distance, link-prediction MRR of the true tail among all
   entities) and what ``pi`` is made of (``||W_r e_t||``, cosine of ``W_r e_t`` with ``tanh(W_r e_h + e_r)``), and the
   share under ``pi`` with every relation's ``(W_r, e_r)`` rescaled to a common norm (same fits, no scale).
3. ``refresh``: the refreshed attention against an independent float64 recomputation from the *current*
   parameters (softmax over all edges into each head, across relation types), the row sums, the sparse matrix the
   CF step propagates with against the refreshed weights, and how far the attention moves over one KG phase
   (so refreshing before instead of after the KG phase would matter).
4. ``data``: per relation of the planted KG, what a translational model can see: heads per tail, the share
   of item pairs sharing a tail that share a cluster, co-interaction lift, connected components of the
   relation's item-entity graph (each component can collapse to one point in ``W_r``'s space, so TransR can fit
   a random relation as well as the planted one).

    python experiments/kgat_attention_diagnosis.py --seeds 0 1 2 3 [--epochs 40] [--publish]
    python experiments/kgat_attention_diagnosis.py --seeds 0 1 2 3 --epochs 15 --init_check --publish
        # only: TransR alone from our W_r initialisation vs the official TensorFlow one (kgat_attention_init.json)

Writes ``kgat_attention_diagnosis.json`` and ``kgat_attention_diagnosis.png`` into
``results/kgat_attention_diagnosis/`` (``--publish``: also ``docs/results/kgat_attention_diagnosis/``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import recsys  # noqa: E402,F401
from graphattn.config import Config  # noqa: E402
from graphattn.ops import edge_softmax, typed_linear  # noqa: E402
from graphattn.results import Results, add_output_args  # noqa: E402
from graphattn.training import Trainer  # noqa: E402
from recsys.data.synthetic import item_clusters, planted_attention  # noqa: E402
from recsys.sampler import BPRSampler, KGSampler  # noqa: E402

SCHEDULES = {   # name -> KGAT overrides
    "official": {},
    "end_to_end": {"attention_mode": "end_to_end"},
    "end_to_end_cf_only": {"attention_mode": "end_to_end", "use_kge": False},
}


def build(seed: int, lr: float, overrides: dict) -> Trainer:
    cfg = Config("KGAT", "planted-kg", config_dict={
        "seed": seed, "learning_rate": lr, "show_progress": False, "log_level": "WARNING", "epochs": 1000,
        **overrides})
    return Trainer.from_config(cfg, None)


# ------------------------------------------------------------------------------------------- measurements

def groups(model, data) -> dict[str, list[int]]:
    """CKG relation ids of the edges into items: the planted KG relations and interacted-by."""
    r = data.n_relations
    return {"informative": [1], "noise": list(range(2, r + 1)), "interacted_by": [r + 1]}


@torch.no_grad()
def edge_terms(model) -> dict[str, torch.Tensor]:
    """Per CKG edge: pi, TransR distance g, ||W_r e_t||, cosine(W_r e_t, tanh(W_r e_h + e_r))."""
    x = model.embedding.weight
    src, dst = model.edge_index
    rel = model.edge_type
    tail = typed_linear(x[src], rel, model.score.W_r)
    head = typed_linear(x[dst], rel, model.score.W_r) + model.score.e_r[rel]
    return {"pi": (tail * torch.tanh(head)).sum(-1), "g": (head - tail).pow(2).sum(-1),
            "tail_norm": tail.norm(dim=-1), "align": F.cosine_similarity(tail, torch.tanh(head), dim=-1)}


@torch.no_grad()
def equalised_scores(model) -> torch.Tensor:
    """pi with every relation's (W_r, e_r) rescaled to the mean Frobenius norm of the W_r: the same directions,
    fits and within-relation ranking, without the per-relation scale that TransR's training leaves."""
    x = model.embedding.weight
    src, dst = model.edge_index
    rel = model.edge_type
    norms = model.score.W_r.norm(dim=(1, 2))
    c = norms.mean() / norms
    W, e = model.score.W_r * c[:, None, None], model.score.e_r * c[:, None]
    return (typed_linear(x[src], rel, W) * torch.tanh(typed_linear(x[dst], rel, W) + e[rel])).sum(-1)


def margin(model, data, scores=None) -> torch.Tensor:
    """Mean over items of pi(informative edge) - mean pi(noise edges) (differentiable when scores is None)."""
    if scores is None:
        scores = model.score.edge(model.embedding.weight, model.embedding.weight, model.edge_index, model.edge_type)[:, 0]
    src, dst = model.edge_index
    rel = model.edge_type
    into = dst < data.n_items
    inf = into & (rel == 1)
    noi = into & (rel >= 2) & (rel <= data.n_relations)
    n = data.n_items
    s_inf = torch.zeros(n, dtype=scores.dtype).index_add(0, dst[inf], scores[inf])
    has_inf = torch.zeros(n).index_add(0, dst[inf], torch.ones(int(inf.sum())))
    s_noi = torch.zeros(n, dtype=scores.dtype).index_add(0, dst[noi], scores[noi])
    n_noi = torch.zeros(n).index_add(0, dst[noi], torch.ones(int(noi.sum())))
    both = (has_inf > 0) & (n_noi > 0)
    return (s_inf[both] / has_inf[both] - s_noi[both] / n_noi[both]).mean()


def share(model, data, weights=None) -> float:
    w = model.attention_weights() if weights is None else weights
    return planted_attention(data, model.edge_index, model.edge_type, w)["share_items_informative_wins"]


def relation_stats(model, data) -> dict[str, dict[str, float]]:
    """Means over the edges into items of each relation group, and the share under the TransR plausibility."""
    t = edge_terms(model)
    dst = model.edge_index[1]
    into = dst < data.n_items
    out = {}
    for name, rels in groups(model, data).items():
        m = into & torch.isin(model.edge_type, torch.tensor(rels))
        out[name] = {k: float(v[m].mean()) for k, v in t.items()}
        out[name]["W_r_fro"] = float(model.score.W_r.detach()[rels].norm(dim=(1, 2)).mean())
        out[name]["e_r_norm"] = float(model.score.e_r.detach()[rels].norm(dim=1).mean())
    plaus = edge_softmax(-t["g"].unsqueeze(1), model.edge_index, model.n_nodes, by="dst")[:, 0]
    equal = edge_softmax(equalised_scores(model).unsqueeze(1), model.edge_index, model.n_nodes, by="dst")[:, 0]
    out["share_pi_scale_equalised"] = planted_attention(data, model.edge_index, model.edge_type, equal)[
        "share_items_informative_wins"]
    out["share_pi"] = share(model, data)
    out["share_plausibility"] = planted_attention(data, model.edge_index, model.edge_type, plaus)[
        "share_items_informative_wins"]
    out["margin_pi"] = float(margin(model, data, t["pi"]))
    return out


@torch.no_grad()
def link_prediction(model, data) -> dict[str, dict[str, float]]:
    """TransR link prediction of the KG triples (item, r, tail): raw rank of the true tail among all entities."""
    x = model.embedding.weight
    kg = torch.as_tensor(data.kg)
    out = {}
    names = list(data.relation_names)
    for r in range(data.n_relations):
        h, t = kg[kg[:, 1] == r][:, 0], kg[kg[:, 1] == r][:, 2]
        W, e = model.score.W_r[r + 1], model.score.e_r[r + 1]
        cand = x[: data.n_entities] @ W.T                              # (n_entities, k)
        query = x[h] @ W.T + e
        dist = torch.cdist(query, cand).pow(2)                        # (T_r, n_entities)
        true = dist.gather(1, t.unsqueeze(1))
        rank = (dist < true).sum(1) + 1
        out[names[r]] = {"mrr": float((1.0 / rank.double()).mean()), "hits@1": float((rank == 1).double().mean()),
                         "pos_distance": float(true.mean())}
    return out


def grad_norms(model, rel_groups) -> dict[str, float]:
    W, e, emb = model.score.W_r.grad, model.score.e_r.grad, model.embedding.weight.grad
    out = {"embedding": 0.0 if emb is None else float(emb.norm())}
    for name, rels in rel_groups.items():
        out[f"W_r_{name}"] = 0.0 if W is None else float(W[rels].norm())
        out[f"e_r_{name}"] = 0.0 if e is None else float(e[rels].norm())
    return out


def relation_grad(model) -> torch.Tensor:
    parts = [p.grad if p.grad is not None else torch.zeros_like(p) for p in (model.score.W_r, model.score.e_r)]
    return torch.cat([p.reshape(-1) for p in parts])


def probe(model, data, cf_probe: BPRSampler, kg_probe: KGSampler) -> dict[str, float]:
    """Gradients at the current parameters: would-be CF (end-to-end path), actual CF (model's mode), TransR,
    and the margin; cosines of each descent direction with the margin's gradient over (W_r, e_r)."""
    was_training, mode = model.training, model.attention_mode
    model.eval()
    rel_groups = groups(model, data)
    out = {}
    grads = {}
    batch_cf = tuple(torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64)) for a in cf_probe.sample())
    batch_kg = tuple(torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64)) for a in kg_probe.sample())
    for name, fn in (("cf_would_be", lambda: (setattr(model, "attention_mode", "end_to_end"), model.cf_loss(*batch_cf))[1][0]),
                     ("cf_actual", lambda: (setattr(model, "attention_mode", mode), model.cf_loss(*batch_cf))[1][0]),
                     ("kg", lambda: model.kg_loss(*batch_kg)[0]),
                     ("margin", lambda: margin(model, data))):
        model.zero_grad(set_to_none=True)
        loss = fn()
        loss.backward()
        model.attention_mode = mode
        out.update({f"{name}_{k}": v for k, v in grad_norms(model, rel_groups).items()})
        out[f"{name}_loss"] = float(loss)
        grads[name] = relation_grad(model)
    model.zero_grad(set_to_none=True)
    for name in ("cf_would_be", "cf_actual", "kg"):
        g, m = -grads[name], grads["margin"]
        out[f"cos_descent_{name}_vs_margin"] = float(F.cosine_similarity(g, m, dim=0)) if g.norm() > 0 else 0.0
    out["cos_cf_would_be_vs_kg_descent"] = float(F.cosine_similarity(grads["cf_would_be"], grads["kg"], dim=0))
    model.train(was_training)
    return out


# ------------------------------------------------------------------------------------------- experiments

def run_schedule(seed: int, lr: float, epochs: int, name: str) -> dict:
    trainer = build(seed, lr, SCHEDULES[name])
    model, task, data = trainer.model, trainer.task, trainer.task.data
    rel_groups = groups(model, data)
    cf_probe = BPRSampler(data.train, data.n_items, 1024, seed=10_000 + seed)
    trip = np.stack([model.edge_index[1].numpy(), model.edge_type.numpy(), model.edge_index[0].numpy()], 1)
    kg_probe = KGSampler(trip, model.n_nodes, model.n_relations, batch_size=len(np.unique(trip[:, 0])),
                         seed=20_000 + seed)
    rows = []
    for epoch in tqdm(range(1, epochs + 1), desc=f"{name} seed {seed}", leave=False):
        row = {"epoch": epoch, "probe": probe(model, data, cf_probe, kg_probe)}
        model.train()
        row["share_before"] = share(model, data)
        row["margin_before"] = float(margin(model, data).detach())
        for phase in task.phases:
            opt, sums, n, losses = trainer.optimizers[phase], {}, 0, []
            for batch in task.batches(phase):
                opt.zero_grad(set_to_none=True)
                loss, _ = model.training_step(phase, batch)
                loss.backward()
                for k, v in grad_norms(model, rel_groups).items():
                    sums[k] = sums.get(k, 0.0) + v
                opt.step()
                losses.append(float(loss))
                n += 1
            row[f"{phase}_loss"] = float(np.mean(losses))
            row[f"{phase}_grad"] = {k: v / n for k, v in sums.items()}
            row[f"share_after_{phase}"] = share(model, data)
            row[f"margin_after_{phase}"] = float(margin(model, data).detach())
        model.on_epoch_end()
        row["share_refreshed"] = planted_attention(
            data, model.edge_index, model.edge_type,
            model.edge_attention if model.attention_mode == "fixed" else model.attention_weights())[
            "share_items_informative_wins"]
        rows.append(row)
    return {"epochs": rows, "final_relations": relation_stats(model, data), "link_prediction": link_prediction(model, data)}


def run_transr_only(seed: int, lr: float, epochs: int) -> dict:
    trainer = build(seed, lr, {})
    model, task, data = trainer.model, trainer.task, trainer.task.data
    opt = trainer.optimizers["kg"]
    rows = [{"epoch": 0, **relation_stats(model, data)}]
    for epoch in tqdm(range(1, epochs + 1), desc=f"transr_only seed {seed}", leave=False):
        model.train()
        losses = []
        for batch in task.batches("kg"):
            opt.zero_grad(set_to_none=True)
            loss, _ = model.training_step("kg", batch)
            loss.backward()
            opt.step()
            losses.append(float(loss))
        model.on_epoch_end()
        rows.append({"epoch": epoch, "kg_loss": float(np.mean(losses)), **relation_stats(model, data)})
    return {"epochs": rows, "link_prediction": link_prediction(model, data)}


def run_init_check(seed: int, lr: float, epochs: int) -> dict:
    """TransR alone (as ``run_transr_only``) from our W_r initialisation (torch's Xavier fans on (R, k, d)) and from
    the official one (TensorFlow's xavier_initializer on [R, d, k]: bound sqrt(6 / (R (d + k))))."""
    out = {}
    for name in ("torch_xavier", "tensorflow_xavier"):
        trainer = build(seed, lr, {})
        model, task, data = trainer.model, trainer.task, trainer.task.data
        if name == "tensorflow_xavier":
            R, k, d = model.score.W_r.shape
            bound = float(np.sqrt(6.0 / (R * (d + k))))
            with torch.no_grad():
                model.score.W_r.uniform_(-bound, bound)
            model.refresh_attention()
        opt = trainer.optimizers["kg"]
        curve, norms = [share(model, data)], [float(model.score.W_r.detach().norm(dim=(1, 2)).mean())]
        for _ in tqdm(range(epochs), desc=f"init {name} seed {seed}", leave=False):
            model.train()
            for batch in task.batches("kg"):
                opt.zero_grad(set_to_none=True)
                model.training_step("kg", batch)[0].backward()
                opt.step()
            model.on_epoch_end()
            curve.append(share(model, data))
            norms.append(float(model.score.W_r.detach().norm(dim=(1, 2)).mean()))
        out[name] = {"share_by_epoch": curve, "W_r_fro_mean_by_epoch": norms}
    return out


def reference_attention(model) -> np.ndarray:
    """alpha(h, r, t) in float64 numpy, written from the paper's equations (independent of the model's code)."""
    x = model.embedding.weight.detach().double().numpy()
    W = model.score.W_r.detach().double().numpy()
    e = model.score.e_r.detach().double().numpy()
    src, dst = model.edge_index.numpy()
    rel = model.edge_type.numpy()
    pi = np.einsum("ek,ek->e", np.einsum("ekd,ed->ek", W[rel], x[src]),
                   np.tanh(np.einsum("ekd,ed->ek", W[rel], x[dst]) + e[rel]))
    alpha = np.empty_like(pi)
    order = np.argsort(dst, kind="stable")
    bounds = np.r_[0, np.cumsum(np.bincount(dst, minlength=model.n_nodes))]
    for h in range(model.n_nodes):
        idx = order[bounds[h]:bounds[h + 1]]
        if len(idx):
            z = np.exp(pi[idx] - pi[idx].max())
            alpha[idx] = z / z.sum()
    return alpha


def run_refresh(seed: int, lr: float, epochs: int) -> dict:
    trainer = build(seed, lr, {})
    model, data = trainer.model, trainer.task.data
    for _ in range(epochs):
        trainer.train_epoch()
    before_kg = model.attention_weights().double().numpy()
    trainer.train_epoch()            # CF phase, KG phase, refresh
    ref = reference_attention(model)
    w = model.edge_attention.double().numpy()
    sums = np.bincount(model.edge_index[1].numpy(), weights=w, minlength=model.n_nodes)
    has = np.bincount(model.edge_index[1].numpy(), minlength=model.n_nodes) > 0
    x = torch.randn(model.n_nodes, 4, dtype=torch.float32)
    via_matrix = model.adjacency.propagate(x)
    direct = torch.zeros(model.n_nodes, 4).index_add(0, model.edge_index[1], model.edge_attention[:, None] * x[model.edge_index[0]])
    # attention from the parameters before this epoch's KG phase vs the refreshed one (refresh timing matters)
    trainer2 = build(seed, lr, {})
    for _ in range(epochs):
        trainer2.train_epoch()
    m2 = trainer2.model
    for batch in trainer2.task.batches("cf"):
        trainer2.train_step("cf", batch)
    after_cf_only = m2.attention_weights().double().numpy()
    return {"max_abs_diff_vs_reference": float(np.abs(ref - w).max()),
            "row_sums_min_max": [float(sums[has].min()), float(sums[has].max())],
            "max_abs_diff_matrix_vs_weights": float((via_matrix - direct).abs().max()),
            "max_abs_change_over_one_epoch": float(np.abs(w - before_kg).max()),
            "max_abs_diff_refresh_before_vs_after_kg_phase": float(np.abs(w - after_cf_only).max()),
            "share_refresh_after_kg": planted_attention(data, model.edge_index, model.edge_type,
                                                        torch.from_numpy(w))["share_items_informative_wins"],
            "share_if_refreshed_before_kg": planted_attention(data, model.edge_index, model.edge_type,
                                                              torch.from_numpy(after_cf_only))["share_items_informative_wins"]}


def data_stats(seed: int) -> dict:
    trainer = build(seed, 5e-3, {"epochs": 1})
    data = trainer.task.data
    cluster = item_clusters(data)
    users_of = [set() for _ in range(data.n_items)]
    for u, i in data.train:
        users_of[i].add(int(u))
    out = {}
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, data.n_items, 20000), rng.integers(0, data.n_items, 20000)
    base_co = np.mean([len(users_of[x] & users_of[y]) > 0 for x, y in zip(a, b) if x != y])
    for r, name in enumerate(data.relation_names):
        kg = data.kg[data.kg[:, 1] == r]
        tails, per_tail = np.unique(kg[:, 2], return_counts=True)
        pairs = []
        for t in tails:
            heads = kg[kg[:, 2] == t, 0]
            pairs += [(x, y) for i, x in enumerate(heads) for y in heads[i + 1:]]
        pairs = np.array(pairs) if pairs else np.zeros((0, 2), np.int64)
        same = float((cluster[pairs[:, 0]] == cluster[pairs[:, 1]]).mean()) if len(pairs) else float("nan")
        co = float(np.mean([len(users_of[x] & users_of[y]) > 0 for x, y in pairs])) if len(pairs) else float("nan")
        # connected components of the relation's bipartite head-tail graph
        parent = {}

        def find(v):
            while parent.setdefault(v, v) != v:
                parent[v] = parent[parent[v]]
                v = parent[v]
            return v
        for h, _, t in kg:
            parent[find(int(h))] = find(int(t))
        comps = np.unique([find(v) for v in list(parent)], return_counts=True)[1]
        out[name] = {"triples": int(len(kg)), "tails": int(len(tails)), "heads_per_tail": float(per_tail.mean()),
                     "pairs_sharing_a_tail": int(len(pairs)), "same_cluster_share": same,
                     "co_interaction_share": co, "components": int(len(comps)),
                     "largest_component": int(comps.max()), "mean_component": float(comps.mean())}
    out["random_pairs"] = {"same_cluster_share": float(1 / len(np.unique(cluster))), "co_interaction_share": float(base_co)}
    return out


# ------------------------------------------------------------------------------------------- report

def summarise(res: dict, seeds: list[int]) -> dict:
    s: dict = {}
    for name, per_seed in res["schedules"].items():
        last = [r["epochs"][-1] for r in per_seed]
        share_curve = np.array([[e["share_refreshed"] for e in r["epochs"]] for r in per_seed])
        d_cf = np.array([[e["margin_after_cf"] - e["margin_before"] for e in r["epochs"]] for r in per_seed])
        entry = {"share_final": [float(share_curve[:, -1].mean()), float(share_curve[:, -1].std())],
                 "share_final_per_seed": [float(v) for v in share_curve[:, -1]],
                 "margin_change_cf_phase_mean": float(d_cf.mean()),
                 "cf_loss_final": float(np.mean([e["cf_loss"] for e in last]))}
        if "kg_loss" in last[0]:
            d_kg = np.array([[e["margin_after_kg"] - e["margin_after_cf"] for e in r["epochs"]] for r in per_seed])
            entry["margin_change_kg_phase_mean"] = float(d_kg.mean())
            entry["kg_loss_final"] = float(np.mean([e["kg_loss"] for e in last]))
        for phase in ("cf", "kg"):
            if f"{phase}_grad" in last[0]:
                entry[f"{phase}_phase_grad_mean"] = {
                    k: float(np.mean([[e[f"{phase}_grad"][k] for e in r["epochs"]] for r in per_seed]))
                    for k in last[0][f"{phase}_grad"]}
        probes = [e["probe"] for r in per_seed for e in r["epochs"]]
        entry["probe_mean"] = {k: float(np.mean([p[k] for p in probes])) for k in probes[0]}
        entry["final_relations_mean"] = {
            g: {k: float(np.mean([r["final_relations"][g][k] for r in per_seed])) for k in per_seed[0]["final_relations"][g]}
            for g in ("informative", "noise", "interacted_by")}
        entry["final_share_plausibility"] = float(np.mean([r["final_relations"]["share_plausibility"] for r in per_seed]))
        entry["final_share_pi_scale_equalised"] = float(np.mean([r["final_relations"]["share_pi_scale_equalised"]
                                                                  for r in per_seed]))
        entry["share_by_epoch_mean"] = [float(v) for v in share_curve.mean(0)]
        s[name] = entry
    t = res["transr_only"]
    curve = np.array([[e["share_pi"] for e in r["epochs"]] for r in t])
    plaus = np.array([[e["share_plausibility"] for e in r["epochs"]] for r in t])
    equal = np.array([[e["share_pi_scale_equalised"] for e in r["epochs"]] for r in t])
    s["transr_only"] = {"share_pi_scale_equalised_final": [float(equal[:, -1].mean()), float(equal[:, -1].std())],
                        "share_pi_by_epoch_mean": [float(v) for v in curve.mean(0)],
                        "share_pi_final": [float(curve[:, -1].mean()), float(curve[:, -1].std())],
                        "share_pi_final_per_seed": [float(v) for v in curve[:, -1]],
                        "share_pi_max_over_epochs_mean": float(curve[:, 1:].max(1).mean()),
                        "share_plausibility_final": [float(plaus[:, -1].mean()), float(plaus[:, -1].std())],
                        "relations_final_mean": {
                            g: {k: float(np.mean([r["epochs"][-1][g][k] for r in t])) for k in t[0]["epochs"][-1][g]}
                            for g in ("informative", "noise", "interacted_by")},
                        "link_prediction_mean": {
                            rel: {k: float(np.mean([r["link_prediction"][rel][k] for r in t]))
                                  for k in t[0]["link_prediction"][rel]} for rel in t[0]["link_prediction"]}}
    return s


def plot(res: dict, out: Results) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    colors = {"official": "C0", "end_to_end": "C1", "end_to_end_cf_only": "C2", "transr_only": "C3"}
    ax = axes[0]
    for name, per_seed in res["schedules"].items():
        curve = np.array([[e["share_refreshed"] for e in r["epochs"]] for r in per_seed])
        x = np.arange(1, curve.shape[1] + 1)
        ax.plot(x, curve.mean(0), color=colors[name], label=name)
        ax.fill_between(x, curve.min(0), curve.max(0), color=colors[name], alpha=0.15)
    curve = np.array([[e["share_pi"] for e in r["epochs"]] for r in res["transr_only"]])
    ax.plot(np.arange(curve.shape[1]), curve.mean(0), color=colors["transr_only"], ls="--", label="TransR only (CF frozen)")
    plaus = np.array([[e["share_plausibility"] for e in r["epochs"]] for r in res["transr_only"]])
    ax.plot(np.arange(plaus.shape[1]), plaus.mean(0), color=colors["transr_only"], ls=":",
            label="TransR only, score -g(h,r,t)")
    ax.axhline(0.5, color="grey", lw=0.8)
    ax.set(xlabel="epoch", ylabel="items whose informative edge wins", ylim=(0, 1.02),
           title="attention share of the informative relation\n(mean, band = min-max over seeds)")
    ax.legend(fontsize=7)
    ax = axes[1]
    for name in ("official", "end_to_end", "end_to_end_cf_only"):
        per_seed = res["schedules"][name]
        cf = np.array([[e["cf_grad"]["W_r_informative"] for e in r["epochs"]] for r in per_seed]).mean(0)
        ax.plot(np.arange(1, len(cf) + 1), cf + 1e-12, color=colors[name], label=f"{name}: CF -> W_informative")
        if "kg_grad" in per_seed[0]["epochs"][0]:
            kg = np.array([[e["kg_grad"]["W_r_informative"] for e in r["epochs"]] for r in per_seed]).mean(0)
            ax.plot(np.arange(1, len(kg) + 1), kg, color=colors[name], ls="--", label=f"{name}: KG -> W_informative")
    ax.set(yscale="log", xlabel="epoch", ylabel="mean gradient norm per step",
           title="what moves W_r of the informative relation\n(0 drawn at 1e-12)")
    ax.legend(fontsize=7)
    ax = axes[2]
    t = res["transr_only"]
    for g, c in (("informative", "C2"), ("noise", "C3"), ("interacted_by", "C7")):
        ax.plot([e["epoch"] for e in t[0]["epochs"]], np.mean([[e[g]["pi"] for e in r["epochs"]] for r in t], 0),
                color=c, label=f"pi, {g}")
        ax.plot([e["epoch"] for e in t[0]["epochs"]], np.mean([[e[g]["g"] for e in r["epochs"]] for r in t], 0),
                color=c, ls="--", label=f"TransR distance g, {g}")
    ax.set(xlabel="TransR epoch (CF frozen)", ylabel="mean over edges into items",
           title="TransR alone: fit (g) vs attention score (pi)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    out.save_figure(fig, "kgat_attention_diagnosis.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--lr", type=float, default=0.005)
    parser.add_argument("--init_check", action="store_true",
                        help="only compare the W_r initialisations (TransR alone for --epochs epochs; writes "
                             "kgat_attention_init.json)")
    add_output_args(parser, "kgat_attention_diagnosis")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.init_check:
        rows = [run_init_check(seed, args.lr, args.epochs) for seed in tqdm(args.seeds, desc="seeds")]
        summary = {}
        for name in ("torch_xavier", "tensorflow_xavier"):
            curve = np.array([r[name]["share_by_epoch"] for r in rows])
            norm = np.array([r[name]["W_r_fro_mean_by_epoch"] for r in rows])
            summary[name] = {"share_by_epoch_mean": [float(v) for v in curve.mean(0)],
                             "W_r_fro_by_epoch_mean": [float(v) for v in norm.mean(0)]}
            print(f"{name:<18} share by TransR epoch: " + " ".join(f"{v:.2f}" for v in curve.mean(0))
                  + f"   ||W_r||_F {norm.mean(0)[0]:.2f} -> {norm.mean(0)[-1]:.2f}")
        out = Results.from_args("kgat_attention_diagnosis", args)
        out.write_json("kgat_attention_init.json", {"args": vars(args), "summary": summary, "per_seed": rows},
                       seeds=args.seeds)
        return
    res: dict = {"schedules": {name: [] for name in SCHEDULES}, "transr_only": [], "refresh": [], "data": []}
    for seed in tqdm(args.seeds, desc="seeds"):
        res["data"].append(data_stats(seed))
        res["refresh"].append(run_refresh(seed, args.lr, 3))
        res["transr_only"].append(run_transr_only(seed, args.lr, args.epochs))
        for name in SCHEDULES:
            res["schedules"][name].append(run_schedule(seed, args.lr, args.epochs, name))
        print(f"seed {seed}: " + ", ".join(
            f"{n} share {res['schedules'][n][-1]['epochs'][-1]['share_refreshed']:.2f}" for n in SCHEDULES)
            + f", TransR-only share {res['transr_only'][-1]['epochs'][-1]['share_pi']:.2f} "
              f"(plausibility score {res['transr_only'][-1]['epochs'][-1]['share_plausibility']:.2f})", flush=True)
    summary = summarise(res, args.seeds)
    summary["refresh"] = res["refresh"]
    summary["data"] = res["data"][0]
    print_summary(summary)
    out = Results.from_args("kgat_attention_diagnosis", args)
    out.write_json("kgat_attention_diagnosis.json", {"args": vars(args), "summary": summary, "per_seed": res},
                   seeds=args.seeds)
    plot(res, out)


def print_summary(s: dict) -> None:
    print("\n== attention share of the informative relation, last epoch (mean ± std over seeds) ==")
    for name in SCHEDULES:
        e = s[name]
        print(f"{name:<20} {e['share_final'][0]:.3f} ± {e['share_final'][1]:.3f}  per seed "
              f"{[round(v, 2) for v in e['share_final_per_seed']]}  margin change per epoch: CF phase "
              f"{e['margin_change_cf_phase_mean']:+.4f}" + (f", KG phase {e['margin_change_kg_phase_mean']:+.4f}"
                                                            if "margin_change_kg_phase_mean" in e else ""))
    t = s["transr_only"]
    print(f"{'transr_only':<20} {t['share_pi_final'][0]:.3f} ± {t['share_pi_final'][1]:.3f}  per seed "
          f"{[round(v, 2) for v in t['share_pi_final_per_seed']]}; with the TransR plausibility -g as the score: "
          f"{t['share_plausibility_final'][0]:.3f} ± {t['share_plausibility_final'][1]:.3f}; pi with the relations' "
          f"scales equalised: {t['share_pi_scale_equalised_final'][0]:.3f} ± {t['share_pi_scale_equalised_final'][1]:.3f}")
    print("TransR only, share by epoch (mean over seeds): "
          + " ".join(f"{v:.2f}" for v in t["share_pi_by_epoch_mean"]))
    print("official, share by epoch (mean over seeds):    "
          + " ".join(f"{v:.2f}" for v in s["official"]["share_by_epoch_mean"]))
    print("\n== gradient norm per step on W_r / e_r of the informative relation, and on the embedding table ==")
    for name in SCHEDULES:
        e = s[name]
        for phase in ("cf", "kg"):
            if f"{phase}_phase_grad_mean" in e:
                g = e[f"{phase}_phase_grad_mean"]
                print(f"{name:<20} {phase} phase: W_inf {g['W_r_informative']:.2e}  W_noise {g['W_r_noise']:.2e}  "
                      f"e_inf {g['e_r_informative']:.2e}  embedding {g['embedding']:.2e}")
        p = e["probe_mean"]
        print(f"{'':<20} probe: CF would-be |dW_inf| {p['cf_would_be_W_r_informative']:.2e} vs KG {p['kg_W_r_informative']:.2e}; "
              f"losses CF {p['cf_actual_loss']:.3f} KG {p['kg_loss']:.3f}; cos(-grad, grad margin) CF would-be "
              f"{p['cos_descent_cf_would_be_vs_margin']:+.3f}, CF actual {p['cos_descent_cf_actual_vs_margin']:+.3f}, "
              f"KG {p['cos_descent_kg_vs_margin']:+.3f}; cos(CF, KG grads) {p['cos_cf_would_be_vs_kg_descent']:+.3f}")
    print("\n== TransR alone (CF frozen), last epoch: per relation group, mean over edges into items ==")
    for g, v in t["relations_final_mean"].items():
        print(f"{g:<14} pi {v['pi']:+.3f}  g {v['g']:.3f}  |W_r e_t| {v['tail_norm']:.3f}  align {v['align']:+.3f}  "
              f"|W_r|_F {v['W_r_fro']:.3f}  |e_r| {v['e_r_norm']:.3f}")
    for rel, v in t["link_prediction_mean"].items():
        print(f"link prediction {rel:<12} MRR {v['mrr']:.3f}  hits@1 {v['hits@1']:.3f}  pos distance {v['pos_distance']:.3f}")
    print("\n== official schedule, last epoch: per relation group ==")
    for g, v in s["official"]["final_relations_mean"].items():
        print(f"{g:<14} pi {v['pi']:+.3f}  g {v['g']:.3f}  |W_r e_t| {v['tail_norm']:.3f}  align {v['align']:+.3f}")
    print(f"official: share under the TransR plausibility score -g {s['official']['final_share_plausibility']:.3f}, "
          f"under pi with the relations' scales equalised {s['official']['final_share_pi_scale_equalised']:.3f}")
    print("\n== refresh checks (per seed) ==")
    for r in s["refresh"]:
        print({k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items()})
    print("\n== planted KG: what a translational model can see ==")
    for k, v in s["data"].items():
        print(k, {a: (round(b, 3) if isinstance(b, float) else b) for a, b in v.items()})


if __name__ == "__main__":
    main()
