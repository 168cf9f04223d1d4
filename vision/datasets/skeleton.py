"""Skeleton sequences of interacting entities: file readers/writers, a synthetic interaction task, loaders.

Arrays follow ISTA-Net's layout ``(C, T, J, E)`` (C = 3 coordinates, T frames, J joints, E entities);
batches add ``N`` in front.

* **NTU RGB+D ``.skeleton`` text files** (Shahroudy et al., CVPR 2016; Liu et al., TPAMI 2019). Layout:
  line 1 the frame count; per frame a line with the body count, then per body one line of 10 values
  (``bodyID clippedEdges handLeftConfidence handLeftState handRightConfidence handRightState isRestricted
  leanX leanY trackingState``), a line with the joint count (25) and one line of 12 values per joint
  (``x y z depthX depthY colorX colorY orientationW orientationX orientationY orientationZ trackingState``).
  :func:`read_ntu_skeleton` / :func:`write_ntu_skeleton`; :func:`ntu_to_array` keeps the ``max_bodies``
  bodies with the most motion (sum of per-coordinate variance, the CTR-GCN/ISTA-Net preprocessing rule), in
  order of first appearance, and drops frames without bodies.
* **SBU Kinect Interaction ``skeleton_pos.txt``**: one comma-separated row per frame, the frame number then
  15 joints x (x, y, z) of person A and the same of person B (91 values), coordinates normalised by the
  dataset (ISTA-Net's feeder maps them back with ``x = 1280 - 2560 x``, ``y = 960 - 1920 y``,
  ``z = z * 10000 / 7.8125``). :func:`read_sbu_skeleton` / :func:`write_sbu_skeleton`.
  (H2O and Assembly101 pose files are not described in our spec; they have no reader here.)
* **Synthetic two-entity interactions** (:func:`make_interactions`, the offline default): two 15-joint stick
  figures in the SBU joint order with random bone lengths, 8 interaction classes, random 3-D rotation,
  translation and joint noise; entity order optionally swapped at random.
* **Entity Rearrangement** (:func:`rearrange_entities`): ISTA-Net's training-time augmentation, a random
  permutation of the entity axis per sample.

Registered datasets (task ``vision``): ``skeleton-interaction`` (synthetic; keys in
``vision/dataset/skeleton-interaction.yaml``) and ``ntu-mutual26`` (NTU RGB+D 120 mutual actions read from a
folder of ``.skeleton`` files; keys in ``vision/dataset/ntu-mutual26.yaml``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from graphattn.registry import register_dataset
from graphattn.training import progress
from vision.base import VisionData
from graphattn.io import atomic_write_text

__all__ = [
    "NTUBody", "read_ntu_skeleton", "write_ntu_skeleton", "ntu_to_array", "parse_ntu_name",
    "NTU_MUTUAL_ACTIONS", "NTU120_XSUB_TRAIN_SUBJECTS", "ntu_split",
    "read_sbu_skeleton", "write_sbu_skeleton",
    "SBU_JOINTS", "INTERACTION_CLASSES", "RELATIONAL_CLASSES", "TIMING_CLASSES", "relational_classes",
    "make_interactions",
    "rearrange_entities", "swap_entities", "resample_frames", "SkeletonDataset",
    "load_skeleton_interaction", "load_ntu_mutual26",
]


# ============================================================================ NTU RGB+D .skeleton

NTU_BODY_FIELDS = ("bodyID", "clippedEdges", "handLeftConfidence", "handLeftState", "handRightConfidence",
                   "handRightState", "isRestricted", "leanX", "leanY", "trackingState")
NTU_JOINT_FIELDS = ("x", "y", "z", "depthX", "depthY", "colorX", "colorY", "orientationW", "orientationX",
                    "orientationY", "orientationZ", "trackingState")
# NTU RGB+D 120 two-person ("mutual") actions: A50-A60 and A106-A120 (26 classes)
NTU_MUTUAL_ACTIONS = tuple(range(50, 61)) + tuple(range(106, 121))
# cross-subject training performers of NTU RGB+D 120 (Liu et al., TPAMI 2019)
NTU120_XSUB_TRAIN_SUBJECTS = (1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38, 45, 46,
                              47, 49, 50, 52, 53, 54, 55, 56, 57, 58, 59, 70, 74, 78, 80, 81, 82, 83, 84, 85, 86,
                              89, 91, 92, 93, 94, 95, 97, 98, 100, 103)
_NTU_NAME = re.compile(r"S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})")


@dataclass
class NTUBody:
    """One body in one frame: ``body_id`` (the tracking id string), the other 9 body values
    (``info``, float64, order of ``NTU_BODY_FIELDS[1:]``) and ``joints (J, 12)`` float64 (``NTU_JOINT_FIELDS``)."""

    body_id: str
    info: np.ndarray
    joints: np.ndarray


def _numbers(path: Path, lineno: int, line: str, count: int, what: str) -> list[float]:
    parts = line.split()
    if len(parts) != count:
        raise ValueError(f"{path}:{lineno}: expected {count} values for {what}, got {len(parts)}: {line.strip()[:80]!r}")
    try:
        return [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"{path}:{lineno}: expected {count} numbers for {what}, got {line.strip()[:80]!r}") from None


def _count(path: Path, lineno: int, line: str | None, what: str) -> int:
    if line is None:
        raise ValueError(f"{path}:{lineno}: file ends where {what} was expected")
    text = line.strip()
    if not re.fullmatch(r"\d+", text):
        raise ValueError(f"{path}:{lineno}: expected {what} (a non-negative integer), got {text[:80]!r}")
    return int(text)


def read_ntu_skeleton(path: str | Path) -> list[list[NTUBody]]:
    """Read an NTU RGB+D ``.skeleton`` file into frames, each a list of :class:`NTUBody`.

    Malformed files raise ``ValueError("<path>:<line>: expected ..., got ...")``; a missing file
    ``FileNotFoundError``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"NTU skeleton file '{path}' not found")
    lines = path.read_text(encoding="ascii", errors="replace").splitlines()
    pos = 0

    def next_line() -> tuple[int, str | None]:
        nonlocal pos
        pos += 1
        return pos, (lines[pos - 1] if pos <= len(lines) else None)

    n_frames = _count(path, *next_line(), "the frame count")
    frames: list[list[NTUBody]] = []
    for _ in range(n_frames):
        n_bodies = _count(path, *next_line(), "a body count")
        bodies = []
        for _ in range(n_bodies):
            lineno, line = next_line()
            if line is None:
                raise ValueError(f"{path}:{lineno}: file ends where a body line ({len(NTU_BODY_FIELDS)} values) was expected")
            parts = line.split()
            if len(parts) != len(NTU_BODY_FIELDS):
                raise ValueError(f"{path}:{lineno}: expected {len(NTU_BODY_FIELDS)} values for a body line "
                                 f"({' '.join(NTU_BODY_FIELDS)}), got {len(parts)}: {line.strip()[:80]!r}")
            info = _numbers(path, lineno, " ".join(parts[1:]), len(NTU_BODY_FIELDS) - 1, "a body line after bodyID")
            n_joints = _count(path, *next_line(), "a joint count")
            joints = np.empty((n_joints, len(NTU_JOINT_FIELDS)), dtype=np.float64)
            for j in range(n_joints):
                lineno, line = next_line()
                if line is None:
                    raise ValueError(f"{path}:{lineno}: file ends where joint {j + 1} of {n_joints} was expected")
                joints[j] = _numbers(path, lineno, line, len(NTU_JOINT_FIELDS), f"joint {j + 1} ({' '.join(NTU_JOINT_FIELDS)})")
            bodies.append(NTUBody(parts[0], np.asarray(info, dtype=np.float64), joints))
        frames.append(bodies)
    for lineno in range(pos + 1, len(lines) + 1):
        if lines[lineno - 1].strip():
            raise ValueError(f"{path}:{lineno}: expected end of file after {n_frames} frames, got {lines[lineno - 1].strip()[:80]!r}")
    return frames


