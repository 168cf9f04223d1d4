import pytest
import torch

from sequence.masks import PolygonMask, step_mask


def test_polygon_mask_hand_example():
    valid = torch.tensor([[True, True, True, True, True, False]])   # stop + 4 points + padding
    mask = PolygonMask(valid)
    expect = [
        (2, [0, 1, 1, 1, 1, 0]),   # no stop before a polygon
        (4, [0, 1, 0, 1, 1, 0]),
        (1, [0, 1, 0, 1, 0, 0]),   # two points so far: the first may not close yet
        (2, [0, 0, 1, 1, 0, 0]),   # three points: the first (2) may close, 3 is still new
        (0, [1, 0, 0, 0, 0, 0]),   # closed: only the stop
    ]
    for choice, allowed in expect:
        assert mask.allowed()[0].int().tolist() == allowed
        mask.update(torch.tensor([choice]))


def test_polygon_mask_lets_too_small_inputs_stop():
    mask = PolygonMask(torch.tensor([[True, True, True, False]]))
    mask.update(torch.tensor([1]))
    mask.update(torch.tensor([2]))
    assert mask.allowed()[0].tolist() == [True, False, False, False]


def test_unknown_mask_names_the_key():
    with pytest.raises(ValueError, match="decode_mask: expected one of none, polygon, got 'hul'"):
        step_mask("hul", torch.ones(1, 3, dtype=torch.bool))
