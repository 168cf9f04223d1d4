"""Per-module mutation scores from a `mutmut run` (the mutants/ folder), for docs/testing.md.

    python tools/mutation_scores.py [--survivors] [--markdown]
    python tools/mutation_scores.py --recheck-names          # survivors and timeouts, for `make mutate-recheck`
    python tools/mutation_scores.py --record-equivalents MUTANTS_DIR [MUTANTS_DIR ...]
    python tools/mutation_scores.py --renumber

score = killed / (checked - equivalent), where "killed" includes timeouts and "checked" is every mutant
that mutmut ran (not-checked mutants, e.g. of an interrupted run, are counted apart and left out).
Equivalent mutants are those named in backquotes on a line of docs/testing.md's "Equivalent mutants"
section, e.g. "- `graphattn.ops.x_foo__mutmut_3`: why it changes no behaviour".

mutmut numbers the mutants of a function over its covered lines only, so the same name means another change in
a run whose tests cover other lines. ``docs/mutation-equivalents.json`` therefore keeps, for each listed name,
its change: the mutated function and the lines of the mutant's diff against the original function (with a line
of context). A mutant is equivalent when its change is recorded there, whatever its number; a listed name
without a recorded change is matched by name. ``--record-equivalents`` records the changes of the listed names not
yet recorded, from the mutants/ folders of the runs that named them: a name is taken from the folder where it
survived.
``--renumber`` renames the listed equivalents, in that section and in the json file, to the names their changes
have in mutants/ (so that `mutmut show NAME` shows them after the last run).
"""

import argparse
import ast
import difflib
import json
import re
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHANGES = ROOT / "docs" / "mutation-equivalents.json"
MUTANT_DEF = re.compile(r"^(.*)__mutmut_(orig|\d+)$")
KILLED = {1, 3, 36, -24, 24, 152, 255}  # killed, pytest internal error, timeouts (see mutmut.stats)
TIMEOUT = KILLED - {1, 3}
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


def mutant_changes(source, module):
    """{mutant name: (function, change)} for one mutated file's source; the change is the mutant's diff against
    the function's original (the def line included, without the mutant's number), without positions, with one line
    of context."""
    lines = source.splitlines()
    functions = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (m := MUTANT_DEF.match(node.name)):
            body = lines[node.lineno - 1:node.end_lineno]
            body[0] = body[0].replace(node.name, m.group(1), 1)   # the def line without the mutant's number
            functions.setdefault(m.group(1), {})[m.group(2)] = body
    changes = {}
    for function, versions in functions.items():
        original = versions.pop("orig", None)
        if original is None:
            continue
        for number, body in versions.items():
            diff = difflib.unified_diff(original, body, n=1, lineterm="")
            change = tuple(line for line in diff if not line.startswith(("---", "+++", "@@")))
            changes[f"{module}.{function}__mutmut_{number}"] = (function, change)
    return changes


def changes_in(mutants_dir, modules=None):
    """Every mutant's change in a mutants/ folder (of the given dotted modules only, if any)."""
    changes = {}
    for path in sorted(Path(mutants_dir).rglob("*.py")):
        parts = path.relative_to(mutants_dir).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)   # mutmut's names drop "__init__"
        if (modules is None or module in modules) and "__mutmut_orig" in (text := path.read_text()):
            changes.update(mutant_changes(text, module))
    return changes


def recorded_changes(path=CHANGES):
    if not path.exists():
        return {}
    return {name: (entry["function"], tuple(entry["change"])) for name, entry in json.loads(path.read_text()).items()}


def _write_changes(path, recorded):
    from graphattn.io import atomic_write_text
    atomic_write_text(path, json.dumps(recorded, indent=1, ensure_ascii=False, sort_keys=True) + "\n")


def module_of(name):
    return name.rsplit(".", 1)[0]


def is_equivalent(name, change, listed, recorded, listed_changes):
    """A mutant is equivalent if its change is a recorded equivalent's, or (name listed, change not recorded)."""
    if change is not None and (module_of(name), *change) in listed_changes:
        return True
    return name in listed and name not in recorded


