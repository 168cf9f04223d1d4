"""Layered YAML configuration, RecBole-style, with unknown keys and wrong types rejected.

Layers, later wins:

1. ``graphattn/overall.yaml`` (core keys: seed, device, epochs, ...)
2. the task's ``overall.yaml`` (from :func:`graphattn.registry.register_task`)
3. ``<model_dir>/<Model>.yaml`` (if it exists)
4. ``<dataset_dir>/<dataset>.yaml`` (if it exists; skipped when the dataset is a directory path)
5. each of ``config_files``, in order
6. ``config_dict`` (the command line, or a dict from Python)

Layers 1-4 are the defaults: together they define every key there is. A later layer may only set
keys that exist, with a value of the default's type. Types: ``bool`` is not an ``int``; an ``int`` is
accepted (and converted) where a ``float`` is expected; a key whose default is ``null`` in any default
layer also accepts ``null``; a key whose defaults are all ``null`` accepts anything; lists and dicts
replace the default whole.
"""

from __future__ import annotations

import ast
import copy
import difflib
import os
import re
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import yaml

from graphattn.registry import get_model, get_task
from graphattn.io import atomic_write_text

__all__ = ["Config", "parse_cli_overrides", "load_yaml", "CORE_OVERALL", "COMMAND_LINE"]

