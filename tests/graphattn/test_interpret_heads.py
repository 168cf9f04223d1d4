"""graphattn/interpret.py: head selection on both paths, the interpolation targets, capture options, named
modules, `where` masks and patch lists, with their exact error messages."""
import pytest
import torch
from torch import nn

from graphattn.attention import GraphAttention
from graphattn.attention.layer import AttentionInfo
from graphattn.interpret import (_select, ablate_heads, activation_patching, attention_hook, attention_layers,
                                 cache_activations, capture_attention, head_outputs, interpolate_heads, named_module,
                                 patch_activations, path_patching, replace_heads)
from graphattn.ops import causal_mask, mask_to_edge_index

D, H = 4, 2


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.inner = nn.Sequential(nn.Linear(D, D), GraphAttention(D, heads=H))
        self.attn = GraphAttention(D, heads=H, update="none")
        self.out = nn.Linear(D, 1)

    def forward(self, x, edge_index=None):
        h = self.inner[0](x)
        h = self.inner[1](h, edge_index) if edge_index is not None else self.inner[1](h, mask=causal_mask(x.shape[-2]))
        h = self.attn(h, edge_index) if edge_index is not None else self.attn(h)
        return self.out(h).squeeze(-1)


def _x(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_attention_layers_by_qualified_name():
    net = Net()
    assert attention_layers(net) == {"inner.1": net.inner[1], "attn": net.attn}
    assert attention_layers(nn.Linear(2, 2)) == {}


def test_select_puts_heads_on_the_right_axis():
    sparse = _select(torch.zeros(5, 3), [0, 2], AttentionInfo("sparse", 3))
    assert sparse.shape == (1, 3) and sparse.tolist() == [[True, False, True]]
    dense = _select(torch.zeros(2, 3, 4, 4), [1], AttentionInfo("dense", 3))
    assert dense.shape == (1, 3, 1, 1) and dense.flatten().tolist() == [False, True, False]
    assert dense.dtype == torch.bool


def test_capture_attention_detach_option_and_one_entry_per_call():
    net = Net()
    x = _x(1, 3, D)
    with capture_attention(net) as store:
        net(x)
        net(x)
    assert list(store) == ["inner.1", "attn"] and len(store["attn"]) == 2
    assert not store["attn"][0].requires_grad and store["attn"][0].shape == (1, H, 3, 3)
    with capture_attention(net, detach=False) as store:
        net(x)
    assert store["attn"][0].requires_grad
    # causal mask of the first layer: nothing above the diagonal
    assert (store["inner.1"][0][..., 0, 1:] == 0).all()


def test_attention_hook_is_removed_even_after_an_error():
    net = Net()
    with pytest.raises(RuntimeError):
        with attention_hook(net.attn, lambda *a: None):
            assert net.attn.has_hooks
            raise RuntimeError
    assert not net.attn.has_hooks


@pytest.mark.parametrize("sparse", [False, True])
def test_ablate_and_replace_only_the_named_heads(sparse):
    net = Net()
    x = _x(1, 3, D)
    ei = mask_to_edge_index(torch.ones(3, 3, dtype=torch.bool)) if sparse else None
    inp = x[0] if sparse else x
    with capture_attention(net) as store:
        net(inp, ei)
    base = store["attn"][0]
    with ablate_heads(net.attn, [1]), capture_attention(net) as s2:
        net(inp, ei)
    w = s2["attn"][0]
    axis = -1 if sparse else 1
    assert (w.select(axis, 1) == 0).all() and torch.equal(w.select(axis, 0), base.select(axis, 0))
    target = torch.full_like(base, 0.25)
    with replace_heads(net.attn, [0], target.double()), capture_attention(net) as s3:
        net(inp, ei)
    w = s3["attn"][0]
    assert w.dtype == base.dtype
    assert torch.equal(w.select(axis, 0), target.select(axis, 0)) and torch.equal(w.select(axis, 1), base.select(axis, 1))
    seen = []
    with replace_heads(net.attn, [1], lambda weights, info: seen.append(info.path) or weights * 0 + 0.5), \
            capture_attention(net) as s4:
        net(inp, ei)
    assert seen == ["sparse" if sparse else "dense"]
    assert (s4["attn"][0].select(axis, 1) == 0.5).all()


def test_interpolate_uniform_dense_and_sparse():
    net = Net()
    x = _x(1, 3, D)
    with capture_attention(net) as store:
        net(x)
    base = store["inner.1"][0]                              # causal: row i has i + 1 keys
    with interpolate_heads(net.inner[1], [0], "uniform", 0.5), capture_attention(net) as s2:
        net(x)
    w = s2["inner.1"][0]
    uniform = causal_mask(3).float() / torch.arange(1, 4).float()[:, None]
    assert torch.allclose(w[0, 0], 0.5 * base[0, 0] + 0.5 * uniform)
    assert torch.equal(w[0, 1], base[0, 1])
    # sparse: the uniform target spreads over each receiver's incoming edges; receiver 2 has none
    ei = torch.tensor([[0, 1, 2, 0], [0, 0, 0, 1]])
    with capture_attention(net) as store:
        net(x[0], ei)
    base = store["attn"][0]
    with interpolate_heads(net.attn, [1], "uniform", 1.0), capture_attention(net) as s3:
        net(x[0], ei)
    w = s3["attn"][0]
    uniform = torch.tensor([1 / 3, 1 / 3, 1 / 3, 1.0])
    assert torch.allclose(w[:, 1], uniform)
    assert torch.equal(w[:, 0], base[:, 0])
    with interpolate_heads(net.attn, [0, 1], "uniform", 0.25), capture_attention(net) as s4:
        net(x[0], ei)
    assert torch.allclose(s4["attn"][0], 0.75 * base + 0.25 * uniform[:, None])


def test_interpolate_uniform_ignores_zero_weights_in_the_support():
    layer = GraphAttention(D, heads=1)
    layer.register_attention_hook(lambda m, w, i: torch.tensor([[[[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.2, 0.3, 0.5]]]]))
    with interpolate_heads(layer, [0], "uniform", 1.0), capture_attention(layer) as store:
        layer(_x(1, 3, D))
    w = store[""][0]
    assert torch.allclose(w[0, 0], torch.tensor([[1.0, 0, 0], [0.5, 0.5, 0], [1 / 3, 1 / 3, 1 / 3]]))


def test_interpolate_identity_tensor_and_errors():
    net = Net()
    x = _x(1, 3, D)
    with capture_attention(net) as store:
        net(x)
    base = store["attn"][0]
    with interpolate_heads(net.attn, [1], "identity", 0.5), capture_attention(net) as s2:
        net(x)
    assert torch.allclose(s2["attn"][0][0, 1], 0.5 * base[0, 1] + 0.5 * torch.eye(3))
    target = torch.zeros_like(base).double()
    with interpolate_heads(net.attn, [0], target, 0.75), capture_attention(net) as s3:
        net(x)
    assert s3["attn"][0].dtype == base.dtype
    assert torch.allclose(s3["attn"][0][0, 0], 0.25 * base[0, 0])
    with pytest.raises(ValueError, match=r"^unknown target 'identity' for the sparse path$"):
        with interpolate_heads(net.attn, [0], "identity", 0.5):
            net(x[0], torch.tensor([[0], [1]]))
    with pytest.raises(ValueError, match=r"^unknown target 'flat' for the dense path$"):
        with interpolate_heads(net.attn, [0], "flat", 0.5):
            net(x)


def test_named_module_messages():
    net = Net()
    assert named_module(net, "inner.1") is net.inner[1] and named_module(net, "") is net
    with pytest.raises(ValueError, match=r"^Net has no submodule 'inner\.2'\. Did you mean: inner\.1, inner\.0, "
                                         r"inner\? Named submodules: inner, inner\.0, inner\.1, inner\.1\.score"):
        named_module(net, "inner.2")
    # half alike (difflib ratio 0.5) is still suggested
    with pytest.raises(ValueError, match=r"^Net has no submodule 'atxy'\. Did you mean: attn\? Named"):
        named_module(net, "atxy")
    with pytest.raises(ValueError, match=r"^Net has no submodule 'zzzzzzz'\. Named submodules: inner, "):
        named_module(net, "zzzzzzz")
    with pytest.raises(ValueError, match=r"^Identity has no submodule 'a'\. Named submodules: none$"):
        named_module(nn.Identity(), "a")


def test_cache_activations_single_name_and_no_detach():
    net = Net()
    x = _x(1, 3, D)
    with cache_activations(net, "out") as store:
        net(x)
    assert list(store) == ["out"] and not store["out"][0].requires_grad
    with cache_activations(net, ["out", "attn"], detach=False) as store:
        net(x)
    assert store["out"][0].requires_grad and store["attn"][0].shape == (1, 3, D)
    net(x)
    assert len(store["out"]) == 1                    # unhooked after the block

    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.m = nn.LSTM(2, 2, batch_first=True)

        def forward(self, x):
            return self.m(x)

    pair = Pair()
    with pytest.raises(TypeError, match=r"^module 'm' returned a tuple; activation caching and patching need a "
                                        r"module whose output is one tensor \(name a submodule that returns one\)$"):
        with cache_activations(pair, ["m"]):
            pair(torch.zeros(1, 2, 2))


def test_where_masks_and_patch_lists():
    net = Net()
    x, y = _x(1, 3, D), _x(1, 3, D, seed=1)
    with cache_activations(net, ["attn"]) as clean:
        net(x)
    clean_out = clean["attn"][0]
    # boolean where: only the masked entries come from the patch
    where = torch.tensor([True, False, True])[:, None]
    with patch_activations(net, {"attn": clean_out}, where=where), cache_activations(net, ["attn"]) as got:
        net(y)
    with cache_activations(net, ["attn"]) as own:
        net(y)
    got, own = got["attn"][0], own["attn"][0]
    assert torch.equal(got[0, 0], clean_out[0, 0]) and torch.equal(got[0, 2], clean_out[0, 2])
    assert torch.equal(got[0, 1], own[0, 1]) and not torch.equal(own[0, 1], clean_out[0, 1])
    with pytest.raises(ValueError, match=r"^boolean where of shape \(2,\) does not broadcast to the output shape "
                                         r"\(1, 3, 4\)$"):
        with patch_activations(net, {"attn": clean_out}, where=torch.tensor([True, False])):
            net(y)
    with pytest.raises(ValueError, match=r"^where=\(0, 5\) does not index an output of shape \(1, 3, 4\): "):
        with patch_activations(net, {"attn": clean_out}, where=(0, 5)):
            net(y)
    with pytest.raises(ValueError, match=r"^where=1\.5 does not index an output of shape"):
        with patch_activations(net, {"attn": clean_out}, where=1.5):
            net(y)
    # a list: call i gets item i; a third call is an error naming the counts
    with patch_activations(net, {"attn": [clean_out, clean_out * 2]}), cache_activations(net, ["attn"]) as got:
        net(y)
        net(y)
        with pytest.raises(ValueError, match=r"^module 'attn' was called 3 times but only 2 cached outputs were given$"):
            net(y)
    assert torch.equal(got["attn"][0], clean_out) and torch.equal(got["attn"][1], clean_out * 2)
    with pytest.raises(ValueError, match=r"^patch for module 'attn' has shape \(3, 4\), its output has \(1, 3, 4\) "
                                         r"\(cache it on an input of the same shape\)$"):
        with patch_activations(net, {"attn": clean_out[0]}):
            net(y)
    with pytest.raises(ValueError, match=r"^patch for module 'attn' has shape float, its output has"):
        with patch_activations(net, {"attn": lambda out: 1.0}):
            net(y)
    # a patch of another dtype is cast to the output's
    with patch_activations(net, {"attn": clean_out.double()}), cache_activations(net, ["attn"]) as got:
        net(y)
    assert got["attn"][0].dtype == torch.float32
    assert not net.attn._forward_hooks


def test_activation_patching_results_and_silent_modules():
    net = Net()
    x, y = _x(1, 3, D), _x(1, 3, D, seed=1)
    metric = lambda out: out.sum()  # noqa: E731
    res = activation_patching(net, x, y, ["attn", "out"], metric)
    assert list(res) == ["clean", "corrupted", "attn", "out"]
    with torch.no_grad():
        assert res["clean"] == pytest.approx(float(net(x).sum()), abs=1e-5)
        assert res["corrupted"] == pytest.approx(float(net(y).sum()), abs=1e-5)
    assert res["out"] == pytest.approx(res["clean"], abs=1e-5)
    res2 = activation_patching(net, x, y, ["out"], metric, where=(slice(None), 0),
                               forward=lambda m, inp: m(inp) * 2)
    assert res2["clean"] == pytest.approx(2 * res["clean"], abs=1e-5)
    with torch.no_grad():
        clean_out, corrupt_out = net(x) * 2, net(y) * 2
    expected = corrupt_out.clone()
    expected[:, 0] = clean_out[:, 0]
    assert res2["out"] == pytest.approx(float(expected.sum()), abs=1e-5)
    with pytest.raises(ValueError, match=r"^modules \['inner\.0'\] were not called by the clean run, so there is "
                                         r"nothing to patch$"):
        activation_patching(net, x, y, ["inner.0"], metric, forward=lambda m, inp: m.out(inp))


def test_head_outputs_positions():
    net = Net()
    x = _x(2, 3, D)
    with head_outputs(net) as full:
        net(x)
    assert full["attn"].shape == (2, 3, H, D // H)
    with head_outputs(net, position=-1) as last:
        net(x)
    assert torch.equal(last["attn"], full["attn"][:, -1])
    assert not net.attn.update._forward_pre_hooks


def test_path_patching_argument_errors():
    net = Net()
    x, y = _x(1, 3, D), _x(1, 3, D, seed=1)
    metric = lambda out: out.sum()  # noqa: E731
    with pytest.raises(ValueError, match=r"^path_patching needs at least one receiver$"):
        path_patching(net, x, y, [], metric)
    with pytest.raises(ValueError, match=r"^receiver \('attn', 0\): expected a module name or \(layer_name, head, "
                                         r"'q'\|'k'\|'v'\)$"):
        path_patching(net, x, y, [("attn", 0)], metric)
    with pytest.raises(ValueError, match=r"^receiver \('attn', 2, 'q'\): layer 'attn' has heads 0\.\.1$"):
        path_patching(net, x, y, ("attn", 2, "q"), metric)
    with pytest.raises(ValueError, match=r"^receiver \('attn', -1, 'q'\): layer 'attn' has heads 0\.\.1$"):
        path_patching(net, x, y, ("attn", -1, "q"), metric)
    with pytest.raises(ValueError, match=r"^receiver \('out', 0, 'q'\): 'out' is not an attention layer; attention "
                                         r"layers: inner\.1, attn$"):
        path_patching(net, x, y, ("out", 0, "q"), metric)
    with pytest.raises(ValueError, match=r"^sender \('attn', 2\) is not a head of an attention layer \(inner\.1, attn\)$"):
        path_patching(net, x, y, "out", metric, senders=[("attn", 2)])
    with pytest.raises(ValueError, match=r"^sender \('nope', 0\) is not a head"):
        path_patching(net, x, y, "out", metric, senders=[("nope", 0)])
    with pytest.raises(ValueError, match=r"^sender \('attn', -1\) is not a head"):
        path_patching(net, x, y, "out", metric, senders=[("attn", -1)])
    with pytest.raises(ValueError, match=r"^Linear has no GraphAttention layer to path-patch$"):
        path_patching(nn.Linear(2, 2), x, y, "out", metric)
    with pytest.raises(ValueError, match=r"^attention layers \['attn'\] were not called by the model's forward$"):
        path_patching(net, x, y, "out", metric, forward=lambda m, inp: m.inner[1](m.inner[0](inp)).sum(-1))


def test_path_patching_default_senders_stop_at_the_lowest_receiver_layer():
    net = Net()
    x, y = _x(1, 3, D), _x(1, 3, D, seed=1)
    metric = lambda out: out[:, -1].sum()  # noqa: E731
    scores = path_patching(net, x, y, [("attn", 0, "v"), ("attn", 1, "k")], metric)
    assert list(scores) == [("inner.1", 0), ("inner.1", 1), ("attn", 0), ("attn", 1)]
    scores = path_patching(net, x, y, ("inner.1", 0, "q"), metric)
    assert list(scores) == [("inner.1", 0), ("inner.1", 1)]
    scores = path_patching(net, x, y, "out", metric)
    assert list(scores) == [("inner.1", 0), ("inner.1", 1), ("attn", 0), ("attn", 1)]
    # a module receiver first does not hide the head receivers after it
    mixed = path_patching(net, x, y, ["out", ("inner.1", 0, "q")], metric)
    assert list(mixed) == [("inner.1", 0), ("inner.1", 1)]
    # the last layer's heads reach the output only directly: their scores sum to the whole change
    assert scores[("attn", 0)] + scores[("attn", 1)] == pytest.approx(
        sum(path_patching(net, x, y, "out", metric, senders=[("attn", 0), ("attn", 1)]).values()), abs=1e-6)


def test_path_patching_needs_every_layer_in_both_runs_and_a_gap_above_1e_12():
    net = Net()
    x, y = _x(1, 3, D), _x(1, 3, D, seed=1)

    def skip_attn_on_corrupted(m, inp):
        if inp is y:
            return m.out(m.inner[1](m.inner[0](inp), mask=causal_mask(3))).squeeze(-1)
        return m(inp)
    with pytest.raises(ValueError, match=r"^attention layers \['attn'\] were not called by the model's forward$"):
        path_patching(net, x, y, "out", lambda out: out.sum(), forward=skip_attn_on_corrupted)
    # the metric is read off a tag carried next to the output: a gap of exactly 1e-12 is enough
    run = lambda m, inp: (m(inp[0]), inp[1])  # noqa: E731
    scores = path_patching(net, (x, 0.0), (y, 1e-12), "out", lambda out: out[1], forward=run)
    assert set(scores.values()) == {0.0}
    with pytest.raises(ValueError, match=r"^metric is 0 on both the clean and the corrupted input: nothing to "
                                         r"attribute \(choose inputs whose metric differs\)$"):
        path_patching(net, (x, 0.0), (y, 1e-13), "out", lambda out: out[1], forward=run)


def test_path_patching_freezes_modules_only_at_the_position():
    """A non-causal model patched at token 0: the frozen module keeps its clean output at token 0 only, and its
    other tokens follow the patched run (seen in the input of the token-mixing module after it)."""
    torch.manual_seed(0)

    class Mix(nn.Module):
        def forward(self, h):
            return h + h.mean(1, keepdim=True)

    class Net2(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = GraphAttention(D, heads=1, update="none")
            self.b = GraphAttention(D, heads=1, update="none")
            self.mid = nn.Linear(D, D)
            self.mix = Mix()

        def forward(self, x):
            h = x + self.a(x)
            h = h + self.b(h)
            return self.mix(self.mid(h))[:, 0].sum(-1)

    net = Net2()
    seen = []
    net.mix.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    x, y = _x(1, 3, D), _x(1, 3, D, seed=1)
    path_patching(net, x, y, "mix", lambda out: out.sum(), senders=[("a", 0)], position=0, freeze=["mid"])
    clean, _, step1, _ = seen
    assert torch.equal(step1[:, 0], clean[:, 0])                 # frozen at the position
    assert not torch.allclose(step1[:, 1:], clean[:, 1:])        # free elsewhere


def test_patch_at_replaces_only_the_indexed_entries():
    from graphattn.interpret import _patch_at
    net = Net()
    x = _x(1, 3, D)
    with cache_activations(net, ["out"]) as own:
        net(x)
    value = torch.zeros(1, 3, 1)
    with _patch_at(net, "out", value, (Ellipsis, 0, slice(None))), cache_activations(net, ["out"]) as got:
        net(x)
    assert torch.equal(got["out"][0][:, 0], value[:, 0]) and torch.equal(got["out"][0][:, 1:], own["out"][0][:, 1:])


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_interpolate_identity_on_cross_attention_keeps_the_dtype(dtype):
    """2 queries over 3 keys: the identity target is the (2, 3) eye, in the weights' dtype (a float32 eye would
    turn bfloat16 weights into float32)."""
    layer = GraphAttention(D, heads=H, update="none").to(dtype)
    x, src = _x(1, 2, D).to(dtype), _x(1, 3, D, seed=1).to(dtype)
    with capture_attention(layer) as store:
        layer(x, x_src=src)
    base = store[""][0]
    assert base.shape == (1, H, 2, 3) and base.dtype == dtype
    with interpolate_heads(layer, [1], "identity", 0.5), capture_attention(layer) as s2:
        layer(x, x_src=src)
    w = s2[""][0]
    assert w.dtype == dtype
    eye = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]], dtype=dtype)
    torch.testing.assert_close(w[0, 1], 0.5 * base[0, 1] + 0.5 * eye)
    torch.testing.assert_close(w[0, 0], base[0, 0], rtol=0, atol=0)
