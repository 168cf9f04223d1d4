"""Retrieval at scale: faiss Flat, IVF-Flat, IVF-PQ, HNSW and sharded Flat over the same item embeddings.

    python bench/retrieval.py [--n-items 1000000] [--dim 64] [--n-queries 10000] [--k 20] [--threads 1]
                              [--nlist 1024] [--nprobe 16] [--pq 16] [--hnsw 32] [--ef-search 64] [--shards 4]
                              [--repeats 3] [--seed 0] [--indexes Flat IVF-Flat IVF-PQ HNSW Sharded-Flat]

Synthetic, clustered data (so that an approximate index has structure to exploit and its recall means
something): ``--clusters`` centres ~ N(0, I_d); every item is a random centre plus N(0, 0.5^2 I) noise and a
random scale in [0.5, 1.5] (item popularity shows up as norm under inner product); every query is a random
centre plus the same noise. Every index is built by :func:`recsys.evaluation.build_faiss_index` from a factory
string, with inner product, exactly as the evaluator and :class:`recsys.evaluation.Retriever` build them.

Per index: build seconds (train + add, once), queries/s of a ``search(queries, k)`` over all queries (median
of ``--repeats`` interleaved rounds, :func:`bench.timing.timings`), the speed-up over ``Flat`` (a ratio of
medians, the figure to compare across machines), memory (the serialised index: bytes per item and MiB; the
process's resident-set growth while building is printed as well), recall@k against the exact ``Flat`` top-k
(share of the exact top-k the index returns) and the recall lost, and the recall after the Retriever's
exact re-scoring of ``k + 8`` candidates. Scale down with ``--n-items 100000 --n-queries 1000``. Writes
``retrieval.json`` (``results/retrieval/``; ``--publish`` also ``docs/results/retrieval/``).
"""
from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.timing import ratio, timings  # noqa: E402
from graphattn.results import Results, add_output_args  # noqa: E402
from recsys.evaluation.evaluator import SPARE, rerank  # noqa: E402
from recsys.evaluation.indexes import build_faiss_index, index_nbytes  # noqa: E402

KINDS = ("Flat", "IVF-Flat", "IVF-PQ", "HNSW", "Sharded-Flat")


