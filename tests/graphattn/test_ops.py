import math

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch_geometric.utils import softmax as pyg_softmax

from graphattn.ops import (causal_mask, dense_to_flat, edge_index_to_mask, edge_softmax, flat_to_dense,
                           mask_to_edge_index, neighborhood_indices, neighborhood_mask, segment_max,
                           segment_mean, segment_softmax, segment_sum)


@st.composite
def random_graph(draw):
    n = draw(st.integers(1, 12))
    e = draw(st.integers(0, 40))
    src = draw(st.lists(st.integers(0, n - 1), min_size=e, max_size=e))
    dst = draw(st.lists(st.integers(0, n - 1), min_size=e, max_size=e))
    heads = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**16))
    scores = torch.randn(e, heads, generator=torch.Generator().manual_seed(seed)) * draw(st.sampled_from([1.0, 30.0]))
    return n, torch.tensor([src, dst], dtype=torch.long).reshape(2, e), scores


@settings(max_examples=60, deadline=None)
@given(random_graph(), st.sampled_from(["dst", "src"]))
def test_edge_softmax_sums_to_one_per_group(graph, by):
    n, edge_index, scores = graph
    w = edge_softmax(scores, edge_index, n, by=by)
    group = edge_index[1] if by == "dst" else edge_index[0]
    sums = segment_sum(w, group, n)
    has_edges = torch.bincount(group, minlength=n) > 0
    assert torch.allclose(sums[has_edges], torch.ones_like(sums[has_edges]), atol=1e-5)
    assert torch.all(sums[~has_edges] == 0)
    assert torch.all(w >= 0) and torch.isfinite(w).all()


