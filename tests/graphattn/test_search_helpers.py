"""graphattn.search's small helpers, each against hand-written values: study folder names, the labels Optuna gets
for non-scalar choices, and the direction read from the task without loading its data."""
from __future__ import annotations

import pytest

import recsys  # noqa: F401  (registers KGAT and its task)
import vision.diffusion  # noqa: F401  (registers DiT and the diffusion task)
from graphattn.config import Config
from graphattn.search import _choice_label, _judge, _safe


@pytest.mark.parametrize("text, name", [
    ("KGAT-ml-100k", "KGAT-ml-100k"),
    ("a b/c:d", "a_b_c_d"),                 # every other character becomes '_'
    ("..a.b_", "a.b"),                      # leading / trailing dots and underscores stripped
    ("x-", "x-"),                           # a trailing '-' is kept
    ("._", "study"), ("", "study"), ("///", "study"),
    ("Zürich9", "Zürich9"),                 # letters and digits of any script are kept
])
def test_safe_study_names(text, name):
    assert _safe(text) == name


@pytest.mark.parametrize("value", [3, 0.5, True, None, "adam"])
def test_choice_labels_of_scalars_are_the_values_themselves(value):
    assert _choice_label(value) is value


def test_choice_labels_of_lists_and_dicts_are_one_line_flow_yaml():
    assert _choice_label([64, 128]) == "[64, 128]"
    assert _choice_label({"lr": 0.01, "dims": [1, 2]}) == "{dims: [1, 2], lr: 0.01}"
    assert _choice_label([[1, 2], []]) == "[[1, 2], []]"
    long = list(range(500))                 # ~2,400 characters: longer than yaml's default width of 80
    label = _choice_label(long)
    assert "\n" not in label and label.startswith("[0, 1, 2") and label.endswith("499]")


def test_judge_reads_metric_and_direction_from_the_task():
    assert _judge(Config("KGAT", "ml-100k")) == ("recall@20", "maximize")
    assert _judge(Config("DiT", "digits-diffusion")) == ("mse", "minimize")


def _args(**changes):
    import argparse
    base = {"model": "BPRMF", "dataset": "ml-100k", "config_files": ["a.yaml"], "search": "space.yaml", "trials": None,
            "storage": "sqlite:///s.db", "study_name": "mine"}
    base.update(changes)
    return argparse.Namespace(**base)


def test_main_passes_every_argument_to_run_search(monkeypatch):
    from graphattn import search
    calls = []
    monkeypatch.setattr(search, "run_search", lambda *a, **k: calls.append((a, k)))
    assert search.main(_args(), {"epochs": 2}) == 0
    assert search.main(_args(trials=5, storage=None, study_name=None), {}) == 0
    (a1, k1), (a2, k2) = calls
    assert a1 == ("BPRMF", "ml-100k", "space.yaml", 30)               # 30 trials unless --trials says otherwise
    assert k1 == {"storage": "sqlite:///s.db", "study_name": "mine", "config_files": ["a.yaml"], "overrides": {"epochs": 2}}
    assert a2[3] == 5 and k2["storage"] is None and k2["study_name"] is None


def test_main_without_a_search_file_and_after_an_interrupt(monkeypatch, capsys):
    from graphattn import search
    with pytest.raises(ValueError, match=r"^--trials, --storage and --study-name need --search FILE$"):
        search.main(_args(search=None), {})

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(search, "run_search", interrupted)
    assert search.main(_args(), {}) == 130
    assert capsys.readouterr().out == "interrupted: rerun the same command to continue the study\n"
