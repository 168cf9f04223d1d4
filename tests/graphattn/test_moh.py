import pytest
import torch

from graphattn.attention import GraphAttention
from graphattn.attention.moh import MoHAttention, load_balance_loss
from graphattn.ops import causal_mask, mask_to_edge_index, neighborhood_mask

D, H = 16, 4


def _moh(shared=2, top_k=1, **kw):
    torch.manual_seed(0)
    return MoHAttention(D, H, shared, top_k, **kw).double()


def _mha_twin(moh):
    """A plain GraphAttention with MoH's q/k/v and output projection."""
    mha = GraphAttention(D, D, H, score="dot", update="project").double()
    mha.score.load_state_dict(moh.attn.score.state_dict())
    mha.message.load_state_dict(moh.attn.message.state_dict())
    mha.update.proj.load_state_dict(moh.proj.state_dict())
    return mha


@pytest.mark.parametrize("mask", [None, "causal"])
def test_all_gates_one_is_multi_head_attention_exactly(mask):
    moh = _moh()
    mha = _mha_twin(moh)
    x = torch.randn(2, 7, D, dtype=torch.double)
    m = causal_mask(7) if mask else None
    ones = torch.ones(2, 7, H, dtype=torch.double)
    assert torch.equal(moh(x, mask=m, gates=ones), mha(x, mask=m))
    # sparse path too
    ei = mask_to_edge_index((m if m is not None else torch.ones(7, 7, dtype=torch.bool)).expand(2, 7, 7))
    xs = x.reshape(14, D)
    assert torch.equal(moh(xs, ei, gates=torch.ones(14, H, dtype=torch.double)), mha(xs, ei))


@pytest.mark.parametrize("shared,top_k", [(2, 1), (0, 2), (4, 0), (1, 2)])
def test_gates_near_one_at_init(shared, top_k):
    moh = _moh(shared, top_k)
    x = torch.randn(3, 10, D, dtype=torch.double)
    _, routing = moh(x, return_routing=True)
    g = routing.gates
    active = g != 0
    assert torch.allclose(routing.active_fraction, torch.tensor(moh.expected_active_fraction, dtype=torch.double))
    assert (active.sum(-1) == moh.shared_heads + moh.top_k).all()
    assert ((g[active] - 1).abs() < 0.3).all()
    # shared heads are always on, exactly top_k routed heads are on
    assert active[..., :moh.shared_heads].all()


def test_balance_loss_uniform_routing_equals_k():
    hr, k = 4, 2
    # 4 tokens, uniform probabilities, top-2 sets cycling so that every head is chosen by half of the tokens
    probs = torch.full((4, hr), 1 / hr)
    topk = torch.tensor([[0, 1], [2, 3], [0, 2], [1, 3]])
    assert torch.allclose(load_balance_loss(probs, topk, hr), torch.tensor(float(k)))
    # collapsed routing (everyone picks heads 0, 1 with most of the mass) costs more
    probs_c = torch.tensor([[0.45, 0.45, 0.05, 0.05]]).expand(4, hr)
    topk_c = torch.tensor([[0, 1]]).expand(4, 2)
    assert float(load_balance_loss(probs_c, topk_c, hr)) > k


@pytest.mark.parametrize("shared,top_k", [(2, 1), (0, 2), (4, 0)])
@pytest.mark.parametrize("mask", ["none", "window", "padding"])
def test_routed_fast_path_equals_dense(shared, top_k, mask):
    moh = _moh(shared, top_k, router_std=1.0)   # strong routing so tokens pick different heads
    x = torch.randn(2, 12, D, dtype=torch.double)
    kw = {}
    if mask == "window":
        kw["mask"] = neighborhood_mask(12, 5, 2)
    elif mask == "padding":
        kpm = torch.ones(2, 12, dtype=torch.bool)
        kpm[1, 9:] = False
        kw["key_padding_mask"] = kpm
    xd, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    dense = moh(xd, impl="dense", **kw)
    routed = moh(xr, impl="routed", **kw)
    assert torch.allclose(dense, routed, atol=1e-12)
    gd = torch.autograd.grad(dense.sum(), [xd] + list(moh.parameters()), allow_unused=True)
    gr = torch.autograd.grad(routed.sum(), [xr] + list(moh.parameters()), allow_unused=True)
    for a, b in zip(gd, gr):
        assert (a is None and b is None) or torch.allclose(a, b, atol=1e-12)


def test_any_score_and_sparse_equals_dense():
    torch.manual_seed(1)
    moh = MoHAttention(D, H, 2, 1, score="additive", router_std=1.0).double()
    x = torch.randn(2, 6, D, dtype=torch.double)
    m = neighborhood_mask(6, 3)
    dense = moh(x, mask=m)
    routed = moh(x, mask=m, impl="routed")
    sparse = moh(x.reshape(12, D), mask_to_edge_index(m.expand(2, 6, 6))).reshape(2, 6, D)
    assert torch.allclose(dense, routed, atol=1e-12)
    assert torch.allclose(dense, sparse, atol=1e-12)


def test_unselected_head_does_not_matter():
    moh = _moh(2, 1, router_std=1.0)
    x = torch.randn(1, 8, D, dtype=torch.double)
    out, routing = moh(x, return_routing=True)
    assert (routing.gates == 0).any()
    # changing a routed head's value weights only changes tokens routed to it
    head = 2
    with torch.no_grad():
        moh.attn.message.v.weight[head * 4:(head + 1) * 4] += 1.0
    out2 = moh(x)
    untouched = routing.gates[0, :, head] == 0
    assert torch.allclose(out[0, untouched], out2[0, untouched])
    assert not torch.allclose(out[0, ~untouched], out2[0, ~untouched])


def test_bad_arguments():
    with pytest.raises(ValueError, match="top_k"):
        MoHAttention(D, H, 2, 3)
    with pytest.raises(ValueError, match="shared_heads"):
        MoHAttention(D, H, 5, 0)
    moh = MoHAttention(D, H, 2, 1)
    with pytest.raises(ValueError, match="gates"):
        moh(torch.randn(1, 3, D), gates=torch.ones(1, 3, 2))
