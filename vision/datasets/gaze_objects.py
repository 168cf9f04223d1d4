"""Egocentric gaze-on-object frames for I-MPN: a synthetic left/right task and a loader for real recordings.

**Synthetic** (``gaze_objects``; the I-MPN spec's faithful stand-in for its unreleased eye-tracking videos).
Each frame holds two tablets, one book, two devices and some distractors, placed at random in a scene and
seen through a random camera (rotation, scale, translation and a small perspective term). Node features
``x = [z ; p ; geometry]``: appearance ``z`` = class prototype + Gaussian noise (the two tablets, and the two
devices, look alike), simulated detector class probabilities ``p`` over (tablet, book, device, other) and,
per ``node_geometry``, nothing, the box size ``(w, h)`` or the full box ``(cx, cy, w, h)``. Labels
(``AOI_LABELS``): background (distractors), tablet-left/right, book, device-left/right, where left/right is the
order of the pair's box centres along the image x axis. The gaze point lies in a random box (or, with
probability 0.2, in empty space); the frame's AOI is the label of the box containing it (background if none).

Conditions (``train_condition`` / ``test_condition``): ``iid`` (rotation within +-10 deg, scale 0.8-1.25,
perspective +-0.1, 0-3 distractors), ``viewpoint`` (rotation 20-35 deg either way, scale 0.55-0.7 or 1.4-1.6,
perspective +-0.2: all outside the training range), ``more_objects`` (6-10 distractors: frames with 11-15
boxes where training has 5-8).

**Recordings** (``gaze_recording``): a directory with

- ``detections.csv``, header ``frame,x1,y1,x2,y2,class[,label][,feat_0,...,feat_{d-1}]``: one row per detected
  box in pixels; ``class`` = detector class name, ``label`` = AOI name (empty = unlabelled), optional
  appearance embedding columns ``feat_*``;
- ``gaze.csv``, header ``frame,gx,gy`` in pixels (frames without gaze get the image centre);
- ``meta.json``: ``{"image_width": W, "image_height": H, "classes": [...], "labels": ["background", ...]}``.

Node features are ``[feat ; one-hot class ; geometry]``; frames are split into train/valid/test by
``valid_ratio`` / ``test_ratio`` / ``split_seed``. Items are dicts ``{x, boxes, y, gaze}``; batches are
:class:`vision.graphs.object_graph.ObjectGraphBatch`.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from graphattn.registry import register_dataset
from vision.base import IGNORE_INDEX, VisionData, split_indices
from vision.graphs.object_graph import collate_frames
from graphattn.io import atomic_write_text

__all__ = ["AOI_LABELS", "APPEARANCE_CLASSES", "CONDITIONS", "FrameDataset", "make_frames", "load_gaze_objects", "load_gaze_recording", "write_recording"]

AOI_LABELS = ("background", "tablet-left", "tablet-right", "book", "device-left", "device-right")
APPEARANCE_CLASSES = ("tablet", "book", "device", "other")
SIZES = {"tablet": (0.22, 0.16), "book": (0.16, 0.2), "device": (0.1, 0.07)}
CONDITIONS = {
    "iid": {"rot": (0.0, 10.0), "scale": ((0.8, 1.25),), "persp": 0.1, "distractors": (0, 3)},
    "viewpoint": {"rot": (20.0, 35.0), "scale": ((0.55, 0.7), (1.4, 1.6)), "persp": 0.2, "distractors": (0, 3)},
    "more_objects": {"rot": (0.0, 10.0), "scale": ((0.8, 1.25),), "persp": 0.1, "distractors": (6, 10)},
}
GEOMETRY = ("none", "size", "box")


class FrameDataset(Dataset):
    """A list of frames (dicts of tensors ``x`` (n, F), ``boxes`` (n, 4), ``y`` (n,), ``gaze`` (2,))."""

    def __init__(self, frames: list[dict[str, torch.Tensor]]):
        self.frames = frames

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.frames[i]


def _prototypes(dim: int, seed: int = 12345) -> np.ndarray:
    """Appearance prototypes of tablet, book, device and three kinds of distractor (unit vectors)."""
    protos = np.random.default_rng(seed).normal(size=(6, dim))
    return protos / np.linalg.norm(protos, axis=1, keepdims=True)


def _geometry(boxes: np.ndarray, mode: str) -> np.ndarray:
    if mode == "none":
        return np.zeros((len(boxes), 0), dtype=np.float32)
    if mode == "size":
        return boxes[:, 2:]
    return boxes


def make_frames(n: int, condition: str, seed: int, feature_dim: int = 16, noise: float = 0.35, node_geometry: str = "size") -> list[dict[str, torch.Tensor]]:
    """Render ``n`` synthetic frames under ``condition`` (see the module docstring)."""
    if condition not in CONDITIONS:
        raise ValueError(f"condition must be one of {', '.join(CONDITIONS)}, got {condition!r}")
    if node_geometry not in GEOMETRY:
        raise ValueError(f"node_geometry must be one of {', '.join(GEOMETRY)}, got {node_geometry!r}")
    cond = CONDITIONS[condition]
    rng = np.random.default_rng(seed)
    protos = _prototypes(feature_dim)
    frames = []
    for _ in range(n):
        kinds = ["tablet", "tablet", "book", "device", "device"]
        n_distr = int(rng.integers(cond["distractors"][0], cond["distractors"][1] + 1))
        kinds += ["other"] * n_distr
        m = len(kinds)
        # scene: centres spread over [-1, 1]^2 on a jittered grid so that boxes rarely overlap
        cols = int(math.ceil(math.sqrt(m * 1.5)))
        cells = rng.permutation(cols * cols)[:m]
        centres = np.stack([(cells % cols + rng.uniform(0.2, 0.8, m)) / cols * 2 - 1, (cells // cols + rng.uniform(0.2, 0.8, m)) / cols * 2 - 1], 1)
        sizes = np.array([SIZES[k] if k != "other" else tuple(rng.uniform(0.06, 0.2, 2)) for k in kinds]) * (2.0 / max(cols, 3)) * 1.5
        # camera: rotation, scale, perspective, translation; image coordinates in [0, 1] (approximately)
        lo, hi = cond["rot"]
        theta = math.radians(rng.uniform(lo, hi) * rng.choice([-1.0, 1.0]))
        span = cond["scale"][int(rng.integers(len(cond["scale"])))]
        s = rng.uniform(*span)
        g = rng.uniform(-cond["persp"], cond["persp"], 2)
        t = rng.uniform(-0.1, 0.1, 2)
        rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
        denom = 1.0 + centres @ g
        img = 0.5 + 0.3 * s * (centres @ rot.T) / denom[:, None] + t
        wh = 0.3 * s * sizes / denom[:, None]
        boxes = np.concatenate([img, wh], 1).astype(np.float32)
        labels = np.zeros(m, dtype=np.int64)
        for kind, (left, right) in (("tablet", (1, 2)), ("device", (4, 5))):
            idx = [i for i, k in enumerate(kinds) if k == kind]
            a, b = sorted(idx, key=lambda i: boxes[i, 0])
            labels[a], labels[b] = left, right
        labels[kinds.index("book")] = 3
        proto_idx = np.array([{"tablet": 0, "book": 1, "device": 2}.get(k, 3 + int(rng.integers(3))) for k in kinds])
        z = protos[proto_idx] + rng.normal(0, noise, (m, feature_dim))
        det_class = np.array([APPEARANCE_CLASSES.index(k) for k in kinds])
        logits = 3.0 * np.eye(4)[det_class] + rng.normal(0, 1.0, (m, 4))
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        x = np.concatenate([z, p, _geometry(boxes, node_geometry)], 1).astype(np.float32)
        if rng.random() < 0.2:
            gaze = rng.uniform(0, 1, 2)
        else:
            j = int(rng.integers(m))
            gaze = boxes[j, :2] + rng.uniform(-0.3, 0.3, 2) * boxes[j, 2:]
        order = rng.permutation(m)  # node order carries no information
        frames.append({"x": torch.from_numpy(x[order]), "boxes": torch.from_numpy(boxes[order]), "y": torch.from_numpy(labels[order]),
                       "gaze": torch.tensor(gaze, dtype=torch.float32)})
    return frames


def _collate(config: Any):
    k = int(config["graph_knn"])
    return functools.partial(collate_frames, k=k if k > 0 else None)


def load_gaze_objects(config: Any) -> VisionData:
    dim, noise, geo = int(config["feature_dim"]), float(config["appearance_noise"]), str(config["node_geometry"])
    seed = int(config["split_seed"])
    train = make_frames(int(config["num_train"]), config["train_condition"], seed, dim, noise, geo)
    valid = make_frames(int(config["num_valid"]), config["train_condition"], seed + 1, dim, noise, geo)
    test = make_frames(int(config["num_test"]), config["test_condition"], seed + 2, dim, noise, geo)
    return VisionData(FrameDataset(train), FrameDataset(valid), FrameDataset(test), num_classes=len(AOI_LABELS),
                      meta={"in_features": train[0]["x"].shape[1], "class_names": list(AOI_LABELS), "graph": True},
                      collate_fn=_collate(config))


# --------------------------------------------------------------------------- real recordings


def _read_text(path: Path) -> str:
    """The file as UTF-8 text; a binary or wrongly encoded file -> ``ValueError`` naming the file and line."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ValueError(f"{path}, line {line}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); a recording "
                         "holds text files detections.csv, gaze.csv and meta.json") from None


