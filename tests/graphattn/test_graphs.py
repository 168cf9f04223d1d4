"""Graph builders (graphattn/graphs.py): exact edge lists on tiny inputs, KGAT's CKG id layout, bad input."""
import numpy as np
import pytest
import torch

from graphattn.graphs import (CKG_INTERACT, causal_graph, collaborative_kg, complete_graph, grid_graph,
                              sequence_graph)
from graphattn.ops import neighborhood_mask


def _edges(data):
    return sorted(map(tuple, data.edge_index.T.tolist()))


def test_complete_and_causal_graphs():
    g = complete_graph(3)
    assert g.num_nodes == 3 and _edges(g) == [(j, i) for j in range(3) for i in range(3)]
    g = complete_graph(3, self_loops=False)
    assert g.num_nodes == 3 and _edges(g) == [(j, i) for j in range(3) for i in range(3) if i != j]
    g = causal_graph(3)
    assert g.num_nodes == 3 and _edges(g) == sorted((j, i) for i in range(3) for j in range(3) if j <= i)
    # an edge j -> i means i receives from j: source row first
    assert g.edge_index[:, 1].tolist() == [0, 1]


def test_grid_graph_is_the_neighbourhood_mask():
    g = grid_graph((2, 3), (1, 2), stride=1, dilation=1, causal=(False, True))
    mask = neighborhood_mask((2, 3), (1, 2), causal=(False, True))
    assert g.num_nodes == 6 and g.grid_shape == (2, 3)
    assert _edges(g) == sorted((j, i) for i, j in mask.nonzero().tolist())
    g = grid_graph(6, 3, stride=3, dilation=2)
    assert g.grid_shape == (6,) and g.num_nodes == 6
    assert _edges(g) == sorted((j, i) for i, j in neighborhood_mask(6, 3, 3, 2).nonzero().tolist())
    g = grid_graph([4], [2])                                     # defaults: stride 1, dilation 1, not causal
    assert g.grid_shape == (4,)
    assert _edges(g) == sorted((j, i) for i, j in neighborhood_mask(4, 2).nonzero().tolist())


def test_sequence_graph_kinds():
    assert _edges(sequence_graph(3)) == _edges(complete_graph(3))
    assert _edges(sequence_graph(3, "causal")) == _edges(causal_graph(3))
    w = sequence_graph(6, "window", window=3, dilation=2)
    assert _edges(w) == _edges(grid_graph(6, 3, 1, 2))
    cw = sequence_graph(5, "causal_window", window=2)
    assert _edges(cw) == sorted((j, i) for i, j in neighborhood_mask(5, 2, causal=True).nonzero().tolist())
    assert _edges(cw) != _edges(sequence_graph(5, "window", window=2))
    with pytest.raises(ValueError, match=r"^kind='window' needs window$"):
        sequence_graph(4, "window")
    with pytest.raises(ValueError, match=r"^kind='causal_window' needs window$"):
        sequence_graph(4, "causal_window")
    with pytest.raises(ValueError, match=r"^unknown sequence graph kind 'full'; expected complete, causal, window "
                                         r"or causal_window$"):
        sequence_graph(4, "full")


def test_collaborative_kg_layout():
    # 2 users, 3 entities (items 0, 1), 2 KG relations
    inter = np.array([[0, 1], [1, 0]])
    kg = np.array([[1, 0, 2], [0, 1, 2]])
    g = collaborative_kg(2, 3, inter, kg, 2)
    assert CKG_INTERACT == 0
    assert (g.num_nodes, g.n_users, g.n_entities, g.num_relations, g.n_kg_relations) == (5, 2, 3, 6, 2)
    assert g.node_type.tolist() == [0, 0, 0, 1, 1]
    edges = sorted(zip(g.edge_index[0].tolist(), g.edge_index[1].tolist(), g.edge_type.tolist()))
    assert edges == sorted([
        (1, 3, 0), (0, 4, 0),          # item -> user, interact
        (3, 1, 3), (4, 0, 3),          # user -> item, interacted-by (R + 1)
        (2, 1, 1), (2, 0, 2),          # t -> h, KG relation r + 1
        (1, 2, 4), (0, 2, 5),          # h -> t, inverse r + R + 2
    ])
    assert g.edge_index.dtype == torch.long and g.edge_type.dtype == torch.long and g.node_type.dtype == torch.long


