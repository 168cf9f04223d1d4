"""Mixer equations of sequence/deconstruct/mixers.py against hand-written references (float64)."""
import math

import pytest
import torch
import torch.nn.functional as F

from sequence.deconstruct.mixers import (DecoderAttention, RoPEDotScore, SelfGatedKeyScore, TaylorNormalizer, rotary,
                                         running_softmax_average, taylor, taylor_features, taylor_linear_attention)

torch.manual_seed(0)


def _causal(n):
    return torch.ones(n, n, dtype=torch.bool).tril()


def test_taylor_features_reproduce_the_polynomial():
    q, k = torch.randn(5, 8, dtype=torch.float64), torch.randn(6, 8, dtype=torch.float64)
    got = taylor_features(q) @ taylor_features(k).T
    assert torch.allclose(got, taylor(q @ k.T / math.sqrt(8)), atol=1e-12)


def test_linear_taylor_attention_equals_quadratic_form():
    q, k = torch.randn(2, 3, 7, 4, dtype=torch.float64), torch.randn(2, 3, 7, 4, dtype=torch.float64)
    v = torch.randn(2, 3, 7, 5, dtype=torch.float64)
    ref = torch.empty_like(v[..., :1].expand(-1, -1, -1, 5)).clone()
    for i in range(7):                                     # textbook loop over receivers
        s = (q[:, :, i:i + 1] * k[:, :, : i + 1]).sum(-1) / 2.0      # (B, H, i + 1)
        w = 1 + s + s * s / 2
        ref[:, :, i] = (w.unsqueeze(-1) * v[:, :, : i + 1]).sum(2) / w.sum(-1, keepdim=True)
    assert torch.allclose(taylor_linear_attention(q, k, v), ref, atol=1e-12)


def test_taylor_normalizer_hides_missing_edges():
    s = torch.tensor([[[[0.5, -3.0], [1.0, 2.0]]]], dtype=torch.float64)
    w = TaylorNormalizer().dense(s, _causal(2))
    assert torch.allclose(w, torch.tensor([[[[1.0, 0.0], [2.5 / 7.5, 5.0 / 7.5]]]], dtype=torch.float64))


@pytest.mark.parametrize("linear", [False, True])
def test_approximate_layer_paths_agree(linear):
    layer = DecoderAttention(12, 12, 2, 6, score=RoPEDotScore(12, 12, 2, 6), normalizer=TaylorNormalizer(),
                             bias=False, linear=linear).double()
    x = torch.randn(3, 9, 12, dtype=torch.float64)
    fast = layer(x, _causal(9))
    slow, weights = layer(x, _causal(9), return_attention=True)
    assert weights is not None and torch.allclose(fast, slow, atol=1e-12)


def test_rotary_depends_on_relative_position_only():
    q, k = torch.randn(1, 1, 1, 8, dtype=torch.float64), torch.randn(1, 1, 1, 8, dtype=torch.float64)
    seq_q, seq_k = q.expand(1, 10, 1, 8), k.expand(1, 10, 1, 8)
    rq, rk = rotary(seq_q)[0, :, 0], rotary(seq_k)[0, :, 0]
    assert torch.allclose(rq.norm(dim=-1), q.norm().expand(10))
    assert torch.allclose(rq[5] @ rk[3], rq[7] @ rk[5]) and not torch.allclose(rq[5] @ rk[3], rq[5] @ rk[4])
    with pytest.raises(ValueError, match="even head width"):
        rotary(torch.randn(1, 4, 1, 5))


def test_standard_layer_is_causal_softmax_of_rope_scores():
    layer = DecoderAttention(8, 8, 2, 4, score=RoPEDotScore(8, 8, 2, 4), normalizer="softmax", bias=False).double()
    x = torch.randn(2, 6, 8, dtype=torch.float64)
    q = rotary(layer.score.q(x).unflatten(-1, (2, 4))).transpose(1, 2)
    k = rotary(layer.score.k(x).unflatten(-1, (2, 4))).transpose(1, 2)
    v = layer.message.v(x).unflatten(-1, (2, 4)).transpose(1, 2)
    a = (q @ k.transpose(-1, -2) / 2.0).masked_fill(~_causal(6), -math.inf).softmax(-1)
    ref = layer.update.proj((a @ v).transpose(1, 2).flatten(-2))
    out, w = layer(x, _causal(6), return_attention=True)
    assert torch.allclose(w, a, atol=1e-12)
    assert torch.allclose(layer(x, _causal(6)), out, atol=1e-12)          # the SDPA path gives the same
    assert torch.allclose(out, ref, atol=1e-12)


def test_nonapprox_equals_the_recurrent_running_average():
    score = SelfGatedKeyScore(8, 2, 4)
    layer = DecoderAttention(8, 8, 2, 4, score=score, normalizer="softmax", update="none", bias=False).double()
    x = torch.randn(2, 7, 8, dtype=torch.float64)
    s = (F.silu(score.q(x)).unflatten(-1, (2, 4)) * score.k(x).unflatten(-1, (2, 4))).sum(-1) / 2.0   # (B, N, H)
    v = layer.message.v(x).unflatten(-1, (2, 4)).transpose(1, 2)                                    # (B, H, N, Dv)
    ref = running_softmax_average(s.transpose(1, 2), v).transpose(1, 2).flatten(-2)
    out, w = layer(x, _causal(7), return_attention=True)
    assert torch.allclose(out, ref, atol=1e-12)
    assert torch.allclose(w[:, :, 3, :3], w[:, :, 6, :3] * w[:, :, 3, :3].sum(-1, keepdim=True) / w[:, :, 6, :3].sum(-1, keepdim=True))


def test_running_average_is_stable_for_huge_scores():
    s = torch.tensor([[[0.0, 5000.0, -5000.0, 4999.0]]], dtype=torch.float64)
    v = torch.arange(4, dtype=torch.float64).view(1, 1, 4, 1)
    out = running_softmax_average(s, v)
    assert torch.isfinite(out).all()
    expect = [(torch.softmax(s[0, 0, : i + 1], 0) * v[0, 0, : i + 1, 0]).sum() for i in range(4)]
    assert torch.allclose(out[0, 0, :, 0], torch.stack(expect))


def test_qk_stream_shape_is_checked():
    layer = DecoderAttention(8, 8, 2, 4, score=RoPEDotScore(8, 8, 2, 4), bias=False)
    with pytest.raises(ValueError, match="qk must be"):
        layer(torch.randn(2, 5, 8), _causal(5), qk=torch.randn(3, 5, 8))
    with pytest.raises(ValueError, match=r"\(B, N, D\)"):
        layer(torch.randn(5, 8), _causal(5))


def test_taylor_normalizer_sparse_path_equals_dense():
    from graphattn.attention import GraphAttention
    layer = GraphAttention(8, 8, 2, 4, score="dot", normalizer=TaylorNormalizer(), bias=False).double()
    x = torch.randn(1, 5, 8, dtype=torch.float64)
    dst, src = _causal(5).nonzero(as_tuple=True)
    sparse = layer(x[0], torch.stack([src, dst]))
    assert torch.allclose(layer(x, mask=_causal(5))[0], sparse, atol=1e-12)
