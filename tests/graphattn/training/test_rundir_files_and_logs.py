"""Run folders and in-memory runs: which files they write, what their log lines look like, checkpoints read
safely onto the CPU, and in-memory checkpoints that are snapshots."""
import io
import logging
import re
import types

import pytest
import torch
import torch.serialization

from graphattn.config import Config, load_yaml
from graphattn.training import MemoryRun, RunDir, load_checkpoint


@pytest.fixture
def config(toy_task, tmp_saved):
    return Config(toy_task.model, toy_task.dataset, config_dict={"checkpoint_dir": str(tmp_saved)})


def test_a_checkpoint_saved_on_a_gpu_loads_onto_the_cpu(tmp_path, monkeypatch):
    buffer = io.BytesIO()
    with monkeypatch.context() as patch:                 # tag the storage as a GPU one, as a CUDA run writes it
        patch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        torch.save({"w": torch.ones(2)}, buffer)
    path = tmp_path / "gpu.pt"
    path.write_bytes(buffer.getvalue())
    state = load_checkpoint(path)
    assert state["w"].device == torch.device("cpu") and state["w"].tolist() == [1.0, 1.0]


def test_objects_are_refused_even_where_torch_is_told_to_unpickle_them(tmp_path, monkeypatch):
    path = tmp_path / "objects.pt"
    torch.save({"when": types.SimpleNamespace(day=1)}, path)
    # this variable makes torch.load unpickle anything when weights_only is not passed; load_checkpoint passes it
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(ValueError, match="holds Python objects other than tensors"):
        load_checkpoint(path)


def test_save_config_writes_the_folders_config_yaml(config):
    with RunDir.create(config) as run:
        (run.path / "config.yaml").unlink()
        config["epochs"] = 7
        run.save_config(config)
        assert sorted(p.name for p in run.path.iterdir()) == ["config.yaml", "run.log"]
        assert load_yaml(run.path / "config.yaml")["epochs"] == 7


def test_the_test_metrics_line_in_the_log(config):
    with RunDir.create(config) as run:
        run.log_test({"recall@5": 0.25, "n": 3})
        lines = (run.path / "run.log").read_text(encoding="utf-8").splitlines()
    assert lines[-1].endswith(" INFO test recall@5=0.2500 n=3")


def test_reopening_removes_the_temporaries_of_an_interrupted_write(config, capsys):
    with RunDir.create(config) as run:
        path = run.path
    (path / ".last.pt.abcd1234.tmp").write_bytes(b"half")
    (path / ".metrics.json.ef567890.tmp").write_text("{")
    with RunDir.open(path) as run:
        assert not (path / ".last.pt.abcd1234.tmp").exists() and not (path / ".metrics.json.ef567890.tmp").exists()
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1].endswith(" WARNING removed 2 temporary file(s) of a write that was interrupted: "
                              ".last.pt.abcd1234.tmp, .metrics.json.ef567890.tmp")


def test_a_memory_run_starts_empty_with_its_own_quiet_logger(capsys):
    root_handlers = list(logging.getLogger().handlers)
    quiet, loud = MemoryRun(), MemoryRun(verbose=True)
    assert quiet.history == {"train": [], "evaluations": [], "test": {}}
    assert quiet.logger is not loud.logger                       # one logger per run, even with the same name
    assert quiet.logger.name.startswith("graphattn.run.memory.")
    assert MemoryRun(name="sweep").logger.name.startswith("graphattn.run.sweep.")
    assert logging.getLogger().handlers == root_handlers        # the root logger untouched
    assert quiet.logger.level == logging.WARNING and loud.logger.level == logging.INFO
    assert quiet.logger.propagate is False and loud.logger.propagate is False
    quiet.logger.info("not shown")
    loud.logger.info("shown")
    quiet.logger.warning("careful")
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2
    assert re.fullmatch(r"\d\d:\d\d:\d\d INFO shown", err[0]) and re.fullmatch(r"\d\d:\d\d:\d\d WARNING careful", err[1])


def test_a_memory_runs_log_does_not_reach_the_root_logger(caplog):
    caplog.set_level(logging.INFO)
    MemoryRun(verbose=True).logger.warning("kept to itself")
    assert caplog.records == []


def test_memory_runs_never_share_a_logger_even_at_a_reused_address(capsys):
    # runs made and dropped in a loop usually land at the same address: with id() in the name they got one logger,
    # its console handlers piling up (each line printed once per earlier run)
    names = {MemoryRun(verbose=True).logger.name for _ in range(20)}
    assert len(names) == 20
    run = MemoryRun(verbose=True)
    assert len(run.logger.handlers) == 1
    capsys.readouterr()
    run.logger.warning("once")
    assert capsys.readouterr().err.count("once") == 1


