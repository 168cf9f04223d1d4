"""CARE linear attention vs softmax attention: forward time as the image side grows (16 -> 128).

Linear attention (ELU+1 kernel, CARE's global branch: ``LinearAttention`` "fast" = the virtual-node star
graph as batched contractions, and "star" = explicit segment sums) against softmax attention
(``GraphAttention`` through SDPA) on ``side x side`` tokens. Both are checked against their dense
references at the smallest size first. Also prints CARE-S0's parameter / MAC count from our own counter
next to the paper's figures (7.3M, 0.7 GMACs).

    python bench/care.py
    python bench/care.py --device cuda
Writes docs/img/care_bench_{cpu,cuda}.json and docs/img/care_scaling_{cpu,cuda}.png.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from graphattn.io import atomic_write_text, save_figure  # noqa: E402

from bench.timing import best_time  # noqa: E402

import torch  # noqa: E402

from graphattn.attention import GraphAttention  # noqa: E402
from graphattn.attention.linear import LinearAttention  # noqa: E402
from vision.care import care_s0, count_macs  # noqa: E402




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dim", type=int, default=32, help="channels of the global slice (CARE-S0 stage 3: 32)")
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--sides", default="16,32,64,96,128")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = parser.parse_args()
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
    header = f"{'side':>5} {'tokens':>7} | {'linear ms':>9} {'star ms':>9} {'softmax ms':>10} | {'soft/linear':>11}"
    print(header)
    print("-" * len(header))
    rows = []
    for side in (int(s) for s in args.sides.split(",")):
        n = side * side
        x = torch.randn(args.batch, n, args.dim, device=dev)
        with torch.no_grad():
            t_lin = best_time(lambda: lin(x, impl="fast"), args.repeats)
            t_star = best_time(lambda: lin(x, impl="star"), args.repeats)
            t_soft = best_time(lambda: soft(x), args.repeats)
        rows.append({"side": side, "tokens": n, "linear_ms": t_lin * 1e3, "star_ms": t_star * 1e3,
                     "softmax_ms": t_soft * 1e3})
        print(f"{side:5d} {n:7d} | {t_lin * 1e3:9.2f} {t_star * 1e3:9.2f} {t_soft * 1e3:10.2f} | {t_soft / t_lin:11.1f}")

    model = care_s0().eval()
    params = sum(p.numel() for p in model.parameters())
    head = sum(p.numel() for p in model.dist_head.parameters())
    macs = count_macs(model, torch.randn(1, 3, 224, 224))
    print(f"CARE-S0 (224x224): {params / 1e6:.2f}M parameters ({(params - head) / 1e6:.2f}M without the "
          f"distillation head), {macs / 1e9:.3f} GMACs; paper: 7.3M, 0.7 GMACs")

    args.out.mkdir(parents=True, exist_ok=True)
    tag = "cpu" if dev == "cpu" else "cuda"
    atomic_write_text(args.out / f"care_bench_{tag}.json", json.dumps({"device": dev, "threads": args.threads, "dim": args.dim, "heads": args.heads, "rows": rows,
                   "care_s0": {"params": params, "params_without_dist_head": params - head, "macs": macs,
                               "paper_params": 7.3e6, "paper_macs": 0.7e9}}, indent=1))

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
    save_figure(fig, args.out / f"care_scaling_{tag}.png", dpi=120)
    plt.close(fig)
    print(f"wrote {args.out / f'care_bench_{tag}.json'} and {args.out / f'care_scaling_{tag}.png'}")


if __name__ == "__main__":
    main()
