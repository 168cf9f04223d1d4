"""What the BPR and KG samplers draw: distinct rows per batch, every positive and every allowed negative
reachable, independent draws within a batch, the official epoch lengths, and seeded repeatability.
(Written against mutants that survived `make mutate` on recsys/sampler.py, docs/testing.md.)"""
import numpy as np
import pytest

from recsys.sampler import BPRSampler, KGSampler

N_USERS, N_ITEMS = 12, 10


def _train():
    rng = np.random.default_rng(0)
    pairs = {(u, i) for u in range(N_USERS) for i in rng.choice(N_ITEMS, 3, replace=False)}
    return np.array(sorted(pairs), dtype=np.int64)


def _draws(sampler, n):
    return [sampler.sample() for _ in range(n)]


def test_bpr_users_are_distinct_when_the_batch_fits_and_all_reachable_when_it_does_not():
    train = _train()
    for users, _, _ in _draws(BPRSampler(train, N_ITEMS, batch_size=N_USERS, seed=1), 20):
        assert sorted(users.tolist()) == list(range(N_USERS))          # batch == #users: each once
    seen = np.concatenate([u for u, _, _ in _draws(BPRSampler(train, N_ITEMS, batch_size=3 * N_USERS, seed=1), 20)])
    assert set(seen.tolist()) == set(range(N_USERS))                     # batch > #users: with replacement, all reachable


def test_bpr_every_positive_and_every_allowed_negative_is_drawn():
    train = _train()
    positives = set(map(tuple, train.tolist()))
    draws = _draws(BPRSampler(train, N_ITEMS, batch_size=N_USERS, seed=2), 300)
    pos_seen = {(u, i) for users, pos, _ in draws for u, i in zip(users.tolist(), pos.tolist())}
    neg_seen = {(u, j) for users, _, neg in draws for u, j in zip(users.tolist(), neg.tolist())}
    assert pos_seen == positives
    assert neg_seen == {(u, j) for u in range(N_USERS) for j in range(N_ITEMS)} - positives


def test_bpr_positive_draws_are_independent_within_a_batch():
    # every user has 3 items; one shared random fraction per batch would give every user the same rank
    train = _train()
    order_of = {u: sorted(train[train[:, 0] == u, 1].tolist()) for u in range(N_USERS)}
    for users, pos, _ in _draws(BPRSampler(train, N_ITEMS, batch_size=N_USERS, seed=3), 5):
        ranks = {order_of[u].index(i) for u, i in zip(users.tolist(), pos.tolist())}
        assert len(ranks) > 1


def test_bpr_epoch_length_and_seeded_repeatability():
    train = _train()
    a, b = BPRSampler(train, N_ITEMS, 5, seed=7), BPRSampler(train, N_ITEMS, 5, seed=7)
    assert len(a) == len(train) // 5 + 1
    for x, y in zip(a, b):
        assert all(np.array_equal(p, q) for p, q in zip(x, y))
    b.load_state_dict(a.state_dict())
    assert all(np.array_equal(p, q) for p, q in zip(a.sample(), b.sample()))


def _kg(n_heads=20, per_head=2, n_relations=3, n_nodes=60):
    rows = [(h, (h + k) % n_relations, n_heads + (3 * h + k) % (n_nodes - n_heads)) for h in range(n_heads)
            for k in range(per_head)]
    triples = np.array(rows, dtype=np.int64)
    return triples[np.random.default_rng(0).permutation(len(triples))], n_nodes, n_relations   # unsorted on purpose


def test_kg_heads_are_distinct_when_the_batch_fits_and_every_triple_is_drawn():
    triples, n_nodes, n_rel = _kg()
    sampler = KGSampler(triples, n_nodes, n_rel, batch_size=20, seed=1)
    truth = set(map(tuple, triples.tolist()))
    seen = set()
    for h, r, t, neg in _draws(sampler, 200):
        assert sorted(h.tolist()) == list(range(20))                     # each head once per batch
        batch = set(zip(h.tolist(), r.tolist(), t.tolist()))
        assert batch <= truth
        seen |= batch
        assert not any((a, b, c) in truth for a, b, c in zip(h.tolist(), r.tolist(), neg.tolist()))
    assert seen == truth


def test_kg_draws_within_a_batch_are_independent_and_negatives_cover_every_node():
    triples, n_nodes, n_rel = _kg()
    sampler = KGSampler(triples, n_nodes, n_rel, batch_size=20, seed=2)
    first_of = {}                                       # each head's first triple in the sampler's own order
    for h, r, t in map(tuple, sampler.triples.tolist()):
        first_of.setdefault(h, (r, t))
    negs = set()
    for h, r, t, neg in _draws(sampler, 100):
        picked_first = [first_of[a] == (b, c) for a, b, c in zip(h.tolist(), r.tolist(), t.tolist())]
        assert 0 < sum(picked_first) < len(picked_first)               # not one shared draw for the batch
        negs |= set(neg.tolist())
    assert negs == set(range(n_nodes))                                  # node 0 included


def test_kg_epoch_length_small_kgs_and_the_empty_error():
    triples, n_nodes, n_rel = _kg()
    assert len(KGSampler(triples, n_nodes, n_rel, batch_size=7)) == len(triples) // 7 + 1
    assert len(KGSampler(triples, n_nodes, n_rel, batch_size=7, n_batches=3)) == 3
    one = KGSampler(triples[:1], n_nodes, n_rel, batch_size=4, seed=0)          # a one-triple KG works
    h, r, t, _ = one.sample()
    assert set(zip(h.tolist(), r.tolist(), t.tolist())) == {tuple(triples[0].tolist())}
    with pytest.raises(ValueError, match="no triples"):
        KGSampler(triples[:0], n_nodes, n_rel, batch_size=4)
    big = KGSampler(triples, n_nodes, n_rel, batch_size=60, seed=0)            # more than the 20 heads: all reachable
    assert set(np.concatenate([big.sample()[0] for _ in range(5)]).tolist()) == set(range(20))
