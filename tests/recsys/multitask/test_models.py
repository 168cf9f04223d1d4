import pytest
import torch

import recsys.multitask  # noqa: F401  (registers task, models, datasets)
from graphattn.config import Config
from graphattn.registry import get_model, list_models
from recsys.multitask.data import synthetic_three_task
from recsys.multitask.graphs import HETERO_EDGES, HOMO_EDGES, token_flow_graph
from recsys.multitask.infnet import HeteroCrossFlow, ProxyGatedUnit

MODELS = ["INFNet", "SharedBottom", "MMoE", "TargetAttention"]
INFNET_VARIANTS = [{}, {"gate_proxies": "updated"}, {"use_task_tokens": False}, {"use_pgu": False},
                   {"cat_field_embedding": True, "embedding_init_std": 1.0},
                   {"num_blocks": 4, "residual": True, "layer_norm": True, "gate_form": "affine", "ca_heads": 2,
                    "ca_output": "project", "seq_pooling": "mean"}]


@pytest.fixture(scope="module")
def data():
    return synthetic_three_task(n_samples=200, n_users=20, n_items=40, num_fields=6, seq_len=6, seed=1)


def _batch(data, n=16):
    return data.train.batch(torch.arange(n))


def _config(model, **extra):
    base = {"embedding_size": 8, "tower_hidden": [8]}
    if model == "INFNet":
        base["gate_hidden"] = 8
    elif model == "SharedBottom":
        base["bottom_hidden"] = [16]
    elif model == "TargetAttention":
        base.update(bottom_hidden=[16], attention_hidden=[8])
    else:
        base.update(expert_hidden=[16], num_experts=3)
    return Config(model, "mtl-synthetic", config_dict={**base, **extra})


def test_models_registered_for_the_task():
    assert set(MODELS) <= set(list_models("multitask"))


@pytest.mark.parametrize("model_name,extra", [(m, {}) for m in MODELS] + [("INFNet", v) for v in INFNET_VARIANTS[1:]])
def test_finite_loss_and_gradient_on_every_parameter(data, model_name, extra):
    torch.manual_seed(0)
    model = get_model(model_name)(_config(model_name, **extra), data)
    loss, logits = model.compute_loss(_batch(data))
    assert logits.shape == (16, 3)
    assert torch.isfinite(loss)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"no (finite) gradient for {missing}"
    assert all(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "tables" not in n)


