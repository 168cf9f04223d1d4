import numpy as np
import pandas as pd
import pytest
import torch

from recsys.sequential.data import (SeqData, build_frames, drifting_interest, from_frame, leave_one_out,
                                    load_ml100k_seq, pad_right)


def _hand() -> SeqData:
    items = [np.array([0, 1, 2, 3, 4]), np.array([5, 4, 3])]
    times = [np.array([0.0, 2.0, 3.0, 7.0, 8.0]), np.array([1.0, 1.0, 5.0])]
    return SeqData("hand", 6, items, times, exclude_history=True)


def test_leave_one_out_slices():
    seq = np.arange(6)
    ctx, tgt = leave_one_out(seq, "train")
    assert seq[ctx].tolist() == [0, 1, 2, 3] and tgt is None
    ctx, tgt = leave_one_out(seq, "valid")
    assert seq[ctx].tolist() == [0, 1, 2, 3] and tgt == 4
    ctx, tgt = leave_one_out(seq, "test")
    assert seq[ctx].tolist() == [0, 1, 2, 3, 4] and tgt == 5
    with pytest.raises(ValueError, match=">= 3"):
        leave_one_out(np.arange(2), "test")
    with pytest.raises(ValueError, match="unknown split"):
        leave_one_out(seq, "dev")


def test_split_targets_ground_truth_and_exclusion():
    data = _hand()
    assert data.target(0, "valid") == (3, 7.0) and data.target(0, "test") == (4, 8.0)
    assert data.target(1, "valid") == (4, 1.0) and data.target(1, "test") == (3, 5.0)
    gt = data.ground_truth("test").toarray()
    assert gt.tolist() == [[0, 0, 0, 0, 1, 0], [0, 0, 0, 1, 0, 0]]
    # the test context includes the validation item; the valid context does not
    assert data.exclude("test").toarray()[0].tolist() == [1, 1, 1, 1, 0, 0]
    assert data.exclude("valid").toarray()[0].tolist() == [1, 1, 1, 0, 0, 0]
    assert data.exclude("valid").toarray()[1].tolist() == [0, 0, 0, 0, 0, 1]
    data.exclude_history = False
    assert data.exclude("test") is None


def test_eval_batch_holds_context_and_target_time():
    data = _hand()
    b = data.eval_batch(np.array([0, 1]), "test", max_len=3)
    assert b["items"].tolist() == [[1, 2, 3], [5, 4, 6]]      # last 3 context items, padded with n_items
    assert b["lengths"].tolist() == [3, 2]
    assert b["times"][0].tolist() == [2.0, 3.0, 7.0]
    assert b["target"].tolist() == [4, 3] and b["target_time"].tolist() == [8.0, 5.0]


def test_train_batches_never_contain_valid_or_test_items():
    data = _hand()
    rng = np.random.default_rng(0)
    seen = []
    for _ in range(20):
        for b in data.train_batches(2, max_len=10, rng=rng):
            for row, n, u in zip(b["items"], b["lengths"], b["users"]):
                seen.append((int(u), row[:n].tolist()))
    for u, s in seen:
        full = data.items[u][:-2].tolist()
        assert 2 <= len(s) <= len(full)
        assert any(full[i:i + len(s)] == s for i in range(len(full) - len(s) + 1))


def test_pad_right_keeps_last():
    x, n = pad_right([np.array([1, 2, 3, 4]), np.array([7])], 3, -1, np.int64)
    assert x.tolist() == [[2, 3, 4], [7, -1, -1]] and n.tolist() == [3, 1]


def test_build_frames_hand_case():
    items = torch.tensor([[10, 11, 12, 13, 14, 99], [20, 99, 99, 99, 99, 99]])
    times = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0, 0.0], [5.0, 0, 0, 0, 0, 0]])
    lengths = torch.tensor([5, 1])
    fr = build_frames(items, times, lengths, frame_len=2, pad=99)
    assert fr["items"][0].tolist() == [[99, 10], [11, 12], [13, 14]]
    assert fr["items"][1].tolist() == [[99, 99], [99, 99], [99, 20]]
    assert fr["valid"].tolist() == [[True, True, True], [False, False, True]]
    assert fr["time"][0].tolist() == [0.0, 2.0, 4.0] and fr["time"][1, 2] == 5.0
    assert fr["end"].tolist() == [[0, 2, 4], [-1, -1, 0]]
    assert fr["pos"][0].tolist() == [[-1, 0], [1, 2], [3, 4]]
    # every real item appears exactly once across the frames
    for b in range(2):
        got = fr["items"][b][fr["item_valid"][b]].tolist()
        assert got == items[b, :lengths[b]].tolist()


def test_from_frame_orders_by_time_with_stable_ties():
    df = pd.DataFrame({"user": ["u", "u", "u", "v", "v", "v"], "item": ["c", "a", "b", "a", "b", "c"],
                       "timestamp": [30.0, 10.0, 10.0, 5.0, 6.0, 7.0]})
    d = from_frame("t", df, {"time_mode": "timestamp", "time_scale": 10.0})
    assert d.items[0].tolist() == [0, 1, 2]                       # a, b (file order on the tie), c
    assert d.times[0].tolist() == [0.0, 0.0, 2.0]
    d = from_frame("t", df, {"time_mode": "index"})
    assert d.times[1].tolist() == [0.0, 1.0, 2.0]
    with pytest.raises(ValueError, match="time_mode"):
        from_frame("t", df, {"time_mode": "days"})


def test_drifting_interest_is_short_non_consecutive_and_clustered():
    df = drifting_interest(n_users=50, n_clusters=8, cluster_size=5, n_steps=40, keep_prob=0.5, max_history=15,
                           skip_prob=0.0, seed=1)
    for _, g in df.groupby("user"):
        assert 3 <= len(g) <= 15
        assert np.all(np.diff(g["timestamp"].to_numpy()) >= 1)
        assert len(np.unique(g["item"].to_numpy() // 5)) <= 3     # no skips: at most the user's 3 clusters
    gaps = np.concatenate([np.diff(g["timestamp"].to_numpy()) for _, g in df.groupby("user")])
    assert (gaps > 1).mean() > 0.2                                 # histories skip steps
    noisy = drifting_interest(n_users=50, n_clusters=8, cluster_size=5, n_steps=40, keep_prob=0.5, max_history=15,
                              skip_prob=0.0, period_jitter=0.2, phase_noise=0.3, seed=1)
    assert noisy["item"].max() < 40 and not noisy.equals(df)
    for _, g in noisy.groupby("user"):
        assert len(np.unique(g["item"].to_numpy() // 5)) <= 3


def test_ml100k_seq_loads():
    # recbole's bundled ml-100k is installed by the Makefile (make test); its absence is a set-up error
    d = load_ml100k_seq({"time_mode": "index"})
    assert d.n_users == 943 and d.n_items == 1682 and sum(len(s) for s in d.items) == 100_000
