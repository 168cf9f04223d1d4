"""Generalized Neighborhood Attention benchmark: masked dense vs gather vs block-sparse on a 64x64 grid.

For each (window k x k, stride s x s) the script times one forward of ``NeighborhoodAttention`` with each
implementation (same weights, outputs checked equal first) and prints the speed-up over full (unmasked) SDPA
attention next to two predictions: the FLOP bound ``N / prod(k)`` and NATTEN-Sim's tile-count prediction
``(#Q tiles x #KV tiles) / sum of KV tiles visited`` for 2-D tiles of ``--tile`` x ``--tile`` tokens.

    python bench/gna.py                  # 64x64 grid, 1 thread
    python bench/gna.py --quick          # 32x32, for a smoke run
    python bench/gna.py --device cuda --batch 8    # on a GPU

Each row times full attention and every implementation interleaved (``bench/timing.timings``: median of
``--repeats`` >= 5 rounds, min-max kept); speed-ups are ratios of medians measured side by side.
Writes ``gna_bench_{cpu,cuda}.json`` and ``gna_speedup_{cpu,cuda}.png`` to ``results/gna/`` (``--out``;
``--publish`` also to ``docs/results/gna/``).
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.timing import ratio, timings  # noqa: E402

import torch  # noqa: E402

from graphattn.attention.neighborhood import NeighborhoodAttention  # noqa: E402
from graphattn.ops import neighborhood_mask  # noqa: E402
from graphattn.results import Results, add_output_args  # noqa: E402

GATHER_MAX_KEYS = 256  # the gather path materialises (N, K, H, D) keys and values; skip it above this




def tile_prediction(shape, kernel, stride, tile: int) -> float:
    """NATTEN-Sim style prediction: all-pairs tile count over the KV tiles each Q tile must visit."""
    h, w = shape
    mask = neighborhood_mask(shape, kernel, stride)                        # (N, N)
    th, tw = h // tile, w // tile
    # token (y, x) -> tile id (y // tile) * tw + x // tile
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    tid = ((ys // tile) * tw + xs // tile).reshape(-1)
    n_tiles = th * tw
    onehot = torch.nn.functional.one_hot(tid, n_tiles).float()            # (N, T)
    visited = (onehot.T @ mask.float() @ onehot) > 0                      # (T, T)  Q tile -> KV tile
    return n_tiles * n_tiles / float(visited.sum())


def run(side: int, dim: int, heads: int, windows, strides, tile: int, repeats: int, check: bool,
        device: str = "cpu", batch: int = 1) -> list[dict]:
    torch.manual_seed(0)
    n = side * side
    x = torch.randn(batch, n, dim, device=device)
    rows = []
    full_layer = NeighborhoodAttention(dim, heads, (side, side), side).to(device)
    where = f"{torch.get_num_threads()} thread(s)" if device == "cpu" else device
    print(f"grid {side}x{side} (N={n}), batch {batch}, dim {dim}, heads {heads}, {where}; "
          f"median of {repeats} interleaved repeats per row")
    header = (f"{'k':>3} {'s':>3} | {'full ms':>8} {'masked ms':>9} {'gather ms':>9} {'block ms':>9} | {'x masked':>8} "
              f"{'x gather':>8} {'x block':>8} {'(min-max)':>11} | {'N/prod(k)':>9} {'tile pred':>9} {'block/bound':>11}")
    print(header)
    print("-" * len(header))
    for k in windows:
        for s in strides:
            if s > k or (k == side and 1 < s < 16):   # full-size windows: keep the table short
                continue
            layer = NeighborhoodAttention(dim, heads, (side, side), k, stride=s).to(device)
            layer.load_state_dict(full_layer.state_dict())
            small = k * k <= (GATHER_MAX_KEYS if device == "cpu" else 4 * GATHER_MAX_KEYS)
            # with stride 1 the block path is the gather path: both materialise (N, K) keys
            impls = ["masked"] + (["block"] if small or s > 1 else []) + (["gather"] if small else [])
            with torch.no_grad():
                if check:
                    ref = layer(x, impl="masked")
                    for impl in impls[1:]:
                        err = float((layer(x, impl=impl) - ref).abs().max())
                        if err > 1e-4:
                            raise RuntimeError(f"k={k} s={s}: {impl} differs from masked by {err}")
                # full attention is timed in the same rounds as this row's implementations
                fns = {"full": lambda: full_layer.attn(x)}
                fns.update({impl: (lambda impl=impl: layer(x, impl=impl)) for impl in impls})
                times = timings(fns, repeats)
            full = times.pop("full")
            t_full = full["median"]
            bound = n / (k * k)
            pred = tile_prediction((side, side), k, s, tile)
            speed = {i: ratio(full, t) for i, t in times.items()}
            row = {"kernel": k, "stride": s, "tokens": n, "full_ms": t_full * 1e3,
                   "full_ms_min_max": [full["min"] * 1e3, full["max"] * 1e3],
                   **{f"{i}_ms": t["median"] * 1e3 for i, t in times.items()},
                   **{f"{i}_ms_min_max": [t["min"] * 1e3, t["max"] * 1e3] for i, t in times.items()},
                   **{f"speedup_{i}": r["median"] for i, r in speed.items()},
                   **{f"speedup_{i}_range": [r["low"], r["high"]] for i, r in speed.items()},
                   "flop_bound": bound, "tile_prediction": pred, "device": device,
                   "block_fraction_of_bound": speed["block"]["median"] / bound if "block" in times else None}
            rows.append(row)
            g = f"{row['gather_ms']:9.2f}" if "gather" in times else f"{'-':>9}"
            gx = f"{row['speedup_gather']:8.2f}" if "gather" in times else f"{'-':>8}"
            bl = f"{row['block_ms']:9.2f}" if "block" in times else f"{'-':>9}"
            bx = f"{row['speedup_block']:8.2f}" if "block" in times else f"{'-':>8}"
            bf = f"{row['block_fraction_of_bound']:11.2f}" if "block" in times else f"{'-':>11}"
            br = ("{:5.1f}-{:<5.1f}".format(*row["speedup_block_range"]) if "block" in times else f"{'-':>11}")
            print(f"{k:3d} {s:3d} | {t_full * 1e3:8.2f} {row['masked_ms']:9.2f} {g} {bl} | "
                  f"{row['speedup_masked']:8.2f} {gx} {bx} {br:>11} | {bound:9.1f} {pred:9.2f} {bf}")
    return rows


def plot(rows, out: Results, name: str, where: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    strides = sorted({r["stride"] for r in rows})
    for s in strides:
        sub = [r for r in rows if r["stride"] == s and "speedup_block" in r]
        ax.plot([r["kernel"] for r in sub], [r["speedup_block"] for r in sub], "o-", label=f"block, stride {s}")
    ks = sorted({r["kernel"] for r in rows})
    ax.plot(ks, [rows[0]["tokens"] / k ** 2 for k in ks], "k--", label="FLOP bound N/k^2")
    for s in strides:
        sub = [r for r in rows if r["stride"] == s]
        ax.plot([r["kernel"] for r in sub], [r["tile_prediction"] for r in sub], ":", color="gray")
    ax.plot([], [], ":", color="gray", label="tile-count prediction")
    sub = [r for r in rows if r["stride"] == 1]
    ax.plot([r["kernel"] for r in sub], [r["speedup_masked"] for r in sub], "x-", color="red", label="masked dense")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xlabel("window k (k x k)")
    ax.set_ylabel("speed-up over full attention")
    ax.set_title(f"GNA on a {int(math.sqrt(rows[0]['tokens']))}^2 grid ({where})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    out.save_figure(fig, name, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=64)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--tile", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true")
    add_output_args(parser, "gna")
    args = parser.parse_args()
    if args.repeats < 5:
        parser.error(f"--repeats must be >= 5 (published timings are medians of at least 5), got {args.repeats}")
    torch.set_num_threads(args.threads)
    side = 32 if args.quick else args.side
    windows = [w for w in (64, 32, 16, 8) if w <= side]
    rows = run(side, args.dim, args.heads, windows, (1, 4, 8, 16, 32, 64), args.tile,
               args.repeats, check=True, device=args.device, batch=args.batch)
    out = Results.from_args("gna", args)
    tag = "cpu" if args.device == "cpu" else "cuda"
    out.write_json(f"gna_bench_{tag}.json", {"device": args.device, "threads": args.threads, "batch": args.batch,
                                             "side": side, "dim": args.dim, "heads": args.heads,
                                             "repeats": args.repeats, "rows": rows}, seeds=[0])
    where = f"CPU, {args.threads} thread" if tag == "cpu" else torch.cuda.get_device_name()
    plot(rows, out, f"gna_speedup_{tag}.png", where)


if __name__ == "__main__":
    main()
