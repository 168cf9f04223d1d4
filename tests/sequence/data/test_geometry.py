import numpy as np

from sequence.data.geometry import is_simple_polygon, polygon_area, signed_area

SQUARE = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=float)


def test_area_of_a_square_and_orientation():
    assert polygon_area(SQUARE) == 1.0
    assert signed_area(SQUARE) == 1.0 and signed_area(SQUARE[::-1]) == -1.0


def test_simple_and_not_simple():
    assert is_simple_polygon(SQUARE) and is_simple_polygon(SQUARE[::-1])
    assert not is_simple_polygon(SQUARE[[0, 2, 1, 3]])                       # bow tie: edges cross
    assert not is_simple_polygon(SQUARE[:2])                                 # two vertices
    assert not is_simple_polygon(np.array([[0, 0], [1, 0], [2, 0]], float))  # zero area
    assert not is_simple_polygon(np.array([[0, 0], [2, 0], [1, 0], [1, 1]], float))  # folds back along an edge
    assert not is_simple_polygon(np.array([[0, 0], [2, 0], [1, 0.5], [1, 0], [0.5, 1]], float))  # touches an edge
    assert is_simple_polygon(np.array([[0, 0], [1, 0], [2, 0], [1, 1]], float))  # straight angle is fine
