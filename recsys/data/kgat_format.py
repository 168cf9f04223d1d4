"""The KGAT authors' files: ``train.txt``, ``test.txt``, ``kg_final.txt`` (+ optional ``*_list.txt``).

- ``train.txt`` / ``test.txt``: one line per user, ``user item item ...`` (space-separated integer
  ids; a line with only the user is allowed).
- ``kg_final.txt``: ``head relation tail`` per line; entity ids already place items first
  (item ``i`` is entity ``i``).
- ``user_list.txt``, ``item_list.txt``, ``entity_list.txt``, ``relation_list.txt``: header
  ``org_id remap_id`` then ``<original id> <index> [...]``; read for names when present, and then every
  id of that kind must be below the list's length (an id past it is an error naming file and line).

Test users / items that ``train.txt`` never shows are allowed (cold start) and logged as a warning.

The files hold no validation split; ``valid_ratio`` carves one out of train per user (seeded).
They hold no timestamps either, so ``RecDataset.interactions`` (the time-ordered table) is ``None``.
"""
from __future__ import annotations

import csv
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .dataset import RecDataset
from .splits import carve_valid
from graphattn.io import atomic_write_text

log = logging.getLogger(__name__)

_SEP = np.zeros(256, dtype=bool)
_SEP[[32, 9, 13, 11, 12, 10]] = True  # space, tab, CR, VT, FF, newline
_NON_DIGIT = ~_SEP.copy()
_NON_DIGIT[48:58] = False


