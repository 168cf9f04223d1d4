"""The one entry point: train and evaluate a registered model on a registered dataset.

    python run.py --model KGAT --dataset ml-100k [--config_files a.yaml b.yaml] [--key=value ...]

Config layers (later wins): graphattn/overall.yaml < the task's overall.yaml < model/<Model>.yaml
< dataset/<name>.yaml < --config_files < --key=value. The run's folder is printed as the last line.

Serve a trained recommender over HTTP, or the CHM-Corr++ page (recsys/serve.py):

    python run.py serve --run saved/<run folder> [--port 8000]      python run.py serve --app chm-corr

Several processes, one or more machines (data-parallel; see docs/scale.md):

    torchrun --nproc_per_node=4 run.py --model KGAT --dataset ml-100k
"""

from __future__ import annotations

import argparse
import shutil
import sys
from typing import Sequence

import torch

import recsys  # noqa: F401  (registers the recommendation task, its models and datasets)
import sequence  # noqa: F401  (registers the sequence task and its models)
import vision  # noqa: F401  (registers the vision task and its models)
from graphattn.config import Config, parse_cli_overrides
from graphattn.registry import get_dataset, get_model, get_task, list_datasets, list_models, list_tasks
from graphattn.training import (MemoryRun, RunDir, Trainer, distributed, format_metrics_table, resolve_device,
                                seed_everything)

USER_ERRORS = (ValueError, TypeError, FileNotFoundError)

# systems of the papers that are analyses or sampling-time methods around a registered model, not a model that
# --model trains: each runs through its script (which trains what it needs through the Trainer)
EXPERIMENT_SYSTEMS = (
    ("HeadHunter / SoftPAG guidance (on DiT)", "experiments/headhunter.py"),
    ("Spice-E cross-entity guidance (on DiT)", "experiments/spice_e.py"),
    ("DPL, Dynamic Prompt Learning", "experiments/dpl.py"),
    ("A-SDM distillation (teacher: --model UNet)", "experiments/asdm.py"),
    ("CHM-Corr++ interactive correspondence", "experiments/chm_corr.py"),
    ("LMEye interactive perception", "experiments/lmeye.py"),
)


def _epilog() -> str:
    lines = ["registered models:"]
    tasks = sorted(set(list_tasks()) | {get_model(m).task for m in list_models()})
    for task in tasks:
        names = list_models(task)
        if names:
            lines.append(f"  {task}: {', '.join(names)}")
    if len(lines) == 1:
        lines.append("  (none: no domain package registered a model)")
    lines.append("")
    lines.append("registered datasets:")
    labels = {name: f"{name} ({', '.join(get_dataset(name).tasks)})" for name in list_datasets()}
    width = max(map(len, labels.values()), default=0)
    for name, label in labels.items():
        lines.append(f"  {label.ljust(width)}  {get_dataset(name).description}".rstrip())
    if not list_datasets():
        lines.append("  (none registered)")
    path_tasks = [t for t in list_tasks() if get_task(t).path_loader_ok]
    if path_tasks:
        lines.append(f"  --dataset may also be a directory path for: {', '.join(path_tasks)}")
    lines.append("")
    lines.append("run by their scripts, not --model (python <script> --help):")
    width = max(len(name) for name, _ in EXPERIMENT_SYSTEMS)
    lines.extend(f"  {name.ljust(width)}  {script}" for name, script in EXPERIMENT_SYSTEMS)
    lines.append("")
    lines.append("Any config key can be set with --key=value (values parsed as Python literals, e.g. --topk=[10,20]).")
    lines.append("Common ones (defaults in graphattn/overall.yaml and each task's overall.yaml):")
    lines.append("  --epochs=N --learning_rate=X --train_batch_size=N --eval_step=N --stopping_step=N --seed=N")
    lines.append("  --device=auto|cpu|cuda --num_threads=N --show_progress=false --checkpoint_dir=DIR")
    lines.append("  --resume=saved/<run folder>   continue an interrupted run exactly from its last.pt")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run.py",
        description="Train and evaluate a registered model on a dataset.",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # --config must not silently mean --config_files
    )
    parser.add_argument("--model", required=True, help="registered model name, e.g. KGAT")
    parser.add_argument("--dataset", required=True, help="registered dataset name (or a directory, where the task reads one)")
    parser.add_argument("--config_files", nargs="+", default=[], metavar="FILE", help="YAML files applied in order after the defaults")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error in the data or the model")
    search = parser.add_argument_group("hyperparameter search (Optuna; graphattn/search.py)")
    search.add_argument("--search", metavar="FILE", help="search space YAML, e.g. recsys/search/KGAT.yaml: run a study of many runs")
    search.add_argument("--trials", type=int, metavar="N", help="finished trials the study should hold (default 30); a rerun continues")
    search.add_argument("--storage", metavar="URL", help="Optuna storage, e.g. sqlite:///study.db (default: study.db in the study folder)")
    search.add_argument("--study-name", dest="study_name", metavar="NAME", help="study name (default <model>-<dataset>-<search file>)")
    return parser


