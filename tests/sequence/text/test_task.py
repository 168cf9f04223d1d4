"""Task text_classification: the planted-cue data, both classifiers, the metrics and a short run."""
import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from graphattn.config import Config
from graphattn.training import MemoryRun, Trainer
from sequence.text.metrics import (cue_mass, pearson_rows, permutation_flips, readout_attention, saliency,
                                   worst_case_flips)
from sequence.text.models.bilstm_attention import BiLSTMAttn, _gather, _reversal
from sequence.text.models.cls_transformer import CLSTransformer
from sequence.text.planted_cue import generate_planted_cue
from sequence.text.task import TextClassificationTask

TINY = {"train_size": 256, "valid_size": 64, "test_size": 64, "cue_min_len": 5, "cue_max_len": 12,
        "cue_vocab_size": 50, "cue_pos": 4, "cue_neg": 4, "embedding_size": 16, "train_batch_size": 32,
        "show_progress": False, "device": "cpu", "log_level": "WARNING"}
LSTM = {"hidden_size": 8, "attention_size": 8}


def _config(model="BiLSTMAttn", **over):
    extra = LSTM if model == "BiLSTMAttn" else {"heads": 2, "ffn_size": 16}
    return Config(model, "planted-cue", config_dict={**TINY, **extra, **over})


@pytest.fixture(scope="module")
def data():
    return generate_planted_cue(_config())


def test_planted_cue_labels_are_the_cue_balance(data):
    clean = generate_planted_cue(_config(label_noise=0.0))
    for split in (clean.train, clean.test):
        mask = torch.arange(split.tokens.shape[1]) < split.lengths[:, None]
        assert ((split.tokens != 0) == mask).all()
        assert split.lengths.min() >= 5 and split.lengths.max() <= 12
        # the cue words are the same everywhere: recover their signs from the labels of one-cue sentences
        assert split.cue.any(1).all()                                           # no tie means at least one cue
    words = torch.unique(clean.train.tokens[clean.train.cue])
    assert len(words) == 8
    # label = sign(#pos - #neg) for some assignment of the 8 words to signs: fit it by least squares
    counts = torch.stack([(clean.train.tokens == w).sum(1) for w in words], 1).double()
    sign, *_ = np.linalg.lstsq(counts.numpy(), (2 * clean.train.labels.double() - 1).numpy(), rcond=None)
    balance = counts @ torch.from_numpy(np.sign(sign))
    assert ((balance > 0).float() == clean.train.labels).all() and (balance != 0).all()
    flipped = (data.train.labels != clean.train.labels).float().mean()
    assert 0.0 < flipped < 0.15                                                 # label_noise 0.05 on 256 sentences


def test_bad_dataset_keys_are_clear_errors():
    with pytest.raises(ValueError, match="cue_min_len / cue_max_len"):
        generate_planted_cue(_config(cue_min_len=9, cue_max_len=4))
    with pytest.raises(ValueError, match="cue_pos / cue_neg"):
        generate_planted_cue(_config(cue_pos=30, cue_neg=30))
    with pytest.raises(ValueError, match="label_noise"):
        generate_planted_cue(_config(label_noise=0.5))


def test_reversed_backward_lstm_equals_a_packed_bidirectional_lstm(data):
    torch.manual_seed(0)
    model = BiLSTMAttn(_config(), data)
    bi = nn.LSTM(16, 8, batch_first=True, bidirectional=True)
    with torch.no_grad():
        for name, p in model.lstm_fwd.named_parameters():
            getattr(bi, name).copy_(p)
            getattr(bi, name + "_reverse").copy_(getattr(model.lstm_bwd, name))
    batch = data.test.batch(torch.arange(16))
    emb, mask = model.embed(batch["tokens"]), batch["mask"]
    packed = pack_padded_sequence(emb, mask.sum(1), batch_first=True, enforce_sorted=False)
    ref, _ = pad_packed_sequence(bi(packed)[0], batch_first=True, total_length=emb.shape[1])
    flip = _reversal(mask)
    ours = torch.cat([model.lstm_fwd(emb)[0], _gather(model.lstm_bwd(_gather(emb, flip))[0], flip)], -1)
    assert torch.allclose(ours[mask], ref[mask], atol=1e-6)


