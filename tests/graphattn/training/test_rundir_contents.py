"""What a run folder records: the curves figure's panels and lines, JSON conversion, and batches moved to a device."""
import logging
from collections import namedtuple

import matplotlib.font_manager
import numpy as np
import pytest
import torch

from graphattn.config import Config
from graphattn.training import MemoryRun, RunDir, move_to
from graphattn.training import rundir as rundir_module


@pytest.fixture
def run(toy_task, tmp_saved):
    config = Config(toy_task.model, toy_task.dataset, config_dict={"checkpoint_dir": str(tmp_saved)})
    with RunDir.create(config) as run:
        yield run


def _figure(run, monkeypatch):
    """Call plot_curves and return the figure it saved (and the dpi) instead of reading the PNG."""
    saved = {}

    def fake_save(fig, path, dpi=100):
        saved.update(fig=fig, path=path, dpi=dpi)
        return path

    monkeypatch.setattr(rundir_module, "save_figure", fake_save)
    out = run.plot_curves()
    assert out == saved["path"] == run.path / "curves.png" and saved["dpi"] == 100
    return saved["fig"]


def _lines(ax):
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()}


def test_curves_have_one_loss_panel_and_one_panel_per_metric_with_its_cutoffs_in_order(run, monkeypatch):
    run.log_train(1, loss=1.0, reg=0.5, note="text")
    run.log_train(2, loss=0.5)
    run.log_metrics(1, "valid", {"recall@20": 0.2, "recall@5": 0.1, "mrr": 0.3, "flag": True})
    run.log_metrics(1, "test", {"recall@20": 0.9})          # not the validation split: not drawn
    run.log_metrics(2, "valid", {"recall@20": 0.4, "recall@5": 0.2, "mrr": 0.35, "flag": False})
    fig = _figure(run, monkeypatch)
    axes = fig.get_axes()
    assert len(axes) == 3                                    # 1 + 2 panels, one row of three
    assert type(fig.get_layout_engine()).__name__ == "ConstrainedLayoutEngine"
    assert fig.get_size_inches() == pytest.approx((13.5, 3.2))
    loss, mrr, recall = axes
    assert loss.get_title() == "training loss" and loss.get_xlabel() == "epoch"
    assert _lines(loss) == {"loss": ([1, 2], [1.0, 0.5]), "reg": ([1], [0.5])}
    assert [t.get_text() for t in loss.get_legend().get_texts()] == ["loss", "reg"]
    assert mrr.get_title() == "valid mrr" and mrr.get_xlabel() == "epoch" and mrr.get_legend() is None
    assert _lines(mrr) == {"mrr": ([1, 2], [0.3, 0.35])}
    assert recall.get_title() == "valid recall" and recall.get_xlabel() == "epoch"
    assert [line.get_label() for line in recall.get_lines()] == ["recall@5", "recall@20"]   # by k, not as text
    assert _lines(recall) == {"recall@5": ([1, 2], [0.1, 0.2]), "recall@20": ([1, 2], [0.2, 0.4])}
    assert recall.get_legend() is not None
    sizes = {t.get_fontsize() for ax in (loss, recall) for t in ax.get_legend().get_texts()}
    assert sizes == {matplotlib.font_manager.FontProperties(size="small").get_size_in_points()}
    assert all(line.get_marker() == "." for ax in axes for line in ax.get_lines())


def test_curves_wrap_after_three_panels_and_hide_the_unused_axes(run, monkeypatch):
    run.log_train(1, loss=1.0)
    run.log_train(2, loss=0.5)
    run.log_metrics(1, "valid", {"a": 1.0, "b": 2.0, "c@10": 3.0, "d": 4.0})
    run.log_metrics(1, "test", {"a": 9.0, "e": 5.0})          # other splits are drawn only when there is no valid one
    fig = _figure(run, monkeypatch)
    axes = fig.get_axes()
    assert _lines(axes[0]) == {"loss": ([1, 2], [1.0, 0.5])} and _lines(axes[1]) == {"a": ([1], [1.0])}
    assert len(axes) == 6 and fig.get_size_inches() == pytest.approx((13.5, 6.4))
    assert [ax.get_title() for ax in axes[:5]] == ["training loss", "valid a", "valid b", "valid c@10", "valid d"]
    assert [ax.axison for ax in axes] == [True] * 5 + [False]


