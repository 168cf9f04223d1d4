"""RecBole atomic files: ``<name>.inter``, ``.kg``, ``.link``, ``.user``, ``.item``.

Each file is tab-separated with a header of typed fields, e.g. ``user_id:token	item_id:token
rating:float	timestamp:float``. Types: ``token``, ``token_seq`` (space-separated tokens, kept as one
string), ``float``, ``float_seq`` (kept as one string).

Index construction (what KGAT needs):
- interactions are filtered by ``threshold``, time-sorted when a timestamp exists, deduplicated on
  (user, item) keeping the first, and users / items are numbered by first appearance;
- ``.link`` maps item tokens to KG entity tokens; links of items without interactions are dropped
  (logged); item ``i`` is entity ``i``; every other KG entity is numbered ``n_items..`` by first
  appearance in ``.kg``; an item without a link is an entity with no KG edges;
- relations are numbered by first appearance in ``.kg``.

Pre-split data (RecBole's ``benchmark_filename``): ``<name>.train.inter``, ``<name>.valid.inter``,
``<name>.test.inter`` are used as given when all three exist.
"""
from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from graphattn.io import atomic_open

from .dataset import RecDataset
from .splits import split_indices

log = logging.getLogger(__name__)

FIELD_TYPES = ("token", "token_seq", "float", "float_seq")


def read_atomic_file(path: str | os.PathLike,
                     allow_empty: bool = False) -> tuple[pd.DataFrame, dict[str, str], np.ndarray]:
    """Parse one atomic file (``allow_empty``: a header without data lines gives an empty frame).

    Returns:
        frame: one column per field (named without the ``:type`` suffix); token fields are ``str``,
            float fields ``float64`` (an empty float field is NaN).
        types: field name -> type.
        lines: ``(len(frame),)`` 1-based file line number of every row (the header is line 1).
    """
    path = Path(path)
    raw = path.read_bytes()
    if not raw.strip():
        raise ValueError(f"{path}: file is empty; expected a tab-separated header like "
                         "'user_id:token\\titem_id:token' followed by data lines")
    header_end = raw.find(b"\n")
    header = (raw if header_end < 0 else raw[:header_end]).decode("utf-8").rstrip("\r").split("\t")
    names, types = [], {}
    for col, f in enumerate(header, 1):
        name, sep, typ = f.partition(":")
        if not sep or typ not in FIELD_TYPES or not name:
            raise ValueError(f"{path.name} line 1 (header), field {col}: expected 'name:type' with type in "
                             f"{FIELD_TYPES}, got {f!r}; fix the header")
        if name in types:
            raise ValueError(f"{path.name} line 1 (header): field {name!r} appears twice")
        names.append(name)
        types[name] = typ

    # Field counts per line from the raw bytes, so a short line is reported, not padded with NaN.
    data = np.frombuffer(raw, dtype=np.uint8)
    nl = np.flatnonzero(data == 10)
    n_lines = len(nl) + (0 if data[-1] == 10 else 1)
    starts = np.r_[0, nl + 1][:n_lines]
    ends = np.r_[nl, len(data)][:n_lines]
    cr = (ends > starts) & (data[np.maximum(ends - 1, 0)] == 13)
    blank = (ends - cr) == starts
    tabs = np.bincount(np.searchsorted(nl, np.flatnonzero(data == 9)), minlength=n_lines)[:n_lines]
    bad = np.flatnonzero(~blank & (tabs != len(names) - 1))
    if len(bad):
        i = int(bad[0])
        raise ValueError(f"{path.name} line {i + 1}: expected {len(names)} tab-separated fields "
                         f"({', '.join(header)}), got {tabs[i] + 1}; fix or delete the line")
    lines = np.flatnonzero(~blank)[1:] + 1
    if len(lines) == 0 and not allow_empty:
        raise ValueError(f"{path}: file has a header but no data lines")

    frame = pd.read_csv(io.BytesIO(raw), sep="\t", header=0, names=names, dtype=str,
                        keep_default_na=False, na_filter=False, quoting=csv.QUOTE_NONE,
                        skip_blank_lines=True, engine="c", encoding="utf-8")
    for name, typ in types.items():
        if typ == "float":
            s = frame[name].str.strip()
            val = pd.to_numeric(s, errors="coerce").astype(np.float64)
            wrong = np.flatnonzero(val.isna().to_numpy() & (s != "").to_numpy())
            if len(wrong):
                j = int(wrong[0])
                raise ValueError(f"{path.name} line {lines[j]}, column {name!r}: expected a number "
                                 f"({name}:float), got {frame[name].iloc[j]!r}")
            frame[name] = val
        else:
            frame[name] = frame[name].astype(str)
    return frame, types, lines


