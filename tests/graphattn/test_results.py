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
