"""Trainer paths the end-to-end tests pass over: config checks, the device argument, the several-process step
(DistributedDataParallel faked), progress bars, per-epoch averages and times, the evaluation epochs, and what
reaches TensorBoard (the writer faked)."""
import pytest
import torch
from torch import nn

from graphattn.config import Config
from graphattn.training import RunDir, Trainer
from graphattn.training import trainer as trainer_module


def _config(toy_task, tmp_saved, **over):
    base = {"epochs": 2, "show_progress": False, "device": "cpu", "checkpoint_dir": str(tmp_saved), "seed": 5,
            "learning_rate": 0.05, "log_level": "WARNING"}
    return Config(toy_task.model, toy_task.dataset, config_dict={**base, **over})


def _trainer(toy_task, tmp_saved, task=None, **over):
    config = _config(toy_task, tmp_saved, **over)
    return Trainer(config, task if task is not None else toy_task.task_cls(config))


@pytest.mark.parametrize("value", [True, "3", 0])
def test_epochs_must_be_a_positive_int(toy_task, tmp_saved, value):
    config = _config(toy_task, tmp_saved).to_dict()
    config["epochs"] = value
    with pytest.raises(ValueError, match=f"epochs: expected an int >= 1, got {value!r}"):
        Trainer(config, toy_task.task_cls(_config(toy_task, tmp_saved)))


