"""CHM-Corr / CHM-Corr++ on given patch features: kNN shortlist, patch correspondence, re-ranking by a mask.

"Allowing humans to interactively guide machines where to look does not always improve a human-AI team's
classification accuracy" (Nguyen, Taesiri, Kim, Nguyen, 2024, https://arxiv.org/abs/2404.05238), on the
classifier of "Visual correspondence-based explanations improve AI robustness and human-AI team accuracy"
(Taesiri, Nguyen, Nguyen, NeurIPS 2022).

Steps (spec ``chm-corr-interactive.md``, "The classifier, exactly"):

1. kNN: cosine of the mean-pooled patch features (the global descriptor) ranks every training image; keep
   the top ``n_candidates`` (N = 50).
2. + 3. Correspondence and patch similarity, one bipartite graph per candidate: the 49 query cells receive
   from the 49 candidate cells through a :class:`~graphattn.attention.GraphAttention` whose score is the
   cosine (:class:`CosineScore`) and whose normaliser keeps only each query cell's best-scoring edge
   (:class:`BestMatch`); the message is the candidate cell's feature itself, so the layer returns the
   matched patch and its one-hot weights give the match. The similarity map is the cosine of each query cell
   with its matched cell (one edge weight per query node).
4. Static CHM-Corr importance: a cross-correlation saliency of the query against the candidate (the summed
   positive cosines of a query cell with every candidate cell), min-max normalised to [0, 1] and
   binarised at ``threshold`` (T = 0.55); score = mean of the top-``top_cells`` (5) masked similarities.
5. CHM-Corr++: a user's 7 x 7 mask (binary, or soft for interpolation, see :func:`blend`) replaces step 4;
   score = mean over all 49 cells of similarity x mask (zeros included).
6. Prediction: the majority label among the top K = 20 re-ranked candidates; K grows by one until the vote
   has a unique winner (capped at N; a tie left at N goes to the label ranked first). The explanation is the
   top-5 (query cell, matched cell, cosine) pairs of the best exemplar among the cells in use.

Deviations from the paper: the features are given (synthetic, :mod:`.data`) instead of ResNet-50 layer-4
maps, and the correspondence is the best-cosine cell instead of a CHMNet point transfer (the spec's
stand-in); the unique-winner rule of the interactive app is applied to the static classifier too, so that the
two differ only in their masks.
"""
from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from graphattn.attention import GraphAttention
from graphattn.attention.messages import IdentityMessage
from graphattn.attention.normalizers import Normalizer
from graphattn.attention.scores import Score

from .data import GRID

__all__ = ["CosineScore", "BestMatch", "CHMCorr", "QueryState", "Prediction", "blend", "vote"]

CELLS = GRID * GRID


class CosineScore(Score):
    """Cosine similarity of the two endpoints' features, no parameters, one head.

    Shapes: project: x_dst (..., Nq, D), x_src (..., Nk, D) -> (..., Nq, 1, D), (..., Nk, 1, D);
    edge -> (E, 1); dense: (B, 1, Nq, D), (B, 1, Nk, D) -> (B, 1, Nq, Nk).
    """

    scale = 1.0

    def project(self, x_dst, x_src):
        return F.normalize(x_dst, dim=-1).unsqueeze(-2), F.normalize(x_src, dim=-1).unsqueeze(-2)

    def edge(self, q, k, edge_index, edge_type=None):
        return (q.index_select(0, edge_index[1]) * k.index_select(0, edge_index[0])).sum(-1)

    def dense(self, q, k):
        return torch.matmul(q, k.transpose(-1, -2))


class BestMatch(Normalizer):
    """Hard correspondence: weight 1 on each receiver's highest-scoring incoming edge, 0 elsewhere (ties go to
    the first key on the dense path). Not differentiable; used for matching, not training."""

    def edge(self, scores, edge_index, num_dst, num_src):
        dst = edge_index[1]
        best = torch.full((num_dst, scores.shape[1]), float("-inf"), dtype=scores.dtype, device=scores.device)
        best = best.scatter_reduce(0, dst[:, None].expand_as(scores), scores, reduce="amax")
        return (scores == best.index_select(0, dst)).to(scores.dtype)

    def dense(self, scores, mask):
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        out = F.one_hot(scores.argmax(-1), scores.shape[-1]).to(scores.dtype)
        if mask is not None:
            out = out * mask.any(-1, keepdim=True)
        return out


