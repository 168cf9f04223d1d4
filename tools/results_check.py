"""Re-measure every published figure that takes under a minute and compare it with its published JSON.

    .venv/bin/python tools/results_check.py [--only care moh ...] [--list]      (make results-check)

Each check below runs one command (a bench / experiment script with ``--out`` pointed at a temporary
folder, or ``run.py`` with a temporary ``checkpoint_dir``), reads the JSON it wrote and the published JSON
under ``docs/results/``, and compares the named figures within the stated tolerance: exact for counts and
seeded single-thread training results, a relative band for timing ratios (the medians of interleaved
repeats still move with the machine's load; the band is the figure's own spread on an idle machine).
Prints one row per figure (published, now, tolerance, match / MISS) and exits 1 when any figure misses.
Not part of CI: timings need an idle machine.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


@dataclass(frozen=True)
class Figure:
    label: str
    key: str               # path into the JSON: dots, list items as [i] or [field=value]
    tolerance: float       # relative (|now - published| <= tolerance * |published|) or absolute (abs_tol)
    absolute: bool = False


@dataclass(frozen=True)
class Check:
    name: str
    argv: list[str]        # run from the repository root with this Python; "{out}" is the temporary folder
    produced: str          # file the command writes, relative to {out} (a glob for run.py runs)
    published: str         # the published JSON, relative to the repository root
    figures: list[Figure] = field(default_factory=list)
    publishable: bool = False   # the check's own command is the published one: --publish NAME writes it


def rel(label, key, tol):
    return Figure(label, key, tol)


def exact(label, key, tol=0.0):
    return Figure(label, key, tol, absolute=True)


CHECKS = [
    Check("care", ["bench/care.py", "--sides", "16,32,64", "--out", "{out}"], "care_bench_cpu.json",
          "docs/results/care/care_bench_cpu.json",
          [exact("CARE-S0 parameters", "care_s0.params"), exact("CARE-S0 MACs (224 px)", "care_s0.macs"),
           rel("softmax / linear time, side 32", "rows[side=32].softmax_over_linear", 0.25),
           rel("softmax / linear time, side 64", "rows[side=64].softmax_over_linear", 0.25)]),
    Check("moh", ["bench/moh.py", "--out", "{out}"], "moh_bench_cpu.json", "docs/results/moh/moh_bench_cpu.json",
          [rel("MoH routed / MHA time, 1 of 8 heads", "rows[shared=0,top_k=1].routed_over_mha", 0.25),
           rel("MoH routed / MHA time, 2 of 8 heads", "rows[shared=0,top_k=2].routed_over_mha", 0.25),
           rel("MoH routed / MHA time, 4 of 8 heads", "rows[shared=0,top_k=4].routed_over_mha", 0.25)]),
    Check("gna", ["bench/gna.py", "--out", "{out}"], "gna_bench_cpu.json", "docs/results/gna/gna_bench_cpu.json",
          [rel("GNA block speed-up, k=16 s=16", "rows[kernel=16,stride=16].speedup_block", 0.25),
           rel("GNA block speed-up, k=8 s=8", "rows[kernel=8,stride=8].speedup_block", 0.25),
           rel("GNA block speed-up, k=32 s=32", "rows[kernel=32,stride=32].speedup_block", 0.25)]),
    Check("BPRMF ml-100k", ["run.py", "--model", "BPRMF", "--dataset", "ml-100k", "--seed=0", "--num_threads=1",
                            "--show_progress=false", "--checkpoint_dir={out}"],
          "*/metrics.json", "docs/results/run/BPRMF-ml-100k-seed0.json",
          [exact("BPRMF ml-100k seed 0 test recall@20", "test.recall@20", 1e-4),
           exact("BPRMF ml-100k seed 0 test ndcg@20", "test.ndcg@20", 1e-4)], publishable=True),
]


def lookup(obj, key: str):
    """``a.b[2].c`` or ``rows[side=64].x`` (a list item whose fields equal the given values)."""
    for part in re.findall(r"[^.\[\]]+|\[[^\]]*\]", key):
        if part.startswith("["):
            sel = part[1:-1]
            if "=" not in sel:
                obj = obj[int(sel)]
                continue
            want = dict(kv.split("=", 1) for kv in sel.split(","))
            hits = [item for item in obj if all(str(item.get(k)) == v for k, v in want.items())]
            if len(hits) != 1:
                raise KeyError(f"{key}: {len(hits)} items match [{sel}]")
            obj = hits[0]
        else:
            if part not in obj:
                raise KeyError(f"{key}: no key '{part}' (has {sorted(obj)[:12]})")
            obj = obj[part]
    return obj


def matches(fig: Figure, published: float, now: float) -> bool:
    if not (math.isfinite(published) and math.isfinite(now)):
        return False
    band = fig.tolerance if fig.absolute else fig.tolerance * abs(published)
    return abs(now - published) <= band + 1e-12


def measure(check: Check) -> dict:
    """Run the check's command into a temporary folder; the JSON it wrote (RuntimeError when it failed)."""
    with tempfile.TemporaryDirectory(prefix=f"check-{check.name.replace(' ', '_')}-") as tmp:
        argv = [a.replace("{out}", tmp) for a in check.argv]
        t0 = time.perf_counter()
        proc = subprocess.run([PY, *argv], cwd=ROOT, capture_output=True, text=True)
        took = time.perf_counter() - t0
        if proc.returncode:
            print(proc.stdout[-1500:], proc.stderr[-1500:], sep="\n")
            raise RuntimeError(f"command failed ({proc.returncode})")
        produced = sorted(Path(tmp).glob(check.produced))
        if len(produced) != 1:
            raise RuntimeError(f"{len(produced)} files match {check.produced}")
        print(f"  {check.name}: python {' '.join(check.argv[:1])} ran in {took:.0f} s", flush=True)
        return json.loads(produced[0].read_text())