CORE_OVERALL = Path(__file__).resolve().with_name("overall.yaml")
COMMAND_LINE = "command line"
_ASSIGNMENT = "assignment"
_RESERVED = ("model", "dataset")


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` as a float (PyYAML follows YAML 1.1, which needs ``1.0e-3``).

    A subclass, so PyYAML's own loaders are left untouched.
    """


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping (safe loader). Missing file, bad YAML or a non-mapping -> error naming ``path``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file '{path}' not found")
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValueError(f"{path}: invalid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of 'key: value' lines at the top level, got {type(data).__name__}")
    for key in data:
        if not isinstance(key, str):
            raise ValueError(f"{path}: config keys must be strings, got {key!r} ({type(key).__name__})")
    return data


def _parse_value(raw: str) -> Any:
    if raw in ("true", "false"):  # YAML spellings, as in the config files
        return raw == "true"
    if raw in ("null", "~"):
        return None
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return raw


def parse_cli_overrides(argv: Sequence[str]) -> dict[str, Any]:
    """Parse ``--key=value`` / ``--key value`` pairs into a dict.

    Values go through :func:`ast.literal_eval` (``1e-3`` -> float, ``[10,20]`` -> list), with YAML's
    ``true`` / ``false`` / ``null`` also understood; anything else stays the raw string
    (``--aggregator=bi`` -> ``'bi'``). Never ``eval``.
    """
    out: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        token = argv[i]
        if not token.startswith("--") or len(token) == 2:
            raise ValueError(f"unexpected command-line argument {token!r}; expected --key=value or --key value")
        body = token[2:]
        if "=" in body:
            key, raw = body.split("=", 1)
            i += 1
        else:
            key = body
            if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                raise ValueError(f"--{key} has no value; write --{key}=VALUE or --{key} VALUE")
            raw = argv[i + 1]
            i += 2
        if not key.isidentifier():
            raise ValueError(f"invalid config key {key!r} on the command line; keys look like learning_rate")
        if key in out:
            raise ValueError(f"--{key} is given twice on the command line")
        out[key] = _parse_value(raw)
    return out


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


class Config:
    """Merged configuration of one run. See the module docstring for the layers and type rules.

    Args:
        model: a registered model name; its task selects the task's YAML layers.
        dataset: a dataset name (or a directory path, for tasks that read one).
        config_files: extra YAML files, later wins.
        config_dict: overrides applied last; errors name them as coming from the command line.
    """

    def __init__(
        self,
        model: str,
        dataset: str,
        config_files: Sequence[str | Path] = (),
        config_dict: Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(config_files, (str, Path)):
            raise TypeError(f"config_files must be a list of paths, got a single {type(config_files).__name__} {str(config_files)!r}")
        if not isinstance(dataset, str) or not dataset:
            raise TypeError(f"dataset must be a non-empty str, got {dataset!r}")
        model_cls = get_model(model)
        task = get_task(model_cls.task)
        self.model = model
        self.dataset = dataset
        self.task = task.name
        self._values: dict[str, Any] = {}
        self._sources: dict[str, str] = {}
        self._default_sources: dict[str, str] = {}   # the defaults layer that last set each key (for type errors)
        self._types: dict[str, type | None] = {}
        self._nullable: dict[str, bool] = {}
        self._layers: list[str] = []

        default_layers: list[tuple[Path, bool]] = [(CORE_OVERALL, True), (task.overall, True), (task.model_dir / f"{model}.yaml", False)]
        if task.dataset_dir is not None and _is_plain_name(dataset):
            default_layers.append((task.dataset_dir / f"{dataset}.yaml", False))
        for path, required in default_layers:
            if required or path.is_file():
                self._apply_defaults(load_yaml(path), str(path))
        for path in config_files:
            self._apply_overrides(load_yaml(path), str(path))
        if config_dict:
            self._apply_overrides(dict(config_dict), COMMAND_LINE)

    # ------------------------------------------------------------------ building

    def _check_reserved(self, key: str, value: Any, where: str) -> None:
        own = self.model if key == "model" else self.dataset
        if value != own:
            raise ValueError(
                f"'{key}: {value}' in {where} conflicts with the {key} this config is built for ('{own}'); "
                f"choose the {key} with --{key}, not in a config file"
            )

    def _apply_defaults(self, data: dict[str, Any], where: str) -> None:
        self._layers.append(where)
        for key, value in data.items():
            if key in _RESERVED:
                self._check_reserved(key, value, where)
                continue
            if key in self._values:
                if value is None:
                    self._nullable[key] = True
                else:
                    value = self._check_type(key, value, where)
                    if self._types[key] is None:
                        self._types[key] = type(value)
            else:
                self._types[key] = None if value is None else type(value)
                self._nullable[key] = value is None
            self._values[key] = value
            self._sources[key] = where
            self._default_sources[key] = where

    def _apply_overrides(self, data: dict[str, Any], where: str) -> None:
        self._layers.append(where)
        for key, value in data.items():
            if not isinstance(key, str):
                raise ValueError(f"config keys must be strings, got {key!r} in {where}")
            if key in _RESERVED:
                self._check_reserved(key, value, where)
                continue
            if key not in self._values:
                raise ValueError(self._unknown_message(key, where))
            self._values[key] = self._check_type(key, value, where)
            self._sources[key] = where

    def _unknown_message(self, key: str, where: str) -> str:
        close = difflib.get_close_matches(key, list(self._values), n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'?" if close else (
            "every key needs a default in graphattn/overall.yaml, the task's overall.yaml, the model's or the dataset's YAML"
        )
        return f"unknown config key '{key}' in {where}; {hint}"

    def _check_type(self, key: str, value: Any, where: str) -> Any:
        expected = self._types[key]
        if isinstance(value, Path):
            value = str(value)
        if value is None:
            if expected is None or self._nullable[key]:
                return None
        elif expected is None:
            return value
        elif expected is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        elif isinstance(value, expected) and not (isinstance(value, bool) and expected is not bool):
            return value
        default_from = self._default_sources.get(key, "?")
        raise TypeError(
            f"config key '{key}' in {where}: expected {expected.__name__} (the type of its default in "
            f"{default_from}), got {'null' if value is None else _describe(value)}"
        )

    # ------------------------------------------------------------------ access

    def __getitem__(self, key: str) -> Any:
        if key == "model":
            return self.model
        if key == "dataset":
            return self.dataset
        try:
            return self._values[key]
        except KeyError:
            close = difflib.get_close_matches(key, list(self._values), n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise KeyError(f"no config key '{key}'{hint}") from None

    def __setitem__(self, key: str, value: Any) -> None:
        if key in _RESERVED:
            raise ValueError(f"'{key}' is fixed when the Config is built; build a new Config to change it")
        if key not in self._values:
            raise ValueError(self._unknown_message(key, _ASSIGNMENT))
        self._values[key] = self._check_type(key, value, _ASSIGNMENT)
        self._sources[key] = _ASSIGNMENT

    def __contains__(self, key: object) -> bool:
        return key in _RESERVED or key in self._values

    def __iter__(self) -> Iterator[str]:
        yield from _RESERVED
        yield from self._values

    def __len__(self) -> int:
        return len(self._values) + len(_RESERVED)

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self else default

    def source(self, key: str) -> str:
        """Where ``key`` got its value: a file path, ``'command line'``, ``'assignment'`` or ``'arguments'``."""
        if key in _RESERVED:
            return "arguments"
        self[key]  # KeyError with a suggestion when unknown
        return self._sources[key]

    def to_dict(self) -> dict[str, Any]:
        """All keys, ``model`` and ``dataset`` first; a deep copy."""
        return {"model": self.model, "dataset": self.dataset, **copy.deepcopy(self._values)}

    # ------------------------------------------------------------------ files

    def save(self, path: str | Path) -> Path:
        """Write every key to ``path`` as YAML, atomically. :meth:`load` reads it back."""
        path = Path(path)
        data = self.to_dict()
        try:
            text = yaml.safe_dump(data, sort_keys=False, default_flow_style=None, allow_unicode=True)
        except yaml.representer.RepresenterError:
            bad = [k for k, v in data.items() if not _yaml_ok(v)]
            raise TypeError(f"config keys {bad} hold values that cannot be written as YAML; use str, int, float, bool, list or dict") from None
        header = f"# merged config of {self.model} on {self.dataset} (task {self.task})\n"
        atomic_write_text(path, header + text)
        return path

    @classmethod
    def load(cls, path: str | Path, config_dict: Mapping[str, Any] | None = None) -> Config:
        """Rebuild a saved config: its ``model`` and ``dataset`` plus its values as a config file."""
        data = load_yaml(path)
        missing = [k for k in _RESERVED if not isinstance(data.get(k), str)]
        if missing:
            raise ValueError(f"{path}: a saved config needs 'model' and 'dataset' keys; missing or not a string: {', '.join(missing)}")
        return cls(data["model"], data["dataset"], config_files=[path], config_dict=config_dict)

    def __str__(self) -> str:
        lines = [f"# model: {self.model}   dataset: {self.dataset}   task: {self.task}"]
        for layer in self._layers:
            keys = sorted(k for k, s in self._sources.items() if s == layer)
            if keys:
                lines.append(f"# from {layer}")
                lines.extend(f"{k}: {_format_value(self._values[k])}" for k in keys)
        assigned = sorted(k for k, s in self._sources.items() if s == _ASSIGNMENT)
        if assigned:
            lines.append(f"# set by {_ASSIGNMENT}")
            lines.extend(f"{k}: {_format_value(self._values[k])}" for k in assigned)
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Config(model={self.model!r}, dataset={self.dataset!r}, task={self.task!r}, {len(self._values)} keys)"


def _is_plain_name(dataset: str) -> bool:
    return dataset not in (".", "..") and "/" not in dataset and os.sep not in dataset


def _yaml_ok(value: Any) -> bool:
    try:
        yaml.safe_dump(value)
    except yaml.representer.RepresenterError:
        return False
    return True


def _format_value(value: Any) -> str:
    try:
        return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()
    except yaml.representer.RepresenterError:
        return repr(value)

