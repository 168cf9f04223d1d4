"""Attention paths that explain a KGAT recommendation (the case study of Wang et al., KDD 2019, Sec. 4.5).

A recommendation of item ``i`` to user ``u`` is explained by the paths along which ``i``'s embedding reaches
``u`` through the propagation layers: ``u <- n_1 <- ... <- i`` in the collaborative knowledge graph (CKG),
each hop an edge ``n_{k+1} -> n_k`` (the receiver ``n_k`` attends to ``n_{k+1}``), scored by the product of
the attention weights ``alpha`` of its hops. With L layers, items up to L hops away contribute, so paths have
at most ``max_hops`` (default 3) hops, e.g. the classic KGAT explanation

    user 7 <-[interact]- item 12 <-[informative]- cluster3 <-[informative^-1]- item 40

(the user liked item 12, which shares cluster 3 with item 40). The official repository extracted its case
study by random walks (issue #16); here the top paths are found exactly by a meet-in-the-middle search on
CSR adjacency arrays: partial paths grow backwards from the user and forwards from the item (numpy, whole
frontiers at a time), pruned to nodes within reach of the other end, and joined on their meeting node. At
most ``beam`` partial paths are kept per meeting node; the result is exact whenever no node ends more than
``beam`` partial paths (always on small graphs), and otherwise drops only paths whose every prefix was beaten
``beam`` times. Paths are simple (no node twice). Attention weights are ``model.edge_attention``, the fixed
matrix of the last refresh (``attention_mode: fixed``), or fresh :meth:`KGAT.attention_weights` for
``attention_mode: end_to_end``.

    paths = explain(model, data, user=7, item=40)
    print(format_paths(paths)); plot_paths(paths, "explain.png")
"""
from __future__ import annotations

import math
import os
import pathlib
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from graphattn.io import save_figure

__all__ = ["ExplanationPath", "Recommendation", "PathExplainer", "explain", "format_paths", "plot_paths",
           "top_recommendations_with_paths", "relation_label", "path_weights"]


@dataclass(frozen=True)
class ExplanationPath:
    """One path ``user <- ... <- item``.

    ``nodes`` are CKG node ids (users at ``n_entities + u``, items are entities ``0..n_items-1``), user first;
    hop ``k`` is the edge ``nodes[k+1] -> nodes[k]`` of relation ``relations[k]`` with attention ``weights[k]``;
    ``score`` is the product of ``weights``.
    """

    user: int
    item: int
    nodes: tuple[int, ...]
    relations: tuple[int, ...]
    weights: tuple[float, ...]
    score: float
    node_names: tuple[str, ...]
    relation_labels: tuple[str, ...]
    node_kinds: tuple[str, ...]   # "user" | "item" | "entity"

    def __len__(self) -> int:
        return len(self.relations)

    def __str__(self) -> str:
        parts = [self.node_names[0]]
        for k, (label, w) in enumerate(zip(self.relation_labels, self.weights)):
            parts.append(f"<-[{label} {w:.3g}]- {self.node_names[k + 1]}")
        return " ".join(parts) + f"   (score {self.score:.3g})"


@dataclass(frozen=True)
class Recommendation:
    """A recommended item with its model score and its explaining paths."""

    user: int
    item: int
    score: float
    paths: list[ExplanationPath]


def relation_label(rel: int, n_kg_relations: int, relation_names: list[str] | None = None) -> str:
    """Name of a CKG relation id: ``interact``, a KG relation, ``interacted-by`` or ``<name>^-1``."""
    R = n_kg_relations
    names = list(relation_names) if relation_names is not None and len(relation_names) == R else \
        [f"r{r}" for r in range(R)]
    if rel == 0:
        return "interact"
    if 1 <= rel <= R:
        return str(names[rel - 1])
    if rel == R + 1:
        return "interacted-by"
    if R + 2 <= rel <= 2 * R + 1:
        return f"{names[rel - R - 2]}^-1"
    raise ValueError(f"relation id {rel} outside the CKG's [0, {2 * R + 2})")


def path_weights(model) -> np.ndarray:
    """``(E,)`` attention of every CKG edge that the model propagates with (see the module docstring)."""
    if getattr(model, "attention_mode", "fixed") == "end_to_end" and getattr(model, "use_attention", True):
        w = model.attention_weights()
    else:
        w = model.edge_attention
    return w.detach().to("cpu", torch.float64).reshape(-1).numpy()


def _csr(rows: np.ndarray, cols: np.ndarray, n: int) -> sp.csr_matrix:
    """CSR whose stored values are edge ids (duplicate ``(row, col)`` pairs kept, one per edge)."""
    order = np.argsort(rows, kind="stable")
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
    return sp.csr_matrix((order.astype(np.int64), cols[order], indptr), shape=(n, n))


