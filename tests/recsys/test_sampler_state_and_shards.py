"""The samplers' shard arguments at their bounds and the interaction mode's saved state (order, cursor), including
states saved before the first batch and states without a cursor. (Written against mutants of recsys/sampler.py
that survived the sixth mutation run, docs/testing.md.)"""
import warnings

import numpy as np
import pytest

from recsys.sampler import BPRSampler, KGSampler


def _train(n_users=6, n_items=9):
    return np.array([(u, (u + k) % n_items) for u in range(n_users) for k in range(3)], dtype=np.int64)


def test_shard_accepts_the_last_rank_and_a_batch_of_one_row_per_process():
    s = BPRSampler(_train(), 9, batch_size=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                 # 4 rows over 4 or 2 processes: nothing to round
        assert s.shard(3, 4) == 4
        assert BPRSampler(_train(), 9, batch_size=4).shard(1, 2) == 4
    with pytest.raises(ValueError, match=r"rank must be in \[0, 4\), got 4"):
        BPRSampler(_train(), 9, batch_size=4).shard(4, 4)
    with pytest.raises(ValueError, match="batch size 3 is smaller than the 4 processes"):
        BPRSampler(_train(), 9, batch_size=3).shard(0, 4)
    with pytest.warns(UserWarning, match="^KGSampler: batch size 5 rounded down to 4"):
        assert KGSampler(np.array([[0, 0, 1]]), 3, 1, batch_size=5).shard(0, 2) == 4


def test_interaction_state_before_the_first_batch_round_trips():
    a = BPRSampler(_train(), 9, batch_size=4, seed=3, mode="interaction")
    state = a.state_dict()
    assert state["order"] is None and state["cursor"] == 0
    b = BPRSampler(_train(), 9, batch_size=4, seed=99, mode="interaction")
    b.sample()                                          # b is mid-epoch; loading a's fresh state resets that
    b.load_state_dict(state)
    assert b.order is None and b.cursor == 0
    for x, y in zip(a.sample(), b.sample()):
        np.testing.assert_array_equal(x, y)


def test_interaction_state_mid_epoch_and_without_a_cursor():
    a = BPRSampler(_train(), 9, batch_size=4, seed=5, mode="interaction")
    a.sample()
    state = a.state_dict()
    assert state["cursor"] == 4 and sorted(state["order"]) == list(range(18))
    b = BPRSampler(_train(), 9, batch_size=4, seed=0, mode="interaction")
    b.load_state_dict(state)
    assert b.order.dtype == np.int64 and b.cursor == 4
    for x, y in zip(a.sample(), b.sample()):
        np.testing.assert_array_equal(x, y)
    del state["cursor"]                                  # a state without a cursor starts the saved order at row 0
    c = BPRSampler(_train(), 9, batch_size=4, seed=0, mode="interaction")
    c.load_state_dict(state)
    assert c.cursor == 0
    users, pos, _ = c.sample()
    order = np.asarray(state["order"])[:4]
    np.testing.assert_array_equal(users, c.users_of[order])
    np.testing.assert_array_equal(pos, c.items[order])


def test_epoch_lengths_of_both_modes():
    train = _train()                                     # 18 rows
    assert len(BPRSampler(train, 9, batch_size=6)) == 18 // 6 + 1           # the official count, also when exact
    assert len(BPRSampler(train, 9, batch_size=6, n_batches=2)) == 2
    assert len(BPRSampler(train, 9, batch_size=6, mode="interaction")) == 3   # ceil(18 / 6)
    assert len(BPRSampler(train, 9, batch_size=5, mode="interaction")) == 4   # ceil(18 / 5)


def test_interaction_negatives_reach_item_zero():
    train = np.array([(0, 1), (0, 2), (1, 2), (1, 3)], dtype=np.int64)
    s = BPRSampler(train, 4, batch_size=2, seed=0, mode="interaction")
    negs = set()
    for _ in range(100):
        users, _, neg = s.sample()
        negs |= set(zip(users.tolist(), neg.tolist()))
    assert negs == {(0, 0), (0, 3), (1, 0), (1, 1)}


def test_pair_set_finds_the_pair_with_key_zero_on_both_paths():
    from recsys.sampler import _PairSet
    a, b = np.array([0, 2, 5]), np.array([0, 1, 3])
    q_a, q_b = np.array([0, 0, 2, 5, 5, -1, 9]), np.array([0, 1, 1, 3, 2, 0, 9])
    want = [True, False, True, True, False, False, False]
    dense = _PairSet(a, b, 4)
    assert dense.dense is not None and dense.dense.dtype == bool
    got = dense.contains(q_a, q_b)
    assert got.dtype == bool and got.tolist() == want
    sparse = _PairSet(a, b, 4)
    sparse.dense = None                                  # the sorted-keys path gives the same answers
    assert sparse.contains(q_a, q_b).tolist() == want


def test_rejection_redraws_rows_independently_and_gives_up_after_100_rounds():
    from recsys.sampler import _rejection
    rng = np.random.default_rng(0)
    out = _rejection(lambda k: rng.integers(0, 100, k), lambda idx, cand: cand < 50, 2000, rng)
    assert (out >= 50).all()
    assert np.bincount(out).max() < 100                  # ~40 per value; one shared redraw would give ~1000
    calls = []

    def draw(k):
        calls.append(k)
        return np.zeros(k, dtype=np.int64)
    with pytest.raises(RuntimeError, match=r"^negative sampling did not converge: some rows have no valid negative "
                                            r"\(a user who interacted with every item, or a head linked to every "
                                            r"node by one relation\)$"):
        _rejection(draw, lambda idx, cand: np.ones(len(idx), dtype=bool), 3, rng)
    assert len(calls) == 101                             # the first draw and 100 redraws


def test_kg_sampler_default_seed_sort_and_messages():
    rng = np.random.default_rng(0)
    triples = np.stack([rng.integers(0, 10, 600), rng.integers(0, 4, 600), rng.integers(10, 60, 600)], 1)
    a, b = KGSampler(triples, 60, 4, batch_size=8), KGSampler(triples, 60, 4, batch_size=8, seed=0)
    for x, y in zip(a.sample(), b.sample()):             # the default seed is 0
        np.testing.assert_array_equal(x, y)
    # each head's triples keep their input order (a stable sort): the batches for a seed then depend on the
    # triples and the seed only, not on which sort numpy picks for ties on this machine
    for h in range(10):
        np.testing.assert_array_equal(a.triples[a.triples[:, 0] == h], triples[triples[:, 0] == h])
    with pytest.raises(ValueError, match=r"^no triples to sample from$"):
        KGSampler(triples[:0], 60, 4, batch_size=4)


def test_bpr_default_seed_one_row_and_messages():
    train = _train()
    a, b = BPRSampler(train, 9, batch_size=4), BPRSampler(train, 9, batch_size=4, seed=0)
    for x, y in zip(a.sample(), b.sample()):             # the default seed is 0
        np.testing.assert_array_equal(x, y)
    users, pos, neg = BPRSampler(train[:1], 9, batch_size=2).sample()     # a one-row split works
    assert users.tolist() == [0, 0] and pos.tolist() == [0, 0] and 0 not in neg.tolist()
    with pytest.raises(ValueError, match=r"^the training split is empty: nothing to sample$"):
        BPRSampler(train[:0], 9, batch_size=2)
    with pytest.raises(ValueError, match=r"^cf_sampling: expected one of user, interaction, got 'pairs'$"):
        BPRSampler(train, 9, batch_size=2, mode="pairs")
    with pytest.raises(ValueError, match=r"^n_batches does not apply to mode='interaction' \(an epoch is one pass "
                                         r"over the interactions\)$"):
        BPRSampler(train, 9, batch_size=2, n_batches=3, mode="interaction")


def test_pair_set_edge_cases():
    from recsys.sampler import _PairSet
    one = _PairSet(np.array([0]), np.array([0]), 4)       # a one-entry table: outside keys must not index it
    assert one.contains(np.array([0, 1, 0]), np.array([0, 0, 3])).tolist() == [True, False, False]
    empty = _PairSet(np.zeros(0, np.int64), np.zeros(0, np.int64), 4)
    got = empty.contains(np.array([0, 1]), np.array([0, 2]))
    assert got.dtype == bool and got.tolist() == [False, False]
