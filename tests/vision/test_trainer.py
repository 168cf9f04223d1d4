import json
import math

import numpy as np
import pytest
import scipy.stats
import torch
from torch import nn

import vision  # noqa: F401  (registers the task and the digits dataset)
from graphattn import registry
from graphattn.config import Config
from graphattn.training import RunDir, Trainer, load_checkpoint, lr_factor
from vision.base import IGNORE_INDEX, VisionData, VisionModel, split_indices
from vision.metrics import compute_metrics


class _Probe(VisionModel):
    """Linear classifier with dropout (so that resuming must restore the random generators too)."""

    def __init__(self, config, data):
        super().__init__(config, data)
        size = data.meta["image_size"]
        self.net = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(size * size, data.num_classes))

    def forward(self, x):
        return self.net(x)


@pytest.fixture
def probe():
    with registry._scratch():
        registry.register_model("TestProbe", task="vision")(_Probe)
        yield "TestProbe"


def _config(model, tmp_saved, **kw):
    base = {"epochs": 3, "checkpoint_dir": str(tmp_saved), "show_progress": False, "device": "cpu", "learning_rate": 0.01, "seed": 3}
    base.update(kw)
    return Config(model, "digits", config_dict=base)


def _run(config):
    with RunDir.create(config) as run:
        return Trainer.from_config(config, run).fit(), run.path


# --------------------------------------------------------------------------- metrics and schedule


def test_accuracy_and_macro_f1_by_hand():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0], [0.0, 5.0], [1.0, 0.0]])
    targets = torch.tensor([0, 1, 1, 1, IGNORE_INDEX])  # predictions 0, 1, 0, 1 (last ignored)
    m = compute_metrics(logits, targets, ["accuracy", "macro_f1"], "classification")
    assert m["accuracy"] == pytest.approx(3 / 4)
    # class 0: tp 1, fp 1, fn 0 -> 2/3 ; class 1: tp 2, fp 0, fn 1 -> 4/5
    assert m["macro_f1"] == pytest.approx((2 / 3 + 4 / 5) / 2)


def test_regression_metrics_match_scipy_with_ties():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 5, 40).astype(float)  # many ties
    p = t + rng.normal(0, 1.0, 40)
    p[:5] = p[0]  # ties in the predictions too
    m = compute_metrics(torch.tensor(p), torch.tensor(t), ["srcc", "plcc", "rmse", "mae"], "regression")
    assert m["srcc"] == pytest.approx(scipy.stats.spearmanr(p, t).statistic, abs=1e-12)
    assert m["plcc"] == pytest.approx(scipy.stats.pearsonr(p, t).statistic, abs=1e-12)
    assert m["rmse"] == pytest.approx(math.sqrt(np.mean((p - t) ** 2)))
    assert m["mae"] == pytest.approx(np.mean(np.abs(p - t)))


def test_metric_of_the_wrong_task_is_an_error():
    with pytest.raises(ValueError, match="not a classification metric"):
        compute_metrics(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), ["srcc"], "classification")


def test_lr_factor_warmup_then_cosine():
    assert lr_factor(0, 10, 2, "cosine") == pytest.approx(0.5)
    assert lr_factor(1, 10, 2, "cosine") == pytest.approx(1.0)
    assert lr_factor(2, 10, 2, "cosine") == pytest.approx(1.0)
    assert lr_factor(6, 10, 2, "cosine") == pytest.approx(0.5)  # half-way through the 8 decay steps
    assert lr_factor(10, 10, 2, "cosine") == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(7, 10, 2, "none") == 1.0
    with pytest.raises(ValueError, match="scheduler"):
        lr_factor(0, 10, 0, "step")


# --------------------------------------------------------------------------- data


def test_split_indices_disjoint_stratified_seeded():
    labels = np.repeat(np.arange(4), 50)
    a = split_indices(200, 0.1, 0.2, seed=1, labels=labels)
    b = split_indices(200, 0.1, 0.2, seed=1, labels=labels)
    c = split_indices(200, 0.1, 0.2, seed=2, labels=labels)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[2], c[2])
    assert sorted(np.concatenate(a).tolist()) == list(range(200))
    assert [len(x) for x in a] == [140, 20, 40]
    assert np.bincount(labels[a[2]]).tolist() == [10, 10, 10, 10]
    with pytest.raises(ValueError, match="valid_ratio"):
        split_indices(10, 0.6, 0.5, seed=0)


