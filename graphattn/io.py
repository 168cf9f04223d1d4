"""Atomic file writes: a reader never sees a half-written file, and a failed write leaves the old one.

Every writer goes through :func:`atomic_open` (a file handle) or :func:`atomic_path` (a path, for writers
such as ``faiss.write_index`` that open the file themselves): write to a temporary file in the target's
folder, then ``os.replace`` it over the target (atomic on POSIX and Windows); on any error the temporary
file is removed.

Permissions: ``tempfile.mkstemp`` creates its file readable by the owner only (0600). The finished file gets
the mode a plain ``open(path, "w")`` would have given it (``0o666`` less the umask), or keeps the mode of
the file it replaces, so run folders and published results carry the user's default permissions.
"""
from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_open", "atomic_path", "atomic_write_bytes", "atomic_write_text", "default_file_mode",
           "remove_stale_temporaries", "save_figure"]

# what atomic_path's mkstemp names look like: ".<target name>.<8 random characters>.tmp"
_TEMPORARY = re.compile(r"^\.(?P<target>.+)\.[A-Za-z0-9_]{8}\.tmp$")


def current_umask() -> int:
    """The process umask, read without changing it where the system allows (Linux ``/proc``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (a brief window other threads could see)
    os.umask(mask)
    return mask


def default_file_mode(path: str | os.PathLike | None = None) -> int:
    """The mode a new file at ``path`` should get: that of the file it replaces, else 0o666 less the umask."""
    if path is not None:
        try:
            return stat.S_IMODE(os.stat(path).st_mode)
        except FileNotFoundError:
            pass
    return 0o666 & ~current_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary sibling path of ``path`` to write to; it replaces ``path`` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, default_file_mode(path))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def remove_stale_temporaries(folder: str | os.PathLike) -> list[str]:
    """Delete the temporary files that writes killed halfway (SIGKILL, power loss) left in ``folder``.

    Only names of the form :func:`atomic_path` creates are touched; their targets were never replaced, so
    nothing saved is lost. Call it only when no other process is writing into ``folder``. Returns the
    names removed.
    """
    removed = []
    for entry in sorted(Path(folder).iterdir()):
        if entry.is_file() and _TEMPORARY.match(entry.name):
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed.append(entry.name)
    return removed


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; it replaces ``path`` when the block succeeds."""
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as fh:
        yield fh


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8", newline: str | None = None) -> None:
    with atomic_open(path, "w", encoding=encoding, newline=newline) as fh:
        fh.write(text)


def save_figure(fig, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Save a matplotlib figure as PNG atomically; returns the path."""
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=dpi)
    return Path(path)
