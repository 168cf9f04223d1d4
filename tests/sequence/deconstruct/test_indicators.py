"""Attention indicators on hand-made maps, and logit capture through the score hooks."""
import math

import pytest
import torch

import sequence  # noqa: F401
from graphattn.config import Config
from sequence.deconstruct.corpus import load_pcfg
from sequence.deconstruct.indicators import capture_scores, map_indicators, model_indicators
from sequence.deconstruct.model import DeconLM


def test_identity_and_uniform_maps():
    n = 4
    eye = torch.eye(n).view(1, 1, n, n).expand(1, 2, n, n)
    ind = map_indicators(eye)
    assert ind["entropy"] == [0.0, 0.0] and ind["locfoc_0"] == [1.0, 1.0] and ind["locfoc_1"] == [0.0, 0.0]
    assert ind["sink"] == pytest.approx([1 / n] * 2) and ind["concentration"] == pytest.approx([2.0] * 2)
    assert ind["head_diversity"] == 0.0
    uni = torch.ones(n, n).tril()
    uni = (uni / uni.sum(-1, keepdim=True)).view(1, 1, n, n)
    ind = map_indicators(uni)
    assert ind["entropy"][0] == pytest.approx(sum(math.log(i + 1) for i in range(n)) / n)
    assert ind["sink"][0] == pytest.approx(sum(1 / (i + 1) for i in range(n)) / n)
    assert ind["locfoc_3"][0] == pytest.approx(1 / 4)
    assert ind["concentration"][0] == pytest.approx(math.sqrt(sum(1 / (i + 1) for i in range(n))))


def test_head_diversity_over_causal_entries():
    a = torch.zeros(1, 2, 2, 2)
    a[0, 0] = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    a[0, 1] = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # causal entries (0,0), (1,0), (1,1): stds 0, 0.5, 0.5
    assert map_indicators(a)["head_diversity"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match=r"\(B, H, L, L\)"):
        map_indicators(torch.zeros(2, 3, 4))


def test_logits_are_read_on_causal_entries_only():
    data = load_pcfg(Config("DeconLM", "pcfg-lm", config_dict={"pcfg_train_tokens": 300, "pcfg_eval_tokens": 100}))
    torch.manual_seed(0)
    model = DeconLM(Config("DeconLM", "pcfg-lm", config_dict={"decon_dim": 16, "decon_heads": 2, "decon_ffn": 16,
                                                               "decon_layers": 2, "decon_variant": "nonapprox",
                                                               "decon_config": "hybrid"}), data)
    x = data.valid[:20].view(2, 10)
    with capture_scores(model) as store:
        model(x)
    assert store["blocks.0.mixer"][0].numel() == 2 * 2 * 55                       # B * H * L(L+1)/2
    ind = model_indicators(model, x)
    assert set(ind) == {"blocks.0.mixer", "blocks.1.mixer"}
    assert ind["blocks.0.mixer"]["logit_max"] == pytest.approx(float(store["blocks.0.mixer"][0].abs().max()))
    assert sum(ind["blocks.1.mixer"]["logit_hist"]) == 2 * 2 * 55
    assert model.training                                                          # mode restored