def test_digits_loader_upsamples_and_standardises(probe):
    config = Config(probe, "digits", config_dict={"image_size": 16})
    data = registry.get_dataset("digits", "vision").loader(config)
    assert isinstance(data, VisionData) and data.num_classes == 10
    x, y = data.train[0]
    assert x.shape == (1, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert len(data.train) + len(data.valid) + len(data.test) == 1797
    assert len(data.test) == pytest.approx(0.2 * 1797, abs=10)
    xs = data.train.tensors[0]
    assert float(xs.mean()) == pytest.approx(0.0, abs=1e-5) and float(xs.std()) == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(ValueError, match="image_size"):
        registry.get_dataset("digits", "vision").loader(Config(probe, "digits", config_dict={"image_size": 4}))


def test_vision_data_rejects_bad_fields():
    ds = torch.utils.data.TensorDataset(torch.zeros(2, 1), torch.zeros(2))
    with pytest.raises(ValueError, match="task_type"):
        VisionData(ds, ds, ds, 2, task_type="segmentation")
    with pytest.raises(ValueError, match="num_classes"):
        VisionData(ds, ds, ds, 0)


# --------------------------------------------------------------------------- training runs


def test_trains_digits_writes_run_files_and_resumes_exactly(probe, tmp_saved):
    straight, straight_path = _run(_config(probe, tmp_saved, epochs=3, scheduler="none"))
    assert straight["accuracy"] > 0.85  # a linear probe on 8x8 digits; chance is 0.1
    for name in ("metrics.json", "best.pt", "last.pt", "curves.png", "config.yaml"):
        assert (straight_path / name).is_file(), name
    history = json.loads((straight_path / "metrics.json").read_text())
    assert history["test"]["accuracy"] == pytest.approx(straight["accuracy"])
    assert history["train"][-1]["loss"] < history["train"][0]["loss"]

    # 1 epoch, then resume the same folder up to 3: identical to the straight run (dropout included)
    _, part_path = _run(_config(probe, tmp_saved, epochs=1, scheduler="none"))
    config = _config(probe, tmp_saved, epochs=3, scheduler="none", resume=str(part_path))
    with RunDir.open(part_path, config) as run:
        resumed = Trainer.from_config(config, run).fit()
    assert resumed == straight
    a = load_checkpoint(straight_path / "last.pt")["model"]
    b = load_checkpoint(part_path / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    history = json.loads((part_path / "metrics.json").read_text())
    assert [row["epoch"] for row in history["train"]] == [1, 2, 3]


def test_early_stopping_without_learning(probe, tmp_saved):
    _, path = _run(_config(probe, tmp_saved, epochs=20, learning_rate=0.0, stopping_step=2, train_batch_size=512))
    history = json.loads((path / "metrics.json").read_text())
    assert len(history["train"]) == 3  # first evaluation is the best, then two without improvement


def test_regression_metric_on_classification_data_is_an_error(probe, tmp_saved):
    with pytest.raises(ValueError, match="do not apply"):
        _run(_config(probe, tmp_saved, metrics=["srcc"]))
    with pytest.raises(ValueError, match="valid_metric"):
        _run(_config(probe, tmp_saved, valid_metric="macro_f1"))


def test_model_must_be_a_vision_model(tmp_saved):
    with registry._scratch():
        @registry.register_model("NotVision", task="vision")
        class NotVision(nn.Module):
            def __init__(self, config, data):
                super().__init__()

        with pytest.raises(TypeError, match="VisionModel"):
            _run(_config("NotVision", tmp_saved))


def test_digits_shift_augmentation_is_a_translation(probe):
    import torch.nn.functional as F

    config = Config(probe, "digits", config_dict={"augment_shift": 2})
    data = registry.get_dataset("digits", "vision").loader(config)
    fill = data.train.fill
    torch.manual_seed(0)
    for i in range(5):
        x, _ = data.train[i]
        orig = data.train.images[i]
        padded = F.pad(orig, (2, 2, 2, 2), value=fill)
        matches = [(dy, dx) for dy in range(5) for dx in range(5) if torch.equal(padded[:, dy : dy + 8, dx : dx + 8], x)]
        assert matches, "the augmented image is not a translate of the original"
    assert len(data.valid) and isinstance(data.valid, torch.utils.data.TensorDataset)  # never augmented


def test_an_empty_split_is_named_before_any_loader_is_built(probe, tmp_saved):
    from torch.utils.data import TensorDataset
    from vision.task import VisionTask

    config = _config(probe, tmp_saved)
    full = TensorDataset(torch.zeros(4, 1, 8, 8), torch.zeros(4, dtype=torch.long))
    empty = TensorDataset(torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long))
    for splits, named in (((empty, full, full), "the train split"), ((full, full, empty), "the test split")):
        data = VisionData(*splits, num_classes=2, meta={"image_size": 8})
        with pytest.raises(ValueError, match=rf"dataset 'digits': {named}\(s\) are empty \(train/valid/test = "):
            VisionTask(config, data)