@settings(max_examples=40, deadline=None)
@given(random_graph(), st.integers(0, 2**16))
def test_edge_softmax_invariant_to_edge_permutation(graph, seed):
    n, edge_index, scores = graph
    perm = torch.randperm(edge_index.shape[1], generator=torch.Generator().manual_seed(seed))
    w = edge_softmax(scores, edge_index, n)
    w_perm = edge_softmax(scores[perm], edge_index[:, perm], n)
    assert torch.allclose(w[perm], w_perm, atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(random_graph())
def test_edge_softmax_matches_pyg(graph):
    n, edge_index, scores = graph
    ours = edge_softmax(scores, edge_index, n)
    ref = pyg_softmax(scores, edge_index[1], num_nodes=n)
    assert torch.allclose(ours, ref, atol=1e-5)


@pytest.mark.parametrize("magnitude", [1e4, -1e4])
def test_edge_softmax_stable_at_extreme_scores(magnitude):
    edge_index = torch.tensor([[0, 1, 2, 0], [3, 3, 3, 4]])
    scores = torch.tensor([magnitude, magnitude - 1.0, magnitude - 2.0, magnitude], requires_grad=True)
    w = edge_softmax(scores, edge_index, 5)
    expected = torch.softmax(torch.tensor([0.0, -1.0, -2.0]), 0)
    assert torch.allclose(w[:3], expected, atol=1e-6)
    assert w[3] == 1.0
    w[0].backward()
    assert torch.isfinite(scores.grad).all()


def test_zero_edge_nodes_give_zeros_not_nan():
    edge_index = torch.tensor([[0, 1], [2, 2]])
    w = edge_softmax(torch.tensor([[1.0], [2.0]]), edge_index, 5)
    agg = segment_sum(w * torch.tensor([[1.0], [1.0]]), edge_index[1], 5)
    assert torch.isfinite(agg).all()
    assert agg[[0, 1, 3, 4]].abs().sum() == 0
    # all-(-inf) group: weights zero, not NaN
    w = segment_softmax(torch.tensor([float("-inf"), float("-inf")]), torch.tensor([0, 0]), 1)
    assert torch.equal(w, torch.zeros(2))


def test_segment_reductions():
    src = torch.tensor([[1.0, -1.0], [3.0, 5.0], [2.0, 0.0]])
    index = torch.tensor([0, 0, 2])
    assert torch.equal(segment_sum(src, index, 3), torch.tensor([[4.0, 4.0], [0, 0], [2, 0]]))
    assert torch.equal(segment_mean(src, index, 3), torch.tensor([[2.0, 2.0], [0, 0], [2, 0]]))
    assert torch.equal(segment_max(src, index, 3), torch.tensor([[3.0, 5.0], [0, 0], [2, 0]]))
    with pytest.raises(ValueError, match="one entry per row"):
        segment_sum(src, torch.tensor([0, 1]), 3)


def test_mask_edge_index_round_trip():
    mask = torch.rand(5, 7, generator=torch.Generator().manual_seed(0)) > 0.5
    edge_index = mask_to_edge_index(mask)
    assert torch.equal(edge_index_to_mask(edge_index, 5, 7), mask)
    batched = torch.stack([mask, ~mask])
    ei = mask_to_edge_index(batched)
    assert ei.shape[1] == 5 * 7
    assert torch.equal(edge_index_to_mask(ei, 10, 14)[5:, 7:], ~mask)


def test_dense_flat_round_trip():
    x = torch.randn(3, 4, 2)
    tm = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    flat, batch = dense_to_flat(x, tm)
    assert flat.shape == (7, 2)
    back, mask = flat_to_dense(flat, batch, 3, 4)
    assert torch.equal(mask, tm)
    assert torch.equal(back[tm], x[tm])
    assert torch.all(back[~tm] == 0)


def brute_axis(L, k, s, d, causal):
    """Independent reading of the GNA rules, query by query, in plain Python."""
    mask = [[False] * L for _ in range(L)]
    for i in range(L):
        r, gi = i % d, i // d
        lg = len(range(r, L, d))
        if causal:
            leader = min((gi // s) * s + s - 1, lg - 1)
            keys = [gj for gj in range(lg) if gj <= gi and leader - gj < k]
        else:
            leader = min((gi // s) * s + s // 2, lg - 1)
            left, right = k // 2, k // 2 + k % 2 - 1
            centre = min(max(leader, left), lg - 1 - right)
            keys = list(range(centre - left, centre + right + 1))
        for gj in keys:
            mask[i][gj * d + r] = True
    return torch.tensor(mask)


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 14), st.data())
def test_neighborhood_mask_1d_matches_rules(L, data):
    d = data.draw(st.integers(1, max(1, L)))
    k = data.draw(st.integers(1, max(1, L // d)))
    s = data.draw(st.integers(1, k))
    causal = data.draw(st.booleans())
    mask = neighborhood_mask(L, k, s, d, causal)
    assert torch.equal(mask, brute_axis(L, k, s, d, causal))
    if not causal:
        assert torch.all(mask.sum(1) == k)        # the window shifts inward at borders: always k keys


def test_neighborhood_mask_special_cases():
    # k = L: full attention; causal with k = L: the causal mask
    assert neighborhood_mask(7, 7).all()
    assert torch.equal(neighborhood_mask(7, 7, causal=True), causal_mask(7))
    # s = k: non-overlapping blocks (Swin-style windows)
    blocks = neighborhood_mask(8, 4, 4)
    expected = torch.block_diag(torch.ones(4, 4), torch.ones(4, 4)).bool()
    assert torch.equal(blocks, expected)
    # 2-D is the product of axes, prod(k) keys per query
    m2 = neighborhood_mask((5, 6), (3, 2), (1, 2), (1, 2))
    assert torch.all(m2.sum(1) == 6)
    a, b = neighborhood_mask(5, 3), neighborhood_mask(6, 2, 2, 2)
    assert torch.equal(m2, torch.einsum("ij,kl->ikjl", a.int(), b.int()).reshape(30, 30).bool())
    m3 = neighborhood_mask((3, 4, 4), 2)
    assert torch.all(m3.sum(1) == 8)
    with pytest.raises(ValueError, match="must not exceed"):
        neighborhood_mask(5, 3, dilation=2)
    with pytest.raises(ValueError, match="stride"):
        neighborhood_mask(5, 3, stride=4)


def test_even_kernel_is_r_left_r_minus_1_right():
    mask = neighborhood_mask(9, 4)
    assert mask[4].nonzero().flatten().tolist() == [2, 3, 4, 5]


def test_neighborhood_indices_gather_the_mask():
    for causal in (False, True):
        idx, valid = neighborhood_indices((4, 5), 3, 1, 1, causal)
        mask = neighborhood_mask((4, 5), 3, 1, 1, causal)
        rebuilt = torch.zeros_like(mask)
        rows = torch.arange(20)[:, None].expand_as(idx)
        rebuilt[rows[valid], idx[valid]] = True
        assert torch.equal(rebuilt, mask)
