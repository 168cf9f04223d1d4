"""graphattn/attention/moh.py: routing against its formula, the balance loss with padding, the routed fast path's
other branches (non-SDPA normaliser, no routed token, per-head masks) and the exact messages (#22, eighth run)."""
import pytest
import torch

from graphattn.attention.moh import MoHAttention, load_balance_loss
from graphattn.ops import neighborhood_mask

D, H = 16, 4


def _moh(shared, top_k, **kw):
    torch.manual_seed(0)
    return MoHAttention(D, H, shared, top_k, router_std=1.0, **kw).double()


def test_route_matches_the_formula_with_padding():
    moh = _moh(1, 2)                                   # Hs = 1, Hr = 3, K = 2
    torch.manual_seed(1)
    x = torch.randn(2, 5, D, dtype=torch.double)
    tok = torch.ones(2, 5, dtype=torch.bool)
    tok[1, 3:] = False
    r = moh.route(x, tok)
    p = torch.softmax(x @ moh.router.weight.T, -1)
    kept, top = p.topk(2, -1)
    routed = torch.zeros_like(p).scatter(-1, top, kept / kept.sum(-1, keepdim=True) * 2)
    shared = torch.softmax(x @ moh.shared_router.weight.T, -1) * 1
    a = 2 * torch.softmax(x @ moh.mix.weight.T, -1)
    want = torch.cat([a[..., :1] * shared, a[..., 1:] * routed], -1)
    assert torch.allclose(r.gates, want, atol=1e-12) and torch.equal(r.topk, top)
    assert torch.allclose(r.probs, p, atol=1e-12)
    pm, chosen = p[tok], torch.nn.functional.one_hot(top[tok], 3).sum(-2).double()
    assert torch.allclose(r.balance_loss, 3 * (pm.mean(0) * chosen.mean(0)).sum(), atol=1e-12)
    assert float(r.active_fraction) == pytest.approx(3 / 4)     # 1 shared + 2 routed of 4, padding left out


def test_balance_loss_with_token_mask_and_no_tokens():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]])
    topk = torch.tensor([[0], [2], [2]])
    keep = torch.tensor([True, True, False])
    want = 3 * ((probs[:2].mean(0)) * torch.tensor([0.5, 0.0, 0.5])).sum()
    assert torch.allclose(load_balance_loss(probs, topk, 3, keep), want)
    none = load_balance_loss(probs, topk, 3, torch.zeros(3, dtype=torch.bool))
    assert none.shape == () and float(none) == 0.0
    # leading dimensions are flattened
    assert torch.allclose(load_balance_loss(probs[None], topk[None], 3), load_balance_loss(probs, topk, 3))


def test_only_routed_and_only_shared_gates():
    moh = _moh(0, 2)
    x = torch.randn(1, 4, D, dtype=torch.double)
    r = moh.route(x)
    assert moh.mix is None and moh.shared_router is None
    p = torch.softmax(x @ moh.router.weight.T, -1)
    kept, top = p.topk(2, -1)
    assert torch.allclose(r.gates, torch.zeros_like(p).scatter(-1, top, kept / kept.sum(-1, keepdim=True) * 2))
    dense = _moh(3, 0)                                 # top_k = 0: every head shared
    assert dense.shared_heads == H and dense.routed_heads == 0 and dense.router is None and dense.mix is None
    r = dense.route(x)
    assert r.probs is None and r.topk is None and float(r.balance_loss) == 0.0
    assert torch.allclose(r.gates, torch.softmax(x @ dense.shared_router.weight.T, -1) * H)


