import pytest
import torch
import torch.nn.functional as F

from graphattn.attention.linear import LinearAttention, linear_attention_star

IMPLS = ("fast", "star", "dense", "sparse")


@pytest.mark.parametrize("value,out_proj,heads", [("identity", False, 2), ("project", True, 4), ("identity", True, 1)])
def test_star_graph_equals_dense_kernel_matrix(value, out_proj, heads):
    torch.manual_seed(0)
    layer = LinearAttention(16, heads, value=value, out_proj=out_proj).double()
    x = torch.randn(3, 11, 16, dtype=torch.double)
    g_out = torch.randn_like(layer(x, impl="dense"))
    ref, ref_grads = None, None
    for impl in IMPLS:
        xi = x.clone().requires_grad_()
        out = layer(xi, impl=impl)
        grads = torch.autograd.grad((out * g_out).sum(), [xi] + list(layer.parameters()))
        if ref is None:
            ref, ref_grads = out, grads
            continue
        assert torch.allclose(out, ref, atol=1e-10), impl
        for a, b in zip(grads, ref_grads):
            assert torch.allclose(a, b, atol=1e-10), impl


def test_hand_computed_formula():
    """CARE's formula written out: phi(Q) [(1/N) phi(K)^T V] / (phi(Q) (1/N) sum phi(K) + 1e-6), v = x."""
    torch.manual_seed(1)
    layer = LinearAttention(8, 2).double()
    x = torch.randn(1, 5, 8, dtype=torch.double)
    q = layer.attn.score.q(x)[0].view(5, 2, 4).transpose(0, 1)     # (H, N, Dh)
    k = layer.attn.score.k(x)[0].view(5, 2, 4).transpose(0, 1)
    v = x[0].view(5, 2, 4).transpose(0, 1)
    fq, fk = F.elu(q) + 1, F.elu(k) + 1
    num = fq @ (fk.transpose(1, 2) @ v / 5)
    den = fq @ fk.mean(1, keepdim=True).transpose(1, 2) + 1e-6
    expected = (num / den).transpose(0, 1).reshape(1, 5, 8)
    assert torch.allclose(layer(x), expected, atol=1e-12)
    # weights are non-negative and sum to (almost) one over keys
    _, att = layer.attn(x, return_attention=True)
    assert (att.weights >= 0).all()
    assert torch.allclose(att.weights.sum(-1), torch.ones(1, 2, 5, dtype=torch.double), atol=1e-5)


def test_variable_length_graphs_through_virtual_nodes():
    torch.manual_seed(2)
    layer = LinearAttention(8, 2).double()
    lengths = [3, 7, 1]
    xs = [torch.randn(n, 8, dtype=torch.double) for n in lengths]
    flat = torch.cat(xs)
    batch = torch.repeat_interleave(torch.arange(3), torch.tensor(lengths))
    star = layer(flat, batch)
    sparse = layer(flat, batch, impl="sparse")
    separate = torch.cat([layer(x.unsqueeze(0), impl="dense")[0] for x in xs])
    assert torch.allclose(star, separate, atol=1e-10)
    assert torch.allclose(sparse, separate, atol=1e-10)


def test_star_function_is_linear_in_tokens():
    # doubling every token (same content twice) leaves the output unchanged: the 1/N mean state
    q, k, v = (torch.randn(6, 1, 4, dtype=torch.double) for _ in range(3))
    once = linear_attention_star(q, k, v)
    twice = linear_attention_star(torch.cat([q, q]), torch.cat([k, k]), torch.cat([v, v]))
    assert torch.allclose(twice[:6], once, atol=1e-12)


def test_bad_arguments():
    with pytest.raises(ValueError, match="impl"):
        LinearAttention(8, 2, impl="quadratic")
    with pytest.raises(ValueError, match="divisible"):
        LinearAttention(9, 2)