def _expand(m: sp.csr_matrix, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All stored entries of rows ``ends``: ``(which end, column, edge id)``, vectorised."""
    start, stop = m.indptr[ends], m.indptr[ends + 1]
    counts = stop - start
    rep = np.repeat(np.arange(len(ends)), counts)
    offsets = np.cumsum(counts) - counts
    pos = start[rep] + np.arange(counts.sum()) - offsets[rep]
    return rep, m.indices[pos].astype(np.int64), m.data[pos]


def _hops(m: sp.csr_matrix, start: int, max_hops: int) -> np.ndarray:
    """Fewest hops from ``start`` to every node following the rows of ``m`` (``max_hops + 1`` = farther)."""
    dist = np.full(m.shape[0], max_hops + 1, np.int64)
    dist[start] = 0
    frontier = np.array([start])
    for k in range(1, max_hops + 1):
        _, nxt, _ = _expand(m, frontier)
        nxt = np.unique(nxt[dist[nxt] > k])
        dist[nxt] = k
        frontier = nxt
        if not len(frontier):
            break
    return dist


def _top_per_end(nodes: np.ndarray, eids: np.ndarray, scores: np.ndarray, beam: int):
    """Keep the ``beam`` best partial paths per end node."""
    ends = nodes[:, -1]
    order = np.lexsort((-scores, ends))
    ends_sorted = ends[order]
    first = np.searchsorted(ends_sorted, ends_sorted, side="left")
    keep = order[np.arange(len(order)) - first < beam]
    return nodes[keep], eids[keep], scores[keep]


class PathExplainer:
    """The CKG of a trained KGAT in CSR form plus its attention weights, reused across :meth:`explain` calls.

    Args:
        model: a :class:`recsys.models.KGAT` (anything with ``edge_index``, ``edge_type``, ``n_entities``,
            ``edge_attention``).
        data: its :class:`recsys.data.RecDataset` (names and sizes).
        weights: ``(E,)`` edge weights overriding the model's (e.g. to explain with another attention).
        beam: partial paths kept per node (see the module docstring).
    """

    def __init__(self, model, data, weights: np.ndarray | torch.Tensor | None = None, beam: int = 256):
        if beam < 1:
            raise ValueError(f"beam must be >= 1, got {beam}")
        self.data, self.beam = data, int(beam)
        self.n_users, self.n_items, self.n_entities = data.n_users, data.n_items, data.n_entities
        self.n_kg_relations = data.n_relations
        ei = model.edge_index.detach().cpu().numpy().astype(np.int64)
        self.src, self.dst = ei[0], ei[1]
        self.rel = model.edge_type.detach().cpu().numpy().astype(np.int64)
        self.n_nodes = self.n_entities + self.n_users
        w = path_weights(model) if weights is None else np.asarray(
            weights.detach().cpu() if isinstance(weights, torch.Tensor) else weights, dtype=np.float64).reshape(-1)
        if len(w) != len(self.src):
            raise ValueError(f"need one weight per CKG edge ({len(self.src)}), got {len(w)}")
        self.weights = w
        self.incoming = _csr(self.dst, self.src, self.n_nodes)   # row = receiver, columns = its senders
        self.outgoing = _csr(self.src, self.dst, self.n_nodes)   # row = sender, columns = its receivers

    # ----------------------------------------------------------------------------------------- names

    def node_kind(self, node: int) -> str:
        if node >= self.n_entities:
            return "user"
        return "item" if node < self.n_items else "entity"

    def node_name(self, node: int) -> str:
        d = self.data
        if node >= self.n_entities:
            u = node - self.n_entities
            return f"user {d.user_tokens[u]}" if d.user_tokens is not None else f"user {u}"
        if node < self.n_items:
            return f"item {d.item_tokens[node]}" if d.item_tokens is not None else f"item {node}"
        return str(d.entity_tokens[node]) if d.entity_tokens is not None else f"entity {node}"

    # ----------------------------------------------------------------------------------------- search

    def _grow(self, m: sp.csr_matrix, start: int, depth: int, reach: np.ndarray, max_hops: int):
        """Partial paths of ``0..depth`` hops from ``start`` along the rows of ``m``; a node at hop ``j`` must
        lie within ``max_hops - j`` hops of the other end (``reach``). Returns one (nodes, eids, scores) per depth."""
        nodes, eids, scores = np.array([[start]]), np.zeros((1, 0), np.int64), np.ones(1)
        out = [(nodes, eids, scores)]
        for j in range(1, depth + 1):
            rep, nxt, eid = _expand(m, nodes[:, -1])
            ok = (reach[nxt] <= max_hops - j) & ~(nodes[rep] == nxt[:, None]).any(1)
            rep, nxt, eid = rep[ok], nxt[ok], eid[ok]
            nodes = np.concatenate([nodes[rep], nxt[:, None]], 1)
            eids = np.concatenate([eids[rep], eid[:, None]], 1)
            scores = scores[rep] * self.weights[eid]
            nodes, eids, scores = _top_per_end(nodes, eids, scores, self.beam)
            out.append((nodes, eids, scores))
            if not len(nodes):
                out.extend([(nodes, eids, scores)] * (depth - j))
                break
        return out

    def explain(self, user: int, item: int, max_hops: int = 3, top: int = 5) -> list[ExplanationPath]:
        """The ``top`` highest-scoring paths ``user <- ... <- item`` of 1..``max_hops`` hops, best first."""
        if not 0 <= int(user) < self.n_users:
            raise ValueError(f"user {user} outside [0, {self.n_users})")
        if not 0 <= int(item) < self.n_items:
            raise ValueError(f"item {item} outside [0, {self.n_items})")
        if max_hops < 1 or top < 1:
            raise ValueError(f"max_hops and top must be >= 1, got max_hops={max_hops}, top={top}")
        u, i = self.n_entities + int(user), int(item)
        to_user = _hops(self.incoming, u, max_hops)    # hops from a node to the user (following edges)
        from_item = _hops(self.outgoing, i, max_hops)  # hops from the item to a node
        if from_item[u] > max_hops:
            return []
        left = self._grow(self.incoming, u, math.ceil(max_hops / 2), from_item, max_hops)
        right = self._grow(self.outgoing, i, max_hops // 2, to_user, max_hops)
        found_nodes, found_eids, found_scores = [], [], []
        for hops in range(1, max_hops + 1):
            a, b = math.ceil(hops / 2), hops // 2
            ln, le, ls = left[a]
            rn, re_, rs = right[b]
            if not len(ln) or not len(rn):
                continue
            order = np.argsort(rn[:, -1], kind="stable")
            rn, re_, rs = rn[order], re_[order], rs[order]
            lo = np.searchsorted(rn[:, -1], ln[:, -1], side="left")
            hi = np.searchsorted(rn[:, -1], ln[:, -1], side="right")
            counts = hi - lo
            li = np.repeat(np.arange(len(ln)), counts)
            ri = lo[li] + np.arange(counts.sum()) - (np.cumsum(counts) - counts)[li]
            # right partial (item, ..., meet) reversed without the meeting node, appended to (user, ..., meet)
            nodes = np.concatenate([ln[li], rn[ri][:, :-1][:, ::-1]], 1)
            eids = np.concatenate([le[li], re_[ri][:, ::-1]], 1)
            scores = ls[li] * rs[ri]
            s = np.sort(nodes, 1)
            ok = (np.diff(s, axis=1) != 0).all(1) & (scores > 0)
            found_nodes.extend(nodes[ok])
            found_eids.extend(eids[ok])
            found_scores.append(scores[ok])
        if not found_nodes:
            return []
        scores = np.concatenate(found_scores)
        best = np.argsort(-scores, kind="stable")[:top]
        return [self._path(int(user), i, found_nodes[k], found_eids[k]) for k in best]

    def _path(self, user: int, item: int, nodes: np.ndarray, eids: np.ndarray) -> ExplanationPath:
        w = self.weights[eids]
        # every hop must be a real edge into the previous node (guards the search's bookkeeping)
        if not (np.array_equal(self.dst[eids], nodes[:-1]) and np.array_equal(self.src[eids], nodes[1:])):
            raise RuntimeError("internal error: explanation path does not follow CKG edges")
        rels = self.rel[eids]
        return ExplanationPath(
            user=user, item=item, nodes=tuple(int(n) for n in nodes), relations=tuple(int(r) for r in rels),
            weights=tuple(float(x) for x in w), score=float(np.prod(w)),
            node_names=tuple(self.node_name(int(n)) for n in nodes),
            relation_labels=tuple(relation_label(int(r), self.n_kg_relations, self.data.relation_names)
                                  for r in rels),
            node_kinds=tuple(self.node_kind(int(n)) for n in nodes))


def explain(model, data, user, item, max_hops: int = 3, top: int = 5, ids: str = "raw") -> list[ExplanationPath]:
    """The ``top`` attention paths explaining why ``model`` (KGAT) recommends ``item`` to ``user``.

    ``ids="raw"`` (default): ``user`` and ``item`` are the dataset's own ids, as :meth:`Recommender.recommend`
    takes and returns them; ``ids="internal"``: 0-based indices. See the module docstring; for many queries
    on one model build a :class:`PathExplainer` once (it takes internal indices).
    """
    from .export import _check_ids

    _check_ids(ids)
    if ids == "raw":
        user, item = int(data.user_index([user])[0]), int(data.item_index([item])[0])
    return PathExplainer(model, data).explain(user, item, max_hops=max_hops, top=top)


@torch.no_grad()
def top_recommendations_with_paths(model, data, user: int, k: int = 5, max_hops: int = 3, top: int = 3,
                                   exclude_train: bool = True) -> list[Recommendation]:
    """The user's top-``k`` items by the model's full-ranking score (training items excluded), each with its
    ``top`` explaining paths."""
    if not 0 <= int(user) < data.n_users:
        raise ValueError(f"user {user} outside [0, {data.n_users})")
    was_training = model.training
    model.eval()
    try:
        user_emb, item_emb = model.full_sort_embeddings()
    finally:
        model.train(was_training)
    scores = (item_emb.double() @ user_emb[int(user)].double()).cpu().numpy()
    if exclude_train:
        row = data.csr("train")[int(user)]
        scores[row.indices] = -np.inf
    k = min(int(k), int(np.isfinite(scores).sum()))
    items = np.lexsort((np.arange(len(scores)), -scores))[:k]
    explainer = PathExplainer(model, data)
    return [Recommendation(int(user), int(i), float(scores[i]), explainer.explain(user, int(i), max_hops, top))
            for i in items]


def format_paths(paths: list[ExplanationPath]) -> str:
    """One numbered line per path: ``1. user 3 <-[interact 0.2]- item 5 <-[genre 0.5]- ... (score ...)``."""
    if not paths:
        return "(no path within the hop limit)"
    return "\n".join(f"{k + 1}. {p}" for k, p in enumerate(paths))


_COLORS = {"user": "#8ecae6", "item": "#ffb703", "entity": "#b7e4c7"}


def plot_paths(paths: list[ExplanationPath], out_png: str | os.PathLike, title: str | None = None) -> pathlib.Path:
    """Draw the paths as a layered graph (user on the left, the item on the right, intermediate nodes by hop),
    arrows in the direction information flows (toward the user), each labelled with relation and attention,
    line width by attention. Written atomically as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not paths:
        raise ValueError("plot_paths needs at least one path")
    if len({(p.user, p.item) for p in paths}) != 1:
        raise ValueError("plot_paths draws the paths of one (user, item) pair")
    depth = max(len(p) for p in paths)
    layers: dict[int, list[int]] = {}
    names, kinds = {}, {}
    edges: dict[tuple, tuple[str, float]] = {}

    def place(layer: int, node: int, name: str, kind: str) -> tuple[int, int]:
        layers.setdefault(layer, [])
        if node not in layers[layer]:
            layers[layer].append(node)
        names[(layer, node)], kinds[(layer, node)] = name, kind
        return layer, node

    for p in paths:
        keys = [place(0 if k == 0 else (depth if k == len(p) else k), n, p.node_names[k], p.node_kinds[k])
                for k, n in enumerate(p.nodes)]
        for k, (label, w) in enumerate(zip(p.relation_labels, p.weights)):
            edges[(keys[k + 1], keys[k], label)] = (label, w)
    tallest = max(len(v) for v in layers.values())
    pos = {}
    for layer, nodes in layers.items():
        for j, node in enumerate(nodes):
            pos[(layer, node)] = (layer * 3.0, (len(nodes) - 1) / 2.0 - j)
    fig = Figure(figsize=(3.2 * depth + 2.5, 0.9 * tallest + 1.4 + 0.15 * len(paths)), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    wmax = max(w for _, w in edges.values()) or 1.0
    for (a, b, _), (label, w) in edges.items():
        (x0, y0), (x1, y1) = pos[a], pos[b]
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0),
                    arrowprops=dict(arrowstyle="-|>", lw=0.8 + 4.0 * w / wmax, color="#555555",
                                    shrinkA=28, shrinkB=28, connectionstyle="arc3,rad=0.0"))
        ax.text((x0 + x1) / 2, (y0 + y1) / 2 + 0.12, f"{label}\n{w:.3g}", ha="center", va="bottom", fontsize=8,
                bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.8))
    for key, (x, y) in pos.items():
        ax.text(x, y, names[key], ha="center", va="center", fontsize=9,
                bbox=dict(boxstyle="round,pad=0.4", fc=_COLORS[kinds[key]], ec="#333333"))
    ax.set_xlim(-1.5, depth * 3.0 + 1.5)
    ax.set_ylim(-(tallest / 2.0) - 0.6, tallest / 2.0 + 0.6)
    ax.set_axis_off()
    p0 = paths[0]
    ax.set_title(title or f"why {p0.node_names[-1]} for {p0.node_names[0]}: top {len(paths)} attention paths "
                          "(arrows: information flow; label: relation, attention)", fontsize=10)
    legend = "\n".join(f"#{k + 1} score {p.score:.3g}: " + " <- ".join(p.node_names) for k, p in enumerate(paths))
    fig.text(0.01, 0.005, legend, fontsize=7, va="bottom", family="monospace")
    out = save_figure(fig, out_png, dpi=110)
    return out
