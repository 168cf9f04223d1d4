"""graphattn.search's study: run_search with _optimize and report replaced by recorders (names, folders, storage,
pruner, sampler, identity, messages), then _optimize through short real studies of the toy task (progress bar,
per-trial lines, user attributes, logs, a failed trial, each trial's config)."""
from __future__ import annotations

import logging
import re
import warnings

import optuna
import pytest
import torch
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from graphattn import search
from graphattn.config import Config
from graphattn.search import run_search

pytestmark = pytest.mark.filterwarnings("ignore:fake other")   # the storage stand-in's own warning

LR = {"learning_rate": FloatDistribution(1e-6, 0.1, log=True)}


def _space(tmp_path, name="space.yaml", text="learning_rate: {loguniform: [1.0e-6, 0.1]}\nepochs: 2\n"):
    path = tmp_path / name
    path.write_text(text)
    return path


class _Recorded:
    """_optimize and report replaced: what run_search hands them, and the lines it prints."""

    def __init__(self, monkeypatch):
        self.optimize, self.report, self.out = [], [], []
        monkeypatch.setattr(search, "_optimize", lambda *a: self.optimize.append(a))
        monkeypatch.setattr(search, "report", self._report)

    def _report(self, *a):
        self.report.append(a)
        return search.SearchResult(a[0], a[4], "THE TABLE", None)


def _in_memory_rdb(monkeypatch):
    """optuna.storages.RDBStorage replaced: records (url, heartbeat_interval), returns an in-memory storage."""
    made = []

    class Fake:     # a class: optuna.storages.get_storage checks isinstance(storage, RDBStorage)
        def __new__(cls, url, heartbeat_interval=None):
            warnings.warn("fake experimental", optuna.exceptions.ExperimentalWarning, stacklevel=1)
            warnings.warn("fake other", UserWarning, stacklevel=1)
            made.append((url, heartbeat_interval))
            return optuna.storages.InMemoryStorage()
    monkeypatch.setattr(optuna.storages, "RDBStorage", Fake)
    return made


def _samplers(monkeypatch):
    made = []
    real = optuna.samplers.TPESampler

    def fake(**kwargs):
        if kwargs:           # create_study's own default sampler has none
            made.append(kwargs)
        return real(**kwargs)
    monkeypatch.setattr(optuna.samplers, "TPESampler", fake)
    return made


# --------------------------------------------------------------------------- run_search, without training


def test_run_search_defaults_name_folder_storage_and_hands_everything_on(toy_task, tmp_path, tmp_saved, monkeypatch):
    rec = _Recorded(monkeypatch)
    samplers = _samplers(monkeypatch)
    path = _space(tmp_path, "my space.yaml")
    layer = tmp_path / "layer.yaml"
    layer.write_text("dropout: 0.25\nseed: 5\n")
    overrides = {"checkpoint_dir": str(tmp_saved)}
    result = run_search(toy_task.model, toy_task.dataset, path, 3, config_files=[layer], overrides=overrides,
                        out=rec.out.append)
    name = f"{toy_task.model}-{toy_task.dataset}-my_space"
    folder = tmp_saved / "search" / name
    assert result.folder == folder and result.table == "THE TABLE" and rec.out == ["THE TABLE"]
    ((study, space, base, metric, o_folder, remaining, trials, done, files, o_overrides),) = rec.optimize
    assert study.study_name == name and study.direction == optuna.study.StudyDirection.MINIMIZE
    assert (space.path, metric, o_folder, remaining, trials, done, files) == (path, "mse", folder, 3, 3, 0, [layer])
    assert o_overrides == overrides and base["dropout"] == 0.25 and base["checkpoint_dir"] == str(tmp_saved)
    assert rec.report == [(study, space, base, "mse", folder, overrides)]
    assert isinstance(study.pruner, optuna.pruners.MedianPruner) and study.pruner._n_startup_trials == 2
    assert samplers == [{"seed": 5, "n_startup_trials": 3}]
    assert study._storage.get_heartbeat_interval() == 60
    # the default storage is study.db in the study's folder: the study is there, with what it was made for
    loaded = optuna.load_study(study_name=name, storage=f"sqlite:///{folder / 'study.db'}")
    assert loaded.user_attrs == {"search_file": str(path), "identity": {
        "model": toy_task.model, "dataset": toy_task.dataset, "metric": "mse", "search": "c7cf0bc8e33a"}}


