"""A planted-cluster dataset where the knowledge graph carries the signal collaborative filtering misses.

Items belong to latent clusters. Relation 0 ("informative") links each item to its cluster entity;
relations ``1..n_noise_relations`` link items to random noise entities. Each user likes 1-2 clusters and
draws most interactions from them, picking items by a long-tailed (Zipf) popularity, so most items are
seen by few or no training users: MF cannot place them, while the cluster edge tells where they belong.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from .dataset import RecDataset
from .splits import split_indices


def planted_kg(n_users: int = 600, n_items: int = 1200, n_clusters: int = 24, n_noise_entities: int = 300,
               n_noise_relations: int = 2, noise_links_per_item: int = 2, min_inter: int = 4,
               max_inter: int = 12, noise_rate: float = 0.1, zipf: float = 0.6,
               split: tuple[float, float, float] = (0.6, 0.2, 0.2), seed: int = 2019,
               name: str = "planted-kg") -> RecDataset:
    """Generate the dataset (deterministic under ``seed``).

    Args:
        n_users, n_items: sizes.
        n_clusters: latent item clusters (one cluster entity each).
        n_noise_entities: entities reached only through noise relations.
        n_noise_relations: relation types ``1..n_noise_relations`` that carry no signal.
        noise_links_per_item: noise triples per item.
        min_inter, max_inter: interactions drawn per user (uniform, before deduplication).
        noise_rate: fraction of interactions drawn from all items instead of the liked clusters.
        zipf: exponent of item popularity inside a cluster.
        split: per-user train / valid / test ratios (random order).
    """
    rng = np.random.default_rng(seed)
    cluster = rng.permutation(np.arange(n_items) % n_clusters)  # balanced cluster sizes
    # Zipf popularity inside each cluster, by a random rank.
    order = np.lexsort((rng.random(n_items), cluster))
    sizes = np.bincount(cluster, minlength=n_clusters)
    rank = np.empty(n_items, np.int64)
    rank[order] = np.arange(n_items) - np.repeat(np.r_[0, np.cumsum(sizes)[:-1]], sizes)
    weight = 1.0 / (rank + 1.0) ** zipf
    # Sampling inside cluster c: value c + U on the cumulative weights of the cluster's items in [c, c+1).
    w_sorted = weight[order]
    csum = np.cumsum(w_sorted)
    seg_start = np.repeat(np.r_[0, np.cumsum(sizes)[:-1]], sizes)
    seg_total = np.repeat(np.add.reduceat(w_sorted, np.r_[0, np.cumsum(sizes)[:-1]]), sizes)
    before = csum - w_sorted - np.r_[0, csum][seg_start]
    key = cluster[order] + (before + w_sorted) / seg_total
    glob_cdf = np.cumsum(weight) / weight.sum()

    n_like = rng.integers(1, 3, n_users)
    likes = np.stack([rng.integers(0, n_clusters, n_users), rng.integers(0, n_clusters, n_users)], 1)
    counts = rng.integers(min_inter, max_inter + 1, n_users)
    user = np.repeat(np.arange(n_users), counts)
    pick = np.minimum(rng.integers(0, 2, len(user)), n_like[user] - 1)
    c = likes[user, pick]
    in_cluster = order[np.minimum(np.searchsorted(key, c + rng.random(len(user)) * (1 - 1e-12)), n_items - 1)]
    random_item = np.minimum(np.searchsorted(glob_cdf, rng.random(len(user))), n_items - 1)
    item = np.where(rng.random(len(user)) < noise_rate, random_item, in_cluster)
    table = pd.DataFrame({"user": user, "item": item}).drop_duplicates().reset_index(drop=True)
    table["timestamp"] = np.arange(len(table), dtype=np.float64)

    cluster_ent = n_items + cluster
    noise_head = np.repeat(np.arange(n_items), noise_links_per_item)
    noise_rel = rng.integers(1, n_noise_relations + 1, len(noise_head))
    noise_tail = n_items + n_clusters + rng.integers(0, n_noise_entities, len(noise_head))
    kg = np.concatenate([np.stack([np.arange(n_items), np.zeros(n_items, np.int64), cluster_ent], 1),
                         np.stack([noise_head, noise_rel, noise_tail], 1)]).astype(np.int64)
    kg = np.unique(kg, axis=0)

    tr, va, te = split_indices(table["user"].to_numpy(), {"split": {"RS": list(split)}, "order": "RO"},
                               seed=seed, source=name)
    pairs = table[["user", "item"]].to_numpy(np.int64)
    ts = table["timestamp"].to_numpy()
    return RecDataset(
        name=name, n_users=n_users, n_items=n_items, n_entities=n_items + n_clusters + n_noise_entities,
        n_relations=1 + n_noise_relations, train=pairs[tr], valid=pairs[va], test=pairs[te], kg=kg,
        train_time=ts[tr], valid_time=ts[va], test_time=ts[te],
        user_tokens=np.arange(n_users).astype(str), item_tokens=np.arange(n_items).astype(str),
        entity_tokens=np.concatenate([np.char.add("item", np.arange(n_items).astype(str)),
                                      np.char.add("cluster", np.arange(n_clusters).astype(str)),
                                      np.char.add("noise", np.arange(n_noise_entities).astype(str))]),
        relation_names=["informative"] + [f"noise{r}" for r in range(1, n_noise_relations + 1)],
        interactions=table)


def item_clusters(ds: RecDataset) -> np.ndarray:
    """Cluster of every item of a planted-kg dataset, read back from its relation-0 triples."""
    rel0 = ds.kg[ds.kg[:, 1] == 0]
    out = np.full(ds.n_items, -1, np.int64)
    out[rel0[:, 0]] = rel0[:, 2] - ds.n_items
    return out


def planted_attention(ds: RecDataset, edge_index, edge_type, weights) -> dict[str, float]:
    """How a KGAT-style model's edge weights into items split between the informative and the noise relations.

    ``edge_index`` ``(2, E)`` ``[src; dst]``, ``edge_type`` ``(E,)`` in :func:`graphattn.graphs.collaborative_kg`'s
    layout (KG relation ``r`` of the dataset is CKG relation ``r + 1``), ``weights`` ``(E,)``. Returns the mean
    weight per informative / noise edge into an item, the mass per item of each kind (items with an informative
    edge), and ``share_items_informative_wins``: the share of items (with both kinds) whose informative edge
    outweighs their average noise edge; 0.5 means no preference.
    """
    import torch

    src, dst = edge_index
    w = weights.reshape(-1).to(torch.float64)
    into_item = dst < ds.n_items
    informative = into_item & (edge_type == 1)
    noise = into_item & (edge_type >= 2) & (edge_type <= ds.n_relations)
    mass = lambda m: torch.zeros(ds.n_items, dtype=torch.float64).index_add_(0, dst[m], w[m])
    has = torch.bincount(dst[informative], minlength=ds.n_items) > 0
    n_noise = torch.bincount(dst[noise], minlength=ds.n_items)
    both = has & (n_noise > 0)
    return {"mean_weight_informative": float(w[informative].mean()), "mean_weight_noise": float(w[noise].mean()),
            "mass_informative_per_item": float(mass(informative)[has].mean()),
            "mass_noise_per_item": float(mass(noise)[has].mean()),
            "share_items_informative_wins": float((mass(informative)[both] > mass(noise)[both] / n_noise[both])
                                                  .double().mean())}


def load_planted_kg(config: Mapping[str, Any]) -> RecDataset:
    """Registry loader; reads config key ``planted_kg`` (mapping of :func:`planted_kg` arguments) and ``seed``."""
    import inspect

    kwargs = dict(config.get("planted_kg") or {})
    allowed = set(inspect.signature(planted_kg).parameters) - {"name"}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ValueError(f"config key planted_kg: unknown argument(s) {unknown}; expected some of {sorted(allowed)}")
    kwargs.setdefault("seed", int(config.get("seed", 2019)))
    if "split" in kwargs:
        kwargs["split"] = tuple(kwargs["split"])
    return planted_kg(**kwargs)
