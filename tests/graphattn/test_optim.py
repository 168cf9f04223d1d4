"""The ``onecycle`` schedule against torch's OneCycleLR, its state, and scheduler-name errors."""
import copy
import math

import pytest
import torch

from graphattn.config import Config
from graphattn.training import MemoryRun, StepSchedule, Trainer, lr_factor
from graphattn.training.optim import one_cycle


def _groups(model, lr):
    """Two parameter groups with different peak rates (OneCycleLR keeps one max_lr per group)."""
    return [{"params": [model.weight], "lr": lr}, {"params": [model.bias], "lr": lr / 3}]


OPTIMIZERS = {
    "adamw": lambda m: torch.optim.AdamW(_groups(m, 2e-3), weight_decay=0.05),
    "adam": lambda m: torch.optim.Adam(_groups(m, 1e-2)),
    "sgd": lambda m: torch.optim.SGD(_groups(m, 0.1), momentum=0.9),
}


def _momenta(opt):
    return [g["betas"][0] if "betas" in g else g["momentum"] for g in opt.param_groups]


def _assert_same(ours, theirs, where):
    for key, get in (("lr", lambda o: [g["lr"] for g in o.param_groups]), ("momentum", _momenta)):
        for a, b in zip(get(ours), get(theirs)):
            assert math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0), f"{where}: {key} {a!r} != torch {b!r}"


def _twins(name):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    twin = copy.deepcopy(model)
    return model, OPTIMIZERS[name](model), twin, OPTIMIZERS[name](twin)


def _train_step(model, opt, k):
    loss = (model(torch.full((4, 3), 0.1 * k)) - 1).square().mean()
    opt.zero_grad()
    loss.backward()
    opt.step()


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("epochs, steps, pct_start", [(3, 7, 0.3), (5, 4, 0.1), (2, 10, 0.15), (1, 13, 0.5),
                                                      (4, 3, 0.0)])
def test_onecycle_equals_torch_at_every_step(name, epochs, steps, pct_start):
    model, opt, twin, twin_opt = _twins(name)
    ours = StepSchedule(opt, "onecycle", epochs, 0, pct_start=pct_start)
    theirs = torch.optim.lr_scheduler.OneCycleLR(twin_opt, max_lr=[g["lr"] for g in twin_opt.param_groups],
                                                 total_steps=epochs * steps, pct_start=pct_start)
    k = 0
    for epoch in range(epochs):
        ours.start_epoch(steps)
        for _ in range(steps):
            _assert_same(opt, twin_opt, f"epoch {epoch} step {k}")
            _train_step(model, opt, k)
            _train_step(twin, twin_opt, k)
            ours.step()
            theirs.step()
            k += 1
    _assert_same(opt, twin_opt, "after the last step")
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), twin.parameters()))


def test_onecycle_pct_start_from_warmup_epochs_else_torch_default():
    opt = torch.optim.AdamW(torch.nn.Linear(2, 1).parameters(), lr=1e-3)
    assert StepSchedule(opt, "onecycle", 10, 1).pct_start == 0.1
    assert StepSchedule(opt, "onecycle", 8, 2).pct_start == 0.25
    assert StepSchedule(opt, "onecycle", 8, 0).pct_start == 0.3
    assert StepSchedule(opt, "onecycle", 8, 2, pct_start=0.15).pct_start == 0.15
    assert StepSchedule(opt, "cosine", 8, 2).pct_start is None


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("stop_after", [5, 8, 13])  # mid-epoch, at an epoch boundary, in the decay
def test_onecycle_resumes_from_its_state_dict_exactly(name, stop_after):
    epochs, steps = 4, 4
    model, opt, twin, twin_opt = _twins(name)
    straight = StepSchedule(opt, "onecycle", epochs, 1, pct_start=0.15)
    first = StepSchedule(twin_opt, "onecycle", epochs, 1, pct_start=0.15)
    seen = []
    for k in range(epochs * steps):
        if k % steps == 0:
            straight.start_epoch(steps)
        _train_step(model, opt, k)
        straight.step()
        seen.append(([g["lr"] for g in opt.param_groups], _momenta(opt)))
    for k in range(stop_after):
        if k % steps == 0:
            first.start_epoch(steps)
        _train_step(twin, twin_opt, k)
        first.step()
    saved_model, saved_opt, saved_sched = (copy.deepcopy(x.state_dict()) for x in (twin, twin_opt, first))

    torch.manual_seed(1)                                  # a fresh model and optimiser, then the saved state
    resumed = torch.nn.Linear(3, 2)
    resumed_opt = OPTIMIZERS[name](resumed)
    schedule = StepSchedule(resumed_opt, "onecycle", epochs, 1)   # pct_start 0.25 until the state says 0.15
    resumed.load_state_dict(saved_model)
    resumed_opt.load_state_dict(saved_opt)
    schedule.load_state_dict(saved_sched)
    assert schedule.state_dict() == saved_sched == {"last_step": stop_after, "base_lrs": first.base_lrs, "pct_start": 0.15}
    schedule.start_epoch(steps)
    for k in range(stop_after, epochs * steps):
        if k % steps == 0 and k != stop_after:
            schedule.start_epoch(steps)
        _train_step(resumed, resumed_opt, k)
        schedule.step()
        assert ([g["lr"] for g in resumed_opt.param_groups], _momenta(resumed_opt)) == seen[k], k
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), resumed.parameters()))


