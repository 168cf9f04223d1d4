import pytest
import torch

from graphattn.attention.messages import ValueMessage
from graphattn.attention.scores import DotProductScore
from graphattn.config import Config
from graphattn.training import Trainer
from vision.diffusion.data import load_digits_diffusion
from vision.diffusion.dit import DiT
from vision.diffusion.spice_e import CrossEntityMessage, CrossEntityScore, SpiceE, SpiceTask, abstraction, iou

CFG = {"hidden_size": 16, "num_layers": 2, "num_heads": 2, "mlp_ratio": 2.0, "patch_size": 2, "timesteps": 50,
       "noise_schedule": "cosine", "image_size": 8, "valid_ratio": 0.1, "test_ratio": 0.2, "split_seed": 0}


@pytest.fixture(scope="module")
def dit():
    torch.manual_seed(0)
    m = DiT(CFG, load_digits_diffusion(CFG)).eval()
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return m


def inputs():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 1, 8, 8, generator=g)
    return x, torch.tensor([2, 20, 45]), torch.tensor([0, 4, 10]), torch.rand(3, 1, 8, 8, generator=g) * 2 - 1


@pytest.mark.parametrize("mixing,inject", [("full", "query"), ("diagonal", "query"), ("full", "key"), ("full", "value"),
                                           ("diagonal", "value")])
def test_conversion_is_bit_identical_to_the_pretrained_model(dit, mixing, inject):
    x, t, y, g = inputs()
    spice = SpiceE(dit, mixing, inject).eval()
    with torch.no_grad():
        assert torch.equal(spice(x, t, y, g), dit(x, t, y))
        assert torch.equal(spice(x, t, y, -g), dit(x, t, y))      # the guidance has no effect until Z moves


def test_query_formula_by_hand_and_keys_ignore_the_guidance():
    torch.manual_seed(0)
    base = DotProductScore(4, 4, heads=2, head_dim=2)
    score = CrossEntityScore(base, tokens=3)
    with torch.no_grad():
        score.z.normal_()
        score.z_bias.normal_()
    x, g = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    q, k = score.project(torch.cat([x, g], -1), x)
    wq, bq = base.q.weight, base.q.bias
    ref = x @ wq.T + bq + torch.einsum("ij,bjd->bid", score.z, g @ wq.T) + score.z_bias
    assert torch.allclose(q.flatten(-2), ref, atol=1e-5)
    _, k2 = score.project(torch.cat([x, g + 1], -1), x)
    assert torch.equal(k, k2) and torch.allclose(k.flatten(-2), base.k(x))
    # the ablation: the same term on the keys, queries untouched
    key = CrossEntityScore(base, tokens=3, inject="key")
    with torch.no_grad():
        key.z.copy_(score.z)
        key.z_bias.copy_(score.z_bias)
    q3, k3 = key.project(torch.cat([x, g], -1), x)
    ref_k = x @ base.k.weight.T + base.k.bias + torch.einsum("ij,bjd->bid", key.z, g @ base.k.weight.T) + key.z_bias
    assert torch.allclose(k3.flatten(-2), ref_k, atol=1e-5) and torch.allclose(q3.flatten(-2), base.q(x))


def test_value_ablation_formula_by_hand_and_scores_ignore_the_guidance():
    torch.manual_seed(0)
    base_score, base_msg = DotProductScore(4, 4, heads=2, head_dim=2), ValueMessage(4, heads=2, value_dim=2)
    score = CrossEntityScore(base_score, tokens=3, inject="value")
    message = CrossEntityMessage(base_msg, tokens=3)
    assert not hasattr(score, "z")                              # the score holds no guidance term in this ablation
    with torch.no_grad():
        message.z.normal_()
        message.z_bias.normal_()
    x, g = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    senders = torch.cat([x, g], -1)
    q, k = score.project(senders, senders)
    assert torch.allclose(q.flatten(-2), base_score.q(x)) and torch.allclose(k.flatten(-2), base_score.k(x))
    wv, bv = base_msg.v.weight, base_msg.v.bias
    ref = x @ wv.T + bv + torch.einsum("ij,bjd->bid", message.z, g @ wv.T) + message.z_bias
    assert torch.allclose(message.project(senders).flatten(-2), ref, atol=1e-5)
    with pytest.raises(ValueError, match="CrossEntityMessage: senders must carry"):
        message.project(x)


@pytest.mark.parametrize("inject", ["query", "value"])
def test_z_gets_a_gradient_and_then_the_guidance_matters(dit, inject):
    x, t, y, g = inputs()
    spice = SpiceE(dit, inject=inject).train()
    spice(x, t, y, g).pow(2).mean().backward()
    attn = spice.blocks[0].attn
    z = (attn.score if inject == "query" else attn.message).z
    assert z.grad is not None and float(z.grad.abs().sum()) > 0
    with torch.no_grad():
        z.add_(0.5)
        assert not torch.allclose(spice(x, t, y, g), spice(x, t, y, -g))


def test_abstraction_and_iou_by_hand():
    x = -torch.ones(1, 1, 4, 4)
    x[0, 0, 0, 0] = x[0, 0, 0, 1] = x[0, 0, 1, 0] = 1.0          # top-left 2x2 block mean 0.5 > 0
    x[0, 0, 3, 3] = 1.0                                           # bottom-right block mean -0.5
    a = abstraction(x)
    assert torch.equal(a[0, 0] > 0, torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]).bool())
    assert float(iou(a, x)[0]) == pytest.approx(3 / 5)


def test_bad_inputs_give_clear_errors(dit):
    with pytest.raises(ValueError, match="mixing"):
        SpiceE(dit, "sparse")
    with pytest.raises(ValueError, match="inject"):
        SpiceE(dit, "full", "output")
    x, t, y, g = inputs()
    with pytest.raises(ValueError, match="guidance g must have the shape"):
        SpiceE(dit)(x, t, y, g[:, :, :4, :4])


def test_short_finetune_through_the_trainer_lowers_the_loss(tmp_path):
    config = Config("DiT", "digits-diffusion", config_dict={
        **CFG, "epochs": 2, "eval_step": 1, "show_progress": False, "device": "cpu", "seed": 0, "log_level": "WARNING",
        "checkpoint_dir": str(tmp_path), "train_batch_size": 128, "learning_rate": 3e-3, "eval_draws": 1,
        "warmup_epochs": 0, "class_dropout": 0.5})
    torch.manual_seed(0)
    task = SpiceTask(config)
    spice = SpiceE(DiT(config, task.data))
    trainer = Trainer(config, task, spice)
    before = trainer.evaluate("valid")["mse"]
    trainer.fit()
    assert trainer.evaluate("valid")["mse"] < 0.8 * before