def test_curves_of_a_run_with_only_test_split_evaluations_and_no_losses(run, monkeypatch):
    run.log_metrics(3, "test", {"acc": 0.5})
    fig = _figure(run, monkeypatch)
    loss, acc = fig.get_axes()
    assert [t.get_text() for t in loss.texts] == ["no training losses logged"] and loss.get_legend() is None
    note = loss.texts[0]
    assert note.get_position() == (0.5, 0.5) and (note.get_ha(), note.get_va()) == ("center", "center")
    assert note.get_transform() is loss.transAxes and loss.get_xlabel() == "epoch" and acc.get_xlabel() == "epoch"
    assert acc.get_title() == "test acc" and _lines(acc) == {"acc": ([3], [0.5])}
    run.history["evaluations"] = [{"epoch": 1, "acc": 0.25}]     # a row from an older metrics.json, no split
    assert _figure(run, monkeypatch).get_axes()[1].get_title() == "valid acc"


def test_json_conversion_of_tensors_numpy_and_non_finite_values(run):
    run.log_test({"t": torch.tensor(2.5), "v": torch.tensor([1, 2]), "n": np.int64(4), "a": np.arange(2),
                  "inf": float("inf"), "nested": {3: (1.5, None)}, "flag": True, "obj": run.path.name})
    assert run.history["test"] == {"t": 2.5, "v": [1, 2], "n": 4, "a": [0, 1], "inf": None,
                                   "nested": {"3": [1.5, None]}, "flag": True, "obj": run.path.name}
    assert type(run.history["test"]["n"]) is int
    assert rundir_module._jsonable(torch.float32) == "torch.float32"   # anything else: its text
    assert rundir_module._jsonable(torch.tensor([[1.0, float("nan")]])) == [[1.0, None]]


def test_log_lines_format_floats_and_scalar_tensors_to_four_places(run):
    run.log_train(1, loss=torch.tensor(0.123456), count=3)
    run.log_metrics(1, "valid", {"acc": 0.5})
    text = (run.path / "run.log").read_text()
    assert "epoch 1 train loss=0.1235 count=3" in text and "epoch 1 valid acc=0.5000" in text


def test_memory_run_checkpoints_are_copies():
    run = MemoryRun()
    weights = torch.zeros(2)
    run.save_checkpoint({"w": weights, "meta": {"list": [torch.ones(1)], "pair": (1, 2)}}, "best.pt")
    weights += 1
    loaded = run.load("best.pt")
    assert torch.equal(loaded["w"], torch.zeros(2)) and loaded["meta"]["pair"] == (1, 2)
    loaded["w"] += 5
    assert torch.equal(run.load("best.pt")["w"], torch.zeros(2)) and run.has("best.pt") and not run.has("last.pt")
    with pytest.raises(TypeError, match="must be a dict, got list"):
        run.save_checkpoint([1])
    with pytest.raises(FileNotFoundError, match="no checkpoint 'last.pt'"):
        run.load()


Pair = namedtuple("Pair", "x y")


class _Movable:
    def to(self, device):
        return ("moved", device)


def test_move_to_keeps_every_container_type():
    cpu = torch.device("cpu")
    batch = {"t": torch.ones(1), "list": [torch.zeros(1), 3], "tuple": (torch.ones(1),), "pair": Pair(torch.ones(1), "s"),
             "obj": _Movable(), "plain": 7}
    moved = move_to(batch, cpu)
    assert type(moved["list"]) is list and type(moved["tuple"]) is tuple and type(moved["pair"]) is Pair
    assert moved["pair"].y == "s" and moved["list"][1] == 3 and moved["plain"] == 7
    assert moved["obj"] == ("moved", cpu)
    assert torch.equal(moved["t"], torch.ones(1)) and torch.equal(moved["pair"].x, torch.ones(1))
    assert move_to(torch.ones(2, dtype=torch.float64), torch.device("meta")).device.type == "meta"


def _messages(path):
    """The run log's messages (each line is '<date> <time> <LEVEL> <message>')."""
    return [line.split(" ", 3)[3] for line in path.read_text().splitlines() if line[:2] == "20"]


def test_reopening_takes_the_log_level_from_the_config_else_from_the_folder(tmp_path, toy_task):
    (tmp_path / "config.yaml").write_text(f"model: {toy_task.model}\ndataset: {toy_task.dataset}\nlog_level: WARNING\n")
    with RunDir.open(tmp_path) as run:
        assert run.logger.level == logging.WARNING and run.history == {"train": [], "evaluations": [], "test": {}}
    config = Config(toy_task.model, toy_task.dataset, config_dict={"log_level": "DEBUG"})
    with RunDir.open(tmp_path / "config.yaml", config, save_config=False) as run:   # a file: its folder
        assert run.path == tmp_path and run.logger.level == logging.DEBUG
    assert "log_level: WARNING" in (tmp_path / "config.yaml").read_text()             # not saved
    assert _messages(tmp_path / "run.log") == [f"reopened run folder {tmp_path}"]    # the WARNING run logged none
    (tmp_path / "config.yaml").write_text(f"model: {toy_task.model}\ndataset: {toy_task.dataset}\n")
    with RunDir.open(tmp_path) as run:
        assert run.logger.level == logging.INFO


