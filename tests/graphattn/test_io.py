"""Atomic writes: all or nothing, and the user's default permissions (not mkstemp's owner-only 0600)."""
import os
import stat
from pathlib import Path

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


# ------------------------------------------------------------------ mutation-testing gaps (#22)

def test_umask_fallback_without_proc(monkeypatch, umask_027):
    import builtins

    from graphattn import io

    real_open = builtins.open

    def no_proc(path, *args, **kwargs):
        if str(path).startswith("/proc/"):
            raise OSError("no /proc here")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", no_proc)
    assert io.current_umask() == 0o027
    assert os.umask(0o027) == 0o027                  # restored after reading it


def test_umask_from_proc_status(monkeypatch):
    import builtins
    import io as pyio

    from graphattn import io

    real_open = builtins.open

    def fake(text):
        return lambda path, *a, **k: pyio.StringIO(text) if str(path) == "/proc/self/status" else real_open(path, *a, **k)

    monkeypatch.setattr(builtins, "open", fake("Name:\tx\nUmask:\t0077\nState:\tR\n"))
    assert io.current_umask() == 0o077
    monkeypatch.setattr(builtins, "open", fake("Umask:\tnot-octal\n"))
    old = os.umask(0o022)
    try:
        assert io.current_umask() == 0o022           # a line it cannot read: the fallback
    finally:
        os.umask(old)


def test_default_file_mode_of_an_existing_and_a_missing_path(tmp_path, umask_027):
    path = tmp_path / "f"
    path.write_bytes(b"")
    os.chmod(path, 0o604)
    assert default_file_mode(path) == 0o604
    assert default_file_mode(tmp_path / "missing") == 0o640
    assert default_file_mode(None) == 0o640


def test_temporary_name_folder_and_parents(tmp_path):
    from graphattn.io import _TEMPORARY, remove_stale_temporaries
    target = tmp_path / "a" / "b" / "data.json"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.exists()
        assert tmp.name.startswith(".data.json.") and tmp.name.endswith(".tmp")
        assert _TEMPORARY.match(tmp.name).group("target") == "data.json"
        assert remove_stale_temporaries(target.parent) == [tmp.name]
        tmp.write_text("x")
    assert target.read_text() == "x"


def test_remove_stale_temporaries_only_touches_its_own_names(tmp_path):
    from graphattn.io import remove_stale_temporaries
    stale = [".best.pt.abcd1234.tmp", ".a.json.AB_cd123.tmp"]
    keep = ["best.pt", ".best.pt.abc.tmp", ".best.pt.abcd12345.tmp", "x.abcd1234.tmp", ".best.pt.abcd1234.tmpx",
            ".best.pt.abcd-234.tmp"]
    for name in stale + keep:
        (tmp_path / name).write_text("")
    (tmp_path / ".dir.abcd1234.tmp").mkdir()
    assert remove_stale_temporaries(tmp_path) == sorted(stale)
    assert sorted(os.listdir(tmp_path)) == sorted(keep + [".dir.abcd1234.tmp"])
    assert remove_stale_temporaries(tmp_path) == []


def test_atomic_open_modes_encoding_and_newline(tmp_path):
    path = tmp_path / "t.txt"
    with atomic_open(path) as fh:                       # binary by default
        fh.write(b"\xff\x00")
    assert path.read_bytes() == b"\xff\x00"
    atomic_write_text(path, "é\n")
    assert path.read_bytes() == "é\n".encode("utf-8")
    atomic_write_text(path, "é\n", encoding="latin-1")
    assert path.read_bytes() == b"\xe9\n"
    atomic_write_text(path, "a\nb\n", newline="\r\n")
    assert path.read_bytes() == b"a\r\nb\r\n"
    with atomic_open(path, "w", encoding="ascii") as fh:
        fh.write("plain")
    assert path.read_text() == "plain"


def test_save_figure_writes_a_png_at_the_given_dpi(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from graphattn.io import save_figure
    fig = plt.figure(figsize=(2, 1))
    out = save_figure(fig, tmp_path / "f.png")
    assert out == tmp_path / "f.png"
    data = out.read_bytes()
    assert data[:4] == b"\x89PNG"
    width = int.from_bytes(data[16:20], "big")
    save_figure(fig, tmp_path / "g.png", dpi=50)
    assert width == 200 and int.from_bytes((tmp_path / "g.png").read_bytes()[16:20], "big") == 100
    plt.close(fig)


def test_umask_is_read_from_proc_without_calling_os_umask(monkeypatch):
    from graphattn import io
    if not os.path.exists("/proc/self/status"):
        pytest.skip("no /proc on this system")

    def boom(mask):
        raise AssertionError("os.umask called although /proc/self/status is readable")
    monkeypatch.setattr(io.os, "umask", boom)
    assert 0 <= io.current_umask() <= 0o777


def test_default_mode_with_an_empty_umask():
    old = os.umask(0)
    try:
        assert default_file_mode() == 0o666
    finally:
        os.umask(old)


def test_save_figure_is_png_whatever_the_default_format(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from graphattn.io import save_figure
    fig = plt.figure(figsize=(1, 1))
    with matplotlib.rc_context({"savefig.format": "svg"}):
        save_figure(fig, tmp_path / "f.png")
    plt.close(fig)
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"


def test_a_temporary_that_vanishes_while_being_removed_is_skipped(tmp_path, monkeypatch):
    """Another cleaner (a second resume of the same folder) removed it first: not an error, not reported."""
    from graphattn.io import remove_stale_temporaries
    names = [".a.json.abcd1234.tmp", ".b.json.abcd1234.tmp"]
    for name in names:
        (tmp_path / name).write_text("")
    real = Path.unlink

    def racing(self, *args, **kwargs):
        if self.name == names[0]:
            real(self)                 # gone just before our unlink
        return real(self, *args, **kwargs)
    monkeypatch.setattr(Path, "unlink", racing)
    assert remove_stale_temporaries(tmp_path) == names[1:]
    assert list(tmp_path.iterdir()) == []