def test_collaborative_kg_accepts_tensors_and_flat_arrays():
    a = collaborative_kg(2, 3, torch.tensor([[0, 1], [1, 0]]), torch.tensor([[1, 0, 2]]), 1)
    b = collaborative_kg(2, 3, np.array([0, 1, 1, 0]), np.array([1, 0, 2]), 1)
    assert torch.equal(a.edge_index, b.edge_index) and torch.equal(a.edge_type, b.edge_type)
    empty = collaborative_kg(2, 3, np.zeros((0, 2), dtype=np.int64), np.zeros((0, 3), dtype=np.int64), 1)
    assert empty.edge_index.shape == (2, 0) and empty.num_relations == 4


def test_collaborative_kg_int32_input_and_isolated_nodes():
    # int32 arrays (what pandas often gives) still make long ids; user 2 and entity 3 have no edge at all
    g = collaborative_kg(3, 4, np.array([[0, 1]], dtype=np.int32), np.array([[1, 0, 2]], dtype=np.int32), 1)
    assert g.edge_index.dtype == torch.long and g.edge_type.dtype == torch.long
    assert g.num_nodes == 7 and g.node_type.tolist() == [0, 0, 0, 0, 1, 1, 1]
    # empty Python lists (numpy reads them as float64) still give long ids
    for inter, kg in (([], [[1, 0, 2]]), ([[0, 1]], []), ([], [])):
        g = collaborative_kg(3, 4, inter, kg, 1)
        assert g.edge_index.dtype == torch.long and g.edge_type.dtype == torch.long, (inter, kg)


def test_collaborative_kg_bad_ids():
    ok_kg = np.array([[0, 0, 1]])
    with pytest.raises(ValueError, match=r"^interactions refer to users/items beyond n_users/n_entities$"):
        collaborative_kg(2, 3, np.array([[2, 0]]), ok_kg, 1)
    with pytest.raises(ValueError, match="beyond n_users/n_entities"):
        collaborative_kg(2, 3, np.array([[0, 3]]), ok_kg, 1)
    assert collaborative_kg(2, 3, np.array([[1, 2]]), ok_kg, 1).num_nodes == 5      # the largest valid ids
    with pytest.raises(ValueError, match=r"^kg refers to entity 3 >= n_entities=3$"):
        collaborative_kg(2, 3, np.array([[0, 0]]), np.array([[3, 0, 1]]), 1)
    with pytest.raises(ValueError, match=r"^kg refers to entity 3 >= n_entities=3$"):
        collaborative_kg(2, 3, np.array([[0, 0]]), np.array([[0, 0, 3]]), 1)
    with pytest.raises(ValueError, match=r"^kg relation ids must lie in \[0, 2\)$"):
        collaborative_kg(2, 3, np.array([[0, 0]]), np.array([[0, 2, 1]]), 2)
    with pytest.raises(ValueError, match=r"^kg relation ids must lie in \[0, 2\)$"):
        collaborative_kg(2, 3, np.array([[0, 0]]), np.array([[0, -1, 1]]), 2)
    assert collaborative_kg(2, 3, np.array([[0, 0]]), np.array([[2, 1, 2]]), 2).num_relations == 6


@pytest.mark.parametrize("build, n", [
    (lambda: complete_graph(4), 4), (lambda: complete_graph(1, self_loops=False), 1), (lambda: causal_graph(5), 5),
    (lambda: grid_graph((2, 3), 1), 6), (lambda: sequence_graph(4, "window", window=3), 4),
])
def test_builders_store_the_node_count_instead_of_leaving_pyg_to_guess(build, n):
    import warnings
    data = build()
    assert data.to_dict()["num_nodes"] == n          # stored, so batching and isolated nodes keep it
    with warnings.catch_warnings():
        warnings.simplefilter("error")               # PyG warns when it has to infer num_nodes from edge_index
        assert data.num_nodes == n