def _fmt(v: float) -> str:
    return repr(float(v)) if not float(v).is_integer() else str(int(v))


def write_ntu_skeleton(path: str | Path, frames: Sequence[Sequence[NTUBody]]) -> None:
    """Write frames in the ``.skeleton`` text format (atomically); :func:`read_ntu_skeleton` reads them back."""
    out = [str(len(frames))]
    for bodies in frames:
        out.append(str(len(bodies)))
        for body in bodies:
            info = np.asarray(body.info, dtype=np.float64).reshape(-1)
            joints = np.asarray(body.joints, dtype=np.float64)
            if info.shape != (len(NTU_BODY_FIELDS) - 1,):
                raise ValueError(f"body {body.body_id}: info must have {len(NTU_BODY_FIELDS) - 1} values, got {info.shape}")
            if joints.ndim != 2 or joints.shape[1] != len(NTU_JOINT_FIELDS):
                raise ValueError(f"body {body.body_id}: joints must be (J, {len(NTU_JOINT_FIELDS)}), got {joints.shape}")
            if not body.body_id or any(ch.isspace() for ch in body.body_id):
                raise ValueError(f"body id must be a non-empty token without spaces, got {body.body_id!r}")
            out.append(" ".join([body.body_id] + [_fmt(v) for v in info]))
            out.append(str(len(joints)))
            out.extend(" ".join(_fmt(v) for v in row) for row in joints)
    atomic_write_text(path, "\n".join(out) + "\n")


