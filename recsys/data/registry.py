"""Registered recommendation datasets.

``register_all()`` adds them to ``graphattn.registry``; the ``recsys`` package calls it once on import.
Every loader has the signature ``loader(config: Mapping) -> RecDataset``.
"""
from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .atomic import load_atomic
from .dataset import RecDataset
from .download import download, safe_unzip
from .kgat_format import load_kgat
from .synthetic import load_planted_kg

log = logging.getLogger(__name__)

KGAT_BASE = "https://raw.githubusercontent.com/xiangwang1223/knowledge_graph_attention_network/master/Data/{name}/"
KGAT_FILES = ("train.txt", "test.txt", "kg_final.txt.zip")
KGAT_OPTIONAL = ("user_list.txt", "item_list.txt", "entity_list.txt", "relation_list.txt")
KGAT_DATASETS = ("amazon-book", "last-fm", "yelp2018")


def data_root(config: Mapping[str, Any] | None = None) -> Path:
    """``config['data_path']`` if set, else ``$GRAPHATTN_DATA``, else ``<repo>/data``."""
    if config and config.get("data_path"):
        return Path(str(config["data_path"])).expanduser()
    env = os.environ.get("GRAPHATTN_DATA")
    return Path(env).expanduser() if env else Path(__file__).resolve().parents[2] / "data"


def recbole_example_dir(name: str = "ml-100k") -> Path:
    """Folder of RecBole's bundled example data, found without importing recbole."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"dataset {name!r} is read from the recbole package's bundled files; install them "
                                "with `pip install --no-deps recbole` or put the atomic files in a folder and "
                                "pass its path")
    return Path(list(spec.submodule_search_locations)[0]) / "dataset_example" / name


def load_ml100k(config: Mapping[str, Any]) -> RecDataset:
    return load_atomic(recbole_example_dir("ml-100k"), config, name="ml-100k")


def fetch_kgat(name: str, config: Mapping[str, Any] | None = None, show_progress: bool = True) -> Path:
    """Make sure ``<data root>/<name>/`` holds the KGAT files (download missing ones) and return it."""
    folder = data_root(config) / name
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    base = KGAT_BASE.format(name=name)
    first_use = not all((folder / f).exists() for f in ("train.txt", "test.txt", "kg_final.txt"))
    try:
        if not (folder / "kg_final.txt").exists():
            safe_unzip(download(base + "kg_final.txt.zip", folder / "kg_final.txt.zip",
                                show_progress=show_progress), folder)
        for f in ("train.txt", "test.txt"):
            download(base + f, folder / f, show_progress=show_progress)
    except (OSError, ValueError):
        if created and not any(folder.iterdir()):
            folder.rmdir()  # a failed first fetch leaves no empty dataset folder behind
        raise
    if first_use:  # names are optional: try once, never block offline use later
        for f in KGAT_OPTIONAL:
            if not (folder / f).exists():
                try:
                    download(base + f, folder / f, show_progress=show_progress)
                except OSError as e:
                    log.warning("optional file %s not fetched: %s", f, e)
    return folder


def _kgat_loader(name: str):
    def loader(config: Mapping[str, Any]) -> RecDataset:
        return load_kgat(fetch_kgat(name, config), config, name=name)
    loader.__name__ = f"load_{name.replace('-', '_')}"
    return loader


LOADERS = {
    "ml-100k": (load_ml100k, "MovieLens-100K with the Freebase KG linked by RecBole (bundled, offline)"),
    "planted-kg": (load_planted_kg, "synthetic planted-cluster KG: KG-aware models should beat MF (seconds)"),
    **{n: (_kgat_loader(n), f"{n} from the KGAT authors' repository (downloaded on first use)")
       for n in KGAT_DATASETS},
}


def register_all() -> None:
    """Register every dataset above with ``graphattn.registry`` (task ``recsys``)."""
    from graphattn.registry import register_dataset
    for name, (loader, description) in LOADERS.items():
        register_dataset(name, task="recsys", loader=loader, description=description)
