import numpy as np
import pytest
import torch

from vision.chm_corr import BestMatch, CHMCorr, CosineScore, blend, make_birds, vote
from vision.chm_corr.users import user_mask


def test_cosine_score_and_best_match_dense_and_sparse_agree_with_hand_reference():
    torch.manual_seed(0)
    q, k = torch.randn(4, 3), torch.randn(5, 3)
    ref = (q / q.norm(dim=1, keepdim=True)) @ (k / k.norm(dim=1, keepdim=True)).T      # (4, 5)
    score = CosineScore()
    qp, kp = score.project(q[None], k[None])
    dense = score.dense(qp.transpose(1, 2), kp.transpose(1, 2))[0, 0]
    torch.testing.assert_close(dense, ref)
    w = BestMatch().dense(dense[None, None], None)[0, 0]
    assert torch.equal(w.argmax(1), ref.argmax(1)) and torch.equal(w.sum(1), torch.ones(4))
    # a query with no allowed key receives nothing (all-zero weights), never NaN
    mask = torch.ones(4, 5, dtype=torch.bool)
    mask[2] = False
    wm = BestMatch().dense(dense[None, None], mask[None, None])[0, 0]
    assert torch.equal(wm[2], torch.zeros(5)) and torch.equal(wm[[0, 1, 3]].sum(1), torch.ones(3))
    # sparse: every key -> every query
    src, dst = torch.meshgrid(torch.arange(5), torch.arange(4), indexing="xy")
    ei = torch.stack([src.reshape(-1), dst.reshape(-1)])
    s = score.edge(qp[0], kp[0], ei)
    torch.testing.assert_close(s[:, 0], ref[ei[1], ei[0]])
    ws = BestMatch().edge(s, ei, 4, 5)[:, 0]
    assert torch.equal(ei[0][ws.bool()], ref.argmax(1))


def test_vote_grows_k_until_a_unique_winner():
    assert vote(np.array([1, 2, 1, 2, 2]), 2) == (1, 3)    # 1:1 at k=2, 1 wins at k=3
    assert vote(np.array([1, 2, 2, 1, 1]), 4) == (1, 5)    # 2:2 at k=4, 1 wins at k=5
    assert vote(np.array([1, 2, 2, 1]), 4) == (1, 4)       # tie left at N goes to the label ranked first
    assert vote(np.array([3, 3, 1]), 2) == (3, 2)
    with pytest.raises(ValueError, match="empty"):
        vote(np.array([]), 3)


def test_mask_score_is_masked_mean_over_all_cells_and_memoised():
    train, test = make_birds(0, classes=4, train_per_class=15, test_per_class=2)
    model = CHMCorr(train.features, train.labels, n_candidates=20, k=5)
    s = model.query(test.features[0])
    mask = np.zeros(49)
    mask[[3, 10]] = 1
    p = s.predict(mask)
    expected = (s.sim[:, 3] + s.sim[:, 10]) / 49
    order = np.argsort(-expected, kind="stable")
    np.testing.assert_allclose(p.scores, expected[order])
    assert np.array_equal(p.ranking, s.candidates[order])
    assert {q for q, _, _ in p.pairs} <= {3, 10}
    assert s.predict(mask.reshape(7, 7)) is p
    # similarity = cosine of each query cell with its matched candidate cell
    j = 0
    cand = train.features[s.candidates[j]]
    qf = test.features[0]
    cos = (qf / np.linalg.norm(qf, axis=1, keepdims=True)) @ (cand / np.linalg.norm(cand, axis=1, keepdims=True)).T
    np.testing.assert_allclose(s.sim[j], cos.max(1), atol=1e-5)
    np.testing.assert_array_equal(s.match[j], cos.argmax(1))
    # soft masks interpolate between the model's map and the user's
    np.testing.assert_allclose(blend(s.importance_map(), mask, 1.0), mask)
    with pytest.raises(ValueError, match="49 cells"):
        s.predict(np.ones(48))
    with pytest.raises(ValueError, match=">= 0"):
        s.predict(-np.ones(49))


def test_bad_inputs_give_clear_errors():
    train, _ = make_birds(0, classes=3, train_per_class=10, test_per_class=1)
    with pytest.raises(ValueError, match=r"\(n, 49, D\)"):
        CHMCorr(train.features[:, :48], train.labels)
    with pytest.raises(ValueError, match="n_candidates"):
        CHMCorr(train.features, train.labels, n_candidates=100)
    with pytest.raises(ValueError, match="unknown user"):
        user_mask("expert", np.zeros(49, bool), np.random.default_rng(0))
    with pytest.raises(ValueError, match="p_spurious"):
        make_birds(0, p_spurious=1.5)


def test_birds_have_about_twelve_foreground_cells_and_spurious_training_backgrounds():
    train, test = make_birds(1)
    assert train.features.shape == (1000, 49, 64) and test.features.shape == (200, 49, 64)
    assert (train.foreground.sum(1) == 12).all()
    own = train.background == train.labels % 6
    assert 0.78 < own.mean() < 0.9                       # 0.8 + 0.2 / 6
    assert (test.background == test.labels % 6).mean() < 0.35


def test_oracle_mask_beats_static_beats_misled_mask():
    train, test = make_birds(0, test_per_class=3)
    model = CHMCorr(train.features, train.labels)
    acc = {"static": 0, "oracle": 0, "misled": 0}
    for f, fg, y in zip(test.features, test.foreground, test.labels):
        s = model.query(f)
        acc["static"] += s.static().label == y
        acc["oracle"] += s.predict(fg).label == y
        acc["misled"] += s.predict(~fg).label == y
    assert acc["oracle"] > acc["static"] > acc["misled"], acc
