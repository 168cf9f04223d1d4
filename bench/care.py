"""CARE linear attention vs softmax attention: forward time as the image side grows (16 -> 128).

Linear attention (ELU+1 kernel, CARE's global branch: ``LinearAttention`` "fast" = the virtual-node star
graph as batched contractions, and "star" = explicit segment sums) against softmax attention
(``GraphAttention`` through SDPA) on ``side x side`` tokens. Both are checked against their dense
references at the smallest size first. Also prints CARE-S0's parameter / MAC count from our own counter
next to the paper's figures (7.3M, 0.7 GMACs).

    python bench/care.py
    python bench/care.py --device cuda

Per side the three forms are timed interleaved (``bench/timing.timings``: median of ``--repeats`` >= 5
rounds, min-max kept); the headline is the ratio softmax / linear of medians measured side by side.
Writes ``care_bench_{cpu,cuda}.json`` and ``care_scaling_{cpu,cuda}.png`` to ``results/care/`` (``--out``;
``--publish`` also to ``docs/results/care/``).
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
from graphattn.attention.linear import LinearAttention  # noqa: E402
from graphattn.results import Results, add_output_args  # noqa: E402
from vision.care import care_s0, count_macs  # noqa: E402




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dim", type=int, default=32, help="channels of the global slice (CARE-S0 stage 3: 32)")
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--sides", default="16,32,64,96,128")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    add_output_args(parser, "care")
    args = parser.parse_args()
    if args.repeats < 5:
        parser.error(f"--repeats must be >= 5 (published timings are medians of at least 5), got {args.repeats}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dev = args.device
    lin = LinearAttention(args.dim, args.heads).to(dev)
    soft = GraphAttention(args.dim, args.dim, args.heads, update="none").to(dev)

    with torch.no_grad():
        x = torch.randn(2, 64, args.dim, device=dev, dtype=torch.float64)
        lin64, soft64 = lin.double(), soft.double()
        err_star = float((lin64(x, impl="star") - lin64(x, impl="dense")).abs().max())
        err_fast = float((lin64(x, impl="fast") - lin64(x, impl="dense")).abs().max())
        err_soft = float((soft64(x) - soft64(x, return_attention=True)[0]).abs().max())
        lin.float(), soft.float()
    print(f"check (8x8 tokens, float64): star vs dense kernel matrix {err_star:.1e}, fast vs dense {err_fast:.1e}, "
          f"softmax SDPA vs explicit {err_soft:.1e}")
    if max(err_star, err_fast, err_soft) > 1e-9:
        raise RuntimeError("implementations disagree")

    where = f"{args.threads} thread(s)" if dev == "cpu" else dev
    print(f"dim {args.dim}, heads {args.heads}, batch {args.batch}, {where}")
    header = (f"{'side':>5} {'tokens':>7} | {'linear ms':>9} {'star ms':>9} {'softmax ms':>10} | {'soft/linear':>11} "
              f"{'(min-max)':>13}")
    print(header)
    print("-" * len(header))
    rows = []
    for side in (int(s) for s in args.sides.split(",")):
        n = side * side
        x = torch.randn(args.batch, n, args.dim, device=dev)
        with torch.no_grad():
            t = timings({"linear": lambda: lin(x, impl="fast"), "star": lambda: lin(x, impl="star"),
                         "softmax": lambda: soft(x)}, args.repeats)
        r = ratio(t["softmax"], t["linear"])
        rows.append({"side": side, "tokens": n, **{f"{k}_ms": v["median"] * 1e3 for k, v in t.items()},
                     **{f"{k}_ms_min_max": [v["min"] * 1e3, v["max"] * 1e3] for k, v in t.items()},
                     "softmax_over_linear": r["median"], "softmax_over_linear_range": [r["low"], r["high"]]})
        print(f"{side:5d} {n:7d} | {t['linear']['median'] * 1e3:9.2f} {t['star']['median'] * 1e3:9.2f} "
              f"{t['softmax']['median'] * 1e3:10.2f} | {r['median']:11.1f} {r['low']:6.1f}-{r['high']:<6.1f}")

    model = care_s0().eval()
    params = sum(p.numel() for p in model.parameters())
    head = sum(p.numel() for p in model.dist_head.parameters())
    macs = count_macs(model, torch.randn(1, 3, 224, 224))
    print(f"CARE-S0 (224x224): {params / 1e6:.2f}M parameters ({(params - head) / 1e6:.2f}M without the "
          f"distillation head), {macs / 1e9:.3f} GMACs; paper: 7.3M, 0.7 GMACs")

    out = Results.from_args("care", args)
    tag = "cpu" if dev == "cpu" else "cuda"
    out.write_json(f"care_bench_{tag}.json", {
        "device": dev, "threads": args.threads, "dim": args.dim, "heads": args.heads, "batch": args.batch,
        "repeats": args.repeats, "rows": rows,
        "care_s0": {"params": params, "params_without_dist_head": params - head, "macs": macs,
                    "paper_params": 7.3e6, "paper_macs": 0.7e9}}, seeds=[0])

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.5, 4))
    sides = [r["side"] for r in rows]
    ax.plot(sides, [r["linear_ms"] for r in rows], "o-", label="linear (ELU+1, virtual node)")
    ax.plot(sides, [r["star_ms"] for r in rows], "^-", label="linear, explicit star messages")
    ax.plot(sides, [r["softmax_ms"] for r in rows], "s-", label="softmax (SDPA)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("image side (tokens = side^2)")
    ax.set_ylabel("forward ms")
    ax.set_title(f"Linear vs softmax attention ({where})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    out.save_figure(fig, f"care_scaling_{tag}.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
