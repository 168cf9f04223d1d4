"""Which path NeighborhoodAttention takes, what the group structures hold, and what every path honours.

Companion of test_neighborhood.py (which checks that the four implementations agree): here each path is
checked to be the one that runs, the groups of :func:`neighborhood_groups` against hand-worked values (padding,
causal windows, defaults), and the fast paths against the layer's own settings (score scale, update, dropout,
device of the cached structures).
"""
import pytest
import torch

import graphattn.attention.neighborhood as nbhd
from graphattn.attention.neighborhood import NeighborhoodAttention, neighborhood_groups
from graphattn.attention.updates import Residual
from graphattn.ops import neighborhood_mask

IMPLS = ("sparse", "masked", "gather", "block")


def _layer(shape=(7,), kernel=3, stride=2, dilation=1, causal=False, impl="masked", dim=8, heads=2, **kw):
    torch.manual_seed(0)
    return NeighborhoodAttention(dim, heads, shape, kernel, stride, dilation, causal, impl=impl, **kw).double()


def _x(layer, batch=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, layer.num_tokens, 8, generator=g, dtype=torch.double)


def _reference(layer, x):
    """Dense masked attention over the explicit GNA neighbourhood, written out (projections of the layer)."""
    q, k = layer.attn.score.project(x, x)                               # (B, N, H, Dh)
    v = layer.attn.message.project(x)                                   # (B, N, H, Dv)
    scores = torch.einsum("bihd,bjhd->bhij", q, k) * layer.attn.score.scale
    allowed = neighborhood_mask(layer.shape, layer.kernel_size, layer.stride, layer.dilation, layer.causal)
    weights = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
    agg = torch.einsum("bhij,bjhd->bihd", weights, v)
    return layer.attn.update(x, agg.flatten(-2))


# ------------------------------------------------------------------------------------- neighborhood_groups

def test_groups_of_a_padded_1d_axis_hand_worked():
    # length 5, window 3, stride 2: groups {0,1}, {2,3}, {4}; the last group's window is shifted inward
    q, kv, mask = neighborhood_groups(5, 3, 2)
    assert q.tolist() == [[0, 1], [2, 3], [4, -1]]
    assert kv.tolist() == [[0, 1, 2], [2, 3, 4], [2, 3, 4]]
    assert mask.tolist() == [[[True] * 3] * 2, [[True] * 3] * 2, [[True] * 3, [False] * 3]]


def test_groups_of_a_causal_1d_axis_pad_short_windows_with_minus_one():
    q, kv, mask = neighborhood_groups((5,), 3, 2, causal=True)
    assert q.tolist() == [[0, 1], [2, 3], [4, -1]]
    assert kv.tolist() == [[0, 1, -1], [1, 2, 3], [2, 3, 4]]
    assert mask.tolist() == [[[True, False, False], [True, True, False]],
                             [[True, True, False], [True, True, True]],
                             [[True, True, True], [False, False, False]]]


def test_groups_of_a_padded_2d_grid_mark_padding_with_minus_one():
    # axis 0: length 3, window 2, stride 2 -> query groups {0,1}, {2}; axis 1: length 2, window 1
    q, kv, mask = neighborhood_groups((3, 2), (2, 1), (2, 1))
    assert q.tolist() == [[0, 2], [1, 3], [4, -1], [5, -1]]
    assert kv.tolist() == [[0, 2], [1, 3], [2, 4], [3, 5]]
    assert mask is not None and not mask[2, 1].any() and mask[2, 0].all()


def test_groups_of_a_causal_2d_grid_pad_keys_with_minus_one():
    q, kv, mask = neighborhood_groups((3, 2), (2, 1), (2, 1), causal=(True, False))
    # axis 0 causal: the first group's window is {0, 1}, the second's {1, 2}
    assert kv.tolist() == [[0, 2], [1, 3], [2, 4], [3, 5]]
    q, kv, mask = neighborhood_groups((2, 3), (1, 3), (1, 2), causal=(False, True))
    # axis 1 causal: windows [0, 1, pad] and [0, 1, 2] (leader 2 of the group {2})
    assert kv.tolist() == [[0, 1, -1], [0, 1, 2], [3, 4, -1], [3, 4, 5]]
    assert q.tolist() == [[0, 1], [2, -1], [3, 4], [5, -1]]


def test_groups_defaults_are_stride_1_dilation_1_non_causal_and_an_int_shape_is_one_axis():
    q, kv, mask = neighborhood_groups(7, 3)
    q1, kv1, mask1 = neighborhood_groups((7,), (3,), 1, 1, False)
    assert torch.equal(q, q1) and torch.equal(kv, kv1) and mask is None and mask1 is None
    assert q.tolist() == [[i] for i in range(7)]
    assert kv.tolist() == [[0, 1, 2]] + [[i - 1, i, i + 1] for i in range(1, 6)] + [[4, 5, 6]]


