import numpy as np
import pytest
import torch

import vision  # noqa: F401  (registers the vision task)
import vision.ista_net  # noqa: F401  (registers ISTANet, whose YAML the Config tests use)
from graphattn.config import Config
from vision.datasets.skeleton import (INTERACTION_CLASSES, NTUBody, load_ntu_mutual26, load_skeleton_interaction,
                                      make_interactions, ntu_split, ntu_to_array, parse_ntu_name, read_ntu_skeleton,
                                      read_sbu_skeleton, rearrange_entities, resample_frames, swap_entities,
                                      write_ntu_skeleton, write_sbu_skeleton)




def _body(rng, body_id, joints=25, offset=0.0):
    info = np.array([0, 1, 0, 1, 2, 0, rng.normal(), rng.normal(), 2], dtype=np.float64)
    j = rng.normal(size=(joints, 12))
    j[:, :3] += offset
    j[:, 11] = 2
    return NTUBody(str(body_id), info, j)


def _frames(rng, n_frames=5, ids=("72057594037931101", "72057594037931102")):
    return [[_body(rng, b, offset=k) for k, b in enumerate(ids)] for _ in range(n_frames)]


# ----------------------------------------------------------------------------- NTU .skeleton


def test_ntu_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    frames = _frames(rng) + [[]] + [[_body(rng, "7", joints=25)]]
    path = tmp_path / "S001C002P003R002A050.skeleton"
    write_ntu_skeleton(path, frames)
    back = read_ntu_skeleton(path)
    assert [len(f) for f in back] == [len(f) for f in frames]
    for fa, fb in zip(frames, back):
        for a, b in zip(fa, fb):
            assert a.body_id == b.body_id
            np.testing.assert_array_equal(a.info, b.info)
            np.testing.assert_array_equal(a.joints, b.joints)
    assert not list(tmp_path.glob("*.tmp"))                                          # atomic write left no temp


