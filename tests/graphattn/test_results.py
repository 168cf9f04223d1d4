"""graphattn/results.py: where scripts write, what every result file records, and --publish."""
import argparse
import json

import pytest

from graphattn import results as R


@pytest.fixture
def roots(tmp_path, monkeypatch):
    monkeypatch.setattr(R, "RESULTS_DIR", tmp_path / "results")
    monkeypatch.setattr(R, "PUBLISHED_DIR", tmp_path / "docs" / "results")
    return tmp_path


def _args(*argv):
    p = argparse.ArgumentParser()
    R.add_output_args(p, "demo")
    return p.parse_args(list(argv))


def test_default_folder_is_results_script_and_nothing_is_published(roots):
    out = R.Results.from_args("demo", _args())
    path = out.write_json("a.json", {"rows": [1, 2]}, seeds=[0, 1])
    assert path == roots / "results" / "demo" / "a.json"
    assert not (roots / "docs").exists()
    rec = json.loads(path.read_text())
    assert rec["rows"] == [1, 2] and rec["seeds"] == [0, 1] and rec["script"] == "demo"
    for key in ("cores", "torch_threads", "torch", "cpu"):
        assert key in rec["machine"]
    assert rec["command"].startswith("python ")


def test_out_and_publish(roots):
    out = R.Results.from_args("demo", _args("--out", str(roots / "elsewhere"), "--publish"))
    out.write_json("a.json", {"x": 1})
    assert json.loads((roots / "elsewhere" / "a.json").read_text())["x"] == 1
    assert json.loads((roots / "docs" / "results" / "demo" / "a.json").read_text())["x"] == 1
    assert not (roots / "results").exists()


def test_figures_are_published_too(roots):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig = plt.figure()
    out = R.Results("demo", publish=True)
    out.save_figure(fig, "f.png")
    plt.close(fig)
    a, b = roots / "results" / "demo" / "f.png", roots / "docs" / "results" / "demo" / "f.png"
    assert a.read_bytes()[:4] == b"\x89PNG" and a.read_bytes() == b.read_bytes()


def test_reserved_keys_and_bad_names_are_refused(roots):
    with pytest.raises(ValueError, match="reserved"):
        R.Results("demo").write_json("a.json", {"machine": 1})
    with pytest.raises(ValueError, match="plain name"):
        R.Results("a/b")


def test_read_result_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.json"):
        R.read_result(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": 1,\n oops}')
    with pytest.raises(ValueError, match="bad.json, line 2"):
        R.read_result(bad)


# ------------------------------------------------------------------ mutation-testing gaps (#22)

def test_published_dir_and_output_arguments():
    assert R.published_dir("gna") == R.PUBLISHED_DIR / "gna"
    assert R.RESULTS_DIR == R.ROOT / "results" and R.PUBLISHED_DIR == R.ROOT / "docs" / "results"
    p = argparse.ArgumentParser()
    R.add_output_args(p, "demo")
    args = p.parse_args([])
    assert args.out is None and args.publish is False
    args = p.parse_args(["--out", "x/y", "--publish"])
    assert args.out == R.Path("x/y") and args.publish is True
    helps = {a.dest: a.help for a in p._actions}
    assert helps["out"] == "folder for the JSON and PNG files (default results/demo/, ignored by git)"
    assert helps["publish"] == "also copy them into docs/results/demo/, the published figures"


def test_cpu_model_from_cpuinfo_and_fallback(monkeypatch, tmp_path):
    text = "processor\t: 0\nmodel name\t: Test CPU: 9000 @ 3GHz \nflags\t: x\n"
    monkeypatch.setattr(R.Path, "read_text", lambda self, *a, **k: text)
    assert R._cpu_model() == "Test CPU: 9000 @ 3GHz"

    def fail(self, *a, **k):
        raise OSError("no /proc")
    monkeypatch.setattr(R.Path, "read_text", fail)
    monkeypatch.setattr(R.platform, "processor", lambda: "")
    monkeypatch.setattr(R.platform, "machine", lambda: "m68k")
    assert R._cpu_model() == "m68k"
    monkeypatch.setattr(R.platform, "processor", lambda: "proc")
    assert R._cpu_model() == "proc"
    monkeypatch.setattr(R.Path, "read_text", lambda self, *a, **k: "no model line\n")
    assert R._cpu_model() == "proc"


def test_machine_info_fields(monkeypatch):
    import numpy
    import torch
    info = R.machine_info()
    assert info["torch"] == torch.__version__ and info["numpy"] == numpy.__version__
    assert info["torch_threads"] == torch.get_num_threads() and info["cores"] == len(R.os.sched_getaffinity(0))
    assert info["python"] == R.platform.python_version() and info["platform"] == R.platform.platform(terse=True)
    assert isinstance(info["load_average_1m"], float) and "gpu" not in info
    monkeypatch.setattr(R.os, "getloadavg", lambda: (1.23456, 0.0, 0.0))
    assert R.machine_info()["load_average_1m"] == 1.23
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: f"GPU{i}")
    assert R.machine_info()["gpu"] == "GPU0"


