"""Shapes and sizes that graphattn.ops infers when the caller leaves them out (found by mutation testing)."""

import pytest
import torch

from graphattn.ops import edge_index_to_mask, flat_to_dense, segment_mean


def test_flat_to_dense_infers_batch_size_and_token_count_from_the_batch_ids():
    x = torch.arange(5.0).unsqueeze(1)
    out, mask = flat_to_dense(x, torch.tensor([0, 0, 1, 2, 2]))
    assert out.shape == (3, 2, 1) and mask.dtype == torch.bool
    assert mask.tolist() == [[True, True], [True, False], [True, True]]
    assert out[..., 0].tolist() == [[0.0, 1.0], [2.0, 0.0], [3.0, 4.0]]


def test_flat_to_dense_keeps_trailing_empty_graphs_and_empty_input():
    out, mask = flat_to_dense(torch.ones(2, 3), torch.tensor([0, 0]), batch_size=3)
    assert out.shape == (3, 2, 3) and mask.sum(1).tolist() == [2, 0, 0]
    out, mask = flat_to_dense(torch.ones(2, 3), torch.tensor([0, 0]), max_tokens=4)
    assert out.shape == (1, 4, 3) and mask.tolist() == [[True, True, False, False]]
    out, mask = flat_to_dense(torch.ones(0, 3), torch.zeros(0, dtype=torch.long))
    assert out.shape == (0, 0, 3) and mask.shape == (0, 0)


@pytest.mark.parametrize("batch", [[1, 0, 0], [0, 1, 0]])
def test_flat_to_dense_rejects_unsorted_batch_ids(batch):
    with pytest.raises(ValueError, match="batch must be sorted"):
        flat_to_dense(torch.ones(3, 1), torch.tensor(batch))


def test_edge_index_to_mask_is_square_boolean_by_default():
    mask = edge_index_to_mask(torch.tensor([[0, 2], [1, 0]]), 3)
    assert mask.dtype == torch.bool and mask.shape == (3, 3)
    assert mask.nonzero().tolist() == [[0, 2], [1, 0]]


def test_segment_mean_gives_zeros_for_trailing_empty_segments():
    out = segment_mean(torch.tensor([[2.0], [4.0]]), torch.tensor([0, 0]), num_segments=3)
    assert out[:, 0].tolist() == [3.0, 0.0, 0.0]
