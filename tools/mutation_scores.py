"""Per-module mutation scores from a `mutmut run` (the mutants/ folder), for docs/testing.md.

    python tools/mutation_scores.py [--survivors] [--markdown]

score = killed / (checked - equivalent), where "killed" includes timeouts and "checked" is every mutant
that mutmut ran (not-checked mutants, e.g. of an interrupted run, are counted apart and left out).
Equivalent mutants are those named in backquotes on a line of docs/testing.md's "Equivalent mutants"
section, e.g. "- `graphattn.ops.x_foo__mutmut_3`: why it changes no behaviour".
"""

import argparse
import json
import re
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KILLED = {1, 3, 36, -24, 24, 152, 255}  # killed, pytest internal error, timeouts (see mutmut.stats)
SURVIVED = {0}
NO_TESTS = {5, 33}


def equivalent_mutants(doc=ROOT / "docs" / "testing.md"):
    if not doc.exists():
        return set()
    names, inside = set(), False
    for line in doc.read_text().splitlines():
        if line.startswith("#"):
            inside = "equivalent mutants" in line.lower()
        elif inside:
            names.update(re.findall(r"`([\w.]+__mutmut_\d+)`", line))
    return names


def collect(mutants_dir=ROOT / "mutants"):
    by_module = {}
    for meta in sorted(mutants_dir.rglob("*.py.meta")):
        module = str(meta.relative_to(mutants_dir))[: -len(".meta")]
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        if codes:
            by_module[module] = codes
    return by_module


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--survivors", action="store_true", help="list surviving (and untested) mutants")
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    args = parser.parse_args()

    equivalent = equivalent_mutants()
    rows, total = [], Counter()
    survivors = []
    for module, codes in collect().items():
        c = Counter()
        for name, code in codes.items():
            if code is None:
                c["not checked"] += 1
            elif name in equivalent:
                c["equivalent"] += 1
            elif code in KILLED:
                c["killed"] += 1
            else:
                c["survived" if code in SURVIVED else "no tests" if code in NO_TESTS else "other"] += 1
                survivors.append((name, code))
        total.update(c)
        rows.append((module, c))
    rows.append(("total", total))

    def score(c):
        denominator = c["killed"] + c["survived"] + c["no tests"] + c["other"]
        return f"{100 * c['killed'] / denominator:.1f} %" if denominator else "-"

    cols = ["killed", "survived", "no tests", "other", "equivalent", "not checked"]
    if args.markdown:
        print("| module | " + " | ".join(cols) + " | score |")
        print("|---" * (len(cols) + 2) + "|")
        for module, c in rows:
            print(f"| `{module}` | " + " | ".join(str(c[k]) for k in cols) + f" | {score(c)} |")
    else:
        print(f"{'module':45s}" + "".join(f"{k:>12s}" for k in cols) + f"{'score':>10s}")
        for module, c in rows:
            print(f"{module:45s}" + "".join(f"{c[k]:12d}" for k in cols) + f"{score(c):>10s}")
    if args.survivors:
        for name, code in sorted(survivors):
            print(name, "survived" if code == 0 else f"exit code {code}")


if __name__ == "__main__":
    main()
