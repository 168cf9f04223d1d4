"""What the Trainer records and says: the per-epoch log row, the run log's lines, the progress switch, and
errors for checkpoints that do not fit (the toy regression task of tests/conftest.py)."""
import pytest
import torch

from graphattn.config import Config
from graphattn.training import MemoryRun, RunDir, SizedBatches, Trainer


def _messages(path):
    """The run log's messages (each line is '<date> <time> <LEVEL> <message>')."""
    return [line.split(" ", 3)[3] for line in path.read_text().splitlines() if line[:2] == "20"]


def _config(toy_task, tmp_saved, **over):
    base = {"epochs": 2, "show_progress": False, "device": "cpu", "checkpoint_dir": str(tmp_saved), "seed": 5,
            "learning_rate": 0.05}
    return Config(toy_task.model, toy_task.dataset, config_dict={**base, **over})


def test_an_epoch_logs_the_mean_loss_and_parts_the_time_and_the_learning_rate(toy_task, tmp_saved):
    config = _config(toy_task, tmp_saved, scheduler="cosine", warmup_epochs=1)
    trainer = Trainer(config, toy_task.task_cls(config))
    losses, rmses = [], []
    original = trainer.train_step

    def step(phase, batch):
        loss, parts = original(phase, batch)
        losses.append(loss)
        rmses.append(parts["rmse"])
        return loss, parts

    trainer.train_step = step
    logs = trainer.train_epoch()
    assert set(logs) == {"loss", "rmse", "seconds", "epoch_end_seconds", "lr"}
    assert logs["loss"] == pytest.approx(sum(losses) / 8) and logs["rmse"] == pytest.approx(sum(rmses) / 8)
    assert logs["seconds"] > 0 and logs["epoch_end_seconds"] >= 0
    assert logs["lr"] == trainer.optimizers["train"].param_groups[0]["lr"] == pytest.approx(0.05)  # warm-up done
    assert trainer.epoch == 1 and trainer.step == 8


def test_an_epoch_without_batches_logs_zero_and_not_a_division_error(toy_task, tmp_saved):
    config = _config(toy_task, tmp_saved)
    trainer = Trainer(config, toy_task.task_cls(config))
    trainer.task.batches = lambda phase: SizedBatches([], 0)
    logs = trainer.train_epoch()
    assert logs["loss"] == 0.0 and trainer.step == 0 and trainer.epoch == 1


def test_phases_sharing_one_optimizer_share_one_schedule_over_their_summed_length(toy_task, tmp_saved):
    config = _config(toy_task, tmp_saved, scheduler="cosine", warmup_epochs=1)

    class TwoPhases(toy_task.task_cls):
        phases = ("a", "b")

    trainer = Trainer(config, TwoPhases(config))
    assert list(trainer.schedules) == ["a"]                   # the default optimiser is shared by both phases
    trainer.train_epoch()
    assert trainer.schedules["a"].steps_per_epoch == 16 and trainer.schedules["a"].last_step == 16
    assert trainer.step == 16


def test_a_schedule_needs_sized_batches(toy_task, tmp_saved):
    config = _config(toy_task, tmp_saved, scheduler="cosine")
    trainer = Trainer(config, toy_task.task_cls(config))
    batches = trainer.task.batches
    trainer.task.batches = lambda phase: iter(list(batches(phase)))
    with pytest.raises(ValueError, match="needs the number of batches per epoch"):
        trainer.train_epoch()
    plain = _config(toy_task, tmp_saved)                      # no schedule: unsized batches are fine
    trainer = Trainer(plain, toy_task.task_cls(plain))
    trainer.task.batches = lambda phase: iter(list(batches(phase)))
    assert trainer.train_epoch()["loss"] > 0


@pytest.mark.parametrize("show", [True, False])
def test_show_progress_follows_the_key(toy_task, tmp_saved, show):
    config = _config(toy_task, tmp_saved, show_progress=show)
    assert Trainer(config, toy_task.task_cls(config)).show_progress is show


def test_the_run_log_says_what_happened(toy_task, tmp_saved):
    config = _config(toy_task, tmp_saved, epochs=3, learning_rate=0.0, stopping_step=1)
    toy_task.task_cls.describe = lambda self: "64 toy rows"
    with RunDir.create(config) as run:
        run.plot_curves = lambda: None                        # the figure is tested elsewhere, and slow
        trainer = Trainer.from_config(config, run)
        trainer.fit()
        messages = _messages(run.path / "run.log")
    n_params = sum(p.numel() for p in trainer.model.parameters())
    assert "dataset 64 toy rows" in messages
    assert f"model {toy_task.model}: {n_params} parameters on cpu" in messages
    best = trainer.run.load("best.pt")
    assert f"testing the best epoch {trainer.best_epoch} (mse = {best['value']:.4f})" in messages
    if trainer.stopper.should_stop:
        assert f"early stop after epoch {trainer.epoch}: mse did not improve for 1 evaluations" in messages


