import datetime
import json
import random
import re
import time

import numpy as np
import pytest
import torch

from graphattn.config import Config, load_yaml
from graphattn.training import (
    EarlyStopping,
    RunDir,
    capture_rng_state,
    find_checkpoint,
    format_metrics_table,
    load_checkpoint,
    progress,
    resolve_device,
    restore_rng_state,
    seed_everything,
)


@pytest.fixture
def config(toy_task, tmp_saved):
    return Config(toy_task.model, toy_task.dataset, config_dict={"checkpoint_dir": str(tmp_saved)})


def test_seed_everything_repeats_all_generators():
    def draw():
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    seed_everything(7)
    first = draw()
    seed_everything(7)
    assert draw() == first
    seed_everything(8)
    assert draw() != first
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    with pytest.raises(TypeError, match="seed must be an int"):
        seed_everything("7")


def test_rng_state_roundtrip_through_checkpoint(tmp_path, config):
    seed_everything(3)
    state = capture_rng_state()
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    with RunDir.create(config) as run:
        path = run.save_checkpoint({"rng": state})
    seed_everything(99)
    restore_rng_state(load_checkpoint(path)["rng"])
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ValueError, match="expected auto, cpu"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_run_dir_layout_and_unique_names(config, tmp_saved, toy_task):
    with RunDir.create(config) as a, RunDir.create(config) as b:
        assert a.path != b.path  # same second, still two folders
        assert a.path.parent == tmp_saved
        assert re.fullmatch(rf"{toy_task.model}-{toy_task.dataset}-\d{{8}}-\d{{6}}(-\d+)?", a.path.name)
        saved = load_yaml(a.path / "config.yaml")
        assert saved["model"] == toy_task.model and saved["checkpoint_dir"] == str(tmp_saved)
        a.logger.info("hello from the test")
    assert "hello from the test" in (a.path / "run.log").read_text()


def test_metrics_json_stays_valid_and_curves_are_written(config):
    with RunDir.create(config) as run:
        for epoch in range(1, 5):
            run.log_train(epoch, loss=1.0 / epoch, reg_loss=torch.tensor(0.1))
            data = json.loads((run.path / "metrics.json").read_text())
            assert data["train"][-1]["epoch"] == epoch
            run.log_metrics(epoch, "valid", {"recall@10": np.float32(0.1 * epoch), "ndcg@10": 0.05 * epoch})
        run.log_metrics(5, "valid", {"recall@10": float("nan"), "ndcg@10": 0.3})
        run.log_test({"recall@10": 0.42})
        data = json.loads((run.path / "metrics.json").read_text())
        assert [row["epoch"] for row in data["train"]] == [1, 2, 3, 4]
        assert data["train"][1] == {"epoch": 2, "loss": 0.5, "reg_loss": pytest.approx(0.1)}
        assert data["evaluations"][0] == {"epoch": 1, "split": "valid", "recall@10": pytest.approx(0.1), "ndcg@10": 0.05}
        assert data["evaluations"][-1]["recall@10"] is None  # NaN is not JSON
        assert data["test"] == {"recall@10": 0.42}
        png = run.plot_curves()
        assert png.name == "curves.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        names = sorted(p.name for p in run.path.iterdir())
        assert names == ["config.yaml", "curves.png", "metrics.json", "run.log"]  # no temp files left


def test_curves_without_history(config):
    with RunDir.create(config) as run:
        assert run.plot_curves().stat().st_size > 0


def test_checkpoint_roundtrip_with_weights_only(config):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 3, "best": 0.5,
             "stopper": EarlyStopping(2).state_dict()}
    with RunDir.create(config) as run:
        last = run.save_checkpoint(state)
        best = run.save_checkpoint(state, name="best.pt")
        assert last.name == "last.pt" and best.name == "best.pt"
        assert not [p for p in run.path.iterdir() if p.name.endswith(".tmp")]
    loaded = load_checkpoint(last)
    assert loaded["epoch"] == 3 and loaded["stopper"]["patience"] == 2
    for key, value in model.state_dict().items():
        assert torch.equal(loaded["model"][key], value)
    fresh = torch.optim.Adam(torch.nn.Linear(3, 2).parameters())
    fresh.load_state_dict(loaded["optimizer"])
    assert find_checkpoint(run.path) == last and find_checkpoint(best) == best


