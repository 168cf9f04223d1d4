"""Updates (graphattn/attention/updates.py) against their formulas written out by hand, with the defaults the
layer builds them with (LeakyReLU slope 0.2, projections with a bias)."""
import pytest
import torch

from graphattn.attention import GraphAttention
from graphattn.attention.updates import (Aggregate, BiInteractionUpdate, GCNUpdate, Projection, Residual,
                                         SAGEUpdate, Update)


def _leaky(x, slope=0.2):
    return torch.where(x >= 0, x, slope * x)


def _inputs(n=5, d=4):
    g = torch.Generator().manual_seed(0)
    # large values so that both signs reach the LeakyReLU and a wrong slope shows
    return torch.randn(n, d, generator=g, dtype=torch.double) * 3, torch.randn(n, d, generator=g, dtype=torch.double) * 3


def test_aggregate_returns_the_aggregate():
    x, agg = _inputs()
    assert Aggregate()(x, agg) is agg


def test_projection_and_residual():
    torch.manual_seed(0)
    x, agg = _inputs()
    proj = Projection(4, 3).double()
    assert proj.proj.bias is not None and proj.proj.weight.shape == (3, 4)
    assert torch.allclose(proj(x, agg), agg @ proj.proj.weight.T + proj.proj.bias)
    res = Residual(4, 4).double()
    assert res.proj.bias is not None
    assert torch.allclose(res(x, agg), x + agg @ res.proj.weight.T + res.proj.bias)
    assert Projection(4, 3, bias=False).proj.bias is None
    assert Residual(4, 4, bias=False).proj.bias is None


def test_gcn_update_formula_and_default_slope():
    torch.manual_seed(0)
    x, agg = _inputs()
    up = GCNUpdate(4, 3).double()
    assert up.negative_slope == 0.2
    lin = up.linear
    assert lin.bias is not None and lin.weight.shape == (3, 4)
    expected = _leaky((x + agg) @ lin.weight.T + lin.bias)
    assert (expected < 0).any() and (expected > 0).any()
    assert torch.allclose(up(x, agg), expected)
    assert torch.allclose(GCNUpdate(4, 3, negative_slope=0.5).double()(x, agg).min() < 0, torch.tensor(True))


def test_graphsage_update_formula():
    torch.manual_seed(0)
    x, agg = _inputs()
    up = SAGEUpdate(4, 3).double()
    assert up.negative_slope == 0.2
    assert up.linear.weight.shape == (3, 8) and up.linear.bias is not None
    expected = _leaky(torch.cat([x, agg], dim=1) @ up.linear.weight.T + up.linear.bias)
    assert (expected < 0).any()
    assert torch.allclose(up(x, agg), expected)


def test_bi_interaction_update_formula():
    torch.manual_seed(0)
    x, agg = _inputs()
    up = BiInteractionUpdate(4, 3).double()
    assert up.negative_slope == 0.2
    s, p = up.sum_linear, up.prod_linear
    assert s.weight.shape == p.weight.shape == (3, 4) and s.bias is not None and p.bias is not None
    left = _leaky((x + agg) @ s.weight.T + s.bias)
    right = _leaky((x * agg) @ p.weight.T + p.bias)
    assert (left < 0).any() and (right < 0).any()
    assert torch.allclose(up(x, agg), left + right)


@pytest.mark.parametrize("cls", [GCNUpdate, SAGEUpdate, BiInteractionUpdate])
def test_kgat_updates_take_their_slope(cls):
    torch.manual_seed(0)
    x, agg = _inputs()
    a = cls(4, 3, negative_slope=0.7).double()
    assert a.negative_slope == 0.7
    torch.manual_seed(0)
    b = cls(4, 3).double()
    assert not torch.allclose(a(x, agg), b(x, agg))


def test_update_is_abstract():
    with pytest.raises(TypeError):
        Update()


@pytest.mark.parametrize("name,cls", [("project", Projection), ("residual", Residual), ("none", Aggregate),
                                      ("gcn", GCNUpdate), ("graphsage", SAGEUpdate), ("bi", BiInteractionUpdate)])
def test_layer_builds_each_update_by_name(name, cls):
    layer = GraphAttention(6, 6, heads=2, update=name, negative_slope=0.3)
    assert type(layer.update) is cls
    if hasattr(layer.update, "negative_slope"):
        assert layer.update.negative_slope == 0.3
    x = torch.randn(1, 4, 6)
    assert layer(x).shape == (1, 4, 6)


def test_layer_update_sizes_and_bias():
    layer = GraphAttention(6, 8, heads=2, head_dim=5, update="project")
    assert layer.update.proj.weight.shape == (8, 10) and layer.update.proj.bias is not None
    assert GraphAttention(6, 8, heads=2, update="project", bias=False).update.proj.bias is None
    assert GraphAttention(6, 6, heads=2, update="residual", bias=False).update.proj.bias is None
    assert GraphAttention(6, 6, heads=2, update="residual").update.proj.bias is not None
    sage = GraphAttention(6, 4, heads=1, message="identity", update="graphsage")
    assert sage.update.linear.weight.shape == (4, 12)
    gcn = GraphAttention(6, 4, heads=1, message="identity", update="gcn")
    assert gcn.update.linear.weight.shape == (4, 6) and gcn.update.negative_slope == 0.2
    bi = GraphAttention(6, 4, heads=1, message="identity", update="bi")
    assert bi.update.sum_linear.weight.shape == (4, 6) and bi.update.negative_slope == 0.2
    with pytest.raises(ValueError, match="unknown update 'sage'"):
        GraphAttention(6, update="sage")
