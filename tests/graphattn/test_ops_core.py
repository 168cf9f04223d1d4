"""graphattn/ops.py, the parts test_ops.py leaves to properties: exact small answers, argument checks with their
messages, FixedAdjacency's two slicing branches, receptive fields, the 15-bit dropout and typed_linear."""
import pytest
import torch

from graphattn.ops import (FixedAdjacency, causal_mask, complete_mask, dense_to_flat, dropout, edge_index_to_mask,
                           edge_softmax, grid_coordinates, mask_to_edge_index, neighborhood_indices,
                           neighborhood_mask, receptive_fields, segment_max, segment_mean, segment_softmax,
                           segment_sum, typed_linear)


def test_segment_reductions_exact():
    src = torch.tensor([[1.0, -5.0], [3.0, -2.0], [-4.0, -7.0], [2.0, -1.0]])
    index = torch.tensor([0, 0, 2, 2])
    assert torch.equal(segment_sum(src, index, 4), torch.tensor([[4.0, -7.0], [0, 0], [-2.0, -8.0], [0, 0]]))
    assert torch.equal(segment_mean(src, index, 4), torch.tensor([[2.0, -3.5], [0, 0], [-1.0, -4.0], [0, 0]]))
    # maxima below zero stay (the start value is -inf, not 0); empty segments give 0
    assert torch.equal(segment_max(src, index, 4), torch.tensor([[3.0, -2.0], [0, 0], [2.0, -1.0], [0, 0]]))
    with pytest.raises(ValueError, match=r"^index must be 1-D with one entry per row of src \(4\), got shape \(3,\)$"):
        segment_sum(src, index[:3], 3)
    with pytest.raises(ValueError, match=r"one entry per row of src \(4\), got shape \(2, 2\)"):
        segment_max(src, index.view(2, 2), 3)
    with pytest.raises(ValueError, match="one entry per row"):
        segment_mean(src, torch.tensor([0, 0, 1]), 3)


def test_segment_mean_of_one_dimensional_rows():
    src = torch.tensor([2.0, 4.0, 9.0])
    assert torch.equal(segment_mean(src, torch.tensor([1, 1, 0]), 3), torch.tensor([9.0, 3.0, 0.0]))


def test_segment_softmax_exact_and_minus_infinity():
    src = torch.tensor([0.0, 0.0, float("-inf"), 1000.0, float("-inf"), float("-inf")])
    index = torch.tensor([0, 0, 0, 1, 2, 2])
    w = segment_softmax(src, index, 3)
    assert torch.equal(w, torch.tensor([0.5, 0.5, 0.0, 1.0, 0.0, 0.0]))
    w = segment_softmax(torch.tensor([1.0, 2.0]), torch.tensor([0, 0]), 1)
    assert torch.allclose(w, torch.softmax(torch.tensor([1.0, 2.0]), 0))


