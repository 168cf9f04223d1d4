import pytest
import torch

import vision  # noqa: F401  (registers the vision task)
from graphattn.attention import GraphAttention, IdentityMessage
from graphattn.config import Config
from vision.base import VisionData
from vision.datasets.skeleton import SkeletonDataset, _meta, swap_entities
from vision.graphs.entity_token import entity_token_graph, token_layout, tokenize, untokenize
from vision.ista_net import ISTANet, ISTAScore, TSABlock, token_positional_encoding
from vision.late_fusion_skeleton import LateFusionSkeleton



# ----------------------------------------------------------------------------- tokenizer and graph


def test_tokenizer_ntu_layout_takes_strided_frames():
    """NTU config: T=120, J=25, E=2, window [20,1,2] -> 6 x 25 = 150 tokens; token (phase b, joint j) holds
    joint j of both persons at frames b, b+6, ..., b+114."""
    t, j, e = 120, 25, 2
    # encode (frame, joint, entity) in the value so every entry says where it came from
    x = (torch.arange(t)[:, None, None] * 1000 + torch.arange(j)[None, :, None] * 10 + torch.arange(e)).float()
    x = x[None, None].repeat(1, 2, 1, 1, 1)                                          # (1, 2, T, J, E)
    tok = tokenize(x, (20, 1, 2))
    assert tok.shape == (1, 2, 20, 2, 150)
    b, jj = 4, 7
    u = b * 25 + jj                                                                  # phase-major, joint-minor
    frames = tok[0, 0, :, 0, u] // 1000
    assert frames.tolist() == list(range(b, 120, 6))
    assert (tok[0, 0, :, :, u] % 1000 // 10 == jj).all()
    assert tok[0, 0, 0, :, u].remainder(10).tolist() == [0, 1]                       # both entities inside
    assert torch.equal(untokenize(tok, (t, j, e), (20, 1, 2)), x)


@pytest.mark.parametrize("shape, window", [((40, 15, 2), (20, 5, 2)), ((45, 7, 3), (20, 2, 2)), ((9, 4, 2), (3, 1, 1))])
def test_tokenizer_matches_layout_index_and_pads_by_replication(shape, window):
    x = torch.randn(2, 3, *shape)
    tok = tokenize(x, window)
    layout = token_layout(shape, window)
    tw, jw, ew = window
    assert tok.shape == (2, 3, tw, jw * ew, layout.num_tokens)
    frame, joint, entity = layout.source_index()                                    # (U, Tw), (U, P), (U, P)
    expect = x[:, :, frame[:, :, None], joint[:, None, :], entity[:, None, :]]      # (2, 3, U, Tw, P)
    assert torch.equal(tok, expect.permute(0, 1, 3, 4, 2))
    assert torch.equal(untokenize(tok, shape, window), x)


def test_entity_token_graph_edges():
    g = entity_token_graph((40, 15, 2), (20, 5, 2), conv_radius=2)                   # U = 2 * 3 * 1 = 6
    u = 6
    assert g.num_nodes == u
    att = g.edge_index[:, g.edge_type == 0]
    assert att.shape[1] == u * u and len(set(map(tuple, att.T.tolist()))) == u * u
    for t, off in zip(range(1, 6), (-2, -1, 0, 1, 2)):
        e = g.edge_index[:, g.edge_type == t]
        assert (e[0] - e[1] == off).all() and e.shape[1] == u - abs(off)
        assert (g.edge_offset[g.edge_type == t] == off).all()
    assert int(g.edge_type.max()) == 5
    assert entity_token_graph((40, 15, 2), (20, 5, 2), conv_radius=0).edge_index.shape[1] == u * u
    assert g.phase.tolist() == [0, 0, 0, 1, 1, 1] and g.joint_group.tolist() == [0, 1, 2, 0, 1, 2]
    assert g.frame_index.shape == (u, 20) and g.frame_index[4].tolist() == list(range(1, 40, 2))


def test_token_conv_is_message_passing_over_the_conv_edges():
    """The proj convolution along the token axis (kernel k_u = 2r + 1, zero padding) equals a sum over the
    graph's conv edges u + o -> u with one weight matrix per offset o (plus the bias)."""
    from graphattn.ops import segment_sum
    torch.manual_seed(0)
    shape, window, cin, cout = (12, 5, 2), (3, 1, 2), 4, 3
    g = entity_token_graph(shape, window, conv_radius=2)
    u = g.num_nodes
    conv = torch.nn.Conv3d(cin, cout, (1, 1, 5), padding=(0, 0, 2)).double()
    x = torch.randn(2, cin, 3, 2, u, dtype=torch.double)                             # (N, C, Tw, P, U)
    conv_edges = g.edge_type > 0
    src, dst = g.edge_index[:, conv_edges]
    w = conv.weight[:, :, 0, 0, g.edge_offset[conv_edges] + 2]                      # (Cout, Cin, E) per offset
    msg = torch.einsum("oie,ntpie->entpo", w, x.permute(0, 2, 3, 1, 4)[..., src])  # (E, N, Tw, P, Cout)
    out = segment_sum(msg, dst, u) + conv.bias                                       # (U, N, Tw, P, Cout)
    torch.testing.assert_close(out.permute(1, 4, 2, 3, 0), conv(x))


# ----------------------------------------------------------------------------- the score on both paths


def _layer(c=3, heads=2, d=4, tw=3, p=2, u=5, use_pes=True):
    torch.manual_seed(0)
    score = ISTAScore(c, heads, d, tw, p, u, use_pes)
    with torch.no_grad():                                                           # non-trivial M and alpha
        score.M.normal_()
        score.alpha.uniform_(0.5, 2.0)
    dim = tw * p * c
    return GraphAttention(dim, heads * dim, heads, head_dim=dim, score=score, normalizer="none",
                          message=IdentityMessage(dim, heads), update="none").double()


def test_ista_score_sparse_equals_dense_values_and_gradients():
    layer, b, u = _layer(), 3, 5
    x = torch.randn(b, u, layer.in_dim, dtype=torch.double)
    xd, xs = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_d, w_d = layer(xd, return_attention=True)
    single = entity_token_graph((3 * 5, 1, 1), (3, 1, 1), conv_radius=0).edge_index  # U = 5 tokens, complete
    edge_index = torch.cat([single + k * u for k in range(b)], 1)
    out_s, w_s = layer(xs.reshape(b * u, -1), edge_index, return_attention=True)
    out_s = out_s.reshape(b, u, -1)
    torch.testing.assert_close(out_d, out_s)
    dense_from_sparse = torch.zeros(b, layer.heads, u, u, dtype=torch.double)
    src, dst = edge_index
    dense_from_sparse[dst // u, :, dst % u, src % u] = w_s.weights
    torch.testing.assert_close(w_d.weights, dense_from_sparse)
    grad = torch.randn_like(out_d)
    gd = torch.autograd.grad((out_d * grad).sum(), [xd] + list(layer.parameters()))
    gs = torch.autograd.grad((out_s * grad).sum(), [xs] + list(layer.parameters()))
    for a, c in zip(gd, gs):
        torch.testing.assert_close(a, c)


def test_ista_score_matches_the_spec_formula():
    """A = tanh(sum_{c,t,v} q[p] k[q] / (d Tw P)) * alpha + M, out_h[q] = sum_p A(p, q) x[p], written on the
    5-D tensors (N, C, Tw, P, U) as the spec states it."""
    c, heads, d, tw, p, u, n = 3, 2, 4, 3, 2, 5, 2
    layer = _layer(c, heads, d, tw, p, u)
    score = layer.score
    x5 = torch.randn(n, c, tw, p, u, dtype=torch.double)
    xa = x5 + score.pe.T.double()[None, :, None, None, :]                           # PE over the token index
    w = score.to_qk.weight.double().view(2, heads, d, c)
    bias = score.to_qk.bias.double().view(2, heads, d)
    q = torch.einsum("hdc,nctvu->nhdtvu", w[0], xa) + bias[0][None, :, :, None, None, None]   # sender side
    k = torch.einsum("hdc,nctvu->nhdtvu", w[1], xa) + bias[1][None, :, :, None, None, None]   # receiver side
    att = torch.tanh(torch.einsum("nhctvp,nhctvq->nhpq", q, k) / (d * tw * p)) * score.alpha.double()[None, :, None, None]
    att = att + score.M.double().transpose(-1, -2)[None]                            # M[h, dst, src] -> [p, q]
    expect = torch.einsum("nctvp,nhpq->nhctvq", x5, att)                            # (N, H, C, Tw, P, U)
    out = layer(TSABlock.to_nodes(x5))                                              # (N, U, H * Tw * P * C)
    got = out.view(n, u, heads, tw, p, c).permute(0, 2, 5, 3, 4, 1)
    torch.testing.assert_close(got, expect)


def test_positional_encoding_is_sinusoidal():
    pe = token_positional_encoding(7, 6)
    assert pe.shape == (7, 6)
    assert torch.allclose(pe[3, 0], torch.sin(torch.tensor(3.0))) and torch.allclose(pe[3, 1], torch.cos(torch.tensor(3.0)))
    assert torch.allclose(pe[2, 4], torch.sin(torch.tensor(2.0) / 10000 ** (4 / 6)))


# ----------------------------------------------------------------------------- the model


def _data(t=8, j=5, e=2, n=6, classes=4):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, t, j, e, generator=g)
    y = torch.arange(n) % classes
    ds = SkeletonDataset(x, y)
    return VisionData(ds, ds, ds, classes, meta=_meta(x, [str(i) for i in range(classes)]))


def _config(model="ISTANet", **kw):
    base = {"window": [4, 1, 2], "blocks": [[8, 8, 2], [8, 12, 2]], "heads": 2, "kernel_size": [3, 3]}
    return Config(model, "skeleton-interaction", config_dict={**(base if model == "ISTANet" else {}), **kw})


def _randomise(model):
    torch.manual_seed(1)
    with torch.no_grad():
        for blk in model.blocks:
            blk.attention.score.M.normal_()
            blk.attention.score.alpha.uniform_(0.5, 2)
    return model


def test_paper_layout_is_invariant_to_swapping_entities():
    """Entities inside the tokens (Ew = E): every op is pointwise over the within-token positions and the
    head averages them, so swapping the entities leaves the logits unchanged (with or without ER)."""
    data = _data()
    x = data.train.x
    for er in (True, False):
        model = _randomise(ISTANet(_config(entity_rearrangement=er), data)).eval()
        torch.testing.assert_close(model(swap_entities(x)), model(x), rtol=1e-5, atol=1e-5)


def test_entity_tokens_see_the_order_unless_averaged():
    data = _data()
    x = data.train.x
    model = _randomise(ISTANet(_config(window=[4, 1, 1]), data)).eval()
    assert (model(swap_entities(x)) - model(x)).abs().max() > 1e-3                  # the test can fail
    sym = _randomise(ISTANet(_config(window=[4, 1, 1], entity_permutation_average=True), data)).eval()
    torch.testing.assert_close(sym(swap_entities(x)), sym(x), rtol=1e-5, atol=1e-5)


def test_entity_rearrangement_only_while_training(monkeypatch):
    data = _data()
    seen = []
    model = ISTANet(_config(window=[4, 1, 1]), data)
    monkeypatch.setattr(model, "forward", lambda x: (seen.append(x.clone()), torch.zeros(len(x), 4, requires_grad=True))[1])
    batch = (data.train.x, data.train.y)
    torch.manual_seed(0)
    model.train()
    for _ in range(4):
        model.compute_loss(batch)
    assert any(not torch.equal(s, batch[0]) for s in seen)                          # permuted in training
    seen.clear()
    model.eval()
    model.compute_loss(batch)
    assert torch.equal(seen[0], batch[0])
    off = ISTANet(_config(window=[4, 1, 1], entity_rearrangement=False), data)
    monkeypatch.setattr(off, "forward", lambda x: (seen.append(x.clone()), torch.zeros(len(x), 4, requires_grad=True))[1])
    seen.clear()
    off.train()
    off.compute_loss(batch)
    assert torch.equal(seen[0], batch[0])


@pytest.mark.parametrize("model_name, kw", [("ISTANet", {}), ("ISTANet", {"window": [3, 2, 1], "use_pes": False}),
                                            ("LateFusionSkeleton", {"late_fusion_hidden": 8})])
def test_tiny_models_finite_loss_and_gradient_on_every_parameter(model_name, kw):
    data = _data()
    cls = ISTANet if model_name == "ISTANet" else LateFusionSkeleton
    model = cls(_config(model_name, **kw), data)
    model.train()
    loss, pred, y = model.compute_loss((data.train.x, data.train.y))
    assert torch.isfinite(loss) and pred.shape == (6, 4)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_block_attention_weights_are_returned():
    data = _data()
    model = ISTANet(_config(), data).eval()
    feats, weights = model.features(data.train.x, return_attention=True)
    u = token_layout((8, 5, 2), (4, 1, 2)).num_tokens
    assert feats.shape == (6, 12, 4, 2, u)
    assert [w.weights.shape for w in weights] == [(6, 2, u, u)] * 2
    assert (weights[0].weights < 0).any()                                           # no softmax: signed weights


def test_bad_inputs_are_reported():
    data = _data()
    model = ISTANet(_config(), data)
    with pytest.raises(ValueError, match=r"\(N, 3, 8, 5, 2\)"):
        model(torch.randn(2, 3, 9, 5, 2))
    with pytest.raises(ValueError, match="blocks"):
        ISTANet(_config(blocks=[[8, 8, 2], [6, 8, 2]]), data)
    with pytest.raises(ValueError, match="kernel_size"):
        ISTANet(_config(kernel_size=[2, 3]), data)
    plain = VisionData(data.train, data.valid, data.test, 4, meta={})
    with pytest.raises(ValueError, match="num_frames"):
        ISTANet(_config(), plain)


PAPER_BLOCKS = [[64, 64, 16], [64, 64, 16], [64, 128, 32], [128, 128, 32], [128, 256, 64], [256, 256, 64],
                [256, 256, 64], [256, 256, 64]]
# (T, J, E, window, kernel, blocks, classes, tokens U, positions P) of the spec's configs
PAPER_CONFIGS = {
    "ntu": (120, 25, 2, [20, 1, 2], [3, 5], PAPER_BLOCKS, 26, 150, 2),
    "sbu": (40, 15, 2, [20, 5, 2], [5, 5], PAPER_BLOCKS[:6], 8, 6, 10),
    "h2o": (120, 21, 3, [20, 1, 3], [3, 5], PAPER_BLOCKS, 36, 126, 3),
    "asb": (120, 21, 2, [20, 1, 2], [5, 5], [[64, 64, 16]] + PAPER_BLOCKS, 1380, 126, 2),
}


@pytest.mark.parametrize("name", list(PAPER_CONFIGS))
def test_paper_config_shapes(name):
    t, j, e, window, kernel, blocks, classes, u, p = PAPER_CONFIGS[name]
    layout = token_layout((t, j, e), window)
    assert (layout.num_tokens, layout.positions) == (u, p)
    x = torch.zeros(1, 3, t, j, e)
    assert tokenize(x, window).shape == (1, 3, window[0], p, u)
    data = _data(t=t, j=j, e=e, n=2, classes=classes)
    model = ISTANet(_config(window=window, blocks=[[8, 8, 2]], kernel_size=kernel), data).eval()
    assert model.blocks[0].attention.score.M.shape == (2, u, u)
    if name in ("sbu", "h2o"):                                                      # forward: Jw > 1 and E = 3
        with torch.no_grad():
            assert model(data.train.x).shape == (2, classes)


def test_ntu_config_has_the_published_parameter_count():
    """The SkelMamba comparison table lists ISTA-Net (NTU-120 mutual) with 6.22 M parameters."""
    t, j, e, window, kernel, blocks, classes, _, _ = PAPER_CONFIGS["ntu"]
    data = _data(t=t, j=j, e=e, n=1, classes=classes)
    model = ISTANet(_config(window=window, blocks=blocks, kernel_size=kernel, heads=3), data)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == 6.22
