"""Issue #20 (INFNet part): the synthetic data carry their planted signals (oracle vs features-blind baseline),
and the DIN-style target-attention diagnostic model: activation-unit score against a hand-written reference,
masking, bad input, a short training run."""
import numpy as np
import pytest
import torch

import recsys.multitask  # noqa: F401  (registers task, models, datasets)
from graphattn.config import Config
from graphattn.registry import get_model
from recsys.multitask.data import PLANTED_FEATURES, synthetic_three_task
from recsys.multitask.oracle import blind_auc, in_like_auc, oracle_auc, planted
from recsys.multitask.target_attention import ActivationUnitScore, target_field_index


@pytest.fixture(scope="module")
def small():
    return synthetic_three_task(n_samples=6000, seed=0)


def test_planted_features_are_what_the_labels_are_drawn_from(small):
    x = planted(small, "test")
    assert x.shape == (len(small.test), len(PLANTED_FEATURES)) and small.meta["planted_names"] == list(PLANTED_FEATURES)
    in_like = (small.test.seq[1] == small.test.cat[:, 1:2]).any(1).numpy()
    np.testing.assert_array_equal(x[:, 2], in_like)
    cross, f4, hit, uv = x.T
    expected = np.stack([2.5 * cross + 1.5 * f4 + 0.5 * uv, 3.0 * hit + 0.5 * uv, 1.5 * cross + 2.0 * hit - 1.5 * f4], 1) - 1
    np.testing.assert_allclose(small.meta["oracle_logits"].numpy(), expected, rtol=1e-5, atol=1e-5)


def test_oracle_beats_a_features_blind_baseline_on_every_task(small):
    oracle, blind = oracle_auc(small), blind_auc(small)
    for task in small.tasks:
        assert oracle[task] > blind[task] + 0.05, (task, oracle, blind)
    assert in_like_auc(small)["overlap"] > 0.7          # the overlap indicator alone ranks the overlap task


def test_planted_needs_the_synthetic_data(small):
    other = synthetic_three_task(n_samples=300, n_users=20, n_items=40, num_fields=6, seq_len=6, seed=1)
    other.meta.pop("planted")
    with pytest.raises(ValueError, match="no planted features"):
        planted(other, "test")


def test_activation_unit_score_matches_reference():
    torch.manual_seed(0)
    score = ActivationUnitScore(4, [5])
    q, k = torch.randn(2, 1, 1, 4), torch.randn(2, 1, 3, 4)          # (B, H, Nq, d), (B, H, Nk, d)
    out = score.dense(q, k)
    lin1, lin2 = score.mlp[0], score.mlp[2]
    ref = torch.empty(2, 1, 1, 3)
    for b in range(2):
        for j in range(3):
            z = torch.cat([q[b, 0, 0], k[b, 0, j], q[b, 0, 0] - k[b, 0, j], q[b, 0, 0] * k[b, 0, j]])
            ref[b, 0, 0, j] = lin2(torch.relu(lin1(z)))[0]
    torch.testing.assert_close(out, ref)
    edge_index = torch.tensor([[0, 1, 2], [0, 0, 0]])                     # sparse path: keys 0-2 -> query 0
    q_nodes, k_nodes = score.project(q[0, 0], k[0, 0])                     # (1, 1, d), (3, 1, d)
    torch.testing.assert_close(score.edge(q_nodes, k_nodes, edge_index)[:, 0], ref[0, 0, 0])


def _config(**extra):
    return Config("TargetAttention", "mtl-synthetic", config_dict={
        "embedding_size": 8, "tower_hidden": [8], "bottom_hidden": [16], "attention_hidden": [8], **extra})


def test_padding_gets_no_weight_and_weights_are_raw_by_default():
    data = synthetic_three_task(n_samples=200, n_users=20, n_items=40, num_fields=6, seq_len=6, seed=1)
    torch.manual_seed(0)
    model = get_model("TargetAttention")(_config(), data)
    batch = data.train.batch(torch.arange(32))
    w = model.attention_weights(batch)
    pad = torch.cat(batch["seq"], 1) == 0
    assert pad.any() and (w[pad] == 0).all()
    soft = get_model("TargetAttention")(_config(din_normalizer="softmax"), data).attention_weights(batch)
    per_type = soft.view(32, 3, 6).sum(-1)
    torch.testing.assert_close(per_type, torch.ones_like(per_type))
    assert target_field_index(data, None) == 1


def test_bad_config_is_a_clear_error():
    data = synthetic_three_task(n_samples=200, n_users=20, n_items=40, num_fields=6, seq_len=6, seed=1)
    with pytest.raises(ValueError, match="din_normalizer"):
        get_model("TargetAttention")(_config(din_normalizer="max"), data)
    with pytest.raises(ValueError, match="target_field 'nope'"):
        get_model("TargetAttention")(_config(target_field="nope"), data)


def test_short_training_lowers_the_loss():
    data = synthetic_three_task(n_samples=600, n_users=20, n_items=40, num_fields=6, seq_len=6, seed=1)
    torch.manual_seed(0)
    model = get_model("TargetAttention")(_config(), data)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    batch = data.train.batch(torch.arange(len(data.train)))
    first = model.compute_loss(batch)[0].item()
    for _ in range(30):
        opt.zero_grad()
        loss, _ = model.compute_loss(batch)
        loss.backward()
        opt.step()
    assert loss.item() < first - 0.05
