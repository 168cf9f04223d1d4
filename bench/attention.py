"""Attention layer benchmark: our sparse path vs PyG's TransformerConv, and our dense vs sparse path.

Times are measured in one process with the two implementations interleaved (``bench/timing.timings``:
median of ``--repeats`` >= 5 rounds of forward + backward, min-max kept), so both see the same load; the
headline is the ratio of medians. Peak memory (``ru_maxrss`` growth over the set-up baseline) is measured
per implementation in its own subprocess. Both layers compute the same function (checked before timing:
TransformerConv with ``root_weight=False`` is exactly GraphAttention(score="dot", update="none") with the
same weights).

    python bench/attention.py                 # full sizes (100k nodes / 1M edges; 64/256/1024 tokens)
    python bench/attention.py --quick         # small sizes, for a smoke run
Writes ``attention.json`` to ``results/attention/`` (``--out``; ``--publish`` also to ``docs/results/attention/``).
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

from bench.timing import ratio, timings  # noqa: E402
from graphattn.results import Results, add_output_args  # noqa: E402


def _rss_mb() -> float:
    """Peak resident memory of this process so far (MB): ``VmHWM`` where /proc has it, else ``ru_maxrss``.

    ``ru_maxrss`` is inherited from the parent across fork + exec on Linux, so a child started after the
    parent's timing runs would report the parent's peak; :func:`_reset_peak` clears ``VmHWM`` instead.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")   # resets VmHWM to the current RSS (Linux >= 4.0)
    except OSError:
        pass



def sparse_layers(nodes: int, edges: int, dim: int, heads: int):
    """Our sparse layer and TransformerConv with the same weights, their input and edges."""
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
    small = torch.randint(0, 1000, (2, 5000))
    xs = torch.randn(1000, dim)
    assert torch.allclose(ours(xs, small), ref(xs, small), atol=1e-4), "layers differ"

    def step(layer):
        return lambda: layer(x, edge_index).sum().backward()
    return {"ours": step(ours), "TransformerConv": step(ref)}


def token_layers(tokens: int, dim: int, heads: int, batch: int):
    """The same layer on a complete graph of ``tokens`` through the dense and the sparse path."""
    import torch

    from graphattn.attention import GraphAttention
    from graphattn.ops import complete_mask, mask_to_edge_index

    torch.manual_seed(0)
    layer = GraphAttention(dim, dim, heads=heads)
    x = torch.randn(batch, tokens, dim, requires_grad=True)
    edge_index = mask_to_edge_index(complete_mask(tokens).expand(batch, tokens, tokens))
    return {"dense": lambda: layer(x).sum().backward(),
            "sparse": lambda: layer(x.reshape(batch * tokens, dim), edge_index).sum().backward()}


def peak_memory(kind: str, impl: str, nums: list[int]) -> float:
    """MB of peak RSS growth of one forward + backward of ``impl`` (run in this process: call via a subprocess)."""
    fns = sparse_layers(*nums) if kind == "sparse" else token_layers(*nums)
    _reset_peak()
    base = _rss_mb()
    fns[impl]()
    return _rss_mb() - base


def run_case(args: list[str]) -> float:
    """Peak MB of one case, measured in a fresh subprocess."""
    out = subprocess.run([sys.executable, __file__, "--case", *args], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--case", nargs="+", help=argparse.SUPPRESS)
    add_output_args(parser, "attention")
    args = parser.parse_args()
    if args.case:
        kind, impl, *nums = args.case
        print(json.dumps({"peak_mb": peak_memory(kind, impl, [int(v) for v in nums])}))
        return
    if args.repeats < 5:
        parser.error(f"--repeats must be >= 5 (published timings are medians of at least 5), got {args.repeats}")

    import torch
    nodes, edges = (10_000, 100_000) if args.quick else (100_000, 1_000_000)
    dim, heads = 64, 4
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, median of {args.repeats} interleaved repeats")
    results = {"repeats": args.repeats, "threads": torch.get_num_threads(), "sparse_vs_pyg": {}, "dense_vs_sparse": {}}
    print(f"\nSparse path vs torch_geometric TransformerConv: {nodes:,} nodes, {edges:,} edges, dim {dim}, "
          f"{heads} heads, forward+backward")
    t = timings(sparse_layers(nodes, edges, dim, heads), args.repeats)
    nums = [str(nodes), str(edges), str(dim), str(heads)]
    mem = {impl: run_case(["sparse", impl, *nums]) for impl in t}
    r = ratio(t["TransformerConv"], t["ours"])
    results["sparse_vs_pyg"] = {"nodes": nodes, "edges": edges, "dim": dim, "heads": heads,
                                **{impl: {**t[impl], "peak_mb": mem[impl]} for impl in t},
                                "speed_ratio": r["median"], "speed_ratio_range": [r["low"], r["high"]]}
    print(f"{'impl':<18}{'median s':>10}{'min-max s':>16}{'peak MB':>10}")
    for impl, label in (("ours", "graphattn sparse"), ("TransformerConv", "TransformerConv")):
        print(f"{label:<18}{t[impl]['median']:>10.3f}{t[impl]['min']:>8.3f}-{t[impl]['max']:<7.3f}{mem[impl]:>10.0f}")
    print(f"speed ratio (TransformerConv time / ours): {r['median']:.2f} (range {r['low']:.2f}-{r['high']:.2f}; "
          "target >= 1.0)")

    batch = 1
    print(f"\nDense vs sparse path on complete graphs (batch {batch}, dim {dim}, {heads} heads, forward+backward)")
    print(f"{'tokens':>7}{'dense (s)':>12}{'sparse (s)':>12}{'speed-up':>10}{'dense MB':>10}{'sparse MB':>11}")
    for n in ([64, 256] if args.quick else [64, 256, 1024]):
        t = timings(token_layers(n, dim, heads, batch), args.repeats)
        nums = [str(n), str(dim), str(heads), str(batch)]
        mem = {impl: run_case(["tokens", impl, *nums]) for impl in t}
        r = ratio(t["sparse"], t["dense"])
        results["dense_vs_sparse"][n] = {**{impl: {**t[impl], "peak_mb": mem[impl]} for impl in t},
                                         "speedup": r["median"], "speedup_range": [r["low"], r["high"]]}
        print(f"{n:>7}{t['dense']['median']:>12.4f}{t['sparse']['median']:>12.4f}{r['median']:>9.1f}x"
              f"{mem['dense']:>10.0f}{mem['sparse']:>11.0f}")
    print("target: dense >= 10x faster than sparse at 1024 tokens")
    Results.from_args("attention", args).write_json("attention.json", results, seeds=[0])


if __name__ == "__main__":
    main()
