"""Hyperparameter search: an Optuna study whose every trial is a normal run of the Trainer.

    python run.py --model KGAT --dataset ml-100k --search recsys/search/KGAT.yaml --trials 30 \\
        [--storage sqlite:///study.db] [--study-name NAME] [--key=value ...]

The search file is a config file in which a value may be a distribution instead of a plain value::

    learning_rate: {loguniform: [1.0e-4, 1.0e-2]}   # log-uniform float in [low, high]
    dropout: {uniform: [0.0, 0.5]}                   # uniform float in [low, high]
    hidden_size: {int: [16, 128]}                    # int in [low, high]; {int: [16, 128, 16]} steps by 16
    aggregator: {choice: [bi, gcn, graphsage]}       # one of the values (lists and dicts allowed)
    reg_weight: [{loguniform: [1.0e-6, 1.0e-3]}, 1.0e-5]   # a distribution inside a list searches that element
    epochs: 20                                       # a plain value is fixed for every trial

Every key must be a config key of the model (a typo gets the nearest name), every value must have the key's
type. A trial's config has the layers of ``run.py``, with the search file's values between ``--config_files`` and
the command line (so ``--epochs=50`` overrides a fixed ``epochs: 20``); a searched key may not be set on the
command line.

The study (TPE sampler seeded from ``seed``, median pruner) lives in ``<checkpoint_dir>/search/<study name>/``:
``study.db`` (the default storage, so rerunning the same command continues the study), ``runs/`` (one run
folder per trial), and at the end ``trials.md`` (the table of trials), ``study.json``, ``best.yaml`` (the best
trial's values, usable with ``--config_files``), ``history.png`` and ``importance.png``. ``--trials N`` is the
size of the study: a rerun adds trials until N are finished (complete, pruned or failed). Each evaluation of
the validation split reports ``valid_metric`` to the pruner, which stops trials that fall below the median of
earlier trials at the same epoch.
"""
from __future__ import annotations

import copy
import difflib
import hashlib
import json
import math
import re
import shlex
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from graphattn.config import Config, _format_value, _Loader, load_yaml
from graphattn.io import atomic_open, atomic_write_text
from graphattn.registry import get_dataset, get_model, get_task
from graphattn.results import machine_info
from graphattn.training import RunDir, Trainer, seed_everything

__all__ = ["DISTRIBUTIONS", "Param", "SearchSpace", "load_search_space", "run_search", "main"]

DISTRIBUTIONS = ("uniform", "loguniform", "int", "choice")
_SET_BY_SEARCH = ("checkpoint_dir", "resume")   # each trial gets its own fresh run folder
_PRIMITIVE = (bool, int, float, str, type(None))


# --------------------------------------------------------------------------- the search file


@dataclass
class Param:
    """One searched value: config key ``key`` (element ``index`` of a list-valued key, or the whole value)."""

    name: str                    # the Optuna parameter name: 'learning_rate' or 'reg_weight[0]'
    key: str
    index: int | None
    kind: str                    # one of DISTRIBUTIONS
    args: list[Any]
    labels: dict[str, Any] = field(default_factory=dict)   # choice: Optuna's label -> the value

    def suggest(self, trial) -> Any:
        if self.kind == "uniform":
            return trial.suggest_float(self.name, self.args[0], self.args[1])
        if self.kind == "loguniform":
            return trial.suggest_float(self.name, self.args[0], self.args[1], log=True)
        if self.kind == "int":
            step = self.args[2] if len(self.args) == 3 else 1
            return trial.suggest_int(self.name, self.args[0], self.args[1], step=step)
        return self.value_of(trial.suggest_categorical(self.name, list(self.labels)))

    def value_of(self, raw: Any) -> Any:
        """The config value of Optuna's stored parameter value ``raw``."""
        return copy.deepcopy(self.labels[raw]) if self.kind == "choice" else raw