def test_kernel_normaliser_on_a_masked_graph_dense_equals_sparse():
    from graphattn.attention import GraphAttention
    from graphattn.attention.linear import HeadSplitMessage, KernelNormalizer, KernelScore
    from graphattn.ops import mask_to_edge_index, neighborhood_mask
    torch.manual_seed(3)
    layer = GraphAttention(8, 8, 2, 4, score=KernelScore(8, 8, 2, 4), normalizer=KernelNormalizer(),
                           message=HeadSplitMessage(8, 2), update="none").double()
    mask = neighborhood_mask((3, 4), 3, causal=True)
    x = torch.randn(2, 12, 8, dtype=torch.double)
    dense = layer(x, mask=mask)
    sparse = layer(x.reshape(24, 8), mask_to_edge_index(mask.expand(2, 12, 12))).reshape(2, 12, 8)
    assert torch.allclose(dense, sparse, atol=1e-12)


# ---------------------------------------------------------------------------------- mutation-testing gaps (#22)

def _star_reference(q, k, v, batch, num_graphs, eps):
    """The two passes written as loops over graphs."""
    out = torch.zeros(q.shape[0], q.shape[1], v.shape[-1], dtype=q.dtype)
    fq, fk = F.elu(q) + 1, F.elu(k) + 1
    for g in range(num_graphs):
        rows = batch == g
        if not rows.any():
            continue
        state = torch.einsum("nhd,nhe->hde", fk[rows], v[rows]) / rows.sum()
        norm = fk[rows].mean(0)
        out[rows] = torch.einsum("nhd,hde->nhe", fq[rows], state) / ((fq[rows] * norm).sum(-1, keepdim=True) + eps)
    return out


def test_star_default_eps_and_single_token_graphs_with_a_large_eps():
    g = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(5, 2, 3, dtype=torch.double, generator=g) for _ in range(3))
    batch = torch.tensor([0, 0, 1, 2, 2])
    # default eps 1e-6: visible once the scores are tiny (phi close to 0 for very negative q)
    small_q = q - 30
    assert torch.allclose(linear_attention_star(small_q, k, v),
                          _star_reference(small_q, k, v, torch.zeros(5, dtype=torch.long), 1, 1e-6), rtol=1e-9)
    # graph 1 holds one token: its mean divides by 1 (a count clamped higher would change the eps share)
    assert torch.allclose(linear_attention_star(q, k, v, batch, eps=1.0), _star_reference(q, k, v, batch, 3, 1.0),
                          rtol=1e-12)


def test_star_with_trailing_empty_graphs_and_no_tokens():
    g = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(4, 1, 2, dtype=torch.double, generator=g) for _ in range(3))
    batch = torch.tensor([0, 0, 1, 1])
    out = linear_attention_star(q, k, v, batch, num_graphs=4)           # graphs 2 and 3 have no token
    assert torch.allclose(out, _star_reference(q, k, v, batch, 2, 1e-6), rtol=1e-12)
    empty = torch.zeros(0, 1, 2, dtype=torch.double)
    assert linear_attention_star(empty, empty, empty, torch.zeros(0, dtype=torch.long)).shape == (0, 1, 2)


def test_kernel_normaliser_edge_exact_eps_and_receivers_without_edges():
    from graphattn.attention.linear import KernelNormalizer
    scores = torch.tensor([[1e-3], [2e-3], [4e-3]], dtype=torch.double)
    ei = torch.tensor([[0, 1, 2], [0, 0, 1]])
    w = KernelNormalizer(eps=0.1).edge(scores, ei, num_dst=4, num_src=3)   # receivers 2, 3 get nothing
    expected = torch.tensor([[1e-3 / (3e-3 + 2 * 0.1)], [2e-3 / (3e-3 + 2 * 0.1)], [4e-3 / (4e-3 + 0.1)]],
                            dtype=torch.double)
    assert torch.allclose(w, expected, rtol=1e-14, atol=0)
    assert KernelNormalizer().eps == 1e-6 and isinstance(KernelNormalizer(1).eps, float)