def test_an_interrupt_says_how_to_resume(toy_task, tmp_saved):
    config = _config(toy_task, tmp_saved)
    with RunDir.create(config) as run:
        trainer = Trainer.from_config(config, run)
        trainer.train_epoch = lambda: (_ for _ in ()).throw(KeyboardInterrupt)
        with pytest.raises(KeyboardInterrupt):
            trainer.train()
        messages = _messages(run.path / "run.log")
    assert f"interrupted during epoch 1; last.pt holds epoch 0; continue with --resume={run.path}" in messages


def test_resume_logs_the_epoch_and_clears_the_test_row(toy_task, tmp_saved):
    config = _config(toy_task, tmp_saved)
    with RunDir.create(config) as run:
        run.plot_curves = lambda: None
        Trainer.from_config(config, run).fit()
        path = run.path
    config = _config(toy_task, tmp_saved, epochs=3, resume=str(path))
    with RunDir.open(path, config) as run:
        assert run.history["test"]
        trainer = Trainer.from_config(config, run)
        assert run.history["test"] == {} and trainer.epoch == 2
        assert [row["epoch"] for row in run.history["train"]] == [1, 2]
        messages = _messages(path / "run.log")
    assert f"resumed from {path / 'last.pt'} after epoch 2" in messages


def test_resume_keeps_rows_up_to_the_checkpoint_whatever_the_history_holds(toy_task, tmp_saved):
    config = _config(toy_task, tmp_saved)
    trainer = Trainer(config, toy_task.task_cls(config), run=MemoryRun())
    trainer.train()
    state = trainer.state_dict()                              # after epoch 2
    trainer.run.history = {"evaluations": [{"epoch": 1}, {"epoch": 3}, {"note": "no epoch"}]}   # no "train" key
    trainer.load_state_dict = lambda s: None                 # the state is not what this test is about
    path = tmp_saved / "last.pt"
    torch.save(state, path)
    trainer.resume(path)
    assert trainer.run.history == {"train": [], "evaluations": [{"epoch": 1}, {"note": "no epoch"}], "test": {}}
    trainer.epoch = 0                                         # a checkpoint saved before the first epoch
    trainer.load_state_dict = lambda s: None
    trainer.run.history = {"train": [{"note": "no epoch"}, {"epoch": 1}]}
    trainer.resume(path)
    assert trainer.run.history["train"] == [{"note": "no epoch"}]


def test_a_checkpoint_that_fails_without_a_message_names_the_error_type(toy_task, tmp_saved):
    config = _config(toy_task, tmp_saved, epochs=1)
    trainer = Trainer(config, toy_task.task_cls(config))
    path = tmp_saved / "last.pt"
    torch.save(trainer.state_dict(), path)

    def fail(state):
        raise RuntimeError()

    trainer.load_state_dict = fail
    with pytest.raises(ValueError, match=r"does not fit this model and dataset \(ToyModel\d*\): RuntimeError$"):
        trainer.resume(path)


def test_a_checkpoint_of_another_model_is_a_clear_error(toy_task, tmp_saved):
    config = _config(toy_task, tmp_saved, epochs=1)
    with RunDir.create(config) as run:
        trainer = Trainer.from_config(config, run)
        trainer.train()
        state = run.load("last.pt")
    state["model"] = {"net.1.weight": torch.zeros(3, 3)}
    bad = tmp_saved / "bad.pt"
    torch.save(state, bad)
    with pytest.raises(ValueError, match=r"checkpoint '.*bad.pt' does not fit this model and dataset \(ToyModel\d*\): "
                                         r"Error\(s\) in loading state_dict"):
        Trainer(config, toy_task.task_cls(config)).resume(bad)
    for key in ("model", "rng"):
        partial = {k: v for k, v in trainer.state_dict().items() if k != key}
        with pytest.raises(ValueError, match=f"checkpoint is missing '{key}': not a last.pt written by this Trainer"):
            trainer.load_state_dict(partial)
    state = trainer.state_dict()
    state["optimizers"] = {"other": state["optimizers"]["train"]}
    with pytest.raises(ValueError, match=r"no optimizer state for phase 'train' \(it has \['other'\]\)"):
        trainer.load_state_dict(state)


def test_test_without_a_best_checkpoint_evaluates_the_current_model(toy_task, tmp_saved):
    config = _config(toy_task, tmp_saved)
    trainer = Trainer(config, toy_task.task_cls(config), run=MemoryRun())
    result = trainer.test()
    assert trainer.best_epoch is None and result == trainer.history["test"] and set(result) == {"mse", "mae"}


def test_evaluation_rows_and_an_interrupt_without_a_run_folder(toy_task, tmp_saved):
    import logging
    config = _config(toy_task, tmp_saved, epochs=1)
    trainer = Trainer(config, toy_task.task_cls(config), run=MemoryRun())
    trainer.train()
    (row,) = trainer.history["evaluations"]
    assert row["split"] == "valid" and row["epoch"] == 1 and 0 <= row["eval_seconds"] < 60
    assert trainer.run.load()["epoch"] == 1                       # last.pt
    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    trainer.log.addHandler(handler)
    trainer.epochs = 2
    trainer.train_epoch = lambda: (_ for _ in ()).throw(KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert seen == ["interrupted during epoch 2; last.pt holds epoch 1"]
