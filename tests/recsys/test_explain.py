"""Attention-path explanations: a hand-built CKG with a known best path, and a brute-force equivalence."""
import numpy as np
import pytest
import torch

from recsys.data import RecDataset, planted_kg
from recsys.explain import (PathExplainer, explain, format_paths, path_weights, plot_paths, relation_label,
                            top_recommendations_with_paths)
from recsys.models.kgat import KGAT

CFG = {"embedding_size": 8, "kg_embedding_size": 4, "layers": [8, 4], "aggregator": "bi",
       "mess_dropout": [0.0, 0.0], "reg_weight": [1e-5, 1e-5], "negative_slope": 0.2,
       "attention_mode": "fixed", "use_attention": True, "use_kge": True}


@pytest.fixture
def tiny():
    """Items 0-3, genres A (entity 4) and B (entity 5); user 0 liked items 0, 1; user 1 liked 1, 2, 3."""
    return RecDataset(
        name="tiny", n_users=2, n_items=4, n_entities=6, n_relations=1,
        train=np.array([[0, 0], [0, 1], [1, 1], [1, 2], [1, 3]]), valid=np.zeros((0, 2)), test=np.array([[0, 3]]),
        kg=np.array([[0, 0, 4], [3, 0, 4], [1, 0, 5], [2, 0, 5], [3, 0, 5]]),
        user_tokens=np.array(["ann", "bob"]), item_tokens=np.array(["i0", "i1", "i2", "i3"]),
        entity_tokens=np.array(["i0", "i1", "i2", "i3", "genreA", "genreB"]), relation_names=["genre"])


def edge_lookup(model):
    src, dst = model.edge_index.tolist()
    return {(s, d, r): k for k, (s, d, r) in enumerate(zip(src, dst, model.edge_type.tolist()))}


def set_path_weights(model, path_edges, high=0.9, low=0.1):
    """All edges ``low`` except the listed (src, dst, rel) edges, which get ``high``."""
    lookup = edge_lookup(model)
    w = torch.full((model.edge_index.shape[1],), low)
    for e in path_edges:
        w[lookup[e]] = high
    model.edge_attention = w


def brute_force(model, weights, user_node, item, max_hops):
    """Every simple path user <- ... <- item by depth-first search over the edge list."""
    src, dst = model.edge_index.tolist()
    rel = model.edge_type.tolist()
    into = {}
    for k, (s, d) in enumerate(zip(src, dst)):
        into.setdefault(d, []).append((s, k))
    out = []

    def walk(nodes, eids, score):
        if nodes[-1] == item and eids:
            out.append((tuple(nodes), tuple(rel[e] for e in eids), score))
            return
        if len(eids) == max_hops:
            return
        for s, k in into.get(nodes[-1], []):
            if s not in nodes:
                walk(nodes + [s], eids + [k], score * float(weights[k]))

    walk([user_node], [], 1.0)
    return sorted(out, key=lambda p: -p[2])


def test_hand_chosen_path_is_the_top_one(tiny):
    torch.manual_seed(0)
    model = KGAT(CFG, tiny)
    user_node = tiny.n_entities + 0
    # user ann <- item i1 <-genre- genreB <-genre^-1- item i3  (edge ids: interact 0, genre 1, genre^-1 3)
    chosen = [(1, user_node, 0), (5, 1, 1), (3, 5, 3)]
    set_path_weights(model, chosen)
    paths = explain(model, tiny, user="ann", item="i3", max_hops=3, top=5)   # raw ids
    assert paths[0].nodes == (user_node, 1, 5, 3)
    assert paths[0].relation_labels == ("interact", "genre", "genre^-1")
    assert paths[0].node_names == ("user ann", "item i1", "genreB", "item i3")
    assert paths[0].score == pytest.approx(0.9 ** 3)
    # the other two 3-hop paths: through genreA, and through user bob (collaborative)
    others = {p.nodes for p in paths[1:]}
    assert others == {(user_node, 0, 4, 3), (user_node, 1, tiny.n_entities + 1, 3)}
    collab = next(p for p in paths if p.nodes[2] == tiny.n_entities + 1)
    assert collab.relation_labels == ("interact", "interacted-by", "interact")
    assert collab.score == pytest.approx(0.9 * 0.1 * 0.1)
    assert "genreB" in format_paths(paths) and format_paths([]).startswith("(no path")