def test_ntu_text_layout(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "a.skeleton"
    write_ntu_skeleton(path, _frames(rng, n_frames=2, ids=("11",)))
    lines = path.read_text().splitlines()
    assert lines[0] == "2" and lines[1] == "1"
    assert len(lines[2].split()) == 10 and lines[2].split()[0] == "11"
    assert lines[3] == "25" and all(len(line.split()) == 12 for line in lines[4:29])
    assert len(lines) == 1 + 2 * (1 + 1 + 1 + 25)


@pytest.mark.parametrize("mutate, lineno, needle", [
    (lambda ls: ls[:10], 11, "joint 7 of 25"),                                    # truncated inside a body
    (lambda ls: ls[:5] + [" ".join(ls[5].split()[:11])] + ls[6:], 6, "expected 12 values"),
    (lambda ls: ls[:2] + ["abc"] + ls[3:], 3, "expected 10 values"),
    (lambda ls: ["two"] + ls[1:], 1, "frame count"),
    (lambda ls: ls[:4] + [ls[4].replace(ls[4].split()[2], "nan?", 1)] + ls[5:], 5, "numbers"),
    (lambda ls: ls + ["1 2 3"], 30, "end of file"),
    (lambda ls: ls[:3] + ["x5"] + ls[4:], 4, "joint count"),
])
def test_ntu_malformed_files_name_file_and_line(tmp_path, mutate, lineno, needle):
    rng = np.random.default_rng(2)
    good = tmp_path / "good.skeleton"
    write_ntu_skeleton(good, _frames(rng, n_frames=1, ids=("5",)))
    bad = tmp_path / "bad.skeleton"
    bad.write_text("\n".join(mutate(good.read_text().splitlines())) + "\n")
    with pytest.raises(ValueError) as err:
        read_ntu_skeleton(bad)
    assert f"bad.skeleton:{lineno}:" in str(err.value)
    assert needle in str(err.value)


def test_ntu_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.skeleton"):
        read_ntu_skeleton(tmp_path / "nope.skeleton")


def test_ntu_to_array_keeps_most_moving_bodies_in_appearance_order():
    rng = np.random.default_rng(3)
    t = 6
    still = [_body(rng, "still") for _ in range(t)]
    for b in still:
        b.joints[:, :3] = 1.0                                                       # no motion
    frames = [[] for _ in range(t)]
    for k in range(t):
        frames[k].append(still[k])
        frames[k].append(_body(rng, "mover1", offset=k))
        if k >= 2:
            frames[k].append(_body(rng, "mover2", offset=-k))
    frames.insert(3, [])                                                            # empty frame: dropped
    arr = ntu_to_array(frames, max_bodies=2)
    assert arr.shape == (3, t, 25, 2) and arr.dtype == np.float32
    np.testing.assert_allclose(arr[:, 1, :, 0], frames[1][1].joints[:, :3].T, rtol=1e-6)   # mover1 first
    assert np.all(arr[:, :2, :, 1] == 0)                                            # mover2 absent in frames 0, 1
    np.testing.assert_allclose(arr[:, 2, :, 1], frames[2][2].joints[:, :3].T, rtol=1e-6)
    with pytest.raises(ValueError, match="no frame with a body"):
        ntu_to_array([[], []])


def test_ntu_names_and_splits():
    info = parse_ntu_name("/x/S018C002P103R002A120.skeleton")
    assert info == {"setup": 18, "camera": 2, "performer": 103, "replication": 2, "action": 120}
    assert ntu_split(info, "xsub") == "train" and ntu_split(info, "xset") == "train"
    other = parse_ntu_name("S017C001P003R001A050")
    assert ntu_split(other, "xsub") == "test" and ntu_split(other, "xset") == "test"
    with pytest.raises(ValueError, match="S001C002P003R002A050"):
        parse_ntu_name("clip.skeleton")
    with pytest.raises(ValueError, match="ntu_benchmark"):
        ntu_split(info, "xview")


def test_ntu_loader_on_written_fixtures(tmp_path):
    rng = np.random.default_rng(4)
    root = tmp_path / "skels"
    names = ["S002C001P001R001A050", "S002C001P002R001A051", "S001C001P003R001A106",  # P1, P2 train; P3 test
             "S001C001P006R001A120", "S002C001P001R001A001"]                       # A001 is not mutual
    for n in names:
        write_ntu_skeleton(root / "sub" / f"{n}.skeleton", _frames(rng, n_frames=int(rng.integers(4, 9))))
    cfg = Config("ISTANet", "ntu-mutual26", config_dict={"ntu_skeleton_dir": str(root), "ntu_frames": 12,
                                                         "ntu_valid_ratio": 0.0, "show_progress": False})
    data = load_ntu_mutual26(cfg)
    assert data.num_classes == 26 and len(data.train) == 2 and len(data.test) == 2 and len(data.valid) == 0
    assert sorted(int(y) for y in data.train.y) == [0, 1] and sorted(int(y) for y in data.test.y) == [11, 25]
    x, _ = data.train[0]
    assert x.shape == (3, 12, 25, 2)
    assert torch.allclose(x[:, 0, 1, 0], torch.zeros(3), atol=1e-6)                 # centred on body 1's joint 2
    assert data.meta["num_entities"] == 2 and data.meta["num_frames"] == 12
    with pytest.raises(FileNotFoundError, match="ntu_skeleton_dir"):
        load_ntu_mutual26(Config("ISTANet", "ntu-mutual26", config_dict={"ntu_skeleton_dir": str(tmp_path / "none")}))


# ----------------------------------------------------------------------------- SBU


def test_sbu_round_trip_and_errors(tmp_path):
    x = np.random.default_rng(5).random((3, 7, 15, 2)).astype(np.float32)
    path = tmp_path / "skeleton_pos.txt"
    write_sbu_skeleton(path, x)
    first = path.read_text().splitlines()[0].split(",")
    assert len(first) == 91 and first[0] == "1"
    assert float(first[1]) == pytest.approx(x[0, 0, 0, 0]) and float(first[46]) == pytest.approx(x[0, 0, 0, 1])
    np.testing.assert_array_equal(read_sbu_skeleton(path), x)
    kin = read_sbu_skeleton(path, kinect_units=True)
    np.testing.assert_allclose(kin[0], 1280 - 2560 * x[0].astype(np.float64), rtol=1e-5)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:3] + [",".join(lines[3].split(",")[:-1])] + lines[4:]))
    with pytest.raises(ValueError, match=r"skeleton_pos.txt:4: expected 91"):
        read_sbu_skeleton(path)


# ----------------------------------------------------------------------------- synthetic + transforms


