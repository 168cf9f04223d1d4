import numpy as np
import pytest
import torch

import sequence  # noqa: F401  (registers the task, convex-hull and PointerNet)
from sequence.data import PointerSplit, SequenceData
from sequence.data.convex_hull import ConvexHullProblem, generate_convex_hull

TINY = {"train_size": 64, "valid_size": 16, "test_size": 16, "n_min": 4, "n_max": 6, "test_n": 6,
        "hidden_size": 8, "train_batch_size": 16, "eval_batch_size": 8, "show_progress": False}


def tiny_hull_data(seed: int = 0, size: int = 32, n_min: int = 4, n_max: int = 7) -> SequenceData:
    rng = np.random.default_rng(seed)
    splits = [PointerSplit.from_lists(*generate_convex_hull(size, n_min, n_max, rng)) for _ in range(3)]
    return SequenceData("tiny-hull", *splits, ConvexHullProblem())


@pytest.fixture
def hull_data():
    return tiny_hull_data()


@pytest.fixture
def config():
    from graphattn.config import Config

    return Config("PointerNet", "convex-hull", config_dict=TINY)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
