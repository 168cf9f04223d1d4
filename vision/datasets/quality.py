"""Image quality assessment data: a synthetic distortion task on bundled photos, and readers for the score
files of KADID-10k, TID2013, LIVE (Release 2) and CSIQ.

**Synthetic task (``iqa_synthetic``).** References are non-overlapping ``crop_size`` crops of the photos that
installed packages bundle (scikit-learn's ``china.jpg`` and ``flower.jpg``, matplotlib's
``grace_hopper.jpg``), downscaled by ``source_scale``. Each reference gets 4 distortion types x 5 levels
(Gaussian blur, Gaussian noise, JPEG via Pillow, contrast reduction) plus itself. The score is the
SSIM of the distorted crop to its reference (grey level, Gaussian window 1.5, the usual constants), so it
depends on the content as well as the level (``score="ssim"``), or ``1 - level / 5`` (``score="level"``).
The split is by reference crop (``split_by="reference"``, no reference is in two splits) or by whole photo
(``split_by="image"``: test = ``grace_hopper``, the harder and cleaner generalisation test).

**Score-file readers** return a DataFrame with columns ``image, reference, score`` (+ ``distortion``,
``level`` where the file has them), paths relative to the dataset root:

* KADID-10k ``dmos.csv``: ``dist_img,ref_img,dmos,var``.
* TID2013 ``mos_with_names.txt``: ``<mos> <name>`` per line, e.g. ``5.51429 i01_01_1.bmp``; the reference
  of ``iXX_YY_Z`` is ``reference_images/IXX.BMP`` and images live in ``distorted_images/``.
* LIVE Release 2: ``dmos.mat`` (``dmos``, ``orgs``) + ``refnames_all.mat`` (``refnames_all``); 982 entries
  in the order jp2k (227), jpeg (233), wn (174), gblur (174), fastfading (174), image ``<folder>/img<k>.bmp``;
  ``orgs == 1`` marks the pristine copies (kept, flagged in ``is_reference``).
* CSIQ: the ``CSIQ.DMOS.xlsx`` sheet exported to CSV with columns ``image, dst_type, dst_lev, dmos``
  (xlsx needs openpyxl, which is not a dependency); image ``dst_imgs/<type>/<image>.<TYPE>.<lev>.png``.

Keys (``vision/dataset/iqa_synthetic.yaml``): crop_size, source_scale, score, split_by, valid_ratio,
test_ratio, split_seed. Yields ``(x (3, S, S) float32 in [-1, 1], score float32)``; ``meta["reference"]`` holds
each split's reference ids.
"""
from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import TensorDataset

from graphattn.registry import register_dataset
from vision.base import VisionData

__all__ = ["DISTORTIONS", "distort", "ssim", "source_photos", "build_synthetic", "load_iqa_synthetic",
           "read_kadid10k", "read_tid2013", "read_live", "read_csiq", "READERS"]

DISTORTIONS = ("blur", "noise", "jpeg", "contrast")
_LEVELS = {"blur": (0.6, 1.0, 1.5, 2.2, 3.2), "noise": (0.02, 0.04, 0.07, 0.11, 0.16),
           "jpeg": (60, 35, 20, 10, 4), "contrast": (0.8, 0.62, 0.46, 0.32, 0.2)}


def distort(img: np.ndarray, kind: str, level: int, rng: np.random.Generator) -> np.ndarray:
    """Apply distortion ``kind`` at ``level`` in 1..5 to an (H, W, 3) float image in [0, 1]."""
    from scipy.ndimage import gaussian_filter
    if kind not in _LEVELS or not 1 <= level <= 5:
        raise ValueError(f"distortion: expected kind in {DISTORTIONS} and level in 1..5, got {kind!r}, {level}")
    p = _LEVELS[kind][level - 1]
    if kind == "blur":
        out = gaussian_filter(img, sigma=(p, p, 0))
    elif kind == "noise":
        out = img + rng.normal(0, p, img.shape)
    elif kind == "jpeg":
        from PIL import Image
        buf = io.BytesIO()
        Image.fromarray((img * 255).round().astype(np.uint8)).save(buf, format="JPEG", quality=int(p))
        out = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), dtype=np.float64) / 255.0
    else:
        out = img.mean() + p * (img - img.mean())
    return np.clip(out, 0.0, 1.0)


def ssim(a: np.ndarray, b: np.ndarray, sigma: float = 1.5) -> float:
    """Mean SSIM of two (H, W, 3) images in [0, 1], on the grey level (Wang et al., 2004 constants)."""
    from scipy.ndimage import gaussian_filter
    x, y = a.mean(-1), b.mean(-1)
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mx, my = gaussian_filter(x, sigma), gaussian_filter(y, sigma)
    vx = gaussian_filter(x * x, sigma) - mx * mx
    vy = gaussian_filter(y * y, sigma) - my * my
    cxy = gaussian_filter(x * y, sigma) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean())


