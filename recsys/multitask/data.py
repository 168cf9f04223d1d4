"""Multi-task ranking data: impressions with categorical fields, behaviour sequences and several labels.

One impression = one row: ``M`` categorical field ids, ``F`` behaviour sequences (ids, ``0`` = padding,
most recent last, pre-padded to each field's length) and ``T`` binary labels, plus the user id used for
user-grouped AUC. Id ``0`` is padding in every vocabulary and, for data read from text, id ``1`` is the
out-of-vocabulary token (tokens first seen outside the training split).

Sources:

- :func:`read_multitask_csv` — a FuxiCTR-style folder ``train.csv`` / ``valid.csv`` / ``test.csv``
  (comma-separated, header row, sequence fields as ``^``-separated tokens, label columns 0/1);
  :func:`write_multitask_csv` writes such a folder (fixtures, exports).
- :func:`load_ml100k_multitask` — the offline default, built from RecBole's bundled ml-100k atomic files.
- :func:`synthetic_three_task` — the spec's synthetic three-task generator (field interaction, sequence
  overlap, a negatively transferring task).
- :func:`load_kuairand_pure`, :func:`load_qb_video` — readers for the paper's datasets. KuaiRand-Pure is
  downloaded from Zenodo on first use (:func:`fetch_kuairand_pure`; offline, the error says where to put
  the files); Tenrec needs a signed licence, so QB-video is read from a file the user puts in place.

Letters: N impressions, M categorical fields, F behaviour types, n_a length of behaviour type a, T tasks.
"""
from __future__ import annotations

import csv
import importlib.util
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from graphattn.io import atomic_open

__all__ = [
    "MultiTaskSplit", "MultiTaskData", "iterate_batches", "history_sequences", "chronological_split",
    "read_multitask_csv", "write_multitask_csv", "load_ml100k_multitask", "synthetic_three_task",
    "load_kuairand_pure", "fetch_kuairand_pure", "load_qb_video", "write_kuairand_fixture", "write_qb_video_fixture", "write_ml100k_fixture",
    "PAD", "OOV", "PLANTED_FEATURES",
]

PAD, OOV = 0, 1
SPLITS = ("train", "valid", "test")


# --------------------------------------------------------------------------------------------- containers

@dataclass
class MultiTaskSplit:
    """One split. ``cat`` (N, M) int64, ``seq`` F x (N, n_a) int64 (0 = padding), ``labels`` (N, T) float32,
    ``user`` (N,) int64 (the grouping key of gAUC)."""

    cat: Tensor
    seq: list[Tensor]
    labels: Tensor
    user: Tensor

    def __post_init__(self) -> None:
        n = self.cat.shape[0]
        if self.cat.dim() != 2 or self.labels.dim() != 2 or self.user.shape != (n,) or self.labels.shape[0] != n:
            raise ValueError(f"inconsistent split shapes: cat {tuple(self.cat.shape)}, labels "
                             f"{tuple(self.labels.shape)}, user {tuple(self.user.shape)}")
        for i, s in enumerate(self.seq):
            if s.dim() != 2 or s.shape[0] != n:
                raise ValueError(f"sequence field {i} has shape {tuple(s.shape)}, expected ({n}, length)")

    def __len__(self) -> int:
        return int(self.cat.shape[0])

    def batch(self, index: Tensor) -> dict[str, Any]:
        return {"cat": self.cat[index], "seq": [s[index] for s in self.seq], "labels": self.labels[index],
                "user": self.user[index]}

    def to(self, device: torch.device | str) -> MultiTaskSplit:
        return MultiTaskSplit(self.cat.to(device), [s.to(device) for s in self.seq], self.labels.to(device),
                              self.user.to(device))


@dataclass
class MultiTaskData:
    """A multi-task dataset: schema, vocabularies and three splits.

    Args:
        cat_fields / seq_fields / tasks: names, in column order.
        vocab_sizes: vocabulary name -> number of ids (padding 0 included).
        cat_vocab / seq_vocab: the vocabulary of each field; fields naming the same vocabulary share one
            embedding table (e.g. the target ``item_id`` and the behaviour sequences of items).
        meta: free-form facts (``vocab_tokens``: vocabulary -> list of tokens by id, for data read from text).
    """

    name: str
    cat_fields: list[str]
    seq_fields: list[str]
    tasks: list[str]
    vocab_sizes: dict[str, int]
    cat_vocab: list[str]
    seq_vocab: list[str]
    train: MultiTaskSplit
    valid: MultiTaskSplit
    test: MultiTaskSplit
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.cat_vocab) != len(self.cat_fields) or len(self.seq_vocab) != len(self.seq_fields):
            raise ValueError("cat_vocab / seq_vocab must name one vocabulary per field")
        if not self.tasks:
            raise ValueError(f"dataset {self.name!r} has no label columns (tasks)")
        for vocab in (*self.cat_vocab, *self.seq_vocab):
            if vocab not in self.vocab_sizes:
                raise ValueError(f"dataset {self.name!r}: vocabulary {vocab!r} has no size in vocab_sizes")
        for split_name in SPLITS:
            split = getattr(self, split_name)
            if split.cat.shape[1] != len(self.cat_fields) or len(split.seq) != len(self.seq_fields) \
                    or split.labels.shape[1] != len(self.tasks):
                raise ValueError(f"dataset {self.name!r} {split_name}: expected {len(self.cat_fields)} categorical, "
                                 f"{len(self.seq_fields)} sequence and {len(self.tasks)} label columns, got "
                                 f"{split.cat.shape[1]}, {len(split.seq)}, {split.labels.shape[1]}")
            for j, vocab in enumerate(self.cat_vocab):
                self._check_range(split.cat[:, j], vocab, self.cat_fields[j], split_name)
            for j, vocab in enumerate(self.seq_vocab):
                self._check_range(split.seq[j], vocab, self.seq_fields[j], split_name)

    def _check_range(self, ids: Tensor, vocab: str, name: str, split: str) -> None:
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_sizes[vocab]):
            raise ValueError(f"dataset {self.name!r} {split}: field {name!r} has ids in [{int(ids.min())}, "
                             f"{int(ids.max())}], vocabulary {vocab!r} has {self.vocab_sizes[vocab]}")

    @property
    def seq_lengths(self) -> list[int]:
        return [int(s.shape[1]) for s in self.train.seq]

    def split(self, name: str) -> MultiTaskSplit:
        if name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {name!r}")
        return getattr(self, name)

    def summary(self) -> str:
        rates = self.train.labels.mean(0).tolist()
        return (f"{self.name}: {len(self.train)}/{len(self.valid)}/{len(self.test)} impressions, "
                f"{len(self.cat_fields)} categorical fields, sequences {dict(zip(self.seq_fields, self.seq_lengths))}, "
                f"tasks {', '.join(f'{t} ({r:.1%} positive)' for t, r in zip(self.tasks, rates))}")