def publish(check: Check) -> None:
    """Write the check's own measurement as its published JSON (with command, machine, git and date)."""
    sys.path.insert(0, str(ROOT))
    from graphattn.io import atomic_write_text
    from graphattn.results import Results

    now = measure(check)
    payload = {k: v for k, v in now.items() if k in ("test", "evaluations")} if "test" in now else now
    argv = [a for a in check.argv if "{out}" not in a]
    import torch
    for a in argv:   # record the threads the run used, not this process's
        if a.startswith("--num_threads="):
            torch.set_num_threads(int(a.split("=", 1)[1]))
    record = Results("results_check", argv=argv).record(payload, seeds=None)
    atomic_write_text(ROOT / check.published, json.dumps(record, indent=2) + "\n")
    print(f"wrote {check.published}")


def run_check(check: Check) -> list[tuple[str, str, str, str, str]]:
    published_path = ROOT / check.published
    if not published_path.is_file():
        return [(f.label, "not published", "-", _tol(f), "SKIP") for f in check.figures]
    published = json.loads(published_path.read_text())
    try:
        now = measure(check)
    except RuntimeError as err:
        return [(f.label, "-", str(err), _tol(f), "MISS") for f in check.figures]
    rows = []
    for fig in check.figures:
        try:
            p, n = float(lookup(published, fig.key)), float(lookup(now, fig.key))
        except (KeyError, IndexError, TypeError, ValueError) as err:
            rows.append((fig.label, "-", f"error: {err}", _tol(fig), "MISS"))
            continue
        rows.append((fig.label, _fmt(p), _fmt(n), _tol(fig), "match" if matches(fig, p, n) else "MISS"))
    return rows


def _fmt(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 1e5 else f"{v:.4g}"


def _tol(fig: Figure) -> str:
    if fig.absolute:
        return "exact" if fig.tolerance == 0 else f"+-{fig.tolerance:g}"
    return f"+-{fig.tolerance:.0%}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", help="names of the checks to run")
    parser.add_argument("--list", action="store_true", help="list the checks and their commands")
    parser.add_argument("--publish", metavar="NAME", help="write a publishable check's measurement as its published JSON")
    args = parser.parse_args()
    if args.publish:
        check = next((c for c in CHECKS if c.name == args.publish), None)
        if check is None or not check.publishable:
            parser.error(f"--publish takes one of {[c.name for c in CHECKS if c.publishable]} (the others are "
                         "published by their own script's --publish), got {args.publish!r}")
        publish(check)
        return 0
    checks = CHECKS
    if args.only:
        unknown = sorted(set(args.only) - {c.name for c in CHECKS})
        if unknown:
            parser.error(f"unknown check(s) {unknown}; known: {[c.name for c in CHECKS]}")
        checks = [c for c in CHECKS if c.name in args.only]
    if args.list:
        for c in checks:
            print(f"{c.name:16s} python {' '.join(c.argv)}  ->  {c.published}")
        return 0
    rows = []
    for check in checks:
        rows += run_check(check)
    width = max(len(r[0]) for r in rows)
    print(f"\n{'figure':<{width}}  {'published':>12}  {'now':>12}  {'tolerance':>9}  result")
    for label, pub, now, tol, res in rows:
        print(f"{label:<{width}}  {pub:>12}  {now:>12}  {tol:>9}  {res}")
    missed = sum(r[4] == "MISS" for r in rows)
    skipped = sum(r[4] == "SKIP" for r in rows)
    print(f"\n{len(rows) - missed - skipped} match, {missed} miss, {skipped} not published yet")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