def blend(model_map: np.ndarray, user_mask: np.ndarray, weight: float) -> np.ndarray:
    """Soft mask ``(1 - weight) * model_map + weight * user_mask``: 0 = the model's own map, 1 = the user's."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must be in [0, 1], got {weight}")
    return (1.0 - weight) * np.asarray(model_map, dtype=np.float64) + weight * np.asarray(user_mask, np.float64)


def vote(ranked_labels: np.ndarray, k: int) -> tuple[int, int]:
    """Majority label among the first ``k``; ``k`` grows until one label wins alone (capped at the list's
    length; a tie left there goes to the tied label ranked first). Returns ``(label, k used)``."""
    ranked = [int(x) for x in ranked_labels]
    if not ranked:
        raise ValueError("cannot vote over an empty ranking")
    k = max(1, min(int(k), len(ranked)))
    while True:
        counts = Counter(ranked[:k]).most_common()
        top = [lab for lab, c in counts if c == counts[0][1]]
        if len(top) == 1:
            return top[0], k
        if k == len(ranked):
            return min(top, key=ranked.index), k
        k += 1


@dataclass
class Prediction:
    """The outcome of one mask: the label, the K used, the candidates (training indices) in re-ranked order
    with their labels and scores, and the top explanation pairs of the best exemplar."""

    label: int
    k: int
    ranking: np.ndarray
    ranked_labels: np.ndarray
    scores: np.ndarray
    pairs: list[tuple[int, int, float]]

    def as_dict(self, top: int = 5) -> dict:
        return {"label": self.label, "k": self.k,
                "exemplars": [{"index": int(i), "label": int(l), "score": round(float(s), 5)}
                              for i, l, s in zip(self.ranking[:top], self.ranked_labels[:top], self.scores[:top])],
                "pairs": [{"query_cell": q, "exemplar_cell": c, "cosine": round(s, 4)} for q, c, s in self.pairs]}


@dataclass
class QueryState:
    """The cached per-query edge weights (the app recomputes only the aggregation and ranking after an edit).

    ``candidates`` (N,) training indices in kNN order; ``sim`` (N, 49) cosine of each query cell with its match;
    ``match`` (N, 49) matched candidate cell; ``saliency`` (N, 49) static importance in [0, 1].
    """

    model: "CHMCorr"
    candidates: np.ndarray
    sim: np.ndarray
    match: np.ndarray
    saliency: np.ndarray
    _memo: dict = field(default_factory=dict, repr=False)

    def importance_map(self) -> np.ndarray:
        """The query-level importance map shown to a user: the static saliency averaged over the shortlist,
        min-max normalised to [0, 1] (49,)."""
        return _minmax(self.saliency.mean(0))

    def default_mask(self) -> np.ndarray:
        """The importance map binarised at the model's threshold (49,) bool: the page's starting selection."""
        return self.importance_map() >= self.model.threshold

    def static(self) -> Prediction:
        """Static CHM-Corr: per-candidate masks from the saliency, mean of the top-5 masked similarities."""
        if "static" not in self._memo:
            masked = self.sim * (self.saliency >= self.model.threshold)
            scores = -np.sort(-masked, axis=1)[:, : self.model.top_cells].mean(1)
            self._memo["static"] = self._rank(scores, self.saliency >= self.model.threshold)
        return self._memo["static"]

    def predict(self, mask) -> Prediction:
        """CHM-Corr++: rank by mean over the 49 cells of similarity x ``mask`` (binary or soft, (49,) or 7 x 7);
        memoised by a hash of the mask."""
        mask = np.asarray(mask, dtype=np.float64).reshape(-1)
        if mask.shape != (CELLS,):
            raise ValueError(f"mask must have {CELLS} cells (7 x 7), got {mask.size}")
        if not np.all(np.isfinite(mask)) or mask.min() < 0:
            raise ValueError("mask values must be finite and >= 0")
        key = hashlib.sha1(mask.tobytes()).hexdigest()
        if key not in self._memo:
            scores = (self.sim * mask[None]).mean(1)
            self._memo[key] = self._rank(scores, np.broadcast_to(mask > 0, self.sim.shape))
        return self._memo[key]

    def _rank(self, scores: np.ndarray, used: np.ndarray) -> Prediction:
        order = np.argsort(-scores, kind="stable")
        ranking = self.candidates[order]
        labels = self.model.train_labels[ranking]
        label, k = vote(labels, self.model.k)
        best = order[0]
        cells = np.flatnonzero(used[best])
        cells = cells[np.argsort(-self.sim[best, cells], kind="stable")][: self.model.top_cells]
        pairs = [(int(c), int(self.match[best, c]), float(self.sim[best, c])) for c in cells]
        return Prediction(label, k, ranking, labels, scores[order], pairs)


def _minmax(x: np.ndarray, axis=None) -> np.ndarray:
    lo, hi = x.min(axis=axis, keepdims=True), x.max(axis=axis, keepdims=True)
    return (x - lo) / np.maximum(hi - lo, 1e-12)


class CHMCorr:
    """The CHM-Corr classifier over a training set of patch features.

    Args:
        train_features: ``(n, 49, D)`` patch features of the training images.
        train_labels: ``(n,)`` integer labels.
        n_candidates: N, the kNN shortlist (50).
        k: K, the voters (20).
        top_cells: cells averaged by the static score and shown as explanation pairs (5).
        threshold: T, the binarisation threshold of the static importance map (0.55).
    """

    def __init__(self, train_features, train_labels, *, n_candidates: int = 50, k: int = 20, top_cells: int = 5,
                 threshold: float = 0.55):
        feats = torch.as_tensor(np.asarray(train_features), dtype=torch.float32)
        if feats.dim() != 3 or feats.shape[1] != CELLS:
            raise ValueError(f"train_features must be (n, {CELLS}, D), got {tuple(feats.shape)}")
        labels = np.asarray(train_labels)
        if labels.shape != (feats.shape[0],):
            raise ValueError(f"train_labels must be ({feats.shape[0]},), got {labels.shape}")
        if not 1 <= k <= n_candidates <= feats.shape[0]:
            raise ValueError(f"need 1 <= k ({k}) <= n_candidates ({n_candidates}) <= training images "
                             f"({feats.shape[0]})")
        self.train_features, self.train_labels = feats, labels.astype(np.int64)
        self.n_candidates, self.k, self.top_cells, self.threshold = n_candidates, k, top_cells, float(threshold)
        self.global_desc = F.normalize(feats.mean(1), dim=-1)                         # (n, D)
        dim = feats.shape[-1]
        self.matcher = GraphAttention(dim, score=CosineScore(), normalizer=BestMatch(),
                                      message=IdentityMessage(dim), update="none").eval()

    def shortlist(self, query: Tensor) -> np.ndarray:
        """Training indices of the N nearest global descriptors (cosine), nearest first."""
        sims = self.global_desc @ F.normalize(query.mean(0), dim=-1)
        return torch.topk(sims, self.n_candidates).indices.numpy()

    @torch.no_grad()
    def query(self, features) -> QueryState:
        """Shortlist and match one query ``(49, D)``; the returned state re-ranks for any mask."""
        q = torch.as_tensor(np.asarray(features), dtype=torch.float32)
        if q.shape != (CELLS, self.train_features.shape[-1]):
            raise ValueError(f"query must be ({CELLS}, {self.train_features.shape[-1]}), got {tuple(q.shape)}")
        cand = self.shortlist(q)
        keys = self.train_features[torch.as_tensor(cand)]                            # (N, 49, D)
        xq = q.expand(len(cand), -1, -1)
        matched, attn = self.matcher(xq, x_src=keys, return_attention=True)          # (N, 49, D), (N, 1, 49, 49)
        sim = F.cosine_similarity(xq, matched, dim=-1)                               # (N, 49)
        match = attn.weights[:, 0].argmax(-1)                                        # (N, 49)
        qn, kn = F.normalize(q, dim=-1), F.normalize(keys, dim=-1)
        corr = torch.relu(torch.einsum("qd,nkd->nqk", qn, kn)).sum(-1)               # (N, 49) cross-correlation
        return QueryState(self, cand, sim.numpy().astype(np.float64), match.numpy(),
                          _minmax(corr.numpy().astype(np.float64), axis=1))