def iterate_batches(split: MultiTaskSplit, batch_size: int, shuffle: bool = False,
                    generator: torch.Generator | None = None) -> Iterator[dict[str, Any]]:
    """Mini-batches of a split (tensors stay on the split's device)."""
    n = len(split)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    order = order.to(split.cat.device)
    for start in range(0, n, batch_size):
        yield split.batch(order[start:start + batch_size])


# --------------------------------------------------------------------------------------------- shared builders

def history_sequences(users: np.ndarray, items: np.ndarray, positive: np.ndarray, max_len: int) -> np.ndarray:
    """For each row, the last ``max_len`` items of *earlier* rows of the same user with ``positive`` set.

    Rows must be sorted by user, then time (ties keep row order, so a row never sees itself or later rows).
    Items must be ids >= 1; the result is ``(N, max_len)``, pre-padded with 0, most recent last.
    """
    users = np.asarray(users)
    n = len(users)
    if n and np.any(users[1:] < users[:-1]):
        raise ValueError("history_sequences: rows must be sorted by user (then time)")
    positive = np.asarray(positive, dtype=bool)
    pos_rows = np.flatnonzero(positive)
    pos_items = np.asarray(items)[pos_rows]
    # positives strictly before row r, counted globally (rows of one user are contiguous)
    before = np.cumsum(positive) - positive                                   # (N,)
    user_start_row = np.r_[0, np.flatnonzero(users[1:] != users[:-1]) + 1]
    first_row = np.repeat(user_start_row, np.diff(np.r_[user_start_row, n]))  # (N,) first row of the user
    user_first_pos = before[first_row]                                       # index of the user's 1st positive
    offsets = np.arange(-max_len, 0)                                          # (max_len,)
    idx = before[:, None] + offsets[None, :]                                  # (N, max_len)
    valid = idx >= user_first_pos[:, None]
    out = np.zeros((n, max_len), dtype=np.int64)
    out[valid] = pos_items[idx[valid]]
    return out


def chronological_split(users: np.ndarray, ratios: Sequence[float] = (0.8, 0.1, 0.1)) -> np.ndarray:
    """Per-user chronological split of rows sorted by (user, time): 0 train, 1 valid, 2 test.

    Each user's first ``ratios[0]`` share of rows trains, the next ``ratios[1]`` validates, the rest tests.
    """
    if len(ratios) != 3 or abs(sum(ratios) - 1.0) > 1e-6 or min(ratios) < 0:
        raise ValueError(f"split ratios must be three non-negative numbers summing to 1, got {list(ratios)}")
    users = np.asarray(users)
    n = len(users)
    starts = np.r_[0, np.flatnonzero(users[1:] != users[:-1]) + 1]
    counts = np.diff(np.r_[starts, n])
    rank = np.arange(n) - np.repeat(starts, counts)
    size = np.repeat(counts, counts)
    cut1 = np.floor(size * ratios[0])
    cut2 = np.floor(size * (ratios[0] + ratios[1]))
    return np.where(rank < cut1, 0, np.where(rank < cut2, 1, 2)).astype(np.int64)


def _make_split(cat: np.ndarray, seq: list[np.ndarray], labels: np.ndarray, user: np.ndarray,
                rows: np.ndarray) -> MultiTaskSplit:
    return MultiTaskSplit(torch.as_tensor(cat[rows], dtype=torch.long),
                          [torch.as_tensor(s[rows], dtype=torch.long) for s in seq],
                          torch.as_tensor(labels[rows], dtype=torch.float32),
                          torch.as_tensor(user[rows], dtype=torch.long))


