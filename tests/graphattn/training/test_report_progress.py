"""`progress`'s tqdm defaults (no bar left behind, width following the terminal) and the caller's overrides.
(Written against graphattn.training.report.x_progress__mutmut_18, docs/testing.md.)"""
from graphattn.training import report


def test_progress_passes_its_defaults_and_the_callers_overrides_to_tqdm(monkeypatch):
    calls = []

    def fake_tqdm(iterable, desc="", **kwargs):
        calls.append(dict(kwargs, desc=desc))
        return iterable
    monkeypatch.setattr(report, "tqdm", fake_tqdm)
    assert list(report.progress([1, 2], "epoch")) == [1, 2]
    assert list(report.progress([3], leave=True, dynamic_ncols=False, total=1)) == [3]
    assert list(report.progress([4], enabled=False)) == [4]
    assert calls == [{"desc": "epoch", "leave": False, "dynamic_ncols": True},
                     {"desc": "", "leave": True, "dynamic_ncols": False, "total": 1}]