def test_construction_details_and_messages():
    m = MoHAttention(D, H, 1, 2, head_dim=3, bias=False, router_std=0.5)
    assert m.head_dim == 3 and m.proj.in_features == 12 and m.proj.bias is None and m.attn.score.q.bias is None
    assert m.router.out_features == 3 and m.shared_router.out_features == 1 and m.mix.out_features == 2
    assert m.router.bias is None and m.mix.bias is None and m.shared_router.bias is None
    assert m.extra_repr() == "heads=4, shared=1, routed=3, top_k=2" and m.expected_active_fraction == 0.75
    torch.manual_seed(0)
    big = MoHAttention(64, 4, 1, 2, router_std=0.5)
    assert 0.4 < float(big.router.weight.detach().std()) < 0.6 and 0.4 < float(big.mix.weight.detach().std()) < 0.6
    assert 0.4 < float(big.shared_router.weight.detach().std()) < 0.6
    assert MoHAttention(D, H, 2, 1).impl == "dense" and MoHAttention(D, H, 2, 1).router_std == 0.02
    with pytest.raises(ValueError, match=r"^shared_heads must lie in \[0, heads=4\], got -1$"):
        MoHAttention(D, H, -1, 1)
    with pytest.raises(ValueError, match=r"^top_k must lie in \[1, heads - shared_heads = 2\] \(or be 0 for dense "
                                         r"MoH\), got 3$"):
        MoHAttention(D, H, 2, 3)
    with pytest.raises(ValueError, match=r"^top_k must lie in \[1, heads - shared_heads = 0\]"):
        MoHAttention(D, H, 4, 1)
    with pytest.raises(ValueError, match=r"^impl must be 'dense' or 'routed', got 'fast'$"):
        MoHAttention(D, H, 2, 1, impl="fast")
    with pytest.raises(ValueError, match=r"^impl must be 'dense' or 'routed', got 'fast'$"):
        m(torch.randn(1, 3, D), impl="fast")
    with pytest.raises(ValueError, match=r"^gates must have shape \(1, 3, 4\), got \(1, 3, 2\)$"):
        m(torch.randn(1, 3, D), gates=torch.ones(1, 3, 2))
    with pytest.raises(ValueError, match=r"^the routed fast path takes x of shape \(B, N, D\), got \(3, 16\)$"):
        m(torch.randn(3, D), impl="routed")


@pytest.mark.parametrize("normalizer", ["sigmoid", "src_softmax"])
def test_routed_path_with_a_non_sdpa_normaliser_equals_dense(normalizer):
    moh = _moh(1, 2, normalizer=normalizer)
    x = torch.randn(2, 9, D, dtype=torch.double)
    m = neighborhood_mask(9, 3)
    assert torch.allclose(moh(x, mask=m, impl="routed"), moh(x, mask=m), atol=1e-12)


def test_routed_path_with_per_head_masks_and_empty_rows():
    moh = _moh(2, 1)
    x = torch.randn(2, 6, D, dtype=torch.double)
    m = torch.rand(2, H, 6, 6, generator=torch.Generator().manual_seed(3)) > 0.4
    m[:, :, 0] = False                                 # query 0 sees no key in any head
    m[:, 2, 1] = False
    dense, routed = moh(x, mask=m), moh(x, mask=m, impl="routed")
    assert torch.allclose(dense, routed, atol=1e-12)
    one_head_mask = moh(x, mask=m[:, :1], impl="routed")
    assert torch.allclose(one_head_mask, moh(x, mask=m[:, :1]), atol=1e-12)


def test_routed_path_when_no_token_uses_a_routed_head():
    moh = _moh(2, 1)
    x = torch.randn(1, 5, D, dtype=torch.double)
    gates = torch.zeros(1, 5, H, dtype=torch.double)
    gates[..., :2] = torch.rand(1, 5, 2, dtype=torch.double) + 0.5
    assert torch.allclose(moh(x, gates=gates, impl="routed"), moh(x, gates=gates), atol=1e-12)
    # and with every gate zero the output is the projection's bias alone
    zero = torch.zeros(1, 5, H, dtype=torch.double)
    assert torch.allclose(moh(x, gates=zero, impl="routed"), moh.proj.bias.expand(1, 5, D))


def test_routed_path_dropout_only_in_training():
    moh = _moh(1, 2, dropout=0.5)
    x = torch.randn(1, 6, D, dtype=torch.double)
    moh.eval()
    assert torch.allclose(moh(x, impl="routed"), moh(x), atol=1e-12)
    moh.train()
    torch.manual_seed(0)
    a = moh(x, impl="routed")
    torch.manual_seed(1)
    b = moh(x, impl="routed")
    assert not torch.allclose(a, b)


def test_balance_loss_of_one_token():
    probs, topk = torch.tensor([[0.7, 0.2, 0.1]]), torch.tensor([[0]])
    assert torch.allclose(load_balance_loss(probs, topk, 3), torch.tensor(3 * 0.7))


