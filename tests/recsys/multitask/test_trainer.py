import json

import pytest

import recsys.multitask  # noqa: F401
from graphattn.config import Config
from graphattn.training import RunDir, Trainer, load_checkpoint
from recsys.multitask.data import synthetic_three_task, write_multitask_csv


@pytest.fixture
def csv_dir(tmp_path):
    data = synthetic_three_task(n_samples=240, n_users=12, n_items=30, num_fields=5, seq_len=4, seed=2)
    return write_multitask_csv(data, tmp_path / "tiny-mtl")


def _config(csv_dir, tmp_saved, **extra):
    return Config("SharedBottom", str(csv_dir), config_dict={
        "categorical_fields": ["user_id", "item_id", "f2", "f3", "f4"],
        "sequence_fields": {"click": 4, "like": 4, "share": 4}, "label_fields": ["cross", "overlap", "mixed"],
        "user_field": "user_id", "shared_vocab": {"item_id": "item", "click": "item", "like": "item", "share": "item"},
        "embedding_size": 4, "bottom_hidden": [8], "tower_hidden": [4], "train_batch_size": 64,
        "device": "cpu", "show_progress": False, "checkpoint_dir": str(tmp_saved), **extra})


def test_trainer_on_a_csv_folder_logs_checkpoints_and_resumes(csv_dir, tmp_saved):
    config = _config(csv_dir, tmp_saved, epochs=2)
    with RunDir.create(config) as run:
        test = Trainer.from_config(config, run).fit()
        path = run.path
    for t in ("cross", "overlap", "mixed"):
        assert 0.0 <= test[f"auc_{t}"] <= 1.0 and f"gauc_{t}" in test
    assert test["mean_auc"] == pytest.approx(sum(test[f"auc_{t}"] for t in ("cross", "overlap", "mixed")) / 3)
    history = json.loads((path / "metrics.json").read_text())
    assert [r["epoch"] for r in history["train"]] == [1, 2]
    assert history["test"]["mean_auc"] == pytest.approx(test["mean_auc"])
    assert load_checkpoint(path / "last.pt")["epoch"] == 2
    assert (path / "best.pt").is_file()
    # resume: one more epoch continues at epoch 3
    config = _config(csv_dir, tmp_saved, epochs=3, resume=str(path))
    with RunDir.open(path, config) as run:
        Trainer.from_config(config, run).fit()
    history = json.loads((path / "metrics.json").read_text())
    assert [r["epoch"] for r in history["train"]] == [1, 2, 3]


def test_unknown_valid_metric_is_rejected(csv_dir, tmp_saved):
    config = _config(csv_dir, tmp_saved, epochs=1, valid_metric="recall@20")
    with RunDir.create(config) as run, pytest.raises(ValueError, match="valid_metric: 'recall@20'"):
        Trainer.from_config(config, run).fit()


def test_yaml_layers():
    config = Config("INFNet", "mtl-synthetic")
    assert config["learning_rate"] == 0.003          # dataset yaml over the task's overall.yaml
    assert config["num_cat_proxies"] == 4 and config["gate_proxies"] == "updated"
    with pytest.raises(ValueError, match="unknown config key"):
        Config("MMoE", "ml-100k-mtl", config_dict={"num_expert": 3})