@pytest.mark.parametrize("cls", [BiLSTMAttn, CLSTransformer])
def test_padding_changes_nothing_and_attention_ignores_it(cls, data):
    torch.manual_seed(0)
    model = cls(_config(cls.model_name), data).eval()
    batch = data.test.batch(torch.nonzero(data.test.lengths <= 9)[:8, 0])      # room for 3 more positions
    padded = {**batch, "tokens": torch.cat([batch["tokens"], torch.zeros(8, 3, dtype=torch.long)], 1),
              "mask": torch.cat([batch["mask"], torch.zeros(8, 3, dtype=torch.bool)], 1)}
    with torch.no_grad():
        logits, attention = readout_attention(model, batch)
        logits_p, attention_p = readout_attention(model, padded)
    assert torch.allclose(logits, logits_p, atol=1e-5)
    assert torch.allclose(attention.sum(1), torch.ones(8), atol=1e-5)
    assert attention_p[:, -3:].abs().max() == 0 and attention[~batch["mask"]].abs().max() == 0


def test_metrics_on_hand_checked_cases(data):
    a = torch.tensor([[1.0, 2.0, 3.0, 9.0], [0.5, 0.1, 0.2, 0.3]])
    b = torch.tensor([[2.0, 4.0, 7.0, -1.0], [1.0, 1.0, 1.0, 1.0]])
    mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    r = pearson_rows(a, b, mask)
    assert abs(r[0].item() - np.corrcoef([1, 2, 3], [2, 4, 7])[0, 1]) < 1e-6 and torch.isnan(r[1])
    assert torch.allclose(cue_mass(a[:, :3] / 10, torch.tensor([[True, False, True], [False, False, False]])),
                          torch.tensor([0.4, 0.0]))
    torch.manual_seed(0)
    model = BiLSTMAttn(_config(), data).eval()
    batch = data.test.batch(torch.arange(32))
    sal = saliency(model, batch)
    assert sal.shape == batch["tokens"].shape and sal[~batch["mask"]].abs().max() == 0 and sal.sum() > 0
    none, _ = worst_case_flips(model, batch, 0.0)
    assert not none.any()                                                       # eps 0 flips nothing
    _, adv = worst_case_flips(model, batch, 1e-3)
    with torch.no_grad():
        clean = model(batch)
    assert ((adv - clean) * clean.sign() < 0).all()                             # a small step moves towards 0
    flips, _ = permutation_flips(model, batch, torch.Generator().manual_seed(0))
    assert flips.shape == (32,)


def test_short_training_lowers_the_loss_for_every_mode():
    for mode in ("vanilla", "rp", "at", "iat"):
        config = _config(at_mode=mode, at_epsilon=1.0, epochs=3, learning_rate=0.01, seed=0)
        trainer = Trainer(config, TextClassificationTask(config), run=MemoryRun())
        first = trainer.train_epoch()["loss"]
        trainer.train_epoch()
        last = trainer.train_epoch()["loss"]
        assert last < first, (mode, first, last)


def test_unknown_mode_in_the_config_is_a_clear_error():
    with pytest.raises(ValueError, match="at_mode: unknown adversarial-training mode 'adv'"):
        TextClassificationTask(_config(at_mode="adv"))


@pytest.mark.parametrize("mode", ["at", "iat", "rp"])
def test_shared_encoder_loss_equals_two_full_forwards(mode, data):
    """The task runs the encoder once for the clean and the perturbed pass; same loss and gradients as
    perturbed_loss with two complete forwards."""
    from sequence.text.adversarial import perturbed_loss
    from sequence.text.task import bce_loss

    config = _config(at_mode=mode, at_epsilon=2.0)
    task = TextClassificationTask(config, data)
    torch.manual_seed(0)
    model = BiLSTMAttn(config, data)
    batch = data.train.batch(torch.arange(16))
    grads = []
    for run in ("task", "reference"):
        generator = torch.Generator().manual_seed(5)
        if run == "task":
            task.generator = generator
            loss, parts = task.loss(model, batch, "train")
        else:
            loss, parts = perturbed_loss(model, batch, bce_loss, mode, 2.0, 1.0, generator)
        grads.append((loss.detach(), parts, torch.autograd.grad(loss, list(model.parameters()))))
    (la, pa, ga), (lb, pb, gb) = grads
    assert torch.allclose(la, lb, atol=1e-6) and pa["adv_loss"] != pa["clean_loss"]
    for a, b in zip(ga, gb):
        assert torch.allclose(a, b, atol=1e-6)
