"""`mutmut run` that works on a shared 2-core machine (and is what `make mutate` runs).

    python tools/mutation_fast.py [--cap SECONDS] [--budget SECONDS] [--fresh-coverage] [--preload MODULE,...]
                                  [mutmut run arguments ...]
    python tools/mutation_fast.py --cap 1.5 --max-children 1 'graphattn.training.*' 'recsys.models.*'
    python tools/mutation_fast.py --preload optuna,optuna.visualization.matplotlib 'graphattn.search.*'

Eight changes to a plain `mutmut run` (mutmut 3.8), made by wrapping mutmut's own functions:

- mutmut reruns the whole suite under coverage on every `mutmut run` (to mutate covered lines only). The result is
  kept in ``mutants/coverage-cache.pkl`` and reused; ``--fresh-coverage`` deletes it first (do so when the covered
  lines may have changed: `make mutate` always does). The coverage run runs in a forked child: mutmut runs it in
  its own process, from which it later forks every mutant's process, which then inherited the whole suite's state
  (1.4 GB resident after the run, open loggers, torch's thread pools).
- ``tests/recsys/test_distributed.py`` is left out of every mutant's tests: its torchrun fixture costs tens of seconds
  that the stats (call time only) record as 0, so a mutant's time limit runs out on it and mutmut reports a timeout,
  i.e. a kill, that no test made. So is ``tests/graphattn/test_determinism.py``: it runs torch with 2 threads, which
  hangs in a forked process once the OpenMP pool exists (py-spy showed the mutants' processes idle in a tensor
  reduction); every mutant that survived until it timed out and counted as killed. With ``--cap SECONDS`` each
  mutated function's covering tests are also cut to those that took at most that long in mutmut's stats run (the
  fastest one is kept where none did). The trimmed sets are not saved in ``mutants/mutmut-stats.json``.
- each mutant's tests run fastest first (mutmut hands them over as a set, in no order, and stops at the first
  failure: a mutant that every test kills then costs its slowest test as often as its fastest). With
  ``--budget SECONDS`` a mutated function keeps, fastest first, only the covering tests whose recorded times add
  up to at most that much (the fastest one at least): this bounds what a surviving mutant costs, which is where the
  time of a full run goes (a Trainer function is covered by hundreds of tests).
- the clean run (every selected test, unmutated) is skipped when the stats run of the same invocation has just run
  every selected test green in the same mutants/ tree (mutmut stops if it fails): on a fresh run that saves a
  whole pass of the suite (~4 min). On a resumed run, whose stats are loaded from the file, the clean run runs.
- the recorded time of a test includes its setup (fixtures), not only its call as in mutmut's stats: a test with a
  slow fixture is otherwise taken for a fast one, run first, and given a time limit its fixture alone exceeds.
- ``--preload`` imports modules in mutmut's own process before it forks a child per mutant. A module that the code
  imports lazily (optuna, matplotlib in ``graphattn/search.py``) is otherwise imported afresh in every child, a few
  seconds that the stats (call time only) do not count either: the wall-clock limit (``timeout_multiplier``,
  ``timeout_constant``) runs out and every mutant of such a function is reported as a timeout whatever its tests
  would have said.
- each mutant's pytest gets its own temporary root (``PYTEST_DEBUG_TEMPROOT``, removed afterwards). With
  ``--max-children`` > 1, two children otherwise share pytest's numbered ``tmp_path`` folders: a test that keeps an
  SQLite file there (the Optuna studies of ``tests/graphattn/test_search.py``) waits on the other child's lock until
  the time limit, and one child's cleanup can delete the other's files.
- each child gets fresh tqdm locks. tqdm's write lock is a multiprocessing semaphore made once and inherited by every
  forked child, and ``tqdm.refresh`` holds it without ``try / finally``: a mutant whose progress bar raises (a
  mutated ``unit=None``) exits holding it, and every later child hangs on its first bar until the time limit,
  each reported as a timeout.

With ``--cap``, a mutant that survives may still be killed by a slower test (a full training run, a contract test of every
model): the score is a lower bound of the plain run's, and each survivor is a gap that a fast test should close.
"""

import importlib
import os
import pickle
import shutil
import sys
import tempfile
import traceback
from pathlib import Path

import mutmut.__main__ as mm
import mutmut.code_coverage as cc
from mutmut.runners.harness import PytestRunner
from mutmut.state import state
from mutmut.workers import isolation

CACHE = Path("mutants") / "coverage-cache.pkl"
# never run for a mutant: torchrun's fixture costs tens of seconds the stats do not record, and a test that runs
# torch with 2 threads hangs in a forked process (libgomp is not fork-safe: py-spy showed a mutant's process idle in
# a tensor reduction of test_determinism.py; it timed out, and counted as killed)
NEVER_FOR_A_MUTANT = ("tests/recsys/test_distributed.py", "tests/graphattn/test_determinism.py")


def _parse_seconds(argv, option):
    seconds = float("inf")
    if option in argv:
        i = argv.index(option)
        seconds = float(argv[i + 1])
        del argv[i:i + 2]
    return seconds


def _preload(argv):
    if "--preload" in argv:
        i = argv.index("--preload")
        names = [n for n in argv[i + 1].split(",") if n]
        del argv[i:i + 2]
        for name in names:
            importlib.import_module(name)
        print(f"preloaded {', '.join(names)}", flush=True)


_run_tests = PytestRunner.run_tests