@dataclass
class SearchSpace:
    """A parsed search file: ``fixed`` values and searched ``params`` (in file order)."""

    path: Path
    fixed: dict[str, Any]
    params: list[Param]
    lists: dict[str, list[Any]]   # list-valued keys with searched elements: their fixed elements

    @property
    def keys(self) -> list[str]:
        return list(self.fixed) + [k for k in dict.fromkeys(p.key for p in self.params)]

    def overrides(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The config values of one trial, from ``{param name: config value}``."""
        out = copy.deepcopy(self.fixed)
        for param in self.params:
            if param.index is None:
                out[param.key] = values[param.name]
        for key, elements in self.lists.items():
            out[key] = [values[f"{key}[{i}]"] if f"{key}[{i}]" in values else copy.deepcopy(e)
                        for i, e in enumerate(elements)]
        return {k: out[k] for k in self.keys}

    def sample(self, trial) -> dict[str, Any]:
        return self.overrides({p.name: p.suggest(trial) for p in self.params})

    def from_optuna(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The config values of a finished trial's ``params`` (Optuna's stored values)."""
        return self.overrides({p.name: p.value_of(params[p.name]) for p in self.params})


def _key_lines(text: str) -> dict[str, int]:
    """1-based line of each top-level key (for error messages)."""
    try:
        node = yaml.compose(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError:
        return {}
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {k.value: k.start_mark.line + 1 for k, _ in node.value if isinstance(k, yaml.ScalarNode)}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _choice_label(value: Any) -> Any:
    if isinstance(value, _PRIMITIVE):
        return value
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def _parse_distribution(kind: str, args: Any, where: str) -> tuple[list[Any], dict[str, Any]]:
    """Check ``{kind: args}``; return its arguments and, for ``choice``, Optuna's labels of the values."""
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise ValueError(f"{where}: choice needs a non-empty list of values, got {args!r}")
        labels = {}
        for value in args:
            label = _choice_label(value)
            if label in labels:
                raise ValueError(f"{where}: choice lists {value!r} twice")
            labels[label] = value
        return list(args), labels
    sizes = (2, 3) if kind == "int" else (2,)
    shape = "[low, high] or [low, high, step]" if kind == "int" else "[low, high]"
    if not isinstance(args, list) or len(args) not in sizes:
        raise ValueError(f"{where}: {kind} needs {shape}, got {args!r}")
    if kind == "int":
        if not all(isinstance(a, int) and not isinstance(a, bool) for a in args):
            raise ValueError(f"{where}: int needs whole numbers {shape}, got {args!r}")
        if len(args) == 3 and args[2] < 1:
            raise ValueError(f"{where}: int step must be >= 1, got {args[2]}")
    elif not all(_number(a) and math.isfinite(a) for a in args):
        raise ValueError(f"{where}: {kind} needs two finite numbers [low, high], got {args!r}")
    low, high = args[0], args[1]
    if not low < high:
        raise ValueError(f"{where}: empty range [{low}, {high}]: {kind} needs low < high "
                         "(a single value is written plain, without a distribution)")
    if kind == "loguniform" and low <= 0:
        raise ValueError(f"{where}: loguniform needs 0 < low < high, got [{low}, {high}]")
    if kind != "int":
        args = [float(low), float(high)]
    return list(args), {}


def _distribution_of(value: Any, key: str, default: Any, where: str) -> tuple[str, Any] | None:
    """``(kind, args)`` when ``value`` is a one-key ``{distribution: args}`` mapping, ``None`` for a plain value."""
    if not (isinstance(value, dict) and len(value) == 1):
        return None
    (kind, args), = value.items()
    if kind in DISTRIBUTIONS:
        return kind, args
    if default is None or isinstance(default, dict):   # the key takes mappings: this is a plain value
        return None
    close = difflib.get_close_matches(str(kind), DISTRIBUTIONS, n=1, cutoff=0.7)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise ValueError(f"{where}: unknown distribution '{kind}'{hint} (distributions: {', '.join(DISTRIBUTIONS)})")


def _check_value(config: Config, key: str, value: Any, where: str) -> None:
    try:
        config[key] = value
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {str(exc).replace(' in assignment', '')}") from None


def load_search_space(path: str | Path, config: Config) -> SearchSpace:
    """Parse and check the search file ``path`` against ``config`` (the merged config without the search).

    Raises ``ValueError`` (``FileNotFoundError`` for a missing file) naming the file, the line and the key for a
    YAML error, an unknown key (with the nearest name), an unknown distribution, an empty or inverted range, a
    value of the wrong type, or a key the search sets itself.
    """
    path = Path(path)
    data = load_yaml(path)   # missing file / YAML error / not a mapping: its own one-line error with the line
    lines = _key_lines(path.read_text(encoding="utf-8"))
    if not data:
        raise ValueError(f"{path}: the search file is empty; give at least one key with a distribution")
    probe = copy.deepcopy(config)
    fixed: dict[str, Any] = {}
    params: list[Param] = []
    lists: dict[str, list[Any]] = {}
    for key, value in data.items():
        where = f"{path}, line {lines.get(key, '?')}, '{key}'"
        if key in ("model", "dataset"):
            raise ValueError(f"{where}: the {key} is chosen with --{key}, not searched")
        if key in _SET_BY_SEARCH:
            raise ValueError(f"{where}: every trial gets its own run folder; {key} cannot be set in a search file")
        if key not in config:
            close = difflib.get_close_matches(key, [k for k in config if k not in ("model", "dataset")], n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'?" if close else "it has no default for this model and dataset"
            raise ValueError(f"{path}, line {lines.get(key, '?')}: unknown config key '{key}'; {hint}")
        default = config[key]
        dist = _distribution_of(value, key, default, where)
        if dist is not None:
            args, labels = _parse_distribution(*dist, where)
            param = Param(key, key, None, dist[0], args, labels)
            samples = list(labels.values()) if dist[0] == "choice" else args[:2]
            for sample in samples:
                _check_value(probe, key, sample, where)
            params.append(param)
        elif isinstance(value, list) and isinstance(default, list) and any(
                isinstance(e, dict) and len(e) == 1 and next(iter(e)) in DISTRIBUTIONS for e in value):
            lists[key] = []
            first = []
            for i, element in enumerate(value):
                dist = _distribution_of(element, key, None, f"{where}[{i}]")
                if dist is None:
                    lists[key].append(element)
                    first.append(element)
                    continue
                args, labels = _parse_distribution(*dist, f"{where}[{i}]")
                params.append(Param(f"{key}[{i}]", key, i, dist[0], args, labels))
                lists[key].append(None)
                first.append(next(iter(labels.values())) if labels else args[0])
            _check_value(probe, key, first, where)
        else:   # a plain value (an unknown distribution has raised in _distribution_of above)
            _check_value(probe, key, value, where)
            fixed[key] = value
    if not params:
        raise ValueError(f"{path}: nothing to search; give at least one key a distribution "
                         f"({', '.join(f'{{{d}: ...}}' for d in DISTRIBUTIONS)})")
    return SearchSpace(path, fixed, params, lists)


# --------------------------------------------------------------------------- the study


def _judge(config: Config) -> tuple[str, str]:
    """The task's validation ``metric`` and ``maximize`` / ``minimize`` from its ``mode``, read without loading data."""
    task_cls = get_task(get_model(config["model"]).task).task
    probe = object.__new__(task_cls)   # metric and mode are class attributes or properties of the config
    probe.config = config
    return str(probe.metric), "maximize" if probe.mode == "max" else "minimize"


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text).strip("._") or "study"


@dataclass
class SearchResult:
    study: Any
    folder: Path
    table: str
    best_config: Path | None


def run_search(model: str, dataset: str, search_file: str | Path, trials: int, *,
               storage: str | None = None, study_name: str | None = None,
               config_files: Sequence[str | Path] = (), overrides: Mapping[str, Any] | None = None,
               pruner: Any = None, out: Callable[[str], None] = print) -> SearchResult:
    """Run (or continue) the study until it holds ``trials`` finished trials; write its report.

    ``pruner`` defaults to Optuna's ``MedianPruner`` (5 startup trials, fewer when ``trials`` < 20). Raises
    ``ValueError`` for a bad search file, config or study before any trial runs.
    """
    try:
        import optuna
    except ImportError:
        raise ValueError("--search needs optuna: pip install 'optuna>=3.6,<5'") from None
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ValueError(f"--trials must be an int >= 1, got {trials!r}")
    overrides = dict(overrides or {})
    base = Config(model, dataset, config_files=config_files, config_dict=overrides)
    space = load_search_space(search_file, base)
    get_dataset(dataset, get_model(model).task)
    both = [k for k in dict.fromkeys(p.key for p in space.params) if k in overrides]
    if both:
        raise ValueError(f"{', '.join(both)}: searched in {space.path} and set on the command line; keep one of them")
    if overrides.get("resume"):
        raise ValueError("--resume does not apply to a search; rerun the search command to continue its study")

    metric, direction = _judge(base)
    if base["num_threads"] > 0:
        torch.set_num_threads(base["num_threads"])
    name = study_name or f"{_safe(model)}-{_safe(Path(dataset).name)}-{_safe(space.path.stem)}"
    folder = Path(base["checkpoint_dir"]) / "search" / _safe(name)
    folder.mkdir(parents=True, exist_ok=True)
    if storage is None:
        storage = f"sqlite:///{(folder / 'study.db').resolve()}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if storage.startswith(("sqlite:", "postgresql", "mysql")):
        # a trial of a killed process (no Ctrl-C) is marked failed once it has not beaten for 2 minutes
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = optuna.storages.RDBStorage(storage, heartbeat_interval=60)
    if pruner is None:   # Optuna's median rule; it waits for 5 finished trials (fewer in a small study)
        pruner = optuna.pruners.MedianPruner(n_startup_trials=max(2, min(5, trials // 4)))
    study = optuna.create_study(study_name=name, storage=storage, load_if_exists=True, direction=direction,
                                pruner=pruner)
    identity = {"model": model, "dataset": dataset, "metric": metric,
                "search": hashlib.sha256(json.dumps([space.fixed, [p.__dict__ for p in space.params]],
                                                    sort_keys=True, default=str).encode()).hexdigest()[:12]}
    seen = study.user_attrs.get("identity")
    if seen is None:
        study.set_user_attr("identity", identity)
        study.set_user_attr("search_file", str(space.path))
    elif seen != identity:
        raise ValueError(f"study '{name}' in {redact(storage if isinstance(storage, str) else storage.url)} was made for "
                         f"{seen['model']} on {seen['dataset']} with another search space or metric "
                         f"(search file {study.user_attrs.get('search_file')}); choose a new --study-name or delete {folder}")

    done_states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
    done = len(study.get_trials(deepcopy=False, states=done_states))
    # seeded from `seed`, shifted by the trials already made: a continued study draws new points, not the first ones again
    # (n_startup_trials: random draws before TPE's model; Optuna's 10, fewer for a small study)
    study.sampler = optuna.samplers.TPESampler(seed=int(base["seed"]) + len(study.trials),
                                               n_startup_trials=max(3, min(10, trials // 3)))
    remaining = trials - done
    if done and remaining > 0:
        out(f"study '{name}': continuing after {done} finished trials ({folder})")
    if remaining > 0:
        _optimize(study, space, base, metric, folder, remaining, trials, done, config_files, overrides)
    else:
        out(f"study '{name}' already holds {done} finished trials (--trials {trials}); nothing to run")
    result = report(study, space, base, metric, folder, overrides)
    out(result.table)
    return result


def _optimize(study, space: SearchSpace, base: Config, metric: str, folder: Path, remaining: int, trials: int,
              done: int, config_files, overrides) -> None:
    import optuna
    from tqdm.auto import tqdm

    bar = tqdm(total=trials, initial=done, desc=f"search {study.study_name}", unit="trial",
               disable=not base["show_progress"], dynamic_ncols=True)

    def objective(trial) -> float:
        values = space.sample(trial)
        config = Config(base.model, base.dataset, config_files=config_files,
                        config_dict={**values, **overrides, "checkpoint_dir": str(folder / "runs"),
                                     "show_progress": False})   # the study's bar over trials replaces the epochs' bars
        if config["num_threads"] > 0:
            torch.set_num_threads(config["num_threads"])
        run = RunDir.create(config)
        trial.set_user_attr("run", run.path.name)
        run.logger.info("trial %d of study '%s': %s", trial.number, study.study_name,
                        " ".join(f"{k}={v}" for k, v in values.items() if k not in space.fixed))
        try:
            seed_everything(config["seed"], config["reproducibility"])
            trainer = Trainer.from_config(config, run)

            def prune(epoch: int, metrics: Mapping[str, float]) -> None:
                value = float(metrics[trainer.task.metric])
                trial.set_user_attr("epochs", epoch)
                if not math.isfinite(value):
                    return
                trial.report(value, epoch)
                if trial.should_prune():
                    run.logger.info("trial %d pruned after epoch %d (%s = %.4f)", trial.number, epoch,
                                    trainer.task.metric, value)
                    raise optuna.TrialPruned(f"epoch {epoch}: {trainer.task.metric} = {value:.4f}")

            trainer.on_evaluation = prune
            test = trainer.fit()
            trial.set_user_attr("test", {k: float(v) for k, v in test.items()})
            trial.set_user_attr("best_epoch", trainer.best_epoch)
            best = trainer.stopper.best
            if best is None:
                raise FloatingPointError(f"no finite {metric} was measured")
            return float(best)
        except FloatingPointError as exc:   # a diverging trial (too large a learning rate): failed, the study goes on
            trial.set_user_attr("error", str(exc))
            run.logger.warning("trial %d failed: %s", trial.number, exc)
            raise
        finally:
            run.close()

    def tick(study, trial) -> None:
        bar.update(1)
        try:
            bar.set_postfix_str(f"best {metric} {study.best_value:.4f} (#{study.best_trial.number})")
        except ValueError:   # no completed trial yet
            pass
        bar.write(f"trial {trial.number} {trial.state.name.lower()}"
                  + (f" {metric}={trial.value:.4f}" if trial.value is not None else "")
                  + f"  {trial.user_attrs.get('run', '')}")

    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
    try:
        study.optimize(objective, n_trials=remaining, catch=(FloatingPointError,),
                       callbacks=[optuna.study.MaxTrialsCallback(trials, states=states), tick])
    finally:
        bar.close()


# --------------------------------------------------------------------------- the report


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(_choice_label(value))


def report(study, space: SearchSpace, base: Config, metric: str, folder: Path,
           overrides: Mapping[str, Any] | None = None) -> SearchResult:
    """Write ``trials.md``, ``study.json``, ``best.yaml`` and the plots into ``folder``; return the table.

    ``overrides``: the command line's values, which replace the search file's fixed ones in ``best.yaml``."""
    overrides = overrides or {}
    import optuna

    trials = [t for t in study.get_trials(deepcopy=False) if t.state != optuna.trial.TrialState.WAITING]
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = study.best_trial if complete else None
    names = [p.name for p in space.params]
    header = ["trial", "state", *names, f"valid {metric}", "epochs", "run"]
    rows = []
    for t in trials:
        value = "" if t.value is None else f"{t.value:.4f}"
        if t.state == optuna.trial.TrialState.PRUNED and t.intermediate_values:
            value = f"({t.intermediate_values[max(t.intermediate_values)]:.4f})"
        mark = " *" if best is not None and t.number == best.number else ""
        rows.append([f"{t.number}{mark}", t.state.name.lower(), *(_fmt(t.params[n]) if n in t.params else "" for n in names),
                     value, str(t.user_attrs.get("epochs", "")), t.user_attrs.get("run", "")])
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    lines = [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)]
    counts = {s: sum(t.state.name.lower() == s for t in trials) for s in ("complete", "pruned", "fail", "running")}
    summary = [f"{len(trials)} trials: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n),
               "(a pruned trial's value is its last reported one, in parentheses; * marks the best trial)"]
    best_path = None
    if best is not None:
        test = best.user_attrs.get("test", {})
        test_value = test.get(metric)
        summary.append(f"best trial {best.number}: valid {metric} = {best.value:.4f}, test {metric} = "
                       + (f"{test_value:.4f}" if test_value is not None else "?")
                       + f" (run {best.user_attrs.get('run', '?')})")
        values = {k: overrides.get(k, v) for k, v in space.from_optuna(best.params).items()}
        best_path = folder / "best.yaml"
        body = "".join(f"{k}: {_format_value(v)}\n" for k, v in {"model": base.model, "dataset": base.dataset,
                                                                   **values}.items())
        atomic_write_text(best_path, f"# best trial {best.number} of study '{study.study_name}' "
                          f"(search file {space.path}): valid {metric} = {best.value:.6g}, test {metric} = "
                          f"{test_value if test_value is None else f'{test_value:.6g}'}\n"
                          f"# use: python run.py --model {base.model} --dataset {base.dataset} --config_files {best_path}\n"
                          + body)
        summary.append(f"best config: {best_path}")
    else:
        summary.append("no trial completed yet: no best config")
    table = "\n".join(lines + [""] + summary)
    atomic_write_text(folder / "trials.md", table + "\n")
    payload = {
        "command": redact(shlex.join(["python", *map(str, sys.argv)])), "machine": machine_info(),
        "study": study.study_name, "direction": study.direction.name.lower(), "metric": metric,
        "search_file": str(space.path), "fixed": space.fixed,
        "best": None if best is None else {"number": best.number, "valid": best.value,
                                           "test": best.user_attrs.get("test", {}),
                                           "config": space.from_optuna(best.params), "run": best.user_attrs.get("run")},
        "trials": [{"number": t.number, "state": t.state.name.lower(), "params": dict(t.params), "value": t.value,
                    "intermediate": {str(k): v for k, v in sorted(t.intermediate_values.items())},
                    **{k: v for k, v in t.user_attrs.items()}} for t in trials],
    }
    atomic_write_text(folder / "study.json", json.dumps(payload, indent=2, default=str) + "\n")
    notes = _plots(study, folder, metric, int(base["seed"]), len(complete))
    table = "\n".join([table, *notes])
    return SearchResult(study, folder, table, best_path)


def _save(ax, path: Path, title: str) -> None:
    import matplotlib.pyplot as plt

    fig = ax.figure
    ax.set_title("", loc="left")   # Optuna's importance plot puts its title on the left
    ax.set_title(title)
    fig.set_size_inches(8, 4.5)
    with atomic_open(path, "wb") as fh:   # "tight": Optuna's legend and long parameter names stay in the picture
        fig.savefig(fh, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def _plots(study, folder: Path, metric: str, seed: int, n_complete: int) -> list[str]:
    """``history.png`` and ``importance.png`` (Optuna's matplotlib plots); notes on what could not be drawn."""
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as ovm

    notes = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if n_complete >= 1:
            _save(ovm.plot_optimization_history(study), folder / "history.png",
                  f"{study.study_name}: valid {metric} by trial")
            notes.append(f"plots: {folder / 'history.png'}")
        else:
            notes.append("no optimisation-history plot: no trial completed")
        if n_complete >= 2:
            try:
                evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
                _save(ovm.plot_param_importances(study, evaluator=evaluator), folder / "importance.png",
                      f"{study.study_name}: importance for {metric} (fANOVA)")
                notes.append(f"       {folder / 'importance.png'}")
            except (ValueError, RuntimeError) as exc:   # e.g. every completed trial drew the same values
                plt.close("all")
                notes.append(f"no parameter-importance plot: {exc}")
        else:
            notes.append(f"no parameter-importance plot: it needs >= 2 completed trials, the study has {n_complete}")
    return notes


# --------------------------------------------------------------------------- run.py


_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@/\s]*@")


def redact(text: str) -> str:
    """``text`` with the password of any ``scheme://user:password@host`` URL replaced by ``***`` (a storage URL
    such as ``postgresql://me:secret@db/optuna`` must not reach study.json or an error message)."""
    return _CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)


def main(args, overrides: Mapping[str, Any]) -> int:
    """``run.py --search``: ``args`` holds model, dataset, config_files, search, trials, storage, study_name."""
    if args.search is None:
        raise ValueError("--trials, --storage and --study-name need --search FILE")
    try:
        run_search(args.model, args.dataset, args.search, 30 if args.trials is None else args.trials,
                   storage=args.storage, study_name=args.study_name, config_files=args.config_files,
                   overrides=overrides)
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to continue the study", flush=True)
        return 130
    return 0