def ntu_to_array(frames: Sequence[Sequence[NTUBody]], max_bodies: int = 2, num_joints: int = 25) -> np.ndarray:
    """``(3, T, J, max_bodies)`` float32 xyz of the ``max_bodies`` most-moving bodies.

    Frames without any body are dropped; a body absent from a frame is zeros there. Bodies are ranked by
    motion (sum over x, y, z of the variance over their frames) and kept in order of first appearance.
    """
    frames = [f for f in frames if len(f)]
    if not frames:
        raise ValueError("NTU sequence has no frame with a body")
    tracks: dict[str, dict[int, np.ndarray]] = {}
    for t, bodies in enumerate(frames):
        for body in bodies:
            if body.joints.shape[0] != num_joints:
                raise ValueError(f"body {body.body_id} in frame {t + 1} has {body.joints.shape[0]} joints, expected {num_joints}")
            tracks.setdefault(body.body_id, {})[t] = body.joints[:, :3]
    ids = list(tracks)                                                             # first-appearance order
    motion = {b: float(np.var(np.stack(list(tr.values())), axis=0).sum()) if len(tr) > 1 else 0.0
              for b, tr in tracks.items()}
    keep = sorted(sorted(ids, key=lambda b: -motion[b])[:max_bodies], key=ids.index)
    out = np.zeros((3, len(frames), num_joints, max_bodies), dtype=np.float32)
    for e, b in enumerate(keep):
        for t, xyz in tracks[b].items():
            out[:, t, :, e] = xyz.T
    return out


def parse_ntu_name(name: str) -> dict[str, int]:
    """``S001C002P003R002A050`` -> ``{setup, camera, performer, replication, action}``; else ``ValueError``."""
    m = _NTU_NAME.search(Path(name).name)
    if m is None:
        raise ValueError(f"'{name}': expected an NTU RGB+D name like S001C002P003R002A050.skeleton")
    return dict(zip(("setup", "camera", "performer", "replication", "action"), map(int, m.groups())))


def ntu_split(info: dict[str, int], benchmark: str) -> str:
    """``"train"`` or ``"test"`` under NTU-120's cross-subject (``xsub``) or cross-setup (``xset``, even setups
    train) protocol."""
    if benchmark == "xsub":
        return "train" if info["performer"] in NTU120_XSUB_TRAIN_SUBJECTS else "test"
    if benchmark == "xset":
        return "train" if info["setup"] % 2 == 0 else "test"
    raise ValueError(f"ntu_benchmark: expected 'xsub' or 'xset', got {benchmark!r}")


# ============================================================================ SBU skeleton_pos.txt

SBU_JOINTS = ("head", "neck", "torso", "left_shoulder", "left_elbow", "left_hand", "right_shoulder",
              "right_elbow", "right_hand", "left_hip", "left_knee", "left_foot", "right_hip", "right_knee",
              "right_foot")


def read_sbu_skeleton(path: str | Path, kinect_units: bool = False) -> np.ndarray:
    """Read an SBU ``skeleton_pos.txt`` into ``(3, T, 15, 2)`` float32 (normalised coordinates, or Kinect
    units with ``kinect_units=True``). Errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SBU skeleton file '{path}' not found")
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="ascii", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 91:
            raise ValueError(f"{path}:{lineno}: expected 91 comma-separated values (frame number + 2 x 15 x 3), got {len(parts)}")
        try:
            rows.append([float(p) for p in parts[1:]])
        except ValueError:
            raise ValueError(f"{path}:{lineno}: expected numbers, got {line.strip()[:80]!r}") from None
    if not rows:
        raise ValueError(f"{path}: no frames")
    data = np.asarray(rows, dtype=np.float64).reshape(len(rows), 2, 15, 3)        # (T, E, J, C)
    if kinect_units:
        data = np.stack([1280 - data[..., 0] * 2560, 960 - data[..., 1] * 1920, data[..., 2] * 10000 / 7.8125], -1)
    return np.ascontiguousarray(data.transpose(3, 0, 2, 1)).astype(np.float32)


def write_sbu_skeleton(path: str | Path, x: np.ndarray) -> None:
    """Write ``(3, T, 15, 2)`` normalised coordinates as ``skeleton_pos.txt`` (atomically)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 4 or x.shape[0] != 3 or x.shape[2:] != (15, 2):
        raise ValueError(f"expected x of shape (3, T, 15, 2), got {x.shape}")
    rows = x.transpose(1, 3, 2, 0).reshape(x.shape[1], -1)                         # (T, E*J*C)
    atomic_write_text(path, "".join(",".join([str(t + 1)] + [repr(float(v)) for v in r]) + "\n" for t, r in enumerate(rows)))


