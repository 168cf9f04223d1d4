"""Serving a trained recommender: reload a run folder, export a faiss item index, recommend top-K items.

    model, data, config = load_run("saved/KGAT-planted-kg-20261129-193000")
    export_index(model, data, "saved/kgat_items.faiss", index="Flat")
    rec = Recommender.from_run("saved/KGAT-planted-kg-20261129-193000", backend="faiss")
    items, scores = rec.recommend(["0", "5"], k=10)      # raw ids in and out; training items excluded

A run folder is what ``run.py`` / :class:`graphattn.training.RunDir` writes: ``config.yaml`` (the merged config)
and ``best.pt`` (``{"model": state_dict, ...}``). The dataset is rebuilt from the config (the loaders are
deterministic), the model from the registry, and the weights read with ``weights_only=True``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from graphattn.config import Config
from graphattn.registry import get_model
from graphattn.training import load_checkpoint

from .evaluation import Retriever

__all__ = ["load_run", "export_index", "Recommender", "embeddings"]


def load_run(run_folder: str | os.PathLike, checkpoint: str = "best.pt", device: str = "cpu"):
    """``(model, data, config)`` of a finished run: the model in eval mode with the checkpoint's weights.

    Args:
        run_folder: the run's folder (holding ``config.yaml`` and ``checkpoint``).
        checkpoint: file name inside the folder (``best.pt``; ``last.pt`` for an unfinished run).
        device: where to put the model.
    """
    import recsys  # noqa: F401  (registers the recsys task, its models and datasets)
    from .task import load_data

    folder = Path(run_folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"run folder '{folder}' not found")
    cfg_path, ckpt_path = folder / "config.yaml", folder / checkpoint
    if not cfg_path.is_file():
        raise FileNotFoundError(f"'{folder}' is not a run folder: it has no config.yaml")
    if not ckpt_path.is_file():
        have = sorted(p.name for p in folder.glob("*.pt"))
        raise FileNotFoundError(f"'{folder}' has no {checkpoint} (checkpoints there: {have or 'none'})")
    config = Config.load(cfg_path)
    if config.task != "recsys":
        raise ValueError(f"{cfg_path}: model '{config['model']}' belongs to task '{config.task}', not recsys")
    data = load_data(config)
    model = get_model(config["model"])(config, data)
    state = load_checkpoint(ckpt_path)
    if "model" not in state:
        raise ValueError(f"{ckpt_path}: expected a dict with key 'model' (a state_dict), got keys {sorted(state)}")
    model.load_state_dict(state["model"])
    return model.to(device).eval(), data, config


@torch.no_grad()
def embeddings(model) -> tuple[torch.Tensor, torch.Tensor]:
    """``(n_users, d)``, ``(n_items, d)`` float32 CPU embeddings whose dot products rank items (eval mode)."""
    was_training = model.training
    model.eval()
    try:
        user_emb, item_emb = model.full_sort_embeddings()
    finally:
        model.train(was_training)
    return user_emb.detach().float().cpu(), item_emb.detach().float().cpu()


def export_index(model, data, path: str | os.PathLike, index: str = "Flat", faiss_params: str | None = None,
                 shards: int | None = None) -> Path:
    """Write the model's item embeddings as a faiss inner-product index (atomically); returns the path.

    Args:
        index: faiss factory string (``Flat`` exact, ``HNSW32``, ``IVF64,Flat``, ``IVF256,PQ16``,
            ``Shards4,Flat``, ...).
        faiss_params: e.g. ``"nprobe=16"`` (kept in the saved index), ``shards``: contiguous item-id ranges
            with one index each (saved as an ``.npz`` of the shards).
    """
    _, item_emb = embeddings(model)
    if item_emb.shape[0] != data.n_items:
        raise ValueError(f"model has {item_emb.shape[0]} item embeddings, dataset '{data.name}' has {data.n_items} items")
    return Retriever(item_emb, backend="faiss", index=index, faiss_params=faiss_params, shards=shards).save(path)


class Recommender:
    """Top-K recommendation for user ids from a trained model (faiss index or exact search).

    Args:
        model, data: the trained model and its dataset.
        backend: ``"faiss"`` or ``"exact"``.
        index: faiss factory string when the index is built here.
        index_path: a saved index (from :func:`export_index`) to load instead of building one.
        faiss_params, shards: for an index built here (see :class:`recsys.evaluation.Retriever`).
    """

    def __init__(self, model, data, backend: str = "faiss", index: str = "Flat",
                 index_path: str | os.PathLike | None = None, config: Config | None = None,
                 faiss_params: str | None = None, shards: int | None = None):
        self.model, self.data, self.config = model, data, config
        self.user_emb, item_emb = embeddings(model)
        if self.user_emb.shape[0] != data.n_users:
            raise ValueError(f"model has {self.user_emb.shape[0]} user embeddings, dataset has {data.n_users} users")
        if index_path is not None:
            if backend != "faiss":
                raise ValueError(f"index_path needs backend='faiss', got backend={backend!r}")
            self.retriever = Retriever.load(index_path, user_emb=self.user_emb)
            if self.retriever.n_items != data.n_items:
                raise ValueError(f"{index_path}: index holds {self.retriever.n_items} items, dataset has {data.n_items}")
        else:
            self.retriever = Retriever(item_emb, backend=backend, index=index, user_emb=self.user_emb,
                                       faiss_params=faiss_params, shards=shards)

    @classmethod
    def from_run(cls, run_folder: str | os.PathLike, backend: str = "faiss", index: str = "Flat",
                 index_path: str | os.PathLike | None = None, checkpoint: str = "best.pt",
                 faiss_params: str | None = None, shards: int | None = None) -> "Recommender":
        model, data, config = load_run(run_folder, checkpoint=checkpoint)
        return cls(model, data, backend=backend, index=index, index_path=index_path, config=config,
                   faiss_params=faiss_params, shards=shards)

    def recommend(self, user_ids, k: int = 10, exclude_train: bool = True,
                  ids: str = "raw") -> tuple[np.ndarray, np.ndarray]:
        """``(items (Q, k), scores (Q, k) float64)``, best first; ties by item index.

        ``ids="raw"`` (default): users are the dataset's own ids (RecBole tokens, the numbers in
        ``train.txt``; str or int) and items come back as raw ids (str), ``""`` for slots beyond the items
        left after exclusion. ``ids="internal"``: 0-based indices in and out, item -1 for those slots.
        Their score is -inf either way."""
        _check_ids(ids)
        if ids == "raw":
            items, scores = self.recommend(self.data.user_index(user_ids), k, exclude_train, ids="internal")
            return self.data.item_raw(items), scores
        ids = np.asarray(user_ids, dtype=np.int64).reshape(-1)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        if len(ids) and (ids.min() < 0 or ids.max() >= self.data.n_users):
            raise ValueError(f"user ids must lie in [0, {self.data.n_users}), got min {ids.min()}, max {ids.max()}")
        exclude = self.data.csr("train")[ids] if exclude_train else None
        return self.retriever.recommend(ids, k=int(k), exclude=exclude)

    def item_names(self, items: np.ndarray) -> np.ndarray:
        """Raw ids of internal item indices; ``""`` for the -1 padding (``data.item_raw``)."""
        return self.data.item_raw(items)


def _check_ids(ids: str) -> None:
    if ids not in ("raw", "internal"):
        raise ValueError(f"ids must be 'raw' (the dataset's own ids) or 'internal' (0-based indices), got {ids!r}")