def test_trainer_with_onecycle_follows_torch_and_resumes_exactly(toy_task, tmp_saved):
    config = Config(toy_task.model, toy_task.dataset, config_dict={
        "epochs": 4, "show_progress": False, "device": "cpu", "checkpoint_dir": str(tmp_saved), "seed": 5,
        "learning_rate": 0.05, "optimizer": "adamw", "scheduler": "onecycle", "warmup_epochs": 1})
    trainer = Trainer.from_config(config, MemoryRun())
    assert trainer.schedules["train"].pct_start == 0.25
    opt = trainer.optimizers["train"]
    twin = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=0.05)
    steps = math.ceil(len(trainer.task.data["train"][0]) / trainer.task.batch_size)
    reference = torch.optim.lr_scheduler.OneCycleLR(twin, max_lr=0.05, total_steps=4 * steps, pct_start=0.25)
    original_step = opt.step

    def step(*args, **kwargs):                            # the rates the trainer's optimiser steps with
        _assert_same(opt, twin, f"step {reference.last_epoch}")
        twin.step()
        reference.step()
        return original_step(*args, **kwargs)

    opt.step = step
    trainer.train_epoch()
    trainer.train_epoch()
    saved = copy.deepcopy(trainer.state_dict())
    straight = [trainer.train_epoch()["loss"] for _ in range(2)]
    assert reference.last_epoch == 4 * steps

    resumed = Trainer(config, toy_task.task_cls(config))
    resumed.load_state_dict(saved)
    assert [resumed.train_epoch()["loss"] for _ in range(2)] == straight
    assert all(torch.equal(p, q) for p, q in zip(trainer.model.parameters(), resumed.model.parameters()))


def test_existing_kinds_keep_their_state():
    opt = torch.optim.Adam(torch.nn.Linear(2, 1).parameters(), lr=1e-3)
    for kind in ("none", "cosine"):
        schedule = StepSchedule(opt, kind, 3, 1)
        schedule.start_epoch(2)
        schedule.step()
        assert schedule.state_dict() == {"last_step": 1, "base_lrs": [1e-3]}
        assert opt.param_groups[0]["lr"] == 1e-3 * lr_factor(1, 6, 2, kind)
        assert opt.param_groups[0]["betas"] == (0.9, 0.999)


def test_unknown_scheduler_names_and_bad_onecycle_settings_are_errors(toy_task, tmp_saved):
    opt = torch.optim.AdamW(torch.nn.Linear(2, 1).parameters(), lr=1e-3)
    for kind in ("step", "OneCycle", "one_cycle", ""):
        with pytest.raises(ValueError, match=r"scheduler: expected one of none, cosine, onecycle, got"):
            StepSchedule(opt, kind, 3, 0)
        with pytest.raises(ValueError, match="scheduler: expected one of"):
            lr_factor(0, 10, 0, kind)
    config = Config(toy_task.model, toy_task.dataset, config_dict={
        "epochs": 2, "show_progress": False, "device": "cpu", "checkpoint_dir": str(tmp_saved), "scheduler": "cycle"})
    with pytest.raises(ValueError, match="scheduler: expected one of none, cosine, onecycle, got 'cycle'"):
        Trainer.from_config(config, MemoryRun())
    with pytest.raises(ValueError, match="onecycle.*not a factor"):
        lr_factor(0, 10, 0, "onecycle")
    for pct in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match=r"pct_start .* must be in \[0, 1\)"):
            StepSchedule(opt, "onecycle", 4, 0, pct_start=pct)
    with pytest.raises(ValueError, match=r"pct_start .* must be in \[0, 1\)"):
        StepSchedule(opt, "onecycle", 4, 4)                 # warm-up as long as the run
    with pytest.raises(ValueError, match="cycles the momentum, which Adagrad does not have"):
        StepSchedule(torch.optim.Adagrad(torch.nn.Linear(2, 1).parameters()), "onecycle", 3, 0)
    with pytest.raises(ValueError, match="past the schedule"):
        one_cycle(11, 10, 0.3, 1e-3)
    schedule = StepSchedule(opt, "onecycle", 2, 0, pct_start=0.25)
    with pytest.raises(ValueError, match="warm-up of .* = 1 step has no length"):
        schedule.start_epoch(2)                              # 0.25 x 4 steps: torch divides by zero here
