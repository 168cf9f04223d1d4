"""KGAT's knowledge-aware attention under the official schedule (issue #20): what the refresh computes, from which
parameters and when, which loss reaches the relation parameters, and why the TransR-trained score ranks relations
by the size of their projections (experiments/kgat_attention_diagnosis.py, docs/results/kgat_attention.md)."""
import numpy as np
import pytest
import torch

import recsys  # noqa: F401  (registers the models and the planted-kg dataset)
from graphattn.config import Config
from graphattn.training import Trainer

SMALL = {"n_users": 60, "n_items": 96, "n_clusters": 6, "n_noise_entities": 24}


def _trainer(**over) -> Trainer:
    cfg = Config("KGAT", "planted-kg", config_dict={
        "planted_kg": SMALL, "embedding_size": 8, "kg_embedding_size": 6, "layers": [6, 4], "mess_dropout": [0.1, 0.1],
        "learning_rate": 0.01, "train_batch_size": 32, "seed": 0, "show_progress": False, "log_level": "WARNING",
        **over})
    return Trainer.from_config(cfg, None)


def _reference_attention(model) -> np.ndarray:
    """alpha(h, r, t) = softmax over every triple (h, r', t') of pi = (W_r e_t)^T tanh(W_r e_h + e_r), float64."""
    x = model.embedding.weight.detach().double().numpy()
    W, e = model.score.W_r.detach().double().numpy(), model.score.e_r.detach().double().numpy()
    src, dst = model.edge_index.numpy()
    rel = model.edge_type.numpy()
    pi = np.array([W[r] @ x[t] @ np.tanh(W[r] @ x[h] + e[r]) for t, h, r in zip(src, dst, rel)])
    alpha = np.zeros_like(pi)
    for h in np.unique(dst):
        m = dst == h
        z = np.exp(pi[m] - pi[m].max())
        alpha[m] = z / z.sum()
    return alpha


def _phase(trainer, phase):
    for batch in trainer.task.batches(phase):
        trainer.train_step(phase, batch)


def test_refresh_uses_the_parameters_after_the_kg_phase_and_a_softmax_over_every_relation():
    trainer = _trainer()
    model = trainer.model
    trainer.train_epoch()                                      # epoch 1: CF, KG, refresh
    _phase(trainer, "cf")                                      # epoch 2 by hand
    before_kg = model.attention_weights().double().numpy()
    _phase(trainer, "kg")
    model.on_epoch_end()
    refreshed = model.edge_attention.double().numpy()
    ref = _reference_attention(model)                          # from the current (post-KG) parameters
    np.testing.assert_allclose(refreshed, ref, atol=1e-5)
    assert np.abs(ref - before_kg).max() > 1e-3                # refreshing before the KG phase would differ
    dst = model.edge_index[1].numpy()
    sums = np.bincount(dst, weights=refreshed)
    np.testing.assert_allclose(sums[np.unique(dst)], 1.0, atol=1e-5)    # one softmax per head ...
    rel = model.edge_type.numpy()
    items = dst < trainer.task.data.n_items
    assert all(len(np.unique(rel[items & (dst == i)])) >= 3 for i in range(5))   # ... across relation types
    # the CF step propagates with exactly these weights (no stale cached matrix)
    x = torch.randn(model.n_nodes, 3)
    direct = torch.zeros(model.n_nodes, 3).index_add_(0, model.edge_index[1], model.edge_attention[:, None]
                                                     * x[model.edge_index[0]])
    torch.testing.assert_close(model.adjacency.propagate(x), direct, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["fixed", "end_to_end"])
def test_which_loss_reaches_the_relation_parameters(mode):
    """Official (fixed) schedule: the CF loss never reaches W_r, e_r (the attention is a constant matrix), only
    TransR trains them; end_to_end: both do."""
    trainer = _trainer(attention_mode=mode)
    model = trainer.model
    model.refresh_attention()
    cf = next(iter(trainer.task.batches("cf")))
    kg = next(iter(trainer.task.batches("kg")))
    grads = {}
    for phase, batch in (("cf", cf), ("kg", kg)):
        model.zero_grad(set_to_none=True)
        model.training_step(phase, batch)[0].backward()
        grads[phase] = [0.0 if p.grad is None else float(p.grad.norm()) for p in (model.score.W_r, model.score.e_r)]
    assert min(grads["kg"]) > 0
    if mode == "fixed":
        assert grads["cf"] == [0.0, 0.0]
    else:
        assert min(grads["cf"]) > 0


def test_the_score_ranks_relations_by_the_size_of_their_projections():
    """At a perfect TransR fit (W_r e_h + e_r = W_r e_t = v) pi = v^T tanh(v): the same fit with a larger projection
    scores higher, so scaling one relation's W_r and e_r by c (TransR's distances scale by c^2, its ranking of
    tails within the relation does not change) moves that relation's attention against the others."""
    from graphattn.attention import RelationalScore

    torch.manual_seed(0)
    score = RelationalScore(4, 2, 3)
    x = torch.randn(3, 4)                                       # node 0 = head, 1 and 2 = tails of relations 0, 1
    edge_index, edge_type = torch.tensor([[1, 2], [0, 0]]), torch.tensor([0, 1])
    with torch.no_grad():
        for r, t in ((0, 1), (1, 2)):                          # exact fit: e_r = W_r (e_t - e_h)
            score.e_r[r] = score.W_r[r] @ (x[t] - x[0])
        pi = score.edge(x, x, edge_index, edge_type)[:, 0]
        v = torch.stack([score.W_r[0] @ x[1], score.W_r[1] @ x[2]])
        torch.testing.assert_close(pi, (v * torch.tanh(v)).sum(-1))
        share_before = torch.softmax(pi, 0)[0]
        score.W_r[0] *= 3.0
        score.e_r[0] *= 3.0
        share_after = torch.softmax(score.edge(x, x, edge_index, edge_type)[:, 0], 0)[0]
    assert share_after > share_before + 0.05
