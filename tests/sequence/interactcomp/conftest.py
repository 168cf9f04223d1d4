import numpy as np
import pytest

from sequence.interactcomp.kb import Item, KnowledgeBase


@pytest.fixture
def hand_kb():
    """Five entities of one domain, 6 binary attributes. The question (attributes 0-3 = 0) matches e0-e3;
    e0 is the popular distractor, e1 the target, whose context says a4 = 1 and a5 = 1."""
    attributes = np.array([[0, 0, 0, 0, 0, 0],
                           [0, 0, 0, 0, 1, 1],
                           [0, 0, 0, 0, 1, 0],
                           [0, 0, 0, 0, 0, 1],
                           [1, 1, 1, 1, 1, 1]])
    kb = KnowledgeBase(attributes, np.zeros(5, dtype=np.int64), np.array([1.0, 0.5, 0.3, 0.2, 0.9]), 2)
    item = Item(0, 0, ((0, 0), (1, 0), (2, 0), (3, 0)), ((4, 1), (5, 1)), target=1, distractor=0)
    return kb, item
