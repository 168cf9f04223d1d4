import numpy as np
import pytest
from scipy.spatial import ConvexHull

from graphattn.config import Config
from sequence.data import STOP, write_pointer_file
from sequence.data.convex_hull import (ConvexHullProblem, area_coverage, generate_convex_hull, hull_target,
                                       load_convex_hull)
from sequence.data.geometry import signed_area

from ..conftest import TINY


def test_hull_targets_are_ccw_from_the_smallest_index_closed_and_match_scipy():
    rng = np.random.default_rng(1)
    points, targets = generate_convex_hull(200, 3, 12, rng)
    for p, t in zip(points, targets):
        assert t[-1] == STOP and STOP not in t[:-1]
        body = t[:-1]
        assert body[0] == body[-1]                                   # closed
        vertices = body[:-1]
        assert vertices[0] == min(vertices)                          # starts at the smallest index
        assert len(set(vertices)) == len(vertices) and all(1 <= v <= len(p) for v in vertices)
        assert signed_area(p[np.array(vertices) - 1]) > 0            # counter-clockwise
        assert set(vertices) == {int(v) + 1 for v in ConvexHull(p).vertices}


def test_hull_target_by_hand():
    # a square with an inner point, listed so that the hull must be rotated to start at index 1
    points = np.array([[1, 1], [0, 0], [0.5, 0.5], [1, 0], [0, 1]], dtype=float)
    assert hull_target(points) == [1, 5, 2, 4, 1, STOP]


def test_area_coverage_true_wrong_and_invalid():
    points = np.array([[0, 0], [1, 0], [1, 1], [0, 1], [0.5, 0.2]], dtype=float)
    target = [1, 2, 3, 4, 1, STOP]
    assert area_coverage(points, target, target) == 1.0
    assert area_coverage(points, [1, 5, 2, 3, 4, 1, STOP], target) == pytest.approx(1 - 0.5 * 0.2)   # dented
    assert area_coverage(points, [1, 2, 3, 1, STOP], target) == pytest.approx(0.5)                  # a vertex missed
    assert area_coverage(points, [1, 3, 2, 4, 1, STOP], target) is None     # self-intersecting (bow tie)
    assert area_coverage(points, [1, 2, 3, 4, STOP], target) is None        # not closed
    assert area_coverage(points, [1, 2, 3, 4, 1], target) is None           # never stopped
    assert area_coverage(points, [1, 2, 1, STOP], target) is None           # two vertices
    assert area_coverage(points, [1, 2, 3, 2, 4, 1, STOP], target) is None  # a repeated vertex


def test_problem_metrics_by_hand():
    points = [np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=float)] * 2
    targets = [[1, 2, 3, 4, 1, STOP]] * 2
    got = ConvexHullProblem().evaluate(points, [[1, 2, 3, 1, STOP], [1, 3, 2, 4, 1, STOP]], targets)
    assert got == {"area_coverage": 0.25, "area_valid": 0.5, "fail_rate": 0.5}


def test_loader_is_seeded_and_sized():
    cfg = Config("PointerNet", "convex-hull", config_dict=TINY)
    a, b = load_convex_hull(cfg), load_convex_hull(cfg)
    assert (len(a.train), len(a.valid), len(a.test)) == (64, 16, 16)
    assert (a.train.points == b.train.points).all() and (a.test.targets == b.test.targets).all()
    assert set(a.test.lengths.tolist()) == {6} and set(a.train.lengths.tolist()) <= {4, 5, 6}
    assert not (a.train.points[:16] == a.valid.points).all()                 # splits use different streams
    other = load_convex_hull(Config("PointerNet", "convex-hull", config_dict={**TINY, "data_seed": 1}))
    assert not (other.train.points == a.train.points).all()


def test_loader_reads_paper_files(tmp_path):
    rng = np.random.default_rng(3)
    points, targets = generate_convex_hull(5, 5, 5, rng)
    path = write_pointer_file(tmp_path / "test.txt", points, [t[:-1] for t in targets])
    data = load_convex_hull(Config("PointerNet", "convex-hull", config_dict={**TINY, "hull_test_file": str(path)}))
    assert data.test.target_list() == targets
    assert np.allclose(np.stack(data.test.point_list()), np.stack(points), atol=1e-7)   # float32 in memory


def test_bad_settings_name_the_key():
    with pytest.raises(ValueError, match=r"n_min \(7\) must not exceed n_max \(6\).*'n_min' \(from command line\)"):
        load_convex_hull(Config("PointerNet", "convex-hull", config_dict={**TINY, "n_min": 7}))
    with pytest.raises(ValueError, match=r"'n_min' \(from command line\): expected an int >= 3"):
        load_convex_hull(Config("PointerNet", "convex-hull", config_dict={**TINY, "n_min": 2}))
    with pytest.raises(ValueError, match="unknown config key 'n_mn' in command line; did you mean 'n_min'"):
        Config("PointerNet", "convex-hull", config_dict={"n_mn": 5})
    with pytest.raises(TypeError, match="'hull_test_file'.*expected a path"):
        load_convex_hull(Config("PointerNet", "convex-hull", config_dict={**TINY, "hull_test_file": 3}))


def test_malformed_file_names_file_and_line(tmp_path):
    path = tmp_path / "hull.txt"
    path.write_text("0 0 1 0 1 1 output 1 2 3 1\n0 0 1 0 1 1 output 1 2 4 1\n")
    with pytest.raises(ValueError, match=f"{path}:2: output indices are 1-based into 3 points, got \\[4\\]"):
        load_convex_hull(Config("PointerNet", "convex-hull", config_dict={**TINY, "hull_valid_file": str(path)}))
