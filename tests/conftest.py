import os

os.environ.setdefault("MPLBACKEND", "Agg")  # before anything imports matplotlib.pyplot

import itertools  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

# Tests use tiny tensors: one thread avoids thread start-up and oversubscription costs when the
# machine is shared (measured: a tiny forward pass took 1.67 s with 2 threads under load, 2 ms with 1).
torch.set_num_threads(1)

_toy_ids = itertools.count()


@pytest.fixture
def tmp_saved(tmp_path):
    """A fresh checkpoint_dir for runs made by a test."""
    path = tmp_path / "saved"
    path.mkdir()
    return path


def _toy_classes():
    from torch import nn

    from graphattn.training import SizedBatches, Task

    class ToyModel(nn.Module):
        """A linear regressor with dropout (so that resuming must restore the global generator)."""

        def __init__(self, config, data):
            super().__init__()
            self.net = nn.Sequential(nn.Dropout(0.1), nn.Linear(4, 1))

        def forward(self, x):
            return self.net(x)

    class ToyTask(Task):
        """Regression of y = x @ w + noise; batches shuffled by a generator the task owns; judged by mse."""

        batch_size = 8

        def load_data(self, config):
            g = torch.Generator().manual_seed(0)
            x = torch.randn(96, 4, generator=g)
            y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1 * torch.randn(96, 1, generator=g)
            return {"train": (x[:64], y[:64]), "valid": (x[64:80], y[64:80]), "test": (x[80:], y[80:])}

        def __init__(self, config, data=None):
            super().__init__(config, data)
            self.generator = torch.Generator().manual_seed(int(config["seed"]))

        metric = "mse"
        mode = "min"

        def metric_names(self):
            return ["mse", "mae"]

        def batches(self, phase):
            x, y = self.data["train"]
            order = torch.randperm(len(x), generator=self.generator)
            chunks = [order[i:i + self.batch_size] for i in range(0, len(x), self.batch_size)]
            return SizedBatches(((x[c], y[c]) for c in chunks), len(chunks))

        def loss(self, model, batch, phase):
            x, y = batch
            loss = torch.nn.functional.mse_loss(model(x), y)
            return loss, {"rmse": loss.sqrt().item()}

        def evaluate(self, model, split):
            x, y = self.data[split]
            err = model(x.to(self.device)).cpu() - y
            return {"mse": err.pow(2).mean().item(), "mae": err.abs().mean().item()}

        def state_dict(self):
            return {"generator": self.generator.get_state()}

        def load_state_dict(self, state):
            self.generator.set_state(state["generator"])

    return ToyModel, ToyTask


@pytest.fixture
def toy_task(tmp_path):
    """A throw-away regression task (a real :class:`graphattn.training.Task`), model and dataset, with their
    YAML layers in tmp_path. Registrations vanish after the test; ``calls`` lists the configs the task was
    built with; ``task_cls`` / ``model_cls`` are the classes.
    """
    from graphattn import registry

    n = next(_toy_ids)
    root = tmp_path / f"toy{n}"
    (root / "model").mkdir(parents=True)
    (root / "dataset").mkdir()
    ns = SimpleNamespace(task=f"toytask{n}", model=f"ToyModel{n}", dataset=f"toy-data{n}", root=root)
    ns.overall = root / "overall.yaml"
    ns.overall.write_text(
        "level: task            # (str) which layer set this\n"
        "hidden_size: 8         # (int) width\n"
        "dropout: 0.5           # (float) rate\n"
        "topk: [10, 20]         # (list) cut-offs\n"
        "use_bias: true         # (bool)\n"
        "pretrained: null       # (str) optional path\n"
        "learning_rate: 0.01    # (float) overrides the core default\n"
    )
    (root / "model" / f"{ns.model}.yaml").write_text("level: model\nhidden_size: 16\n")
    (root / "dataset" / f"{ns.dataset}.yaml").write_text("level: dataset\n")
    ns.calls = []
    model_cls, base_task = _toy_classes()

    class Recorded(base_task):
        def __init__(self, config, data=None):
            ns.calls.append(config)
            super().__init__(config, data)

    ns.task_cls = Recorded
    with registry._scratch():
        registry.register_task(
            ns.task,
            task=Recorded,
            overall=ns.overall,
            model_dir=root / "model",
            dataset_dir=root / "dataset",
            path_loader_ok=True,
        )
        ns.model_cls = registry.register_model(ns.model, ns.task)(type(ns.model, (model_cls,), {}))
        registry.register_dataset(ns.dataset, task=ns.task, loader=lambda config: None, description="toy data")
        yield ns
