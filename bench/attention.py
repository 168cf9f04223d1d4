"""Attention layer benchmark: our sparse path vs PyG's TransformerConv, and our dense vs sparse path.

Each case runs in its own subprocess so that peak memory (``ru_maxrss`` growth over the set-up baseline) is
measured per case. Both layers compute the same function (checked before timing: TransformerConv with
``root_weight=False`` is exactly GraphAttention(score="dot", update="none") with the same weights).

    python bench/attention.py                 # full sizes (100k nodes / 1M edges; 64/256/1024 tokens)
    python bench/attention.py --quick         # small sizes, for a smoke run
Writes bench/results/attention.json.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from graphattn.io import atomic_write_text  # noqa: E402

from bench.timing import best_time  # noqa: E402


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024




def case_sparse(impl: str, nodes: int, edges: int, dim: int, heads: int, repeats: int) -> dict:
    import torch
    from torch_geometric.nn import TransformerConv

    from graphattn.attention import GraphAttention

    torch.manual_seed(0)
    x = torch.randn(nodes, dim, requires_grad=True)
    edge_index = torch.randint(0, nodes, (2, edges))
    ours = GraphAttention(dim, dim, heads=heads, head_dim=dim // heads, update="none")
    ref = TransformerConv(dim, dim // heads, heads=heads, root_weight=False)
    with torch.no_grad():  # same weights -> same function
        ref.lin_query.weight.copy_(ours.score.q.weight), ref.lin_query.bias.copy_(ours.score.q.bias)
        ref.lin_key.weight.copy_(ours.score.k.weight), ref.lin_key.bias.copy_(ours.score.k.bias)
        ref.lin_value.weight.copy_(ours.message.v.weight), ref.lin_value.bias.copy_(ours.message.v.bias)
    layer = ours if impl == "ours" else ref
    if impl == "ours":
        small = torch.randint(0, 1000, (2, 5000))
        xs = torch.randn(1000, dim)
        assert torch.allclose(ours(xs, small), ref(xs, small), atol=1e-4), "layers differ"
    base = _rss_mb()

    def step():
        out = layer(x, edge_index)
        out.sum().backward()
    t = best_time(step, repeats)
    return {"seconds": t, "peak_mb": _rss_mb() - base}


def case_tokens(impl: str, tokens: int, dim: int, heads: int, batch: int, repeats: int) -> dict:
    import torch

    from graphattn.attention import GraphAttention
    from graphattn.ops import complete_mask, mask_to_edge_index

    torch.manual_seed(0)
    layer = GraphAttention(dim, dim, heads=heads)
    x = torch.randn(batch, tokens, dim, requires_grad=True)
    if impl == "dense":
        run = lambda: layer(x)
    else:
        edge_index = mask_to_edge_index(complete_mask(tokens).expand(batch, tokens, tokens))
        run = lambda: layer(x.reshape(batch * tokens, dim), edge_index)
    base = _rss_mb()

    def step():
        run().sum().backward()
    t = best_time(step, repeats)
    return {"seconds": t, "peak_mb": _rss_mb() - base}


def run_case(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, "--case", *args], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--case", nargs="+")
    args = parser.parse_args()
    if args.case:
        kind, impl, *nums = args.case
        nums = [int(v) for v in nums]
        res = case_sparse(impl, *nums) if kind == "sparse" else case_tokens(impl, *nums)
        print(json.dumps(res))
        return

    import torch
    nodes, edges, repeats = (10_000, 100_000, 2) if args.quick else (100_000, 1_000_000, 3)
    dim, heads = 64, 4
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    results = {"sparse_vs_pyg": {}, "dense_vs_sparse": {}}
    print(f"\nSparse path vs torch_geometric TransformerConv: {nodes:,} nodes, {edges:,} edges, dim {dim}, "
          f"{heads} heads, forward+backward")
    ours = run_case(["sparse", "ours", str(nodes), str(edges), str(dim), str(heads), str(repeats)])
    ref = run_case(["sparse", "pyg", str(nodes), str(edges), str(dim), str(heads), str(repeats)])
    results["sparse_vs_pyg"] = {"ours": ours, "TransformerConv": ref, "speed_ratio": ref["seconds"] / ours["seconds"]}
    print(f"{'impl':<18}{'time (s)':>10}{'peak MB':>10}")
    print(f"{'graphattn sparse':<18}{ours['seconds']:>10.3f}{ours['peak_mb']:>10.0f}")
    print(f"{'TransformerConv':<18}{ref['seconds']:>10.3f}{ref['peak_mb']:>10.0f}")
    print(f"speed ratio (TransformerConv time / ours): {ref['seconds'] / ours['seconds']:.2f}  (target >= 1.0)")

    batch = 1
    print(f"\nDense vs sparse path on complete graphs (batch {batch}, dim {dim}, {heads} heads, forward+backward)")
    print(f"{'tokens':>7}{'dense (s)':>12}{'sparse (s)':>12}{'speed-up':>10}{'dense MB':>10}{'sparse MB':>11}")
    for n in ([64, 256] if args.quick else [64, 256, 1024]):
        d = run_case(["tokens", "dense", str(n), str(dim), str(heads), str(batch), str(repeats + 2)])
        s = run_case(["tokens", "sparse", str(n), str(dim), str(heads), str(batch), str(repeats + 2)])
        results["dense_vs_sparse"][n] = {"dense": d, "sparse": s, "speedup": s["seconds"] / d["seconds"]}
        print(f"{n:>7}{d['seconds']:>12.4f}{s['seconds']:>12.4f}{s['seconds'] / d['seconds']:>9.1f}x"
              f"{d['peak_mb']:>10.0f}{s['peak_mb']:>11.0f}")
    print("target: dense >= 10x faster than sparse at 1024 tokens")
    out = ROOT / "bench" / "results" / "attention.json"
    atomic_write_text(out, json.dumps(results, indent=2))
    print(f"\nwrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
