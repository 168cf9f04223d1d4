import torch

from graphattn.ops import edge_index_to_mask
from recsys.sequential.graphs import context_target_graph, context_target_mask


def test_mask_hand_case():
    valid = torch.tensor([[False, True, True, True]])
    end = torch.tensor([[-1, 1, 3, 5]])
    query_pos = torch.tensor([[2, 4, 6, 7]])
    mask = context_target_mask(valid, end, query_pos, n_context=torch.tensor([3]))
    # context = slots 1, 2; a query sees the context frames that end before it
    assert mask[0].tolist() == [[False, True, False, False],
                                [False, True, True, False],
                                [False, True, True, False],
                                [False, True, True, False]]
    full = context_target_mask(valid, end, torch.tensor([[6]]))
    assert full[0, 0].tolist() == [False, True, True, True]        # all frames context: complete bipartite


def test_graph_edges_are_the_mask():
    torch.manual_seed(0)
    mask = torch.rand(3, 4, 5) > 0.5
    g = context_target_graph(torch.rand(3, 5), mask, torch.rand(3, 4))
    ei = g["frame", "informs", "query"].edge_index
    dense = edge_index_to_mask(ei, 3 * 4, 3 * 5)
    expect = torch.block_diag(*[m.float() for m in mask]).bool()
    assert torch.equal(dense, expect)
    lat = g["frame", "summarises", "latent"].edge_index
    assert torch.equal(lat[1], lat[0] // 5)                         # frames of user b summarise latent b
    assert lat.shape[1] == int(mask.any(1).sum())
