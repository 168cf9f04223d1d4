import pytest
import torch

from graphattn.attention import GraphAttention
from graphattn.interpret import interpolate_heads
from vision.diffusion.data import load_digits_diffusion
from vision.diffusion.dit import DiT
from vision.diffusion.guidance import GuidedEps
from vision.diffusion.pag import SoftPAG, all_heads, head_hunter

CFG = {"hidden_size": 16, "num_layers": 2, "num_heads": 2, "mlp_ratio": 2.0, "patch_size": 2, "timesteps": 50,
       "noise_schedule": "cosine", "image_size": 8, "valid_ratio": 0.1, "test_ratio": 0.2, "split_seed": 0}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = DiT(CFG, load_digits_diffusion(CFG)).eval()
    for p in m.parameters():    # random, non-zero weights everywhere (adaLN-Zero would hide the attention)
        torch.nn.init.normal_(p, std=0.3)
    return m


def inputs(b=3):
    g = torch.Generator().manual_seed(1)
    return torch.randn(b, 1, 8, 8, generator=g), torch.tensor([3, 17, 40][:b]), torch.tensor([1, 5, 9][:b])


def soft_reference(layer, x, u_per_head):
    """(1 - u) A V + u V per head, by hand from the layer's own projections."""
    _, att = layer(x, return_attention=True)
    v = layer.message.project(x).transpose(1, 2)                   # (B, H, N, Dv)
    agg = att.weights @ v
    u = torch.tensor(u_per_head).view(1, -1, 1, 1)
    agg = (1 - u) * agg + u * v
    return layer.update(x, agg.transpose(1, 2).flatten(-2))


@pytest.mark.parametrize("impl", ["weights", "fast"])
def test_layer_output_is_the_softpag_formula_and_u1_outputs_the_values(impl):
    torch.manual_seed(0)
    layer = GraphAttention(8, heads=2)
    x = torch.randn(2, 5, 8)
    for u in (0.0, 0.3, 1.0):
        with SoftPAG([layer], {(0, 1): u}, impl=impl).apply():
            out = layer(x)
        assert torch.allclose(out, soft_reference(layer, x, [0.0, u]), atol=1e-6)
    # u = 1 on every head is PAG: each token sends out W_o of its own values
    with SoftPAG([layer], [(0, 0), (0, 1)], u=1.0, impl=impl).apply():
        out = layer(x)
    assert torch.allclose(out, layer.update.proj(layer.message.project(x).flatten(-2)), atol=1e-6)


def test_weights_impl_equals_the_core_interpolate_heads():
    torch.manual_seed(0)
    layer = GraphAttention(9, heads=3)
    x = torch.randn(2, 4, 9)
    with interpolate_heads(layer, [0, 2], "identity", 0.4):
        ref = layer(x)
    with SoftPAG([layer], [(0, 0), (0, 2)], u=0.4).apply():
        assert torch.allclose(layer(x), ref, atol=1e-6)


def test_u0_leaves_the_model_unchanged_and_only_perturbed_rows_change(model):
    x, t, y = inputs()
    with torch.no_grad():
        plain = model(x, t, y)
        with SoftPAG(model, all_heads(model), u=0.0).apply():
            assert torch.equal(model(x, t, y), plain)
        with SoftPAG(model, {(0, 1): 0.7, (1, 0): 0.2}).apply(rows=slice(1, 2)):
            part = model(x, t, y)
    # rows 0 and 2 are untouched (up to SDPA vs explicit-softmax rounding: a hook disables the fused kernel)
    assert torch.allclose(part[0], plain[0], atol=1e-5) and torch.allclose(part[2], plain[2], atol=1e-5)
    assert not torch.allclose(part[1], plain[1], atol=1e-4)


def test_fast_and_weights_impls_agree_on_the_model_and_in_guidance(model):
    x, t, y = inputs()
    heads = {(0, 0): 1.0, (1, 1): 0.5}
    with torch.no_grad():
        with SoftPAG(model, heads, impl="weights").apply():
            a = model(x, t, y)
        with SoftPAG(model, heads, impl="fast").apply():
            b = model(x, t, y)
        ga = GuidedEps(model, y, cfg_scale=2.0, pag_scale=1.5, perturbation=SoftPAG(model, heads))(x, t)
        gb = GuidedEps(model, y, cfg_scale=2.0, pag_scale=1.5, perturbation=SoftPAG(model, heads, impl="fast"))(x, t)
        c, u = model(x, t, y), model(x, t, torch.full_like(y, 10))
    assert torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(ga, gb, atol=1e-4)
    assert torch.allclose(ga, u + 2.0 * (c - u) + 1.5 * (c - a), atol=1e-4)


def test_bad_heads_and_strengths_give_clear_errors(model):
    with pytest.raises(ValueError, match=r"unknown head 2 in head \(0, 2\): layer 0 has 2 heads"):
        SoftPAG(model, [(0, 2)])
    with pytest.raises(ValueError, match=r"unknown layer 5 .* 2 attention layers"):
        SoftPAG(model, [(5, 0)])
    with pytest.raises(ValueError, match=r"u must lie in \[0, 1\]"):
        SoftPAG(model, {(0, 0): 1.5})
    with pytest.raises(ValueError, match=r"u must lie in \[0, 1\]"):
        SoftPAG(model, [(0, 0)], u=-0.1)
    with pytest.raises(ValueError, match="impl"):
        SoftPAG(model, [(0, 0)], impl="sdpa")


def test_head_hunter_greedy_picks_top_k_and_stops_when_worse():
    value = {(0, 0): 0.1, (0, 1): 0.5, (1, 0): 0.4, (1, 1): -0.2, (2, 0): 0.05}
    calls = []

    def objective(heads):
        calls.append(tuple(heads))
        s = sum(value[h] for h in heads)
        return s - 0.3 * max(0, len(heads) - 4)          # a fifth head costs more than it brings

    res = head_hunter(objective, list(value), rounds=4, k=2)
    assert res.selected == [(0, 1), (1, 0), (0, 0), (2, 0)]
    assert res.set_scores == pytest.approx([0.9, 1.05])
    assert res.rounds[0] == pytest.approx(value)
    assert len(calls) == len(set(calls)) == res.evaluations       # cached: no head set scored twice
    with pytest.raises(ValueError, match="no candidate"):
        head_hunter(objective, [], rounds=1)
