import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from vision.base import VisionData
from vision.datasets.quality import (_split_refs, distort, read_csiq, read_kadid10k, read_live, read_tid2013,
                                     ssim)
from vision.maniqa import MANIQA, TAB, ConvBackbone, MANIQANet, PatchWeightedScore, SwinBlock, swin_window_mask



def test_tab_equals_sdpa_with_channels_as_tokens_and_quirk():
    torch.manual_seed(0)
    tab = TAB(12, dropout=0.0).eval()
    x = torch.randn(2, 5, 12)                                        # (B, C, N)
    a = tab.attn
    q, k, v = a.score.q(x), a.score.k(x), a.message.v(x)
    ref = x + F.scaled_dot_product_attention(q, k, v)               # softmax(q k^T / sqrt(N)) v
    assert torch.allclose(tab(x), ref, atol=1e-5)
    quirk = TAB(12, dropout=0.0, reshape_quirk=True).eval()
    quirk.load_state_dict(tab.state_dict())
    out = F.scaled_dot_product_attention(q, k, v)
    assert torch.allclose(quirk(x), x + out.transpose(1, 2).reshape(2, 5, 12), atol=1e-5)
    assert not torch.allclose(quirk(x), tab(x))


def _swin_reference(block: SwinBlock, x: torch.Tensor) -> torch.Tensor:
    """Textbook Swin attention: roll, window partition, bias + (-100) region mask, softmax, reverse."""
    B, N, C = x.shape
    (h, w), ws, s = block.shape, block.window, block.shift
    heads = block.attn.heads
    t = block.norm1(x).view(B, h, w, C)
    if s:
        t = torch.roll(t, (-s, -s), (1, 2))
    win = t.view(B, h // ws, ws, w // ws, ws, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, C)
    q = block.attn.score.q(win).view(-1, ws * ws, heads, C // heads).transpose(1, 2)
    k = block.attn.score.k(win).view(-1, ws * ws, heads, C // heads).transpose(1, 2)
    v = block.attn.message.v(win).view(-1, ws * ws, heads, C // heads).transpose(1, 2)
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + ws - 1
    idx = rel[..., 0] * (2 * ws - 1) + rel[..., 1]
    attn = q @ k.transpose(-1, -2) * (C // heads) ** -0.5 + block.attn.score.bias[:, idx][None]
    if s:
        img = torch.zeros(h, w)
        cnt = 0
        for hs in (slice(0, -ws), slice(-ws, -s), slice(-s, None)):
            for wsl in (slice(0, -ws), slice(-ws, -s), slice(-s, None)):
                img[hs, wsl] = cnt
                cnt += 1
        mw = img.view(h // ws, ws, w // ws, ws).permute(0, 2, 1, 3).reshape(-1, ws * ws)
        m = (mw[:, None, :] != mw[:, :, None]).float() * -100.0             # (nW, ws2, ws2)
        attn = attn.view(B, -1, heads, ws * ws, ws * ws) + m[None, :, None]
        attn = attn.view(-1, heads, ws * ws, ws * ws)
    out = (attn.softmax(-1) @ v).transpose(1, 2).reshape(-1, ws * ws, C)
    out = out.view(B, h // ws, w // ws, ws, ws, C).permute(0, 1, 3, 2, 4, 5).reshape(B, h, w, C)
    if s:
        out = torch.roll(out, (s, s), (1, 2))
    return block.attn.update(None, out.reshape(B, N, C))


@pytest.mark.parametrize("shift", [0, 2])
def test_window_attention_equals_textbook_swin(shift):
    torch.manual_seed(0)
    block = SwinBlock(16, 2, (8, 8), 4, shift, 32).eval()
    x = torch.randn(3, 64, 16)
    h = block.norm1(x)
    ours = block.attn(h, mask=block.mask(x.device))
    assert torch.allclose(ours, _swin_reference(block, x), atol=1e-5)
    # the sparse path on the same graph agrees too
    mask = block.mask(x.device)
    dst, src = mask.nonzero(as_tuple=True)
    sparse = block.attn(h[0], torch.stack([src, dst]))
    assert torch.allclose(sparse, ours[0], atol=1e-5)


def test_swin_mask_counts():
    m0 = swin_window_mask((8, 8), 4, 0)
    assert m0.sum(1).eq(16).all() and torch.equal(m0, m0.T)
    m2 = swin_window_mask((8, 8), 4, 2)
    assert torch.equal(m2, m2.T) and m2.diagonal().all()
    # interior token (3, 3) shares the shifted window rows/cols 2..5 with 15 others; corner (0, 0) only the 2x2 corner
    assert int(m2[3 * 8 + 3].sum()) == 16 and int(m2[0].sum()) == 4


def test_weighted_pooling_reduces_to_mean_when_weights_equal():
    torch.manual_seed(0)
    head = PatchWeightedScore(8, dropout=0.0).eval()
    torch.nn.init.zeros_(head.weight[3].weight)
    torch.nn.init.constant_(head.weight[3].bias, 0.3)
    x = torch.randn(2, 10, 8)
    s = F.relu(head.score(x)).squeeze(-1)
    assert torch.allclose(head(x), s.mean(1), atol=1e-6)
    mean_head = PatchWeightedScore(8, dropout=0.0, weighted=False).eval()
    mean_head.score.load_state_dict(head.score.state_dict())
    assert torch.allclose(mean_head(x), s.mean(1), atol=1e-6)


@pytest.mark.parametrize("switches", [{}, {"use_tab": False}, {"use_sstb": False}, {"weighted_score": False},
                                      {"reshape_quirk": True}, {"backbone": "vit"}])
def test_registered_model_gradients(switches):
    cfg = {"backbone": "cnn", "cnn_widths": [8, 12], "patch_size": 8, "vit_dim": 16, "vit_depth": 2,
           "vit_heads": 2, "feature_layers": [0, 1], "maniqa_dims": [16, 8], "sstb_heads": 2, "window_size": 2,
           "sstb_depths": [2], "use_tab": True, "use_sstb": True, "weighted_score": True, "reshape_quirk": False,
           "maniqa_dropout": 0.0, **switches}
    data = VisionData([], [], [], num_classes=1, meta={"image_size": 32, "in_channels": 3}, task_type="regression")
    torch.manual_seed(0)
    model = MANIQA(cfg, data).train()
    loss, pred, _ = model.compute_loss((torch.randn(3, 3, 32, 32), torch.rand(3)))
    loss.backward()
    assert pred.shape == (3,) and torch.isfinite(loss)
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


def test_cnn_backbone_tokens_are_pooled_stage_maps_of_several_layers():
    torch.manual_seed(0)
    net = MANIQANet(image_size=32, patch_size=8, backbone="cnn", cnn_widths=(8, 12, 16), feature_layers=(0, 2),
                    dims=(8,), heads=2, window=2, depths=(2,)).eval()
    x = torch.randn(2, 3, 32, 32)
    bb = net.backbone
    assert isinstance(bb, ConvBackbone) and len(bb.stages) == 3
    h1 = bb.stages[0](bb.stem(x))                                      # (2, 8, 16, 16)
    h3 = bb.stages[2](bb.stages[1](h1))                                # (2, 16, 4, 4)
    layers = bb.forward_layers(x)
    assert [tuple(t.shape) for t in layers] == [(2, 16, 8), (2, 16, 12), (2, 16, 16)]
    pooled = h1.view(2, 8, 4, 4, 4, 4).mean((3, 5)).flatten(2).transpose(1, 2)      # 4x4 average per token
    assert torch.allclose(layers[0], pooled, atol=1e-5)
    assert torch.allclose(layers[2], h3.flatten(2).transpose(1, 2), atol=1e-5)
    # the first TAB sees the concatenation of stages 0 and 2 (8 + 16 channel nodes)
    seen = []
    net.tabs[0][0].register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
    net(x)
    assert seen == [torch.Size([2, 24, 16])]


def test_maniqa_rejects_bad_backbone_settings():
    with pytest.raises(ValueError, match="backbone"):
        MANIQANet(backbone="resnet")
    with pytest.raises(ValueError, match="feature_layers"):
        MANIQANet(backbone="cnn", cnn_widths=(8, 8), feature_layers=(0, 2))
    with pytest.raises(ValueError, match="feature_layers"):
        MANIQANet(backbone="vit", vit_depth=2, feature_layers=(1, 3))


def test_square_symmetries_keep_the_score():
    """The training augmentation (flips, 90-degree rotations) must not change the target: blur, noise and
    contrast are isotropic, and 64-px crops keep JPEG's 8x8 grid aligned (only the asymmetric quantisation
    table differs, a small change)."""
    from vision.datasets.quality import source_photos
    img = source_photos(0.25)["china"][:64, :64]
    for kind in ("blur", "noise", "jpeg", "contrast"):
        for level in (1, 3, 5):
            base = ssim(img, distort(img, kind, level, np.random.default_rng(0)))
            for t in (np.rot90(img, 1, (0, 1)), img[:, ::-1], img[::-1]):
                t = t.copy()
                assert abs(ssim(t, distort(t, kind, level, np.random.default_rng(0))) - base) < 0.01, (kind, level)


def test_distortions_lower_ssim_monotonically():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:32] / 32
    img = np.stack([np.sin(6 * xx) * 0.4 + 0.5, yy, (xx + yy) / 2], -1)
    assert ssim(img, img) == pytest.approx(1.0)
    for kind in ("blur", "noise", "jpeg", "contrast"):
        s = [ssim(img, distort(img, kind, lvl, rng)) for lvl in range(1, 6)]
        assert s[0] > s[-1] and all(v < 1 for v in s), (kind, s)
    with pytest.raises(ValueError, match="distortion"):
        distort(img, "rain", 1, rng)


def test_split_by_reference_and_by_image_are_disjoint():
    df = pd.DataFrame({"reference": [f"{p}_{i}" for p in ("china", "flower", "grace_hopper") for i in range(10)],
                       "photo": [p for p in ("china", "flower", "grace_hopper") for _ in range(10)]})
    for split_by in ("reference", "image"):
        tr, va, te = _split_refs(df, split_by, 0.1, 0.2, 0)
        assert not (tr & va or tr & te or va & te) and len(tr | va | te) == 30
    assert all(r.startswith("grace_hopper") for r in _split_refs(df, "image", 0.1, 0.2, 0)[2])


def test_score_file_readers(tmp_path):
    (tmp_path / "dmos.csv").write_text("dist_img,ref_img,dmos,var\nI01_01_01.png,I01.png,4.57,0.496\n"
                                       "I01_05_3.png,I01.png,2.10,0.9\n")
    k = read_kadid10k(tmp_path)
    assert k["image"].tolist() == ["images/I01_01_01.png", "images/I01_05_3.png"]
    assert k["distortion"].tolist() == [1, 5] and k["level"].tolist() == [1, 3] and k["score"].iloc[1] == 2.10

    (tmp_path / "mos_with_names.txt").write_text("5.51429 i01_01_1.bmp\n3.1 I25_24_5.BMP\n")
    t = read_tid2013(tmp_path)
    assert t["reference"].tolist() == ["reference_images/I01.BMP", "reference_images/I25.BMP"]
    assert t["level"].tolist() == [1, 5]
    (tmp_path / "mos_with_names.txt").write_text("5.5 i01_01_1.bmp\nbad line here\n")
    with pytest.raises(ValueError, match=r"mos_with_names.txt:2"):
        read_tid2013(tmp_path)

    from scipy.io import savemat
    live = tmp_path / "live"
    live.mkdir()
    dmos = np.linspace(0, 100, 982)[None]
    orgs = np.zeros((1, 982))
    orgs[0, 5] = 1
    names = np.empty((1, 982), dtype=object)
    names[0, :] = "parrots.bmp"
    savemat(live / "dmos.mat", {"dmos": dmos, "orgs": orgs})
    savemat(live / "refnames_all.mat", {"refnames_all": names})
    lv = read_live(live)
    assert len(lv) == 982 and lv["image"].iloc[227] == "jpeg/img1.bmp"
    assert lv["image"].iloc[-1] == "fastfading/img174.bmp"
    assert lv["reference"].iloc[0] == "refimgs/parrots.bmp" and lv["is_reference"].sum() == 1
    assert lv["score"].iloc[-1] == pytest.approx(100.0)

    (tmp_path / "csiq_dmos.csv").write_text("image,dst_idx,dst_type,dst_lev,dmos_std,dmos\n1600,1,noise,1,0.01,0.06\n"
                                            "1600,3,jpeg 2000,2,0.02,0.2\n")
    c = read_csiq(tmp_path)
    assert c["image"].tolist() == ["dst_imgs/awgn/1600.AWGN.1.png", "dst_imgs/jpeg2000/1600.jpeg2000.2.png"]
    with pytest.raises(FileNotFoundError, match="dmos.csv"):
        read_kadid10k(tmp_path / "nowhere")
