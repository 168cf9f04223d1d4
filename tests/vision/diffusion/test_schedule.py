import math

import pytest
import torch

from vision.diffusion.schedule import NoiseSchedule, ddim_sample


def test_linear_and_cosine_betas_by_hand():
    s = NoiseSchedule(4, "linear")
    betas = [min(1e-4 * 250 + i * (0.02 * 250 - 1e-4 * 250) / 3, 0.999) for i in range(4)]
    assert torch.allclose(s.betas, torch.tensor(betas), atol=1e-7)
    abar = [math.prod(1 - b for b in betas[: i + 1]) for i in range(4)]
    assert torch.allclose(s.alpha_bar, torch.tensor(abar), atol=1e-6)
    c = NoiseSchedule(3, "cosine")
    f = [math.cos((i / 3 + 0.008) / 1.008 * math.pi / 2) ** 2 for i in range(4)]
    betas_c = [min(1 - f[i + 1] / f[i], 0.999) for i in range(3)]   # the last one is clamped
    abar_c = [math.prod(1 - b for b in betas_c[: i + 1]) for i in range(3)]
    assert torch.allclose(c.alpha_bar, torch.tensor(abar_c), atol=1e-6)
    assert abs(abar_c[1] - f[2] / f[0]) < 1e-9   # unclamped steps follow f(t) / f(0)


def test_q_sample_matches_the_marginal_formula_and_statistics():
    s = NoiseSchedule(10, "cosine")
    x0, noise, t = torch.randn(3, 1, 2, 2), torch.randn(3, 1, 2, 2), torch.tensor([0, 4, 9])
    ab = s.alpha_bar[t].view(3, 1, 1, 1)
    assert torch.allclose(s.q_sample(x0, t, noise), ab.sqrt() * x0 + (1 - ab).sqrt() * noise)
    # marginal mean and variance over many noise draws, x0 = 1
    g = torch.Generator().manual_seed(0)
    many = s.q_sample(torch.ones(20000, 1, 1, 1), torch.full((20000,), 5), torch.randn(20000, 1, 1, 1, generator=g))
    a = float(s.alpha_bar[5])
    assert abs(float(many.mean()) - math.sqrt(a)) < 0.02 and abs(float(many.var()) - (1 - a)) < 0.02


def test_ddim_with_eta_zero_is_deterministic_and_inverts_a_perfect_predictor():
    s = NoiseSchedule(50, "linear")
    x0 = torch.rand(2, 1, 3, 3) * 2 - 1
    noise = torch.randn(2, 1, 3, 3, generator=torch.Generator().manual_seed(1))
    x_T = s.q_sample(x0, torch.full((2,), 49), noise)

    def oracle(x, t):   # the exact eps for a single known x0
        ab = s.abar(t).view(-1, 1, 1, 1)
        return (x - ab.sqrt() * x0) / (1 - ab).sqrt()

    a = ddim_sample(oracle, s, x0.shape, steps=5, eta=0.0, x_T=x_T, generator=torch.Generator().manual_seed(0))
    b = ddim_sample(oracle, s, x0.shape, steps=5, eta=0.0, x_T=x_T, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    assert torch.allclose(a, x0, atol=1e-4)


def test_ddim_eta_one_over_every_step_is_the_ddpm_posterior_step():
    s = NoiseSchedule(8, "cosine")
    x, eps, z = torch.randn(4, 1, 2, 2), torch.randn(4, 1, 2, 2), torch.randn(4, 1, 2, 2)
    t = torch.tensor([7, 5, 3, 1])
    # Ho et al. eq. 11 by hand: mean = (x - beta / sqrt(1 - abar) eps) / sqrt(alpha), var = beta_tilde
    beta = s.betas[t].view(-1, 1, 1, 1)
    ab, abp = s.alpha_bar[t].view(-1, 1, 1, 1), s.alpha_bar[t - 1].view(-1, 1, 1, 1)
    ref = (x - beta / (1 - ab).sqrt() * eps) / (1 - beta).sqrt() + (beta * (1 - abp) / (1 - ab)).sqrt() * z
    assert torch.allclose(s.ddpm_step(x, t, eps, z), ref, atol=1e-6)
    assert torch.allclose(s.ddim_step(x, t, t - 1, eps, eta=1.0, noise=z), ref, atol=1e-5)


def test_bad_schedule_inputs_give_clear_errors():
    with pytest.raises(ValueError, match="noise_schedule"):
        NoiseSchedule(10, "quadratic")
    with pytest.raises(ValueError, match="timesteps"):
        NoiseSchedule(1)
    s = NoiseSchedule(10)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 10\)"):
        s.q_sample(torch.zeros(1, 1, 2, 2), torch.tensor([10]), torch.zeros(1, 1, 2, 2))
    with pytest.raises(ValueError, match="sampling steps"):
        s.timesteps_for(11)
    with pytest.raises(ValueError, match="eta"):
        s.ddim_step(torch.zeros(1, 1), torch.tensor([3]), torch.tensor([2]), torch.zeros(1, 1), eta=2.0)