def test_memory_checkpoints_are_snapshots_of_any_value():
    run = MemoryRun()
    extra = types.SimpleNamespace(items=[1])
    run.save_checkpoint({"extra": extra, "w": torch.zeros(1)})
    extra.items.append(2)
    loaded = run.load()
    assert loaded["extra"].items == [1]
    loaded["extra"].items.append(3)
    assert run.load()["extra"].items == [1]


def test_create_makes_missing_parent_folders_and_logs_the_folder(toy_task, tmp_path):
    config = Config(toy_task.model, toy_task.dataset, config_dict={"checkpoint_dir": str(tmp_path / "a" / "b")})
    with RunDir.create(config) as run:
        run.log_train(1, loss=0.5)
        lines = (run.path / "run.log").read_text(encoding="utf-8").splitlines()
    assert run.path.parent == tmp_path / "a" / "b"
    assert lines[0].endswith(f" INFO run folder {run.path}")
    assert lines[1].endswith(" INFO epoch 1 train loss=0.5000")


def test_folder_names_keep_letters_and_trim_only_dots_and_underscores():
    from graphattn.training.rundir import _safe_name
    assert _safe_name("XLNet X") == "XLNet_X"
    assert _safe_name("._a b_.") == "a_b" and _safe_name("/..") == "run"


def test_close_detaches_the_handlers(config):
    run = RunDir.create(config)
    assert len(run.logger.handlers) == 2
    run.close()
    assert run.logger.handlers == []


def test_curves_panels_from_a_foreign_history(config, monkeypatch):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from graphattn.training import rundir as rundir_module
    saved = {}
    monkeypatch.setattr(rundir_module, "save_figure", lambda fig, path, dpi=100: saved.setdefault("fig", fig))
    with RunDir.create(config) as run:
        # a metrics.json written by something else: a numeric split, and a metric both bare and at k = 0
        run.history["evaluations"] = [{"epoch": 1, "split": 2, "recall@0": 0.1, "recall": 0.2}]
        run.plot_curves()
    fig = saved["fig"]
    assert isinstance(fig.canvas, FigureCanvasAgg)
    axes = fig.get_axes()
    assert len(axes) == 2                                        # the loss panel and "recall": no "split" panel
    assert [line.get_label() for line in axes[1].get_lines()] == ["recall", "recall@0"]


def test_a_run_folder_logs_at_info_to_its_file_and_the_console_only(tmp_path, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    run = RunDir(tmp_path)                                       # the default level
    try:
        assert run.logger.level == logging.INFO and run.logger.propagate is False
        run.logger.debug("hidden")
        run.log_metrics(1, "valid", {"recall@5": 0.25, "mrr": 0.1})
        err = capsys.readouterr().err.splitlines()
    finally:
        run.close()
    assert caplog.records == []                                  # nothing reaches the root logger
    assert len(err) == 1 and re.fullmatch(r"\d\d:\d\d:\d\d INFO epoch 1 valid recall@5=0.2500 mrr=0.1000", err[0])
    lines = (tmp_path / "run.log").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1 and lines[0].endswith(" INFO epoch 1 valid recall@5=0.2500 mrr=0.1000")


def test_a_one_element_tensor_is_stored_as_a_number():
    from graphattn.training.rundir import _jsonable
    assert _jsonable({"a": torch.tensor([0.5]), "b": torch.tensor([[2]]), "c": torch.tensor([1, 2])}) == \
        {"a": 0.5, "b": 2, "c": [1, 2]}


def test_run_files_are_utf8_under_an_ascii_locale(toy_task, tmp_path):
    """run.log and metrics.json in UTF-8 under an ASCII locale (a bare C locale, without Python's UTF-8 mode)."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    code = (
        "import sys, locale\n"
        "from graphattn.training import RunDir\n"
        "assert locale.getpreferredencoding(False).lower() not in ('utf-8', 'utf8'), locale.getpreferredencoding(False)\n"
        "run = RunDir(sys.argv[1]); run.log_train(1, loss=0.5, note='caf\\u00e9'); run.close()\n"
        "run = RunDir.open(sys.argv[1]); print(run.history['train'][0]['note']); run.close()\n")
    folder = tmp_path / "run"
    folder.mkdir()
    Config(toy_task.model, toy_task.dataset, config_dict={}).save(folder / "config.yaml")
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0",
           "PYTHONIOENCODING": "utf-8"}
    done = subprocess.run([sys.executable, "-c", code, str(folder)], env=env, capture_output=True, text=True,
                          encoding="utf-8", cwd=Path(__file__).resolve().parents[3], timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "caf\u00e9" and "Logging error" not in done.stderr
    assert "note=caf\u00e9" in (folder / "run.log").read_text(encoding="utf-8")
    with RunDir.open(folder) as run:                             # and read back here, under this process's locale
        assert run.history["train"][0]["note"] == "caf\u00e9"
