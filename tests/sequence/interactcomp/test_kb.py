import numpy as np
import pytest

from sequence.interactcomp.kb import make_items, make_knowledge_base


@pytest.fixture(scope="module")
def world():
    rng = np.random.default_rng(0)
    kb = make_knowledge_base(rng)
    return kb, make_items(kb, np.arange(kb.num_entities), 150, rng)


def test_world_has_the_spec_shape_and_distinct_entities_per_domain(world):
    kb, _ = world
    assert kb.attributes.shape == (300, 12) and kb.num_domains == 9
    assert kb.attributes.min() >= 0 and kb.attributes.max() < kb.num_values
    for d in range(kb.num_domains):
        rows = kb.attributes[kb.domain == d]
        assert len({tuple(r) for r in rows}) == len(rows)
    ranked = np.sort(kb.popularity)[::-1]
    assert np.allclose(ranked, 1.0 / np.arange(1, 301))        # Zipf with exponent 1


def test_target_and_distractor_agree_on_the_public_attributes_and_differ_on_the_hidden_ones(world):
    kb, items = world
    for it in items:
        t, d = kb.attributes[it.target], kb.attributes[it.distractor]
        assert kb.domain[it.target] == kb.domain[it.distractor] == it.domain
        assert kb.popularity[it.distractor] > kb.popularity[it.target]
        assert (t == d).sum() >= 4 and (t != d).sum() >= 2
        assert 4 <= len(it.question) <= 6 and 2 <= len(it.context) <= 3
        for a, v in it.question:
            assert t[a] == v and d[a] == v                      # the question cannot tell them apart
        for a, v in it.context:
            assert t[a] == v and d[a] != v                      # the context can
        assert not {a for a, _ in it.question} & {a for a, _ in it.context}


def test_question_plus_context_identifies_the_target_alone_and_the_question_does_not(world):
    kb, items = world
    for it in items:
        public = [(a, v, True) for a, v in it.question]
        assert kb.consistent(it.domain, public)[0] != it.target  # the popular look-alike ranks above
        full = public + [(a, v, True) for a, v in it.context]
        assert kb.consistent(it.domain, full).tolist() == [it.target]


def test_consistent_ranks_by_popularity_and_handles_negative_terms(world):
    kb, _ = world
    ids = kb.consistent(0, [(0, 1, False)])
    assert (kb.attributes[ids, 0] != 1).all() and (kb.domain[ids] == 0).all()
    assert (np.diff(kb.popularity[ids]) <= 0).all()
    assert len(ids) == ((kb.domain == 0) & (kb.attributes[:, 0] != 1)).sum()


def test_bad_arguments_give_clear_errors(world):
    kb, _ = world
    with pytest.raises(ValueError, match="outside 12 attributes"):
        kb.consistent(0, [(12, 0, True)])
    with pytest.raises(ValueError, match="2 entities per domain"):
        make_knowledge_base(np.random.default_rng(0), num_entities=10, num_domains=9)
    with pytest.raises(ValueError, match="could only build"):
        make_items(kb, np.array([int(np.argmax(kb.popularity))]), 3, np.random.default_rng(0), max_tries=5)
