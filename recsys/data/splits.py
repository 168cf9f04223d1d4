"""Train / valid / test splitting of an interaction table (RecBole ``eval_args`` semantics), vectorised.

``eval_args`` (RecBole style)::

    eval_args:
      split: {RS: [0.8, 0.1, 0.1]}   # ratio split; two ratios mean train/test (no valid)
      # split: {LS: valid_and_test}  # leave-one-out: last (TO) / a random (RO) item -> test, next -> valid
      # split: {LS: test_only}
      order: RO                      # RO: random order (seeded); TO: time order (earliest -> train)
      group_by: user                 # user: split each user's history; null: split the whole table

Every user keeps at least one training interaction. Ratio counts follow RecBole's
``_calcu_split_ids``: ``floor(ratio * n)`` for valid/test, the rest to train, and a split whose
expected size is in ``(0, 1)`` still gets one row while train keeps more than one.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

DEFAULT_EVAL_ARGS: dict[str, Any] = {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO", "group_by": "user"}


def _group_ranks(groups: np.ndarray, key: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort rows by (group, key) stably; return the order, each sorted row's rank in its group and the
    size of its group."""
    order = np.lexsort((key, groups))
    g = groups[order]
    n = len(g)
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]]) if n else np.zeros(0, dtype=np.int64)
    sizes = np.diff(np.r_[starts, n])
    group_id = np.repeat(np.arange(len(starts)), sizes)
    rank = np.arange(n) - starts[group_id]
    return order, rank, sizes[group_id]


def _ratio_counts(n: np.ndarray, ratios: list[float]) -> np.ndarray:
    """``(len(n), len(ratios))`` counts per group, RecBole's rule, vectorised over groups."""
    r = np.asarray(ratios, dtype=np.float64)
    r = r / r.sum()
    expected = n[:, None] * r[None, :]
    cnt = np.floor(expected).astype(np.int64)
    cnt[:, 0] = n - cnt[:, 1:].sum(1)
    for k in range(len(r) - 1, 0, -1):  # loop over the (<= 3) splits, not over users
        bump = (cnt[:, 0] > 1) & (expected[:, k] > 0) & (expected[:, k] < 1)
        cnt[bump, k] += 1
        cnt[bump, 0] -= 1
    return cnt


def split_indices(users: np.ndarray, eval_args: Mapping[str, Any] | None = None, *,
                  times: np.ndarray | None = None, seed: int = 2019,
                  source: str = "eval_args") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row indices of (train, valid, test), each ordered by (user, order key).

    Args:
        users: ``(N,)`` user index of every interaction.
        eval_args: see the module docstring; missing keys take ``DEFAULT_EVAL_ARGS``.
        times: ``(N,)`` timestamps, required for ``order: TO``.
        seed: seeds the random order (``RO``).
        source: where ``eval_args`` came from, for error messages.
    """
    ea = {**DEFAULT_EVAL_ARGS, **dict(eval_args or {})}
    unknown = set(ea) - {"split", "order", "group_by", "mode"}
    if unknown:
        raise ValueError(f"{source}: unknown eval_args keys {sorted(unknown)}; expected split, order, group_by")
    split, order, group_by = ea["split"], str(ea["order"]).upper(), ea["group_by"]
    if not isinstance(split, Mapping) or len(split) != 1 or next(iter(split)) not in ("RS", "LS"):
        raise ValueError(f"{source}: eval_args.split must be {{RS: [train, valid, test]}} or "
                         f"{{LS: valid_and_test | test_only}}, got {split!r}")
    users = np.asarray(users, dtype=np.int64)
    n = len(users)
    if order == "TO":
        if times is None:
            raise ValueError(f"{source}: eval_args.order is TO but the interactions have no timestamp "
                             "field; use order: RO or add a timestamp column")
        key = np.asarray(times, dtype=np.float64)
    elif order == "RO":
        key = np.random.default_rng(seed).permutation(n).astype(np.float64)
    else:
        raise ValueError(f"{source}: eval_args.order must be RO or TO, got {order!r}")
    if group_by in (None, "none", "None"):
        groups = np.zeros(n, dtype=np.int64)
    elif group_by == "user":
        groups = users
    else:
        raise ValueError(f"{source}: eval_args.group_by must be user or null, got {group_by!r}")

    sorted_rows, rank, size = _group_ranks(groups, key)
    (kind, arg), = split.items()
    part = np.zeros(n, dtype=np.int64)  # 0 train, 1 valid, 2 test, per sorted row
    if kind == "RS":
        ratios = list(arg)
        if len(ratios) not in (2, 3) or min(ratios) < 0 or sum(ratios) <= 0:
            raise ValueError(f"{source}: eval_args.split.RS must be 2 or 3 non-negative ratios, got {arg!r}")
        if len(ratios) == 2:
            ratios = [ratios[0], 0.0, ratios[1]]
        uniq_sizes, inv = np.unique(size, return_inverse=True)
        cnt = _ratio_counts(uniq_sizes, ratios)[inv]
        part = (rank >= cnt[:, 0]).astype(np.int64) + (rank >= cnt[:, 0] + cnt[:, 1])
    else:
        if arg not in ("valid_and_test", "test_only"):
            raise ValueError(f"{source}: eval_args.split.LS must be valid_and_test or test_only, got {arg!r}")
        from_end = size - 1 - rank
        part[(from_end == 0) & (size >= 2)] = 2
        if arg == "valid_and_test":
            part[(from_end == 1) & (size >= 3)] = 1
    return tuple(sorted_rows[part == k] for k in range(3))  # type: ignore[return-value]


def carve_valid(train: np.ndarray, ratio: float = 0.1, seed: int = 2019) -> tuple[np.ndarray, np.ndarray]:
    """Split KGAT-format training pairs into (train rows, valid rows) per user, seeded.

    A user with ``n >= 2`` training items gives ``clip(round(ratio * n), 1, n - 1)`` of them to
    validation; users with fewer than 2 keep everything in train. ``ratio == 0`` gives an empty valid.
    """
    train = np.asarray(train, dtype=np.int64).reshape(-1, 2)
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"valid_ratio must be in [0, 1), got {ratio}")
    if ratio == 0 or len(train) == 0:
        return np.arange(len(train)), np.zeros(0, dtype=np.int64)
    key = np.random.default_rng(seed).permutation(len(train))
    rows, rank, size = _group_ranks(train[:, 0], key)
    n_valid = np.where(size >= 2, np.clip(np.rint(ratio * size), 1, np.maximum(size - 1, 1)), 0)
    is_valid = rank < n_valid
    return np.sort(rows[~is_valid]), np.sort(rows[is_valid])