def _require(frame: pd.DataFrame, path: Path, field: str, key: str) -> None:
    if field not in frame.columns:
        raise ValueError(f"{path.name} line 1 (header): missing required column {field!r} (config key "
                         f"{key}); got columns {list(frame.columns)}; rename the column or set {key}")


def _find_inter(directory: Path, name: str | None) -> tuple[str, Path]:
    if name is not None and (directory / f"{name}.inter").exists():
        return name, directory / f"{name}.inter"
    cands = sorted(p for p in directory.glob("*.inter")
                   if not p.name.endswith((".train.inter", ".valid.inter", ".test.inter")))
    if len(cands) == 1:
        return cands[0].name[: -len(".inter")], cands[0]
    if not cands:
        pre = sorted(directory.glob("*.train.inter"))
        if len(pre) == 1:
            stem = pre[0].name[: -len(".train.inter")]
            return stem, directory / f"{stem}.inter"
    raise ValueError(f"{directory}: expected exactly one <name>.inter file, found "
                     f"{[p.name for p in cands] or 'none'}; pass the dataset name or remove extra files")


def load_atomic(directory: str | os.PathLike, config: Mapping[str, Any] | None = None,
                name: str | None = None) -> RecDataset:
    """Read ``<directory>/<name>.{inter,kg,link,user,item}`` into a :class:`RecDataset`.

    Config keys read: ``USER_ID_FIELD``, ``ITEM_ID_FIELD``, ``RATING_FIELD``, ``TIME_FIELD``,
    ``threshold``, ``eval_args``, ``seed`` (see ``recsys/data/__init__.py``).
    """
    config = dict(config or {})
    directory = Path(directory)
    name, inter_path = _find_inter(directory, name)
    uid, iid = config.get("USER_ID_FIELD", "user_id"), config.get("ITEM_ID_FIELD", "item_id")
    rfield, tfield = config.get("RATING_FIELD", "rating"), config.get("TIME_FIELD", "timestamp")

    split_paths = [directory / f"{name}.{s}.inter" for s in ("train", "valid", "test")]
    presplit = all(p.exists() for p in split_paths)
    if presplit:
        parts = [read_atomic_file(p)[0] for p in split_paths]
        for p, f in zip(split_paths, parts):
            _require(f, p, uid, "USER_ID_FIELD")
            _require(f, p, iid, "ITEM_ID_FIELD")
        inter = pd.concat([f.assign(_split=k) for k, f in enumerate(parts)], ignore_index=True)
        src = split_paths[0]
    else:
        if not inter_path.exists():
            raise FileNotFoundError(f"{inter_path} not found; an atomic dataset needs <name>.inter")
        inter, _, _ = read_atomic_file(inter_path)
        _require(inter, inter_path, uid, "USER_ID_FIELD")
        _require(inter, inter_path, iid, "ITEM_ID_FIELD")
        src = inter_path

    threshold = config.get("threshold")
    if threshold:
        if not isinstance(threshold, Mapping):
            raise ValueError(f"config key threshold: expected a mapping like {{rating: 4}} or null, "
                             f"got {threshold!r}")
        for field, minimum in threshold.items():
            _require(inter, src, field, f"threshold.{field}")
            inter = inter[inter[field].to_numpy() >= float(minimum)]
    has_time = tfield in inter.columns
    has_rating = rfield in inter.columns
    if has_time:
        inter = inter.sort_values(tfield, kind="stable")
    inter = inter.drop_duplicates([uid, iid], keep="first").reset_index(drop=True)
    if len(inter) == 0:
        raise ValueError(f"{src}: no interactions left after threshold {threshold!r}; lower the threshold")

    users, user_tokens = pd.factorize(inter[uid], sort=False)
    items, item_tokens = pd.factorize(inter[iid], sort=False)
    user_tokens = np.asarray(user_tokens, dtype=object).astype(str)
    item_tokens = np.asarray(item_tokens, dtype=object).astype(str)
    n_users, n_items = len(user_tokens), len(item_tokens)
    table = pd.DataFrame({"user": users.astype(np.int64), "item": items.astype(np.int64)})
    if has_time:
        table["timestamp"] = inter[tfield].to_numpy(np.float64)
    if has_rating:
        table["rating"] = inter[rfield].to_numpy(np.float64)

    if presplit:
        part = inter["_split"].to_numpy()
        key = np.arange(len(table))
        order = np.lexsort((key, table["user"].to_numpy()))
        idx = [order[part[order] == k] for k in range(3)]
    else:
        idx = split_indices(table["user"].to_numpy(), config.get("eval_args"),
                            times=table["timestamp"].to_numpy() if has_time else None,
                            seed=int(config.get("seed", 2019)), source=f"{name} eval_args")
    pairs = table[["user", "item"]].to_numpy(np.int64)
    extra: dict[str, Any] = {}
    for split, rows in zip(("train", "valid", "test"), idx):
        if has_time:
            extra[f"{split}_time"] = table["timestamp"].to_numpy()[rows]
        if has_rating:
            extra[f"{split}_rating"] = table["rating"].to_numpy()[rows]

    kg, entity_tokens, relation_names = _load_kg(directory, name, item_tokens, iid, config)
    user_feat = _load_feat(directory / f"{name}.user", uid, user_tokens, "USER_ID_FIELD")
    item_feat = _load_feat(directory / f"{name}.item", iid, item_tokens, "ITEM_ID_FIELD")
    return RecDataset(
        name=name, n_users=n_users, n_items=n_items, n_entities=len(entity_tokens),
        n_relations=len(relation_names), train=pairs[idx[0]], valid=pairs[idx[1]], test=pairs[idx[2]],
        kg=kg, user_tokens=user_tokens, item_tokens=item_tokens, entity_tokens=entity_tokens,
        relation_names=relation_names, interactions=table, user_feat=user_feat, item_feat=item_feat,
        **extra)


