"""GraphAttention (graphattn/attention/layer.py): construction defaults, argument checks with their messages,
hooks' info and errors, returned weights, the SDPA path's dropout and empty rows."""
import pytest
import torch

from graphattn.attention import GraphAttention
from graphattn.attention.layer import AttentionInfo, AttentionWeights
from graphattn.attention.scores import AdditiveScore, DotProductScore, RelationalScore
from graphattn.ops import complete_mask, mask_to_edge_index


def _x(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.double)


def test_construction_defaults():
    layer = GraphAttention(6)
    assert (layer.in_dim, layer.out_dim, layer.heads, layer.head_dim) == (6, 6, 1, 6)
    assert isinstance(layer.score, DotProductScore) and layer.score.q.weight.shape == (6, 6)
    assert layer.score.k.weight.shape == (6, 6) and layer.score.q.bias is not None and layer.score.k.bias is not None
    assert layer.dropout == 0.0 and isinstance(layer.dropout, float)
    assert layer._attention_hooks == {} and layer._score_hooks == {} and not layer.has_hooks
    layer = GraphAttention(6, 8, heads=2, src_dim=5, dropout=1)
    assert (layer.out_dim, layer.head_dim) == (8, 4) and isinstance(layer.dropout, float)
    assert layer.score.q.weight.shape == (8, 6) and layer.score.k.weight.shape == (8, 5)
    assert layer.update.proj.weight.shape == (8, 8)
    layer = GraphAttention(6, 8, heads=3, head_dim=5, score="additive", bias=False)
    assert isinstance(layer.score, AdditiveScore) and layer.score.q.weight.shape == (15, 6)
    assert layer.score.q.bias is None and layer.update.proj.weight.shape == (8, 15)
    assert GraphAttention(6, bias=False).score.q.bias is None


def test_relational_score_by_name():
    layer = GraphAttention(6, score="relational", num_relations=3, relation_dim=4, heads=2, head_dim=3,
                           message="identity", update="none")
    assert isinstance(layer.score, RelationalScore)
    assert (layer.score.dim, layer.score.num_relations, layer.score.relation_dim, layer.score.heads) == (6, 3, 4, 2)
    with pytest.raises(ValueError, match=r"^score='relational' needs num_relations$"):
        GraphAttention(6, score="relational")


def test_construction_errors():
    with pytest.raises(ValueError, match=r"^out_dim \(7\) must be divisible by heads \(2\) unless head_dim is given$"):
        GraphAttention(7, heads=2)
    assert GraphAttention(7, heads=2, head_dim=3).head_dim == 3
    with pytest.raises(ValueError, match=r"^unknown score 'dott'; expected one of \['additive', 'dot', 'relational'\]$"):
        GraphAttention(4, score="dott")
    with pytest.raises(ValueError, match=r"^unknown message 'v'; expected one of \['identity', 'value'\]$"):
        GraphAttention(4, message="v")
    with pytest.raises(ValueError, match=r"^unknown update 'x'; expected one of \['bi', 'gcn', 'graphsage', 'none', "
                                         r"'project', 'residual'\]$"):
        GraphAttention(4, update="x")


def test_reset_parameters_redraws_score_message_and_update():
    torch.manual_seed(0)
    layer = GraphAttention(4, heads=2)
    before = {k: v.detach().clone() for k, v in layer.state_dict().items()}
    layer.reset_parameters()
    after = layer.state_dict()
    for key in ("score.q.weight", "score.k.weight", "message.v.weight", "update.proj.weight"):
        assert not torch.equal(before[key], after[key]), key