def test_run_search_continues_a_study_and_says_so(toy_task, tmp_path, tmp_saved, monkeypatch):
    rec = _Recorded(monkeypatch)
    samplers = _samplers(monkeypatch)
    path = _space(tmp_path)
    storage = f"sqlite:///{tmp_path / 'other.db'}"
    kwargs = {"storage": storage, "study_name": "my study", "overrides": {"checkpoint_dir": str(tmp_saved)},
              "out": rec.out.append}
    run_search(toy_task.model, toy_task.dataset, path, 3, **kwargs)     # a new study: nothing finished yet
    folder = tmp_saved / "search" / "my_study"
    assert folder.is_dir() and not (folder / "study.db").exists() and (tmp_path / "other.db").is_file()
    study = optuna.load_study(study_name="my study", storage=storage)
    for value in (0.5, 0.25):
        study.add_trial(create_trial(params={"learning_rate": 0.01}, distributions=LR, value=value))
    study.add_trial(create_trial(state=TrialState.RUNNING))             # counts for the seed, not as finished
    rec.out.clear()
    run_search(toy_task.model, toy_task.dataset, path, 3, **kwargs)
    assert rec.out == [f"study 'my study': continuing after 2 finished trials ({folder})", "THE TABLE"]
    assert [a[5:8] for a in rec.optimize] == [(3, 3, 0), (1, 3, 2)]    # remaining, trials, done
    assert [s["seed"] for s in samplers] == [2019, 2022]               # seed + the trials already made
    study.add_trial(create_trial(state=TrialState.FAIL))
    rec.out.clear()
    run_search(toy_task.model, toy_task.dataset, path, 3, **kwargs)
    assert rec.out == ["study 'my study' already holds 3 finished trials (--trials 3); nothing to run", "THE TABLE"]
    assert len(rec.optimize) == 2 and len(rec.report) == 3


def test_the_identity_of_a_search_with_a_date_in_it(toy_task, tmp_path, tmp_saved, monkeypatch):
    rec = _Recorded(monkeypatch)
    _in_memory_rdb(monkeypatch)
    with open(toy_task.overall, "a") as fh:
        fh.write("released: null         # any value\n")
    path = _space(tmp_path, text="learning_rate: {loguniform: [1.0e-6, 0.1]}\nreleased: 2026-12-07\n")
    run_search(toy_task.model, toy_task.dataset, path, 2, storage="sqlite:///x.db",
               overrides={"checkpoint_dir": str(tmp_saved)}, out=lambda line: None)
    assert rec.optimize[0][0].user_attrs["identity"]["search"] == "e956408d8998"


