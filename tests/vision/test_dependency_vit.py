import numpy as np
import pytest
import torch

import vision  # noqa: F401
from graphattn.attention import GraphAttention
from graphattn.config import Config
from graphattn.ops import complete_mask, mask_to_edge_index
from vision.base import VisionData
from vision.datasets.parts import PartsDataset, label_names
from vision.dependency_vit import DependencyBlock, DependencyViT, GatedValueMessage, prune_tokens
from vision.graphs.parent_tree import ancestors, build_tree, dependency_mask, groups_at_depth, parent_pointers, patch_majority_labels


def _layer(dim=8, heads=2, tau=0.5):
    torch.manual_seed(0)
    msg = GatedValueMessage(dim, heads, dim // heads, tau=tau)
    return GraphAttention(dim, dim, heads, normalizer="src_softmax", message=msg, bias=False).double(), msg


def test_reversed_attention_sparse_equals_dense():
    layer, msg = _layer()
    x = torch.randn(5, 8, dtype=torch.float64)
    m_prev = torch.rand(5, dtype=torch.float64)
    edge_index = mask_to_edge_index(complete_mask(5))                  # every j -> i, self-loops included
    with msg.prior(m_prev[None]):
        dense, wd = layer(x[None], return_attention=True)
    with msg.prior(m_prev):
        sparse, ws = layer(x, edge_index, return_attention=True)
    torch.testing.assert_close(dense[0], sparse)
    src, dst = edge_index
    torch.testing.assert_close(wd.weights[0].permute(1, 2, 0)[dst, src], ws.weights)  # (E, H) both ways
    # a child distributes over its parents: weights sum to 1 over the receivers of each sender
    torch.testing.assert_close(wd.weights.sum(-2), torch.ones(1, 2, 5, dtype=torch.float64))


def test_single_head_ungated_equals_attention_on_the_transpose():
    layer, msg = _layer(dim=6, heads=1)
    with torch.no_grad():  # p = 1 (one head); m = sigmoid(40) = 1 - 4e-18 -> 1 in float64
        msg.controller[2].weight.zero_()
        msg.controller[2].bias.fill_(40.0)
    x = torch.randn(1, 7, 6, dtype=torch.float64)
    out = layer(x)
    q, k = layer.score.q(x[0]), layer.score.k(x[0])
    v = msg.v(x[0])
    scores = q @ k.T / np.sqrt(6)                                       # (receiver j, sender i)
    expected = layer.update.proj(torch.softmax(scores, dim=0) @ v)      # softmax over receivers, per sender
    torch.testing.assert_close(out[0], expected)


def test_block_gates_sender_columns():
    torch.manual_seed(1)
    block = DependencyBlock(8, heads=2, tau=0.3, reversed_attention=True, cumulative=True).double()
    x = torch.randn(3, 6, 8, dtype=torch.float64)
    m_prev = torch.rand(3, 6, dtype=torch.float64)
    _, m, a_r = block(x, m_prev)
    _, g = block.message.gates(block.norm1(x))
    torch.testing.assert_close(m, g * m_prev)                           # cumulative controller
    # sum over heads and receivers of A_R[h, j, i] = sum_h p_i[h] * m_i * sum_j A_F = m_i
    torch.testing.assert_close(a_r.sum(dim=(1, 2)), m)


def test_parent_pointers_and_tree_on_hand_built_attention():
    # layer 0, tokens 0..3 (receiver rows, sender columns): 0 -> 1, 1 -> 1 (root), 2 -> 3, 3 -> 2
    a0 = torch.tensor([[0.1, 0.0, 0.0, 0.0],
                       [0.8, 0.9, 0.1, 0.0],
                       [0.0, 0.1, 0.2, 0.7],
                       [0.1, 0.0, 0.7, 0.3]])
    assert parent_pointers(a0, "sender").tolist() == [1, 1, 3, 2]
    assert parent_pointers(a0, "receiver").tolist() == [0, 1, 3, 2]
    # layer 1 after pruning token 0: local tokens are originals [1, 2, 3]; 1 -> 2, 2 -> 2, 3 -> 2
    a1 = torch.tensor([[0.0, 0.0, 0.1],
                       [0.9, 0.8, 0.9],
                       [0.1, 0.2, 0.0]])
    parents = build_tree([a0, a1], [torch.arange(4), torch.tensor([1, 2, 3])], num_patches=4)
    assert parents.tolist() == [[1, 1, 3, 2], [-1, 2, 2, 2]]
    assert ancestors(parents, 0).tolist() == [0, 1, 2, 3]
    assert ancestors(parents, 1).tolist() == [1, 1, 3, 2]
    assert ancestors(parents, 2).tolist() == [2, 2, 2, 2]   # 0 -> 1 -> 2; 2 -> 3 -> 2; 3 -> 2 -> 2
    assert groups_at_depth(parents, 1).tolist() == [0, 0, 2, 1]
    heads = torch.stack([a0 * 0.25, a0 * 0.75])
    torch.testing.assert_close(dependency_mask(heads), a0)
    with pytest.raises(ValueError, match="positions"):
        build_tree([a0], [torch.arange(3)], num_patches=4)


def test_patch_labels():
    mask = torch.zeros(4, 4, dtype=torch.long)
    mask[0, 0] = 2                       # 1 of 4 pixels -> 25 %: object 2
    mask[2:, 2:] = 1
    mask[3, 0] = 1                       # 1 pixel in patch 2
    mask[2, 1] = 3
    assert patch_majority_labels(mask, 2).tolist() == [2, 0, 1, 1]
    assert patch_majority_labels(mask, 2, min_fraction=0.5).tolist() == [0, 0, 0, 1]


def test_prune_tokens_keeps_original_positions():
    x = torch.arange(10.0).repeat(2, 1)[..., None].expand(2, 10, 3)   # token feature = its original index
    pos = torch.arange(10).repeat(2, 1)
    score = torch.tensor([[5, 1, 9, 0, 3, 8, 2, 7, 6, 4], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]]).float()
    xk, mk, pk = prune_tokens(x, score, pos, score, keep=4)
    assert pk.tolist() == [[2, 5, 7, 8], [6, 7, 8, 9]]
    torch.testing.assert_close(xk[..., 0], pk.float())
    torch.testing.assert_close(mk, score.gather(1, pk))