# ============================================================================ synthetic interactions

INTERACTION_CLASSES = ("approach", "retreat", "handshake", "push", "follow", "mirror", "circle", "idle")
# classes whose per-entity motion has the same distribution as another class's, so that only the relation
# between the two entities tells them apart: approach vs follow (both walk forwards; towards each other or
# the same way). With idle_gestures=True also mirror vs idle (the same gestures, in or out of phase).
RELATIONAL_CLASSES = ("approach", "follow")
TIMING_CLASSES = ("mirror", "idle")


def relational_classes(idle_gestures: bool = False) -> tuple[str, ...]:
    """The classes defined only by the relation between the entities for a generator setting."""
    return RELATIONAL_CLASSES + (TIMING_CLASSES if idle_gestures else ())

# rest pose in a body frame (lateral = +left, up, forward), metres, SBU joint order
_REST = np.array([
    [0.00, 1.70, 0.00], [0.00, 1.50, 0.00], [0.00, 1.15, 0.00],
    [0.20, 1.45, 0.00], [0.24, 1.17, 0.00], [0.26, 0.90, 0.03],
    [-0.20, 1.45, 0.00], [-0.24, 1.17, 0.00], [-0.26, 0.90, 0.03],
    [0.11, 0.92, 0.00], [0.11, 0.50, 0.00], [0.11, 0.06, 0.00],
    [-0.11, 0.92, 0.00], [-0.11, 0.50, 0.00], [-0.11, 0.06, 0.00]])
_PARENT = (1, 2, -1, 1, 3, 4, 1, 6, 7, 2, 9, 10, 2, 12, 13)
_L_HAND, _R_HAND, _L_ELBOW, _R_ELBOW, _L_SHOULDER, _R_SHOULDER = 5, 8, 4, 7, 3, 6
_TORSO = 2


def _smooth(tau: np.ndarray, t0: float, t1: float) -> np.ndarray:
    u = np.clip((tau - t0) / max(t1 - t0, 1e-6), 0.0, 1.0)
    return u * u * (3 - 2 * u)


def _random_body(rng: np.random.Generator) -> np.ndarray:
    """Rest pose with random height and per-bone length jitter (children follow their parents)."""
    scale = rng.uniform(0.85, 1.15)
    bone = rng.uniform(0.9, 1.1, size=15)
    pose = np.zeros_like(_REST)
    pose[_TORSO] = _REST[_TORSO] * scale
    for j in (1, 0, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14):                     # parents before children
        p = _PARENT[j]
        pose[j] = pose[p] + (_REST[j] - _REST[p]) * scale * bone[j]
    return pose


