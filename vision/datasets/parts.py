"""Synthetic part-discovery images (DependencyViT spec): objects made of coloured parts on a noisy background.

Each RGB image (``image_size`` square, default 32) holds 1..``max_objects`` non-overlapping objects. An object
is one of three types, each made of two parts of different colours (colours drawn from a palette of six, so
colour alone does not tell the type):

- ``lollipop``: a disc on top of a vertical stick;
- ``L``: a vertical bar with a horizontal foot to the right;
- ``T``: a horizontal bar with a vertical stem below.

The label is the multiset of object types (with ``max_objects = 2``: 3 + 6 = 9 classes), so training uses
image labels only. Per-pixel object ids (0 = background, 1..k) and part ids (0 = background, 1..2k) are kept
on the split datasets (``.objects``, ``.parts``) to score unsupervised grouping afterwards.

With ``resample_train`` (default) the training split renders a new image on every read
(:class:`FreshPartsDataset`; ``num_train`` is then the number of images per epoch), so a model never sees the
same training image twice: with a fixed set of 3,000 images both DependencyViT and the plain ViT overfit
after about 5 epochs at about 40 % test accuracy. The randomness comes from torch's generator, so a seeded
run draws the same stream of images (also with DataLoader workers, which torch seeds per worker). Validation
and test images are always a fixed, seeded set.

``parts_task: relation`` (issue #20) draws instead ONE object whose two parts are separate shapes, a disc
(part 1, in a random warm colour: red, yellow or magenta) and a square (part 2, a random cool colour: green,
blue or cyan), a gap of at least ``gap`` px apart (default one 4 px patch); the label (4 classes) is where the
disc lies relative to the square: above, below, left of or right of it (the axis of the larger centre offset;
layouts whose two offsets differ by less than 2 px are redrawn). The colour families make the two parts easy
to tell apart (with random colours for both, a disc and a square of 6-8 px differ only in their corner pixels
and a small ViT learnt only the axis of the relation, about 45 % after 12 epochs); where they are does not
depend on the class. Every single patch (or a bag of patches without positions) has the same distribution for
all four classes, and swapping the two parts' places flips the label (above <-> below, left <-> right); only
relating the disc's patches to the square's patches decides it. Object ids are 1 on both parts, part ids 1
(disc) and 2 (square). ``parts_task: types`` (default) is the multiset task above.

``margin`` (relation task, default 0) keeps both parts at least that many px from the image border; the part
sides then scale with the inner canvas ``image_size - 2 margin``. Issue #20 found that without it a bag of local
8 px windows (``experiments/dependency_vit.py`` ``LocalBag``) reads the relation even with ``gap: 8`` at 32 px
(0.93 test accuracy after 4 epochs, chance 0.25): with the gap the two parts are pushed against opposite borders,
and a patch in the outermost row of patches lies in one 2x2 window where an inner patch lies in two, so the pooled
bag weighs a part's border-side edge half as much as its other edge and learns which side of the image each part
is on. With ``margin: 4`` (one patch of background all round, every part patch in the same number of windows) the
same bag falls to chance (0.28; ``docs/results/dependency_vit_parts/check_32px_gap8{,_margin4}.json``).

Keys (``vision/dataset/parts.yaml``): image_size, max_objects, num_train, num_valid, num_test, noise_std,
split_seed, resample_train, parts_task, gap, margin. Yields ``(x (3, S, S) float32, y int64)``.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from graphattn.registry import register_dataset
from vision.base import VisionData

__all__ = ["PartsDataset", "FreshPartsDataset", "OBJECT_TYPES", "PALETTE", "PARTS_TASKS", "RELATIONS", "render_parts",
           "render_relation", "label_names", "load_parts_data"]

OBJECT_TYPES = ("lollipop", "L", "T")
PALETTE = np.array(
    [[0.95, 0.2, 0.2], [0.2, 0.85, 0.25], [0.25, 0.4, 0.95], [0.95, 0.85, 0.2], [0.85, 0.3, 0.9], [0.2, 0.9, 0.9]],
    dtype=np.float32,
)
BACKGROUND = 0.35
PARTS_TASKS = ("types", "relation")
WARM, COOL = (0, 3, 4), (1, 2, 5)  # palette rows: red, yellow, magenta | green, blue, cyan
RELATIONS = ("disc above square", "disc below square", "disc left of square", "disc right of square")


def label_names(max_objects: int) -> list[tuple[str, ...]]:
    """Class index -> sorted multiset of object types (sizes 1..max_objects)."""
    return list(_label_names(max_objects))


@functools.lru_cache(maxsize=None)
def _label_names(max_objects: int) -> tuple[tuple[str, ...], ...]:
    out: list[tuple[str, ...]] = []
    for k in range(1, max_objects + 1):
        out.extend(tuple(OBJECT_TYPES[i] for i in combo) for combo in itertools.combinations_with_replacement(range(3), k))
    return tuple(out)


def _draw_object(kind: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (size, size) of the two parts of one object type."""
    a = np.zeros((size, size), dtype=bool)
    b = np.zeros((size, size), dtype=bool)
    yy, xx = np.mgrid[0:size, 0:size]
    w = max(3, int(round(size * 0.3)))  # bar thickness: 3-4 px, about one patch
    c = size // 2
    if kind == 0:  # lollipop: disc (top) + stick (below)
        r = size * 0.3
        a |= (yy - r) ** 2 + (xx - c + 0.5) ** 2 <= r * r
        b[int(2 * r) :, c - w // 2 : c - w // 2 + w] = True
        b &= ~a
    elif kind == 1:  # L: vertical bar + foot to the right
        a[:, :w] = True
        b[size - w :, w:] = True
    else:  # T: top bar + stem
        a[:w, :] = True
        b[w:, c - w // 2 : c - w // 2 + w] = True
    return a, b


def render_parts(rng: np.random.Generator, image_size: int, max_objects: int, noise_std: float) -> tuple[np.ndarray, int, np.ndarray, np.ndarray]:
    """One image ``(3, S, S)``, its label, object ids ``(S, S)`` and part ids ``(S, S)``."""
    names = _label_names(max_objects)
    img = np.full((image_size, image_size, 3), BACKGROUND, dtype=np.float32)
    objects = np.zeros((image_size, image_size), dtype=np.int64)
    parts = np.zeros((image_size, image_size), dtype=np.int64)
    n = int(rng.integers(1, max_objects + 1))
    kinds = sorted(int(k) for k in rng.integers(0, 3, n))
    lo, hi = max(6, image_size * 5 // 16), max(7, image_size * 7 // 16)  # object side: 10..14 px at 32 px
    for _ in range(100):  # sample a layout of non-overlapping boxes (1 px apart); restart when stuck
        boxes: list[tuple[int, int, int]] = []
        for _k in kinds:
            for _try in range(50):
                size = int(rng.integers(lo, hi + 1))
                y, x = (int(v) for v in rng.integers(0, image_size - size + 1, 2))
                if all(y + size + 1 <= by or by + bs + 1 <= y or x + size + 1 <= bx or bx + bs + 1 <= x for by, bx, bs in boxes):
                    boxes.append((y, x, size))
                    break
            else:
                break
        if len(boxes) == len(kinds):
            break
    else:
        raise ValueError(f"could not place {len(kinds)} objects without overlap in {image_size} px; lower max_objects")
    for idx, (k, (y, x, size)) in enumerate(zip(kinds, boxes), start=1):
        colours = rng.choice(len(PALETTE), 2, replace=False)
        for j, mask in enumerate(_draw_object(k, size)):
            region = img[y : y + size, x : x + size]
            region[mask] = PALETTE[colours[j]]
            objects[y : y + size, x : x + size][mask] = idx
            parts[y : y + size, x : x + size][mask] = 2 * (idx - 1) + j + 1
    img += rng.normal(0.0, noise_std, img.shape).astype(np.float32)
    label = names.index(tuple(OBJECT_TYPES[k] for k in kinds))
    return img.transpose(2, 0, 1), label, objects, parts


def relation_label(dy: float, dx: float) -> int:
    """Index into :data:`RELATIONS` of a disc whose centre is ``(dy, dx)`` px from the square's centre
    (image rows grow downwards): the axis of the larger offset decides."""
    if abs(dy) >= abs(dx):
        return 0 if dy < 0 else 1
    return 2 if dx < 0 else 3


def _relation_masks(image_size: int, disc: tuple[int, int, int], square: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (S, S) of a disc inscribed in the box ``(y, x, side)`` and of a filled square box."""
    yy, xx = np.mgrid[0:image_size, 0:image_size]
    y, x, s = disc
    r = s / 2
    a = (yy - (y + r - 0.5)) ** 2 + (xx - (x + r - 0.5)) ** 2 <= r * r + 0.25
    y, x, s = square
    b = (yy >= y) & (yy < y + s) & (xx >= x) & (xx < x + s)
    return a, b


def render_relation(rng: np.random.Generator, image_size: int, noise_std: float, gap: int = 4,
                    swap: bool = False, margin: int = 0) -> tuple[np.ndarray, int, np.ndarray, np.ndarray]:
    """One ``relation`` image ``(3, S, S)``: a disc and a square at least ``gap`` px apart; label = where the
    disc lies relative to the square (:data:`RELATIONS`). Returns image, label, object ids, part ids (1 =
    disc, 2 = square). ``swap`` exchanges the two parts' boxes after drawing (same random draws otherwise),
    which turns above into below and left into right. ``margin``: px of background kept between the parts and
    the border (the part sides scale with the inner canvas ``image_size - 2 margin``)."""
    inner = image_size - 2 * margin
    lo, hi = max(5, inner * 9 // 32), max(6, inner * 11 // 32)   # part side: 6-8 px at 24 px, 9-11 at 32
    for _ in range(1000):
        boxes = []
        for _p in range(2):
            side = int(rng.integers(lo, hi + 1))
            y, x = (int(v) for v in rng.integers(margin, image_size - margin - side + 1, 2))
            boxes.append((y, x, side))
        (y0, x0, s0), (y1, x1, s1) = boxes
        apart = y0 + s0 + gap <= y1 or y1 + s1 + gap <= y0 or x0 + s0 + gap <= x1 or x1 + s1 + gap <= x0
        dy, dx = (y0 + s0 / 2) - (y1 + s1 / 2), (x0 + s0 / 2) - (x1 + s1 / 2)
        if apart and abs(abs(dy) - abs(dx)) >= 2:
            break
    else:
        raise ValueError(f"could not place two parts {gap} px apart in {image_size} px with a {margin} px margin; "
                         "lower gap or margin, or raise image_size")
    colours = (int(rng.choice(WARM)), int(rng.choice(COOL)))
    noise = rng.normal(0.0, noise_std, (image_size, image_size, 3)).astype(np.float32)
    if swap:
        boxes = boxes[::-1]
        dy, dx = -dy, -dx
    disc, square = _relation_masks(image_size, boxes[0], boxes[1])
    img = np.full((image_size, image_size, 3), BACKGROUND, dtype=np.float32)
    parts = np.zeros((image_size, image_size), dtype=np.int64)
    for j, mask in enumerate((disc, square)):
        img[mask] = PALETTE[colours[j]]
        parts[mask] = j + 1
    img += noise
    return img.transpose(2, 0, 1), relation_label(dy, dx), (parts > 0).astype(np.int64), parts


def _render(rng: np.random.Generator, image_size: int, max_objects: int, noise_std: float, task: str, gap: int,
            margin: int = 0):
    if task == "relation":
        return render_relation(rng, image_size, noise_std, gap, margin=margin)
    return render_parts(rng, image_size, max_objects, noise_std)


class PartsDataset(Dataset):
    """Rendered images with labels and per-pixel object / part ids. Yields ``(x, y)``."""

    def __init__(self, n: int, image_size: int, max_objects: int, noise_std: float, seed: int, task: str = "types", gap: int = 4,
                 margin: int = 0):
        if n < 1:
            raise ValueError(f"number of images must be >= 1, got {n}")
        _check_task(task)
        rng = np.random.default_rng(seed)
        items = [_render(rng, image_size, max_objects, noise_std, task, gap, margin) for _ in range(n)]
        self.images = torch.from_numpy(np.stack([it[0] for it in items]))          # (n, 3, S, S)
        self.labels = torch.tensor([it[1] for it in items], dtype=torch.long)     # (n,)
        self.objects = torch.from_numpy(np.stack([it[2] for it in items]))        # (n, S, S)
        self.parts = torch.from_numpy(np.stack([it[3] for it in items]))          # (n, S, S)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return (self.images[i] - BACKGROUND) / 0.3, self.labels[i]


class FreshPartsDataset(Dataset):
    """Training images rendered anew on every read: ``n`` is the number of images per epoch. Each read seeds
    a numpy generator from torch's global generator (reproducible under ``torch.manual_seed``). Yields
    ``(x, y)`` like :class:`PartsDataset`; it keeps no masks."""

    def __init__(self, n: int, image_size: int, max_objects: int, noise_std: float, task: str = "types", gap: int = 4,
                 margin: int = 0):
        if n < 1:
            raise ValueError(f"number of images must be >= 1, got {n}")
        _check_task(task)
        self.n, self.image_size, self.max_objects, self.noise_std = int(n), int(image_size), int(max_objects), float(noise_std)
        self.task, self.gap, self.margin = task, int(gap), int(margin)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= i < self.n:
            raise IndexError(f"index {i} out of range for {self.n} images")
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,))))
        img, label, _, _ = _render(rng, self.image_size, self.max_objects, self.noise_std, self.task, self.gap, self.margin)
        return (torch.from_numpy(img) - BACKGROUND) / 0.3, torch.tensor(label, dtype=torch.long)


def _check_task(task: str) -> None:
    if task not in PARTS_TASKS:
        raise ValueError(f"parts_task: expected one of {', '.join(PARTS_TASKS)}, got {task!r}")


def load_parts_data(config: Any) -> VisionData:
    size, k = int(config["image_size"]), int(config["max_objects"])
    task = str(config.get("parts_task", "types"))
    gap, margin = int(config.get("gap", 4)), int(config.get("margin", 0))
    _check_task(task)
    if gap < 0:
        raise ValueError(f"gap: expected >= 0 px, got {gap}")
    if not 0 <= 2 * margin <= size - 16:
        raise ValueError(f"margin: expected 0 <= margin <= (image_size - 16) / 2 = {(size - 16) // 2} px, got {margin}")
    if size < 16:
        raise ValueError(f"image_size: expected >= 16 for the parts images, got {size}")
    if not 1 <= k <= 3:
        raise ValueError(f"max_objects: expected 1, 2 or 3, got {k}")
    noise, seed = float(config["noise_std"]), int(config["split_seed"])
    splits: list[Dataset] = [PartsDataset(int(config[key]), size, k, noise, seed + i, task, gap, margin)
                             for i, key in enumerate(("num_train", "num_valid", "num_test"))]
    if config["resample_train"]:
        splits[0] = FreshPartsDataset(int(config["num_train"]), size, k, noise, task, gap, margin)
    if task == "relation":
        return VisionData(*splits, num_classes=len(RELATIONS), meta={"in_channels": 3, "image_size": size, "class_names": list(RELATIONS)})
    names = label_names(k)
    return VisionData(*splits, num_classes=len(names), meta={"in_channels": 3, "image_size": size, "class_names": ["+".join(n) for n in names]})


register_dataset("parts", task="vision", loader=load_parts_data, description="synthetic multi-part objects for unsupervised part/object discovery")
