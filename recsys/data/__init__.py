"""Recommendation data: the ``RecDataset`` container, readers (RecBole atomic, KGAT), splits, downloads,
a synthetic planted-KG generator, and ``load_dataset``.

Config keys read here (defaults in parentheses):
    eval_args (dict, {split: {RS: [0.8, 0.1, 0.1]}, order: RO, group_by: user}) atomic-data split
    threshold (dict | None, None)   keep interactions whose field >= value, e.g. {rating: 4}
    valid_ratio (float, 0.1)        KGAT files: share of each user's train items moved to valid
    seed (int, 2019)                split / carve / synthetic seed
    USER_ID_FIELD (str, user_id), ITEM_ID_FIELD (str, item_id), RATING_FIELD (str, rating),
    TIME_FIELD (str, timestamp), ENTITY_ID_FIELD (str, entity_id), HEAD_ENTITY_ID_FIELD (str, head_id),
    RELATION_ID_FIELD (str, relation_id), TAIL_ENTITY_ID_FIELD (str, tail_id)   atomic column names
    data_path (str | None, None)    download cache root (else $GRAPHATTN_DATA, else <repo>/data)
    planted_kg (dict, {})           keyword arguments of ``planted_kg`` for the ``planted-kg`` dataset
    use_kg (bool, True), kg_min_degree (int, 0)   KG ablations applied by the trainer (``RecDataset.filter_kg``)
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from graphattn.download import download, safe_unzip, sha256_of

from .atomic import load_atomic, read_atomic_file, write_atomic_files
from .dataset import RecDataset
from .kgat_format import load_kgat, write_kgat_files
from .splits import carve_valid, split_indices
from .synthetic import item_clusters, planted_kg

__all__ = ["RecDataset", "load_dataset", "detect_format", "load_atomic", "read_atomic_file",
           "write_atomic_files", "load_kgat", "write_kgat_files", "split_indices", "carve_valid",
           "download", "safe_unzip", "sha256_of", "planted_kg", "item_clusters"]


def detect_format(directory: str | os.PathLike) -> str:
    """``"kgat"`` if the folder has ``train.txt``, ``"atomic"`` if it has ``*.inter``; else ``ValueError``."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a directory; pass a registered dataset name or a folder "
                                "with KGAT files (train.txt, test.txt, kg_final.txt) or RecBole atomic files "
                                "(<name>.inter, ...)")
    if (directory / "train.txt").exists():
        return "kgat"
    if any(directory.glob("*.inter")):
        return "atomic"
    found = sorted(p.name for p in directory.iterdir())[:10]
    raise ValueError(f"{directory}: unknown dataset format; looked for train.txt (KGAT format) and *.inter "
                     f"(RecBole atomic files), found {found}")


def load_dataset(name_or_path: str | os.PathLike, config: Mapping[str, Any] | None = None) -> RecDataset:
    """Load a registered dataset by name, or a folder in KGAT or atomic format."""
    config = dict(config or {})
    path = Path(name_or_path)
    if path.is_dir():
        fmt = detect_format(path)
        return load_kgat(path, config) if fmt == "kgat" else load_atomic(path, config)
    name = str(name_or_path)
    from .registry import LOADERS
    try:
        from graphattn.registry import get_dataset
        entry = get_dataset(name)
    except (ImportError, ValueError) as e:
        if name in LOADERS:  # registry not filled (recsys not imported as a package yet)
            return LOADERS[name][0](config)
        import difflib
        close = difflib.get_close_matches(name, list(LOADERS), n=3)
        raise ValueError(f"unknown dataset {name!r} and no such folder; recsys datasets: {sorted(LOADERS)}"
                         + (f"; did you mean {close}?" if close else "")
                         + "; or pass a folder with KGAT files (train.txt) or RecBole atomic files (*.inter)") from e
    if entry.tasks and "recsys" not in entry.tasks:
        raise ValueError(f"dataset {name!r} is registered for {', '.join(entry.tasks)}, not recsys")
    if entry.loader is None:
        return load_dataset(Path(entry.name), config)
    return entry.loader(config)
