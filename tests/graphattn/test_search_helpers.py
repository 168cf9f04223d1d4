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
    ("XaX", "XaX"),                         # only dots and underscores are stripped
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


# --------------------------------------------------------------------------- the search file, exact


def _toy_space(toy_task, tmp_path, text, config=None):
    from graphattn.search import load_search_space
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return load_search_space(path, config or Config(toy_task.model, toy_task.dataset))


def _error(toy_task, tmp_path, text):
    with pytest.raises(ValueError) as info:
        _toy_space(toy_task, tmp_path, text)
    return str(info.value).replace(str(tmp_path / "space.yaml"), "F")


@pytest.mark.parametrize("text, message", [
    ("learning_rate: {uniform: [0.2, 0.2]}\n", "F, line 1, 'learning_rate': empty range [0.2, 0.2]: uniform needs "
     "low < high (a single value is written plain, without a distribution)"),
    ("learning_rate: {uniform: [0.1]}\n", "F, line 1, 'learning_rate': uniform needs [low, high], got [0.1]"),
    ("learning_rate: {uniform: [0.1, 0.2, 0.3]}\n",
     "F, line 1, 'learning_rate': uniform needs [low, high], got [0.1, 0.2, 0.3]"),
    ("learning_rate: {uniform: [0.1, .inf]}\n",
     "F, line 1, 'learning_rate': uniform needs two finite numbers [low, high], got [0.1, inf]"),
    ("learning_rate: {uniform: [a, 1]}\n",
     "F, line 1, 'learning_rate': uniform needs two finite numbers [low, high], got ['a', 1]"),
    ("hidden_size: {int: [8]}\n", "F, line 1, 'hidden_size': int needs [low, high] or [low, high, step], got [8]"),
    ("hidden_size: {int: [8, 64.5]}\n",
     "F, line 1, 'hidden_size': int needs whole numbers [low, high] or [low, high, step], got [8, 64.5]"),
    ("hidden_size: {int: [8, 64, 0]}\n", "F, line 1, 'hidden_size': int step must be >= 1, got 0"),
    ("hidden_size: {choice: [8, 16, big]}\n",       # every value of a choice is checked, the third one too
     "F, line 1, 'hidden_size': config key 'hidden_size': expected int"),
    ("epochs: 2\nhidden_size: big\nlevel: {choice: [a]}\n", "F, line 2, 'hidden_size': config key 'hidden_size': expected int"),
    ("topk: [{int: [10, 5]}, 20]\n", "F, line 1, 'topk'[0]: empty range [10, 5]: int needs low < high"),
    ("dataset: other\n", "F, line 1, 'dataset': the dataset is chosen with --dataset, not searched"),
    ("epochs: 2\nzzzz_qqqq: 1\n", "F, line 2: unknown config key 'zzzz_qqqq'; it has no default for this model and dataset"),
    ("datasett: 1\n", "F, line 1: unknown config key 'datasett'; it has no default for this model and dataset"),
    ("modell: 1\n", "F, line 1: unknown config key 'modell'; it has no default for this model and dataset"),
    ("<<: {zzzz_qqqq: 1}\n", "F, line ?: unknown config key 'zzzz_qqqq'; it has no default"),   # merged: no line
    ("base: &b {hidden_size: {choice: [8, 8]}}\n", "F, line 1: unknown config key 'base'"),
    ("<<: {hidden_size: {choice: [8, 8]}}\n", "F, line ?, 'hidden_size': choice lists 8 twice"),   # merged: no line
    ("epochs: 3\n", "F: nothing to search; give at least one key a distribution "
     "({uniform: ...}, {loguniform: ...}, {int: ...}, {choice: ...})"),
])
def test_search_file_errors_in_full(toy_task, tmp_path, text, message):
    assert _error(toy_task, tmp_path, text).startswith(message)