def _tiny_model(**over):
    cfg = Config("DependencyViT", "digits", config_dict={"patch_size": 2, "embed_dim": 16, "depth": 4, "num_heads": 2, **over})
    ds = torch.utils.data.TensorDataset(torch.zeros(1, 1, 8, 8), torch.zeros(1, dtype=torch.long))
    data = VisionData(ds, ds, ds, num_classes=3, meta={"in_channels": 1, "image_size": 8})
    torch.manual_seed(0)
    return DependencyViT(cfg, data)


def test_model_pruning_maps_tokens_to_original_patches():
    model = _tiny_model(prune_layers=[0, 2], prune_ratio=0.25).eval()
    assert model.kept_tokens() == [16, 12, 12, 8, 8]
    x = torch.randn(3, 1, 8, 8)
    out = model.forward_features(x)
    assert [a.shape[-1] for a in out["attention"]] == [16, 12, 12, 8]
    for before, after in zip(out["positions"], out["positions"][1:] + [out["final_positions"]]):
        for b in range(3):
            assert set(after[b].tolist()) <= set(before[b].tolist())   # a subset of the previous tokens
            assert after[b].tolist() == sorted(after[b].tolist())        # original order kept
    # the tokens removed after block 0 are those that received the least mass there
    received = out["attention"][0].sum(dim=(1, 3))                     # (B, 16)
    kept = out["positions"][1]
    for b in range(3):
        dropped = sorted(set(range(16)) - set(kept[b].tolist()))
        assert received[b, dropped].max() <= received[b, kept[b]].min()
    # a tree can be built for every image from the per-layer matrices and position maps
    tree = build_tree([dependency_mask(a[0]) for a in out["attention"]], [p[0] for p in out["positions"]], 16)
    assert (tree[2:] >= 0).sum(1).tolist() == [12, 8]
    torch.testing.assert_close(model(x), out["logits"])


@pytest.mark.parametrize("reversed_attention", [True, False])
def test_model_finite_loss_and_gradient_everywhere(reversed_attention):
    model = _tiny_model(reversed_attention=reversed_attention, prune_layers=[1])
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 1])
    loss, _, _ = model.compute_loss((x, y))
    loss.backward()
    assert torch.isfinite(loss)
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def test_leaves_are_pruned_after_sending_and_before_the_mlp():
    """Port placement: a pruning block runs its attention on all tokens, drops the leaves, then runs its MLP
    on the kept tokens only; ``prune_after: block`` runs the MLP first."""
    x = torch.randn(2, 1, 8, 8)
    for where in ("attention", "block"):
        model = _tiny_model(prune_layers=[1], prune_ratio=0.25, prune_after=where, depth=2).eval()
        with torch.no_grad():
            out = model.forward_features(x)
            tokens = model.patch_embed(x).flatten(2).transpose(1, 2) + model.pos_embed
            m = tokens.new_ones(tokens.shape[:2])
            tokens, m, _ = model.blocks[0](tokens, m)
            tokens, m, a_r = model.blocks[1].attend(tokens, m)
            score = a_r.sum(dim=(1, 3))                                  # mass each token received
            if where == "block":
                tokens = model.blocks[1].feed_forward(tokens)
            idx = score.topk(12, dim=1).indices.sort(dim=1).values
            tokens = tokens.gather(1, idx[..., None].expand(-1, -1, tokens.shape[-1]))
            m = m.gather(1, idx)
            if where == "attention":
                tokens = model.blocks[1].feed_forward(tokens)
            expected = model.head((model.norm(tokens) * m[..., None]).mean(1))
        torch.testing.assert_close(out["logits"], expected)
        assert out["final_positions"].tolist() == idx.tolist()