def test_load_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupt.pt' could not be read"):
        load_checkpoint(corrupt)

    unsafe = tmp_path / "unsafe.pt"
    torch.save({"obj": datetime.date(2020, 1, 1)}, unsafe)  # a pickled class: refused by weights_only
    with pytest.raises(ValueError, match="unsafe.pt' holds Python objects .* refused without running"):
        load_checkpoint(unsafe)
    listy = tmp_path / "list.pt"
    torch.save([1, 2], listy)
    with pytest.raises(ValueError, match="expected a dict, got list"):
        load_checkpoint(listy)
    with pytest.raises(FileNotFoundError, match="neither a run folder"):
        find_checkpoint(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="has no last.pt"):
        find_checkpoint(tmp_path)


def test_reopen_restores_history_and_checks_model(config, toy_task, tmp_saved):
    with RunDir.create(config) as run:
        run.log_train(1, loss=0.9)
        run.log_metrics(1, "valid", {"recall@10": 0.1})
    config["epochs"] = 50
    with RunDir.open(run.path, config) as again:
        assert again.history["train"] == [{"epoch": 1, "loss": 0.9}]
        again.log_train(2, loss=0.8)
    data = json.loads((run.path / "metrics.json").read_text())
    assert [row["epoch"] for row in data["train"]] == [1, 2]
    assert load_yaml(run.path / "config.yaml")["epochs"] == 50
    other = Config(toy_task.model, str(tmp_saved), config_dict={"checkpoint_dir": str(tmp_saved)})
    with pytest.raises(ValueError, match="cannot resume .* it ran dataset"):
        RunDir.open(run.path, other)
    with pytest.raises(FileNotFoundError, match="is not a run folder"):
        RunDir.open(tmp_saved)


def test_early_stopping_max_min_and_state():
    stop = EarlyStopping(patience=2, mode="max")
    assert [stop.step(v) for v in (0.1, 0.3, 0.2, 0.3)] == [True, True, False, False]
    assert stop.should_stop and stop.best == 0.3 and stop.best_step == 2
    stop = EarlyStopping(patience=2, mode="min")
    assert [stop.step(v) for v in (1.0, float("nan"), 0.5, 0.6)] == [True, False, True, False]
    assert not stop.should_stop and stop.best == 0.5
    restored = EarlyStopping(patience=2, mode="min")
    restored.load_state_dict(stop.state_dict())
    assert restored.step(0.7) is False and restored.should_stop
    with pytest.raises(ValueError, match="mode must be 'max' or 'min'"):
        EarlyStopping(3, mode="up")
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping(0)
    with pytest.raises(ValueError, match="mode 'min'"):
        EarlyStopping(2, mode="max").load_state_dict(stop.state_dict())


def test_progress_wraps_or_passes_through(capsys):
    assert list(progress(range(3), "x", enabled=False)) == [0, 1, 2]
    assert list(progress(range(3), "x", enabled=True)) == [0, 1, 2]


def test_format_metrics_table():
    text = format_metrics_table({"recall@10": 0.1, "recall@20": 0.25, "ndcg@10": 0.05, "mrr@20": 0.3, "loss": 1.5, "n": 3})
    lines = text.splitlines()
    assert lines[0].split() == ["metric", "@10", "@20"]
    assert lines[1].split() == ["mrr", "-", "0.3000"]
    assert lines[2].split() == ["ndcg", "0.0500", "-"]
    assert lines[3].split() == ["recall", "0.1000", "0.2500"]
    assert lines[5].split() == ["metric", "value"]
    assert lines[6].split() == ["loss", "1.5000"] and lines[7].split() == ["n", "3"]
    # columns line up
    assert len({line.index("@10") if "@10" in line else None for line in lines[:1]}) == 1
    assert lines[1].index("0.3000") == lines[3].index("0.2500")
    assert format_metrics_table({}) == "(no metrics)"
