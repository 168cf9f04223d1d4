"""graphattn.search._optimize's objective without training: a stand-in Trainer plays planned validation curves
(one that learns, one that only measures NaN, one the pruner stops) through a real in-memory Optuna study and real
run folders, so every trial's config, seed, threads, log lines and user attributes are checked in a tenth of a
second (the slower tests in test_search_study.py train the toy task for the same behaviour end to end)."""
from __future__ import annotations

import math
from types import SimpleNamespace

import optuna
import pytest
import torch
from optuna.trial import TrialState

from graphattn import search
from graphattn.config import Config

CURVES = {0: [0.3, 0.2], 1: [math.nan], 2: [5.0, 4.0], 3: [0.1]}   # validation mse per epoch, by trial number
TEST = {"mse": 0.5, "mae": 0.25}


class _Trainer:
    """Trainer.from_config's stand-in: fit() reports the trial's planned curve to on_evaluation, keeps the best
    value like EarlyStopping (None while nothing finite was measured) and returns the test metrics."""

    made: list = []

    def __init__(self, config, run):
        self.config, self.run = config, run
        self.task = SimpleNamespace(metric="mse")
        self.stopper = SimpleNamespace(best=None)
        self.best_epoch = None
        self.on_evaluation = None

    @classmethod
    def from_config(cls, *args):
        trainer = cls(*args)
        cls.made.append(trainer)
        return trainer

    def fit(self):
        number = len(self.made) - 1
        for epoch, value in enumerate(CURVES[number], 1):
            self.on_evaluation(epoch, {"mse": value, "mae": 9.0})
            if math.isfinite(value) and (self.stopper.best is None or value < self.stopper.best):
                self.stopper.best, self.best_epoch = value, epoch
        return {k: torch.tensor(v) for k, v in TEST.items()}


@pytest.fixture
def study_run(toy_task, tmp_path, tmp_saved, monkeypatch):
    """_optimize over four trials enqueued with fixed learning rates, five enqueued in all (the fifth must stay
    waiting: only finished trials count towards the study's size). Returns the study, the stand-in trainers,
    seed_everything's and torch.set_num_threads' calls, and each trial's exception."""
    _Trainer.made = []
    monkeypatch.setattr(search, "Trainer", _Trainer)
    seeds, threads, raised = [], [], {}
    monkeypatch.setattr(search, "seed_everything", lambda *a: seeds.append(a))
    monkeypatch.setattr(torch, "set_num_threads", threads.append)
    layer = tmp_path / "layer.yaml"
    layer.write_text("weight_decay: 0.25\n")
    space_file = tmp_path / "lr.yaml"
    space_file.write_text("learning_rate: {loguniform: [1.0e-6, 0.1]}\ndropout: {uniform: [0.0, 0.5]}\nepochs: 2\n")
    overrides = {"checkpoint_dir": str(tmp_saved), "show_progress": False, "seed": 7, "reproducibility": False,
                 "num_threads": 1}
    base = Config(toy_task.model, toy_task.dataset, config_files=[layer], config_dict=overrides)
    space = search.load_search_space(space_file, base)
    study = optuna.create_study(study_name="s", pruner=optuna.pruners.MedianPruner(n_startup_trials=1))
    for lr in (0.05, 0.01, 0.02, 0.03, 0.04):
        study.enqueue_trial({"learning_rate": lr, "dropout": 0.125})
    optimize = study.optimize

    def recording(objective, **kwargs):
        def wrapped(trial):
            try:
                return objective(trial)
            except Exception as exc:
                raised[trial.number] = exc
                raise
        return optimize(wrapped, **kwargs)
    monkeypatch.setattr(study, "optimize", recording)
    folder = tmp_saved / "search" / "s"
    search._optimize(study, space, base, "mse", folder, 9, 4, 0, [layer], overrides)
    return SimpleNamespace(study=study, trainers=_Trainer.made, seeds=seeds, threads=threads, raised=raised,
                           runs=folder / "runs")


def test_trials_stop_at_the_study_size_counting_finished_trials_only(study_run):
    states = [t.state for t in study_run.study.trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED, TrialState.COMPLETE, TrialState.WAITING]
    assert [t.value for t in study_run.study.trials[:4]] == [0.2, None, 5.0, 0.1]   # pruned: its last report


def test_each_trial_gets_its_config_seed_threads_and_run_folder(study_run, toy_task):
    assert study_run.seeds == [(7, False)] * 4 and study_run.threads == [1] * 4
    for trial, trainer in zip(study_run.study.trials, study_run.trainers):
        config = trainer.config
        assert (config.model, config.dataset) == (toy_task.model, toy_task.dataset)
        assert config["learning_rate"] == trial.params["learning_rate"] and config["epochs"] == 2
        assert config["weight_decay"] == 0.25                       # the config files apply to every trial
        assert config["show_progress"] is False and config["checkpoint_dir"] == str(study_run.runs)
        assert trainer.run.path == study_run.runs / trial.user_attrs["run"]
        assert trainer.run.path.is_dir()


def test_user_attributes_of_complete_failed_and_pruned_trials(study_run):
    good, failed, pruned, _ = study_run.study.trials[:4]
    assert good.user_attrs == {"run": good.user_attrs["run"], "epochs": 2, "test": TEST, "best_epoch": 2}
    assert all(type(v) is float for v in good.user_attrs["test"].values())
    assert good.intermediate_values == {1: 0.3, 2: 0.2}
    assert failed.user_attrs == {"run": failed.user_attrs["run"], "epochs": 1, "test": TEST, "best_epoch": None,
                                 "error": "no finite mse was measured"}   # trained to the end, nothing finite
    assert failed.intermediate_values == {}                         # a NaN is not reported to the pruner
    assert pruned.user_attrs == {"run": pruned.user_attrs["run"], "epochs": 1}
    assert pruned.intermediate_values == {1: 5.0}


def test_the_exceptions_say_why_a_trial_ended(study_run):
    assert sorted(study_run.raised) == [1, 2]
    assert type(study_run.raised[1]) is FloatingPointError and str(study_run.raised[1]) == "no finite mse was measured"
    assert type(study_run.raised[2]) is optuna.TrialPruned and str(study_run.raised[2]) == "epoch 1: mse = 5.0000"


def test_each_run_log_names_the_trial_its_values_and_its_end(study_run):
    trials = study_run.study.trials

    def lines(number, level):
        log = (study_run.runs / trials[number].user_attrs["run"] / "run.log").read_text()
        return [line.split(f" {level} ", 1)[1] for line in log.splitlines() if f" {level} trial " in line]
    assert lines(0, "INFO") == ["trial 0 of study 's': learning_rate=0.05 dropout=0.125"]   # not the fixed epochs
    assert lines(1, "INFO") == ["trial 1 of study 's': learning_rate=0.01 dropout=0.125"]
    assert lines(1, "WARNING") == ["trial 1 failed: no finite mse was measured"]
    assert lines(2, "INFO") == ["trial 2 of study 's': learning_rate=0.02 dropout=0.125",
                                "trial 2 pruned after epoch 1 (mse = 5.0000)"]
    assert lines(0, "WARNING") == [] and lines(2, "WARNING") == []
