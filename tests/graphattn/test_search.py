"""Hyperparameter search (graphattn/search.py): the search file, a study of real Trainer runs, pruning, resuming."""
import json
from pathlib import Path

import optuna
import pytest

import run
from graphattn.config import Config
from graphattn.search import load_search_space, run_search


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _space(toy_task, tmp_path, text):
    config = Config(toy_task.model, toy_task.dataset)
    return load_search_space(_write(tmp_path / "space.yaml", text), config)


# --------------------------------------------------------------------------- the search file


def test_every_distribution_parses_and_samples(toy_task, tmp_path):
    space = _space(toy_task, tmp_path, (
        "learning_rate: {loguniform: [1.0e-4, 1.0e-2]}\n"
        "dropout: {uniform: [0, 0.5]}\n"                # ints are accepted as float bounds
        "hidden_size: {int: [8, 64, 8]}\n"
        "eval_step: {int: [1, 3]}\n"
        "level: {choice: [a, b]}\n"
        "use_bias: {choice: [true, false]}\n"
        "topk: [{int: [5, 10]}, 20]\n"                  # one searched element of a list-valued key
        "pretrained: {choice: [null, x.pt]}\n"
        "epochs: 3\n"                                   # fixed
    ))
    kinds = {p.name: (p.kind, p.args) for p in space.params}
    assert kinds == {
        "learning_rate": ("loguniform", [1e-4, 1e-2]), "dropout": ("uniform", [0.0, 0.5]),
        "hidden_size": ("int", [8, 64, 8]), "eval_step": ("int", [1, 3]), "level": ("choice", ["a", "b"]),
        "use_bias": ("choice", [True, False]), "topk[0]": ("int", [5, 10]), "pretrained": ("choice", [None, "x.pt"]),
    }
    assert space.fixed == {"epochs": 3}
    trial = optuna.trial.FixedTrial({"learning_rate": 1e-3, "dropout": 0.25, "hidden_size": 24, "eval_step": 2,
                                     "level": "b", "use_bias": False, "topk[0]": 7, "pretrained": None})
    values = space.sample(trial)
    assert values == {"epochs": 3, "learning_rate": 1e-3, "dropout": 0.25, "hidden_size": 24, "eval_step": 2,
                      "level": "b", "use_bias": False, "topk": [7, 20], "pretrained": None}
    config = Config(toy_task.model, toy_task.dataset, config_dict=values)   # every sampled value has the right type
    assert config["topk"] == [7, 20]


def test_choice_of_lists_goes_through_labels(toy_task, tmp_path):
    space = _space(toy_task, tmp_path, "topk: {choice: [[10], [10, 20]]}\n")
    (param,) = space.params
    assert list(param.labels) == ["[10]", "[10, 20]"]     # Optuna stores primitives: a YAML label per value
    assert space.from_optuna({"topk": "[10, 20]"}) == {"topk": [10, 20]}


