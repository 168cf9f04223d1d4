"""Which tests `tools/mutation_fast.py` runs for a mutant, and in which order (needs the `mutate` extra)."""

import sys
from pathlib import Path

import pytest

pytest.importorskip("mutmut")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
argv, sys.argv = sys.argv, ["mutation_fast.py"]
try:
    import mutation_fast as mf
finally:
    sys.argv = argv

SLOW = "tests/recsys/test_distributed.py::test_torchrun"
TWO_THREADS = "tests/graphattn/test_determinism.py::test_same_seed_same_run_with_two_threads[KGAT]"
DURATION = {"a": 0.1, "b": 0.5, "c": 2.0, "d": 0.05, "e": 0.5, SLOW: 0.01, TWO_THREADS: 0.02}


def test_without_limits_every_test_but_the_slow_fixture_is_kept():
    assert mf.kept_tests(set(DURATION), DURATION) == {"a", "b", "c", "d", "e"}


def test_cap_drops_slow_tests_and_budget_keeps_the_fastest_within_it():
    assert mf.kept_tests(set(DURATION), DURATION, cap=1.5) == {"a", "b", "d", "e"}
    assert mf.kept_tests(set(DURATION), DURATION, budget=0.2) == {"a", "d"}
    assert mf.kept_tests(set(DURATION), DURATION, budget=0.7) == {"a", "d", "b"}   # ties go by name
    assert mf.kept_tests(set(DURATION), DURATION, cap=1.5, budget=1.2) == {"a", "d", "b", "e"}


def test_the_fastest_test_is_kept_where_none_fits():
    assert mf.kept_tests({"c"}, DURATION, cap=1.5) == {"c"}
    assert mf.kept_tests({"c", "b"}, DURATION, cap=0.2, budget=0.1) == {"b"}
    assert mf.kept_tests({SLOW}, DURATION) == {SLOW}
    assert mf.kept_tests({TWO_THREADS, "c"}, DURATION) == {"c"}
    assert mf.kept_tests(set(), DURATION) == set()


def test_a_mutants_tests_run_fastest_first(monkeypatch):
    monkeypatch.setattr(mf.state(), "duration_by_test", dict(DURATION))
    assert mf.fastest_first({"c", "e", "a", "b", "d", "unknown"}) == ["unknown", "d", "a", "b", "e", "c"]


def test_setup_time_is_added_to_the_recorded_time(monkeypatch):
    monkeypatch.setattr(mf.state(), "duration_by_test", {"t": 0.25})

    class Item:
        nodeid = "t"

    class Call:
        when, duration = "setup", 1.5

    mf.SetupTime.pytest_runtest_makereport(Item(), Call())
    Call.when = "call"
    mf.SetupTime.pytest_runtest_makereport(Item(), Call())
    assert mf.state().duration_by_test == {"t": 1.75}


def test_the_clean_run_is_skipped_only_right_after_a_green_stats_run_of_every_test(monkeypatch):
    calls = []

    class Runner:
        def collect_stats(self, tests):
            calls.append(("stats", tests))
            return self.stats_exit_code

        def run_clean_tests(self, tests):
            calls.append(("clean", tests))
            return 0

    collect = mf.remember_full_stats(Runner.collect_stats)
    clean = mf.skip_clean_after_full_stats(Runner.run_clean_tests)
    monkeypatch.setattr(mf, "FULL_STATS_GREEN", False)
    runner = Runner()
    assert clean(runner, []) == 0 and calls == [("clean", [])]        # stats loaded from the file: clean run runs
    for exit_code, tests, skipped in ((0, [], True), (1, [], False), (0, ["t"], False)):
        calls.clear()
        runner.stats_exit_code = exit_code
        assert collect(runner, tests) == exit_code
        clean(runner, ["u"])
        assert calls == [("stats", tests)] + ([] if skipped else [("clean", ["u"])])


def test_the_coverage_run_happens_in_a_child_and_is_cached(tmp_path, monkeypatch):
    import os
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mutants").mkdir()
    monkeypatch.setattr(mf, "_gather", lambda runner, files: {"pid": os.getpid(), "files": files})
    info = mf.cached_coverage(None, iter(["a.py", "b.py"]))
    assert info["files"] == ["a.py", "b.py"] and info["pid"] != os.getpid()
    monkeypatch.setattr(mf, "_gather", lambda runner, files: 1 / 0)
    assert mf.cached_coverage(None, []) == info                     # from the cache, without a run
    (tmp_path / mf.CACHE).unlink()
    with pytest.raises(SystemExit, match="the coverage run failed"):
        mf.cached_coverage(None, [])
