"""Score hooks: pre-normaliser edits of the raw attention scores on both paths (GraphAttention.register_score_hook)."""
import pytest
import torch

from graphattn.attention import GraphAttention
from graphattn.attention import layer as layer_module
from graphattn.ops import causal_mask, mask_to_edge_index

B, N, D, H = 2, 6, 8, 2


def _layer(score="dot"):
    torch.manual_seed(0)
    return GraphAttention(D, D, heads=H, score=score).double()


def _x():
    return torch.randn(B, N, D, dtype=torch.double, generator=torch.Generator().manual_seed(1))


def _dense_to_edges(perturbation, edge_index):
    """The entries of a dense ``(B, H, N, N)`` tensor that belong to each edge of a batch graph: ``(E, H)``."""
    b, i, j = edge_index[1] // N, edge_index[1] % N, edge_index[0] % N
    return perturbation[b, :, i, j]


@pytest.mark.parametrize("score", ["dot", "additive"])
@pytest.mark.parametrize("sparse", [False, True])
def test_row_constant_leaves_the_weights_unchanged(score, sparse):
    layer, x, mask = _layer(score), _x(), causal_mask(N)
    shift = torch.randn(B, 1, N, 1, dtype=torch.double) * 5          # one constant per receiver row (and batch)
    edge_index = mask_to_edge_index(mask.expand(B, N, N))

    def add_row_constant(layer_, scores, info):
        if info.path == "dense":
            return scores + shift
        return scores + shift[edge_index[1] // N, 0, edge_index[1] % N, 0].unsqueeze(-1)

    def weights():
        if sparse:
            return layer(x.reshape(B * N, D), edge_index, return_attention=True)[1].weights
        return layer(x, mask=mask, return_attention=True)[1].weights

    before = weights()
    handle = layer.register_score_hook(add_row_constant)
    after = weights()
    handle.remove()
    assert torch.allclose(before, after, atol=1e-12)
    # a non-constant change is seen (the hook really ran)
    handle = layer.register_score_hook(lambda l, s, i: s + torch.randn_like(s))
    assert not torch.allclose(before, weights(), atol=1e-6)
    handle.remove()


def test_perturbation_gives_equal_results_on_both_paths_and_remove_restores():
    layer, x, mask = _layer(), _x(), causal_mask(N)
    perturbation = torch.randn(B, H, N, N, dtype=torch.double, generator=torch.Generator().manual_seed(2))
    edge_index = mask_to_edge_index(mask.expand(B, N, N))
    seen = []

    def perturb(layer_, scores, info):
        seen.append((info.path, info.mask is not None))
        return scores + (perturbation if info.path == "dense" else _dense_to_edges(perturbation, info.edge_index))

    clean = layer(x, mask=mask)
    handle = layer.register_score_hook(perturb)
    x_d, x_s = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_d = layer(x_d, mask=mask)
    out_s = layer(x_s.reshape(B * N, D), edge_index).reshape(B, N, -1)
    assert torch.allclose(out_d, out_s, atol=1e-10)
    assert not torch.allclose(out_d, clean, atol=1e-6)
    g_d = torch.autograd.grad(out_d.square().sum(), x_d)[0]
    g_s = torch.autograd.grad(out_s.square().sum(), x_s)[0]
    assert torch.allclose(g_d, g_s, atol=1e-10)
    assert seen == [("dense", True), ("sparse", False)]
    handle.remove()
    assert torch.equal(layer(x, mask=mask), clean)


def test_score_hook_gradient_reaches_a_tracked_perturbation():
    layer, x = _layer(), _x()
    delta = {}

    def track(layer_, scores, info):
        delta["d"] = torch.zeros_like(scores, requires_grad=True)
        return scores + delta["d"]

    layer.register_score_hook(track)
    out = layer(x)
    (g,) = torch.autograd.grad(out.square().sum(), delta["d"])
    assert g.shape == (B, H, N, N) and g.abs().sum() > 0


def test_with_a_score_hook_the_sdpa_shortcut_is_not_taken(monkeypatch):
    layer, x = _layer(), _x()
    calls = []
    sdpa = layer_module.F.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls.append(1)
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(layer_module.F, "scaled_dot_product_attention", counting)
    fast = layer(x)
    assert len(calls) == 1                                            # no hook: the fused path
    handle = layer.register_score_hook(lambda l, s, i: None)         # a hook that changes nothing
    hooked = layer(x)
    assert len(calls) == 1                                            # the hook forces the explicit path
    assert torch.allclose(fast, hooked, atol=1e-10)
    handle.remove()
    layer(x)
    assert len(calls) == 2


def test_wrong_shape_from_a_score_hook_is_a_clear_error():
    layer = _layer()
    layer.register_score_hook(lambda l, s, i: s[..., :1])
    with pytest.raises(ValueError, match="score hook returned shape"):
        layer(_x())


def test_fast_paths_of_composite_layers_honour_score_hooks():
    """Neighbourhood attention's gather/block paths and MoH's routed path never form the scores, so a score
    hook must send them through the path that does (it used to be skipped there silently)."""
    from graphattn.attention.moh import MoHAttention
    from graphattn.attention.neighborhood import NeighborhoodAttention

    torch.manual_seed(0)
    na = NeighborhoodAttention(8, 2, (4, 4), 3)
    x = torch.randn(1, 16, 8)
    handle = na.attn.register_score_hook(lambda layer, s, info: torch.zeros_like(s))   # uniform weights
    hooked = na(x, impl="gather")
    assert torch.allclose(hooked, na(x, impl="masked"), atol=1e-6)
    handle.remove()
    assert not torch.allclose(na(x, impl="gather"), hooked, atol=1e-4)

    moh = MoHAttention(8, 4, 1, 2)
    y = torch.randn(2, 6, 8)
    handle = moh.attn.register_score_hook(lambda layer, s, info: torch.zeros_like(s))
    hooked = moh(y, impl="routed")
    assert torch.allclose(hooked, moh(y, impl="dense"), atol=1e-6)
    handle.remove()
    assert not torch.allclose(moh(y, impl="routed"), hooked, atol=1e-4)