def test_synthetic_interactions_shapes_balance_and_swaps():
    x, y, swapped = make_interactions(48, num_frames=20, seed=1)
    assert x.shape == (48, 3, 20, 15, 2) and x.dtype == np.float32 and np.isfinite(x).all()
    assert np.bincount(y, minlength=8).tolist() == [6] * 8 and not swapped.any()
    x2, y2, _ = make_interactions(48, num_frames=20, seed=1)
    np.testing.assert_array_equal(x, x2)                                            # seeded
    xs, ys, sw = make_interactions(48, num_frames=20, seed=1, swap_prob=1.0)
    assert sw.all() and np.array_equal(ys, y)
    np.testing.assert_array_equal(xs, x[..., ::-1])                                 # same clips, entities swapped
    assert not np.allclose(x[..., 0], x[..., 1])


def test_synthetic_classes_carry_their_relations():
    """Without rotation/noise: approach shrinks the distance, retreat grows it, handshake brings the right
    hands together, follow keeps the facing of both equal."""
    def clip(name):
        x, _, _ = make_interactions(1, seed=3, classes=[INTERACTION_CLASSES.index(name)], yaw_max=0.0, tilt_max=0.0,
                                    translation=0.0, noise=0.0)
        return x[0]

    def torso_gap(x, t):
        return np.linalg.norm(x[[0, 2], t, 2, 0] - x[[0, 2], t, 2, 1])

    a, r = clip("approach"), clip("retreat")
    assert torso_gap(a, -1) < torso_gap(a, 0) - 0.6 and torso_gap(r, -1) > torso_gap(r, 0) + 0.6
    h = clip("handshake")
    hands = np.linalg.norm(h[:, :, 8, 0] - h[:, :, 8, 1], axis=0)
    assert hands[20] < 0.15 < hands[0]
    # mirror: B's left hand is A's right hand reflected through the plane x = 0 between them (y, z equal)
    m = clip("mirror")
    da, db = m[:, :, 8, 0] - m[:, :1, 8, 0], m[:, :, 5, 1] - m[:, :1, 5, 1]
    np.testing.assert_allclose(da[1:], db[1:], atol=1e-6)
    np.testing.assert_allclose(da[0], -db[0], atol=1e-6)
    assert m[:, :, 8, 0].std(1).max() > 0.03 > clip("idle")[:, :, 8, 0].std(1).max()   # idle hardly moves


def test_idle_gestures_variant_is_mirror_out_of_phase():
    kw = dict(yaw_max=0.0, tilt_max=0.0, translation=0.0, noise=0.0, idle_gestures=True)
    x, _, _ = make_interactions(1, seed=5, classes=[INTERACTION_CLASSES.index("idle")], **kw)
    da, db = x[0, 1, :, 8, 0] - x[0, 1, :, 8, 0].mean(), x[0, 1, :, 5, 1] - x[0, 1, :, 5, 1].mean()
    assert da.std() > 0.02 and db.std() > 0.02                                     # both gesture ...
    assert np.corrcoef(da, db)[0, 1] < 0.3                                         # ... but not in sync


def test_rearrange_and_swap_entities():
    x = torch.arange(2 * 1 * 1 * 1 * 3, dtype=torch.float32).reshape(2, 1, 1, 1, 3).repeat(50, 1, 2, 4, 1)
    out = rearrange_entities(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out.sort(-1).values, x.sort(-1).values)                      # a permutation per sample
    assert torch.equal(out[:, :, :1, :1].expand_as(out), out)                       # the same one for all C, T, J
    assert len({tuple(p.tolist()) for p in out[:, 0, 0, 0].argsort(-1)}) > 1        # samples differ
    assert torch.equal(swap_entities(swap_entities(x)), x)
    with pytest.raises(ValueError, match="N, C, T, J, E"):
        rearrange_entities(x[0])


def test_resample_frames_is_linear():
    x = np.arange(5, dtype=np.float32)[None, :, None, None] * np.ones((3, 5, 2, 2), dtype=np.float32)
    np.testing.assert_allclose(resample_frames(x, 9)[0, :, 0, 0], np.linspace(0, 4, 9))
    np.testing.assert_array_equal(resample_frames(x, 5), x)


def test_interaction_loader_through_config():
    cfg = Config("ISTANet", "skeleton-interaction", config_dict={
        "interaction_train_size": 16, "interaction_valid_size": 8, "interaction_test_size": 8, "interaction_frames": 20})
    data = load_skeleton_interaction(cfg)
    assert (len(data.train), len(data.valid), len(data.test)) == (16, 8, 8)
    x, y = data.train[0]
    assert x.shape == (3, 20, 15, 2) and y.dtype == torch.long
    assert data.meta["class_names"] == list(INTERACTION_CLASSES) and data.num_classes == 8