@pytest.mark.parametrize("storage", ["sqlite:///x.db", "postgresql://me:pw@db/optuna", "mysql+pymysql://u:p@h/db"])
def test_rdb_storages_get_a_heartbeat_and_only_experimental_warnings_are_silenced(
        toy_task, tmp_path, tmp_saved, monkeypatch, storage):
    _Recorded(monkeypatch)
    made = _in_memory_rdb(monkeypatch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_search(toy_task.model, toy_task.dataset, _space(tmp_path), 3, storage=storage,
                   overrides={"checkpoint_dir": str(tmp_saved)}, out=lambda line: None)
    assert made == [(storage, 60)]
    messages = [str(w.message) for w in caught]
    assert "fake other" in messages and "fake experimental" not in messages


@pytest.mark.parametrize("trials, pruner_startup, sampler_startup", [(1, 2, 3), (13, 3, 4), (40, 5, 10)])
def test_default_pruner_and_sampler_start_up_with_the_study_size(toy_task, tmp_path, tmp_saved, monkeypatch,
                                                                 trials, pruner_startup, sampler_startup):
    rec = _Recorded(monkeypatch)
    _in_memory_rdb(monkeypatch)
    samplers = _samplers(monkeypatch)
    run_search(toy_task.model, toy_task.dataset, _space(tmp_path), trials, storage="sqlite:///x.db",
               overrides={"checkpoint_dir": str(tmp_saved)}, out=lambda line: None)
    study = rec.optimize[0][0]
    assert study.pruner._n_startup_trials == pruner_startup
    assert samplers == [{"seed": 2019, "n_startup_trials": sampler_startup}]


def test_direction_comes_from_the_task(toy_task, tmp_path, tmp_saved, monkeypatch):
    rec = _Recorded(monkeypatch)
    _in_memory_rdb(monkeypatch)
    monkeypatch.setattr(search, "_judge", lambda config: ("recall", "maximize"))
    run_search(toy_task.model, toy_task.dataset, _space(tmp_path), 2, storage="sqlite:///x.db",
               overrides={"checkpoint_dir": str(tmp_saved)}, out=lambda line: None)
    study = rec.optimize[0][0]
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE and rec.optimize[0][3] == "recall"


@pytest.mark.parametrize("threads, calls", [(0, []), (1, [1]), (3, [3])])
def test_num_threads_is_applied_before_the_study(toy_task, tmp_path, tmp_saved, monkeypatch, threads, calls):
    _Recorded(monkeypatch)
    _in_memory_rdb(monkeypatch)
    seen = []
    monkeypatch.setattr(torch, "set_num_threads", seen.append)
    run_search(toy_task.model, toy_task.dataset, _space(tmp_path), 2, storage="sqlite:///x.db",
               overrides={"checkpoint_dir": str(tmp_saved), "num_threads": threads}, out=lambda line: None)
    assert seen == calls


def test_a_study_made_for_another_search_space_is_refused(toy_task, tmp_path, tmp_saved, monkeypatch):
    _Recorded(monkeypatch)
    first = _space(tmp_path, "first.yaml")
    kwargs = {"study_name": "shared", "overrides": {"checkpoint_dir": str(tmp_saved)}, "out": lambda line: None}
    run_search(toy_task.model, toy_task.dataset, first, 2, **kwargs)
    run_search(toy_task.model, toy_task.dataset, first, 2, **kwargs)     # the same search: fine
    other = _space(tmp_path, "other.yaml", "learning_rate: {loguniform: [1.0e-5, 0.1]}\nepochs: 2\n")
    folder = tmp_saved / "search" / "shared"
    with pytest.raises(ValueError) as info:
        run_search(toy_task.model, toy_task.dataset, other, 2, **kwargs)
    assert str(info.value) == (
        f"study 'shared' in sqlite:///{(folder / 'study.db').resolve()} was made for {toy_task.model} on "
        f"{toy_task.dataset} with another search space or metric (search file {first}); choose a new --study-name "
        f"or delete {folder}")


def test_a_study_behind_another_url_scheme_is_refused_naming_that_url(toy_task, tmp_path, tmp_saved, monkeypatch):
    """A storage URL that run_search hands to Optuna as it is (not one it opens with a heartbeat itself)."""
    _Recorded(monkeypatch)
    url = f"sqlite+pysqlite:///{tmp_path / 'other.db'}"
    kwargs = {"study_name": "s", "storage": url, "overrides": {"checkpoint_dir": str(tmp_saved)}, "out": lambda line: None}
    run_search(toy_task.model, toy_task.dataset, _space(tmp_path, "first.yaml"), 2, **kwargs)
    other = _space(tmp_path, "other.yaml", "learning_rate: {loguniform: [1.0e-5, 0.1]}\nepochs: 2\n")
    with pytest.raises(ValueError, match=rf"^study 's' in {re.escape(url)} was made for {toy_task.model} on "):
        run_search(toy_task.model, toy_task.dataset, other, 2, **kwargs)


@pytest.mark.parametrize("trials", [0, -1, True, 1.5, "3", None])
def test_trials_must_be_a_positive_int(toy_task, tmp_path, trials):
    with pytest.raises(ValueError) as info:
        run_search(toy_task.model, toy_task.dataset, _space(tmp_path), trials)
    assert str(info.value) == f"--trials must be an int >= 1, got {trials!r}"


def test_one_trial_is_a_study(toy_task, tmp_path, tmp_saved, monkeypatch):
    rec = _Recorded(monkeypatch)
    _in_memory_rdb(monkeypatch)
    run_search(toy_task.model, toy_task.dataset, _space(tmp_path), 1, storage="sqlite:///x.db",
               overrides={"checkpoint_dir": str(tmp_saved)}, out=lambda line: None)
    assert rec.optimize[0][5:8] == (1, 1, 0)


def test_bad_arguments_are_errors_before_any_study(toy_task, tmp_path, tmp_saved):
    both = _space(tmp_path, "both.yaml", "learning_rate: {loguniform: [1.0e-6, 0.1]}\nepochs: {int: [1, 3]}\n")
    with pytest.raises(ValueError) as info:
        run_search(toy_task.model, toy_task.dataset, both, 2,
                   overrides={"checkpoint_dir": str(tmp_saved), "epochs": 3, "learning_rate": 0.1})
    assert str(info.value) == (f"learning_rate, epochs: searched in {both} and set on the command line; "
                               "keep one of them")
    with pytest.raises(ValueError) as info:
        run_search(toy_task.model, toy_task.dataset, _space(tmp_path), 2,
                   overrides={"checkpoint_dir": str(tmp_saved), "resume": "some/run"})
    assert str(info.value) == "--resume does not apply to a search; rerun the search command to continue its study"
    assert not any(tmp_saved.iterdir())


def test_a_dataset_of_another_task_is_refused(toy_task, tmp_path, tmp_saved):
    from graphattn import registry
    registry.register_task("othertask", task=toy_task.task_cls, overall=toy_task.overall,
                           model_dir=toy_task.root / "model")
    registry.register_dataset("elsewhere", task="othertask", loader=lambda config: None)
    with pytest.raises(ValueError, match=r"^Dataset 'elsewhere' is registered for task\(s\) othertask, not "):
        run_search(toy_task.model, "elsewhere", _space(tmp_path), 2, overrides={"checkpoint_dir": str(tmp_saved)})


# --------------------------------------------------------------------------- _optimize, with real trials


def _lr_space(tmp_path, epochs=2):
    return _space(tmp_path, "lr.yaml", f"learning_rate: {{loguniform: [1.0e-6, 0.1]}}\nepochs: {epochs}\neval_step: 1\n")


def _frames(err):
    return [f for f in re.split(r"[\r\n]", err) if f.startswith("search ")]


def test_the_bar_counts_trials_of_the_whole_study(toy_task, tmp_path, tmp_saved, capfd, monkeypatch):
    import os
    width = [121]
    monkeypatch.setattr(os, "get_terminal_size", lambda fd=None: os.terminal_size((width[0], 40)))
    real_seed = search.seed_everything

    def narrower(*a):        # the terminal shrinks during the trial: the bar follows it
        width[0] = 91
        return real_seed(*a)
    monkeypatch.setattr(search, "seed_everything", narrower)
    storage = f"sqlite:///{tmp_path / 'bar.db'}"
    study = optuna.create_study(study_name="bar", storage=storage)
    study.add_trial(create_trial(params={"learning_rate": 0.01}, distributions=LR, value=99.5))
    study.enqueue_trial({"learning_rate": 0.05})
    result = run_search(toy_task.model, toy_task.dataset, _lr_space(tmp_path), 2, storage=storage, study_name="bar",
                        overrides={"checkpoint_dir": str(tmp_saved), "show_progress": True, "log_level": "WARNING"},
                        out=lambda line: None)
    trial = result.study.trials[1]
    captured = capfd.readouterr()
    assert captured.out == f"trial 1 complete mse={trial.value:.4f}  {trial.user_attrs['run']}\n"
    frames = _frames(captured.err)
    assert frames[0].startswith("search bar:  50%|") and "| 1/2 [" in frames[0] and "trial/s]" in frames[0]
    assert len(frames[0]) == 120                                  # the terminal's width - 1 at the start
    last = frames[-1]
    assert last.startswith("search bar: 100%|") and "| 2/2 [" in last and re.search(r"(s/trial|trial/s), best mse ", last)
    assert last.endswith(f"best mse {trial.value:.4f} (#1)]") and len(last) == 90
    assert not any("0/2" in f or "3/2" in f for f in frames)
    # the trial's own config: no epoch bars of its own, runs in the study's folder
    config = Config.load(tmp_saved / "search" / "bar" / "runs" / trial.user_attrs["run"] / "config.yaml")
    assert config["show_progress"] is False and config["checkpoint_dir"] == str(tmp_saved / "search" / "bar" / "runs")


def test_without_progress_no_bar_is_drawn(toy_task, tmp_path, tmp_saved, capsys):
    run_search(toy_task.model, toy_task.dataset, _lr_space(tmp_path, epochs=1), 1,
               overrides={"checkpoint_dir": str(tmp_saved), "show_progress": False, "log_level": "WARNING"},
               out=lambda line: None)
    captured = capsys.readouterr()
    assert "search " not in captured.err and captured.out.startswith("trial 0 complete mse=")


def test_trials_record_runs_epochs_tests_logs_and_prune_messages(toy_task, tmp_path, tmp_saved, monkeypatch, caplog):
    layer = tmp_path / "layer.yaml"
    layer.write_text("weight_decay: 0.25\n")
    seeds, threads = [], []
    real_seed = search.seed_everything
    monkeypatch.setattr(search, "seed_everything", lambda *a: seeds.append(a) or real_seed(*a))
    monkeypatch.setattr(torch, "set_num_threads", threads.append)
    set_verbosity = optuna.logging.set_verbosity
    monkeypatch.setattr(optuna.logging, "set_verbosity", lambda level: None)   # keep Optuna's own INFO lines
    set_verbosity(optuna.logging.INFO)
    optuna.logging.enable_propagation()
    try:
        storage = f"sqlite:///{tmp_path / 'p.db'}"
        study = optuna.create_study(study_name="p", storage=storage)
        study.enqueue_trial({"learning_rate": 0.05, "dropout": 0.0})      # learns: mse falls at once
        study.enqueue_trial({"learning_rate": 1.0e-6, "dropout": 0.0})    # does not learn: pruned after epoch 1
        path = _space(tmp_path, "lr.yaml", "learning_rate: {loguniform: [1.0e-6, 0.1]}\ndropout: {uniform: [0.0, 0.5]}\n"
                                           "epochs: 2\neval_step: 1\n")
        with caplog.at_level(logging.INFO, logger="optuna"):
            result = run_search(toy_task.model, toy_task.dataset, path, 2, storage=storage,
                                study_name="p", config_files=[layer],
                                overrides={"checkpoint_dir": str(tmp_saved), "show_progress": False, "num_threads": 1},
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=1), out=lambda line: None)
    finally:
        optuna.logging.disable_propagation()
        set_verbosity(optuna.logging.WARNING)
    good, bad = result.study.trials
    assert seeds == [(2019, True), (2019, True)] and threads == [1, 1, 1]   # the study, then each trial
    assert set(good.user_attrs) == {"run", "epochs", "test", "best_epoch"}
    assert good.user_attrs["epochs"] == 2 and good.user_attrs["best_epoch"] == 2
    assert set(good.user_attrs["test"]) == {"mse", "mae"} and all(isinstance(v, float) for v in good.user_attrs["test"].values())
    assert bad.user_attrs["epochs"] == 1 and "test" not in bad.user_attrs
    runs = tmp_saved / "search" / "p" / "runs"
    assert Config.load(runs / good.user_attrs["run"] / "config.yaml")["weight_decay"] == 0.25   # the config files apply
    good_log = (runs / good.user_attrs["run"] / "run.log").read_text()
    assert " INFO trial 0 of study 'p': learning_rate=0.05 dropout=0.0\n" in good_log   # the fixed epochs not listed
    bad_log = (runs / bad.user_attrs["run"] / "run.log").read_text()
    value = bad.intermediate_values[1]
    assert " INFO trial 1 of study 'p': learning_rate=1e-06 dropout=0.0\n" in bad_log
    assert f" INFO trial 1 pruned after epoch 1 (mse = {value:.4f})\n" in bad_log
    assert f"Trial 1 pruned. epoch 1: mse = {value:.4f}" in caplog.messages


