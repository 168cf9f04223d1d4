"""Name -> object registries for tasks, models and datasets.

Registries are filled by explicit imports: each domain package (``recsys``, ``vision``, ``sequence``)
calls :func:`register_task`, :func:`register_dataset` and decorates its models with
:func:`register_model` in its own ``__init__``. ``graphattn`` itself imports no domain package, so
code that needs the full registry (``run.py``) imports the domains first.

Looking up a name that is not registered raises a one-line ``ValueError`` that lists the closest
matches and everything available.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

__all__ = [
    "TaskEntry",
    "DatasetEntry",
    "register_task",
    "get_task",
    "list_tasks",
    "register_model",
    "get_model",
    "list_models",
    "register_dataset",
    "get_dataset",
    "list_datasets",
]


@dataclass(frozen=True)
class TaskEntry:
    """A domain: its :class:`graphattn.training.Task` class and where its YAML defaults live."""

    name: str
    task: type
    overall: Path
    model_dir: Path
    dataset_dir: Path | None = None
    path_loader_ok: bool = False


@dataclass(frozen=True)
class DatasetEntry:
    """A dataset name (or, with ``is_path=True``, a directory given by the user) and its loader.

    For a directory path ``name`` is the path as given and ``loader`` is ``None``: the task reads the
    directory itself.
    """

    name: str
    tasks: tuple[str, ...]
    loader: Callable[..., Any] | None
    description: str = ""
    is_path: bool = False


_TASKS: dict[str, TaskEntry] = {}
_MODELS: dict[str, type] = {}
_DATASETS: dict[str, DatasetEntry] = {}


def _unknown(kind: str, name: str, available: list[str], extra: str = "") -> ValueError:
    lowered = {n.lower(): n for n in available}
    close = [lowered[m] for m in difflib.get_close_matches(name.lower(), list(lowered), n=3, cutoff=0.6)]
    parts = [f"Unknown {kind} '{name}'."]
    if close:
        parts.append(f"Did you mean: {', '.join(close)}?")
    listing = ", ".join(sorted(available)) if available else "none registered"
    parts.append(f"Available: {listing}{extra}")
    return ValueError(" ".join(parts))


# --------------------------------------------------------------------------- tasks


def register_task(
    name: str,
    *,
    task: type,
    overall: Path | str,
    model_dir: Path | str,
    dataset_dir: Path | str | None = None,
    path_loader_ok: bool = False,
) -> None:
    """Register a domain.

    Args:
        name: task name, e.g. ``"recsys"``.
        task: the domain's :class:`graphattn.training.Task` subclass, built as ``task(config)``.
        overall: the task's ``overall.yaml`` (second config layer).
        model_dir: folder holding ``<Model>.yaml`` files (third layer).
        dataset_dir: folder holding ``<dataset>.yaml`` files (fourth layer), or ``None``.
        path_loader_ok: whether ``--dataset`` may be a directory path for this task.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"task name must be a non-empty str, got {name!r}")
    if not isinstance(task, type):
        raise TypeError(f"task '{name}' must be registered with a Task class, got {type(task).__name__}")
    entry = TaskEntry(
        name=name,
        task=task,
        overall=Path(overall),
        model_dir=Path(model_dir),
        dataset_dir=None if dataset_dir is None else Path(dataset_dir),
        path_loader_ok=bool(path_loader_ok),
    )
    old = _TASKS.get(name)
    if old is not None and old != entry:
        raise ValueError(f"task '{name}' is already registered ({old.task.__module__}.{old.task.__qualname__})")
    _TASKS[name] = entry


def get_task(name: str) -> TaskEntry:
    """The registered task ``name``; unknown -> ``ValueError`` with suggestions."""
    try:
        return _TASKS[name]
    except KeyError:
        raise _unknown("task", name, list(_TASKS)) from None


def list_tasks() -> list[str]:
    return sorted(_TASKS)


# --------------------------------------------------------------------------- models


