import math
import random

import pytest
import torch

from graphattn.attention import GraphAttention
from graphattn.attention.neighborhood import NeighborhoodAttention, neighborhood_groups
from graphattn.ops import neighborhood_mask

IMPLS = ("sparse", "masked", "gather", "block")


def _random_configs(n, seed):
    rng = random.Random(seed)
    configs = []
    for _ in range(n):
        nd = rng.choice([1, 2, 3])
        shape, ks, ss, ds = [], [], [], []
        for _ in range(nd):
            length = rng.randint(3, 10) if nd < 3 else rng.randint(2, 5)
            d = rng.choice([1, 1, 2]) if length >= 4 else 1
            k = rng.randint(1, length // d)
            shape.append(length), ks.append(k), ss.append(rng.randint(1, k)), ds.append(d)
        causal = [rng.random() < 0.3 for _ in range(nd)]
        configs.append((tuple(shape), tuple(ks), tuple(ss), tuple(ds), tuple(causal)))
    return configs


CONFIGS = _random_configs(12, seed=0) + [
    ((12,), 4, 2, 1, False),             # even kernel
    ((12,), 5, 3, 2, True),              # causal, strided, dilated
    ((6, 8), (2, 4), (2, 4), 1, False),  # tiles
    ((7, 9), (3, 4), (2, 3), (2, 1), (False, True)),
    ((4, 4, 6), (2, 3, 3), (1, 3, 2), 1, (True, False, False)),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=str)
def test_groups_rebuild_the_mask(cfg):
    shape, k, s, d, c = cfg
    q, kv, mask = neighborhood_groups(shape, k, s, d, c)
    n = math.prod(shape)
    if mask is None:
        mask = (q[:, :, None] >= 0) & (kv[:, None, :] >= 0)
    rebuilt = torch.zeros(n, n, dtype=torch.bool)
    g, a, b = mask.nonzero(as_tuple=True)
    rebuilt[q[g, a], kv[g, b]] = True
    assert torch.equal(rebuilt, neighborhood_mask(shape, k, s, d, c))
    # each token is the query of exactly one group
    real = q[q >= 0]
    assert torch.equal(real.sort().values, torch.arange(n))


@pytest.mark.parametrize("cfg", CONFIGS, ids=str)
def test_implementations_agree_outputs_and_gradients(cfg):
    shape, k, s, d, c = cfg
    torch.manual_seed(0)
    layer = NeighborhoodAttention(8, 2, shape, k, s, d, c).double()
    x = torch.randn(2, math.prod(shape), 8, dtype=torch.double)
    grad_out = torch.randn(2, math.prod(shape), 8, dtype=torch.double)
    results = {}
    for impl in IMPLS:
        xi = x.clone().requires_grad_()
        out = layer(xi, impl=impl)
        grads = torch.autograd.grad((out * grad_out).sum(), [xi] + list(layer.parameters()))
        results[impl] = (out, grads)
    ref_out, ref_grads = results["masked"]
    for impl in IMPLS:
        out, grads = results[impl]
        assert torch.allclose(out, ref_out, atol=1e-10), impl
        for a, b in zip(grads, ref_grads):
            assert torch.allclose(a, b, atol=1e-10), impl


def test_stride_equal_kernel_is_swin_window_attention():
    torch.manual_seed(1)
    h, w, kh, kw, dim, heads = 6, 8, 3, 4, 8, 2
    layer = NeighborhoodAttention(dim, heads, (h, w), (kh, kw), stride=(kh, kw)).double()
    assert layer.is_tiled()
    x = torch.randn(2, h, w, dim, dtype=torch.double)
    # Swin-style: cut the image into kh x kw windows, full attention inside each window, paste back
    windows = x.reshape(2, h // kh, kh, w // kw, kw, dim).permute(0, 1, 3, 2, 4, 5).reshape(-1, kh * kw, dim)
    full = layer.attn(windows)                                        # unmasked dense attention per window
    swin = full.reshape(2, h // kh, w // kw, kh, kw, dim).permute(0, 1, 3, 2, 4, 5).reshape(2, h, w, dim)
    for impl in IMPLS:
        assert torch.allclose(layer(x, impl=impl), swin, atol=1e-10), impl


@pytest.mark.parametrize("shape", [(9,), (4, 5), (2, 3, 4)])
def test_kernel_equal_shape_is_full_attention(shape):
    torch.manual_seed(2)
    layer = NeighborhoodAttention(8, 2, shape, shape).double()
    x = torch.randn(3, math.prod(shape), 8, dtype=torch.double)
    full = layer.attn(x)
    for impl in IMPLS:
        assert torch.allclose(layer(x, impl=impl), full, atol=1e-10), impl


def test_grid_input_shape_and_weights():
    torch.manual_seed(3)
    layer = NeighborhoodAttention(8, 2, (5, 6), 3, stride=2)
    x = torch.randn(2, 5, 6, 8)
    out, att = layer(x, return_attention=True)
    assert out.shape == x.shape
    assert torch.allclose(out, layer(x, impl="block"), atol=1e-5)
    mask = neighborhood_mask((5, 6), 3, 2)
    assert att.weights.shape == (2, 2, 30, 30)
    assert float(att.weights.detach().masked_select(~mask).abs().max()) == 0.0
    assert torch.allclose(att.weights.sum(-1), torch.ones(2, 2, 30))


def test_hooks_are_honoured_by_every_impl():
    torch.manual_seed(4)
    layer = NeighborhoodAttention(8, 2, (6, 6), 3)
    x = torch.randn(1, 36, 8)
    plain = layer(x, impl="block")
    handle = layer.attn.register_attention_hook(lambda mod, w, info: torch.zeros_like(w))
    zeroed = layer(x, impl="block")
    handle.remove()
    # all weights zero -> only the output projection bias remains
    assert torch.allclose(zeroed, layer.attn.update.proj.bias.expand_as(zeroed))
    assert not torch.allclose(plain, zeroed)


def test_bad_parameters_raise():
    with pytest.raises(ValueError, match="stride"):
        NeighborhoodAttention(8, 2, (8, 8), 3, stride=4)
    with pytest.raises(ValueError, match="dilation"):
        NeighborhoodAttention(8, 2, (8, 8), 5, dilation=2)
    with pytest.raises(ValueError, match="impl"):
        NeighborhoodAttention(8, 2, 8, 3, impl="fast")
    layer = NeighborhoodAttention(8, 2, (4, 4), 3)
    with pytest.raises(ValueError, match="x must be"):
        layer(torch.randn(1, 15, 8))


def test_auto_picks_block_for_small_windows():
    assert NeighborhoodAttention(8, 2, (16, 16), 4, stride=4).resolve_impl() == "block"
    assert NeighborhoodAttention(8, 2, (16, 16), 4).resolve_impl() == "masked"
    assert NeighborhoodAttention(8, 2, (16, 16), 12).resolve_impl() == "masked"
    assert GraphAttention  # the layer the primitive is built on


# ---------------------------------------------------------------------------------- mutation-testing gaps (#22)

def test_tiles_path_uses_the_scores_scale_and_dropout():
    torch.manual_seed(0)
    layer = NeighborhoodAttention(4, 1, (4, 4), 2, stride=2, dropout=0.5).double()
    assert layer.is_tiled()
    x = torch.randn(1, 16, 4, dtype=torch.double)
    layer.eval()
    layer.attn.score.scale = 3.0                                   # not SDPA's default 1/sqrt(Dh)
    assert torch.allclose(layer(x, impl="block"), layer(x, impl="masked"), atol=1e-10)
    layer.train()
    torch.manual_seed(1)
    a = layer(x, impl="block")
    torch.manual_seed(2)
    b = layer(x, impl="block")
    assert not torch.allclose(a, b)                                # attention dropout is applied in training