def test_loss_is_summed_bce(data):
    model = get_model("SharedBottom")(_config("SharedBottom", task_weights=[1.0, 2.0, 0.5]), data)
    batch = _batch(data)
    loss, logits = model.compute_loss(batch)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    expected = sum(w * bce(logits[:, i], batch["labels"][:, i]) for i, w in enumerate([1.0, 2.0, 0.5]))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def _tokens(b=3, m=4, length=7, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(b, length, generator=g) > 0.4
    mask[0] = False                       # an impression with no behaviour at all
    mask[1, :] = True
    tok = {"cat": torch.randn(b, m, d, generator=g), "seq": torch.randn(b, length, d, generator=g),
           "cat_proxy": torch.randn(b, 2, d, generator=g), "seq_proxy": torch.randn(b, 3, d, generator=g),
           "task": torch.randn(b, 3, d, generator=g), "task_shared": torch.randn(b, 2, d, generator=g)}
    return tok, mask


@pytest.mark.parametrize("heads,output", [(1, "none"), (2, "project")])
def test_cross_flow_sparse_equals_dense(heads, output):
    torch.manual_seed(0)
    tok, mask = _tokens()
    flow = HeteroCrossFlow(list(HETERO_EDGES), 8, heads, output)
    graph = token_flow_graph(mask, 4, 2, 3, 3, 2)
    dense = flow(tok, mask)
    sparse = flow(tok, mask, graph)
    assert set(dense) == {"cat_proxy", "seq_proxy", "task_shared", "task"}
    for k in dense:
        torch.testing.assert_close(sparse[k], dense[k], atol=1e-5, rtol=1e-5)


def test_cross_flow_is_a_sum_of_per_type_softmaxes():
    # cat_proxy receives seq->cat_proxy + task->cat_proxy, each normalised on its own
    torch.manual_seed(0)
    tok, mask = _tokens()
    flow = HeteroCrossFlow([("seq", "cat_proxy"), ("task", "cat_proxy")], 8)
    out = flow(tok, mask)["cat_proxy"]
    parts = []
    for src, kpm in (("seq", mask), ("task", None)):
        layer = flow.attn[f"{src}__to__cat_proxy"]
        q, k = layer.score.project(tok["cat_proxy"], tok[src])
        v = layer.message.project(tok[src])[:, :, 0]                         # (B, n, d)
        s = torch.einsum("bqd,bkd->bqk", q[:, :, 0], k[:, :, 0]) * layer.score.scale
        if kpm is not None:
            s = s.masked_fill(~kpm[:, None, :], float("-inf"))
        w = torch.nan_to_num(s.softmax(-1))                                  # no keys -> zeros
        parts.append(w @ v)
    torch.testing.assert_close(out, parts[0] + parts[1], atol=1e-5, rtol=1e-5)
    assert torch.allclose(parts[0][0], torch.zeros_like(parts[0][0]))     # impression 0 has no behaviour


def test_token_flow_graph_structure():
    mask = torch.tensor([[True, False, True], [False, False, False]])
    g = token_flow_graph(mask, num_cat=2, num_cat_proxy=2, num_seq_proxy=1, num_task=3, num_task_shared=2)
    ei = g[("seq", "to", "task")].edge_index
    # only impression 0's valid positions 0 and 2 send, to its 3 task nodes
    assert sorted(ei.t().tolist()) == sorted([[s, t] for s in (0, 2) for t in (0, 1, 2)])
    assert g[("cat", "to", "task_shared")].edge_index.shape[1] == 2 * 2 * 2
    assert g[("cat_proxy", "to", "cat")].slot.tolist() == g[("cat_proxy", "to", "cat")].edge_index[0].remainder(2).tolist()
    assert len(g.edge_types) == len(HETERO_EDGES) + len(HOMO_EDGES)
    no_task = token_flow_graph(mask, 2, 2, 1, 3, 2, use_task_tokens=False)
    assert all("task" not in (s, t) for s, _, t in no_task.edge_types)


@pytest.mark.parametrize("extra", INFNET_VARIANTS)
def test_infnet_sparse_path_equals_dense(data, extra):
    torch.manual_seed(0)
    model = get_model("INFNet")(_config("INFNet", **extra), data).eval()
    c, s, mask = model.embedding(_batch(data, 8))
    dense = model.heads(model.encode(c, s, mask, path="dense"))
    sparse = model.heads(model.encode(c, s, mask, path="sparse"))
    torch.testing.assert_close(sparse, dense, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("path", ["dense", "sparse"])
def test_padded_positions_do_not_change_the_output(data, path):
    torch.manual_seed(0)
    model = get_model("INFNet")(_config("INFNet", gate_proxies="updated", seq_pooling="sum"), data).eval()
    c, s, mask = model.embedding(_batch(data, 8))
    assert (~mask).any()
    out = model.heads(model.encode(c, s, mask, path=path))
    noisy = torch.where(mask.unsqueeze(-1), s, 100 * torch.randn_like(s))
    out2 = model.heads(model.encode(c, noisy, mask, path=path))
    torch.testing.assert_close(out2, out)
    # and the real positions do matter
    moved = torch.where(mask.unsqueeze(-1), s + torch.randn_like(s), s)
    assert not torch.allclose(model.heads(model.encode(c, moved, mask, path=path)), out)


@pytest.mark.parametrize("name", ["SharedBottom", "MMoE"])
def test_baselines_ignore_padded_ids(data, name):
    # padding id 0 has a zero embedding and is excluded from the mean: appending padding changes nothing
    model = get_model(name)(_config(name), data).eval()
    batch = _batch(data, 8)
    padded = dict(batch, seq=[torch.cat([torch.zeros_like(q[:, :3]), q], 1) for q in batch["seq"]])
    model.embedding.seq_lengths = [q.shape[1] for q in padded["seq"]]
    model.embedding.seq_type = torch.repeat_interleave(torch.arange(3), torch.tensor(model.embedding.seq_lengths))
    out_padded = model(padded)
    model.embedding.seq_lengths = data.seq_lengths
    model.embedding.seq_type = torch.repeat_interleave(torch.arange(3), torch.tensor(data.seq_lengths))
    torch.testing.assert_close(out_padded, model(batch))


def test_pgu_depends_on_proxy_order_and_broadcasts():
    torch.manual_seed(0)
    pgu = ProxyGatedUnit(num_proxies=3, dim=4, hidden=8)
    x, p = torch.randn(2, 5, 4), torch.randn(2, 3, 4)
    y = pgu(x, p)
    gate = y / x
    assert torch.allclose(gate, gate[:, :1].expand_as(gate), atol=1e-5)   # one gate vector per impression
    assert ((gate > 0) & (gate < 1)).all()
    assert not torch.allclose(pgu(x, p.flip(1)), y)                     # flatten is slot-order sensitive


PRINTED = {"gate_form": "sigmoid", "gate_proxies": "input", "residual": False}


def test_infnet_defaults_are_the_prose_reading_with_affine_gate(data):
    cfg = _config("INFNet")
    keys = ("gate_form", "gate_proxies", "residual", "layer_norm")
    assert tuple(cfg[k] for k in keys) == ("affine", "updated", True, False)
    model = get_model("INFNet")(cfg, data)
    assert all(b.residual and b.gate_proxies == "updated" for b in model.blocks)
    assert {pgu.form for b in model.blocks for pgu in b.pgu.values()} == {"affine"}


@pytest.mark.parametrize("path", ["dense", "sparse"])
def test_infnet_printed_form_still_available(data, path):
    torch.manual_seed(0)
    model = get_model("INFNet")(_config("INFNet", attention_path=path, **PRINTED), data)
    assert {pgu.form for b in model.blocks for pgu in b.pgu.values()} == {"sigmoid"}
    assert not any(b.residual for b in model.blocks)
    # printed: the last block reads only block-input proxies, so it computes no proxy CA
    assert model.blocks[-1].flow.relations == [("cat", "task"), ("seq", "task")]
    loss, _ = model.compute_loss(_batch(data))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters())


def test_affine_gate_offset_reaches_task_tokens_through_attention():
    # tokens zeroed: the sigmoid gate leaves nothing, the affine gate's beta is every token, and CA of any query
    # over identical tokens returns W_V beta (softmax weights sum to 1), whatever the query
    torch.manual_seed(0)
    x, p = torch.zeros(2, 5, 4), torch.randn(2, 3, 4)
    assert torch.equal(ProxyGatedUnit(3, 4, 8, "sigmoid")(x, p), x)
    affine = ProxyGatedUnit(3, 4, 8, "affine")
    gated = affine(x, p)
    beta = affine.mlp(p.flatten(1)).chunk(2, dim=-1)[1]
    torch.testing.assert_close(gated, beta.unsqueeze(1).expand(2, 5, 4))
    assert not torch.allclose(gated[0], gated[1])                       # depends on the impression's proxies
    flow = HeteroCrossFlow([("cat", "task")], 4)
    q1, q2 = torch.randn(2, 3, 4), 10 * torch.randn(2, 3, 4)
    out1 = flow({"cat": gated, "task": q1}, torch.ones(2, 0, dtype=torch.bool))["task"]
    out2 = flow({"cat": gated, "task": q2}, torch.ones(2, 0, dtype=torch.bool))["task"]
    torch.testing.assert_close(out1, out2)
    v = flow.attn["cat__to__task"].message.project(beta.unsqueeze(1))[:, :, 0]    # (2, 1, 4)
    torch.testing.assert_close(out1, v.expand(2, 3, 4))


def test_infnet_residual_adds_the_block_input(data):
    # with gates on the block-input proxies the gates do not depend on the residual, so every output of the
    # block (tokens and proxies) differs from the no-residual block by exactly its input
    torch.manual_seed(0)
    model = get_model("INFNet")(_config("INFNet", gate_proxies="input"), data).eval()
    c, s, mask = model.embedding(_batch(data, 8))
    tok = model.initial_tokens(c, s, mask)
    block = model.blocks[0]
    with torch.no_grad():
        with_res = block(tok, mask)
        block.residual = False
        without = block(tok, mask)
    assert set(with_res) == {"cat", "cat_proxy", "seq", "seq_proxy", "task", "task_shared"}
    for t in with_res:
        torch.testing.assert_close(with_res[t] - without[t], tok[t], atol=1e-6, rtol=1e-5)
