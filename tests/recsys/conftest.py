import numpy as np
import pytest

from recsys.data import RecDataset, planted_kg


@pytest.fixture(scope="session")
def ml100k():
    """RecBole's bundled ml-100k, loaded once per session."""
    from recsys.data.registry import load_ml100k

    return load_ml100k({})


@pytest.fixture
def small_planted():
    return planted_kg(n_users=40, n_items=60, n_clusters=4, n_noise_entities=10, seed=3)


@pytest.fixture
def hand_dataset():
    """Three users, four items, a five-entity KG; user 2 has only test items."""
    return RecDataset(
        name="hand", n_users=3, n_items=4, n_entities=6, n_relations=2,
        train=np.array([[0, 0], [0, 1], [1, 2]]), valid=np.array([[1, 3]]), test=np.array([[0, 2], [2, 3]]),
        kg=np.array([[0, 0, 4], [1, 0, 4], [2, 1, 5], [4, 1, 5]]),
        user_tokens=np.array(["ua", "ub", "uc"]), item_tokens=np.array(["i0", "i1", "i2", "i3"]),
        entity_tokens=np.array(["e0", "e1", "e2", "e3", "g", "h"]), relation_names=["genre", "by"],
    )
