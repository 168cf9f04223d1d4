"""The shipped schedules (recsys/presets/*.yaml), RecBole's training sampler (BPRSampler mode="interaction",
BPRMF's cf_sampling), the sampler's membership table, and the time-to-quality race of bench/time_to_quality.py."""
from pathlib import Path

import numpy as np
import pytest
import torch

import recsys  # noqa: F401  (registers the models)
from graphattn.config import Config
from recsys.sampler import BPRSampler, _PairSet

PRESETS = Path(__file__).resolve().parents[2] / "recsys" / "presets"


@pytest.mark.parametrize("preset", ["fast", "official", "recbole"])
@pytest.mark.parametrize("model", ["BPRMF", "CKE", "KGAT"])
def test_every_preset_loads_with_every_kg_model(preset, model):
    # Config rejects a key no layer defines, so this fails on an unknown or mistyped key
    config = Config(model, "ml-100k", config_files=[PRESETS / f"{preset}.yaml"])
    assert config.source("learning_rate").endswith(f"{preset}.yaml")   # the preset wins over the dataset budget
    assert config.source("epochs").endswith(f"{preset}.yaml")


def test_presets_say_what_they_are_for():
    fast = Config("KGAT", "ml-100k", config_files=[PRESETS / "fast.yaml"])
    official = Config("KGAT", "ml-100k", config_files=[PRESETS / "official.yaml"])
    recbole = Config("BPRMF", "ml-100k", config_files=[PRESETS / "recbole.yaml"])
    assert official["learning_rate"] == 1e-4 and official["train_batch_size"] == 1024 and official["warmup_epochs"] == 0
    assert fast["train_batch_size"] > official["train_batch_size"] and fast["learning_rate"] > official["learning_rate"]
    assert fast["warmup_epochs"] >= 1
    assert (recbole["learning_rate"], recbole["train_batch_size"], recbole["epochs"]) == (1e-3, 2048, 300)
    assert (recbole["eval_step"], recbole["stopping_step"], recbole["valid_metric"]) == (1, 10, "mrr@10")
    assert recbole["threshold"] is None and recbole["eval_args"]["split"] == {"RS": [0.8, 0.1, 0.1]}


def _train():
    rng = np.random.default_rng(0)
    counts = [1, 2, 5, 9, 20, 3]                 # uneven users: user-uniform and interaction-uniform differ
    rows = [(u, i) for u, c in enumerate(counts) for i in rng.choice(30, c, replace=False)]
    return np.array(rows, dtype=np.int64)


def test_interaction_mode_visits_every_interaction_once_per_epoch():
    train = _train()                             # 40 interactions
    s = BPRSampler(train, 30, batch_size=16, seed=0, mode="interaction")
    assert len(s) == 3                           # ceil(40 / 16): RecBole keeps the short last batch
    seen = set(map(tuple, train.tolist()))
    for _ in range(2):                           # two epochs, each a fresh order
        batches = list(s)
        assert [len(b[0]) for b in batches] == [16, 16, 8]
        users = np.concatenate([b[0] for b in batches])
        pos = np.concatenate([b[1] for b in batches])
        neg = np.concatenate([b[2] for b in batches])
        assert sorted(zip(users.tolist(), pos.tolist())) == sorted(seen)
        assert not any((u, j) in seen for u, j in zip(users.tolist(), neg.tolist()))
    # user mode draws users uniformly instead: the 1-interaction user is as frequent as the 20-interaction one
    u = np.concatenate([BPRSampler(train, 30, batch_size=6, seed=1).sample()[0] for _ in range(300)])
    assert abs(np.mean(u == 0) - np.mean(u == 4)) < 0.05


