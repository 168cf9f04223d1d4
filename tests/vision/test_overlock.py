import pytest
import torch

from vision.base import VisionData
from vision.overlock import IMPLS, ContMix, OverLoCK, OverLoCKNet, window_tables




def _contmix(shape=(6, 7), k=5, s=3, heads=2, seed=0):
    torch.manual_seed(seed)
    m = ContMix(16, 4, shape, kernel_size=k, small_kernel=s, heads=heads, context_size=2).eval()
    for mix in (m.small, m.large):                       # non-zero relative-position bias so it is tested
        torch.nn.init.normal_(mix.attn.score.rpb)
    return m


@pytest.mark.parametrize("shape", [(6, 7), (5, 5)])
def test_all_implementations_agree_at_every_pixel(shape):
    m = _contmix(shape)
    v, zq, zk = torch.randn(2, 16, *shape), torch.randn(2, 16, *shape), torch.randn(2, 4, *shape)
    outs = {impl: m(v, zq, zk, impl=impl) for impl in IMPLS}
    for impl in IMPLS:
        assert torch.allclose(outs[impl], outs["dense"], atol=1e-5), impl


def test_masked_dense_reference_by_hand_including_borders():
    """Explicit loop over pixels with NA windows shifted inward at the borders."""
    shape, k = (5, 6), 3
    m = _contmix(shape, k=k, s=3, heads=1)
    v, zq, zk = torch.randn(1, 16, *shape), torch.randn(1, 16, *shape), torch.randn(1, 4, *shape)
    _, lk = m.logits(zq, zk)                                     # (1, G, N, 9) large-kernel logits
    rpb = m.large.attn.score.rpb
    vals = v[:, 8:]                                              # second half of the values
    G, H, W = 2, *shape
    ref = torch.zeros(1, 8, H, W)
    for y in range(H):
        for x in range(W):
            cy, cx = min(max(y, 1), H - 2), min(max(x, 1), W - 2)      # window centre clamped inward
            for g in range(G):
                logits, keys = [], []
                for a, ky in enumerate(range(cy - 1, cy + 2)):
                    for b, kx in enumerate(range(cx - 1, cx + 2)):
                        off = (ky - y + k - 1) * (2 * k - 1) + (kx - x + k - 1)
                        logits.append(lk[0, g, y * W + x, a * 3 + b] + rpb[g, off])
                        keys.append(vals[0, g * 4:(g + 1) * 4, ky, kx])
                w = torch.softmax(torch.stack(logits), 0)
                ref[0, g * 4:(g + 1) * 4, y, x] = (w[:, None] * torch.stack(keys)).sum(0)
    half = m.large(lk, vals, "unfold")
    assert torch.allclose(half, ref, atol=1e-5)
    assert torch.allclose(m.large(lk, vals, "dense"), ref, atol=1e-5)


def test_kernels_sum_to_one_and_window_tables():
    m = _contmix((6, 6))
    _, (ks, kl) = m(torch.randn(2, 16, 6, 6), torch.randn(2, 16, 6, 6), torch.randn(2, 4, 6, 6), return_kernels=True)
    assert ks.shape == (2, 4, 36, 9) and kl.shape == (2, 4, 36, 25)
    assert torch.allclose(ks.sum(-1), torch.ones(2, 4, 36)) and torch.allclose(kl.sum(-1), torch.ones(2, 4, 36))
    t = window_tables((6, 6), 5)
    assert t["mask"].sum(1).eq(25).all()
    assert t["index"][0].tolist() == [r * 6 + c for r in range(5) for c in range(5)]   # corner: shifted window


def test_kernel_sees_distant_change_static_conv_does_not():
    net = OverLoCKNet(image_size=16).eval()
    x = torch.randn(1, 1, 16, 16, requires_grad=True)
    _, _, (k1, _) = net.forward_all(x, return_kernels=True)
    k1[1][0, :, 0].pow(2).sum().backward()   # large kernel at the top-left pixel (a plain sum is always 1)
    far = x.grad[0, 0, 10:, 10:]                                 # bottom-right input region
    assert far.abs().sum() > 0
    static = OverLoCKNet(image_size=16, mixer="static").eval()
    _, _, kernels = static.forward_all(torch.randn(1, 1, 16, 16), return_kernels=True)
    assert kernels == (None, None)                               # a static conv has no input-dependent kernel


def test_registered_model_and_ablations_train():
    data = VisionData(train=[], valid=[], test=[], num_classes=3, meta={"image_size": 16, "in_channels": 1})
    cfg = {"overlock_dims": [8, 8, 16, 16], "overlock_kernels": [5, 3], "small_kernel": 3, "overlock_heads": [1, 1],
           "context_size": 2, "mixer": "contmix", "context_keys": "prior", "contmix_impl": "gather", "aux_weight": 0.4}
    x, y = torch.randn(4, 1, 16, 16), torch.tensor([0, 1, 2, 0])
    for mixer, keys in (("contmix", "prior"), ("contmix", "self"), ("static", "prior")):
        torch.manual_seed(0)
        model = OverLoCK({**cfg, "mixer": mixer, "context_keys": keys}, data).train()
        loss, logits, _ = model.compute_loss((x, y))
        loss.backward()
        assert torch.isfinite(loss) and logits.shape == (4, 3)
        missing = [n for n, p in model.named_parameters() if p.grad is None]
        assert not missing, (mixer, keys, missing)
    with pytest.raises(ValueError, match="mixer"):
        OverLoCK({**cfg, "mixer": "conv"}, data)
