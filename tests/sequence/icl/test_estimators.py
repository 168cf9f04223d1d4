"""Closed-form predictors and the surrogate loss against hand computations."""
import math

import pytest
import torch

from sequence.icl.estimators import (debiased_gd_predictor, gd_predictor, optimal_mu, reduced_predictor,
                                     ridge_predictor, surrogate_gradient_flow, surrogate_loss)
from sequence.icl.regression_data import sample_regression


def test_reduced_predictor_matches_a_hand_computation():
    # one prompt, d = 1, L = 2: x = (1, 2), y = (3, 5), x_q = 1
    context = torch.tensor([[[1.0, 3.0], [2.0, 5.0]]])
    query = torch.tensor([[[1.0, 0.0]]])
    omega, mu = torch.tensor([0.5, -0.5]), torch.tensor([2.0, -2.0])
    p_plus = math.exp(0.5) / (math.exp(0.5) + math.exp(1.0))            # softmax of (0.5, 1.0)
    p_minus = math.exp(-0.5) / (math.exp(-0.5) + math.exp(-1.0))
    head = lambda p: p * 3 + (1 - p) * 5  # noqa: E731
    expected = 2 * head(p_plus) - 2 * head(p_minus)
    assert float(reduced_predictor(context, query, omega, mu)) == pytest.approx(expected)
    # GD: (c / L) sum y_i x_i x_q with c = sum omega mu = 2; debiased subtracts (sum y) xbar x_q
    assert float(gd_predictor(context, query, 2.0)) == pytest.approx(2 / 2 * (3 + 10))
    assert float(debiased_gd_predictor(context, query, 2.0)) == pytest.approx(2 / 2 * (3 + 10 - 8 * 1.5))


def test_small_omega_pair_is_debiased_gd_to_first_order():
    b = sample_regression(64, 40, 5, 0.1, torch.Generator().manual_seed(0))
    for w in (1e-2, 1e-3):
        red = reduced_predictor(b["context"], b["query"], torch.tensor([w, -w]), torch.tensor([1.0, -1.0]))
        deb = debiased_gd_predictor(b["context"], b["query"], 2 * w)
        assert float((red - deb).abs().max() / deb.abs().max()) < 10 * w  # error O(omega) relative


def test_ridge_with_zero_noise_recovers_beta():
    b = sample_regression(8, 40, 5, 0.0, torch.Generator().manual_seed(0))
    torch.testing.assert_close(ridge_predictor(b["context"], b["query"], 1e-8), b["target"], atol=1e-4, rtol=1e-4)


def test_optimal_mu_zeroes_the_gradient_and_flow_finds_the_opposite_pair():
    omega = torch.tensor([0.2, -0.2], dtype=torch.float64)
    mu = optimal_mu(omega, 5, 40, 0.1).requires_grad_(True)
    (g,) = torch.autograd.grad(surrogate_loss(omega, mu, 5, 40, 0.1), mu)
    assert float(g.abs().max()) < 1e-10
    # from a small start with opposite-sign omegas the flow reaches the +/- pair with zero-sum mu; it has a
    # lower loss than the same-sign (single-head kernel) fixed point omega_1 = omega_2 = 1/sqrt(d)
    opp = surrogate_gradient_flow(torch.tensor([0.01, -0.02]), torch.tensor([0.01, -0.005]), 5, 40, 0.1,
                                  lr=0.05, steps=1500, record_every=500)
    same = surrogate_gradient_flow(torch.tensor([0.01, 0.02]), torch.tensor([0.01, -0.005]), 5, 40, 0.1,
                                   lr=0.05, steps=1500, record_every=500)
    w, m = opp["omega"][-1], opp["mu"][-1]
    assert w[0] * w[1] < 0 and m[0] * m[1] < 0 and abs(float(m.sum())) < 1e-3
    torch.testing.assert_close(same["omega"][-1], torch.full((2,), 5 ** -0.5, dtype=torch.float64), atol=1e-4, rtol=0)
    assert opp["loss"][-1] < same["loss"][-1] - 0.1 and opp["loss"][-1] < opp["loss"][0]


def test_bad_shapes_give_clear_errors():
    with pytest.raises(ValueError, match="context must be"):
        reduced_predictor(torch.zeros(4, 6), torch.zeros(4, 6), torch.ones(1), torch.ones(1))
    with pytest.raises(ValueError, match="one entry per head"):
        reduced_predictor(torch.zeros(1, 3, 6), torch.zeros(1, 1, 6), torch.ones(2), torch.ones(3))
    with pytest.raises(ValueError, match="batch, length and dim"):
        sample_regression(0, 40, 5, 0.1)