def test_a_trial_without_a_finite_metric_fails_and_the_study_goes_on(toy_task, tmp_path, tmp_saved, monkeypatch,
                                                                    capsys):
    calls = []
    real = toy_task.task_cls.evaluate

    def evaluate(self, model, split):       # the first trial's metric is NaN, the second one's is real
        calls.append(split)
        if len(toy_task.calls) == 1:
            return {"mse": float("nan"), "mae": float("nan")}
        return real(self, model, split)
    monkeypatch.setattr(toy_task.task_cls, "evaluate", evaluate)
    result = run_search(toy_task.model, toy_task.dataset, _lr_space(tmp_path), 2,
                        overrides={"checkpoint_dir": str(tmp_saved), "show_progress": False, "log_level": "WARNING"},
                        out=lambda line: None)
    failed, good = result.study.trials
    assert failed.state == TrialState.FAIL and failed.user_attrs["error"] == "no finite mse was measured"
    assert failed.intermediate_values == {}           # a NaN is not reported to the pruner
    assert good.state == TrialState.COMPLETE
    log = (tmp_saved / "search" / result.folder.name / "runs" / failed.user_attrs["run"] / "run.log").read_text()
    assert " WARNING trial 0 failed: no finite mse was measured\n" in log
    assert capsys.readouterr().out == (f"trial 0 fail  {failed.user_attrs['run']}\n"
                                       f"trial 1 complete mse={good.value:.4f}  {good.user_attrs['run']}\n")


