"""InductionMinimal: the loss against a hand computation and the closed form, the flat start at L = N,
the attention readers, a short run through the Trainer, errors."""
import math

import pytest
import torch

import sequence  # noqa: F401  (registers task icl)
from graphattn.config import Config
from graphattn.interpret import ablate_heads, capture_attention
from graphattn.training import Trainer
from sequence.icl.bursty_data import BurstyConfig, BurstyData, sample_bursty
from sequence.icl.minimal import InductionMinimal, phenomenological_loss


def _orthonormal(K, L, N, **over):
    """Data whose K class means and L labels are distinct basis vectors (eps = 0): the closed form is exact."""
    cfg = BurstyConfig(num_classes=K, num_labels=L, num_pairs=N, dim=K + L, eps=0.0, max_pairs=N, no_repeats=True,
                       novel_classes=K, **over)
    eye = torch.eye(K + L)
    return BurstyData(cfg, eye[:K], eye[K:])


def _model(data, inweights=False, **params):
    config = Config("InductionMinimal", "icl-bursty", config_dict={"icl_minimal_inweights": inweights})
    model = InductionMinimal(config, data)
    with torch.no_grad():
        for name, value in params.items():
            getattr(model, name).fill_(value)
    return model


def test_loss_of_a_hand_made_sequence():
    data = _orthonormal(K=4, L=4, N=2)
    model = _model(data, beta1=0.7, alpha=1.3, xi=2.1)
    P = data.config.positions
    e = torch.eye(8)
    content = torch.stack([e[0], e[4], e[1], e[5], e[0]])        # x = class 0, l = 0, x = class 1, l = 1, query class 0
    tokens = torch.cat([torch.eye(P)[:5], content], -1)[None]
    loss, _ = model.loss({"tokens": tokens, "target": torch.tensor([0])})
    # by hand: w1 = sigma(0.7); the query's overlap with label token 1 is w1, with label token 2 zero
    w1 = 1 / (1 + math.exp(-0.7))
    a = math.exp(1.3 * w1) / (math.exp(1.3 * w1) + 1)
    z = [2.1 * a, 2.1 * (1 - a), 0.0, 0.0]
    expected = -z[0] + math.log(sum(math.exp(v) for v in z))
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-6)
    closed = phenomenological_loss(torch.tensor(0.7), torch.tensor(1.3), torch.tensor(2.1), 2, 4)
    assert float(closed) == pytest.approx(expected, rel=1e-6)


def test_sampled_batch_matches_the_closed_form():
    data = _orthonormal(K=16, L=8, N=4)
    model = _model(data, beta1=-0.4, alpha=2.5, xi=3.0)
    batch = data.sample(64, torch.Generator().manual_seed(0))
    loss, _ = model.loss(batch)
    closed = phenomenological_loss(torch.tensor(-0.4), torch.tensor(2.5), torch.tensor(3.0), 4, 8)
    assert float(loss.detach()) == pytest.approx(float(closed), rel=1e-5)


def _grads(model, batch):
    model.zero_grad()
    model.loss(batch)[0].backward()
    return {n: float(getattr(model, n).grad) for n in ("beta1", "alpha", "xi")}


def test_flat_start_at_L_equal_N_but_not_at_L_greater_than_N():
    g = torch.Generator().manual_seed(1)
    flat = _orthonormal(K=8, L=4, N=4)
    grads = _grads(_model(flat), flat.sample(32, g))
    assert all(abs(v) < 1e-7 for v in grads.values()), grads           # the origin is a critical point
    slope = _orthonormal(K=16, L=8, N=4)
    grads = _grads(_model(slope), slope.sample(32, g))
    assert grads["xi"] == pytest.approx(1 / 8 - 1 / 4, abs=1e-6)       # dL/dxi = 1/L - 1/N: xi moves first
    assert grads["alpha"] == 0 and grads["beta1"] == 0                 # ... alpha and beta_1 wait for xi
    grads = _grads(_model(slope, xi=1.0), slope.sample(32, g))
    assert grads["alpha"] < 0 and grads["beta1"] == 0                  # xi > 0: alpha next (beta_1 needs alpha)
    grads = _grads(_model(slope, xi=1.0, alpha=1.0), slope.sample(32, g))
    assert grads["beta1"] < 0
    # random (non-orthonormal) vectors: L = N still has no drift of xi in expectation
    rnd = BurstyConfig(num_classes=64, num_labels=8, num_pairs=8, dim=63, max_pairs=8, no_repeats=True, p_novel=1.0)
    data = BurstyData(rnd, torch.randn(64, 63, generator=g) / 63 ** 0.5, torch.randn(8, 63, generator=g) / 63 ** 0.5)
    assert abs(_grads(_model(data), data.sample(8192, g))["xi"]) < 5e-3


def test_attention_readers_work_unchanged():
    data = _orthonormal(K=16, L=8, N=4)
    model = _model(data, beta1=1.0, alpha=4.0, xi=5.0)
    batch = data.sample(16, torch.Generator().manual_seed(2))
    with capture_attention(model) as store:
        model(batch["tokens"])
    w1, w2 = store["layer1"][0], store["layer2"][0]
    assert w1.shape == (16, 1, 9, 9) and w2.shape == (16, 1, 1, 4)
    torch.testing.assert_close(w1[:, 0, 3, 2], torch.full((16,), torch.sigmoid(torch.tensor(1.0)).item()))
    assert float(w1[:, 0, 3, :2].abs().sum()) == 0                      # only the previous-token and self edges
    metrics = model.evaluate(batch)
    assert metrics["prev_token"] == pytest.approx(float(torch.sigmoid(torch.tensor(1.0))))
    assert metrics["accuracy"] == 1.0
    with ablate_heads(model.layer2, [0]), torch.no_grad():
        assert float(model.loss(batch)[0]) == pytest.approx(math.log(8), rel=1e-6)   # nothing copied: chance


def test_short_run_learns_in_context(tmp_path):
    config = Config("InductionMinimal", "icl-bursty", config_dict={
        "epochs": 3, "steps_per_epoch": 60, "train_batch_size": 64, "learning_rate": 0.5, "icl_classes": 32,
        "icl_labels": 8, "icl_pairs": 4, "icl_item_dim": 31, "icl_max_pairs": 4, "icl_p_novel": 1.0,
        "icl_valid_size": 256, "icl_test_size": 256, "num_threads": 1, "device": "cpu", "log_level": "WARNING",
        "show_progress": False, "checkpoint_dir": str(tmp_path), "seed": 0})
    trainer = Trainer.from_config(config)
    before = trainer.evaluate("valid")
    trainer.train()
    after = trainer.evaluate("valid")
    assert after["ic_loss"] < before["ic_loss"] - 0.5
    assert after["ic_accuracy"] > 0.8 and before["ic_accuracy"] < 0.3
    assert after["xi"] > 0 and after["alpha"] > 0 and after["beta1"] > 0


def test_inweights_option_and_errors():
    data = _orthonormal(K=16, L=8, N=4)
    model = _model(data, inweights=True)
    assert model.inweights.weight.shape == (8, 24) and float(model.inweights.weight.abs().sum()) == 0
    assert sum(p.numel() for p in _model(data).parameters()) == 3
    with pytest.raises(ValueError, match="tokens must be"):
        model(torch.zeros(2, 9, 5))
    from sequence.icl.regression_data import RegressionData
    with pytest.raises(ValueError, match="classification"):
        InductionMinimal(Config("InductionMinimal", "icl-regression"), RegressionData(5, 40, 0.1))
