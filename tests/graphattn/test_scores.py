"""Scores (graphattn/attention/scores.py) against loops over edges written from the papers' formulas."""
import math

import pytest
import torch

from graphattn.attention.scores import AdditiveScore, DotProductScore, RelationalScore, Score

EDGES = torch.tensor([[0, 2, 1, 2], [1, 0, 0, 2]])


def _x(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.double)


def test_dot_product_score_defaults_and_formula():
    torch.manual_seed(0)
    s = DotProductScore(5, 4, heads=2, head_dim=3).double()
    assert s.scale == 3 ** -0.5 and (s.heads, s.head_dim) == (2, 3)
    assert s.q.weight.shape == (6, 5) and s.k.weight.shape == (6, 4)
    assert s.q.bias is not None and s.k.bias is not None
    assert (s.sdpa, s.has_dense) == (True, True)
    xd, xs = _x(3, 5), _x(3, 4, seed=1)
    q, k = s.project(xd, xs)
    assert torch.allclose(q.reshape(3, 6), xd @ s.q.weight.T + s.q.bias)
    assert torch.allclose(k.reshape(3, 6), xs @ s.k.weight.T + s.k.bias)
    out = s.edge(q, k, EDGES)
    ref = torch.stack([(q[d] * k[src]).sum(-1) / math.sqrt(3) for src, d in EDGES.T])
    assert torch.allclose(out, ref)
    dense = s.dense(q.transpose(0, 1)[None], k.transpose(0, 1)[None])            # (1, H, 3, 3)
    assert torch.allclose(dense[0].permute(1, 2, 0)[EDGES[1], EDGES[0]], ref)


def test_dot_product_score_custom_scale_and_no_bias():
    s = DotProductScore(4, 4, 1, 4, scale=2)
    assert s.scale == 2.0 and isinstance(s.scale, float)
    s = DotProductScore(4, 4, 1, 4, bias=False)
    assert s.q.bias is None and s.k.bias is None


def test_dot_product_reset_parameters_redraws():
    torch.manual_seed(0)
    s = DotProductScore(4, 4, 1, 4)
    q, k = s.q.weight.detach().clone(), s.k.weight.detach().clone()
    s.reset_parameters()
    assert not torch.equal(q, s.q.weight) and not torch.equal(k, s.k.weight)


def test_additive_score_defaults_and_formula():
    torch.manual_seed(0)
    s = AdditiveScore(5, 4, heads=2, head_dim=3).double()
    assert (s.heads, s.head_dim, s.sdpa, s.has_dense, s.scale) == (2, 3, False, True, None)
    assert s.q.weight.shape == (6, 5) and s.q.bias is not None
    assert s.k.weight.shape == (6, 4) and s.k.bias is None
    assert s.v.shape == (2, 3)
    assert AdditiveScore(5, 4, 2, 3, bias=False).q.bias is None
    xd, xs = _x(3, 5), _x(3, 4, seed=1)
    q, k = s.project(xd, xs)
    assert torch.allclose(q.reshape(3, 6), xd @ s.q.weight.T + s.q.bias)
    assert torch.allclose(k.reshape(3, 6), xs @ s.k.weight.T)
    ref = torch.stack([(torch.tanh(q[d] + k[src]) * s.v).sum(-1) for src, d in EDGES.T])
    assert torch.allclose(s.edge(q, k, EDGES), ref)
    dense = s.dense(q.transpose(0, 1)[None], k.transpose(0, 1)[None])
    assert dense.shape == (1, 2, 3, 3)
    assert torch.allclose(dense[0].permute(1, 2, 0)[EDGES[1], EDGES[0]], ref)


def test_additive_score_v_init_bounds():
    torch.manual_seed(0)
    s = AdditiveScore(4, 4, heads=8, head_dim=100)
    bound = 1 / math.sqrt(100)
    assert s.v.abs().max() <= bound and s.v.abs().max() > 0.9 * bound
    assert s.v.min() < -0.5 * bound                               # symmetric around 0
    before = s.v.detach().clone(), s.q.weight.detach().clone(), s.k.weight.detach().clone()
    s.reset_parameters()
    for old, new in zip(before, (s.v, s.q.weight, s.k.weight)):
        assert not torch.equal(old, new)


def test_score_base_has_no_dense_form():
    class Plain(Score):
        def project(self, x_dst, x_src):
            return x_dst, x_src

        def edge(self, q, k, edge_index, edge_type=None):
            return q

    with pytest.raises(ValueError, match=r"^Plain has no dense path; pass an edge_index instead$"):
        Plain().dense(torch.zeros(1), torch.zeros(1))
    assert (Score.sdpa, Score.has_dense, Score.scale) == (False, True, None)
    with pytest.raises(TypeError):
        Score()


def test_relational_score_defaults_and_checks():
    torch.manual_seed(0)
    s = RelationalScore(4, num_relations=3)
    assert (s.dim, s.num_relations, s.relation_dim, s.heads, s.has_dense) == (4, 3, 4, 1, False)
    assert s.W_r.shape == (3, 4, 4) and s.e_r.shape == (3, 4)
    assert (s.W_r != 0).all() and (s.e_r != 0).all()
    bound = math.sqrt(6 / (4 + 4 * 3)) * 1.0001
    assert s.W_r.abs().max() <= bound
    s2 = RelationalScore(4, 2, relation_dim=6, heads=3)
    assert s2.W_r.shape == (2, 6, 4) and (s2.relation_dim, s2.heads) == (6, 3)
    with pytest.raises(ValueError, match=r"^relation_dim \(5\) must be divisible by heads \(2\)$"):
        RelationalScore(4, 2, relation_dim=5, heads=2)
    x = _x(3, 4).float()
    q, k = s.project(x, x)
    assert q is x and k is x
    with pytest.raises(ValueError, match=r"^the relational score needs edge_type \(one relation id per edge\)$"):
        s.edge(q, k, EDGES)
    with pytest.raises(ValueError, match=r"^edge_type must lie in \[0, 3\), got range \[0, 3\]$"):
        s.edge(q, k, EDGES, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match=r"^edge_type must lie in \[0, 3\), got range \[-1, 2\]$"):
        s.edge(q, k, EDGES, torch.tensor([0, -1, 2, 2]))
    assert s.edge(q, k, EDGES, torch.tensor([0, 1, 2, 2])).shape == (4, 1)
    empty = s.edge(q, k, torch.zeros(2, 0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    assert empty.shape == (0, 1) and empty.dtype == x.dtype


def test_relational_score_heads_split_the_relation_space():
    torch.manual_seed(0)
    s = RelationalScore(4, 2, relation_dim=6, heads=3).double()
    x = _x(3, 4)
    rel = torch.tensor([1, 0, 1, 0])
    out = s.edge(x, x, EDGES, rel)
    assert out.shape == (4, 3)
    for e, (src, dst) in enumerate(EDGES.T):
        r = rel[e]
        tail = s.W_r[r] @ x[src]
        head = torch.tanh(s.W_r[r] @ x[dst] + s.e_r[r])
        assert torch.allclose(out[e], (tail * head).view(3, 2).sum(-1))
        assert torch.allclose(out[e].sum(), tail @ head)


def test_relational_score_chunks_cover_every_edge():
    torch.manual_seed(0)
    s = RelationalScore(4, 2).double()
    x = _x(3, 4)
    rel = torch.tensor([1, 0, 1, 0])
    full = s.edge(x, x, EDGES, rel)
    for size in (1, 3, 4):
        s.chunk_size = size
        assert torch.allclose(s.edge(x, x, EDGES, rel), full)
    assert RelationalScore.chunk_size == 1 << 17
