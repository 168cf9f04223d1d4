import numpy as np
import pytest
from scipy.spatial import Delaunay

from graphattn.config import Config
from sequence.data import STOP, write_pointer_file
from sequence.data.delaunay import (DelaunayProblem, delaunay_target, generate_delaunay, incenter, load_delaunay,
                                    output_triangles)
from sequence.data.geometry import signed_area

TINY = {"train_size": 32, "valid_size": 8, "test_size": 8, "n_min": 4, "n_max": 6, "test_n": 6}


def test_targets_are_the_delaunay_triangles_ccw_from_the_smallest_index_sorted_by_incenter():
    points, targets = generate_delaunay(50, 3, 12, np.random.default_rng(0))
    for p, t in zip(points, targets):
        assert t[-1] == STOP and STOP not in t[:-1] and len(t) % 3 == 1
        triangles = [t[i:i + 3] for i in range(0, len(t) - 1, 3)]
        assert {frozenset(tr) for tr in triangles} == {frozenset(int(v) + 1 for v in s) for s in Delaunay(p).simplices}
        for tr in triangles:
            assert tr[0] == min(tr) and signed_area(p[np.array(tr) - 1]) > 0
        centers = [tuple(incenter(p[np.array(tr) - 1])) for tr in triangles]
        assert centers == sorted(centers)


def test_target_and_incenter_by_hand():
    assert np.allclose(incenter(np.array([[0, 0], [1, 0], [0, 1]], float)), [1 - 2 ** -0.5] * 2)
    square = np.array([[0, 0], [1, 0], [1, 1], [0, 1], [0.5, 0.4]], float)
    assert delaunay_target(square) == [1, 5, 4, 1, 2, 5, 3, 4, 5, 2, 3, 5, STOP]


def test_output_triangles_and_metrics_by_hand():
    assert output_triangles([1, 2, 3, 3, 4, 1, STOP], 4) == ({frozenset({1, 2, 3}), frozenset({1, 3, 4})}, True)
    assert output_triangles([1, 2, 3, 3, 4, STOP], 4) == ({frozenset({1, 2, 3})}, False)      # a pair left over
    assert output_triangles([1, 2, 2, 3, 4, 1, STOP], 4) == ({frozenset({1, 3, 4})}, False)   # a degenerate group
    assert output_triangles([1, 2, 3], 4) == ({frozenset({1, 2, 3})}, False)                   # never stopped
    points = [np.zeros((4, 2))] * 2
    target = [1, 2, 3, 1, 3, 4, STOP]
    got = DelaunayProblem().evaluate(points, [[3, 1, 2, STOP], [2, 3, 4, 4, 1, 3, 1, 2, 3, STOP]], [target] * 2)
    assert got == {"triangle_coverage": 0.75, "invalid_rate": 0.0}


def test_loader_is_seeded_and_reads_paper_files(tmp_path):
    cfg = Config("PointerNet", "delaunay", config_dict=TINY)
    a, b = load_delaunay(cfg), load_delaunay(cfg)
    assert (a.train.points == b.train.points).all() and set(a.test.lengths.tolist()) == {6}
    points, targets = generate_delaunay(4, 7, 7, np.random.default_rng(1))
    path = write_pointer_file(tmp_path / "d.txt", points, [t[:-1] for t in targets])
    data = load_delaunay(Config("PointerNet", "delaunay", config_dict={**TINY, "delaunay_test_file": str(path)}))
    assert data.test.target_list() == targets
    assert DelaunayProblem().max_steps(7) >= max(len(t) for t in targets)


def test_bad_settings_name_the_key():
    with pytest.raises(ValueError, match=r"'n_min' \(from command line\): expected an int >= 3"):
        load_delaunay(Config("PointerNet", "delaunay", config_dict={**TINY, "n_min": 2}))
    with pytest.raises(ValueError, match=r"n_min \(7\) must not exceed n_max \(6\)"):
        load_delaunay(Config("PointerNet", "delaunay", config_dict={**TINY, "n_min": 7}))