def test_groups_mask_is_none_exactly_when_every_entry_is_true():
    assert neighborhood_groups(6, 3, 3)[2] is None                     # tiles, no padding
    assert neighborhood_groups((4, 6), (2, 3), (2, 3))[2] is None
    assert neighborhood_groups(7, 3, 3)[2] is not None                 # a padded group
    assert neighborhood_groups(6, 3, 3, causal=True)[2] is not None


@pytest.mark.parametrize("name, kw", [
    ("kernel_size", dict(kernel_size=(3, 3, 3))), ("stride", dict(kernel_size=3, stride=(1, 1, 1))),
    ("dilation", dict(kernel_size=3, dilation=(1, 1, 1))), ("causal", dict(kernel_size=3, causal=(True,) * 3))])
def test_groups_name_the_argument_of_the_wrong_length(name, kw):
    with pytest.raises(ValueError, match=rf"^{name} must be a scalar or have one entry per grid axis \(2\)"):
        neighborhood_groups((4, 4), **kw)


# ------------------------------------------------------------------------------------------ path choice

def _spy_paths(monkeypatch, layer):
    calls = []
    for name in ("_sparse", "_gather", "_block", "_tiles"):
        original = getattr(layer, name)

        def spy(*args, _name=name, _original=original):
            calls.append(_name)
            return _original(*args)
        monkeypatch.setattr(layer, name, spy)
    return calls


@pytest.mark.parametrize("own", ["masked", "gather", "block", "sparse"])
@pytest.mark.parametrize("impl, expected", [
    ("masked", []), ("sparse", ["_sparse"]), ("gather", ["_gather"]), ("block", ["_block"])])
def test_each_impl_runs_its_own_path(monkeypatch, own, impl, expected):
    layer = _layer(impl=own)                                          # stride 2: the grouped block path
    calls = _spy_paths(monkeypatch, layer)
    x = _x(layer)
    out = layer(x, impl=impl)
    assert calls == expected
    torch.testing.assert_close(out, _reference(layer, x))


def test_the_layers_own_impl_is_used_without_an_argument(monkeypatch):
    for impl, expected in (("masked", []), ("sparse", ["_sparse"]), ("gather", ["_gather"]), ("block", ["_block"])):
        layer = _layer(impl=impl)
        calls = _spy_paths(monkeypatch, layer)
        layer(_x(layer))
        assert calls == expected, impl


def test_block_with_stride_1_hands_over_to_gather_and_tiles_use_the_reshape(monkeypatch):
    layer = _layer(stride=1)
    calls = _spy_paths(monkeypatch, layer)
    x = _x(layer)
    torch.testing.assert_close(layer(x, impl="block"), _reference(layer, x))
    assert calls == ["_block", "_gather"]
    layer = _layer(shape=(6,), kernel=3, stride=3)
    calls = _spy_paths(monkeypatch, layer)
    x = _x(layer)
    torch.testing.assert_close(layer(x, impl="block"), _reference(layer, x))
    assert calls == ["_tiles"]


# --------------------------------------------------------------------------------- the layer's settings

@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("cfg", [((7,), 3, 2, 1, False), ((9,), 3, 2, 2, True), ((5, 6), (3, 2), (2, 2), 1, False)],
                         ids=str)
def test_every_path_uses_the_scores_scale(impl, cfg):
    shape, k, s, d, c = cfg
    layer = _layer(shape, k, s, d, c)
    layer.attn.score.scale = 0.15                                      # not the SDPA default Dh ** -0.5
    x = _x(layer)
    torch.testing.assert_close(layer(x, impl=impl), _reference(layer, x))


@pytest.mark.parametrize("impl", IMPLS)
def test_every_path_hands_x_to_the_layers_update(impl):
    layer = _layer()
    layer.attn.update = Residual(8, 8).double()                         # uses x_dst, unlike "project"
    x = _x(layer)
    torch.testing.assert_close(layer(x, impl=impl), _reference(layer, x))


@pytest.mark.parametrize("impl", ["gather", "block"])
def test_attention_dropout_acts_in_training_only(impl):
    layer = _layer(dropout=0.5)
    x = _x(layer)
    layer.eval()
    torch.testing.assert_close(layer(x, impl=impl), _reference(layer, x))
    layer.train()
    torch.manual_seed(3)
    assert not torch.allclose(layer(x, impl=impl), _reference(layer, x))


