"""INFNet's learned task tokens: their init scale (``token_init_std``) and fit()'s learning-curve history."""
import pytest
import torch

import recsys.multitask  # noqa: F401  (registers task, models, datasets)
from graphattn.config import Config
from graphattn.interpret import capture_attention
from graphattn.registry import get_model
from recsys.multitask.data import synthetic_three_task
from graphattn.training import Trainer
from recsys.multitask.task import MultiTaskTask


@pytest.fixture(scope="module")
def data():
    return synthetic_three_task(n_samples=300, n_users=20, n_items=40, num_fields=6, seq_len=6, seed=1)


def _infnet(data, **extra):
    torch.manual_seed(0)
    return get_model("INFNet")(Config("INFNet", "mtl-synthetic", config_dict={"embedding_size": 32, **extra}), data)


def test_token_init_std_sets_the_scale_of_task_tokens_and_shared_proxies(data):
    for std in (0.1, 1.0):
        model = _infnet(data, token_init_std=std)
        tokens = torch.cat([model.task_tokens.detach().flatten(), model.task_shared.detach().flatten()])
        assert tokens.numel() == (3 + 2) * 32
        assert std * 0.8 < tokens.std().item() < std * 1.2
    with pytest.raises(ValueError, match="token_init_std"):
        _infnet(data, token_init_std=0.0)


def test_task_dependence_of_first_block_attention_grows_with_token_scale(data):
    # Block 0's task-token queries are the learned tokens themselves; with small field embeddings the scores
    # q.k are small, so how much the tasks' attention over the fields differs is ~linear in the tokens' scale.
    # At std 0.1 the three tasks attend (almost) identically, which is how their tokens collapsed in training.
    batch = data.train.batch(torch.arange(64))
    spread = {}
    for std in (0.1, 1.0):
        model = _infnet(data, token_init_std=std).eval()
        with torch.no_grad(), capture_attention(model) as store:
            model(batch)
        w = store["blocks.0.flow.attn.cat__to__task"][0][:, 0]                # (B, N_task, M)
        torch.testing.assert_close(w.sum(-1), torch.ones_like(w.sum(-1)))
        spread[std] = (w - w.mean(1, keepdim=True)).abs().max().item()
    assert spread[1.0] > 5 * spread[0.1]


def test_trainer_records_a_history_per_evaluation(data):
    cfg = Config("SharedBottom", "mtl-synthetic", config_dict={
        "embedding_size": 4, "bottom_hidden": [8], "tower_hidden": [4], "epochs": 3, "eval_step": 1,
        "stopping_step": 5, "show_progress": False})
    torch.manual_seed(0)
    model = get_model("SharedBottom")(cfg, data)
    trainer = Trainer(cfg, MultiTaskTask(cfg, data), model)
    trainer.fit()
    history, train = trainer.history["evaluations"], trainer.history["train"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert all(h["loss"] > 0 for h in train) and all(0.0 <= h["auc_overlap"] <= 1.0 for h in history)
    best = max(range(3), key=lambda i: history[i]["mean_auc"])
    assert trainer.best_epoch == history[best]["epoch"]
