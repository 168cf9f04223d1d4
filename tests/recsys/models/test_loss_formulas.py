"""Each recommender's losses against the formula of its docstring, written out by hand on a tiny batch.

The regularisation weights are large here so that a wrong L2 term (its halving, its division by the batch
size, a missing tensor) changes the loss by far more than the tolerance.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import recsys  # noqa: F401  (registers the models)
from graphattn.registry import get_model
from recsys.models.base import RecModel, bpr_loss, l2_half
from recsys.models.cke import _Joint
from recsys.sampler import BPRSampler, KGSampler

BASE = {"embedding_size": 6, "kg_embedding_size": 4, "layers": [5, 3], "aggregator": "bi", "mess_dropout": [0.0, 0.0],
        "reg_weight": [0.3, 0.7], "negative_slope": 0.2, "attention_mode": "fixed", "use_attention": True,
        "use_kge": True, "learning_rate": 1e-3, "weight_decay": 0.0, "optimizer": "adam", "train_batch_size": 2,
        "kg_batch_size": 0}
USERS, POS, NEG = torch.tensor([0, 1, 1]), torch.tensor([0, 2, 2]), torch.tensor([3, 1, 0])


def _model(name, data, **over):
    torch.manual_seed(0)
    return get_model(name)({**BASE, **over}, data)


def _transr(W, e_r, h, r, t, n):
    """``softplus(g(h,r,t) - g(h,r,t'))`` with ``g = ||W_r h + e_r - W_r t||^2``, and the projections."""
    ph, pt, pn = (torch.einsum("bkd,bd->bk", W[r], x) for x in (h, t, n))
    pos, neg = (ph + e_r - pt).pow(2).sum(-1), (ph + e_r - pn).pow(2).sum(-1)
    return torch.log1p(torch.exp(pos - neg)).mean(), (ph, pt, pn)


def _sq(*ts):
    return sum(float(t.detach().pow(2).sum()) for t in ts)


def test_bpr_loss_and_l2_half():
    pos, neg = torch.tensor([2.0, -1.0]), torch.tensor([0.5, 1.0])
    assert bpr_loss(pos, neg).item() == pytest.approx(float(-torch.log(torch.sigmoid(pos - neg)).mean()))
    assert l2_half(torch.tensor([1.0, 2.0]), torch.tensor([[3.0]])).item() == pytest.approx((1 + 4 + 9) / 2)


def test_bprmf_loss_by_hand(hand_dataset):
    model = _model("BPRMF", hand_dataset, reg_weight=0.3)
    loss, parts = model.cf_loss(USERS, POS, NEG)
    u, i, j = model.user_embedding.weight[USERS], model.item_embedding.weight[POS], model.item_embedding.weight[NEG]
    mf = torch.log1p(torch.exp((u * j).sum(1) - (u * i).sum(1))).mean().item()
    reg = 0.3 * _sq(u, i, j) / 2 / 3
    assert parts["bpr"] == pytest.approx(mf, rel=1e-5) and parts["reg"] == pytest.approx(reg, rel=1e-5)
    assert loss.item() == pytest.approx(mf + reg, rel=1e-5)
    users, items = model.full_sort_embeddings()
    assert users is model.user_embedding.weight and items is model.item_embedding.weight


def test_cke_joint_loss_by_hand(hand_dataset):
    model = _model("CKE", hand_dataset)
    heads, rels, tails, negs = torch.tensor([0, 2]), torch.tensor([0, 1]), torch.tensor([4, 5]), torch.tensor([1, 3])
    loss, parts = model.training_step("cf", ((USERS, POS, NEG), (heads, rels, tails, negs)))
    ent, item = model.entity_embedding.weight, model.item_embedding.weight
    u, i, j = model.user_embedding.weight[USERS], item[POS] + ent[POS], item[NEG] + ent[NEG]
    mf = torch.log1p(torch.exp((u * j).sum(1) - (u * i).sum(1))).mean().item()
    e_r = model.relation_embedding.weight[rels]
    transr, (ph, pt, pn) = _transr(model.W_r, e_r, ent[heads], rels, ent[tails], ent[negs])
    expected = mf + 0.3 * _sq(u, i, j) / 2 / 3 + transr.item() + 0.7 * _sq(ph, pt, pn, e_r) / 2 / 2
    assert parts == pytest.approx({"bpr": mf, "transr": transr.item()}, rel=1e-5)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    users, items = model.full_sort_embeddings()
    assert torch.equal(items, item + ent[:4]) and users is model.user_embedding.weight


def test_cke_without_triples_trains_the_cf_part_alone(hand_dataset):
    from dataclasses import replace
    data = replace(hand_dataset, kg=np.zeros((0, 3), dtype=np.int64))
    model = _model("CKE", data, use_kg=False)
    samplers = model.samplers(BASE, data, seed=0)
    assert set(samplers) == {"cf"} and isinstance(samplers["cf"], BPRSampler)
    loss, parts = model.training_step("cf", (USERS, POS, NEG))
    assert set(parts) == {"bpr"} and loss.item() == pytest.approx(model.cf_loss(USERS, POS, NEG)[0].item())


def test_cke_draws_one_kg_batch_per_cf_batch_by_the_official_rule(small_planted):
    model = _model("CKE", small_planted)
    samplers = model.samplers({**BASE, "train_batch_size": 16}, small_planted, seed=4)
    joint = samplers["cf"]
    assert isinstance(joint, _Joint) and set(samplers) == {"cf"}
    cf, kg = joint.cf, joint.kg
    expected_bs = max(1, len(small_planted.kg) // max(1, len(small_planted.train) // 16))
    assert kg.batch_size == expected_bs and len(kg) == len(cf) == len(joint) and kg.n_nodes == model.n_entities
    assert kg.rng.bit_generator.state == np.random.default_rng(5).bit_generator.state    # seed + 1
    assert cf.rng.bit_generator.state == np.random.default_rng(4).bit_generator.state
    fixed = model.samplers({**BASE, "train_batch_size": 16, "kg_batch_size": 7}, small_planted, seed=4)["cf"]
    assert fixed.kg.batch_size == 7 and len(fixed.kg) == len(fixed.cf)   # one KG batch per CF batch, whatever its size
    batches = list(joint)
    assert len(batches) == len(cf) and all(len(b) == 2 and len(b[0]) == 3 and len(b[1]) == 4 for b in batches)
    joint.shard(1, 2)
    assert (cf.rank, cf.world_size, kg.rank, kg.world_size) == (1, 2, 1, 2)
    state = joint.state_dict()
    first = joint.cf.next_batch(), joint.kg.next_batch()
    joint.load_state_dict(state)
    again = joint.cf.next_batch(), joint.kg.next_batch()
    assert all(np.array_equal(a, b) for x, y in zip(first, again) for a, b in zip(x, y))


@pytest.mark.parametrize("batch, expected", [(2, 4), (1, 1)])
def test_cke_kg_batch_rule_at_its_bounds(hand_dataset, batch, expected):
    """3 interactions, 4 triples: 3 // 2 = 1 CF batch -> 4 triples per KG batch; 3 // 1 = 3 -> 4 // 3 = 1."""
    model = _model("CKE", hand_dataset)
    assert model.samplers({**BASE, "train_batch_size": batch}, hand_dataset, seed=0)["cf"].kg.batch_size == expected


def test_kgat_kg_loss_by_hand(hand_dataset):
    model = _model("KGAT", hand_dataset)
    heads, rels, tails, negs = torch.tensor([0, 4]), torch.tensor([1, 2]), torch.tensor([4, 5]), torch.tensor([6, 2])
    loss, parts = model.kg_loss(heads, rels, tails, negs)
    emb = model.embedding.weight
    e_r = model.score.e_r[rels]
    transr, (h, t, n) = _transr(model.score.W_r, e_r, emb[heads], rels, emb[tails], emb[negs])
    assert parts == pytest.approx({"transr": transr.item()}, rel=1e-5)
    assert loss.item() == pytest.approx(transr.item() + 0.7 * _sq(h, e_r, t, n) / 2 / 2, rel=1e-5)


def test_kgat_cf_loss_by_hand(hand_dataset):
    model = _model("KGAT", hand_dataset).eval()
    loss, parts = model.cf_loss(USERS, POS, NEG)
    reps = model.propagate()
    u, i, j = reps[USERS + model.n_entities], reps[POS], reps[NEG]
    mf = torch.log1p(torch.exp((u * j).sum(1) - (u * i).sum(1))).mean().item()
    assert parts == pytest.approx({"bpr": mf}, rel=1e-5)
    assert loss.item() == pytest.approx(mf + 0.3 * _sq(u, i, j) / 2 / 3, rel=1e-5)
    users, items = model.full_sort_embeddings()
    assert torch.allclose(users, reps[model.n_entities:]) and torch.allclose(items, reps[:4])
    assert users.shape == (3, 6 + 5 + 3) and items.shape == (4, 6 + 5 + 3)


def test_the_base_class_names_what_a_model_lacks(hand_dataset):
    class Bare(RecModel):
        pass

    model = Bare({}, hand_dataset)
    with pytest.raises(TypeError, match="Bare must define cf_loss"):
        model.training_step("cf", (USERS, POS, NEG))
    with pytest.raises(TypeError, match="Bare lists a 'kg' phase but defines no kg_loss"):
        model.training_step("kg", (USERS, POS, NEG, NEG))
    with pytest.raises(ValueError, match="Bare has no training phase 'ssl'"):
        model.training_step("ssl", ())
    with pytest.raises(TypeError, match="Bare must define full_sort_embeddings"):
        model.full_sort_embeddings()
    assert (model.n_users, model.n_items) == (3, 4)


def test_a_kg_model_refuses_a_dataset_without_triples_unless_told(hand_dataset):
    from dataclasses import replace
    data = replace(hand_dataset, kg=np.zeros((0, 3), dtype=np.int64))
    for name in ("CKE", "KGAT"):
        with pytest.raises(ValueError, match=f"{name} needs a knowledge graph, but dataset 'hand' has no triples"):
            _model(name, data)
    _model("BPRMF", data, reg_weight=0.1)                    # not a KG model


def test_cke_has_one_relation_table_row_per_relation_and_at_least_one(hand_dataset):
    from dataclasses import replace
    one = replace(hand_dataset, n_relations=1, kg=hand_dataset.kg[:2])
    model = _model("CKE", one)
    assert model.n_relations == 1 and model.W_r.shape[0] == 1 and model.relation_embedding.num_embeddings == 1
    assert _model("CKE", hand_dataset).W_r.shape == (2, 4, 6)