def _encode(values: pd.Series | np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Tokens -> ids 1.. by first appearance (0 stays padding). Returns ids and the token of each id."""
    codes, uniques = pd.factorize(pd.Series(values).astype(str), sort=False)
    return codes.astype(np.int64) + 1, ["<pad>", *map(str, uniques)]


def _from_log(name: str, log: pd.DataFrame, *, user_col: str, item_col: str, cat_cols: Sequence[str],
              label_cols: Sequence[str], seq_defs: Mapping[str, str], max_len: int,
              ratios: Sequence[float], meta: dict[str, Any] | None = None,
              task_names: Sequence[str] | None = None) -> MultiTaskData:
    """Impression log sorted by (user, time) -> MultiTaskData.

    ``seq_defs`` maps a sequence name to the 0/1 column whose positive rows form that behaviour history
    (histories are of ``item_col``). Every categorical column is encoded by first appearance over the whole log
    (ids only, no statistics, so nothing leaks from valid/test); ``item_col`` shares its vocabulary with the
    histories.
    """
    if user_col not in cat_cols or item_col not in cat_cols:
        raise ValueError(f"{name}: the user ({user_col}) and item ({item_col}) columns must be categorical fields")
    vocab_sizes, vocab_tokens, cat_vocab, cat = {}, {}, [], []
    for col in cat_cols:
        ids, tokens = _encode(log[col].to_numpy())
        vocab = "item" if col == item_col else col
        vocab_sizes[vocab], vocab_tokens[vocab] = len(tokens), tokens
        cat_vocab.append(vocab)
        cat.append(ids)
    cat_arr = np.stack(cat, axis=1)
    users = cat_arr[:, list(cat_cols).index(user_col)]
    items = cat_arr[:, list(cat_cols).index(item_col)]
    seqs = [history_sequences(users, items, log[col].to_numpy() > 0, max_len) for col in seq_defs.values()]
    labels = np.stack([(log[c].to_numpy() > 0).astype(np.float32) for c in label_cols], axis=1)
    part = chronological_split(users, ratios)
    splits = [_make_split(cat_arr, seqs, labels, users, np.flatnonzero(part == k)) for k in range(3)]
    return MultiTaskData(name=name, cat_fields=list(cat_cols), seq_fields=list(seq_defs),
                         tasks=list(task_names or label_cols), vocab_sizes=vocab_sizes, cat_vocab=cat_vocab,
                         seq_vocab=["item"] * len(seq_defs), train=splits[0], valid=splits[1], test=splits[2],
                         meta={"vocab_tokens": vocab_tokens, **(meta or {})})


# --------------------------------------------------------------------------------------------- CSV (FuxiCTR style)

@dataclass
class CsvSchema:
    """Which columns of a FuxiCTR-style CSV are what.

    Args:
        categorical: categorical field columns.
        sequence: sequence field column -> maximum length (longer sequences keep their last tokens).
        labels: 0/1 label columns, one per task.
        user: column grouping gAUC (default: the first categorical field).
        shared_vocab: field -> vocabulary name, for fields that share ids (e.g. ``hist_click: item_id``).
        separator: column separator; seq_separator: token separator inside a sequence cell.
    """

    categorical: list[str]
    sequence: dict[str, int]
    labels: list[str]
    user: str | None = None
    shared_vocab: dict[str, str] = field(default_factory=dict)
    separator: str = ","
    seq_separator: str = "^"

    def __post_init__(self) -> None:
        if not self.categorical:
            raise ValueError("CsvSchema needs at least one categorical field")
        if not self.labels:
            raise ValueError("CsvSchema needs at least one label column")
        cols = [*self.categorical, *self.sequence, *self.labels]
        dup = sorted({c for c in cols if cols.count(c) > 1})
        if dup:
            raise ValueError(f"columns listed twice in the CSV schema: {dup}")
        for name, length in self.sequence.items():
            if isinstance(length, bool) or not isinstance(length, int) or length < 1:
                raise ValueError(f"sequence field {name!r}: max length must be an int >= 1, got {length!r}")
        if self.user is not None and self.user not in self.categorical:
            raise ValueError(f"user column {self.user!r} must be one of the categorical fields {self.categorical}")

    def vocab_of(self, column: str) -> str:
        return self.shared_vocab.get(column, column)


def _read_rows(path: Path, schema: CsvSchema) -> tuple[dict[str, list[str]], list[list[float]]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; a multi-task CSV folder holds train.csv, valid.csv and test.csv")
    needed = [*schema.categorical, *schema.sequence, *schema.labels]
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh, delimiter=schema.separator)
        try:
            header = next(reader)
        except StopIteration:
            raise ValueError(f"{path.name} line 1: file is empty; expected a header row") from None
        missing = [c for c in needed if c not in header]
        if missing:
            raise ValueError(f"{path.name} line 1 (header): missing column(s) {missing}; found {header}")
        pos = {c: header.index(c) for c in needed}
        columns: dict[str, list[str]] = {c: [] for c in (*schema.categorical, *schema.sequence)}
        labels: list[list[float]] = []
        for row in reader:
            line = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != len(header):
                raise ValueError(f"{path.name} line {line}: expected {len(header)} fields separated by "
                                 f"{schema.separator!r}, got {len(row)}; fix or delete the line")
            for c in columns:
                columns[c].append(row[pos[c]])
            values = []
            for c in schema.labels:
                cell = row[pos[c]].strip()
                try:
                    v = float(cell)
                except ValueError:
                    v = float("nan")
                if v not in (0.0, 1.0):
                    raise ValueError(f"{path.name} line {line}, column {c!r}: expected a 0/1 label, got {cell!r}")
                values.append(v)
            labels.append(values)
    if not labels:
        raise ValueError(f"{path}: header but no data lines")
    return columns, labels


def read_multitask_csv(directory: str | os.PathLike, schema: CsvSchema, name: str | None = None) -> MultiTaskData:
    """Read ``train.csv``, ``valid.csv`` and ``test.csv`` from ``directory``.

    Vocabularies are built from the training split (ids 2.. by first appearance); tokens first seen in
    valid/test map to ``OOV`` (1); empty sequence cells are all padding. Malformed lines raise
    ``ValueError`` naming the file and line.
    """
    directory = Path(directory)
    raw = {s: _read_rows(directory / f"{s}.csv", schema) for s in SPLITS}
    vocab_index: dict[str, dict[str, int]] = {}
    vocab_tokens: dict[str, list[str]] = {}

    def ids_for(vocab: str, tokens: list[str], grow: bool) -> list[int]:
        index = vocab_index.setdefault(vocab, {})
        toks = vocab_tokens.setdefault(vocab, ["<pad>", "<oov>"])
        out = []
        for t in tokens:
            i = index.get(t)
            if i is None:
                if grow:
                    i = index[t] = len(toks)
                    toks.append(t)
                else:
                    i = OOV
            out.append(i)
        return out

    splits = {}
    for s in SPLITS:  # train first: it defines the vocabularies
        columns, labels = raw[s]
        grow = s == "train"
        cat = np.stack([np.asarray(ids_for(schema.vocab_of(c), columns[c], grow), dtype=np.int64)
                        for c in schema.categorical], axis=1)
        seqs = []
        for c, length in schema.sequence.items():
            arr = np.zeros((len(labels), length), dtype=np.int64)
            for r, cell in enumerate(columns[c]):
                toks = [t for t in cell.split(schema.seq_separator) if t != ""][-length:]
                if toks:
                    arr[r, length - len(toks):] = ids_for(schema.vocab_of(c), toks, grow)
            seqs.append(arr)
        user_col = schema.user or schema.categorical[0]
        user = cat[:, schema.categorical.index(user_col)]
        lab = np.asarray(labels, dtype=np.float32)
        splits[s] = _make_split(cat, seqs, lab, user, np.arange(len(lab)))
    for vocab in list(vocab_tokens):
        vocab_tokens.setdefault(vocab, ["<pad>", "<oov>"])
    return MultiTaskData(
        name=name or directory.name, cat_fields=list(schema.categorical), seq_fields=list(schema.sequence),
        tasks=list(schema.labels), vocab_sizes={v: len(t) for v, t in vocab_tokens.items()},
        cat_vocab=[schema.vocab_of(c) for c in schema.categorical],
        seq_vocab=[schema.vocab_of(c) for c in schema.sequence],
        train=splits["train"], valid=splits["valid"], test=splits["test"],
        meta={"vocab_tokens": vocab_tokens, "source": str(directory)})


def _token(vocab_tokens: Mapping[str, list[str]] | None, vocab: str, i: int) -> str:
    if vocab_tokens and vocab in vocab_tokens:
        return vocab_tokens[vocab][i]
    return str(i)


def write_multitask_csv(data: MultiTaskData, directory: str | os.PathLike) -> Path:
    """Write ``data`` as a FuxiCTR-style folder (atomic per file). Tokens are the vocabulary tokens when
    ``data.meta['vocab_tokens']`` has them, else the ids as text; padding is not written."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokens = data.meta.get("vocab_tokens")
    header = [*data.cat_fields, *data.seq_fields, *data.tasks]
    for s in SPLITS:
        split = data.split(s)
        cat = split.cat.numpy()
        seqs = [q.numpy() for q in split.seq]
        labels = split.labels.numpy()
        with atomic_open(directory / f"{s}.csv", "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(header)
            for r in range(len(split)):
                row = [_token(tokens, v, int(cat[r, j])) for j, v in enumerate(data.cat_vocab)]
                for j, v in enumerate(data.seq_vocab):
                    row.append("^".join(_token(tokens, v, int(i)) for i in seqs[j][r] if i != PAD))
                row.extend(str(int(x)) for x in labels[r])
                w.writerow(row)
    return directory


def csv_schema_from_config(config: Mapping[str, Any]) -> CsvSchema:
    """The CSV schema from config keys ``categorical_fields``, ``sequence_fields``, ``label_fields``, ..."""
    missing = [k for k in ("categorical_fields", "label_fields") if not config.get(k)]
    if missing:
        raise ValueError(f"reading a CSV folder needs the config keys {missing} (set them in a --config_files YAML)")
    seq = config.get("sequence_fields") or {}
    if isinstance(seq, list):
        seq = {c: int(config.get("max_seq_len", 20)) for c in seq}
    return CsvSchema(categorical=list(config["categorical_fields"]), sequence=dict(seq),
                     labels=list(config["label_fields"]), user=config.get("user_field"),
                     shared_vocab=dict(config.get("shared_vocab") or {}),
                     separator=str(config.get("csv_separator", ",")),
                     seq_separator=str(config.get("sequence_separator", "^")))


# --------------------------------------------------------------------------------------------- ml-100k

def _ml100k_dir() -> Path:
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the ml-100k multi-task dataset is built from the atomic files bundled with the "
                                "recbole package; install them with `pip install --no-deps recbole==1.2.1`")
    path = Path(list(spec.submodule_search_locations)[0]) / "dataset_example" / "ml-100k"
    if not (path / "ml-100k.inter").is_file():
        raise FileNotFoundError(f"{path / 'ml-100k.inter'} not found in the installed recbole package")
    return path


def load_ml100k_multitask(max_len: int = 20, negatives: int = 1, seed: int = 2020,
                          ratios: Sequence[float] = (0.8, 0.1, 0.1), directory: str | os.PathLike | None = None
                          ) -> MultiTaskData:
    """Three-task ranking data from ml-100k (offline; read from recbole's bundled atomic files).

    Impressions are the 100k ratings plus ``negatives`` unrated items per rating, drawn uniformly at random
    (with the rating's timestamp). Tasks: ``watch`` (rated at all: the "click"), ``like`` (rating >= 4)
    and ``dislike`` (rating <= 2); the last two are rare and pull in opposite directions.
    Categorical fields: user_id, age (decade), gender, occupation, zip (first digit), item_id, release
    decade, first genre. Sequences: the user's earlier items rated >= 4 (``hist_like``), 3
    (``hist_neutral``) and <= 2 (``hist_dislike``), each the last ``max_len``, plus the item's genres
    (``item_genres``, up to 6). Split: each user's impressions in time order, 80/10/10.
    """
    from recsys.data.atomic import read_atomic_file

    root = Path(directory) if directory is not None else _ml100k_dir()
    inter, _, _ = read_atomic_file(root / "ml-100k.inter")
    users, _, _ = read_atomic_file(root / "ml-100k.user")
    items, _, _ = read_atomic_file(root / "ml-100k.item")
    for frame, cols, fname in ((inter, ("user_id", "item_id", "rating", "timestamp"), "ml-100k.inter"),
                               (users, ("user_id", "age", "gender", "occupation", "zip_code"), "ml-100k.user"),
                               (items, ("item_id", "release_year", "class"), "ml-100k.item")):
        missing = [c for c in cols if c not in frame.columns]
        if missing:
            raise ValueError(f"{root / fname}: missing field(s) {missing}")
    inter = inter.drop_duplicates(["user_id", "item_id"]).reset_index(drop=True)
    rng = np.random.default_rng(seed)
    item_tokens = items["item_id"].to_numpy()
    item_code = {t: i for i, t in enumerate(item_tokens)}
    u_code = pd.factorize(inter["user_id"])[0].astype(np.int64)
    i_code = inter["item_id"].map(item_code).fillna(-1).to_numpy(np.int64)
    rated = np.unique(u_code * len(item_tokens) + i_code)
    neg_rows = []
    for rep in range(negatives):
        cand = rng.integers(0, len(item_tokens), len(inter))
        for _ in range(50):  # redraw the few collisions with rated items
            bad = np.isin(u_code * len(item_tokens) + cand, rated)
            if not bad.any():
                break
            cand[bad] = rng.integers(0, len(item_tokens), int(bad.sum()))
        cand = item_tokens[cand]
        neg = inter.copy()
        neg["item_id"] = cand
        neg["rating"] = 0.0
        neg["order"] = np.arange(len(inter)) * (negatives + 1) + rep + 1
        neg_rows.append(neg)
    pos = inter.copy()
    pos["order"] = np.arange(len(inter)) * (negatives + 1)
    log = pd.concat([pos, *neg_rows], ignore_index=True)
    log = log.merge(users, on="user_id", how="left").merge(items, on="item_id", how="left")
    age = pd.to_numeric(log["age"], errors="coerce")
    log["age"] = (age // 10 * 10).fillna(-1).astype(int).astype(str)
    log["zip"] = log["zip_code"].astype(str).str[:1]
    year = pd.to_numeric(log["release_year"], errors="coerce")
    log["release_decade"] = (year // 10 * 10).fillna(-1).astype(int).astype(str)
    genres = log["class"].fillna("").astype(str).str.split()
    log["first_genre"] = genres.str[0].fillna("none")
    log["watch"] = (log["rating"] > 0).astype(int)
    log["like"] = (log["rating"] >= 4).astype(int)
    log["neutral"] = (log["rating"] == 3).astype(int)
    log["dislike"] = ((log["rating"] > 0) & (log["rating"] <= 2)).astype(int)
    log["_user_int"] = pd.to_numeric(log["user_id"], errors="coerce")
    log = log.sort_values(["_user_int", "user_id", "timestamp", "order"], kind="stable").reset_index(drop=True)
    cat_cols = ["user_id", "age", "gender", "occupation", "zip", "item_id", "release_decade", "first_genre"]
    data = _from_log("ml-100k-mtl", log, user_col="user_id", item_col="item_id", cat_cols=cat_cols,
                     label_cols=["watch", "like", "dislike"],
                     seq_defs={"hist_like": "like", "hist_neutral": "neutral", "hist_dislike": "dislike"},
                     max_len=max_len, ratios=ratios, meta={"source": str(root)})
    # the item's genre list as a fourth sequence field, with its own vocabulary
    _, genre_tokens = _encode(np.concatenate([np.asarray(g, dtype=object) for g in genres if len(g)]))
    lookup = {t: i for i, t in enumerate(genre_tokens)}
    per_item = {}
    for tok, g in zip(items["item_id"], items["class"].fillna("").astype(str).str.split()):
        row = np.zeros(6, dtype=np.int64)
        g = g[-6:]
        if g:
            row[6 - len(g):] = [lookup[t] for t in g]
        per_item[tok] = row
    empty = np.zeros(6, dtype=np.int64)
    g_arr = np.stack([per_item.get(t, empty) for t in log["item_id"]])
    part = chronological_split(np.asarray(pd.factorize(log["user_id"])[0]), ratios)
    for k, name in enumerate(SPLITS):
        getattr(data, name).seq.append(torch.as_tensor(g_arr[part == k]))
    data.seq_fields.append("item_genres")
    data.seq_vocab.append("genre")
    data.vocab_sizes["genre"] = len(genre_tokens)
    data.meta["vocab_tokens"]["genre"] = genre_tokens
    data.__post_init__()
    return data


# --------------------------------------------------------------------------------------------- synthetic

PLANTED_FEATURES = ("field_cross", "f4_effect", "target_in_like", "user_item_affinity")


def synthetic_three_task(n_samples: int = 60000, n_users: int = 2000, n_items: int = 1000, num_fields: int = 20,
                         field_cardinality: int = 10, seq_len: int = 20, latent_dim: int = 8, seed: int = 0,
                         ratios: Sequence[float] = (0.8, 0.1, 0.1)) -> MultiTaskData:
    """The spec's synthetic three-task data: M categorical fields, F = 3 behaviour sequences, 3 tasks.

    Fields: ``user_id``, ``item_id`` (shares the item vocabulary of the sequences) and ``num_fields - 2``
    context fields of ``field_cardinality`` values. Each user has a latent vector ``u``; items have
    latent vectors ``v``. Sequences ``click``, ``like``, ``share`` of ``seq_len`` items (variable length,
    pre-padded): ``like`` is drawn from the user's favourite items (top by ``u . v``), ``click`` from
    affinity-weighted items, ``share`` uniformly. The target item is one of the user's ``like`` items with
    probability 0.3, else uniform.

    Logits (W a random field-by-field table, s a random +-1 effect per value of field f4):
        task 1 (``cross``):   2.5 W[f2, f3] + 1.5 s[f4] + 0.5 u.v
        task 2 (``overlap``): 3.0 [target in like] + 0.5 u.v
        task 3 (``mixed``):   1.5 W[f2, f3] + 2.0 [target in like] - 1.5 s[f4]
    so task 3 shares the crossing of task 1 and the overlap of task 2 but reverses task 1's f4 effect.
    Each label is Bernoulli(sigmoid(logit - 1)). The split is random (rows are i.i.d.).

    The planted features, per impression (``meta["planted"][split]``, columns ``PLANTED_FEATURES``):
    ``field_cross`` = W[f2, f3], ``f4_effect`` = s[f4] (the task conflict: +1.5 in task 1, -1.5 in task 3),
    ``target_in_like`` = [target in like] (the sequence overlap), ``user_item_affinity`` = u.v. Every logit is
    linear in them (``recsys/multitask/oracle.py`` fits the oracle on them); ``meta["oracle_logits"]`` holds
    the true test logits.
    """
    if num_fields < 5:
        raise ValueError(f"num_fields must be >= 5 (user, item, f2, f3, f4), got {num_fields}")
    rng = np.random.default_rng(seed)
    u_lat = rng.normal(size=(n_users, latent_dim)) / np.sqrt(latent_dim)
    v_lat = rng.normal(size=(n_items, latent_dim))
    affinity = u_lat @ v_lat.T                                                   # (U, I)
    fav = np.argsort(-affinity, axis=1)[:, :50]                                  # each user's 50 favourite items
    user = rng.integers(0, n_users, n_samples)
    ctx = rng.integers(0, field_cardinality, (n_samples, num_fields - 2))
    lengths = rng.integers(seq_len // 4, seq_len + 1, (3, n_samples))

    like = fav[user[:, None], rng.integers(0, fav.shape[1], (n_samples, seq_len))]
    p = np.exp(2.0 * affinity)
    p /= p.sum(1, keepdims=True)
    cdf = np.cumsum(p, axis=1)
    cdf[:, -1] = 1.0
    # inverse-CDF sampling for all rows at once: user u's CDF is shifted to [u, u + 1]
    draws = rng.random((n_samples, seq_len)) + user[:, None]
    flat = (cdf + np.arange(n_users)[:, None]).ravel()
    click = np.minimum(np.searchsorted(flat, draws) - user[:, None] * n_items, n_items - 1)
    share = rng.integers(0, n_items, (n_samples, seq_len))
    seqs = []
    for a, s in enumerate((click, like, share)):
        s = s + 1                                                               # 0 = padding
        s[np.arange(seq_len)[None, :] < (seq_len - lengths[a])[:, None]] = PAD
        seqs.append(s)
    target = np.where(rng.random(n_samples) < 0.3,
                      seqs[1][np.arange(n_samples), rng.integers(seq_len - lengths[1], seq_len)] - 1,
                      rng.integers(0, n_items, n_samples))
    in_like = (seqs[1] == (target + 1)[:, None]).any(1).astype(np.float64)
    uv = (u_lat[user] * v_lat[target]).sum(1)
    table = rng.normal(size=(field_cardinality, field_cardinality))
    effect = rng.choice([-1.0, 1.0], size=field_cardinality)
    cross = table[ctx[:, 0], ctx[:, 1]]
    f4 = effect[ctx[:, 2]]
    logits = np.stack([2.5 * cross + 1.5 * f4 + 0.5 * uv,
                       3.0 * in_like + 0.5 * uv,
                       1.5 * cross + 2.0 * in_like - 1.5 * f4], axis=1) - 1.0
    labels = (rng.random(logits.shape) < 1 / (1 + np.exp(-logits))).astype(np.float32)
    planted = np.stack([cross, f4, in_like, uv], axis=1)                          # PLANTED_FEATURES order
    cat = np.concatenate([user[:, None] + 1, target[:, None] + 1, ctx + 1], axis=1)
    order = rng.permutation(n_samples)
    n_train, n_valid = int(ratios[0] * n_samples), int(ratios[1] * n_samples)
    parts = (order[:n_train], order[n_train:n_train + n_valid], order[n_train + n_valid:])
    splits = [_make_split(cat, seqs, labels, user, rows) for rows in parts]
    cat_fields = ["user_id", "item_id", *(f"f{j}" for j in range(2, num_fields))]
    vocab_sizes = {"user_id": n_users + 1, "item": n_items + 1,
                   **{f"f{j}": field_cardinality + 1 for j in range(2, num_fields)}}
    return MultiTaskData(name="mtl-synthetic", cat_fields=cat_fields, seq_fields=["click", "like", "share"],
                         tasks=["cross", "overlap", "mixed"], vocab_sizes=vocab_sizes,
                         cat_vocab=["user_id", "item", *cat_fields[2:]], seq_vocab=["item"] * 3,
                         train=splits[0], valid=splits[1], test=splits[2],
                         meta={"generator": "synthetic_three_task", "seed": seed,
                               "oracle_logits": torch.as_tensor(logits[parts[2]], dtype=torch.float32),
                               "planted_names": list(PLANTED_FEATURES),
                               "planted": {name: torch.as_tensor(planted[rows], dtype=torch.float32)
                                           for name, rows in zip(SPLITS, parts)}})


# --------------------------------------------------------------------------------------------- KuaiRand / Tenrec

KUAIRAND_LOGS = ("log_standard_4_08_to_4_21_pure.csv", "log_standard_4_22_to_5_08_pure.csv")
KUAIRAND_USER = "user_features_pure.csv"
KUAIRAND_VIDEO = "video_features_basic_pure.csv"
KUAIRAND_USER_COLS = ("user_active_degree", "is_lowactive_period", "is_live_streamer", "is_video_author",
                      "follow_user_num_range", "fans_user_num_range", "friend_user_num_range",
                      "register_days_range", *(f"onehot_feat{i}" for i in range(18)))
KUAIRAND_VIDEO_COLS = ("author_id", "video_type", "upload_type", "music_type", "tag")
KUAIRAND_URL = "https://zenodo.org/records/10439422/files/KuaiRand-Pure.tar.gz"  # 45 MB, 194 MB unpacked
KUAIRAND_HELP = ("get KuaiRand-Pure.tar.gz from " + KUAIRAND_URL + " (see https://kuairand.com) and unpack it so "
                 "that {dir} holds " + ", ".join((*KUAIRAND_LOGS, KUAIRAND_USER, KUAIRAND_VIDEO))
                 + " (or set data_path / $GRAPHATTN_DATA to a folder with KuaiRand-Pure/data/ inside)")


def fetch_kuairand_pure(root: str | os.PathLike, show_progress: bool = True) -> Path:
    """Download and unpack KuaiRand-Pure under ``root`` (once); returns ``root/KuaiRand-Pure/data``.

    Offline, raises ``FileNotFoundError`` saying where to put the files.
    """
    import tarfile

    from graphattn.download import download

    root = Path(root)
    data_dir = root / "KuaiRand-Pure" / "data"
    if all((data_dir / f).is_file() for f in (*KUAIRAND_LOGS, KUAIRAND_USER, KUAIRAND_VIDEO)):
        return data_dir
    try:
        archive = download(KUAIRAND_URL, root / "KuaiRand-Pure.tar.gz", show_progress=show_progress)
    except OSError as exc:
        raise FileNotFoundError(f"KuaiRand-Pure is not in {data_dir} and could not be downloaded ({exc}); "
                                + KUAIRAND_HELP.format(dir=data_dir)) from None
    with tarfile.open(archive) as tar:
        tar.extractall(root, filter="data")  # the "data" filter refuses absolute paths, links out, devices
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{archive} did not unpack to {data_dir}; " + KUAIRAND_HELP.format(dir=data_dir))
    return data_dir


def _data_dir(config: Mapping[str, Any] | None, *parts: str) -> Path:
    if config and config.get("data_path"):
        root = Path(str(config["data_path"])).expanduser()
    elif os.environ.get("GRAPHATTN_DATA"):
        root = Path(os.environ["GRAPHATTN_DATA"]).expanduser()
    else:
        root = Path(__file__).resolve().parents[2] / "data"
    return root.joinpath(*parts)


def _need_columns(frame: pd.DataFrame, cols: Sequence[str], path: Path) -> None:
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; found {list(frame.columns)[:20]}")


def load_kuairand_pure(directory: str | os.PathLike, max_len: int = 20,
                       ratios: Sequence[float] = (0.8, 0.1, 0.1), nrows: int | None = None) -> MultiTaskData:
    """KuaiRand-Pure standard logs -> three tasks (``is_click``, ``is_like``, ``long_view``).

    Categorical fields: user_id, video_id, tab, hour, the user profile columns and the basic video
    columns that are present. Sequences: the user's earlier clicked, liked and long-viewed videos (the
    paper uses 28 sequence features; these are the three that mirror the tasks). Split: each user's
    impressions in time order (``time_ms``), 80/10/10.
    """
    directory = Path(directory)
    paths = [directory / f for f in (*KUAIRAND_LOGS, KUAIRAND_USER, KUAIRAND_VIDEO)]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"missing {missing} in {directory}; " + KUAIRAND_HELP.format(dir=directory))
    logs = []
    for p in paths[:2]:
        frame = pd.read_csv(p, nrows=nrows, dtype=str, keep_default_na=False)
        _need_columns(frame, ("user_id", "video_id", "time_ms", "hourmin", "is_click", "is_like", "long_view"), p)
        logs.append(frame)
    log = pd.concat(logs, ignore_index=True)
    user = pd.read_csv(paths[2], dtype=str, keep_default_na=False)
    video = pd.read_csv(paths[3], dtype=str, keep_default_na=False)
    _need_columns(user, ("user_id",), paths[2])
    _need_columns(video, ("video_id",), paths[3])
    user_cols = [c for c in KUAIRAND_USER_COLS if c in user.columns]
    video_cols = [c for c in KUAIRAND_VIDEO_COLS if c in video.columns]
    log = log.merge(user[["user_id", *user_cols]], on="user_id", how="left")
    log = log.merge(video[["video_id", *video_cols]], on="video_id", how="left")
    for c in ("time_ms", "is_click", "is_like", "long_view"):
        log[c] = pd.to_numeric(log[c], errors="raise")
    log["hour"] = log["hourmin"].astype(str).str.zfill(4).str[:2]
    log["tab"] = log["tab"] if "tab" in log.columns else "0"
    log["_u"] = pd.to_numeric(log["user_id"], errors="coerce")
    log = log.sort_values(["_u", "user_id", "time_ms"], kind="stable").reset_index(drop=True)
    return _from_log("kuairand-pure", log, user_col="user_id", item_col="video_id",
                     cat_cols=["user_id", "video_id", "tab", "hour", *user_cols, *video_cols],
                     label_cols=["is_click", "is_like", "long_view"],
                     seq_defs={"hist_click": "is_click", "hist_like": "is_like", "hist_long_view": "long_view"},
                     max_len=max_len, ratios=ratios, task_names=["click", "like", "long_view"],
                     meta={"source": str(directory)})


QB_VIDEO_FILE = "QB-video.csv"
QB_VIDEO_HELP = ("Tenrec's QB-video is licence-gated (sign the Tenrec data agreement at "
                 "https://static.qblv.qq.com/qblv/h5/algo-frontend/tenrec_dataset.html) and is not downloaded: "
                 "put QB-video.csv (columns user_id,item_id,click,follow,like,share,video_category,"
                 "watching_times,gender,age) into {dir}")


def load_qb_video(directory: str | os.PathLike, max_len: int = 20, ratios: Sequence[float] = (0.8, 0.1, 0.1),
                  nrows: int | None = None) -> MultiTaskData:
    """Tenrec QB-video -> four tasks (click, like, follow, share).

    Categorical fields: user_id, item_id, video_category, gender, age (``watching_times`` is an outcome,
    not a feature, and is left out). Sequences: the user's earlier clicked, liked, followed and shared
    items. The file has no timestamp; its row order is taken as time order within a user.
    """
    directory = Path(directory)
    path = directory / QB_VIDEO_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found. " + QB_VIDEO_HELP.format(dir=directory))
    log = pd.read_csv(path, nrows=nrows, dtype=str, keep_default_na=False)
    tasks = ["click", "like", "follow", "share"]
    _need_columns(log, ("user_id", "item_id", *tasks), path)
    for c in tasks:
        log[c] = pd.to_numeric(log[c], errors="raise")
    extra = [c for c in ("video_category", "gender", "age") if c in log.columns]
    log["_u"] = pd.to_numeric(log["user_id"], errors="coerce")
    log = log.sort_values(["_u", "user_id"], kind="stable").reset_index(drop=True)
    return _from_log("qb-video", log, user_col="user_id", item_col="item_id",
                     cat_cols=["user_id", "item_id", *extra], label_cols=tasks,
                     seq_defs={f"hist_{t}": t for t in tasks}, max_len=max_len, ratios=ratios,
                     meta={"source": str(path)})


def _write_frame(frame: pd.DataFrame, path: Path) -> None:
    with atomic_open(path, "w", newline="", encoding="utf-8") as fh:
        frame.to_csv(fh, index=False)


def write_kuairand_fixture(directory: str | os.PathLike, n_users: int = 20, n_videos: int = 40,
                           n_rows: int = 600, seed: int = 0) -> Path:
    """Write a tiny KuaiRand-Pure-shaped folder (same file names and the columns the reader uses)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    half = n_rows // 2
    for k, fname in enumerate(KUAIRAND_LOGS):
        n = half if k == 0 else n_rows - half
        click = rng.random(n) < 0.4
        frame = pd.DataFrame({
            "user_id": rng.integers(0, n_users, n), "video_id": rng.integers(0, n_videos, n),
            "date": 20220408 + k * 14, "hourmin": rng.choice([0, 100, 1300, 2300], n),
            "time_ms": np.sort(rng.integers(0, 10**9, n)) + k * 10**9,
            "is_click": click.astype(int), "is_like": (click & (rng.random(n) < 0.3)).astype(int),
            "long_view": (click & (rng.random(n) < 0.5)).astype(int), "tab": rng.integers(0, 3, n)})
        _write_frame(frame, directory / fname)
    users = pd.DataFrame({"user_id": np.arange(n_users),
                          "user_active_degree": rng.choice(["high_active", "full_active"], n_users),
                          "is_live_streamer": rng.integers(0, 2, n_users),
                          "onehot_feat0": rng.integers(0, 3, n_users)})
    _write_frame(users, directory / KUAIRAND_USER)
    videos = pd.DataFrame({"video_id": np.arange(n_videos), "author_id": rng.integers(0, 7, n_videos),
                           "video_type": rng.choice(["NORMAL", "AD"], n_videos), "tag": rng.integers(0, 5, n_videos)})
    _write_frame(videos, directory / KUAIRAND_VIDEO)
    return directory


def write_qb_video_fixture(directory: str | os.PathLike, n_users: int = 20, n_items: int = 40, n_rows: int = 600,
                           seed: int = 0) -> Path:
    """Write a tiny ``QB-video.csv`` with Tenrec's columns."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    click = rng.random(n_rows) < 0.5
    frame = pd.DataFrame({
        "user_id": rng.integers(0, n_users, n_rows), "item_id": rng.integers(0, n_items, n_rows),
        "click": click.astype(int), "follow": (click & (rng.random(n_rows) < 0.1)).astype(int),
        "like": (click & (rng.random(n_rows) < 0.2)).astype(int),
        "share": (click & (rng.random(n_rows) < 0.1)).astype(int),
        "video_category": rng.integers(0, 2, n_rows), "watching_times": rng.integers(0, 5, n_rows),
        "gender": rng.integers(0, 3, n_rows), "age": rng.integers(0, 8, n_rows)})
    _write_frame(frame, directory / QB_VIDEO_FILE)
    return directory


def write_ml100k_fixture(directory: str | os.PathLike, n_users: int = 12, n_items: int = 30, n_ratings: int = 150,
                         seed: int = 0) -> Path:
    """Write tiny ``ml-100k.inter`` / ``.user`` / ``.item`` atomic files with ml-100k's header and fields."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pairs = rng.choice(n_users * n_items, size=min(n_ratings, n_users * n_items), replace=False)
    inter = pd.DataFrame({"user_id:token": pairs // n_items + 1, "item_id:token": pairs % n_items + 1,
                          "rating:float": rng.integers(1, 6, len(pairs)),
                          "timestamp:float": rng.integers(880000000, 880100000, len(pairs))})
    genres = ["Action", "Comedy", "Drama", "Children's", "Sci-Fi"]
    users = pd.DataFrame({"user_id:token": np.arange(1, n_users + 1), "age:token": rng.integers(10, 70, n_users),
                          "gender:token": rng.choice(["M", "F"], n_users),
                          "occupation:token": rng.choice(["student", "other", "writer"], n_users),
                          "zip_code:token": rng.integers(10000, 99999, n_users)})
    items = pd.DataFrame({"item_id:token": np.arange(1, n_items + 1),
                          "movie_title:token_seq": [f"Movie {i}" for i in range(n_items)],
                          "release_year:token": rng.integers(1950, 1999, n_items),
                          "class:token_seq": [" ".join(rng.choice(genres, rng.integers(1, 4), replace=False))
                                              for _ in range(n_items)]})
    for frame, name in ((inter, "ml-100k.inter"), (users, "ml-100k.user"), (items, "ml-100k.item")):
        with atomic_open(directory / name, "w", newline="", encoding="utf-8") as fh:
            frame.to_csv(fh, sep="\t", index=False)
    return directory


# --------------------------------------------------------------------------------------------- registry loaders

def _ratios(config: Mapping[str, Any]) -> list[float]:
    return [float(x) for x in config.get("mtl_split_ratios", [0.8, 0.1, 0.1])]


def load_ml100k_mtl_config(config: Mapping[str, Any]) -> MultiTaskData:
    """ml-100k-mtl from ``<data_path>/ml-100k`` when that folder has the atomic files, else from recbole's."""
    local = _data_dir(config, "ml-100k") if config.get("data_path") else None
    directory = local if local is not None and (local / "ml-100k.inter").is_file() else None
    return load_ml100k_multitask(max_len=int(config["max_seq_len"]), negatives=int(config["mtl_negatives"]),
                                 seed=int(config["data_seed"]), ratios=_ratios(config), directory=directory)


def load_synthetic_config(config: Mapping[str, Any]) -> MultiTaskData:
    return synthetic_three_task(n_samples=int(config["synthetic_samples"]), seq_len=int(config["max_seq_len"]),
                                seed=int(config["data_seed"]), ratios=_ratios(config))


def load_kuairand_config(config: Mapping[str, Any]) -> MultiTaskData:
    directory = fetch_kuairand_pure(_data_dir(config), show_progress=bool(config.get("show_progress", True)))
    return load_kuairand_pure(directory, max_len=int(config["max_seq_len"]), ratios=_ratios(config))


def load_qb_video_config(config: Mapping[str, Any]) -> MultiTaskData:
    return load_qb_video(_data_dir(config, "Tenrec"), max_len=int(config["max_seq_len"]), ratios=_ratios(config))


def load_csv_dir_config(directory: str | os.PathLike, config: Mapping[str, Any]) -> MultiTaskData:
    return read_multitask_csv(directory, csv_schema_from_config(config))
