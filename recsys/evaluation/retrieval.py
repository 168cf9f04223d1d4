"""Serving-side top-K retrieval over item embeddings (faiss or exact torch), with saved indexes.

    r = Retriever.from_embeddings(user_emb, item_emb, exclude_csr)   # e.g. dataset.csr("train")
    items, scores = r.recommend(np.array([0, 5]), k=10)
    r.save("items.faiss"); r2 = Retriever.load("items.faiss", user_emb, exclude_csr)
    Retriever(item_emb, index="IVF1024,PQ16", faiss_params="nprobe=16", shards=4)   # ANN over 4 shards

A sharded index (``IndexShards``, see :mod:`.indexes`) is saved as one ``.npz`` holding each shard's
serialised faiss index in id order; :meth:`Retriever.load` reads either format.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from graphattn.io import atomic_path
from .evaluator import SPARE, exact_candidates, faiss_candidates, rerank
from .indexes import _np32, build_faiss_index, index_shards, is_sharded, reconstruct_all, shard_list


class Retriever:
    """Top-K items for query vectors by inner product.

    Args:
        item_emb: ``(I, d)`` item embeddings (used to re-score candidates exactly).
        backend: ``"faiss"`` or ``"exact"``.
        index: faiss factory string (``"Flat"``, ``"HNSW32"``, ``"IVF64,Flat"``, ``"IVF256,PQ16"``,
            ``"Shards4,Flat"``, ...).
        user_emb: ``(U, d)``, enables ``recommend(user_ids, k)``.
        exclude: ``(U, I)`` CSR of items never to return for a user id (e.g. training items).
        faiss_index: an already built faiss index (``faiss_params`` / ``shards`` do not apply to it).
        faiss_params: faiss parameter string, e.g. ``"nprobe=16"``, ``"efSearch=128"``.
        shards: cut the items into this many contiguous id ranges with one index each (``IndexShards``).

    Candidates are re-scored exactly with ``item_emb``; for a compressed (PQ) index loaded from disk the
    item embeddings are the codes' reconstruction, so scores are approximate there.
    """

    def __init__(self, item_emb: torch.Tensor | np.ndarray | None, backend: str = "faiss", index: str = "Flat",
                 user_emb: torch.Tensor | np.ndarray | None = None, exclude: sp.spmatrix | None = None,
                 faiss_index: Any = None, faiss_params: str | None = None, shards: int | None = None) -> None:
        if backend not in ("faiss", "exact"):
            raise ValueError(f"backend must be 'faiss' or 'exact', got {backend!r}")
        if item_emb is None and faiss_index is None:
            raise ValueError("Retriever needs item_emb or a built faiss index")
        if backend == "exact" and item_emb is None:
            raise ValueError("the exact backend needs item_emb")
        self.backend, self.index_name, self.faiss_params, self.shards = backend, index, faiss_params, shards
        self.item_emb = None if item_emb is None else torch.as_tensor(_np32(item_emb))
        self.user_emb = None if user_emb is None else torch.as_tensor(_np32(user_emb))
        self.exclude = None if exclude is None else sp.csr_matrix(exclude)
        self.index = faiss_index
        if backend == "faiss" and self.index is None:
            self.index = build_faiss_index(self.item_emb, index, faiss_params, shards)
        self.n_items = int(self.item_emb.shape[0]) if self.item_emb is not None else int(self.index.ntotal)
        if self.exclude is not None and self.exclude.shape[1] != self.n_items:
            raise ValueError(f"exclude has {self.exclude.shape[1]} columns, expected n_items={self.n_items}")

    @classmethod
    def from_embeddings(cls, user_emb: torch.Tensor | np.ndarray, item_emb: torch.Tensor | np.ndarray,
                        exclude: sp.spmatrix | None = None, backend: str = "faiss",
                        index: str = "Flat", faiss_params: str | None = None,
                        shards: int | None = None) -> "Retriever":
        return cls(item_emb, backend=backend, index=index, user_emb=user_emb, exclude=exclude,
                   faiss_params=faiss_params, shards=shards)

    def recommend(self, users_or_emb: np.ndarray | torch.Tensor | list[int], k: int = 10,
                  exclude: sp.spmatrix | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(items (Q, k) int64, scores (Q, k) float)`` for user ids (1-D ints, needs ``user_emb``) or query
        vectors ``(Q, d)``. ``exclude`` rows align with the queries; for user ids it defaults to the
        rows of the ``exclude`` given at construction. Missing slots are item -1, score -inf."""
        q = torch.as_tensor(np.asarray(users_or_emb) if isinstance(users_or_emb, list) else users_or_emb)
        if q.ndim == 1:
            if self.user_emb is None:
                raise ValueError("recommend(user_ids) needs user_emb; build with Retriever.from_embeddings or "
                                 "pass query vectors of shape (Q, d)")
            ids = q.to(torch.int64).numpy()
            q = self.user_emb[torch.from_numpy(ids)]
            if exclude is None and self.exclude is not None:
                exclude = self.exclude[ids]
        q = torch.as_tensor(_np32(q))
        excl = sp.csr_matrix((q.shape[0], self.n_items), dtype=np.float32) if exclude is None \
            else sp.csr_matrix(exclude)
        if excl.shape != (q.shape[0], self.n_items):
            raise ValueError(f"exclude has shape {excl.shape}, expected ({q.shape[0]}, {self.n_items}) = "
                             "(queries, items)")
        if self.backend == "exact":
            cand, valid = exact_candidates(q, self.item_emb, excl, k + SPARE)
        else:
            cand, valid = faiss_candidates(self.index, q, excl, k + SPARE, self.n_items)
        return rerank(q, self.item_emb, cand, valid, k)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the faiss index (atomically); a sharded one as an ``.npz`` of its shards."""
        import faiss
        path = Path(path)
        index = self.index if self.index is not None else build_faiss_index(self.item_emb, self.index_name,
                                                                            self.faiss_params, self.shards)
        with atomic_path(path) as tmp:
            if is_sharded(index):
                with open(tmp, "wb") as f:
                    np.savez(f, **{f"shard_{i:04d}": faiss.serialize_index(p)
                                   for i, p in enumerate(shard_list(index))})
            else:
                faiss.write_index(index, str(tmp))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, user_emb: torch.Tensor | np.ndarray | None = None,
             exclude: sp.spmatrix | None = None) -> "Retriever":
        import faiss
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path} not found; write one with Retriever.save(path)")
        with open(path, "rb") as f:
            sharded = f.read(2) == b"PK"  # np.savez writes a zip
        if sharded:
            with np.load(path) as z:
                index = index_shards([faiss.deserialize_index(z[name]) for name in sorted(z.files)])
        else:
            index = faiss.read_index(str(path))
        item_emb = reconstruct_all(index)
        return cls(item_emb, backend="faiss", user_emb=user_emb, exclude=exclude, faiss_index=index)