def test_git_commit_clean_dirty_and_missing(monkeypatch):
    calls = []

    class Done:
        def __init__(self, out):
            self.stdout = out

    def fake_run(cmd, **kw):
        calls.append((cmd, kw))
        return Done(" abc1234\n" if "rev-parse" in cmd else state["status"])
    state = {"status": ""}
    monkeypatch.setattr(R.subprocess, "run", fake_run)
    assert R._git_commit() == "abc1234"
    (cmd1, kw1), (cmd2, kw2) = calls
    assert cmd1 == ["git", "-C", str(R.ROOT), "rev-parse", "--short", "HEAD"]
    assert kw1 == {"capture_output": True, "text": True, "timeout": 5, "check": True}
    assert cmd2 == ["git", "-C", str(R.ROOT), "status", "--porcelain", "--untracked-files=no"]
    assert kw2 == {"capture_output": True, "text": True, "timeout": 5}
    state["status"] = " M graphattn/io.py\n"
    assert R._git_commit() == "abc1234+dirty"

    def broken(cmd, **kw):
        raise R.subprocess.CalledProcessError(128, cmd)
    monkeypatch.setattr(R.subprocess, "run", broken)
    assert R._git_commit() is None

    def no_git(cmd, **kw):
        raise FileNotFoundError("git")
    monkeypatch.setattr(R.subprocess, "run", no_git)
    assert R._git_commit() is None


def test_command_is_relative_to_the_repository(tmp_path):
    assert R._command([str(R.ROOT / "experiments" / "gna.py"), "--seeds", "0 1"]) == \
        "python experiments/gna.py --seeds '0 1'"
    assert R._command([str(tmp_path / "x.py")]) == f"python {tmp_path / 'x.py'}"
    assert R.Results("demo", argv=[str(R.ROOT / "bench" / "t.py"), "--a"]).command == "python bench/t.py --a"


def test_results_constructor_and_record(roots, monkeypatch):
    with pytest.raises(ValueError, match=r"^script name must be a plain name such as 'gna', got ''$"):
        R.Results("")
    with pytest.raises(ValueError, match=r"^script name must be a plain name such as 'gna', got 'a/b'$"):
        R.Results("a/b")
    out = R.Results("demo", argv=["prog"])
    assert out.dir == roots / "results" / "demo" and out.publish_dir is None and out.script == "demo"
    assert R.Results("demo", out=str(roots / "o")).dir == roots / "o"
    assert R.Results("demo", publish=True).publish_dir == roots / "docs" / "results" / "demo"
    monkeypatch.setattr(R, "_git_commit", lambda: "g1")
    monkeypatch.setattr(R, "machine_info", lambda: {"m": 1})
    rec = out.record({"x": 1}, seeds=(True, 2.0))
    assert list(rec) == ["script", "command", "seeds", "git", "date", "machine", "x"]
    assert rec["seeds"] == [1, 2] and all(type(s) is int for s in rec["seeds"])
    assert rec["git"] == "g1" and rec["machine"] == {"m": 1} and rec["command"] == "python prog"
    assert rec["date"].endswith("+00:00") and len(rec["date"]) == 25
    assert out.record({})["seeds"] is None
    with pytest.raises(ValueError, match=r"^result payload of 'demo' uses reserved keys \['date', 'git'\]$"):
        out.record({"git": 1, "date": 2, "y": 3})
    args = argparse.Namespace()
    assert R.Results.from_args("demo", args).dir == roots / "results" / "demo"