@pytest.mark.parametrize("text, message", [
    ("epochs: 2\nlearnig_rate: {uniform: [0.1, 0.2]}\n", "space.yaml, line 2: unknown config key 'learnig_rate'; did you mean 'learning_rate'?"),
    ("learning_rate: {unifrom: [0.1, 0.2]}\n", "line 1, 'learning_rate': unknown distribution 'unifrom'; did you mean 'uniform'?"),
    ("learning_rate: {normal: [0.1, 0.2]}\n", "unknown distribution 'normal' (distributions: uniform, loguniform, int, choice)"),
    ("learning_rate: {uniform: [0.2, 0.2]}\n", "empty range [0.2, 0.2]"),
    ("learning_rate: {loguniform: [0.2, 0.1]}\n", "empty range [0.2, 0.1]"),
    ("hidden_size: {int: [64, 8]}\n", "empty range [64, 8]"),
    ("learning_rate: {loguniform: [0, 0.1]}\n", "loguniform needs 0 < low < high"),
    ("learning_rate: {uniform: [0.1]}\n", "uniform needs [low, high]"),
    ("hidden_size: {int: [8, 64.5]}\n", "int needs whole numbers"),
    ("level: {choice: []}\n", "choice needs a non-empty list"),
    ("hidden_size: {uniform: [8, 64]}\n", "'hidden_size': config key 'hidden_size': expected int"),
    ("hidden_size: {choice: [8, big]}\n", "expected int"),
    ("epochs: 3\n", "nothing to search"),
    ("", "the search file is empty"),
    ("model: Other\nepochs: {int: [1, 2]}\n", "the model is chosen with --model"),
    ("checkpoint_dir: x\nepochs: {int: [1, 2]}\n", "checkpoint_dir cannot be set in a search file"),
    ("epochs: {int: [1, 2]}\nlearning_rate: [1, 2\n", "space.yaml: invalid YAML at line 3"),
])
def test_bad_search_file_is_a_clear_error(toy_task, tmp_path, text, message):
    with pytest.raises(ValueError) as info:
        _space(toy_task, tmp_path, text)
    assert message in str(info.value)


