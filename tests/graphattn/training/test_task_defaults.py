"""graphattn.training.Task's defaults, each checked directly (the Trainer tests reach them only through full runs)."""
import torch
from torch import nn

from graphattn.training import Task
from graphattn.training import task as task_module


class _Task(Task):
    phases = ("a", "b")
    fused_optimizer = False


def test_a_task_starts_on_the_cpu_and_setup_moves_it():
    task = _Task({}, data=[1, 2])
    assert task.device == torch.device("cpu")
    task.setup(nn.Linear(1, 1), torch.device("meta"))
    assert task.device == torch.device("meta")


def test_describe_is_the_data_as_text():
    assert _Task({}, data={"users": 3}).describe() == "{'users': 3}"


def test_the_default_optimizers_share_one_and_pass_the_tasks_fused_flag(monkeypatch):
    calls = []

    def build(config, params, **kwargs):
        calls.append(kwargs)
        return torch.optim.SGD(params, lr=0.1)
    monkeypatch.setattr(task_module, "build_optimizer", build)
    model = nn.Linear(2, 1)
    optimizers = _Task({}, data=[]).optimizers(model)
    assert list(optimizers) == ["a", "b"] and optimizers["a"] is optimizers["b"]
    assert calls == [{"fused": False}]