def test_a_trial_failing_before_its_run_folder_is_listed_without_one(toy_task, tmp_path, tmp_saved, monkeypatch,
                                                                     capsys):
    class NoFolder:
        @staticmethod
        def create(config):
            raise FloatingPointError("no run folder")
    monkeypatch.setattr(search, "RunDir", NoFolder)
    result = run_search(toy_task.model, toy_task.dataset, _lr_space(tmp_path), 1,
                        overrides={"checkpoint_dir": str(tmp_saved), "show_progress": False}, out=lambda line: None)
    assert result.study.trials[0].state == TrialState.FAIL and result.study.trials[0].user_attrs == {}
    assert capsys.readouterr().out == "trial 0 fail  \n"


def test_trials_finished_by_another_worker_count_towards_the_study(toy_task, tmp_path, tmp_saved, monkeypatch):
    storage = f"sqlite:///{tmp_path / 'w.db'}"
    real_seed = search.seed_everything

    def other_worker(*a):     # while trial 0 trains, another process records a failed trial
        if len(toy_task.calls) == 0:
            optuna.load_study(study_name="w", storage=storage).add_trial(create_trial(state=TrialState.FAIL))
        return real_seed(*a)
    monkeypatch.setattr(search, "seed_everything", other_worker)
    run_search(toy_task.model, toy_task.dataset, _lr_space(tmp_path, epochs=1), 2, storage=storage, study_name="w",
               overrides={"checkpoint_dir": str(tmp_saved), "show_progress": False, "log_level": "WARNING"},
               out=lambda line: None)
    assert len(toy_task.calls) == 1
