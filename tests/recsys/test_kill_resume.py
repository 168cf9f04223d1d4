"""A KGAT run killed with SIGKILL (no chance to clean up) and resumed from its folder ends exactly where the
uninterrupted run ends (#24): same test metrics, same per-epoch losses.

Both runs are ``run.py`` subprocesses with 2 threads on planted-kg. The killed run is stopped as soon as its
``last.pt`` says epoch 1 is done, i.e. somewhere inside epoch 2; resuming replays epoch 2 from that state.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
ARGS = ["--model", "KGAT", "--dataset", "planted-kg", "--epochs=3", "--eval_step=1", "--stopping_step=10",
        '--planted_kg={"n_users": 200, "n_items": 400, "n_clusters": 8, "n_noise_entities": 100}',
        "--num_threads=2", "--show_progress=false", "--log_level=WARNING", "--seed=5"]


def _run(args, timeout=300):
    return subprocess.run([sys.executable, "run.py", *ARGS, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def _folder(parent: Path) -> Path:
    (folder,) = [p for p in parent.iterdir() if p.is_dir()]
    return folder


def _epoch_done(folder: Path) -> int:
    try:
        return int(torch.load(folder / "last.pt", weights_only=True)["epoch"])
    except (FileNotFoundError, RuntimeError, EOFError, KeyError, OSError):
        return 0


def test_sigkill_mid_run_then_resume_equals_uninterrupted(tmp_path):
    whole = _run([f"--checkpoint_dir={tmp_path / 'whole'}"])
    assert whole.returncode == 0, whole.stderr[-2000:]
    expected = json.loads((_folder(tmp_path / "whole") / "metrics.json").read_text())

    killed_dir = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "run.py", *ARGS, f"--checkpoint_dir={killed_dir}"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if killed_dir.is_dir() and any(killed_dir.iterdir()) and _epoch_done(_folder(killed_dir)) >= 1:
                break
            time.sleep(0.02)
        if proc.poll() is not None:
            pytest.fail(f"the run ended (rc {proc.returncode}) before it could be killed after epoch 1")
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    folder = _folder(killed_dir)
    done = _epoch_done(folder)
    assert 1 <= done < 3, f"killed after epoch {done}"

    resumed = _run([f"--checkpoint_dir={killed_dir}", f"--resume={folder}"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    got = json.loads((folder / "metrics.json").read_text())
    assert got["test"] == expected["test"]

    def losses(m):
        return [{k: v for k, v in row.items() if "seconds" not in k} for row in m["train"]]
    assert losses(got) == losses(expected)
