"""Data-parallel training (``torchrun``, DistributedDataParallel, gloo) equals one process on the whole batch.

The test starts this file under ``torchrun --nproc_per_node=2`` (the real environment detection of
:func:`graphattn.training.distributed.init_from_env`); each rank builds BPRMF, CKE and KGAT on a tiny planted-kg,
evaluates them, trains one epoch of one batch per phase (KGAT: a CF step, a TransR step and the attention
refresh), resumes from a checkpoint only rank 0 can read, and saves what it saw. The same is done here in one
process. Plain SGD with learning rate 1 makes a parameter's change its gradient: a wrong average over the
ranks (a sum, or a mean of unequal shares) would show, where Adam's first step (``g / |g|``) would hide it.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
MODELS = ("BPRMF", "CKE", "KGAT")


def _config(model: str):
    from graphattn.config import Config

    extra = {"mess_dropout": [0.0, 0.0], "layers": [8, 8]} if model == "KGAT" else {}
    return Config(model, "planted-kg", config_dict={
        "planted_kg": {"n_users": 40, "n_items": 60, "n_clusters": 4, "n_noise_entities": 10},
        "embedding_size": 8, "kg_embedding_size": 8, "train_batch_size": 16, "kg_batch_size": 12,
        "eval_batch_size": 8,   # several chunks of users, dealt unevenly to the two ranks
        "optimizer": "sgd", "momentum": 0.0, "learning_rate": 1.0, "seed": 7, "device": "cpu",
        "show_progress": False, "log_level": "WARNING", **extra})


def _one_epoch(model: str, checkpoint: str | None) -> dict:
    """What one process (one rank) sees: evaluations, its batches, the weights after one epoch, after resuming."""
    from graphattn.training import Trainer

    trainer = Trainer.from_config(_config(model))
    out = {"valid": trainer.evaluate("valid"), "test": trainer.evaluate("test")}
    samplers = trainer.task.samplers
    for sampler in (samplers["cf"].cf, samplers["cf"].kg) if model == "CKE" else samplers.values():
        sampler.n_batches = 1                            # one batch per phase
    drawn = trainer.task.state_dict()
    out["batches"] = {phase: list(trainer.task.batches(phase)) for phase in trainer.task.phases}
    trainer.task.load_state_dict(drawn)                  # the epoch draws the batches recorded above
    out["start"] = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    out["losses"] = {k: v for k, v in trainer.train_epoch().items() if "seconds" not in k}
    out["params"] = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    out["no_grad"] = sorted(n for n, p in trainer.model.named_parameters() if p.grad is None)
    out["state"] = trainer.state_dict()
    if checkpoint is not None:
        trainer.resume(checkpoint)
        out["resumed"] = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        out["resumed_task"] = trainer.task.state_dict()
    return out


def _worker(out_dir: str, checkpoint_dir: str) -> None:
    sys.path.insert(0, str(ROOT))
    import recsys  # noqa: F401  (registers the models)
    from graphattn.training import distributed

    torch.set_num_threads(1)
    distributed.init_from_env("cpu")
    rank = distributed.rank()
    results = {"world_size": distributed.world_size()}
    for model in MODELS:   # rank 1 is handed a path that does not exist: rank 0 reads and sends the checkpoint
        checkpoint = os.path.join(checkpoint_dir, f"{model}.pt") if rank == 0 else "/nonexistent/last.pt"
        results[model] = _one_epoch(model, checkpoint)
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    distributed.shutdown()


def _tensors(batches) -> list[torch.Tensor]:
    """The tensors of nested lists / tuples, in order."""
    if isinstance(batches, torch.Tensor):
        return [batches]
    return [t for part in batches for t in _tensors(part)]


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a.double(), b.double(), rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    import recsys  # noqa: F401

    tmp = tmp_path_factory.mktemp("ddp")
    single = {}
    for model in MODELS:
        single[model] = _one_epoch(model, None)
        torch.save(single[model]["state"], tmp / f"{model}.pt")   # the checkpoint the ranks resume from
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           __file__, str(tmp), str(tmp)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [torch.load(tmp / f"rank{r}.pt", weights_only=True) for r in range(2)]
    return single, ranks


def test_two_ranks_found_each_other(runs):
    _, ranks = runs
    assert [r["world_size"] for r in ranks] == [2, 2]


@pytest.mark.parametrize("model", MODELS)
def test_rank_shares_make_up_the_single_process_batch(runs, model):
    single, ranks = runs
    for phase, batch in single[model]["batches"].items():
        first, second = (_tensors(r[model]["batches"][phase]) for r in ranks)
        whole = _tensors(batch)
        assert len(whole) == len(first) == len(second) > 0
        for whole, first, second in zip(whole, first, second):
            assert len(first) == len(second) == len(whole) // 2
            assert torch.equal(torch.cat([first, second]), whole)


@pytest.mark.parametrize("model", MODELS)
def test_one_epoch_on_two_ranks_equals_one_process(runs, model):
    single, ranks = runs
    ref = single[model]
    for r in ranks:
        for key, value in ref["params"].items():
            assert _close(r[model]["params"][key], value), (key, (r[model]["params"][key] - value).abs().max())
        assert r[model]["no_grad"] == ref["no_grad"]      # a phase's unused parameters get no (zero) gradient
        assert r[model]["losses"].keys() == ref["losses"].keys()
        for key, value in ref["losses"].items():          # logged losses are the whole batch's
            assert abs(r[model]["losses"][key] - value) < 1e-6, key
    for key in ref["params"]:                             # the ranks hold identical weights
        assert torch.equal(ranks[0][model]["params"][key], ranks[1][model]["params"][key]), key
    moved = [k for k, v in ref["params"].items() if not torch.equal(v, ref["start"][k])]
    assert "embedding.weight" in moved or "user_embedding.weight" in moved   # the step did change the weights


def test_kgat_attention_refresh_is_the_same_on_every_rank(runs):
    single, ranks = runs
    ref = single["KGAT"]["params"]["edge_attention"]
    assert not torch.equal(ref, single["KGAT"]["start"]["edge_attention"])   # the refresh ran
    assert torch.equal(ranks[0]["KGAT"]["params"]["edge_attention"], ranks[1]["KGAT"]["params"]["edge_attention"])
    assert _close(ranks[0]["KGAT"]["params"]["edge_attention"], ref)


@pytest.mark.parametrize("model", MODELS)
def test_sharded_evaluation_equals_one_process_exactly(runs, model):
    single, ranks = runs
    for split in ("valid", "test"):
        for r in ranks:
            assert r[model][split] == single[model][split]


@pytest.mark.parametrize("model", MODELS)
def test_resume_reaches_every_rank_from_rank_0(runs, model):
    single, ranks = runs
    saved = single[model]["state"]
    for r in ranks:
        for key, value in saved["model"].items():
            assert torch.equal(r[model]["resumed"][key], value), key
        assert r[model]["resumed_task"] == saved["task"]


def test_shard_splits_every_batch_into_equal_contiguous_shares():
    import numpy as np

    from recsys.sampler import BPRSampler

    train = np.array([[u, i] for u in range(30) for i in range(u % 5, u % 5 + 3)])
    whole = BPRSampler(train, 10, batch_size=9, seed=1)
    shares = [BPRSampler(train, 10, batch_size=9, seed=1) for _ in range(2)]
    with pytest.warns(UserWarning, match="batch size 9 rounded down to 8"):
        assert [s.shard(r, 2) for r, s in enumerate(shares)] == [8, 8]
    whole.batch_size = 8
    for _ in range(3):
        expected = whole.next_batch()
        got = [s.next_batch() for s in shares]
        for column, first, second in zip(expected, *got):
            assert len(first) == len(second) == 4
            assert np.array_equal(np.concatenate([first, second]), column)


def test_shard_rejects_bad_ranks_and_tiny_batches():
    import numpy as np

    from recsys.sampler import KGSampler

    sampler = KGSampler(np.array([[0, 0, 1], [1, 0, 2], [2, 1, 0]]), 3, 2, batch_size=2)
    with pytest.raises(ValueError, match=r"rank must be in \[0, 2\), got 2"):
        sampler.shard(2, 2)
    with pytest.raises(ValueError, match="batch size 2 is smaller than the 3 processes"):
        sampler.shard(0, 3)


if __name__ == "__main__":   # one rank, started by torchrun from the fixture above
    _worker(*sys.argv[1:3])