def record_equivalents(folders, listed, out=CHANGES):
    """Record the change of every listed equivalent not yet recorded in out from the folder where it survived
    (the recorded ones are kept; those no longer listed are dropped); print what is unresolved."""
    recorded = {name: {"function": f, "change": list(c)} for name, (f, c) in recorded_changes(out).items()
                if name in listed}
    missing = listed - set(recorded)
    modules = {module_of(name) for name in missing}
    found = {}
    for folder in folders:
        changes = changes_in(folder, modules)
        codes = {name: code for by_name in collect(Path(folder)).values() for name, code in by_name.items()}
        for name in missing:
            if name in changes and codes.get(name) == 0:
                found.setdefault(name, set()).add(changes[name])
    problems = []
    for name in sorted(missing):
        options = found.get(name, set())
        if len(options) == 1:
            function, change = options.pop()
            recorded[name] = {"function": function, "change": list(change)}
        else:
            problems.append(f"{name}: {'survived in no folder' if not options else 'different changes in folders'}")
    _write_changes(out, recorded)
    print(f"recorded the changes of {len(recorded)} of {len(listed)} listed equivalents in {out}")
    for line in problems:
        print("  not recorded:", line)
    return problems


def renumber(doc=ROOT / "docs" / "testing.md", out=CHANGES, mutants_dir=ROOT / "mutants"):
    """Rename each recorded equivalent to the name its change has in mutants_dir, in doc's equivalents section
    and in out; returns {old: new} for the names that changed."""
    recorded = recorded_changes(out)
    by_change = {}
    for name, (function, change) in changes_in(mutants_dir, {module_of(n) for n in recorded}).items():
        by_change.setdefault((module_of(name), function, change), name)
    new_name = {}
    for name, (function, change) in recorded.items():
        found = by_change.get((module_of(name), function, change))
        if found is not None and found != name:
            new_name[name] = found
    pattern = re.compile(r"`([\w.]+__mutmut_\d+)`")
    lines, inside = doc.read_text().splitlines(keepends=True), False
    for i, line in enumerate(lines):
        if line.startswith("#"):
            inside = "equivalent mutants" in line.lower()
        elif inside:   # all names of a line at once: a swap of two numbers stays a swap
            lines[i] = pattern.sub(lambda m: f"`{new_name.get(m.group(1), m.group(1))}`", line)
    from graphattn.io import atomic_write_text
    atomic_write_text(doc, "".join(lines))
    _write_changes(out, {new_name.get(name, name): {"function": f, "change": list(c)}
                         for name, (f, c) in recorded.items()})
    print(f"renamed {len(new_name)} of {len(recorded)} recorded equivalents to their names in {mutants_dir}")
    return new_name


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
    parser.add_argument("--recheck-names", action="store_true",
                        help="print only the names of the surviving mutants that are not listed as equivalent, "
                             "and of the timed-out ones")
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    parser.add_argument("--record-equivalents", nargs="+", metavar="MUTANTS_DIR",
                        help="record the changes of the listed equivalents from these mutants/ folders")
    parser.add_argument("--renumber", action="store_true",
                        help="rename the listed equivalents to their names in mutants/ (doc and json file)")
    args = parser.parse_args()

    if args.renumber:
        renumber()
        return
    equivalent = equivalent_mutants()
    if args.record_equivalents:
        sys.exit(1 if record_equivalents(args.record_equivalents, equivalent) else 0)
    recorded = recorded_changes()
    listed_changes = {(module_of(name), *change) for name, change in recorded.items() if name in equivalent}
    changes = changes_in(ROOT / "mutants", {change[0] for change in listed_changes})   # modules with equivalents
    rows, total = [], Counter()
    survivors, timeouts = [], []
    for module, codes in collect().items():
        c = Counter()
        for name, code in codes.items():
            if code is None:
                c["not checked"] += 1
            elif is_equivalent(name, changes.get(name), equivalent, recorded, listed_changes):
                c["equivalent"] += 1
            elif code in KILLED:
                c["killed"] += 1
                if code in TIMEOUT:
                    timeouts.append(name)
            else:
                c["survived" if code in SURVIVED else "no tests" if code in NO_TESTS else "other"] += 1
                survivors.append((name, code))
        total.update(c)
        rows.append((module, c))
    rows.append(("total", total))
    if args.recheck_names:
        print("\n".join(sorted([name for name, code in survivors if code in SURVIVED] + timeouts)))
        return

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
