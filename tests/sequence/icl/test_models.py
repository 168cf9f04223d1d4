"""ICLRegression and InductionNet: formulas against hand loops, read-outs, short runs, errors."""
import math

import pytest
import torch

import sequence  # noqa: F401  (registers task icl)
from graphattn.config import Config
from graphattn.training import Trainer
from sequence.icl.induction import induction_score, previous_token_score
from sequence.icl.regression_data import RegressionData, sample_regression

TINY_BURSTY = {"icl_classes": 32, "icl_labels": 8, "icl_pairs": 4, "icl_item_dim": 15, "icl_max_pairs": 4,
               "icl_valid_size": 64, "icl_test_size": 64}


def _regression(heads=2, **over):
    cfg = Config("ICLRegression", "icl-regression", config_dict={"icl_heads": heads, "icl_valid_size": 64,
                                                                  "icl_test_size": 64, **over})
    from sequence.icl.regression import ICLRegression
    return ICLRegression(cfg, RegressionData(5, 40, 0.1)), cfg


def test_regression_forward_is_the_papers_formula():
    torch.manual_seed(0)
    model, _ = _regression(heads=3)
    b = sample_regression(4, 7, 5, 0.1, torch.Generator().manual_seed(1))
    Z, zq = b["context"], b["query"][:, 0]                                        # (B, L, 6), (B, 6)
    w = 6
    Q = model.attn.score.q.weight.view(3, w, w)
    K = model.attn.score.k.weight.view(3, w, w)
    V = model.attn.message.v.weight.view(3, w, w)
    O = model.attn.update.proj.weight.view(3, w)
    expected = torch.zeros(4)
    for i in range(4):
        for h in range(3):
            logits = (Z[i] @ K[h].T) @ (Q[h] @ zq[i]) / math.sqrt(w)                # (L,)
            expected[i] += O[h] @ V[h] @ Z[i].T @ torch.softmax(logits, 0)
    torch.testing.assert_close(model(b["context"], b["query"]), expected)


def test_read_outs_of_an_idealised_head():
    model, _ = _regression(heads=2)
    w, scale = 6, 1 / math.sqrt(6)
    with torch.no_grad():
        q = torch.zeros(2, w, w)
        q[0, :5, :5], q[1, :5, :5] = 2 * torch.eye(5), -3 * torch.eye(5)
        model.attn.score.q.weight.copy_(q.reshape(-1, w))
        model.attn.score.k.weight.copy_(torch.eye(w).repeat(2, 1))
        model.attn.message.v.weight.copy_(torch.eye(w).repeat(2, 1))
        o = torch.zeros(2, w)
        o[0, 5], o[1, 5] = 1.5, -1.5
        model.attn.update.proj.weight.copy_(o.reshape(1, -1))
    omega, mu = model.omega_mu()
    torch.testing.assert_close(omega, torch.tensor([2 * scale, -3 * scale]))
    torch.testing.assert_close(mu, torch.tensor([1.5, -1.5]))
    from sequence.icl.estimators import reduced_predictor
    b = sample_regression(16, 40, 5, 0.1, torch.Generator().manual_seed(2))
    torch.testing.assert_close(model(b["context"], b["query"]), reduced_predictor(b["context"], b["query"], omega, mu))


def test_regression_short_run_lowers_the_loss(tmp_path):
    cfg = Config("ICLRegression", "icl-regression", config_dict={
        "icl_heads": 2, "epochs": 2, "steps_per_epoch": 60, "learning_rate": 0.01, "icl_valid_size": 512,
        "icl_test_size": 64, "show_progress": False, "checkpoint_dir": str(tmp_path), "log_level": "WARNING"})
    trainer = Trainer.from_config(cfg)
    before = trainer.evaluate("valid")["mse"]
    trainer.train()
    after = trainer.evaluate("valid")["mse"]
    assert after < before - 0.1 and {"omega_0", "mu_1"} <= set(trainer.evaluate("valid"))


def test_progress_measures_on_hand_made_attention():
    T = 9                                                                          # N = 4 pairs + query
    layer1 = torch.zeros(1, 1, T, T)
    layer1[0, 0, torch.arange(T), torch.arange(T)] = 1.0                           # attend to self ...
    layer1[0, 0, 1, :] = torch.tensor([1.0, 0, 0, 0, 0, 0, 0, 0, 0])               # ... label 1 -> item 0
    layer1[0, 0, 3, :] = torch.tensor([0.5, 0, 0.5, 0, 0, 0, 0, 0, 0])             # label 3 -> half on item 2
    assert float(previous_token_score(layer1)) == pytest.approx((1 + 0.5 + 0 + 0) / 4)
    layer2 = torch.zeros(1, 1, 1, T)
    layer2[0, 0, 0, 3], layer2[0, 0, 0, 5], layer2[0, 0, 0, 8] = 0.6, 0.3, 0.1
    classes = torch.tensor([[7, 4, 9, 4, 4]])                                      # query class 4: pairs 1 and 3
    assert float(induction_score(layer2, classes)) == pytest.approx(0.6)           # label tokens 3 and 7


def test_induction_net_short_run_lowers_the_loss(tmp_path):
    cfg = Config("InductionNet", "icl-bursty", config_dict={
        **TINY_BURSTY, "epochs": 1, "steps_per_epoch": 80, "learning_rate": 0.1, "icl_p_bursty": 0.0,
        "show_progress": False, "checkpoint_dir": str(tmp_path), "log_level": "WARNING", "seed": 3})
    trainer = Trainer.from_config(cfg)
    g = torch.Generator().manual_seed(0)
    batch = trainer.task.data.sample(512, g)
    with torch.no_grad():
        before = float(trainer.model.loss(batch)[0])
    trainer.train()
    with torch.no_grad():
        after = float(trainer.model.loss(batch)[0])
    assert after < before - 0.05
    metrics = trainer.evaluate("valid")
    assert {"ic_accuracy", "ic2_accuracy", "iw_accuracy", "ic_prev_token", "ic_induction"} <= set(metrics)


def test_bad_input_gives_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="icl_heads must be >= 1"):
        _regression(heads=0)
    with pytest.raises(ValueError, match="icl_init: expected one of"):
        _regression(icl_init="zeros")
    cfg = Config("InductionNet", "icl-bursty", config_dict={**TINY_BURSTY, "checkpoint_dir": str(tmp_path)})
    trainer = Trainer.from_config(cfg)
    with pytest.raises(ValueError, match=r"tokens must be \(B, 9, 24\)"):
        trainer.model(torch.zeros(2, 9, 23))
    from sequence.icl.induction import InductionNet
    with pytest.raises(ValueError, match="reads classification prompts"):
        InductionNet(cfg, RegressionData(5, 40, 0.1))
    with pytest.raises(ValueError, match="multiple of num_labels"):
        Trainer.from_config(Config("InductionNet", "icl-bursty", config_dict={**TINY_BURSTY, "icl_classes": 30}))
