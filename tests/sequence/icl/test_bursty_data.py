"""The bursty Gaussian-mixture generator: burstiness, Zipf frequencies, label mapping, positions, errors."""
import pytest
import torch

from sequence.icl.bursty_data import BurstyConfig, sample_bursty, zipf_probs


def _setup(**over):
    cfg = BurstyConfig(**{"num_classes": 64, "num_labels": 8, "num_pairs": 8, "dim": 16, "max_pairs": 10,
                          "no_repeats": False, **over})
    g = torch.Generator().manual_seed(0)
    means = torch.randn(cfg.num_classes, cfg.dim, generator=g) / cfg.dim ** 0.5
    labels = torch.randn(cfg.num_labels, cfg.dim, generator=g) / cfg.dim ** 0.5
    return cfg, means, labels, torch.Generator().manual_seed(1)


def test_bursty_contexts_repeat_each_class_b_times_and_hold_the_query():
    cfg, means, labels, g = _setup(burstiness=2, p_bursty=1.0)
    s = sample_bursty(cfg, means, labels, 500, g)
    ctx, query = s["classes"][:, :-1], s["classes"][:, -1]
    for row, q in zip(ctx.tolist(), query.tolist()):
        counts = torch.bincount(torch.tensor(row), minlength=cfg.num_classes)
        assert set(counts[counts > 0].tolist()) <= {2, 4, 6, 8}          # B copies (a class may be drawn twice)
        assert counts.sum() == 8 and q in row


def test_non_bursty_queries_are_mostly_absent_from_the_context():
    cfg, means, labels, g = _setup(burstiness=2, p_bursty=0.0)
    s = sample_bursty(cfg, means, labels, 4000, g)
    present = (s["classes"][:, :-1] == s["classes"][:, -1:]).any(1).float().mean()
    expected = 1 - (1 - 1 / 64) ** 8                                    # i.i.d. uniform classes: ~0.118
    assert abs(float(present) - expected) < 0.03


def test_zipf_frequencies_follow_the_rank_frequency_law():
    p = zipf_probs(4, 1.0)
    torch.testing.assert_close(p, torch.tensor([1, 1 / 2, 1 / 3, 1 / 4]) / (25 / 12))
    cfg, means, labels, g = _setup(burstiness=0, alpha=1.0)
    s = sample_bursty(cfg, means, labels, 4000, g)
    freq = torch.bincount(s["classes"].flatten(), minlength=64).float() / s["classes"].numel()
    expected = zipf_probs(64, 1.0)
    assert (freq[:8] - expected[:8]).abs().max() < 0.01                 # 36k draws: sd ~ 0.002
    assert freq[0] / freq[9] == pytest.approx(10.0, rel=0.25)


def test_labels_items_and_positions_are_laid_out_as_specified():
    cfg, means, labels, g = _setup(burstiness=1, eps=0.1)
    s = sample_bursty(cfg, means, labels, 64, g)
    P, T = cfg.positions, cfg.seq_len
    tok = s["tokens"]
    assert tok.shape == (64, T, P + cfg.dim)
    pos = tok[..., :P]
    assert torch.all(pos.sum(-1) == 1)
    start = pos[:, 0].argmax(-1)
    assert torch.all(pos.argmax(-1) == start[:, None] + torch.arange(T))  # consecutive slots from a random start
    assert len(set(start.tolist())) > 1
    cls = s["classes"]
    torch.testing.assert_close(tok[:, 1:-1:2, P:], labels[cls[:, :-1] % cfg.num_labels])   # label k mod L
    assert torch.equal(s["target"], cls[:, -1] % cfg.num_labels)
    items = tok[:, 0:-1:2, P:] * (1 + 0.1 ** 2) ** 0.5
    err = (items - means[cls[:, :-1]]).norm(dim=-1)
    assert 0.05 < float(err.mean()) < 0.15                               # eps * |eta| with |eta| ~ 1


def test_flipped_labels_shift_context_and_target_by_one():
    cfg, means, labels, _ = _setup(burstiness=1)
    a = sample_bursty(cfg, means, labels, 32, torch.Generator().manual_seed(5))
    b = sample_bursty(cfg, means, labels, 32, torch.Generator().manual_seed(5), flip_labels=True)
    assert torch.equal(b["target"], (a["target"] + 1) % cfg.num_labels)
    assert torch.equal(b["context_labels"], (a["context_labels"] + 1) % cfg.num_labels)


def test_novel_sequences_use_fresh_classes_and_distinct_labels_with_no_repeats():
    cfg, means, labels, g = _setup(burstiness=1, p_novel=1.0, no_repeats=True)
    s = sample_bursty(cfg, means, labels, 200, g)
    assert torch.all(s["novel"]) and torch.all(s["classes"] >= cfg.num_classes)
    assert all(len(set(r)) == 8 for r in s["context_labels"].tolist())
    items = s["tokens"][:, 0, cfg.positions:] * (1 + 0.1 ** 2) ** 0.5
    nearest = torch.cdist(items, means).min(-1).values
    assert float(nearest.min()) > 0.3                                     # not one of the known means


@pytest.mark.parametrize("over, match", [
    ({"num_classes": 60}, "multiple of num_labels"),
    ({"burstiness": 3}, "divide num_pairs"),
    ({"p_bursty": 1.5}, r"p_bursty must lie in \[0, 1\]"),
    ({"max_pairs": 4}, "num_pairs N=8 <= max_pairs"),
])
def test_bad_settings_give_clear_errors(over, match):
    with pytest.raises(ValueError, match=match):
        _setup(**over)
