"""A process killed (SIGKILL) while writing a checkpoint leaves the previous checkpoint whole and loadable, and
reopening the run folder removes the temporary file the killed write left (issue #19)."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from graphattn.training import RunDir, load_checkpoint

ROOT = Path(__file__).resolve().parents[2]

# saves epoch 1, then starts saving epoch 2 through a file object that stalls after its first megabyte
_WRITER = r"""
import sys, time, torch
sys.path.insert(0, sys.argv[2])
from pathlib import Path
from graphattn.training import RunDir
run = RunDir(Path(sys.argv[1]))
run.save_checkpoint({"epoch": 1, "weights": torch.full((1 << 20,), 1.0)})
real_save = torch.save
def stalling_save(obj, fh):
    class Stall:
        written = 0
        def write(self, data):
            fh.write(data); fh.flush(); Stall.written += len(data)
            if Stall.written > (1 << 20):
                print("writing", flush=True); time.sleep(60)
            return len(data)
        def flush(self): fh.flush()
    real_save(obj, Stall())
torch.save = stalling_save
run.save_checkpoint({"epoch": 2, "weights": torch.full((1 << 20,), 2.0)})
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_during_a_checkpoint_write_keeps_the_previous_checkpoint(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.yaml").write_text("model: M\ndataset: d\n")
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(folder), str(ROOT)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()             # the second save is halfway through its file
        assert line.strip() == "writing", proc.stderr.read()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL

    leftovers = [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) == 1 and leftovers[0].startswith(".last.pt.")   # the killed write's partial file
    state = load_checkpoint(folder / "last.pt")
    assert state["epoch"] == 1 and torch.equal(state["weights"], torch.full((1 << 20,), 1.0))

    run = RunDir.open(folder)                      # what --resume does first
    run.close()
    assert sorted(p.name for p in folder.iterdir()) == ["config.yaml", "last.pt", "run.log"]
    assert "removed 1 temporary file(s)" in (folder / "run.log").read_text()


def test_reopening_keeps_files_that_only_look_temporary(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.yaml").write_text("model: M\ndataset: d\n")
    keep = ["notes.tmp", ".hidden.tmp", ".last.pt.short.tmp", "last.pt.abcdefgh.tmp"]
    for name in keep:
        (folder / name).write_text("user's")
    (folder / ".best.pt.k3j_x9q2.tmp").write_bytes(b"partial")
    RunDir.open(folder).close()
    assert sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp")) == sorted(keep)