def _error(message: object) -> int:
    text = " ".join(str(message).split())  # one line, whatever the exception held
    print(f"error: {text}", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    finally:
        distributed.shutdown()


def _main(argv: Sequence[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["serve"]:   # run.py serve --run saved/<run folder> | --app chm-corr (recsys/serve.py)
        from recsys.serve import main as serve_main
        return serve_main(argv[1:])
    parser = build_parser()
    try:
        args, rest = parser.parse_known_args(None if argv is None else list(argv))
    except SystemExit as exc:  # --help, or argparse's own usage error (exit 2)
        return int(exc.code or 0)

    if args.search is not None or args.trials is not None or args.storage or args.study_name:
        from graphattn import search   # imports optuna only when asked for
        try:
            return search.main(args, parse_cli_overrides(rest))
        except USER_ERRORS as exc:
            return _error(exc)

    try:
        overrides = parse_cli_overrides(rest)
        task = get_task(get_model(args.model).task)
        get_dataset(args.dataset, task.name)
        config = Config(args.model, args.dataset, config_files=args.config_files, config_dict=overrides)
        # under torchrun (WORLD_SIZE > 1) join the process group; with CUDA this process takes cuda:LOCAL_RANK
        config["device"] = str(distributed.init_from_env(resolve_device(config["device"])))
    except USER_ERRORS as exc:
        return _error(exc)

    if config["num_threads"] > 0:
        torch.set_num_threads(config["num_threads"])
    main_process = distributed.is_main()  # only rank 0 writes the run folder and prints
    try:   # a bad --resume fails here, before the merged config is printed
        if not main_process:
            run = MemoryRun()
        else:
            # a resumed folder's config.yaml is replaced only once its checkpoint has loaded (below)
            run = RunDir.open(config["resume"], config, save_config=False) if config["resume"] else RunDir.create(config)
    except USER_ERRORS as exc:
        return _error(exc)
    if main_process:
        print(config, flush=True)
    seed_everything(config["seed"], config["reproducibility"])

    try:
        trainer = Trainer.from_config(config, run)
    except (KeyboardInterrupt, *USER_ERRORS) as exc:
        # nothing was trained: a folder made for this run holds nothing worth keeping
        run.close()
        if not config["resume"] and run.path is not None:
            shutil.rmtree(run.path, ignore_errors=True)
        if isinstance(exc, KeyboardInterrupt):
            return 130
        if args.debug:
            raise
        return _error(f"{exc} (--debug shows the traceback)")
    except Exception:
        run.close()
        if not config["resume"] and run.path is not None:
            shutil.rmtree(run.path, ignore_errors=True)
        raise
    if config["resume"]:
        run.save_config(config)   # the checkpoint loaded: the folder now belongs to this (possibly longer) run

    try:
        final = trainer.fit()
    except KeyboardInterrupt:
        return 130  # the Trainer has logged where the run stopped and how to resume it
    except Exception as exc:
        run.logger.error("run failed: %s: %s", type(exc).__name__, exc)
        raise
    finally:
        run.close()

    if main_process:
        print(format_metrics_table(final))
        print(f"Run folder: {run.path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