class _Person:
    """A stick figure moving on the ground: root (T, 2) in (x, z), facing angle (T,), hand offsets."""

    def __init__(self, rng: np.random.Generator, tau: np.ndarray, root, facing):
        self.pose = _random_body(rng)
        t = len(tau)
        self.root = np.broadcast_to(np.asarray(root, dtype=np.float64), (t, 2)).copy()
        self.facing = np.broadcast_to(np.asarray(facing, dtype=np.float64), (t,)).copy()
        self.hand_local = np.zeros((t, 2, 3))                                       # (T, [L, R], lat/up/fwd)
        self.hand_world: dict[int, tuple[np.ndarray, np.ndarray]] = {}              # joint -> (target (T, 3), blend (T,))

    def axes(self) -> tuple[np.ndarray, np.ndarray]:
        f = np.stack([np.cos(self.facing), np.sin(self.facing)], -1)               # (T, 2) forward in (x, z)
        left = np.stack([-np.sin(self.facing), np.cos(self.facing)], -1)
        return f, left

    def to_world(self, local: np.ndarray) -> np.ndarray:
        """local (T, K, 3) (lat, up, fwd) -> world (T, K, 3) (x, y, z)."""
        f, left = self.axes()
        ground = self.root[:, None] + local[..., :1] * left[:, None] + local[..., 2:] * f[:, None]
        return np.stack([ground[..., 0], local[..., 1], ground[..., 1]], -1)

    def joints(self) -> np.ndarray:
        """(T, 15, 3) world coordinates, with a simple gait while the root moves."""
        t = self.root.shape[0]
        local = np.repeat(self.pose[None], t, axis=0)
        step = np.r_[0.0, np.linalg.norm(np.diff(self.root, axis=0), axis=1)]
        if step.sum() > 1e-6:
            phase = 2 * np.pi * np.cumsum(step) / 0.6
            f, left = self.axes()
            move = np.diff(self.root, axis=0, prepend=self.root[:1])
            norm = np.linalg.norm(move, axis=1, keepdims=True)
            move = np.where(norm > 1e-9, move / np.maximum(norm, 1e-9), 0.0)
            m_lat, m_fwd = (move * left).sum(-1), (move * f).sum(-1)
            gait = np.where(norm[:, 0] > 1e-4, 1.0, 0.0)
            for foot, knee, sign in ((11, 10, 1.0), (14, 13, -1.0)):
                swing = 0.14 * sign * np.sin(phase) * gait
                for joint, k in ((foot, 1.0), (knee, 0.5)):
                    local[:, joint, 0] += k * swing * m_lat
                    local[:, joint, 2] += k * swing * m_fwd
                local[:, foot, 1] += 0.05 * np.maximum(0.0, sign * np.cos(phase)) * gait
        local[:, [_L_HAND, _R_HAND]] += self.hand_local
        local[:, [_L_ELBOW, _R_ELBOW]] += 0.5 * self.hand_local
        world = self.to_world(local)
        for hand, (target, blend) in self.hand_world.items():
            world[:, hand] = world[:, hand] * (1 - blend[:, None]) + target * blend[:, None]
            shoulder, elbow = (_L_SHOULDER, _L_ELBOW) if hand == _L_HAND else (_R_SHOULDER, _R_ELBOW)
            mid = 0.5 * (world[:, shoulder] + world[:, hand]) + np.array([0.0, -0.06, 0.0])
            world[:, elbow] = world[:, elbow] * (1 - blend[:, None]) + mid * blend[:, None]
        return world


def _gestures(rng: np.random.Generator, tau: np.ndarray):
    """Periodic two-hand gestures: offsets (T, 2, 3) for the parameters (freq, amps (2,3), phases (2,3))."""
    freq = rng.uniform(1.0, 2.5)
    amps = rng.uniform(0.05, 0.25, size=(2, 3))
    phases = rng.uniform(0, 2 * np.pi, size=(2, 3))

    def offsets(shift: float = 0.0) -> np.ndarray:
        return amps[None] * np.sin(2 * np.pi * freq * tau[:, None, None] + phases[None] + shift)

    return offsets


def _mirror(offsets: np.ndarray) -> np.ndarray:
    """Mirror image of a hand-offset track for a person facing the other: swap hands, negate lateral."""
    out = offsets[:, ::-1].copy()
    out[..., 0] *= -1
    return out