def clustered_data(n_items: int, n_queries: int, dim: int, n_clusters: int, seed: int,
                   noise: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """``(items (n_items, dim), queries (n_queries, dim))`` float32 around shared random centres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    items = np.empty((n_items, dim), np.float32)
    for s in range(0, n_items, 1 << 17):  # in blocks: no float64 copy of the whole matrix
        n = min(1 << 17, n_items - s)
        block = centres[rng.integers(n_clusters, size=n)] + noise * rng.standard_normal((n, dim), np.float32)
        items[s:s + n] = block * rng.uniform(0.5, 1.5, size=(n, 1)).astype(np.float32)
    queries = centres[rng.integers(n_clusters, size=n_queries)] + noise * rng.standard_normal(
        (n_queries, dim), np.float32)
    return items, queries.astype(np.float32)


def specs(args: argparse.Namespace) -> dict[str, tuple[str, str | None, int | None]]:
    """``kind -> (factory string, faiss parameters, shards)``."""
    return {
        "Flat": ("Flat", None, None),
        "IVF-Flat": (f"IVF{args.nlist},Flat", f"nprobe={args.nprobe}", None),
        "IVF-PQ": (f"IVF{args.nlist},PQ{args.pq}", f"nprobe={args.nprobe}", None),
        "HNSW": (f"HNSW{args.hnsw}", f"efSearch={args.ef_search}", None),
        "Sharded-Flat": ("Flat", None, args.shards),
    }


def rss_bytes() -> int:
    """Resident set size of this process (Linux), 0 where unknown."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def recall_at(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean over queries of |found_q ∩ exact_q| / |exact_q| (ids -1 never count)."""
    k = exact.shape[1]
    keys_e = np.arange(len(exact))[:, None] * (1 << 32) + exact
    keys_f = np.arange(len(found))[:, None] * (1 << 32) + found
    hit = np.isin(keys_f, keys_e) & (found >= 0)
    return float(hit.sum(1).mean() / k)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-items", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--n-queries", type=int, default=10_000)
    parser.add_argument("--clusters", type=int, default=1000, help="centres of the synthetic items")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--nlist", type=int, default=1024, help="IVF lists")
    parser.add_argument("--nprobe", type=int, default=16, help="IVF lists searched per query")
    parser.add_argument("--pq", type=int, default=16, help="PQ sub-quantizers (bytes per item, 8-bit codes)")
    parser.add_argument("--hnsw", type=int, default=32, help="HNSW neighbours per node (M)")
    parser.add_argument("--ef-search", type=int, default=64, help="HNSW efSearch")
    parser.add_argument("--shards", type=int, default=4, help="shards of the sharded Flat index")
    parser.add_argument("--indexes", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--repeats", type=int, default=3, help="timed search rounds (interleaved)")
    parser.add_argument("--threads", type=int, default=1, help="faiss (OpenMP) and torch threads")
    parser.add_argument("--seed", type=int, default=0)
    add_output_args(parser, "retrieval")
    args = parser.parse_args()
    import faiss
    from tqdm.auto import tqdm

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    out = Results.from_args("retrieval", args)
    kinds = ["Flat"] + [k for k in args.indexes if k != "Flat"]   # Flat is the exact reference

    t0 = time.perf_counter()
    items, queries = clustered_data(args.n_items, args.n_queries, args.dim, args.clusters, args.seed)
    print(f"data: {args.n_items:,} items x {args.dim} dims ({items.nbytes / 2**20:.0f} MiB float32), "
          f"{args.n_queries:,} queries, {args.clusters} clusters, made in {time.perf_counter() - t0:.1f} s")

    built, rows = {}, {}
    for kind in tqdm(kinds, desc="build", unit="index"):
        spec, params, shards = specs(args)[kind]
        gc.collect()
        rss0, t0 = rss_bytes(), time.perf_counter()
        built[kind] = build_faiss_index(items, spec, params, shards)
        build_s = time.perf_counter() - t0
        nbytes = index_nbytes(built[kind])
        rows[kind] = {"index": kind, "factory": ("" if not shards else f"Shards{shards},") + spec,
                      "params": params or "", "build_s": build_s, "index_bytes": nbytes,
                      "bytes_per_item": nbytes / args.n_items, "rss_growth_bytes": rss_bytes() - rss0}

    results: dict[str, np.ndarray] = {}

    def searcher(kind):
        def run():
            results[kind] = built[kind].search(queries, args.k)[1]
        return run

    times = timings({kind: searcher(kind) for kind in kinds}, repeats=args.repeats, warmup=0)
    exact = results["Flat"]
    item_t, query_t = torch.from_numpy(items), torch.from_numpy(queries)
    for kind in tqdm(kinds, desc="recall", unit="index"):
        cand = built[kind].search(queries, args.k + SPARE)[1].astype(np.int64)
        rescored = np.concatenate([rerank(query_t[s:s + 2048], item_t, cand[s:s + 2048], cand[s:s + 2048] >= 0,
                                          args.k)[0] for s in range(0, len(cand), 2048)])
        r = recall_at(results[kind], exact)
        rows[kind].update({"search_s": times[kind], "queries_per_s": args.n_queries / times[kind]["median"],
                           "speedup_vs_flat": ratio(times["Flat"], times[kind]), "recall": r, "recall_lost": 1 - r,
                           "recall_rescored": recall_at(rescored, exact)})

    title = (f"{args.n_items:,} items x {args.dim} dims, {args.n_queries:,} queries, top-{args.k}, "
             f"{args.threads} thread(s); search: median of {args.repeats} interleaved rounds")
    header = (f"{'index':<13} {'factory / params':<28} {'build s':>8} {'queries/s':>10} {'vs Flat':>8} "
              f"{'B/item':>7} {'MiB':>7} {'RSS+MiB':>8} {f'recall@{args.k}':>9} {'lost':>6} {'rescored':>8}")
    lines = [title, header]
    for kind in kinds:
        r = rows[kind]
        fp = r["factory"] + (f" {r['params']}" if r["params"] else "")
        lines.append(f"{kind:<13} {fp:<28} {r['build_s']:>8.1f} {r['queries_per_s']:>10,.0f} "
                     f"{r['speedup_vs_flat']['median']:>7.1f}x {r['bytes_per_item']:>7.1f} "
                     f"{r['index_bytes'] / 2**20:>7.1f} {r['rss_growth_bytes'] / 2**20:>8.0f} "
                     f"{r['recall']:>9.4f} {r['recall_lost']:>6.4f} {r['recall_rescored']:>8.4f}")
    table = "\n".join(lines)
    print(table)
    config = {k: getattr(args, k) for k in ("n_items", "dim", "n_queries", "clusters", "k", "nlist", "nprobe",
                                            "pq", "hnsw", "ef_search", "shards", "repeats", "threads", "seed")}
    out.write_json("retrieval.json", {"config": config, "faiss": faiss.__version__,
                                      "rows": [rows[k] for k in kinds], "table": table}, seeds=[args.seed])


if __name__ == "__main__":
    main()
