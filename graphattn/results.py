"""Where experiment and bench scripts put what they measure, and what each result file records.

Every script under ``experiments/`` and ``bench/`` writes to ``results/<script>/`` by default (ignored by
git, so trying a command never changes the repository), takes ``--out DIR`` to choose another folder, and
copies its files into ``docs/results/<script>/`` (the published figures) only with ``--publish``::

    parser = argparse.ArgumentParser()
    add_output_args(parser, "gna")
    args = parser.parse_args()
    out = Results.from_args("gna", args)
    out.write_json("gna.json", {"rows": rows}, seeds=[0])
    out.save_figure(fig, "gna.png")

Each JSON holds, next to the script's own payload, the command that produced it, the git commit, the
date, and the machine (cores, torch threads, torch version, load average), so a published number can be
traced to its command and re-measured (``make results-check``).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .io import atomic_write_bytes, atomic_write_text, save_figure

__all__ = ["ROOT", "Results", "add_output_args", "machine_info", "published_dir", "read_result"]

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "results"
PUBLISHED_DIR = ROOT / "docs" / "results"


def published_dir(script: str) -> Path:
    """``docs/results/<script>/``: where ``--publish`` puts a script's files."""
    return PUBLISHED_DIR / script


def add_output_args(parser: argparse.ArgumentParser, script: str) -> None:
    """Add ``--out`` and ``--publish`` to a script's parser."""
    parser.add_argument("--out", type=Path, default=None,
                        help=f"folder for the JSON and PNG files (default results/{script}/, ignored by git)")
    parser.add_argument("--publish", action="store_true",
                        help=f"also copy them into docs/results/{script}/, the published figures")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """What a timing depends on: cores, torch threads and version, the CPU / GPU, the load when measured."""
    import numpy
    import torch

    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }
    if hasattr(os, "getloadavg"):
        info["load_average_1m"] = round(os.getloadavg()[0], 2)
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _command(argv: Sequence[str]) -> str:
    script = Path(argv[0])
    try:
        script = script.resolve().relative_to(ROOT)
    except ValueError:
        pass
    return shlex.join(["python", str(script), *argv[1:]])


class Results:
    """The output folder of one script run, and optionally its published copy."""

    def __init__(self, script: str, out: str | os.PathLike | None = None, publish: bool = False,
                 argv: Sequence[str] | None = None) -> None:
        if not script or "/" in script:
            raise ValueError(f"script name must be a plain name such as 'gna', got {script!r}")
        self.script = script
        self.dir = Path(out) if out is not None else RESULTS_DIR / script
        self.publish_dir = published_dir(script) if publish else None
        self.command = _command(list(sys.argv if argv is None else argv))

    @classmethod
    def from_args(cls, script: str, args: argparse.Namespace) -> Results:
        return cls(script, getattr(args, "out", None), getattr(args, "publish", False))

    def path(self, name: str) -> Path:
        """``<out>/<name>`` (the folder is created)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        return self.dir / name

    def record(self, payload: Mapping[str, Any], seeds: Sequence[int] | None = None) -> dict[str, Any]:
        """``payload`` with the provenance every result file carries."""
        head = {
            "script": self.script,
            "command": self.command,
            "seeds": None if seeds is None else [int(s) for s in seeds],
            "git": _git_commit(),
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine_info(),
        }
        clash = set(head) & set(payload)
        if clash:
            raise ValueError(f"result payload of '{self.script}' uses reserved keys {sorted(clash)}")
        return {**head, **payload}

    def write_json(self, name: str, payload: Mapping[str, Any], seeds: Sequence[int] | None = None) -> Path:
        """Write ``payload`` (plus provenance) as ``<out>/<name>`` atomically, and publish it if asked."""
        text = json.dumps(self.record(payload, seeds), indent=2, default=_jsonable) + "\n"
        target = self.path(name)
        atomic_write_text(target, text)
        if self.publish_dir is not None:
            atomic_write_text(self.publish_dir / name, text)
        print(f"wrote {_rel(target)}" + (f" and {_rel(self.publish_dir / name)}" if self.publish_dir else ""))
        return target

    def save_figure(self, fig, name: str, dpi: int = 100) -> Path:
        """Save a matplotlib figure as ``<out>/<name>`` (PNG, atomic), and publish it if asked."""
        target = save_figure(fig, self.path(name), dpi=dpi)
        if self.publish_dir is not None:
            self.publish_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.publish_dir / name, target.read_bytes())
        print(f"wrote {_rel(target)}" + (f" and {_rel(self.publish_dir / name)}" if self.publish_dir else ""))
        return target

    def copy_file(self, path: str | os.PathLike) -> None:
        """Publish a file the script wrote into its folder by other means."""
        if self.publish_dir is not None:
            self.publish_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, self.publish_dir / Path(path).name)


def read_result(path: str | os.PathLike) -> dict[str, Any]:
    """Load a result JSON; a clear error names the file when it is missing or not JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such result file (run the script that writes it)") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}, line {err.lineno}: not valid JSON ({err.msg})") from None


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")