def _read_csv(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; a recording directory needs detections.csv, gaze.csv and meta.json")
    reader = csv.DictReader(io.StringIO(_read_text(path), newline=""))
    missing = [c for c in required if c not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; header must start with {','.join(required)}")
    return list(reader)


def _num(row: dict[str, str], key: str, path: Path, line: int) -> float:
    try:
        return float(row[key])
    except (TypeError, ValueError):
        raise ValueError(f"{path}, line {line}: column '{key}' must be a number, got {row[key]!r}") from None


def read_recording(directory: str | Path, node_geometry: str = "size") -> tuple[list[dict[str, torch.Tensor]], list[str]]:
    """Frames (sorted by frame id) of a recording directory, and its AOI label names."""
    directory = Path(directory)
    meta_path = directory / "meta.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} not found; a recording directory needs detections.csv, gaze.csv and meta.json")
    try:
        meta = json.loads(_read_text(meta_path))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{meta_path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    for key in ("image_width", "image_height", "classes", "labels"):
        if key not in meta:
            raise ValueError(f"{meta_path}: missing key '{key}'")
    width, height = float(meta["image_width"]), float(meta["image_height"])
    classes, labels = list(meta["classes"]), list(meta["labels"])
    det_path = directory / "detections.csv"
    rows = _read_csv(det_path, ("frame", "x1", "y1", "x2", "y2", "class"))
    feat_cols = sorted((c for c in (rows[0].keys() if rows else []) if c.startswith("feat_")), key=lambda c: int(c[5:]))
    gaze_path = directory / "gaze.csv"
    gaze = {}
    for line, row in enumerate(_read_csv(gaze_path, ("frame", "gx", "gy")), start=2):
        gaze[row["frame"]] = (_num(row, "gx", gaze_path, line) / width, _num(row, "gy", gaze_path, line) / height)
    by_frame: dict[str, list] = {}
    for line, row in enumerate(rows, start=2):
        x1, y1, x2, y2 = (_num(row, k, det_path, line) for k in ("x1", "y1", "x2", "y2"))
        if x2 <= x1 or y2 <= y1:
            raise ValueError(f"{det_path}, line {line}: box must have x2 > x1 and y2 > y1, got ({x1}, {y1}, {x2}, {y2})")
        if row["class"] not in classes:
            raise ValueError(f"{det_path}, line {line}: class {row['class']!r} is not in meta.json classes {classes}")
        label = (row.get("label") or "").strip()
        if label and label not in labels:
            raise ValueError(f"{det_path}, line {line}: label {label!r} is not in meta.json labels {labels}")
        box = [(x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height]
        feat = [_num(row, c, det_path, line) for c in feat_cols]
        onehot = [1.0 if row["class"] == c else 0.0 for c in classes]
        by_frame.setdefault(row["frame"], []).append((feat + onehot, box, labels.index(label) if label else IGNORE_INDEX))
    if not by_frame:
        raise ValueError(f"{det_path}: no detections")
    frames = []
    for key in sorted(by_frame, key=lambda f: (len(f), f)):
        items = by_frame[key]
        boxes = np.array([b for _, b, _ in items], dtype=np.float32)
        x = np.concatenate([np.array([f for f, _, _ in items], dtype=np.float32), _geometry(boxes, node_geometry)], 1)
        frames.append({"x": torch.from_numpy(x), "boxes": torch.from_numpy(boxes), "y": torch.tensor([l for _, _, l in items], dtype=torch.long),
                       "gaze": torch.tensor(gaze.get(key, (0.5, 0.5)), dtype=torch.float32)})
    return frames, labels


def load_gaze_recording(config: Any) -> VisionData:
    directory = str(config["recording_dir"])
    if not directory:
        raise ValueError("dataset gaze_recording needs --recording_dir=<directory with detections.csv, gaze.csv, meta.json>")
    frames, labels = read_recording(directory, str(config["node_geometry"]))
    train, valid, test = split_indices(len(frames), float(config["valid_ratio"]), float(config["test_ratio"]), int(config["split_seed"]))
    pick = lambda idx: FrameDataset([frames[i] for i in idx])  # noqa: E731
    return VisionData(pick(train), pick(valid), pick(test), num_classes=len(labels),
                      meta={"in_features": frames[0]["x"].shape[1], "class_names": labels, "graph": True}, collate_fn=_collate(config))


def write_recording(directory: str | Path, frames: list[dict[str, torch.Tensor]], feature_dim: int = 16, width: int = 1280, height: int = 720,
                    labelled: set[int] | None = None) -> Path:
    """Write synthetic frames (from :func:`make_frames`) in the recording layout, e.g. as a test fixture or an
    example. The class column is the argmax of the simulated detector probabilities; frames not in
    ``labelled`` (default: all labelled) get empty labels."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    det_lines = ["frame,x1,y1,x2,y2,class,label," + ",".join(f"feat_{i}" for i in range(feature_dim))]
    gaze_lines = ["frame,gx,gy"]
    for f_id, f in enumerate(frames):
        for i in range(f["boxes"].shape[0]):
            cx, cy, w, h = f["boxes"][i].tolist()
            cls = APPEARANCE_CLASSES[int(f["x"][i, feature_dim : feature_dim + 4].argmax())]
            label = AOI_LABELS[int(f["y"][i])] if labelled is None or f_id in labelled else ""
            feats = ",".join(f"{v:.6f}" for v in f["x"][i, :feature_dim].tolist())
            det_lines.append(f"{f_id},{(cx - w / 2) * width:.3f},{(cy - h / 2) * height:.3f},{(cx + w / 2) * width:.3f},{(cy + h / 2) * height:.3f},{cls},{label},{feats}")
        gaze_lines.append(f"{f_id},{float(f['gaze'][0]) * width:.3f},{float(f['gaze'][1]) * height:.3f}")
    atomic_write_text(directory / "detections.csv", "\n".join(det_lines) + "\n")
    atomic_write_text(directory / "gaze.csv", "\n".join(gaze_lines) + "\n")
    meta = {"image_width": width, "image_height": height, "classes": list(APPEARANCE_CLASSES), "labels": list(AOI_LABELS)}
    atomic_write_text(directory / "meta.json", json.dumps(meta, indent=1) + "\n")
    return directory


register_dataset("gaze_objects", task="vision", loader=load_gaze_objects, description="synthetic egocentric frames: left/right look-alike objects under viewpoint changes (I-MPN)")
register_dataset("gaze_recording", task="vision", loader=load_gaze_recording, description="your own detections + gaze (CSV/JSON, see vision/datasets/gaze_objects.py)")
