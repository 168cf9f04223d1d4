"""NeighborhoodAttention's constructor arguments and its automatic choice of implementation, against hand-written
values (the survivors of the eighth mutation run: every implementation gives the same output, so only these
checks see a wrong default, a lost argument or a shifted threshold)."""
from __future__ import annotations

import pytest

from graphattn.attention.neighborhood import NeighborhoodAttention as NA


@pytest.mark.parametrize("name, value, shown", [("kernel_size", (3, 3, 3), "(3, 3, 3)"), ("stride", (1, 1, 1), "(1, 1, 1)"),
                                                ("dilation", (1,), "(1,)"), ("causal", (True, False, True), "(True, False, True)")])
def test_per_axis_arguments_of_the_wrong_length_are_named(name, value, shown):
    args = {"kernel_size": 3, name: value}
    with pytest.raises(ValueError, match=rf"^{name} must be a scalar or have one entry per grid axis \(2\), got "
                                         rf"{shown.replace('(', '[(]').replace(')', '[)]')}$"):
        NA(8, 2, (8, 8), **args)


def test_defaults_and_scalars_spread_over_the_axes():
    na = NA(8, 2, (8, 8), 3)
    assert (na.shape, na.kernel_size, na.stride, na.dilation, na.causal) == ((8, 8), (3, 3), (1, 1), (1, 1), (False, False))
    one = NA(8, 2, 16, 5, causal=True)
    assert one.shape == (16,) and one.kernel_size == (5,) and one.causal == (True,)
    assert na.heads == 2 and na.impl == "auto"


def test_head_dim_and_bias_reach_the_attention_layer():
    na = NA(8, 2, 16, 3, head_dim=3, bias=False)
    shapes = {name: tuple(p.shape) for name, p in na.named_parameters()}
    assert shapes == {"attn.score.q.weight": (6, 8), "attn.score.k.weight": (6, 8), "attn.message.v.weight": (6, 8),
                      "attn.update.proj.weight": (8, 6)}
    default = {name: tuple(p.shape) for name, p in NA(8, 2, 16, 3).named_parameters()}
    assert default["attn.score.q.weight"] == (8, 8) and default["attn.update.proj.bias"] == (8,)


@pytest.mark.parametrize("shape, kernel, stride, tiled, impl", [
    (64, 16, 16, True, "block"),              # tiled, window exactly a quarter of the grid (the boundary is small)
    (128, 32, 16, False, "block"),            # not tiled, but groups of 16 queries (stride product 16)
    ((16, 16), (8, 8), (4, 4), False, "block"),
    (64, 16, 8, False, "masked"),             # stride product 8 < 16 and not tiled
    (64, 16, 1, False, "masked"),
    (16, 8, 8, True, "masked"),               # tiled, but the window is half the grid: not small
])
def test_auto_picks_the_block_path_only_for_small_windows_with_large_groups(shape, kernel, stride, tiled, impl):
    na = NA(8, 2, shape, kernel, stride=stride)
    assert na.is_tiled() is tiled
    assert na.resolve_impl() == impl and na.resolve_impl("auto") == impl


def test_an_explicit_impl_wins_over_the_layers_own():
    na = NA(8, 2, 64, 16, stride=16)                  # auto would pick "block"
    assert na.resolve_impl("masked") == "masked" and na.resolve_impl("sparse") == "sparse"
    assert NA(8, 2, 64, 16, stride=16, impl="sparse").resolve_impl() == "sparse"
    with pytest.raises(ValueError, match=r"impl must be one of .*, got 'fast'"):
        na.resolve_impl("fast")
