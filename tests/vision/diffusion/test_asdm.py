import pytest
import torch

from graphattn.interpret import capture_attention
from vision.diffusion.asdm import GRIAttention, pool_tokens


def _union_edges(gri):
    """The union graph as an edge list over senders [tokens, summaries] -> token receivers."""
    mask = gri.union_mask()
    dst, src = mask.nonzero(as_tuple=True)
    return torch.stack([src, dst])


@pytest.mark.parametrize("grid,region,pool", [((8, 8), 4, 4), ((4, 8), 2, 4), ((6, 6), 3, 2)])
def test_gri_union_equals_masked_dense_and_sparse_attention(grid, region, pool):
    torch.manual_seed(0)
    gri = GRIAttention(16, heads=2, grid=grid, region=region, pool=pool).eval()
    x = torch.randn(3, grid[0] * grid[1], 16)
    fast = gri(x)
    g = pool_tokens(x, grid, pool)
    src = torch.cat([x, g], 1)
    dense = gri.attn(x, x_src=src, mask=gri.union_mask())                  # masked dense attention, union graph
    assert torch.allclose(fast, dense, atol=1e-5)
    edges = _union_edges(gri)                                                # and the sparse edge-list path
    for b in range(3):
        sparse = gri.attn(x[b], edges, x_src=src[b])
        assert torch.allclose(fast[b], sparse, atol=1e-5)
    out, weights = gri(x, return_attention=True)
    assert torch.allclose(out, fast, atol=1e-5)
    assert (weights.weights[..., ~gri.union_mask()] == 0).all()


def test_gri_union_graph_sizes_and_pooling():
    gri = GRIAttention(8, heads=1, grid=(8, 8), region=4, pool=4)
    mask = gri.union_mask()
    assert mask.shape == (64, 68) and (mask.sum(1) == 16 + 4).all()
    x = torch.arange(64.0).view(1, 64, 1)
    assert pool_tokens(x, (8, 8), 4).view(-1).tolist() == [13.5, 17.5, 45.5, 49.5]


def test_gri_sum_mode_equals_two_masked_dense_branches():
    torch.manual_seed(1)
    gri = GRIAttention(16, heads=2, grid=(8, 8), region=4, pool=2, mode="sum").eval()
    x = torch.randn(2, 64, 16)
    g = pool_tokens(x, (8, 8), 2)
    local = gri.union_mask()[:, :64]
    att = gri.attn
    att.update = type("Agg", (torch.nn.Module,), {"forward": lambda self, x, a: a})()
    expected = att(x, mask=local) + att(x, x_src=g)
    assert torch.allclose(gri(x), expected, atol=1e-5)


def test_gri_hooks_see_the_union_weights_and_bad_input_errors():
    gri = GRIAttention(8, heads=2, grid=(4, 4), region=2, pool=2)
    with capture_attention(gri) as store:
        gri(torch.randn(1, 16, 8))
    assert store["attn"][0].shape == (1, 2, 16, 16 + 4)
    with pytest.raises(ValueError, match="must divide"):
        GRIAttention(8, 2, (4, 4), region=3)
    with pytest.raises(ValueError, match="unknown mode"):
        GRIAttention(8, 2, (4, 4), mode="concat")
    with pytest.raises(ValueError, match="expected x"):
        gri(torch.randn(1, 15, 8))
    summed = GRIAttention(8, 2, (4, 4), region=2, pool=2, mode="sum")
    with capture_attention(summed), pytest.raises(ValueError, match="two softmaxes"):
        summed(torch.randn(1, 16, 8))
