"""EarlyStopping's best_on_tie (ties="first" | "last") and the Trainer passing it on."""
import math

import pytest
import torch
from torch import nn

from graphattn.config import CORE_OVERALL, load_yaml
from graphattn.training import EarlyStopping, MemoryRun, Task, Trainer

NAN = float("nan")


def _steps(stop, values):
    return [stop.step(v) for v in values]


def test_first_keeps_the_first_of_tied_best_values():
    stop = EarlyStopping(patience=3, mode="max")
    assert stop.ties == "first"
    assert _steps(stop, (0.5, 0.8, 0.8, 0.7, 0.8)) == [True, True, False, False, False]
    assert stop.best == 0.8 and stop.best_step == 2 and stop.bad_steps == 3 and stop.should_stop


def test_last_takes_every_tie_and_resets_the_patience():
    stop = EarlyStopping(patience=3, mode="max", ties="last")
    assert _steps(stop, (0.5, 0.8, 0.8, 0.7, 0.8)) == [True, True, True, False, True]
    assert stop.best == 0.8 and stop.best_step == 5 and stop.bad_steps == 0 and not stop.should_stop
    # the patience counts evaluations since the last tie
    assert _steps(stop, (0.79, 0.1, 0.5)) == [False, False, False]
    assert stop.bad_steps == 3 == stop.steps - stop.best_step and stop.should_stop


def test_last_in_min_mode_and_a_strict_improvement_still_wins():
    stop = EarlyStopping(patience=2, mode="min", ties="last")
    assert _steps(stop, (1.0, 1.0, 0.5, 0.6, 0.5)) == [True, True, True, False, True]
    assert stop.best == 0.5 and stop.best_step == 5


def test_first_in_min_mode_keeps_the_first_of_tied_best_values():
    stop = EarlyStopping(patience=2, mode="min")
    assert stop.best is None and stop.best_step is None and stop.bad_steps == 0 == stop.steps
    assert _steps(stop, (1.0, 1.0, 0.5, 0.5)) == [True, False, True, False]
    assert stop.best == 0.5 and stop.best_step == 3 and stop.bad_steps == 1


@pytest.mark.parametrize("patience", [True, 0, -1, 2.0, "2", None])
def test_patience_must_be_a_positive_int(patience):
    with pytest.raises(ValueError, match=r"patience \(stopping_step\) must be an int >= 1, got "):
        EarlyStopping(patience)


@pytest.mark.parametrize("ties", ["first", "last"])
def test_nan_never_improves_nor_ties(ties):
    stop = EarlyStopping(patience=5, mode="max", ties=ties)
    assert _steps(stop, (NAN, 0.3, NAN, 0.3)) == [False, True, False, ties == "last"]
    assert stop.best == 0.3 and stop.best_step == (4 if ties == "last" else 2)
    assert not math.isnan(stop.best)


@pytest.mark.parametrize("ties", ["first", "last"])
def test_state_round_trips_and_continues_alike(ties):
    stop = EarlyStopping(patience=3, mode="max", ties=ties)
    _steps(stop, (0.2, 0.4, 0.4, 0.1))
    state = stop.state_dict()
    assert state["ties"] == ties
    restored = EarlyStopping(patience=3, mode="max", ties=ties)
    restored.load_state_dict(state)
    assert restored.state_dict() == state
    assert _steps(restored, (0.4, 0.3)) == _steps(stop, (0.4, 0.3))
    assert restored.state_dict() == stop.state_dict()


def test_a_state_from_before_the_key_loads_as_first_and_a_mismatch_is_refused():
    old = EarlyStopping(patience=2).state_dict()
    del old["ties"]
    EarlyStopping(patience=2).load_state_dict(old)
    with pytest.raises(ValueError, match="best_on_tie 'first', this one is 'last'"):
        EarlyStopping(patience=2, ties="last").load_state_dict(old)


@pytest.mark.parametrize("bad", ["LAST", "max", "", None, True])
def test_a_bad_value_is_a_clear_error_naming_the_key(bad):
    with pytest.raises(ValueError, match=r"best_on_tie must be 'first' or 'last', got"):
        EarlyStopping(2, ties=bad)


class _Scripted(Task):
    """One fixed batch, learning rate 0; the validation accuracy is read from a script, one per epoch."""

    metric = "acc"

    def __init__(self, config, script):
        super().__init__(config, {})
        self.script, self.calls = list(script), 0

    def batches(self, phase):
        return [torch.ones(2, 1)]

    def loss(self, model, batch, phase):
        return model(batch).pow(2).mean(), {}

    def evaluate(self, model, split):
        self.calls += 1
        return {"acc": self.script[self.calls - 1]}


def _train(best_on_tie, script, stopping_step=10, **over):
    config = {**load_yaml(CORE_OVERALL), "epochs": len(script), "stopping_step": stopping_step,
              "best_on_tie": best_on_tie, "learning_rate": 0.0, "device": "cpu", "show_progress": False, **over}
    trainer = Trainer(config, _Scripted(config, script), nn.Linear(1, 1), run=MemoryRun())
    trainer.train()
    return trainer


def test_the_default_is_first():
    assert load_yaml(CORE_OVERALL)["best_on_tie"] == "first"


@pytest.mark.parametrize("best_on_tie, best", [("first", 2), ("last", 5)])
def test_the_trainer_saves_the_chosen_tied_epoch(best_on_tie, best):
    trainer = _train(best_on_tie, [0.5, 0.9, 0.9, 0.7, 0.9, 0.8])
    assert trainer.best_epoch == best and trainer.run.load("best.pt")["epoch"] == best
    assert trainer.stopper.ties == best_on_tie and trainer.state_dict()["stopper"]["ties"] == best_on_tie


def test_the_trainer_stops_later_with_last_because_a_tie_resets_the_patience():
    script = [0.5, 0.9, 0.7, 0.9, 0.7, 0.7, 0.7]
    assert _train("first", script, stopping_step=2).epoch == 4
    assert _train("last", script, stopping_step=2).epoch == 6


def test_the_trainer_refuses_a_bad_value():
    with pytest.raises(ValueError, match="best_on_tie must be 'first' or 'last', got 'latest'"):
        _train("latest", [0.5])


def test_reset_patience_restarts_the_count_but_keeps_the_best():
    stop = EarlyStopping(patience=2, mode="max")
    _steps(stop, [0.5, 0.4])
    stop.reset_patience()
    assert (stop.bad_steps, stop.best, stop.best_step, stop.should_stop) == (0, 0.5, 1, False)
    _steps(stop, [0.3, 0.2])
    assert stop.should_stop and stop.best == 0.5
