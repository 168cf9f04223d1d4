"""The one Trainer on a toy regression task (tests/conftest.py): resume, early stopping, errors, schedules."""
import json

import pytest
import torch

from graphattn.config import Config
from graphattn.training import MemoryRun, RunDir, Trainer, load_checkpoint


def _config(toy_task, tmp_saved, **over):
    base = {"epochs": 4, "show_progress": False, "device": "cpu", "checkpoint_dir": str(tmp_saved), "seed": 5,
            "learning_rate": 0.05}
    return Config(toy_task.model, toy_task.dataset, config_dict={**base, **over})


def _fit(config):
    with RunDir.create(config) as run:
        trainer = Trainer.from_config(config, run)
        return trainer.fit(), trainer, run.path


def test_resume_after_an_interrupt_equals_an_uninterrupted_run(toy_task, tmp_saved):
    straight, _, straight_path = _fit(_config(toy_task, tmp_saved))

    # interrupt during epoch 3: the KeyboardInterrupt propagates, last.pt holds epoch 2
    config = _config(toy_task, tmp_saved)
    with RunDir.create(config) as run:
        trainer = Trainer.from_config(config, run)
        original = trainer.task.batches
        calls = []

        def batches(phase):
            calls.append(phase)
            if len(calls) == 3:
                raise KeyboardInterrupt
            return original(phase)

        trainer.task.batches = batches
        with pytest.raises(KeyboardInterrupt):
            trainer.fit()
        path = run.path
    assert load_checkpoint(path / "last.pt")["epoch"] == 2

    config = _config(toy_task, tmp_saved, resume=str(path))
    with RunDir.open(path, config) as run:
        resumed = Trainer.from_config(config, run).fit()
    assert resumed == straight
    a, b = (load_checkpoint(p / "last.pt") for p in (straight_path, path))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["optimizers"]["train"]["state"][0]["exp_avg"].equal(b["optimizers"]["train"]["state"][0]["exp_avg"])
    history = json.loads((path / "metrics.json").read_text())
    assert [row["epoch"] for row in history["train"]] == [1, 2, 3, 4]


def test_resume_drops_history_written_after_the_checkpoint(toy_task, tmp_saved):
    """A run killed after metrics.json got epoch 3's rows but before last.pt was saved resumes from epoch 2:
    epoch 3 is replayed, and its rows must not appear twice (found by the SIGKILL test in CI)."""
    straight, _, _ = _fit(_config(toy_task, tmp_saved, epochs=3))
    config = _config(toy_task, tmp_saved, epochs=2)
    _, _, path = _fit(config)
    metrics = json.loads((path / "metrics.json").read_text())
    metrics["train"].append(dict(metrics["train"][-1], epoch=3))          # the killed epoch's rows
    metrics["evaluations"].append(dict(metrics["evaluations"][-1], epoch=3))
    (path / "metrics.json").write_text(json.dumps(metrics))
    config = _config(toy_task, tmp_saved, epochs=3, resume=str(path))
    with RunDir.open(path, config) as run:
        resumed = Trainer.from_config(config, run).fit()
    history = json.loads((path / "metrics.json").read_text())
    assert [row["epoch"] for row in history["train"]] == [1, 2, 3]
    assert [row["epoch"] for row in history["evaluations"] if row["split"] == "valid"] == [1, 2, 3]
    assert resumed == straight


def _reloaded(config, toy_task, saved):
    """A fresh Trainer loaded from ``saved``, and its state_dict, checked against ``saved`` for the plain fields."""
    fresh = Trainer(config, toy_task.task_cls(config))
    fresh.load_state_dict(saved)
    again = fresh.state_dict()
    for key in ("epoch", "step", "best_epoch", "stopper", "schedules"):
        assert again[key] == saved[key], key
    return fresh, again


def test_state_dict_round_trips_field_by_field(toy_task, tmp_saved):
    config = _config(toy_task, tmp_saved, epochs=2, scheduler="cosine", warmup_epochs=1)
    _, trainer, path = _fit(config)
    saved = load_checkpoint(path / "last.pt")
    _, again = _reloaded(config, toy_task, saved)
    assert again["epoch"] == 2 and again["step"] == 16 and again["schedules"]["train"]["last_step"] == 16
    assert torch.equal(again["task"]["generator"], saved["task"]["generator"])
    assert torch.equal(again["rng"]["torch"], saved["rng"]["torch"])


def test_state_dict_round_trips_the_best_epoch_and_counters_without_a_folder(toy_task, tmp_saved, monkeypatch):
    """The in-memory twin of the test above (a tenth of the time), with a best epoch that is not the last."""
    values = iter([0.5, 0.2, 0.9, 0.7])                     # valid after epochs 1-3, then the test split
    monkeypatch.setattr(toy_task.task_cls, "evaluate", lambda self, model, split: {"mse": next(values), "mae": 0.0})
    config = _config(toy_task, tmp_saved, epochs=3)
    trainer = Trainer(config, toy_task.task_cls(config))
    trainer.fit()
    saved = trainer.run.load("last.pt")
    assert (saved["epoch"], saved["best_epoch"], saved["step"]) == (3, 2, trainer.step) and trainer.step > 3
    fresh, again = _reloaded(config, toy_task, saved)
    assert (fresh.epoch, fresh.best_epoch, fresh.step) == (3, 2, trainer.step)
    assert set(again) == set(saved)
    assert again["stopper"]["best"] == 0.2
    for name, value in saved["model"].items():
        assert torch.equal(again["model"][name], value), name


