"""``log_tensorboard``: the Trainer writes losses, learning rate and every metric as TensorBoard scalars into the
run folder (read back with tensorboard's own EventAccumulator); nothing is written with the flag off."""
import json

import pytest

from graphattn.config import Config
from graphattn.training import MemoryRun, RunDir, Trainer

pytest.importorskip("torch.utils.tensorboard", reason="log_tensorboard needs the tensorboard package")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def _config(toy_task, tmp_saved, **over):
    base = {"epochs": 3, "show_progress": False, "device": "cpu", "checkpoint_dir": str(tmp_saved), "seed": 5,
            "learning_rate": 0.05, "log_level": "WARNING"}
    return Config(toy_task.model, toy_task.dataset, config_dict={**base, **over})


def _fit(config):
    with RunDir.create(config) as run:
        trainer = Trainer.from_config(config, run)
        trainer.fit()
        return trainer, run.path


def _scalars(folder):
    files = list(folder.glob("events.out.tfevents.*"))
    acc = EventAccumulator(str(folder))
    acc.Reload()
    return files, {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_losses_metrics_and_learning_rate_reach_the_event_file(toy_task, tmp_saved):
    trainer, folder = _fit(_config(toy_task, tmp_saved, log_tensorboard=True, scheduler="cosine"))
    assert trainer._tensorboard is None                       # closed with the run
    files, scalars = _scalars(folder)
    assert len(files) == 1
    history = json.loads((folder / "metrics.json").read_text())
    for row in history["train"]:                              # every epoch's losses, as metrics.json has them
        for key in ("loss", "rmse"):
            assert scalars[f"train/{key}"][row["epoch"] - 1] == (row["epoch"], pytest.approx(row[key], rel=1e-6))
    lr = scalars["learning_rate"]
    assert [s for s, _ in lr] == [1, 2, 3] and lr[0][1] > lr[-1][1] >= 0.0   # the cosine schedule, decreasing
    for row in history["evaluations"]:
        for key in ("mse", "mae", "eval_seconds"):
            assert (row["epoch"], pytest.approx(row[key], rel=1e-6)) in scalars[f"valid/{key}"]
    assert [s for s, _ in scalars["valid/mse"]] == [1, 2, 3]
    best = trainer.best_epoch
    assert scalars["test/mse"] == [(best, pytest.approx(history["test"]["mse"], rel=1e-6))]
    assert scalars["test/mae"] == [(best, pytest.approx(history["test"]["mae"], rel=1e-6))]


def test_flag_off_writes_no_event_file(toy_task, tmp_saved):
    trainer, folder = _fit(_config(toy_task, tmp_saved))
    assert trainer.log_tensorboard is False
    assert not list(folder.rglob("events.out.tfevents.*"))
    assert (folder / "metrics.json").is_file()                # the run itself was written


def test_a_run_without_a_folder_writes_nothing(toy_task, tmp_saved, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = _config(toy_task, tmp_saved, log_tensorboard=True)
    trainer = Trainer.from_config(config, MemoryRun())
    trainer.fit()
    assert not list(tmp_path.rglob("events.out.tfevents.*"))


def test_a_resumed_run_purges_the_epochs_it_replays(toy_task, tmp_saved):
    """Interrupted during epoch 3: the resumed run continues after epoch 2, and the events show each epoch once,
    with the replayed epoch's new values."""
    config = _config(toy_task, tmp_saved, log_tensorboard=True, epochs=4)
    with RunDir.create(config) as run:
        trainer = Trainer.from_config(config, run)
        original, calls = trainer.task.batches, []

        def batches(phase):
            calls.append(phase)
            if len(calls) == 3:
                raise KeyboardInterrupt
            return original(phase)

        trainer.task.batches = batches
        with pytest.raises(KeyboardInterrupt):
            trainer.fit()
        path = run.path
    # a run killed after writing epoch 3's scalars but before saving its last.pt left events that will be replayed
    from torch.utils.tensorboard import SummaryWriter
    with SummaryWriter(log_dir=str(path)) as stale:
        stale.add_scalar("train/loss", 999.0, 3)
    config = _config(toy_task, tmp_saved, log_tensorboard=True, epochs=4, resume=str(path))
    with RunDir.open(path, config) as run:
        Trainer.from_config(config, run).fit()
    _, scalars = _scalars(path)
    assert [s for s, _ in scalars["train/loss"]] == [1, 2, 3, 4]
    assert 999.0 not in [v for _, v in scalars["train/loss"]]
    assert [s for s, _ in scalars["valid/mse"]] == [1, 2, 3, 4]


def test_the_trainer_hands_every_phase_to_the_scalars(toy_task, tmp_saved, monkeypatch):
    """Without a folder (no event file, a tenth of a second): what fit() passes to ``_scalars``, phase by phase."""
    calls = []
    monkeypatch.setattr(Trainer, "_scalars",
                        lambda self, prefix, values, step: calls.append((prefix, dict(values), step)))
    trainer = Trainer.from_config(_config(toy_task, tmp_saved, epochs=2, log_tensorboard=True), run := MemoryRun())
    trainer.fit()
    assert [(prefix, step) for prefix, _, step in calls] == [("train", 1), ("valid", 1), ("train", 2), ("valid", 2),
                                                            ("test", trainer.best_epoch)]
    train, evaluations = run.history["train"], run.history["evaluations"]
    assert [values for prefix, values, _ in calls if prefix == "train"] == [
        {k: v for k, v in row.items() if k != "epoch"} for row in train]
    assert [values for prefix, values, _ in calls if prefix == "valid"] == [
        {k: v for k, v in row.items() if k not in ("epoch", "split")} for row in evaluations]
    assert calls[-1][1] == run.history["test"]


def test_scalars_go_to_the_run_folder_by_tag_and_step(toy_task, tmp_saved, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                               # a writer without a log_dir would write to ./runs
    config = _config(toy_task, tmp_saved, log_tensorboard=True)
    with RunDir.create(config) as run:
        trainer = Trainer.from_config(config, run)
        trainer._scalars("train", {"loss": 0.5, "lr": 0.01, "epoch": 3, "nan_check": True, "note": "x"}, 3)
        trainer._scalars("valid", {"mse": 0.25}, 3)
        trainer.close()
        assert trainer._tensorboard is None
        trainer.close()                                        # closing twice is harmless
        files, scalars = _scalars(run.path)
    assert len(files) == 1 and not (tmp_path / "runs").exists()
    assert scalars == {"train/loss": [(3, 0.5)], "learning_rate": [(3, pytest.approx(0.01))], "train/epoch": [(3, 3.0)],
                       "valid/mse": [(3, 0.25)]}
