"""Inner-product faiss indexes over item embeddings, built from a factory string, optionally sharded.

    build_faiss_index(item_emb, "Flat")                    # exact
    build_faiss_index(item_emb, "HNSW32", "efSearch=128")  # graph ANN, no training
    build_faiss_index(item_emb, "IVF1024,Flat", "nprobe=16")
    build_faiss_index(item_emb, "IVF1024,PQ16", "nprobe=16")   # compressed: 16 bytes per item
    build_faiss_index(item_emb, "Shards4,IVF256,Flat")     # == build_faiss_index(..., "IVF256,Flat", shards=4)

Sharding (``Shards<S>,<spec>`` or ``shards=S``): the items are cut into ``S`` contiguous id ranges, each
range gets its own index built from ``spec`` (trained on its own items), and a ``faiss.IndexShards`` with
``successive_ids`` searches them all, merges the per-shard top lists by score and adds each shard's id
offset, so the returned ids are the global item ids. This is the layout of an item set served from several
machines or processes, one index each.

Trained indexes (IVF, PQ) are checked before faiss sees them: every IVF list needs a training item
(``n_items >= nlist``) and every PQ sub-quantizer ``2**nbits`` (``n_items >= 256`` for 8 bits), and ``d``
must be a multiple of the number of sub-quantizers; otherwise a ``ValueError`` says which and what to
change. faiss's own advice is ``>= 39 * nlist`` training points for good centroids; fewer only warns.
"""
from __future__ import annotations

import re
from typing import Any

import numpy as np
import torch

__all__ = ["build_faiss_index", "split_shards", "check_trainable", "index_shards", "index_nbytes"]

_SHARDS = re.compile(r"^\s*Shards(\d+)\s*,(.+)$")
_IVF = re.compile(r"IVF(\d+)")
_PQ = re.compile(r"(?<![A-Za-z])PQ(\d+)(?:x(\d+))?")
EXAMPLES = "Flat, HNSW32, IVF256,Flat, IVF256,PQ16 (prefix Shards<S>, to shard, e.g. Shards4,Flat)"


def _faiss():
    try:
        import faiss
    except ImportError as e:  # optional dependency
        raise ImportError("the faiss backend needs faiss: pip install faiss-cpu (or faiss-gpu)") from e
    return faiss


def _np32(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float32).numpy()
    return np.asarray(x, dtype=np.float32)


def _faiss_message(err: Exception) -> str:
    """The last line of a faiss C++ error, without the source location."""
    text = str(err).strip().splitlines()[-1] if str(err).strip() else repr(err)
    return re.sub(r"^Error in .*? at .*?:\d+:\s*", "", text)


def split_shards(index: str, shards: int | None = None) -> tuple[str, int]:
    """``("IVF256,Flat", 4)`` from ``"Shards4,IVF256,Flat"`` (or from ``"IVF256,Flat"`` and ``shards=4``)."""
    if not isinstance(index, str) or not index.strip():
        raise ValueError(f"faiss index must be a factory string such as {EXAMPLES}; got {index!r}")
    m = _SHARDS.match(index)
    spec, n = (m.group(2).strip(), int(m.group(1))) if m else (index.strip(), None)
    if n is not None and shards not in (None, 1, n):
        raise ValueError(f"faiss index '{index}' asks for {n} shards but shards={shards} was given; give one of them")
    n = n if n is not None else (1 if shards is None else shards)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"the number of faiss shards must be a positive int, got {n!r}")
    if _SHARDS.match(spec):
        raise ValueError(f"faiss index '{index}': shards cannot be nested")
    return spec, int(n)


def check_trainable(spec: str, n_items: int, d: int, where: str = "") -> None:
    """Clear errors for a trained index (IVF / PQ) that ``n_items`` vectors of size ``d`` cannot train."""
    for m in _IVF.finditer(spec):
        nlist = int(m.group(1))
        if n_items < nlist:
            raise ValueError(f"faiss index '{spec}' needs at least nlist={nlist} training items (one per IVF "
                             f"list), got {n_items} items{where}; use IVF<n> with n <= {max(1, n_items // 39)} "
                             "(faiss advises >= 39 items per list) or fewer shards")
    for m in _PQ.finditer(spec):
        n_sub, nbits = int(m.group(1)), int(m.group(2) or 8)
        if n_sub < 1 or d % n_sub:
            raise ValueError(f"faiss index '{spec}': PQ{n_sub} needs the embedding size d={d} to be a multiple of "
                             f"the number of sub-quantizers {n_sub}; use one of "
                             f"{[m for m in (4, 8, 16, 32, 64) if d % m == 0]}")
        if n_items < 2 ** nbits:
            raise ValueError(f"faiss index '{spec}': PQ with {nbits}-bit codes trains {2 ** nbits} centroids per "
                             f"sub-quantizer and needs at least {2 ** nbits} training items, got {n_items}"
                             f"{where}; use fewer bits (PQ{n_sub}x{max(1, int(np.log2(max(n_items, 2))))}), "
                             "a Flat / HNSW index, or fewer shards")


