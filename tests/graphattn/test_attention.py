import pytest
import torch

from graphattn.attention import GraphAttention
from graphattn.interpret import ablate_heads, capture_attention, interpolate_heads, replace_heads
from graphattn.ops import causal_mask, complete_mask, mask_to_edge_index, neighborhood_mask

B, D = 2, 16

MASKS = {
    "complete": lambda: complete_mask(12),
    "causal": lambda: causal_mask(12),
    "window1d": lambda: neighborhood_mask(12, 5),
    "strided_dilated1d": lambda: neighborhood_mask(12, 3, stride=2, dilation=2),
    "causal_window1d": lambda: neighborhood_mask(12, 4, stride=2, causal=True),
    "window2d": lambda: neighborhood_mask((3, 4), (3, 2)),
    "strided_dilated2d": lambda: neighborhood_mask((4, 6), (2, 3), stride=(2, 1), dilation=(1, 2)),
}


def _layer(score, normalizer, heads=2):
    torch.manual_seed(0)
    return GraphAttention(D, D, heads=heads, score=score, normalizer=normalizer).double()


def _both_paths(layer, mask, force_explicit=False):
    n = mask.shape[0]
    x = torch.randn(B, n, D, dtype=torch.double, generator=torch.Generator().manual_seed(1))
    x_dense = x.clone().requires_grad_()
    x_sparse = x.clone().requires_grad_()
    if force_explicit:
        out_d, _ = layer(x_dense, mask=mask, return_attention=True)
    else:
        out_d = layer(x_dense, mask=mask)
    edge_index = mask_to_edge_index(mask.expand(B, n, n))
    out_s = layer(x_sparse.reshape(B * n, D), edge_index).reshape(B, n, -1)
    grad_out = torch.randn_like(out_d)
    g_params_d = torch.autograd.grad((out_d * grad_out).sum(), [x_dense] + list(layer.parameters()))
    g_params_s = torch.autograd.grad((out_s * grad_out).sum(), [x_sparse] + list(layer.parameters()))
    return out_d, out_s, g_params_d, g_params_s


@pytest.mark.parametrize("graph", sorted(MASKS))
@pytest.mark.parametrize("score,normalizer", [("dot", "dst_softmax"), ("dot", "src_softmax"), ("dot", "sigmoid"),
                                              ("additive", "dst_softmax"), ("additive", "src_softmax")])
def test_dense_equals_sparse(graph, score, normalizer):
    layer = _layer(score, normalizer)
    out_d, out_s, gd, gs = _both_paths(layer, MASKS[graph]())
    assert torch.allclose(out_d, out_s, atol=1e-10)
    for a, b in zip(gd, gs):
        assert torch.allclose(a, b, atol=1e-10)


@pytest.mark.parametrize("graph", ["complete", "causal", "window2d"])
def test_sdpa_fast_path_equals_explicit_dense(graph):
    layer = _layer("dot", "dst_softmax")
    x = torch.randn(B, MASKS[graph]().shape[0], D, dtype=torch.double)
    fast = layer(x, mask=MASKS[graph]())
    explicit, weights = layer(x, mask=MASKS[graph](), return_attention=True)
    assert torch.allclose(fast, explicit, atol=1e-10)
    assert torch.allclose(weights.weights.sum(-1), torch.ones(B, 2, x.shape[1], dtype=torch.double))


def test_key_padding_and_empty_rows():
    layer = _layer("dot", "dst_softmax")
    x = torch.randn(B, 6, D, dtype=torch.double)
    kp = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    out = layer(x, key_padding_mask=kp)
    # padded keys must not matter
    x2 = x.clone()
    x2[0, 3:] = 100.0
    assert torch.allclose(layer(x2, key_padding_mask=kp)[0, :3], out[0, :3])
    # a query with no key aggregates zeros on both paths (output = the projection's bias)
    mask = complete_mask(6).clone()
    mask[2] = False
    dense = layer(x, mask=mask)
    sparse = layer(x.reshape(-1, D), mask_to_edge_index(mask.expand(B, 6, 6))).reshape(B, 6, -1)
    assert torch.isfinite(dense).all()
    assert torch.allclose(dense, sparse, atol=1e-10)
    assert torch.allclose(dense[:, 2], layer.update.proj.bias.expand(B, -1))