def test_block_never_hands_sdpa_a_query_row_without_keys(monkeypatch):
    # padded query slots see every key (their output is dropped) rather than none, which SDPA backends may
    # turn into NaN outputs and gradients
    sdpa = torch.nn.functional.scaled_dot_product_attention
    masks = []

    def checking(*args, attn_mask=None, **kw):
        masks.append(attn_mask)
        return sdpa(*args, attn_mask=attn_mask, **kw)
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", checking)
    for shape, k, s, c in (((7,), 3, 2, False), ((7,), 3, 2, True), ((5, 3), (3, 2), (2, 2), False)):
        layer = _layer(shape, k, s, causal=c)
        x = _x(layer)
        torch.testing.assert_close(layer(x, impl="block"), _reference(layer, x))
    assert len(masks) == 3 and all(m is not None and bool(m.any(-1).all()) for m in masks)


def test_bad_grid_input_with_the_right_rank_is_refused():
    layer = _layer(shape=(4, 4), kernel=3, stride=1)
    with pytest.raises(ValueError, match=r"x must be \(B, 16, D\) or \(B, \*\(4, 4\), D\), got \(2, 2, 8, 8\)"):
        layer(torch.randn(2, 2, 8, 8, dtype=torch.double))
    with pytest.raises(ValueError, match="got \\(2, 16, 1, 8\\)"):
        layer(torch.randn(2, 16, 1, 8, dtype=torch.double))


# ------------------------------------------------------------------------------------- cached structures

def test_structures_are_built_once_and_cached_under_the_inputs_device(monkeypatch):
    counts = {}
    for name in ("neighborhood_mask", "mask_to_edge_index", "neighborhood_indices", "neighborhood_groups"):
        original = getattr(nbhd, name)

        def counting(*args, _name=name, _original=original):
            counts[_name] = counts.get(_name, 0) + 1
            return _original(*args)
        monkeypatch.setattr(nbhd, name, counting)
    layer = _layer()
    x = _x(layer)
    for _ in range(2):
        for impl in IMPLS:
            layer(x, impl=impl)
        layer(x, return_attention=True)
    assert counts == {"neighborhood_mask": 1, "mask_to_edge_index": 1, "neighborhood_indices": 1,
                      "neighborhood_groups": 1}
    assert set(layer._cache) == {"mask:cpu", "edge_index:cpu", "indices:cpu", "groups:cpu", "inverse:cpu"}


def test_structures_are_moved_to_the_requested_device():
    layer = _layer()
    meta = torch.device("meta")
    for name in ("mask", "edge_index", "indices", "groups", "inverse"):
        value = layer._get(name, meta)
        tensors = value if isinstance(value, tuple) else (value,)
        assert all(t.device == meta for t in tensors if t is not None), name
    with pytest.raises(KeyError) as raised:
        layer._get("nothing", meta)
    assert raised.value.args == ("nothing",)


@pytest.mark.parametrize("impl", IMPLS)
def test_every_path_works_when_the_default_device_is_not_the_inputs(impl):
    layer = _layer()
    x = _x(layer)
    ref = _reference(layer, x)
    layer(x, impl=impl)                                                 # structures built and cached
    with torch.device("meta"):                                          # tensors made without device= go there
        out = layer(x, impl=impl)
    assert out.device == x.device
    torch.testing.assert_close(out, ref)


def test_reference_is_the_explicit_neighbourhood():
    # the reference above against a loop over each query's neighbourhood list (1-D, dilation 2, causal)
    layer = _layer((9,), 3, 2, 2, True)
    x = _x(layer, batch=1)
    q, k = layer.attn.score.project(x, x)
    v = layer.attn.message.project(x)
    rows = []
    for i in range(9):
        # causal dilated window: the query's dilation group r, keys at most i, window ending at the group leader
        r, pos = i % 2, i // 2
        glen = (9 - r + 1) // 2
        leader = min((pos // 2) * 2 + 1, glen - 1)
        keys = [j * 2 + r for j in range(max(0, leader - 2), leader + 1) if j <= pos]
        s = torch.einsum("hd,khd->hk", q[0, i], k[0, keys]) * layer.attn.score.scale
        rows.append(torch.einsum("hk,khd->hd", torch.softmax(s, -1), v[0, keys]))
    expected = layer.attn.update(x, torch.stack(rows)[None].flatten(-2))
    torch.testing.assert_close(_reference(layer, x), expected)
    torch.testing.assert_close(layer(x, impl="block"), expected)                # stride 2: the grouped path


def test_the_gather_path_drops_weights_at_the_layers_rate(monkeypatch):
    rates = []
    dropout = torch.nn.functional.dropout

    def spy(input, p=0.5, training=True, inplace=False):
        rates.append(p)
        return dropout(input, p, training, inplace)
    monkeypatch.setattr(torch.nn.functional, "dropout", spy)
    layer = _layer(dropout=0.3)
    layer.train()
    layer(_x(layer), impl="gather")
    assert rates and set(rates) == {0.3}