def _hooked(layer):
    calls = []
    layer.attn.register_attention_hook(lambda m, w, info: calls.append(info.path))
    return calls


def test_impl_chosen_by_the_constructor_or_the_call():
    """Every impl computes the same function; the attention hooks show which path ran (only the layer's dense
    and sparse paths form weights)."""
    torch.manual_seed(6)
    x = torch.randn(1, 4, 8)
    layer = LinearAttention(8, 2, impl="dense")
    calls = _hooked(layer)
    layer(x)
    assert calls == ["dense"]
    layer(x, impl="fast")
    layer(x, impl="star")
    assert calls == ["dense"]
    layer(x, impl="sparse")
    assert calls == ["dense", "sparse"]
    fast = LinearAttention(8, 2)
    calls = _hooked(fast)
    fast(x)
    assert calls == []
    fast(x, impl="dense")
    assert calls == ["dense"]
    # flat tokens: "sparse" stays sparse, every other impl runs the star passes
    flat = torch.randn(5, 8)
    fast(flat, impl="sparse")
    assert calls == ["dense", "sparse"]
    fast(flat, impl="dense")
    fast(flat)
    assert calls == ["dense", "sparse"]
    sparse = LinearAttention(8, 2, impl="sparse")
    calls = _hooked(sparse)
    sparse(flat)
    assert calls == ["sparse"]
    with pytest.raises(ValueError, match=r"^x must be \(B, N, D\) or \(N, D\), got \(1, 1, 4, 8\)$"):
        fast(x[None])
    with pytest.raises(ValueError, match=r"^value must be 'identity' or 'project', got 'v'$"):
        LinearAttention(8, 2, value="v")


def test_the_layers_eps_reaches_every_impl():
    torch.manual_seed(7)
    layer = LinearAttention(4, 1, eps=1.0).double()
    x = torch.randn(1, 3, 4, dtype=torch.double)
    dense = layer(x, impl="dense")
    for impl in ("fast", "star", "sparse"):
        assert torch.allclose(layer(x, impl=impl), dense, atol=1e-12), impl
    for impl in ("star", "sparse"):
        assert torch.allclose(layer(x[0], impl=impl), dense[0], atol=1e-12), impl


def test_constructor_defaults_and_choices():
    layer = LinearAttention(8, 2)
    assert layer.attn.score.q.bias is not None and layer.attn.score.k.bias is not None
    assert LinearAttention(8, 2, qk_bias=False).attn.score.q.bias is None
    assert LinearAttention(8, 2, impl="star").impl == "star"
    assert LinearAttention(8, 2, head_dim=3).attn.score.q.weight.shape == (6, 8)
    assert (layer.dim, layer.heads, layer.head_dim, layer.eps, layer.impl) == (8, 2, 4, 1e-6, "fast")


def test_one_head_by_default():
    assert LinearAttention(8).heads == 1


def test_kernel_normaliser_dense_counts_the_keys_of_each_query():
    """Without a mask every query has as many keys as the scores' last axis (2 queries over 3 keys here)."""
    from graphattn.attention.linear import KernelNormalizer
    scores = torch.tensor([[[1e-3, 2e-3, 3e-3], [4e-3, 5e-3, 6e-3]]], dtype=torch.double)
    w = KernelNormalizer(eps=0.1).dense(scores, None)
    expected = scores / (scores.sum(-1, keepdim=True) + 3 * 0.1)
    torch.testing.assert_close(w, expected, rtol=1e-14, atol=0)
    mask = torch.tensor([[[True, False, True], [True, True, True]]])
    w = KernelNormalizer(eps=0.1).dense(scores, mask)
    masked = scores.masked_fill(~mask, 0.0)
    torch.testing.assert_close(w, masked / (masked.sum(-1, keepdim=True) + torch.tensor([[[2.0], [3.0]]],
                                                                                         dtype=torch.double) * 0.1),
                               rtol=1e-14, atol=0)
