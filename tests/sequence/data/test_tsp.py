import itertools

import numpy as np
import pytest

from graphattn.config import Config
from sequence.data import STOP, write_pointer_file
from sequence.data.tsp import (TSPProblem, canonical_tour, closed_tour, generate_tsp, held_karp, load_tsp,
                               solve_tsp, tour_length)

TINY = {"train_size": 32, "valid_size": 8, "test_size": 8, "tsp_n": 5, "hidden_size": 8,
        "train_batch_size": 16, "eval_batch_size": 8, "show_progress": False}


def brute_force(points):
    n = len(points)
    return min(((0, *rest) for rest in itertools.permutations(range(1, n))), key=lambda t: tour_length(points, t))


@pytest.mark.parametrize("n", [3, 4, 5, 6, 7])
def test_held_karp_equals_brute_force(n):
    points = np.random.default_rng(n).random((20, n, 2))
    lengths, tours = held_karp(points)
    for p, length, tour in zip(points, lengths, tours):
        best = brute_force(p)
        assert length == pytest.approx(tour_length(p, best), abs=1e-12)
        assert tour_length(p, tour) == pytest.approx(length, abs=1e-12)     # the tour it returns has that length
        assert canonical_tour(tour) == canonical_tour(best)                   # and is the same tour


def test_held_karp_in_chunks_equals_one_batch():
    points = np.random.default_rng(0).random((11, 6, 2))
    a, b = held_karp(points), held_karp(points, chunk=4)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    with pytest.raises(ValueError, match="2 <= n <= 16"):
        held_karp(np.zeros((1, 17, 2)))


def test_tour_length_and_canonical_tour_by_hand():
    square = np.array([[0, 0], [1, 1], [1, 0], [0, 1]], float)
    assert tour_length(square, [0, 2, 1, 3]) == pytest.approx(4.0)
    assert tour_length(square, [0, 2, 1, 3, 0]) == pytest.approx(4.0)        # closed form too
    assert canonical_tour([2, 1, 3, 0]) == [1, 3, 2, 4, 1]                   # from city 1, the smaller neighbour first
    assert canonical_tour([0, 3, 1, 2]) == [1, 3, 2, 4, 1]
    with pytest.raises(ValueError, match="every city"):
        canonical_tour([0, 1, 1])


def test_fast_tsp_labels_larger_instances():
    pytest.importorskip("fast_tsp")
    points = np.random.default_rng(1).random((2, 9, 2))
    lengths, _ = held_karp(points)
    for p, best in zip(points, lengths):      # up to 20 cities fast-tsp is exact (up to its integer rounding)
        assert tour_length(p, solve_tsp(p, 0.1)) == pytest.approx(best, abs=1e-3)
    pts, tours = generate_tsp(2, 13, np.random.default_rng(2), 0.1)
    assert all(t[0] == 1 and t[-1] == 1 and sorted(t[:-1]) == list(range(1, 14)) for t in tours)


def test_closed_tour_and_metrics_by_hand():
    square = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], float)
    target = [1, 2, 3, 4, 1, STOP]
    assert closed_tour(target, 4) == [0, 1, 2, 3]
    for bad in ([1, 2, 3, 4, 1], [1, 2, 3, 4, STOP], [1, 2, 2, 4, 1, STOP], [1, 2, 3, 1, STOP], [2, 1, 3, 4, 2, STOP]):
        assert (closed_tour(bad, 4) is None) == (bad != [2, 1, 3, 4, 2, STOP])
    crossed = [1, 3, 2, 4, 1, STOP]                                          # 2 + 2 sqrt 2
    got = TSPProblem().evaluate([square] * 3, [target, crossed, [1, 2, 3, STOP]], [target] * 3)
    assert got["infeasible"] == pytest.approx(1 / 3)
    assert got["tour_length"] == pytest.approx((4 + 2 + 2 * 2 ** 0.5) / 2)
    assert got["target_length"] == pytest.approx(4.0)
    assert got["gap"] == pytest.approx((4 + 2 + 2 * 2 ** 0.5) / 8 - 1)
    assert TSPProblem().evaluate([square], [[STOP]], [target])["tour_length"] == float("inf")


def test_loader_caches_in_the_papers_format_and_reads_it_back(tmp_path):
    cfg = Config("PointerNet", "tsp", config_dict={**TINY, "tsp_cache_dir": str(tmp_path)})
    first = load_tsp(cfg)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["tsp5_test_8_seed0_heldkarp.txt", "tsp5_train_32_seed0_heldkarp.txt",
                     "tsp5_valid_8_seed0_heldkarp.txt"]
    line = (tmp_path / files[0]).read_text().splitlines()[0].split()
    assert len(line) == 10 + 1 + 6 and line[10] == "output" and line[11] == line[-1] == "1"
    again = load_tsp(cfg)                                                    # read from the cache now
    assert (again.train.points == first.train.points).all() and (again.test.targets == first.test.targets).all()
    text = (tmp_path / files[0]).read_text()
    (tmp_path / files[0]).write_text("0.5" + text[text.index(" "):])
    assert load_tsp(cfg).test.points[0, 0, 0] == 0.5                        # the file is what is read
    uncached = load_tsp(Config("PointerNet", "tsp", config_dict={**TINY, "tsp_cache": False}))
    assert (uncached.train.points == first.train.points).all()              # the cache holds exact floats
    targets = first.test.target_list()
    lengths, _ = held_karp(np.stack(first.test.point_list()))
    for p, t, best in zip(first.test.point_list(), targets, lengths):
        assert tour_length(p, [c - 1 for c in t[:-2]]) == pytest.approx(best, abs=1e-5)   # float32 in memory


def test_loader_reads_given_files_and_test_n(tmp_path):
    points, tours = generate_tsp(3, 6, np.random.default_rng(0))
    path = write_pointer_file(tmp_path / "tsp6.txt", points, tours)
    data = load_tsp(Config("PointerNet", "tsp", config_dict={**TINY, "tsp_test_file": str(path), "tsp_cache": False}))
    assert data.test.target_list() == [[*t, STOP] for t in tours] and set(data.train.lengths.tolist()) == {5}
    data = load_tsp(Config("PointerNet", "tsp", config_dict={**TINY, "tsp_test_n": 7, "tsp_cache": False}))
    assert set(data.test.lengths.tolist()) == {7}


def test_bad_settings_name_the_key():
    with pytest.raises(ValueError, match=r"'tsp_n' \(from command line\): expected an int >= 3"):
        load_tsp(Config("PointerNet", "tsp", config_dict={**TINY, "tsp_n": 2}))
    with pytest.raises(ValueError, match=r"'tsp_test_n' \(from command line\): expected an int >= 3 or null"):
        load_tsp(Config("PointerNet", "tsp", config_dict={**TINY, "tsp_test_n": 1}))
    with pytest.raises(ValueError, match="'tsp_solver_seconds'.*expected seconds > 0"):
        load_tsp(Config("PointerNet", "tsp", config_dict={**TINY, "tsp_solver_seconds": 0.0}))
    with pytest.raises(TypeError, match="'tsp_test_file'.*expected a path"):
        load_tsp(Config("PointerNet", "tsp", config_dict={**TINY, "tsp_test_file": 3}))
