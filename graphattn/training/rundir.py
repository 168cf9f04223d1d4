"""Run folders and checkpoints.

A run folder ``<checkpoint_dir>/<model>-<dataset>-<YYYYmmdd-HHMMSS>/`` holds:

- ``config.yaml``  the merged config
- ``run.log``      the run's log (also printed to the console)
- ``metrics.json`` ``{"train": [{"epoch", <losses>}], "evaluations": [{"epoch", "split", <metrics>}], "test": {...}}``
- ``last.pt`` / ``best.pt`` checkpoints (plain dicts of tensors and numbers; read with ``weights_only=True``)
- ``curves.png``   training losses and validation metrics against the epoch

:class:`MemoryRun` records the same history without a folder (experiments that train many small models).
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import math
import pickle
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from graphattn.config import Config, load_yaml
from graphattn.io import atomic_open, atomic_write_bytes, remove_stale_temporaries, save_figure

from .report import AT_K

__all__ = ["RunDir", "MemoryRun", "load_checkpoint", "find_checkpoint"]


# --------------------------------------------------------------------------- files





def _jsonable(value: Any) -> Any:
    """Tensors / numpy scalars -> python numbers; NaN and inf -> None (strict JSON has neither)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        return _jsonable(value.item() if value.numel() == 1 else value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :meth:`RunDir.save_checkpoint` (``weights_only=True``, onto the CPU)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint '{path}' not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" in str(exc):   # a class or function reference: objects, maybe code
            raise ValueError(f"checkpoint '{path}' holds Python objects other than tensors and plain values; it was "
                             "refused without running any of it (a checkpoint written by graphattn never does this: "
                             "do not load such a file unless you trust where it came from)") from None
        raise ValueError(f"checkpoint '{path}' could not be read (corrupt, or not saved as tensors and plain "
                         "values)") from None
    except Exception as exc:  # torch raises several types for truncated / foreign files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"checkpoint '{path}' could not be read (corrupt, or not saved as tensors and plain values): {first}") from None
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint '{path}': expected a dict, got {type(state).__name__}")
    return state


def find_checkpoint(resume: str | Path, name: str = "last.pt") -> Path:
    """The checkpoint to resume from: ``resume`` itself if a file, else ``<resume>/<name>``."""
    resume = Path(resume)
    if resume.is_file():
        return resume
    if resume.is_dir():
        candidate = resume / name
        if candidate.is_file():
            return candidate
        raise FileNotFoundError(f"resume: run folder '{resume}' has no {name}; nothing to resume from")
    raise FileNotFoundError(f"resume: '{resume}' is neither a run folder nor a checkpoint file")


# --------------------------------------------------------------------------- run folder


class _ConsoleHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (test runners swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self):  # noqa: D102
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


_LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"
_MEMORY_RUNS = itertools.count()


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "run"


class RunDir:
    """One run's folder: config, log, metrics history, checkpoints and curves.

    Build with :meth:`create` (new run) or :meth:`open` (existing run, e.g. to resume). Close with
    :meth:`close` (or use as a context manager) to release the log file.
    """

    def __init__(self, path: Path, log_level: str = "INFO") -> None:
        self.path = Path(path)
        self.history: dict[str, Any] = {"train": [], "evaluations": [], "test": {}}
        level = logging.getLevelName(str(log_level).upper())
        if not isinstance(level, int):
            raise ValueError(f"log_level: expected DEBUG, INFO, WARNING or ERROR, got {log_level!r}")
        self.logger = logging.getLogger(f"graphattn.run.{self.path.resolve()}")
        self.logger.setLevel(level)
        self.logger.propagate = False
        for handler in list(self.logger.handlers):
            self.logger.removeHandler(handler)
            handler.close()
        file_handler = logging.FileHandler(self.path / "run.log", encoding="utf-8")
        file_handler.setFormatter(logging.Formatter(_LOG_FORMAT))
        console = _ConsoleHandler()
        console.setFormatter(logging.Formatter(_LOG_FORMAT, datefmt="%H:%M:%S"))
        self.logger.addHandler(file_handler)
        self.logger.addHandler(console)

    @classmethod
    def create(cls, config: Config) -> RunDir:
        """Make ``<checkpoint_dir>/<model>-<dataset>-<YYYYmmdd-HHMMSS>[-N]/`` and save ``config.yaml`` in it."""
        root = Path(config["checkpoint_dir"])
        base = f"{_safe_name(config['model'])}-{_safe_name(Path(config['dataset']).name)}-{time.strftime('%Y%m%d-%H%M%S')}"
        root.mkdir(parents=True, exist_ok=True)
        path = root / base
        n = 0
        while True:
            try:
                path.mkdir()
                break
            except FileExistsError:
                n += 1
                path = root / f"{base}-{n}"
        config.save(path / "config.yaml")
        run = cls(path, log_level=config["log_level"])
        run.logger.info("run folder %s", path)
        return run

    @classmethod
    def open(cls, path: str | Path, config: Config | None = None, save_config: bool = True) -> RunDir:
        """Reopen an existing run folder (or the folder of a checkpoint file), restoring its history.

        With ``config``, checks it is for the same model and dataset and saves it as the folder's
        ``config.yaml`` (a resumed run may change, say, ``epochs``). ``save_config=False`` leaves the saved
        config alone until :meth:`save_config` is called, so a resume that then fails (an unreadable or
        foreign checkpoint) loses nothing (``run.py`` does this).
        """
        path = Path(path)
        if path.is_file():
            path = path.parent
        saved = path / "config.yaml"
        if not saved.is_file():
            raise FileNotFoundError(f"'{path}' is not a run folder: it has no config.yaml")
        old = load_yaml(saved)
        if config is not None:
            for key in ("model", "dataset"):
                if old.get(key) != config[key]:
                    raise ValueError(f"cannot resume '{path}': it ran {key} '{old.get(key)}', this config has '{config[key]}'")
            if save_config:
                config.save(saved)
        run = cls(path, log_level=(config["log_level"] if config is not None else old.get("log_level", "INFO")))
        metrics = path / "metrics.json"
        if metrics.is_file():
            try:
                data = json.loads(metrics.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                run.close()
                raise ValueError(f"{metrics}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
            for key in ("train", "evaluations"):
                run.history[key] = list(data.get(key, []))
            run.history["test"] = dict(data.get("test", {}))
        run.logger.info("reopened run folder %s", path)
        stale = remove_stale_temporaries(path)   # a write killed halfway; its target is the previous version
        if stale:
            run.logger.warning("removed %d temporary file(s) of a write that was interrupted: %s",
                               len(stale), ", ".join(stale))
        return run

    # ------------------------------------------------------------------ history

    def _write_metrics(self) -> None:
        text = json.dumps(_jsonable(self.history), indent=2, allow_nan=False)
        atomic_write_bytes(self.path / "metrics.json", (text + "\n").encode("utf-8"))

    def log_train(self, epoch: int, **losses: Any) -> None:
        """Record one epoch's training losses (``loss=..., reg_loss=...``)."""
        row = {"epoch": int(epoch), **_jsonable(losses)}
        self.history["train"].append(row)
        self._write_metrics()
        self.logger.info("epoch %d train %s", epoch, " ".join(f"{k}={_fmt_number(v)}" for k, v in row.items() if k != "epoch"))

    def log_metrics(self, step: int, split: str, metrics: dict[str, Any]) -> None:
        """Record one evaluation (``split`` is usually ``"valid"``) at epoch ``step``."""
        row = {"epoch": int(step), "split": str(split), **_jsonable(metrics)}
        self.history["evaluations"].append(row)
        self._write_metrics()
        self.logger.info("epoch %d %s %s", step, split, " ".join(f"{k}={_fmt_number(v)}" for k, v in metrics.items()))

    def log_test(self, metrics: dict[str, Any]) -> None:
        """Record the final test metrics."""
        self.history["test"] = _jsonable(dict(metrics))
        self._write_metrics()
        self.logger.info("test %s", " ".join(f"{k}={_fmt_number(v)}" for k, v in metrics.items()))

    # ------------------------------------------------------------------ checkpoints

    def save_config(self, config: Config) -> None:
        """Write ``config`` as the folder's ``config.yaml`` (atomically)."""
        config.save(self.path / "config.yaml")

    def save_checkpoint(self, state: dict[str, Any], name: str = "last.pt") -> Path:
        """Save ``state`` (tensors, numbers, strings, lists, dicts) atomically as ``<run>/<name>``."""
        if not isinstance(state, dict):
            raise TypeError(f"checkpoint state must be a dict, got {type(state).__name__}")
        path = self.path / name
        with atomic_open(path, "wb") as fh:
            torch.save(state, fh)
        return path

    def load(self, name: str = "last.pt") -> dict[str, Any]:
        """Read back the checkpoint ``<run>/<name>`` (``weights_only=True``)."""
        return load_checkpoint(self.path / name)

    def has(self, name: str) -> bool:
        """Whether checkpoint ``name`` exists."""
        return (self.path / name).is_file()

    # ------------------------------------------------------------------ curves

    def plot_curves(self) -> Path:
        """Write ``curves.png``: one panel for the training losses, one per validation metric (all its @k together)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        train = self.history["train"]
        loss_keys = sorted({k for row in train for k, v in row.items() if k != "epoch" and isinstance(v, (int, float))})
        evals = [row for row in self.history["evaluations"] if row.get("split") == "valid"] or self.history["evaluations"]
        split = evals[0].get("split", "valid") if evals else "valid"
        metric_keys = sorted({k for row in evals for k, v in row.items() if k not in ("epoch", "split") and isinstance(v, (int, float)) and not isinstance(v, bool)})
        # recall@10, recall@20 share the "recall" panel, one line per cut-off
        panels_of: dict[str, list[str]] = {}
        for key in metric_keys:
            match = AT_K.match(key)
            panels_of.setdefault(match["name"] if match else key, []).append(key)
        panels = 1 + len(panels_of)
        cols = min(panels, 3)
        rows = math.ceil(panels / cols)
        fig = Figure(figsize=(4.5 * cols, 3.2 * rows), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(rows, cols, squeeze=False).ravel()
        ax = axes[0]
        for key in loss_keys:
            pts = [(row["epoch"], row[key]) for row in train if isinstance(row.get(key), (int, float))]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=key)
        ax.set_title("training loss")
        ax.set_xlabel("epoch")
        if loss_keys:
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, "no training losses logged", ha="center", va="center", transform=ax.transAxes)
        for ax, (name, keys) in zip(axes[1:], sorted(panels_of.items())):
            for key in sorted(keys, key=lambda k: int(AT_K.match(k)["k"]) if AT_K.match(k) else 0):
                pts = [(row["epoch"], row[key]) for row in evals if isinstance(row.get(key), (int, float))]
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=key)
            ax.set_title(f"{split} {keys[0] if len(keys) == 1 else name}")
            ax.set_xlabel("epoch")
            if len(keys) > 1:
                ax.legend(fontsize="small")
        for ax in axes[panels:]:
            ax.set_axis_off()
        out = save_figure(fig, self.path / "curves.png", dpi=100)
        return out

    # ------------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Detach and close the log handlers (the folder and its files stay)."""
        for handler in list(self.logger.handlers):
            self.logger.removeHandler(handler)
            handler.close()

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RunDir('{self.path}')"


def _fmt_number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return f"{value.item():.4f}"
    return str(value)


class MemoryRun(RunDir):
    """A run without a folder: the same history, checkpoints kept in memory, nothing written.

    For experiments that train many small models and read ``history`` afterwards. ``verbose`` sends the
    run's log lines to the console (otherwise only warnings).
    """

    def __init__(self, verbose: bool = False, name: str = "memory") -> None:
        self.path = None
        self.history = {"train": [], "evaluations": [], "test": {}}
        self._checkpoints: dict[str, dict[str, Any]] = {}
        # a number of its own, not id(self): a later run at the same address got the earlier run's logger, with its
        # handlers (each line printed once per earlier run) and whatever other code had attached to it
        self.logger = logging.getLogger(f"graphattn.run.{name}.{next(_MEMORY_RUNS)}")
        self.logger.setLevel(logging.INFO if verbose else logging.WARNING)
        self.logger.propagate = False
        console = _ConsoleHandler()
        console.setFormatter(logging.Formatter(_LOG_FORMAT, datefmt="%H:%M:%S"))
        self.logger.addHandler(console)

    def _write_metrics(self) -> None:
        pass

    def save_config(self, config: Config) -> None:
        """Nothing to write in memory."""

    def save_checkpoint(self, state: dict[str, Any], name: str = "last.pt") -> None:
        if not isinstance(state, dict):
            raise TypeError(f"checkpoint state must be a dict, got {type(state).__name__}")
        self._checkpoints[name] = _detached_copy(state)

    def load(self, name: str = "last.pt") -> dict[str, Any]:
        if name not in self._checkpoints:
            raise FileNotFoundError(f"this in-memory run has no checkpoint '{name}'")
        return _detached_copy(self._checkpoints[name])

    def has(self, name: str) -> bool:
        return name in self._checkpoints

    def plot_curves(self) -> None:
        return None

    def __repr__(self) -> str:
        return "MemoryRun()"


def _detached_copy(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {k: _detached_copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_detached_copy(v) for v in value)
    return copy.deepcopy(value)