def _load_kg(directory: Path, name: str, item_tokens: np.ndarray, iid: str,
             config: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    n_items = len(item_tokens)
    item_index = pd.Index(item_tokens)
    ent_tokens = item_tokens.astype(object).copy()  # unlinked item: its entity token is its item token
    link_path, kg_path = directory / f"{name}.link", directory / f"{name}.kg"
    link = pd.DataFrame({"item": np.zeros(0, np.int64), "ent": np.zeros(0, str)})
    if link_path.exists():
        lf, _, _ = read_atomic_file(link_path, allow_empty=True)
        ent_field = config.get("ENTITY_ID_FIELD", "entity_id")
        _require(lf, link_path, iid, "ITEM_ID_FIELD")
        _require(lf, link_path, ent_field, "ENTITY_ID_FIELD")
        item = item_index.get_indexer(lf[iid])
        unknown = int((item < 0).sum())
        if unknown:
            log.info("%s: dropped %d links of items without interactions", link_path.name, unknown)
        link = pd.DataFrame({"item": item, "ent": lf[ent_field].to_numpy()})[item >= 0]
        dup = link.duplicated("item", keep="first")
        if dup.any():
            log.warning("%s: %d items have more than one entity; kept the first link of each",
                        link_path.name, int(dup.sum()))
            link = link[~dup]
        ent_tokens[link["item"].to_numpy()] = link["ent"].to_numpy()
    if not kg_path.exists():
        return np.zeros((0, 3), np.int64), ent_tokens.astype(str), []
    kf, _, _ = read_atomic_file(kg_path, allow_empty=True)
    h_f, r_f, t_f = (config.get("HEAD_ENTITY_ID_FIELD", "head_id"), config.get("RELATION_ID_FIELD", "relation_id"),
                     config.get("TAIL_ENTITY_ID_FIELD", "tail_id"))
    for f, key in ((h_f, "HEAD_ENTITY_ID_FIELD"), (r_f, "RELATION_ID_FIELD"), (t_f, "TAIL_ENTITY_ID_FIELD")):
        _require(kf, kg_path, f, key)
    kf = kf[[h_f, r_f, t_f]].drop_duplicates().reset_index(drop=True)
    rel, relation_names = pd.factorize(kf[r_f], sort=False)
    linked = set(link["ent"].tolist())
    both = np.stack([kf[h_f].to_numpy(), kf[t_f].to_numpy()], 1).ravel()
    other = pd.unique(both[~pd.Index(both).isin(linked)])
    other_index = pd.Index(other)

    # An entity linked to several items gets its edges once per item (left merges keep row order).
    tri = pd.DataFrame({"h": kf[h_f].to_numpy(), "r": rel.astype(np.int64), "t": kf[t_f].to_numpy()})
    for end in ("h", "t"):
        tri = tri.merge(link.rename(columns={"ent": end, "item": f"{end}_item"}), on=end, how="left")
        idx = tri[f"{end}_item"].to_numpy(np.float64, na_value=np.nan)
        fallback = n_items + other_index.get_indexer(tri[end])
        tri[f"{end}_idx"] = np.where(np.isnan(idx), fallback, np.nan_to_num(idx)).astype(np.int64)
    kg = tri[["h_idx", "r", "t_idx"]].to_numpy(np.int64)
    entity_tokens = np.concatenate([ent_tokens, np.asarray(other, dtype=object)]).astype(str)
    return kg, entity_tokens, [str(r) for r in relation_names]


def _load_feat(path: Path, field: str, tokens: np.ndarray, key: str) -> pd.DataFrame | None:
    if not path.exists():
        return None
    frame, _, _ = read_atomic_file(path, allow_empty=True)
    _require(frame, path, field, key)
    frame = frame.drop_duplicates(field, keep="first").set_index(field)
    return frame.reindex(pd.Index(tokens, name=field)).reset_index()


def _write_frame(frame: pd.DataFrame, types: dict[str, str], path: Path) -> None:
    out = frame.rename(columns={c: f"{c}:{types[c]}" for c in frame.columns})
    with atomic_open(path, "w", encoding="utf-8", newline="") as fh:
        out.to_csv(fh, sep="\t", index=False, quoting=csv.QUOTE_NONE, lineterminator="\n")


def _tokens(ds: RecDataset) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    ut = ds.user_tokens if ds.user_tokens is not None else np.arange(ds.n_users).astype(str)
    it = ds.item_tokens if ds.item_tokens is not None else np.arange(ds.n_items).astype(str)
    et = ds.entity_tokens
    if et is None:
        et = np.concatenate([np.char.add("i", it.astype(str)),
                             np.char.add("e", np.arange(ds.n_items, ds.n_entities).astype(str))])
    rn = ds.relation_names if ds.relation_names is not None else [f"r{r}" for r in range(ds.n_relations)]
    return np.asarray(ut).astype(str), np.asarray(it).astype(str), np.asarray(et).astype(str), list(rn)


def write_atomic_files(ds: RecDataset, directory: str | os.PathLike, name: str | None = None,
                       presplit: bool = False) -> Path:
    """Write ``ds`` as RecBole atomic files (atomically, one temp file per output).

    With ``presplit=False`` one ``<name>.inter`` holds every interaction (``ds.interactions`` when
    set, else train+valid+test) and reading it back re-splits with the config's ``eval_args``;
    with ``presplit=True`` the splits go to ``<name>.{train,valid,test}.inter`` and are kept as given.
    """
    name = name or ds.name
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ut, it, et, rn = _tokens(ds)

    def inter_frame(pairs: np.ndarray, time: np.ndarray | None, rating: np.ndarray | None) -> tuple:
        f = pd.DataFrame({"user_id": ut[pairs[:, 0]], "item_id": it[pairs[:, 1]]})
        types = {"user_id": "token", "item_id": "token"}
        if rating is not None:
            f["rating"], types["rating"] = rating, "float"
        if time is not None:
            f["timestamp"], types["timestamp"] = time, "float"
        return f, types

    if presplit:
        for split in ("train", "valid", "test"):
            f, t = inter_frame(getattr(ds, split), getattr(ds, f"{split}_time"), getattr(ds, f"{split}_rating"))
            _write_frame(f, t, directory / f"{name}.{split}.inter")
    else:
        if ds.interactions is not None:
            tab = ds.interactions
            f, t = inter_frame(tab[["user", "item"]].to_numpy(np.int64),
                               tab["timestamp"].to_numpy() if "timestamp" in tab else None,
                               tab["rating"].to_numpy() if "rating" in tab else None)
        else:
            splits = ("train", "valid", "test")
            pairs = np.concatenate([getattr(ds, s) for s in splits])
            cols = {}
            for extra in ("time", "rating"):
                vals = [getattr(ds, f"{s}_{extra}") for s in splits]
                cols[extra] = None if any(v is None for v in vals) else np.concatenate(vals)
            f, t = inter_frame(pairs, cols["time"], cols["rating"])
        _write_frame(f, t, directory / f"{name}.inter")

    if ds.n_entities > 0 and (len(ds.kg) or ds.entity_tokens is not None):
        in_kg = np.zeros(ds.n_entities, dtype=bool)
        in_kg[ds.kg[:, [0, 2]].ravel()] = True
        keep = (et[: ds.n_items] != it) | in_kg[: ds.n_items]
        if keep.any():
            _write_frame(pd.DataFrame({"item_id": it[keep], "entity_id": et[: ds.n_items][keep]}),
                         {"item_id": "token", "entity_id": "token"}, directory / f"{name}.link")
        if len(ds.kg):
            _write_frame(pd.DataFrame({"head_id": et[ds.kg[:, 0]], "relation_id": np.asarray(rn)[ds.kg[:, 1]],
                                       "tail_id": et[ds.kg[:, 2]]}),
                         {"head_id": "token", "relation_id": "token", "tail_id": "token"},
                         directory / f"{name}.kg")
    return directory