def test_early_stopping_stops_and_tests_the_best_epoch(toy_task, tmp_saved):
    test, trainer, path = _fit(_config(toy_task, tmp_saved, epochs=50, learning_rate=0.0, stopping_step=2))
    history = json.loads((path / "metrics.json").read_text())
    # with lr 0 only dropout moves the loss: the first evaluation is best or not; either way 2 more bad ones stop it
    assert len(history["train"]) < 50 and trainer.stopper.bad_steps == 2
    assert trainer.best_epoch == load_checkpoint(path / "best.pt")["epoch"]


def test_a_bad_metric_name_is_a_clear_error_before_training(toy_task, tmp_saved):
    toy_task.task_cls.metric = "msee"
    with pytest.raises(ValueError, match=r"valid_metric: 'msee' is not computed by this run; choose one of \['mae', 'mse'\]"):
        _fit(_config(toy_task, tmp_saved))


@pytest.mark.parametrize("key, value, message", [("epochs", 0, "epochs: expected an int >= 1"),
                                                  ("eval_step", 0, "eval_step: expected an int >= 1"),
                                                  ("optimizer", "adagrad", "optimizer: expected one of"),
                                                  ("scheduler", "step", "scheduler: expected one of")])
def test_bad_training_keys_are_clear_errors(toy_task, tmp_saved, key, value, message):
    with pytest.raises(ValueError, match=message):
        _fit(_config(toy_task, tmp_saved, **{key: value}))


def test_evaluation_every_eval_step_and_after_the_last_epoch(toy_task, tmp_saved):
    _, trainer, _ = _fit(_config(toy_task, tmp_saved, epochs=5, eval_step=2))
    assert [row["epoch"] for row in trainer.history["evaluations"]] == [2, 4, 5]


def test_cosine_schedule_with_warmup_sets_the_learning_rate_per_step(toy_task, tmp_saved):
    config = _config(toy_task, tmp_saved, epochs=2, scheduler="cosine", warmup_epochs=1, learning_rate=0.1)
    trainer = Trainer(config, toy_task.task_cls(config))
    seen = []
    opt = trainer.optimizers["train"]
    original = opt.step

    def step(*args, **kwargs):
        seen.append(opt.param_groups[0]["lr"])
        return original(*args, **kwargs)

    opt.step = step
    trainer.train()
    # 8 batches per epoch: warm-up (k+1)/8 over epoch 1, then a cosine over the 8 steps of epoch 2
    import math
    expected = [0.1 * (k + 1) / 8 for k in range(8)] + [0.1 * 0.5 * (1 + math.cos(math.pi * k / 8)) for k in range(8)]
    assert seen == pytest.approx(expected)


def test_gradient_clipping_bounds_the_update(toy_task, tmp_saved):
    config = _config(toy_task, tmp_saved, epochs=1, optimizer="sgd", momentum=0.0, learning_rate=1.0, grad_clip=1e-3)
    trainer = Trainer(config, toy_task.task_cls(config))
    trainer.model.net[0].p = 0.0
    before = torch.cat([p.detach().flatten().clone() for p in trainer.model.parameters()])
    batches = trainer.task.batches
    trainer.task.batches = lambda phase: list(batches(phase))[:1]
    trainer.train_epoch()
    after = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    assert (after - before).norm().item() == pytest.approx(1e-3, rel=1e-4)   # one SGD step of a clipped gradient


def test_a_non_finite_loss_stops_with_a_clear_error(toy_task, tmp_saved):
    config = _config(toy_task, tmp_saved, epochs=1)
    trainer = Trainer(config, toy_task.task_cls(config))
    trainer.task.loss = lambda model, batch, phase: (torch.tensor(float("nan"), requires_grad=True), {})
    with pytest.raises(FloatingPointError, match="epoch 1 train: the loss is nan"):
        trainer.train_epoch()


def test_memory_run_keeps_history_and_best_without_writing(toy_task, tmp_saved, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = _config(toy_task, tmp_saved, epochs=3)
    trainer = Trainer(config, toy_task.task_cls(config))
    test = trainer.fit()
    assert isinstance(trainer.run, MemoryRun) and list(tmp_saved.iterdir()) == []
    assert [row["epoch"] for row in trainer.history["evaluations"]] == [1, 2, 3]
    assert trainer.history["test"] == test
    best = min(trainer.history["evaluations"], key=lambda row: row["mse"])
    assert trainer.best_epoch == best["epoch"]
    assert trainer.run.load("best.pt")["value"] == pytest.approx(best["mse"])


def test_several_phases_each_with_its_own_optimizer(toy_task, tmp_saved):
    config = _config(toy_task, tmp_saved, epochs=1)

    class TwoPhases(toy_task.task_cls):
        phases = ("a", "b")

        def optimizers(self, model):
            return {"a": torch.optim.SGD(model.parameters(), lr=0.1), "b": torch.optim.SGD(model.parameters(), lr=0.0)}

    trainer = Trainer(config, TwoPhases(config))
    logs = trainer.train_epoch()
    assert {"a_loss", "b_loss", "a_rmse", "b_seconds", "epoch_end_seconds"} <= set(logs)
    assert trainer.step == 16 and set(trainer.schedules) == {"a", "b"}
    with pytest.raises(ValueError, match=r"gives none for phase\(s\) \['b'\]"):
        class Missing(TwoPhases):
            def optimizers(self, model):
                return {"a": torch.optim.SGD(model.parameters(), lr=0.1)}
        Trainer(config, Missing(config))