def _interaction(label: int, rng: np.random.Generator, tau: np.ndarray,
                 idle_gestures: bool = False) -> tuple[_Person, _Person]:
    """Two persons performing class ``label``; entity A acts (pushes, leads) in the canonical order."""
    name = INTERACTION_CLASSES[label]
    t0 = rng.uniform(0.05, 0.25)
    t1 = t0 + rng.uniform(0.5, 0.7)
    s = _smooth(tau, t0, t1)
    if name in ("approach", "retreat", "circle", "mirror", "idle"):
        d = {"approach": (2.2, 3.0), "retreat": (1.3, 1.8), "circle": (1.2, 1.8)}.get(name, (1.4, 2.0))
        d = rng.uniform(*d)
        a = _Person(rng, tau, (-d / 2, 0.0), 0.0)
        b = _Person(rng, tau, (d / 2, 0.0), np.pi)
        if name in ("approach", "retreat"):
            sign = 1.0 if name == "approach" else -1.0
            da, db = rng.uniform(0.4, 0.7, size=2)
            lag = rng.uniform(-0.05, 0.05)
            a.root[:, 0] += sign * da * s
            b.root[:, 0] -= sign * db * _smooth(tau, t0 + lag, t1 + lag)
        elif name == "circle":
            turn = rng.choice([-1.0, 1.0]) * rng.uniform(np.pi / 3, 2 * np.pi / 3)
            psi = turn * s
            a.root = np.stack([-d / 2 * np.cos(psi), -d / 2 * np.sin(psi)], -1)
            b.root = -a.root
            a.facing, b.facing = psi, psi + np.pi
        elif name == "mirror" or idle_gestures:
            gesture = _gestures(rng, tau)
            a.hand_local = gesture()
            shift = 0.0 if name == "mirror" else rng.uniform(0.5 * np.pi, 1.5 * np.pi)
            b.hand_local = _mirror(gesture(shift))
        else:                                                                       # idle: stand, slight sway
            for person in (a, b):
                sway = rng.uniform(0.0, 0.03, size=(1, 2, 3))
                person.hand_local = sway * np.sin(2 * np.pi * rng.uniform(0.3, 0.8) * tau[:, None, None]
                                                  + rng.uniform(0, 2 * np.pi, size=(1, 2, 3)))
        return a, b
    if name == "handshake":
        d = rng.uniform(1.0, 1.3)
        a = _Person(rng, tau, (-d / 2, 0.0), 0.0)
        b = _Person(rng, tau, (d / 2, 0.0), np.pi)
        hold = _smooth(tau, 0.15, 0.35) * (1 - _smooth(tau, 0.75, 0.95))
        height = rng.uniform(0.95, 1.1)
        shake = 0.04 * np.sin(2 * np.pi * rng.uniform(2.5, 4.0) * tau) * hold
        target = np.stack([np.zeros_like(tau), height + shake, np.zeros_like(tau)], -1)
        a.hand_world[_R_HAND] = (target + [-0.04, 0, 0], hold)
        b.hand_world[_R_HAND] = (target + [0.04, 0, 0], hold)
        return a, b
    if name == "push":
        d = rng.uniform(0.9, 1.2)
        a = _Person(rng, tau, (-d / 2, 0.0), 0.0)
        b = _Person(rng, tau, (d / 2, 0.0), np.pi)
        contact = rng.uniform(0.35, 0.45)
        b.root[:, 0] += rng.uniform(0.4, 0.7) * _smooth(tau, contact, contact + 0.2)
        chest = b.to_world(np.repeat(b.pose[None, None, _TORSO] + [0, 0.2, 0], len(tau), 0))[:, 0]
        reach = _smooth(tau, contact - 0.25, contact) * (1 - _smooth(tau, contact + 0.15, contact + 0.4))
        for hand, lat in ((_L_HAND, 0.12), (_R_HAND, -0.12)):
            a.hand_world[hand] = (chest + [-0.08, 0.0, lat], reach)
        return a, b
    if name == "follow":
        d = rng.uniform(1.2, 1.8)
        lead = _Person(rng, tau, (d / 2, 0.0), 0.0)
        follower = _Person(rng, tau, (-d / 2, 0.0), 0.0)
        dist = rng.uniform(0.4, 0.7)
        lag = rng.uniform(0.0, 0.1)
        lead.root[:, 0] += dist * s
        follower.root[:, 0] += dist * _smooth(tau, t0 + lag, t1 + lag)
        return lead, follower
    raise AssertionError(name)


def _rotation(rng: np.random.Generator, yaw_max: float, tilt_max: float) -> np.ndarray:
    yaw, pitch, roll = rng.uniform(-yaw_max, yaw_max), *rng.uniform(-tilt_max, tilt_max, size=2)
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return rz @ rx @ ry