def test_search_file_params_lists_and_fixed_values(toy_task, tmp_path):
    from graphattn.search import Param
    space = _toy_space(toy_task, tmp_path, "topk: [20, {choice: [5, 7]}, {int: [1, 3]}]\nepochs: 2\n")
    assert space.path == tmp_path / "space.yaml"
    assert space.params == [Param("topk[1]", "topk", 1, "choice", [5, 7], {5: 5, 7: 7}),
                            Param("topk[2]", "topk", 2, "int", [1, 3], {})]
    assert space.lists == {"topk": [20, None, None]} and space.fixed == {"epochs": 2}
    assert space.from_optuna({"topk[1]": 7, "topk[2]": 2}) == {"epochs": 2, "topk": [20, 7, 2]}
    # a plain list for a list-valued key is a fixed value
    space = _toy_space(toy_task, tmp_path, "topk: [5, 15]\nlearning_rate: {uniform: [0.1, 0.2]}\n")
    assert space.fixed == {"topk": [5, 15]} and space.lists == {} and [p.name for p in space.params] == ["learning_rate"]


def test_checking_a_search_file_leaves_the_config_alone(toy_task, tmp_path):
    config = Config(toy_task.model, toy_task.dataset)
    _toy_space(toy_task, tmp_path, "hidden_size: {int: [32, 64]}\nlevel: fixed\n", config)
    assert config["hidden_size"] == 16 and config["level"] == "dataset"


def test_a_one_key_mapping_is_a_plain_value_for_a_key_that_takes_mappings(toy_task, tmp_path):
    with open(toy_task.overall, "a") as fh:
        fh.write("options: {a: 1}        # (dict) options\n")
    space = _toy_space(toy_task, tmp_path, "options: {b: 2}\nepochs: {int: [1, 2]}\n")
    assert space.fixed == {"options": {"b": 2}}


def test_values_handed_out_are_copies(toy_task, tmp_path):
    space = _toy_space(toy_task, tmp_path, "topk: {choice: [[[1], [2]], [[3]]]}\n")
    value = space.params[0].value_of("[[1], [2]]")
    value[0].append(9)
    assert space.params[0].labels["[[1], [2]]"] == [[1], [2]]
    with open(toy_task.overall, "a") as fh:
        fh.write("extras: []             # (list) more\n")
    space = _toy_space(toy_task, tmp_path, "topk: [[[1], 2], {int: [5, 10]}]\nextras: [x, [y]]\n")
    values = space.from_optuna({"topk[1]": 6})
    assert values == {"extras": ["x", ["y"]], "topk": [[[1], 2], 6]}
    values["extras"][1].append("z")
    values["topk"][0][0].append(3)
    assert space.fixed == {"extras": ["x", ["y"]]} and space.lists == {"topk": [[[1], 2], None]}


class _Trial:
    """Records what a Param asks Optuna for."""

    def __init__(self):
        self.asked = []

    def suggest_float(self, name, low, high, log=False):
        self.asked.append(("float", name, low, high, log))
        return low

    def suggest_int(self, name, low, high, step=1):
        self.asked.append(("int", name, low, high, step))
        return low


def test_params_ask_optuna_for_their_exact_ranges(toy_task, tmp_path):
    space = _toy_space(toy_task, tmp_path, "dropout: {uniform: [0.1, 0.5]}\nlearning_rate: {loguniform: [1.0e-4, 1.0e-2]}\n"
                                           "hidden_size: {int: [8, 64]}\neval_step: {int: [2, 10, 4]}\n"
                                           "epochs: {int: [1, 3, 1]}\n")   # a step of 1 is allowed
    trial = _Trial()
    for param in space.params:
        param.suggest(trial)
    assert trial.asked == [("float", "dropout", 0.1, 0.5, False), ("float", "learning_rate", 1e-4, 1e-2, True),
                           ("int", "hidden_size", 8, 64, 1), ("int", "eval_step", 2, 10, 4), ("int", "epochs", 1, 3, 1)]


def test_choice_labels_of_other_yaml_values_drop_the_document_end():
    import datetime
    assert _choice_label(datetime.date(2026, 12, 7)) == "2026-12-07"    # yaml ends a plain scalar with '...'


def test_choice_labels_wrap_only_past_10000_columns():
    label = _choice_label(["aaa"] + [1] * 5000)   # yaml breaks before the first item that starts past column 10 000
    assert label.index("\n") == 10001