def read_int_lines(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All whitespace-separated non-negative integers of a file, parsed from the bytes with numpy.

    Returns ``(values, line_of_value, tokens_per_line)``; lines are 0-based here (add 1 for messages).
    Memory stays a few bytes per file byte plus a few int64 per number (no Python object per token).
    """
    path = Path(path)
    data = np.fromfile(path, dtype=np.uint8)
    if len(data) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    nl = np.flatnonzero(data == 10)
    n_lines = len(nl) + (0 if data[-1] == 10 else 1)
    sep = _SEP[data]  # lookup tables: much faster than np.isin on bytes
    bad = np.flatnonzero(_NON_DIGIT[data])
    if len(bad):
        b = int(bad[0])
        line = int(np.searchsorted(nl, b))
        lo = int(nl[line - 1]) + 1 if line else 0
        hi = int(nl[line]) if line < len(nl) else len(data)
        text = data[lo:hi].tobytes().decode("utf-8", errors="replace").split()
        token = next((t for t in text if not t.isdigit()), "?")
        raise ValueError(f"{path.name} line {line + 1}: expected non-negative integer ids, got {token!r}")
    edge = np.diff(sep.view(np.int8), prepend=np.int8(1), append=np.int8(1))  # -1: token starts, +1: ends
    del sep
    starts = np.flatnonzero(edge == -1)
    ends = np.flatnonzero(edge == 1)
    del edge
    lengths = ends - starts
    if len(lengths) and lengths.max() > 18:
        j = int(np.argmax(lengths))
        raise ValueError(f"{path.name} line {int(np.searchsorted(nl, starts[j])) + 1}: id with "
                         f"{lengths[j]} digits is too large; expected ids below 10**18")
    values = np.zeros(len(starts), np.int64)
    for j in range(int(lengths.max(initial=0))):  # one pass per digit position (<= 18), not per token
        digit = data[np.minimum(starts + j, ends - 1)].astype(np.int64) - 48
        values = np.where(lengths > j, values * 10 + digit, values)
    line_of = np.searchsorted(nl, starts).astype(np.int64)
    per_line = np.bincount(line_of, minlength=n_lines)
    return values, line_of, per_line


def read_user_items(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``train.txt``-style file -> ``((N, 2) [user, item] pairs, unique and sorted; user ids of all lines)``."""
    vals, line_of, per_line = read_int_lines(path)
    if len(vals) == 0:
        raise ValueError(f"{path}: file is empty; expected lines 'user item item ...'")
    first = np.r_[True, line_of[1:] != line_of[:-1]]
    head_pos = np.flatnonzero(first)
    owner = vals[head_pos][np.cumsum(first) - 1]
    pairs = np.stack([owner[~first], vals[~first]], 1)
    # Sorted (user, item): the split carved from it then does not depend on the order inside a line.
    pairs = np.unique(pairs.reshape(-1, 2), axis=0)
    return pairs.reshape(-1, 2), vals[head_pos]


def read_kg_final(path: str | os.PathLike) -> np.ndarray:
    vals, line_of, per_line = read_int_lines(path)
    bad = np.flatnonzero((per_line != 0) & (per_line != 3))
    if len(bad):
        raise ValueError(f"{Path(path).name} line {bad[0] + 1}: expected 3 space-separated ids "
                         f"'head relation tail', got {per_line[bad[0]]}")
    return vals.reshape(-1, 3)


def _first_out_of_range(path: Path, limit: int, column) -> tuple[int, int]:
    """``(1-based line, id)`` of the first id of ``path`` at a position where ``column(position)`` holds
    that is ``>= limit`` (the file is read again: only called once such an id is known to exist)."""
    vals, line_of, per_line = read_int_lines(path)
    starts = np.r_[0, np.cumsum(per_line)[:-1]]
    pos = np.arange(len(vals)) - starts[line_of]
    j = int(np.flatnonzero(column(pos) & (vals >= limit))[0])
    return int(line_of[j]) + 1, int(vals[j])


def _check_ids(directory: Path, names: Mapping[str, np.ndarray | None], train: np.ndarray,
               train_users: np.ndarray, test: np.ndarray, test_users: np.ndarray, kg: np.ndarray) -> None:
    """Ids must index the ``*_list.txt`` files when those are present (an id past the list is an error)."""
    checks = [  # (list kind, noun, file, ids read from it, which positions of a line hold them)
        ("user", "user", "train.txt", np.r_[train_users, train[:, 0]], lambda p: p == 0),
        ("user", "user", "test.txt", np.r_[test_users, test[:, 0]], lambda p: p == 0),
        ("item", "item", "train.txt", train[:, 1], lambda p: p >= 1),
        ("item", "item", "test.txt", test[:, 1], lambda p: p >= 1),
        ("entity", "entity", "kg_final.txt", kg[:, [0, 2]].ravel(), lambda p: p % 3 != 1),
        ("relation", "relation", "kg_final.txt", kg[:, 1], lambda p: p % 3 == 1),
    ]
    for kind, noun, file, ids, column in checks:
        listed = names[kind]
        if listed is None or len(ids) == 0 or int(ids.max()) < len(listed):
            continue
        line, value = _first_out_of_range(directory / file, len(listed), column)
        raise ValueError(f"{file} line {line}: {noun} id {value} is out of range: {kind}_list.txt lists "
                         f"{len(listed)} {noun}s (ids 0..{len(listed) - 1}); fix the id or the list file")


def _warn_test_only(train: np.ndarray, test: np.ndarray) -> None:
    """Users / items of test.txt that train.txt never shows are scored from untrained embeddings: say so."""
    for col, noun in ((0, "user"), (1, "item")):
        only = np.setdiff1d(test[:, col], train[:, col])
        if len(only):
            log.warning("test.txt: %d test %s(s) never appear in train.txt (first: %s %d); they are scored "
                        "from untrained embeddings", len(only), noun, noun, int(only[0]))


def read_list_file(path: str | os.PathLike) -> np.ndarray | None:
    """``org_id remap_id [...]`` file -> original ids as strings ordered by ``remap_id`` (None if absent)."""
    path = Path(path)
    if not path.exists():
        return None
    frame = pd.read_csv(path, sep=" ", header=None, skiprows=1, dtype=str, usecols=[0, 1],
                        keep_default_na=False, quoting=csv.QUOTE_NONE, engine="python")
    remap = pd.to_numeric(frame[1], errors="coerce")
    if remap.isna().any():
        j = int(np.flatnonzero(remap.isna().to_numpy())[0])
        raise ValueError(f"{path.name} line {j + 2}: expected 'org_id remap_id' with an integer remap_id, "
                         f"got {frame[1].iloc[j]!r}")
    out = np.empty(int(remap.max()) + 1 if len(remap) else 0, dtype=object)
    out[:] = ""
    out[remap.to_numpy(np.int64)] = frame[0].to_numpy()
    return out.astype(str)


def load_kgat(directory: str | os.PathLike, config: Mapping[str, Any] | None = None,
              name: str | None = None) -> RecDataset:
    """Read a KGAT-format directory. Config keys read: ``valid_ratio`` (default 0.1), ``seed``."""
    config = dict(config or {})
    directory = Path(directory)
    name = name or directory.name
    for f in ("train.txt", "test.txt"):
        if not (directory / f).exists():
            raise FileNotFoundError(f"{directory / f} not found; a KGAT-format dataset needs train.txt and "
                                    "test.txt (and optionally kg_final.txt)")
    train_all, train_users = read_user_items(directory / "train.txt")
    test, test_users = read_user_items(directory / "test.txt")
    kg_path = directory / "kg_final.txt"
    kg = read_kg_final(kg_path) if kg_path.exists() else np.zeros((0, 3), np.int64)

    names = {k: read_list_file(directory / f"{k}_list.txt") for k in ("user", "item", "entity", "relation")}
    _check_ids(directory, names, train_all, train_users, test, test_users, kg)
    _warn_test_only(train_all, test)
    n_users = max([int(np.max(a, initial=-1)) + 1 for a in (train_users, test_users, train_all[:, 0], test[:, 0])]
                  + [len(names["user"]) if names["user"] is not None else 0])
    n_items = max(int(np.max(train_all[:, 1], initial=-1)) + 1, int(np.max(test[:, 1], initial=-1)) + 1,
                  len(names["item"]) if names["item"] is not None else 0)
    n_entities = max(n_items, int(np.max(kg[:, [0, 2]], initial=-1)) + 1,
                     len(names["entity"]) if names["entity"] is not None else 0)
    n_relations = max(int(np.max(kg[:, 1], initial=-1)) + 1,
                      len(names["relation"]) if names["relation"] is not None else 0)

    ratio = float(config.get("valid_ratio", 0.1))
    tr_rows, va_rows = carve_valid(train_all, ratio, int(config.get("seed", 2019)))

    def padded(tokens: np.ndarray | None, n: int) -> np.ndarray | None:
        if tokens is None:
            return None
        if len(tokens) < n:
            tokens = np.concatenate([tokens, np.arange(len(tokens), n).astype(str)])
        return tokens

    return RecDataset(
        name=name, n_users=n_users, n_items=n_items, n_entities=n_entities, n_relations=n_relations,
        train=train_all[tr_rows], valid=train_all[va_rows], test=test, kg=kg,
        user_tokens=padded(names["user"], n_users), item_tokens=padded(names["item"], n_items),
        entity_tokens=padded(names["entity"], n_entities),
        relation_names=None if names["relation"] is None else list(padded(names["relation"], n_relations)))


def _user_lines(pairs: np.ndarray, n_users: int) -> str:
    """One line per user (every user, so users without items survive): ``user item item ...``."""
    p = pairs[np.argsort(pairs[:, 0], kind="stable")]
    counts = np.bincount(p[:, 0], minlength=n_users)
    n_words = n_users + len(p)
    head = np.r_[0, np.cumsum(counts + 1)[:-1]]  # position of each user's id among all words
    words = np.empty(n_words, dtype=object)
    is_head = np.zeros(n_words, dtype=bool)
    is_head[head] = True
    words[head] = np.arange(n_users).astype(str)
    words[~is_head] = p[:, 1].astype(str)
    seps = np.full(n_words, " ", dtype=object)
    seps[np.r_[head[1:], n_words] - 1] = "\n"  # last word of each line
    return "".join((words + seps).tolist())


def _list_text(tokens: Any) -> str:
    t = np.asarray(tokens).astype(str).astype(object)
    return "org_id remap_id\n" + "".join((t + " " + np.arange(len(t)).astype(str).astype(object) + "\n").tolist())


def write_kgat_files(ds: RecDataset, directory: str | os.PathLike) -> Path:
    """Write ``ds`` as KGAT files. ``train.txt`` holds train + valid (KGAT has no valid file)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    train = np.concatenate([ds.train, ds.valid])
    atomic_write_text(directory / "train.txt", _user_lines(train, ds.n_users))
    atomic_write_text(directory / "test.txt", _user_lines(ds.test, ds.n_users))
    if len(ds.kg):
        k = ds.kg.astype(str).astype(object)
        kg_text = "".join((k[:, 0] + " " + k[:, 1] + " " + k[:, 2] + "\n").tolist())
        atomic_write_text(directory / "kg_final.txt", kg_text)
    for kind, tokens in (("user", ds.user_tokens), ("item", ds.item_tokens), ("entity", ds.entity_tokens),
                         ("relation", ds.relation_names)):
        if tokens is not None:
            atomic_write_text(directory / f"{kind}_list.txt", _list_text(tokens))
    return directory
