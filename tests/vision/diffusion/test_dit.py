import pytest
import torch

import vision.diffusion  # noqa: F401  (registers the task, dataset and DiT)
from graphattn.config import Config
from graphattn.training import Trainer
from vision.diffusion.data import load_digits_diffusion
from vision.diffusion.dit import DiT
from vision.diffusion.guidance import GuidedEps
from vision.diffusion.schedule import ddim_sample

TINY = {"hidden_size": 16, "num_layers": 2, "num_heads": 2, "mlp_ratio": 2.0, "patch_size": 2, "timesteps": 50,
        "noise_schedule": "cosine", "image_size": 8, "valid_ratio": 0.1, "test_ratio": 0.2, "split_seed": 0}


def tiny_model(**over):
    config = {**TINY, **over}
    torch.manual_seed(0)
    return DiT(config, load_digits_diffusion(config))


def test_data_range_and_split():
    data = load_digits_diffusion(TINY)
    x, y = data["train"]
    assert x.shape[1:] == (1, 8, 8) and float(x.min()) == -1.0 and float(x.max()) == 1.0
    assert sum(len(data[s][1]) for s in ("train", "valid", "test")) == 1797


def test_patchify_round_trip_and_token_count():
    m = tiny_model()
    x = torch.randn(3, 1, 8, 8)
    tokens = m.patchify(x)
    assert tokens.shape == (3, 16, 4)
    assert torch.equal(tokens[0, 1], x[0, 0, 0:2, 2:4].flatten())
    assert torch.equal(m.unpatchify(tokens), x)


def test_bad_inputs_give_clear_errors():
    m = tiny_model()
    with pytest.raises(ValueError, match=r"expected x_t of shape \(B, 1, 8, 8\)"):
        m(torch.zeros(2, 1, 6, 6), torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="labels must lie"):
        m(torch.zeros(1, 1, 8, 8), torch.zeros(1, dtype=torch.long), torch.tensor([11]))
    with pytest.raises(ValueError, match="patch_size"):
        tiny_model(patch_size=3)
    with pytest.raises(ValueError, match="pag_scale > 0 needs a perturbation"):
        GuidedEps(m, torch.zeros(1, dtype=torch.long), pag_scale=1.0)


def test_guidance_combines_the_batched_branches():
    m = tiny_model().eval()
    for p in m.parameters():   # make the output depend on the label
        torch.nn.init.normal_(p, std=0.2)
    x, t, y = torch.randn(3, 1, 8, 8), torch.tensor([5, 20, 40]), torch.tensor([1, 2, 3])
    with torch.no_grad():
        cond, uncond = m(x, t, y), m(x, t, torch.full_like(y, 10))
        guided = GuidedEps(m, y, cfg_scale=3.0)(x, t)
        plain = GuidedEps(m, y)(x, t)
    assert torch.allclose(guided, uncond + 3.0 * (cond - uncond), atol=1e-5)
    assert torch.allclose(plain, cond, atol=1e-6)


def test_short_training_through_the_trainer_lowers_the_loss(tmp_path):
    config = Config("DiT", "digits-diffusion", config_dict={
        **{k: v for k, v in TINY.items()}, "epochs": 3, "eval_step": 1, "show_progress": False, "device": "cpu",
        "seed": 0, "checkpoint_dir": str(tmp_path), "log_level": "WARNING", "train_batch_size": 128,
        "learning_rate": 3e-3, "eval_draws": 1, "warmup_epochs": 0})
    trainer = Trainer.from_config(config)
    before = trainer.evaluate("valid")["mse"]
    trainer.fit()
    after = trainer.evaluate("valid")["mse"]
    assert after < 0.8 * before, (before, after)
    m = trainer.model.eval()
    out = ddim_sample(GuidedEps(m, torch.arange(4)), m.schedule, (4, 1, 8, 8), steps=3,
                      generator=torch.Generator().manual_seed(0))
    assert out.shape == (4, 1, 8, 8) and torch.isfinite(out).all() and float(out.abs().max()) <= 1.0 + 1e-5


def test_image_grid_and_statistics_by_hand():
    from vision.diffusion.images import grid
    from vision.diffusion.judge import ink, pixel_variance

    images = torch.stack([torch.full((1, 2, 2), -1.0), torch.full((1, 2, 2), 1.0), torch.tensor([[[-1.0, 1.0], [1.0, -1.0]]])])
    g = grid(images, nrow=2)
    assert g.shape == (2 * 3 + 1, 2 * 3 + 1)
    assert (g[1:3, 1:3] == 0).all() and (g[1:3, 4:6] == 1).all() and g[0, 0] == 0.5
    assert torch.allclose(ink(images), torch.tensor([0.0, 1.0, 0.5]))
    assert torch.allclose(pixel_variance(images), torch.tensor([0.0, 0.0, 0.25]))
    with pytest.raises(ValueError, match=r"\(N, 1, S, S\)"):
        grid(images[:, 0], nrow=2)