def test_interaction_mode_resumes_mid_epoch_and_rejects_bad_options():
    train = _train()
    a = BPRSampler(train, 30, batch_size=16, seed=3, mode="interaction")
    a.sample()
    b = BPRSampler(train, 30, batch_size=16, seed=99, mode="interaction")
    b.load_state_dict(a.state_dict())
    for _ in range(4):                           # the rest of the epoch and into the next one
        assert all(np.array_equal(x, y) for x, y in zip(a.sample(), b.sample()))
    with pytest.raises(ValueError, match="cf_sampling"):
        BPRSampler(train, 30, 16, mode="items")
    with pytest.raises(ValueError, match="n_batches"):
        BPRSampler(train, 30, 16, n_batches=3, mode="interaction")


def test_interaction_mode_shards_the_short_last_batch_equally():
    train = _train()
    whole = BPRSampler(train, 30, batch_size=16, seed=5, mode="interaction")
    shares = [BPRSampler(train, 30, batch_size=16, seed=5, mode="interaction") for _ in range(2)]
    for r, s in enumerate(shares):
        s.shard(r, 2)
    for _ in range(3):                           # 16, 16, then the last 8: 4 rows each
        expected = whole.next_batch()
        got = [s.next_batch() for s in shares]
        for column, first, second in zip(expected, *got):
            assert len(first) == len(second) == len(column) // 2
            assert np.array_equal(np.concatenate([first, second]), column)


def test_pair_set_table_answers_like_the_sorted_keys():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 50, 400), rng.integers(0, 70, 400)
    small = _PairSet(a, b, 70)
    assert small.dense is not None
    big = _PairSet(a, b, 70)
    big.dense = None                             # the binary-search path
    qa, qb = rng.integers(0, 60, 5000), rng.integers(0, 70, 5000)   # users beyond the largest key included
    assert np.array_equal(small.contains(qa, qb), big.contains(qa, qb))
    assert small.contains(a, b).all()


def test_bprmf_trains_with_the_sampler_its_config_names():
    from recsys.data import RecDataset
    from recsys.models.bprmf import BPRMF
    train = _train()
    data = RecDataset(name="tiny", n_users=6, n_items=30, n_entities=30, n_relations=0, train=train,
                      valid=np.zeros((0, 2), np.int64), test=train[:3], kg=np.zeros((0, 3), np.int64))
    for mode in ("user", "interaction"):
        config = Config("BPRMF", "ml-100k", config_dict={"cf_sampling": mode, "train_batch_size": 16})
        sampler = BPRMF(config, data).samplers(config, data, 0)["cf"]
        assert sampler.mode == mode and len(sampler) == (3 if mode == "interaction" else 40 // 16 + 1)
    with pytest.raises(TypeError):
        Config("BPRMF", "ml-100k", config_dict={"cf_sampling": 1})


def test_time_to_quality_race_waits_when_ahead_and_stops_at_the_target(monkeypatch):
    import sys
    sys.path.insert(0, str(PRESETS.parents[1]))
    from bench import time_to_quality as ttq

    class Fake:
        def __init__(self, recalls):
            self.recalls, self.epoch, self.max_epochs, self.info = recalls, 0, 10**9, {}

        def step(self):
            self.epoch += 1

        def embeddings(self):
            return self.recalls[min(self.epoch, len(self.recalls)) - 1], None

    monkeypatch.setattr(ttq, "_test_metrics", lambda evaluator, data, u, i: {"recall@20": u, "ndcg@20": 0.0})
    runners = {"reference": Fake([0.1, 0.2, 0.3]), "ours-fast": Fake([0.25, 0.35, 0.5])}
    out = ttq.race(runners, None, None, budget=1e9, target=None, max_epochs=3)
    assert [p["recall@20"] for p in out["reference"]["curve"]] == [0.1, 0.2, 0.3]
    assert [p["recall@20"] for p in out["ours-fast"]["curve"]] == [0.25, 0.35]   # stops once past the final 0.3
    assert ttq.first_reach(out["ours-fast"]["curve"], 0.3) == out["ours-fast"]["curve"][1]["train_seconds"]
    assert ttq.first_reach(out["ours-fast"]["curve"], 0.9) is None