def test_reopening_restores_whatever_history_the_folder_has(tmp_path, toy_task):
    (tmp_path / "config.yaml").write_text(f"model: {toy_task.model}\ndataset: {toy_task.dataset}\n")
    (tmp_path / "metrics.json").write_text('{"evaluations": [{"epoch": 1, "split": "valid", "acc": 0.5}]}')
    with RunDir.open(tmp_path) as run:
        assert run.history == {"train": [], "evaluations": [{"epoch": 1, "split": "valid", "acc": 0.5}], "test": {}}
    (tmp_path / "metrics.json").write_text('{"train": [{"epoch": 1, "loss": 2.0}], "test": {"acc": 0.7}}')
    with RunDir.open(tmp_path) as run:
        assert run.history == {"train": [{"epoch": 1, "loss": 2.0}], "evaluations": [], "test": {"acc": 0.7}}
    (tmp_path / "metrics.json").write_text('{"train": [')
    with pytest.raises(ValueError, match=r"metrics.json: not valid JSON \(Expecting value at line 1\)"):
        RunDir.open(tmp_path)


def test_reopening_another_run_names_what_differs(tmp_path, toy_task):
    (tmp_path / "config.yaml").write_text(f"model: Other\ndataset: {toy_task.dataset}\n")
    config = Config(toy_task.model, toy_task.dataset)
    with pytest.raises(ValueError, match=f"cannot resume '{tmp_path}': it ran model 'Other', "
                                         f"this config has '{toy_task.model}'"):
        RunDir.open(tmp_path, config)


def test_checkpoints_default_to_last_pt(run):
    assert not run.has("last.pt")
    path = run.save_checkpoint({"epoch": 3})
    assert path == run.path / "last.pt" and run.has("last.pt") and not run.has("best.pt")
    assert run.load() == {"epoch": 3} and repr(run) == f"RunDir('{run.path}')"
    with pytest.raises(TypeError, match="checkpoint state must be a dict, got tuple"):
        run.save_checkpoint((1,))
    memory = MemoryRun()
    memory.save_checkpoint({"epoch": 4})
    assert memory.load() == {"epoch": 4} and repr(memory) == "MemoryRun()" and memory.path is None


def test_folder_names_are_made_safe_and_numbered_within_a_second(tmp_saved, monkeypatch):
    monkeypatch.setattr(rundir_module.time, "strftime", lambda fmt: "20260101-000000")
    assert rundir_module._safe_name("a b/c..d") == "a_b_c..d" and rundir_module._safe_name("..") == "run"
    config = Config.__new__(Config)
    values = {"checkpoint_dir": str(tmp_saved), "model": "M x", "dataset": "/data/set 1", "log_level": "WARNING"}
    monkeypatch.setattr(Config, "__getitem__", lambda self, key: values[key])
    monkeypatch.setattr(Config, "save", lambda self, path: path.write_text("saved\n"))
    runs = [RunDir.create(config) for _ in range(3)]
    try:
        assert [r.path.name for r in runs] == ["M_x-set_1-20260101-000000", "M_x-set_1-20260101-000000-1",
                                               "M_x-set_1-20260101-000000-2"]
        assert (runs[0].path / "config.yaml").read_text() == "saved\n" and runs[0].logger.level == logging.WARNING
    finally:
        for r in runs:
            r.close()


def test_metrics_json_is_indented_by_two(run):
    run.log_train(1, loss=0.5)
    assert (run.path / "metrics.json").read_text().startswith('{\n  "train": [\n    {\n      "epoch": 1,')


def test_checkpoint_read_errors_say_all_they_should(tmp_path, monkeypatch):
    import datetime
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"obj": datetime.date(2020, 1, 1)}, unsafe)
    with pytest.raises(ValueError, match=r"do not load such a file unless you trust where it came from\)$"):
        rundir_module.load_checkpoint(unsafe)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"could not be read \(corrupt, or not saved as tensors and plain values\)"):
        rundir_module.load_checkpoint(corrupt)

    def fail(error):
        def load(*args, **kwargs):
            raise error
        return load

    for error, tail in ((OSError("first line\nsecond line"), ": first line"), (RuntimeError(), ": RuntimeError")):
        monkeypatch.setattr(rundir_module.torch, "load", fail(error))
        with pytest.raises(ValueError) as info:
            rundir_module.load_checkpoint(corrupt)
        assert str(info.value) == (f"checkpoint '{corrupt}' could not be read (corrupt, or not saved as tensors and "
                                   f"plain values){tail}")
