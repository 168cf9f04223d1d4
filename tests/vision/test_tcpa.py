import copy

import pytest
import torch

from graphattn.attention import GraphAttention
from graphattn.interpret import capture_attention
from vision.base import VisionData
from vision.tcpa import (TCPA, PostSoftmaxMask, PromptedViT, feature_diversity, prompt_attention_diversity,
                        usage_entropy)
from vision.vit import SmallViT




def _vit(seed=0):
    torch.manual_seed(seed)
    return SmallViT(image_size=8, patch_size=2, dim=16, depth=2, heads=2, num_classes=0)


def _net(backbone, **kw):
    torch.manual_seed(1)
    kw.setdefault("prompt_dropout", 0.0)
    return PromptedViT(copy.deepcopy(backbone), 5, **kw)


def test_post_softmax_mask_hand_computed():
    scores = torch.tensor([[[[0.0, 1.0, 2.0]]]])
    mask = torch.tensor([True, False, True])
    w = PostSoftmaxMask().dense(scores, mask)
    full = torch.softmax(scores, -1)
    assert torch.allclose(w, full * mask)                       # not renormalised
    assert abs(float(w.sum()) - (1 - float(full[..., 1]))) < 1e-6
    with pytest.raises(ValueError, match="dense path"):
        PostSoftmaxMask().edge(torch.zeros(3, 1), torch.zeros(2, 3, dtype=torch.long), 1, 1)


def test_post_softmax_equals_renormalised_when_nothing_is_masked():
    layer = GraphAttention(8, 8, 2)
    x = torch.randn(2, 5, 8)
    a = layer(x)
    layer.normalizer = PostSoftmaxMask()
    assert torch.allclose(layer(x), a, atol=1e-6)


@pytest.mark.parametrize("masking", ["post_softmax", "renormalized"])
def test_topk_equal_pool_reduces_to_vpt_deep(masking):
    vit = _vit()
    vpt = _net(vit, method="vpt", pool_size=3, masking=masking)
    tok = _net(vit, method="vpt", pool_size=3, masking=masking, shared_pool_topk=6)   # selects all 6 prompts
    tok.prompts.load_state_dict(vpt.prompts.state_dict())
    tok.head.load_state_dict(vpt.head.state_dict())
    x = torch.randn(4, 1, 8, 8)
    assert torch.allclose(vpt(x), tok(x), atol=1e-5)
    # role split with top-k = pool size equals R-TCPA (static role masks)
    r = _net(vit, method="r_tcpa", pool_size=3, masking=masking)
    t = _net(vit, method="tcpa", pool_size=3, topk=3, masking=masking)
    t.prompts.load_state_dict(r.prompts.state_dict())
    t.head.load_state_dict(r.head.state_dict())
    assert torch.allclose(r(x), t(x), atol=1e-5)


def test_post_softmax_and_renormalised_differ_when_masking():
    vit = _vit()
    a = _net(vit, method="tcpa", pool_size=4, topk=2, masking="post_softmax")
    b = _net(vit, method="tcpa", pool_size=4, topk=2, masking="renormalized")
    b.load_state_dict(a.state_dict())
    x = torch.randn(3, 1, 8, 8)
    assert not torch.allclose(a(x), b(x), atol=1e-4)


@pytest.mark.parametrize("method", ["r_tcpa", "tcpa"])
def test_cls_never_attends_image_prompts_and_patches_never_cls_prompts(method):
    net = _net(_vit(), method=method, pool_size=4, topk=2)
    x = torch.randn(3, 1, 8, 8)
    P = net.pool_size
    with capture_attention(net) as store:
        net(x)
    for weights in store.values():
        w = weights[0]                                          # (B, H, N, M)
        assert w.shape[-1] == 1 + 2 * P + 16
        assert torch.all(w[:, :, 0, 1 + P:1 + 2 * P] == 0)      # CLS row: image prompts
        assert torch.all(w[:, :, 1:, 1:1 + P] == 0)             # patch rows: cls prompts
        if method == "tcpa":                                    # exactly k prompts per row are non-zero
            assert torch.all((w[:, :, 0, 1:1 + P] > 0).sum(-1) == 2)
            assert torch.all((w[:, :, 1:, 1 + P:1 + 2 * P] > 0).sum(-1) == 2)
            rows = w[:, :, 1:].sum(-1)
            assert torch.all(rows < 1 - 1e-6)                   # post-softmax: mass lost to unselected prompts