def _fresh_tqdm_locks():
    try:
        import tqdm.std as ts
    except ImportError:
        return
    if "mp_lock" in vars(ts.TqdmDefaultWriteLock):
        del ts.TqdmDefaultWriteLock.mp_lock
    ts.TqdmDefaultWriteLock.th_lock = ts.TRLock()
    classes = [ts.tqdm]
    while classes:
        cls = classes.pop()
        if "_lock" in vars(cls):
            delattr(cls, "_lock")
        classes.extend(cls.__subclasses__())


def fastest_first(tests, duration=None):
    """Tests by their recorded time (mutmut's stats unless `duration` is given), ties by name."""
    duration = state().duration_by_test if duration is None else duration
    return sorted(tests, key=lambda t: (duration.get(t, 0), t))


def run_tests_in_own_tmp(self, *, mutant_name, tests):
    if mutant_name is None:   # the stats and forced-fail runs: one process at a time
        return _run_tests(self, mutant_name=mutant_name, tests=tests)
    tests = fastest_first(tests)
    _fresh_tqdm_locks()
    root = tempfile.mkdtemp(prefix="mutmut-")
    os.environ["PYTEST_DEBUG_TEMPROOT"] = root
    try:
        return _run_tests(self, mutant_name=mutant_name, tests=tests)
    finally:
        shutil.rmtree(root, ignore_errors=True)


class SetupTime:
    """Adds each test's setup time to the call time that mutmut's stats record."""

    @staticmethod
    def pytest_runtest_makereport(item, call):
        if call.when == "setup":
            state().duration_by_test[item.nodeid] = state().duration_by_test.get(item.nodeid, 0) + call.duration


_execute_pytest = PytestRunner.execute_pytest


def execute_pytest_timing_setup(self, params, **kwargs):
    plugins = kwargs.get("plugins") or []
    if any(type(p).__name__ == "StatsCollector" for p in plugins):
        kwargs["plugins"] = [*plugins, SetupTime()]
    return _execute_pytest(self, params, **kwargs)


def kept_tests(tests, duration, cap=float("inf"), budget=float("inf")):
    """The covering tests a mutant runs: without the slow fixture, each within `cap`, fastest first while their
    times add up to at most `budget`; the fastest test at least."""
    ordered = fastest_first(tests, duration)
    keep, spent = [], 0.0
    for test in ordered:
        if duration.get(test, 0) > cap or test.startswith(NEVER_FOR_A_MUTANT):
            continue
        if keep and spent + duration.get(test, 0) > budget:
            break
        keep.append(test)
        spent += duration.get(test, 0)
    return set(keep or ordered[:1])


FULL_STATS_GREEN = False


def remember_full_stats(collect_stats):
    def wrapped(self, tests):
        global FULL_STATS_GREEN
        exit_code = collect_stats(self, tests)
        FULL_STATS_GREEN = exit_code == 0 and not tests
        return exit_code
    return wrapped


def skip_clean_after_full_stats(run_clean_tests):
    def wrapped(self, tests):
        if FULL_STATS_GREEN:
            print("skipping the clean run: the stats run has just run every selected test green", flush=True)
            return 0
        return run_clean_tests(self, tests)
    return wrapped


CAP = _parse_seconds(sys.argv, "--cap")
BUDGET = _parse_seconds(sys.argv, "--budget")
_gather = cc.gather_coverage
_stats = mm.collect_or_load_stats


def cached_coverage(runner, source_files):
    """mutmut's coverage run, cached in CACHE and run in a forked child: mutmut forks every mutant's process from
    this one, which should not carry the state of a whole suite run."""
    if CACHE.exists():
        print(f"using the cached coverage of {CACHE}", flush=True)
        return pickle.loads(CACHE.read_bytes())
    source_files = list(source_files)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            info = _gather(runner, source_files)
            tmp = CACHE.with_suffix(".tmp")
            tmp.write_bytes(pickle.dumps(info))
            tmp.replace(CACHE)
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0 or not CACHE.exists():
        raise SystemExit("the coverage run failed")
    return pickle.loads(CACHE.read_bytes())


def fast_tests_only(*args, **kwargs):
    _stats(*args, **kwargs)
    duration = state().duration_by_test
    before = after = 0
    for name, tests in list(state().tests_by_mangled_function_name.items()):
        keep = kept_tests(tests, duration, CAP, BUDGET)
        before, after = before + len(tests), after + len(keep)
        state().tests_by_mangled_function_name[name] = keep
    cut = "" if CAP == float("inf") else f" and to those of <= {CAP} s"
    cut += "" if BUDGET == float("inf") else f", fastest first up to {BUDGET} s a function"
    print(f"covering tests without {', '.join(NEVER_FOR_A_MUTANT)}{cut}: {before} -> {after} (function, test) pairs",
          flush=True)


if __name__ == "__main__":
    os.chdir(Path(__file__).resolve().parents[1])
    if "--fresh-coverage" in sys.argv:
        sys.argv.remove("--fresh-coverage")
        CACHE.unlink(missing_ok=True)
    _preload(sys.argv)
    PytestRunner.run_tests = run_tests_in_own_tmp
    PytestRunner.execute_pytest = execute_pytest_timing_setup
    for runner in (isolation.ForkServerRunner, isolation.ForkRunner):
        runner.collect_stats = remember_full_stats(runner.collect_stats)
        runner.run_clean_tests = skip_clean_after_full_stats(runner.run_clean_tests)
    mm.gather_coverage = cached_coverage
    mm.collect_or_load_stats = fast_tests_only
    sys.argv = ["mutmut", "run", *sys.argv[1:]]
    mm.cli()
