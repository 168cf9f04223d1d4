"""A-SDM's GRI attention vs full self-attention: attention-layer CPU time at diffusion token-grid sizes (issue #16).

GRI (vision/diffusion/asdm.py, a reconstruction: region r x r self-attention + attention to one mean-pooled
summary per p x p block, one softmax over the union) against the full self-attention it replaces (the same
GraphAttention on the complete token graph, fused SDPA path), and the same union graph run as masked dense
attention (what GRI costs without its windowed path). Forward only, batch 2, interleaved repeats
(bench/timing.py); ratios are published, not absolute times. Also prints max |windowed - masked dense|.

    .venv/bin/python experiments/asdm.py [--repeats 5] [--publish]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.timing import ratio, timings  # noqa: E402
from graphattn.results import Results, add_output_args  # noqa: E402
from vision.diffusion.asdm import GRIAttention, pool_tokens  # noqa: E402

SCRIPT = "asdm"
# (grid side, region r, pool p): 16x16 is the spec's CPU teacher, 64x64 with r = 8, p = 4 the spec's SD v1 example
CASES = [(16, 4, 4), (32, 8, 4), (64, 8, 4)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--seed", type=int, default=0)
    add_output_args(p, SCRIPT)
    args = p.parse_args()
    torch.set_num_threads(1)
    out = Results.from_args(SCRIPT, args)
    t_start = time.time()
    rows = []
    print(f"{'grid':>6s} {'r':>3s} {'p':>3s} {'keys/query':>11s} {'full/GRI':>18s} {'masked/GRI':>18s} "
          f"{'full/GRI-sum':>18s} {'max|diff|':>10s}")
    for side, r, pool in CASES:
        torch.manual_seed(args.seed)
        gri = GRIAttention(args.dim, args.heads, (side, side), region=r, pool=pool).eval()
        gri_sum = GRIAttention(args.dim, args.heads, (side, side), region=r, pool=pool, mode="sum").eval()
        gri_sum.attn.load_state_dict(gri.attn.state_dict())
        x = torch.randn(args.batch, side * side, args.dim)
        mask = gri.union_mask()
        with torch.no_grad():
            masked = lambda: gri.attn(x, x_src=torch.cat([x, pool_tokens(x, (side, side), pool)], 1), mask=mask)  # noqa: E731
            diff = float((gri(x) - masked()).abs().max())
            ts = timings({"full": lambda: gri.attn(x), "gri": lambda: gri(x), "gri_sum": lambda: gri_sum(x),
                          "masked": masked}, repeats=args.repeats)
        keys = r * r + (side // pool) ** 2
        row = {"grid": side, "region": r, "pool": pool, "tokens": side * side, "keys_per_query": keys,
               "score_flop_reduction": side * side / keys, "full_over_gri": ratio(ts["full"], ts["gri"]),
               "masked_over_gri": ratio(ts["masked"], ts["gri"]), "full_over_gri_sum": ratio(ts["full"], ts["gri_sum"]),
               "max_abs_diff_windowed_vs_masked": diff}
        rows.append(row)
        fmt = lambda q: f"{q['median']:.2f} [{q['low']:.2f}, {q['high']:.2f}]"   # noqa: E731
        print(f"{side:>4d}^2 {r:>3d} {pool:>3d} {keys:>5d}/{side * side:<5d} {fmt(row['full_over_gri']):>18s} "
              f"{fmt(row['masked_over_gri']):>18s} {fmt(row['full_over_gri_sum']):>18s} {diff:10.2e}")
    checks = {"windowed GRI == masked dense attention on the union graph (max diff < 1e-4)":
              all(r["max_abs_diff_windowed_vs_masked"] < 1e-4 for r in rows),
              "GRI faster than full self-attention at 64x64 tokens": rows[-1]["full_over_gri"]["median"] > 1,
              "GRI gain grows with the token grid": all(a["full_over_gri"]["median"] < b["full_over_gri"]["median"]
                                                       for a, b in zip(rows, rows[1:]))}
    print("\nchecks:")
    for k, v in checks.items():
        print(f"  {k}: {v}")
    out.write_json("asdm.json", {"config": vars(args), "rows": rows, "checks": checks,
                                 "seconds": round(time.time() - t_start, 1)}, seeds=[args.seed])


if __name__ == "__main__":
    main()