def test_edge_softmax_arguments():
    ei = torch.tensor([[0, 1, 2], [2, 2, 0]])
    scores = torch.tensor([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"^by must be 'dst' or 'src', got 'out'$"):
        edge_softmax(scores, ei, 3, by="out")
    with pytest.raises(ValueError, match=r"^edge_index must have shape \(2, E\), got \(3,\)$"):
        edge_softmax(scores, ei[0], 3)
    with pytest.raises(ValueError, match=r"^edge_index must have shape \(2, E\), got \(3, 3\)$"):
        edge_softmax(scores, torch.zeros(3, 3, dtype=torch.long), 3)
    by_dst = edge_softmax(scores, ei)                     # num_nodes inferred as max id + 1
    assert torch.allclose(by_dst, torch.cat([torch.softmax(scores[:2], 0), torch.ones(1)]))
    by_src = edge_softmax(scores, torch.tensor([[0, 0, 2], [0, 1, 2]]), by="src")
    assert torch.allclose(by_src, torch.cat([torch.softmax(scores[:2], 0), torch.ones(1)]))
    assert edge_softmax(torch.zeros(0), torch.zeros(2, 0, dtype=torch.long)).shape == (0,)


def test_mask_to_edge_index_batched_numbering_and_errors():
    mask = torch.tensor([[[True, False, True]], [[False, True, False]]])    # (B=2, Nq=1, Nk=3)
    ei = mask_to_edge_index(mask)
    assert torch.equal(ei, torch.tensor([[0, 2, 4], [0, 0, 1]]))
    assert torch.equal(mask_to_edge_index(mask[1]), torch.tensor([[1], [0]]))
    with pytest.raises(ValueError, match=r"^mask must be \(Nq, Nk\) or \(B, Nq, Nk\), got shape \(1, 1, 1, 3\)$"):
        mask_to_edge_index(mask[:1, None])
    with pytest.raises(ValueError, match=r"got shape \(3,\)"):
        mask_to_edge_index(mask[0, 0])


def test_edge_index_to_mask_rectangular():
    m = edge_index_to_mask(torch.tensor([[0, 3], [1, 0]]), 2, 4)
    assert m.shape == (2, 4) and m.dtype == torch.bool
    assert torch.equal(m, torch.tensor([[False, False, False, True], [True, False, False, False]]))


def test_dense_to_flat():
    x = torch.arange(12.0).reshape(2, 3, 2)
    flat, batch = dense_to_flat(x)
    assert torch.equal(flat, x.reshape(6, 2)) and torch.equal(batch, torch.tensor([0, 0, 0, 1, 1, 1]))
    tm = torch.tensor([[True, False, True], [False, False, True]])
    flat, batch = dense_to_flat(x, tm)
    assert torch.equal(flat, x[tm]) and torch.equal(batch, torch.tensor([0, 0, 1]))


def test_complete_and_causal_masks():
    assert torch.equal(complete_mask(2, 3), torch.ones(2, 3, dtype=torch.bool))
    assert complete_mask(3).shape == (3, 3)
    assert torch.equal(complete_mask(3, self_loops=False), ~torch.eye(3, dtype=torch.bool))
    assert torch.equal(causal_mask(3), torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=torch.bool))


def test_neighborhood_mask_argument_errors():
    with pytest.raises(ValueError, match=r"^grids of 1 to 3 axes are supported, got shape \(2, 2, 2, 2\)$"):
        neighborhood_mask((2, 2, 2, 2), 1)
    with pytest.raises(ValueError, match=r"^grids of 1 to 3 axes are supported, got shape \(\)$"):
        neighborhood_mask((), 1)
    with pytest.raises(ValueError, match=r"^kernel_size must be an int or have one entry per grid axis \(2\), got \(3,\)$"):
        neighborhood_mask((4, 4), (3,))
    with pytest.raises(ValueError, match=r"^stride must be an int or have one entry per grid axis \(2\), got \(1, 1, 1\)$"):
        neighborhood_mask((4, 4), 3, stride=(1, 1, 1))
    with pytest.raises(ValueError, match=r"^dilation must be an int"):
        neighborhood_mask((4, 4), 2, dilation=(1,))
    with pytest.raises(ValueError, match=r"^need kernel_size >= 1, 1 <= stride <= kernel_size, dilation >= 1; "
                                         r"got k=0, s=1, d=1$"):
        neighborhood_mask(4, 0)
    with pytest.raises(ValueError, match=r"got k=2, s=0, d=1$"):
        neighborhood_mask(4, 2, stride=0)
    with pytest.raises(ValueError, match=r"got k=2, s=3, d=1$"):
        neighborhood_mask(4, 2, stride=3)
    with pytest.raises(ValueError, match=r"got k=2, s=1, d=0$"):
        neighborhood_mask(4, 2, dilation=0)
    with pytest.raises(ValueError, match=r"^kernel_size \* dilation \(3\*2\) must not exceed the axis length 5$"):
        neighborhood_mask(5, 3, dilation=2)
    # the bounds themselves are accepted
    assert neighborhood_mask(6, 3, dilation=2).sum(1).tolist() == [3] * 6
    assert neighborhood_mask(4, 2, stride=2).shape == (4, 4)
    assert neighborhood_mask([4], [1]).equal(torch.eye(4, dtype=torch.bool))


