"""Atomic writes: all or nothing, and the user's default permissions (not mkstemp's owner-only 0600)."""
import os
import stat

import pytest

from graphattn.io import atomic_open, atomic_path, atomic_write_bytes, atomic_write_text, default_file_mode


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield 0o027
    os.umask(old)


def test_write_replaces_the_whole_file(tmp_path):
    path = tmp_path / "sub" / "a.txt"
    atomic_write_text(path, "first version, long\n")
    atomic_write_text(path, "second\n")
    assert path.read_text() == "second\n"
    assert os.listdir(path.parent) == ["a.txt"]   # no temporary file left


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "a.bin"
    atomic_write_bytes(path, b"old")
    with pytest.raises(RuntimeError), atomic_open(path, "wb") as fh:
        fh.write(b"half of the new")
        raise RuntimeError("killed halfway")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["a.bin"]


def test_new_files_get_the_umask_mode_not_owner_only(tmp_path, umask_027):
    path = tmp_path / "config.yaml"
    atomic_write_text(path, "x: 1\n")
    assert _mode(path) == 0o640                 # 0o666 & ~0o027, what open() would give
    with atomic_path(tmp_path / "index.faiss") as tmp:
        tmp.write_bytes(b"\0")
    assert _mode(tmp_path / "index.faiss") == 0o640


def test_umask_is_read_without_being_changed(umask_027):
    assert default_file_mode() == 0o640
    assert os.umask(0o027) == 0o027


def test_a_replaced_file_keeps_its_mode(tmp_path):
    path = tmp_path / "best.pt"
    atomic_write_bytes(path, b"1")
    os.chmod(path, 0o600)                        # the user made it private: a new checkpoint stays private
    atomic_write_bytes(path, b"2")
    assert _mode(path) == 0o600 and path.read_bytes() == b"2"


def test_atomic_path_removes_its_temporary_on_error(tmp_path):
    with pytest.raises(OSError), atomic_path(tmp_path / "x.idx") as tmp:
        tmp.write_bytes(b"partial")
        raise OSError("disk full")
    assert os.listdir(tmp_path) == []


def test_run_folder_files_have_the_users_default_permissions(toy_task, tmp_saved, umask_027):
    from graphattn.config import Config
    from graphattn.training import RunDir, Trainer
    config = Config(toy_task.model, toy_task.dataset, config_dict={
        "epochs": 2, "show_progress": False, "device": "cpu", "checkpoint_dir": str(tmp_saved), "seed": 0})
    with RunDir.create(config) as run:
        Trainer.from_config(config, run).fit()
    files = {p.name: _mode(p) for p in run.path.rglob("*") if p.is_file()}
    assert {"config.yaml", "last.pt", "best.pt"} <= set(files)   # checkpoints, config, metrics and log alike
    assert files == dict.fromkeys(files, 0o640)
    assert _mode(run.path) == 0o750               # folders: 0o777 less the umask
