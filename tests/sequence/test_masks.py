import pytest
import torch

from sequence.masks import PolygonMask, TourMask, step_mask


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
    with pytest.raises(ValueError, match="decode_mask: expected one of none, polygon, tour, got 'hul'"):
        step_mask("hul", torch.ones(1, 3, dtype=torch.bool))


def test_tour_mask_hand_example():
    valid = torch.tensor([[True, True, True, True, False]])   # stop + 3 cities + padding
    mask = TourMask(valid)
    expect = [
        (2, [0, 1, 1, 1, 0]),   # any city first, never the stop
        (3, [0, 1, 0, 1, 0]),
        (1, [0, 1, 0, 0, 0]),   # the last unvisited city; the first (2) may not close yet
        (2, [0, 0, 1, 0, 0]),   # every city visited: only the first, which closes the tour
        (0, [1, 0, 0, 0, 0]),   # closed: only the stop
        (0, [1, 0, 0, 0, 0]),   # and it stays so
    ]
    for choice, allowed in expect:
        assert mask.allowed()[0].int().tolist() == allowed
        mask.update(torch.tensor([choice]))


def test_tour_mask_rows_of_different_lengths_and_select():
    valid = torch.tensor([[True, True, True, True], [True, True, False, False]])
    mask = TourMask(valid)
    mask.update(torch.tensor([1, 1]))
    assert mask.allowed().int().tolist() == [[0, 0, 1, 1], [0, 1, 0, 0]]   # one city: close at once
    mask.select(torch.tensor([1, 1, 0]))                                    # beams reordered and duplicated
    assert mask.allowed().int().tolist() == [[0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1]]
    mask.update(torch.tensor([1, 1, 3]))
    assert mask.allowed().int().tolist() == [[1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0]]


@pytest.mark.parametrize("name", ["tour", "polygon"])
def test_random_walks_under_a_mask_are_closed_walks(name):
    # choose uniformly among the allowed positions: every row ends closed, with no repeat, then stops
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(3, 8, (64,), generator=g)
    valid = torch.arange(8)[None, :] <= lengths[:, None]
    mask, rows = step_mask(name, valid), []
    for _ in range(9):
        allowed = mask.allowed()
        assert allowed.any(-1).all()
        choice = torch.multinomial(allowed.float(), 1, generator=g)[:, 0]
        rows.append(choice)
        mask.update(choice)
    for row, n in zip(torch.stack(rows, 1).tolist(), lengths.tolist()):
        body = row[:row.index(0)]
        assert body[-1] == body[0] and len(set(body[:-1])) == len(body) - 1 and len(body) - 1 >= 3
        if name == "tour":
            assert sorted(body[:-1]) == list(range(1, n + 1))


def test_teacher_forced_mask_follows_the_target_and_rejects_a_breaking_one():
    from sequence.masks import teacher_forced_mask

    valid = torch.tensor([[True, True, True, True]])
    got = teacher_forced_mask("tour", valid, torch.tensor([[2, 1, 3, 2, 0, -1]]))
    assert got[0, :5].int().tolist() == [[0, 1, 1, 1], [0, 1, 0, 1], [0, 0, 0, 1], [0, 0, 1, 0], [1, 0, 0, 0]]
    with pytest.raises(ValueError, match=r"target \[2, 2, 1, 3, 2, 0\] breaks the 'tour' rule at step 1"):
        teacher_forced_mask("tour", valid, torch.tensor([[2, 2, 1, 3, 2, 0]]))
