import pytest
import torch

from graphattn.config import Config
from graphattn.training import Trainer
from sequence.interactcomp.data import load_interactcomp
from sequence.interactcomp.env import Observation, Turn
from sequence.interactcomp.model import InteractCompPolicy
from sequence.interactcomp.tokens import ASK_NO, DECIDE, DOMAIN, QUESTION, RESULT, SEARCH, encode

TINY = {"num_entities": 90, "num_domains": 3, "train_items": 60, "valid_items": 20, "test_items": 20,
        "hidden_size": 16, "num_heads": 2, "num_layers": 1, "train_batch_size": 32, "show_progress": False}


@pytest.fixture(scope="module")
def tiny():
    config = Config("InteractCompPolicy", "interactcomp", config_dict=TINY)
    return config, load_interactcomp(config)


def test_encode_lays_out_the_history_as_tokens(hand_kb):
    kb, item = hand_kb
    obs = Observation(0, 0, item.question, [Turn("search", result=(0, 1)), Turn("ask", (4, 0), "no")], 3, ("answer",))
    t = encode([obs], kb)
    assert t["kind"][0].tolist() == [DECIDE, DOMAIN, QUESTION, QUESTION, QUESTION, QUESTION, SEARCH, RESULT, RESULT, ASK_NO]
    assert t["step"][0, 0] == 3 and t["step"][0, -1] == 2
    assert t["entity"][0, 7:9].tolist() == [0, 1] and t["rank"][0, 7:9].tolist() == [1, 2]
    assert t["term"][0, -1] == 1 + 4 * 2 + 0
    assert t["attrs"][0, 8].tolist() == [1 + a * 2 + v for a, v in enumerate([0, 0, 0, 0, 1, 1])]
    with pytest.raises(ValueError, match="more than length=4"):
        encode([obs], kb, length=4)


def test_pointer_is_minus_infinity_off_the_results_and_padding_changes_nothing(tiny):
    config, data = tiny
    torch.manual_seed(0)
    model = InteractCompPolicy(config, data).eval()
    demos = data.demos["valid"]
    batch = {k: v[:6] for k, v in demos.items()}
    out = model(batch)
    assert torch.isneginf(out["pointer"][batch["kind"] != RESULT]).all()
    assert torch.isfinite(out["pointer"][batch["kind"] == RESULT]).all()
    padded = {k: torch.cat([v, torch.zeros_like(v[:, :3])], 1) if v.dim() > 1 else v for k, v in batch.items()}
    padded["entity"][:, -3:] = -1
    out2 = model(padded)
    assert torch.allclose(out["action"], out2["action"], atol=1e-5)
    assert torch.allclose(out["pointer"], out2["pointer"][:, :-3], atol=1e-5)
    with pytest.raises(ValueError, match="expected kind"):
        model({**batch, "attrs": batch["attrs"][..., :3]})


def test_acting_respects_the_allowed_actions(tiny, hand_kb):
    config, data = tiny
    model = InteractCompPolicy(config, data).eval()
    item = data.items["test"][0]
    obs = [Observation(item.id, item.domain, item.question, [], 1, ("ask", "search")),
           Observation(item.id, item.domain, item.question, [Turn("search", result=(item.distractor, item.target))],
                       10, ("answer",))]
    first, last = model.act_batch(obs)
    assert first.kind in ("ask", "search")
    if first.kind == "ask":
        assert first.term[0] not in {a for a, _ in item.question}
    assert last.kind == "answer" and last.entity in (item.distractor, item.target) and 0 <= last.confidence <= 100


def test_a_short_imitation_run_lowers_the_loss_and_reports_the_rollout_metrics(tiny):
    config, _ = tiny
    config = Config("InteractCompPolicy", "interactcomp", config_dict={**TINY, "epochs": 4, "log_level": "WARNING"})
    trainer = Trainer.from_config(config)             # in memory: no run folder, no curve plot
    metrics = trainer.fit()
    losses = [row["loss"] for row in trainer.history["train"]]
    assert losses[-1] < losses[0]
    assert {"action_accuracy", "accuracy", "ece", "forced_accuracy", "forced_interaction_rate"} <= set(metrics)
    assert metrics["forced_interaction_rate"] == 100.0