def test_sparse_edge_checks():
    layer = GraphAttention(4)
    x = torch.randn(3, 4)
    with pytest.raises(ValueError, match=r"^edge_index must have shape \(2, E\), got \(3, 1\)$"):
        layer(x, torch.zeros(3, 1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"^edge_index must have shape \(2, E\), got \(2,\)$"):
        layer(x, torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"^edge_index refers to nodes outside \[0, 3\) senders / \[0, 3\) receivers "
                                         r"\(got max src 3, max dst 0\)$"):
        layer(x, torch.tensor([[3], [0]]))
    with pytest.raises(ValueError, match=r"max src 0, max dst 3\)$"):
        layer(x, torch.tensor([[0], [3]]))
    with pytest.raises(ValueError, match="outside"):
        layer(x, torch.tensor([[-1, 1], [0, 1]]))
    with pytest.raises(ValueError, match=r"outside \[0, 5\) senders / \[0, 3\) receivers"):
        layer(x, torch.tensor([[5], [0]]), x_src=torch.randn(5, 4))
    # the largest valid ids are accepted
    assert layer(x, torch.tensor([[2, 0], [0, 2]])).shape == (3, 4)
    assert layer(x, torch.tensor([[4], [2]]), x_src=torch.randn(5, 4)).shape == (3, 4)
    with pytest.raises(ValueError, match=r"^edge_type must have shape \(2,\), got \(3,\)$"):
        layer(x, torch.tensor([[0, 1], [1, 2]]), edge_type=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"^pass either edge_index \(sparse path\) or a mask \(dense path\), not both$"):
        layer(x, torch.tensor([[0], [1]]), mask=complete_mask(3))
    with pytest.raises(ValueError, match="not both"):
        layer(x, torch.tensor([[0], [1]]), key_padding_mask=torch.ones(1, 3, dtype=torch.bool))


def test_no_edges_gives_the_update_of_zeros():
    layer = GraphAttention(4).double()
    x = _x(3, 4)
    out = layer(x, torch.zeros(2, 0, dtype=torch.long))
    assert torch.allclose(out, layer.update.proj.bias.expand(3, 4))


def test_dense_mask_checks():
    layer = GraphAttention(4)
    x = torch.randn(2, 3, 4)
    with pytest.raises(TypeError, match=r"^mask must be boolean \(True = may attend\), got torch.int64$"):
        layer(x, mask=torch.ones(3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"^mask must have 2, 3 or 4 dimensions, got shape \(1, 1, 1, 3, 3\)$"):
        layer(x, mask=torch.ones(1, 1, 1, 3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"mask must have 2, 3 or 4 dimensions, got shape \(3,\)"):
        layer(x, mask=torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"^key_padding_mask must be \(B, M\) with B=2, got \(1, 3\)$"):
        layer(x, key_padding_mask=torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"key_padding_mask must be \(B, M\) with B=2, got \(2, 1, 3\)"):
        layer(x, key_padding_mask=torch.ones(2, 1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"^the dense path takes x of shape \(B, N, D\), got \(1, 2, 3, 4\); pass "
                                         r"edge_index for node features of shape \(N, D\)$"):
        layer(torch.randn(1, 2, 3, 4))


def test_dense_masks_of_every_rank_and_integer_padding():
    torch.manual_seed(0)
    layer = GraphAttention(4, heads=2).double()
    x = _x(2, 3, 4)
    mask3 = torch.tensor([[[1, 0, 0], [1, 1, 0], [0, 1, 1]], [[1, 1, 1], [0, 1, 0], [1, 0, 1]]], dtype=torch.bool)
    out3, w3 = layer(x, mask=mask3, return_attention=True)
    out4, w4 = layer(x, mask=mask3[:, None], return_attention=True)
    assert torch.equal(out3, out4) and torch.equal(w3.weights, w4.weights)
    assert torch.equal(w3.weights == 0, ~mask3[:, None].expand(2, 2, 3, 3))
    out2, w2 = layer(x, mask=mask3[0], return_attention=True)
    assert torch.equal(w2.weights == 0, ~mask3[0].expand(2, 2, 3, 3))
    # an integer key_padding_mask is read as booleans and combined with the mask
    kp = torch.tensor([[1, 1, 0], [1, 0, 1]])
    _, wk = layer(x, mask=mask3, key_padding_mask=kp, return_attention=True)
    expected = mask3 & kp.bool()[:, None, :]
    assert torch.equal(wk.weights != 0, expected[:, None].expand(2, 2, 3, 3))
    assert torch.allclose(layer(x, mask=mask3, key_padding_mask=kp), layer(x, mask=expected))


def test_return_attention_on_both_paths():
    torch.manual_seed(0)
    layer = GraphAttention(4, heads=2).double()
    x = _x(1, 3, 4)
    out, w = layer(x, return_attention=True)
    assert isinstance(w, AttentionWeights) and w.edge_index is None and w.weights.shape == (1, 2, 3, 3)
    assert torch.allclose(out, layer(x))
    ei = mask_to_edge_index(complete_mask(3))
    out_s, ws = layer(x[0], ei, return_attention=True)
    assert ws.edge_index is ei and ws.weights.shape == (9, 2)
    assert torch.allclose(out_s, out[0])
    assert torch.allclose(ws.weights.reshape(3, 3, 2).permute(2, 0, 1), w.weights[0])
    assert torch.equal(layer(x[0], ei), out_s)


def test_hooks_receive_the_info_and_can_be_removed():
    torch.manual_seed(0)
    layer = GraphAttention(4, heads=2).double()
    seen = []
    h1 = layer.register_attention_hook(lambda m, w, info: seen.append(("attn", m, w.shape, info)))
    h2 = layer.register_score_hook(lambda m, s, info: seen.append(("score", m, s.shape, info)))
    assert layer.has_hooks
    ei = torch.tensor([[0, 1, 2], [1, 2, 2]])
    et = torch.tensor([0, 1, 0])
    layer(_x(3, 4), ei, edge_type=et)
    (k1, m1, s1, i1), (k2, m2, s2, i2) = seen[1], seen[0]
    assert (k1, k2) == ("attn", "score") and m1 is layer and m2 is layer
    assert s1 == s2 == (3, 2)
    for info in (i1, i2):
        assert isinstance(info, AttentionInfo)
        assert (info.path, info.heads) == ("sparse", 2) and info.edge_index is ei and info.edge_type is et
        assert info.mask is None
    seen.clear()
    mask = complete_mask(3)
    layer(_x(1, 3, 4), mask=mask)
    (k1, _, s1, i1), (k2, _, s2, i2) = seen[1], seen[0]
    assert (k1, k2) == ("attn", "score") and s1 == s2 == (1, 2, 3, 3)
    assert (i1.path, i1.heads, i1.edge_index, i1.edge_type, i1.mask) == ("dense", 2, None, None, None)
    assert (i2.path, i2.heads, i2.edge_index, i2.edge_type) == ("dense", 2, None, None)
    assert torch.equal(i2.mask, mask[None, None])
    h1.remove()
    assert layer.has_hooks
    h2.remove()
    assert not layer.has_hooks
    seen.clear()
    layer(_x(1, 3, 4))
    assert seen == []


def test_hooks_run_in_order_and_replacements_chain():
    torch.manual_seed(0)
    layer = GraphAttention(4, heads=1).double()
    x = _x(1, 3, 4)
    order = []
    layer.register_attention_hook(lambda m, w, i: order.append(1) or torch.full_like(w, 1 / 3))
    layer.register_attention_hook(lambda m, w, i: order.append(2) or (w if torch.allclose(w, torch.full_like(w, 1 / 3))
                                                                      else None))
    layer.register_attention_hook(lambda m, w, i: None)
    _, w = layer(x, return_attention=True)
    assert order == [1, 2]
    assert torch.allclose(w.weights, torch.full_like(w.weights, 1 / 3))


def test_a_hook_returning_the_wrong_shape_is_a_clear_error():
    layer = GraphAttention(4, heads=2)
    layer.register_attention_hook(lambda m, w, info: w[..., :1])
    with pytest.raises(ValueError, match=r"^attention hook returned shape \(1, 2, 3, 1\), expected \(1, 2, 3, 3\)$"):
        layer(torch.randn(1, 3, 4))
    with pytest.raises(ValueError, match=r"^attention hook returned shape \(2, 1\), expected \(2, 2\)$"):
        layer(torch.randn(3, 4), torch.tensor([[0, 1], [1, 2]]))


def test_sdpa_path_dropout_only_in_training():
    torch.manual_seed(0)
    layer = GraphAttention(4, heads=2, dropout=0.5).double()
    x = _x(1, 6, 4)
    layer.eval()
    _, w = layer(x, return_attention=True)
    assert torch.allclose(layer(x), layer(x, return_attention=True)[0])        # no dropout in eval on the SDPA path
    layer.train()
    torch.manual_seed(1)
    a = layer(x)
    torch.manual_seed(2)
    b = layer(x)
    assert not torch.allclose(a, b)


def test_explicit_dense_dropout_in_training_only():
    layer = GraphAttention(4, heads=1, dropout=0.5).double()
    x = _x(1, 6, 4)
    layer.train()
    torch.manual_seed(0)
    _, w = layer(x, return_attention=True)
    kept = w.weights[w.weights != 0]
    assert (w.weights == 0).any()
    layer.eval()
    _, w_eval = layer(x, return_attention=True)
    assert torch.allclose(kept, 2 * w_eval.weights[w.weights != 0])        # survivors scaled by 1 / (1 - p)


def test_sparse_dropout_in_training_only():
    layer = GraphAttention(4, heads=1, dropout=0.5).double()
    x = _x(6, 4)
    ei = mask_to_edge_index(complete_mask(6))
    layer.eval()
    w_eval = layer.attention(x, ei)
    layer.train()
    torch.manual_seed(0)
    w = layer.attention(x, ei)
    assert (w == 0).any()
    assert torch.allclose(w[w != 0], 2 * w_eval[w != 0])


def test_sdpa_path_empty_rows_are_zero_only_where_empty():
    torch.manual_seed(0)
    layer = GraphAttention(4, heads=2, update="none").double()
    x = _x(2, 3, 4)
    mask = torch.ones(2, 3, 3, dtype=torch.bool)
    mask[0, 1] = False                    # example 0, query 1 has no key
    fast = layer(x, mask=mask)
    explicit, _ = layer(x, mask=mask, return_attention=True)
    assert torch.allclose(fast, explicit)
    assert torch.equal(fast[0, 1], torch.zeros(4, dtype=torch.double))
    assert (fast[1, 1] != 0).all() and (fast[0, 0] != 0).all()


def test_sdpa_path_uses_the_scores_scale():
    torch.manual_seed(0)
    layer = GraphAttention(4, heads=1, update="none").double()
    layer.score.scale = 3.0
    x = _x(1, 3, 4)
    fast = layer(x)
    explicit, _ = layer(x, return_attention=True)
    assert torch.allclose(fast, explicit)


def test_sparse_attention_then_propagate_equals_forward():
    torch.manual_seed(0)
    layer = GraphAttention(4, heads=2, src_dim=3).double()
    x, xs = _x(2, 4), _x(5, 3, seed=1)
    ei = torch.tensor([[0, 4, 2, 2], [0, 0, 1, 0]])
    w = layer.attention(x, ei, x_src=xs)
    agg = layer.propagate(w, xs, ei, 2)
    assert agg.shape == (2, 4)
    v = layer.message.project(xs)                     # (5, 2, 2)
    ref = torch.zeros(2, 2, 2, dtype=torch.double)
    for e in range(4):
        ref[ei[1, e]] += w[e, :, None] * v[ei[0, e]]
    assert torch.allclose(agg, ref.flatten(-2))
    assert torch.allclose(layer(x, ei, x_src=xs), layer.update(x, agg))


def test_edge_shape_is_checked_by_the_layer_itself():
    # the sigmoid normaliser does no edge checks of its own: the message must come from the layer
    layer = GraphAttention(4, normalizer="sigmoid")
    with pytest.raises(ValueError, match=r"^edge_index must have shape \(2, E\), got \(3, 1\)$"):
        layer(torch.randn(3, 4), torch.zeros(3, 1, dtype=torch.long))


def test_sparse_score_hook_of_the_wrong_shape_names_the_score_hook():
    layer = GraphAttention(4, heads=2)
    layer.register_score_hook(lambda m, s, info: s[:, :1])
    with pytest.raises(ValueError, match=r"^score hook returned shape \(2, 1\), expected \(2, 2\)$"):
        layer(torch.randn(3, 4), torch.tensor([[0, 1], [1, 2]]))


def test_the_layer_passes_sizes_and_edge_types_to_its_parts():
    from graphattn.attention.messages import IdentityMessage
    from graphattn.attention.normalizers import DstSoftmax

    seen = {}

    class RecordingNorm(DstSoftmax):
        def edge(self, scores, edge_index, num_dst, num_src):
            seen["sizes"] = (num_dst, num_src)
            return super().edge(scores, edge_index, num_dst, num_src)

    class TypedMessage(IdentityMessage):
        per_edge = True

        def edge(self, v, edge_index, edge_type=None):
            seen["edge_type"] = edge_type
            return super().edge(v, edge_index, edge_type)

    layer = GraphAttention(4, heads=1, normalizer=RecordingNorm(), message=TypedMessage(4), update="none")
    et = torch.tensor([1, 0])
    layer(torch.randn(2, 4), torch.tensor([[4, 0], [1, 1]]), x_src=torch.randn(5, 4), edge_type=et)
    assert seen["sizes"] == (2, 5) and seen["edge_type"] is et


def test_no_dense_path_message_names_score_and_message():
    layer = GraphAttention(4, score="relational", num_relations=2, message="identity", update="none")
    with pytest.raises(ValueError, match=r"^RelationalScore / IdentityMessage has no dense path; pass an edge_index$"):
        layer(torch.randn(1, 3, 4))


def test_dropout_keeps_about_half_in_training():
    layer = GraphAttention(4, heads=1, dropout=0.5).double().train()
    x = _x(1, 40, 4)
    torch.manual_seed(0)
    _, w = layer(x, return_attention=True)
    kept = (w.weights != 0).double().mean().item()
    assert 0.4 < kept < 0.6
    torch.manual_seed(0)
    ws = layer.attention(x[0], mask_to_edge_index(complete_mask(40)))
    assert 0.4 < (ws != 0).double().mean().item() < 0.6


def test_sparse_path_hands_the_receivers_to_the_update():
    torch.manual_seed(0)
    layer = GraphAttention(4, heads=2, update="residual").double()
    x = _x(1, 3, 4)
    ei = mask_to_edge_index(complete_mask(3))
    assert torch.allclose(layer(x[0], ei), layer(x)[0])
    w = layer.attention(x[0], ei)
    assert torch.allclose(layer(x[0], ei), x[0] + layer.update.proj(layer.propagate(w, x[0], ei, 3)))


def test_additive_score_by_name_keeps_the_query_bias_by_default():
    assert GraphAttention(4, score="additive").score.q.bias is not None
