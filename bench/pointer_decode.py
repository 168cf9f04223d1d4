"""Pointer Network decoding throughput at n = 50 (TSP tour mask): batched greedy and beam search against a
straightforward reference (one instance at a time, a Python loop over steps and beams, the mask as a set).

Both sides use the same PointerNet weights (untrained, uniform in +-init_range: throughput does not depend
on them) and the same
modules; the reference only changes how the work is organised. The outputs are compared too (greedy must
be identical; beam search may differ only where two candidates tie to float rounding). Prints instances per
second and the speed-up (ratio of medians from bench/timing.py ``timings``), writes
``results/pointer_decode/pointer_decode.json``.

    .venv/bin/python bench/pointer_decode.py [--n 50] [--batch 256] [--reference 16] [--beam 5] [--publish]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.timing import ratio, timings  # noqa: E402
from graphattn.config import Config  # noqa: E402
from graphattn.results import Results, add_output_args  # noqa: E402
from sequence.data import STOP, PointerSplit, SequenceData  # noqa: E402
from sequence.data.tsp import TSPProblem  # noqa: E402
from sequence.models.pointer_net import PointerNet  # noqa: E402


def _allowed(n: int, visited: set[int], first: int | None, closed: bool) -> list[int]:
    """The tour rule as a list: unvisited cities, then the first city once all are visited, then the stop."""
    if closed:
        return [STOP]
    if len(visited) == n:
        return [first]
    return [j for j in range(1, n + 1) if j not in visited]


def _start(model: PointerNet, points: torch.Tensor):
    n = points.shape[0]
    enc, state = model.encode(points[None], torch.tensor([n]))
    return model.pointer.keys(enc), state


def _step(model: PointerNet, points: torch.Tensor, keys, state, previous: int | None):
    x = model.go.view(1, 1, -1) if previous is None else model.embed(points[previous - 1]).view(1, 1, -1)
    dec, state = model.decoder(x, state)
    return model.pointer(dec, keys)[0, 0], state                                      # (1+n,), (h, c)


@torch.no_grad()
def reference_greedy(model: PointerNet, points: torch.Tensor) -> list[int]:
    n = points.shape[0]
    keys, state = _start(model, points)
    out, visited, first, closed, previous = [], set(), None, False, None
    for _ in range(n + 2):
        scores, state = _step(model, points, keys, state, previous)
        scores = scores.tolist()
        choice = max(_allowed(n, visited, first, closed), key=lambda j: scores[j])
        out.append(choice)
        if choice == STOP:
            break
        closed, first = choice == first, first if first is not None else choice
        visited.add(choice)
        previous = choice
    return out


@torch.no_grad()
def reference_beam(model: PointerNet, points: torch.Tensor, k: int) -> list[int]:
    n = points.shape[0]
    keys, state = _start(model, points)
    # a beam: (log p, output, state, visited, first, closed)
    beams = [(0.0, [], state, frozenset(), None, False)]
    for _ in range(n + 2):
        candidates = []
        for log_p, out, st, visited, first, closed in beams:
            if out and out[-1] == STOP:
                candidates.append((log_p, out, st, visited, first, closed))
                continue
            scores, new_state = _step(model, points, keys, st, out[-1] if out else None)
            allowed = _allowed(n, visited, first, closed)
            logs = F.log_softmax(scores[allowed], dim=0).tolist()
            for j, lj in zip(allowed, logs):
                candidates.append((log_p + lj, out + [j], new_state, visited | {j},
                                   first if first is not None else j, closed or j == first))
        candidates.sort(key=lambda c: -c[0])
        beams = candidates[:k]
        if all(b[1][-1] == STOP for b in beams):
            break
    return beams[0][1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50, help="cities per instance")
    ap.add_argument("--batch", type=int, default=256, help="instances decoded by ours per call")
    ap.add_argument("--reference", type=int, default=16, help="instances decoded by the reference per call")
    ap.add_argument("--beam", type=int, default=5, help="beam size")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--init_range", type=float, default=0.3,
                    help="weights uniform in +-this; wider than the paper's 0.08 so that an untrained model's "
                         "candidates do not tie to float rounding and the beam outputs can be compared")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    add_output_args(ap, "pointer_decode")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    rng = np.random.default_rng(0)
    points = [rng.random((args.n, 2)) for _ in range(args.batch)]
    split = PointerSplit.from_lists(points, [[1, STOP]] * args.batch)
    data = SequenceData("bench", split, split, split, TSPProblem())
    model = PointerNet(Config("PointerNet", "tsp", config_dict={"hidden_size": args.hidden,
                                                              "init_range": args.init_range}), data).eval()
    batch = split.batch(torch.arange(args.batch))
    steps = args.n + 2
    few = [batch["points"][i] for i in range(args.reference)]

    fns = {
        "ours greedy": lambda: model.decode(batch, steps, "tour"),
        "reference greedy": lambda: [reference_greedy(model, p) for p in few],
        f"ours beam {args.beam}": lambda: model.decode_beam(batch, steps, "tour", args.beam),
        f"reference beam {args.beam}": lambda: [reference_beam(model, p, args.beam) for p in few],
    }
    counts = {name: args.batch if name.startswith("ours") else args.reference for name in fns}

    # same outputs (on the reference's instances)
    ours_greedy = model.decode(batch, steps, "tour")[:args.reference].tolist()
    ours_beam = model.decode_beam(batch, steps, "tour", args.beam)[:args.reference].tolist()
    greedy_same = sum(o[:len(r)] == r for o, r in zip(ours_greedy, (reference_greedy(model, p) for p in few)))
    beam_same = sum(o[:len(r)] == r for o, r in zip(ours_beam, (reference_beam(model, p, args.beam) for p in few)))

    times = timings(fns, repeats=args.repeats)
    rows = []
    for name, t in times.items():
        rows.append({"method": name, "instances": counts[name], "median_s": t["median"],
                     "instances_per_s": counts[name] / t["median"]})
    per_instance = {name: {k: v / counts[name] if k != "repeats" else v for k, v in t.items()}
                    for name, t in times.items()}
    speedup = {"greedy": ratio(per_instance["reference greedy"], per_instance["ours greedy"]),
               "beam": ratio(per_instance[f"reference beam {args.beam}"], per_instance[f"ours beam {args.beam}"])}

    print(f"PointerNet decoding, n = {args.n}, tour mask, hidden {args.hidden}, {args.threads} torch thread(s)")
    print(f"{'method':<22} {'instances':>9} {'instances/s':>12}")
    for r in rows:
        print(f"{r['method']:<22} {r['instances']:>9} {r['instances_per_s']:>12.1f}")
    for key, s in speedup.items():
        print(f"speed-up {key}: {s['median']:.1f}x (range {s['low']:.1f}-{s['high']:.1f})")
    print(f"same output as the reference: greedy {greedy_same}/{args.reference}, beam {beam_same}/{args.reference}")

    out = Results.from_args("pointer_decode", args)
    out.write_json("pointer_decode.json", {
        "n": args.n, "beam_size": args.beam, "hidden_size": args.hidden, "init_range": args.init_range, "batch": args.batch,
        "reference_instances": args.reference, "timings": times, "rows": rows, "speedup": speedup,
        "same_output": {"greedy": greedy_same, "beam": beam_same, "of": args.reference}}, seeds=[0])


if __name__ == "__main__":
    main()
