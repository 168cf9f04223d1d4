"""Mixture-of-Head attention benchmark: forward time vs active-head fraction, against full multi-head attention.

MoH's official code computes every head and multiplies by the gate; the ``routed`` implementation computes a
routed head only for the tokens routed to it. For each (shared heads, top-k) the script checks that both
implementations agree, then times MHA (``GraphAttention``), MoH ``dense`` and MoH ``routed`` on the same
tokens and prints the measured active fraction next to the time ratio routed / MHA.

    python bench/moh.py            # B=2, N=1024 tokens, dim 128, 8 heads, 1 thread
    python bench/moh.py --quick
    python bench/moh.py --device cuda --batch 16 --tokens 4096
Writes docs/img/moh_bench_{cpu,cuda}.json and docs/img/moh_time_{cpu,cuda}.png.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from graphattn.io import atomic_write_text, save_figure  # noqa: E402

from bench.timing import best_time  # noqa: E402

import torch  # noqa: E402

from graphattn.attention import GraphAttention  # noqa: E402
from graphattn.attention.moh import MoHAttention  # noqa: E402




def _interleaved(fns, repeats: int) -> list[float]:
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    best = [float("inf")] * len(fns)
    for fn in fns:
        fn()
    sync()
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            sync()
            best[i] = min(best[i], time.perf_counter() - t0)
    return best


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
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    n = 256 if args.quick else args.tokens
    h = args.heads
    dev = args.device
    x = torch.randn(args.batch, n, args.dim, device=dev)
    mha = GraphAttention(args.dim, args.dim, h).to(dev)
    with torch.no_grad():
        t_mha = best_time(lambda: mha(x), args.repeats)
    where = f"{args.threads} thread(s)" if dev == "cpu" else dev
    print(f"B={args.batch}, N={n}, dim={args.dim}, heads={h}, {where}; MHA forward {t_mha * 1e3:.2f} ms")
    header = (f"{'shared':>6} {'top_k':>5} | {'active':>6} | {'dense ms':>8} {'routed ms':>9} | "
              f"{'routed/MHA':>10} {'dense/MHA':>9}")
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
            t_mha, t_dense, t_routed = _interleaved([lambda: mha(x), lambda: moh(x, impl="dense"),
                                                     lambda: moh(x, impl="routed")], args.repeats)
        frac = float(routing.active_fraction)
        row = {"shared": shared, "top_k": top_k, "active_fraction": frac, "mha_ms": t_mha * 1e3,
               "dense_ms": t_dense * 1e3, "routed_ms": t_routed * 1e3,
               "routed_over_mha": t_routed / t_mha, "dense_over_mha": t_dense / t_mha}
        rows.append(row)
        print(f"{shared:6d} {top_k:5d} | {frac:6.3f} | {t_dense * 1e3:8.2f} {t_routed * 1e3:9.2f} | "
              f"{t_routed / t_mha:10.2f} {t_dense / t_mha:9.2f}")
    args.out.mkdir(parents=True, exist_ok=True)
    tag = "cpu" if dev == "cpu" else "cuda"
    atomic_write_text(args.out / f"moh_bench_{tag}.json", json.dumps({"device": dev, "threads": args.threads, "batch": args.batch, "tokens": n, "dim": args.dim,
                   "heads": h, "rows": rows}, indent=1))

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
    save_figure(fig, args.out / f"moh_time_{tag}.png", dpi=120)
    plt.close(fig)
    print(f"wrote {args.out / f'moh_bench_{tag}.json'} and {args.out / f'moh_time_{tag}.png'}")


if __name__ == "__main__":
    main()