def source_photos(scale: float = 0.5) -> dict[str, np.ndarray]:
    """The bundled photos as float (H, W, 3) arrays in [0, 1], resized by ``scale``."""
    import matplotlib.cbook as cbook
    from PIL import Image
    from sklearn.datasets import load_sample_images
    bunch = load_sample_images()
    images = {Path(f).stem: Image.fromarray(im) for f, im in zip(bunch.filenames, bunch.images)}
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        images["grace_hopper"] = Image.open(f).convert("RGB")
    out = {}
    for name, im in images.items():
        w, h = im.size
        im = im.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BICUBIC)
        out[name] = np.asarray(im, dtype=np.float64) / 255.0
    return out


def build_synthetic(crop_size: int = 64, scale: float = 0.5, score: str = "ssim", seed: int = 0) -> pd.DataFrame:
    """All distorted crops: DataFrame with ``photo, reference, distortion, level, score`` and ``pixels``
    ((S, S, 3) arrays)."""
    if score not in ("ssim", "level"):
        raise ValueError(f"score: expected 'ssim' or 'level', got {score!r}")
    rng = np.random.default_rng(seed)
    rows = []
    for photo, img in source_photos(scale).items():
        ny, nx = img.shape[0] // crop_size, img.shape[1] // crop_size
        for i in range(ny):
            for j in range(nx):
                ref = img[i * crop_size:(i + 1) * crop_size, j * crop_size:(j + 1) * crop_size]
                rid = f"{photo}_{i}_{j}"
                rows.append(dict(photo=photo, reference=rid, distortion="none", level=0, score=1.0, pixels=ref))
                for kind in DISTORTIONS:
                    for level in range(1, 6):
                        d = distort(ref, kind, level, rng)
                        s = ssim(ref, d) if score == "ssim" else 1.0 - level / 5.0
                        rows.append(dict(photo=photo, reference=rid, distortion=kind, level=level, score=s, pixels=d))
    return pd.DataFrame(rows)


def _split_refs(df: pd.DataFrame, split_by: str, valid_ratio: float, test_ratio: float, seed: int):
    refs = np.array(sorted(df["reference"].unique()))
    rng = np.random.default_rng(seed)
    if split_by == "reference":
        refs = rng.permutation(refs)
        n_test, n_valid = int(round(len(refs) * test_ratio)), int(round(len(refs) * valid_ratio))
        return set(refs[n_test + n_valid:]), set(refs[n_test:n_test + n_valid]), set(refs[:n_test])
    if split_by == "image":
        test = set(df.loc[df["photo"] == "grace_hopper", "reference"])
        rest = rng.permutation(np.array(sorted(set(refs) - test)))
        n_valid = int(round(len(rest) * valid_ratio))
        return set(rest[n_valid:]), set(rest[:n_valid]), test
    raise ValueError(f"split_by: expected 'reference' or 'image', got {split_by!r}")


def load_iqa_synthetic(config: Any) -> VisionData:
    df = build_synthetic(int(config["crop_size"]), float(config["source_scale"]), str(config["score"]),
                         int(config["split_seed"]))
    parts = _split_refs(df, str(config["split_by"]), float(config["valid_ratio"]), float(config["test_ratio"]),
                        int(config["split_seed"]))

    def make(refs):
        sub = df[df["reference"].isin(refs)]
        x = torch.from_numpy(np.stack(sub["pixels"].to_list()).astype(np.float32)).permute(0, 3, 1, 2)
        return TensorDataset((x - 0.5) / 0.5, torch.tensor(sub["score"].to_numpy(), dtype=torch.float32)), sub

    (train, tr), (valid, va), (test, te) = (make(p) for p in parts)
    meta = {"in_channels": 3, "image_size": int(config["crop_size"]),
            "reference": {"train": tr["reference"].tolist(), "valid": va["reference"].tolist(),
                          "test": te["reference"].tolist()},
            "distortion": {"test": te["distortion"].tolist()}, "level": {"test": te["level"].tolist()}}
    return VisionData(train, valid, test, num_classes=1, meta=meta, task_type="regression")


register_dataset("iqa_synthetic", task="vision", loader=load_iqa_synthetic,
                 description="synthetic IQA: 4 distortions x 5 levels on crops of bundled photos, SSIM scores, split by reference")


# ----------------------------------------------------------------------------------------- score files


def _need(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"expected the score file {path}")
    return path


def read_kadid10k(root: str | Path) -> pd.DataFrame:
    """KADID-10k ``dmos.csv`` (``dist_img,ref_img,dmos,var``); distortion type/level parsed from
    ``I01_05_3.png``."""
    path = _need(Path(root) / "dmos.csv")
    df = pd.read_csv(path)
    missing = {"dist_img", "ref_img", "dmos"} - set(df.columns)
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)}; expected dist_img, ref_img, dmos, var")
    parts = df["dist_img"].str.extract(r"^I\d+_(\d+)_(\d+)\.", expand=True)
    if parts.isna().any().any():
        bad = df.loc[parts.isna().any(axis=1), "dist_img"].iloc[0]
        raise ValueError(f"{path}: image name {bad!r} is not of the form Ixx_tt_l.png")
    return pd.DataFrame({"image": "images/" + df["dist_img"], "reference": "images/" + df["ref_img"],
                         "score": df["dmos"].astype(float), "distortion": parts[0].astype(int),
                         "level": parts[1].astype(int)})


