import pytest
import torch

import vision.diffusion  # noqa: F401  (registers the task, the dataset and UNet)
from graphattn.config import Config
from graphattn.training import Trainer
from vision.diffusion.data import load_digits_diffusion
from vision.diffusion.unet import UNet

TINY = {"unet_channels": [8, 16], "unet_blocks": 2, "unet_heads": 2, "label_tokens": 2, "context_dim": 8,
        "norm_groups": 4, "timesteps": 20, "noise_schedule": "cosine", "image_size": 8, "valid_ratio": 0.1,
        "test_ratio": 0.2, "split_seed": 0}
DATA = load_digits_diffusion(TINY)


def tiny_unet(**over):
    torch.manual_seed(0)
    return UNet({**TINY, **over}, DATA)


def _randomise(m):
    for p in m.parameters():   # conv_out starts at zero: make every path matter
        torch.nn.init.normal_(p, std=0.2)
    return m


def test_digits16_dataset_and_feature_shapes():
    data = load_digits_diffusion({**TINY, "image_size": 16})
    assert data["train"][0].shape[1:] == (1, 16, 16)
    m = tiny_unet()
    eps, feats = m(torch.randn(3, 1, 8, 8), torch.tensor([0, 5, 19]), torch.tensor([0, 9, 10]), return_features=True)
    assert eps.shape == (3, 1, 8, 8)
    # down levels (8x8, 4x4), mid (4x4), up levels (4x4, 8x8)
    assert [tuple(f.shape[1:]) for f in feats] == [(8, 8, 8), (16, 4, 4), (16, 4, 4), (16, 4, 4), (8, 8, 8)]


def test_self_attention_block_is_softmax_attention_over_all_pixels():
    m = _randomise(tiny_unet()).eval()
    block, x = m.self_attn, torch.randn(2, 8, 8, 8)
    att = block.attn
    tokens = block.norm(x).flatten(2).transpose(1, 2)                            # (B, 64, C)
    q, k = att.score.project(tokens, tokens)                                     # (B, 64, H, Dh)
    v = att.message.project(tokens)
    w = torch.einsum("bnhd,bmhd->bhnm", q, k).mul(q.shape[-1] ** -0.5).softmax(-1)
    agg = torch.einsum("bhnm,bmhd->bnhd", w, v).flatten(-2)
    expected = x + att.update(tokens, agg).transpose(1, 2).reshape(x.shape)
    assert torch.allclose(block(x), expected, atol=1e-5)


def test_cross_attention_to_one_label_token_adds_that_tokens_value_everywhere():
    m = _randomise(tiny_unet(label_tokens=1)).eval()
    block, x = m.cross_attn, torch.randn(2, 8, 8, 8)
    ctx = m.label_context(torch.tensor([3, 10]))                                 # (B, 1, 8)
    att = block.attn
    value = att.update(torch.zeros(2, 1, 8), att.message.project(ctx).flatten(-2))   # (B, 1, C): softmax over 1 key = 1
    assert torch.allclose(block(x, ctx), x + value.transpose(1, 2)[..., None], atol=1e-5)


def test_label_changes_the_prediction_only_through_the_context():
    m = _randomise(tiny_unet()).eval()
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3, 3])
    a, b = m(x, t, torch.tensor([1, 1])), m(x, t, torch.tensor([2, 2]))
    assert not torch.allclose(a, b)
    with torch.no_grad():
        m.context.weight[2] = m.context.weight[1]
    assert torch.allclose(m(x, t, torch.tensor([2, 2])), a)


def test_bad_inputs_give_clear_errors():
    m = tiny_unet()
    z = torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match=r"expected x_t of shape \(B, 1, 8, 8\)"):
        m(torch.zeros(2, 1, 6, 6), z, z)
    with pytest.raises(ValueError, match="labels must lie"):
        m(torch.zeros(2, 1, 8, 8), z, torch.tensor([0, 11]))
    with pytest.raises(ValueError, match="expected t and y of shape"):
        m(torch.zeros(2, 1, 8, 8), z[:1], z)
    with pytest.raises(ValueError, match="not divisible"):
        tiny_unet(unet_channels=[8, 8, 8, 8, 8])
    with pytest.raises(ValueError, match="divisible by unet_heads"):
        tiny_unet(unet_heads=3)


def test_a_few_steps_lower_the_ddpm_loss():
    m = tiny_unet()
    x, y = DATA["train"][0][:64], DATA["train"][1][:64]
    g = torch.Generator().manual_seed(0)
    batch = {"x": x, "y": y, "t": torch.randint(0, 20, (64,), generator=g), "noise": torch.randn(x.shape, generator=g),
             "drop": torch.zeros(64, dtype=torch.bool)}
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    first = float(m.loss(batch).detach())
    for _ in range(25):
        loss = m.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(m.loss(batch).detach()) < 0.8 * first


def test_trains_through_the_trainer(tmp_path):
    cfg = Config("UNet", "digits16-diffusion", config_dict={
        "epochs": 1, "image_size": 8, "timesteps": 20, "unet_channels": [8, 16], "context_dim": 8,
        "train_batch_size": 256, "show_progress": False, "log_level": "WARNING", "checkpoint_dir": str(tmp_path)})
    test = Trainer.from_config(cfg).fit()
    assert set(test) >= {"mse"} and 0 < test["mse"] < 2
