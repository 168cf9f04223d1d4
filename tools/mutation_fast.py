"""`mutmut run` for a shared 2-core machine: the coverage run cached, and each mutant checked by its fast tests only.

    python tools/mutation_fast.py [--cap SECONDS] [mutmut run arguments ...]
    python tools/mutation_fast.py --cap 1.5 --max-children 1 'graphattn.training.*' 'recsys.models.*'

Two changes to a plain `mutmut run` (mutmut 3.8), both made by wrapping mutmut's own functions:

- mutmut reruns the whole suite under coverage on every `mutmut run` (to mutate covered lines only). The result is
  kept in ``mutants/coverage-cache.pkl`` and reused; delete it when the covered lines change.
- each mutated function's covering tests are cut to those that took at most ``--cap`` seconds in mutmut's stats run
  (the fastest one is kept where none did), and ``tests/recsys/test_distributed.py`` is left out: its torchrun
  fixture costs tens of seconds that the stats (call time only) record as 0, so a mutant's time limit runs out on it
  and mutmut reports a timeout, i.e. a kill, that no test made. The trimmed sets are not saved in
  ``mutants/mutmut-stats.json``.

A mutant that survives here may still be killed by a slower test (a full training run, a contract test of every
model): the score is a lower bound of the plain run's, and each survivor is a gap that a fast test should close.
"""

import os
import pickle
import sys
from pathlib import Path

import mutmut.__main__ as mm
import mutmut.code_coverage as cc
from mutmut.state import state

CACHE = Path("mutants") / "coverage-cache.pkl"
SLOW_FIXTURE = ("tests/recsys/test_distributed.py",)


def _parse_cap(argv):
    cap = 1.5
    if "--cap" in argv:
        i = argv.index("--cap")
        cap = float(argv[i + 1])
        del argv[i:i + 2]
    return cap


CAP = _parse_cap(sys.argv)
_gather = cc.gather_coverage
_stats = mm.collect_or_load_stats


def cached_coverage(runner, source_files):
    if CACHE.exists():
        print(f"using the cached coverage of {CACHE}", flush=True)
        return pickle.loads(CACHE.read_bytes())
    info = _gather(runner, list(source_files))
    CACHE.write_bytes(pickle.dumps(info))
    return info


def fast_tests_only(*args, **kwargs):
    _stats(*args, **kwargs)
    duration = state().duration_by_test
    before = after = 0
    for name, tests in list(state().tests_by_mangled_function_name.items()):
        tests = set(tests)
        keep = {t for t in tests if duration.get(t, 0) <= CAP and not t.startswith(SLOW_FIXTURE)}
        if not keep and tests:
            keep = {min(tests, key=lambda t: duration.get(t, 0))}
        before, after = before + len(tests), after + len(keep)
        state().tests_by_mangled_function_name[name] = keep
    print(f"covering tests cut to those of <= {CAP} s: {before} -> {after} (function, test) pairs", flush=True)


if __name__ == "__main__":
    os.chdir(Path(__file__).resolve().parents[1])
    mm.gather_coverage = cached_coverage
    mm.collect_or_load_stats = fast_tests_only
    sys.argv = ["mutmut", "run", *sys.argv[1:]]
    mm.cli()
