"""The DSF mixers equal their own DSF; DSFMixer trains through the Trainer on task mqar."""
import pytest
import torch

import sequence  # noqa: F401  (registers task mqar, dataset mqar, DSFMixer)
from graphattn.config import Config
from graphattn.training import Trainer
from sequence.dsf.models import VARIANTS, AttentionMixer, DSFMixer, QLSTMMixer, S6Mixer

f64 = torch.float64
TINY = {"train_size": 64, "valid_size": 32, "test_size": 32, "vocab_size": 40, "seq_len": 16, "num_kv_pairs": 2,
        "d_model": 16, "state_expansion": 4, "train_batch_size": 16, "show_progress": False, "device": "cpu",
        "log_level": "WARNING"}


@pytest.mark.parametrize("variant", ["linear", "normalized"])
def test_attention_mixer_is_its_dsf(variant):
    torch.manual_seed(0)
    mixer = AttentionMixer(variant, 8, 4).double()
    x = torch.randn(2, 12, 8, dtype=f64)
    system, v = mixer.dsf(x)
    out = mixer.attn.update.proj(system.recurrent(v))
    assert (mixer(x) - out).abs().max() < 1e-10
    assert (mixer.attn.update.proj(system.parallel(v)) - out).abs().max() < 1e-10
    weights = mixer.materialize_operator(x)                               # (B, T, S) from the core layer
    assert (weights - system.mixing_weights()).abs().max() < 1e-10


def test_softmax_mixer_reads_a_causal_row_stochastic_map():
    mixer = AttentionMixer("softmax", 8, 4)
    w = mixer.materialize_operator(torch.randn(2, 10, 8))
    assert w.shape == (2, 10, 10)
    assert torch.allclose(w.sum(-1), torch.ones(2, 10))
    assert w.triu(1).abs().max() == 0


@pytest.mark.parametrize("reversed_sigmoid", [False, True])
def test_qlstm_mixer_is_its_loop(reversed_sigmoid):
    torch.manual_seed(1)
    mixer = QLSTMMixer(6, reversed_sigmoid).double()
    x = torch.randn(2, 9, 6, dtype=f64)
    zf, zi, zo = mixer.gates(x).chunk(3, -1)
    f = (torch.sigmoid(-zf) ** torch.nn.functional.softplus(mixer.a_raw) if reversed_sigmoid
         else torch.sigmoid(zf))
    h, ys = torch.zeros(2, 6, dtype=f64), []
    for i in range(9):
        h = f[:, i] * h + torch.sigmoid(zi[:, i]) * mixer.w(x[:, i])
        ys.append(torch.sigmoid(zo[:, i]) * h)
    assert (mixer(x) - mixer.out(torch.stack(ys, 1))).abs().max() < 1e-10
    if reversed_sigmoid:                                                  # starts at a = 1
        assert torch.allclose(torch.nn.functional.softplus(mixer.a_raw), torch.ones(6, dtype=f64), atol=1e-4)


def test_s6_mixer_fast_path_is_its_dsf():
    torch.manual_seed(2)
    mixer = S6Mixer(8, 4).double()
    x = torch.randn(2, 12, 8, dtype=f64)
    system, u = mixer.dsf(x)
    assert (mixer(x) - mixer.out(system.parallel(u))).abs().max() < 1e-10
    k = mixer.materialize_operator(x)                                     # (B, T, S, D), causal, decaying
    assert k.shape == (2, 12, 12, 8) and k.permute(0, 3, 1, 2).triu(1).abs().max() == 0
    assert bool(((system.lam > 0) & (system.lam < 1)).all())
    x.requires_grad_(True)
    mixer(x).square().sum().backward()                                    # hand-written scan backward
    g = x.grad.clone()
    x.grad = None
    system, u = mixer.dsf(x)                                              # plain autograd reference
    mixer.out(system.parallel(u)).square().sum().backward()
    assert (x.grad - g).abs().max() < 1e-10


def _config(**over):
    return Config("DSFMixer", "mqar", config_dict={**TINY, **over})


def test_unknown_variant_is_a_clear_error():
    with pytest.raises(ValueError, match=r"variant: unknown DSF mixer 'mamba'; expected one of"):
        Trainer.from_config(_config(variant="mamba"))


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_lowers_the_loss_through_the_trainer(variant):
    config = _config(variant=variant, epochs=4, learning_rate=0.01, warmup_epochs=0, scheduler="none")
    trainer = Trainer.from_config(config)
    before = trainer.evaluate("valid")["loss"]
    trainer.train()
    logged = [row["loss"] for row in trainer.history["train"]]
    assert logged[-1] < logged[0]
    assert trainer.evaluate("valid")["loss"] < before
    layers = trainer.model.materialize_operator(trainer.task.data.test.inputs[:2])
    assert len(layers) == 2


def test_model_rejects_too_long_inputs():
    config = _config()
    model = DSFMixer(config, Trainer.from_config(config).task.data)
    with pytest.raises(ValueError, match=r"tokens must be \(B, T\) with T <= 16"):
        model(torch.zeros(1, 17, dtype=torch.long))
