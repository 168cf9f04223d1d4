"""LinearAttention's constructor arguments reach its GraphAttention (parameter shapes, output width), against
hand-written values: the survivors of the eighth mutation run in `attention/linear.py`."""
from __future__ import annotations

import pytest
import torch

from graphattn.attention.linear import KernelScore, LinearAttention


def _shapes(module):
    return {name: tuple(p.shape) for name, p in module.named_parameters()}


@pytest.mark.parametrize("kwargs, shapes, out", [
    ({}, {"attn.score.q.weight": (8, 8), "attn.score.q.bias": (8,), "attn.score.k.weight": (8, 8),
          "attn.score.k.bias": (8,)}, 8),                                           # identity values, no projection
    ({"value": "project", "head_dim": 3},
     {"attn.score.q.weight": (6, 8), "attn.score.q.bias": (6,), "attn.score.k.weight": (6, 8), "attn.score.k.bias": (6,),
      "attn.message.v.weight": (6, 8), "attn.message.v.bias": (6,)}, 6),            # heads x head_dim out, unprojected
    ({"value": "project", "head_dim": 3, "out_proj": True},
     {"attn.score.q.weight": (6, 8), "attn.score.q.bias": (6,), "attn.score.k.weight": (6, 8), "attn.score.k.bias": (6,),
      "attn.message.v.weight": (6, 8), "attn.message.v.bias": (6,), "attn.update.proj.weight": (8, 6),
      "attn.update.proj.bias": (8,)}, 8),
    ({"out_proj": True, "qk_bias": False},
     {"attn.score.q.weight": (8, 8), "attn.score.k.weight": (8, 8), "attn.update.proj.weight": (8, 8),
      "attn.update.proj.bias": (8,)}, 8),
])
def test_arguments_reach_the_layer(kwargs, shapes, out):
    layer = LinearAttention(8, 2, **kwargs)
    assert _shapes(layer) == shapes
    assert layer.attn.heads == 2 and layer.attn.in_dim == 8
    assert layer(torch.randn(2, 5, 8)).shape == (2, 5, out)


def test_kernel_score_has_biases_by_default_on_both_projections():
    assert _shapes(KernelScore(4, 6, 2, 3)) == {"q.weight": (6, 4), "q.bias": (6,), "k.weight": (6, 6), "k.bias": (6,)}
    assert _shapes(KernelScore(4, 4, 2, 2, bias=False)) == {"q.weight": (4, 4), "k.weight": (4, 4)}
