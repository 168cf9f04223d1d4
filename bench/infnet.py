"""INFNet cost vs sequence length, next to full self-attention over all tokens.

    .venv/bin/python bench/infnet.py [--lengths 20 200 2000] [--batch 8] [--device cpu|cuda]

One training step's forward + backward per batch, at each behaviour-sequence length L (F = 3 behaviour
types of length L each, M = 20 categorical fields, 3 tasks, d = 16, 3 blocks / layers). Models:

- INFNet (defaults of ``model/INFNet.yaml``): proxies query tokens and tokens are gated, so cost grows
  linearly with L;
- full self-attention: every token (fields, sequences, task tokens) attends to every token, through the
  same ``GraphAttention`` layer (residual update, SDPA kernel), 3 layers — quadratic in L;
- full self-attention with the weights materialised (``return_attention=True``, the explicit path), to show
  the quadratic memory that a fused kernel hides.

Memory: on CUDA the peak allocated during the step (above what was allocated before it); on CPU the bytes
of the tensors autograd keeps for the backward pass (distinct storages). Prints a table and the ratio of
each cost to the previous length's (x10 in L: ~10 means linear, ~100 quadratic). Times are medians of
``--repeats`` >= 5 steps. Writes ``infnet_bench_{cpu,cuda}.json`` to ``results/infnet/`` (``--out``;
``--publish`` also to ``docs/results/infnet/``).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from graphattn.results import Results, add_output_args  # noqa: E402

import recsys.multitask  # noqa: E402,F401
from graphattn.attention import GraphAttention  # noqa: E402
from graphattn.config import Config  # noqa: E402
from graphattn.registry import get_model  # noqa: E402
from recsys.multitask.base import FeatureEmbedding, MultiTaskModel, mlp  # noqa: E402
from recsys.multitask.data import synthetic_three_task  # noqa: E402


class FullSelfAttention(MultiTaskModel):
    """All tokens in one sequence, ``layers`` pre-norm-free residual attention layers, towers on task tokens."""

    def __init__(self, config, data, layers: int = 3, explicit: bool = False):
        super().__init__(config, data)
        d = int(config["embedding_size"])
        self.embedding = FeatureEmbedding(data, d, type_embedding=True)
        self.task_tokens = nn.Parameter(0.1 * torch.randn(self.num_tasks, d))
        self.layers = nn.ModuleList([GraphAttention(d, d, 1, update="residual") for _ in range(layers)])
        self.towers = nn.ModuleList([mlp(d, list(config["tower_hidden"]), 1) for _ in range(self.num_tasks)])
        self.explicit = explicit

    def forward(self, batch):
        c, s, mask = self.embedding(batch)
        b = c.shape[0]
        x = torch.cat([c, s, self.task_tokens.expand(b, -1, -1)], dim=1)           # (B, M + L + T, d)
        ones = torch.ones(b, c.shape[1], dtype=torch.bool, device=c.device)
        kpm = torch.cat([ones, mask, ones[:, :self.num_tasks]], dim=1)
        for layer in self.layers:
            x = layer(x, key_padding_mask=kpm, return_attention=self.explicit)
            x = x[0] if self.explicit else x
        t = x[:, -self.num_tasks:]
        return torch.cat([tower(t[:, i]) for i, tower in enumerate(self.towers)], dim=1)


def saved_bytes(fn) -> tuple[object, int]:
    storages: dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        storages[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(storages.values())


def measure(model, batch, device, repeats: int) -> tuple[float, float]:
    def step():
        model.zero_grad(set_to_none=True)
        loss, _ = model.compute_loss(batch)
        loss.backward()

    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    if device.type == "cuda":
        model.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        mem = torch.cuda.max_memory_allocated() - base
    else:
        model.zero_grad(set_to_none=True)
        _, mem = saved_bytes(lambda: model.compute_loss(batch)[0])
    return statistics.median(times), float(mem)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[20, 200, 2000])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip_explicit_above", type=int, default=10**9,
                        help="leave out the explicit full attention for longer sequences (memory)")
    add_output_args(parser, "infnet")
    args = parser.parse_args()
    if args.repeats < 5:
        parser.error(f"--repeats must be >= 5 (published timings are medians of at least 5), got {args.repeats}")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device {device}, batch {args.batch}, F=3 behaviour types of length L, M=20 fields, 3 tasks, d=16")
    rows = []
    for length in args.lengths:
        torch.manual_seed(0)
        data = synthetic_three_task(n_samples=max(10 * args.batch, 100), n_users=50, seq_len=length, seed=0)
        # every position real (the worst case for cost)
        split = data.train
        split.seq = [torch.randint(1, data.vocab_sizes["item"], s.shape) for s in split.seq]
        batch = split.to(device).batch(torch.arange(args.batch, device=device))
        cfg_inf = Config("INFNet", "mtl-synthetic", config_dict={"max_seq_len": length})
        models = {"INFNet": get_model("INFNet")(cfg_inf, data),
                  "full-attn (SDPA)": FullSelfAttention(cfg_inf, data)}
        if length <= args.skip_explicit_above:
            models["full-attn (explicit)"] = FullSelfAttention(cfg_inf, data, explicit=True)
        for name, model in models.items():
            model.to(device)
            sec, mem = measure(model, batch, device, args.repeats)
            rows.append((name, length, sec, mem))
            print(f"{name:22s} L={length:5d} tokens={20 + 3 * length + 3:5d} {1000 * sec:10.1f} ms/batch "
                  f"{mem / 2**20:10.1f} MiB", flush=True)
            del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print("\ngrowth per x10 in L (time, memory):")
    growth = {}
    for name in dict.fromkeys(r[0] for r in rows):
        mine = [r for r in rows if r[0] == name]
        growth[name] = [{"from": a[1], "to": b[1], "time": b[2] / a[2], "memory": b[3] / max(a[3], 1)}
                        for a, b in zip(mine, mine[1:])]
        parts = [f"L {g['from']}->{g['to']}: time x{g['time']:.1f}, memory x{g['memory']:.1f}" for g in growth[name]]
        print(f"  {name:22s} " + "; ".join(parts))
    tag = "cpu" if device.type == "cpu" else "cuda"
    Results.from_args("infnet", args).write_json(f"infnet_bench_{tag}.json", {
        "device": str(device), "threads": args.threads, "batch": args.batch, "repeats": args.repeats,
        "rows": [{"model": n, "length": L, "seconds": sec, "memory_bytes": mem} for n, L, sec, mem in rows],
        "growth": growth}, seeds=[0])


if __name__ == "__main__":
    main()
