"""bench/timing.py: interleaved repeats, the median summary and the ratio range."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import timing  # noqa: E402


def test_summary_median_min_max():
    assert timing.summary([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "repeats": 3}
    assert timing.summary([4.0, 1.0, 2.0, 3.0])["median"] == 2.5


def test_timings_interleaves_and_counts():
    calls = []
    res = timing.timings({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=1)
    assert calls == ["a", "b"] * 4
    assert res["a"]["repeats"] == 3 and res["a"]["min"] <= res["a"]["median"] <= res["a"]["max"]
    with pytest.raises(ValueError):
        timing.timings({"a": lambda: None}, repeats=0)


def test_ratio_range():
    r = timing.ratio({"median": 4.0, "min": 3.0, "max": 6.0}, {"median": 2.0, "min": 1.5, "max": 3.0})
    assert r == {"median": 2.0, "low": 1.0, "high": 4.0}