def make_interactions(num_samples: int, num_frames: int = 40, *, seed: int = 0, swap_prob: float = 0.0,
                      yaw_max: float = np.pi, tilt_max: float = 0.3, translation: float = 1.0,
                      noise: float = 0.01, idle_gestures: bool = False,
                      classes: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Synthetic two-entity interactions (ISTA-Net spec's offline task).

    Classes (:data:`INTERACTION_CLASSES`): approach, retreat (facing each other, both step towards / back),
    handshake (right hands meet half-way and shake), push (A's hands reach B's chest, then B is moved back),
    follow (both face the same way and walk; A leads), mirror (two-hand periodic gestures, B the
    synchronous mirror image of A), circle (both side-step around their midpoint), idle (both stand, hands
    swaying slightly; with ``idle_gestures=True`` instead the same gestures as mirror but out of phase by
    0.5-1.5 pi, a harder variant in which mirror vs idle differ only in relative timing). Per-entity
    motion of ``approach`` and ``follow`` has the same distribution (walking forwards): only where the
    other person is and which way they face tells them apart (:func:`relational_classes`).

    Each sample: random bone lengths per person, time warp ``tau^gamma`` (gamma in [0.8, 1.25]), random
    rotation (yaw up to ``yaw_max``, pitch/roll up to ``tilt_max`` rad), ground translation up to
    ``translation`` m, Gaussian joint noise ``noise`` m, and with probability ``swap_prob`` the two entities
    swapped (otherwise A, the actor, is entity 0).

    Returns:
        ``x (num_samples, 3, T, 15, 2)`` float32, ``y (num_samples,)`` int64 (balanced, shuffled) and
        ``swapped (num_samples,)`` bool.
    """
    if num_samples < 1 or num_frames < 2:
        raise ValueError(f"num_samples must be >= 1 and num_frames >= 2, got {num_samples} and {num_frames}")
    if not 0.0 <= swap_prob <= 1.0:
        raise ValueError(f"swap_prob must be in [0, 1], got {swap_prob}")
    rng = np.random.default_rng(seed)
    classes = list(range(len(INTERACTION_CLASSES))) if classes is None else list(classes)
    labels = np.resize(np.asarray(classes, dtype=np.int64), num_samples)
    labels = labels[rng.permutation(num_samples)]
    x = np.empty((num_samples, 3, num_frames, 15, 2), dtype=np.float32)
    swapped = rng.random(num_samples) < swap_prob
    base = np.linspace(0.0, 1.0, num_frames)
    for i, label in enumerate(labels):
        tau = base ** rng.uniform(0.8, 1.25)
        a, b = _interaction(int(label), rng, tau, idle_gestures)
        pts = np.stack([a.joints(), b.joints()], -1)                              # (T, J, 3, E)
        pts = np.einsum("ic,tjce->tjie", _rotation(rng, yaw_max, tilt_max), pts)
        pts[:, :, [0, 2]] += rng.uniform(-translation, translation, size=2)[None, None, :, None]
        pts += rng.normal(0.0, noise, size=pts.shape)
        if swapped[i]:
            pts = pts[..., ::-1]
        x[i] = pts.transpose(2, 0, 1, 3)
    return x, labels, swapped


# ============================================================================ transforms and datasets


def swap_entities(x: Tensor | np.ndarray) -> Tensor | np.ndarray:
    """Reverse the entity (last) axis: for two entities, swap them."""
    return x.flip(-1) if isinstance(x, Tensor) else x[..., ::-1].copy()


def rearrange_entities(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Entity Rearrangement: an independent random permutation of the entity axis of every sample.

    Args: x ``(N, C, T, J, E)``. Returns a tensor of the same shape.
    """
    if x.dim() != 5:
        raise ValueError(f"expected x of shape (N, C, T, J, E), got {tuple(x.shape)}")
    n, e = x.shape[0], x.shape[-1]
    perm = torch.argsort(torch.rand(n, e, generator=generator, device=x.device if generator is None else "cpu"), dim=1)
    perm = perm.to(x.device)[:, None, None, None, :].expand_as(x)                 # (N, C, T, J, E)
    return torch.gather(x, -1, perm)


def resample_frames(x: np.ndarray, num_frames: int) -> np.ndarray:
    """Linear interpolation of ``(C, T, J, E)`` to ``num_frames`` frames (the whole clip is used)."""
    t = x.shape[1]
    if t == num_frames:
        return x.astype(np.float32, copy=True)
    src = np.linspace(0.0, t - 1, num_frames)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, t - 1)
    w = (src - lo)[None, :, None, None]
    return ((1 - w) * x[:, lo] + w * x[:, hi]).astype(np.float32)


class SkeletonDataset(Dataset):
    """``(x (C, T, J, E) float32, y int64)`` pairs from in-memory arrays."""

    def __init__(self, x: np.ndarray | Tensor, y: np.ndarray | Tensor):
        self.x = torch.as_tensor(np.ascontiguousarray(x) if isinstance(x, np.ndarray) else x, dtype=torch.float32)
        self.y = torch.as_tensor(y, dtype=torch.long)
        if self.x.dim() != 5 or len(self.x) != len(self.y):
            raise ValueError(f"expected x (N, C, T, J, E) and y (N,), got {tuple(self.x.shape)} and {tuple(self.y.shape)}")

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.x[i], self.y[i]


def _meta(x: np.ndarray | Tensor, class_names: Sequence[str], **extra: Any) -> dict[str, Any]:
    return {"num_channels": int(x.shape[1]), "num_frames": int(x.shape[2]), "num_joints": int(x.shape[3]),
            "num_entities": int(x.shape[4]), "class_names": list(class_names), **extra}


def load_skeleton_interaction(config: Any) -> VisionData:
    """The synthetic interaction task; keys in ``vision/dataset/skeleton-interaction.yaml``.

    Train in canonical entity order (A = entity 0), valid and test with entities swapped with probability
    ``interaction_test_swap_prob``; three disjoint seeds derived from ``interaction_seed``.
    """
    common = dict(num_frames=int(config["interaction_frames"]), yaw_max=float(config["interaction_yaw_max"]),
                  tilt_max=float(config["interaction_tilt_max"]), translation=float(config["interaction_translation"]),
                  noise=float(config["interaction_noise"]), idle_gestures=bool(config["interaction_idle_gestures"]))
    seed, swap = int(config["interaction_seed"]), float(config["interaction_test_swap_prob"])
    splits = {}
    for k, (name, size, p) in enumerate((("train", config["interaction_train_size"], float(config["interaction_train_swap_prob"])),
                                         ("valid", config["interaction_valid_size"], swap),
                                         ("test", config["interaction_test_size"], swap))):
        x, y, _ = make_interactions(int(size), seed=seed * 3 + k, swap_prob=p, **common)
        splits[name] = SkeletonDataset(x, y)
    return VisionData(train=splits["train"], valid=splits["valid"], test=splits["test"],
                      num_classes=len(INTERACTION_CLASSES),
                      meta=_meta(splits["train"].x, INTERACTION_CLASSES,
                                 relational_classes=list(relational_classes(common["idle_gestures"])),
                                 entity_names=["A", "B"]))


def load_ntu_mutual26(config: Any) -> VisionData:
    """NTU RGB+D 120 mutual actions (26 classes) from ``ntu_skeleton_dir`` (``.skeleton`` files, any depth).

    Per clip: the two most-moving bodies, frames without bodies dropped, coordinates centred on body 1's
    spine-middle joint (joint 2) in its first frame, resampled to ``ntu_frames`` frames. Split by
    ``ntu_benchmark`` (xsub / xset); ``ntu_valid_ratio`` of the training clips (seeded by ``ntu_split_seed``)
    form the validation split.
    """
    root = config["ntu_skeleton_dir"]
    if not root or not Path(root).is_dir():
        raise FileNotFoundError(f"ntu_skeleton_dir: expected a folder of NTU RGB+D .skeleton files, got {root!r}; "
                                "set --ntu_skeleton_dir=/path/to/nturgb+d_skeletons")
    files = sorted(p for p in Path(root).rglob("*.skeleton") if parse_ntu_name(p.name)["action"] in NTU_MUTUAL_ACTIONS)
    if not files:
        raise FileNotFoundError(f"ntu_skeleton_dir '{root}' holds no .skeleton file of a mutual action "
                                f"(A050-A060, A106-A120)")
    t = int(config["ntu_frames"])
    xs, ys, parts = [], [], []
    for path in progress(files, desc="ntu skeletons", enabled=bool(config.get("show_progress", False))):
        info = parse_ntu_name(path.name)
        arr = ntu_to_array(read_ntu_skeleton(path), max_bodies=2, num_joints=25)
        arr = arr - arr[:, :1, 1:2, :1]                                             # centre: body 1, joint 2, frame 1
        xs.append(resample_frames(arr, t))
        ys.append(NTU_MUTUAL_ACTIONS.index(info["action"]))
        parts.append(ntu_split(info, config["ntu_benchmark"]))
    x, y, parts = np.stack(xs), np.asarray(ys, dtype=np.int64), np.asarray(parts)
    train_idx, test_idx = np.flatnonzero(parts == "train"), np.flatnonzero(parts == "test")
    rng = np.random.default_rng(int(config["ntu_split_seed"]))
    perm = rng.permutation(train_idx)
    n_valid = int(round(len(perm) * float(config["ntu_valid_ratio"])))
    valid_idx, train_idx = np.sort(perm[:n_valid]), np.sort(perm[n_valid:])
    names = [f"A{a:03d}" for a in NTU_MUTUAL_ACTIONS]
    return VisionData(train=SkeletonDataset(x[train_idx], y[train_idx]), valid=SkeletonDataset(x[valid_idx], y[valid_idx]),
                      test=SkeletonDataset(x[test_idx], y[test_idx]), num_classes=len(NTU_MUTUAL_ACTIONS),
                      meta=_meta(x, names, benchmark=config["ntu_benchmark"]))


register_dataset("skeleton-interaction", task="vision", loader=load_skeleton_interaction,
                 description="synthetic two-person skeleton interactions (8 classes, T=40, J=15, E=2)")
register_dataset("ntu-mutual26", task="vision", loader=load_ntu_mutual26,
                 description="NTU RGB+D 120 mutual actions (26 classes) from a folder of .skeleton files (ntu_skeleton_dir)")
