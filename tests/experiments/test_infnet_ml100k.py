"""``experiments/infnet_ml100k.py --reuse``: earlier runs are taken only when every setting that shapes a run is
the same, keyed by (model, seed); anything else is refused with a message naming the file and the setting."""
from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "infnet_ml100k.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("infnet_ml100k_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _args(**changes):
    base = {"models": ["INFNet"], "seeds": [0, 1], "epochs": 2, "stopping_step": 1, "device": "cpu",
            "checkpoint_dir": None, "data_path": None, "threads": 1, "all": "{}", "infnet": "{}"}
    base.update(changes)
    return argparse.Namespace(**base)


def _earlier(tmp_path, **changes):
    recorded = vars(_args(seeds=[0], **changes))
    runs = [{"model": "INFNet", "seed": 0, "per_task": {"mean_auc": 0.7}},
            {"model": "MMoE", "seed": 0, "per_task": {"mean_auc": 0.6}}]
    path = tmp_path / "earlier.json"
    path.write_text(json.dumps({"args": recorded, "runs": runs}))
    return path


def test_runs_of_the_same_settings_are_keyed_by_model_and_seed(script, tmp_path):
    runs = script.reusable_runs(str(_earlier(tmp_path)), _args())
    assert set(runs) == {("INFNet", 0), ("MMoE", 0)}
    assert runs[("MMoE", 0)]["per_task"]["mean_auc"] == 0.6


@pytest.mark.parametrize("key, value", [("epochs", 6), ("stopping_step", 3), ("all", '{"learning_rate": 0.01}'),
                                        ("infnet", '{"residual": true}'), ("threads", 2), ("data_path", "x")])
def test_runs_made_with_another_setting_are_refused(script, tmp_path, key, value):
    path = _earlier(tmp_path, **{key: value})
    with pytest.raises(SystemExit, match=f"--reuse .*earlier.json.*{key}="):
        script.reusable_runs(str(path), _args())


def test_an_unreadable_file_is_named(script, tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(SystemExit, match="broken.json: not a readable"):
        script.reusable_runs(str(path), _args())
