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