def test_bipartite_cross_attention_paths_agree():
    torch.manual_seed(0)
    layer = GraphAttention(8, 12, heads=3, src_dim=5).double()
    xq = torch.randn(1, 4, 8, dtype=torch.double)
    xk = torch.randn(1, 7, 5, dtype=torch.double)
    dense = layer(xq, x_src=xk)
    edge_index = mask_to_edge_index(complete_mask(4, 7))
    sparse = layer(xq[0], edge_index, x_src=xk[0])
    assert torch.allclose(dense[0], sparse, atol=1e-10)


def test_attention_dropout_only_in_training():
    layer = GraphAttention(D, heads=2, dropout=0.5)
    x = torch.randn(1, 10, D)
    layer.eval()
    assert torch.equal(layer(x), layer(x))
    layer.train()
    _, w = layer(x, return_attention=True)
    assert (w.weights == 0).any()


def test_bad_inputs_have_clear_errors():
    layer = GraphAttention(D)
    with pytest.raises(ValueError, match="unknown score"):
        GraphAttention(D, score="dott")
    with pytest.raises(ValueError, match="outside"):
        layer(torch.randn(3, D), torch.tensor([[0], [5]]))
    with pytest.raises(ValueError, match="shape \\(B, N, D\\)"):
        layer(torch.randn(3, D))
    with pytest.raises(ValueError, match="no dense path"):
        GraphAttention(D, score="relational", num_relations=2, message="identity", update="none")(torch.randn(1, 3, D))


# ------------------------------------------------------------------------------------------- hooks

class TwoLayer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = GraphAttention(D, heads=4)
        self.b = GraphAttention(D, heads=4)

    def forward(self, x, edge_index=None):
        return self.b(self.a(x, edge_index), edge_index)


@pytest.mark.parametrize("sparse", [False, True])
def test_hooks_read_ablate_replace_interpolate(sparse):
    torch.manual_seed(0)
    model = TwoLayer()
    x = torch.randn(1, 6, D)
    ei = mask_to_edge_index(complete_mask(6)) if sparse else None
    inp = x[0] if sparse else x
    base = model(inp, ei)
    with capture_attention(model) as store:
        model(inp, ei)
    assert set(store) == {"a", "b"}
    w_a = store["a"][0]
    assert w_a.shape == ((36, 4) if sparse else (1, 4, 6, 6))
    # ablating a head changes the output; ablating via the value projection gives the same result
    with ablate_heads(model.a, [1]):
        ablated = model(inp, ei)
    assert not torch.allclose(ablated, base)
    with torch.no_grad():
        saved = model.a.message.v.weight[16 // 4:2 * 16 // 4].clone(), model.a.message.v.bias[4:8].clone()
        model.a.message.v.weight[4:8] = 0
        model.a.message.v.bias[4:8] = 0
        zeroed = model(inp, ei)
        model.a.message.v.weight[4:8], model.a.message.v.bias[4:8] = saved
    assert torch.allclose(ablated, zeroed, atol=1e-6)
    # replacing a head by its own weights changes nothing; interpolation with alpha=0 changes nothing
    with replace_heads(model.a, [0, 2], w_a):
        assert torch.allclose(model(inp, ei), base, atol=1e-6)
    with interpolate_heads(model.a, [3], "uniform", 0.0):
        assert torch.allclose(model(inp, ei), base, atol=1e-6)
    with interpolate_heads(model.a, [3], "uniform", 1.0):
        assert not torch.allclose(model(inp, ei), base)
    # hooks are removed on exit
    assert torch.allclose(model(inp, ei), base)
