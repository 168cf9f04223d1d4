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
from graphattn.interpret import (activation_patching, cache_activations, capture_attention, capture_scores, named_module,
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


# ------------------------------------------------------------------------------------------ path patching
#
# A hand-wired residual stack of width 6: the input lives on dims 0..3, dims 4 and 5 start at zero. Every
# attention layer has zero query/key weights (uniform causal attention), value weights that read a chosen
# pair of dims per head and an output projection that writes a chosen dim, so the paths from input to
# readout are known exactly.

from graphattn.interpret import head_outputs, path_patching  # noqa: E402

D = 6


def _wired_layer(reads: list[list[int]], writes: list[int]) -> GraphAttention:
    """Two heads of width 2; head h averages dims ``reads[h]`` over the causal prefix and adds their sum
    to dim ``writes[h]`` of the residual stream."""
    layer = GraphAttention(D, heads=2, head_dim=2, bias=False)
    with torch.no_grad():
        layer.score.q.weight.zero_()
        layer.score.k.weight.zero_()
        layer.message.v.weight.zero_()
        layer.update.proj.weight.zero_()
        for h, (dims, out) in enumerate(zip(reads, writes)):
            for c, d in enumerate(dims):
                layer.message.v.weight[2 * h + c, d] = 1.0
                layer.update.proj.weight[out, 2 * h + c] = 1.0
    return layer


class Wired(nn.Module):
    def __init__(self, layers, readout_dim):
        super().__init__()
        self.blocks = nn.ModuleList(layers)
        self.final = nn.Identity()
        self.readout_dim = readout_dim
        self.register_buffer("causal", torch.ones(N, N, dtype=torch.bool).tril())

    def forward(self, x):                                   # (B, N, 4) -> (B,) logit at the last token
        r = torch.cat([x, x.new_zeros(*x.shape[:-1], D - 4)], -1)
        for attn in self.blocks:
            r = r + attn(r, mask=self.causal)
        return self.final(r)[:, -1, self.readout_dim]


@pytest.fixture
def pair():
    g = torch.Generator().manual_seed(1)
    clean = torch.randn(5, N, 4, generator=g)
    corrupt = clean.clone()
    corrupt[:, -1] += torch.randn(5, 4, generator=g) + 3.0      # only the last token differs
    return clean, corrupt


def test_path_patching_only_path_scores_one_unconnected_head_zero(pair):
    clean, corrupt = pair
    # head 0 carries dims 0,1 into dim 4 (read out); head 1 carries dims 2,3 into dim 5 (never read)
    model = Wired([_wired_layer([[0, 1], [2, 3]], [4, 5])], readout_dim=4)
    scores = path_patching(model, clean, corrupt, "final", metric=lambda y: y.mean())
    assert scores[("blocks.0", 0)] == pytest.approx(1.0, abs=1e-5)
    assert scores[("blocks.0", 1)] == pytest.approx(0.0, abs=1e-6)


def test_path_patching_freezes_the_heads_in_between(pair):
    clean, corrupt = pair
    # input -> L0 head 0 (dims 0,1 -> dim 4) -> L1 head 0 (dims 4,5 -> dim 5) -> readout dim 5; L0 head 1
    # writes dim 5 directly from dims 2,3 (a direct path of its own)
    first = _wired_layer([[0, 1], [2, 3]], [4, 5])
    second = _wired_layer([[4, 5], [0, 1]], [5, 3])          # L1 head 1 writes dim 3, not read
    model = Wired([first, second], readout_dim=5)
    metric = lambda y: y.mean()  # noqa: E731
    with torch.no_grad():
        gap = float(metric(model(corrupt)) - metric(model(clean)))
    logits = path_patching(model, clean, corrupt, "final", metric)
    # L0 head 0 reaches the logit only through L1 head 0, which is frozen: no direct effect
    assert logits[("blocks.0", 0)] == pytest.approx(0.0, abs=1e-6)
    assert logits[("blocks.1", 1)] == pytest.approx(0.0, abs=1e-6)
    # the two direct writers of dim 5 split the change: L1 head 0 (its own v sees the changed dim 4 and 5)
    # and L0 head 1; computed by hand from the uniform average at the last token
    d = (corrupt[:, -1] - clean[:, -1]) / N                    # change of each head's z at the last token
    l0h1 = float((d[:, 2] + d[:, 3]).mean()) / gap
    assert logits[("blocks.0", 1)] == pytest.approx(l0h1, rel=1e-4)
    # receiver = the v input of L1 head 0: L0 head 0's change arrives there, L0 head 1's too (dim 5)
    via_v = path_patching(model, clean, corrupt, ("blocks.1", 0, "v"), metric)
    assert set(via_v) == {("blocks.0", 0), ("blocks.0", 1), ("blocks.1", 0), ("blocks.1", 1)}
    l0h0 = float((d[:, 0] + d[:, 1]).mean()) / N / gap          # through L1 head 0's average (1/N at the last token)
    assert via_v[("blocks.0", 0)] == pytest.approx(l0h0, rel=1e-4)
    assert via_v[("blocks.1", 0)] == pytest.approx(0.0, abs=1e-6)   # a head cannot feed its own input
    # the query of L1 head 0 has zero weights: nothing flows through it
    via_q = path_patching(model, clean, corrupt, [("blocks.1", 0, "q")], metric)
    assert all(abs(v) < 1e-6 for v in via_q.values())


def test_path_patching_of_the_sole_path_through_two_heads_sums_to_one(pair):
    clean, corrupt = pair
    first = _wired_layer([[0, 1], [2, 3]], [4, 3])
    second = _wired_layer([[4, 4], [0, 1]], [5, 3])
    with torch.no_grad():                                     # L1 head 0 reads dim 4 once
        second.message.v.weight[1].zero_()
    model = Wired([first, second], readout_dim=5)
    metric = lambda y: y.mean()  # noqa: E731
    # input -> L0 head 0 -> L1 head 0 -> logit is the only path; with L1 head 0's v as receiver the
    # last-token part of it is the whole change (only the last token differs)
    via_v = path_patching(model, clean, corrupt, ("blocks.1", 0, "v"), metric, senders=[("blocks.0", 0), ("blocks.0", 1)])
    assert via_v[("blocks.0", 0)] == pytest.approx(1.0, abs=1e-5)
    assert via_v[("blocks.0", 1)] == pytest.approx(0.0, abs=1e-6)
    assert path_patching(model, clean, corrupt, "final", metric)[("blocks.1", 0)] == pytest.approx(1.0, abs=1e-5)


def test_head_outputs_and_path_patching_errors(pair):
    clean, corrupt = pair
    model = Wired([_wired_layer([[0, 1], [2, 3]], [4, 5])], readout_dim=4)
    with head_outputs(model, position=-1) as z:
        model(clean)
    assert z["blocks.0"].shape == (5, 2, 2)
    torch.testing.assert_close(z["blocks.0"][:, 0], clean[:, :, :2].mean(1))
    assert not model.blocks[0].update._forward_pre_hooks and "project" not in model.blocks[0].score.__dict__
    with pytest.raises(ValueError, match="component must be one of"):
        path_patching(model, clean, corrupt, ("blocks.0", 0, "z"), lambda y: y.mean())
    with pytest.raises(ValueError, match="not an attention layer"):
        path_patching(model, clean, corrupt, ("block.0", 0, "q"), lambda y: y.mean())
    with pytest.raises(ValueError, match="no submodule 'fnal'"):
        path_patching(model, clean, corrupt, "fnal", lambda y: y.mean())
    with pytest.raises(ValueError, match="on both the clean and the corrupted input"):
        path_patching(model, clean, clean, "final", lambda y: y.mean())


def test_path_patching_freeze_blocks_the_route_through_a_module(pair):
    clean, corrupt = pair

    class Relayed(Wired):
        """L0 head 0 writes dim 4; a linear relay copies dim 4 into dim 5; the readout reads dim 5."""

        def __init__(self):
            super().__init__([_wired_layer([[0, 1], [2, 3]], [4, 3])], readout_dim=5)
            self.relay = nn.Linear(D, D, bias=False)
            with torch.no_grad():
                self.relay.weight.zero_()
                self.relay.weight[5, 4] = 1.0

        def forward(self, x):
            r = torch.cat([x, x.new_zeros(*x.shape[:-1], D - 4)], -1)
            r = r + self.blocks[0](r, mask=self.causal)
            r = r + self.relay(r)
            return self.final(r)[:, -1, self.readout_dim]

    model = Relayed()
    metric = lambda y: y.mean()  # noqa: E731
    open_route = path_patching(model, clean, corrupt, "final", metric)
    assert open_route[("blocks.0", 0)] == pytest.approx(1.0, abs=1e-5)
    frozen = path_patching(model, clean, corrupt, "final", metric, freeze=["relay"])
    assert frozen[("blocks.0", 0)] == pytest.approx(0.0, abs=1e-6)


def test_capture_scores_keeps_the_existing_edges_and_unhooks():
    model = Toy()
    with torch.no_grad():
        model.attn.score.q.weight.copy_(torch.eye(2))
        model.attn.score.k.weight.copy_(torch.eye(2))
    x = torch.randn(3, N, 2, generator=torch.Generator().manual_seed(1))
    with capture_scores(model) as store, capture_attention(model) as maps:
        model(x)
    (scores,) = store["attn"]
    assert scores.numel() == 3 * N * (N + 1) // 2                          # causal entries only, per head and batch
    expected = (x @ x.transpose(-1, -2) * 2 ** -0.5).masked_select(model.causal)   # q = k = x, scale d^-1/2
    assert torch.allclose(scores, expected, atol=1e-6)
    assert len(maps["attn"]) == 1
    model(x)                                                                 # hooks are gone after the block
    assert len(store["attn"]) == 1
