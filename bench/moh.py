"""Mixture-of-Head attention benchmark: forward time vs active-head fraction, against full multi-head attention.

MoH's official code computes every head and multiplies by the gate; the ``routed`` implementation computes a
routed head only for the tokens routed to it. For each (shared heads, top-k) the script checks that both
implementations agree, then times MHA (``GraphAttention``), MoH ``dense`` and MoH ``routed`` on the same
tokens and prints the measured active fraction next to the time ratio routed / MHA.

    python bench/moh.py            # B=2, N=1024 tokens, dim 128, 8 heads, 1 thread
    python bench/moh.py --quick
    python bench/moh.py --device cuda --batch 16 --tokens 4096

The three layers are timed interleaved (``bench/timing.timings``: median of ``--repeats`` >= 5 rounds, min-max
kept); the headline is the ratio routed / MHA of medians. Writes ``moh_bench_{cpu,cuda}.json`` and
``moh_time_{cpu,cuda}.png`` to ``results/moh/`` (``--out``; ``--publish`` also to ``docs/results/moh/``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.timing import ratio, timings  # noqa: E402

import torch  # noqa: E402

from graphattn.attention import GraphAttention  # noqa: E402
from graphattn.attention.moh import MoHAttention  # noqa: E402
from graphattn.results import Results, add_output_args  # noqa: E402




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true")
    add_output_args(parser, "moh")
    args = parser.parse_args()
    if args.repeats < 5:
        parser.error(f"--repeats must be >= 5 (published timings are medians of at least 5), got {args.repeats}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    n = 256 if args.quick else args.tokens
    h = args.heads
    dev = args.device
    x = torch.randn(args.batch, n, args.dim, device=dev)
    mha = GraphAttention(args.dim, args.dim, h).to(dev)
    where = f"{args.threads} thread(s)" if dev == "cpu" else dev
    print(f"B={args.batch}, N={n}, dim={args.dim}, heads={h}, {where}; median of {args.repeats} interleaved repeats")
    header = (f"{'shared':>6} {'top_k':>5} | {'active':>6} | {'MHA ms':>7} {'dense ms':>8} {'routed ms':>9} | "
              f"{'routed/MHA':>10} {'(min-max)':>11} {'dense/MHA':>9}")
    print(header)
    print("-" * len(header))
    configs = [(0, k) for k in (1, 2, 4, 6, 8)] + [(2, k) for k in (1, 2, 4)] + [(4, 2)]
    rows = []
    for shared, top_k in configs:
        if shared + top_k > h:
            continue
        if shared and shared + top_k == h:
            continue
        moh = MoHAttention(args.dim, h, shared, top_k).to(dev)
        with torch.no_grad():
            dense, routing = moh(x, impl="dense", return_routing=True)
            err = float((moh(x, impl="routed") - dense).abs().max())
            if err > 1e-4:
                raise RuntimeError(f"routed differs from dense by {err}")
            # the three layers timed round-robin so that they see the same (drifting) load of a shared machine
            t = timings({"mha": lambda: mha(x), "dense": lambda: moh(x, impl="dense"),
                         "routed": lambda: moh(x, impl="routed")}, args.repeats)
        frac = float(routing.active_fraction)
        routed, dense_r = ratio(t["routed"], t["mha"]), ratio(t["dense"], t["mha"])
        row = {"shared": shared, "top_k": top_k, "active_fraction": frac,
               **{f"{k}_ms": v["median"] * 1e3 for k, v in t.items()},
               **{f"{k}_ms_min_max": [v["min"] * 1e3, v["max"] * 1e3] for k, v in t.items()},
               "routed_over_mha": routed["median"], "routed_over_mha_range": [routed["low"], routed["high"]],
               "dense_over_mha": dense_r["median"], "dense_over_mha_range": [dense_r["low"], dense_r["high"]]}
        rows.append(row)
        print(f"{shared:6d} {top_k:5d} | {frac:6.3f} | {row['mha_ms']:7.2f} {row['dense_ms']:8.2f} "
              f"{row['routed_ms']:9.2f} | {routed['median']:10.2f} {routed['low']:5.2f}-{routed['high']:<5.2f} "
              f"{dense_r['median']:9.2f}")
    out = Results.from_args("moh", args)
    tag = "cpu" if dev == "cpu" else "cuda"
    out.write_json(f"moh_bench_{tag}.json", {"device": dev, "threads": args.threads, "batch": args.batch, "tokens": n,
                                             "dim": args.dim, "heads": h, "repeats": args.repeats, "rows": rows},
                   seeds=[0])

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.5, 4))
    fr = [r["active_fraction"] for r in rows]
    ax.plot(fr, [r["routed_over_mha"] for r in rows], "o", label="MoH routed (computes active heads only)")
    ax.plot(fr, [r["dense_over_mha"] for r in rows], "s", label="MoH dense (official: all heads x gate)")
    ax.plot([0, 1], [0, 1], "k--", label="ideal: time = active fraction")
    ax.axhline(1.0, color="gray", lw=0.5)
    ax.set_xlabel("active (token, head) fraction")
    ax.set_ylabel("forward time / MHA")
    ax.set_title(f"MoH forward, {where} (B={args.batch}, N={n}, {h} heads)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    out.save_figure(fig, f"moh_time_{tag}.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
