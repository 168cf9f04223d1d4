"""DeconLM: causal masking, parameter matching, layer placement, input-independent maps, hybrid-skip."""
import pytest
import torch

import sequence  # noqa: F401
from graphattn.config import Config
from graphattn.interpret import capture_attention
from sequence.deconstruct.corpus import load_pcfg
from sequence.deconstruct.model import VARIANTS, DeconLM, layer_variants

TINY = {"decon_dim": 16, "decon_heads": 2, "decon_ffn": 32, "decon_layers": 4, "lm_context": 12,
        "pcfg_train_tokens": 400, "pcfg_eval_tokens": 100}


@pytest.fixture(scope="module")
def data():
    return load_pcfg(Config("DeconLM", "pcfg-lm", config_dict=TINY))


def build(data, variant, config="uniform", **over):
    torch.manual_seed(0)
    cfg = Config("DeconLM", "pcfg-lm", config_dict={**TINY, "decon_variant": variant, "decon_config": config, **over})
    return DeconLM(cfg, data).double()


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("config", ["uniform", "hybrid"])
def test_a_future_token_changes_nothing_before_it(data, variant, config):
    model = build(data, variant, config, decon_approx_linear=variant == "approximate")
    x = torch.randint(1, data.vocab_size, (2, 10))
    y = x.clone()
    y[:, 6] = x[:, 6] % (data.vocab_size - 1) + 1
    a, b = model(x), model(y)
    assert torch.equal(a[:, :6], b[:, :6])
    if variant != "mlp" or config == "hybrid":
        assert not torch.allclose(a[:, 7:], b[:, 7:])       # a mixer carries token 6 forward


def test_variants_are_parameter_matched(data):
    counts = {v: sum(p.numel() for p in build(data, v).parameters()) for v in VARIANTS}
    mixers = {v: build(data, v).mixer_parameters()[0] for v in VARIANTS}
    assert mixers["standard"] == 4 * 16 * 16
    for v in VARIANTS:
        assert abs(mixers[v] / mixers["standard"] - 1) < 0.02, mixers
        assert abs(counts[v] / counts["standard"] - 1) < 0.02, counts
    std, mlp = (sum(p.numel() for p in build(data, v, decon_dim=64, decon_ffn=256).parameters()) for v in ("standard", "mlp"))
    assert abs(mlp / std - 1) < 0.01


def test_hybrid_places_the_variant_in_odd_layers():
    assert layer_variants("mlp", "hybrid", 4) == ["mlp", "standard", "mlp", "standard"]
    assert layer_variants("mlp", "uniform", 2) == ["mlp", "mlp"]
    with pytest.raises(ValueError, match="decon_variant: unknown variant 'softmax'"):
        layer_variants("softmax", "uniform", 2)
    with pytest.raises(ValueError, match="decon_config"):
        layer_variants("mlp", "even", 2)


@pytest.mark.parametrize("variant", ["rndembqk", "fixedseqqk"])
def test_fixed_stream_maps_do_not_depend_on_the_input(data, variant):
    model = build(data, variant, "hybrid")
    maps = []
    for seed in (1, 2):
        x = torch.randint(1, data.vocab_size, (2, 10), generator=torch.Generator().manual_seed(seed))
        with capture_attention(model) as store:
            model(x)
        maps.append(store)
    for i in model.variant_layers:
        name = f"blocks.{i}.mixer"
        assert torch.equal(maps[0][name][-1], maps[1][name][-1])
    assert not torch.equal(maps[0]["blocks.1.mixer"][-1][:1], maps[1]["blocks.1.mixer"][-1][:1])   # standard layer


def test_static_embedding_maps_ignore_the_earlier_blocks(data):
    model = build(data, "staticembqk")
    x = torch.randint(1, data.vocab_size, (2, 10))
    with capture_attention(model) as before:
        model(x)
    with torch.no_grad():
        model.blocks[0].mlp.down.weight.add_(1.0)
        model.blocks[1].mixer.message.v.weight.add_(1.0)
    with capture_attention(model) as after:
        model(x)
    assert torch.equal(before["blocks.2.mixer"][-1], after["blocks.2.mixer"][-1])


def test_hybrid_skip_drops_only_the_variant_mixers(data):
    model = build(data, "nonapprox", "hybrid")
    x = torch.randint(1, data.vocab_size, (2, 10))
    full = model(x)
    with model.skip_variant_layers():
        skipped = model(x)
        assert [b.skip_mixer for b in model.blocks] == [True, False, True, False]
    assert not torch.allclose(full, skipped) and torch.equal(model(x), full)
    with pytest.raises(ValueError, match="hybrid-skip"):
        with build(data, "nonapprox").skip_variant_layers():
            pass


def test_bad_input_is_refused(data):
    model = build(data, "standard")
    with pytest.raises(ValueError, match="lm_context"):
        model(torch.zeros(1, 13, dtype=torch.long))
    with pytest.raises(ValueError, match="divisible"):
        build(data, "standard", decon_dim=15)
