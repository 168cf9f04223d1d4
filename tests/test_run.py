import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import run
from graphattn.training import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def _one_error_line(stderr):
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in stderr
    return lines[0]


_HELP_SCRIPT = """
import json, runpy, sys
sys.argv = ["run.py", "--help"]
try:
    runpy.run_path("run.py", run_name="__main__")
except SystemExit as exc:
    from graphattn.registry import list_datasets, list_models
    print("@@" + json.dumps([exc.code, list_models(), list_datasets()]))
"""


def test_help_lists_registered_models_and_datasets():
    # run.py as a script in a fresh interpreter; the registries it saw come back on the last line
    # (this test process's registries also hold other tests' throw-away entries)
    result = subprocess.run([sys.executable, "-c", _HELP_SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    out, _, tail = result.stdout.rpartition("@@")
    code, models, datasets = json.loads(tail)
    assert code == 0
    assert "--model" in out and "--config_files" in out
    assert "registered models:" in out and "registered datasets:" in out
    for name in models:
        assert re.search(rf"[ ,]{re.escape(name)}(,|$)", out, re.M), f"model {name} missing from --help"
    for name in datasets:
        assert f"  {name} (" in out, f"dataset {name} missing from --help"
    # the paper systems that run through their experiment scripts are listed with a script that exists
    import run
    assert "run by their scripts, not --model" in out and len(run.EXPERIMENT_SYSTEMS) >= 6
    for name, script in run.EXPERIMENT_SYSTEMS:
        assert re.search(rf"^  {re.escape(name)} +{re.escape(script)}$", out, re.M), f"{name} missing from --help"
        assert (ROOT / script).is_file(), script


def test_unknown_model_is_one_line_exit_1(capsys):
    assert run.main(["--model", "FOO", "--dataset", "ml-100k"]) == 1
    captured = capsys.readouterr()
    assert _one_error_line(captured.err).startswith("error: Unknown model 'FOO'. Available: ")
    assert captured.out == ""


def test_missing_required_argument_exit_2(capsys):
    assert run.main(["--model", "X"]) == 2   # argparse usage error
    assert "--dataset" in capsys.readouterr().err


def test_unknown_dataset_is_one_line_exit_1(toy_task, capsys):
    assert run.main(["--model", toy_task.model, "--dataset", "qqq"]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("error: Unknown dataset 'qqq'. Available: ")
    assert toy_task.dataset in line and "or a directory path" in line
    assert toy_task.calls == []


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--epochz=3"], "unknown config key 'epochz' in command line; did you mean 'epochs'?"),
        (["--epochs=ten"], "config key 'epochs' in command line: expected int"),
        (["stray"], "unexpected command-line argument 'stray'"),
        (["--device=tpu"], "device: expected auto, cpu"),
    ],
)
def test_bad_config_is_one_line_exit_1(toy_task, capsys, extra, message):
    assert run.main(["--model", toy_task.model, "--dataset", toy_task.dataset, *extra]) == 1
    assert message in _one_error_line(capsys.readouterr().err)


def test_bad_config_file_is_one_line_exit_1(toy_task, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("hidden_size: [1\n")
    assert run.main(["--model", toy_task.model, "--dataset", toy_task.dataset, "--config_files", str(bad)]) == 1
    assert f"{bad}: invalid YAML" in _one_error_line(capsys.readouterr().err)


def test_main_trains_the_task_end_to_end(toy_task, tmp_saved, tmp_path, capsys):
    extra = tmp_path / "extra.yaml"
    extra.write_text("epochs: 3\n")
    argv = ["--model", toy_task.model, "--dataset", toy_task.dataset, "--config_files", str(extra),
            f"--checkpoint_dir={tmp_saved}", "--show_progress=False", "--learning_rate", "0.05"]
    assert run.main(argv) == 0
    out = capsys.readouterr().out
    lines = out.rstrip("\n").splitlines()
    assert lines[-1].startswith("Run folder: ")
    folder = Path(lines[-1].removeprefix("Run folder: "))
    assert folder.parent == tmp_saved and folder.is_dir()
    assert "learning_rate: 0.05" in out and f"# from {extra}" in out  # merged config printed first
    assert lines[-4].split() == ["metric", "value"] and lines[-3].split()[0] == "mae"  # final table
    names = {p.name for p in folder.iterdir()}
    assert {"config.yaml", "run.log", "metrics.json", "last.pt", "best.pt", "curves.png"} <= names
    metrics = json.loads((folder / "metrics.json").read_text())
    assert [row["epoch"] for row in metrics["train"]] == [1, 2, 3]
    assert set(metrics["test"]) == {"mse", "mae"}
    assert metrics["evaluations"][-1]["mse"] < metrics["evaluations"][0]["mse"]
    assert load_checkpoint(folder / "last.pt")["epoch"] == 3
    saved = (folder / "config.yaml").read_text()
    assert "epochs: 3" in saved
    assert ("device: cpu" in saved) or ("device: cuda" in saved)  # 'auto' resolved by run.py

    # resume the same folder and train further
    argv_resume = ["--model", toy_task.model, "--dataset", toy_task.dataset, f"--checkpoint_dir={tmp_saved}",
                   "--show_progress=False", "--epochs=5", f"--resume={folder}"]
    assert run.main(argv_resume) == 0
    out = capsys.readouterr().out
    assert out.rstrip("\n").splitlines()[-1] == f"Run folder: {folder}"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert [row["epoch"] for row in metrics["train"]] == [1, 2, 3, 4, 5]
    assert sorted(p.name for p in tmp_saved.iterdir()) == [folder.name]


def test_resume_from_missing_folder_is_one_line_exit_1(toy_task, tmp_saved, capsys):
    argv = ["--model", toy_task.model, "--dataset", toy_task.dataset, f"--checkpoint_dir={tmp_saved}",
            f"--resume={tmp_saved / 'gone'}"]
    assert run.main(argv) == 1
    captured = capsys.readouterr()
    assert "is not a run folder" in _one_error_line(captured.err)
    assert "# from" not in captured.out     # fails before the merged config is printed


def test_setup_declares_bounded_dependencies():
    import ast

    tree = ast.parse((ROOT / "setup.py").read_text())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    kw = {k.arg: k.value for k in call.keywords}
    requires = ast.literal_eval(kw["install_requires"])
    extras = ast.literal_eval(kw["extras_require"])
    names = {r.split(">")[0].split("<")[0].split("=")[0] for r in requires}
    assert {"torch", "torch-geometric", "scipy", "faiss-cpu", "numpy", "pandas", "pyyaml", "tqdm", "matplotlib", "scikit-learn"} <= names
    assert "recbole" not in names  # installed --no-deps by the Makefile
    for req in requires + extras["test"]:
        assert ">=" in req and "<" in req, f"unbounded requirement {req}"


def test_a_run_that_fails_before_training_leaves_no_run_folder(tmp_saved, capsys):
    # ntu-mutual26 needs files the user puts in place: the data error is one line and no folder stays behind
    argv = ["--model", "LateFusionSkeleton", "--dataset", "ntu-mutual26", f"--checkpoint_dir={tmp_saved}"]
    assert run.main(argv) == 1
    err = capsys.readouterr().err
    line = err.strip().splitlines()[-1]
    assert "Traceback" not in err and line.startswith("error: ")
    assert "ntu_skeleton_dir" in line and "--debug" in line
    assert list(tmp_saved.iterdir()) == []
    with pytest.raises(FileNotFoundError, match="ntu_skeleton_dir"):
        run.main([*argv, "--debug"])
    assert list(tmp_saved.iterdir()) == []


class _Boom:
    """Unpickling this would create a marker file: a checkpoint carrying code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _trained_folder(toy_task, tmp_saved, capsys):
    argv = ["--model", toy_task.model, "--dataset", toy_task.dataset, f"--checkpoint_dir={tmp_saved}",
            "--show_progress=False", "--epochs=2"]
    assert run.main(argv) == 0
    capsys.readouterr()
    return next(p for p in tmp_saved.iterdir() if p.is_dir())


@pytest.mark.parametrize("damage", ["truncated", "code", "foreign"])
def test_failed_resume_is_one_line_and_keeps_the_run_intact(toy_task, tmp_saved, tmp_path, capsys, damage):
    """#19: a resume from a damaged or foreign last.pt fails with one line, runs no code from the file, and
    leaves the run folder as it was (config.yaml included: it used to be overwritten before the checkpoint
    was read)."""
    import torch

    folder = _trained_folder(toy_task, tmp_saved, capsys)
    last = folder / "last.pt"
    marker = tmp_path / "pwned"
    if damage == "truncated":
        last.write_bytes(last.read_bytes()[:200])
    elif damage == "code":
        torch.save({"model": _Boom(marker)}, last)
    else:   # a state dict whose tensors have other shapes
        state = torch.load(last, weights_only=True)
        state["model"] = {k: torch.zeros(v.shape[0] + 1, *v.shape[1:]) if v.dim() else v
                          for k, v in state["model"].items()}
        torch.save(state, last)
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    argv = ["--model", toy_task.model, "--dataset", toy_task.dataset, f"--checkpoint_dir={tmp_saved}",
            "--show_progress=False", "--epochs=4", "--log_level=WARNING", f"--resume={folder}"]
    assert run.main(argv) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert "last.pt" in line and "Traceback" not in line
    if damage == "code":
        assert "refused without running" in line and not marker.exists()
    if damage == "foreign":
        assert "does not fit this model" in line
    after = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    for name in ("config.yaml", "last.pt", "best.pt", "metrics.json"):
        assert after[name] == before[name], name
