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


@pytest.fixture
def toy_task(tmp_path):
    """A throw-away task, model and dataset with their YAML layers in tmp_path.

    Registrations vanish after the test. ``trainer`` may be replaced before the first use:
    ``toy_task.set_trainer(fn)``.
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

    def trainer(config, run):
        ns.calls.append((config, run))
        return {"recall@10": 0.5}

    ns.trainer = trainer

    def set_trainer(fn):
        ns.trainer = fn

    ns.set_trainer = set_trainer
    with registry._scratch():
        registry.register_task(
            ns.task,
            trainer=lambda config, run: ns.trainer(config, run),
            overall=ns.overall,
            model_dir=root / "model",
            dataset_dir=root / "dataset",
            path_loader_ok=True,
        )
        ns.model_cls = registry.register_model(ns.model, ns.task)(type(ns.model, (), {}))
        registry.register_dataset(ns.dataset, task=ns.task, loader=lambda config: None, description="toy data")
        yield ns