def test_neighborhood_mask_exact_small_cases():
    # non-causal, k=3: centred, shifted inward at the borders
    m = neighborhood_mask(5, 3)
    assert m.int().tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 1, 1], [0, 0, 1, 1, 1]]
    # causal k=2: keys i-1, i
    m = neighborhood_mask(4, 2, causal=True)
    assert m.int().tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]]
    # causal k=2, stride 2: the leader is the last query of each stride group
    m = neighborhood_mask(4, 2, stride=2, causal=True)
    assert m.int().tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]]
    # blocked (stride = kernel): the leader is the centre of the group
    m = neighborhood_mask(6, 3, stride=3)
    assert m.int().tolist() == [[1, 1, 1, 0, 0, 0]] * 3 + [[0, 0, 0, 1, 1, 1]] * 3
    # even kernel with stride 2: leader g // 2 * 2 + 1
    m = neighborhood_mask(6, 2, stride=2)
    assert m.int().tolist() == [[1, 1, 0, 0, 0, 0]] * 2 + [[0, 0, 1, 1, 0, 0]] * 2 + [[0, 0, 0, 0, 1, 1]] * 2
    # dilation 2: two interleaved groups, odd length: the groups have lengths 3 and 2 (even k: one key left)
    m = neighborhood_mask(5, 2, dilation=2)
    assert m.int().tolist() == [[1, 0, 1, 0, 0], [0, 1, 0, 1, 0], [1, 0, 1, 0, 0], [0, 1, 0, 1, 0], [0, 0, 1, 0, 1]]
    # causal, dilation 2: within each residue group
    m = neighborhood_mask(5, 2, dilation=2, causal=True)
    assert m.int().tolist() == [[1, 0, 0, 0, 0], [0, 1, 0, 0, 0], [1, 0, 1, 0, 0], [0, 1, 0, 1, 0], [0, 0, 1, 0, 1]]
    # causal k=3 stride 3 on length 4: the last group is cut at the end (leader = group end - 1)
    m = neighborhood_mask(4, 3, stride=3, causal=True)
    assert m.int().tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 1]]
    # non-causal stride 3 on length 4 with k=3: the second group's leader is clipped to the last position
    m = neighborhood_mask(4, 3, stride=3)
    assert m.int().tolist() == [[1, 1, 1, 0]] * 3 + [[0, 1, 1, 1]]


def test_neighborhood_mask_2d_product_and_per_axis_causal():
    m = neighborhood_mask((2, 3), (1, 2), causal=(False, True))
    a = torch.eye(2, dtype=torch.bool)
    b = neighborhood_mask(3, 2, causal=True)
    assert torch.equal(m, (a[:, None, :, None] & b[None, :, None, :]).reshape(6, 6))
    m2 = neighborhood_mask((2, 3), (2, 2), causal=[True, False])
    a = neighborhood_mask(2, 2, causal=True)
    b = neighborhood_mask(3, 2)
    assert torch.equal(m2, (a[:, None, :, None] & b[None, :, None, :]).reshape(6, 6))
    m3 = neighborhood_mask((2, 2, 2), 1)
    assert torch.equal(m3, torch.eye(8, dtype=torch.bool))


def test_neighborhood_indices_padding_for_causal_windows():
    index, valid = neighborhood_indices(4, 3, causal=True)
    assert index.tolist() == [[0, 0, 0], [0, 1, 0], [0, 1, 2], [1, 2, 3]]
    assert valid.int().tolist() == [[1, 0, 0], [1, 1, 0], [1, 1, 1], [1, 1, 1]]
    index, valid = neighborhood_indices((2, 3), (1, 2))
    assert index.shape == (6, 2) and bool(valid.all())
    assert index.tolist() == [[0, 1], [0, 1], [1, 2], [3, 4], [3, 4], [4, 5]]
    # padding is 0 even where the sort would put a larger masked key
    index, valid = neighborhood_indices(3, 2, causal=True)
    assert index.tolist() == [[0, 0], [0, 1], [1, 2]]


def test_grid_coordinates():
    c = grid_coordinates((2, 3))
    assert c.dtype == torch.long
    assert c.tolist() == [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]
    assert grid_coordinates((0, 3)).dtype == torch.long      # an empty grid too (torch.tensor([]) is float)