def test_selection_follows_key_similarity_and_random_warmup():
    net = _net(_vit(), method="tcpa", pool_size=5, topk=2, random_warmup_steps=1)
    x = torch.randn(2, 1, 8, 8)
    net.eval()
    _, info = net.forward_info(x)
    h = net.backbone.embed(x)
    cos = torch.nn.functional.normalize(h[:, 1:], dim=-1) @ torch.nn.functional.normalize(net.keys["img"][0], dim=-1).T
    assert torch.equal(info["selections"][0][1].sort(-1).values, cos.topk(2, -1).indices.sort(-1).values)
    net.train()
    torch.manual_seed(0)
    _, info_rand = net.forward_info(x)                          # step 0 < warm-up: random selection
    assert not torch.equal(info_rand["selections"][0][1].sort(-1).values, cos.topk(2, -1).indices.sort(-1).values)
    assert int(net.steps) == 1


def test_frozen_backbone_gets_no_gradient_and_prompts_do():
    net = _net(_vit(), method="tcpa", pool_size=4, topk=2)
    net.train()
    logits, info = net.forward_info(torch.randn(4, 1, 8, 8))
    (logits.logsumexp(-1).mean() + info["pull_loss"]).backward()
    assert all(p.grad is None for p in net.backbone.parameters())
    for name, p in net.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_diversity_and_entropy_hand_cases():
    w = torch.zeros(1, 1, 3, 4)
    w[0, 0, 1] = torch.tensor([0, 0.5, 0.5, 0])                # patches 1 and 2 identical -> JS 0
    w[0, 0, 2] = torch.tensor([0, 0.5, 0.5, 0])
    assert prompt_attention_diversity(w, (1, 3)) == pytest.approx(0.0, abs=1e-6)
    w[0, 0, 2] = torch.tensor([0, 0.0, 0.0, 1.0])
    w[0, 0, 1] = torch.tensor([0, 0.3, 0.0, 0.7])
    w2 = w.clone()
    w2[0, 0, 1] = torch.tensor([0, 1.0, 0.0, 0.0])
    w2[0, 0, 2] = torch.tensor([0, 0.0, 1.0, 0.0])              # disjoint supports -> JS distance 1
    assert prompt_attention_diversity(w2, (1, 3)) == pytest.approx(1.0, abs=1e-6)
    assert usage_entropy(torch.tensor([0, 1, 2, 3]), 4) == pytest.approx(1.0)
    assert usage_entropy(torch.tensor([2, 2, 2]), 4) == pytest.approx(0.0)


def test_feature_diversity_hand_cases():
    same = torch.randn(1, 1, 4).expand(2, 5, 4)                 # CLS + 4 identical patch tokens
    assert abs(feature_diversity(same)) < 1e-9
    # patches e1, -e1, e2 (CLS ignored): pairwise cos 1 - (-1, 0, 0) -> distances 2, 1, 1 -> mean 4/3
    h = torch.tensor([[[9.0, 9.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 3.0]]])
    assert abs(feature_diversity(h) - 4.0 / 3.0) < 1e-9


def test_registered_model_loads_backbone_checkpoint(tmp_path):
    vit = _vit()
    path = tmp_path / "vit.pt"
    torch.save(vit.state_dict(), path)
    data = VisionData(train=torch.utils.data.TensorDataset(torch.randn(4, 1, 8, 8), torch.arange(4) % 2),
                      valid=[], test=[], num_classes=2, meta={"image_size": 8, "in_channels": 1})
    cfg = {"tcpa_method": "tcpa", "masking": "post_softmax", "pool_size": 4, "topk": 2, "prompt_dropout": 0.0,
           "pool_loss_weight": 0.01, "random_warmup_steps": 0, "backbone_checkpoint": str(path),
           "freeze_backbone": True, "patch_size": 2, "vit_dim": 16, "vit_depth": 2, "vit_heads": 2, "mlp_ratio": 2.0}
    model = TCPA(cfg, data)
    assert torch.equal(model.net.backbone.pos_embed, vit.pos_embed)
    model.train()
    loss, _, _ = model.compute_loss((torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 0, 1])))
    assert torch.isfinite(loss)
    with pytest.raises(FileNotFoundError, match="backbone_checkpoint"):
        TCPA({**cfg, "backbone_checkpoint": str(tmp_path / "missing.pt")}, data)
