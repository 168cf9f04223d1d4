import pytest
import torch

from graphattn.attention import GraphAttention, RelationalScore
from graphattn.graphs import collaborative_kg


def test_relational_score_hand_computed_three_nodes():
    # nodes 0, 1, 2 with 2-d features; edges 1 -> 0 (relation 0) and 2 -> 0 (relation 1)
    score = RelationalScore(dim=2, num_relations=2, relation_dim=2)
    with torch.no_grad():
        score.W_r[0] = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        score.W_r[1] = torch.tensor([[0.0, 2.0], [1.0, 0.0]])
        score.e_r[0] = torch.tensor([0.5, -0.5])
        score.e_r[1] = torch.tensor([0.0, 1.0])
    x = torch.tensor([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]])
    edge_index = torch.tensor([[1, 2], [0, 0]])
    edge_type = torch.tensor([0, 1])
    out = score.edge(x, x, edge_index, edge_type).squeeze(-1)
    # edge 1->0, r=0: W e_t = (3, -1); tanh(W e_h + e_r) = tanh(1.5, 1.5)
    pi0 = 3 * torch.tanh(torch.tensor(1.5)) - 1 * torch.tanh(torch.tensor(1.5))
    # edge 2->0, r=1: W e_t = (1, 0.5); W e_h + e_r = (4, 1) + (0, 1) = (4, 2)
    pi1 = 1 * torch.tanh(torch.tensor(4.0)) + 0.5 * torch.tanh(torch.tensor(2.0))
    assert torch.allclose(out, torch.stack([pi0, pi1]), atol=1e-6)

    layer = GraphAttention(2, score=score, message="identity", update="none")
    weights = layer.attention(x, edge_index, edge_type=edge_type).squeeze(-1)
    # softmax over ALL incoming edges of node 0 across both relations, not per relation
    assert torch.allclose(weights, torch.softmax(torch.stack([pi0, pi1]), 0), atol=1e-6)
    agg = layer(x, edge_index, edge_type=edge_type)
    assert torch.allclose(agg[0], weights[0] * x[1] + weights[1] * x[2], atol=1e-6)
    assert torch.equal(agg[1:], torch.zeros(2, 2))


def test_ckg_layout_and_cross_relation_softmax():
    # 2 users, 3 entities (items 0, 1), 1 KG relation
    inter = [[0, 0], [0, 1], [1, 1]]
    kg = [[0, 0, 2], [1, 0, 2]]
    g = collaborative_kg(2, 3, inter, kg, n_relations=1)
    assert g.num_nodes == 5 and g.num_relations == 4
    edges = set(zip(g.edge_index[0].tolist(), g.edge_index[1].tolist(), g.edge_type.tolist()))
    assert (0, 3, 0) in edges and (3, 0, 2) in edges          # item 0 -> user 0 (interact) and inverse
    assert (2, 0, 1) in edges and (0, 2, 3) in edges          # (h=0, r=0, t=2): t -> h with r+1; inverse r+R+2
    torch.manual_seed(0)
    layer = GraphAttention(4, score="relational", num_relations=g.num_relations, message="identity", update="none")
    x = torch.randn(5, 4)
    w = layer.attention(x, g.edge_index, edge_type=g.edge_type).squeeze(-1)
    # node 0 (item) receives from user 0 (relation 2) and entity 2 (relation 1): one softmax over both
    into0 = g.edge_index[1] == 0
    assert into0.sum() == 2 and len(set(g.edge_type[into0].tolist())) == 2
    assert torch.allclose(w[into0].sum(), torch.tensor(1.0))


def test_fixed_adjacency_equals_layer_propagation_with_gradients():
    from graphattn.ops import FixedAdjacency
    torch.manual_seed(0)
    edge_index = torch.randint(0, 30, (2, 200))
    layer = GraphAttention(6, score="dot", message="identity", update="none")
    x = torch.randn(30, 6, requires_grad=True)
    w = layer.attention(x, edge_index).detach()
    y = torch.randn(30, 6, requires_grad=True)
    ref = layer.propagate(w, y, edge_index, 30)
    fixed = FixedAdjacency(edge_index, w[:, 0], 30).propagate(y)
    assert torch.allclose(ref, fixed, atol=1e-5)
    g = torch.randn(30, 6)
    (gr,) = torch.autograd.grad((ref * g).sum(), y)
    (gf,) = torch.autograd.grad((fixed * g).sum(), y)
    assert torch.allclose(gr, gf, atol=1e-5)


def test_relational_score_chunking_is_exact():
    torch.manual_seed(0)
    score = RelationalScore(dim=4, num_relations=3, relation_dim=4, heads=2)
    x = torch.randn(20, 4)
    edge_index = torch.randint(0, 20, (2, 300))
    edge_type = torch.randint(0, 3, (300,))
    whole = score.edge(x, x, edge_index, edge_type)
    score.chunk_size = 7
    assert torch.allclose(score.edge(x, x, edge_index, edge_type), whole, atol=1e-6)


def test_restricted_adjacency_equals_rows_of_the_full_product_with_gradients():
    from graphattn.ops import FixedAdjacency, receptive_fields
    torch.manual_seed(1)
    n = 40
    edge_index = torch.randint(0, n, (2, 300))
    adj = FixedAdjacency(edge_index, torch.rand(300), n)
    fields = receptive_fields(adj, torch.tensor([5, 5, 31]), hops=2)
    assert torch.equal(fields[-1], torch.tensor([5, 31]))
    for rows, cols in zip(fields[1:], fields[:-1]):
        # every in-neighbour of the rows is among the columns, and the rows themselves too
        src, dst = edge_index
        assert set(src[torch.isin(dst, rows)].tolist()) | set(rows.tolist()) == set(cols.tolist())
        x = torch.randn(n, 3, requires_grad=True)
        for sub, x_in in ((adj.restrict(rows, cols), x[cols]), (adj.restrict(rows), x)):
            out = sub.propagate(x_in)
            ref = adj.propagate(x)[rows]
            assert torch.allclose(out, ref, atol=1e-6)
            g = torch.randn_like(ref)
            (g_sub,) = torch.autograd.grad((out * g).sum(), x)
            (g_ref,) = torch.autograd.grad((ref * g).sum(), x)
            assert torch.allclose(g_sub, g_ref, atol=1e-6)
    with pytest.raises(ValueError, match="in-neighbour"):
        adj.restrict(fields[-1], fields[-1])
    # max_size leaves out the fields above it, from the largest
    sizes = [f.numel() for f in fields]
    assert [f.numel() for f in receptive_fields(adj, torch.tensor([5, 31]), 2, max_size=sizes[1])] == sizes[1:]
    assert receptive_fields(adj, torch.tensor([5, 31]), 2, max_size=1) == []


def test_dropout_keeps_expectation_and_rate():
    from graphattn.ops import dropout
    torch.manual_seed(0)
    x = torch.ones(200_000)
    y = dropout(x, 0.25)
    assert abs((y == 0).float().mean().item() - 0.25) < 0.01
    assert abs(y.mean().item() - 1.0) < 0.01
    assert torch.equal(dropout(x, 0.25, training=False), x)
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))
    with pytest.raises(ValueError):
        dropout(x, 1.5)