def test_write_json_layout_message_and_numpy_values(roots, capsys, monkeypatch):
    import numpy as np
    monkeypatch.setattr(R, "_git_commit", lambda: None)
    monkeypatch.setattr(R, "machine_info", lambda: {})
    out = R.Results("demo", argv=["p"])
    path = out.write_json("a.json", {"arr": np.arange(3), "p": R.Path("x/y")})
    text = path.read_text()
    assert text.endswith("}\n") and '\n  "script": "demo",' in text
    assert json.loads(text)["arr"] == [0, 1, 2] and json.loads(text)["p"] == "x/y"
    assert capsys.readouterr().out == f"wrote {path}\n"
    with pytest.raises(TypeError, match=r"^object is not JSON serialisable$"):
        out.write_json("b.json", {"o": object()})
    pub = R.Results("demo", publish=True, argv=["p"])
    pub.write_json("c.json", {"v": 1})
    assert capsys.readouterr().out == (f"wrote {roots / 'results' / 'demo' / 'c.json'} and "
                                       f"{roots / 'docs' / 'results' / 'demo' / 'c.json'}\n")
    assert (roots / "docs" / "results" / "demo" / "c.json").read_text() == (roots / "results" / "demo" / "c.json").read_text()


def test_rel_paths_inside_the_repository():
    assert R._rel(R.ROOT / "results" / "x.json") == "results/x.json"
    assert R._rel(R.Path("/elsewhere/x.json")) == "/elsewhere/x.json"


def test_save_figure_message_dpi_and_copy_file(roots, capsys):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig = plt.figure(figsize=(2, 1))
    out = R.Results("demo", argv=["p"])
    target = out.save_figure(fig, "f.png", dpi=50)
    assert target == roots / "results" / "demo" / "f.png"
    assert int.from_bytes(target.read_bytes()[16:20], "big") == 100
    assert capsys.readouterr().out == f"wrote {target}\n"
    pub = R.Results("demo", publish=True, argv=["p"])
    pub.save_figure(fig, "g.png")
    assert int.from_bytes((roots / "docs" / "results" / "demo" / "g.png").read_bytes()[16:20], "big") == 200
    assert capsys.readouterr().out.endswith(f" and {roots / 'docs' / 'results' / 'demo' / 'g.png'}\n")
    plt.close(fig)
    extra = roots / "results" / "demo" / "table.csv"
    extra.write_text("a,b\n")
    out.copy_file(extra)
    assert not (roots / "docs" / "results" / "demo" / "table.csv").exists()
    R.Results("other", publish=True).copy_file(extra)
    assert (roots / "docs" / "results" / "other" / "table.csv").read_text() == "a,b\n"


def test_read_result_reads_and_names_the_line(tmp_path):
    good = tmp_path / "g.json"
    good.write_text('{"a": [1, 2]}')
    assert R.read_result(str(good)) == {"a": [1, 2]}
    with pytest.raises(FileNotFoundError, match=r"^.*missing\.json: no such result file \(run the script that "
                                                r"writes it\)$"):
        R.read_result(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": 1,\n oops}')
    with pytest.raises(ValueError, match=r"^.*bad\.json, line 2: not valid JSON \(Expecting property name enclosed "
                                         r"in double quotes\)$"):
        R.read_result(bad)
