import json

import pytest

import recsys.sequential  # noqa: F401
from graphattn.config import Config
from graphattn.training import RunDir, Trainer

TINY = {"drift_n_users": 60, "drift_n_clusters": 5, "drift_cluster_size": 4, "drift_n_steps": 24,
        "drift_max_history": 12, "show_progress": False, "embedding_size": 8, "max_len": 8, "time_dim": 8,
        "latent_dim": 8}


def test_sequential_end_to_end_and_resume(tmp_path):
    cfg = Config("IDNP", "drifting-interest", config_dict={**TINY, "epochs": 2, "checkpoint_dir": str(tmp_path)})
    run = RunDir.create(cfg)
    try:
        test = Trainer.from_config(cfg, run).fit()
    finally:
        run.close()
    assert set(test) == {"hit@10", "ndcg@10"} and 0 <= test["ndcg@10"] <= test["hit@10"] <= 1
    assert (run.path / "best.pt").is_file() and (run.path / "last.pt").is_file()
    history = json.loads((run.path / "metrics.json").read_text())
    assert [r["epoch"] for r in history["train"]] == [1, 2]
    cfg2 = Config("IDNP", "drifting-interest",
                  config_dict={**TINY, "epochs": 3, "checkpoint_dir": str(tmp_path), "resume": str(run.path)})
    run2 = RunDir.open(run.path, cfg2)
    try:
        Trainer.from_config(cfg2, run2).fit()
    finally:
        run2.close()
    history = json.loads((run.path / "metrics.json").read_text())
    assert [r["epoch"] for r in history["train"]] == [1, 2, 3]   # resumed at epoch 3


def test_unknown_valid_metric_is_reported(tmp_path):
    cfg = Config("GRU4Rec", "drifting-interest", config_dict={
        **{k: v for k, v in TINY.items() if k not in ("time_dim", "latent_dim")}, "epochs": 1,
        "checkpoint_dir": str(tmp_path), "valid_metric": "recall@20"})
    run = RunDir.create(cfg)
    try:
        with pytest.raises(ValueError, match="valid_metric"):
            Trainer.from_config(cfg, run).fit()
    finally:
        run.close()
