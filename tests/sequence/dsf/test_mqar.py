"""The MQAR generator follows Zoology's semantics; bad sizes are clear errors."""
import pytest
import torch

from sequence.dsf.mqar import IGNORE, multiquery_ar


def test_queries_ask_keys_of_the_context_and_labels_are_their_values():
    v, t, k = 64, 32, 4
    x, y = multiquery_ar(v, 50, t, k, seed=3)
    assert x.shape == y.shape == (50, t) and x.dtype == torch.long
    assert bool(((x >= 0) & (x < v)).all())
    for row, lab in zip(x, y):
        keys, values = row[0:2 * k:2], row[1:2 * k:2]
        assert bool(((keys >= 1) & (keys < v // 2)).all()) and len(set(keys.tolist())) == k
        assert bool(((values >= v // 2) & (values < v)).all()) and len(set(values.tolist())) == k
        where = (lab != IGNORE).nonzero().flatten()
        assert len(where) == k and bool((where >= 2 * k).all())           # one query per key, after the context
        pairs = dict(zip(keys.tolist(), values.tolist()))
        for p in where.tolist():                                          # next-token target at the query key
            assert pairs[int(row[p])] == int(lab[p])
        assert bool((lab[: 2 * k] == IGNORE).all())


def test_gaps_follow_the_power_law_and_seed_is_deterministic():
    x, y = multiquery_ar(512, 2000, 64, 4, power_a=0.01, seed=0)
    x2, y2 = multiquery_ar(512, 2000, 64, 4, power_a=0.01, seed=0)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    pos = (y != IGNORE).nonzero()[:, 1]
    gap = (pos - 8) // 2                                                  # 0 = right after the context
    # p(g) ~ (g+1)^(a-1): short gaps dominate, g=0 about twice as likely as g=1
    counts = torch.bincount(gap, minlength=28).double()
    assert counts[0] > counts[1] > counts[5] and counts[0] / counts[1] > 1.5


@pytest.mark.parametrize("args, message", [
    ((64, 4, 63, 4), "seq_len must be even"),
    ((32, 4, 64, 4), r"vocab_size \(32\) must exceed seq_len \(64\)"),
    ((128, 4, 64, 17), r"num_kv_pairs must be in \[1, seq_len / 4 = 16\]"),
])
def test_bad_sizes_are_clear_errors(args, message):
    with pytest.raises(ValueError, match=message):
        multiquery_ar(*args)
