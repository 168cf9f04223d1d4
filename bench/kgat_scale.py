"""How KGAT's cost per epoch grows with the knowledge graph: time and peak memory on synthetic KGs.

    python bench/kgat_scale.py [--edges 1000000 4000000 16000000] [--batches 3] [--threads 1]
                               [--timeout 900] [--seed 2019]

Each size runs in its own process (so its peak resident memory is its own) and trains KGAT through the shared
``Trainer`` on a planted-kg dataset (:func:`recsys.data.synthetic.planted_kg`) with ``E`` KG triples:
``E / 16`` items, each with one informative and 15 noise triples, ``E / 32`` noise entities, ``E / 32`` users
with 4-12 interactions each (the CKG adds an inverse of every triple and both directions of every interaction,
about ``2.25 E`` edges). KGAT's defaults: d = 64, layers [64, 32, 16], CF batch 1024 users, the official KG batch
rule. An epoch at these sizes takes minutes to hours on one thread, so each process runs one warm-up epoch of
one batch per phase, then one epoch of ``--batches`` batches per phase, and the epoch time is estimated as
``cf seconds/batch x CF batches + kg seconds/batch x KG batches + attention refresh`` (all three measured,
in CPU seconds of the one-thread process: on a shared machine its wall time measures the other jobs too; the
wall figures are in the JSON).
Peak memory is the process's maximum resident set (``ru_maxrss``); "per KG edge" is (peak - the process's
memory after imports) / E. A size whose peak, predicted from the sizes before it, exceeds ``--memory-share`` of
the available memory is skipped (the machine is shared), and one that fails or runs past ``--timeout`` is
reported as not fitting; the
power law ``cost = a * E^b`` fitted to the sizes that fit extrapolates to the others and to 100M edges.
Writes ``kgat_scale.json`` and ``kgat_scale.png`` (``results/kgat_scale/``; ``--publish`` also
``docs/results/kgat_scale/``).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # KiB on Linux


def shape(edges: int) -> dict:
    """planted-kg arguments for about ``edges`` KG triples."""
    n_items = max(64, edges // 16)
    return {"n_items": n_items, "n_users": max(32, edges // 32), "n_clusters": 64, "noise_links_per_item": 15,
            "n_noise_relations": 4, "n_noise_entities": max(64, edges // 32), "min_inter": 4, "max_inter": 12,
            "split": [0.8, 0.1, 0.1]}


def worker(args: argparse.Namespace) -> None:
    """One size: build, warm up, time ``--batches`` batches per phase and the refresh; write a JSON line."""
    import torch
    torch.set_num_threads(args.threads)
    import recsys  # noqa: F401
    from graphattn.config import Config
    from graphattn.training import Trainer

    base = rss_bytes()
    t0 = time.perf_counter()
    config = Config("KGAT", "planted-kg", config_dict={
        "planted_kg": shape(args.worker_edges), "seed": args.seed, "show_progress": False, "device": "cpu",
        "log_level": "WARNING", "eval_batch_size": 4096})
    trainer = Trainer.from_config(config)
    build_s = time.perf_counter() - t0
    data, model = trainer.task.data, trainer.model
    samplers = trainer.task.samplers
    full = {"cf": len(data.train) // samplers["cf"].batch_size + 1, "kg": samplers["kg"].n_batches}
    after_build = rss_bytes()
    for s in samplers.values():
        s.n_batches = 1
    trainer.train_epoch()                                   # warm-up: one batch per phase and a refresh
    for s in samplers.values():
        s.n_batches = args.batches
    cpu = {"cf": 0.0, "kg": 0.0, "refresh": 0.0}   # CPU seconds: on a shared machine the wall time is contention
    step, end_epoch = trainer.train_step, trainer.task.end_epoch

    def timed_step(phase, batch):
        c = time.process_time()
        try:
            return step(phase, batch)
        finally:
            cpu[phase] += time.process_time() - c

    def timed_end(model):
        c = time.process_time()
        try:
            return end_epoch(model)
        finally:
            cpu["refresh"] += time.process_time() - c

    trainer.train_step, trainer.task.end_epoch = timed_step, timed_end
    logs = trainer.train_epoch()
    per_batch = {p: cpu[p] / args.batches for p in ("cf", "kg")}
    epoch_s = sum(per_batch[p] * full[p] for p in ("cf", "kg")) + cpu["refresh"]
    row = {"kg_edges": int(len(data.kg)), "ckg_edges": int(model.edge_index.shape[1]), "nodes": int(model.n_nodes),
           "users": int(data.n_users), "items": int(data.n_items), "entities": int(data.n_entities),
           "train_interactions": int(len(data.train)), "parameters": int(sum(p.numel() for p in model.parameters())),
           "batches_per_epoch": full, "cf_s_per_batch": per_batch["cf"], "kg_s_per_batch": per_batch["kg"],
           "refresh_s": cpu["refresh"], "epoch_s_estimated": epoch_s, "build_s": build_s,
           "wall": {"cf_s_per_batch": logs["cf_seconds"] / args.batches, "kg_s_per_batch": logs["kg_seconds"] /
                    args.batches, "refresh_s": logs["epoch_end_seconds"]},
           "rss_after_imports": base, "rss_after_build": after_build, "peak_rss": peak_bytes()}
    row["peak_bytes_per_kg_edge"] = (row["peak_rss"] - base) / row["kg_edges"]
    row["tensor_bytes"] = tensor_bytes(trainer)
    Path(args.worker_out).write_text(json.dumps(row))


def _nbytes(obj) -> int:
    """Bytes of the numpy arrays / torch tensors held directly by ``obj`` (attributes, one level)."""
    import torch
    total = 0
    for v in vars(obj).values():
        if isinstance(v, np.ndarray):
            total += v.nbytes
        elif isinstance(v, torch.Tensor):
            total += _tensor_nbytes(v)
    return total


def _tensor_nbytes(t) -> int:
    import torch
    if t.layout == torch.sparse_csr:
        return sum(x.numel() * x.element_size() for x in (t.crow_indices(), t.col_indices(), t.values()))
    return t.numel() * t.element_size()


def tensor_bytes(trainer) -> dict[str, int]:
    """Where the memory of a KGAT run lives: bytes per component (the rest of the peak is temporaries)."""
    model = trainer.model
    adjacency = model.adjacency
    return {
        "parameters": sum(_tensor_nbytes(p) for p in model.parameters()),
        "gradients": sum(_tensor_nbytes(p.grad) for p in model.parameters() if p.grad is not None),
        "optimizer_states": sum(_tensor_nbytes(v) for opt in trainer.optimizers.values()
                                for st in opt.state.values() for v in st.values() if hasattr(v, "numel")),
        "graph_buffers": sum(_tensor_nbytes(b) for b in model.buffers()),
        "adjacency_csr": _tensor_nbytes(adjacency.matrix) + _tensor_nbytes(adjacency.matrix_t),
        "samplers": sum(_nbytes(s) for s in trainer.task.samplers.values()),
        "dataset_arrays": _nbytes(trainer.task.data),
    }


def run_size(args: argparse.Namespace, edges: int, out: Path) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker-edges", str(edges), "--worker-out", str(out),
           "--batches", str(args.batches), "--threads", str(args.threads), "--seed", str(args.seed)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONWARNINGS": "ignore"}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"requested_edges": edges, "fits": False, "why": f"ran past --timeout {args.timeout} s"}
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
        why = "killed (out of memory?)" if proc.returncode < 0 else tail[0][:200]
        return {"requested_edges": edges, "fits": False, "why": f"exit {proc.returncode}: {why}"}
    return {"requested_edges": edges, "fits": True, "wall_s": time.perf_counter() - t0, **json.loads(out.read_text())}


def available_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 1 << 62


def predicted_peak(rows: list[dict], edges: int) -> float | None:
    """Peak memory at ``edges`` from the largest size measured so far, assuming everything above the process's
    memory after imports grows in proportion to the edges (an upper bound: part of it is fixed)."""
    ok = [r for r in rows if r["fits"]]
    if not ok:
        return None
    r = max(ok, key=lambda r: r["kg_edges"])
    return r["rss_after_imports"] + (r["peak_rss"] - r["rss_after_imports"]) * edges / r["kg_edges"]


def power_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """``(a, b)`` of ``y = a * x^b`` by least squares in log-log space (needs two points)."""
    b, log_a = np.polyfit(np.log(x), np.log(y), 1)
    return float(np.exp(log_a)), float(b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--edges", type=float, nargs="+", default=[1e6, 4e6, 16e6], help="KG triples per size")
    parser.add_argument("--batches", type=int, default=3, help="timed batches per phase")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=900, help="seconds per size before it counts as not fitting")
    parser.add_argument("--memory-share", type=float, default=0.6,
                        help="skip a size whose predicted peak exceeds this share of the available memory")
    parser.add_argument("--seed", type=int, default=2019)
    parser.add_argument("--worker-edges", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    from graphattn.results import Results, add_output_args
    add_output_args(parser, "kgat_scale")
    args = parser.parse_args()
    if args.worker_edges is not None:
        worker(args)
        return
    from tqdm.auto import tqdm
    import torch
    torch.set_num_threads(args.threads)      # the workers' setting, so the JSON's machine record shows it
    out = Results.from_args("kgat_scale", args)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for e in tqdm([int(e) for e in args.edges], desc="sizes", unit="size"):
            need = predicted_peak(rows, e)
            if need is not None and need > args.memory_share * available_bytes():
                rows.append({"requested_edges": e, "fits": False,
                             "why": f"skipped: predicted peak {need / 2**30:.1f} GiB > {args.memory_share:.0%} of the "
                                    f"{available_bytes() / 2**30:.1f} GiB available on this shared machine"})
            else:
                rows.append(run_size(args, e, Path(tmp) / f"{e}.json"))
            r = rows[-1]
            print(f"{e:,} edges: " + (f"epoch ~{r['epoch_s_estimated']:.0f} s, peak {r['peak_rss'] / 2**30:.2f} GiB"
                                      if r["fits"] else f"does not fit: {r['why']}"), flush=True)
    ok = [r for r in rows if r["fits"]]
    fits = {}
    if len(ok) >= 2:
        x = np.array([r["kg_edges"] for r in ok], float)
        for key in ("epoch_s_estimated", "refresh_s", "cf_s_per_batch", "kg_s_per_batch"):
            a, b = power_fit(x, np.array([r[key] for r in ok], float))
            fits[key] = {"a": a, "b": b, "at_16M": a * 16e6 ** b, "at_100M": a * 1e8 ** b}
        slope, fixed = np.polyfit(x, [r["peak_rss"] for r in ok], 1)    # memory: fixed part + bytes per edge
        fits["peak_rss"] = {"fixed": float(fixed), "bytes_per_kg_edge": float(slope),
                            "at_16M": float(fixed + slope * 16e6), "at_100M": float(fixed + slope * 1e8)}
    lines = [f"KGAT (d=64, layers [64, 32, 16]) on planted-kg shaped KGs, {args.threads} thread(s), "
             f"{args.batches} timed batches per phase; CPU seconds; epoch = s/batch x batches + refresh",
             f"{'KG edges':>11} {'CKG edges':>11} {'nodes':>10} {'cf s/b':>7} {'kg s/b':>7} {'batches cf/kg':>14} "
             f"{'refresh s':>9} {'epoch s':>8} {'peak GiB':>9} {'B/KG edge':>9}"]
    for r in rows:
        if not r["fits"]:
            lines.append(f"{r['requested_edges']:>11,} does not fit here: {r['why']}")
            continue
        lines.append(f"{r['kg_edges']:>11,} {r['ckg_edges']:>11,} {r['nodes']:>10,} {r['cf_s_per_batch']:>7.2f} "
                     f"{r['kg_s_per_batch']:>7.3f} {r['batches_per_epoch']['cf']:>7}/{r['batches_per_epoch']['kg']:<6} "
                     f"{r['refresh_s']:>9.1f} {r['epoch_s_estimated']:>8.0f} {r['peak_rss'] / 2**30:>9.2f} "
                     f"{r['peak_bytes_per_kg_edge']:>9.0f}")
    for key, f in fits.items():
        if key == "peak_rss":
            lines.append(f"fit peak memory = {f['fixed'] / 2**30:.2f} GiB + {f['bytes_per_kg_edge']:.0f} B x E: "
                         f"at 16M {f['at_16M'] / 2**30:.1f} GiB, at 100M {f['at_100M'] / 2**30:.1f} GiB")
        else:
            lines.append(f"fit {key} = {f['a']:.3g} * E^{f['b']:.2f}: at 16M {f['at_16M']:.3g}, at 100M {f['at_100M']:.3g}")
    table = "\n".join(lines)
    print(table)
    out.write_json("kgat_scale.json", {"rows": rows, "fits": fits, "table": table,
                                       "config": {"edges": args.edges, "batches": args.batches,
                                                  "threads": args.threads, "timeout": args.timeout}},
                   seeds=[args.seed])
    if ok:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        x = np.array([r["kg_edges"] for r in ok], float)
        grid = np.geomspace(min(x.min(), 1e6), 1e8, 50)
        for ax, key, scale, label in ((axes[0], "epoch_s_estimated", 1 / 60, "minutes per epoch (1 thread)"),
                                      (axes[1], "peak_rss", 1 / 2**30, "peak memory (GiB)")):
            ax.loglog(x, [r[key] * scale for r in ok], "o", label="measured")
            if key == "peak_rss" and key in fits:
                f = fits[key]
                ax.loglog(grid, (f["fixed"] + f["bytes_per_kg_edge"] * grid) * scale, "--",
                          label=f"fit {f['fixed'] / 2**30:.2f} GiB + {f['bytes_per_kg_edge']:.0f} B/edge")
            elif key in fits:
                f = fits[key]
                ax.loglog(grid, f["a"] * grid ** f["b"] * scale, "--", label=f"fit ~ E^{f['b']:.2f}")
            for r in rows:
                if not r["fits"]:
                    ax.axvline(r["requested_edges"], color="grey", lw=0.8, ls=":")
            ax.set_xlabel("KG edges (triples)")
            ax.set_ylabel(label)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
        fig.suptitle("KGAT cost per epoch vs knowledge-graph size (grey: sizes that did not fit this machine)")
        fig.tight_layout()
        out.save_figure(fig, "kgat_scale.png")


if __name__ == "__main__":
    main()
