"""Registered recommendation datasets.

``register_all()`` adds them to ``graphattn.registry``; the ``recsys`` package calls it once on import.
Every loader has the signature ``loader(config: Mapping) -> RecDataset``.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import urllib.error
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from graphattn.download import DownloadError, download, safe_unzip

from .atomic import load_atomic
from .dataset import RecDataset
from .kgat_format import load_kgat
from .synthetic import load_planted_kg

log = logging.getLogger(__name__)

KGAT_BASE = "https://raw.githubusercontent.com/xiangwang1223/knowledge_graph_attention_network/master/Data/{name}/"
KGAT_FILES = ("train.txt", "test.txt", "kg_final.txt.zip")
KGAT_OPTIONAL = ("user_list.txt", "item_list.txt", "entity_list.txt", "relation_list.txt")
KGAT_DATASETS = ("amazon-book", "last-fm", "yelp2018")
# Published checksums of the KGAT repository's files: git blob id (sha1 of b"blob <size>\0" + bytes, as listed
# by the repository) and sha256 where one was at hand (issue #18). Keyed by URL, so a file fetched from
# anywhere else (a mirror, a test server) falls back to trust on first use (SHA256SUMS).
KGAT_CHECKSUMS = {KGAT_BASE.format(name=name) + file: sums for name, files in {
    "amazon-book": {
        "train.txt": {"git_sha1": "af17875a232fbcf27f08270c77fecefe9e4d9806",
                      "sha256": "4d10106bb06a77e11df660429903c0067aeb85b86431807836b0d8b7edc30c38"},
        "test.txt": {"git_sha1": "2b34f222772f224522740242b09ae2e48b395410",
                     "sha256": "f47eff9d35fb95c07d74251a991478a84095ce6c5969b0dafcb4afe99fc716ec"},
        "kg_final.txt.zip": {"git_sha1": "7eedb0ed50a9bae8a89ef2193b3a9fb1bf9ed03e"}},
    "last-fm": {
        "train.txt": {"git_sha1": "905779bf273225caa33049cef2b6cf9b923bd139"},
        "test.txt": {"git_sha1": "ae3e3402405895b0866be03746d547bd701f6888",
                     "sha256": "bb79750f3a034e5ce5bc4aa8541cdc9d456ea51158f0059f84167942bd9837b2"},
        "kg_final.txt": {"git_sha1": "42d2726e067d743bf73891a7ff8caddb5c1adf84"}},   # not zipped there
    "yelp2018": {
        "train.txt": {"git_sha1": "c834b6e61cbb6a716b039367f3ddd711ca3a2483"},
        "test.txt": {"git_sha1": "c6564bd93b5ecf6836b4fc5cf5508fc367b91b76",
                     "sha256": "ad1034bf609176893abcce4b7b9266d9f02fcc05e13966aa078b432df02a78f0"},
        "kg_final.txt.zip": {"git_sha1": "9a11bad2806d43f613787f000d8d826f3bc91767"}},
}.items() for file, sums in files.items()}


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
    def fetch(f: str) -> Path:  # verified against the published checksums of its URL, if any
        return download(base + f, folder / f, show_progress=show_progress, **KGAT_CHECKSUMS.get(base + f, {}))

    try:
        if not (folder / "kg_final.txt").exists():
            try:
                safe_unzip(fetch("kg_final.txt.zip"), folder)
            except DownloadError as e:  # last-fm's KG is not zipped in the KGAT repository
                if not (isinstance(e.__cause__, urllib.error.HTTPError) and e.__cause__.code == 404):
                    raise
                fetch("kg_final.txt")
        for f in ("train.txt", "test.txt"):
            fetch(f)
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
