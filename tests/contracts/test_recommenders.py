"""Contracts every registered recommender (task ``recsys``) must meet, parametrised over the registry so a
model is covered the day it is registered.

- the score that ranks items equals the score its BPR loss was trained on, for the same (user, item) pairs;
- every pair or triple a sampler yields exists in the model's graph in the direction its loss assumes
  (users' training items; KG triples head -> tail as the data gives them, or as the model's own
  message-passing edges ``tail -> head`` where it has them), and negatives are never positives;
- a short training run on planted data lowers the loss and beats the untrained model's recall.

Convention the first check relies on: a model's CF loss compares positive and negative scores through
``recsys.models.base.bpr_loss`` (called from the model's module).
"""
import sys

import numpy as np
import pytest
import torch

import recsys  # noqa: F401  (registers the models)
from graphattn.config import Config
from graphattn.registry import get_model, list_models
from graphattn.training import Trainer
from recsys.data import planted_kg
from recsys.task import RecTask

RECOMMENDERS = list_models("recsys")
TINY = {"embedding_size": 16, "kg_embedding_size": 8, "layers": [16, 8], "mess_dropout": [0.1, 0.1],
        "train_batch_size": 64, "show_progress": False, "device": "cpu", "learning_rate": 0.01, "seed": 0}


@pytest.fixture(scope="module")
def data():
    return planted_kg(n_users=60, n_items=80, n_clusters=4, n_noise_entities=20, seed=0)


def _config(name, **over):
    known = Config(name, "planted-kg")
    return Config(name, "planted-kg", config_dict={k: v for k, v in {**TINY, **over}.items() if k in known})


def _trainer(name, data, **over):
    torch.manual_seed(0)
    cfg = _config(name, **over)
    return Trainer(cfg, RecTask(cfg, data))


def test_the_registry_has_recommenders():
    assert {"BPRMF", "CKE", "KGAT"} <= set(RECOMMENDERS)


@pytest.mark.parametrize("name", RECOMMENDERS)
def test_ranking_score_equals_the_trained_score(name, data, monkeypatch):
    trainer = _trainer(name, data)
    model = trainer.model.eval()                                 # no dropout: both scores are deterministic
    module = sys.modules[type(model).__module__]
    assert hasattr(module, "bpr_loss"), f"{name}'s module does not use recsys.models.base.bpr_loss"
    seen = {}
    real = module.bpr_loss

    def capture(pos, neg):
        seen["pos"], seen["neg"] = pos.detach(), neg.detach()
        return real(pos, neg)

    monkeypatch.setattr(module, "bpr_loss", capture)
    batch = next(iter(trainer.task.batches("cf")))
    users, pos, neg = batch[0] if isinstance(batch[0], tuple) else batch[:3]
    with torch.no_grad():
        model.training_step("cf", batch)
        user_emb, item_emb = model.full_sort_embeddings()
    full = user_emb @ item_emb.T                                  # what evaluation ranks by
    torch.testing.assert_close(seen["pos"], full[users, pos], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(seen["neg"], full[users, neg], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.predict(users, pos), full[users, pos], atol=1e-5, rtol=1e-5)


def _kg_truth(model, data):
    """(h, r, t) triples the model's KG loss should see: its message-passing edges (tail -> head) where it
    has them, else the dataset's triples."""
    if hasattr(model, "edge_index") and hasattr(model, "edge_type"):
        src, dst = model.edge_index.cpu().numpy()
        return set(zip(dst.tolist(), model.edge_type.cpu().numpy().tolist(), src.tolist()))
    return set(map(tuple, data.kg.tolist()))


@pytest.mark.parametrize("name", RECOMMENDERS)
def test_samplers_stay_inside_the_graph_in_the_loss_direction(name, data):
    trainer = _trainer(name, data)
    model, task = trainer.model, trainer.task
    train_pairs = set(map(tuple, data.train.tolist()))
    truth = _kg_truth(model, data)
    kg_truth_heads = {(h, r) for h, r, _ in truth}
    n_kg = 0
    for phase in task.phases:
        for i, batch in enumerate(task.batches(phase)):
            parts = batch if isinstance(batch[0], tuple) else (batch,)
            for part in parts:
                part = [p.numpy() for p in part]
                if len(part) == 3:                                   # (users, positive items, negative items)
                    users, pos, neg = part
                    assert all((u, i) in train_pairs for u, i in zip(users, pos)), "a positive is not a training pair"
                    assert not any((u, j) in train_pairs for u, j in zip(users, neg)), "a negative is a training positive"
                    assert len(set(users.tolist())) == len(users) or len(users) > len(set(data.train[:, 0]))
                else:                                                # (heads, relations, tails, corrupted tails)
                    h, r, t, neg = part
                    assert all(triple in truth for triple in zip(h, r, t)), "a KG triple is not in the model's graph as (head, relation, tail)"
                    assert not any(triple in truth for triple in zip(h, r, neg)), "a corrupted tail is a true triple"
                    assert all((a, b) in kg_truth_heads for a, b in zip(h, r))
                    n_kg += len(h)
            if i == 3:
                break
    if "kg" in task.phases or name == "CKE":
        assert n_kg > 0, f"{name} trains on the KG but its sampler yielded no triple"


@pytest.fixture(scope="module")
def larger():
    return planted_kg(n_users=120, n_items=160, n_clusters=8, n_noise_entities=40, seed=0)


@pytest.mark.parametrize("name", RECOMMENDERS)
def test_short_training_lowers_the_loss_and_raises_recall(name, larger):
    trainer = _trainer(name, larger, epochs=10, eval_step=10)
    before = trainer.evaluate("test")["recall@20"]
    trainer.fit()
    losses = [row["cf_loss"] for row in trainer.history["train"]]
    assert losses[-1] < losses[0], losses
    after = trainer.history["test"]["recall@20"]
    assert after > 1.5 * before, (before, after)          # measured: x2.0 (BPRMF), x2.5 (CKE), x3.5 (KGAT)


@pytest.mark.parametrize("name", RECOMMENDERS)
def test_resumed_training_continues_exactly(name, data, tmp_path):
    from graphattn.training import RunDir

    def run(epochs, resume=None, folder=None):
        cfg = _config(name, epochs=epochs, eval_step=1, checkpoint_dir=str(tmp_path), resume=resume)
        with (RunDir.open(folder, cfg) if folder else RunDir.create(cfg)) as rd:
            torch.manual_seed(0)
            trainer = Trainer(cfg, RecTask(cfg, data), run=rd)
            if resume:
                trainer.resume(resume)
            return trainer.fit(), trainer, rd.path

    straight, t1, _ = run(3)
    _, _, path = run(1)
    resumed, t2, _ = run(3, resume=str(path), folder=path)
    assert resumed == straight
    a, b = t1.state_dict(), t2.state_dict()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["task"] == b["task"] and a["step"] == b["step"] and a["stopper"] == b["stopper"]
    np.testing.assert_array_equal(a["rng"]["numpy"]["keys"].numpy(), b["rng"]["numpy"]["keys"].numpy())
