"""KGAT's configuration switches and bookkeeping: bad settings, the attention refresh and its cached matrix,
the two optimisers, the KG sampler over the collaborative graph, and pretrained rows."""
import numpy as np
import pytest
import torch

import recsys  # noqa: F401  (registers the models)
from graphattn.registry import get_model

BASE = {"embedding_size": 6, "kg_embedding_size": 4, "layers": [5, 3], "aggregator": "bi", "mess_dropout": [0.0, 0.0],
        "reg_weight": [1e-5, 1e-5], "negative_slope": 0.2, "attention_mode": "fixed", "use_attention": True,
        "use_kge": True, "learning_rate": 1e-3, "weight_decay": 0.1, "optimizer": "adam", "train_batch_size": 2,
        "kg_batch_size": 0}


def _kgat(data, **over):
    torch.manual_seed(0)
    return get_model("KGAT")({**BASE, **over}, data)


def test_bad_settings_are_clear_errors(hand_dataset):
    with pytest.raises(ValueError, match=r"mess_dropout needs one value per layer \(2\), got \[0.1\]"):
        _kgat(hand_dataset, mess_dropout=[0.1])
    with pytest.raises(ValueError, match="attention_mode must be 'fixed' or 'end_to_end', got 'learned'"):
        _kgat(hand_dataset, attention_mode="learned")


def test_the_collaborative_graph_and_its_sizes(hand_dataset):
    model = _kgat(hand_dataset)
    assert (model.n_entities, model.n_kg_relations, model.n_nodes, model.n_relations) == (6, 2, 9, 2 * 2 + 2)
    assert torch.equal(model.user_nodes(torch.tensor([0, 2])), torch.tensor([6, 8]))
    assert model.reg_cf == 1e-5 and model.mess_dropout == [0.0, 0.0]
    assert {"edge_index", "edge_type"}.isdisjoint(model.state_dict()) and "edge_attention" in model.state_dict()
    assert model.score.W_r.shape == (6, 4, 6) and model.score.e_r.shape == (6, 4)     # kg_embedding_size 4
    slope = _kgat(hand_dataset, negative_slope=0.1, aggregator="gcn")
    assert all(type(layer.update).__name__ == "GCNUpdate" and layer.update.negative_slope == 0.1
               for layer in slope.layers)


def test_refresh_replaces_the_matrix_only_with_attention_on(hand_dataset):
    model = _kgat(hand_dataset)
    initial = model.edge_attention.clone()
    first = model.adjacency
    assert model.adjacency is first                           # cached until the next refresh
    model.refresh_attention()
    assert not torch.equal(model.edge_attention, initial) and model.adjacency is not first
    assert torch.allclose(model.edge_attention, model.attention_weights())
    off = _kgat(hand_dataset, use_attention=False)
    cached = off.adjacency
    off.on_epoch_end()
    assert torch.equal(off.edge_attention, initial) and off.adjacency is cached


def test_loading_a_state_rebuilds_the_matrix(hand_dataset):
    model, other = _kgat(hand_dataset), _kgat(hand_dataset)
    other.refresh_attention()
    before = model.adjacency
    model.load_state_dict(other.state_dict())
    assert model.adjacency is not before
    assert torch.allclose(model.propagate(), other.propagate())


def test_loading_is_strict_and_copies_into_the_existing_parameters(hand_dataset):
    model, other = _kgat(hand_dataset), _kgat(hand_dataset)
    weight = model.embedding.weight
    state = other.state_dict()
    model.load_state_dict(state)
    assert model.embedding.weight is weight and torch.equal(weight, state["embedding.weight"])
    assert weight.data_ptr() != state["embedding.weight"].data_ptr()
    del state["edge_attention"]
    with pytest.raises(RuntimeError, match='Missing key.*"edge_attention"'):
        model.load_state_dict(state)


def test_two_optimisers_without_weight_decay_and_one_without_kge(hand_dataset):
    model = _kgat(hand_dataset)
    opts = model.optimizers(BASE)
    assert set(opts) == {"cf", "kg"} and opts["cf"] is not opts["kg"]
    assert all(group["weight_decay"] == 0.0 for opt in opts.values() for group in opt.param_groups)
    assert all(sum(p.numel() for g in opt.param_groups for p in g["params"]) ==
               sum(p.numel() for p in model.parameters()) for opt in opts.values())
    no_kge = _kgat(hand_dataset, use_kge=False)
    assert set(no_kge.optimizers(BASE)) == {"cf"} and set(no_kge.samplers(BASE, hand_dataset, 0)) == {"cf"}