def test_bad_search_file_through_run_py_is_one_line_before_any_trial(toy_task, tmp_path, tmp_saved, capsys):
    space = _write(tmp_path / "bad.yaml", "learning_rate: {loguniform: [0.1, 0.01]}\n")
    code = run.main(["--model", toy_task.model, "--dataset", toy_task.dataset, "--search", str(space),
                     f"--checkpoint_dir={tmp_saved}"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 1 and len(err) == 1 and err[0].startswith("error: ") and "empty range [0.1, 0.01]" in err[0]
    assert toy_task.calls == [] and not any(tmp_saved.iterdir())   # nothing was built, no folder made
    # a searched key also given on the command line, and --trials without --search
    good = _write(tmp_path / "good.yaml", "learning_rate: {loguniform: [0.001, 0.1]}\n")
    assert run.main(["--model", toy_task.model, "--dataset", toy_task.dataset, "--search", str(good),
                     "--learning_rate=0.1", f"--checkpoint_dir={tmp_saved}"]) == 1
    assert "learning_rate: searched in" in capsys.readouterr().err
    assert run.main(["--model", toy_task.model, "--dataset", toy_task.dataset, "--trials", "3"]) == 1
    assert "need --search FILE" in capsys.readouterr().err


# --------------------------------------------------------------------------- studies


def test_study_writes_run_folders_table_best_config_and_continues(toy_task, tmp_path, tmp_saved, capsys):
    space = _write(tmp_path / "toy.yaml", "learning_rate: {loguniform: [0.001, 0.1]}\nhidden_size: {choice: [8, 16]}\n"
                                          "epochs: 2\n")
    argv = ["--model", toy_task.model, "--dataset", toy_task.dataset, "--search", str(space),
            f"--checkpoint_dir={tmp_saved}", "--show_progress=false", "--log_level=WARNING"]
    assert run.main(argv + ["--trials", "3"]) == 0
    out = capsys.readouterr().out
    folder = tmp_saved / "search" / f"{toy_task.model}-{toy_task.dataset}-toy"
    runs = sorted((folder / "runs").iterdir())
    assert len(runs) == 3 and all((r / "config.yaml").is_file() and (r / "best.pt").is_file() for r in runs)
    assert len(toy_task.calls) == 3 and all(c["epochs"] == 2 for c in toy_task.calls)
    assert "| trial | state    | learning_rate | hidden_size | valid mse" in out
    assert "3 trials: " in out and "best trial " in out
    study = json.loads((folder / "study.json").read_text())
    best = study["best"]
    states = [t["state"] for t in study["trials"]]   # the first two always complete (the pruner's startup trials)
    assert states[:2] == ["complete"] * 2 and states[2] in ("complete", "pruned")
    assert best["valid"] == min(t["value"] for t in study["trials"] if t["state"] == "complete") and "mse" in best["test"]
    config = Config(toy_task.model, toy_task.dataset, config_files=[folder / "best.yaml"])
    assert config["learning_rate"] == pytest.approx(best["config"]["learning_rate"])
    assert config["hidden_size"] == best["config"]["hidden_size"] and config["epochs"] == 2
    assert Config.load(folder / "best.yaml")["epochs"] == 2
    assert (folder / "history.png").stat().st_size > 0 and (folder / "importance.png").stat().st_size > 0
    # the same command with a larger --trials continues the study (default storage: study.db in its folder)
    assert run.main(argv + ["--trials", "4"]) == 0
    assert "continuing after 3 finished trials" in capsys.readouterr().out
    loaded = optuna.load_study(study_name=folder.name, storage=f"sqlite:///{folder / 'study.db'}")
    assert [t.number for t in loaded.trials] == [0, 1, 2, 3] and len(list((folder / "runs").iterdir())) == 4
    # a continued study draws new points, not the first ones again
    assert loaded.trials[3].params != loaded.trials[0].params
    assert run.main(argv + ["--trials", "4"]) == 0      # nothing left to run
    assert "already holds 4 finished trials" in capsys.readouterr().out
    assert len(toy_task.calls) == 4


def test_pruning_stops_a_trial_that_is_bad_at_the_first_evaluation(toy_task, tmp_path, tmp_saved):
    space = _write(tmp_path / "lr.yaml", "learning_rate: {loguniform: [1.0e-6, 0.1]}\nepochs: 4\neval_step: 1\n")
    storage = f"sqlite:///{tmp_path / 'prune.db'}"
    study = optuna.create_study(study_name="prune", storage=storage, direction="minimize")
    study.enqueue_trial({"learning_rate": 0.05})    # learns: mse falls at once
    study.enqueue_trial({"learning_rate": 1.0e-6})  # does not learn: worse than the median at epoch 1
    result = run_search(toy_task.model, toy_task.dataset, space, 2, storage=storage, study_name="prune",
                        overrides={"checkpoint_dir": str(tmp_saved), "log_level": "WARNING"},
                        pruner=optuna.pruners.MedianPruner(n_startup_trials=1), out=lambda line: None)
    good, bad = result.study.trials
    assert good.state.name == "COMPLETE" and sorted(good.intermediate_values) == [1, 2, 3, 4]
    assert bad.state.name == "PRUNED" and list(bad.intermediate_values) == [1]
    metrics = json.loads((result.folder / "runs" / bad.user_attrs["run"] / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["evaluations"]] == [1] and metrics["test"] == {}
    assert "1 complete, 1 pruned" in result.table and "(" in result.table
    # one completed trial: no importance plot, said so
    assert "parameter-importance plot: it needs >= 2 completed trials, the study has 1" in result.table
    assert not (result.folder / "importance.png").exists() and (result.folder / "history.png").is_file()


@pytest.mark.parametrize("model", ["BPRMF", "CKE", "KGAT"])
def test_shipped_search_spaces_parse(model):
    space = load_search_space(Path(run.__file__).parent / "recsys" / "search" / f"{model}.yaml", Config(model, "ml-100k"))
    assert space.params and {"epochs", "eval_step", "stopping_step"} <= set(space.fixed)


def test_storage_passwords_never_reach_the_study_record():
    from graphattn.search import redact
    assert redact("python run.py --storage postgresql://me:s3cr3t@db.example:5432/optuna --trials 3") == \
        "python run.py --storage postgresql://me:***@db.example:5432/optuna --trials 3"
    assert redact("mysql+pymysql://u:p%40ss@h/db") == "mysql+pymysql://u:***@h/db"
    assert redact("sqlite:////tmp/study.db") == "sqlite:////tmp/study.db"       # nothing to hide
