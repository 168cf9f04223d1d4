"""Attention AT / iAT / RP perturbations (sequence/text/adversarial.py) against hand-written references."""
import math

import pytest
import torch

from graphattn.attention import AttentionInfo, GraphAttention
from graphattn.ops import mask_to_edge_index
from sequence.text.adversarial import (at_perturbation, check_mode, iat_perturbation, perturbed_loss,
                                       random_perturbation, tracked_scores)


def _dense(mask=None, heads=1):
    return AttentionInfo("dense", heads, mask=mask)


def test_at_is_the_normalised_gradient_on_a_hand_checked_case():
    # one head, one query, three keys; the third is padding
    grad = torch.tensor([[[[3.0, 4.0, 7.0]]], [[[0.0, -2.0, 0.0]]]])           # (B=2, H=1, 1, 3)
    mask = torch.tensor([[True, True, False], [True, True, True]])[:, None, None, :]
    r = at_perturbation(grad, _dense(mask), epsilon=2.0)
    expected = torch.tensor([[[[2 * 3 / 5, 2 * 4 / 5, 0.0]]], [[[0.0, -2.0, 0.0]]]])
    assert torch.allclose(r, expected)
    assert torch.equal(at_perturbation(torch.zeros(1, 1, 1, 3), _dense(), 1.0), torch.zeros(1, 1, 1, 3))


def test_at_is_the_gradient_of_the_model_loss_through_the_score_hook():
    torch.manual_seed(0)
    layer = GraphAttention(4, src_dim=4, heads=2, head_dim=3, score="additive", message="identity", update="none")
    q, x = torch.randn(2, 1, 4), torch.randn(2, 5, 4)
    pad = torch.tensor([[True] * 5, [True, True, True, False, False]])

    def loss(model, _):
        return model(q, x_src=x, key_padding_mask=pad).square().sum()

    with tracked_scores(layer) as slots:
        value = loss(layer, None)
    (g,) = torch.autograd.grad(value, [slots[0].delta])
    # reference: differentiate the same loss with respect to the raw scores, computed by hand
    q_, k_ = layer.score.project(q, x)
    s = layer.score.dense(q_.transpose(1, 2), k_.transpose(1, 2)).detach().requires_grad_()   # (2, 2, 1, 5)
    w = torch.softmax(s.masked_fill(~pad[:, None, None, :], -math.inf), -1)
    ref = torch.einsum("bhqm,bmd->bqhd", w, x).flatten(-2).square().sum()
    (g_ref,) = torch.autograd.grad(ref, s)
    assert torch.allclose(g, g_ref, atol=1e-6)
    assert g[1, :, :, 3:].abs().max() == 0                                      # padding gets no gradient
    r = at_perturbation(g, slots[0].info, 0.5)
    assert torch.allclose(r.flatten(1).norm(dim=1), torch.full((2,), 0.5))
    assert torch.allclose(r, 0.5 * g_ref / g_ref.flatten(1).norm(dim=1).view(2, 1, 1, 1), atol=1e-6)


def test_at_on_the_sparse_path_is_normalised_per_receiver():
    mask = torch.tensor([[True, True, False], [True, True, True]])
    edge_index = mask_to_edge_index(mask)                                       # receivers 0 and 1
    grad = torch.arange(1.0, 1.0 + 2 * edge_index.shape[1]).view(-1, 2)          # (E, H=2)
    r = at_perturbation(grad, AttentionInfo("sparse", 2, edge_index), 1.0)
    for node in (0, 1):
        rows = edge_index[1] == node
        assert torch.allclose(r[rows], grad[rows] / grad[rows].norm())


def _iat_reference(scores, grad, mask, eps):
    """Attention iAT written as loops over examples i, k and positions p (module docstring of adversarial.py)."""
    b, p = scores.shape
    out = torch.zeros_like(scores)
    for i in range(b):
        u = torch.zeros(p)
        for k in range(b):
            d = torch.tensor([(scores[k, t] - scores[i, t]) if mask[i, t] and mask[k, t] else 0.0 for t in range(p)])
            if d.norm() == 0:
                continue
            d = d / d.norm()
            alpha = sum(d[t] * grad[i, t] for t in range(p) if mask[i, t])
            u += alpha * d
        out[i] = eps * u / u.norm() if u.norm() > 0 else u
    return out


def test_iat_matches_the_hand_written_reference_and_raises_the_loss():
    g = torch.Generator().manual_seed(3)
    scores, grad = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    mask = torch.arange(6) < torch.tensor([6, 4, 5, 2])[:, None]
    r = iat_perturbation(scores[:, None, None, :], grad[:, None, None, :], _dense(mask[:, None, None, :]), 1.5)
    ref = _iat_reference(scores, grad, mask, 1.5)
    assert torch.allclose(r[:, 0, 0], ref, atol=1e-6)
    assert r[:, 0, 0][~mask].abs().max() == 0                                  # padding is never perturbed
    assert torch.allclose(r.flatten(1).norm(dim=1), torch.full((4,), 1.5))
    assert ((r[:, 0, 0] * grad).sum(1) > 0).all()                              # first order: the loss goes up


def test_iat_is_dense_only():
    edge_index = mask_to_edge_index(torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="needs the dense path"):
        iat_perturbation(torch.zeros(4, 1), torch.zeros(4, 1), AttentionInfo("sparse", 1, edge_index), 1.0)


def test_random_perturbation_has_norm_eps_on_real_entries_only():
    mask = (torch.arange(5) < torch.tensor([5, 2, 3])[:, None])[:, None, None, :]
    r = random_perturbation(torch.zeros(3, 2, 1, 5), _dense(mask), 0.7, torch.Generator().manual_seed(0))
    assert torch.allclose(r.flatten(1).norm(dim=1), torch.full((3,), 0.7))
    assert r.masked_select(~mask.expand_as(r)).abs().max() == 0


@pytest.mark.parametrize("mode", ["at", "iat"])
def test_perturbed_loss_adv_part_exceeds_clean_for_a_small_step(mode):
    torch.manual_seed(1)
    layer = GraphAttention(4, src_dim=4, heads=1, head_dim=4, score="dot", message="identity", update="none")
    q, x, y = torch.randn(6, 1, 4), torch.randn(6, 7, 4), torch.randn(6, 4)

    def loss(model, _):
        return (model(q, x_src=x)[:, 0] - y).square().mean()

    total, parts = perturbed_loss(layer, None, loss, mode, epsilon=0.05, lam=1.0)
    assert parts["adv_loss"] > parts["clean_loss"]
    assert math.isclose(total.item(), parts["clean_loss"] + parts["adv_loss"], rel_tol=1e-6)


def test_unknown_mode_is_a_clear_error():
    with pytest.raises(ValueError, match="at_mode: unknown adversarial-training mode 'fgsm'; expected one of vanilla, rp"):
        check_mode("fgsm")