# ------------------------------------------------------------------------------------------ FixedAdjacency

def _adjacency():
    # 4 receivers, 5 senders; duplicates are summed
    ei = torch.tensor([[0, 4, 1, 1, 3, 2], [0, 0, 2, 2, 3, 1]])
    w = torch.tensor([1.0, 2.0, 3.0, 0.5, 4.0, 5.0])
    dense = torch.zeros(4, 5)
    for (s, d), v in zip(ei.T.tolist(), w.tolist()):
        dense[d, s] += v
    return ei, w, dense


def test_fixed_adjacency_dense_product_and_gradient():
    ei, w, dense = _adjacency()
    adj = FixedAdjacency(ei, w.double(), 4, 5)
    assert adj.shape == (4, 5) and adj.matrix.dtype == torch.float32
    assert torch.equal(adj.to_dense(), dense)
    x = torch.randn(5, 2, dtype=torch.double, requires_grad=True)
    out = adj.propagate(x)
    assert out.dtype == torch.float32                       # the product runs in the matrix's dtype
    assert torch.allclose(out.double(), dense.double() @ x.detach(), atol=1e-5)
    g = torch.randn(4, 2)
    (grad,) = torch.autograd.grad((out * g).sum(), x)
    assert grad.dtype == torch.double                      # cast back to the input's dtype
    assert torch.allclose(grad, dense.double().T @ g.double(), atol=1e-5)
    assert FixedAdjacency(ei[:, :5] % 4, w[:5], 4).shape == (4, 4)       # square by default
    with pytest.raises(ValueError, match=r"^need one weight per edge \(6\), got 5$"):
        FixedAdjacency(ei, w[:5], 4, 5)


def test_fixed_adjacency_weights_are_constants():
    ei, w, _ = _adjacency()
    w = w.clone().requires_grad_()
    adj = FixedAdjacency(ei, w.view(6, 1), 4, 5)
    assert not adj.matrix.requires_grad


def _check_crow(m):
    crow = m.crow_indices()
    assert crow.numel() == m.shape[0] + 1 and crow[0] == 0 and crow[-1] == m.values().numel()
    assert bool((crow.diff() >= 0).all())


def test_in_neighbors_and_restrict_both_branches():
    torch.manual_seed(0)
    n, e = 30, 90
    ei = torch.randint(0, n, (2, e))
    adj = FixedAdjacency(ei, torch.rand(e), n)
    dense = adj.to_dense()
    rows = torch.tensor([3, 7, 11])
    nb = adj.in_neighbors(rows)
    expected = set(ei[0][torch.isin(ei[1], rows)].tolist()) | set(rows.tolist())
    assert nb.tolist() == sorted(expected)
    x = torch.randn(n, 2, requires_grad=True)
    for cols in (None, nb, torch.arange(n)):
        sub = adj.restrict(rows, cols)
        x_in = x if cols is None else x[cols]
        assert sub.shape == (3, n if cols is None else cols.numel())
        out = sub.propagate(x_in)
        assert torch.allclose(out, dense[rows] @ x.detach(), atol=1e-5)
        assert torch.allclose(sub.to_dense(), dense[rows][:, cols] if cols is not None else dense[rows])
        assert torch.allclose(sub.matrix_t.to_dense(), sub.to_dense().T)
        for m in (sub.matrix, sub.matrix_t):                 # one row pointer per row, plus one (duplicates allowed)
            _check_crow(m)
        g = torch.randn(3, 2)
        (grad,) = torch.autograd.grad((out * g).sum(), x)
        assert torch.allclose(grad, dense[rows].T @ g, atol=1e-5)
    # many rows: the cached transpose is sliced (the other branch)
    rows = torch.arange(n)
    sub = adj.restrict(rows, torch.arange(n))
    assert torch.allclose(sub.to_dense(), dense) and torch.allclose(sub.matrix_t.to_dense(), dense.T)
    sub = adj.restrict(torch.arange(0, n, 2), torch.arange(n))
    assert torch.allclose(sub.to_dense(), dense[::2]) and torch.allclose(sub.matrix_t.to_dense(), dense[::2].T)
    for m in (sub.matrix, sub.matrix_t):
        _check_crow(m)


