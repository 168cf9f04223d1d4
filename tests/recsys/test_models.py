"""Contract and behaviour tests of the recommendation models on a tiny planted-KG dataset."""
import numpy as np
import pytest
import torch

import recsys  # noqa: F401  (registers models)
from graphattn.registry import get_model, list_models
from recsys.data import planted_kg
from recsys.sampler import BPRSampler, KGSampler

BASE = {"embedding_size": 16, "kg_embedding_size": 8, "layers": [16, 8], "aggregator": "bi",
        "mess_dropout": [0.1, 0.1], "reg_weight": [1e-5, 1e-5], "negative_slope": 0.2,
        "attention_mode": "fixed", "use_attention": True, "use_kge": True, "learning_rate": 1e-3, "weight_decay": 0.0,
        "optimizer": "adam", "train_batch_size": 64, "kg_batch_size": 0}


@pytest.fixture(scope="module")
def data():
    return planted_kg(n_users=60, n_items=80, n_clusters=4, n_noise_entities=20, seed=0)


def config_for(name, **over):
    cfg = dict(BASE, **over)
    if name == "BPRMF":
        cfg["reg_weight"] = 1e-5
    return cfg


def batches(model, data, seed=0):
    samplers = model.samplers(BASE, data, seed)
    out = {}
    for phase, s in samplers.items():
        b = next(iter(s))
        out[phase] = tuple(torch.as_tensor(x) if isinstance(x, np.ndarray) else tuple(map(torch.as_tensor, x)) for x in b)
    return out


RECSYS = [m for m in list_models("recsys")]


def test_kgat_pipeline_models_registered():
    assert {"BPRMF", "CKE", "KGAT"} <= set(RECSYS)