def test_active_fraction_leaves_padding_out():
    # padded tokens scaled up so far that one shared softmax gate underflows to exactly 0 there
    moh = _moh(2, 1)
    x = torch.randn(1, 6, D, dtype=torch.double)
    x[0, 4:] *= 1e4
    tok = torch.tensor([[True] * 4 + [False] * 2])
    assert (moh.route(x).gates[0, 4:] == 0).sum() > 2            # the padded rows have fewer active heads
    assert float(moh.route(x, tok).active_fraction) == pytest.approx(3 / 4)
    # forward derives the token mask from a (B, N) key padding mask: same balance loss and fraction
    _, r = moh(x, key_padding_mask=tok, return_routing=True)
    want = moh.route(x, tok)
    assert torch.allclose(r.balance_loss, want.balance_loss) and float(r.active_fraction) == pytest.approx(3 / 4)
    assert not torch.allclose(moh.route(x).balance_loss, want.balance_loss)


def test_constructor_passes_its_choices_to_the_layer():
    from graphattn.attention.normalizers import SigmoidGate
    from graphattn.attention.scores import AdditiveScore
    m = MoHAttention(D, H, 1, 3, head_dim=3, score="additive", normalizer="sigmoid", impl="routed")
    assert m.top_k == 3 and m.routed_heads == 3 and m.impl == "routed"        # top_k may equal Hr
    assert isinstance(m.attn.score, AdditiveScore) and isinstance(m.attn.normalizer, SigmoidGate)
    assert m.attn.out_dim == 12 and m.attn.head_dim == 3


def test_routed_path_uses_the_scores_own_scale():
    from graphattn.attention.scores import DotProductScore
    torch.manual_seed(0)
    moh = MoHAttention(D, H, 1, 2, score=DotProductScore(D, D, H, 4, scale=0.9), router_std=1.0).double()
    x = torch.randn(2, 7, D, dtype=torch.double)
    assert torch.allclose(moh(x, impl="routed"), moh(x), atol=1e-12)
    m = neighborhood_mask(7, 3)
    assert torch.allclose(moh(x, mask=m, impl="routed"), moh(x, mask=m), atol=1e-12)


def test_routed_impl_takes_the_fast_path_and_dense_does_not(monkeypatch):
    moh = _moh(2, 1)
    x = torch.randn(1, 5, D, dtype=torch.double)
    calls = []
    real = moh._routed
    monkeypatch.setattr(moh, "_routed", lambda *a: calls.append(1) or real(*a))
    moh(x)
    assert calls == []
    moh(x, impl="routed")
    assert calls == [1]
    routed = _moh(2, 1, impl="routed")
    monkeypatch.setattr(routed, "_routed", lambda *a: calls.append(2) or real(*a))
    routed(x)
    assert calls == [1, 2]


def test_routed_path_with_gates_exactly_one():
    # shared_heads = 0, top_k = 1: the chosen routed head's gate is exactly 1.0
    moh = _moh(0, 1)
    x = torch.randn(2, 6, D, dtype=torch.double)
    assert (moh.route(x).gates == 1).any()
    assert torch.allclose(moh(x, impl="routed"), moh(x), atol=1e-12)


@pytest.mark.parametrize("heads,shared,top_k,n", [(4, 2, 1, 1), (2, 1, 1, 5)])
def test_routed_path_per_head_mask_shapes(heads, shared, top_k, n):
    torch.manual_seed(0)
    moh = MoHAttention(8, heads, shared, top_k, router_std=1.0).double()
    x = torch.randn(2, n, 8, dtype=torch.double)
    m = torch.rand(2, heads, n, n, generator=torch.Generator().manual_seed(4)) > 0.3
    m[..., 0] = True                                   # every query sees key 0
    assert torch.allclose(moh(x, mask=m, impl="routed"), moh(x, mask=m), atol=1e-12)


def test_shared_and_routed_gates_with_two_shared_heads():
    moh = _moh(2, 1)                                   # Hs = 2: the shared softmax is not identically 1
    x = torch.randn(1, 6, D, dtype=torch.double)
    g = moh.route(x).gates
    shared = torch.softmax(x @ moh.shared_router.weight.T, -1) * 2
    a = 2 * torch.softmax(x @ moh.mix.weight.T, -1)
    assert torch.allclose(g[..., :2], a[..., :1] * shared, atol=1e-12)
    assert not torch.allclose(shared, torch.ones_like(shared), atol=1e-3)