def test_restrict_rows_in_the_given_order_and_empty_rows():
    ei, w, dense = _adjacency()
    adj = FixedAdjacency(ei, w, 4, 5)
    sub = adj.restrict(torch.tensor([2, 0]))
    assert torch.equal(sub.to_dense(), dense[[2, 0]])
    sub = adj.restrict(torch.tensor([3, 1]), torch.tensor([2, 3]))
    assert torch.equal(sub.to_dense(), dense[[3, 1]][:, [2, 3]])
    with pytest.raises(ValueError, match=r"^cols must contain every in-neighbour of rows$"):
        adj.restrict(torch.tensor([0]), torch.tensor([0, 1]))             # receiver 0 also hears sender 4
    sub = adj.restrict(torch.tensor([], dtype=torch.long), torch.tensor([0]))
    assert sub.shape == (0, 1) and sub.propagate(torch.ones(1, 2)).shape == (0, 2)


def test_restrict_slices_the_cached_transpose_of_a_graph_with_more_receivers_than_senders():
    """The branch that slices the cached transpose, where receivers and senders differ in number, a kept sender
    (the last of ``cols``) sends to no kept row and the last kept row (6) hears no one."""
    src = torch.tensor([0, 0, 1, 1, 0, 1, 2])
    dst = torch.tensor([0, 1, 1, 2, 3, 4, 5])
    adj = FixedAdjacency(torch.stack([src, dst]), torch.arange(1.0, 8.0), 7, 3)
    dense = adj.to_dense()
    rows, cols = torch.tensor([0, 1, 2, 3, 4, 6]), torch.tensor([0, 1, 2])
    sub = adj.restrict(rows, cols)
    assert sub.shape == (6, 3) and sub.matrix_t.shape == (3, 6)
    assert torch.equal(sub.to_dense(), dense[rows]) and torch.equal(sub.matrix_t.to_dense(), dense[rows].T)
    for m in (sub.matrix, sub.matrix_t):
        _check_crow(m)
    x = torch.randn(3, 2, requires_grad=True)
    out = sub.propagate(x)
    assert torch.allclose(out, dense[rows] @ x.detach())
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert torch.allclose(grad, dense[rows].T @ torch.ones(6, 2))


def test_receptive_fields_hops():
    # a chain 0 -> 1 -> 2 -> 3
    adj = FixedAdjacency(torch.tensor([[0, 1, 2], [1, 2, 3]]), torch.ones(3), 4)
    fields = receptive_fields(adj, torch.tensor([3, 3]), hops=2)
    assert [f.tolist() for f in fields] == [[1, 2, 3], [2, 3], [3]]
    assert [f.tolist() for f in receptive_fields(adj, torch.tensor([3]), hops=0)] == [[3]]
    assert [f.tolist() for f in receptive_fields(adj, torch.tensor([3]), 3, max_size=3)] == [[1, 2, 3], [2, 3], [3]]
    assert [f.tolist() for f in receptive_fields(adj, torch.tensor([3]), 3, max_size=2)] == [[2, 3], [3]]
    assert [f.tolist() for f in receptive_fields(adj, torch.tensor([2, 3]), 1, max_size=2)] == [[2, 3]]
    assert receptive_fields(adj, torch.tensor([2, 3]), 1, max_size=1) == []
    # no hop on a rectangular adjacency: the field is sized by the receivers
    wide = FixedAdjacency(torch.tensor([[0, 1], [3, 2]]), torch.ones(2), 4, 2)
    assert [f.tolist() for f in receptive_fields(wide, torch.tensor([3, 1]), hops=0)] == [[1, 3]]


# ------------------------------------------------------------------------------------------ dropout