@pytest.mark.parametrize("name", ["BPRMF", "CKE", "KGAT"])
def test_finite_loss_and_gradient_on_every_parameter(name, data):
    torch.manual_seed(0)
    model = get_model(name)(config_for(name), data)
    model.train()
    touched = set()
    for phase, batch in batches(model, data).items():
        model.zero_grad()
        loss, _ = model.training_step(phase, batch)
        assert torch.isfinite(loss)
        loss.backward()
        touched |= {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    missing = {n for n, _ in model.named_parameters()} - touched
    assert not missing, f"parameters without gradient: {missing}"


@pytest.mark.parametrize("name", ["BPRMF", "CKE", "KGAT"])
def test_predict_equals_full_sort_scores(name, data):
    torch.manual_seed(0)
    model = get_model(name)(config_for(name), data).eval()
    u, i = model.full_sort_embeddings()
    full = u @ i.T
    users, items = torch.tensor([0, 5, 7]), torch.tensor([3, 1, 60])
    assert torch.allclose(model.predict(users, items), full[users, items], atol=1e-5)


def test_kgat_initial_adjacency_is_per_relation_normalised(data):
    model = get_model("KGAT")(config_for("KGAT"), data)
    w = model.edge_attention
    dst, rel = model.edge_index[1], model.edge_type
    row_sum = torch.zeros(model.n_nodes).index_add_(0, dst, w)
    n_rel = torch.zeros(model.n_nodes)
    for node in range(model.n_nodes):
        n_rel[node] = len(set(rel[dst == node].tolist()))
    assert torch.allclose(row_sum, n_rel, atol=1e-5)   # rows sum to the number of relation types at h


def test_kgat_fixed_attention_is_a_constant_in_the_cf_step(data):
    torch.manual_seed(0)
    model = get_model("KGAT")(config_for("KGAT"), data)
    b = batches(model, data)
    loss, _ = model.training_step("cf", b["cf"])
    loss.backward()
    assert model.score.W_r.grad is None or model.score.W_r.grad.abs().sum() == 0
    before = model.edge_attention.clone()
    model.on_epoch_end()
    after = model.edge_attention
    assert not torch.allclose(before, after)
    # refreshed weights are a softmax over ALL incoming edges of a node, across relations
    sums = torch.zeros(model.n_nodes).index_add_(0, model.edge_index[1], after)
    has_in = torch.bincount(model.edge_index[1], minlength=model.n_nodes) > 0
    assert torch.allclose(sums[has_in], torch.ones(int(has_in.sum())), atol=1e-5)
    # ... and it is the core layer's relational attention, reproduced by hand for one node
    x = model.embedding.weight.detach()
    node = int(model.edge_index[1][0])
    sel = (model.edge_index[1] == node).nonzero().flatten()
    pis = []
    for e in sel.tolist():
        t, r = int(model.edge_index[0][e]), int(model.edge_type[e])
        W, er = model.score.W_r[r].detach(), model.score.e_r[r].detach()
        pis.append((W @ x[t]) @ torch.tanh(W @ x[node] + er))
    assert torch.allclose(after[sel], torch.softmax(torch.stack(pis), 0), atol=1e-5)


def test_kgat_end_to_end_attention_gets_cf_gradient(data):
    torch.manual_seed(0)
    model = get_model("KGAT")(config_for("KGAT", attention_mode="end_to_end"), data)
    loss, _ = model.training_step("cf", batches(model, data)["cf"])
    loss.backward()
    assert model.score.W_r.grad.abs().sum() > 0


def test_kgat_without_kge_has_no_kg_phase_and_leaves_relations_untrained(data):
    """use_kge: false (the paper's "w/o KGE"): only the CF phase runs; in fixed mode nothing trains W_r, e_r."""
    from graphattn.config import Config
    from graphattn.training import Trainer
    from recsys.task import RecTask
    torch.manual_seed(0)
    cfg = Config("KGAT", "planted-kg", config_dict={**config_for("KGAT", use_kge=False), "show_progress": False})
    model = get_model("KGAT")(cfg, data)
    assert model.phases == ("cf",)
    before = model.score.W_r.detach().clone(), model.score.e_r.detach().clone(), model.embedding.weight.detach().clone()
    logs = Trainer(cfg, RecTask(cfg, data), model).train_epoch()
    assert not any(key.startswith("kg") or "transr" in key for key in logs), logs
    assert torch.equal(model.score.W_r, before[0]) and torch.equal(model.score.e_r, before[1])
    assert not torch.equal(model.embedding.weight, before[2])         # the CF phase did train
    with_kge = get_model("KGAT")(config_for("KGAT"), data)
    assert with_kge.phases == ("cf", "kg")


def test_kgat_kg_batches_follow_the_official_rule_and_survive_an_empty_kg(data):
    """kg_batch_size 0: n_triples // (n_train // batch) heads per KG batch; with no KG triples the rule counts the
    CKG's edges instead of collapsing to batches of one head."""
    import dataclasses
    model = get_model("KGAT")(config_for("KGAT"), data)
    n_cf = len(data.train) // BASE["train_batch_size"]
    assert model.samplers(BASE, data, 0)["kg"].batch_size == len(data.kg) // n_cf
    empty = dataclasses.replace(data, kg=data.kg[:0])
    model = get_model("KGAT")(config_for("KGAT", use_kg=False), empty)   # a KG-less run is allowed on purpose only
    assert model.samplers(BASE, empty, 0)["kg"].batch_size == model.edge_index.shape[1] // n_cf


def test_kgat_fixed_and_end_to_end_agree_on_forward(data):
    torch.manual_seed(0)
    fixed = get_model("KGAT")(config_for("KGAT"), data).eval()
    fixed.refresh_attention()
    e2e = get_model("KGAT")(config_for("KGAT", attention_mode="end_to_end"), data).eval()
    e2e.load_state_dict(fixed.state_dict())
    assert torch.allclose(fixed.propagate(), e2e.propagate(), atol=1e-5)


@pytest.mark.parametrize("aggregator", ["bi", "gcn", "graphsage"])
def test_kgat_aggregators_and_readout_shape(data, aggregator):
    model = get_model("KGAT")(config_for("KGAT", aggregator=aggregator), data).eval()
    u, i = model.full_sort_embeddings()
    assert u.shape == (data.n_users, 16 + 16 + 8) and i.shape == (data.n_items, 40)
    # per-layer L2 normalisation of layers 1..L
    reps = model.propagate()
    assert torch.allclose(reps[:, 16:32].norm(dim=1), torch.ones(model.n_nodes), atol=1e-4)


def test_bpr_sampler_draws_valid_triples(data):
    s = BPRSampler(data.train, data.n_items, batch_size=32, seed=0)
    seen = set(map(tuple, data.train.tolist()))
    for users, pos, neg in s:
        assert len(set(users.tolist())) == len(users)           # distinct users in a batch
        assert all((u, i) in seen for u, i in zip(users, pos))
        assert not any((u, j) in seen for u, j in zip(users, neg))
    assert len(s) == len(data.train) // 32 + 1


def test_kg_sampler_corrupts_only_to_false_triples():
    triples = np.array([[0, 0, 1], [0, 0, 2], [0, 1, 3], [4, 0, 0]])
    s = KGSampler(triples, n_nodes=5, n_relations=2, batch_size=2, seed=0)
    true = set(map(tuple, triples.tolist()))
    for _ in range(50):
        h, r, t, n = s.sample()
        assert all((a, b, c) in true for a, b, c in zip(h, r, t))
        assert not any((a, b, c) in true for a, b, c in zip(h, r, n))


@pytest.mark.parametrize("aggregator", ["bi", "gcn", "graphsage"])
@pytest.mark.parametrize("restrict_below", [0.0, 0.4, 1.0])
def test_kgat_batch_propagation_equals_full_propagation(data, aggregator, restrict_below):
    """Propagating only a batch's receptive field gives the full propagation's rows, and the same gradients."""
    torch.manual_seed(0)
    model = get_model("KGAT")(config_for("KGAT", aggregator=aggregator, layers=[16, 8, 8],
                                         mess_dropout=[0.1, 0.1, 0.1]), data).eval()
    model.restrict_below = restrict_below
    model.refresh_attention()
    nodes = torch.tensor([model.n_nodes - 1, 3, 3, 0, 17, model.n_entities + 5])
    full = model.propagate()
    part = model.propagate(nodes)
    assert torch.allclose(part, full[nodes], atol=1e-6)
    g = torch.randn_like(part)
    (g_full,) = torch.autograd.grad((full[nodes] * g).sum(), model.embedding.weight)
    (g_part,) = torch.autograd.grad((part * g).sum(), model.embedding.weight)
    assert torch.allclose(g_full, g_part, atol=1e-6)


def test_kgat_pretrain_loads_bprmf_users_and_items(data, tmp_path):
    from graphattn.training import load_checkpoint
    torch.manual_seed(0)
    mf = get_model("BPRMF")(config_for("BPRMF"), data)
    torch.save({"model": mf.state_dict(), "epoch": 1}, tmp_path / "best.pt")
    kgat = get_model("KGAT")(config_for("KGAT", pretrain=str(tmp_path)), data)
    emb = kgat.embedding.weight
    assert torch.equal(emb[: data.n_items], mf.item_embedding.weight)
    assert torch.equal(emb[kgat.n_entities:], mf.user_embedding.weight)
    assert not torch.equal(emb[data.n_items: kgat.n_entities], torch.zeros_like(emb[data.n_items: kgat.n_entities]))
    state = load_checkpoint(tmp_path / "best.pt")
    state["model"]["item_embedding.weight"] = state["model"]["item_embedding.weight"][:-1]
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="item_embedding.weight has shape"):
        get_model("KGAT")(config_for("KGAT", pretrain=str(tmp_path / "bad.pt")), data)


def test_bprmf_takes_init_and_the_samplers_seed_from_its_arguments(data):
    from recsys.models.bprmf import BPRMF
    normal = BPRMF(config_for("BPRMF", init="xavier_normal"), data)
    assert normal.init == "xavier_normal"
    torch.manual_seed(0)
    normal.reset_parameters()
    torch.manual_seed(0)
    expected = torch.empty_like(normal.user_embedding.weight)
    torch.nn.init.xavier_normal_(expected)
    assert torch.equal(normal.user_embedding.weight, expected)
    seed = BPRMF(config_for("BPRMF"), data).samplers(BASE, data, 7)["cf"]
    again = BPRSampler(data.train, data.n_items, BASE["train_batch_size"], 7)
    assert all(np.array_equal(a, b) for a, b in zip(next(iter(seed)), next(iter(again))))
    other = BPRSampler(data.train, data.n_items, BASE["train_batch_size"], 8)
    assert not all(np.array_equal(a, b) for a, b in zip(next(iter(seed)), next(iter(other))))