def test_changing_the_weights_changes_the_explanation(tiny):
    model = KGAT(CFG, tiny)
    u = tiny.n_entities
    set_path_weights(model, [(0, u, 0), (4, 0, 1), (3, 4, 3)])
    assert explain(model, tiny, 0, 3, ids="internal")[0].nodes == (u, 0, 4, 3)
    set_path_weights(model, [(1, u, 0), (u + 1, 1, 2), (3, u + 1, 0)])
    assert explain(model, tiny, 0, 3, ids="internal")[0].nodes == (u, 1, u + 1, 3)


def test_scores_are_products_of_real_edge_weights_and_match_brute_force(small_planted):
    torch.manual_seed(1)
    data = small_planted
    model = KGAT(CFG, data)
    gen = torch.Generator().manual_seed(2)
    model.edge_attention = torch.rand(model.edge_index.shape[1], generator=gen) + 0.01
    lookup = edge_lookup(model)
    w = model.edge_attention.double().numpy()
    explainer = PathExplainer(model, data)
    checked = 0
    for user in range(0, data.n_users, 7):
        for item in (0, 13, 31, 59):
            for max_hops in (3, 4):
                paths = explainer.explain(user, item, max_hops=max_hops, top=6)
                expected = brute_force(model, w, data.n_entities + user, item, max_hops)[:6]
                assert [round(p.score, 12) for p in paths] == [round(e[2], 12) for e in expected]
                for p in paths:
                    assert p.nodes[0] == data.n_entities + user and p.nodes[-1] == item
                    assert len(set(p.nodes)) == len(p.nodes)
                    for k in range(len(p)):
                        e = lookup[(p.nodes[k + 1], p.nodes[k], p.relations[k])]   # KeyError = a missing edge
                        assert p.weights[k] == pytest.approx(w[e])
                    assert p.score == pytest.approx(np.prod(p.weights))
                checked += len(paths)
    assert checked > 50


def test_unreachable_item_has_no_path(tiny):
    model = KGAT(CFG, tiny)
    assert explain(model, tiny, user=0, item=3, max_hops=1, ids="internal") == []    # 3 is not a training item of user 0
    assert explain(model, tiny, user="ann", item="i1", max_hops=1)[0].nodes == (tiny.n_entities, 1)


def test_end_to_end_mode_uses_fresh_attention(tiny):
    model = KGAT(dict(CFG, attention_mode="end_to_end"), tiny)
    model.edge_attention = torch.full_like(model.edge_attention, 0.5)
    fresh = model.attention_weights().double().numpy()
    assert np.allclose(path_weights(model), fresh)
    assert not np.allclose(fresh, 0.5)


def test_bad_arguments(tiny):
    model = KGAT(CFG, tiny)
    with pytest.raises(ValueError, match="user 5"):
        explain(model, tiny, user=5, item=0, ids="internal")
    with pytest.raises(ValueError, match="item 4"):
        explain(model, tiny, user=0, item=4, ids="internal")     # entity 4 is not an item
    with pytest.raises(KeyError, match="unknown item id 'genreA'"):
        explain(model, tiny, user="ann", item="genreA")          # an entity, not an item
    with pytest.raises(KeyError, match="unknown user id '0'"):
        explain(model, tiny, user=0, item="i3")                  # raw ids by default: users are 'ann', 'bob'
    with pytest.raises(ValueError, match="ids must be"):
        explain(model, tiny, user=0, item=3, ids="index")
    with pytest.raises(ValueError, match="one weight per CKG edge"):
        PathExplainer(model, tiny, weights=np.ones(3))
    assert relation_label(3, 1, ["genre"]) == "genre^-1" and relation_label(2, 1) == "interacted-by"


def test_top_recommendations_and_plot(tiny, tmp_path):
    torch.manual_seed(0)
    model = KGAT(CFG, tiny)
    recs = top_recommendations_with_paths(model, tiny, user=0, k=2)
    u, i = model.eval().full_sort_embeddings()
    scores = (i @ u[0]).double()
    scores[[0, 1]] = -np.inf
    assert [r.item for r in recs] == torch.topk(scores, 2).indices.tolist()
    assert all(p.item == r.item and p.user == 0 for r in recs for p in r.paths)
    out = plot_paths(recs[0].paths, tmp_path / "sub" / "paths.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    assert not [f for f in out.parent.iterdir() if f.name.startswith(".")]
    with pytest.raises(ValueError):
        plot_paths([], tmp_path / "x.png")