def test_dropout_bits_rate_scale_and_bounds():
    x = torch.ones(40_000, dtype=torch.double)
    torch.manual_seed(0)
    y = dropout(x, 0.5)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert set(y.unique().tolist()) == {0.0, 2.0}
    assert abs((y == 0).double().mean().item() - 0.5) < 0.02
    torch.manual_seed(0)
    y = dropout(x.view(200, 200), 0.1)
    assert y.shape == (200, 200)
    assert abs((y == 0).double().mean().item() - 0.1) < 0.01
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / 0.9))
    # every element gets its own bits: no four-element pattern repeats across a whole draw
    torch.manual_seed(1)
    small = dropout(torch.ones(4001), 0.5)
    assert small.shape == (4001,)
    assert not torch.equal(small[0::4][:1000], small[1::4][:1000])
    assert dropout(x, 0.0) is x and dropout(x, 0.3, training=False) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))
    for p in (-0.1, 1.5):
        with pytest.raises(ValueError, match=rf"^dropout probability must be in \[0, 1\], got {p}$"):
            dropout(x, p)
    # p is rounded to a multiple of 2^-15 on the bit threshold: 1 - 2^-15 keeps about one element in 32768
    torch.manual_seed(0)
    assert 0 < int((dropout(torch.ones(1 << 18), 1 - 2 ** -15) != 0).sum()) < 30


def test_dropout_keeps_high_bits_only_below_the_threshold():
    torch.manual_seed(3)
    # a small p drops few; with the sign bit not cleared, half of all words would be negative and dropped
    y = dropout(torch.ones(100_000), 2 ** -10)
    assert (y == 0).float().mean().item() < 0.003


# ------------------------------------------------------------------------------------------ typed_linear

def test_typed_linear_against_a_loop_with_gradients():
    torch.manual_seed(0)
    weight = torch.randn(4, 3, 2, dtype=torch.double, requires_grad=True)    # type 2 unused
    x = torch.randn(6, 2, dtype=torch.double, requires_grad=True)
    types = torch.tensor([3, 0, 1, 0, 3, 3])
    out = typed_linear(x, types, weight)
    ref = torch.stack([weight[t] @ x[i] for i, t in enumerate(types.tolist())])
    assert torch.allclose(out, ref)
    g = torch.randn(6, 3, dtype=torch.double)
    ga = torch.autograd.grad((out * g).sum(), [x, weight])
    gb = torch.autograd.grad((ref * g).sum(), [x, weight])
    for a, b in zip(ga, gb):
        assert torch.allclose(a, b)
    with pytest.raises(ValueError, match=r"^one type per row needed: x has 6 rows, types 5$"):
        typed_linear(x, types[:5], weight)
    # the last type alone
    assert torch.allclose(typed_linear(x[:1], types[:1], weight), weight[3] @ x[0])


def test_flat_to_dense_unsorted_message_is_exact():
    from graphattn.ops import flat_to_dense
    with pytest.raises(ValueError, match=r"^batch must be sorted \(tokens of one graph contiguous\)$"):
        flat_to_dense(torch.zeros(2, 1), torch.tensor([1, 0]))


def test_neighborhood_indices_list_keys_in_increasing_order_on_long_axes():
    # rows of 200 keys: an unstable sort reorders equal sort keys at this size
    mask = neighborhood_mask(200, 17, causal=True)
    index, valid = neighborhood_indices(200, 17, causal=True)
    for i in (0, 5, 16, 100, 199):
        assert index[i][valid[i]].tolist() == mask[i].nonzero().flatten().tolist()


def test_csr_keeps_trailing_empty_columns():
    adj = FixedAdjacency(torch.tensor([[0, 1], [1, 0]]), torch.ones(2), 2, 5)     # senders 2..4 send nothing
    assert adj.to_dense().shape == (2, 5) and adj.matrix_t.to_dense().shape == (5, 2)
    assert adj.propagate(torch.ones(5, 3)).shape == (2, 3)


def test_dropout_draws_one_64_bit_word_per_four_elements():
    for n in (8, 9):
        torch.manual_seed(0)
        dropout(torch.ones(n), 0.5)
        after = torch.rand(1)
        torch.manual_seed(0)
        torch.empty((n + 3) // 4, dtype=torch.int64).random_()
        assert torch.equal(after, torch.rand(1)), n
