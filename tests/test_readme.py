"""The README's Python example runs as written."""
import re
from pathlib import Path


def test_readme_python_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                        # the example's run folder goes to tmp_path/saved
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    import torch
    torch.manual_seed(0)
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has no python example"
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})
    assert list((tmp_path / "saved").iterdir()), "the example trained no run"
