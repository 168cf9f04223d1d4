"""Task decon_lm end to end through the Trainer: the loss falls, the paper's AdamW betas, evaluation windows."""
import pytest
import torch

import sequence  # noqa: F401
from graphattn.config import Config
from graphattn.training import Trainer
from sequence.deconstruct.task import eval_windows

TINY = {"decon_dim": 16, "decon_heads": 2, "decon_ffn": 32, "decon_layers": 2, "lm_context": 16,
        "pcfg_train_tokens": 2000, "pcfg_eval_tokens": 400, "epochs": 3, "steps_per_epoch": 15,
        "train_batch_size": 16, "learning_rate": 0.01, "show_progress": False, "device": "cpu", "seed": 3}


@pytest.mark.parametrize("variant,drop", [("standard", 0.3), ("nonapprox", 0.1)])
def test_training_lowers_the_loss(variant, drop):
    trainer = Trainer.from_config(Config("DeconLM", "pcfg-lm", config_dict={**TINY, "decon_variant": variant}))
    opt = trainer.optimizers["train"]
    assert opt.defaults["betas"] == (0.9, 0.9999)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]   # norms are not decayed
    test = trainer.fit()
    losses = [row["loss"] for row in trainer.history["train"]]
    assert losses[-1] < losses[0] - drop, losses
    assert test["ppl"] == pytest.approx(torch.tensor(test["loss"]).exp().item(), rel=1e-6)


def test_eval_windows_cover_each_target_once():
    w = eval_windows(torch.arange(11), 3, 0)
    assert w.tolist() == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
    assert eval_windows(torch.arange(100), 3, 6).shape == (2, 4)
    with pytest.raises(ValueError, match="shorter than one window"):
        eval_windows(torch.arange(3), 3, 0)
