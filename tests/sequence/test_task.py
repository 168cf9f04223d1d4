import json

import pytest

import run
from graphattn.config import Config
from graphattn.training import RunDir, Trainer
from sequence.task import trim_prediction

from .conftest import TINY

TSP_TINY = {**{k: v for k, v in TINY.items() if k not in ("n_min", "n_max", "test_n")}, "tsp_n": 5}


def test_trim_prediction():
    assert trim_prediction([1, 2, 1, 0, -1]) == [1, 2, 1, 0]
    assert trim_prediction([1, 2, 3]) == [1, 2, 3]        # never stopped: kept whole, so it cannot match
    assert trim_prediction([0, 2, 0]) == [0]


def test_pointer_net_on_convex_hull_end_to_end(tmp_path):
    cfg = Config("PointerNet", "convex-hull", config_dict={**TINY, "epochs": 2, "checkpoint_dir": str(tmp_path)})
    run_dir = RunDir.create(cfg)
    try:
        test = Trainer.from_config(cfg, run_dir).fit()
    finally:
        run_dir.close()
    assert set(test) == {"accuracy", "area_coverage", "area_valid", "fail_rate"}
    assert 0 <= test["accuracy"] <= 1 and 0 <= test["area_valid"] <= 1
    assert test["area_coverage"] == pytest.approx(test["area_valid"] * (1 - test["fail_rate"]))
    assert 0 <= test["fail_rate"] <= 1
    assert (run_dir.path / "best.pt").is_file() and (run_dir.path / "last.pt").is_file()
    history = json.loads((run_dir.path / "metrics.json").read_text())
    assert [r["epoch"] for r in history["train"]] == [1, 2]
    assert history["train"][0]["step_nll"] > 0


def test_task_state_restores_the_shuffle_order():
    from sequence.task import SequenceTask

    task = SequenceTask(Config("PointerNet", "convex-hull", config_dict=TINY))
    state = task.state_dict()
    first = [b["points"] for b in task.batches("train")]
    task.load_state_dict(state)
    again = [b["points"] for b in task.batches("train")]
    assert len(first) == 4 and all((a == b).all() for a, b in zip(first, again))


def test_run_py_trains_pointer_net(tmp_path, capsys):
    argv = ["--model", "PointerNet", "--dataset", "convex-hull", "--epochs=1", f"--checkpoint_dir={tmp_path}",
            *[f"--{k}={v}" for k, v in TINY.items()]]
    assert run.main(argv) == 0
    out = capsys.readouterr().out
    assert "decode_mask: polygon" in out and out.rstrip().splitlines()[-1].startswith("Run folder: ")


def test_bad_decode_mask_and_valid_metric(tmp_path):
    with pytest.raises(ValueError, match="decode_mask: expected one of none, polygon, tour"):
        Trainer.from_config(Config("PointerNet", "convex-hull", config_dict={**TINY, "decode_mask": "hull"}))
    with pytest.raises(ValueError, match="valid_metric: 'area' is not computed"):
        Trainer.from_config(Config("PointerNet", "convex-hull", config_dict={**TINY, "valid_metric": "area"}))


def test_beam_decoding_at_evaluation_and_bad_beam_size():
    from sequence.task import SequenceTask

    with pytest.raises(ValueError, match="beam_size: expected an int >= 1"):
        SequenceTask(Config("PointerNet", "convex-hull", config_dict={**TINY, "beam_size": 0}))
    greedy = Trainer.from_config(Config("PointerNet", "convex-hull", config_dict=TINY))
    beam = Trainer.from_config(Config("PointerNet", "convex-hull", config_dict={**TINY, "beam_size": 3}))
    beam.model.load_state_dict(greedy.model.state_dict())
    assert "beam search (beam 3)" in beam.task.describe()
    one = beam.task.predict(beam.model, "test")
    beam.task.beam_size = 1
    assert beam.task.predict(beam.model, "test") == greedy.task.predict(greedy.model, "test")
    assert all(p[-1] == 0 for p in one) and beam.task.mode == "max"


def test_pointer_net_on_tsp_end_to_end(tmp_path):
    cfg = Config("PointerNet", "tsp", config_dict={**TSP_TINY, "epochs": 2, "beam_size": 2, "train_mask": True,
                                                   "checkpoint_dir": str(tmp_path), "tsp_cache": False})
    run_dir = RunDir.create(cfg)
    try:
        trainer = Trainer.from_config(cfg, run_dir)
        assert trainer.task.mode == "min" and trainer.task.metric == "tour_length"
        test = trainer.fit()
    finally:
        run_dir.close()
    assert set(test) == {"accuracy", "tour_length", "target_length", "gap", "infeasible"}
    assert test["infeasible"] == 0                                   # the tour mask allows feasible tours only
    assert test["tour_length"] >= test["target_length"] - 1e-6 and test["gap"] >= -1e-6
