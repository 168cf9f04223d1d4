"""Normalisers (graphattn/attention/normalizers.py) against loops over edges / softmax written by hand."""
import pytest
import torch

from graphattn.attention import GraphAttention
from graphattn.attention.normalizers import (DstSoftmax, NoNorm, Normalizer, SigmoidGate, SrcSoftmax,
                                             masked_softmax)

# 4 nodes; node 3 receives nothing, node 0 sends nothing
EDGES = torch.tensor([[1, 2, 1, 3, 2], [0, 0, 2, 2, 1]])


def _scores():
    return torch.randn(EDGES.shape[1], 2, dtype=torch.double, generator=torch.Generator().manual_seed(0)) * 4


def _loop_softmax(scores, group):
    out = torch.zeros_like(scores)
    for g in group.unique():
        rows = group == g
        out[rows] = torch.softmax(scores[rows], dim=0)
    return out


def test_dst_softmax_edge_normalises_over_incoming_edges():
    s = _scores()
    w = DstSoftmax().edge(s, EDGES, num_dst=4, num_src=4)
    assert torch.allclose(w, _loop_softmax(s, EDGES[1]))


def test_src_softmax_edge_normalises_over_outgoing_edges():
    s = _scores()
    w = SrcSoftmax().edge(s, EDGES, num_dst=3, num_src=4)       # num_src nodes own the segments
    assert torch.allclose(w, _loop_softmax(s, EDGES[0]))
    # a sender id beyond num_dst must still be normalised on its own
    w = SrcSoftmax().edge(s, torch.tensor([[3, 3, 0, 0, 0], [0, 1, 0, 1, 2]]), num_dst=3, num_src=4)
    assert torch.allclose(w[:2].sum(0), torch.ones(2, dtype=torch.double))


def test_sigmoid_and_none_edges():
    s = _scores()
    assert torch.allclose(SigmoidGate().edge(s, EDGES, 4, 4), torch.sigmoid(s))
    assert torch.equal(NoNorm().edge(s, EDGES, 4, 4), s)


def test_sdpa_flags():
    assert DstSoftmax.sdpa is True
    assert (Normalizer.sdpa, SrcSoftmax.sdpa, SigmoidGate.sdpa, NoNorm.sdpa) == (False, False, False, False)


def _dense():
    g = torch.Generator().manual_seed(1)
    s = torch.randn(2, 2, 3, 4, dtype=torch.double, generator=g) * 4
    mask = torch.rand(2, 1, 3, 4, generator=g) > 0.4
    mask[0, 0, 1] = False                       # a query with no key
    mask[1, 0, :, 2] = False                    # a key nobody attends to
    return s, mask


def test_masked_softmax_matches_a_reference_and_gives_zero_rows():
    s, mask = _dense()
    ref = torch.softmax(s.masked_fill(~mask, float("-inf")), dim=-1).nan_to_num(0.0)
    out = masked_softmax(s, mask, dim=-1)
    assert torch.allclose(out, ref)
    assert torch.equal(out[0, :, 1], torch.zeros(2, 4, dtype=torch.double))
    ref_cols = torch.softmax(s.masked_fill(~mask, float("-inf")), dim=-2).nan_to_num(0.0)
    assert torch.allclose(masked_softmax(s, mask, dim=-2), ref_cols)
    assert torch.allclose(masked_softmax(s, None, dim=-1), torch.softmax(s, -1))


def test_masked_softmax_is_stable_for_large_scores():
    s = torch.tensor([[1000.0, 999.0, -1000.0]])
    out = masked_softmax(s, None, dim=-1)
    assert torch.isfinite(out).all()
    assert torch.allclose(out, torch.softmax(s, -1))
    out = masked_softmax(torch.tensor([[-1000.0, -1001.0]]), None, dim=-1)
    assert torch.allclose(out, torch.softmax(torch.tensor([[0.0, -1.0]]), -1))


def test_masked_softmax_all_masked_has_zero_weight_and_finite_gradient():
    s = torch.randn(1, 3, requires_grad=True)
    out = masked_softmax(s, torch.zeros(1, 3, dtype=torch.bool), dim=-1)
    assert torch.equal(out, torch.zeros(1, 3))
    out.sum().backward()
    assert torch.isfinite(s.grad).all()


def test_masked_softmax_shifts_by_the_largest_allowed_score():
    # the only allowed score is far below the masked one: shifting by it (not by 0) keeps exp from underflowing
    s = torch.tensor([[0.0, -200.0]], dtype=torch.float32)
    mask = torch.tensor([[False, True]])
    out = masked_softmax(s, mask, dim=-1)
    assert torch.allclose(out, torch.tensor([[0.0, 1.0]]))


def test_dense_normalisers():
    s, mask = _dense()
    assert torch.allclose(DstSoftmax().dense(s, mask), masked_softmax(s, mask, -1))
    assert torch.allclose(SrcSoftmax().dense(s, mask), masked_softmax(s, mask, -2))
    assert torch.allclose(SrcSoftmax().dense(s, None).sum(-2), torch.ones(2, 2, 4, dtype=torch.double))
    sig = SigmoidGate().dense(s, mask)
    assert torch.allclose(sig, torch.sigmoid(s) * mask)
    assert torch.allclose(SigmoidGate().dense(s, None), torch.sigmoid(s))
    assert torch.equal(NoNorm().dense(s, mask), s * mask)
    assert NoNorm().dense(s, None) is s


def test_normalizer_is_abstract():
    with pytest.raises(TypeError):
        Normalizer()


@pytest.mark.parametrize("name,cls", [("dst_softmax", DstSoftmax), ("softmax", DstSoftmax),
                                      ("src_softmax", SrcSoftmax), ("sigmoid", SigmoidGate), ("none", NoNorm)])
def test_layer_builds_normalisers_by_name(name, cls):
    assert type(GraphAttention(4, normalizer=name).normalizer) is cls


def test_unknown_normaliser_lists_the_options():
    with pytest.raises(ValueError, match=r"unknown normalizer 'soft'; expected one of \['dst_softmax', 'none', "
                                         r"'sigmoid', 'softmax', 'src_softmax'\]"):
        GraphAttention(4, normalizer="soft")


def test_masked_softmax_shifts_each_row_by_its_own_maximum():
    # a global shift would underflow the second row (exp(-1000) == 0) and give it zero weights
    s = torch.tensor([[1000.0, 999.0], [0.0, -1.0]])
    out = masked_softmax(s, None, dim=-1)
    assert torch.allclose(out, torch.softmax(s, -1))
    out = masked_softmax(s, None, dim=0)
    assert torch.allclose(out, torch.softmax(s, 0))