def read_tid2013(root: str | Path) -> pd.DataFrame:
    """TID2013 ``mos_with_names.txt`` (``<mos> <name>`` per line)."""
    path = _need(Path(root) / "mos_with_names.txt")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        m = re.fullmatch(r"[iI](\d+)_(\d+)_(\d+)\.(bmp|BMP)", fields[-1]) if len(fields) == 2 else None
        if m is None:
            raise ValueError(f"{path}:{n}: expected '<mos> iXX_YY_Z.bmp', got {line.strip()!r}")
        try:
            mos = float(fields[0])
        except ValueError:
            raise ValueError(f"{path}:{n}: MOS {fields[0]!r} is not a number") from None
        rows.append({"image": f"distorted_images/{fields[1]}", "reference": f"reference_images/I{m.group(1)}.BMP",
                     "score": mos, "distortion": int(m.group(2)), "level": int(m.group(3))})
    return pd.DataFrame(rows)


_LIVE_FOLDERS = (("jp2k", 227), ("jpeg", 233), ("wn", 174), ("gblur", 174), ("fastfading", 174))


def read_live(root: str | Path) -> pd.DataFrame:
    """LIVE Release 2 ``dmos.mat`` + ``refnames_all.mat``."""
    from scipy.io import loadmat
    root = Path(root)
    dm = loadmat(_need(root / "dmos.mat"))
    refs = loadmat(_need(root / "refnames_all.mat"))
    for key, d, name in (("dmos", dm, "dmos.mat"), ("orgs", dm, "dmos.mat"), ("refnames_all", refs, "refnames_all.mat")):
        if key not in d:
            raise ValueError(f"{root / name}: missing variable {key!r}")
    dmos, orgs = dm["dmos"].reshape(-1), dm["orgs"].reshape(-1)
    names = [str(np.asarray(r).reshape(-1)[0]) for r in refs["refnames_all"].reshape(-1)]
    total = sum(n for _, n in _LIVE_FOLDERS)
    if not len(dmos) == len(orgs) == len(names) == total:
        raise ValueError(f"{root}: expected {total} entries in dmos, orgs and refnames_all, got "
                         f"{len(dmos)}, {len(orgs)}, {len(names)}")
    images, kinds = [], []
    for folder, n in _LIVE_FOLDERS:
        images += [f"{folder}/img{k}.bmp" for k in range(1, n + 1)]
        kinds += [folder] * n
    return pd.DataFrame({"image": images, "reference": ["refimgs/" + r for r in names], "score": dmos.astype(float),
                         "distortion": kinds, "is_reference": orgs.astype(bool)})


# dst_type -> (folder, file tag) as in the usual CSIQ distribution, e.g. dst_imgs/awgn/1600.AWGN.1.png
_CSIQ_DIRS = {"noise": ("awgn", "AWGN"), "jpeg": ("jpeg", "JPEG"), "jpeg 2000": ("jpeg2000", "jpeg2000"),
              "fnoise": ("fnoise", "fnoise"), "blur": ("blur", "BLUR"), "contrast": ("contrast", "contrast")}


def read_csiq(root: str | Path, filename: str = "csiq_dmos.csv") -> pd.DataFrame:
    """CSIQ DMOS exported to CSV (``image, dst_type, dst_lev, dmos``)."""
    path = _need(Path(root) / filename)
    df = pd.read_csv(path)
    df.columns = [c.strip().lower() for c in df.columns]
    missing = {"image", "dst_type", "dst_lev", "dmos"} - set(df.columns)
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)}; expected image, dst_type, dst_lev, dmos")
    kinds = df["dst_type"].astype(str).str.strip().str.lower()
    unknown = sorted(set(kinds) - set(_CSIQ_DIRS))
    if unknown:
        raise ValueError(f"{path}: unknown dst_type {unknown}; expected one of {sorted(_CSIQ_DIRS)}")
    image = df["image"].astype(str).str.strip()
    folder, tag = kinds.map(lambda k: _CSIQ_DIRS[k][0]), kinds.map(lambda k: _CSIQ_DIRS[k][1])
    return pd.DataFrame({"image": "dst_imgs/" + folder + "/" + image + "." + tag + "." + df["dst_lev"].astype(str) + ".png",
                         "reference": "src_imgs/" + image + ".png", "score": df["dmos"].astype(float),
                         "distortion": kinds, "level": df["dst_lev"].astype(int)})


READERS = {"kadid10k": read_kadid10k, "tid2013": read_tid2013, "live": read_live, "csiq": read_csiq}