def _build_one(x: np.ndarray, spec: str, params: str | None, where: str = "") -> Any:
    faiss = _faiss()
    check_trainable(spec, x.shape[0], x.shape[1], where)
    try:
        idx = faiss.index_factory(x.shape[1], spec, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        raise ValueError(f"faiss cannot build index '{spec}': {_faiss_message(e)}; use a factory string such as "
                         f"{EXAMPLES}") from None
    ivf = faiss.try_extract_index_ivf(idx)
    if ivf is not None:  # the IVF inside a pre-transform (OPQ, PCA) comes back as a bare IndexIVF: give it its type
        ivf = faiss.downcast_index(ivf)
    for part in (idx, ivf):
        if getattr(part, "do_polysemous_training", False):
            # IndexIVFPQ's default: a code-permutation search for polysemous (Hamming) filtering, which the
            # inner-product search here never uses; it takes ~1 min per 8 sub-quantizers on one core
            part.do_polysemous_training = False
    try:
        if not idx.is_trained:
            idx.train(x)
        idx.add(x)
    except RuntimeError as e:
        raise ValueError(f"faiss could not train index '{spec}' on {x.shape[0]} items{where}: "
                         f"{_faiss_message(e)}") from None
    if params:
        try:
            faiss.ParameterSpace().set_index_parameters(idx, params)
        except RuntimeError as e:
            raise ValueError(f"faiss parameters '{params}' do not apply to index '{spec}': {_faiss_message(e)} "
                             "(e.g. nprobe=16 for IVF, efSearch=128 for HNSW)") from None
    return idx


def index_shards(parts: list[Any]) -> Any:
    """One ``IndexShards`` over sub-indexes holding consecutive id ranges (ids offset in order)."""
    faiss = _faiss()
    out = faiss.IndexShards(parts[0].d, False, True)  # not threaded: the callers set faiss's own threads
    for p in parts:
        out.add_shard(p)                                # faiss's Python wrapper keeps a reference to p
    return out


def build_faiss_index(item_emb: torch.Tensor | np.ndarray, index: str = "Flat",
                      params: str | None = None, shards: int | None = None) -> Any:
    """An inner-product faiss index over item embeddings.

    Args:
        item_emb: ``(I, d)`` item embeddings; the index's ids are the row numbers.
        index: faiss factory string (``Flat``, ``HNSW32``, ``IVF<n>,Flat``, ``IVF<n>,PQ<m>``, ...), optionally
            prefixed ``Shards<S>,``.
        params: faiss parameter string applied to every (sub-)index, e.g. ``"nprobe=16"``, ``"efSearch=128"``.
        shards: split the items into this many contiguous id ranges with one index each
            (``faiss.IndexShards``); the same as the ``Shards<S>,`` prefix.
    """
    spec, n_shards = split_shards(index, shards)
    x = np.ascontiguousarray(_np32(item_emb))
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"item_emb must be a non-empty (n_items, d) matrix, got shape {x.shape}")
    if n_shards == 1:
        return _build_one(x, spec, params)
    if n_shards > x.shape[0]:
        raise ValueError(f"cannot cut {x.shape[0]} items into {n_shards} shards")
    bounds = np.linspace(0, x.shape[0], n_shards + 1).astype(np.int64)
    check_trainable(spec, int(np.diff(bounds).min()), x.shape[1], f" in the smallest of {n_shards} shards")
    return index_shards([_build_one(x[a:b], spec, params, f" in shard {s} of {n_shards}")
                         for s, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))])


def is_sharded(index: Any) -> bool:
    return type(index).__name__ == "IndexShards"


def shard_list(index: Any) -> list[Any]:
    """The sub-indexes of an ``IndexShards`` (in id order), or ``[index]``."""
    if not is_sharded(index):
        return [index]
    return [index.at(i) for i in range(index.count())]


def index_nbytes(index: Any) -> int:
    """Bytes of the serialised index (all shards): what it takes in memory and on disk, give or take."""
    faiss = _faiss()
    return int(sum(faiss.serialize_index(p).nbytes for p in shard_list(index)))


def reconstruct_all(index: Any) -> np.ndarray:
    """``(ntotal, d)`` stored vectors of an index (per shard; IVF indexes get a direct map first).
    Lossy for compressed (PQ) indexes: the codes' reconstruction, not the original embeddings."""
    faiss = _faiss()
    out = []
    for p in shard_list(index):
        try:
            out.append(p.reconstruct_n(0, p.ntotal))
        except RuntimeError:  # IVF indexes reconstruct only with a direct map
            faiss.extract_index_ivf(p).make_direct_map()
            out.append(p.reconstruct_n(0, p.ntotal))
    return np.concatenate(out) if out else np.zeros((0, index.d), np.float32)