def register_model(name: str, task: str) -> Callable[[type], type]:
    """Class decorator: register ``cls`` under ``name`` for ``task``.

    Sets ``cls.model_name`` and ``cls.task``. A second, different class under the same name raises
    ``ValueError`` (registering the very same class again is a no-op). The task need not be registered yet (a package may register its models before
    its task); it is checked when the model is used.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"model name must be a non-empty str, got {name!r}")
    if not isinstance(task, str) or not task:
        raise TypeError(f"task of model '{name}' must be a non-empty str, got {task!r}")

    def decorator(cls: type) -> type:
        if not isinstance(cls, type):
            raise TypeError(f"register_model('{name}') decorates a class, got {type(cls).__name__}")
        old = _MODELS.get(name)
        if old is not None and old is not cls:
            raise ValueError(
                f"model '{name}' is already registered by {old.__module__}.{old.__qualname__}; "
                f"cannot register {cls.__module__}.{cls.__qualname__} under the same name"
            )
        cls.model_name = name
        cls.task = task
        _MODELS[name] = cls
        return cls

    return decorator


def get_model(name: str) -> type:
    """The model class registered as ``name``; unknown -> one-line ``ValueError`` with suggestions."""
    try:
        return _MODELS[name]
    except KeyError:
        raise _unknown("model", name, list(_MODELS)) from None


def list_models(task: str | None = None) -> list[str]:
    """Registered model names, sorted; only those of ``task`` when given."""
    return sorted(n for n, cls in _MODELS.items() if task is None or cls.task == task)


# --------------------------------------------------------------------------- datasets


def register_dataset(
    name: str,
    *,
    task: str | tuple[str, ...],
    loader: Callable[..., Any],
    description: str = "",
) -> None:
    """Register a named dataset for one task or several; a duplicate name raises ``ValueError``."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"dataset name must be a non-empty str, got {name!r}")
    tasks = (task,) if isinstance(task, str) else tuple(task)
    if not tasks or not all(isinstance(t, str) and t for t in tasks):
        raise TypeError(f"task of dataset '{name}' must be a str or a tuple of str, got {task!r}")
    if not callable(loader):
        raise TypeError(f"loader of dataset '{name}' must be callable, got {type(loader).__name__}")
    entry = DatasetEntry(name=name, tasks=tasks, loader=loader, description=description)
    old = _DATASETS.get(name)
    if old is not None and old != entry:
        raise ValueError(f"dataset '{name}' is already registered (tasks {', '.join(old.tasks)})")
    _DATASETS[name] = entry


def get_dataset(name_or_path: str, task: str | None = None) -> DatasetEntry:
    """Resolve a dataset name, or a directory path where ``task`` allows one.

    A registered name wins over a directory of the same name. With ``task`` given, a registered
    dataset of another task is an error. A directory is accepted when ``task`` is ``None`` or the
    task was registered with ``path_loader_ok=True``.
    """
    if not isinstance(name_or_path, str) or not name_or_path:
        raise TypeError(f"dataset must be a non-empty str, got {name_or_path!r}")
    entry = _DATASETS.get(name_or_path)
    if entry is not None:
        if task is not None and task not in entry.tasks:
            raise ValueError(
                f"Dataset '{name_or_path}' is registered for task(s) {', '.join(entry.tasks)}, "
                f"not '{task}'. Datasets for '{task}': {', '.join(list_datasets(task)) or 'none registered'}"
            )
        return entry
    paths_ok = task is None or get_task(task).path_loader_ok
    if paths_ok and os.path.isdir(name_or_path):
        return DatasetEntry(
            name=name_or_path,
            tasks=() if task is None else (task,),
            loader=None,
            description=f"directory {name_or_path}",
            is_path=True,
        )
    extra = " or a directory path" if paths_ok else ""
    if paths_ok and (os.sep in name_or_path or "/" in name_or_path):
        extra += f" ('{name_or_path}' is not an existing directory)"
    raise _unknown("dataset", name_or_path, list_datasets(task), extra)


def list_datasets(task: str | None = None) -> list[str]:
    """Registered dataset names, sorted; only those serving ``task`` when given."""
    return sorted(n for n, e in _DATASETS.items() if task is None or task in e.tasks)


# --------------------------------------------------------------------------- tests


@contextlib.contextmanager
def _scratch(empty: bool = False) -> Iterator[None]:
    """For tests: registrations made inside the block are forgotten when it exits.

    With ``empty`` the block starts from empty registries (what domain packages registered is
    hidden until the block exits).
    """
    saved = (copy.copy(_TASKS), copy.copy(_MODELS), copy.copy(_DATASETS))
    try:
        if empty:
            for live in (_TASKS, _MODELS, _DATASETS):
                live.clear()
        yield
    finally:
        for live, old in zip((_TASKS, _MODELS, _DATASETS), saved):
            live.clear()
            live.update(old)


def _unregister(kind: str, name: str) -> None:
    """For tests: forget one ``task`` / ``model`` / ``dataset`` registration (missing is fine)."""
    table = {"task": _TASKS, "model": _MODELS, "dataset": _DATASETS}.get(kind)
    if table is None:
        raise ValueError(f"kind must be 'task', 'model' or 'dataset', got {kind!r}")
    table.pop(name, None)