def test_the_device_argument_overrides_the_config_and_reaches_the_task(toy_task, tmp_saved, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    config = _config(toy_task, tmp_saved, device="cuda")          # not available: only the argument makes it run
    task = toy_task.task_cls(config)
    seen = []
    task.setup = lambda model, device: seen.append(device)
    trainer = Trainer(config, task, device="cpu")
    assert trainer.device == torch.device("cpu") and seen == [torch.device("cpu")]
    assert trainer.config is config


def test_a_missing_optimizer_is_named_with_the_task(toy_task, tmp_saved):
    config = _config(toy_task, tmp_saved)

    class NoOptimizerTask(toy_task.task_cls):
        def optimizers(self, model):
            return {}

    with pytest.raises(ValueError, match=r"^NoOptimizerTask\.optimizers\(\) gives none for phase\(s\) \['train'\]"):
        Trainer(config, NoOptimizerTask(config))


def test_tensorboard_is_off_when_the_config_does_not_mention_it(toy_task, tmp_saved):
    config = {k: v for k, v in _config(toy_task, tmp_saved).to_dict().items() if k != "log_tensorboard"}
    assert Trainer(config, toy_task.task_cls(_config(toy_task, tmp_saved))).log_tensorboard is False


@pytest.mark.parametrize("reproducibility", [False, True])
def test_from_config_passes_reproducibility_on(toy_task, tmp_saved, reproducibility):
    cudnn = torch.backends.cudnn
    before = cudnn.deterministic, cudnn.benchmark
    try:
        Trainer.from_config(_config(toy_task, tmp_saved, reproducibility=reproducibility))
        assert (cudnn.deterministic, cudnn.benchmark) == (reproducibility, not reproducibility)
    finally:
        cudnn.deterministic, cudnn.benchmark = before


def test_with_several_processes_the_step_goes_through_ddp(toy_task, tmp_saved):
    trainer = _trainer(toy_task, tmp_saved)
    calls = []

    def fake_ddp(batch, phase):                                  # DistributedDataParallel(_TaskLoss(...))(batch, phase)
        calls.append((batch, phase))
        return trainer.task.loss(trainer.model, batch, phase)[0] * 0 + 3.0, {"part": 1.0}

    trainer._ddp = fake_ddp
    batch = (torch.ones(2, 4), torch.zeros(2, 1))
    assert trainer.train_step("train", batch) == (3.0, {"part": 1.0})
    assert len(calls) == 1 and calls[0][1] == "train" and torch.equal(calls[0][0][0], batch[0])


def test_a_parameter_the_loss_does_not_reach_keeps_no_gradient(toy_task, tmp_saved):
    trainer = _trainer(toy_task, tmp_saved)
    extra = nn.Parameter(torch.zeros(1))
    trainer.optimizers["train"].param_groups[0]["params"].append(extra)
    extra.grad = torch.ones(1)                                   # left by another phase's step
    trainer.train_step("train", (torch.ones(2, 4), torch.zeros(2, 1)))
    assert extra.grad is None and extra.item() == 0.0


@pytest.mark.parametrize("phases", [("train",), ("train", "extra")])
def test_progress_bars_name_the_epoch_and_phase(toy_task, tmp_saved, monkeypatch, phases):
    seen = []

    def fake_progress(iterable, desc="", enabled=True, **kwargs):
        seen.append((desc, enabled, kwargs))
        return iter(iterable)

    monkeypatch.setattr(trainer_module, "progress", fake_progress)
    config = _config(toy_task, tmp_saved, show_progress=len(phases) > 1)   # bars off for the one phase
    task = toy_task.task_cls(config)
    task.phases = phases
    Trainer(config, task).train_epoch()
    if phases == ("train",):
        assert seen == [("epoch 1", False, {"total": 8})]
    else:
        assert seen == [("epoch 1 train", True, {"total": 8}), ("epoch 1 extra", True, {"total": 8})]


def test_one_batch_epochs_average_over_one_and_take_seconds_not_timestamps(toy_task, tmp_saved, monkeypatch):
    trainer = _trainer(toy_task, tmp_saved)
    trainer.task.batch_size = 64                                 # one batch per epoch
    monkeypatch.setattr(trainer, "train_step", lambda phase, batch: (2.0, {"rmse": 4.0}))
    broadcast = []
    monkeypatch.setattr(trainer_module.distributed, "broadcast_buffers", lambda module: broadcast.append(module))
    logs = trainer.train_epoch()
    assert logs["loss"] == 2.0 and logs["rmse"] == 4.0
    assert 0 <= logs["seconds"] < 60 and 0 <= logs["epoch_end_seconds"] < 60
    assert broadcast == [trainer.model]


def test_the_last_epoch_is_evaluated_between_eval_steps(toy_task, tmp_saved):
    trainer = _trainer(toy_task, tmp_saved, epochs=3, eval_step=2)
    trainer.train()
    assert [row["epoch"] for row in trainer.history["evaluations"]] == [2, 3]


class _FakeWriter:
    made = []

    def __init__(self, log_dir, purge_step=None):
        self.purge_step, self.scalars = purge_step, []
        _FakeWriter.made.append(self)

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def flush(self):
        pass

    def close(self):
        pass


@pytest.fixture
def fake_writer(monkeypatch):
    pytest.importorskip("torch.utils.tensorboard", reason="log_tensorboard needs the tensorboard package")
    import torch.utils.tensorboard
    _FakeWriter.made = []
    monkeypatch.setattr(torch.utils.tensorboard, "SummaryWriter", _FakeWriter)
    return _FakeWriter


def test_scalars_skip_flags_and_text_and_purge_only_a_resumed_training(toy_task, tmp_saved, fake_writer):
    config = _config(toy_task, tmp_saved, log_tensorboard=True)
    with RunDir.create(config) as run:
        trainer = Trainer(config, toy_task.task_cls(config), run=run)
        purges = []
        for prefix, step in [("train", 3), ("train", 2), ("train", 1), ("valid", 3)]:
            trainer._tensorboard = None
            trainer._scalars(prefix, {"loss": 1.5, "flag": True, "name": "x", "lr": 0.1}, step)
            purges.append(fake_writer.made[-1].purge_step)
    assert purges == [3, 2, None, None]
    assert fake_writer.made[0].scalars == [("train/loss", 1.5, 3), ("learning_rate", 0.1, 3)]
    assert fake_writer.made[-1].scalars == [("valid/loss", 1.5, 3), ("valid/lr", 0.1, 3)]


@pytest.mark.parametrize("best_epoch, step", [(1, 1), (None, 3)])
def test_test_scalars_are_at_the_best_epoch_else_the_last(toy_task, tmp_saved, fake_writer, best_epoch, step):
    config = _config(toy_task, tmp_saved, log_tensorboard=True)
    with RunDir.create(config) as run:
        trainer = Trainer(config, toy_task.task_cls(config), run=run)
        trainer.epoch, trainer.best_epoch = 3, best_epoch          # no best.pt: the model is tested as it is
        trainer.test()
    assert {s for _, _, s in fake_writer.made[-1].scalars} == {step}


def test_move_to_reaches_tensors_inside_lists_and_namedtuples():
    from collections import namedtuple
    Pair = namedtuple("Pair", "x y")
    meta = torch.device("meta")                                   # another device without an accelerator
    moved = trainer_module.move_to({"a": [torch.ones(1), (torch.ones(1),)], "p": Pair(torch.ones(1), 3)}, meta)
    assert moved["a"][0].device == meta and moved["a"][1][0].device == meta and isinstance(moved["a"][1], tuple)
    assert isinstance(moved["p"], Pair) and moved["p"].x.device == meta and moved["p"].y == 3


def test_the_model_goes_to_the_trainers_device(toy_task, tmp_saved, monkeypatch):
    monkeypatch.setattr(trainer_module, "resolve_device", lambda name: torch.device("meta"))   # a device, not the CPU
    trainer = _trainer(toy_task, tmp_saved)
    assert {p.device for p in trainer.model.parameters()} == {torch.device("meta")}
