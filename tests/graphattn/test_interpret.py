"""Activation caching and patching on a hand-built model whose answer is known.

The toy model: an identity embedding, one causal GraphAttention layer with zero score weights (so every
token attends uniformly to itself and the tokens before it), the identity message and no update (so token
``i`` outputs the mean of tokens ``0..i``), and a fixed linear readout ``w = (1, 10)``. Patching the embedding
of token ``j`` from a clean run into a corrupted one therefore changes output ``i >= j`` by
``w . (clean_j - corrupt_j) / (i + 1)`` and leaves outputs ``i < j`` alone.
"""
import pytest
import torch
from torch import nn

from graphattn.attention import DotProductScore, GraphAttention
from graphattn.interpret import (activation_patching, cache_activations, capture_attention, named_module,
                                 patch_activations)

N = 4


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Identity()
        score = DotProductScore(2, 2, heads=1, head_dim=2, bias=False)
        nn.init.zeros_(score.q.weight)
        nn.init.zeros_(score.k.weight)
        self.attn = GraphAttention(2, heads=1, head_dim=2, score=score, message="identity", update="none")
        self.readout = nn.Linear(2, 1, bias=False)
        with torch.no_grad():
            self.readout.weight.copy_(torch.tensor([[1.0, 10.0]]))
        self.register_buffer("causal", torch.ones(N, N, dtype=torch.bool).tril())

    def forward(self, x):                                   # (B, N, 2) -> (B, N)
        return self.readout(self.attn(self.embed(x), mask=self.causal)).squeeze(-1)


@pytest.fixture
def setup():
    g = torch.Generator().manual_seed(0)
    clean, corrupt = torch.randn(3, N, 2, generator=g), torch.randn(3, N, 2, generator=g)
    return Toy(), clean, corrupt


def test_toy_model_is_a_causal_running_mean(setup):
    model, clean, _ = setup
    w = torch.tensor([1.0, 10.0])
    expected = torch.stack([clean[:, : i + 1].mean(1) @ w for i in range(N)], dim=1)
    torch.testing.assert_close(model(clean), expected)


def test_patching_one_token_of_the_embedding_matches_the_hand_computation(setup):
    model, clean, corrupt = setup
    w = torch.tensor([1.0, 10.0])
    j = 1
    with cache_activations(model, ["embed"]) as cache:
        model(clean)
    with patch_activations(model, cache, where=(slice(None), j)):
        patched = model(corrupt)
    base = model(corrupt)
    delta = (clean[:, j] - corrupt[:, j]) @ w                                    # (B,)
    expected = base.clone()
    for i in range(j, N):
        expected[:, i] += delta / (i + 1)
    torch.testing.assert_close(patched, expected)
    torch.testing.assert_close(patched[:, :j], base[:, :j])                     # earlier tokens cannot see it


def test_patching_a_whole_layer_restores_the_clean_output_and_hooks_are_removed(setup):
    model, clean, corrupt = setup
    with cache_activations(model, "attn") as cache:
        model(clean)
    assert len(cache["attn"]) == 1 and cache["attn"][0].shape == (3, N, 2)
    with patch_activations(model, {"attn": cache["attn"][0]}):
        torch.testing.assert_close(model(corrupt), model(clean))
    assert not model.attn._forward_hooks and not model.embed._forward_hooks
    assert not torch.allclose(model(corrupt), model(clean))


def test_boolean_where_and_callable_patch(setup):
    model, clean, corrupt = setup
    last = torch.zeros(1, N, 1, dtype=torch.bool)
    last[:, -1] = True
    with patch_activations(model, {"attn": lambda out: torch.zeros_like(out)}, where=last):
        out = model(corrupt)
    assert torch.all(out[:, -1] == 0)
    torch.testing.assert_close(out[:, :-1], model(corrupt)[:, :-1])


def test_activation_patching_reports_each_module(setup):
    model, clean, corrupt = setup
    metric = lambda y: y[:, -1].sum()  # noqa: E731
    res = activation_patching(model, clean, corrupt, ["embed", "attn", "readout"], metric)
    assert res["clean"] == pytest.approx(float(model(clean)[:, -1].sum().detach()))
    assert res["corrupted"] == pytest.approx(float(model(corrupt)[:, -1].sum().detach()))
    for name in ("embed", "attn", "readout"):               # each lies on the only path: full recovery
        assert res[name] == pytest.approx(res["clean"], abs=1e-5)
    # patching only token 0 of the embedding moves the last output by 1/N of the gap it accounts for
    w = torch.tensor([1.0, 10.0])
    part = activation_patching(model, clean, corrupt, ["embed"], metric, where=(slice(None), 0))
    assert part["embed"] - part["corrupted"] == pytest.approx(float(((clean[:, 0] - corrupt[:, 0]) @ w).sum()) / N,
                                                              abs=1e-5)


def test_patching_works_with_attention_capture(setup):
    model, clean, corrupt = setup
    with cache_activations(model, ["embed"]) as cache:
        model(clean)
    with patch_activations(model, cache), capture_attention(model) as store:
        model(corrupt)
    weights = store["attn"][0]                                                   # (B, H, N, N) uniform causal
    torch.testing.assert_close(weights[0, 0], torch.ones(N, N).tril() / torch.arange(1, N + 1)[:, None])


def test_bad_input_gives_clear_errors(setup):
    model, clean, corrupt = setup
    with pytest.raises(ValueError, match="no submodule 'atn'.*Did you mean: attn"):
        named_module(model, "atn")
    with pytest.raises(ValueError, match="patch for module 'attn' has shape"):
        with patch_activations(model, {"attn": torch.zeros(3, N + 1, 2)}):
            model(corrupt)
    with pytest.raises(ValueError, match="called 2 times but only 1 cached"):
        with patch_activations(model, {"attn": [torch.zeros(3, N, 2)]}):
            model(corrupt)
            model(corrupt)
    with pytest.raises(ValueError, match="does not index an output"):
        with patch_activations(model, {"attn": torch.zeros(3, N, 2)}, where=(slice(None), N + 3)):
            model(corrupt)

    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = GraphAttention(2, heads=1, head_dim=2)

        def forward(self, x):
            return self.attn(x, return_attention=True)[0]

    pair = Pair()
    with pytest.raises(TypeError, match="returned a tuple"):
        with cache_activations(pair, ["attn"]):
            pair(clean)