def test_plain_vit_prunes_the_keys_attended_least():
    """Standard attention is [query, key]: rows sum to 1, so the pruning score must be the column sums."""
    model = _tiny_model(reversed_attention=False, prune_layers=[0], prune_ratio=0.25).eval()
    out = model.forward_features(torch.randn(3, 1, 8, 8))
    attended = out["attention"][0].sum(dim=(1, 2))                     # (B, 16): attention each key gets
    kept = out["positions"][1]
    for b in range(3):
        dropped = sorted(set(range(16)) - set(kept[b].tolist()))
        assert attended[b, dropped].max() < attended[b, kept[b]].min()


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="prune_layers"):
        _tiny_model(prune_layers=[7])
    with pytest.raises(ValueError, match="controller"):
        _tiny_model(reversed_attention=False, prune_score="controller")
    with pytest.raises(ValueError, match="prune_after"):
        _tiny_model(prune_after="mlp")


def test_parts_images_are_seeded_and_labels_match_masks():
    a = PartsDataset(20, 32, 2, 0.05, seed=3)
    b = PartsDataset(20, 32, 2, 0.05, seed=3)
    torch.testing.assert_close(a.images, b.images)
    names = label_names(2)
    assert len(names) == 9
    for i in range(20):
        n_objects = len(names[int(a.labels[i])])
        assert int(a.objects[i].max()) == n_objects
        assert set(torch.unique(a.parts[i]).tolist()) == set(range(2 * n_objects + 1))
        assert ((a.parts[i] > 0) == (a.objects[i] > 0)).all()


def test_fresh_parts_images_are_new_on_every_read_and_seeded():
    from vision.datasets.parts import FreshPartsDataset

    ds = FreshPartsDataset(4, 32, 2, 0.05)
    torch.manual_seed(7)
    first = [ds[i] for i in range(4)]
    again = ds[0]
    assert not torch.equal(first[0][0], again[0])                      # a new image on every read
    torch.manual_seed(7)
    replay = [ds[i] for i in range(4)]
    for (xa, ya), (xb, yb) in zip(first, replay):                      # same torch seed, same stream
        torch.testing.assert_close(xa, xb)
        assert int(ya) == int(yb)
    assert first[0][0].shape == (3, 32, 32) and first[0][1].dtype == torch.long
    assert all(0 <= int(y) < 9 for _, y in first)
    with pytest.raises(IndexError):
        ds[4]


def test_parts_loader_resamples_only_the_training_split():
    from vision.datasets.parts import FreshPartsDataset, PartsDataset, load_parts_data

    base = {"image_size": 16, "max_objects": 1, "num_train": 5, "num_valid": 3, "num_test": 3, "noise_std": 0.0, "split_seed": 0}
    data = load_parts_data({**base, "resample_train": True})
    assert isinstance(data.train, FreshPartsDataset) and len(data.train) == 5
    assert isinstance(data.valid, PartsDataset) and isinstance(data.test, PartsDataset)
    fixed = load_parts_data({**base, "resample_train": False})
    assert isinstance(fixed.train, PartsDataset)
    torch.testing.assert_close(fixed.test.images, data.test.images)    # held-out images do not depend on the switch


def test_sincos_position_embedding_by_hand_and_as_a_buffer():
    from vision.dependency_vit import sincos_position_embedding

    pe = sincos_position_embedding(2, 4)[0]                            # dim 4: one frequency (1.0) per axis
    rows, cols = torch.tensor([0.0, 0.0, 1.0, 1.0]), torch.tensor([0.0, 1.0, 0.0, 1.0])
    torch.testing.assert_close(pe, torch.stack([rows.sin(), rows.cos(), cols.sin(), cols.cos()], dim=1))
    model = _tiny_model(pos_embed="sincos")
    assert "pos_embed" not in dict(model.named_parameters()) and "pos_embed" in model.state_dict()
    torch.testing.assert_close(model.pos_embed, sincos_position_embedding(4, 16))
    with pytest.raises(ValueError, match="pos_embed"):
        _tiny_model(pos_embed="rope")


def test_block_reuses_its_gates_with_the_same_result_as_recomputing_them():
    """attend() hands the gates it computed to the message; outputs and gradients equal the recomputing path."""
    torch.manual_seed(0)
    block = DependencyBlock(8, heads=2, tau=0.3, reversed_attention=True, cumulative=True).double()
    x = torch.randn(2, 5, 8, dtype=torch.float64, requires_grad=True)
    m_prev = torch.rand(2, 5, dtype=torch.float64)
    y, _, _ = block.attend(x, m_prev)
    grads = torch.autograd.grad(y.square().sum(), [x, *block.parameters()], allow_unused=True)
    h = block.norm1(x)
    with block.message.prior(m_prev):                     # no gates passed: project() recomputes them
        ref = x + block.gamma1 * block.attn(h)
    ref_grads = torch.autograd.grad(ref.square().sum(), [x, *block.parameters()], allow_unused=True)
    assert torch.allclose(y, ref, atol=1e-12)
    for a, b in zip(grads, ref_grads):
        assert (a is None and b is None) or torch.allclose(a, b, atol=1e-10)