def test_the_kg_sampler_draws_collaborative_graph_edges_head_to_tail(hand_dataset):
    model = _kgat(hand_dataset)
    samplers = model.samplers(BASE, hand_dataset, seed=3)
    kg = samplers["kg"]
    assert samplers["cf"].rng.bit_generator.state == np.random.default_rng(3).bit_generator.state
    assert kg.n_nodes == model.n_nodes and kg.n_relations == model.n_relations
    assert kg.batch_size == len(hand_dataset.kg) // (len(hand_dataset.train) // 2)
    assert kg.rng.bit_generator.state == np.random.default_rng(4).bit_generator.state
    edges = {(int(h), int(r), int(t)) for t, h, r in zip(*model.edge_index.tolist(), model.edge_type.tolist())}
    assert {tuple(row) for row in kg.triples.tolist()} == edges
    assert model.samplers({**BASE, "kg_batch_size": 3}, hand_dataset, 0)["kg"].batch_size == 3
    # 4 KG triples, 3 interactions in batches of 1: 4 // 3 = 1 head per KG batch
    assert model.samplers({**BASE, "train_batch_size": 1}, hand_dataset, 0)["kg"].batch_size == 1


def test_pretrain_needs_a_bprmf_checkpoint(hand_dataset, tmp_path):
    torch.save({"model": {"user_embedding.weight": torch.zeros(3, 6)}, "epoch": 1}, tmp_path / "best.pt")
    with pytest.raises(ValueError, match=r"pretrain: '.*best.pt' has no 'item_embedding.weight' \(expected a BPRMF"):
        _kgat(hand_dataset, pretrain=str(tmp_path))
    torch.save({"model": {"user_embedding.weight": torch.zeros(3, 5)}}, tmp_path / "narrow.pt")
    with pytest.raises(ValueError, match=r"user_embedding.weight has shape \(3, 5\), expected \(3, 6\)"):
        _kgat(hand_dataset, pretrain=str(tmp_path / "narrow.pt"))
    torch.save({"model": {"user_embedding.weight": torch.full((3, 6), 2.0, dtype=torch.float64),
                          "item_embedding.weight": torch.ones(4, 6)}}, tmp_path / "ok.pt")
    model = _kgat(hand_dataset, pretrain=str(tmp_path / "ok.pt"))
    emb = model.embedding.weight
    assert emb.dtype == torch.float32 and torch.equal(emb[6:], torch.full((3, 6), 2.0))
    assert torch.equal(emb[:4], torch.ones(4, 6)) and not torch.equal(emb[4:6], torch.ones(2, 6))


@pytest.mark.parametrize("restrict_below", [0.0, 0.3, 1.0])
def test_batch_propagation_equals_full_propagation_on_a_small_graph(small_planted, restrict_below):
    """The receptive-field path of propagate(nodes), on a graph whose fields do not cover it after one hop
    (tests/recsys/test_models.py has a larger version)."""
    model = _kgat(small_planted, layers=[5, 4, 3], mess_dropout=[0.0, 0.0, 0.0]).eval()
    model.restrict_below = restrict_below
    model.refresh_attention()
    nodes = torch.tensor([model.n_nodes - 1, 2, 2, 0, model.n_entities + 3])
    assert torch.allclose(model.propagate(nodes), model.propagate()[nodes], atol=1e-6)
    assert model.propagate(nodes).shape == (5, 6 + 5 + 4 + 3)


@pytest.mark.parametrize("mode", ["fixed", "end_to_end"])
def test_message_dropout_only_in_training_mode(hand_dataset, mode):
    model = _kgat(hand_dataset, mess_dropout=[0.5, 0.5], attention_mode=mode)
    model.eval()
    nodes = torch.tensor([0, 7])
    full, part = model.propagate(), model.propagate(nodes)
    model.train()
    torch.manual_seed(1)
    assert not torch.allclose(model.propagate(), full)
    assert not torch.allclose(model.propagate(nodes), part)
