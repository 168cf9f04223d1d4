import numpy as np
import pandas as pd
import pytest

from recsys.data import carve_valid, split_indices
from recsys.data.splits import _ratio_counts


def _table(seed=0, n_users=200):
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 30, n_users)
    users = np.repeat(np.arange(n_users), counts)
    times = rng.permutation(len(users)).astype(float)
    return users, times, counts


def _parts(users, idx):
    part = np.full(len(users), -1)
    for k, rows in enumerate(idx):
        part[rows] = k
    return part


def test_recbole_ratio_counts_by_hand():
    got = _ratio_counts(np.array([1, 2, 3, 10, 25]), [0.8, 0.1, 0.1])
    np.testing.assert_array_equal(got, [[1, 0, 0], [1, 0, 1], [1, 1, 1], [8, 1, 1], [21, 2, 2]])


def test_rs_per_user_ratios_cover_every_row_once():
    users, times, counts = _table()
    idx = split_indices(users, {"split": {"RS": [0.8, 0.1, 0.1]}}, seed=1)
    allrows = np.concatenate(idx)
    assert np.array_equal(np.sort(allrows), np.arange(len(users)))
    part = _parts(users, idx)
    per_user = pd.crosstab(users, part).reindex(columns=[0, 1, 2], fill_value=0).to_numpy()
    np.testing.assert_array_equal(per_user, _ratio_counts(counts, [0.8, 0.1, 0.1]))
    assert (per_user[:, 0] >= 1).all()  # every user keeps a training row


def test_rs_two_ratios_mean_train_test():
    users, _, counts = _table()
    tr, va, te = split_indices(users, {"split": {"RS": [0.8, 0.2]}})
    assert len(va) == 0 and len(tr) + len(te) == len(users)


def test_no_pair_in_two_splits_and_seed_determinism():
    rng = np.random.default_rng(5)
    pairs = np.unique(np.stack([rng.integers(0, 50, 3000), rng.integers(0, 400, 3000)], 1), axis=0)
    a = split_indices(pairs[:, 0], None, seed=11)
    b = split_indices(pairs[:, 0], None, seed=11)
    c = split_indices(pairs[:, 0], None, seed=12)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[2], c[2])
    sets = [set(map(tuple, pairs[rows].tolist())) for rows in a]
    assert not (sets[0] & sets[2]) and not (sets[0] & sets[1]) and not (sets[1] & sets[2])


def test_time_order_puts_past_in_train():
    users, times, _ = _table()
    idx = split_indices(users, {"split": {"RS": [0.6, 0.2, 0.2]}, "order": "TO"}, times=times)
    part = _parts(users, idx)
    f = pd.DataFrame({"u": users, "t": times, "p": part})
    last = f.groupby(["u", "p"])["t"].agg(["min", "max"]).unstack()
    tr_max, va_min, va_max, te_min = last[("max", 0)], last[("min", 1)], last[("max", 1)], last[("min", 2)]
    assert (tr_max < va_min.fillna(np.inf)).all() and (tr_max < te_min.fillna(np.inf)).all()
    assert (va_max.dropna() < te_min[va_max.dropna().index]).all()
    # rows of each split are ordered by user, then time
    tr = idx[0]
    key = users[tr] * 1e9 + times[tr]
    assert np.all(np.diff(key) > 0)


def test_leave_one_out():
    users, times, counts = _table()
    idx = split_indices(users, {"split": {"LS": "valid_and_test"}, "order": "TO"}, times=times)
    part = _parts(users, idx)
    n_test = np.bincount(users[part == 2], minlength=len(counts))
    n_valid = np.bincount(users[part == 1], minlength=len(counts))
    np.testing.assert_array_equal(n_test, counts >= 2)
    np.testing.assert_array_equal(n_valid, counts >= 3)
    latest = pd.Series(times).groupby(users).max()
    np.testing.assert_array_equal(np.sort(times[idx[2]]), np.sort(latest[counts >= 2].to_numpy()))
    tr, va, te = split_indices(users, {"split": {"LS": "test_only"}, "order": "RO"}, seed=3)
    assert len(va) == 0 and len(te) == (counts >= 2).sum()


def test_global_split_without_grouping():
    users, times, _ = _table()
    tr, va, te = split_indices(users, {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "TO", "group_by": None},
                               times=times)
    n = len(users)
    assert (len(va), len(te)) == (int(0.1 * n), int(0.1 * n))
    assert times[tr].max() < times[va].min() <= times[va].max() < times[te].min()


@pytest.mark.parametrize("args, msg", [
    ({"order": "XX"}, "order must be RO or TO"),
    ({"order": "TO"}, "order is TO but the interactions have no timestamp"),
    ({"split": {"RS": [0.5]}}, "2 or 3 non-negative ratios"),
    ({"split": {"LS": "both"}}, "valid_and_test or test_only"),
    ({"split": {"XS": 1}}, r"must be \{RS"),
    ({"group": "user"}, "unknown eval_args keys"),
])
def test_bad_eval_args(args, msg):
    with pytest.raises(ValueError, match=msg):
        split_indices(np.zeros(5, np.int64), args)


def test_carve_valid():
    pairs = np.array([[0, i] for i in range(20)] + [[1, 0]] + [[2, 0], [2, 1]])
    tr, va = carve_valid(pairs, 0.1, seed=0)
    assert np.array_equal(np.sort(np.r_[tr, va]), np.arange(len(pairs)))
    assert np.bincount(pairs[va, 0], minlength=3).tolist() == [2, 0, 1]
    tr2, va2 = carve_valid(pairs, 0.1, seed=0)
    assert np.array_equal(va, va2)
    with pytest.raises(ValueError, match="valid_ratio"):
        carve_valid(pairs, 1.5)
