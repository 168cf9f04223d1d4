"""Masks combined with each other, on every path, against a reference written from the formula; the default
scale with several heads is ``head_dim ** -0.5``."""
import pytest
import torch

from graphattn.attention import GraphAttention
from graphattn.ops import mask_to_edge_index

B, N, D, H = 2, 6, 32, 4


def _reference(layer, x, allowed):
    """softmax(q k^T * head_dim^-0.5) over the allowed keys (rows with none aggregate zeros), then the
    layer's value and output projections; written from the formula, not from the layer's code paths."""
    hd = D // H
    q = layer.score.q(x).unflatten(-1, (H, hd)).transpose(1, 2)                 # (B, H, N, hd)
    k = layer.score.k(x).unflatten(-1, (H, hd)).transpose(1, 2)
    v = layer.message.project(x).transpose(1, 2)                                # (B, H, N, hd)
    s = q @ k.transpose(-1, -2) * hd ** -0.5
    s = s.masked_fill(~allowed[:, None], float("-inf"))
    w = torch.softmax(s, -1).nan_to_num(0.0)
    agg = (w @ v).transpose(1, 2).flatten(-2)                                   # (B, N, H * hd)
    return layer.update(x, agg)


@pytest.fixture
def case():
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    layer = GraphAttention(D, heads=H).eval()
    x = torch.randn(B, N, D, generator=g)
    mask = torch.rand(B, N, N, generator=g) > 0.4                              # explicit, per example
    mask[0, 2] = False                                                          # a query with no key at all
    padding = torch.ones(B, N, dtype=torch.bool)
    padding[1, -2:] = False                                                     # the last two keys of example 1 are padding
    return layer, x, mask, padding


@pytest.mark.parametrize("mask_kind", ["none", "2d", "3d", "4d"])
@pytest.mark.parametrize("with_padding", [False, True])
def test_every_mask_combination_on_every_path_equals_the_reference(case, mask_kind, with_padding):
    layer, x, mask3, padding = case
    mask = {"none": None, "2d": mask3[0], "3d": mask3, "4d": mask3[:, None].expand(B, H, N, N)}[mask_kind]
    allowed = torch.ones(B, N, N, dtype=torch.bool)
    if mask is not None:
        allowed = allowed & (mask3[0].expand(B, N, N) if mask_kind == "2d" else mask3)
    if with_padding:
        allowed = allowed & padding[:, None, :]
    kpm = padding if with_padding else None
    expected = _reference(layer, x, allowed)

    with torch.no_grad():
        sdpa = layer(x, mask=mask, key_padding_mask=kpm)                                    # SDPA path
        manual, weights = layer(x, mask=mask, key_padding_mask=kpm, return_attention=True)  # explicit path
        edges = mask_to_edge_index(allowed)                                                 # the same graph as edges
        sparse = layer(x.reshape(B * N, D), edges).reshape(B, N, D)
    for got in (sdpa, manual, sparse):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # weights: zero wherever a key is masked, rows sum to one where any key is allowed, zero otherwise
    w = weights.weights
    assert bool((w[~allowed[:, None].expand_as(w)] == 0).all())
    row_sums = w.sum(-1)
    torch.testing.assert_close(row_sums, allowed.any(-1)[:, None].expand_as(row_sums).float())


def test_default_scale_with_several_heads_is_head_dim_to_the_minus_half():
    layer = GraphAttention(48, heads=6)
    assert layer.score.scale == pytest.approx(8 ** -0.5)
    layer = GraphAttention(48, heads=6, head_dim=4)
    assert layer.score.scale == pytest.approx(4 ** -0.5)
